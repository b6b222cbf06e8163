//! Redis's `long double` arithmetic for INCRBYFLOAT and HINCRBYFLOAT, in software.
//!
//! Redis parses, adds and prints these increments as C `long double` (x87 80-bit: a 64-bit
//! mantissa), then prints `%.17Lf` with trailing zeros removed. With `f64` the results differ
//! visibly (0.1 + 0.2 prints 0.30000000000000004), so this module implements just what those
//! commands need with a 64-bit mantissa: parse (like `strtold`), add, and format.
/// A finite value `mant * 2^exp`; `mant` has its top bit set, or is 0 for zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ld {
    pub neg: bool,
    pub mant: u64,
    pub exp: i64,
}

impl Ld {
    pub const ZERO: Ld = Ld { neg: false, mant: 0, exp: 0 };
}

/// Largest `exp` of a finite value (values stay below 2^16384).
const EXP_MAX: i64 = 16384 - 64;
/// Values below 2^-16445 (the smallest subnormal) underflow.
const EXP_MIN: i64 = -16445 - 64;

/// Parses like Redis's `string2ld`: `Err` for text that is not a number (or that
/// overflows or underflows to zero), `Ok(None)` for an infinity, else the value.
pub fn parse(s: &[u8]) -> Result<Option<Ld>, ()> {
    // string2ld copies into a C string: an embedded NUL ends it.
    let s = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
    if s.is_empty() || s.len() >= 5 * 1024 || is_c_space(s[0]) {
        return Err(());
    }
    let (neg, body) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Ok(None);
    }
    let v = if body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
        parse_hex(&body[2..])?
    } else {
        parse_dec(body)?
    };
    Ok(Some(Ld { neg, ..v }))
}

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits `int[.frac][<e>[sign]digits]` with `radix` digits; None if malformed.
fn split_number(s: &[u8], hex: bool) -> Option<(Vec<u8>, usize, i64)> {
    let is_digit = |c: u8| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() };
    let exp_char = if hex { b'p' } else { b'e' };
    let mut i = 0;
    let mut digits = Vec::new();
    let mut frac = 0usize;
    while i < s.len() && is_digit(s[i]) {
        digits.push(s[i]);
        i += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && is_digit(s[i]) {
            digits.push(s[i]);
            frac += 1;
            i += 1;
        }
    }
    if digits.is_empty() {
        return None;
    }
    let mut exp: i64 = 0;
    if i < s.len() && (s[i] | 0x20) == exp_char {
        i += 1;
        let eneg = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            exp = (exp * 10 + (s[i] - b'0') as i64).min(1 << 40);
            i += 1;
        }
        if i == start {
            return None;
        }
        if eneg {
            exp = -exp;
        }
    }
    (i == s.len()).then_some((digits, frac, exp))
}

fn parse_dec(s: &[u8]) -> Result<Ld, ()> {
    let (digits, frac, exp) = split_number(s, false).ok_or(())?;
    let lead = digits.iter().take_while(|&&c| c == b'0').count();
    let digits = &digits[lead..];
    let trail = digits.iter().rev().take_while(|&&c| c == b'0').count();
    let digits = &digits[..digits.len() - trail];
    if digits.is_empty() {
        return Ok(Ld::ZERO);
    }
    // value = digits * 10^e10
    let e10 = exp - frac as i64 + trail as i64;
    let magnitude = digits.len() as i64 + e10; // value < 10^magnitude
    if magnitude > 4934 {
        return Err(()); // overflow (ERANGE, HUGE_VAL)
    }
    if magnitude < -4952 {
        return Err(()); // underflow to zero (ERANGE)
    }
    let mut n = Big::from_decimal(digits);
    let v = if e10 >= 0 {
        n.mul_pow10(e10 as u32);
        round(&n, 0, false)
    } else {
        // Scale up so that the quotient keeps at least 66 significant bits.
        let k = (-e10) as u32;
        let shift = (66 + (k as i64 * 3322 / 1000 + 1) - n.bits() as i64 + 2).max(0) as u32;
        n.shl(shift);
        let inexact = n.div_pow10(k);
        round(&n, -(shift as i64), inexact)
    };
    checked(v)
}

fn parse_hex(s: &[u8]) -> Result<Ld, ()> {
    let (digits, frac, exp) = split_number(s, true).ok_or(())?;
    let mut n = Big::default();
    for &c in &digits {
        n.shl(4);
        n.add_small((c as char).to_digit(16).expect("hex digit"));
    }
    if n.is_zero() {
        return Ok(Ld::ZERO);
    }
    checked(round(&n, exp - 4 * frac as i64, false))
}

/// Rejects values out of the finite range (strtold's ERANGE cases).
fn checked(v: Ld) -> Result<Ld, ()> {
    if v.exp > EXP_MAX || v.exp < EXP_MIN {
        Err(())
    } else {
        Ok(v)
    }
}

