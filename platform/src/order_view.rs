//! The order representation partners see, shared by the write side (the
//! answer to a write) and the read side.

use chrono::{DateTime, NaiveDate, Utc};
use domain::order::{Order, OrderStatus, Priority, RecordedResult, Specimen};
use domain::patient::{Patient, Sex};
use serde::Serialize;
use uuid::Uuid;

use crate::envelope::format_time;

/// The patient details an order embeds, only for a caller holding
/// `patients:read` with the patient in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientSummary {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth.
    pub date_of_birth: NaiveDate,
    /// Sex.
    pub sex: Sex,
}

impl PatientSummary {
    /// The summary of a patient.
    pub fn of(p: &Patient) -> Self {
        PatientSummary {
            first_name: p.first_name.clone(),
            last_name: p.last_name.clone(),
            date_of_birth: p.date_of_birth,
            sex: p.sex,
        }
    }
}

/// One ordered test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderedTest {
    /// Catalog code.
    pub code: String,
}

/// An order as partners see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// The patient.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// The patient's name and date of birth, when the caller may read them.
    pub patient: Option<PatientSummary>,
    /// Client.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Location.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// Accession number.
    pub accession_number: String,
    /// The partner's order id, or null.
    #[serde(rename = "externalOrderID")]
    pub external_order_id: Option<String>,
    /// Ordered tests.
    pub tests: Vec<OrderedTest>,
    /// Specimen.
    pub specimen: Specimen,
    /// Priority.
    pub priority: Priority,
    /// Status.
    pub status: OrderStatus,
    /// Results with their reference ranges and flags.
    pub results: Vec<RecordedResult>,
    /// Why the order was canceled, when it was.
    pub cancel_reason: Option<String>,
    /// Stream version.
    pub version: i64,
    /// Placement time.
    pub created_at: String,
    /// Time of the last change.
    pub updated_at: String,
}

impl OrderView {
    /// Builds the view of an order aggregate.
    pub fn from_state(
        o: &Order,
        patient: Option<PatientSummary>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        OrderView {
            order_id: o.id,
            patient_id: o.patient_id,
            patient,
            client_id: o.client_id.clone(),
            location_id: o.location_id.clone(),
            accession_number: o.accession_number.clone(),
            external_order_id: o.external_order_id.clone(),
            tests: o.tests.iter().map(|c| OrderedTest { code: c.clone() }).collect(),
            specimen: o.specimen.clone(),
            priority: o.priority,
            status: o.status,
            results: o.results.clone(),
            cancel_reason: o.cancel_reason.clone(),
            version: o.version,
            created_at: format_time(&created_at),
            updated_at: format_time(&updated_at),
        }
    }

    /// The `ETag` of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}
