//! Server configuration: one table of directives shared by the config file (redis.conf
//! syntax), the command line (`--port 7000`), and `CONFIG GET/SET`.
//!
//! Each directive knows how to parse and render its value; unknown directives are rejected
//! by name, as Redis does.

use crate::keyspace::{notify, EvictionPolicy};

#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    pub bind: Vec<String>,
    pub requirepass: Option<String>,
    pub maxmemory: u64,
    pub maxmemory_policy: EvictionPolicy,
    pub maxmemory_samples: u32,
    pub databases: usize,
    pub timeout: u64,
    pub maxclients: usize,
    pub proto_max_bulk_len: u64,
    pub client_query_buffer_limit: u64,
    pub notify_keyspace_events: u32,
    pub hz: u32,
    pub dir: String,
    pub dbfilename: String,
    pub save: String,
    pub appendonly: bool,
    pub appendfsync: String,
    /// `raft` (default): every write goes through the Raft log on disk before its reply;
    /// `none`: in memory only, like Redis without persistence.
    pub durability: Durability,
    /// This node's Raft id (`--node-id`).
    pub node_id: u64,
    /// Initial cluster members, `id@host:port,...` (raft addresses); empty = single node.
    pub cluster: String,
    /// Where this node listens for its peers when `cluster` does not say (a single node
    /// that may grow, or a node that joins).
    pub raft_addr: String,
    /// Start without forming a cluster and wait to be added (RAFT ADD-LEARNER on the leader).
    pub join: bool,
    pub loglevel: String,
    pub logfile: String,
    pub protected_mode: bool,
    pub tcp_keepalive: u64,
    pub tcp_backlog: u32,
    pub lfu_log_factor: u32,
    pub lfu_decay_time: u32,
    pub slowlog_log_slower_than: i64,
    pub slowlog_max_len: u64,
    pub latency_monitor_threshold: u64,
    /// Pub/sub output buffer limits: hard bytes, soft bytes, soft seconds.
    pub pubsub_limit: (u64, u64, u64),
    /// Normal clients' output limits (0 = unlimited, Redis's default).
    pub normal_limit: (u64, u64, u64),
    pub replica_limit: (u64, u64, u64),
    pub lua_time_limit: u64,
    pub active_expire_effort: u32,
    pub daemonize: bool,
    pub pidfile: String,
    pub hash_max_listpack_entries: u64,
    pub hash_max_listpack_value: u64,
    pub set_max_intset_entries: u64,
    pub zset_max_listpack_entries: u64,
    pub zset_max_listpack_value: u64,
    pub list_max_listpack_size: i64,
    pub io_threads: u32,
    pub lazyfree_lazy_user_del: bool,
    pub lazyfree_lazy_user_flush: bool,
    pub lazyfree_lazy_expire: bool,
    pub lazyfree_lazy_eviction: bool,
    pub lazyfree_lazy_server_del: bool,
    pub appendfilename: String,
    pub replica_read_only: bool,
    pub activerehashing: bool,
    pub stop_writes_on_bgsave_error: bool,
    pub rdbcompression: bool,
    pub loglevel_verbosity: u8,
    /// `enable-debug-command`: DEBUG is refused unless `yes` or `local` (Redis 7 default: no).
    pub enable_debug_command: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 6379,
            bind: vec!["127.0.0.1".into(), "-::1".into()],
            requirepass: None,
            maxmemory: 0,
            maxmemory_policy: EvictionPolicy::NoEviction,
            maxmemory_samples: 5,
            databases: 16,
            timeout: 0,
            maxclients: 10000,
            proto_max_bulk_len: 512 * 1024 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            notify_keyspace_events: 0,
            hz: 10,
            dir: ".".into(),
            dbfilename: "dump.rdb".into(),
            save: String::new(),
            appendonly: false,
            // Unlike Redis (everysec): an acknowledged write is on disk by default.
            appendfsync: "always".into(),
            durability: Durability::Raft,
            node_id: 1,
            cluster: String::new(),
            raft_addr: String::new(),
            join: false,
            loglevel: "notice".into(),
            logfile: String::new(),
            protected_mode: true,
            tcp_keepalive: 300,
            tcp_backlog: 511,
            lfu_log_factor: 10,
            lfu_decay_time: 1,
            slowlog_log_slower_than: 10000,
            slowlog_max_len: 128,
            latency_monitor_threshold: 0,
            pubsub_limit: (32 * 1024 * 1024, 8 * 1024 * 1024, 60),
            normal_limit: (0, 0, 0),
            replica_limit: (256 * 1024 * 1024, 64 * 1024 * 1024, 60),
            lua_time_limit: 5000,
            active_expire_effort: 1,
            daemonize: false,
            pidfile: String::new(),
            hash_max_listpack_entries: 128,
            hash_max_listpack_value: 64,
            set_max_intset_entries: 512,
            zset_max_listpack_entries: 128,
            zset_max_listpack_value: 64,
            list_max_listpack_size: -2,
            io_threads: default_io_threads(),
            lazyfree_lazy_user_del: false,
            lazyfree_lazy_user_flush: false,
            lazyfree_lazy_expire: false,
            lazyfree_lazy_eviction: false,
            lazyfree_lazy_server_del: false,
            appendfilename: "appendonly.aof".into(),
            replica_read_only: true,
            activerehashing: true,
            stop_writes_on_bgsave_error: true,
            rdbcompression: true,
            loglevel_verbosity: 0,
            enable_debug_command: false,
        }
    }
}

