//! Order reads and the test catalog.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use contract::caller::Caller;
use contract::fields;
use contract::order_view::{OrderStatusSchema, OrderView, OrderedTest, PatientSummary};
use contract::problem::{ApiError, Problem};
use contract::views::SexSchema;
use domain::access::Permission;
use domain::order::{OrderStatus, Priority};
use domain::patient::Sex;
use domain::validation::{is_external_id, is_reference_id, FieldError};
use platform::db::Cached;
use platform::envelope::format_time;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::access_log::{Access, Endpoint};
use crate::conditions::Conditions;
use crate::patients::{json_response, prepare, scope_list, search_body};
use crate::QueryState;
use crate::{history, paging};

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
#[utoipa::path(
    get,
    path = "/v1/orders/{orderID}",
    operation_id = "getOrder",
    tag = "orders",
    summary = "Read an order",
    description = "The order, when it is in the caller's scope, with its status and results. \
        Its `patient` member (name, date of birth, sex) is filled only for a caller holding \
        `patients:read` with the patient in scope, and null otherwise. Requires `tests:read`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
        ("asOf" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "An instant (RFC 3339), not in the future: \
            the order as it stood then, from the history the read side keeps (`audit:read` instead of `tests:read`). \
            404 when the order did not exist yet."),
    ),
    security(("bearer" = []), ("oauth2" = ["tests:read"]), ("oauth2" = ["audit:read"])),
    responses(
        (status = 200, description = "The order.", body = OrderView,
            headers(("ETag" = String, description = "The version in quotes; send it as `If-Match` with a change or an action."))),
        (status = 403, description = "The partner lacks `tests:read` (`audit:read` with `asOf`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json",
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
        return history::as_of(app, Endpoint::OrderAsOf, id, at, headers).await;
    }
    let mut access = app.access_log.begin(Endpoint::GetOrder).naming(&id);
    let result = async {
        let prepared = prepare(&app, &headers, &[Permission::TestsRead], &mut access).await?;
        let caller = &prepared.caller;
        let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
        let db = app.read().get().await?;
        let row = db
            .query_opt_cached(
                &format!("SELECT {COLUMNS} {FROM} WHERE o.order_id = $1"),
                &[&id],
            )
            .await?
            .ok_or(ApiError::NotFound)?;
        let view = view_of(caller, &row)?;
        access.found(&view.client_id, &view.location_id);
        if !caller.sees(&view.client_id, &view.location_id) {
            return Err(ApiError::NotFound);
        }
        prepared.validated()?;
        Ok(json_response(StatusCode::OK, &view, Some(view.etag())))
    }
    .await;
    app.access_log.answer(access, result).await
}

// Describes the query in the OpenAPI document; `parse_filters` checks the
// parameters one by one and names every bad one.
/// The query parameters of `GET /v1/orders`.
#[derive(Debug, Default, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct OrderListQuery {
    /// Only orders of this patient.
    #[serde(rename = "patientID")]
    pub patient_id: Option<Uuid>,
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatusSchema>)]
    pub status: Option<OrderStatusSchema>,
    /// Only the order with this accession number.
    #[param(pattern = "^[!-~]{1,64}$")]
    pub accession_number: Option<String>,
    /// Only orders with this external order id.
    #[serde(rename = "externalOrderID")]
    #[param(pattern = "^[!-~]{1,64}$")]
    pub external_order_id: Option<String>,
    /// Only orders of this client.
    #[serde(rename = "clientID")]
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub client_id: Option<String>,
    /// Only orders at this location.
    #[serde(rename = "locationID")]
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: Option<String>,
    /// Only orders changed at or after this time (RFC 3339).
    pub updated_since: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

