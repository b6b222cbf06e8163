//! Generic key commands (Redis's `db.c` and `expire.c`): existence, expiry, renaming,
//! iteration, whole-database operations and object introspection.

use bytes::Bytes;

use super::args::{self, glob_match, is};
use super::flags::*;
use super::{err, scan, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Entry, Value};

pub const COMMANDS: &[Spec] = &[
    Spec::new("del", -2, WRITE, (1, -1, 1), "keyspace", del),
    Spec::new("unlink", -2, WRITE | FAST, (1, -1, 1), "keyspace", del),
    Spec::new("exists", -2, READONLY | FAST, (1, -1, 1), "keyspace", exists),
    Spec::new("expire", -3, WRITE | FAST, (1, 1, 1), "keyspace", expire),
    Spec::new("pexpire", -3, WRITE | FAST, (1, 1, 1), "keyspace", pexpire),
    Spec::new("expireat", -3, WRITE | FAST, (1, 1, 1), "keyspace", expireat),
    Spec::new("pexpireat", -3, WRITE | FAST, (1, 1, 1), "keyspace", pexpireat),
    Spec::new("ttl", 2, READONLY | FAST, (1, 1, 1), "keyspace", ttl),
    Spec::new("pttl", 2, READONLY | FAST, (1, 1, 1), "keyspace", pttl),
    Spec::new("expiretime", 2, READONLY | FAST, (1, 1, 1), "keyspace", expiretime),
    Spec::new("pexpiretime", 2, READONLY | FAST, (1, 1, 1), "keyspace", pexpiretime),
    Spec::new("persist", 2, WRITE | FAST, (1, 1, 1), "keyspace", persist),
    Spec::new("type", 2, READONLY | FAST, (1, 1, 1), "keyspace", type_),
    Spec::new("keys", 2, READONLY, (0, 0, 0), "keyspace", keys).acl(&["@dangerous"]),
    Spec::new("scan", -2, READONLY, (0, 0, 0), "keyspace", scan),
    Spec::new("rename", 3, WRITE, (1, 2, 1), "keyspace", rename),
    Spec::new("renamenx", 3, WRITE | FAST, (1, 2, 1), "keyspace", renamenx),
    Spec::new("copy", -3, WRITE | DENYOOM, (1, 2, 1), "keyspace", copy),
    Spec::new("move", 3, WRITE | FAST, (1, 1, 1), "keyspace", move_),
    Spec::new("randomkey", 1, READONLY, (0, 0, 0), "keyspace", randomkey),
    Spec::new("dbsize", 1, READONLY | FAST, (0, 0, 0), "keyspace", dbsize),
    Spec::new("flushdb", -1, WRITE, (0, 0, 0), "keyspace", flushdb).acl(&["@dangerous"]),
    Spec::new("flushall", -1, WRITE, (0, 0, 0), "keyspace", flushall).acl(&["@dangerous"]),
    Spec::new("swapdb", 3, WRITE | FAST, (0, 0, 0), "keyspace", swapdb).acl(&["@dangerous"]),
    Spec::new("touch", -2, READONLY | FAST, (1, -1, 1), "keyspace", touch),
    Spec::new("object", -2, READONLY, (2, 2, 1), "keyspace", object).with_subcommands(&[
        Spec::new("object|encoding", 3, READONLY, (2, 2, 1), "keyspace", super::container_only),
        Spec::new("object|refcount", 3, READONLY, (2, 2, 1), "keyspace", super::container_only),
        Spec::new("object|idletime", 3, READONLY, (2, 2, 1), "keyspace", super::container_only),
        Spec::new("object|freq", 3, READONLY, (2, 2, 1), "keyspace", super::container_only),
        Spec::new("object|help", 2, LOADING | STALE, (0, 0, 0), "keyspace", super::container_only),
    ]),
    Spec::new("memory", -2, READONLY, (0, 0, 0), "server", memory).with_subcommands(&[
        Spec::new("memory|usage", -3, READONLY, (2, 2, 1), "server", super::container_only),
        Spec::new("memory|stats", 2, 0, (0, 0, 0), "server", super::container_only),
        Spec::new("memory|doctor", 2, 0, (0, 0, 0), "server", super::container_only),
        Spec::new("memory|malloc-stats", 2, 0, (0, 0, 0), "server", super::container_only),
        Spec::new("memory|purge", 2, 0, (0, 0, 0), "server", super::container_only),
        Spec::new("memory|help", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only),
    ]),
    Spec::new("dump", 2, READONLY, (1, 1, 1), "keyspace", dump),
    Spec::new("restore", -4, WRITE | DENYOOM, (1, 1, 1), "keyspace", restore).acl(&["@dangerous"]),
];

