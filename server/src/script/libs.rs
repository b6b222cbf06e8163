//! The libraries Redis gives scripts besides Lua's own: `bit` (LuaBitOp), `cjson`, and
//! `math.random` on Redis's rand48 generator, so the same script sees the same numbers on
//! redoubt as on Redis.

use mlua::{Lua, Table, Value};

/// Redis's `redisLrand48`: the 48-bit linear congruential generator of POSIX `lrand48`,
/// kept here so `math.random` needs no C library and is the same on every platform.
#[derive(Debug)]
pub struct Rand48 {
    x: u64,
}

impl Rand48 {
    const A: u64 = 0x5DEE_CE66D;
    const MASK: u64 = (1 << 48) - 1;

    pub fn new(seed: i32) -> Rand48 {
        let mut r = Rand48 { x: 0 };
        r.seed(seed);
        r
    }

    pub fn seed(&mut self, seed: i32) {
        self.x = ((seed as u32 as u64) << 16) | 0x330E;
    }

    /// A number in [0, 2^31).
    pub fn next(&mut self) -> i32 {
        self.x = (Self::A.wrapping_mul(self.x).wrapping_add(0xB)) & Self::MASK;
        (self.x >> 17) as i32
    }

    /// What Redis's `math.random()` returns: a float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next() % i32::MAX) as f64 / i32::MAX as f64
    }
}

/// Installs `math.random` and `math.randomseed` over the generator stored as app data.
pub fn install_random(lua: &Lua, math: &Table) -> mlua::Result<()> {
    lua.set_app_data(Rand48::new(0));
    let random = lua.create_function(|lua, (m, n): (Option<f64>, Option<f64>)| {
        let r = lua.app_data_mut::<Rand48>().expect("rand48 installed").next_f64();
        // Lua 5.1's lmathlib, over Redis's generator.
        match (m, n) {
            (None, _) => Ok(r),
            (Some(m), None) => {
                let m = m.floor();
                if m < 1.0 {
                    return Err(mlua::Error::RuntimeError("bad argument #1 to 'random' (interval is empty)".into()));
                }
                Ok((r * m).floor() + 1.0)
            }
            (Some(l), Some(u)) => {
                let (l, u) = (l.floor(), u.floor());
                if l > u {
                    return Err(mlua::Error::RuntimeError("bad argument #2 to 'random' (interval is empty)".into()));
                }
                Ok((r * (u - l + 1.0)).floor() + l)
            }
        }
    })?;
    let seed = lua.create_function(|lua, s: f64| {
        lua.app_data_mut::<Rand48>().expect("rand48 installed").seed(s as i64 as i32);
        Ok(())
    })?;
    math.raw_set("random", random)?;
    math.raw_set("randomseed", seed)?;
    Ok(())
}

/// LuaBitOp's `bit` table: 32-bit operations on numbers, results as signed 32-bit.
pub fn bit_table(lua: &Lua) -> mlua::Result<Table> {
    fn tobit(n: f64) -> i32 {
        // LuaBitOp normalizes by adding 2^52 + 2^51 and keeping the low 32 bits of the
        // double: the value rounded half to even, modulo 2^32 (and 0 for inf and NaN).
        let b = (n + 6_755_399_441_055_744.0).to_bits();
        b as u32 as i32
    }
    let t = lua.create_table()?;
    t.raw_set("tobit", lua.create_function(|_, n: f64| Ok(tobit(n)))?)?;
    t.raw_set("bnot", lua.create_function(|_, n: f64| Ok(!tobit(n)))?)?;
    t.raw_set(
        "band",
        lua.create_function(|_, v: mlua::Variadic<f64>| Ok(v.iter().fold(-1i32, |a, &b| a & tobit(b))))?,
    )?;
    t.raw_set("bor", lua.create_function(|_, v: mlua::Variadic<f64>| Ok(v.iter().fold(0i32, |a, &b| a | tobit(b))))?)?;
    t.raw_set("bxor", lua.create_function(|_, v: mlua::Variadic<f64>| Ok(v.iter().fold(0i32, |a, &b| a ^ tobit(b))))?)?;
    t.raw_set(
        "lshift",
        lua.create_function(|_, (a, n): (f64, f64)| Ok(((tobit(a) as u32) << (tobit(n) as u32 & 31)) as i32))?,
    )?;
    t.raw_set(
        "rshift",
        lua.create_function(|_, (a, n): (f64, f64)| Ok(((tobit(a) as u32) >> (tobit(n) as u32 & 31)) as i32))?,
    )?;
    t.raw_set("arshift", lua.create_function(|_, (a, n): (f64, f64)| Ok(tobit(a) >> (tobit(n) as u32 & 31)))?)?;
    t.raw_set(
        "rol",
        lua.create_function(|_, (a, n): (f64, f64)| Ok((tobit(a) as u32).rotate_left(tobit(n) as u32 & 31) as i32))?,
    )?;
    t.raw_set(
        "ror",
        lua.create_function(|_, (a, n): (f64, f64)| Ok((tobit(a) as u32).rotate_right(tobit(n) as u32 & 31) as i32))?,
    )?;
    t.raw_set("bswap", lua.create_function(|_, a: f64| Ok((tobit(a) as u32).swap_bytes() as i32))?)?;
    t.raw_set(
        "tohex",
        lua.create_function(|_, (a, n): (f64, Option<f64>)| {
            let n = n.map_or(8, |n| tobit(n));
            let (upper, width) = if n < 0 { (true, (-n).min(8)) } else { (false, n.min(8)) };
            let v = tobit(a) as u32;
            let masked = if width >= 8 { v } else { v & ((1u32 << (width * 4)) - 1) };
            let s = if upper {
                format!("{:0w$X}", masked, w = width as usize)
            } else {
                format!("{:0w$x}", masked, w = width as usize)
            };
            Ok(s)
        })?,
    )?;
    Ok(t)
}

