//! A three-node cluster of real `redoubt` processes on 127.0.0.1, for the tests that break
//! one (t61_cluster, t62_linearizability): start it, find the leader, `kill -9` a node and
//! start it again on its data, freeze one with SIGSTOP, and cut the network between nodes.
//!
//! Partitions go through [`Link`]s: when a cluster is started with
//! [`Cluster::start_with_links`], node i reaches node j through its own TCP proxy
//! `links[i][j]` (node i's member list names the proxy as j's address), so the test can cut
//! any direction of any pair without touching the kernel's firewall.

use std::collections::HashMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{free_port, Conn, Node, TempDir, Value};

/// `RAFT INFO` as a map (`role`, `leader_id`, `members`, ...); panics when there is no reply.
pub fn raft_info(c: &mut Conn) -> HashMap<String, String> {
    try_raft_info(c).unwrap_or_else(|| panic!("RAFT INFO on {}: no reply", c.addr))
}

/// `RAFT INFO` as a map, or `None` when the node does not answer.
pub fn try_raft_info(c: &mut Conn) -> Option<HashMap<String, String>> {
    let text = match c.try_cmd(&["RAFT", "INFO"]).ok()? {
        Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("RAFT INFO: {other:?}"),
    };
    Some(text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect())
}

/// `GET key` as a string; panics on anything but a bulk string or nil.
pub fn get(c: &mut Conn, key: &str) -> Option<String> {
    match c.cmd(&["GET", key]) {
        Value::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Nil => None,
        other => panic!("GET {key}: {other:?}"),
    }
}

/// A TCP proxy between two nodes that a test can cut (existing connections are shut down,
/// new ones refused) and heal.
pub struct Link {
    pub addr: String,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    /// A proxy on a fresh port of 127.0.0.1 to `to`. Its threads live as long as the test
    /// process (they are idle once nothing connects).
    pub fn new(to: String) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the peer sees a reset
                }
                let Ok(outbound) = TcpStream::connect(&to) else { continue };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let mut live = l.lock().unwrap();
                live.push(inbound.try_clone().unwrap());
                live.push(outbound.try_clone().unwrap());
                for (mut r, mut w) in
                    [(inbound.try_clone().unwrap(), outbound.try_clone().unwrap()), (outbound, inbound)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut r, &mut w);
                        let _ = w.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Link { addr, cut, live }
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for s in self.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Three `redoubt --cluster` processes, each on its own `--dir` under one temp dir.
pub struct Cluster {
    pub dir: TempDir,
    /// Client ports, by node index (node id = index + 1).
    pub ports: Vec<u16>,
    /// Where each node listens for its peers.
    pub raft: Vec<String>,
    /// `links[i][j]`: node i's way to node j, when started with proxies.
    pub links: Option<Vec<Vec<Option<Link>>>>,
    /// `None` while a node is down.
    pub nodes: Vec<Option<Node>>,
}

impl Cluster {
    /// Three nodes that reach each other directly.
    pub fn start(prefix: &str) -> Cluster {
        Cluster::launch(prefix, false)
    }

    /// Three nodes that reach each other only through cuttable [`Link`]s.
    pub fn start_with_links(prefix: &str) -> Cluster {
        Cluster::launch(prefix, true)
    }

    fn launch(prefix: &str, proxied: bool) -> Cluster {
        let dir = TempDir::new(prefix);
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let raft: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let links = proxied
            .then(|| (0..3).map(|i| (0..3).map(|j| (i != j).then(|| Link::new(raft[j].clone()))).collect()).collect());
        let mut c = Cluster { dir, ports, raft, links, nodes: Vec::new() };
        for i in 0..3 {
            let n = c.spawn(i);
            c.nodes.push(Some(n));
        }
        c
    }

    /// The member list node `i` is started with: its own raft address, and the others'
    /// (or its proxies to them).
    fn spec_for(&self, i: usize) -> String {
        (0..3)
            .map(|j| {
                let addr = match &self.links {
                    Some(links) if i != j => links[i][j].as_ref().unwrap().addr.clone(),
                    _ => self.raft[j].clone(),
                };
                format!("{}@{addr}", j + 1)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` on its port and data (the first time, or again after a kill).
    pub fn spawn(&self, i: usize) -> Node {
        let d = self.dir.path().join(format!("n{}", i + 1));
        std::fs::create_dir_all(&d).unwrap();
        let id = (i + 1).to_string();
        Node::start_on(self.ports[i], &d, &["--node-id", &id, "--cluster", &self.spec_for(i)])
    }

    /// The index of the node every live member agrees leads, waiting up to `within`. A
    /// member that does not answer (frozen, still starting) counts as disagreeing.
    pub fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.agreed_leader() {
                return i;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn agreed_leader(&self) -> Option<usize> {
        let mut seen: Option<String> = None;
        for n in self.nodes.iter().flatten() {
            let mut c = Conn::try_connect(n.addr, Duration::from_secs(2)).ok()?;
            let id = try_raft_info(&mut c)?.get("leader_id").cloned().unwrap_or_default();
            if id.is_empty() || seen.as_ref().is_some_and(|s| *s != id) {
                return None;
            }
            seen = Some(id);
        }
        let i = seen?.parse::<usize>().ok()? - 1;
        self.nodes[i].is_some().then_some(i)
    }

    pub fn conn(&self, i: usize) -> Conn {
        self.nodes[i].as_ref().expect("node running").conn()
    }

    /// Waits until `key` reads `want` in node `i`'s own state (see [`wait_value`]).
    pub fn wait_value(&self, i: usize, key: &str, want: &str, within: Duration) {
        wait_value(self.nodes[i].as_ref().expect("node running"), key, want, within)
    }

    /// Cuts (or heals) every link between node `i` and the others, both ways.
    pub fn isolate(&self, i: usize, cut: bool) {
        let links = self.links.as_ref().expect("a cluster started with links");
        for j in (0..3).filter(|&j| j != i) {
            links[i][j].as_ref().unwrap().set_cut(cut);
            links[j][i].as_ref().unwrap().set_cut(cut);
        }
    }

    /// Heals every link.
    pub fn heal(&self) {
        for l in self.links.iter().flatten().flatten().flatten() {
            l.set_cut(false);
        }
    }
}

/// Waits until `key` reads `want` in `node`'s own state (READONLY: a follower answers from
/// what it applied, a moment behind the leader).
///
/// A node that just lost its leadership closes connections whose replies showed writes it
/// can no longer commit: reconnect then.
pub fn wait_value(node: &Node, key: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut conn: Option<Conn> = None;
    loop {
        let c = conn.get_or_insert_with(|| node.conn());
        let got = match c.try_cmd(&["READONLY"]).and_then(|_| c.try_cmd(&["GET", key])) {
            Ok(Value::Bulk(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(_) => None,
            Err(_) => {
                conn = None;
                None
            }
        };
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{key}={got:?} after {within:?}, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
