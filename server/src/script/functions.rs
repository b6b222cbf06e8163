//! Redis 7 functions: libraries of named Lua functions, loaded with FUNCTION LOAD and
//! called with FCALL.
//!
//! The libraries' source text is replicated data and lives in the keyspace
//! ([`Libraries`]); what is here is its compiled form, kept in step by generation number
//! (`sync_functions`). Every change builds a new registry first (compiling only what is
//! new) and stores it, with its source in the keyspace, only when all of it succeeded: a
//! failed FUNCTION command changes nothing, as in Redis.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;
use mlua::{Function as LuaFn, Table, Value as Lv};

use super::{payload, Engine};
use crate::keyspace::Libraries;

/// Function flags (`redis.register_function{flags = {...}}`, EVAL's shebang), in the order
/// Redis lists them.
pub const FLAG_NAMES: [(&str, u8); 5] = [
    ("no-writes", NO_WRITES),
    ("allow-oom", ALLOW_OOM),
    ("allow-stale", 4),
    ("no-cluster", 8),
    ("allow-cross-slot-keys", 16),
];
pub const NO_WRITES: u8 = 1;
pub const ALLOW_OOM: u8 = 2;

/// How long a library's top-level code may run (Redis's `LOAD_TIMEOUT_MS`). A replica
/// applying the log does not time out: the leader already accepted the library.
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// One registered function.
#[derive(Clone)]
pub struct Function {
    /// As registered (lookups ignore case, as Redis's do).
    pub name: String,
    pub library: String,
    pub description: Option<String>,
    pub flags: u8,
    pub(super) callback: LuaFn,
}

/// One loaded library.
#[derive(Clone)]
pub struct Library {
    pub code: Bytes,
    /// Its functions in registration order. Names are unique here as written; two that
    /// differ only in case may both be registered, and FCALL finds the first (Redis 7.0).
    pub functions: Vec<Function>,
}

/// The compiled libraries, by library name, and the functions FCALL finds, by lower-cased
/// name.
#[derive(Default)]
pub struct FunctionSet {
    generation: u64,
    pub libraries: BTreeMap<String, Library>,
    pub functions: HashMap<String, Function>,
}

impl FunctionSet {
    pub fn get(&self, name: &[u8]) -> Option<&Function> {
        let name = std::str::from_utf8(name).ok()?;
        self.functions.get(&name.to_ascii_lowercase())
    }

    /// The library's functions, sorted by name (FUNCTION LIST; Redis lists them in hash
    /// order, which no client relies on).
    pub fn functions_of(&self, library: &str) -> Vec<&Function> {
        let mut v: Vec<&Function> = self.libraries[library].functions.iter().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// FUNCTION STATS's `functions_count`: every registered function.
    pub fn function_count(&self) -> usize {
        self.libraries.values().map(|l| l.functions.len()).sum()
    }
}

impl FunctionSet {
    /// A new registry: this one's libraries that `keep` names, plus `add` (freshly
    /// compiled), with Redis's error when a function name is taken twice.
    fn merged(
        &self,
        keep: impl Fn(&str) -> bool,
        add: Vec<(String, Bytes, Vec<Function>)>,
    ) -> Result<FunctionSet, String> {
        let mut set = FunctionSet::default();
        let kept = self.libraries.iter().filter(|(n, _)| keep(n)).map(|(n, l)| (n.clone(), l.clone()));
        for (name, mut lib) in kept.chain(add.into_iter().map(|(n, code, functions)| (n, Library { code, functions })))
        {
            for f in &mut lib.functions {
                f.library = name.clone();
                match set.functions.entry(f.name.to_ascii_lowercase()) {
                    hashbrown::hash_map::Entry::Vacant(v) => {
                        v.insert(f.clone());
                    }
                    // The same name in another case in this library: the first stays.
                    hashbrown::hash_map::Entry::Occupied(o) if o.get().library == name => {}
                    hashbrown::hash_map::Entry::Occupied(_) => {
                        return Err(format!("ERR Function {} already exists", f.name));
                    }
                }
            }
            set.libraries.insert(name, lib);
        }
        Ok(set)
    }

