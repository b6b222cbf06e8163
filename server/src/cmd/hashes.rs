//! Hash commands (Redis's `t_hash.c`): field get/set/delete, counters, whole-hash reads,
//! random fields and HSCAN.
//!
//! A hash is a [`Hash`]: insertion-ordered pairs while small (Redis's listpack, whose order
//! HGETALL/HKEYS/HSCAN expose) and a hash map once large. Redis deletes a hash as soon as
//! its last field goes, so HDEL checks for that and emits `del`.
//!
//! HINCRBYFLOAT computes in x87 `long double` like Redis; see [`longdouble`].
//! The SCAN cursor helpers here are shared with ZSCAN.

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;

use super::args::{self, is};
use super::flags::*;
use super::{err, scan, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Hash, Keyspace, Value};

pub const COMMANDS: &[Spec] = &[
    Spec::new("hset", -4, WRITE | DENYOOM | FAST, (1, 1, 1), "hash", hset),
    Spec::new("hsetnx", 4, WRITE | DENYOOM | FAST, (1, 1, 1), "hash", hsetnx),
    Spec::new("hget", 3, READONLY | FAST, (1, 1, 1), "hash", hget),
    Spec::new("hmset", -4, WRITE | DENYOOM | FAST, (1, 1, 1), "hash", hmset),
    Spec::new("hmget", -3, READONLY | FAST, (1, 1, 1), "hash", hmget),
    Spec::new("hincrby", 4, WRITE | DENYOOM | FAST, (1, 1, 1), "hash", hincrby),
    Spec::new("hincrbyfloat", 4, WRITE | DENYOOM | FAST, (1, 1, 1), "hash", hincrbyfloat),
    Spec::new("hdel", -3, WRITE | FAST, (1, 1, 1), "hash", hdel),
    Spec::new("hlen", 2, READONLY | FAST, (1, 1, 1), "hash", hlen),
    Spec::new("hstrlen", 3, READONLY | FAST, (1, 1, 1), "hash", hstrlen),
    Spec::new("hkeys", 2, READONLY, (1, 1, 1), "hash", hkeys),
    Spec::new("hvals", 2, READONLY, (1, 1, 1), "hash", hvals),
    Spec::new("hgetall", 2, READONLY, (1, 1, 1), "hash", hgetall),
    Spec::new("hexists", 3, READONLY | FAST, (1, 1, 1), "hash", hexists),
    Spec::new("hrandfield", -2, READONLY, (1, 1, 1), "hash", hrandfield),
    Spec::new("hscan", -3, READONLY, (1, 1, 1), "hash", hscan),
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn new_hash() -> Value {
    Value::Hash(Box::default())
}

/// The hash at `key` for reading (hit/miss accounted); `Ok(None)` when missing.
fn read_hash<'a>(ks: &'a mut Keyspace, db: usize, key: &[u8]) -> Result<Option<&'a Hash>, CmdError> {
    ks.read(db, key).map(args::as_hash).transpose()
}

/// The hash at `key` for changing it; `Ok(None)` when missing.
fn write_hash<'a>(ks: &'a mut Keyspace, db: usize, key: &[u8]) -> Result<Option<&'a mut Hash>, CmdError> {
    ks.write(db, key).map(args::as_hash_mut).transpose()
}

/// The hash at `key`, created empty if missing (Redis's `hashTypeLookupWriteOrCreate`).
/// Returns (hash, created). Callers must not fail after creating, or an empty hash would
/// be left behind.
fn hash_or_create<'a>(ks: &'a mut Keyspace, db: usize, key: &[u8]) -> Result<(&'a mut Hash, bool), CmdError> {
    let (e, created) = ks.entry_or_insert(db, key, new_hash);
    Ok((args::as_hash_mut(e)?, created))
}

/// The configured listpack limits for hashes: (entries, value length).
fn limits(ctx: &Ctx) -> (usize, usize) {
    let c = ctx.srv.config.read();
    (c.hash_max_listpack_entries as usize, c.hash_max_listpack_value as usize)
}

