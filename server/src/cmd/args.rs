//! Argument parsing helpers shared by commands, with Redis's error texts.

use bytes::Bytes;
use redoubt_protocol::num::{parse_f64, parse_i64};

use super::{err, CmdError, Ctx};
use crate::keyspace::{Entry, Value};

/// Integer argument (`ERR value is not an integer or out of range`).
pub fn int(a: &[u8]) -> Result<i64, CmdError> {
    parse_i64(a).ok_or(err::NOT_INT)
}

/// Float argument (`ERR value is not a valid float`).
pub fn float(a: &[u8]) -> Result<f64, CmdError> {
    parse_f64(a).ok_or(err::NOT_FLOAT)
}

/// Non-negative integer with a custom error when negative.
pub fn positive_or(a: &[u8], e: CmdError) -> Result<i64, CmdError> {
    let v = int(a)?;
    if v < 0 {
        Err(e)
    } else {
        Ok(v)
    }
}

/// Case-insensitive keyword comparison.
#[inline]
pub fn is(a: &[u8], kw: &str) -> bool {
    a.eq_ignore_ascii_case(kw.as_bytes())
}

/// Lossy string for messages.
pub fn s(a: &[u8]) -> String {
    String::from_utf8_lossy(a).into_owned()
}

/// A blocking timeout in seconds (may be fractional) -> absolute deadline in ms (0 = none).
pub fn timeout_deadline(ctx: &Ctx, a: &[u8]) -> Result<i64, CmdError> {
    let secs = parse_f64(a).filter(|v| v.is_finite()).ok_or(err::TIMEOUT)?;
    if secs < 0.0 {
        return Err(err::TIMEOUT_NEG);
    }
    let ms = (secs * 1000.0).ceil();
    if ms > (i64::MAX / 2) as f64 {
        return Err(err::TIMEOUT);
    }
    Ok(if ms == 0.0 { 0 } else { ctx.ks.now_ms + ms as i64 })
}

/// Redis's start/end index normalisation for LRANGE/GETRANGE/ZRANGE: returns the inclusive
/// range within `0..len`, or None if empty.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize))
}

/// Typed access to an entry's value, with WRONGTYPE on mismatch.
macro_rules! typed {
    ($fn:ident, $fn_mut:ident, $variant:ident, $t:ty) => {
        pub fn $fn(e: &Entry) -> Result<&$t, CmdError> {
            match &e.value {
                Value::$variant(v) => Ok(v),
                _ => Err(err::WRONGTYPE),
            }
        }
        pub fn $fn_mut(e: &mut Entry) -> Result<&mut $t, CmdError> {
            match &mut e.value {
                Value::$variant(v) => Ok(v),
                _ => Err(err::WRONGTYPE),
            }
        }
    };
}

typed!(as_str, as_str_mut, Str, crate::keyspace::Blob);
typed!(as_list, as_list_mut, List, std::collections::VecDeque<crate::keyspace::Blob>);
typed!(as_hash, as_hash_mut, Hash, crate::keyspace::Hash);
typed!(as_set, as_set_mut, Set, crate::keyspace::Set);
typed!(as_zset, as_zset_mut, ZSet, crate::keyspace::ZSet);

/// Glob-style matching as Redis's `stringmatchlen` (used by KEYS, SCAN MATCH, PSUBSCRIBE,
/// CONFIG GET). `nocase` folds ASCII case.
pub fn glob_match(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    glob(pattern, s, nocase, 0)
}

fn glob(mut p: &[u8], mut s: &[u8], nocase: bool, depth: usize) -> bool {
    // Redis bounds recursion to protect the stack from patterns like "*a*a*a*...".
    if depth > 1000 {
        return false;
    }
    let eq = |a: u8, b: u8| if nocase { a.eq_ignore_ascii_case(&b) } else { a == b };
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..=s.len() {
                    if glob(&p[1..], &s[i..], nocase, depth + 1) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                s = &s[1..];
                p = &p[1..];
                continue;
            }
            b'[' => {
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    if p.is_empty() {
                        break;
                    }
                    if p[0] == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        if eq(p[0], s[0]) {
                            matched = true;
                        }
                    } else if p[0] == b']' {
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        let (mut lo, mut hi) = (p[0], p[2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        let c = s[0];
                        let (c, lo, hi) = if nocase {
                            (c.to_ascii_lowercase(), lo.to_ascii_lowercase(), hi.to_ascii_lowercase())
                        } else {
                            (c, lo, hi)
                        };
                        if c >= lo && c <= hi {
                            matched = true;
                        }
                        p = &p[2..];
                    } else if eq(p[0], s[0]) {
                        matched = true;
                    }
                    p = &p[1..];
                }
                // p now at ']' or empty
                if !p.is_empty() {
                    p = &p[1..];
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                continue;
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if !eq(p[0], s[0]) {
                    return false;
                }
            }
            c => {
                if !eq(c, s[0]) {
                    return false;
                }
            }
        }
        s = &s[1..];
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// Copies an argument into an owned `Bytes` detached from the read buffer (so storing it
/// does not pin the whole buffer).
pub fn owned(a: &Bytes) -> Bytes {
    Bytes::copy_from_slice(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything", false));
        assert!(glob_match(b"h?llo", b"hello", false));
        assert!(glob_match(b"h[ae]llo", b"hallo", false));
        assert!(!glob_match(b"h[^e]llo", b"hello", false));
        assert!(glob_match(b"h[a-b]llo", b"hbllo", false));
        assert!(glob_match(b"user:*:name", b"user:42:name", false));
        assert!(!glob_match(b"user:*:name", b"user:42:age", false));
        assert!(glob_match(b"a\\*b", b"a*b", false));
        assert!(glob_match(b"MAXMEM*", b"maxmemory", true));
        assert!(!glob_match(&b"*a".repeat(50), &b"a".repeat(40), false));
    }

    #[test]
    fn ranges() {
        assert_eq!(clamp_range(0, -1, 3), Some((0, 2)));
        assert_eq!(clamp_range(-100, 100, 3), Some((0, 2)));
        assert_eq!(clamp_range(2, 1, 3), None);
        assert_eq!(clamp_range(5, 10, 3), None);
    }
}
