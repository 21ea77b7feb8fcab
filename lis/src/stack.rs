//! Runs a chosen set of the LIS roles in one process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use platform::config::Config;
use platform::token::{SignerFile, TokenVerifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use tokio::sync::watch;

/// Which roles this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The partner API's write routes (and `/oauth/token`).
    pub commands: bool,
    /// The partner API's read routes.
    pub queries: bool,
    /// The relay (event store -> Kafka).
    pub relay: bool,
    /// The projector (Kafka -> read models).
    pub projector: bool,
    /// The invitation mailer (needs `LIS_SMTP_URL`).
    pub mailer: bool,
    /// The analytics publisher (Kafka -> `lis.analytics.v1`, de-identified).
    pub analytics: bool,
    /// The patient portal's pages (`/portal`).
    pub portal: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles {
        commands: true,
        queries: true,
        relay: true,
        projector: true,
        mailer: true,
        analytics: true,
        portal: true,
    };

    /// No role: start from this and switch roles on.
    pub const NONE: Roles = Roles {
        commands: false,
        queries: false,
        relay: false,
        projector: false,
        mailer: false,
        analytics: false,
        portal: false,
    };

    /// Parses `all` or a comma-separated list of
    /// `command-handler`, `query-api`, `relay`, `projector`, `mailer`,
    /// `analytics`, `portal`.
    pub fn parse(s: &str) -> Result<Roles, String> {
        let mut r = Roles::NONE;
        for part in s.split(',').map(str::trim) {
            match part {
                "all" => r = Roles::ALL,
                "command-handler" => r.commands = true,
                "query-api" => r.queries = true,
                "relay" => r.relay = true,
                "projector" => r.projector = true,
                "mailer" => r.mailer = true,
                "analytics" => r.analytics = true,
                "portal" => r.portal = true,
                other => return Err(format!("unknown role `{other}`")),
            }
        }
        Ok(r)
    }

    /// Whether a process of these roles serves HTTP.
    pub fn http(&self) -> bool {
        self.commands || self.queries || self.portal
    }
}

/// A shutdown signal shared by every task of a process.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once shutdown is requested (or the sender is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

#[derive(Clone)]
struct Health {
    write: deadpool_postgres::Pool,
    /// One client for every probe: creating a Kafka client per request
    /// would start its threads and connections each time.
    kafka: Arc<BaseConsumer>,
}

/// Counts and times every request by route template, never by raw path.
async fn observe(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    platform::metrics::HTTP_LATENCY
        .with_label_values(&[&method, &route])
        .observe(start.elapsed().as_secs_f64());
    platform::metrics::HTTP_REQUESTS
        .with_label_values(&[&method, &route, resp.status().as_str()])
        .inc();
    resp
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        platform::metrics::render(),
    )
}

/// The public keys that verify partner tokens (RFC 7517), for any
/// process or partner that checks a token without calling the API.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "getTokenKeys",
    tag = "auth",
    summary = "The keys that verify access tokens",
    description = "The public Ed25519 keys (RFC 7517 JWK Set, RFC 8037 `OKP` keys) whose \
        private halves sign the access tokens of `POST /oauth/token`: the current key and \
        every key whose tokens may still be valid after a rotation. A token's `kid` header \
        names its key. Public: no credentials.",
    security(()),
    responses(
        (status = 200, description = "The key set. `Cache-Control: public, max-age=60`.",
            content_type = "application/jwk-set+json", body = platform::token::JwkSet),
        (status = 503, description = "The database holding the published keys is unavailable; retry after `Retry-After` seconds.",
            content_type = "application/problem+json", body = contract::problem::Problem,
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
    )
)]
pub async fn jwks(State(tokens): State<TokenVerifier>) -> axum::response::Response {
    match tokens.jwks().await {
        Ok(set) => (
            [
                (axum::http::header::CONTENT_TYPE, "application/jwk-set+json"),
                (axum::http::header::CACHE_CONTROL, "public, max-age=60"),
            ],
            Json(set),
        )
            .into_response(),
        Err(e) => contract::problem::ApiError::from(e).into_response(),
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when Postgres answers and the broker returns metadata.
async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let pg = async {
        let db = h.write.get().await.ok()?;
        db.query_one("SELECT 1", &[]).await.ok()
    };
    let pg_ok = tokio::time::timeout(Duration::from_secs(2), pg)
        .await
        .ok()
        .flatten()
        .is_some();
    let kafka = h.kafka.clone();
    let kafka_ok = tokio::task::spawn_blocking(move || {
        kafka.fetch_metadata(None, Duration::from_secs(2)).is_ok()
    })
    .await
    .unwrap_or(false);
    let status = if pg_ok && kafka_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
            "postgres": if pg_ok { "up" } else { "down" },
            "kafka": if kafka_ok { "up" } else { "down" },
        })),
    )
}

