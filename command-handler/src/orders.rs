//! Order commands: `POST /v1/orders`, `PATCH /v1/orders/{id}` and the
//! lifecycle actions `POST /v1/orders/{id}/{action}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use contract::caller::{authenticate, Caller};
use contract::consistency::ConsistencyToken;
use contract::fields::{self, BodyKind, Fields};
use contract::order_view::{
    OrderView, OrderedTest, PatientSummary, PrioritySchema, ResultValueSchema,
};
use contract::problem::{ApiError, Problem};
use deadpool_postgres::{GenericClient, Transaction};
use domain::access::{Actor, Permission};
use domain::catalog::CatalogTest;
use domain::order::{
    self, Order, OrderAction, OrderDraft, OrderEvent, OrderPatch, OrderRejection, PatientFacts,
    PlaceContext, ResultContext, ResultEntry, SpecimenPatch,
};
use domain::patient::{self, Patient, PatientEvent};
use domain::validation::FieldError;
use platform::db::Cached;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::command::{begin_create, body_bytes, execute, if_match, retry_on, Attempt, TxError};
use crate::idempotency::{Answer, Idempotency};
use crate::store::{self, CommandMeta, Pending};
use crate::AppState;

/// Fields a partner may never set on an order.
const READ_ONLY: &[&str] = &[
    "orderID",
    "version",
    "status",
    "results",
    "patient",
    "cancelReason",
    "createdAt",
    "updatedAt",
];

// The request bodies below describe the bodies in the OpenAPI document; the
// handlers read the bodies field by field (`draft_from`, `patch_from`,
// `change_of`), so that every bad field is named at once.

/// The body of `POST /v1/orders`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "patientID": "5f0c3a4e-8f5b-4d0e-9a57-2b1f0f3c6d21", "clientID": "C1", "locationID": "L1",
    "accessionNumber": "A-2026-000123", "externalOrderID": "EHR-77",
    "tests": [{"code": "CBC"}, {"code": "A1C"}],
    "specimen": {"type": "whole blood", "collectedAt": "2026-11-26T08:30:00Z"},
    "priority": "routine"
}))]
pub struct NewOrder {
    /// The patient: it must exist and be in the caller's scope (422
    /// `unknown_patient` otherwise, the same answer whether it exists or not).
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// The patient's client (422 `client_mismatch` otherwise), within the
    /// caller's scope.
    #[serde(rename = "clientID")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub client_id: String,
    /// A location of that client, within the caller's scope.
    #[serde(rename = "locationID")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: String,
    /// The lab's accession number: 1-64 visible ASCII characters, unique in
    /// the lab (409 `duplicate-accession` on a clash). When absent, the LIS
    /// generates one as `A-YYYYMMDD-NNNNNN` (the UTC date of placement and a
    /// lab-wide sequence number).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub accession_number: Option<String>,
    /// The partner's identifier for the order: 1-64 visible ASCII characters.
    #[serde(rename = "externalOrderID", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub external_order_id: Option<String>,
    /// The tests ordered, at least one, each a code of the lab's catalog
    /// (`GET /v1/catalog`; 422 `unknown_test` otherwise) ordered once.
    #[schema(min_items = 1)]
    pub tests: Vec<OrderedTest>,
    /// The specimen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = NewSpecimen)]
    pub specimen: Option<NewSpecimen>,
    /// How urgent the order is (default `routine`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = PrioritySchema)]
    pub priority: Option<PrioritySchema>,
}

/// The specimen of a new order.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSpecimen {
    /// What is drawn (`whole blood`, `serum`), up to 64 characters. When
    /// absent, the specimen type the catalog gives the ordered tests, which
    /// must then all share one.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 64)]
    pub specimen_type: Option<String>,
    /// When it was collected, if it already was (RFC 3339; not in the future
    /// nor before the patient's date of birth). The order stays `ordered`
    /// until `collect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = chrono::DateTime<Utc>)]
    pub collected_at: Option<chrono::DateTime<Utc>>,
}

/// The body of `PATCH /v1/orders/{orderID}`: a JSON merge patch (RFC 7396)
/// of the specimen details, priority and external id, while the order is
/// `ordered`, `collected`, `received` or `in_progress`. `patientID`,
/// `clientID`, `locationID`, `accessionNumber`, `tests` and the read-only
/// members of an order cannot be set (422).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"priority": "urgent", "specimen": {"type": "serum"}}))]
pub struct OrderMergePatch {
    /// Parts of the specimen to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = SpecimenMergePatch)]
    pub specimen: Option<SpecimenMergePatch>,
    /// A new priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = PrioritySchema)]
    pub priority: Option<PrioritySchema>,
    /// A new external order id, or `null` to remove it.
    #[serde(rename = "externalOrderID", skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64)]
    pub external_order_id: Option<String>,
}

