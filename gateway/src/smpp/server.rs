//! The customer side: the gateway as an SMSC.
//!
//! A session starts unbound; its first PDU must be a bind, checked against the customer
//! records (`gw:customers`) and against `max_binds` across every pod. A bound transmitter or
//! transceiver submits; every submit_sm is validated, passed through the customer's shared
//! rate (`CL.THROTTLE`) and the sender's campaign caps (`RATELIMIT`), and queued durably in
//! redoubt, all in one script, before its submit_sm_resp carries the gateway's message id.
//! A bound receiver or transceiver gets receipts (see `crate::delivery`).
//!
//! A session serves up to [`WINDOW`] submits at once; beyond that it stops reading, so a
//! fast customer is slowed by TCP rather than by errors, and its memory stays bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rusmpp::pdus::{BindReceiverResp, BindTransceiverResp, BindTransmitterResp, SubmitSm, SubmitSmResp};
use rusmpp::types::COctetString;
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::link::{is_response, Link};
use super::pdu::{self, Incoming, Reader};
use crate::messages::{Admission, Limits, NewMessage};
use crate::sessions::{BindKind, Session, HEARTBEAT};
use crate::store::now_ms;
use crate::Gateway;

/// Submits one session may have outstanding.
pub const WINDOW: usize = 256;
/// The system_id the gateway answers binds with.
const SYSTEM_ID: &str = "redoubt";

pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "smpp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let gw = gw.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            session(gw, stream, peer.to_string()).await;
        });
    }
}

struct Bound {
    session: Arc<Session>,
    heartbeat: tokio::task::JoinHandle<()>,
}

async fn session(gw: Arc<Gateway>, stream: TcpStream, peer: String) {
    let (mut r, w) = stream.into_split();
    let link = Link::new(w);
    let mut reader = Reader::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut bound: Option<Bound> = None;
    let window = Arc::new(Semaphore::new(WINDOW));
    'read: loop {
        loop {
            let incoming = match reader.next(&mut buf) {
                Ok(Some(i)) => i,
                Ok(None) => break,
                Err(u) => {
                    // A length under 16 bytes: there is no next PDU to find. Say why and go.
                    gw.metrics.generic_nacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = link.send(&pdu::generic_nack(u.sequence, CommandStatus::EsmeRinvcmdlen)).await;
                    break 'read;
                }
            };
            let cmd = match incoming {
                Incoming::Command(c) => c,
                Incoming::Bad { sequence, status, command_id } => {
                    tracing::debug!(%peer, command_id, ?status, "bad PDU from a customer");
                    gw.metrics.generic_nacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if link.send(&pdu::generic_nack(sequence, status)).await.is_err() {
                        break 'read;
                    }
                    continue;
                }
            };
            if is_response(cmd.id()) || matches!(cmd.pdu(), Some(Pdu::GenericNack)) {
                link.complete(cmd);
                continue;
            }
            let seq = cmd.sequence_number();
            let Some(pdu) = cmd.pdu() else {
                let _ = link.send(&pdu::generic_nack(seq, CommandStatus::EsmeRinvcmdlen)).await;
                continue;
            };
            match pdu {
                Pdu::BindTransmitter(b) => {
                    let reply = bind(
                        &gw,
                        &link,
                        &mut bound,
                        &peer,
                        BindKind::Transmitter,
                        b.system_id.as_str(),
                        b.password.as_str(),
                    )
                    .await;
                    let resp = BindTransmitterResp::builder().system_id(system_id()).build();
                    let _ = link.send(&Command::new(reply, seq, resp)).await;
                }
                Pdu::BindReceiver(b) => {
                    let reply = bind(
                        &gw,
                        &link,
                        &mut bound,
                        &peer,
                        BindKind::Receiver,
                        b.system_id.as_str(),
                        b.password.as_str(),
                    )
                    .await;
                    let resp = BindReceiverResp::builder().system_id(system_id()).build();
                    let _ = link.send(&Command::new(reply, seq, resp)).await;
                }
                Pdu::BindTransceiver(b) => {
                    let reply = bind(
                        &gw,
                        &link,
                        &mut bound,
                        &peer,
                        BindKind::Transceiver,
                        b.system_id.as_str(),
                        b.password.as_str(),
                    )
                    .await;
                    let resp = BindTransceiverResp::builder().system_id(system_id()).build();
                    let _ = link.send(&Command::new(reply, seq, resp)).await;
                }
                Pdu::EnquireLink => {
                    let _ = link.send(&Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLinkResp)).await;
                }
                Pdu::Unbind => {
                    let _ = link.send(&Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp)).await;
                    break 'read;
                }
                Pdu::SubmitSm(sm) => {
                    let Some(b) = bound.as_ref().filter(|b| b.session.kind.can_send()) else {
                        gw.metrics.submits_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = link.send(&submit_resp(seq, CommandStatus::EsmeRinvbndsts, None)).await;
                        continue;
                    };
                    let Ok(permit) = window.clone().acquire_owned().await else { break 'read };
                    let (gw, link, customer, sm) = (gw.clone(), link.clone(), b.session.customer.clone(), sm.clone());
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let (status, id) = submit(&gw, &customer, &sm).await;
                        gw.metrics.submit_latency.observe(started.elapsed().as_secs_f64());
                        let _ = link.send(&submit_resp(seq, status, id.as_deref())).await;
                        drop(permit);
                    });
                }
                _ => {
                    // query_sm, cancel_sm, replace_sm, data_sm, submit_multi, broadcast, or a
                    // response-type PDU we do not issue: not offered by this gateway.
                    gw.metrics.generic_nacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = link.send(&pdu::generic_nack(seq, CommandStatus::EsmeRinvcmdid)).await;
                }
            }
        }
        if link.is_closed() {
            break;
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Let in-flight submits answer before the link goes (their messages are queued anyway).
    let _ = tokio::time::timeout(Duration::from_secs(5), window.acquire_many(WINDOW as u32)).await;
    link.close();
    if let Some(b) = bound {
        b.heartbeat.abort();
        gw.sessions.remove(&b.session.customer, b.session.id);
        if let Err(e) = gw.store.end_session(&gw.pod, &b.session.customer, b.session.id).await {
            tracing::warn!(error = %e, "could not release a bind slot; it expires on its own");
        }
        tracing::info!(customer = %b.session.customer, %peer, "customer session ended");
    }
}

