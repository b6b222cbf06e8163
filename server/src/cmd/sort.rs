//! SORT and SORT_RO (Redis's `sort.c`): sort a list, set or sorted set numerically or
//! lexicographically, optionally by weights read from other keys (`BY w_*`, `BY h_*->f`),
//! returning elements or values fetched through patterns (`GET o_*`, `GET #`), or storing
//! the result as a list (`STORE`).

use std::cmp::Ordering;
use std::collections::VecDeque;

use bytes::Bytes;

use super::args::is;
use super::flags::*;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Blob, Keyspace, Value};

/// SORT touches every collection type (Redis files it under each, and as dangerous).
const SORT_ACL: &[&str] = &["@set", "@sortedset", "@list", "@dangerous"];

pub const COMMANDS: &[Spec] = &[
    Spec::new("sort", -2, WRITE | DENYOOM | MOVABLE_KEYS, (1, 1, 1), "sort", sort).acl(SORT_ACL),
    Spec::new("sort_ro", -2, READONLY | MOVABLE_KEYS, (1, 1, 1), "sort", sort_ro).acl(SORT_ACL),
];

const SCORE_ERR: CmdError = CmdError::Static("ERR One or more scores can't be converted into double");

fn sort(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    sort_generic(ctx, argv, false)
}

fn sort_ro(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    sort_generic(ctx, argv, true)
}

/// Parsed options.
struct Opts<'a> {
    desc: bool,
    alpha: bool,
    limit_start: i64,
    limit_count: i64,
    store: Option<&'a Bytes>,
    by: Option<&'a [u8]>,
    /// `BY` a pattern without `*`: keep the collection's own order.
    dontsort: bool,
    gets: Vec<&'a [u8]>,
}

fn parse_opts(argv: &[Bytes], readonly: bool) -> Result<Opts<'_>, CmdError> {
    let mut o = Opts {
        desc: false,
        alpha: false,
        limit_start: 0,
        limit_count: -1,
        store: None,
        by: None,
        dontsort: false,
        gets: Vec::new(),
    };
    let mut j = 2;
    while j < argv.len() {
        let left = argv.len() - j - 1;
        let a = &argv[j];
        if is(a, "asc") {
            o.desc = false;
        } else if is(a, "desc") {
            o.desc = true;
        } else if is(a, "alpha") {
            o.alpha = true;
        } else if is(a, "limit") && left >= 2 {
            o.limit_start = super::args::int(&argv[j + 1])?;
            o.limit_count = super::args::int(&argv[j + 2])?;
            j += 2;
        } else if !readonly && is(a, "store") && left >= 1 {
            o.store = Some(&argv[j + 1]);
            j += 1;
        } else if is(a, "by") && left >= 1 {
            let p = &argv[j + 1][..];
            o.by = Some(p);
            // A constant BY pattern needs no weights and no sorting; like Redis, a later
            // BY with a `*` does not undo that.
            if !p.contains(&b'*') {
                o.dontsort = true;
            }
            j += 1;
        } else if is(a, "get") && left >= 1 {
            o.gets.push(&argv[j + 1]);
            j += 1;
        } else {
            return Err(err::SYNTAX);
        }
        j += 1;
    }
    Ok(o)
}

/// The elements to sort plus the inclusive output window `start..=end` into them (empty
/// when `end < start`).
struct Loaded {
    items: Vec<Blob>,
    start: i64,
    end: i64,
    zset: bool,
}

/// Redis's LIMIT sanity rules, against a collection of `len` elements.
fn window(limit_start: i64, limit_count: i64, len: i64) -> (i64, i64) {
    let mut start = limit_start.clamp(0, len);
    let count = limit_count.clamp(-1, len);
    let mut end = if count < 0 { len - 1 } else { start + count - 1 };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    if end >= len {
        end = len - 1;
    }
    (start, end)
}

