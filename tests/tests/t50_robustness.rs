//! t50: hostile clients. Nothing a client sends may panic the server, grow its memory
//! without bound, or hang it.
//!
//! * [`every_command_survives_hostile_arguments`]: random-driven (seeded) fuzzing of every
//!   command in redoubt's own `COMMAND LIST` (and every subcommand from `COMMAND INFO`),
//!   round-robin so each gets its share, with hostile arguments: i64 edges, 2^32, 2^62, 2^63,
//!   `inf`/`nan`/`1e400`/`0x10`/`""`, strings up to 100 KB, repeated keys, option keywords in
//!   odd orders (`LIMIT 0 -1`, `COUNT -5`, `WITHSCORES` twice, `BYSCORE` with `BYLEX`),
//!   against keys of every type in small and big encodings, plus `MULTI` blocks, `COMMAND
//!   GETKEYS` of hostile command lines, `RESTORE` of crafted payloads with a valid checksum,
//!   and blocking commands parked on a second connection and then served by pushes. The
//!   connection alternates between RESP2 and RESP3; a MONITOR and a `PSUBSCRIBE *`
//!   connection (keyspace notifications on) read everything on the side. After every step
//!   the reply must be one well-formed RESP frame, the same connection must answer `PING`
//!   with `PONG` (a dropped connection is a handler panic: the server catches nothing),
//!   nothing may appear on the server's stderr (panics of other tasks), no reply may take
//!   more than 5 s, and the server's peak RSS may not jump. Findings are collected (not
//!   just the first), deduplicated by panic site, re-run alone on a fresh keyspace (or after
//!   the steps before them, shrunk), and reported together at the end.
//! * [`memory_bomb_probes`]: specific argument vectors known to tempt implementations into
//!   giant allocations (negative RANDMEMBER counts, huge ranges and offsets, SETRANGE/SETBIT/
//!   BITFIELD/APPEND past `proto-max-bulk-len`, LCS, SORT LIMIT, crafted RESTORE counts,
//!   stalled `*2147483647` and `$536870912` headers), plus integer edges in expiry and
//!   blocking timeouts; each is measured with `INFO memory` `used_memory` and /proc peak RSS
//!   and address space, and must stay within +64 MB.
//! * [`garbage_over_the_wire`]: random bytes, truncated frames, nested arrays, RESP3 types
//!   in requests, inline commands with unbalanced quotes, bogus lengths; what comes back must
//!   be well-formed RESP, the server must not panic, and other clients must keep being
//!   served.
//!
//! The server under test runs in a child process: this test binary re-executed as the
//! ignored test [`child_server`], not in-process like `start_redoubt`. A failed allocation
//! aborts a whole process and a handler stuck in a loop holds the keyspace lock forever, so
//! an in-process server would take the test, and every finding after the first, down with
//! it. The child runs under `ulimit -v` (4 GiB) so that an absurd reservation fails at once
//! instead of eating the machine; its stderr (panic messages with file:line) goes to a log
//! the tests read after every step. It installs redoubt's counting allocator, as the
//! `redoubt` binary does, so `used_memory` is exact.
//!
//! Environment: `T50_FUZZ_SECS` (fuzz loop, default 40; re-running and shrinking findings
//! adds 8 to 15 s more), `T50_SEED` (a number or `random`; fixed by default),
//! `T50_CMD_TIMEOUT_MS` (5000), `T50_GARBAGE_SECS` (8), `T50_TRACE=1` (print every step).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use redoubt_client::Client;
use redoubt_protocol::client_codec::{decode_reply, encode_command};
use redoubt_tests::{quote_arg, TempDir, Value};

#[global_allocator]
static ALLOC: redoubt_server::memory::CountingAlloc = redoubt_server::memory::CountingAlloc;

const MB: u64 = 1 << 20;

/// One command line.
type Argv = Vec<Vec<u8>>;
/// What the fuzzer sends in one go: one command line, or several in one write.
type Step = Vec<Argv>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn trace() -> bool {
    std::env::var("T50_TRACE").is_ok_and(|v| v == "1")
}

fn seed() -> u64 {
    match std::env::var("T50_SEED") {
        Ok(v) if v == "random" => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        }
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("T50_SEED must be a number or `random`, not {v:?}")),
        Err(_) => 0x7E50_0050,
    }
}

fn cmd_timeout() -> Duration {
    Duration::from_millis(env_u64("T50_CMD_TIMEOUT_MS", 5000))
}

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').filter(|w| !w.is_empty()).map(|w| w.as_bytes().to_vec()).collect()
}

fn render(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|a| {
            if a.len() > 48 {
                let head = quote_arg(&a[..16]);
                format!("{}<..{} bytes>", head.trim_end_matches('"'), a.len())
            } else {
                quote_arg(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn render_step(step: &[Vec<Vec<u8>>]) -> String {
    step.iter().map(|c| render(c)).collect::<Vec<_>>().join(" ; ")
}

fn short(v: &Value) -> String {
    let s = v.render();
    if s.len() > 160 {
        format!("{}... ({} chars)", s.chars().take(160).collect::<String>(), s.len())
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------
// the server process
// ---------------------------------------------------------------------------------------

const CHILD_ENV: &str = "T50_CHILD_SERVER";
/// Address-space limit of the server process.
const AS_LIMIT: u64 = 4 << 30;

/// Not a test: the server process the other tests start (this binary re-executed with
/// `T50_CHILD_SERVER=<port file>\x1f<arg>\x1f<arg>...`). Runs until its stdin closes.
#[test]
#[ignore = "helper process for the t50 tests; does nothing unless T50_CHILD_SERVER is set"]
fn child_server() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.split('\x1f').map(str::to_string);
    let portfile = PathBuf::from(parts.next().expect("port file"));
    let args: Vec<String> = parts.collect();
    redoubt_server::memory::mark_installed();
    let config = redoubt_server::Config::from_args(&args).unwrap_or_else(|e| panic!("config {args:?}: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("t50-server")
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt.block_on(redoubt_server::start("127.0.0.1:0", config)).expect("start redoubt");
    let tmp = portfile.with_extension("tmp");
    std::fs::write(&tmp, handle.addr.port().to_string()).expect("write port file");
    std::fs::rename(&tmp, &portfile).expect("rename port file");
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    // Not a return: dropping `handle` and `rt` is not what we test here.
    std::process::exit(0);
}

#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    peak: u64,
}

/// redoubt in a child process (see the module docs).
struct Server {
    child: Child,
    _stdin: Option<ChildStdin>,
    addr: SocketAddr,
    pid: u32,
    log: PathBuf,
    args: Vec<String>,
    _dir: TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::spawn(args.iter().map(|s| s.to_string()).collect())
    }

    fn spawn(args: Vec<String>) -> Server {
        let dir = TempDir::new("redoubt-t50");
        let portfile = dir.path().join("port");
        let log = dir.path().join("server.stderr");
        let mut spec = portfile.to_string_lossy().into_owned();
        let dir_s = dir.path().to_string_lossy().into_owned();
        // In memory: this suite is about hostile input and memory bounds, not disks.
        for a in
            ["--dir".to_string(), dir_s, "--durability".into(), "none".into()].into_iter().chain(args.iter().cloned())
        {
            spec.push('\x1f');
            spec.push_str(&a);
        }
        let exe = std::env::current_exe().expect("current exe");
        let err = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("ulimit -v {} && exec \"$0\" \"$@\"", AS_LIMIT / 1024))
            .arg(&exe)
            .args(["child_server", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &spec)
            .env("MALLOC_ARENA_MAX", "2")
            .env("RUST_BACKTRACE", "0")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn the server process");
        let stdin = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&portfile).ok().and_then(|s| s.trim().parse::<u16>().ok()) {
                break p;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "server process exited at startup ({st}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server process did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let pid = child.id();
        Server { child, _stdin: stdin, addr: SocketAddr::from(([127, 0, 0, 1], port)), pid, log, args, _dir: dir }
    }

    fn restart(&mut self) {
        let args = self.args.clone();
        *self = Server::spawn(args);
    }

    /// The exit status, if the process has died.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    fn log_from(&self, off: u64) -> String {
        let b = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(b.get(off as usize..).unwrap_or_default()).into_owned()
    }

    fn mem(&self) -> Mem {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Mem { rss: field("VmRSS:"), hwm: field("VmHWM:"), peak: field("VmPeak:") }
    }

    /// Resets the peak-RSS watermark (VmHWM) to the current RSS.
    fn reset_hwm(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `file:line:col: message` for each panic in a stderr excerpt, and allocation failures.
fn panic_sites(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(p) = l.find("panicked at ") {
            let rest = l[p + "panicked at ".len()..].trim_end_matches(':');
            let msg = lines.get(i + 1).copied().unwrap_or("");
            out.push(format!("{rest}: {msg}"));
        } else if l.contains("memory allocation of") || l.contains("capacity overflow") {
            out.push(l.trim().to_string());
        }
    }
    out
}

fn site_key(site: &str) -> String {
    // "memory allocation of 6554648576 bytes failed": one bug whatever the size.
    if site.starts_with("memory allocation of") {
        return "memory allocation failed".into();
    }
    // "server/src/cmd/lists.rs:512:21: msg" -> "server/src/cmd/lists.rs:512:21"
    let mut parts = site.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(f), Some(l), Some(c)) if l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty() => format!("{f}:{l}:{c}"),
        _ => site.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// a blocking client with a per-command timeout
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum CliErr {
    Timeout,
    Closed(String),
    Malformed(String),
}

struct Cli {
    rt: tokio::runtime::Runtime,
    c: Option<Client>,
}

impl Cli {
    fn try_connect(addr: SocketAddr) -> Option<Cli> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let c = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), Client::connect(addr)).await })
            .ok()?
            .ok()?;
        Some(Cli { rt, c: Some(c) })
    }

    fn connect(addr: SocketAddr) -> Cli {
        Cli::try_connect(addr).unwrap_or_else(|| panic!("cannot connect to {addr}"))
    }

    fn call(&mut self, argv: &[Vec<u8>], t: Duration) -> Result<Value, CliErr> {
        let Some(c) = self.c.as_mut() else { return Err(CliErr::Closed("not connected".into())) };
        let r = self.rt.block_on(async { tokio::time::timeout(t, c.cmd(argv)).await });
        self.judge(r)
    }

    fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>], t: Duration) -> Result<Vec<Value>, CliErr> {
        let Some(c) = self.c.as_mut() else { return Err(CliErr::Closed("not connected".into())) };
        let r = self.rt.block_on(async { tokio::time::timeout(t, c.pipeline(cmds)).await });
        self.judge(r)
    }

    fn judge<T>(&mut self, r: Result<redoubt_client::Result<T>, tokio::time::error::Elapsed>) -> Result<T, CliErr> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Err(_) => {
                self.c = None;
                Err(CliErr::Timeout)
            }
            Ok(Err(redoubt_client::Error::Protocol(e))) => {
                self.c = None;
                Err(CliErr::Malformed(e))
            }
            Ok(Err(e)) => {
                self.c = None;
                Err(CliErr::Closed(e.to_string()))
            }
        }
    }

    /// Sends a command without waiting for its reply.
    fn send(&mut self, argv: &[Vec<u8>]) -> Result<(), CliErr> {
        let Some(c) = self.c.as_mut() else { return Err(CliErr::Closed("not connected".into())) };
        let r =
            self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), c.send_raw(&mbulk(argv))).await });
        self.judge(r)
    }

    /// Reads one reply.
    fn read(&mut self, t: Duration) -> Result<Value, CliErr> {
        let Some(c) = self.c.as_mut() else { return Err(CliErr::Closed("not connected".into())) };
        let r = self.rt.block_on(async { tokio::time::timeout(t, c.read_reply()).await });
        self.judge(r)
    }

    fn must(&mut self, line: &str) -> Value {
        self.call(&words(line), Duration::from_secs(10)).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    /// Switches to RESP3 (`HELLO 3`); false if that failed.
    fn hello3(&mut self) -> bool {
        let Some(c) = self.c.as_mut() else { return false };
        let r = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), c.hello3()).await });
        matches!(self.judge(r), Ok(v) if !v.is_error())
    }

    fn ping(&mut self, t: Duration) -> bool {
        matches!(self.call(&words("PING"), t), Ok(Value::Simple(s)) if s == b"PONG")
    }

    fn try_used_memory(&mut self) -> Option<u64> {
        let v = self.call(&words("INFO memory"), Duration::from_secs(5)).ok()?;
        let text = String::from_utf8_lossy(v.as_bytes()?).into_owned();
        text.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok())
    }

    fn used_memory(&mut self) -> u64 {
        let v = self.call(&words("INFO memory"), Duration::from_secs(10));
        let text = match &v {
            Ok(v) => String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned(),
            Err(e) => panic!("INFO memory: {e:?}"),
        };
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no used_memory in INFO memory: {text}"))
    }
}

// ---------------------------------------------------------------------------------------
// running one step with every check
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Failure {
    kind: &'static str,
    detail: String,
    site: Option<String>,
}

impl Failure {
    fn same_bug(&self, orig: &Failure) -> bool {
        self.kind == orig.kind
            && (orig.site.is_none() || self.site.as_deref().map(site_key) == orig.site.as_deref().map(site_key))
    }
}

struct Runner {
    srv: Server,
    cli: Cli,
    /// The connection speaks RESP3 (after `HELLO 3`).
    resp3: bool,
    timeout: Duration,
    /// Largest peak-RSS rise one step may cause.
    rss_bound: u64,
    /// Largest address-space (VmPeak) rise one step may cause.
    vm_bound: u64,
}

impl Runner {
    fn new(args: &[&str], rss_bound: u64, vm_bound: u64) -> Runner {
        let srv = Server::start(args);
        let cli = Cli::connect(srv.addr);
        Runner { srv, cli, resp3: false, timeout: cmd_timeout(), rss_bound, vm_bound }
    }

    fn reconnect(&mut self) {
        self.cli = Cli::connect(self.srv.addr);
        if self.resp3 {
            assert!(self.cli.hello3(), "HELLO 3 failed");
        }
    }

    /// Brings the server back after a failure: a new process after a crash or a server-wide
    /// hang, a new connection otherwise.
    fn recover(&mut self, f: &Failure) {
        // After a panic elsewhere (a background task) the process is not what it was.
        if matches!(f.kind, "CRASH" | "SERVER-HANG" | "PANIC") || self.srv.exited().is_some() {
            self.srv.restart();
        }
        self.reconnect();
    }

