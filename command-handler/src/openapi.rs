//! The write operations in the OpenAPI document: their request and answer
//! bodies, and each operation's text. The routes are served by
//! [`crate::pipeline::serve`] with the commands of [`crate::patients`] and
//! [`crate::orders`], which read bodies field by field (so that every bad
//! field is named at once); the schemas here describe the same bodies, and
//! the tests below check that every member they name is one a command
//! reads.

use chrono::Utc;
use contract::order_view::{OrderView, OrderedTest, PrioritySchema, ResultValueSchema};
use contract::problem::Problem;
use contract::views::{AddressSchema, PatientView, SexSchema, WarningSchema};
use domain::order::{OrderAction, OrderStatus};
use serde::Serialize;
use serde_json::json;
use utoipa::openapi::path::PathItem;
use uuid::Uuid;

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
    #[schema(nullable = true, value_type = String, pattern = "^[!-~]{1,64}$")]
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
    #[schema(
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub first_name: String,
    /// Family name (1-100 characters).
    #[schema(
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
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
    #[schema(nullable = true, value_type = String, max_length = 254)]
    pub email: Option<String>,
    /// Phone number: up to 32 characters of digits, spaces and `+ - ( ) .`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, max_length = 32, pattern = "^[0-9 +().-]*[0-9][0-9 +().-]*$")]
    pub phone: Option<String>,
    /// Postal address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = AddressSchema)]
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
    #[schema(value_type = String, max_length = 100, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub first_name: Option<String>,
    /// New family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 100, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
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
    #[schema(max_length = 32, pattern = "^[0-9 +().-]*[0-9][0-9 +().-]*$")]
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
    #[schema(pattern = "^[!-~]{1,64}$")]
    pub external_patient_id: Option<String>,
}

/// The address part of a merge patch.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressMergePatch {
    /// First line.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub line1: Option<String>,
    /// Second line.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub line2: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub city: Option<String>,
    /// State or region.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub state: Option<String>,
    /// Postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Z]{2}$")]
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
    #[schema(nullable = true, value_type = String, pattern = "^[!-~]{1,64}$")]
    pub accession_number: Option<String>,
    /// The partner's identifier for the order: 1-64 visible ASCII characters.
    #[serde(rename = "externalOrderID", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = String, pattern = "^[!-~]{1,64}$")]
    pub external_order_id: Option<String>,
    /// The tests ordered, at least one, each a code of the lab's catalog
    /// (`GET /v1/catalog`; 422 `unknown_test` otherwise) ordered once.
    #[schema(min_items = 1)]
    pub tests: Vec<OrderedTest>,
    /// The specimen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = NewSpecimen)]
    pub specimen: Option<NewSpecimen>,
    /// How urgent the order is (default `routine`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = PrioritySchema)]
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
    #[schema(nullable = true, value_type = String, max_length = 64, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub specimen_type: Option<String>,
    /// When it was collected, if it already was (RFC 3339; not in the future
    /// nor before the patient's date of birth). The order stays `ordered`
    /// until `collect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = true, value_type = chrono::DateTime<Utc>)]
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
    #[schema(pattern = "^[!-~]{1,64}$")]
    pub external_order_id: Option<String>,
}

/// The specimen part of an order's merge patch.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecimenMergePatch {
    /// A new specimen type (it cannot be removed).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, max_length = 64, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$")]
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
    #[schema(
        max_length = 500,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub reason: String,
}

