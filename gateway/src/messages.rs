//! The message's life in the store: accepted and queued, leased by a pod, submitted to a
//! vendor, receipted, handed to the customer. Each step is one script, so it happens whole
//! or not at all, and each is safe to repeat (a retry after a lost reply changes nothing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use redoubt_client::{Script, Value};

use crate::receipts::{exact, receipt_aliases, stored_aliases};
use crate::store::{bytes_at, int_at, now_ms, Result, Store};

/// A gateway message id: time-ordered, unique across pods without asking the store.
/// 11 hex digits of unix ms, 8 of a per-process random tag, 5 of a counter.
pub struct IdGen {
    tag: u32,
    counter: AtomicU64,
}

impl IdGen {
    pub fn new() -> IdGen {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).expect("the OS random source is available");
        IdGen { tag: u32::from_le_bytes(b), counter: AtomicU64::new(0) }
    }

    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) & 0xfffff;
        format!("{:011x}{:08x}{:05x}", now_ms() as u64 & 0xfff_ffff_ffff, self.tag, n)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::new()
    }
}

pub fn msg_key(id: &str) -> String {
    format!("gw:msg:{id}")
}
pub fn trail_key(id: &str) -> String {
    format!("gw:trail:{id}")
}
pub const QUEUE: &str = "gw:queue";
pub const PODS: &str = "gw:pods";
/// Receipts held because their vendor id matched nothing yet: `{vendor}\t{receipt}` -> when.
pub const EARLY_INDEX: &str = "gw:early:index";
pub fn inflight_key(pod: &str) -> String {
    format!("gw:inflight:{pod}")
}
pub fn vid_key(vendor: &str, vid: &str) -> String {
    format!("gw:vid:{vendor}:{vid}")
}
pub fn early_key(vendor: &str, vid: &str) -> String {
    format!("gw:early:{vendor}:{vid}")
}
pub fn dlrq_key(customer: &str) -> String {
    format!("gw:dlrq:{customer}")
}
pub fn dlr_inflight_key(pod: &str, customer: &str) -> String {
    format!("gw:dlrinflight:{pod}:{customer}")
}

/// What the submit script decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Queued,
    /// Over the customer's rate; retry after this many seconds.
    Throttled,
    /// Over the sender's campaign cap (hourly or daily).
    CampaignCap(&'static str),
}

/// A message as accepted from a customer.
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub source: &'a str,
    pub destination: &'a str,
    pub registered_delivery: u8,
    /// The submit_sm body as the customer sent it (what goes to the vendor).
    pub body: &'a [u8],
    pub parts: u8,
}

pub struct Limits<'a> {
    pub burst: u32,
    pub tps: u32,
    /// `(hourly, daily)` when the source address has a campaign.
    pub campaign: Option<(u64, u64)>,
    pub source: &'a str,
}

static SUBMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- Rate limit, campaign caps, then the durable enqueue: one atomic step per submit_sm.
-- KEYS: tps, camp hourly, camp daily, msg, trail, queue
-- ARGV: burst, tps, hourly ('' = no campaign), daily, ttl ms, now ms, id, field, value, ...
if redis.call('EXISTS', KEYS[4]) == 1 then return {0, 'dup'} end
if tonumber(ARGV[2]) > 0 then
  local t = redis.call('CL.THROTTLE', KEYS[1], ARGV[1], ARGV[2], 1, 1)
  if t[1] == 1 then return {1, 'tps'} end
end
if ARGV[3] ~= '' then
  local h = redis.call('RATELIMIT', KEYS[2], ARGV[3], 3600000, 'COST', 0)
  if h[2] < 1 then return {2, 'hourly'} end
  local d = redis.call('RATELIMIT', KEYS[3], ARGV[4], 86400000, 'COST', 0)
  if d[2] < 1 then return {2, 'daily'} end
  redis.call('RATELIMIT', KEYS[2], ARGV[3], 3600000)
  redis.call('RATELIMIT', KEYS[3], ARGV[4], 86400000)
end
redis.call('HSET', KEYS[4], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call('RPUSH', KEYS[5], ARGV[6] .. ' accepted', ARGV[6] .. ' queued')
redis.call('PEXPIRE', KEYS[5], ARGV[5])
redis.call('RPUSH', KEYS[6], ARGV[7])
return {0, 'ok'}
"#,
    )
});

