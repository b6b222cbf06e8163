//! The keyspace as a Raft state machine: what every node does with a committed entry, and
//! how the keyspace is written to and read from a snapshot.

use std::io;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::codec::{self, SnapshotHeader};
use super::Ticket;
use crate::keyspace::Keyspace;
use crate::shared::{Shared, State};

/// The server side of `redoubt_raft::StateMachine`. Holds the server weakly: the server
/// owns the Raft instance that owns this.
pub struct ServerSm {
    pub shared: Weak<Shared>,
}

impl ServerSm {
    fn shared(&self) -> Arc<Shared> {
        // Raft is shut down before the server state is dropped; reaching this is a bug.
        self.shared.upgrade().expect("server state outlives its Raft instance")
    }
}

impl redoubt_raft::StateMachine for ServerSm {
    fn apply(&self, entries: &[(u64, &[u8])], raft_state: &[u8]) {
        let shared = self.shared();
        let mut st = shared.state.lock();
        st.repl.raft_state.clear();
        st.repl.raft_state.extend_from_slice(raft_state);
        for &(index, payload) in entries {
            apply_payload(&shared, &mut st, index, payload);
        }
        if !st.ks.ready.is_empty() {
            crate::conn::serve_ready(&shared, &mut st);
        }
        let events = std::mem::take(&mut st.ks.events);
        drop(st);
        if !events.is_empty() {
            let flags = shared.config.read().notify_keyspace_events;
            shared.publish_events(events, flags);
        }
    }

    async fn snapshot(&self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let shared = self.shared();
        // A cluster leader's keyspace may hold operations not yet committed; a snapshot of
        // it could then claim state the log later loses. Hold writes (and the deletions of
        // expiry and eviction) until what is in flight commits, then serialize.
        let held = hold_until_committed(&shared).await;
        let st = shared.state.lock();
        let fx = st.ks.effects.as_ref().map_or(0, |v| v.len());
        let w = st.repl.watermark(fx);
        let mut out = Vec::with_capacity(st.ks.dbs.iter().map(|d| d.table.len()).sum::<usize>() * 48 + 64);
        let raft_state = st.repl.raft_state.clone();
        codec::write_snapshot(
            &st.ks,
            &SnapshotHeader {
                epoch: w.epoch,
                seq: w.seq,
                raft_state: raft_state.clone(),
                sessions: st.repl.sessions.clone(),
            },
            &mut out,
        );
        drop(st);
        if held {
            release_hold(&shared);
        }
        Ok((out, raft_state))
    }

    fn restore(&self, data: &mut dyn io::Read) -> io::Result<Vec<u8>> {
        let shared = self.shared();
        let databases = shared.config.read().databases;
        let mut fresh = Keyspace::new(databases);
        let header = codec::read_snapshot(&mut fresh, data)?;
        let mut st = shared.state.lock();
        // Whatever this node held is replaced: watchers of any key are invalidated, as a
        // FLUSHALL would.
        for db in 0..st.ks.dbs.len() {
            st.ks.flush_db(db);
        }
        std::mem::swap(&mut st.ks.dbs, &mut fresh.dbs);
        std::mem::swap(&mut st.ks.libraries, &mut fresh.libraries);
        st.repl.applied = Ticket { epoch: header.epoch, seq: header.seq };
        st.repl.raft_state = header.raft_state.clone();
        st.repl.sessions = header.sessions;
        st.ks.events.clear();
        Ok(header.raft_state)
    }
}

/// On a cluster leader with operations in flight: holds writes and waits until everything
/// the keyspace holds is committed (or the leadership ends). True if a hold was taken.
async fn hold_until_committed(shared: &Arc<Shared>) -> bool {
    let Some(repl) = shared.repl.get().filter(|r| r.clustered) else { return false };
    let target = {
        let mut st = shared.state.lock();
        if st.repl.leader_epoch == 0 {
            return false;
        }
        let fx = st.ks.effects.as_ref().map_or(0, |v| v.len());
        let w = st.repl.watermark(fx);
        let c = *repl.subscribe().borrow();
        if c.epoch == w.epoch && c.seq >= w.seq {
            return false;
        }
        // Under the lock: no batch is running, and every later write sees the hold.
        shared.write_hold.store(true, std::sync::atomic::Ordering::Release);
        st.ks.replica = true;
        w
    };
    repl.wake_proposer();
    let mut rx = repl.subscribe();
    let _ = rx.wait_for(|c| c.epoch != target.epoch || c.seq >= target.seq).await;
    true
}