/// One result as the lab reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultInput {
    /// The analyte's code, measured by one of the order's tests (422
    /// `unknown_analyte` otherwise), reported once per request.
    #[schema(example = "HGB", pattern = "^[^\\x00]*$")]
    pub code: String,
    /// The value, kept exactly as sent: a string (`"5.20"`, `"<0.5"`,
    /// `"Not detected"`) or a number. For a numeric analyte a decimal number,
    /// optionally right after `<`, `>`, `<=` or `>=` (422 otherwise).
    pub value: ResultValueSchema,
    /// The unit: required for a numeric analyte and exactly the catalog's
    /// (422 `unit_mismatch` otherwise); a text analyte has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, example = "g/dL", pattern = "^[^\\x00]*$")]
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
    #[schema(
        max_length = 500,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x20\\x7F-\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
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
/// Documentation only: `POST /v1/patients`, the command
/// [`crate::patients::RegisterPatient`].
pub fn create_patient() {}

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
/// Documentation only: `PATCH /v1/patients/{patientID}`, the command
/// [`crate::patients::UpdatePatient`].
pub fn update_patient() {}

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
/// Documentation only: `POST /v1/orders`, the command [`crate::orders::PlaceOrder`].
pub fn create_order() {}

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
/// Documentation only: `PATCH /v1/orders/{orderID}`, the command
/// [`crate::orders::UpdateOrder`].
pub fn update_order() {}

/// What the document says of a lifecycle action besides what the action
/// gives (its route, its permission, the statuses it is allowed from).
struct ActionText {
    operation_id: &'static str,
    summary: &'static str,
    /// What it does, before "Allowed from".
    lead: &'static str,
    /// The body's schema, and whether it may be left out (with the words
    /// saying so).
    body: (&'static str, Option<&'static str>),
    /// The status it leads to.
    leads_to: &'static str,
    /// What makes its body invalid (422), before the headers' cases.
    invalid: &'static str,
}

const NO_BODY: Option<&str> = Some("Optional: no body is needed; an empty object is accepted.");

fn action_text(action: OrderAction) -> ActionText {
    let (operation_id, summary, lead, body, leads_to, invalid) = match action {
        OrderAction::Collect => (
            "collectSpecimen",
            "Record specimen collection",
            "Moves an `ordered` order to `collected`. `collectedAt` defaults to the \
             `specimen.collectedAt` given at placement, else now.",
            (
                "CollectRequest",
                Some("Optional: no body, or `{}`, is fine."),
            ),
            "collected",
            "`collectedAt` is not an RFC 3339 timestamp or is in the future; an unknown field",
        ),
        OrderAction::Receive => (
            "receiveSpecimen",
            "Record specimen receipt by the lab",
            "Moves a `collected` order to `received`. No body is needed.",
            ("NoFields", NO_BODY),
            "received",
            "a body with any member",
        ),
        OrderAction::Start => (
            "startTesting",
            "Record the start of testing",
            "Moves a `received` order to `in_progress`. No body is needed.",
            ("NoFields", NO_BODY),
            "in_progress",
            "a body with any member",
        ),
        OrderAction::Cancel => (
            "cancelOrder",
            "Cancel an order",
            "Moves an `ordered`, `collected` or `received` order to `canceled`, with a \
             required `reason`.",
            ("CancelRequest", None),
            "canceled",
            "`reason` is missing, blank or longer than 500 characters; an unknown field",
        ),
        OrderAction::Results => (
            "recordResults",
            "Record results",
            "Records or replaces results, analyte by analyte, of a `received`, `in_progress` \
             or `resulted` order, which becomes `resulted`. Values are kept exactly as sent; \
             the LIS attaches the catalog's reference range for the patient's sex and age on \
             the collection date, and a flag (`LL`, `HH`, `L`, `H`, `N`, `A`, or none where \
             the catalog has no range for that patient). Results are not released to the \
             patient until `finalize`. `results:write` is granted to reference labs and \
             instrument middleware only.",
            ("ResultsRequest", None),
            "resulted",
            "no `results`, an analyte that none of the order's tests measures \
             (`unknown_analyte`) or named twice, a value that is not a decimal number for a \
             numeric analyte (`not_numeric`), a missing unit or one that is not the catalog's \
             (`unit_mismatch`), an unknown field",
        ),
        OrderAction::Finalize => (
            "finalizeResults",
            "Release results as final",
            "Moves a `resulted` order to `final`: its results are released to the patient's \
             portal. No body is needed.",
            ("NoFields", NO_BODY),
            "final",
            "a body with any member",
        ),
        OrderAction::Correct => (
            "correctResults",
            "Correct final results",
            "Amends results of a `final` or `corrected` order, with a required `reason`; the \
             order becomes `corrected` and the replaced values stay in its history. Ranges and \
             flags are attached as for `results`.",
            ("CorrectRequest", None),
            "corrected",
            "`reason` missing or blank, no `results`, or a bad result as for `results`; an \
             unknown field",
        ),
        OrderAction::Update => unreachable!("update is PATCH /v1/orders/{{orderID}}"),
    };
    ActionText {
        operation_id,
        summary,
        lead,
        body,
        leads_to,
        invalid,
    }
}

