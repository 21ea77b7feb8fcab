//! Auditors' reads of a record's past, served from the `history` rows the
//! projector keeps: every event of a patient or order with what it changed
//! (`GET …/history`), and the record as it stood at an instant (`?asOf=`).

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use contract::caller::Caller;
use contract::problem::{ApiError, Problem};
use domain::access::Permission;
use domain::event::StreamKind;
use domain::validation::FieldError;
use platform::db::Cached;
use platform::envelope::format_time;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::access_log::{Access, Endpoint};
use crate::patients::{json_response, prepare};
use crate::{paging, QueryState};

/// One thing an event changed.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Change {
    /// The member, in dot notation for nested objects (`address.city`).
    pub field: String,
    /// Its value before the event (any JSON value); null when it had none.
    pub from: Value,
    /// Its value after the event (any JSON value); null when the event
    /// removed it.
    pub to: Value,
}

/// One event of a record's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The event's id (the same `eventID` as on the event stream).
    #[serde(rename = "eventID")]
    pub event_id: Uuid,
    /// The event type (`PatientUpdated`, `SpecimenCollected`, …).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The record's version after the event.
    pub version: i64,
    /// When the command was accepted (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub occurred_at: String,
    /// Who acted: `{"type":"partner","id":…}`, `{"type":"operator","id":…}`
    /// or `{"type":"system","id":…}`. Without `audit:read`, another
    /// partner is shown as `{"type":"partner"}`.
    #[schema(value_type = Object)]
    pub actor: Value,
    /// The command that produced the event.
    #[serde(rename = "commandID")]
    pub command_id: Uuid,
    /// The request's `Idempotency-Key`, when one was sent (hidden, like the
    /// actor, for another partner's requests without `audit:read`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// What the event changed, member by member.
    pub changes: Vec<Change>,
}

/// A page of a record's history, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// The events of this page, by version.
    pub items: Vec<HistoryEntry>,
    /// Pass it as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The query parameters of a history read.
#[derive(Debug, Default, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Finds the record a request names, in the caller's scope (404 otherwise,
/// the same answer as for a record that does not exist), noting where it
/// was found in the access log entry.
pub(crate) async fn find_in_scope(
    app: &QueryState,
    caller: &Caller,
    access: &mut Access,
    id: &str,
) -> Result<Uuid, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let (client, location) = crate::access_log::placed(app, access.endpoint().record_kind(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    access.found(&client, &location);
    if !caller.sees(&client, &location) {
        return Err(ApiError::NotFound);
    }
    Ok(id)
}

/// Reads `limit` and `cursor`, naming every bad parameter.
fn parse_page(query: Option<&str>) -> Result<(i64, i64), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::malformed("The query string is malformed."))?;
    let (mut limit, mut after) = (paging::DEFAULT_LIMIT, None);
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in pairs {
        if !seen.insert(name.clone()) {
            errors.push(FieldError::new(
                name,
                "repeated",
                "give this parameter once",
            ));
        } else if !paging::param(&name, &value, &mut limit, &mut after, &mut errors) {
            errors.push(FieldError::new(
                name,
                "unknown_field",
                "this parameter is not recognised",
            ));
        }
    }
    if errors.is_empty() {
        Ok((limit, after.unwrap_or(0)))
    } else {
        Err(ApiError::unprocessable(errors))
    }
}

/// Hides another partner's identity (and its request's key) from a caller
/// without `audit:read`.
fn shown_actor(caller: &Caller, actor: Value, key: Option<String>) -> (Value, Option<String>) {
    if caller.has(Permission::AuditRead) {
        return (actor, key);
    }
    let other_partner = actor["type"] == "partner"
        && actor["id"].as_str() != Some(caller.partner_id.to_string().as_str());
    if other_partner {
        (json!({"type": "partner"}), None)
    } else {
        (actor, key)
    }
}

async fn history(
    app: QueryState,
    endpoint: Endpoint,
    id: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let mut access = app.access_log.begin(endpoint).naming(&id);
    let read = match endpoint.record_kind() {
        StreamKind::Patient => Permission::PatientsRead,
        _ => Permission::TestsRead,
    };
    let result = async {
        let prepared =
            prepare(&app, &headers, &[Permission::AuditRead, read], &mut access).await?;
        let caller = &prepared.caller;
        let id = find_in_scope(&app, caller, &mut access, &id).await?;
        prepared.validated()?;
        let (limit, after) = parse_page(query.as_deref())?;
        let db = app.read().get().await?;
        let rows = db
            .query_cached(
                "SELECT event_id, event_type, version, occurred_at, actor, command_id, idempotency_key, changes \
                 FROM history WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3",
                &[&id, &after, &(limit + 1)],
            )
            .await?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(limit as usize) {
            let (actor, idempotency_key) = shown_actor(caller, r.get(4), r.get(6));
            items.push(HistoryEntry {
                event_id: r.get(0),
                event_type: r.get(1),
                version: r.get(2),
                occurred_at: format_time(&r.get::<_, DateTime<Utc>>(3)),
                actor,
                command_id: r.get(5),
                idempotency_key,
                changes: serde_json::from_value(r.get::<_, Value>(7))
                    .map_err(ApiError::internal)?,
            });
        }
        let next_cursor = if more {
            items.last().map(|e| paging::encode(&e.version))
        } else {
            None
        };
        Ok(json_response(
            StatusCode::OK,
            &HistoryPage { items, next_cursor },
            None,
        ))
    }
    .await;
    app.access_log.answer(access, result).await
}