fn del(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let db = ctx.db;
    let mut n = 0;
    for k in &argv[1..] {
        if ctx.ks.delete(db, k) {
            ctx.ks.notify(notify::GENERIC, "del", db, k);
            n += 1;
        }
    }
    ctx.out.int(n);
    if n > 0 {
        ctx.propagate(argv);
    }
    Ok(())
}

fn exists(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let db = ctx.db;
    let n = argv[1..].iter().filter(|k| ctx.ks.read(db, k).is_some()).count();
    ctx.out.int(n as i64);
    Ok(())
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT with NX/XX/GT/LT (Redis's `expireGenericCommand`).
fn expire_generic(ctx: &mut Ctx, argv: &[Bytes], unit_ms: i64, absolute: bool) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in &argv[3..] {
        if is(a, "nx") {
            nx = true;
        } else if is(a, "xx") {
            xx = true;
        } else if is(a, "gt") {
            gt = true;
        } else if is(a, "lt") {
            lt = true;
        } else {
            return Err(CmdError::Owned(format!("ERR Unsupported option {}", args::s(a))));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CmdError::Static("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(CmdError::Static("ERR GT and LT options at the same time are not compatible"));
    }
    let name = args::s(&argv[0]).to_ascii_lowercase();
    let invalid = || CmdError::Owned(format!("ERR invalid expire time in '{name}' command"));
    let v = args::int(&argv[2])?;
    let mut when = v.checked_mul(unit_ms).ok_or_else(invalid)?;
    if !absolute {
        when = when.checked_add(ctx.ks.now_ms).ok_or_else(invalid)?;
    }
    let db = ctx.db;
    let key = &argv[1];
    let Some(cur) = ctx.ks.expire_at(db, key) else {
        ctx.out.int(0);
        return Ok(());
    };
    // A key without TTL counts as an infinite TTL for GT/LT.
    let refused =
        (nx && cur != 0) || (xx && cur == 0) || (gt && (cur == 0 || when <= cur)) || (lt && cur != 0 && when >= cur);
    if refused {
        ctx.out.int(0);
        return Ok(());
    }
    if when <= ctx.ks.now_ms {
        ctx.ks.delete(db, key);
        ctx.ks.notify(notify::GENERIC, "del", db, key);
        ctx.propagate(&[&b"DEL"[..], key]);
    } else {
        ctx.ks.set_expire(db, key, when);
        ctx.ks.notify(notify::GENERIC, "expire", db, key);
        ctx.propagate(&[&b"PEXPIREAT"[..], key, when.to_string().as_bytes()]);
    }
    ctx.out.int(1);
    Ok(())
}

fn expire(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    expire_generic(ctx, argv, 1000, false)
}
fn pexpire(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    expire_generic(ctx, argv, 1, false)
}
fn expireat(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    expire_generic(ctx, argv, 1000, true)
}
fn pexpireat(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    expire_generic(ctx, argv, 1, true)
}

/// TTL/PTTL/EXPIRETIME/PEXPIRETIME: -2 missing, -1 no expiry.
fn ttl_generic(ctx: &mut Ctx, key: &[u8], ms: bool, absolute: bool) -> CmdResult {
    let db = ctx.db;
    let at = match ctx.ks.read(db, key) {
        None => {
            ctx.out.int(-2);
            return Ok(());
        }
        Some(e) => e.expire_at,
    };
    if at == 0 {
        ctx.out.int(-1);
        return Ok(());
    }
    let v = if absolute {
        if ms {
            at
        } else {
            at / 1000
        }
    } else {
        let left = (at - ctx.ks.now_ms).max(0);
        if ms {
            left
        } else {
            (left + 500) / 1000
        }
    };
    ctx.out.int(v);
    Ok(())
}

fn ttl(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &argv[1], false, false)
}
fn pttl(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &argv[1], true, false)
}
fn expiretime(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &argv[1], false, true)
}
fn pexpiretime(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &argv[1], true, true)
}

