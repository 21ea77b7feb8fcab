//! The order aggregate ("test" in partner language): one requisition of a
//! patient, with its ordered catalog tests, specimen, status and results.
//!
//! # Status machine
//!
//! | action | allowed from | leads to |
//! | --- | --- | --- |
//! | [`collect`] | `ordered` | `collected` |
//! | [`receive`] | `collected` | `received` |
//! | [`start`] | `received` | `in_progress` |
//! | [`cancel`] | `ordered`, `collected`, `received` | `canceled` |
//! | [`record_results`] | `received`, `in_progress`, `resulted` | `resulted` |
//! | [`finalize`] | `resulted` | `final` |
//! | [`correct`] | `final`, `corrected` | `corrected` |
//! | [`update`] | `ordered`, `collected`, `received`, `in_progress` | (same) |
//!
//! Any other (status, action) pair is [`OrderRejection::InvalidStatus`].
//!
//! # Results
//!
//! A value is kept exactly as sent: a JSON string stays that string
//! (`"5.20"`, `"<0.5"`), a JSON number stays a number. For a numeric analyte
//! the value must be a decimal number (`-?digits[.digits]`), optionally right
//! after one of `<`, `>`, `<=`, `>=`, or a JSON number; the unit must be the
//! catalog's, compared exactly. The reference range is the catalog's range
//! for the patient's sex and age in days on the collection date, and the
//! flag is judged against it, in this order: below the critical low `LL`,
//! above the critical high `HH`, below the range's low `L`, above its high
//! `H`, else `N`; limits themselves are normal (a value equal to a limit is
//! not beyond it). A comparator value counts as its number (`<0.5` is judged
//! as 0.5, `>1000` as 1000). Where no range applies to the patient (another
//! age band, a sex-specific range and a patient of `other` or `unknown` sex)
//! there is neither range nor flag, and critical limits are not judged
//! either, since they belong to the same population as the ranges. A text
//! analyte is `N` when its value is one of the catalog's normal values
//! (ignoring case and surrounding spaces), `A` otherwise, and unflagged when
//! the catalog lists no normal values. Range and flag are recorded in the
//! event, so catalog revisions never change a past result.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::Permission;
use crate::catalog::{Analyte, AnalyteKind, CatalogTest};
use crate::event::{DomainEvent, StreamKind};
use crate::patch::{double_option, Patch};
use crate::patient::Sex;
use crate::validation::{check_external_id, check_reference_id, check_text, FieldError};

/// Longest cancel or correction reason accepted.
pub const MAX_REASON: usize = 500;
/// Longest text result value accepted.
pub const MAX_TEXT_VALUE: usize = 200;
/// Longest specimen type accepted.
pub const MAX_SPECIMEN_TYPE: usize = crate::catalog::MAX_SPECIMEN_TYPE;
/// How far in the future a `collectedAt` may be and still be accepted, to
/// allow for partners' clock drift.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
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

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Ordered,
        OrderStatus::Collected,
        OrderStatus::Received,
        OrderStatus::InProgress,
        OrderStatus::Resulted,
        OrderStatus::Final,
        OrderStatus::Corrected,
        OrderStatus::Canceled,
    ];

    /// The contract's spelling (`in_progress`).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Ordered => "ordered",
            OrderStatus::Collected => "collected",
            OrderStatus::Received => "received",
            OrderStatus::InProgress => "in_progress",
            OrderStatus::Resulted => "resulted",
            OrderStatus::Final => "final",
            OrderStatus::Corrected => "corrected",
            OrderStatus::Canceled => "canceled",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        OrderStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How urgent an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Routine (the default).
    Routine,
    /// Urgent.
    Urgent,
    /// Immediately.
    Stat,
}

impl Priority {
    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "routine" => Some(Priority::Routine),
            "urgent" => Some(Priority::Urgent),
            "stat" => Some(Priority::Stat),
            _ => None,
        }
    }

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Routine => "routine",
            Priority::Urgent => "urgent",
            Priority::Stat => "stat",
        }
    }
}

/// The specimen of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Specimen {
    /// What was (or will be) drawn (`whole blood`, `serum`).
    #[serde(rename = "type")]
    pub specimen_type: String,
    /// When it was collected, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<DateTime<Utc>>,
}

/// A result value exactly as the partner sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResultValue {
    /// A JSON string (`"5.20"`, `"<0.5"`, `"Not detected"`).
    Text(String),
    /// A JSON number.
    Number(serde_json::Number),
}

/// The reference range a result was judged against, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RangeView {
    /// Lowest normal value, if the range has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Highest normal value, if the range has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
}

/// The interpretation of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Flag {
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
    /// Within the reference range (or a normal text value).
    #[serde(rename = "N")]
    Normal,
}

