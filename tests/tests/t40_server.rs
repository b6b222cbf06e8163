//! t40: server behaviour around the data: authentication, client limits, idle timeouts,
//! output buffer limits, maxmemory, blocking commands, WATCH, keyspace notifications,
//! CLIENT subcommands, SCAN's guarantee, the COMMAND table and MONITOR.
//!
//! Most scenarios are `fn(&Target)` and run twice, like t10: against redoubt
//! (`<scenario>::redoubt`) and against the real redis-server (`<scenario>::redis`), so every
//! expectation written here is checked against Redis 7 itself (7.0.15, the oracle). The
//! COMMAND INFO/DOCS parity tests and `keyspace_notifications_match_redis` talk to both
//! servers at once and compare their answers; COMMAND DOCS is compared byte for byte after
//! sorting `subcommands` by name (Redis lists them in the order of a per-process randomly
//! seeded dict, so two redis-servers disagree on that order).
//!
//! Scenarios with several independent expectations collect failures with `soft_eq!` and
//! report them all at the end (`finish`), so one bug does not hide the next.
//!
//! Memory: this test binary installs redoubt's counting allocator, so the in-process server
//! reports `used_memory` as live heap bytes (as the `redoubt` binary does) instead of the
//! process RSS. The heap is the whole test process's, so scenarios that assert on memory
//! (`maxmemory_*`, `pubsub_output_buffer_limit`) must be alone in their process: nextest
//! runs every test in its own process already; under plain `cargo test` those scenarios
//! re-run themselves in a child process (`run_alone`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{mbulk, Target};
use redoubt_tests::compare::parse_info;
use redoubt_tests::{start_redoubt, Conn, ConnError, Oracle, Value};

#[global_allocator]
static ALLOC: redoubt_server::memory::CountingAlloc = redoubt_server::memory::CountingAlloc;

// ---------------------------------------------------------------------------------------
// harness bits
// ---------------------------------------------------------------------------------------

/// Starts redoubt for a scenario (with the counting allocator's figures as used_memory).
pub fn redoubt_target(args: &[&str]) -> Option<Target> {
    redoubt_server::memory::mark_installed();
    Some(Target::Redoubt(start_redoubt(args)))
}

/// True when this test may run in the current process; otherwise re-runs `test` (its full
/// name, e.g. `maxmemory_noeviction::redoubt`) alone in a child process, checks that it
/// passed, and returns false.
pub fn run_alone(test: &str) -> bool {
    let alone = std::env::var_os("T40_ALONE").is_some() || std::env::vars().any(|(k, _)| k.starts_with("NEXTEST"));
    if alone {
        return true;
    }
    let exe = std::env::current_exe().expect("current exe");
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env("T40_ALONE", "1")
        .output()
        .expect("re-run the test alone");
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && so.contains("1 passed"), "{test} (run alone) failed:\n{so}\n{se}");
    false
}

/// `scenario!(name)`, `scenario!(name, [args])`, `scenario!(alone name, [args])`: one test
/// per target, as `both!` in t10, with redoubt started by [`redoubt_target`]. `alone` ones
/// run in a process of their own (see [`run_alone`]).
macro_rules! scenario {
    ($name:ident) => {
        scenario!($name, []);
    };
    ($name:ident, [$($arg:expr),*]) => {
        mod $name {
            #[test]
            fn redoubt() {
                if let Some(t) = super::redoubt_target(&[$($arg),*]) {
                    super::$name(&t);
                }
            }
            #[test]
            fn redis() {
                if let Some(t) = crate::common::redis(&[$($arg),*]) {
                    super::$name(&t);
                }
            }
        }
    };
    (alone $name:ident, [$($arg:expr),*]) => {
        mod $name {
            #[test]
            fn redoubt() {
                if !super::run_alone(concat!(stringify!($name), "::redoubt")) {
                    return;
                }
                if let Some(t) = super::redoubt_target(&[$($arg),*]) {
                    super::$name(&t);
                }
            }
            #[test]
            fn redis() {
                if let Some(t) = crate::common::redis(&[$($arg),*]) {
                    super::$name(&t);
                }
            }
        }
    };
}

fn ok() -> Value {
    Value::Simple(b"OK".to_vec())
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

fn bulks(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| bulk(s)).collect())
}

fn is_redoubt(t: &Target) -> bool {
    matches!(t, Target::Redoubt(_))
}

/// Text of a bulk/simple/verbatim reply (panics otherwise).
fn text(v: &Value) -> String {
    String::from_utf8_lossy(v.as_bytes().unwrap_or_else(|| panic!("expected a string reply, got {}", v.render())))
        .into_owned()
}

/// `INFO <section>` as a field map.
fn info(c: &mut Conn, section: &str) -> BTreeMap<String, String> {
    parse_info(&text(&c.cmd(&["INFO", section])))
}

fn info_u64(c: &mut Conn, section: &str, field: &str) -> Option<u64> {
    info(c, section).get(field).and_then(|v| v.parse().ok())
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `within`.
fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the server reports `n` blocked clients.
fn wait_blocked(admin: &mut Conn, n: u64) {
    wait_for(&format!("{n} blocked client(s)"), Duration::from_secs(5), || {
        info_u64(admin, "clients", "blocked_clients") == Some(n)
    });
}

/// Collects failed expectations so one run reports all of them (`soft_eq!`, then
/// `finish`).
macro_rules! soft_eq {
    ($errs:expr, $got:expr, $want:expr, $($what:tt)+) => {{
        match (&$got, &$want) {
            (got, want) => {
                if got != want {
                    $errs.push(format!("{}:\n    got  {:?}\n    want {:?}", format!($($what)+), got, want));
                }
            }
        }
    }};
}

fn finish(t: &Target, errs: Vec<String>) {
    assert!(errs.is_empty(), "{}: {} expectation(s) failed:\n{}", t.name(), errs.len(), errs.join("\n"));
}

/// Sends a command without waiting for its reply.
fn send(c: &mut Conn, args: &[&str]) {
    c.send_raw(&mbulk(args)).unwrap_or_else(|e| panic!("send {args:?}: {e}"));
}

/// Reads from a raw socket until the server closes it (true) or `within` passes (false).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 1 << 16];
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

/// Length of the first complete RESP2/RESP3 frame in `b`, or None if incomplete. (A plain
/// scanner: the decoder the client uses refuses some valid RESP3, e.g. sets of maps.)
fn frame_len(b: &[u8]) -> Option<usize> {
    fn line(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = b[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&b[at..end], end + 2))
    }
    fn frame(b: &[u8], at: usize) -> Option<usize> {
        let kind = *b.get(at)?;
        let (head, next) = line(b, at + 1)?;
        let n = || -> i64 {
            std::str::from_utf8(head).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad length {head:?}"))
        };
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(next),
            b'$' | b'!' | b'=' => {
                let len = n();
                if len < 0 {
                    return Some(next);
                }
                let end = next + len as usize + 2;
                (b.len() >= end).then_some(end)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let count = n();
                if count < 0 {
                    return Some(next);
                }
                let items = if matches!(kind, b'%' | b'|') { count * 2 } else { count };
                let mut at = next;
                for _ in 0..items {
                    at = frame(b, at)?;
                }
                // An attribute (`|`) is followed by the reply it describes.
                if kind == b'|' {
                    return frame(b, at);
                }
                Some(at)
            }
            other => panic!("unknown RESP type byte {:?}", other as char),
        }
    }
    frame(b, 0)
}

/// A raw connection that returns the exact bytes of each reply (for byte-for-byte checks).
struct Frames {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Frames {
    fn connect(addr: SocketAddr) -> Frames {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Frames { s, buf: Vec::new() }
    }

