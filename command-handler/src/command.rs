//! What every command shares: one transaction per attempt with
//! idempotency, retries after a lost race, body and precondition parsing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use contract::problem::ApiError;
use deadpool_postgres::Transaction;
use domain::validation::FieldError;

use crate::idempotency::{Answer, Idempotency};
use crate::store::{AppendError, LoadError};
use crate::AppState;

/// How often a command is retried after losing a race.
const MAX_ATTEMPTS: usize = 8;

/// Why one attempt of a command's transaction did not commit.
pub(crate) enum TxError {
    /// Lost a race (stream version or a uniqueness reservation): run again.
    Retry,
    /// A final answer.
    Api(ApiError),
}

impl From<ApiError> for TxError {
    fn from(e: ApiError) -> Self {
        TxError::Api(e)
    }
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Api(e.into())
    }
}

impl From<AppendError> for TxError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict => TxError::Retry,
            AppendError::Db(e) => e.into(),
        }
    }
}

impl From<LoadError> for TxError {
    fn from(e: LoadError) -> Self {
        TxError::Api(e.into())
    }
}

/// Maps an insert's unique violation on `constraint` to a retry.
pub(crate) fn retry_on(constraint: &'static str) -> impl Fn(tokio_postgres::Error) -> TxError {
    move |e| {
        if platform::db::is_unique_violation(&e, constraint) {
            TxError::Retry
        } else {
            e.into()
        }
    }
}

/// Reads the body, mapping an oversize body to 413.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::malformed("The body could not be read.")
        }
    })
}

/// A command's work inside one transaction attempt.
pub(crate) trait Attempt: Send + Sync {
    /// Decides and writes; returns the answer to commit.
    fn attempt<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
    ) -> impl std::future::Future<Output = Result<Answer, TxError>> + Send + 'a;
}

/// Runs a command's transaction with idempotency and race retries.
pub(crate) async fn execute(
    app: &AppState,
    idem: Option<Idempotency>,
    command: impl Attempt,
) -> Response {
    let result = async {
        let mut db = app.write.get().await?;
        for _ in 0..MAX_ATTEMPTS {
            let tx = db.transaction().await?;
            if let Some(idem) = &idem {
                if let Some(previous) = idem.begin(&tx).await? {
                    return Ok(previous);
                }
            }
            match command.attempt(&tx).await {
                Ok(answer) => {
                    if let Some(idem) = &idem {
                        idem.save(&tx, &answer).await?;
                    }
                    tx.commit().await?;
                    crate::store::COMMITTED.notify_one();
                    return Ok(answer);
                }
                Err(TxError::Retry) => {
                    tx.rollback().await?;
                    continue;
                }
                Err(TxError::Api(e)) => {
                    tx.rollback().await?;
                    let answer = Answer::from_error(&e);
                    if let Some(idem) = &idem {
                        idem.save(&db, &answer).await?;
                    }
                    if e.status().is_server_error() {
                        return Err(e);
                    }
                    return Ok(answer);
                }
            }
        }
        Err(ApiError::Unavailable(
            "The record is busy; retry.",
            std::time::Duration::from_secs(1),
        ))
    }
    .await;
    match result {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parses `If-Match` (`"3"` or `W/"3"`); 422 when malformed.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s == "*" {
        // Any current representation: the record exists (checked anyway).
        return Ok(None);
    }
    if s.starts_with("W/") {
        // If-Match uses strong comparison (RFC 9110): a weak tag never matches.
        return Ok(Some(0));
    }
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| {
            ApiError::unprocessable(vec![FieldError::new(
                "If-Match",
                "invalid",
                "must be an entity tag such as \"3\"",
            )])
        })
}

/// The start every create shares, in the contract's check order:
/// authentication (401), the permission (403), the body's
/// `clientID`/`locationID` in the caller's scope (403, before validation),
/// then a JSON content type (415) and a JSON object (400).
pub(crate) async fn begin_create(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    permission: domain::access::Permission,
) -> Result<(contract::caller::Caller, Bytes, contract::fields::Fields), ApiError> {
    use contract::fields::{self, BodyKind, Fields};
    use serde_json::Value;
    let caller = contract::caller::authenticate(headers, &app.keys, &app.partners).await?;
    tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
    caller.require(permission)?;
    let body = body_bytes(body)?;
    let map = fields::parse_object(&body);
    if let Ok(map) = &map {
        let client = map.get("clientID").and_then(Value::as_str);
        let location = map.get("locationID").and_then(Value::as_str);
        if let (Some(c), Some(l)) = (client, location) {
            if !caller.sees(c, l) {
                return Err(ApiError::Forbidden(
                    "The clientID/locationID is outside this partner's scope.".into(),
                ));
            }
        }
    }
    fields::require_json(headers, BodyKind::Json)?;
    Ok((caller, body, Fields::new(map?)))
}