fn system_id() -> COctetString<1, 16> {
    pdu::cstr(SYSTEM_ID)
}

fn submit_resp(seq: u32, status: CommandStatus, id: Option<&str>) -> Command {
    let message_id = id.map(pdu::cstr::<1, 65>).unwrap_or_default();
    Command::new(status, seq, SubmitSmResp::builder().message_id(message_id).build())
}

async fn bind(
    gw: &Arc<Gateway>,
    link: &Arc<Link>,
    bound: &mut Option<Bound>,
    peer: &str,
    kind: BindKind,
    system_id: &str,
    password: &str,
) -> CommandStatus {
    use std::sync::atomic::Ordering::Relaxed;
    if bound.is_some() {
        return CommandStatus::EsmeRalybnd;
    }
    let config = gw.config.get();
    let Some(customer) = config.customers.get(system_id) else {
        gw.metrics.bind_failures.fetch_add(1, Relaxed);
        tracing::info!(%system_id, %peer, "bind refused: unknown system_id");
        return CommandStatus::EsmeRbindfail;
    };
    // Argon2 takes tens of milliseconds of CPU: off the async workers.
    let (g, hash, pw) = (gw.clone(), customer.password_hash.clone(), password.to_string());
    if !tokio::task::spawn_blocking(move || g.passwords.verify(&hash, &pw)).await.unwrap_or(false) {
        gw.metrics.bind_failures.fetch_add(1, Relaxed);
        tracing::info!(%system_id, %peer, "bind refused: wrong password");
        return CommandStatus::EsmeRbindfail;
    }
    let id = gw.sessions.next_id();
    let member = format!("{}/{id}", gw.pod);
    match gw.store.take_bind(system_id, &member, customer.max_binds).await {
        Ok(true) => {}
        Ok(false) => {
            gw.metrics.bind_failures.fetch_add(1, Relaxed);
            tracing::info!(%system_id, %peer, max = customer.max_binds, "bind refused: max_binds reached");
            return CommandStatus::EsmeRbindfail;
        }
        Err(e) => {
            gw.metrics.bind_failures.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "bind refused: state store unavailable");
            return CommandStatus::EsmeRsyserr;
        }
    }
    let session = Arc::new(Session {
        id,
        customer: system_id.to_string(),
        kind,
        peer: peer.to_string(),
        since_ms: now_ms(),
        link: link.clone(),
    });
    let _ = gw.store.renew_session(&gw.pod, &session).await;
    if gw.sessions.add(session.clone()) {
        crate::delivery::start(gw.clone(), system_id.to_string());
    }
    let heartbeat = {
        let (gw, session) = (gw.clone(), session.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = gw.store.renew_session(&gw.pod, &session).await {
                    tracing::warn!(error = %e, "session heartbeat failed");
                }
            }
        })
    };
    gw.metrics.binds.fetch_add(1, Relaxed);
    tracing::info!(customer = %system_id, ?kind, %peer, "customer bound");
    *bound = Some(Bound { session, heartbeat });
    CommandStatus::EsmeRok
}

