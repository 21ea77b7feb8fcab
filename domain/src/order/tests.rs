//! Given/when/then tests of the order aggregate: given past events, when a
//! command is decided, then this event (or this rejection) results.

use serde_json::json;

use super::*;
use crate::catalog::{seed_catalog, ADULT_AGE_DAYS};
use crate::event::DomainEvent;
use crate::validation::is_external_id;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The id given to the order under test.
fn oid() -> Uuid {
    Uuid::from_u128(0x0dde_0001)
}

/// The patient of the order.
fn pid() -> Uuid {
    Uuid::from_u128(0x0a11ce)
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
}

fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test instant")
        .with_timezone(&Utc)
}

/// Now, as far as every test is concerned.
fn now() -> DateTime<Utc> {
    instant("2026-11-26T12:00:00Z")
}

/// When the specimen of the standard draft was collected.
fn collected() -> DateTime<Utc> {
    instant("2026-11-26T08:30:00Z")
}

/// An adult woman of client C1 at location L1.
fn patient() -> PatientFacts {
    PatientFacts {
        client_id: "C1".into(),
        location_id: "L1".into(),
        sex: Sex::Female,
        date_of_birth: date("1990-12-10"),
    }
}

/// A placement context where everything the draft names exists and nothing
/// conflicts.
fn place_ctx() -> PlaceContext {
    PlaceContext {
        patient: Some(patient()),
        location_client: Some("C1".into()),
        catalog: seed_catalog(),
        generated_accession: "A-20261126-000001".into(),
        accession_taken: false,
        now: now(),
    }
}

/// The contract's example order.
fn draft() -> OrderDraft {
    OrderDraft {
        patient_id: Some(pid().to_string()),
        client_id: Some("C1".into()),
        location_id: Some("L1".into()),
        accession_number: Some("A-2026-000123".into()),
        external_order_id: Some("EHR-77".into()),
        tests: Some(vec!["CBC".into(), "LIPID".into()]),
        specimen_type: Some("blood".into()),
        collected_at: Some("2026-11-26T08:30:00Z".into()),
        priority: Some("routine".into()),
    }
}

fn draft_with(change: impl FnOnce(&mut OrderDraft)) -> OrderDraft {
    let mut d = draft();
    change(&mut d);
    d
}

/// An order of every seeded test, so any seeded analyte may be resulted.
fn draft_of_everything() -> OrderDraft {
    draft_with(|d| d.tests = Some(seed_catalog().into_iter().map(|t| t.code).collect()))
}

fn given(events: &[OrderEvent]) -> Option<Order> {
    replay(events)
}

fn when_placing(draft: OrderDraft, ctx: &PlaceContext) -> Result<OrderEvent, OrderRejection> {
    place(oid(), draft, ctx)
}

fn placed(draft: OrderDraft) -> OrderPlaced {
    match when_placing(draft, &place_ctx()) {
        Ok(OrderEvent::OrderPlaced(e)) => e,
        other => panic!("expected OrderPlaced, got {other:?}"),
    }
}

/// Results context for a patient of this sex and date of birth.
fn rctx(sex: Sex, dob: NaiveDate) -> ResultContext {
    ResultContext {
        catalog: seed_catalog(),
        patient_sex: sex,
        patient_date_of_birth: dob,
        now: now(),
    }
}

/// Results context for the standard (adult female) patient.
fn ctx() -> ResultContext {
    rctx(Sex::Female, patient().date_of_birth)
}

fn entry(code: &str, value: serde_json::Value, unit: Option<&str>) -> ResultEntry {
    ResultEntry {
        code: code.into(),
        value,
        unit: unit.map(Into::into),
    }
}

/// A valid haemoglobin result.
fn hgb(value: &str) -> ResultEntry {
    entry("HGB", json!(value), Some("g/dL"))
}

/// Decides `f` on `state` and folds the event in, returning both.
fn step(
    state: Order,
    f: impl FnOnce(&Order) -> Result<OrderEvent, OrderRejection>,
) -> (OrderEvent, Order) {
    let event = f(&state).expect("step accepted");
    let next = apply(Some(state), &event).expect("state stays");
    (event, next)
}

/// The events that bring an order (placed from `draft`) to `status`, each
/// decided by the aggregate itself.
fn events_to(status: OrderStatus, draft: OrderDraft) -> Vec<OrderEvent> {
    use OrderStatus::*;
    let first = when_placing(draft, &place_ctx()).expect("placed");
    let mut state = given(std::slice::from_ref(&first)).unwrap();
    let mut events = vec![first];
    let path: &[OrderStatus] = match status {
        Ordered => &[],
        Collected => &[Collected],
        Received => &[Collected, Received],
        InProgress => &[Collected, Received, InProgress],
        Resulted => &[Collected, Received, InProgress, Resulted],
        Final => &[Collected, Received, InProgress, Resulted, Final],
        Corrected => &[Collected, Received, InProgress, Resulted, Final, Corrected],
        Canceled => &[Canceled],
    };
    for next in path {
        let (event, s) = step(state, |o| match next {
            Collected => collect(o, None, now()),
            Received => receive(o),
            InProgress => start(o),
            Resulted => record_results(o, vec![hgb("13.0")], &ctx()),
            Final => finalize(o),
            Corrected => correct(o, Some("typo".into()), vec![hgb("13.1")], &ctx()),
            Canceled => cancel(o, Some("duplicate order".into())),
            Ordered => unreachable!(),
        });
        assert_eq!(s.status, *next);
        events.push(event);
        state = s;
    }
    events
}

/// An order (from the standard draft) in `status`.
fn order_in(status: OrderStatus) -> Order {
    given(&events_to(status, draft())).expect("order exists")
}

/// An order of every seeded test, received and ready for results.
fn received_everything() -> Order {
    given(&events_to(OrderStatus::Received, draft_of_everything())).unwrap()
}

/// The (field, code) pairs of an `Invalid` rejection, in order.
fn invalid<T: std::fmt::Debug>(result: Result<T, OrderRejection>) -> Vec<(String, &'static str)> {
    match result {
        Err(OrderRejection::Invalid(errors)) => {
            assert!(!errors.is_empty(), "Invalid always names a field");
            for e in &errors {
                assert!(!e.message.is_empty(), "{e:?} has a message");
            }
            errors.into_iter().map(|e| (e.field, e.code)).collect()
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn errs(expected: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    expected.iter().map(|(f, c)| (f.to_string(), *c)).collect()
}

/// The results of an accepted `ResultsRecorded` decision.
fn recorded(result: Result<OrderEvent, OrderRejection>) -> Vec<RecordedResult> {
    match result {
        Ok(OrderEvent::ResultsRecorded(e)) => {
            assert_eq!(e.order_id, oid());
            e.results
        }
        other => panic!("expected ResultsRecorded, got {other:?}"),
    }
}

fn round_trip(event: &OrderEvent) -> OrderEvent {
    let data = event.to_data();
    assert!(data.is_object(), "data is an object: {data}");
    OrderEvent::from_parts(event.event_type(), data).expect("stored event parses")
}

fn set(v: &str) -> Patch<String> {
    Patch::Set(v.to_string())
}

type DraftChange = fn(&mut OrderDraft);

// ---------------------------------------------------------------------------
// Placing: the happy path
// ---------------------------------------------------------------------------

#[test]
fn a_valid_draft_places_the_order_with_every_field() {
    let event = when_placing(draft(), &place_ctx()).unwrap();
    assert_eq!(
        event,
        OrderEvent::OrderPlaced(OrderPlaced {
            order_id: oid(),
            patient_id: pid(),
            client_id: "C1".into(),
            location_id: "L1".into(),
            accession_number: "A-2026-000123".into(),
            external_order_id: Some("EHR-77".into()),
            tests: vec!["CBC".into(), "LIPID".into()],
            specimen: Specimen {
                specimen_type: "blood".into(),
                collected_at: Some(collected()),
            },
            priority: Priority::Routine,
        })
    );
    let order = given(&[event]).unwrap();
    assert_eq!(order.status, OrderStatus::Ordered);
    assert_eq!(order.version, 1);
    assert!(order.results.is_empty());
    assert_eq!(order.cancel_reason, None);
}

#[test]
fn a_minimal_draft_gets_a_generated_accession_the_catalog_specimen_and_routine() {
    let e = placed(draft_with(|d| {
        d.accession_number = None;
        d.external_order_id = None;
        d.tests = Some(vec!["BMP".into()]);
        d.specimen_type = None;
        d.collected_at = None;
        d.priority = None;
    }));
    assert_eq!(e.accession_number, "A-20261126-000001", "the generated one");
    assert_eq!(e.external_order_id, None);
    assert_eq!(
        e.specimen,
        Specimen {
            specimen_type: "serum".into(),
            collected_at: None
        }
    );
    assert_eq!(e.priority, Priority::Routine);
}

#[test]
fn tests_sharing_a_specimen_type_need_no_specimen_type() {
    let e = placed(draft_with(|d| {
        d.tests = Some(vec!["BMP".into(), "LIPID".into(), "TSH".into()]);
        d.specimen_type = None;
    }));
    assert_eq!(e.specimen.specimen_type, "serum");
}

#[test]
fn tests_on_different_specimens_need_a_specimen_type() {
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| d.specimen_type = None),
            &place_ctx()
        )),
        errs(&[("specimen.type", "required")])
    );
}