/// Parses a memory size the way Redis's `memtoull` does: `1gb`, `100mb`, `1k`, `42`.
pub fn parse_memory(s: &str) -> Option<u64> {
    let l = s.to_ascii_lowercase();
    let (num, mul) = [
        ("gb", 1u64 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1000),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| l.strip_suffix(suf).map(|n| (n.to_string(), *m)))
    .unwrap_or((l.clone(), 1));
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mul)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("argument must be 'yes' or 'no'".into()),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse::<T>().map_err(|_| "argument couldn't be parsed into an integer".to_string())
}

fn parse_limits(v: &[&str]) -> Result<(u64, u64, u64), String> {
    if v.len() != 3 {
        return Err("Wrong number of arguments in buffer limit configuration.".into());
    }
    let hard =
        parse_memory(v[0]).ok_or("Error in hard, soft or soft_seconds setting in buffer limit configuration.")?;
    let soft =
        parse_memory(v[1]).ok_or("Error in hard, soft or soft_seconds setting in buffer limit configuration.")?;
    let secs = v[2]
        .parse::<u64>()
        .map_err(|_| "Error in hard, soft or soft_seconds setting in buffer limit configuration.")?;
    Ok((hard, soft, secs))
}

type Getter = fn(&Config) -> String;
type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// One configuration directive.
pub struct Directive {
    pub name: &'static str,
    pub alias: Option<&'static str>,
    /// Settable with CONFIG SET (immutable ones can only come from the file or flags).
    pub mutable: bool,
    pub get: Getter,
    pub set: Setter,
}

macro_rules! d {
    ($name:expr, $mutable:expr, |$c:ident| $get:expr, |$c2:ident, $v:ident| $set:expr) => {
        Directive {
            name: $name,
            alias: None,
            mutable: $mutable,
            get: |$c: &Config| $get,
            set: |$c2: &mut Config, $v: &str| $set,
        }
    };
}

macro_rules! num_d {
    ($name:expr, $field:ident) => {
        d!($name, true, |c| c.$field.to_string(), |c, v| {
            c.$field = parse_num(v)?;
            Ok(())
        })
    };
}

macro_rules! mem_d {
    ($name:expr, $field:ident) => {
        d!($name, true, |c| c.$field.to_string(), |c, v| {
            c.$field = parse_memory(v).ok_or("argument must be a memory value")?;
            Ok(())
        })
    };
}

macro_rules! bool_d {
    ($name:expr, $field:ident) => {
        d!($name, true, |c| yes_no(c.$field), |c, v| {
            c.$field = parse_bool(v)?;
            Ok(())
        })
    };
}

macro_rules! str_d {
    ($name:expr, $mutable:expr, $field:ident) => {
        d!($name, $mutable, |c| c.$field.clone(), |c, v| {
            c.$field = v.to_string();
            Ok(())
        })
    };
}

