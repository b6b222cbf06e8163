//! Customer sessions: the ones bound to this pod (in memory, to reach them) and every pod's
//! (in the store, to count binds against `max_binds` and to show operators who is bound
//! where).
//!
//! A bind takes a slot in `gw:binds:{customer}` (a sorted set scored by a deadline) in one
//! script that first drops slots whose deadline passed, so the binds of a pod that died are
//! freed within [`BIND_LEASE`] without anyone cleaning up after it. Each live session renews
//! its slot and its `gw:session:{pod}:{id}` record every [`HEARTBEAT`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redoubt_client::Script;
use serde::Serialize;

use crate::smpp::link::Link;
use crate::store::{now_ms, Result, Store};

pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const BIND_LEASE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindKind {
    pub fn can_send(self) -> bool {
        self != BindKind::Receiver
    }
    pub fn can_receive(self) -> bool {
        self != BindKind::Transmitter
    }
}

/// A customer session bound to this pod.
pub struct Session {
    pub id: u64,
    pub customer: String,
    pub kind: BindKind,
    pub peer: String,
    pub since_ms: i64,
    pub link: Arc<Link>,
}

#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    by_customer: Mutex<HashMap<String, Vec<Arc<Session>>>>,
    /// Round-robin position per customer, so receipts spread over its receiver sessions.
    turn: AtomicU64,
    /// Customers whose receipt delivery loop runs on this pod.
    delivering: Mutex<std::collections::HashSet<String>>,
}

impl Sessions {
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a session; true when it can receive (the caller then makes sure the customer's
    /// receipt delivery runs here).
    pub fn add(&self, s: Arc<Session>) -> bool {
        let mut m = self.by_customer.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = s.kind.can_receive();
        m.entry(s.customer.clone()).or_default().push(s);
        receiver
    }

    pub fn remove(&self, customer: &str, id: u64) {
        let mut m = self.by_customer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = m.get_mut(customer) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                m.remove(customer);
            }
        }
    }

    /// A receiver session of `customer` on this pod, taking turns.
    pub fn receiver(&self, customer: &str) -> Option<Arc<Session>> {
        let m = self.by_customer.lock().unwrap_or_else(|e| e.into_inner());
        let rx: Vec<&Arc<Session>> =
            m.get(customer)?.iter().filter(|s| s.kind.can_receive() && !s.link.is_closed()).collect();
        if rx.is_empty() {
            return None;
        }
        let i = self.turn.fetch_add(1, Ordering::Relaxed) as usize % rx.len();
        Some(rx[i].clone())
    }

    /// Marks the customer's delivery loop as running; false if it already was.
    pub fn claim_delivery(&self, customer: &str) -> bool {
        self.delivering.lock().unwrap_or_else(|e| e.into_inner()).insert(customer.to_string())
    }

    /// Ends the customer's delivery loop if no receiver is bound here, deciding under the
    /// session lock, so a receiver binding at this moment either sees the loop running or
    /// starts a new one.
    pub fn release_delivery_if_idle(&self, customer: &str) -> bool {
        let m = self.by_customer.lock().unwrap_or_else(|e| e.into_inner());
        let idle = !m.get(customer).is_some_and(|l| l.iter().any(|s| s.kind.can_receive()));
        if idle {
            self.delivering.lock().unwrap_or_else(|e| e.into_inner()).remove(customer);
        }
        idle
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        let m = self.by_customer.lock().unwrap_or_else(|e| e.into_inner());
        m.values().flatten().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.by_customer.lock().unwrap_or_else(|e| e.into_inner()).values().map(Vec::len).sum()
    }
}

pub fn binds_key(customer: &str) -> String {
    format!("gw:binds:{customer}")
}

pub fn session_key(pod: &str, id: u64) -> String {
    format!("gw:session:{pod}:{id}")
}

static BIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS: binds zset. ARGV: now, deadline, member, max binds
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 1
"#,
    )
});

impl Store {
    /// Takes a bind slot for `member` (`{pod}/{session}`); false when `max` are taken.
    pub async fn take_bind(&self, customer: &str, member: &str, max: u32) -> Result<bool> {
        let now = now_ms();
        let deadline = now + BIND_LEASE.as_millis() as i64;
        let v = self
            .script(
                &BIND,
                &[binds_key(customer)],
                &[now.to_string(), deadline.to_string(), member.into(), max.to_string()],
            )
            .await?;
        Ok(v.as_int() == Some(1))
    }

    /// Renews a session's bind slot and its visible record.
    pub async fn renew_session(&self, pod: &str, s: &Session) -> Result<()> {
        let deadline = now_ms() + BIND_LEASE.as_millis() as i64;
        let member = format!("{pod}/{}", s.id);
        self.call(&["ZADD", &binds_key(&s.customer), &deadline.to_string(), &member]).await?;
        let key = session_key(pod, s.id);
        let kind = match s.kind {
            BindKind::Transmitter => "transmitter",
            BindKind::Receiver => "receiver",
            BindKind::Transceiver => "transceiver",
        };
        self.call(&[
            "HSET",
            &key,
            "customer",
            &s.customer,
            "bind",
            kind,
            "pod",
            pod,
            "peer",
            &s.peer,
            "since",
            &s.since_ms.to_string(),
        ])
        .await?;
        self.call(&["PEXPIRE", &key, &BIND_LEASE.as_millis().to_string()]).await?;
        Ok(())
    }

    pub async fn end_session(&self, pod: &str, customer: &str, id: u64) -> Result<()> {
        self.call(&["ZREM", &binds_key(customer), &format!("{pod}/{id}")]).await?;
        self.call(&["DEL", &session_key(pod, id)]).await?;
        Ok(())
    }
}
