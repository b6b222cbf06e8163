//! Node-to-node transport: how Raft messages travel between the members of a cluster.
//!
//! Where it sits in the write flow:
//!
//! ```text
//! leader: openraft replication -> Connection (RaftNetwork) -> Network's shared TCP link -> cluster port
//!   -> follower: serve() -> RaftRpc (Raft::append_entries / vote / install_snapshot) -> reply frame back
//! follower: call_app(leader) -> cluster port -> serve() -> AppHandler (the server forwards client writes)
//! ```
//!
//! Wire format: every frame is a `u32` big-endian length followed by that many bytes of bincode
//! (`bincode::DefaultOptions`: varint integers, little endian, no trailing bytes). A request is
//! `(id, Request)`, a reply `(id, Response)`; the id pairs them, so replies may come back in any
//! order and many requests share one connection at once (pipelining). A frame longer than the
//! configured limit, or one that does not decode, is a protocol error: the connection is closed.
//!
//! Client side: [`Network`] (the `RaftNetworkFactory`) keeps one TCP connection per peer address,
//! opened on first use and shared by every [`Connection`] to that address and by
//! [`Network::call_app`]. A connection has a writer task (batches queued frames into one flush)
//! and a reader task (hands each reply to the oneshot its caller waits on). When it breaks, the
//! requests in flight fail with `NetworkError`; the next request reconnects. Failed connects back
//! off exponentially, and while a peer is backing off requests fail at once with `Unreachable`:
//! openraft retries on its own schedule, so the transport never spins on a dead peer.
//!
//! A connection whose requests keep timing out while nothing at all comes back on it is taken
//! for dead and closed (see [`NetConfig::dead_after_unanswered`]): TCP reports a path that
//! silently lost its packets only after minutes of retransmissions, and until then it would
//! swallow every request.
//!
//! Server side: [`serve`] accepts connections and answers each request in its own task (a slow
//! `append_entries` must not hold up a heartbeat or a vote behind it), except snapshot chunks:
//! see [`serve_with_config`].
//!
//! How connections are made is a [`Transport`] (client side) and a [`Listener`] (server side):
//! TCP in production ([`Tcp`], [`TcpListener`]); the simulation tests plug in a simulated network
//! and so run this very code, framing, reconnects and all, under partitions and message loss.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bincode::Options;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, RPCTypes};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{NodeAddr, Payload, Raft, TypeConfig};

/// Default limit on one frame's body. Snapshot chunks (openraft's default is 3 MiB) and
/// append-entries batches stay far below it; the limit exists so that a corrupt or hostile length
/// prefix cannot make a node allocate gigabytes.
pub const DEFAULT_MAX_FRAME: usize = 256 << 20;

/// Socket buffers: big enough that a batch of small frames (heartbeats, votes) costs one syscall.
const IO_BUF: usize = 64 << 10;

/// A frame buffer that grew past this is given back after use, so one big snapshot chunk does not
/// pin its size for the connection's lifetime.
const KEEP_BUF: usize = 1 << 20;

/// Requests queued for one connection's writer before callers wait (backpressure, not a limit on
/// requests in flight).
const SEND_QUEUE: usize = 1024;

/// Tunables of both sides of the transport.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Largest frame body accepted or sent, in bytes (capped at `u32::MAX`).
    pub max_frame: usize,
    /// First delay after a failed connect; doubles with each further failure...
    pub backoff_min: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
    /// Limit on one TCP connect. The connect runs in its own task, independent of the requests
    /// waiting for it: their shorter timeouts do not cut it short, and a long `call_app` does not
    /// sit on a black-holed SYN.
    pub connect_timeout: Duration,
    /// Server side: requests of one connection being answered at once. When reached, the server
    /// stops reading that connection until a reply is written (TCP backpressure to the sender).
    pub max_in_flight: usize,
    /// Client side: a connection on which this many requests in a row timed out, each without a
    /// single reply (to it or to anything else) arriving while it waited, is taken for dead and
    /// closed; the next request reconnects. A live but slow peer still answers something now
    /// and then and keeps its connection. 0 never closes a connection for silence.
    pub dead_after_unanswered: u32,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            max_frame: DEFAULT_MAX_FRAME,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            dead_after_unanswered: 3,
        }
    }
}

impl NetConfig {
    fn frame_limit(&self) -> usize {
        self.max_frame.min(u32::MAX as usize)
    }

    /// Delay before the next connect after `failures` consecutive failures (>= 1).
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.backoff_min.saturating_mul(1 << doublings).min(self.backoff_max)
    }
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

/// How a node opens connections to its peers: [`Tcp`] in production.
///
/// A connection is handed over as its two halves, read by one task and written by another; a
/// transport splits its streams the cheapest way it has (TCP's owned halves cost nothing).
/// Everything above the byte stream (framing, pipelining, timeouts, reconnects) is the
/// transport-independent code of this module.
pub trait Transport: Send + Sync + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// Opens a connection to `addr`, a node's `raft_addr`. [`NetConfig::connect_timeout`]
    /// bounds it from outside.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer)>> + Send;
}

/// The production transport: plain TCP, with Nagle's algorithm off.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Transport for Tcp {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    async fn connect(&self, addr: &str) -> io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
        let stream = TcpStream::connect(addr).await?;
        // Raft traffic is small latency-bound frames; never let Nagle hold a heartbeat.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %addr, error = %e, "set_nodelay failed");
        }
        Ok(stream.into_split())
    }
}

/// Where [`serve`] takes its peers' connections from: a bound [`TcpListener`] in production.
pub trait Listener: Send + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// The next incoming connection, split, and the peer's address (for logs).
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    async fn accept(&mut self) -> io::Result<(OwnedReadHalf, OwnedWriteHalf, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        let (rd, wr) = stream.into_split();
        Ok((rd, wr, peer))
    }
}

// ---------------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------------

/// A request or a reply with the id that pairs them. Serialized by reference on the way out
/// (`Envelope<&Request>`) and by value on the way in: both have the same bincode form.
#[derive(Serialize, Deserialize)]
struct Envelope<B> {
    id: u64,
    body: B,
}

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Application-level RPC; `Payload` so the body travels as one byte string.
    App(Payload),
}

/// What `Raft::append_entries` returns (and [`RaftRpc::append_entries`] must).
pub type AppendResult = Result<AppendEntriesResponse<u64>, RaftError<u64>>;
/// What `Raft::vote` returns.
pub type VoteResult = Result<VoteResponse<u64>, RaftError<u64>>;
/// What `Raft::install_snapshot` returns.
pub type SnapshotResult = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    AppendEntries(AppendResult),
    Vote(VoteResult),
    InstallSnapshot(SnapshotResult),
    App(Payload),
    /// The server could not produce an answer: the handler panicked, or its reply did not fit
    /// in a frame. The connection stays usable.
    Failed(String),
}

impl Response {
    fn kind(&self) -> &'static str {
        match self {
            Response::AppendEntries(_) => "AppendEntries",
            Response::Vote(_) => "Vote",
            Response::InstallSnapshot(_) => "InstallSnapshot",
            Response::App(_) => "App",
            Response::Failed(_) => "Failed",
        }
    }
}