impl Flag {
    /// The contract's spelling (`LL`).
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Low => "L",
            Flag::High => "H",
            Flag::CriticalLow => "LL",
            Flag::CriticalHigh => "HH",
            Flag::Abnormal => "A",
            Flag::Normal => "N",
        }
    }
}

/// One recorded result of an analyte, with the range and flag the LIS
/// attached when it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedResult {
    /// The analyte's code (`HGB`).
    pub code: String,
    /// The ordered test the analyte belongs to (`CBC`).
    pub test: String,
    /// The value exactly as sent.
    pub value: ResultValue,
    /// The unit as sent (the catalog's, for numeric analytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The reference range that applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<RangeView>,
    /// The flag, if one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<Flag>,
}

/// The state of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Internal id (the stream id).
    pub id: Uuid,
    /// The patient.
    pub patient_id: Uuid,
    /// The lab client (the patient's).
    pub client_id: String,
    /// The client's location.
    pub location_id: String,
    /// The lab's accession number, unique in the lab.
    pub accession_number: String,
    /// The partner's identifier for the order.
    pub external_order_id: Option<String>,
    /// The ordered catalog test codes, in order.
    pub tests: Vec<String>,
    /// The specimen; `specimen.collected_at` is the collection instant.
    pub specimen: Specimen,
    /// Priority.
    pub priority: Priority,
    /// Status.
    pub status: OrderStatus,
    /// The current result of each analyte, in the order first recorded.
    pub results: Vec<RecordedResult>,
    /// Why the order was canceled, once it is.
    pub cancel_reason: Option<String>,
    /// Stream version: 1 after placement, +1 per event.
    pub version: i64,
}

/// The events of an order stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    /// An order was placed.
    OrderPlaced(OrderPlaced),
    /// Specimen details, priority or external id changed.
    OrderDetailsChanged(OrderDetailsChanged),
    /// The specimen was collected.
    SpecimenCollected(SpecimenCollected),
    /// The lab received the specimen.
    SpecimenReceived(OrderRef),
    /// The lab started testing.
    OrderStarted(OrderRef),
    /// Results were recorded (or replaced, analyte by analyte).
    ResultsRecorded(ResultsRecorded),
    /// The results were made final.
    ResultsFinalized(OrderRef),
    /// Final results were amended.
    ResultsCorrected(ResultsCorrected),
    /// The order was canceled.
    OrderCanceled(OrderCanceled),
}

impl DomainEvent for OrderEvent {
    const STREAM: StreamKind = StreamKind::Order;
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced(_) => "OrderPlaced",
            OrderEvent::OrderDetailsChanged(_) => "OrderDetailsChanged",
            OrderEvent::SpecimenCollected(_) => "SpecimenCollected",
            OrderEvent::SpecimenReceived(_) => "SpecimenReceived",
            OrderEvent::OrderStarted(_) => "OrderStarted",
            OrderEvent::ResultsRecorded(_) => "ResultsRecorded",
            OrderEvent::ResultsFinalized(_) => "ResultsFinalized",
            OrderEvent::ResultsCorrected(_) => "ResultsCorrected",
            OrderEvent::OrderCanceled(_) => "OrderCanceled",
        }
    }
}

/// Data of `OrderPlaced`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// The patient.
    #[serde(rename = "patientID")]
    pub patient_id: Uuid,
    /// The client.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The location.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// Accession number (given or generated).
    pub accession_number: String,
    /// The partner's order id.
    #[serde(
        rename = "externalOrderID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_order_id: Option<String>,
    /// Ordered test codes.
    pub tests: Vec<String>,
    /// Specimen.
    pub specimen: Specimen,
    /// Priority.
    pub priority: Priority,
}

/// Data of `OrderDetailsChanged`: the order id and only what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderDetailsChanged {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// The changed fields.
    pub changes: OrderChanges,
}

/// The changed fields of an order; `None` means unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderChanges {
    /// New specimen type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specimen_type: Option<String>,
    /// New or removed collection instant.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub collected_at: Option<Option<DateTime<Utc>>>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// New or removed external order id.
    #[serde(
        rename = "externalOrderID",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub external_order_id: Option<Option<String>>,
}

impl OrderChanges {
    fn is_empty(&self) -> bool {
        *self == OrderChanges::default()
    }
}

/// Data of events that only name the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
}

/// Data of `SpecimenCollected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecimenCollected {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// When the specimen was collected.
    pub collected_at: DateTime<Utc>,
}

/// Data of `ResultsRecorded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultsRecorded {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// The results recorded, each replacing any earlier one of its analyte.
    pub results: Vec<RecordedResult>,
}

/// Data of `ResultsCorrected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultsCorrected {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// Why the results were amended.
    pub reason: String,
    /// The amended results.
    pub results: Vec<RecordedResult>,
    /// The results they replace, as they stood (analytes not resulted before
    /// have no entry).
    pub previous: Vec<RecordedResult>,
}

