//! # redoubt-tests
//!
//! Cross-crate integration tests (in `tests/tests/`) and their harness: starting redoubt
//! in-process on `127.0.0.1:0`, starting the real `redis-server` oracle on a free port, and
//! talking to both with `redoubt-client`.
//!
//! Where it sits: outside the write flow, on the client side of the wire. Everything here
//! speaks to servers over TCP only, so a test sees exactly what a Redis client would.
//!
//! * [`start_redoubt`] runs `redoubt_server::start("127.0.0.1:0", Config::from_args(..))` on a
//!   runtime of its own, so the same [`Server`] works from plain `#[test]` functions (the
//!   proptest-driven differential tests) and from `#[tokio::test]` ones.
//! * [`Oracle::start`] launches `/usr/bin/redis-server` (Redis 7.0.15 from Debian) with no
//!   persistence on a free port and kills it on drop. When the binary is missing the test is
//!   skipped with a note, unless `CI=true`, where a missing oracle is a failure.
//! * [`Conn`] is a blocking wrapper around `redoubt_client::Client` with a timeout on every
//!   reply, so a hung server fails a test instead of hanging CI.
//! * [`compare`] judges a redoubt reply against the oracle's for the same command: exact by
//!   default, order-insensitive where Redis leaves order unspecified, by shape for random
//!   replies, with a tolerance for TTL-like numbers.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use redoubt_client::{Client, Value};

pub mod cluster;
pub mod compare;
pub mod gateway;
pub mod linearize;
pub mod smpp;

/// Longest a single reply may take before a test gives up on the server.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// True when running under CI (`CI=true`), where missing tools are failures, not skips.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Reports that a test cannot run because `what` is missing: a panic under CI, a printed
/// note (and `false`, so the caller returns early) otherwise.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{what} is required when CI=true (install it: see .ci/run)");
    }
    eprintln!("note: skipping test: {what} is not available (set CI=true to make this a failure)");
    false
}

/// Finds an executable by name on PATH (or an absolute path that exists).
pub fn which(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|f| f.is_file())
}

