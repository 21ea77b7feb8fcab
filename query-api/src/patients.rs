//! Patient reads.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use domain::access::{IdSet, Permission};
use domain::patient::{Address, Sex};
use domain::validation::{is_external_id, is_reference_id, FieldError};
use platform::auth::{authenticate, Caller};
use platform::consistency::{self, ConsistencyToken};
use platform::envelope::format_time;
use platform::fields::{self, BodyKind, Fields};
use platform::problem::ApiError;
use platform::views::{AccountView, PatientView};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::QueryState;

const COLUMNS: &str =
    "p.patient_id, p.external_patient_id, p.client_id, p.location_id, p.first_name, \
     p.last_name, p.date_of_birth, p.sex, p.email, p.phone, p.address, p.version, p.created_at, \
     p.updated_at, a.status";

fn view_of(r: &tokio_postgres::Row) -> Result<PatientView, ApiError> {
    let address: Option<Value> = r.get(10);
    let sex: &str = r.get(7);
    Ok(PatientView {
        patient_id: r.get(0),
        external_patient_id: r.get(1),
        client_id: r.get(2),
        location_id: r.get(3),
        first_name: r.get(4),
        last_name: r.get(5),
        date_of_birth: r.get(6),
        sex: Sex::parse(sex).ok_or_else(|| ApiError::internal("bad sex in read model"))?,
        email: r.get(8),
        phone: r.get(9),
        address: address
            .map(serde_json::from_value::<Address>)
            .transpose()
            .map_err(ApiError::internal)?,
        version: r.get(11),
        created_at: format_time(&r.get::<_, DateTime<Utc>>(12)),
        updated_at: format_time(&r.get::<_, DateTime<Utc>>(13)),
        account: AccountView {
            status: r
                .get::<_, Option<String>>(14)
                .unwrap_or_else(|| "none".into()),
        },
    })
}

/// Authenticates, checks the permission, and waits for a consistency token.
async fn prepare(
    app: &QueryState,
    headers: &HeaderMap,
    permission: Permission,
) -> Result<Caller, ApiError> {
    let caller = authenticate(headers, &app.keys, &app.write).await?;
    caller.require(permission)?;
    if let Some(raw) = headers.get(consistency::HEADER) {
        let token = raw
            .to_str()
            .ok()
            .and_then(ConsistencyToken::decode)
            .ok_or_else(|| {
                ApiError::unprocessable(vec![FieldError::new(
                    "Consistency-Token",
                    "invalid",
                    "not a token this API issued",
                )])
            })?;
        consistency::wait_for(&app.read, &token, app.cfg.consistency_wait).await?;
    }
    Ok(caller)
}

fn json_response(
    status: StatusCode,
    body: &impl serde::Serialize,
    etag: Option<String>,
) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("serializes"),
    )
        .into_response();
    if let Some(tag) = etag.and_then(|t| HeaderValue::try_from(t).ok()) {
        r.headers_mut().insert(header::ETAG, tag);
    }
    r
}