/// Data of `OrderCanceled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCanceled {
    /// Internal id.
    #[serde(rename = "orderID")]
    pub order_id: Uuid,
    /// Why.
    pub reason: String,
}

/// Folds one event into the state. Total: an event that does not fit the
/// state (anything before placement) leaves the state as it is.
pub fn apply(state: Option<Order>, event: &OrderEvent) -> Option<Order> {
    match event {
        OrderEvent::OrderPlaced(e) => Some(Order {
            id: e.order_id,
            patient_id: e.patient_id,
            client_id: e.client_id.clone(),
            location_id: e.location_id.clone(),
            accession_number: e.accession_number.clone(),
            external_order_id: e.external_order_id.clone(),
            tests: e.tests.clone(),
            specimen: e.specimen.clone(),
            priority: e.priority,
            status: OrderStatus::Ordered,
            results: Vec::new(),
            cancel_reason: None,
            version: 1,
        }),
        other => state.map(|mut o| {
            match other {
                OrderEvent::OrderPlaced(_) => {}
                OrderEvent::OrderDetailsChanged(e) => {
                    let c = &e.changes;
                    if let Some(v) = &c.specimen_type {
                        o.specimen.specimen_type = v.clone();
                    }
                    if let Some(v) = c.collected_at {
                        o.specimen.collected_at = v;
                    }
                    if let Some(v) = c.priority {
                        o.priority = v;
                    }
                    if let Some(v) = &c.external_order_id {
                        o.external_order_id = v.clone();
                    }
                }
                OrderEvent::SpecimenCollected(e) => {
                    o.specimen.collected_at = Some(e.collected_at);
                    o.status = OrderStatus::Collected;
                }
                OrderEvent::SpecimenReceived(_) => o.status = OrderStatus::Received,
                OrderEvent::OrderStarted(_) => o.status = OrderStatus::InProgress,
                OrderEvent::ResultsRecorded(e) => {
                    merge_results(&mut o.results, &e.results);
                    o.status = OrderStatus::Resulted;
                }
                OrderEvent::ResultsFinalized(_) => o.status = OrderStatus::Final,
                OrderEvent::ResultsCorrected(e) => {
                    merge_results(&mut o.results, &e.results);
                    o.status = OrderStatus::Corrected;
                }
                OrderEvent::OrderCanceled(e) => {
                    o.cancel_reason = Some(e.reason.clone());
                    o.status = OrderStatus::Canceled;
                }
            }
            o.version += 1;
            o
        }),
    }
}

/// Rebuilds an order from its events in order.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> Option<Order> {
    events.into_iter().fold(None, apply)
}

/// Replaces each analyte's result, appending analytes not resulted before.
fn merge_results(current: &mut Vec<RecordedResult>, new: &[RecordedResult]) {
    for r in new {
        match current.iter_mut().find(|c| c.code == r.code) {
            Some(slot) => *slot = r.clone(),
            None => current.push(r.clone()),
        }
    }
}

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRejection {
    /// One or more fields are missing or invalid (422).
    #[error("invalid fields: {}", .0.iter().map(|e| format!("{} ({})", e.field, e.message)).collect::<Vec<_>>().join(", "))]
    Invalid(Vec<FieldError>),
    /// The action does not fit the order's status (409).
    #[error("cannot {action} an order that is {}", .status.as_str())]
    InvalidStatus {
        /// The action.
        action: OrderAction,
        /// The order's current status.
        status: OrderStatus,
    },
    /// The accession number is already used in the lab (409).
    #[error("duplicate accessionNumber")]
    DuplicateAccession,
}

/// What can be done to a placed order: the lifecycle actions (each its own
/// route, `POST /v1/orders/{orderID}/{action}`) and `update` (`PATCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderAction {
    /// Specimen collected.
    Collect,
    /// Specimen received by the lab.
    Receive,
    /// Testing started.
    Start,
    /// Order canceled, with a reason.
    Cancel,
    /// Results recorded or replaced.
    Results,
    /// Results released (final).
    Finalize,
    /// Final results amended, with a reason.
    Correct,
    /// Details changed (`PATCH`).
    Update,
}

impl OrderAction {
    /// Every action, in the contract's table order.
    pub const ALL: [OrderAction; 8] = [
        OrderAction::Collect,
        OrderAction::Receive,
        OrderAction::Start,
        OrderAction::Cancel,
        OrderAction::Results,
        OrderAction::Finalize,
        OrderAction::Correct,
        OrderAction::Update,
    ];

    /// The actions that have a route of their own,
    /// `POST /v1/orders/{orderID}/{action}`: all but `update` (`PATCH`),
    /// which [`OrderAction::ALL`] lists last.
    pub const LIFECYCLE: &[OrderAction] = OrderAction::ALL.split_last().unwrap().1;