#[test]
fn every_priority_is_accepted_and_others_are_not() {
    for (raw, p) in [
        ("routine", Priority::Routine),
        ("urgent", Priority::Urgent),
        ("stat", Priority::Stat),
    ] {
        assert_eq!(
            placed(draft_with(|d| d.priority = Some(raw.into()))).priority,
            p
        );
        assert_eq!(p.as_str(), raw);
        assert_eq!(serde_json::to_value(p).unwrap(), json!(raw));
    }
    for raw in ["STAT", "asap", "", " routine"] {
        assert_eq!(
            invalid(when_placing(
                draft_with(|d| d.priority = Some(raw.into())),
                &place_ctx()
            )),
            errs(&[("priority", "invalid")]),
            "{raw:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Placing: required fields and every error at once
// ---------------------------------------------------------------------------

#[test]
fn each_missing_required_field_is_reported_as_required() {
    let table: [(&str, DraftChange); 4] = [
        ("patientID", |d| d.patient_id = None),
        ("clientID", |d| d.client_id = None),
        ("locationID", |d| d.location_id = None),
        ("tests", |d| d.tests = None),
    ];
    for (field, change) in table {
        assert_eq!(
            invalid(when_placing(draft_with(change), &place_ctx())),
            errs(&[(field, "required")]),
            "missing {field}"
        );
    }
}

#[test]
fn an_empty_draft_lists_every_required_field() {
    assert_eq!(
        invalid(when_placing(OrderDraft::default(), &place_ctx())),
        errs(&[
            ("patientID", "required"),
            ("clientID", "required"),
            ("locationID", "required"),
            ("tests", "required"),
        ])
    );
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let c = PlaceContext {
        location_client: Some("C2".into()),
        ..place_ctx()
    };
    let bad = OrderDraft {
        patient_id: Some(pid().to_string()),
        client_id: Some("C1".into()),
        location_id: Some("L9".into()),
        accession_number: Some("A 1".into()),
        external_order_id: Some(String::new()),
        tests: Some(vec!["CBC".into(), "NOPE".into(), "CBC".into()]),
        specimen_type: Some(" ".into()),
        collected_at: Some("yesterday".into()),
        priority: Some("soon".into()),
    };
    assert_eq!(
        invalid(when_placing(bad, &c)),
        errs(&[
            ("locationID", "unknown_location"),
            ("accessionNumber", "invalid"),
            ("externalOrderID", "invalid"),
            ("tests[1].code", "unknown_test"),
            ("tests[2].code", "duplicate"),
            ("specimen.type", "empty"),
            ("specimen.collectedAt", "invalid"),
            ("priority", "invalid"),
        ])
    );
}

#[test]
fn error_messages_never_echo_the_submitted_value() {
    let secret = "Secret\u{1}Value";
    let result = when_placing(
        draft_with(|d| {
            d.patient_id = Some(secret.into());
            d.client_id = Some(secret.into());
            d.accession_number = Some(secret.into());
            d.external_order_id = Some(secret.into());
            d.tests = Some(vec![secret.into()]);
            d.specimen_type = Some(secret.into());
            d.collected_at = Some(secret.into());
            d.priority = Some(secret.into());
        }),
        &place_ctx(),
    );
    let Err(OrderRejection::Invalid(errors)) = result else {
        panic!("expected Invalid, got {result:?}");
    };
    assert_eq!(errors.len(), 8, "{errors:?}");
    for e in errors {
        assert!(!e.message.contains("Secret"), "{e:?}");
    }
}

// ---------------------------------------------------------------------------
// Placing: patient, client and location
// ---------------------------------------------------------------------------

#[test]
fn an_unknown_or_out_of_scope_patient_is_one_and_the_same_error() {
    let missing = PlaceContext {
        patient: None,
        ..place_ctx()
    };
    let expected = errs(&[("patientID", "unknown_patient")]);
    assert_eq!(invalid(when_placing(draft(), &missing)), expected);
    // A malformed id names no patient either: the same answer.
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| d.patient_id = Some("not-a-uuid".into())),
            &missing
        )),
        expected
    );
}

#[test]
fn the_order_client_must_be_the_patients() {
    let c = PlaceContext {
        location_client: Some("C2".into()),
        ..place_ctx()
    };
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| {
                d.client_id = Some("C2".into());
                d.location_id = Some("L2".into());
            }),
            &c
        )),
        errs(&[("clientID", "client_mismatch")]),
        "a location of the wrong client is not judged on top"
    );
}

#[test]
fn an_order_may_be_placed_at_another_location_of_the_patients_client() {
    let e = placed(draft_with(|d| d.location_id = Some("L7".into())));
    assert_eq!(e.location_id, "L7");
}

#[test]
fn a_location_of_another_client_looks_exactly_like_an_unknown_location() {
    let unknown = PlaceContext {
        location_client: None,
        ..place_ctx()
    };
    let foreign = PlaceContext {
        location_client: Some("C2".into()),
        ..place_ctx()
    };
    let a = when_placing(draft(), &unknown);
    let b = when_placing(draft(), &foreign);
    assert_eq!(a, b);
    assert_eq!(invalid(a), errs(&[("locationID", "unknown_location")]));
}

#[test]
fn client_and_location_ids_must_be_reference_ids() {
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| {
                d.client_id = Some("C 1".into());
                d.location_id = Some("L/1".into());
            }),
            &place_ctx()
        )),
        errs(&[("clientID", "invalid"), ("locationID", "invalid")])
    );
}

#[test]
fn with_an_unknown_patient_the_location_is_still_checked_against_the_client() {
    let c = PlaceContext {
        patient: None,
        location_client: Some("C2".into()),
        ..place_ctx()
    };
    assert_eq!(
        invalid(when_placing(draft(), &c)),
        errs(&[
            ("patientID", "unknown_patient"),
            ("locationID", "unknown_location")
        ])
    );
}

// ---------------------------------------------------------------------------
// Placing: tests, identifiers, accession numbers
// ---------------------------------------------------------------------------

