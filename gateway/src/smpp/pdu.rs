//! SMPP framing shared by both sides of the gateway.
//!
//! `rusmpp` decodes and encodes the PDUs. What it does not do is survive a bad PDU: its codec
//! stops a stream at the first decode error and can leave the rest of that PDU in the buffer.
//! A gateway must answer a malformed or unknown PDU with `generic_nack` and carry on, so the
//! read side here cuts the byte stream into whole PDUs by their length field first and only
//! then hands one PDU at a time to `rusmpp`. A PDU that fails to decode costs the session one
//! `generic_nack`, never the session.

use bytes::{Buf, BufMut, BytesMut};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio_util::codec::{Decoder, Encoder};

/// The largest PDU either side accepts (a submit_sm with every TLV fits in well under 4 KiB;
/// a message_payload TLV may carry up to 64 KiB).
pub const MAX_PDU: usize = 70 * 1024;
const HEADER: usize = 16;

/// One thing read off an SMPP connection.
#[derive(Debug)]
pub enum Incoming {
    /// A PDU `rusmpp` understood.
    Command(Command),
    /// A PDU it did not: answer `generic_nack` with this status and sequence number.
    Bad { sequence: u32, status: CommandStatus, command_id: u32 },
}

/// Cuts PDUs out of a connection's read buffer.
#[derive(Default)]
pub struct Reader {
    /// Bytes of an oversize PDU still to be thrown away.
    discard: usize,
    codec: Option<CommandCodec>,
}

/// A byte stream that can no longer be cut into PDUs (a length field under 16): the session
/// must end after answering.
#[derive(Debug)]
pub struct Unframeable {
    pub sequence: u32,
}

impl Reader {
    /// The next PDU in `buf`, `Ok(None)` when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Unframeable> {
        loop {
            if self.discard > 0 {
                let n = self.discard.min(buf.len());
                buf.advance(n);
                self.discard -= n;
                if self.discard > 0 {
                    return Ok(None);
                }
            }
            if buf.len() < HEADER {
                return Ok(None);
            }
            let len = u32::from_be_bytes(buf[0..4].try_into().unwrap()) as usize;
            let command_id = u32::from_be_bytes(buf[4..8].try_into().unwrap());
            let sequence = u32::from_be_bytes(buf[12..16].try_into().unwrap());
            if len < HEADER {
                return Err(Unframeable { sequence });
            }
            if len > MAX_PDU {
                // Skip it without buffering it: the peer learns why, the session goes on.
                self.discard = len;
                return Ok(Some(Incoming::Bad { sequence, status: CommandStatus::EsmeRinvcmdlen, command_id }));
            }
            if buf.len() < len {
                buf.reserve(len - buf.len());
                return Ok(None);
            }
            let mut frame = buf.split_to(len);
            let codec = self.codec.get_or_insert_with(|| CommandCodec::new().with_max_length(MAX_PDU));
            return Ok(Some(match codec.decode(&mut frame) {
                Ok(Some(cmd))
                    if matches!(cmd.id(), CommandId::Other(_)) || matches!(cmd.pdu(), Some(Pdu::Other { .. })) =>
                {
                    Incoming::Bad { sequence, status: CommandStatus::EsmeRinvcmdid, command_id }
                }
                Ok(Some(cmd)) => Incoming::Command(cmd),
                // The codec keeps state between calls; a failed PDU must not leak into the next.
                _ => {
                    self.codec = None;
                    let status = if CommandId::from(command_id) == CommandId::Other(command_id) {
                        CommandStatus::EsmeRinvcmdid
                    } else {
                        CommandStatus::EsmeRinvcmdlen
                    };
                    Incoming::Bad { sequence, status, command_id }
                }
            }));
        }
    }
}

/// Appends `cmd`, encoded, to `out`.
pub fn encode(cmd: &Command, out: &mut BytesMut) {
    // Encoding into a BytesMut cannot fail (the error type only carries I/O errors).
    let _ = CommandCodec::new().without_max_length().encode(cmd, out);
}

