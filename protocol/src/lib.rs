//! # redoubt-protocol
//!
//! The wire layer of redoubt: bytes in, commands out; replies in, bytes out.
//! It has no sockets and no keyspace.
//!
//! Where it sits in the write flow:
//!
//! ```text
//! socket bytes -> [RequestDecoder] -> argv -> server dispatch -> keyspace apply
//!              <- [ReplyBuf]       <- reply <-
//! ```
//!
//! * [`RequestDecoder`] turns a client's byte stream into argument vectors, exactly as Redis's
//!   `processMultibulkBuffer`/`processInlineBuffer` do: multibulk and inline requests, Redis's
//!   protocol error texts, and hard limits (`proto-max-bulk-len`, multibulk count,
//!   `client-query-buffer-limit`) that are checked *before* memory is reserved. It remembers
//!   how far it got, so a large bulk arriving in pieces is never re-parsed from the start.
//!   Arguments are [`bytes::Bytes`] slices of the read buffer: no copy on the hot path.
//! * [`ReplyBuf`] writes replies straight into one output buffer in RESP2 or RESP3, with
//!   Redis's formatting of doubles, nulls, maps and sets for each protocol version.
//! * [`num`] holds the number parsing and formatting rules Redis uses (`string2ll`,
//!   `%.17g` doubles), shared by the decoder and the command implementations.
//!
//! The generic RESP parser of the `redis-protocol` crate is used where a *client* parses
//! server replies (see [`client_codec`]): the `redoubt-client` crate and the test harness
//! decode every reply, from redoubt and from the real `redis-server`, with it. The server's
//! request path uses its own decoder because Redis's request grammar is narrower than RESP
//! (only arrays of bulk strings, or inline text) and has error texts and limits that the
//! generic parser cannot give.

pub mod client_codec;
pub mod decode;
pub mod encode;
pub mod longdouble;
pub mod num;

pub use decode::{Limits, ProtocolError, RequestDecoder};
pub use encode::ReplyBuf;