/// The specimen part of an order's merge patch.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecimenMergePatch {
    /// A new specimen type (it cannot be removed).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 64)]
    pub specimen_type: Option<String>,
    /// A new collection instant (RFC 3339, not in the future), or `null` to
    /// remove it while the order is still `ordered`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<chrono::DateTime<Utc>>,
}

/// The body of `POST /v1/orders/{orderID}/collect` (optional: no body, or
/// `{}`, is fine).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"collectedAt": "2026-11-26T08:30:00Z"}))]
pub struct CollectRequest {
    /// When the specimen was collected (RFC 3339, not in the future). When
    /// absent: the `specimen.collectedAt` given at placement, else now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = chrono::DateTime<Utc>)]
    pub collected_at: Option<chrono::DateTime<Utc>>,
}

/// The body of `POST /v1/orders/{orderID}/cancel`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "Ordered in error"}))]
pub struct CancelRequest {
    /// Why the order is canceled: non-blank, up to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// One result as the lab reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultInput {
    /// The analyte's code, measured by one of the order's tests (422
    /// `unknown_analyte` otherwise), reported once per request.
    #[schema(example = "HGB")]
    pub code: String,
    /// The value, kept exactly as sent: a string (`"5.20"`, `"<0.5"`,
    /// `"Not detected"`) or a number. For a numeric analyte a decimal number,
    /// optionally right after `<`, `>`, `<=` or `>=` (422 otherwise).
    pub value: ResultValueSchema,
    /// The unit: required for a numeric analyte and exactly the catalog's
    /// (422 `unit_mismatch` otherwise); a text analyte has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, example = "g/dL")]
    pub unit: Option<String>,
}

/// The body of `POST /v1/orders/{orderID}/results`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"results": [
    {"code": "HGB", "value": "11.2", "unit": "g/dL"},
    {"code": "WBC", "value": 7.2, "unit": "10^9/L"}
]}))]
pub struct ResultsRequest {
    /// At least one result. Each replaces any earlier result of its analyte;
    /// analytes not named keep theirs.
    #[schema(min_items = 1)]
    pub results: Vec<ResultInput>,
}

/// The body of `POST /v1/orders/{orderID}/correct`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "Sample mix-up", "results": [{"code": "HGB", "value": "13.1", "unit": "g/dL"}]}))]
pub struct CorrectRequest {
    /// Why the results are amended: non-blank, up to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// The corrected results, at least one; each replaces its analyte's
    /// result, which stays in the order's history.
    #[schema(min_items = 1)]
    pub results: Vec<ResultInput>,
}

/// The body of `receive`, `start` and `finalize`: none, or an empty object.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

fn rejection(e: OrderRejection) -> ApiError {
    match e {
        OrderRejection::Invalid(errors) => ApiError::unprocessable(errors),
        OrderRejection::InvalidStatus { action, status } => ApiError::Conflict {
            slug: "invalid-status",
            detail: format!("Cannot {action} an order that is {}.", status.as_str()),
            extra: Map::from_iter([("orderStatus".to_string(), Value::from(status.as_str()))]),
        },
        OrderRejection::DuplicateAccession => ApiError::Conflict {
            slug: "duplicate-accession",
            detail: "This accessionNumber is already used in the lab.".into(),
            extra: Map::new(),
        },
    }
}

/// Loads a patient from the event store.
async fn load_patient(db: &impl GenericClient, id: Uuid) -> Result<Option<Patient>, TxError> {
    Ok(store::load::<PatientEvent>(db, id)
        .await?
        .and_then(|l| patient::replay(&l.events)))
}

/// Loads an order with its first and last event times.
async fn load_order(
    db: &impl GenericClient,
    id: Uuid,
) -> Result<Option<(Order, store::Loaded<OrderEvent>)>, TxError> {
    let Some(loaded) = store::load::<OrderEvent>(db, id).await? else {
        return Ok(None);
    };
    Ok(order::replay(&loaded.events).map(|o| (o, loaded)))
}

/// The catalog definitions of `codes` from the write side.
async fn catalog(db: &impl GenericClient, codes: &[String]) -> Result<Vec<CatalogTest>, TxError> {
    db.query_cached(
        "SELECT definition FROM catalog_tests WHERE code = ANY($1)",
        &[&codes],
    )
    .await?
    .iter()
    .map(|r| serde_json::from_value(r.get(0)).map_err(|e| TxError::Api(ApiError::internal(e))))
    .collect()
}

/// The patient details the caller may see embedded in an order.
fn summary(caller: &Caller, patient: Option<&Patient>) -> Option<PatientSummary> {
    patient
        .filter(|p| {
            caller.has(Permission::PatientsRead) && caller.sees(&p.client_id, &p.location_id)
        })
        .map(PatientSummary::of)
}

