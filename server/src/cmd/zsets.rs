//! Sorted set commands (Redis's `t_zset.c`): adds and increments, rank/score/lex ranges
//! and their removals, pops (plain, multi-key and blocking), the union/intersection/
//! difference family, random members and ZSCAN.
//!
//! A sorted set is a [`ZSet`]: a member -> score map plus a `(score, member)` ordered tree,
//! which is exactly the order of Redis's skiplist and listpack. Redis deletes a sorted set
//! as soon as its last member goes, so every removal checks for that and emits `del`.
//! Blocking pops that find nothing ask the connection to park them ([`Ctx::block_on`]);
//! when a key gets members the same handler runs again in [`BlockMode::Serving`].

use std::ops::Bound::{self, Excluded, Included, Unbounded};

use bytes::Bytes;
use hashbrown::HashMap;
use rand::Rng;
use redoubt_protocol::ReplyBuf;

use super::args::{self, is};
use super::flags::*;
use super::hashes;
use super::scan;
use super::{err, BlockMode, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Blob, Keyspace, Score, Set, Value, ZSet};

pub const COMMANDS: &[Spec] = &[
    Spec::new("zadd", -4, WRITE | DENYOOM | FAST, (1, 1, 1), "sortedset", zadd),
    Spec::new("zincrby", 4, WRITE | DENYOOM | FAST, (1, 1, 1), "sortedset", zincrby),
    Spec::new("zrem", -3, WRITE | FAST, (1, 1, 1), "sortedset", zrem),
    Spec::new("zcard", 2, READONLY | FAST, (1, 1, 1), "sortedset", zcard),
    Spec::new("zscore", 3, READONLY | FAST, (1, 1, 1), "sortedset", zscore),
    Spec::new("zmscore", -3, READONLY | FAST, (1, 1, 1), "sortedset", zmscore),
    Spec::new("zrank", 3, READONLY | FAST, (1, 1, 1), "sortedset", zrank),
    Spec::new("zrevrank", 3, READONLY | FAST, (1, 1, 1), "sortedset", zrevrank),
    Spec::new("zcount", 4, READONLY | FAST, (1, 1, 1), "sortedset", zcount),
    Spec::new("zlexcount", 4, READONLY | FAST, (1, 1, 1), "sortedset", zlexcount),
    Spec::new("zrange", -4, READONLY, (1, 1, 1), "sortedset", zrange),
    Spec::new("zrangestore", -5, WRITE | DENYOOM, (1, 2, 1), "sortedset", zrangestore),
    Spec::new("zrangebyscore", -4, READONLY, (1, 1, 1), "sortedset", zrangebyscore),
    Spec::new("zrevrangebyscore", -4, READONLY, (1, 1, 1), "sortedset", zrevrangebyscore),
    Spec::new("zrangebylex", -4, READONLY, (1, 1, 1), "sortedset", zrangebylex),
    Spec::new("zrevrangebylex", -4, READONLY, (1, 1, 1), "sortedset", zrevrangebylex),
    Spec::new("zrevrange", -4, READONLY, (1, 1, 1), "sortedset", zrevrange),
    Spec::new("zremrangebyscore", 4, WRITE, (1, 1, 1), "sortedset", zremrangebyscore),
    Spec::new("zremrangebyrank", 4, WRITE, (1, 1, 1), "sortedset", zremrangebyrank),
    Spec::new("zremrangebylex", 4, WRITE, (1, 1, 1), "sortedset", zremrangebylex),
    Spec::new("zpopmin", -2, WRITE | FAST, (1, 1, 1), "sortedset", zpopmin),
    Spec::new("zpopmax", -2, WRITE | FAST, (1, 1, 1), "sortedset", zpopmax),
    Spec::new("bzpopmin", -3, WRITE | NOSCRIPT | BLOCKING | FAST, (1, -2, 1), "sortedset", bzpopmin),
    Spec::new("bzpopmax", -3, WRITE | NOSCRIPT | BLOCKING | FAST, (1, -2, 1), "sortedset", bzpopmax),
    Spec::new("zmpop", -4, WRITE | MOVABLE_KEYS, (0, 0, 0), "sortedset", zmpop),
    Spec::new("bzmpop", -5, WRITE | BLOCKING | MOVABLE_KEYS, (0, 0, 0), "sortedset", bzmpop),
    Spec::new("zunion", -3, READONLY | MOVABLE_KEYS, (0, 0, 0), "sortedset", zunion),
    Spec::new("zinter", -3, READONLY | MOVABLE_KEYS, (0, 0, 0), "sortedset", zinter),
    Spec::new("zdiff", -3, READONLY | MOVABLE_KEYS, (0, 0, 0), "sortedset", zdiff),
    Spec::new("zunionstore", -4, WRITE | DENYOOM | MOVABLE_KEYS, (1, 1, 1), "sortedset", zunionstore),
    Spec::new("zinterstore", -4, WRITE | DENYOOM | MOVABLE_KEYS, (1, 1, 1), "sortedset", zinterstore),
    Spec::new("zdiffstore", -4, WRITE | DENYOOM | MOVABLE_KEYS, (1, 1, 1), "sortedset", zdiffstore),
    Spec::new("zintercard", -3, READONLY | MOVABLE_KEYS, (0, 0, 0), "sortedset", zintercard),
    Spec::new("zrandmember", -2, READONLY, (1, 1, 1), "sortedset", zrandmember),
    Spec::new("zscan", -3, READONLY, (1, 1, 1), "sortedset", zscan),
];

/// One entry of a sorted set's ordered index.
type Item = (Score, Blob);

const RANGE_NOT_FLOAT: CmdError = CmdError::Static("ERR min or max is not a float");
const RANGE_NOT_LEX: CmdError = CmdError::Static("ERR min or max not valid string range item");

// ---------------------------------------------------------------------------------------
// Keyspace helpers
// ---------------------------------------------------------------------------------------

fn new_zset() -> Value {
    Value::ZSet(Box::default())
}

/// The sorted set at `key` for reading (hit/miss accounted); `Ok(None)` when missing.
fn read_zset<'a>(ks: &'a mut Keyspace, db: usize, key: &[u8]) -> Result<Option<&'a ZSet>, CmdError> {
    ks.read(db, key).map(args::as_zset).transpose()
}

/// The sorted set at `key` for changing it; `Ok(None)` when missing.
fn write_zset<'a>(ks: &'a mut Keyspace, db: usize, key: &[u8]) -> Result<Option<&'a mut ZSet>, CmdError> {
    ks.write(db, key).map(args::as_zset_mut).transpose()
}

/// The configured listpack limits for sorted sets: (entries, member length).
fn limits(ctx: &Ctx) -> (usize, usize) {
    let c = ctx.srv.config.read();
    (c.zset_max_listpack_entries as usize, c.zset_max_listpack_value as usize)
}

/// Bookkeeping after members were removed from `key`: the command's event, and deletion
/// (with `del`) when the set became empty, since Redis never keeps empty sorted sets.
fn after_remove(ctx: &mut Ctx, key: &[u8], event: &'static str, emptied: bool) {
    ctx.ks.notify(notify::ZSET, event, ctx.db, key);
    if emptied {
        // `delete` also signals the change to WATCHers.
        ctx.ks.delete(ctx.db, key);
        ctx.ks.notify(notify::GENERIC, "del", ctx.db, key);
    } else {
        ctx.ks.signal_modified(ctx.db, key);
    }
}

