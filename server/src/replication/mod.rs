//! Durability and replication: the keyspace behind an openraft log on sled.
//!
//! ## How a write becomes durable
//!
//! ```text
//! conn: command runs under the keyspace lock (as in memory mode) and records its
//!       deterministic ops in ks.effects; the connection's ticket = (epoch, frontier seq)
//! proposer task: takes every recorded op, encodes one batch (codec) -> raft.client_write_ff
//!       (in order; a few batches in flight; one log flush covers a whole batch = group commit)
//! commit: when raft answers for a batch, `commit` advances to its last seq
//! conn: holds its replies until commit >= ticket, then writes them
//! ```
//!
//! The leader executes a command once, on its own keyspace, and the log carries the
//! operations it produced. Entries a node already holds are skipped on apply: every batch
//! is tagged with the leadership stint (`epoch`) that produced it and the sequence number
//! of its first op, and the state remembers how far it got in which epoch (the
//! *watermark*, also saved in snapshots). Replies of reads wait for the same frontier as
//! writes, so nothing a client sees is ever a state that the log could lose.

pub mod cluster;
pub mod codec;
pub mod session;
pub mod sm;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::shared::{Shared, State};

/// How many batches may wait for the log at once. One: openraft flushes entries one
/// append at a time, so a second batch in flight only splits the writes that would have
/// shared the next flush (measured on the 2-core VM, SET at 50 clients: 1 in flight ~29k/s
/// with ~22 ops per entry; 2 in flight ~17k/s with 14; 8 in flight ~12k/s with 7).
const MAX_IN_FLIGHT: usize = 1;

/// How long a reply waits for its operations to commit before the connection is closed
/// (a leader without a majority cannot commit; its clients should go elsewhere).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many operations a leader may hold recorded but uncommitted before new writes wait
/// (a healthy leader commits within milliseconds: even 50 clients pipelining 16 writes each
/// keep under a thousand in flight).
pub const MAX_UNCOMMITTED_OPS: u64 = 100_000;

/// A point in the stream of recorded operations: the `seq`-th op of leadership `epoch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticket {
    pub epoch: u64,
    pub seq: u64,
}

/// Replication bookkeeping that lives in [`State`], under the keyspace lock.
#[derive(Debug, Default)]
pub struct ReplState {
    /// Non-zero while this node leads and may execute writes: ops it records belong here.
    pub leader_epoch: u64,
    /// Ops of `leader_epoch` already handed to the proposer.
    pub taken: u64,
    /// Watermark when not leading: the last (epoch, seq) applied to this state.
    pub applied: Ticket,
    /// The Raft adapter's bookkeeping as of the last applied entry (stored with the state
    /// so a snapshot's metadata always matches its data; see `redoubt_raft::StateMachine`).
    pub raft_state: Vec<u8>,
    /// Replies of forwarded writes, for answering retries (see `session`).
    pub sessions: session::Sessions,
}

impl ReplState {
    /// The last op this state includes (what a snapshot records; what apply skips up to).
    pub fn watermark(&self, recorded_not_taken: usize) -> Ticket {
        if self.leader_epoch != 0 {
            Ticket { epoch: self.leader_epoch, seq: self.taken + recorded_not_taken as u64 }
        } else {
            self.applied
        }
    }
}

