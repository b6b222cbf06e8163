//! A three-node cluster of real `redoubt` processes on 127.0.0.1: writes sent to any node
//! (followers forward them to the leader), replication to every member, failover after
//! `kill -9` of the leader with every acknowledged write kept, and a restarted node
//! catching up.

use std::time::{Duration, Instant};

use redoubt_tests::cluster::{get, raft_info, wait_value, Cluster};
use redoubt_tests::{free_port, Node, TempDir, Value};

#[test]
fn writes_on_any_node_replicate_and_survive_leader_failover() {
    let mut cl = Cluster::start("redoubt-t61");
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
    // On a follower too (forwarded to the leader).
    assert_eq!(cl.conn(follower).cmd(&["WAIT", "1", "100"]), Value::Int(2));
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
fn grow_from_one_node_to_three_and_shrink_back_under_load() {
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

    // Under load: a client keeps incrementing a counter on node 1 through every membership
    // change; each acknowledged INCR must be there at the end, on every member.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, addr) = (stop.clone(), n1.addr);
        std::thread::spawn(move || {
            let mut c = redoubt_tests::Conn::connect(addr);
            let (mut acked, mut tried) = (0i64, 0i64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tried += 1;
                match c.try_cmd(&["INCR", "load"]) {
                    Ok(Value::Int(n)) => {
                        acked += 1;
                        assert!(n >= acked && n <= tried, "INCR answered {n} after {acked} acks of {tried}");
                    }
                    other => panic!("INCR during a membership change: {other:?}"),
                }
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(200));

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

    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked > 0);
    assert_eq!(get(&mut c1, "load"), Some(acked.to_string()), "every acknowledged INCR, once");
    wait_value(&n2, "load", &acked.to_string(), Duration::from_secs(10));
}

#[test]
fn a_frozen_leader_is_replaced_and_follows_when_it_wakes() {
    let mut cl = Cluster::start("redoubt-t61");
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

#[test]
fn a_partitioned_leader_is_replaced_and_rejoins_after_healing() {
    // Every node reaches the others through a cuttable proxy.
    let mut cl = Cluster::start_with_links("redoubt-t61p");
    let leader = cl.leader(Duration::from_secs(20));
    let other = (leader + 1) % 3;
    let mut acked = 0;
    for _ in 0..10 {
        assert!(matches!(cl.conn(other).cmd(&["INCR", "n"]), Value::Int(_)));
        acked += 1;
    }

    // Cut the leader off from both others, both ways.
    cl.isolate(leader, true);
    let cut_at = Instant::now();
    let mut c = cl.conn(other);
    while acked < 30 {
        match c.try_cmd(&["INCR", "n"]) {
            Ok(Value::Int(_)) => acked += 1,
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {}
            Ok(v) => panic!("INCR during the partition: {v:?}"),
            Err(_) => c = cl.conn(other),
        }
        assert!(cut_at.elapsed() < Duration::from_secs(40), "the majority made no progress");
    }
    println!("partition: majority acknowledged writes again {} ms after the cut", cut_at.elapsed().as_millis());

    // Heal: the old leader hears the new term, follows and catches up.
    cl.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = cl.conn(leader);
        let _ = c.try_cmd(&["READONLY"]);
        if let Ok(Value::Bulk(b)) = c.try_cmd(&["GET", "n"]) {
            if b == acked.to_string().into_bytes() {
                break;
            }
        }
        assert!(cl.nodes[leader].as_mut().unwrap().exited().is_none(), "the old leader exited");
        assert!(Instant::now() < deadline, "the old leader did not catch up after healing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its link to the new leader may still be backing off from the partition: TRYAGAIN
    // (nothing ran) until it reconnects.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cl.conn(leader).cmd(&["INCR", "n"]) {
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

/// PUBLISH on any member reaches the subscribers of every member (Redis Cluster's
/// semantics: the message goes through the log), patterns included; the reply counts the
/// receivers of the node that ran it.
#[test]
fn publish_reaches_subscribers_on_every_node() {
    let cl = Cluster::start("redoubt-t61-pubsub");
    let leader = cl.leader(Duration::from_secs(20));
    let mut subs: Vec<redoubt_tests::Conn> = (0..3)
        .map(|i| {
            let mut c = cl.conn(i);
            c.cmd(&["SUBSCRIBE", "dlr"]);
            c.cmd(&["PSUBSCRIBE", "dlr*"]);
            c
        })
        .collect();
    for from in [leader, (leader + 1) % 3] {
        let text = format!("from node {}", from + 1);
        let mut p = cl.conn(from);
        assert_eq!(p.cmd(&["PUBLISH", "dlr", &text]), Value::Int(2), "one channel and one pattern subscriber there");
        for (i, s) in subs.iter_mut().enumerate() {
            let mut got = Vec::new();
            for _ in 0..2 {
                match s.read_frame_within(Duration::from_secs(10)) {
                    Some(Value::Array(parts) | Value::Push(parts)) => {
                        got.push(parts.iter().map(|v| v.render()).collect::<Vec<_>>().join(" "))
                    }
                    other => panic!("node {}: {other:?}", i + 1),
                }
            }
            got.sort();
            assert_eq!(
                got,
                [format!("\"message\" \"dlr\" \"{text}\""), format!("\"pmessage\" \"dlr*\" \"dlr\" \"{text}\"")],
                "node {}",
                i + 1
            );
        }
    }
}

/// WAIT works on a follower too: its writes went to the leader, which counts the replicas
/// holding them (a forwarded WAIT waits at most 1.5 s there).
#[test]
fn wait_on_a_follower_counts_the_replicas() {
    let cl = Cluster::start("redoubt-t61-wait");
    let leader = cl.leader(Duration::from_secs(20));
    let mut f = cl.conn((leader + 1) % 3);
    assert_eq!(f.cmd(&["SET", "k", "v"]), Value::Simple(b"OK".to_vec()));
    assert_eq!(f.cmd(&["WAIT", "2", "5000"]), Value::Int(2));
    let t = Instant::now();
    assert_eq!(f.cmd(&["WAIT", "3", "200"]), Value::Int(2), "only two replicas exist");
    assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());
    assert_eq!(f.cmd(&["WAIT", "1", "x"]), Value::Error("ERR value is not an integer or out of range".into()));
    let mut l = cl.conn(leader);
    assert_eq!(l.cmd(&["WAIT", "2", "5000"]), Value::Int(2));
}

/// A leader cut off from its majority cannot commit: the writes it keeps running wait for
/// their commit, and once 100,000 operations wait, new writes wait before running, so the
/// backlog (and the memory behind it) stays bounded however many clients pile on.
#[test]
fn an_isolated_leader_bounds_its_uncommitted_backlog() {
    use std::io::Write;
    let cl = Cluster::start_with_links("redoubt-t61-backlog");
    let leader = cl.leader(Duration::from_secs(20));
    cl.isolate(leader, true);
    let addr = cl.nodes[leader].as_ref().unwrap().addr;
    // 300 clients, each sending 2,000 pipelined SETs at once: 600,000 writes.
    let mut socks = Vec::new();
    for c in 0..300 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut buf = Vec::new();
        for i in 0..2000 {
            let (k, v) = (format!("c{c}-{i}"), "v");
            write!(buf, "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len()).unwrap();
        }
        s.write_all(&buf).unwrap();
        socks.push(s);
    }
    // The operator can still look at it: replies that show no data do not wait for a commit.
    let mut info = cl.conn(leader);
    assert_eq!(info.cmd(&["PING"]), Value::Simple(b"PONG".to_vec()));
    let (mut peak, t) = (0u64, Instant::now());
    while t.elapsed() < Duration::from_secs(3) {
        let n: u64 = raft_info(&mut info)["uncommitted_ops"].parse().unwrap();
        peak = peak.max(n);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(peak > 50_000, "the clients did pile up writes: {peak}");
    assert!(peak <= 100_000 + 5_000, "the backlog stayed bounded: {peak}");
    drop(socks);
    cl.heal();
    let new_leader = cl.leader(Duration::from_secs(30));
    let mut c = cl.conn(new_leader);
    assert_eq!(c.cmd(&["SET", "after", "heal"]), Value::Simple(b"OK".to_vec()));
}

/// MULTI/EXEC with writes on a follower (what redis-py's default pipeline sends) runs on
/// the leader as one atomic, exactly-once unit; WATCH with writes there is refused.
#[test]
fn a_transaction_on_a_follower_runs_on_the_leader() {
    let cl = Cluster::start("redoubt-t61-multi");
    let leader = cl.leader(Duration::from_secs(20));
    let mut f = cl.conn((leader + 1) % 3);
    let replies = f
        .pipeline(&[
            vec!["MULTI"],
            vec!["SET", "a", "1"],
            vec!["INCR", "n"],
            vec!["RPUSH", "l", "x", "y"],
            vec!["GET", "a"],
            vec!["INCR", "a"],
            vec!["EXEC"],
        ])
        .unwrap();
    assert_eq!(replies[6].render(), r#"[+OK, :1, :2, "1", :2]"#, "{replies:?}");
    let mut l = cl.conn(leader);
    assert_eq!(get(&mut l, "a").as_deref(), Some("2"));
    cl.wait_value((leader + 2) % 3, "a", "2", Duration::from_secs(10));
    // A queueing error aborts it, as anywhere.
    let replies = f.pipeline(&[vec!["MULTI"], vec!["SET", "a"], vec!["SET", "a", "3"], vec!["EXEC"]]).unwrap();
    assert!(matches!(&replies[3], Value::Error(e) if e.starts_with("EXECABORT")), "{replies:?}");
    // A run-time error inside does not stop the rest.
    let replies = f.pipeline(&[vec!["MULTI"], vec!["LPUSH", "a", "z"], vec!["SET", "b", "1"], vec!["EXEC"]]).unwrap();
    assert!(replies[3].render().contains("WRONGTYPE") && replies[3].render().ends_with("+OK]"), "{replies:?}");
    let replies = f.pipeline(&[vec!["WATCH", "a"], vec!["MULTI"], vec!["SET", "a", "4"], vec!["EXEC"]]).unwrap();
    assert!(matches!(&replies[3], Value::Error(e) if e.contains("WATCH")), "{replies:?}");
    assert_eq!(get(&mut l, "a").as_deref(), Some("2"));
}
