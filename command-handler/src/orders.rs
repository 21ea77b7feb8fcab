//! Order commands: `POST /v1/orders`, `PATCH /v1/orders/{id}` and the
//! lifecycle actions `POST /v1/orders/{id}/{action}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::access::{Actor, Permission};
use domain::catalog::CatalogTest;
use domain::order::{
    self, Order, OrderDraft, OrderEvent, OrderPatch, OrderRejection, PatientFacts, PlaceContext,
    ResultContext, ResultEntry, SpecimenPatch,
};
use domain::patient::{self, Patient, PatientEvent};
use domain::validation::FieldError;
use platform::auth::{authenticate, Caller};
use platform::consistency::ConsistencyToken;
use platform::fields::{self, BodyKind, Fields};
use platform::order_view::{OrderView, PatientSummary};
use platform::problem::ApiError;
use serde_json::{Map, Value};
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use crate::command::{body_bytes, execute, if_match, retry_on, Attempt, TxError};
use crate::idempotency::{self, Answer, Idempotency};
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

fn rejection(e: OrderRejection) -> ApiError {
    match e {
        OrderRejection::Invalid(errors) => ApiError::unprocessable(errors),
        OrderRejection::InvalidStatus { action, status } => ApiError::Conflict {
            slug: "invalid-status",
            detail: format!("Cannot {action} an order that is {}.", status.as_str()),
            extra: Map::from_iter([("status".to_string(), Value::from(status.as_str()))]),
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
    db.query(
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

fn answer(status: StatusCode, view: &OrderView, location: bool) -> Answer {
    let mut headers = vec![
        ("etag".to_string(), view.etag()),
        (
            platform::consistency::HEADER.to_string(),
            ConsistencyToken(vec![(view.order_id, view.version)]).encode(),
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

/// Combines the HTTP layer's field errors with the domain's.
fn merge(shape: &[FieldError], e: OrderRejection) -> ApiError {
    match e {
        OrderRejection::Invalid(errors) => {
            let mut all = shape.to_vec();
            all.extend(errors);
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
#[tracing::instrument(skip_all, fields(partner))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = async {
        let caller = authenticate(&headers, &app.keys, &app.write).await?;
        tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
        caller.require(Permission::TestsCreate)?;
        let body = body_bytes(body)?;
        let map = fields::parse_object(&body);
        if let Ok(map) = &map {
            let c = map.get("clientID").and_then(Value::as_str);
            let l = map.get("locationID").and_then(Value::as_str);
            if let (Some(c), Some(l)) = (c, l) {
                if !caller.sees(c, l) {
                    return Err(ApiError::Forbidden(
                        "The clientID/locationID is outside this partner's scope.".into(),
                    ));
                }
            }
        }
        fields::require_json(&headers, BodyKind::Json)?;
        let mut f = Fields::new(map?);
        f.read_only(READ_ONLY);
        let draft = draft_from(&mut f);
        let shape = f.finish();
        if shape.iter().any(|e| e.code == fields::WRONG_TYPE) {
            fields::check(shape.clone())?;
        }
        let key = idempotency::key_from(&headers)?;
        let idem = key
            .clone()
            .map(|k| Idempotency::new(caller.partner_id, "POST", "/v1/orders".into(), k, &body));
        Ok((caller, draft, shape, key, idem))
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
                .query_opt(
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
                    .query_one("SELECT nextval('accession_seq')", &[])
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
            .query_opt(
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
        tx.execute(
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
        Ok(answer(StatusCode::CREATED, &view, true))
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
        Ok(answer(StatusCode::OK, &view, false))
    }
}

/// The permission each action needs.
fn permission_of(action: &str) -> Option<Permission> {
    match action {
        "collect" | "receive" | "start" | "cancel" => Some(Permission::TestsUpdate),
        "results" | "finalize" | "correct" => Some(Permission::ResultsWrite),
        _ => None,
    }
}

/// Reads the (possibly empty) body of an action into its change.
fn change_of(action: &str, f: &mut Fields) -> Change {
    match action {
        "collect" => Change::Collect(f.string("collectedAt")),
        "receive" => Change::Receive,
        "start" => Change::Start,
        "finalize" => Change::Finalize,
        "cancel" => Change::Cancel(f.string("reason")),
        "results" => Change::Results(results_from(f)),
        _ => {
            let reason = f.string("reason");
            Change::Correct(reason, results_from(f))
        }
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
    let caller = authenticate(headers, &app.keys, &app.write).await?;
    tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
    caller.require(permission)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let db = app.write.get().await?;
    load_order(&**db, id)
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
    if shape.iter().any(|e| e.code == fields::WRONG_TYPE) {
        fields::check(shape.clone())?;
    }
    let expected = if_match(headers)?;
    let key = idempotency::key_from(headers)?;
    let idem = key
        .clone()
        .map(|k| Idempotency::new(caller.partner_id, method, path, k, &body));
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
        Permission::TestsUpdate,
        "PATCH",
        path,
        body,
        |f| Change::Patch(patch_from(f)),
        BodyKind::MergePatch,
    )
    .await;
    match prepared {
        Ok((act, idem)) => execute(&app, idem, act).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/orders/{orderID}/{action}`.
#[tracing::instrument(skip_all, fields(partner, action = %action))]
pub async fn act(
    State(app): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(permission) = permission_of(&action) else {
        return ApiError::NotFound.into_response();
    };
    let path = format!("/v1/orders/{id}/{action}");
    let prepared = prepare_act(
        &app,
        &headers,
        &id,
        permission,
        "POST",
        path,
        body,
        |f| change_of(&action, f),
        BodyKind::Json,
    )
    .await;
    match prepared {
        Ok((act, idem)) => execute(&app, idem, act).await,
        Err(e) => e.into_response(),
    }
}
