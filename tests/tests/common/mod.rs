//! Bits shared by the integration test files (each file is its own crate; this module is
//! included with `mod common;`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use redoubt_tests::{start_redoubt, Oracle, Server};

/// A server under test: redoubt in-process, or the oracle.
pub enum Target {
    Redoubt(Server),
    Redis(Oracle),
}

impl Target {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Redoubt(s) => s.addr,
            Target::Redis(o) => o.addr,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Redoubt(_) => "redoubt",
            Target::Redis(_) => "redis-server",
        }
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.addr())
    }

    pub fn conn(&self) -> redoubt_tests::Conn {
        redoubt_tests::Conn::connect(self.addr())
    }
}

pub fn redoubt(args: &[&str]) -> Option<Target> {
    Some(Target::Redoubt(start_redoubt(args)))
}

pub fn redis(args: &[&str]) -> Option<Target> {
    Oracle::start_with(args).map(Target::Redis)
}

/// Defines one test per target for a scenario `fn(&Target)`:
/// `both!(name);` or `both!(name, ["--requirepass", "x"]);` gives `name::redoubt` and
/// `name::redis` (the latter checks the expectation itself against real Redis).
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        both!($name, []);
    };
    ($name:ident, [$($arg:expr),*]) => {
        mod $name {
            #[test]
            fn redoubt() {
                if let Some(t) = $crate::common::redoubt(&[$($arg),*]) {
                    super::$name(&t);
                }
            }
            #[test]
            fn redis() {
                if let Some(t) = $crate::common::redis(&[$($arg),*]) {
                    super::$name(&t);
                }
            }
        }
    };
}

/// A raw TCP connection for byte-exact protocol checks.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect_timeout(&addr, RAW_TIMEOUT).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Raw { s, buf: Vec::new() }
    }

    pub fn send(&mut self, b: &[u8]) -> &mut Self {
        self.s.write_all(b).expect("write");
        self
    }

    /// Reads into the buffer until it holds `n` bytes, EOF or the deadline; true if EOF seen.
    fn fill(&mut self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 65536];
        while self.buf.len() < n && Instant::now() < deadline {
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("read: {e}"),
            }
        }
        false
    }

    /// Expects exactly these bytes next.
    pub fn expect(&mut self, want: &[u8]) -> &mut Self {
        self.fill(want.len(), RAW_TIMEOUT);
        let n = want.len().min(self.buf.len());
        let got: Vec<u8> = self.buf.drain(..n).collect();
        assert_eq!(show(&got), show(want), "unexpected bytes from server");
        self
    }

    /// Expects exactly these bytes, then the server closing the connection.
    pub fn expect_then_close(&mut self, want: &[u8]) {
        let eof = self.fill(usize::MAX, RAW_TIMEOUT);
        assert_eq!(show(&self.buf), show(want), "unexpected bytes before close");
        assert!(eof, "server did not close the connection within {RAW_TIMEOUT:?} after: {}", show(want));
    }

    /// Whatever arrives within `d` (for "nothing yet" checks).
    pub fn read_for(&mut self, d: Duration) -> Vec<u8> {
        self.fill(usize::MAX, d);
        std::mem::take(&mut self.buf)
    }
}

/// A RESP multibulk for `args`.
pub fn mbulk<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = Vec::new();
    redoubt_protocol::client_codec::encode_command(args, &mut out);
    out
}