/// lua-cjson's `cjson.encode` / `cjson.decode` (the subset of behaviour scripts rely on:
/// arrays for tables with keys 1..n, objects otherwise, `cjson.null` for JSON null).
pub fn cjson_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let null = Value::LightUserData(mlua::LightUserData(std::ptr::null_mut()));
    t.raw_set("null", null)?;
    t.raw_set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let mut out = Vec::new();
            encode_json(lua, &v, &mut out, 0)?;
            lua.create_string(&out)
        })?,
    )?;
    t.raw_set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            let v: serde_json::Value = serde_json::from_slice(&s.as_bytes())
                .map_err(|e| mlua::Error::RuntimeError(format!("Expected value but found invalid token: {e}")))?;
            json_to_lua(lua, &v)
        })?,
    )?;
    Ok(t)
}

/// lua-cjson refuses nesting deeper than this (its default `encode_max_depth`).
const MAX_DEPTH: usize = 1000;

fn encode_json(lua: &Lua, v: &Value, out: &mut Vec<u8>, depth: usize) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Number(n) => {
            if !n.is_finite() {
                return Err(mlua::Error::RuntimeError("Cannot serialise number: must not be NaN or Inf".into()));
            }
            out.extend_from_slice(fmt_g14(*n).as_bytes());
        }
        Value::String(s) => encode_json_string(&s.as_bytes(), out),
        Value::Table(t) => {
            if depth >= MAX_DEPTH {
                return Err(mlua::Error::RuntimeError(format!("Cannot serialise, excessive nesting ({})", depth + 1)));
            }
            // An array when every key is a positive integer and there are no big holes
            // (lua-cjson's "excessively sparse" rule: max > 2 * count and max > 10).
            let mut max = 0usize;
            let mut count = 0usize;
            let mut array = true;
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, _) = pair?;
                count += 1;
                match k {
                    Value::Integer(i) if i >= 1 => max = max.max(i as usize),
                    Value::Number(f) if f >= 1.0 && f.fract() == 0.0 => max = max.max(f as usize),
                    _ => array = false,
                }
            }
            if array && count > 0 && max > count * 2 && max > 10 {
                return Err(mlua::Error::RuntimeError("Cannot serialise table: excessively sparse array".into()));
            }
            if array && count > 0 {
                out.push(b'[');
                for i in 1..=max {
                    if i > 1 {
                        out.push(b',');
                    }
                    encode_json(lua, &t.raw_get::<Value>(i)?, out, depth + 1)?;
                }
                out.push(b']');
            } else {
                out.push(b'{');
                let mut first = true;
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, val) = pair?;
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    match k {
                        Value::String(s) => encode_json_string(&s.as_bytes(), out),
                        Value::Integer(n) => encode_json_string(n.to_string().as_bytes(), out),
                        Value::Number(n) => encode_json_string(fmt_g14(n).as_bytes(), out),
                        _ => {
                            return Err(mlua::Error::RuntimeError(
                                "Cannot serialise table: table key must be a number or string".into(),
                            ))
                        }
                    }
                    out.push(b':');
                    encode_json(lua, &val, out, depth + 1)?;
                }
                out.push(b'}');
            }
        }
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    }
    Ok(())
}

/// Lua 5.1's `%.14g`, which lua-cjson uses for numbers.
pub fn fmt_g14(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        return format!("{}", n as i64);
    }
    let exp = n.abs().log10().floor() as i32;
    if !(-5..14).contains(&exp) {
        let s = format!("{:.13e}", n);
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = mant.trim_end_matches('0').trim_end_matches('.');
        let e: i32 = e.parse().unwrap_or(0);
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let s = format!("{:.*}", (13 - exp).max(0) as usize, n);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

fn encode_json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c if c < 0x20 || c == 0x7f => out.extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

fn json_to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match v {
        serde_json::Value::Null => Value::LightUserData(mlua::LightUserData(std::ptr::null_mut())),
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(a) => {
            let t = lua.create_table_with_capacity(a.len(), 0)?;
            for (i, x) in a.iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(o) => {
            let t = lua.create_table_with_capacity(0, o.len())?;
            for (k, x) in o {
                t.raw_set(k.as_str(), json_to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand48_matches_redis() {
        // The first numbers Redis 7.0.15 gives `math.random()` after `math.randomseed(0)`.
        let mut r = Rand48::new(0);
        assert_eq!(format!("{}", fmt_g14(r.next_f64())), "0.17082803611217");
        assert_eq!(format!("{}", fmt_g14(r.next_f64())), "0.74990198051087");
    }

    #[test]
    fn g14_formats_like_lua() {
        assert_eq!(fmt_g14(1.0), "1");
        assert_eq!(fmt_g14(1.5), "1.5");
        assert_eq!(fmt_g14(0.1), "0.1");
        assert_eq!(fmt_g14(1e20), "1e+20");
        assert_eq!(fmt_g14(-2.25), "-2.25");
        assert_eq!(fmt_g14(1.0 / 3.0), "0.33333333333333");
    }
}