/// Rounds `n * 2^exp2` (with `inexact` meaning bits below `n` were non-zero) to a
/// 64-bit mantissa, ties to even.
fn round(n: &Big, exp2: i64, inexact: bool) -> Ld {
    let bits = n.bits();
    if bits <= 64 {
        let m = n.low_u64();
        return Ld { neg: false, mant: m << (64 - bits), exp: exp2 + bits as i64 - 64 };
    }
    let drop = bits - 64;
    let mut mant = n.bits_at(drop, 64);
    let half = n.bit(drop - 1);
    let rest = inexact || n.any_below(drop - 1);
    let mut exp = exp2 + drop as i64;
    if half && (rest || mant & 1 == 1) {
        let (m, carry) = mant.overflowing_add(1);
        mant = if carry {
            exp += 1;
            1 << 63
        } else {
            m
        };
    }
    Ld { neg: false, mant, exp }
}

/// `a + b` rounded to nearest even; None if the result overflows to infinity.
pub fn add(a: Ld, b: Ld) -> Option<Ld> {
    if a.mant == 0 {
        return Some(if b.mant == 0 { Ld { neg: a.neg && b.neg, ..Ld::ZERO } } else { b });
    }
    if b.mant == 0 {
        return Some(a);
    }
    // Order by magnitude: `a` is the larger.
    let (a, b) = if (a.exp, a.mant) >= (b.exp, b.mant) { (a, b) } else { (b, a) };
    let d = (a.exp - b.exp) as u64;
    // 62 guard bits below the mantissa; everything shifted out of `b` is folded
    // into a sticky bit, which suffices for correct rounding of sums and differences.
    let x = (a.mant as u128) << 62;
    let yb = (b.mant as u128) << 62;
    let y = if d >= 127 {
        1
    } else {
        let v = yb >> d;
        v | ((v << d) != yb) as u128
    };
    let s = if a.neg == b.neg { x + y } else { x - y };
    if s == 0 {
        return Some(Ld::ZERO);
    }
    let bits = 128 - s.leading_zeros() as i64;
    let base = a.exp - 62;
    let v = if bits <= 64 {
        Ld { neg: a.neg, mant: (s << (64 - bits)) as u64, exp: base - (64 - bits) }
    } else {
        let drop = (bits - 64) as u32;
        let mut mant = (s >> drop) as u64;
        let rem = s & ((1u128 << drop) - 1);
        let half = 1u128 << (drop - 1);
        let mut exp = base + drop as i64;
        if rem > half || (rem == half && mant & 1 == 1) {
            let (m, carry) = mant.overflowing_add(1);
            mant = if carry {
                exp += 1;
                1 << 63
            } else {
                m
            };
        }
        Ld { neg: a.neg, mant, exp }
    };
    (v.exp <= EXP_MAX).then_some(v)
}

/// `printf("%.17Lf")` with trailing zeros (and a bare dot) removed and "-0" shown as
/// "0": Redis's `ld2string(..., LD_STR_HUMAN)`.
pub fn fmt_human(v: Ld) -> Vec<u8> {
    // n = round(|v| * 10^17), ties to even, as glibc's printf rounds.
    let mut n = Big::from_u64(v.mant);
    n.mul_pow10(17);
    if v.exp >= 0 {
        n.shl(v.exp as u32);
    } else {
        let sh = v.exp.unsigned_abs();
        if sh > n.bits() as u64 {
            n = Big::default();
        } else {
            let sh = sh as usize;
            let half = n.bit(sh - 1);
            let rest = sh >= 2 && n.any_below(sh - 1);
            n.shr(sh);
            if half && (rest || n.low_u64() & 1 == 1) {
                n.add_small(1);
            }
        }
    }
    let mut digits = n.to_decimal();
    while digits.len() < 18 {
        digits.insert(0, b'0');
    }
    let point = digits.len() - 17;
    let mut out = Vec::with_capacity(digits.len() + 2);
    if v.neg {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[..point]);
    out.push(b'.');
    out.extend_from_slice(&digits[point..]);
    while out.last() == Some(&b'0') {
        out.pop();
    }
    if out.last() == Some(&b'.') {
        out.pop();
    }
    if out == b"-0" {
        out = b"0".to_vec();
    }
    out
}

/// A little-endian arbitrary-precision unsigned integer in 32-bit limbs.
#[derive(Default, Clone, Debug)]
struct Big(Vec<u32>);

impl Big {
    fn from_u64(v: u64) -> Big {
        let mut b = Big(vec![v as u32, (v >> 32) as u32]);
        b.trim();
        b
    }

