//! # redoubt-gateway (not yet implemented)
//!
//! This crate will hold the SMS gateway (issue 5) and the mobile onboarding flow (issue 6):
//! SMPP customer sessions and vendor connectors on `rusmpp`, delivery-receipt tracking across
//! pods, shared rate limits, a durable submit queue, and the onboarding HTTP API on `axum`,
//! with every piece of state kept in redoubt.
//!
//! It sits at the top of the dependency graph: it talks to redoubt through
//! `redoubt-client` (or runs a node in-process), and nothing depends on it.