/// Replaces `dst` with a sorted set of `items` (Redis's `setKey`: any old value and TTL
/// go), or deletes `dst` when there are none; replies with the new size. Returns whether
/// the keyspace changed (and so whether the command must be propagated).
fn store(ctx: &mut Ctx, dst: &[u8], items: Vec<(Blob, f64)>, event: &'static str) -> bool {
    if items.is_empty() {
        ctx.out.int(0);
        let existed = ctx.ks.delete(ctx.db, dst);
        if existed {
            ctx.ks.notify(notify::GENERIC, "del", ctx.db, dst);
        }
        return existed;
    }
    let (max_n, max_len) = limits(ctx);
    // Large or small is decided up front, as Redis sizes the result before filling it
    // (a large result keeps its -0 scores).
    let big = items.len() > max_n || items.iter().any(|(m, _)| m.len() > max_len);
    let mut z = ZSet { big, ..ZSet::default() };
    for (m, s) in &items {
        z.insert_limited(m, *s, max_n, max_len);
    }
    let len = z.len();
    ctx.ks.set(ctx.db, dst, Value::ZSet(Box::new(z)), false);
    ctx.ks.notify(notify::ZSET, event, ctx.db, dst);
    ctx.ks.signal_ready(ctx.db, dst);
    ctx.out.int(len as i64);
    true
}