// Describes the body in the OpenAPI document (read by `search`).
/// The body of `POST /v1/orders/search`: the list's filters.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"status": "final", "updatedSince": "2026-11-26T00:00:00Z", "limit": 50}))]
pub struct OrderSearch {
    /// Only orders of this patient.
    #[serde(rename = "patientID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = Uuid)]
    pub patient_id: Option<Uuid>,
    /// Only orders in this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = OrderStatusSchema)]
    pub status: Option<OrderStatusSchema>,
    /// Only the order with this accession number.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[!-~]{1,64}$")]
    pub accession_number: Option<String>,
    /// Only orders with this external order id.
    #[serde(rename = "externalOrderID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[!-~]{1,64}$")]
    pub external_order_id: Option<String>,
    /// Only orders of this client.
    #[serde(rename = "clientID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub client_id: Option<String>,
    /// Only orders at this location.
    #[serde(rename = "locationID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: Option<String>,
    /// Only orders changed at or after this time (RFC 3339).
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

/// A page of orders, ordered by placement time then `orderID`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    /// The orders of this page (only those in the caller's scope).
    pub items: Vec<OrderView>,
    /// Pass it as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

// The catalog types below describe the domain's `catalog` types in the
// OpenAPI document (the domain crate knows nothing of OpenAPI).

/// The lab's test catalog.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogPage {
    /// Every test, by code.
    pub items: Vec<CatalogTestSchema>,
}

/// A test of the catalog, or a panel when it has several analytes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CatalogTest, example = json!({
    "code": "TSH", "name": "Thyroid-stimulating hormone", "specimenType": "serum",
    "analytes": [{"code": "TSH", "name": "Thyroid-stimulating hormone",
        "kind": {"type": "numeric", "unit": "mIU/L", "ranges": [{"minAgeDays": 6570, "low": 0.4, "high": 4.0}]}}]
}))]
pub struct CatalogTestSchema {
    /// The code orders name the test by (`CBC`): 1-32 characters of
    /// `A-Z 0-9 _ -`.
    #[schema(example = "CBC")]
    pub code: String,
    /// Display name.
    pub name: String,
    /// The specimen the test is run on (`whole blood`, `serum`); an order's
    /// default specimen type.
    pub specimen_type: String,
    /// What the test measures, in report order.
    pub analytes: Vec<AnalyteSchema>,
}

/// One measured quantity (or observation) of a test.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Analyte)]
pub struct AnalyteSchema {
    /// The code results are reported under (`HGB`).
    #[schema(example = "HGB")]
    pub code: String,
    /// Display name.
    pub name: String,
    /// Numeric (a unit, ranges and critical limits) or text (normal values).
    pub kind: AnalyteKindSchema,
}

/// What kind of value an analyte takes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
#[schema(as = AnalyteKind)]
pub enum AnalyteKindSchema {
    /// A decimal number in a fixed unit, judged against reference ranges and
    /// critical limits.
    Numeric {
        /// The unit results must be reported in, compared exactly (`g/dL`).
        unit: String,
        /// Reference ranges by sex and age band; at most one applies to any
        /// patient. A patient no range applies to gets no range and no flag.
        ranges: Vec<ReferenceRangeSchema>,
        /// Below this a value is critically low (`LL`).
        #[serde(rename = "criticalLow", skip_serializing_if = "Option::is_none")]
        #[schema(value_type = f64)]
        critical_low: Option<f64>,
        /// Above this a value is critically high (`HH`).
        #[serde(rename = "criticalHigh", skip_serializing_if = "Option::is_none")]
        #[schema(value_type = f64)]
        critical_high: Option<f64>,
    },
    /// A qualitative result (`Not detected`).
    Text {
        /// The normal values, compared ignoring case and surrounding spaces;
        /// any other value is abnormal (`A`). Empty: never flagged.
        normal: Vec<String>,
    },
}

