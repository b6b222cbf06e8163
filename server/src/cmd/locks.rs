//! Leases with fencing tokens: LOCK.ACQUIRE, LOCK.RELEASE, LOCK.EXTEND, LOCK.INFO.
//!
//! Where this sits in the write flow: as with the rate limiters (`limits.rs`), a command reads
//! the lock's state, decides at the operation's time (`ctx.ks.now_ms`), and changes keys only
//! through ordinary commands run with [`Ctx::apply`]: `SET` of the counter, `HSET` +
//! `PEXPIREAT` of the lock, `DEL`. Those are what replicas and the Raft log apply, so the
//! token a client was given is in the log with the lock itself, and survives failovers and
//! restarts like any other write. A call that changes nothing records nothing.
//!
//! ## Key layout
//!
//! * `<key>`: the lock while held, a hash `{owner, token}` whose expiry is the end of the
//!   lease (visible to TYPE, PTTL, HGETALL, SCAN). A free lock is no key.
//! * `<key>:fence`: the last fencing token issued for `<key>`, a plain integer string with
//!   no expiry. It outlives every lease, so the next holder's token is larger than every
//!   earlier one, whether the earlier lease was released, expired, or deleted with DEL.
//!
//! A new holder gets `max(<key>:fence, 0) + 1`; the holder re-acquiring gets its own token
//! back with the lease renewed. Deleting `<key>:fence` is like deleting any other data: if
//! it is missing when a *free* lock is next acquired, tokens start again at 1. While a lock
//! is held, every ACQUIRE/EXTEND/RELEASE by its holder first puts the counter back to at
//! least the held token, so only a counter deleted while nobody renews the lock is lost.
//! (The counter is not listed as a key of the commands: like Redis 7.0's own key specs for
//! single-node use, only `<key>` is in the arguments.)
//!
//! ## Replies
//!
//! ACQUIRE: the token (integer), or nil when another owner holds the lock. RELEASE and
//! EXTEND: 1, or 0 when the caller does not hold it. INFO: nil when free, otherwise a map
//! `owner -> bulk, token -> integer, ttl_ms -> integer` (a flat array of the six in RESP2,
//! as CONFIG GET or XINFO do); `ttl_ms` is -1 if someone removed the lease's expiry.

use bytes::Bytes;
use redoubt_protocol::num::parse_i64;

use super::args;
use super::flags::*;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{Blob, Entry};

pub const COMMANDS: &[Spec] = &[
    Spec::new("lock.acquire", 4, WRITE | DENYOOM | FAST, (1, 1, 1), "hash", acquire),
    Spec::new("lock.release", 3, WRITE | FAST, (1, 1, 1), "hash", release),
    Spec::new("lock.extend", 4, WRITE | FAST, (1, 1, 1), "hash", extend),
    Spec::new("lock.info", 2, READONLY | FAST, (1, 1, 1), "hash", info),
];

/// The companion key holding the last token issued for `key`.
pub fn fence_key(key: &[u8]) -> Vec<u8> {
    [key, b":fence"].concat()
}

/// A held lock as stored.
struct Held {
    owner: Blob,
    token: i64,
    /// Unix ms; 0 if the lease lost its expiry.
    expire_at: i64,
}

/// The lock at `key`, if held. A hash without a valid `{owner, token}` is not a lock.
fn read_lock(ctx: &mut Ctx, key: &[u8], for_write: bool) -> Result<Option<Held>, CmdError> {
    let e: Option<&Entry> = if for_write { ctx.ks.write(ctx.db, key).map(|e| &*e) } else { ctx.ks.read(ctx.db, key) };
    let Some(e) = e else { return Ok(None) };
    let h = args::as_hash(e)?;
    let owner = h.get(b"owner").ok_or(err::WRONGTYPE)?.clone();
    let token = h.get(b"token").and_then(|t| parse_i64(t)).filter(|&t| t > 0).ok_or(err::WRONGTYPE)?;
    Ok(Some(Held { owner, token, expire_at: e.expire_at }))
}

/// The last token issued (0 if none): the counter key's integer.
fn last_token(ctx: &mut Ctx, fence: &[u8]) -> Result<i64, CmdError> {
    match ctx.ks.write(ctx.db, fence) {
        None => Ok(0),
        Some(e) => parse_i64(args::as_str(e)?).ok_or(err::NOT_INT),
    }
}

