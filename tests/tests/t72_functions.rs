//! t72: Redis 7 functions beyond one server's replies (those are in t20's `functions`
//! family): FUNCTION DUMP payloads moving between redis-server and redoubt both ways,
//! libraries surviving `kill -9` and restarts from a snapshot, libraries replicated through
//! a three-node cluster with FUNCTION and FCALL sent to followers, and a long-running
//! function under `-BUSY`, FUNCTION STATS and FUNCTION KILL.

use std::time::{Duration, Instant};

use redoubt_tests::cluster::Cluster;
use redoubt_tests::compare::{compare_by_rule, Rule};
use redoubt_tests::{require, Node, Oracle, TempDir, Value};

const LIB: &str = "#!lua name=counters\n\
    redis.register_function('bump', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)\n\
    redis.register_function{function_name='peek', callback=function(keys) return redis.call('GET', keys[1]) end, \
    flags={'no-writes'}, description='read a counter'}";

const LIB2: &str = "#!lua name=tags\n\
    redis.register_function('tag', function(keys, args) redis.call('SADD', keys[1], args[1]); return redis.call('SCARD', keys[1]) end)";

fn bulk(v: &Value) -> Vec<u8> {
    v.as_bytes().unwrap_or_else(|| panic!("expected a bulk string, got {v:?}")).to_vec()
}

/// A payload from FUNCTION DUMP on either server restores on the other, with the same
/// FUNCTION LIST afterwards: operators can move their libraries in both directions.
#[test]
fn dump_payloads_move_between_redis_and_redoubt() {
    let Some(oracle) = Oracle::start() else {
        require(false, "redis-server");
        return;
    };
    let dir = TempDir::new("redoubt-t72-dump");
    let node = Node::start(dir.path(), &[]);
    let (mut ours, mut theirs) = (node.conn(), oracle.conn());
    // A longer library, so that Redis's payload carries an LZF-compressed string.
    let long = format!("{LIB}\n-- {}", "padding that compresses well ".repeat(20));
    assert_eq!(bulk(&theirs.cmd(&["FUNCTION", "LOAD", &long])), b"counters");
    assert_eq!(bulk(&ours.cmd(&["FUNCTION", "LOAD", LIB2])), b"tags");

    let from_redis = theirs.cmd(&["FUNCTION", "DUMP"]);
    let from_ours = ours.cmd(&["FUNCTION", "DUMP"]);
    assert_eq!(ours.cmd(&[&b"FUNCTION"[..], b"RESTORE", &bulk(&from_redis)]), Value::Simple("OK".into()));
    assert_eq!(theirs.cmd(&[&b"FUNCTION"[..], b"RESTORE", &bulk(&from_ours)]), Value::Simple("OK".into()));
    let list = |c: &mut redoubt_tests::Conn| c.cmd(&["FUNCTION", "LIST", "WITHCODE"]);
    let (a, b) = (list(&mut ours), list(&mut theirs));
    compare_by_rule(Rule::Records, &a, &b).unwrap_or_else(|e| panic!("{e}:\n{a:?}\n{b:?}"));
    assert_eq!(ours.cmd(&["FCALL", "bump", "1", "c", "5"]), Value::Int(5));
    assert_eq!(theirs.cmd(&["FCALL", "tag", "1", "s", "x"]), Value::Int(1));
    // The same payload again collides, as on Redis; REPLACE takes it.
    let again = ours.cmd(&[&b"FUNCTION"[..], b"RESTORE", &bulk(&from_redis)]);
    assert_eq!(again, theirs.cmd(&[&b"FUNCTION"[..], b"RESTORE", &bulk(&from_redis)]));
    assert!(matches!(&again, Value::Error(e) if e == "ERR Library counters already exists"), "{again:?}");
    assert_eq!(ours.cmd(&[&b"FUNCTION"[..], b"RESTORE", &bulk(&from_redis), b"REPLACE"]), Value::Simple("OK".into()));
}

/// Libraries are replicated state: in the log, and in snapshots.
#[test]
fn libraries_survive_kill_9_and_restart_from_a_snapshot() {
    let dir = TempDir::new("redoubt-t72-durable");
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    assert_eq!(bulk(&c.cmd(&["FUNCTION", "LOAD", LIB])), b"counters");
    assert_eq!(c.cmd(&["FCALL", "bump", "1", "c", "2"]), Value::Int(2));
    node.kill9();

    // From the log.
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    assert_eq!(c.cmd(&["FCALL", "bump", "1", "c", "3"]), Value::Int(5));
    assert_eq!(bulk(&c.cmd(&["FUNCTION", "LOAD", LIB2])), b"tags");
    assert_eq!(c.cmd(&["FUNCTION", "DELETE", "counters"]), Value::Simple("OK".into()));
    // Into a snapshot, with the log purged behind it.
    assert!(!matches!(c.cmd(&["RAFT", "SNAPSHOT"]), Value::Error(_)));
    node.kill9();

    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    assert_eq!(c.cmd(&["FCALL", "tag", "1", "s", "a"]), Value::Int(1));
    assert_eq!(c.cmd(&["FCALL", "bump", "1", "c", "1"]), Value::Error("ERR Function not found".into()));
    assert_eq!(c.cmd(&["GET", "c"]), Value::Bulk(b"5".to_vec().into()));
}

