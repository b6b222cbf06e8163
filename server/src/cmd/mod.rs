//! The command table and the execution context handed to every command.
//!
//! One declarative list, [`table()`], built from each family's `COMMANDS` slice, drives
//! dispatch (name -> spec), arity checks, ACL-like gating (write/readonly/noscript/pubsub),
//! the `COMMAND` family of introspection commands, and a test that walks every entry.
//!
//! A command is one small function `fn(&mut Ctx, &[Bytes]) -> CmdResult` in the file of its
//! data type (`strings.rs`, `lists.rs`, ...), like Redis's `t_string.c`, `t_list.c`.
//! Argument parsing, the keyspace change and the reply live together there; shared parsing
//! helpers are in [`args`].

pub mod args;
pub mod bits;
pub mod connection;
pub mod docs;
pub mod functions;
pub mod hashes;
pub mod introspect;
pub mod keys;
pub mod limits;
pub mod lists;
pub mod locks;
pub mod pubsub;
pub mod raft;
pub mod scan;
pub mod scripting;
pub mod server;
pub mod sets;
pub mod sort;
pub mod strings;
pub mod tx;
pub mod zsets;

use std::sync::OnceLock;

use bytes::Bytes;
use hashbrown::HashMap;
use redoubt_protocol::ReplyBuf;

use crate::conn::Conn;
use crate::keyspace::Keyspace;
use crate::shared::Shared;

/// Command flags, as in Redis's command table.
pub mod flags {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const SKIP_MONITOR: u32 = 1 << 9;
    pub const SKIP_SLOWLOG: u32 = 1 << 10;
    pub const FAST: u32 = 1 << 11;
    pub const NO_AUTH: u32 = 1 << 12;
    pub const MAY_REPLICATE: u32 = 1 << 13;
    pub const NO_MULTI: u32 = 1 << 14;
    pub const MOVABLE_KEYS: u32 = 1 << 15;
    pub const ALLOW_BUSY: u32 = 1 << 16;
    /// Runs without the keyspace (connection-level); redoubt-internal.
    pub const CONN: u32 = 1 << 17;
    pub const NO_MANDATORY_KEYS: u32 = 1 << 18;

    pub const NAMES: [(u32, &str); 18] = [
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (SKIP_MONITOR, "skip_monitor"),
        (SKIP_SLOWLOG, "skip_slowlog"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (MAY_REPLICATE, "may_replicate"),
        (NO_MULTI, "no_multi"),
        (MOVABLE_KEYS, "movablekeys"),
        (ALLOW_BUSY, "allow_busy"),
        (NO_MANDATORY_KEYS, "no_mandatory_keys"),
    ];
}

/// An error reply. The text is the whole message after `-` (including the code).
#[derive(Debug, Clone, PartialEq)]
pub enum CmdError {
    Static(&'static str),
    Owned(String),
}

impl CmdError {
    pub fn text(&self) -> &str {
        match self {
            CmdError::Static(s) => s,
            CmdError::Owned(s) => s,
        }
    }
}

impl From<String> for CmdError {
    fn from(s: String) -> Self {
        CmdError::Owned(s)
    }
}

pub type CmdResult = Result<(), CmdError>;
pub type Handler = fn(&mut Ctx, &[Bytes]) -> CmdResult;

/// Redis's error texts that many commands share.
pub mod err {
    use super::CmdError;
    pub const WRONGTYPE: CmdError =
        CmdError::Static("WRONGTYPE Operation against a key holding the wrong kind of value");
    pub const SYNTAX: CmdError = CmdError::Static("ERR syntax error");
    pub const NOT_INT: CmdError = CmdError::Static("ERR value is not an integer or out of range");
    pub const NOT_FLOAT: CmdError = CmdError::Static("ERR value is not a valid float");
    pub const OVERFLOW: CmdError = CmdError::Static("ERR increment or decrement would overflow");
    pub const NO_KEY: CmdError = CmdError::Static("ERR no such key");
    pub const INDEX_RANGE: CmdError = CmdError::Static("ERR index out of range");
    pub const DB_INDEX: CmdError = CmdError::Static("ERR DB index is out of range");
    pub const TIMEOUT: CmdError = CmdError::Static("ERR timeout is not a float or out of range");
    pub const TIMEOUT_NEG: CmdError = CmdError::Static("ERR timeout is negative");
    pub const NOT_POSITIVE: CmdError = CmdError::Static("ERR value is out of range, must be positive");
    pub fn unknown_subcommand(cmd: &str, sub: &[u8]) -> CmdError {
        CmdError::Owned(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(sub),
            cmd.to_ascii_uppercase()
        ))
    }
    pub fn wrong_args(name: &str) -> CmdError {
        CmdError::Owned(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
    }
}

/// How a command may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockMode {
    /// Top-level call from a client: may block.
    Allowed,
    /// Inside MULTI/EXEC or a script: behaves as if the timeout expired at once.
    Never,
    /// Re-run for a blocked client whose key got data: if it still cannot proceed, it stays
    /// blocked (sets `ctx.block` again) and writes nothing.
    Serving,
}

/// What a command that must wait asks the connection to do.
#[derive(Debug, Clone)]
pub struct BlockRequest {
    pub keys: Vec<Bytes>,
    /// Absolute deadline in unix ms; 0 = wait forever.
    pub deadline_ms: i64,
}

/// Everything a command can touch while it runs.
pub struct Ctx<'a> {
    pub ks: &'a mut Keyspace,
    pub srv: &'a Shared,
    pub out: &'a mut ReplyBuf,
    /// Selected database.
    pub db: usize,
    pub client_id: u64,
    /// Connection state; None when the command runs on behalf of a blocked client or a
    /// replicated operation.
    pub conn: Option<&'a mut Conn>,
    pub block_mode: BlockMode,
    /// Set by a blocking command that has to wait.
    pub block: Option<BlockRequest>,
    /// Set when the command runs inside MULTI/EXEC.
    pub in_multi: bool,
}

