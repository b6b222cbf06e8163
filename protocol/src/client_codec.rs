//! The client side of the wire: encode a command, decode a reply.
//!
//! Replies are parsed with the `redis-protocol` crate (RESP2 and RESP3 decoders) and turned
//! into [`Value`], an owned tree that keeps the distinctions clients and tests care about
//! (simple vs bulk string, map vs array, double vs string, null array vs null bulk).
//! The `redoubt-client` crate and the differential tests use this, so redoubt's replies are
//! judged by an independent parser rather than by the code that produced them.

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut as decode2;
use redis_protocol::resp2::types::BytesFrame as F2;
use redis_protocol::resp3::decode::complete::decode_bytes_mut as decode3;
use redis_protocol::resp3::types::BytesFrame as F3;

/// One decoded reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// RESP2 `$-1` or RESP3 `_`.
    Nil,
    /// RESP2 `*-1`.
    NilArray,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Double(f64),
    Bool(bool),
    Verbatim(String, Vec<u8>),
    BigNumber(Vec<u8>),
    Push(Vec<Value>),
}

impl Value {
    /// The bytes of a simple, bulk or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) | Value::Verbatim(_, b) => Some(b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// A compact one-line rendering for test failure messages.
    pub fn render(&self) -> String {
        fn s(b: &[u8]) -> String {
            String::from_utf8_lossy(b).into_owned()
        }
        match self {
            Value::Simple(b) => format!("+{}", s(b)),
            Value::Error(e) => format!("-{e}"),
            Value::Int(i) => format!(":{i}"),
            Value::Bulk(b) => format!("{:?}", s(b)),
            Value::Nil => "nil".into(),
            Value::NilArray => "nil-array".into(),
            Value::Double(d) => format!(",{d}"),
            Value::Bool(b) => format!("#{b}"),
            Value::Verbatim(f, b) => format!("={f}:{}", s(b)),
            Value::BigNumber(b) => format!("({}", s(b)),
            Value::Array(v) => format!("[{}]", v.iter().map(Value::render).collect::<Vec<_>>().join(", ")),
            Value::Set(v) => format!("~{{{}}}", v.iter().map(Value::render).collect::<Vec<_>>().join(", ")),
            Value::Push(v) => format!(">[{}]", v.iter().map(Value::render).collect::<Vec<_>>().join(", ")),
            Value::Map(v) => format!(
                "%{{{}}}",
                v.iter().map(|(k, v)| format!("{}: {}", k.render(), v.render())).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// Encodes a command as a RESP multibulk.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes one reply from `buf` (consuming it), or `Ok(None)` if incomplete.
pub fn decode_reply(buf: &mut BytesMut, resp3: bool) -> Result<Option<Value>, String> {
    if buf.starts_with(b"*-1\r\n") {
        let _ = buf.split_to(5);
        return Ok(Some(Value::NilArray));
    }
    if resp3 {
        match decode3(buf) {
            Ok(Some((f, _, _))) => Ok(Some(from3(f))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    } else {
        match decode2(buf) {
            Ok(Some((f, _, _))) => Ok(Some(from2(f))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn from2(f: F2) -> Value {
    match f {
        F2::SimpleString(b) => Value::Simple(b.to_vec()),
        F2::Error(e) => Value::Error(e.to_string()),
        F2::Integer(i) => Value::Int(i),
        F2::BulkString(b) => Value::Bulk(b.to_vec()),
        F2::Array(v) => Value::Array(v.into_iter().map(from2).collect()),
        F2::Null => Value::Nil,
    }
}

fn from3(f: F3) -> Value {
    match f {
        F3::BlobString { data, .. } => Value::Bulk(data.to_vec()),
        F3::BlobError { data, .. } => Value::Error(String::from_utf8_lossy(&data).into_owned()),
        F3::SimpleString { data, .. } => Value::Simple(data.to_vec()),
        F3::SimpleError { data, .. } => Value::Error(data.to_string()),
        F3::Boolean { data, .. } => Value::Bool(data),
        F3::Null => Value::Nil,
        F3::Number { data, .. } => Value::Int(data),
        F3::Double { data, .. } => Value::Double(data),
        F3::BigNumber { data, .. } => Value::BigNumber(data.to_vec()),
        F3::VerbatimString { data, format, .. } => {
            let fmt = match format {
                redis_protocol::resp3::types::VerbatimStringFormat::Text => "txt",
                redis_protocol::resp3::types::VerbatimStringFormat::Markdown => "mkd",
            };
            Value::Verbatim(fmt.to_string(), data.to_vec())
        }
        F3::Array { data, .. } => Value::Array(data.into_iter().map(from3).collect()),
        // redis-protocol 6 builds maps by popping pairs off the end of the frame, so its
        // (ordered) IndexMap holds them last-to-first: reverse to get the wire order back.
        F3::Map { data, .. } => Value::Map(data.into_iter().rev().map(|(k, v)| (from3(k), from3(v))).collect()),
        F3::Set { data, .. } => Value::Set(data.into_iter().map(from3).collect()),
        F3::Push { data, .. } => Value::Push(data.into_iter().map(from3).collect()),
        F3::Hello { .. } => Value::Error("unexpected HELLO frame".into()),
        F3::ChunkedString(b) => Value::Bulk(b.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyBuf;

    #[test]
    fn our_encoder_decodes_with_redis_protocol() {
        for resp3 in [false, true] {
            let mut r = ReplyBuf::new(resp3);
            r.map(2);
            r.bulk(b"a");
            r.int(1);
            r.simple("b");
            r.double(2.5);
            let mut b = r.buf.clone();
            let v = decode_reply(&mut b, resp3).unwrap().unwrap();
            if resp3 {
                assert_eq!(
                    v,
                    Value::Map(vec![
                        (Value::Bulk(b"a".to_vec()), Value::Int(1)),
                        (Value::Simple(b"b".to_vec()), Value::Double(2.5)),
                    ])
                );
            } else {
                assert_eq!(
                    v,
                    Value::Array(vec![
                        Value::Bulk(b"a".to_vec()),
                        Value::Int(1),
                        Value::Simple(b"b".to_vec()),
                        Value::Bulk(b"2.5".to_vec()),
                    ])
                );
            }
        }
    }
}
