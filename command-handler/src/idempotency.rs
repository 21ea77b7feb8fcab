//! Idempotent retries: the first answer to a (partner, method, path,
//! `Idempotency-Key`) is kept and replayed to every retry with the same body.
//!
//! A retry that arrives while the first request is still running finds the
//! key's advisory lock taken and gets 409; the lock is transaction-scoped, so
//! a crashed request never leaves a key stuck.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::GenericClient;
use domain::validation::FieldError;
use platform::db::Cached;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use contract::problem::ApiError;

/// The header partners send.
pub const HEADER: &str = "idempotency-key";

/// An answer as it was (or will be) given.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers worth replaying (Location, ETag, Consistency-Token, Content-Type).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: StatusCode, body: &Value, headers: Vec<(String, String)>) -> Self {
        let mut headers = headers;
        headers.push(("content-type".into(), "application/json".into()));
        Answer {
            status,
            headers,
            body: serde_json::to_vec(body).expect("json serializes"),
        }
    }

    /// The answer of an error.
    pub fn from_error(e: &ApiError) -> Self {
        Answer {
            status: e.status(),
            headers: e
                .headers()
                .into_iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: serde_json::to_vec(&e.body()).expect("json serializes"),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

/// A request's idempotency key with what identifies the request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    partner_id: Uuid,
    method: Method,
    path: String,
    /// The key as sent.
    pub key: String,
    request_hash: Vec<u8>,
}

/// Reads and checks the `Idempotency-Key` header (1-255 visible ASCII).
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("");
    if (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Some(s.to_string()))
    } else {
        Err(ApiError::unprocessable(vec![FieldError::new(
            "Idempotency-Key",
            "invalid",
            "must be 1-255 visible ASCII characters",
        )]))
    }
}

impl Idempotency {
    /// The request's idempotency identity, when it carries an
    /// `Idempotency-Key` (422 when the header is malformed).
    pub fn from_request(
        headers: &HeaderMap,
        partner_id: Uuid,
        method: Method,
        path: String,
        body: &[u8],
    ) -> Result<Option<Self>, ApiError> {
        Ok(key_from(headers)?.map(|k| Self::new(partner_id, method, path, k, body)))
    }

    /// Identifies a request by partner, method, path and body.
    pub fn new(partner_id: Uuid, method: Method, path: String, key: String, body: &[u8]) -> Self {
        Idempotency {
            partner_id,
            method,
            path,
            key,
            request_hash: Sha256::digest(body).to_vec(),
        }
    }

    /// The key's advisory lock.
    pub fn lock_key(&self) -> i64 {
        let mut h = Sha256::new();
        h.update(self.partner_id.as_bytes());
        h.update(self.method.as_str().as_bytes());
        h.update(self.path.as_bytes());
        h.update(self.key.as_bytes());
        i64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
    }

    /// Takes the key's lock for this transaction and looks for an earlier
    /// answer: `Some` to replay, 409 while another request holds the key, 422
    /// when the key was used with another body.
    pub async fn begin(&self, tx: &impl GenericClient) -> Result<Option<Answer>, ApiError> {
        let locked: bool = tx
            .query_one_cached("SELECT pg_try_advisory_xact_lock($1)", &[&self.lock_key()])
            .await?
            .get(0);
        if !locked {
            return Err(ApiError::Conflict {
                slug: "request-in-progress",
                detail: "A request with this Idempotency-Key is still running.".into(),
                extra: Default::default(),
            });
        }
        let row = tx
            .query_opt_cached(
                "SELECT request_hash, status, headers, body FROM idempotency \
                 WHERE partner_id = $1 AND method = $2 AND path = $3 AND key = $4",
                &[
                    &self.partner_id,
                    &self.method.as_str(),
                    &self.path,
                    &self.key,
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let hash: Vec<u8> = row.get(0);
        if hash != self.request_hash {
            return Err(ApiError::unprocessable(vec![FieldError::new(
                "Idempotency-Key",
                "reused",
                "this key was already used with a different request body",
            )]));
        }
        let status: i16 = row.get(1);
        let headers: Value = row.get(2);
        Ok(Some(Answer {
            status: StatusCode::from_u16(status as u16).map_err(ApiError::internal)?,
            headers: serde_json::from_value(headers).map_err(ApiError::internal)?,
            body: row.get(3),
        }))
    }

    /// Keeps an answer below 500 (a 5xx is not kept: the retry runs again).
    pub async fn save(
        &self,
        db: &impl GenericClient,
        answer: &Answer,
    ) -> Result<(), tokio_postgres::Error> {
        if answer.status.is_server_error() {
            return Ok(());
        }
        let headers = serde_json::to_value(&answer.headers).expect("headers serialize");
        db.execute_cached(
            "INSERT INTO idempotency (partner_id, method, path, key, request_hash, status, headers, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &self.partner_id,
                &self.method.as_str(),
                &self.path,
                &self.key,
                &self.request_hash,
                &(answer.status.as_u16() as i16),
                &headers,
                &answer.body,
            ],
        )
        .await?;
        Ok(())
    }
}
