//! The one HTTP error type of the partner API, rendered as
//! `application/problem+json` (RFC 9457). Internal errors are logged with
//! their cause and answered as an opaque 500; nothing a partner sees carries
//! SQL, a stack trace or another record's data.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::validation::FieldError;
use serde_json::{json, Map, Value};

/// The base of problem `type` URIs; each type is documented at `/docs`.
pub const PROBLEM_BASE: &str = "/problems/";

// Describes the body `ApiError::body` builds, in the OpenAPI document.
/// The body of every error outside `/oauth/token`, sent as
/// `application/problem+json` (RFC 9457). Other members may be added.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation-failed",
    "title": "Validation failed",
    "status": 422,
    "detail": "The request has invalid fields.",
    "errors": [
        {"field": "dateOfBirth", "code": "invalid", "message": "must be a date YYYY-MM-DD"},
        {"field": "address.country", "code": "invalid", "message": "must be an ISO 3166-1 alpha-2 code such as US"}
    ]
}))]
pub struct Problem {
    /// The problem type, a URI reference under `/problems/`:
    /// `unauthorized`, `forbidden`, `not-found`, `malformed-request`,
    /// `validation-failed`, `duplicate-patient`, `duplicate-accession`,
    /// `invalid-status`, `request-in-progress`, `stale-version`,
    /// `payload-too-large`, `unsupported-media-type`, `rate-limited`,
    /// `unavailable`, `internal`.
    #[serde(rename = "type")]
    #[schema(format = "uri-reference")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Every bad field at once (400 and 422 answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Option<Vec<FieldErrorSchema>>,
    /// On a `duplicate-patient` conflict: the patient that already holds
    /// the `externalPatientID`, when that patient is in the caller's scope.
    #[serde(rename = "existingPatientID", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = uuid::Uuid)]
    pub existing_patient_id: Option<uuid::Uuid>,
    /// On an `invalid-status` conflict: the order's current status.
    #[serde(rename = "orderStatus", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = crate::order_view::OrderStatusSchema)]
    pub order_status: Option<crate::order_view::OrderStatusSchema>,
}

/// One bad field of a request.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorSchema {
    /// The field's path in dot-and-index notation (`firstName`,
    /// `address.postalCode`), or the name of a header or query parameter.
    pub field: String,
    /// `required`, `invalid`, `empty`, `too_long`, `out_of_range`,
    /// `wrong_type` (400), `unknown_field`, `read_only`, `repeated`, ...
    pub code: String,
    /// A human-readable explanation (never echoing the value).
    pub message: String,
}