/// The answer to an order command. Its consistency token also names the
/// patient's version the decision saw: order reads embed the patient from
/// the read model, so a read with the token waits for both (without it a
/// read could find the order projected but not yet its patient).
fn answer(
    status: StatusCode,
    view: &OrderView,
    patient: Option<&Patient>,
    location: bool,
) -> Answer {
    let mut seen = vec![(view.order_id, view.version)];
    seen.extend(patient.map(|p| (p.id, p.version)));
    let mut headers = vec![
        ("etag".to_string(), view.etag()),
        (
            contract::consistency::HEADER.to_string(),
            ConsistencyToken(seen).encode(),
        ),
    ];
    if location {
        headers.push((
            header::LOCATION.as_str().to_string(),
            format!("/v1/orders/{}", view.order_id),
        ));
    }
    Answer::json(
        status,
        &serde_json::to_value(view).expect("view serializes"),
        headers,
    )
}

fn draft_from(f: &mut Fields) -> OrderDraft {
    let tests = f.array("tests").map(|items| {
        let mut codes = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let Some(mut e) = f.element("tests", i, item) else {
                continue;
            };
            match e.string("code") {
                Some(code) => codes.push(code),
                None if e.errors.is_empty() => e
                    .errors
                    .push(FieldError::required(format!("tests[{i}].code"))),
                None => {}
            }
            f.absorb(e);
        }
        codes
    });
    let (specimen_type, collected_at) = match f.object("specimen") {
        Some(mut s) => {
            let t = s.string("type");
            let c = s.string("collectedAt");
            f.absorb(s);
            (t, c)
        }
        None => (None, None),
    };
    OrderDraft {
        patient_id: f.string("patientID"),
        client_id: f.string("clientID"),
        location_id: f.string("locationID"),
        accession_number: f.string("accessionNumber"),
        external_order_id: f.string("externalOrderID"),
        tests,
        specimen_type,
        collected_at,
        priority: f.string("priority"),
    }
}

fn patch_from(f: &mut Fields) -> OrderPatch {
    let specimen = f.object_patch("specimen").map(|mut s| {
        let p = SpecimenPatch {
            specimen_type: s.string_patch("type"),
            collected_at: s.string_patch("collectedAt"),
        };
        f.absorb(s);
        p
    });
    OrderPatch {
        specimen,
        priority: f.string_patch("priority"),
        external_order_id: f.string_patch("externalOrderID"),
    }
}

fn results_from(f: &mut Fields) -> Vec<ResultEntry> {
    let Some(items) = f.array("results") else {
        if !f.errors.iter().any(|e| e.field == "results") {
            f.errors.push(FieldError::required("results"));
        }
        return Vec::new();
    };
    let mut entries = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Some(mut e) = f.element("results", i, item) else {
            continue;
        };
        let code = e.string("code");
        let value = e.raw("value");
        let unit = e.string("unit");
        if code.is_none() {
            e.errors
                .push(FieldError::required(format!("results[{i}].code")));
        }
        if value.is_none() {
            e.errors
                .push(FieldError::required(format!("results[{i}].value")));
        }
        if let (Some(code), Some(value)) = (code, value) {
            entries.push(ResultEntry { code, value, unit });
        }
        f.absorb(e);
    }
    entries
}

/// Combines the HTTP layer's field errors with the domain's. A list the
/// HTTP layer found bad elements in is not also "empty" (the domain only saw
/// the good elements).
fn merge(shape: &[FieldError], e: OrderRejection) -> ApiError {
    match e {
        OrderRejection::Invalid(errors) => {
            let mut all = shape.to_vec();
            all.extend(errors.into_iter().filter(|d| {
                !(d.code == "empty"
                    && shape
                        .iter()
                        .any(|s| s.field.starts_with(&format!("{}[", d.field))))
            }));
            match fields::check(all) {
                Err(e) => e,
                Ok(()) => ApiError::internal("empty rejection"),
            }
        }
        _ if !shape.is_empty() => ApiError::unprocessable(shape.to_vec()),
        other => rejection(other),
    }
}