    /// Sends `args`, returns the bytes of the one reply.
    fn cmd(&mut self, args: &[&str]) -> Vec<u8> {
        self.s.write_all(&mbulk(args)).expect("write");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            if let Some(n) = frame_len(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            assert!(Instant::now() < deadline, "no complete reply to {args:?}");
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("closed while waiting for the reply to {args:?}"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. requirepass
// ---------------------------------------------------------------------------------------

const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const HELLO_NOAUTH: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";

fn requirepass(t: &Target) {
    let mut c = t.conn();
    let mut errs = Vec::new();
    let e = |b: &[u8]| Value::Error(String::from_utf8_lossy(&b[1..b.len() - 2]).into_owned());
    for cmd in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["PING"],
        &["SELECT", "1"],
        &["CLIENT", "ID"],
        &["MULTI"],
        &["ECHO", "x"],
    ] {
        soft_eq!(errs, c.cmd(cmd), e(NOAUTH), "{cmd:?} before AUTH");
    }
    soft_eq!(errs, c.cmd(&["HELLO", "3"]), e(HELLO_NOAUTH), "HELLO 3 before AUTH");
    soft_eq!(errs, c.cmd(&["AUTH", "wrong"]), e(WRONGPASS), "AUTH wrong");
    soft_eq!(errs, c.cmd(&["AUTH", "default", "wrong"]), e(WRONGPASS), "AUTH default wrong");
    soft_eq!(errs, c.cmd(&["AUTH", "nosuchuser", "s3cret"]), e(WRONGPASS), "AUTH nosuchuser s3cret");
    soft_eq!(errs, c.cmd(&["HELLO", "3", "AUTH", "default", "wrong"]), e(WRONGPASS), "HELLO 3 AUTH default wrong");
    // Still unauthenticated, still RESP2.
    soft_eq!(errs, c.cmd(&["GET", "k"]), e(NOAUTH), "GET k after failed AUTHs");
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
    assert_eq!(c.cmd(&["GET", "k"]), bulk("v"));
    assert_eq!(c.cmd(&["AUTH", "default", "s3cret"]), ok());
    // A failed AUTH after a good one does not log the client out.
    soft_eq!(errs, c.cmd(&["AUTH", "wrong"]), e(WRONGPASS), "AUTH wrong when authenticated");
    soft_eq!(errs, c.cmd(&["GET", "k"]), bulk("v"), "GET k after a failed re-AUTH");
    // RESET logs out again when the default user has a password.
    assert_eq!(c.cmd(&["RESET"]), Value::Simple(b"RESET".to_vec()));
    soft_eq!(errs, c.cmd(&["GET", "k"]), e(NOAUTH), "GET k after RESET");

    // HELLO 3 AUTH default <pass>: authenticated and in RESP3 in one go.
    let mut h = t.conn();
    h.client().set_resp3(true);
    let v = h.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]);
    let Value::Map(m) = &v else { panic!("HELLO 3 AUTH should reply with a map, got {}", v.render()) };
    assert!(m.iter().any(|(k, v)| k.as_bytes() == Some(b"proto") && *v == Value::Int(3)), "{}", v.render());
    assert_eq!(h.cmd(&["GET", "k"]), bulk("v"));
    assert_eq!(h.cmd(&["GET", "missing"]), Value::Nil);
    // HELLO 2 with AUTH too.
    let mut h2 = t.raw();
    h2.send(b"HELLO 2 AUTH default s3cret\r\n").expect(b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n");

    // QUIT is allowed before AUTH.
    let mut q = t.raw();
    q.send(b"QUIT\r\n").expect_then_close(b"+OK\r\n");
    finish(t, errs);
}
scenario!(requirepass, ["--requirepass", "s3cret"]);

fn requirepass_unknown_command_and_arity_before_auth(t: &Target) {
    // Redis 7.0 looks the command up and checks its arity before the AUTH gate.
    let mut c = t.conn();
    let mut errs = Vec::new();
    let e = |s: &str| Value::Error(s.into());
    soft_eq!(errs, c.cmd(&["FOO", "bar"]), e("ERR unknown command 'FOO', with args beginning with: 'bar' "), "FOO bar");
    soft_eq!(errs, c.cmd(&["GET"]), e("ERR wrong number of arguments for 'get' command"), "GET");
    soft_eq!(errs, c.cmd(&["SET", "k"]), e("ERR wrong number of arguments for 'set' command"), "SET k");
    soft_eq!(errs, c.cmd(&["AUTH"]), e("ERR wrong number of arguments for 'auth' command"), "AUTH");
    soft_eq!(errs, c.cmd(&["AUTH", "a", "b", "c"]), e("ERR syntax error"), "AUTH a b c");
    soft_eq!(errs, c.cmd(&["GET", "k"]), e("NOAUTH Authentication required."), "GET k");
    finish(t, errs);
}
scenario!(requirepass_unknown_command_and_arity_before_auth, ["--requirepass", "s3cret"]);

fn auth_without_requirepass(t: &Target) {
    let mut c = t.raw();
    c.send(b"AUTH foo\r\n").expect(
        b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
    );
    // The default user is `nopass`: the two-argument form accepts any password.
    c.send(b"AUTH default foo\r\n").expect(b"+OK\r\n");
    c.send(b"AUTH someone foo\r\n").expect(WRONGPASS);
    c.send(b"PING\r\n").expect(b"+PONG\r\n");
}
scenario!(auth_without_requirepass);

// ---------------------------------------------------------------------------------------
// 2. maxclients
// ---------------------------------------------------------------------------------------

const MAXCLIENTS_ERR: &[u8] = b"-ERR max number of clients reached\r\n";

/// A connection that answered PING (retrying while an earlier connection, e.g. the
/// harness's readiness probe, is still counted by the server).
fn admitted(t: &Target) -> common::Raw {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = t.raw();
        c.send(b"PING\r\n");
        let got = c.read_for(Duration::from_millis(200));
        if got == b"+PONG\r\n" {
            return c;
        }
        assert!(
            got.is_empty() || got == MAXCLIENTS_ERR,
            "unexpected reply to PING: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(Instant::now() < deadline, "no connection admitted within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn maxclients(t: &Target) {
    let c1 = admitted(t);
    let mut c2 = admitted(t);
    // The third is refused with Redis's text and closed.
    let mut c3 = t.raw();
    c3.expect_then_close(MAXCLIENTS_ERR);
    // The admitted clients are unaffected.
    c2.send(b"PING\r\n").expect(b"+PONG\r\n");
    // A freed slot is reusable.
    drop(c1);
    let mut c5 = admitted(t);
    c5.send(b"INFO stats\r\n");
    let stats = String::from_utf8_lossy(&c5.read_for(Duration::from_millis(300))).into_owned();
    let rejected: u64 =
        parse_info(&stats).get("rejected_connections").and_then(|v| v.parse().ok()).expect("rejected_connections");
    assert!(rejected >= 1, "rejected_connections = {rejected}");
}
scenario!(maxclients, ["--maxclients", "2"]);

// ---------------------------------------------------------------------------------------
// 3. timeout
// ---------------------------------------------------------------------------------------

fn idle_timeout(t: &Target) {
    let start = Instant::now();
    let mut idle = t.raw();
    idle.send(b"PING\r\n").expect(b"+PONG\r\n");
    let mut sub = t.conn();
    sub.cmd(&["SUBSCRIBE", "ch"]);
    let mut blocked = t.conn();
    send(&mut blocked, &["BLPOP", "list", "0"]);
    // A client that keeps talking stays.
    let mut chatty = t.raw();

    let mut idle_closed_at = None;
    while start.elapsed() < Duration::from_millis(3200) {
        chatty.send(b"PING\r\n").expect(b"+PONG\r\n");
        if idle_closed_at.is_none() && closed_within(&mut idle.s, Duration::from_millis(250)) {
            idle_closed_at = Some(start.elapsed());
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let at = idle_closed_at.expect("an idle client should be closed after ~1-2 s with --timeout 1");
    assert!(at >= Duration::from_millis(900), "idle client closed too early: {at:?}");
    assert!(at <= Duration::from_millis(3200), "idle client closed too late: {at:?}");

    // The subscriber and the blocked client are still there after > 3 s of silence.
    let mut p = t.conn();
    assert_eq!(p.cmd(&["PUBLISH", "ch", "still-here"]), Value::Int(1));
    assert_eq!(sub.read_frame().expect("message"), bulks(&["message", "ch", "still-here"]));
    assert_eq!(p.cmd(&["RPUSH", "list", "x"]), Value::Int(1));
    assert_eq!(blocked.read_frame().expect("BLPOP reply"), bulks(&["list", "x"]));
    chatty.send(b"PING\r\n").expect(b"+PONG\r\n");
}
scenario!(idle_timeout, ["--timeout", "1"]);

// ---------------------------------------------------------------------------------------
// 4. client-output-buffer-limit pubsub
// ---------------------------------------------------------------------------------------

fn pubsub_output_buffer_limit(t: &Target) {
    // Big messages back to back.
    overrun_subscriber(t, 100 * 1024, 300, None);
}
scenario!(alone pubsub_output_buffer_limit, ["--client-output-buffer-limit", "pubsub", "64kb", "32kb", "1"]);

fn pubsub_output_buffer_limit_slow_publisher(t: &Target) {
    // Small messages with pauses: the subscriber's socket buffers fill first, so the
    // server has to notice the backlog while its writes to that subscriber are stuck.
    overrun_subscriber(t, 4 * 1024, 4000, Some(Duration::from_millis(1)));
}
scenario!(alone pubsub_output_buffer_limit_slow_publisher, ["--client-output-buffer-limit", "pubsub", "64kb", "32kb", "1"]);

/// A subscriber that never reads while another client publishes up to `max` messages of
/// `size` bytes (sleeping `pause` every 16 messages): the server must disconnect it, stay
/// healthy, and not keep the backlog.
fn overrun_subscriber(t: &Target, size: usize, max: usize, pause: Option<Duration>) {
    // A subscriber that never reads.
    let mut sub = TcpStream::connect(t.addr()).expect("connect");
    sub.write_all(b"SUBSCRIBE ch\r\n").unwrap();
    let want = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
    let mut got = vec![0u8; want.len()];
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.read_exact(&mut got).expect("subscribe confirmation");
    assert_eq!(got, want);

    let mut p = t.conn();
    let payload = vec![b'x'; size];
    let mut published = 0usize;
    let mut reached = 1;
    // Far beyond the 64 KB hard limit plus what the kernel buffers hold.
    for i in 0..max {
        reached = p.cmd(&[b"PUBLISH".as_slice(), b"ch", &payload]).as_int().expect("PUBLISH count");
        published += 1;
        if reached == 0 {
            break;
        }
        if let Some(d) = pause.filter(|_| i % 16 == 15) {
            std::thread::sleep(d);
        }
    }
    // The subscriber is gone from the server's side (PUBLISH reaches nobody)...
    let mut numsub;
    let gone = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            numsub = p.cmd(&["PUBSUB", "NUMSUB", "ch"]);
            if numsub == Value::Array(vec![bulk("ch"), Value::Int(0)]) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let clients = text(&p.cmd(&["CLIENT", "LIST"]));
    assert!(
        gone,
        "the subscriber over its output buffer limit was not disconnected: {published} x {size} B published, \
         last PUBLISH reached {reached}, PUBSUB NUMSUB = {}, CLIENT LIST:\n{clients}",
        numsub.render()
    );
    assert!(!clients.contains("flags=P"), "a pub/sub client is still listed:\n{clients}");
    // ...and its socket was closed without it reading anything.
    assert!(closed_within(&mut sub, Duration::from_secs(10)), "subscriber socket not closed by the server");

    // The server is healthy and did not keep the backlog.
    assert_eq!(p.cmd(&["PING"]), Value::Simple(b"PONG".to_vec()));
    assert_eq!(p.cmd(&["SET", "k", "v"]), ok());
    let mut fresh = t.conn();
    assert_eq!(fresh.cmd(&["GET", "k"]), bulk("v"));
    let used = info_u64(&mut fresh, "memory", "used_memory").expect("used_memory");
    assert!(used < 16 << 20, "used_memory = {used} after publishing {published} x {size} B to a dead subscriber");
    let stats = info(&mut fresh, "stats");
    match stats.get("client_output_buffer_limit_disconnections") {
        Some(n) => assert!(n.parse::<u64>().unwrap() >= 1, "client_output_buffer_limit_disconnections = {n}"),
        // Redis 7.0 does not have the field (7.2 added it); redoubt must.
        None => assert!(!is_redoubt(t), "INFO stats lacks client_output_buffer_limit_disconnections"),
    }
    eprintln!("{}: subscriber disconnected after {published} messages of {size} B", t.name());
}

fn output_buffer_limit_config_roundtrip(t: &Target) {
    let mut c = t.conn();
    let v = c.cmd(&["CONFIG", "GET", "client-output-buffer-limit"]);
    assert_eq!(
        v,
        bulks(&["client-output-buffer-limit", "normal 0 0 0 slave 268435456 67108864 60 pubsub 65536 32768 1"])
    );
    assert_eq!(c.cmd(&["CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 512kb 5"]), ok());
    let v = c.cmd(&["CONFIG", "GET", "client-output-buffer-limit"]);
    assert_eq!(
        v,
        bulks(&["client-output-buffer-limit", "normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 524288 5"])
    );
}
scenario!(output_buffer_limit_config_roundtrip, ["--client-output-buffer-limit", "pubsub", "64kb", "32kb", "1"]);

// ---------------------------------------------------------------------------------------
// 5. maxmemory
// ---------------------------------------------------------------------------------------

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

fn fill(c: &mut Conn, prefix: &str, from: usize, n: usize, size: usize) -> Vec<Value> {
    let value = "v".repeat(size);
    let cmds: Vec<Vec<String>> =
        (from..from + n).map(|i| vec!["SET".into(), format!("{prefix}:{i}"), value.clone()]).collect();
    c.pipeline(&cmds).expect("pipeline")
}

/// Writes 1 KB values, 100 per pipelined batch, up to 40 MB (far past 5 MB), and stops
/// after the batch in which the first write is refused. Returns the keys written.
fn fill_until_oom(c: &mut Conn) -> i64 {
    let mut written = 0i64;
    let mut refused = 0;
    for batch in 0..400 {
        for r in fill(c, "key", batch * 100, 100, 1000) {
            match r {
                Value::Simple(s) if s == b"OK" => written += 1,
                Value::Error(e) => {
                    assert_eq!(e, OOM, "write refused with the wrong error");
                    refused += 1;
                }
                other => panic!("SET replied {}", other.render()),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "writes never failed with 40 MB written under maxmemory 5mb");
    assert!(written > 1000, "OOM after only {written} keys");
    written
}

fn maxmemory_noeviction(t: &Target) {
    let mut c = t.conn();
    let written = fill_until_oom(&mut c);
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(written));
    // Right at the limit a small write may slip in when a reply buffer is freed; well
    // above it (the limit lowered under the data) every write that may grow memory fails.
    assert_eq!(c.cmd(&["CONFIG", "SET", "maxmemory", "1mb"]), ok());
    for cmd in [
        vec!["SET", "another", "v"],
        vec!["RPUSH", "l", "a"],
        vec!["APPEND", "key:0", "x"],
        vec!["INCR", "n"],
        vec!["SETNX", "n", "1"],
    ] {
        assert_eq!(c.cmd(&cmd), Value::Error(OOM.into()), "{cmd:?}");
    }
    // Reads still work, and so do commands that do not grow memory.
    assert_eq!(c.cmd(&["GET", "key:0"]), bulk(&"v".repeat(1000)));
    assert_eq!(c.cmd(&["STRLEN", "key:1"]), Value::Int(1000));
    assert_eq!(c.cmd(&["EXISTS", "another"]), Value::Int(0));
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(written));
    assert_eq!(c.cmd(&["EXPIRE", "key:2", "1000"]), Value::Int(1));
    assert_eq!(c.cmd(&["DEL", "key:3"]), Value::Int(1));
    // Back to 5 MB and half the keys deleted: writes are accepted again.
    assert_eq!(c.cmd(&["CONFIG", "SET", "maxmemory", "5mb"]), ok());
    let dels: Vec<Vec<String>> = (4..written / 2).map(|i| vec!["DEL".into(), format!("key:{i}")]).collect();
    for r in c.pipeline(&dels).expect("DEL pipeline") {
        assert_eq!(r, Value::Int(1));
    }
    wait_for("writes to be accepted again after deleting half the keys", Duration::from_secs(5), || {
        c.cmd(&["SET", "after", "v"]) == ok()
    });
    assert_eq!(c.cmd(&["GET", "after"]), bulk("v"));
    assert_eq!(info_u64(&mut c, "stats", "evicted_keys"), Some(0));
}
scenario!(alone maxmemory_noeviction, ["--maxmemory", "5mb", "--maxmemory-policy", "noeviction"]);

fn maxmemory_noeviction_multi(t: &Target) {
    let mut c = t.conn();
    fill_until_oom(&mut c);
    assert_eq!(c.cmd(&["CONFIG", "SET", "maxmemory", "1mb"]), ok());
    // Inside MULTI, Redis refuses to queue anything while over the limit (queueing itself
    // takes memory), reads included; EXEC then aborts. MULTI, EXEC and DISCARD still run.
    let mut errs = Vec::new();
    assert_eq!(c.cmd(&["MULTI"]), ok());
    soft_eq!(errs, c.cmd(&["SET", "x", "y"]), Value::Error(OOM.into()), "SET queued in MULTI over maxmemory");
    soft_eq!(errs, c.cmd(&["GET", "key:0"]), Value::Error(OOM.into()), "GET queued in MULTI over maxmemory");
    soft_eq!(
        errs,
        c.cmd(&["EXEC"]),
        Value::Error("EXECABORT Transaction discarded because of previous errors.".into()),
        "EXEC of a transaction whose commands were refused"
    );
    let after = c.cmd(&["EXISTS", "x"]);
    if after == Value::Simple(b"QUEUED".to_vec()) {
        errs.push("the client is still in MULTI after its EXEC was refused".into());
        c.cmd(&["DISCARD"]);
    } else {
        soft_eq!(errs, after, Value::Int(0), "EXISTS x after the aborted transaction");
    }
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["DISCARD"]), ok());
    // A transaction queued before the limit was crossed: EXEC of a denyoom command fails.
    assert_eq!(c.cmd(&["CONFIG", "SET", "maxmemory", "0"]), ok());
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["SET", "x", "y"]), Value::Simple(b"QUEUED".to_vec()));
    let mut admin = t.conn();
    assert_eq!(admin.cmd(&["CONFIG", "SET", "maxmemory", "1mb"]), ok());
    soft_eq!(
        errs,
        c.cmd(&["EXEC"]),
        Value::Error(format!("EXECABORT Transaction discarded because of: {OOM}")),
        "EXEC of a queued SET once over maxmemory"
    );
    let after = c.cmd(&["EXISTS", "x"]);
    if after == Value::Simple(b"QUEUED".to_vec()) {
        errs.push("the client is still in MULTI after EXEC was refused for OOM".into());
        c.cmd(&["DISCARD"]);
    } else {
        soft_eq!(errs, after, Value::Int(0), "EXISTS x after the refused EXEC");
    }
    finish(t, errs);
}
scenario!(alone maxmemory_noeviction_multi, ["--maxmemory", "5mb", "--maxmemory-policy", "noeviction"]);

fn maxmemory_allkeys_lru(t: &Target) {
    let mut c = t.conn();
    let n = 20_000; // 20 MB of values under a 5 MB limit
    for batch in 0..n / 100 {
        for r in fill(&mut c, "key", batch * 100, 100, 1000) {
            assert_eq!(r, ok(), "a write failed under allkeys-lru");
        }
    }
    let mem = info(&mut c, "memory");
    let used: u64 = mem["used_memory"].parse().unwrap();
    let limit = 5u64 << 20;
    assert!(used <= limit + limit / 2, "used_memory {used} is far above maxmemory {limit}");
    assert_eq!(mem.get("maxmemory").map(String::as_str), Some(limit.to_string().as_str()));
    assert_eq!(mem.get("maxmemory_policy").map(String::as_str), Some("allkeys-lru"));
    let evicted = info_u64(&mut c, "stats", "evicted_keys").expect("evicted_keys");
    let dbsize = c.cmd(&["DBSIZE"]).as_int().unwrap();
    assert!(evicted > 0, "nothing evicted");
    assert!(dbsize > 0 && (dbsize as usize) < n, "DBSIZE {dbsize}");
    assert_eq!(evicted as i64 + dbsize, n as i64, "evicted_keys + DBSIZE should be the keys written");
    // The most recently written keys are (nearly all) still there.
    let recent: Vec<Vec<String>> = (n - 20..n).map(|i| vec!["EXISTS".into(), format!("key:{i}")]).collect();
    let present = c.pipeline(&recent).unwrap().iter().filter(|v| **v == Value::Int(1)).count();
    assert!(present >= 15, "only {present} of the 20 most recent keys survived LRU eviction");
}
scenario!(alone maxmemory_allkeys_lru, ["--maxmemory", "5mb", "--maxmemory-policy", "allkeys-lru"]);

// ---------------------------------------------------------------------------------------
// 6. blocking lists and sorted sets
// ---------------------------------------------------------------------------------------

fn blpop_served_in_arrival_order(t: &Target) {
    let mut admin = t.conn();
    let mut c1 = t.conn();
    let mut c2 = t.conn();
    send(&mut c1, &["BLPOP", "k", "0"]);
    wait_blocked(&mut admin, 1);
    send(&mut c2, &["BLPOP", "k", "0"]);
    wait_blocked(&mut admin, 2);
    assert_eq!(admin.cmd(&["RPUSH", "k", "a", "b"]), Value::Int(2));
    assert_eq!(c1.read_frame().unwrap(), bulks(&["k", "a"]));
    assert_eq!(c2.read_frame().unwrap(), bulks(&["k", "b"]));
    assert_eq!(admin.cmd(&["EXISTS", "k"]), Value::Int(0));
    wait_blocked(&mut admin, 0);
    // The client blocked on several keys is served from the first one that gets data.
    send(&mut c1, &["BRPOP", "x", "y", "z", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["LPUSH", "z", "zz"]), Value::Int(1));
    assert_eq!(c1.read_frame().unwrap(), bulks(&["z", "zz"]));
    // Both connections are usable afterwards.
    assert_eq!(c1.cmd(&["PING"]), Value::Simple(b"PONG".to_vec()));
    assert_eq!(c2.cmd(&["PING"]), Value::Simple(b"PONG".to_vec()));
}
scenario!(blpop_served_in_arrival_order);

fn blpop_timeout(t: &Target) {
    let mut c = t.conn();
    let start = Instant::now();
    assert_eq!(c.cmd(&["BLPOP", "nokey", "0.3"]), Value::NilArray);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "BLPOP 0.3 took {took:?}");
    let start = Instant::now();
    assert_eq!(c.cmd(&["BZPOPMIN", "nozset", "0.2"]), Value::NilArray);
    assert!(start.elapsed() >= Duration::from_millis(150));
    let start = Instant::now();
    assert_eq!(c.cmd(&["BLMOVE", "nokey", "dst", "LEFT", "RIGHT", "0.2"]), Value::NilArray);
    assert!(start.elapsed() >= Duration::from_millis(150));
    // Bad timeouts.
    assert_eq!(c.cmd(&["BLPOP", "k", "-1"]), Value::Error("ERR timeout is negative".into()));
    assert_eq!(c.cmd(&["BLPOP", "k", "abc"]), Value::Error("ERR timeout is not a float or out of range".into()));
    // The connection is in step afterwards.
    assert_eq!(c.cmd(&["ECHO", "next"]), bulk("next"));
}
scenario!(blpop_timeout);

fn blocking_inside_multi_returns_at_once(t: &Target) {
    let mut c = t.raw();
    let start = Instant::now();
    c.send(b"MULTI\r\nBLPOP nokey 0\r\nBLMOVE a b LEFT RIGHT 0\r\nBZPOPMIN z 0\r\nBRPOP nokey 5\r\nEXEC\r\n")
        .expect(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n*-1\r\n$-1\r\n*-1\r\n*-1\r\n");
    assert!(start.elapsed() < Duration::from_secs(2));
    // With data the commands work normally inside MULTI.
    c.send(b"RPUSH l 1\r\nMULTI\r\nBLPOP l 0\r\nEXEC\r\n")
        .expect(b":1\r\n+OK\r\n+QUEUED\r\n*1\r\n*2\r\n$1\r\nl\r\n$1\r\n1\r\n");
}
scenario!(blocking_inside_multi_returns_at_once);

fn push_inside_exec_wakes_blocked_client(t: &Target) {
    let mut admin = t.conn();
    let mut blocked = t.conn();
    send(&mut blocked, &["BLPOP", "k", "0"]);
    wait_blocked(&mut admin, 1);
    let mut w = t.conn();
    assert_eq!(w.cmd(&["MULTI"]), ok());
    assert_eq!(w.cmd(&["RPUSH", "k", "a"]), Value::Simple(b"QUEUED".to_vec()));
    assert_eq!(w.cmd(&["RPUSH", "k", "b"]), Value::Simple(b"QUEUED".to_vec()));
    assert_eq!(w.cmd(&["LPOP", "k"]), Value::Simple(b"QUEUED".to_vec()));
    // Not served while the transaction is only queued.
    assert_eq!(blocked.read_frame_within(Duration::from_millis(100)), None);
    assert_eq!(w.cmd(&["EXEC"]), Value::Array(vec![Value::Int(1), Value::Int(2), bulk("a")]));
    // Served after EXEC with what the transaction left.
    assert_eq!(blocked.read_frame().unwrap(), bulks(&["k", "b"]));
    assert_eq!(w.cmd(&["EXISTS", "k"]), Value::Int(0));

    // A transaction that pushes and pops everything leaves the client blocked.
    send(&mut blocked, &["BLPOP", "k", "0"]);
    wait_blocked(&mut admin, 1);
    let r = w.pipeline(&[vec!["MULTI"], vec!["RPUSH", "k", "x"], vec!["DEL", "k"], vec!["EXEC"]]).unwrap();
    assert_eq!(r[3], Value::Array(vec![Value::Int(1), Value::Int(1)]));
    assert_eq!(blocked.read_frame_within(Duration::from_millis(200)), None);
    assert_eq!(info_u64(&mut admin, "clients", "blocked_clients"), Some(1));
    assert_eq!(w.cmd(&["RPUSH", "k", "y"]), Value::Int(1));
    assert_eq!(blocked.read_frame().unwrap(), bulks(&["k", "y"]));
}
scenario!(push_inside_exec_wakes_blocked_client);

fn blmove_chain(t: &Target) {
    let mut admin = t.conn();
    let mut c1 = t.conn();
    let mut c2 = t.conn();
    send(&mut c1, &["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"]);
    wait_blocked(&mut admin, 1);
    send(&mut c2, &["BLMOVE", "b", "c", "LEFT", "RIGHT", "0"]);
    wait_blocked(&mut admin, 2);
    assert_eq!(admin.cmd(&["RPUSH", "a", "x"]), Value::Int(1));
    assert_eq!(c1.read_frame().unwrap(), bulk("x"));
    assert_eq!(c2.read_frame().unwrap(), bulk("x"));
    assert_eq!(admin.cmd(&["LRANGE", "c", "0", "-1"]), bulks(&["x"]));
    assert_eq!(admin.cmd(&["EXISTS", "a", "b"]), Value::Int(0));
    // BRPOPLPUSH into a list another client BLPOPs.
    send(&mut c1, &["BLPOP", "d", "0"]);
    wait_blocked(&mut admin, 1);
    send(&mut c2, &["BRPOPLPUSH", "s", "d", "0"]);
    wait_blocked(&mut admin, 2);
    assert_eq!(admin.cmd(&["LPUSH", "s", "y"]), Value::Int(1));
    assert_eq!(c2.read_frame().unwrap(), bulk("y"));
    assert_eq!(c1.read_frame().unwrap(), bulks(&["d", "y"]));
    assert_eq!(admin.cmd(&["EXISTS", "s", "d"]), Value::Int(0));
}
scenario!(blmove_chain);

fn bzpopmin_served_by_zadd(t: &Target) {
    let mut admin = t.conn();
    let mut c = t.conn();
    send(&mut c, &["BZPOPMIN", "z", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["ZADD", "z", "2", "b", "1", "a"]), Value::Int(2));
    assert_eq!(c.read_frame().unwrap(), bulks(&["z", "a", "1"]));
    assert_eq!(admin.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]), bulks(&["b", "2"]));
    send(&mut c, &["BZPOPMAX", "other", "z2", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["ZADD", "z2", "5", "five", "7", "seven"]), Value::Int(2));
    assert_eq!(c.read_frame().unwrap(), bulks(&["z2", "seven", "7"]));
    // A write of the wrong type does not serve (nor break) the waiter.
    send(&mut c, &["BZPOPMIN", "z3", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["SET", "z3", "str"]), ok());
    assert_eq!(c.read_frame_within(Duration::from_millis(150)), None);
    assert_eq!(admin.cmd(&["DEL", "z3"]), Value::Int(1));
    assert_eq!(admin.cmd(&["ZADD", "z3", "1", "m"]), Value::Int(1));
    assert_eq!(c.read_frame().unwrap(), bulks(&["z3", "m", "1"]));
}
scenario!(bzpopmin_served_by_zadd);

fn client_unblock(t: &Target) {
    let mut admin = t.conn();
    let mut c = t.conn();
    let id = c.cmd(&["CLIENT", "ID"]).as_int().unwrap().to_string();
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id]), Value::Int(0), "not blocked yet");
    send(&mut c, &["BLPOP", "k", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id, "TIMEOUT"]), Value::Int(1));
    assert_eq!(c.read_frame().unwrap(), Value::NilArray);
    wait_blocked(&mut admin, 0);
    send(&mut c, &["BZPOPMIN", "z", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id, "ERROR"]), Value::Int(1));
    assert_eq!(c.read_frame().unwrap(), Value::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into()));
    send(&mut c, &["BLMOVE", "a", "b", "LEFT", "LEFT", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id]), Value::Int(1), "default is TIMEOUT");
    assert_eq!(c.read_frame().unwrap(), Value::NilArray);
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", &id, "MAYBE"]),
        Value::Error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into())
    );
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", "999999"]), Value::Int(0));
    // The unblocked client is not served later.
    assert_eq!(admin.cmd(&["RPUSH", "k", "v"]), Value::Int(1));
    assert_eq!(c.cmd(&["LLEN", "k"]), Value::Int(1));
}
scenario!(client_unblock);

