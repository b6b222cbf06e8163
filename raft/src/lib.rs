//! # redoubt-raft (not yet implemented)
//!
//! This crate will hold Raft replication for redoubt (issue 3): the openraft 0.9 type
//! configuration, the sled-backed log and snapshot stores, the node-to-node TCP network and
//! membership changes.
//!
//! Where it will sit in the write flow:
//!
//! ```text
//! client -> server: command -> deterministic Op -> [raft: append, replicate, commit]
//!        -> every replica: keyspace.apply(Op)
//! ```
//!
//! It must never depend on `redoubt-server`: it will be generic over the replicated
//! operation and the state machine (a trait the keyspace implements), so the keyspace stays
//! plain data that knows nothing of Raft. Today the server applies operations directly and
//! keeps everything in memory (the equivalent of `--durability none`).