#[test]
fn tests_must_be_non_empty_unique_and_from_the_catalog() {
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| d.tests = Some(vec![])),
            &place_ctx()
        )),
        errs(&[("tests", "empty")])
    );
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| d.tests = Some(vec!["TSH".into(), "cbc".into(), "TSH".into()])),
            &place_ctx()
        )),
        errs(&[
            ("tests[1].code", "unknown_test"),
            ("tests[2].code", "duplicate")
        ])
    );
    let no_lipid = PlaceContext {
        catalog: seed_catalog()
            .into_iter()
            .filter(|t| t.code != "LIPID")
            .collect(),
        ..place_ctx()
    };
    assert_eq!(
        invalid(when_placing(draft(), &no_lipid)),
        errs(&[("tests[1].code", "unknown_test")])
    );
}

#[test]
fn accession_number_and_external_order_id_are_1_to_64_visible_ascii() {
    for ok in ["A", "!~", &"x".repeat(64)] {
        let e = placed(draft_with(|d| {
            d.accession_number = Some(ok.into());
            d.external_order_id = Some(ok.into());
        }));
        assert_eq!(e.accession_number, ok);
        assert_eq!(e.external_order_id.as_deref(), Some(ok));
    }
    for bad in ["", "a b", &"x".repeat(65), "tab\t", "é"] {
        assert_eq!(
            invalid(when_placing(
                draft_with(|d| {
                    d.accession_number = Some(bad.into());
                    d.external_order_id = Some(bad.into());
                }),
                &place_ctx()
            )),
            errs(&[
                ("accessionNumber", "invalid"),
                ("externalOrderID", "invalid")
            ]),
            "{bad:?}"
        );
    }
}

#[test]
fn a_taken_accession_number_is_a_duplicate() {
    let taken = PlaceContext {
        accession_taken: true,
        ..place_ctx()
    };
    assert_eq!(
        when_placing(draft(), &taken),
        Err(OrderRejection::DuplicateAccession)
    );
    assert_eq!(
        when_placing(draft_with(|d| d.accession_number = None), &taken),
        Err(OrderRejection::DuplicateAccession),
        "a taken generated number is refused too, so the caller retries"
    );
    assert_eq!(
        invalid(when_placing(draft_with(|d| d.tests = None), &taken)),
        errs(&[("tests", "required")]),
        "bad fields are reported before the clash"
    );
}

#[test]
fn generated_accession_numbers_follow_the_documented_format() {
    let d = date("2026-11-26");
    assert_eq!(generate_accession(d, 123), "A-20261126-000123");
    assert_eq!(generate_accession(d, 0), "A-20261126-000000");
    assert_eq!(generate_accession(d, 999_999), "A-20261126-999999");
    assert_eq!(generate_accession(d, 1_234_567), "A-20261126-1234567");
    assert_eq!(
        generate_accession(date("2027-01-05"), 7),
        "A-20270105-000007"
    );
    assert!(is_external_id(&generate_accession(d, u64::MAX)));
}

// ---------------------------------------------------------------------------
// Placing: collection instant
// ---------------------------------------------------------------------------

#[test]
fn collected_at_is_rfc_3339_converted_to_utc() {
    let e = placed(draft_with(|d| {
        d.collected_at = Some("2026-11-26T09:30:00+01:00".into())
    }));
    assert_eq!(e.specimen.collected_at, Some(collected()));
    for bad in [
        "2026-11-26",
        "2026-11-26T08:30:00",
        "26/11/2026 08:30",
        "",
        "2026-13-01T00:00:00Z",
    ] {
        assert_eq!(
            invalid(when_placing(
                draft_with(|d| d.collected_at = Some(bad.into())),
                &place_ctx()
            )),
            errs(&[("specimen.collectedAt", "invalid")]),
            "{bad:?}"
        );
    }
}

#[test]
fn collected_at_may_not_be_in_the_future_beyond_clock_skew() {
    let within = now() + MAX_CLOCK_SKEW;
    let e = placed(draft_with(|d| d.collected_at = Some(within.to_rfc3339())));
    assert_eq!(e.specimen.collected_at, Some(within));
    let beyond = within + Duration::seconds(1);
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| d.collected_at = Some(beyond.to_rfc3339())),
            &place_ctx()
        )),
        errs(&[("specimen.collectedAt", "in_future")])
    );
}

#[test]
fn collected_at_may_not_be_before_the_patients_birth() {
    assert_eq!(
        invalid(when_placing(
            draft_with(|d| d.collected_at = Some("1990-12-09T23:59:59Z".into())),
            &place_ctx()
        )),
        errs(&[("specimen.collectedAt", "before_birth")])
    );
    let e = placed(draft_with(|d| {
        d.collected_at = Some("1990-12-10T00:00:00Z".into())
    }));
    assert!(
        e.specimen.collected_at.is_some(),
        "the day of birth is fine"
    );
}

// ---------------------------------------------------------------------------
// The status machine, cell by cell
// ---------------------------------------------------------------------------

/// Every action with valid input, and the event type it produces.
type Action = (
    OrderAction,
    &'static str,
    fn(&Order) -> Result<Option<OrderEvent>, OrderRejection>,
);

fn actions() -> [Action; 8] {
    [
        (OrderAction::Collect, "SpecimenCollected", |o| {
            collect(o, None, now()).map(Some)
        }),
        (OrderAction::Receive, "SpecimenReceived", |o| {
            receive(o).map(Some)
        }),
        (OrderAction::Start, "OrderStarted", |o| start(o).map(Some)),
        (OrderAction::Cancel, "OrderCanceled", |o| {
            cancel(o, Some("patient left".into())).map(Some)
        }),
        (OrderAction::Results, "ResultsRecorded", |o| {
            record_results(o, vec![hgb("12.5")], &ctx()).map(Some)
        }),
        (OrderAction::Finalize, "ResultsFinalized", finalize_some),
        (OrderAction::Correct, "ResultsCorrected", |o| {
            correct(o, Some("wrong sample".into()), vec![hgb("12.6")], &ctx()).map(Some)
        }),
        (OrderAction::Update, "OrderDetailsChanged", |o| {
            update(
                o,
                OrderPatch {
                    priority: set("stat"),
                    ..OrderPatch::default()
                },
                now(),
            )
        }),
    ]
}

fn finalize_some(o: &Order) -> Result<Option<OrderEvent>, OrderRejection> {
    finalize(o).map(Some)
}

#[test]
fn every_status_and_action_pair_follows_the_contract_table() {
    use OrderStatus::*;
    // The contract's action table, written out independently of
    // `OrderAction::allowed_from`:
    // (action, allowed from, leads to; `None` = the status stays).
    let table: [(&str, &[OrderStatus], Option<OrderStatus>); 8] = [
        ("collect", &[Ordered], Some(Collected)),
        ("receive", &[Collected], Some(Received)),
        ("start", &[Received], Some(InProgress)),
        ("cancel", &[Ordered, Collected, Received], Some(Canceled)),
        ("results", &[Received, InProgress, Resulted], Some(Resulted)),
        ("finalize", &[Resulted], Some(Final)),
        ("correct", &[Final, Corrected], Some(Corrected)),
        ("update", &[Ordered, Collected, Received, InProgress], None),
    ];
    let mut cells = 0;
    for status in OrderStatus::ALL {
        let order = order_in(status);
        assert_eq!(order.status, status);
        for (name, event_type, decide) in actions() {
            let (_, allowed, leads_to) = table.iter().find(|(a, ..)| *a == name.as_str()).unwrap();
            let result = decide(&order);
            if allowed.contains(&status) {
                let event = result
                    .unwrap_or_else(|e| panic!("{name} from {status:?}: {e:?}"))
                    .unwrap_or_else(|| panic!("{name} from {status:?} has an event"));
                assert_eq!(event.event_type(), event_type, "{name} from {status:?}");
                let after = apply(Some(order.clone()), &event).unwrap();
                assert_eq!(
                    after.status,
                    leads_to.unwrap_or(status),
                    "{name} from {status:?}"
                );
                assert_eq!(after.version, order.version + 1);
            } else {
                assert_eq!(
                    result,
                    Err(OrderRejection::InvalidStatus {
                        action: name,
                        status
                    }),
                    "{name} from {status:?}"
                );
            }
            cells += 1;
        }
    }
    assert_eq!(cells, 64);
}

