//! t70: the native rate-limit and lock commands over the wire, against real redoubt servers:
//! CL.THROTTLE replies as redis-cell documents them, RATELIMIT, LOCK.* with fencing tokens,
//! reply types in RESP2 and RESP3, error texts, how the state keys look to TYPE/TTL/SCAN,
//! tokens and limiter state across `kill -9` of a durable node and across a three-node
//! cluster, and two clients hammering one limiter or one lock at once.
//!
//! Times here are the server's wall clock, so expectations allow for the milliseconds a
//! loaded machine takes between two commands; the exact arithmetic (virtual time, every
//! edge) is unit-tested in `server/src/cmd/limits.rs` and `locks.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redoubt_tests::{free_port, start_redoubt, Conn, Node, TempDir, Value};

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// An array of integers (the limiters' replies).
fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().map(int).collect(),
        other => panic!("expected an array of integers, got {other:?}"),
    }
}

fn text(v: &Value) -> String {
    match v.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => panic!("expected a string, got {v:?}"),
    }
}

fn err(v: &Value) -> String {
    match v {
        Value::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// LOCK.INFO as (owner, token, ttl_ms), from a RESP2 flat array or a RESP3 map.
fn lock_info(v: &Value) -> Option<(String, i64, i64)> {
    let pairs: Vec<(String, Value)> = match v {
        Value::Nil => return None,
        Value::Array(a) => {
            assert_eq!(a.len(), 6, "{v:?}");
            a.chunks(2).map(|p| (text(&p[0]), p[1].clone())).collect()
        }
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        other => panic!("LOCK.INFO: {other:?}"),
    };
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["owner", "token", "ttl_ms"]);
    Some((text(&pairs[0].1), int(&pairs[1].1), int(&pairs[2].1)))
}

/// Every key a full SCAN returns (with extra options such as TYPE), sorted.
fn scan(c: &mut Conn, opts: &[&str]) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    loop {
        let mut line = vec!["SCAN", &cursor];
        line.extend_from_slice(opts);
        let Value::Array(a) = c.cmd(&line) else { panic!("SCAN") };
        let Value::Array(k) = &a[1] else { panic!("SCAN keys") };
        keys.extend(k.iter().map(text));
        cursor = text(&a[0]);
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    keys
}

// ---------------------------------------------------------------------------------------
// CL.THROTTLE
// ---------------------------------------------------------------------------------------

/// redis-cell's README and end-to-end test, call for call.
#[test]
fn cl_throttle_replies_as_redis_cell_documents() {
    let srv = start_redoubt(&[]);
    let mut c = srv.conn();
    // README: "CL.THROTTLE user123 15 30 60" -> 0 16 15 -1 2.
    assert_eq!(ints(&c.cmd(&["CL.THROTTLE", "user123", "15", "30", "60"])), [0, 16, 15, -1, 2]);
    // The rest of the burst (16 in all), then one token every 2 s.
    for left in (0..15).rev() {
        let r = ints(&c.cmd(&["CL.THROTTLE", "user123", "15", "30", "60", "1"]));
        assert_eq!(r[..4], [0, 16, left, -1]);
    }
    assert_eq!(ints(&c.cmd(&["CL.THROTTLE", "user123", "15", "30", "60"])), [1, 16, 0, 2, 32]);
    // Peek: quantity 0 reports without consuming.
    assert_eq!(ints(&c.cmd(&["CL.THROTTLE", "user123", "15", "30", "60", "0"])), [0, 16, 0, -1, 32]);

    // redis-cell's e2e test: max_burst 0, 1 per 2 s.
    let args = ["CL.THROTTLE", "e2e", "0", "1", "2", "1"];
    assert_eq!(ints(&c.cmd(&args)), [0, 1, 0, -1, 2]);
    let r = ints(&c.cmd(&args));
    assert_eq!(r, [1, 1, 0, 2, 2]);
    std::thread::sleep(Duration::from_secs(r[3] as u64));
    assert_eq!(ints(&c.cmd(&args)), [0, 1, 0, -1, 2]);

    // A quantity above the whole burst can never pass and consumes nothing.
    assert_eq!(ints(&c.cmd(&["CL.THROTTLE", "big", "4", "1", "1", "6"])), [1, 5, 5, -1, 0]);
    assert_eq!(c.cmd(&["EXISTS", "big"]), Value::Int(0));

    // The state: a string with the TAT in unix nanoseconds, expiring when the TAT passes.
    assert_eq!(c.cmd(&["TYPE", "user123"]), Value::Simple(b"string".to_vec()));
    let tat: i64 = text(&c.cmd(&["GET", "user123"])).parse().unwrap();
    let pexpiretime = int(&c.cmd(&["PEXPIRETIME", "user123"]));
    assert_eq!(pexpiretime, (tat + 999_999) / 1_000_000);
    assert!((pexpiretime - now_ms() - 32_000).abs() < 5_000, "{pexpiretime}");
    let ttl = int(&c.cmd(&["TTL", "user123"]));
    assert!((27..=32).contains(&ttl), "TTL {ttl}");
}

#[test]
fn cl_throttle_errors_and_resp3() {
    let srv = start_redoubt(&[]);
    let mut c = srv.conn();
    let usage =
        "Cell error: Store error: Usage: cl.throttle <key> <max_burst> <count per period> <period> [<quantity>]";
    assert_eq!(err(&c.cmd(&["CL.THROTTLE"])), usage);
    assert_eq!(err(&c.cmd(&["cl.throttle", "k", "1", "1"])), usage);
    assert_eq!(err(&c.cmd(&["CL.THROTTLE", "k", "1", "1", "1", "1", "1"])), usage);
    assert_eq!(
        err(&c.cmd(&["CL.THROTTLE", "k", "1", "x", "1"])),
        "Cell error: Store error: Couldn't parse as integer: x"
    );
    assert_eq!(
        err(&c.cmd(&["CL.THROTTLE", "k", "1", "1", "1", "1.5"])),
        "Cell error: Store error: Couldn't parse as integer: 1.5"
    );
    assert_eq!(
        err(&c.cmd(&["CL.THROTTLE", "k", "1", "0", "1"])),
        "Cell error: Store error: Zero rates are not supported"
    );
    assert_eq!(
        err(&c.cmd(&["CL.THROTTLE", "k", "1", "1", "0"])),
        "Cell error: Store error: Zero rates are not supported"
    );
    assert_eq!(err(&c.cmd(&["CL.THROTTLE", "k", "-2", "1", "1"])), "ERR max_burst must not be negative");
    assert_eq!(err(&c.cmd(&["CL.THROTTLE", "k", "1", "1", "1", "-1"])), "ERR quantity must not be negative");
    for huge in [
        &["CL.THROTTLE", "k", "9223372036854775807", "1", "1"][..],
        &["CL.THROTTLE", "k", "1", "1", "9223372036854775807"],
        &["CL.THROTTLE", "k", "1", "1", "1", "9223372036854775807"],
        &["CL.THROTTLE", "k", "4611686018427387904", "1", "1000"],
    ] {
        assert_eq!(err(&c.cmd(huge)), "ERR max_burst, period or quantity is out of range", "{huge:?}");
    }
    c.cmd(&["RPUSH", "list", "x"]);
    assert!(err(&c.cmd(&["CL.THROTTLE", "list", "1", "1", "1"])).starts_with("WRONGTYPE"));
    c.cmd(&["SET", "text", "hello"]);
    assert_eq!(err(&c.cmd(&["CL.THROTTLE", "text", "1", "1", "1"])), "ERR value is not an integer or out of range");
    assert_eq!(c.cmd(&["EXISTS", "k"]), Value::Int(0), "errors write nothing");
    // Still serving, and the same reply type in RESP3: an array of five integers.
    c.hello3().unwrap();
    assert_eq!(ints(&c.cmd(&["CL.THROTTLE", "k3", "2", "10", "1"])), [0, 3, 2, -1, 1]);
}

// ---------------------------------------------------------------------------------------
// RATELIMIT
// ---------------------------------------------------------------------------------------

#[test]
fn ratelimit_replies() {
    let srv = start_redoubt(&[]);
    let mut c = srv.conn();
    let day = "86400000";
    let t0 = now_ms();
    assert_eq!(ints(&c.cmd(&["RATELIMIT", "10dlc:+15550001", "3", day])), [1, 2, -1, 86_400_000]);
    let r = ints(&c.cmd(&["RATELIMIT", "10dlc:+15550001", "3", day, "COST", "2"]));
    assert_eq!(r[..3], [1, 0, -1]);
    let r = ints(&c.cmd(&["RATELIMIT", "10dlc:+15550001", "3", day]));
    assert_eq!(r[..2], [0, 0], "full: a rejected request consumes nothing");
    // The first admission leaves the window a day after it was made.
    let waited = now_ms() - t0;
    assert!(r[2] <= 86_400_000 && r[2] >= 86_400_000 - waited - 5, "{r:?}");
    assert!(r[3] <= 86_400_000 && r[3] >= r[2], "{r:?}");
    // More than the limit can never be admitted: no retry time.
    assert_eq!(ints(&c.cmd(&["RATELIMIT", "10dlc:+15550001", "3", day, "COST", "4"]))[..3], [0, 0, -1]);
    // A peek (COST 0) on a full window: nothing left.
    assert_eq!(ints(&c.cmd(&["RATELIMIT", "10dlc:+15550001", "3", day, "COST", "0"]))[..3], [1, 0, -1]);

    // The state: a list of "<ms>:<cost>:<running total>" expiring with its newest entry.
    assert_eq!(c.cmd(&["TYPE", "10dlc:+15550001"]), Value::Simple(b"list".to_vec()));
    let entries = match c.cmd(&["LRANGE", "10dlc:+15550001", "0", "-1"]) {
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let costs: Vec<i64> = entries.iter().map(|e| e.split(':').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(costs.iter().sum::<i64>(), 3, "{entries:?}");
    assert_eq!(entries.last().unwrap().split(':').nth(2), Some("3"));
    let newest: i64 = entries.last().unwrap().split(':').next().unwrap().parse().unwrap();
    assert_eq!(int(&c.cmd(&["PEXPIRETIME", "10dlc:+15550001"])), newest + 86_400_000);

    // A short window, waited out: the retry time is when the request fits.
    let key = "short";
    assert_eq!(ints(&c.cmd(&["RATELIMIT", key, "2", "300"]))[0], 1);
    assert_eq!(ints(&c.cmd(&["RATELIMIT", key, "2", "300"]))[0], 1);
    let r = ints(&c.cmd(&["RATELIMIT", key, "2", "300"]));
    assert_eq!(r[0], 0);
    assert!(r[2] > 0 && r[2] <= 300, "{r:?}");
    std::thread::sleep(Duration::from_millis(r[2] as u64 + 5));
    assert_eq!(ints(&c.cmd(&["RATELIMIT", key, "2", "300"]))[0], 1);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(c.cmd(&["EXISTS", key]), Value::Int(0), "the key expires with its last entry");

    // Errors.
    assert_eq!(err(&c.cmd(&["RATELIMIT", "k", "1"])), "ERR wrong number of arguments for 'ratelimit' command");
    assert_eq!(err(&c.cmd(&["RATELIMIT", "k", "x", "1"])), "ERR value is not an integer or out of range");
    assert_eq!(err(&c.cmd(&["RATELIMIT", "k", "0", "1"])), "ERR limit must be positive");
    assert_eq!(err(&c.cmd(&["RATELIMIT", "k", "1", "0"])), "ERR window_ms must be positive");
    assert_eq!(err(&c.cmd(&["RATELIMIT", "k", "1", "1", "COST", "-1"])), "ERR COST can't be negative");
    assert_eq!(err(&c.cmd(&["RATELIMIT", "k", "1", "1", "COUNT", "1"])), "ERR syntax error");
    assert_eq!(err(&c.cmd(&["RATELIMIT", "k", "1", "9223372036854775807"])), "ERR window_ms is out of range");
    c.cmd(&["SET", "str", "x"]);
    assert!(err(&c.cmd(&["RATELIMIT", "str", "1", "1"])).starts_with("WRONGTYPE"));
    c.hello3().unwrap();
    assert_eq!(ints(&c.cmd(&["RATELIMIT", "r3", "5", "1000", "COST", "2"])), [1, 3, -1, 1000]);
}

/// Two clients hammering one key: exactly `limit` admissions in a window longer than the
/// test, and with a short window no `limit + 1` admissions that must have fallen within one
/// window (judged from each request's send and reply times, which bracket the server's).
#[test]
fn ratelimit_holds_under_two_concurrent_clients() {
    let srv = start_redoubt(&[]);
    let addr = srv.addr;
    let run = |key: &'static str, limit: i64, window: i64, for_ms: u64| {
        let barrier = Arc::new(Barrier::new(2));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut c = Conn::connect(addr);
                    let (l, w) = (limit.to_string(), window.to_string());
                    let mut admitted = Vec::new();
                    let mut calls = 0;
                    barrier.wait();
                    let end = Instant::now() + Duration::from_millis(for_ms);
                    while Instant::now() < end {
                        let sent = now_ms();
                        let r = ints(&c.cmd(&["RATELIMIT", key, &l, &w]));
                        calls += 1;
                        if r[0] == 1 {
                            admitted.push((sent, now_ms()));
                        }
                    }
                    (admitted, calls)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut calls = 0;
        for w in workers {
            let (a, n) = w.join().unwrap();
            all.extend(a);
            calls += n;
        }
        all.sort();
        (all, calls)
    };

    let (all, calls) = run("long", 100, 600_000, 1_500);
    assert!(calls > 200, "only {calls} calls");
    assert_eq!(all.len(), 100, "{calls} calls");

    let (limit, window) = (20i64, 500i64);
    let (all, calls) = run("short", limit, window, 2_500);
    for (i, &(s, _)) in all.iter().enumerate() {
        // Admissions surely inside [s, s + window): sent after s and answered before.
        let inside = all[i..].iter().filter(|&&(s2, r2)| s2 >= s && r2 < s + window).count() as i64;
        assert!(inside <= limit, "{inside} admissions within {window} ms from {s}");
    }
    // It admits, too: about `limit` per window over the run.
    let windows = 2_500 / window;
    assert!(all.len() as i64 >= limit * (windows - 1), "{} admitted in {calls} calls", all.len());
}

// ---------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------

#[test]
fn lock_lifecycle() {
    let srv = start_redoubt(&[]);
    let mut c = srv.conn();
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "orders", "alice", "30000"]), Value::Int(1));
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "orders", "bob", "30000"]), Value::Nil);
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "orders", "alice", "60000"]), Value::Int(1), "re-acquire: same token");
    let (owner, token, ttl) = lock_info(&c.cmd(&["LOCK.INFO", "orders"])).unwrap();
    assert_eq!((owner.as_str(), token), ("alice", 1));
    assert!(ttl > 55_000 && ttl <= 60_000, "{ttl}");
    assert_eq!(c.cmd(&["LOCK.EXTEND", "orders", "bob", "1000"]), Value::Int(0));
    assert_eq!(c.cmd(&["LOCK.EXTEND", "orders", "alice", "200"]), Value::Int(1));
    assert!(int(&c.cmd(&["PTTL", "orders"])) <= 200);
    assert_eq!(c.cmd(&["LOCK.RELEASE", "orders", "bob"]), Value::Int(0));
    assert_eq!(c.cmd(&["LOCK.RELEASE", "orders", "alice"]), Value::Int(1));
    assert_eq!(c.cmd(&["LOCK.INFO", "orders"]), Value::Nil);
    assert_eq!(c.cmd(&["LOCK.RELEASE", "orders", "alice"]), Value::Int(0));
    // Expiry: the lease runs out, the next holder gets a larger token.
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "orders", "bob", "100"]), Value::Int(2));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(c.cmd(&["LOCK.INFO", "orders"]), Value::Nil);
    assert_eq!(c.cmd(&["LOCK.EXTEND", "orders", "bob", "100"]), Value::Int(0), "too late");
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "orders", "carol", "10000"]), Value::Int(3));
    // DEL of the lock frees it without resetting tokens.
    assert_eq!(c.cmd(&["DEL", "orders"]), Value::Int(1));
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "orders", "dave", "10000"]), Value::Int(4));

    // The layout redis-cli sees.
    assert_eq!(c.cmd(&["TYPE", "orders"]), Value::Simple(b"hash".to_vec()));
    assert_eq!(c.cmd(&["HGET", "orders", "owner"]), Value::Bulk(b"dave".to_vec()));
    assert_eq!(c.cmd(&["HGET", "orders", "token"]), Value::Bulk(b"4".to_vec()));
    assert!((1..=10).contains(&int(&c.cmd(&["TTL", "orders"]))));
    assert_eq!(c.cmd(&["TYPE", "orders:fence"]), Value::Simple(b"string".to_vec()));
    assert_eq!(c.cmd(&["GET", "orders:fence"]), Value::Bulk(b"4".to_vec()));
    assert_eq!(c.cmd(&["TTL", "orders:fence"]), Value::Int(-1));
    c.cmd(&["CL.THROTTLE", "cell", "1", "1", "10"]);
    c.cmd(&["RATELIMIT", "window", "1", "10000"]);
    assert_eq!(scan(&mut c, &[]), ["cell", "orders", "orders:fence", "window"]);
    assert_eq!(scan(&mut c, &["TYPE", "hash"]), ["orders"]);
    assert_eq!(scan(&mut c, &["TYPE", "string"]), ["cell", "orders:fence"]);
    assert_eq!(scan(&mut c, &["TYPE", "list"]), ["window"]);

    // RESP3: INFO is a map, a refused ACQUIRE is null.
    let mut c3 = srv.conn();
    c3.hello3().unwrap();
    let v = c3.cmd(&["LOCK.INFO", "orders"]);
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    assert_eq!(lock_info(&v).unwrap().1, 4);
    assert_eq!(c3.cmd(&["LOCK.ACQUIRE", "orders", "eve", "10"]), Value::Nil);
    assert_eq!(c3.cmd(&["LOCK.INFO", "nothing"]), Value::Nil);

    // Errors.
    for (cmd, n) in [("LOCK.ACQUIRE", 3), ("LOCK.RELEASE", 2), ("LOCK.EXTEND", 3), ("LOCK.INFO", 1)] {
        let mut line = vec![cmd.to_string()];
        line.extend((1..n).map(|i| i.to_string()));
        assert_eq!(
            err(&c.cmd(&line)),
            format!("ERR wrong number of arguments for '{}' command", cmd.to_ascii_lowercase())
        );
    }
    assert_eq!(err(&c.cmd(&["LOCK.ACQUIRE", "l", "a", "x"])), "ERR value is not an integer or out of range");
    assert_eq!(err(&c.cmd(&["LOCK.ACQUIRE", "l", "a", "0"])), "ERR invalid expire time in 'lock.acquire' command");
    assert_eq!(err(&c.cmd(&["LOCK.EXTEND", "l", "a", "-1"])), "ERR invalid expire time in 'lock.extend' command");
    assert_eq!(
        err(&c.cmd(&["LOCK.ACQUIRE", "l", "a", "9223372036854775807"])),
        "ERR invalid expire time in 'lock.acquire' command"
    );
    c.cmd(&["RPUSH", "alist", "x"]);
    for line in [
        &["LOCK.ACQUIRE", "alist", "a", "10"][..],
        &["LOCK.RELEASE", "alist", "a"],
        &["LOCK.EXTEND", "alist", "a", "10"],
        &["LOCK.INFO", "alist"],
    ] {
        assert_eq!(err(&c.cmd(line)), "WRONGTYPE Operation against a key holding the wrong kind of value");
    }
    // Inside MULTI the commands queue and run like any other.
    assert_eq!(c.cmd(&["MULTI"]), Value::Simple(b"OK".to_vec()));
    c.cmd(&["LOCK.ACQUIRE", "tx", "a", "1000"]);
    c.cmd(&["CL.THROTTLE", "txc", "1", "1", "1"]);
    c.cmd(&["RATELIMIT", "txr", "1", "1000"]);
    let v = c.cmd(&["EXEC"]);
    let Value::Array(r) = v else { panic!("{v:?}") };
    assert_eq!((r[0].clone(), ints(&r[1])[0], ints(&r[2])[0]), (Value::Int(1), 0, 1));
}

