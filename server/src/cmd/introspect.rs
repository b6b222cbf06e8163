//! Introspection driven by the command table: COMMAND (COUNT INFO DOCS LIST GETKEYS
//! GETKEYSANDFLAGS HELP) and SLOWLOG.

use bytes::Bytes;

use super::args::{self, glob_match, is};
use super::flags::{self, *};
use super::keys::help;
use super::{err, table, CmdError, CmdResult, Ctx, Spec};
use crate::shared::SlowEntry;

pub const COMMANDS: &[Spec] = &[
    Spec::new("command", -1, LOADING | STALE, (0, 0, 0), "server", command).acl(&["@connection"]).with_subcommands(&[
        Spec::new("command|count", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only)
            .acl(&["@connection"]),
        Spec::new("command|info", -2, LOADING | STALE, (0, 0, 0), "server", super::container_only)
            .acl(&["@connection"]),
        Spec::new("command|docs", -2, LOADING | STALE, (0, 0, 0), "server", super::container_only)
            .acl(&["@connection"]),
        Spec::new("command|list", -2, LOADING | STALE, (0, 0, 0), "server", super::container_only)
            .acl(&["@connection"]),
        Spec::new("command|getkeys", -4, LOADING | STALE, (0, 0, 0), "server", super::container_only)
            .acl(&["@connection"]),
        Spec::new("command|getkeysandflags", -4, LOADING | STALE, (0, 0, 0), "server", super::container_only)
            .acl(&["@connection"]),
        Spec::new("command|help", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only).acl(&["@connection"]),
    ]),
    Spec::new("slowlog", -2, 0, (0, 0, 0), "server", slowlog).with_subcommands(&[
        Spec::new("slowlog|get", -2, ADMIN | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("slowlog|len", 2, ADMIN | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("slowlog|reset", 2, ADMIN | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("slowlog|help", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only),
    ]),
];

/// A command that only exists through its subcommands (CONFIG, CLIENT...). COMMAND itself
/// has subcommands but also runs bare, so it is not one.
fn is_container(s: &Spec) -> bool {
    !s.subcommands.is_empty() && s.arity == -2
}

/// ACL categories derived from flags and group, as Redis attaches them.
pub fn acl_categories(s: &Spec) -> Vec<String> {
    // Containers (CLIENT, CONFIG...) carry only @slow in Redis.
    if is_container(s) {
        return vec!["@slow".to_string()];
    }
    let mut c = Vec::new();
    if s.flags & WRITE != 0 {
        c.push("@write".to_string());
    }
    // Read-only scripts are @scripting only in Redis, not @read.
    if s.flags & READONLY != 0 && s.group != "scripting" {
        c.push("@read".to_string());
    }
    let group = match s.group {
        "sorted-set" | "sorted_set" | "zset" => "sortedset",
        "generic" => "keyspace",
        "transactions" => "transaction",
        g => g,
    };
    if [
        "string",
        "list",
        "hash",
        "set",
        "sortedset",
        "bitmap",
        "keyspace",
        "connection",
        "pubsub",
        "transaction",
        "scripting",
    ]
    .contains(&group)
    {
        c.push(format!("@{group}"));
    }
    if s.flags & ADMIN != 0 {
        c.push("@admin".into());
        c.push("@dangerous".into());
    }
    if s.flags & PUBSUB != 0 && group != "pubsub" {
        c.push("@pubsub".into());
    }
    c.push(if s.flags & FAST != 0 { "@fast".into() } else { "@slow".into() });
    if s.flags & BLOCKING != 0 {
        c.push("@blocking".into());
    }
    for extra in s.extra_acl {
        if !c.iter().any(|x| x == extra) {
            c.push(extra.to_string());
        }
    }
    c
}

/// One COMMAND INFO entry (Redis 7 shape: 10 fields).
fn write_info(ctx: &mut Ctx, s: &Spec) {
    // A container reports no flags and no keys of its own: its subcommands carry them.
    let container = is_container(s);
    ctx.out.array(10);
    ctx.out.bulk(s.name.as_bytes());
    ctx.out.int(s.arity as i64);
    let fl: Vec<&str> = flags::NAMES.iter().filter(|(b, _)| !container && s.flags & b != 0).map(|(_, n)| *n).collect();
    ctx.out.set(fl.len());
    for f in fl {
        ctx.out.simple(f);
    }
    let keys = if container { (0, 0, 0) } else { s.keys };
    ctx.out.int(keys.0 as i64);
    ctx.out.int(keys.1 as i64);
    ctx.out.int(keys.2 as i64);
    let cats = acl_categories(s);
    ctx.out.set(cats.len());
    for c in &cats {
        ctx.out.simple(c);
    }
    ctx.out.array(0); // tips
    ctx.out.array(0); // key specs
    ctx.out.array(s.subcommands.len());
    for sub in s.subcommands {
        write_info(ctx, sub);
    }
}

fn sorted_specs() -> Vec<&'static Spec> {
    let mut v: Vec<&'static Spec> = table().values().copied().collect();
    v.sort_by_key(|s| s.name);
    v
}

const COMMAND_HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "GETKEYSANDFLAGS <full-command>",
    "    Return the keys and the access flags from a full Redis command.",
    "HELP",
    "    Prints this help.",
];

/// Finds a command or `parent|sub` by name.
fn find_spec(name: &[u8]) -> Option<&'static Spec> {
    let n = args::s(name).to_ascii_lowercase();
    match n.split_once('|') {
        Some((parent, sub)) => super::lookup(parent.as_bytes()).and_then(|p| super::lookup_sub(p, sub.as_bytes())),
        None => super::lookup(n.as_bytes()),
    }
}