#[test]
fn the_published_action_table_matches_the_decisions() {
    for name in OrderAction::ALL {
        let allowed = name.allowed_from();
        let (.., decide) = actions().into_iter().find(|(a, ..)| *a == name).unwrap();
        for status in OrderStatus::ALL {
            let refused = matches!(
                decide(&order_in(status)),
                Err(OrderRejection::InvalidStatus { .. })
            );
            assert_eq!(!refused, allowed.contains(&status), "{name} {status:?}");
        }
    }
}

#[test]
fn an_invalid_status_is_reported_before_bad_input() {
    let order = order_in(OrderStatus::Final);
    assert_eq!(
        cancel(&order, None),
        Err(OrderRejection::InvalidStatus {
            action: OrderAction::Cancel,
            status: OrderStatus::Final
        })
    );
    assert_eq!(
        record_results(&order, vec![], &ctx()),
        Err(OrderRejection::InvalidStatus {
            action: OrderAction::Results,
            status: OrderStatus::Final
        })
    );
    let ordered = order_in(OrderStatus::Ordered);
    assert!(matches!(
        correct(&ordered, None, vec![], &ctx()),
        Err(OrderRejection::InvalidStatus {
            action: OrderAction::Correct,
            ..
        })
    ));
    let rejection = OrderRejection::InvalidStatus {
        action: OrderAction::Finalize,
        status: OrderStatus::InProgress,
    };
    assert_eq!(
        rejection.to_string(),
        "cannot finalize an order that is in_progress"
    );
}

#[test]
fn statuses_are_spelled_as_in_the_contract() {
    let names: Vec<_> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "ordered",
            "collected",
            "received",
            "in_progress",
            "resulted",
            "final",
            "corrected",
            "canceled"
        ]
    );
    for s in OrderStatus::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(OrderStatus::parse("cancelled"), None);
}

// ---------------------------------------------------------------------------
// Transitions one by one
// ---------------------------------------------------------------------------

#[test]
fn collecting_without_an_instant_keeps_the_one_on_the_specimen() {
    let order = order_in(OrderStatus::Ordered);
    assert_eq!(
        collect(&order, None, now()),
        Ok(OrderEvent::SpecimenCollected(SpecimenCollected {
            order_id: oid(),
            collected_at: collected()
        }))
    );
}

#[test]
fn collecting_without_any_instant_uses_now() {
    let order = given(&events_to(
        OrderStatus::Ordered,
        draft_with(|d| d.collected_at = None),
    ))
    .unwrap();
    let (event, after) = step(order, |o| collect(o, None, now()));
    assert_eq!(
        event,
        OrderEvent::SpecimenCollected(SpecimenCollected {
            order_id: oid(),
            collected_at: now()
        })
    );
    assert_eq!(after.specimen.collected_at, Some(now()));
    assert_eq!(after.status, OrderStatus::Collected);
}

#[test]
fn collecting_with_an_instant_records_it() {
    let order = order_in(OrderStatus::Ordered);
    let (_, after) = step(order.clone(), |o| {
        collect(o, Some("2026-11-26T10:00:00Z".into()), now())
    });
    assert_eq!(
        after.specimen.collected_at,
        Some(instant("2026-11-26T10:00:00Z"))
    );
    assert_eq!(
        invalid(collect(&order, Some("10am".into()), now())),
        errs(&[("collectedAt", "invalid")])
    );
    assert_eq!(
        invalid(collect(&order, Some("2027-01-01T00:00:00Z".into()), now())),
        errs(&[("collectedAt", "in_future")])
    );
}

#[test]
fn receiving_starting_and_finalizing_name_the_order() {
    let (e, o) = step(order_in(OrderStatus::Collected), receive);
    assert_eq!(
        e,
        OrderEvent::SpecimenReceived(OrderRef { order_id: oid() })
    );
    let (e, o) = step(o, start);
    assert_eq!(e, OrderEvent::OrderStarted(OrderRef { order_id: oid() }));
    let (_, o) = step(o, |o| record_results(o, vec![hgb("13.0")], &ctx()));
    let (e, o) = step(o, finalize);
    assert_eq!(
        e,
        OrderEvent::ResultsFinalized(OrderRef { order_id: oid() })
    );
    assert_eq!(o.status, OrderStatus::Final);
    assert_eq!(o.results.len(), 1, "finalizing keeps the results");
}

#[test]
fn cancelling_records_the_reason() {
    for status in [
        OrderStatus::Ordered,
        OrderStatus::Collected,
        OrderStatus::Received,
    ] {
        let (e, o) = step(order_in(status), |o| cancel(o, Some("patient left".into())));
        assert_eq!(
            e,
            OrderEvent::OrderCanceled(OrderCanceled {
                order_id: oid(),
                reason: "patient left".into()
            })
        );
        assert_eq!(o.status, OrderStatus::Canceled);
        assert_eq!(o.cancel_reason.as_deref(), Some("patient left"));
    }
}

#[test]
fn cancelling_requires_a_reason() {
    let order = order_in(OrderStatus::Ordered);
    assert_eq!(
        invalid(cancel(&order, None)),
        errs(&[("reason", "required")])
    );
    assert_eq!(
        invalid(cancel(&order, Some("  ".into()))),
        errs(&[("reason", "empty")])
    );
    assert_eq!(
        invalid(cancel(&order, Some("x".repeat(MAX_REASON + 1)))),
        errs(&[("reason", "too_long")])
    );
    assert!(cancel(&order, Some("x".repeat(MAX_REASON))).is_ok());
}

// ---------------------------------------------------------------------------
// Updating details
// ---------------------------------------------------------------------------

#[test]
fn an_update_records_only_what_changed() {
    let order = order_in(OrderStatus::Collected);
    let patch = OrderPatch {
        specimen: Patch::Set(SpecimenPatch {
            specimen_type: set("serum"),
            collected_at: set("2026-11-26T08:30:00Z"),
        }),
        priority: set("urgent"),
        external_order_id: set("EHR-77"),
    };
    let event = update(&order, patch, now()).unwrap().unwrap();
    assert_eq!(
        event,
        OrderEvent::OrderDetailsChanged(OrderDetailsChanged {
            order_id: oid(),
            changes: OrderChanges {
                specimen_type: Some("serum".into()),
                priority: Some(Priority::Urgent),
                ..OrderChanges::default()
            }
        })
    );
    let after = apply(Some(order.clone()), &event).unwrap();
    assert_eq!(after.specimen.specimen_type, "serum");
    assert_eq!(after.priority, Priority::Urgent);
    assert_eq!(after.status, OrderStatus::Collected);
    assert_eq!(after.version, order.version + 1);
}

#[test]
fn an_update_that_changes_nothing_has_no_event() {
    let order = order_in(OrderStatus::Ordered);
    assert_eq!(update(&order, OrderPatch::default(), now()), Ok(None));
    let same = OrderPatch {
        specimen: Patch::Set(SpecimenPatch {
            specimen_type: set("blood"),
            collected_at: set("2026-11-26T09:30:00+01:00"),
        }),
        priority: set("routine"),
        external_order_id: set("EHR-77"),
    };
    assert_eq!(update(&order, same, now()), Ok(None));
}