/// Two clients fighting over one lock: never both holders, and every token handed out is
/// larger than all earlier ones.
#[test]
fn lock_contention_hands_out_increasing_tokens() {
    let srv = start_redoubt(&[]);
    let addr = srv.addr;
    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = ["w1", "w2"]
        .into_iter()
        .map(|me| {
            let held = held.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let mut tokens = Vec::new();
                while tokens.len() < 100 {
                    if let Value::Int(t) = c.cmd(&["LOCK.ACQUIRE", "hot", me, "10000"]) {
                        assert!(!held.swap(true, std::sync::atomic::Ordering::SeqCst), "two holders");
                        tokens.push(t);
                        held.store(false, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(c.cmd(&["LOCK.RELEASE", "hot", me]), Value::Int(1));
                    }
                }
                tokens
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        let t = w.join().unwrap();
        assert!(t.windows(2).all(|p| p[0] < p[1]), "a client saw tokens go backwards: {t:?}");
        all.extend(t);
    }
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// Durability and replication
// ---------------------------------------------------------------------------------------

/// Tokens, leases and limiter state are ordinary logged writes: they survive `kill -9` of a
/// durable node, and tokens keep increasing after it.
#[test]
fn state_survives_kill_9_and_tokens_keep_increasing() {
    let dir = TempDir::new("redoubt-t70");
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    for owner in ["a", "b", "c"] {
        int(&c.cmd(&["LOCK.ACQUIRE", "db-migrate", owner, "600000"]));
        assert_eq!(c.cmd(&["LOCK.RELEASE", "db-migrate", owner]), Value::Int(1));
    }
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "db-migrate", "d", "600000"]), Value::Int(4));
    assert_eq!(ints(&c.cmd(&["CL.THROTTLE", "cell", "4", "1", "3600", "3"]))[..3], [0, 5, 2]);
    assert_eq!(ints(&c.cmd(&["RATELIMIT", "win", "10", "3600000", "COST", "7"]))[..2], [1, 3]);
    node.kill9();

    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    let (owner, token, ttl) = lock_info(&c.cmd(&["LOCK.INFO", "db-migrate"])).unwrap();
    assert_eq!((owner.as_str(), token), ("d", 4));
    assert!(ttl > 500_000, "{ttl}");
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "db-migrate", "e", "1000"]), Value::Nil, "still held by d");
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "db-migrate", "d", "1000"]), Value::Int(4));
    assert_eq!(c.cmd(&["LOCK.RELEASE", "db-migrate", "d"]), Value::Int(1));
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "db-migrate", "e", "1000"]), Value::Int(5));
    assert_eq!(ints(&c.cmd(&["CL.THROTTLE", "cell", "4", "1", "3600", "0"]))[..3], [0, 5, 2]);
    let r = ints(&c.cmd(&["RATELIMIT", "win", "10", "3600000", "COST", "4"]));
    assert_eq!(r[..2], [0, 3], "7 of 10 were used before the restart");
    assert!(r[2] > 3_500_000 && r[2] <= 3_600_000, "{r:?}");
    assert_eq!(ints(&c.cmd(&["RATELIMIT", "win", "10", "3600000", "COST", "3"]))[..2], [1, 0]);
    // The lease of "e" runs out across another restart; the next token is still larger.
    std::thread::sleep(Duration::from_millis(1100));
    node.kill9();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.conn();
    assert_eq!(c.cmd(&["LOCK.INFO", "db-migrate"]), Value::Nil);
    assert_eq!(c.cmd(&["LOCK.ACQUIRE", "db-migrate", "f", "1000"]), Value::Int(6));
}