    /// The libraries with their compiled functions, to merge into another registry.
    fn into_parts(self) -> Vec<(String, Bytes, Vec<Function>)> {
        self.libraries.into_iter().map(|(name, lib)| (name, lib.code, lib.functions)).collect()
    }
}

/// How FUNCTION RESTORE treats libraries already loaded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RestorePolicy {
    Flush,
    Append,
    Replace,
}

/// A library's name from its `#!lua name=<name>` first line, with Redis's error texts.
pub fn library_name(code: &[u8]) -> Result<String, String> {
    if !code.starts_with(b"#!") {
        return Err("ERR Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&c| c == b'\n') else {
        return Err("ERR Invalid library metadata".into());
    };
    let line = String::from_utf8_lossy(&code[2..end]);
    let mut parts = line.split_ascii_whitespace();
    let engine = parts.next().unwrap_or("");
    let mut name = None;
    for part in parts {
        match part.strip_prefix("name=") {
            Some(_) if name.is_some() => {
                return Err("ERR Invalid metadata value, name argument was given multiple times".into())
            }
            Some(n) => name = Some(n.to_string()),
            None => return Err(format!("ERR Invalid metadata value given: {part}")),
        }
    }
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("ERR Engine '{engine}' not found"));
    }
    let name = name.ok_or("ERR Library name was not given")?;
    if !valid_name(&name) {
        return Err(
            "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"
                .into(),
        );
    }
    Ok(name)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The code Lua compiles: the shebang line emptied but kept, so line numbers in errors are
/// the user's.
pub fn without_shebang(code: &[u8]) -> Vec<u8> {
    match code.iter().position(|&c| c == b'\n') {
        Some(end) if code.starts_with(b"#!") => code[end..].to_vec(),
        _ if code.starts_with(b"#!") => Vec::new(),
        _ => code.to_vec(),
    }
}

/// EVAL's `#!lua flags=a,b` shebang: None without one, else the flags.
pub fn eval_shebang(body: &[u8]) -> Result<Option<u8>, String> {
    if !body.starts_with(b"#!") {
        return Ok(None);
    }
    let end = body.iter().position(|&c| c == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split_ascii_whitespace();
    let engine = parts.next().unwrap_or("");
    if engine != "#!lua" {
        return Err(format!("ERR Unexpected engine in script shebang: {engine}"));
    }
    let mut bits = 0;
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {part}"));
        };
        for flag in list.split(',').filter(|f| !f.is_empty()) {
            match FLAG_NAMES.iter().find(|(n, _)| *n == flag) {
                Some((_, b)) => bits |= b,
                None => return Err(format!("ERR Unexpected flag in script shebang: {flag}")),
            }
        }
    }
    Ok(Some(bits))
}

impl Engine {
    /// Brings the compiled libraries in line with the keyspace's (after a snapshot was
    /// installed, or on first use).
    pub fn sync_functions(&mut self, libs: &Libraries) {
        if self.functions.generation == libs.generation() {
            return;
        }
        let codes = libs.to_map();
        match self.compile_set(&codes, false) {
            Ok(mut set) => {
                set.generation = libs.generation();
                self.functions = set;
            }
            Err(e) => {
                // Every library in the keyspace was accepted by a leader running this same
                // build; one that no longer compiles is corruption.
                tracing::error!(error = %e, "replicated FUNCTION libraries do not load; stopping");
                std::process::abort();
            }
        }
    }

    /// Compiles a whole set of libraries into a registry.
    fn compile_set(&mut self, codes: &BTreeMap<String, Bytes>, timeout: bool) -> Result<FunctionSet, String> {
        let mut compiled = Vec::with_capacity(codes.len());
        for (name, code) in codes {
            compiled.push((name.clone(), code.clone(), self.compile_library(code, timeout)?));
        }
        FunctionSet::default().merged(|_| false, compiled)
    }

