//! Pub/sub: SUBSCRIBE UNSUBSCRIBE PSUBSCRIBE PUNSUBSCRIBE PUBLISH PUBSUB.
//!
//! Subscriptions live in `Shared::pubsub`; messages reach a subscriber's connection as
//! `Push::Message` through its channel, bounded by the pub/sub output buffer limits. In RESP2
//! a subscribed connection may only run the subscribe family, PING, QUIT and RESET (checked
//! in `conn`); in RESP3 messages are push frames and any command may run.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::args::{self, glob_match, is};
use super::flags::*;
use super::keys::help;
use super::{err, CmdResult, Ctx, Spec};
use crate::conn::Conn;
use crate::shared::Shared;

pub const COMMANDS: &[Spec] = &[
    Spec::new("subscribe", -2, PUBSUB | NOSCRIPT | LOADING | STALE, (0, 0, 0), "pubsub", subscribe),
    Spec::new("unsubscribe", -1, PUBSUB | NOSCRIPT | LOADING | STALE, (0, 0, 0), "pubsub", unsubscribe),
    Spec::new("psubscribe", -2, PUBSUB | NOSCRIPT | LOADING | STALE, (0, 0, 0), "pubsub", psubscribe),
    Spec::new("punsubscribe", -1, PUBSUB | NOSCRIPT | LOADING | STALE, (0, 0, 0), "pubsub", punsubscribe),
    Spec::new("publish", 3, PUBSUB | LOADING | STALE | FAST, (0, 0, 0), "pubsub", publish),
    Spec::new("pubsub", -2, 0, (0, 0, 0), "pubsub", pubsub).with_subcommands(&[
        Spec::new("pubsub|channels", -2, PUBSUB | LOADING | STALE, (0, 0, 0), "pubsub", super::container_only),
        Spec::new("pubsub|numsub", -2, PUBSUB | LOADING | STALE, (0, 0, 0), "pubsub", super::container_only),
        Spec::new("pubsub|numpat", 2, PUBSUB | LOADING | STALE, (0, 0, 0), "pubsub", super::container_only),
        Spec::new("pubsub|shardchannels", -2, PUBSUB | LOADING | STALE, (0, 0, 0), "pubsub", super::container_only),
        Spec::new("pubsub|shardnumsub", -2, PUBSUB | LOADING | STALE, (0, 0, 0), "pubsub", super::container_only),
        Spec::new("pubsub|help", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only),
    ]),
];

/// Writes one subscribe-family confirmation: [kind, channel|nil, count].
fn confirm(ctx: &mut Ctx, kind: &[u8], channel: Option<&[u8]>, count: usize) {
    ctx.out.push(3);
    ctx.out.bulk(kind);
    match channel {
        Some(c) => ctx.out.bulk(c),
        None => ctx.out.null(),
    }
    ctx.out.int(count as i64);
}

fn count(c: &Conn) -> usize {
    c.subs.len() + c.psubs.len()
}

fn sync_flags(c: &Conn) {
    c.info.subs.store(c.subs.len(), Ordering::Relaxed);
    c.info.psubs.store(c.psubs.len(), Ordering::Relaxed);
    c.info.is_pubsub.store(c.in_subscribe_mode(), Ordering::Relaxed);
}

fn subscribe(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if ctx.in_multi {
        return Err(super::CmdError::Static("ERR Command not allowed inside a transaction"));
    }
    let srv = ctx.srv;
    for ch in &argv[1..] {
        let conn = ctx.conn()?;
        let ch = Bytes::copy_from_slice(ch);
        if conn.subs.insert(ch.clone()) {
            srv.pubsub.channels.entry(ch.clone()).or_default().insert(conn.id, conn.info.clone());
        }
        let n = count(conn);
        sync_flags(conn);
        confirm(ctx, b"subscribe", Some(&ch), n);
    }
    Ok(())
}

fn remove_channel(srv: &Shared, conn: &mut Conn, ch: &[u8]) -> bool {
    if !conn.subs.remove(ch) {
        return false;
    }
    if let Some(mut m) = srv.pubsub.channels.get_mut(ch) {
        m.remove(&conn.id);
    }
    srv.pubsub.channels.remove_if(ch, |_, m| m.is_empty());
    true
}

fn unsubscribe(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let srv = ctx.srv;
    let chans: Vec<Bytes> =
        if argv.len() > 1 { argv[1..].to_vec() } else { ctx.conn()?.subs.iter().cloned().collect() };
    if chans.is_empty() {
        let n = count(ctx.conn()?);
        confirm(ctx, b"unsubscribe", None, n);
        return Ok(());
    }
    for ch in chans {
        let conn = ctx.conn()?;
        remove_channel(srv, conn, &ch);
        let n = count(conn);
        sync_flags(conn);
        confirm(ctx, b"unsubscribe", Some(&ch), n);
    }
    Ok(())
}