/// Reads the elements of `v`. When nothing will be sorted, lists and sorted sets load only
/// the LIMIT window, in their own order (reversed for DESC).
fn load(v: &Value, o: &mut Opts) -> Result<Loaded, CmdError> {
    let len = match v {
        Value::List(l) => l.len(),
        Value::Set(s) => s.len(),
        Value::ZSet(z) => z.len(),
        _ => return Err(err::WRONGTYPE),
    } as i64;
    // An unsorted set would come out in hash order, which differs between servers: a stored
    // result must be deterministic (replicas recompute it), so sort it lexicographically.
    if o.dontsort && o.store.is_some() && matches!(v, Value::Set(_)) {
        o.dontsort = false;
        o.alpha = true;
        o.by = None;
    }
    let (start, end) = window(o.limit_start, o.limit_count, len);
    let ranged = o.dontsort && !matches!(v, Value::Set(_));
    if ranged {
        // Only the window, already in output order.
        let n = if end >= start { (end - start + 1) as usize } else { 0 };
        let skip = start.max(0) as usize;
        let items: Vec<Blob> = match (v, o.desc) {
            (Value::List(l), false) => l.iter().skip(skip).take(n).cloned().collect(),
            (Value::List(l), true) => l.iter().rev().skip(skip).take(n).cloned().collect(),
            (Value::ZSet(z), false) => z.tree.iter().skip(skip).take(n).map(|(_, m)| m.clone()).collect(),
            (Value::ZSet(z), true) => z.tree.iter().rev().skip(skip).take(n).map(|(_, m)| m.clone()).collect(),
            _ => unreachable!("sets are never ranged"),
        };
        let zset = matches!(v, Value::ZSet(_));
        return Ok(Loaded { end: items.len() as i64 - 1, items, start: 0, zset });
    }
    let items = match v {
        Value::List(l) => l.iter().cloned().collect(),
        Value::Set(s) => s.members(),
        Value::ZSet(z) => z.tree.iter().map(|(_, m)| m.clone()).collect(),
        _ => unreachable!("checked above"),
    };
    Ok(Loaded { items, start, end, zset: matches!(v, Value::ZSet(_)) })
}

fn sort_generic(ctx: &mut Ctx, argv: &[Bytes], readonly: bool) -> CmdResult {
    let mut o = parse_opts(argv, readonly)?;
    let key = &argv[1];
    let loaded = match ctx.ks.read(ctx.db, key) {
        None => Loaded { items: Vec::new(), start: -1, end: -2, zset: false },
        Some(e) => load(&e.value, &mut o)?,
    };
    if loaded.zset {
        // Redis converts a listpack sorted set to a skiplist for SORT, for good.
        if let Some(e) = ctx.ks.write(ctx.db, key) {
            if let Value::ZSet(z) = &mut e.value {
                z.big = true;
            }
        }
    }
    let Loaded { mut items, start, end, .. } = loaded;
    if !o.dontsort {
        items = sort_items(ctx.ks, ctx.db, items, &o)?;
    }
    let window: &[Blob] = if end >= start { &items[start as usize..=end as usize] } else { &[] };
    match o.store {
        None => reply(ctx, window, &o.gets),
        Some(dest) => store(ctx, argv, dest, window, &o.gets),
    }
    Ok(())
}

/// What an element is compared by.
enum Weight {
    /// Numeric sort: the score (missing BY keys weigh 0).
    Score(f64),
    /// ALPHA with BY: the looked-up value, None when missing (sorts first).
    By(Option<Blob>),
    /// ALPHA without BY: the element itself.
    Itself,
}

