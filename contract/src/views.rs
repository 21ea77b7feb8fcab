//! Partner-facing representations, shared by the write side (which answers
//! a write with the record as it now stands) and the read side.

use chrono::{DateTime, NaiveDate, Utc};
use domain::patient::{Address, Patient, Sex};
use serde::Serialize;
use uuid::Uuid;

use platform::envelope::format_time;

/// The `account` member of a patient: the patient's portal account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    /// `none` (no account: no valid email, or the email is another
    /// account's login), `invited` (an activation link was emailed) or
    /// `active`.
    #[schema(value_type = AccountStatusSchema)]
    pub status: String,
}

/// A patient as partners see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Patient)]
pub struct PatientView {
    /// Internal id, assigned by the LIS.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// The partner's identifier, unique within the client, or null.
    #[serde(rename = "externalPatientID")]
    #[schema(required = true, max_length = 64)]
    pub external_patient_id: Option<String>,
    /// The lab client the patient belongs to; never changes.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The client's location the patient is attached to.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth (`YYYY-MM-DD`).
    pub date_of_birth: NaiveDate,
    /// Administrative sex.
    #[schema(value_type = SexSchema)]
    pub sex: Sex,
    /// A valid email address, or null.
    #[schema(required = true)]
    pub email: Option<String>,
    /// Phone, or null.
    #[schema(required = true)]
    pub phone: Option<String>,
    /// Postal address, or null.
    #[schema(value_type = Option<AddressSchema>, required = true)]
    pub address: Option<Address>,
    /// The patient's portal account.
    pub account: AccountView,
    /// The record's version: 1 when created, +1 with every change. The
    /// `ETag` is this number in quotes.
    #[schema(minimum = 1)]
    pub version: i64,
    /// Registration time (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Time of the last change (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl PatientView {
    /// Builds the view of a patient aggregate.
    pub fn from_state(
        p: &Patient,
        account_status: Option<&str>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        PatientView {
            patient_id: p.id,
            external_patient_id: p.external_patient_id.clone(),
            client_id: p.client_id.clone(),
            location_id: p.location_id.clone(),
            first_name: p.first_name.clone(),
            last_name: p.last_name.clone(),
            date_of_birth: p.date_of_birth,
            sex: p.sex,
            email: p.email.clone(),
            phone: p.phone.clone(),
            address: p.address.clone(),
            account: AccountView {
                status: account_status.unwrap_or("none").to_string(),
            },
            version: p.version,
            created_at: format_time(&created_at),
            updated_at: format_time(&updated_at),
        }
    }

    /// The `ETag` of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

// Describes the domain's `Sex` in the OpenAPI document (the domain crate
// knows nothing of OpenAPI).
/// A patient's administrative sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Sex)]
pub enum SexSchema {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other.
    Other,
    /// Unknown.
    Unknown,
}

// Describes the domain's `Address` in the OpenAPI document.
/// A postal address; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Address)]
pub struct AddressSchema {
    /// First line.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub line1: Option<String>,
    /// Second line.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub line2: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub city: Option<String>,
    /// State or region.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub state: Option<String>,
    /// Postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 country code, such as `US`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
}

// Describes `AccountView::status` in the OpenAPI document.
/// Where a patient's portal account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = AccountStatus)]
pub enum AccountStatusSchema {
    /// No account.
    None,
    /// Invited; the activation link has not been used yet.
    Invited,
    /// Activated by the patient.
    Active,
    /// Locked after repeated failed logins, until the lab unlocks it.
    Locked,
    /// Disabled by the lab for good.
    Disabled,
}

/// A non-fatal remark on an accepted write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Warning)]
pub struct WarningSchema {
    /// The field the warning is about (`email`).
    pub field: String,
    /// `invalid_email` (the email was not stored and no account was
    /// created) or `email_in_use` (the email was stored on the patient,
    /// but it is another account's login, so no account was created).
    #[schema(value_type = WarningCode)]
    pub code: String,
}

/// The codes of a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// The email is not a valid address.
    InvalidEmail,
    /// The email is another account's login.
    EmailInUse,
}
