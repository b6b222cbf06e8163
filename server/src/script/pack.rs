//! The binary-packing libraries Redis 7.0 gives scripts: `struct` (Roberto Ierusalimschy's
//! struct library: `pack`, `unpack`, `size`) and `cmsgpack` (lua-cmsgpack 0.4.0: `pack`,
//! `unpack`, `unpack_one`, `unpack_limit`).
//!
//! Scripts use them to build and parse binary values and to ship tables through keys, so
//! the bytes must be the ones Redis produces and the errors must read the same: each
//! function behaves as the C code compiled for x86-64 does, including its casts (a double
//! out of range becomes `i64::MIN`), its stack limit (Lua 5.1 lets a C function hold 8000
//! stack slots; a result past that is a "stack overflow" error) and its quirks (the
//! argument number in `string too short`, the length printed as the "limit" in
//! `cmsgpack`'s offset error).
//!
//! The functions are Rust closures behind a small C trampoline ([`raise_from_c`]): Lua sees
//! a C function, as with Redis, so an error names the function as the script called it
//! (`bad argument #1 to 'pack'`), carries the script's position (`user_script:1:`), and
//! is a plain string that `pcall` returns as is.

use std::os::raw::c_int;

use mlua::{ffi, Function, Lua, LuaString, MultiValue, Table, Value};

/// Lua 5.1's `LUAI_MAXCSTACK`: the stack slots a C function may use. The C libraries check
/// it (`luaL_checkstack`) before pushing; we count the same slots to fail where they fail.
const MAX_C_STACK: i64 = 8000;

/// The `struct` table.
pub fn struct_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("pack", library_function(lua, struct_pack, None)?)?;
    t.raw_set("unpack", library_function(lua, struct_unpack, Some(3))?)?;
    t.raw_set("size", library_function(lua, struct_size, Some(1))?)?;
    Ok(t)
}

/// The `cmsgpack` table, with lua-cmsgpack's metadata fields.
pub fn cmsgpack_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("pack", library_function(lua, mp_pack, None)?)?;
    t.raw_set("unpack", library_function(lua, mp_unpack, Some(1))?)?;
    t.raw_set("unpack_one", library_function(lua, mp_unpack_one, Some(2))?)?;
    t.raw_set("unpack_limit", library_function(lua, mp_unpack_limit, Some(3))?)?;
    t.raw_set("_NAME", "cmsgpack")?;
    t.raw_set("_VERSION", "lua-cmsgpack 0.4.0")?;
    t.raw_set("_COPYRIGHT", "Copyright (C) 2012, Salvatore Sanfilippo")?;
    t.raw_set("_DESCRIPTION", "MessagePack C implementation for Lua")?;
    Ok(t)
}

// ---------------------------------------------------------------------------------------
// Errors and arguments, as the Lua 5.1 auxiliary library words them
// ---------------------------------------------------------------------------------------

/// A library error, before it becomes the text Lua would build.
#[derive(Debug)]
enum LibError {
    /// `luaL_argerror`: "bad argument #n to 'f' (...)", after the caller's position.
    Arg(i32, Vec<u8>),
    /// `luaL_error`: the text after the caller's position.
    Located(Vec<u8>),
    /// An error the Lua core raises inside the C function ("table index is nil"): it has
    /// no position, the running function being C.
    Bare(Vec<u8>),
    /// mlua failed (out of memory): raised as mlua raises it.
    Lua(mlua::Error),
}

impl From<mlua::Error> for LibError {
    fn from(e: mlua::Error) -> Self {
        LibError::Lua(e)
    }
}

type LibResult<T> = Result<T, LibError>;

fn located(msg: impl Into<Vec<u8>>) -> LibError {
    LibError::Located(msg.into())
}

fn arg_error(narg: i32, msg: impl Into<Vec<u8>>) -> LibError {
    LibError::Arg(narg, msg.into())
}

/// `luaL_checkstack`: `height` slots in use, `extra` more wanted.
fn check_stack(height: i64, extra: i64, what: &str) -> LibResult<()> {
    if height + extra > MAX_C_STACK {
        return Err(located(format!("stack overflow ({what})")));
    }
    Ok(())
}

impl LibError {
    /// The message as Lua's auxiliary library builds it. Stack level 0 is this Rust
    /// function, 1 the C trampoline the script called, 2 the script.
    fn message(self, lua: &Lua) -> Vec<u8> {
        // luaL_where(L, 1) as seen from the trampoline.
        let position = || -> Vec<u8> {
            lua.inspect_stack(2, |d| {
                let line = d.current_line().filter(|&l| l > 0)?;
                Some(format!("{}:{line}: ", d.source().short_src.unwrap_or_default()).into_bytes())
            })
            .flatten()
            .unwrap_or_default()
        };
        match self {
            LibError::Bare(m) => m,
            LibError::Located(m) => [position(), m].concat(),
            LibError::Arg(mut narg, m) => {
                let (name, what) = lua
                    .inspect_stack(1, |d| {
                        let n = d.names();
                        (n.name.map(|s| s.into_owned()), n.name_what.map(|s| s.to_string()))
                    })
                    .unwrap_or_default();
                let name = name.unwrap_or_else(|| "?".to_string());
                if what.as_deref() == Some("method") {
                    // `obj:f(x)`: the user counts arguments without the implicit self.
                    narg -= 1;
                    if narg == 0 {
                        let head = format!("calling '{name}' on bad self (");
                        return [position(), head.into_bytes(), m, b")".to_vec()].concat();
                    }
                }
                let head = format!("bad argument #{narg} to '{name}' (");
                [position(), head.into_bytes(), m, b")".to_vec()].concat()
            }
            LibError::Lua(_) => unreachable!("raised by the caller"),
        }
    }
}

/// Results gathered in a Lua table. The libraries may return up to 7999 values (the most
/// Lua 5.1 lets a C function push), and mlua holds each live `Value` in a slot of its own
/// auxiliary stack, which has the same limit: so values go into the table as they come.
struct Results {
    t: Table,
    n: usize,
}

impl Results {
    fn new(lua: &Lua) -> mlua::Result<Results> {
        Ok(Results { t: lua.create_table()?, n: 0 })
    }

    fn one(lua: &Lua, v: Value) -> mlua::Result<Results> {
        let mut r = Results::new(lua)?;
        r.push(v)?;
        Ok(r)
    }

    fn push(&mut self, v: Value) -> mlua::Result<()> {
        self.n += 1;
        self.t.raw_set(self.n, v)
    }

    fn last(&self) -> mlua::Result<Value> {
        self.t.raw_get(self.n)
    }

    fn pop(&mut self) -> mlua::Result<()> {
        self.t.raw_set(self.n, Value::Nil)?;
        self.n -= 1;
        Ok(())
    }
}

/// The Rust side of a library function: the arguments it reads, and how many the script
/// passed (they count in the C code's stack checks).
type LibFn = fn(&Lua, &[Value], i64) -> LibResult<Results>;

