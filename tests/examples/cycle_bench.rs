//! cycle_bench: a pipelined load generator for command *cycles*, a fixed sequence of
//! commands run per iteration (a lock's ACQUIRE then RELEASE; `SET NX PX` then the
//! compare-and-delete EVALSHA), which redis-benchmark (one command, repeated) cannot express.
//! `benches/limits.sh` runs it against redoubt and against redis-server alike, so both are
//! measured by the same client.
//!
//! ```text
//! cycle_bench --port P [--host 127.0.0.1] [--clients 50] [--pipeline 16] [--seconds 5]
//!             [--keys N] [--expect any,1,...] -- 'CMD ARG {i}' ['CMD ARG {i}' ...]
//! ```
//!
//! Each client sends `--pipeline` cycles per round trip. `{i}` in a command becomes
//! `<client>-<n>`: a client's own name, so clients never contend for a key, with `n` counting
//! cycles, or cycling through `0..N` with `--keys N` (a bounded set of names, as real locks
//! and limiters are reused rather than named afresh each time). `--expect` gives, per command of
//! the cycle, the reply it must get: `any` (not an error), `int` (any integer), `ok`, or an
//! integer. Prints one line: `cycles_per_sec=.. commands_per_sec=.. errors=.. unexpected=..`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redoubt_client::{Client, Value};

struct Opts {
    addr: String,
    clients: usize,
    pipeline: usize,
    seconds: f64,
    keys: u64,
    expect: Vec<String>,
    cycle: Vec<Vec<String>>,
}

fn parse() -> Result<Opts, String> {
    let mut a = std::env::args().skip(1);
    let (mut host, mut port) = ("127.0.0.1".to_string(), None);
    let mut o = Opts {
        addr: String::new(),
        clients: 50,
        pipeline: 16,
        seconds: 5.0,
        keys: u64::MAX,
        expect: vec![],
        cycle: vec![],
    };
    while let Some(k) = a.next() {
        let mut val = || a.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--host" => host = val()?,
            "--port" => port = Some(val()?),
            "--clients" => o.clients = val()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--pipeline" => o.pipeline = val()?.parse().map_err(|e| format!("--pipeline: {e}"))?,
            "--seconds" => o.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--keys" => o.keys = val()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--expect" => o.expect = val()?.split(',').map(str::to_string).collect(),
            "--" => {
                o.cycle = a.by_ref().map(|c| c.split_whitespace().map(str::to_string).collect()).collect();
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    o.addr = format!("{host}:{}", port.ok_or("--port is required")?);
    if o.cycle.is_empty() || o.cycle.iter().any(|c| c.is_empty()) {
        return Err("no commands after --".into());
    }
    if !o.expect.is_empty() && o.expect.len() != o.cycle.len() {
        return Err("--expect needs one entry per command".into());
    }
    Ok(o)
}

fn matches(want: &str, got: &Value) -> bool {
    match (want, got) {
        (_, Value::Error(_)) => false,
        ("any", _) => true,
        ("int", Value::Int(_)) => true,
        ("ok", Value::Simple(s)) => s == b"OK",
        (n, Value::Int(i)) => n.parse::<i64>() == Ok(*i),
        _ => false,
    }
}

#[tokio::main]
async fn main() {
    let o = match parse() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("cycle_bench: {e}");
            std::process::exit(2);
        }
    };
    let (cycles, errors, unexpected) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let tasks: Vec<_> = (0..o.clients)
        .map(|client| {
            let (o, cycles, errors, unexpected) = (o.clone(), cycles.clone(), errors.clone(), unexpected.clone());
            tokio::spawn(async move {
                let mut c = Client::connect(o.addr.as_str()).await.expect("connect");
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let mut batch = Vec::with_capacity(o.pipeline * o.cycle.len());
                    for _ in 0..o.pipeline {
                        let id = format!("{client}-{}", seq % o.keys);
                        seq += 1;
                        for cmd in &o.cycle {
                            batch.push(cmd.iter().map(|a| a.replace("{i}", &id)).collect::<Vec<_>>());
                        }
                    }
                    let replies = c.pipeline(&batch).await.expect("pipeline");
                    for (k, r) in replies.iter().enumerate() {
                        if r.is_error() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(want) = o.expect.get(k % o.cycle.len()) {
                            if !matches(want, r) {
                                unexpected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    cycles.fetch_add(o.pipeline as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = cycles.load(Ordering::Relaxed) as f64;
    println!(
        "cycles_per_sec={:.0} commands_per_sec={:.0} errors={} unexpected={}",
        n / secs,
        n * o.cycle.len() as f64 / secs,
        errors.load(Ordering::Relaxed),
        unexpected.load(Ordering::Relaxed)
    );
}
