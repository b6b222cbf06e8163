//! t71: the native locks and limiters on a three-node cluster of real processes, where
//! clients talk to different nodes (followers forward writes to the leader) and, for the
//! locks, the leader is killed with `kill -9` mid-run.
//!
//! * `lock_tokens_stay_monotonic_across_a_leader_kill`: fencing tokens are unique and
//!   increase in the real-time order of the acquisitions, through a failover, the old
//!   leader's restart, and a kill -9 of the next leader restarted at once; afterwards every
//!   member's fence counter is the last token handed out. (~3-5 s.)
//! * `limiters_shared_across_nodes_never_admit_too_much`: a property test (proptest over
//!   limits, windows, costs and request patterns) that two clients on two nodes sharing a
//!   RATELIMIT window and a CL.THROTTLE limiter never get more admitted than the limit allows
//!   in any window, and are not refused when there was provably room (RATELIMIT exactly,
//!   CL.THROTTLE loosely). One cluster for all cases; `LIMITS_CASES` (default 8, ~7 s).
//! * two quick tests of the checkers on made-up histories: they flag what they must.
//!
//! The clients cannot see the time at which the leader decided each request, so every check
//! here is judged from intervals: a request was decided at some instant between the moment
//! the client sent it and the moment its reply arrived. A check fails only when *every*
//! placement of the decisions inside their intervals breaks the property, so a slow, loaded
//! machine widens the intervals and weakens the checks, but never makes them fail wrongly.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use redoubt_tests::cluster::Cluster;
use redoubt_tests::{Conn, Value};

fn text(v: &Value) -> String {
    match v.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => panic!("expected a string, got {v:?}"),
    }
}

/// Errors that mean the command did not run (an election, a node still loading its log).
fn not_run(e: &str) -> bool {
    ["TRYAGAIN", "CLUSTERDOWN", "LOADING"].iter().any(|p| e.starts_with(p))
}

/// Sets the stop flag when dropped, so client threads end even when the test panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// Fencing tokens across a leader kill
// ---------------------------------------------------------------------------------------

const LOCK: &str = "fenced";
const FENCE: &str = "fenced:fence";
/// Short, so an acquisition whose reply was lost (its owner never releases) blocks the
/// others for at most this long.
const LEASE_MS: &str = "1000";
const LOCK_CLIENTS: usize = 4;

#[derive(Debug, Clone, PartialEq)]
enum Acquire {
    /// Acknowledged with this token.
    Token(i64),
    /// Refused: someone else holds the lock.
    Held,
    /// An error saying the command did not run.
    NotRun(String),
    /// No reply (connection lost, timeout): it may or may not have taken the lock.
    Unknown,
}

/// One LOCK.ACQUIRE. Times are microseconds since the test's start (one monotonic clock for
/// every thread).
#[derive(Debug, Clone)]
struct Attempt {
    owner: String,
    sent: u64,
    done: u64,
    node: usize,
    outcome: Acquire,
}

/// A LOCK.INFO that named a holder: `owner` held the lock with `token` at some instant in
/// `[sent, done]` (reads through any node are linearizable: followers forward them).
#[derive(Debug, Clone)]
struct Seen {
    owner: String,
    token: i64,
    done: u64,
}

/// LOCK.INFO (RESP2: a flat array) as (owner, token).
fn holder(v: &Value) -> Option<(String, i64)> {
    match v {
        Value::Nil => None,
        Value::Array(a) if a.len() == 6 => match &a[3] {
            Value::Int(t) => Some((text(&a[1]), *t)),
            other => panic!("LOCK.INFO token: {other:?}"),
        },
        other => panic!("LOCK.INFO: {other:?}"),
    }
}