fn codec(max_frame: usize) -> impl Options + Copy {
    bincode::DefaultOptions::new().with_limit(max_frame as u64)
}

#[derive(Debug)]
enum EncodeError {
    TooLarge,
    Other(String),
}

/// Encodes `msg` as one complete frame (length prefix included), or refuses when the body would
/// exceed `max_frame`: the size is computed first, so nothing that large is ever allocated.
fn encode_frame<T: Serialize>(msg: &T, max_frame: usize) -> Result<Vec<u8>, EncodeError> {
    let opts = codec(max_frame);
    let size = opts.serialized_size(msg).map_err(|e| match *e {
        bincode::ErrorKind::SizeLimit => EncodeError::TooLarge,
        other => EncodeError::Other(other.to_string()),
    })?;
    let size = usize::try_from(size).map_err(|_| EncodeError::TooLarge)?;
    if size > max_frame {
        return Err(EncodeError::TooLarge);
    }
    let mut frame = Vec::with_capacity(4 + size);
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    opts.serialize_into(&mut frame, msg).map_err(|e| EncodeError::Other(e.to_string()))?;
    Ok(frame)
}

fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8], max_frame: usize) -> Result<T, bincode::Error> {
    codec(max_frame).deserialize(body)
}

/// Reads one frame body into `buf`. `Ok(false)` is a clean end of stream between frames.
///
/// The announced length is checked against `max_frame` before anything is reserved, and the
/// buffer then grows only as bytes actually arrive: a peer that announces 200 MB and sends
/// nothing costs us nothing.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max_frame: usize, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream inside a frame header"));
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max_frame {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max_frame} bytes"),
        ));
    }
    buf.clear();
    if buf.capacity() > KEEP_BUF && len <= KEEP_BUF {
        buf.shrink_to(KEEP_BUF);
    }
    buf.reserve(len.min(IO_BUF));
    let n = (&mut *r).take(len as u64).read_to_end(buf).await?;
    if n < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream inside a frame"));
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// Why a call did not get a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The peer cannot be reached now (connect failed, backing off, or blocked by fault
    /// injection). Retry later.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The connection broke while the request was in flight; the request may or may not have
    /// been executed.
    #[error("connection to {addr} failed: {reason}")]
    Connection { addr: String, reason: String },
    /// No reply within the caller's timeout; the request may or may not have been executed.
    #[error("no reply from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The request does not fit in one frame.
    #[error("request exceeds the frame limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The peer received the request but failed to answer it.
    #[error("peer {addr} failed the request: {reason}")]
    Remote { addr: String, reason: String },
}

/// Transport-level failure of one call, before it is dressed as an openraft or a [`NetError`].
#[derive(Debug)]
enum CallError {
    Unreachable(String),
    Network(String),
    Timeout,
    TooLarge(usize),
}

/// The client half of the transport: a cheap-to-clone handle on the connections of this node to
/// its peers. It is the `RaftNetworkFactory` given to `Raft::new`, and what the server uses to
/// forward requests with [`Network::call_app`]. Connections are made by `T`, TCP unless told.
pub struct Network<T: Transport = Tcp> {
    inner: Arc<NetInner<T>>,
}

impl<T: Transport> Clone for Network<T> {
    fn clone(&self) -> Self {
        Network { inner: self.inner.clone() }
    }
}

struct NetInner<T: Transport> {
    /// This node's id, reported in openraft's `Timeout` errors.
    id: u64,
    config: NetConfig,
    transport: Arc<T>,
    /// One entry per peer address ever used; an address is a handful of bytes and a closed
    /// connection, so entries are not evicted.
    peers: parking_lot::Mutex<HashMap<String, Arc<Peer<T>>>>,
    /// Fault injection: node ids every request to which fails with `Unreachable`.
    blocked: parking_lot::Mutex<HashSet<u64>>,
}

impl<T: Transport> fmt::Debug for Network<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

impl Network {
    /// The TCP transport of node `id`, with the default [`NetConfig`].
    pub fn new(id: u64) -> Network {
        Network::with_config(id, NetConfig::default())
    }

    /// The TCP transport of node `id`.
    pub fn with_config(id: u64, config: NetConfig) -> Network {
        Network::with_transport(id, config, Tcp)
    }
}