fn release_hold(shared: &Shared) {
    {
        let mut st = shared.state.lock();
        st.ks.replica = st.repl.leader_epoch == 0;
    }
    shared.write_hold.store(false, std::sync::atomic::Ordering::Release);
    shared.unpaused.notify_waiters();
}

/// Applies one committed entry's batch to the state, skipping the operations it already
/// holds (see the watermark in `replication`).
pub fn apply_payload(shared: &Shared, st: &mut State, index: u64, payload: &[u8]) {
    // The leader's own batches (all of them, normally) are skipped from the header alone,
    // without copying or decoding the operations.
    if let Some((epoch, last)) = codec::batch_last(payload) {
        let fx = st.ks.effects.as_ref().map_or(0, |v| v.len());
        let have = st.repl.watermark(fx);
        if epoch == have.epoch && last <= have.seq {
            return;
        }
    }
    let payload = Bytes::copy_from_slice(payload);
    let (origin, ops) = match codec::decode_batch(&payload) {
        Ok(x) => x,
        Err(e) => {
            // The log is checksummed by sled and written by us: a batch that does not
            // decode means corrupt storage. Stop loudly rather than diverge.
            tracing::error!(index, error = %e, "undecodable log entry; stopping");
            std::process::abort();
        }
    };
    let fx = st.ks.effects.as_ref().map_or(0, |v| v.len());
    let have = st.repl.watermark(fx);
    // Ops this state already holds: the leader's own (it ran them), or those a snapshot
    // included.
    let skip = if origin.epoch == have.epoch { have.seq.saturating_sub(origin.first_seq - 1) } else { 0 };
    if skip as usize >= ops.len() {
        return;
    }
    // Ops applied here run through the command table and must not be recorded again.
    let recording = st.ks.effects.take();
    for (i, op) in ops.iter().enumerate().skip(skip as usize) {
        if st.repl.sessions.apply(op) {
            // A forwarding session's record, not a command.
        } else if let Err(e) = crate::replay::apply(shared, st, op) {
            // A recorded op that the table refuses: same build on every node, so this is
            // a bug or corruption.
            tracing::error!(index, error = %e.text(), "log entry refused by the command table; stopping");
            std::process::abort();
        }
        st.repl.applied = Ticket { epoch: origin.epoch, seq: origin.first_seq + i as u64 };
    }
    st.ks.effects = recording;
}

/// Puts the keyspace back to exactly what the log committed up to the last entry applied
/// here: the current snapshot, then the entries after it. A leader that lost its
/// leadership with operations in flight does this: its keyspace ran them, the log may
/// never hold them.
pub fn rebuild(
    shared: &Shared,
    st: &mut State,
    snapshot: Option<std::path::PathBuf>,
    log: &redoubt_raft::log_store::LogReader,
) -> io::Result<()> {
    let applied = redoubt_raft::state_machine::decode_raft_state(&st.repl.raft_state)?.0;
    let mut fresh = Keyspace::new(st.ks.dbs.len());
    let header = match snapshot {
        Some(path) => codec::read_snapshot(&mut fresh, &mut std::io::BufReader::new(std::fs::File::open(path)?))?,
        None => SnapshotHeader::default(),
    };
    let from = if header.raft_state.is_empty() {
        0
    } else {
        redoubt_raft::state_machine::decode_raft_state(&header.raft_state)?.0.map_or(0, |l| l.index + 1)
    };
    for db in 0..st.ks.dbs.len() {
        st.ks.flush_db(db);
    }
    std::mem::swap(&mut st.ks.dbs, &mut fresh.dbs);
    std::mem::swap(&mut st.ks.libraries, &mut fresh.libraries);
    let raft_state = std::mem::replace(&mut st.repl.raft_state, header.raft_state);
    st.repl.applied = Ticket { epoch: header.epoch, seq: header.seq };
    st.repl.sessions = header.sessions;
    if let Some(applied) = applied {
        let entries = log.entries(from..=applied.index).map_err(|e| io::Error::other(e.to_string()))?;
        for e in entries {
            if let openraft::EntryPayload::Normal(p) = &e.payload {
                apply_payload(shared, st, e.log_id.index, &p.0);
            }
        }
    }
    st.repl.raft_state = raft_state;
    st.ks.events.clear();
    Ok(())
}
