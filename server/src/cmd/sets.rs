//! Set commands (Redis's `t_set.c`): membership, random picks and pops, moves, the
//! intersection/union/difference family with their STORE forms, and SSCAN.
//!
//! Sets are [`Set`]: a sorted integer vector while small and all-integer (Redis's intset,
//! whose sorted iteration order we therefore reproduce), else a hash set. Redis deletes a
//! set as soon as it becomes empty, so removals check for that and emit `del`.

use bytes::Bytes;
use rand::seq::IteratorRandom;
use rand::Rng;
use redoubt_protocol::ReplyBuf;

use super::args::{self, is};
use super::flags::*;
use super::lists::{at_least_one, non_negative, POSITIVE_MSG};
use super::scan;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Blob, Keyspace, Set, Value};

pub const COMMANDS: &[Spec] = &[
    Spec::new("sadd", -3, WRITE | DENYOOM | FAST, (1, 1, 1), "set", sadd),
    Spec::new("srem", -3, WRITE | FAST, (1, 1, 1), "set", srem),
    Spec::new("smove", 4, WRITE | FAST, (1, 2, 1), "set", smove),
    Spec::new("sismember", 3, READONLY | FAST, (1, 1, 1), "set", sismember),
    Spec::new("smismember", -3, READONLY | FAST, (1, 1, 1), "set", smismember),
    Spec::new("scard", 2, READONLY | FAST, (1, 1, 1), "set", scard),
    Spec::new("smembers", 2, READONLY, (1, 1, 1), "set", sinter),
    Spec::new("spop", -2, WRITE | FAST, (1, 1, 1), "set", spop),
    Spec::new("srandmember", -2, READONLY, (1, 1, 1), "set", srandmember),
    Spec::new("sinter", -2, READONLY, (1, -1, 1), "set", sinter),
    Spec::new("sintercard", -3, READONLY | MOVABLE_KEYS, (0, 0, 0), "set", sintercard),
    Spec::new("sinterstore", -3, WRITE | DENYOOM, (1, -1, 1), "set", sinterstore),
    Spec::new("sunion", -2, READONLY, (1, -1, 1), "set", sunion),
    Spec::new("sunionstore", -3, WRITE | DENYOOM, (1, -1, 1), "set", sunionstore),
    Spec::new("sdiff", -2, READONLY, (1, -1, 1), "set", sdiff),
    Spec::new("sdiffstore", -3, WRITE | DENYOOM, (1, -1, 1), "set", sdiffstore),
    Spec::new("sscan", -3, READONLY, (1, 1, 1), "set", sscan),
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn new_set() -> Value {
    Value::Set(Box::default())
}

/// Visits the members in iteration order until `f` returns false, without allocating.
fn each_member(set: &Set, mut f: impl FnMut(&[u8]) -> bool) {
    match set {
        Set::Ints(v) => {
            let mut buf = itoa::Buffer::new();
            for &i in v {
                if !f(buf.format(i).as_bytes()) {
                    return;
                }
            }
        }
        Set::Big(s) => {
            for m in s {
                if !f(m) {
                    return;
                }
            }
        }
    }
}

/// Writes a whole set as a RESP3 set (an array in RESP2).
fn reply_set(out: &mut ReplyBuf, set: &Set) {
    out.set(set.len());
    each_member(set, |m| {
        out.bulk(m);
        true
    });
}

/// Deletes `key` after a removal emptied its set (Redis never keeps empty sets).
fn delete_emptied(ctx: &mut Ctx, key: &[u8]) {
    ctx.ks.delete(ctx.db, key);
    ctx.ks.notify(notify::GENERIC, "del", ctx.db, key);
}

/// The sets at `keys` for a multi-key read (None for a missing key). Every key is first
/// looked up for reading, in order, as Redis does (hit/miss stats, lazy expiry, WRONGTYPE
/// on the first key of another type); then the sets are borrowed together.
fn read_sets<'a>(ks: &'a mut Keyspace, db: usize, keys: &[Bytes]) -> Result<Vec<Option<&'a Set>>, CmdError> {
    for k in keys {
        if let Some(e) = ks.read(db, k) {
            args::as_set(e)?;
        }
    }
    let ks: &'a Keyspace = ks;
    Ok(keys.iter().map(|k| ks.dbs[db].table.get(k).and_then(|e| args::as_set(e).ok())).collect())
}

// ---------------------------------------------------------------------------------------
// Single-key commands
// ---------------------------------------------------------------------------------------