fn sort_items(ks: &mut Keyspace, db: usize, items: Vec<Blob>, o: &Opts) -> Result<Vec<Blob>, CmdError> {
    let mut bad_score = false;
    let mut v: Vec<(Blob, Weight)> = Vec::with_capacity(items.len());
    for it in items {
        let byval = match o.by {
            Some(p) => lookup_by_pattern(ks, db, p, &it),
            None => None,
        };
        let w = if o.alpha {
            if o.by.is_some() {
                Weight::By(byval)
            } else {
                Weight::Itself
            }
        } else {
            let src = if o.by.is_some() { byval.as_deref() } else { Some(&it[..]) };
            match src.map(strtod) {
                None => Weight::Score(0.0),
                Some(Some(s)) => Weight::Score(s),
                Some(None) => {
                    bad_score = true;
                    Weight::Score(0.0)
                }
            }
        };
        v.push((it, w));
    }
    // Redis sorts fully before reporting the error; the result is the same.
    if bad_score {
        return Err(SCORE_ERR);
    }
    // Stable, like glibc's merge-sort qsort, so equal weights keep the collection order.
    v.sort_by(|a, b| {
        let c = compare(a, b);
        if o.desc {
            c.reverse()
        } else {
            c
        }
    });
    Ok(v.into_iter().map(|(it, _)| it).collect())
}

/// Redis's `sortCompare` (ascending). Strings compare as bytes: Redis uses `strcoll`, which
/// is byte order in the C locale it normally runs in.
fn compare(a: &(Blob, Weight), b: &(Blob, Weight)) -> Ordering {
    match (&a.1, &b.1) {
        (Weight::Score(x), Weight::Score(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal).then_with(|| a.0.cmp(&b.0)),
        (Weight::By(x), Weight::By(y)) => match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(y),
        },
        _ => a.0.cmp(&b.0),
    }
}

/// Redis's `lookupKeyByPattern`: `#` is the element itself; otherwise the first `*` is
/// replaced by the element and the resulting string key is read, or, with `->field` after
/// the `*`, that field of the resulting hash. Patterns without `*` yield nothing.
fn lookup_by_pattern(ks: &mut Keyspace, db: usize, pat: &[u8], subst: &[u8]) -> Option<Blob> {
    if pat == b"#" {
        return Some(Blob::new(subst));
    }
    let star = pat.iter().position(|&c| c == b'*')?;
    let rest = &pat[star + 1..];
    // Only an arrow followed by a non-empty field name counts; it is searched after the `*`.
    let (post, field) = match rest.windows(2).position(|w| w == b"->") {
        Some(i) if i + 2 < rest.len() => (&rest[..i], Some(&rest[i + 2..])),
        _ => (rest, None),
    };
    let mut k = Vec::with_capacity(star + subst.len() + post.len());
    k.extend_from_slice(&pat[..star]);
    k.extend_from_slice(subst);
    k.extend_from_slice(post);
    let e = ks.read(db, &k)?;
    match (&e.value, field) {
        (Value::Hash(h), Some(f)) => h.get(f).cloned(),
        (Value::Str(s), None) => Some(s.clone()),
        _ => None,
    }
}

/// C's `strtod` as SORT uses it: the whole string (up to a NUL) must be consumed, and
/// NaN or out-of-range values (overflow, underflow, subnormals, which glibc flags with
/// ERANGE) are rejected. The empty string converts to 0.
fn strtod(s: &[u8]) -> Option<f64> {
    let s = match s.iter().position(|&c| c == 0) {
        Some(i) => &s[..i],
        None => s,
    };
    if s.is_empty() {
        return Some(0.0);
    }
    let body = trim_c_space(s);
    let (neg, unsigned) = match body.first() {
        Some(b'-') => (true, &body[1..]),
        Some(b'+') => (false, &body[1..]),
        _ => (false, body),
    };
    let text = std::str::from_utf8(unsigned).ok()?;
    let lower = text.to_ascii_lowercase();
    let v = if lower == "inf" || lower == "infinity" {
        f64::INFINITY
    } else if let Some(hex) = lower.strip_prefix("0x") {
        parse_hex(hex)?
    } else {
        // Rust's float grammar is strtod's decimal grammar, plus inf/nan spellings which
        // we have either handled or must reject.
        if !lower.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-')) {
            return None;
        }
        let v: f64 = lower.parse().ok()?;
        if v.is_infinite() {
            return None; // overflow
        }
        let mantissa = lower.split('e').next().unwrap_or("");
        if v == 0.0 && mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c)) {
            return None; // underflow
        }
        v
    };
    if v != 0.0 && v.is_finite() && v.abs() < f64::MIN_POSITIVE {
        return None; // subnormal
    }
    Some(if neg { -v } else { v })
}

