//! The Raft log on sled: where a write lands first.
//!
//! ```text
//! leader: client_write -> openraft -> LogStore::append (sled batch + flush) -> replicate
//! follower: AppendEntries -> LogStore::append -> ack once the callback reports it durable
//! ```
//!
//! Two sled trees: `log` holds the entries (key = index as big-endian u64, so sled's byte
//! order is log order; value = bincode of the [`Entry`]) and `meta` holds the vote, the
//! committed log id and the last purged log id. The fsync policy decides when an append is
//! reported durable to openraft: [`FsyncPolicy::Always`] flushes before the callback (one
//! flush covers the whole batch openraft hands in: group commit), [`FsyncPolicy::EverySec`]
//! reports at once and leaves durability to a background flusher, as Redis'
//! `appendfsync everysec` does. Votes are flushed before `save_vote` returns under both
//! policies: a vote that is forgotten after a crash lets a node vote twice in one term.

// The error type is openraft's (what every storage method must return); boxing it only in
// our helpers would not make it smaller where it matters.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::{Entry, LogId, StorageError, TypeConfig};

const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged_log_id";

/// How often the [`FsyncPolicy::EverySec`] flusher runs.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// When appended entries are reported durable to openraft.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Flush to disk before acknowledging an append: an acknowledged entry survives a crash
    /// of the machine.
    #[default]
    Always,
    /// Acknowledge after the write reaches sled's memory; a background task flushes once a
    /// second. A machine crash can lose up to about a second of acknowledged entries.
    EverySec,
}

/// Called with the payload of the last normal entry of each append once that append is
/// durable on this node (after its flush with `Always`, at once with `EverySec`). A node
/// that is the only voter may treat that as committed and answer its clients without
/// waiting for openraft's commit-and-apply round trip.
pub type DurableHook = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The sled-backed Raft log and vote store (`RaftLogStorage` for openraft's storage-v2).
///
/// Handed to `Raft::new` by value; openraft serializes every write through `&mut self`.
pub struct LogStore {
    db: sled::Db,
    reader: LogReader,
    meta: sled::Tree,
    fsync: FsyncPolicy,
    /// Set by appends, cleared by the background flusher (EverySec only): an idle node does
    /// not flush every second for nothing.
    dirty: Arc<AtomicBool>,
    /// Set by the background flusher when a flush fails: the next write reports it, which
    /// stops the node rather than let it acknowledge entries it cannot make durable.
    flush_failed: Arc<AtomicBool>,
    /// Dropping the store drops this sender, which stops the background flusher (after one
    /// last flush).
    _stop_flusher: Option<oneshot::Sender<()>>,
    /// Always: appends hand their completion callback to the group-commit task, which
    /// flushes once for every callback queued meanwhile. openraft's core does not wait for
    /// the disk (it may call back "after this method returns"), so it keeps accepting and
    /// batching writes while a flush runs.
    sync_tx: Option<std::sync::mpsc::Sender<Durable>>,
    sync_thread: Option<std::thread::JoinHandle<()>>,
    hook: Option<DurableHook>,
}

impl Drop for LogStore {
    /// Stops the group-commit thread and waits for it: it holds the sled db (and with it the
    /// directory's lock), which a restart in the same process must be able to take again.
    fn drop(&mut self) {
        self.sync_tx = None;
        if let Some(t) = self.sync_thread.take() {
            let _ = t.join();
        }
    }
}

/// An append waiting for the group commit: openraft's callback and what the hook gets.
struct Durable {
    callback: LogFlushed<TypeConfig>,
    last_payload: Option<Vec<u8>>,
}

/// A cheap read-only handle on the log (it shares the sled tree), used by openraft's
/// replication tasks and by the server when it replays entries after a snapshot.
#[derive(Clone)]
pub struct LogReader {
    log: sled::Tree,
}

impl LogStore {
    /// Opens (or creates) the log in `db`. With [`FsyncPolicy::EverySec`] it spawns the
    /// background flusher, so it must then be called inside a tokio runtime.
    pub fn open(db: &sled::Db, fsync: FsyncPolicy) -> Result<LogStore, StorageError> {
        Self::open_with_hook(db, fsync, None)
    }

    /// [`LogStore::open`] with a [`DurableHook`].
    pub fn open_with_hook(
        db: &sled::Db,
        fsync: FsyncPolicy,
        hook: Option<DurableHook>,
    ) -> Result<LogStore, StorageError> {
        let log = db.open_tree(LOG_TREE).map_err(|e| StorageIOError::read_logs(&e))?;
        let meta = db.open_tree(META_TREE).map_err(|e| StorageIOError::read_logs(&e))?;
        let dirty = Arc::new(AtomicBool::new(false));
        let flush_failed = Arc::new(AtomicBool::new(false));
        let mut sync_tx = None;
        let mut sync_thread = None;
        let stop_flusher = match fsync {
            FsyncPolicy::Always => {
                let (tx, rx) = std::sync::mpsc::channel();
                let (db, failed, hook) = (db.clone(), flush_failed.clone(), hook.clone());
                // Ends when the store (the only sender) is dropped.
                let t = std::thread::Builder::new()
                    .name("raft-log-sync".into())
                    .spawn(move || group_commit(db, rx, failed, hook))
                    .map_err(|e| StorageIOError::write_logs(&e))?;
                sync_tx = Some(tx);
                sync_thread = Some(t);
                None
            }
            FsyncPolicy::EverySec => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
                    StorageIOError::write_logs(AnyError::error(format!(
                        "fsync everysec needs a tokio runtime for its flusher: {e}"
                    )))
                })?;
                let (stop_tx, stop_rx) = oneshot::channel();
                runtime.spawn(flusher(db.clone(), dirty.clone(), flush_failed.clone(), stop_rx));
                Some(stop_tx)
            }
        };
        Ok(LogStore {
            db: db.clone(),
            reader: LogReader { log },
            meta,
            fsync,
            dirty,
            flush_failed,
            _stop_flusher: stop_flusher,
            sync_tx,
            sync_thread,
            hook,
        })
    }

    /// The fsync policy this store was opened with.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    /// A read-only handle sharing this store's log (see [`LogReader`]).
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// The entries whose index lies in `range`, in log order (synchronous; for replaying the
    /// log past a snapshot when the server rebuilds its state).
    pub fn entries<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<Entry>, StorageError> {
        self.reader.entries(range)
    }

    /// The last log id recorded by `save_committed`, if any.
    pub fn committed(&self) -> Result<Option<LogId>, StorageError> {
        read_meta(&self.meta, KEY_COMMITTED)
    }

    /// The last id purged from the log (everything up to it lives only in a snapshot).
    pub fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        read_meta(&self.meta, KEY_LAST_PURGED)
    }

    fn check_flusher(&self) -> Result<(), StorageError> {
        if self.flush_failed.load(Ordering::Acquire) {
            return Err(StorageIOError::write_logs(AnyError::error("a background flush of the raft log failed")).into());
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }
}

