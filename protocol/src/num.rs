//! Number parsing and formatting with Redis's exact rules.
//!
//! Clients compare replies byte for byte, so "what counts as an integer" and "how a double is
//! printed" must match Redis (`util.c`: `string2ll`, `string2d`, `%.17g`).

/// Parses a signed 64-bit integer the way Redis's `string2ll` does: optional `-`, no `+`,
/// no leading zeros (except "0" itself), no spaces, at most 20 bytes, no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = if s[0] == b'-' { (true, &s[1..]) } else { (false, s) };
    if digits.is_empty() || !(b'1'..=b'9').contains(&digits[0]) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > (i64::MAX as u64) + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Parses an unsigned length (as in `$123`), rejecting anything `parse_i64` rejects.
pub fn parse_len(s: &[u8]) -> Option<i64> {
    parse_i64(s)
}

/// Parses a double the way Redis's `string2d`/`getDoubleFromObject` do: `strtod` semantics,
/// no leading space, no trailing garbage, no NaN; "inf"/"+inf"/"-inf" accepted.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s[0].is_ascii_whitespace() || s.len() > 5120 {
        return None;
    }
    let st = std::str::from_utf8(s).ok()?;
    let lower = st.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => {
            // Rust's parser accepts a few spellings strtod does not ("infinity" handled above;
            // "nan" must be rejected) and rejects hex floats, which Redis accepts but no client
            // sends. Reject anything with characters strtod would not consume.
            if lower.contains("nan") || lower.contains("inf") {
                return None;
            }
            st.parse::<f64>().ok()?
        }
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

/// Formats a double as C's `printf("%.17g")` does; Redis 7.0 uses this for every double
/// reply (`ZSCORE`, `WITHSCORES`, RESP3 doubles).
pub fn fmt_g17(d: f64, out: &mut Vec<u8>) {
    if d.is_infinite() {
        out.extend_from_slice(if d > 0.0 { b"inf" } else { b"-inf" });
        return;
    }
    fmt_c(d, b"%.17g\0", out)
}

/// Formats with an explicit C format taking one double. Used for the handful of places
/// where Redis prints doubles in other ways (`%.17g`, `%.*g`).
fn fmt_c(d: f64, fmt: &[u8], out: &mut Vec<u8>) {
    let mut buf = [0u8; 400];
    // SAFETY: buf is large enough for any %.17g rendering of a double (at most ~25 bytes),
    // and fmt is NUL-terminated with exactly one double conversion.
    let n = unsafe {
        libc::snprintf(buf.as_mut_ptr() as *mut libc::c_char, buf.len(), fmt.as_ptr() as *const libc::c_char, d)
    };
    let n = (n.max(0) as usize).min(buf.len() - 1);
    out.extend_from_slice(&buf[..n]);
}

/// `%.17g` into a fresh `String`-like byte vector.
pub fn g17(d: f64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    fmt_g17(d, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string2ll_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"01"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b" 1"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b""), None);
    }

    #[test]
    fn doubles_print_like_c() {
        assert_eq!(g17(1.1), b"1.1000000000000001");
        assert_eq!(g17(3.0), b"3");
        assert_eq!(g17(f64::INFINITY), b"inf");
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
    }
}
