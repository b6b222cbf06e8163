//! Linearizability of a three-node cluster under faults, checked on a recorded history.
//!
//! Six client threads, each connected to a random node (reads are not READONLY, so every
//! read must be linearizable, as writes are), run random commands on a handful of keys:
//! registers `k0..k2` (SET of a value no one else writes / GET), counters `c0..c1` (INCR /
//! GET) and lists `l0..l1` (LPUSH of a unique value / LRANGE 0 -1), recording when each was
//! sent and answered. Meanwhile a fault thread cycles through `kill -9` of the leader and
//! its restart, SIGSTOP/SIGCONT of the leader, and cutting the network links that isolate
//! the leader or a follower (the cluster talks through cuttable proxies), with calm pauses
//! between. Then everything heals and the history is checked:
//!
//! * (a) it is linearizable, key by key, against register, counter and list models
//!   (`redoubt_tests::linearize`);
//! * (b) every acknowledged INCR counts in the final value, and no more INCRs than were
//!   sent (acknowledged plus those of unknown outcome);
//! * (c) every acknowledged LPUSH value is in the final list exactly once, and no value is
//!   there twice (a forward retried behind the client's back would show up here);
//! * (d) after convergence every node holds the same values (READONLY reads of each).
//!
//! Replies `-TRYAGAIN`, `-CLUSTERDOWN` and `-LOADING` mean the command did not run: they
//! are left out of the history. A closed connection or a timeout means the outcome is unknown: the
//! operation is recorded without a reply (it may or may not have taken effect) and the
//! client reconnects to a random node.
//!
//! The default run injects faults for 25 s. Longer, on demand:
//! `LIN_SECS=300 cargo nextest run --release -p redoubt-tests --test t62_linearizability
//! --no-capture` (nextest's default slow-test timeout does not apply: the profile in
//! tests/nextest.toml only takes effect with `--config-file`). `LIN_HISTORY=path` writes
//! the recorded history there, one operation a line; `LIN_SEED` fixes the random choices
//! (of the clients and of the faults' durations; the timing is still the machine's).
//! `LIN_QUICK_RESTART=1` restarts a killed leader at once instead of after a pause (it
//! comes back as leader of its old term before the others elect one).
//! `LIN_READONLY=1` tests the test: the clients send READONLY, so followers answer reads
//! from their own, possibly stale, state, and the run must fail with stale reads.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redoubt_tests::cluster::Cluster;
use redoubt_tests::linearize::{self, Entry, Kind, Op, Ret, Verdict};
use redoubt_tests::{Conn, Value};

const REGISTERS: [&str; 3] = ["k0", "k1", "k2"];
const COUNTERS: [&str; 2] = ["c0", "c1"];
const LISTS: [&str; 2] = ["l0", "l1"];
const CLIENTS: usize = 6;
/// How long a client waits for a reply before calling the outcome unknown. A leader cut off
/// from its majority holds replies up to 10 s and then closes the connection; waiting less
/// keeps the clients busy, at the price of more operations of unknown outcome.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

fn kind_of(key: &str) -> Kind {
    match key.as_bytes()[0] {
        b'k' => Kind::Register,
        b'c' => Kind::Counter,
        _ => Kind::List,
    }
}

/// Counts of what the clients saw.
#[derive(Default)]
struct Tally {
    unknown: AtomicUsize,
    refused: AtomicUsize,
}

