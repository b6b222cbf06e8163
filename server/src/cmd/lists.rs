//! List commands (Redis's `t_list.c`): pushes and pops at both ends, ranges, positional
//! edits, moves between lists, and the blocking variants.
//!
//! A list is a `VecDeque<Blob>`. Redis deletes a list as soon as it becomes empty, so every
//! command that removes elements checks for that and emits `del`. Blocking commands that
//! find nothing ask the connection to park them ([`Ctx::block_on`]); when one of their keys
//! receives elements the same handler runs again in [`BlockMode::Serving`] and either
//! serves the client or asks to keep waiting.

use std::collections::VecDeque;

use bytes::Bytes;
use redoubt_protocol::ReplyBuf;

use super::args::{self, is};
use super::flags::*;
use super::{err, BlockMode, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Blob, Keyspace, Value};

pub const COMMANDS: &[Spec] = &[
    Spec::new("lpush", -3, WRITE | DENYOOM | FAST, (1, 1, 1), "list", lpush),
    Spec::new("rpush", -3, WRITE | DENYOOM | FAST, (1, 1, 1), "list", rpush),
    Spec::new("lpushx", -3, WRITE | DENYOOM | FAST, (1, 1, 1), "list", lpushx),
    Spec::new("rpushx", -3, WRITE | DENYOOM | FAST, (1, 1, 1), "list", rpushx),
    Spec::new("lpop", -2, WRITE | FAST, (1, 1, 1), "list", lpop),
    Spec::new("rpop", -2, WRITE | FAST, (1, 1, 1), "list", rpop),
    Spec::new("llen", 2, READONLY | FAST, (1, 1, 1), "list", llen),
    Spec::new("lrange", 4, READONLY, (1, 1, 1), "list", lrange),
    Spec::new("lindex", 3, READONLY, (1, 1, 1), "list", lindex),
    Spec::new("lset", 4, WRITE | DENYOOM, (1, 1, 1), "list", lset),
    Spec::new("linsert", 5, WRITE | DENYOOM, (1, 1, 1), "list", linsert),
    Spec::new("lrem", 4, WRITE, (1, 1, 1), "list", lrem),
    Spec::new("ltrim", 4, WRITE, (1, 1, 1), "list", ltrim),
    Spec::new("lpos", -3, READONLY, (1, 1, 1), "list", lpos),
    Spec::new("lmove", 5, WRITE | DENYOOM, (1, 2, 1), "list", lmove),
    Spec::new("rpoplpush", 3, WRITE | DENYOOM, (1, 2, 1), "list", rpoplpush),
    Spec::new("lmpop", -4, WRITE | MOVABLE_KEYS, (0, 0, 0), "list", lmpop),
    Spec::new("blpop", -3, WRITE | NOSCRIPT | BLOCKING, (1, -2, 1), "list", blpop),
    Spec::new("brpop", -3, WRITE | NOSCRIPT | BLOCKING, (1, -2, 1), "list", brpop),
    Spec::new("blmove", 6, WRITE | DENYOOM | NOSCRIPT | BLOCKING, (1, 2, 1), "list", blmove),
    Spec::new("brpoplpush", 4, WRITE | DENYOOM | NOSCRIPT | BLOCKING, (1, 2, 1), "list", brpoplpush),
    Spec::new("blmpop", -5, WRITE | BLOCKING | MOVABLE_KEYS, (0, 0, 0), "list", blmpop),
];

type List = VecDeque<Blob>;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Which end of a list an operation works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

impl End {
    /// `LEFT` / `RIGHT` (any case), else a syntax error.
    fn parse(a: &[u8]) -> Result<End, CmdError> {
        if is(a, "left") {
            Ok(End::Left)
        } else if is(a, "right") {
            Ok(End::Right)
        } else {
            Err(err::SYNTAX)
        }
    }