fn command(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if argv.len() == 1 {
        let specs = sorted_specs();
        ctx.out.array(specs.len());
        for s in specs {
            write_info(ctx, s);
        }
        return Ok(());
    }
    let sub = &argv[1];
    let n = argv.len();
    if is(sub, "help") && n == 2 {
        help(ctx, COMMAND_HELP);
    } else if is(sub, "count") && n == 2 {
        ctx.out.int(table().len() as i64);
    } else if is(sub, "info") {
        if n == 2 {
            let specs = sorted_specs();
            ctx.out.array(specs.len());
            for s in specs {
                write_info(ctx, s);
            }
        } else {
            ctx.out.array(n - 2);
            for name in &argv[2..] {
                match find_spec(name) {
                    Some(s) => write_info(ctx, s),
                    None => ctx.out.null(),
                }
            }
        }
    } else if is(sub, "docs") {
        let names: Vec<&'static Spec> =
            if n == 2 { sorted_specs() } else { argv[2..].iter().filter_map(|a| find_spec(a)).collect() };
        let docs: Vec<_> = names.iter().filter_map(|s| super::docs::docs_for(s.name).map(|d| (s, d))).collect();
        ctx.out.map(docs.len());
        for (s, d) in docs {
            ctx.out.bulk(s.name.as_bytes());
            super::docs::write_doc(ctx.out, d);
        }
    } else if is(sub, "list") {
        let mut specs = sorted_specs();
        if n > 2 {
            if n != 5 || !is(&argv[2], "filterby") {
                return Err(err::SYNTAX);
            }
            let (kind, val) = (&argv[3], argv[4].clone());
            if is(kind, "pattern") {
                specs.retain(|s| glob_match(&val, s.name.as_bytes(), true));
            } else if is(kind, "aclcat") {
                let cat = format!("@{}", args::s(&val).to_ascii_lowercase());
                specs.retain(|s| acl_categories(s).contains(&cat));
            } else if is(kind, "module") {
                specs.clear();
            } else {
                return Err(err::SYNTAX);
            }
        }
        ctx.out.bulks(specs.iter().map(|s| s.name));
    } else if (is(sub, "getkeys") || is(sub, "getkeysandflags")) && n >= 3 {
        let with_flags = is(sub, "getkeysandflags");
        let cmd = &argv[2..];
        let spec = super::lookup(&cmd[0]).ok_or(CmdError::Static("ERR Invalid command specified"))?;
        if !spec.arity_ok(cmd.len()) {
            return Err(CmdError::Static("ERR Invalid number of arguments specified for command"));
        }
        let pos = key_positions(spec, cmd);
        if pos.is_empty() {
            return Err(CmdError::Static("ERR The command has no key arguments"));
        }
        ctx.out.array(pos.len());
        for p in pos {
            if with_flags {
                ctx.out.array(2);
                ctx.out.bulk(&cmd[p]);
                let f: &[&str] = if spec.is_write() { &["RW", "update"] } else { &["RO", "access"] };
                ctx.out.set(f.len());
                for x in f {
                    ctx.out.simple(x);
                }
            } else {
                ctx.out.bulk(&cmd[p]);
            }
        }
    } else {
        return Err(err::unknown_subcommand("command", sub));
    }
    Ok(())
}

