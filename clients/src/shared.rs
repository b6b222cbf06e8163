//! A cloneable client handle for services that talk to redoubt from many tasks at once.
//!
//! Every caller's command goes to one driver task that owns the connection. The driver writes
//! whatever has queued up since its last write in one `write()` (so a hundred concurrent
//! callers cost one syscall, as a pipeline would) and hands replies back in order. When the
//! connection fails, the driver moves on to the next node of its list with a capped backoff;
//! callers whose command was in flight get [`Error::Closed`] or [`Error::Io`] and decide for
//! themselves whether a retry is safe (the gateway makes its writes idempotent for this).
//!
//! Any node of a redoubt cluster takes any command (followers forward writes), but a
//! follower forwards one command of a connection at a time, so a pipelining client belongs on
//! the leader. [`Shared::following_leader`] makes the driver ask each node it reaches for
//! `RAFT INFO`, move to the `leader_addr` it names, and check every second that the node it
//! is on still leads (a plain Redis, or a single node, answers otherwise and is used as is).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use redoubt_protocol::client_codec::{decode_reply, encode_command, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// How many commands may wait for the driver before callers are held back.
const QUEUE: usize = 16 * 1024;
/// The most bytes put into one write.
const MAX_WRITE: usize = 256 * 1024;

struct Request {
    frame: Vec<u8>,
    reply: oneshot::Sender<Result<Value>>,
}

/// A handle to a multiplexed, self-reconnecting connection. Clone it freely.
#[derive(Clone)]
pub struct Shared {
    tx: mpsc::Sender<Request>,
    nodes: Arc<Vec<String>>,
}

impl Shared {
    /// Starts the driver for `nodes` (`host:port` each). It connects lazily, on first use, and
    /// keeps trying the list in turn while commands wait.
    pub fn new(nodes: Vec<String>) -> Shared {
        Shared::start(nodes, false)
    }

    /// Like [`Shared::new`], staying on the Raft leader of a redoubt cluster.
    pub fn following_leader(nodes: Vec<String>) -> Shared {
        Shared::start(nodes, true)
    }

    fn start(nodes: Vec<String>, follow: bool) -> Shared {
        assert!(!nodes.is_empty(), "Shared needs at least one node");
        let (tx, rx) = mpsc::channel(QUEUE);
        let nodes = Arc::new(nodes);
        tokio::spawn(drive(nodes.clone(), rx, follow));
        Shared { tx, nodes }
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Sends one command and waits for its reply. A `-ERR ...` reply is `Ok(Value::Error)`;
    /// `Err` means the command's fate is unknown (the connection broke) or it never left.
    pub async fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Value> {
        let mut frame = Vec::with_capacity(64);
        encode_command(args, &mut frame);
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request { frame, reply }).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

/// What `RAFT INFO` says about leadership: `Some(None)` this node leads (or is not in a
/// cluster), `Some(Some(addr))` another node leads, `None` no leader known.
async fn leadership(stream: &mut TcpStream) -> Option<Option<String>> {
    let mut out = Vec::new();
    encode_command(&["RAFT", "INFO"], &mut out);
    stream.write_all(&out).await.ok()?;
    let mut buf = BytesMut::with_capacity(1024);
    let reply = loop {
        if let Ok(Some(v)) = decode_reply(&mut buf, false) {
            break v;
        }
        if tokio::time::timeout(Duration::from_secs(2), stream.read_buf(&mut buf)).await.ok()?.ok()? == 0 {
            return None;
        }
    };
    let Some(text) = reply.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()) else {
        return Some(None); // not redoubt, or not clustered: use the node as it is
    };
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
    match (field("role:").as_deref(), field("leader_addr:")) {
        (Some("leader"), _) => Some(None),
        (_, Some(addr)) if !addr.is_empty() => Some(Some(addr)),
        _ => None,
    }
}

async fn connect(addr: &str) -> Option<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await.ok()?.ok()?;
    let _ = s.set_nodelay(true);
    Some(s)
}

