//! State shared by every connection: the keyspace behind one lock, the configuration,
//! the client registry, pub/sub subscriptions and server-wide statistics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, Notify};

use crate::config::Config;
use crate::keyspace::Keyspace;

/// Something delivered to a connection from outside its own request/reply cycle.
#[derive(Debug)]
pub enum Push {
    /// A pub/sub message (or pmessage when `pattern` is set).
    Message { pattern: Option<Bytes>, channel: Bytes, payload: Bytes },
    /// The already encoded reply of a blocked command that was served by another client's write.
    Served(Bytes),
    /// A MONITOR line.
    Monitor(Bytes),
    /// CLIENT KILL, output buffer overflow, shutdown.
    Kill,
    /// Re-check state (CLIENT UNPAUSE, CLIENT UNBLOCK).
    Wake,
    /// CLIENT UNBLOCK ... ERROR
    UnblockError,
}

/// A blocked client's pending command (BLPOP and friends).
#[derive(Debug)]
pub struct Waiter {
    pub client_id: u64,
    pub db: usize,
    pub argv: Vec<Bytes>,
    pub resp3: bool,
    pub keys: Vec<Bytes>,
    pub tx: mpsc::UnboundedSender<Push>,
}

/// The data behind the global lock: the keyspace and the blocked clients' commands.
pub struct State {
    pub ks: Keyspace,
    pub waiters: HashMap<u64, Waiter>,
    /// Replication bookkeeping that must change atomically with the keyspace.
    pub repl: crate::replication::ReplState,
}

/// Registry entry for one connected client (CLIENT LIST / KILL / INFO clients).
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    pub name: Mutex<Option<String>>,
    pub lib_name: Mutex<Option<String>>,
    pub lib_ver: Mutex<Option<String>>,
    /// `cmd::all_specs()` number of the last command run, or `u32::MAX` for none.
    pub last_cmd: AtomicU32,
    pub last_interaction_ms: AtomicI64,
    pub db: AtomicUsize,
    pub resp: AtomicUsize,
    pub subs: AtomicUsize,
    pub psubs: AtomicUsize,
    pub in_multi: AtomicBool,
    pub blocked: AtomicBool,
    pub is_pubsub: AtomicBool,
    pub is_monitor: AtomicBool,
    pub no_evict: AtomicBool,
    /// Bytes queued for this client by pushes and not yet written (output buffer limit).
    pub queued: AtomicUsize,
    pub qbuf: AtomicUsize,
    /// When the queue first went over the soft limit (ms), or 0.
    pub soft_since_ms: AtomicI64,
    pub tx: mpsc::UnboundedSender<Push>,
    pub killed: AtomicBool,
    /// Wakes the connection even while it is stuck writing to a client that does not read.
    pub kill_signal: Notify,
}

impl ClientInfo {
    /// Disconnects this client as soon as possible (CLIENT KILL, buffer limits, shutdown).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Push::Kill);
        self.kill_signal.notify_one();
    }

    /// Queues a push for this client, enforcing the pub/sub output buffer limits: a client
    /// that cannot keep up is disconnected rather than allowed to grow memory without bound.
    /// Returns false when the client was disconnected for overrunning its limits.
    pub fn push(&self, p: Push, size: usize, limits: (u64, u64, u64)) -> bool {
        if self.killed.load(Ordering::Relaxed) {
            return true;
        }
        let queued = self.queued.fetch_add(size, Ordering::Relaxed) + size;
        let (hard, soft, soft_secs) = limits;
        let now = crate::keyspace::now_ms();
        let over_hard = hard > 0 && queued as u64 > hard;
        let mut over_soft = false;
        if soft > 0 && queued as u64 > soft {
            let since = self.soft_since_ms.load(Ordering::Relaxed);
            if since == 0 {
                self.soft_since_ms.store(now, Ordering::Relaxed);
            } else if now - since > (soft_secs as i64) * 1000 {
                over_soft = true;
            }
        } else {
            self.soft_since_ms.store(0, Ordering::Relaxed);
        }
        if over_hard || over_soft {
            tracing::warn!(
                client = self.id,
                queued,
                "client scheduled to be closed ASAP for overcoming of output buffer limits"
            );
            self.kill();
            return false;
        }
        let _ = self.tx.send(p);
        true
    }
}

/// Pub/sub subscriptions: channel -> subscribers, and the pattern list.
#[derive(Default)]
pub struct PubSub {
    pub channels: DashMap<Bytes, HashMap<u64, Arc<ClientInfo>>>,
    pub patterns: RwLock<Vec<(Bytes, Arc<ClientInfo>)>>,
}