/// Bookkeeping after a write that set fields: the command's event and WATCH invalidation
/// (the keyspace itself announces a created key with `new`).
fn after_set(ctx: &mut Ctx, key: &[u8], _created: bool, event: &'static str) {
    ctx.ks.signal_modified(ctx.db, key);
    ctx.ks.notify(notify::HASH, event, ctx.db, key);
}

// ---------------------------------------------------------------------------------------
// Setting and reading fields
// ---------------------------------------------------------------------------------------

fn hset(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let added = set_pairs(ctx, argv, "hset")?;
    ctx.out.int(added as i64);
    Ok(())
}

fn hmset(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    set_pairs(ctx, argv, "hmset")?;
    ctx.out.ok();
    Ok(())
}

/// HSET/HMSET: sets every field-value pair; returns how many fields are new.
fn set_pairs(ctx: &mut Ctx, argv: &[Bytes], name: &str) -> Result<usize, CmdError> {
    if !argv.len().is_multiple_of(2) {
        return Err(err::wrong_args(name));
    }
    let key = &argv[1];
    let (max_n, max_len) = limits(ctx);
    let (h, created) = hash_or_create(ctx.ks, ctx.db, key)?;
    let added = argv[2..].chunks(2).filter(|p| h.set_limited(&p[0], &p[1], max_n, max_len)).count();
    after_set(ctx, key, created, "hset");
    ctx.propagate(argv);
    Ok(added)
}

fn hsetnx(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let (max_n, max_len) = limits(ctx);
    let (h, created) = hash_or_create(ctx.ks, ctx.db, key)?;
    // A new key never holds the field, so `created` implies the set happens.
    let set = h.get(&argv[2]).is_none() && h.set_limited(&argv[2], &argv[3], max_n, max_len);
    if set {
        after_set(ctx, key, created, "hset");
        ctx.propagate(argv);
    }
    ctx.out.int(set as i64);
    Ok(())
}

fn hget(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match read_hash(ctx.ks, ctx.db, &argv[1])?.and_then(|h| h.get(&argv[2])) {
        Some(v) => ctx.out.bulk(v),
        None => ctx.out.null(),
    }
    Ok(())
}