    fn from_decimal(digits: &[u8]) -> Big {
        let mut b = Big::default();
        for chunk in digits.chunks(9) {
            let mut v = 0u32;
            for &c in chunk {
                v = v * 10 + (c - b'0') as u32;
            }
            b.mul_small(10u32.pow(chunk.len() as u32));
            b.add_small(v);
        }
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn bits(&self) -> usize {
        match self.0.last() {
            None => 0,
            Some(&top) => self.0.len() * 32 - top.leading_zeros() as usize,
        }
    }

    fn bit(&self, i: usize) -> bool {
        self.0.get(i / 32).is_some_and(|&l| (l >> (i % 32)) & 1 == 1)
    }

    /// True if any bit below position `i` is set.
    fn any_below(&self, i: usize) -> bool {
        let (limbs, rem) = (i / 32, i % 32);
        self.0[..limbs.min(self.0.len())].iter().any(|&l| l != 0)
            || (rem > 0 && self.0.get(limbs).is_some_and(|&l| l & ((1u32 << rem) - 1) != 0))
    }

    /// The `len` (<= 64) bits starting at bit `from`.
    fn bits_at(&self, from: usize, len: usize) -> u64 {
        (0..len).fold(0u64, |acc, i| acc | ((self.bit(from + i) as u64) << i))
    }

    fn low_u64(&self) -> u64 {
        let lo = self.0.first().copied().unwrap_or(0) as u64;
        let hi = self.0.get(1).copied().unwrap_or(0) as u64;
        lo | (hi << 32)
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for l in &mut self.0 {
            let v = *l as u64 * m as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }

    fn add_small(&mut self, a: u32) {
        let mut carry = a as u64;
        for l in &mut self.0 {
            if carry == 0 {
                break;
            }
            let v = *l as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    /// Divides in place; returns the remainder.
    fn div_small(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for l in self.0.iter_mut().rev() {
            let v = (rem << 32) | *l as u64;
            *l = (v / d as u64) as u32;
            rem = v % d as u64;
        }
        self.trim();
        rem as u32
    }

    fn mul_pow10(&mut self, mut k: u32) {
        while k > 0 {
            let step = k.min(9);
            self.mul_small(10u32.pow(step));
            k -= step;
        }
    }

    /// Divides by 10^k, truncating; returns true if the division was inexact.
    fn div_pow10(&mut self, mut k: u32) -> bool {
        let mut inexact = false;
        while k > 0 {
            let step = k.min(9);
            inexact |= self.div_small(10u32.pow(step)) != 0;
            k -= step;
        }
        inexact
    }

    fn shl(&mut self, n: u32) {
        if self.is_zero() {
            return;
        }
        let (limbs, bits) = ((n / 32) as usize, n % 32);
        if bits > 0 {
            let mut carry = 0u32;
            for l in &mut self.0 {
                let v = *l;
                *l = (v << bits) | carry;
                carry = v >> (32 - bits);
            }
            if carry > 0 {
                self.0.push(carry);
            }
        }
        self.0.splice(0..0, std::iter::repeat_n(0, limbs));
    }

    fn shr(&mut self, n: usize) {
        let (limbs, bits) = (n / 32, (n % 32) as u32);
        if limbs >= self.0.len() {
            self.0.clear();
            return;
        }
        self.0.drain(..limbs);
        if bits > 0 {
            let len = self.0.len();
            for i in 0..len {
                let hi = if i + 1 < len { self.0[i + 1] << (32 - bits) } else { 0 };
                self.0[i] = (self.0[i] >> bits) | hi;
            }
        }
        self.trim();
    }

    fn to_decimal(&self) -> Vec<u8> {
        let mut n = self.clone();
        let mut chunks = Vec::new();
        while !n.is_zero() {
            chunks.push(n.div_small(1_000_000_000));
        }
        let mut out = Vec::new();
        match chunks.pop() {
            None => out.push(b'0'),
            Some(top) => out.extend_from_slice(top.to_string().as_bytes()),
        }
        for c in chunks.iter().rev() {
            out.extend_from_slice(format!("{c:09}").as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(a: &str, b: &str) -> String {
        let x = parse(a.as_bytes()).unwrap().unwrap();
        let y = parse(b.as_bytes()).unwrap().unwrap();
        String::from_utf8(fmt_human(add(x, y).unwrap())).unwrap()
    }

    #[test]
    fn long_double_matches_redis() {
        assert_eq!(incr("10.5", "0.1"), "10.6");
        assert_eq!(incr("0.1", "0.2"), "0.3");
        assert_eq!(incr("0", "3.0e3"), "3000");
        assert_eq!(incr("5", "-5"), "0");
        assert_eq!(incr("-0.0", "-0"), "0");
        assert_eq!(incr("1", "-1.1"), "-0.1");
        assert_eq!(incr("17179869184", "1.5"), "17179869185.5");
        assert_eq!(incr("0x10", "0x1p-1"), "16.5");
        assert_eq!(incr("1e-20", "0"), "0");
        assert!(incr("1e4900", "0").starts_with("1000000000000000000"));
        assert_eq!(parse(b"inf"), Ok(None));
        assert_eq!(parse(b"-Infinity"), Ok(None));
        for bad in [&b""[..], b" 1", b"1 ", b"nan", b"1e5000", b"1e-5000", b"abc", b"1e", b"0x", b"."] {
            assert_eq!(parse(bad), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(add(parse(b"1e4932").unwrap().unwrap(), parse(b"1e4932").unwrap().unwrap()).is_none());
    }
}