/// Leading `isspace` characters.
fn trim_c_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')).count();
    &s[n..]
}

/// A hexadecimal float body after `0x`: hex digits with an optional point and an optional
/// binary exponent (`p[+-]N`).
fn parse_hex(s: &str) -> Option<f64> {
    let (mant, exp) = match s.split_once('p') {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars().chain(frac.chars()) {
        v = v * 16.0 + c.to_digit(16)? as f64;
    }
    let nonzero = v != 0.0;
    let v = v * 2f64.powi(exp - 4 * frac.len() as i32);
    if v.is_infinite() || (nonzero && v == 0.0) {
        None
    } else {
        Some(v)
    }
}

/// Replies with the window: the elements, or for each element one value per GET pattern
/// (null when missing).
fn reply(ctx: &mut Ctx, window: &[Blob], gets: &[&[u8]]) {
    if gets.is_empty() {
        ctx.out.bulks(window.iter());
        return;
    }
    ctx.out.array(window.len() * gets.len());
    for it in window {
        for p in gets {
            match lookup_by_pattern(ctx.ks, ctx.db, p, it) {
                Some(v) => ctx.out.bulk(&v),
                None => ctx.out.null(),
            }
        }
    }
}

/// STORE: the result becomes a list (missing GET values become empty strings); an empty
/// result deletes the destination. Replies with the number of stored elements.
fn store(ctx: &mut Ctx, argv: &[Bytes], dest: &[u8], window: &[Blob], gets: &[&[u8]]) {
    let mut list: VecDeque<Blob> = VecDeque::with_capacity(window.len() * gets.len().max(1));
    for it in window {
        if gets.is_empty() {
            list.push_back(it.clone());
        }
        for p in gets {
            list.push_back(lookup_by_pattern(ctx.ks, ctx.db, p, it).unwrap_or_else(|| Blob::new(b"")));
        }
    }
    let n = list.len();
    if n > 0 {
        ctx.ks.set(ctx.db, dest, Value::List(Box::new(list)), false);
        ctx.ks.notify(notify::LIST, "sortstore", ctx.db, dest);
        ctx.ks.signal_ready(ctx.db, dest);
        ctx.propagate(argv);
    } else if ctx.ks.delete(ctx.db, dest) {
        ctx.ks.notify(notify::GENERIC, "del", ctx.db, dest);
        ctx.propagate(argv);
    }
    ctx.out.int(n as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtod_like_c() {
        let ok = |s: &str| strtod(s.as_bytes());
        assert_eq!(ok(""), Some(0.0));
        assert_eq!(ok(" 5"), Some(5.0));
        assert_eq!(ok("\t-2.5e1"), Some(-25.0));
        assert_eq!(ok("+5"), Some(5.0));
        assert_eq!(ok(".5"), Some(0.5));
        assert_eq!(ok("5."), Some(5.0));
        assert_eq!(ok("0x1A"), Some(26.0));
        assert_eq!(ok("0x1p3"), Some(8.0));
        assert_eq!(ok("0x.8"), Some(0.5));
        assert_eq!(ok("-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(ok("2.2250738585072014e-308"), Some(2.2250738585072014e-308));
        for bad in ["nan", "1e", "5 ", "0x", "1e+", "1.8e308", "1e-400", "1e-310", "1_0", "-", ".", " ", "1,5"] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn limit_window() {
        assert_eq!(window(0, -1, 5), (0, 4));
        assert_eq!(window(1, 2, 5), (1, 2));
        assert_eq!(window(-3, 2, 5), (0, 1));
        assert_eq!(window(10, 2, 5), (4, 3));
        assert_eq!(window(0, 100, 5), (0, 4));
        assert_eq!(window(0, 0, 5), (0, -1));
        assert_eq!(window(0, -1, 0), (-1, -2));
    }
}