impl<'a> Ctx<'a> {
    /// A context for a command run without a connection (a replicated op, a forwarded
    /// command, a script's `redis.call`, a native command's step): it never blocks.
    pub fn detached(ks: &'a mut Keyspace, srv: &'a Shared, out: &'a mut ReplyBuf, db: usize, client_id: u64) -> Self {
        Ctx { ks, srv, out, db, client_id, conn: None, block_mode: BlockMode::Never, block: None, in_multi: false }
    }

    /// Connection state, for connection-level commands.
    pub fn conn(&mut self) -> Result<&mut Conn, CmdError> {
        self.conn.as_deref_mut().ok_or(CmdError::Static("ERR command not allowed here"))
    }

    /// Records the deterministic operation this write amounts to (the argv itself for most
    /// commands; a rewritten form for commands that depend on time or randomness, e.g.
    /// `SET k v EX 10` -> `SET k v PXAT <abs>`, `SPOP s` -> `SREM s <member>`). Free when
    /// nobody consumes effects.
    pub fn propagate<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        if self.ks.recording() {
            let v = argv.iter().map(|a| Bytes::copy_from_slice(a.as_ref())).collect();
            self.ks.record(self.db, v);
        }
    }

    /// Runs an ordinary write command (`SET k v PXAT <abs>`, `HSET ...`, `LTRIM ...`) as one
    /// step of the command being executed, discarding its reply. The step records its own
    /// deterministic form with [`Ctx::propagate`], exactly as it would for a client.
    ///
    /// Native commands whose decision is not itself deterministic to replay (rate limiters,
    /// locks: they read the clock and the state, then decide) change the keyspace only through
    /// this. A replica or the Raft log applies the same ordinary commands through the same
    /// handlers, so the state they build is the leader's by construction, and the native
    /// command itself never has to be replayed.
    pub fn apply<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> CmdResult {
        // One buffer sliced into the arguments: one allocation per step, not one per argument
        // (handlers copy what they keep).
        let mut buf = bytes::BytesMut::with_capacity(argv.iter().map(|a| a.as_ref().len()).sum());
        for a in argv {
            buf.extend_from_slice(a.as_ref());
        }
        let buf = buf.freeze();
        let mut at = 0;
        let argv: Vec<Bytes> = argv
            .iter()
            .map(|a| {
                at += a.as_ref().len();
                buf.slice(at - a.as_ref().len()..at)
            })
            .collect();
        let spec = lookup(&argv[0]).ok_or_else(|| CmdError::Owned(unknown_command_error(&argv)))?;
        debug_assert!(spec.arity_ok(argv.len()) && spec.is_write(), "apply: {argv:?}");
        // No allocation until the step writes its (discarded) reply.
        let mut scratch = ReplyBuf::default();
        let mut step = Ctx::detached(&mut *self.ks, self.srv, &mut scratch, self.db, self.client_id);
        step.in_multi = self.in_multi;
        (spec.handler)(&mut step, &argv)
    }

    /// Asks to block on `keys` until `deadline_ms` (0 = forever), or answers at once with a
    /// null array when blocking is not possible (MULTI, scripts). A key named twice is
    /// registered once, as Redis does.
    pub fn block_on(&mut self, keys: Vec<Bytes>, deadline_ms: i64) {
        match self.block_mode {
            BlockMode::Never => self.out.null_array(),
            _ => {
                let mut unique: Vec<Bytes> = Vec::with_capacity(keys.len());
                for k in keys {
                    if !unique.contains(&k) {
                        unique.push(k);
                    }
                }
                self.block = Some(BlockRequest { keys: unique, deadline_ms });
            }
        }
    }
}