/// Per-command statistics (INFO commandstats), one per spec in `cmd::all_specs()` order.
/// Relaxed atomics: counted on every command without a lock, read only by INFO.
#[derive(Default, Debug)]
pub struct CmdStat {
    pub calls: AtomicU64,
    /// Time spent, in `clock` ticks (converted to µs by INFO).
    pub ticks: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
}

impl CmdStat {
    pub fn reset(&self) {
        for c in [&self.calls, &self.ticks, &self.rejected, &self.failed] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// One SLOWLOG entry.
#[derive(Clone, Debug)]
pub struct SlowEntry {
    pub id: u64,
    pub time: i64,
    pub micros: u64,
    pub argv: Vec<Bytes>,
    pub addr: String,
    pub name: String,
}

/// Server-wide counters (INFO stats).
#[derive(Default)]
pub struct Counters {
    pub total_connections_received: AtomicU64,
    pub total_commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub total_error_replies: AtomicU64,
    pub unexpected_error_replies: AtomicU64,
    pub pubsub_messages: AtomicU64,
    pub client_query_buffer_limit_disconnections: AtomicU64,
    pub client_output_buffer_limit_disconnections: AtomicU64,
}

/// CLIENT PAUSE state.
#[derive(Default, Debug, Clone, Copy)]
pub struct Pause {
    /// Unix ms until which clients are paused, 0 = not paused.
    pub until_ms: i64,
    /// Only write commands are paused (`WRITE` mode).
    pub write_only: bool,
}

pub struct Shared {
    pub state: Mutex<State>,
    pub config: RwLock<Config>,
    pub clients: DashMap<u64, Arc<ClientInfo>>,
    pub pubsub: PubSub,
    pub next_client_id: AtomicU64,
    pub counters: Counters,
    pub started: Instant,
    pub started_unix: i64,
    pub cmdstats: Box<[CmdStat]>,
    pub errorstats: Mutex<HashMap<String, u64>>,
    pub slowlog: Mutex<VecDeque<SlowEntry>>,
    pub slowlog_next_id: AtomicU64,
    pub pause: Mutex<Pause>,
    /// Fast check for the hot path: true while a CLIENT PAUSE may be in effect.
    pub pause_set: AtomicBool,
    /// Writes wait while set: a cluster leader's snapshot lets its operations in flight
    /// commit first, so the snapshot holds nothing the log could still lose.
    pub write_hold: AtomicBool,
    /// `slowlog-log-slower-than`, read on every command (kept in sync by CONFIG SET).
    pub slowlog_threshold: AtomicI64,
    pub unpaused: Notify,
    pub monitors: DashMap<u64, Arc<ClientInfo>>,
    /// Number of MONITOR clients (checked on every command, so kept apart from the map).
    pub monitor_count: AtomicUsize,
    pub shutdown: Notify,
    pub shutting_down: AtomicBool,
    /// The port actually bound (differs from config when started on port 0).
    pub port: AtomicUsize,
    /// Set once durable storage is open (`--durability raft`).
    pub repl: std::sync::OnceLock<Arc<crate::replication::Replicator>>,
    /// True while the dataset loads (snapshot + log replay): commands get `-LOADING`.
    pub loading: AtomicBool,
    pub run_id: String,
    /// Ops/sec samples for `instantaneous_ops_per_sec`.
    pub ops_samples: Mutex<(i64, u64, VecDeque<f64>)>,
    pub lastsave: AtomicI64,
    pub blocked_clients: AtomicUsize,
    /// The Lua interpreter and script cache. Locked only by a command running under the
    /// keyspace lock (so always after it).
    pub scripts: Mutex<crate::script::Engine>,
    /// The running script's state, readable while it holds the keyspace lock (BUSY,
    /// SCRIPT KILL).
    pub script_dog: Arc<crate::script::Watchdog>,
}

impl Shared {
    /// Takes the keyspace lock, unless a script holding it has run past `lua-time-limit`
    /// (then None: a connection answers `-BUSY`, the cron skips its cycle). Waits in short
    /// slices so a script turning busy is noticed.
    pub fn lock_unless_busy(&self) -> Option<parking_lot::MutexGuard<'_, State>> {
        loop {
            if self.script_dog.busy.load(std::sync::atomic::Ordering::Acquire) {
                return None;
            }
            if let Some(g) = self.state.try_lock_for(std::time::Duration::from_millis(5)) {
                return Some(g);
            }
        }
    }

    pub fn new(config: Config) -> Arc<Shared> {
        let mut ks = Keyspace::new(config.databases);
        ks.notify_flags = config.notify_keyspace_events;
        ks.policy = config.maxmemory_policy;
        ks.lfu_log_factor = config.lfu_log_factor;
        ks.lfu_decay_time = config.lfu_decay_time;
        let run_id: String = {
            use rand::Rng;
            let mut r = rand::thread_rng();
            (0..40).map(|_| format!("{:x}", r.gen_range(0..16))).collect()
        };
        let now = crate::keyspace::now_ms();
        let slowlog_threshold = AtomicI64::new(config.slowlog_log_slower_than);
        crate::clock::init();
        Arc::new(Shared {
            state: Mutex::new(State { ks, waiters: HashMap::new(), repl: Default::default() }),
            config: RwLock::new(config),
            clients: DashMap::new(),
            pubsub: PubSub::default(),
            next_client_id: AtomicU64::new(1),
            counters: Counters::default(),
            started: Instant::now(),
            started_unix: now / 1000,
            cmdstats: crate::cmd::all_specs().iter().map(|_| CmdStat::default()).collect(),
            errorstats: Mutex::new(HashMap::new()),
            slowlog: Mutex::new(VecDeque::new()),
            slowlog_next_id: AtomicU64::new(0),
            pause: Mutex::new(Pause::default()),
            pause_set: AtomicBool::new(false),
            write_hold: AtomicBool::new(false),
            slowlog_threshold,
            unpaused: Notify::new(),
            monitors: DashMap::new(),
            monitor_count: AtomicUsize::new(0),
            shutdown: Notify::new(),
            shutting_down: AtomicBool::new(false),
            port: AtomicUsize::new(0),
            repl: std::sync::OnceLock::new(),
            loading: AtomicBool::new(false),
            run_id,
            ops_samples: Mutex::new((now, 0, VecDeque::new())),
            lastsave: AtomicI64::new(now / 1000),
            blocked_clients: AtomicUsize::new(0),
            scripts: Mutex::new(crate::script::Engine::new().expect("the Lua interpreter starts")),
            script_dog: Arc::new(crate::script::Watchdog::default()),
        })
    }

    /// Copies runtime-relevant config into the keyspace after CONFIG SET.
    pub fn config_changed(&self) {
        let c = self.config.read();
        let mut st = self.state.lock();
        st.ks.notify_flags = c.notify_keyspace_events;
        st.ks.policy = c.maxmemory_policy;
        st.ks.lfu_log_factor = c.lfu_log_factor;
        st.ks.lfu_decay_time = c.lfu_decay_time;
    }

    /// Publishes a message to channel subscribers and matching patterns; returns receivers.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        self.publish_except(channel, payload, None).0
    }