/// `POST /v1/orders`.
#[utoipa::path(
    post,
    path = "/v1/orders",
    operation_id = "createOrder",
    tag = "orders",
    summary = "Place an order",
    description = "Places an order of one or more catalog tests for a patient in the caller's \
        scope, at a location of the patient's client. The order starts `ordered`. An \
        `accessionNumber` is generated as `A-YYYYMMDD-NNNNNN` when absent; a given one must be \
        unique in the lab. The answer shows the patient's name and date of birth only to a \
        caller holding `patients:read`. Requires `tests:create`.",
    request_body(content = NewOrder, content_type = "application/json"),
    security(("bearer" = []), ("oauth2" = ["tests:create"])),
    responses(
        (status = 201, description = "Placed: the order.", body = OrderView,
            headers(
                ("Location" = String, description = "`/v1/orders/{orderID}`"),
                ("ETag" = String, description = "The version in quotes: `\"1\"`."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type (`errors` names each one, code `wrong_type`).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:create`, or the body's `clientID`/`locationID` is outside its scope.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`duplicate-accession`: the `accessionNumber` is already used in the lab; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/duplicate-accession", "title": "Conflict", "status": 409, "detail": "This accessionNumber is already used in the lab."})),
        (status = 415, description = "The body is not sent as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: missing, malformed, unknown or read-only fields; a patient that does not exist or is outside the caller's scope (`unknown_patient`, the same answer either way); a `clientID` that is not the patient's (`client_mismatch`); a location that does not exist or belongs to another client (`unknown_location`); a test code not in the catalog (`tests[i].code`, `unknown_test`) or ordered twice; no `specimen.type` for tests run on different specimen types; a malformed `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(partner))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = async {
        let (caller, body, mut f) =
            begin_create(&app, &headers, body, Permission::TestsCreate).await?;
        f.read_only(READ_ONLY);
        let draft = draft_from(&mut f);
        let shape = f.finish();
        fields::reject_wrong_types(&shape)?;
        let idem = Idempotency::from_request(
            &headers,
            caller.partner_id,
            "POST",
            "/v1/orders".into(),
            &body,
        )?;
        let key = idem.as_ref().map(|i| i.key.clone());
        Ok::<_, ApiError>((caller, draft, shape, key, idem))
    }
    .await;
    match prepared {
        Ok((caller, draft, shape, key, idem)) => {
            execute(
                &app,
                idem,
                Place {
                    caller,
                    draft,
                    shape,
                    key,
                },
            )
            .await
        }
        Err(e) => e.into_response(),
    }
}

struct Place {
    caller: Caller,
    draft: OrderDraft,
    shape: Vec<FieldError>,
    key: Option<String>,
}

impl Attempt for Place {
    async fn attempt<'a>(&'a self, tx: &'a Transaction<'a>) -> Result<Answer, TxError> {
        let Place {
            caller,
            draft,
            shape,
            key,
        } = self;
        let meta = CommandMeta::new(
            Actor::Partner {
                id: caller.partner_id,
            },
            key.clone(),
        );
        let patient = match draft
            .patient_id
            .as_deref()
            .and_then(|p| p.parse::<Uuid>().ok())
        {
            Some(id) => load_patient(tx, id)
                .await?
                .filter(|p| caller.sees(&p.client_id, &p.location_id)),
            None => None,
        };
        let location_client = match &draft.location_id {
            Some(l) => tx
                .query_opt_cached(
                    "SELECT client_id FROM locations WHERE location_id = $1",
                    &[l],
                )
                .await?
                .map(|r| r.get(0)),
            None => None,
        };
        let codes = draft.tests.clone().unwrap_or_default();
        let now = Utc::now();
        let generated_accession = match &draft.accession_number {
            Some(_) => String::new(),
            None => {
                let seq: i64 = tx
                    .query_one_cached("SELECT nextval('accession_seq')", &[])
                    .await?
                    .get(0);
                order::generate_accession(now.date_naive(), seq as u64)
            }
        };
        let accession = draft
            .accession_number
            .clone()
            .unwrap_or_else(|| generated_accession.clone());
        let accession_taken = tx
            .query_opt_cached(
                "SELECT 1 FROM accession_numbers WHERE accession_number = $1",
                &[&accession],
            )
            .await?
            .is_some();
        let ctx = PlaceContext {
            patient: patient.as_ref().map(|p| PatientFacts {
                client_id: p.client_id.clone(),
                location_id: p.location_id.clone(),
                sex: p.sex,
                date_of_birth: p.date_of_birth,
            }),
            location_client,
            catalog: catalog(tx, &codes).await?,
            generated_accession,
            accession_taken,
            now,
        };
        let order_id = Uuid::new_v4();
        let event = order::place(order_id, draft.clone(), &ctx).map_err(|e| merge(shape, e))?;
        fields::check(shape.clone())?;
        store::append(tx, &meta, &[Pending::new(order_id, 1, &event)]).await?;
        let state = order::apply(None, &event).expect("placement creates state");
        tx.execute_cached(
            "INSERT INTO accession_numbers (accession_number, order_id) VALUES ($1, $2)",
            &[&state.accession_number, &order_id],
        )
        .await
        .map_err(retry_on("accession_numbers_pkey"))?;
        let view = OrderView::from_state(
            &state,
            summary(caller, patient.as_ref()),
            meta.occurred_at,
            meta.occurred_at,
        );
        Ok(answer(StatusCode::CREATED, &view, patient.as_ref(), true))
    }
}

/// The change an order command asks for.
#[derive(Debug, Clone)]
enum Change {
    Patch(OrderPatch),
    Collect(Option<String>),
    Receive,
    Start,
    Cancel(Option<String>),
    Results(Vec<ResultEntry>),
    Finalize,
    Correct(Option<String>, Vec<ResultEntry>),
}

struct Act {
    caller: Caller,
    id: Uuid,
    change: Change,
    shape: Vec<FieldError>,
    expected: Option<i64>,
    key: Option<String>,
}

impl Attempt for Act {
    async fn attempt<'a>(&'a self, tx: &'a Transaction<'a>) -> Result<Answer, TxError> {
        let Act {
            caller,
            id,
            change,
            shape,
            expected,
            key,
        } = self;
        let meta = CommandMeta::new(
            Actor::Partner {
                id: caller.partner_id,
            },
            key.clone(),
        );
        let (state, loaded) = load_order(tx, *id)
            .await?
            .filter(|(o, _)| caller.sees(&o.client_id, &o.location_id))
            .ok_or(ApiError::NotFound)?;
        if expected.is_some_and(|v| v != state.version) {
            return Err(ApiError::PreconditionFailed.into());
        }
        let patient = load_patient(tx, state.patient_id).await?;
        let now = Utc::now();
        let result_ctx = async |patient: Option<&Patient>| -> Result<ResultContext, TxError> {
            let p = patient.ok_or_else(|| ApiError::internal("order without its patient"))?;
            Ok(ResultContext {
                catalog: catalog(tx, &state.tests).await?,
                patient_sex: p.sex,
                patient_date_of_birth: p.date_of_birth,
                now,
            })
        };
        let decided = match change {
            Change::Patch(p) => order::update(&state, p.clone(), now),
            Change::Collect(at) => order::collect(&state, at.clone(), now).map(Some),
            Change::Receive => order::receive(&state).map(Some),
            Change::Start => order::start(&state).map(Some),
            Change::Cancel(reason) => order::cancel(&state, reason.clone()).map(Some),
            Change::Finalize => order::finalize(&state).map(Some),
            Change::Results(entries) => {
                let ctx = result_ctx(patient.as_ref()).await?;
                order::record_results(&state, entries.clone(), &ctx).map(Some)
            }
            Change::Correct(reason, entries) => {
                let ctx = result_ctx(patient.as_ref()).await?;
                order::correct(&state, reason.clone(), entries.clone(), &ctx).map(Some)
            }
        };
        let event = decided.map_err(|e| merge(shape, e))?;
        fields::check(shape.clone())?;
        let (state, updated_at) = match event {
            Some(event) => {
                store::append(tx, &meta, &[Pending::new(*id, state.version + 1, &event)]).await?;
                (
                    order::apply(Some(state), &event).expect("order exists"),
                    meta.occurred_at,
                )
            }
            None => (state, loaded.updated_at),
        };
        let view = OrderView::from_state(
            &state,
            summary(caller, patient.as_ref()),
            loaded.created_at,
            updated_at,
        );
        Ok(answer(StatusCode::OK, &view, patient.as_ref(), false))
    }
}

