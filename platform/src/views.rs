//! Partner-facing representations, shared by the write side (which answers
//! a write with the record as it now stands) and the read side.

use chrono::{DateTime, NaiveDate, Utc};
use domain::patient::{Address, Patient, Sex};
use serde::Serialize;
use uuid::Uuid;

use crate::envelope::format_time;

/// The `account` member of a patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    /// `none`, `invited` or `active`.
    pub status: String,
}

/// A patient as partners see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientView {
    /// Internal id.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// External id, or null.
    #[serde(rename = "externalPatientID")]
    pub external_patient_id: Option<String>,
    /// Client.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Location.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// Sex.
    pub sex: Sex,
    /// Email, or null.
    pub email: Option<String>,
    /// Phone, or null.
    pub phone: Option<String>,
    /// Address, or null.
    pub address: Option<Address>,
    /// Portal account.
    pub account: AccountView,
    /// Stream version.
    pub version: i64,
    /// Registration time.
    pub created_at: String,
    /// Time of the last change.
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