#[test]
fn an_update_sets_and_removes_nullable_fields() {
    let order = order_in(OrderStatus::Ordered);
    let patch = OrderPatch {
        specimen: Patch::Set(SpecimenPatch {
            collected_at: Patch::Null,
            ..SpecimenPatch::default()
        }),
        external_order_id: Patch::Null,
        ..OrderPatch::default()
    };
    let event = update(&order, patch, now()).unwrap().unwrap();
    let after = apply(Some(order), &event).unwrap();
    assert_eq!(after.specimen.collected_at, None);
    assert_eq!(after.external_order_id, None);
    let OrderEvent::OrderDetailsChanged(e) = &event else {
        panic!("{event:?}");
    };
    assert_eq!(
        event.to_data(),
        json!({"orderID": oid(), "changes": {"collectedAt": null, "externalOrderID": null}})
    );
    assert_eq!(round_trip(&event), event, "null survives the round trip");
    assert_eq!(e.changes.collected_at, Some(None));

    // Removing what is already absent changes nothing.
    assert_eq!(
        update(
            &after,
            OrderPatch {
                external_order_id: Patch::Null,
                ..OrderPatch::default()
            },
            now()
        ),
        Ok(None)
    );
    let event = update(
        &after,
        OrderPatch {
            specimen: Patch::Set(SpecimenPatch {
                collected_at: set("2026-11-26T11:00:00Z"),
                ..SpecimenPatch::default()
            }),
            external_order_id: set("EHR-78"),
            ..OrderPatch::default()
        },
        now(),
    )
    .unwrap()
    .unwrap();
    let again = apply(Some(after), &event).unwrap();
    assert_eq!(
        again.specimen.collected_at,
        Some(instant("2026-11-26T11:00:00Z"))
    );
    assert_eq!(again.external_order_id.as_deref(), Some("EHR-78"));
}

#[test]
fn required_details_cannot_be_removed() {
    let order = order_in(OrderStatus::Ordered);
    assert_eq!(
        invalid(update(
            &order,
            OrderPatch {
                specimen: Patch::Null,
                priority: Patch::Null,
                ..OrderPatch::default()
            },
            now()
        )),
        errs(&[("specimen", "required"), ("priority", "required")])
    );
    assert_eq!(
        invalid(update(
            &order,
            OrderPatch {
                specimen: Patch::Set(SpecimenPatch {
                    specimen_type: Patch::Null,
                    ..SpecimenPatch::default()
                }),
                ..OrderPatch::default()
            },
            now()
        )),
        errs(&[("specimen.type", "required")])
    );
}

#[test]
fn the_collection_instant_cannot_be_removed_once_collected() {
    for status in [
        OrderStatus::Collected,
        OrderStatus::Received,
        OrderStatus::InProgress,
    ] {
        assert_eq!(
            invalid(update(
                &order_in(status),
                OrderPatch {
                    specimen: Patch::Set(SpecimenPatch {
                        collected_at: Patch::Null,
                        ..SpecimenPatch::default()
                    }),
                    ..OrderPatch::default()
                },
                now()
            )),
            errs(&[("specimen.collectedAt", "required")]),
            "{status:?}"
        );
    }
}

#[test]
fn every_bad_patch_field_is_reported_at_once() {
    let patch = OrderPatch {
        specimen: Patch::Set(SpecimenPatch {
            specimen_type: set(""),
            collected_at: set("2030-01-01T00:00:00Z"),
        }),
        priority: set("later"),
        external_order_id: set("EHR 77"),
    };
    assert_eq!(
        invalid(update(&order_in(OrderStatus::Received), patch, now())),
        errs(&[
            ("specimen.type", "empty"),
            ("specimen.collectedAt", "in_future"),
            ("priority", "invalid"),
            ("externalOrderID", "invalid"),
        ])
    );
}

// ---------------------------------------------------------------------------
// Results: values, units and validation
// ---------------------------------------------------------------------------

#[test]
fn results_are_recorded_with_their_test_range_and_flag() {
    let order = order_in(OrderStatus::Received);
    let results = recorded(record_results(
        &order,
        vec![hgb("13.0"), entry("PLT", json!(42), Some("10^9/L"))],
        &ctx(),
    ));
    assert_eq!(
        results,
        vec![
            RecordedResult {
                code: "HGB".into(),
                test: "CBC".into(),
                value: ResultValue::Text("13.0".into()),
                unit: Some("g/dL".into()),
                reference_range: Some(RangeView {
                    low: Some(12.0),
                    high: Some(15.5)
                }),
                flag: Some(Flag::Normal),
            },
            RecordedResult {
                code: "PLT".into(),
                test: "CBC".into(),
                value: ResultValue::Number(42.into()),
                unit: Some("10^9/L".into()),
                reference_range: Some(RangeView {
                    low: Some(150.0),
                    high: Some(400.0)
                }),
                flag: Some(Flag::CriticalLow),
            },
        ]
    );
}

#[test]
fn values_are_kept_exactly_as_sent() {
    let order = order_in(OrderStatus::InProgress);
    let event = record_results(
        &order,
        vec![
            hgb("5.20"),
            entry("PLT", json!(5.2), Some("10^9/L")),
            entry("WBC", json!("<0.5"), Some("10^9/L")),
            entry("HCT", json!(40), Some("%")),
        ],
        &ctx(),
    )
    .unwrap();
    let data = event.to_data();
    let values: Vec<_> = data["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(
        values,
        [json!("5.20"), json!(5.2), json!("<0.5"), json!(40)]
    );
    let back = round_trip(&event);
    assert_eq!(back, event);
    let OrderEvent::ResultsRecorded(e) = back else {
        panic!("{back:?}");
    };
    assert_eq!(e.results[0].value, ResultValue::Text("5.20".into()));
    assert!(matches!(&e.results[1].value, ResultValue::Number(n) if n.as_f64() == Some(5.2)));
    assert_eq!(e.results[3].value, ResultValue::Number(40.into()));
}

#[test]
fn numeric_values_are_decimals_optionally_after_a_comparator() {
    let order = received_everything();
    for (raw, number) in [
        ("5", 5.0),
        ("5.20", 5.2),
        ("-1.5", -1.5),
        ("0", 0.0),
        ("<0.5", 0.5),
        (">1000", 1000.0),
        ("<=10", 10.0),
        (">=7.25", 7.25),
        ("<-2", -2.0),
        ("007", 7.0),
    ] {
        assert_eq!(
            numeric_value(&ResultValue::Text(raw.into())),
            Some(number),
            "{raw}"
        );
        assert!(
            record_results(
                &order,
                vec![entry("TSH", json!(raw), Some("mIU/L"))],
                &ctx()
            )
            .is_ok(),
            "{raw}"
        );
    }
    for raw in [
        "", "abc", "5.", ".5", "1e3", "< 5", " 5", "5 ", "+5", "0x10", "5,2", "--1", "<>5", "=5",
        "5-", "NaN", "inf", "Positive", "<", "1.2.3",
    ] {
        assert_eq!(numeric_value(&ResultValue::Text(raw.into())), None, "{raw}");
        assert_eq!(
            invalid(record_results(
                &order,
                vec![entry("TSH", json!(raw), Some("mIU/L"))],
                &ctx()
            )),
            errs(&[("results[0].value", "not_numeric")]),
            "{raw:?}"
        );
    }
}

#[test]
fn a_value_that_is_neither_string_nor_number_is_the_wrong_type() {
    let order = order_in(OrderStatus::Received);
    for value in [json!(null), json!(true), json!([1]), json!({"v": 1})] {
        assert_eq!(
            invalid(record_results(
                &order,
                vec![entry("HGB", value.clone(), Some("g/dL"))],
                &ctx()
            )),
            errs(&[("results[0].value", "wrong_type")]),
            "{value}"
        );
    }
}