    /// Runs a library's code in the load environment and returns what it registered.
    fn compile_library(&mut self, code: &Bytes, timeout: bool) -> Result<Vec<Function>, String> {
        let chunk = self
            .lua
            .load(without_shebang(code))
            .set_name("@user_function")
            .set_environment(self.lib_env.clone())
            .into_function()
            .map_err(|e| match e {
                mlua::Error::SyntaxError { message, .. } => format!("ERR Error compiling function: {message}"),
                other => format!("ERR Error compiling function: {other}"),
            })?;
        let timed_out = Arc::new(AtomicBool::new(false));
        if timeout {
            let started = Instant::now();
            let flag = timed_out.clone();
            self.lua
                .set_hook(mlua::HookTriggers::new().every_nth_instruction(100_000), move |_, _| {
                    if started.elapsed() >= LOAD_TIMEOUT {
                        flag.store(true, Ordering::Relaxed);
                        return Err(mlua::Error::RuntimeError("FUNCTION LOAD timeout".into()));
                    }
                    Ok(mlua::VmState::Continue)
                })
                .map_err(|e| format!("ERR {e}"))?;
        }
        let result: mlua::Result<(bool, Lv)> = self.load_library.call(chunk);
        if timeout {
            self.lua.remove_hook();
        }
        if timed_out.load(Ordering::Relaxed) {
            return Err("ERR Error registering functions: ERR FUNCTION LOAD timeout".into());
        }
        let regs = match result {
            Ok((true, Lv::Table(t))) => t,
            Ok((false, Lv::String(e))) => {
                return Err(format!("ERR Error registering functions: {}", e.to_string_lossy()));
            }
            Ok(_) => return Err("ERR Error registering functions: unknown error".into()),
            Err(e) => return Err(format!("ERR Error registering functions: ERR {e}")),
        };
        let mut out = Vec::new();
        for reg in regs.sequence_values::<Table>() {
            let field = |e: mlua::Error| format!("ERR {e}");
            let reg = reg.map_err(field)?;
            out.push(Function {
                name: reg.raw_get("name").map_err(field)?,
                library: String::new(),
                description: reg.raw_get("description").map_err(field)?,
                flags: reg.raw_get("flags").map_err(field)?,
                callback: reg.raw_get("callback").map_err(field)?,
            });
        }
        if out.is_empty() {
            return Err("ERR No functions registered".into());
        }
        Ok(out)
    }

    /// Installs a new registry and the source text it was built from (the keyspace's copy).
    fn install(&mut self, libs: &mut Libraries, mut set: FunctionSet) {
        libs.replace_all(set.libraries.iter().map(|(n, l)| (n.clone(), l.code.clone())).collect());
        set.generation = libs.generation();
        self.functions = set;
        self.lua.gc_collect().ok();
    }

    /// FUNCTION LOAD [REPLACE]: the library's name. Other libraries keep their compiled
    /// functions (and whatever state their code keeps).
    pub fn function_load(
        &mut self,
        libs: &mut Libraries,
        code: &Bytes,
        replace: bool,
        timeout: bool,
    ) -> Result<String, String> {
        self.sync_functions(libs);
        let name = library_name(code)?;
        if !replace && libs.get(&name).is_some() {
            return Err(format!("ERR Library '{name}' already exists"));
        }
        let compiled = self.compile_library(code, timeout)?;
        let set = self.functions.merged(|n| n != name, vec![(name.clone(), code.clone(), compiled)])?;
        self.install(libs, set);
        Ok(name)
    }

    /// FUNCTION DELETE.
    pub fn function_delete(&mut self, libs: &mut Libraries, name: &[u8]) -> Result<(), String> {
        self.sync_functions(libs);
        let name = String::from_utf8_lossy(name);
        if libs.get(&name).is_none() {
            return Err("ERR Library not found".into());
        }
        let set = self.functions.merged(|n| n != name, Vec::new())?;
        self.install(libs, set);
        Ok(())
    }

    /// FUNCTION FLUSH.
    pub fn function_flush(&mut self, libs: &mut Libraries) {
        self.install(libs, FunctionSet::default());
    }

