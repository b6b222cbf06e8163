//! The vendor side: the gateway as an ESME binding out to vendor SMSCs.
//!
//! Each pod keeps one connector per enabled vendor: it binds (one transceiver, or a
//! transmitter and a receiver), keeps the link alive with enquire_link, reconnects with
//! backoff, and sends submit_sm within the vendor's `window` and `max_tps` (both per pod:
//! they describe what one bind may do). Receipts arrive on whichever pod's receiver the
//! vendor picks; they are matched through the store, so the pod that sent the message does
//! not matter. A supervisor follows the configuration: vendors added, changed, disabled or
//! removed through the API take effect on every pod within a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter, DeliverSm, DeliverSmResp};
use rusmpp::values::InterfaceVersion;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::receipts::{is_receipt, VendorReceipt};
use crate::smpp::link::{is_response, Link};
use crate::smpp::pdu::{self, Incoming, Reader};
use crate::store::{BindMode, Vendor};
use crate::Gateway;

const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
const ENQUIRE_EVERY: Duration = Duration::from_secs(30);

/// What happened to one submit_sm sent to a vendor.
#[derive(Debug)]
pub enum Sent {
    Accepted(String),
    /// ESME_RTHROTTLED, ESME_RMSGQFUL or a system error: the vendor may take it later.
    Busy(CommandStatus),
    /// Any other error: this vendor will not take this message.
    Refused(CommandStatus),
    /// The link failed or timed out; the vendor may or may not have it.
    Lost,
}

pub struct Connector {
    pub id: String,
    pub config: Vendor,
    /// The link submits go on (the transceiver, or the transmitter).
    tx: Mutex<Option<Arc<Link>>>,
    rx_bound: AtomicBool,
    window: Semaphore,
    /// The earliest time the next submit may go (pacing to `max_tps`).
    next_slot: Mutex<Instant>,
    /// Set after ESME_RTHROTTLED: nothing goes before this.
    pause_until: Mutex<Instant>,
    stopped: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

impl Connector {
    pub fn is_bound(&self) -> bool {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|l| !l.is_closed())
    }

