//! The keyspace: sixteen (configurable) databases of keys, values and expiry times.
//!
//! It is plain data. It knows nothing of sockets, clients or Raft: commands read and change
//! it through the methods here, at a time given to them (`now_ms`, the time of the operation
//! being applied, never the wall clock read in the middle of a command). Side effects that
//! other parts of the server must see are collected here and drained by the caller after
//! the command:
//!
//! * `events`: keyspace notifications to publish;
//! * `ready`: keys that received elements while clients block on them;
//! * `dirty_watchers`: clients whose WATCHed keys changed;
//! * `effects`: when enabled, the deterministic operations each write produced (the stream
//!   a replica applies; see [`Op`]).
//!
//! Besides keys it holds the one other piece of replicated data Redis has: the FUNCTION
//! libraries, as source text ([`Libraries`]); the scripting engine compiles them.

pub mod blob;
pub mod serial;
pub mod table;
pub mod types;

use std::collections::VecDeque;

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub use blob::Blob;
use table::Table;
pub use types::{Hash, Score, Set, ZSet};

/// A value stored under a key.
#[derive(Clone, Debug)]
pub enum Value {
    Str(Blob),
    List(Box<VecDeque<Blob>>),
    Hash(Box<Hash>),
    Set(Box<Set>),
    ZSet(Box<ZSet>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// What Redis 7.0 reports for OBJECT ENCODING.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(b) => {
                // A string edited in place stays `raw` even if it looks like an integer.
                if b.is_raw() {
                    "raw"
                } else if !b.is_heap() && b.len() <= 20 && redoubt_protocol::num::parse_i64(b).is_some() {
                    "int"
                } else if b.len() > 44 {
                    "raw"
                } else {
                    "embstr"
                }
            }
            Value::List(_) => "quicklist",
            Value::Hash(h) => h.encoding(),
            Value::Set(s) => s.encoding(),
            Value::ZSet(z) => z.encoding(),
        }
    }

    /// Approximate heap bytes owned by the value (MEMORY USAGE).
    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(b) => b.heap_size(),
            Value::List(l) => l.capacity() * 24 + l.iter().map(|b| b.heap_size()).sum::<usize>(),
            Value::Hash(h) => h.heap_size(),
            Value::Set(s) => s.heap_size(),
            Value::ZSet(z) => z.heap_size(),
        }
    }

    /// True for collections that became empty (Redis deletes empty collections).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }
}

/// One key with its value and metadata.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: Blob,
    pub value: Value,
    /// Absolute unix time in ms at which the key expires; 0 = no expiry.
    pub expire_at: i64,
    /// LRU clock (seconds) or LFU data (16-bit minutes + 8-bit log counter), as in Redis.
    pub lru: u32,
}

impl Entry {
    pub fn new(key: Blob, value: Value) -> Entry {
        Entry { key, value, expire_at: 0, lru: 0 }
    }
}

/// Keyspace notification classes (`notify-keyspace-events`).
pub mod notify {
    pub const KEYSPACE: u32 = 1 << 0; // K
    pub const KEYEVENT: u32 = 1 << 1; // E
    pub const GENERIC: u32 = 1 << 2; // g
    pub const STRING: u32 = 1 << 3; // $
    pub const LIST: u32 = 1 << 4; // l
    pub const SET: u32 = 1 << 5; // s
    pub const HASH: u32 = 1 << 6; // h
    pub const ZSET: u32 = 1 << 7; // z
    pub const EXPIRED: u32 = 1 << 8; // x
    pub const EVICTED: u32 = 1 << 9; // e
    pub const STREAM: u32 = 1 << 10; // t
    pub const KEY_MISS: u32 = 1 << 11; // m
    pub const LOADED: u32 = 1 << 12; // internal
    pub const MODULE: u32 = 1 << 13; // d
    pub const NEW: u32 = 1 << 14; // n
    /// `A`: alias for "g$lshzxetd".
    pub const ALL: u32 = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

    /// Parses a `notify-keyspace-events` string; None on an unknown class character.
    pub fn parse(s: &[u8]) -> Option<u32> {
        let mut f = 0;
        for &c in s {
            f |= match c {
                b'A' => ALL,
                b'g' => GENERIC,
                b'$' => STRING,
                b'l' => LIST,
                b's' => SET,
                b'h' => HASH,
                b'z' => ZSET,
                b'x' => EXPIRED,
                b'e' => EVICTED,
                b'K' => KEYSPACE,
                b'E' => KEYEVENT,
                b't' => STREAM,
                b'm' => KEY_MISS,
                b'd' => MODULE,
                b'n' => NEW,
                _ => return None,
            };
        }
        Some(f)
    }

