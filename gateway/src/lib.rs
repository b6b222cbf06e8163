//! # redoubt-gateway
//!
//! An SMPP gateway whose pods keep no state of their own: customers bind to any pod
//! (the gateway is their SMSC), messages are queued durably in redoubt before they are
//! acknowledged, any pod sends them on to vendor SMSCs (the gateway is the vendors' ESME),
//! and receipts find their way back to the customer on whichever pod it is bound to.
//!
//! Where it sits: at the end of the flow. It depends on `redoubt-client` (and on
//! `redoubt-server` only to embed a node with `--embed`); nothing depends on it.
//!
//! ```text
//! customer ESME --submit_sm--> smpp::server --(validate, CL.THROTTLE, RATELIMIT, enqueue: one script)--> redoubt
//!                <--submit_sm_resp (gateway id)--
//! redoubt --lease--> dispatch --submit_sm--> vendor::Connector --> vendor SMSC
//!                                   <--submit_sm_resp (vendor id) : store gw:vid:{vendor}:{id}
//! vendor SMSC --deliver_sm receipt--> vendor (any pod) --(match, dedup, queue for customer)--> redoubt
//! redoubt --lease--> delivery (pod where the customer's receiver is bound) --deliver_sm--> customer
//! ```
//!
//! The modules follow that path: [`smpp`] (framing, links, the customer side), [`store`] and
//! [`messages`] (keys and scripts), [`dispatch`], [`vendor`], [`receipts`], [`delivery`],
//! [`sessions`], and [`api`] for the management API, `/health` and `/metrics`.

pub mod api;
pub mod delivery;
pub mod dispatch;
pub mod messages;
pub mod metrics;
pub mod passwords;
pub mod receipts;
pub mod sessions;
pub mod smpp;
pub mod store;
pub mod vendor;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::messages::IdGen;
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::store::{LiveConfig, Store};
use crate::vendor::Vendors;

/// What a pod is told at start (see `main.rs` for the flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub pod_id: String,
    pub state: Vec<String>,
    pub api_keys: Vec<String>,
    /// How long messages, their trails, vendor-id mappings and pending receipts live.
    pub message_ttl_ms: u64,
    /// How long a message may wait for a bound vendor before it fails with EXPIRED.
    pub undeliverable_after_ms: u64,
}

/// One pod's shared state.
pub struct Gateway {
    pub settings: Settings,
    pub pod: String,
    pub store: Store,
    pub config: LiveConfig,
    pub ids: IdGen,
    pub sessions: Sessions,
    pub vendors: Vendors,
    pub metrics: Metrics,
    pub passwords: passwords::Verifier,
    /// A second connection for the pod heartbeat, so it never waits behind bulk traffic.
    pub heartbeat_store: Store,
    /// When this pod's last heartbeat was sent that the store then took (unix ms).
    pub lease_ok_ms: std::sync::atomic::AtomicI64,
}

impl Gateway {
    pub fn new(settings: Settings) -> Arc<Gateway> {
        let settings_state = settings.state.clone();
        Arc::new(Gateway {
            pod: settings.pod_id.clone(),
            store: Store::new(settings.state.clone()),
            settings,
            config: LiveConfig::default(),
            ids: IdGen::new(),
            sessions: Sessions::default(),
            vendors: Vendors::default(),
            metrics: Metrics::default(),
            passwords: passwords::Verifier::default(),
            heartbeat_store: Store::new(settings_state),
            lease_ok_ms: std::sync::atomic::AtomicI64::new(store::now_ms()),
        })
    }

    /// Is this pod's lease on its work safe to act on? Past this, another pod may have taken
    /// its leased messages and receipts (see `dispatch::pods`), so the pod hands work back
    /// instead of sending it.
    pub fn lease_fresh(&self) -> bool {
        let age = store::now_ms() - self.lease_ok_ms.load(std::sync::atomic::Ordering::Relaxed);
        age < (dispatch::POD_LEASE.as_millis() as i64) - 2_000
    }

    /// Serves SMPP on `smpp` and HTTP on `http` until the process ends. Waits for the first
    /// configuration load so the first bind already sees the customers.
    pub async fn run(self: Arc<Self>, smpp: TcpListener, http: TcpListener) -> std::io::Result<()> {
        let first = loop {
            match self.store.load_config().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the state store");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        tracing::info!(
            version = first.version,
            customers = first.customers.len(),
            vendors = first.vendors.len(),
            "configuration loaded"
        );
        self.config.set(first);
        tokio::spawn(self.store.clone().follow_config(self.config.clone(), Duration::from_millis(250)));
        tokio::spawn(vendor::supervise(self.clone()));
        tokio::spawn(webhook::supervise(self.clone()));
        tokio::spawn(dispatch::pods(self.clone()));
        tokio::spawn(dispatch::early_receipts(self.clone()));
        tokio::spawn(dispatch::run(self.clone()));
        tokio::spawn(smpp::server::serve(self.clone(), smpp));
        let app = api::router(self.clone());
        axum::serve(http, app).await
    }
}