fn persist(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let db = ctx.db;
    if ctx.ks.persist(db, &argv[1]) {
        ctx.ks.notify(notify::GENERIC, "persist", db, &argv[1]);
        ctx.out.int(1);
        ctx.propagate(argv);
    } else {
        ctx.out.int(0);
    }
    Ok(())
}

fn type_(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let t = ctx.ks.peek(ctx.db, &argv[1]).map_or("none", |e| e.value.type_name());
    ctx.out.simple(t);
    Ok(())
}

fn keys(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let pat = &argv[1];
    let all = pat.as_ref() == b"*";
    let now = ctx.ks.now_ms;
    let found: Vec<Bytes> = ctx.ks.dbs[ctx.db]
        .table
        .iter()
        .filter(|(_, e)| (e.expire_at == 0 || e.expire_at > now) && (all || glob_match(pat, &e.key, false)))
        .map(|(_, e)| Bytes::copy_from_slice(&e.key))
        .collect();
    ctx.out.bulks(found.iter());
    Ok(())
}

fn scan(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let cursor = scan::parse_cursor(&argv[1])?;
    let o = scan::ScanOpts::parse(&argv[2..], true)?;
    let now = ctx.ks.now_ms;
    let mut found = Vec::new();
    let next = if cursor as usize > ctx.ks.dbs[ctx.db].table.slots() {
        0
    } else {
        ctx.ks.dbs[ctx.db].table.scan(cursor as usize, o.count, |_, e| {
            if e.expire_at != 0 && e.expire_at <= now {
                return;
            }
            if !o.matches(&e.key) {
                return;
            }
            if let Some(t) = &o.type_ {
                if e.value.type_name() != t {
                    return;
                }
            }
            found.push(Bytes::copy_from_slice(&e.key));
        })
    };
    let items: Vec<&[u8]> = found.iter().map(|k| &k[..]).collect();
    scan::reply_scan(ctx.out, next as u64, &items);
    Ok(())
}

fn rename_generic(ctx: &mut Ctx, argv: &[Bytes], nx: bool) -> CmdResult {
    let db = ctx.db;
    let (src, dst) = (&argv[1], &argv[2]);
    if ctx.ks.write(db, src).is_none() {
        return Err(err::NO_KEY);
    }
    if src == dst {
        if nx {
            ctx.out.int(0);
        } else {
            ctx.out.ok();
        }
        return Ok(());
    }
    if nx && ctx.ks.write(db, dst).is_some() {
        ctx.out.int(0);
        return Ok(());
    }
    let mut e = ctx.ks.take(db, src).expect("checked");
    e.key = crate::keyspace::Blob::new(dst);
    ctx.ks.insert_entry(db, e);
    ctx.ks.notify(notify::GENERIC, "rename_from", db, src);
    ctx.ks.notify(notify::GENERIC, "rename_to", db, dst);
    ctx.ks.signal_ready(db, dst);
    if nx {
        ctx.out.int(1);
    } else {
        ctx.out.ok();
    }
    ctx.propagate(argv);
    Ok(())
}