/// Validates, limits and queues one submit_sm. Returns the resp status and message id.
async fn submit(gw: &Gateway, customer: &str, sm: &SubmitSm) -> (CommandStatus, Option<String>) {
    use std::sync::atomic::Ordering::Relaxed;
    let checked = match validate(sm) {
        Ok(c) => c,
        Err(status) => {
            gw.metrics.submits_rejected.fetch_add(1, Relaxed);
            return (status, None);
        }
    };
    let config = gw.config.get();
    let Some(c) = config.customers.get(customer) else {
        // Deleted while bound: refuse new traffic (its bind ends at the next reconnect).
        gw.metrics.submits_rejected.fetch_add(1, Relaxed);
        return (CommandStatus::EsmeRinvsysid, None);
    };
    let source = sm.source_addr.as_str();
    let campaign = config.campaigns.get(source).map(|c| (c.hourly_limit, c.daily_limit));
    let id = gw.ids.next();
    let body = pdu::body_bytes(&Command::new(CommandStatus::EsmeRok, 0, sm.clone()));
    let m = NewMessage {
        id: &id,
        customer,
        source,
        destination: sm.destination_addr.as_str(),
        registered_delivery: u8::from(sm.registered_delivery),
        body: &body,
        parts: checked.parts,
    };
    let limits = Limits { burst: c.burst, tps: c.max_tps, campaign, source };
    match gw.store.submit(&m, &limits, gw.settings.message_ttl_ms).await {
        Ok(Admission::Queued) => {
            gw.metrics.submits.fetch_add(1, Relaxed);
            (CommandStatus::EsmeRok, Some(id))
        }
        Ok(Admission::Throttled) => {
            gw.metrics.throttled.fetch_add(1, Relaxed);
            (CommandStatus::EsmeRthrottled, None)
        }
        Ok(Admission::CampaignCap(which)) => {
            gw.metrics.campaign_capped.fetch_add(1, Relaxed);
            tracing::debug!(%source, which, "campaign cap reached");
            (CommandStatus::EsmeRthrottled, None)
        }
        Err(e) => {
            gw.metrics.store_errors.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "submit not queued");
            (CommandStatus::EsmeRsyserr, None)
        }
    }
}

pub struct Checked {
    /// Parts of a concatenated message (from the UDH), 1 otherwise.
    pub parts: u8,
}