/// A library function as Lua sees it: a C function (the trampoline) over a Rust closure
/// that answers `false, message` or `n, results` (the `n` results in a table). `reads`:
/// the arguments the function looks at (all when `None`); the trampoline passes no more,
/// as each one passed to Rust would take one of mlua's reference slots (see [`Results`]).
fn library_function(lua: &Lua, f: LibFn, reads: Option<i64>) -> mlua::Result<Function> {
    let inner = lua.create_function(move |lua, args: MultiValue| {
        let mut args: Vec<Value> = args.into();
        // The trampoline puts the count of the script's arguments first.
        let nargs = match args.first() {
            Some(Value::Integer(n)) => *n,
            Some(Value::Number(n)) => *n as i64,
            _ => 0,
        };
        args.remove(0);
        match f(lua, &args, nargs) {
            Ok(r) => Ok((Value::Integer(r.n as i64), Value::Table(r.t))),
            Err(LibError::Lua(e)) => Err(e),
            Err(e) => {
                let text = e.message(lua);
                Ok((Value::Boolean(false), Value::String(lua.create_string(text)?)))
            }
        }
    })?;
    // SAFETY: the closure runs with the Rust function and the count on the stack as its
    // only arguments and leaves the new C closure (which takes them as upvalues 1 and 2)
    // as its only result.
    unsafe {
        lua.exec_raw::<Function>((inner, reads.unwrap_or(-1)), |state| ffi::lua_pushcclosure(state, raise_from_c, 2))
    }
}

/// Calls upvalue 1 with this call's arguments; raises its message when it answers `false`,
/// else returns its results. An mlua callback cannot raise a plain string, and a Lua
/// wrapper would disappear from the stack in a tail call (`return struct.pack(...)`),
/// losing the function's name and the script's line; a C frame keeps both, as in Redis.
unsafe extern "C-unwind" fn raise_from_c(state: *mut ffi::lua_State) -> c_int {
    // No Rust value with a destructor lives in this frame: `lua_error` (and an error from
    // the callee) leave it by `longjmp`.
    let nargs = ffi::lua_gettop(state);
    let reads = ffi::lua_tonumber(state, ffi::lua_upvalueindex(2)) as c_int;
    if reads >= 0 && nargs > reads {
        ffi::lua_settop(state, reads);
    }
    let passed = ffi::lua_gettop(state);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_insert(state, 1);
    ffi::lua_pushnumber(state, nargs as ffi::lua_Number);
    ffi::lua_insert(state, 2);
    ffi::lua_call(state, passed + 1, 2);
    if ffi::lua_type(state, 1) != ffi::LUA_TNUMBER {
        // The message is on top.
        ffi::lua_error(state);
    }
    let n = ffi::lua_tonumber(state, 1) as c_int;
    ffi::lua_remove(state, 1);
    // The libraries stop at Lua's limit themselves, so this always has room.
    if ffi::lua_checkstack(state, n) == 0 {
        ffi::lua_pushstring(state, c"stack overflow (too many results)".as_ptr());
        ffi::lua_error(state);
    }
    for i in 1..=n {
        ffi::lua_rawgeti(state, 1, i as _);
    }
    ffi::lua_remove(state, 1);
    n
}

/// Lua 5.1's `luaL_typename`, with "no value" past the last argument.
fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_) | Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(_) => "userdata",
    }
}

/// `lua_tonumber`: numbers, and strings Lua reads as numbers.
fn to_number(lua: &Lua, v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        // mlua makes an Integer only of a number that is exactly that integer.
        Value::Integer(i) => Some(*i as f64),
        Value::String(_) => lua.coerce_number(v.clone()).ok().flatten(),
        _ => None,
    }
}

/// The 1-based arguments of a call, read as the `luaL_check*` functions read them.
struct Args<'a> {
    lua: &'a Lua,
    v: &'a [Value],
}

impl Args<'_> {
    fn get(&self, i: usize) -> Option<&Value> {
        self.v.get(i - 1)
    }

    fn type_error(&self, i: usize, expected: &str) -> LibError {
        arg_error(i as i32, format!("{expected} expected, got {}", type_name(self.get(i))))
    }

    fn number(&self, i: usize) -> LibResult<f64> {
        self.get(i).and_then(|v| to_number(self.lua, v)).ok_or_else(|| self.type_error(i, "number"))
    }

    /// `luaL_checkinteger`: the number cast to `ptrdiff_t`.
    fn integer(&self, i: usize) -> LibResult<i64> {
        self.number(i).map(c_to_i64)
    }

    fn opt_integer(&self, i: usize, default: i64) -> LibResult<i64> {
        match self.get(i) {
            None | Some(Value::Nil) => Ok(default),
            Some(_) => self.integer(i),
        }
    }

    /// `luaL_checklstring`: strings, and numbers as `%.14g`.
    fn bytes(&self, i: usize) -> LibResult<Vec<u8>> {
        let s: Option<LuaString> = match self.get(i) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Integer(_))) => self.lua.coerce_string(v.clone())?,
            _ => None,
        };
        s.map(|s| s.as_bytes().to_vec()).ok_or_else(|| self.type_error(i, "string"))
    }
}

// ---------------------------------------------------------------------------------------
// C's conversions on x86-64
// ---------------------------------------------------------------------------------------

const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// `(int64_t)d`: truncation; NaN and values out of range give the "integer indefinite"
/// value `cvttsd2si` returns, `i64::MIN` (Rust's `as` would saturate instead).
fn c_to_i64(d: f64) -> i64 {
    if (-TWO_63..TWO_63).contains(&d) {
        d as i64
    } else {
        i64::MIN
    }
}

/// `(int)d`, likewise.
fn c_to_i32(d: f64) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&d) {
        d as i32
    } else {
        i32::MIN
    }
}

/// `(uint64_t)d` as gcc compiles it: below 2^63 the signed conversion, above it the
/// signed conversion of `d - 2^63` with the top bit flipped (so 2^64 and infinity give 0).
fn c_to_u64(d: f64) -> u64 {
    if d >= TWO_63 {
        (c_to_i64(d - TWO_63) as u64) ^ (1 << 63)
    } else {
        c_to_i64(d) as u64
    }
}

// ---------------------------------------------------------------------------------------
// struct
// ---------------------------------------------------------------------------------------

/// Alignment `!` asks for without a number: the alignment of a double on x86-64.
const STRUCT_MAX_ALIGN: i32 = 8;
/// The largest size `i`/`I` accept.
const STRUCT_MAX_INT_SIZE: i32 = 32;

/// Byte order and maximum alignment, changed by `<`, `>` and `!` as the format goes.
struct Header {
    little: bool,
    align: u64,
}

impl Header {
    /// The native defaults: little-endian, no alignment.
    fn new() -> Header {
        Header { little: true, align: 1 }
    }
}

