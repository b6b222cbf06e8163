//! # redoubt-server
//!
//! A Redis 7-compatible server: the keyspace and its data types, the command table,
//! client connections, pub/sub, blocking commands, transactions, expiry and eviction.
//! It runs as the `redoubt` binary or inside another Rust process ([`run`], [`start`]).
//!
//! ## Layout
//!
//! * [`keyspace`]: plain data (databases, values, expiry) changed only through its methods at
//!   a given operation time; it knows nothing of sockets or replication.
//! * [`cmd`]: the declarative command table and one small function per command, grouped by
//!   data type (`cmd/strings.rs`, `cmd/lists.rs`, ...).
//! * [`conn`]: a connection's read -> decode -> dispatch -> reply loop.
//! * [`shared`]: state shared by all connections (the keyspace lock, config, clients, pub/sub).
//! * [`config`]: directives for the config file, flags and CONFIG GET/SET.
//!
//! ## How a write flows
//!
//! ```text
//! socket -> RequestDecoder (redoubt-protocol) -> conn::process (auth, MULTI, OOM, pause)
//!        -> cmd::<family>::<command>(ctx, argv) under the keyspace lock, at ctx.ks.now_ms
//!        -> keyspace change + reply into the connection's one output buffer
//!        -> after the batch: keyspace notifications published, blocked clients served
//!        -> one write() per batch
//! ```
//!
//! Writes are deterministic given the keyspace and the operation time; what they record
//! in `Keyspace::effects` (when enabled) is the operation stream a replica applies.

pub mod clock;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod cron;
pub mod keyspace;
pub mod logging;
pub mod memory;
pub mod replay;
pub mod replication;
pub mod script;
pub mod shared;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;
pub use shared::Shared;

/// Runs the server on an already bound listener until `shutdown` resolves.
///
/// Tests bind `127.0.0.1:0` and pass the listener in, as mini-redis does.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Shared::new(config);
    run_shared(listener, shared, shutdown).await
}

/// Like [`run`], with state created by the caller (to keep a handle on it).
pub async fn run_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    shared.port.store(listener.local_addr()?.port() as usize, std::sync::atomic::Ordering::Relaxed);
    let cron = tokio::spawn(cron::run(shared.clone()));
    tokio::pin!(shutdown);
    // Durable mode: clients connect at once and get -LOADING until the snapshot and the
    // log tail are loaded; a storage failure ends the server with an error.
    let durable = shared.config.read().durability == config::Durability::Raft;
    if durable {
        shared.loading.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let client_addr = listener.local_addr()?.to_string();
    let mut storage = std::pin::pin!(async {
        if durable {
            replication::start(shared.clone(), client_addr).await
        } else {
            std::future::pending().await
        }
    });
    let result = loop {
        tokio::select! {
            r = &mut storage => match r {
                Ok(()) => {}
                Err(e) => break Err(e.context("durable storage")),
            },
            r = listener.accept() => {
                let (stream, _) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                shared.counters.total_connections_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let maxclients = shared.config.read().maxclients;
                if shared.clients.len() >= maxclients {
                    shared.counters.rejected_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let mut s = stream;
                        let _ = s.write_all(b"-ERR max number of clients reached\r\n").await;
                    });
                    continue;
                }
                // IDs are given in accept order, as Redis does.
                let id = shared.next_client_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(conn::serve(stream, shared.clone(), id));
            }
            _ = &mut shutdown => break Ok(()),
            _ = shared.shutdown.notified() => break Ok(()),
        }
    };
    cron.abort();
    for c in shared.clients.iter() {
        c.kill();
    }
    if let Some(repl) = shared.repl.get() {
        // Flushes the log and stops the Raft tasks (they hold the storage files).
        let _ = repl.raft.shutdown().await;
    }
    result
}

/// Resolves on SIGINT or SIGTERM: how a binary (redoubt, or a process embedding it) is told
/// to stop.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("received shutdown signal");
}

/// A server running on a background task: the embedding entry point.
pub struct Handle {
    pub addr: std::net::SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Handle {
    /// Stops accepting, closes clients and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and runs a server in the background of the current
/// tokio runtime.
pub async fn start(addr: &str, config: Config) -> anyhow::Result<Handle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let shared = Shared::new(config);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run_shared(listener, shared.clone(), async move {
        let _ = rx.await;
    }));
    Ok(Handle { addr: local, shared, stop: Some(tx), task })
}
