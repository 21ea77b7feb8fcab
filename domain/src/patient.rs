//! The patient aggregate.
//!
//! A patient is registered once per (`clientID`, `externalPatientID`), keeps
//! its client forever, and may move between the client's locations. An email
//! that parses as an address opens a portal account (in the account stream);
//! an invalid one is dropped with a warning, never refused.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DomainEvent, StreamKind};
use crate::patch::{double_option, Patch};
use crate::validation::{check_external_id, check_reference_id, check_text, FieldError, Warning};

/// Longest first or last name accepted.
pub const MAX_NAME: usize = 100;
/// Longest email accepted (RFC 5321 path limit).
pub const MAX_EMAIL: usize = 254;
/// Longest address line accepted.
pub const MAX_ADDRESS_LINE: usize = 200;
/// Earliest date of birth accepted.
pub const MIN_DATE_OF_BIRTH: NaiveDate = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// A patient's administrative sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other.
    Other,
    /// Unknown.
    Unknown,
}

impl Sex {
    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Sex> {
        match s {
            "female" => Some(Sex::Female),
            "male" => Some(Sex::Male),
            "other" => Some(Sex::Other),
            "unknown" => Some(Sex::Unknown),
            _ => None,
        }
    }

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Female => "female",
            Sex::Male => "male",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }
}

/// A postal address; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// First line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    /// Second line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// State or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl Address {
    /// The address parts by their JSON names, for validation and patching.
    fn parts_mut(&mut self) -> [(&'static str, &mut Option<String>); 6] {
        [
            ("line1", &mut self.line1),
            ("line2", &mut self.line2),
            ("city", &mut self.city),
            ("state", &mut self.state),
            ("postalCode", &mut self.postal_code),
            ("country", &mut self.country),
        ]
    }

    fn validate(&mut self, errors: &mut Vec<FieldError>) {
        for (name, value) in self.parts_mut() {
            let Some(v) = value.as_deref() else { continue };
            let field = format!("address.{name}");
            if name == "country" {
                if !(v.len() == 2 && v.bytes().all(|b| b.is_ascii_uppercase())) {
                    errors.push(FieldError::new(
                        field,
                        "invalid",
                        "must be an ISO 3166-1 alpha-2 code such as US",
                    ));
                }
            } else {
                check_text(&field, v, MAX_ADDRESS_LINE, errors);
            }
        }
    }

    fn is_empty(&self) -> bool {
        *self == Address::default()
    }
}

/// The address part of a merge patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPatch {
    /// First line.
    pub line1: Patch<String>,
    /// Second line.
    pub line2: Patch<String>,
    /// City.
    pub city: Patch<String>,
    /// State or region.
    pub state: Patch<String>,
    /// Postal code.
    pub postal_code: Patch<String>,
    /// Country code.
    pub country: Patch<String>,
}

impl AddressPatch {
    /// Merges this patch into `base` (RFC 7396).
    fn merge_into(self, mut base: Address) -> Address {
        let patches = [
            self.line1,
            self.line2,
            self.city,
            self.state,
            self.postal_code,
            self.country,
        ];
        for ((_, slot), patch) in base.parts_mut().into_iter().zip(patches) {
            match patch {
                Patch::Absent => {}
                Patch::Null => *slot = None,
                Patch::Set(v) => *slot = Some(v),
            }
        }
        base
    }
}

/// The state of a registered patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    /// Internal id.
    pub id: Uuid,
    /// The lab client the patient belongs to; never changes.
    pub client_id: String,
    /// The client's location the patient is attached to.
    pub location_id: String,
    /// The partner's identifier for the patient, unique within the client.
    pub external_patient_id: Option<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// Administrative sex.
    pub sex: Sex,
    /// A valid email address, if one was given.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Postal address.
    pub address: Option<Address>,
    /// Stream version: 1 after registration, +1 per change.
    pub version: i64,
}

/// The events of a patient stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PatientEvent {
    /// A patient was registered.
    PatientRegistered(PatientRegistered),
    /// Some of a patient's details changed.
    PatientUpdated(PatientUpdated),
}