/// A reference range for a population of patients: a sex (or any) and an
/// age band in days, on the specimen's collection date.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ReferenceRange)]
pub struct ReferenceRangeSchema {
    /// The sex it applies to; absent for any sex (a patient of sex `other`
    /// or `unknown` matches only ranges for any sex).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = SexSchema)]
    pub sex: Option<SexSchema>,
    /// Youngest age it applies to, in days (inclusive); absent from birth.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    pub min_age_days: Option<u32>,
    /// Age from which it no longer applies, in days (exclusive); absent for
    /// no upper bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    pub max_age_days: Option<u32>,
    /// Lowest normal value (inclusive); absent for no lower limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = f64)]
    pub low: Option<f64>,
    /// Highest normal value (inclusive); absent for no upper limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = f64)]
    pub high: Option<f64>,
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
            _ if paging::param(&name, &value, &mut f.limit, &mut f.cursor, &mut errors) => {}
            _ => errors.push(bad("unknown_field", "this filter is not recognised")),
        }
    }
    if errors.is_empty() {
        Ok(f)
    } else {
        Err(errors)
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
    w.when(&clients, |p| format!("o.client_id = ANY({p})"))
        .when(&locations, |p| format!("o.location_id = ANY({p})"))
        .when(&f.patient_id, |p| format!("o.patient_id = {p}"))
        .when(&f.status, |p| format!("o.status = {p}"))
        .when(&f.accession_number, |p| format!("o.accession_number = {p}"))
        .when(&f.external_order_id, |p| {
            format!("o.external_order_id = {p}")
        })
        .when(&f.client_id, |p| format!("o.client_id = {p}"))
        .when(&f.location_id, |p| format!("o.location_id = {p}"))
        .when(&f.updated_since, |p| format!("o.updated_at >= {p}"));
    if let Some((t, id)) = &f.cursor {
        let (t, id) = (w.bind(t), w.bind(id));
        w.and(format!("(o.created_at, o.order_id) > ({t}, {id})"));
    }
    let limit = w.bind(&rows_wanted);
    let sql = format!(
        "SELECT {COLUMNS} {FROM} {} ORDER BY o.created_at, o.order_id LIMIT {limit}",
        w.clause()
    );
    let db = app.read().get().await?;
    let rows = db.query_cached(&sql, w.params()).await?;
    let more = rows.len() as i64 > f.limit;
    let items = rows
        .iter()
        .take(f.limit as usize)
        .map(|r| view_of(caller, r))
        .collect::<Result<Vec<_>, _>>()?;
    for v in &items {
        access.listed(v.order_id, &v.client_id, &v.location_id);
    }
    let next = if more {
        rows.get(f.limit as usize - 1)
            .map(|r| paging::encode(&(r.get::<_, DateTime<Utc>>(13), r.get::<_, Uuid>(0))))
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "nextCursor": next}),
        None,
    ))
}