/// A format string as the C code reads it: a C string, so it ends at the first NUL.
struct Format<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Format<'a> {
    fn new(s: &'a [u8]) -> Format<'a> {
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        Format { s: &s[..end], i: 0 }
    }

    fn next_opt(&mut self) -> Option<u8> {
        let c = *self.s.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    /// The decimal number after an option, or `default` when none follows.
    fn number(&mut self, default: i32) -> LibResult<i32> {
        if !self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            return Ok(default);
        }
        let mut a: i32 = 0;
        while let Some(&c) = self.s.get(self.i).filter(|c| c.is_ascii_digit()) {
            let d = (c - b'0') as i32;
            if a > i32::MAX / 10 || a * 10 > i32::MAX - d {
                return Err(located("integral size overflow"));
            }
            a = a * 10 + d;
            self.i += 1;
        }
        Ok(a)
    }

    /// The size of option `opt` (reading its number), 0 for options that take no room.
    fn size(&mut self, opt: u8) -> LibResult<u64> {
        Ok(match opt {
            b'b' | b'B' | b'x' => 1,
            b'h' | b'H' => 2,
            b'l' | b'L' | b'T' | b'd' => 8,
            b'f' => 4,
            b'c' => self.number(1)? as u64,
            b'i' | b'I' => {
                let size = self.number(4)?;
                if size > STRUCT_MAX_INT_SIZE {
                    return Err(located(format!("integral size {size} is larger than limit of {STRUCT_MAX_INT_SIZE}")));
                }
                size as u64
            }
            _ => 0,
        })
    }

    /// The options that only change the header; anything else is an invalid option.
    fn control(&mut self, opt: u8, h: &mut Header) -> LibResult<()> {
        match opt {
            b' ' => {}
            b'>' => h.little = false,
            b'<' => h.little = true,
            b'!' => {
                let a = self.number(STRUCT_MAX_ALIGN)?;
                if a <= 0 || a & (a - 1) != 0 {
                    return Err(located(format!("alignment {a} is not a power of 2")));
                }
                h.align = a as u64;
            }
            _ => {
                let mut m = b"invalid format option '".to_vec();
                m.push(opt);
                m.push(b'\'');
                return Err(LibError::Arg(1, m));
            }
        }
        Ok(())
    }
}

/// Padding before an item of `size` bytes at offset `len` (`c` strings are never aligned).
/// Sizes that are not powers of 2 (`i3`) give the C code's odd padding, kept as is.
fn struct_padding(len: u64, h: &Header, opt: u8, size: u64) -> u64 {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    size.wrapping_sub(len & (size - 1)) & (size - 1)
}

/// Integers are written from a 64-bit value: bytes past the eighth are 0, even for a
/// negative number.
fn struct_put_integer(out: &mut Vec<u8>, n: f64, little: bool, size: u64) {
    let value = if n < 0.0 { c_to_i64(n) as u64 } else { c_to_u64(n) };
    let byte = |k: u64| if k < 8 { (value >> (8 * k)) as u8 } else { 0 };
    if little {
        out.extend((0..size).map(byte));
    } else {
        out.extend((0..size).rev().map(byte));
    }
}

/// Reads an integer into 64 bits (earlier bytes of a wider one are shifted out); a signed
/// one is sign-extended from the mask the C code computes, whose shift count x86 takes
/// modulo 64 (so `i12` extends from bit 31 and `i0` from bit 63).
fn struct_get_integer(b: &[u8], little: bool, signed: bool) -> f64 {
    let mut l: u64 = 0;
    let mut add = |c: u8| l = (l << 8) | c as u64;
    if little {
        b.iter().rev().for_each(|&c| add(c));
    } else {
        b.iter().for_each(|&c| add(c));
    }
    if !signed {
        return l as f64;
    }
    let shift = ((b.len() as i64 * 8 - 1) & 63) as u32;
    let mask = u64::MAX << shift;
    if l & mask != 0 {
        l |= mask;
    }
    l as i64 as f64
}

fn struct_pack(lua: &Lua, args: &[Value], _nargs: i64) -> LibResult<Results> {
    let fmt = Args { lua, v: args }.bytes(1)?;
    // Then the C code pushes a nil above the arguments (to separate them from its buffer):
    // a missing argument reads as that nil ("got nil", not "got no value").
    let args = [args, &[Value::Nil]].concat();
    let a = Args { lua, v: &args };
    let mut f = Format::new(&fmt);
    let mut h = Header::new();
    let mut arg = 2;
    let mut out: Vec<u8> = Vec::new();
    while let Some(opt) = f.next_opt() {
        let mut size = f.size(opt)?;
        let pad = struct_padding(out.len() as u64, &h, opt, size);
        out.resize(out.len() + pad as usize, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = a.number(arg)?;
                arg += 1;
                struct_put_integer(&mut out, n, h.little, size);
            }
            b'x' => out.push(0),
            b'f' => {
                let v = a.number(arg)? as f32;
                arg += 1;
                out.extend(if h.little { v.to_le_bytes() } else { v.to_be_bytes() });
            }
            b'd' => {
                let v = a.number(arg)?;
                arg += 1;
                out.extend(if h.little { v.to_le_bytes() } else { v.to_be_bytes() });
            }
            b'c' | b's' => {
                let s = a.bytes(arg)?;
                arg += 1;
                if size == 0 {
                    size = s.len() as u64;
                }
                if (s.len() as u64) < size {
                    // The C code checks after moving to the next argument, so it blames
                    // the one after the short string.
                    return Err(arg_error(arg as i32, "string too short"));
                }
                out.extend_from_slice(&s[..size as usize]);
                if opt == b's' {
                    out.push(0);
                }
            }
            _ => f.control(opt, &mut h)?,
        }
    }
    Ok(Results::one(lua, Value::String(lua.create_string(&out)?))?)
}

fn struct_unpack(lua: &Lua, args: &[Value], nargs: i64) -> LibResult<Results> {
    let a = Args { lua, v: args };
    let fmt = a.bytes(1)?;
    let data = a.bytes(2)?;
    let ld = data.len() as u64;
    // A `size_t` in C: a negative offset wraps around (and then finds the data too short).
    let mut pos = a.opt_integer(3, 1)? as u64;
    if pos == 0 {
        return Err(arg_error(3, "offset must be 1 or greater"));
    }
    pos -= 1;
    let mut f = Format::new(&fmt);
    let mut h = Header::new();
    let mut results = Results::new(lua)?;
    let too_short = || arg_error(2, "data string too short");
    while let Some(opt) = f.next_opt() {
        let mut size = f.size(opt)?;
        pos = pos.wrapping_add(struct_padding(pos, &h, opt, size));
        if !(size <= ld && pos <= ld - size) {
            return Err(too_short());
        }
        // The arguments and the results so far occupy the C function's stack.
        check_stack(nargs + results.n as i64, 2, "too many results")?;
        let at = pos as usize;
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let bytes = &data[at..at + size as usize];
                results.push(Value::Number(struct_get_integer(bytes, h.little, opt.is_ascii_lowercase())))?;
            }
            b'x' => {}
            b'f' => {
                let b: [u8; 4] = data[at..at + 4].try_into().expect("4 bytes");
                let v = if h.little { f32::from_le_bytes(b) } else { f32::from_be_bytes(b) };
                results.push(Value::Number(v as f64))?;
            }
            b'd' => {
                let b: [u8; 8] = data[at..at + 8].try_into().expect("8 bytes");
                let v = if h.little { f64::from_le_bytes(b) } else { f64::from_be_bytes(b) };
                results.push(Value::Number(v))?;
            }
            b'c' => {
                if size == 0 {
                    // `c0`: the length is the previous result (which may be a string
                    // that reads as a number), which it replaces.
                    let n = if results.n == 0 { None } else { to_number(lua, &results.last()?) };
                    let Some(n) = n else {
                        return Err(located("format 'c0' needs a previous size"));
                    };
                    size = c_to_u64(n);
                    results.pop()?;
                    if !(size <= ld && pos <= ld - size) {
                        return Err(too_short());
                    }
                }
                results.push(Value::String(lua.create_string(&data[at..at + size as usize])?))?;
            }
            b's' => {
                let Some(len) = data[at..].iter().position(|&c| c == 0) else {
                    return Err(located("unfinished string in data"));
                };
                size = len as u64 + 1;
                results.push(Value::String(lua.create_string(&data[at..at + len])?))?;
            }
            _ => f.control(opt, &mut h)?,
        }
        pos = pos.wrapping_add(size);
    }
    results.push(Value::Number(pos.wrapping_add(1) as i64 as f64))?;
    Ok(results)
}