impl DomainEvent for PatientEvent {
    const STREAM: StreamKind = StreamKind::Patient;
    fn event_type(&self) -> &'static str {
        match self {
            PatientEvent::PatientRegistered(_) => "PatientRegistered",
            PatientEvent::PatientUpdated(_) => "PatientUpdated",
        }
    }
}

/// Data of `PatientRegistered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientRegistered {
    /// Internal id.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// Client.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Location.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// External id.
    #[serde(
        rename = "externalPatientID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_patient_id: Option<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// Administrative sex.
    pub sex: Sex,
    /// Valid email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

/// Data of `PatientUpdated`: the patient id and only the fields that changed,
/// with their new values (`null` where a field was removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientUpdated {
    /// Internal id.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// The changed fields.
    pub changes: PatientChanges,
}

/// The changed fields of a patient; `None` means unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientChanges {
    /// New given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// New family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// New date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<NaiveDate>,
    /// New sex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// New location.
    #[serde(
        rename = "locationID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub location_id: Option<String>,
    /// New or removed external id.
    #[serde(
        rename = "externalPatientID",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub external_patient_id: Option<Option<String>>,
    /// New or removed email.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub email: Option<Option<String>>,
    /// New or removed phone.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub phone: Option<Option<String>>,
    /// New or removed address (the whole address after the merge).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub address: Option<Option<Address>>,
}

impl PatientChanges {
    fn is_empty(&self) -> bool {
        *self == PatientChanges::default()
    }
}

/// Folds one event into the state. Total: an event that does not fit the
/// state (an update before registration) leaves the state as it is.
pub fn apply(state: Option<Patient>, event: &PatientEvent) -> Option<Patient> {
    match event {
        PatientEvent::PatientRegistered(e) => Some(Patient {
            id: e.patient_id,
            client_id: e.client_id.clone(),
            location_id: e.location_id.clone(),
            external_patient_id: e.external_patient_id.clone(),
            first_name: e.first_name.clone(),
            last_name: e.last_name.clone(),
            date_of_birth: e.date_of_birth,
            sex: e.sex,
            email: e.email.clone(),
            phone: e.phone.clone(),
            address: e.address.clone(),
            version: 1,
        }),
        PatientEvent::PatientUpdated(e) => state.map(|mut p| {
            let c = &e.changes;
            if let Some(v) = &c.first_name {
                p.first_name = v.clone();
            }
            if let Some(v) = &c.last_name {
                p.last_name = v.clone();
            }
            if let Some(v) = c.date_of_birth {
                p.date_of_birth = v;
            }
            if let Some(v) = c.sex {
                p.sex = v;
            }
            if let Some(v) = &c.location_id {
                p.location_id = v.clone();
            }
            if let Some(v) = &c.external_patient_id {
                p.external_patient_id = v.clone();
            }
            if let Some(v) = &c.email {
                p.email = v.clone();
            }
            if let Some(v) = &c.phone {
                p.phone = v.clone();
            }
            if let Some(v) = &c.address {
                p.address = v.clone();
            }
            p.version += 1;
            p
        }),
    }
}

/// Rebuilds a patient from its events in order.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a PatientEvent>) -> Option<Patient> {
    events.into_iter().fold(None, apply)
}

/// A registration request as the partner sent it, before validation. The
/// HTTP layer has already checked JSON types; every rule is checked here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientDraft {
    /// `externalPatientID`.
    pub external_patient_id: Option<String>,
    /// `clientID`.
    pub client_id: Option<String>,
    /// `locationID`.
    pub location_id: Option<String>,
    /// `firstName`.
    pub first_name: Option<String>,
    /// `lastName`.
    pub last_name: Option<String>,
    /// `dateOfBirth`, as sent.
    pub date_of_birth: Option<String>,
    /// `sex`, as sent.
    pub sex: Option<String>,
    /// `email`, as sent.
    pub email: Option<String>,
    /// `phone`.
    pub phone: Option<String>,
    /// `address`.
    pub address: Option<Address>,
}

/// A merge patch of a patient, as the partner sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientPatch {
    /// `firstName`.
    pub first_name: Patch<String>,
    /// `lastName`.
    pub last_name: Patch<String>,
    /// `dateOfBirth`.
    pub date_of_birth: Patch<String>,
    /// `sex`.
    pub sex: Patch<String>,
    /// `email`.
    pub email: Patch<String>,
    /// `phone`.
    pub phone: Patch<String>,
    /// `address`.
    pub address: Patch<AddressPatch>,
    /// `locationID`.
    pub location_id: Patch<String>,
    /// `externalPatientID`.
    pub external_patient_id: Patch<String>,
}