    /// Renders flags back the way Redis's CONFIG GET shows them.
    pub fn render(f: u32) -> String {
        let mut s = String::new();
        if f & ALL == ALL {
            s.push('A');
        } else {
            for (bit, c) in [
                (GENERIC, 'g'),
                (STRING, '$'),
                (LIST, 'l'),
                (SET, 's'),
                (HASH, 'h'),
                (ZSET, 'z'),
                (EXPIRED, 'x'),
                (EVICTED, 'e'),
                (STREAM, 't'),
                (MODULE, 'd'),
            ] {
                if f & bit != 0 {
                    s.push(c);
                }
            }
        }
        for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm'), (NEW, 'n')] {
            if f & bit != 0 {
                s.push(c);
            }
        }
        s
    }
}

/// A keyspace notification waiting to be published.
#[derive(Debug, Clone)]
pub struct Event {
    pub class: u32,
    pub event: &'static str,
    pub db: usize,
    pub key: Bytes,
}

/// A deterministic operation: a command line whose effect depends only on the keyspace it
/// is applied to and on `now_ms`. Writes that involve time or randomness are rewritten
/// before they are recorded (EXPIRE -> PEXPIREAT, SET EX -> SET PXAT, SPOP -> SREM of the
/// chosen members, active expiry -> DEL), exactly as Redis rewrites what it propagates.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub db: usize,
    pub now_ms: i64,
    pub argv: Vec<Bytes>,
}

/// The FUNCTION libraries as source text, by library name (case-sensitive, as Redis's).
///
/// This is the replicated truth; the scripting engine compiles from it. Every change takes
/// a new generation from a process-wide counter, so the engine notices any replacement,
/// including a whole keyspace swapped in from a snapshot.
#[derive(Debug)]
pub struct Libraries {
    code: std::collections::BTreeMap<String, Bytes>,
    generation: u64,
}

static LIBRARY_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Default for Libraries {
    fn default() -> Libraries {
        Libraries { code: Default::default(), generation: Libraries::next_generation() }
    }
}

impl Libraries {
    fn next_generation() -> u64 {
        LIBRARY_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.code.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Bytes)> {
        self.code.iter()
    }

    pub fn len(&self) -> usize {
        self.code.len()
    }

    pub fn is_empty(&self) -> bool {
        self.code.is_empty()
    }

    /// Replaces the whole set (FUNCTION LOAD, DELETE, FLUSH and RESTORE compute the new set
    /// first, so a failed command changes nothing).
    pub fn replace_all(&mut self, code: std::collections::BTreeMap<String, Bytes>) {
        self.code = code;
        self.generation = Libraries::next_generation();
    }

    pub fn to_map(&self) -> std::collections::BTreeMap<String, Bytes> {
        self.code.clone()
    }
}

/// Eviction policies (`maxmemory-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionPolicy {
    NoEviction,
    AllKeysLru,
    VolatileLru,
    AllKeysLfu,
    VolatileLfu,
    AllKeysRandom,
    VolatileRandom,
    VolatileTtl,
}

impl EvictionPolicy {
    pub const ALL: [(&'static str, EvictionPolicy); 8] = [
        ("volatile-lru", EvictionPolicy::VolatileLru),
        ("volatile-lfu", EvictionPolicy::VolatileLfu),
        ("volatile-random", EvictionPolicy::VolatileRandom),
        ("volatile-ttl", EvictionPolicy::VolatileTtl),
        ("allkeys-lru", EvictionPolicy::AllKeysLru),
        ("allkeys-lfu", EvictionPolicy::AllKeysLfu),
        ("allkeys-random", EvictionPolicy::AllKeysRandom),
        ("noeviction", EvictionPolicy::NoEviction),
    ];

    pub fn parse(s: &str) -> Option<EvictionPolicy> {
        Self::ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, p)| *p)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, p)| *p == self).map(|(n, _)| *n).unwrap_or("noeviction")
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, EvictionPolicy::AllKeysLfu | EvictionPolicy::VolatileLfu)
    }

    fn volatile_only(self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru
                | EvictionPolicy::VolatileLfu
                | EvictionPolicy::VolatileRandom
                | EvictionPolicy::VolatileTtl
        )
    }
}

