//! The order representation partners see, shared by the write side (the
//! answer to a write) and the read side, and the OpenAPI descriptions of the
//! domain's order types (the domain crate knows nothing of OpenAPI).

use chrono::{DateTime, NaiveDate, Utc};
use domain::order::{Order, OrderStatus, Priority, RecordedResult, Specimen};
use domain::patient::{Patient, Sex};
use serde::Serialize;
use uuid::Uuid;

use crate::views::SexSchema;
use platform::envelope::format_time;

/// The patient details an order embeds, only for a caller holding
/// `patients:read` with the patient in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatientSummary {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth (`YYYY-MM-DD`).
    pub date_of_birth: NaiveDate,
    /// Administrative sex.
    #[schema(value_type = SexSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderedTest {
    /// The test's code in the lab's catalog (`CBC`); see `GET /v1/catalog`.
    #[schema(example = "CBC")]
    pub code: String,
}

/// An order ("test" in partner language) as partners see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Order, example = json!({
    "orderID": "7d7f0c1e-2b6a-4c8e-9f3a-1d2e3f4a5b6c",
    "patientID": "5f0c3a4e-8f5b-4d0e-9a57-2b1f0f3c6d21",
    "patient": {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1990-12-10", "sex": "female"},
    "clientID": "C1", "locationID": "L1",
    "accessionNumber": "A-20261126-000123", "externalOrderID": "EHR-77",
    "tests": [{"code": "CBC"}],
    "specimen": {"type": "whole blood", "collectedAt": "2026-11-26T08:30:00Z"},
    "priority": "routine", "status": "resulted",
    "results": [
        {"code": "HGB", "test": "CBC", "value": "11.2", "unit": "g/dL", "referenceRange": {"low": 12.0, "high": 15.5}, "flag": "L"},
        {"code": "WBC", "test": "CBC", "value": 7.2, "unit": "10^9/L", "referenceRange": {"low": 4.0, "high": 11.0}, "flag": "N"}
    ],
    "cancelReason": null, "version": 5,
    "createdAt": "2026-11-26T08:31:00.123456Z", "updatedAt": "2026-11-26T14:02:10.654321Z"
}))]
pub struct OrderView {
    /// Internal id, assigned by the LIS.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// The patient the order is for.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// The patient's name, date of birth and sex, only when the caller holds
    /// `patients:read` and the patient is in its scope; null otherwise.
    #[schema(required = true)]
    pub patient: Option<PatientSummary>,
    /// The lab client (the patient's); never changes.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The client's location the order was placed for.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// The lab's accession number, unique in the lab: as sent, or generated
    /// as `A-YYYYMMDD-NNNNNN` when the order was placed without one.
    #[schema(max_length = 64, example = "A-20261126-000123")]
    pub accession_number: String,
    /// The partner's identifier for the order, or null.
    #[serde(rename = "externalOrderID")]
    #[schema(required = true, max_length = 64)]
    pub external_order_id: Option<String>,
    /// The ordered tests, in order.
    pub tests: Vec<OrderedTest>,
    /// The specimen.
    #[schema(value_type = SpecimenSchema)]
    pub specimen: Specimen,
    /// How urgent the order is.
    #[schema(value_type = PrioritySchema)]
    pub priority: Priority,
    /// Where the order stands in its lifecycle.
    #[schema(value_type = OrderStatusSchema)]
    pub status: OrderStatus,
    /// The current result of each analyte, with the reference range and flag
    /// the LIS attached when it was recorded; empty until results are
    /// recorded.
    #[schema(value_type = Vec<RecordedResultSchema>)]
    pub results: Vec<RecordedResult>,
    /// Why the order was canceled, or null.
    #[schema(required = true)]
    pub cancel_reason: Option<String>,
    /// The record's version: 1 when placed, +1 with every change. The `ETag`
    /// is this number in quotes.
    #[schema(minimum = 1)]
    pub version: i64,
    /// Placement time (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Time of the last change (RFC 3339, UTC).
    #[schema(format = DateTime)]
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
            tests: o
                .tests
                .iter()
                .map(|c| OrderedTest { code: c.clone() })
                .collect(),
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

// Describes the domain's `OrderStatus` in the OpenAPI document.
/// Where an order stands: `ordered -> collected -> received -> in_progress
/// -> resulted -> final`, `final -> corrected`, and `canceled` from
/// `ordered`, `collected` or `received`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = OrderStatus)]
pub enum OrderStatusSchema {
    /// Placed; the specimen is not collected yet.
    Ordered,
    /// The specimen was collected.
    Collected,
    /// The lab received the specimen.
    Received,
    /// The lab is running the tests.
    InProgress,
    /// Results are recorded, not yet released.
    Resulted,
    /// Results are final and released to the patient's portal.
    Final,
    /// Final results were amended.
    Corrected,
    /// Canceled before testing.
    Canceled,
}

// Describes the domain's `Priority`.
/// How urgent an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Priority)]
pub enum PrioritySchema {
    /// Routine (the default).
    Routine,
    /// Urgent.
    Urgent,
    /// Immediately.
    Stat,
}

// Describes the domain's `Specimen`.
/// The specimen of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Specimen)]
pub struct SpecimenSchema {
    /// What was (or will be) drawn (`whole blood`, `serum`), up to 64
    /// characters.
    #[serde(rename = "type")]
    #[schema(max_length = 64, example = "whole blood")]
    pub specimen_type: String,
    /// When it was collected (RFC 3339, UTC), once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = DateTime<Utc>)]
    pub collected_at: Option<DateTime<Utc>>,
}

// Describes the domain's `ResultValue`.
/// A result value, kept exactly as sent: a JSON string (`"5.20"`, `"<0.5"`,
/// `"Not detected"`) or a JSON number. For a numeric analyte a string must
/// be a decimal number, optionally right after `<`, `>`, `<=` or `>=`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResultValueSchema {
    /// A JSON string.
    Text(String),
    /// A JSON number.
    Number(f64),
}