/// Sets the stop flag when dropped, so the clients end even when the fault thread panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One client: random commands on random keys through a random node until `stop`.
fn client(
    id: usize,
    addrs: Vec<SocketAddr>,
    start: Instant,
    stop: Arc<AtomicBool>,
    seed: u64,
    tally: Arc<Tally>,
    readonly: bool,
) -> Vec<Entry> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut history = Vec::new();
    let mut conn: Option<(Conn, usize)> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let (c, node) = match &mut conn {
            Some((c, node)) => (c, *node),
            None => {
                let node = rng.gen_range(0..addrs.len());
                let connected = Conn::try_connect(addrs[node], Duration::from_secs(1)).and_then(|mut c| {
                    if readonly {
                        c.try_cmd(&["READONLY"]).map(|_| c)
                    } else {
                        Ok(c)
                    }
                });
                match connected {
                    Ok(mut c) => {
                        c.set_reply_timeout(OP_TIMEOUT);
                        let (c, node) = conn.insert((c, node));
                        (c, *node)
                    }
                    Err(_) => {
                        // Down (killed, restarting): try another.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
        };
        seq += 1;
        let value = format!("{id}-{seq}");
        let write = rng.gen_bool(0.5);
        let (key, op) = match rng.gen_range(0..3) {
            0 => (REGISTERS[rng.gen_range(0..REGISTERS.len())], if write { Op::Set(value) } else { Op::Get }),
            1 => (COUNTERS[rng.gen_range(0..COUNTERS.len())], if write { Op::Incr } else { Op::Get }),
            _ => (LISTS[rng.gen_range(0..LISTS.len())], if write { Op::LPush(value) } else { Op::LRange }),
        };
        let argv = op.argv(key);
        let invoke = start.elapsed();
        let reply = c.try_cmd(&argv);
        let at = start.elapsed();
        let note = format!("n{}", node + 1);
        let entry = |done, note| Entry { client: id, key: key.to_string(), op: op.clone(), invoke, done, note };
        match reply {
            // Did not run: not part of the history. (LOADING: a restarted node that is
            // still replaying its log when the client connects.)
            Ok(Value::Error(e)) if ["TRYAGAIN", "CLUSTERDOWN", "LOADING"].iter().any(|p| e.starts_with(p)) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
                if rng.gen_bool(0.5) {
                    conn = None;
                }
            }
            Ok(v) => {
                history.push(entry(Some((at, Ret::from_value(&v))), note));
            }
            Err(e) => {
                tally.unknown.fetch_add(1, Ordering::Relaxed);
                history.push(entry(None, format!("{note}: {e} at {:.4}", at.as_secs_f64())));
                conn = None;
            }
        }
        // Wander between nodes now and then, so every node serves every kind of command.
        if rng.gen_ratio(1, 50) {
            conn = None;
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..4)));
    }
    history
}

/// Injects faults until `until`, one after the other with calm pauses between; returns
/// their timeline.
fn inject_faults(cl: &mut Cluster, start: Instant, until: Instant, rng: &mut SmallRng, quick: bool) -> Vec<String> {
    let mut log = Vec::new();
    let t = || format!("{:7.3}s", start.elapsed().as_secs_f64());
    let mut k = 0;
    while Instant::now() < until {
        let leader = cl.leader(Duration::from_secs(30));
        let hold = Duration::from_millis(rng.gen_range(1500..3000));
        match k % 4 {
            0 => {
                log.push(format!("{} kill -9 n{} (leader)", t(), leader + 1));
                cl.nodes[leader].take().unwrap().kill9();
                // Quick: back before the others' election timeout (300-600 ms), as under a
                // supervisor that restarts at once.
                std::thread::sleep(if quick { Duration::ZERO } else { hold });
                cl.nodes[leader] = Some(cl.spawn(leader));
                log.push(format!("{} n{} restarted", t(), leader + 1));
            }
            1 => {
                log.push(format!("{} SIGSTOP n{} (leader)", t(), leader + 1));
                cl.nodes[leader].as_ref().unwrap().signal("STOP");
                std::thread::sleep(hold);
                cl.nodes[leader].as_ref().unwrap().signal("CONT");
                log.push(format!("{} SIGCONT n{}", t(), leader + 1));
            }
            _ => {
                // Isolate the leader, then (next round) a follower.
                let victim = if k % 4 == 2 { leader } else { (leader + 1 + rng.gen_range(0..2)) % 3 };
                let role = if victim == leader { "leader" } else { "follower" };
                log.push(format!("{} cut n{} ({role}) off", t(), victim + 1));
                cl.isolate(victim, true);
                std::thread::sleep(hold);
                cl.isolate(victim, false);
                log.push(format!("{} healed n{}", t(), victim + 1));
            }
        }
        k += 1;
        std::thread::sleep(Duration::from_millis(rng.gen_range(1000..2000)));
    }
    log
}