// ---------------------------------------------------------------------------------------
// 7. WATCH
// ---------------------------------------------------------------------------------------

/// MULTI; PING; EXEC on `c`: the EXEC reply.
fn try_exec(c: &mut Conn) -> Value {
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["PING"]), Value::Simple(b"QUEUED".to_vec()));
    c.cmd(&["EXEC"])
}

fn exec_ran() -> Value {
    Value::Array(vec![Value::Simple(b"PONG".to_vec())])
}

fn watch(t: &Target) {
    let mut c = t.conn();
    let mut other = t.conn();

    // Broken by another client's write.
    c.cmd(&["SET", "k", "1"]);
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    other.cmd(&["SET", "k", "2"]);
    assert_eq!(try_exec(&mut c), Value::NilArray, "write by another client");

    // Even a write that leaves the same value.
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    other.cmd(&["SET", "k", "2"]);
    assert_eq!(try_exec(&mut c), Value::NilArray, "same-value write");

    // Not broken by reads (nor by writes to other keys).
    assert_eq!(c.cmd(&["WATCH", "k", "absent"]), ok());
    other.cmd(&["GET", "k"]);
    other.cmd(&["EXISTS", "k", "absent"]);
    other.cmd(&["TTL", "k"]);
    other.cmd(&["GET", "absent"]);
    other.cmd(&["SET", "unrelated", "x"]);
    other.cmd(&["DEL", "absent"]); // deleting nothing is not a change
    assert_eq!(try_exec(&mut c), exec_ran(), "reads only");

    // Broken by the watcher's own write before MULTI.
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    c.cmd(&["INCR", "k"]);
    assert_eq!(try_exec(&mut c), Value::NilArray, "own write");

    // UNWATCH forgets.
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    assert_eq!(c.cmd(&["UNWATCH"]), ok());
    other.cmd(&["SET", "k", "3"]);
    assert_eq!(try_exec(&mut c), exec_ran(), "after UNWATCH");

    // Creating a watched absent key breaks it.
    assert_eq!(c.cmd(&["WATCH", "new"]), ok());
    other.cmd(&["LPUSH", "new", "a"]);
    assert_eq!(try_exec(&mut c), Value::NilArray, "absent key created");

    // Expiry set on a watched key by another client.
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    other.cmd(&["EXPIRE", "k", "100"]);
    assert_eq!(try_exec(&mut c), Value::NilArray, "EXPIRE");
}
scenario!(watch);

