//! Binary encodings of what replication writes down: a batch of operations (one Raft log
//! entry's payload) and a snapshot of the whole keyspace.
//!
//! Both are plain length-prefixed bytes (LEB128 lengths, as DUMP uses; values through
//! `keyspace::serial`), decoded without trusting any length for an allocation: a corrupt
//! file or a hostile peer yields an error, never a panic or a huge reservation.

use std::io::{self, Read};

use bytes::Bytes;

use super::session::{Last, Sessions};
use crate::keyspace::{serial, Blob, Keyspace, Op};

const BATCH_VERSION: u8 = 1;
/// Version 2 added the forwarding session table after the header, version 3 the FUNCTION
/// libraries after it; older files still load.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RDBTSNP3";
const SNAPSHOT_MAGIC_V2: &[u8; 8] = b"RDBTSNP2";
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"RDBTSNP1";

/// Which leadership stint produced a batch, and the sequence number of its first operation.
/// A node skips operations it already holds (see `replication::sm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub epoch: u64,
    pub first_seq: u64,
}

/// Encodes a batch of operations into one log entry payload.
pub fn encode_batch(origin: Origin, ops: &[Op]) -> Vec<u8> {
    let size: usize = ops.iter().map(|o| 16 + o.argv.iter().map(|a| a.len() + 5).sum::<usize>()).sum();
    let mut out = Vec::with_capacity(32 + size);
    out.push(BATCH_VERSION);
    out.extend_from_slice(&origin.epoch.to_le_bytes());
    out.extend_from_slice(&origin.first_seq.to_le_bytes());
    serial::put_len(&mut out, ops.len() as u64);
    for op in ops {
        serial::put_len(&mut out, op.db as u64);
        out.extend_from_slice(&op.now_ms.to_le_bytes());
        serial::put_len(&mut out, op.argv.len() as u64);
        for a in &op.argv {
            serial::put_bytes(&mut out, a);
        }
    }
    out
}

/// The epoch and the sequence number of the last op of a batch, from its header alone.
pub fn batch_last(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.len() < 18 || payload[0] != BATCH_VERSION {
        return None;
    }
    let epoch = u64::from_le_bytes(payload[1..9].try_into().ok()?);
    let first = u64::from_le_bytes(payload[9..17].try_into().ok()?);
    let mut n = 0u64;
    for (i, &b) in payload[17..].iter().take(10).enumerate() {
        n |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return (n > 0).then(|| (epoch, first + n - 1));
        }
    }
    None
}

/// Decodes a payload written by [`encode_batch`]; arguments borrow from `payload`.
pub fn decode_batch(payload: &Bytes) -> io::Result<(Origin, Vec<Op>)> {
    let mut r = Cursor { b: payload, pos: 0 };
    if r.u8()? != BATCH_VERSION {
        return Err(bad("unknown batch version"));
    }
    let origin = Origin { epoch: r.u64()?, first_seq: r.u64()? };
    let n = r.count(10)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let db = r.len()? as usize;
        let now_ms = r.u64()? as i64;
        let argc = r.count(1)?;
        let mut argv = Vec::with_capacity(argc);
        for _ in 0..argc {
            let len = r.len()? as usize;
            argv.push(r.slice(len)?);
        }
        if argv.is_empty() {
            return Err(bad("empty operation"));
        }
        ops.push(Op { db, now_ms, argv });
    }
    if r.pos != payload.len() {
        return Err(bad("trailing bytes in batch"));
    }
    Ok((origin, ops))
}

