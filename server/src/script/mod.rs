//! Lua scripting as Redis 7 does it: EVAL and friends run a Lua 5.1 function under the
//! keyspace lock (so atomically), `redis.call` runs commands through the same command
//! table as clients, and replies convert between RESP and Lua by Redis's rules.
//!
//! Replication needs nothing special: a script's writes record their own deterministic
//! operations (`Ctx::propagate`) like any command's, so the log carries a script's
//! *effects* (as Redis 7 replicates by default) and every replica applies exactly what the
//! leader did, whatever the script read from the clock or the random generator.
//!
//! The interpreter is one per server, created at start: the globals are read-only for
//! scripts (a write, or a read of an unknown global, is an error), and the libraries are
//! Redis's set (`string`, `table`, `math`, `bit`, `cjson`, `struct`, `cmsgpack`; no `os`,
//! `io`, `require`).

pub mod functions;
pub mod libs;
pub mod pack;
pub mod payload;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;
use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value as Lv};
use redoubt_protocol::client_codec::{self, Value as Rv};
use redoubt_protocol::ReplyBuf;

use crate::cmd::{self, flags, CmdError, Ctx};

/// How long a script runs on its connection's worker before it hands the worker's other
/// work to another thread (see `Engine::run`).
const HAND_OFF_AFTER: Duration = Duration::from_millis(10);
/// How many hook calls (every 100k instructions) try the hand-off.
const HAND_OFF_ATTEMPTS: u32 = 20;
/// Script runs between two explicit garbage-collection steps.
const GC_STEP_EVERY: u64 = 50;

/// What `SCRIPT KILL` and the `BUSY` state look at while a script runs (readable without
/// the keyspace lock, which the script holds).
#[derive(Debug, Default)]
pub struct Watchdog {
    /// A script has run past `lua-time-limit`: other clients get `-BUSY`.
    pub busy: AtomicBool,
    /// SCRIPT KILL asked the running script to stop.
    pub kill: AtomicBool,
    /// Whether the running script wrote (then it cannot be killed): 0 no script, 1 read
    /// only so far, 2 wrote.
    pub state: AtomicU8,
    /// The running script is a function (FCALL): FUNCTION KILL stops it, not SCRIPT KILL.
    pub function: AtomicBool,
    /// The running function and its command, for FUNCTION STATS while it runs.
    pub running: parking_lot::Mutex<Option<RunningFunction>>,
    /// Library and function counts, for FUNCTION STATS while a function runs.
    pub counts: parking_lot::Mutex<(usize, usize)>,
}

/// FUNCTION STATS's `running_script`.
#[derive(Debug, Clone)]
pub struct RunningFunction {
    pub name: String,
    pub command: Vec<Bytes>,
    pub started: Instant,
}

impl Watchdog {
    /// The `-BUSY` text for the script running now.
    pub fn busy_error(&self) -> &'static str {
        if self.function.load(Ordering::Acquire) {
            "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
        } else {
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
        }
    }
}

/// A cached script's source (its compiled function is in `Engine::compiled`).
struct Script {
    body: Bytes,
    /// Flags from a `#!lua flags=...` first line; None for a script without one (Redis's
    /// legacy rules: it may write, and EVAL_RO makes it read-only).
    flags: Option<u8>,
}

/// The interpreter and the script cache (`SCRIPT LOAD`, EVAL's implicit load).
pub struct Engine {
    lua: Lua,
    scripts: HashMap<[u8; 40], Script>,
    /// The compiled scripts, SHA -> function, in one Lua table. Not one mlua `Function`
    /// each: mlua holds every Rust-side handle in a slot of an auxiliary Lua stack capped
    /// near 8,000, and a cache of that many scripts would make every later EVAL fail.
    compiled: Table,
    /// The real globals (scripts see a read-only proxy).
    globals: Table,
    env: Table,
    runner: Function,
    /// FUNCTION libraries' globals, and the Lua side of FUNCTION LOAD (see SANDBOX).
    lib_env: Table,
    load_library: Function,
    functions: functions::FunctionSet,
    /// Script runs so far (for the periodic GC step).
    runs: u64,
}

/// Points `redis.call` at the running script's state (see `Engine::run`).
struct CallPtr(*const RefCell<CallState<'static, 'static>>);

// SAFETY: only dereferenced on the thread running the script, while `run` is on the stack.
unsafe impl Send for CallPtr {}

/// What runs: a cached EVAL script or a FUNCTION.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Script(&'a [u8; 40]),
    Function(&'a [u8]),
}

/// Options of one script run.
pub struct Run<'a> {
    pub target: Target<'a>,
    /// The client's command (FUNCTION STATS shows it).
    pub command: &'a [Bytes],
    pub keys: &'a [Bytes],
    pub args: &'a [Bytes],
    /// EVAL_RO / EVALSHA_RO: writes are refused.
    pub read_only: bool,
    /// `lua-time-limit` in ms (0: none): past it, other clients get `-BUSY`.
    pub time_limit_ms: u64,
}

const SANDBOX: &str = r##"
local real, readonly_error = ...
-- Raised from an __index function (level 3: the code that read the name).
local function no_global(k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 3)
end
-- A read-only view of `t`; with `strict`, reading a missing name is an error too.
local function protect(t, strict)
  return setmetatable({}, {
    __index = strict and function(_, k)
      local v = t[k]
      if v == nil then no_global(k) end
      return v
    end or t,
    __newindex = function() error("Attempt to modify a readonly table", 2) end,
    __metatable = false,
  })