fn watch_broken_by_expiry(t: &Target) {
    let mut c = t.conn();
    assert_eq!(c.cmd(&["SET", "k", "v", "PX", "50"]), ok());
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(try_exec(&mut c), Value::NilArray, "watched key expired before EXEC");
    // An already expired (so absent) key that stays absent does not break WATCH.
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(try_exec(&mut c), exec_ran());
    // A key with a long TTL that does not expire does not either.
    assert_eq!(c.cmd(&["SET", "long", "v", "EX", "100"]), ok());
    assert_eq!(c.cmd(&["WATCH", "long"]), ok());
    assert_eq!(try_exec(&mut c), exec_ran());
}
scenario!(watch_broken_by_expiry);

fn watch_broken_by_flushall_and_swapdb(t: &Target) {
    let mut c = t.conn();
    let mut other = t.conn();
    let mut errs = Vec::new();
    c.cmd(&["SET", "k", "v"]);
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    assert_eq!(other.cmd(&["FLUSHALL"]), ok());
    soft_eq!(errs, try_exec(&mut c), Value::NilArray, "EXEC after FLUSHALL of a watched key");

    c.cmd(&["SET", "k", "v"]);
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    assert_eq!(other.cmd(&["FLUSHDB"]), ok());
    soft_eq!(errs, try_exec(&mut c), Value::NilArray, "EXEC after FLUSHDB of a watched key");

    // SWAPDB: the watched key (absent in db 0) appears when db 1 is swapped in.
    assert_eq!(other.cmd(&["SELECT", "1"]), ok());
    other.cmd(&["SET", "k", "in-db1"]);
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    assert_eq!(other.cmd(&["SWAPDB", "0", "1"]), ok());
    soft_eq!(errs, try_exec(&mut c), Value::NilArray, "EXEC after SWAPDB 0 1 brought the absent watched key into db 0");
    assert_eq!(c.cmd(&["GET", "k"]), bulk("in-db1"));

    // SWAPDB: the watched key (present in db 0) disappears.
    assert_eq!(c.cmd(&["WATCH", "k"]), ok());
    assert_eq!(other.cmd(&["SWAPDB", "0", "1"]), ok());
    soft_eq!(errs, try_exec(&mut c), Value::NilArray, "EXEC after SWAPDB 0 1 took the watched key out of db 0");
    assert_eq!(c.cmd(&["EXISTS", "k"]), Value::Int(0));

    // SWAPDB of databases where the watched key is absent in both leaves it unbroken.
    assert_eq!(c.cmd(&["WATCH", "nowhere"]), ok());
    assert_eq!(other.cmd(&["SWAPDB", "0", "1"]), ok());
    soft_eq!(errs, try_exec(&mut c), exec_ran(), "EXEC after SWAPDB without the watched key");

    // FLUSHALL when the watched key does not exist does not break it (Redis 7.0).
    assert_eq!(c.cmd(&["WATCH", "nowhere"]), ok());
    assert_eq!(other.cmd(&["FLUSHALL"]), ok());
    soft_eq!(errs, try_exec(&mut c), exec_ran(), "EXEC after FLUSHALL without the watched key");
    finish(t, errs);
}
scenario!(watch_broken_by_flushall_and_swapdb);

