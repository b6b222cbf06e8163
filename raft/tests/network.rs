//! The node-to-node transport under real openraft traffic: a three-node cluster on loopback, with
//! the sled log and file-snapshot stores, talking only through `network::serve` and `Network`.
//! Covers replication, a learner caught up by a chunked snapshot, forwarding with `call_app`,
//! and a leader going away.

#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use parking_lot::Mutex;
use redoubt_raft::log_store::{FsyncPolicy, LogStore};
use redoubt_raft::network::{serve, AppHandler, Network};
use redoubt_raft::state_machine::StateMachineStore;
use redoubt_raft::{NodeAddr, Payload, Raft, StateMachine};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone, Default, Serialize, Deserialize)]
struct AppState {
    applied: Vec<(u64, Vec<u8>)>,
    raft_state: Vec<u8>,
}

/// Remembers every applied payload; counts restores so the test can tell a snapshot arrived.
#[derive(Default)]
struct App {
    state: Mutex<AppState>,
    restores: Mutex<u32>,
}

impl StateMachine for App {
    fn apply(&self, entries: &[(u64, &[u8])], raft_state: &[u8]) {
        let mut st = self.state.lock();
        st.applied.extend(entries.iter().map(|(i, p)| (*i, p.to_vec())));
        st.raft_state = raft_state.to_vec();
    }

    async fn snapshot(&self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let st = self.state.lock().clone();
        Ok((bincode::serialize(&st).map_err(io::Error::other)?, st.raft_state))
    }

    fn restore(&self, data: &mut dyn Read) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)?;
        let st: AppState = bincode::deserialize(&bytes).map_err(io::Error::other)?;
        let raft_state = st.raft_state.clone();
        *self.state.lock() = st;
        *self.restores.lock() += 1;
        Ok(raft_state)
    }
}

struct Node {
    raft: Raft,
    app: Arc<App>,
    net: Network,
    addr: NodeAddr,
    server: JoinHandle<()>,
    _dir: TempDir,
}

impl Node {
    fn payloads(&self) -> Vec<Vec<u8>> {
        self.app.state.lock().applied.iter().map(|(_, p)| p.clone()).collect()
    }
}

/// The App handler of every node: append the body to the log if leader, answer the log index
/// (8 bytes) or an empty reply if not leader.
fn forwarder(raft: Raft) -> Arc<dyn AppHandler> {
    Arc::new(move |body: Vec<u8>| {
        let raft = raft.clone();
        async move {
            match raft.client_write(Payload(body)).await {
                Ok(resp) => resp.log_id.index.to_be_bytes().to_vec(),
                Err(_) => Vec::new(),
            }
        }
    })
}

async fn start_node(id: u64) -> Node {
    let dir = TempDir::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raft_addr = listener.local_addr().unwrap().to_string();
    let config = Config {
        cluster_name: "network-test".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        // Snapshot often and keep no log behind it, so a late learner can only be caught up by a
        // snapshot; tiny chunks so that snapshot travels as many InstallSnapshot requests.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        snapshot_max_chunk_size: 512,
        ..Config::default()
    }
    .validate()
    .unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let log = LogStore::open(&db, FsyncPolicy::Always).unwrap();
    let app = Arc::new(App::default());
    let sm = StateMachineStore::open(dir.path().join("snapshots"), app.clone()).unwrap();
    let net = Network::new(id);
    let raft = Raft::new(id, Arc::new(config), net.clone(), log, sm).await.unwrap();
    let server = tokio::spawn(serve(listener, raft.clone(), forwarder(raft.clone())));
    Node { raft, app, net, addr: NodeAddr { raft_addr, client_addr: String::new() }, server, _dir: dir }
}

async fn wait_applied(node: &Node, index: u64) {
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "applied")
        .await
        .unwrap_or_else(|e| panic!("node did not apply {index}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_cluster_replicates_snapshots_forwards_and_fails_over() {
    let nodes = vec![start_node(1).await, start_node(2).await, start_node(3).await];
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    // Nodes 1 and 2 form the cluster; 3 joins later.
    let members: BTreeMap<u64, NodeAddr> = [(1, n1.addr.clone()), (2, n2.addr.clone())].into_iter().collect();
    n1.raft.initialize(members).await.unwrap();
    n1.raft.wait(Some(Duration::from_secs(10))).current_leader(1, "leader").await.unwrap();

    let mut expected = Vec::new();
    let mut last = 0;
    for i in 0..60u32 {
        let body = format!("entry-{i:03}-").repeat(8).into_bytes();
        last = n1.raft.client_write(Payload(body.clone())).await.unwrap().log_id.index;
        expected.push(body);
    }
    wait_applied(n2, last).await;
    assert_eq!(n2.payloads(), expected);

    // Node 3 as a learner: the leader's log is purged behind its snapshots, so node 3 is caught
    // up by a snapshot streamed in chunks.
    n1.raft.add_learner(3, n3.addr.clone(), true).await.unwrap();
    wait_applied(n3, last).await;
    assert!(*n3.app.restores.lock() >= 1, "node 3 was not caught up by a snapshot");
    assert_eq!(n3.payloads(), expected);
    n1.raft.change_membership(BTreeSet::from([1, 2, 3]), false).await.unwrap();

    // A follower forwards a write to the leader over the cluster port.
    let reply = n2.net.call_app(1, &n1.addr.raft_addr, b"forwarded".to_vec(), Duration::from_secs(5)).await.unwrap();
    let index = u64::from_be_bytes(reply.try_into().expect("an 8-byte log index"));
    expected.push(b"forwarded".to_vec());
    for n in &nodes {
        wait_applied(n, index).await;
        assert_eq!(n.payloads().last(), expected.last());
    }

    // The leader goes away: its port closes, the others elect a leader and keep replicating.
    n1.server.abort();
    n1.raft.shutdown().await.unwrap();
    let leader = n2
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| matches!(m.current_leader, Some(2 | 3)), "new leader")
        .await
        .unwrap()
        .current_leader
        .unwrap();
    let (new_leader, other) = if leader == 2 { (n2, n3) } else { (n3, n2) };
    let index = new_leader.raft.client_write(Payload(b"after failover".to_vec())).await.unwrap().log_id.index;
    wait_applied(other, index).await;
    assert_eq!(other.payloads().last().map(|p| p.as_slice()), Some(&b"after failover"[..]));

    for n in &nodes[1..] {
        n.raft.shutdown().await.unwrap();
    }
}
