//! (family: introspect) - being written.

use super::Spec;

pub const COMMANDS: &[Spec] = &[];

/// Records a slow command in the SLOWLOG.
pub fn slowlog_push(_ctx: &mut super::Ctx, _argv: &[bytes::Bytes], _usec: u64) {}
