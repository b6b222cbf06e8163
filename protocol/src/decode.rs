//! The request decoder: Redis's request grammar with Redis's limits and error texts.
//!
//! Redis accepts two request forms (`networking.c`):
//!
//! * multibulk: `*<n>\r\n` then `n` times `$<len>\r\n<len bytes>\r\n`;
//! * inline: one text line split like a shell would (`sdssplitargs`), for telnet users.
//!
//! The decoder keeps its position inside a multibulk between calls, so bytes already parsed
//! are never looked at again, and a bulk of 100 MB arriving in 64 KB reads costs one length
//! comparison per read until it is complete. Every size is checked against [`Limits`] before
//! any memory is reserved for it.

use bytes::{Bytes, BytesMut};
use memchr::memchr;

use crate::num::parse_len;

/// Longest line Redis accepts for an inline request or a `*`/`$` header (`PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX: usize = 64 * 1024;
/// Bulk arguments at least this large get their whole size reserved up front
/// (`PROTO_MBULK_BIG_ARG`), so they are read with one allocation.
const BIG_ARG: usize = 32 * 1024;
/// Most bytes reserved ahead of data for one big argument; beyond this the buffer grows as
/// the bytes actually arrive.
const RESERVE_MAX: usize = 1024 * 1024;
/// Before authentication, Redis refuses multibulks longer than this...
const UNAUTH_MULTIBULK_MAX: i64 = 10;
/// ...and bulks longer than this.
const UNAUTH_BULK_MAX: i64 = 16384;

/// Hard limits applied while decoding; see `redis.conf`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `proto-max-bulk-len`: longest bulk argument (default 512 MB).
    pub max_bulk_len: i64,
    /// Largest multibulk count accepted (Redis: `INT_MAX`).
    pub max_multibulk_len: i64,
    /// `client-query-buffer-limit`: most bytes one unfinished request may buffer (default 1 GB).
    pub query_buffer_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as i64,
            query_buffer_limit: 1024 * 1024 * 1024,
        }
    }
}

/// Why a request stream cannot be decoded. Both close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Malformed input; the text is what Redis replies (after `-ERR `) before closing.
    #[error("Protocol error: {0}")]
    Malformed(String),
    /// An unfinished request grew past `client-query-buffer-limit`; Redis closes such a
    /// client without a reply.
    #[error("client query buffer exceeded {0} bytes")]
    QueryBufferLimit(usize),
}

impl ProtocolError {
    fn malformed(s: impl Into<String>) -> Self {
        ProtocolError::Malformed(s.into())
    }

    /// The error reply to send before closing, if any.
    pub fn reply_text(&self) -> Option<String> {
        match self {
            ProtocolError::Malformed(_) => Some(format!("ERR {self}")),
            ProtocolError::QueryBufferLimit(_) => None,
        }
    }
}

/// Where we are inside an unfinished multibulk request. Offsets are relative to the start of
/// the read buffer, which is only consumed when a whole request is complete.
#[derive(Debug, Default)]
struct Partial {
    /// Arguments still expected.
    remaining: usize,
    /// Byte ranges of the arguments parsed so far.
    args: Vec<(usize, usize)>,
    /// Next byte to look at.
    pos: usize,
    /// Length of the bulk whose header was parsed but whose payload is not complete yet.
    bulk_len: Option<usize>,
}