/// One entry of the command table.
#[derive(Clone, Copy)]
pub struct Spec {
    /// Lower-case name (for containers, `"parent|sub"` in `subcommands`).
    pub name: &'static str,
    /// Redis arity: N = exactly N arguments including the name, -N = at least N.
    pub arity: i32,
    pub flags: u32,
    /// First key, last key (negative counts from the end), step; 0,0,0 when no keys.
    pub keys: (i32, i32, i32),
    /// ACL categories / docs group (`string`, `list`, `generic`, ...).
    pub group: &'static str,
    pub handler: Handler,
    /// Subcommands (CONFIG GET, CLIENT LIST, ...) for COMMAND introspection; dispatch of a
    /// container goes through its handler, which parses the subcommand itself.
    pub subcommands: &'static [Spec],
    /// ACL categories beyond those derived from flags and group (e.g. `@dangerous`).
    pub extra_acl: &'static [&'static str],
}

impl Spec {
    pub const fn new(
        name: &'static str,
        arity: i32,
        flags: u32,
        keys: (i32, i32, i32),
        group: &'static str,
        handler: Handler,
    ) -> Spec {
        Spec { name, arity, flags, keys, group, handler, subcommands: &[], extra_acl: &[] }
    }

    pub const fn acl(mut self, extra: &'static [&'static str]) -> Spec {
        self.extra_acl = extra;
        self
    }

    pub const fn with_subcommands(mut self, subs: &'static [Spec]) -> Spec {
        self.subcommands = subs;
        self
    }

    pub fn is_write(&self) -> bool {
        self.flags & flags::WRITE != 0
    }

    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        (a >= 0 && argc == a as usize) || (a < 0 && argc >= (-a) as usize)
    }

    /// Key positions for `argv` per the spec's (first, last, step) triple.
    pub fn key_positions(&self, argc: usize) -> Vec<usize> {
        let (first, last, step) = self.keys;
        if first <= 0 || step <= 0 {
            return Vec::new();
        }
        let last = if last < 0 { argc as i32 + last } else { last };
        (first..=last.min(argc as i32 - 1)).step_by(step as usize).map(|i| i as usize).collect()
    }
}

/// A placeholder handler for container commands' subcommand entries (dispatch goes through
/// the container).
pub fn container_only(_: &mut Ctx, _: &[Bytes]) -> CmdResult {
    Err(CmdError::Static("ERR internal: subcommand dispatched directly"))
}

/// Every family's command list.
pub fn families() -> [&'static [Spec]; 19] {
    [
        connection::COMMANDS,
        strings::COMMANDS,
        bits::COMMANDS,
        keys::COMMANDS,
        sort::COMMANDS,
        hashes::COMMANDS,
        lists::COMMANDS,
        sets::COMMANDS,
        zsets::COMMANDS,
        limits::COMMANDS,
        locks::COMMANDS,
        tx::COMMANDS,
        pubsub::COMMANDS,
        server::COMMANDS,
        introspect::COMMANDS,
        raft::COMMANDS,
        scripting::COMMANDS,
        functions::COMMANDS,
        docs::COMMANDS,
    ]
}

