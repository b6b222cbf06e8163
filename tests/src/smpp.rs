//! The third-party SMPP peers in `tests/smpp/`, driven from Rust: a vendor SMSC on npm
//! `smpp` (node-smpp) and customer ESMEs on PyPI `smpplib`. `.ci/run` installs both; without
//! them a test skips locally and fails under `CI=true`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{require, run_with_deadline, workspace_root};

pub fn peers_dir() -> PathBuf {
    workspace_root().join("tests").join("smpp")
}

pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Are node-smpp and smpplib installed? (Fails the test under CI when not.)
pub fn peers_available() -> bool {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let smpp_js = peers_dir().join("node_modules").join("smpp").is_dir();
    let smpplib = Command::new(python()).args(["-c", "import smpplib"]).output().is_ok_and(|o| o.status.success());
    require(
        node && smpp_js && smpplib,
        "SMPP peers (node + `npm install --prefix tests/smpp`, and `pip install smpplib`)",
    )
}

/// The vendor SMSC (`tests/smpp/vendor_smsc.js`) on a free port.
pub struct Vendor {
    child: Child,
    pub port: u16,
    pub stats_file: PathBuf,
}

impl Vendor {
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Vendor {
        let stats_file = dir.join(format!("vendor-{name}.json"));
        let mut child = Command::new("node")
            .arg(peers_dir().join("vendor_smsc.js"))
            .args(["--port", "0", "--stats-file"])
            .arg(&stats_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node vendor_smsc.js");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("vendor-smsc did not start");
        let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("port in vendor start line");
        Vendor { child, port, stats_file }
    }

    /// The vendor's counters (rewritten every 200 ms).
    pub fn stats(&self) -> serde_json::Value {
        std::fs::read_to_string(&self.stats_file)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }
}

impl Drop for Vendor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `customer.py` reported.
pub struct Run {
    /// customer.py exited 0: everything acked (and receipted, when asked).
    pub ok: bool,
    pub json: serde_json::Value,
    pub output: String,
}

impl Run {
    pub fn acked_ids(&self) -> Vec<String> {
        self.json["message_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    /// message id -> receipt states seen.
    pub fn receipts(&self) -> std::collections::HashMap<String, Vec<String>> {
        let mut out = std::collections::HashMap::new();
        if let Some(m) = self.json["receipts"].as_object() {
            for (k, v) in m {
                let states = v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect());
                out.insert(k.clone(), states.unwrap_or_default());
            }
        }
        out
    }

    pub fn n(&self, field: &str) -> u64 {
        self.json[field].as_u64().unwrap_or(0)
    }
}

/// Runs `customer.py` with `args` to completion (at most `within`).
pub fn customer(dir: &Path, name: &str, args: &[&str], within: Duration) -> Run {
    let out = dir.join(format!("customer-{name}.json"));
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("customer.py")).args(args).arg("--json").arg(&out);
    let (ok, stdout, stderr) = run_with_deadline(cmd, None, within);
    let json = std::fs::read_to_string(&out).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    Run { ok, json, output: format!("{stdout}{stderr}") }
}

/// `customer.py` in the background (for runs a test interrupts).
pub fn spawn_customer(dir: &Path, name: &str, args: &[&str]) -> (Child, PathBuf) {
    let out = dir.join(format!("customer-{name}.json"));
    let child = Command::new(python())
        .arg(peers_dir().join("customer.py"))
        .args(args)
        .arg("--json")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn customer.py");
    (child, out)
}

pub fn read_run(path: &Path) -> Run {
    let json = std::fs::read_to_string(path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    Run { ok: true, json, output: String::new() }
}