/// `now + ttl_ms` for a lease, with Redis's wording for a bad expire time.
fn lease_end(ctx: &Ctx, a: &[u8], cmd: &str) -> Result<i64, CmdError> {
    let ttl = args::int(a)?;
    let invalid = || CmdError::Owned(format!("ERR invalid expire time in '{cmd}' command"));
    if ttl <= 0 {
        return Err(invalid());
    }
    ctx.ks.now_ms.checked_add(ttl).ok_or_else(invalid)
}

fn is_holder(h: &Held, owner: &[u8]) -> bool {
    h.owner.as_slice() == owner
}

/// Puts the counter back to at least the held token if someone deleted or lowered it (a
/// counter that is not an integer is left for ACQUIRE to report).
fn keep_counter(ctx: &mut Ctx, key: &[u8], token: i64) -> CmdResult {
    let fence = fence_key(key);
    if matches!(last_token(ctx, &fence), Ok(last) if last < token) {
        ctx.apply(&[&b"SET"[..], &fence, itoa::Buffer::new().format(token).as_bytes()])?;
    }
    Ok(())
}

/// Moves the lease's end to `until` (nothing to do, and nothing recorded, if it is there).
fn set_lease(ctx: &mut Ctx, key: &[u8], h: &Held, until: i64) -> CmdResult {
    if h.expire_at != until {
        ctx.apply(&[&b"PEXPIREAT"[..], key, itoa::Buffer::new().format(until).as_bytes()])?;
    }
    Ok(())
}

/// LOCK.ACQUIRE key owner ttl_ms
fn acquire(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (key, owner) = (&argv[1], &argv[2]);
    let until = lease_end(ctx, &argv[3], "lock.acquire")?;
    match read_lock(ctx, key, true)? {
        Some(h) if is_holder(&h, owner) => {
            keep_counter(ctx, key, h.token)?;
            set_lease(ctx, key, &h, until)?;
            ctx.out.int(h.token);
        }
        Some(_) => ctx.out.null(),
        None => {
            let fence = fence_key(key);
            // Every check comes before the first write: a refused call changes nothing.
            let token = last_token(ctx, &fence)?.max(0).checked_add(1).ok_or(err::OVERFLOW)?;
            let mut b = itoa::Buffer::new();
            let token_s = b.format(token).as_bytes().to_vec();
            ctx.apply(&[&b"SET"[..], &fence, &token_s])?;
            ctx.apply(&[&b"HSET"[..], key, b"owner", owner, b"token", &token_s])?;
            ctx.apply(&[&b"PEXPIREAT"[..], key, b.format(until).as_bytes()])?;
            ctx.out.int(token);
        }
    }
    Ok(())
}

/// LOCK.RELEASE key owner
fn release(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (key, owner) = (&argv[1], &argv[2]);
    match read_lock(ctx, key, true)? {
        Some(h) if is_holder(&h, owner) => {
            keep_counter(ctx, key, h.token)?;
            ctx.apply(&[&b"DEL"[..], key])?;
            ctx.out.int(1);
        }
        _ => ctx.out.int(0),
    }
    Ok(())
}

/// LOCK.EXTEND key owner ttl_ms
fn extend(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (key, owner) = (&argv[1], &argv[2]);
    let until = lease_end(ctx, &argv[3], "lock.extend")?;
    match read_lock(ctx, key, true)? {
        Some(h) if is_holder(&h, owner) => {
            keep_counter(ctx, key, h.token)?;
            set_lease(ctx, key, &h, until)?;
            ctx.out.int(1);
        }
        _ => ctx.out.int(0),
    }
    Ok(())
}