/// Reads `key` through node `i` (linearizable unless `readonly`), retrying what did not
/// run, up to `within`. Returns the reply and when it was sent and answered.
fn read_key(cl: &Cluster, i: usize, key: &str, readonly: bool, within: Duration) -> (Ret, Instant, Instant) {
    let op = if kind_of(key) == Kind::List { Op::LRange } else { Op::Get };
    let deadline = Instant::now() + within;
    loop {
        let mut c = cl.conn(i);
        if readonly {
            let _ = c.try_cmd(&["READONLY"]);
        }
        let sent = Instant::now();
        match c.try_cmd(&op.argv(key)) {
            Ok(Value::Error(e)) => assert!(Instant::now() < deadline, "{key} on n{}: -{e}", i + 1),
            Ok(v) => return (Ret::from_value(&v), sent, Instant::now()),
            Err(e) => assert!(Instant::now() < deadline, "{key} on n{}: {e}", i + 1),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn histories_under_faults_are_linearizable() {
    let secs: u64 = std::env::var("LIN_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(25);
    let seed: u64 = std::env::var("LIN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    // A check of the test itself: READONLY reads on followers are allowed to be stale, so
    // with them the checker must find anomalies.
    let readonly = std::env::var("LIN_READONLY").is_ok_and(|v| v == "1");
    let quick_restart = std::env::var("LIN_QUICK_RESTART").is_ok_and(|v| v == "1");
    println!("t62: {secs} s of faults, LIN_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);

    let mut cl = Cluster::start_with_links("redoubt-t62");
    cl.leader(Duration::from_secs(20));
    let addrs: Vec<SocketAddr> = cl.ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (addrs, stop, tally, seed) = (addrs.clone(), stop.clone(), tally.clone(), rng.gen());
            std::thread::spawn(move || client(id, addrs, start, stop, seed, tally, readonly))
        })
        .collect();
    let timeline = {
        let _stop = StopOnDrop(stop.clone());
        // A calm second first, so every key has a history before the first fault.
        std::thread::sleep(Duration::from_secs(1));
        inject_faults(&mut cl, start, Instant::now() + Duration::from_secs(secs), &mut rng, quick_restart)
    };
    let mut history: Vec<Entry> = Vec::new();
    for c in clients {
        history.extend(c.join().expect("client thread"));
    }
    let faults_done = start.elapsed();

    // Heal, let a leader settle, and read every key through it: those reads go into the
    // history, after everything else.
    cl.heal();
    for (i, n) in cl.nodes.iter_mut().enumerate() {
        assert!(n.as_mut().unwrap().exited().is_none(), "n{} exited:\n{}", i + 1, timeline.join("\n"));
    }
    let leader = cl.leader(Duration::from_secs(30));
    let keys: Vec<&str> = REGISTERS.iter().chain(&COUNTERS).chain(&LISTS).copied().collect();
    let mut last: BTreeMap<&str, Ret> = BTreeMap::new();
    for key in &keys {
        let (ret, sent, answered) = read_key(&cl, leader, key, false, Duration::from_secs(30));
        let op = if kind_of(key) == Kind::List { Op::LRange } else { Op::Get };
        history.push(Entry {
            client: CLIENTS,
            key: key.to_string(),
            op,
            invoke: sent - start,
            done: Some((answered - start, ret.clone())),
            note: format!("final read on n{}", leader + 1),
        });
        last.insert(key, ret);
    }
    if let Some(path) = std::env::var_os("LIN_HISTORY") {
        let mut sorted: Vec<&Entry> = history.iter().collect();
        sorted.sort_by_key(|e| e.invoke);
        let text: String = sorted.iter().map(|e| e.line() + "\n").collect();
        std::fs::write(&path, text).expect("write LIN_HISTORY");
    }

    // (d) Every node converges on the leader's values (READONLY: its own state).
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        for key in &keys {
            loop {
                let (got, _, _) = read_key(&cl, i, key, true, Duration::from_secs(30));
                if got == last[key] {
                    break;
                }
                assert!(Instant::now() < deadline, "n{} holds {key} = {got}, the leader {}", i + 1, last[key]);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    // (a) Linearizable, key by key.
    let checked = Instant::now();
    let results = linearize::check(&history, kind_of, &linearize::Options::default());
    let check_time = checked.elapsed();
    let mut problems = linearize::describe_failures(&results);

    // (b) Acknowledged INCRs all count, and nothing counts that was not sent.
    let mut per_key: HashMap<&str, (usize, usize)> = HashMap::new(); // (acked, unknown) writes
    for e in history.iter().filter(|e| matches!(e.op, Op::Incr | Op::LPush(_))) {
        let (acked, unknown) = per_key.entry(e.key.as_str()).or_default();
        match &e.done {
            Some((_, Ret::Int(_))) => *acked += 1,
            Some(_) => {}
            None => *unknown += 1,
        }
    }
    for key in COUNTERS {
        let (acked, unknown) = per_key.get(key).copied().unwrap_or_default();
        let value = match &last[key] {
            Ret::Nil => 0,
            Ret::Bulk(b) => b.parse::<usize>().unwrap_or_else(|_| panic!("{key} = {b:?}")),
            other => panic!("{key}: {other}"),
        };
        if value < acked || value > acked + unknown {
            problems += &format!(
                "{key} = {value}: {acked} INCRs acknowledged, {unknown} of unknown outcome (want {acked}..={})\n",
                acked + unknown
            );
        }
    }

    // (c) Acknowledged LPUSH values are there once each; no value is there twice.
    for key in LISTS {
        let Ret::List(items) = &last[key] else { panic!("{key}: {}", last[key]) };
        let mut count: HashMap<&str, usize> = HashMap::new();
        for v in items {
            *count.entry(v.as_str()).or_default() += 1;
        }
        for (v, n) in count.iter().filter(|(_, n)| **n > 1) {
            problems += &format!("{key}: {v:?} is in the list {n} times\n");
        }
        let pushed: HashMap<&str, &Entry> = history
            .iter()
            .filter_map(|e| match &e.op {
                Op::LPush(v) if e.key == key => Some((v.as_str(), e)),
                _ => None,
            })
            .collect();
        for (v, e) in &pushed {
            if matches!(e.done, Some((_, Ret::Int(_)))) && !count.contains_key(v) {
                problems += &format!("{key}: acknowledged push missing: {}\n", e.line());
            }
        }
        for v in count.keys().filter(|v| !pushed.contains_key(*v)) {
            problems += &format!("{key}: {v:?} is in the list but was never pushed\n");
        }
    }

    let ops = history.len();
    let acked = history.iter().filter(|e| e.completed()).count();
    println!(
        "t62: {ops} ops ({acked} acknowledged, {} of unknown outcome, {} refused with TRYAGAIN/CLUSTERDOWN/LOADING and left out), \
         {} faults in {:.1} s, checker {:.0} ms",
        tally.unknown.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        timeline.iter().filter(|l| !l.contains("restarted") && !l.contains("SIGCONT") && !l.contains("healed")).count(),
        faults_done.as_secs_f64(),
        check_time.as_secs_f64() * 1000.0
    );
    for r in &results {
        let v = match r.verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::Anomaly(_) => "ANOMALY",
            Verdict::GaveUp => "GAVE UP",
        };
        println!(
            "  {:3} {:8}: {:5} ops ({:3} unknown, {:3} left out), {:9} steps, {:6.1} ms: {v}",
            r.key,
            r.kind.to_string(),
            r.ops,
            r.unknown,
            r.dropped,
            r.steps,
            r.elapsed.as_secs_f64() * 1000.0
        );
    }
    if !problems.is_empty() {
        // The cluster's temp dir goes with the test: keep the servers' logs.
        let keep = std::env::temp_dir().join(format!("redoubt-t62-logs-{}", std::process::id()));
        for i in 0..3 {
            let from = cl.dir.path().join(format!("n{}", i + 1));
            let to = keep.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(&from).unwrap().flatten() {
                if f.file_name().to_string_lossy().ends_with(".log") {
                    let _ = std::fs::copy(f.path(), to.join(f.file_name()));
                }
            }
        }
        panic!("{problems}\nfault timeline:\n{}\nserver logs kept in {}", timeline.join("\n"), keep.display());
    }
}