end
-- Unknown globals are an error, except the ones Redis removed but still answers nil for.
setmetatable(real, {
  __index = function(_, k)
    if k == "loadstring" then return nil end
    no_global(k)
  end,
  __metatable = false,
})
local env = protect(real)
for _, lib in ipairs({"redis", "string", "table", "math", "bit", "cjson", "struct", "cmsgpack"}) do
  rawset(real, lib, protect(rawget(real, lib)))
end
rawset(real, "_G", env)
-- redis.call raises the error table redis.pcall would return (Redis 7: a script that
-- catches it with pcall sees a table with an `err` field).
local call_impl = rawget(real, "__call_impl")
rawset(real, "__call_impl", nil)
local redis = rawget(real, "redis_impl")
rawset(real, "redis_impl", nil)
-- redis.call is a C function (see `call_trampoline`): a script's `return redis.call(...)`
-- then keeps its frame, and the error carries the script's line, as in Redis.
rawset(redis, "call", rawget(real, "__call_raw"))
rawset(real, "__call_raw", nil)
rawset(redis, "pcall", function(...)
  return (call_impl(false, ...))
end)
local setresp_impl = rawget(redis, "setresp_impl")
rawset(redis, "setresp_impl", nil)
rawset(redis, "setresp", function(v)
  local r, failed = setresp_impl(v)
  if failed then error(r, 0) end
end)
-- Scripts' rawset cannot write into the protected tables either.
local raw_rawset = rawset
rawset(real, "rawset", function(t, k, v)
  if getmetatable(t) == false then error("Attempt to modify a readonly table", 2) end
  return raw_rawset(t, k, v)
end)
-- Runs a script, or a function with its (keys, args): (true, result) or (false, error
-- table). Like Redis's error handler, the handler notes the script's line where the error
-- happened (an error raised with no position, `error(msg, 0)` or one from inside a C
-- function, still gets its line).
local err_line = rawget(real, "__err_line")
raw_rawset(real, "__err_line", nil)
local function on_error(e)
  if type(e) == "table" and type(rawget(e, "err")) == "string" then
    -- A script's own `error({err = ...})` gets the line too, as in Redis.
    if rawget(e, "line") == nil then raw_rawset(e, "line", err_line()) end
    return e
  end
  return {runtime = tostring(e), line = err_line()}
end
-- Redis 7.0's pcall hands a caught error table (redis.call's, or a script's `{err = ...}`)
-- to the script as its `err` string; xpcall's handler still sees the table.
local raw_pcall = pcall
local function caught(ok, ...)
  if not ok then
    local e = ...
    if type(e) == "table" and type(rawget(e, "err")) == "string" then return false, rawget(e, "err") end
  end
  return ok, ...
end
raw_rawset(real, "pcall", function(...) return caught(raw_pcall(...)) end)
local function runner(f, keys, args)
  local ok, r
  if keys == nil then
    ok, r = xpcall(f, on_error)
  else
    -- Lua 5.1's xpcall passes no arguments.
    ok, r = xpcall(function() return f(keys, args) end, on_error)
  end
  if ok then return true, r end
  return false, r
end