/// Writes members with optional scores. With scores, pairs are flat `[m, s, m, s]` unless
/// `nested`, which gives `[[m, s], [m, s]]` (what RESP3 clients get for most commands).
fn reply_scored<'a>(
    out: &mut ReplyBuf,
    items: impl ExactSizeIterator<Item = (&'a [u8], f64)>,
    withscores: bool,
    nested: bool,
) {
    let n = items.len();
    out.array(if withscores && !nested { n * 2 } else { n });
    for (m, s) in items {
        if withscores && nested {
            out.array(2);
        }
        out.bulk(m);
        if withscores {
            out.double(s);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Number and range parsing, with Redis's exact rules
// ---------------------------------------------------------------------------------------

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What C's `strtod` makes of all of `s`: None if it would stop before the end, or for
/// NaN. The flag is strtod's ERANGE (overflow to infinity, or underflow to zero).
/// Leading whitespace is skipped and an empty string is 0, as in C.
fn strtod(s: &[u8]) -> Option<(f64, bool)> {
    if s.is_empty() {
        return Some((0.0, false));
    }
    let t = &s[s.iter().take_while(|&&c| is_c_space(c)).count()..];
    let (neg, body) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if matches!(body.first(), Some(b'+' | b'-')) {
        return None;
    }
    let hex = body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x';
    let v = if hex {
        parse_hex(&body[2..])?
    } else {
        // Rust's grammar is strtod's decimal one plus inf/infinity/nan, minus hex.
        std::str::from_utf8(body).ok()?.parse::<f64>().ok()?
    };
    if v.is_nan() {
        return None;
    }
    // ERANGE: a finite number overflowed to infinity, or a non-zero one underflowed to 0.
    let literal_inf = body[0].is_ascii_alphabetic();
    let (digits, exp_mark) = if hex { (&body[2..], b'p') } else { (body, b'e') };
    let mantissa = &digits[..digits.iter().position(|&c| c | 0x20 == exp_mark).unwrap_or(digits.len())];
    let nonzero = mantissa.iter().any(|&c| c.is_ascii_hexdigit() && c != b'0');
    let erange = (v.is_infinite() && !literal_inf) || (v == 0.0 && nonzero);
    Some((if neg { -v } else { v }, erange))
}

/// A hexadecimal float body (after `0x`): `h[.h][p[sign]d]`.
fn parse_hex(s: &[u8]) -> Option<f64> {
    let mut mant: u64 = 0;
    let mut exp: i64 = 0;
    let mut digits = 0;
    let mut i = 0;
    let mut seen_point = false;
    while i < s.len() {
        let c = s[i];
        if c == b'.' && !seen_point {
            seen_point = true;
        } else if let Some(d) = (c as char).to_digit(16) {
            digits += 1;
            if mant >> 58 == 0 {
                mant = mant * 16 + d as u64;
                if seen_point {
                    exp -= 4;
                }
            } else if !seen_point {
                exp += 4; // precision beyond 60 bits is dropped
            }
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    if i < s.len() {
        if s[i] | 0x20 != b'p' {
            return None;
        }
        let rest = &s[i + 1..];
        let (neg, ds) = match rest.first() {
            Some(b'-') => (true, &rest[1..]),
            Some(b'+') => (false, &rest[1..]),
            _ => (false, rest),
        };
        if ds.is_empty() || !ds.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let e = ds.iter().fold(0i64, |a, &c| (a * 10 + (c - b'0') as i64).min(1 << 20));
        exp += if neg { -e } else { e };
    }
    let mut v = mant as f64;
    // Scale in steps that stay exact until the result itself over/underflows.
    while exp > 0 {
        let step = exp.min(1000);
        v *= 2f64.powi(step as i32);
        exp -= step;
    }
    while exp < 0 {
        let step = exp.max(-1000);
        v *= 2f64.powi(step as i32);
        exp -= step;
    }
    Some(v)
}

/// A double argument as Redis's `getDoubleFromObject` reads it: strtod over the whole
/// text, but no leading space, no empty string, no NaN and no overflow/underflow.
fn strict_double(a: &[u8]) -> Option<f64> {
    if a.is_empty() || is_c_space(a[0]) {
        return None;
    }
    // Fast path for the common case of a short integer score: below 2^53 every integer
    // is exact as a double, so this is what strtod would return.
    if a.len() <= 15 {
        if let Some(v) = redoubt_protocol::num::parse_i64(a) {
            return Some(v as f64);
        }
    }
    match strtod(a) {
        Some((v, false)) => Some(v),
        _ => None,
    }
}

fn score_arg(a: &[u8]) -> Result<f64, CmdError> {
    strict_double(a).ok_or(err::NOT_FLOAT)
}

/// An integer in `0..=i64::MAX` where any failure (also a non-number) reports `msg`, like
/// Redis's `getPositiveLongFromObjectOrReply`/`getRangeLong...` with a message.
fn long_in(a: &[u8], min: i64, msg: &'static str) -> Result<i64, CmdError> {
    match redoubt_protocol::num::parse_i64(a) {
        Some(v) if v >= min => Ok(v),
        _ => Err(CmdError::Static(msg)),
    }
}

/// A score interval, as Redis's `zslParseRange` reads `min max`: `(` makes a bound
/// exclusive; each bound goes through plain strtod (so "" is 0, " 1" is 1, and overflow
/// is ±inf); NaN is refused.
#[derive(Clone, Copy, Debug)]
struct ScoreRange {
    min: f64,
    max: f64,
    minex: bool,
    maxex: bool,
}

impl ScoreRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<ScoreRange, CmdError> {
        let (min, minex) = Self::bound(min).ok_or(RANGE_NOT_FLOAT)?;
        let (max, maxex) = Self::bound(max).ok_or(RANGE_NOT_FLOAT)?;
        Ok(ScoreRange { min, max, minex, maxex })
    }

    fn bound(a: &[u8]) -> Option<(f64, bool)> {
        match a.first() {
            Some(b'(') => strtod(&a[1..]).map(|(v, _)| (v, true)),
            _ => strtod(a).map(|(v, _)| (v, false)),
        }
    }

    fn gte_min(&self, s: f64) -> bool {
        if self.minex {
            s > self.min
        } else {
            s >= self.min
        }
    }

    fn lte_max(&self, s: f64) -> bool {
        if self.maxex {
            s < self.max
        } else {
            s <= self.max
        }
    }

    /// Tree bounds from which a forward walk reaches the first member >= min.
    fn lower(&self) -> (Bound<Item>, Bound<Item>) {
        (Included((Score(self.min), Blob::new(b""))), Unbounded)
    }

    /// Tree bounds from which a backward walk reaches the last member <= max.
    fn upper(&self) -> (Bound<Item>, Bound<Item>) {
        if self.maxex {
            (Unbounded, Excluded((Score(self.max), Blob::new(b""))))
        } else if self.max == f64::INFINITY {
            (Unbounded, Unbounded)
        } else {
            (Unbounded, Excluded((Score(next_up(self.max)), Blob::new(b""))))
        }
    }
}

/// The smallest double above `x` (finite, non-NaN `x`).
fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

/// One end of a lexicographic interval (Redis's `zslParseLexRangeItem`).
#[derive(Clone, Debug, PartialEq)]
enum Lex {
    /// `-`: below every string.
    Min,
    /// `+`: above every string.
    Max,
    /// `[value`
    Incl(Vec<u8>),
    /// `(value`
    Excl(Vec<u8>),
}

impl Lex {
    fn parse(a: &[u8]) -> Result<Lex, CmdError> {
        match a.first() {
            Some(b'+') if a.len() == 1 => Ok(Lex::Max),
            Some(b'-') if a.len() == 1 => Ok(Lex::Min),
            Some(b'(') => Ok(Lex::Excl(a[1..].to_vec())),
            Some(b'[') => Ok(Lex::Incl(a[1..].to_vec())),
            _ => Err(RANGE_NOT_LEX),
        }
    }

    /// The bound's string and whether it is exclusive; the infinities are exclusive.
    fn parts(&self) -> (Option<&[u8]>, bool) {
        match self {
            Lex::Min | Lex::Max => (None, true),
            Lex::Incl(v) => (Some(v), false),
            Lex::Excl(v) => (Some(v), true),
        }
    }
}

/// Redis's `sdscmplex`: compares bounds, the infinities beyond every string.
fn cmp_lex(a: &Lex, b: &Lex) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Lex::Min, Lex::Min) | (Lex::Max, Lex::Max) => Equal,
        (Lex::Min, _) | (_, Lex::Max) => Less,
        (Lex::Max, _) | (_, Lex::Min) => Greater,
        _ => a.parts().0.cmp(&b.parts().0),
    }
}

#[derive(Clone, Debug)]
struct LexRange {
    min: Lex,
    max: Lex,
}

impl LexRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<LexRange, CmdError> {
        Ok(LexRange { min: Lex::parse(min)?, max: Lex::parse(max)? })
    }

    fn gte_min(&self, m: &[u8]) -> bool {
        match &self.min {
            Lex::Min => true,
            Lex::Max => false,
            Lex::Incl(v) => m >= &v[..],
            Lex::Excl(v) => m > &v[..],
        }
    }

    fn lte_max(&self, m: &[u8]) -> bool {
        match &self.max {
            Lex::Min => false,
            Lex::Max => true,
            Lex::Incl(v) => m <= &v[..],
            Lex::Excl(v) => m < &v[..],
        }
    }

    /// Redis's `zslIsInLexRange`/`zzlIsInLexRange`: false for an interval that is empty
    /// by itself, or that lies wholly before the first or after the last member.
    fn may_match(&self, z: &ZSet) -> bool {
        let c = cmp_lex(&self.min, &self.max);
        let ex = self.min.parts().1 || self.max.parts().1;
        if c.is_gt() || (c.is_eq() && ex) {
            return false;
        }
        match (z.tree.first(), z.tree.last()) {
            (Some(first), Some(last)) => self.lte_max(&first.1) && self.gte_min(&last.1),
            _ => false,
        }
    }

    /// Tree bounds that start a walk near the interval when every member has the same
    /// `score` (the lex commands' intended use, where tree order is member order).
    fn bounds(&self, score: Score, rev: bool) -> (Bound<Item>, Bound<Item>) {
        let at = |v: &[u8]| (score, Blob::new(v));
        if rev {
            match &self.max {
                Lex::Incl(v) => (Unbounded, Included(at(v))),
                Lex::Excl(v) => (Unbounded, Excluded(at(v))),
                _ => (Unbounded, Unbounded),
            }
        } else {
            match &self.min {
                Lex::Incl(v) | Lex::Excl(v) => (Included(at(v)), Unbounded),
                _ => (Unbounded, Unbounded),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Range selection (shared by ZRANGE*, ZCOUNT/ZLEXCOUNT, ZREMRANGEBY*, ZRANGESTORE)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Range {
    /// Inclusive 0-based ranks, negative from the end.
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// A parsed range query.
#[derive(Clone, Debug)]
struct Query {
    range: Range,
    rev: bool,
    withscores: bool,
    /// LIMIT offset (a negative one selects nothing, as in Redis).
    offset: i64,
    /// LIMIT count; negative = no limit.
    limit: i64,
}

impl Query {
    fn all(range: Range) -> Query {
        Query { range, rev: false, withscores: false, offset: 0, limit: -1 }
    }
}

/// Members of `z` selected by `q`, in reply order.
///
/// Score and lex walks follow Redis: start at the first member inside the interval (the
/// last one when reversed), skip `offset` members without looking at them, then take up
/// to `limit` members while they are inside. For lex intervals on a set whose scores
/// differ, "first member >= min" is found by a linear walk like Redis's listpack code.
fn select<'a>(z: &'a ZSet, q: &Query) -> Vec<&'a Item> {
    match &q.range {
        Range::Rank(start, end) => by_rank(z, *start, *end, q.rev),
        Range::Score(r) => {
            if q.rev {
                let it = z.tree.range(r.upper()).rev().skip_while(|e| !r.lte_max(e.0 .0));
                window(it, |e| r.gte_min(e.0 .0), q)
            } else {
                let it = z.tree.range(r.lower()).skip_while(|e| !r.gte_min(e.0 .0));
                window(it, |e| r.lte_max(e.0 .0), q)
            }
        }
        Range::Lex(r) => {
            if !r.may_match(z) {
                return Vec::new();
            }
            let (first, last) = (z.tree.first().expect("non-empty"), z.tree.last().expect("non-empty"));
            let bounds = if first.0 == last.0 { r.bounds(first.0, q.rev) } else { (Unbounded, Unbounded) };
            if q.rev {
                let it = z.tree.range(bounds).rev().skip_while(|e| !r.lte_max(&e.1));
                window(it, |e| r.gte_min(&e.1), q)
            } else {
                let it = z.tree.range(bounds).skip_while(|e| !r.gte_min(&e.1));
                window(it, |e| r.lte_max(&e.1), q)
            }
        }
    }
}

/// Applies LIMIT to a walk positioned at its first candidate; `inside` tests the far end.
fn window<'a>(it: impl Iterator<Item = &'a Item>, inside: impl Fn(&Item) -> bool, q: &Query) -> Vec<&'a Item> {
    let mut it = it.peekable();
    if q.offset < 0 || !it.peek().is_some_and(|e| inside(e)) {
        return Vec::new();
    }
    let limit = if q.limit < 0 { usize::MAX } else { q.limit as usize };
    it.skip(q.offset as usize).take_while(|e| inside(e)).take(limit).collect()
}

fn by_rank(z: &ZSet, start: i64, end: i64, rev: bool) -> Vec<&Item> {
    let len = z.len();
    let Some((s, e)) = args::clamp_range(start, end, len) else { return Vec::new() };
    let n = e - s + 1;
    // Walk from whichever end is nearer (the tree has no rank index).
    let near_front = s <= len - 1 - e;
    match (rev, near_front) {
        (false, true) => z.tree.iter().skip(s).take(n).collect(),
        (true, true) => z.tree.iter().rev().skip(s).take(n).collect(),
        (false, false) => {
            let mut v: Vec<_> = z.tree.iter().rev().skip(len - 1 - e).take(n).collect();
            v.reverse();
            v
        }
        (true, false) => {
            let mut v: Vec<_> = z.tree.iter().skip(len - 1 - e).take(n).collect();
            v.reverse();
            v
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Auto,
    Rank,
    Score,
    Lex,
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Auto,
    Forward,
    Reverse,
}

/// Parses `<key> <min> <max> [options]` starting at `argv[at]`, as Redis's
/// `zrangeGenericCommand` does for every ZRANGE flavour. `kind`/`dir` are fixed by the
/// legacy commands and `Auto` for ZRANGE/ZRANGESTORE, which take BYSCORE/BYLEX/REV.
fn parse_query(argv: &[Bytes], at: usize, store: bool, mut kind: Kind, mut dir: Dir) -> Result<Query, CmdError> {
    let mut withscores = false;
    let (mut offset, mut limit) = (0, -1);
    let mut j = at + 3;
    while j < argv.len() {
        let a = &argv[j];
        let left = argv.len() - j - 1;
        if !store && is(a, "withscores") {
            withscores = true;
        } else if is(a, "limit") && left >= 2 {
            offset = args::int(&argv[j + 1])?;
            limit = args::int(&argv[j + 2])?;
            j += 2;
        } else if dir == Dir::Auto && is(a, "rev") {
            dir = Dir::Reverse;
        } else if kind == Kind::Auto && is(a, "bylex") {
            kind = Kind::Lex;
        } else if kind == Kind::Auto && is(a, "byscore") {
            kind = Kind::Score;
        } else {
            return Err(err::SYNTAX);
        }
        j += 1;
    }
    let rev = dir == Dir::Reverse;
    if kind == Kind::Auto {
        kind = Kind::Rank;
    }
    if limit != -1 && kind == Kind::Rank {
        return Err(CmdError::Static(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if withscores && kind == Kind::Lex {
        return Err(CmdError::Static("ERR syntax error, WITHSCORES not supported in combination with BYLEX"));
    }
    // Reversed score and lex ranges are given as max, min.
    let (mut lo, mut hi) = (&argv[at + 1], &argv[at + 2]);
    if rev && kind != Kind::Rank {
        std::mem::swap(&mut lo, &mut hi);
    }
    let range = match kind {
        Kind::Score => Range::Score(ScoreRange::parse(lo, hi)?),
        Kind::Lex => Range::Lex(LexRange::parse(lo, hi)?),
        _ => Range::Rank(args::int(lo)?, args::int(hi)?),
    };
    Ok(Query { range, rev, withscores, offset, limit })
}

fn range_command(ctx: &mut Ctx, argv: &[Bytes], kind: Kind, dir: Dir) -> CmdResult {
    let q = parse_query(argv, 1, false, kind, dir)?;
    let Some(z) = read_zset(ctx.ks, ctx.db, &argv[1])? else {
        ctx.out.array(0);
        return Ok(());
    };
    let items = select(z, &q);
    let nested = ctx.out.resp3();
    reply_scored(ctx.out, items.iter().map(|e| (&e.1[..], e.0 .0)), q.withscores, nested);
    Ok(())
}

fn zrange(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    range_command(ctx, argv, Kind::Auto, Dir::Auto)
}

fn zrevrange(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    range_command(ctx, argv, Kind::Rank, Dir::Reverse)
}

fn zrangebyscore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    range_command(ctx, argv, Kind::Score, Dir::Forward)
}

fn zrevrangebyscore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    range_command(ctx, argv, Kind::Score, Dir::Reverse)
}

fn zrangebylex(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    range_command(ctx, argv, Kind::Lex, Dir::Forward)
}

fn zrevrangebylex(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    range_command(ctx, argv, Kind::Lex, Dir::Reverse)
}

fn zrangestore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let q = parse_query(argv, 2, true, Kind::Auto, Dir::Auto)?;
    let items = match read_zset(ctx.ks, ctx.db, &argv[2])? {
        Some(z) => select(z, &q).into_iter().map(|e| (e.1.clone(), e.0 .0)).collect(),
        None => Vec::new(),
    };
    if store(ctx, &argv[1], items, "zrangestore") {
        ctx.propagate(argv);
    }
    Ok(())
}

fn zcount(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let q = Query::all(Range::Score(ScoreRange::parse(&argv[2], &argv[3])?));
    count_command(ctx, &argv[1], &q)
}

fn zlexcount(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let q = Query::all(Range::Lex(LexRange::parse(&argv[2], &argv[3])?));
    count_command(ctx, &argv[1], &q)
}

fn count_command(ctx: &mut Ctx, key: &[u8], q: &Query) -> CmdResult {
    let n = read_zset(ctx.ks, ctx.db, key)?.map_or(0, |z| select(z, q).len());
    ctx.out.int(n as i64);
    Ok(())
}

fn zremrangebyrank(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let range = Range::Rank(args::int(&argv[2])?, args::int(&argv[3])?);
    remove_range(ctx, argv, range, "zremrangebyrank")
}

fn zremrangebyscore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let range = Range::Score(ScoreRange::parse(&argv[2], &argv[3])?);
    remove_range(ctx, argv, range, "zremrangebyscore")
}

fn zremrangebylex(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let range = Range::Lex(LexRange::parse(&argv[2], &argv[3])?);
    remove_range(ctx, argv, range, "zremrangebylex")
}

fn remove_range(ctx: &mut Ctx, argv: &[Bytes], range: Range, event: &'static str) -> CmdResult {
    let key = &argv[1];
    let Some(z) = write_zset(ctx.ks, ctx.db, key)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let doomed: Vec<Blob> = select(z, &Query::all(range)).into_iter().map(|e| e.1.clone()).collect();
    for m in &doomed {
        z.remove(m);
    }
    let emptied = z.is_empty();
    if !doomed.is_empty() {
        after_remove(ctx, key, event, emptied);
        ctx.propagate(argv);
    }
    ctx.out.int(doomed.len() as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ZADD / ZINCRBY / ZREM
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    incr: bool,
}

/// What `zset_add` did with one member.
#[derive(Clone, Copy, PartialEq)]
enum Added {
    New,
    Updated,
    /// Processed without a score change (counts for the INCR reply).
    Same,
    /// Skipped by NX/XX/GT/LT.
    Nop,
}

/// Redis's `zsetAdd`: adds or updates one member under the NX/XX/GT/LT/INCR rules.
/// Returns the outcome and the member's resulting score; Err when INCR makes a NaN.
fn zset_add(z: &mut ZSet, score: f64, m: &[u8], f: AddFlags, limits: (usize, usize)) -> Result<(Added, f64), CmdError> {
    let insert = |z: &mut ZSet, score| z.insert_limited(m, score, limits.0, limits.1);
    match z.score(m) {
        Some(cur) => {
            if f.nx {
                return Ok((Added::Nop, cur));
            }
            let score = if f.incr { score + cur } else { score };
            if score.is_nan() {
                return Err(CmdError::Static("ERR resulting score is not a number (NaN)"));
            }
            if (f.lt && score >= cur) || (f.gt && score <= cur) {
                return Ok((Added::Nop, cur));
            }
            if score == cur {
                return Ok((Added::Same, score));
            }
            insert(z, score);
            Ok((Added::Updated, score))
        }
        None if f.xx => Ok((Added::Nop, 0.0)),
        None => {
            insert(z, score);
            Ok((Added::New, score))
        }
    }
}

fn zadd(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    zadd_generic(ctx, argv, AddFlags::default())
}

fn zincrby(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    zadd_generic(ctx, argv, AddFlags { incr: true, ..AddFlags::default() })
}

/// ZADD and ZINCRBY (which is ZADD with INCR preset, and so also takes the options).
fn zadd_generic(ctx: &mut Ctx, argv: &[Bytes], mut f: AddFlags) -> CmdResult {
    let key = &argv[1];
    let mut ch = false;
    let mut i = 2;
    while i < argv.len() {
        let a = &argv[i];
        if is(a, "nx") {
            f.nx = true;
        } else if is(a, "xx") {
            f.xx = true;
        } else if is(a, "ch") {
            ch = true;
        } else if is(a, "incr") {
            f.incr = true;
        } else if is(a, "gt") {
            f.gt = true;
        } else if is(a, "lt") {
            f.lt = true;
        } else {
            break;
        }
        i += 1;
    }
    let pairs = &argv[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(err::SYNTAX);
    }
    if f.nx && f.xx {
        return Err(CmdError::Static("ERR XX and NX options at the same time are not compatible"));
    }
    if (f.nx && (f.gt || f.lt)) || (f.gt && f.lt) {
        return Err(CmdError::Static("ERR GT, LT, and/or NX options at the same time are not compatible"));
    }
    if f.incr && pairs.len() > 2 {
        return Err(CmdError::Static("ERR INCR option supports a single increment-element pair"));
    }
    // Every score is checked before anything changes: the command is all or nothing.
    // (Parsed twice rather than collected: one allocation per ZADD cost more.)
    for p in pairs.chunks(2) {
        score_arg(&p[0])?;
    }

    match ctx.ks.write(ctx.db, key) {
        Some(e) => {
            args::as_zset(e)?;
        }
        None if f.xx => {
            reply_add(ctx.out, f.incr, ch, 0, 0, None);
            return Ok(());
        }
        None => {}
    }
    let limits = limits(ctx);
    let (e, _) = ctx.ks.entry_or_insert(ctx.db, key, new_zset);
    let z = args::as_zset_mut(e)?;
    let (mut added, mut updated) = (0, 0);
    let mut last = None;
    for p in pairs.chunks(2) {
        let score = score_arg(&p[0])?;
        // Only INCR can fail, and it has a single pair on an existing member: nothing
        // was changed yet and no key was created.
        let (what, newscore) = zset_add(z, score, &p[1], f, limits)?;
        match what {
            Added::New => added += 1,
            Added::Updated => updated += 1,
            _ => {}
        }
        last = (what != Added::Nop).then_some(newscore);
    }
    if added + updated > 0 {
        ctx.ks.signal_modified(ctx.db, key);
        ctx.ks.notify(notify::ZSET, if f.incr { "zincr" } else { "zadd" }, ctx.db, key);
        ctx.ks.signal_ready(ctx.db, key);
        ctx.propagate(argv);
    }
    reply_add(ctx.out, f.incr, ch, added, updated, last);
    Ok(())
}

/// ZADD replies with a count (added, plus updated with CH); with INCR, the new score or
/// null when the member was skipped.
fn reply_add(out: &mut ReplyBuf, incr: bool, ch: bool, added: i64, updated: i64, score: Option<f64>) {
    match (incr, score) {
        (true, Some(s)) => out.double(s),
        (true, None) => out.null(),
        (false, _) => out.int(if ch { added + updated } else { added }),
    }
}

fn zrem(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(z) = write_zset(ctx.ks, ctx.db, key)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let deleted = argv[2..].iter().filter(|m| z.remove(m).is_some()).count();
    let emptied = z.is_empty();
    if deleted > 0 {
        after_remove(ctx, key, "zrem", emptied);
        ctx.propagate(argv);
    }
    ctx.out.int(deleted as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Point reads
// ---------------------------------------------------------------------------------------

fn zcard(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let n = read_zset(ctx.ks, ctx.db, &argv[1])?.map_or(0, |z| z.len());
    ctx.out.int(n as i64);
    Ok(())
}

fn zscore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match read_zset(ctx.ks, ctx.db, &argv[1])?.and_then(|z| z.score(&argv[2])) {
        Some(s) => ctx.out.double(s),
        None => ctx.out.null(),
    }
    Ok(())
}

fn zmscore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let z = read_zset(ctx.ks, ctx.db, &argv[1])?;
    ctx.out.array(argv.len() - 2);
    for m in &argv[2..] {
        match z.and_then(|z| z.score(m)) {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

fn zrank(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    rank_command(ctx, argv, false)
}

fn zrevrank(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    rank_command(ctx, argv, true)
}

fn rank_command(ctx: &mut Ctx, argv: &[Bytes], rev: bool) -> CmdResult {
    let z = read_zset(ctx.ks, ctx.db, &argv[1])?;
    match z.and_then(|z| Some((z.rank(&argv[2])?, z.len()))) {
        Some((r, len)) => ctx.out.int(if rev { len - 1 - r } else { r } as i64),
        None => ctx.out.null(),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Pops
// ---------------------------------------------------------------------------------------

/// The reply shapes of Redis's `genericZpopCommand`.
#[derive(Clone, Copy)]
struct PopReply {
    /// Lead with the key (blocking pops, ZMPOP).
    emit_key: bool,
    /// `[[m, s], ...]` instead of `[m, s, ...]`.
    nested: bool,
    /// Null array (rather than empty) when no key has members.
    nil_when_empty: bool,
}

/// Pops up to `count` members (None: ZPOPMIN's single-pop form) from the first existing
/// key of `keys`, replying in the `shape` asked for. Returns the key popped from, if any.
fn zpop(
    ctx: &mut Ctx,
    keys: &[Bytes],
    max: bool,
    count: Option<i64>,
    shape: PopReply,
) -> Result<Option<Bytes>, CmdError> {
    let mut found = None;
    for k in keys {
        if write_zset(ctx.ks, ctx.db, k)?.is_some() {
            found = Some(k);
            break;
        }
    }
    let Some(key) = found else {
        if shape.nil_when_empty {
            ctx.out.null_array();
        } else {
            ctx.out.array(0);
        }
        return Ok(None);
    };
    if count == Some(0) {
        ctx.out.array(0);
        return Ok(None);
    }
    let z = write_zset(ctx.ks, ctx.db, key)?.expect("found above");
    let n = (count.unwrap_or(1) as u64).min(z.len() as u64) as usize;
    let popped: Vec<(Blob, f64)> = (0..n).map_while(|_| z.pop(max)).collect();
    let emptied = z.is_empty();

    let out = &mut *ctx.out;
    match (shape.emit_key, shape.nested) {
        (false, false) => out.array(n * 2),
        (false, true) => out.array(n),
        (true, false) => {
            out.array(n * 2 + 1);
            out.bulk(key);
        }
        (true, true) => {
            out.array(2);
            out.bulk(key);
            out.array(n);
        }
    }
    for (m, s) in &popped {
        if shape.nested {
            out.array(2);
        }
        out.bulk(m);
        out.double(*s);
    }
    after_remove(ctx, key, if max { "zpopmax" } else { "zpopmin" }, emptied);
    Ok(Some(key.clone()))
}

/// `ZPOPMIN key [count]` / `ZPOPMAX key count`, the deterministic form every pop is
/// propagated as.
fn propagate_pop(ctx: &mut Ctx, key: &[u8], max: bool, count: Option<i64>) {
    let cmd: &[u8] = if max { b"ZPOPMAX" } else { b"ZPOPMIN" };
    match count {
        Some(n) => ctx.propagate(&[cmd, key, itoa::Buffer::new().format(n).as_bytes()]),
        None => ctx.propagate(&[cmd, key]),
    }
}

fn zpopmin(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    zpop_command(ctx, argv, false)
}

fn zpopmax(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    zpop_command(ctx, argv, true)
}

fn zpop_command(ctx: &mut Ctx, argv: &[Bytes], max: bool) -> CmdResult {
    if argv.len() > 3 {
        return Err(err::SYNTAX);
    }
    let count = match argv.get(2) {
        Some(a) => Some(long_in(a, 0, "ERR value is out of range, must be positive")?),
        None => None,
    };
    // RESP3 nests pairs only when a count was given.
    let shape = PopReply { emit_key: false, nested: ctx.out.resp3() && count.is_some(), nil_when_empty: false };
    if zpop(ctx, &argv[1..2], max, count, shape)?.is_some() {
        ctx.propagate(argv);
    }
    Ok(())
}

fn bzpopmin(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    bzpop_command(ctx, argv, false)
}

fn bzpopmax(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    bzpop_command(ctx, argv, true)
}

fn bzpop_command(ctx: &mut Ctx, argv: &[Bytes], max: bool) -> CmdResult {
    let deadline = args::timeout_deadline(ctx, &argv[argv.len() - 1])?;
    let shape = PopReply { emit_key: true, nested: false, nil_when_empty: false };
    blocking_pop(ctx, &argv[1..argv.len() - 1], max, None, shape, deadline)
}

/// Redis's `blockingGenericZpopCommand`: pops from the first key with members, or blocks
/// on all of them.
fn blocking_pop(
    ctx: &mut Ctx,
    keys: &[Bytes],
    max: bool,
    count: Option<i64>,
    shape: PopReply,
    deadline: i64,
) -> CmdResult {
    let serving = ctx.block_mode == BlockMode::Serving;
    for k in keys {
        match write_zset(ctx.ks, ctx.db, k) {
            Ok(Some(z)) if !z.is_empty() => {
                zpop(ctx, std::slice::from_ref(k), max, count, shape)?;
                propagate_pop(ctx, k, max, count);
                return Ok(());
            }
            Ok(_) => {}
            // Redis serves sorted-set waiters only from keys holding sorted sets: a key
            // that changed type meanwhile leaves the client waiting.
            Err(_) if serving => {}
            Err(e) => return Err(e),
        }
    }
    ctx.block_on(keys.to_vec(), deadline);
    Ok(())
}

/// Parses `numkeys key... MIN|MAX [COUNT count]` from `argv[at]` (ZMPOP/BZMPOP).
fn parse_mpop(argv: &[Bytes], at: usize) -> Result<(&[Bytes], bool, i64), CmdError> {
    let numkeys = long_in(&argv[at], 1, "ERR numkeys should be greater than 0")? as u64;
    let where_at = at as u64 + 1 + numkeys;
    if where_at >= argv.len() as u64 {
        return Err(err::SYNTAX);
    }
    let where_at = where_at as usize;
    let max = match &argv[where_at] {
        a if is(a, "min") => false,
        a if is(a, "max") => true,
        _ => return Err(err::SYNTAX),
    };
    let mut count = None;
    let mut j = where_at + 1;
    while j < argv.len() {
        if count.is_none() && is(&argv[j], "count") && j + 1 < argv.len() {
            count = Some(long_in(&argv[j + 1], 1, "ERR count should be greater than 0")?);
            j += 2;
        } else {
            return Err(err::SYNTAX);
        }
    }
    Ok((&argv[at + 1..where_at], max, count.unwrap_or(1)))
}

const MPOP_REPLY: PopReply = PopReply { emit_key: true, nested: true, nil_when_empty: true };

fn zmpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (keys, max, count) = parse_mpop(argv, 1)?;
    if let Some(key) = zpop(ctx, keys, max, Some(count), MPOP_REPLY)? {
        propagate_pop(ctx, &key, max, Some(count));
    }
    Ok(())
}

fn bzmpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (keys, max, count) = parse_mpop(argv, 2)?;
    let deadline = args::timeout_deadline(ctx, &argv[1])?;
    blocking_pop(ctx, keys, max, Some(count), MPOP_REPLY, deadline)
}

// ---------------------------------------------------------------------------------------
// ZUNION / ZINTER / ZDIFF and their STORE forms, ZINTERCARD
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    /// Redis's `zunionInterAggregate`; a sum of +inf and -inf is 0, not NaN.
    fn apply(self, acc: &mut f64, v: f64) {
        match self {
            Aggregate::Sum => {
                *acc += v;
                if acc.is_nan() {
                    *acc = 0.0;
                }
            }
            Aggregate::Min => *acc = if v < *acc { v } else { *acc },
            Aggregate::Max => *acc = if v > *acc { v } else { *acc },
        }
    }
}

/// One input: a sorted set, or a plain set whose members all score 1.
#[derive(Clone, Copy)]
enum Source<'a> {
    Missing,
    Z(&'a ZSet),
    S(&'a Set),
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Missing => 0,
            Source::Z(z) => z.len(),
            Source::S(s) => s.len(),
        }
    }

    fn score(&self, m: &[u8]) -> Option<f64> {
        match self {
            Source::Missing => None,
            Source::Z(z) => z.score(m),
            Source::S(s) => s.contains(m).then_some(1.0),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&[u8], f64)) {
        match self {
            Source::Missing => {}
            Source::Z(z) => z.tree.iter().for_each(|(s, m)| f(m, s.0)),
            Source::S(s) => s.for_each(|m| f(m, 1.0)),
        }
    }
}

/// What a set operation command does with its result.
#[derive(Clone, Copy, PartialEq)]
enum Output<'a> {
    Reply,
    Store(&'a [u8]),
    Cardinality,
}

fn zunion(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_op(ctx, argv, "zunion", SetOp::Union, Output::Reply)
}

fn zinter(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_op(ctx, argv, "zinter", SetOp::Inter, Output::Reply)
}

fn zdiff(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_op(ctx, argv, "zdiff", SetOp::Diff, Output::Reply)
}

fn zintercard(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_op(ctx, argv, "zintercard", SetOp::Inter, Output::Cardinality)
}

fn zunionstore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_op(ctx, argv, "zunionstore", SetOp::Union, Output::Store(&argv[1]))
}

fn zinterstore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_op(ctx, argv, "zinterstore", SetOp::Inter, Output::Store(&argv[1]))
}

fn zdiffstore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_op(ctx, argv, "zdiffstore", SetOp::Diff, Output::Store(&argv[1]))
}

/// Redis's `zunionInterDiffGenericCommand`.
fn set_op(ctx: &mut Ctx, argv: &[Bytes], name: &str, op: SetOp, output: Output) -> CmdResult {
    let at = if matches!(output, Output::Store(_)) { 2 } else { 1 };
    let numkeys = args::int(&argv[at])?;
    if numkeys < 1 {
        return Err(CmdError::Owned(format!("ERR at least 1 input key is needed for '{name}' command")));
    }
    if numkeys as u64 > (argv.len() - at - 1) as u64 {
        return Err(err::SYNTAX);
    }
    let keys = &argv[at + 1..at + 1 + numkeys as usize];
    // Look every input up first (type errors come before option errors, as in Redis).
    for k in keys {
        match ctx.ks.read(ctx.db, k).map(|e| &e.value) {
            None | Some(Value::ZSet(_)) | Some(Value::Set(_)) => {}
            Some(_) => return Err(err::WRONGTYPE),
        }
    }

    let card = output == Output::Cardinality;
    let mut weights = vec![1.0; keys.len()];
    let mut agg = Aggregate::Sum;
    let mut withscores = false;
    let mut limit = 0usize;
    let opts = &argv[at + 1 + keys.len()..];
    let mut j = 0;
    while j < opts.len() {
        let left = opts.len() - j;
        let a = &opts[j];
        if op != SetOp::Diff && !card && left > keys.len() && is(a, "weights") {
            for (w, text) in weights.iter_mut().zip(&opts[j + 1..]) {
                *w = strict_double(text).ok_or(CmdError::Static("ERR weight value is not a float"))?;
            }
            j += 1 + keys.len();
        } else if op != SetOp::Diff && !card && left >= 2 && is(a, "aggregate") {
            agg = match &opts[j + 1] {
                x if is(x, "sum") => Aggregate::Sum,
                x if is(x, "min") => Aggregate::Min,
                x if is(x, "max") => Aggregate::Max,
                _ => return Err(err::SYNTAX),
            };
            j += 2;
        } else if output == Output::Reply && is(a, "withscores") {
            withscores = true;
            j += 1;
        } else if card && left >= 2 && is(a, "limit") {
            limit = long_in(&opts[j + 1], 0, "ERR LIMIT can't be negative")? as usize;
            j += 2;
        } else {
            return Err(err::SYNTAX);
        }
    }

    let table = &ctx.ks.dbs[ctx.db].table;
    let mut srcs: Vec<(Source, f64)> = keys
        .iter()
        .zip(weights)
        .map(|(k, w)| {
            let src = match table.get(k).map(|e| &e.value) {
                Some(Value::ZSet(z)) => Source::Z(z),
                Some(Value::Set(s)) => Source::S(s),
                _ => Source::Missing,
            };
            (src, w)
        })
        .collect();
    if op != SetOp::Diff {
        // Smallest first, as Redis does (a stable sort, like glibc's qsort in practice);
        // the order also fixes the order in which float sums accumulate.
        srcs.sort_by_key(|(s, _)| s.len());
    }

    if card {
        let n = inter(&srcs, agg, limit, |_, _| {});
        ctx.out.int(n as i64);
        return Ok(());
    }
    let mut result: Vec<(Blob, f64)> = Vec::new();
    match op {
        SetOp::Inter => {
            inter(&srcs, agg, 0, |m, s| result.push((Blob::new(m), s)));
        }
        SetOp::Union => result = union(&srcs, agg),
        SetOp::Diff => result = diff(&srcs),
    }
    result.sort_by(|a, b| Score(a.1).cmp(&Score(b.1)).then_with(|| a.0.cmp(&b.0)));

    match output {
        Output::Store(dst) => {
            let event = match op {
                SetOp::Union => "zunionstore",
                SetOp::Inter => "zinterstore",
                SetOp::Diff => "zdiffstore",
            };
            if store(ctx, dst, result, event) {
                ctx.propagate(argv);
            }
        }
        _ => {
            let nested = ctx.out.resp3();
            reply_scored(ctx.out, result.iter().map(|(m, s)| (&m[..], *s)), withscores, nested);
        }
    }
    Ok(())
}

/// Intersection: walks the smallest input and looks each member up in the others,
/// calling `emit` for members in all of them. Stops after `limit` (0 = no limit) matches;
/// returns how many there were.
fn inter(srcs: &[(Source, f64)], agg: Aggregate, limit: usize, mut emit: impl FnMut(&[u8], f64)) -> usize {
    let (first, w0) = srcs[0];
    let mut n = 0;
    if first.len() == 0 {
        return 0;
    }
    let mut done = false;
    first.for_each(|m, s| {
        if done {
            return;
        }
        let mut score = w0 * s;
        if score.is_nan() {
            score = 0.0;
        }
        for (src, w) in &srcs[1..] {
            match src.score(m) {
                Some(v) => agg.apply(&mut score, v * w),
                None => return,
            }
        }
        n += 1;
        emit(m, score);
        if limit > 0 && n >= limit {
            done = true;
        }
    });
    n
}

fn union(srcs: &[(Source, f64)], agg: Aggregate) -> Vec<(Blob, f64)> {
    let mut acc: HashMap<Blob, f64> = HashMap::with_capacity(srcs.last().map_or(0, |s| s.0.len()));
    for (src, w) in srcs {
        src.for_each(|m, s| {
            let mut score = w * s;
            if score.is_nan() {
                score = 0.0;
            }
            match acc.entry_ref(m) {
                hashbrown::hash_map::EntryRef::Occupied(mut o) => agg.apply(o.get_mut(), score),
                hashbrown::hash_map::EntryRef::Vacant(v) => {
                    v.insert(score);
                }
            }
        });
    }
    acc.into_iter().collect()
}

/// Members of the first input that are in none of the others, with their first score.
fn diff(srcs: &[(Source, f64)]) -> Vec<(Blob, f64)> {
    let mut out = Vec::new();
    srcs[0].0.for_each(|m, s| {
        if !srcs[1..].iter().any(|(src, _)| src.score(m).is_some()) {
            out.push((Blob::new(m), s));
        }
    });
    out
}

// ---------------------------------------------------------------------------------------
// ZRANDMEMBER / ZSCAN
// ---------------------------------------------------------------------------------------

fn zrandmember(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let counted = if argv.len() >= 3 { Some(hashes::rand_count(argv, "withscores")?) } else { None };
    let Some(len) = read_zset(ctx.ks, ctx.db, key)?.map(|z| z.len()) else {
        match counted {
            Some(_) => ctx.out.array(0),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let (z, rng) = zset_and_rng(ctx.ks, ctx.db, key);
    let Some((count, withscores)) = counted else {
        let e = z.tree.iter().nth(rng.gen_range(0..len)).expect("non-empty zset");
        ctx.out.bulk(&e.1);
        return Ok(());
    };
    if count == 0 {
        ctx.out.array(0);
        return Ok(());
    }
    let all: Vec<&Item> = z.tree.iter().collect();
    if count < 0 {
        let widest = all.iter().map(|(_, m)| m.len() + 24).max().unwrap_or(0);
        args::check_reply_budget(count.unsigned_abs(), widest)?;
    }
    let mut picks = hashes::rand_positions(rng, len, count, !z.big)?;
    if count >= len as i64 {
        // Redis walks the whole set from the highest score down here.
        picks.reverse();
    }
    let nested = ctx.out.resp3();
    reply_scored(ctx.out, picks.into_iter().map(|i| (&all[i].1[..], all[i].0 .0)), withscores, nested);
    Ok(())
}

/// The sorted set at `key`, which [`read_zset`] just found, together with the keyspace's
/// random generator (two disjoint borrows of the keyspace).
fn zset_and_rng<'a>(ks: &'a mut Keyspace, db: usize, key: &[u8]) -> (&'a ZSet, &'a mut rand::rngs::SmallRng) {
    match ks.dbs[db].table.get(key).map(|e| &e.value) {
        Some(Value::ZSet(z)) => (z, &mut ks.rng),
        _ => unreachable!("looked up just before"),
    }
}

fn zscan(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let cursor = scan::parse_cursor(&argv[2])?;
    let Some(z) = read_zset(ctx.ks, ctx.db, &argv[1])? else {
        scan::reply_scan(ctx.out, 0, &[]);
        return Ok(());
    };
    let opts = scan::ScanOpts::parse(&argv[3..], false)?;
    let (page, next): (Vec<(&[u8], f64)>, u64) = if z.big {
        scan::scan_page(z.dict.iter().map(|(m, s)| (&m[..], (&m[..], *s))), cursor, opts.count)
    } else {
        // Like a listpack, a small sorted set is returned whole, in order, in one call.
        (z.tree.iter().map(|(s, m)| (&m[..], s.0)).collect(), 0)
    };
    let fmt = if z.big { redoubt_protocol::num::g17 } else { listpack_score };
    let scores: Vec<Vec<u8>> = page.iter().map(|(_, s)| fmt(*s)).collect();
    let items: Vec<&[u8]> =
        page.iter().zip(&scores).filter(|((m, _), _)| opts.matches(m)).flat_map(|((m, _), s)| [*m, &s[..]]).collect();
    scan::reply_scan(ctx.out, next, &items);
    Ok(())
}

/// A score as a listpack holds it, which is what ZSCAN shows for small sets: Redis 7.0
/// stores integral scores within ±2^62 as integers (`double2ll`), others as `%.17g`.
fn listpack_score(s: f64) -> Vec<u8> {
    const LIMIT: f64 = (i64::MAX / 2) as f64;
    if (-LIMIT..=LIMIT).contains(&s) && s == (s as i64) as f64 {
        itoa::Buffer::new().format(s as i64).as_bytes().to_vec()
    } else {
        redoubt_protocol::num::g17(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zset(items: &[(f64, &str)]) -> ZSet {
        let mut z = ZSet::default();
        for (s, m) in items {
            z.insert(m.as_bytes(), *s);
        }
        z
    }

    fn names(v: Vec<&Item>) -> Vec<String> {
        v.into_iter().map(|e| String::from_utf8_lossy(&e.1).into_owned()).collect()
    }

    fn q(argv: &[&str], kind: Kind, dir: Dir) -> Query {
        let argv: Vec<Bytes> = argv.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        parse_query(&argv, 1, false, kind, dir).unwrap()
    }

    #[test]
    fn strtod_follows_c() {
        assert_eq!(strtod(b""), Some((0.0, false)));
        assert_eq!(strtod(b" 1.5"), Some((1.5, false)));
        assert_eq!(strtod(b"0x10"), Some((16.0, false)));
        assert_eq!(strtod(b"-0x1p-2"), Some((-0.25, false)));
        assert_eq!(strtod(b"1e500"), Some((f64::INFINITY, true)));
        assert_eq!(strtod(b"1e-500"), Some((0.0, true)));
        assert_eq!(strtod(b"0e-500"), Some((0.0, false)));
        assert_eq!(strtod(b"-inf"), Some((f64::NEG_INFINITY, false)));
        assert_eq!(strtod(b"nan"), None);
        assert_eq!(strtod(b"1 "), None);
        assert_eq!(strtod(b" "), None);
        assert_eq!(strict_double(b" 1"), None);
        assert_eq!(strict_double(b"1e500"), None);
        assert_eq!(strict_double(b"+inf"), Some(f64::INFINITY));
    }

    #[test]
    fn score_ranges() {
        let z = zset(&[(1.0, "a"), (2.0, "b"), (2.0, "c"), (3.0, "d")]);
        assert_eq!(names(select(&z, &q(&["zrangebyscore", "k", "(1", "2"], Kind::Score, Dir::Forward))), ["b", "c"]);
        assert_eq!(
            names(select(&z, &q(&["zrevrangebyscore", "k", "2", "-inf"], Kind::Score, Dir::Reverse))),
            ["c", "b", "a"]
        );
        assert_eq!(
            names(select(
                &z,
                &q(&["zrangebyscore", "k", "-inf", "+inf", "limit", "1", "2"], Kind::Score, Dir::Forward)
            )),
            ["b", "c"]
        );
        assert!(select(&z, &q(&["zrangebyscore", "k", "-inf", "+inf", "limit", "-1", "2"], Kind::Score, Dir::Forward))
            .is_empty());
        assert!(select(&z, &q(&["zrangebyscore", "k", "(2", "(2"], Kind::Score, Dir::Forward)).is_empty());
        assert_eq!(names(select(&z, &q(&["zrange", "k", "-2", "-1"], Kind::Auto, Dir::Auto))), ["c", "d"]);
        assert_eq!(names(select(&z, &q(&["zrange", "k", "0", "1", "rev"], Kind::Auto, Dir::Auto))), ["d", "c"]);
    }

    #[test]
    fn lex_ranges() {
        let z = zset(&[(0.0, "a"), (0.0, "b"), (0.0, "c"), (0.0, "d")]);
        assert_eq!(names(select(&z, &q(&["zrangebylex", "k", "(a", "[c"], Kind::Lex, Dir::Forward))), ["b", "c"]);
        assert_eq!(names(select(&z, &q(&["zrevrangebylex", "k", "+", "(b"], Kind::Lex, Dir::Reverse))), ["d", "c"]);
        assert_eq!(
            names(select(&z, &q(&["zrangebylex", "k", "-", "+", "limit", "1", "1"], Kind::Lex, Dir::Forward))),
            ["b"]
        );
        assert!(select(&z, &q(&["zrangebylex", "k", "+", "-"], Kind::Lex, Dir::Forward)).is_empty());
        // Mixed scores: a linear walk from the first member >= min, like a listpack.
        let z = zset(&[(1.0, "c"), (2.0, "a"), (3.0, "d")]);
        assert_eq!(names(select(&z, &q(&["zrangebylex", "k", "[b", "+"], Kind::Lex, Dir::Forward))), ["c", "a", "d"]);
        assert!(matches!(LexRange::parse(b"a", b"+"), Err(e) if e == RANGE_NOT_LEX));
    }
}