    /// Runs one step (one command, or several in one write) and checks: well-formed replies
    /// within the timeout, the connection still answering PING in step, nothing on the
    /// server's stderr, no peak-RSS or address-space jump.
    fn step(&mut self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Value>, Failure> {
        let log0 = self.srv.log_len();
        self.srv.reset_hwm();
        let m0 = self.srv.mem();
        let out = if cmds.len() == 1 {
            self.cli.call(&cmds[0], self.timeout).map(|v| vec![v])
        } else {
            self.cli.pipeline(cmds, self.timeout)
        };
        let replies = match out {
            Ok(v) => v,
            Err(e) => return Err(self.diagnose(e, log0, "")),
        };
        let mut pong = self.cli.call(&words("PING"), self.timeout);
        if matches!(&pong, Ok(Value::Simple(s)) if s == b"QUEUED") {
            // Left inside MULTI: run what was queued, then ask again.
            match self.cli.call(&words("EXEC"), self.timeout) {
                // Nil: a WATCHed key changed (RESP3 null; RESP2 sends a null array).
                Ok(Value::Array(_) | Value::NilArray | Value::Nil | Value::Error(_)) => {}
                Ok(other) => {
                    return Err(Failure {
                        kind: "DESYNC",
                        detail: format!("EXEC answered {}", short(&other)),
                        site: None,
                    })
                }
                Err(e) => return Err(self.diagnose(e, log0, " (during the EXEC that closed a MULTI it opened)")),
            }
            pong = self.cli.call(&words("PING"), self.timeout);
        }
        match pong {
            Ok(Value::Simple(s)) if s == b"PONG" => {}
            Ok(other) => {
                return Err(Failure {
                    kind: "DESYNC",
                    detail: format!(
                        "the PING after it was answered with {} (an extra or missing reply frame)",
                        short(&other)
                    ),
                    site: None,
                })
            }
            Err(e) => return Err(self.diagnose(e, log0, " (on the PING after the reply)")),
        }
        let log = self.srv.log_from(log0);
        if !log.trim().is_empty() {
            let sites = panic_sites(&log);
            return Err(Failure {
                kind: "PANIC",
                detail: format!("the connection survived, but the server wrote to stderr: {}", excerpt(&log)),
                site: sites.first().cloned(),
            });
        }
        let m1 = self.srv.mem();
        if m1.hwm > m0.rss + self.rss_bound {
            return Err(Failure {
                kind: "MEMORY",
                detail: format!(
                    "peak RSS rose by {} MB during the step (bound {} MB)",
                    (m1.hwm - m0.rss) / MB,
                    self.rss_bound / MB
                ),
                site: None,
            });
        }
        if m1.peak > m0.peak + self.vm_bound {
            return Err(Failure {
                kind: "MEMORY",
                detail: format!(
                    "address space (VmPeak) rose by {} MB during the step (bound {} MB): a huge reservation",
                    (m1.peak - m0.peak) / MB,
                    self.vm_bound / MB
                ),
                site: None,
            });
        }
        Ok(replies)
    }

    fn diagnose(&mut self, e: CliErr, log0: u64, when: &str) -> Failure {
        match e {
            CliErr::Timeout => {
                let others = Cli::try_connect(self.srv.addr).is_some_and(|mut c| c.ping(Duration::from_secs(2)));
                if others {
                    Failure {
                        kind: "HANG",
                        detail: format!(
                            "no reply within {:?}{when}; other clients are still served (the connection is parked, e.g. blocked forever)",
                            self.timeout
                        ),
                        site: None,
                    }
                } else {
                    Failure {
                        kind: "SERVER-HANG",
                        detail: format!(
                            "no reply within {:?}{when}, and a new connection gets no PONG either",
                            self.timeout
                        ),
                        site: None,
                    }
                }
            }
            CliErr::Closed(msg) | CliErr::Malformed(msg) if self.wait_exit().is_some() => {
                let st = self.srv.exited().expect("exited");
                let log = self.srv.log_from(log0);
                Failure {
                    kind: "CRASH",
                    detail: format!("server process died ({st}){when}; client saw: {msg}; stderr: {}", excerpt(&log)),
                    site: panic_sites(&log).first().cloned(),
                }
            }
            CliErr::Closed(msg) => {
                std::thread::sleep(Duration::from_millis(30));
                let log = self.srv.log_from(log0);
                Failure {
                    kind: "DROPPED",
                    detail: format!("connection closed by the server{when} ({msg}); stderr: {}", excerpt(&log)),
                    site: panic_sites(&log).first().cloned(),
                }
            }
            CliErr::Malformed(msg) => {
                let log = self.srv.log_from(log0);
                Failure {
                    kind: "MALFORMED",
                    detail: format!("reply is not well-formed RESP{when}: {msg}"),
                    site: panic_sites(&log).first().cloned(),
                }
            }
        }
    }

    /// Gives a dying process a moment to be reaped.
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        for _ in 0..10 {
            if let Some(st) = self.srv.exited() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn excerpt(log: &str) -> String {
    let t = log.trim();
    if t.is_empty() {
        return "(nothing)".into();
    }
    let lines: Vec<&str> = t.lines().take(6).collect();
    let s = lines.join(" | ");
    if s.len() > 600 {
        format!("{}...", s.chars().take(600).collect::<String>())
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------
// the keyspace every step starts from
// ---------------------------------------------------------------------------------------

/// Keys of every type, small and big encodings. Names are what the generators draw from.
fn population() -> Step {
    let mut v: Step = Vec::new();
    let big_a = vec![b'a'; 10_000];
    let big_b = vec![b'b'; 5_000];
    let mut bigstr = Vec::with_capacity(100_000);
    let mut x: u32 = 12345;
    for _ in 0..100_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        bigstr.push((x >> 16) as u8);
    }
    for line in [
        "SET str hello-world",
        "SET int 12345",
        "SET float 3.14",
        "SET neg -5",
        "SET expiring v PX 600000",
        "RPUSH list a b c 1 2 3 -5 a",
        "HSET hash f1 v1 f2 v2 n 10 fl 1.5 a a",
        "SADD set a b c d",
        "SADD intset 1 2 3 -5 9223372036854775807 -9223372036854775808",
        "ZADD zset 1 a 2 b 3 c -inf ninf +inf pinf 0 z",
        "ZADD lexz 0 a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 k 0 l 0 m 0 n 0 o 0 p 0 q 0 r 0 s 0 t 0 u 0 v 0 w 0 x 0 y 0 z",
        "RPUSH {t}a x y",
        "SADD {t}b x",
    ] {
        v.push(words(line));
    }
    v.push(vec![b"SET".to_vec(), b"bigstr".to_vec(), bigstr]);
    v.push(vec![b"SET".to_vec(), b"bits".to_vec(), b"\xff\x00\x0f\xf0abc\x80".to_vec()]);
    v.push(vec![b"SET".to_vec(), b"empty".to_vec(), Vec::new()]);
    v.push(vec![b"SET".to_vec(), vec![b'a'; 200], b"v".to_vec()]);
    let mut biglist = words("RPUSH biglist");
    let mut bighash = words("HSET bighash");
    let mut bigset = words("SADD bigset");
    let mut bigzset = words("ZADD bigzset");
    for i in 0..1000 {
        biglist.push(i.to_string().into_bytes());
        bighash.push(format!("f{i}").into_bytes());
        bighash.push(format!("v{i}").into_bytes());
        bigset.push(format!("m{i}").into_bytes());
        bigzset.push(format!("{}", i as f64 / 4.0 - 100.0).into_bytes());
        bigzset.push(format!("m{i}").into_bytes());
    }
    v.extend([biglist, bighash, bigset, bigzset]);
    v.push(vec![b"RPUSH".to_vec(), b"fatlist".to_vec(), big_a.clone(), b"x".to_vec(), big_b.clone()]);
    v.push(vec![b"HSET".to_vec(), b"fathash".to_vec(), b"f".to_vec(), big_a.clone(), b"g".to_vec(), b"1".to_vec()]);
    v.push(vec![b"SADD".to_vec(), b"fatset".to_vec(), big_a.clone(), b"a".to_vec(), b"b".to_vec()]);
    v.push(vec![b"ZADD".to_vec(), b"fatzset".to_vec(), b"1".to_vec(), big_a, b"2".to_vec(), b"x".to_vec()]);
    v
}

const KEYS: &[&str] = &[
    "str", "int", "float", "neg", "bigstr", "bits", "empty", "expiring", "list", "biglist", "fatlist", "hash",
    "bighash", "fathash", "set", "intset", "bigset", "fatset", "zset", "bigzset", "lexz", "fatzset", "{t}a", "{t}b",
    "missing", "dst", "restored",
];

/// Config parameters the fuzzer may set to hostile values (restored on every repopulate).
/// Others (port, timeout, requirepass, maxclients, proto-max-bulk-len, dir, ...) would
/// break the harness itself, not the server.
#[rustfmt::skip]
const SAFE_CONFIG: &[&str] = &[
    "hz", "maxmemory", "maxmemory-policy", "maxmemory-samples", "slowlog-log-slower-than", "slowlog-max-len",
    "latency-monitor-threshold", "notify-keyspace-events", "lfu-log-factor", "lfu-decay-time", "active-expire-effort",
    "hash-max-listpack-entries", "hash-max-listpack-value", "set-max-intset-entries", "zset-max-listpack-entries",
    "zset-max-listpack-value", "list-max-listpack-size", "busy-reply-threshold", "lazyfree-lazy-user-del",
    "activerehashing",
];

#[rustfmt::skip]
const UNSAFE_CONFIG: &[&str] = &[
    "port", "bind", "requirepass", "timeout", "maxclients", "proto-max-bulk-len", "client-query-buffer-limit",
    "client-output-buffer-limit", "dir", "dbfilename", "save", "appendonly", "appendfilename", "logfile", "pidfile",
    "daemonize", "enable-debug-command", "io-threads", "tcp-backlog", "databases", "protected-mode", "loglevel",
];

// ---------------------------------------------------------------------------------------
// hostile arguments
// ---------------------------------------------------------------------------------------

#[rustfmt::skip]
const NUMS: &[&str] = &[
    "-9223372036854775808", "9223372036854775807", "-9223372036854775807", "9223372036854775806", "-1", "0", "1", "2",
    "3", "5", "10", "100", "-2", "-5", "-100", "4294967295", "4294967296", "-4294967296", "2147483647", "2147483648",
    "-2147483648", "-2147483649", "9223372036854775808", "-9223372036854775809", "18446744073709551615",
    "18446744073709551616", "4611686018427387904", "-4611686018427387904", "4611686018427387903",
    "-4611686018427387903", "536870911", "536870912", "-536870912", "34359738367", "34359738368", "inf", "-inf", "+inf",
    "nan", "-nan", "NaN", "1e400", "-1e400", "1e308", "1.7976931348623157e308", "4.9e-324", "0x10", "", " 1", "1 ",
    "1.5", "-0", "-0.0", "+1", "01", "1e3", "1e-3", " ", "99999999999999999999999999999", "0.0001", "1000000",
    "-1000000",
];

#[rustfmt::skip]
const RANGES: &[&str] = &[
    "(1", "[a", "(a", "-", "+", "-inf", "+inf", "(inf", "(-inf", "[", "(", "[m1", "(m500", "1", "(nan", "nan", "0",
    "-0", "(0", "[z", "(z", "((1", "[-", "+inf", "(9223372036854775807", "1e400", "(1e400",
];

const LEX: &[&str] = &["-", "+", "[a", "(a", "[m1", "(m500", "(z", "[z", "[", "(", "[\u{7f}", "[0", "(-", "[+"];

#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "LIMIT", "COUNT", "WITHSCORES", "BYSCORE", "BYLEX", "REV", "MATCH", "TYPE", "STORE", "BY", "GET", "SET", "WEIGHTS",
    "AGGREGATE", "SUM", "MIN", "MAX", "RANK", "MAXLEN", "EX", "PX", "EXAT", "PXAT", "KEEPTTL", "PERSIST", "NX", "XX",
    "GT", "LT", "CH", "INCR", "INCRBY", "ALPHA", "ASC", "DESC", "IDX", "LEN", "MINMATCHLEN", "WITHMATCHLEN", "OVERFLOW",
    "WRAP", "SAT", "FAIL", "LEFT", "RIGHT", "BEFORE", "AFTER", "REPLACE", "ABSTTL", "IDLETIME", "FREQ", "DB",
    "WITHVALUES", "NOVALUES", "BIT", "BYTE", "AND", "OR", "XOR", "NOT", "ID", "ASYNC", "SYNC", "SAMPLES", "FILTERBY",
    "PATTERN", "ACLCAT", "MODULE", "ON", "OFF", "YES", "NO", "normal", "pubsub", "master", "replica", "string", "list",
    "hash", "zset", "set", "nosort", "#", "*", "*->f1", "h*->f", "HELP", "all", "default", "everything", "memory",
    "keyspace", "server", "SETNAME", "AUTH", "LIB-NAME", "LIB-VER", "SCHEDULE", "FLUSH", "RESET", "DOCTOR",
];

const MEMBERS: &[&str] = &[
    "a", "b", "c", "d", "z", "x", "y", "1", "2", "3", "-5", "0", "10", "m0", "m1", "m500", "m999", "f0", "f1", "f2",
    "f999", "n", "fl", "g", "ninf", "pinf", "v1",
];

#[rustfmt::skip]
const PATTERNS: &[&str] = &[
    "*", "?", "[", "[a-", "[^", "\\", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", "[[[[[", "h*llo", "\\*", "[z-a]", "*\\", "[^]",
    "[a-z", "*?*?*?*?*?*?*?*?*?x", "m*", "f[0-9]*", "{t}*",
];

#[rustfmt::skip]
const TYPES: &[&str] = &[
    "u8", "i8", "u1", "i1", "u63", "i64", "u64", "i65", "u0", "i0", "x8", "u", "i", "u-1", "i9223372036854775807",
    "i4294967296", "U8", "I16",
];

#[rustfmt::skip]
const OFFSETS: &[&str] = &[
    "#0", "#1", "#-1", "#9223372036854775807", "#4294967296", "#536870911", "4294967295", "4294967296", "-1", "0", "8",
    "#", "##1", "9223372036854775807", "34359738367",
];

#[rustfmt::skip]
const GARBAGE: &[&[u8]] = &[
    b"\0", b"\r\n", b"\xff\xfe\xfd", b"\r", b"\n", b"\"", b"'", b"\\", b"%s%n%x", "é".as_bytes(),
    "\u{1F600}".as_bytes(), b"\t", b"\x7f", b"$-1", b"*-1", b"\r\n*1\r\n$4\r\nPING\r\n",
];

/// Timeouts a blocking command may get: none of them may block for long (a hostile one
/// must be refused, not turned into "forever").
#[rustfmt::skip]
const SAFE_TIMEOUTS: &[&str] = &[
    "0.01", "0.05", "-1", "-0.5", "nan", "inf", "-inf", "+inf", "abc", "", "1e400", "9223372036854775807",
    "-9223372036854775808", "18446744073709551616", "1e-300", "1e-400", "4.9e-324", "0.0000001",
];

/// WAIT's timeout is in milliseconds.
const SAFE_WAIT_TIMEOUTS: &[&str] =
    &["10", "-1", "abc", "9223372036854775807", "1.5", "", "nan", "-9223372036854775808"];

/// Option groups appended in odd places and orders. `$x` as in [`TEMPLATES`].
#[rustfmt::skip]
const CHUNKS: &[&str] = &[
    "LIMIT $n $n", "LIMIT 0 -1", "COUNT $n", "COUNT -5", "WITHSCORES", "WITHSCORES WITHSCORES", "BYSCORE", "BYLEX",
    "BYSCORE BYLEX", "REV", "MATCH $p", "TYPE $w", "STORE $k", "BY $p", "GET $p", "GET #", "WEIGHTS $n $n",
    "AGGREGATE $w", "RANK $n", "MAXLEN $n", "EX $n", "PX $n", "EXAT $n", "PXAT $n", "KEEPTTL", "PERSIST", "NX", "XX",
    "GT", "LT", "CH", "INCR", "ALPHA", "ASC", "DESC", "IDX", "LEN", "MINMATCHLEN $n", "WITHMATCHLEN", "OVERFLOW $w",
    "GET $T $o", "SET $T $o $n", "INCRBY $T $o $n", "LEFT", "RIGHT", "BEFORE $m", "AFTER $m", "REPLACE", "ABSTTL",
    "IDLETIME $n", "FREQ $n", "DB $n", "WITHVALUES", "NOVALUES", "BIT", "BYTE", "MIN", "MAX", "ID $n", "ASYNC", "SYNC",
    "SAMPLES $n", "FILTERBY PATTERN $p", "FILTERBY ACLCAT $w", "SETNAME $v", "AUTH $v $v", "COUNT $n COUNT $n",
    "LIMIT $n $n LIMIT $n $n",
];

/// Command lines with placeholders: `$k` key, `$n` hostile number, `$s` score or lex range,
/// `$m` member, `$v` value, `$w` keyword, `$p` glob pattern, `$l` long string, `$t` blocking
/// timeout, `$T` bitfield type, `$o` bitfield offset, `$C` a config parameter, `$i` a small
/// integer, `$b` a bit (mostly 0 or 1), `$L` a lex range bound, `$a` anything.
/// A template belongs to the command named by its first word (or first two, for
/// containers).
#[rustfmt::skip]
const TEMPLATES: &[&str] = &[
    "SET $k $v EX $n", "SET $k $v PX $n GET", "SET $k $v EXAT $n KEEPTTL NX", "SET $k $v PXAT $n XX GET",
    "SET $k $v KEEPTTL EX $n", "GETEX $k EX $n", "GETEX $k PXAT $n PERSIST", "GETEX $k EXAT $n", "SETEX $k $n $v",
    "PSETEX $k $n $v", "SETRANGE $k $n $v", "GETRANGE $k $n $n", "SUBSTR $k $n $n", "INCRBY $k $n", "DECRBY $k $n",
    "INCRBYFLOAT $k $n", "APPEND $k $l", "LCS $k $k IDX MINMATCHLEN $n WITHMATCHLEN", "LCS $k $k LEN",
    "MSET $k $v $k $v", "MSETNX $k $v $k", "MGET $k $k $k", "GETSET $k $v", "GETDEL $k", "INCR $k", "DECR $k",
    // bits
    "SETBIT $k $n $n", "GETBIT $k $n", "BITCOUNT $k $n $n", "BITCOUNT $k $n $n BIT", "BITPOS $k $n $n $n BIT",
    "BITPOS $k $n $n", "BITOP $w $k $k $k", "BITOP NOT $k $k", "BITOP AND $k $k $k $k", "BITFIELD $k GET $T $o",
    "BITFIELD $k SET $T $o $n", "BITFIELD $k INCRBY $T $o $n", "BITFIELD $k OVERFLOW $w INCRBY $T $o $n GET $T $o",
    "BITFIELD_RO $k GET $T $o GET $T $o",
    // lists
    "LRANGE $k $n $n", "LPOS $k $m RANK $n", "LPOS $k $m COUNT $n MAXLEN $n", "LPOS $k $m RANK $n COUNT $n MAXLEN $n",
    "LINSERT $k BEFORE $m $v", "LINSERT $k AFTER $m $v", "LINSERT $k $w $m $v", "LSET $k $n $v", "LREM $k $n $m",
    "LTRIM $k $n $n", "LINDEX $k $n", "LPOP $k $n", "RPOP $k $n", "LPUSH $k $v $v", "RPUSHX $k $v",
    "LMOVE $k $k LEFT RIGHT", "LMOVE $k $k $w $w", "RPOPLPUSH $k $k", "LMPOP $n $k $k LEFT COUNT $n",
    "LMPOP $n $k RIGHT", "LMPOP 1 $k $w COUNT $n COUNT $n", "BLPOP $k $k $t", "BRPOP $k $t",
    "BLMOVE $k $k LEFT RIGHT $t", "BRPOPLPUSH $k $k $t", "BLMPOP $t $n $k LEFT COUNT $n",
    // hashes
    "HRANDFIELD $k $n", "HRANDFIELD $k $n WITHVALUES", "HINCRBY $k $m $n", "HINCRBYFLOAT $k $m $n",
    "HSCAN $k $n MATCH $p COUNT $n", "HSCAN $k $n COUNT $n NOVALUES", "HSET $k $m $v $m $v", "HSETNX $k $m $v",
    "HMGET $k $m $m", "HSTRLEN $k $m", "HDEL $k $m $m",
    // sets
    "SRANDMEMBER $k $n", "SPOP $k $n", "SSCAN $k $n MATCH $p COUNT $n", "SINTERCARD $n $k $k LIMIT $n",
    "SMOVE $k $k $m", "SMISMEMBER $k $m $m", "SADD $k $m $v", "SINTERSTORE $k $k $k", "SUNIONSTORE $k $k $k",
    "SDIFFSTORE $k $k $k", "SDIFF $k $k",
    // zsets
    "ZRANGE $k $n $n", "ZRANGE $k $n $n WITHSCORES", "ZRANGE $k $s $s BYSCORE LIMIT $n $n",
    "ZRANGE $k $s $s BYLEX REV LIMIT $n $n", "ZRANGE $k $s $s BYSCORE REV LIMIT $n $n WITHSCORES",
    "ZRANGESTORE $k $k $s $s BYSCORE LIMIT $n $n", "ZRANGESTORE $k $k $n $n",
    "ZRANGEBYSCORE $k $s $s WITHSCORES LIMIT $n $n", "ZREVRANGEBYSCORE $k $s $s LIMIT $n $n",
    "ZRANGEBYLEX $k $s $s LIMIT $n $n", "ZREVRANGEBYLEX $k $s $s", "ZREVRANGE $k $n $n WITHSCORES",
    "ZADD $k $w $w $s $m", "ZADD $k INCR $s $m", "ZADD $k GT CH $s $m $s $m", "ZADD $k NX XX $s $m", "ZINCRBY $k $s $m",
    "ZRANDMEMBER $k $n", "ZRANDMEMBER $k $n WITHSCORES", "ZUNIONSTORE $k $n $k $k WEIGHTS $n $n AGGREGATE $w",
    "ZINTERSTORE $k $n $k $k", "ZDIFFSTORE $k $n $k $k", "ZUNION $n $k $k WITHSCORES",
    "ZINTER $n $k $k WEIGHTS $n AGGREGATE $w WITHSCORES", "ZDIFF $n $k $k WITHSCORES", "ZMPOP $n $k MIN COUNT $n",
    "ZMPOP $n $k $k MAX", "BZMPOP $t $n $k MAX COUNT $n", "ZPOPMIN $k $n", "ZPOPMAX $k $n", "BZPOPMIN $k $t",
    "BZPOPMAX $k $k $t", "ZREMRANGEBYRANK $k $n $n", "ZREMRANGEBYSCORE $k $s $s", "ZREMRANGEBYLEX $k $s $s",
    "ZCOUNT $k $s $s", "ZLEXCOUNT $k $s $s", "ZINTERCARD $n $k $k LIMIT $n", "ZSCAN $k $n MATCH $p COUNT $n",
    "ZRANK $k $m", "ZREVRANK $k $m", "ZMSCORE $k $m $m", "ZSCORE $k $m", "ZREM $k $m",
    // keys
    "EXPIRE $k $n", "EXPIRE $k $n $w", "PEXPIRE $k $n NX", "EXPIREAT $k $n GT", "PEXPIREAT $k $n LT",
    "SCAN $n MATCH $p COUNT $n TYPE $w", "SCAN $n COUNT $n", "KEYS $p", "COPY $k $k DB $n REPLACE", "COPY $k $k",
    "MOVE $k $n", "SWAPDB $n $n", "SELECT $n", "RENAME $k $k", "RENAMENX $k $k", "OBJECT ENCODING $k", "OBJECT FREQ $k",
    "OBJECT IDLETIME $k", "MEMORY USAGE $k SAMPLES $n", "TYPE $k", "TTL $k", "DEL $k $k", "UNLINK $k",
    "EXISTS $k $k $k", "TOUCH $k $k", "DUMP $k", "RESTORE $k $n $v",
    "RESTORE $k $n $v REPLACE ABSTTL IDLETIME $n FREQ $n",
    // sort
    "SORT $k", "SORT $k LIMIT $n $n", "SORT $k BY $p LIMIT $n $n GET $p GET # ASC ALPHA STORE $k",
    "SORT $k BY nosort GET # GET $p", "SORT $k DESC ALPHA LIMIT $n $n", "SORT_RO $k BY $p GET $p LIMIT $n $n",
    "SORT $k STORE $k STORE $k",
    // server and connection
    "INFO $w", "INFO $w $w", "CONFIG GET $p", "CONFIG SET $C $n", "CONFIG SET $C $v $C $n", "LATENCY HISTORY $w",
    "LATENCY RESET $w", "SLOWLOG GET $n", "COMMAND INFO $w $w", "COMMAND DOCS $w", "COMMAND LIST FILTERBY PATTERN $p",
    "COMMAND LIST FILTERBY ACLCAT $w", "COMMAND LIST FILTERBY MODULE $w", "CLIENT LIST ID $n $n", "CLIENT LIST TYPE $w",
    "CLIENT SETNAME $v", "CLIENT SETINFO LIB-NAME $v", "CLIENT SETINFO LIB-VER $v", "CLIENT NO-EVICT $w",
    "CLIENT NO-TOUCH $w", "CLIENT UNBLOCK $n $w", "WAIT $n $t", "PUBLISH $v $v", "PUBSUB CHANNELS $p",
    "PUBSUB NUMSUB $v $v", "PUBSUB SHARDCHANNELS $p", "PUBSUB SHARDNUMSUB $v", "ECHO $l", "ECHO $v", "PING $v",
    "HELLO $n", "HELLO $n SETNAME $v", "HELLO $n AUTH $v $v", "AUTH $v", "AUTH $v $v", "FLUSHDB $w", "FLUSHALL $w",
    "FUNCTION FLUSH $w", "SCRIPT FLUSH $w", "MEMORY USAGE $k",
    // well-formed shapes, so that the hostile part is what gets past the parser
    "ZUNIONSTORE $k 2 $k $k WEIGHTS $n $n AGGREGATE $w", "ZINTERSTORE $k 2 $k $k AGGREGATE MAX",
    "ZDIFFSTORE $k 2 $k $k", "ZUNION 2 $k $k WITHSCORES", "ZINTER 2 $k $k WITHSCORES", "ZDIFF 2 $k $k",
    "ZINTERCARD 2 $k $k LIMIT $n", "SINTERCARD 2 $k $k LIMIT $n", "LMPOP 2 $k $k LEFT COUNT $n",
    "ZMPOP 2 $k $k MIN COUNT $n", "BLMPOP $t 2 $k $k RIGHT COUNT $n", "BZMPOP $t 2 $k $k MIN COUNT $n",
    "BITPOS $k $b $n $n BIT", "BITPOS $k $b", "BITPOS $k $b $n", "SETBIT $k $n $b", "SETBIT $k $i $b", "LSET $k $i $v",
    "ZRANGEBYLEX $k $L $L LIMIT $n $n", "ZREVRANGEBYLEX $k $L $L LIMIT $n $n", "ZRANGE $k $L $L BYLEX LIMIT $n $n",
    "ZRANGESTORE $k $k $L $L BYLEX REV", "ZREMRANGEBYLEX $k $L $L", "ZLEXCOUNT $k $L $L", "LRANGE $k $i $i",
    "ZRANGE $k $i $i REV", "GETRANGE $k $i $n", "LINSERT $k BEFORE $m $l", "LPOS $k $m RANK $i COUNT $i MAXLEN $i",
    "SPOP $k $i", "SRANDMEMBER $k $i", "HRANDFIELD $k $i WITHVALUES", "ZRANDMEMBER $k $i WITHSCORES", "LATENCY LATEST",
    "LATENCY DOCTOR", "CONFIG RESETSTAT", "CLIENT ID", "AUTH default $v", "PUBSUB NUMPAT", "OBJECT REFCOUNT $k",
    "SLOWLOG LEN", "SLOWLOG RESET", "EXPIRE $k $i", "PEXPIRE $k $i XX", "SET $k $v PX $i", "COPY $k $k DB $i",
    "MOVE $k $i", "SWAPDB $i $i", "SORT $k BY $p ALPHA", "SORT $k BY *->f1 GET *->f2 GET # LIMIT $i $i",
    "SORT $k BY nosort STORE $k",
];

/// Where a blocking command's timeout is in an argv of `n` words.
fn timeout_pos(name: &str, n: usize) -> Option<usize> {
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "brpoplpush" | "blmove" if n >= 3 => Some(n - 1),
        "blmpop" | "bzmpop" if n >= 2 => Some(1),
        "wait" if n >= 3 => Some(2),
        _ => None,
    }
}

/// Commands never sent as such (they end, park or re-purpose the connection or the process,
/// or reach outside the machine). `COMMAND GETKEYS` still gets their argument shapes.
#[rustfmt::skip]
const EXCLUDED: &[&str] = &[
    "shutdown", "debug", "monitor", "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe",
    "sunsubscribe", "quit", "reset", "sync", "psync", "replicaof", "slaveof", "migrate", "failover", "client kill",
    "client pause", "client reply",
];

#[derive(Clone, Debug)]
struct Unit {
    /// `["zrange"]`, or `["config", "set"]` for a subcommand.
    words: Vec<String>,
    arity: i64,
    first: i64,
    last: i64,
    step: i64,
}

impl Unit {
    fn name(&self) -> String {
        self.words.join(" ")
    }

    fn is_key_pos(&self, pos: usize, argc: usize) -> bool {
        if self.first <= 0 || self.step <= 0 {
            return false;
        }
        let last = if self.last < 0 { argc as i64 + self.last } else { self.last };
        let p = pos as i64;
        p >= self.first && p <= last && (p - self.first) % self.step == 0
    }
}

fn int_at(v: &[Value], i: usize) -> i64 {
    v.get(i).and_then(Value::as_int).unwrap_or(0)
}

fn parse_info(entry: &Value) -> Option<(String, Unit, Vec<Value>)> {
    let Value::Array(f) = entry else { return None };
    let name = String::from_utf8_lossy(f.first()?.as_bytes()?).to_ascii_lowercase();
    let subs = match f.get(9) {
        Some(Value::Array(s)) => s.clone(),
        _ => Vec::new(),
    };
    let words: Vec<String> = name.split('|').map(str::to_string).collect();
    Some((name, Unit { words, arity: int_at(f, 1), first: int_at(f, 3), last: int_at(f, 4), step: int_at(f, 5) }, subs))
}

/// Every command and subcommand the server lists, minus [`EXCLUDED`].
fn catalogue(cli: &mut Cli) -> (Vec<Unit>, Vec<Unit>) {
    let Value::Array(names) = cli.must("COMMAND LIST") else { panic!("COMMAND LIST is not an array") };
    assert!(names.len() > 100, "COMMAND LIST has only {} entries", names.len());
    let mut units = Vec::new();
    let mut excluded = Vec::new();
    for n in &names {
        let name = String::from_utf8_lossy(n.as_bytes().expect("command name")).to_ascii_lowercase();
        let info = cli.call(
            &[
                b"COMMAND".to_vec(),
                b"INFO".to_vec(),
                name.replace('|', " ").split(' ').next().unwrap().as_bytes().to_vec(),
            ],
            Duration::from_secs(10),
        );
        let Ok(Value::Array(entries)) = info else { panic!("COMMAND INFO {name}: {info:?}") };
        let Some((_, unit, subs)) = entries.first().and_then(parse_info) else {
            panic!("COMMAND INFO {name}: {entries:?}")
        };
        let mut all = vec![unit];
        all.extend(subs.iter().filter_map(parse_info).map(|(_, u, _)| u));
        for u in all {
            if EXCLUDED.contains(&u.name().as_str()) {
                excluded.push(u);
            } else if !units.iter().any(|x: &Unit| x.words == u.words) {
                units.push(u);
            }
        }
    }
    (units, excluded)
}

// The payload encoding is the server's own (keyspace::serial); hostile payloads are built
// from its pieces so they carry valid checksums.
use redoubt_server::keyspace::serial::{checksum as fnv1a, put_bytes, put_len};

struct Gen {
    rng: SmallRng,
    longs: Vec<Vec<u8>>,
    templates: HashMap<String, Vec<&'static str>>,
    units: Vec<Unit>,
    excluded: Vec<Unit>,
    /// DUMP payloads of the populated keys (value bytes only), and the version bytes that
    /// follow them, for crafting RESTORE payloads with a valid checksum.
    dumps: Vec<Vec<u8>>,
    dump_version: Option<[u8; 2]>,
    /// Keys of the type the command being generated works on (drawn from more often).
    typed: &'static [&'static str],
    /// (command, timeout) pairs that already hung once: the timeout is not drawn again, so
    /// one known hang does not eat the time budget.
    avoid: Vec<(String, Vec<u8>)>,
    /// The protocol of the connection the lines are for (HELLO keeps to it).
    resp3: bool,
}

const ZSET_KEYS: &[&str] = &["zset", "bigzset", "lexz", "fatzset", "restored", "dst"];
const HASH_KEYS: &[&str] = &["hash", "bighash", "fathash", "restored", "dst"];
const SET_KEYS: &[&str] = &["set", "intset", "bigset", "fatset", "{t}b", "restored", "dst"];
const LIST_KEYS: &[&str] = &["list", "biglist", "fatlist", "{t}a", "restored", "dst"];
const STRING_KEYS: &[&str] = &["str", "int", "float", "neg", "bigstr", "bits", "empty", "expiring", "dst"];

/// The keys a command is most interesting on, from its name.
fn typed_keys(name: &str) -> &'static [&'static str] {
    let n = name.split(' ').next().unwrap_or("");
    if n.starts_with('z') || n.starts_with("bz") {
        ZSET_KEYS
    } else if n.starts_with('h') && n != "hello" {
        HASH_KEYS
    } else if n.starts_with('s')
        && !matches!(
            n,
            "set"
                | "setex"
                | "setnx"
                | "setrange"
                | "setbit"
                | "strlen"
                | "substr"
                | "select"
                | "scan"
                | "swapdb"
                | "script"
                | "slowlog"
                | "sort"
                | "sort_ro"
        )
    {
        SET_KEYS
    } else if n.starts_with('l') && !matches!(n, "lcs" | "lastsave" | "latency")
        || n.starts_with('r') && n.contains("pop")
        || n.starts_with("rpush")
        || n.starts_with("bl")
        || n.starts_with("br")
        || n.starts_with("sort")
    {
        LIST_KEYS
    } else {
        STRING_KEYS
    }
}

impl Gen {
    fn new(seed: u64, units: Vec<Unit>, excluded: Vec<Unit>) -> Gen {
        let mut rng = SmallRng::seed_from_u64(seed);
        let random: Vec<u8> = (0..10_000).map(|_| rng.gen()).collect();
        let longs = vec![
            vec![b'a'; 1000],
            random,
            vec![b'1'; 65_536],
            vec![b'a'; 100_000],
            vec![b'*'; 100_000],
            vec![b'['; 10_000],
            b"9".repeat(400),
            [b"-".as_slice(), &b"9".repeat(20_000)].concat(),
            [b"0.".as_slice(), &b"0".repeat(1000), b"1"].concat(),
            [b"1e".as_slice(), &b"9".repeat(1000)].concat(),
            vec![0u8; 10_000],
            b"*a".repeat(5000),
        ];
        let mut templates: HashMap<String, Vec<&'static str>> = HashMap::new();
        for t in TEMPLATES {
            let w: Vec<String> = t.split(' ').take(2).map(|s| s.to_ascii_lowercase()).collect();
            let two = w.join(" ");
            let name = if units.iter().any(|u| u.name() == two) { two } else { w[0].clone() };
            templates.entry(name).or_default().push(t);
        }
        Gen {
            rng,
            longs,
            templates,
            units,
            excluded,
            dumps: Vec::new(),
            dump_version: None,
            typed: KEYS,
            avoid: Vec::new(),
            resp3: false,
        }
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.rng.gen_range(0..xs.len())]
    }

    fn num(&mut self) -> Vec<u8> {
        if self.rng.gen_bool(0.15) {
            return self.rng.gen_range(-12i64..=12).to_string().into_bytes();
        }
        if self.rng.gen_bool(0.1) {
            // Near the interesting edges, not only on them.
            let base: i64 = *self.pick(&[0i64, i64::MAX, i64::MIN, 1 << 32, 1 << 62, -(1 << 62), 1 << 31, 1 << 29]);
            let d: i64 = self.rng.gen_range(-3..=3);
            return base.wrapping_add(d).to_string().into_bytes();
        }
        self.pick(NUMS).as_bytes().to_vec()
    }

    fn key(&mut self) -> Vec<u8> {
        if self.rng.gen_bool(0.03) {
            return vec![b'a'; 200];
        }
        if self.rng.gen_bool(0.6) {
            return self.pick(self.typed).as_bytes().to_vec();
        }
        self.pick(KEYS).as_bytes().to_vec()
    }

    fn long(&mut self) -> Vec<u8> {
        let i = self.rng.gen_range(0..self.longs.len());
        self.longs[i].clone()
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0..=4 => self.pick(MEMBERS).as_bytes().to_vec(),
            5..=7 => self.num(),
            8 => self.long(),
            _ => self.pick(GARBAGE).to_vec(),
        }
    }

    /// Any hostile argument.
    fn any(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..100) {
            0..=34 => self.num(),
            35..=49 => self.pick(KEYWORDS).as_bytes().to_vec(),
            50..=61 => self.key(),
            62..=73 => self.pick(MEMBERS).as_bytes().to_vec(),
            74..=79 => self.pick(RANGES).as_bytes().to_vec(),
            80..=84 => self.pick(PATTERNS).as_bytes().to_vec(),
            85..=89 => self.long(),
            90..=94 => self.pick(GARBAGE).to_vec(),
            95..=97 => self.pick(TYPES).as_bytes().to_vec(),
            _ => self.pick(OFFSETS).as_bytes().to_vec(),
        }
    }

    fn fill(&mut self, template: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for w in template.split(' ').filter(|w| !w.is_empty()) {
            let v = match w {
                "$k" => self.key(),
                "$n" => self.num(),
                "$s" => {
                    if self.rng.gen_bool(0.6) {
                        self.pick(RANGES).as_bytes().to_vec()
                    } else {
                        self.num()
                    }
                }
                "$m" => self.pick(MEMBERS).as_bytes().to_vec(),
                "$v" => self.value(),
                "$w" => self.pick(KEYWORDS).as_bytes().to_vec(),
                "$p" => {
                    if self.rng.gen_bool(0.1) {
                        self.long()
                    } else {
                        self.pick(PATTERNS).as_bytes().to_vec()
                    }
                }
                "$l" => self.long(),
                "$t" => self.pick(SAFE_TIMEOUTS).as_bytes().to_vec(),
                "$T" => self.pick(TYPES).as_bytes().to_vec(),
                "$o" => self.pick(OFFSETS).as_bytes().to_vec(),
                "$C" => self.pick(SAFE_CONFIG).as_bytes().to_vec(),
                "$i" => self.rng.gen_range(-12i64..=12).to_string().into_bytes(),
                "$b" => {
                    if self.rng.gen_bool(0.9) {
                        self.pick(&["0", "1"]).as_bytes().to_vec()
                    } else {
                        self.num()
                    }
                }
                "$L" => self.pick(LEX).as_bytes().to_vec(),
                "$a" => self.any(),
                lit => lit.as_bytes().to_vec(),
            };
            out.push(v);
        }
        out
    }

    fn chunk(&mut self) -> Vec<Vec<u8>> {
        let c = *self.pick(CHUNKS);
        self.fill(c)
    }

    /// A command line for `u`: a template (mutated or not) when there is one, else the
    /// name, key positions filled with keys, the rest hostile, and option groups appended.
    fn argv(&mut self, u: &Unit) -> Vec<Vec<u8>> {
        self.typed = typed_keys(&u.name());
        let fixed = u.words.len();
        let templ = self.templates.get(&u.name()).cloned();
        let mut argv = match templ {
            Some(ts) if self.rng.gen_bool(0.6) => {
                let t = *self.pick(&ts);
                let mut a = self.fill(t);
                if self.rng.gen_bool(0.5) {
                    self.mutate(&mut a, fixed);
                }
                a
            }
            _ => self.generic(u),
        };
        if self.rng.gen_bool(0.05) {
            // Odd case in the command name.
            argv[0] =
                argv[0].iter().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { *c }).collect();
        }
        self.sanitize(&mut argv);
        argv
    }

    fn generic(&mut self, u: &Unit) -> Vec<Vec<u8>> {
        self.typed = typed_keys(&u.name());
        let mut argv: Vec<Vec<u8>> = u.words.iter().map(|w| w.to_ascii_uppercase().into_bytes()).collect();
        let argc = if u.arity >= 0 {
            if self.rng.gen_bool(0.85) {
                u.arity as usize
            } else {
                self.rng.gen_range(1..=u.arity as usize + 3)
            }
        } else {
            let min = (-u.arity) as usize;
            if self.rng.gen_bool(0.08) {
                self.rng.gen_range(1..=min)
            } else {
                min + self.rng.gen_range(0..=5) + if self.rng.gen_bool(0.1) { self.rng.gen_range(0..20) } else { 0 }
            }
        };
        let argc = argc.max(argv.len());
        for pos in argv.len()..argc {
            let a = if u.is_key_pos(pos, argc) && self.rng.gen_bool(0.85) { self.key() } else { self.any() };
            argv.push(a);
        }
        if u.arity < 0 && self.rng.gen_bool(0.35) {
            for _ in 0..self.rng.gen_range(1..=3) {
                let c = self.chunk();
                argv.extend(c);
            }
        }
        argv
    }

    fn mutate(&mut self, argv: &mut Vec<Vec<u8>>, fixed: usize) {
        for _ in 0..self.rng.gen_range(1..=3) {
            let n = argv.len();
            match self.rng.gen_range(0..6) {
                0 if n > fixed => {
                    let i = self.rng.gen_range(fixed..n);
                    argv[i] = self.any();
                }
                1 if n > fixed => {
                    let i = self.rng.gen_range(fixed..n);
                    let dup = argv[i].clone();
                    argv.insert(i + 1, dup);
                }
                2 if n > fixed => {
                    let i = self.rng.gen_range(fixed..n);
                    argv.remove(i);
                }
                3 if n > fixed + 1 => {
                    let i = self.rng.gen_range(fixed..n);
                    let j = self.rng.gen_range(fixed..n);
                    argv.swap(i, j);
                }
                4 => {
                    let c = self.chunk();
                    let at = self.rng.gen_range(fixed.min(n)..=n);
                    for (k, a) in c.into_iter().enumerate() {
                        argv.insert(at + k, a);
                    }
                }
                _ => {
                    let at = self.rng.gen_range(fixed.min(n)..=n);
                    let a = self.any();
                    argv.insert(at, a);
                }
            }
        }
    }

    /// Keeps a generated line from doing what the harness cannot survive by design (a
    /// blocking command with a long timeout, a switch to RESP3, a config that breaks the
    /// harness): these are not bugs, so they are not sent.
    fn sanitize(&mut self, argv: &mut [Vec<u8>]) {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        let n = argv.len();
        if let Some(i) = timeout_pos(&name, n) {
            let pool = if name == "wait" { SAFE_WAIT_TIMEOUTS } else { SAFE_TIMEOUTS };
            for _ in 0..20 {
                let t = self.pick(pool).as_bytes().to_vec();
                // A value that parked one command forever is not drawn again for any: the
                // finding is made, the budget is better spent elsewhere.
                let known = self.avoid.iter().any(|(_, v)| *v == t);
                argv[i] = t;
                if !known {
                    break;
                }
            }
        }
        match name.as_str() {
            "hello" if n >= 2 => {
                // A protocol switch the client does not know about is not a server bug.
                let t = String::from_utf8_lossy(&argv[1]).trim().trim_start_matches(['+', '0']).to_string();
                let v = t.parse::<f64>().ok();
                if t.starts_with(['2', '3']) || matches!(v, Some(x) if x == 2.0 || x == 3.0) || t.is_empty() {
                    argv[1] = if self.resp3 { b"3".to_vec() } else { b"2".to_vec() };
                }
            }
            "config" if n >= 3 && argv[1].eq_ignore_ascii_case(b"set") => {
                for i in (2..n).step_by(2) {
                    let p = String::from_utf8_lossy(&argv[i]).to_ascii_lowercase();
                    if UNSAFE_CONFIG.contains(&p.as_str()) {
                        argv[i] = b"hz".to_vec();
                    }
                }
            }
            // Redis answers COMMAND DOCS in RESP3 with sets of arrays (`history`), which the
            // reply decoder of the harness (redis-protocol) cannot represent.
            "command" if n >= 2 && self.resp3 && argv[1].eq_ignore_ascii_case(b"docs") => argv[1] = b"COUNT".to_vec(),
            "client" if n >= 2 => {
                let s = String::from_utf8_lossy(&argv[1]).to_ascii_lowercase();
                if matches!(s.as_str(), "kill" | "pause" | "reply") {
                    argv[1] = b"GETNAME".to_vec();
                }
            }
            _ => {}
        }
    }

    /// `COMMAND GETKEYS <a hostile line of any command>`: key extraction with hostile numkeys.
    fn getkeys(&mut self) -> Vec<Vec<u8>> {
        let all = self.units.len() + self.excluded.len();
        let i = self.rng.gen_range(0..all);
        let u = if i < self.units.len() { self.units[i].clone() } else { self.excluded[i - self.units.len()].clone() };
        let inner = if self.rng.gen_bool(0.5) { self.generic(&u) } else { self.argv(&u) };
        let sub: &[u8] = if self.rng.gen_bool(0.5) { b"GETKEYS" } else { b"GETKEYSANDFLAGS" };
        let mut argv = vec![b"COMMAND".to_vec(), sub.to_vec()];
        argv.extend(inner);
        argv
    }

    /// `MULTI`, a few hostile commands, `EXEC`, in one write.
    fn transaction(&mut self) -> Step {
        let mut cmds = vec![words("MULTI")];
        for _ in 0..self.rng.gen_range(1..=4) {
            let u = self.units[self.rng.gen_range(0..self.units.len())].clone();
            cmds.push(self.argv(&u));
        }
        if self.rng.gen_bool(0.9) {
            cmds.push(words("EXEC"));
        }
        cmds
    }

    /// `RESTORE` of a crafted payload whose checksum is right: a mutated real DUMP, or a
    /// synthetic value with duplicates, odd scores, numeric-looking members, lying counts.
    fn crafted_restore(&mut self) -> Option<Vec<Vec<u8>>> {
        let version = self.dump_version?;
        let mut body = if !self.dumps.is_empty() && self.rng.gen_bool(0.4) {
            let i = self.rng.gen_range(0..self.dumps.len());
            let mut b = self.dumps[i].clone();
            for _ in 0..self.rng.gen_range(1..=4) {
                if b.is_empty() {
                    break;
                }
                let at = self.rng.gen_range(0..b.len());
                match self.rng.gen_range(0..5) {
                    0 => b[at] ^= 1 << self.rng.gen_range(0..8),
                    1 => b[at] = self.rng.gen(),
                    2 => b.truncate(at),
                    3 => {
                        let x = self.rng.gen();
                        b.insert(at, x)
                    }
                    _ => {
                        b.remove(at);
                    }
                }
            }
            b
        } else {
            self.synthetic_value()
        };
        body.extend_from_slice(&version);
        let crc = fnv1a(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let key = *self.pick(&["restored", "restored", "dst", "list", "zset", "missing"]);
        let ttl = if self.rng.gen_bool(0.8) { b"0".to_vec() } else { self.num() };
        let mut argv = vec![b"RESTORE".to_vec(), key.as_bytes().to_vec(), ttl, body];
        if self.rng.gen_bool(0.85) {
            argv.push(b"REPLACE".to_vec());
        }
        if self.rng.gen_bool(0.15) {
            argv.push(b"ABSTTL".to_vec());
        }
        if self.rng.gen_bool(0.1) {
            argv.push(b"IDLETIME".to_vec());
            argv.push(self.num());
        }
        if self.rng.gen_bool(0.1) {
            argv.push(b"FREQ".to_vec());
            argv.push(self.num());
        }
        Some(argv)
    }

    fn synthetic_member(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..8) {
            0 => Vec::new(),
            1 => self
                .pick(&["1", "01", "-0", "+1", " 1", "9223372036854775808", "-9223372036854775809", "1.0"])
                .as_bytes()
                .to_vec(),
            2 => vec![b'a'; self.rng.gen_range(60..300)],
            3 => self.num(),
            _ => self.pick(MEMBERS).as_bytes().to_vec(),
        }
    }

    fn synthetic_value(&mut self) -> Vec<u8> {
        let tag: u8 = self.rng.gen_range(0..6);
        let mut b = vec![tag];
        let n = if self.rng.gen_bool(0.8) { self.rng.gen_range(1..8) } else { self.rng.gen_range(0..300) };
        let claimed =
            if self.rng.gen_bool(0.1) { *self.pick(&[0u64, 1 << 31, 1 << 40, u64::MAX >> 1, n + 1]) } else { n };
        let mut members: Vec<Vec<u8>> = (0..n).map(|_| self.synthetic_member()).collect();
        if n > 1 && self.rng.gen_bool(0.5) {
            // Duplicates.
            let d = members[0].clone();
            members[n as usize - 1] = d;
        }
        match tag {
            0 => put_bytes(&mut b, &members.first().cloned().unwrap_or_default()),
            1 | 3 => {
                put_len(&mut b, claimed);
                members.iter().for_each(|m| put_bytes(&mut b, m));
            }
            2 => {
                put_len(&mut b, claimed);
                for m in &members {
                    put_bytes(&mut b, m);
                    let v = self.synthetic_member();
                    put_bytes(&mut b, &v);
                }
            }
            _ => {
                put_len(&mut b, claimed);
                for m in &members {
                    put_bytes(&mut b, m);
                    let s: f64 = *self.pick(&[
                        0.0,
                        -0.0,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        f64::MIN_POSITIVE,
                        5e-324,
                        1e308,
                        -1e308,
                        1.0,
                        f64::NAN,
                        9007199254740993.0,
                    ]);
                    b.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        b
    }
}

// ---------------------------------------------------------------------------------------
// part 1: every command, hostile arguments
// ---------------------------------------------------------------------------------------

/// A connection in MONITOR or PSUBSCRIBE mode read on a thread of its own while the fuzzer
/// runs, so that every hostile command also goes through the monitor feed and keyspace
/// notifications; the stream it receives must stay well-formed RESP.
struct Drainer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Drainer {
    fn start(addr: SocketAddr, what: &'static str) -> Drainer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut frames_seen = 0u64;
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                return (0, vec![format!("{what}: cannot connect")]);
            };
            let _ = s.write_all(&mbulk(&words(what)));
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = BytesMut::new();
            let mut chunk = vec![0u8; 1 << 16];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                match s.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        continue
                    }
                    Err(_) => break,
                }
                loop {
                    let before = buf.clone();
                    match decode_reply(&mut buf, false) {
                        Ok(Some(_)) => frames_seen += 1,
                        Ok(None) => break,
                        Err(e) => {
                            errors
                                .push(format!("{what} stream is not well-formed RESP: {e}; near {:?}", show(&before)));
                            return (frames_seen, errors);
                        }
                    }
                }
            }
            (frames_seen, errors)
        });
        Drainer { stop, handle }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or((0, vec!["drainer thread panicked".into()]))
    }
}

