//! String commands (Redis's `t_string.c`).

use bytes::Bytes;
use redoubt_protocol::num::parse_i64;

use super::args::{self, as_str, as_str_mut, is};
use super::flags::*;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Blob, Value};

pub const COMMANDS: &[Spec] = &[
    Spec::new("get", 2, READONLY | FAST, (1, 1, 1), "string", get),
    Spec::new("set", -3, WRITE | DENYOOM, (1, 1, 1), "string", set),
    Spec::new("setex", 4, WRITE | DENYOOM, (1, 1, 1), "string", setex),
    Spec::new("psetex", 4, WRITE | DENYOOM, (1, 1, 1), "string", psetex),
    Spec::new("setnx", 3, WRITE | DENYOOM | FAST, (1, 1, 1), "string", setnx),
    Spec::new("getset", 3, WRITE | DENYOOM | FAST, (1, 1, 1), "string", getset),
    Spec::new("getdel", 2, WRITE | FAST, (1, 1, 1), "string", getdel),
    Spec::new("getex", -2, WRITE | FAST, (1, 1, 1), "string", getex),
    Spec::new("mget", -2, READONLY | FAST, (1, -1, 1), "string", mget),
    Spec::new("mset", -3, WRITE | DENYOOM, (1, -1, 2), "string", mset),
    Spec::new("msetnx", -3, WRITE | DENYOOM, (1, -1, 2), "string", msetnx),
    Spec::new("incr", 2, WRITE | DENYOOM | FAST, (1, 1, 1), "string", incr),
    Spec::new("decr", 2, WRITE | DENYOOM | FAST, (1, 1, 1), "string", decr),
    Spec::new("incrby", 3, WRITE | DENYOOM | FAST, (1, 1, 1), "string", incrby),
    Spec::new("decrby", 3, WRITE | DENYOOM | FAST, (1, 1, 1), "string", decrby),
    Spec::new("incrbyfloat", 3, WRITE | DENYOOM | FAST, (1, 1, 1), "string", incrbyfloat),
    Spec::new("append", 3, WRITE | DENYOOM | FAST, (1, 1, 1), "string", append),
    Spec::new("strlen", 2, READONLY | FAST, (1, 1, 1), "string", strlen),
    Spec::new("getrange", 4, READONLY, (1, 1, 1), "string", getrange),
    Spec::new("substr", 4, READONLY, (1, 1, 1), "string", getrange),
    Spec::new("setrange", 4, WRITE | DENYOOM, (1, 1, 1), "string", setrange),
    Spec::new("lcs", -3, READONLY, (1, 2, 1), "string", lcs),
];

/// Largest string Redis lets a command build (`proto-max-bulk-len` default, 512 MB).
fn check_size(ctx: &Ctx, len: u64) -> CmdResult {
    if len > ctx.srv.config.read().proto_max_bulk_len {
        return Err(CmdError::Static("ERR string exceeds maximum allowed size (proto-max-bulk-len)"));
    }
    Ok(())
}

fn get(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    match ctx.ks.read(ctx.db, &argv[1]) {
        None => ctx.out.null(),
        Some(e) => ctx.out.bulk(as_str(e)?),
    }
    Ok(())
}

/// Expiry options shared by SET and GETEX.
#[derive(Default, Clone, Copy, PartialEq)]
enum Ttl {
    #[default]
    None,
    /// Absolute unix ms.
    At(i64),
    Keep,
    Persist,
}

/// Turns a relative or absolute expire argument into absolute ms, with Redis's checks.
fn expire_arg(ctx: &Ctx, unit_ms: i64, absolute: bool, a: &[u8], cmd: &str) -> Result<i64, CmdError> {
    let v = args::int(a)?;
    let invalid = || CmdError::Owned(format!("ERR invalid expire time in '{cmd}' command"));
    if v <= 0 {
        return Err(invalid());
    }
    let ms = v.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute { ms } else { ms.checked_add(ctx.ks.now_ms).ok_or_else(invalid)? };
    Ok(at)
}