-- FUNCTION libraries. Their code runs with `lib_env` as its globals, and so do the
-- functions it defines (closures keep their chunk's environment). While a library loads,
-- that environment offers only the load API (`redis.register_function`, `redis.log`, the
-- version), as Redis 7 does; afterwards, what EVAL scripts see, minus KEYS and ARGV and the
-- EVAL-only parts of `redis`.
local pairs, type, tostring, error, select = pairs, type, tostring, error, select
local find = string.find
local fredis = {}
for k, v in pairs(redis) do fredis[k] = v end
fredis.replicate_commands, fredis.breakpoint, fredis.debug = nil, nil, nil
fredis = protect(fredis)

local registering, seen
local flag_bits = { ["no-writes"] = 1, ["allow-oom"] = 2, ["allow-stale"] = 4, ["no-cluster"] = 8,
  ["allow-cross-slot-keys"] = 16 }
local function fail(text) error({ err = text }, 0) end
local function is_str(v) local t = type(v); return t == "string" or t == "number" end
local function register_function(...)
  if not registering then fail("ERR redis.register_function can only be called on FUNCTION LOAD command") end
  local n = select("#", ...)
  local name, callback, flags, description
  if n == 1 then
    local t = ...
    if type(t) ~= "table" then
      fail("ERR calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).")
    end
    for k, v in pairs(t) do
      if not is_str(k) then fail("ERR named argument key given to redis.register_function is not a string") end
      if k == "function_name" then
        if not is_str(v) then fail("ERR function_name argument given to redis.register_function must be a string") end
        name = tostring(v)
      elseif k == "description" then
        if not is_str(v) then fail("ERR description argument given to redis.register_function must be a string") end
        description = tostring(v)
      elseif k == "callback" then
        if type(v) ~= "function" then fail("ERR callback argument given to redis.register_function must be a function") end
        callback = v
      elseif k == "flags" then
        if type(v) ~= "table" then
          fail("ERR flags argument to redis.register_function must be a table representing function flags")
        end
        flags = v
      else
        fail("ERR unknown argument given to redis.register_function")
      end
    end
    if not name then fail("ERR redis.register_function must get a function name argument") end
    if not callback then fail("ERR redis.register_function must get a callback argument") end
  elseif n == 2 then
    name, callback = ...
    if not is_str(name) then fail("ERR first argument to redis.register_function must be a string") end
    if type(callback) ~= "function" then fail("ERR second argument to redis.register_function must be a function") end
    name = tostring(name)
  else
    fail("ERR wrong number of arguments to redis.register_function")
  end
  local bits, set = 0, {}
  for _, f in pairs(flags or {}) do
    local b = type(f) == "string" and flag_bits[f]
    if not b then fail("ERR unknown flag given") end
    if not set[b] then set[b] = true; bits = bits + b end
  end
  -- Redis 7.0 words a bad function name as a bad library name; so do we.
  if not find(name, "^[%w_]+$") then
    fail("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long")
  end
  -- Case matters within a library (FCALL's lookup ignores it: see functions.rs).
  if seen[name] then fail("ERR Function already exists in the library") end
  seen[name] = true
  registering[#registering + 1] = { name = name, callback = callback, flags = bits, description = description }
end
local load_redis = { register_function = register_function, log = redis.log,
  REDIS_VERSION = redis.REDIS_VERSION, REDIS_VERSION_NUM = redis.REDIS_VERSION_NUM }
for _, k in pairs({ "LOG_DEBUG", "LOG_VERBOSE", "LOG_NOTICE", "LOG_WARNING" }) do load_redis[k] = redis[k] end
local load_api = { redis = protect(load_redis, true) }

local loading = false
local lib_env
lib_env = setmetatable({}, {
  __index = function(_, k)
    local v
    if loading then
      v = load_api[k]
    elseif k == "_G" then
      return lib_env
    elseif k == "redis" then
      return fredis
    elseif k == "loadstring" then
      return nil
    elseif k ~= "KEYS" and k ~= "ARGV" then
      v = rawget(real, k)
    end
    if v == nil then no_global(k) end
    return v
  end,
  __newindex = function() error("Attempt to modify a readonly table", 2) end,
  __metatable = false,
})
-- Runs a library's code: (true, its registrations) or (false, Redis's error text).
local function load_library(chunk)
  registering, seen, loading = {}, {}, true
  local ok, r = raw_pcall(chunk)
  local regs = registering
  registering, seen, loading = nil, nil, false
  if ok then return true, regs end
  if type(r) == "table" and type(rawget(r, "err")) == "string" then return false, r.err end
  return false, "ERR " .. tostring(r)
end
return env, runner, lib_env, load_library
"##;

impl Engine {
    pub fn new() -> mlua::Result<Engine> {
        let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default())?;
        let globals = lua.globals();
        for name in ["dofile", "loadfile", "load", "loadstring", "require", "module", "newproxy", "gcinfo"] {
            globals.raw_set(name, Lv::Nil)?;
        }
        let math: Table = globals.raw_get("math")?;
        libs::install_random(&lua, &math)?;
        globals.raw_set("bit", libs::bit_table(&lua)?)?;
        globals.raw_set("cjson", libs::cjson_table(&lua)?)?;
        globals.raw_set("struct", pack::struct_table(&lua)?)?;
        globals.raw_set("cmsgpack", pack::cmsgpack_table(&lua)?)?;
        let redis = redis_table(&lua)?;
        globals.raw_set("redis", redis.clone())?;
        globals.raw_set("redis_impl", redis.clone())?;
        // The one entry to the running script's context: a Rust function reading it from
        // app data (set for the length of a run), so it is created once, not per call.
        let call_impl = lua.create_function(|lua, (raise, args): (bool, mlua::Variadic<Lv>)| {
            let Some(ptr) = lua.app_data_ref::<CallPtr>().map(|p| p.0) else {
                return Err(mlua::Error::RuntimeError("redis.call outside a script run".into()));
            };
            // SAFETY: `CallPtr` is set only inside `Engine::run`, pointing at a `RefCell`
            // that outlives the call into Lua, and removed before `run` returns.
            let state = unsafe { &*ptr };
            redis_call(lua, state, args, raise)
        })?;
        lua.set_named_registry_value(CALL_IMPL_KEY, call_impl.clone())?;
        globals.raw_set("__call_impl", call_impl)?;
        // SAFETY: `call_trampoline` follows the Lua C API contract (see there).
        globals.raw_set("__call_raw", unsafe { lua.create_c_function(call_trampoline)? })?;
        // The line of the script where an error happened, from the error handler: level 1
        // is the handler, 2 mlua's xpcall glue, 3 the function that raised. Redis takes that
        // function's line, or its caller's when it is a C function; our sandbox's own
        // functions (the read-only tables) stand where Redis has C ones, so: the first frame
        // of the script from there.
        let err_line = lua.create_function(|lua, ()| {
            Ok((3..64)
                .map_while(|level| {
                    lua.inspect_stack(level, |d| {
                        let user = d.source().source.is_some_and(|s| s == "@user_script" || s == "@user_function");
                        d.current_line().filter(|_| user)
                    })
                })
                .flatten()
                .next())
        })?;
        globals.raw_set("__err_line", err_line)?;
        redis.raw_set(
            "setresp_impl",
            lua.create_function(|lua, v: Lv| {
                let n = match v {
                    Lv::Number(n) => n as i64,
                    Lv::Integer(n) => n,
                    _ => -1,
                };
                if n != 2 && n != 3 {
                    return call_error(lua, "ERR RESP version must be 2 or 3.".into(), true);
                }
                if let Some(ptr) = lua.app_data_ref::<CallPtr>().map(|p| p.0) {
                    // SAFETY: as for `__call_impl`.
                    unsafe { &*ptr }.borrow_mut().resp3 = n == 3;
                }
                Ok((Lv::Nil, false))
            })?,
        )?;
        let (env, runner, lib_env, load_library): (Table, Function, Table, Function) =
            lua.load(SANDBOX).set_name("=sandbox").call((globals.clone(), Lv::Nil))?;
        let compiled = lua.create_table()?;
        Ok(Engine {
            lua,
            scripts: HashMap::new(),
            compiled,
            globals,
            env,
            runner,
            lib_env,
            load_library,
            functions: Default::default(),
            runs: 0,
        })
    }

    /// Compiles and caches `body`; returns its SHA1 (lowercase hex) or the compile error
    /// text Redis gives.
    pub fn load(&mut self, body: &[u8]) -> Result<[u8; 40], String> {
        let sha = sha1_hex(body);
        if self.scripts.contains_key(&sha) {
            return Ok(sha);
        }
        let flags = functions::eval_shebang(body)?;
        let func = self
            .lua
            .load(functions::without_shebang(body))
            .set_name("@user_script")
            .set_environment(self.env.clone())
            .into_function()
            .map_err(|e| match e {
                mlua::Error::SyntaxError { message, .. } => {
                    format!("ERR Error compiling script (new function): {message}")
                }
                other => format!("ERR Error compiling script (new function): {other}"),
            })?;
        let key = self.lua.create_string(sha).map_err(|e| format!("ERR {e}"))?;
        self.compiled.raw_set(key, func).map_err(|e| format!("ERR {e}"))?;
        self.scripts.insert(sha, Script { body: Bytes::copy_from_slice(body), flags });
        Ok(sha)
    }

    pub fn exists(&self, sha: &[u8]) -> bool {
        to_sha(sha).is_some_and(|s| self.scripts.contains_key(&s))
    }

    /// The source of a cached script (a follower forwards EVALSHA as EVAL with it).
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        self.scripts.get(&to_sha(sha)?).map(|s| s.body.clone())
    }

    /// A cached script's shebang flags (None: no shebang, or not cached).
    pub fn script_flags(&self, sha: &[u8; 40]) -> Option<u8> {
        self.scripts.get(sha).and_then(|s| s.flags)
    }

    pub fn flush(&mut self) {
        self.scripts.clear();
        if let Ok(t) = self.lua.create_table() {
            self.compiled = t;
        }
        self.lua.gc_collect().ok();
    }

    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    /// Runs a cached script or a function against `ctx` and writes its reply into `ctx.out`.
    pub fn run(&mut self, ctx: &mut Ctx, run: &Run, dog: &std::sync::Arc<Watchdog>) -> Result<(), CmdError> {
        let (func, label, is_function) = match run.target {
            Target::Script(sha) => match self.scripts.get(sha) {
                Some(_) => {
                    let key = self.lua.create_string(sha).map_err(lua_err)?;
                    let func: Function = self.compiled.raw_get(key).map_err(lua_err)?;
                    (func, String::from_utf8_lossy(sha).into_owned(), false)
                }
                None => return Err(CmdError::Static("NOSCRIPT No matching script. Please use EVAL.")),
            },
            Target::Function(name) => match self.functions.get(name) {
                Some(f) => (f.callback.clone(), f.name.clone(), true),
                None => return Err(CmdError::Static("ERR Function not found")),
            },
        };
        let lua = &self.lua;
        let keys = lua
            .create_sequence_from(
                run.keys.iter().map(|k| lua.create_string(k)).collect::<Result<Vec<_>, _>>().map_err(lua_err)?,
            )
            .map_err(lua_err)?;
        let argv = lua
            .create_sequence_from(
                run.args.iter().map(|k| lua.create_string(k)).collect::<Result<Vec<_>, _>>().map_err(lua_err)?,
            )
            .map_err(lua_err)?;
        // A script reads KEYS and ARGV as globals; a function gets them as arguments.
        let call_args = if is_function {
            (Lv::Table(keys), Lv::Table(argv))
        } else {
            self.globals.raw_set("KEYS", keys).map_err(lua_err)?;
            self.globals.raw_set("ARGV", argv).map_err(lua_err)?;
            (Lv::Nil, Lv::Nil)
        };

        // The watchdog: every 100k instructions, note when the script passed the time limit
        // (others now get -BUSY) and stop it if SCRIPT KILL asked and it has not written.
        let started = Instant::now();
        dog.kill.store(false, Ordering::Relaxed);
        dog.function.store(is_function, Ordering::Release);
        if is_function {
            *dog.running.lock() = Some(RunningFunction { name: label.clone(), command: run.command.to_vec(), started });
            let fs = &self.functions;
            *dog.counts.lock() = (fs.libraries.len(), fs.function_count());
        }
        dog.state.store(1, Ordering::Release);
        let limit = run.time_limit_ms;
        let dog_ptr = dog.clone();
        // A script runs on the connection's worker thread. Most finish in microseconds; one
        // that is still running after `HAND_OFF_AFTER` hands the worker's other duties
        // (sockets, other connections, Raft's tasks) to a fresh thread, so that they keep
        // being served (and answered `-BUSY` past the time limit). Doing it for every
        // script cost a thread hand-off per EVAL, a third of its throughput.
        let hand_off_after = HAND_OFF_AFTER.min(Duration::from_millis(limit.max(2) / 2));
        // Hand-off attempts left (none outside a multi-threaded runtime).
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let attempts = std::cell::Cell::new(if multi_thread { HAND_OFF_ATTEMPTS } else { 0 });
        lua.set_hook(mlua::HookTriggers::new().every_nth_instruction(100_000), move |_, _| {
            let elapsed = started.elapsed();
            if attempts.get() > 0 && elapsed >= hand_off_after {
                attempts.set(attempts.get() - 1);
                // The worker's core goes to a new thread while the closure runs; the pause
                // lets that thread take it for good. If this thread takes it back first
                // (the new one was slow to start), the next hook tries again; once the
                // core is gone, a further attempt has nothing to hand over and only pauses.
                tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(1)));
            }
            if limit > 0 && elapsed.as_millis() as u64 >= limit {
                dog_ptr.busy.store(true, Ordering::Release);
            }
            if dog_ptr.kill.load(Ordering::Acquire) {
                return Err(mlua::Error::RuntimeError("ERR Script killed by user with SCRIPT KILL...".into()));
            }
            Ok(mlua::VmState::Continue)
        })
        .map_err(lua_err)?;

        // SELECT inside a script changes the script's database, never the caller's (Redis 7).
        let caller_db = ctx.db;
        let state = RefCell::new(CallState { ctx, resp3: false, read_only: run.read_only, dog });
        // SAFETY: the lifetimes are erased only for the pointer stored in app data, which
        // is removed below, before `state` goes out of scope.
        let erased = &state as *const RefCell<CallState> as *const RefCell<CallState<'static, 'static>>;
        lua.set_app_data(CallPtr(erased));
        let result: mlua::Result<(bool, Lv)> =
            if is_function { self.runner.call((func, call_args.0, call_args.1)) } else { self.runner.call(func) };
        lua.remove_app_data::<CallPtr>();
        lua.remove_hook();
        let st = state.into_inner();
        st.ctx.db = caller_db;
        let killed = dog.kill.swap(false, Ordering::AcqRel);
        dog.state.store(0, Ordering::Release);
        dog.busy.store(false, Ordering::Release);
        if is_function {
            *dog.running.lock() = None;
        }
        // Scripts create garbage per call; an extra step every so many runs (as Redis does,
        // every 50) keeps the heap from growing between cycles without a full collection's
        // pause, and without paying for a step on every call.
        self.runs = self.runs.wrapping_add(1);
        if self.runs % GC_STEP_EVERY == 0 {
            let _ = lua.gc_step();
        }
        let sha = label.as_str();
        let chunk = if is_function { "user_function" } else { "user_script" };
        match result {
            Ok((true, ret)) => {
                write_reply(st.ctx.out, &ret, st.resp3, 0);
                Ok(())
            }
            _ if killed => Err(CmdError::Owned(format!("ERR Script killed by user with SCRIPT KILL... script: {sha}"))),
            Ok((false, Lv::Table(t))) if t.raw_get::<Lv>("runtime").is_ok_and(|m| m.is_string()) => {
                let msg: mlua::LuaString = t.raw_get("runtime").map_err(lua_err)?;
                let line: Option<i64> = t.raw_get("line").unwrap_or(None);
                Err(CmdError::Owned(runtime_error(&msg.to_string_lossy(), sha, chunk, line)))
            }
            Ok((false, Lv::Table(t))) => {
                // An error table raised by redis.call: the command's text and its line.
                let text: String = t.raw_get("err").unwrap_or_default();
                let line = match t.raw_get::<Lv>("line") {
                    Ok(Lv::Number(l)) => format!(", on @{chunk}:{}.", l as i64),
                    Ok(Lv::Integer(l)) => format!(", on @{chunk}:{l}."),
                    _ => String::new(),
                };
                Err(CmdError::Owned(format!("{text} script: {sha}{line}")))
            }
            Ok((false, other)) => {
                let msg = match other {
                    Lv::String(s) => s.to_string_lossy(),
                    _ => "unknown error".to_string(),
                };
                Err(CmdError::Owned(runtime_error(&msg, sha, chunk, None)))
            }
            Err(e) => Err(CmdError::Owned(runtime_error(&e.to_string(), sha, chunk, None))),
        }
    }
}