impl<T: Transport> Network<T> {
    /// The transport of node `id`, connecting through `transport`.
    pub fn with_transport(id: u64, config: NetConfig, transport: T) -> Network<T> {
        Network {
            inner: Arc::new(NetInner {
                id,
                config,
                transport: Arc::new(transport),
                peers: parking_lot::Mutex::new(HashMap::new()),
                blocked: parking_lot::Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Sends an application request to node `target` at `addr` (its raft address) and waits for
    /// the peer's [`AppHandler`] to answer, for at most `timeout` (connecting included).
    pub async fn call_app(
        &self,
        target: u64,
        addr: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        let peer = self.peer(addr);
        match self.call(target, &peer, &Request::App(Payload(body)), timeout).await {
            Ok(Response::App(reply)) => Ok(reply.0),
            Ok(Response::Failed(reason)) => Err(NetError::Remote { addr: addr.to_string(), reason }),
            Ok(other) => Err(NetError::Connection {
                addr: addr.to_string(),
                reason: format!("{} reply to an App request", other.kind()),
            }),
            Err(CallError::Unreachable(reason)) => Err(NetError::Unreachable { addr: addr.to_string(), reason }),
            Err(CallError::Network(reason)) => Err(NetError::Connection { addr: addr.to_string(), reason }),
            Err(CallError::Timeout) => Err(NetError::Timeout { addr: addr.to_string(), timeout }),
            Err(CallError::TooLarge(limit)) => Err(NetError::TooLarge { limit }),
        }
    }

    /// Fault injection: while `blocked`, every request to node `target` fails at once with
    /// `Unreachable` (existing connections stay open and are used again once unblocked).
    pub fn set_blocked(&self, target: u64, blocked: bool) {
        let mut set = self.inner.blocked.lock();
        if blocked {
            set.insert(target);
        } else {
            set.remove(&target);
        }
    }

    fn peer(&self, addr: &str) -> Arc<Peer<T>> {
        let mut peers = self.inner.peers.lock();
        if let Some(p) = peers.get(addr) {
            return p.clone();
        }
        let p = Arc::new(Peer {
            addr: addr.to_string(),
            config: self.inner.config.clone(),
            transport: self.inner.transport.clone(),
            state: parking_lot::Mutex::new(PeerState::default()),
            connect_attempts: AtomicU64::new(0),
        });
        peers.insert(addr.to_string(), p.clone());
        p
    }

    /// One request/reply exchange with `peer`, connecting first if needed, all within `ttl`.
    async fn call(
        &self,
        target: u64,
        peer: &Arc<Peer<T>>,
        req: &Request,
        ttl: Duration,
    ) -> Result<Response, CallError> {
        if self.inner.blocked.lock().contains(&target) {
            return Err(CallError::Unreachable(format!("node {target} is blocked by fault injection")));
        }
        let deadline = Instant::now() + ttl;
        let conn = match tokio::time::timeout_at(deadline, peer.connection()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(CallError::Timeout),
        };
        conn.call(req, &self.inner.config, deadline).await
    }

    #[cfg(test)]
    fn connect_attempts(&self, addr: &str) -> u64 {
        self.peer(addr).connect_attempts.load(Ordering::Relaxed)
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = Connection<T>;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> Connection<T> {
        Connection { net: self.clone(), target, node: node.clone(), peer: self.peer(&node.raft_addr) }
    }
}

/// Everything this node knows about one peer address.
struct Peer<T: Transport> {
    addr: String,
    config: NetConfig,
    transport: Arc<T>,
    /// Never held across an await.
    state: parking_lot::Mutex<PeerState>,
    connect_attempts: AtomicU64,
}

#[derive(Default)]
struct PeerState {
    conn: Option<Conn>,
    /// Set while a connect task runs: the callers waiting for its outcome, in arrival order.
    /// Callers arriving meanwhile wait for that connection instead of opening their own. (One
    /// oneshot each rather than a shared watch: a watch wakes its waiters in an order drawn at
    /// random, and the order in which requests then take the new connection must not depend on
    /// anything but the run, or a simulation could not replay.)
    connecting: Option<Vec<oneshot::Sender<ConnectOutcome>>>,
    /// Consecutive failed connects (a connection that closed before answering anything counts as
    /// one: a peer that accepts and drops us at once must not be hammered either).
    failures: u32,
    /// No connect before this instant.
    retry_at: Option<Instant>,
}

/// How a connect task ended: `Err` says why it failed.
type ConnectOutcome = Result<(), String>;

/// Held by a connect task until it reports: if the task is dropped before (its runtime is
/// shutting down), the callers waiting on it are failed and the next caller starts over, instead
/// of everyone waiting on a connect that no longer runs.
struct Unreported<'a, T: Transport>(Option<&'a Peer<T>>);

impl<T: Transport> Drop for Unreported<'_, T> {
    fn drop(&mut self) {
        if let Some(peer) = self.0 {
            // Dropping the senders fails the receivers.
            let abandoned = peer.state.lock().connecting.take();
            drop(abandoned);
        }
    }
}

impl<T: Transport> Peer<T> {
    /// The live connection to this peer, opening one unless backing off.
    async fn connection(self: &Arc<Peer<T>>) -> Result<Conn, CallError> {
        loop {
            let outcome = {
                let mut st = self.state.lock();
                if let Some(conn) = &st.conn {
                    if !conn.is_closed() {
                        return Ok(conn.clone());
                    }
                    // A connection that answered was healthy: reconnect at once (the peer may have
                    // just restarted). One that never answered counts as a failed attempt.
                    if conn.shared.answered.load(Ordering::Relaxed) {
                        st.failures = 0;
                    } else {
                        st.failures = st.failures.saturating_add(1);
                        st.retry_at = Some(Instant::now() + self.config.backoff(st.failures));
                    }
                    st.conn = None;
                }
                let (tx, rx) = oneshot::channel();
                match &mut st.connecting {
                    Some(waiting) => waiting.push(tx),
                    None => {
                        if let Some(at) = st.retry_at {
                            let now = Instant::now();
                            if now < at {
                                return Err(CallError::Unreachable(format!(
                                    "{}: {} failed connection attempts, next in {:?}",
                                    self.addr,
                                    st.failures,
                                    at - now
                                )));
                            }
                        }
                        st.connecting = Some(vec![tx]);
                        tokio::spawn(self.clone().connect());
                    }
                }
                rx
            };
            // The connect runs in its own task, bounded by `connect_timeout`, not by this caller's
            // deadline: openraft sends heartbeats with a timeout of one heartbeat interval, and a
            // connect that needs longer (a retransmitted SYN takes a second) must still complete
            // rather than be cancelled and started over on every heartbeat.
            match outcome.await {
                // Connected: the state now holds the connection (or it already broke; look again).
                Ok(Ok(())) => continue,
                Ok(Err(e)) => return Err(CallError::Unreachable(format!("{}: {e}", self.addr))),
                Err(_) => {
                    let e = "connect task ended without a result";
                    return Err(CallError::Unreachable(format!("{}: {e}", self.addr)));
                }
            }
        }
    }

    /// The connect task: opens the connection, records the outcome in the peer state, then wakes
    /// the callers waiting for it, in the order they came.
    async fn connect(self: Arc<Peer<T>>) {
        let mut unreported = Unreported(Some(&self));
        self.connect_attempts.fetch_add(1, Ordering::Relaxed);
        let res = match tokio::time::timeout(self.config.connect_timeout, self.transport.connect(&self.addr)).await {
            Ok(Ok((rd, wr))) => {
                tracing::debug!(peer = %self.addr, "raft connection opened");
                Ok(Conn::start(rd, wr, &self.addr, self.config.frame_limit()))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("connect timed out after {:?}", self.config.connect_timeout)),
        };
        let (outcome, waiting) = {
            let mut st = self.state.lock();
            let waiting = st.connecting.take().unwrap_or_default();
            // From here on `connecting` may belong to a later connect task: leave it alone.
            unreported.0 = None;
            let outcome = match res {
                Ok(conn) => {
                    st.conn = Some(conn);
                    st.retry_at = None;
                    Ok(())
                }
                Err(e) => {
                    st.failures = st.failures.saturating_add(1);
                    let delay = self.config.backoff(st.failures);
                    st.retry_at = Some(Instant::now() + delay);
                    tracing::debug!(peer = %self.addr, error = %e, failures = st.failures, ?delay, "raft connect failed");
                    Err(e)
                }
            };
            (outcome, waiting)
        };
        for tx in waiting {
            let _ = tx.send(outcome.clone());
        }
    }
}

/// One multiplexed TCP connection to a peer. Clones share it; dropping the last clone stops its
/// tasks and closes the socket.
#[derive(Clone)]
struct Conn {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<ConnShared>,
    next_id: AtomicU64,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl std::ops::Deref for Conn {
    type Target = ConnInner;
    fn deref(&self) -> &ConnInner {
        &self.inner
    }
}

/// State the connection's tasks share with its callers. The tasks hold this, never the
/// `ConnInner`, so that dropping the last handle really ends them.
struct ConnShared {
    pending: parking_lot::Mutex<Pending>,
    /// Set on the first reply: the peer speaks our protocol.
    answered: AtomicBool,
    /// Flips to true when the connection is closed, to stop the writer.
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Result<Response, String>>>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
    /// Replies received so far (late ones included): a request notes the count when it is sent,
    /// so that on timeout it can tell whether anything at all arrived while it waited.
    replies: u64,
    /// Requests in a row that timed out with nothing arriving while they waited; any reply
    /// resets it. See [`NetConfig::dead_after_unanswered`].
    unanswered: u32,
}

impl ConnShared {
    /// Marks the connection dead and fails every request waiting on it (first reason wins).
    fn close(&self, reason: String) {
        let mut waiting: Vec<_> = {
            let mut p = self.pending.lock();
            if p.closed.is_some() {
                return;
            }
            p.closed = Some(reason.clone());
            std::mem::take(&mut p.waiting).into_iter().collect()
        };
        // In request order, not the map's (randomly seeded) order: which waiter wakes first
        // must not depend on anything but the run itself, or a simulation could not replay.
        waiting.sort_unstable_by_key(|(id, _)| *id);
        for (_, tx) in waiting {
            let _ = tx.send(Err(reason.clone()));
        }
        self.closed.send_replace(true);
    }

    /// A request sent when `replies_at_send` replies had arrived timed out. If nothing arrived
    /// since, it counts towards declaring the connection dead; at `limit` such timeouts in a
    /// row, the connection is closed.
    fn timed_out(&self, replies_at_send: u64, limit: u32) {
        let unanswered = {
            let mut p = self.pending.lock();
            if p.closed.is_some() || p.replies != replies_at_send {
                return;
            }
            p.unanswered += 1;
            p.unanswered
        };
        if limit > 0 && unanswered >= limit {
            tracing::info!(unanswered, "raft connection silent, closing it");
            self.close(format!("{unanswered} requests in a row timed out with nothing received meanwhile"));
        }
    }
}

/// Forgets a request's reply slot when its caller stops waiting (timeout, cancellation), so the
/// map does not keep slots of replies that never come.
struct SlotGuard<'a> {
    shared: &'a ConnShared,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending.lock().waiting.remove(&self.id);
    }
}

impl Conn {
    fn start<R, W>(rd: R, wr: W, addr: &str, max_frame: usize) -> Conn
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let shared = Arc::new(ConnShared {
            pending: parking_lot::Mutex::new(Pending::default()),
            answered: AtomicBool::new(false),
            closed: watch::Sender::new(false),
        });
        let span = tracing::debug_span!("raft-client", peer = %addr);
        let reader = tokio::spawn(read_replies(rd, shared.clone(), max_frame).instrument(span.clone()));
        let writer = tokio::spawn(write_requests(wr, rx, shared.clone()).instrument(span));
        Conn {
            inner: Arc::new(ConnInner {
                tx,
                shared,
                next_id: AtomicU64::new(1),
                reader: reader.abort_handle(),
                writer: writer.abort_handle(),
            }),
        }
    }

    fn is_closed(&self) -> bool {
        self.shared.pending.lock().closed.is_some()
    }

    /// Sends `req` and waits for its reply until `deadline`.
    async fn call(&self, req: &Request, config: &NetConfig, deadline: Instant) -> Result<Response, CallError> {
        let max_frame = config.frame_limit();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Encoded here, in the caller's task: big append-entries batches are serialized in
        // parallel, and an oversized request is refused before it takes a slot.
        let frame = match encode_frame(&Envelope { id, body: req }, max_frame) {
            Ok(f) => f,
            Err(EncodeError::TooLarge) => return Err(CallError::TooLarge(max_frame)),
            Err(EncodeError::Other(e)) => return Err(CallError::Network(format!("cannot encode request: {e}"))),
        };
        let (tx, rx) = oneshot::channel();
        let replies_at_send = {
            let mut p = self.shared.pending.lock();
            if let Some(reason) = &p.closed {
                return Err(CallError::Network(reason.clone()));
            }
            p.waiting.insert(id, tx);
            p.replies
        };
        let _slot = SlotGuard { shared: &self.shared, id };
        let exchange = async {
            if self.tx.send(frame).await.is_err() {
                return Err(CallError::Network("connection closed".to_string()));
            }
            match rx.await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(reason)) => Err(CallError::Network(reason)),
                Err(_) => Err(CallError::Network("connection closed".to_string())),
            }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(res) => res,
            Err(_) => {
                self.shared.timed_out(replies_at_send, config.dead_after_unanswered);
                Err(CallError::Timeout)
            }
        }
    }
}