fn set(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let (mut nx, mut xx, mut get_old, mut keep) = (false, false, false, false);
    // (unit ms, absolute, value): parsed only once the whole option list is valid, because
    // Redis reports a syntax error before a bad number.
    let mut expire: Option<(i64, bool, &Bytes)> = None;
    let mut i = 3;
    while i < argv.len() {
        let a = &argv[i];
        let next = argv.get(i + 1);
        let has_ttl = expire.is_some() || keep;
        if is(a, "nx") && !xx {
            nx = true;
        } else if is(a, "xx") && !nx {
            xx = true;
        } else if is(a, "get") {
            get_old = true;
        } else if is(a, "keepttl") && !has_ttl {
            keep = true;
        } else if !has_ttl && next.is_some() && (is(a, "ex") || is(a, "px") || is(a, "exat") || is(a, "pxat")) {
            let unit = if is(a, "ex") || is(a, "exat") { 1000 } else { 1 };
            expire = Some((unit, is(a, "exat") || is(a, "pxat"), next.expect("checked")));
            i += 1;
        } else {
            return Err(err::SYNTAX);
        }
        i += 1;
    }
    let ttl = match expire {
        Some((unit, abs, v)) => Ttl::At(expire_arg(ctx, unit, abs, v, "set")?),
        None if keep => Ttl::Keep,
        None => Ttl::None,
    };
    let key = &argv[1];
    // SET ... GET reads like GET (hit/miss stats); plain SET only checks existence.
    let found = if get_old { ctx.ks.read(ctx.db, key) } else { ctx.ks.write(ctx.db, key).map(|e| &*e) };
    let old = match found {
        Some(e) => {
            if get_old {
                Some(Some(as_str(e)?.clone()))
            } else {
                Some(None)
            }
        }
        None => None,
    };
    let exists = old.is_some();
    let reply_old = |ctx: &mut Ctx| match &old {
        Some(Some(v)) => ctx.out.bulk(v),
        _ => ctx.out.null(),
    };
    if (nx && exists) || (xx && !exists) {
        if get_old {
            reply_old(ctx);
        } else {
            ctx.out.null();
        }
        return Ok(());
    }
    store_string(ctx, key, Blob::new(&argv[2]), ttl);
    if get_old {
        reply_old(ctx);
    } else {
        ctx.out.ok();
    }
    // Propagate with an absolute time so a replica applying it later agrees.
    let mut p: Vec<&[u8]> = vec![b"SET", key, &argv[2]];
    let at;
    match ttl {
        Ttl::At(ms) => {
            at = ms.to_string();
            p.extend_from_slice(&[b"PXAT", at.as_bytes()]);
        }
        Ttl::Keep => p.push(b"KEEPTTL"),
        _ => {}
    }
    ctx.propagate(&p);
    Ok(())
}

/// Stores a string value, applies the TTL option and fires `set` (+`expire`).
fn store_string(ctx: &mut Ctx, key: &[u8], v: Blob, ttl: Ttl) {
    let db = ctx.db;
    ctx.ks.set(db, key, Value::Str(v), ttl == Ttl::Keep);
    ctx.ks.notify(notify::STRING, "set", db, key);
    if let Ttl::At(at) = ttl {
        ctx.ks.set_expire(db, key, at);
        ctx.ks.notify(notify::GENERIC, "expire", db, key);
    }
}

fn setex(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    setex_generic(ctx, argv, 1000, "setex")
}

fn psetex(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    setex_generic(ctx, argv, 1, "psetex")
}

fn setex_generic(ctx: &mut Ctx, argv: &[Bytes], unit: i64, name: &str) -> CmdResult {
    let at = expire_arg(ctx, unit, false, &argv[2], name)?;
    store_string(ctx, &argv[1], Blob::new(&argv[3]), Ttl::At(at));
    ctx.out.ok();
    ctx.propagate(&[&b"SET"[..], &argv[1], &argv[3], b"PXAT", at.to_string().as_bytes()]);
    Ok(())
}

fn setnx(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if ctx.ks.write(ctx.db, &argv[1]).is_some() {
        ctx.out.int(0);
        return Ok(());
    }
    store_string(ctx, &argv[1], Blob::new(&argv[2]), Ttl::None);
    ctx.out.int(1);
    ctx.propagate(argv);
    Ok(())
}

fn getset(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let old = match ctx.ks.read(ctx.db, &argv[1]) {
        Some(e) => Some(as_str(e)?.clone()),
        None => None,
    };
    store_string(ctx, &argv[1], Blob::new(&argv[2]), Ttl::None);
    match old {
        Some(v) => ctx.out.bulk(&v),
        None => ctx.out.null(),
    }
    ctx.propagate(&[&b"SET"[..], &argv[1], &argv[2]]);
    Ok(())
}

fn getdel(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let v = match ctx.ks.read(ctx.db, &argv[1]) {
        Some(e) => as_str(e)?.clone(),
        None => {
            ctx.out.null();
            return Ok(());
        }
    };
    ctx.ks.delete(ctx.db, &argv[1]);
    ctx.ks.notify(notify::GENERIC, "del", ctx.db, &argv[1]);
    ctx.out.bulk(&v);
    ctx.propagate(&[&b"DEL"[..], &argv[1]]);
    Ok(())
}