/// One database.
#[derive(Default)]
pub struct Db {
    pub table: Table,
    /// Slots of keys that have an expiry, for active expiry sampling. Slots of keys that
    /// lost their TTL or were deleted are removed lazily when sampled.
    volatile: Vec<u32>,
    pub expires: usize,
}

impl Db {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Counters reported by INFO stats.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub expired_keys: u64,
    pub evicted_keys: u64,
    pub expired_stale_perc: f64,
}

/// The whole keyspace.
pub struct Keyspace {
    pub dbs: Vec<Db>,
    /// Time of the operation being applied (unix ms).
    pub now_ms: i64,
    /// `notify-keyspace-events` flags.
    pub notify_flags: u32,
    pub events: Vec<Event>,
    /// (db, key) pairs with blocked clients that just received data.
    pub ready: Vec<(usize, Bytes)>,
    /// Keys some client blocks on -> ids of the blocked clients in arrival order. Pushes
    /// only signal these; the server owns the rest of each waiter's state.
    pub blocking_keys: HashMap<(usize, Blob), VecDeque<u64>>,
    /// WATCHed keys -> client ids.
    pub watched: HashMap<(usize, Blob), Vec<u64>>,
    /// Clients whose transaction must abort.
    pub dirty_watchers: HashSet<u64>,
    /// Number of changes since start (INFO `rdb_changes_since_last_save`).
    pub dirty: u64,
    pub stats: Stats,
    pub policy: EvictionPolicy,
    pub lfu_log_factor: u32,
    pub lfu_decay_time: u32,
    /// Deterministic operations produced by writes, when someone consumes them.
    pub effects: Option<Vec<Op>>,
    /// FUNCTION libraries (replicated and snapshotted with the keys).
    pub libraries: Libraries,
    /// A replica never deletes on its own: expired keys are hidden from reads, and only the
    /// leader's DEL (through the log) removes them. No active expiry, no eviction.
    pub replica: bool,
    pub rng: SmallRng,
}

impl Keyspace {
    pub fn new(databases: usize) -> Keyspace {
        Keyspace {
            dbs: (0..databases).map(|_| Db::default()).collect(),
            now_ms: now_ms(),
            notify_flags: 0,
            events: Vec::new(),
            ready: Vec::new(),
            blocking_keys: HashMap::new(),
            watched: HashMap::new(),
            dirty_watchers: HashSet::new(),
            dirty: 0,
            stats: Stats::default(),
            policy: EvictionPolicy::NoEviction,
            lfu_log_factor: 10,
            lfu_decay_time: 1,
            effects: None,
            libraries: Libraries::default(),
            replica: false,
            rng: SmallRng::from_entropy(),
        }
    }

    // -----------------------------------------------------------------------------------
    // Lookups
    // -----------------------------------------------------------------------------------

    #[inline]
    fn is_expired(&self, e: &Entry) -> bool {
        e.expire_at != 0 && e.expire_at <= self.now_ms
    }

    /// Slot of a live key, deleting it first if it has expired (lazy expiry).
    #[inline]
    pub fn find(&mut self, db: usize, key: &[u8]) -> Option<u32> {
        let slot = self.dbs[db].table.find(key)?;
        let e = self.dbs[db].table.slot(slot).expect("live");
        if e.expire_at != 0 && e.expire_at <= self.now_ms {
            if !self.replica {
                self.expire_slot(db, slot);
            }
            return None;
        }
        Some(slot)
    }

    /// Looks a key up for reading: counts hits/misses and refreshes LRU/LFU data.
    #[inline]
    pub fn read(&mut self, db: usize, key: &[u8]) -> Option<&Entry> {
        match self.find(db, key) {
            Some(slot) => {
                self.stats.keyspace_hits += 1;
                let lru = self.access_clock(db, slot);
                let e = self.dbs[db].table.slot_mut(slot).expect("live");
                e.lru = lru;
                Some(e)
            }
            None => {
                self.stats.keyspace_misses += 1;
                if self.notify_flags & notify::KEY_MISS != 0 {
                    self.notify(notify::KEY_MISS, "keymiss", db, key);
                }
                None
            }
        }
    }