impl LogReader {
    /// The entries whose index lies in `range`, in log order.
    pub fn entries<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<Entry>, StorageError> {
        let Some((lo, hi)) = inclusive(&range) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self.log.range(lo.to_be_bytes()..=hi.to_be_bytes()) {
            let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            out.push(decode::<Entry>(&value).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }

    /// The id of the last entry present in the log.
    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            None => Ok(None),
            Some((_, value)) => {
                let entry: Entry = decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

/// Turns any range of indexes into an inclusive `(lo, hi)`, or `None` when it is empty (sled
/// is given only well-ordered ranges).
fn inclusive<R: RangeBounds<u64>>(range: &R) -> Option<(u64, u64)> {
    let lo = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (lo <= hi).then_some((lo, hi))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

fn read_meta<T: DeserializeOwned>(meta: &sled::Tree, key: &[u8]) -> Result<Option<T>, StorageError> {
    match meta.get(key).map_err(|e| StorageIOError::read(&e))? {
        None => Ok(None),
        Some(bytes) => Ok(Some(decode(&bytes).map_err(|e| StorageIOError::read(&e))?)),
    }
}

/// The [`FsyncPolicy::EverySec`] flusher: flushes once a second when something was
/// written, and once more when the store is dropped.
/// The group commit of [`FsyncPolicy::Always`], on a thread of its own: waits for appended
/// batches, flushes once for all of them (sled flushes everything written before the
/// call), then reports each durable, in append order. A plain blocking `flush` on one
/// dedicated thread costs far less than `flush_async`, which hops through sled's I/O pool
/// for every call (measured: ~2x the flushes per second).
fn group_commit(
    db: sled::Db,
    rx: std::sync::mpsc::Receiver<Durable>,
    failed: Arc<AtomicBool>,
    hook: Option<DurableHook>,
) {
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let res = db.flush();
        if res.is_err() {
            failed.store(true, Ordering::Release);
        }
        // The hook first: it is the fast path to the clients; openraft's own commit follows.
        if let (Ok(_), Some(hook)) = (&res, &hook) {
            if let Some(p) = waiting.iter().rev().find_map(|d: &Durable| d.last_payload.as_deref()) {
                hook(p);
            }
        }
        for d in waiting.drain(..) {
            match &res {
                Ok(_) => d.callback.log_io_completed(Ok(())),
                Err(e) => d.callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
            }
        }
        if let Err(e) = res {
            tracing::error!(error = %e, "flushing the raft log failed; stopping");
            return;
        }
    }
}

async fn flusher(db: sled::Db, dirty: Arc<AtomicBool>, failed: Arc<AtomicBool>, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Fires when the sender is dropped with the store.
            _ = &mut stop => break,
        }
        if dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = db.flush_async().await {
                tracing::error!(error = %e, "background flush of the raft log failed");
                failed.store(true, Ordering::Release);
            }
        }
    }
    if dirty.load(Ordering::Acquire) {
        if let Err(e) = db.flush_async().await {
            tracing::error!(error = %e, "final flush of the raft log failed");
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.entries(range)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.reader.last_log_id()? {
            Some(id) => Some(id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.meta.insert(KEY_VOTE, bytes).map_err(|e| StorageIOError::write_vote(&e))?;
        // Durable under every policy: granting a vote and forgetting it breaks election safety.
        self.flush().await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        match self.meta.get(KEY_VOTE).map_err(|e| StorageIOError::read_vote(&e))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode(&bytes).map_err(|e| StorageIOError::read_vote(&e))?)),
        }
    }

    // Persisted so that openraft re-applies committed entries on restart: the state machine
    // lives in memory and is rebuilt from the last snapshot plus the log. It is not flushed
    // on its own: a committed id older than the truth only means fewer entries re-applied at
    // start-up, the rest arrive with the leader's next commit index.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        match committed {
            Some(id) => {
                let bytes = encode(&id).map_err(|e| StorageIOError::write(&e))?;
                self.meta.insert(KEY_COMMITTED, bytes).map_err(|e| StorageIOError::write(&e))?;
            }
            None => {
                self.meta.remove(KEY_COMMITTED).map_err(|e| StorageIOError::write(&e))?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.committed()
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.check_flusher()?;
        // One sled batch for everything openraft hands in: sled applies it atomically and the
        // single flush below covers all of it (group commit).
        let mut batch = sled::Batch::default();
        let mut last_payload = None;
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
            if self.hook.is_some() {
                if let openraft::EntryPayload::Normal(p) = entry.payload {
                    last_payload = Some(p.0);
                }
            }
        }
        self.reader.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;

        match self.fsync {
            FsyncPolicy::Always => {
                // Durable once the group-commit task's next flush completes; it reports an
                // I/O failure through the callback, which stops the node.
                let tx = self.sync_tx.as_ref().expect("Always has a group-commit task");
                if let Err(std::sync::mpsc::SendError(Durable { callback, .. })) =
                    tx.send(Durable { callback, last_payload })
                {
                    let e = AnyError::error("group-commit task stopped");
                    callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                    return Err(StorageIOError::write_logs(&e).into());
                }
            }
            FsyncPolicy::EverySec => {
                self.dirty.store(true, Ordering::Release);
                callback.log_io_completed(Ok(()));
                if let (Some(hook), Some(p)) = (&self.hook, &last_payload) {
                    hook(p);
                }
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Not flushed here: sled replays its log in order, so the next flushed append (or
        // vote) also makes this removal durable before anything written after it.
        let mut batch = sled::Batch::default();
        for item in self.reader.log.range(log_id.index.to_be_bytes()..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.reader.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point before deleting: if we stop in between, get_log_state still
        // reports a log without holes (last purged, then whatever entries remain).
        let bytes = encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.meta.insert(KEY_LAST_PURGED, bytes).map_err(|e| StorageIOError::write_logs(&e))?;
        let mut batch = sled::Batch::default();
        for item in self.reader.log.range(..=log_id.index.to_be_bytes()) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.reader.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::inclusive;

    #[test]
    fn ranges_become_inclusive_or_empty() {
        assert_eq!(inclusive(&(3..7)), Some((3, 6)));
        assert_eq!(inclusive(&(3..=7)), Some((3, 7)));
        assert_eq!(inclusive(&(..)), Some((0, u64::MAX)));
        assert_eq!(inclusive(&(5..5)), None);
        assert_eq!(inclusive(&(..0)), None);
        let (lo, hi) = (7, 3);
        assert_eq!(inclusive(&(lo..hi)), None);
        assert_eq!(inclusive(&(Bound::Excluded(u64::MAX), Bound::Unbounded)), None);
    }
}
