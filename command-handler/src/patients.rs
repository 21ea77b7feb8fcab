//! Patient commands: `POST /v1/patients` and `PATCH /v1/patients/{id}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use contract::caller::{authenticate, Caller};
use contract::consistency::ConsistencyToken;
use contract::fields::{self, BodyKind, Fields};
use contract::problem::ApiError;
use contract::problem::Problem;
use contract::views::{AddressSchema, PatientView, SexSchema, WarningSchema};
use deadpool_postgres::{GenericClient, Transaction};
use domain::access::{Actor, Permission};
use domain::account::{self, AccountEvent};
use domain::patch::Patch;
use domain::patient::{
    self, AddressPatch, Context, Patient, PatientDraft, PatientEvent, PatientPatch,
    PatientRejection,
};
use domain::validation::FieldError;
use platform::db::Cached;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::command::{begin_create, body_bytes, execute, if_match, retry_on, Attempt, TxError};
use crate::idempotency::{Answer, Idempotency};
use crate::store::{self, CommandMeta, Pending};
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

/// The headers of a successful write.
fn write_headers(
    view: &PatientView,
    token: &ConsistencyToken,
    location: bool,
) -> Vec<(String, String)> {
    let mut h = vec![
        ("etag".to_string(), view.etag()),
        (contract::consistency::HEADER.to_string(), token.encode()),
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

// Describes the body in the OpenAPI document; the handler reads the body
// field by field (`draft_from`), so that every bad field is named at once.
/// The body of `POST /v1/patients`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "externalPatientID": "MRN-1001", "clientID": "C1", "locationID": "L1",
    "firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1990-12-10",
    "sex": "female", "email": "ada@example.org", "phone": "+15555550100",
    "address": {"line1": "12 St James's Square", "city": "London", "postalCode": "SW1Y 4LB", "country": "GB"}
}))]
pub struct NewPatient {
    /// The partner's identifier for the patient: 1-64 visible ASCII
    /// characters, unique within the client (a second create answers 409).
    #[serde(rename = "externalPatientID", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub external_patient_id: Option<String>,
    /// The lab client, within the caller's scope.
    #[serde(rename = "clientID")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub client_id: String,
    /// A location of that client, within the caller's scope.
    #[serde(rename = "locationID")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: String,
    /// Given name (1-100 characters).
    #[schema(max_length = 100)]
    pub first_name: String,
    /// Family name (1-100 characters).
    #[schema(max_length = 100)]
    pub last_name: String,
    /// Date of birth, `YYYY-MM-DD`, from 1900-01-01 to today.
    pub date_of_birth: chrono::NaiveDate,
    /// Administrative sex.
    pub sex: SexSchema,
    /// The patient's email. A valid address opens a portal account and sends
    /// an invitation; an invalid one is dropped with the warning
    /// `invalid_email`; one that is another account's login is stored with
    /// the warning `email_in_use`. The patient is created in every case.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 254)]
    pub email: Option<String>,
    /// Phone number: up to 32 characters of digits, spaces and `+ - ( ) .`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 32)]
    pub phone: Option<String>,
    /// Postal address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = AddressSchema)]
    pub address: Option<AddressSchema>,
}

// Describes the body in the OpenAPI document (read by `patch_from`).
/// The body of `PATCH /v1/patients/{patientID}`: a JSON merge patch (RFC
/// 7396). Absent fields stay as they are; `null` removes a removable field.
/// `clientID`, `patientID`, `version`, `account`, `createdAt` and `updatedAt`
/// cannot be set (422).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"phone": "+15555550100", "address": {"city": "London", "country": "GB"}}))]
pub struct PatientMergePatch {
    /// New given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 100)]
    pub first_name: Option<String>,
    /// New family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 100)]
    pub last_name: Option<String>,
    /// New date of birth.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = chrono::NaiveDate)]
    pub date_of_birth: Option<chrono::NaiveDate>,
    /// New sex.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = SexSchema)]
    pub sex: Option<SexSchema>,
    /// New email, or `null` to remove it. A first valid email opens the
    /// portal account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// New phone, or `null` to remove it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Parts of the address to change (each part `null` to remove it), or
    /// `null` to remove the whole address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<AddressMergePatch>,
    /// Another location of the patient's client, within the caller's scope.
    #[serde(rename = "locationID", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: Option<String>,
    /// A new external id (unique within the client, 409 otherwise), or
    /// `null` to remove it.
    #[serde(rename = "externalPatientID", skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub external_patient_id: Option<String>,
}

/// The address part of a merge patch.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressMergePatch {
    /// First line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    /// Second line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State or region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// The answer to a successful create or update: the patient as it now
/// stands, with any warnings.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatientWritten {
    /// The patient.
    #[serde(flatten)]
    pub patient: PatientView,
    /// Non-fatal remarks (only present when there are some).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<WarningSchema>,
}