/// Decodes requests from a connection's read buffer. One per connection.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    partial: Option<Partial>,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder { limits, partial: None }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// True while a request has been started but not finished.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the next complete request from `buf`, consuming its bytes.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Empty requests (`*0`, `*-1`, blank
    /// inline lines) are skipped, as Redis does. `auth_required` applies Redis's tighter
    /// limits for clients that have not authenticated yet.
    pub fn decode(&mut self, buf: &mut BytesMut, auth_required: bool) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] != b'*' {
                    match self.decode_inline(buf)? {
                        Some(args) if args.is_empty() => continue,
                        other => return Ok(other),
                    }
                }
                // Multibulk header.
                let Some(cr) = memchr(b'\r', buf) else {
                    if buf.len() > INLINE_MAX {
                        return Err(ProtocolError::malformed("too big mbulk count string"));
                    }
                    return Ok(None);
                };
                if cr + 1 >= buf.len() {
                    return Ok(None);
                }
                let n = match parse_len(&buf[1..cr]) {
                    Some(n) if n <= self.limits.max_multibulk_len => n,
                    _ => return Err(ProtocolError::malformed("invalid multibulk length")),
                };
                if n > UNAUTH_MULTIBULK_MAX && auth_required {
                    return Err(ProtocolError::malformed("unauthenticated multibulk length"));
                }
                if n <= 0 {
                    let _ = buf.split_to(cr + 2);
                    continue;
                }
                self.partial = Some(Partial {
                    remaining: n as usize,
                    // Never trust the announced count for an allocation.
                    args: Vec::with_capacity((n as usize).min(1024)),
                    pos: cr + 2,
                    bulk_len: None,
                });
            }
            return self.continue_multibulk(buf, auth_required);
        }
    }

    fn continue_multibulk(
        &mut self,
        buf: &mut BytesMut,
        auth_required: bool,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let limits = self.limits;
        let p = self.partial.as_mut().expect("in a multibulk");
        while p.remaining > 0 {
            let len = match p.bulk_len {
                Some(len) => len,
                None => {
                    let rest = &buf[p.pos..];
                    let Some(cr) = memchr(b'\r', rest) else {
                        if rest.len() > INLINE_MAX {
                            return Err(ProtocolError::malformed("too big bulk count string"));
                        }
                        break;
                    };
                    if cr + 1 >= rest.len() {
                        break;
                    }
                    if rest[0] != b'$' {
                        return Err(ProtocolError::Malformed(format!("expected '$', got '{}'", rest[0] as char)));
                    }
                    let len = match parse_len(&rest[1..cr]) {
                        Some(n) if n >= 0 && n <= limits.max_bulk_len => n,
                        _ => return Err(ProtocolError::malformed("invalid bulk length")),
                    };
                    if len > UNAUTH_BULK_MAX && auth_required {
                        return Err(ProtocolError::malformed("unauthenticated bulk length"));
                    }
                    let len = len as usize;
                    p.pos += cr + 2;
                    p.bulk_len = Some(len);
                    if len >= BIG_ARG {
                        // Reserve room for a big argument in one step instead of growing
                        // read by read, but never more than RESERVE_MAX up front: a header
                        // alone must not make us allocate what the client never sends.
                        let want = (p.pos + len + 2).saturating_sub(buf.len()).min(RESERVE_MAX);
                        if want > 0 && p.pos + len + 2 <= limits.query_buffer_limit {
                            buf.reserve(want);
                        }
                    }
                    len
                }
            };
            if buf.len() < p.pos + len + 2 {
                break;
            }
            // Like Redis, the two bytes after the payload are skipped, not checked.
            p.args.push((p.pos, p.pos + len));
            p.pos += len + 2;
            p.bulk_len = None;
            p.remaining -= 1;
        }
        if p.remaining > 0 {
            let needed = p.pos + p.bulk_len.map_or(0, |l| l + 2);
            if buf.len().max(needed) > limits.query_buffer_limit {
                self.partial = None;
                return Err(ProtocolError::QueryBufferLimit(limits.query_buffer_limit));
            }
            return Ok(None);
        }
        let p = self.partial.take().expect("in a multibulk");
        let frame = buf.split_to(p.pos).freeze();
        Ok(Some(p.args.iter().map(|&(s, e)| frame.slice(s..e)).collect()))
    }

    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(nl) = memchr(b'\n', buf) else {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError::malformed("too big inline request"));
            }
            return Ok(None);
        };
        let line = buf.split_to(nl + 1);
        let mut end = nl;
        if end > 0 && line[end - 1] == b'\r' {
            end -= 1;
        }
        match split_args(&line[..end]) {
            Some(args) => Ok(Some(args.into_iter().map(Bytes::from).collect())),
            None => Err(ProtocolError::malformed("unbalanced quotes in request")),
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c)
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits a line into arguments like Redis's `sdssplitargs`: whitespace separates,
/// `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`, and a closing
/// quote must be followed by whitespace or the end. `None` means unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && hex_val(line[i + 2]).is_some()
                    && hex_val(line[i + 3]).is_some()
                {
                    cur.push(hex_val(line[i + 2])? * 16 + hex_val(line[i + 3])?);
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    in_dq = false;
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    in_sq = false;
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if is_space(c) => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        let _ = (in_dq, in_sq);
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = d.decode(&mut buf, false)? {
            out.push(args.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline() {
        let got = dec(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nset a \"b c\"\n").unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"PING".to_vec()],
                vec![b"set".to_vec(), b"a".to_vec(), b"b c".to_vec()],
            ]
        );
    }

    #[test]
    fn redis_error_texts() {
        let e = |b: &[u8]| dec(b).unwrap_err().reply_text().unwrap();
        assert_eq!(e(b"*x\r\n"), "ERR Protocol error: invalid multibulk length");
        assert_eq!(e(b"*1\r\n$-1\r\n"), "ERR Protocol error: invalid bulk length");
        assert_eq!(e(b"*1\r\n*1\r\n"), "ERR Protocol error: expected '$', got '*'");
        assert_eq!(e(b"set \"a\n"), "ERR Protocol error: unbalanced quotes in request");
        assert_eq!(e(b"*1\r\n$600000000\r\n"), "ERR Protocol error: invalid bulk length");
    }

    #[test]
    fn big_bulk_is_resumed_not_reparsed() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$100000\r\n"[..]);
        assert!(d.decode(&mut buf, false).unwrap().is_none());
        assert!(buf.capacity() >= 100_000);
        // A huge announced bulk reserves at most RESERVE_MAX before its bytes arrive.
        let mut d2 = RequestDecoder::default();
        let mut b2 = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$400000000\r\n"[..]);
        assert!(d2.decode(&mut b2, false).unwrap().is_none());
        assert!(b2.capacity() <= 2 * RESERVE_MAX);
        for _ in 0..99 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert!(d.decode(&mut buf, false).unwrap().is_none());
        }
        buf.extend_from_slice(&[b'x'; 1000]);
        buf.extend_from_slice(b"\r\n");
        let args = d.decode(&mut buf, false).unwrap().unwrap();
        assert_eq!(args[1].len(), 100_000);
        assert!(buf.is_empty());
    }

    #[test]
    fn query_buffer_limit() {
        let mut d = RequestDecoder::new(Limits { query_buffer_limit: 1000, ..Limits::default() });
        let mut buf = BytesMut::from(&b"*1\r\n$5000\r\n"[..]);
        assert!(matches!(d.decode(&mut buf, false), Err(ProtocolError::QueryBufferLimit(_))));
    }

    #[test]
    fn unauthenticated_limits() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf, true).unwrap_err().reply_text().unwrap(),
            "ERR Protocol error: unauthenticated multibulk length"
        );
    }

    #[test]
    fn empty_requests_are_skipped() {
        assert_eq!(dec(b"*0\r\n*-1\r\n\r\n\n*1\r\n$4\r\nPING\r\n").unwrap().len(), 1);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn run(chunks: &[&[u8]]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
        let limits = Limits { max_bulk_len: 1 << 16, max_multibulk_len: 1 << 12, query_buffer_limit: 1 << 20 };
        let mut d = RequestDecoder::new(limits);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match d.decode(&mut buf, false) {
                    Ok(Some(a)) => out.push(a.iter().map(|x| x.to_vec()).collect()),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    fn encode(cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut v = Vec::new();
        for c in cmds {
            v.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                v.extend_from_slice(a);
                v.extend_from_slice(b"\r\n");
            }
        }
        v
    }

    proptest! {
        /// Well-formed multibulks decode to exactly what was encoded, however they are split.
        #[test]
        fn round_trip_any_chunking(
            cmds in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6), 1..8),
            step in 1usize..50,
        ) {
            let wire = encode(&cmds);
            let pieces: Vec<&[u8]> = wire.chunks(step).collect();
            let (got, err) = run(&pieces);
            prop_assert!(err.is_none());
            prop_assert_eq!(got, cmds);
        }

        /// Arbitrary bytes never panic, and chunking never changes the outcome.
        #[test]
        fn garbage_is_handled_the_same_whole_or_split(data in prop::collection::vec(any::<u8>(), 0..300), step in 1usize..20) {
            let whole = run(&[&data]);
            let pieces: Vec<&[u8]> = data.chunks(step).collect();
            let split = run(&pieces);
            prop_assert_eq!(whole, split);
        }
    }
}