/// Runs `roles` until `shutdown` fires. HTTP roles serve on `listener`
/// (bound by the caller, so tests can use port 0) and finish in-flight
/// requests before returning.
pub async fn serve(
    cfg: Config,
    listener: Option<tokio::net::TcpListener>,
    roles: Roles,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let write = platform::db::pool(&cfg.database_url, &cfg.write_schema, 16)?;
    let mut tasks = tokio::task::JoinSet::new();
    if roles.relay {
        let key = Arc::new(platform::chain::ChainKey::load(&cfg.chain_key_file)?);
        let (c, s) = ((*cfg).clone(), shutdown.clone());
        tasks.spawn(async move { command_handler::relay::run(c, key, s.wait()).await });
    }
    if roles.projector {
        let (c, p, s) = ((*cfg).clone(), write.clone(), shutdown.clone());
        tasks.spawn(async move { projector::run(c, p, s.wait()).await });
        let (p, s) = (write.clone(), shutdown.clone());
        let (w, r, every) = (
            cfg.write_schema.clone(),
            cfg.read_schema.clone(),
            cfg.upkeep,
        );
        tasks.spawn(async move { platform::upkeep::run(p, w, r, every, s.wait()).await });
    }
    if roles.analytics {
        let ids = Arc::new(platform::pseudonym::Pseudonyms::load(
            &cfg.analytics_key_file,
        )?);
        let (c, p, s) = ((*cfg).clone(), write.clone(), shutdown.clone());
        tasks.spawn(async move { analytics::run(c, ids, p, s.wait()).await });
    }
    if roles.mailer {
        let (c, p, s) = ((*cfg).clone(), write.clone(), shutdown.clone());
        tasks.spawn(async move { command_handler::mailer::run(c, p, s.wait()).await });
    }
    if roles.http() {
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(cfg.http_addr).await?,
        };
        let mut app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Health {
                write: write.clone(),
                kafka: Arc::new(platform::kafka::base_config(&cfg).create()?),
            });
        app = app.merge(crate::docs::router());
        let gate = contract::caller::Gate::new(
            TokenVerifier::new(write.clone(), cfg.token_ttl),
            platform::access_cache::PartnerCache::start(
                &cfg.database_url,
                &cfg.write_schema,
                write.clone(),
            ),
        );
        if roles.commands || roles.queries {
            app = app.merge(
                Router::new()
                    .route("/.well-known/jwks.json", get(jwks))
                    .with_state(gate.tokens().clone()),
            );
        }
        if roles.commands {
            // Only the process that mints tokens loads the private key.
            let signer = Arc::new(SignerFile::load(&cfg.token_key_file)?);
            app = app.merge(command_handler::router(command_handler::AppState::new(
                cfg.clone(),
                write.clone(),
                signer,
                gate.clone(),
            )));
        }
        let read = if roles.queries || roles.portal {
            Some(
                platform::read_models::ReadModels::following(
                    &cfg.database_url,
                    &cfg.read_schema,
                    write.clone(),
                    16,
                )
                .await?,
            )
        } else {
            None
        };
        if let (true, Some(read)) = (roles.queries, &read) {
            app = app.merge(query_api::router(query_api::QueryState::new(
                cfg.clone(),
                read.clone(),
                write.clone(),
                gate,
            )?));
        }
        if let (true, Some(read)) = (roles.portal, read) {
            app = app.merge(portal::router(portal::PortalState::new(
                &cfg,
                write.clone(),
                read,
            )));
        }
        // An unknown path is a problem+json 404 like any other.
        let app = app
            .fallback(|| async { contract::problem::ApiError::NotFound })
            .layer(axum::middleware::from_fn(observe));
        tracing::info!(addr = %listener.local_addr()?, "partner API listening");
        let s = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(s.wait())
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