/// What a decision needs to know from outside, looked up by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Today's date in UTC (dates of birth may not be later).
    pub today: NaiveDate,
    /// Whether the (new) `clientID` names an existing client.
    pub client_exists: bool,
    /// The client owning the requested `locationID`, if that location exists.
    pub location_client: Option<String>,
    /// Whether the (new, valid) email is already some account's login.
    pub email_in_use: bool,
    /// The patient already holding the requested (`clientID`,
    /// `externalPatientID`), if any.
    pub external_id_holder: Option<Uuid>,
    /// Whether the patient already has a portal account.
    pub has_account: bool,
}

/// Why a patient command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientRejection {
    /// One or more fields are missing or invalid.
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    /// Another patient of the client already has this external id.
    #[error("duplicate externalPatientID")]
    DuplicateExternalId {
        /// The patient holding it.
        existing: Uuid,
    },
}

/// The outcome of an accepted patient command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The event to append; `None` when nothing changed.
    pub event: Option<PatientEvent>,
    /// An email to open a portal account for.
    pub open_account: Option<String>,
    /// A new valid email, unused by other accounts, for a patient with an
    /// account: its login changes only once the patient confirms it
    /// (`account::request_login_change`).
    pub new_login: Option<String>,
    /// Remarks for the partner (`invalid_email`, `email_in_use`).
    pub warnings: Vec<Warning>,
}

/// Whether `raw` is an email address the contract accepts: syntactically
/// valid per the `email_address` crate (RFC 5322 rules) with a domain part.
pub fn is_valid_email(raw: &str) -> bool {
    raw.len() <= MAX_EMAIL
        && email_address::EmailAddress::parse_with_options(
            raw,
            email_address::Options::default().without_display_text(),
        )
        .is_ok_and(|e| !e.domain().is_empty())
}

/// The login form of an email: addresses compare case-insensitively.
pub fn login_key(email: &str) -> String {
    email.to_lowercase()
}

/// Returns the email to keep (if any) and the warnings it caused.
fn judge_email(raw: Option<&str>, ctx: &Context) -> (Option<String>, Option<Warning>, bool) {
    match raw {
        None => (None, None, false),
        Some(e) if !is_valid_email(e) => (
            None,
            Some(Warning {
                field: "email".into(),
                code: "invalid_email",
            }),
            false,
        ),
        Some(e) if ctx.email_in_use => (
            Some(e.to_string()),
            Some(Warning {
                field: "email".into(),
                code: "email_in_use",
            }),
            false,
        ),
        Some(e) => (Some(e.to_string()), None, true),
    }
}

fn parse_date_of_birth(
    raw: &str,
    today: NaiveDate,
    errors: &mut Vec<FieldError>,
) -> Option<NaiveDate> {
    let strict = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let parsed = strict
        .then(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok())
        .flatten();
    match parsed {
        None => {
            errors.push(FieldError::new(
                "dateOfBirth",
                "invalid",
                "must be a date YYYY-MM-DD",
            ));
            None
        }
        Some(d) if d > today => {
            errors.push(FieldError::new(
                "dateOfBirth",
                "in_future",
                "must not be in the future",
            ));
            None
        }
        Some(d) if d < MIN_DATE_OF_BIRTH => {
            errors.push(FieldError::new(
                "dateOfBirth",
                "too_early",
                "must be 1900-01-01 or later",
            ));
            None
        }
        Some(d) => Some(d),
    }
}

fn parse_sex(raw: &str, errors: &mut Vec<FieldError>) -> Option<Sex> {
    let sex = Sex::parse(raw);
    if sex.is_none() {
        errors.push(FieldError::new(
            "sex",
            "invalid",
            "must be one of female, male, other, unknown",
        ));
    }
    sex
}

fn check_phone(raw: &str, errors: &mut Vec<FieldError>) {
    let ok = (1..=32).contains(&raw.len())
        && raw.bytes().any(|b| b.is_ascii_digit())
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b' ' | b'-' | b'(' | b')' | b'.'));
    if !ok {
        errors.push(FieldError::new(
            "phone",
            "invalid",
            "must be up to 32 characters of digits, spaces and + - ( ) .",
        ));
    }
}