fn psubscribe(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if ctx.in_multi {
        return Err(super::CmdError::Static("ERR Command not allowed inside a transaction"));
    }
    let srv = ctx.srv;
    for p in &argv[1..] {
        let conn = ctx.conn()?;
        let p = Bytes::copy_from_slice(p);
        if conn.psubs.insert(p.clone()) {
            srv.pubsub.patterns.write().push((p.clone(), conn.info.clone()));
        }
        let n = count(conn);
        sync_flags(conn);
        confirm(ctx, b"psubscribe", Some(&p), n);
    }
    Ok(())
}

fn remove_pattern(srv: &Shared, conn: &mut Conn, p: &[u8]) -> bool {
    if !conn.psubs.remove(p) {
        return false;
    }
    let id = conn.id;
    srv.pubsub.patterns.write().retain(|(q, c)| !(c.id == id && q.as_ref() == p));
    true
}

fn punsubscribe(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let srv = ctx.srv;
    let pats: Vec<Bytes> =
        if argv.len() > 1 { argv[1..].to_vec() } else { ctx.conn()?.psubs.iter().cloned().collect() };
    if pats.is_empty() {
        let n = count(ctx.conn()?);
        confirm(ctx, b"punsubscribe", None, n);
        return Ok(());
    }
    for p in pats {
        let conn = ctx.conn()?;
        remove_pattern(srv, conn, &p);
        let n = count(conn);
        sync_flags(conn);
        confirm(ctx, b"punsubscribe", Some(&p), n);
    }
    Ok(())
}

/// Drops every subscription of a connection (RESET, disconnect).
pub fn unsubscribe_all(srv: &Shared, conn: &mut Conn) {
    let chans: Vec<Bytes> = conn.subs.iter().cloned().collect();
    for ch in chans {
        remove_channel(srv, conn, &ch);
    }
    let pats: Vec<Bytes> = conn.psubs.iter().cloned().collect();
    for p in pats {
        remove_pattern(srv, conn, &p);
    }
    sync_flags(conn);
}

/// How old a replicated PUBLISH may be and still reach this node's subscribers: a member
/// catching up on a long stretch of log does not replay old chatter to them.
const STALE_PUBLISH_MS: i64 = 5_000;

fn publish(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    // In a cluster a message reaches the subscribers of every member, as in Redis Cluster:
    // the leader puts it in the log (followers forward PUBLISH to it) and each member
    // delivers it to its own clients when applying. The reply counts this node's receivers,
    // as Redis Cluster's does. A single node logs nothing: pub/sub is not data.
    if ctx.srv.repl.get().is_some_and(|r| r.clustered) {
        if ctx.ks.recording() {
            ctx.propagate(argv);
        } else if ctx.conn.is_none() && crate::keyspace::now_ms() - ctx.ks.now_ms > STALE_PUBLISH_MS {
            ctx.out.int(0);
            return Ok(());
        }
    }
    let me = ctx.conn.as_ref().map(|c| c.id);
    let (n, mine) = ctx.srv.publish_except(&argv[1], &argv[2], me);
    for pattern in mine {
        match pattern {
            Some(p) => {
                ctx.out.push(4);
                ctx.out.bulk(b"pmessage");
                ctx.out.bulk(&p);
            }
            None => {
                ctx.out.push(3);
                ctx.out.bulk(b"message");
            }
        }
        ctx.out.bulk(&argv[1]);
        ctx.out.bulk(&argv[2]);
    }
    ctx.out.int(n as i64);
    Ok(())
}

const PUBSUB_HELP: &[&str] = &[
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
];

fn pubsub(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let n = argv.len();
    if is(sub, "help") && n == 2 {
        help(ctx, PUBSUB_HELP);
    } else if is(sub, "channels") && n <= 3 {
        let pat = argv.get(2);
        let chans: Vec<Bytes> = ctx
            .srv
            .pubsub
            .channels
            .iter()
            .filter(|e| !e.value().is_empty() && pat.is_none_or(|p| glob_match(p, e.key(), false)))
            .map(|e| e.key().clone())
            .collect();
        ctx.out.bulks(chans.iter());
    } else if is(sub, "numsub") {
        // Redis replies a flat array here, in RESP3 too.
        ctx.out.array(2 * (n - 2));
        for ch in &argv[2..] {
            let c = ctx.srv.pubsub.channels.get(ch).map_or(0, |m| m.len());
            ctx.out.bulk(ch);
            ctx.out.int(c as i64);
        }
    } else if is(sub, "numpat") && n == 2 {
        let pats = ctx.srv.pubsub.patterns.read();
        let distinct: std::collections::HashSet<&Bytes> = pats.iter().map(|(p, _)| p).collect();
        let c = distinct.len();
        drop(pats);
        ctx.out.int(c as i64);
    } else if is(sub, "shardchannels") && n <= 3 {
        ctx.out.array(0);
    } else if is(sub, "shardnumsub") {
        ctx.out.array(2 * (n - 2));
        for ch in &argv[2..] {
            ctx.out.bulk(ch);
            ctx.out.int(0);
        }
    } else {
        return Err(err::unknown_subcommand(&args::s(&argv[0]), sub));
    }
    Ok(())
}