/// SADD key member [member ...]: the number of members added.
fn sadd(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let (e, _) = ctx.ks.entry_or_insert(ctx.db, key, new_set);
    let set = args::as_set_mut(e)?;
    let added = argv[2..].iter().filter(|m| set.insert(m)).count();
    ctx.out.int(added as i64);
    if added > 0 {
        ctx.ks.signal_modified(ctx.db, key);
        ctx.ks.notify(notify::SET, "sadd", ctx.db, key);
        ctx.propagate(argv);
    }
    Ok(())
}

/// SREM key member [member ...]: the number of members removed.
fn srem(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let Some(e) = ctx.ks.write(ctx.db, key) else {
        ctx.out.int(0);
        return Ok(());
    };
    let set = args::as_set_mut(e)?;
    let removed = argv[2..].iter().filter(|m| set.remove(m)).count();
    let emptied = set.is_empty();
    ctx.out.int(removed as i64);
    if removed > 0 {
        ctx.ks.signal_modified(ctx.db, key);
        ctx.ks.notify(notify::SET, "srem", ctx.db, key);
        if emptied {
            delete_emptied(ctx, key);
        }
        ctx.propagate(argv);
    }
    Ok(())
}

/// SMOVE source destination member: 1 if the member was moved, 0 if it was not in source.
fn smove(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (src, dst, member) = (&argv[1], &argv[2], &argv[3]);
    let db = ctx.db;
    // A missing source answers 0 before the destination's type is looked at, as in Redis.
    match ctx.ks.write(db, src) {
        Some(e) => args::as_set(e)?,
        None => {
            ctx.out.int(0);
            return Ok(());
        }
    };
    if let Some(e) = ctx.ks.write(db, dst) {
        args::as_set(e)?;
    }
    let set = args::as_set_mut(ctx.ks.write(db, src).expect("checked"))?;
    if src == dst {
        ctx.out.int(set.contains(member) as i64);
        return Ok(());
    }
    if !set.remove(member) {
        ctx.out.int(0);
        return Ok(());
    }
    let emptied = set.is_empty();
    ctx.ks.notify(notify::SET, "srem", db, src);
    if emptied {
        delete_emptied(ctx, src);
    }
    let (e, _) = ctx.ks.entry_or_insert(db, dst, new_set);
    let added = args::as_set_mut(e)?.insert(member);
    ctx.ks.signal_modified(db, src);
    if added {
        ctx.ks.signal_modified(db, dst);
        ctx.ks.notify(notify::SET, "sadd", db, dst);
    }
    ctx.out.int(1);
    ctx.propagate(argv);
    Ok(())
}

/// SISMEMBER key member
fn sismember(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let found = match ctx.ks.read(ctx.db, &argv[1]) {
        Some(e) => args::as_set(e)?.contains(&argv[2]),
        None => false,
    };
    ctx.out.int(found as i64);
    Ok(())
}

/// SMISMEMBER key member [member ...]: a missing key is an empty set (all zeros).
fn smismember(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let set = match ctx.ks.read(ctx.db, &argv[1]) {
        Some(e) => Some(args::as_set(e)?),
        None => None,
    };
    ctx.out.array(argv.len() - 2);
    for m in &argv[2..] {
        ctx.out.int(set.is_some_and(|s| s.contains(m)) as i64);
    }
    Ok(())
}

/// SCARD key
fn scard(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let n = match ctx.ks.read(ctx.db, &argv[1]) {
        Some(e) => args::as_set(e)?.len(),
        None => 0,
    };
    ctx.out.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Random picks
// ---------------------------------------------------------------------------------------

/// `k` distinct members (k <= len) chosen uniformly at random, in no particular order.
fn sample_distinct(set: &Set, k: usize, rng: &mut impl Rng) -> Vec<Blob> {
    match set {
        Set::Ints(v) => rand::seq::index::sample(rng, v.len(), k).into_iter().map(|i| Blob::from_i64(v[i])).collect(),
        Set::Big(s) => s.iter().choose_multiple(rng, k).into_iter().cloned().collect(),
    }
}

/// Writes `n` members picked at random with repetition (SRANDMEMBER's negative count).
fn reply_with_repetition(out: &mut ReplyBuf, set: &Set, n: u64, rng: &mut impl Rng) {
    out.array(n as usize);
    match set {
        Set::Ints(v) => {
            let mut buf = itoa::Buffer::new();
            for _ in 0..n {
                out.bulk(buf.format(v[rng.gen_range(0..v.len())]).as_bytes());
            }
        }
        Set::Big(s) => {
            // A hash set has no random access: index a snapshot of references.
            let all: Vec<&Blob> = s.iter().collect();
            for _ in 0..n {
                out.bulk(all[rng.gen_range(0..all.len())]);
            }
        }
    }
}

/// SPOP key [count]
fn spop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match argv.len() {
        2 => spop_one(ctx, argv),
        3 => spop_count(ctx, argv),
        _ => Err(err::SYNTAX),
    }
}