/// An error answered to a partner.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, expired or revoked credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// Authenticated but lacking the permission or scope.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The record does not exist or is outside the caller's scope.
    #[error("not found")]
    NotFound,
    /// The body is not JSON or has wrong JSON types (400), or is well-formed
    /// but invalid (422).
    #[error("invalid request")]
    Invalid {
        /// 400 or 422.
        status: StatusCode,
        /// Every bad field.
        errors: Vec<FieldError>,
        /// Summary.
        detail: String,
    },
    /// A business conflict (409).
    #[error("conflict: {slug}")]
    Conflict {
        /// Problem type slug (`duplicate-patient`).
        slug: &'static str,
        /// Explanation.
        detail: String,
        /// Extra members (`existingPatientID`).
        extra: Map<String, Value>,
    },
    /// A stale `If-Match`.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The body is larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A write without a JSON content type.
    #[error("unsupported media type")]
    UnsupportedMediaType(&'static str),
    /// A rate limit.
    #[error("too many requests")]
    TooManyRequests(Duration),
    /// A dependency is down or a read could not catch up in time.
    #[error("unavailable: {0}")]
    Unavailable(&'static str, Duration),
    /// A bug or an unexpected failure; the cause is logged, not answered.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 with the given field errors.
    pub fn unprocessable(errors: Vec<FieldError>) -> Self {
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: "The request has invalid fields.".into(),
            errors,
        }
    }

    /// A 400 for a body that is not JSON.
    pub fn malformed(detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// An internal error: its cause as `platform::telemetry::cause` words
    /// it for the log (the database's own message and SQLSTATE, a JSON
    /// error's kind and place, never a value either quotes); the partner
    /// sees only an opaque 500.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let e = e.into();
        ApiError::Internal(platform::telemetry::cause(&*e))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Invalid { status, .. } => *status,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem+json body.
    pub fn body(&self) -> Value {
        let (slug, title, detail): (&str, &str, String) = match self {
            ApiError::Unauthorized => (
                "unauthorized",
                "Unauthorized",
                "A valid bearer token is required.".into(),
            ),
            ApiError::Forbidden(d) => ("forbidden", "Forbidden", d.clone()),
            ApiError::NotFound => ("not-found", "Not Found", "No such record.".into()),
            ApiError::Invalid { status, detail, .. } => {
                if *status == StatusCode::BAD_REQUEST {
                    ("malformed-request", "Malformed request", detail.clone())
                } else {
                    ("validation-failed", "Validation failed", detail.clone())
                }
            }
            ApiError::Conflict { slug, detail, .. } => (slug, "Conflict", detail.clone()),
            ApiError::PreconditionFailed => (
                "stale-version",
                "Precondition Failed",
                "The record changed since the version in If-Match.".into(),
            ),
            ApiError::PayloadTooLarge => (
                "payload-too-large",
                "Payload Too Large",
                format!("The body is larger than {} bytes.", crate::fields::MAX_BODY),
            ),
            ApiError::UnsupportedMediaType(expected) => (
                "unsupported-media-type",
                "Unsupported Media Type",
                format!("Send the body as {expected}."),
            ),
            ApiError::TooManyRequests(_) => (
                "rate-limited",
                "Too Many Requests",
                "Slow down and retry after the time in Retry-After.".into(),
            ),
            ApiError::Unavailable(what, _) => (
                "unavailable",
                "Service Unavailable",
                format!("{what} Retry after the time in Retry-After."),
            ),
            ApiError::Internal(_) => (
                "internal",
                "Internal Server Error",
                "An unexpected error occurred; it has been logged.".into(),
            ),
        };
        let mut body = json!({
            "type": format!("{PROBLEM_BASE}{slug}"),
            "title": title,
            "status": self.status().as_u16(),
            "detail": detail,
        });
        let obj = body.as_object_mut().expect("object literal");
        match self {
            ApiError::Invalid { errors, .. } if !errors.is_empty() => {
                obj.insert(
                    "errors".into(),
                    serde_json::to_value(errors).expect("serializable"),
                );
            }
            ApiError::Conflict { extra, .. } => {
                obj.extend(extra.clone());
            }
            _ => {}
        }
        body
    }
}

fn retry_after(d: &Duration) -> HeaderValue {
    HeaderValue::from(d.as_secs().max(1))
}

impl ApiError {
    /// The headers the answer carries besides its body.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )];
        match self {
            ApiError::Unauthorized => h.push((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lis\""),
            )),
            ApiError::TooManyRequests(d) | ApiError::Unavailable(_, d) => {
                h.push((header::RETRY_AFTER, retry_after(d)));
            }
            _ => {}
        }
        h
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let mut resp = (self.status(), self.body().to_string()).into_response();
        for (k, v) in self.headers() {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %platform::telemetry::cause(&e), "postgres unavailable");
        ApiError::Unavailable("The database is unavailable.", Duration::from_secs(1))
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() {
            tracing::warn!(error = %platform::telemetry::cause(&e), "postgres connection failed");
            ApiError::Unavailable("The database is unavailable.", Duration::from_secs(1))
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<platform::db::DbError> for ApiError {
    fn from(e: platform::db::DbError) -> Self {
        use platform::db::DbError;
        match e {
            DbError::Postgres(e) => e.into(),
            DbError::Pool(e) => e.into(),
            e => ApiError::internal(e),
        }
    }
}

impl From<platform::access_cache::AccessError> for ApiError {
    fn from(e: platform::access_cache::AccessError) -> Self {
        use platform::access_cache::AccessError;
        match e {
            AccessError::Db(e) => e.into(),
            e @ AccessError::Scope(_) => ApiError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost connection is a 503 with Retry-After, never a 500 (the fault
    /// suite found a 500 when Postgres stopped while an aggregate was being
    /// loaded); a failed statement is a 500.
    #[tokio::test]
    async fn a_lost_database_is_503() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Nothing listens there any more.
        let err = tokio_postgres::connect(
            &format!("postgres://postgres@127.0.0.1:{port}/x"),
            tokio_postgres::NoTls,
        )
        .await
        .err()
        .expect("connection refused");
        let api: ApiError = err.into();
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        let other = ApiError::internal("bad event data");
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Every member an error body can have is described by [`Problem`].
    #[test]
    fn problem_schema_describes_every_body() {
        let schema = serde_json::to_value(<Problem as utoipa::PartialSchema>::schema()).unwrap();
        let described: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut extra = Map::new();
        extra.insert("existingPatientID".into(), json!(uuid::Uuid::nil()));
        let errors = vec![FieldError::required("firstName")];
        let all = [
            ApiError::Unauthorized,
            ApiError::Forbidden("no".into()),
            ApiError::NotFound,
            ApiError::unprocessable(errors.clone()),
            ApiError::malformed("bad"),
            ApiError::Conflict {
                slug: "duplicate-patient",
                detail: "dup".into(),
                extra,
            },
            ApiError::Conflict {
                slug: "invalid-status",
                detail: "Cannot collect an order that is canceled.".into(),
                extra: Map::from_iter([("orderStatus".to_string(), json!("canceled"))]),
            },
            ApiError::Conflict {
                slug: "duplicate-accession",
                detail: "dup".into(),
                extra: Map::new(),
            },
            ApiError::PreconditionFailed,
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType("application/json"),
            ApiError::TooManyRequests(Duration::from_secs(1)),
            ApiError::Unavailable("Down.", Duration::from_secs(1)),
            ApiError::Internal("boom".into()),
        ];
        for e in all {
            let body = e.body();
            for key in body.as_object().unwrap().keys() {
                assert!(described.contains(&key.as_str()), "{key} of {e:?}");
            }
            let slug = body["type"]
                .as_str()
                .unwrap()
                .trim_start_matches(PROBLEM_BASE);
            let doc = schema["properties"]["type"]["description"]
                .as_str()
                .unwrap();
            assert!(
                doc.contains(&format!("`{slug}`")),
                "{slug} is not described"
            );
        }
    }
}
