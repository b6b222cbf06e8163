//! FUNCTION DUMP / FUNCTION RESTORE payloads in Redis 7's own format, so libraries move
//! between Redis and redoubt in both directions (a migration path, and how operators back
//! libraries up today):
//!
//! ```text
//! ( 0xF5 <rdb string: library code> )*  <rdb version: u16 LE>  <crc64 of all before: u64 LE>
//! ```
//!
//! The RDB string is a length-prefixed byte string, or an integer, or LZF-compressed (Redis
//! compresses strings over 20 bytes when `rdbcompression` is on, its default). We write
//! plain strings, which every Redis accepts, and read all three.

/// `RDB_OPCODE_FUNCTION2`: one library, as its code.
const OPCODE_FUNCTION: u8 = 0xF5;
/// `RDB_OPCODE_FUNCTION_PRE_GA`: the 7.0 release candidates' format, which Redis refuses.
const OPCODE_FUNCTION_PRE_GA: u8 = 0xF6;
/// The RDB version Redis 7.0 writes; payloads from a newer format are refused, as Redis does.
const RDB_VERSION: u16 = 10;

pub const BAD_PAYLOAD: &str = "ERR DUMP payload version or checksum are wrong";

/// The payload holding these libraries' code.
pub fn dump<'a>(codes: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for code in codes {
        out.push(OPCODE_FUNCTION);
        put_rdb_len(&mut out, code.len() as u64);
        out.extend_from_slice(code);
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The libraries' code in a payload, or Redis's error text.
pub fn parse(payload: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if payload.len() < 10 {
        return Err(BAD_PAYLOAD.into());
    }
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let crc = u64::from_le_bytes(footer[2..].try_into().expect("8 bytes"));
    if version > RDB_VERSION || crc64(0, &payload[..payload.len() - 8]) != crc {
        return Err(BAD_PAYLOAD.into());
    }
    let mut r = Reader { b: body };
    let mut codes = Vec::new();
    while !r.b.is_empty() {
        match r.u8()? {
            OPCODE_FUNCTION => codes.push(r.string()?),
            OPCODE_FUNCTION_PRE_GA => return Err("ERR Pre-GA function format not supported".into()),
            _ => return Err("ERR given type is not a function".into()),
        }
    }
    Ok(codes)
}

fn put_rdb_len(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if n <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

const TRUNCATED: &str = "ERR Failed loading library code";

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.b.len() {
            return Err(TRUNCATED.into());
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A length, or the special encoding (`0xC0 | kind`) when the top bits say so.
    fn len(&mut self) -> Result<(u64, bool), String> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => ((first & 0x3f) as u64, false),
            1 => ((((first & 0x3f) as u64) << 8) | self.u8()? as u64, false),
            2 if first == 0x80 => (u32::from_be_bytes(self.take(4)?.try_into().expect("4")) as u64, false),
            2 if first == 0x81 => (u64::from_be_bytes(self.take(8)?.try_into().expect("8")), false),
            2 => return Err(TRUNCATED.into()),
            _ => ((first & 0x3f) as u64, true),
        })
    }

    fn string(&mut self) -> Result<Vec<u8>, String> {
        let (n, special) = self.len()?;
        if !special {
            return Ok(self.take(usize::try_from(n).map_err(|_| TRUNCATED)?)?.to_vec());
        }
        match n {
            0 => Ok((self.u8()? as i8).to_string().into_bytes()),
            1 => Ok(i16::from_le_bytes(self.take(2)?.try_into().expect("2")).to_string().into_bytes()),
            2 => Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4")).to_string().into_bytes()),
            3 => {
                let (clen, _) = self.len()?;
                let (ulen, _) = self.len()?;
                let clen = usize::try_from(clen).map_err(|_| TRUNCATED)?;
                let ulen = usize::try_from(ulen).map_err(|_| TRUNCATED)?;
                lzf_decompress(self.take(clen)?, ulen).ok_or_else(|| TRUNCATED.to_string())
            }
            _ => Err(TRUNCATED.into()),
        }
    }
}

/// LZF decompression (the format of liblzf, which Redis bundles): a control byte below 32
/// copies that many + 1 literal bytes; otherwise its top 3 bits are a match length (7 means
/// "read one more length byte") and the rest, with the next byte, a back-reference offset.
/// `None` for anything that does not produce exactly `expected` bytes; the output never
/// grows past `expected`, whatever the input claims.
fn lzf_decompress(input: &[u8], expected: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(expected.min(input.len().saturating_mul(256)));
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = input.get(i..i + n)?;
            if out.len() + n > expected {
                return None;
            }
            out.extend_from_slice(lit);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *input.get(i)? as usize + 1;
            i += 1;
            len += 2;
            if back > out.len() || out.len() + len > expected {
                return None;
            }
            // Byte by byte: a match may overlap the bytes it is producing.
            let start = out.len() - back;
            for k in 0..len {
                out.push(out[start + k]);
            }
        }
    }
    (out.len() == expected).then_some(out)
}

