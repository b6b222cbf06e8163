//! Bitmap commands on string values (Redis's `bitops.c`): SETBIT, GETBIT, BITCOUNT, BITPOS,
//! BITOP, BITFIELD, BITFIELD_RO.
//!
//! Bit 0 is the most significant bit of the first byte. Strings grow with zero bytes when a
//! write addresses a bit past their end; a string touched by a write becomes a growable
//! (`raw`) buffer, as Redis unshares it into a raw sds.

use bytes::Bytes;
use redoubt_protocol::num::parse_i64;

use super::args::{as_str, is};
use super::flags::*;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::keyspace::{notify, Blob, Keyspace, Value};

pub const COMMANDS: &[Spec] = &[
    Spec::new("setbit", 4, WRITE | DENYOOM, (1, 1, 1), "bitmap", setbit),
    Spec::new("getbit", 3, READONLY | FAST, (1, 1, 1), "bitmap", getbit),
    Spec::new("bitcount", -2, READONLY, (1, 1, 1), "bitmap", bitcount),
    Spec::new("bitpos", -3, READONLY, (1, 1, 1), "bitmap", bitpos),
    Spec::new("bitop", -4, WRITE | DENYOOM, (2, -1, 1), "bitmap", bitop),
    Spec::new("bitfield", -2, WRITE | DENYOOM, (1, 1, 1), "bitmap", bitfield),
    Spec::new("bitfield_ro", -2, READONLY | FAST, (1, 1, 1), "bitmap", bitfield_ro),
];

const OFFSET_ERR: CmdError = CmdError::Static("ERR bit offset is not an integer or out of range");
const BIT_ERR: CmdError = CmdError::Static("ERR bit is not an integer or out of range");
const TYPE_ERR: CmdError = CmdError::Static(
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
);

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// A bit offset argument (`getBitOffsetFromArgument`). With `hash_bits > 0` (BITFIELD) the
/// `#N` form means "the N-th field of that width". Offsets are capped so the string can't
/// outgrow `proto-max-bulk-len` (512MB by default, i.e. offsets below 2^32).
fn bit_offset(ctx: &Ctx, a: &[u8], hash_bits: u32) -> Result<u64, CmdError> {
    let use_hash = hash_bits > 0 && a.first() == Some(&b'#');
    let digits = if use_hash { &a[1..] } else { a };
    let mut off = parse_i64(digits).ok_or(OFFSET_ERR)?;
    if use_hash {
        // Redis multiplies in C without an overflow check; wrap the same way.
        off = off.wrapping_mul(hash_bits as i64);
    }
    let max_bytes = ctx.srv.config.read().proto_max_bulk_len;
    if off < 0 || (off as u64 >> 3) >= max_bytes {
        return Err(OFFSET_ERR);
    }
    Ok(off as u64)
}

/// The string at `key` for a bit write, created or zero-padded so that `max_bit` is
/// addressable (`lookupStringForBitCommand`). Returns the buffer and whether it was created
/// or grown (a "dirty" write even when no bit changes).
fn string_for_write<'a>(
    ks: &'a mut Keyspace,
    db: usize,
    key: &[u8],
    max_bit: u64,
) -> Result<(&'a mut Vec<u8>, bool), CmdError> {
    let need = (max_bit >> 3) as usize + 1;
    let (e, created) = ks.entry_or_insert(db, key, || Value::Str(Blob::Buf(Box::default())));
    let Value::Str(blob) = &mut e.value else { return Err(err::WRONGTYPE) };
    let v = blob.make_mut();
    let grown = v.len() < need;
    if grown {
        v.resize(need, 0);
    }
    Ok((v, created || grown))
}

/// Announces a bit write: WATCH, keyspace event, replication.
fn touched(ctx: &mut Ctx, argv: &[Bytes], key: &[u8]) {
    ctx.ks.signal_modified(ctx.db, key);
    ctx.ks.notify(notify::STRING, "setbit", ctx.db, key);
    ctx.propagate(argv);
}