/// A port that was free a moment ago, for a server a test starts as a child process.
///
/// Taken below Linux's ephemeral range (32768-60999), where the kernel never hands out
/// ports itself: a port from `bind 127.0.0.1:0`, released and given to a child, could be
/// taken meanwhile as the local port of some other test's outgoing connection (seen as
/// "Address already in use" at a node's start when cluster tests ran side by side). Each
/// test process walks its own pid-seeded sequence, skipping ports in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 32_768 - LOW;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let port = (LOW + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(97))) % SPAN) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A fresh, empty scratch directory under the system temp dir, removed by its guard.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            stamp % 1_000_000_000
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // KEEP_TMP=1 keeps logs and data of a failing test for a look afterwards.
        if std::env::var_os("KEEP_TMP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// redoubt, in-process
// ---------------------------------------------------------------------------------------

/// A redoubt server running in this process on its own tokio runtime.
pub struct Server {
    pub addr: SocketAddr,
    handle: Option<redoubt_server::Handle>,
    rt: Option<tokio::runtime::Runtime>,
}

/// Starts redoubt on `127.0.0.1:<ephemeral>` with `redis-server`-style arguments
/// (`&["--maxmemory", "1mb"]`). Panics if the arguments are refused.
///
/// Unless the arguments say otherwise, the server runs in memory (`--durability none`):
/// these suites test commands; durability has its own (t60) with real processes and disks.
pub fn start_redoubt(config_args: &[&str]) -> Server {
    let mut args: Vec<String> = config_args.iter().map(|s| s.to_string()).collect();
    if !args.iter().any(|a| a == "--durability") {
        args.splice(0..0, ["--durability".to_string(), "none".to_string()]);
    }
    let config = redoubt_server::Config::from_args(&args).unwrap_or_else(|e| panic!("redoubt config {args:?}: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("redoubt-under-test")
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Not `block_on`: the caller may itself be inside a runtime (#[tokio::test]).
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(redoubt_server::start("127.0.0.1:0", config).await);
    });
    let handle = rx.recv().expect("server start task").expect("redoubt_server::start");
    Server { addr: handle.addr, handle: Some(handle), rt: Some(rt) }
}

impl Server {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server's shared state (config, counters, clients) for white-box checks.
    pub fn shared(&self) -> &Arc<redoubt_server::Shared> {
        &self.handle.as_ref().expect("running").shared
    }

    /// A blocking connection (RESP2).
    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// An async client for `#[tokio::test]`s (RESP2).
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await.expect("connect to redoubt")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.handle.take());
        if let Some(rt) = self.rt.take() {
            // Dropping the runtime cancels the accept loop and every connection task.
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------
// redis-server, the oracle
// ---------------------------------------------------------------------------------------

/// Path of the oracle binary: `$REDIS_SERVER`, else `redis-server` on PATH.
pub fn redis_server_bin() -> Option<PathBuf> {
    match std::env::var("REDIS_SERVER") {
        Ok(p) if !p.is_empty() => which(&p),
        _ => which("redis-server").or_else(|| which("/usr/bin/redis-server")),
    }
}

/// A real `redis-server` on a free port, killed on drop.
pub struct Oracle {
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Oracle {
    /// Starts the oracle with default settings, or returns `None` (after a note) when
    /// `redis-server` is not installed. Under `CI=true` a missing binary panics.
    pub fn start() -> Option<Oracle> {
        Oracle::start_with(&[])
    }

    /// Like [`Oracle::start`] with extra `--directive value` arguments.
    pub fn start_with(extra: &[&str]) -> Option<Oracle> {
        let bin = redis_server_bin();
        if !require(bin.is_some(), "redis-server (the oracle, Debian package redis-server)") {
            return None;
        }
        let bin = bin.unwrap();
        let mut last_err = String::new();
        // The port is free when we look; another process may take it before redis-server
        // binds, so retry a few times with a new one.
        for _ in 0..5 {
            let dir = TempDir::new("redoubt-oracle");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("redis.log")).expect("log file");
            let mut cmd = Command::new(&bin);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--protected-mode", "no", "--logfile", ""])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log);
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut o = Oracle { addr: SocketAddr::from(([127, 0, 0, 1], port)), child, dir };
            match o.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Some(o),
                Err(e) => last_err = format!("{e}\n--- redis.log ---\n{}", o.log()),
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("redis-server exited: {st}"));
            }
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut b = [0u8; 64];
                    if let Ok(n) = s.read(&mut b) {
                        // Any reply will do (-NOAUTH with requirepass, -LOADING is not one).
                        if b[..n].starts_with(b"+PONG") || b[..n].starts_with(b"-NOAUTH") {
                            return Ok(());
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err("no PONG within the deadline".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The oracle's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await.expect("connect to redis-server")
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// blocking connections
// ---------------------------------------------------------------------------------------

/// A blocking connection: `redoubt_client::Client` driven by a private current-thread
/// runtime, with [`REPLY_TIMEOUT`] on every reply. Not for use inside an async context.
pub struct Conn {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    pub addr: SocketAddr,
    pub resp3: bool,
    /// How long a reply may take ([`REPLY_TIMEOUT`] unless [`Conn::set_reply_timeout`]).
    timeout: Duration,
}

/// Why a [`Conn`] call produced no reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnError {
    Timeout,
    Closed,
    Other(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Timeout => write!(f, "no reply in time"),
            ConnError::Closed => write!(f, "connection closed by server"),
            ConnError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr, REPLY_TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects, or says why not (refused: the node is down; a timeout), without panicking:
    /// for clients that go on while nodes die.
    pub fn try_connect(addr: SocketAddr, within: Duration) -> Result<Conn, ConnError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let client = match rt.block_on(async { tokio::time::timeout(within, Client::connect(addr)).await }) {
            Err(_) => return Err(ConnError::Timeout),
            Ok(Err(e)) => return Err(ConnError::Other(e.to_string())),
            Ok(Ok(c)) => c,
        };
        Ok(Conn { rt, client: Some(client), addr, resp3: false, timeout: REPLY_TIMEOUT })
    }

    /// Sets how long each reply may take from now on.
    pub fn set_reply_timeout(&mut self, d: Duration) {
        self.timeout = d;
    }

    fn run<T>(&mut self, f: impl AsyncOnce<T>) -> Result<T, ConnError> {
        let client = self.client.as_mut().ok_or(ConnError::Closed)?;
        let timeout = self.timeout;
        let r = self.rt.block_on(async { tokio::time::timeout(timeout, f.call(client)).await });
        match r {
            Err(_) => {
                // The stream is now out of step with our requests: drop it.
                self.client = None;
                Err(ConnError::Timeout)
            }
            Ok(Err(redoubt_client::Error::Closed)) => {
                self.client = None;
                Err(ConnError::Closed)
            }
            Ok(Err(e)) => {
                self.client = None;
                Err(ConnError::Other(e.to_string()))
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Sends a command, returns its reply (or why there is none).
    pub fn try_cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, ConnError> {
        let argv: Vec<Vec<u8>> = args.iter().map(|a| a.as_ref().to_vec()).collect();
        self.run(Cmd(argv))
    }

    /// Sends a command and returns its reply; panics when there is no reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        let shown = render_command(args);
        self.try_cmd(args).unwrap_or_else(|e| panic!("{shown} on {}: {e}", self.addr))
    }

    /// Sends all commands in one write and reads every reply.
    pub fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> Result<Vec<Value>, ConnError> {
        let cmds: Vec<Vec<Vec<u8>>> = cmds.iter().map(|c| c.iter().map(|a| a.as_ref().to_vec()).collect()).collect();
        self.run(Pipe(cmds))
    }

    /// `HELLO 3`; returns the server's HELLO reply.
    pub fn hello3(&mut self) -> Result<Value, ConnError> {
        let v = self.run(Hello3)?;
        self.resp3 = !v.is_error();
        Ok(v)
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.run(Raw(bytes.to_vec()))
    }

    /// Reads one frame (replies and pushes alike).
    pub fn read_frame(&mut self) -> Result<Value, ConnError> {
        self.run(ReadFrame)
    }

    /// Reads one frame, waiting at most `d` (for "nothing should arrive" checks).
    pub fn read_frame_within(&mut self, d: Duration) -> Option<Value> {
        let client = self.client.as_mut()?;
        self.rt.block_on(async { tokio::time::timeout(d, client.read_frame()).await }).ok().and_then(|r| r.ok())
    }

    /// The async client inside, for what the wrapper does not offer.
    pub fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("connection open")
    }
}

// Small adapters so `Conn::run` can take "an async closure over &mut Client" on stable Rust.
pub trait AsyncOnce<T> {
    fn call(self, c: &mut Client) -> impl std::future::Future<Output = redoubt_client::Result<T>>;
}
struct Cmd(Vec<Vec<u8>>);
impl AsyncOnce<Value> for Cmd {
    async fn call(self, c: &mut Client) -> redoubt_client::Result<Value> {
        c.cmd(&self.0).await
    }
}
struct Pipe(Vec<Vec<Vec<u8>>>);
impl AsyncOnce<Vec<Value>> for Pipe {
    async fn call(self, c: &mut Client) -> redoubt_client::Result<Vec<Value>> {
        c.pipeline(&self.0).await
    }
}
struct Hello3;
impl AsyncOnce<Value> for Hello3 {
    async fn call(self, c: &mut Client) -> redoubt_client::Result<Value> {
        c.hello3().await
    }
}
struct Raw(Vec<u8>);
impl AsyncOnce<()> for Raw {
    async fn call(self, c: &mut Client) -> redoubt_client::Result<()> {
        c.send_raw(&self.0).await
    }
}
struct ReadFrame;
impl AsyncOnce<Value> for ReadFrame {
    async fn call(self, c: &mut Client) -> redoubt_client::Result<Value> {
        c.read_frame().await
    }
}

/// Renders a command the way `redis-cli` would echo it: words quoted when they need it.
pub fn render_command<A: AsRef<[u8]>>(args: &[A]) -> String {
    args.iter().map(|a| quote_arg(a.as_ref())).collect::<Vec<_>>().join(" ")
}

/// Quotes one argument for display (`"a b"`, `"\x00"`), bare when it is a plain word.
pub fn quote_arg(a: &[u8]) -> String {
    let plain = !a.is_empty() && a.iter().all(|&c| c.is_ascii_graphic() && c != b'"' && c != b'\'' && c != b'\\');
    if plain {
        return String::from_utf8_lossy(a).into_owned();
    }
    let mut s = String::from("\"");
    for &c in a {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

/// Path of a tool from redis-tools (`redis-cli`, `redis-benchmark`), or `None`.
pub fn redis_tool(name: &str) -> Option<PathBuf> {
    which(name)
}

/// Runs a child process to completion with a deadline; kills it when the deadline passes.
/// Returns (exit success, stdout, stderr).
pub fn run_with_deadline(mut cmd: Command, stdin: Option<Vec<u8>>, within: Duration) -> (bool, String, String) {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let writer = stdin.map(|data| {
        let mut si = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            let _ = si.write_all(&data);
        })
    });
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let ro = std::thread::spawn(move || read_all(out));
    let re = std::thread::spawn(move || read_all(err));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let so = ro.join().unwrap_or_default();
    let mut se = re.join().unwrap_or_default();
    if status.is_none() {
        se.push_str(&format!("\n[harness: killed {shown} after {within:?}]"));
    }
    (status.is_some_and(|s| s.success()), so, se)
}

fn read_all(mut r: impl std::io::Read) -> String {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

/// The `redoubt` binary cargo built next to this test (`$REDOUBT_BIN` overrides).
///
/// Found from the test executable's own path, so it follows `CARGO_TARGET_DIR` and the
/// profile: `cargo build --release -p redoubt-server` before `cargo nextest run --release`.
pub fn redoubt_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REDOUBT_BIN") {
        return PathBuf::from(p);
    }
    // <target dir>/<profile>/deps/<test> -> <target dir>/<profile>/redoubt
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("redoubt")).expect("target dir");
    assert!(bin.is_file(), "{} not built (cargo builds it with the workspace)", bin.display());
    bin
}

/// redoubt as a child process (the binary cargo built), on a free port with its own
/// `--dir`: for tests that kill it (`kill -9`) and start it again on the same data.
pub struct Node {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Node {
    /// Starts redoubt on `dir` and waits until it serves (PING answers PONG, not LOADING).
    pub fn start(dir: &Path, extra: &[&str]) -> Node {
        Node::start_on(free_port(), dir, extra)
    }

    /// Like [`Node::start`] on a given client port.
    pub fn start_on(port: u16, dir: &Path, extra: &[&str]) -> Node {
        let log = dir.join(format!("server-{port}.log"));
        // Appended to: a node restarted on its data keeps the log of its earlier lives.
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let _ = std::io::Write::write_all(&mut file, format!("--- redoubt starting on port {port}\n").as_bytes());
        let child = std::process::Command::new(redoubt_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(dir)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn redoubt");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut node = Node { child, addr, log };
        node.wait_ready(std::time::Duration::from_secs(30));
        node
    }

    pub fn wait_ready(&mut self, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("redoubt exited at startup ({st}):\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                let mut c = Conn::connect(self.addr);
                if let Ok(Value::Simple(s)) = c.try_cmd(&["PING"]) {
                    if s == b"PONG" {
                        return;
                    }
                }
            }
            assert!(std::time::Instant::now() < deadline, "redoubt not ready within {within:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {}", self.child.id());
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}
