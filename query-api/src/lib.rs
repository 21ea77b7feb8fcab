//! The LIS read side: partner reads served from the read models the
//! projector builds, limited to the caller's scope.
//!
//! Access checks (token, partner state, permissions, scope) read the write
//! side, so a disabled partner or a narrowed scope takes effect on the next
//! request; the records themselves come from the read schema only.
//!
//! # Layout
//! - [`patients`]: `GET /v1/patients/{id}`, `GET /v1/patients`,
//!   `POST /v1/patients/search`.
//! - [`orders`]: `GET /v1/orders/{id}`, `GET /v1/orders`,
//!   `POST /v1/orders/search`, `GET /v1/catalog`.
//! - [`history`]: `GET /v1/patients/{id}/history`,
//!   `GET /v1/orders/{id}/history`, and `?asOf=` on both record reads.
//! - [`access_log`]: every read of a patient or order logged before its
//!   answer leaves (group commit), and `GET /v1/access-log`.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use contract::caller::Gate;
use deadpool_postgres::Pool;
use platform::config::Config;
use platform::read_models::ReadModels;

pub mod access_log;
mod conditions;
pub mod history;
pub mod orders;
mod paging;
pub mod patients;

/// What every read handler needs.
#[derive(Clone)]
pub struct QueryState {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// The read models (the copy readers use, which `lis replay` switches).
    pub read_models: ReadModels,
    /// Pool on the write schema (the access log's filters).
    pub write: Pool,
    /// The access checks.
    pub gate: Gate,
    /// Where every record read is logged.
    pub access_log: access_log::AccessLog,
}

impl QueryState {
    /// The read side's state; starts the access log's writers on `write`.
    pub fn new(
        cfg: Arc<Config>,
        read_models: ReadModels,
        write: Pool,
        gate: Gate,
    ) -> Result<Self, platform::db::DbError> {
        Ok(QueryState {
            access_log: access_log::AccessLog::start(&cfg.database_url, &cfg.write_schema)?,
            cfg,
            read_models,
            write,
            gate,
        })
    }

    /// The same state with another access log (`lis-bench` measures reads
    /// with [`access_log::AccessLog::off`]).
    pub fn with_access_log(self, access_log: access_log::AccessLog) -> Self {
        QueryState { access_log, ..self }
    }

    /// A pool on the copy of the read models in use now.
    pub fn read(&self) -> Pool {
        self.read_models.pool()
    }
}

/// The read side's routes.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/patients", get(patients::list))
        .route("/v1/patients/search", post(patients::search))
        .route("/v1/patients/{patient_id}", get(patients::get_one))
        .route(
            "/v1/patients/{patient_id}/history",
            get(history::patient_history),
        )
        .route("/v1/orders", get(orders::list))
        .route("/v1/orders/search", post(orders::search))
        .route("/v1/orders/{order_id}", get(orders::get_one))
        .route("/v1/orders/{order_id}/history", get(history::order_history))
        .route("/v1/access-log", get(access_log::list))
        .route("/v1/catalog", get(orders::catalog))
        .layer(axum::extract::DefaultBodyLimit::max(
            contract::fields::MAX_BODY,
        ))
        .with_state(state)
}