/// LOCK.INFO key
fn info(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match read_lock(ctx, &argv[1], false)? {
        None => ctx.out.null(),
        Some(h) => {
            ctx.out.map(3);
            ctx.out.bulk(b"owner");
            ctx.out.bulk(&h.owner);
            ctx.out.bulk(b"token");
            ctx.out.int(h.token);
            ctx.out.bulk(b"ttl_ms");
            ctx.out.int(if h.expire_at == 0 { -1 } else { h.expire_at - ctx.ks.now_ms });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cmd::limits::tests::assert_converges;
    use crate::cmd::lists::tests::{run, setup};
    use crate::keyspace::Keyspace;

    const T0: i64 = 1_700_000_000_000;

    fn at(ks: &mut Keyspace, srv: &crate::shared::Shared, t: i64, line: &[&[u8]]) -> String {
        ks.now_ms = T0 + t;
        run(ks, srv, line)
    }

    #[test]
    fn lifecycle_and_tokens() {
        let (mut ks, srv) = setup();
        let mut replica = Keyspace::new(1);
        let ks = &mut ks;
        assert_eq!(at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"job", b"alice", b"1000"]), ":1\r\n");
        assert_eq!(at(ks, &srv, 10, &[b"LOCK.ACQUIRE", b"job", b"bob", b"1000"]), "$-1\r\n");
        // Re-acquire: the same token, the lease renewed from now.
        assert_eq!(at(ks, &srv, 500, &[b"LOCK.ACQUIRE", b"job", b"alice", b"1000"]), ":1\r\n");
        assert_eq!(ks.expire_at(0, b"job"), Some(T0 + 1500));
        assert_eq!(
            at(ks, &srv, 600, &[b"LOCK.INFO", b"job"]),
            "*6\r\n$5\r\nowner\r\n$5\r\nalice\r\n$5\r\ntoken\r\n:1\r\n$6\r\nttl_ms\r\n:900\r\n"
        );
        assert_eq!(at(ks, &srv, 700, &[b"LOCK.EXTEND", b"job", b"bob", b"5000"]), ":0\r\n");
        assert_eq!(at(ks, &srv, 700, &[b"LOCK.EXTEND", b"job", b"alice", b"5000"]), ":1\r\n");
        assert_eq!(ks.expire_at(0, b"job"), Some(T0 + 5700));
        assert_eq!(at(ks, &srv, 800, &[b"LOCK.RELEASE", b"job", b"bob"]), ":0\r\n");
        assert_eq!(at(ks, &srv, 800, &[b"LOCK.RELEASE", b"job", b"alice"]), ":1\r\n");
        assert_eq!(at(ks, &srv, 800, &[b"LOCK.RELEASE", b"job", b"alice"]), ":0\r\n");
        assert_eq!(at(ks, &srv, 800, &[b"LOCK.INFO", b"job"]), "$-1\r\n");
        assert_eq!(at(ks, &srv, 900, &[b"LOCK.ACQUIRE", b"job", b"bob", b"100"]), ":2\r\n");
        assert_converges(ks, &mut replica, &srv);
        // The lease runs out; the next holder's token is larger.
        assert_eq!(at(ks, &srv, 1000, &[b"LOCK.INFO", b"job"]), "$-1\r\n");
        assert_eq!(at(ks, &srv, 1000, &[b"LOCK.EXTEND", b"job", b"bob", b"100"]), ":0\r\n");
        assert_eq!(at(ks, &srv, 1001, &[b"LOCK.ACQUIRE", b"job", b"carol", b"100"]), ":3\r\n");
        // DEL of the lock frees it but does not reset tokens.
        at(ks, &srv, 1002, &[b"DEL", b"job"]);
        assert_eq!(at(ks, &srv, 1003, &[b"LOCK.ACQUIRE", b"job", b"dave", b"100"]), ":4\r\n");
        // A deleted counter is put back by the holder's next call...
        at(ks, &srv, 1004, &[b"DEL", b"job:fence"]);
        assert_eq!(at(ks, &srv, 1005, &[b"LOCK.EXTEND", b"job", b"dave", b"100"]), ":1\r\n");
        assert_eq!(at(ks, &srv, 1005, &[b"GET", b"job:fence"]), "$1\r\n4\r\n");
        assert_eq!(at(ks, &srv, 1006, &[b"LOCK.RELEASE", b"job", b"dave"]), ":1\r\n");
        assert_eq!(at(ks, &srv, 1007, &[b"LOCK.ACQUIRE", b"job", b"erin", b"100"]), ":5\r\n");
        // ...but one deleted while the lock is free is gone (documented).
        at(ks, &srv, 1008, &[b"LOCK.RELEASE", b"job", b"erin"]);
        at(ks, &srv, 1008, &[b"DEL", b"job:fence"]);
        assert_eq!(at(ks, &srv, 1009, &[b"LOCK.ACQUIRE", b"job", b"erin", b"100"]), ":1\r\n");
        assert_converges(ks, &mut replica, &srv);
        // The layout, as redis-cli sees it.
        assert_eq!(at(ks, &srv, 1010, &[b"TYPE", b"job"]), "+hash\r\n");
        assert_eq!(at(ks, &srv, 1010, &[b"TYPE", b"job:fence"]), "+string\r\n");
        assert_eq!(at(ks, &srv, 1010, &[b"PTTL", b"job:fence"]), ":-1\r\n");
        assert_eq!(at(ks, &srv, 1010, &[b"PTTL", b"job"]), ":99\r\n");
    }

    #[test]
    fn calls_that_change_nothing_record_nothing() {
        let (mut ks, srv) = setup();
        let ks = &mut ks;
        at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"l", b"a", b"1000"]);
        ks.effects = Some(Vec::new());
        at(ks, &srv, 1, &[b"LOCK.ACQUIRE", b"l", b"b", b"1000"]);
        at(ks, &srv, 1, &[b"LOCK.EXTEND", b"l", b"b", b"1000"]);
        at(ks, &srv, 1, &[b"LOCK.RELEASE", b"l", b"b"]);
        at(ks, &srv, 1, &[b"LOCK.INFO", b"l"]);
        at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"l", b"a", b"1000"]); // same lease end
        assert_eq!(ks.effects.as_ref().unwrap(), &Vec::new());
    }

    #[test]
    fn errors() {
        let (mut ks, srv) = setup();
        let ks = &mut ks;
        let bad = "-ERR invalid expire time in 'lock.acquire' command";
        assert_eq!(at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"l", b"a", b"0"]), bad);
        assert_eq!(at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"l", b"a", b"-5"]), bad);
        assert_eq!(at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"l", b"a", b"9223372036854775807"]), bad);
        assert_eq!(
            at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"l", b"a", b"1.5"]),
            "-ERR value is not an integer or out of range"
        );
        assert_eq!(
            at(ks, &srv, 0, &[b"LOCK.EXTEND", b"l", b"a", b"0"]),
            "-ERR invalid expire time in 'lock.extend' command"
        );
        at(ks, &srv, 0, &[b"SET", b"s", b"x"]);
        let wrongtype = "-WRONGTYPE Operation against a key holding the wrong kind of value";
        for line in [
            &[&b"LOCK.ACQUIRE"[..], b"s", b"a", b"10"][..],
            &[b"LOCK.RELEASE", b"s", b"a"],
            &[b"LOCK.EXTEND", b"s", b"a", b"10"],
            &[b"LOCK.INFO", b"s"],
        ] {
            assert_eq!(at(ks, &srv, 0, line), wrongtype, "{line:?}");
        }
        // A hash that is not a lock.
        at(ks, &srv, 0, &[b"HSET", b"h", b"owner", b"a"]);
        assert_eq!(at(ks, &srv, 0, &[b"LOCK.INFO", b"h"]), wrongtype);
        // A counter of the wrong type or at its end: refused, and nothing written.
        at(ks, &srv, 0, &[b"RPUSH", b"c:fence", b"x"]);
        assert_eq!(at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"c", b"a", b"10"]), wrongtype);
        at(ks, &srv, 0, &[b"SET", b"d:fence", b"9223372036854775807"]);
        assert_eq!(
            at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"d", b"a", b"10"]),
            "-ERR increment or decrement would overflow"
        );
        at(ks, &srv, 0, &[b"SET", b"e:fence", b"abc"]);
        assert_eq!(
            at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"e", b"a", b"10"]),
            "-ERR value is not an integer or out of range"
        );
        assert!(!ks.exists_logically(0, b"c") && !ks.exists_logically(0, b"d") && !ks.exists_logically(0, b"e"));
        // A negative counter (written by hand) restarts at 1.
        at(ks, &srv, 0, &[b"SET", b"f:fence", b"-7"]);
        assert_eq!(at(ks, &srv, 0, &[b"LOCK.ACQUIRE", b"f", b"a", b"10"]), ":1\r\n");
    }
}