// ---------------------------------------------------------------------------------------
// 8. keyspace notifications
// ---------------------------------------------------------------------------------------

/// (channel, payload) of a RESP2 pmessage.
fn pmessage(v: &Value) -> (String, String) {
    match v {
        Value::Array(a) if a.len() == 4 && a[0] == bulk("pmessage") => (text(&a[2]), text(&a[3])),
        other => panic!("expected a pmessage, got {}", other.render()),
    }
}

fn keyspace_notifications(t: &Target) {
    let mut c = t.conn();
    assert_eq!(c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]), ok());
    let mut sub = t.conn();
    assert_eq!(
        sub.cmd(&["PSUBSCRIBE", "__key*@0__:*"]),
        Value::Array(vec![bulk("psubscribe"), bulk("__key*@0__:*"), Value::Int(1)])
    );

    c.cmd(&["SET", "k", "v"]);
    c.cmd(&["EXPIRE", "k", "100"]);
    c.cmd(&["DEL", "k"]);
    c.cmd(&["DEL", "k"]); // nothing deleted: no event
    c.cmd(&["LPUSH", "l", "a"]);
    c.cmd(&["RENAME", "l", "l2"]);
    c.cmd(&["SELECT", "1"]);
    c.cmd(&["SET", "other-db", "v"]); // db 1: not matched by the pattern
    c.cmd(&["SELECT", "0"]);
    c.cmd(&["SET", "e", "v", "PX", "100"]);
    // Nobody touches `e` again: its `expired` event must come from background expiry.
    let start = Instant::now();
    let mut got = Vec::new();
    loop {
        let f = sub.read_frame().unwrap_or_else(|e| panic!("no more notifications after {got:?}: {e}"));
        got.push(pmessage(&f));
        if got.last().unwrap().0 == "__keyevent@0__:expired" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no expired event within 5 s: {got:?}");
    }
    let want: Vec<(String, String)> = [
        ("__keyspace@0__:k", "set"),
        ("__keyevent@0__:set", "k"),
        ("__keyspace@0__:k", "expire"),
        ("__keyevent@0__:expire", "k"),
        ("__keyspace@0__:k", "del"),
        ("__keyevent@0__:del", "k"),
        ("__keyspace@0__:l", "lpush"),
        ("__keyevent@0__:lpush", "l"),
        ("__keyspace@0__:l", "rename_from"),
        ("__keyevent@0__:rename_from", "l"),
        ("__keyspace@0__:l2", "rename_to"),
        ("__keyevent@0__:rename_to", "l2"),
        ("__keyspace@0__:e", "set"),
        ("__keyevent@0__:set", "e"),
        ("__keyspace@0__:e", "expire"),
        ("__keyevent@0__:expire", "e"),
        ("__keyspace@0__:e", "expired"),
        ("__keyevent@0__:expired", "e"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    // Nothing else is pending, and the key is gone (checked only now, after the event).
    assert_eq!(sub.read_frame_within(Duration::from_millis(100)), None);
    assert_eq!(c.cmd(&["EXISTS", "e"]), Value::Int(0));
    // Turning notifications off stops them.
    assert_eq!(c.cmd(&["CONFIG", "SET", "notify-keyspace-events", ""]), ok());
    c.cmd(&["SET", "k", "v"]);
    assert_eq!(sub.read_frame_within(Duration::from_millis(150)), None);
}
scenario!(keyspace_notifications);

/// The same sequence, with both servers driven side by side and compared directly.
#[test]
fn keyspace_notifications_match_redis() {
    let Some(oracle) = Oracle::start() else { return };
    let ours = redoubt_target(&[]).unwrap();
    let theirs = Target::Redis(oracle);
    let run = |t: &Target| -> Vec<(String, String)> {
        let mut c = t.conn();
        c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
        let mut sub = t.conn();
        sub.cmd(&["PSUBSCRIBE", "*"]);
        let script: &[&[&str]] = &[
            &["SET", "a", "1"],
            &["INCRBY", "a", "2"],
            &["APPEND", "a", "x"],
            &["SETEX", "b", "100", "v"],
            &["PERSIST", "b"],
            &["HSET", "h", "f", "v", "g", "w"],
            &["HDEL", "h", "f", "g"],
            &["SADD", "s", "m"],
            &["SREM", "s", "m"],
            &["ZADD", "z", "1", "m"],
            &["ZINCRBY", "z", "1", "m"],
            &["RPUSH", "l", "1", "2"],
            &["LPOP", "l"],
            &["RPOP", "l"],
            &["GETDEL", "a"],
            &["MSET", "m1", "1", "m2", "2"],
            &["EXPIRE", "m1", "0"],
            &["COPY", "m2", "m3"],
            &["FLUSHDB"],
            // Two background expiries, far enough apart to come in this order.
            &["SET", "x", "1", "PX", "50"],
            &["SET", "last", "v", "PX", "400"],
        ];
        for cmd in script {
            c.cmd(cmd);
        }
        let mut got = Vec::new();
        let start = Instant::now();
        let mut expired = 0;
        while expired < 2 {
            let f = sub.read_frame().unwrap_or_else(|e| panic!("{} after {got:?}: {e}", t.name()));
            let (ch, payload) = pmessage(&f);
            if ch.starts_with("__keyevent@0__:expired") {
                expired += 1;
            }
            got.push((ch, payload));
            assert!(start.elapsed() < Duration::from_secs(5), "{}: expired events missing: {got:?}", t.name());
        }
        got
    };
    let a = run(&ours);
    let b = run(&theirs);
    if a != b {
        let n = a.len().max(b.len());
        let mut diff = String::new();
        for i in 0..n {
            let x = a.get(i).map(|p| format!("{p:?}")).unwrap_or_default();
            let y = b.get(i).map(|p| format!("{p:?}")).unwrap_or_default();
            diff.push_str(&format!("{} {i:3} redoubt {x:<50} redis {y}\n", if x == y { " " } else { "!" }));
        }
        panic!("keyspace notification sequences differ:\n{diff}");
    }
}

// ---------------------------------------------------------------------------------------
// 9. CLIENT subcommands
// ---------------------------------------------------------------------------------------

/// Field names of a CLIENT LIST / CLIENT INFO line, in order.
fn field_names(line: &str) -> Vec<String> {
    line.split(' ').filter_map(|w| w.split_once('=').map(|(k, _)| k.to_string())).collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(' ').find_map(|w| w.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

fn client_setname_getname_list(t: &Target) {
    let mut c = t.conn();
    let id = c.cmd(&["CLIENT", "ID"]).as_int().unwrap();
    // Connected after `c` was served: a higher id.
    let mut other = t.conn();
    let other_id = other.cmd(&["CLIENT", "ID"]).as_int().unwrap();
    assert!(other_id > id, "ids {id} then {other_id}");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Value::Nil);
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "worker-1"]), ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), bulk("worker-1"));
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "bad name"]),
        Value::Error("ERR Client names cannot contain spaces, newlines or special characters.".into())
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), bulk("worker-1"));

    let list = text(&c.cmd(&["CLIENT", "LIST"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let mine = lines.iter().find(|l| field(l, "id") == Some(&id.to_string())).expect("own line");
    let mut errs = Vec::new();
    soft_eq!(errs, field(mine, "name"), Some("worker-1"), "CLIENT LIST name=");
    soft_eq!(errs, field(mine, "cmd"), Some("client|list"), "CLIENT LIST cmd= of the caller (the running command)");
    soft_eq!(errs, field(mine, "db"), Some("0"), "CLIENT LIST db=");
    soft_eq!(errs, field(mine, "flags"), Some("N"), "CLIENT LIST flags=");
    soft_eq!(errs, field(mine, "resp"), Some("2"), "CLIENT LIST resp=");
    soft_eq!(errs, field(mine, "laddr"), Some(t.addr().to_string().as_str()), "CLIENT LIST laddr=");
    let theirs = lines.iter().find(|l| field(l, "id") == Some(&other_id.to_string())).expect("other line");
    soft_eq!(errs, field(theirs, "name"), Some(""), "CLIENT LIST name= of an unnamed client");
    soft_eq!(errs, field(theirs, "cmd"), Some("client|id"), "CLIENT LIST cmd= of another client");

    // Filters.
    let only = text(&c.cmd(&["CLIENT", "LIST", "ID", &other_id.to_string()]));
    assert_eq!(only.lines().count(), 1);
    assert_eq!(field(only.lines().next().unwrap(), "id"), Some(other_id.to_string().as_str()));
    let normal = text(&c.cmd(&["CLIENT", "LIST", "TYPE", "normal"]));
    assert_eq!(normal.lines().count(), 2);
    let pubsub = text(&c.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]));
    assert_eq!(pubsub, "");
    // CLIENT INFO is the caller's own line.
    let info_line = text(&c.cmd(&["CLIENT", "INFO"]));
    assert_eq!(field(info_line.trim_end(), "id"), Some(id.to_string().as_str()));
    soft_eq!(errs, field(info_line.trim_end(), "cmd"), Some("client|info"), "CLIENT INFO cmd=");
    // Clearing the name.
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", ""]), ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Value::Nil);
    // Redis 7.0.15's fields, in its order.
    let want = "id addr laddr fd name age idle flags db sub psub ssub multi qbuf qbuf-free argv-mem multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp";
    soft_eq!(errs, field_names(info_line.trim_end()).join(" "), want, "CLIENT INFO field names");
    finish(t, errs);
}
scenario!(client_setname_getname_list);

