//! Durability of a single node (`--durability raft`, the default): acknowledged writes
//! survive `kill -9`, restart loads the latest snapshot and replays the log behind it, and
//! the RAFT introspection commands answer.
//!
//! Every test runs the real `redoubt` binary as a child process on a free port with its own
//! `--dir`, and kills it with SIGKILL: no shutdown code runs, so only what reached the disk
//! before a reply counts.

use std::time::{Duration, Instant};

use redoubt_tests::{Conn, Node, TempDir, Value};

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn bulk(v: &Value) -> Vec<u8> {
    match v {
        Value::Bulk(b) => b.to_vec(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

/// `RAFT INFO` as field -> value.
fn raft_info(c: &mut Conn) -> std::collections::HashMap<String, String> {
    let v = c.cmd(&["RAFT", "INFO"]);
    let text = match v {
        Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("RAFT INFO: {other:?}"),
    };
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

/// A mixed write load over several types and databases; returns what must be there.
fn write_load(c: &mut Conn, n: usize) {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for i in 0..n {
        cmds.push(vec!["SET".into(), format!("key:{i}"), format!("value:{i}")]);
        cmds.push(vec!["INCR".into(), "counter".into()]);
        cmds.push(vec!["RPUSH".into(), "list".into(), i.to_string()]);
        cmds.push(vec!["HSET".into(), "hash".into(), format!("f{i}"), i.to_string()]);
        cmds.push(vec!["ZADD".into(), "zset".into(), i.to_string(), format!("m{i}")]);
    }
    for chunk in cmds.chunks(500) {
        let replies = c.pipeline(chunk).expect("pipeline");
        assert!(replies.iter().all(|r| !r.is_error()), "write errors: {replies:?}");
    }
    c.cmd(&["SET", "ttl-key", "v", "EX", "1000"]);
    c.cmd(&["SELECT", "3"]);
    c.cmd(&["SADD", "set-in-db3", "a", "b", "c"]);
    c.cmd(&["SELECT", "0"]);
    c.cmd(&["SET", "deleted", "x"]);
    c.cmd(&["DEL", "deleted"]);
}

fn check_load(c: &mut Conn, n: usize) {
    assert_eq!(int(&c.cmd(&["GET", "counter"]).as_int_from_bulk()), n as i64);
    assert_eq!(bulk(&c.cmd(&["GET", &format!("key:{}", n - 1)])), format!("value:{}", n - 1).into_bytes());
    assert_eq!(int(&c.cmd(&["LLEN", "list"])), n as i64);
    assert_eq!(int(&c.cmd(&["HLEN", "hash"])), n as i64);
    assert_eq!(int(&c.cmd(&["ZCARD", "zset"])), n as i64);
    let ttl = int(&c.cmd(&["TTL", "ttl-key"]));
    assert!((900..=1000).contains(&ttl), "TTL after restart: {ttl}");
    assert_eq!(int(&c.cmd(&["EXISTS", "deleted"])), 0);
    c.cmd(&["SELECT", "3"]);
    assert_eq!(int(&c.cmd(&["SCARD", "set-in-db3"])), 3);
    c.cmd(&["SELECT", "0"]);
    assert_eq!(int(&c.cmd(&["DBSIZE"])), n as i64 + 5);
}

trait AsIntFromBulk {
    fn as_int_from_bulk(&self) -> Value;
}

impl AsIntFromBulk for Value {
    fn as_int_from_bulk(&self) -> Value {
        match self {
            Value::Bulk(b) => Value::Int(String::from_utf8_lossy(b).parse().expect("integer string")),
            other => other.clone(),
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = TempDir::new("redoubt-t60");
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    write_load(&mut c, 300);
    check_load(&mut c, 300);
    drop(c);
    node.kill9();

    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    check_load(&mut c, 300);
    // The restarted node keeps accepting writes on top of what it loaded.
    assert_eq!(int(&c.cmd(&["INCR", "counter"])), 301);
    drop(c);
    node.kill9();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(bulk(&node.conn().cmd(&["GET", "counter"])), b"301".to_vec());
}

#[test]
fn restart_loads_snapshot_and_replays_the_tail() {
    let dir = TempDir::new("redoubt-t60");
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    write_load(&mut c, 200);
    assert_eq!(c.cmd(&["RAFT", "SNAPSHOT"]), Value::Simple(b"Snapshot started".to_vec()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while raft_info(&mut c)["snapshot_index"] == "0" {
        assert!(Instant::now() < deadline, "no snapshot within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Writes after the snapshot live only in the log.
    c.cmd(&["SET", "after-snapshot", "yes"]);
    c.cmd(&["INCRBY", "counter", "1000"]);
    drop(c);
    node.kill9();

    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    let info = raft_info(&mut c);
    assert_ne!(info["snapshot_index"], "0", "{info:?}");
    assert_eq!(bulk(&c.cmd(&["GET", "after-snapshot"])), b"yes".to_vec());
    assert_eq!(bulk(&c.cmd(&["GET", "counter"])), b"1200".to_vec());
    assert_eq!(int(&c.cmd(&["LLEN", "list"])), 200);
}

#[test]
fn raft_info_and_nodes_describe_a_single_node() {
    let dir = TempDir::new("redoubt-t60");
    let node = Node::start(dir.path(), &["--node-id", "7"]);
    let mut c = node.conn();
    c.cmd(&["SET", "k", "v"]);
    let info = raft_info(&mut c);
    for field in [
        "node_id",
        "role",
        "leader_id",
        "leader_addr",
        "term",
        "commit_index",
        "applied_index",
        "last_log_index",
        "snapshot_index",
        "members",
        "learners",
    ] {
        assert!(info.contains_key(field), "RAFT INFO lacks {field}: {info:?}");
    }
    assert_eq!(info["node_id"], "7");
    assert_eq!(info["role"], "leader");
    assert_eq!(info["leader_id"], "7");
    assert_eq!(info["leader_addr"], node.addr.to_string());
    assert_eq!(info["members"], "7");
    // The reply came once the entry was durable; openraft's metrics catch up a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = raft_info(&mut c);
        if info["applied_index"].parse::<u64>().unwrap() >= 2 {
            assert!(info["last_log_index"].parse::<u64>().unwrap() >= 2, "{info:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the SET never shows in RAFT INFO: {info:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let nodes = match c.cmd(&["RAFT", "NODES"]) {
        Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("RAFT NODES: {other:?}"),
    };
    assert!(nodes.starts_with(&format!("7 {} ", node.addr)), "{nodes}");
    assert!(nodes.contains(" leader "), "{nodes}");
    let persistence = bulk(&c.cmd(&["INFO", "persistence"]));
    let persistence = String::from_utf8_lossy(&persistence);
    assert!(persistence.contains("loading:0"), "{persistence}");
    assert!(persistence.contains("durability:raft"), "{persistence}");
}

#[test]
fn everysec_acknowledges_and_survives_a_clean_restart() {
    let dir = TempDir::new("redoubt-t60");
    let node = Node::start(dir.path(), &["--appendfsync", "everysec"]);
    let mut c = node.conn();
    write_load(&mut c, 100);
    // everysec's loss window is one second: after it, the writes are on disk.
    std::thread::sleep(Duration::from_millis(1500));
    drop(c);
    node.kill9();
    let node = Node::start(dir.path(), &["--appendfsync", "everysec"]);
    check_load(&mut node.conn(), 100);
}

#[test]
fn durability_none_writes_nothing_to_disk() {
    let dir = TempDir::new("redoubt-t60");
    let node = Node::start(dir.path(), &["--durability", "none"]);
    let mut c = node.conn();
    c.cmd(&["SET", "k", "v"]);
    assert!(c.cmd(&["RAFT", "INFO"]).is_error());
    drop(c);
    node.kill9();
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".log"))
        .collect();
    assert!(entries.is_empty(), "files written in memory mode: {entries:?}");
}

/// Every key of every database, read back type by type in an order-independent form,
/// with its absolute expiry time.
fn state(c: &mut Conn) -> Vec<(usize, String, String, String)> {
    let s = |v: &Value| -> String {
        match v {
            Value::Bulk(b) | Value::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Int(i) => i.to_string(),
            Value::Nil => "(nil)".into(),
            Value::Array(items) => {
                let mut parts: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
                parts.sort();
                parts.join(",")
            }
            other => format!("{other:?}"),
        }
    };
    let mut out = Vec::new();
    for db in 0..16 {
        c.cmd(&["SELECT", &db.to_string()]);
        let Value::Array(keys) = c.cmd(&["KEYS", "*"]) else { panic!("KEYS") };
        for k in keys {
            let k = s(&k);
            let ty = s(&c.cmd(&["TYPE", &k]));
            let val = match ty.as_str() {
                "string" => s(&c.cmd(&["GET", &k])),
                "list" => format!("{:?}", c.cmd(&["LRANGE", &k, "0", "-1"])),
                "hash" => s(&c.cmd(&["HGETALL", &k])),
                "set" => s(&c.cmd(&["SMEMBERS", &k])),
                "zset" => format!("{:?}", c.cmd(&["ZRANGE", &k, "0", "-1", "WITHSCORES"])),
                other => panic!("type {other}"),
            };
            // The absolute expiry: exact, and the same whenever it is read.
            let at = int(&c.cmd(&["PEXPIRETIME", &k]));
            out.push((db, k, format!("{ty}:{val}"), at.to_string()));
        }
    }
    c.cmd(&["SELECT", "0"]);
    out.sort();
    out
}

/// The operations the leader recorded reproduce its state exactly when a restart replays
/// them: a mix of every family's writes, including the random and relative-time ones
/// (SPOP, SRANDMEMBER-free removals, EXPIRE, INCRBYFLOAT, ...), compared key by key before
/// and after `kill -9`, once from the log alone and once from a snapshot plus the log.
#[test]
fn restart_reproduces_the_state_exactly() {
    let script: &[&[&str]] = &[
        &["SET", "s1", "hello", "EX", "5000"],
        &["APPEND", "s1", " world"],
        &["SETRANGE", "s2", "5", "xyz"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["INCRBYFLOAT", "f", "0.1"],
        &["INCR", "n"],
        &["DECRBY", "n", "7"],
        &["SETBIT", "bits", "77", "1"],
        &["BITFIELD", "bf", "SET", "u8", "0", "200", "INCRBY", "u8", "0", "100"],
        &["MSET", "m1", "a", "m2", "b"],
        &["GETDEL", "m2"],
        &["GETEX", "m1", "PX", "900000"],
        &["RPUSH", "l", "a", "b", "c", "d", "e", "f"],
        &["LPOP", "l"],
        &["LMOVE", "l", "l2", "RIGHT", "LEFT"],
        &["LINSERT", "l", "BEFORE", "c", "bb"],
        &["LTRIM", "l", "0", "2"],
        &["LSET", "l", "0", "zz"],
        &["HSET", "h", "a", "1", "b", "2", "c", "3"],
        &["HINCRBYFLOAT", "h", "a", "2.25"],
        &["HDEL", "h", "b"],
        &["SADD", "s", "a", "b", "c", "d", "e", "f", "g", "h"],
        &["SPOP", "s", "3"],
        &["SMOVE", "s", "t", "a"],
        &["SADD", "u", "x", "a", "b"],
        &["SINTERSTORE", "inter", "s", "u"],
        &["SUNIONSTORE", "uni", "s", "u"],
        &["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"],
        &["ZINCRBY", "z", "10", "a"],
        &["ZADD", "z", "GT", "CH", "0", "b", "5", "c"],
        &["ZPOPMIN", "z"],
        &["ZRANGESTORE", "z2", "z", "0", "1"],
        &["ZUNIONSTORE", "z3", "2", "z", "z2", "WEIGHTS", "2", "3"],
        &["ZREMRANGEBYSCORE", "z3", "-inf", "5"],
        &["EXPIRE", "z3", "7000"],
        &["PEXPIREAT", "h", "99999999999999"],
        &["PERSIST", "h"],
        &["COPY", "z", "zcopy"],
        &["RENAME", "zcopy", "zrenamed"],
        &["SORT", "l2", "ALPHA", "STORE", "sorted"],
        &["MOVE", "sorted", "5"],
        &["SELECT", "5"],
        &["RPUSH", "sorted", "tail"],
        &["SELECT", "9"],
        &["SET", "gone", "1", "PX", "1"],
        &["HSET", "h9", "k", "v"],
        &["SELECT", "0"],
        &["SWAPDB", "9", "10"],
        &["SET", "expired-soon", "v", "PX", "50"],
        &["DEL", "m1"],
        &["UNLINK", "nonexistent"],
        &["FLUSHDB"],
    ];
    let dir = TempDir::new("redoubt-t60");
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    // Everything but the final FLUSHDB, which runs on db 3 below.
    for cmd in &script[..script.len() - 1] {
        let r = c.cmd(cmd);
        assert!(!r.is_error(), "{cmd:?}: {r:?}");
    }
    c.cmd(&["SELECT", "3"]);
    c.cmd(&["SET", "doomed", "1"]);
    c.cmd(&["FLUSHDB"]);
    c.cmd(&["SELECT", "0"]);
    // Let the short TTLs pass: the leader expires them (DEL through the log).
    std::thread::sleep(Duration::from_millis(300));
    c.cmd(&["GET", "expired-soon"]);
    let before = state(&mut c);
    assert!(before.len() > 15, "{before:?}");
    drop(c);
    node.kill9();

    // From the log alone.
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    assert_eq!(state(&mut c), before, "state after replaying the log");
    // From a snapshot plus the log behind it.
    c.cmd(&["RAFT", "SNAPSHOT"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while raft_info(&mut c)["snapshot_index"] == "0" {
        assert!(Instant::now() < deadline, "no snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.cmd(&["ZADD", "after", "1", "x"]);
    let before = state(&mut c);
    drop(c);
    node.kill9();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(state(&mut node.conn()), before, "state after snapshot + log");
}