/// The checks a submit_sm passes before it is queued.
pub fn validate(sm: &SubmitSm) -> Result<Checked, CommandStatus> {
    let src = sm.source_addr.as_str();
    if src.is_empty() || src.len() > 20 {
        return Err(CommandStatus::EsmeRinvsrcadr);
    }
    let dst = sm.destination_addr.as_str();
    let digits = dst.strip_prefix('+').unwrap_or(dst);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandStatus::EsmeRinvdstadr);
    }
    let dc = u8::from(sm.data_coding);
    let known = matches!(dc, 0..=10 | 13 | 14) || dc & 0xf0 == 0xf0;
    if !known {
        return Err(CommandStatus::EsmeRinvdcs);
    }
    let msg: &[u8] = sm.short_message().as_ref();
    let payload = sm.tlvs().iter().any(|t| u16::from(t.tag()) == 0x0424);
    if payload && !msg.is_empty() {
        // Both short_message and message_payload: SMPP 5 forbids it.
        return Err(CommandStatus::EsmeRinvmsglen);
    }
    // Octets per single message: 160 for the default alphabet (one septet per octet,
    // unpacked, as SMPP carries it), 140 for 8-bit data and UCS-2 (which also must be even).
    let limit = if dc == 0 || dc == 1 { 160 } else { 140 };
    let mut parts = 1;
    let mut text = msg;
    if u8::from(sm.esm_class) & 0x40 != 0 {
        let udh = parse_udh(msg).ok_or(CommandStatus::EsmeRinvesmclass)?;
        parts = udh.parts;
        text = &msg[udh.len..];
    }
    if text.len() > limit || (dc == 8 && text.len() % 2 != 0) {
        return Err(CommandStatus::EsmeRinvmsglen);
    }
    Ok(Checked { parts })
}

pub struct Udh {
    pub len: usize,
    pub parts: u8,
}

/// Reads a user data header: its length and, for a concatenated message (IE 0x00 or 0x08),
/// the part count, checking the part number is within it.
pub fn parse_udh(msg: &[u8]) -> Option<Udh> {
    let udhl = *msg.first()? as usize;
    if udhl == 0 || 1 + udhl > msg.len() {
        return None;
    }
    let ies = &msg[1..1 + udhl];
    let mut i = 0;
    let mut parts = 1;
    while i < ies.len() {
        let iei = ies[i];
        let len = *ies.get(i + 1)? as usize;
        let data = ies.get(i + 2..i + 2 + len)?;
        match (iei, len) {
            (0x00, 3) | (0x08, 4) => {
                let (total, seq) = (data[len - 2], data[len - 1]);
                if total == 0 || seq == 0 || seq > total {
                    return None;
                }
                parts = total;
            }
            (0x00, _) | (0x08, _) => return None,
            _ => {}
        }
        i += 2 + len;
    }
    Some(Udh { len: 1 + udhl, parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::types::OctetString;
    use rusmpp::values::{DataCoding, EsmClass};

    fn sm(dst: &str, dc: u8, esm: u8, msg: &[u8]) -> SubmitSm {
        SubmitSm::builder()
            .source_addr(pdu::cstr("ACME"))
            .destination_addr(pdu::cstr(dst))
            .data_coding(DataCoding::from(dc))
            .esm_class(EsmClass::from(esm))
            .short_message(OctetString::from_slice(msg).unwrap())
            .build()
    }

    #[test]
    fn submit_validation() {
        assert!(validate(&sm("+15551234567", 0, 0, b"hello")).is_ok());
        assert_eq!(validate(&sm("abc", 0, 0, b"x")).err(), Some(CommandStatus::EsmeRinvdstadr));
        assert_eq!(validate(&sm("1555", 0x0b, 0, b"x")).err(), Some(CommandStatus::EsmeRinvdcs));
        assert_eq!(validate(&sm("1555", 8, 0, b"abc")).err(), Some(CommandStatus::EsmeRinvmsglen));
        assert_eq!(validate(&sm("1555", 4, 0, &[0u8; 141])).err(), Some(CommandStatus::EsmeRinvmsglen));
        // Concatenation: part 2 of 3 with an 8-bit reference.
        let mut m = vec![5, 0x00, 3, 0x42, 3, 2];
        m.extend_from_slice(&[b'a'; 150]);
        assert_eq!(validate(&sm("1555", 0, 0x40, &m)).map(|c| c.parts).ok(), Some(3));
        // Part 4 of 3.
        let bad = [5, 0x00, 3, 0x42, 3, 4, b'a'];
        assert_eq!(validate(&sm("1555", 0, 0x40, &bad)).err(), Some(CommandStatus::EsmeRinvesmclass));
        // A UDH longer than the message.
        assert_eq!(validate(&sm("1555", 0, 0x40, &[9, 0, 3])).err(), Some(CommandStatus::EsmeRinvesmclass));
    }
}