    /// FUNCTION RESTORE.
    pub fn function_restore(
        &mut self,
        libs: &mut Libraries,
        data: &[u8],
        policy: RestorePolicy,
        timeout: bool,
    ) -> Result<(), String> {
        self.sync_functions(libs);
        // The payload's libraries on their own first: its internal conflicts are reported
        // as FUNCTION LOAD would report them.
        let mut incoming: Vec<(String, Bytes, Vec<Function>)> = Vec::new();
        for code in payload::parse(data)? {
            let name = library_name(&code)?;
            if incoming.iter().any(|(n, _, _)| *n == name) {
                return Err(format!("ERR Library '{name}' already exists"));
            }
            let code = Bytes::from(code);
            let compiled = self.compile_library(&code, timeout)?;
            incoming.push((name, code, compiled));
        }
        let incoming = FunctionSet::default().merged(|_| false, incoming)?;
        if policy == RestorePolicy::Append {
            if let Some(name) = incoming.libraries.keys().find(|n| libs.get(n).is_some()) {
                return Err(format!("ERR Library {name} already exists"));
            }
        }
        let arriving: Vec<String> = incoming.libraries.keys().cloned().collect();
        let keep = |n: &str| policy != RestorePolicy::Flush && !arriving.iter().any(|a| a == n);
        let set = self.functions.merged(keep, incoming.into_parts())?;
        self.install(libs, set);
        Ok(())
    }

    /// FUNCTION DUMP.
    pub fn function_dump(&mut self, libs: &Libraries) -> Vec<u8> {
        payload::dump(libs.iter().map(|(_, code)| &code[..]))
    }