fn getex(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let mut persist = false;
    let mut expire: Option<(i64, bool, &Bytes)> = None;
    let mut i = 2;
    while i < argv.len() {
        let a = &argv[i];
        let next = argv.get(i + 1);
        let free = !persist && expire.is_none();
        if is(a, "persist") && free {
            persist = true;
        } else if free && next.is_some() && (is(a, "ex") || is(a, "px") || is(a, "exat") || is(a, "pxat")) {
            let unit = if is(a, "ex") || is(a, "exat") { 1000 } else { 1 };
            expire = Some((unit, is(a, "exat") || is(a, "pxat"), next.expect("checked")));
            i += 1;
        } else {
            return Err(err::SYNTAX);
        }
        i += 1;
    }
    let key = &argv[1];
    // Redis looks the key up (and checks its type) before it validates the expire value.
    let v = match ctx.ks.read(ctx.db, key) {
        Some(e) => as_str(e)?.clone(),
        None => {
            ctx.out.null();
            return Ok(());
        }
    };
    let ttl = match expire {
        Some((unit, abs, a)) => Ttl::At(expire_arg(ctx, unit, abs, a, "getex")?),
        None if persist => Ttl::Persist,
        None => Ttl::None,
    };
    let db = ctx.db;
    match ttl {
        Ttl::At(at) if at <= ctx.ks.now_ms => {
            ctx.ks.delete(db, key);
            ctx.ks.notify(notify::GENERIC, "del", db, key);
            ctx.propagate(&[&b"DEL"[..], key]);
        }
        Ttl::At(at) => {
            ctx.ks.set_expire(db, key, at);
            ctx.ks.notify(notify::GENERIC, "expire", db, key);
            ctx.propagate(&[&b"PEXPIREAT"[..], key, at.to_string().as_bytes()]);
        }
        Ttl::Persist => {
            if ctx.ks.persist(db, key) {
                ctx.ks.notify(notify::GENERIC, "persist", db, key);
                ctx.propagate(&[&b"PERSIST"[..], key]);
            }
        }
        _ => {}
    }
    ctx.out.bulk(&v);
    Ok(())
}

fn mget(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    ctx.out.array(argv.len() - 1);
    for k in &argv[1..] {
        match ctx.ks.read(ctx.db, k) {
            Some(crate::keyspace::Entry { value: Value::Str(v), .. }) => ctx.out.bulk(v),
            _ => ctx.out.null(),
        }
    }
    Ok(())
}

fn mset(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if argv.len() % 2 == 0 {
        return Err(err::wrong_args("mset"));
    }
    for kv in argv[1..].chunks(2) {
        store_string(ctx, &kv[0], Blob::new(&kv[1]), Ttl::None);
    }
    ctx.out.ok();
    ctx.propagate(argv);
    Ok(())
}

fn msetnx(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if argv.len() % 2 == 0 {
        return Err(err::wrong_args("msetnx"));
    }
    let db = ctx.db;
    if argv[1..].chunks(2).any(|kv| ctx.ks.write(db, &kv[0]).is_some()) {
        ctx.out.int(0);
        return Ok(());
    }
    for kv in argv[1..].chunks(2) {
        store_string(ctx, &kv[0], Blob::new(&kv[1]), Ttl::None);
    }
    ctx.out.int(1);
    ctx.propagate(argv);
    Ok(())
}

/// INCR family: parse the stored integer, add with overflow check, store in place.
fn incr_by(ctx: &mut Ctx, key: &[u8], by: i64) -> CmdResult {
    let db = ctx.db;
    let cur = match ctx.ks.write(db, key) {
        Some(e) => parse_i64(as_str(e)?).ok_or(err::NOT_INT)?,
        None => 0,
    };
    let n = cur.checked_add(by).ok_or(err::OVERFLOW)?;
    match ctx.ks.write(db, key) {
        // Keep the TTL: INCR never touches expiry.
        Some(e) => e.value = Value::Str(Blob::from_i64(n)),
        None => {
            ctx.ks.entry_or_insert(db, key, || Value::Str(Blob::from_i64(n)));
        }
    }
    ctx.ks.signal_modified(db, key);
    ctx.ks.notify(notify::STRING, "incrby", db, key);
    ctx.out.int(n);
    ctx.propagate(&[&b"INCRBY"[..], key, by.to_string().as_bytes()]);
    Ok(())
}

