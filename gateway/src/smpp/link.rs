//! One SMPP connection's outgoing half, shared by the tasks that use it.
//!
//! Both sides of the gateway talk over links: customer sessions (we are the SMSC) and vendor
//! binds (we are the ESME). A link owns the socket's write half through a writer task that
//! coalesces whatever PDUs are queued into one write, numbers our requests, and matches the
//! peer's responses to them by sequence number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use super::pdu;

/// PDUs queued for the writer before senders wait (bounds a link's memory when the peer stops
/// reading).
const OUT_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the connection is closed")]
    Closed,
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

pub struct Link {
    out: mpsc::Sender<BytesMut>,
    seq: AtomicU32,
    pending: Mutex<HashMap<u32, oneshot::Sender<Command>>>,
    closed: AtomicBool,
}

impl Link {
    /// Starts the writer for `w`. The link closes when the writer fails or [`Link::close`].
    pub fn new(mut w: OwnedWriteHalf) -> std::sync::Arc<Link> {
        let (tx, mut rx) = mpsc::channel::<BytesMut>(OUT_QUEUE);
        let link = std::sync::Arc::new(Link {
            out: tx,
            seq: AtomicU32::new(1),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let weak = std::sync::Arc::downgrade(&link);
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            while let Some(first) = rx.recv().await {
                buf.extend_from_slice(&first);
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => buf.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                if w.write_all(&buf).await.is_err() {
                    break;
                }
                buf.clear();
            }
            let _ = w.shutdown().await;
            if let Some(link) = weak.upgrade() {
                link.close();
            }
        });
        link
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Fails every request waiting for a response; later sends fail at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn next_seq(&self) -> u32 {
        // Sequence numbers run 1..=0x7FFFFFFF (SMPP 5, 3.2.3).
        let s = self.seq.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        if s == 0 {
            self.seq.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff
        } else {
            s
        }
    }

    /// Queues one PDU (a response, or a request nobody waits for).
    pub async fn send(&self, cmd: &Command) -> Result<(), LinkError> {
        let mut b = BytesMut::with_capacity(64);
        pdu::encode(cmd, &mut b);
        self.send_bytes(b).await
    }

    async fn send_bytes(&self, b: BytesMut) -> Result<(), LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed);
        }
        self.out.send(b).await.map_err(|_| LinkError::Closed)
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, pdu: impl Into<Pdu>, wait: Duration) -> Result<Command, LinkError> {
        let seq = self.next_seq();
        let mut b = BytesMut::with_capacity(128);
        pdu::encode(&Command::new(CommandStatus::EsmeRok, seq, pdu), &mut b);
        self.exchange(seq, b, wait).await
    }

    /// Sends a request whose body is already encoded (a queued submit_sm) and waits.
    pub async fn request_raw(&self, id: CommandId, body: &[u8], wait: Duration) -> Result<Command, LinkError> {
        let seq = self.next_seq();
        let mut b = BytesMut::with_capacity(16 + body.len());
        pdu::encode_raw(id, seq, body, &mut b);
        self.exchange(seq, b, wait).await
    }

    async fn exchange(&self, seq: u32, b: BytesMut, wait: Duration) -> Result<Command, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(seq, tx);
        if let Err(e) = self.send_bytes(b).await {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&seq);
            return Err(e);
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(_)) => Err(LinkError::Closed),
            Err(_) => {
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&seq);
                Err(LinkError::Timeout(wait))
            }
        }
    }

    /// Hands a response (or a generic_nack) to the request waiting for it. False when nobody
    /// waits (a late or unsolicited response).
    pub fn complete(&self, cmd: Command) -> bool {
        let waiter = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&cmd.sequence_number());
        match waiter {
            Some(w) => w.send(cmd).is_ok(),
            None => false,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Is this a response PDU (command_id high bit set)?
pub fn is_response(id: CommandId) -> bool {
    u32::from(id) & 0x8000_0000 != 0
}
