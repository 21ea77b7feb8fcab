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

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::Pool;
use platform::auth::TokenKeys;
use platform::config::Config;

mod conditions;
pub mod orders;
pub mod patients;

/// What every read handler needs.
#[derive(Clone)]
pub struct QueryState {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// Pool on the read schema.
    pub read: Pool,
    /// Pool on the write schema (access checks only).
    pub write: Pool,
    /// Token signing key.
    pub keys: TokenKeys,
}

/// The read side's routes.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/patients", get(patients::list))
        .route("/v1/patients/search", post(patients::search))
        .route("/v1/patients/{patient_id}", get(patients::get_one))
        .route("/v1/orders", get(orders::list))
        .route("/v1/orders/search", post(orders::search))
        .route("/v1/orders/{order_id}", get(orders::get_one))
        .route("/v1/catalog", get(orders::catalog))
        .layer(axum::extract::DefaultBodyLimit::max(
            platform::fields::MAX_BODY,
        ))
        .with_state(state)
}