    /// The action's name, as its route's last segment.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderAction::Collect => "collect",
            OrderAction::Receive => "receive",
            OrderAction::Start => "start",
            OrderAction::Cancel => "cancel",
            OrderAction::Results => "results",
            OrderAction::Finalize => "finalize",
            OrderAction::Correct => "correct",
            OrderAction::Update => "update",
        }
    }

    /// The statuses the action is allowed from (the contract's action
    /// table).
    pub fn allowed_from(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            OrderAction::Collect => &[Ordered],
            OrderAction::Receive => &[Collected],
            OrderAction::Start => &[Received],
            OrderAction::Cancel => &[Ordered, Collected, Received],
            OrderAction::Results => &[Received, InProgress, Resulted],
            OrderAction::Finalize => &[Resulted],
            OrderAction::Correct => &[Final, Corrected],
            OrderAction::Update => &[Ordered, Collected, Received, InProgress],
        }
    }

    /// The permission a partner needs for it: results are written only by
    /// those granted `results:write`.
    pub fn permission(self) -> Permission {
        match self {
            OrderAction::Results | OrderAction::Finalize | OrderAction::Correct => {
                Permission::ResultsWrite
            }
            OrderAction::Collect
            | OrderAction::Receive
            | OrderAction::Start
            | OrderAction::Cancel
            | OrderAction::Update => Permission::TestsUpdate,
        }
    }
}

impl std::fmt::Display for OrderAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refuses `action` unless the order's status is one it is allowed from.
fn require(state: &Order, action: OrderAction) -> Result<(), OrderRejection> {
    if action.allowed_from().contains(&state.status) {
        Ok(())
    } else {
        Err(OrderRejection::InvalidStatus {
            action,
            status: state.status,
        })
    }
}

/// The accession number generated for an order placed without one:
/// `A-YYYYMMDD-NNNNNN`, the UTC date of placement and a lab-wide sequence
/// number, zero-padded to six digits (more digits past 999999). For example
/// `A-20261126-000123`.
pub fn generate_accession(date: NaiveDate, seq: u64) -> String {
    format!("A-{}-{seq:06}", date.format("%Y%m%d"))
}

/// What placement needs to know about the patient, looked up by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientFacts {
    /// The patient's client.
    pub client_id: String,
    /// The patient's location (an order may be placed at another location of
    /// the same client).
    pub location_id: String,
    /// Administrative sex.
    pub sex: Sex,
    /// Date of birth (a specimen cannot be collected before it).
    pub date_of_birth: NaiveDate,
}

/// An order request as the partner sent it, before validation. The HTTP
/// layer has already checked JSON types; every rule is checked here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderDraft {
    /// `patientID`, as sent.
    pub patient_id: Option<String>,
    /// `clientID`.
    pub client_id: Option<String>,
    /// `locationID`.
    pub location_id: Option<String>,
    /// `accessionNumber`; generated when absent.
    pub accession_number: Option<String>,
    /// `externalOrderID`.
    pub external_order_id: Option<String>,
    /// The codes of `tests[].code`, in order.
    pub tests: Option<Vec<String>>,
    /// `specimen.type`; when absent, the specimen type of the ordered tests
    /// if they all share one.
    pub specimen_type: Option<String>,
    /// `specimen.collectedAt`, as sent.
    pub collected_at: Option<String>,
    /// `priority`, as sent; `routine` when absent.
    pub priority: Option<String>,
}

/// What placement needs to know from outside, looked up by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceContext {
    /// The patient, or `None` when it does not exist or is outside the
    /// caller's scope (the same error either way).
    pub patient: Option<PatientFacts>,
    /// The client owning the requested `locationID`, if that location exists.
    pub location_client: Option<String>,
    /// The catalog's definitions of (at least) the requested test codes.
    pub catalog: Vec<CatalogTest>,
    /// The accession number to use when the draft has none.
    pub generated_accession: String,
    /// Whether the accession number to be used is already taken.
    pub accession_taken: bool,
    /// The current instant.
    pub now: DateTime<Utc>,
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

/// Parses an RFC 3339 instant that may not lie in the future (nor, when the
/// patient is known, before their date of birth).
fn parse_collected_at(
    field: &str,
    raw: &str,
    now: DateTime<Utc>,
    date_of_birth: Option<NaiveDate>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let Ok(t) = DateTime::parse_from_rfc3339(raw) else {
        errors.push(FieldError::new(
            field,
            "invalid",
            "must be an RFC 3339 timestamp such as 2026-11-26T08:30:00Z",
        ));
        return None;
    };
    let t = t.with_timezone(&Utc);
    if t > now + MAX_CLOCK_SKEW {
        errors.push(FieldError::new(
            field,
            "in_future",
            "must not be in the future",
        ));
        return None;
    }
    if date_of_birth.is_some_and(|d| t.date_naive() < d) {
        errors.push(FieldError::new(
            field,
            "before_birth",
            "must not be before the patient's date of birth",
        ));
        return None;
    }
    Some(t)
}

