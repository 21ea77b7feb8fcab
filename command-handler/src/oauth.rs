//! `POST /oauth/token`: the OAuth 2.0 client credentials grant (RFC 6749
//! section 4.4), with errors in the RFC's own shape, rate-limited per
//! `client_id` and per source address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use platform::auth::{permissions_from_db, verify_secret_off_thread};

use crate::AppState;

/// Token request limits per `client_id` and per source address.
pub struct TokenLimiter {
    by_client: DefaultKeyedRateLimiter<String>,
    by_addr: DefaultKeyedRateLimiter<IpAddr>,
}

impl TokenLimiter {
    /// Allows `per_minute` requests a minute, in bursts of up to that many.
    pub fn new(per_minute: u32) -> Arc<Self> {
        let n = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
        let quota = Quota::per_minute(n).allow_burst(n);
        Arc::new(TokenLimiter {
            by_client: RateLimiter::keyed(quota),
            by_addr: RateLimiter::keyed(
                quota.allow_burst(n.saturating_mul(NonZeroU32::new(4).expect("4"))),
            ),
        })
    }

    fn check(&self, client: Option<&str>, addr: IpAddr) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        self.by_addr
            .check_key(&addr)
            .map_err(|n| n.wait_time_from(now))?;
        if let Some(c) = client {
            self.by_client
                .check_key(&c.to_string())
                .map_err(|n| n.wait_time_from(now))?;
        }
        Ok(())
    }
}

/// The token request (`application/x-www-form-urlencoded`, RFC 6749
/// section 4.4.2). The credentials go either in HTTP Basic or in the body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// Always `client_credentials` (another grant type answers 400
    /// `unsupported_grant_type`).
    pub grant_type: GrantType,
    /// The partner's `client_id`, unless sent in HTTP Basic.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub client_id: Option<String>,
    /// The partner's `client_secret`, unless sent in HTTP Basic.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub client_secret: Option<String>,
}

/// The one grant type the token endpoint serves.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub enum GrantType {
    /// OAuth 2.0 client credentials.
    #[serde(rename = "client_credentials")]
    ClientCredentials,
}

/// A successful token answer (RFC 6749 section 5.1).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The bearer token for `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Lifetime in seconds.
    #[schema(example = 3600)]
    pub expires_in: u64,
    /// The partner's permissions, space-separated.
    #[schema(example = "patients:create patients:read patients:update")]
    pub scope: String,
}

/// An error of the token endpoint, in the RFC 6749 shape (section 5.2),
/// not problem+json.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OAuthError {
    /// `invalid_request` (400), `unsupported_grant_type` (400),
    /// `invalid_client` (401), `slow_down` (429) or
    /// `temporarily_unavailable` (503).
    #[schema(example = "invalid_client")]
    pub error: &'static str,
    /// A human-readable explanation.
    pub error_description: &'static str,
}

fn oauth_error(status: StatusCode, error: &'static str, description: &'static str) -> Response {
    let body = OAuthError {
        error,
        error_description: description,
    };
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&body).expect("serializes"),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"lis\""),
        );
    }
    r
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = v.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// `POST /oauth/token`.
#[utoipa::path(
    post,
    path = "/oauth/token",
    operation_id = "token",
    tag = "auth",
    summary = "Get an access token",
    description = "The OAuth 2.0 client credentials grant (RFC 6749 section 4.4). Send \
        `grant_type=client_credentials` form-encoded, with the partner's `client_id` and \
        `client_secret` in HTTP Basic or in the body. Errors use the RFC 6749 shape, not \
        problem+json. Rate-limited per `client_id` and per source address.",
    request_body(
        content = TokenRequest,
        content_type = "application/x-www-form-urlencoded",
        description = "`grant_type=client_credentials`, plus the credentials unless they are sent in HTTP Basic."
    ),
    security((), ("client_basic" = [])),
    responses(
        (status = 200, description = "A token. `Cache-Control: no-store`.", body = TokenResponse),
        (status = 400, description = "A malformed request (`invalid_request`: not form-encoded, no `grant_type`) or another grant type (`unsupported_grant_type`).",
            body = OAuthError, example = json!({"error": "unsupported_grant_type", "error_description": "only client_credentials is supported"})),
        (status = 401, description = "Wrong, unknown or disabled credentials (`invalid_client`).",
            body = OAuthError,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"lis\"`")),
            example = json!({"error": "invalid_client", "error_description": "client authentication failed"})),
        (status = 429, description = "Too many token requests for this `client_id` or source address (`slow_down`).",
            body = OAuthError,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again.")),
            example = json!({"error": "slow_down", "error_description": "too many token requests"})),
        (status = 503, description = "The database is unavailable (`temporarily_unavailable`).", body = OAuthError),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn token(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = match serde_urlencoded_pairs(&body) {
        Some(f) => f,
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be form-encoded",
            )
        }
    };
    let ct_ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let basic = basic_credentials(&headers);
    let client_id = basic
        .as_ref()
        .map(|b| b.0.clone())
        .or_else(|| field("client_id"));
    if let Err(wait) = app.limiter.check(client_id.as_deref(), peer.ip()) {
        let mut r = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many token requests",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return r;
    }
    if !ct_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send application/x-www-form-urlencoded",
        );
    }
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            )
        }
    }
    let secret = basic.map(|b| b.1).or_else(|| field("client_secret"));
    // No client_id this server issues holds a NUL (nor can Postgres compare
    // one): such a client is unknown, not a database failure.
    let client_id = client_id.filter(|c| !c.contains('\0'));
    let (Some(client_id), Some(secret)) = (client_id, secret) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let db = match app.write.get().await {
        Ok(db) => db,
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the database is unavailable",
            )
        }
    };
    let row = db
        .query_opt(
            "SELECT partner_id, secret_hash, secret_version, permissions, disabled FROM partners WHERE client_id = $1",
            &[&client_id],
        )
        .await;
    drop(db);
    let row = match row {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "token lookup failed");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the database is unavailable",
            );
        }
    };
    let hash: Option<String> = row.as_ref().map(|r| r.get(1));
    let ok = verify_secret_off_thread(secret, hash).await;
    let Some(row) = row.filter(|r| ok && !r.get::<_, bool>(4)) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let permissions = permissions_from_db(&row.get::<_, Vec<String>>(3));
    let (signer, published) = app.signer.signer();
    if !published {
        let publish = match app.write.get().await {
            Ok(db) => platform::token::publish(&**db, signer.public())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = publish {
            tracing::warn!(error = %e, "could not publish the token signing key");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the database is unavailable",
            );
        }
        app.signer.published(signer.public());
    }
    let token = signer.issue(row.get(0), row.get(2), &permissions, app.cfg.token_ttl);
    let scope = permissions
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let body = TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: app.cfg.token_ttl.as_secs(),
        scope,
    };
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&body).expect("serializes"),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Parses an `application/x-www-form-urlencoded` body.
fn serde_urlencoded_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    if body.len() > 8192 {
        return None;
    }
    serde_urlencoded::from_bytes(body).ok()
}