    /// Looks a key up for changing it (no hit/miss accounting, as in Redis's lookupKeyWrite).
    #[inline]
    pub fn write(&mut self, db: usize, key: &[u8]) -> Option<&mut Entry> {
        let slot = self.find(db, key)?;
        let lru = self.access_clock(db, slot);
        let e = self.dbs[db].table.slot_mut(slot).expect("live");
        e.lru = lru;
        Some(e)
    }

    /// Looks a key up without touching stats or access time (TYPE-like introspection,
    /// OBJECT, SCAN filters). Still honours expiry.
    pub fn peek(&mut self, db: usize, key: &[u8]) -> Option<&Entry> {
        let slot = self.find(db, key)?;
        self.dbs[db].table.slot(slot)
    }

    /// True if the key exists and is not expired; never deletes (safe on a follower).
    pub fn exists_logically(&self, db: usize, key: &[u8]) -> bool {
        self.dbs[db].table.get(key).is_some_and(|e| !self.is_expired(e))
    }

    /// Returns the entry for `key`, creating it with `make()` if absent.
    /// Returns (entry, created).
    pub fn entry_or_insert(&mut self, db: usize, key: &[u8], make: impl FnOnce() -> Value) -> (&mut Entry, bool) {
        // Expire first, so a stale key is replaced rather than reused.
        let _ = self.find(db, key);
        let (slot, created) = self.dbs[db].table.find_or_insert(key, make);
        if created {
            // Redis 7.0's dbAdd announces every new key.
            self.notify(notify::NEW, "new", db, key);
        }
        // A new key starts with LFU_INIT_VAL under LFU, so it is not evicted first.
        let lru = if created && self.policy.is_lfu() { self.lfu_init() } else { self.access_clock(db, slot) };
        let e = self.dbs[db].table.slot_mut(slot).expect("live");
        e.lru = lru;
        (e, created)
    }

    /// Sets `key` to `value`. With `keep_ttl` an existing expiry is kept, otherwise removed.
    pub fn set(&mut self, db: usize, key: &[u8], value: Value, keep_ttl: bool) {
        let (e, created) = self.entry_or_insert(db, key, || Value::Str(Blob::new(b"")));
        e.value = value;
        if !created && !keep_ttl && e.expire_at != 0 {
            e.expire_at = 0;
            self.dbs[db].expires -= 1;
        }
        self.signal_modified(db, key);
    }

    /// Deletes a key; returns true if it existed (and was live).
    pub fn delete(&mut self, db: usize, key: &[u8]) -> bool {
        match self.find(db, key) {
            Some(slot) => {
                self.remove_slot(db, slot);
                self.signal_modified(db, key);
                true
            }
            None => false,
        }
    }

    /// Removes a key and returns its entry (RENAME, MOVE, GETDEL...).
    pub fn take(&mut self, db: usize, key: &[u8]) -> Option<Entry> {
        let slot = self.find(db, key)?;
        let e = self.remove_slot(db, slot);
        self.signal_modified(db, key);
        Some(e)
    }

    fn remove_slot(&mut self, db: usize, slot: u32) -> Entry {
        let e = self.dbs[db].table.remove_slot(slot);
        if e.expire_at != 0 {
            self.dbs[db].expires -= 1;
        }
        if self.dbs[db].table.is_empty() {
            self.dbs[db].volatile = Vec::new();
        }
        e
    }

    /// Inserts a whole entry (RENAME, MOVE, RESTORE), replacing any existing key.
    pub fn insert_entry(&mut self, db: usize, mut e: Entry) {
        let key = e.key.clone();
        self.delete(db, &key);
        let expire_at = std::mem::take(&mut e.expire_at);
        let lru = e.lru;
        let slot = self.dbs[db].table.insert_new(e.key, e.value);
        self.notify(notify::NEW, "new", db, &key);
        self.dbs[db].table.slot_mut(slot).expect("live").lru = lru;
        if expire_at != 0 {
            self.set_expire_slot(db, slot, expire_at);
        }
        self.signal_modified(db, &key);
    }

    /// Inserts an entry read from a snapshot: no events and no watchers to tell (nobody has
    /// seen this state yet). False if the key is already there.
    pub fn load_entry(&mut self, db: usize, key: Blob, value: Value, expire_at: i64) -> bool {
        if self.dbs[db].table.find(&key).is_some() {
            return false;
        }
        let slot = self.dbs[db].table.insert_new(key, value);
        if expire_at != 0 {
            self.set_expire_slot(db, slot, expire_at);
        }
        true
    }