fn hmget(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let h = read_hash(ctx.ks, ctx.db, &argv[1])?;
    ctx.out.array(argv.len() - 2);
    for f in &argv[2..] {
        match h.and_then(|h| h.get(f)) {
            Some(v) => ctx.out.bulk(v),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

fn hdel(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(h) = write_hash(ctx.ks, ctx.db, key)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let deleted = argv[2..].iter().filter(|f| h.remove(f)).count();
    let emptied = h.is_empty();
    if deleted > 0 {
        if emptied {
            ctx.ks.delete(ctx.db, key);
        } else {
            ctx.ks.signal_modified(ctx.db, key);
        }
        ctx.ks.notify(notify::HASH, "hdel", ctx.db, key);
        if emptied {
            ctx.ks.notify(notify::GENERIC, "del", ctx.db, key);
        }
        ctx.propagate(argv);
    }
    ctx.out.int(deleted as i64);
    Ok(())
}

fn hlen(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let n = read_hash(ctx.ks, ctx.db, &argv[1])?.map_or(0, |h| h.len());
    ctx.out.int(n as i64);
    Ok(())
}

fn hstrlen(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let n = read_hash(ctx.ks, ctx.db, &argv[1])?.and_then(|h| h.get(&argv[2])).map_or(0, |v| v.len());
    ctx.out.int(n as i64);
    Ok(())
}

fn hexists(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let found = read_hash(ctx.ks, ctx.db, &argv[1])?.is_some_and(|h| h.get(&argv[2]).is_some());
    ctx.out.int(found as i64);
    Ok(())
}

fn hkeys(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match read_hash(ctx.ks, ctx.db, &argv[1])? {
        Some(h) => ctx.out.bulks(ExactIter(h.len(), h.iter().map(|(f, _)| f))),
        None => ctx.out.array(0),
    }
    Ok(())
}

fn hvals(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match read_hash(ctx.ks, ctx.db, &argv[1])? {
        Some(h) => ctx.out.bulks(ExactIter(h.len(), h.iter().map(|(_, v)| v))),
        None => ctx.out.array(0),
    }
    Ok(())
}

/// HGETALL is the one whole-hash read that replies with a map (flat array in RESP2).
fn hgetall(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let Some(h) = read_hash(ctx.ks, ctx.db, &argv[1])? else {
        ctx.out.map(0);
        return Ok(());
    };
    ctx.out.map(h.len());
    for (f, v) in h.iter() {
        ctx.out.bulk(f);
        ctx.out.bulk(v);
    }
    Ok(())
}

/// An iterator with a known length (`Hash::iter` is boxed and does not report one).
struct ExactIter<I>(usize, I);

impl<I: Iterator> Iterator for ExactIter<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let it = self.1.next()?;
        self.0 -= 1;
        Some(it)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0, Some(self.0))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactIter<I> {}

// ---------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------

fn hincrby(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (key, field) = (&argv[1], &argv[2]);
    let incr = args::int(&argv[3])?;
    let (max_n, max_len) = limits(ctx);
    let (h, created) = hash_or_create(ctx.ks, ctx.db, key)?;
    let old = match h.get(field) {
        Some(v) => redoubt_protocol::num::parse_i64(v).ok_or(CmdError::Static("ERR hash value is not an integer"))?,
        None => 0,
    };
    let new = old.checked_add(incr).ok_or(err::OVERFLOW)?;
    h.set_limited(field, itoa::Buffer::new().format(new).as_bytes(), max_n, max_len);
    after_set(ctx, key, created, "hincrby");
    ctx.propagate(argv);
    ctx.out.int(new);
    Ok(())
}

fn hincrbyfloat(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (key, field) = (&argv[1], &argv[2]);
    let incr = match redoubt_protocol::longdouble::parse(&argv[3]) {
        Err(()) => return Err(err::NOT_FLOAT),
        Ok(None) => return Err(CmdError::Static("ERR value is NaN or Infinity")),
        Ok(Some(v)) => v,
    };
    let (max_n, max_len) = limits(ctx);
    let (h, created) = hash_or_create(ctx.ks, ctx.db, key)?;
    let old = match h.get(field).map(|v| redoubt_protocol::longdouble::parse(v)) {
        None => redoubt_protocol::longdouble::Ld::ZERO,
        Some(Err(())) => return Err(CmdError::Static("ERR hash value is not a float")),
        // inf + finite stays infinite.
        Some(Ok(None)) => return Err(CmdError::Static("ERR increment would produce NaN or Infinity")),
        Some(Ok(Some(v))) => v,
    };
    let sum = redoubt_protocol::longdouble::add(old, incr)
        .ok_or(CmdError::Static("ERR increment would produce NaN or Infinity"))?;
    let text = redoubt_protocol::longdouble::fmt_human(sum);
    h.set_limited(field, &text, max_n, max_len);
    after_set(ctx, key, created, "hincrbyfloat");
    // Like Redis, replicate the result rather than the increment, so that replicas never
    // depend on float formatting.
    ctx.propagate(&[&b"HSET"[..], key, field, &text]);
    ctx.out.bulk(&text);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HRANDFIELD
// ---------------------------------------------------------------------------------------

/// The count of HRANDFIELD/ZRANDMEMBER: an integer in [-LONG_MAX, LONG_MAX], and with
/// WITHVALUES/WITHSCORES at most half that either way (the reply holds two items each).
pub(crate) fn rand_count(argv: &[Bytes], with_kw: &str) -> Result<(i64, bool), CmdError> {
    let count = args::int(&argv[2])?;
    if count == i64::MIN {
        return Err(CmdError::Static(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    let with = match argv.len() {
        3 => false,
        4 if is(&argv[3], with_kw) => true,
        _ => return Err(err::SYNTAX),
    };
    if with && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err(CmdError::Static("ERR value is out of range"));
    }
    Ok((count, with))
}

/// Which elements a random pick with a count returns, as positions into the collection's
/// iteration order (Redis's HRANDFIELD/ZRANDMEMBER strategies):
/// * negative count: that many independent picks, repeats allowed, in random order;
/// * count at least the size: everything, in iteration order;
/// * otherwise distinct picks: in iteration order for small encodings (Redis samples a
///   listpack in order), in random order for large ones.
///
/// Redis serves any negative count, however large (building the reply until memory runs
/// out); counts whose reply could not be held in memory anyway are refused instead.
pub(crate) fn rand_positions(rng: &mut impl Rng, len: usize, count: i64, small: bool) -> Result<Vec<usize>, CmdError> {
    const MAX_REPEATED_PICKS: u64 = 1 << 27;
    if count < 0 {
        if count.unsigned_abs() > MAX_REPEATED_PICKS {
            return Err(CmdError::Static("ERR value is out of range"));
        }
        let n = count.unsigned_abs() as usize;
        return Ok((0..n).map(|_| rng.gen_range(0..len)).collect());
    }
    let n = count as usize;
    if n >= len {
        return Ok((0..len).collect());
    }
    let mut picks = rand::seq::index::sample(rng, len, n).into_vec();
    if small {
        picks.sort_unstable();
    }
    Ok(picks)
}

fn hrandfield(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if argv.len() >= 3 {
        let (count, withvalues) = rand_count(argv, "withvalues")?;
        return hrandfield_count(ctx, &argv[1], count, withvalues);
    }
    if read_hash(ctx.ks, ctx.db, &argv[1])?.is_none() {
        ctx.out.null();
        return Ok(());
    }
    let (h, rng) = hash_and_rng(ctx.ks, ctx.db, &argv[1]);
    let (f, _) = h.iter().nth(rng.gen_range(0..h.len())).expect("non-empty hash");
    ctx.out.bulk(f);
    Ok(())
}

fn hrandfield_count(ctx: &mut Ctx, key: &[u8], count: i64, withvalues: bool) -> CmdResult {
    if read_hash(ctx.ks, ctx.db, key)?.is_none() || count == 0 {
        ctx.out.array(0);
        return Ok(());
    }
    let (h, rng) = hash_and_rng(ctx.ks, ctx.db, key);
    let pairs: Vec<_> = h.iter().collect();
    if count < 0 {
        let widest = pairs.iter().map(|(f, v)| f.len() + v.len()).max().unwrap_or(0);
        args::check_reply_budget(count.unsigned_abs(), widest)?;
    }
    let picks = rand_positions(rng, pairs.len(), count, matches!(h, Hash::Small(_)))?;
    let resp3 = ctx.out.resp3();
    ctx.out.array(if withvalues && !resp3 { picks.len() * 2 } else { picks.len() });
    for i in picks {
        let (f, v) = pairs[i];
        if withvalues && resp3 {
            ctx.out.array(2);
        }
        ctx.out.bulk(f);
        if withvalues {
            ctx.out.bulk(v);
        }
    }
    Ok(())
}

/// The hash at `key`, which [`read_hash`] just found, together with the keyspace's random
/// generator (two disjoint borrows of the keyspace).
fn hash_and_rng<'a>(ks: &'a mut Keyspace, db: usize, key: &[u8]) -> (&'a Hash, &'a mut SmallRng) {
    match ks.dbs[db].table.get(key).map(|e| &e.value) {
        Some(Value::Hash(h)) => (h, &mut ks.rng),
        _ => unreachable!("looked up just before"),
    }
}

// ---------------------------------------------------------------------------------------
// HSCAN
// ---------------------------------------------------------------------------------------

fn hscan(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let cursor = scan::parse_cursor(&argv[2])?;
    let Some(h) = read_hash(ctx.ks, ctx.db, &argv[1])? else {
        scan::reply_scan(ctx.out, 0, &[]);
        return Ok(());
    };
    let opts = scan::ScanOpts::parse(&argv[3..], false)?;
    type Pair<'a> = (&'a [u8], &'a [u8]);
    let (page, next): (Vec<Pair>, u64) = match h {
        // Like a listpack, a small hash is returned whole in one call.
        Hash::Small(v) => (v.iter().map(|(f, v)| (&f[..], &v[..])).collect(), 0),
        Hash::Big(m) => scan::scan_page(m.iter().map(|(f, v)| (&f[..], (&f[..], &v[..]))), cursor, opts.count),
    };
    let items: Vec<&[u8]> = page.into_iter().filter(|(f, _)| opts.matches(f)).flat_map(|(f, v)| [f, v]).collect();
    scan::reply_scan(ctx.out, next, &items);
    Ok(())
}