/// Every directive redoubt understands.
pub fn directives() -> &'static [Directive] {
    static D: std::sync::OnceLock<Vec<Directive>> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        vec![
            d!("port", false, |c| c.port.to_string(), |c, v| {
                c.port = parse_num(v)?;
                Ok(())
            }),
            d!("bind", false, |c| c.bind.join(" "), |c, v| {
                c.bind = v.split_whitespace().map(str::to_string).collect();
                Ok(())
            }),
            d!("requirepass", true, |c| c.requirepass.clone().unwrap_or_default(), |c, v| {
                c.requirepass = if v.is_empty() { None } else { Some(v.to_string()) };
                Ok(())
            }),
            mem_d!("maxmemory", maxmemory),
            d!("maxmemory-policy", true, |c| c.maxmemory_policy.name().into(), |c, v| {
                c.maxmemory_policy = EvictionPolicy::parse(v).ok_or("argument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction")?;
                Ok(())
            }),
            num_d!("maxmemory-samples", maxmemory_samples),
            d!("databases", false, |c| c.databases.to_string(), |c, v| {
                let n: usize = parse_num(v)?;
                if !(1..=1_000_000).contains(&n) {
                    return Err("argument must be between 1 and 2147483647 inclusive".into());
                }
                c.databases = n;
                Ok(())
            }),
            num_d!("timeout", timeout),
            num_d!("maxclients", maxclients),
            mem_d!("proto-max-bulk-len", proto_max_bulk_len),
            mem_d!("client-query-buffer-limit", client_query_buffer_limit),
            d!("notify-keyspace-events", true, |c| notify::render(c.notify_keyspace_events), |c, v| {
                c.notify_keyspace_events = notify::parse(v.as_bytes()).ok_or("Invalid event class character. Use 'Ag$lshzxeKEtmd'.")?;
                Ok(())
            }),
            num_d!("hz", hz),
            str_d!("dir", true, dir),
            str_d!("dbfilename", true, dbfilename),
            str_d!("save", true, save),
            bool_d!("appendonly", appendonly),
            d!("appendfsync", true, |c| c.appendfsync.clone(), |c, v| {
                match v.to_ascii_lowercase().as_str() {
                    s @ ("always" | "everysec" | "no") => {
                        c.appendfsync = s.to_string();
                        Ok(())
                    }
                    _ => Err("argument(s) must be one of the following: always, everysec, no".into()),
                }
            }),
            d!("durability", false, |c| c.durability.name().into(), |c, v| {
                c.durability = match v.to_ascii_lowercase().as_str() {
                    "raft" => Durability::Raft,
                    "none" => Durability::None,
                    _ => return Err("argument must be one of the following: raft, none".into()),
                };
                Ok(())
            }),
            d!("node-id", false, |c| c.node_id.to_string(), |c, v| {
                let n: u64 = parse_num(v)?;
                if n == 0 {
                    return Err("node-id must be a positive integer".into());
                }
                c.node_id = n;
                Ok(())
            }),
            str_d!("cluster", false, cluster),
            str_d!("raft-addr", false, raft_addr),
            d!("join", false, |c| yes_no(c.join), |c, v| {
                c.join = parse_bool(v)?;
                Ok(())
            }),
            d!("loglevel", true, |c| c.loglevel.clone(), |c, v| {
                match v.to_ascii_lowercase().as_str() {
                    s @ ("debug" | "verbose" | "notice" | "warning" | "nothing") => {
                        c.loglevel = s.to_string();
                        Ok(())
                    }
                    _ => Err("argument(s) must be one of the following: debug, verbose, notice, warning, nothing".into()),
                }
            }),
            str_d!("logfile", false, logfile),
            bool_d!("protected-mode", protected_mode),
            num_d!("tcp-keepalive", tcp_keepalive),
            d!("tcp-backlog", false, |c| c.tcp_backlog.to_string(), |c, v| {
                c.tcp_backlog = parse_num(v)?;
                Ok(())
            }),
            num_d!("lfu-log-factor", lfu_log_factor),
            num_d!("lfu-decay-time", lfu_decay_time),
            num_d!("slowlog-log-slower-than", slowlog_log_slower_than),
            num_d!("slowlog-max-len", slowlog_max_len),
            num_d!("latency-monitor-threshold", latency_monitor_threshold),
            d!("client-output-buffer-limit", true, |c| {
                format!(
                    "normal {} {} {} slave {} {} {} pubsub {} {} {}",
                    c.normal_limit.0, c.normal_limit.1, c.normal_limit.2,
                    c.replica_limit.0, c.replica_limit.1, c.replica_limit.2,
                    c.pubsub_limit.0, c.pubsub_limit.1, c.pubsub_limit.2
                )
            }, |c, v| {
                let parts: Vec<&str> = v.split_whitespace().collect();
                if parts.len() % 4 != 0 || parts.is_empty() {
                    return Err("Wrong number of arguments in buffer limit configuration.".into());
                }
                for chunk in parts.chunks(4) {
                    let lim = parse_limits(&chunk[1..])?;
                    match chunk[0].to_ascii_lowercase().as_str() {
                        "normal" => c.normal_limit = lim,
                        "slave" | "replica" => c.replica_limit = lim,
                        "pubsub" => c.pubsub_limit = lim,
                        _ => return Err("Invalid client class specified in buffer limit configuration.".into()),
                    }
                }
                Ok(())
            }),
            Directive { alias: Some("lua-time-limit"), ..num_d!("busy-reply-threshold", lua_time_limit) },
            num_d!("active-expire-effort", active_expire_effort),
            d!("daemonize", false, |c| yes_no(c.daemonize), |c, v| {
                c.daemonize = parse_bool(v)?;
                if c.daemonize {
                    return Err("redoubt does not daemonize; run it under a supervisor".into());
                }
                Ok(())
            }),
            str_d!("pidfile", false, pidfile),
            Directive { alias: Some("hash-max-ziplist-entries"), ..num_d!("hash-max-listpack-entries", hash_max_listpack_entries) },
            num_d!("hash-max-listpack-value", hash_max_listpack_value),
            num_d!("set-max-intset-entries", set_max_intset_entries),
            num_d!("zset-max-listpack-entries", zset_max_listpack_entries),
            num_d!("zset-max-listpack-value", zset_max_listpack_value),
            num_d!("list-max-listpack-size", list_max_listpack_size),
            d!("io-threads", false, |c| c.effective_io_threads().to_string(), |c, v| {
                c.io_threads = parse_num(v)?;
                Ok(())
            }),
            bool_d!("lazyfree-lazy-user-del", lazyfree_lazy_user_del),
            bool_d!("lazyfree-lazy-user-flush", lazyfree_lazy_user_flush),
            bool_d!("lazyfree-lazy-expire", lazyfree_lazy_expire),
            bool_d!("lazyfree-lazy-eviction", lazyfree_lazy_eviction),
            bool_d!("lazyfree-lazy-server-del", lazyfree_lazy_server_del),
            str_d!("appendfilename", false, appendfilename),
            bool_d!("replica-read-only", replica_read_only),
            bool_d!("activerehashing", activerehashing),
            bool_d!("stop-writes-on-bgsave-error", stop_writes_on_bgsave_error),
            bool_d!("rdbcompression", rdbcompression),
            d!("enable-debug-command", false, |c| if c.enable_debug_command { "yes".into() } else { "no".into() }, |c, v| {
                c.enable_debug_command = match v.to_ascii_lowercase().as_str() {
                    "yes" | "local" => true,
                    "no" => false,
                    _ => return Err("argument(s) must be one of the following: no, yes, local".into()),
                };
                Ok(())
            }),
        ]
    })
}