    fn pop_event(self) -> &'static str {
        match self {
            End::Left => "lpop",
            End::Right => "rpop",
        }
    }

    fn push_event(self) -> &'static str {
        match self {
            End::Left => "lpush",
            End::Right => "rpush",
        }
    }

    /// The non-blocking pop command, for propagating blocking pops.
    fn pop_command(self) -> &'static [u8] {
        match self {
            End::Left => b"LPOP",
            End::Right => b"RPOP",
        }
    }

    fn push(self, l: &mut List, v: Blob) {
        match self {
            End::Left => l.push_front(v),
            End::Right => l.push_back(v),
        }
    }

    fn pop(self, l: &mut List) -> Option<Blob> {
        match self {
            End::Left => l.pop_front(),
            End::Right => l.pop_back(),
        }
    }

    /// Removes up to `n` elements, in pop order (so RPOP with a count lists the tail first).
    fn pop_many(self, l: &mut List, n: usize) -> Vec<Blob> {
        let n = n.min(l.len());
        match self {
            End::Left => l.drain(..n).collect(),
            End::Right => l.drain(l.len() - n..).rev().collect(),
        }
    }
}

fn new_list() -> Value {
    Value::List(Box::default())
}

/// Housekeeping after elements were popped from `key` (Redis's `listElementsRemoved`): the
/// pop event, deletion of a list left empty (Redis never keeps empty lists), WATCH.
fn after_pop(ctx: &mut Ctx, key: &[u8], end: End, emptied: bool) {
    ctx.ks.notify(notify::LIST, end.pop_event(), ctx.db, key);
    if emptied {
        // `delete` also signals the change to WATCHers.
        ctx.ks.delete(ctx.db, key);
        ctx.ks.notify(notify::GENERIC, "del", ctx.db, key);
    } else {
        ctx.ks.signal_modified(ctx.db, key);
    }
}

/// Deletes `key` if a removal left its list empty, with the `del` event.
fn delete_if_emptied(ctx: &mut Ctx, key: &[u8], emptied: bool) {
    if emptied {
        ctx.ks.delete(ctx.db, key);
        ctx.ks.notify(notify::GENERIC, "del", ctx.db, key);
    }
}

/// Converts a Redis list index (negative counts from the tail) to a position.
fn position(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 { index.checked_add(len as i64)? } else { index };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// Writes elements as an array of bulk strings.
fn reply_elements<'a>(out: &mut ReplyBuf, items: impl ExactSizeIterator<Item = &'a Blob>) {
    out.array(items.len());
    for v in items {
        out.bulk(v);
    }
}

/// Looks up a list to pop from for a blocking command. `Ok(None)` when there is nothing
/// to pop. A key of another type is an error, except when serving a blocked client: Redis
/// only serves list waiters from keys that hold lists, so such a client keeps waiting.
fn blocking_source<'a>(
    ks: &'a mut Keyspace,
    db: usize,
    serving: bool,
    key: &[u8],
) -> Result<Option<&'a mut List>, CmdError> {
    let Some(e) = ks.write(db, key) else { return Ok(None) };
    match args::as_list_mut(e) {
        Ok(l) if l.is_empty() => Ok(None),
        Ok(l) => Ok(Some(l)),
        Err(_) if serving => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Push
// ---------------------------------------------------------------------------------------

fn lpush(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    push_generic(ctx, argv, End::Left, false)
}

fn rpush(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    push_generic(ctx, argv, End::Right, false)
}

fn lpushx(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    push_generic(ctx, argv, End::Left, true)
}

fn rpushx(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    push_generic(ctx, argv, End::Right, true)
}

/// LPUSH/RPUSH/LPUSHX/RPUSHX key element [element ...]; `only_existing` for the X forms.
fn push_generic(ctx: &mut Ctx, argv: &[Bytes], end: End, only_existing: bool) -> CmdResult {
    let key = &argv[1];
    let db = ctx.db;
    let (e, _) = if only_existing {
        match ctx.ks.write(db, key) {
            Some(e) => (e, false),
            None => {
                ctx.out.int(0);
                return Ok(());
            }
        }
    } else {
        ctx.ks.entry_or_insert(db, key, new_list)
    };
    let list = args::as_list_mut(e)?;
    for v in &argv[2..] {
        end.push(list, Blob::new(v));
    }
    ctx.out.int(list.len() as i64);
    ctx.ks.signal_modified(db, key);
    ctx.ks.notify(notify::LIST, end.push_event(), db, key);
    ctx.ks.signal_ready(db, key);
    ctx.propagate(argv);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Pop
// ---------------------------------------------------------------------------------------

fn lpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    pop_generic(ctx, argv, End::Left)
}

fn rpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    pop_generic(ctx, argv, End::Right)
}

