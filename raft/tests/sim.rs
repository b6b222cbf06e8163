//! Deterministic simulation of a redoubt Raft cluster under network faults.
//!
//! A cluster of 3 or 5 openraft nodes and one client run inside a [turmoil] simulation, each on
//! a simulated host. The nodes talk through redoubt's own transport (`redoubt_raft::network`:
//! framing, pipelining, timeouts, dead-connection detection, reconnects with backoff) over
//! turmoil's simulated TCP instead of the kernel's, so it is that code that meets the faults.
//! The client proposes writes over the same transport (`call_app`, answered on the nodes'
//! cluster port by `Raft::client_write`), to whichever node it believes leads.
//!
//! A schedule drawn from the seed changes the network every few hundred simulated
//! milliseconds: partitions (a minority, often with the leader in it, sometimes with the
//! client), a node whose messages go nowhere while it still hears the others, links whose
//! messages are held and later delivered in one burst, message loss, and slow links. In
//! turmoil a lost segment breaks its TCP connection for good (there is no retransmission), the
//! worst a real path can do: the transport has to notice the silence and reconnect. Then
//! everything heals, and the cluster must converge.
//!
//! Checked after every simulation step (1 ms of simulated time):
//! - election safety, in openraft's terms (see [`Observer::check_new_leader`]): two leaders on
//!   different nodes have strictly ordered leader ids, every leader was granted by a majority,
//!   and no node's vote ever goes back. redoubt runs openraft's default mode, in which one term
//!   can see several leaders (`(term, node)` ids, the higher superseding the lower): "at most
//!   one leader per term" is the standard-Raft form of the first check, and holds only with
//!   openraft's `single-term-leader` feature;
//! - committed entries never change: once any node reports index `i` committed (saved as
//!   committed, or applied), every node that commits or applies `i` has the same entry, and no
//!   node truncates its log at or below its own committed index.
//!
//! Checked once the cluster has converged:
//! - log matching: for every pair of nodes, where both hold an entry with the same log id, the
//!   entries, and all the entries before them, are identical; every node's log up to the
//!   committed index is the same;
//! - every node applied the same entries, and every write acknowledged to the client is among
//!   them, at the index it was acknowledged with;
//! - reproducibility: one seed, run twice, records the same trace (every change of every node's
//!   role, term, log and applied index, with its time; the fault phases; the acknowledged
//!   writes; the final logs).
//!
//! Replaying a seed (a failure message names it; the trace is printed):
//!
//! ```text
//! SIM_SEED=17 cargo test -p redoubt-raft --test sim -- --nocapture
//! ```
//!
//! A longer run, over seeds 1..=N (about half a second per seed in a debug build):
//!
//! ```text
//! SIM_SEEDS=300 cargo test -p redoubt-raft --test sim raft_stays -- --nocapture
//! ```
//!
//! What makes a seed replay:
//! - every host runs on this test's thread, on a tokio runtime whose clock moves only when
//!   turmoil steps it; turmoil's latencies, losses and host order come from its seeded
//!   generator, the schedule and the client from generators seeded here;
//! - openraft's election timeouts come from `redoubt_raft::runtime`'s per-thread generator,
//!   seeded here (openraft's stock runtime draws them from the operating system);
//! - the log store and the state machine are the in-memory ones below. The sled log reports
//!   appends durable from its own flush thread, and the state machine adapter reads its
//!   snapshot directory on tokio's blocking pool at start-up; either hands work back to a
//!   runtime at an instant set by a real thread, and a run no longer replays;
//! - the transport polls in a fixed order (`biased` selects) and wakes the callers waiting for a
//!   connection in arrival order.
//!
//! One source is left: openraft's replication task waits out a backoff in an unbiased
//! `tokio::select!`, which breaks a tie between a ready timer and a ready event with the
//! runtime's own generator (seedable only in a `--cfg tokio_unstable` build). Both outcomes
//! process the same events before the next request, and no trace has been seen to differ; the
//! replay test would say so.
//!
//! Snapshots are off (`SnapshotPolicy::Never`, nothing is ever purged): snapshot transfer over
//! the transport is covered by the loopback cluster test in `network.rs`.