/// Reads the (possibly empty) body of an action into its change.
fn change_of(action: OrderAction, f: &mut Fields) -> Change {
    match action {
        OrderAction::Collect => Change::Collect(f.string("collectedAt")),
        OrderAction::Receive => Change::Receive,
        OrderAction::Start => Change::Start,
        OrderAction::Finalize => Change::Finalize,
        OrderAction::Cancel => Change::Cancel(f.string("reason")),
        OrderAction::Results => Change::Results(results_from(f)),
        OrderAction::Correct => {
            let reason = f.string("reason");
            Change::Correct(reason, results_from(f))
        }
        OrderAction::Update => Change::Patch(patch_from(f)),
    }
}

#[allow(clippy::too_many_arguments)] // one call per route kind; a struct would only rename them
async fn prepare_act(
    app: &AppState,
    headers: &HeaderMap,
    id: &str,
    permission: Permission,
    method: &'static str,
    path: String,
    body: Result<Bytes, BytesRejection>,
    parse: impl FnOnce(&mut Fields) -> Change,
    kind: BodyKind,
) -> Result<(Act, Option<Idempotency>), ApiError> {
    let caller = authenticate(headers, &app.keys, &app.partners).await?;
    tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
    caller.require(permission)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let db = app.write.get().await?;
    load_order(&db, id)
        .await
        .map_err(|e| match e {
            TxError::Api(e) => e,
            TxError::Retry => ApiError::internal("retry while loading"),
        })?
        .filter(|(o, _)| caller.sees(&o.client_id, &o.location_id))
        .ok_or(ApiError::NotFound)?;
    drop(db);
    let body = body_bytes(body)?;
    let empty = body.iter().all(u8::is_ascii_whitespace);
    let map = if empty && method == "POST" {
        Map::new()
    } else {
        let map = fields::parse_object(&body);
        fields::require_json(headers, kind)?;
        map?
    };
    let mut f = Fields::new(map);
    if method == "PATCH" {
        f.read_only(READ_ONLY);
        f.read_only(&[
            "patientID",
            "clientID",
            "locationID",
            "accessionNumber",
            "tests",
        ]);
    }
    let change = parse(&mut f);
    let shape = f.finish();
    fields::reject_wrong_types(&shape)?;
    let expected = if_match(headers)?;
    let idem = Idempotency::from_request(headers, caller.partner_id, method, path, &body)?;
    let key = idem.as_ref().map(|i| i.key.clone());
    Ok((
        Act {
            caller,
            id,
            change,
            shape,
            expected,
            key,
        },
        idem,
    ))
}