    /// Deletes an expired key, with the `expired` event and stats.
    fn expire_slot(&mut self, db: usize, slot: u32) {
        let e = self.remove_slot(db, slot);
        self.stats.expired_keys += 1;
        self.notify(notify::EXPIRED, "expired", db, &e.key);
        self.signal_modified(db, &e.key);
        self.record(db, vec![Bytes::from_static(b"DEL"), Bytes::copy_from_slice(&e.key)]);
    }

    // -----------------------------------------------------------------------------------
    // Expiry
    // -----------------------------------------------------------------------------------

    /// Expiry time (unix ms) of a live key: Some(0) means no expiry; None if missing.
    pub fn expire_at(&mut self, db: usize, key: &[u8]) -> Option<i64> {
        let slot = self.find(db, key)?;
        Some(self.dbs[db].table.slot(slot).expect("live").expire_at)
    }

    /// Sets an absolute expiry on a live key. A time in the past deletes the key (as Redis
    /// does on the master), emitting `del`... no: the caller decides which event to send.
    pub fn set_expire(&mut self, db: usize, key: &[u8], at_ms: i64) -> bool {
        match self.find(db, key) {
            Some(slot) => {
                self.set_expire_slot(db, slot, at_ms);
                self.signal_modified(db, key);
                true
            }
            None => false,
        }
    }

    fn set_expire_slot(&mut self, db: usize, slot: u32, at_ms: i64) {
        let d = &mut self.dbs[db];
        let e = d.table.slot_mut(slot).expect("live");
        if e.expire_at == 0 {
            d.expires += 1;
            d.volatile.push(slot);
        }
        e.expire_at = at_ms.max(1);
    }

    /// Removes the expiry of a live key; returns true if it had one.
    pub fn persist(&mut self, db: usize, key: &[u8]) -> bool {
        let Some(slot) = self.find(db, key) else { return false };
        let d = &mut self.dbs[db];
        let e = d.table.slot_mut(slot).expect("live");
        if e.expire_at == 0 {
            return false;
        }
        e.expire_at = 0;
        d.expires -= 1;
        self.signal_modified(db, key);
        true
    }

    /// One bounded round of active expiry on `db`: samples keys with a TTL and deletes the
    /// expired ones, repeating while more than a quarter of a sample was expired, for at
    /// most `budget` samples (Redis's `activeExpireCycle`). Returns keys expired.
    pub fn active_expire(&mut self, db: usize, budget: usize) -> usize {
        let mut expired = 0;
        let mut sampled = 0;
        loop {
            let mut round_expired = 0;
            let mut round_sampled = 0;
            for _ in 0..20 {
                let d = &mut self.dbs[db];
                if d.volatile.is_empty() || sampled >= budget {
                    break;
                }
                let i = self.rng.gen_range(0..d.volatile.len());
                let slot = d.volatile[i];
                sampled += 1;
                // Stale sample (deleted key, lost TTL, or slot reused): drop it.
                let valid = d.table.slot(slot).map(|e| e.expire_at);
                match valid {
                    Some(at) if at != 0 => {
                        round_sampled += 1;
                        if at <= self.now_ms {
                            d.volatile.swap_remove(i);
                            self.expire_slot(db, slot);
                            round_expired += 1;
                        }
                    }
                    _ => {
                        d.volatile.swap_remove(i);
                    }
                }
            }
            expired += round_expired;
            if round_sampled == 0 || round_expired * 4 <= round_sampled || sampled >= budget {
                break;
            }
        }
        // Reclaim the sampling list when it is mostly stale entries.
        let d = &mut self.dbs[db];
        if d.volatile.len() > 64 && d.volatile.len() > 4 * d.expires {
            let t = &d.table;
            let mut seen = HashSet::new();
            d.volatile.retain(|&s| t.slot(s).is_some_and(|e| e.expire_at != 0) && seen.insert(s));
        }
        expired
    }

    // -----------------------------------------------------------------------------------
    // Signals
    // -----------------------------------------------------------------------------------

    /// Queues a keyspace notification if its class is enabled.
    #[inline]
    pub fn notify(&mut self, class: u32, event: &'static str, db: usize, key: &[u8]) {
        let f = self.notify_flags;
        if f & class == 0 || f & (notify::KEYSPACE | notify::KEYEVENT) == 0 {
            return;
        }
        self.events.push(Event { class, event, db, key: Bytes::copy_from_slice(key) });
    }