// Written out because a variant's field takes no `pattern` in utoipa's
// derive: the string side holds no NUL, as the server checks.
impl utoipa::PartialSchema for ResultValueSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[^\\x00]*$"))
                    .description(Some("A JSON string (no NUL).")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
                    .description(Some("A JSON number.")),
            )
            .description(Some(
                "A result value, kept exactly as sent: a JSON string (`\"5.20\"`, `\"<0.5\"`,\n\
                 `\"Not detected\"`) or a JSON number. For a numeric analyte a string must\n\
                 be a decimal number, optionally right after `<`, `>`, `<=` or `>=`.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ResultValueSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "ResultValue".into()
    }
}

// Describes the domain's `RangeView`.
/// The reference range a result was judged against, as recorded with it
/// (a later catalog revision never changes it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = RecordedRange)]
pub struct RecordedRangeSchema {
    /// Lowest normal value (inclusive), if the range has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = f64)]
    pub low: Option<f64>,
    /// Highest normal value (inclusive), if the range has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = f64)]
    pub high: Option<f64>,
}

// Describes the domain's `Flag`.
/// The interpretation of a result: `LL`/`HH` beyond the critical limits,
/// `L`/`H` outside the reference range, `N` inside it, `A` for an abnormal
/// non-numeric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Flag)]
pub enum FlagSchema {
    /// Below the reference range.
    #[serde(rename = "L")]
    Low,
    /// Above the reference range.
    #[serde(rename = "H")]
    High,
    /// Below the critical low limit.
    #[serde(rename = "LL")]
    CriticalLow,
    /// Above the critical high limit.
    #[serde(rename = "HH")]
    CriticalHigh,
    /// An abnormal non-numeric value.
    #[serde(rename = "A")]
    Abnormal,
    /// Within the reference range, or a normal text value.
    #[serde(rename = "N")]
    Normal,
}