/// `GET /v1/patients/{patientID}/history`.
#[utoipa::path(
    get,
    path = "/v1/patients/{patientID}/history",
    operation_id = "getPatientHistory",
    tag = "history",
    summary = "Read the history of a patient",
    description = "Every event of the patient, oldest first, a page at a time: its type, the \
        version it made, when, who acted, through which request (`Idempotency-Key`, \
        `commandID`) and what it changed. Requires `audit:read`, or `patients:read`, which shows \
        the same list without other partners' identities. The patient must be in scope.",
    params(
        ("patientID" = uuid::Uuid, Path, description = "The patient's id."),
        HistoryQuery,
    ),
    security(("bearer" = []), ("oauth2" = ["audit:read"]), ("oauth2" = ["patients:read"])),
    responses(
        (status = 200, description = "A page of the patient's history.", body = HistoryPage),
        (status = 400, description = "The query string is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner holds neither `audit:read` nor `patients:read`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or the patient is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `cursor`, an unknown parameter, or a bad `Consistency-Token`.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn patient_history(
    State(app): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    history(app, Endpoint::PatientHistory, id, query, headers).await
}

/// `GET /v1/orders/{orderID}/history`.
#[utoipa::path(
    get,
    path = "/v1/orders/{orderID}/history",
    operation_id = "getOrderHistory",
    tag = "history",
    summary = "Read the history of an order",
    description = "Every event of the order, oldest first, a page at a time: its type, the \
        version it made, when, who acted, through which request (`Idempotency-Key`, \
        `commandID`) and what it changed (a correction shows the values it replaced). Requires \
        `audit:read`, or `tests:read`, which shows the same list without other partners' \
        identities. The order must be in scope.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
        HistoryQuery,
    ),
    security(("bearer" = []), ("oauth2" = ["audit:read"]), ("oauth2" = ["tests:read"])),
    responses(
        (status = 200, description = "A page of the order's history.", body = HistoryPage),
        (status = 400, description = "The query string is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner holds neither `audit:read` nor `tests:read`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `cursor`, an unknown parameter, or a bad `Consistency-Token`.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn order_history(
    State(app): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    history(app, Endpoint::OrderHistory, id, query, headers).await
}

/// The `asOf` parameter of a record read, when the query string has one.
pub(crate) fn as_of_param(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == "asOf").map(|(_, v)| v)
}

/// Parses an `asOf` instant: RFC 3339, not in the future.
fn parse_as_of(raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let bad = |msg: &str| ApiError::unprocessable(vec![FieldError::new("asOf", "invalid", msg)]);
    let t = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| bad("must be an RFC 3339 timestamp"))?
        .with_timezone(&Utc);
    if t > Utc::now() {
        return Err(bad("must not be in the future"));
    }
    Ok(t)
}

/// The newest state of a stream at or before `at`, from its history.
async fn state_at(
    db: &deadpool_postgres::Object,
    stream: Uuid,
    at: &DateTime<Utc>,
) -> Result<Option<Value>, ApiError> {
    Ok(db
        .query_opt_cached(
            "SELECT state FROM history WHERE stream_id = $1 AND occurred_at <= $2 \
             ORDER BY version DESC LIMIT 1",
            &[&stream, at],
        )
        .await?
        .map(|r| r.get(0)))
}

fn in_scope(caller: &Caller, state: &Value) -> bool {
    match (state["clientID"].as_str(), state["locationID"].as_str()) {
        (Some(c), Some(l)) => caller.sees(c, l),
        _ => false,
    }
}

/// A patient or order as it stood at `asOf` (`audit:read`): the newest
/// history row at or before that instant. A patient shows the account
/// status it had then; an order embeds its patient as it stood then, when
/// that patient was in the caller's scope.
pub(crate) async fn as_of(
    app: QueryState,
    endpoint: Endpoint,
    id: String,
    raw: String,
    headers: HeaderMap,
) -> Response {
    let mut access = app.access_log.begin(endpoint).naming(&id);
    let result = async {
        let prepared = prepare(&app, &headers, &[Permission::AuditRead], &mut access).await?;
        let caller = &prepared.caller;
        let id = find_in_scope(&app, caller, &mut access, &id).await?;
        prepared.validated()?;
        let at = parse_as_of(&raw)?;
        let db = app.read().get().await?;
        let mut state = state_at(&db, id, &at).await?.ok_or(ApiError::NotFound)?;
        if !in_scope(caller, &state) {
            return Err(ApiError::NotFound);
        }
        match endpoint.record_kind() {
            StreamKind::Patient => {
                let account = db
                    .query_opt_cached(
                        "SELECT h.state->>'status' FROM accounts a JOIN history h ON h.stream_id = a.account_id \
                         WHERE a.patient_id = $1 AND h.occurred_at <= $2 ORDER BY h.version DESC LIMIT 1",
                        &[&id, &at],
                    )
                    .await?
                    .and_then(|r| r.get::<_, Option<String>>(0));
                state["account"] = json!({"status": account.as_deref().unwrap_or("none")});
            }
            _ => {
                let patient_id: Option<Uuid> =
                    state["patientID"].as_str().and_then(|s| s.parse().ok());
                let patient = match patient_id {
                    Some(p) => state_at(&db, p, &at).await?,
                    None => None,
                };
                // As on a current read: only for a caller that may read the
                // patient itself.
                state["patient"] = match patient {
                    Some(p) if caller.has(Permission::PatientsRead) && in_scope(caller, &p) => json!({
                        "firstName": p["firstName"],
                        "lastName": p["lastName"],
                        "dateOfBirth": p["dateOfBirth"],
                        "sex": p["sex"],
                    }),
                    _ => Value::Null,
                };
            }
        }
        Ok(json_response(StatusCode::OK, &state, None))
    }
    .await;
    app.access_log.answer(access, result).await
}
