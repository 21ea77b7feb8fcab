//! Portal sessions and CSRF tokens.
//!
//! A session is a random 256-bit cookie value; the database keeps only its
//! SHA-256 (`portal_sessions`), beside the session's CSRF token. The cookie
//! is `HttpOnly` (scripts cannot read it), `SameSite=Strict`, limited to
//! `/portal`, and `Secure` when the portal's public origin is HTTPS. A
//! session ends at logout, after [`IDLE`] without a request, after
//! [`ABSOLUTE`] in all, and when its account is locked or disabled.
//!
//! Forms before login (login, activation, a new link) carry a CSRF token
//! that must equal the `lis_portal_csrf` cookie (double submit); forms
//! after login carry the session's own token.

use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use deadpool_postgres::GenericClient;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The session cookie.
pub const SESSION_COOKIE: &str = "lis_portal";
/// The cookie of the double-submit CSRF token of forms before login.
pub const CSRF_COOKIE: &str = "lis_portal_csrf";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, whatever happens.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);

/// A signed-in patient.
#[derive(Debug, Clone)]
pub struct Session {
    /// The account.
    pub account_id: Uuid,
    /// The account's patient.
    pub patient_id: Uuid,
    /// The token this session's forms must carry.
    pub csrf: String,
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// How a token is kept: its SHA-256.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && digest(a).ct_eq(&digest(b)).into()
}

/// A cookie's value in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/portal`,
/// `Secure` when `secure`; `None` removes the cookie.
pub fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> String {
    let mut c = Cookie::build((name.to_string(), value.unwrap_or("").to_string()))
        .path("/portal")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build();
    if value.is_none() {
        c.make_removal();
    }
    c.to_string()
}

/// Starts a session for `account_id` (and drops its lapsed ones): the
/// cookie's value.
pub async fn start(
    db: &impl GenericClient,
    account_id: Uuid,
) -> Result<String, tokio_postgres::Error> {
    let token = random_token();
    db.execute(
        "DELETE FROM portal_sessions WHERE account_id = $1 \
         AND (seen_at <= now() - make_interval(secs => $2) OR created_at <= now() - make_interval(secs => $3))",
        &[&account_id, &IDLE.as_secs_f64(), &ABSOLUTE.as_secs_f64()],
    )
    .await?;
    db.execute(
        "INSERT INTO portal_sessions (session_hash, account_id, csrf_token) VALUES ($1, $2, $3)",
        &[&digest(&token), &account_id, &random_token()],
    )
    .await?;
    Ok(token)
}

/// How often a session's idle clock is written: a page view within this
/// of the last write reads only (no commit to wait for).
pub const SEEN_GRANULARITY: Duration = Duration::from_secs(60);

/// The session a cookie names, while it lasts and its account is active;
/// notes the request (the idle clock restarts, to within
/// [`SEEN_GRANULARITY`]).
pub async fn find(
    db: &impl GenericClient,
    token: &str,
) -> Result<Option<Session>, tokio_postgres::Error> {
    let row = db
        .query_opt(
            "WITH live AS ( \
               SELECT s.account_id, a.patient_id, s.csrf_token, s.seen_at FROM portal_sessions s \
               JOIN accounts a ON a.account_id = s.account_id \
               WHERE s.session_hash = $1 AND a.status = 'active' \
               AND s.seen_at > now() - make_interval(secs => $2) \
               AND s.created_at > now() - make_interval(secs => $3)), \
             seen AS ( \
               UPDATE portal_sessions SET seen_at = now() \
               WHERE session_hash = $1 AND seen_at <= now() - make_interval(secs => $4) \
               AND EXISTS (SELECT 1 FROM live)) \
             SELECT account_id, patient_id, csrf_token FROM live",
            &[
                &digest(token),
                &IDLE.as_secs_f64(),
                &ABSOLUTE.as_secs_f64(),
                &SEEN_GRANULARITY.as_secs_f64(),
            ],
        )
        .await?;
    Ok(row.map(|r| Session {
        account_id: r.get(0),
        patient_id: r.get(1),
        csrf: r.get(2),
    }))
}

/// Ends the session a cookie names.
pub async fn end(db: &impl GenericClient, token: &str) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "DELETE FROM portal_sessions WHERE session_hash = $1",
        &[&digest(token)],
    )
    .await?;
    Ok(())
}
