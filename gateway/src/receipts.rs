//! Delivery receipts: reading a vendor's, writing the customer's.
//!
//! Vendors disagree on how a receipt names its message. The id may come in the
//! `receipted_message_id` TLV (0x001E) or only in the text (`id:...`), and a vendor may hand
//! out hex ids in submit_sm_resp and decimal ones in receipts (or the reverse). So a
//! receipt's id is looked up exactly (case-insensitive) first; only a receipt that still
//! matches nothing exactly after a grace period (its submit_sm_resp would have been recorded
//! by then) is looked up by its numeric value ([`receipt_aliases`] against
//! [`stored_aliases`]). Trying the numeric forms at once would let an early receipt, whose
//! resp is not recorded yet, match another message whose id reads as the same number in the
//! other base. The state comes from the `message_state` TLV (0x0427), else from `stat:`.

use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::{MessageDeliveryRequestTlvValue, TlvValue};
use rusmpp::types::{COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{EsmClass, MessageState, Npi, RegisteredDelivery, ServiceType, Ton};

use crate::smpp::pdu::cstr;

/// A vendor id as stored and looked up first: trimmed, lower case.
pub fn exact(vid: &str) -> String {
    vid.trim().to_ascii_lowercase()
}

/// The numeric keys a vendor's submit_sm_resp id is also stored under: its value read as
/// hex (`#h<value>`) when it reads as hex, and read as decimal (`#d<value>`) when it reads
/// as decimal. The two readings live apart, so one id's hex reading never meets another's
/// decimal reading.
pub fn stored_aliases(vid: &str) -> Vec<String> {
    let e = exact(vid);
    let mut out = vec![e.clone()];
    if let Some(n) = read_hex(&e) {
        out.push(format!("#h{n}"));
    }
    if let Some(n) = read_dec(&e) {
        out.push(format!("#d{n}"));
    }
    out
}

/// Where a receipt whose id matched nothing exactly looks next: a resp id whose hex value is
/// this id's decimal value (the common hex-in-resp, decimal-in-receipt vendor), then one whose
/// decimal value is this id's hex value (the reverse).
pub fn receipt_aliases(vid: &str) -> Vec<String> {
    let e = exact(vid);
    let mut out = Vec::new();
    if let Some(n) = read_dec(&e) {
        out.push(format!("#h{n}"));
    }
    if let Some(n) = read_hex(&e) {
        out.push(format!("#d{n}"));
    }
    out
}

fn read_hex(s: &str) -> Option<u128> {
    (!s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(s, 16).ok())?
}

fn read_dec(s: &str) -> Option<u128> {
    (!s.is_empty() && s.len() <= 38 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// A receipt as a vendor sent it, reduced to what the gateway needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorReceipt {
    pub vid: String,
    /// The SMPP receipt state word (DELIVRD, UNDELIV, ...).
    pub state: String,
    pub err: String,
}

impl VendorReceipt {
    /// Reads a deliver_sm that is a receipt (`esm_class` message type 0x04 or TLVs present).
    pub fn parse(sm: &DeliverSm) -> Option<VendorReceipt> {
        let text = String::from_utf8_lossy(sm.short_message().as_ref()).into_owned();
        let mut vid = None;
        let mut state = None;
        for tlv in sm.tlvs() {
            match tlv.value() {
                Some(TlvValue::ReceiptedMessageId(id)) => vid = Some(id.as_str().to_string()),
                Some(TlvValue::MessageState(s)) => state = Some(state_word(*s).to_string()),
                _ => {}
            }
        }
        let vid = vid.filter(|v| !v.is_empty()).or_else(|| field(&text, "id:"))?;
        let state = state.or_else(|| field(&text, "stat:")).unwrap_or_else(|| "UNKNOWN".into());
        let err = field(&text, "err:").unwrap_or_else(|| "000".into());
        Some(VendorReceipt { vid, state: state.to_ascii_uppercase(), err })
    }

    pub fn encode(&self) -> String {
        format!("{}\t{}\t{}", self.vid, self.state, self.err)
    }

    pub fn decode(s: &str) -> Option<VendorReceipt> {
        let mut f = s.split('\t');
        Some(VendorReceipt { vid: f.next()?.into(), state: f.next()?.into(), err: f.next()?.into() })
    }
}

/// Is this deliver_sm a delivery receipt (rather than a mobile-originated message)?
pub fn is_receipt(sm: &DeliverSm) -> bool {
    let esm = u8::from(sm.esm_class);
    // Message type bits 2-5: 0x04 MC delivery receipt, 0x08/0x10/0x20 SME acks and
    // intermediate notifications; vendors that forget the bit still send the TLV.
    esm & 0x3c != 0 || sm.tlvs().iter().any(|t| matches!(t.value(), Some(TlvValue::ReceiptedMessageId(_))))
}

/// The value after `name` in a receipt text, up to the next space.
fn field(text: &str, name: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find(name)? + name.len();
    let v: String = text[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    (!v.is_empty()).then_some(v)
}

pub fn state_word(s: MessageState) -> &'static str {
    match s {
        MessageState::Scheduled => "SCHEDUL",
        MessageState::Enroute => "ENROUTE",
        MessageState::Delivered => "DELIVRD",
        MessageState::Expired => "EXPIRED",
        MessageState::Deleted => "DELETED",
        MessageState::Undeliverable => "UNDELIV",
        MessageState::Accepted => "ACCEPTD",
        MessageState::Rejected => "REJECTD",
        MessageState::Skipped => "SKIPPED",
        _ => "UNKNOWN",
    }
}

pub fn state_value(word: &str) -> MessageState {
    match word {
        "SCHEDUL" => MessageState::Scheduled,
        "ENROUTE" => MessageState::Enroute,
        "DELIVRD" => MessageState::Delivered,
        "EXPIRED" => MessageState::Expired,
        "DELETED" => MessageState::Deleted,
        "UNDELIV" => MessageState::Undeliverable,
        "ACCEPTD" => MessageState::Accepted,
        "REJECTD" => MessageState::Rejected,
        "SKIPPED" => MessageState::Skipped,
        _ => MessageState::Unknown,
    }
}

/// Final states: a receipt in one of these ends the message's life.
pub fn is_final(word: &str) -> bool {
    !matches!(word, "ENROUTE" | "ACCEPTD" | "SCHEDUL")
}

/// Does the customer want a receipt for this outcome? (registered_delivery bits 0-1.)
pub fn wanted(registered_delivery: u8, state: &str) -> bool {
    match registered_delivery & 0x03 {
        1 => true,
        2 => state != "DELIVRD",
        3 => state == "DELIVRD",
        _ => false,
    }
}

/// A receipt on its way to the customer (what `gw:dlrq:{customer}` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerReceipt {
    pub id: String,
    pub state: String,
    pub err: String,
    /// The original message's addresses (the receipt goes the other way).
    pub source: String,
    pub destination: String,
    pub submitted_ms: i64,
    pub done_ms: i64,
}

impl CustomerReceipt {
    pub fn encode(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.id, self.state, self.err, self.source, self.destination, self.submitted_ms, self.done_ms
        )
    }

    pub fn decode(s: &str) -> Option<CustomerReceipt> {
        let mut f = s.split('\t');
        Some(CustomerReceipt {
            id: f.next()?.into(),
            state: f.next()?.into(),
            err: f.next()?.into(),
            source: f.next()?.into(),
            destination: f.next()?.into(),
            submitted_ms: f.next()?.parse().ok()?,
            done_ms: f.next()?.parse().ok()?,
        })
    }

    /// The standard receipt text (SMPP 3.4 appendix B).
    pub fn text(&self) -> String {
        let dlvrd = if self.state == "DELIVRD" { "001" } else { "000" };
        format!(
            "id:{} sub:001 dlvrd:{} submit date:{} done date:{} stat:{} err:{} text:",
            self.id,
            dlvrd,
            smpp_date(self.submitted_ms),
            smpp_date(self.done_ms),
            self.state,
            self.err
        )
    }

    /// The deliver_sm that carries this receipt to the customer.
    pub fn deliver_sm(&self) -> DeliverSm {
        let addr = |s: &str| cstr::<1, 21>(s);
        let text = self.text();
        let short = OctetString::<0, 255>::from_slice(&text.as_bytes()[..text.len().min(254)]).unwrap_or_default();
        let mut tlvs = vec![MessageDeliveryRequestTlvValue::MessageState(state_value(&self.state))];
        if let Ok(id) = COctetString::<1, 65>::from_string(self.id.clone()) {
            tlvs.insert(0, MessageDeliveryRequestTlvValue::ReceiptedMessageId(id));
        }
        DeliverSm::builder()
            .service_type(ServiceType::default())
            .source_addr_ton(Ton::Unknown)
            .source_addr_npi(Npi::Unknown)
            .source_addr(addr(&self.destination))
            .dest_addr_ton(Ton::Unknown)
            .dest_addr_npi(Npi::Unknown)
            .destination_addr(addr(&self.source))
            .esm_class(EsmClass::from(0x04))
            .schedule_delivery_time(EmptyOrFullCOctetString::empty())
            .validity_period(EmptyOrFullCOctetString::empty())
            .registered_delivery(RegisteredDelivery::from(0))
            .short_message(short)
            .tlvs(tlvs)
            .build()
    }
}

