//! Exactly-once forwarding: the replies of forwarded writes, kept in the replicated state
//! so that a retried forward is answered from the table instead of running again.
//!
//! A follower forwards each client write to the leader under a *session* (the follower's
//! `origin`, a random number drawn at its start, and the client's id) and a sequence
//! number that only grows within that follower. When the link breaks or the leader
//! changes before the reply arrives, the follower sends the same request again, to
//! whichever node leads by then. The leader that ran the write recorded, in the same log
//! entry as the write's own operations, an operation saying "session S's request N
//! replied R". So the retry finds either
//!
//! * the record (the write ran, and committed or is about to): it gets R again, after
//!   waiting for that entry to commit; or
//! * no record (the write never reached the log a new leader holds): it runs now, once.
//!
//! A request older than the session's last one is a stale copy (its answer already
//! reached the client) and is refused without running. Records are dropped
//! [`SESSION_TTL_MS`] after they were written, by an operation the leader's cron proposes,
//! so every node drops the same ones; a forward older than half that is refused, so no
//! retry can outlive its record.

use bytes::Bytes;
use hashbrown::HashMap;

use crate::keyspace::Op;

/// How long a session's last reply is kept (unix ms of the operation that wrote it).
pub const SESSION_TTL_MS: i64 = 60_000;

/// A forward first sent longer ago than this is refused: its record may be gone.
pub const MAX_FORWARD_AGE_MS: i64 = SESSION_TTL_MS / 2;

/// Operation names no client command can have (they start with a NUL byte): they change
/// the session table, not the keyspace.
const OP_REPLY: &[u8] = b"\0forward-reply";
const OP_EXPIRE: &[u8] = b"\0forward-expire";

/// Who forwarded a request: the forwarding node's origin and its client's id.
pub type SessionId = (u64, u64);

/// The last forwarded request of a session and its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Last {
    pub seq: u64,
    pub reply: Bytes,
    pub at_ms: i64,
}

/// The session table, part of the replicated state (and of snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    map: HashMap<SessionId, Last>,
}

/// What the leader does with a forwarded write, given the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen: run it.
    Run,
    /// Already ran: answer this reply (once what recorded it commits).
    Replay(Bytes),
    /// Older than the session's last request: a stale copy nobody waits for.
    Stale,
}

impl Sessions {
    pub fn lookup(&self, id: SessionId, seq: u64) -> Lookup {
        match self.map.get(&id) {
            Some(last) if last.seq == seq => Lookup::Replay(last.reply.clone()),
            Some(last) if last.seq > seq => Lookup::Stale,
            _ => Lookup::Run,
        }
    }

    /// Records a reply in the table and returns the operation that records it everywhere.
    pub fn record(&mut self, id: SessionId, seq: u64, reply: Bytes, now_ms: i64) -> Op {
        self.map.insert(id, Last { seq, reply: reply.clone(), at_ms: now_ms });
        Op {
            db: 0,
            now_ms,
            argv: vec![
                Bytes::from_static(OP_REPLY),
                Bytes::copy_from_slice(&id.0.to_le_bytes()),
                Bytes::copy_from_slice(&id.1.to_le_bytes()),
                Bytes::copy_from_slice(&seq.to_le_bytes()),
                reply,
            ],
        }
    }

    /// On the leader's cron: if some record is due, drops the due ones and returns the
    /// operation that drops them everywhere.
    pub fn expire_due(&mut self, now_ms: i64) -> Option<Op> {
        let cutoff = now_ms - SESSION_TTL_MS;
        if !self.map.values().any(|l| l.at_ms <= cutoff) {
            return None;
        }
        self.map.retain(|_, l| l.at_ms > cutoff);
        Some(Op { db: 0, now_ms, argv: vec![Bytes::from_static(OP_EXPIRE)] })
    }

    /// Applies `op` if it is a session operation (true), leaving others to the command
    /// table (false).
    pub fn apply(&mut self, op: &Op) -> bool {
        let Some(name) = op.argv.first().filter(|a| a.first() == Some(&0)) else { return false };
        let u64_at = |i: usize| op.argv.get(i).and_then(|a| <[u8; 8]>::try_from(&a[..]).ok()).map(u64::from_le_bytes);
        if name[..] == *OP_REPLY {
            if let (Some(origin), Some(client), Some(seq), Some(reply)) =
                (u64_at(1), u64_at(2), u64_at(3), op.argv.get(4))
            {
                self.map.insert((origin, client), Last { seq, reply: reply.clone(), at_ms: op.now_ms });
                return true;
            }
        } else if name[..] == *OP_EXPIRE {
            let cutoff = op.now_ms - SESSION_TTL_MS;
            self.map.retain(|_, l| l.at_ms > cutoff);
            return true;
        }
        // Written by this build on some node: an unknown one means a newer build wrote the
        // log this node applies, or corruption. Neither may be skipped silently.
        tracing::error!(op = %String::from_utf8_lossy(name), "unknown internal operation in the log; stopping");
        std::process::abort();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every record, in a stable order (for snapshots).
    pub fn records(&self) -> Vec<(SessionId, &Last)> {
        let mut v: Vec<_> = self.map.iter().map(|(id, l)| (*id, l)).collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    pub fn insert(&mut self, id: SessionId, last: Last) {
        self.map.insert(id, last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_reply_is_replayed_and_older_requests_are_stale() {
        let mut s = Sessions::default();
        let id = (7, 42);
        assert_eq!(s.lookup(id, 5), Lookup::Run);
        let op = s.record(id, 5, Bytes::from_static(b":1\r\n"), 1_000);
        assert_eq!(s.lookup(id, 5), Lookup::Replay(Bytes::from_static(b":1\r\n")));
        assert_eq!(s.lookup(id, 4), Lookup::Stale);
        assert_eq!(s.lookup(id, 6), Lookup::Run);
        assert_eq!(s.lookup((7, 43), 5), Lookup::Run);

        // A replica applying the recorded op ends with the same table.
        let mut replica = Sessions::default();
        assert!(replica.apply(&op));
        assert_eq!(replica, s);
        let plain = Op { db: 0, now_ms: 0, argv: vec![Bytes::from_static(b"SET")] };
        assert!(!replica.apply(&plain));
    }

    #[test]
    fn expiry_is_driven_by_the_operation_time() {
        let mut s = Sessions::default();
        s.record((1, 1), 1, Bytes::new(), 1_000);
        s.record((1, 2), 1, Bytes::new(), 30_000);
        let mut replica = s.clone();
        assert!(s.expire_due(1_000 + SESSION_TTL_MS - 1).is_none());
        let op = s.expire_due(1_000 + SESSION_TTL_MS).expect("one record due");
        assert_eq!(s.len(), 1);
        assert!(replica.apply(&op));
        assert_eq!(replica, s);
    }
}