fn incr(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    incr_by(ctx, &argv[1], 1)
}

fn decr(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    incr_by(ctx, &argv[1], -1)
}

fn incrby(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    incr_by(ctx, &argv[1], args::int(&argv[2])?)
}

fn decrby(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let by = args::int(&argv[2])?;
    if by == i64::MIN {
        return Err(CmdError::Static("ERR decrement would overflow"));
    }
    incr_by(ctx, &argv[1], -by)
}

fn incrbyfloat(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    use redoubt_protocol::longdouble as ld;
    let db = ctx.db;
    let key = &argv[1];
    // Redis checks the type, then the stored value, then the increment; all in long double.
    let cur = match ctx.ks.write(db, key) {
        Some(e) => ld::parse(as_str(e)?).map_err(|_| err::NOT_FLOAT)?,
        None => Some(ld::Ld::ZERO),
    };
    let by = ld::parse(&argv[2]).map_err(|_| err::NOT_FLOAT)?;
    let overflow = CmdError::Static("ERR increment would produce NaN or Infinity");
    // `None` is an infinity: anything plus infinity is refused like Redis's isinf check.
    let n = match (cur, by) {
        (Some(a), Some(b)) => ld::add(a, b).ok_or(overflow)?,
        _ => return Err(overflow),
    };
    let text = ld::fmt_human(n);
    // Redis stores the result as a plain string (embstr), never as an integer.
    match ctx.ks.write(db, key) {
        Some(e) => e.value = Value::Str(Blob::not_int(&text)),
        None => {
            ctx.ks.entry_or_insert(db, key, || Value::Str(Blob::not_int(&text)));
        }
    }
    ctx.ks.signal_modified(db, key);
    ctx.ks.notify(notify::STRING, "incrbyfloat", db, key);
    ctx.out.bulk(&text);
    // Like Redis: replicate the result, not the increment, so float rounding cannot differ.
    ctx.propagate(&[&b"SET"[..], key, &text, b"KEEPTTL"]);
    Ok(())
}

fn append(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let db = ctx.db;
    let key = &argv[1];
    let cur_len = match ctx.ks.write(db, key) {
        Some(e) => Some(as_str(e)?.len()),
        None => None,
    };
    let new_len = match cur_len {
        Some(l) => {
            check_size(ctx, (l + argv[2].len()) as u64)?;
            let e = ctx.ks.write(db, key).expect("exists");
            let v = as_str_mut(e)?.make_mut();
            v.extend_from_slice(&argv[2]);
            v.len()
        }
        None => {
            ctx.ks.entry_or_insert(db, key, || Value::Str(Blob::new(&argv[2])));
            argv[2].len()
        }
    };
    ctx.ks.signal_modified(db, key);
    ctx.ks.notify(notify::STRING, "append", db, key);
    ctx.out.int(new_len as i64);
    ctx.propagate(argv);
    Ok(())
}

fn strlen(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let n = match ctx.ks.read(ctx.db, &argv[1]) {
        Some(e) => as_str(e)?.len(),
        None => 0,
    };
    ctx.out.int(n as i64);
    Ok(())
}

fn getrange(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let start = args::int(&argv[2])?;
    let end = args::int(&argv[3])?;
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.bulk(b"");
        return Ok(());
    };
    let s = as_str(e)?;
    let len = s.len() as i64;
    // Redis 7.0's getrangeCommand: an inverted all-negative range is empty; otherwise
    // negative ends count from the end, then both clamp at 0 (so a range entirely before
    // the start still yields the first byte).
    if start < 0 && end < 0 && start > end {
        ctx.out.bulk(b"");
        return Ok(());
    }
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (a, b) = (norm(start), norm(end).min(len - 1));
    if len == 0 || a > b {
        ctx.out.bulk(b"");
    } else {
        let v = s[a as usize..=b as usize].to_vec();
        ctx.out.bulk(&v);
    }
    Ok(())
}