#[derive(Debug)]
struct Finding {
    unit: String,
    failure: Failure,
    step: Step,
    /// The steps before it (None: the keyspace was reset there).
    context: Vec<Option<Step>>,
    /// Reproduces when replayed after the steps of `context` since the last reset.
    with_context: Option<bool>,
    hits: usize,
    standalone: Option<bool>,
    minimal: Option<Vec<Vec<u8>>>,
    /// The fewest steps before it that still make it reproduce (when it needs any).
    minimal_context: Option<Vec<Step>>,
    /// It happened on a RESP3 connection.
    resp3: bool,
}

struct Fuzz {
    r: Runner,
    g: Gen,
    config_defaults: Vec<(String, Vec<u8>)>,
    findings: Vec<Finding>,
}

impl Fuzz {
    /// Back to the documented starting point: safe config restored, every database
    /// flushed, db 0 selected, keys populated, DUMPs refreshed.
    fn repopulate(&mut self) {
        let mut cmds: Step = Vec::new();
        for (p, v) in &self.config_defaults {
            cmds.push(vec![b"CONFIG".to_vec(), b"SET".to_vec(), p.as_bytes().to_vec(), v.clone()]);
        }
        cmds.push(words("FLUSHALL"));
        cmds.push(words("SELECT 0"));
        cmds.extend(population());
        match self.r.cli.pipeline(&cmds, Duration::from_secs(30)) {
            Ok(replies) => {
                for (c, r) in cmds.iter().zip(&replies) {
                    if r.is_error() {
                        eprintln!("note: setup command {} failed: {}", render(c), short(r));
                    }
                }
            }
            Err(e) => {
                eprintln!("note: setup failed ({e:?}); restarting the server");
                self.r.srv.restart();
                self.r.reconnect();
                let replies = self.r.cli.pipeline(&cmds, Duration::from_secs(30)).expect("setup after restart");
                assert_eq!(replies.len(), cmds.len());
            }
        }
        if self.g.dump_version.is_none() || self.g.dumps.is_empty() {
            for k in ["str", "list", "hash", "set", "intset", "zset", "lexz", "bigset", "fatzset"] {
                if let Ok(Value::Bulk(p)) =
                    self.r.cli.call(&[b"DUMP".to_vec(), k.as_bytes().to_vec()], Duration::from_secs(5))
                {
                    if p.len() > 10 && fnv1a(&p[..p.len() - 8]).to_le_bytes() == p[p.len() - 8..] {
                        self.g.dump_version = Some([p[p.len() - 10], p[p.len() - 9]]);
                        self.g.dumps.push(p[..p.len() - 10].to_vec());
                    }
                }
            }
            if self.g.dump_version.is_none() {
                eprintln!("note: DUMP payloads do not end in <version><fnv1a-64>; crafted RESTOREs are off");
            }
        }
    }

