//! Connection commands: PING ECHO QUIT RESET HELLO AUTH SELECT CLIENT READONLY READWRITE.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::args::{self, is};
use super::flags::*;
use super::keys::help;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::conn::ReplyMode;
use crate::shared::{ClientInfo, Push};

pub const COMMANDS: &[Spec] = &[
    Spec::new("ping", -1, FAST, (0, 0, 0), "connection", ping),
    Spec::new("echo", 2, LOADING | STALE | FAST, (0, 0, 0), "connection", echo),
    Spec::new("quit", -1, ALLOW_BUSY | NOSCRIPT | NO_AUTH | LOADING | STALE | FAST, (0, 0, 0), "connection", quit),
    Spec::new("reset", 1, NOSCRIPT | LOADING | STALE | NO_AUTH | FAST | ALLOW_BUSY, (0, 0, 0), "connection", reset),
    Spec::new("hello", -1, NOSCRIPT | LOADING | STALE | NO_AUTH | FAST | ALLOW_BUSY, (0, 0, 0), "connection", hello),
    Spec::new("auth", -2, NOSCRIPT | LOADING | STALE | FAST | NO_AUTH | ALLOW_BUSY, (0, 0, 0), "connection", auth),
    Spec::new("select", 2, LOADING | STALE | FAST, (0, 0, 0), "connection", select),
    Spec::new("readonly", 1, LOADING | STALE | FAST, (0, 0, 0), "connection", readonly),
    Spec::new("readwrite", 1, LOADING | STALE | FAST, (0, 0, 0), "connection", readwrite),
    Spec::new("client", -2, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", client).with_subcommands(&[
        Spec::new("client|id", 2, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new("client|setname", 3, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new("client|getname", 2, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new("client|setinfo", 4, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new(
            "client|list",
            -2,
            ADMIN | NOSCRIPT | LOADING | STALE,
            (0, 0, 0),
            "connection",
            super::container_only,
        ),
        Spec::new("client|info", 2, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new(
            "client|kill",
            -3,
            ADMIN | NOSCRIPT | LOADING | STALE,
            (0, 0, 0),
            "connection",
            super::container_only,
        ),
        Spec::new(
            "client|pause",
            -3,
            ADMIN | NOSCRIPT | LOADING | STALE,
            (0, 0, 0),
            "connection",
            super::container_only,
        ),
        Spec::new(
            "client|unpause",
            2,
            ADMIN | NOSCRIPT | LOADING | STALE,
            (0, 0, 0),
            "connection",
            super::container_only,
        ),
        Spec::new("client|reply", 3, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new(
            "client|no-evict",
            3,
            ADMIN | NOSCRIPT | LOADING | STALE,
            (0, 0, 0),
            "connection",
            super::container_only,
        ),
        Spec::new("client|no-touch", 3, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new(
            "client|unblock",
            -3,
            ADMIN | NOSCRIPT | LOADING | STALE,
            (0, 0, 0),
            "connection",
            super::container_only,
        ),
        Spec::new("client|getredir", 2, NOSCRIPT | LOADING | STALE, (0, 0, 0), "connection", super::container_only),
        Spec::new("client|help", 2, LOADING | STALE, (0, 0, 0), "connection", super::container_only),
    ]),
];

fn ping(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if argv.len() > 2 {
        return Err(err::wrong_args("ping"));
    }
    let subscribed = ctx.conn.as_ref().is_some_and(|c| c.in_subscribe_mode() && !c.resp3);
    if subscribed {
        // In RESP2 subscribe mode a PING answers in the message format.
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out.bulk(argv.get(1).map_or(&b""[..], |m| m));
    } else if let Some(m) = argv.get(1) {
        ctx.out.bulk(m);
    } else {
        ctx.out.simple("PONG");
    }
    Ok(())
}

fn echo(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    ctx.out.bulk(&argv[1]);
    Ok(())
}

fn quit(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    ctx.out.ok();
    ctx.conn()?.close = true;
    Ok(())
}

fn reset(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    let srv = ctx.srv;
    let needs_auth = srv.config.read().requirepass.is_some();
    let conn = ctx.conn.as_deref_mut().ok_or(CmdError::Static("ERR command not allowed here"))?;
    let id = conn.id;
    conn.unwatch(ctx.ks);
    conn.multi = None;
    conn.multi_error = false;
    conn.stale_reads = false;
    super::pubsub::unsubscribe_all(srv, conn);
    conn.reply_mode = ReplyMode::On;
    conn.resp3 = false;
    conn.info.resp.store(2, Ordering::Relaxed);
    conn.no_touch = false;
    conn.info.no_evict.store(false, Ordering::Relaxed);
    conn.info.in_multi.store(false, Ordering::Relaxed);
    *conn.info.name.lock() = None;
    if needs_auth {
        conn.authenticated = false;
    }
    if conn.monitor {
        conn.monitor = false;
        if srv.monitors.remove(&id).is_some() {
            srv.monitor_count.fetch_sub(1, Ordering::Relaxed);
        }
    }
    ctx.db = 0;
    ctx.out.set_resp3(false);
    ctx.out.simple("RESET");
    Ok(())
}

/// Checks a password for the default user.
fn check_password(ctx: &Ctx, user: Option<&[u8]>, pass: &[u8]) -> Result<(), CmdError> {
    let required = ctx.srv.config.read().requirepass.clone();
    let wrong = CmdError::Static("WRONGPASS invalid username-password pair or user is disabled.");
    if user.is_some_and(|u| u != b"default") {
        return Err(wrong);
    }
    match required {
        // With no password configured, the default user accepts any password (Redis's
        // "nopass" default user) when a username is given, but plain AUTH <pass> is refused.
        None => Ok(()),
        Some(p) if p.as_bytes() == pass => Ok(()),
        Some(_) => Err(wrong),
    }
}

fn auth(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if argv.len() > 3 {
        return Err(err::SYNTAX);
    }
    let (user, pass) = if argv.len() == 3 { (Some(&argv[1][..]), &argv[2]) } else { (None, &argv[1]) };
    if user.is_none() && ctx.srv.config.read().requirepass.is_none() {
        return Err(CmdError::Static(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    }
    check_password(ctx, user, pass)?;
    ctx.conn()?.authenticated = true;
    ctx.out.ok();
    Ok(())
}

fn hello(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let mut proto = None;
    let mut i = 1;
    if argv.len() > 1 {
        let v = args::int(&argv[1])
            .map_err(|_| CmdError::Static("ERR Protocol version is not an integer or out of range"))?;
        if !(2..=3).contains(&v) {
            return Err(CmdError::Static("NOPROTO unsupported protocol version"));
        }
        proto = Some(v);
        i = 2;
    }
    let mut name = None;
    let mut authed = false;
    while i < argv.len() {
        let more = argv.len() - i - 1;
        if is(&argv[i], "auth") && more >= 2 {
            check_password(ctx, Some(&argv[i + 1]), &argv[i + 2])?;
            authed = true;
            i += 3;
        } else if is(&argv[i], "setname") && more >= 1 {
            validate_name(&argv[i + 1])?;
            name = Some(args::s(&argv[i + 1]));
            i += 2;
        } else {
            return Err(CmdError::Owned(format!("ERR Syntax error in HELLO option '{}'", args::s(&argv[i]))));
        }
    }
    let conn = ctx.conn.as_deref_mut().ok_or(CmdError::Static("ERR command not allowed here"))?;
    if authed {
        conn.authenticated = true;
    }
    if !conn.authenticated {
        return Err(CmdError::Static("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    if let Some(n) = name {
        *conn.info.name.lock() = if n.is_empty() { None } else { Some(n) };
    }
    if let Some(p) = proto {
        conn.resp3 = p == 3;
        conn.info.resp.store(p as usize, Ordering::Relaxed);
    }
    let resp3 = conn.resp3;
    let id = conn.id;
    ctx.out.set_resp3(resp3);
    ctx.out.map(7);
    ctx.out.bulk(b"server");
    ctx.out.bulk(b"redis");
    ctx.out.bulk(b"version");
    ctx.out.bulk(crate::cmd::server::REDIS_VERSION.as_bytes());
    ctx.out.bulk(b"proto");
    ctx.out.int(if resp3 { 3 } else { 2 });
    ctx.out.bulk(b"id");
    ctx.out.int(id as i64);
    ctx.out.bulk(b"mode");
    ctx.out.bulk(b"standalone");
    ctx.out.bulk(b"role");
    ctx.out.bulk(b"master");
    ctx.out.bulk(b"modules");
    ctx.out.array(0);
    Ok(())
}

fn select(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let n = args::int(&argv[1])?;
    if n < 0 || n as usize >= ctx.ks.dbs.len() {
        return Err(err::DB_INDEX);
    }
    ctx.db = n as usize;
    if let Some(c) = ctx.conn.as_deref_mut() {
        c.info.db.store(n as usize, Ordering::Relaxed);
    }
    ctx.out.ok();
    Ok(())
}

/// READONLY/READWRITE: on a cluster follower, READONLY serves reads from the local state
/// (as Redis Cluster replicas do) instead of the leader; a single node or the leader
/// always serves its own data.
fn readonly(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    if let Some(c) = ctx.conn.as_deref_mut() {
        c.stale_reads = true;
    }
    ctx.out.ok();
    Ok(())
}

fn readwrite(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    if let Some(c) = ctx.conn.as_deref_mut() {
        c.stale_reads = false;
    }
    ctx.out.ok();
    Ok(())
}

fn validate_name(n: &[u8]) -> CmdResult {
    if n.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(CmdError::Static("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "    * ID <client-id>",
    "      Kill connections by client id.",
    "    * MAXAGE <maxage>",
    "      Kill connections older than the specified age.",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
    "HELP",
    "    Prints this help.",
];

/// One CLIENT LIST line (without the trailing newline).
pub fn client_line(c: &ClientInfo, now_ms: i64) -> String {
    let age = c.created.elapsed().as_secs();
    let idle = ((now_ms - c.last_interaction_ms.load(Ordering::Relaxed)).max(0) / 1000) as u64;
    let mut flags = String::new();
    if c.is_monitor.load(Ordering::Relaxed) {
        flags.push('O');
    }
    if c.is_pubsub.load(Ordering::Relaxed) {
        flags.push('P');
    }
    if c.in_multi.load(Ordering::Relaxed) {
        flags.push('x');
    }
    if c.blocked.load(Ordering::Relaxed) {
        flags.push('b');
    }
    if c.no_evict.load(Ordering::Relaxed) {
        flags.push('e');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let cmd = match crate::cmd::all_specs().get(c.last_cmd.load(Ordering::Relaxed) as usize) {
        Some(spec) => spec.name,
        None => "NULL",
    };
    format!(
        "id={} addr={} laddr={} fd=8 name={} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi={} qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=0 obl=0 oll=0 omem={} tot-mem=0 events=r cmd={} user=default redir=-1 resp={}",
        c.id,
        c.addr,
        c.laddr,
        c.name.lock().clone().unwrap_or_default(),
        age,
        idle,
        flags,
        c.db.load(Ordering::Relaxed),
        c.subs.load(Ordering::Relaxed),
        c.psubs.load(Ordering::Relaxed),
        if c.in_multi.load(Ordering::Relaxed) { 0 } else { -1 },
        c.qbuf.load(Ordering::Relaxed),
        c.queued.load(Ordering::Relaxed),
        cmd,
        c.resp.load(Ordering::Relaxed),
    )
}

fn client_type(c: &ClientInfo) -> &'static str {
    if c.is_pubsub.load(Ordering::Relaxed) {
        "pubsub"
    } else {
        "normal"
    }
}

fn parse_type(a: &[u8]) -> Result<&'static str, CmdError> {
    let t = args::s(a).to_ascii_lowercase();
    match t.as_str() {
        "normal" => Ok("normal"),
        "pubsub" => Ok("pubsub"),
        "master" => Ok("master"),
        "replica" | "slave" => Ok("replica"),
        _ => Err(CmdError::Owned(format!("ERR Unknown client type '{}'", args::s(a)))),
    }
}

fn on_off(a: &[u8]) -> Result<bool, CmdError> {
    if is(a, "on") {
        Ok(true)
    } else if is(a, "off") {
        Ok(false)
    } else {
        Err(err::SYNTAX)
    }
}

fn client(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = args::s(&argv[1]).to_ascii_lowercase();
    let n = argv.len();
    let now = ctx.ks.now_ms;
    match (sub.as_str(), n) {
        ("help", 2) => help(ctx, CLIENT_HELP),
        ("id", 2) => ctx.out.int(ctx.client_id as i64),
        ("getname", 2) => {
            let name = ctx.conn()?.info.name.lock().clone();
            match name {
                Some(n) => ctx.out.bulk(n.as_bytes()),
                None => ctx.out.null(),
            }
        }
        ("setname", 3) => {
            validate_name(&argv[2])?;
            let n = args::s(&argv[2]);
            *ctx.conn()?.info.name.lock() = if n.is_empty() { None } else { Some(n) };
            ctx.out.ok();
        }
        ("setinfo", 4) => {
            let attr = args::s(&argv[2]).to_ascii_lowercase();
            let v = args::s(&argv[3]);
            if v.bytes().any(|c| !(b'!'..=b'~').contains(&c)) {
                return Err(CmdError::Owned(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    attr
                )));
            }
            let c = ctx.conn()?;
            match attr.as_str() {
                "lib-name" => *c.info.lib_name.lock() = Some(v),
                "lib-ver" => *c.info.lib_ver.lock() = Some(v),
                _ => return Err(CmdError::Owned(format!("ERR Unrecognized option '{}'", args::s(&argv[2])))),
            }
            ctx.out.ok();
        }
        ("info", 2) => {
            let line = client_line(&ctx.conn()?.info, now) + "\n";
            ctx.out.verbatim("txt", line.as_bytes());
        }
        ("list", _) => client_list(ctx, argv, now)?,
        ("kill", _) if n >= 3 => client_kill(ctx, argv)?,
        ("pause", 3 | 4) => {
            let ms =
                args::int(&argv[2]).map_err(|_| CmdError::Static("ERR timeout is not an integer or out of range"))?;
            if ms < 0 {
                return Err(err::TIMEOUT_NEG);
            }
            let write_only = match argv.get(3) {
                None => false,
                Some(a) if is(a, "write") => true,
                Some(a) if is(a, "all") => false,
                Some(_) => return Err(CmdError::Static("ERR CLIENT PAUSE mode must be WRITE or ALL")),
            };
            let mut p = ctx.srv.pause.lock();
            let active = p.until_ms > now;
            // While a pause runs, the later end and the stricter mode (ALL) win.
            p.write_only = if active { p.write_only && write_only } else { write_only };
            p.until_ms = if active { p.until_ms.max(now.saturating_add(ms)) } else { now.saturating_add(ms) };
            drop(p);
            ctx.srv.pause_set.store(true, Ordering::Relaxed);
            ctx.out.ok();
        }
        ("unpause", 2) => {
            *ctx.srv.pause.lock() = Default::default();
            ctx.srv.pause_set.store(false, Ordering::Relaxed);
            ctx.srv.unpaused.notify_waiters();
            ctx.out.ok();
        }
        ("reply", 3) => {
            let mode = if is(&argv[2], "on") {
                ReplyMode::On
            } else if is(&argv[2], "off") {
                ReplyMode::Off
            } else if is(&argv[2], "skip") {
                ReplyMode::Skip
            } else {
                return Err(err::SYNTAX);
            };
            ctx.conn()?.reply_mode = mode;
            if mode == ReplyMode::On {
                ctx.out.ok();
            }
        }
        ("no-evict", 3) => {
            let on = on_off(&argv[2])?;
            ctx.conn()?.info.no_evict.store(on, Ordering::Relaxed);
            ctx.out.ok();
        }
        ("no-touch", 3) => {
            let on = on_off(&argv[2])?;
            ctx.conn()?.no_touch = on;
            ctx.out.ok();
        }
        ("getredir", 2) => ctx.out.int(-1),
        ("unblock", 3 | 4) => {
            let id = args::int(&argv[2])?;
            let error = match argv.get(3) {
                None => false,
                Some(a) if is(a, "timeout") => false,
                Some(a) if is(a, "error") => true,
                Some(_) => return Err(CmdError::Static("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")),
            };
            let target = ctx.srv.clients.get(&(id as u64)).map(|c| c.clone());
            match target {
                Some(c) if c.blocked.load(Ordering::Relaxed) => {
                    let _ = c.tx.send(if error { Push::UnblockError } else { Push::Wake });
                    ctx.out.int(1);
                }
                _ => ctx.out.int(0),
            }
        }
        _ => return Err(err::unknown_subcommand("client", &argv[1])),
    }
    Ok(())
}

fn client_list(ctx: &mut Ctx, argv: &[Bytes], now: i64) -> CmdResult {
    let mut want_type = None;
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < argv.len() {
        if is(&argv[i], "type") && i + 1 < argv.len() {
            want_type = Some(parse_type(&argv[i + 1])?);
            i += 2;
        } else if is(&argv[i], "id") && i + 1 < argv.len() {
            let mut v = Vec::new();
            for a in &argv[i + 1..] {
                let id = args::int(a).ok().filter(|&n| n > 0).ok_or(CmdError::Static("ERR Invalid client ID"))?;
                v.push(id as u64);
            }
            ids = Some(v);
            break;
        } else {
            return Err(err::SYNTAX);
        }
    }
    let mut clients: Vec<_> = ctx.srv.clients.iter().map(|c| c.clone()).collect();
    clients.sort_by_key(|c| c.id);
    let mut text = String::new();
    for c in clients {
        if want_type.is_some_and(|t| t != client_type(&c)) {
            continue;
        }
        if ids.as_ref().is_some_and(|v| !v.contains(&c.id)) {
            continue;
        }
        text.push_str(&client_line(&c, now));
        text.push('\n');
    }
    ctx.out.verbatim("txt", text.as_bytes());
    Ok(())
}

fn client_kill(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let me = ctx.client_id;
    if argv.len() == 3 {
        // Old form: CLIENT KILL ip:port.
        let addr = args::s(&argv[2]);
        let target = ctx.srv.clients.iter().find(|c| c.addr.to_string() == addr).map(|c| c.clone());
        return match target {
            Some(c) => {
                kill(ctx, &c, me);
                ctx.out.ok();
                Ok(())
            }
            None => Err(CmdError::Static("ERR No such client")),
        };
    }
    if argv.len() % 2 != 0 {
        return Err(err::SYNTAX);
    }
    let mut skipme = true;
    let mut filters: Vec<(String, String)> = Vec::new();
    for pair in argv[2..].chunks(2) {
        let k = args::s(&pair[0]).to_ascii_lowercase();
        let v = args::s(&pair[1]);
        match k.as_str() {
            "id" => {
                args::int(&pair[1])
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(CmdError::Static("ERR client-id should be greater than 0"))?;
            }
            "type" => {
                parse_type(&pair[1])?;
            }
            "skipme" => {
                skipme = if is(&pair[1], "yes") {
                    true
                } else if is(&pair[1], "no") {
                    false
                } else {
                    return Err(err::SYNTAX);
                };
                continue;
            }
            "maxage" => {
                args::int(&pair[1])?;
            }
            "addr" | "laddr" | "user" => {}
            _ => return Err(err::SYNTAX),
        }
        filters.push((k, v));
    }
    let victims: Vec<_> = ctx
        .srv
        .clients
        .iter()
        .filter(|c| !(skipme && c.id == me))
        .filter(|c| {
            filters.iter().all(|(k, v)| match k.as_str() {
                "id" => c.id.to_string() == *v,
                "addr" => c.addr.to_string() == *v,
                "laddr" => c.laddr.to_string() == *v,
                "type" => parse_type(v.as_bytes()).is_ok_and(|t| t == client_type(c)),
                "user" => v == "default",
                "maxage" => c.created.elapsed().as_secs() as i64 >= v.parse::<i64>().unwrap_or(i64::MAX),
                _ => false,
            })
        })
        .map(|c| c.clone())
        .collect();
    for c in &victims {
        kill(ctx, c, me);
    }
    ctx.out.int(victims.len() as i64);
    Ok(())
}

fn kill(ctx: &mut Ctx, c: &ClientInfo, me: u64) {
    if c.id == me {
        if let Some(conn) = ctx.conn.as_deref_mut() {
            conn.close = true;
        }
    } else {
        c.kill();
    }
}