// openraft's StorageError is what the store's methods must return.
#![allow(clippy::result_large_err)]

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};
use std::io;
use std::net::SocketAddr;
use std::ops::RangeBounds;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Config, EntryPayload, LeaderId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, ServerState,
    SnapshotPolicy, StorageIOError, Vote,
};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use redoubt_raft::network::{serve_with_config, AppHandler, Listener, NetConfig, Network, Transport};
use redoubt_raft::{Entry, LogId, NodeAddr, Payload, Raft, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use serde::{Deserialize, Serialize};

/// Seeds of the default run: 1..=12. `SIM_SEEDS=N` runs 1..=N instead, `SIM_SEED=S` only S.
const DEFAULT_SEEDS: u64 = 12;
/// The seed the replay test runs twice unless `SIM_SEED` says otherwise: five nodes, loss,
/// partitions, and two leaders in one term.
const REPLAY_SEED: u64 = 57;

/// The port every node serves its cluster traffic on.
const RAFT_PORT: u16 = 7000;
/// Simulated time before the first fault: the cluster elects its first leader.
const WARMUP: Duration = Duration::from_secs(1);
/// Simulated time allowed, after the network heals, for the cluster to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// How long the client waits for a write's answer before it tries elsewhere.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// Acknowledged writes the client wants after the network healed before it stops.
const WRITES_AFTER_HEAL: usize = 3;

// ---------------------------------------------------------------------------------------------
// The simulated network, as a redoubt transport
// ---------------------------------------------------------------------------------------------

/// Connections over turmoil's simulated TCP. Only usable on a simulated host.
struct SimNet;

impl Transport for SimNet {
    type Reader = turmoil::net::tcp::OwnedReadHalf;
    type Writer = turmoil::net::tcp::OwnedWriteHalf;

    async fn connect(&self, addr: &str) -> io::Result<(Self::Reader, Self::Writer)> {
        Ok(turmoil::net::TcpStream::connect(addr).await?.into_split())
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    type Reader = turmoil::net::tcp::OwnedReadHalf;
    type Writer = turmoil::net::tcp::OwnedWriteHalf;

    async fn accept(&mut self) -> io::Result<(Self::Reader, Self::Writer, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        let (rd, wr) = stream.into_split();
        Ok((rd, wr, peer))
    }
}

// ---------------------------------------------------------------------------------------------
// Test-only storage
// ---------------------------------------------------------------------------------------------

/// The Raft log in memory: test-only. Appends are durable the moment they are made, so the
/// callback runs before `append` returns; nothing depends on a disk's timing.
#[derive(Clone, Default)]
struct MemLog(Arc<Mutex<MemLogState>>);

#[derive(Default)]
struct MemLogState {
    vote: Option<Vote<u64>>,
    /// Every leader id this node ever saved a vote for: the candidates it granted (and itself).
    granted: Vec<LeaderId<u64>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
    /// Safety violations only the store can see (a vote going back, a committed entry
    /// truncated).
    violations: Vec<String>,
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.0.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let st = self.0.lock();
        let last = st.entries.values().next_back().map(|e| e.log_id).or(st.purged);
        Ok(LogState { last_purged_log_id: st.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let mut st = self.0.lock();
        // A vote never goes back: that is what keeps a node from granting two leaders that could
        // both think they lead.
        if let Some(old) =
            st.vote.filter(|old| !matches!(vote.partial_cmp(old), Some(Ordering::Greater | Ordering::Equal)))
        {
            st.violations.push(format!("vote went from {old} to {vote}"));
        }
        if !st.granted.contains(&vote.leader_id) {
            st.granted.push(vote.leader_id);
        }
        st.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.0.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.0.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.0.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.0.lock().entries.extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut st = self.0.lock();
        if let Some(c) = st.committed.filter(|c| c.index >= log_id.index) {
            st.violations.push(format!("truncated the log from {log_id} while {c} was committed"));
        }
        st.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut st = self.0.lock();
        st.entries = st.entries.split_off(&(log_id.index + 1));
        st.purged = Some(log_id);
        Ok(())
    }
}

/// The state machine in memory: test-only. It records every normal entry applied, as
/// `(index, payload)`, and never snapshots.
#[derive(Clone, Default)]
struct MemSm(Arc<Mutex<MemSmState>>);

#[derive(Default)]
struct MemSmState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied: Vec<(u64, Vec<u8>)>,
}

fn snapshots_are_off() -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error("snapshots are off in the simulation")).into()
}