    fn record(&mut self, unit: &str, failure: Failure, step: Step, history: &VecDeque<Option<Step>>) {
        let key = failure.site.as_deref().map(site_key);
        for f in self.findings.iter_mut() {
            let same = f.failure.kind == failure.kind
                && match (&key, f.failure.site.as_deref().map(site_key)) {
                    (Some(a), Some(b)) => *a == b,
                    (None, None) => f.unit == unit,
                    _ => false,
                };
            if same {
                f.hits += 1;
                return;
            }
        }
        eprintln!("FINDING {} in `{unit}`: {}\n    step: {}", failure.kind, failure.detail, render_step(&step));
        self.findings.push(Finding {
            unit: unit.to_string(),
            failure,
            step,
            context: history.iter().cloned().collect(),
            with_context: None,
            hits: 1,
            standalone: None,
            minimal: None,
            minimal_context: None,
            resp3: self.r.resp3,
        });
    }

    /// A blocking command parked on a second connection, then served by pushes from the
    /// main one (the served command runs on behalf of the parked client, without its
    /// connection). Returns the lines involved and the failure, if any.
    fn served_step(&mut self, u: &Unit) -> (Step, Result<(), Failure>) {
        let mut argv = self.g.argv(u);
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        if let Some(i) = timeout_pos(&name, argv.len()) {
            argv[i] = b"2".to_vec();
        }
        let is_key = |a: &[u8]| KEYS.iter().any(|k| k.as_bytes() == a) || a == vec![b'a'; 200].as_slice();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (i, a) in argv.iter().enumerate().skip(1) {
            // The destination of BLMOVE/BRPOPLPUSH keeps its value (maybe of the wrong type).
            if is_key(a) && !keys.contains(a) && !(matches!(name.as_str(), "blmove" | "brpoplpush") && i == 2) {
                keys.push(a.clone());
            }
        }
        let zset = name.starts_with("bz");
        let mut del = vec![b"DEL".to_vec(), b"missing".to_vec()];
        del.extend(keys.iter().cloned());
        let mut pushes: Step = Vec::new();
        for k in &keys {
            let p: Vec<Vec<u8>> = if zset {
                vec![b"ZADD".to_vec(), k.clone(), b"1".to_vec(), b"x".to_vec(), b"2".to_vec(), b"y".to_vec()]
            } else {
                vec![b"RPUSH".to_vec(), k.clone(), b"x".to_vec(), b"y".to_vec()]
            };
            pushes.push(p);
        }
        let mut shown = vec![del.clone(), argv.clone()];
        shown.extend(pushes.iter().cloned());
        let log0 = self.r.srv.log_len();
        if let Err(f) = self.r.step(&[del]) {
            return (shown, Err(f));
        }
        let Some(mut other) = Cli::try_connect(self.r.srv.addr) else {
            return (shown, Err(self.r.diagnose(CliErr::Closed("cannot connect a second client".into()), log0, "")));
        };
        if let Err(e) = other.send(&argv) {
            return (shown, Err(self.r.diagnose(e, log0, " (sending the blocking command)")));
        }
        std::thread::sleep(Duration::from_millis(30));
        if !pushes.is_empty() {
            if let Err(f) = self.r.step(&pushes) {
                return (shown, Err(f));
            }
        }
        // Its own timeout is 2 s: it must have answered (served or timed out) by then.
        match other.read(Duration::from_secs(4)) {
            Ok(_) => {}
            Err(e) => return (shown, Err(self.r.diagnose(e, log0, " (on the parked connection)"))),
        }
        if !other.ping(Duration::from_secs(4)) {
            let e = CliErr::Closed("no PONG on the parked connection after its reply".into());
            return (shown, Err(self.r.diagnose(e, log0, "")));
        }
        let log = self.r.srv.log_from(log0);
        if !log.trim().is_empty() {
            return (
                shown,
                Err(Failure {
                    kind: "PANIC",
                    detail: format!("stderr: {}", excerpt(&log)),
                    site: panic_sites(&log).first().cloned(),
                }),
            );
        }
        (shown, Ok(()))
    }