fn rename(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    rename_generic(ctx, argv, false)
}
fn renamenx(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    rename_generic(ctx, argv, true)
}

fn parse_db(ctx: &Ctx, a: &[u8]) -> Result<usize, CmdError> {
    let n = args::int(a)?;
    if n < 0 || n as usize >= ctx.ks.dbs.len() {
        return Err(err::DB_INDEX);
    }
    Ok(n as usize)
}

fn copy(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let mut dst_db = ctx.db;
    let mut replace = false;
    let mut i = 3;
    while i < argv.len() {
        if is(&argv[i], "replace") {
            replace = true;
        } else if is(&argv[i], "db") && i + 1 < argv.len() {
            dst_db = parse_db(ctx, &argv[i + 1])?;
            i += 1;
        } else {
            return Err(err::SYNTAX);
        }
        i += 1;
    }
    let (src, dst) = (&argv[1], &argv[2]);
    if dst_db == ctx.db && src == dst {
        return Err(CmdError::Static("ERR source and destination objects are the same"));
    }
    let Some(e) = ctx.ks.write(ctx.db, src).map(|e| e.clone()) else {
        ctx.out.int(0);
        return Ok(());
    };
    if ctx.ks.write(dst_db, dst).is_some() && !replace {
        ctx.out.int(0);
        return Ok(());
    }
    let e = Entry { key: crate::keyspace::Blob::new(dst), ..e };
    ctx.ks.insert_entry(dst_db, e);
    ctx.ks.notify(notify::GENERIC, "copy_to", dst_db, dst);
    ctx.ks.signal_ready(dst_db, dst);
    ctx.out.int(1);
    ctx.propagate(argv);
    Ok(())
}

fn move_(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let dst_db = parse_db(ctx, &argv[2])?;
    let key = &argv[1];
    if dst_db == ctx.db {
        return Err(CmdError::Static("ERR source and destination objects are the same"));
    }
    if ctx.ks.write(ctx.db, key).is_none() || ctx.ks.write(dst_db, key).is_some() {
        ctx.out.int(0);
        return Ok(());
    }
    let e = ctx.ks.take(ctx.db, key).expect("checked");
    ctx.ks.insert_entry(dst_db, e);
    ctx.ks.notify(notify::GENERIC, "move_from", ctx.db, key);
    ctx.ks.notify(notify::GENERIC, "move_to", dst_db, key);
    ctx.ks.signal_ready(dst_db, key);
    ctx.out.int(1);
    ctx.propagate(argv);
    Ok(())
}

fn randomkey(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    match ctx.ks.random_key(ctx.db) {
        Some(k) => ctx.out.bulk(&k),
        None => ctx.out.null(),
    }
    Ok(())
}

fn dbsize(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    ctx.out.int(ctx.ks.dbs[ctx.db].len() as i64);
    Ok(())
}

/// The optional ASYNC|SYNC argument of FLUSHDB/FLUSHALL.
fn flush_mode(argv: &[Bytes]) -> CmdResult {
    match argv.len() {
        1 => Ok(()),
        2 if is(&argv[1], "async") || is(&argv[1], "sync") => Ok(()),
        _ => Err(err::SYNTAX),
    }
}

fn flushdb(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    flush_mode(argv)?;
    ctx.ks.flush_db(ctx.db);
    ctx.out.ok();
    ctx.propagate(&[b"FLUSHDB"]);
    Ok(())
}

fn flushall(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    flush_mode(argv)?;
    for db in 0..ctx.ks.dbs.len() {
        ctx.ks.flush_db(db);
    }
    ctx.out.ok();
    ctx.propagate(&[b"FLUSHALL"]);
    Ok(())
}