/// Finds a directive by name or alias (case-insensitive).
pub fn find(name: &str) -> Option<&'static Directive> {
    directives()
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name) || d.alias.is_some_and(|a| a.eq_ignore_ascii_case(name)))
}

impl Config {
    /// Applies one directive with its arguments (already split).
    pub fn apply(&mut self, name: &str, args: &[String]) -> Result<(), String> {
        let d = find(name).ok_or_else(|| "Bad directive or wrong number of arguments".to_string())?;
        if args.is_empty() && d.name != "requirepass" && d.name != "save" && d.name != "notify-keyspace-events" {
            return Err("Bad directive or wrong number of arguments".into());
        }
        (d.set)(self, &args.join(" "))
    }

    /// Parses redis.conf text. Errors name the line like Redis's startup error.
    pub fn load_str(&mut self, text: &str) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let words = redoubt_protocol::decode::split_args(t.as_bytes())
                .ok_or_else(|| format!("line {}: unbalanced quotes in configuration line", i + 1))?;
            let words: Vec<String> = words.into_iter().map(|w| String::from_utf8_lossy(&w).into_owned()).collect();
            if words.is_empty() {
                continue;
            }
            if words[0].eq_ignore_ascii_case("include") {
                return Err(format!("line {}: 'include' is not supported", i + 1));
            }
            self.apply(&words[0], &words[1..])
                .map_err(|e| format!("Reading the configuration file, at line {}\n>>> '{}'\n{}", i + 1, t, e))?;
        }
        Ok(())
    }

    /// Applies `--name value...` arguments the way redis-server does (a config file first,
    /// then every `--directive args`).
    pub fn from_args(args: &[String]) -> Result<Config, String> {
        let mut cfg = Config::default();
        let mut i = 0;
        if let Some(first) = args.first() {
            if !first.starts_with("--") {
                let text = std::fs::read_to_string(first)
                    .map_err(|e| format!("Fatal error, can't open config file '{first}': {e}"))?;
                cfg.load_str(&text)?;
                i = 1;
            }
        }
        while i < args.len() {
            let a = &args[i];
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("Bad directive or wrong number of arguments: '{a}'"));
            };
            let mut vals = Vec::new();
            i += 1;
            while i < args.len() && !args[i].starts_with("--") {
                vals.push(args[i].clone());
                i += 1;
            }
            // `--save ''` and `--requirepass ''` are legal.
            if vals.is_empty() && !matches!(name, "save" | "requirepass" | "notify-keyspace-events") {
                return Err(format!("Bad directive or wrong number of arguments: '--{name}'"));
            }
            if find(name).is_none() {
                return Err(format!("Bad directive or wrong number of arguments: unknown directive '{name}'"));
            }
            cfg.apply(name, &vals).map_err(|e| format!("--{name}: {e}"))?;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in directives() {
            for n in std::iter::once(d.name).chain(d.alias) {
                assert!(seen.insert(n), "{n} listed twice");
            }
        }
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("1gb"), Some(1 << 30));
        assert_eq!(parse_memory("100MB"), Some(100 << 20));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("42"), Some(42));
        assert_eq!(parse_memory("x"), None);
        assert_eq!(parse_memory("-1"), None);
    }

    #[test]
    fn args_like_redis_server() {
        let c = Config::from_args(&[
            "--port".into(),
            "7000".into(),
            "--maxmemory".into(),
            "1gb".into(),
            "--maxmemory-policy".into(),
            "allkeys-lru".into(),
            "--save".into(),
            "".into(),
        ])
        .unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.maxmemory, 1 << 30);
        assert_eq!(c.maxmemory_policy, EvictionPolicy::AllKeysLru);
        assert!(Config::from_args(&["--no-such-thing".into(), "1".into()]).unwrap_err().contains("no-such-thing"));
    }

    #[test]
    fn config_file() {
        let mut c = Config::default();
        c.load_str("# comment\nport 7001\nrequirepass \"s3 cret\"\n").unwrap();
        assert_eq!(c.port, 7001);
        assert_eq!(c.requirepass.as_deref(), Some("s3 cret"));
        let e = c.load_str("bogus 1\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("bogus"), "{e}");
    }
}

/// `io-threads` defaults to 0, "auto", resolved by [`Config::effective_io_threads`].
fn default_io_threads() -> u32 {
    0
}

impl Config {
    /// Worker threads for the runtime. Auto: in memory on machines of up to 2 cores, one
    /// event loop, since the clients (or the benchmark) need the other core and a second
    /// worker only trades the keyspace lock back and forth (measured: +5-25% at pipeline 16
    /// on the 2-core reference VM). Durable, at least 2: Raft's tasks (log, apply, commit)
    /// then run beside the connections instead of queueing behind them (SET at 50 clients
    /// with fsync always: ~29k/s with 2 workers, ~22k/s with 1). Otherwise a worker per
    /// core, at most 8.
    pub fn effective_io_threads(&self) -> u32 {
        if self.io_threads > 0 {
            return self.io_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match (self.durability, cores) {
            (Durability::None, n) if n <= 2 => 1,
            (_, n) => n.clamp(2, 8) as u32,
        }
    }
}

/// Where writes go before they are acknowledged (`--durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// In memory only (a cache; everything is lost on restart).
    None,
    /// Through the Raft log, persisted in `dir` (and replicated with `--cluster`).
    Raft,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Raft => "raft",
        }
    }
}