/// Appends a PDU whose body is already encoded (a queued submit_sm going to a vendor).
pub fn encode_raw(command_id: CommandId, sequence: u32, body: &[u8], out: &mut BytesMut) {
    out.reserve(HEADER + body.len());
    out.put_u32((HEADER + body.len()) as u32);
    out.put_u32(u32::from(command_id));
    out.put_u32(0);
    out.put_u32(sequence);
    out.put_slice(body);
}

/// The body of a PDU as it goes on the wire (header stripped).
pub fn body_bytes(cmd: &Command) -> BytesMut {
    let mut out = BytesMut::new();
    encode(cmd, &mut out);
    out.split_off(HEADER)
}

/// A C-string field from text (the terminating NUL added). Text that does not fit (too long,
/// not ASCII, an inner NUL) gives the empty string; callers check lengths where it matters.
pub fn cstr<const MIN: usize, const MAX: usize>(s: &str) -> rusmpp::types::COctetString<MIN, MAX> {
    rusmpp::types::COctetString::from_string(s.to_string()).unwrap_or_default()
}

pub fn generic_nack(sequence: u32, status: CommandStatus) -> Command {
    Command::new(status, sequence, Pdu::GenericNack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_bad_pdu_is_reported_and_the_next_one_still_decodes() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(0x0000_0015, 7, &[])); // enquire_link
        buf.extend_from_slice(&frame(0x0000_0004, 8, &[1, 2, 3])); // submit_sm, truncated body
        buf.extend_from_slice(&frame(0x0012_3456, 9, &[])); // unknown command id
        buf.extend_from_slice(&frame(0x0000_0015, 10, &[]));
        let mut r = Reader::default();
        let mut seen = Vec::new();
        while let Some(i) = r.next(&mut buf).unwrap() {
            seen.push(match i {
                Incoming::Command(c) => (c.sequence_number(), 0),
                Incoming::Bad { sequence, status, .. } => (sequence, u32::from(status)),
            });
        }
        assert_eq!(seen, vec![(7, 0), (8, 0x02), (9, 0x03), (10, 0)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversize_pdu_is_skipped_without_buffering_it() {
        let mut r = Reader::default();
        let mut buf = BytesMut::new();
        let huge = (MAX_PDU + 10) as u32;
        buf.extend_from_slice(&huge.to_be_bytes());
        buf.extend_from_slice(&4u32.to_be_bytes());
        buf.extend_from_slice(&0u32.to_be_bytes());
        buf.extend_from_slice(&5u32.to_be_bytes());
        match r.next(&mut buf).unwrap() {
            Some(Incoming::Bad { sequence: 5, status: CommandStatus::EsmeRinvcmdlen, .. }) => {}
            other => panic!("{other:?}"),
        }
        // The rest of it arrives in pieces and is dropped as it comes.
        let mut left = MAX_PDU + 10 - 16;
        while left > 0 {
            let n = left.min(4096);
            buf.extend_from_slice(&vec![0u8; n]);
            assert!(r.next(&mut buf).unwrap().is_none());
            assert!(buf.len() <= 4096);
            left -= n;
        }
        buf.extend_from_slice(&frame(0x0000_0015, 6, &[]));
        assert!(matches!(r.next(&mut buf).unwrap(), Some(Incoming::Command(c)) if c.sequence_number() == 6));
    }

    #[test]
    fn a_length_under_the_header_cannot_be_framed() {
        let mut buf = BytesMut::from(&frame(0x15, 3, &[])[..]);
        buf[3] = 8;
        assert_eq!(Reader::default().next(&mut buf).unwrap_err().sequence, 3);
    }

    #[test]
    fn raw_bodies_round_trip() {
        let cmd = Command::new(CommandStatus::EsmeRok, 42, Pdu::EnquireLink);
        let body = body_bytes(&cmd);
        let mut out = BytesMut::new();
        encode_raw(CommandId::EnquireLink, 42, &body, &mut out);
        let mut r = Reader::default();
        assert!(
            matches!(r.next(&mut out).unwrap(), Some(Incoming::Command(c)) if matches!(c.pdu(), Some(Pdu::EnquireLink)))
        );
    }
}
