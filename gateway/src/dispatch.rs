//! From the queue to a vendor, and receipts back into the store.
//!
//! The dispatcher leases queued ids in batches as the vendors' windows free up (a lease is
//! the id on `gw:inflight:{pod}`), sends each along its route's vendors in failover order,
//! and ends the lease when a vendor accepts or when the gateway gives up and makes a failure
//! receipt. A pod that dies leaves its leases; every pod heartbeats into `gw:pods`, and any
//! pod that sees a heartbeat lapse puts the dead pod's leases back on the queue. That makes
//! delivery at-least-once: only messages in flight at a crash can reach a vendor twice, at
//! most a window's worth per vendor.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rusmpp::pdus::DeliverSm;
use rusmpp::CommandStatus;
use tokio::sync::Semaphore;

use crate::messages::{strings, Queued, Routing, PODS};
use crate::receipts::{wanted, CustomerReceipt, MobileOriginated, VendorReceipt};
use crate::store::{now_ms, Result};
use crate::vendor::Sent;
use crate::Gateway;

/// Messages one pod holds leased at most.
const MAX_LEASED: usize = 4096;
/// How long a pod's heartbeat vouches for it.
pub const POD_LEASE: Duration = Duration::from_secs(10);

pub async fn run(gw: Arc<Gateway>) {
    // Leases this pod held before a restart go back first.
    match gw.store.reclaim(&gw.pod).await {
        Ok(n) if n > 0 => tracing::info!(n, "requeued messages leased before a restart"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not requeue old leases"),
    }
    let _ = gw.store.reclaim_receipts(&gw.pod).await;
    let leased = Arc::new(Semaphore::new(MAX_LEASED));
    loop {
        if !gw.lease_fresh() {
            // Taking work now would only hand it back (see `send`).
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let room = gw.vendors.free_window().min(leased.available_permits()).min(256);
        if room == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let memo = crate::messages::memo_key(&gw.ids);
        let taken = match gw.store.take_messages(&gw.pod, room, &memo).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "queue unavailable");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if taken.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for (id, m) in taken {
            let Ok(permit) = leased.clone().acquire_owned().await else { return };
            let gw = gw.clone();
            tokio::spawn(async move {
                send(&gw, &id, m).await;
                drop(permit);
            });
        }
        // Let the connectors take up what was just leased before measuring room again.
        tokio::task::yield_now().await;
    }
}

/// Sends one leased message; returns when it is with a vendor, finally failed, or handed
/// back because this pod's lease went stale.
async fn send(gw: &Gateway, id: &str, m: Option<Queued>) {
    if !gw.lease_fresh() {
        let _ = gw.store.message_back(&gw.pod, id).await;
        return;
    }
    let Some(m) = m else {
        // Expired (past the message TTL) or never written: nothing to send.
        let _ = gw.store.call(&["LREM", &crate::messages::inflight_key(&gw.pod), "1", id]).await;
        return;
    };
    let give_up_at = m.accepted_at + gw.settings.undeliverable_after_ms as i64;
    let mut refused: HashSet<String> = HashSet::new();
    let mut busy_pause = Duration::from_millis(50);
    loop {
        let config = gw.config.get();
        let Some(route) = config.route(&m.destination) else {
            fail(gw, &m, "UNDELIV", "no route").await;
            return;
        };
        let usable: Vec<&String> = route
            .vendors
            .iter()
            .filter(|v| !refused.contains(*v) && config.vendors.get(*v).is_some_and(|c| c.enabled))
            .collect();
        if usable.is_empty() {
            fail(gw, &m, "UNDELIV", "no vendor accepted the message").await;
            return;
        }
        let Some(c) = usable.iter().find_map(|v| gw.vendors.get(v).filter(|c| c.is_bound())) else {
            if now_ms() > give_up_at {
                fail(gw, &m, "EXPIRED", "no vendor bound before the deadline").await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if !gw.lease_fresh() {
            // Another pod may have this message now: hand it back rather than send it twice.
            let _ = gw.store.message_back(&gw.pod, &m.id).await;
            return;
        }
        let started = std::time::Instant::now();
        match c.submit(&m.body).await {
            Sent::Accepted(vid) => {
                gw.metrics.vendor_submits.fetch_add(1, Relaxed);
                gw.metrics.vendor_latency.observe(started.elapsed().as_secs_f64());
                let early = loop {
                    match gw.store.submitted(&gw.pod, &m, &c.id, &vid, gw.settings.message_ttl_ms).await {
                        Ok(e) => break e,
                        Err(e) => {
                            // The vendor has it; keep trying to record that, or its receipt
                            // will wait in the early list until this succeeds.
                            tracing::warn!(id = %m.id, error = %e, "cannot record a vendor id yet");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                };
                for raw in early {
                    if let Some(r) = VendorReceipt::decode(&raw) {
                        let _ = record_receipt(gw, &c.id, &Routing::of(&m), &r).await;
                    }
                }
                return;
            }
            Sent::Busy(status) => {
                if status == CommandStatus::EsmeRthrottled {
                    gw.metrics.vendor_throttled.fetch_add(1, Relaxed);
                }
                tokio::time::sleep(busy_pause).await;
                busy_pause = (busy_pause * 2).min(Duration::from_secs(2));
            }
            Sent::Refused(status) => {
                gw.metrics.vendor_errors.fetch_add(1, Relaxed);
                let _ = gw.store.trail(&m.id, &format!("refused {} 0x{:08x}", c.id, u32::from(status))).await;
                refused.insert(c.id.clone());
            }
            Sent::Lost => {
                // The link went down mid-request; resend on whatever binds next. (The vendor
                // may have taken it: this is where duplicates come from.)
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The gateway's own final state for a message no vendor took.
async fn fail(gw: &Gateway, m: &Queued, state: &str, why: &str) {
    gw.metrics.failure_receipts.fetch_add(1, Relaxed);
    let r = VendorReceipt { vid: String::new(), state: state.into(), err: "000".into() };
    let detail = format!("failed {state} {why}");
    loop {
        match record(gw, &Routing::of(m), &r, &detail).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(id = %m.id, error = %e, "cannot record a failure yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A receipt from a vendor: find its message, or hold it until the submit_sm_resp is in.
pub async fn vendor_receipt(gw: &Gateway, vendor: &str, r: &VendorReceipt) -> Result<()> {
    let routing = match gw.store.lookup_vid(vendor, &r.vid).await? {
        Some(x) => x,
        None => match gw.store.hold_early(vendor, &r.vid, &r.encode(), gw.settings.message_ttl_ms).await? {
            Some(x) => x,
            None => {
                gw.metrics.receipts_early.fetch_add(1, Relaxed);
                return Ok(());
            }
        },
    };
    record_receipt(gw, vendor, &routing, r).await
}

/// How long a receipt waits for its exact vendor id before the numeric forms are tried.
const EXACT_GRACE_MS: i64 = 3_000;

/// Re-examines held receipts: ones whose submit_sm_resp never came under the same spelling
/// are matched by the id's numeric forms once [`EXACT_GRACE_MS`] has passed; ones older than
/// the message TTL are dropped. Any pod may do this (a receipt recorded twice is recorded
/// once: the done marker).
pub async fn early_receipts(gw: Arc<Gateway>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(due) = gw.store.early_due(EXACT_GRACE_MS, 200).await else { continue };
        for (vendor, raw) in due {
            let Some(r) = VendorReceipt::decode(&raw) else {
                let _ = gw.store.early_done(&vendor, "", &raw).await;
                continue;
            };
            let found = match gw.store.lookup_vid(&vendor, &r.vid).await {
                Ok(Some(x)) => Some(x),
                Ok(None) => gw.store.lookup_vid_numeric(&vendor, &r.vid).await.ok().flatten(),
                Err(_) => continue,
            };
            match found {
                Some(routing) => {
                    if record_receipt(&gw, &vendor, &routing, &r).await.is_ok() {
                        let _ = gw.store.early_done(&vendor, &r.vid, &raw).await;
                    }
                }
                None => {
                    // Still nothing: keep it until the TTL (the index score is its arrival).
                    let age_ok =
                        gw.store.call(&["ZSCORE", crate::messages::EARLY_INDEX, &format!("{vendor}\t{raw}")]).await;
                    let at = age_ok
                        .ok()
                        .and_then(|v| v.as_bytes().and_then(|b| std::str::from_utf8(b).ok()?.parse::<f64>().ok()));
                    if at.is_some_and(|at| (now_ms() as f64 - at) > gw.settings.message_ttl_ms as f64) {
                        let _ = gw.store.early_done(&vendor, &r.vid, &raw).await;
                    }
                }
            }
        }
    }
}

async fn record_receipt(gw: &Gateway, vendor: &str, routing: &Routing, r: &VendorReceipt) -> Result<()> {
    let detail = format!("receipt {} from {vendor} err:{}", r.state, r.err);
    if !record(gw, routing, r, &detail).await? {
        gw.metrics.receipts_duplicate.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// Records a state once and queues the customer's receipt if they asked for one.
async fn record(gw: &Gateway, routing: &Routing, r: &VendorReceipt, detail: &str) -> Result<bool> {
    let for_customer = if wanted(routing.registered_delivery, &r.state) {
        CustomerReceipt {
            id: routing.id.clone(),
            state: r.state.clone(),
            err: r.err.clone(),
            source: routing.source.clone(),
            destination: routing.destination.clone(),
            submitted_ms: routing.accepted_at,
            done_ms: now_ms(),
        }
        .encode()
    } else {
        String::new()
    };
    gw.store
        .receipt(&gw.pod, &routing.id, &routing.customer, &r.state, detail, &for_customer, gw.settings.message_ttl_ms)
        .await
}

/// A mobile-originated message from a vendor: queued for the customer owning its
/// destination (the customers' `numbers`), delivered like a receipt to its receiver on any
/// pod; with no owner it is kept, bounded, in `gw:mo:unrouted` for an operator to see.
/// Acknowledged to the vendor only once stored.
pub async fn mobile_originated(gw: &Gateway, vendor: &str, sm: &DeliverSm) -> CommandStatus {
    let destination = sm.destination_addr.as_str();
    let stored = match gw.config.get().owner(destination) {
        Some(customer) => {
            let mo = MobileOriginated {
                source: sm.source_addr.as_str().to_string(),
                destination: destination.to_string(),
                data_coding: u8::from(sm.data_coding),
                message: sm.short_message().as_ref().to_vec(),
            };
            gw.store.queue_for_customer(customer, &mo.encode(), gw.settings.message_ttl_ms).await.is_ok()
        }
        None => {
            let line = format!(
                "{} {vendor} {} {destination} {}",
                now_ms(),
                sm.source_addr.as_str(),
                String::from_utf8_lossy(sm.short_message().as_ref())
            );
            gw.store.call(&["LPUSH", "gw:mo:unrouted", &line]).await.is_ok()
                && gw.store.call(&["LTRIM", "gw:mo:unrouted", "0", "9999"]).await.is_ok()
        }
    };
    if stored {
        CommandStatus::EsmeRok
    } else {
        CommandStatus::EsmeRsyserr
    }
}

/// Heartbeats this pod and puts the leases of pods whose heartbeat lapsed back in play.
///
/// A lapse only counts once this pod's own heartbeats have gone through on time for a whole
/// lease: when the store stalls (a leader election), every pod's heartbeat stalls with it,
/// and the first pod to get through must not take the others' leases while they are still
/// working on them (that would send their messages and receipts twice).
pub async fn pods(gw: Arc<Gateway>) {
    let mut healthy_since = std::time::Instant::now();
    loop {
        let now = now_ms();
        let deadline = now + POD_LEASE.as_millis() as i64;
        let started = std::time::Instant::now();
        match gw.heartbeat_store.call(&["ZADD", PODS, &deadline.to_string(), &gw.pod]).await {
            Ok(_) if started.elapsed() < Duration::from_millis(500) => {
                gw.lease_ok_ms.store(now, Relaxed);
            }
            Ok(_) => healthy_since = std::time::Instant::now(),
            Err(e) => {
                tracing::warn!(error = %e, "pod heartbeat failed");
                healthy_since = std::time::Instant::now();
            }
        }
        // This pod's vendor bind states, for the API's view across pods.
        let states = gw.vendors.all();
        if !states.is_empty() {
            let key = format!("gw:vendorstate:{}", gw.pod);
            let mut args = vec!["HSET".to_string(), key.clone()];
            for c in &states {
                args.push(c.id.clone());
                args.push(c.state().to_string());
            }
            let _ = gw.store.call(&["DEL", &key]).await;
            let _ = gw.store.call(&args).await;
            let _ = gw.store.call(&["PEXPIRE", &key, &POD_LEASE.as_millis().to_string()]).await;
        }
        let settled = healthy_since.elapsed() > POD_LEASE + Duration::from_secs(1);
        if let Ok(dead) = gw.heartbeat_store.call(&["ZRANGEBYSCORE", PODS, "-inf", &now_ms().to_string()]).await {
            for pod in strings(dead) {
                if pod == gw.pod || !settled {
                    continue;
                }
                let n = gw.store.reclaim(&pod).await.unwrap_or(0);
                let d = gw.store.reclaim_receipts(&pod).await.unwrap_or(0);
                tracing::warn!(%pod, messages = n, receipts = d, "pod heartbeat lapsed; its leases are back in the queue");
                let _ = gw.store.call(&["ZREM", PODS, &pod]).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