/// Lease up to N ids: off the queue, onto this pod's in-flight list, in one step.
///
/// The result is remembered under a one-off token for a minute: a call retried because its
/// reply was lost (a node died after committing it) gets the same ids back instead of a
/// second batch, which would sit leased by a live pod that never saw it.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: queue, in-flight list, memo. ARGV: n
local memo = redis.call('GET', KEYS[3])
if memo then return cjson.decode(memo) end
local ids = redis.call('LPOP', KEYS[1], ARGV[1])
if not ids then return {} end
redis.call('RPUSH', KEYS[2], unpack(ids))
redis.call('SET', KEYS[3], cjson.encode(ids), 'PX', 60000)
return ids
"#,
    )
});

/// [`TAKE`] for messages, returning each message's fields with its id (one round trip
/// instead of a lease and a read per message). The message keys are computed in the script
/// from the ids, which only a standalone (non-Redis-Cluster) server allows, as redoubt is.
static TAKE_MESSAGES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: queue, in-flight list, memo. ARGV: n
local ids
local memo = redis.call('GET', KEYS[3])
if memo then
  ids = cjson.decode(memo)
else
  ids = redis.call('LPOP', KEYS[1], ARGV[1])
  if not ids then return {} end
  redis.call('RPUSH', KEYS[2], unpack(ids))
  redis.call('SET', KEYS[3], cjson.encode(ids), 'PX', 60000)
end
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HMGET', 'gw:msg:' .. id, 'customer', 'src', 'dst', 'rd', 'pdu', 'at')
end
return out
"#,
    )
});

/// A key naming one logical call, for scripts whose retry must not repeat their effect.
pub fn memo_key(ids: &IdGen) -> String {
    format!("gw:memo:{}", ids.next())
}

static BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[1]) return 1 end
return 0
"#,
    )
});

/// A dead pod's leases go back to the head of their queue, oldest first.
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
"#,
    )
});

/// The vendor took the message: remember its id (under each alias) for receipts, end the
/// lease, and hand back any receipt that beat the submit_sm_resp here.
static SUBMITTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: msg, trail, inflight, memo, early (exact id), early index, then the vid key per alias
-- ARGV: id, vendor, vid, now, ttl ms, routing
local memo = redis.call('GET', KEYS[4])
if memo then return cjson.decode(memo) end
redis.call('LREM', KEYS[3], 1, ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'state', 'submitted', 'vendor', ARGV[2], 'vid', ARGV[3], 'submitted_at', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[4] .. ' submitted ' .. ARGV[2] .. ' ' .. ARGV[3])
for i = 7, #KEYS do
  redis.call('SET', KEYS[i], ARGV[6], 'PX', ARGV[5])
end
local early = redis.call('LRANGE', KEYS[5], 0, -1)
if #early > 0 then
  redis.call('DEL', KEYS[5])
  for _, r in ipairs(early) do redis.call('ZREM', KEYS[6], ARGV[2] .. '\t' .. r) end
end
if #early > 0 then redis.call('SET', KEYS[4], cjson.encode(early), 'PX', 60000) end
return early
"#,
    )
});

static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: vid key, early key, early index. ARGV: receipt, ttl ms, now, index member
local r = redis.call('GET', KEYS[1])
if r then return r end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return false
"#,
    )
});

/// A final state for a message (a vendor receipt, or the gateway's own failure): recorded
/// once per state, and queued for the customer when they asked for receipts.
static RECEIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: msg, trail, done marker, customer receipt queue, inflight (failures only)
-- ARGV: id, now, state, ttl ms, receipt for the customer ('' = none), detail
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) == false then
  redis.call('LREM', KEYS[5], 1, ARGV[1])
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'state', ARGV[3], 'done_at', ARGV[2])
  redis.call('RPUSH', KEYS[2], ARGV[2] .. ' ' .. ARGV[6])
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
redis.call('LREM', KEYS[5], 1, ARGV[1])
return 1
"#,
    )
});

/// A receipt was delivered to the customer: end its lease and note it on the message.
static DELIVERED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: dlr inflight, msg, trail. ARGV: receipt, now, detail
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n == 1 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RPUSH', KEYS[3], ARGV[2] .. ' ' .. ARGV[3])
  redis.call('HSET', KEYS[2], 'delivered_at', ARGV[2])