/// Where `call_trampoline` finds the Rust side of `redis.call` (a registry field).
const CALL_IMPL_KEY: &str = "redoubt.call_impl";

/// `redis.call` as a C function: calls the Rust `__call_impl(true, ...)` and raises the
/// error table it returns for a failed command. It must be a C function, not a Lua
/// wrapper: Lua 5.1 turns `return f(...)` into a tail call that discards the script's frame
/// when `f` is a Lua function, but keeps it for a C function, and Redis reports the line of
/// that frame.
///
/// SAFETY (contract): called by Lua with its arguments on the stack; holds nothing with a
/// destructor, so the `lua_error` longjmp (or an error raised inside `lua_call`) skipping
/// this frame is sound.
unsafe extern "C-unwind" fn call_trampoline(state: *mut mlua::ffi::lua_State) -> std::os::raw::c_int {
    use mlua::ffi;
    let n = ffi::lua_gettop(state);
    ffi::luaL_checkstack(state, 3, std::ptr::null());
    ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, c"redoubt.call_impl".as_ptr());
    ffi::lua_insert(state, 1);
    ffi::lua_pushboolean(state, 1);
    ffi::lua_insert(state, 2);
    ffi::lua_call(state, n + 1, 2);
    if ffi::lua_toboolean(state, -1) != 0 {
        ffi::lua_pop(state, 1);
        ffi::lua_error(state);
    }
    ffi::lua_pop(state, 1);
    1
}

