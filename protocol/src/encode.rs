//! Reply encoding into one output buffer, in RESP2 or RESP3.
//!
//! Commands describe their reply in RESP3 terms (map, set, double, null, push); this writer
//! lowers them to RESP2 the way Redis does (`networking.c`): maps become flat arrays, sets
//! become arrays, doubles become bulk strings, booleans become integers, null becomes `$-1`
//! (or `*-1` for a null array).

use bytes::{BufMut, BytesMut};

use crate::num;

/// The output buffer of one connection plus the protocol version it speaks.
#[derive(Debug, Default)]
pub struct ReplyBuf {
    pub buf: BytesMut,
    resp3: bool,
}

impl ReplyBuf {
    pub fn new(resp3: bool) -> Self {
        ReplyBuf { buf: BytesMut::with_capacity(16 * 1024), resp3 }
    }

    pub fn resp3(&self) -> bool {
        self.resp3
    }

    pub fn set_resp3(&mut self, on: bool) {
        self.resp3 = on;
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drops everything written after `mark` (used to undo a half-written reply).
    pub fn truncate(&mut self, mark: usize) {
        self.buf.truncate(mark);
    }

    fn header(&mut self, prefix: u8, n: i64) {
        self.buf.put_u8(prefix);
        let mut b = itoa::Buffer::new();
        self.buf.extend_from_slice(b.format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// `+text`. The text must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        self.simple_bytes(s.as_bytes());
    }

    pub fn simple_bytes(&mut self, s: &[u8]) {
        self.buf.reserve(s.len() + 3);
        self.buf.put_u8(b'+');
        self.buf.extend_from_slice(s);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `-text`: `text` is the whole message including its code (`ERR ...`, `WRONGTYPE ...`).
    /// CR and LF are replaced by spaces, as Redis's `addReplyErrorLength` does, so an error
    /// can never break framing.
    pub fn error(&mut self, s: &str) {
        self.buf.reserve(s.len() + 3);
        self.buf.put_u8(b'-');
        for &c in s.as_bytes() {
            self.buf.put_u8(if c == b'\r' || c == b'\n' { b' ' } else { c });
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    pub fn bulk(&mut self, s: &[u8]) {
        self.buf.reserve(s.len() + 16);
        self.header(b'$', s.len() as i64);
        self.buf.extend_from_slice(s);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Null bulk string: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        self.buf.extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// Null array: `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(&mut self) {
        self.buf.extend_from_slice(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" });
    }

    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// A map of `n` pairs: `%n` in RESP3, an array of `2n` in RESP2.
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'%', n as i64);
        } else {
            self.header(b'*', 2 * n as i64);
        }
    }

    /// A set of `n` members: `~n` in RESP3, an array in RESP2.
    pub fn set(&mut self, n: usize) {
        self.header(if self.resp3 { b'~' } else { b'*' }, n as i64);
    }

    /// An out-of-band push of `n` items: `>n` in RESP3, an array in RESP2.
    pub fn push(&mut self, n: usize) {
        self.header(if self.resp3 { b'>' } else { b'*' }, n as i64);
    }

    /// A double, formatted `%.17g` as Redis 7.0 does; a bulk string in RESP2.
    pub fn double(&mut self, d: f64) {
        let mut s = Vec::with_capacity(24);
        num::fmt_g17(d, &mut s);
        if self.resp3 {
            self.buf.put_u8(b',');
            self.buf.extend_from_slice(&s);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(&s);
        }
    }

    /// A boolean: `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
    pub fn boolean(&mut self, b: bool) {
        if self.resp3 {
            self.buf.extend_from_slice(if b { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(b as i64);
        }
    }

    /// A verbatim string (`=len\r\ntxt:...`) in RESP3, a bulk string in RESP2.
    pub fn verbatim(&mut self, format: &str, s: &[u8]) {
        if self.resp3 {
            self.header(b'=', (s.len() + 4) as i64);
            self.buf.extend_from_slice(format.as_bytes());
            self.buf.put_u8(b':');
            self.buf.extend_from_slice(s);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(s);
        }
    }

    /// Already encoded bytes (cached replies, forwarded frames).
    pub fn raw(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
    }

    /// A list of bulk strings.
    pub fn bulks<I, B>(&mut self, items: I)
    where
        I: ExactSizeIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.array(items.len());
        for it in items {
            self.bulk(it.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_lowering() {
        let mut r = ReplyBuf::new(false);
        r.map(1);
        r.bulk(b"a");
        r.double(1.5);
        r.null();
        r.null_array();
        r.boolean(true);
        assert_eq!(&r.buf[..], b"*2\r\n$1\r\na\r\n$3\r\n1.5\r\n$-1\r\n*-1\r\n:1\r\n");
    }

    #[test]
    fn resp3_types() {
        let mut r = ReplyBuf::new(true);
        r.map(1);
        r.set(0);
        r.double(f64::INFINITY);
        r.null();
        r.boolean(false);
        r.verbatim("txt", b"hi");
        assert_eq!(&r.buf[..], b"%1\r\n~0\r\n,inf\r\n_\r\n#f\r\n=6\r\ntxt:hi\r\n");
    }

    #[test]
    fn errors_cannot_break_framing() {
        let mut r = ReplyBuf::new(false);
        r.error("ERR a\r\nb");
        assert_eq!(&r.buf[..], b"-ERR a  b\r\n");
    }
}