/// Key positions of a full command line, including the movable-key commands whose key
/// count is an argument (numkeys-style).
pub fn key_positions(spec: &Spec, argv: &[Bytes]) -> Vec<usize> {
    let numkeys_at = |i: usize| -> Vec<usize> {
        match argv.get(i).and_then(|a| redoubt_protocol::num::parse_i64(a)) {
            Some(n) if n > 0 => (i + 1..(i + 1 + n as usize).min(argv.len())).collect(),
            _ => Vec::new(),
        }
    };
    match spec.name {
        "zunionstore" | "zinterstore" | "zdiffstore" => {
            let mut v = vec![1];
            v.extend(numkeys_at(2));
            v
        }
        "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" | "eval" | "evalsha"
        | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => numkeys_at(1),
        "blmpop" | "bzmpop" => numkeys_at(2),
        _ => spec.key_positions(argv.len()),
    }
}

const SLOWLOG_HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

/// Records a slow command (called by `conn::call`).
pub fn slowlog_push(ctx: &mut Ctx, argv: &[Bytes], usec: u64) {
    let max = ctx.srv.config.read().slowlog_max_len as usize;
    if max == 0 {
        return;
    }
    let (addr, name) = match ctx.conn.as_deref() {
        Some(c) => (c.info.addr.to_string(), c.info.name.lock().clone().unwrap_or_default()),
        None => (String::new(), String::new()),
    };
    // Like Redis: at most 32 arguments, each at most 128 bytes.
    let mut args: Vec<Bytes> =
        argv.iter().take(32).map(|a| a.slice(..a.len().min(128))).map(|a| Bytes::copy_from_slice(&a)).collect();
    if argv.len() > 32 {
        args[31] = Bytes::from(format!("... ({} more arguments)", argv.len() - 31));
    }
    let id = ctx.srv.slowlog_next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut log = ctx.srv.slowlog.lock();
    log.push_front(SlowEntry { id, time: ctx.ks.now_ms / 1000, micros: usec, argv: args, addr, name });
    log.truncate(max);
}

fn slowlog(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let n = argv.len();
    if is(sub, "help") && n == 2 {
        help(ctx, SLOWLOG_HELP);
    } else if is(sub, "len") && n == 2 {
        let l = ctx.srv.slowlog.lock().len();
        ctx.out.int(l as i64);
    } else if is(sub, "reset") && n == 2 {
        ctx.srv.slowlog.lock().clear();
        ctx.out.ok();
    } else if is(sub, "get") && n <= 3 {
        let count = match argv.get(2) {
            None => 10,
            Some(a) => {
                let c =
                    args::int(a).map_err(|_| CmdError::Static("ERR count should be greater than or equal to -1"))?;
                if c < -1 {
                    return Err(CmdError::Static("ERR count should be greater than or equal to -1"));
                }
                if c == -1 {
                    usize::MAX
                } else {
                    c as usize
                }
            }
        };
        let entries: Vec<SlowEntry> = ctx.srv.slowlog.lock().iter().take(count).cloned().collect();
        ctx.out.array(entries.len());
        for e in entries {
            ctx.out.array(6);
            ctx.out.int(e.id as i64);
            ctx.out.int(e.time);
            ctx.out.int(e.micros as i64);
            ctx.out.bulks(e.argv.iter());
            ctx.out.bulk(e.addr.as_bytes());
            ctx.out.bulk(e.name.as_bytes());
        }
    } else {
        return Err(err::unknown_subcommand("slowlog", sub));
    }
    Ok(())
}