fn struct_size(lua: &Lua, args: &[Value], _nargs: i64) -> LibResult<Results> {
    let fmt = Args { lua, v: args }.bytes(1)?;
    let mut f = Format::new(&fmt);
    let mut h = Header::new();
    let mut pos: u64 = 0;
    while let Some(opt) = f.next_opt() {
        let size = f.size(opt)?;
        pos += struct_padding(pos, &h, opt, size);
        if opt == b's' {
            return Err(arg_error(1, "option 's' has no fixed size"));
        } else if opt == b'c' && size == 0 {
            return Err(arg_error(1, "option 'c0' has no fixed size"));
        }
        // Unknown letters and digits pass here (they take no room); pack and unpack
        // refuse them.
        if !opt.is_ascii_alphanumeric() {
            f.control(opt, &mut h)?;
        }
        pos += size;
    }
    Ok(Results::one(lua, Value::Number(pos as i64 as f64))?)
}

// ---------------------------------------------------------------------------------------
// cmsgpack: encoding
// ---------------------------------------------------------------------------------------

/// Tables nested deeper than this encode as nil (which also ends reference cycles).
const MP_MAX_NESTING: u32 = 16;

fn mp_pack(lua: &Lua, args: &[Value], nargs: i64) -> LibResult<Results> {
    let n = nargs;
    if n == 0 {
        return Err(arg_error(0, "MessagePack pack needs input."));
    }
    // `lua_checkstack(L, nargs)` on top of the arguments.
    if n + n > MAX_C_STACK {
        return Err(arg_error(0, "Too many arguments for MessagePack pack."));
    }
    let mut out = Vec::new();
    for (i, v) in args.iter().enumerate() {
        // The arguments, then one packed string per argument done, then a copy of this one.
        let height = n + i as i64;
        check_stack(height, 1, "in function mp_check")?;
        mp_encode(v, 0, height + 1, &mut out)?;
    }
    Ok(Results::one(lua, Value::String(lua.create_string(&out)?))?)
}

/// Encodes `v`, which sits at stack height `height` in the C code (for its stack checks).
fn mp_encode(v: &Value, level: u32, height: i64, out: &mut Vec<u8>) -> LibResult<()> {
    match v {
        Value::String(s) => mp_encode_bytes(&s.as_bytes(), out),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => mp_encode_int(*i, out),
        Value::Number(n) => {
            // An integer when the double converts to int64_t and back unchanged.
            let i = c_to_i64(*n);
            if !n.is_infinite() && i as f64 == *n {
                mp_encode_int(i, out)
            } else {
                mp_encode_double(*n, out)
            }
        }
        Value::Table(t) if level < MP_MAX_NESTING => mp_encode_table(t, level, height, out)?,
        _ => out.push(0xc0),
    }
    Ok(())
}

