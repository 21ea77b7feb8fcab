//! Composition of the LIS services, shared by the `lis` binary and the
//! integration tests.
//!
//! # Layout
//! - [`stack`]: runs any set of roles (partner API, relay, projector) in one
//!   process, with health endpoints and graceful shutdown.
//! - [`broker`]: launching the development broker (tansu with sqlite) and
//!   indexing its store.
//! - [`replay`]: `lis replay`, a rebuild of the read models beside the live
//!   ones and the switch of readers to it.
//! - [`verify`]: `lis verify`, the event store against its tamper evidence
//!   and the read models against the log.
//! - [`docs`]: the OpenAPI document and the developer guide, served at
//!   `/openapi.json` and `/docs`.

pub mod broker;
pub mod docs;
pub mod replay;
pub mod stack;
pub mod verify;