fn setrange(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let db = ctx.db;
    let key = &argv[1];
    let offset = args::int(&argv[2])?;
    if offset < 0 {
        return Err(CmdError::Static("ERR offset is out of range"));
    }
    let offset = offset as usize;
    let val = &argv[3];
    let cur = match ctx.ks.write(db, key) {
        Some(e) => Some(as_str(e)?.len()),
        None => None,
    };
    if val.is_empty() {
        ctx.out.int(cur.unwrap_or(0) as i64);
        return Ok(());
    }
    check_size(ctx, (offset + val.len()) as u64)?;
    if cur.is_none() {
        ctx.ks.entry_or_insert(db, key, || Value::Str(Blob::new(b"")));
    }
    let e = ctx.ks.write(db, key).expect("exists");
    let v = as_str_mut(e)?.make_mut();
    if v.len() < offset + val.len() {
        v.resize(offset + val.len(), 0);
    }
    v[offset..offset + val.len()].copy_from_slice(val);
    let len = v.len();
    ctx.ks.signal_modified(db, key);
    ctx.ks.notify(notify::STRING, "setrange", db, key);
    ctx.out.int(len as i64);
    ctx.propagate(argv);
    Ok(())
}

fn lcs(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let get = |ctx: &mut Ctx, k: &[u8]| -> Result<Vec<u8>, CmdError> {
        match ctx.ks.read(ctx.db, k) {
            Some(e) => match &e.value {
                Value::Str(s) => Ok(s.to_vec()),
                _ => Err(CmdError::Static("ERR The specified keys must contain string values")),
            },
            None => Ok(Vec::new()),
        }
    };
    let a = get(ctx, &argv[1])?;
    let b = get(ctx, &argv[2])?;
    let (mut want_len, mut want_idx, mut with_len) = (false, false, false);
    let mut min_len = 0i64;
    let mut i = 3;
    while i < argv.len() {
        let a = &argv[i];
        if is(a, "len") {
            want_len = true;
        } else if is(a, "idx") {
            want_idx = true;
        } else if is(a, "withmatchlen") {
            with_len = true;
        } else if is(a, "minmatchlen") && i + 1 < argv.len() {
            min_len = args::int(&argv[i + 1])?.max(0);
            i += 1;
        } else {
            return Err(err::SYNTAX);
        }
        i += 1;
    }
    if want_len && want_idx {
        return Err(CmdError::Static("ERR If you want both the length and indexes, please just use IDX."));
    }
    let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1) * 4;
    if cells > ctx.srv.config.read().proto_max_bulk_len {
        return Err(CmdError::Static("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"));
    }
    // Classic DP table of LCS lengths, then a walk back from the end (as Redis does, so the
    // match ranges come out in the same order).
    let w = b.len() + 1;
    let mut dp = vec![0u32; (a.len() + 1) * w];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            dp[i * w + j] = if a[i - 1] == b[j - 1] {
                dp[(i - 1) * w + j - 1] + 1
            } else {
                dp[(i - 1) * w + j].max(dp[i * w + j - 1])
            };
        }
    }
    let total = dp[a.len() * w + b.len()] as usize;
    let mut lcs = vec![0u8; total];
    let mut matches: Vec<((usize, usize), (usize, usize), usize)> = Vec::new();
    let (mut i, mut j, mut idx) = (a.len(), b.len(), total);
    let mut cur: Option<((usize, usize), (usize, usize))> = None;
    let flush = |cur: &mut Option<((usize, usize), (usize, usize))>, m: &mut Vec<_>| {
        if let Some((ra, rb)) = cur.take() {
            let len = ra.1 - ra.0 + 1;
            if len as i64 >= min_len {
                m.push((ra, rb, len));
            }
        }
    };
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            idx -= 1;
            lcs[idx] = a[i - 1];
            let (pa, pb) = (i - 1, j - 1);
            match &mut cur {
                Some((ra, rb)) if ra.0 == pa + 1 && rb.0 == pb + 1 => {
                    ra.0 = pa;
                    rb.0 = pb;
                }
                _ => {
                    flush(&mut cur, &mut matches);
                    cur = Some(((pa, pa), (pb, pb)));
                }
            }
            i -= 1;
            j -= 1;
        } else if dp[(i - 1) * w + j] > dp[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    flush(&mut cur, &mut matches);
    if want_idx {
        ctx.out.map(2);
        ctx.out.bulk(b"matches");
        ctx.out.array(matches.len());
        for (ra, rb, len) in &matches {
            ctx.out.array(if with_len { 3 } else { 2 });
            ctx.out.array(2);
            ctx.out.int(ra.0 as i64);
            ctx.out.int(ra.1 as i64);
            ctx.out.array(2);
            ctx.out.int(rb.0 as i64);
            ctx.out.int(rb.1 as i64);
            if with_len {
                ctx.out.int(*len as i64);
            }
        }
        ctx.out.bulk(b"len");
        ctx.out.int(total as i64);
    } else if want_len {
        ctx.out.int(total as i64);
    } else {
        ctx.out.bulk(&lcs);
    }
    Ok(())
}