/// SPOP key: one random member, propagated as `SREM key member`.
fn spop_one(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    // The set is borrowed from the keyspace while we draw, so use a copy of its generator
    // and store it back afterwards.
    let mut rng = ctx.ks.rng.clone();
    let Some(e) = ctx.ks.write(ctx.db, key) else {
        ctx.out.null();
        return Ok(());
    };
    let set = args::as_set_mut(e)?;
    let member = set.random(&mut rng).expect("sets are never empty");
    set.remove(&member);
    let emptied = set.is_empty();
    ctx.ks.rng = rng;
    ctx.ks.notify(notify::SET, "spop", ctx.db, key);
    ctx.propagate(&[b"SREM", key.as_ref(), &member]);
    ctx.out.bulk(&member);
    if emptied {
        delete_emptied(ctx, key);
    } else {
        ctx.ks.signal_modified(ctx.db, key);
    }
    Ok(())
}

/// SPOP key count: up to `count` distinct random members as a set reply, propagated as
/// `SREM key members...` (or `DEL key` when the whole set goes, as Redis does).
fn spop_count(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let count = non_negative(&argv[2], POSITIVE_MSG)?;
    let key = &argv[1];
    let db = ctx.db;
    let mut rng = ctx.ks.rng.clone();
    let Some(e) = ctx.ks.write(db, key) else {
        ctx.out.set(0);
        return Ok(());
    };
    let set = args::as_set_mut(e)?;
    if count == 0 {
        ctx.out.set(0);
        return Ok(());
    }
    if count >= set.len() as u64 {
        reply_set(ctx.out, set);
        ctx.ks.notify(notify::SET, "spop", db, key);
        delete_emptied(ctx, key);
        ctx.propagate(&[b"DEL", key.as_ref()]);
        return Ok(());
    }
    let chosen = sample_distinct(set, count as usize, &mut rng);
    for m in &chosen {
        set.remove(m);
    }
    ctx.ks.rng = rng;
    ctx.ks.notify(notify::SET, "spop", db, key);
    ctx.out.set(chosen.len());
    for m in &chosen {
        ctx.out.bulk(m);
    }
    let mut op: Vec<&[u8]> = Vec::with_capacity(chosen.len() + 2);
    op.extend([b"SREM".as_slice(), key.as_ref()]);
    op.extend(chosen.iter().map(|m| m.as_slice()));
    ctx.propagate(&op);
    ctx.ks.signal_modified(db, key);
    Ok(())
}

/// SRANDMEMBER key [count]
fn srandmember(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match argv.len() {
        2 => srandmember_one(ctx, argv),
        3 => srandmember_count(ctx, argv),
        _ => Err(err::SYNTAX),
    }
}

fn srandmember_one(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let mut rng = ctx.ks.rng.clone();
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.null();
        return Ok(());
    };
    let member = args::as_set(e)?.random(&mut rng).expect("sets are never empty");
    ctx.ks.rng = rng;
    ctx.out.bulk(&member);
    Ok(())
}