/// The running replication of one node.
pub struct Replicator {
    pub raft: redoubt_raft::Raft,
    pub node_id: u64,
    /// Started with `--cluster`: followers forward writes to the leader.
    pub clustered: bool,
    /// Raft addresses of the initial members (forwarding and WHOAMI go there).
    pub members: BTreeMap<u64, String>,
    pub network: redoubt_raft::network::Network,
    /// Read access to the log, for rebuilding the keyspace after a lost leadership.
    log_reader: redoubt_raft::log_store::LogReader,
    /// The leader's client address, learned from it (RAFT INFO `leader_addr`).
    pub leader_client_addr: parking_lot::Mutex<Option<(u64, String)>>,
    pub sm: redoubt_raft::StateMachineStore<sm::ServerSm>,
    /// Wakes the proposer: something was recorded.
    wake: Notify,
    /// The last committed op, published to connections waiting to reply.
    commit_tx: watch::Sender<Ticket>,
    /// The frontier (seq of the last recorded op in the current epoch), readable without
    /// the keyspace lock: a safe over-estimate for replies produced outside a batch.
    recorded: AtomicU64,
    /// The committed frontier's seq (`commit_tx`'s), readable without a lock: every write
    /// checks the backlog bound against it.
    committed: AtomicU64,
    /// True while this node is the only voter: a batch flushed here is committed.
    sole_voter: std::sync::atomic::AtomicBool,
    /// Set (for good) before this node proposes new voters: from then on commits come only
    /// from openraft, even in the moment before the new membership shows in its metrics.
    pub grown: std::sync::atomic::AtomicBool,
    /// `appendfsync everysec` on a sole voter: replies do not wait for the log at all, as
    /// Redis's everysec acknowledges before its fsync. The loss window (about a second of
    /// acknowledged writes on any crash) is the documented price.
    pub ack_on_execute: std::sync::atomic::AtomicBool,
    /// This process's forwarding origin (random, drawn at start) and the sequence number of
    /// its last forwarded request (see `session`).
    pub origin: u64,
    pub forward_seq: AtomicU64,
    /// Read barrier: requests so far, and the last round's (generation, leadership held).
    read_req: AtomicU64,
    read_wake: Notify,
    read_done: watch::Sender<(u64, bool)>,
}

impl Replicator {
    /// Called under the keyspace lock after a batch ran: the ticket covering everything the
    /// batch could have seen, and whether the proposer has work.
    pub fn ticket(&self, st: &State) -> Ticket {
        if st.repl.leader_epoch == 0 {
            // Not leading: nothing here waits for this node's log.
            return Ticket::default();
        }
        let fx = st.ks.effects.as_ref().map_or(0, |v| v.len());
        let t = st.repl.watermark(fx);
        self.recorded.store(t.seq, Ordering::Relaxed);
        t
    }

    /// Operations recorded in this leadership and not yet committed. A leader cut off from
    /// its majority keeps recording the writes it runs until their clients give up; past
    /// [`MAX_UNCOMMITTED_OPS`] new writes wait instead (see `conn`), so that backlog, and
    /// the memory it holds, stays bounded.
    pub fn uncommitted(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed).saturating_sub(self.committed.load(Ordering::Relaxed))
    }

    /// Changes the committed frontier (publishing it when `f` says it changed).
    fn update_commit(&self, f: impl FnOnce(&mut Ticket) -> bool) {
        self.commit_tx.send_if_modified(f);
        self.committed.store(self.commit_tx.borrow().seq, Ordering::Relaxed);
    }

    pub fn backlog_full(&self) -> bool {
        self.uncommitted() > MAX_UNCOMMITTED_OPS
    }

    /// A ticket for output produced by other connections (served blocked pops, pushes).
    pub fn current_ticket(&self) -> Ticket {
        Ticket { epoch: self.commit_tx.borrow().epoch, seq: self.recorded.load(Ordering::Relaxed) }
    }

    /// The current leader and its raft address, if one is known.
    pub fn leader_raft_addr(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.raft_addr.clone())
            .filter(|a| !a.is_empty())
            .or_else(|| self.members.get(&id).cloned())?;
        Some((id, addr))
    }

    /// Confirms that this node still leads (a heartbeat round answered by a majority,
    /// openraft's read index) after the caller's reads ran, so a deposed leader that has
    /// not noticed yet never answers a read. Concurrent callers share rounds: one round
    /// serves every request made before it started. A sole voter needs no round.
    pub async fn confirm_leadership(&self) -> bool {
        if self.sole_voter.load(Ordering::Acquire) {
            return true;
        }
        let g = self.read_req.fetch_add(1, Ordering::AcqRel) + 1;
        self.read_wake.notify_one();
        let mut rx = self.read_done.subscribe();
        let held = match rx.wait_for(|&(done, _)| done >= g).await {
            Ok(r) => r.1,
            Err(_) => false,
        };
        held
    }

    pub fn wake_proposer(&self) {
        self.wake.notify_one();
    }

    pub fn subscribe(&self) -> watch::Receiver<Ticket> {
        self.commit_tx.subscribe()
    }

    /// Waits until every op up to `t` is committed. False if that can no longer happen
    /// (leadership changed: the outcome of those ops is unknown, so the connection closes).
    pub async fn wait_committed(rx: &mut watch::Receiver<Ticket>, t: Ticket) -> bool {
        if t.seq == 0 {
            return true;
        }
        match rx.wait_for(|c| c.epoch != t.epoch || c.seq >= t.seq).await {
            Ok(c) => c.epoch == t.epoch,
            Err(_) => false,
        }
    }
}