/// Client writer: sends queued request frames, draining whatever else is queued before one
/// flush, so pipelined requests share syscalls.
async fn write_requests<W: AsyncWrite + Unpin>(wr: W, mut rx: mpsc::Receiver<Vec<u8>>, shared: Arc<ConnShared>) {
    let mut w = BufWriter::with_capacity(IO_BUF, wr);
    let mut closed = shared.closed.subscribe();
    loop {
        // `biased`: a fixed polling order keeps runs reproducible (an unbiased select draws from
        // the runtime's random generator), and a closed connection stops at once.
        let frame = tokio::select! {
            biased;
            // The guard `wait_for` returns is not Send: drop it inside the branch future.
            _ = async { closed.wait_for(|c| *c).await.is_ok() } => return,
            f = rx.recv() => match f {
                Some(f) => f,
                // Every handle is gone: end the stream politely.
                None => {
                    let _ = w.shutdown().await;
                    return;
                }
            },
        };
        let res = async {
            w.write_all(&frame).await?;
            while let Ok(f) = rx.try_recv() {
                w.write_all(&f).await?;
            }
            w.flush().await
        }
        .await;
        if let Err(e) = res {
            tracing::info!(error = %e, "raft connection write failed");
            shared.close(format!("write failed: {e}"));
            return;
        }
    }
}

/// Client reader: routes each reply to the caller waiting for its id. Any read or decode error
/// ends the connection and fails everything still waiting.
async fn read_replies<R: AsyncRead + Unpin>(rd: R, shared: Arc<ConnShared>, max_frame: usize) {
    let mut r = BufReader::with_capacity(IO_BUF, rd);
    let mut buf = Vec::new();
    let reason = loop {
        match read_frame(&mut r, max_frame, &mut buf).await {
            Ok(true) => {}
            Ok(false) => break "closed by peer".to_string(),
            Err(e) => break format!("read failed: {e}"),
        }
        match decode_body::<Envelope<Response>>(&buf, max_frame) {
            Ok(env) => {
                shared.answered.store(true, Ordering::Relaxed);
                // No slot: its caller gave up (timeout); the late reply is dropped, but it still
                // shows the connection is alive.
                let slot = {
                    let mut p = shared.pending.lock();
                    p.replies += 1;
                    p.unanswered = 0;
                    p.waiting.remove(&env.id)
                };
                if let Some(tx) = slot {
                    let _ = tx.send(Ok(env.body));
                }
            }
            Err(e) => break format!("undecodable reply: {e}"),
        }
    };
    tracing::info!(%reason, "raft connection closed");
    shared.close(reason);
}

/// The openraft client to one target node. Cheap: it holds the shared [`Network`] and the peer
/// entry; the connection belongs to the peer and outlives this value.
pub struct Connection<T: Transport = Tcp> {
    net: Network<T>,
    target: u64,
    node: NodeAddr,
    peer: Arc<Peer<T>>,
}