    /// Runs `step` on a fresh keyspace; the failure it causes, if any.
    fn reproduce(&mut self, step: &[Vec<Vec<u8>>], fresh: bool) -> Option<Failure> {
        self.reproduce_after(&[], step, fresh)
    }

    /// Runs `before` (failures there ignored), then `step`, on a fresh keyspace (and in a
    /// new process if `fresh`: a background task that panicked once does not panic again).
    fn reproduce_after(&mut self, before: &[Step], step: &[Vec<Vec<u8>>], fresh: bool) -> Option<Failure> {
        if fresh || self.r.srv.exited().is_some() {
            self.r.srv.restart();
        }
        self.r.reconnect();
        self.repopulate();
        if fresh {
            // Let background tasks see the setup traffic first (cron samples counters).
            std::thread::sleep(Duration::from_millis(150));
        }
        let log0 = self.r.srv.log_len();
        for b in before {
            if let Err(f) = self.r.step(b) {
                self.r.recover(&f);
            }
        }
        // Give background tasks (cron runs at hz) a moment to trip over what came before.
        if !before.is_empty() {
            std::thread::sleep(Duration::from_millis(250));
        }
        match self.r.step(step) {
            Ok(_) => {
                // A background task may have panicked during the replay.
                let log = self.r.srv.log_from(log0);
                let sites = panic_sites(&log);
                (!before.is_empty() && !sites.is_empty()).then(|| Failure {
                    kind: "PANIC",
                    detail: format!("stderr: {}", excerpt(&log)),
                    site: sites.first().cloned(),
                })
            }
            Err(f) => {
                self.r.recover(&f);
                Some(f)
            }
        }
    }

    /// Re-runs each finding alone on a fresh keyspace and shrinks it (drop arguments, then
    /// shorten long ones) while it still fails the same way.
    fn shrink_all(&mut self, until: Instant) {
        // Cheap ones first: re-running a hang costs the whole command timeout.
        let mut order: Vec<usize> = (0..self.findings.len()).collect();
        order.sort_by_key(|&i| matches!(self.findings[i].failure.kind, "HANG" | "SERVER-HANG"));
        for i in order {
            if Instant::now() > until {
                break;
            }
            if self.findings[i].unit.starts_with("served ") || self.findings[i].step.is_empty() {
                continue;
            }
            let orig = self.findings[i].failure.clone();
            let step = self.findings[i].step.clone();
            self.r.resp3 = self.findings[i].resp3;
            let slow = matches!(orig.kind, "HANG" | "SERVER-HANG");
            let fresh = orig.kind == "PANIC";
            let again = self.reproduce(&step, fresh);
            let standalone = again.as_ref().is_some_and(|f| f.same_bug(&orig));
            self.findings[i].standalone = Some(standalone);
            if !standalone {
                // Replay what came after the last reset, then the step.
                let ctx = &self.findings[i].context;
                // A background task may trip a while after the step that caused it, across a
                // reset: for a panic, replay everything kept.
                let start = if fresh { 0 } else { ctx.iter().rposition(Option::is_none).map_or(0, |p| p + 1) };
                let before: Vec<Step> = ctx[start..].iter().flatten().cloned().collect();
                if !before.is_empty() && Instant::now() < until {
                    let again = self.reproduce_after(&before, &step, fresh);
                    let ok = again.is_some_and(|f| f.same_bug(&orig));
                    self.findings[i].with_context = Some(ok);
                    if ok && !slow {
                        let (b, st) = self.shrink_context(before, step.clone(), &orig, until);
                        self.findings[i].minimal_context = Some(b);
                        self.findings[i].step = st;
                    }
                }
            }
            if !standalone || slow || step.len() != 1 {
                continue;
            }
            let fixed = self.findings[i].unit.split(' ').count();
            let mut cur = step[0].clone();
            let mut tries = 0;
            let mut j = cur.len();
            while j > fixed && tries < 40 && Instant::now() < until {
                j -= 1;
                let mut cand = cur.clone();
                cand.remove(j);
                tries += 1;
                if self.reproduce(&[cand.clone()], fresh).is_some_and(|f| f.same_bug(&orig)) {
                    cur = cand;
                }
            }
            for j in fixed..cur.len() {
                if cur[j].len() <= 24 || tries >= 60 || Instant::now() > until {
                    continue;
                }
                let mut cand = cur.clone();
                cand[j] = if cur[j].iter().all(u8::is_ascii_digit) { b"1".to_vec() } else { b"a".to_vec() };
                tries += 1;
                if self.reproduce(&[cand.clone()], fresh).is_some_and(|f| f.same_bug(&orig)) {
                    cur = cand;
                }
            }
            self.findings[i].minimal = Some(cur);
        }
    }