/// How long the proposer lets a batch grow under `appendfsync everysec`.
const EVERYSEC_LINGER: Duration = Duration::from_millis(1);

/// Proposed batches awaiting commit, oldest first: the last op of each and its answer.
type InFlight = VecDeque<(Ticket, CommitRx)>;
type CommitRx =
    <<redoubt_raft::TypeConfig as openraft::RaftTypeConfig>::Responder as openraft::raft::responder::Responder<
        redoubt_raft::TypeConfig,
    >>::Receiver;

/// Takes every recorded op and proposes it, keeping at most [`MAX_IN_FLIGHT`] batches in
/// the log's hands; publishes commits in order.
async fn proposer(shared: Arc<Shared>, repl: Arc<Replicator>) {
    let mut in_flight: InFlight = VecDeque::new();
    let mut commits = repl.subscribe();
    loop {
        // A batch stops counting against the limit once it is committed, which for a sole
        // voter happens when its flush completes (the durable hook), before openraft's own
        // answer arrives.
        let committed = *commits.borrow_and_update();
        let waiting = in_flight.iter().filter(|(t, _)| t.epoch != committed.epoch || t.seq > committed.seq).count();
        let can_propose = waiting < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            _ = commits.changed(), if !can_propose => {}
            res = async { (&mut in_flight.front_mut().expect("non-empty").1).await }, if !in_flight.is_empty() => {
                let (t, _) = in_flight.pop_front().expect("non-empty");
                match res {
                    Ok(Ok(_)) => {
                        repl.update_commit(|c| {
                            let newer = c.epoch == t.epoch && c.seq < t.seq;
                            if newer {
                                c.seq = t.seq;
                            }
                            newer
                        });
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "write not committed; stepping down");
                        step_down(&shared, &repl);
                        in_flight.clear();
                    }
                    Err(_) => {
                        tracing::error!("raft stopped while a write was in flight");
                        step_down(&shared, &repl);
                        return;
                    }
                }
            }
            _ = repl.wake.notified(), if can_propose => {
                if repl.ack_on_execute.load(Ordering::Relaxed) {
                    // `everysec`: nobody waits for this batch, so let it grow for a moment;
                    // one entry per millisecond instead of one per client batch costs a
                    // fraction of the proposer's, Raft's and the log's time, well inside
                    // the second of loss `everysec` already allows.
                    tokio::time::sleep(EVERYSEC_LINGER).await;
                }
                propose(&shared, &repl, &mut in_flight).await;
            }
            // A safety net for ops recorded without a wake-up (cron, expiry on reads).
            _ = tokio::time::sleep(Duration::from_millis(10)), if can_propose => {
                propose(&shared, &repl, &mut in_flight).await;
            }
        }
    }
}

async fn propose(shared: &Shared, repl: &Replicator, in_flight: &mut InFlight) {
    let (payload, last) = {
        let mut st = shared.state.lock();
        let epoch = st.repl.leader_epoch;
        let Some(fx) = st.ks.effects.as_mut() else { return };
        if fx.is_empty() || epoch == 0 {
            return;
        }
        let ops = std::mem::take(fx);
        let first_seq = st.repl.taken + 1;
        st.repl.taken += ops.len() as u64;
        let last = Ticket { epoch, seq: st.repl.taken };
        repl.recorded.fetch_max(last.seq, Ordering::Relaxed);
        (codec::encode_batch(codec::Origin { epoch, first_seq }, &ops), last)
    };
    // client_write_ff only queues the entry (in call order), so batches enter the log in
    // the order their ops ran.
    match repl.raft.client_write_ff(redoubt_raft::Payload(payload)).await {
        Ok(rx) => in_flight.push_back((last, rx)),
        Err(e) => {
            tracing::error!(error = %e, "raft stopped; cannot propose");
            step_down(shared, repl);
        }
    }
}