/// SRANDMEMBER key count: a positive count gives distinct members (at most the whole set),
/// a negative one gives exactly |count| members that may repeat.
fn srandmember_count(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    // Redis parses into the range -LONG_MAX..=LONG_MAX so that negating cannot overflow.
    let count = args::int(&argv[2])?;
    if count == i64::MIN {
        return Err(CmdError::Static(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    let mut rng = ctx.ks.rng.clone();
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.array(0);
        return Ok(());
    };
    let set = args::as_set(e)?;
    let n = count.unsigned_abs();
    if n == 0 {
        ctx.out.array(0);
    } else if count < 0 || n == 1 {
        let mut widest = 0;
        each_member(set, |m| {
            widest = widest.max(m.len());
            true
        });
        args::check_reply_budget(n, widest)?;
        reply_with_repetition(ctx.out, set, n, &mut rng);
    } else if n >= set.len() as u64 {
        ctx.out.array(set.len());
        each_member(set, |m| {
            ctx.out.bulk(m);
            true
        });
    } else {
        let chosen = sample_distinct(set, n as usize, &mut rng);
        ctx.out.array(chosen.len());
        for m in &chosen {
            ctx.out.bulk(m);
        }
    }
    ctx.ks.rng = rng;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Intersection, union, difference
// ---------------------------------------------------------------------------------------

/// Calls `f` for each member common to all `sets` (a missing key is an empty set) until it
/// returns false. Like Redis, walks the smallest set and probes the others.
fn intersect_each(sets: &[Option<&Set>], mut f: impl FnMut(&[u8]) -> bool) {
    let Some(mut sets) = sets.iter().copied().collect::<Option<Vec<&Set>>>() else { return };
    // Stable, like the merge sort glibc's qsort uses for small arrays.
    sets.sort_by_key(|s| s.len());
    let Some((first, rest)) = sets.split_first() else { return };
    each_member(first, |m| if rest.iter().all(|s| s.contains(m)) { f(m) } else { true });
}

fn intersection(sets: &[Option<&Set>]) -> Set {
    let mut out = Set::default();
    intersect_each(sets, |m| {
        out.insert(m);
        true
    });
    out
}

fn union(sets: &[Option<&Set>]) -> Set {
    let mut out = Set::default();
    for s in sets.iter().flatten() {
        each_member(s, |m| {
            out.insert(m);
            true
        });
    }
    out
}

/// Members of the first set in none of the others.
fn difference(sets: &[Option<&Set>]) -> Set {
    let mut out = Set::default();
    if let Some((Some(first), rest)) = sets.split_first() {
        each_member(first, |m| {
            if !rest.iter().flatten().any(|s| s.contains(m)) {
                out.insert(m);
            }
            true
        });
    }
    out
}

/// SINTER key [key ...] (and SMEMBERS key, which Redis implements the same way). Replies
/// in the smallest set's iteration order, as Redis does.
fn sinter(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sets = read_sets(ctx.ks, ctx.db, &argv[1..])?;
    let mut members: Vec<Blob> = Vec::new();
    intersect_each(&sets, |m| {
        members.push(Blob::new(m));
        true
    });
    ctx.out.set(members.len());
    for m in &members {
        ctx.out.bulk(m);
    }
    Ok(())
}

/// SUNION key [key ...]
fn sunion(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let result = union(&read_sets(ctx.ks, ctx.db, &argv[1..])?);
    reply_set(ctx.out, &result);
    Ok(())
}

/// SDIFF key [key ...]
fn sdiff(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let result = difference(&read_sets(ctx.ks, ctx.db, &argv[1..])?);
    reply_set(ctx.out, &result);
    Ok(())
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit]
fn sintercard(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let numkeys = at_least_one(&argv[1], "ERR numkeys should be greater than 0")?;
    if numkeys > (argv.len() - 2) as u64 {
        return Err(CmdError::Static("ERR Number of keys can't be greater than number of args"));
    }
    let keys_end = 2 + numkeys as usize;
    let mut limit = 0;
    let mut i = keys_end;
    while i < argv.len() {
        if is(&argv[i], "limit") && i + 1 < argv.len() {
            limit = non_negative(&argv[i + 1], "ERR LIMIT can't be negative")?;
            i += 2;
        } else {
            return Err(err::SYNTAX);
        }
    }
    let sets = read_sets(ctx.ks, ctx.db, &argv[2..keys_end])?;
    let mut n = 0u64;
    intersect_each(&sets, |_| {
        n += 1;
        limit == 0 || n < limit
    });
    ctx.out.int(n as i64);
    Ok(())
}

fn sinterstore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let result = intersection(&read_sets(ctx.ks, ctx.db, &argv[2..])?);
    store(ctx, argv, result, "sinterstore")
}

fn sunionstore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let result = union(&read_sets(ctx.ks, ctx.db, &argv[2..])?);
    store(ctx, argv, result, "sunionstore")
}

fn sdiffstore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let result = difference(&read_sets(ctx.ks, ctx.db, &argv[2..])?);
    store(ctx, argv, result, "sdiffstore")
}