#[test]
fn the_unit_must_be_the_catalogs() {
    let order = received_everything();
    for unit in ["g/L", "G/DL", "g/dl", "", " g/dL"] {
        assert_eq!(
            invalid(record_results(
                &order,
                vec![entry("HGB", json!("13.0"), Some(unit))],
                &ctx()
            )),
            errs(&[("results[0].unit", "unit_mismatch")]),
            "{unit:?}"
        );
    }
    assert_eq!(
        invalid(record_results(
            &order,
            vec![entry("HGB", json!("13.0"), None)],
            &ctx()
        )),
        errs(&[("results[0].unit", "required")])
    );
    assert_eq!(
        invalid(record_results(
            &order,
            vec![entry("SARSCOV2", json!("Detected"), Some("copies/mL"))],
            &ctx()
        )),
        errs(&[("results[0].unit", "unit_mismatch")]),
        "a text analyte has no unit"
    );
}

#[test]
fn analytes_must_belong_to_the_orders_tests() {
    let order = order_in(OrderStatus::Received); // CBC and LIPID
    assert_eq!(
        invalid(record_results(
            &order,
            vec![
                entry("NA", json!("140"), Some("mmol/L")),
                entry("hgb", json!("13.0"), Some("g/dL")),
                entry("HDL", json!("55"), Some("mg/dL")),
            ],
            &ctx()
        )),
        errs(&[
            ("results[0].code", "unknown_analyte"),
            ("results[1].code", "unknown_analyte"),
        ])
    );
}

#[test]
fn each_analyte_is_reported_once_per_request() {
    let order = order_in(OrderStatus::Received);
    assert_eq!(
        invalid(record_results(
            &order,
            vec![hgb("13.0"), hgb("13.1")],
            &ctx()
        )),
        errs(&[("results[1].code", "duplicate")])
    );
    assert_eq!(
        invalid(record_results(&order, vec![], &ctx())),
        errs(&[("results", "empty")])
    );
}

#[test]
fn every_bad_result_is_reported_at_once() {
    let order = order_in(OrderStatus::Received);
    assert_eq!(
        invalid(record_results(
            &order,
            vec![
                hgb("13.0"),
                entry("HCT", json!("high"), Some("percent")),
                entry("XYZ", json!("1"), None),
                entry("PLT", json!(false), Some("10^9/L")),
                entry("LDL", json!("90"), Some("mg/dL")),
            ],
            &ctx()
        )),
        errs(&[
            ("results[1].value", "not_numeric"),
            ("results[1].unit", "unit_mismatch"),
            ("results[2].code", "unknown_analyte"),
            ("results[3].value", "wrong_type"),
        ])
    );
}