fn client_kill(t: &Target) {
    let mut admin = t.conn();
    let mut victim = t.conn();
    let id = victim.cmd(&["CLIENT", "ID"]).as_int().unwrap().to_string();
    assert_eq!(admin.cmd(&["CLIENT", "KILL", "ID", &id]), Value::Int(1));
    assert!(
        matches!(victim.try_cmd(&["PING"]), Err(ConnError::Closed) | Err(ConnError::Other(_))),
        "killed client still answered"
    );
    assert_eq!(admin.cmd(&["CLIENT", "KILL", "ID", &id]), Value::Int(0));
    assert_eq!(admin.cmd(&["CLIENT", "KILL", "ID", "999999"]), Value::Int(0));
    // The old form: by address.
    let mut v2 = common::Raw::connect(t.addr());
    let addr = v2.s.local_addr().unwrap().to_string();
    v2.send(b"PING\r\n").expect(b"+PONG\r\n");
    assert_eq!(admin.cmd(&["CLIENT", "KILL", &addr]), ok());
    v2.expect_then_close(b"");
    assert_eq!(admin.cmd(&["CLIENT", "KILL", &addr]), Value::Error("ERR No such client".into()));
    // SKIPME: killing by own address form keeps the caller unless SKIPME no.
    let own_id = admin.cmd(&["CLIENT", "ID"]).as_int().unwrap().to_string();
    assert_eq!(admin.cmd(&["CLIENT", "KILL", "ID", &own_id]), Value::Int(0), "SKIPME yes is the default");
    assert_eq!(admin.cmd(&["PING"]), Value::Simple(b"PONG".to_vec()));
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", "abc"]),
        Value::Error("ERR client-id should be greater than 0".into())
    );
    // Killing a blocked client.
    let mut blocked = t.conn();
    let bid = blocked.cmd(&["CLIENT", "ID"]).as_int().unwrap().to_string();
    send(&mut blocked, &["BLPOP", "k", "0"]);
    wait_blocked(&mut admin, 1);
    assert_eq!(admin.cmd(&["CLIENT", "KILL", "ID", &bid]), Value::Int(1));
    assert!(blocked.read_frame().is_err());
    wait_blocked(&mut admin, 0);
}
scenario!(client_kill);

fn client_pause_write(t: &Target) {
    let mut admin = t.conn();
    let mut reader = t.conn();
    let mut writer = t.conn();
    let mut errs = Vec::new();
    writer.cmd(&["SET", "k", "1"]);
    let start = Instant::now();
    assert_eq!(admin.cmd(&["CLIENT", "PAUSE", "700", "WRITE"]), ok());
    // Reads are not paused.
    soft_eq!(errs, reader.cmd(&["GET", "k"]), bulk("1"), "GET during PAUSE WRITE");
    soft_eq!(errs, reader.cmd(&["EXISTS", "k"]), Value::Int(1), "EXISTS during PAUSE WRITE");
    if start.elapsed() >= Duration::from_millis(500) {
        errs.push(format!("reads were delayed by CLIENT PAUSE 700 WRITE: answered after {:?}", start.elapsed()));
    }
    // A write waits for the pause to end.
    send(&mut writer, &["INCR", "k"]);
    let early = writer.read_frame_within(Duration::from_millis(200));
    let v = match early {
        Some(v) => {
            errs.push(format!("INCR answered {} during CLIENT PAUSE WRITE (after {:?})", v.render(), start.elapsed()));
            v
        }
        None => {
            soft_eq!(errs, reader.cmd(&["GET", "k"]), bulk("1"), "GET while a write is paused");
            writer.read_frame().unwrap()
        }
    };
    soft_eq!(errs, v, Value::Int(2), "INCR after the pause");
    let took = start.elapsed();
    if !(took >= Duration::from_millis(600) && took < Duration::from_secs(5)) {
        errs.push(format!("paused write released after {took:?} (pause of 700 ms)"));
    }
    soft_eq!(errs, reader.cmd(&["GET", "k"]), bulk("2"), "GET after the pause");

    // CLIENT UNPAUSE releases at once.
    assert_eq!(admin.cmd(&["CLIENT", "PAUSE", "20000", "WRITE"]), ok());
    send(&mut writer, &["SET", "k", "3"]);
    let early = writer.read_frame_within(Duration::from_millis(200));
    let start = Instant::now();
    assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]), ok());
    let v = match early {
        Some(v) => {
            errs.push(format!("SET answered {} during CLIENT PAUSE 20000 WRITE", v.render()));
            v
        }
        None => writer.read_frame().unwrap(),
    };
    soft_eq!(errs, v, ok(), "SET released by CLIENT UNPAUSE");
    if start.elapsed() >= Duration::from_secs(2) {
        errs.push(format!("CLIENT UNPAUSE released the write after {:?}", start.elapsed()));
    }

    // PAUSE ALL (the default) pauses reads too.
    assert_eq!(admin.cmd(&["CLIENT", "PAUSE", "300"]), ok());
    let start = Instant::now();
    soft_eq!(errs, reader.cmd(&["GET", "k"]), bulk("3"), "GET after PAUSE ALL");
    if start.elapsed() < Duration::from_millis(200) {
        errs.push(format!("a read ran during CLIENT PAUSE ALL (after {:?})", start.elapsed()));
    }
    soft_eq!(
        errs,
        admin.cmd(&["CLIENT", "PAUSE", "100", "SOMETIMES"]),
        Value::Error("ERR CLIENT PAUSE mode must be WRITE or ALL".into()),
        "CLIENT PAUSE 100 SOMETIMES"
    );
    finish(t, errs);
}
scenario!(client_pause_write);

