//! Storage conformance: openraft's own suite against the sled log and the file-snapshot state
//! machine, plus the restart and snapshot-transfer cases the server relies on (what is on
//! disk after a restart, what a follower holds after receiving a snapshot).

// openraft's StorageError is what the store and the suite return.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, Vote};
use parking_lot::Mutex;
use redoubt_raft::log_store::{FsyncPolicy, LogStore};
use redoubt_raft::state_machine::{decode_raft_state, StateMachineStore};
use redoubt_raft::{Entry, LogId, Payload, SnapshotMeta, StateMachine, StorageError, TypeConfig};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

/// The application state of the test state machine: every applied payload, and the adapter's
/// blob that goes with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct AppState {
    applied: Vec<(u64, Vec<u8>)>,
    raft_state: Vec<u8>,
}

/// A trivial application: remembers what it applied, snapshots by bincode.
#[derive(Default)]
struct TestApp {
    state: Mutex<AppState>,
    /// The bytes of every restore, to check what the adapter fed in.
    restores: Mutex<Vec<Vec<u8>>>,
    /// When set, snapshot() serializes this copy instead of the live state: an application
    /// that took its copy before later entries were applied.
    frozen: Mutex<Option<AppState>>,
}

impl StateMachine for TestApp {
    fn apply(&self, entries: &[(u64, &[u8])], raft_state: &[u8]) {
        let mut state = self.state.lock();
        state.applied.extend(entries.iter().map(|(i, p)| (*i, p.to_vec())));
        state.raft_state = raft_state.to_vec();
    }

    async fn snapshot(&self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let frozen = self.frozen.lock().clone();
        let state = frozen.unwrap_or_else(|| self.state.lock().clone());
        let data = bincode::serialize(&state).map_err(io::Error::other)?;
        Ok((data, state.raft_state))
    }

    fn restore(&self, data: &mut dyn Read) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)?;
        let state: AppState = bincode::deserialize(&bytes).map_err(io::Error::other)?;
        let raft_state = state.raft_state.clone();
        *self.state.lock() = state;
        self.restores.lock().push(bytes);
        Ok(raft_state)
    }
}

struct Builder {
    fsync: FsyncPolicy,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore<TestApp>, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore<TestApp>), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let db = sled::open(dir.path().join("db")).expect("sled open");
        let log = LogStore::open(&db, self.fsync)?;
        let sm = StateMachineStore::open(dir.path().join("snapshots"), Arc::new(TestApp::default()))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_fsync_always() -> Result<(), StorageError> {
    Suite::test_all(Builder { fsync: FsyncPolicy::Always })
}

#[test]
fn openraft_suite_fsync_everysec() -> Result<(), StorageError> {
    Suite::test_all(Builder { fsync: FsyncPolicy::EverySec })
}

fn normal(term: u64, index: u64, data: &[u8]) -> Entry {
    Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Normal(Payload(data.to_vec())) }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Membership(Membership::new(vec![voters], None)) }
}

/// Entries have no `PartialEq`; their debug form names the log id and the payload.
fn shown(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| format!("{e:?}")).collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|d| d.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn t10_log_vote_and_committed_survive_a_restart() -> Result<(), StorageError> {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db");
    let entries = vec![
        membership(1, 1, &[1, 2, 3]),
        normal(1, 2, b"a"),
        normal(1, 3, b"b"),
        normal(2, 4, b"c"),
        normal(2, 5, b"d"),
    ];
    {
        let db = sled::open(&path).unwrap();
        let mut log = LogStore::open(&db, FsyncPolicy::Always)?;
        log.save_vote(&Vote::new_committed(2, 1)).await?;
        log.blocking_append(entries.clone()).await?;
        log.save_committed(Some(log_id(2, 1, 4))).await?;
        // Committed is not flushed on its own; the next durable write carries it.
        log.blocking_append([normal(2, 6, b"e")]).await?;
        log.truncate(log_id(2, 1, 6)).await?;
        log.blocking_append([normal(2, 6, b"f")]).await?;
    }

    let db = sled::open(&path).unwrap();
    let mut log = LogStore::open(&db, FsyncPolicy::Always)?;
    assert_eq!(log.read_vote().await?, Some(Vote::new_committed(2, 1)));
    assert_eq!(log.read_committed().await?, Some(log_id(2, 1, 4)));
    let mut expected = entries.clone();
    expected.push(normal(2, 6, b"f"));
    assert_eq!(shown(&log.try_get_log_entries(..).await?), shown(&expected));
    assert_eq!(shown(&log.entries(3..5)?), shown(&expected[2..4]));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 6)));

    // Purge keeps the last purged id once every entry is gone.
    log.purge(log_id(2, 1, 6)).await?;
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 6)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 6)));
    assert!(log.entries(..)?.is_empty());

    // A reader handed to replication sees what the store appends later.
    let mut reader = log.get_log_reader().await;
    log.blocking_append([normal(3, 7, b"g")]).await?;
    assert_eq!(shown(&reader.try_get_log_entries(7..8).await?), shown(&[normal(3, 7, b"g")]));
    Ok(())
}

