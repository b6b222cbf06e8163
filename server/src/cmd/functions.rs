//! Redis 7 functions (Redis's `functions.c`): FUNCTION LOAD / DELETE / FLUSH / LIST / DUMP
//! / RESTORE / STATS / KILL, FCALL and FCALL_RO. Libraries are compiled by
//! `crate::script::functions`; their source lives in the keyspace (`Keyspace::libraries`).
//!
//! Replication: the changing subcommands are write commands whose operation is the command
//! itself (the library's code, not anything computed from it), so every node compiles the
//! same source, and the libraries are in every snapshot. FCALL replicates the effects of
//! its writes, like EVAL.

use bytes::Bytes;

use super::args::{self, is};
use super::flags::*;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::script::functions::{RestorePolicy, ALLOW_OOM, FLAG_NAMES, NO_WRITES};
use crate::script::{Run, Target};
use crate::shared::Shared;

pub static COMMANDS: &[Spec] = &[
    Spec::new(
        "fcall",
        -3,
        NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | STALE | MOVABLE_KEYS,
        (0, 0, 0),
        "scripting",
        fcall,
    ),
    Spec::new(
        "fcall_ro",
        -3,
        NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | READONLY | STALE | MOVABLE_KEYS,
        (0, 0, 0),
        "scripting",
        fcall_ro,
    ),
    Spec::new("function", -2, 0, (0, 0, 0), "scripting", function).with_subcommands(&[
        Spec::new("function|load", -3, WRITE | DENYOOM | NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|delete", 3, WRITE | NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|flush", -2, WRITE | NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|restore", -3, WRITE | DENYOOM | NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|list", -2, NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|dump", 2, NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|stats", 2, NOSCRIPT | ALLOW_BUSY, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|kill", 2, NOSCRIPT | ALLOW_BUSY, (0, 0, 0), "scripting", super::container_only),
        Spec::new("function|help", 2, LOADING | STALE, (0, 0, 0), "scripting", super::container_only),
    ]),
];

fn fcall(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    fcall_generic(ctx, argv, false)
}

fn fcall_ro(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    fcall_generic(ctx, argv, true)
}

/// `FCALL function numkeys key... arg...`.
fn fcall_generic(ctx: &mut Ctx, argv: &[Bytes], ro_command: bool) -> CmdResult {
    let srv = ctx.srv;
    let mut engine = srv.scripts.lock();
    let flags = match engine.functions(&ctx.ks.libraries).get(&argv[1]) {
        Some(f) => f.flags,
        None => return Err(CmdError::Static("ERR Function not found")),
    };
    let numkeys = args::int(&argv[2]).map_err(|_| CmdError::Static("ERR Bad number of keys provided"))?;
    if numkeys < 0 {
        return Err(CmdError::Static("ERR Number of keys can't be negative"));
    }
    if numkeys as usize > argv.len() - 3 {
        return Err(CmdError::Static("ERR Number of keys can't be greater than number of args"));
    }
    let read_only = check_flags(ctx, flags, ro_command)?;
    let split = 3 + numkeys as usize;
    let run = Run {
        target: Target::Function(&argv[1]),
        command: argv,
        keys: &argv[3..split],
        args: &argv[split..],
        read_only,
        time_limit_ms: srv.config.read().lua_time_limit,
    };
    crate::cmd::scripting::run_script(ctx, &mut engine, &run)
}

/// What a script's flags (a function's, or an EVAL shebang's) allow before it starts, as
/// Redis's `scriptPrepareForRun`: the `_RO` commands take only `no-writes` scripts, and one
/// that may write is refused while memory is over `maxmemory` unless it says `allow-oom`.
/// Returns whether the run is read-only.
pub fn check_flags(ctx: &mut Ctx, flags: u8, ro_command: bool) -> Result<bool, CmdError> {
    let no_writes = flags & NO_WRITES != 0;
    if ro_command && !no_writes {
        return Err(CmdError::Static("ERR Can not execute a script with write flag using *_ro command."));
    }
    if !no_writes && flags & ALLOW_OOM == 0 {
        crate::conn::oom_check(ctx.srv, ctx.ks)?;
    }
    Ok(no_writes)
}

const HELP: &[&str] = &[
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Prints this help.",
];

fn function(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let srv = ctx.srv;
    // A replica applying the log compiles without the load timeout: the leader already
    // accepted this library, and a slower machine must not refuse it (see `replay`).
    let timeout = ctx.client_id != 0 || ctx.ks.recording();
    if is(sub, "load") && argv.len() >= 3 {
        let mut replace = false;
        for opt in &argv[2..argv.len() - 1] {
            if is(opt, "replace") {
                replace = true;
            } else {
                return Err(CmdError::Owned(format!("ERR Unknown option given: {}", args::s(opt))));
            }
        }
        let code = argv.last().expect("arity");
        let name = srv.scripts.lock().function_load(&mut ctx.ks.libraries, code, replace, timeout)?;
        ctx.propagate(argv);
        ctx.out.bulk(name.as_bytes());
    } else if is(sub, "delete") && argv.len() == 3 {
        srv.scripts.lock().function_delete(&mut ctx.ks.libraries, &argv[2])?;
        ctx.propagate(argv);
        ctx.out.ok();
    } else if is(sub, "flush") && argv.len() <= 3 {
        if argv.len() == 3 && !is(&argv[2], "async") && !is(&argv[2], "sync") {
            return Err(CmdError::Static("ERR FUNCTION FLUSH only supports SYNC|ASYNC option"));
        }
        srv.scripts.lock().function_flush(&mut ctx.ks.libraries);
        ctx.propagate(&[&b"FUNCTION"[..], b"FLUSH"]);
        ctx.out.ok();
    } else if is(sub, "restore") && (argv.len() == 3 || argv.len() == 4) {
        let policy = match argv.get(3) {
            None => RestorePolicy::Append,
            Some(p) if is(p, "append") => RestorePolicy::Append,
            Some(p) if is(p, "replace") => RestorePolicy::Replace,
            Some(p) if is(p, "flush") => RestorePolicy::Flush,
            Some(_) => {
                return Err(CmdError::Static(
                    "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                ))
            }
        };
        srv.scripts.lock().function_restore(&mut ctx.ks.libraries, &argv[2], policy, timeout)?;
        ctx.propagate(argv);
        ctx.out.ok();
    } else if is(sub, "list") {
        list(ctx, argv)?;
    } else if is(sub, "dump") && argv.len() == 2 {
        let payload = srv.scripts.lock().function_dump(&ctx.ks.libraries);
        ctx.out.bulk(&payload);
    } else if is(sub, "stats") && argv.len() == 2 {
        let (libraries, functions) = {
            let mut engine = srv.scripts.lock();
            let set = engine.functions(&ctx.ks.libraries);
            (set.libraries.len(), set.function_count())
        };
        // Nothing runs while this command holds the keyspace; a running function is
        // reported from the connection's busy path (`stats_while_busy`).
        write_stats(ctx.out, None, libraries, functions);
    } else if is(sub, "kill") && argv.len() == 2 {
        // As SCRIPT KILL: a running function is reached through the busy path.
        return Err(CmdError::Static("NOTBUSY No scripts in execution right now."));
    } else if is(sub, "help") && argv.len() == 2 {
        ctx.out.array(HELP.len());
        for l in HELP {
            ctx.out.simple(l);
        }
    } else {
        return Err(err::unknown_subcommand("function", sub));
    }
    Ok(())
}

/// `FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]`.
fn list(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let mut pattern: Option<&Bytes> = None;
    let mut with_code = false;
    let mut i = 2;
    while i < argv.len() {
        if is(&argv[i], "withcode") && !with_code {
            with_code = true;
        } else if is(&argv[i], "libraryname") && pattern.is_none() {
            pattern = Some(argv.get(i + 1).ok_or(CmdError::Static("ERR library name argument was not given"))?);
            i += 1;
        } else {
            return Err(CmdError::Owned(format!("ERR Unknown argument {}", args::s(&argv[i]))));
        }
        i += 1;
    }
    let mut engine = ctx.srv.scripts.lock();
    let set = engine.functions(&ctx.ks.libraries);
    let names: Vec<&String> =
        set.libraries.keys().filter(|n| pattern.is_none_or(|p| args::glob_match(p, n.as_bytes(), false))).collect();
    let out = &mut *ctx.out;
    out.array(names.len());
    for name in names {
        out.map(if with_code { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(name.as_bytes());
        out.bulk(b"engine");
        out.bulk(b"LUA");
        out.bulk(b"functions");
        let fs = set.functions_of(name);
        out.array(fs.len());
        for f in fs {
            out.map(3);
            out.bulk(b"name");
            out.bulk(f.name.as_bytes());
            out.bulk(b"description");
            match &f.description {
                Some(d) => out.bulk(d.as_bytes()),
                None => out.null(),
            }
            out.bulk(b"flags");
            let names: Vec<&str> = FLAG_NAMES.iter().filter(|(_, b)| f.flags & b != 0).map(|(n, _)| *n).collect();
            out.set(names.len());
            for n in names {
                out.simple(n);
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&set.libraries[name].code);
        }
    }
    Ok(())
}

/// FUNCTION STATS's reply.
fn write_stats(
    out: &mut redoubt_protocol::ReplyBuf,
    running: Option<&crate::script::RunningFunction>,
    libraries: usize,
    functions: usize,
) {
    out.map(2);
    out.bulk(b"running_script");
    match running {
        None => out.null(),
        Some(r) => {
            out.map(3);
            out.bulk(b"name");
            out.bulk(r.name.as_bytes());
            out.bulk(b"command");
            out.array(r.command.len());
            for a in &r.command {
                out.bulk(a);
            }
            out.bulk(b"duration_ms");
            out.int(r.started.elapsed().as_millis() as i64);
        }
    }
    out.bulk(b"engines");
    out.map(1);
    out.bulk(b"LUA");
    out.map(2);
    out.bulk(b"libraries_count");
    out.int(libraries as i64);
    out.bulk(b"functions_count");
    out.int(functions as i64);
}

/// FUNCTION STATS while a script holds the keyspace (the connection's busy path): the
/// running function, or `-BUSY` while an EVAL script runs, as Redis answers.
pub fn stats_while_busy(srv: &Shared, out: &mut redoubt_protocol::ReplyBuf) {
    let dog = &srv.script_dog;
    if !dog.function.load(std::sync::atomic::Ordering::Acquire) {
        out.error(dog.busy_error());
        return;
    }
    let running = dog.running.lock().clone();
    let (libraries, functions) = *dog.counts.lock();
    write_stats(out, running.as_ref(), libraries, functions);
}