/// Leadership was lost (or the log refused a write): stop executing writes, fail every
/// waiting reply, and put the keyspace back to what the log committed.
fn step_down(shared: &Shared, repl: &Replicator) {
    let mut st = shared.state.lock();
    if st.repl.leader_epoch == 0 {
        return;
    }
    let fx = st.ks.effects.as_ref().map_or(0, |v| v.len());
    let have = st.repl.watermark(fx);
    let committed = *repl.commit_tx.borrow();
    let clean = committed.epoch == have.epoch && committed.seq >= have.seq;
    st.repl.leader_epoch = 0;
    st.ks.effects = None;
    st.ks.replica = true;
    // What this state holds of the ending epoch; its entries, when openraft applies them
    // here, are skipped.
    st.repl.applied = have;
    repl.update_commit(|c| {
        c.epoch = 0;
        true
    });
    if clean {
        tracing::info!(node = repl.node_id, "no longer leading; following");
        return;
    }
    // The keyspace may hold operations the log will never commit: rebuild it from the
    // snapshot and the committed log. (Entries of the ending epoch that did commit come
    // back through openraft's apply: the rebuilt watermark no longer covers them.)
    let started = std::time::Instant::now();
    if let Err(e) = sm::rebuild(shared, &mut st, repl.sm.current_snapshot_path(), &repl.log_reader) {
        // Without a consistent state this node must not serve; a restart reloads it.
        tracing::error!(error = %e, "rebuilding the keyspace after a lost leadership failed; stopping");
        std::process::exit(75);
    }
    tracing::warn!(
        ms = started.elapsed().as_millis() as u64,
        "lost the leadership with writes in flight; keyspace rebuilt from the committed log"
    );
}

/// Starts a new leadership stint once this node leads and has applied everything before
/// it: from here on, ops it records are proposed under a fresh epoch.
pub fn begin_epoch(shared: &Shared, repl: &Replicator) {
    let mut st = shared.state.lock();
    if st.repl.leader_epoch != 0 {
        return;
    }
    // Random, so a restarted node never reuses an epoch its log may still hold.
    let epoch = loop {
        let e: u64 = rand::random();
        if e != 0 && e != st.repl.applied.epoch {
            break e;
        }
    };
    st.repl.leader_epoch = epoch;
    st.repl.taken = 0;
    st.ks.effects = Some(Vec::new());
    st.ks.replica = false;
    repl.recorded.store(0, Ordering::Relaxed);
    repl.update_commit(|c| {
        *c = Ticket { epoch, seq: 0 };
        true
    });
    tracing::info!(epoch, node = repl.node_id, "leading; accepting writes");
}

