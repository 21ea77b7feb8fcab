//! Order reads and the test catalog.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::access::Permission;
use domain::order::{OrderStatus, Priority};
use domain::patient::Sex;
use domain::validation::{is_external_id, is_reference_id, FieldError};
use platform::auth::Caller;
use platform::envelope::format_time;
use platform::fields::{self, BodyKind, Fields};
use platform::order_view::{OrderView, OrderedTest, PatientSummary};
use platform::problem::ApiError;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::patients::{decode_cursor, encode_cursor, json_response, prepare, scope_list};
use crate::QueryState;

const COLUMNS: &str = "o.order_id, o.patient_id, o.client_id, o.location_id, o.accession_number, \
     o.external_order_id, o.tests, o.specimen, o.priority, o.status, o.results, o.cancel_reason, o.version, \
     o.created_at, o.updated_at, p.first_name, p.last_name, p.date_of_birth, p.sex, p.client_id, p.location_id";

const FROM: &str = "FROM orders o LEFT JOIN patients p ON p.patient_id = o.patient_id";

fn view_of(caller: &Caller, r: &tokio_postgres::Row) -> Result<OrderView, ApiError> {
    let bad = |what: &str| ApiError::internal(format!("bad {what} in the orders read model"));
    let tests: Vec<String> = serde_json::from_value(r.get(6)).map_err(|_| bad("tests"))?;
    let patient_client: Option<String> = r.get(19);
    let patient_location: Option<String> = r.get(20);
    let patient = match (patient_client, patient_location) {
        (Some(c), Some(l)) if caller.has(Permission::PatientsRead) && caller.sees(&c, &l) => {
            let sex: String = r.get(18);
            Some(PatientSummary {
                first_name: r.get(15),
                last_name: r.get(16),
                date_of_birth: r.get(17),
                sex: Sex::parse(&sex).ok_or_else(|| bad("sex"))?,
            })
        }
        _ => None,
    };
    let priority: String = r.get(8);
    let status: String = r.get(9);
    Ok(OrderView {
        order_id: r.get(0),
        patient_id: r.get(1),
        patient,
        client_id: r.get(2),
        location_id: r.get(3),
        accession_number: r.get(4),
        external_order_id: r.get(5),
        tests: tests.into_iter().map(|code| OrderedTest { code }).collect(),
        specimen: serde_json::from_value(r.get(7)).map_err(|_| bad("specimen"))?,
        priority: Priority::parse(&priority).ok_or_else(|| bad("priority"))?,
        status: OrderStatus::parse(&status).ok_or_else(|| bad("status"))?,
        results: serde_json::from_value(r.get(10)).map_err(|_| bad("results"))?,
        cancel_reason: r.get(11),
        version: r.get(12),
        created_at: format_time(&r.get::<_, DateTime<Utc>>(13)),
        updated_at: format_time(&r.get::<_, DateTime<Utc>>(14)),
    })
}

/// `GET /v1/orders/{orderID}`.
#[tracing::instrument(skip_all)]
pub async fn get_one(State(app): State<QueryState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let result = async {
        let caller = prepare(&app, &headers, Permission::TestsRead).await?;
        let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
        let db = app.read.get().await?;
        let row = db
            .query_opt(&format!("SELECT {COLUMNS} {FROM} WHERE o.order_id = $1"), &[&id])
            .await?
            .ok_or(ApiError::NotFound)?;
        let view = view_of(&caller, &row)?;
        if !caller.sees(&view.client_id, &view.location_id) {
            return Err(ApiError::NotFound);
        }
        Ok(json_response(StatusCode::OK, &view, Some(view.etag())))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Default)]
struct Filters {
    patient_id: Option<Uuid>,
    status: Option<String>,
    accession_number: Option<String>,
    external_order_id: Option<String>,
    client_id: Option<String>,
    location_id: Option<String>,
    updated_since: Option<DateTime<Utc>>,
    limit: i64,
    cursor: Option<(DateTime<Utc>, Uuid)>,
}

/// The filters an order list or search accepts.
pub const FILTERS: [&str; 9] = [
    "patientID",
    "status",
    "accessionNumber",
    "externalOrderID",
    "clientID",
    "locationID",
    "updatedSince",
    "limit",
    "cursor",
];

fn parse_filters(raw: Vec<(String, String)>) -> Result<Filters, Vec<FieldError>> {
    let mut f = Filters {
        limit: 50,
        ..Filters::default()
    };
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in raw {
        if !seen.insert(name.clone()) {
            errors.push(FieldError::new(name, "repeated", "give this filter once"));
            continue;
        }
        let bad = |code: &'static str, msg: &str| FieldError::new(name.clone(), code, msg);
        match name.as_str() {
            "patientID" => match value.parse() {
                Ok(id) => f.patient_id = Some(id),
                Err(_) => errors.push(bad("invalid", "must be a UUID")),
            },
            "status" if OrderStatus::parse(&value).is_some() => f.status = Some(value),
            "status" => errors.push(bad(
                "invalid",
                "must be one of ordered, collected, received, in_progress, resulted, final, corrected, canceled",
            )),
            "accessionNumber" if is_external_id(&value) => f.accession_number = Some(value),
            "externalOrderID" if is_external_id(&value) => f.external_order_id = Some(value),
            "accessionNumber" | "externalOrderID" => errors.push(bad("invalid", "must be 1-64 visible ASCII characters")),
            "clientID" if is_reference_id(&value) => f.client_id = Some(value),
            "locationID" if is_reference_id(&value) => f.location_id = Some(value),
            "clientID" | "locationID" => errors.push(bad("invalid", "must be 1-64 characters of A-Z a-z 0-9 . _ -")),
            "updatedSince" => match DateTime::parse_from_rfc3339(&value) {
                Ok(t) => f.updated_since = Some(t.with_timezone(&Utc)),
                Err(_) => errors.push(bad("invalid", "must be an RFC 3339 timestamp")),
            },
            "limit" => match value.parse::<i64>() {
                Ok(n) if (1..=500).contains(&n) => f.limit = n,
                _ => errors.push(bad("out_of_range", "must be an integer from 1 to 500")),
            },
            "cursor" => match decode_cursor(&value) {
                Some(c) => f.cursor = Some(c),
                None => errors.push(bad("invalid", "not a cursor this API issued")),
            },
            _ => errors.push(bad("unknown_field", "this filter is not recognised")),
        }
    }
    if errors.is_empty() {
        Ok(f)
    } else {
        Err(errors)
    }
}

