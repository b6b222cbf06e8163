//! Receipts to customers, from whichever pod the customer is bound to.
//!
//! A receipt is queued in `gw:dlrq:{customer}` by the pod that got it from the vendor. Every
//! pod where that customer has a receiver or transceiver session runs one delivery loop for
//! it: lease a batch (onto `gw:dlrinflight:{pod}:{customer}`), send each as a deliver_sm,
//! and end the lease when the customer's deliver_sm_resp arrives. A receipt the customer
//! refuses, or that meets a closed session, goes back to the head of the queue; one leased
//! by a pod that dies is put back by the reaper (see `crate::dispatch`). Receipts wait in
//! the queue while the customer has no receiver bound anywhere (the queue has the message
//! TTL), so a receiver that binds later gets them.

use std::sync::Arc;
use std::time::Duration;

use rusmpp::CommandStatus;
use tokio::task::JoinSet;

use crate::receipts::{CustomerReceipt, MobileOriginated};
use crate::Gateway;

const BATCH: usize = 64;
const IDLE_POLL: Duration = Duration::from_millis(20);
const DELIVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the customer's delivery loop on this pod unless one runs.
pub fn start(gw: Arc<Gateway>, customer: String) {
    if !gw.sessions.claim_delivery(&customer) {
        return;
    }
    tokio::spawn(async move {
        tracing::debug!(%customer, "receipt delivery started");
        loop {
            if gw.sessions.release_delivery_if_idle(&customer) {
                break;
            }
            if !gw.lease_fresh() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let batch =
                match gw.store.take_receipts(&gw.pod, &customer, BATCH, &crate::messages::memo_key(&gw.ids)).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(%customer, error = %e, "receipt queue unavailable");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
            if batch.is_empty() {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            let mut set = JoinSet::new();
            for raw in batch {
                let (gw, customer) = (gw.clone(), customer.clone());
                set.spawn(async move { deliver_one(&gw, &customer, raw).await });
            }
            while set.join_next().await.is_some() {}
        }
        tracing::debug!(%customer, "receipt delivery stopped (no receiver bound here)");
    });
}

async fn deliver_one(gw: &Gateway, customer: &str, raw: String) {
    if let Some(mo) = MobileOriginated::decode(&raw) {
        return deliver_mo(gw, customer, &raw, &mo).await;
    }
    let Some(r) = CustomerReceipt::decode(&raw) else {
        tracing::warn!(%customer, %raw, "dropping an unreadable receipt");
        let _ = gw.store.receipt_delivered(&gw.pod, customer, &raw, "-", "dropped").await;
        return;
    };
    if !gw.lease_fresh() {
        // This pod's lease may have lapsed and the receipt gone to another pod: hand it back
        // (a no-op if it was taken) instead of delivering it twice.
        let _ = gw.store.receipt_back(&gw.pod, customer, &raw).await;
        return;
    }
    let Some(session) = gw.sessions.receiver(customer) else {
        let _ = gw.store.receipt_back(&gw.pod, customer, &raw).await;
        return;
    };
    match session.link.request(r.deliver_sm(), DELIVER_TIMEOUT).await {
        Ok(resp) if resp.status() == CommandStatus::EsmeRok => {
            gw.metrics.receipts_delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let detail = format!("receipt {} delivered to {customer}", r.state);
            if let Err(e) = gw.store.receipt_delivered(&gw.pod, customer, &raw, &r.id, &detail).await {
                // The customer has it; the lease stays and a later reclaim may send it again.
                tracing::warn!(error = %e, "could not record a delivered receipt");
            }
        }
        other => {
            tracing::debug!(%customer, id = %r.id, result = ?other.map(|c| c.status()), "receipt not taken; requeued");
            let _ = gw.store.receipt_back(&gw.pod, customer, &raw).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn deliver_mo(gw: &Gateway, customer: &str, raw: &str, mo: &MobileOriginated) {
    let taken = match (gw.lease_fresh(), gw.sessions.receiver(customer)) {
        (true, Some(session)) => session
            .link
            .request(mo.deliver_sm(), DELIVER_TIMEOUT)
            .await
            .is_ok_and(|r| r.status() == CommandStatus::EsmeRok),
        _ => false,
    };
    if taken {
        let _ = gw.store.receipt_delivered(&gw.pod, customer, raw, "-", "mo").await;
    } else {
        let _ = gw.store.receipt_back(&gw.pod, customer, raw).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