/// `GET /v1/patients/{patientID}`.
#[tracing::instrument(skip_all)]
pub async fn get_one(
    State(app): State<QueryState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let caller = prepare(&app, &headers, Permission::PatientsRead).await?;
        let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
        let db = app.read.get().await?;
        let row = db
            .query_opt(
                &format!("SELECT {COLUMNS} FROM patients p LEFT JOIN accounts a ON a.patient_id = p.patient_id WHERE p.patient_id = $1"),
                &[&id],
            )
            .await?
            .ok_or(ApiError::NotFound)?;
        let view = view_of(&row)?;
        if !caller.sees(&view.client_id, &view.location_id) {
            return Err(ApiError::NotFound);
        }
        Ok(json_response(StatusCode::OK, &view, Some(view.etag())))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The filters of a patient list or search.
#[derive(Debug, Default)]
struct Filters {
    external_patient_id: Option<String>,
    client_id: Option<String>,
    location_id: Option<String>,
    last_name: Option<String>,
    date_of_birth: Option<NaiveDate>,
    updated_since: Option<DateTime<Utc>>,
    limit: i64,
    cursor: Option<(DateTime<Utc>, Uuid)>,
}

fn decode_cursor(s: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let (micros, id) = raw.split_once('/')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

fn encode_cursor(t: &DateTime<Utc>, id: &Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}/{id}", t.timestamp_micros()))
}

/// Checks every filter value, naming each bad one.
fn parse_filters(raw: Vec<(String, Option<String>)>) -> Result<Filters, ApiError> {
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
        let Some(value) = value else { continue };
        let bad = |code: &'static str, msg: &str| FieldError::new(name.clone(), code, msg);
        match name.as_str() {
            "externalPatientID" if is_external_id(&value) => f.external_patient_id = Some(value),
            "externalPatientID" => {
                errors.push(bad("invalid", "must be 1-64 visible ASCII characters"))
            }
            "clientID" if is_reference_id(&value) => f.client_id = Some(value),
            "locationID" if is_reference_id(&value) => f.location_id = Some(value),
            "clientID" | "locationID" => errors.push(bad(
                "invalid",
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            )),
            "lastName" if (1..=100).contains(&value.chars().count()) => f.last_name = Some(value),
            "lastName" => errors.push(bad("invalid", "must be 1-100 characters")),
            "dateOfBirth" => match NaiveDate::parse_from_str(&value, "%Y-%m-%d") {
                Ok(d) if value.len() == 10 => f.date_of_birth = Some(d),
                _ => errors.push(bad("invalid", "must be a date YYYY-MM-DD")),
            },
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
        Err(ApiError::unprocessable(errors))
    }
}

fn scope_list(set: &IdSet) -> Option<Vec<String>> {
    match set {
        IdSet::All(_) => None,
        IdSet::Only(ids) => Some(ids.iter().cloned().collect()),
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
                "SELECT {COLUMNS} FROM patients p LEFT JOIN accounts a ON a.patient_id = p.patient_id \
                 WHERE ($1::text[] IS NULL OR p.client_id = ANY($1)) \
                   AND ($2::text[] IS NULL OR p.location_id = ANY($2)) \
                   AND ($3::text IS NULL OR p.external_patient_id = $3) \
                   AND ($4::text IS NULL OR p.client_id = $4) \
                   AND ($5::text IS NULL OR p.location_id = $5) \
                   AND ($6::text IS NULL OR p.last_name = $6) \
                   AND ($7::date IS NULL OR p.date_of_birth = $7) \
                   AND ($8::timestamptz IS NULL OR p.updated_at >= $8) \
                   AND ($9::timestamptz IS NULL OR (p.created_at, p.patient_id) > ($9, $10::uuid)) \
                 ORDER BY p.created_at, p.patient_id LIMIT $11"
            ),
            &[
                &clients,
                &locations,
                &f.external_patient_id,
                &f.client_id,
                &f.location_id,
                &f.last_name,
                &f.date_of_birth,
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
        .map(view_of)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if more {
        rows.get(f.limit as usize - 1)
            .map(|r| encode_cursor(&r.get(12), &r.get(0)))
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "nextCursor": next}),
        None,
    ))
}

/// `GET /v1/patients`.
#[tracing::instrument(skip_all)]
pub async fn list(
    State(app): State<QueryState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let caller = prepare(&app, &headers, Permission::PatientsRead).await?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
                .map_err(|_| ApiError::malformed("The query string is malformed."))?;
        let filters = parse_filters(pairs.into_iter().map(|(k, v)| (k, Some(v))).collect())?;
        page(&app, &caller, filters).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/patients/search`: the list's filters in a JSON body, so that
/// personal data need not travel in URLs.
#[tracing::instrument(skip_all)]
pub async fn search(
    State(app): State<QueryState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let caller = prepare(&app, &headers, Permission::PatientsRead).await?;
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
        for name in [
            "externalPatientID",
            "clientID",
            "locationID",
            "lastName",
            "dateOfBirth",
            "updatedSince",
            "cursor",
        ] {
            if let Some(v) = f.string(name) {
                raw.push((name.to_string(), Some(v)));
            }
        }
        if let Some(n) = f.integer("limit") {
            raw.push(("limit".to_string(), Some(n.to_string())));
        }
        let mut errors = f.finish();
        if errors.iter().any(|e| e.code == fields::WRONG_TYPE) {
            fields::check(errors)?;
            unreachable!("check fails on wrong types");
        }
        let filters = match parse_filters(raw) {
            Ok(filters) => filters,
            Err(ApiError::Invalid { errors: more, .. }) => {
                errors.extend(more);
                return Err(ApiError::unprocessable(errors));
            }
            Err(e) => return Err(e),
        };
        fields::check(errors)?;
        page(&app, &caller, filters).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