async fn page(app: &QueryState, caller: &Caller, f: Filters) -> Result<Response, ApiError> {
    let clients = scope_list(&caller.scope.clients);
    let locations = scope_list(&caller.scope.locations);
    let (cursor_t, cursor_id) = match f.cursor {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    let db = app.read.get().await?;
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} {FROM} \
                 WHERE ($1::text[] IS NULL OR o.client_id = ANY($1)) \
                   AND ($2::text[] IS NULL OR o.location_id = ANY($2)) \
                   AND ($3::uuid IS NULL OR o.patient_id = $3) \
                   AND ($4::text IS NULL OR o.status = $4) \
                   AND ($5::text IS NULL OR o.accession_number = $5) \
                   AND ($6::text IS NULL OR o.external_order_id = $6) \
                   AND ($7::text IS NULL OR o.client_id = $7) \
                   AND ($8::text IS NULL OR o.location_id = $8) \
                   AND ($9::timestamptz IS NULL OR o.updated_at >= $9) \
                   AND ($10::timestamptz IS NULL OR (o.created_at, o.order_id) > ($10, $11::uuid)) \
                 ORDER BY o.created_at, o.order_id LIMIT $12"
            ),
            &[
                &clients,
                &locations,
                &f.patient_id,
                &f.status,
                &f.accession_number,
                &f.external_order_id,
                &f.client_id,
                &f.location_id,
                &f.updated_since,
                &cursor_t,
                &cursor_id,
                &(f.limit + 1),
            ],
        )
        .await?;
    let more = rows.len() as i64 > f.limit;
    let items = rows
        .iter()
        .take(f.limit as usize)
        .map(|r| view_of(caller, r))
        .collect::<Result<Vec<_>, _>>()?;
    let next = if more {
        rows.get(f.limit as usize - 1).map(|r| encode_cursor(&r.get(13), &r.get(0)))
    } else {
        None
    };
    Ok(json_response(StatusCode::OK, &json!({"items": items, "nextCursor": next}), None))
}

/// `GET /v1/orders`.
#[tracing::instrument(skip_all)]
pub async fn list(State(app): State<QueryState>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let result = async {
        let caller = prepare(&app, &headers, Permission::TestsRead).await?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|_| ApiError::malformed("The query string is malformed."))?;
        let filters = parse_filters(pairs).map_err(ApiError::unprocessable)?;
        page(&app, &caller, filters).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/orders/search`: the list's filters in a JSON body.
#[tracing::instrument(skip_all)]
pub async fn search(State(app): State<QueryState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        let caller = prepare(&app, &headers, Permission::TestsRead).await?;
        let body = body.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::malformed("The body could not be read.")
            }
        })?;
        fields::require_json(&headers, BodyKind::Json)?;
        let mut f = Fields::new(fields::parse_object(&body)?);
        let mut raw = Vec::new();
        for name in FILTERS.iter().filter(|n| **n != "limit") {
            if let Some(v) = f.string(name) {
                raw.push((name.to_string(), v));
            }
        }
        if let Some(n) = f.integer("limit") {
            raw.push(("limit".to_string(), n.to_string()));
        }
        let mut errors = f.finish();
        if errors.iter().any(|e| e.code == fields::WRONG_TYPE) {
            return Err(fields::check(errors).expect_err("wrong types fail"));
        }
        let filters = match parse_filters(raw) {
            Ok(filters) => filters,
            Err(more) => {
                errors.extend(more);
                return Err(ApiError::unprocessable(errors));
            }
        };
        fields::check(errors)?;
        page(&app, &caller, filters).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/catalog`: the lab's test catalog (any `tests:*` permission).
#[tracing::instrument(skip_all)]
pub async fn catalog(State(app): State<QueryState>, headers: HeaderMap) -> Response {
    let result = async {
        let caller = platform::auth::authenticate(&headers, &app.keys, &app.write).await?;
        let any_tests = [Permission::TestsCreate, Permission::TestsRead, Permission::TestsUpdate];
        if !any_tests.iter().any(|p| caller.has(*p)) {
            return Err(ApiError::Forbidden("This call needs a tests:* permission.".into()));
        }
        let db = app.read.get().await?;
        let tests: Vec<Value> = db
            .query("SELECT definition FROM catalog_tests ORDER BY code", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(json_response(StatusCode::OK, &json!({"items": tests}), None))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