/// What a running script's `redis.call` needs.
struct CallState<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    resp3: bool,
    read_only: bool,
    dog: &'c Watchdog,
}

/// `redis.call` (raise = true) and `redis.pcall`: the reply, and whether it is an error
/// the Lua side must raise.
fn redis_call(
    lua: &Lua,
    state: &RefCell<CallState>,
    args: mlua::Variadic<Lv>,
    raise: bool,
) -> mlua::Result<(Lv, bool)> {
    let fail = |lua: &Lua, text: String| call_error(lua, text, raise);
    if args.is_empty() {
        return fail(lua, "ERR Please specify at least one argument for this redis lib call".into());
    }
    let mut argv = Vec::with_capacity(args.len());
    for a in args.iter() {
        match a {
            Lv::String(s) => argv.push(Bytes::copy_from_slice(&s.as_bytes())),
            Lv::Number(n) => argv.push(Bytes::from(libs::fmt_g14(*n).into_bytes())),
            Lv::Integer(n) => argv.push(Bytes::from(n.to_string().into_bytes())),
            _ => return fail(lua, "ERR Lua redis lib command arguments must be strings or integers".into()),
        }
    }
    let Some(spec) = cmd::lookup(&argv[0]) else {
        return fail(lua, "ERR Unknown Redis command called from script".into());
    };
    if !spec.arity_ok(argv.len()) {
        return fail(lua, "ERR Wrong number of args calling Redis command from script".into());
    }
    let eff = effective_spec(spec, &argv);
    if eff.flags & (flags::NOSCRIPT | flags::PUBSUB | flags::BLOCKING) != 0 && !allowed_in_script(eff) {
        return fail(lua, "ERR This Redis command is not allowed from script".into());
    }
    let mut st = state.borrow_mut();
    if eff.is_write() {
        if st.read_only {
            return fail(lua, "ERR Write commands are not allowed from read-only scripts.".into());
        }
        st.dog.state.store(2, Ordering::Release);
    }
    let resp3 = st.resp3;
    let mut out = ReplyBuf::new(resp3);
    {
        let ctx = &mut *st.ctx;
        // Connection-level commands (CLIENT, HELLO, ...) are refused above; the rest must
        // not change the caller's connection state, so the call runs detached.
        let mut inner = Ctx::detached(&mut *ctx.ks, ctx.srv, &mut out, ctx.db, ctx.client_id);
        inner.in_multi = true;
        crate::conn::call(&mut inner, spec, &argv);
        // SELECT inside a script changes the script's database only (Redis 7).
        let db = inner.db;
        ctx.db = db;
    }
    drop(st);
    let mut buf = bytes::BytesMut::from(&out.buf[..]);
    let reply = match client_codec::decode_reply(&mut buf, resp3) {
        Ok(Some(v)) => v,
        _ => return fail(lua, "ERR internal: unparsable reply".into()),
    };
    if let Rv::Error(e) = &reply {
        return fail(lua, e.clone());
    }
    Ok((resp_to_lua(lua, &reply, resp3)?, false))
}