/// CRC-64/Jones, reflected, as Redis's `crc64` (its check value for "123456789" is
/// 0xe9c6d914c4b8d9ca).
fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        const POLY: u64 = 0x95AC_9329_AC4B_C9B5;
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    for &b in data {
        crc = table[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_redis() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn dump_matches_redis_byte_for_byte() {
        // FUNCTION DUMP of this library on redis-server 7.0.15 (a code under 64 bytes would
        // not be compressed; this one is 70 bytes and Redis still stores it plain because
        // LZF saves too little).
        let code = b"#!lua name=lib1\nredis.register_function('f1', function() return 1 end)";
        let redis: &[u8] = b"\xf5@F#!lua name=lib1\nredis.register_function('f1', function() return 1 end)\n\x00\x98\xfaC\x9b\xf0\xa7\xa5\xa2";
        assert_eq!(dump([&code[..]].into_iter()), redis);
        assert_eq!(parse(redis).unwrap(), vec![code.to_vec()]);
    }

    #[test]
    fn reads_lzf_compressed_strings() {
        // FUNCTION DUMP from redis-server 7.0.15 of a library whose code LZF shrinks.
        let redis: &[u8] = b"\xf5\xc3@\xc8A\x04\x1f#!lua name=lib2\nredis.register_f\x07unction{\xc0\x08\x00_`*\x0e'st', callback=\xc0\x1c\x18() return 1 end, flags={' (\x07ow-oom',\xa0\x0b\x04stale \r\x05no-clu@k \x0c\x80&\x0ecross-slot-keys \x17 $\x10writes'}, descrip@\x95\x05='hi'}\xe0\x0f\xb3\x02('w \xa4\xe0\x00\x9b@K\x05, args\xe0\x05\xa5\x01)\n\n\x00\t\xb4\xe4#;\xef\x80W";
        let codes = parse(redis).unwrap();
        assert_eq!(codes.len(), 1);
        let code = String::from_utf8(codes[0].clone()).unwrap();
        assert!(code.starts_with("#!lua name=lib2\nredis.register_function{function_name='st'"), "{code}");
        assert!(code.ends_with("redis.register_function('w', function(keys, args) return 1 end)\n"), "{code}");
        assert_eq!(code.len(), 260);
    }

    #[test]
    fn refuses_what_redis_refuses() {
        let good = dump([&b"#!lua name=x\n"[..]].into_iter());
        assert_eq!(parse(b"short").unwrap_err(), BAD_PAYLOAD);
        let mut bad_crc = good.clone();
        bad_crc[3] ^= 1;
        assert_eq!(parse(&bad_crc).unwrap_err(), BAD_PAYLOAD);
        // A newer RDB version, correctly checksummed, is refused too.
        let mut newer = good[..good.len() - 10].to_vec();
        newer.extend_from_slice(&11u16.to_le_bytes());
        let crc = crc64(0, &newer);
        newer.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(parse(&newer).unwrap_err(), BAD_PAYLOAD);
        let reseal = |body: &[u8]| {
            let mut p = body.to_vec();
            p.extend_from_slice(&RDB_VERSION.to_le_bytes());
            let crc = crc64(0, &p);
            p.extend_from_slice(&crc.to_le_bytes());
            p
        };
        assert_eq!(parse(&reseal(b"")).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(parse(&reseal(b"\x05\x01a")).unwrap_err(), "ERR given type is not a function");
        assert_eq!(parse(&reseal(b"\xf6\x01a")).unwrap_err(), "ERR Pre-GA function format not supported");
        // Lengths past the end, hostile LZF: errors, never panics or huge allocations.
        assert!(parse(&reseal(b"\xf5\x81\xff\xff\xff\xff\xff\xff\xff\xff")).is_err());
        assert!(parse(&reseal(b"\xf5\xc3\x02\x80\xff\xff\xff\xff\x20\x00")).is_err());
        for cut in 0..good.len() {
            let _ = parse(&reseal(&good[..cut]));
        }
    }

    #[test]
    fn lzf_back_references_may_overlap() {
        // "a" then a match of 9 bytes at distance 1: ten "a"s.
        assert_eq!(lzf_decompress(&[0x00, b'a', 0xe0, 0x00, 0x00], 10).unwrap(), b"aaaaaaaaaa");
        assert!(lzf_decompress(&[0x00, b'a', 0xe0, 0x00, 0x00], 9).is_none());
        assert!(lzf_decompress(&[0x20, 0x05], 3).is_none(), "a reference before the start");
    }
}
