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
//! - [`up`]: `lis up`/`down`/`serve`/`migrate`: the local stack.
//! - [`admin_cli`]: `lis admin`, the operator's commands.
//! - [`main_of`]: the entry point of `lis` and of the suites' binaries
//!   (`lis-bench`, `lis-faults`).

use std::future::Future;
use std::process::ExitCode;

pub mod admin_cli;
pub mod broker;
pub mod docs;
pub mod replay;
pub mod stack;
pub mod up;
pub mod verify;

/// Runs `command` with the configuration from the environment, logging set
/// up and a multi-threaded runtime; prints its error as `name: error` and
/// exits non-zero on failure (2 for a bad configuration).
pub fn main_of<F, Fut>(name: &str, command: F) -> ExitCode
where
    F: FnOnce(platform::config::Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cfg = match platform::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(&cfg.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(command(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
