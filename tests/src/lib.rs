//! # redoubt-tests
//!
//! Cross-crate integration tests (in `tests/tests/`) and their harness: starting redoubt
//! in-process on `127.0.0.1:0`, starting the real `redis-server` oracle on a free port, and
//! talking to both with `redoubt-client`.