    /// A key changed: breaks WATCHes on it (Redis's `signalModifiedKey`).
    #[inline]
    pub fn signal_modified(&mut self, db: usize, key: &[u8]) {
        self.dirty += 1;
        if self.watched.is_empty() {
            return;
        }
        if let Some(ids) = self.watched.get(&(db, Blob::new(key))) {
            self.dirty_watchers.extend(ids.iter().copied());
        }
    }

    /// Breaks every WATCH on keys of `db` that exist there (FLUSHDB, SWAPDB).
    pub fn signal_db(&mut self, db: usize, only_existing: bool) {
        if self.watched.is_empty() {
            return;
        }
        let dirty: Vec<u64> = self
            .watched
            .iter()
            .filter(|((d, k), _)| *d == db && (!only_existing || self.exists_logically(db, k)))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        self.dirty_watchers.extend(dirty);
    }

    /// A list or sorted set received elements: wake clients blocked on it.
    #[inline]
    pub fn signal_ready(&mut self, db: usize, key: &[u8]) {
        if self.blocking_keys.is_empty() {
            return;
        }
        if self.blocking_keys.contains_key(&(db, Blob::new(key))) {
            self.ready.push((db, Bytes::copy_from_slice(key)));
        }
    }

    /// Records the deterministic operation a write produced (if someone consumes them).
    #[inline]
    pub fn record(&mut self, db: usize, argv: Vec<Bytes>) {
        if let Some(fx) = &mut self.effects {
            fx.push(Op { db, now_ms: self.now_ms, argv });
        }
    }

    #[inline]
    pub fn recording(&self) -> bool {
        self.effects.is_some()
    }

    // -----------------------------------------------------------------------------------
    // LRU / LFU
    // -----------------------------------------------------------------------------------

    #[inline]
    fn access_clock(&mut self, db: usize, slot: u32) -> u32 {
        if self.policy.is_lfu() {
            let old = self.dbs[db].table.slot(slot).map_or(0, |e| e.lru);
            self.lfu_touch(old)
        } else {
            ((self.now_ms / 1000) as u32) & 0xFF_FFFF
        }
    }

    fn lfu_minutes(&self) -> u32 {
        ((self.now_ms / 60_000) as u32) & 0xFFFF
    }

    /// Decays and log-increments an LFU counter (Redis's `updateLFU`).
    fn lfu_touch(&mut self, old: u32) -> u32 {
        let mut counter = self.lfu_decayed(old);
        if counter < 255 {
            let r: f64 = self.rng.gen();
            let base = counter.saturating_sub(5) as f64;
            let p = 1.0 / (base * self.lfu_log_factor as f64 + 1.0);
            if r < p {
                counter += 1;
            }
        }
        (self.lfu_minutes() << 8) | counter
    }

    /// The LFU counter after decay (OBJECT FREQ reads this).
    pub fn lfu_decayed(&self, lru: u32) -> u32 {
        let counter = lru & 0xFF;
        let then = lru >> 8;
        let now = self.lfu_minutes();
        let elapsed = if now >= then { now - then } else { 65535 - then + now };
        let periods = if self.lfu_decay_time > 0 { elapsed / self.lfu_decay_time } else { 0 };
        counter.saturating_sub(periods)
    }

    /// Initial LFU value for new keys (LFU_INIT_VAL = 5).
    pub fn lfu_init(&self) -> u32 {
        (self.lfu_minutes() << 8) | 5
    }

    /// Seconds since a key was last accessed (OBJECT IDLETIME).
    pub fn idle_secs(&self, lru: u32) -> i64 {
        let now = ((self.now_ms / 1000) as u32) & 0xFF_FFFF;
        if now >= lru {
            (now - lru) as i64
        } else {
            (0xFF_FFFF - lru + now) as i64
        }
    }

    // -----------------------------------------------------------------------------------
    // Eviction
    // -----------------------------------------------------------------------------------