/// RAFT INFO as field -> value.
fn raft_info(c: &mut Conn) -> HashMap<String, String> {
    let text = match c.cmd(&["RAFT", "INFO"]) {
        Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("RAFT INFO: {other:?}"),
    };
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

/// What one node holds for the limiter and lock keys, read from its own state (READONLY).
fn snapshot(node: &Node) -> Vec<String> {
    let mut c = node.conn();
    c.cmd(&["READONLY"]);
    let mut out = Vec::new();
    for line in [
        &["GET", "cell"][..],
        &["PEXPIRETIME", "cell"],
        &["LRANGE", "win", "0", "-1"],
        &["PEXPIRETIME", "win"],
        &["HGETALL", "job"],
        &["PEXPIRETIME", "job"],
        &["GET", "job:fence"],
    ] {
        out.push(format!("{line:?} -> {:?}", c.cmd(line)));
    }
    out
}

/// Through a three-node cluster (writes sent to a follower are forwarded to the leader),
/// every member ends up with the leader's exact state: the log carries the ordinary writes
/// the commands made, never the commands themselves.
#[test]
fn a_cluster_replicates_the_exact_state() {
    let dir = TempDir::new("redoubt-t70-cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let spec = raft.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let d = dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&d).unwrap();
            Node::start_on(ports[i], &d, &["--node-id", &(i + 1).to_string(), "--cluster", &spec])
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let ids: Vec<String> =
            nodes.iter().map(|n| raft_info(&mut n.conn()).get("leader_id").cloned().unwrap_or_default()).collect();
        if !ids[0].is_empty() && ids.iter().all(|i| *i == ids[0]) {
            break ids[0].parse::<usize>().unwrap() - 1;
        }
        assert!(Instant::now() < deadline, "no leader: {ids:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut via = nodes[(leader + 1) % 3].conn();
    for i in 0..20 {
        via.cmd(&["CL.THROTTLE", "cell", "5", "10", "1"]);
        via.cmd(&["RATELIMIT", "win", "8", "60000", "COST", &(1 + i % 3).to_string()]);
    }
    assert_eq!(via.cmd(&["LOCK.ACQUIRE", "job", "x", "60000"]), Value::Int(1));
    assert_eq!(via.cmd(&["LOCK.RELEASE", "job", "x"]), Value::Int(1));
    assert_eq!(via.cmd(&["LOCK.ACQUIRE", "job", "y", "60000"]), Value::Int(2));
    let want = snapshot(&nodes[leader]);
    assert!(want.iter().all(|l| !l.contains("Nil") && !l.contains("Int(-")), "{want:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in &nodes {
        loop {
            let got = snapshot(n);
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "a member differs:\n{got:#?}\nleader:\n{want:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