    pub fn functions(&mut self, libs: &Libraries) -> &FunctionSet {
        self.sync_functions(libs);
        &self.functions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_metadata_as_redis_reads_it() {
        assert_eq!(library_name(b"#!lua name=my_lib1\nx").unwrap(), "my_lib1");
        assert_eq!(library_name(b"#!LUA name=x \nx").unwrap(), "x");
        assert_eq!(library_name(b"return 1").unwrap_err(), "ERR Missing library metadata");
        assert_eq!(library_name(b"#!lua name=x").unwrap_err(), "ERR Invalid library metadata");
        assert_eq!(library_name(b"#!lua\n").unwrap_err(), "ERR Library name was not given");
        assert_eq!(library_name(b"#!lua2 name=x\n").unwrap_err(), "ERR Engine 'lua2' not found");
        assert_eq!(library_name(b"#!lua name=x foo=bar\n").unwrap_err(), "ERR Invalid metadata value given: foo=bar");
        assert_eq!(
            library_name(b"#!lua name=x name=y\n").unwrap_err(),
            "ERR Invalid metadata value, name argument was given multiple times"
        );
        assert!(library_name(b"#!lua name=my-lib\n").unwrap_err().starts_with("ERR Library names can only"));
    }

    #[test]
    fn eval_shebang_flags() {
        assert_eq!(eval_shebang(b"return 1").unwrap(), None);
        assert_eq!(eval_shebang(b"#!lua\nreturn 1").unwrap(), Some(0));
        assert_eq!(eval_shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap(), Some(NO_WRITES | ALLOW_OOM));
        assert_eq!(eval_shebang(b"#!lua flags=bad\n").unwrap_err(), "ERR Unexpected flag in script shebang: bad");
        assert_eq!(eval_shebang(b"#!lua name=x\n").unwrap_err(), "ERR Unknown lua shebang option: name=x");
        assert_eq!(eval_shebang(b"#!lua2\n").unwrap_err(), "ERR Unexpected engine in script shebang: #!lua2");
        assert_eq!(without_shebang(b"#!lua\nreturn 1"), b"\nreturn 1");
    }

    fn load(e: &mut Engine, libs: &mut Libraries, code: &str) -> Result<String, String> {
        e.function_load(libs, &Bytes::copy_from_slice(code.as_bytes()), false, true)
    }

    #[test]
    fn load_registers_and_refuses_as_redis_does() {
        let mut e = Engine::new().unwrap();
        let mut libs = Libraries::default();
        let lib = "#!lua name=lib1\nredis.register_function('f1', function(k, a) return 1 end)\n\
                   redis.register_function{function_name='F2', callback=function() end, flags={'no-writes', 'allow-oom'}, description='d'}";
        assert_eq!(load(&mut e, &mut libs, lib).unwrap(), "lib1");
        let set = e.functions(&libs);
        let f2 = set.get(b"f2").unwrap();
        assert_eq!((f2.name.as_str(), f2.library.as_str(), f2.flags), ("F2", "lib1", NO_WRITES | ALLOW_OOM));
        assert_eq!(f2.description.as_deref(), Some("d"));
        assert_eq!(load(&mut e, &mut libs, lib).unwrap_err(), "ERR Library 'lib1' already exists");
        let cases = [
            ("redis.register_function('f1', function() end)", "ERR Function f1 already exists"),
            ("redis.register_function('F1', function() end)", "ERR Function F1 already exists"),
            ("return 1", "ERR No functions registered"),
            ("x = 1", "ERR Error registering functions: ERR user_function:2: Attempt to modify a readonly table"),
            (
                "string.len('x')",
                "ERR Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'string'",
            ),
            (
                "redis.call('ping')",
                "ERR Error registering functions: ERR user_function:2: Script attempted to access nonexistent global variable 'call'",
            ),
            ("redis.register_function('a')", "ERR Error registering functions: ERR calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments)."),
            ("redis.register_function('a', 1)", "ERR Error registering functions: ERR second argument to redis.register_function must be a function"),
            ("redis.register_function{function_name='a', callback=function() end, flags={'bad'}}", "ERR Error registering functions: ERR unknown flag given"),
            ("redis.register_function{function_name='a', callback=function() end, x=1}", "ERR Error registering functions: ERR unknown argument given to redis.register_function"),
            (
                "redis.register_function('a', function() end) redis.register_function('a', function() end)",
                "ERR Error registering functions: ERR Function already exists in the library",
            ),
            ("this is not lua", "ERR Error compiling function: user_function:2: '=' expected near 'is'"),
            ("while true do end", "ERR Error registering functions: ERR FUNCTION LOAD timeout"),
        ];
        for (body, want) in cases {
            let code = format!("#!lua name=other\n{body}");
            assert_eq!(load(&mut e, &mut libs, &code).unwrap_err(), want, "{body}");
        }
        // Nothing of the failed loads stuck.
        assert_eq!(libs.len(), 1);
        assert_eq!(e.functions(&libs).function_count(), 2);
    }

    #[test]
    fn delete_flush_dump_restore() {
        let mut e = Engine::new().unwrap();
        let mut libs = Libraries::default();
        load(&mut e, &mut libs, "#!lua name=a\nredis.register_function('fa', function() return 1 end)").unwrap();
        load(&mut e, &mut libs, "#!lua name=b\nredis.register_function('fb', function() return 2 end)").unwrap();
        let dump = e.function_dump(&libs);
        assert_eq!(e.function_delete(&mut libs, b"nope").unwrap_err(), "ERR Library not found");
        e.function_delete(&mut libs, b"a").unwrap();
        assert!(e.functions(&libs).get(b"fa").is_none());
        assert_eq!(
            e.function_restore(&mut libs, &dump, RestorePolicy::Append, true).unwrap_err(),
            "ERR Library b already exists"
        );
        e.function_restore(&mut libs, &dump, RestorePolicy::Replace, true).unwrap();
        assert_eq!(libs.len(), 2);
        e.function_flush(&mut libs);
        assert!(libs.is_empty() && e.functions(&libs).functions.is_empty());
        e.function_restore(&mut libs, &dump, RestorePolicy::Flush, true).unwrap();
        assert!(e.functions(&libs).get(b"FB").is_some());
        // A second engine (a replica, a restart) compiles the same set from the source.
        let mut other = Engine::new().unwrap();
        assert_eq!(other.functions(&libs).functions.len(), 2);
    }
}