/// `PATCH /v1/orders/{orderID}`.
#[utoipa::path(
    patch,
    path = "/v1/orders/{orderID}",
    operation_id = "updateOrder",
    tag = "orders",
    summary = "Change an order",
    description = "A JSON merge patch (RFC 7396) of the specimen details, the priority and \
        `externalOrderID`, while the order is `ordered`, `collected`, `received` or \
        `in_progress` (409 `invalid-status` otherwise). With `If-Match`, the change applies \
        only to that version (412 otherwise). A patch that changes nothing answers 200 with \
        the unchanged version. Requires `tests:update`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(
        description = "A merge patch. `application/json` is accepted too.",
        content(
            (OrderMergePatch = "application/merge-patch+json"),
            (OrderMergePatch = "application/json"),
        )
    ),
    security(("bearer" = []), ("oauth2" = ["tests:update"])),
    responses(
        (status = 200, description = "The order as it now stands.", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:update`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is `resulted`, `final`, `corrected` or `canceled`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/stale-version", "title": "Precondition Failed", "status": 412, "detail": "The record changed since the version in If-Match."})),
        (status = 415, description = "The body is not sent as `application/merge-patch+json` or `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: `patientID`, `clientID`, `locationID`, `accessionNumber`, `tests` and read-only members cannot be set, the specimen type and priority cannot be removed, nor `specimen.collectedAt` once the specimen is collected; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(partner))]
pub async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let path = format!("/v1/orders/{id}");
    let prepared = prepare_act(
        &app,
        &headers,
        &id,
        OrderAction::Update.permission(),
        "PATCH",
        path,
        body,
        |f| change_of(OrderAction::Update, f),
        BodyKind::MergePatch,
    )
    .await;
    match prepared {
        Ok((act, idem)) => execute(&app, idem, act).await,
        Err(e) => e.into_response(),
    }
}