fn mp_encode_bytes(s: &[u8], out: &mut Vec<u8>) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= 0xff {
        out.extend([0xd9, len as u8]);
    } else if len <= 0xffff {
        out.push(0xda);
        out.extend((len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend((len as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

/// A float when the double survives the round trip through one, else a double.
fn mp_encode_double(d: f64, out: &mut Vec<u8>) {
    let f = d as f32;
    if f as f64 == d {
        out.push(0xca);
        out.extend(f.to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend(d.to_be_bytes());
    }
}

/// The smallest encoding of `n`; non-negative numbers use the unsigned forms.
fn mp_encode_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        match n {
            0..=127 => out.push(n as u8),
            128..=0xff => out.extend([0xcc, n as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend((n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend((n as u32).to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend(n.to_be_bytes());
            }
        }
    } else {
        match n {
            -32..=-1 => out.push(n as u8),
            -128..=-33 => out.extend([0xd0, n as u8]),
            -32768..=-129 => {
                out.push(0xd1);
                out.extend((n as i16).to_be_bytes());
            }
            -2_147_483_648..=-32769 => {
                out.push(0xd2);
                out.extend((n as i32).to_be_bytes());
            }
            _ => {
                out.push(0xd3);
                out.extend(n.to_be_bytes());
            }
        }
    }
}

/// An array when the keys are exactly 1..n (numbers that are C ints), else a map in the
/// table's `next` order. The table is walked twice, as the C code does, rather than its
/// pairs kept: each kept value would hold one of mlua's few thousand reference slots.
fn mp_encode_table(t: &Table, level: u32, height: i64, out: &mut Vec<u8>) -> LibResult<()> {
    check_stack(height, 2, "in function table_is_an_array")?;
    let mut is_array = true;
    let (mut count, mut max) = (0i32, 0i32);
    for pair in t.pairs::<Value, Value>() {
        let n = match pair?.0 {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => {
                is_array = false;
                break;
            }
        };
        if n <= 0.0 || n.is_infinite() || c_to_i32(n) as f64 != n {
            is_array = false;
            break;
        }
        max = max.max(n as i32);
        count += 1;
    }
    if is_array && max == count {
        check_stack(height, 1, "in function mp_encode_lua_table_as_array")?;
        let len = t.raw_len();
        mp_encode_len(len as u64, 0x90, 0xdc, out);
        for j in 1..=len {
            mp_encode(&t.raw_get::<Value>(j)?, level + 1, height + 1, out)?;
        }
    } else {
        check_stack(height, 3, "in function mp_encode_lua_table_as_map")?;
        let mut len = 0u64;
        for pair in t.pairs::<Value, Value>() {
            pair?;
            len += 1;
        }
        mp_encode_len(len, 0x80, 0xde, out);
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            // The C code encodes a copy of the key above the key and the value.
            mp_encode(&k, level + 1, height + 3, out)?;
            mp_encode(&v, level + 1, height + 2, out)?;
        }
    }
    Ok(())
}

/// An array or map header: the fix form, the 16-bit form (`long`), or the 32-bit one after it.
fn mp_encode_len(n: u64, fix: u8, long: u8, out: &mut Vec<u8>) {
    if n <= 15 {
        out.push(fix | n as u8);
    } else if n <= 0xffff {
        out.push(long);
        out.extend((n as u16).to_be_bytes());
    } else {
        out.push(long + 1);
        out.extend((n as u32).to_be_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// cmsgpack: decoding
// ---------------------------------------------------------------------------------------

fn mp_unpack(lua: &Lua, args: &[Value], nargs: i64) -> LibResult<Results> {
    let s = Args { lua, v: args }.bytes(1)?;
    // Every argument stays on the stack under the results.
    mp_unpack_full(lua, &s, 0, 0, nargs)
}

fn mp_unpack_one(lua: &Lua, args: &[Value], _nargs: i64) -> LibResult<Results> {
    let offset = Args { lua, v: args }.opt_integer(2, 0)?;
    // The C code drops every argument but the first before reading it.
    let s = Args { lua, v: &args[..args.len().min(1)] }.bytes(1)?;
    mp_unpack_full(lua, &s, 1, offset, 1)
}

fn mp_unpack_limit(lua: &Lua, args: &[Value], _nargs: i64) -> LibResult<Results> {
    let a = Args { lua, v: args };
    let limit = a.integer(2)?;
    let offset = a.opt_integer(3, 0)?;
    let s = Args { lua, v: &args[..args.len().min(1)] }.bytes(1)?;
    mp_unpack_full(lua, &s, limit, offset, 1)
}

/// Decodes up to `limit` values from `offset` (all of them when both are 0, the plain
/// `unpack`, which then returns no offset). `base` is the stack height under the results.
fn mp_unpack_full(lua: &Lua, s: &[u8], limit: i64, offset: i64, base: i64) -> LibResult<Results> {
    let len = s.len();
    let decode_all = limit == 0 && offset == 0;
    if offset < 0 || limit < 0 {
        // (lua-cmsgpack prints the input length where it says "limit".)
        return Err(located(format!(
            "Invalid request to unpack with offset of {} and limit of {}.",
            offset as i32, len as i32
        )));
    } else if offset as u64 > len as u64 {
        return Err(located(format!("Start offset {} greater than input length {}.", offset as i32, len as i32)));
    }
    let limit = if decode_all { i32::MAX as i64 } else { limit };
    let mut cur = Cursor { s, pos: offset as usize };
    let mut results = Results::new(lua)?;
    if !decode_all {
        // The next offset comes first; set once known.
        results.push(Value::Nil)?;
    }
    let mut decoder = Decoder::new(lua)?;
    let mut count: i64 = 0;
    while cur.left() > 0 && count < limit {
        match decoder.decode(&mut cur, base + count) {
            Ok(v) => results.push(v)?,
            Err(Stop::Eof) => return Err(located("Missing bytes in input.")),
            Err(Stop::BadFormat) => return Err(located("Bad data format in input.")),
            Err(Stop::Error(e)) => return Err(e),
        }
        count += 1;
    }
    if !decode_all {
        check_stack(base + count, 1, "in function mp_unpack_full")?;
        // The next offset to read from, or -1 once the input is consumed.
        let next = if cur.left() == 0 { -1.0 } else { cur.pos as f64 };
        results.t.raw_set(1, next)?;
    }
    Ok(results)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

/// Why decoding stopped.
enum Stop {
    Eof,
    BadFormat,
    Error(LibError),
}

impl From<mlua::Error> for Stop {
    fn from(e: mlua::Error) -> Self {
        Stop::Error(LibError::Lua(e))
    }
}

impl From<LibError> for Stop {
    fn from(e: LibError) -> Self {
        Stop::Error(e)
    }
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.s.len() - self.pos
    }

    /// The next `n` bytes, consumed.
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if self.left() < n {
            return Err(Stop::Eof);
        }
        let b = &self.s[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn be(&mut self, n: usize) -> Result<u64, Stop> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
    }
}

/// One item's head: a whole value, or a container still to fill.
enum Head {
    Value(Value),
    Array(u64),
    Map(u64),
}

/// A container being filled. `height` is the stack slot of its table in the C code.
struct Open {
    left: u64,
    height: i64,
    /// Arrays: the next index.
    index: i64,
    map: bool,
    /// Maps: whether the key waits for its value.
    has_key: bool,
}

/// Decodes values with an explicit stack (input can nest thousands deep before the C stack
/// limit stops it, and recursion could overflow the thread's stack first). The open
/// tables and waiting keys live in two Lua tables, indexed by depth, rather than as mlua
/// values, of which only about 8000 can be alive at once (see [`Results`]).
struct Decoder<'l> {
    lua: &'l Lua,
    tables: Table,
    keys: Table,
    open: Vec<Open>,
}

impl<'l> Decoder<'l> {
    fn new(lua: &'l Lua) -> mlua::Result<Decoder<'l>> {
        Ok(Decoder { lua, tables: lua.create_table()?, keys: lua.create_table()?, open: Vec::new() })
    }

    /// Decodes one value whose slot is above `height` slots in use.
    fn decode(&mut self, cur: &mut Cursor, mut height: i64) -> Result<Value, Stop> {
        self.open.clear();
        loop {
            // The C code checks for a byte, then for a stack slot, then reads.
            if cur.left() == 0 {
                return Err(Stop::Eof);
            }
            check_stack(height, 1, "too many return values at once; use unpack_one or unpack_limit instead.")?;
            let (n, map) = match mp_decode_head(self.lua, cur)? {
                Head::Value(v) => match self.deliver(v, &mut height)? {
                    Some(done) => return Ok(done),
                    None => continue,
                },
                Head::Array(n) => {
                    check_stack(height + 1, 1, "in function mp_decode_to_lua_array")?;
                    (n, false)
                }
                Head::Map(n) => (n, true),
            };
            let table = self.lua.create_table()?;
            if n == 0 {
                match self.deliver(Value::Table(table), &mut height)? {
                    Some(done) => return Ok(done),
                    None => continue,
                }
            }
            self.tables.raw_set(self.open.len() + 1, table)?;
            self.open.push(Open { left: n, height: height + 1, index: 1, map, has_key: false });
            // An array element sits above the table and its index; a map key above the table.
            height += if map { 1 } else { 2 };
        }
    }

    /// Hands a finished value to the open containers, closing the full ones: the whole
    /// value once the outermost closes, else the height for the next item.
    fn deliver(&mut self, mut value: Value, height: &mut i64) -> Result<Option<Value>, Stop> {
        loop {
            let depth = self.open.len();
            let Some(top) = self.open.last_mut() else { return Ok(Some(value)) };
            let table: Table = self.tables.raw_get(depth)?;
            if top.map && !top.has_key {
                self.keys.raw_set(depth, value)?;
                top.has_key = true;
                *height = top.height + 2;
                return Ok(None);
            }
            if top.map {
                let key: Value = self.keys.raw_get(depth)?;
                self.keys.raw_set(depth, Value::Nil)?;
                top.has_key = false;
                // `lua_settable` refuses these keys, whatever the value.
                match key {
                    Value::Nil => return Err(LibError::Bare(b"table index is nil".to_vec()).into()),
                    Value::Number(n) if n.is_nan() => return Err(LibError::Bare(b"table index is NaN".to_vec()).into()),
                    _ => {}
                }
                table.raw_set(key, value)?;
                *height = top.height + 1;
            } else {
                table.raw_set(top.index, value)?;
                top.index += 1;
                *height = top.height + 2;
            }
            top.left -= 1;
            if top.left > 0 {
                return Ok(None);
            }
            self.tables.raw_set(depth, Value::Nil)?;
            self.open.pop();
            value = Value::Table(table);
        }
    }
}

fn mp_decode_head(lua: &Lua, cur: &mut Cursor) -> Result<Head, Stop> {
    let num = |n: f64| Ok(Head::Value(Value::Number(n)));
    let c = cur.take(1)?[0];
    match c {
        0x00..=0x7f => num(c as f64),
        0xe0..=0xff => num(c as i8 as f64),
        0x80..=0x8f => Ok(Head::Map((c & 0x0f) as u64)),
        0x90..=0x9f => Ok(Head::Array((c & 0x0f) as u64)),
        0xa0..=0xbf => mp_decode_str(lua, cur, 0, (c & 0x1f) as u64),
        0xc0 => Ok(Head::Value(Value::Nil)),
        0xc2 => Ok(Head::Value(Value::Boolean(false))),
        0xc3 => Ok(Head::Value(Value::Boolean(true))),
        0xca => {
            let b = cur.take(4)?;
            num(f32::from_be_bytes(b.try_into().expect("4 bytes")) as f64)
        }
        0xcb => {
            let b = cur.take(8)?;
            num(f64::from_be_bytes(b.try_into().expect("8 bytes")))
        }
        0xcc => num(cur.be(1)? as f64),
        0xcd => num(cur.be(2)? as f64),
        0xce => num(cur.be(4)? as f64),
        // Pushed through `lua_Integer`: the top half of the range comes out negative.
        0xcf => num(cur.be(8)? as i64 as f64),
        0xd0 => num(cur.be(1)? as u8 as i8 as f64),
        0xd1 => num(cur.be(2)? as u16 as i16 as f64),
        0xd2 => num(cur.be(4)? as u32 as i32 as f64),
        0xd3 => num(cur.be(8)? as i64 as f64),
        0xd9 => {
            let n = peek_len(cur, 1)?;
            mp_decode_str(lua, cur, 1, n)
        }
        0xda => {
            let n = peek_len(cur, 2)?;
            mp_decode_str(lua, cur, 2, n)
        }
        0xdb => {
            let n = peek_len(cur, 4)?;
            mp_decode_str(lua, cur, 4, n)
        }
        0xdc => Ok(Head::Array(cur.be(2)?)),
        0xdd => Ok(Head::Array(cur.be(4)?)),
        0xde => Ok(Head::Map(cur.be(2)?)),
        0xdf => Ok(Head::Map(cur.be(4)?)),
        // nil's unused neighbour, bin, ext and fixext: not lua-cmsgpack's.
        _ => {
            cur.pos -= 1;
            Err(Stop::BadFormat)
        }
    }
}

/// The `n`-byte length after the type byte, without consuming it.
fn peek_len(cur: &mut Cursor, n: usize) -> Result<u64, Stop> {
    let save = cur.pos;
    let len = cur.be(n)?;
    cur.pos = save;
    Ok(len)
}

/// A string of `len` bytes after its `skip` length bytes (the type byte is consumed).
fn mp_decode_str(lua: &Lua, cur: &mut Cursor, skip: usize, len: u64) -> Result<Head, Stop> {
    if (cur.left() as u64) < skip as u64 + len {
        return Err(Stop::Eof);
    }
    cur.pos += skip;
    let b = cur.take(len as usize)?;
    Ok(Head::Value(Value::String(lua.create_string(b)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare interpreter with the two libraries, running chunks named as Redis names
    /// scripts (so errors carry `user_script:<line>:`).
    fn lua() -> Lua {
        let lua = Lua::new();
        lua.globals().raw_set("struct", struct_table(&lua).unwrap()).unwrap();
        lua.globals().raw_set("cmsgpack", cmsgpack_table(&lua).unwrap()).unwrap();
        lua
    }

    fn eval<R: mlua::FromLuaMulti>(lua: &Lua, code: &str) -> R {
        lua.load(code).set_name("@user_script").eval().unwrap_or_else(|e| panic!("{code}: {e}"))
    }

    fn bytes(lua: &Lua, code: &str) -> Vec<u8> {
        eval::<LuaString>(lua, code).as_bytes().to_vec()
    }

    /// The message `pcall` gives for `code` (which must fail).
    fn error_of(lua: &Lua, code: &str) -> String {
        let (ok, msg): (bool, Value) = eval(lua, &format!("return pcall(function() {code} end)"));
        assert!(!ok, "{code} should fail");
        match msg {
            Value::String(s) => s.to_string_lossy(),
            other => panic!("{code}: error is not a string: {other:?}"),
        }
    }

    #[test]
    fn struct_packs_integers_in_both_orders() {
        let lua = lua();
        assert_eq!(bytes(&lua, "return struct.pack('>i', 1)"), [0, 0, 0, 1]);
        assert_eq!(bytes(&lua, "return struct.pack('<i', 1)"), [1, 0, 0, 0]);
        assert_eq!(bytes(&lua, "return struct.pack('i', 1)"), [1, 0, 0, 0], "native is little-endian");
        assert_eq!(bytes(&lua, "return struct.pack('>h', -2)"), [0xff, 0xfe]);
        assert_eq!(bytes(&lua, "return struct.pack('>B', 300)"), [44], "wraps modulo 256");
        assert_eq!(bytes(&lua, "return struct.pack('>I3', 0x010203)"), [1, 2, 3]);
        assert_eq!(
            bytes(&lua, "return struct.pack('>i10', -1)"),
            [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(bytes(&lua, "return struct.pack('>l', 2.9)"), [0, 0, 0, 0, 0, 0, 0, 2], "truncates");
        assert_eq!(bytes(&lua, "return struct.pack('>L', '12')"), [0, 0, 0, 0, 0, 0, 0, 12], "a numeric string");
    }

    #[test]
    fn struct_casts_like_x86() {
        let lua = lua();
        assert_eq!(bytes(&lua, "return struct.pack('>L', 2^64)"), [0; 8]);
        assert_eq!(bytes(&lua, "return struct.pack('>L', 1/0)"), [0; 8]);
        assert_eq!(bytes(&lua, "return struct.pack('>L', 0/0)"), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(&lua, "return struct.pack('>l', -2^64)"), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(&lua, "return struct.pack('>L', 2^63 + 2^20)"), [0x80, 0, 0, 0, 0, 0x10, 0, 0]);
    }

    #[test]
    fn struct_unpack_reads_back_and_returns_next_position() {
        let lua = lua();
        let (a, b, c, d, next): (f64, f64, String, String, f64) =
            eval(&lua, "return struct.unpack('>hBc3s', struct.pack('>hBc3s', -300, 255, 'abc', 'zz'))");
        assert_eq!((a, b, c.as_str(), d.as_str(), next), (-300.0, 255.0, "abc", "zz", 10.0));
        let (f, d, next): (f64, f64, f64) = eval(&lua, "return struct.unpack('<fd', struct.pack('<fd', 0.1, 0.1))");
        assert_eq!(f, 0.1f32 as f64);
        assert_eq!(d, 0.1);
        assert_eq!(next, 13.0);
        let (s, next): (String, f64) = eval(&lua, "return struct.unpack('Bc0', '\\3abcd')");
        assert_eq!((s.as_str(), next), ("abc", 5.0), "c0 takes its length from the previous number");
        let (v, next): (f64, f64) = eval(&lua, "return struct.unpack('>b', 'xy', 2)");
        assert_eq!((v, next), (121.0, 3.0));
        let v: f64 = eval(&lua, "return struct.unpack('>i12', string.char(0,0,0,0, 128,0,0,0,0,0,0,0))");
        assert_eq!(v, -2147483648.0, "sign extension from the shift count modulo 64");
    }

    #[test]
    fn struct_aligns_with_bang() {
        let lua = lua();
        assert_eq!(bytes(&lua, "return struct.pack('!<bi', 1, 2)"), [1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(bytes(&lua, "return struct.pack('!2<bi', 1, 2)"), [1, 0, 2, 0, 0, 0]);
        assert_eq!(bytes(&lua, "return struct.pack('!<bc2', 1, 'xy')"), [1, b'x', b'y'], "strings never align");
        assert_eq!(eval::<f64>(&lua, "return struct.size('!bd')"), 16.0);
        assert_eq!(eval::<f64>(&lua, "return struct.size('bhlTfdxi7')"), 1.0 + 2.0 + 8.0 + 8.0 + 4.0 + 8.0 + 1.0 + 7.0);
        assert_eq!(eval::<f64>(&lua, "return struct.size('q')"), 0.0, "size skips unknown letters");
    }

    #[test]
    fn struct_errors_read_as_in_redis() {
        let lua = lua();
        assert_eq!(
            error_of(&lua, "return struct.pack('q', 1)"),
            "user_script:1: bad argument #1 to 'pack' (invalid format option 'q')"
        );
        assert_eq!(
            error_of(&lua, "return struct.pack('c5', 'ab')"),
            "user_script:1: bad argument #3 to 'pack' (string too short)"
        );
        assert_eq!(
            error_of(&lua, "return struct.pack('i', 'x')"),
            "user_script:1: bad argument #2 to 'pack' (number expected, got string)"
        );
        assert_eq!(
            error_of(&lua, "return struct.pack('i')"),
            "user_script:1: bad argument #2 to 'pack' (number expected, got nil)"
        );
        assert_eq!(
            error_of(&lua, "return struct.pack()"),
            "user_script:1: bad argument #1 to 'pack' (string expected, got no value)"
        );
        assert_eq!(
            error_of(&lua, "return struct.pack('i33', 1)"),
            "user_script:1: integral size 33 is larger than limit of 32"
        );
        assert_eq!(error_of(&lua, "return struct.pack('!3i', 1)"), "user_script:1: alignment 3 is not a power of 2");
        assert_eq!(error_of(&lua, "return struct.size('c99999999999')"), "user_script:1: integral size overflow");
        assert_eq!(
            error_of(&lua, "return struct.unpack('i', 'abc')"),
            "user_script:1: bad argument #2 to 'unpack' (data string too short)"
        );
        assert_eq!(
            error_of(&lua, "return struct.unpack('i', 'abcd', 0)"),
            "user_script:1: bad argument #3 to 'unpack' (offset must be 1 or greater)"
        );
        assert_eq!(error_of(&lua, "return struct.unpack('s', 'abc')"), "user_script:1: unfinished string in data");
        assert_eq!(
            error_of(&lua, "return struct.unpack('c0', 'abc')"),
            "user_script:1: format 'c0' needs a previous size"
        );
        assert_eq!(
            error_of(&lua, "return struct.size('s')"),
            "user_script:1: bad argument #1 to 'size' (option 's' has no fixed size)"
        );
        assert_eq!(
            error_of(&lua, "local p = struct.pack; p('=')"),
            "user_script:1: bad argument #1 to 'p' (invalid format option '=')",
            "the name is the one the script called"
        );
        // Called by pcall itself, there is no caller line and no name.
        let (ok, msg): (bool, String) = eval(&lua, "return pcall(struct.pack, 'q')");
        assert!(!ok);
        assert_eq!(msg, "bad argument #1 to '?' (invalid format option 'q')");
    }

    #[test]
    fn struct_unpack_counts_stack_slots() {
        let lua = lua();
        let n: f64 = eval(&lua, "return select('#', struct.unpack(string.rep('b', 7997), string.rep('a', 8000)))");
        assert_eq!(n, 7998.0);
        assert_eq!(
            error_of(&lua, "return struct.unpack(string.rep('b', 7998), string.rep('a', 8000))"),
            "user_script:1: stack overflow (too many results)"
        );
    }

    #[test]
    fn msgpack_picks_the_smallest_integer_encoding() {
        let lua = lua();
        let cases: &[(&str, &[u8])] = &[
            ("0", &[0x00]),
            ("127", &[0x7f]),
            ("128", &[0xcc, 0x80]),
            ("255", &[0xcc, 0xff]),
            ("256", &[0xcd, 0x01, 0x00]),
            ("65536", &[0xce, 0, 1, 0, 0]),
            ("2^32", &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
            ("-1", &[0xff]),
            ("-32", &[0xe0]),
            ("-33", &[0xd0, 0xdf]),
            ("-129", &[0xd1, 0xff, 0x7f]),
            ("-32769", &[0xd2, 0xff, 0xff, 0x7f, 0xff]),
            ("-2^31 - 1", &[0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]),
            ("-2^63", &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            ("-0.0", &[0x00]),
            ("1.5", &[0xca, 0x3f, 0xc0, 0, 0]),
            ("0.1", &[0xcb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]),
            ("2^63", &[0xca, 0x5f, 0, 0, 0]),
            ("1/0", &[0xca, 0x7f, 0x80, 0, 0]),
        ];
        for (expr, want) in cases {
            assert_eq!(bytes(&lua, &format!("return cmsgpack.pack({expr})")), *want, "{expr}");
        }
    }

    #[test]
    fn msgpack_tables_are_arrays_only_for_keys_1_to_n() {
        let lua = lua();
        assert_eq!(bytes(&lua, "return cmsgpack.pack({})"), [0x90]);
        assert_eq!(bytes(&lua, "return cmsgpack.pack({1, 'a', true})"), [0x93, 1, 0xa1, b'a', 0xc3]);
        assert_eq!(bytes(&lua, "return cmsgpack.pack({[2] = 1})"), [0x81, 2, 1]);
        assert_eq!(bytes(&lua, "return cmsgpack.pack({[1.5] = 1})"), [0x81, 0xca, 0x3f, 0xc0, 0, 0, 1]);
        assert_eq!(bytes(&lua, "return cmsgpack.pack({a = false})"), [0x81, 0xa1, b'a', 0xc2]);
        assert_eq!(bytes(&lua, "return cmsgpack.pack(nil, print)"), [0xc0, 0xc0]);
        // Nesting beyond 16 tables is cut to nil.
        let deep = bytes(&lua, "local t = {} ; t[1] = t ; return cmsgpack.pack(t)");
        assert_eq!(deep, [vec![0x91; 16], vec![0xc0]].concat());
    }

    #[test]
    fn msgpack_strings_use_str8_to_str32() {
        let lua = lua();
        for (n, head) in
            [(31usize, vec![0xbf]), (32, vec![0xd9, 32]), (256, vec![0xda, 1, 0]), (65536, vec![0xdb, 0, 1, 0, 0])]
        {
            let b = bytes(&lua, &format!("return cmsgpack.pack(string.rep('x', {n}))"));
            assert_eq!(&b[..head.len()], &head[..], "length {n}");
            assert_eq!(b.len(), head.len() + n);
        }
    }

    #[test]
    fn msgpack_round_trips_and_unpacks_every_type() {
        let lua = lua();
        let ok: bool = eval(
            &lua,
            r#"
            local t = {1, -2, 3.25, 'x', {a = {true, false}}, 2^40, -2^40}
            local u = cmsgpack.unpack(cmsgpack.pack(t))
            return u[1] == 1 and u[2] == -2 and u[3] == 3.25 and u[4] == 'x' and u[5].a[1] == true
                and u[5].a[2] == false and u[6] == 2^40 and u[7] == -2^40 and #u == 7
            "#,
        );
        assert!(ok);
        // uint64 goes through lua_Integer: the top half comes out negative.
        let v: f64 = eval(&lua, "return cmsgpack.unpack(string.char(0xcf, 255,255,255,255,255,255,255,255))");
        assert_eq!(v, -1.0);
        let (a, b, c): (f64, f64, f64) = eval(&lua, "return cmsgpack.unpack(string.char(1, 2, 3))");
        assert_eq!((a, b, c), (1.0, 2.0, 3.0), "a stream unpacks to several values");
        let n: f64 =
            eval(&lua, "local t = cmsgpack.unpack(string.char(0x93, 1, 0xc0, 3)) return t[2] == nil and t[3] or -1");
        assert_eq!(n, 3.0, "nil inside an array leaves a hole");
    }

    #[test]
    fn msgpack_unpack_one_and_limit_return_the_next_offset() {
        let lua = lua();
        let (off, v): (f64, f64) = eval(&lua, "return cmsgpack.unpack_one(string.char(1, 2, 3))");
        assert_eq!((off, v), (1.0, 1.0));
        let (off, v): (f64, f64) = eval(&lua, "return cmsgpack.unpack_one(string.char(1, 2, 3), 2)");
        assert_eq!((off, v), (-1.0, 3.0));
        let (off, a, b): (f64, f64, f64) = eval(&lua, "return cmsgpack.unpack_limit(string.char(1, 2, 3), 2)");
        assert_eq!((off, a, b), (2.0, 1.0, 2.0));
        let n: f64 = eval(&lua, "return select('#', cmsgpack.unpack_limit(string.char(1, 2, 3), 0))");
        assert_eq!(n, 3.0, "limit 0 at offset 0 decodes everything, without an offset");
        let off: f64 = eval(&lua, "return cmsgpack.unpack_limit(string.char(1, 2, 3), 0, 1)");
        assert_eq!(off, 1.0);
    }

    #[test]
    fn msgpack_errors_read_as_in_redis() {
        let lua = lua();
        assert_eq!(
            error_of(&lua, "return cmsgpack.pack()"),
            "user_script:1: bad argument #0 to 'pack' (MessagePack pack needs input.)"
        );
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack(string.char(0xc1))"),
            "user_script:1: Bad data format in input."
        );
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack(string.char(0x92, 1))"),
            "user_script:1: Missing bytes in input."
        );
        assert_eq!(error_of(&lua, "return cmsgpack.unpack(string.char(0x81, 0xc0, 1))"), "table index is nil");
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack_one('abc', -1)"),
            "user_script:1: Invalid request to unpack with offset of -1 and limit of 3."
        );
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack_one('abc', 4)"),
            "user_script:1: Start offset 4 greater than input length 3."
        );
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack_limit('abc')"),
            "user_script:1: bad argument #2 to 'unpack_limit' (number expected, got no value)"
        );
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack({})"),
            "user_script:1: bad argument #1 to 'unpack' (string expected, got table)"
        );
    }

    #[test]
    fn msgpack_decoding_counts_stack_slots_without_recursing() {
        let lua = lua();
        let n: f64 = eval(&lua, "return select('#', cmsgpack.unpack(string.rep('a', 7999)))");
        assert_eq!(n, 7999.0);
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack(string.rep('a', 8000))"),
            "user_script:1: stack overflow (too many return values at once; use unpack_one or unpack_limit instead.)"
        );
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack(string.rep(string.char(0x91), 4000) .. 'a')"),
            "user_script:1: stack overflow (in function mp_decode_to_lua_array)"
        );
        // Maps nested as keys climb one slot per level: 7998 deep fit, then the value is missing.
        assert_eq!(
            error_of(&lua, "return cmsgpack.unpack(string.rep(string.char(0x81), 7998) .. 'a')"),
            "user_script:1: Missing bytes in input."
        );
        let n: f64 = eval(&lua, "return #{cmsgpack.unpack(string.rep(string.char(0x91), 3999) .. 'a')}");
        assert_eq!(n, 1.0);
    }

    #[test]
    fn thousands_of_results_do_not_exhaust_mlua_references() {
        // Each live mlua value takes a slot of an auxiliary Lua stack limited like any C
        // stack: results and open tables must not all be held as values at once.
        let lua = lua();
        let n: f64 = eval(&lua, "return select('#', cmsgpack.unpack(string.rep(string.char(0xa1, 0x61), 7999)))");
        assert_eq!(n, 7999.0);
        let n: f64 = eval(&lua, "return select('#', struct.unpack(string.rep('c1', 7996), string.rep('a', 8000), 1))");
        assert_eq!(n, 7997.0);
        // Arguments the function does not read are not handed to Rust, but still count.
        let n: f64 = eval(
            &lua,
            "local t = {} for i = 1, 7990 do t[i] = 'x' end return select('#', struct.unpack('b', 'a', 1, unpack(t)))",
        );
        assert_eq!(n, 2.0);
        assert_eq!(
            error_of(&lua, "local t = {} for i = 1, 7990 do t[i] = 'x' end return struct.unpack('bbbbbbb', 'abcdefg', 1, unpack(t))"),
            "user_script:1: stack overflow (too many results)"
        );
        let ok: bool =
            eval(&lua, "local t = {} for i = 1, 20000 do t['k' .. i] = {i} end return #cmsgpack.pack(t) > 20000");
        assert!(ok);
    }
}
