//! Scripting commands (Redis's `eval.c`): EVAL, EVALSHA, their read-only forms, and
//! SCRIPT. The interpreter itself is in `crate::script`.

use bytes::Bytes;

use super::args::{self, is};
use super::flags::*;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::script::{self, Run, Target};

pub static COMMANDS: &[Spec] = &[
    Spec::new(
        "eval",
        -3,
        NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | STALE | MOVABLE_KEYS,
        (0, 0, 0),
        "scripting",
        eval,
    ),
    Spec::new(
        "evalsha",
        -3,
        NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | STALE | MOVABLE_KEYS,
        (0, 0, 0),
        "scripting",
        evalsha,
    ),
    Spec::new(
        "eval_ro",
        -3,
        NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | READONLY | STALE | MOVABLE_KEYS,
        (0, 0, 0),
        "scripting",
        eval_ro,
    ),
    Spec::new(
        "evalsha_ro",
        -3,
        NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | READONLY | STALE | MOVABLE_KEYS,
        (0, 0, 0),
        "scripting",
        evalsha_ro,
    ),
    Spec::new("script", -2, 0, (0, 0, 0), "scripting", script).with_subcommands(&[
        Spec::new("script|load", 3, NOSCRIPT | STALE, (0, 0, 0), "scripting", super::container_only),
        Spec::new("script|exists", -3, NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("script|flush", -2, NOSCRIPT, (0, 0, 0), "scripting", super::container_only),
        Spec::new("script|kill", 2, NOSCRIPT | ALLOW_BUSY, (0, 0, 0), "scripting", super::container_only),
        Spec::new("script|help", 2, LOADING | STALE, (0, 0, 0), "scripting", super::container_only),
    ]),
];

fn eval(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    eval_generic(ctx, argv, false, false)
}

fn evalsha(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    eval_generic(ctx, argv, true, false)
}

fn eval_ro(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    eval_generic(ctx, argv, false, true)
}

fn evalsha_ro(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    eval_generic(ctx, argv, true, true)
}

/// `EVAL script numkeys key... arg...` and its forms.
fn eval_generic(ctx: &mut Ctx, argv: &[Bytes], by_sha: bool, read_only: bool) -> CmdResult {
    let numkeys = args::int(&argv[2])?;
    if numkeys < 0 {
        return Err(CmdError::Static("ERR Number of keys can't be negative"));
    }
    if numkeys as usize > argv.len() - 3 {
        return Err(CmdError::Static("ERR Number of keys can't be greater than number of args"));
    }
    let split = 3 + numkeys as usize;
    let srv = ctx.srv;
    let mut engine = srv.scripts.lock();
    let sha = if by_sha {
        match script::to_sha(&argv[1]).filter(|s| engine.exists(s)) {
            Some(s) => s,
            None => return Err(CmdError::Static("NOSCRIPT No matching script. Please use EVAL.")),
        }
    } else {
        let fresh = !engine.exists(&script::sha1_hex(&argv[1]));
        let sha = engine.load(&argv[1]).map_err(CmdError::Owned)?;
        if fresh {
            // Every node learns the script, so EVALSHA works wherever the client goes next.
            ctx.propagate(&[&b"SCRIPT"[..], b"LOAD", &argv[1]]);
        }
        sha
    };
    // A script with a shebang declares what it does (Redis 7): its flags decide, not the
    // command's name alone.
    let read_only = match engine.script_flags(&sha) {
        Some(flags) => super::functions::check_flags(ctx, flags, read_only)?,
        None => read_only,
    };
    let run = Run {
        target: Target::Script(&sha),
        command: argv,
        keys: &argv[3..split],
        args: &argv[split..],
        read_only,
        time_limit_ms: srv.config.read().lua_time_limit,
    };
    run_script(ctx, &mut engine, &run)
}

/// Runs a script or function (the engine's lock held by the caller).
pub fn run_script(ctx: &mut Ctx, engine: &mut script::Engine, run: &Run) -> CmdResult {
    let dog = &ctx.srv.script_dog;
    engine.run(ctx, run, dog)
}

const HELP: &[&str] = &[
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
];

fn script(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let srv = ctx.srv;
    if is(sub, "help") && argv.len() == 2 {
        ctx.out.array(HELP.len());
        for l in HELP {
            ctx.out.simple(l);
        }
    } else if is(sub, "load") && argv.len() == 3 {
        let mut engine = srv.scripts.lock();
        let fresh = !engine.exists(&script::sha1_hex(&argv[2]));
        let sha = engine.load(&argv[2]).map_err(CmdError::Owned)?;
        if fresh {
            ctx.propagate(&[&b"SCRIPT"[..], b"LOAD", &argv[2]]);
        }
        ctx.out.bulk(&sha);
    } else if is(sub, "exists") && argv.len() >= 3 {
        let engine = srv.scripts.lock();
        ctx.out.array(argv.len() - 2);
        for a in &argv[2..] {
            ctx.out.int(engine.exists(a) as i64);
        }
    } else if is(sub, "flush") && argv.len() <= 3 {
        if argv.len() == 3 && !is(&argv[2], "async") && !is(&argv[2], "sync") {
            return Err(CmdError::Static("ERR SCRIPT FLUSH only support SYNC|ASYNC option"));
        }
        srv.scripts.lock().flush();
        ctx.out.ok();
    } else if is(sub, "kill") && argv.len() == 2 {
        // A running script holds the keyspace lock: SCRIPT KILL reaches it through the
        // connection's busy path (see `conn`). Reaching the table means none runs.
        return Err(CmdError::Static("NOTBUSY No scripts in execution right now."));
    } else {
        return Err(err::unknown_subcommand("script", sub));
    }
    Ok(())
}