#[test]
fn text_values_are_bounded_non_blank_text() {
    let order = received_everything();
    for (raw, code) in [
        ("", "empty"),
        ("  ", "empty"),
        ("bad\u{7}", "invalid"),
        (&*"x".repeat(MAX_TEXT_VALUE + 1), "too_long"),
    ] {
        assert_eq!(
            invalid(record_results(
                &order,
                vec![entry("SARSCOV2", json!(raw), None)],
                &ctx()
            )),
            errs(&[("results[0].value", code)]),
            "{raw:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Results: ranges and flags
// ---------------------------------------------------------------------------

/// The date of birth of a patient who is `days` old on the collection date.
fn born_days_before_collection(days: u32) -> NaiveDate {
    collected().date_naive() - Duration::days(i64::from(days))
}

#[test]
fn flags_follow_the_range_for_the_patients_sex_and_age() {
    use Flag::*;
    let adult = date("1990-12-10");
    let child = date("2020-01-01");
    let (f, m, o, u) = (Sex::Female, Sex::Male, Sex::Other, Sex::Unknown);
    // (analyte, value, unit, sex, date of birth, expected range, expected flag)
    type Row = (
        &'static str,
        serde_json::Value,
        &'static str,
        Sex,
        NaiveDate,
        Option<(Option<f64>, Option<f64>)>,
        Option<Flag>,
    );
    let hgb_f = Some((Some(12.0), Some(15.5)));
    let hgb_m = Some((Some(13.5), Some(17.5)));
    let plt = Some((Some(150.0), Some(400.0)));
    let tsh = Some((Some(0.4), Some(4.0)));
    let table: Vec<Row> = vec![
        // Haemoglobin: sex-specific ranges and critical limits 7.0 / 20.0.
        (
            "HGB",
            json!("6.5"),
            "g/dL",
            f,
            adult,
            hgb_f,
            Some(CriticalLow),
        ),
        (
            "HGB",
            json!("6.99"),
            "g/dL",
            m,
            adult,
            hgb_m,
            Some(CriticalLow),
        ),
        ("HGB", json!("7.0"), "g/dL", f, adult, hgb_f, Some(Low)),
        ("HGB", json!("11.9"), "g/dL", f, adult, hgb_f, Some(Low)),
        ("HGB", json!("12.0"), "g/dL", f, adult, hgb_f, Some(Normal)),
        ("HGB", json!("13.0"), "g/dL", f, adult, hgb_f, Some(Normal)),
        ("HGB", json!("13.0"), "g/dL", m, adult, hgb_m, Some(Low)),
        ("HGB", json!("12.9"), "g/dL", m, adult, hgb_m, Some(Low)),
        ("HGB", json!("13.5"), "g/dL", m, adult, hgb_m, Some(Normal)),
        ("HGB", json!("15.5"), "g/dL", f, adult, hgb_f, Some(Normal)),
        ("HGB", json!("16.0"), "g/dL", f, adult, hgb_f, Some(High)),
        ("HGB", json!("16.0"), "g/dL", m, adult, hgb_m, Some(Normal)),
        ("HGB", json!("17.6"), "g/dL", m, adult, hgb_m, Some(High)),
        ("HGB", json!("20.0"), "g/dL", m, adult, hgb_m, Some(High)),
        (
            "HGB",
            json!("20.1"),
            "g/dL",
            m,
            adult,
            hgb_m,
            Some(CriticalHigh),
        ),
        (
            "HGB",
            json!(21),
            "g/dL",
            f,
            adult,
            hgb_f,
            Some(CriticalHigh),
        ),
        // No range for the patient: no range, no flag, critical or not.
        ("HGB", json!("13.0"), "g/dL", o, adult, None, None),
        ("HGB", json!("6.5"), "g/dL", u, adult, None, None),
        ("HGB", json!("6.5"), "g/dL", f, child, None, None),
        ("WBC", json!("7.0"), "10^9/L", f, child, None, None),
        // A range for any sex applies to every sex.
        (
            "WBC",
            json!("3.9"),
            "10^9/L",
            o,
            adult,
            Some((Some(4.0), Some(11.0))),
            Some(Low),
        ),
        (
            "WBC",
            json!("11.0"),
            "10^9/L",
            u,
            adult,
            Some((Some(4.0), Some(11.0))),
            Some(Normal),
        ),
        // Comparators count as their number.
        (
            "PLT",
            json!("<0.5"),
            "10^9/L",
            f,
            adult,
            plt,
            Some(CriticalLow),
        ),
        ("PLT", json!("<150"), "10^9/L", f, adult, plt, Some(Normal)),
        ("PLT", json!(">1000"), "10^9/L", f, adult, plt, Some(High)),
        (
            "PLT",
            json!(">=1001"),
            "10^9/L",
            f,
            adult,
            plt,
            Some(CriticalHigh),
        ),
        ("TSH", json!("<0.5"), "mIU/L", m, adult, tsh, Some(Normal)),
        ("TSH", json!("<0.01"), "mIU/L", m, adult, tsh, Some(Low)),
        ("TSH", json!(">100"), "mIU/L", m, adult, tsh, Some(High)),
        // JSON numbers.
        (
            "K",
            json!(6.6),
            "mmol/L",
            f,
            adult,
            Some((Some(3.5), Some(5.1))),
            Some(CriticalHigh),
        ),
        (
            "K",
            json!(2.4),
            "mmol/L",
            m,
            adult,
            Some((Some(3.5), Some(5.1))),
            Some(CriticalLow),
        ),
        (
            "K",
            json!(4),
            "mmol/L",
            m,
            adult,
            Some((Some(3.5), Some(5.1))),
            Some(Normal),
        ),
        (
            "NA",
            json!("119"),
            "mmol/L",
            f,
            adult,
            Some((Some(135.0), Some(145.0))),
            Some(CriticalLow),
        ),
        (
            "GLU",
            json!("401"),
            "mg/dL",
            f,
            adult,
            Some((Some(70.0), Some(99.0))),
            Some(CriticalHigh),
        ),
        (
            "GLU",
            json!("100"),
            "mg/dL",
            f,
            adult,
            Some((Some(70.0), Some(99.0))),
            Some(High),
        ),
        // Sex-specific creatinine.
        (
            "CREAT",
            json!("1.2"),
            "mg/dL",
            f,
            adult,
            Some((Some(0.59), Some(1.04))),
            Some(High),
        ),
        (
            "CREAT",
            json!("1.2"),
            "mg/dL",
            m,
            adult,
            Some((Some(0.74), Some(1.35))),
            Some(Normal),
        ),
        // One-sided ranges.
        (
            "CHOL",
            json!("250"),
            "mg/dL",
            f,
            adult,
            Some((None, Some(200.0))),
            Some(High),
        ),
        (
            "CHOL",
            json!("5"),
            "mg/dL",
            f,
            adult,
            Some((None, Some(200.0))),
            Some(Normal),
        ),
        (
            "HDL",
            json!("35"),
            "mg/dL",
            m,
            adult,
            Some((Some(40.0), None)),
            Some(Low),
        ),
        (
            "HDL",
            json!("45"),
            "mg/dL",
            m,
            adult,
            Some((Some(40.0), None)),
            Some(Normal),
        ),
        (
            "HDL",
            json!("45"),
            "mg/dL",
            f,
            adult,
            Some((Some(50.0), None)),
            Some(Low),
        ),
        (
            "HDL",
            json!("95"),
            "mg/dL",
            f,
            adult,
            Some((Some(50.0), None)),
            Some(Normal),
        ),
        (
            "HBA1C",
            json!("6.5"),
            "%",
            m,
            adult,
            Some((Some(4.0), Some(5.6))),
            Some(High),
        ),
        // Text: outside the normal values is abnormal.
        (
            "SARSCOV2",
            json!("Not detected"),
            "",
            f,
            adult,
            None,
            Some(Normal),
        ),
        (
            "SARSCOV2",
            json!("not DETECTED "),
            "",
            f,
            adult,
            None,
            Some(Normal),
        ),
        (
            "SARSCOV2",
            json!("Detected"),
            "",
            f,
            adult,
            None,
            Some(Abnormal),
        ),
        (
            "SARSCOV2",
            json!("Inconclusive"),
            "",
            u,
            child,
            None,
            Some(Abnormal),
        ),
        ("SARSCOV2", json!(5), "", f, adult, None, Some(Abnormal)),
    ];
    let order = received_everything();
    for (code, value, unit, sex, dob, range, flag) in table {
        let unit = (!unit.is_empty()).then_some(unit);
        let results = recorded(record_results(
            &order,
            vec![entry(code, value.clone(), unit)],
            &rctx(sex, dob),
        ));
        let r = &results[0];
        let what = format!("{code} {value} {sex:?} born {dob}");
        assert_eq!(r.flag, flag, "{what}");
        assert_eq!(
            r.reference_range,
            range.map(|(low, high)| RangeView { low, high }),
            "{what}"
        );
        assert_eq!(r.unit.as_deref(), unit, "{what}");
    }
}

#[test]
fn a_text_analyte_without_normal_values_is_never_flagged() {
    let mut catalog = seed_catalog();
    let covid = catalog.iter_mut().find(|t| t.code == "COVID19").unwrap();
    covid.analytes[0].kind = AnalyteKind::Text { normal: vec![] };
    let c = ResultContext { catalog, ..ctx() };
    let results = recorded(record_results(
        &received_everything(),
        vec![entry("SARSCOV2", json!("Detected"), None)],
        &c,
    ));
    assert_eq!(results[0].flag, None);
    assert_eq!(results[0].reference_range, None);
}

#[test]
fn the_age_is_taken_on_the_collection_date() {
    let order = order_in(OrderStatus::Received);
    assert_eq!(order.specimen.collected_at, Some(collected()));
    let flag_for = |dob: NaiveDate, c: &ResultContext| {
        recorded(record_results(
            &order,
            vec![hgb("6.5")],
            &ResultContext {
                patient_date_of_birth: dob,
                ..c.clone()
            },
        ))[0]
            .flag
    };
    // Exactly 18 years of 365 days old on the collection date: an adult.
    let c = ctx();
    assert_eq!(
        flag_for(born_days_before_collection(ADULT_AGE_DAYS), &c),
        Some(Flag::CriticalLow)
    );
    // A day younger: no adult range applies.
    let younger = born_days_before_collection(ADULT_AGE_DAYS - 1);
    assert_eq!(flag_for(younger, &c), None);
    // Still a child on the collection date, though an adult by the time the
    // result is recorded a month later.
    let later = ResultContext {
        now: now() + Duration::days(30),
        ..ctx()
    };
    assert_eq!(flag_for(younger, &later), None);
}

#[test]
fn without_a_collection_instant_the_age_is_taken_today() {
    let mut order = order_in(OrderStatus::Received);
    order.specimen.collected_at = None;
    let dob = now().date_naive() - Duration::days(i64::from(ADULT_AGE_DAYS));
    let results = recorded(record_results(
        &order,
        vec![hgb("6.5")],
        &ResultContext {
            patient_date_of_birth: dob,
            ..ctx()
        },
    ));
    assert_eq!(results[0].flag, Some(Flag::CriticalLow));
}

#[test]
fn an_analyte_in_two_ordered_tests_belongs_to_the_first() {
    let mut catalog = seed_catalog();
    catalog.push(CatalogTest {
        code: "HGB1".into(),
        name: "Hemoglobin alone".into(),
        specimen_type: "whole blood".into(),
        analytes: vec![catalog[0].analyte("HGB").unwrap().clone()],
    });
    let ctx_place = PlaceContext {
        catalog: catalog.clone(),
        ..place_ctx()
    };
    let e = place(
        oid(),
        draft_with(|d| d.tests = Some(vec!["HGB1".into(), "CBC".into()])),
        &ctx_place,
    )
    .unwrap();
    let order = given(&[e]).unwrap();
    let (_, order) = step(order, |o| collect(o, None, now()));
    let (_, order) = step(order, receive);
    let results = recorded(record_results(
        &order,
        vec![hgb("13.0")],
        &ResultContext { catalog, ..ctx() },
    ));
    assert_eq!(results[0].test, "HGB1");
}

#[test]
fn recorded_ranges_and_flags_survive_catalog_revisions() {
    let order = order_in(OrderStatus::Received);
    let event = record_results(&order, vec![hgb("13.0")], &ctx()).unwrap();
    assert_eq!(
        event.to_data()["results"][0],
        json!({
            "code": "HGB", "test": "CBC", "value": "13.0", "unit": "g/dL",
            "referenceRange": {"low": 12.0, "high": 15.5}, "flag": "N"
        })
    );
    // The lab later narrows the female range; the past result is unchanged.
    let mut catalog = seed_catalog();
    if let AnalyteKind::Numeric { ranges, .. } = &mut catalog[0].analytes[2].kind {
        ranges[1].low = Some(13.2);
    }
    let after = apply(Some(order.clone()), &event).unwrap();
    assert_eq!(after.results[0].flag, Some(Flag::Normal));
    let revised = ResultContext { catalog, ..ctx() };
    let newer = recorded(record_results(&after, vec![hgb("13.0")], &revised));
    assert_eq!(
        newer[0].flag,
        Some(Flag::Low),
        "new results use the revision"
    );
    assert_eq!(after.results[0].flag, Some(Flag::Normal));
}

#[test]
fn recording_again_replaces_analyte_by_analyte() {
    let order = order_in(OrderStatus::Received);
    let (_, order) = step(order, |o| {
        record_results(
            o,
            vec![hgb("13.0"), entry("PLT", json!(250), Some("10^9/L"))],
            &ctx(),
        )
    });
    assert_eq!(order.status, OrderStatus::Resulted);
    let (_, order) = step(order, |o| {
        record_results(
            o,
            vec![hgb("11.0"), entry("WBC", json!("6.1"), Some("10^9/L"))],
            &ctx(),
        )
    });
    assert_eq!(order.status, OrderStatus::Resulted);
    let codes: Vec<_> = order.results.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["HGB", "PLT", "WBC"], "first-recorded order kept");
    assert_eq!(order.results[0].value, ResultValue::Text("11.0".into()));
    assert_eq!(order.results[0].flag, Some(Flag::Low));
    assert_eq!(order.results[1].value, ResultValue::Number(250.into()));
}

// ---------------------------------------------------------------------------
// Corrections
// ---------------------------------------------------------------------------

#[test]
fn a_correction_keeps_the_previous_values() {
    let order = order_in(OrderStatus::Final);
    assert_eq!(order.results[0].value, ResultValue::Text("13.0".into()));
    let before = order.results[0].clone();
    let (event, order) = step(order, |o| {
        correct(
            o,
            Some("wrong patient sample".into()),
            vec![hgb("11.0")],
            &ctx(),
        )
    });
    let OrderEvent::ResultsCorrected(e) = &event else {
        panic!("{event:?}");
    };
    assert_eq!(e.order_id, oid());
    assert_eq!(e.reason, "wrong patient sample");
    assert_eq!(e.previous, vec![before.clone()]);
    assert_eq!(e.results[0].value, ResultValue::Text("11.0".into()));
    assert_eq!(e.results[0].flag, Some(Flag::Low));
    assert_eq!(order.status, OrderStatus::Corrected);
    assert_eq!(order.results, e.results);

    // Corrected again: the previous value is the corrected one.
    let (event, order) = step(order, |o| {
        correct(o, Some("second look".into()), vec![hgb("11.5")], &ctx())
    });
    let OrderEvent::ResultsCorrected(e2) = &event else {
        panic!("{event:?}");
    };
    assert_eq!(e2.previous[0].value, ResultValue::Text("11.0".into()));
    assert_eq!(order.results[0].value, ResultValue::Text("11.5".into()));
    assert_eq!(order.status, OrderStatus::Corrected);
    assert_eq!(round_trip(&event), event);
    assert_eq!(event.to_data()["previous"][0]["value"], json!("11.0"));
}

#[test]
fn a_correction_may_add_an_analyte_with_no_previous_value() {
    let order = order_in(OrderStatus::Final);
    let (event, order) = step(order, |o| {
        correct(
            o,
            Some("PLT omitted from the report".into()),
            vec![entry("PLT", json!("210"), Some("10^9/L"))],
            &ctx(),
        )
    });
    let OrderEvent::ResultsCorrected(e) = &event else {
        panic!("{event:?}");
    };
    assert!(e.previous.is_empty());
    let codes: Vec<_> = order.results.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["HGB", "PLT"]);
}

#[test]
fn a_correction_needs_a_reason_and_valid_results_reported_at_once() {
    let order = order_in(OrderStatus::Final);
    assert_eq!(
        invalid(correct(&order, None, vec![hgb("11")], &ctx())),
        errs(&[("reason", "required")])
    );
    assert_eq!(
        invalid(correct(&order, Some("".into()), vec![hgb("11")], &ctx())),
        errs(&[("reason", "empty")])
    );
    assert_eq!(
        invalid(correct(
            &order,
            None,
            vec![entry("HGB", json!("eleven"), Some("g/L"))],
            &ctx()
        )),
        errs(&[
            ("reason", "required"),
            ("results[0].value", "not_numeric"),
            ("results[0].unit", "unit_mismatch"),
        ])
    );
    assert_eq!(
        invalid(correct(&order, Some("why".into()), vec![], &ctx())),
        errs(&[("results", "empty")])
    );
}

// ---------------------------------------------------------------------------
// Apply, replay and JSON
// ---------------------------------------------------------------------------

#[test]
fn apply_is_total_and_ignores_events_before_placement() {
    let all = events_to(OrderStatus::Corrected, draft());
    for e in &all[1..] {
        assert_eq!(apply(None, e), None, "{}", e.event_type());
    }
    let order = given(&all).unwrap();
    assert_eq!(order.version, all.len() as i64);
    assert_eq!(order.version, 7);
}

#[test]
fn a_full_lifecycle_replays_to_the_same_state() {
    let events = events_to(OrderStatus::Corrected, draft());
    let json: Vec<_> = events
        .iter()
        .map(|e| (e.event_type(), e.to_data()))
        .collect();
    let back: Vec<OrderEvent> = json
        .into_iter()
        .map(|(t, d)| OrderEvent::from_parts(t, d).unwrap())
        .collect();
    assert_eq!(back, events);
    assert_eq!(given(&back), given(&events));
}

#[test]
fn every_event_type_round_trips_through_its_stored_parts() {
    let mut events = events_to(OrderStatus::Corrected, draft());
    events.extend(
        events_to(OrderStatus::Canceled, draft())
            .into_iter()
            .skip(1),
    );
    let order = order_in(OrderStatus::Ordered);
    events.push(
        update(
            &order,
            OrderPatch {
                priority: set("stat"),
                external_order_id: Patch::Null,
                ..OrderPatch::default()
            },
            now(),
        )
        .unwrap()
        .unwrap(),
    );
    let mut types: Vec<_> = events.iter().map(|e| e.event_type()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), 9, "{types:?}");
    for e in &events {
        assert_eq!(&round_trip(e), e, "{}", e.event_type());
        assert_eq!(e.to_data()["orderID"], json!(oid()), "{}", e.event_type());
        assert_eq!(OrderEvent::STREAM, StreamKind::Order);
    }
}

#[test]
fn the_placed_event_json_uses_the_contract_names() {
    let event = when_placing(draft(), &place_ctx()).unwrap();
    assert_eq!(
        event.to_data(),
        json!({
            "orderID": oid(),
            "patientID": pid(),
            "clientID": "C1",
            "locationID": "L1",
            "accessionNumber": "A-2026-000123",
            "externalOrderID": "EHR-77",
            "tests": ["CBC", "LIPID"],
            "specimen": {"type": "blood", "collectedAt": "2026-11-26T08:30:00Z"},
            "priority": "routine"
        })
    );
}

#[test]
fn flags_are_spelled_as_in_the_contract() {
    for (flag, s) in [
        (Flag::Low, "L"),
        (Flag::High, "H"),
        (Flag::CriticalLow, "LL"),
        (Flag::CriticalHigh, "HH"),
        (Flag::Abnormal, "A"),
        (Flag::Normal, "N"),
    ] {
        assert_eq!(flag.as_str(), s);
        assert_eq!(serde_json::to_value(flag).unwrap(), json!(s));
        assert_eq!(serde_json::from_value::<Flag>(json!(s)).unwrap(), flag);
    }
}
