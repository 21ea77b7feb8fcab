//! Composition of the LIS services, shared by the `lis` binary and the
//! integration tests.
//!
//! # Layout
//! - [`stack`]: runs any set of roles (partner API, relay, projector) in one
//!   process, with health endpoints and graceful shutdown.

pub mod stack;
