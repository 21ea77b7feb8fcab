//! The LIS write side.
//!
//! Partner commands arrive over HTTP, are authorised against the partner's
//! current write-side state, decided by the pure `domain`, and committed in
//! one Postgres transaction (events, uniqueness reservations, idempotency
//! record) before they are answered. The relay then publishes the committed
//! events to Kafka in commit order.
//!
//! # Layout
//! - [`store`]: appending and loading events.
//! - [`relay`]: event store -> Kafka, in order, once.
//! - [`idempotency`]: `Idempotency-Key` handling.
//! - [`pipeline`]: the one way a write happens: a typed command,
//!   authorized, decided, written and answered.
//! - [`group_commit`]: the partner commands a process receives together,
//!   committed in one transaction, each isolated from the others.
//! - [`patients`]: patient commands.
//! - [`orders`]: order commands, one per lifecycle action.
//! - [`openapi`]: the write operations' bodies and texts in the OpenAPI
//!   document.
//! - [`oauth`]: the token endpoint.
//! - [`admin`]: the operator's commands on reference data.
//! - [`mailer`]: sends account invitations (a reactor on the account stream).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{patch, post};
use axum::Router;
use contract::caller::Gate;
use deadpool_postgres::Pool;
use platform::config::Config;
use platform::token::SignerFile;

pub mod accounts;
pub mod admin;
pub mod group_commit;
pub mod idempotency;
pub mod mailer;
pub mod oauth;
pub mod openapi;
pub mod orders;
pub mod patients;
pub mod pipeline;
pub mod relay;
pub mod store;

mod embedded {
    refinery::embed_migrations!("migrations/es");
}

/// The write schema's migrations (`migrations/es`: the event store and the
/// write side's state, the access log and the partners' access leases
/// included), for `platform::db::migrate`.
pub fn migrations() -> refinery::Runner {
    embedded::migrations::runner()
}

/// What every write handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// Pool on the write schema.
    pub write: Pool,
    /// The token signing key (`/oauth/token`).
    pub signer: Arc<SignerFile>,
    /// The access checks.
    pub gate: Gate,
    /// Token endpoint rate limits.
    pub limiter: Arc<oauth::TokenLimiter>,
    /// The group commit partner commands run in.
    pub committer: group_commit::Committer,
}

impl AppState {
    /// Builds the state from configuration.
    pub fn new(cfg: Arc<Config>, write: Pool, signer: Arc<SignerFile>, gate: Gate) -> Self {
        let limiter = oauth::TokenLimiter::new(cfg.token_rate_per_minute);
        let committer = group_commit::Committer::start(write.clone(), cfg.committers);
        AppState {
            committer,
            cfg,
            write,
            signer,
            gate,
            limiter,
        }
    }
}

/// The write side's routes: one line per command.
pub fn router(state: AppState) -> Router {
    use orders::*;
    use patients::*;
    let mut router = Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/v1/patients", post(create::<RegisterPatient>))
        .route("/v1/patients/{patient_id}", patch(change::<UpdatePatient>))
        .route("/v1/orders", post(create::<PlaceOrder>));
    for (path, route) in [
        OnOrder::<UpdateOrder>::route(),
        OnOrder::<CollectSpecimen>::route(),
        OnOrder::<ReceiveSpecimen>::route(),
        OnOrder::<StartTesting>::route(),
        OnOrder::<CancelOrder>::route(),
        OnOrder::<RecordResults>::route(),
        OnOrder::<FinalizeResults>::route(),
        OnOrder::<CorrectResults>::route(),
    ] {
        router = router.route(&path, route);
    }
    router
        .layer(axum::extract::DefaultBodyLimit::max(
            contract::fields::MAX_BODY,
        ))
        .with_state(state)
}

/// Serves a create.
#[tracing::instrument(skip_all, fields(partner))]
async fn create<C: pipeline::Endpoint>(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    pipeline::serve::<C>(&app, method, uri, None, headers, body).await
}

/// Serves a change to the record the path names.
#[tracing::instrument(skip_all, fields(partner))]
pub(crate) async fn change<C: pipeline::Endpoint>(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    pipeline::serve::<C>(&app, method, uri, Some(id), headers, body).await
}