end
return n
"#,
    )
});

impl Store {
    pub async fn submit(&self, m: &NewMessage<'_>, l: &Limits<'_>, ttl_ms: u64) -> Result<Admission> {
        let id = m.id;
        let keys = [
            format!("gw:tps:{}", m.customer),
            format!("gw:camp:{}:h", l.source),
            format!("gw:camp:{}:d", l.source),
            msg_key(id),
            trail_key(id),
            QUEUE.to_string(),
        ];
        let (hourly, daily) = match l.campaign {
            Some((h, d)) => (h.to_string(), d.to_string()),
            None => (String::new(), String::new()),
        };
        let now = now_ms().to_string();
        let rd = m.registered_delivery.to_string();
        let parts = m.parts.to_string();
        let (burst, tps, ttl) = (l.burst.to_string(), l.tps.to_string(), ttl_ms.to_string());
        let args: Vec<&[u8]> = vec![
            burst.as_bytes(),
            tps.as_bytes(),
            hourly.as_bytes(),
            daily.as_bytes(),
            ttl.as_bytes(),
            now.as_bytes(),
            id.as_bytes(),
            b"customer",
            m.customer.as_bytes(),
            b"src",
            m.source.as_bytes(),
            b"dst",
            m.destination.as_bytes(),
            b"rd",
            rd.as_bytes(),
            b"parts",
            parts.as_bytes(),
            b"at",
            now.as_bytes(),
            b"state",
            b"queued",
            b"pdu",
            m.body,
        ];
        let v = self.script(&SUBMIT, &keys, &args).await?;
        Ok(match (int_at(&v, 0), bytes_at(&v, 1)) {
            (Some(1), _) => Admission::Throttled,
            (Some(2), Some(b"hourly")) => Admission::CampaignCap("hourly"),
            (Some(2), _) => Admission::CampaignCap("daily"),
            _ => Admission::Queued,
        })
    }

