//! Patient commands: `POST /v1/patients` and `PATCH /v1/patients/{id}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::access::{Actor, Permission};
use domain::account::{self, AccountEvent};
use domain::patch::Patch;
use domain::patient::{
    self, AddressPatch, Context, Patient, PatientDraft, PatientEvent, PatientPatch,
    PatientRejection,
};
use domain::validation::FieldError;
use platform::auth::{authenticate, Caller};
use platform::consistency::ConsistencyToken;
use platform::fields::{self, BodyKind, Fields};
use platform::problem::ApiError;
use platform::views::PatientView;
use serde_json::{json, Map, Value};
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use crate::idempotency::{self, Answer, Idempotency};
use crate::store::{self, AppendError, CommandMeta, Pending};
use crate::AppState;

/// Fields a partner may never set on a patient.
const READ_ONLY: &[&str] = &[
    "patientID",
    "version",
    "account",
    "createdAt",
    "updatedAt",
    "warnings",
];

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

impl From<anyhow::Error> for TxError {
    fn from(e: anyhow::Error) -> Self {
        TxError::Api(ApiError::internal(e))
    }
}

/// Maps an insert's unique violation on `constraint` to a retry.
fn retry_on(constraint: &'static str) -> impl Fn(tokio_postgres::Error) -> TxError {
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
                if let Some(previous) = idem.begin(&*tx).await? {
                    return Ok(previous);
                }
            }
            match command.attempt(&tx).await {
                Ok(answer) => {
                    if let Some(idem) = &idem {
                        idem.save(&*tx, &answer).await?;
                    }
                    tx.commit().await?;
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
                        idem.save(&**db, &answer).await?;
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

/// The headers of a successful write.
fn write_headers(
    view: &PatientView,
    token: &ConsistencyToken,
    location: bool,
) -> Vec<(String, String)> {
    let mut h = vec![
        ("etag".to_string(), view.etag()),
        (platform::consistency::HEADER.to_string(), token.encode()),
    ];
    if location {
        h.push((
            header::LOCATION.as_str().to_string(),
            format!("/v1/patients/{}", view.patient_id),
        ));
    }
    h
}

fn body_with_warnings(view: &PatientView, warnings: &[domain::validation::Warning]) -> Value {
    let mut body = serde_json::to_value(view).expect("view serializes");
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    body
}

/// Reads the `clientID`/`locationID` a body names, if they are strings.
fn named_ids(map: &Map<String, Value>) -> (Option<&str>, Option<&str>) {
    (
        map.get("clientID").and_then(Value::as_str),
        map.get("locationID").and_then(Value::as_str),
    )
}

fn draft_from(f: &mut Fields) -> PatientDraft {
    let address = f.object("address").map(|mut a| {
        let addr = domain::patient::Address {
            line1: a.string("line1"),
            line2: a.string("line2"),
            city: a.string("city"),
            state: a.string("state"),
            postal_code: a.string("postalCode"),
            country: a.string("country"),
        };
        f.absorb(a);
        addr
    });
    PatientDraft {
        external_patient_id: f.string("externalPatientID"),
        client_id: f.string("clientID"),
        location_id: f.string("locationID"),
        first_name: f.string("firstName"),
        last_name: f.string("lastName"),
        date_of_birth: f.string("dateOfBirth"),
        sex: f.string("sex"),
        email: f.string("email"),
        phone: f.string("phone"),
        address,
    }
}

fn patch_from(f: &mut Fields) -> PatientPatch {
    let address = f.object_patch("address").map(|mut a| {
        let p = AddressPatch {
            line1: a.string_patch("line1"),
            line2: a.string_patch("line2"),
            city: a.string_patch("city"),
            state: a.string_patch("state"),
            postal_code: a.string_patch("postalCode"),
            country: a.string_patch("country"),
        };
        f.absorb(a);
        p
    });
    PatientPatch {
        first_name: f.string_patch("firstName"),
        last_name: f.string_patch("lastName"),
        date_of_birth: f.string_patch("dateOfBirth"),
        sex: f.string_patch("sex"),
        email: f.string_patch("email"),
        phone: f.string_patch("phone"),
        address,
        location_id: f.string_patch("locationID"),
        external_patient_id: f.string_patch("externalPatientID"),
    }
}

/// Looks up what a patient decision needs.
async fn context(
    tx: &impl GenericClient,
    client_id: Option<&str>,
    location_id: Option<&str>,
    external_id: Option<&str>,
    email: Option<&str>,
    patient_id: Option<Uuid>,
) -> Result<Context, TxError> {
    let client_exists = match client_id {
        Some(c) => tx
            .query_opt("SELECT 1 FROM clients WHERE client_id = $1", &[&c])
            .await?
            .is_some(),
        None => false,
    };
    let location_client = match location_id {
        Some(l) => tx
            .query_opt(
                "SELECT client_id FROM locations WHERE location_id = $1",
                &[&l],
            )
            .await?
            .map(|r| r.get(0)),
        None => None,
    };
    let external_id_holder = match (client_id, external_id) {
        (Some(c), Some(x)) => tx
            .query_opt(
                "SELECT patient_id FROM patient_external_ids WHERE client_id = $1 AND external_patient_id = $2",
                &[&c, &x],
            )
            .await?
            .map(|r| r.get(0)),
        _ => None,
    };
    let email_in_use = match email.filter(|e| patient::is_valid_email(e)) {
        Some(e) => tx
            .query_opt(
                "SELECT 1 FROM accounts WHERE login = $1 AND patient_id IS DISTINCT FROM $2",
                &[&patient::login_key(e), &patient_id],
            )
            .await?
            .is_some(),
        None => false,
    };
    let has_account = match patient_id {
        Some(p) => tx
            .query_opt("SELECT 1 FROM accounts WHERE patient_id = $1", &[&p])
            .await?
            .is_some(),
        None => false,
    };
    Ok(Context {
        today: chrono::Utc::now().date_naive(),
        client_exists,
        location_client,
        email_in_use,
        external_id_holder,
        has_account,
    })
}

/// Loads a patient from the event store.
async fn load_patient(
    db: &impl GenericClient,
    id: Uuid,
) -> Result<Option<(Patient, store::Loaded<PatientEvent>)>, TxError> {
    let Some(loaded) = store::load::<PatientEvent>(db, id).await? else {
        return Ok(None);
    };
    Ok(patient::replay(&loaded.events).map(|p| (p, loaded)))
}

/// Builds the 409 of a duplicate, naming the holder only when the caller
/// may see it.
async fn duplicate(
    tx: &impl GenericClient,
    caller: &Caller,
    existing: Uuid,
) -> Result<ApiError, TxError> {
    let mut extra = Map::new();
    if let Some((holder, _)) = load_patient(tx, existing).await? {
        if caller.sees(&holder.client_id, &holder.location_id) {
            extra.insert("existingPatientID".into(), json!(existing));
        }
    }
    Ok(ApiError::Conflict {
        slug: "duplicate-patient",
        detail: "A patient with this externalPatientID already exists for this client.".into(),
        extra,
    })
}

/// Appends the account events and reservation of a decision's new account.
async fn open_account(
    tx: &Transaction<'_>,
    meta: &CommandMeta,
    patient_id: Uuid,
    email: &str,
) -> Result<(Pending, &'static str), TxError> {
    let account_id = Uuid::new_v4();
    let event = account::open(account_id, patient_id, email.to_string());
    let pending = Pending::new(account_id, 1, &event);
    store::append(tx, meta, std::slice::from_ref(&pending)).await?;
    let AccountEvent::PatientAccountInvited(_) = &event;
    tx.execute(
        "INSERT INTO accounts (account_id, patient_id, login, status, version) VALUES ($1, $2, $3, 'invited', 1)",
        &[&account_id, &patient_id, &patient::login_key(email)],
    )
    .await
    .map_err(retry_on("accounts_login"))?;
    Ok((pending, "invited"))
}

async fn account_status(
    db: &impl GenericClient,
    patient_id: Uuid,
) -> Result<Option<String>, TxError> {
    Ok(db
        .query_opt(
            "SELECT status FROM accounts WHERE patient_id = $1",
            &[&patient_id],
        )
        .await?
        .map(|r| r.get(0)))
}

/// `POST /v1/patients`.
#[tracing::instrument(skip_all, fields(partner))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = async {
        let caller = authenticate(&headers, &app.keys, &app.write).await?;
        tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
        caller.require(Permission::PatientsCreate)?;
        let body = body_bytes(body)?;
        let map = fields::parse_object(&body);
        if let Ok(map) = &map {
            if let (Some(c), Some(l)) = named_ids(map) {
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
        let shape_errors = f.finish();
        if shape_errors.iter().any(|e| e.code == fields::WRONG_TYPE) {
            fields::check(shape_errors.clone())?;
        }
        if let (Some(c), Some(l)) = (&draft.client_id, &draft.location_id) {
            if !caller.sees(c, l) {
                return Err(ApiError::Forbidden(
                    "The clientID/locationID is outside this partner's scope.".into(),
                ));
            }
        }
        let key = idempotency::key_from(&headers)?;
        let idem = key
            .clone()
            .map(|k| Idempotency::new(caller.partner_id, "POST", "/v1/patients".into(), k, &body));
        Ok((caller, draft, shape_errors, key, idem))
    }
    .await;
    match prepared {
        Ok((caller, draft, shape_errors, key, idem)) => {
            let command = Create {
                caller,
                draft,
                shape_errors,
                key,
            };
            execute(&app, idem, command).await
        }
        Err(e) => e.into_response(),
    }
}

struct Create {
    caller: Caller,
    draft: PatientDraft,
    shape_errors: Vec<FieldError>,
    key: Option<String>,
}

impl Attempt for Create {
    fn attempt<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
    ) -> impl std::future::Future<Output = Result<Answer, TxError>> + Send + 'a {
        async move {
            let Create {
                caller,
                draft,
                shape_errors,
                key,
            } = self;
            let meta = CommandMeta::new(
                Actor::Partner {
                    id: caller.partner_id,
                },
                key.clone(),
            );
            let ctx = context(
                tx,
                draft.client_id.as_deref(),
                draft.location_id.as_deref(),
                draft.external_patient_id.as_deref(),
                draft.email.as_deref(),
                None,
            )
            .await?;
            let patient_id = Uuid::new_v4();
            let decision = match patient::register(patient_id, draft.clone(), &ctx) {
                Ok(d) => d,
                Err(PatientRejection::DuplicateExternalId { existing })
                    if shape_errors.is_empty() =>
                {
                    return Err(duplicate(tx, caller, existing).await?.into())
                }
                Err(PatientRejection::DuplicateExternalId { .. }) => {
                    return Err(ApiError::unprocessable(shape_errors.clone()).into())
                }
                Err(PatientRejection::Invalid(errors)) => {
                    let mut all = shape_errors.clone();
                    all.extend(errors);
                    return Err(ApiError::unprocessable(all).into());
                }
            };
            fields::check(shape_errors.clone())?;
            let event = decision.event.expect("a registration always has an event");
            let PatientEvent::PatientRegistered(registered) = &event else {
                unreachable!("register yields PatientRegistered")
            };
            let pending = Pending::new(patient_id, 1, &event);
            store::append(tx, &meta, std::slice::from_ref(&pending)).await?;
            if let Some(x) = &registered.external_patient_id {
                tx.execute(
                "INSERT INTO patient_external_ids (client_id, external_patient_id, patient_id) VALUES ($1, $2, $3)",
                &[&registered.client_id, x, &patient_id],
            )
            .await
            .map_err(retry_on("patient_external_ids_pkey"))?;
            }
            let mut token = ConsistencyToken(vec![(patient_id, 1)]);
            let mut status = None;
            if let Some(email) = &decision.open_account {
                let (acct, s) = open_account(tx, &meta, patient_id, email).await?;
                token.0.push((acct.stream_id, acct.version));
                status = Some(s);
            }
            let state = patient::apply(None, &event).expect("registration creates state");
            let view = PatientView::from_state(&state, status, meta.occurred_at, meta.occurred_at);
            Ok(Answer::json(
                StatusCode::CREATED,
                &body_with_warnings(&view, &decision.warnings),
                write_headers(&view, &token, true),
            ))
        }
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

/// `PATCH /v1/patients/{patientID}`.
#[tracing::instrument(skip_all, fields(partner))]
pub async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = async {
        let caller = authenticate(&headers, &app.keys, &app.write).await?;
        tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
        caller.require(Permission::PatientsUpdate)?;
        let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
        let db = app.write.get().await?;
        let (current, _) = load_patient(&**db, id)
            .await
            .map_err(|e| match e {
                TxError::Api(e) => e,
                TxError::Retry => ApiError::internal("retry while loading"),
            })?
            .filter(|(p, _)| caller.sees(&p.client_id, &p.location_id))
            .ok_or(ApiError::NotFound)?;
        drop(db);
        let body = body_bytes(body)?;
        let map = fields::parse_object(&body);
        if let Ok(map) = &map {
            if let Some(l) = map.get("locationID").and_then(Value::as_str) {
                if !caller.sees(&current.client_id, l) {
                    return Err(ApiError::Forbidden(
                        "The locationID is outside this partner's scope.".into(),
                    ));
                }
            }
        }
        fields::require_json(&headers, BodyKind::MergePatch)?;
        let mut f = Fields::new(map?);
        f.read_only(&[READ_ONLY, &["clientID"]].concat());
        let patch = patch_from(&mut f);
        let shape_errors = f.finish();
        if shape_errors.iter().any(|e| e.code == fields::WRONG_TYPE) {
            fields::check(shape_errors.clone())?;
        }
        let expected = if_match(&headers)?;
        let key = idempotency::key_from(&headers)?;
        let idem = key.clone().map(|k| {
            Idempotency::new(
                caller.partner_id,
                "PATCH",
                format!("/v1/patients/{id}"),
                k,
                &body,
            )
        });
        Ok((caller, id, patch, shape_errors, expected, key, idem))
    }
    .await;
    match prepared {
        Ok((caller, id, patch, shape_errors, expected, key, idem)) => {
            let command = Update {
                caller,
                id,
                patch,
                shape_errors,
                expected,
                key,
            };
            execute(&app, idem, command).await
        }
        Err(e) => e.into_response(),
    }
}

struct Update {
    caller: Caller,
    id: Uuid,
    patch: PatientPatch,
    shape_errors: Vec<FieldError>,
    expected: Option<i64>,
    key: Option<String>,
}

impl Attempt for Update {
    fn attempt<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
    ) -> impl std::future::Future<Output = Result<Answer, TxError>> + Send + 'a {
        async move {
            let Update {
                caller,
                id,
                patch,
                shape_errors,
                expected,
                key,
            } = self;
            let id = *id;
            let meta = CommandMeta::new(
                Actor::Partner {
                    id: caller.partner_id,
                },
                key.clone(),
            );
            let (state, loaded) = load_patient(tx, id)
                .await?
                .filter(|(p, _)| caller.sees(&p.client_id, &p.location_id))
                .ok_or(ApiError::NotFound)?;
            if expected.is_some_and(|v| v != state.version) {
                return Err(ApiError::PreconditionFailed.into());
            }
            let new_location = match &patch.location_id {
                Patch::Set(l) => Some(l.as_str()),
                _ => None,
            };
            if new_location.is_some_and(|l| !caller.sees(&state.client_id, l)) {
                return Err(ApiError::Forbidden(
                    "The locationID is outside this partner's scope.".into(),
                )
                .into());
            }
            let new_external = match &patch.external_patient_id {
                Patch::Set(x) => Some(x.as_str()),
                _ => None,
            };
            let new_email = match &patch.email {
                Patch::Set(e) => Some(e.as_str()),
                _ => None,
            };
            let ctx = context(
                tx,
                Some(&state.client_id),
                new_location,
                new_external,
                new_email,
                Some(state.id),
            )
            .await?;
            let decision = match patient::update(&state, patch.clone(), &ctx) {
                Ok(d) => d,
                Err(PatientRejection::DuplicateExternalId { existing }) if shape_errors.is_empty() => {
                    return Err(duplicate(tx, caller, existing).await?.into())
                }
                Err(PatientRejection::DuplicateExternalId { .. }) => {
                    return Err(ApiError::unprocessable(shape_errors.clone()).into())
                }
                Err(PatientRejection::Invalid(errors)) => {
                    let mut all = shape_errors.clone();
                    all.extend(errors);
                    return Err(ApiError::unprocessable(all).into());
                }
            };
            fields::check(shape_errors.clone())?;
            let mut token = ConsistencyToken::default();
            let mut new_state = state.clone();
            let mut updated_at = loaded.updated_at;
            if let Some(event) = &decision.event {
                let version = state.version + 1;
                store::append(tx, &meta, &[Pending::new(id, version, event)]).await?;
                if let PatientEvent::PatientUpdated(u) = event {
                    if let Some(x) = &u.changes.external_patient_id {
                        tx.execute(
                            "DELETE FROM patient_external_ids WHERE patient_id = $1",
                            &[&id],
                        )
                        .await?;
                        if let Some(x) = x {
                            tx.execute(
                            "INSERT INTO patient_external_ids (client_id, external_patient_id, patient_id) VALUES ($1, $2, $3)",
                            &[&state.client_id, x, &id],
                        )
                        .await
                        .map_err(retry_on("patient_external_ids_pkey"))?;
                        }
                    }
                }
                new_state = patient::apply(Some(state), event).expect("update keeps state");
                updated_at = meta.occurred_at;
            }
            token.0.push((id, new_state.version));
            let mut status = account_status(tx, id).await?;
            if let Some(email) = &decision.open_account {
                let (acct, s) = open_account(tx, &meta, id, email).await?;
                token.0.push((acct.stream_id, acct.version));
                status = Some(s.to_string());
            }
            let view = PatientView::from_state(
                &new_state,
                status.as_deref(),
                loaded.created_at,
                updated_at,
            );
            Ok(Answer::json(
                StatusCode::OK,
                &body_with_warnings(&view, &decision.warnings),
                write_headers(&view, &token, false),
            ))
        }
    }
}
