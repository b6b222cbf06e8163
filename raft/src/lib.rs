//! # redoubt-raft
//!
//! Raft replication for redoubt: the openraft 0.9 type configuration, a sled-backed log
//! store, a state-machine adapter that keeps snapshots as files on disk, and the
//! node-to-node TCP network.
//!
//! Where it sits in the write flow:
//!
//! ```text
//! client -> server: command -> deterministic ops (keyspace::Op) -> encoded Payload
//!        -> [raft: append to sled + fsync, replicate, commit]
//!        -> every replica: StateMachine::apply(index, payload) -> keyspace
//! ```
//!
//! This crate never depends on `redoubt-server`. The replicated operation is an opaque
//! [`Payload`] (the server encodes its operations into it) and the replicated state is
//! anything that implements [`StateMachine`]; the keyspace stays plain data that knows
//! nothing of Raft.

pub mod log_store;
pub mod network;
pub mod runtime;
pub mod state_machine;

use std::fmt;
use std::future::Future;
use std::io;

use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

/// One log entry's application data: an encoded batch of operations, opaque to Raft.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

// Serialized as a byte string (one length and a memcpy), not as a sequence of u8 values.
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(Payload(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A member's addresses: where its peers reach it, and where its clients do (what
/// `RAFT INFO` reports as `leader_addr` and followers use to forward).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub raft_addr: String,
    pub client_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (client {})", self.raft_addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    /// redoubt's Raft types: u64 node ids, opaque payloads, snapshots as files, tokio with a
    /// seedable election-timeout generator ([`runtime::Runtime`]).
    pub TypeConfig:
        D = Payload,
        R = (),
        NodeId = u64,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = runtime::Runtime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, NodeAddr>;
pub type StoredMembership = openraft::StoredMembership<u64, NodeAddr>;

/// The replicated state, as the server implements it over its keyspace.
///
/// The adapter ([`StateMachineStore`]) keeps Raft's own bookkeeping (last applied log id,
/// membership, snapshot files); the application only sees payloads and byte streams.
///
/// openraft builds snapshots in a task of their own, concurrently with `apply`. So that a
/// snapshot's metadata always matches its data, the adapter hands its bookkeeping to the
/// application as an opaque `raft_state` blob with every `apply`; the application stores
/// it atomically with the state, returns it with the snapshot data it belongs to, and
/// keeps it inside the snapshot so `restore` can give it back.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies committed entries in log order: `(log index, payload)` for each normal
    /// entry (blank and membership entries only change `raft_state`). Called once per
    /// entry for this state (after a restore, only for entries past the snapshot).
    /// `raft_state` is the adapter's bookkeeping after these entries.
    fn apply(&self, entries: &[(u64, &[u8])], raft_state: &[u8]);

    /// Serializes the state, returning `(data, raft_state)` where `raft_state` is the blob
    /// from the last `apply` reflected in `data`. May wait.
    fn snapshot(&self) -> impl Future<Output = io::Result<(Vec<u8>, Vec<u8>)>> + Send;

    /// Replaces the whole state with snapshot `data` produced by [`StateMachine::snapshot`]
    /// (on this node or another); returns the `raft_state` stored in it.
    fn restore(&self, data: &mut dyn io::Read) -> io::Result<Vec<u8>>;
}