/// A location that does not exist and one of another client are the same
/// error, so the answer reveals nothing about other clients.
fn check_location(client: &str, ctx: &Context, errors: &mut Vec<FieldError>) {
    if ctx.location_client.as_deref() != Some(client) {
        errors.push(FieldError::new(
            "locationID",
            "unknown_location",
            "no such location for this client",
        ));
    }
}

fn required<'a>(
    field: &str,
    value: &'a Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    if value.is_none() {
        errors.push(FieldError::required(field));
    }
    value.as_deref()
}

/// Decides a registration. `patient_id` is the id to give the new patient.
pub fn register(
    patient_id: Uuid,
    draft: PatientDraft,
    ctx: &Context,
) -> Result<Decision, PatientRejection> {
    let mut errors = Vec::new();
    let client = required("clientID", &draft.client_id, &mut errors);
    let location = required("locationID", &draft.location_id, &mut errors);
    let mut client_ok = false;
    if let Some(c) = client {
        let before = errors.len();
        check_reference_id("clientID", c, &mut errors);
        if errors.len() == before {
            if ctx.client_exists {
                client_ok = true;
            } else {
                errors.push(FieldError::new(
                    "clientID",
                    "unknown_client",
                    "no such client",
                ));
            }
        }
    }
    if let Some(l) = location {
        let before = errors.len();
        check_reference_id("locationID", l, &mut errors);
        if errors.len() == before && client_ok {
            check_location(client.unwrap_or_default(), ctx, &mut errors);
        }
    }
    if let Some(x) = &draft.external_patient_id {
        check_external_id("externalPatientID", x, &mut errors);
    }
    for (field, value) in [
        ("firstName", &draft.first_name),
        ("lastName", &draft.last_name),
    ] {
        if let Some(v) = required(field, value, &mut errors) {
            check_text(field, v, MAX_NAME, &mut errors);
        }
    }
    let dob = required("dateOfBirth", &draft.date_of_birth, &mut errors)
        .and_then(|d| parse_date_of_birth(d, ctx.today, &mut errors));
    let sex = required("sex", &draft.sex, &mut errors).and_then(|s| parse_sex(s, &mut errors));
    if let Some(p) = &draft.phone {
        check_phone(p, &mut errors);
    }
    let mut address = draft.address.clone();
    if let Some(a) = address.as_mut() {
        a.validate(&mut errors);
    }
    if !errors.is_empty() {
        return Err(PatientRejection::Invalid(errors));
    }
    if let Some(existing) = ctx.external_id_holder {
        if draft.external_patient_id.is_some() {
            return Err(PatientRejection::DuplicateExternalId { existing });
        }
    }
    let (email, warning, open) = judge_email(draft.email.as_deref(), ctx);
    let (
        Some(client_id),
        Some(location_id),
        Some(date_of_birth),
        Some(sex),
        Some(first_name),
        Some(last_name),
    ) = (
        draft.client_id,
        draft.location_id,
        dob,
        sex,
        draft.first_name,
        draft.last_name,
    )
    else {
        unreachable!("validated above");
    };
    Ok(Decision {
        open_account: if open { email.clone() } else { None },
        new_login: None,
        warnings: warning.into_iter().collect(),
        event: Some(PatientEvent::PatientRegistered(PatientRegistered {
            patient_id,
            client_id,
            location_id,
            external_patient_id: draft.external_patient_id,
            first_name,
            last_name,
            date_of_birth,
            sex,
            email,
            phone: draft.phone,
            address: address.filter(|a| !a.is_empty()),
        })),
    })
}