    /// Leases up to `n` queued messages for `pod`, with what sending them needs: `None` for a
    /// message that expired while queued.
    pub async fn take_messages(&self, pod: &str, n: usize, memo: &str) -> Result<Vec<(String, Option<Queued>)>> {
        let v = self.script(&TAKE_MESSAGES, &[QUEUE, &inflight_key(pod), memo], &[n.to_string()]).await?;
        let Value::Array(items) = v else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(id), Some(fields)) = (it.next(), it.next()) {
            let Some(id) = id.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()) else { continue };
            let m = match fields {
                Value::Array(f) => queued_from(&id, &f),
                _ => None,
            };
            out.push((id, m));
        }
        Ok(out)
    }

    /// Puts every lease of `pod` back on the queue (the pod died, or is starting again).
    pub async fn reclaim(&self, pod: &str) -> Result<i64> {
        let v = self.script(&RECLAIM, &[inflight_key(pod), QUEUE.to_string()], &[] as &[&str]).await?;
        Ok(v.as_int().unwrap_or(0))
    }

    /// Puts every receipt `pod` was delivering back on the customers' receipt queues.
    pub async fn reclaim_receipts(&self, pod: &str) -> Result<i64> {
        let prefix = format!("gw:dlrinflight:{pod}:");
        let mut n = 0;
        for key in self.scan(&format!("{prefix}*")).await? {
            let customer = &key[prefix.len()..];
            let v = self.script(&RECLAIM, &[key.clone(), dlrq_key(customer)], &[] as &[&str]).await?;
            n += v.as_int().unwrap_or(0);
        }
        Ok(n)
    }

    pub async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let mut cursor = "0".to_string();
        let mut out = Vec::new();
        loop {
            let v = self.call(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]).await?;
            let Value::Array(a) = v else { break };
            cursor = a
                .first()
                .and_then(|c| c.as_bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            if let Some(keys) = a.into_iter().nth(1) {
                out.extend(strings(keys));
            }
            if cursor == "0" || cursor.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// Records the vendor's acceptance; returns receipts that arrived first.
    pub async fn submitted(&self, pod: &str, m: &Queued, vendor: &str, vid: &str, ttl_ms: u64) -> Result<Vec<String>> {
        // The memo is per vendor id: a retry of this call gets the same early receipts back.
        let memo = format!("gw:memo:sub:{vendor}:{vid}");
        let mut keys = vec![
            msg_key(&m.id),
            trail_key(&m.id),
            inflight_key(pod),
            memo,
            early_key(vendor, &exact(vid)),
            EARLY_INDEX.to_string(),
        ];
        keys.extend(stored_aliases(vid).iter().map(|a| vid_key(vendor, a)));
        let routing = Routing::of(m).encode();
        let args =
            [m.id.clone(), vendor.to_string(), vid.to_string(), now_ms().to_string(), ttl_ms.to_string(), routing];
        Ok(strings(self.script(&SUBMITTED, &keys, &args).await?))
    }

    /// Finds the message a vendor id belongs to, exactly.
    pub async fn lookup_vid(&self, vendor: &str, vid: &str) -> Result<Option<Routing>> {
        self.lookup_keys(vendor, &[exact(vid)]).await
    }

    /// Finds it by the id's numeric forms (after the exact form had its chance).
    pub async fn lookup_vid_numeric(&self, vendor: &str, vid: &str) -> Result<Option<Routing>> {
        self.lookup_keys(vendor, &receipt_aliases(vid)).await
    }

    async fn lookup_keys(&self, vendor: &str, keys: &[String]) -> Result<Option<Routing>> {
        for alias in keys {
            let v = self.call(&["GET", &vid_key(vendor, &alias)]).await?;
            if let Some(r) = v.as_bytes().and_then(|b| Routing::decode(&String::from_utf8_lossy(b))) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Records a final state once; queues `for_customer` (when not empty) for delivery.
    pub async fn receipt(
        &self,
        pod: &str,
        id: &str,
        customer: &str,
        state: &str,
        detail: &str,
        for_customer: &str,
        ttl_ms: u64,
    ) -> Result<bool> {
        let keys =
            [msg_key(id), trail_key(id), format!("gw:dlrdone:{id}:{state}"), dlrq_key(customer), inflight_key(pod)];
        let args = [id, &now_ms().to_string(), state, &ttl_ms.to_string(), for_customer, detail];
        Ok(self.script(&RECEIPT, &keys, &args).await?.as_int() == Some(1))
    }

    /// Holds a receipt whose vendor id is not known yet (under its exact form, and in the
    /// early index that [`Store::early_due`] reads), unless the id became known meanwhile:
    /// then its routing comes back instead. One script, so a submit_sm_resp recorded between
    /// the lookup and the hold cannot strand the receipt.
    pub async fn hold_early(&self, vendor: &str, vid: &str, raw: &str, ttl_ms: u64) -> Result<Option<Routing>> {
        let e = exact(vid);
        let keys = [vid_key(vendor, &e), early_key(vendor, &e), EARLY_INDEX.to_string()];
        let member = format!("{vendor}\t{raw}");
        let v = self.script(&HOLD, &keys, &[raw, &ttl_ms.to_string(), &now_ms().to_string(), &member]).await?;
        Ok(v.as_bytes().and_then(|b| Routing::decode(&String::from_utf8_lossy(b))))
    }

    /// Held receipts older than `age_ms`: `(vendor, receipt)`, at most `n`.
    pub async fn early_due(&self, age_ms: i64, n: usize) -> Result<Vec<(String, String)>> {
        let before = (now_ms() - age_ms).to_string();
        let v = self.call(&["ZRANGEBYSCORE", EARLY_INDEX, "-inf", &before, "LIMIT", "0", &n.to_string()]).await?;
        Ok(strings(v)
            .into_iter()
            .filter_map(|m| m.split_once('\t').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect())
    }

    /// Forgets a held receipt (matched, or expired).
    pub async fn early_done(&self, vendor: &str, vid: &str, raw: &str) -> Result<()> {
        self.call(&["ZREM", EARLY_INDEX, &format!("{vendor}\t{raw}")]).await?;
        self.call(&["LREM", &early_key(vendor, &exact(vid)), "0", raw]).await?;
        Ok(())
    }

    /// Leases up to `n` receipts waiting for `customer`.
    pub async fn take_receipts(&self, pod: &str, customer: &str, n: usize, memo: &str) -> Result<Vec<String>> {
        let v = self
            .script(&TAKE, &[dlrq_key(customer), dlr_inflight_key(pod, customer), memo.to_string()], &[n.to_string()])
            .await?;
        Ok(strings(v))
    }

    pub async fn receipt_delivered(
        &self,
        pod: &str,
        customer: &str,
        receipt: &str,
        id: &str,
        detail: &str,
    ) -> Result<()> {
        let keys = [dlr_inflight_key(pod, customer), msg_key(id), trail_key(id)];
        self.script(&DELIVERED, &keys, &[receipt, &now_ms().to_string(), detail]).await?;
        Ok(())
    }

    /// Puts one leased receipt back at the head of its queue (no session could take it).
    /// One script: a retry finds the lease gone and does nothing, so the receipt is never
    /// queued twice.
    pub async fn receipt_back(&self, pod: &str, customer: &str, receipt: &str) -> Result<()> {
        self.script(&BACK, &[dlr_inflight_key(pod, customer), dlrq_key(customer)], &[receipt]).await?;
        Ok(())
    }

    /// Queues something for the customer's receivers (a mobile-originated message).
    pub async fn queue_for_customer(&self, customer: &str, entry: &str, ttl_ms: u64) -> Result<()> {
        let key = dlrq_key(customer);
        self.call(&["RPUSH", &key, entry]).await?;
        self.call(&["PEXPIRE", &key, &ttl_ms.to_string()]).await?;
        Ok(())
    }

    /// Puts a leased message back at the head of the queue (a no-op if the lease is gone).
    pub async fn message_back(&self, pod: &str, id: &str) -> Result<()> {
        self.script(&BACK, &[inflight_key(pod), QUEUE.to_string()], &[id]).await?;
        Ok(())
    }

    pub async fn trail(&self, id: &str, event: &str) -> Result<()> {
        let key = trail_key(id);
        self.call(&["RPUSH", &key, &format!("{} {event}", now_ms())]).await?;
        Ok(())
    }
}

/// A message from its fields `customer src dst rd pdu at`; `None` if it is gone.
fn queued_from(id: &str, f: &[Value]) -> Option<Queued> {
    let text = |i: usize| f.get(i).and_then(|v| v.as_bytes()).map(|b| String::from_utf8_lossy(b).into_owned());
    let (Some(customer), Some(body)) = (text(0), f.get(4).and_then(|v| v.as_bytes())) else { return None };
    Some(Queued {
        id: id.to_string(),
        customer,
        source: text(1).unwrap_or_default(),
        destination: text(2).unwrap_or_default(),
        registered_delivery: text(3).and_then(|s| s.parse().ok()).unwrap_or(0),
        body: body.to_vec(),
        accepted_at: text(5).and_then(|s| s.parse().ok()).unwrap_or(0),
    })
}

/// A leased message, ready to go to a vendor.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: String,
    pub customer: String,
    pub source: String,
    pub destination: String,
    pub registered_delivery: u8,
    pub body: Vec<u8>,
    pub accepted_at: i64,
}

/// What a receipt needs to find its way back: stored under the vendor's message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub id: String,
    pub customer: String,
    pub registered_delivery: u8,
    pub source: String,
    pub destination: String,
    pub accepted_at: i64,
}

impl Routing {
    pub fn of(m: &Queued) -> Routing {
        Routing {
            id: m.id.clone(),
            customer: m.customer.clone(),
            registered_delivery: m.registered_delivery,
            source: m.source.clone(),
            destination: m.destination.clone(),
            accepted_at: m.accepted_at,
        }
    }

    /// Tab-separated: none of the fields can hold a tab (ids are hex, addresses are checked).
    pub fn encode(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            self.id, self.customer, self.registered_delivery, self.source, self.destination, self.accepted_at
        )
    }

    pub fn decode(s: &str) -> Option<Routing> {
        let mut f = s.split('\t');
        Some(Routing {
            id: f.next()?.to_string(),
            customer: f.next()?.to_string(),
            registered_delivery: f.next()?.parse().ok()?,
            source: f.next()?.to_string(),
            destination: f.next()?.to_string(),
            accepted_at: f.next()?.parse().ok()?,
        })
    }
}

pub fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(a) | Value::Set(a) => {
            a.into_iter().filter_map(|x| x.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned())).collect()
        }
        _ => Vec::new(),
    }
}
