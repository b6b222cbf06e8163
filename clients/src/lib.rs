//! # redoubt-client
//!
//! A small async client for redoubt (it also speaks to any Redis): one TCP connection,
//! RESP2 or RESP3, pipelining, and out-of-band push frames kept apart from replies.
//!
//! Where it sits: at the edge of the flow, on the caller's side. The gateway and the test
//! harness use it to talk to redoubt nodes; it depends only on `redoubt-protocol`, whose
//! `client_codec` parses replies with the `redis-protocol` crate. Typed helpers for the native
//! commands (rate limits, locks) and node failover will be added with those features.
//!
//! Two shapes: [`Client`] is one connection used by one task (tests, tools); [`Shared`] is a
//! cloneable handle that many tasks share, pipelining their commands over one connection and
//! moving to another node when one fails (services such as the gateway).

mod shared;
pub use shared::{Script, Shared};

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::BytesMut;
pub use redoubt_protocol::client_codec::Value;
use redoubt_protocol::client_codec::{decode_reply, encode_command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("connection closed by server")]
    Closed,
}

pub type Result<T> = std::result::Result<T, Error>;

/// One connection to a server.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    resp3: bool,
    /// Push frames (pub/sub messages, invalidations) received while waiting for replies.
    pushes: VecDeque<Value>,
}

impl Client {
    /// Connects with RESP2 (the protocol every connection starts in).
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client { stream, buf: BytesMut::with_capacity(16 * 1024), resp3: false, pushes: VecDeque::new() })
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// Switches the connection to RESP3 with `HELLO 3` and returns the HELLO reply.
    pub async fn hello3(&mut self) -> Result<Value> {
        self.resp3 = true;
        let v = self.cmd(&["HELLO", "3"]).await?;
        if v.is_error() {
            self.resp3 = false;
        }
        Ok(v)
    }

    /// Tells the decoder which protocol the server now speaks (after a raw HELLO).
    pub fn set_resp3(&mut self, on: bool) {
        self.resp3 = on;
    }

    /// Sends one command and waits for its reply.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        self.stream.write_all(&out).await?;
        self.read_reply().await
    }

    /// Sends several commands in one write and reads all their replies.
    pub async fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for c in cmds {
            encode_command(c, &mut out);
        }
        self.stream.write_all(&out).await?;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    /// Writes raw bytes (for protocol tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads the next reply, setting RESP3 push frames aside.
    pub async fn read_reply(&mut self) -> Result<Value> {
        loop {
            let v = self.read_frame().await?;
            if matches!(v, Value::Push(_)) {
                self.pushes.push_back(v);
                continue;
            }
            return Ok(v);
        }
    }

    /// Reads the next frame of any kind: a queued push first, then the wire.
    pub async fn read_frame(&mut self) -> Result<Value> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(p);
        }
        loop {
            if let Some(v) = decode_reply(&mut self.buf, self.resp3).map_err(Error::Protocol)? {
                return Ok(v);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// Waits until the server closes the connection, returning what it sent first.
    pub async fn read_to_close(&mut self) -> Result<Vec<u8>> {
        let mut rest = self.buf.split().to_vec();
        self.stream.read_to_end(&mut rest).await?;
        Ok(rest)
    }
}