    /// Evicts one key chosen by the policy from a sample of `samples` keys per database.
    /// Returns false when nothing can be evicted.
    pub fn evict_one(&mut self, samples: usize) -> bool {
        let policy = self.policy;
        if policy == EvictionPolicy::NoEviction {
            return false;
        }
        let mut best: Option<(usize, u32, i64)> = None; // (db, slot, score: higher = evict first)
        for db in 0..self.dbs.len() {
            let d = &self.dbs[db];
            if d.table.is_empty() || (policy.volatile_only() && d.expires == 0) {
                continue;
            }
            for _ in 0..samples {
                let slot = if policy.volatile_only() {
                    if d.volatile.is_empty() {
                        break;
                    }
                    d.volatile[self.rng.gen_range(0..d.volatile.len())]
                } else {
                    match d.table.random_slot(&mut self.rng) {
                        Some(s) => s,
                        None => break,
                    }
                };
                let Some(e) = d.table.slot(slot) else { continue };
                if policy.volatile_only() && e.expire_at == 0 {
                    continue;
                }
                let score = match policy {
                    EvictionPolicy::AllKeysLru | EvictionPolicy::VolatileLru => self.idle_secs(e.lru),
                    EvictionPolicy::AllKeysLfu | EvictionPolicy::VolatileLfu => 255 - self.lfu_decayed(e.lru) as i64,
                    EvictionPolicy::VolatileTtl => i64::MAX - e.expire_at,
                    _ => self.rng.gen_range(0..i64::MAX),
                };
                if best.is_none_or(|b| score > b.2) {
                    best = Some((db, slot, score));
                }
            }
        }
        let Some((db, slot, _)) = best else { return false };
        let e = self.remove_slot(db, slot);
        self.stats.evicted_keys += 1;
        self.notify(notify::EVICTED, "evicted", db, &e.key);
        self.signal_modified(db, &e.key);
        self.record(db, vec![Bytes::from_static(b"DEL"), Bytes::copy_from_slice(&e.key)]);
        true
    }

    // -----------------------------------------------------------------------------------
    // Whole-database operations
    // -----------------------------------------------------------------------------------

    pub fn flush_db(&mut self, db: usize) {
        self.signal_db(db, true);
        self.dirty += self.dbs[db].len() as u64;
        self.dbs[db] = Db::default();
    }

    pub fn swap_db(&mut self, a: usize, b: usize) {
        // A watched key changes if it exists in its db before or after the swap (Redis's
        // touchAllWatchedKeysInDb(emptied, replaced_with)).
        if !self.watched.is_empty() {
            let dirty: Vec<u64> = self
                .watched
                .iter()
                .filter(|((d, k), _)| {
                    let other = if *d == a { b } else { a };
                    (*d == a || *d == b) && (self.exists_logically(*d, k) || self.exists_logically(other, k))
                })
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect();
            self.dirty_watchers.extend(dirty);
        }
        self.dbs.swap(a, b);
        // Clients blocked on keys that now exist in their db must be served.
        let keys: Vec<(usize, Blob)> = self.blocking_keys.keys().cloned().collect();
        for (db, k) in keys {
            if (db == a || db == b) && self.exists_logically(db, &k) {
                self.ready.push((db, Bytes::copy_from_slice(&k)));
            }
        }
    }

    /// A random live key (RANDOMKEY), skipping (and deleting) expired ones.
    pub fn random_key(&mut self, db: usize) -> Option<Blob> {
        for _ in 0..100 {
            let slot = self.dbs[db].table.random_slot(&mut self.rng)?;
            let e = self.dbs[db].table.slot(slot).expect("live");
            if self.is_expired(e) {
                self.expire_slot(db, slot);
                continue;
            }
            return Some(e.key.clone());
        }
        None
    }

    /// Allocated slab bytes that hold no entry (see `Table::reusable_bytes`).
    pub fn reusable_bytes(&self) -> u64 {
        self.dbs.iter().map(|d| d.table.reusable_bytes() as u64).sum()
    }

    /// Bytes of keyspace data (tables plus values), an estimate used by MEMORY USAGE totals.
    pub fn data_bytes(&self) -> usize {
        self.dbs
            .iter()
            .map(|d| {
                d.table.overhead_bytes()
                    + d.table.iter().map(|(_, e)| e.key.heap_size() + e.value.heap_size()).sum::<usize>()
            })
            .sum()
    }
}

/// Wall-clock time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Wall-clock time in unix microseconds.
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis gives a new key LFU_INIT_VAL (5) so it is not the first eviction candidate.
    #[test]
    fn new_keys_start_at_lfu_init_val() {
        let mut ks = Keyspace::new(1);
        ks.policy = EvictionPolicy::AllKeysLfu;
        let (e, created) = ks.entry_or_insert(0, b"k", || Value::Str(Blob::new(b"v")));
        assert!(created);
        let lru = e.lru;
        assert_eq!(ks.lfu_decayed(lru), 5);
    }
}