async fn drive(nodes: Arc<Vec<String>>, mut rx: mpsc::Receiver<Request>, follow: bool) {
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(20);
    // A request taken off the queue while no connection was up: sent on the next one.
    let mut held: Option<Request> = None;
    loop {
        if held.is_none() {
            match rx.recv().await {
                Some(r) => held = Some(r),
                None => return, // every handle dropped
            }
        }
        let mut addr = nodes[next % nodes.len()].clone();
        next += 1;
        let Some(mut stream) = connect(&addr).await else {
            tracing::debug!(node = %addr, "state store unreachable; trying the next node");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        if follow {
            match leadership(&mut stream).await {
                Some(None) => {}
                Some(Some(leader)) => match connect(&leader).await {
                    Some(s) => {
                        stream = s;
                        addr = leader;
                    }
                    // The leader named is unreachable (it may have just died): use this node,
                    // which forwards, until the next check.
                    None => {}
                },
                // An election is running: this node forwards once it is over.
                None => {}
            }
        }
        backoff = Duration::from_millis(20);
        tracing::debug!(node = %addr, "state store connected");
        let mut conn = Conn { stream, buf: BytesMut::with_capacity(64 * 1024), pending: VecDeque::new(), follow };
        let err = conn.serve(&mut rx, &mut held).await;
        tracing::warn!(node = %addr, error = %err, "state store connection lost");
        for p in conn.pending.drain(..).flatten() {
            let _ = p.send(Err(Error::Protocol(format!("connection lost: {err}"))));
        }
        if rx.is_closed() && held.is_none() {
            return;
        }
    }
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// `None`: the driver's own leadership probe.
    pending: VecDeque<Option<oneshot::Sender<Result<Value>>>>,
    follow: bool,
}

impl Conn {
    /// Runs the connection until it fails; returns why.
    async fn serve(&mut self, rx: &mut mpsc::Receiver<Request>, held: &mut Option<Request>) -> Error {
        let mut out = Vec::with_capacity(64 * 1024);
        let mut closed = false;
        let mut probe = tokio::time::interval(Duration::from_secs(1));
        probe.tick().await;
        // This node stopped leading: take no new requests, answer those in flight, then go.
        let mut leaving = false;
        loop {
            if closed && held.is_none() && self.pending.is_empty() {
                return Error::Closed;
            }
            // Gather everything that is waiting into one write.
            if let Some(r) = held.take() {
                out.extend_from_slice(&r.frame);
                self.pending.push_back(Some(r.reply));
            }
            while out.len() < MAX_WRITE {
                match rx.try_recv() {
                    Ok(r) => {
                        out.extend_from_slice(&r.frame);
                        self.pending.push_back(Some(r.reply));
                    }
                    Err(_) => break,
                }
            }
            if !out.is_empty() {
                if let Err(e) = self.stream.write_all(&out).await {
                    return e.into();
                }
                out.clear();
            }
            tokio::select! {
                _ = probe.tick(), if self.follow => {
                    encode_command(&["RAFT", "INFO"], &mut out);
                    self.pending.push_back(None);
                }
                r = rx.recv(), if !closed && !leaving && self.pending.len() < QUEUE => match r {
                    Some(r) => *held = Some(r),
                    None => closed = true,
                },
                n = self.stream.read_buf(&mut self.buf) => {
                    match n {
                        Ok(0) => return Error::Closed,
                        Err(e) => return e.into(),
                        Ok(_) => {}
                    }
                    loop {
                        match decode_reply(&mut self.buf, false) {
                            Ok(Some(v)) => match self.pending.pop_front() {
                                Some(Some(p)) => { let _ = p.send(Ok(v)); }
                                Some(None) => {
                                    // Our probe: leave a node that no longer leads (the
                                    // callers' requests in flight are answered first).
                                    let role = v.as_bytes().map(|b| String::from_utf8_lossy(b).contains("role:leader"));
                                    leaving |= role == Some(false);
                                }
                                None => return Error::Protocol("reply with no request".into()),
                            },
                            Ok(None) => break,
                            Err(e) => return Error::Protocol(e),
                        }
                    }
                    if leaving && held.is_none() && self.pending.iter().all(Option::is_none) {
                        return Error::Protocol("moving to the leader".into());
                    }
                }
            }
        }
    }
}

/// A Lua script called by its SHA1, loaded on demand: `EVALSHA`, and `EVAL` once when the
/// node answers `NOSCRIPT` (a fresh node, or after `SCRIPT FLUSH`), as client libraries do.
pub struct Script {
    source: &'static str,
    sha: String,
}

impl Script {
    pub fn new(source: &'static str) -> Script {
        Script { source, sha: sha1_smol::Sha1::from(source).digest().to_string() }
    }

    pub fn sha(&self) -> &str {
        &self.sha
    }

    pub async fn call<K: AsRef<[u8]>, A: AsRef<[u8]>>(&self, client: &Shared, keys: &[K], args: &[A]) -> Result<Value> {
        let numkeys = keys.len().to_string();
        let mut argv: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
        argv.extend([b"EVALSHA".as_slice(), self.sha.as_bytes(), numkeys.as_bytes()]);
        argv.extend(keys.iter().map(|k| k.as_ref()));
        argv.extend(args.iter().map(|a| a.as_ref()));
        let v = client.cmd(&argv).await?;
        if matches!(&v, Value::Error(e) if e.starts_with("NOSCRIPT")) {
            argv[0] = b"EVAL";
            argv[1] = self.source.as_bytes();
            return client.cmd(&argv).await;
        }
        Ok(v)
    }
}