/// Looks up what a patient decision needs, in one statement (one round
/// trip instead of up to five).
async fn context(
    tx: &impl GenericClient,
    client_id: Option<&str>,
    location_id: Option<&str>,
    external_id: Option<&str>,
    email: Option<&str>,
    patient_id: Option<Uuid>,
) -> Result<Context, TxError> {
    let login = email
        .filter(|e| patient::is_valid_email(e))
        .map(patient::login_key);
    let row = tx
        .query_one_cached(
            "SELECT \
               $1::text IS NOT NULL AND EXISTS (SELECT 1 FROM clients WHERE client_id = $1), \
               (SELECT client_id FROM locations WHERE location_id = $2::text), \
               (SELECT patient_id FROM patient_external_ids \
                 WHERE client_id = $1 AND external_patient_id = $3::text), \
               $4::text IS NOT NULL AND EXISTS (SELECT 1 FROM accounts \
                 WHERE login = $4 AND patient_id IS DISTINCT FROM $5::uuid), \
               $5::uuid IS NOT NULL AND EXISTS (SELECT 1 FROM accounts WHERE patient_id = $5)",
            &[&client_id, &location_id, &external_id, &login, &patient_id],
        )
        .await?;
    Ok(Context {
        today: chrono::Utc::now().date_naive(),
        client_exists: row.get(0),
        location_client: row.get(1),
        external_id_holder: row.get(2),
        email_in_use: row.get(3),
        has_account: row.get(4),
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
    tx.execute_cached(
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
        .query_opt_cached(
            "SELECT status FROM accounts WHERE patient_id = $1",
            &[&patient_id],
        )
        .await?
        .map(|r| r.get(0)))
}

/// `POST /v1/patients`.
#[utoipa::path(
    post,
    path = "/v1/patients",
    operation_id = "createPatient",
    tag = "patients",
    summary = "Create a patient",
    description = "Registers a patient for a client and location in the caller's scope. \
        A (`clientID`, `externalPatientID`) that already exists creates nothing and answers 409 \
        `duplicate-patient`. A valid email opens a portal account (`account.status` `invited`); \
        an invalid or already used email never blocks the create but adds a warning. \
        Requires `patients:create`.",
    request_body(content = NewPatient, content_type = "application/json"),
    security(("bearer" = []), ("oauth2" = ["patients:create"])),
    responses(
        (status = 201, description = "Created: the patient, with `warnings` about the email when there are some.", body = PatientWritten,
            headers(
                ("Location" = String, description = "`/v1/patients/{patientID}`"),
                ("ETag" = String, description = "The version in quotes: `\"1\"`."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type (`errors` names each one, code `wrong_type`).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `patients:create`, or the body's `clientID`/`locationID` is outside its scope.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`duplicate-patient`: the client already has a patient with this `externalPatientID` (`existingPatientID` names it when it is in scope); or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/duplicate-patient", "title": "Conflict", "status": 409, "detail": "A patient with this externalPatientID already exists for this client.", "existingPatientID": "0b5c3f0e-9a55-4b8e-8d43-5b0f1f2ad0a1"})),
        (status = 415, description = "The body is not sent as `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors`: missing, malformed, unknown or read-only fields, a location that does not exist or belongs to another client, a malformed `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
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
            begin_create(&app, &headers, body, Permission::PatientsCreate).await?;
        f.read_only(READ_ONLY);
        let draft = draft_from(&mut f);
        let shape_errors = f.finish();
        fields::reject_wrong_types(&shape_errors)?;
        let idem = Idempotency::from_request(
            &headers,
            caller.partner_id,
            "POST",
            "/v1/patients".into(),
            &body,
        )?;
        let key = idem.as_ref().map(|i| i.key.clone());
        Ok::<_, ApiError>((caller, draft, shape_errors, key, idem))
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
    async fn attempt<'a>(&'a self, tx: &'a Transaction<'a>) -> Result<Answer, TxError> {
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
        let event = decision.event.expect("a registration always has an event");
        let PatientEvent::PatientRegistered(registered) = &event else {
            unreachable!("register yields PatientRegistered")
        };
        let pending = Pending::new(patient_id, 1, &event);
        store::append(tx, &meta, std::slice::from_ref(&pending)).await?;
        if let Some(x) = &registered.external_patient_id {
            tx.execute_cached(
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

/// `PATCH /v1/patients/{patientID}`.
#[utoipa::path(
    patch,
    path = "/v1/patients/{patientID}",
    operation_id = "updatePatient",
    tag = "patients",
    summary = "Change a patient",
    description = "A JSON merge patch (RFC 7396) of the patient's details, its `locationID` \
        (another location of the same client, in scope) and its `externalPatientID`. \
        With `If-Match`, the change applies only to that version (412 otherwise); without it, \
        to the current version. A patch that changes nothing answers 200 with the unchanged \
        version. Requires `patients:update`.",
    params(
        ("patientID" = uuid::Uuid, Path, description = "The patient's id."),
    ),
    request_body(
        description = "A merge patch. `application/json` is accepted too.",
        content(
            (PatientMergePatch = "application/merge-patch+json"),
            (PatientMergePatch = "application/json"),
        )
    ),
    security(("bearer" = []), ("oauth2" = ["patients:update"])),
    responses(
        (status = 200, description = "The patient as it now stands, with `warnings` about the email when there are some.", body = PatientWritten,
            headers(
                ("ETag" = String, description = "The new version in quotes."),
                ("Consistency-Token" = String, description = "Send it with a read to see at least this write."),
            )),
        (status = 400, description = "The body is not a JSON object, or a value has the wrong JSON type.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `patients:update`, or the new `locationID` is outside its scope.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or the patient is outside the caller's scope (the same answer).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`duplicate-patient`: another patient of the client has the new `externalPatientID`; or `request-in-progress`: a request with this `Idempotency-Key` is still running.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`stale-version`: `If-Match` names a version that is no longer current; nothing changed.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/stale-version", "title": "Precondition Failed", "status": 412, "detail": "The record changed since the version in If-Match."})),
        (status = 415, description = "The body is not sent as `application/merge-patch+json` or `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, every one listed in `errors` (including `clientID` and other read-only fields, and a location of another client), a malformed `If-Match` or `Idempotency-Key`, or a key already used with another body.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(partner))]
pub async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = async {
        let caller = authenticate(&headers, &app.keys, &app.partners).await?;
        tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
        caller.require(Permission::PatientsUpdate)?;
        let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
        let db = app.write.get().await?;
        let (current, _) = load_patient(&db, id)
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
        fields::reject_wrong_types(&shape_errors)?;
        let expected = if_match(&headers)?;
        let idem = Idempotency::from_request(
            &headers,
            caller.partner_id,
            "PATCH",
            format!("/v1/patients/{id}"),
            &body,
        )?;
        let key = idem.as_ref().map(|i| i.key.clone());
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
    async fn attempt<'a>(&'a self, tx: &'a Transaction<'a>) -> Result<Answer, TxError> {
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
                    tx.execute_cached(
                        "DELETE FROM patient_external_ids WHERE patient_id = $1",
                        &[&id],
                    )
                    .await?;
                    if let Some(x) = x {
                        tx.execute_cached(
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
        let view =
            PatientView::from_state(&new_state, status.as_deref(), loaded.created_at, updated_at);
        Ok(Answer::json(
            StatusCode::OK,
            &body_with_warnings(&view, &decision.warnings),
            write_headers(&view, &token, false),
        ))
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

    /// Every field the OpenAPI document names for a create is one the
    /// handler reads.
    #[test]
    fn documented_create_fields_are_read() {
        let body = NewPatient {
            external_patient_id: text("MRN-1"),
            client_id: "C1".into(),
            location_id: "L1".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            date_of_birth: chrono::NaiveDate::from_ymd_opt(1990, 12, 10).unwrap(),
            sex: SexSchema::Female,
            email: text("ada@example.org"),
            phone: text("+15555550100"),
            address: Some(AddressSchema {
                line1: text("a"),
                line2: text("b"),
                city: text("c"),
                state: text("d"),
                postal_code: text("e"),
                country: text("GB"),
            }),
        };
        let mut f = fields_of(&body);
        f.read_only(READ_ONLY);
        let draft = draft_from(&mut f);
        assert_eq!(f.finish(), vec![]);
        assert_eq!(draft.sex.as_deref(), Some("female"));
        assert_eq!(draft.date_of_birth.as_deref(), Some("1990-12-10"));
    }

    /// Every field the OpenAPI document names for a merge patch is one the
    /// handler reads.
    #[test]
    fn documented_patch_fields_are_read() {
        let body = PatientMergePatch {
            first_name: text("Ada"),
            last_name: text("King"),
            date_of_birth: chrono::NaiveDate::from_ymd_opt(1990, 12, 10),
            sex: Some(SexSchema::Other),
            email: text("ada@example.org"),
            phone: text("1"),
            address: Some(AddressMergePatch {
                line1: text("a"),
                line2: text("b"),
                city: text("c"),
                state: text("d"),
                postal_code: text("e"),
                country: text("GB"),
            }),
            location_id: text("L2"),
            external_patient_id: text("MRN-2"),
        };
        let mut f = fields_of(&body);
        f.read_only(&[READ_ONLY, &["clientID"]].concat());
        let patch = patch_from(&mut f);
        assert_eq!(f.finish(), vec![]);
        assert_eq!(patch.sex, Patch::Set("other".to_string()));
    }
}