fn parse_priority(field: &str, raw: &str, errors: &mut Vec<FieldError>) -> Option<Priority> {
    let p = Priority::parse(raw);
    if p.is_none() {
        errors.push(FieldError::new(
            field,
            "invalid",
            "must be one of routine, urgent, stat",
        ));
    }
    p
}

fn check_reason(reason: Option<&str>, errors: &mut Vec<FieldError>) {
    match reason {
        None => errors.push(FieldError::required("reason")),
        Some(r) => check_text("reason", r, MAX_REASON, errors),
    }
}

/// Decides the placement of a new order with id `order_id`.
///
/// Every bad field is reported at once. A patient that does not exist or is
/// out of scope is the same `patientID`/`unknown_patient` error; the order's
/// client must be the patient's (`clientID`/`client_mismatch`); the location
/// must belong to that client (`locationID`/`unknown_location`, whether it
/// does not exist or belongs to another client). A taken accession number
/// (given or generated) is [`OrderRejection::DuplicateAccession`], checked
/// after the fields.
pub fn place(
    order_id: Uuid,
    draft: OrderDraft,
    ctx: &PlaceContext,
) -> Result<OrderEvent, OrderRejection> {
    let mut errors = Vec::new();

    let patient_id = required("patientID", &draft.patient_id, &mut errors).and_then(|raw| {
        match (Uuid::parse_str(raw), &ctx.patient) {
            (Ok(id), Some(_)) => Some(id),
            _ => {
                errors.push(FieldError::new(
                    "patientID",
                    "unknown_patient",
                    "no such patient",
                ));
                None
            }
        }
    });
    let patient = patient_id.and(ctx.patient.as_ref());

    let client = required("clientID", &draft.client_id, &mut errors);
    let mut client_ok = false;
    if let Some(c) = client {
        let before = errors.len();
        check_reference_id("clientID", c, &mut errors);
        if errors.len() == before {
            match patient {
                Some(p) if p.client_id != c => errors.push(FieldError::new(
                    "clientID",
                    "client_mismatch",
                    "must be the patient's client",
                )),
                _ => client_ok = true,
            }
        }
    }
    if let Some(l) = required("locationID", &draft.location_id, &mut errors) {
        let before = errors.len();
        check_reference_id("locationID", l, &mut errors);
        if errors.len() == before && client_ok && ctx.location_client.as_deref() != client {
            errors.push(FieldError::new(
                "locationID",
                "unknown_location",
                "no such location for this client",
            ));
        }
    }

    if let Some(a) = &draft.accession_number {
        check_external_id("accessionNumber", a, &mut errors);
    }
    if let Some(x) = &draft.external_order_id {
        check_external_id("externalOrderID", x, &mut errors);
    }

    let mut tests: Vec<&CatalogTest> = Vec::new();
    match &draft.tests {
        None => errors.push(FieldError::required("tests")),
        Some(codes) if codes.is_empty() => errors.push(FieldError::new(
            "tests",
            "empty",
            "an order needs at least one test",
        )),
        Some(codes) => {
            for (i, code) in codes.iter().enumerate() {
                let field = format!("tests[{i}].code");
                if codes[..i].contains(code) {
                    errors.push(FieldError::new(field, "duplicate", "ordered twice"));
                } else if let Some(t) = ctx.catalog.iter().find(|t| t.code == *code) {
                    tests.push(t);
                } else {
                    errors.push(FieldError::new(
                        field,
                        "unknown_test",
                        "no such test in the catalog",
                    ));
                }
            }
        }
    }

    let specimen_type = match &draft.specimen_type {
        Some(t) => {
            check_text("specimen.type", t, MAX_SPECIMEN_TYPE, &mut errors);
            Some(t.clone())
        }
        None => {
            let first = tests.first().map(|t| &t.specimen_type);
            let shared = first.filter(|f| tests.iter().all(|t| t.specimen_type == **f));
            if shared.is_none() && tests.len() > 1 {
                errors.push(FieldError::new(
                    "specimen.type",
                    "required",
                    "required when the tests are run on different specimen types",
                ));
            }
            shared.cloned()
        }
    };
    let collected_at = draft.collected_at.as_deref().and_then(|raw| {
        parse_collected_at(
            "specimen.collectedAt",
            raw,
            ctx.now,
            patient.map(|p| p.date_of_birth),
            &mut errors,
        )
    });
    let priority = match &draft.priority {
        None => Some(Priority::Routine),
        Some(raw) => parse_priority("priority", raw, &mut errors),
    };

    if !errors.is_empty() {
        return Err(OrderRejection::Invalid(errors));
    }
    if ctx.accession_taken {
        return Err(OrderRejection::DuplicateAccession);
    }
    let (
        Some(patient_id),
        Some(client_id),
        Some(location_id),
        Some(codes),
        Some(specimen_type),
        Some(priority),
    ) = (
        patient_id,
        draft.client_id,
        draft.location_id,
        draft.tests,
        specimen_type,
        priority,
    )
    else {
        unreachable!("validated above");
    };
    Ok(OrderEvent::OrderPlaced(OrderPlaced {
        order_id,
        patient_id,
        client_id,
        location_id,
        accession_number: draft
            .accession_number
            .unwrap_or_else(|| ctx.generated_accession.clone()),
        external_order_id: draft.external_order_id,
        tests: codes,
        specimen: Specimen {
            specimen_type,
            collected_at,
        },
        priority,
    }))
}

