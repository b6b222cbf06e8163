//! A three-node cluster of real `redoubt` processes on 127.0.0.1: writes sent to any node
//! (followers forward them to the leader), replication to every member, failover after
//! `kill -9` of the leader with every acknowledged write kept, and a restarted node
//! catching up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redoubt_tests::{free_port, Conn, Node, TempDir, Value};

fn raft_info(c: &mut Conn) -> HashMap<String, String> {
    let text = match c.cmd(&["RAFT", "INFO"]) {
        Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("RAFT INFO: {other:?}"),
    };
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

fn get(c: &mut Conn, key: &str) -> Option<String> {
    match c.cmd(&["GET", key]) {
        Value::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Nil => None,
        other => panic!("GET {key}: {other:?}"),
    }
}

/// Waits until `key` reads `want` in `node`'s own state (READONLY: a follower answers from
/// what it applied, a moment behind the leader).
///
/// A node that just lost its leadership closes connections whose replies showed writes it
/// can no longer commit: reconnect then.
fn wait_value(node: &Node, key: &str, want: &str, within: Duration) {
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

struct Cluster {
    dir: TempDir,
    ports: Vec<u16>,
    spec: String,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = TempDir::new("redoubt-t61");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let spec =
            raft.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
        let mut c = Cluster { dir, ports, spec, nodes: Vec::new() };
        for i in 0..3 {
            let n = c.spawn(i);
            c.nodes.push(Some(n));
        }
        c
    }

    fn spawn(&self, i: usize) -> Node {
        let d = self.dir.path().join(format!("n{}", i + 1));
        std::fs::create_dir_all(&d).unwrap();
        let id = (i + 1).to_string();
        Node::start_on(self.ports[i], &d, &["--node-id", &id, "--cluster", &self.spec])
    }

    /// The index of the node every live member agrees leads, waiting up to `within`.
    fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = None;
            let mut agree = true;
            for n in self.nodes.iter().flatten() {
                let id = raft_info(&mut n.conn()).get("leader_id").cloned().unwrap_or_default();
                match (&seen, id.is_empty()) {
                    (_, true) => agree = false,
                    (None, false) => seen = Some(id),
                    (Some(s), false) if *s != id => agree = false,
                    _ => {}
                }
            }
            if let (true, Some(id)) = (agree, seen) {
                let i = id.parse::<usize>().unwrap() - 1;
                if self.nodes[i].is_some() {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn conn(&self, i: usize) -> Conn {
        self.nodes[i].as_ref().expect("node running").conn()
    }

    fn wait_value(&self, i: usize, key: &str, want: &str, within: Duration) {
        wait_value(self.nodes[i].as_ref().expect("node running"), key, want, within)
    }
}

#[test]
fn writes_on_any_node_replicate_and_survive_leader_failover() {
    let mut cl = Cluster::start();
    let leader = cl.leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;

    // Writes through every node: followers forward them, each is acknowledged once.
    let mut acked = 0;
    for round in 0..30 {
        for i in 0..3 {
            let mut c = cl.conn(i);
            assert_eq!(c.cmd(&["SET", &format!("k{round}-{i}"), "v"]), Value::Simple(b"OK".to_vec()));
            match c.cmd(&["INCR", "counter"]) {
                Value::Int(_) => acked += 1,
                other => panic!("INCR on node {}: {other:?}", i + 1),
            }
        }
    }
    for i in 0..3 {
        cl.wait_value(i, "counter", &acked.to_string(), Duration::from_secs(10));
    }
    // Without READONLY a follower's reads go to the leader: a write acknowledged anywhere
    // is visible at once from every node.
    for i in 0..3 {
        let mut c = cl.conn(i);
        assert_eq!(c.cmd(&["SET", "fresh", &i.to_string()]), Value::Simple(b"OK".to_vec()));
        for j in 0..3 {
            assert_eq!(
                get(&mut cl.conn(j), "fresh"),
                Some(i.to_string()),
                "read on node {} after a write on {}",
                j + 1,
                i + 1
            );
        }
    }
    // Replies of forwarded commands keep their types and errors.
    let mut f = cl.conn(follower);
    assert_eq!(f.cmd(&["LPUSH", "list", "a", "b"]), Value::Int(2));
    assert!(matches!(f.cmd(&["INCR", "list"]), Value::Error(e) if e.starts_with("WRONGTYPE")));
    let info = raft_info(&mut f);
    assert_eq!(info["role"], "follower", "{info:?}");
    assert_eq!(info["leader_addr"], format!("127.0.0.1:{}", cl.ports[leader]), "{info:?}");
    assert_eq!(info["members"], "1,2,3");
    let repl = match f.cmd(&["INFO", "replication"]) {
        Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("{other:?}"),
    };
    assert!(repl.contains("role:slave") && repl.contains("master_link_status:up"), "{repl}");
    let lrepl = match cl.conn(leader).cmd(&["INFO", "replication"]) {
        Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("{other:?}"),
    };
    assert!(lrepl.contains("role:master") && lrepl.contains("connected_slaves:2"), "{lrepl}");
    assert!(lrepl.contains("slave0:ip=127.0.0.1,") && lrepl.contains("state=online"), "{lrepl}");

    // WAIT on the leader counts the followers that hold the connection's writes.
    let mut l = cl.conn(leader);
    assert_eq!(l.cmd(&["SET", "waited", "1"]), Value::Simple(b"OK".to_vec()));
    assert_eq!(l.cmd(&["WAIT", "2", "5000"]), Value::Int(2));
    assert!(
        matches!(cl.conn(follower).cmd(&["WAIT", "1", "100"]), Value::Error(e) if e.starts_with("ERR WAIT cannot be used with replica"))
    );
    assert!(matches!(l.cmd(&["WAIT", "1", "-1"]), Value::Error(e) if e == "ERR timeout is negative"));

    // A snapshot on the leader while writes arrive through a follower: writes pause while
    // the leader's operations in flight commit, then go on.
    let mut l = cl.conn(leader);
    assert_eq!(l.cmd(&["RAFT", "SNAPSHOT"]), Value::Simple(b"Snapshot started".to_vec()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut f = cl.conn(follower);
    while raft_info(&mut l)["snapshot_index"] == "0" {
        assert!(matches!(f.cmd(&["INCR", "counter"]), Value::Int(_)));
        acked += 1;
        assert!(Instant::now() < deadline, "no snapshot on the leader within 20 s");
    }
    for i in 0..3 {
        cl.wait_value(i, "counter", &acked.to_string(), Duration::from_secs(10));
    }

    // kill -9 the leader under writes; time until a surviving node acknowledges a write.
    cl.nodes[leader].take().unwrap().kill9();
    let killed = Instant::now();
    let survivor = follower;
    let mut c = cl.conn(survivor);
    let failover = loop {
        match c.try_cmd(&["INCR", "counter"]) {
            Ok(Value::Int(_)) => {
                acked += 1;
                break killed.elapsed();
            }
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {}
            Ok(other) => panic!("INCR during failover: {other:?}"),
            Err(_) => c = cl.conn(survivor),
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no write accepted 30 s after the leader died");
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("failover: first write acknowledged {} ms after kill -9 of the leader", failover.as_millis());
    let new_leader = cl.leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    for i in 0..3 {
        if cl.nodes[i].is_some() {
            cl.wait_value(i, "counter", &acked.to_string(), Duration::from_secs(10));
        }
    }

    // The old leader comes back on its data and catches up.
    cl.nodes[leader] = Some(cl.spawn(leader));
    assert_eq!(cl.conn(new_leader).cmd(&["SET", "after-restart", "yes"]), Value::Simple(b"OK".to_vec()));
    cl.wait_value(leader, "after-restart", "yes", Duration::from_secs(20));
    cl.wait_value(leader, "counter", &acked.to_string(), Duration::from_secs(10));
    assert_eq!(get(&mut cl.conn(leader), "k29-2").as_deref(), Some("v"));
}

#[test]
fn grow_from_one_node_to_three_and_shrink_back() {
    let dir = TempDir::new("redoubt-t61g");
    let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let raft: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let start = |i: usize, extra: &[&str]| {
        let d = dir.path().join(format!("n{}", i + 1));
        std::fs::create_dir_all(&d).unwrap();
        let id = (i + 1).to_string();
        let mut args = vec!["--node-id", &id, "--raft-addr", &raft[i]];
        args.extend_from_slice(extra);
        Node::start_on(client[i], &d, &args)
    };
    let n1 = start(0, &[]);
    let mut c1 = n1.conn();
    for i in 0..50 {
        assert_eq!(c1.cmd(&["SET", &format!("before-{i}"), "x"]), Value::Simple(b"OK".to_vec()));
    }
    assert_eq!(raft_info(&mut c1)["members"], "1");

    let n2 = start(1, &["--join", "yes"]);
    let n3 = start(2, &["--join", "yes"]);
    for i in 1..3 {
        let r = c1.cmd(&["RAFT", "ADD-LEARNER", &(i + 1).to_string(), &raft[i], &format!("127.0.0.1:{}", client[i])]);
        assert_eq!(r, Value::Simple(b"OK".to_vec()), "ADD-LEARNER {}", i + 1);
    }
    assert_eq!(raft_info(&mut c1)["learners"], "2,3");
    assert_eq!(c1.cmd(&["RAFT", "PROMOTE", "2", "3"]), Value::Simple(b"OK".to_vec()));
    let info = raft_info(&mut c1);
    assert_eq!((info["members"].as_str(), info["learners"].as_str()), ("1,2,3", ""), "{info:?}");

    // The new members hold the old data (replicated before PROMOTE returns, applied a
    // moment later) and take writes (forwarded to node 1).
    wait_value(&n3, "before-49", "x", Duration::from_secs(10));
    assert_eq!(n2.conn().cmd(&["SET", "grown", "yes"]), Value::Simple(b"OK".to_vec()));
    assert_eq!(get(&mut c1, "grown").as_deref(), Some("yes"));

    // Shrink back: node 3 leaves; the two that remain still commit.
    assert_eq!(c1.cmd(&["RAFT", "REMOVE", "3"]), Value::Simple(b"OK".to_vec()));
    assert_eq!(raft_info(&mut c1)["members"], "1,2");
    drop(n3);
    assert_eq!(c1.cmd(&["SET", "shrunk", "yes"]), Value::Simple(b"OK".to_vec()));
    assert_eq!(get(&mut n2.conn(), "shrunk").as_deref(), Some("yes"));
    assert!(matches!(c1.cmd(&["RAFT", "TRANSFER-LEADER", "2"]), Value::Error(e) if e.contains("openraft 0.9")));
}

#[test]
fn a_frozen_leader_is_replaced_and_follows_when_it_wakes() {
    let mut cl = Cluster::start();
    let leader = cl.leader(Duration::from_secs(20));
    let other = (leader + 1) % 3;
    assert_eq!(cl.conn(other).cmd(&["SET", "before", "1"]), Value::Simple(b"OK".to_vec()));
    cl.wait_value(leader, "before", "1", Duration::from_secs(10));

    // SIGSTOP: the leader neither crashes nor answers; the others elect a new one.
    cl.nodes[leader].as_ref().unwrap().signal("STOP");
    let frozen = Instant::now();
    let mut c = cl.conn(other);
    let mut acked = 0;
    while acked < 20 {
        match c.try_cmd(&["INCR", "during"]) {
            Ok(Value::Int(_)) => acked += 1,
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {}
            Ok(other) => panic!("INCR while the leader is frozen: {other:?}"),
            Err(_) => c = cl.conn(other),
        }
        assert!(frozen.elapsed() < Duration::from_secs(30), "no progress with the leader frozen");
    }

    // SIGCONT: the old leader sees the higher term, steps down (nothing was in flight on
    // it) and catches up.
    cl.nodes[leader].as_ref().unwrap().signal("CONT");
    cl.wait_value(leader, "during", "20", Duration::from_secs(20));
    assert!(cl.nodes[leader].as_mut().unwrap().exited().is_none(), "the old leader exited");
    let info = raft_info(&mut cl.conn(leader));
    assert_ne!(info["role"], "leader", "{info:?}");
    assert_eq!(cl.conn(leader).cmd(&["INCR", "during"]), Value::Int(21));
}

/// A TCP proxy between two nodes that a test can cut (existing connections are shut down,
/// new ones refused) and heal.
struct Link {
    addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Link {
    fn new(to: String) -> Link {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, l) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the peer sees a reset
                }
                let Ok(outbound) = std::net::TcpStream::connect(&to) else { continue };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let mut live = l.lock().unwrap();
                live.push(inbound.try_clone().unwrap());
                live.push(outbound.try_clone().unwrap());
                for (mut r, mut w) in
                    [(inbound.try_clone().unwrap(), outbound.try_clone().unwrap()), (outbound, inbound)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut r, &mut w);
                        let _ = w.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Link { addr, cut, live }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for s in self.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[test]
fn a_partitioned_leader_is_replaced_and_rejoins_after_healing() {
    let dir = TempDir::new("redoubt-t61p");
    let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let raft: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    // links[i][j]: node i's way to node j (node i's member list names it for j).
    let links: Vec<Vec<Option<Link>>> =
        (0..3).map(|i| (0..3).map(|j| (i != j).then(|| Link::new(raft[j].clone()))).collect()).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let spec = (0..3)
                .map(|j| {
                    format!(
                        "{}@{}",
                        j + 1,
                        if i == j { raft[j].clone() } else { links[i][j].as_ref().unwrap().addr.clone() }
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let d = dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&d).unwrap();
            Node::start_on(client[i], &d, &["--node-id", &(i + 1).to_string(), "--cluster", &spec])
        })
        .collect();
    let leader_of = |c: &mut Conn| raft_info(c).get("leader_id").and_then(|s| s.parse::<usize>().ok());
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(l) = leader_of(&mut nodes[0].conn()) {
            break l - 1;
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(50));
    };
    let other = (leader + 1) % 3;
    let mut acked = 0;
    for _ in 0..10 {
        assert!(matches!(nodes[other].conn().cmd(&["INCR", "n"]), Value::Int(_)));
        acked += 1;
    }

    // Cut the leader off from both others, both ways.
    for j in 0..3 {
        if j != leader {
            links[leader][j].as_ref().unwrap().set_cut(true);
            links[j][leader].as_ref().unwrap().set_cut(true);
        }
    }
    let cut_at = Instant::now();
    let mut c = nodes[other].conn();
    while acked < 30 {
        match c.try_cmd(&["INCR", "n"]) {
            Ok(Value::Int(_)) => acked += 1,
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {}
            Ok(v) => panic!("INCR during the partition: {v:?}"),
            Err(_) => c = nodes[other].conn(),
        }
        assert!(cut_at.elapsed() < Duration::from_secs(40), "the majority made no progress");
    }
    println!("partition: majority acknowledged writes again {} ms after the cut", cut_at.elapsed().as_millis());

    // Heal: the old leader hears the new term, follows and catches up.
    for row in &links {
        for l in row.iter().flatten() {
            l.set_cut(false);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = nodes[leader].conn();
        let _ = c.try_cmd(&["READONLY"]);
        if let Ok(Value::Bulk(b)) = c.try_cmd(&["GET", "n"]) {
            if b == acked.to_string().into_bytes() {
                break;
            }
        }
        assert!(nodes[leader].exited().is_none(), "the old leader exited");
        assert!(Instant::now() < deadline, "the old leader did not catch up after healing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its link to the new leader may still be backing off from the partition: TRYAGAIN
    // (nothing ran) until it reconnects.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match nodes[leader].conn().cmd(&["INCR", "n"]) {
            Value::Int(v) => {
                assert_eq!(v, acked + 1);
                break;
            }
            Value::Error(e) if e.starts_with("TRYAGAIN") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("INCR on the healed node: {other:?}"),
        }
    }
}