/// The command table: lower-case name -> spec.
pub fn table() -> &'static HashMap<&'static str, &'static Spec> {
    &indexed().by_name
}

/// The table with every spec (subcommands included) numbered densely, so per-command
/// state (INFO commandstats, CLIENT LIST's last command) is an array slot, not a map entry.
struct Indexed {
    by_name: HashMap<&'static str, &'static Spec>,
    /// Spec address -> its number; looked up once per command, so hashed trivially.
    by_addr: hashbrown::HashMap<usize, u32, std::hash::BuildHasherDefault<AddrHasher>>,
    all: Vec<&'static Spec>,
}

fn indexed() -> &'static Indexed {
    static TABLE: OnceLock<Indexed> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Indexed { by_name: HashMap::new(), by_addr: Default::default(), all: Vec::new() };
        for fam in families() {
            for s in fam {
                let prev = t.by_name.insert(s.name, s);
                assert!(prev.is_none(), "command {} listed twice", s.name);
                for spec in std::iter::once(s).chain(s.subcommands) {
                    t.by_addr.insert(spec as *const Spec as usize, t.all.len() as u32);
                    t.all.push(spec);
                }
            }
        }
        t
    })
}

/// Hashes a spec's address: addresses are distinct and 8-aligned, so a multiply spreads them.
#[derive(Default)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Every spec (top-level commands and subcommands), numbered: `spec_id(all_specs()[i]) == i`.
pub fn all_specs() -> &'static [&'static Spec] {
    &indexed().all
}

/// The number of a spec from the table (see [`all_specs`]).
pub fn spec_id(spec: &'static Spec) -> usize {
    indexed().by_addr.get(&(spec as *const Spec as usize)).copied().expect("spec from the command table") as usize
}

/// Looks a command up by name, case-insensitively, without allocating for short names.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut buf = [0u8; 32];
    if name.len() > buf.len() {
        return None;
    }
    for (i, &c) in name.iter().enumerate() {
        buf[i] = c.to_ascii_lowercase();
    }
    let s = std::str::from_utf8(&buf[..name.len()]).ok()?;
    table().get(s).copied()
}

/// Looks up `parent|sub` in a container's subcommand list.
pub fn lookup_sub(parent: &Spec, sub: &[u8]) -> Option<&'static Spec> {
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    parent.subcommands.iter().find(|s| s.name.rsplit('|').next() == Some(sub.as_str()))
}

/// The Redis error for an unknown command, with the arguments echoed as Redis does.
pub fn unknown_command_error(argv: &[Bytes]) -> String {
    let mut s = format!("ERR unknown command '{}', with args beginning with: ", trunc(&argv[0]));
    for a in &argv[1..] {
        s.push_str(&format!("'{}' ", trunc(a)));
        if s.len() > 128 {
            break;
        }
    }
    s
}

fn trunc(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 128 {
        s.chars().take(128).collect()
    } else {
        s.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks every entry of the table: sane arity, keys and flags, and a group.
    #[test]
    fn every_table_entry_is_well_formed() {
        let t = table();
        assert!(t.len() > 150, "only {} commands", t.len());
        for (name, s) in t.iter() {
            assert_eq!(*name, s.name);
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(s.arity != 0, "{name}: arity 0");
            assert!(!s.group.is_empty(), "{name}: no group");
            let (f, l, st) = s.keys;
            if f > 0 {
                assert!(st > 0, "{name}: key step");
                assert!(l < 0 || l >= f, "{name}: last key before first");
            }
            if s.flags & flags::WRITE != 0 {
                assert!(s.flags & flags::READONLY == 0, "{name}: write and readonly");
            }
            for sub in s.subcommands {
                assert!(sub.name.starts_with(&format!("{name}|")), "{}", sub.name);
                assert!(sub.arity != 0);
            }
        }
    }
}
