//! Everything the gateway keeps, and where it keeps it: in redoubt.
//!
//! A gateway pod holds no state of its own that another pod could need. Configuration,
//! queued messages, the vendor-id map for receipts, receipts waiting for a customer, bind
//! counts and sessions are all keys in redoubt (names below), written with scripts that do
//! each step in one atomic, replicated command. A pod can die at any point; another pod (or
//! the same one restarted) finds everything where it was.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `gw:config:version` | string | bumped by every API change; pods reload when it moves |
//! | `gw:customers` `gw:vendors` `gw:routes` `gw:campaigns` | hash | id -> JSON |
//! | `gw:msg:{id}` | hash | one message: customer, addresses, the submit_sm body, state, vendor and vendor id |
//! | `gw:trail:{id}` | list | the message's status trail, `"<unix ms> <event> <detail>"` |
//! | `gw:queue` | list | ids accepted and not yet taken by a pod |
//! | `gw:inflight:{pod}` | list | ids a pod has taken (its lease); put back if the pod dies |
//! | `gw:pods` | zset | pod -> heartbeat deadline (unix ms) |
//! | `gw:vid:{vendor}:{vendor id}` | string | receipt routing: the message a vendor id belongs to |
//! | `gw:early:{vendor}:{vendor id}` | list | receipts that arrived before their submit_sm_resp |
//! | `gw:dlrdone:{id}:{state}` | string | a receipt already taken (repeats are dropped) |
//! | `gw:dlrq:{customer}` | list | receipts waiting for a receiver session of the customer |
//! | `gw:dlrinflight:{pod}:{customer}` | list | receipts a pod is delivering |
//! | `gw:binds:{customer}` | zset | `{pod}/{session}` -> deadline: live binds, for `max_binds` |
//! | `gw:session:{pod}:{session}` | hash | a bound session (customer, bind type, peer), expires unless refreshed |
//! | `gw:tps:{customer}` | CL.THROTTLE | the customer's shared submit rate |
//! | `gw:camp:{source}:h` `gw:camp:{source}:d` | RATELIMIT | a sender's hourly and daily caps |

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redoubt_client::{Script, Shared, Value};
use serde::{Deserialize, Serialize};

/// The state store is unreachable, or answered with an error that retrying will not fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store error: {0}")]
    Reply(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How long a call keeps retrying through a leader election or a node restart.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// A handle to the state store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Shared,
}

impl Store {
    pub fn new(nodes: Vec<String>) -> Store {
        Store { client: Shared::following_leader(nodes) }
    }

    /// One command, retried while the cluster elects a leader or a node comes back. Only
    /// idempotent commands (or scripts written to be) go through here: a retry after a broken
    /// connection may repeat a command that already ran.
    pub async fn call<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Value> {
        self.retry(|| self.client.cmd(args)).await
    }

    /// A script by SHA, retried as [`Store::call`].
    pub async fn script<K: AsRef<[u8]>, A: AsRef<[u8]>>(&self, s: &Script, keys: &[K], args: &[A]) -> Result<Value> {
        self.retry(|| s.call(&self.client, keys, args)).await
    }

    async fn retry<F, Fut>(&self, mut f: F) -> Result<Value>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = redoubt_client::Result<Value>>,
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let why = match f().await {
                Ok(Value::Error(e)) if retryable(&e) => e,
                Ok(Value::Error(e)) => return Err(StoreError::Reply(e)),
                Ok(v) => return Ok(v),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > RETRY_FOR {
                return Err(StoreError::Unavailable(why));
            }
            tracing::debug!(error = %why, "state store busy; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// Errors a redoubt node gives while a cluster has no leader or a node is loading.
fn retryable(e: &str) -> bool {
    ["TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY"].iter().any(|p| e.starts_with(p))
}

/// Milliseconds since the epoch, the unit of every time the gateway stores.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

// --- configuration ------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    /// Argon2 PHC string; the password itself is never stored.
    pub password_hash: String,
    pub max_tps: u32,
    pub burst: u32,
    pub max_binds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Number prefixes the customer owns: mobile-originated messages to them are theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numbers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindMode {
    #[serde(rename = "transceiver")]
    Transceiver,
    #[serde(rename = "transmitter+receiver")]
    TransmitterReceiver,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vendor {
    pub host: String,
    pub port: u16,
    pub system_id: String,
    /// Kept as given: the gateway needs it to bind out. The API never returns it.
    pub password: String,
    pub bind: BindMode,
    pub max_tps: u32,
    pub window: u32,
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Route {
    pub vendors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Campaign {
    pub campaign_id: String,
    pub hourly_limit: u64,
    pub daily_limit: u64,
}

/// The four configuration hashes, by the name the API uses for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Customers,
    Vendors,
    Routes,
    Campaigns,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Customers => "gw:customers",
            Kind::Vendors => "gw:vendors",
            Kind::Routes => "gw:routes",
            Kind::Campaigns => "gw:campaigns",
        }
    }
}

pub const CONFIG_VERSION: &str = "gw:config:version";

/// One consistent view of the configuration, as every pod reads it.
#[derive(Debug, Default)]
pub struct Config {
    pub version: i64,
    pub customers: HashMap<String, Customer>,
    pub vendors: HashMap<String, Vendor>,
    /// Sorted longest prefix first, so the first match is the longest.
    pub routes: Vec<(String, Route)>,
    pub campaigns: HashMap<String, Campaign>,
}

impl Config {
    /// The customer owning `destination` (longest matching number prefix), for MO messages.
    pub fn owner(&self, destination: &str) -> Option<&str> {
        let digits = destination.trim_start_matches('+');
        self.customers
            .iter()
            .flat_map(|(id, c)| c.numbers.iter().map(move |n| (id, n.trim_start_matches('+'))))
            .filter(|(_, n)| !n.is_empty() && digits.starts_with(n))
            .max_by_key(|(_, n)| n.len())
            .map(|(id, _)| id.as_str())
    }

    /// The route for a destination: the longest matching prefix, else `default`.
    pub fn route(&self, destination: &str) -> Option<&Route> {
        let digits = destination.trim_start_matches('+');
        self.routes
            .iter()
            .find(|(p, _)| p != "default" && digits.starts_with(p.trim_start_matches('+')))
            .or_else(|| self.routes.iter().find(|(p, _)| p == "default"))
            .map(|(_, r)| r)
    }
}

/// The configuration every part of a pod reads; swapped whole when it changes.
#[derive(Clone, Default)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub fn get(&self) -> Arc<Config> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, c: Config) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
    }
}

impl Store {
    /// Reads the whole configuration.
    pub async fn load_config(&self) -> Result<Config> {
        let version = self.call(&["GET", CONFIG_VERSION]).await?;
        let version = version.as_bytes().and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
        let mut c = Config { version, ..Config::default() };
        c.customers = self.read_all(Kind::Customers).await?;
        c.vendors = self.read_all(Kind::Vendors).await?;
        let mut routes: Vec<(String, Route)> = self.read_all(Kind::Routes).await?.into_iter().collect();
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        c.routes = routes;
        c.campaigns = self.read_all(Kind::Campaigns).await?;
        Ok(c)
    }