impl<T: Transport> Connection<T> {
    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<u64, NodeAddr, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
    }

    fn failed<E: std::error::Error>(
        &self,
        err: CallError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<u64, NodeAddr, E> {
        match err {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::from(AnyError::error(m))),
            CallError::Network(m) => RPCError::Network(NetworkError::from(AnyError::error(m))),
            CallError::Timeout => {
                RPCError::Timeout(Timeout { action, id: self.net.inner.id, target: self.target, timeout: ttl })
            }
            CallError::TooLarge(limit) => RPCError::Network(NetworkError::from(AnyError::error(format!(
                "{action} request exceeds the frame limit of {limit} bytes"
            )))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, resp: Response, action: RPCTypes) -> RPCError<u64, NodeAddr, E> {
        let msg = match resp {
            Response::Failed(reason) => format!("node {} failed the {action} request: {reason}", self.target),
            other => format!("node {} sent a {} reply to a {action} request", self.target, other.kind()),
        };
        RPCError::Network(NetworkError::from(AnyError::error(msg)))
    }
}

impl<T: Transport> RaftNetwork<TypeConfig> for Connection<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64>>> {
        let entries = rpc.entries.len() as u64;
        let ttl = option.hard_ttl();
        match self.net.call(self.target, &self.peer, &Request::AppendEntries(rpc), ttl).await {
            Ok(Response::AppendEntries(res)) => res.map_err(|e| self.remote(e)),
            Ok(other) => Err(self.unexpected(other, RPCTypes::AppendEntries)),
            // openraft splits the batch and retries at once.
            Err(CallError::TooLarge(_)) => {
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1))))
            }
            Err(e) => Err(self.failed(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64, InstallSnapshotError>>> {
        let ttl = option.hard_ttl();
        match self.net.call(self.target, &self.peer, &Request::InstallSnapshot(rpc), ttl).await {
            Ok(Response::InstallSnapshot(res)) => res.map_err(|e| self.remote(e)),
            Ok(other) => Err(self.unexpected(other, RPCTypes::InstallSnapshot)),
            Err(e) => Err(self.failed(e, RPCTypes::InstallSnapshot, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64>>> {
        let ttl = option.hard_ttl();
        match self.net.call(self.target, &self.peer, &Request::Vote(rpc), ttl).await {
            Ok(Response::Vote(res)) => res.map_err(|e| self.remote(e)),
            Ok(other) => Err(self.unexpected(other, RPCTypes::Vote)),
            Err(e) => Err(self.failed(e, RPCTypes::Vote, ttl)),
        }
    }

    /// openraft's pause after an `Unreachable`: the transport's own schedule, so that openraft
    /// does not retry much sooner than the transport would connect again.
    fn backoff(&self) -> Backoff {
        let config = self.net.inner.config.clone();
        Backoff::new((1u32..).map(move |n| config.backoff(n)))
    }
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// What the server side dispatches Raft requests to: [`Raft`] in production, a fake in tests.
pub trait RaftRpc: Send + Sync + 'static {
    fn append_entries(&self, rpc: AppendEntriesRequest<TypeConfig>) -> impl Future<Output = AppendResult> + Send;
    fn vote(&self, rpc: VoteRequest<u64>) -> impl Future<Output = VoteResult> + Send;
    fn install_snapshot(&self, rpc: InstallSnapshotRequest<TypeConfig>) -> impl Future<Output = SnapshotResult> + Send;
}

impl RaftRpc for Raft {
    fn append_entries(&self, rpc: AppendEntriesRequest<TypeConfig>) -> impl Future<Output = AppendResult> + Send {
        openraft::Raft::append_entries(self, rpc)
    }

    fn vote(&self, rpc: VoteRequest<u64>) -> impl Future<Output = VoteResult> + Send {
        openraft::Raft::vote(self, rpc)
    }

    fn install_snapshot(&self, rpc: InstallSnapshotRequest<TypeConfig>) -> impl Future<Output = SnapshotResult> + Send {
        openraft::Raft::install_snapshot(self, rpc)
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Answers application-level requests ([`Network::call_app`]) arriving on the cluster port.
/// Implemented for any `Fn(Vec<u8>) -> impl Future<Output = Vec<u8>>`.
pub trait AppHandler: Send + Sync + 'static {
    fn call(&self, body: Vec<u8>) -> BoxFuture<Vec<u8>>;
}

impl<F, Fut> AppHandler for F
where
    F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    fn call(&self, body: Vec<u8>) -> BoxFuture<Vec<u8>> {
        Box::pin(self(body))
    }
}

/// Serves the cluster port with the default [`NetConfig`]. See [`serve_with_config`].
pub async fn serve<L: Listener, R: RaftRpc>(listener: L, raft: R, app: Arc<dyn AppHandler>) {
    serve_with_config(listener, raft, app, NetConfig::default()).await
}

/// Accepts peers on `listener` and answers their requests until this future is dropped (abort
/// the task running it to stop: every connection and request task it started goes with it).
///
/// Requests of one connection are answered concurrently, replies written as they complete,
/// with one exception: snapshot chunks (`InstallSnapshot`) are installed one at a time, in the
/// order they arrived. openraft 0.9 writes each chunk at its offset into one streaming file and
/// installs it on the chunk marked `done`; the leader sends chunks one by one, but after a
/// timeout it resends a chunk while the first copy may still be queued here, and run
/// concurrently the two could finish in either order, behind a later chunk. Arrival order is
/// the leader's order. Chunks go to one worker per connection, so a slow snapshot write never
/// holds up the heartbeats and votes that share the connection.
pub async fn serve_with_config<L: Listener, R: RaftRpc>(
    mut listener: L,
    raft: R,
    app: Arc<dyn AppHandler>,
    config: NetConfig,
) {
    let raft = Arc::new(raft);
    let config = Arc::new(config);
    // Owned here: dropping this future aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        // `biased` for reproducible runs (see `write_requests`); reaping finished connections
        // first keeps a flood of accepts from starving it.
        tokio::select! {
            biased;
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "raft connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((rd, wr, peer)) => {
                    let span = tracing::debug_span!("raft-server", %peer);
                    conns.spawn(serve_conn(rd, wr, raft.clone(), app.clone(), config.clone()).instrument(span));
                }
                Err(e) => {
                    // Typically out of file descriptors: pause rather than spin on the error.
                    tracing::warn!(error = %e, "raft listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

type ReplyTx = mpsc::UnboundedSender<(Vec<u8>, OwnedSemaphorePermit)>;

/// The right to answer one request. Dropped without [`Replier::send`] (the handler panicked, or
/// the snapshot worker is gone), it answers `Failed` so the caller learns at once instead of
/// waiting for its timeout. It carries the request's in-flight permit until the reply is
/// written.
struct Replier {
    id: u64,
    tx: ReplyTx,
    permit: Option<OwnedSemaphorePermit>,
    max_frame: usize,
}

impl Replier {
    fn send(mut self, resp: Response) {
        self.send_ref(resp);
    }

    fn send_ref(&mut self, resp: Response) {
        let Some(permit) = self.permit.take() else { return };
        let frame = match encode_frame(&Envelope { id: self.id, body: &resp }, self.max_frame) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(kind = resp.kind(), error = ?e, "cannot encode reply");
                let failed = Response::Failed(format!("{} reply not sent: {e:?}", resp.kind()));
                match encode_frame(&Envelope { id: self.id, body: &failed }, self.max_frame) {
                    Ok(f) => f,
                    Err(_) => return,
                }
            }
        };
        // Fails only when the connection is going away; nobody is left to tell.
        let _ = self.tx.send((frame, permit));
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if self.permit.is_some() {
            self.send_ref(Response::Failed("request handler failed before replying".to_string()));
        }
    }
}

async fn serve_conn<Rd, Wr, R>(rd: Rd, wr: Wr, raft: Arc<R>, app: Arc<dyn AppHandler>, config: Arc<NetConfig>)
where
    Rd: AsyncRead + Unpin + Send + 'static,
    Wr: AsyncWrite + Unpin + Send + 'static,
    R: RaftRpc,
{
    tracing::debug!("raft peer connected");
    let max_frame = config.frame_limit();
    let mut rd = BufReader::with_capacity(IO_BUF, rd);
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    // Separate from `tasks` so the loop can notice the writer stop (peer gone) without reaping
    // request tasks. Both sets are dropped, and their tasks aborted, when this function returns.
    let mut writer = JoinSet::new();
    writer.spawn(write_replies(wr, reply_rx));
    let mut tasks = JoinSet::new();
    let (snap_tx, snap_rx) = mpsc::unbounded_channel();
    tasks.spawn(install_snapshots_in_order(raft.clone(), snap_rx));
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut buf = Vec::new();

    loop {
        let next = async {
            // Take the permit before reading: at the limit, stop reading (TCP backpressure).
            let permit = permits.clone().acquire_owned().await;
            (permit, read_frame(&mut rd, max_frame, &mut buf).await)
        };
        let (permit, frame) = tokio::select! {
            biased;
            stopped = writer.join_next() => {
                tracing::debug!(?stopped, "raft reply writer stopped");
                break;
            }
            got = next => got,
        };
        let Ok(permit) = permit else { break };
        match frame {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("raft peer disconnected");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "closing raft connection");
                break;
            }
        }
        let env = match decode_body::<Envelope<Request>>(&buf, max_frame) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable raft request, closing connection");
                break;
            }
        };
        let reply = Replier { id: env.id, tx: reply_tx.clone(), permit: Some(permit), max_frame };
        match env.body {
            Request::AppendEntries(rpc) => {
                let raft = raft.clone();
                tasks.spawn(async move { reply.send(Response::AppendEntries(raft.append_entries(rpc).await)) });
            }
            Request::Vote(rpc) => {
                let raft = raft.clone();
                tasks.spawn(async move { reply.send(Response::Vote(raft.vote(rpc).await)) });
            }
            Request::InstallSnapshot(rpc) => {
                // On failure the returned Replier is dropped and answers `Failed`.
                let _ = snap_tx.send((rpc, reply));
            }
            Request::App(body) => {
                let app = app.clone();
                tasks.spawn(async move { reply.send(Response::App(Payload(app.call(body.0).await))) });
            }
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                if e.is_panic() {
                    tracing::warn!(error = %e, "raft request handler panicked");
                }
            }
        }
    }
}

/// Installs one connection's snapshot chunks sequentially, in arrival order.
async fn install_snapshots_in_order<R: RaftRpc>(
    raft: Arc<R>,
    mut rx: mpsc::UnboundedReceiver<(InstallSnapshotRequest<TypeConfig>, Replier)>,
) {
    while let Some((rpc, reply)) = rx.recv().await {
        reply.send(Response::InstallSnapshot(raft.install_snapshot(rpc).await));
    }
}

/// Server writer: replies in completion order, batched into one flush when several are ready.
/// A reply's in-flight permit is released once the reply is written.
async fn write_replies<W: AsyncWrite + Unpin>(wr: W, mut rx: mpsc::UnboundedReceiver<(Vec<u8>, OwnedSemaphorePermit)>) {
    let mut w = BufWriter::with_capacity(IO_BUF, wr);
    while let Some((frame, permit)) = rx.recv().await {
        let res = async {
            w.write_all(&frame).await?;
            drop(permit);
            while let Ok((f, p)) = rx.try_recv() {
                w.write_all(&f).await?;
                drop(p);
            }
            w.flush().await
        }
        .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "raft reply write failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use openraft::error::Fatal;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, SnapshotMeta, Vote};
    use tokio::io::AsyncWriteExt;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::Entry;

    /// Stands in for `Raft`: echoes requests back in recognisable ways. A vote's term is how many
    /// milliseconds it takes to answer (to test pipelining and timeouts); an append-entries at
    /// term 99 fails as if Raft had stopped; snapshot chunks are recorded in the order they are
    /// installed, and chunk `k` of 4 takes `(4 - k) * 30` ms.
    #[derive(Clone, Default)]
    struct Fake {
        chunks: Arc<parking_lot::Mutex<Vec<u64>>>,
    }

    impl RaftRpc for Fake {
        async fn append_entries(&self, rpc: AppendEntriesRequest<TypeConfig>) -> AppendResult {
            if rpc.vote.leader_id.term == 99 {
                return Err(RaftError::Fatal(Fatal::Stopped));
            }
            Ok(AppendEntriesResponse::PartialSuccess(rpc.entries.last().map(|e| e.log_id)))
        }

        async fn vote(&self, rpc: VoteRequest<u64>) -> VoteResult {
            tokio::time::sleep(Duration::from_millis(rpc.vote.leader_id.term)).await;
            Ok(VoteResponse { vote: rpc.vote, vote_granted: true, last_log_id: rpc.last_log_id })
        }

        async fn install_snapshot(&self, rpc: InstallSnapshotRequest<TypeConfig>) -> SnapshotResult {
            tokio::time::sleep(Duration::from_millis((4 - rpc.offset.min(4)) * 30)).await;
            self.chunks.lock().push(rpc.offset);
            Ok(InstallSnapshotResponse { vote: rpc.vote })
        }
    }

    fn app() -> Arc<dyn AppHandler> {
        Arc::new(|mut body: Vec<u8>| async move {
            match body.as_slice() {
                b"panic" => panic!("app handler panics on purpose"),
                b"slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                _ => {}
            }
            body.reverse();
            body
        })
    }

    fn test_config() -> NetConfig {
        NetConfig {
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_millis(400),
            ..NetConfig::default()
        }
    }

    async fn start(config: NetConfig) -> (String, Fake, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fake = Fake::default();
        let server = tokio::spawn(serve_with_config(listener, fake.clone(), app(), config));
        (addr, fake, server)
    }

    fn node(addr: &str) -> NodeAddr {
        NodeAddr { raft_addr: addr.to_string(), client_addr: String::new() }
    }

    fn opt(ms: u64) -> RPCOption {
        RPCOption::new(Duration::from_millis(ms))
    }

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn entries(n: u64, size: usize) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry { log_id: log_id(i), payload: EntryPayload::Normal(Payload(vec![i as u8; size])) })
            .collect()
    }

    fn append(term: u64, entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest { vote: Vote::new(term, 1), prev_log_id: None, entries, leader_commit: Some(log_id(1)) }
    }

    async fn vote(
        c: &mut Connection,
        ms: u64,
        ttl: u64,
    ) -> Result<VoteResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64>>> {
        c.vote(VoteRequest::new(Vote::new(ms, 1), Some(log_id(7))), opt(ttl)).await
    }

    fn chunk(offset: u64) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new(3, 1),
            meta: SnapshotMeta::default(),
            offset,
            data: vec![offset as u8; 1000],
            done: offset == 3,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t10_round_trip_of_each_request_kind() {
        let (addr, fake, _server) = start(test_config()).await;
        let mut net = Network::new(1);
        let mut c = net.new_client(2, &node(&addr)).await;

        let resp = c.append_entries(append(1, entries(3, 100)), opt(2000)).await.unwrap();
        assert_eq!(resp, AppendEntriesResponse::PartialSuccess(Some(log_id(3))));
        let resp = c.append_entries(append(1, Vec::new()), opt(2000)).await.unwrap();
        assert_eq!(resp, AppendEntriesResponse::PartialSuccess(None));

        // Raft's own errors travel back as RemoteError naming the target.
        match c.append_entries(append(99, Vec::new()), opt(2000)).await {
            Err(RPCError::RemoteError(e)) => {
                assert_eq!(e.target, 2);
                assert!(matches!(e.source, RaftError::Fatal(Fatal::Stopped)), "{e:?}");
            }
            other => panic!("expected RemoteError, got {other:?}"),
        }

        let resp = vote(&mut c, 1, 2000).await.unwrap();
        assert_eq!(resp.vote, Vote::new(1, 1));
        assert!(resp.vote_granted);
        assert_eq!(resp.last_log_id, Some(log_id(7)));

        let resp = c.install_snapshot(chunk(0), opt(2000)).await.unwrap();
        assert_eq!(resp.vote, Vote::new(3, 1));
        assert_eq!(*fake.chunks.lock(), vec![0]);

        let reply = net.call_app(2, &addr, b"hello".to_vec(), Duration::from_secs(2)).await.unwrap();
        assert_eq!(reply, b"olleh");
        let reply = net.call_app(2, &addr, Vec::new(), Duration::from_secs(2)).await.unwrap();
        assert!(reply.is_empty());

        // A panicking handler answers `Failed`, and the connection lives on.
        match net.call_app(2, &addr, b"panic".to_vec(), Duration::from_secs(2)).await {
            Err(NetError::Remote { .. }) => {}
            other => panic!("expected Remote error, got {other:?}"),
        }
        assert_eq!(net.call_app(2, &addr, b"ab".to_vec(), Duration::from_secs(2)).await.unwrap(), b"ba");

        // Everything above went over one connection.
        assert_eq!(net.connect_attempts(&addr), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t20_requests_are_pipelined_on_one_connection() {
        let (addr, _fake, _server) = start(test_config()).await;
        let mut net = Network::new(1);

        // 50 votes of 300 ms each: one after the other they would take 15 s.
        let started = StdInstant::now();
        let mut calls = JoinSet::new();
        for _ in 0..50 {
            let mut c = net.new_client(2, &node(&addr)).await;
            calls.spawn(async move { vote(&mut c, 300, 10_000).await });
        }
        while let Some(res) = calls.join_next().await {
            res.unwrap().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert_eq!(net.connect_attempts(&addr), 1);

        // Replies come back in completion order: a fast request is not stuck behind a slow one.
        let mut slow_c = net.new_client(2, &node(&addr)).await;
        let mut fast_c = net.new_client(2, &node(&addr)).await;
        let slow = tokio::spawn(async move { vote(&mut slow_c, 2000, 10_000).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = StdInstant::now();
        vote(&mut fast_c, 1, 10_000).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());
        assert!(!slow.is_finished());
        slow.await.unwrap().unwrap();
        assert_eq!(net.connect_attempts(&addr), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t21_snapshot_chunks_install_in_arrival_order() {
        let (addr, fake, _server) = start(test_config()).await;
        let mut net = Network::new(1);
        let mut c: Vec<Connection> = Vec::new();
        for _ in 0..4 {
            c.push(net.new_client(2, &node(&addr)).await);
        }
        // Open the connection first, so the four chunks below are queued in poll order.
        vote(&mut c[0], 1, 2000).await.unwrap();
        let [c0, c1, c2, c3] = &mut c[..] else { unreachable!() };
        // Earlier chunks take longer: run concurrently they would complete in reverse.
        let (r0, r1, r2, r3) = tokio::join!(
            c0.install_snapshot(chunk(0), opt(5000)),
            c1.install_snapshot(chunk(1), opt(5000)),
            c2.install_snapshot(chunk(2), opt(5000)),
            c3.install_snapshot(chunk(3), opt(5000)),
        );
        for r in [r0, r1, r2, r3] {
            r.unwrap();
        }
        assert_eq!(*fake.chunks.lock(), vec![0, 1, 2, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t30_hard_ttl_is_honoured_and_the_connection_survives() {
        let (addr, _fake, _server) = start(test_config()).await;
        let mut net = Network::new(1);
        let mut c = net.new_client(2, &node(&addr)).await;
        vote(&mut c, 1, 2000).await.unwrap();

        let started = StdInstant::now();
        match vote(&mut c, 3000, 100).await {
            Err(RPCError::Timeout(t)) => {
                assert_eq!((t.id, t.target, t.action, t.timeout), (1, 2, RPCTypes::Vote, Duration::from_millis(100)));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());

        let started = StdInstant::now();
        match net.call_app(2, &addr, b"slow".to_vec(), Duration::from_millis(100)).await {
            Err(NetError::Timeout { .. }) => {}
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());

        // The late replies are dropped on arrival; the connection keeps working.
        vote(&mut c, 1, 2000).await.unwrap();
        assert_eq!(net.connect_attempts(&addr), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t31_a_silent_connection_is_taken_for_dead_and_replaced() {
        // A peer that accepts and reads but never answers: a path that lost its packets looks
        // the same from here.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _hole = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                held.push(tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                }));
            }
        });
        let config = NetConfig { dead_after_unanswered: 3, ..test_config() };
        let mut net = Network::with_config(1, config);
        let mut c = net.new_client(2, &node(&addr)).await;

        for _ in 0..3 {
            assert!(matches!(vote(&mut c, 1, 50).await, Err(RPCError::Timeout(_))));
            assert_eq!(net.connect_attempts(&addr), 1);
        }
        // The third silent timeout closed the connection. It never answered, so it counts as a
        // failed attempt: requests are refused during the backoff, then a new connection opens.
        let started = StdInstant::now();
        while net.connect_attempts(&addr) < 2 {
            match vote(&mut c, 1, 50).await {
                Err(RPCError::Unreachable(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(RPCError::Timeout(_)) => {}
                other => panic!("expected Unreachable or Timeout, got {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(3), "no new connection");
        }
        assert_eq!(net.connect_attempts(&addr), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t40_server_restart_unreachable_then_reconnect() {
        let (addr, fake, server) = start(test_config()).await;
        let mut net = Network::with_config(1, test_config());
        let mut c = net.new_client(2, &node(&addr)).await;
        vote(&mut c, 1, 2000).await.unwrap();

        // Aborting the serve task closes the listener and every connection it accepted.
        server.abort();
        let _ = server.await;

        // The broken connection fails with NetworkError at most once or twice; then the connect
        // is refused: Unreachable.
        let mut unreachable = false;
        for _ in 0..20 {
            match vote(&mut c, 1, 2000).await {
                Err(RPCError::Unreachable(_)) => {
                    unreachable = true;
                    break;
                }
                Err(RPCError::Network(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                other => panic!("expected Unreachable or Network, got {other:?}"),
            }
        }
        assert!(unreachable);

        // While backing off, requests fail at once, without trying to connect.
        let attempts = net.connect_attempts(&addr);
        let started = StdInstant::now();
        assert!(matches!(vote(&mut c, 1, 2000).await, Err(RPCError::Unreachable(_))));
        assert!(started.elapsed() < Duration::from_millis(100), "took {:?}", started.elapsed());
        assert_eq!(net.connect_attempts(&addr), attempts);

        // Same port again: the client comes back by itself once its backoff expires.
        let listener = TcpListener::bind(&addr).await.unwrap();
        let _server = tokio::spawn(serve_with_config(listener, fake.clone(), app(), test_config()));
        let started = StdInstant::now();
        loop {
            match vote(&mut c, 1, 2000).await {
                Ok(_) => break,
                Err(RPCError::Unreachable(_)) => {}
                Err(e) => panic!("unexpected error while reconnecting: {e:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(5), "no reconnect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Backoff is capped at 400 ms here; polling every 20 ms must not have hammered connect.
        let attempts = net.connect_attempts(&addr);
        assert!(attempts < 10, "{attempts} connect attempts");
        assert!(c.net.call_app(2, &addr, b"x".to_vec(), Duration::from_secs(2)).await.is_ok());
    }

    /// Reads from `stream` until the server closes it; fails if it stays open for 2 s.
    async fn expect_closed(stream: &mut TcpStream) {
        let mut sink = [0u8; 64];
        let res = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(res.is_ok(), "server did not close the connection");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t50_bad_frames_close_the_connection() {
        let config = NetConfig { max_frame: 4096, ..test_config() };
        let (addr, _fake, _server) = start(config).await;

        // Announced length over the limit: closed without reading (or allocating) the body.
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&4097u32.to_be_bytes()).await.unwrap();
        expect_closed(&mut raw).await;

        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        expect_closed(&mut raw).await;

        // A body that does not decode.
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        expect_closed(&mut raw).await;

        // A valid envelope with trailing garbage.
        let mut frame = encode_frame(&Envelope { id: 1, body: &Request::App(Payload(b"x".to_vec())) }, 4096).unwrap();
        frame.push(0);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&frame).await.unwrap();
        expect_closed(&mut raw).await;

        // The server itself is fine.
        let mut net = Network::new(1);
        let mut c = net.new_client(2, &node(&addr)).await;
        vote(&mut c, 1, 2000).await.unwrap();

        // Client side: a reply frame over the limit fails the request at once and drops the
        // connection, rather than waiting out the timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bad_addr = listener.local_addr().unwrap().to_string();
        let _bad = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    if read_frame(&mut s, 1 << 20, &mut buf).await.is_ok() {
                        let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                });
            }
        });
        let mut c = net.new_client(3, &node(&bad_addr)).await;
        let started = StdInstant::now();
        match vote(&mut c, 1, 5000).await {
            Err(RPCError::Network(e)) => assert!(e.to_string().contains("exceeds the limit"), "{e}"),
            other => panic!("expected Network error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t51_oversized_requests_are_refused_before_sending() {
        let (addr, _fake, _server) = start(test_config()).await;
        let mut net = Network::with_config(1, NetConfig { max_frame: 1024, ..test_config() });
        let mut c = net.new_client(2, &node(&addr)).await;

        // openraft halves the batch on PayloadTooLarge.
        match c.append_entries(append(1, entries(10, 200)), opt(2000)).await {
            Err(RPCError::PayloadTooLarge(_)) => {}
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        match net.call_app(2, &addr, vec![0; 2000], Duration::from_secs(2)).await {
            Err(NetError::TooLarge { limit: 1024 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Small requests still pass.
        c.append_entries(append(1, entries(2, 200)), opt(2000)).await.unwrap();
        vote(&mut c, 1, 2000).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn t52_blocked_target_is_unreachable() {
        let (addr, _fake, _server) = start(test_config()).await;
        let mut net = Network::new(1);
        let mut c = net.new_client(2, &node(&addr)).await;
        net.set_blocked(2, true);
        assert!(matches!(vote(&mut c, 1, 2000).await, Err(RPCError::Unreachable(_))));
        assert!(matches!(
            net.call_app(2, &addr, b"x".to_vec(), Duration::from_secs(1)).await,
            Err(NetError::Unreachable { .. })
        ));
        net.set_blocked(2, false);
        vote(&mut c, 1, 2000).await.unwrap();
    }

    #[tokio::test]
    async fn t60_frame_reader_handles_partial_and_empty_input() {
        // Clean end of stream between frames.
        let mut buf = Vec::new();
        assert!(!read_frame(&mut &b""[..], 100, &mut buf).await.unwrap());
        // End of stream inside the header or the body is an error, not a short frame.
        assert!(read_frame(&mut &[0u8, 0][..], 100, &mut buf).await.is_err());
        assert!(read_frame(&mut &[0u8, 0, 0, 5, 1, 2][..], 100, &mut buf).await.is_err());
        // Exactly at the limit is fine, one past it is not.
        let mut input = 100u32.to_be_bytes().to_vec();
        input.extend_from_slice(&[7; 100]);
        assert!(read_frame(&mut &input[..], 100, &mut buf).await.unwrap());
        assert_eq!(buf, vec![7; 100]);
        assert!(read_frame(&mut &input[..], 99, &mut buf).await.is_err());
        // Two frames back to back.
        let mut input = Vec::new();
        for body in [&b"ab"[..], &b""[..]] {
            input.extend_from_slice(&(body.len() as u32).to_be_bytes());
            input.extend_from_slice(body);
        }
        let mut r = &input[..];
        assert!(read_frame(&mut r, 100, &mut buf).await.unwrap());
        assert_eq!(buf, b"ab");
        assert!(read_frame(&mut r, 100, &mut buf).await.unwrap());
        assert!(buf.is_empty());
        assert!(!read_frame(&mut r, 100, &mut buf).await.unwrap());
    }

    /// "If we panic, we lose": random bytes and corrupted valid frames must decode to an error or
    /// to some value, never a panic or a huge allocation.
    #[test]
    fn t61_hostile_bodies_do_not_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = Vec::new();
        let mut req = append(1, entries(3, 20));
        req.entries.push(Entry {
            log_id: log_id(4),
            payload: EntryPayload::Membership(openraft::Membership::new(
                vec![[1u64, 2, 3].into_iter().collect()],
                [(1u64, node("a")), (2, node("b")), (3, node("c"))]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )),
        });
        for body in [
            Request::AppendEntries(req),
            Request::Vote(VoteRequest::new(Vote::new(5, 2), Some(log_id(9)))),
            Request::InstallSnapshot(chunk(1)),
            Request::App(Payload(b"payload".to_vec())),
        ] {
            let frame = encode_frame(&Envelope { id: 7, body: &body }, 1 << 20).unwrap();
            let env: Envelope<Request> = decode_body(&frame[4..], 1 << 20).unwrap();
            assert_eq!(env.id, 7);
            valid.push(frame[4..].to_vec());
        }
        for round in 0..20_000 {
            let mut body = valid[round % valid.len()].clone();
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % body.len();
                        body[i] ^= 1 << (next() % 8);
                    }
                }
                1 => body.truncate((next() as usize) % body.len()),
                _ => body = (0..next() % 64).map(|_| next() as u8).collect(),
            }
            let _ = decode_body::<Envelope<Request>>(&body, 1 << 20);
            let _ = decode_body::<Envelope<Response>>(&body, 1 << 20);
        }
    }
}
