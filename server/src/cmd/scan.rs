//! The SCAN family's shared machinery: cursor parsing, MATCH/COUNT/TYPE options, the reply
//! shape, and the stateless hash-ordered cursor used for large collections (HSCAN, SSCAN,
//! ZSCAN). The keyspace's own SCAN walks table slots instead (see `keyspace::table`).

use bytes::Bytes;

use super::args::{self, is};
use super::{err, CmdError};

/// Parses a SCAN cursor as Redis's `parseScanCursorOrReply` does with `strtoul`: an
/// optional sign (a negative value wraps around), decimal digits, nothing else; an empty
/// string is cursor 0.
pub fn parse_cursor(a: &[u8]) -> Result<u64, CmdError> {
    const INVALID: CmdError = CmdError::Static("ERR invalid cursor");
    let (neg, digits) = match a.first() {
        Some(b'-') => (true, &a[1..]),
        Some(b'+') => (false, &a[1..]),
        _ => (false, a),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(INVALID);
    }
    let mut v: u64 = 0;
    for &c in digits {
        v = v.checked_mul(10).and_then(|v| v.checked_add((c - b'0') as u64)).ok_or(INVALID)?;
    }
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// The MATCH and COUNT options of the SCAN family.
pub struct ScanOpts<'a> {
    pub count: usize,
    pub pattern: Option<&'a [u8]>,
    /// SCAN's TYPE filter (lower-case type name).
    pub type_: Option<String>,
}

impl<'a> ScanOpts<'a> {
    /// Parses `[MATCH pattern] [COUNT count]` (any order, repeats allowed, last wins), and
    /// `[TYPE type]` when `allow_type` (SCAN only).
    pub fn parse(opts: &'a [Bytes], allow_type: bool) -> Result<ScanOpts<'a>, CmdError> {
        let mut o = ScanOpts { count: 10, pattern: None, type_: None };
        let mut i = 0;
        while i < opts.len() {
            let has_value = i + 1 < opts.len();
            if is(&opts[i], "count") && has_value {
                let n = args::int(&opts[i + 1])?;
                if n < 1 {
                    return Err(err::SYNTAX);
                }
                o.count = usize::try_from(n).unwrap_or(usize::MAX);
            } else if is(&opts[i], "match") && has_value {
                let p = &opts[i + 1][..];
                // "*" matches everything; skip the matcher for it as Redis does.
                o.pattern = (p != b"*").then_some(p);
            } else if allow_type && is(&opts[i], "type") && has_value {
                o.type_ = Some(args::s(&opts[i + 1]).to_ascii_lowercase());
            } else {
                return Err(err::SYNTAX);
            }
            i += 2;
        }
        Ok(o)
    }

    pub fn matches(&self, s: &[u8]) -> bool {
        self.pattern.is_none_or(|p| args::glob_match(p, s, false))
    }
}

/// Replies `[cursor, [items...]]`.
pub fn reply_scan(out: &mut redoubt_protocol::ReplyBuf, cursor: u64, items: &[&[u8]]) {
    out.array(2);
    out.bulk(itoa::Buffer::new().format(cursor).as_bytes());
    out.array(items.len());
    for it in items {
        out.bulk(it);
    }
}

/// Where an element sits in the cursor space of a large collection: a fixed hash of its
/// bytes, in 1..=2^63. A scan returns elements in increasing position, so an element
/// present for the whole scan is returned exactly once whatever else is added or removed
/// meanwhile (Redis guarantees at least once), and cursor 0 is free to mean "done".
pub fn scan_pos(s: &[u8]) -> u64 {
    // FNV-1a, then a splitmix64 finaliser to spread the bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 1) + 1
}

/// One page of a scan over a large collection: the items whose position is at least
/// `cursor`, about `count` of them in position order, and the cursor of the next page
/// (0 when this was the last one). Items sharing a position always come in the same page.
pub fn scan_page<'a, T>(items: impl Iterator<Item = (&'a [u8], T)>, cursor: u64, count: usize) -> (Vec<T>, u64) {
    let mut cands: Vec<(u64, T)> = items.map(|(k, t)| (scan_pos(k), t)).filter(|(p, _)| *p >= cursor).collect();
    if cands.len() <= count {
        cands.sort_unstable_by_key(|c| c.0);
        return (cands.into_iter().map(|c| c.1).collect(), 0);
    }
    // Everything up to the position of the (count+1)-th item; a few more than `count`
    // only when positions collide.
    cands.select_nth_unstable_by_key(count, |c| c.0);
    let boundary = cands[count].0;
    let (mut page, rest): (Vec<_>, Vec<_>) = cands.into_iter().partition(|c| c.0 <= boundary);
    page.sort_unstable_by_key(|c| c.0);
    let next = rest.iter().map(|c| c.0).min().unwrap_or(0);
    (page.into_iter().map(|c| c.1).collect(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_like_strtoul() {
        assert_eq!(parse_cursor(b"0"), Ok(0));
        assert_eq!(parse_cursor(b""), Ok(0));
        assert_eq!(parse_cursor(b"+7"), Ok(7));
        assert_eq!(parse_cursor(b"-1"), Ok(u64::MAX));
        assert!(parse_cursor(b"18446744073709551616").is_err());
        assert!(parse_cursor(b" 1").is_err());
        assert!(parse_cursor(b"1x").is_err());
    }

    #[test]
    fn scan_pages_cover_everything_once() {
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("field:{i}").into_bytes()).collect();
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let (page, next) = scan_page(keys.iter().map(|k| (&k[..], k.clone())), cursor, 7);
            assert!(!page.is_empty() && page.len() <= 8);
            seen.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        seen.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(seen, want);
    }
}