#[tokio::test]
async fn t11_everysec_acknowledges_and_flushes_in_the_background() -> Result<(), StorageError> {
    let dir = TempDir::new().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let mut log = LogStore::open(&db, FsyncPolicy::EverySec)?;
    log.blocking_append([normal(1, 1, b"a"), normal(1, 2, b"b")]).await?;
    assert_eq!(log.entries(..)?.len(), 2);
    drop(log);
    // The flusher stops with the store; opening again starts a fresh one.
    let mut log = LogStore::open(&db, FsyncPolicy::EverySec)?;
    assert_eq!(log.get_log_state().await?.last_log_id, Some(log_id(1, 1, 2)));
    Ok(())
}

#[test]
fn t12_everysec_outside_a_runtime_is_an_error_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    assert!(LogStore::open(&db, FsyncPolicy::EverySec).is_err());
    assert!(LogStore::open(&db, FsyncPolicy::Always).is_ok());
}

/// Applies a membership and a few writes, then builds a snapshot.
async fn applied_and_snapshotted(sm: &mut StateMachineStore<TestApp>) -> Result<SnapshotMeta, StorageError> {
    sm.apply([membership(1, 1, &[1, 2, 3]), normal(1, 2, b"x"), normal(1, 3, b"y")]).await?;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 3)));
    // Entries after the snapshot do not leak into it.
    sm.apply([normal(1, 4, b"z")]).await?;
    Ok(snapshot.meta)
}

#[tokio::test]
async fn t20_snapshot_is_restored_on_reopen() -> Result<(), StorageError> {
    let dir = TempDir::new().unwrap();
    let snap_dir = dir.path().join("snapshots");
    let app = Arc::new(TestApp::default());
    let mut sm = StateMachineStore::open(snap_dir.clone(), app.clone())?;
    let meta = applied_and_snapshotted(&mut sm).await?;
    let applied_at_snapshot = (meta.last_log_id, meta.last_membership.clone());
    assert_eq!(sm.current_snapshot_meta(), Some(meta.clone()));
    assert_eq!(sm.last_applied(), Some(log_id(1, 1, 4)));
    let data = std::fs::read(sm.current_snapshot_path().unwrap()).unwrap();
    let state_in_snapshot: AppState = bincode::deserialize(&data).unwrap();
    assert_eq!(state_in_snapshot.applied, vec![(2, b"x".to_vec()), (3, b"y".to_vec())]);
    assert_eq!(decode_raft_state(&state_in_snapshot.raft_state).unwrap(), applied_at_snapshot);
    drop(sm);

    // Leftovers of a crash: a half-received snapshot and a data file that never became current.
    std::fs::write(snap_dir.join("recv-99.tmp"), b"partial").unwrap();
    std::fs::write(snap_dir.join("snapshot-98.bin"), b"orphan").unwrap();
    std::fs::write(snap_dir.join("snapshot-97.bin.tmp"), b"partial").unwrap();

    let app2 = Arc::new(TestApp::default());
    let mut sm2 = StateMachineStore::open(snap_dir.clone(), app2.clone())?;
    assert_eq!(*app2.restores.lock(), vec![data.clone()]);
    assert_eq!(sm2.applied_state().await?, applied_at_snapshot);
    assert_eq!(sm2.current_snapshot_meta(), Some(meta.clone()));
    assert_eq!(
        file_names(&snap_dir),
        vec![
            sm2.current_snapshot_path().unwrap().file_name().unwrap().to_str().unwrap().to_string(),
            "snapshot.meta".to_string()
        ]
    );

    let mut current = sm2.get_current_snapshot().await?.expect("current snapshot");
    assert_eq!(current.meta, meta);
    let mut read_back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut *current.snapshot, &mut read_back).await.unwrap();
    assert_eq!(read_back, data);
    Ok(())
}

