//! Patient reads.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use contract::caller::Caller;
use contract::consistency::{self, ConsistencyToken};
use contract::fields::{self, BodyKind, Fields};
use contract::problem::{ApiError, Problem};
use contract::views::{AccountView, PatientView};
use domain::access::{IdSet, Permission};
use domain::patient::{Address, Sex};
use domain::validation::{is_external_id, is_reference_id, FieldError};
use platform::db::Cached;
use platform::envelope::format_time;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::access_log::{Access, Endpoint};
use crate::conditions::Conditions;
use crate::{history, paging, QueryState};

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

/// An authenticated, permitted read, with what is left to check of its
/// request once its record is found.
pub(crate) struct Prepared {
    /// The caller.
    pub caller: Caller,
    /// The `Consistency-Token` header was not one this API issued.
    bad_token: bool,
}

impl Prepared {
    /// The request's own validation, which the contract puts after the
    /// record's scope (a bad token on a missing record is a 404).
    pub fn validated(&self) -> Result<(), ApiError> {
        if self.bad_token {
            return Err(ApiError::unprocessable(vec![FieldError::new(
                "Consistency-Token",
                "invalid",
                "not a token this API issued",
            )]));
        }
        Ok(())
    }
}

/// Authenticates (noting the caller in the access log entry), checks that
/// the caller holds one of `permissions`, and waits for a consistency
/// token; a malformed token is refused by [`Prepared::validated`].
pub(crate) async fn prepare(
    app: &QueryState,
    headers: &HeaderMap,
    permissions: &[Permission],
    access: &mut Access,
) -> Result<Prepared, ApiError> {
    let caller = app.gate.authenticate(headers).await?;
    access.caller(&caller);
    if !permissions.iter().any(|p| caller.has(*p)) {
        // The refusal is logged with the record's client and location, so
        // the auditors of that client see who tried.
        if let Some(id) = access.target() {
            let kind = access.endpoint().record_kind();
            if let Some((client, location)) = crate::access_log::placed(app, kind, id).await? {
                access.found(&client, &location);
            }
        }
        let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
        return Err(ApiError::Forbidden(format!(
            "This call needs the {} permission.",
            names.join(" or ")
        )));
    }
    let mut bad_token = false;
    if let Some(raw) = headers.get(consistency::HEADER) {
        match raw.to_str().ok().and_then(ConsistencyToken::decode) {
            Some(token) => {
                consistency::wait_for(&app.read(), &token, app.cfg.consistency_wait).await?
            }
            None => bad_token = true,
        }
    }
    Ok(Prepared { caller, bad_token })
}

pub(crate) fn json_response(
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
#[utoipa::path(
    get,
    path = "/v1/patients/{patientID}",
    operation_id = "getPatient",
    tag = "patients",
    summary = "Read a patient",
    description = "The patient, when it is in the caller's scope. Requires `patients:read`.",
    params(
        ("patientID" = uuid::Uuid, Path, description = "The patient's id."),
        ("asOf" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "An instant (RFC 3339), not in the future: \
            the patient as it stood then, from the history the read side keeps (`audit:read` instead of `patients:read`). \
            404 when the patient did not exist yet."),
    ),
    security(("bearer" = []), ("oauth2" = ["patients:read"]), ("oauth2" = ["audit:read"])),
    responses(
        (status = 200, description = "The patient.", body = PatientView,
            headers(("ETag" = String, description = "The version in quotes; send it as `If-Match` with a change."))),
        (status = 403, description = "The partner lacks `patients:read` (`audit:read` with `asOf`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or the patient is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/not-found", "title": "Not Found", "status": 404, "detail": "No such record."})),
        (status = 422, description = "The `Consistency-Token` is not one this API issued, or `asOf` is not an RFC 3339 instant or lies in the future.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn get_one(
    State(app): State<QueryState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(at) = history::as_of_param(query.as_deref()) {
        return history::as_of(app, Endpoint::PatientAsOf, id, at, headers).await;
    }
    let mut access = app.access_log.begin(Endpoint::GetPatient).naming(&id);
    let result = async {
        let prepared = prepare(&app, &headers, &[Permission::PatientsRead], &mut access).await?;
        let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
        let db = app.read().get().await?;
        let row = db
            .query_opt_cached(
                &format!("SELECT {COLUMNS} FROM patients p LEFT JOIN accounts a ON a.patient_id = p.patient_id WHERE p.patient_id = $1"),
                &[&id],
            )
            .await?
            .ok_or(ApiError::NotFound)?;
        let view = view_of(&row)?;
        access.found(&view.client_id, &view.location_id);
        if !prepared.caller.sees(&view.client_id, &view.location_id) {
            return Err(ApiError::NotFound);
        }
        prepared.validated()?;
        Ok(json_response(StatusCode::OK, &view, Some(view.etag())))
    }
    .await;
    app.access_log.answer(access, result).await
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

// Describes the query in the OpenAPI document; `parse_filters` checks the
// parameters one by one and names every bad one.
/// The query parameters of `GET /v1/patients`.
#[derive(Debug, Default, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PatientListQuery {
    /// Only the patient with this external id.
    #[serde(rename = "externalPatientID")]
    #[param(pattern = "^[!-~]{1,64}$")]
    pub external_patient_id: Option<String>,
    /// Only patients of this client.
    #[serde(rename = "clientID")]
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub client_id: Option<String>,
    /// Only patients at this location.
    #[serde(rename = "locationID")]
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: Option<String>,
    /// Only patients with exactly this family name.
    #[param(pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]{1,100}$")]
    pub last_name: Option<String>,
    /// Only patients born on this date.
    pub date_of_birth: Option<NaiveDate>,
    /// Only patients changed at or after this time (RFC 3339).
    pub updated_since: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

// Describes the body in the OpenAPI document (read by `search`).
/// The body of `POST /v1/patients/search`: the list's filters, so that
/// personal data need not travel in URLs.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"lastName": "Lovelace", "dateOfBirth": "1990-12-10", "limit": 50}))]
pub struct PatientSearch {
    /// Only the patient with this external id.
    #[serde(rename = "externalPatientID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[!-~]{1,64}$")]
    pub external_patient_id: Option<String>,
    /// Only patients of this client.
    #[serde(rename = "clientID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub client_id: Option<String>,
    /// Only patients at this location.
    #[serde(rename = "locationID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: Option<String>,
    /// Only patients with exactly this family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]{1,100}$")]
    pub last_name: Option<String>,
    /// Only patients born on this date.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = NaiveDate)]
    pub date_of_birth: Option<NaiveDate>,
    /// Only patients changed at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = DateTime<Utc>)]
    pub updated_since: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = i64, minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String)]
    pub cursor: Option<String>,
}