/// LPOP/RPOP key [count]. Without a count the reply is one bulk string (null if the key is
/// missing); with a count it is an array (a null array if the key is missing, an empty
/// array for a count of 0).
fn pop_generic(ctx: &mut Ctx, argv: &[Bytes], end: End) -> CmdResult {
    if argv.len() > 3 {
        return Err(err::wrong_args(&args::s(&argv[0])));
    }
    let count = match argv.get(2) {
        Some(a) => Some(non_negative(a, POSITIVE_MSG)?),
        None => None,
    };
    let key = &argv[1];
    let Some(e) = ctx.ks.write(ctx.db, key) else {
        match count {
            Some(_) => ctx.out.null_array(),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let list = args::as_list_mut(e)?;
    match count {
        // Nothing changes, so nothing is propagated either.
        Some(0) => {
            ctx.out.array(0);
            return Ok(());
        }
        Some(n) => {
            let popped = end.pop_many(list, usize::try_from(n).unwrap_or(usize::MAX));
            reply_elements(ctx.out, popped.iter());
        }
        None => match end.pop(list) {
            Some(v) => ctx.out.bulk(&v),
            None => ctx.out.null(),
        },
    }
    let emptied = list.is_empty();
    after_pop(ctx, key, end, emptied);
    ctx.propagate(argv);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------

/// LLEN key
fn llen(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let len = match ctx.ks.read(ctx.db, &argv[1]) {
        Some(e) => args::as_list(e)?.len(),
        None => 0,
    };
    ctx.out.int(len as i64);
    Ok(())
}

/// LRANGE key start stop
fn lrange(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let start = args::int(&argv[2])?;
    let stop = args::int(&argv[3])?;
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.array(0);
        return Ok(());
    };
    let list = args::as_list(e)?;
    match args::clamp_range(start, stop, list.len()) {
        Some((s, e)) => reply_elements(ctx.out, list.range(s..=e)),
        None => ctx.out.array(0),
    }
    Ok(())
}

/// LINDEX key index. The key is looked up before the index is parsed, as in Redis.
fn lindex(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.null();
        return Ok(());
    };
    let list = args::as_list(e)?;
    let index = args::int(&argv[2])?;
    match position(index, list.len()) {
        Some(i) => ctx.out.bulk(&list[i]),
        None => ctx.out.null(),
    }
    Ok(())
}

/// LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]
fn lpos(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let opts = LposOpts::parse(&argv[3..])?;
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        match opts.count {
            Some(_) => ctx.out.array(0),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let found = opts.search(args::as_list(e)?, &argv[2]);
    match opts.count {
        Some(_) => {
            ctx.out.array(found.len());
            for i in found {
                ctx.out.int(i as i64);
            }
        }
        None => match found.first() {
            Some(&i) => ctx.out.int(i as i64),
            None => ctx.out.null(),
        },
    }
    Ok(())
}

/// Parsed LPOS options.
struct LposOpts {
    /// Search from the tail (negative RANK).
    reverse: bool,
    /// Skip the first `rank - 1` matches.
    rank: u64,
    /// None: no COUNT option (reply with one index); Some(0): all matches.
    count: Option<u64>,
    /// Compare at most this many elements; 0 = no limit.
    maxlen: u64,
}

impl LposOpts {
    fn parse(opts: &[Bytes]) -> Result<LposOpts, CmdError> {
        let mut rank: i64 = 1;
        let mut count = None;
        let mut maxlen = 0;
        let mut i = 0;
        while i < opts.len() {
            let has_value = i + 1 < opts.len();
            match &opts[i] {
                o if is(o, "rank") && has_value => {
                    rank = args::int(&opts[i + 1])?;
                    if rank == 0 {
                        return Err(CmdError::Static(
                            "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                             second ... or use negative to start from the end of the list",
                        ));
                    }
                }
                o if is(o, "count") && has_value => {
                    count = Some(non_negative(&opts[i + 1], "ERR COUNT can't be negative")?);
                }
                o if is(o, "maxlen") && has_value => {
                    maxlen = non_negative(&opts[i + 1], "ERR MAXLEN can't be negative")?;
                }
                _ => return Err(err::SYNTAX),
            }
            i += 2;
        }
        // Redis negates a negative rank in a C long; LONG_MIN stays negative there and then
        // behaves like -1 (every match qualifies).
        let reverse = rank < 0;
        let rank = rank.checked_abs().map_or(1, |r| r as u64);
        Ok(LposOpts { reverse, rank, count, maxlen })
    }

    /// Indexes (from the head) of the qualifying matches, in search order.
    fn search(&self, list: &List, ele: &[u8]) -> Vec<usize> {
        let len = list.len();
        let scan = if self.maxlen == 0 { len } else { len.min(self.maxlen as usize) };
        let mut matches = 0u64;
        let mut found = Vec::new();
        for step in 0..scan {
            let i = if self.reverse { len - 1 - step } else { step };
            if list[i].as_slice() != ele {
                continue;
            }
            matches += 1;
            if matches < self.rank {
                continue;
            }
            found.push(i);
            match self.count {
                None => break,
                Some(c) if c != 0 && found.len() as u64 >= c => break,
                Some(_) => {}
            }
        }
        found
    }
}

/// A non-negative integer option whose errors (not an integer, negative) all read `msg`,
/// as Redis's `getPositiveLongFromObjectOrReply` with a message does.
pub(super) fn non_negative(a: &[u8], msg: &'static str) -> Result<u64, CmdError> {
    match redoubt_protocol::num::parse_i64(a) {
        Some(v) if v >= 0 => Ok(v as u64),
        _ => Err(CmdError::Static(msg)),
    }
}

/// Redis's message for a count that must be >= 0 (also given for a non-integer).
pub(super) const POSITIVE_MSG: &str = "ERR value is out of range, must be positive";

/// An integer in `1..=i64::MAX` whose errors all read `msg` (Redis's
/// `getRangeLongFromObjectOrReply(..., 1, LONG_MAX, msg)`).
pub(super) fn at_least_one(a: &[u8], msg: &'static str) -> Result<u64, CmdError> {
    match redoubt_protocol::num::parse_i64(a) {
        Some(v) if v >= 1 => Ok(v as u64),
        _ => Err(CmdError::Static(msg)),
    }
}

// ---------------------------------------------------------------------------------------
// Positional edits
// ---------------------------------------------------------------------------------------

/// LSET key index element
fn lset(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let e = ctx.ks.write(ctx.db, key).ok_or(err::NO_KEY)?;
    let list = args::as_list_mut(e)?;
    let index = args::int(&argv[2])?;
    let i = position(index, list.len()).ok_or(err::INDEX_RANGE)?;
    list[i] = Blob::new(&argv[3]);
    ctx.out.ok();
    ctx.ks.signal_modified(ctx.db, key);
    ctx.ks.notify(notify::LIST, "lset", ctx.db, key);
    ctx.propagate(argv);
    Ok(())
}

/// LINSERT key BEFORE|AFTER pivot element: the new length, 0 if the key is missing, -1 if
/// the pivot is not found.
fn linsert(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let after = match &argv[2] {
        w if is(w, "after") => true,
        w if is(w, "before") => false,
        _ => return Err(err::SYNTAX),
    };
    let key = &argv[1];
    let Some(e) = ctx.ks.write(ctx.db, key) else {
        ctx.out.int(0);
        return Ok(());
    };
    let list = args::as_list_mut(e)?;
    let Some(pivot) = list.iter().position(|v| v.as_slice() == argv[3].as_ref()) else {
        ctx.out.int(-1);
        return Ok(());
    };
    list.insert(pivot + after as usize, Blob::new(&argv[4]));
    ctx.out.int(list.len() as i64);
    ctx.ks.signal_modified(ctx.db, key);
    ctx.ks.notify(notify::LIST, "linsert", ctx.db, key);
    ctx.propagate(argv);
    Ok(())
}

/// LREM key count element: removes the first `count` matches from the head (count > 0),
/// from the tail (count < 0), or all of them (0).
fn lrem(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let count = args::int(&argv[2])?;
    let key = &argv[1];
    let Some(e) = ctx.ks.write(ctx.db, key) else {
        ctx.out.int(0);
        return Ok(());
    };
    let list = args::as_list_mut(e)?;
    let removed = remove_matches(list, &argv[3], count);
    let emptied = list.is_empty();
    ctx.out.int(removed as i64);
    if removed > 0 {
        ctx.ks.signal_modified(ctx.db, key);
        ctx.ks.notify(notify::LIST, "lrem", ctx.db, key);
        ctx.propagate(argv);
    }
    delete_if_emptied(ctx, key, emptied);
    Ok(())
}

/// Removes matches of `ele` per LREM's `count` in one pass; returns how many went.
fn remove_matches(list: &mut List, ele: &[u8], count: i64) -> usize {
    let limit = if count == 0 { usize::MAX } else { usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX) };
    // The elements to drop are the first `limit` matches in the scan direction; find where
    // that run of matches starts (from the tail) so one forward `retain` can remove them.
    let first_index = if count < 0 {
        let mut seen = 0;
        let mut start = list.len();
        for (i, v) in list.iter().enumerate().rev() {
            if seen == limit {
                break;
            }
            if v.as_slice() == ele {
                seen += 1;
                start = i;
            }
        }
        start
    } else {
        0
    };
    let mut removed = 0;
    let mut i = 0;
    list.retain(|v| {
        let idx = i;
        i += 1;
        if idx >= first_index && removed < limit && v.as_slice() == ele {
            removed += 1;
            false
        } else {
            true
        }
    });
    removed
}

/// LTRIM key start stop
fn ltrim(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let start = args::int(&argv[2])?;
    let stop = args::int(&argv[3])?;
    let key = &argv[1];
    let Some(e) = ctx.ks.write(ctx.db, key) else {
        ctx.out.ok();
        return Ok(());
    };
    let list = args::as_list_mut(e)?;
    let before = list.len();
    match args::clamp_range(start, stop, before) {
        Some((s, e)) => {
            list.truncate(e + 1);
            list.drain(..s);
        }
        None => list.clear(),
    }
    let changed = list.len() != before;
    let emptied = list.is_empty();
    ctx.ks.notify(notify::LIST, "ltrim", ctx.db, key);
    if emptied {
        delete_if_emptied(ctx, key, true);
    } else {
        ctx.ks.signal_modified(ctx.db, key);
    }
    if changed {
        ctx.propagate(argv);
    }
    ctx.out.ok();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Moves between lists
// ---------------------------------------------------------------------------------------

/// LMOVE source destination LEFT|RIGHT LEFT|RIGHT
fn lmove(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let from = End::parse(&argv[3])?;
    let to = End::parse(&argv[4])?;
    if !move_element(ctx, &argv[1], &argv[2], from, to)? {
        ctx.out.null();
        return Ok(());
    }
    ctx.propagate(argv);
    Ok(())
}

/// RPOPLPUSH source destination
fn rpoplpush(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if !move_element(ctx, &argv[1], &argv[2], End::Right, End::Left)? {
        ctx.out.null();
        return Ok(());
    }
    ctx.propagate(argv);
    Ok(())
}

/// BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout
fn blmove(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let from = End::parse(&argv[3])?;
    let to = End::parse(&argv[4])?;
    let deadline = args::timeout_deadline(ctx, &argv[5])?;
    // Propagated as the LMOVE it amounts to.
    let op: [&[u8]; 5] = [b"LMOVE", &argv[1], &argv[2], &argv[3], &argv[4]];
    block_move(ctx, &argv[1], &argv[2], from, to, deadline, &op)
}

/// BRPOPLPUSH source destination timeout
fn brpoplpush(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let deadline = args::timeout_deadline(ctx, &argv[3])?;
    let op: [&[u8]; 3] = [b"RPOPLPUSH", &argv[1], &argv[2]];
    block_move(ctx, &argv[1], &argv[2], End::Right, End::Left, deadline, &op)
}

/// The blocking move: moves at once if the source has elements, else blocks on it. When
/// blocking is impossible (MULTI) the reply is a null bulk string, as in Redis (whereas a
/// real timeout replies with a null array).
fn block_move(ctx: &mut Ctx, src: &Bytes, dst: &Bytes, from: End, to: End, deadline: i64, op: &[&[u8]]) -> CmdResult {
    if blocking_source(ctx.ks, ctx.db, ctx.block_mode == BlockMode::Serving, src)?.is_some()
        && move_element(ctx, src, dst, from, to)?
    {
        ctx.propagate(op);
        return Ok(());
    }
    if ctx.block_mode == BlockMode::Never {
        ctx.out.null();
    } else {
        ctx.block_on(vec![src.clone()], deadline);
    }
    Ok(())
}

/// Pops one element from `src` at `from` and pushes it onto `dst` at `to`, replying with
/// the element. Returns false (writing nothing) if `src` does not exist. Both types are
/// checked before anything changes.
fn move_element(ctx: &mut Ctx, src: &[u8], dst: &[u8], from: End, to: End) -> Result<bool, CmdError> {
    let db = ctx.db;
    match ctx.ks.write(db, src) {
        Some(e) if !args::as_list(e)?.is_empty() => {}
        _ => return Ok(false),
    }
    if let Some(e) = ctx.ks.write(db, dst) {
        args::as_list(e)?;
    }
    let list = args::as_list_mut(ctx.ks.write(db, src).expect("checked"))?;
    let value = from.pop(list).expect("not empty");
    // Push before deciding whether the source is empty: with src == dst the element goes
    // straight back and the list survives.
    let (e, _) = ctx.ks.entry_or_insert(db, dst, new_list);
    to.push(args::as_list_mut(e)?, value.clone());
    ctx.ks.signal_modified(db, dst);
    ctx.ks.notify(notify::LIST, to.push_event(), db, dst);
    ctx.ks.signal_ready(db, dst);
    ctx.out.bulk(&value);
    let emptied = ctx.ks.write(db, src).is_some_and(|e| e.value.is_empty_collection());
    after_pop(ctx, src, from, emptied);
    Ok(true)
}

// ---------------------------------------------------------------------------------------
// Multi-key pops, blocking pops
// ---------------------------------------------------------------------------------------

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]
fn lmpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let m = MpopArgs::parse(argv, 1)?;
    if !pop_from_first(ctx, m.keys, m.end, Some(m.count))? {
        ctx.out.null_array();
    }
    Ok(())
}

/// BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]
fn blmpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let m = MpopArgs::parse(argv, 2)?;
    let deadline = args::timeout_deadline(ctx, &argv[1])?;
    if !pop_from_first(ctx, m.keys, m.end, Some(m.count))? {
        ctx.block_on(m.keys.to_vec(), deadline);
    }
    Ok(())
}

fn blpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    block_pop(ctx, argv, End::Left)
}

fn brpop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    block_pop(ctx, argv, End::Right)
}

/// BLPOP/BRPOP key [key ...] timeout
fn block_pop(ctx: &mut Ctx, argv: &[Bytes], end: End) -> CmdResult {
    let deadline = args::timeout_deadline(ctx, &argv[argv.len() - 1])?;
    let keys = &argv[1..argv.len() - 1];
    if !pop_from_first(ctx, keys, end, None)? {
        ctx.block_on(keys.to_vec(), deadline);
    }
    Ok(())
}

/// Parsed arguments of LMPOP/BLMPOP.
struct MpopArgs<'a> {
    keys: &'a [Bytes],
    end: End,
    count: u64,
}

impl<'a> MpopArgs<'a> {
    /// `numkeys_at`: index of numkeys in argv.
    fn parse(argv: &'a [Bytes], numkeys_at: usize) -> Result<MpopArgs<'a>, CmdError> {
        let numkeys = at_least_one(&argv[numkeys_at], "ERR numkeys should be greater than 0")?;
        let where_at = usize::try_from(numkeys)
            .ok()
            .and_then(|n| (numkeys_at + 1).checked_add(n))
            .filter(|&w| w < argv.len())
            .ok_or(err::SYNTAX)?;
        let end = End::parse(&argv[where_at])?;
        let mut count = None;
        let mut i = where_at + 1;
        while i < argv.len() {
            if count.is_none() && is(&argv[i], "count") && i + 1 < argv.len() {
                count = Some(at_least_one(&argv[i + 1], "ERR count should be greater than 0")?);
                i += 2;
            } else {
                return Err(err::SYNTAX);
            }
        }
        Ok(MpopArgs { keys: &argv[numkeys_at + 1..where_at], end, count: count.unwrap_or(1) })
    }
}

/// Pops from the first of `keys` holding a non-empty list. With `count` (the *MPOP
/// commands) replies `[key, [elements...]]` and propagates `LPOP|RPOP key n`; without it
/// (BLPOP/BRPOP) replies `[key, element]` and propagates `LPOP|RPOP key`. Returns false,
/// writing nothing, when every list is empty.
fn pop_from_first(ctx: &mut Ctx, keys: &[Bytes], end: End, count: Option<u64>) -> Result<bool, CmdError> {
    for key in keys {
        let serving = ctx.block_mode == BlockMode::Serving;
        let Some(list) = blocking_source(ctx.ks, ctx.db, serving, key)? else { continue };
        ctx.out.array(2);
        ctx.out.bulk(key);
        let n = match count {
            Some(c) => {
                let popped = end.pop_many(list, usize::try_from(c).unwrap_or(usize::MAX));
                reply_elements(ctx.out, popped.iter());
                Some(popped.len())
            }
            None => {
                ctx.out.bulk(&end.pop(list).expect("not empty"));
                None
            }
        };
        let emptied = list.is_empty();
        after_pop(ctx, key, end, emptied);
        match n {
            Some(n) => ctx.propagate(&[end.pop_command(), key, itoa::Buffer::new().format(n).as_bytes()]),
            None => ctx.propagate(&[end.pop_command(), key.as_ref()]),
        }
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::Config;
    use crate::shared::Shared;

    /// Runs one command line against `ks` (outside any connection) and returns the raw
    /// reply, with a marker when the command asked to block.
    pub(in crate::cmd) fn run(ks: &mut Keyspace, srv: &Shared, line: &[&[u8]]) -> String {
        let argv: Vec<Bytes> = line.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let spec = crate::cmd::lookup(&argv[0]).expect("known command");
        let mut out = ReplyBuf::new(false);
        let mut ctx = Ctx {
            ks,
            srv,
            out: &mut out,
            db: 0,
            client_id: 1,
            conn: None,
            block_mode: BlockMode::Allowed,
            block: None,
            in_multi: false,
        };
        let res = (spec.handler)(&mut ctx, &argv);
        let blocked = ctx.block.is_some();
        let mut s = String::from_utf8_lossy(&out.buf).into_owned();
        if let Err(e) = res {
            s = format!("-{}", e.text());
        }
        if blocked {
            s.push_str("<blocked>");
        }
        s
    }

    /// Replays what `primary` recorded on a fresh keyspace and checks both hold the same
    /// data: the propagated forms must be deterministic and equivalent.
    pub(in crate::cmd) fn assert_replica_converges(primary: &mut Keyspace, srv: &Shared) {
        let ops = primary.effects.take().expect("recording");
        let mut replica = Keyspace::new(1);
        for op in &ops {
            let line: Vec<&[u8]> = op.argv.iter().map(|a| a.as_ref()).collect();
            run(&mut replica, srv, &line);
        }
        assert_eq!(dump(primary), dump(&mut replica), "ops: {ops:?}");
    }

    fn dump(ks: &mut Keyspace) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let mut v: Vec<_> = ks.dbs[0]
            .table
            .iter()
            .map(|(_, e)| {
                let items: Vec<Vec<u8>> = match &e.value {
                    Value::List(l) => l.iter().map(|b| b.to_vec()).collect(),
                    Value::Set(s) => {
                        let mut m: Vec<Vec<u8>> = s.members().iter().map(|b| b.to_vec()).collect();
                        m.sort();
                        m
                    }
                    other => vec![other.type_name().as_bytes().to_vec()],
                };
                (e.key.to_vec(), items)
            })
            .collect();
        v.sort();
        v
    }

    pub(in crate::cmd) fn setup() -> (Keyspace, std::sync::Arc<Shared>) {
        let mut ks = Keyspace::new(1);
        ks.effects = Some(Vec::new());
        (ks, Shared::new(Config::default()))
    }

    #[test]
    fn pops_and_moves_replicate() {
        let (mut ks, srv) = setup();
        let script: &[&[&[u8]]] = &[
            &[b"rpush", b"a", b"1", b"2", b"3", b"4", b"5"],
            &[b"blpop", b"nokey", b"a", b"0"],
            &[b"brpop", b"a", b"0"],
            &[b"blmove", b"a", b"b", b"left", b"right", b"0"],
            &[b"brpoplpush", b"a", b"b", b"0"],
            &[b"lmpop", b"2", b"x", b"b", b"right", b"count", b"9"],
            &[b"rpush", b"c", b"1", b"2", b"3"],
            &[b"blmpop", b"0", b"1", b"c", b"left", b"count", b"2"],
            &[b"lpop", b"c", b"0"],
            &[b"ltrim", b"a", b"0", b"-1"],
            &[b"lrem", b"a", b"0", b"nothing"],
        ];
        let replies: Vec<String> = script.iter().map(|l| run(&mut ks, &srv, l)).collect();
        assert_eq!(replies[1], "*2\r\n$1\r\na\r\n$1\r\n1\r\n");
        assert_eq!(replies[5], "*2\r\n$1\r\nb\r\n*2\r\n$1\r\n2\r\n$1\r\n4\r\n");
        // The no-op writes at the end propagate nothing.
        let ops = ks.effects.as_ref().unwrap();
        assert!(ops
            .iter()
            .all(|o| !o.argv[0].eq_ignore_ascii_case(b"ltrim") && !o.argv[0].eq_ignore_ascii_case(b"lrem")));
        assert!(ops.iter().all(|o| !o.argv[0].starts_with(b"B") && !o.argv[0].starts_with(b"b")));
        assert_replica_converges(&mut ks, &srv);
    }

    #[test]
    fn blocking_without_data() {
        let (mut ks, srv) = setup();
        assert_eq!(run(&mut ks, &srv, &[b"blpop", b"k", b"k", b"1"]), "<blocked>");
        assert_eq!(run(&mut ks, &srv, &[b"blpop", b"k", b"-1"]), "-ERR timeout is negative");
        assert_eq!(run(&mut ks, &srv, &[b"blpop", b"k", b"inf"]), "-ERR timeout is negative");
        assert_eq!(run(&mut ks, &srv, &[b"blpop", b"k", b"-0.0001"]), "<blocked>");
        assert_eq!(run(&mut ks, &srv, &[b"blpop", b"k", b"x"]), "-ERR timeout is not a float or out of range");
    }

    #[test]
    fn lrem_directions() {
        let mut l: List = ["a", "b", "a", "c", "a"].iter().map(|s| Blob::from(*s)).collect();
        assert_eq!(remove_matches(&mut l, b"a", -2), 2);
        assert_eq!(l.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(remove_matches(&mut l, b"a", 5), 1);
        assert_eq!(remove_matches(&mut l, b"z", 0), 0);
        assert_eq!(l.len(), 2);
    }
}