fn client_reply_off_on(t: &Target) {
    let mut c = t.raw();
    c.send(b"CLIENT REPLY OFF\r\nSET a 1\r\nGET a\r\nNOSUCHCMD\r\nCLIENT REPLY ON\r\nGET a\r\n")
        .expect(b"+OK\r\n$1\r\n1\r\n");
    c.send(b"CLIENT REPLY MAYBE\r\n").expect(b"-ERR syntax error\r\n");
    // OFF, then ON: only ON's +OK and what follows.
    c.send(b"CLIENT REPLY OFF\r\nINCR n\r\nINCR n\r\nCLIENT REPLY ON\r\nGET n\r\n").expect(b"+OK\r\n$1\r\n2\r\n");
}
scenario!(client_reply_off_on);

fn client_reply_skip(t: &Target) {
    // SKIP has no reply itself and swallows the next command's.
    let mut c = t.raw();
    c.send(b"CLIENT REPLY SKIP\r\nSET b 2\r\nGET b\r\n").expect(b"$1\r\n2\r\n");
    let mut c = t.raw();
    c.send(b"CLIENT REPLY SKIP\r\nCLIENT REPLY SKIP\r\nPING\r\nECHO x\r\n").expect(b"$1\r\nx\r\n");
}
scenario!(client_reply_skip);

// ---------------------------------------------------------------------------------------
// 10. SCAN guarantee
// ---------------------------------------------------------------------------------------