/// An error table for a failed `redis.*` call, with the script line when it is to be
/// raised (level 0 is the Rust function, 1 its Lua wrapper, 2 the script).
fn call_error(lua: &Lua, text: String, raise: bool) -> mlua::Result<(Lv, bool)> {
    let t = lua.create_table()?;
    t.raw_set("err", text)?;
    if raise {
        // Level 0 is `__call_impl`, 1 `redis.call` (`call_trampoline`), 2 the script; a
        // frame further up when the script called through a helper of its own.
        let line = (2..8)
            .find_map(|level| {
                lua.inspect_stack(level, |d| {
                    let user = d.source().source.is_some_and(|s| s == "@user_script" || s == "@user_function");
                    d.current_line().filter(|_| user)
                })
                .flatten()
            })
            .unwrap_or(1);
        t.raw_set("source", "user_script")?;
        t.raw_set("line", line)?;
    }
    Ok((Lv::Table(t), raise))
}

/// Commands Redis allows in scripts although their flags would suggest otherwise.
fn allowed_in_script(spec: &cmd::Spec) -> bool {
    // PUBLISH is a pubsub command that scripts may call.
    spec.name == "publish" || spec.name == "spublish"
}

/// The spec whose flags apply: a container's subcommand entry when it has one.
fn effective_spec(spec: &'static cmd::Spec, argv: &[Bytes]) -> &'static cmd::Spec {
    if spec.subcommands.is_empty() || argv.len() < 2 {
        return spec;
    }
    let sub = String::from_utf8_lossy(&argv[1]).to_ascii_lowercase();
    spec.subcommands.iter().find(|s| s.name.split('|').nth(1) == Some(sub.as_str())).unwrap_or(spec)
}

fn error_table(lua: &Lua, text: &str) -> mlua::Result<Lv> {
    let t = lua.create_table()?;
    t.raw_set("err", text)?;
    Ok(Lv::Table(t))
}

/// A command's reply as Lua sees it (Redis's `redisProtocolToLuaType`).
fn resp_to_lua(lua: &Lua, v: &Rv, resp3: bool) -> mlua::Result<Lv> {
    let single = |key: &str, val: Lv| -> mlua::Result<Lv> {
        let t = lua.create_table()?;
        t.raw_set(key, val)?;
        Ok(Lv::Table(t))
    };
    Ok(match v {
        Rv::Simple(s) => single("ok", Lv::String(lua.create_string(s)?))?,
        Rv::Error(e) => single("err", Lv::String(lua.create_string(e)?))?,
        Rv::Int(n) => Lv::Number(*n as f64),
        Rv::Bulk(b) => Lv::String(lua.create_string(b)?),
        // RESP2 nulls are `false` in Lua; RESP3's null is `nil`.
        Rv::Nil | Rv::NilArray => {
            if resp3 {
                Lv::Nil
            } else {
                Lv::Boolean(false)
            }
        }
        Rv::Array(items) | Rv::Push(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, x) in items.iter().enumerate() {
                t.raw_set(i + 1, resp_to_lua(lua, x, resp3)?)?;
            }
            Lv::Table(t)
        }
        Rv::Map(pairs) => {
            let m = lua.create_table_with_capacity(0, pairs.len())?;
            for (k, x) in pairs {
                m.raw_set(resp_to_lua(lua, k, resp3)?, resp_to_lua(lua, x, resp3)?)?;
            }
            single("map", Lv::Table(m))?
        }
        Rv::Set(items) => {
            let m = lua.create_table_with_capacity(0, items.len())?;
            for x in items {
                m.raw_set(resp_to_lua(lua, x, resp3)?, true)?;
            }
            single("set", Lv::Table(m))?
        }
        Rv::Double(d) => single("double", Lv::Number(*d))?,
        Rv::Bool(b) => Lv::Boolean(*b),
        Rv::BigNumber(b) => single("big_number", Lv::String(lua.create_string(b)?))?,
        Rv::Verbatim(format, s) => {
            let t = lua.create_table()?;
            t.raw_set("format", format.as_str())?;
            t.raw_set("string", lua.create_string(s)?)?;
            single("verbatim_string", Lv::Table(t))?
        }
    })
}