// Describes the domain's `RecordedResult`.
/// One recorded result of an analyte, with the reference range and flag the
/// LIS attached when it was recorded: the catalog's range for the patient's
/// sex and age on the collection date. Where the catalog has no range for
/// that patient there is neither range nor flag.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RecordedResult)]
pub struct RecordedResultSchema {
    /// The analyte's code (`HGB`).
    #[schema(example = "HGB")]
    pub code: String,
    /// The ordered test the analyte belongs to (`CBC`).
    #[schema(example = "CBC")]
    pub test: String,
    /// The value exactly as sent.
    pub value: ResultValueSchema,
    /// The unit as sent (the catalog's, for a numeric analyte).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, example = "g/dL")]
    pub unit: Option<String>,
    /// The reference range that applied, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = RecordedRangeSchema)]
    pub reference_range: Option<RecordedRangeSchema>,
    /// The flag, if one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = FlagSchema)]
    pub flag: Option<FlagSchema>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::order::{Flag, RangeView, ResultValue};
    use serde_json::Value;
    use utoipa::PartialSchema;

    fn schema_of<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    fn enum_values(schema: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for v in schema["enum"].as_array().into_iter().flatten() {
            out.push(v.as_str().unwrap().to_string());
        }
        for one in schema["oneOf"].as_array().into_iter().flatten() {
            out.extend(enum_values(one));
        }
        out
    }

    /// The schema-only enums list exactly the domain's spellings.
    #[test]
    fn enums_match_the_domain() {
        let statuses: Vec<String> = OrderStatus::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        assert_eq!(enum_values(&schema_of::<OrderStatusSchema>()), statuses);
        let priorities: Vec<String> = [Priority::Routine, Priority::Urgent, Priority::Stat]
            .iter()
            .map(|p| p.as_str().to_string())
            .collect();
        assert_eq!(enum_values(&schema_of::<PrioritySchema>()), priorities);
        let flags: Vec<String> = [
            Flag::Low,
            Flag::High,
            Flag::CriticalLow,
            Flag::CriticalHigh,
            Flag::Abnormal,
            Flag::Normal,
        ]
        .iter()
        .map(|f| f.as_str().to_string())
        .collect();
        assert_eq!(enum_values(&schema_of::<FlagSchema>()), flags);
    }

    /// Every member of an order's JSON is described by the `Order` schema.
    #[test]
    fn order_schema_describes_every_member() {
        let order = Order {
            id: Uuid::nil(),
            patient_id: Uuid::nil(),
            client_id: "C1".into(),
            location_id: "L1".into(),
            accession_number: "A-20261126-000001".into(),
            external_order_id: Some("EHR-1".into()),
            tests: vec!["CBC".into()],
            specimen: Specimen {
                specimen_type: "whole blood".into(),
                collected_at: Some(Utc::now()),
            },
            priority: Priority::Routine,
            status: OrderStatus::Resulted,
            results: vec![RecordedResult {
                code: "HGB".into(),
                test: "CBC".into(),
                value: ResultValue::Text("11.2".into()),
                unit: Some("g/dL".into()),
                reference_range: Some(RangeView {
                    low: Some(12.0),
                    high: Some(15.5),
                }),
                flag: Some(Flag::Low),
            }],
            cancel_reason: None,
            version: 5,
        };
        let patient = PatientSummary {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            date_of_birth: NaiveDate::from_ymd_opt(1990, 12, 10).unwrap(),
            sex: Sex::Female,
        };
        let view = OrderView::from_state(&order, Some(patient), Utc::now(), Utc::now());
        let json = serde_json::to_value(&view).unwrap();
        let check = |json: &Value, schema: Value, what: &str| {
            let props = schema["properties"].as_object().unwrap();
            for key in json.as_object().unwrap().keys() {
                assert!(props.contains_key(key), "{what}.{key} is not described");
            }
        };
        check(&json, schema_of::<OrderView>(), "order");
        check(&json["patient"], schema_of::<PatientSummary>(), "patient");
        check(&json["specimen"], schema_of::<SpecimenSchema>(), "specimen");
        check(
            &json["results"][0],
            schema_of::<RecordedResultSchema>(),
            "results[0]",
        );
        check(
            &json["results"][0]["referenceRange"],
            schema_of::<RecordedRangeSchema>(),
            "referenceRange",
        );
        let required = schema_of::<OrderView>()["required"].clone();
        for key in json.as_object().unwrap().keys() {
            assert!(
                required.as_array().unwrap().iter().any(|r| r == key),
                "{key} is always present, so required"
            );
        }
    }
}