/// A page of patients, ordered by creation time then `patientID`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatientPage {
    /// The patients of this page (only those in the caller's scope).
    pub items: Vec<PatientView>,
    /// Pass it as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Checks every filter value, naming each bad one.
fn parse_filters(raw: Vec<(String, Option<String>)>) -> Result<Filters, ApiError> {
    let mut f = Filters {
        limit: paging::DEFAULT_LIMIT,
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
            "lastName"
                if (1..=100).contains(&value.chars().count())
                    && !value.chars().any(char::is_control) =>
            {
                f.last_name = Some(value)
            }
            "lastName" => errors.push(bad(
                "invalid",
                "must be 1-100 characters, none of them a control character",
            )),
            "dateOfBirth" => match NaiveDate::parse_from_str(&value, "%Y-%m-%d") {
                Ok(d) if value.len() == 10 => f.date_of_birth = Some(d),
                _ => errors.push(bad("invalid", "must be a date YYYY-MM-DD")),
            },
            "updatedSince" => match DateTime::parse_from_rfc3339(&value) {
                Ok(t) => f.updated_since = Some(t.with_timezone(&Utc)),
                Err(_) => errors.push(bad("invalid", "must be an RFC 3339 timestamp")),
            },
            _ if paging::param(&name, &value, &mut f.limit, &mut f.cursor, &mut errors) => {}
            _ => errors.push(bad("unknown_field", "this filter is not recognised")),
        }
    }
    if errors.is_empty() {
        Ok(f)
    } else {
        Err(ApiError::unprocessable(errors))
    }
}

pub(crate) fn scope_list(set: &IdSet) -> Option<Vec<String>> {
    match set {
        IdSet::All(_) => None,
        IdSet::Only(ids) => Some(ids.iter().cloned().collect()),
    }
}

async fn page(
    app: &QueryState,
    caller: &Caller,
    access: &mut Access,
    f: Filters,
) -> Result<Response, ApiError> {
    let clients = scope_list(&caller.scope().clients);
    let locations = scope_list(&caller.scope().locations);
    let rows_wanted = f.limit + 1;
    let mut w = Conditions::default();
    w.when(&clients, |p| format!("p.client_id = ANY({p})"))
        .when(&locations, |p| format!("p.location_id = ANY({p})"))
        .when(&f.external_patient_id, |p| {
            format!("p.external_patient_id = {p}")
        })
        .when(&f.client_id, |p| format!("p.client_id = {p}"))
        .when(&f.location_id, |p| format!("p.location_id = {p}"))
        .when(&f.last_name, |p| format!("p.last_name = {p}"))
        .when(&f.date_of_birth, |p| format!("p.date_of_birth = {p}"))
        .when(&f.updated_since, |p| format!("p.updated_at >= {p}"));
    if let Some((t, id)) = &f.cursor {
        let (t, id) = (w.bind(t), w.bind(id));
        w.and(format!("(p.created_at, p.patient_id) > ({t}, {id})"));
    }
    let limit = w.bind(&rows_wanted);
    let sql = format!(
        "SELECT {COLUMNS} FROM patients p LEFT JOIN accounts a ON a.patient_id = p.patient_id \
         {} ORDER BY p.created_at, p.patient_id LIMIT {limit}",
        w.clause()
    );
    let db = app.read().get().await?;
    let rows = db.query_cached(&sql, w.params()).await?;
    let more = rows.len() as i64 > f.limit;
    let items = rows
        .iter()
        .take(f.limit as usize)
        .map(view_of)
        .collect::<Result<Vec<_>, _>>()?;
    for v in &items {
        access.listed(v.patient_id, &v.client_id, &v.location_id);
    }
    let next = if more {
        rows.get(f.limit as usize - 1)
            .map(|r| paging::encode(&(r.get::<_, DateTime<Utc>>(12), r.get::<_, Uuid>(0))))
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &PatientPage {
            items,
            next_cursor: next,
        },
        None,
    ))
}

