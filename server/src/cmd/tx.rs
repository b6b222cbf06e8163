//! Transactions: MULTI EXEC DISCARD WATCH UNWATCH (Redis's `multi.c`).
//!
//! Queued commands run inside EXEC under the keyspace lock the connection already holds, so
//! nothing can interleave with them. WATCH registers the connection on each key; any change
//! to such a key (including expiry, FLUSHDB and SWAPDB) marks the connection dirty, and a
//! watched key that expires between WATCH and EXEC also aborts the transaction.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::args;
use super::flags::*;
use super::{BlockMode, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::Blob;

pub const COMMANDS: &[Spec] = &[
    Spec::new("multi", 1, NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY, (0, 0, 0), "transactions", multi),
    Spec::new("exec", 1, NOSCRIPT | LOADING | STALE | SKIP_SLOWLOG, (0, 0, 0), "transactions", exec),
    Spec::new("discard", 1, NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY, (0, 0, 0), "transactions", discard),
    Spec::new("watch", -2, NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY, (1, -1, 1), "transactions", watch),
    Spec::new("unwatch", 1, NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY, (0, 0, 0), "transactions", unwatch),
];

fn multi(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    let c = ctx.conn()?;
    if c.multi.is_some() {
        return Err(CmdError::Static("ERR MULTI calls can not be nested"));
    }
    c.multi = Some(Vec::new());
    c.multi_error = false;
    c.info.in_multi.store(true, Ordering::Relaxed);
    ctx.out.ok();
    Ok(())
}

fn end_multi(ctx: &mut Ctx) -> Result<Vec<Vec<Bytes>>, CmdError> {
    let conn = ctx.conn.as_deref_mut().ok_or(CmdError::Static("ERR command not allowed here"))?;
    let q = conn.multi.take().unwrap_or_default();
    conn.multi_error = false;
    conn.info.in_multi.store(false, Ordering::Relaxed);
    conn.unwatch(ctx.ks);
    Ok(q)
}

fn exec(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    let conn = ctx.conn()?;
    if conn.multi.is_none() {
        return Err(CmdError::Static("ERR EXEC without MULTI"));
    }
    let aborted = conn.multi_error;
    let id = conn.id;
    let now = ctx.ks.now_ms;
    let conn = ctx.conn.as_deref_mut().expect("checked");
    let expired = conn.watched.iter().any(|(_, _, at)| at.is_some_and(|t| t != 0 && t <= now));
    let dirty = ctx.ks.dirty_watchers.contains(&id) || expired;
    let queue = end_multi(ctx)?;
    if aborted {
        return Err(CmdError::Static("EXECABORT Transaction discarded because of previous errors."));
    }
    if dirty {
        ctx.out.null_array();
        return Ok(());
    }
    run_queue(ctx, queue)
}

/// Runs a transaction's queued commands as one atomic step: EXEC's reply array. Also what a
/// leader runs for a transaction a follower forwarded (see [`forwarded`]).
pub fn run_queue(ctx: &mut Ctx, queue: Vec<Vec<Bytes>>) -> CmdResult {
    let now = ctx.ks.now_ms;
    // Memory may have run out since the commands were queued.
    let grows = queue.iter().any(|a| super::lookup(&a[0]).is_some_and(|s| s.flags & DENYOOM != 0));
    if grows {
        if let Err(e) = crate::conn::oom_check(ctx.srv, ctx.ks) {
            return Err(CmdError::Owned(format!(
                "EXECABORT Transaction discarded because of: {}",
                e.text().trim_start_matches('-')
            )));
        }
    }
    ctx.out.array(queue.len());
    for argv in queue {
        let spec = super::lookup(&argv[0]).expect("validated when queued");
        let mut sub = Ctx {
            ks: &mut *ctx.ks,
            srv: ctx.srv,
            out: &mut *ctx.out,
            db: ctx.db,
            client_id: ctx.client_id,
            conn: ctx.conn.as_deref_mut(),
            block_mode: BlockMode::Never,
            block: None,
            in_multi: true,
        };
        crate::conn::call(&mut sub, spec, &argv);
        ctx.db = sub.db;
        // Commands inside EXEC see one fixed time, like one atomic operation.
        ctx.ks.now_ms = now;
    }
    Ok(())
}

/// The first argument of a transaction a follower forwards to the leader: the queue
/// travels as one forwarded write (so it runs once, atomically, and replicates as one
/// entry), each command as its length then its arguments.
pub const FORWARDED_EXEC: &[u8] = b"\0exec";

/// A queue as the arguments of a forwarded transaction.
pub fn encode_forwarded(queue: &[Vec<Bytes>]) -> Vec<Bytes> {
    let mut argv = vec![Bytes::from_static(FORWARDED_EXEC)];
    for cmd in queue {
        argv.push(Bytes::from(cmd.len().to_string()));
        argv.extend(cmd.iter().cloned());
    }
    argv
}

/// Runs a forwarded transaction on the leader (`argv` as [`encode_forwarded`] made it).
pub fn forwarded(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let mut queue = Vec::new();
    let mut rest = &argv[1..];
    while let Some((n, tail)) = rest.split_first() {
        let n = args::s(n).parse::<usize>().ok().filter(|&n| n >= 1 && n <= tail.len());
        let Some(n) = n else { return Err(CmdError::Static("ERR malformed forwarded transaction")) };
        let cmd = tail[..n].to_vec();
        match super::lookup(&cmd[0]) {
            Some(spec) if spec.arity_ok(cmd.len()) => {}
            _ => return Err(CmdError::Static("ERR malformed forwarded transaction")),
        }
        queue.push(cmd);
        rest = &tail[n..];
    }
    run_queue(ctx, queue)
}

fn discard(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    if ctx.conn()?.multi.is_none() {
        return Err(CmdError::Static("ERR DISCARD without MULTI"));
    }
    end_multi(ctx)?;
    ctx.out.ok();
    Ok(())
}

fn watch(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if ctx.conn()?.multi.is_some() {
        return Err(CmdError::Static("ERR WATCH inside MULTI is not allowed"));
    }
    let db = ctx.db;
    for k in &argv[1..] {
        let at = ctx.ks.peek(db, k).map(|e| e.expire_at);
        let conn = ctx.conn.as_deref_mut().expect("checked");
        if conn.watched.iter().any(|(d, key, _)| *d == db && key.as_slice() == k.as_ref()) {
            continue;
        }
        conn.watched.push((db, Blob::new(k), at));
        ctx.ks.watched.entry((db, Blob::new(k))).or_default().push(conn.id);
    }
    ctx.out.ok();
    Ok(())
}

fn unwatch(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    let conn = ctx.conn.as_deref_mut().ok_or(CmdError::Static("ERR command not allowed here"))?;
    conn.unwatch(ctx.ks);
    ctx.out.ok();
    Ok(())
}
