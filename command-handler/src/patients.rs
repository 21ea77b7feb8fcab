//! Patient commands: [`RegisterPatient`] (`POST /v1/patients`) and
//! [`UpdatePatient`] (`PATCH /v1/patients/{patientID}`).

use contract::caller::Caller;
use contract::consistency::ConsistencyToken;
use contract::fields::{BodyKind, Fields};
use contract::problem::ApiError;
use contract::views::PatientView;
use deadpool_postgres::GenericClient;
use domain::access::Permission;
use domain::account;
use domain::patch::Patch;
use domain::patient::{
    self, AddressPatch, Context, Patient, PatientDraft, PatientEvent, PatientPatch,
    PatientRejection,
};
use domain::validation::Warning;
use platform::db::Cached;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::idempotency::Answer;
use crate::pipeline::{
    body_in_scope, load, write_answer, Command, Current, Cx, Decision, Endpoint, New, Refusal,
    Render, Stored,
};
use crate::store::{Row, Writes};

/// Fields a partner may never change on a patient: those it may never set,
/// and (last) the `clientID` a registration sets.
const READ_ONLY_ON_UPDATE: &[&str] = &[
    "patientID",
    "version",
    "account",
    "createdAt",
    "updatedAt",
    "warnings",
    "clientID",
];

/// Fields a partner may never set on a patient.
const READ_ONLY: &[&str] = READ_ONLY_ON_UPDATE.split_last().unwrap().1;

/// Registers a patient.
#[derive(Debug, Clone)]
pub struct RegisterPatient {
    /// The patient as sent.
    pub draft: PatientDraft,
}

/// Changes a patient (a JSON merge patch).
#[derive(Debug, Clone)]
pub struct UpdatePatient {
    /// The changes as sent.
    pub patch: PatientPatch,
}

/// A patient as a write leaves it: the answer's content.
pub struct PatientWrite {
    view: PatientView,
    warnings: Vec<Warning>,
    token: ConsistencyToken,
    created: bool,
}

impl Render for PatientWrite {
    fn render(&self) -> Answer {
        let mut body = serde_json::to_value(&self.view).expect("view serializes");
        if !self.warnings.is_empty() {
            body["warnings"] = json!(self.warnings);
        }
        let created = self
            .created
            .then(|| format!("/v1/patients/{}", self.view.patient_id));
        write_answer(&body, self.view.etag(), &self.token, created)
    }
}

impl Endpoint for RegisterPatient {
    fn permission() -> Permission {
        Permission::PatientsCreate
    }
    const BODY: Option<BodyKind> = Some(BodyKind::Json);
    const READ_ONLY: &'static [&'static str] = READ_ONLY;
    fn parse(f: &mut Fields) -> Self {
        RegisterPatient {
            draft: draft_from(f),
        }
    }
    fn check_scope(caller: &Caller, _: &(), body: &Map<String, Value>) -> Result<(), ApiError> {
        body_in_scope(caller, body)
    }
}

impl Command for RegisterPatient {
    type Target = New;
    type Output = PatientWrite;

    async fn decide(&self, cx: &Cx<'_>, _: &()) -> Result<Decision<PatientWrite>, Refusal> {
        let draft = &self.draft;
        let (ctx, _) = context(
            cx.tx,
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
            Err(e) => return Err(refusal(cx, e).await),
        };
        let event = decision.event.expect("a registration always has an event");
        let PatientEvent::PatientRegistered(registered) = &event else {
            unreachable!("register yields PatientRegistered")
        };
        let mut writes = Writes::default();
        writes.event(patient_id, 1, &event);
        if let Some(x) = &registered.external_patient_id {
            writes.rows.push(Row::ExternalPatientId {
                client_id: registered.client_id.clone(),
                external_id: x.clone(),
                patient_id,
            });
        }
        let mut token = ConsistencyToken(vec![(patient_id, 1)]);
        let mut status = None;
        if let Some(email) = &decision.open_account {
            let (stream, version) = open_account(&mut writes, patient_id, email);
            token.name(stream, version);
            status = Some("invited");
        }
        let state = patient::apply(None, &event).expect("registration creates state");
        let at = cx.meta.occurred_at;
        Ok(Decision {
            writes,
            output: PatientWrite {
                view: PatientView::from_state(&state, status, at, at),
                warnings: decision.warnings,
                token,
                created: true,
            },
        })
    }
}

