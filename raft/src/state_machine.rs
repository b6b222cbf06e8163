//! The state-machine adapter: where committed entries reach the application, and where
//! snapshots live on disk.
//!
//! ```text
//! openraft sm worker -> StateMachineStore::apply(entries) -> StateMachine::apply(&[(index, payload)])
//! snapshot policy    -> SnapshotBuilder::build_snapshot  -> StateMachine::snapshot() -> files
//! leader's snapshot  -> begin_receiving_snapshot / install_snapshot -> StateMachine::restore
//! start-up           -> StateMachineStore::open -> StateMachine::restore(current snapshot)
//! ```
//!
//! The application state is in memory; what survives a restart is the current snapshot (kept
//! here) plus the log after it (kept by [`crate::LogStore`], re-applied by openraft from the
//! persisted committed id). This adapter owns Raft's bookkeeping (last applied log id, last
//! membership, snapshot files) so the application only sees payloads and byte streams.
//!
//! ## Files in the snapshot directory
//!
//! - `snapshot-<seq>.bin`: the data of the current snapshot (`seq` is a local counter, so a
//!   new snapshot never overwrites the current one's file);
//! - `snapshot.meta`: bincode of [`SnapshotRecord`], naming the current data file with its
//!   length and the openraft [`SnapshotMeta`];
//! - `*.tmp`: snapshots being written or received; removed at open (leftovers of a crash).
//!
//! A snapshot becomes current in three durable steps: its data is fsynced and renamed to
//! `snapshot-<seq>.bin`, then a new meta is fsynced and renamed over `snapshot.meta` (the
//! atomic switch), then the previous data file is deleted. A crash at any point leaves either
//! the old or the new snapshot current, never a meta without its data.
//!
//! ## Sharing
//!
//! [`StateMachineStore`] is `Clone`: clones share one inner state through an `Arc`. Hand one
//! clone to `Raft::new` and keep another for [`StateMachineStore::last_applied`] and
//! [`StateMachineStore::current_snapshot_meta`] (what `RAFT INFO` reports).
//!
//! ## Snapshots and concurrent applies
//!
//! openraft 0.9 runs `build_snapshot` in a task of its own, concurrently with later `apply`
//! calls, and a snapshot is only correct if its data is exactly the state as of its
//! `last_log_id`. Rather than stop applies while the application serializes, the adapter
//! hands its bookkeeping (last applied id, last membership) to the application as an opaque
//! `raft_state` blob with every [`StateMachine::apply`]; the application stores it with its
//! state and returns the blob that matches the data from [`StateMachine::snapshot`] and from
//! [`StateMachine::restore`]. The snapshot's meta is decoded from that blob, so it cannot
//! drift from the data. [`decode_raft_state`] reads a blob, for the server's own use.

// The error type is openraft's (what every storage method must return).
#![allow(clippy::result_large_err)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{Entry, LogId, SnapshotMeta, StateMachine, StorageError, StoredMembership, TypeConfig};

const META_FILE: &str = "snapshot.meta";
const META_TMP: &str = "snapshot.meta.tmp";
const DATA_PREFIX: &str = "snapshot-";
const DATA_SUFFIX: &str = ".bin";
const RECV_PREFIX: &str = "recv-";
const TMP_SUFFIX: &str = ".tmp";
/// Bumped if [`SnapshotRecord`] changes shape.
const RECORD_VERSION: u32 = 1;

/// What `snapshot.meta` holds: the openraft meta of the current snapshot and the data file
/// it describes (a data file whose length differs is refused at open).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SnapshotRecord {
    version: u32,
    meta: SnapshotMeta,
    data_file: String,
    data_len: u64,
    seq: u64,
}

/// A file handed out by `begin_receiving_snapshot`: its path and its (device, inode).
type Receiving = (PathBuf, Option<(u64, u64)>);

/// Raft's bookkeeping next to the application state; its bincode is the `raft_state` blob
/// the application keeps with its state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

impl Applied {
    fn encode(&self) -> Vec<u8> {
        // Serializing plain structs into a Vec cannot fail; an empty blob would read back as
        // "nothing applied", which is the safe side.
        bincode::serialize(self).unwrap_or_default()
    }

