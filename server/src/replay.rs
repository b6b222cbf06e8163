//! Applying deterministic operations (`keyspace::Op`) without a client: what a replica does
//! with each entry of the replication log.
//!
//! An operation runs through the same command table and handlers as a client command, at
//! the operation's own time (`op.now_ms`), with no connection and no blocking. Its reply is
//! returned so the node that proposed it can answer its client.

use std::sync::atomic::Ordering;

use redoubt_protocol::ReplyBuf;

use crate::cmd::{self, CmdError, Ctx};
use crate::keyspace::{Entry, Op};
use crate::shared::{Shared, State};

/// Applies one operation to the state; returns its RESP2 reply bytes.
pub fn apply(shared: &Shared, st: &mut State, op: &Op) -> Result<Vec<u8>, CmdError> {
    let spec = cmd::lookup(&op.argv[0]).ok_or_else(|| CmdError::Owned(cmd::unknown_command_error(&op.argv)))?;
    if !spec.arity_ok(op.argv.len()) {
        return Err(cmd::err::wrong_args(spec.name));
    }
    st.ks.now_ms = op.now_ms;
    let mut out = ReplyBuf::new(false);
    let mut ctx = Ctx::detached(&mut st.ks, shared, &mut out, op.db, 0);
    crate::conn::call(&mut ctx, spec, &op.argv);
    shared.counters.total_commands_processed.fetch_sub(1, Ordering::Relaxed);
    Ok(out.buf.to_vec())
}

/// A canonical dump of the whole keyspace (db, key, type, encoded value, expiry), sorted,
/// for comparing two replicas.
pub fn fingerprint(st: &State) -> Vec<(usize, Vec<u8>, Vec<u8>, i64)> {
    let mut v = Vec::new();
    for (db, d) in st.ks.dbs.iter().enumerate() {
        for (_, e) in d.table.iter() {
            v.push((db, e.key.to_vec(), canonical(e), e.expire_at));
        }
    }
    v.sort();
    v
}

/// Value bytes in an order-independent form (sets and hashes sorted).
fn canonical(e: &Entry) -> Vec<u8> {
    use crate::keyspace::Value;
    let mut out = Vec::new();
    match &e.value {
        Value::Hash(h) => {
            let mut pairs: Vec<_> = h.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            pairs.sort();
            out.push(b'h');
            for (k, v) in pairs {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(&k);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(&v);
            }
        }
        Value::Set(s) => {
            let mut m: Vec<Vec<u8>> = s.members().iter().map(|b| b.to_vec()).collect();
            m.sort();
            out.push(b's');
            for x in m {
                out.extend_from_slice(&(x.len() as u32).to_le_bytes());
                out.extend_from_slice(&x);
            }
        }
        other => crate::keyspace::serial::write_value(other, &mut out),
    }
    out
}