impl Endpoint for UpdatePatient {
    fn permission() -> Permission {
        Permission::PatientsUpdate
    }
    const BODY: Option<BodyKind> = Some(BodyKind::MergePatch);
    const READ_ONLY: &'static [&'static str] = READ_ONLY_ON_UPDATE;
    fn parse(f: &mut Fields) -> Self {
        UpdatePatient {
            patch: patch_from(f),
        }
    }
    fn check_scope(
        caller: &Caller,
        current: &Current<Patient>,
        body: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        match body.get("locationID").and_then(Value::as_str) {
            Some(l) if !caller.sees(&current.state.client_id, l) => Err(ApiError::Forbidden(
                "The locationID is outside this partner's scope.".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl Command for UpdatePatient {
    type Target = Stored<Patient>;
    type Output = PatientWrite;

    async fn decide(
        &self,
        cx: &Cx<'_>,
        current: &Current<Patient>,
    ) -> Result<Decision<PatientWrite>, Refusal> {
        let state = &current.state;
        let patch = &self.patch;
        let set = |p: &Patch<String>| match p {
            Patch::Set(v) => Some(v.clone()),
            _ => None,
        };
        let new_location = set(&patch.location_id);
        if new_location
            .as_deref()
            .is_some_and(|l| !cx.caller.sees(&state.client_id, l))
        {
            return Err(Refusal::Final(ApiError::Forbidden(
                "The locationID is outside this partner's scope.".into(),
            )));
        }
        let (ctx, account) = context(
            cx.tx,
            Some(&state.client_id),
            new_location.as_deref(),
            set(&patch.external_patient_id).as_deref(),
            set(&patch.email).as_deref(),
            Some(state.id),
        )
        .await?;
        let decision = match patient::update(state, patch.clone(), &ctx) {
            Ok(d) => d,
            Err(e) => return Err(refusal(cx, e).await),
        };
        let mut writes = Writes::default();
        let mut new_state = state.clone();
        let mut updated_at = current.updated_at;
        if let Some(event) = &decision.event {
            writes.event(state.id, state.version + 1, event);
            if let PatientEvent::PatientUpdated(u) = event {
                if let Some(x) = &u.changes.external_patient_id {
                    writes.rows.push(Row::ReleaseExternalPatientId {
                        patient_id: state.id,
                    });
                    if let Some(x) = x {
                        writes.rows.push(Row::ExternalPatientId {
                            client_id: state.client_id.clone(),
                            external_id: x.clone(),
                            patient_id: state.id,
                        });
                    }
                }
            }
            new_state = patient::apply(Some(state.clone()), event).expect("update keeps state");
            updated_at = cx.meta.occurred_at;
        }
        let mut token = ConsistencyToken(vec![(state.id, new_state.version)]);
        let mut status = account.as_ref().map(|a| {
            token.name(a.id, a.version);
            a.status.clone()
        });
        if let Some(email) = &decision.open_account {
            let (stream, version) = open_account(&mut writes, state.id, email);
            token.name(stream, version);
            status = Some("invited".to_string());
        }
        if let (Some(email), Some(account)) = (&decision.new_login, &account) {
            if let Some((stream, version)) =
                request_login_change(cx, &mut writes, account.id, email).await?
            {
                token.name(stream, version);
            }
        }
        Ok(Decision {
            writes,
            output: PatientWrite {
                view: PatientView::from_state(
                    &new_state,
                    status.as_deref(),
                    current.created_at,
                    updated_at,
                ),
                warnings: decision.warnings,
                token,
                created: false,
            },
        })
    }
}

/// A patient decision's refusal. A duplicate names the holder only when
/// the caller may see it.
async fn refusal(cx: &Cx<'_>, e: PatientRejection) -> Refusal {
    match e {
        PatientRejection::Invalid(errors) => Refusal::Invalid(errors),
        PatientRejection::DuplicateExternalId { existing } => {
            let holder = match load::<Patient>(cx.tx, existing).await {
                Ok(holder) => holder,
                Err(e) => return e.into(),
            };
            let mut extra = Map::new();
            if holder.is_some_and(|h| cx.caller.sees(&h.state.client_id, &h.state.location_id)) {
                extra.insert("existingPatientID".into(), json!(existing));
            }
            Refusal::Rejected(ApiError::Conflict {
                slug: "duplicate-patient",
                detail: "A patient with this externalPatientID already exists for this client."
                    .into(),
                extra,
            })
        }
    }
}

/// Adds a new portal account for `email` to a decision's writes; answers
/// its stream and version for the consistency token.
fn open_account(writes: &mut Writes, patient_id: Uuid, email: &str) -> (Uuid, i64) {
    let account_id = Uuid::new_v4();
    writes.event(
        account_id,
        1,
        &account::open(account_id, patient_id, email.to_string()),
    );
    writes.rows.push(Row::Account {
        account_id,
        patient_id,
        login: patient::login_key(email),
    });
    (account_id, 1)
}

/// Asks account `id` to confirm a new login, or sends its invitation to
/// the new address instead, when `account::request_login_change` says so;
/// answers its stream and version for the consistency token.
async fn request_login_change(
    cx: &Cx<'_>,
    writes: &mut Writes,
    id: Uuid,
    email: &str,
) -> Result<Option<(Uuid, i64)>, Refusal> {
    let loaded = crate::store::load::<account::AccountEvent>(cx.tx, id).await?;
    let Some(account) = loaded.and_then(|l| account::replay(&l.events)) else {
        return Ok(None);
    };
    Ok(account::request_login_change(&account, email).map(|event| {
        writes.event(id, account.version + 1, &event);
        if let account::AccountEvent::InvitationRedirected(e) = &event {
            writes.rows.push(Row::AccountLogin {
                account_id: id,
                login: patient::login_key(&e.email),
                token_hash: None,
            });
        }
        (id, account.version + 1)
    }))
}

/// A patient's account as the write side has it.
struct AccountRow {
    /// Its stream.
    id: Uuid,
    /// Its stream's version: the answer's consistency token names it, so
    /// that a read with the token shows the account as the answer did.
    version: i64,
    status: String,
}

/// Looks up what a patient decision needs, and the account of the patient
/// `patient_id` names, in one statement (one round trip instead of up to
/// six).
async fn context(
    tx: &impl GenericClient,
    client_id: Option<&str>,
    location_id: Option<&str>,
    external_id: Option<&str>,
    email: Option<&str>,
    patient_id: Option<Uuid>,
) -> Result<(Context, Option<AccountRow>), Refusal> {
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
               a.account_id, a.version, a.status \
             FROM (VALUES (1)) AS one LEFT JOIN accounts a ON a.patient_id = $5::uuid",
            &[&client_id, &location_id, &external_id, &login, &patient_id],
        )
        .await?;
    let account = row.get::<_, Option<Uuid>>(4).map(|id| AccountRow {
        id,
        version: row.get(5),
        status: row.get(6),
    });
    let ctx = Context {
        today: chrono::Utc::now().date_naive(),
        client_exists: row.get(0),
        location_client: row.get(1),
        external_id_holder: row.get(2),
        email_in_use: row.get(3),
        has_account: account.is_some(),
    };
    Ok((ctx, account))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{AddressMergePatch, NewPatient, PatientMergePatch};
    use contract::views::{AddressSchema, SexSchema};
    use serde::Serialize;

    fn fields_of<C: Endpoint>(body: &impl Serialize) -> Fields {
        let mut f = match serde_json::to_value(body).unwrap() {
            Value::Object(map) => Fields::new(map),
            other => panic!("not an object: {other}"),
        };
        f.read_only(C::READ_ONLY);
        f
    }

    fn text(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    /// Every field the OpenAPI document names for a create is one the
    /// command reads.
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
        let mut f = fields_of::<RegisterPatient>(&body);
        let command = RegisterPatient::parse(&mut f);
        assert_eq!(f.finish(), vec![]);
        assert_eq!(command.draft.sex.as_deref(), Some("female"));
        assert_eq!(command.draft.date_of_birth.as_deref(), Some("1990-12-10"));
    }

    /// Every field the OpenAPI document names for a merge patch is one the
    /// command reads.
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
        let mut f = fields_of::<UpdatePatient>(&body);
        let command = UpdatePatient::parse(&mut f);
        assert_eq!(f.finish(), vec![]);
        assert_eq!(command.patch.sex, Patch::Set("other".to_string()));
    }
}
