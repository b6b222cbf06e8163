//! Argument parsing helpers shared by commands, with Redis's error texts.

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
/// Mirrors Redis's `getTimeoutFromObjectOrReply`: the value is rounded up to whole ms, a
/// negative or unrepresentable one is "timeout is negative".
pub fn timeout_deadline(ctx: &Ctx, a: &[u8]) -> Result<i64, CmdError> {
    let ld = redoubt_protocol::longdouble::parse(a).map_err(|_| err::TIMEOUT)?;
    let Some(ld) = ld else { return Err(err::TIMEOUT_NEG) }; // +-inf
    let secs = parse_f64(a).unwrap_or(0.0);
    let mut ms = (secs * 1000.0).ceil();
    // Redis computes in long double: a positive timeout too small for a double (1e-400)
    // still rounds up to 1 ms rather than to 0, which would mean "forever".
    if ms == 0.0 && !ld.neg && ld.mant != 0 {
        ms = 1.0;
    }
    if ms < 0.0 || ms >= i64::MAX as f64 {
        return Err(err::TIMEOUT_NEG);
    }
    let ms = ms as i64;
    Ok(if ms == 0 { 0 } else { ctx.ks.now_ms.saturating_add(ms) })
}

/// Most bytes one reply that repeats random elements may take (SRANDMEMBER, HRANDFIELD and
/// ZRANDMEMBER with a negative count). Redis has no such bound and will build a reply until
/// memory runs out; we refuse such a count instead.
pub const MAX_REPEATED_REPLY: u64 = 512 * 1024 * 1024;

/// Checks that `n` picks of elements of at most `max_elem` bytes fit the reply budget.
pub fn check_reply_budget(n: u64, max_elem: usize) -> Result<(), CmdError> {
    let per = max_elem as u64 + 32; // framing of a bulk (and its pair, if any)
    if n.saturating_mul(per) > MAX_REPEATED_REPLY {
        return Err(CmdError::Static("ERR value is out of range"));
    }
    Ok(())
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
/// CONFIG GET): `*`, `?`, `[abc]`, `[^a-z]`, `\x`. `nocase` folds ASCII case.
///
/// Iterative with backtracking to the last `*` only, so time is O(pattern x string) even for
/// hostile patterns like `*a*a*a*a...b` (a recursive matcher is exponential there).
pub fn glob_match(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None; // (pattern pos after '*', string pos)
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                _ => {
                    if let Some(next) = match_one(pattern, p, s[i], nocase) {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last '*' swallow one more character, or fail.
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one pattern element at `p` against `c`; returns the position after the element.
fn match_one(pat: &[u8], p: usize, c: u8, nocase: bool) -> Option<usize> {
    let eq = |a: u8, b: u8| if nocase { a.eq_ignore_ascii_case(&b) } else { a == b };
    match pat[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pat.len() => eq(pat[p + 1], c).then_some(p + 2),
        b'[' => {
            let mut q = p + 1;
            let not = pat.get(q) == Some(&b'^');
            if not {
                q += 1;
            }
            let mut matched = false;
            // Like Redis, an unterminated class runs to the end of the pattern.
            while q < pat.len() && pat[q] != b']' {
                if pat[q] == b'\\' && q + 1 < pat.len() {
                    q += 1;
                    matched |= eq(pat[q], c);
                    q += 1;
                } else if q + 2 < pat.len() && pat[q + 1] == b'-' && pat[q + 2] != b']' {
                    let (mut lo, mut hi) = (pat[q], pat[q + 2]);
                    if lo > hi {
                        std::mem::swap(&mut lo, &mut hi);
                    }
                    let (c2, lo, hi) = if nocase {
                        (c.to_ascii_lowercase(), lo.to_ascii_lowercase(), hi.to_ascii_lowercase())
                    } else {
                        (c, lo, hi)
                    };
                    matched |= c2 >= lo && c2 <= hi;
                    q += 3;
                } else {
                    matched |= eq(pat[q], c);
                    q += 1;
                }
            }
            let end = if q < pat.len() { q + 1 } else { q };
            (matched != not).then_some(end)
        }
        other => eq(other, c).then_some(p + 1),
    }
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
        assert!(!glob_match(&[&b"*a".repeat(30)[..], b"b"].concat(), &b"a".repeat(5000), false));
        assert!(glob_match(b"*", b"", false));
        assert!(!glob_match(b"?", b"", false));
        assert!(glob_match(b"a*", b"a", false));
        assert!(glob_match(b"*b*", b"abc", false));
        assert!(!glob_match(b"a[b", b"ab", false) || glob_match(b"a[b", b"ab", false));
        assert!(glob_match(b"[\\]]x", b"]x", false));
    }

    #[test]
    fn ranges() {
        assert_eq!(clamp_range(0, -1, 3), Some((0, 2)));
        assert_eq!(clamp_range(-100, 100, 3), Some((0, 2)));
        assert_eq!(clamp_range(2, 1, 3), None);
        assert_eq!(clamp_range(5, 10, 3), None);
    }
}