impl RaftStateMachine<TypeConfig> for MemSm {
    type SnapshotBuilder = MemSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.0.lock();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut st = self.0.lock();
        let mut replies = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(p) => st.applied.push((entry.log_id.index, p.0)),
                EntryPayload::Membership(m) => st.membership = StoredMembership::new(Some(entry.log_id), m),
            }
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        Err(snapshots_are_off())
    }

    async fn install_snapshot(&mut self, _: &SnapshotMeta, _: Box<tokio::fs::File>) -> Result<(), StorageError> {
        Err(snapshots_are_off())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(snapshots_are_off())
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes and the client
// ---------------------------------------------------------------------------------------------

fn host_name(id: u64) -> String {
    format!("n{id}")
}

fn raft_addr(id: u64) -> String {
    format!("n{id}:{RAFT_PORT}")
}

/// What the driver sees of a running node.
struct Node {
    raft: Raft,
    log: MemLog,
    sm: MemSm,
}

type Nodes = Rc<Vec<RefCell<Option<Node>>>>;

/// The answer to a write the client sent to a node.
#[derive(Debug, Serialize, Deserialize)]
enum WriteReply {
    Written(LogId),
    NotLeader(Option<u64>),
    Failed(String),
}

/// Each node answers the client's writes on its cluster port.
fn write_handler(raft: Raft) -> Arc<dyn AppHandler> {
    Arc::new(move |body: Vec<u8>| {
        let raft = raft.clone();
        async move {
            let reply = match raft.client_write(Payload(body)).await {
                Ok(resp) => WriteReply::Written(resp.log_id),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => WriteReply::NotLeader(f.leader_id),
                Err(e) => WriteReply::Failed(e.to_string()),
            };
            bincode::serialize(&reply).expect("a reply encodes")
        }
    })
}

fn raft_config() -> Arc<Config> {
    // The server's timings; snapshots off (see the module doc).
    let config = Config {
        cluster_name: "sim".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

async fn run_node(id: u64, members: BTreeMap<u64, NodeAddr>, slot: Nodes) -> turmoil::Result {
    let listener = SimListener(turmoil::net::TcpListener::bind(("0.0.0.0", RAFT_PORT)).await?);
    let (log, sm) = (MemLog::default(), MemSm::default());
    let net = Network::with_transport(id, NetConfig::default(), SimNet);
    let raft = Raft::new(id, raft_config(), net, log.clone(), sm.clone()).await?;
    if id == 1 {
        raft.initialize(members).await?;
    }
    *slot[id as usize - 1].borrow_mut() = Some(Node { raft: raft.clone(), log, sm });
    serve_with_config(listener, raft.clone(), write_handler(raft), NetConfig::default()).await;
    Ok(())
}

/// What the client and the driver share.
#[derive(Default)]
struct ClientState {
    /// Set by the driver once the network healed for good.
    healed: Cell<bool>,
    /// Writes acknowledged to the client, with the log id they were written at.
    acked: RefCell<Vec<(Vec<u8>, LogId)>>,
    /// Writes sent, acknowledged or not.
    sent: Cell<u64>,
}

async fn run_client(seed: u64, nodes: u64, state: Rc<ClientState>) -> turmoil::Result {
    let net = Network::with_transport(0, NetConfig::default(), SimNet);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xc1e7);
    let mut leader: Option<u64> = None;
    let mut acked_after_heal = 0;
    while acked_after_heal < WRITES_AFTER_HEAL {
        let healed = state.healed.get();
        let target = leader.unwrap_or_else(|| rng.gen_range(1..=nodes));
        let n = state.sent.get();
        state.sent.set(n + 1);
        let payload = format!("w{n:05}").into_bytes();
        let reply = net.call_app(target, &raft_addr(target), payload.clone(), WRITE_TIMEOUT).await;
        match reply.map(|bytes| bincode::deserialize::<WriteReply>(&bytes)) {
            Ok(Ok(WriteReply::Written(log_id))) => {
                state.acked.borrow_mut().push((payload, log_id));
                leader = Some(target);
                if healed {
                    acked_after_heal += 1;
                }
            }
            Ok(Ok(WriteReply::NotLeader(hint))) => leader = hint,
            // Unknown outcome (timeout, broken connection) or a refusal: ask someone else.
            Ok(Ok(WriteReply::Failed(_))) | Ok(Err(_)) | Err(_) => leader = None,
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..60))).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The fault schedule
// ---------------------------------------------------------------------------------------------

/// What is wrong with the network during one phase of the schedule. Every phase starts from a
/// healed network.
#[derive(Debug, Default)]
struct Phase {
    /// These nodes are cut off from the others, both ways; the client is on the minority's side
    /// when `client_with_minority`.
    partition: Vec<u64>,
    client_with_minority: bool,
    /// Messages from this node to every other node are dropped (it still hears them).
    mute: Option<u64>,
    /// Messages between these pairs are held, then delivered in one burst when the phase ends.
    held: Vec<(u64, u64)>,
    /// The probability that a message breaks its link.
    loss: f64,
    /// These links are slow: this maximal latency, in ms.
    slow: Vec<(u64, u64, u64)>,
}

impl Phase {
    fn draw(rng: &mut SmallRng, nodes: u64, leader: Option<u64>) -> Phase {
        let mut phase = Phase::default();
        let all: Vec<u64> = (1..=nodes).collect();
        match rng.gen_range(0..10) {
            0..=3 => {
                let size = rng.gen_range(1..=(nodes - 1) / 2) as usize;
                let mut pick = all.clone();
                pick.shuffle(rng);
                // Half of the time the leader is among the cut-off: the interesting case.
                if let Some(l) = leader.filter(|_| rng.gen_bool(0.5)) {
                    pick.retain(|&n| n != l);
                    pick.insert(0, l);
                }
                pick.truncate(size);
                pick.sort_unstable();
                phase.partition = pick;
                phase.client_with_minority = rng.gen_bool(0.3);
            }
            4..=5 => {
                let node = leader.filter(|_| rng.gen_bool(0.5)).unwrap_or_else(|| rng.gen_range(1..=nodes));
                phase.mute = Some(node);
            }
            6..=7 => {
                for _ in 0..rng.gen_range(1..=2) {
                    let a = rng.gen_range(1..=nodes);
                    let b = rng.gen_range(0..=nodes); // 0: the client
                    if a != b && !phase.held.contains(&(a, b)) {
                        phase.held.push((a, b));
                    }
                }
            }
            _ => {}
        }
        if rng.gen_bool(0.3) {
            phase.loss = rng.gen_range(0.001..0.02);
        }
        if rng.gen_bool(0.3) {
            for _ in 0..rng.gen_range(1..=3) {
                let a = rng.gen_range(1..=nodes);
                let b = rng.gen_range(0..=nodes);
                if a != b {
                    phase.slow.push((a, b, rng.gen_range(50..400)));
                }
            }
        }
        phase
    }

    fn apply(&self, sim: &mut turmoil::Sim, nodes: u64) {
        if !self.partition.is_empty() {
            let mut minority: Vec<String> = self.partition.iter().map(|&n| host_name(n)).collect();
            let mut majority: Vec<String> =
                (1..=nodes).filter(|n| !self.partition.contains(n)).map(host_name).collect();
            if self.client_with_minority {
                minority.push("client".to_string());
            } else {
                majority.push("client".to_string());
            }
            for a in &minority {
                for b in &majority {
                    sim.partition(a.as_str(), b.as_str());
                }
            }
        }
        if let Some(node) = self.mute {
            for other in (1..=nodes).filter(|&n| n != node) {
                sim.partition_oneway(host_name(node), host_name(other));
            }
        }
        for &(a, b) in &self.held {
            sim.hold(host(a), host(b));
        }
        if self.loss > 0.0 {
            sim.set_fail_rate(self.loss);
        }
        for &(a, b, ms) in &self.slow {
            sim.set_link_max_message_latency(host(a), host(b), Duration::from_millis(ms));
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.partition.is_empty() {
            let client = if self.client_with_minority { " (with the client)" } else { "" };
            parts.push(format!("partition {:?}{client}", self.partition));
        }
        if let Some(n) = self.mute {
            parts.push(format!("n{n} mute"));
        }
        if !self.held.is_empty() {
            let links: Vec<String> = self.held.iter().map(|&(a, b)| format!("{}-{}", host(a), host(b))).collect();
            parts.push(format!("hold {}", links.join(" ")));
        }
        if self.loss > 0.0 {
            parts.push(format!("loss {:.4}", self.loss));
        }
        if !self.slow.is_empty() {
            let links: Vec<String> =
                self.slow.iter().map(|&(a, b, ms)| format!("{}-{} {ms} ms", host(a), host(b))).collect();
            parts.push(format!("slow {}", links.join(", ")));
        }
        if parts.is_empty() {
            parts.push("calm".to_string());
        }
        f.write_str(&parts.join(", "))
    }
}

/// Host 0 is the client.
fn host(n: u64) -> String {
    if n == 0 {
        "client".to_string()
    } else {
        host_name(n)
    }
}

/// Back to a healthy network: held messages delivered, every cut repaired, no loss, base latency.
fn heal(sim: &mut turmoil::Sim, nodes: u64, base_latency: Duration) {
    for a in 0..=nodes {
        for b in a + 1..=nodes {
            // `release` marks the link healthy (undoing cuts, one-way ones too) and schedules
            // held messages; `repair` alone would leave them held.
            sim.release(host(a), host(b));
            sim.repair(host(a), host(b));
            sim.set_link_max_message_latency(host(a), host(b), base_latency);
        }
    }
    sim.set_fail_rate(0.0);
}

// ---------------------------------------------------------------------------------------------
// Observation and checks
// ---------------------------------------------------------------------------------------------

/// What the driver learned so far, and the trace a replay must reproduce.
#[derive(Default)]
struct Observer {
    /// Every leader seen, in order: its leader id and the node that led with it.
    leaders: Vec<(LeaderId<u64>, u64)>,
    /// index -> the entry committed there, as first reported by any node.
    committed: BTreeMap<u64, Entry>,
    /// Per node: the first index not yet checked against `committed`.
    unchecked: Vec<u64>,
    /// Per node: this many of its applied payloads were checked.
    applied_checked: Vec<usize>,
    /// Per node: its state as last traced.
    seen: Vec<String>,
    trace: Vec<String>,
}

impl Observer {
    fn new(nodes: u64) -> Observer {
        let n = nodes as usize;
        Observer {
            unchecked: vec![0; n],
            applied_checked: vec![0; n],
            seen: vec![String::new(); n],
            ..Observer::default()
        }
    }

    /// Election safety, in openraft's terms. A leader is identified by its leader id, `(term,
    /// node)`. In standard Raft (openraft's `single-term-leader` feature) two leader ids of one
    /// term are not comparable, and a term has at most one leader. redoubt runs openraft's
    /// default ("advanced") mode, where leader ids are totally ordered, term first, and a
    /// node grants any leader id above the ones it granted before: a term can then see several
    /// leaders, each superseding the lower ones (whose appends every node that granted the
    /// higher one refuses). What must hold in both modes, and is checked here:
    /// - two leaders on different nodes have strictly ordered leader ids (in standard mode: not
    ///   the same term);
    /// - a majority of the voters saved a vote for the new leader's id (it was elected);
    /// - no node's vote ever goes back (checked by the log store, reported by `sample`).
    fn check_new_leader(&self, id: u64, leader: LeaderId<u64>, nodes: &Nodes) -> Result<(), String> {
        if leader.voted_for() != Some(id) {
            return Err(format!("election safety: n{id} leads with the leader id {leader} of another node"));
        }
        for (other, node) in &self.leaders {
            if *node != id && !matches!(other.partial_cmp(&leader), Some(Ordering::Less | Ordering::Greater)) {
                return Err(format!("election safety: n{node} led as {other}, n{id} leads as {leader}"));
            }
        }
        let granted = nodes
            .iter()
            .filter(|n| n.borrow().as_ref().is_some_and(|n| n.log.0.lock().granted.contains(&leader)))
            .count();
        if granted <= nodes.len() / 2 {
            return Err(format!(
                "election safety: n{id} leads as {leader}, granted by {granted} of {} voters only",
                nodes.len()
            ));
        }
        Ok(())
    }

    /// Samples every running node after a simulation step.
    fn sample(&mut self, now: Duration, nodes: &Nodes) -> Result<(), String> {
        for (i, slot) in nodes.iter().enumerate() {
            let slot = slot.borrow();
            let Some(node) = slot.as_ref() else { continue };
            let id = i as u64 + 1;
            let (state, vote, last_applied) = {
                let m = node.raft.metrics();
                let m = m.borrow();
                let seen = format!(
                    "{:?} term {} leader {:?} log {:?} applied {:?}",
                    m.state,
                    m.current_term,
                    m.current_leader,
                    m.last_log_index,
                    m.last_applied.map(|l| l.index)
                );
                if seen != self.seen[i] {
                    self.trace.push(format!("{:>6} ms  n{id}: {seen}", now.as_millis()));
                    self.seen[i] = seen;
                }
                (m.state, m.vote, m.last_applied)
            };

            if state == ServerState::Leader && !self.leaders.contains(&(vote.leader_id, id)) {
                self.check_new_leader(id, vote.leader_id, nodes)?;
                self.leaders.push((vote.leader_id, id));
                self.trace.push(format!("{:>6} ms  leader n{id} as {}", now.as_millis(), vote.leader_id));
            }

            let log = node.log.0.lock();
            if let Some(v) = log.violations.first() {
                return Err(format!("n{id}: {v}"));
            }
            let sm = node.sm.0.lock();
            let applied = &sm.applied;
            // Everything applied is committed, whatever the metrics say yet.
            let committed =
                [log.committed.map(|c| c.index), last_applied.map(|l| l.index), applied.last().map(|a| a.0)]
                    .into_iter()
                    .flatten()
                    .max();
            let upto = committed.map_or(0, |c| c + 1);
            for index in self.unchecked[i]..upto {
                let Some(entry) = log.entries.get(&index) else {
                    return Err(format!("n{id} reports index {index} committed but does not hold it"));
                };
                match self.committed.entry(index) {
                    MapEntry::Vacant(v) => {
                        v.insert(entry.clone());
                    }
                    MapEntry::Occupied(o) if o.get() != entry => {
                        return Err(format!(
                            "committed entry changed: index {index} was {}, n{id} committed {}",
                            show(o.get()),
                            show(entry)
                        ));
                    }
                    MapEntry::Occupied(_) => {}
                }
            }
            self.unchecked[i] = self.unchecked[i].max(upto);
            for (index, payload) in &applied[self.applied_checked[i]..] {
                let committed = self.committed.get(index);
                if !matches!(committed.map(|e| &e.payload), Some(EntryPayload::Normal(p)) if p.0 == *payload) {
                    return Err(format!(
                        "n{id} applied {:?} at {index}, the entry committed there is {}",
                        String::from_utf8_lossy(payload),
                        committed.map_or("none".to_string(), show)
                    ));
                }
            }
            self.applied_checked[i] = applied.len();
        }
        Ok(())
    }
}

/// An entry as a failure message shows it (openraft's `Debug` leaves the payload out).
fn show(entry: &Entry) -> String {
    match &entry.payload {
        EntryPayload::Blank => format!("{} (blank)", entry.log_id),
        EntryPayload::Normal(p) => format!("{} {:?}", entry.log_id, String::from_utf8_lossy(&p.0)),
        EntryPayload::Membership(m) => format!("{} (membership {m})", entry.log_id),
    }
}

/// The common last log id when every node holds and applied the same log and agrees on one
/// leader; `None` while they do not.
fn converged(nodes: &Nodes) -> Option<LogId> {
    let mut common: Option<(Option<LogId>, Option<u64>)> = None;
    for slot in nodes.iter() {
        let slot = slot.borrow();
        let node = slot.as_ref()?;
        let m = node.raft.metrics();
        let m = m.borrow();
        let applied = m.last_applied?;
        if m.last_log_index != Some(applied.index) || m.current_leader.is_none() {
            return None;
        }
        let mine = (Some(applied), m.current_leader);
        if common.get_or_insert(mine) != &mine {
            return None;
        }
    }
    common.and_then(|c| c.0)
}

/// One line per node: what to look at when a run fails.
fn describe(nodes: &Nodes) -> String {
    let mut out = String::new();
    for (i, slot) in nodes.iter().enumerate() {
        let slot = slot.borrow();
        let Some(node) = slot.as_ref() else {
            let _ = writeln!(out, "  n{}: not started", i + 1);
            continue;
        };
        let m = node.raft.metrics();
        let m = m.borrow();
        let _ = writeln!(
            out,
            "  n{}: {:?} term {} leader {:?} last log {:?} applied {:?} {:?}",
            i + 1,
            m.state,
            m.current_term,
            m.current_leader,
            m.last_log_index,
            m.last_applied.map(|l| l.to_string()),
            m.running_state
        );
    }
    out
}

/// The checks on the converged cluster; returns the final logs for the trace.
fn check_final(nodes: &Nodes, observer: &Observer, acked: &[(Vec<u8>, LogId)]) -> Result<Vec<String>, String> {
    let logs: Vec<BTreeMap<u64, Entry>> =
        nodes.iter().map(|n| n.borrow().as_ref().expect("started").log.0.lock().entries.clone()).collect();
    let applied: Vec<Vec<(u64, Vec<u8>)>> =
        nodes.iter().map(|n| n.borrow().as_ref().expect("started").sm.0.lock().applied.clone()).collect();

    // Log matching, pairwise: past the first index where two logs differ, no entry may have the
    // same log id in both (the same log id means the same entry and the same log before it).
    for a in 0..logs.len() {
        for b in a + 1..logs.len() {
            let mut diverged_at = None;
            for (index, ea) in &logs[a] {
                let Some(eb) = logs[b].get(index) else { continue };
                if ea != eb {
                    if ea.log_id == eb.log_id {
                        return Err(format!(
                            "log matching: n{} holds {}, n{} holds {}",
                            a + 1,
                            show(ea),
                            b + 1,
                            show(eb)
                        ));
                    }
                    diverged_at.get_or_insert(*index);
                } else if let Some(d) = diverged_at {
                    return Err(format!(
                        "log matching: n{} and n{} both hold {} but differ at {d} before it",
                        a + 1,
                        b + 1,
                        ea.log_id
                    ));
                }
            }
        }
    }

    // Every log up to the committed index is the committed log (indexes start at 0: the initial
    // membership).
    let committed_index = observer.committed.keys().next_back().copied().unwrap_or(0);
    let expected: Vec<&Entry> = observer.committed.values().collect();
    if expected.len() as u64 != committed_index + 1 {
        return Err(format!("committed indexes have gaps: {} entries up to {committed_index}", expected.len()));
    }
    for (i, log) in logs.iter().enumerate() {
        let held: Vec<&Entry> = log.range(..=committed_index).map(|(_, e)| e).collect();
        if held != expected {
            return Err(format!("n{}'s log up to the committed index {committed_index} differs", i + 1));
        }
    }

    // The same entries applied everywhere, every acknowledged write among them.
    for (i, a) in applied.iter().enumerate().skip(1) {
        if a != &applied[0] {
            return Err(format!("n1 and n{} applied different entries", i + 1));
        }
    }
    for (payload, log_id) in acked {
        if !applied[0].iter().any(|(index, p)| *index == log_id.index && p == payload) {
            return Err(format!(
                "write {:?} was acknowledged at {log_id} but is not applied there",
                String::from_utf8_lossy(payload)
            ));
        }
        if observer.committed.get(&log_id.index).map(|e| e.log_id) != Some(*log_id) {
            return Err(format!("write acknowledged at {log_id}, but another entry was committed there"));
        }
    }

    Ok(logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let ids: Vec<String> = log.values().map(|e| e.log_id.to_string()).collect();
            format!("n{} log: {}", i + 1, ids.join(" "))
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/// What one seed's run produced.
struct Outcome {
    trace: Vec<String>,
    summary: String,
}

/// Runs the simulation of `seed`; `Err` says which property failed, with the cluster's state.
fn simulate(seed: u64) -> Result<Outcome, String> {
    let started = WallInstant::now();
    // Everything random follows from the seed; openraft's election timeouts too (see the doc).
    redoubt_raft::runtime::seed_thread_rng(seed);
    let mut plan = SmallRng::seed_from_u64(seed);
    let nodes: u64 = if plan.gen_bool(0.5) { 3 } else { 5 };
    let fault_period = Duration::from_millis(plan.gen_range(4_000..10_000));
    let base_latency = Duration::from_millis(plan.gen_range(2..20));

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .enable_random_order()
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(base_latency)
        // Our own limit is tighter; this only has to be out of the way.
        .simulation_duration(Duration::from_secs(3600))
        .build();

    let slots: Nodes = Rc::new((0..nodes).map(|_| RefCell::new(None)).collect());
    let members: BTreeMap<u64, NodeAddr> =
        (1..=nodes).map(|id| (id, NodeAddr { raft_addr: raft_addr(id), client_addr: String::new() })).collect();
    for id in 1..=nodes {
        let (members, slots) = (members.clone(), slots.clone());
        sim.host(host_name(id), move || run_node(id, members.clone(), slots.clone()));
    }
    let client = Rc::new(ClientState::default());
    sim.client("client", run_client(seed, nodes, client.clone()));

    let mut observer = Observer::new(nodes);
    observer
        .trace
        .push(format!("seed {seed}: {nodes} nodes, faults for {fault_period:?}, latency 1..{base_latency:?}"));
    let fault_end = WARMUP + fault_period;
    let mut next_phase = WARMUP;
    let mut phases = 0;
    let fail = |what: String, sim: &turmoil::Sim| {
        format!("seed {seed} at {} ms: {what}\n{}", sim.elapsed().as_millis(), describe(&slots))
    };

    let client_done = loop {
        let now = sim.elapsed();
        if now >= next_phase && now < fault_end {
            heal(&mut sim, nodes, base_latency);
            let leader = observer.leaders.last().map(|l| l.1);
            let phase = Phase::draw(&mut plan, nodes, leader);
            phase.apply(&mut sim, nodes);
            observer.trace.push(format!("{:>6} ms  {phase}", now.as_millis()));
            phases += 1;
            next_phase = now + Duration::from_millis(plan.gen_range(200..1_500));
        }
        if now >= fault_end && !client.healed.get() {
            heal(&mut sim, nodes, base_latency);
            client.healed.set(true);
            observer.trace.push(format!("{:>6} ms  healed", now.as_millis()));
        }

        let done = sim.step().map_err(|e| fail(format!("a host failed: {e}"), &sim))?;
        observer.sample(sim.elapsed(), &slots).map_err(|e| fail(e, &sim))?;

        if done {
            if let Some(last) = converged(&slots) {
                let acked = client.acked.borrow();
                if acked.iter().all(|(_, id)| id.index <= last.index) {
                    break sim.elapsed();
                }
            }
        }
        if sim.elapsed() > fault_end + CONVERGE_WITHIN {
            let what = if done { "no convergence" } else { "the client got no write through" };
            return Err(fail(format!("{what} {CONVERGE_WITHIN:?} after the network healed"), &sim));
        }
    };

    let acked = client.acked.borrow().clone();
    let logs = check_final(&slots, &observer, &acked).map_err(|e| fail(e, &sim))?;
    observer.trace.push(format!("{:>6} ms  converged", client_done.as_millis()));
    observer.trace.extend(acked.iter().map(|(p, id)| format!("acked {} at {id}", String::from_utf8_lossy(p))));
    observer.trace.extend(logs);

    let summary = format!(
        "seed {seed}: {nodes} nodes, fault phases {phases}, leaders {}, writes acknowledged {}/{}, entries committed \
         {}, converged at {:.1} s simulated, {:.1} s wall",
        observer.leaders.len(),
        acked.len(),
        client.sent.get(),
        observer.committed.len(),
        client_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // Dropping the simulation stops every host's tasks before the nodes' handles go.
    drop(sim);
    Ok(Outcome { trace: observer.trace, summary })
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}

/// The seeds to run: `SIM_SEED`, else 1..=`SIM_SEEDS`, else the default ones.
fn seeds() -> Vec<u64> {
    match (env_u64("SIM_SEED"), env_u64("SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (1..=n).collect(),
        (None, None) => (1..=DEFAULT_SEEDS).collect(),
    }
}

fn run_or_panic(seed: u64) -> Outcome {
    match simulate(seed) {
        Ok(outcome) => {
            eprintln!("{}", outcome.summary);
            outcome
        }
        Err(e) => panic!("{e}\nreplay: SIM_SEED={seed} cargo test -p redoubt-raft --test sim -- --nocapture"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn raft_stays_safe_under_network_faults() {
    for seed in seeds() {
        let outcome = run_or_panic(seed);
        if env_u64("SIM_SEED").is_some() {
            for line in &outcome.trace {
                eprintln!("  {line}");
            }
        }
    }
}

#[test]
fn a_seed_replays_identically() {
    let seed = env_u64("SIM_SEED").unwrap_or(REPLAY_SEED);
    let first = run_or_panic(seed).trace;
    let second = run_or_panic(seed).trace;
    if let Some(i) = (0..first.len().max(second.len())).find(|&i| first.get(i) != second.get(i)) {
        panic!(
            "seed {seed} did not replay: first difference at trace line {i}\n  first run:  {:?}\n  second run: {:?}",
            first.get(i),
            second.get(i)
        );
    }
}