#[tokio::test]
async fn t21_a_newer_snapshot_replaces_the_current_one() -> Result<(), StorageError> {
    let dir = TempDir::new().unwrap();
    let snap_dir = dir.path().join("snapshots");
    let mut sm = StateMachineStore::open(snap_dir.clone(), Arc::new(TestApp::default()))?;
    applied_and_snapshotted(&mut sm).await?;
    let second = sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(second.meta.last_log_id, Some(log_id(1, 1, 4)));
    assert_eq!(sm.current_snapshot_meta(), Some(second.meta.clone()));
    // Only the newest data file is kept.
    assert_eq!(file_names(&snap_dir).len(), 2);
    Ok(())
}

#[tokio::test]
async fn t30_received_snapshot_becomes_current() -> Result<(), StorageError> {
    let dir = TempDir::new().unwrap();
    let mut leader = StateMachineStore::open(dir.path().join("leader"), Arc::new(TestApp::default()))?;
    let meta = applied_and_snapshotted(&mut leader).await?;
    let data = std::fs::read(leader.current_snapshot_path().unwrap()).unwrap();

    let follower_dir = dir.path().join("follower");
    let app = Arc::new(TestApp::default());
    let mut follower = StateMachineStore::open(follower_dir.clone(), app.clone())?;
    // Something applied before the snapshot arrives is replaced by it.
    follower.apply([normal(1, 1, b"stale")]).await?;

    let mut file = follower.begin_receiving_snapshot().await?;
    file.write_all(&data[..10]).await.unwrap();
    file.write_all(&data[10..]).await.unwrap();
    follower.install_snapshot(&meta, file).await?;

    assert_eq!(*app.restores.lock(), vec![data.clone()]);
    assert_eq!(follower.applied_state().await?, (meta.last_log_id, meta.last_membership.clone()));
    assert_eq!(follower.current_snapshot_meta(), Some(meta.clone()));
    // The received file itself became the snapshot (renamed, not copied).
    let names = file_names(&follower_dir);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert_eq!(std::fs::read(follower.current_snapshot_path().unwrap()).unwrap(), data);

    // And it is what a restart restores.
    drop(follower);
    let app2 = Arc::new(TestApp::default());
    let reopened = StateMachineStore::open(follower_dir, app2.clone())?;
    assert_eq!(*app2.restores.lock(), vec![data]);
    assert_eq!(reopened.last_applied(), meta.last_log_id);
    Ok(())
}

#[tokio::test]
async fn t31_snapshot_whose_data_disagrees_with_its_meta_is_refused() -> Result<(), StorageError> {
    let dir = TempDir::new().unwrap();
    let mut leader = StateMachineStore::open(dir.path().join("leader"), Arc::new(TestApp::default()))?;
    let meta = applied_and_snapshotted(&mut leader).await?;
    let data = std::fs::read(leader.current_snapshot_path().unwrap()).unwrap();

    let follower_dir = dir.path().join("follower");
    let mut follower = StateMachineStore::open(follower_dir.clone(), Arc::new(TestApp::default()))?;
    let mut file = follower.begin_receiving_snapshot().await?;
    file.write_all(&data).await.unwrap();
    let wrong: LogId = log_id(1, 1, 9);
    let wrong_meta = SnapshotMeta { last_log_id: Some(wrong), ..meta };
    assert!(follower.install_snapshot(&wrong_meta, file).await.is_err());
    assert_eq!(follower.current_snapshot_meta(), None);
    assert!(file_names(&follower_dir).iter().all(|n| !n.ends_with(".tmp")));
    Ok(())
}

#[tokio::test]
async fn t22_snapshot_meta_follows_the_data_not_the_latest_apply() -> Result<(), StorageError> {
    let dir = TempDir::new().unwrap();
    let app = Arc::new(TestApp::default());
    let mut sm = StateMachineStore::open(dir.path().join("snapshots"), app.clone())?;
    sm.apply([membership(1, 1, &[1]), normal(1, 2, b"x")]).await?;
    // The application copies its state here; entry 3 is applied before the build finishes.
    *app.frozen.lock() = Some(app.state.lock().clone());
    sm.apply([normal(1, 3, b"y")]).await?;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(sm.last_applied(), Some(log_id(1, 1, 3)));
    Ok(())
}