/// Redis's bitmap range arithmetic shared by BITCOUNT and BITPOS: normalises `start..=end`
/// (bytes, or bits with `is_bit`) against a string of `len` bytes. Returns the byte range
/// plus masks of the bits of the first and last byte that lie outside a bit range.
struct Range {
    start: i64,
    end: i64,
    first_mask: u8,
    last_mask: u8,
}

fn normalise(mut start: i64, mut end: i64, len: i64, is_bit: bool) -> Range {
    let total = if is_bit { len << 3 } else { len };
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    let (mut first_mask, mut last_mask) = (0u8, 0u8);
    if is_bit && start <= end {
        first_mask = !((1u32 << (8 - (start & 7))) - 1) as u8;
        last_mask = ((1u32 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    Range { start, end, first_mask, last_mask }
}

/// BIT or BYTE unit keyword.
fn unit_is_bit(a: &[u8]) -> Result<bool, CmdError> {
    if is(a, "bit") {
        Ok(true)
    } else if is(a, "byte") {
        Ok(false)
    } else {
        Err(err::SYNTAX)
    }
}

fn popcount(s: &[u8]) -> i64 {
    s.iter().map(|b| b.count_ones() as i64).sum()
}

/// Position of the first bit equal to `bit` (`redisBitpos`). Past the end the string counts
/// as zero-padded: looking for 0 in all-ones bytes gives the first bit after them, looking
/// for 1 in all-zero bytes gives -1.
fn first_bit(s: &[u8], bit: bool) -> i64 {
    for (i, &b) in s.iter().enumerate() {
        let b = if bit { b } else { !b };
        if b != 0 {
            return (i as i64) * 8 + b.leading_zeros() as i64;
        }
    }
    if bit {
        -1
    } else {
        s.len() as i64 * 8
    }
}

// ---------------------------------------------------------------------------------------
// SETBIT / GETBIT
// ---------------------------------------------------------------------------------------

fn setbit(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let off = bit_offset(ctx, &argv[2], 0)?;
    let on = match parse_i64(&argv[3]) {
        Some(v @ (0 | 1)) => v == 1,
        _ => return Err(BIT_ERR),
    };
    let key = &argv[1];
    let (v, dirty) = string_for_write(ctx.ks, ctx.db, key, off)?;
    let byte = (off >> 3) as usize;
    let mask = 1u8 << (7 - (off & 7));
    let old = v[byte] & mask != 0;
    if on {
        v[byte] |= mask;
    } else {
        v[byte] &= !mask;
    }
    // A no-op write (same bit, no growth) is not a change: no event, no replication.
    if dirty || old != on {
        touched(ctx, argv, key);
    }
    ctx.out.int(old as i64);
    Ok(())
}

fn getbit(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let off = bit_offset(ctx, &argv[2], 0)?;
    let bit = match ctx.ks.read(ctx.db, &argv[1]) {
        None => false,
        Some(e) => {
            let s = as_str(e)?;
            let byte = (off >> 3) as usize;
            byte < s.len() && s[byte] & (1 << (7 - (off & 7))) != 0
        }
    };
    ctx.out.int(bit as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// BITCOUNT / BITPOS
// ---------------------------------------------------------------------------------------

/// BITCOUNT key [start end [BYTE|BIT]]
fn bitcount(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    // Redis looks the key up before parsing the range: a missing key answers 0 even when
    // the arguments are malformed.
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.int(0);
        return Ok(());
    };
    let s = as_str(e)?;
    let range = match argv.len() {
        2 => Range { start: 0, end: s.len() as i64 - 1, first_mask: 0, last_mask: 0 },
        4 | 5 => {
            let start = super::args::int(&argv[2])?;
            let end = super::args::int(&argv[3])?;
            if start < 0 && end < 0 && start > end {
                ctx.out.int(0);
                return Ok(());
            }
            let is_bit = argv.len() == 5 && unit_is_bit(&argv[4])?;
            normalise(start, end, s.len() as i64, is_bit)
        }
        _ => return Err(err::SYNTAX),
    };
    let count = if range.start > range.end {
        0
    } else {
        let (a, b) = (range.start as usize, range.end as usize);
        // Count whole bytes, then take back the bits outside a bit range.
        popcount(&s[a..=b])
            - (s[a] & range.first_mask).count_ones() as i64
            - (s[b] & range.last_mask).count_ones() as i64
    };
    ctx.out.int(count);
    Ok(())
}

/// BITPOS key bit [start [end [BYTE|BIT]]]
fn bitpos(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let bit = match super::args::int(&argv[2])? {
        0 => false,
        1 => true,
        _ => return Err(CmdError::Static("ERR The bit argument must be 1 or 0.")),
    };
    // A missing key is an infinite run of zeros.
    let Some(e) = ctx.ks.read(ctx.db, &argv[1]) else {
        ctx.out.int(if bit { -1 } else { 0 });
        return Ok(());
    };
    let s = as_str(e)?;
    let len = s.len() as i64;
    let mut end_given = false;
    let range = match argv.len() {
        3 => Range { start: 0, end: len - 1, first_mask: 0, last_mask: 0 },
        4..=6 => {
            let start = super::args::int(&argv[3])?;
            let is_bit = argv.len() == 6 && unit_is_bit(&argv[5])?;
            let end = if argv.len() >= 5 {
                end_given = true;
                super::args::int(&argv[4])?
            } else if is_bit {
                (len << 3) + 7
            } else {
                len - 1
            };
            normalise(start, end, len, is_bit)
        }
        _ => return Err(err::SYNTAX),
    };
    let pos = if range.start > range.end { -1 } else { bitpos_in(s, &range, bit, end_given) };
    ctx.out.int(pos);
    Ok(())
}

/// BITPOS over a normalised, non-empty range.
fn bitpos_in(s: &[u8], r: &Range, bit: bool, end_given: bool) -> i64 {
    let (start, end) = (r.start as usize, r.end as usize);
    // Bits outside a bit range are forced to the value we are *not* looking for.
    let hide = |b: u8, mask: u8| if bit { b & !mask } else { b | mask };
    let mut bytes = s[start..=end].to_vec();
    let last = bytes.len() - 1;
    bytes[0] = hide(bytes[0], r.first_mask);
    bytes[last] = hide(bytes[last], r.last_mask);
    let pos = first_bit(&bytes, bit);
    // With an explicit end, a clear bit is not assumed right after the range.
    if end_given && !bit && pos == bytes.len() as i64 * 8 {
        return -1;
    }
    if pos == -1 {
        -1
    } else {
        pos + (start as i64) * 8
    }
}

// ---------------------------------------------------------------------------------------
// BITOP
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum BitOp {
    And,
    Or,
    Xor,
    Not,
}

/// BITOP AND|OR|XOR|NOT destkey key [key ...]
fn bitop(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let op = match &argv[1] {
        a if is(a, "and") => BitOp::And,
        a if is(a, "or") => BitOp::Or,
        a if is(a, "xor") => BitOp::Xor,
        a if is(a, "not") => BitOp::Not,
        _ => return Err(err::SYNTAX),
    };
    if op == BitOp::Not && argv.len() != 4 {
        return Err(CmdError::Static("ERR BITOP NOT must be called with a single source key."));
    }
    let mut srcs: Vec<Option<Blob>> = Vec::with_capacity(argv.len() - 3);
    for k in &argv[3..] {
        let v = match ctx.ks.read(ctx.db, k) {
            None => None,
            Some(e) => Some(as_str(e)?.clone()),
        };
        srcs.push(v);
    }
    let res = combine(op, &srcs);
    let dest = &argv[2];
    let len = res.len();
    if len > 0 {
        ctx.ks.set(ctx.db, dest, Value::Str(Blob::Buf(Box::new(res))), false);
        ctx.ks.notify(notify::STRING, "set", ctx.db, dest);
        ctx.propagate(argv);
    } else if ctx.ks.delete(ctx.db, dest) {
        ctx.ks.notify(notify::GENERIC, "del", ctx.db, dest);
        ctx.propagate(argv);
    }
    ctx.out.int(len as i64);
    Ok(())
}

/// The byte-wise operation; missing keys and short strings count as zero bytes.
fn combine(op: BitOp, srcs: &[Option<Blob>]) -> Vec<u8> {
    let byte = |i: usize, j: usize| srcs[i].as_ref().and_then(|s| s.get(j).copied()).unwrap_or(0);
    let max = srcs.iter().map(|s| s.as_ref().map_or(0, |s| s.len())).max().unwrap_or(0);
    (0..max)
        .map(|j| {
            let first = byte(0, j);
            match op {
                BitOp::Not => !first,
                BitOp::And => (1..srcs.len()).fold(first, |acc, i| acc & byte(i, j)),
                BitOp::Or => (1..srcs.len()).fold(first, |acc, i| acc | byte(i, j)),
                BitOp::Xor => (1..srcs.len()).fold(first, |acc, i| acc ^ byte(i, j)),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// BITFIELD
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum FieldOp {
    Get,
    Set,
    IncrBy,
}

#[derive(Clone, Copy, Debug)]
struct FieldCmd {
    op: FieldOp,
    offset: u64,
    /// SET value or INCRBY increment.
    value: i64,
    overflow: Overflow,
    bits: u32,
    signed: bool,
}

fn bitfield(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    bitfield_generic(ctx, argv, false)
}

fn bitfield_ro(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    bitfield_generic(ctx, argv, true)
}

/// `bitfieldGeneric`: parse every operation first, then run them in order against one
/// string, replying with one entry per GET/SET/INCRBY.
fn bitfield_generic(ctx: &mut Ctx, argv: &[Bytes], ro_command: bool) -> CmdResult {
    let ops = parse_field_ops(ctx, argv)?;
    let key = &argv[1];
    let writes = ops.iter().any(|o| o.op != FieldOp::Get);
    if !writes {
        let src = match ctx.ks.read(ctx.db, key) {
            None => None,
            Some(e) => Some(as_str(e)?),
        };
        let src: &[u8] = src.map_or(&[], |b| b);
        ctx.out.array(ops.len());
        for op in &ops {
            ctx.out.int(get_field(src, op));
        }
        return Ok(());
    }
    if ro_command {
        return Err(CmdError::Static("ERR BITFIELD_RO only supports the GET subcommand"));
    }
    let highest = ops.iter().filter(|o| o.op != FieldOp::Get).map(|o| o.offset + o.bits as u64 - 1).max().unwrap_or(0);
    let (buf, dirty) = string_for_write(ctx.ks, ctx.db, key, highest)?;
    ctx.out.array(ops.len());
    let mut changes = 0;
    for op in &ops {
        if op.op == FieldOp::Get {
            ctx.out.int(get_field(buf, op));
            continue;
        }
        match write_field(buf, op) {
            Some((reply, changed)) => {
                ctx.out.int(reply);
                if dirty || changed {
                    changes += 1;
                }
            }
            None => ctx.out.null(),
        }
    }
    if changes > 0 {
        touched(ctx, argv, key);
    } else if dirty {
        // Redis creates/pads the key but does not count it as a change when every write
        // failed; replicas still need the same key, so the command is replicated anyway.
        ctx.propagate(argv);
    }
    Ok(())
}

fn parse_field_ops(ctx: &Ctx, argv: &[Bytes]) -> Result<Vec<FieldCmd>, CmdError> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < argv.len() {
        let rem = argv.len() - j - 1;
        let sub = &argv[j];
        let op = if is(sub, "get") && rem >= 2 {
            FieldOp::Get
        } else if is(sub, "set") && rem >= 3 {
            FieldOp::Set
        } else if is(sub, "incrby") && rem >= 3 {
            FieldOp::IncrBy
        } else if is(sub, "overflow") && rem >= 1 {
            overflow = match &argv[j + 1] {
                a if is(a, "wrap") => Overflow::Wrap,
                a if is(a, "sat") => Overflow::Sat,
                a if is(a, "fail") => Overflow::Fail,
                _ => return Err(CmdError::Static("ERR Invalid OVERFLOW type specified")),
            };
            j += 2;
            continue;
        } else {
            return Err(err::SYNTAX);
        };
        let (signed, bits) = field_type(&argv[j + 1])?;
        let offset = bit_offset(ctx, &argv[j + 2], bits)?;
        let value = if op == FieldOp::Get { 0 } else { super::args::int(&argv[j + 3])? };
        ops.push(FieldCmd { op, offset, value, overflow, bits, signed });
        j += if op == FieldOp::Get { 3 } else { 4 };
    }
    Ok(ops)
}

/// `i1`..`i64` or `u1`..`u63` (u64 can't be replied as a RESP integer).
fn field_type(a: &[u8]) -> Result<(bool, u32), CmdError> {
    let signed = match a.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(TYPE_ERR),
    };
    let bits = parse_i64(&a[1..]).ok_or(TYPE_ERR)?;
    let max = if signed { 64 } else { 63 };
    if !(1..=max).contains(&bits) {
        return Err(TYPE_ERR);
    }
    Ok((signed, bits as u32))
}

/// Reads `bits` bits at `offset` as an unsigned number; the bytes must exist.
fn get_unsigned(p: &[u8], offset: u64, bits: u32) -> u64 {
    (0..bits as u64).fold(0u64, |v, j| {
        let o = offset + j;
        let bit = (p[(o >> 3) as usize] >> (7 - (o & 7))) & 1;
        (v << 1) | bit as u64
    })
}

fn get_signed(p: &[u8], offset: u64, bits: u32) -> i64 {
    let v = get_unsigned(p, offset, bits);
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        // Sign-extend two's complement.
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

fn set_unsigned(p: &mut [u8], offset: u64, bits: u32, value: u64) {
    for j in 0..bits as u64 {
        let on = value & (1u64 << (bits as u64 - 1 - j)) != 0;
        let o = offset + j;
        let mask = 1u8 << (7 - (o & 7));
        let b = &mut p[(o >> 3) as usize];
        *b = if on { *b | mask } else { *b & !mask };
    }
}

/// GET: reads through a zero-padded copy of the (up to 9) bytes involved, so fields past
/// the end of the string (or of a missing key) read as zeros.
fn get_field(src: &[u8], op: &FieldCmd) -> i64 {
    let byte = (op.offset >> 3) as usize;
    let mut buf = [0u8; 9];
    if byte < src.len() {
        let n = (src.len() - byte).min(9);
        buf[..n].copy_from_slice(&src[byte..byte + n]);
    }
    let off = op.offset & 7;
    if op.signed {
        get_signed(&buf, off, op.bits)
    } else {
        get_unsigned(&buf, off, op.bits) as i64
    }
}

/// SET or INCRBY on a buffer long enough for the field. Returns None when the overflow
/// policy is FAIL and the result does not fit (nothing written), else (reply, changed):
/// the old value for SET, the new value for INCRBY.
fn write_field(buf: &mut [u8], op: &FieldCmd) -> Option<(i64, bool)> {
    let incr = op.op == FieldOp::IncrBy;
    if op.signed {
        let old = get_signed(buf, op.offset, op.bits);
        let (base, delta) = if incr { (old, op.value) } else { (op.value, 0) };
        let (overflow, limit) = signed_overflow(base, delta, op.bits, op.overflow);
        if overflow && op.overflow == Overflow::Fail {
            return None;
        }
        let new = if overflow { limit } else { base.wrapping_add(delta) };
        set_unsigned(buf, op.offset, op.bits, new as u64);
        Some((if incr { new } else { old }, old != new))
    } else {
        let old = get_unsigned(buf, op.offset, op.bits);
        let (base, delta) = if incr { (old, op.value) } else { (op.value as u64, 0) };
        let (overflow, limit) = unsigned_overflow(base, delta, op.bits, op.overflow);
        if overflow && op.overflow == Overflow::Fail {
            return None;
        }
        let new = if overflow { limit } else { base.wrapping_add(delta as u64) };
        set_unsigned(buf, op.offset, op.bits, new);
        Some((if incr { new as i64 } else { old as i64 }, old != new))
    }
}

/// `checkUnsignedBitfieldOverflow`: does `value + incr` fit in `bits` unsigned bits? If not,
/// the value to store under WRAP (modulo 2^bits) or SAT (clamped).
fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> (bool, u64) {
    let max = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let max_incr = max.wrapping_sub(value) as i64;
    let min_incr = value.wrapping_neg() as i64;
    let wrapped = || value.wrapping_add(incr as u64) & !(u64::MAX.checked_shl(bits).unwrap_or(0));
    if value > max || (incr > 0 && incr > max_incr) {
        (true, if ow == Overflow::Sat { max } else { wrapped() })
    } else if incr < 0 && incr < min_incr {
        (true, if ow == Overflow::Sat { 0 } else { wrapped() })
    } else {
        (false, 0)
    }
}

/// `checkSignedBitfieldOverflow`: the signed counterpart; WRAP wraps into the two's
/// complement range of `bits` bits.
fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> (bool, i64) {
    let max = if bits == 64 { i64::MAX } else { (1i64 << (bits - 1)) - 1 };
    let min = -max - 1;
    let max_incr = (max as u64).wrapping_sub(value as u64) as i64;
    let min_incr = min.wrapping_sub(value);
    let wrapped = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        c as i64
    };
    if value > max || (bits != 64 && incr > max_incr) || (value >= 0 && incr > 0 && incr > max_incr) {
        (true, if ow == Overflow::Sat { max } else { wrapped() })
    } else if value < min || (bits != 64 && incr < min_incr) || (value < 0 && incr < 0 && incr < min_incr) {
        (true, if ow == Overflow::Sat { min } else { wrapped() })
    } else {
        (false, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bit_pads_with_zeros() {
        assert_eq!(first_bit(&[0xff, 0xf0], true), 0);
        assert_eq!(first_bit(&[0x00, 0x01], true), 15);
        assert_eq!(first_bit(&[0x00, 0x00], true), -1);
        assert_eq!(first_bit(&[0xff, 0xff], false), 16);
        assert_eq!(first_bit(&[0xff, 0xfe], false), 15);
        assert_eq!(first_bit(&[], false), 0);
    }

    #[test]
    fn field_roundtrip() {
        let mut buf = vec![0u8; 2];
        set_unsigned(&mut buf, 7, 5, 23);
        assert_eq!(buf, [0b0000_0001, 0b0111_0000]);
        assert_eq!(get_unsigned(&buf, 7, 5), 23);
        set_unsigned(&mut buf, 0, 8, 0xff);
        assert_eq!(get_signed(&buf, 0, 8), -1);
        assert_eq!(get_signed(&buf, 0, 4), -1);
    }

    #[test]
    fn overflow_rules() {
        // u8: 250 + 10
        assert_eq!(unsigned_overflow(250, 10, 8, Overflow::Wrap), (true, 4));
        assert_eq!(unsigned_overflow(250, 10, 8, Overflow::Sat), (true, 255));
        assert_eq!(unsigned_overflow(5, -10, 8, Overflow::Sat), (true, 0));
        assert_eq!(unsigned_overflow(5, -10, 8, Overflow::Wrap), (true, 251));
        assert!(!unsigned_overflow(5, 10, 8, Overflow::Wrap).0);
        // i8: 120 + 10, -120 - 10
        assert_eq!(signed_overflow(120, 10, 8, Overflow::Wrap), (true, -126));
        assert_eq!(signed_overflow(120, 10, 8, Overflow::Sat), (true, 127));
        assert_eq!(signed_overflow(-120, -10, 8, Overflow::Sat), (true, -128));
        assert_eq!(signed_overflow(i64::MAX, 1, 64, Overflow::Wrap), (true, i64::MIN));
        assert_eq!(signed_overflow(1000, 0, 8, Overflow::Sat), (true, 127));
    }

    #[test]
    fn ranges() {
        let r = normalise(0, -1, 3, false);
        assert_eq!((r.start, r.end), (0, 2));
        let r = normalise(5, 20, 3, true);
        assert_eq!((r.start, r.end, r.first_mask, r.last_mask), (0, 2, 0b1111_1000, 0b0000_0111));
    }
}