    /// Publishes to everyone but client `me`, and returns (receivers including `me`, the
    /// deliveries `me` should get: None for the channel, Some(pattern) per matching pattern).
    /// The publisher writes its own copies inline, so they come before its PUBLISH reply
    /// as on Redis.
    pub fn publish_except(&self, channel: &[u8], payload: &[u8], me: Option<u64>) -> (usize, Vec<Option<Bytes>>) {
        let mut mine = Vec::new();
        let limits = self.config.read().pubsub_limit;
        let mut n = 0;
        let size = channel.len() + payload.len() + 32;
        let ch = Bytes::copy_from_slice(channel);
        let pl = Bytes::copy_from_slice(payload);
        if let Some(subs) = self.pubsub.channels.get(channel) {
            for c in subs.values() {
                n += 1;
                if Some(c.id) == me {
                    mine.push(None);
                    continue;
                }
                if !c.push(Push::Message { pattern: None, channel: ch.clone(), payload: pl.clone() }, size, limits) {
                    self.counters.client_output_buffer_limit_disconnections.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let pats = self.pubsub.patterns.read();
        for (p, c) in pats.iter() {
            if crate::cmd::args::glob_match(p, channel, false) {
                n += 1;
                if Some(c.id) == me {
                    mine.push(Some(p.clone()));
                    continue;
                }
                if !c.push(
                    Push::Message { pattern: Some(p.clone()), channel: ch.clone(), payload: pl.clone() },
                    size + p.len(),
                    limits,
                ) {
                    self.counters.client_output_buffer_limit_disconnections.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.counters.pubsub_messages.fetch_add(1, Ordering::Relaxed);
        (n, mine)
    }

    /// Publishes the keyspace notifications collected during a command.
    pub fn publish_events(&self, events: Vec<crate::keyspace::Event>, flags: u32) {
        use crate::keyspace::notify;
        for ev in events {
            if flags & notify::KEYSPACE != 0 {
                let mut ch = format!("__keyspace@{}__:", ev.db).into_bytes();
                ch.extend_from_slice(&ev.key);
                self.publish(&ch, ev.event.as_bytes());
            }
            if flags & notify::KEYEVENT != 0 {
                let ch = format!("__keyevent@{}__:{}", ev.db, ev.event);
                self.publish(ch.as_bytes(), &ev.key);
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed) as u16
    }
}