/// A reader over encoded bytes that never trusts a length (also used for forwarded
/// commands in `cluster`).
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a Bytes,
    pub(crate) pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.b.len() - self.pos < n {
            return Err(bad("truncated batch"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub(crate) fn len(&mut self) -> io::Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            n |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(bad("bad length"))
    }
    /// A count of items of at least `min_size` bytes each, bounded by what is left.
    pub(crate) fn count(&mut self, min_size: usize) -> io::Result<usize> {
        let n = self.len()? as usize;
        if n > (self.b.len() - self.pos) / min_size.max(1) {
            return Err(bad("count larger than the batch"));
        }
        Ok(n)
    }
    pub(crate) fn slice(&mut self, n: usize) -> io::Result<Bytes> {
        if self.b.len() - self.pos < n {
            return Err(bad("truncated batch"));
        }
        let s = self.b.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(s)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// What a snapshot holds besides the keys: the replication watermark (which operations of
/// which epoch the state already includes), the Raft adapter's own bookkeeping and the
/// forwarding sessions (replicated state too: see `session`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub epoch: u64,
    pub seq: u64,
    pub raft_state: Vec<u8>,
    pub sessions: Sessions,
}

/// Writes the whole keyspace: header, then `db, key, expiry, value` records, then an end
/// mark and a checksum of everything before it.
pub fn write_snapshot(ks: &Keyspace, header: &SnapshotHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&header.epoch.to_le_bytes());
    out.extend_from_slice(&header.seq.to_le_bytes());
    serial::put_bytes(out, &header.raft_state);
    let sessions = header.sessions.records();
    serial::put_len(out, sessions.len() as u64);
    for ((origin, client), last) in sessions {
        out.extend_from_slice(&origin.to_le_bytes());
        out.extend_from_slice(&client.to_le_bytes());
        out.extend_from_slice(&last.seq.to_le_bytes());
        out.extend_from_slice(&last.at_ms.to_le_bytes());
        serial::put_bytes(out, &last.reply);
    }
    serial::put_len(out, ks.libraries.len() as u64);
    for (name, code) in ks.libraries.iter() {
        serial::put_bytes(out, name.as_bytes());
        serial::put_bytes(out, code);
    }
    serial::put_len(out, ks.dbs.len() as u64);
    for (db, d) in ks.dbs.iter().enumerate() {
        for (_, e) in d.table.iter() {
            out.push(1);
            serial::put_len(out, db as u64);
            serial::put_bytes(out, &e.key);
            out.extend_from_slice(&e.expire_at.to_le_bytes());
            let mark = out.len();
            // The value is length-prefixed so a reader can hand `read_value` exactly its bytes.
            out.extend_from_slice(&[0; 5]);
            serial::write_value(&e.value, out);
            let len = out.len() - mark - 5;
            patch_len5(&mut out[mark..mark + 5], len as u64);
        }
    }
    out.push(0);
    let crc = serial::checksum(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// A fixed 5-byte LEB128 (padded with continuation bytes), patched in after the value.
fn patch_len5(dst: &mut [u8], mut n: u64) {
    for (i, b) in dst.iter_mut().enumerate() {
        *b = (n & 0x7f) as u8 | if i < 4 { 0x80 } else { 0 };
        n >>= 7;
    }
}

/// Reads a snapshot into `ks` (which must be empty), returning its header. Values whose
/// expiry has passed are loaded anyway: expiry is the leader's decision, made by an
/// operation in the log.
pub fn read_snapshot(ks: &mut Keyspace, r: &mut dyn Read) -> io::Result<SnapshotHeader> {
    let mut data = Vec::new();
    r.read_to_end(&mut data)?;
    let version = match data.get(..8) {
        Some(m) if m == SNAPSHOT_MAGIC => 3,
        Some(m) if m == SNAPSHOT_MAGIC_V2 => 2,
        Some(m) if m == SNAPSHOT_MAGIC_V1 => 1,
        _ => 0,
    };
    if version == 0 || data.len() < SNAPSHOT_MAGIC.len() + 8 {
        return Err(bad("not a redoubt snapshot"));
    }
    let body_len = data.len() - 8;
    if serial::checksum(&data[..body_len]).to_le_bytes() != data[body_len..] {
        return Err(bad("snapshot checksum mismatch"));
    }
    let body = Bytes::from(data).slice(8..body_len);
    let mut c = Cursor { b: &body, pos: 0 };
    let mut header =
        SnapshotHeader { epoch: c.u64()?, seq: c.u64()?, raft_state: c.bytes_vec()?, sessions: Sessions::default() };
    if version >= 2 {
        for _ in 0..c.count(33)? {
            let id = (c.u64()?, c.u64()?);
            let (seq, at_ms) = (c.u64()?, c.u64()? as i64);
            let n = c.len()? as usize;
            let reply = c.slice(n)?;
            header.sessions.insert(id, Last { seq, reply, at_ms });
        }
    }
    if version >= 3 {
        let mut libraries = std::collections::BTreeMap::new();
        for _ in 0..c.count(2)? {
            let name = String::from_utf8(c.bytes_vec()?).map_err(|_| bad("bad library name in snapshot"))?;
            let n = c.len()? as usize;
            libraries.insert(name, c.slice(n)?);
        }
        ks.libraries.replace_all(libraries);
    }
    let dbs = c.len()? as usize;
    if dbs > ks.dbs.len() {
        return Err(bad("snapshot has more databases than configured"));
    }
    loop {
        match c.u8()? {
            0 => break,
            1 => {}
            _ => return Err(bad("bad snapshot record")),
        }
        let db = c.len()? as usize;
        if db >= ks.dbs.len() {
            return Err(bad("snapshot database out of range"));
        }
        let klen = c.len()? as usize;
        let key = c.take(klen)?.to_vec();
        let expire_at = c.u64()? as i64;
        let vlen = c.len()? as usize;
        let value = serial::read_value(c.take(vlen)?).ok_or_else(|| bad("bad value in snapshot"))?;
        if !ks.load_entry(db, Blob::new(&key), value, expire_at) {
            return Err(bad("duplicate key in snapshot"));
        }
    }
    if c.pos != body.len() {
        return Err(bad("trailing bytes in snapshot"));
    }
    Ok(header)
}

impl Cursor<'_> {
    fn bytes_vec(&mut self) -> io::Result<Vec<u8>> {
        let n = self.len()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(db: usize, args: &[&str]) -> Op {
        Op { db, now_ms: 1_700_000_000_123, argv: args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect() }
    }

    #[test]
    fn batch_round_trip() {
        let ops = vec![op(0, &["SET", "k", "v", "PXAT", "1"]), op(15, &["DEL", ""]), op(3, &["FLUSHALL"])];
        let origin = Origin { epoch: 42, first_seq: 7 };
        let enc = Bytes::from(encode_batch(origin, &ops));
        let (o, back) = decode_batch(&enc).unwrap();
        assert_eq!(o, origin);
        assert_eq!(batch_last(&enc), Some((42, 9)));
        assert_eq!(back.len(), 3);
        for (a, b) in ops.iter().zip(&back) {
            assert_eq!((a.db, a.now_ms, &a.argv), (b.db, b.now_ms, &b.argv));
        }
        // Every truncation is an error, never a panic.
        for cut in 0..enc.len() {
            assert!(decode_batch(&enc.slice(..cut)).is_err());
        }
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let mut ks = Keyspace::new(16);
        ks.now_ms = 1000;
        ks.set(0, b"a", crate::keyspace::Value::Str(Blob::new(b"1")), false);
        ks.set(5, b"b", crate::keyspace::Value::Str(Blob::new(&[7u8; 300])), false);
        ks.set_expire(5, b"b", 99_999);
        let mut sessions = Sessions::default();
        sessions.record((1, 2), 3, Bytes::from_static(b"+OK\r\n"), 500);
        let header = SnapshotHeader { epoch: 3, seq: 9, raft_state: b"meta".to_vec(), sessions };
        let mut libs = std::collections::BTreeMap::new();
        libs.insert("mylib".to_string(), Bytes::from_static(b"#!lua name=mylib\nreturn"));
        ks.libraries.replace_all(libs.clone());
        let mut out = Vec::new();
        write_snapshot(&ks, &header, &mut out);
        let mut back = Keyspace::new(16);
        let h = read_snapshot(&mut back, &mut &out[..]).unwrap();
        assert_eq!(h, header);
        assert_eq!(back.libraries.to_map(), libs);
        ks.libraries.replace_all(Default::default());
        assert_eq!(back.dbs[0].table.len() + back.dbs[5].table.len(), 2);
        back.now_ms = 1000;
        assert_eq!(back.expire_at(5, b"b"), Some(99_999));
        let mut bad = out.clone();
        bad[20] ^= 1;
        assert!(read_snapshot(&mut Keyspace::new(16), &mut &bad[..]).is_err());

        // A version 1 file (written before sessions existed) and a version 2 file (before
        // libraries) still load.
        let mut plain = Vec::new();
        write_snapshot(&ks, &SnapshotHeader { sessions: Sessions::default(), ..header.clone() }, &mut plain);
        let count_at = 8 + 16 + 1 + header.raft_state.len();
        assert_eq!(plain[count_at..count_at + 2], [0, 0], "the empty session and library counts");
        let reseal = |mut f: Vec<u8>, magic: &[u8; 8], drop: usize| {
            f[..8].copy_from_slice(magic);
            f.drain(count_at + 2 - drop..count_at + 2);
            f.truncate(f.len() - 8);
            let crc = serial::checksum(&f);
            f.extend_from_slice(&crc.to_le_bytes());
            f
        };
        let v2 = reseal(plain.clone(), SNAPSHOT_MAGIC_V2, 1);
        let mut back = Keyspace::new(16);
        let h = read_snapshot(&mut back, &mut &v2[..]).unwrap();
        assert_eq!((h.epoch, h.seq, h.sessions.len(), back.libraries.len()), (3, 9, 0, 0));
        let v1 = reseal(plain, SNAPSHOT_MAGIC_V1, 2);
        let h = read_snapshot(&mut Keyspace::new(16), &mut &v1[..]).unwrap();
        assert_eq!((h.epoch, h.seq, h.sessions.len()), (3, 9, 0));
    }
}
