//! (family: lists) - being written.

use super::Spec;

pub const COMMANDS: &[Spec] = &[];
