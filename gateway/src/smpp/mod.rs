//! SMPP: framing ([`pdu`]), a shared connection ([`link`]) and the customer side ([`server`]).
//! The vendor side is `crate::vendor`.

pub mod link;
pub mod pdu;
pub mod server;