fn scan_guarantee(t: &Target) {
    let mut c = t.conn();
    let n = 10_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let cmds: Vec<Vec<String>> =
            chunk.iter().map(|i| vec!["SET".into(), format!("stable:{i}"), "v".into()]).collect();
        c.pipeline(&cmds).unwrap();
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(n as i64));

    // Another client adds and deletes other keys for the whole scan (growing the table
    // through resizes on the way).
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let addr = t.addr();
    let mutator = {
        let (stop, ops) = (stop.clone(), ops.clone());
        std::thread::spawn(move || {
            let mut m = Conn::connect(addr);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut cmds: Vec<Vec<String>> =
                    (i..i + 50).map(|j| vec!["SET".into(), format!("churn:{j}"), "v".into()]).collect();
                if i >= 5000 {
                    cmds.extend((i - 5000..i - 4975).map(|j| vec!["DEL".into(), format!("churn:{j}")]));
                }
                m.pipeline(&cmds).unwrap();
                ops.fetch_add(cmds.len() as u64, Ordering::Relaxed);
                i += 50;
            }
        })
    };
    // Let the churn start first.
    wait_for("the mutator to start", Duration::from_secs(5), || ops.load(Ordering::Relaxed) > 0);
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let v = c.cmd(&["SCAN", &cursor, "COUNT", "100"]);
        let Value::Array(a) = v else { panic!("SCAN reply {}", v.render()) };
        cursor = text(&a[0]);
        let Value::Array(keys) = &a[1] else { panic!("SCAN keys {}", a[1].render()) };
        for k in keys {
            let k = text(k);
            if k.starts_with("stable:") {
                *seen.entry(k).or_default() += 1;
            }
        }
        calls += 1;
        assert!(calls < 100_000, "SCAN did not terminate");
        if cursor == "0" {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    mutator.join().unwrap();
    assert!(ops.load(Ordering::Relaxed) > 0);
    let missing: Vec<String> = (0..n).map(|i| format!("stable:{i}")).filter(|k| !seen.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "{} keys present during the whole SCAN were never returned, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let dups: Vec<(&String, &u32)> = seen.iter().filter(|(_, &n)| n > 1).collect();
    eprintln!(
        "{}: SCAN took {calls} calls, {} churn ops, {} stable keys returned more than once",
        t.name(),
        ops.load(Ordering::Relaxed),
        dups.len()
    );
    if is_redoubt(t) {
        assert!(
            dups.is_empty(),
            "redoubt returned {} keys more than once, e.g. {:?}",
            dups.len(),
            &dups[..dups.len().min(5)]
        );
    }
}
scenario!(scan_guarantee);

// ---------------------------------------------------------------------------------------
// 11. COMMAND INFO / DOCS parity with redis-server
// ---------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Clone)]
struct CmdInfo {
    name: String,
    arity: i64,
    flags: BTreeSet<String>,
    keys: (i64, i64, i64),
    acl: BTreeSet<String>,
    subs: BTreeMap<String, CmdInfo>,
}

fn strings_of(v: &Value) -> BTreeSet<String> {
    match v {
        Value::Array(a) | Value::Set(a) => a.iter().map(text).collect(),
        other => panic!("expected an array of strings, got {}", other.render()),
    }
}

fn parse_cmd_info(v: &Value) -> CmdInfo {
    let Value::Array(a) = v else { panic!("COMMAND INFO entry {}", v.render()) };
    assert!(a.len() >= 10, "COMMAND INFO entry with {} fields: {}", a.len(), v.render());
    let subs = match &a[9] {
        Value::Array(s) => s.iter().map(parse_cmd_info).map(|i| (i.name.clone(), i)).collect(),
        other => panic!("subcommands {}", other.render()),
    };
    CmdInfo {
        name: text(&a[0]).to_ascii_lowercase(),
        arity: a[1].as_int().unwrap(),
        flags: strings_of(&a[2]),
        keys: (a[3].as_int().unwrap(), a[4].as_int().unwrap(), a[5].as_int().unwrap()),
        acl: strings_of(&a[6]),
        subs,
    }
}

fn set_diff(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let extra: Vec<_> = a.difference(b).collect();
    let missing: Vec<_> = b.difference(a).collect();
    format!("redoubt has extra {extra:?}, lacks {missing:?}")
}

fn compare_info(
    ours: &CmdInfo,
    theirs: &CmdInfo,
    mismatches: &mut Vec<String>,
    missing_subs: &mut Vec<String>,
    unknown_subs: &mut Vec<String>,
) {
    let n = &ours.name;
    if ours.arity != theirs.arity {
        mismatches.push(format!("{n}: arity {} (redis {})", ours.arity, theirs.arity));
    }
    if ours.flags != theirs.flags {
        mismatches.push(format!("{n}: flags {}", set_diff(&ours.flags, &theirs.flags)));
    }
    if ours.keys != theirs.keys {
        mismatches.push(format!("{n}: first/last/step {:?} (redis {:?})", ours.keys, theirs.keys));
    }
    if ours.acl != theirs.acl {
        mismatches.push(format!("{n}: acl categories {}", set_diff(&ours.acl, &theirs.acl)));
    }
    for (sname, s) in &ours.subs {
        match theirs.subs.get(sname) {
            Some(r) => compare_info(s, r, mismatches, missing_subs, unknown_subs),
            None => unknown_subs.push(sname.clone()),
        }
    }
    for sname in theirs.subs.keys() {
        if !ours.subs.contains_key(sname) {
            missing_subs.push(sname.clone());
        }
    }
}

#[test]
fn command_info_matches_redis() {
    let Some(oracle) = Oracle::start() else { return };
    let ours = redoubt_target(&[]).unwrap();
    let mut r = ours.conn();
    let mut o = oracle.conn();
    let names: Vec<String> = match r.cmd(&["COMMAND", "LIST"]) {
        Value::Array(a) => a.iter().map(text).collect(),
        other => panic!("COMMAND LIST: {}", other.render()),
    };
    assert!(names.len() > 100, "COMMAND LIST has {} names", names.len());
    let mut args = vec!["COMMAND".to_string(), "INFO".to_string()];
    args.extend(names.iter().cloned());
    let (Value::Array(ri), Value::Array(oi)) = (r.cmd(&args), o.cmd(&args)) else { panic!("COMMAND INFO replies") };
    assert_eq!(ri.len(), names.len());
    assert_eq!(oi.len(), names.len());
    let mut mismatches = Vec::new();
    let mut missing_subs = Vec::new();
    let mut unknown_to_redis = Vec::new();
    let mut unknown_subs = Vec::new();
    let mut compared = 0;
    for ((name, rv), ov) in names.iter().zip(&ri).zip(&oi) {
        if matches!(ov, Value::Nil | Value::NilArray) {
            unknown_to_redis.push(name.clone());
            continue;
        }
        if matches!(rv, Value::Nil | Value::NilArray) {
            mismatches.push(format!("{name}: listed by COMMAND LIST but COMMAND INFO returns nil"));
            continue;
        }
        let (a, b) = (parse_cmd_info(rv), parse_cmd_info(ov));
        if a.name != *name {
            mismatches.push(format!("{name}: COMMAND INFO names it {}", a.name));
        }
        compare_info(&a, &b, &mut mismatches, &mut missing_subs, &mut unknown_subs);
        compared += 1;
    }
    // COMMAND COUNT agrees with COMMAND LIST.
    assert_eq!(r.cmd(&["COMMAND", "COUNT"]), Value::Int(names.len() as i64));
    eprintln!("compared {compared} commands with redis-server");
    if !unknown_to_redis.is_empty() {
        eprintln!("note: commands redis-server does not know: {unknown_to_redis:?}");
    }
    if !unknown_subs.is_empty() {
        eprintln!("note: subcommands redis-server 7.0 does not know: {unknown_subs:?}");
    }
    if !missing_subs.is_empty() {
        eprintln!("note: {} subcommands redoubt does not have: {missing_subs:?}", missing_subs.len());
    }
    if !mismatches.is_empty() {
        for m in &mismatches {
            eprintln!("MISMATCH {m}");
        }
        panic!("{} COMMAND INFO mismatches with redis-server:\n{}", mismatches.len(), mismatches.join("\n"));
    }
}

/// A RESP frame kept as bytes: a leaf, or an aggregate's header line and its children.
enum Resp {
    Leaf(Vec<u8>),
    Agg(Vec<u8>, Vec<Resp>),
}

fn parse_resp(b: &[u8]) -> Resp {
    fn go(b: &[u8], at: usize) -> (Resp, usize) {
        let end = frame_len(&b[at..]).expect("complete frame") + at;
        let line_end = b[at..].windows(2).position(|w| w == b"\r\n").unwrap() + at + 2;
        if !matches!(b[at], b'*' | b'~' | b'>' | b'%') || b[at + 1] == b'-' {
            return (Resp::Leaf(b[at..end].to_vec()), end);
        }
        let mut kids = Vec::new();
        let mut p = line_end;
        while p < end {
            let (k, q) = go(b, p);
            kids.push(k);
            p = q;
        }
        (Resp::Agg(b[at..line_end].to_vec(), kids), end)
    }
    go(b, 0).0
}

fn write_resp(r: &Resp, out: &mut Vec<u8>) {
    match r {
        Resp::Leaf(b) => out.extend_from_slice(b),
        Resp::Agg(h, kids) => {
            out.extend_from_slice(h);
            kids.iter().for_each(|k| write_resp(k, out));
        }
    }
}

/// The reply with every `subcommands` map (RESP3) or flat pair array (RESP2) sorted by
/// name: Redis lists subcommands in the order of a dict seeded at random per process, so
/// two redis-servers disagree on it; everything else stays byte for byte.
fn subcommands_sorted(reply: &[u8]) -> Vec<u8> {
    fn norm(r: &mut Resp) {
        if let Resp::Agg(_, kids) = r {
            let mut i = 0;
            while i + 1 < kids.len() {
                if matches!(&kids[i], Resp::Leaf(b) if b.as_slice() == b"$11\r\nsubcommands\r\n") {
                    if let Resp::Agg(_, subs) = &mut kids[i + 1] {
                        let mut pairs: Vec<(Vec<u8>, Resp)> = Vec::new();
                        let mut it = std::mem::take(subs).into_iter();
                        while let (Some(Resp::Leaf(k)), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        pairs.sort_by(|a, b| a.0.cmp(&b.0));
                        for (k, v) in pairs {
                            subs.push(Resp::Leaf(k));
                            subs.push(v);
                        }
                    }
                }
                i += 1;
            }
            kids.iter_mut().for_each(norm);
        }
    }
    let mut r = parse_resp(reply);
    norm(&mut r);
    let mut out = Vec::new();
    write_resp(&r, &mut out);
    assert_eq!(out.len(), reply.len());
    out
}

#[test]
fn command_docs_match_redis_byte_for_byte() {
    let Some(oracle) = Oracle::start() else { return };
    let ours = redoubt_target(&[]).unwrap();
    let mut problems = Vec::new();
    for resp3 in [false, true] {
        let mut r = Frames::connect(ours.addr());
        let mut o = Frames::connect(oracle.addr);
        if resp3 {
            r.cmd(&["HELLO", "3"]);
            o.cmd(&["HELLO", "3"]);
        }
        for name in
            ["get", "set", "blpop", "zadd", "client", "client|kill", "scan", "command", "hello", "config", "expire"]
        {
            let a = subcommands_sorted(&r.cmd(&["COMMAND", "DOCS", name]));
            let b = subcommands_sorted(&o.cmd(&["COMMAND", "DOCS", name]));
            if a != b {
                let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
                let from = at.saturating_sub(60);
                problems.push(format!(
                    "COMMAND DOCS {name} (RESP{}): {} vs {} bytes, first difference at byte {at}:\n  redoubt: {:?}\n  redis:   {:?}",
                    if resp3 { 3 } else { 2 },
                    a.len(),
                    b.len(),
                    String::from_utf8_lossy(&a[from..(at + 60).min(a.len())]),
                    String::from_utf8_lossy(&b[from..(at + 60).min(b.len())]),
                ));
            }
        }
        // Several names in one call, and an unknown one (left out).
        let a = r.cmd(&["COMMAND", "DOCS", "get", "nosuchcommand", "set"]);
        let b = o.cmd(&["COMMAND", "DOCS", "get", "nosuchcommand", "set"]);
        if a != b {
            problems.push(format!("COMMAND DOCS get nosuchcommand set (RESP{}) differs", if resp3 { 3 } else { 2 }));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// 12. MONITOR
// ---------------------------------------------------------------------------------------

/// Checks one MONITOR line: `+<secs>.<usecs> [<db> <addr>] <args>\r\n`; returns the rest
/// after the timestamp.
fn monitor_line(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line).into_owned();
    let body =
        s.strip_prefix('+').and_then(|b| b.strip_suffix("\r\n")).unwrap_or_else(|| panic!("not a status line: {s:?}"));
    let (ts, rest) = body.split_once(' ').unwrap_or_else(|| panic!("no timestamp: {s:?}"));
    let (secs, usecs) = ts.split_once('.').unwrap_or_else(|| panic!("bad timestamp {ts:?}"));
    assert!(secs.len() >= 10 && secs.bytes().all(|c| c.is_ascii_digit()), "bad seconds {ts:?}");
    assert!(usecs.len() == 6 && usecs.bytes().all(|c| c.is_ascii_digit()), "bad microseconds {ts:?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let secs: u64 = secs.parse().unwrap();
    assert!(secs.abs_diff(now) < 60, "timestamp {secs} far from now {now}");
    rest.to_string()
}

/// Reads lines from a raw connection until `n` complete lines arrived.
fn read_lines(c: &mut common::Raw, n: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        buf.extend(c.read_for(Duration::from_millis(20)));
        let count = buf.windows(2).filter(|w| w == b"\r\n").count();
        if count >= n {
            break;
        }
        assert!(Instant::now() < deadline, "only {count} of {n} lines: {:?}", String::from_utf8_lossy(&buf));
    }
    let mut lines = Vec::new();
    let mut start = 0;
    for i in 0..buf.len().saturating_sub(1) {
        if &buf[i..i + 2] == b"\r\n" && i + 2 > start {
            lines.push(buf[start..i + 2].to_vec());
            start = i + 2;
        }
    }
    assert_eq!(start, buf.len(), "partial line left: {:?}", String::from_utf8_lossy(&buf[start..]));
    lines
}

fn monitor(t: &Target) {
    let mut m = t.raw();
    m.send(b"MONITOR\r\n").expect(b"+OK\r\n");
    let mut c = t.raw();
    let port = c.s.local_addr().unwrap().port();
    c.send(&mbulk(&["set", "k", "v"])).expect(b"+OK\r\n");
    c.send(&mbulk(&["CONFIG", "GET", "maxmemory"]));
    let _ = c.read_for(Duration::from_millis(50));
    c.send(&mbulk(&["SELECT", "3"])).expect(b"+OK\r\n");
    c.send(&mbulk(&[b"SET".as_slice(), b"a b", b"q\"\\\x01\n"])).expect(b"+OK\r\n");
    c.send(b"get k\r\n").expect(b"$-1\r\n");
    let lines = read_lines(&mut m, 4);
    let rest: Vec<String> = lines.iter().map(|l| monitor_line(l)).collect();
    let want = vec![
        format!("[0 127.0.0.1:{port}] \"set\" \"k\" \"v\""),
        // CONFIG (admin) is not shown.
        // The db is the one after the command ran.
        format!("[3 127.0.0.1:{port}] \"SELECT\" \"3\""),
        format!("[3 127.0.0.1:{port}] \"SET\" \"a b\" \"q\\\"\\\\\\x01\\n\""),
        format!("[3 127.0.0.1:{port}] \"get\" \"k\""),
    ];
    let mut errs = Vec::new();
    soft_eq!(errs, rest, want, "MONITOR lines");
    // The monitor is in a mode of its own but still answers QUIT.
    m.send(b"QUIT\r\n");
    let tail = m.read_for(Duration::from_millis(300));
    assert!(String::from_utf8_lossy(&tail).contains("+OK\r\n"), "{:?}", String::from_utf8_lossy(&tail));
    finish(t, errs);
}
scenario!(monitor);
