//! Native rate limiters: `CL.THROTTLE` (GCRA, a drop-in for the redis-cell module) and
//! `RATELIMIT` (an exact sliding window, for "N per hour / per day" caps).
//!
//! Where this sits in the write flow: a command reads its state from an ordinary key,
//! decides with the pure functions here ([`Gcra::check`], [`plan_window`]) at the time of the
//! operation (`ctx.ks.now_ms`, never the wall clock), and changes the key only through
//! ordinary commands run with [`Ctx::apply`]. Those commands (`SET key <tat> PXAT <abs>` for
//! CL.THROTTLE; `LTRIM`, `RPUSH` or `LSET`, `PEXPIREAT` for RATELIMIT) are what replicas and
//! the Raft log apply, so a replica never runs a limiter and cannot decide differently. A
//! call that admits nothing (limited, rejected, or a peek with quantity/COST 0) writes
//! nothing and records nothing.
//!
//! ## CL.THROTTLE key max_burst count_per_period period [quantity]
//!
//! redis-cell's semantics, read from its source (brandur/redis-cell `src/cell/mod.rs`):
//! emission interval `T = period / count` (nanoseconds, divided in floating point and
//! truncated, as redis-cell does), delay variation tolerance `τ = T * (max_burst + 1)`; the
//! key holds the theoretical arrival time (TAT) as unix nanoseconds in a string. A request
//! of `quantity` is allowed when `max(tat, now) + T*quantity - τ <= now`. The reply is
//! `[limited, limit, remaining, retry_after, reset_after]` with `limit = max_burst + 1`,
//! `remaining = (τ - ttl) / T` (computed in whole microseconds, as redis-cell does),
//! `retry_after = -1` when allowed (and when `quantity` exceeds the whole burst, which can
//! never succeed), and both times in whole seconds, rounded up when the fraction has at
//! least one whole millisecond (redis-cell's rule: 2.0004 s reads 2, 2.001 s reads 3).
//! Errors are redis-cell's texts (`Cell error: Store error: ...`). Inputs redis-cell has no
//! meaning for (negative burst, count, period or quantity; values whose nanosecond
//! arithmetic overflows, where redis-cell computes garbage or aborts the server) are refused
//! with Redis-style `ERR` texts.
//!
//! Two deliberate differences, both invisible in the reply: the key's expiry is the TAT
//! rounded *up* to the millisecond (redis-cell truncates the relative TTL, so with emission
//! intervals under 1 ms its state can vanish while it still matters), and a peek
//! (`quantity` 0) never writes (redis-cell rewrites the same TAT).
//!
//! ## RATELIMIT key limit window_ms [COST n]
//!
//! A request of cost `c` at time `now` is admitted iff the costs admitted in
//! `(now - window_ms, now]` plus `c` are at most `limit`; a rejected request consumes
//! nothing. Reply `[allowed, remaining, retry_after_ms, reset_after_ms]`: `remaining` is
//! what is left in the window after this call, `retry_after_ms` the exact wait until a
//! request of the same cost would be admitted (-1 when allowed, or when `c > limit`, which
//! is never admitted), `reset_after_ms` the wait until the window is empty.
//!
//! The state is an ordinary list, one element per millisecond in which something was
//! admitted, oldest first: `"<unix_ms>:<cost>:<running total>"` (the running total of costs
//! ever admitted through the key, wrapping at 2^64, makes the cost in any stretch of the log
//! one subtraction, so a call is O(log n) plus the entries it drops). Admitting drops the
//! entries that left the window (`LTRIM`), adds one (`RPUSH`, or `LSET -1` when the newest
//! entry is from the same millisecond) and moves the expiry to when the newest entry leaves
//! the window (`PEXPIREAT`). Memory bound: right after an admission every entry is inside the
//! window and the entries' costs (each at least 1) sum to at most `limit`, and they have
//! distinct milliseconds, so the list holds at most `min(limit, window_ms)` elements, about
//! 40-70 bytes each; it never grows between admissions.

use bytes::Bytes;
use redoubt_protocol::num::parse_i64;

use super::args::{self, is};
use super::flags::*;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::Blob;

pub const COMMANDS: &[Spec] = &[
    // Arity -1 as redis-cell registers it: a wrong count gets its usage text, not Redis's.
    Spec::new("cl.throttle", -1, WRITE | DENYOOM | FAST, (1, 1, 1), "string", cl_throttle),
    Spec::new("ratelimit", -4, WRITE | DENYOOM, (1, 1, 1), "list", ratelimit),
];

const NS_PER_MS: i64 = 1_000_000;
const NS_PER_SEC: i64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------
// CL.THROTTLE: the generic cell rate algorithm
// ---------------------------------------------------------------------------------------

const THROTTLE_USAGE: CmdError = CmdError::Static(
    "Cell error: Store error: Usage: cl.throttle <key> <max_burst> <count per period> <period> [<quantity>]",
);
const ZERO_RATE: CmdError = CmdError::Static("Cell error: Store error: Zero rates are not supported");
const THROTTLE_RANGE: CmdError = CmdError::Static("ERR max_burst, period or quantity is out of range");

/// An integer argument as redis-cell reads it (Rust's `i64::from_str`: an optional sign and
/// digits, so `+5` and `007` pass where Redis's own parser refuses them), with its error.
fn cell_int(a: &[u8]) -> Result<i64, CmdError> {
    std::str::from_utf8(a).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
        CmdError::Owned(format!("Cell error: Store error: Couldn't parse as integer: {}", String::from_utf8_lossy(a)))
    })
}

/// redis-cell's emission interval in nanoseconds: `period` seconds divided by `count` in
/// floating point, truncated toward zero (0 for a zero rate, or one finer than 1 ns).
pub fn emission_interval(count: i64, period_s: i64) -> i64 {
    let ns = period_s as i128 * NS_PER_SEC as i128;
    if count == 0 || ns == 0 {
        return 0;
    }
    (ns as f64 / count as f64) as i64
}

/// A GCRA limit, all times in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time between two requests at exactly the sustained rate.
    pub emission_ns: i64,
    /// Delay variation tolerance, `emission_ns * (max_burst + 1)`: how far ahead of `now`
    /// the TAT may run (the bucket size, in time).
    pub dvt_ns: i64,
    /// `max_burst + 1`, the first number of the reply.
    pub limit: i64,
}