    pub fn state(&self) -> &'static str {
        match (self.is_bound(), self.config.bind, self.rx_bound.load(Ordering::Relaxed)) {
            (false, _, _) => "unbound",
            (true, BindMode::Transceiver, _) => "bound",
            (true, BindMode::TransmitterReceiver, true) => "bound",
            (true, BindMode::TransmitterReceiver, false) => "transmitter only",
        }
    }

    pub fn free_window(&self) -> usize {
        if self.is_bound() {
            self.window.available_permits()
        } else {
            0
        }
    }

    /// Sends one queued submit_sm body, within the window and the rate.
    pub async fn submit(&self, body: &[u8]) -> Sent {
        let Ok(_permit) = self.window.acquire().await else { return Sent::Lost };
        self.pace().await;
        let Some(link) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return Sent::Lost };
        match link.request_raw(CommandId::SubmitSm, body, SUBMIT_TIMEOUT).await {
            Ok(resp) => match (resp.status(), resp.pdu()) {
                (CommandStatus::EsmeRok, Some(Pdu::SubmitSmResp(r))) if !r.message_id().as_str().is_empty() => {
                    Sent::Accepted(r.message_id().as_str().to_string())
                }
                (CommandStatus::EsmeRok, _) => Sent::Refused(CommandStatus::EsmeRinvmsgid),
                (s @ (CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful | CommandStatus::EsmeRsyserr), _) => {
                    if s == CommandStatus::EsmeRthrottled {
                        // Everyone on this bind waits a moment, not just this message.
                        *self.pause_until.lock().unwrap_or_else(|e| e.into_inner()) =
                            Instant::now() + Duration::from_millis(500);
                    }
                    Sent::Busy(s)
                }
                (s, _) => Sent::Refused(s),
            },
            Err(_) => Sent::Lost,
        }
    }

    async fn pace(&self) {
        let wait = {
            let pause = *self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
            let mut slot = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = (*slot).max(now).max(pause);
            if self.config.max_tps > 0 {
                *slot = at + Duration::from_secs_f64(1.0 / f64::from(self.config.max_tps));
            }
            at.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// This pod's connectors, one per enabled vendor.
#[derive(Default)]
pub struct Vendors {
    map: Mutex<HashMap<String, Arc<Connector>>>,
}

impl Vendors {
    pub fn get(&self, id: &str) -> Option<Arc<Connector>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Connector>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn free_window(&self) -> usize {
        self.all().iter().map(|c| c.free_window()).sum()
    }
}

/// Keeps one connector running per enabled vendor of the live configuration.
pub async fn supervise(gw: Arc<Gateway>) {
    loop {
        let config = gw.config.get();
        let mut map = gw.vendors.map.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut changed = false;
        // Stop connectors whose vendor went away, was disabled or was changed.
        map.retain(|id, c| {
            let keep = config.vendors.get(id).is_some_and(|v| v.enabled && same(v, &c.config));
            if !keep {
                tracing::info!(vendor = %id, "vendor connector stopping");
                c.stopped.store(true, Ordering::Relaxed);
                if let Some(l) = c.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    l.close();
                }
                changed = true;
            }
            keep
        });
        for (id, v) in &config.vendors {
            if v.enabled && !map.contains_key(id) {
                let c = Arc::new(Connector {
                    id: id.clone(),
                    config: v.clone(),
                    tx: Mutex::new(None),
                    rx_bound: AtomicBool::new(false),
                    window: Semaphore::new(v.window.max(1) as usize),
                    next_slot: Mutex::new(Instant::now()),
                    pause_until: Mutex::new(Instant::now()),
                    stopped: AtomicBool::new(false),
                    last_error: Mutex::new(None),
                });
                tokio::spawn(run(gw.clone(), c.clone()));
                map.insert(id.clone(), c);
                changed = true;
            }
        }
        if changed {
            *gw.vendors.map.lock().unwrap_or_else(|e| e.into_inner()) = map;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn same(a: &Vendor, b: &Vendor) -> bool {
    a.host == b.host
        && a.port == b.port
        && a.system_id == b.system_id
        && a.password == b.password
        && a.bind == b.bind
        && a.max_tps == b.max_tps
        && a.window == b.window
}

/// A connector's life: bind, serve, and on any failure, back off and bind again.
async fn run(gw: Arc<Gateway>, c: Arc<Connector>) {
    let mut backoff = Duration::from_millis(200);
    while !c.stopped.load(Ordering::Relaxed) {
        let started = Instant::now();
        let why = match c.config.bind {
            BindMode::Transceiver => one_link(&gw, &c, Role::Transceiver).await,
            BindMode::TransmitterReceiver => {
                let (a, b) = tokio::join!(one_link(&gw, &c, Role::Transmitter), one_link(&gw, &c, Role::Receiver));
                format!("{a}; {b}")
            }
        };
        if c.stopped.load(Ordering::Relaxed) {
            break;
        }
        tracing::warn!(vendor = %c.id, reason = %why, "vendor link down; reconnecting");
        *c.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Transceiver,
    Transmitter,
    Receiver,
}

/// Connects, binds and serves one link until it fails; returns why it ended.
async fn one_link(gw: &Arc<Gateway>, c: &Arc<Connector>, role: Role) -> String {
    let addr = format!("{}:{}", c.config.host, c.config.port);
    let stream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return format!("connect {addr}: {e}"),
        Err(_) => return format!("connect {addr}: timed out"),
    };
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let link = Link::new(w);
    let reader = tokio::spawn(read_loop(gw.clone(), c.clone(), link.clone(), r));
    let sid = pdu::cstr::<1, 16>(&c.config.system_id);
    let pw = pdu::cstr::<1, 9>(&c.config.password);
    let v = InterfaceVersion::Smpp3_4;
    let bind: Pdu = match role {
        Role::Transceiver => BindTransceiver::builder().system_id(sid).password(pw).interface_version(v).build().into(),
        Role::Transmitter => BindTransmitter::builder().system_id(sid).password(pw).interface_version(v).build().into(),
        Role::Receiver => BindReceiver::builder().system_id(sid).password(pw).interface_version(v).build().into(),
    };
    match link.request(bind, Duration::from_secs(10)).await {
        Ok(resp) if resp.status() == CommandStatus::EsmeRok => {}
        Ok(resp) => {
            link.close();
            reader.abort();
            return format!("bind refused: {:?}", resp.status());
        }
        Err(e) => {
            link.close();
            reader.abort();
            return format!("bind: {e}");
        }
    }
    tracing::info!(vendor = %c.id, ?role, "vendor bound");
    *c.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    match role {
        Role::Transceiver | Role::Transmitter => *c.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone()),
        Role::Receiver => c.rx_bound.store(true, Ordering::Relaxed),
    }
    // Keep the link alive; a missed enquire_link_resp ends it.
    let why = loop {
        tokio::select! {
            _ = tokio::time::sleep(ENQUIRE_EVERY) => {
                if c.stopped.load(Ordering::Relaxed) {
                    let _ = link.request(Pdu::Unbind, Duration::from_secs(2)).await;
                    break "stopped".to_string();
                }
                if let Err(e) = link.request(Pdu::EnquireLink, Duration::from_secs(10)).await {
                    break format!("enquire_link: {e}");
                }
            }
            _ = wait_closed(&link) => break "connection closed".to_string(),
        }
    };
    link.close();
    reader.abort();
    if role == Role::Receiver {
        c.rx_bound.store(false, Ordering::Relaxed);
    } else {
        let mut tx = c.tx.lock().unwrap_or_else(|e| e.into_inner());
        if tx.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
            *tx = None;
        }
    }
    why
}

async fn wait_closed(link: &Link) {
    while !link.is_closed() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_loop(gw: Arc<Gateway>, c: Arc<Connector>, link: Arc<Link>, mut r: OwnedReadHalf) {
    let mut reader = Reader::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            let cmd = match reader.next(&mut buf) {
                Ok(Some(Incoming::Command(cmd))) => cmd,
                Ok(Some(Incoming::Bad { sequence, status, .. })) => {
                    let _ = link.send(&pdu::generic_nack(sequence, status)).await;
                    continue;
                }
                Ok(None) => break,
                Err(_) => {
                    link.close();
                    return;
                }
            };
            if is_response(cmd.id()) || matches!(cmd.pdu(), Some(Pdu::GenericNack)) {
                link.complete(cmd);
                continue;
            }
            let seq = cmd.sequence_number();
            match cmd.pdu() {
                Some(Pdu::DeliverSm(sm)) => {
                    // Acknowledged only once recorded, so a receipt is never lost to a crash
                    // here: the vendor sends it again.
                    let (gw, c, link, sm) = (gw.clone(), c.clone(), link.clone(), sm.clone());
                    tokio::spawn(async move {
                        let status = on_deliver(&gw, &c.id, &sm).await;
                        let resp = DeliverSmResp::builder().build();
                        let _ = link.send(&Command::new(status, seq, resp)).await;
                    });
                }
                Some(Pdu::EnquireLink) => {
                    let _ = link.send(&Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLinkResp)).await;
                }
                Some(Pdu::Unbind) => {
                    let _ = link.send(&Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp)).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    link.close();
                    return;
                }
                _ => {
                    let _ = link.send(&pdu::generic_nack(seq, CommandStatus::EsmeRinvcmdid)).await;
                }
            }
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                link.close();
                return;
            }
            Ok(_) => {}
        }
    }
}

/// A deliver_sm from a vendor: a receipt to route back, or a mobile-originated message.
async fn on_deliver(gw: &Gateway, vendor: &str, sm: &DeliverSm) -> CommandStatus {
    if !is_receipt(sm) {
        return crate::dispatch::mobile_originated(gw, vendor, sm).await;
    }
    let Some(r) = VendorReceipt::parse(sm) else {
        tracing::warn!(%vendor, "a receipt without an id; acknowledged and dropped");
        return CommandStatus::EsmeRok;
    };
    gw.metrics.receipts_in.fetch_add(1, Ordering::Relaxed);
    gw.metrics.receipt_state(&r.state);
    match crate::dispatch::vendor_receipt(gw, vendor, &r).await {
        Ok(()) => CommandStatus::EsmeRok,
        Err(e) => {
            tracing::warn!(%vendor, error = %e, "receipt not recorded; the vendor will resend it");
            CommandStatus::EsmeRsyserr
        }
    }
}