/// A mobile-originated message on its way to the customer owning its destination (also
/// held in `gw:dlrq:{customer}`, marked by its `MO` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobileOriginated {
    pub source: String,
    pub destination: String,
    pub data_coding: u8,
    pub message: Vec<u8>,
}

impl MobileOriginated {
    pub fn encode(&self) -> String {
        let hex: String = self.message.iter().map(|b| format!("{b:02x}")).collect();
        format!("MO\t{}\t{}\t{}\t{hex}", self.source, self.destination, self.data_coding)
    }

    pub fn decode(s: &str) -> Option<MobileOriginated> {
        let mut f = s.strip_prefix("MO\t")?.split('\t');
        let (source, destination, dc, hex) = (f.next()?, f.next()?, f.next()?, f.next()?);
        let message = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        Some(MobileOriginated {
            source: source.into(),
            destination: destination.into(),
            data_coding: dc.parse().ok()?,
            message,
        })
    }

    pub fn deliver_sm(&self) -> DeliverSm {
        let short = OctetString::<0, 255>::from_slice(&self.message[..self.message.len().min(254)]).unwrap_or_default();
        DeliverSm::builder()
            .source_addr(cstr::<1, 21>(&self.source))
            .destination_addr(cstr::<1, 21>(&self.destination))
            .esm_class(EsmClass::from(0))
            .data_coding(rusmpp::values::DataCoding::from(self.data_coding))
            .short_message(short)
            .build()
    }
}