/// `GET /v1/patients`.
#[utoipa::path(
    get,
    path = "/v1/patients",
    operation_id = "listPatients",
    tag = "patients",
    summary = "List patients",
    description = "The patients in the caller's scope that match every filter given, a page at a \
        time, ordered by creation time then `patientID` (paging never repeats or skips a \
        record). Prefer `POST /v1/patients/search` for filters that are personal data. \
        Requires `patients:read`.",
    params(
        PatientListQuery,
    ),
    security(("bearer" = []), ("oauth2" = ["patients:read"])),
    responses(
        (status = 200, description = "A page of patients.", body = PatientPage),
        (status = 400, description = "The query string is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `patients:read`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter, every one listed in `errors`: an unknown or repeated parameter, a malformed value, a `limit` outside 1-500, a cursor this API did not issue, or a bad `Consistency-Token`.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(app): State<QueryState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut access = app.access_log.begin(Endpoint::ListPatients);
    let result = async {
        let prepared = prepare(&app, &headers, &[Permission::PatientsRead], &mut access).await?;
        prepared.validated()?;
        let caller = prepared.caller;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
                .map_err(|_| ApiError::malformed("The query string is malformed."))?;
        let filters = parse_filters(pairs.into_iter().map(|(k, v)| (k, Some(v))).collect())?;
        page(&app, &caller, &mut access, filters).await
    }
    .await;
    app.access_log.answer(access, result).await
}

/// `POST /v1/patients/search`: the list's filters in a JSON body, so that
/// personal data need not travel in URLs.
#[utoipa::path(
    post,
    path = "/v1/patients/search",
    operation_id = "searchPatients",
    tag = "patients",
    summary = "Search patients",
    description = "The same as `GET /v1/patients`, with the filters in a JSON body so that \
        personal data need not travel in URLs. Changes nothing. Requires `patients:read`.",
    request_body(content = PatientSearch, content_type = "application/json"),
    security(("bearer" = []), ("oauth2" = ["patients:read"])),
    responses(
        (status = 200, description = "A page of patients.", body = PatientPage),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `patients:read`.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter, every one listed in `errors` (unknown fields included), or a bad `Consistency-Token`.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn search(
    State(app): State<QueryState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut access = app.access_log.begin(Endpoint::SearchPatients);
    let result = async {
        let prepared = prepare(&app, &headers, &[Permission::PatientsRead], &mut access).await?;
        prepared.validated()?;
        let caller = prepared.caller;
        let (raw, mut errors) = search_body(
            &headers,
            body,
            &[
                "externalPatientID",
                "clientID",
                "locationID",
                "lastName",
                "dateOfBirth",
                "updatedSince",
                "cursor",
            ],
        )?;
        let filters = match parse_filters(raw.into_iter().map(|(k, v)| (k, Some(v))).collect()) {
            Ok(filters) => filters,
            Err(ApiError::Invalid { errors: more, .. }) => {
                errors.extend(more);
                return Err(ApiError::unprocessable(errors));
            }
            Err(e) => return Err(e),
        };
        fields::check(errors)?;
        page(&app, &caller, &mut access, filters).await
    }
    .await;
    app.access_log.answer(access, result).await
}

/// A search body's filters as `(name, value)` pairs, and its own field errors.
pub(crate) type SearchBody = (Vec<(String, String)>, Vec<FieldError>);

/// Reads a search body: the string filters `names` and an integer `limit`,
/// as `(name, value)` pairs, with the body's own field errors (unknown
/// fields) for the caller to merge with its filter errors. A body that is
/// not a JSON object, or a value of the wrong JSON type, answers at once.
pub(crate) fn search_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    names: &[&str],
) -> Result<SearchBody, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::malformed("The body could not be read.")
        }
    })?;
    fields::require_json(headers, BodyKind::Json)?;
    let mut f = Fields::new(fields::parse_object(&body)?);
    let mut raw = Vec::new();
    for name in names {
        if let Some(v) = f.string(name) {
            raw.push((name.to_string(), v));
        }
    }
    if let Some(n) = f.integer("limit") {
        raw.push(("limit".to_string(), n.to_string()));
    }
    let errors = f.finish();
    fields::reject_wrong_types(&errors)?;
    Ok((raw, errors))
}