fn swapdb(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let a = args::int(&argv[1]).map_err(|_| CmdError::Static("ERR invalid first DB index"))?;
    let b = args::int(&argv[2]).map_err(|_| CmdError::Static("ERR invalid second DB index"))?;
    let n = ctx.ks.dbs.len() as i64;
    if a < 0 || a >= n || b < 0 || b >= n {
        return Err(err::DB_INDEX);
    }
    if a != b {
        ctx.ks.swap_db(a as usize, b as usize);
    }
    ctx.out.ok();
    ctx.propagate(argv);
    Ok(())
}

fn touch(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let db = ctx.db;
    let n = argv[1..].iter().filter(|k| ctx.ks.write(db, k).is_some()).count();
    ctx.out.int(n as i64);
    Ok(())
}

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

/// Writes a HELP reply (an array of status lines, as Redis's `addReplyHelp`).
pub fn help(ctx: &mut Ctx, lines: &[&str]) {
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
}

fn object(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "help") && argv.len() == 2 {
        help(ctx, OBJECT_HELP);
        return Ok(());
    }
    let known = ["encoding", "refcount", "idletime", "freq"].iter().any(|s| is(sub, s));
    if !known || argv.len() != 3 {
        return Err(err::unknown_subcommand("object", sub));
    }
    let policy = ctx.ks.policy;
    let Some(e) = ctx.ks.peek(ctx.db, &argv[2]) else {
        ctx.out.null();
        return Ok(());
    };
    let (lru, enc) = (e.lru, e.value.encoding());
    if is(sub, "encoding") {
        ctx.out.bulk(enc.as_bytes());
    } else if is(sub, "refcount") {
        // Redis shares small integers (refcount INT_MAX); everything else is 1.
        let shared = matches!(&e.value, Value::Str(s) if s.len() <= 4 && redoubt_protocol::num::parse_i64(s).is_some_and(|n| (0..10000).contains(&n)));
        ctx.out.int(if shared { i32::MAX as i64 } else { 1 });
    } else if is(sub, "idletime") {
        if policy.is_lfu() {
            return Err(CmdError::Static("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
        }
        let idle = ctx.ks.idle_secs(lru);
        ctx.out.int(idle);
    } else {
        if !policy.is_lfu() {
            return Err(CmdError::Static("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
        }
        let f = ctx.ks.lfu_decayed(lru);
        ctx.out.int(f as i64);
    }
    Ok(())
}

const MEMORY_HELP: &[&str] = &[
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DOCTOR",
    "    Return memory problems reports.",
    "MALLOC-STATS",
    "    Return internal statistics report from the memory allocator.",
    "PURGE",
    "    Attempt to purge dirty pages for reclamation by the allocator.",
    "STATS",
    "    Return information about the memory usage of the server.",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
    "HELP",
    "    Prints this help.",
];

fn memory(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "help") && argv.len() == 2 {
        help(ctx, MEMORY_HELP);
    } else if is(sub, "usage") && argv.len() >= 3 {
        if argv.len() != 3 && !(argv.len() == 5 && is(&argv[3], "samples")) {
            return Err(err::SYNTAX);
        }
        if argv.len() == 5 {
            args::int(&argv[4])?;
        }
        match ctx.ks.peek(ctx.db, &argv[2]) {
            // Entry slot + index share + key and value heap data.
            Some(e) => {
                let n = std::mem::size_of::<Option<Entry>>() + 5 + e.key.heap_size() + e.value.heap_size();
                ctx.out.int(n as i64);
            }
            None => ctx.out.null(),
        }
    } else if is(sub, "doctor") && argv.len() == 2 {
        ctx.out.verbatim(
            "txt",
            b"Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.",
        );
    } else if is(sub, "malloc-stats") && argv.len() == 2 {
        ctx.out.verbatim("txt", b"Stats not supported for the current allocator");
    } else if is(sub, "purge") && argv.len() == 2 {
        ctx.out.ok();
    } else if is(sub, "stats") && argv.len() == 2 {
        let used = crate::memory::used_memory();
        let data = ctx.ks.data_bytes() as u64;
        let keys: usize = ctx.ks.dbs.iter().map(|d| d.len()).sum();
        let fields: [(&str, u64); 6] = [
            ("peak.allocated", crate::memory::peak_memory()),
            ("total.allocated", used),
            ("startup.allocated", 0),
            ("keys.count", keys as u64),
            ("keys.bytes-per-key", if keys > 0 { used / keys as u64 } else { 0 }),
            ("dataset.bytes", data),
        ];
        ctx.out.map(fields.len());
        for (k, v) in fields {
            ctx.out.bulk(k.as_bytes());
            ctx.out.int(v as i64);
        }
    } else {
        return Err(err::unknown_subcommand("memory", sub));
    }
    Ok(())
}

// DUMP/RESTORE use redoubt's own serialization (not Redis's RDB encoding) framed like
// Redis's: payload, 2-byte version, 8-byte checksum. Payloads move between redoubt nodes;
// a payload produced by Redis is refused with Redis's checksum error.
const DUMP_VERSION: u16 = 0x5244; // "RD"

fn dump(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.null();
        return Ok(());
    };
    let mut buf = Vec::new();
    crate::keyspace::serial::write_value(&e.value, &mut buf);
    buf.extend_from_slice(&DUMP_VERSION.to_le_bytes());
    let crc = crate::keyspace::serial::checksum(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    ctx.out.bulk(&buf);
    Ok(())
}

fn restore(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let ttl = args::int(&argv[2])?;
    let (mut replace, mut absttl) = (false, false);
    let mut i = 4;
    while i < argv.len() {
        if is(&argv[i], "replace") {
            replace = true;
        } else if is(&argv[i], "absttl") {
            absttl = true;
        } else if (is(&argv[i], "idletime") || is(&argv[i], "freq")) && i + 1 < argv.len() {
            let v = args::int(&argv[i + 1])?;
            if v < 0 {
                return Err(CmdError::Owned(format!(
                    "ERR Invalid {} value, must be >= 0",
                    args::s(&argv[i]).to_ascii_uppercase()
                )));
            }
            i += 1;
        } else {
            return Err(err::SYNTAX);
        }
        i += 1;
    }
    if ttl < 0 {
        return Err(CmdError::Static("ERR Invalid TTL value, must be >= 0"));
    }
    let db = ctx.db;
    if !replace && ctx.ks.write(db, key).is_some() {
        return Err(CmdError::Static("BUSYKEY Target key name already exists."));
    }
    let payload = &argv[3];
    let bad = CmdError::Static("ERR DUMP payload version or checksum are wrong");
    if payload.len() < 10 {
        return Err(bad);
    }
    let (body, crc) = payload.split_at(payload.len() - 8);
    if crate::keyspace::serial::checksum(body).to_le_bytes() != crc
        || body[body.len() - 2..] != DUMP_VERSION.to_le_bytes()
    {
        return Err(bad);
    }
    let value =
        crate::keyspace::serial::read_value(&body[..body.len() - 2]).ok_or(CmdError::Static("ERR Bad data format"))?;
    let at = match (ttl, absttl) {
        (0, _) => 0,
        (t, true) => t,
        (t, false) => ctx.ks.now_ms.saturating_add(t),
    };
    if at != 0 && at <= ctx.ks.now_ms {
        // Already expired: Redis deletes the target and replies OK.
        if ctx.ks.delete(db, key) {
            ctx.ks.notify(notify::GENERIC, "del", db, key);
        }
        ctx.out.ok();
        return Ok(());
    }
    ctx.ks.delete(db, key);
    ctx.ks.set(db, key, value, false);
    if at != 0 {
        ctx.ks.set_expire(db, key, at);
    }
    ctx.ks.notify(notify::GENERIC, "restore", db, key);
    ctx.ks.signal_ready(db, key);
    ctx.out.ok();
    ctx.propagate(argv);
    Ok(())
}