/// One CL.THROTTLE decision, before the reply's rounding to seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub limited: bool,
    pub limit: i64,
    pub remaining: i64,
    /// -1 s when there is nothing to wait for.
    pub retry_after_ns: i64,
    pub reset_after_ns: i64,
    /// The TAT to store, when the request consumed something.
    pub new_tat: Option<i64>,
}

/// Whole seconds the way redis-cell reports a duration: truncated, plus one when the
/// fraction holds at least one whole millisecond.
pub fn cell_seconds(ns: i64) -> i64 {
    let s = ns / NS_PER_SEC;
    if (ns % NS_PER_SEC) / NS_PER_MS > 0 {
        s + 1
    } else {
        s
    }
}

impl Throttle {
    /// `[limited, limit, remaining, retry_after, reset_after]`.
    pub fn reply(&self) -> [i64; 5] {
        [
            self.limited as i64,
            self.limit,
            self.remaining,
            cell_seconds(self.retry_after_ns),
            cell_seconds(self.reset_after_ns),
        ]
    }
}

impl Gcra {
    /// Validates the parameters in redis-cell's order (a zero rate first), then refuses
    /// what it has no meaning for.
    pub fn new(max_burst: i64, count: i64, period_s: i64) -> Result<Gcra, CmdError> {
        let emission_ns = emission_interval(count, period_s);
        if emission_ns == 0 {
            return Err(ZERO_RATE);
        }
        if max_burst < 0 {
            return Err(CmdError::Static("ERR max_burst must not be negative"));
        }
        if count < 0 || period_s < 0 {
            return Err(CmdError::Static("ERR count per period and period must be positive"));
        }
        let limit = max_burst.checked_add(1).ok_or(THROTTLE_RANGE)?;
        let dvt_ns = emission_ns.checked_mul(limit).ok_or(THROTTLE_RANGE)?;
        Ok(Gcra { emission_ns, dvt_ns, limit })
    }

    /// Decides a request of `quantity` (0 = peek) at `now_ns` against the stored TAT.
    pub fn check(&self, now_ns: i64, stored_tat: Option<i64>, quantity: i64) -> Result<Throttle, CmdError> {
        let (t, dvt) = (self.emission_ns as i128, self.dvt_ns as i128);
        let now = now_ns as i128;
        let increment = t * quantity as i128;
        // A TAT in the past means what no TAT means (full capacity). redis-cell would use it
        // raw, which differs only for a key written by hand without a TTL.
        let tat = stored_tat.map_or(now, |v| (v as i128).max(now));
        let new_tat = tat + increment;
        if new_tat > i64::MAX as i128 {
            return Err(THROTTLE_RANGE);
        }
        // Conforming when the new TAT runs at most τ ahead of now.
        let diff = now - (new_tat - dvt);
        let (limited, ttl, retry) = if diff < 0 {
            // Wait until it conforms, unless it never can (more than the whole burst).
            let retry = if increment <= dvt { -diff } else { -NS_PER_SEC as i128 };
            (true, tat - now, retry)
        } else {
            (false, new_tat - now, -NS_PER_SEC as i128)
        };
        let next = dvt - ttl;
        let remaining = if next > -t {
            // redis-cell divides whole microseconds in floating point; below 1 µs per
            // request that would divide by zero, so use nanoseconds there.
            let (next_us, t_us) = (next / 1000, t / 1000);
            if t_us == 0 {
                (next / t) as i64
            } else {
                (next_us as f64 / t_us as f64) as i64
            }
        } else {
            0
        };
        Ok(Throttle {
            limited,
            limit: self.limit,
            remaining,
            retry_after_ns: retry as i64,
            reset_after_ns: ttl as i64,
            new_tat: (!limited && quantity > 0).then_some(new_tat as i64),
        })
    }
}

/// `a / b` rounded up, for `a >= 0`, `b > 0`.
fn div_ceil(a: i64, b: i64) -> i64 {
    a / b + (a % b != 0) as i64
}