/// The specimen part of a merge patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecimenPatch {
    /// `specimen.type`.
    pub specimen_type: Patch<String>,
    /// `specimen.collectedAt`, as sent.
    pub collected_at: Patch<String>,
}

/// A merge patch of an order, as the partner sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderPatch {
    /// `specimen`.
    pub specimen: Patch<SpecimenPatch>,
    /// `priority`, as sent.
    pub priority: Patch<String>,
    /// `externalOrderID`.
    pub external_order_id: Patch<String>,
}

/// Decides a merge patch of an order's specimen details, priority and
/// external order id, allowed while the order is `ordered`, `collected`,
/// `received` or `in_progress`. `None` when nothing changes. The specimen
/// type and priority cannot be removed, nor the collection instant once the
/// specimen is collected.
pub fn update(
    state: &Order,
    patch: OrderPatch,
    now: DateTime<Utc>,
) -> Result<Option<OrderEvent>, OrderRejection> {
    require(state, OrderAction::Update)?;
    let mut errors = Vec::new();
    let mut changes = OrderChanges::default();
    match patch.specimen {
        Patch::Absent => {}
        Patch::Null => errors.push(FieldError::new("specimen", "required", "cannot be removed")),
        Patch::Set(sp) => {
            match sp.specimen_type {
                Patch::Absent => {}
                Patch::Null => errors.push(FieldError::new(
                    "specimen.type",
                    "required",
                    "cannot be removed",
                )),
                Patch::Set(t) => {
                    let before = errors.len();
                    check_text("specimen.type", &t, MAX_SPECIMEN_TYPE, &mut errors);
                    if errors.len() == before && t != state.specimen.specimen_type {
                        changes.specimen_type = Some(t);
                    }
                }
            }
            match sp.collected_at {
                Patch::Absent => {}
                Patch::Null if state.status != OrderStatus::Ordered => {
                    errors.push(FieldError::new(
                        "specimen.collectedAt",
                        "required",
                        "cannot be removed once the specimen is collected",
                    ))
                }
                Patch::Null => {
                    if state.specimen.collected_at.is_some() {
                        changes.collected_at = Some(None);
                    }
                }
                Patch::Set(raw) => {
                    if let Some(t) =
                        parse_collected_at("specimen.collectedAt", &raw, now, None, &mut errors)
                    {
                        if state.specimen.collected_at != Some(t) {
                            changes.collected_at = Some(Some(t));
                        }
                    }
                }
            }
        }
    }
    match patch.priority {
        Patch::Absent => {}
        Patch::Null => errors.push(FieldError::new("priority", "required", "cannot be removed")),
        Patch::Set(raw) => {
            if let Some(p) = parse_priority("priority", &raw, &mut errors) {
                changes.priority = (p != state.priority).then_some(p);
            }
        }
    }
    match patch.external_order_id {
        Patch::Absent => {}
        Patch::Null => {
            if state.external_order_id.is_some() {
                changes.external_order_id = Some(None);
            }
        }
        Patch::Set(v) => {
            let before = errors.len();
            check_external_id("externalOrderID", &v, &mut errors);
            if errors.len() == before && state.external_order_id.as_ref() != Some(&v) {
                changes.external_order_id = Some(Some(v));
            }
        }
    }
    if !errors.is_empty() {
        return Err(OrderRejection::Invalid(errors));
    }
    Ok(
        (!changes.is_empty()).then_some(OrderEvent::OrderDetailsChanged(OrderDetailsChanged {
            order_id: state.id,
            changes,
        })),
    )
}

/// Decides the collection of an `ordered` order's specimen. The instant is
/// `collected_at` when given (RFC 3339, not in the future, field
/// `collectedAt`), else the one already on the specimen, else `now`.
pub fn collect(
    state: &Order,
    collected_at: Option<String>,
    now: DateTime<Utc>,
) -> Result<OrderEvent, OrderRejection> {
    require(state, OrderAction::Collect)?;
    let at = match collected_at {
        Some(raw) => {
            let mut errors = Vec::new();
            match parse_collected_at("collectedAt", &raw, now, None, &mut errors) {
                Some(t) => t,
                None => return Err(OrderRejection::Invalid(errors)),
            }
        }
        None => state.specimen.collected_at.unwrap_or(now),
    };
    Ok(OrderEvent::SpecimenCollected(SpecimenCollected {
        order_id: state.id,
        collected_at: at,
    }))
}