/// FUNCTION LOAD sent to a follower is forwarded to the leader and reaches every member;
/// FCALL on a follower runs on the leader; FCALL_RO with READONLY reads the follower's own
/// state; FUNCTION DELETE propagates too.
#[test]
fn a_cluster_replicates_libraries() {
    let cluster = Cluster::start("redoubt-t72-cluster");
    let leader = cluster.leader(Duration::from_secs(30));
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut c1 = cluster.conn(f1);
    assert_eq!(bulk(&c1.cmd(&["FUNCTION", "LOAD", LIB])), b"counters");
    let mut c2 = cluster.conn(f2);
    assert_eq!(c2.cmd(&["FCALL", "bump", "1", "c", "7"]), Value::Int(7));
    assert_eq!(c1.cmd(&["FCALL", "bump", "1", "c", "1"]), Value::Int(8));
    for i in 0..3 {
        cluster.wait_value(i, "c", "8", Duration::from_secs(10));
        let mut c = cluster.conn(i);
        c.cmd(&["READONLY"]);
        assert_eq!(c.cmd(&["FCALL_RO", "peek", "1", "c"]), Value::Bulk(b"8".to_vec().into()), "node {i}");
        let list = c.cmd(&["FUNCTION", "LIST"]);
        assert!(list.render().contains("read a counter"), "node {i}: {}", list.render());
    }
    assert_eq!(c2.cmd(&["FUNCTION", "DELETE", "counters"]), Value::Simple("OK".into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        let mut c = cluster.conn(i);
        c.cmd(&["READONLY"]);
        while c.cmd(&["FUNCTION", "LIST"]) != Value::Array(vec![]) {
            assert!(Instant::now() < deadline, "node {i} still lists the library");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A function past `lua-time-limit`: others get Redis's function-flavoured `-BUSY`, SCRIPT
/// KILL does not stop it, FUNCTION STATS names it, FUNCTION KILL does; then an EVAL script,
/// which only SCRIPT KILL stops. The server runs as started by default for `--durability
/// none` on a small machine: one I/O thread.
#[test]
fn a_long_function_is_busy_and_killable() {
    let dir = TempDir::new("redoubt-t72-busy");
    let node = Node::start(dir.path(), &["--lua-time-limit", "100", "--durability", "none"]);
    let mut c = node.conn();
    let spin = "#!lua name=spin\nredis.register_function{function_name='spin', \
                callback=function() local i = 0 while true do i = i + 1 end end, flags={'no-writes'}}";
    assert_eq!(bulk(&c.cmd(&["FUNCTION", "LOAD", spin])), b"spin");
    let addr = node.addr;
    let runner = std::thread::spawn(move || {
        let mut c = redoubt_tests::Conn::connect(addr);
        c.set_reply_timeout(Duration::from_secs(30));
        c.cmd(&["FCALL", "spin", "0"])
    });
    let mut other = node.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match other.cmd(&["PING"]) {
            Value::Error(e) => {
                assert_eq!(
                    e,
                    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
                );
                break;
            }
            _ => {
                assert!(Instant::now() < deadline, "never busy");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    assert_eq!(
        other.cmd(&["SCRIPT", "KILL"]),
        Value::Error("BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.".into())
    );
    let stats = other.cmd(&["FUNCTION", "STATS"]).render();
    assert!(stats.contains("\"spin\"") && stats.contains("duration_ms") && stats.contains("FCALL"), "{stats}");
    assert_eq!(other.cmd(&["FUNCTION", "KILL"]), Value::Simple("OK".into()));
    match runner.join().unwrap() {
        Value::Error(e) => assert!(e.starts_with("ERR Script killed by user with"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(other.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(other.cmd(&["FUNCTION", "KILL"]), Value::Error("NOTBUSY No scripts in execution right now.".into()));

    // The same for an EVAL script, the other way round.
    let runner = std::thread::spawn(move || {
        let mut c = redoubt_tests::Conn::connect(addr);
        c.set_reply_timeout(Duration::from_secs(30));
        c.cmd(&["EVAL", "local i = 0 while true do i = i + 1 end", "0"])
    });
    let busy = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.cmd(&["GET", "x"]) != Value::Error(busy.into()) {
        assert!(Instant::now() < deadline, "never busy");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(other.cmd(&["FUNCTION", "KILL"]), Value::Error(busy.into()));
    assert_eq!(other.cmd(&["FUNCTION", "STATS"]), Value::Error(busy.into()));
    assert_eq!(other.cmd(&["SCRIPT", "KILL"]), Value::Simple("OK".into()));
    match runner.join().unwrap() {
        Value::Error(e) => assert!(e.starts_with("ERR Script killed by user with SCRIPT KILL"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(other.cmd(&["PING"]), Value::Simple("PONG".into()));
}

/// The script cache is not bounded by the interpreter's handle table: ten thousand cached
/// scripts (more than mlua's ~8,000 handle slots) all stay callable, and so does a new one.
#[test]
fn ten_thousand_cached_scripts_stay_callable() {
    let dir = TempDir::new("redoubt-t72-cache");
    let node = Node::start(dir.path(), &["--durability", "none"]);
    let mut c = node.conn();
    let loads: Vec<Vec<String>> =
        (0..10_000).map(|i| vec!["SCRIPT".into(), "LOAD".into(), format!("return {i}")]).collect();
    let shas: Vec<Vec<u8>> = c.pipeline(&loads).unwrap().iter().map(bulk).collect();
    for i in [0usize, 5_000, 9_999] {
        assert_eq!(c.cmd(&[&b"EVALSHA"[..], &shas[i], b"0"]), Value::Int(i as i64));
    }
    assert_eq!(c.cmd(&["EVAL", "return 'fresh'", "0"]), Value::Bulk(b"fresh".to_vec().into()));
    assert_eq!(c.cmd(&["SCRIPT", "FLUSH"]), Value::Simple("OK".into()));
    assert!(matches!(c.cmd(&[&b"EVALSHA"[..], &shas[0], b"0"]), Value::Error(e) if e.starts_with("NOSCRIPT")));
}