/// `GET /v1/orders`.
#[utoipa::path(
    get,
    path = "/v1/orders",
    operation_id = "listOrders",
    tag = "orders",
    summary = "List orders",
    description = "The orders in the caller's scope that match every filter given, a page at a \
        time, ordered by placement time then `orderID` (paging never repeats or skips a \
        record). Requires `tests:read`.",
    params(
        OrderListQuery,
    ),
    security(("bearer" = []), ("oauth2" = ["tests:read"])),
    responses(
        (status = 200, description = "A page of orders.", body = OrderPage),
        (status = 400, description = "The query string is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:read`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter, every one listed in `errors`: an unknown or repeated parameter, a malformed value, a `limit` outside 1-500, a cursor this API did not issue, or a bad `Consistency-Token`.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(app): State<QueryState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut access = app.access_log.begin(Endpoint::ListOrders);
    let result = async {
        let prepared = prepare(&app, &headers, &[Permission::TestsRead], &mut access).await?;
        prepared.validated()?;
        let caller = prepared.caller;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
                .map_err(|_| ApiError::malformed("The query string is malformed."))?;
        let filters = parse_filters(pairs).map_err(ApiError::unprocessable)?;
        page(&app, &caller, &mut access, filters).await
    }
    .await;
    app.access_log.answer(access, result).await
}

/// `POST /v1/orders/search`: the list's filters in a JSON body.
#[utoipa::path(
    post,
    path = "/v1/orders/search",
    operation_id = "searchOrders",
    tag = "orders",
    summary = "Search orders",
    description = "The same as `GET /v1/orders`, with the filters in a JSON body. Changes \
        nothing. Requires `tests:read`.",
    request_body(content = OrderSearch, content_type = "application/json"),
    security(("bearer" = []), ("oauth2" = ["tests:read"])),
    responses(
        (status = 200, description = "A page of orders.", body = OrderPage),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:read`.", body = Problem, content_type = "application/problem+json"),
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
    let mut access = app.access_log.begin(Endpoint::SearchOrders);
    let result = async {
        let prepared = prepare(&app, &headers, &[Permission::TestsRead], &mut access).await?;
        prepared.validated()?;
        let caller = prepared.caller;
        let names: Vec<&str> = FILTERS.iter().copied().filter(|n| *n != "limit").collect();
        let (raw, mut errors) = search_body(&headers, body, &names)?;
        let filters = match parse_filters(raw) {
            Ok(filters) => filters,
            Err(more) => {
                errors.extend(more);
                return Err(ApiError::unprocessable(errors));
            }
        };
        fields::check(errors)?;
        page(&app, &caller, &mut access, filters).await
    }
    .await;
    app.access_log.answer(access, result).await
}

/// `GET /v1/catalog`: the lab's test catalog (any `tests:*` permission).
#[utoipa::path(
    get,
    path = "/v1/catalog",
    operation_id = "getCatalog",
    tag = "catalog",
    summary = "Read the test catalog",
    description = "Every test the lab offers, by code: its name, specimen type and analytes, \
        each numeric (with its unit, reference ranges by sex and age, and critical limits) \
        or text (with its normal values). Orders name tests by these codes, and results \
        name analytes by theirs, in the catalog's units. Requires any of `tests:create`, \
        `tests:read` or `tests:update`.",
    security(("bearer" = []), ("oauth2" = ["tests:create"]), ("oauth2" = ["tests:read"]), ("oauth2" = ["tests:update"])),
    responses(
        (status = 200, description = "The whole catalog, by code.", body = CatalogPage),
        (status = 403, description = "The partner holds none of `tests:create`, `tests:read`, `tests:update`.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn catalog(State(app): State<QueryState>, headers: HeaderMap) -> Response {
    let result = async {
        let caller = app.gate.authenticate(&headers).await?;
        let any_tests = [
            Permission::TestsCreate,
            Permission::TestsRead,
            Permission::TestsUpdate,
        ];
        if !any_tests.iter().any(|p| caller.has(*p)) {
            return Err(ApiError::Forbidden(
                "This call needs a tests:* permission.".into(),
            ));
        }
        let db = app.read().get().await?;
        let tests: Vec<Value> = db
            .query_cached("SELECT definition FROM catalog_tests ORDER BY code", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({"items": tests}),
            None,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member of the seed catalog's JSON is described by the catalog
    /// schemas.
    #[test]
    fn catalog_schema_describes_the_catalog() {
        use utoipa::PartialSchema;
        let schema = |s: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_value(s).unwrap()
        };
        let props = |v: &Value| -> Vec<String> {
            let mut out: Vec<String> = v["properties"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for one in v["oneOf"].as_array().into_iter().flatten() {
                out.extend(
                    one["properties"]
                        .as_object()
                        .into_iter()
                        .flat_map(|m| m.keys().cloned()),
                );
            }
            out
        };
        let test_props = props(&schema(CatalogTestSchema::schema()));
        let analyte_props = props(&schema(AnalyteSchema::schema()));
        let kind_props = props(&schema(AnalyteKindSchema::schema()));
        let range_props = props(&schema(ReferenceRangeSchema::schema()));
        let json = serde_json::to_value(domain::catalog::seed_catalog()).unwrap();
        for t in json.as_array().unwrap() {
            for k in t.as_object().unwrap().keys() {
                assert!(test_props.contains(k), "test.{k}");
            }
            for a in t["analytes"].as_array().unwrap() {
                for k in a.as_object().unwrap().keys() {
                    assert!(analyte_props.contains(k), "analyte.{k}");
                }
                for k in a["kind"].as_object().unwrap().keys() {
                    assert!(kind_props.contains(k), "kind.{k}");
                }
                for r in a["kind"]["ranges"].as_array().into_iter().flatten() {
                    for k in r.as_object().unwrap().keys() {
                        assert!(range_props.contains(k), "range.{k}");
                    }
                }
            }
        }
    }
}