/// The STORE forms: replaces `argv[1]` with `result` (dropping any TTL) and replies with its
/// size; an empty result deletes the destination instead, as Redis never stores empty sets.
fn store(ctx: &mut Ctx, argv: &[Bytes], result: Set, event: &'static str) -> CmdResult {
    let dst = &argv[1];
    let db = ctx.db;
    if result.is_empty() {
        ctx.out.int(0);
        if ctx.ks.delete(db, dst) {
            ctx.ks.notify(notify::GENERIC, "del", db, dst);
            ctx.propagate(argv);
        }
        return Ok(());
    }
    let n = result.len();
    let _ = ctx.ks.peek(db, dst).is_none();
    ctx.ks.set(db, dst, Value::Set(Box::new(result)), false);
    ctx.out.int(n as i64);
    ctx.ks.notify(notify::SET, event, db, dst);
    ctx.propagate(argv);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SSCAN
// ---------------------------------------------------------------------------------------

/// SSCAN key cursor [MATCH pattern] [COUNT count]
///
/// An intset is returned whole with cursor 0, as Redis does for its compact encodings. A
/// hash set is walked in the order of a fixed 64-bit hash of its members: the cursor is the
/// hash to resume from. Because the hash does not depend on the table's layout, the cursor
/// stays valid across inserts, deletes and resizes, giving SCAN's guarantee: a member present
/// for the whole iteration is returned (exactly once); members added or removed meanwhile may
/// or may not be. Each call costs a pass over the set, the price of a stateless cursor when
/// the table itself cannot be walked by bucket.
fn sscan(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let cursor = scan::parse_cursor(&argv[2])?;
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        scan::reply_scan(ctx.out, 0, &[]);
        return Ok(());
    };
    let set = args::as_set(e)?;
    let opts = scan::ScanOpts::parse(&argv[3..], false)?;
    let keep = |m: &[u8]| opts.matches(m);
    match set {
        Set::Ints(_) => {
            let mut members = Vec::with_capacity(set.len());
            each_member(set, |m| {
                if keep(m) {
                    members.push(Blob::new(m));
                }
                true
            });
            let items: Vec<&[u8]> = members.iter().map(|m| m.as_slice()).collect();
            scan::reply_scan(ctx.out, 0, &items);
        }
        Set::Big(s) => {
            let (page, next) = scan::scan_page(s.iter().map(|m| (m.as_slice(), m.as_slice())), cursor, opts.count);
            let items: Vec<&[u8]> = page.into_iter().filter(|m| keep(m)).collect();
            scan::reply_scan(ctx.out, next, &items);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_algebra() {
        let mut a = Set::default();
        let mut b = Set::default();
        for m in ["1", "2", "3", "x"] {
            a.insert(m.as_bytes());
        }
        for m in ["2", "3", "4"] {
            b.insert(m.as_bytes());
        }
        let sets = [Some(&a), Some(&b)];
        assert_eq!(intersection(&sets).len(), 2);
        assert_eq!(union(&sets).len(), 5);
        let d = difference(&sets);
        assert!(d.contains(b"1") && d.contains(b"x") && d.len() == 2);
        assert!(intersection(&[Some(&a), None]).is_empty());
        assert!(difference(&[None, Some(&a)]).is_empty());
        assert!(difference(&[Some(&a), Some(&a)]).is_empty());
    }
}

#[cfg(test)]
mod replication_tests {
    use crate::cmd::lists::tests::{assert_replica_converges, run, setup};

    #[test]
    fn random_pops_replicate() {
        let (mut ks, srv) = setup();
        let members: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        let mut line: Vec<&[u8]> = vec![b"sadd", b"s"];
        line.extend(members.iter().map(|m| m.as_bytes()));
        run(&mut ks, &srv, &line);
        run(&mut ks, &srv, &[b"sadd", b"i", b"1", b"2", b"3"]);
        run(&mut ks, &srv, &[b"spop", b"s"]);
        run(&mut ks, &srv, &[b"spop", b"s", b"5"]);
        run(&mut ks, &srv, &[b"spop", b"s", b"40"]);
        run(&mut ks, &srv, &[b"spop", b"i", b"3"]);
        run(&mut ks, &srv, &[b"smove", b"s", b"t", b"m1"]);
        run(&mut ks, &srv, &[b"sadd", b"u", b"x", b"1"]);
        run(&mut ks, &srv, &[b"sunionstore", b"d", b"s", b"u"]);
        run(&mut ks, &srv, &[b"srem", b"s", b"nope"]);
        let ops = ks.effects.as_ref().unwrap();
        assert!(ops.iter().all(|o| !o.argv[0].eq_ignore_ascii_case(b"spop")));
        assert_replica_converges(&mut ks, &srv);
    }
}