/// `` `a` ``, `` `a` or `b` ``, `` `a`, `b` or `c` ``.
fn statuses(list: &[OrderStatus]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| format!("`{}`", s.as_str())).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The operations of the lifecycle actions, `POST /v1/orders/{orderID}/{action}`
/// for each of [`OrderAction::LIFECYCLE`]: the statuses, the permission and
/// the route come from the action itself.
pub fn action_operations() -> Vec<(String, PathItem)> {
    let problem = |description: String| {
        json!({"description": description, "content": {"application/problem+json":
            {"schema": {"$ref": "#/components/schemas/Problem"}}}})
    };
    OrderAction::LIFECYCLE
        .iter()
        .map(|&action| {
            let t = action_text(action);
            let from = statuses(action.allowed_from());
            let permission = action.permission().as_str();
            let (schema, optional) = t.body;
            let mut body = json!({"content": {"application/json":
                {"schema": {"$ref": format!("#/components/schemas/{schema}")}}},
                "required": optional.is_none()});
            if let Some(words) = optional {
                body["description"] = json!(words);
            }
            let operation = json!({
                "tags": ["orders"],
                "summary": t.summary,
                "description": format!(
                    "{} Allowed from {from}; leads to `{}`. With `If-Match`, the action applies \
                     only to that version (412 otherwise). Requires `{permission}`.",
                    t.lead, t.leads_to
                ),
                "operationId": t.operation_id,
                "parameters": [{"name": "orderID", "in": "path", "required": true,
                    "description": "The order's id.",
                    "schema": {"type": "string", "format": "uuid"}}],
                "requestBody": body,
                "responses": {
                    "200": {
                        "description": format!("The order as it now stands (`{}`).", t.leads_to),
                        "headers": {
                            "ETag": {"description": "The new version in quotes.",
                                "schema": {"type": "string"}},
                            "Consistency-Token": {"description":
                                "Send it with a read to see at least this write.",
                                "schema": {"type": "string"}},
                        },
                        "content": {"application/json":
                            {"schema": {"$ref": "#/components/schemas/Order"}}},
                    },
                    "400": problem("The body is not a JSON object, or a value has the wrong \
                        JSON type.".into()),
                    "403": problem(format!("The partner lacks `{permission}`.")),
                    "404": problem("No such order, or the order is outside the caller's \
                        scope (the same answer).".into()),
                    "409": problem(format!(
                        "`invalid-status`: the order is not {from}, and nothing changed; or \
                         `request-in-progress`: a request with this `Idempotency-Key` is still \
                         running."
                    )),
                    "412": problem("`stale-version`: `If-Match` names a version that is no \
                        longer current; nothing changed.".into()),
                    "415": problem("A body is sent, but not as `application/json`.".into()),
                    "422": problem(format!(
                        "Invalid fields, every one listed in `errors`: {}; or a malformed \
                         `If-Match` or `Idempotency-Key`, or a key already used with another \
                         body.",
                        t.invalid
                    )),
                },
                "security": [{"bearer": []}, {"oauth2": [permission]}],
            });
            let item = serde_json::from_value(json!({ "post": operation }))
                .expect("an action's operation");
            (format!("/v1/orders/{{orderID}}/{action}"), item)
        })
        .collect()
}
