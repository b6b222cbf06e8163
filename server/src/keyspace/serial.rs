//! A compact binary encoding of values, for DUMP/RESTORE (and, later, snapshots).
//!
//! `tag, then lengths as LEB128 varints, then raw bytes`; doubles as 8 little-endian bytes.
//! Reading never trusts a length for an allocation: sizes are checked against the bytes
//! actually left, so a hostile payload cannot make us reserve memory it does not carry.

use std::collections::VecDeque;

use super::{Blob, Hash, Set, Value, ZSet};

const STR: u8 = 0;
const LIST: u8 = 1;
const HASH: u8 = 2;
const SET: u8 = 3;
const ZSET: u8 = 4;

/// Appends a LEB128 length (public so tests can craft hostile payloads).
pub fn put_len(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(s) => {
            out.push(STR);
            put_bytes(out, s);
        }
        Value::List(l) => {
            out.push(LIST);
            put_len(out, l.len() as u64);
            l.iter().for_each(|e| put_bytes(out, e));
        }
        Value::Hash(h) => {
            out.push(HASH);
            put_len(out, h.len() as u64);
            for (k, v) in h.iter() {
                put_bytes(out, k);
                put_bytes(out, v);
            }
        }
        Value::Set(s) => {
            out.push(SET);
            put_len(out, s.len() as u64);
            s.for_each(|m| put_bytes(out, m));
        }
        Value::ZSet(z) => {
            out.push(ZSET);
            put_len(out, z.len() as u64);
            for (score, m) in z.tree.iter() {
                put_bytes(out, m);
                out.extend_from_slice(&score.0.to_le_bytes());
            }
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&x, rest) = self.b.split_first()?;
        self.b = rest;
        Some(x)
    }

    fn len(&mut self) -> Option<usize> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            n |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(n).ok();
            }
        }
        None
    }

    /// A count of items, each at least `min` bytes: bounded by what is left.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.len()?;
        (n.checked_mul(min)? <= self.b.len()).then_some(n)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        if n > self.b.len() {
            return None;
        }
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Some(x)
    }

    fn f64(&mut self) -> Option<f64> {
        if self.b.len() < 8 {
            return None;
        }
        let (x, rest) = self.b.split_at(8);
        self.b = rest;
        let v = f64::from_le_bytes(x.try_into().ok()?);
        (!v.is_nan()).then_some(v)
    }
}

/// Decodes a value written by [`write_value`]; None if malformed or trailing bytes remain.
pub fn read_value(b: &[u8]) -> Option<Value> {
    let mut r = Reader { b };
    let v = match r.u8()? {
        STR => Value::Str(Blob::new(r.bytes()?)),
        LIST => {
            let n = r.count(1)?;
            let mut l = VecDeque::with_capacity(n);
            for _ in 0..n {
                l.push_back(Blob::new(r.bytes()?));
            }
            Value::List(Box::new(l))
        }
        HASH => {
            let n = r.count(2)?;
            let mut h = Hash::default();
            for _ in 0..n {
                let k = r.bytes()?;
                h.set(k, r.bytes()?);
            }
            Value::Hash(Box::new(h))
        }
        SET => {
            let n = r.count(1)?;
            let mut s = Set::default();
            for _ in 0..n {
                s.insert(r.bytes()?);
            }
            Value::Set(Box::new(s))
        }
        ZSET => {
            let n = r.count(9)?;
            let mut z = ZSet::default();
            for _ in 0..n {
                let m = r.bytes()?;
                z.insert(m, r.f64()?);
            }
            Value::ZSet(Box::new(z))
        }
        _ => return None,
    };
    if !r.b.is_empty() || v.is_empty_collection() {
        return None;
    }
    Some(v)
}

/// 64-bit FNV-1a: detects corrupted or foreign payloads.
pub fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &c| (h ^ c as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_lengths() {
        let mut z = ZSet::default();
        z.insert(b"a", 1.5);
        z.insert(b"b", -2.0);
        let mut out = Vec::new();
        write_value(&Value::ZSet(Box::new(z)), &mut out);
        match read_value(&out) {
            Some(Value::ZSet(z)) => assert_eq!(z.score(b"a"), Some(1.5)),
            other => panic!("{other:?}"),
        }
        // A list claiming 2^60 items in a 12-byte payload must be refused, not allocated.
        let hostile = [LIST, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0];
        assert!(read_value(&hostile).is_none());
    }
}