/// Opens the log and the latest snapshot in `dir`, loads the keyspace, starts Raft (a
/// single-node cluster unless `cluster` lists members) and the proposer. Returns when this
/// node serves clients; afterwards it keeps running in background tasks (and never
/// returns in the select loop of `run_shared`, where it is polled).
pub async fn start(shared: Arc<Shared>, client_addr: String) -> anyhow::Result<()> {
    let (dir, node_id, fsync, cluster, raft_addr, join) = {
        let c = shared.config.read();
        (
            std::path::PathBuf::from(&c.dir),
            c.node_id,
            c.appendfsync.clone(),
            c.cluster.clone(),
            c.raft_addr.clone(),
            c.join,
        )
    };
    // Clustered: a member list, or a raft address to grow from or join with.
    let clustered = !cluster.is_empty() || !raft_addr.is_empty() || join;
    let members = if !cluster.is_empty() {
        let m = cluster::parse_members(&cluster)?;
        if !m.contains_key(&node_id) {
            anyhow::bail!("--cluster does not list this node's id {node_id}");
        }
        m
    } else {
        if join && raft_addr.is_empty() {
            anyhow::bail!("--join needs --raft-addr (where the leader reaches this node)");
        }
        BTreeMap::from([(node_id, raft_addr.clone())])
    };
    std::fs::create_dir_all(&dir)?;
    let started = std::time::Instant::now();
    let policy = match fsync.as_str() {
        "always" => redoubt_raft::log_store::FsyncPolicy::Always,
        _ => redoubt_raft::log_store::FsyncPolicy::EverySec,
    };
    // sled's own periodic flush is off: the log store decides when data reaches the disk.
    let db = sled::Config::new().path(dir.join("raft-log")).flush_every_ms(None).open()?;
    // The fast path of a sole voter: a batch is committed once it is on this node's disk, so
    // its clients get their replies right after the flush.
    let weak = Arc::downgrade(&shared);
    let hook: redoubt_raft::log_store::DurableHook = Arc::new(move |payload: &[u8]| {
        let Some(shared) = weak.upgrade() else { return };
        let Some(repl) = shared.repl.get() else { return };
        if !repl.sole_voter.load(Ordering::Acquire) {
            return;
        }
        if let Some(last) = codec::batch_last(payload) {
            let last = Ticket { epoch: last.0, seq: last.1 };
            repl.update_commit(|c| {
                let newer = c.epoch == last.epoch && c.seq < last.seq;
                if newer {
                    c.seq = last.seq;
                }
                newer
            });
        }
    });
    let log = redoubt_raft::LogStore::open_with_hook(&db, policy, Some(hook))?;
    let log_reader = log.reader();
    let app = Arc::new(sm::ServerSm { shared: Arc::downgrade(&shared) });
    let sm = redoubt_raft::StateMachineStore::open(dir.join("raft-snapshots"), app)?;
    let config = openraft::Config {
        cluster_name: "redoubt".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Entries are batches of operations; a snapshot every 50k of them bounds replay.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(50_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    }
    .validate()?;
    let network = redoubt_raft::network::Network::new(node_id);
    let raft = redoubt_raft::Raft::new(node_id, Arc::new(config), network.clone(), log, sm.clone()).await?;
    if clustered {
        // Peers reach this node on the address the member list gives for its id.
        let listener = tokio::net::TcpListener::bind(&members[&node_id]).await?;
        let app_shared = shared.clone();
        let app: Arc<dyn redoubt_raft::network::AppHandler> =
            Arc::new(move |body: Vec<u8>| cluster::handle_app(app_shared.clone(), body));
        tokio::spawn(redoubt_raft::network::serve(listener, raft.clone(), app));
    }
    if !join && !raft.is_initialized().await? {
        // Every member starts with the same list, so every member proposes the same
        // initial membership (identical node records: client addresses are learned later).
        let nodes = members
            .iter()
            .map(|(&id, addr)| {
                // Only a node alone in its first membership knows every client address.
                let client = if cluster.is_empty() { client_addr.clone() } else { String::new() };
                (id, redoubt_raft::NodeAddr { raft_addr: addr.clone(), client_addr: client })
            })
            .collect::<BTreeMap<_, _>>();
        match raft.initialize(nodes).await {
            Ok(()) => {}
            // The raft listener is already up: peers that started first may have elected a
            // leader that reached this node between the check above and here, so it is
            // initialized by replication, with the membership every member proposes.
            Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(e))) => {
                tracing::info!(%e, "initialized by a peer before proposing the membership");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (commit_tx, _) = watch::channel(Ticket::default());
    let repl = Arc::new(Replicator {
        raft: raft.clone(),
        node_id,
        clustered,
        members,
        network,
        log_reader,
        leader_client_addr: parking_lot::Mutex::new(None),
        sm,
        wake: Notify::new(),
        commit_tx,
        recorded: AtomicU64::new(0),
        committed: AtomicU64::new(0),
        sole_voter: std::sync::atomic::AtomicBool::new(false),
        grown: std::sync::atomic::AtomicBool::new(false),
        ack_on_execute: std::sync::atomic::AtomicBool::new(false),
        origin: rand::random::<u64>().max(1),
        forward_seq: AtomicU64::new(0),
        read_req: AtomicU64::new(0),
        read_wake: Notify::new(),
        read_done: watch::channel((0, true)).0,
    });
    if shared.repl.set(repl.clone()).is_err() {
        anyhow::bail!("replication already started");
    }
    if clustered {
        tokio::spawn(read_barrier(repl.clone()));
        // A member serves as soon as its state is loaded: followers forward writes, and
        // the watcher starts an epoch when this node becomes a ready leader.
        shared.state.lock().ks.replica = true;
        tokio::spawn(proposer(shared.clone(), repl.clone()));
        tokio::spawn(watch_leadership(shared.clone(), repl.clone()));
        shared.loading.store(false, Ordering::Relaxed);
        tracing::info!(node = node_id, ms = started.elapsed().as_millis() as u64, "cluster member loaded");
        std::future::pending::<()>().await;
        return Ok(());
    }
    // Single node: ready when leading with every entry of the log applied.
    let mut metrics = raft.metrics();
    loop {
        let ready = {
            let m = metrics.borrow_and_update();
            m.current_leader == Some(node_id) && applied_everything(&m) && m.state.is_leader()
        };
        if ready {
            break;
        }
        metrics.changed().await.map_err(|_| anyhow::anyhow!("raft stopped while starting"))?;
    }
    let sole = raft.metrics().borrow().membership_config.membership().voter_ids().eq([node_id]);
    repl.sole_voter.store(sole, Ordering::Release);
    repl.ack_on_execute.store(sole && policy == redoubt_raft::log_store::FsyncPolicy::EverySec, Ordering::Release);
    begin_epoch(&shared, &repl);
    tokio::spawn(proposer(shared.clone(), repl.clone()));
    shared.loading.store(false, Ordering::Relaxed);
    let keys: usize = shared.state.lock().ks.dbs.iter().map(|d| d.table.len()).sum();
    tracing::info!(keys, ms = started.elapsed().as_millis() as u64, dir = %dir.display(), "durable storage loaded");
    std::future::pending::<()>().await;
    Ok(())
}

/// Whether this node has applied every entry of its log. A leader executes writes only
/// then: its keyspace must include everything committed before its stint. (Comparing the
/// applied entry's term with the current one is not enough: a node restarted with a
/// committed vote for itself leads again in the same term, with no blank entry, and may
/// hold entries of that term committed by the others but not yet applied here.)
fn applied_everything(m: &openraft::RaftMetrics<u64, redoubt_raft::NodeAddr>) -> bool {
    m.last_applied.is_some() && m.last_applied.map(|l| l.index) >= m.last_log_index
}

/// Follows openraft's view of leadership: starts an epoch when this node leads and has
/// applied everything before its term, steps down when it stops leading, and learns the
/// leader's client address for RAFT INFO.
async fn watch_leadership(shared: Arc<Shared>, repl: Arc<Replicator>) {
    let mut metrics = repl.raft.metrics();
    loop {
        let (leading_ready, leading, leader) = {
            let m = metrics.borrow_and_update();
            let leading = m.state.is_leader();
            let ready = leading && applied_everything(&m);
            let sole =
                m.membership_config.membership().voter_ids().eq([repl.node_id]) && !repl.grown.load(Ordering::Acquire);
            repl.sole_voter.store(sole, Ordering::Release);
            (ready, leading, m.current_leader)
        };
        let epoch = shared.state.lock().repl.leader_epoch;
        if leading_ready && epoch == 0 {
            begin_epoch(&shared, &repl);
        } else if !leading && epoch != 0 {
            step_down(&shared, &repl);
        }
        let known = repl.leader_client_addr.lock().as_ref().map(|(id, _)| *id);
        if let Some(id) = leader.filter(|&id| Some(id) != known) {
            let addr = if id == repl.node_id {
                Some(cluster::own_client_addr(&shared))
            } else {
                match repl.leader_raft_addr() {
                    Some((lid, raddr)) if lid == id => cluster::whoami(&repl, id, &raddr).await,
                    _ => None,
                }
            };
            if let Some(a) = addr {
                *repl.leader_client_addr.lock() = Some((id, a));
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the read-barrier rounds of [`Replicator::confirm_leadership`], one at a time.
async fn read_barrier(repl: Arc<Replicator>) {
    loop {
        repl.read_wake.notified().await;
        // Every request counted before this load is covered by this round, which starts
        // after it.
        let g = repl.read_req.load(Ordering::Acquire);
        let ok = repl.raft.get_read_log_id().await.is_ok();
        repl.read_done.send_modify(|d| *d = (g.max(d.0), ok));
    }
}