    fn decode(blob: &[u8]) -> io::Result<Applied> {
        // An application that never saw an apply has no blob yet: nothing applied.
        if blob.is_empty() {
            return Ok(Applied::default());
        }
        bincode::deserialize(blob).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// Reads a `raft_state` blob (as given to [`StateMachine::apply`]): the last applied log id
/// and the last membership it records.
pub fn decode_raft_state(blob: &[u8]) -> io::Result<(Option<LogId>, StoredMembership)> {
    let applied = Applied::decode(blob)?;
    Ok((applied.last_applied, applied.last_membership))
}

struct Inner<A> {
    app: Arc<A>,
    dir: PathBuf,
    applied: Mutex<Applied>,
    /// The current snapshot (locked briefly: the accessors read it from async code).
    current: Mutex<Option<SnapshotRecord>>,
    /// Held while snapshot files are switched (fsyncs included) or the current one is opened,
    /// so that a reader never opens a data file that a concurrent switch is deleting.
    files: Mutex<()>,
    /// Local counter for file names and snapshot ids.
    seq: AtomicU64,
    /// Files handed out by `begin_receiving_snapshot`, with their identity (device, inode)
    /// so that `install_snapshot` can recognise its own file and rename it instead of
    /// copying it.
    receiving: Mutex<Vec<Receiving>>,
}

/// openraft's `RaftStateMachine` over an application [`StateMachine`], with snapshots as
/// files in a directory. Cheap to clone (clones share state): see the module doc.
pub struct StateMachineStore<A: StateMachine> {
    inner: Arc<Inner<A>>,
}

impl<A: StateMachine> Clone for StateMachineStore<A> {
    fn clone(&self) -> Self {
        StateMachineStore { inner: self.inner.clone() }
    }
}

/// Builds a snapshot of the application state (openraft runs it in a task of its own).
pub struct SnapshotBuilder<A: StateMachine> {
    inner: Arc<Inner<A>>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// (device, inode) of an open file: how install_snapshot recognises a file it handed out.
fn file_identity(file: &File) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

fn is_data_file(name: &str) -> bool {
    name.strip_prefix(DATA_PREFIX)
        .and_then(|rest| rest.strip_suffix(DATA_SUFFIX))
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

impl<A: StateMachine> StateMachineStore<A> {
    /// Opens the snapshot directory `dir` (created if needed). If it holds a current
    /// snapshot, the application is restored from it and the applied state is the one its
    /// data returns (checked against its meta); otherwise the application is left as it is
    /// and nothing counts as applied. Leftover temporary files are removed. Blocking (call
    /// it at start-up, before handing a clone to `Raft::new`).
    pub fn open(dir: PathBuf, app: Arc<A>) -> Result<Self, StorageError> {
        let read_err = |e: io::Error| StorageIOError::read_snapshot(None, &e);
        fs::create_dir_all(&dir).map_err(read_err)?;

        let record = match fs::read(dir.join(META_FILE)) {
            Ok(bytes) => Some(bincode::deserialize::<SnapshotRecord>(&bytes).map_err(|e| read_err(io_err(e)))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(read_err(e).into()),
        };

        let mut applied = Applied { last_applied: None, last_membership: StoredMembership::default() };
        if let Some(rec) = &record {
            let sig = Some(rec.meta.signature());
            // A meta is only written after its data is durable, so a mismatch is corruption,
            // not a crash: refuse to start rather than serve a state that lost writes.
            if rec.version != RECORD_VERSION || !is_data_file(&rec.data_file) {
                let msg = format!("unsupported snapshot record in {}", dir.join(META_FILE).display());
                return Err(StorageIOError::read_snapshot(sig, AnyError::error(msg)).into());
            }
            let path = dir.join(&rec.data_file);
            let file = File::open(&path).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
            let len = file.metadata().map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?.len();
            if len != rec.data_len {
                let msg = format!(
                    "snapshot {} data file {} has {len} bytes, its meta says {}",
                    rec.meta.snapshot_id,
                    path.display(),
                    rec.data_len
                );
                return Err(StorageIOError::read_snapshot(sig, AnyError::error(msg)).into());
            }
            let blob =
                app.restore(&mut BufReader::new(file)).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
            applied = Applied::decode(&blob)
                .and_then(|restored| matches_meta(restored, &rec.meta))
                .map_err(|e| StorageIOError::read_snapshot(sig, &e))?;
            tracing::info!(snapshot_id = %rec.meta.snapshot_id, "restored state from snapshot");
        }

        // Remove what a crash left behind: temporary files, and data files that never became
        // (or no longer are) current.
        let current_file = record.as_ref().map(|r| r.data_file.as_str());
        for dirent in fs::read_dir(&dir).map_err(read_err)? {
            let dirent = dirent.map_err(read_err)?;
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            let leftover_tmp =
                name.ends_with(TMP_SUFFIX) && (name.starts_with(DATA_PREFIX) || name.starts_with(RECV_PREFIX));
            let stale_data = is_data_file(name) && Some(name) != current_file;
            if leftover_tmp || name == META_TMP || stale_data {
                if let Err(e) = fs::remove_file(dirent.path()) {
                    tracing::warn!(file = name, error = %e, "cannot remove a stale snapshot file");
                }
            }
        }

        let seq = record.as_ref().map_or(0, |r| r.seq) + 1;
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                app,
                dir,
                applied: Mutex::new(applied),
                current: Mutex::new(record),
                files: Mutex::new(()),
                seq: AtomicU64::new(seq),
                receiving: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The id of the last entry applied to the application (or restored from a snapshot).
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.applied.lock().last_applied
    }

    /// The last membership applied (or restored from a snapshot).
    pub fn last_membership(&self) -> StoredMembership {
        self.inner.applied.lock().last_membership.clone()
    }

    /// The meta of the current snapshot, if there is one.
    pub fn current_snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.inner.current.lock().as_ref().map(|r| r.meta.clone())
    }

    /// The data file of the current snapshot, if there is one.
    pub fn current_snapshot_path(&self) -> Option<PathBuf> {
        self.inner.current.lock().as_ref().map(|r| self.inner.dir.join(&r.data_file))
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The application state machine.
    pub fn app(&self) -> &Arc<A> {
        &self.inner.app
    }
}

impl<A: StateMachine> Inner<A> {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes the fsynced data file `tmp` (of `len` bytes) the current snapshot described by
    /// `meta`, following the steps in the module doc. Unless `force`, a snapshot older than
    /// the current one is dropped instead (a build that finished after an install); then
    /// `Ok(None)`. Otherwise returns the data file's final path.
    fn publish(&self, tmp: &Path, meta: &SnapshotMeta, len: u64, force: bool) -> io::Result<Option<PathBuf>> {
        let _files = self.files.lock();
        let outdated = self.current.lock().as_ref().is_some_and(|cur| cur.meta.last_log_id > meta.last_log_id);
        if !force && outdated {
            fs::remove_file(tmp)?;
            return Ok(None);
        }
        let seq = self.next_seq();
        let data_file = format!("{DATA_PREFIX}{seq}{DATA_SUFFIX}");
        let data_path = self.dir.join(&data_file);
        fs::rename(tmp, &data_path)?;
        // The data's new name must be durable before a meta that points at it.
        sync_dir(&self.dir)?;

        let record = SnapshotRecord { version: RECORD_VERSION, meta: meta.clone(), data_file, data_len: len, seq };
        let bytes = bincode::serialize(&record).map_err(io_err)?;
        let meta_tmp = self.dir.join(META_TMP);
        let mut f = File::create(&meta_tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&meta_tmp, self.dir.join(META_FILE))?;
        sync_dir(&self.dir)?;

        let old = self.current.lock().replace(record);
        if let Some(old) = old {
            if let Err(e) = fs::remove_file(self.dir.join(&old.data_file)) {
                tracing::warn!(file = %old.data_file, error = %e, "cannot remove the previous snapshot");
            }
        }
        Ok(Some(data_path))
    }

    /// Writes a built snapshot to disk and makes it current; returns a reader on its data.
    fn store_built(&self, data: &[u8], meta: &SnapshotMeta) -> io::Result<File> {
        let tmp = self.dir.join(format!("{DATA_PREFIX}{}{DATA_SUFFIX}{TMP_SUFFIX}", self.next_seq()));
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        // Opened before publishing: if publish drops the file as outdated, the open handle
        // still reads it (openraft gets the snapshot it asked for).
        let reader = File::open(&tmp)?;
        self.publish(&tmp, meta, data.len() as u64, false)?;
        Ok(reader)
    }

    /// Restores the application from a received snapshot and makes it current.
    fn install(&self, mut received: File, meta: &SnapshotMeta) -> io::Result<()> {
        let identity = file_identity(&received);
        let own = identity.and_then(|id| {
            let mut receiving = self.receiving.lock();
            let pos = receiving.iter().position(|(_, ident)| *ident == Some(id))?;
            Some(receiving.swap_remove(pos).0)
        });
        let (path, mut file) = match own {
            // The file we handed out: keep it, it becomes the snapshot.
            Some(path) => (path, received),
            // Some other file (openraft may hand over any SnapshotData, e.g. a local snapshot
            // in tests): copy it into our directory.
            None => {
                let path = self.dir.join(format!("{RECV_PREFIX}{}{TMP_SUFFIX}", self.next_seq()));
                let mut copy = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
                received.seek(SeekFrom::Start(0))?;
                io::copy(&mut received, &mut copy)?;
                (path, copy)
            }
        };
        let result = (|| -> io::Result<Applied> {
            file.sync_all()?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(0))?;
            let blob = self.app.restore(&mut BufReader::new(&mut file))?;
            let restored = Applied::decode(&blob).and_then(|restored| matches_meta(restored, meta))?;
            drop(file);
            self.publish(&path, meta, len, true)?;
            Ok(restored)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&path);
        }
        *self.applied.lock() = result?;

        // Receptions abandoned before this install are stale now.
        for (path, _) in self.receiving.lock().drain(..) {
            let _ = fs::remove_file(path);
        }
        Ok(())
    }

    /// Opens the current snapshot for reading.
    fn open_current(&self) -> io::Result<Option<(SnapshotMeta, File)>> {
        // Holding the files lock keeps a concurrent publish from deleting the file before it
        // is open.
        let _files = self.files.lock();
        let current = self.current.lock().clone();
        match current {
            None => Ok(None),
            Some(rec) => Ok(Some((rec.meta, File::open(self.dir.join(&rec.data_file))?))),
        }
    }
}

/// The applied state restored from a snapshot's data, checked against the meta it was
/// stored or sent with: a disagreement means data and meta do not belong together.
fn matches_meta(restored: Applied, meta: &SnapshotMeta) -> io::Result<Applied> {
    if restored.last_applied != meta.last_log_id || restored.last_membership != meta.last_membership {
        let msg = format!(
            "snapshot {} data reflects last applied {:?}, its meta says {:?} (or memberships differ)",
            meta.snapshot_id, restored.last_applied, meta.last_log_id
        );
        return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
    }
    Ok(restored)
}

/// Runs blocking file work off the async worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?
}

impl<A: StateMachine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let inner = self.inner.clone();
        // Applies go on meanwhile: the meta comes from the blob the application returns with
        // the data, not from our current bookkeeping (see the module doc).
        let (data, blob) = inner.app.snapshot().await.map_err(|e| StorageIOError::read_state_machine(&e))?;
        let Applied { last_applied: last_log_id, last_membership } =
            Applied::decode(&blob).map_err(|e| StorageIOError::read_state_machine(&e))?;

        let (term, index) = last_log_id.map_or((0, 0), |id| (id.leader_id.term, id.index));
        let meta =
            SnapshotMeta { last_log_id, last_membership, snapshot_id: format!("{term}-{index}-{}", inner.next_seq()) };
        let sig = Some(meta.signature());
        let file = {
            let meta = meta.clone();
            blocking(move || inner.store_built(&data, &meta))
                .await
                .map_err(|e| StorageIOError::write_snapshot(sig, &e))?
        };
        tracing::info!(snapshot_id = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

impl<A: StateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<A> {
    type SnapshotBuilder = SnapshotBuilder<A>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.inner.applied.lock();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last() else {
            return Ok(Vec::new());
        };
        let mut batch: Vec<(u64, &[u8])> = Vec::with_capacity(entries.len());
        let mut membership = None;
        for entry in &entries {
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(payload) => batch.push((entry.log_id.index, payload.0.as_slice())),
                EntryPayload::Membership(m) => membership = Some(StoredMembership::new(Some(entry.log_id), m.clone())),
            }
        }
        // The bookkeeping after these entries goes to the application with them, even when no
        // entry carries a payload (blank and membership entries still move last_applied).
        // openraft calls apply() and install_snapshot() from one task only, so nothing else
        // writes the bookkeeping between this read and the write below; the lock is not held
        // across app.apply, which may take a while and must not block the accessors.
        let mut next = self.inner.applied.lock().clone();
        next.last_applied = Some(last.log_id);
        if let Some(m) = membership {
            next.last_membership = m;
        }
        // One call per apply(): the application amortizes its locking over the batch.
        self.inner.app.apply(&batch, &next.encode());
        *self.inner.applied.lock() = next;
        Ok(vec![(); entries.len()])
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder<A> {
        SnapshotBuilder { inner: self.inner.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.inner.dir.join(format!("{RECV_PREFIX}{}{TMP_SUFFIX}", self.inner.next_seq()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.inner.receiving.lock().push((path, file_identity(&file)));
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let mut file = *snapshot;
        // Surfaces the error of a buffered write, if any, and waits for it to land.
        file.flush().await.map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let file = file.into_std().await;

        let inner = self.inner.clone();
        let meta_owned = meta.clone();
        blocking(move || inner.install(file, &meta_owned))
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let inner = self.inner.clone();
        let current =
            blocking(move || inner.open_current()).await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}