/// Decides the lab's receipt of a `collected` order's specimen.
pub fn receive(state: &Order) -> Result<OrderEvent, OrderRejection> {
    require(state, OrderAction::Receive)?;
    Ok(OrderEvent::SpecimenReceived(OrderRef {
        order_id: state.id,
    }))
}

/// Decides the start of testing of a `received` order.
pub fn start(state: &Order) -> Result<OrderEvent, OrderRejection> {
    require(state, OrderAction::Start)?;
    Ok(OrderEvent::OrderStarted(OrderRef { order_id: state.id }))
}

/// Decides the release of a `resulted` order's results as final.
pub fn finalize(state: &Order) -> Result<OrderEvent, OrderRejection> {
    require(state, OrderAction::Finalize)?;
    Ok(OrderEvent::ResultsFinalized(OrderRef {
        order_id: state.id,
    }))
}

/// Decides the cancellation of an `ordered`, `collected` or `received`
/// order; `reason` is required (non-blank text, field `reason`).
pub fn cancel(state: &Order, reason: Option<String>) -> Result<OrderEvent, OrderRejection> {
    require(state, OrderAction::Cancel)?;
    let mut errors = Vec::new();
    check_reason(reason.as_deref(), &mut errors);
    match reason {
        Some(reason) if errors.is_empty() => Ok(OrderEvent::OrderCanceled(OrderCanceled {
            order_id: state.id,
            reason,
        })),
        _ => Err(OrderRejection::Invalid(errors)),
    }
}

/// One result as the partner sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultEntry {
    /// The analyte's code.
    pub code: String,
    /// The value, any JSON (only strings and numbers are accepted).
    pub value: serde_json::Value,
    /// The unit.
    pub unit: Option<String>,
}

/// What recording results needs to know from outside, looked up by the
/// caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultContext {
    /// The catalog's current definitions of (at least) the order's tests.
    pub catalog: Vec<CatalogTest>,
    /// The patient's sex.
    pub patient_sex: Sex,
    /// The patient's date of birth.
    pub patient_date_of_birth: NaiveDate,
    /// The current instant (the age is taken on this date when the specimen
    /// has no collection instant).
    pub now: DateTime<Utc>,
}

/// Decides recording (or replacing) results of a `received`, `in_progress`
/// or `resulted` order. Each analyte must belong to one of the order's tests
/// (the first of them, in order, that measures it); see the module docs for
/// values, units, ranges and flags.
pub fn record_results(
    state: &Order,
    entries: Vec<ResultEntry>,
    ctx: &ResultContext,
) -> Result<OrderEvent, OrderRejection> {
    require(state, OrderAction::Results)?;
    let mut errors = Vec::new();
    let results = judge_entries(state, entries, ctx, &mut errors);
    if !errors.is_empty() {
        return Err(OrderRejection::Invalid(errors));
    }
    Ok(OrderEvent::ResultsRecorded(ResultsRecorded {
        order_id: state.id,
        results,
    }))
}

/// Decides the correction of a `final` or `corrected` order's results.
/// `reason` is required; the current results of the corrected analytes are
/// kept in the event as `previous`. An analyte not resulted before may be
/// added.
pub fn correct(
    state: &Order,
    reason: Option<String>,
    entries: Vec<ResultEntry>,
    ctx: &ResultContext,
) -> Result<OrderEvent, OrderRejection> {
    require(state, OrderAction::Correct)?;
    let mut errors = Vec::new();
    check_reason(reason.as_deref(), &mut errors);
    let results = judge_entries(state, entries, ctx, &mut errors);
    let Some(reason) = reason.filter(|_| errors.is_empty()) else {
        return Err(OrderRejection::Invalid(errors));
    };
    let previous = results
        .iter()
        .filter_map(|r| state.results.iter().find(|p| p.code == r.code).cloned())
        .collect();
    Ok(OrderEvent::ResultsCorrected(ResultsCorrected {
        order_id: state.id,
        reason,
        results,
        previous,
    }))
}