/// Decides a merge patch of an existing patient.
pub fn update(
    state: &Patient,
    patch: PatientPatch,
    ctx: &Context,
) -> Result<Decision, PatientRejection> {
    let mut errors = Vec::new();
    let mut changes = PatientChanges::default();

    for (field, p, current, slot) in [
        (
            "firstName",
            &patch.first_name,
            &state.first_name,
            &mut changes.first_name,
        ),
        (
            "lastName",
            &patch.last_name,
            &state.last_name,
            &mut changes.last_name,
        ),
    ] {
        match p {
            Patch::Absent => {}
            Patch::Null => errors.push(FieldError::new(field, "required", "cannot be removed")),
            Patch::Set(v) => {
                let before = errors.len();
                check_text(field, v, MAX_NAME, &mut errors);
                if errors.len() == before && v != current {
                    *slot = Some(v.clone());
                }
            }
        }
    }
    match &patch.date_of_birth {
        Patch::Absent => {}
        Patch::Null => errors.push(FieldError::new(
            "dateOfBirth",
            "required",
            "cannot be removed",
        )),
        Patch::Set(v) => {
            if let Some(d) = parse_date_of_birth(v, ctx.today, &mut errors) {
                changes.date_of_birth = (d != state.date_of_birth).then_some(d);
            }
        }
    }
    match &patch.sex {
        Patch::Absent => {}
        Patch::Null => errors.push(FieldError::new("sex", "required", "cannot be removed")),
        Patch::Set(v) => {
            if let Some(s) = parse_sex(v, &mut errors) {
                changes.sex = (s != state.sex).then_some(s);
            }
        }
    }
    match &patch.location_id {
        Patch::Absent => {}
        Patch::Null => errors.push(FieldError::new(
            "locationID",
            "required",
            "cannot be removed",
        )),
        Patch::Set(v) => {
            let before = errors.len();
            check_reference_id("locationID", v, &mut errors);
            if errors.len() == before {
                check_location(&state.client_id, ctx, &mut errors);
            }
            if errors.len() == before && *v != state.location_id {
                changes.location_id = Some(v.clone());
            }
        }
    }
    match &patch.external_patient_id {
        Patch::Absent => {}
        Patch::Null => {
            if state.external_patient_id.is_some() {
                changes.external_patient_id = Some(None);
            }
        }
        Patch::Set(v) => {
            let before = errors.len();
            check_external_id("externalPatientID", v, &mut errors);
            if errors.len() == before && state.external_patient_id.as_ref() != Some(v) {
                changes.external_patient_id = Some(Some(v.clone()));
            }
        }
    }
    match &patch.phone {
        Patch::Absent => {}
        Patch::Null => {
            if state.phone.is_some() {
                changes.phone = Some(None);
            }
        }
        Patch::Set(v) => {
            let before = errors.len();
            check_phone(v, &mut errors);
            if errors.len() == before && state.phone.as_ref() != Some(v) {
                changes.phone = Some(Some(v.clone()));
            }
        }
    }
    match patch.address {
        Patch::Absent => {}
        Patch::Null => {
            if state.address.is_some() {
                changes.address = Some(None);
            }
        }
        Patch::Set(ap) => {
            let mut merged = ap.merge_into(state.address.clone().unwrap_or_default());
            merged.validate(&mut errors);
            let merged = (!merged.is_empty()).then_some(merged);
            if merged != state.address {
                changes.address = Some(merged);
            }
        }
    }
    if !errors.is_empty() {
        return Err(PatientRejection::Invalid(errors));
    }
    if let Some(Some(_)) = &changes.external_patient_id {
        if let Some(existing) = ctx.external_id_holder.filter(|h| *h != state.id) {
            return Err(PatientRejection::DuplicateExternalId { existing });
        }
    }

    let mut warnings = Vec::new();
    let mut open_account = None;
    let mut new_login = None;
    match &patch.email {
        Patch::Absent => {}
        Patch::Null => {
            if state.email.is_some() {
                changes.email = Some(None);
            }
        }
        Patch::Set(v) => {
            let (email, warning, open) = judge_email(Some(v), ctx);
            warnings.extend(warning);
            if let Some(e) = email {
                if state.email.as_ref() != Some(&e) {
                    changes.email = Some(Some(e.clone()));
                }
                if open && !ctx.has_account {
                    open_account = Some(e);
                } else if open {
                    new_login = Some(e);
                }
            }
        }
    }

    let event = (!changes.is_empty()).then_some(PatientEvent::PatientUpdated(PatientUpdated {
        patient_id: state.id,
        changes,
    }));
    Ok(Decision {
        event,
        open_account,
        new_login,
        warnings,
    })
}

#[cfg(test)]
mod tests;