    /// Drops chunks of the steps before a finding while it still reproduces after them
    /// (halves, then quarters, ...); for a panic in a background task, also tries a plain
    /// PING as the final step.
    fn shrink_context(
        &mut self,
        mut before: Vec<Step>,
        mut step: Step,
        orig: &Failure,
        until: Instant,
    ) -> (Vec<Step>, Step) {
        let mut chunk = before.len().div_ceil(2);
        while chunk >= 1 && Instant::now() < until {
            let mut i = 0;
            while i < before.len() && Instant::now() < until {
                let mut cand = before.clone();
                cand.drain(i..(i + chunk).min(before.len()));
                if self.reproduce_after(&cand, &step, orig.kind == "PANIC").is_some_and(|f| f.same_bug(orig)) {
                    before = cand;
                } else {
                    i += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
        if orig.kind == "PANIC" && Instant::now() < until {
            let ping = vec![words("PING")];
            if self.reproduce_after(&before, &ping, true).is_some_and(|f| f.same_bug(orig)) {
                step = ping;
            }
        }
        (before, step)
    }
}

#[test]
fn every_command_survives_hostile_arguments() {
    let budget = Duration::from_secs(env_u64("T50_FUZZ_SECS", 40));
    let seed = seed();
    let started = Instant::now();
    // A small proto-max-bulk-len keeps legitimate growth (SETRANGE, SETBIT, APPEND) small,
    // so that a big RSS jump means something.
    let mut r = Runner::new(&["--proto-max-bulk-len", "8mb"], 256 * MB, 1024 * MB);
    let (units, excluded) = catalogue(&mut r.cli);
    let mut config_defaults = Vec::new();
    for p in SAFE_CONFIG {
        if let Ok(Value::Array(kv)) =
            r.cli.call(&[b"CONFIG".to_vec(), b"GET".to_vec(), p.as_bytes().to_vec()], Duration::from_secs(5))
        {
            if let (Some(k), Some(v)) = (kv.first().and_then(Value::as_bytes), kv.get(1).and_then(Value::as_bytes)) {
                config_defaults.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
            }
        }
    }
    eprintln!(
        "t50 fuzz: seed {seed} (T50_SEED), {} commands/subcommands ({} excluded: {}), budget {:?}",
        units.len(),
        excluded.len(),
        excluded.iter().map(Unit::name).collect::<Vec<_>>().join(", "),
        budget
    );
    // Keyspace notifications on (the PSUBSCRIBE * drainer receives them).
    match config_defaults.iter_mut().find(|(k, _)| k == "notify-keyspace-events") {
        Some(kv) => kv.1 = b"KEA".to_vec(),
        None => config_defaults.push(("notify-keyspace-events".into(), b"KEA".to_vec())),
    }
    let g = Gen::new(seed, units.clone(), excluded);
    let mut f = Fuzz { r, g, config_defaults, findings: Vec::new() };
    f.repopulate();
    let mem0 = f.r.cli.used_memory();

    let mut stats: BTreeMap<String, (u64, u64)> = BTreeMap::new(); // unit -> (steps, non-error replies)
    let mut history: VecDeque<Option<Step>> = VecDeque::new();
    let mut order: Vec<usize> = (0..units.len()).collect();
    let mut since_populate = 0;
    let mut total = 0u64;
    let mut heavy: HashMap<String, u32> = HashMap::new();
    let mut drain_addr = f.r.srv.addr;
    let mut drainers = vec![Drainer::start(drain_addr, "MONITOR"), Drainer::start(drain_addr, "PSUBSCRIBE *")];
    let mut drained = 0u64;
    let mut drain_errors: Vec<String> = Vec::new();
    let deadline = started + budget;
    let tracing = trace();
    'outer: loop {
        order.shuffle(&mut f.g.rng);
        for &ui in &order {
            if Instant::now() > deadline {
                break 'outer;
            }
            since_populate += 1;
            if since_populate >= 150 {
                // Every so often, the other protocol (RESP3 replies have their own encoders).
                f.r.resp3 = f.g.rng.gen_bool(0.5);
                f.g.resp3 = f.r.resp3;
                f.r.reconnect();
                f.repopulate();
                history.push_back(None);
                since_populate = 0;
            }
            if f.r.srv.addr != drain_addr {
                for d in drainers.drain(..) {
                    let (n, errs) = d.finish();
                    drained += n;
                    drain_errors.extend(errs);
                }
                drain_addr = f.r.srv.addr;
                drainers = vec![Drainer::start(drain_addr, "MONITOR"), Drainer::start(drain_addr, "PSUBSCRIBE *")];
            }
            let u = &units[ui];
            let name = u.name();
            if heavy.get(&name).is_some_and(|&n| n >= 2) && f.g.rng.gen_bool(0.8) {
                // Known to crash or hang the server: it has been reported; spend the time elsewhere.
                continue;
            }
            if timeout_pos(&name, 9).is_some() && name != "wait" && f.g.rng.gen_bool(0.4) {
                total += 1;
                let sname = format!("served {name}");
                let e = stats.entry(name.clone()).or_default();
                e.0 += 1;
                let (shown, res) = f.served_step(u);
                if tracing {
                    eprintln!("> [served] {}", render_step(&shown));
                }
                if let Err(fail) = res {
                    f.r.recover(&fail);
                    f.record(&sname, fail, shown, &history);
                    f.repopulate();
                    history.push_back(None);
                    since_populate = 0;
                } else {
                    // For replays: the state changes from this connection (not the parked command).
                    for (i, line) in shown.into_iter().enumerate() {
                        if i != 1 {
                            history.push_back(Some(vec![line]));
                        }
                    }
                }
                continue;
            }
            let step: Step = match name.as_str() {
                "multi" => f.g.transaction(),
                "restore" if f.g.rng.gen_bool(0.6) => match f.g.crafted_restore() {
                    Some(a) => vec![a],
                    None => vec![f.g.argv(u)],
                },
                "command getkeys" | "command getkeysandflags" if f.g.rng.gen_bool(0.8) => vec![f.g.getkeys()],
                _ => vec![f.g.argv(u)],
            };
            if tracing {
                eprintln!("> {}", render_step(&step));
            }
            total += 1;
            let e = stats.entry(name.clone()).or_default();
            e.0 += 1;
            match f.r.step(&step) {
                Ok(replies) => {
                    if replies.iter().any(|v| !v.is_error()) {
                        stats.get_mut(&name).unwrap().1 += 1;
                    }
                }
                Err(fail) => {
                    if matches!(fail.kind, "CRASH" | "SERVER-HANG") {
                        *heavy.entry(name.clone()).or_default() += 1;
                    }
                    if fail.kind == "HANG" && step.len() == 1 {
                        let a = &step[0];
                        let cmd = String::from_utf8_lossy(&a[0]).to_ascii_lowercase();
                        if let Some(i) = timeout_pos(&cmd, a.len()) {
                            f.g.avoid.push((cmd, a[i].clone()));
                        }
                    }
                    f.r.recover(&fail);
                    f.record(&name, fail, step.clone(), &history);
                    f.repopulate();
                    history.push_back(None);
                    since_populate = 0;
                    continue;
                }
            }
            history.push_back(Some(step));
            while history.len() > 200 {
                history.pop_front();
            }
        }
    }
    for d in drainers.drain(..) {
        let (n, errs) = d.finish();
        drained += n;
        drain_errors.extend(errs);
    }
    for e in drain_errors {
        f.findings.push(Finding {
            unit: "(MONITOR / PSUBSCRIBE connection)".into(),
            failure: Failure { kind: "MALFORMED", detail: e, site: None },
            step: Vec::new(),
            context: Vec::new(),
            with_context: None,
            hits: 1,
            standalone: None,
            minimal: None,
            minimal_context: None,
            resp3: false,
        });
    }
    // Growth that survives FLUSHALL (a leak, or bookkeeping that grows with every command).
    f.repopulate();
    let mem1 = f.r.cli.used_memory();
    let loop_time = started.elapsed();
    f.shrink_all(Instant::now() + (budget / 3).min(Duration::from_secs(15)).max(Duration::from_secs(8)));

    let never_ok: Vec<&String> = stats.iter().filter(|(_, (_, ok))| *ok == 0).map(|(n, _)| n).collect();
    let min_steps = stats.values().map(|(n, _)| *n).min().unwrap_or(0);
    eprintln!(
        "t50 fuzz: {total} steps in {loop_time:.1?} over {} commands (each at least {min_steps} times); {drained} MONITOR/pubsub frames; used_memory after FLUSHALL {} -> {} bytes",
        stats.len(),
        mem0,
        mem1
    );
    if !never_ok.is_empty() {
        eprintln!("note: never got past argument checks (only error replies): {never_ok:?}");
    }
    let missing: Vec<String> = units.iter().map(Unit::name).filter(|n| !stats.contains_key(n)).collect();
    assert!(missing.is_empty(), "commands never exercised (raise T50_FUZZ_SECS): {missing:?}");
    if mem1 > mem0 + 64 * MB {
        f.findings.push(Finding {
            unit: "(whole run)".into(),
            failure: Failure {
                kind: "MEMORY",
                detail: format!("used_memory after FLUSHALL grew from {mem0} to {mem1} bytes over the run"),
                site: None,
            },
            step: Vec::new(),
            context: Vec::new(),
            with_context: None,
            hits: 1,
            standalone: None,
            minimal: None,
            minimal_context: None,
            resp3: false,
        });
    }
    if !f.findings.is_empty() {
        panic!("{}", report(&f.findings, seed));
    }
}

fn report(findings: &[Finding], seed: u64) -> String {
    let mut s = format!(
        "{} distinct robustness failure(s) (seed {seed}; keys as created by population() in t50_robustness.rs):\n",
        findings.len()
    );
    for (i, f) in findings.iter().enumerate() {
        let proto = if f.resp3 { ", on a RESP3 connection (HELLO 3)" } else { "" };
        s.push_str(&format!("\n[{}] {} in `{}` ({} hit(s){proto})\n", i + 1, f.failure.kind, f.unit, f.hits));
        if let Some(site) = &f.failure.site {
            s.push_str(&format!("    site:    {site}\n"));
        }
        s.push_str(&format!("    detail:  {}\n", f.failure.detail));
        s.push_str(&format!("    step:    {}\n", render_step(&f.step)));
        if let Some(m) = &f.minimal {
            s.push_str(&format!("    minimal: {}\n", render(m)));
        }
        match f.standalone {
            Some(true) => s.push_str("    reproduces alone on a freshly populated keyspace\n"),
            Some(false) => {
                s.push_str(if f.failure.kind == "PANIC" {
                    "    does NOT reproduce alone (a panic in another task, e.g. the cron, may come from an earlier step); the steps before it:\n"
                } else {
                    "    does NOT reproduce alone; the steps before it:\n"
                });
                let skip = f.context.len().saturating_sub(8);
                if skip > 0 {
                    s.push_str(&format!("      ({skip} earlier step(s) not shown)\n"));
                }
                for c in &f.context[skip..] {
                    match c {
                        Some(step) => s.push_str(&format!("      {}\n", render_step(step))),
                        None => s.push_str("      (keyspace reset: FLUSHALL and repopulate)\n"),
                    }
                }
                match f.with_context {
                    Some(true) => {
                        s.push_str("    reproduces when the steps before it are replayed first (on a fresh keyspace)");
                        match &f.minimal_context {
                            Some(b) => {
                                s.push_str(&format!("; shrunk to {} step(s) then the failing one:\n", b.len()));
                                for c in b {
                                    s.push_str(&format!("      {}\n", render_step(c)));
                                }
                                s.push_str(&format!("      {}\n", render_step(&f.step)));
                            }
                            None => s.push('\n'),
                        }
                    }
                    Some(false) => {
                        s.push_str("    does not reproduce with those steps replayed either (timing-dependent)\n")
                    }
                    None => {}
                }
            }
            None => {}
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// part 2: memory bombs
// ---------------------------------------------------------------------------------------

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Whatever arrives within `d`; the bool is true if the server closed the connection.
fn read_for(s: &mut TcpStream, d: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
    }
}

/// Splits bytes into RESP2 frames; Err if malformed, or if a frame is cut short.
fn frames(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode_reply(&mut buf, false)? {
            Some(v) => out.push(v),
            None => return Err(format!("truncated frame: {:?}", String::from_utf8_lossy(&buf))),
        }
    }
    Ok(out)
}

fn mbulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(args, &mut out);
    out
}

struct Probes {
    r: Runner,
    /// proto-max-bulk-len set before every probe (it survives a restart that way).
    limit: &'static str,
    failures: Vec<String>,
    lines: Vec<String>,
}

impl Probes {
    fn setup(&mut self) {
        let mut cmds = vec![words(&format!("CONFIG SET proto-max-bulk-len {}", self.limit)), words("FLUSHALL")];
        for l in [
            "SET s hello",
            "RPUSH l a b c 1 2 3",
            "HSET h f v g w",
            "SADD set a b c",
            "ZADD z 1 a 2 b 3 c",
            "ZADD zl 0 a 0 b 0 c",
        ] {
            cmds.push(words(l));
        }
        if self.r.cli.pipeline(&cmds, Duration::from_secs(10)).is_err() {
            self.r.srv.restart();
            self.r.reconnect();
            self.r.cli.pipeline(&cmds, Duration::from_secs(10)).expect("setup");
        }
    }

    /// used_memory from a new connection (0 when the server does not answer).
    fn used(&mut self) -> u64 {
        if self.r.srv.exited().is_some() {
            return 0;
        }
        Cli::try_connect(self.r.srv.addr).and_then(|mut c| c.try_used_memory()).unwrap_or(0)
    }

    /// One probe: `prep` lines, then `argv`, then `check` on the reply; used_memory, peak
    /// RSS and address space within +64 MB.
    fn probe(&mut self, prep: &[Vec<Vec<u8>>], argv: Vec<Vec<u8>>, check: Check) {
        self.setup();
        for p in prep {
            let _ = self.r.cli.call(p, Duration::from_secs(10));
        }
        let before = self.used();
        let shown = render(&argv);
        if trace() {
            eprintln!("> {shown}");
        }
        let res = self.r.step(std::slice::from_ref(&argv));
        let after = if res.is_ok() { self.used() } else { before };
        let delta = after as i64 - before as i64;
        match res {
            Err(f) => {
                let site = f.site.clone().map(|s| format!(" at {s}")).unwrap_or_default();
                self.failures.push(format!("{} {shown}{site}: {}", f.kind, f.detail));
                self.lines.push(format!("FAIL {shown} -> {}", f.kind));
                self.r.recover(&f);
            }
            Ok(replies) => {
                let v = &replies[0];
                self.lines.push(format!("ok   {shown} -> {} (used_memory {:+} KB)", short(v), delta / 1024));
                if delta > 64 * MB as i64 {
                    self.failures
                        .push(format!("MEMORY {shown}: used_memory +{} MB after the reply", delta / MB as i64));
                }
                match check {
                    Check::Any => {}
                    Check::Error => {
                        if !v.is_error() {
                            self.failures.push(format!("LIMIT {shown}: expected an error reply, got {}", short(v)));
                        }
                    }
                    Check::MaxLen(key, max) => {
                        let len =
                            self.r.cli.call(&[b"STRLEN".to_vec(), key.as_bytes().to_vec()], Duration::from_secs(5));
                        if let Ok(Value::Int(n)) = len {
                            if n as u64 > max {
                                self.failures.push(format!(
                                    "LIMIT {shown}: `{key}` is now {n} bytes, beyond proto-max-bulk-len ({max}); reply {}",
                                    short(v)
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Check {
    Any,
    Error,
    MaxLen(&'static str, u64),
}

#[test]
fn memory_bomb_probes() {
    let mut p =
        Probes { r: Runner::new(&[], 64 * MB, 256 * MB), limit: "512mb", failures: Vec::new(), lines: Vec::new() };
    // Opened before proto-max-bulk-len shrinks: the new limit must apply to it too.
    let mut early = raw_connect(p.r.srv.addr);
    p.setup();
    let baseline = p.used();
    let limit: u64 = 1 << 20;
    let v = p.r.cli.must("CONFIG SET proto-max-bulk-len 1mb");
    assert_eq!(v, Value::Simple(b"OK".to_vec()), "CONFIG SET proto-max-bulk-len 1mb");
    p.limit = "1mb";

    // Raw headers: a connection announcing 2^31-1 arguments and sending nothing more must
    // just wait, without reserving for them.
    let before = p.used();
    let mut stalled = raw_connect(p.r.srv.addr);
    stalled.write_all(b"*2147483647\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stalled.write_all(b"$4\r\nPING\r\n$3\r\nabc\r\n").unwrap();
    let (got, closed) = read_for(&mut stalled, Duration::from_millis(500));
    let during = p.used();
    p.lines.push(format!(
        "raw  *2147483647 + 2 args, then silence -> {:?}, closed={closed}, used_memory {:+} KB",
        String::from_utf8_lossy(&got),
        (during as i64 - before as i64) / 1024
    ));
    if closed || !got.is_empty() {
        p.failures.push(format!(
            "RAW *2147483647 header: expected the server to wait silently, got {:?} closed={closed}",
            String::from_utf8_lossy(&got)
        ));
    }
    if during > before + 64 * MB {
        p.failures.push(format!("MEMORY *2147483647 header: used_memory +{} MB while waiting", (during - before) / MB));
    }
    if !Cli::try_connect(p.r.srv.addr).is_some_and(|mut c| c.ping(Duration::from_secs(5))) {
        p.failures.push("RAW *2147483647 header: other clients are not served".into());
    }
    drop(stalled);

    // A 512 MB bulk header on a connection opened before CONFIG SET proto-max-bulk-len 1mb:
    // Redis checks the live limit and refuses it.
    let before = p.used();
    early.write_all(b"*2\r\n$4\r\nECHO\r\n$536870912\r\n").unwrap();
    let (got, closed) = read_for(&mut early, Duration::from_millis(500));
    let during = p.used();
    p.lines.push(format!(
        "raw  $536870912 on a connection older than the CONFIG SET -> {:?}, closed={closed}, used_memory {:+} KB",
        String::from_utf8_lossy(&got),
        (during as i64 - before as i64) / 1024
    ));
    if !got.starts_with(b"-ERR Protocol error: invalid bulk length") {
        p.failures.push(format!(
            "LIMIT $536870912 on a connection opened before CONFIG SET proto-max-bulk-len 1mb: accepted (got {:?}, closed={closed}); the old limit still applies to it",
            String::from_utf8_lossy(&got)
        ));
    }
    if during > before + 64 * MB {
        p.failures.push(format!(
            "MEMORY $536870912 header (connection older than CONFIG SET): used_memory +{} MB before a byte of the body arrived",
            (during - before) / MB
        ));
    }
    drop(early);
    // The same on a new connection.
    let mut c = raw_connect(p.r.srv.addr);
    c.write_all(b"*2\r\n$4\r\nECHO\r\n$536870912\r\n").unwrap();
    let (got, closed) = read_for(&mut c, Duration::from_millis(500));
    p.lines
        .push(format!("raw  $536870912 on a new connection -> {:?}, closed={closed}", String::from_utf8_lossy(&got)));
    if !(got.starts_with(b"-ERR Protocol error: invalid bulk length") && closed) {
        p.failures.push(format!(
            "LIMIT $536870912 with proto-max-bulk-len 1mb: expected the protocol error and a close, got {:?} closed={closed}",
            String::from_utf8_lossy(&got)
        ));
    }
    drop(c);

    // With the default limit (512 MB) the header is legal; the server must still not
    // reserve the body before it arrives (three such clients would be 1.5 GB).
    p.limit = "512mb";
    p.setup();
    let before = p.used();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = raw_connect(p.r.srv.addr);
        c.write_all(b"*2\r\n$4\r\nECHO\r\n$536870912\r\nabc").unwrap();
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let during = p.used();
    let st = p.r.srv.mem();
    p.lines.push(format!(
        "raw  3 x $536870912 headers (default limit) -> used_memory {:+} MB, VmPeak {} MB",
        (during as i64 - before as i64) / MB as i64,
        st.peak / MB
    ));
    if during > before + 64 * MB {
        p.failures.push(format!(
            "MEMORY 3 clients each sending `*2\\r\\n$4\\r\\nECHO\\r\\n$536870912\\r\\n` and nothing more: used_memory +{} MB (the body is reserved up front from the header alone)",
            (during - before) / MB
        ));
    }
    if !Cli::try_connect(p.r.srv.addr).is_some_and(|mut c| c.ping(Duration::from_secs(5))) {
        p.failures.push("RAW $536870912 headers: other clients are not served".into());
    }
    drop(held);
    // Back to 1 MB for the argument probes.
    p.limit = "1mb";
    p.setup();

    let w = |s: &str| words(s);
    let m62 = "-4611686018427387904";
    let p62 = "4611686018427387904";
    let imin = "-9223372036854775808";
    let imax = "9223372036854775807";
    use Check::*;
    let cases: Vec<(Vec<Vec<u8>>, Check)> = vec![
        // Random members with a huge negative count (repetitions allowed).
        (w(&format!("SRANDMEMBER set {m62}")), Any),
        (w(&format!("SRANDMEMBER set {imin}")), Any),
        (w(&format!("HRANDFIELD h {m62}")), Any),
        (w(&format!("HRANDFIELD h {m62} WITHVALUES")), Any),
        (w(&format!("HRANDFIELD h {imin} WITHVALUES")), Any),
        (w(&format!("ZRANDMEMBER z {m62}")), Any),
        (w(&format!("ZRANDMEMBER z {m62} WITHSCORES")), Any),
        (w(&format!("ZRANDMEMBER z {imin} WITHSCORES")), Any),
        // The largest negative count HRANDFIELD accepts (2^27 picks) on a 2-field hash.
        (w("HRANDFIELD h -134217728"), Any),
        (w(&format!("SRANDMEMBER set {p62}")), Any),
        (w(&format!("SPOP set {p62}")), Any),
        (w(&format!("SPOP set {imax}")), Any),
        // Huge ranges on small keys.
        (w(&format!("LRANGE l 0 {p62}")), Any),
        (w(&format!("LRANGE l {m62} {p62}")), Any),
        (w(&format!("LRANGE l {imin} {imax}")), Any),
        (w(&format!("ZRANGE z 0 {p62}")), Any),
        (w(&format!("ZRANGE z {imin} {imax} WITHSCORES")), Any),
        (w(&format!("ZRANGE z -inf +inf BYSCORE LIMIT 0 {p62}")), Any),
        (w(&format!("ZRANGE z -inf +inf BYSCORE LIMIT {imax} {imax}")), Any),
        (w(&format!("ZRANGE zl - + BYLEX LIMIT {imin} {imin}")), Any),
        (w(&format!("ZRANGEBYSCORE z -inf +inf LIMIT {imax} {imax}")), Any),
        (w(&format!("ZREVRANGE z 0 {p62}")), Any),
        (w(&format!("ZRANGESTORE dst z 0 {p62}")), Any),
        (w(&format!("LPOP l {p62}")), Any),
        (w(&format!("ZPOPMIN z {p62}")), Any),
        (w(&format!("LMPOP 1 l LEFT COUNT {imax}")), Any),
        (w(&format!("ZMPOP 1 z MIN COUNT {imax}")), Any),
        (w("LMPOP 2147483647 l LEFT"), Any),
        (w("ZUNIONSTORE dst 2147483647 z"), Any),
        (w(&format!("ZINTER {imax} z")), Any),
        (w("SINTERCARD 2147483647 set"), Any),
        (w(&format!("SCAN 0 COUNT {p62}")), Any),
        (w(&format!("SSCAN set 0 COUNT {imax}")), Any),
        // Writes past proto-max-bulk-len (1 MB now) must be refused.
        (w("SETRANGE k 536870911 x"), Error),
        (w("SETRANGE k 1048576 x"), Error),
        (w(&format!("SETRANGE k {imax} x")), Error),
        (w("SETRANGE s 4294967295 x"), Error),
        (w("SETBIT k 4294967295 1"), Error),
        (w("SETBIT k 8388608 1"), Error),
        (w(&format!("SETBIT k {imax} 1")), Error),
        (w("SETBIT k 4294967296 1"), Error),
        (w("BITFIELD k SET u8 4294967295 1"), Error),
        (w("BITFIELD k SET i64 #536870911 1"), Error),
        (w(&format!("BITFIELD k SET u8 #{imax} 1")), Error),
        (w("BITFIELD k INCRBY u63 34359738367 1"), Error),
        (w("BITFIELD k SET u8 8388608 1"), Error),
        (w(&format!("BITFIELD_RO k GET i64 #{p62}")), Any),
        (w("BITFIELD k GET u8 4294967295"), Any),
        // Reads with huge offsets stay small.
        (w(&format!("GETRANGE s 0 {imax}")), Any),
        (w(&format!("GETRANGE s {imin} {imax}")), Any),
        (w(&format!("GETRANGE s {p62} {p62}")), Any),
        (w(&format!("SUBSTR s -1 {imin}")), Any),
        (w(&format!("BITCOUNT s 0 {imin}")), Any),
        (w(&format!("BITCOUNT s {imin} -1 BIT")), Any),
        (w(&format!("BITPOS s 1 {imin} {imax} BIT")), Any),
        (w(&format!("BITPOS s 0 {imax}")), Any),
        // LPOS / LINSERT / LSET odd arguments.
        (w(&format!("LPOS l a RANK {imin}")), Any),
        (w("LPOS l a COUNT -1"), Any),
        (w("LPOS l a MAXLEN -1"), Any),
        (w(&format!("LPOS l a COUNT {p62}")), Any),
        (w(&format!("LPOS l a RANK {imax} COUNT 0 MAXLEN 0")), Any),
        (w(&format!("LPOS l a RANK -1 COUNT {imax} MAXLEN {imax}")), Any),
        (w("LINSERT l BEFORE nonexistent x"), Any),
        (w("LINSERT l MIDDLE a x"), Any),
        (w("LINSERT missing BEFORE a x"), Any),
        (w(&format!("LSET l {imax} x")), Any),
        (w(&format!("LINDEX l {imin}")), Any),
        (w(&format!("LTRIM l {imin} {imax}")), Any),
        (w(&format!("ZREMRANGEBYRANK z {imin} {imax}")), Any),
        // SORT with giant windows.
        (w(&format!("SORT l LIMIT 0 {p62}")), Any),
        (w(&format!("SORT l LIMIT {p62} {p62}")), Any),
        (w(&format!("SORT l LIMIT {imin} {imin}")), Any),
        (w(&format!("SORT l LIMIT {imax} {imax} ALPHA")), Any),
        (w(&format!("SORT l BY nosort LIMIT 0 {imax} GET # GET # GET # GET # GET # GET # GET # GET #")), Any),
        (w(&format!("SORT l ALPHA LIMIT 0 {p62} STORE dst")), Any),
        (w(&format!("SORT_RO l ALPHA LIMIT -1 {imax}")), Any),
        // Expiry arithmetic at the edges.
        (w(&format!("SETEX s {imax} v")), Any),
        (w(&format!("SET s v EX {imax}")), Any),
        (w(&format!("SET s v PX {imax}")), Any),
        (w(&format!("EXPIRE s {imax}")), Any),
        (w(&format!("EXPIRE s {imin}")), Any),
        (w(&format!("PEXPIRE s {imax}")), Any),
        (w(&format!("EXPIREAT s {imax}")), Any),
        (w(&format!("GETEX s EX {imax}")), Any),
        (w(&format!("GETEX s PXAT {imax}")), Any),
        // Blocking commands with absurd timeouts on an empty key must answer now.
        (w(&format!("BLPOP nokey {imax}")), Any),
        (w("BLPOP nokey 1e400"), Any),
        (w("BLPOP nokey nan"), Any),
        // A tiny positive timeout is 1 ms in Redis (ceil), not "forever".
        (w("BLPOP nokey 1e-400"), Any),
        (w("BZPOPMIN nokey 1e-300"), Any),
        (w(&format!("BZPOPMIN nokey {imax}")), Any),
        (w(&format!("BLMPOP {imax} 1 nokey LEFT")), Any),
        (w(&format!("WAIT 1 {imax}")), Any),
        // Introspection with hostile counts.
        (w(&format!("SLOWLOG GET {imin}")), Any),
        (w(&format!("SLOWLOG GET {imax}")), Any),
        (w(&format!("CLIENT LIST ID -1 0 {imax}")), Any),
        (w(&format!("CLIENT UNBLOCK {imax}")), Any),
        (w("COMMAND GETKEYS ZUNIONSTORE dst 2147483647 a"), Any),
        (w(&format!("COMMAND GETKEYS LMPOP {imax} a LEFT")), Any),
        (w("COMMAND GETKEYS SORT k STORE"), Any),
        (w(&format!("COMMAND GETKEYS ZINTER {imin} a")), Any),
        (w(&format!("COMMAND GETKEYS BLMPOP 0 {imax} a LEFT")), Any),
        (w(&format!("SELECT {imax}")), Any),
        (w(&format!("SWAPDB 0 {imax}")), Any),
        (w(&format!("MOVE s {imin}")), Any),
        (w(&format!("COPY s d DB {imax}")), Any),
        (w(&format!("MEMORY USAGE s SAMPLES {imin}")), Any),
        (w(&format!("CONFIG SET hz {imax}")), Any),
        (w(&format!("CONFIG SET slowlog-max-len {imax}")), Any),
        (w(&format!("CONFIG SET maxmemory-samples {imax}")), Any),
        (w(&format!("CONFIG SET list-max-listpack-size {imin}")), Any),
    ];
    for (argv, check) in cases {
        p.probe(&[], argv, check);
    }

    // APPEND growth past the limit: 900 KB, then +200 KB, then 100 KB at a time.
    let big = |n: usize| vec![b'x'; n];
    p.probe(
        &[vec![b"SET".to_vec(), b"a".to_vec(), big(900 * 1024)]],
        vec![b"APPEND".to_vec(), b"a".to_vec(), big(200 * 1024)],
        MaxLen("a", limit),
    );
    let mut prep = vec![vec![b"SET".to_vec(), b"a".to_vec(), big(100 * 1024)]];
    for _ in 0..12 {
        prep.push(vec![b"APPEND".to_vec(), b"a".to_vec(), big(100 * 1024)]);
    }
    p.probe(&prep, vec![b"APPEND".to_vec(), b"a".to_vec(), big(100 * 1024)], MaxLen("a", limit));
    p.probe(&[vec![b"SET".to_vec(), b"a".to_vec(), big(1 << 20)]], w("SETRANGE a 1048576 x"), MaxLen("a", limit));
    p.probe(&[vec![b"SET".to_vec(), b"a".to_vec(), big(1 << 20)]], w("SETBIT a 8388608 1"), MaxLen("a", limit));
    p.probe(
        &[vec![b"SET".to_vec(), b"a".to_vec(), big(1 << 20)]],
        w("BITFIELD a SET u8 8388608 1"),
        MaxLen("a", limit),
    );
    p.probe(
        &[vec![b"SET".to_vec(), b"a".to_vec(), big(600 * 1024)], vec![b"SET".to_vec(), b"b".to_vec(), big(600 * 1024)]],
        w("BITOP OR c a b"),
        MaxLen("c", limit),
    );
    // A modest negative count on a member of 10 KB: 10 GB of reply.
    let fat = vec![b'm'; 10_000];
    p.probe(&[vec![b"ZADD".to_vec(), b"zf".to_vec(), b"1".to_vec(), fat.clone()]], w("ZRANDMEMBER zf -1000000"), Any);
    p.probe(&[vec![b"SADD".to_vec(), b"sf".to_vec(), fat.clone()]], w("SRANDMEMBER sf -1000000"), Any);
    p.probe(&[vec![b"HSET".to_vec(), b"hf".to_vec(), fat, b"v".to_vec()]], w("HRANDFIELD hf -1000000"), Any);
    // LCS of two 8 KB strings: a full (n+1)x(m+1) table would be 256 MB.
    let mut x: u32 = 7;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b'a' + ((x >> 16) % 26) as u8
            })
            .collect()
    };
    let lcs_prep =
        vec![vec![b"SET".to_vec(), b"l1".to_vec(), rnd(8192)], vec![b"SET".to_vec(), b"l2".to_vec(), rnd(8192)]];
    p.probe(&lcs_prep, w("LCS l1 l2 LEN"), Any);
    p.probe(&lcs_prep, w("LCS l1 l2"), Any);
    p.probe(&lcs_prep, w("LCS l1 l2 IDX MINMATCHLEN 5"), Any);

    // RESTORE of crafted payloads claiming huge counts (valid checksum).
    if let Ok(Value::Bulk(d)) = p.r.cli.call(&w("DUMP l"), Duration::from_secs(5)) {
        if d.len() > 10 && fnv1a(&d[..d.len() - 8]).to_le_bytes() == d[d.len() - 8..] {
            let ver = [d[d.len() - 10], d[d.len() - 9]];
            let tag = d[0];
            for (t, n) in [
                (tag, 1u64 << 40),
                (0, 1 << 62),
                (1, 1 << 40),
                (2, 1 << 40),
                (3, 1 << 40),
                (4, 1 << 40),
                (1, u64::MAX >> 1),
            ] {
                let mut body = vec![t];
                put_len(&mut body, n);
                body.extend_from_slice(b"\x01a\x01b");
                body.extend_from_slice(&ver);
                let crc = fnv1a(&body);
                body.extend_from_slice(&crc.to_le_bytes());
                p.probe(&[], vec![b"RESTORE".to_vec(), b"r".to_vec(), b"0".to_vec(), body, b"REPLACE".to_vec()], Any);
            }
            let mut body = d[..d.len() - 8].to_vec();
            let crc = fnv1a(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            p.probe(
                &[],
                vec![b"RESTORE".to_vec(), b"r".to_vec(), imax.as_bytes().to_vec(), body.clone(), b"REPLACE".to_vec()],
                Any,
            );
            p.probe(
                &[],
                vec![
                    b"RESTORE".to_vec(),
                    b"r".to_vec(),
                    imax.as_bytes().to_vec(),
                    body,
                    b"REPLACE".to_vec(),
                    b"ABSTTL".to_vec(),
                ],
                Any,
            );
        }
    }

    std::thread::sleep(Duration::from_millis(200));
    let after = p.used();
    if p.r.srv.exited().is_some() {
        p.failures.push("CRASH server died during the raw header probes".into());
    }
    p.lines.push(format!("used_memory: baseline {baseline}, at the end {after}"));
    eprintln!("t50 memory probes:\n  {}", p.lines.join("\n  "));
    if !p.failures.is_empty() {
        panic!("{} memory/limit failure(s):\n  {}", p.failures.len(), p.failures.join("\n  "));
    }
}

// ---------------------------------------------------------------------------------------
// part 3: garbage over the wire
// ---------------------------------------------------------------------------------------

fn fixed_garbage() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        // nested arrays and RESP3 types in requests
        &b"*2\r\n*1\r\n$4\r\nPING\r\n$1\r\na\r\n"[..],
        b"*1\r\n*1\r\n*1\r\n*1\r\n$4\r\nPING\r\n",
        b"%1\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"~1\r\n$4\r\nPING\r\n",
        b">1\r\n$4\r\nPING\r\n",
        b"|1\r\n+a\r\n+b\r\n*1\r\n$4\r\nPING\r\n",
        b"#t\r\n",
        b",1.5\r\n",
        b"(123\r\n",
        b"=5\r\ntxt:a\r\n",
        b"_\r\n",
        b"*1\r\n:1\r\n",
        b"*1\r\n+PING\r\n",
        b"*1\r\n-ERR\r\n",
        b"*2\r\n$4\r\nECHO\r\n*1\r\n$1\r\na\r\n",
        // inline with unbalanced or odd quotes
        b"SET k \"abc\r\n",
        b"\"\r\n",
        b"'\r\n",
        b"ECHO \"\\x\"\r\n",
        b"ECHO \"\\xZZ\"\r\n",
        b"ECHO \"\\x4\"\r\n",
        b"\"a\"b\r\n",
        b"''''\r\n",
        b"\\\"\r\n",
        b"ECHO \"\\\r\n",
        b"ECHO 'a\\'\r\n",
        b"ECHO \"a\" \"b\r\n",
        b"\"\"\"\r\n",
        b"\0\0\0\r\n",
        b"   \t  \r\n",
        b"\r\r\r\n",
        b"\n\n\n\n",
        b"ECHO \"\xff\xfe\"\r\n",
        // bogus lengths
        b"*-2\r\n",
        b"*1\r\n$-2\r\n",
        b"*1\r\n$9223372036854775808\r\n",
        b"*99999999999999999999\r\n",
        b"*9223372036854775807\r\n",
        b"*-9223372036854775808\r\n",
        b"*1\r\n$1\r\nab\r\n",
        b"*1\r\n$0\r\n\r\n",
        b"*1\r\n$3\r\nfoo",
        b"*+1\r\n$4\r\nPING\r\n",
        b"* 1\r\n",
        b"*1 \r\n$4\r\nPING\r\n",
        b"*0x10\r\n",
        b"*1\r\n$ 3\r\nfoo\r\n",
        b"*1\r\n$3\nfoo\n",
        b"*\r\n",
        b"$3\r\nfoo\r\n",
        b"*2\r\n$4\r\nECHO\r\n$-1\r\n",
        b"*1\r\n$4\r\nPING\r\r\r\n",
        b"*1\r\n$4\r\nPINGXX*1\r\n$4\r\nPING\r\n",
        b"*1\r\n$-0\r\n",
        b"*-0\r\n",
        b"*1\r\n$+4\r\nPING\r\n",
        b"*1\r\n$04\r\nPING\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2147483648\r\n",
        b"*2\r\n$4\r\nPING\r\n",
        b"*1\r\n$4\r\nPING\r\n*",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    // deep nesting
    let mut deep = b"*1\r\n".repeat(10_000);
    deep.extend_from_slice(b"$4\r\nPING\r\n");
    v.push(deep);
    // a long inline line with quotes
    let mut long = b"ECHO \"".to_vec();
    long.extend(vec![b'x'; 60_000]);
    long.extend_from_slice(b"\r\n");
    v.push(long);
    // valid commands followed by garbage in the same write
    let mut mixed = b"PING\r\nECHO hi\r\n".to_vec();
    mixed.extend_from_slice(b"*1\r\n*0\r\n\x00\xff");
    v.push(mixed);
    v
}

#[rustfmt::skip]
const RESPISH: &[&[u8]] = &[
    b"*", b"$", b"\r\n", b"-1", b"0", b"1", b"2", b"3", b"2147483647", b"9999999999", b"PING", b"ECHO", b"SET", b"k",
    b"\"", b"'", b" ", b"\\x", b"%", b"~", b">", b"_", b",", b"#", b"(", b"=", b"|", b"\n", b"\r", b"\0", b"-", b"+",
];

fn random_garbage(rng: &mut SmallRng) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 => (0..rng.gen_range(1..2000)).map(|_| rng.gen()).collect(),
        1 | 2 => {
            let mut v = Vec::new();
            for _ in 0..rng.gen_range(1..40) {
                v.extend_from_slice(RESPISH[rng.gen_range(0..RESPISH.len())]);
            }
            v
        }
        3 => {
            // A valid frame cut short.
            let n = rng.gen_range(1..5);
            let args: Vec<Vec<u8>> = (0..n)
                .map(|i| if i == 0 { b"SET".to_vec() } else { (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect() })
                .collect();
            let f = mbulk(&args);
            f[..rng.gen_range(1..f.len())].to_vec()
        }
        4 => {
            // Inline words with quotes and escapes.
            let parts: &[&[u8]] =
                &[b"ECHO", b"a", b"\"", b"'", b"\\", b"\\x4", b"\\x41", b" ", b"\t", b"\\\"", b"\\'", b"b"];
            let mut v = b"ECHO ".to_vec();
            for _ in 0..rng.gen_range(1..20) {
                v.extend_from_slice(parts[rng.gen_range(0..parts.len())]);
            }
            v.extend_from_slice(b"\r\n");
            v
        }
        _ => {
            // A valid command, then random bytes.
            let mut v = mbulk(&[b"PING".to_vec()]);
            v.extend((0..rng.gen_range(1..100)).map(|_| rng.gen::<u8>()));
            v
        }
    }
}

struct Wire {
    srv: Server,
    sentinel: Cli,
    failures: Vec<String>,
    cases: u64,
    /// Connections the server closed (after a protocol error), and ones it answered.
    closed: u64,
    answered: u64,
}

impl Wire {
    /// Sends each payload on its own connection (all at once), reads what comes back, and
    /// checks: well-formed RESP, no panic on stderr, the process alive, the sentinel and a
    /// new connection answering PING. Returns false if anything failed (for bisection).
    fn batch(&mut self, payloads: &[Vec<u8>], record: bool) -> bool {
        let log0 = self.srv.log_len();
        let mut conns: Vec<(TcpStream, Vec<u8>, bool)> = Vec::new();
        for p in payloads {
            let mut s = raw_connect(self.srv.addr);
            let _ = s.write_all(p);
            conns.push((s, Vec::new(), false));
        }
        self.cases += payloads.len() as u64;
        std::thread::sleep(Duration::from_millis(100));
        for (s, got, closed) in conns.iter_mut() {
            let (b, c) = read_for(s, Duration::from_millis(20));
            *got = b;
            *closed = c;
        }
        let mut ok = true;
        for (i, (_, got, closed)) in conns.iter().enumerate() {
            if record || payloads.len() > 1 {
                self.closed += *closed as u64;
                self.answered += !got.is_empty() as u64;
            }
            // A reply still arriving is fine while open; once closed it must be complete.
            match frames(got) {
                Ok(_) => {}
                Err(e) if !*closed && e.starts_with("truncated") => {}
                Err(e) => {
                    ok = false;
                    if record {
                        self.failures.push(format!(
                            "MALFORMED reply to garbage {:?}: {e}; bytes {:?}",
                            show(&payloads[i]),
                            String::from_utf8_lossy(got)
                        ));
                    }
                }
            }
        }
        drop(conns);
        std::thread::sleep(Duration::from_millis(20));
        if let Some(st) = self.srv.exited() {
            if record {
                self.failures.push(format!(
                    "CRASH on garbage (one of {} payloads, see below): {st}; stderr: {}",
                    payloads.len(),
                    excerpt(&self.srv.log_from(log0))
                ));
            }
            return false;
        }
        let log = self.srv.log_from(log0);
        if !log.trim().is_empty() {
            ok = false;
            if record {
                self.failures.push(format!("PANIC on garbage: {}", excerpt(&log)));
            }
        }
        if !self.sentinel.ping(Duration::from_secs(5)) {
            ok = false;
            if record {
                self.failures
                    .push("the sentinel connection stopped answering PING while garbage was sent on others".into());
            }
            self.sentinel = Cli::connect(self.srv.addr);
        }
        if !Cli::try_connect(self.srv.addr).is_some_and(|mut c| c.ping(Duration::from_secs(5))) {
            ok = false;
            if record {
                self.failures.push("a new connection got no PONG after a garbage batch".into());
            }
        }
        ok
    }

    /// Runs a batch; when it fails, re-runs its payloads one by one to name the culprits.
    fn run(&mut self, payloads: &[Vec<u8>]) {
        if self.batch(payloads, false) {
            return;
        }
        if self.srv.exited().is_some() {
            self.srv.restart();
            self.sentinel = Cli::connect(self.srv.addr);
        }
        for p in payloads {
            let n = self.failures.len();
            if !self.batch(std::slice::from_ref(p), true) {
                if self.failures.len() == n {
                    self.failures.push(format!("FAILURE on garbage {:?}", show(p)));
                } else {
                    let last = self.failures.pop().unwrap();
                    self.failures.push(format!("{last}\n      payload: {:?}", show(p)));
                }
                if self.srv.exited().is_some() {
                    self.srv.restart();
                    self.sentinel = Cli::connect(self.srv.addr);
                }
            }
        }
    }
}

fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(200) {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > 200 {
        s.push_str(&format!("...({} bytes)", b.len()));
    }
    s
}

#[test]
fn garbage_over_the_wire() {
    let srv = Server::start(&[]);
    let mut sentinel = Cli::connect(srv.addr);
    assert!(sentinel.ping(Duration::from_secs(5)));
    let _ = sentinel.call(&words("SET keep me"), Duration::from_secs(5));
    let baseline = sentinel.used_memory();
    let mut w = Wire { srv, sentinel, failures: Vec::new(), cases: 0, closed: 0, answered: 0 };
    let fixed = fixed_garbage();
    for chunk in fixed.chunks(16) {
        w.run(chunk);
    }
    // Slow delivery: garbage one byte per write.
    for p in [&b"*2\r\n$4\r\nECHO\r\n$-5\r\n"[..], b"ECHO \"a\\x4", b"*1\r\n*1\r\n$4\r\nPING\r\n"] {
        let mut s = raw_connect(w.srv.addr);
        for b in p {
            if s.write_all(std::slice::from_ref(b)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let (got, closed) = read_for(&mut s, Duration::from_millis(100));
        if let Err(e) = frames(&got) {
            if closed || !e.starts_with("truncated") {
                w.failures.push(format!("MALFORMED reply to byte-by-byte {:?}: {e}", show(p)));
            }
        }
    }
    let mut rng = SmallRng::seed_from_u64(seed() ^ 0x6A5B);
    let deadline = Instant::now() + Duration::from_secs(env_u64("T50_GARBAGE_SECS", 8));
    // Stalled half-frames held open the whole time.
    let mut stalled = Vec::new();
    for p in [&b"*3\r\n$3\r\nSET\r\n$1\r\nk"[..], b"*2147483647\r\n", b"ECHO \"unterminated", b"*1\r\n$100\r\nabc"] {
        let mut s = raw_connect(w.srv.addr);
        s.write_all(p).unwrap();
        stalled.push(s);
    }
    while Instant::now() < deadline {
        let batch: Vec<Vec<u8>> = (0..24).map(|_| random_garbage(&mut rng)).collect();
        w.run(&batch);
    }
    drop(stalled);
    std::thread::sleep(Duration::from_millis(200));
    if w.srv.exited().is_none() {
        let mut c = Cli::connect(w.srv.addr);
        match c.call(&words("GET keep"), Duration::from_secs(5)) {
            Ok(Value::Bulk(v)) if v == b"me" => {}
            other => w.failures.push(format!("the keyspace changed under garbage: GET keep -> {other:?}")),
        }
        let used = c.used_memory();
        if used > baseline + 64 * MB {
            w.failures.push(format!("MEMORY used_memory {baseline} -> {used} after the garbage connections closed"));
        }
    }
    eprintln!(
        "t50 garbage: {} payloads sent; {} connections got bytes back, {} were closed by the server",
        w.cases, w.answered, w.closed
    );
    if !w.failures.is_empty() {
        w.failures.dedup();
        panic!("{} garbage failure(s):\n  {}", w.failures.len(), w.failures.join("\n  "));
    }
}
