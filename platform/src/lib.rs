//! Shared infrastructure of the LIS services (what partners see is the
//! `contract` crate's).
//!
//! # Layout
//! - [`config`]: typed configuration from `LIS_*` environment variables.
//! - [`db`]: Postgres pools (write side and read side) and migrations.
//! - [`kafka`]: topic names, partitioning, producer/consumer settings.
//! - [`offsets`]: Kafka offsets kept in Postgres, and consumers assigned
//!   from them.
//! - [`envelope`]: the published event envelope and its CloudEvents headers.
//! - [`auth`]: partner secrets (Argon2id, off the async threads).
//! - [`token`]: access tokens (Ed25519 JWTs), the published keys that
//!   verify them, rotation.
//! - [`access_cache`]: partners' access kept in memory, current on every
//!   process after each change.
//! - [`keyfile`]: an installation's secret key files.
//! - [`lease`]: leases in Postgres for the processes that must work alone
//!   (relay, mailer, analytics publisher), fenced by epoch.
//! - [`read_models`]: which copy of the read models readers use (`lis
//!   replay` switches it).
//! - [`pseudonym`]: keyed pseudonyms of the analytics stream.
//! - [`chain`]: tamper evidence: the hash chain over the log and its signed
//!   checkpoints.
//! - [`upkeep`]: what autovacuum would do to the installation's tables,
//!   done while Postgres runs without it.
//! - [`metrics`]: Prometheus metrics (labels never carry personal data).
//! - [`telemetry`]: logging setup.

pub mod access_cache;
pub mod auth;
pub mod chain;
pub mod config;
pub mod db;
pub mod envelope;
pub mod kafka;
pub mod keyfile;
pub mod lease;
pub mod metrics;
pub mod offsets;
pub mod pseudonym;
pub mod read_models;
pub mod telemetry;
pub mod token;
pub mod upkeep;