/// CL.THROTTLE key max_burst count_per_period period [quantity]
fn cl_throttle(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if argv.len() != 5 && argv.len() != 6 {
        return Err(THROTTLE_USAGE);
    }
    let max_burst = cell_int(&argv[2])?;
    let count = cell_int(&argv[3])?;
    let period = cell_int(&argv[4])?;
    let quantity = match argv.get(5) {
        Some(a) => cell_int(a)?,
        None => 1,
    };
    let gcra = Gcra::new(max_burst, count, period)?;
    if quantity < 0 {
        return Err(CmdError::Static("ERR quantity must not be negative"));
    }
    let now_ns = ctx.ks.now_ms.checked_mul(NS_PER_MS).ok_or(THROTTLE_RANGE)?;
    let key = &argv[1];
    let stored = match ctx.ks.read(ctx.db, key) {
        None => None,
        Some(e) => match parse_i64(args::as_str(e)?) {
            Some(v) if v >= 0 => Some(v),
            _ => return Err(err::NOT_INT),
        },
    };
    let t = gcra.check(now_ns, stored, quantity)?;
    if let Some(tat) = t.new_tat {
        // The key lives until its TAT has passed; after that a missing key means the same.
        let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
        let at_ms = div_ceil(tat, NS_PER_MS);
        ctx.apply(&[&b"SET"[..], key, a.format(tat).as_bytes(), b"PXAT", b.format(at_ms).as_bytes()])?;
    }
    let r = t.reply();
    ctx.out.array(r.len());
    for n in r {
        ctx.out.int(n);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// RATELIMIT: an exact sliding window
// ---------------------------------------------------------------------------------------

/// One element of a RATELIMIT log: `cost` admitted at `t` (unix ms); `total` is the running
/// total of costs ever admitted through the key up to and including this entry (wrapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    pub t: i64,
    pub cost: i64,
    pub total: u64,
}

impl LogEntry {
    /// `"<t>:<cost>:<total>"`, readable with LRANGE.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40);
        let mut b = itoa::Buffer::new();
        v.extend_from_slice(b.format(self.t).as_bytes());
        v.push(b':');
        v.extend_from_slice(b.format(self.cost).as_bytes());
        v.push(b':');
        v.extend_from_slice(b.format(self.total).as_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Option<LogEntry> {
        let mut it = b.splitn(3, |&c| c == b':');
        let t = parse_i64(it.next()?)?;
        let cost = parse_i64(it.next()?)?;
        let total = std::str::from_utf8(it.next()?).ok()?.parse::<u64>().ok()?;
        (t >= 0 && cost > 0).then_some(LogEntry { t, cost, total })
    }

    /// Just the time, for the binary searches.
    fn decode_t(b: &[u8]) -> Option<i64> {
        let end = memchr::memchr(b':', b)?;
        parse_i64(&b[..end]).filter(|&t| t >= 0)
    }
}

/// Read access to a log: the list in the keyspace, or a plain slice in tests.
pub trait Log {
    fn count(&self) -> usize;
    fn entry(&self, i: usize) -> Option<LogEntry>;
    fn time(&self, i: usize) -> Option<i64> {
        self.entry(i).map(|e| e.t)
    }
}

impl Log for [LogEntry] {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> Option<LogEntry> {
        self.get(i).copied()
    }
}

impl Log for std::collections::VecDeque<Blob> {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> Option<LogEntry> {
        LogEntry::decode(self.get(i)?)
    }
    fn time(&self, i: usize) -> Option<i64> {
        LogEntry::decode_t(self.get(i)?)
    }
}

/// What one RATELIMIT call decides, and the change to the log that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    pub allowed: bool,
    pub remaining: i64,
    pub retry_after_ms: i64,
    pub reset_after_ms: i64,
    /// Entries to drop from the head (they left the window); only when something is added.
    pub trim: usize,
    /// The entry to write, and whether it replaces the newest one (same millisecond).
    pub write: Option<(bool, LogEntry)>,
    /// When the key stops mattering: the newest entry leaves the window (when writing).
    pub expire_at: i64,
}

/// A log that is not one (a list written by something else).
const NOT_A_LOG: CmdError = err::WRONGTYPE;

/// The first index in `lo..hi` where `pred` turns false (`pred` true then false).
fn partition<F: FnMut(usize) -> Result<bool, CmdError>>(
    mut lo: usize,
    mut hi: usize,
    mut pred: F,
) -> Result<usize, CmdError> {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Decides a request of `cost` (0 = peek) at `now` against `log`, exactly: the window is
/// `(now - window, now]`. Times never run backwards in the log: a `now` before its newest
/// entry (a clock stepped back) counts as that entry's time.
pub fn plan_window<L: Log + ?Sized>(
    log: &L,
    now: i64,
    limit: i64,
    window: i64,
    cost: i64,
) -> Result<WindowPlan, CmdError> {
    debug_assert!(limit > 0 && window > 0 && cost >= 0);
    let n = log.count();
    let last = if n > 0 { Some(log.entry(n - 1).ok_or(NOT_A_LOG)?) } else { None };
    let at = last.map_or(now, |e| e.t.max(now));
    let end = at.checked_add(window).ok_or(CmdError::Static("ERR window_ms is out of range"))?;
    let cutoff = at - window;
    // Entries at or before the cutoff have left the window.
    let first = partition(0, n, |i| Ok(log.time(i).ok_or(NOT_A_LOG)? <= cutoff))?;
    let (used, head) = match (first < n, last) {
        (true, Some(last)) => {
            let head = log.entry(first).ok_or(NOT_A_LOG)?;
            (last.total.wrapping_sub(head.total.wrapping_sub(head.cost as u64)), Some(head))
        }
        _ => (0, None),
    };
    if used > i64::MAX as u64 {
        return Err(NOT_A_LOG);
    }
    let used = used as i64;
    let allowed = cost <= limit - used; // limit - used may be negative after a lowered limit
    let reset_of = |newest: i64| newest + window - now;
    if allowed && cost > 0 {
        // The running total continues across trimmed entries (only differences matter).
        let total = last.map_or(0, |e| e.total).wrapping_add(cost as u64);
        let write = match last.filter(|_| head.is_some()) {
            Some(l) if l.t == at => (true, LogEntry { t: at, cost: l.cost.checked_add(cost).ok_or(NOT_A_LOG)?, total }),
            _ => (false, LogEntry { t: at, cost, total }),
        };
        return Ok(WindowPlan {
            allowed: true,
            remaining: limit - used - cost,
            retry_after_ms: -1,
            reset_after_ms: reset_of(at),
            trim: first,
            write: Some(write),
            expire_at: end,
        });
    }
    let retry_after_ms = if allowed || cost > limit {
        -1
    } else {
        // The earliest entry whose leaving brings the rest down to `limit - cost`: the
        // request fits the moment it leaves, and not a millisecond before.
        let last = last.ok_or(NOT_A_LOG)?; // a rejection implies entries
        let room = (limit - cost) as u64;
        let j = partition(first, n, |i| {
            let e = log.entry(i).ok_or(NOT_A_LOG)?;
            Ok(last.total.wrapping_sub(e.total) > room)
        })?;
        let e = log.entry(j.min(n - 1)).ok_or(NOT_A_LOG)?;
        // Checked: in a list edited by hand the entries may be out of order.
        e.t.checked_add(window).ok_or(NOT_A_LOG)? - now
    };
    Ok(WindowPlan {
        allowed,
        remaining: (limit - used).max(0),
        retry_after_ms,
        reset_after_ms: if head.is_some() { reset_of(last.map_or(now, |e| e.t)) } else { 0 },
        trim: 0,
        write: None,
        expire_at: 0,
    })
}

/// RATELIMIT key limit window_ms [COST n]
fn ratelimit(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let limit = args::int(&argv[2])?;
    let window = args::int(&argv[3])?;
    let mut cost = 1;
    let mut i = 4;
    while i < argv.len() {
        if is(&argv[i], "cost") && i + 1 < argv.len() {
            cost = args::int(&argv[i + 1])?;
            i += 2;
        } else {
            return Err(err::SYNTAX);
        }
    }
    if limit <= 0 {
        return Err(CmdError::Static("ERR limit must be positive"));
    }
    if window <= 0 {
        return Err(CmdError::Static("ERR window_ms must be positive"));
    }
    if cost < 0 {
        return Err(CmdError::Static("ERR COST can't be negative"));
    }
    let key = &argv[1];
    let now = ctx.ks.now_ms;
    let (plan, expire_at) = match ctx.ks.read(ctx.db, key) {
        None => (plan_window(&[] as &[LogEntry], now, limit, window, cost)?, 0),
        Some(e) => (plan_window(args::as_list(e)?, now, limit, window, cost)?, e.expire_at),
    };
    if let Some((replace, entry)) = plan.write {
        let mut b = itoa::Buffer::new();
        if plan.trim > 0 {
            ctx.apply(&[&b"LTRIM"[..], key, b.format(plan.trim).as_bytes(), b"-1"])?;
        }
        let enc = entry.encode();
        if replace {
            ctx.apply(&[&b"LSET"[..], key, b"-1", &enc])?;
        } else {
            ctx.apply(&[&b"RPUSH"[..], key, &enc])?;
        }
        // A trim that emptied the list deleted it, and with it the old expiry.
        let current = if plan.trim > 0 { ctx.ks.expire_at(ctx.db, key).unwrap_or(0) } else { expire_at };
        if current != plan.expire_at {
            ctx.apply(&[&b"PEXPIREAT"[..], key, b.format(plan.expire_at).as_bytes()])?;
        }
    }
    ctx.out.array(4);
    ctx.out.int(plan.allowed as i64);
    ctx.out.int(plan.remaining);
    ctx.out.int(plan.retry_after_ms);
    ctx.out.int(plan.reset_after_ms);
    Ok(())
}

#[cfg(test)]
pub(in crate::cmd) mod tests {
    use super::*;
    use crate::cmd::lists::tests::{run, setup};
    use crate::keyspace::Keyspace;
    use crate::shared::Shared;
    use proptest::prelude::*;

    const S: i64 = NS_PER_SEC;
    const MS: i64 = NS_PER_MS;

    fn ints(reply: &str) -> Vec<i64> {
        reply.split("\r\n").filter_map(|l| l.strip_prefix(':')).map(|n| n.parse().unwrap()).collect()
    }

    // --- GCRA ---------------------------------------------------------------------------

    /// redis-cell's own table (its `it_rate_limits` test): limit 5 (max_burst 4), one per
    /// second; (offset ms, quantity, remaining, reset_after, retry_after, limited).
    #[test]
    fn redis_cell_table() {
        let g = Gcra::new(4, 1, 1).unwrap();
        let start = 1_700_000_000_000 * MS;
        let cases: &[(i64, i64, i64, i64, i64, bool)] = &[
            (0, 6, 5, 0, -S, true),
            (0, 1, 4, S, -S, false),
            (0, 1, 3, 2 * S, -S, false),
            (0, 1, 2, 3 * S, -S, false),
            (0, 1, 1, 4 * S, -S, false),
            (0, 1, 0, 5 * S, -S, false),
            (0, 1, 0, 5 * S, S, true),
            (3000, 1, 2, 3000 * MS, -S, false),
            (3100, 1, 1, 3900 * MS, -S, false),
            (4000, 1, 1, 4000 * MS, -S, false),
            (8000, 1, 4, 1000 * MS, -S, false),
            (9500, 1, 4, 1000 * MS, -S, false),
            (9500, 0, 4, S, -S, false),
            (9500, 2, 2, 3 * S, -S, false),
            (9500, 5, 2, 3 * S, 3 * S, true),
        ];
        let mut tat = None;
        for (i, &(off, q, remaining, reset, retry, limited)) in cases.iter().enumerate() {
            let t = g.check(start + off * MS, tat, q).unwrap();
            assert_eq!(
                (t.limited, t.limit, t.remaining, t.reset_after_ns, t.retry_after_ns),
                (limited, 5, remaining, reset, retry),
                "case {i}"
            );
            if let Some(n) = t.new_tat {
                tat = Some(n);
            }
        }
    }

    #[test]
    fn emission_interval_rounding() {
        assert_eq!(emission_interval(30, 60), 2 * S);
        assert_eq!(emission_interval(3, 1), 333_333_333); // truncated, not rounded
        assert_eq!(emission_interval(7, 10), 1_428_571_428);
        assert_eq!(emission_interval(0, 10), 0);
        assert_eq!(emission_interval(10, 0), 0);
        assert_eq!(emission_interval(2_000_000_000, 1), 0); // finer than 1 ns: a zero rate
        assert_eq!(emission_interval(1, i64::MAX), i64::MAX); // saturates like `as`
        assert_eq!(Gcra::new(0, 2_000_000_000, 1), Err(ZERO_RATE));
    }

    #[test]
    fn seconds_rounding() {
        assert_eq!(cell_seconds(-S), -1);
        assert_eq!(cell_seconds(0), 0);
        assert_eq!(cell_seconds(999_999), 0); // under a millisecond: not rounded up
        assert_eq!(cell_seconds(MS), 1);
        assert_eq!(cell_seconds(2 * S), 2);
        assert_eq!(cell_seconds(2 * S + 400_000), 2);
        assert_eq!(cell_seconds(2 * S + MS), 3);
    }

    #[test]
    fn burst_exhaustion_and_refill() {
        // 15 burst, 30 per 60 s (redis-cell's README example): 16 at once, then one per 2 s.
        let g = Gcra::new(15, 30, 60).unwrap();
        let now = 1_000_000 * S;
        let mut tat = None;
        for i in 0..16 {
            let t = g.check(now, tat, 1).unwrap();
            assert!(!t.limited, "request {i}");
            assert_eq!(t.remaining, 15 - i);
            tat = t.new_tat;
        }
        let t = g.check(now, tat, 1).unwrap();
        assert!(t.limited);
        assert_eq!(t.reply(), [1, 16, 0, 2, 32]);
        // 2 s later exactly one more fits.
        let t = g.check(now + 2 * S, tat, 1).unwrap();
        assert_eq!(t.reply(), [0, 16, 0, -1, 32]);
        let t2 = g.check(now + 2 * S, t.new_tat, 1).unwrap();
        assert!(t2.limited);
        // A big step forward: everything is back.
        let t = g.check(now + 1_000_000 * S, t.new_tat, 1).unwrap();
        assert_eq!(t.reply(), [0, 16, 15, -1, 2]);
    }

    #[test]
    fn quantity_larger_than_burst_and_peek() {
        let g = Gcra::new(2, 1, 1).unwrap();
        let now = 5_000 * S;
        // More than the whole burst can never pass: no retry time, nothing consumed.
        let t = g.check(now, None, 4).unwrap();
        assert_eq!(t.reply(), [1, 3, 3, -1, 0]);
        assert_eq!(t.new_tat, None);
        // Exactly the burst passes at once.
        let t = g.check(now, None, 3).unwrap();
        assert_eq!(t.reply(), [0, 3, 0, -1, 3]);
        // A peek reports without consuming.
        let p = g.check(now, t.new_tat, 0).unwrap();
        assert_eq!(p.reply(), [0, 3, 0, -1, 3]);
        assert_eq!(p.new_tat, None);
        let p = g.check(now, None, 0).unwrap();
        assert_eq!(p.reply(), [0, 3, 3, -1, 0]);
        assert_eq!(p.new_tat, None);
    }

    #[test]
    fn sub_millisecond_intervals_and_overflow() {
        // 3 per second: 333.333333 ms; the remaining count uses whole microseconds.
        let g = Gcra::new(2, 3, 1).unwrap();
        let t = g.check(1_000 * S, None, 1).unwrap();
        assert_eq!(t.reply(), [0, 3, 2, -1, 1]);
        // Below 1 µs per request redis-cell would divide by zero; we still count.
        let g = Gcra::new(9, 10_000_000, 1).unwrap();
        assert_eq!(g.emission_ns, 100);
        let t = g.check(1_000 * S, None, 1).unwrap();
        assert_eq!(t.remaining, 9);
        // Arithmetic that does not fit is refused, never wrapped.
        assert_eq!(Gcra::new(i64::MAX, 1, 1), Err(THROTTLE_RANGE));
        assert_eq!(Gcra::new(1 << 40, 1, 1), Err(THROTTLE_RANGE));
        let g = Gcra::new(1, 1, 1).unwrap();
        assert_eq!(g.check(1_000 * S, None, i64::MAX), Err(THROTTLE_RANGE));
        assert!(g.check(1_000 * S, None, 1 << 40).is_err());
        assert!(Gcra::new(-1, 1, 1).is_err());
        assert!(Gcra::new(1, -1, 1).is_err());
        assert!(Gcra::new(1, -1, -1).is_err());
    }

    proptest! {
        /// GCRA admits at most `(b - a) / T + max_burst + 1` in any interval [a, b] (so at
        /// most `max_burst + 1` at one instant), and with arrivals at least `T` apart it
        /// admits everything.
        #[test]
        fn gcra_never_exceeds_the_burst_and_rate(
            burst in 0i64..8, count in 1i64..20, period in 1i64..30,
            calls in prop::collection::vec((0i64..4000, 0i64..4), 1..120),
        ) {
            let g = Gcra::new(burst, count, period).unwrap();
            let mut now = 1_700_000_000_000i64;
            let mut tat = None;
            let mut admitted: Vec<(i64, i64)> = Vec::new();
            for (dt, q) in calls {
                now += dt;
                let t = g.check(now * MS, tat, q).unwrap();
                prop_assert!(t.remaining >= 0 && t.remaining <= g.limit);
                if !t.limited {
                    tat = t.new_tat.or(tat);
                    admitted.push((now, q));
                }
            }
            for i in 0..admitted.len() {
                let mut sum = 0i128;
                for &(b, q) in &admitted[i..] {
                    sum += q as i128;
                    let a = admitted[i].0;
                    prop_assert!(
                        sum * g.emission_ns as i128 <= ((b - a) * MS) as i128 + g.dvt_ns as i128,
                        "admitted {} in [{}, {}] ms", sum, a, b
                    );
                }
            }
        }

        /// Offered more than the rate (an arrival at least every T), GCRA admits the
        /// long-run rate: about one per T after the initial burst. (With max_burst 0 there is
        /// no tolerance to absorb jitter: each admission restarts the schedule at its arrival,
        /// so irregular arrivals get less than the rate. That is GCRA, and redis-cell.)
        #[test]
        fn gcra_admits_the_long_run_rate(burst in 1i64..5, count in 1i64..10, period in 1i64..10, seed in any::<u64>()) {
            let g = Gcra::new(burst, count, period).unwrap();
            let t_ms = g.emission_ns / MS;
            prop_assume!(t_ms >= 2);
            let (start, mut now) = (1_700_000_000_000i64, 1_700_000_000_000i64);
            let mut rng = seed;
            let (mut tat, mut admitted) = (None, 0i64);
            while now < start + 200 * t_ms {
                let t = g.check(now * MS, tat, 1).unwrap();
                if !t.limited {
                    admitted += 1;
                    tat = t.new_tat;
                }
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                now += 1 + (rng >> 33) as i64 % t_ms;
            }
            let span = ((now - start) * MS) as i128;
            let floor = span / g.emission_ns as i128;
            prop_assert!(admitted as i128 >= floor - 1, "admitted {} over {} intervals", admitted, floor);
            prop_assert!(admitted as i128 <= floor + 1 + g.limit as i128);
        }

        #[test]
        fn gcra_admits_everything_below_the_rate(burst in 0i64..3, count in 1i64..10, period in 1i64..10,
            gaps in prop::collection::vec(0i64..5000, 1..50)) {
            let g = Gcra::new(burst, count, period).unwrap();
            let t_ms = (g.emission_ns + MS - 1) / MS;
            let (mut now, mut tat) = (1_700_000_000_000i64, None);
            for gap in gaps {
                let t = g.check(now * MS, tat, 1).unwrap();
                prop_assert!(!t.limited);
                tat = t.new_tat;
                now += t_ms + gap;
            }
        }
    }

    // --- sliding window -----------------------------------------------------------------

    /// Applies a plan to a model log, as the LTRIM/RPUSH/LSET steps do to the list.
    fn apply_plan(log: &mut Vec<LogEntry>, p: &WindowPlan) {
        if let Some((replace, e)) = p.write {
            log.drain(..p.trim);
            if replace {
                *log.last_mut().unwrap() = e;
            } else {
                log.push(e);
            }
        }
    }

    fn call(log: &mut Vec<LogEntry>, now: i64, limit: i64, window: i64, cost: i64) -> WindowPlan {
        let p = plan_window(&log[..], now, limit, window, cost).unwrap();
        apply_plan(log, &p);
        p
    }

    #[test]
    fn window_basics() {
        let mut log = Vec::new();
        let t0 = 1_700_000_000_000;
        // 3 per 1000 ms.
        let p = call(&mut log, t0, 3, 1000, 1);
        assert_eq!((p.allowed, p.remaining, p.retry_after_ms, p.reset_after_ms), (true, 2, -1, 1000));
        assert_eq!(p.expire_at, t0 + 1000);
        let p = call(&mut log, t0, 3, 1000, 1);
        assert!(p.write.unwrap().0, "same millisecond: the newest entry grows");
        assert_eq!(log.len(), 1);
        let p = call(&mut log, t0 + 400, 3, 1000, 1);
        assert_eq!((p.allowed, p.remaining), (true, 0));
        // Full: the first two leave at t0 + 1000, the third at t0 + 1400.
        let p = call(&mut log, t0 + 500, 3, 1000, 1);
        assert_eq!((p.allowed, p.remaining, p.retry_after_ms, p.reset_after_ms), (false, 0, 500, 900));
        let p = call(&mut log, t0 + 500, 3, 1000, 3);
        assert_eq!(p.retry_after_ms, 900, "cost 3 needs everything gone");
        let p = call(&mut log, t0 + 999, 3, 1000, 1);
        assert!(!p.allowed, "one millisecond early");
        let p = call(&mut log, t0 + 1000, 3, 1000, 2);
        assert_eq!((p.allowed, p.remaining, p.trim), (true, 0, 1));
        assert_eq!(log.iter().map(|e| (e.t - t0, e.cost)).collect::<Vec<_>>(), vec![(400, 1), (1000, 2)]);
    }

    #[test]
    fn window_cost_larger_than_limit_peek_and_big_steps() {
        let mut log = Vec::new();
        let t0 = 1_700_000_000_000;
        let p = call(&mut log, t0, 10, 60_000, 11);
        assert_eq!((p.allowed, p.remaining, p.retry_after_ms, p.reset_after_ms), (false, 10, -1, 0));
        assert!(log.is_empty(), "a rejected request consumes nothing");
        let p = call(&mut log, t0, 10, 60_000, 10);
        assert!(p.allowed);
        let p = call(&mut log, t0 + 1, 10, 60_000, 11);
        assert_eq!(p.retry_after_ms, -1, "never");
        // Peek: reports, changes nothing.
        let p = call(&mut log, t0 + 5, 10, 60_000, 0);
        assert_eq!((p.allowed, p.remaining, p.write, p.reset_after_ms), (true, 0, None, 59_995));
        // Days later: everything has left, the log restarts.
        let p = call(&mut log, t0 + 86_400_000 * 3, 10, 60_000, 4);
        assert_eq!((p.allowed, p.remaining, p.trim), (true, 6, 1));
        assert_eq!(log.len(), 1);
        // Lowered limit: more in the window than the new limit; nothing fits until enough
        // has left.
        let p = call(&mut log, t0 + 86_400_000 * 3 + 10, 2, 60_000, 1);
        assert_eq!((p.allowed, p.remaining, p.retry_after_ms), (false, 0, 59_990));
        let p = call(&mut log, t0 + 86_400_000 * 3 + 10, 2, 60_000, 0);
        assert!(!p.allowed, "a peek reports an over-full window as not allowed");
    }

    #[test]
    fn window_clock_going_back_and_totals_wrapping() {
        let t0 = 1_700_000_000_000;
        let mut log = vec![LogEntry { t: t0, cost: 2, total: u64::MAX - 1 }];
        let p = call(&mut log, t0 - 50, 5, 100, 1);
        assert!(p.allowed);
        assert_eq!(log.last().unwrap(), &LogEntry { t: t0, cost: 3, total: u64::MAX });
        let p = call(&mut log, t0 + 10, 5, 100, 2);
        assert_eq!((p.allowed, p.remaining), (true, 0));
        assert_eq!(log.last().unwrap().total, 1, "wrapped");
        let p = call(&mut log, t0 + 20, 5, 100, 1);
        assert_eq!((p.allowed, p.retry_after_ms), (false, 80));
        let p = call(&mut log, t0 + 20, 5, 100, 4);
        assert_eq!(p.retry_after_ms, 90);
        assert_eq!(LogEntry::decode(&log[1].encode()), Some(log[1]));
        assert_eq!(LogEntry::decode(b"12:0:3"), None);
        assert_eq!(LogEntry::decode(b"x:1:3"), None);
        assert_eq!(LogEntry::decode(b"12:1"), None);
        assert!(plan_window(&log[..], i64::MAX - 5, 5, 100, 1).is_err());
    }

    /// Lists edited by hand never panic the server: they are refused or give some answer.
    #[test]
    fn window_on_hand_edited_logs() {
        let t = 1_700_000_000_000;
        let cases: Vec<Vec<LogEntry>> = vec![
            vec![LogEntry { t: i64::MAX, cost: 1, total: 1 }],
            vec![LogEntry { t, cost: i64::MAX, total: 5 }, LogEntry { t, cost: i64::MAX, total: 0 }],
            vec![LogEntry { t: i64::MAX - 10, cost: 3, total: 3 }, LogEntry { t, cost: 1, total: 4 }],
            vec![LogEntry { t: t + 5, cost: 9, total: 1 << 63 }, LogEntry { t, cost: 9, total: 1 }],
        ];
        for log in cases {
            for (limit, window, cost) in [(1, 1, 1), (10, 1000, 0), (i64::MAX, i64::MAX / 2, 3), (5, 100, 5)] {
                let _ = plan_window(&log[..], t, limit, window, cost);
            }
        }
        let list: std::collections::VecDeque<Blob> =
            ["9:1:1", "x", "8:1:2"].iter().map(|s| Blob::new(s.as_bytes())).collect();
        assert_eq!(plan_window(&list, t, 5, 100, 1), Err(NOT_A_LOG));
    }

    /// The brute-force answer: costs admitted in (now - window, now].
    fn used_at(history: &[(i64, i64)], now: i64, window: i64) -> i64 {
        history.iter().filter(|(t, _)| *t > now - window && *t <= now).map(|(_, c)| c).sum()
    }

    proptest! {
        /// For arbitrary (time step, cost) sequences: the limiter decides exactly as the
        /// brute-force definition does, so it never admits more than `limit` in any window;
        /// its retry time is exact; and the log stays within its memory bound.
        #[test]
        fn window_is_exact_and_bounded(
            limit in 1i64..12, window in 1i64..400,
            calls in prop::collection::vec((0i64..300, 0i64..14), 1..150),
        ) {
            let mut log = Vec::new();
            let mut history: Vec<(i64, i64)> = Vec::new();
            let mut now = 1_700_000_000_000i64;
            for (dt, cost) in calls {
                now += dt;
                let used = used_at(&history, now, window);
                let p = call(&mut log, now, limit, window, cost);
                prop_assert_eq!(p.allowed, used + cost <= limit, "used {} cost {}", used, cost);
                if p.allowed && cost > 0 {
                    history.push((now, cost));
                }
                let after = used_at(&history, now, window);
                prop_assert!(after <= limit);
                prop_assert_eq!(p.remaining, (limit - after).max(0));
                if !p.allowed && cost <= limit {
                    let r = p.retry_after_ms;
                    prop_assert!(r >= 1);
                    prop_assert!(used_at(&history, now + r - 1, window) + cost > limit, "retry {} too late", r);
                    prop_assert!(used_at(&history, now + r, window) + cost <= limit, "retry {} too early", r);
                }
                prop_assert!(log.len() as i64 <= limit.min(window));
                // The live part of the log is the live history, one entry per millisecond.
                let mut live: Vec<(i64, i64)> = Vec::new();
                for &(t, c) in history.iter().filter(|(t, _)| *t > now - window) {
                    match live.last_mut() {
                        Some(l) if l.0 == t => l.1 += c,
                        _ => live.push((t, c)),
                    }
                }
                let logged: Vec<(i64, i64)> = log.iter().filter(|e| e.t > now - window).map(|e| (e.t, e.cost)).collect();
                prop_assert_eq!(logged, live);
            }
            // The property itself: no window of `window` ms holds more than `limit`.
            for &(t, _) in &history {
                prop_assert!(used_at(&history, t, window) <= limit);
            }
        }
    }

    // --- the commands, on a keyspace ----------------------------------------------------

    /// Every key with its encoded value and expiry.
    fn dump(ks: &Keyspace) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let mut v: Vec<_> = ks.dbs[0]
            .table
            .iter()
            .map(|(_, e)| {
                let mut b = Vec::new();
                crate::keyspace::serial::write_value(&e.value, &mut b);
                (e.key.to_vec(), b, e.expire_at)
            })
            .collect();
        v.sort();
        v
    }

    /// Applies what `primary` recorded since the last call to `replica` (at each op's own
    /// time, as replay.rs does) and checks both hold the same keys, values and expiries.
    pub(in crate::cmd) fn assert_converges(primary: &mut Keyspace, replica: &mut Keyspace, srv: &Shared) {
        let ops = primary.effects.take().expect("recording");
        for op in &ops {
            replica.now_ms = op.now_ms;
            let line: Vec<&[u8]> = op.argv.iter().map(|a| a.as_ref()).collect();
            let r = run(replica, srv, &line);
            assert!(!r.starts_with('-'), "{line:?}: {r}");
        }
        assert_eq!(dump(primary), dump(replica), "ops: {ops:?}");
        primary.effects = Some(Vec::new());
    }

    #[test]
    fn throttle_command_replies_and_replicates() {
        let (mut ks, srv) = setup();
        let mut replica = Keyspace::new(1);
        ks.now_ms = 1_700_000_000_000;
        let r = run(&mut ks, &srv, &[b"CL.THROTTLE", b"user123", b"15", b"30", b"60"]);
        assert_eq!(ints(&r), vec![0, 16, 15, -1, 2]);
        let ops = ks.effects.as_ref().unwrap();
        assert_eq!(ops.len(), 1);
        let tat = (ks.now_ms * MS + 2 * S).to_string();
        let at = (ks.now_ms + 2000).to_string();
        let want: Vec<&[u8]> = vec![b"SET", b"user123", tat.as_bytes(), b"PXAT", at.as_bytes()];
        assert_eq!(ops[0].argv.iter().map(|a| a.as_ref()).collect::<Vec<_>>(), want);
        assert_converges(&mut ks, &mut replica, &srv);
        // Limited and peek calls write nothing.
        for _ in 0..15 {
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"user123", b"15", b"30", b"60"]);
        }
        ks.effects = Some(Vec::new());
        let r = run(&mut ks, &srv, &[b"cl.throttle", b"user123", b"15", b"30", b"60"]);
        assert_eq!(ints(&r), vec![1, 16, 0, 2, 32]);
        let r = run(&mut ks, &srv, &[b"cl.throttle", b"user123", b"15", b"30", b"60", b"0"]);
        assert_eq!(ints(&r), vec![0, 16, 0, -1, 32]);
        assert!(ks.effects.as_ref().unwrap().is_empty());
        assert_eq!(ks.expire_at(0, b"user123"), Some(ks.now_ms + 32_000));
    }

    #[test]
    fn throttle_errors() {
        let (mut ks, srv) = setup();
        let usage =
            "-Cell error: Store error: Usage: cl.throttle <key> <max_burst> <count per period> <period> [<quantity>]";
        assert_eq!(run(&mut ks, &srv, &[b"CL.THROTTLE"]), usage);
        assert_eq!(run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"1", b"2"]), usage);
        assert_eq!(run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"1", b"2", b"3", b"4", b"5"]), usage);
        assert_eq!(
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"1", b"x", b"3"]),
            "-Cell error: Store error: Couldn't parse as integer: x"
        );
        assert_eq!(
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"99999999999999999999", b"1", b"3"]),
            "-Cell error: Store error: Couldn't parse as integer: 99999999999999999999"
        );
        assert_eq!(
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"1", b"0", b"3"]),
            "-Cell error: Store error: Zero rates are not supported"
        );
        assert_eq!(
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"-1", b"0", b"3"]),
            "-Cell error: Store error: Zero rates are not supported"
        );
        assert_eq!(
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"1", b"1", b"3", b"-1"]),
            "-ERR quantity must not be negative"
        );
        assert_eq!(
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"9223372036854775807", b"1", b"1"]),
            "-ERR max_burst, period or quantity is out of range"
        );
        // redis-cell's integer syntax: a plus sign and leading zeros are fine.
        assert_eq!(ints(&run(&mut ks, &srv, &[b"CL.THROTTLE", b"k", b"+1", b"01", b"1"]))[1], 2);
        run(&mut ks, &srv, &[b"SET", b"s", b"notanumber"]);
        assert_eq!(
            run(&mut ks, &srv, &[b"CL.THROTTLE", b"s", b"1", b"1", b"1"]),
            "-ERR value is not an integer or out of range"
        );
        run(&mut ks, &srv, &[b"RPUSH", b"l", b"a"]);
        assert!(run(&mut ks, &srv, &[b"CL.THROTTLE", b"l", b"1", b"1", b"1"]).starts_with("-WRONGTYPE"));
    }

    #[test]
    fn ratelimit_command_replies_and_replicates() {
        let (mut ks, srv) = setup();
        let mut replica = Keyspace::new(1);
        let t0 = 1_700_000_000_000;
        let at = |ks: &mut Keyspace, t: i64, line: &[&[u8]]| {
            ks.now_ms = t0 + t;
            ints(&run(ks, &srv, line))
        };
        let rl: &[&[u8]] = &[b"RATELIMIT", b"sms:+15551234", b"3", b"1000"];
        assert_eq!(at(&mut ks, 0, rl), vec![1, 2, -1, 1000]);
        assert_eq!(at(&mut ks, 0, rl), vec![1, 1, -1, 1000]);
        assert_eq!(at(&mut ks, 300, rl), vec![1, 0, -1, 1000]);
        assert_eq!(at(&mut ks, 301, rl), vec![0, 0, 699, 999]);
        assert_eq!(
            at(&mut ks, 1000, &[b"RATELIMIT", b"sms:+15551234", b"3", b"1000", b"COST", b"2"]),
            vec![1, 0, -1, 1000]
        );
        assert_eq!(ks.expire_at(0, b"sms:+15551234"), Some(t0 + 2000));
        let l = run(&mut ks, &srv, &[b"LRANGE", b"sms:+15551234", b"0", b"-1"]);
        assert!(l.contains(&format!("{}:1:3", t0 + 300)) && l.contains(&format!("{}:2:5", t0 + 1000)), "{l}");
        assert_converges(&mut ks, &mut replica, &srv);
        // A shorter window: everything has left it, the trim empties the list (deleting it
        // and its expiry), a new one starts.
        assert_eq!(at(&mut ks, 1500, &[b"RATELIMIT", b"sms:+15551234", b"3", b"100"]), vec![1, 2, -1, 100]);
        assert_eq!(ks.expire_at(0, b"sms:+15551234"), Some(t0 + 1600));
        assert_eq!(at(&mut ks, 1500, &[b"RATELIMIT", b"other", b"5", b"100", b"cost", b"0"]), vec![1, 5, -1, 0]);
        assert!(!ks.exists_logically(0, b"other"), "a peek creates nothing");
        assert_converges(&mut ks, &mut replica, &srv);
        // Expiry of the whole key is a fresh start.
        assert_eq!(at(&mut ks, 1_000_000, rl), vec![1, 2, -1, 1000]);
        assert_converges(&mut ks, &mut replica, &srv);
    }

    #[test]
    fn ratelimit_errors() {
        let (mut ks, srv) = setup();
        let e = |ks: &mut Keyspace, line: &[&[u8]]| run(ks, &srv, line);
        assert_eq!(e(&mut ks, &[b"RATELIMIT", b"k", b"x", b"10"]), "-ERR value is not an integer or out of range");
        assert_eq!(e(&mut ks, &[b"RATELIMIT", b"k", b"0", b"10"]), "-ERR limit must be positive");
        assert_eq!(e(&mut ks, &[b"RATELIMIT", b"k", b"1", b"-10"]), "-ERR window_ms must be positive");
        assert_eq!(e(&mut ks, &[b"RATELIMIT", b"k", b"1", b"10", b"COST"]), "-ERR syntax error");
        assert_eq!(e(&mut ks, &[b"RATELIMIT", b"k", b"1", b"10", b"COST", b"1", b"x"]), "-ERR syntax error");
        assert_eq!(e(&mut ks, &[b"RATELIMIT", b"k", b"1", b"10", b"COST", b"-1"]), "-ERR COST can't be negative");
        assert_eq!(e(&mut ks, &[b"RATELIMIT", b"k", b"1", b"9223372036854775807"]), "-ERR window_ms is out of range");
        assert_eq!(
            ints(&e(&mut ks, &[b"RATELIMIT", b"k", b"9223372036854775807", b"10", b"COST", b"9223372036854775807"])),
            vec![1, 0, -1, 10]
        );
        assert_eq!(
            ints(&e(&mut ks, &[b"RATELIMIT", b"k", b"9223372036854775807", b"10", b"COST", b"1"])),
            vec![0, 0, 10, 10]
        );
        e(&mut ks, &[b"SET", b"s", b"v"]);
        assert!(e(&mut ks, &[b"RATELIMIT", b"s", b"1", b"10"]).starts_with("-WRONGTYPE"));
        e(&mut ks, &[b"RPUSH", b"l", b"not a log"]);
        assert!(e(&mut ks, &[b"RATELIMIT", b"l", b"1", b"10"]).starts_with("-WRONGTYPE"));
    }
}