/// `YYMMDDhhmm` in UTC, the receipt text's date format.
pub fn smpp_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{:02}{:02}{:02}{:02}{:02}", y.rem_euclid(100), m, d, rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_decimal_forms_of_one_id_meet_and_different_ids_do_not() {
        // Hex in the resp, decimal in the receipt, and the reverse.
        assert!(receipt_aliases("6699").iter().any(|a| stored_aliases("1A2B").contains(a)));
        assert!(receipt_aliases("1a2b").iter().any(|a| stored_aliases("6699").contains(a)));
        // Two different resp ids whose readings coincide across bases never share a key:
        // "00001317" read as decimal is 1317, "525" read as hex is 1317.
        let a = stored_aliases("00001317");
        let b = stored_aliases("525");
        assert!(!a.iter().any(|k| b.contains(k)), "{a:?} {b:?}");
        assert_eq!(stored_aliases("abc-123"), vec!["abc-123".to_string()]);
        assert!(receipt_aliases("abc-123").is_empty());
    }

    #[test]
    fn receipt_text_fields() {
        let r = CustomerReceipt {
            id: "abc".into(),
            state: "DELIVRD".into(),
            err: "000".into(),
            source: "1".into(),
            destination: "2".into(),
            submitted_ms: 1_700_000_000_000,
            done_ms: 1_700_000_060_000,
        };
        assert_eq!(
            r.text(),
            "id:abc sub:001 dlvrd:001 submit date:2311142213 done date:2311142214 stat:DELIVRD err:000 text:"
        );
        assert_eq!(CustomerReceipt::decode(&r.encode()), Some(r.clone()));
        let sm = r.deliver_sm();
        let back = VendorReceipt::parse(&sm).unwrap();
        assert_eq!((back.vid.as_str(), back.state.as_str()), ("abc", "DELIVRD"));
        assert!(is_receipt(&sm));
    }

    #[test]
    fn text_only_receipts_parse() {
        let sm = DeliverSm::builder()
            .esm_class(EsmClass::from(0x04))
            .short_message(OctetString::from_slice(b"id:0012AB sub:001 dlvrd:000 submit date:2311142213 done date:2311142214 stat:UNDELIV err:021 text:hi").unwrap())
            .build();
        let r = VendorReceipt::parse(&sm).unwrap();
        assert_eq!(r, VendorReceipt { vid: "0012AB".into(), state: "UNDELIV".into(), err: "021".into() });
    }

    #[test]
    fn mobile_originated_round_trip() {
        let m = MobileOriginated {
            source: "4670".into(),
            destination: "1800".into(),
            data_coding: 8,
            message: vec![0, 0x41, 9],
        };
        assert_eq!(MobileOriginated::decode(&m.encode()), Some(m.clone()));
        assert_eq!(MobileOriginated::decode("a\tb"), None);
        assert!(!is_receipt(&m.deliver_sm()));
    }

    #[test]
    fn registered_delivery_bits() {
        assert!(wanted(1, "DELIVRD") && wanted(1, "UNDELIV"));
        assert!(!wanted(2, "DELIVRD") && wanted(2, "UNDELIV"));
        assert!(wanted(3, "DELIVRD") && !wanted(3, "UNDELIV"));
        assert!(!wanted(0, "DELIVRD"));
    }
}