/// Redis nests replies at most this deep when converting a script's result; deeper tables
/// become an error instead of a stack overflow.
const MAX_REPLY_DEPTH: usize = 1000;

/// A script's return value as the client's reply (Redis's `luaReplyToRedisReply`).
fn write_reply(out: &mut ReplyBuf, v: &Lv, resp3: bool, depth: usize) {
    match v {
        Lv::Nil => out.null(),
        Lv::Boolean(b) => {
            if resp3 {
                out.boolean(*b)
            } else if *b {
                out.int(1)
            } else {
                out.null()
            }
        }
        // Lua numbers become integers, truncated toward zero (Redis casts to long long;
        // what x86 gives for a value out of range or NaN is the minimum).
        Lv::Number(n) => out.int(if n.is_finite() && n.abs() < 9.2e18 { *n as i64 } else { i64::MIN }),
        Lv::Integer(n) => out.int(*n),
        Lv::String(s) => out.bulk(&s.as_bytes()),
        Lv::Table(t) => {
            if depth >= MAX_REPLY_DEPTH {
                out.error("ERR reached lua stack limit");
                return;
            }
            // Redis reads status and error texts as C strings: they end at a NUL.
            // Line breaks become spaces, as Redis's status and error replies do.
            let c_str = |b: &[u8]| -> Vec<u8> {
                let b = b.split(|&c| c == 0).next().unwrap_or_default();
                b.iter().map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }).collect()
            };
            if let Ok(Lv::String(e)) = t.raw_get::<Lv>("err") {
                // An error text ends at its first line break.
                let raw = e.as_bytes();
                let text = raw.split(|&c| c == 0 || c == b'\r' || c == b'\n').next().unwrap_or_default();
                out.error(&String::from_utf8_lossy(text));
            } else if let Ok(Lv::String(s)) = t.raw_get::<Lv>("ok") {
                out.simple_bytes(&c_str(&s.as_bytes()));
            } else if let Ok(Lv::Number(d)) = t.raw_get::<Lv>("double") {
                out.double(d);
            } else if let Ok(Lv::String(s)) = t.raw_get::<Lv>("big_number") {
                if out.resp3() {
                    out.raw(b"(");
                    out.raw(&s.as_bytes());
                    out.raw(b"\r\n");
                } else {
                    out.bulk(&s.as_bytes());
                }
            } else if let Ok(Lv::Table(m)) = t.raw_get::<Lv>("map") {
                let pairs: Vec<(Lv, Lv)> = m.pairs::<Lv, Lv>().filter_map(Result::ok).collect();
                out.map(pairs.len());
                for (k, x) in &pairs {
                    write_reply(out, k, resp3, depth + 1);
                    write_reply(out, x, resp3, depth + 1);
                }
            } else if let Ok(Lv::Table(m)) = t.raw_get::<Lv>("set") {
                let items: Vec<Lv> = m.pairs::<Lv, Lv>().filter_map(Result::ok).map(|(k, _)| k).collect();
                out.set(items.len());
                for k in &items {
                    write_reply(out, k, resp3, depth + 1);
                }
            } else if let Ok(Lv::Table(vs)) = t.raw_get::<Lv>("verbatim_string") {
                let format: String = vs.raw_get("format").unwrap_or_default();
                let s: mlua::LuaString = match vs.raw_get("string") {
                    Ok(s) => s,
                    Err(_) => return out.null(),
                };
                out.verbatim(&format, &s.as_bytes());
            } else {
                // An array: elements 1..n up to the first nil.
                let mut items = Vec::new();
                let mut i = 1;
                while let Ok(x) = t.raw_get::<Lv>(i) {
                    if x.is_nil() {
                        break;
                    }
                    items.push(x);
                    i += 1;
                }
                out.array(items.len());
                for x in &items {
                    write_reply(out, x, resp3, depth + 1);
                }
            }
        }
        _ => out.null(),
    }
}

