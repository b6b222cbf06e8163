//! Harness for the gateway's process-level tests: `redoubt-gateway` pods as child processes
//! (ports read from the line each pod prints at start) and a minimal HTTP/1.1 client for
//! its API, so the tests need nothing beyond std.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API key every test pod is started with.
pub const API_KEY: &str = "test-key";

/// The `redoubt-gateway` binary cargo built next to the test (`$GATEWAY_BIN` overrides).
pub fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("redoubt-gateway")).expect("target dir");
    assert!(bin.is_file(), "{} not built (cargo builds it with the workspace)", bin.display());
    bin
}

/// One gateway pod.
pub struct Pod {
    child: Child,
    pub name: String,
    pub smpp: u16,
    pub http: u16,
    pub log: PathBuf,
}

impl Pod {
    /// Starts a pod keeping its state in `state` (redoubt client addresses).
    pub fn start(dir: &Path, name: &str, state: &[SocketAddr], extra: &[&str]) -> Pod {
        let nodes: Vec<String> = state.iter().map(|a| a.to_string()).collect();
        let mut args: Vec<String> = vec!["--state".into(), nodes.join(",")];
        args.extend(extra.iter().map(|s| s.to_string()));
        Pod::spawn(dir, name, &args)
    }

    /// Starts a pod with arbitrary flags (`--embed ...`); ports and key are added.
    pub fn spawn(dir: &Path, name: &str, args: &[String]) -> Pod {
        let log = dir.join(format!("gateway-{name}.log"));
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let _ = writeln!(file, "--- gateway {name} starting");
        let mut child = Command::new(gateway_bin())
            .args([
                "--smpp-port",
                "0",
                "--http-port",
                "0",
                "--bind",
                "127.0.0.1",
                "--pod-id",
                name,
                "--api-key",
                API_KEY,
            ])
            .args(args)
            .env("RUST_LOG", "info,redoubt_gateway=debug,openraft=warn,sled=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .expect("spawn redoubt-gateway");
        // "redoubt-gateway: pod NAME smpp 127.0.0.1:P http 127.0.0.1:Q"
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {} // keep the pipe drained
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("gateway {name} did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        let port_after = |word: &str| -> u16 {
            let mut it = line.split_whitespace();
            while let Some(w) = it.next() {
                if w == word {
                    return it.next().and_then(|a| a.rsplit(':').next()?.parse().ok()).expect("port in start line");
                }
            }
            panic!("no {word} in {line:?}")
        };
        let pod = Pod { name: name.to_string(), smpp: port_after("smpp"), http: port_after("http"), child, log };
        pod.wait_http(Duration::from_secs(30));
        pod
    }

    fn wait_http(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while TcpStream::connect(("127.0.0.1", self.http)).is_err() {
            assert!(Instant::now() < deadline, "gateway {} http not up", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `(status, body)` of one API call.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.http, method, path, body, Some(API_KEY))
    }

    /// Waits until `/health` answers 200 (store reachable, every enabled vendor bound).
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = http(self.http, "GET", "/health", None, None);
            if code == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "pod {} not healthy: {code} {body}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the pod is healthy with each of `vendors` bound (which also means it has
    /// loaded the configuration that names them).
    pub fn wait_bound(&self, vendors: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = http(self.http, "GET", "/health", None, None);
            if code == 200 && vendors.iter().all(|v| body.contains(&format!("\"{v}\":\"bound\""))) {
                return;
            }
            assert!(Instant::now() < deadline, "pod {} not bound to {vendors:?}: {code} {body}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One counter from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = http(self.http, "GET", "/metrics", None, None);
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-shot HTTP/1.1 request (`Connection: close`), for the gateway's API.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("X-API-Key: {k}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // axum answers small bodies with Content-Length; a chunked body is unwrapped here.
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(rest) } else { rest.to_string() };
    (code, body)
}

fn unchunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A raw SMPP connection for protocol-level checks (binds, malformed PDUs), written by
/// hand so the tests see exactly the bytes that cross the wire.
pub struct RawSmpp {
    s: TcpStream,
    seq: u32,
}

/// One PDU as read: (command_id, command_status, sequence_number, body).
pub type Pdu = (u32, u32, u32, Vec<u8>);

impl RawSmpp {
    pub fn connect(port: u16) -> RawSmpp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway's smpp port");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        RawSmpp { s, seq: 0 }
    }

    /// Sends one PDU; returns its sequence number.
    pub fn send(&mut self, command_id: u32, body: &[u8]) -> u32 {
        self.seq += 1;
        let mut p = Vec::with_capacity(16 + body.len());
        p.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
        p.extend_from_slice(&command_id.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(body);
        self.s.write_all(&p).expect("write");
        self.seq
    }

    pub fn send_bytes(&mut self, raw: &[u8]) {
        self.s.write_all(raw).expect("write");
    }

    /// The next PDU, or None when the gateway closed the connection.
    pub fn read(&mut self) -> Option<Pdu> {
        let mut head = [0u8; 16];
        self.s.read_exact(&mut head).ok()?;
        let be = |i: usize| u32::from_be_bytes(head[i..i + 4].try_into().unwrap());
        let mut body = vec![0u8; (be(0) as usize).saturating_sub(16)];
        self.s.read_exact(&mut body).ok()?;
        Some((be(4), be(8), be(12), body))
    }

    /// Binds (0x1 receiver, 0x2 transmitter, 0x9 transceiver); returns the resp status.
    pub fn bind(&mut self, command_id: u32, system_id: &str, password: &str) -> u32 {
        let mut b = Vec::new();
        for f in [system_id, password, ""] {
            b.extend_from_slice(f.as_bytes());
            b.push(0);
        }
        b.extend_from_slice(&[0x34, 0, 0, 0]); // interface_version 3.4, ton, npi, address_range ""
        let seq = self.send(command_id, &b);
        let (id, status, rseq, _) = self.read().expect("bind_resp");
        assert_eq!((id, rseq), (command_id | 0x8000_0000, seq), "bind_resp");
        status
    }

    /// A submit_sm body with default fields.
    pub fn submit_body(source: &str, destination: &str, registered_delivery: u8, text: &[u8]) -> Vec<u8> {
        let mut b = vec![0]; // service_type ""
        b.extend_from_slice(&[1, 1]);
        b.extend_from_slice(source.as_bytes());
        b.push(0);
        b.extend_from_slice(&[1, 1]);
        b.extend_from_slice(destination.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0, 0, 0, 0, 0, registered_delivery, 0, 0, 0]);
        b.push(text.len() as u8);
        b.extend_from_slice(text);
        b
    }

    /// Sends enquire_link and expects its resp (skipping anything else that arrives first).
    pub fn alive(&mut self) -> bool {
        let seq = self.send(0x15, &[]);
        while let Some((id, _, rseq, _)) = self.read() {
            if id == 0x8000_0015 && rseq == seq {
                return true;
            }
        }
        false
    }
}