/// One client: acquire (a fresh owner name every time, so a retry after a lost reply can
/// never be mistaken for a re-acquisition by the same holder), release, and on refusal ask
/// who holds the lock, until `stop`. Starts on node `id % 3` and moves to the next node
/// whenever its connection fails.
fn lock_client(
    id: usize,
    addrs: Vec<SocketAddr>,
    start: Instant,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> (Vec<Attempt>, Vec<Seen>) {
    let us = || start.elapsed().as_micros() as u64;
    let (mut attempts, mut seen) = (Vec::new(), Vec::new());
    let mut node = id % addrs.len();
    let mut conn: Option<Conn> = None;
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::try_connect(addrs[node], Duration::from_secs(1)) {
                Ok(mut c) => {
                    c.set_reply_timeout(Duration::from_secs(5));
                    conn.insert(c)
                }
                Err(_) => {
                    node = (node + 1) % addrs.len();
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        seq += 1;
        let owner = format!("c{id}-{seq}");
        let sent = us();
        let reply = c.try_cmd(&["LOCK.ACQUIRE", LOCK, &owner, LEASE_MS]);
        let done = us();
        let outcome = match reply {
            Ok(Value::Int(t)) => Acquire::Token(t),
            Ok(Value::Nil) => Acquire::Held,
            Ok(Value::Error(e)) if not_run(&e) => Acquire::NotRun(e),
            Ok(other) => panic!("LOCK.ACQUIRE on n{}: {other:?}", node + 1),
            Err(_) => Acquire::Unknown,
        };
        attempts.push(Attempt { owner: owner.clone(), sent, done, node, outcome: outcome.clone() });
        // What to do next; the replies of these follow-ups are only used as observations.
        let follow_up: Option<Vec<&str>> = match outcome {
            Acquire::Token(_) => {
                acked.fetch_add(1, Ordering::SeqCst);
                // Now and then, look at ourselves holding it first.
                if seq % 4 == 0 {
                    if let Ok(v) = c.try_cmd(&["LOCK.INFO", LOCK]) {
                        if let Some((o, t)) = holder(&v) {
                            seen.push(Seen { owner: o, token: t, done: us() });
                        }
                    }
                }
                Some(vec!["LOCK.RELEASE", LOCK, &owner])
            }
            Acquire::Held => Some(vec!["LOCK.INFO", LOCK]),
            Acquire::NotRun(_) => {
                std::thread::sleep(Duration::from_millis(20));
                None
            }
            Acquire::Unknown => {
                conn = None;
                node = (node + 1) % addrs.len();
                None
            }
        };
        if let (Some(line), Some(c)) = (follow_up, conn.as_mut()) {
            match c.try_cmd(&line) {
                Ok(v) if line[0] == "LOCK.INFO" && !v.is_error() => {
                    if let Some((o, t)) = holder(&v) {
                        seen.push(Seen { owner: o, token: t, done: us() });
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    conn = None;
                    node = (node + 1) % addrs.len();
                }
            }
        }
    }
    (attempts, seen)
}

/// Waits until the clients' count of acknowledged acquisitions reaches `n`. A liveness
/// bound, not a timing one: a minute is far more than a failover takes on any machine.
fn wait_acked(acked: &AtomicUsize, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{what}: only {} acquisitions acknowledged", acked.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An acquisition known to have happened: its token, when it was sent and a time by which
/// it had surely taken effect (its reply, or a LOCK.INFO that showed it).
#[derive(Debug, Clone)]
struct Event {
    owner: String,
    token: i64,
    sent: u64,
    done: u64,
}

/// Every fencing-token property the history must have; returns the events it checked.
///
/// * a LOCK.INFO never names as holder an owner whose acquisition was refused or did not
///   run, and always shows an acknowledged owner with the token it was given;
/// * an owner whose acquisition had no reply but who was later seen holding the lock did
///   acquire it: that acquisition joins the checks, as sent at its send time and done by
///   the first time it was seen;
/// * no two acquisitions share a token;
/// * if acquisition X was done before acquisition Y was sent, X's token < Y's token.
///
/// The first violation is the error.
fn check_tokens(attempts: &[Attempt], seen: &[Seen]) -> Result<Vec<Event>, String> {
    let by_owner: HashMap<&str, &Attempt> = attempts.iter().map(|a| (a.owner.as_str(), a)).collect();
    let mut events: HashMap<String, Event> = HashMap::new();
    for a in attempts {
        if let Acquire::Token(t) = a.outcome {
            events.insert(a.owner.clone(), Event { owner: a.owner.clone(), token: t, sent: a.sent, done: a.done });
        }
    }
    for s in seen {
        let a = by_owner.get(s.owner.as_str()).ok_or_else(|| format!("LOCK.INFO named a stranger: {s:?}"))?;
        match &a.outcome {
            Acquire::Token(t) if *t != s.token => {
                return Err(format!("{} was acknowledged token {t} but seen with {s:?}", a.owner));
            }
            Acquire::Token(_) => {}
            Acquire::Held | Acquire::NotRun(_) => {
                return Err(format!("a refused acquisition holds the lock: {a:?}, seen {s:?}"));
            }
            Acquire::Unknown => {
                let e = events.entry(a.owner.clone()).or_insert(Event {
                    owner: a.owner.clone(),
                    token: s.token,
                    sent: a.sent,
                    done: s.done,
                });
                if e.token != s.token {
                    return Err(format!("{} seen with tokens {} and {}", a.owner, e.token, s.token));
                }
                e.done = e.done.min(s.done);
            }
        }
    }
    let events: Vec<Event> = events.into_values().collect();
    let mut holders: HashMap<i64, &str> = HashMap::new();
    for e in &events {
        if e.token < 1 {
            return Err(format!("a token below 1: {e:?}"));
        }
        if let Some(other) = holders.insert(e.token, &e.owner) {
            return Err(format!("token {} handed to {other} and to {}", e.token, e.owner));
        }
    }
    // Real-time order: sorted by completion, the largest token among the events completed
    // before Y was sent must be below Y's.
    let mut by_done = events.clone();
    by_done.sort_by_key(|e| e.done);
    let mut prefix_max = Vec::with_capacity(by_done.len());
    let mut best: Option<&Event> = None;
    for e in &by_done {
        if best.is_none_or(|b| e.token > b.token) {
            best = Some(e);
        }
        prefix_max.push(best.unwrap());
    }
    for y in &events {
        let before = by_done.partition_point(|x| x.done < y.sent);
        if before > 0 {
            let x = prefix_max[before - 1];
            if x.token >= y.token {
                return Err(format!(
                    "token went backwards: {x:?} was done before {y:?} was sent (times in µs since the start)"
                ));
            }
        }
    }
    Ok(events)
}

#[test]
fn lock_tokens_stay_monotonic_across_a_leader_kill() {
    let mut cl = Cluster::start("redoubt-t71-locks");
    let first_leader = cl.leader(Duration::from_secs(30));
    let addrs: Vec<SocketAddr> = cl.ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..LOCK_CLIENTS)
        .map(|id| {
            let (addrs, stop, acked) = (addrs.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || lock_client(id, addrs, start, stop, acked))
        })
        .collect();

    // Calm first, then kill -9 the leader; once the others agree on a new one, bring the
    // old one back on its data; go on until acquisitions flow again through all of it.
    // Then kill the new leader and restart it at once, before the others' election
    // timeout, as a supervisor would (it may come back as leader of its old term).
    wait_acked(&acked, 30, "before the kill");
    let leader = cl.leader(Duration::from_secs(30));
    cl.nodes[leader].take().unwrap().kill9();
    let killed_at = start.elapsed().as_micros() as u64;
    let new_leader = cl.leader(Duration::from_secs(30));
    assert_ne!(new_leader, leader);
    let n = acked.load(Ordering::SeqCst);
    wait_acked(&acked, n + 20, "under the new leader");
    cl.nodes[leader] = Some(cl.spawn(leader));
    let n = acked.load(Ordering::SeqCst);
    wait_acked(&acked, n + 30, "after the old leader's restart");
    let second = cl.leader(Duration::from_secs(30));
    cl.nodes[second].take().unwrap().kill9();
    cl.nodes[second] = Some(cl.spawn(second));
    let n = acked.load(Ordering::SeqCst);
    wait_acked(&acked, n + 30, "after the quick restart of the second leader");
    stop.store(true, Ordering::SeqCst);
    let mut attempts = Vec::new();
    let mut seen = Vec::new();
    for c in clients {
        let (a, s) = c.join().expect("a lock client panicked");
        attempts.extend(a);
        seen.extend(s);
    }

    // One last acquisition on the healed cluster, once the leases of any holder left behind
    // (a release that got no reply) have run out: its token is the counter's final value.
    let healed = cl.leader(Duration::from_secs(30));
    let mut c = cl.conn(healed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let final_token = loop {
        let sent = start.elapsed().as_micros() as u64;
        match c.cmd(&["LOCK.ACQUIRE", LOCK, "final", "60000"]) {
            Value::Int(t) => {
                let done = start.elapsed().as_micros() as u64;
                attempts.push(Attempt { owner: "final".into(), sent, done, node: healed, outcome: Acquire::Token(t) });
                break t;
            }
            Value::Nil => {}
            other => panic!("final LOCK.ACQUIRE: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the lock never came free after the run");
        std::thread::sleep(Duration::from_millis(50));
    };

    let events = check_tokens(&attempts, &seen).unwrap_or_else(|e| panic!("{e}"));
    let max_seen = events.iter().map(|e| e.token).max().unwrap();
    assert_eq!(final_token, max_seen, "the last acquisition has the largest token");
    // Every token from 1 to the last was handed to someone: either to an acquisition we
    // know of, or to one of those that got no reply and were never seen holding.
    let known: BTreeSet<i64> = events.iter().map(|e| e.token).collect();
    let unexplained = (1..=final_token).filter(|t| !known.contains(t)).count();
    let unknown_unseen =
        attempts.iter().filter(|a| a.outcome == Acquire::Unknown && !events.iter().any(|e| e.owner == a.owner)).count();
    assert!(unexplained <= unknown_unseen, "{unexplained} tokens skipped, only {unknown_unseen} unknown acquisitions");
    // Every member, the restarted one included, ends with the same counter.
    for i in 0..3 {
        cl.wait_value(i, FENCE, &final_token.to_string(), Duration::from_secs(20));
    }

    let count = |f: &dyn Fn(&Attempt) -> bool| attempts.iter().filter(|a| f(a)).count();
    let acked_total = count(&|a| matches!(a.outcome, Acquire::Token(_)));
    let acked_after = count(&|a| matches!(a.outcome, Acquire::Token(_)) && a.sent > killed_at);
    let via_followers = count(&|a| matches!(a.outcome, Acquire::Token(_)) && a.node != first_leader);
    println!(
        "lock history: {} acquisitions, {acked_total} acknowledged ({acked_after} sent after the kill, \
         {via_followers} through a node that was not the first leader), {} held, {} not run, {} unknown \
         ({} of them seen holding); {} LOCK.INFO observations; final token {final_token}",
        attempts.len(),
        count(&|a| a.outcome == Acquire::Held),
        count(&|a| matches!(a.outcome, Acquire::NotRun(_))),
        count(&|a| a.outcome == Acquire::Unknown),
        events.len() - acked_total,
        seen.len(),
    );
    assert!(via_followers > 0, "no acquisition went through a follower");
}

// ---------------------------------------------------------------------------------------
// Limiters shared by clients on two nodes
// ---------------------------------------------------------------------------------------

/// How a decided request ended, for one limiter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Admitted,
    Rejected,
    /// Did not run (an election): counts for nothing.
    NotRun,
    /// No reply: it may have been admitted.
    Unknown,
}

/// One request, sent to both limiters in one pipeline. Times in wall-clock milliseconds,
/// the clock the server decides with; `done` is `i64::MAX` when no reply came.
#[derive(Debug, Clone)]
struct Req {
    sent: i64,
    done: i64,
    window: (i64, Verdict),
    cell: (i64, Verdict),
}

#[derive(Debug, Clone)]
struct LimitCase {
    /// RATELIMIT limit and window_ms.
    limit: i64,
    window_ms: i64,
    /// CL.THROTTLE max_burst, count per period and period (seconds).
    burst: i64,
    count: i64,
    period: i64,
    /// The two clients' nodes.
    nodes: (usize, usize),
    /// Per client: (pause before the request in ms, cost).
    pattern: [Vec<(u64, i64)>; 2],
}

fn limit_case() -> impl Strategy<Value = LimitCase> {
    // About 100 requests a second from the two clients together, 2 units each on average,
    // against limits from a few to ~150 units a second: some cases refuse most requests,
    // others few, so both checks have material.
    let client = || prop::collection::vec((0u64..=30, 1i64..=3), 15..=40);
    (1i64..=40, 100i64..=400, 0i64..=10, 5i64..=100, 1i64..=2, 0usize..3, 1usize..3, client(), client()).prop_map(
        |(limit, window_ms, burst, count, period, a, d, p0, p1)| LimitCase {
            limit,
            window_ms,
            burst,
            count,
            period,
            nodes: (a, (a + d) % 3),
            pattern: [p0, p1],
        },
    )
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Slack on both ends of every interval, in ms. The server reads the same wall clock after
/// it has read a request and before it writes the reply, in whole ms like the client, so
/// `sent <= decided <= done` holds exactly; one more millisecond costs the checks nothing
/// and covers the truncations.
const SLACK_MS: i64 = 1;

/// Runs one client's pattern; the costs are clamped to what each limiter can ever admit
/// (a larger one is always refused and teaches nothing).
fn limit_client(addr: SocketAddr, case: &LimitCase, i: usize, keys: (&str, &str), barrier: &Barrier) -> Vec<Req> {
    let mut c = Conn::connect(addr);
    c.set_reply_timeout(Duration::from_secs(5));
    let mut conn = Some(c);
    let verdict = |v: &Value, what: &str| match v {
        Value::Array(a) if !a.is_empty() => match a[0] {
            // RATELIMIT's first field is "allowed", CL.THROTTLE's is "limited".
            Value::Int(x) if what == "window" => {
                if x == 1 {
                    Verdict::Admitted
                } else {
                    Verdict::Rejected
                }
            }
            Value::Int(x) => {
                if x == 0 {
                    Verdict::Admitted
                } else {
                    Verdict::Rejected
                }
            }
            _ => panic!("{what}: {v:?}"),
        },
        Value::Error(e) if not_run(e) => Verdict::NotRun,
        other => panic!("{what}: {other:?}"),
    };
    let (limit, window, burst, count, period) = (
        case.limit.to_string(),
        case.window_ms.to_string(),
        case.burst.to_string(),
        case.count.to_string(),
        case.period.to_string(),
    );
    let mut out = Vec::new();
    barrier.wait();
    for &(pause, cost) in &case.pattern[i] {
        std::thread::sleep(Duration::from_millis(pause));
        let (wc, cc) = (cost.min(case.limit), cost.min(case.burst + 1));
        let (wcs, ccs) = (wc.to_string(), cc.to_string());
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::try_connect(addr, Duration::from_secs(1)) {
                Ok(c) => conn.insert(c),
                Err(_) => continue,
            },
        };
        let sent = wall_ms();
        let replies = c.pipeline(&[
            vec!["RATELIMIT", keys.0, &limit, &window, "COST", &wcs],
            vec!["CL.THROTTLE", keys.1, &burst, &count, &period, &ccs],
        ]);
        let req = match replies {
            Ok(r) => Req {
                sent,
                done: wall_ms(),
                window: (wc, verdict(&r[0], "window")),
                cell: (cc, verdict(&r[1], "cell")),
            },
            Err(_) => {
                conn = None;
                Req { sent, done: i64::MAX, window: (wc, Verdict::Unknown), cell: (cc, Verdict::Unknown) }
            }
        };
        out.push(req);
    }
    out
}

/// RATELIMIT admits a request of cost `c` at time `T` iff the costs admitted in
/// `(T - window, T]` plus `c` are at most `limit` (rejections consume nothing).
///
/// Too much admitted: a set S of admitted requests whose costs sum above `limit` while
/// every decision in S surely fell within less than one window of the others. With
/// decisions in `[sent, done]`, that is `max(done) - min(sent) < window` over S; then the
/// last decision of S saw all of S inside its window. For the S whose earliest-sent member
/// is `i`, the largest such S is every admitted `j` with `sent_j >= sent_i` and
/// `done_j < sent_i + window`, so trying each `i` finds any provable violation.
///
/// Refused with room: a request `i` of cost `c` refused at `T_i` in `[sent_i, done_i]` saw
/// only admissions decided in `(T_i - window, T_i]`, which were sent before `done_i` and
/// answered after `sent_i - window`. If all such admissions (and every request with no
/// reply, which may have been admitted) plus `c` fit in `limit`, the refusal was wrong.
fn check_window(case: &LimitCase, reqs: &[Req]) -> Result<usize, TestCaseError> {
    let (limit, w) = (case.limit, case.window_ms);
    let admitted: Vec<&Req> = reqs.iter().filter(|r| r.window.1 == Verdict::Admitted).collect();
    for i in &admitted {
        let inside: Vec<&&Req> =
            admitted.iter().filter(|j| j.sent >= i.sent && j.done + SLACK_MS < i.sent - SLACK_MS + w).collect();
        let total: i64 = inside.iter().map(|j| j.window.0).sum();
        prop_assert!(
            total <= limit,
            "RATELIMIT {limit} per {w} ms admitted cost {total} within one window: {inside:?}"
        );
    }
    for i in reqs.iter().filter(|r| r.window.1 == Verdict::Rejected) {
        let possible: i64 = reqs
            .iter()
            .filter(|j| matches!(j.window.1, Verdict::Admitted | Verdict::Unknown))
            .filter(|j| {
                j.sent - SLACK_MS <= i.done + SLACK_MS && j.done.saturating_add(SLACK_MS) > i.sent - SLACK_MS - w
            })
            .map(|j| j.window.0)
            .sum();
        prop_assert!(
            possible + i.window.0 > limit,
            "RATELIMIT {limit} per {w} ms refused {i:?} with at most {possible} in its window"
        );
    }
    Ok(admitted.len())
}

/// CL.THROTTLE is GCRA: with emission interval `E` (period / count, truncated to ns as the
/// server computes it) and tolerance `τ = E * (burst + 1)`, a request of quantity `q` at `t`
/// passes iff `max(TAT, t) + q*E <= t + τ`, and then TAT becomes that.
///
/// Too much admitted: take admitted requests S decided between `t_first` and `t_last`.
/// The TAT only grows; right after the first of S it is at least `t_first + q_first*E`, and
/// each later admission adds its `q*E`, so after the last of S it is at least
/// `t_first + Q(S)*E`, and that admission needs it to be at most `t_last + τ`:
/// `Q(S) <= (t_last - t_first)/E + burst + 1`. With decisions in `[sent, done]`, a set with
/// `Q(S)*E > (max(done) - min(sent))*1e6 + τ` proves a violation. For each earliest-sent
/// `i`, adding the admitted `j` (sent no earlier) in the order of their replies gives every
/// candidate S.
///
/// Refused with room (loosely): a refusal of `q <= burst + 1` at `t` means TAT > t +
/// τ - q*E >= t, so the bucket is in a busy stretch that began at an admission `a` and
/// `TAT = t_a + E * (quantities admitted since a)`: more than `burst + 1 - q` units were
/// admitted before it, all by requests sent before the refusal's reply.
fn check_cell(case: &LimitCase, reqs: &[Req]) -> Result<usize, TestCaseError> {
    let e = (case.period as f64 * 1e9 / case.count as f64) as i128;
    let tau = e * (case.burst + 1) as i128;
    let mut admitted: Vec<&Req> = reqs.iter().filter(|r| r.cell.1 == Verdict::Admitted).collect();
    admitted.sort_by_key(|r| r.done);
    for i in &admitted {
        let mut q = 0i128;
        let mut set = Vec::new();
        for j in admitted.iter().filter(|j| j.sent >= i.sent) {
            q += j.cell.0 as i128;
            set.push(*j);
            let span_ns = ((j.done + SLACK_MS) - (i.sent - SLACK_MS)) as i128 * 1_000_000;
            prop_assert!(
                q * e <= span_ns + tau,
                "CL.THROTTLE burst {} {} per {} s admitted {q} units within {} ms: {set:?}",
                case.burst,
                case.count,
                case.period,
                span_ns / 1_000_000
            );
        }
    }
    for i in reqs.iter().filter(|r| r.cell.1 == Verdict::Rejected) {
        let before: i64 = reqs
            .iter()
            .filter(|j| matches!(j.cell.1, Verdict::Admitted | Verdict::Unknown))
            .filter(|j| j.sent - SLACK_MS <= i.done + SLACK_MS)
            .map(|j| j.cell.0)
            .sum();
        prop_assert!(
            before > case.burst + 1 - i.cell.0,
            "CL.THROTTLE burst {} refused {i:?} after only {before} units admitted",
            case.burst
        );
    }
    Ok(admitted.len())
}

/// Cases: `LIMITS_CASES` (default 8; not PROPTEST_CASES, which CI raises for the
/// differential suites and would make this run minutes). `LIMITS_SEED` fixes the cases.
#[test]
fn limiters_shared_across_nodes_never_admit_too_much() {
    let cases = std::env::var("LIMITS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let seed = std::env::var("LIMITS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x7_1717);
    let cl = Cluster::start("redoubt-t71-limits");
    let leader = cl.leader(Duration::from_secs(30));
    let addrs: Vec<SocketAddr> = cl.ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    let mut runner = TestRunner::new(Config {
        cases,
        // Each case takes about a second of the cluster's time: shrink only a little.
        max_shrink_iters: 16,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let n = AtomicUsize::new(0);
    // (requests, RATELIMIT admitted, refused, CL.THROTTLE admitted, refused)
    let totals = std::sync::Mutex::new([0usize; 5]);
    let result = runner.run(&limit_case(), |case| {
        // Fresh keys for every case, shrunk reruns included.
        let k = n.fetch_add(1, Ordering::SeqCst);
        let keys = (format!("win:{k}"), format!("cell:{k}"));
        let barrier = Barrier::new(2);
        let reqs: Vec<Req> = std::thread::scope(|s| {
            let run = |i: usize| {
                let (case, keys, barrier) = (&case, &keys, &barrier);
                let addr = addrs[if i == 0 { case.nodes.0 } else { case.nodes.1 }];
                s.spawn(move || limit_client(addr, case, i, (&keys.0, &keys.1), barrier))
            };
            let (a, b) = (run(0), run(1));
            let mut all = a.join().expect("client 0");
            all.extend(b.join().expect("client 1"));
            all
        });
        let w = check_window(&case, &reqs)?;
        let c = check_cell(&case, &reqs)?;
        // Liveness, loosely: the first request to reach a fresh key always fits.
        let replied = reqs.iter().filter(|r| r.window.1 != Verdict::Unknown).count();
        prop_assert!(replied == 0 || w > 0, "RATELIMIT admitted nothing of {replied}");
        prop_assert!(replied == 0 || c > 0, "CL.THROTTLE admitted nothing of {replied}");
        let mut t = totals.lock().unwrap();
        t[0] += reqs.len();
        t[1] += w;
        t[2] += reqs.iter().filter(|r| r.window.1 == Verdict::Rejected).count();
        t[3] += c;
        t[4] += reqs.iter().filter(|r| r.cell.1 == Verdict::Rejected).count();
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n(leader was n{}; rerun with LIMITS_SEED={seed})", leader + 1);
    }
    let [reqs, wa, wr, ca, cr] = *totals.lock().unwrap();
    println!(
        "{cases} cases, {reqs} requests: RATELIMIT admitted {wa}, refused {wr}; CL.THROTTLE admitted {ca}, refused {cr}"
    );
    // The patterns are dense enough that the limits bite: the checks above had refusals to
    // judge, not only admissions.
    assert!(wr > 0 && cr > 0, "no refusals at all in {reqs} requests");
}

// ---------------------------------------------------------------------------------------
// The checkers themselves, on made-up histories
// ---------------------------------------------------------------------------------------

fn attempt(owner: &str, sent: u64, done: u64, outcome: Acquire) -> Attempt {
    Attempt { owner: owner.into(), sent, done, node: 0, outcome }
}

fn seen(owner: &str, token: i64, done: u64) -> Seen {
    Seen { owner: owner.into(), token, done }
}

/// `check_tokens` accepts overlapping acquisitions in either token order, takes in an
/// unanswered acquisition once it is seen holding, and rejects each kind of violation.
#[test]
fn token_checker_catches_what_it_should() {
    use Acquire::*;
    let ok = vec![
        attempt("a", 0, 10, Token(1)),
        // b and c overlap: either order of their tokens is linearizable.
        attempt("b", 20, 40, Token(3)),
        attempt("c", 25, 45, Token(2)),
        attempt("d", 50, 60, Held),
        attempt("e", 70, 1_000, Unknown),
        attempt("f", 2_000, 2_010, Token(5)),
    ];
    let events = check_tokens(&ok, &[seen("e", 4, 80), seen("b", 3, 41)]).unwrap();
    assert_eq!(events.iter().find(|e| e.owner == "e").map(|e| (e.token, e.done)), Some((4, 80)));
    assert_eq!(events.len(), 5);

    let fails = |attempts: Vec<Attempt>, observed: Vec<Seen>| check_tokens(&attempts, &observed).is_err();
    // Backwards in real time.
    assert!(fails(vec![attempt("a", 0, 10, Token(2)), attempt("b", 20, 30, Token(1))], vec![]));
    // A ghost (no reply, seen later) whose token is below one acknowledged before it was sent.
    assert!(fails(vec![attempt("a", 0, 10, Token(2)), attempt("g", 20, 500, Unknown)], vec![seen("g", 1, 30)]));
    // One token, two holders.
    assert!(fails(vec![attempt("a", 0, 10, Token(1)), attempt("b", 5, 15, Token(1))], vec![]));
    // A refused acquisition holding the lock; an acknowledged owner seen with another token.
    assert!(fails(vec![attempt("a", 0, 10, Held)], vec![seen("a", 1, 20)]));
    assert!(fails(vec![attempt("a", 0, 10, Token(1))], vec![seen("a", 2, 20)]));
}

fn req(sent: i64, done: i64, cost: i64, verdict: Verdict) -> Req {
    Req { sent, done, window: (cost, verdict), cell: (cost, verdict) }
}

/// The limiter checks flag a provable excess and a provably wrong refusal, and accept
/// histories that some placement of the decisions explains.
#[test]
fn limiter_checkers_catch_what_they_should() {
    use Verdict::*;
    let case = |limit, window_ms, burst, count| LimitCase {
        limit,
        window_ms,
        burst,
        count,
        period: 1,
        nodes: (0, 1),
        pattern: [vec![], vec![]],
    };
    // RATELIMIT 2 per 100 ms.
    let w = case(2, 100, 0, 1);
    let three_close = [req(0, 5, 1, Admitted), req(10, 15, 1, Admitted), req(20, 25, 1, Admitted)];
    assert!(check_window(&w, &three_close).is_err());
    // The third answered late enough that it may have been decided a window after the first.
    let spread = [req(0, 5, 1, Admitted), req(10, 15, 1, Admitted), req(20, 120, 1, Admitted)];
    assert_eq!(check_window(&w, &spread).ok(), Some(3));
    // Refused although at most 1 of 2 was used: wrong. With cost 2 admitted: right. With a
    // request of unknown outcome that may have been admitted: not provably wrong.
    assert!(check_window(&w, &[req(0, 5, 1, Admitted), req(10, 15, 1, Rejected)]).is_err());
    assert!(check_window(&w, &[req(0, 5, 2, Admitted), req(10, 15, 1, Rejected)]).is_ok());
    assert!(check_window(&w, &[req(0, 5, 1, Admitted), req(1, i64::MAX, 1, Unknown), req(10, 15, 1, Rejected)]).is_ok());
    // A refusal after the admission left the window, surely: wrong.
    assert!(check_window(&w, &[req(0, 5, 2, Admitted), req(200, 210, 1, Rejected)]).is_err());

    // CL.THROTTLE burst 0, 10 per second: E = τ = 100 ms.
    let c = case(1, 1, 0, 10);
    assert!(check_cell(&c, &[req(0, 5, 1, Admitted), req(10, 20, 1, Admitted)]).is_err());
    assert_eq!(check_cell(&c, &[req(0, 5, 1, Admitted), req(100, 105, 1, Admitted)]).ok(), Some(2));
    // Burst 2 (3 at once): 3 close together pass, a 4th is an excess, a refusal after 1 is wrong.
    let c = case(1, 1, 2, 10);
    let burst: Vec<Req> = (0..3).map(|i| req(i, i + 2, 1, Admitted)).collect();
    assert_eq!(check_cell(&c, &burst).ok(), Some(3));
    let mut more = burst.clone();
    more.push(req(3, 6, 1, Admitted));
    assert!(check_cell(&c, &more).is_err());
    assert!(check_cell(&c, &[req(0, 5, 1, Admitted), req(10, 15, 1, Rejected)]).is_err());
    assert!(check_cell(&c, &[req(0, 5, 2, Admitted), req(10, 15, 2, Rejected)]).is_ok());
}