/// The error reply for a script that raised a Lua error: Redis 7's `ERR <message> script:
/// <sha>, on @user_script:<line>.` (for a function, its name and `@user_function`; the line
/// the error handler found, else the message's own position).
fn runtime_error(msg: &str, sha: &str, chunk: &str, line: Option<i64>) -> String {
    let msg = msg.split("\nstack traceback:").next().unwrap_or("").trim_end();
    let line = line
        .or_else(|| {
            msg.strip_prefix(chunk)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse::<i64>().ok())
        })
        .map_or(String::new(), |l| format!(", on @{chunk}:{l}."));
    format!("ERR {msg} script: {sha}{line}")
}

fn lua_err(e: mlua::Error) -> CmdError {
    CmdError::Owned(format!("ERR {e}"))
}

/// The `redis` table's functions that need no running script.
fn redis_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "error_reply",
        lua.create_function(|lua, s: mlua::LuaString| {
            let s = s.to_string_lossy();
            let s = s.strip_prefix('-').unwrap_or(&s);
            let text = if s.contains(' ') { s.to_string() } else { format!("ERR {s}") };
            error_table(lua, &text)
        })?,
    )?;
    t.raw_set(
        "status_reply",
        lua.create_function(|lua, s: mlua::LuaString| {
            let t = lua.create_table()?;
            t.raw_set("ok", s)?;
            Ok(t)
        })?,
    )?;
    t.raw_set(
        "sha1hex",
        lua.create_function(
            |_, s: mlua::LuaString| Ok(String::from_utf8_lossy(&sha1_hex(&s.as_bytes())).into_owned()),
        )?,
    )?;
    t.raw_set(
        "log",
        lua.create_function(|_, (level, msg): (i64, mlua::Variadic<mlua::LuaString>)| {
            let text: Vec<String> = msg.iter().map(|s| s.to_string_lossy()).collect();
            let text = text.join(" ");
            match level {
                0 => tracing::debug!(target: "script", "{text}"),
                1 | 2 => tracing::info!(target: "script", "{text}"),
                _ => tracing::warn!(target: "script", "{text}"),
            }
            Ok(())
        })?,
    )?;
    // Effects replication is the only mode (as in Redis 7): these are accepted and ignored.
    t.raw_set("set_repl", lua.create_function(|_, _: mlua::Variadic<Lv>| Ok(()))?)?;
    t.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    t.raw_set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    t.raw_set("debug", lua.create_function(|_, _: mlua::Variadic<Lv>| Ok(()))?)?;
    for (k, v) in [("LOG_DEBUG", 0), ("LOG_VERBOSE", 1), ("LOG_NOTICE", 2), ("LOG_WARNING", 3)] {
        t.raw_set(k, v)?;
    }
    for (k, v) in [("REPL_NONE", 0), ("REPL_SLAVE", 1), ("REPL_REPLICA", 1), ("REPL_AOF", 2), ("REPL_ALL", 3)] {
        t.raw_set(k, v)?;
    }
    t.raw_set("REDIS_VERSION", crate::cmd::server::REDIS_VERSION)?;
    t.raw_set("REDIS_VERSION_NUM", redis_version_num())?;
    Ok(t)
}

fn redis_version_num() -> i64 {
    let mut n = 0;
    for part in crate::cmd::server::REDIS_VERSION.split('.').take(3) {
        n = n * 256 + part.parse::<i64>().unwrap_or(0);
    }
    n
}

/// SHA1 as 40 lowercase hex digits.
pub fn sha1_hex(body: &[u8]) -> [u8; 40] {
    let hex = sha1_smol::Sha1::from(body).digest().to_string();
    let mut out = [0u8; 40];
    out.copy_from_slice(hex.as_bytes());
    out
}

/// A client-given SHA (any case) as the cache key.
pub fn to_sha(s: &[u8]) -> Option<[u8; 40]> {
    let mut out: [u8; 40] = s.try_into().ok()?;
    out.make_ascii_lowercase();
    Some(out)
}