/// Validates the entries against the order's tests and judges each; pushes
/// field errors `results[i].*` and returns the judged results.
fn judge_entries(
    state: &Order,
    entries: Vec<ResultEntry>,
    ctx: &ResultContext,
    errors: &mut Vec<FieldError>,
) -> Vec<RecordedResult> {
    if entries.is_empty() {
        errors.push(FieldError::new(
            "results",
            "empty",
            "must name at least one result",
        ));
    }
    let collected = state.specimen.collected_at.unwrap_or(ctx.now).date_naive();
    let age_days = u32::try_from((collected - ctx.patient_date_of_birth).num_days().max(0))
        .unwrap_or(u32::MAX);
    let mut results = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("results[{i}]");
        let found = state.tests.iter().find_map(|code| {
            let test = ctx.catalog.iter().find(|t| t.code == *code)?;
            Some((test, test.analyte(&entry.code)?))
        });
        let before = errors.len();
        if entries[..i].iter().any(|e| e.code == entry.code) {
            errors.push(FieldError::new(
                format!("{at}.code"),
                "duplicate",
                "reported twice",
            ));
        }
        let Some((test, analyte)) = found else {
            errors.push(FieldError::new(
                format!("{at}.code"),
                "unknown_analyte",
                "not measured by any of the order's tests",
            ));
            continue;
        };
        let value = match &entry.value {
            serde_json::Value::String(s) => ResultValue::Text(s.clone()),
            serde_json::Value::Number(n) => ResultValue::Number(n.clone()),
            _ => {
                errors.push(FieldError::new(
                    format!("{at}.value"),
                    "wrong_type",
                    "must be a string or a number",
                ));
                continue;
            }
        };
        let judged = judge(
            analyte,
            &value,
            entry.unit.as_deref(),
            ctx.patient_sex,
            age_days,
        );
        match judged {
            Ok((reference_range, flag)) if errors.len() == before => {
                results.push(RecordedResult {
                    code: entry.code.clone(),
                    test: test.code.clone(),
                    value,
                    unit: entry.unit.clone(),
                    reference_range,
                    flag,
                });
            }
            Ok(_) => {}
            Err(mut es) => {
                for e in &mut es {
                    e.field = format!("{at}.{}", e.field);
                }
                errors.extend(es);
            }
        }
    }
    results
}

/// The number a numeric value stands for: a JSON number, or a string that is
/// a decimal number (`-?digits[.digits]`) optionally after `<`, `>`, `<=` or
/// `>=`; a comparator value counts as its number.
pub fn numeric_value(value: &ResultValue) -> Option<f64> {
    match value {
        ResultValue::Number(n) => n.as_f64(),
        ResultValue::Text(s) => {
            let number = ["<=", ">=", "<", ">"]
                .iter()
                .find_map(|c| s.strip_prefix(c))
                .unwrap_or(s);
            let digits = number.strip_prefix('-').unwrap_or(number);
            let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
            let decimal = !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit());
            decimal.then(|| number.parse().ok()).flatten()
        }
    }
}

/// Judges one value of an analyte: checks value and unit (errors named by
/// `value` / `unit`) and returns the range that applies and the flag.
fn judge(
    analyte: &Analyte,
    value: &ResultValue,
    unit: Option<&str>,
    sex: Sex,
    age_days: u32,
) -> Result<(Option<RangeView>, Option<Flag>), Vec<FieldError>> {
    let mut errors = Vec::new();
    match &analyte.kind {
        AnalyteKind::Numeric {
            unit: expected,
            critical_low,
            critical_high,
            ..
        } => {
            let number = numeric_value(value);
            if number.is_none() {
                errors.push(FieldError::new(
                    "value",
                    "not_numeric",
                    "must be a decimal number, optionally after <, >, <= or >=",
                ));
            }
            match unit {
                None => errors.push(FieldError::new(
                    "unit",
                    "required",
                    format!("this analyte is reported in {expected}"),
                )),
                Some(u) if u != expected => errors.push(FieldError::new(
                    "unit",
                    "unit_mismatch",
                    format!("this analyte is reported in {expected}"),
                )),
                Some(_) => {}
            }
            let Some(x) = number.filter(|_| errors.is_empty()) else {
                return Err(errors);
            };
            let Some(range) = analyte.kind.range_for(sex, age_days) else {
                return Ok((None, None));
            };
            let flag = if critical_low.is_some_and(|c| x < c) {
                Flag::CriticalLow
            } else if critical_high.is_some_and(|c| x > c) {
                Flag::CriticalHigh
            } else if range.low.is_some_and(|l| x < l) {
                Flag::Low
            } else if range.high.is_some_and(|h| x > h) {
                Flag::High
            } else {
                Flag::Normal
            };
            let view = RangeView {
                low: range.low,
                high: range.high,
            };
            Ok((Some(view), Some(flag)))
        }
        AnalyteKind::Text { normal } => {
            let text = match value {
                ResultValue::Text(s) => {
                    check_text("value", s, MAX_TEXT_VALUE, &mut errors);
                    s.clone()
                }
                ResultValue::Number(n) => n.to_string(),
            };
            if unit.is_some() {
                errors.push(FieldError::new(
                    "unit",
                    "unit_mismatch",
                    "this analyte has no unit",
                ));
            }
            if !errors.is_empty() {
                return Err(errors);
            }
            let flag = (!normal.is_empty()).then(|| {
                if normal
                    .iter()
                    .any(|n| n.trim().eq_ignore_ascii_case(text.trim()))
                {
                    Flag::Normal
                } else {
                    Flag::Abnormal
                }
            });
            Ok((None, flag))
        }
    }
}

#[cfg(test)]
mod tests;