    /// Every entry of one configuration hash. Entries that do not parse are skipped loudly
    /// (someone edited them by hand) rather than taking the whole configuration down.
    pub async fn read_all<T: for<'de> Deserialize<'de>>(&self, kind: Kind) -> Result<HashMap<String, T>> {
        let v = self.call(&["HGETALL", kind.key()]).await?;
        let mut out = HashMap::new();
        if let Value::Array(items) = v {
            for pair in items.chunks(2) {
                let (Some(k), Some(v)) = (pair[0].as_bytes(), pair.get(1).and_then(|v| v.as_bytes())) else { continue };
                let name = String::from_utf8_lossy(k).into_owned();
                match serde_json::from_slice(v) {
                    Ok(t) => {
                        out.insert(name, t);
                    }
                    Err(e) => {
                        tracing::warn!(key = kind.key(), field = %name, error = %e, "skipping a bad config entry")
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn read_one<T: for<'de> Deserialize<'de>>(&self, kind: Kind, id: &str) -> Result<Option<T>> {
        let v = self.call(&["HGET", kind.key(), id]).await?;
        Ok(v.as_bytes().and_then(|b| serde_json::from_slice(b).ok()))
    }

    /// Writes (or with `None` deletes) one entry and bumps the version, in one step.
    pub async fn write_one(&self, kind: Kind, id: &str, value: Option<String>) -> Result<bool> {
        let v = match value {
            Some(json) => self.script(&WRITE_CONFIG, &[kind.key(), CONFIG_VERSION], &[id, "set", &json]).await?,
            None => self.script(&WRITE_CONFIG, &[kind.key(), CONFIG_VERSION], &[id, "del", ""]).await?,
        };
        Ok(v.as_int() == Some(1))
    }

    /// Keeps `live` current: polls the version every `every` and reloads when it moved.
    pub async fn follow_config(self, live: LiveConfig, every: Duration) {
        let mut seen = None;
        loop {
            match self.call(&["GET", CONFIG_VERSION]).await {
                Ok(v) => {
                    let version: i64 =
                        v.as_bytes().and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
                    if seen != Some(version) {
                        match self.load_config().await {
                            Ok(c) => {
                                tracing::info!(version = c.version, "configuration loaded");
                                seen = Some(c.version);
                                live.set(c);
                            }
                            Err(e) => tracing::warn!(error = %e, "configuration reload failed"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "configuration poll failed"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

static WRITE_CONFIG: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: config hash, version key. ARGV: field, "set"|"del", json
local changed
if ARGV[2] == 'set' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  changed = 1
else
  changed = redis.call('HDEL', KEYS[1], ARGV[1])
end
if changed == 1 then redis.call('INCR', KEYS[2]) end
return changed
"#,
    )
});

/// Reads an integer out of a script's array reply.
pub fn int_at(v: &Value, i: usize) -> Option<i64> {
    match v {
        Value::Array(a) => a.get(i)?.as_int(),
        _ => None,
    }
}

pub fn bytes_at(v: &Value, i: usize) -> Option<&[u8]> {
    match v {
        Value::Array(a) => a.get(i)?.as_bytes(),
        _ => None,
    }
}