/// Documentation only: `POST /v1/orders/{orderID}/collect` in the OpenAPI
/// document (served by [`act`]).
#[utoipa::path(
    post,
    path = "/v1/orders/{orderID}/collect",
    operation_id = "collectSpecimen",
    tag = "orders",
    summary = "Record specimen collection",
    description = "Moves an `ordered` order to `collected`. `collectedAt` defaults to the `specimen.collectedAt` given at placement, else now. Allowed from `ordered`; leads to `collected`. With `If-Match`, the action applies only to that version (412 otherwise). Requires `tests:update`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(content = CollectRequest, content_type = "application/json", description = "Optional: no body, or `{}`, is fine."),
    security(("bearer" = []), ("oauth2" = ["tests:update"])),
    responses(
        (status = 200, description = "The order as it now stands (`collected`).", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:update`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is not `ordered`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body is sent, but not as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: `collectedAt` is not an RFC 3339 timestamp or is in the future; an unknown field; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub fn collect_doc() {}

/// Documentation only: `POST /v1/orders/{orderID}/receive` in the OpenAPI
/// document (served by [`act`]).
#[utoipa::path(
    post,
    path = "/v1/orders/{orderID}/receive",
    operation_id = "receiveSpecimen",
    tag = "orders",
    summary = "Record specimen receipt by the lab",
    description = "Moves a `collected` order to `received`. No body is needed. Allowed from `collected`; leads to `received`. With `If-Match`, the action applies only to that version (412 otherwise). Requires `tests:update`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(content = NoFields, content_type = "application/json", description = "Optional: no body is needed; an empty object is accepted."),
    security(("bearer" = []), ("oauth2" = ["tests:update"])),
    responses(
        (status = 200, description = "The order as it now stands (`received`).", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:update`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is not `collected`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body is sent, but not as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: a body with any member; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub fn receive_doc() {}

/// Documentation only: `POST /v1/orders/{orderID}/start` in the OpenAPI
/// document (served by [`act`]).
#[utoipa::path(
    post,
    path = "/v1/orders/{orderID}/start",
    operation_id = "startTesting",
    tag = "orders",
    summary = "Record the start of testing",
    description = "Moves a `received` order to `in_progress`. No body is needed. Allowed from `received`; leads to `in_progress`. With `If-Match`, the action applies only to that version (412 otherwise). Requires `tests:update`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(content = NoFields, content_type = "application/json", description = "Optional: no body is needed; an empty object is accepted."),
    security(("bearer" = []), ("oauth2" = ["tests:update"])),
    responses(
        (status = 200, description = "The order as it now stands (`in_progress`).", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:update`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is not `received`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body is sent, but not as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: a body with any member; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub fn start_doc() {}

/// Documentation only: `POST /v1/orders/{orderID}/cancel` in the OpenAPI
/// document (served by [`act`]).
#[utoipa::path(
    post,
    path = "/v1/orders/{orderID}/cancel",
    operation_id = "cancelOrder",
    tag = "orders",
    summary = "Cancel an order",
    description = "Moves an `ordered`, `collected` or `received` order to `canceled`, with a required `reason`. Allowed from `ordered`, `collected` or `received`; leads to `canceled`. With `If-Match`, the action applies only to that version (412 otherwise). Requires `tests:update`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(content = CancelRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth2" = ["tests:update"])),
    responses(
        (status = 200, description = "The order as it now stands (`canceled`).", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `tests:update`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is `in_progress` or later, or already `canceled`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body is sent, but not as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: `reason` is missing, blank or longer than 500 characters; an unknown field; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub fn cancel_doc() {}

/// Documentation only: `POST /v1/orders/{orderID}/results` in the OpenAPI
/// document (served by [`act`]).
#[utoipa::path(
    post,
    path = "/v1/orders/{orderID}/results",
    operation_id = "recordResults",
    tag = "orders",
    summary = "Record results",
    description = "Records or replaces results, analyte by analyte, of a `received`, `in_progress` or `resulted` order, which becomes `resulted`. Values are kept exactly as sent; the LIS attaches the catalog's reference range for the patient's sex and age on the collection date, and a flag (`LL`, `HH`, `L`, `H`, `N`, `A`, or none where the catalog has no range for that patient). Results are not released to the patient until `finalize`. `results:write` is granted to reference labs and instrument middleware only. Allowed from `received`, `in_progress` or `resulted`; leads to `resulted`. With `If-Match`, the action applies only to that version (412 otherwise). Requires `results:write`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(content = ResultsRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth2" = ["results:write"])),
    responses(
        (status = 200, description = "The order as it now stands (`resulted`).", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `results:write`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is not `received`, `in_progress` or `resulted`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body is sent, but not as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: no `results`, an analyte that none of the order's tests measures (`unknown_analyte`) or named twice, a value that is not a decimal number for a numeric analyte (`not_numeric`), a missing unit or one that is not the catalog's (`unit_mismatch`), an unknown field; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub fn results_doc() {}

/// Documentation only: `POST /v1/orders/{orderID}/finalize` in the OpenAPI
/// document (served by [`act`]).
#[utoipa::path(
    post,
    path = "/v1/orders/{orderID}/finalize",
    operation_id = "finalizeResults",
    tag = "orders",
    summary = "Release results as final",
    description = "Moves a `resulted` order to `final`: its results are released to the patient's portal. No body is needed. Allowed from `resulted`; leads to `final`. With `If-Match`, the action applies only to that version (412 otherwise). Requires `results:write`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(content = NoFields, content_type = "application/json", description = "Optional: no body is needed; an empty object is accepted."),
    security(("bearer" = []), ("oauth2" = ["results:write"])),
    responses(
        (status = 200, description = "The order as it now stands (`final`).", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `results:write`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is not `resulted`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body is sent, but not as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: a body with any member; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub fn finalize_doc() {}

/// Documentation only: `POST /v1/orders/{orderID}/correct` in the OpenAPI
/// document (served by [`act`]).
#[utoipa::path(
    post,
    path = "/v1/orders/{orderID}/correct",
    operation_id = "correctResults",
    tag = "orders",
    summary = "Correct final results",
    description = "Amends results of a `final` or `corrected` order, with a required `reason`; the order becomes `corrected` and the replaced values stay in its history. Ranges and flags are attached as for `results`. Allowed from `final` or `corrected`; leads to `corrected`. With `If-Match`, the action applies only to that version (412 otherwise). Requires `results:write`.",
    params(
        ("orderID" = uuid::Uuid, Path, description = "The order's id."),
    ),
    request_body(content = CorrectRequest, content_type = "application/json"),
    security(("bearer" = []), ("oauth2" = ["results:write"])),
    responses(
        (status = 200, description = "The order as it now stands (`corrected`).", body = OrderView,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `results:write`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or the order is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-status`: the order is not `final` or `corrected`, and nothing changed; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body is sent, but not as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: `reason` missing or blank, no `results`, or a bad result as for `results`; an unknown field; or a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub fn correct_doc() {}

/// `POST /v1/orders/{orderID}/{action}`: each lifecycle action on its own
/// route (the router gives `action`), documented as its own operation
/// (`collect_doc` ...).
#[tracing::instrument(skip_all, fields(partner, action = %action))]
pub async fn act(
    action: OrderAction,
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let path = format!("/v1/orders/{id}/{action}");
    let prepared = prepare_act(
        &app,
        &headers,
        &id,
        action.permission(),
        "POST",
        path,
        body,
        |f| change_of(action, f),
        BodyKind::Json,
    )
    .await;
    match prepared {
        Ok((act, idem)) => execute(&app, idem, act).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(body: &impl Serialize) -> Fields {
        match serde_json::to_value(body).unwrap() {
            Value::Object(map) => Fields::new(map),
            other => panic!("not an object: {other}"),
        }
    }

    fn text(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    fn results() -> Vec<ResultInput> {
        vec![
            ResultInput {
                code: "HGB".into(),
                value: ResultValueSchema::Text("11.2".into()),
                unit: text("g/dL"),
            },
            ResultInput {
                code: "WBC".into(),
                value: ResultValueSchema::Number(7.2),
                unit: None,
            },
        ]
    }

    /// Every field the OpenAPI document names for a placement is one the
    /// handler reads.
    #[test]
    fn documented_create_fields_are_read() {
        let body = NewOrder {
            patient_id: Uuid::nil(),
            client_id: "C1".into(),
            location_id: "L1".into(),
            accession_number: text("ACC-1"),
            external_order_id: text("EHR-1"),
            tests: vec![OrderedTest { code: "CBC".into() }],
            specimen: Some(NewSpecimen {
                specimen_type: text("whole blood"),
                collected_at: Some(Utc::now()),
            }),
            priority: Some(PrioritySchema::Stat),
        };
        let mut f = fields_of(&body);
        f.read_only(READ_ONLY);
        let draft = draft_from(&mut f);
        assert_eq!(f.finish(), vec![]);
        assert_eq!(draft.tests, Some(vec!["CBC".to_string()]));
        assert_eq!(draft.priority.as_deref(), Some("stat"));
        assert!(draft.collected_at.is_some() && draft.specimen_type.is_some());
    }

    /// Every field the OpenAPI document names for a merge patch is one the
    /// handler reads.
    #[test]
    fn documented_patch_fields_are_read() {
        let body = OrderMergePatch {
            specimen: Some(SpecimenMergePatch {
                specimen_type: text("serum"),
                collected_at: Some(Utc::now()),
            }),
            priority: Some(PrioritySchema::Urgent),
            external_order_id: text("EHR-2"),
        };
        let mut f = fields_of(&body);
        f.read_only(READ_ONLY);
        let patch = patch_from(&mut f);
        assert_eq!(f.finish(), vec![]);
        assert_eq!(patch.priority, domain::patch::Patch::Set("urgent".into()));
    }

    /// Every field the OpenAPI document names for an action body is one the
    /// handler reads.
    #[test]
    fn documented_action_fields_are_read() {
        let bodies: Vec<(OrderAction, Value)> = vec![
            (
                OrderAction::Collect,
                serde_json::to_value(CollectRequest {
                    collected_at: Some(Utc::now()),
                })
                .unwrap(),
            ),
            (
                OrderAction::Receive,
                serde_json::to_value(NoFields {}).unwrap(),
            ),
            (
                OrderAction::Start,
                serde_json::to_value(NoFields {}).unwrap(),
            ),
            (
                OrderAction::Finalize,
                serde_json::to_value(NoFields {}).unwrap(),
            ),
            (
                OrderAction::Cancel,
                serde_json::to_value(CancelRequest {
                    reason: "ordered in error".into(),
                })
                .unwrap(),
            ),
            (
                OrderAction::Results,
                serde_json::to_value(ResultsRequest { results: results() }).unwrap(),
            ),
            (
                OrderAction::Correct,
                serde_json::to_value(CorrectRequest {
                    reason: "mix-up".into(),
                    results: results(),
                })
                .unwrap(),
            ),
        ];
        for (action, body) in bodies {
            let mut f = fields_of(&body);
            let change = change_of(action, &mut f);
            assert_eq!(f.finish(), vec![], "{action}");
            match change {
                Change::Results(r) | Change::Correct(_, r) => assert_eq!(r.len(), 2),
                Change::Collect(at) => assert!(at.is_some()),
                Change::Cancel(reason) => assert!(reason.is_some()),
                _ => {}
            }
        }
    }
}
