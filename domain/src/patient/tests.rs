//! Given/when/then tests of the patient aggregate: given past events, when a
//! command is decided, then these events (or this rejection) result.
//!
//! `clientID` is not a field of `PatientPatch` at all, so a patient's client
//! is immutable by construction; nothing to test there.

use super::*;
use crate::event::DomainEvent;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The id given to the patient under test.
fn pid() -> Uuid {
    Uuid::from_u128(0x0a11ce)
}

/// Some other patient of the same client.
fn other_pid() -> Uuid {
    Uuid::from_u128(0xb0b)
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
}

/// Today, as far as every test is concerned.
fn today() -> NaiveDate {
    date("2026-11-26")
}

/// A context where everything the draft names exists and nothing conflicts.
fn ctx() -> Context {
    Context {
        today: today(),
        client_exists: true,
        location_client: Some("C1".into()),
        email_in_use: false,
        external_id_holder: None,
        has_account: false,
    }
}

fn address() -> Address {
    Address {
        line1: Some("12 St James's Square".into()),
        line2: None,
        city: Some("London".into()),
        state: Some("Greater London".into()),
        postal_code: Some("SW1Y 4JH".into()),
        country: Some("GB".into()),
    }
}

/// A complete, valid registration request.
fn draft() -> PatientDraft {
    PatientDraft {
        external_patient_id: Some("MRN-1001".into()),
        client_id: Some("C1".into()),
        location_id: Some("L1".into()),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        date_of_birth: Some("1990-12-10".into()),
        sex: Some("female".into()),
        email: Some("ada@example.org".into()),
        phone: Some("+15555550100".into()),
        address: Some(address()),
    }
}

/// The draft with one change applied.
fn draft_with(change: impl FnOnce(&mut PatientDraft)) -> PatientDraft {
    let mut d = draft();
    change(&mut d);
    d
}

fn given(events: &[PatientEvent]) -> Option<Patient> {
    replay(events)
}

fn when_registering(draft: PatientDraft, ctx: &Context) -> Result<Decision, PatientRejection> {
    register(pid(), draft, ctx)
}

/// The `PatientRegistered` event of an accepted registration.
fn registered(decision: &Decision) -> &PatientRegistered {
    match &decision.event {
        Some(PatientEvent::PatientRegistered(e)) => e,
        other => panic!("expected PatientRegistered, got {other:?}"),
    }
}

/// The event registering `draft` in the default context.
fn registration_of(draft: PatientDraft) -> PatientEvent {
    when_registering(draft, &ctx())
        .expect("registration accepted")
        .event
        .expect("registration has an event")
}

/// A registered patient (from `draft()`), version 1.
fn patient() -> Patient {
    given(&[registration_of(draft())]).expect("registered")
}

/// A registered patient built from a changed draft.
fn patient_with(change: impl FnOnce(&mut PatientDraft)) -> Patient {
    given(&[registration_of(draft_with(change))]).expect("registered")
}

/// The changes of an accepted update that produced an event.
fn changes(decision: &Decision) -> &PatientChanges {
    match &decision.event {
        Some(PatientEvent::PatientUpdated(e)) => {
            assert_eq!(e.patient_id, pid(), "the update names the patient");
            &e.changes
        }
        other => panic!("expected PatientUpdated, got {other:?}"),
    }
}

/// The (field, code) pairs of an `Invalid` rejection, in order.
fn invalid(result: Result<Decision, PatientRejection>) -> Vec<(String, &'static str)> {
    match result {
        Err(PatientRejection::Invalid(errors)) => {
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

fn warning(field: &str, code: &'static str) -> Warning {
    Warning {
        field: field.into(),
        code,
    }
}

fn set(v: &str) -> Patch<String> {
    Patch::Set(v.to_string())
}

/// A JSON-level round trip of an event through its stored parts.
fn round_trip(event: &PatientEvent) -> PatientEvent {
    let data = event.to_data();
    assert!(data.is_object(), "data is an object: {data}");
    PatientEvent::from_parts(event.event_type(), data).expect("stored event parses")
}

type DraftChange = fn(&mut PatientDraft);

// ---------------------------------------------------------------------------
// Registration: the happy path
// ---------------------------------------------------------------------------

#[test]
fn a_valid_draft_registers_the_patient_with_every_field() {
    let decision = when_registering(draft(), &ctx()).unwrap();

    assert_eq!(
        decision.event,
        Some(PatientEvent::PatientRegistered(PatientRegistered {
            patient_id: pid(),
            client_id: "C1".into(),
            location_id: "L1".into(),
            external_patient_id: Some("MRN-1001".into()),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            date_of_birth: date("1990-12-10"),
            sex: Sex::Female,
            email: Some("ada@example.org".into()),
            phone: Some("+15555550100".into()),
            address: Some(address()),
        }))
    );
    assert_eq!(decision.open_account.as_deref(), Some("ada@example.org"));
    assert!(decision.warnings.is_empty());
}

#[test]
fn a_minimal_draft_registers_without_account_or_warning() {
    let minimal = draft_with(|d| {
        d.external_patient_id = None;
        d.email = None;
        d.phone = None;
        d.address = None;
    });
    let decision = when_registering(minimal, &ctx()).unwrap();
    let e = registered(&decision);
    assert_eq!(e.external_patient_id, None);
    assert_eq!(e.email, None);
    assert_eq!(e.phone, None);
    assert_eq!(e.address, None);
    assert_eq!(decision.open_account, None, "no email, no account");
    assert!(decision.warnings.is_empty());
}

// ---------------------------------------------------------------------------
// Registration: required fields, and every error at once
// ---------------------------------------------------------------------------

#[test]
fn each_missing_required_field_is_reported_as_required() {
    let table: [(&str, DraftChange); 5] = [
        ("locationID", |d| d.location_id = None),
        ("firstName", |d| d.first_name = None),
        ("lastName", |d| d.last_name = None),
        ("dateOfBirth", |d| d.date_of_birth = None),
        ("sex", |d| d.sex = None),
    ];
    for (field, change) in table {
        assert_eq!(
            invalid(when_registering(draft_with(change), &ctx())),
            errs(&[(field, "required")]),
            "missing {field}"
        );
    }
}

#[test]
fn a_missing_client_id_is_reported_as_required() {
    let errors = invalid(when_registering(draft_with(|d| d.client_id = None), &ctx()));
    assert!(
        errors.contains(&("clientID".into(), "required")),
        "{errors:?}"
    );
}

#[test]
fn a_missing_client_id_is_the_only_error_of_an_otherwise_valid_draft() {
    // L1 exists (it belongs to C1); with no clientID there is nothing to
    // check it against, so it must not be reported as unknown.
    assert_eq!(
        invalid(when_registering(draft_with(|d| d.client_id = None), &ctx())),
        errs(&[("clientID", "required")])
    );
}

#[test]
fn an_empty_draft_lists_every_required_field() {
    assert_eq!(
        invalid(when_registering(PatientDraft::default(), &ctx())),
        errs(&[
            ("clientID", "required"),
            ("locationID", "required"),
            ("firstName", "required"),
            ("lastName", "required"),
            ("dateOfBirth", "required"),
            ("sex", "required"),
        ])
    );
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let bad = PatientDraft {
        external_patient_id: Some("MRN 1001".into()),
        client_id: Some("C1".into()),
        location_id: None,
        first_name: Some("   ".into()),
        last_name: Some("x".repeat(MAX_NAME + 1)),
        date_of_birth: Some("yesterday".into()),
        sex: Some("F".into()),
        email: Some("not-an-email".into()),
        phone: Some("call me".into()),
        address: Some(Address {
            line1: Some(String::new()),
            country: Some("usa".into()),
            ..Address::default()
        }),
    };
    let mut errors = invalid(when_registering(bad, &ctx()));
    errors.sort();
    let mut expected = errs(&[
        ("externalPatientID", "invalid"),
        ("locationID", "required"),
        ("firstName", "empty"),
        ("lastName", "too_long"),
        ("dateOfBirth", "invalid"),
        ("sex", "invalid"),
        ("phone", "invalid"),
        ("address.line1", "empty"),
        ("address.country", "invalid"),
    ]);
    expected.sort();
    assert_eq!(
        errors, expected,
        "an invalid email is a warning, never an error"
    );
}

#[test]
fn an_unknown_client_is_reported_even_when_location_id_is_missing() {
    let c = Context {
        client_exists: false,
        ..ctx()
    };
    let errors = invalid(when_registering(draft_with(|d| d.location_id = None), &c));
    assert!(
        errors.contains(&("locationID".into(), "required")),
        "{errors:?}"
    );
    assert!(
        errors.contains(&("clientID".into(), "unknown_client")),
        "every bad field at once: {errors:?}"
    );
}

#[test]
fn error_messages_never_echo_the_submitted_value() {
    let secret = "Secret\u{1}Value";
    let result = when_registering(
        draft_with(|d| {
            d.first_name = Some(secret.into());
            d.last_name = Some(secret.into());
            d.external_patient_id = Some(secret.into());
            d.sex = Some(secret.into());
            d.date_of_birth = Some(secret.into());
            d.phone = Some(secret.into());
        }),
        &ctx(),
    );
    let Err(PatientRejection::Invalid(errors)) = result else {
        panic!("expected Invalid, got {result:?}");
    };
    assert_eq!(errors.len(), 6, "{errors:?}");
    for e in errors {
        assert!(!e.message.contains("Secret"), "{e:?}");
    }
}

// ---------------------------------------------------------------------------
// Registration: sex and date of birth
// ---------------------------------------------------------------------------

#[test]
fn sex_accepts_exactly_the_four_contract_values() {
    for (raw, sex) in [
        ("female", Sex::Female),
        ("male", Sex::Male),
        ("other", Sex::Other),
        ("unknown", Sex::Unknown),
    ] {
        let decision = when_registering(draft_with(|d| d.sex = Some(raw.into())), &ctx()).unwrap();
        assert_eq!(registered(&decision).sex, sex, "{raw}");
        assert_eq!(sex.as_str(), raw);
    }
}

#[test]
fn sex_rejects_any_other_spelling() {
    for raw in ["F", "M", "Female", "MALE", "f", "", " female", "x"] {
        assert_eq!(
            invalid(when_registering(
                draft_with(|d| d.sex = Some(raw.into())),
                &ctx()
            )),
            errs(&[("sex", "invalid")]),
            "{raw:?}"
        );
    }
}

#[test]
fn date_of_birth_rejects_malformed_dates() {
    for raw in [
        "1990-2-3",
        "1990-13-01",
        "1990-02-30",
        "yesterday",
        "1990-12-10T00:00:00Z",
        "10/12/1990",
        "19901210",
        "",
        "1990-12-1x",
    ] {
        assert_eq!(
            invalid(when_registering(
                draft_with(|d| d.date_of_birth = Some(raw.into())),
                &ctx()
            )),
            errs(&[("dateOfBirth", "invalid")]),
            "{raw:?}"
        );
    }
}

#[test]
fn date_of_birth_must_be_exactly_yyyy_mm_dd() {
    // Ten characters long, but not YYYY-MM-DD: chrono's %Y-%m-%d is lenient
    // (leading blanks, one-digit fields, a '+' sign on the year).
    let accepted: Vec<(&str, NaiveDate)> = [
        " 1990-2-03",
        "+1990-2-03",
        "1990- 2- 3",
        "1990-02- 3",
        "1990-2-03 ",
    ]
    .into_iter()
    .filter_map(|raw| {
        let result = when_registering(draft_with(|d| d.date_of_birth = Some(raw.into())), &ctx());
        result.ok().map(|d| (raw, registered(&d).date_of_birth))
    })
    .collect();
    assert!(
        accepted.is_empty(),
        "accepted as dates of birth: {accepted:?}"
    );
}

#[test]
fn date_of_birth_bounds() {
    let table: [(&str, Option<&str>); 6] = [
        ("2026-11-26", None), // today is fine
        ("2026-11-27", Some("in_future")),
        ("2999-01-01", Some("in_future")),
        ("1900-01-01", None),
        ("1899-12-31", Some("too_early")),
        ("0001-01-01", Some("too_early")),
    ];
    for (raw, code) in table {
        let result = when_registering(draft_with(|d| d.date_of_birth = Some(raw.into())), &ctx());
        match code {
            None => assert_eq!(
                registered(&result.expect(raw)).date_of_birth,
                date(raw),
                "{raw}"
            ),
            Some(code) => assert_eq!(invalid(result), errs(&[("dateOfBirth", code)]), "{raw}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Registration: names
// ---------------------------------------------------------------------------

#[test]
fn names_must_be_non_blank_bounded_text_without_control_characters() {
    let too_long = "x".repeat(MAX_NAME + 1);
    let table: [(&str, &str, &str); 7] = [
        ("", "empty", "empty"),
        ("   ", "empty", "blank"),
        ("\t\n", "empty", "only whitespace"),
        (&too_long, "too_long", "MAX_NAME + 1 chars"),
        ("Ada\nLovelace", "invalid", "newline"),
        ("Ada\u{0}", "invalid", "NUL"),
        ("Ada\u{7f}", "invalid", "DEL"),
    ];
    for field in ["firstName", "lastName"] {
        for (value, code, why) in table {
            let d = draft_with(|d| {
                let slot = if field == "firstName" {
                    &mut d.first_name
                } else {
                    &mut d.last_name
                };
                *slot = Some(value.to_string());
            });
            assert_eq!(
                invalid(when_registering(d, &ctx())),
                errs(&[(field, code)]),
                "{field}: {why}"
            );
        }
    }
}

#[test]
fn names_count_characters_not_bytes_and_allow_punctuation() {
    for name in [
        "é".repeat(MAX_NAME),
        "x".repeat(MAX_NAME),
        "O'Brien-Smith Jr.".into(),
        "李".into(),
    ] {
        let decision = when_registering(
            draft_with(|d| {
                d.first_name = Some(name.clone());
                d.last_name = Some(name.clone());
            }),
            &ctx(),
        )
        .unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        assert_eq!(registered(&decision).first_name, name);
        assert_eq!(registered(&decision).last_name, name);
    }
}

// ---------------------------------------------------------------------------
// Registration: externalPatientID and duplicates
// ---------------------------------------------------------------------------

#[test]
fn external_patient_id_is_one_to_sixty_four_visible_ascii_characters() {
    for ok in ["MRN-1001", "!~", "x", &"x".repeat(64), "a/b#c"] {
        let decision = when_registering(
            draft_with(|d| d.external_patient_id = Some(ok.into())),
            &ctx(),
        )
        .unwrap_or_else(|e| panic!("{ok:?}: {e:?}"));
        assert_eq!(
            registered(&decision).external_patient_id.as_deref(),
            Some(ok)
        );
    }
    for bad in [
        "",
        "MRN 1001",
        " MRN",
        "MRN\t1",
        "MRN-ä",
        "MRN-１",
        &"x".repeat(65),
    ] {
        assert_eq!(
            invalid(when_registering(
                draft_with(|d| d.external_patient_id = Some(bad.into())),
                &ctx()
            )),
            errs(&[("externalPatientID", "invalid")]),
            "{bad:?}"
        );
    }
}

#[test]
fn a_taken_external_patient_id_is_a_duplicate_naming_the_holder() {
    let c = Context {
        external_id_holder: Some(other_pid()),
        ..ctx()
    };
    assert_eq!(
        when_registering(draft(), &c),
        Err(PatientRejection::DuplicateExternalId {
            existing: other_pid()
        })
    );
}

#[test]
fn without_an_external_patient_id_a_holder_is_irrelevant() {
    let c = Context {
        external_id_holder: Some(other_pid()),
        ..ctx()
    };
    let decision = when_registering(draft_with(|d| d.external_patient_id = None), &c).unwrap();
    assert_eq!(registered(&decision).patient_id, pid());
    assert_eq!(registered(&decision).external_patient_id, None);
}

// ---------------------------------------------------------------------------
// Registration: client and location
// ---------------------------------------------------------------------------

#[test]
fn client_id_must_be_a_reference_id() {
    for bad in ["", "C 1", "C/1", "Cé", &"C".repeat(65)] {
        let errors = invalid(when_registering(
            draft_with(|d| d.client_id = Some(bad.into())),
            &ctx(),
        ));
        assert!(
            errors.contains(&("clientID".into(), "invalid")),
            "{bad:?}: {errors:?}"
        );
        assert!(
            !errors.contains(&("clientID".into(), "unknown_client")),
            "a malformed id is not also unknown: {errors:?}"
        );
    }
}

#[test]
fn location_id_must_be_a_reference_id() {
    for bad in ["", "L 1", "L/1", "Lé", &"L".repeat(65)] {
        assert_eq!(
            invalid(when_registering(
                draft_with(|d| d.location_id = Some(bad.into())),
                &ctx()
            )),
            errs(&[("locationID", "invalid")]),
            "{bad:?}"
        );
    }
}

#[test]
fn reference_ids_accept_letters_digits_dot_underscore_dash() {
    let c = Context {
        location_client: Some("lab_1.north-A".into()),
        ..ctx()
    };
    let decision = when_registering(
        draft_with(|d| {
            d.client_id = Some("lab_1.north-A".into());
            d.location_id = Some("x".repeat(64));
        }),
        &c,
    )
    .unwrap();
    assert_eq!(registered(&decision).client_id, "lab_1.north-A");
    assert_eq!(registered(&decision).location_id, "x".repeat(64));
}

#[test]
fn an_unknown_client_is_refused() {
    let c = Context {
        client_exists: false,
        ..ctx()
    };
    assert_eq!(
        invalid(when_registering(draft(), &c)),
        errs(&[("clientID", "unknown_client")])
    );
}

#[test]
fn a_location_of_another_client_looks_exactly_like_an_unknown_location() {
    let unknown = Context {
        location_client: None,
        ..ctx()
    };
    let foreign = Context {
        location_client: Some("C2".into()),
        ..ctx()
    };
    let unknown_result = when_registering(draft(), &unknown);
    let foreign_result = when_registering(draft(), &foreign);
    assert_eq!(unknown_result, foreign_result, "no existence oracle");
    assert_eq!(
        invalid(unknown_result),
        errs(&[("locationID", "unknown_location")])
    );
}

// ---------------------------------------------------------------------------
// Registration: email and accounts
// ---------------------------------------------------------------------------

#[test]
fn a_valid_email_is_stored_and_opens_an_account() {
    for email in [
        "ada@example.org",
        "first.last+tag@sub.example.co.uk",
        "ADA@Example.ORG",
        "a@b",
    ] {
        let decision =
            when_registering(draft_with(|d| d.email = Some(email.into())), &ctx()).unwrap();
        assert_eq!(
            registered(&decision).email.as_deref(),
            Some(email),
            "{email}"
        );
        assert_eq!(decision.open_account.as_deref(), Some(email), "{email}");
        assert!(decision.warnings.is_empty(), "{email}");
    }
}

#[test]
fn an_invalid_email_is_dropped_with_a_warning_and_the_patient_still_registers() {
    let local = "a".repeat(64);
    let too_long = format!(
        "{local}@{}.{}.{}.org",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(58)
    );
    assert_eq!(too_long.len(), MAX_EMAIL + 1);
    for email in [
        "not-an-email",
        "a@",
        "@b.org",
        "a b@c.org",
        "",
        "Ada <ada@example.org>",
        "a@@b.org",
        &too_long,
    ] {
        let decision = when_registering(draft_with(|d| d.email = Some(email.into())), &ctx())
            .unwrap_or_else(|e| panic!("{email:?} must not refuse the patient: {e:?}"));
        let e = registered(&decision);
        assert_eq!(e.first_name, "Ada", "{email:?}");
        assert_eq!(e.email, None, "an invalid email is not stored: {email:?}");
        assert_eq!(decision.open_account, None, "{email:?}");
        assert_eq!(
            decision.warnings,
            vec![warning("email", "invalid_email")],
            "{email:?}"
        );
    }
}

#[test]
fn the_longest_email_accepted_is_max_email_characters() {
    let email = format!(
        "{}@{}.{}.{}.org",
        "a".repeat(64),
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(57)
    );
    assert_eq!(email.len(), MAX_EMAIL);
    assert!(is_valid_email(&email));
    let decision = when_registering(draft_with(|d| d.email = Some(email.clone())), &ctx()).unwrap();
    assert_eq!(decision.open_account, Some(email));
}

#[test]
fn an_email_in_use_is_stored_without_account_and_warned_about() {
    let c = Context {
        email_in_use: true,
        ..ctx()
    };
    let decision = when_registering(draft(), &c).unwrap();
    assert_eq!(
        registered(&decision).email.as_deref(),
        Some("ada@example.org")
    );
    assert_eq!(decision.open_account, None);
    assert_eq!(decision.warnings, vec![warning("email", "email_in_use")]);
}

#[test]
fn an_invalid_email_is_reported_invalid_even_if_in_use_is_claimed() {
    let c = Context {
        email_in_use: true,
        ..ctx()
    };
    let decision = when_registering(draft_with(|d| d.email = Some("a@".into())), &c).unwrap();
    assert_eq!(registered(&decision).email, None);
    assert_eq!(decision.warnings, vec![warning("email", "invalid_email")]);
}

#[test]
fn no_email_means_no_account_and_no_warning() {
    let decision = when_registering(draft_with(|d| d.email = None), &ctx()).unwrap();
    assert_eq!(registered(&decision).email, None);
    assert_eq!(decision.open_account, None);
    assert!(decision.warnings.is_empty());
}

#[test]
fn login_keys_compare_case_insensitively() {
    assert_eq!(login_key("Ada@Example.ORG"), login_key("ada@example.org"));
    assert_ne!(login_key("ada@example.org"), login_key("ada2@example.org"));
}

// ---------------------------------------------------------------------------
// Registration: address and phone
// ---------------------------------------------------------------------------

#[test]
fn address_country_must_be_two_uppercase_letters() {
    for ok in ["US", "GB", "DE"] {
        let d = draft_with(|d| d.address.as_mut().unwrap().country = Some(ok.into()));
        let decision = when_registering(d, &ctx()).unwrap();
        assert_eq!(
            registered(&decision)
                .address
                .as_ref()
                .unwrap()
                .country
                .as_deref(),
            Some(ok)
        );
    }
    for bad in ["us", "Us", "USA", "U", "U1", "", "ÜS", "U S"] {
        let d = draft_with(|d| d.address.as_mut().unwrap().country = Some(bad.into()));
        assert_eq!(
            invalid(when_registering(d, &ctx())),
            errs(&[("address.country", "invalid")]),
            "{bad:?}"
        );
    }
}

#[test]
fn address_lines_are_checked_and_named_by_path() {
    let too_long = "x".repeat(MAX_ADDRESS_LINE + 1);
    let table: [(DraftChange, &str, &str); 6] = [
        (
            |d| d.address.as_mut().unwrap().line1 = Some("".into()),
            "address.line1",
            "empty",
        ),
        (
            |d| d.address.as_mut().unwrap().line2 = Some("  ".into()),
            "address.line2",
            "empty",
        ),
        (
            |d| d.address.as_mut().unwrap().city = Some("Lon\ndon".into()),
            "address.city",
            "invalid",
        ),
        (
            |d| d.address.as_mut().unwrap().state = Some("\u{7}".into()),
            "address.state",
            "invalid",
        ),
        (
            |d| d.address.as_mut().unwrap().postal_code = Some("\t".into()),
            "address.postalCode",
            "empty",
        ),
        (
            |d| d.address.as_mut().unwrap().country = Some("gb".into()),
            "address.country",
            "invalid",
        ),
    ];
    for (change, field, code) in table {
        assert_eq!(
            invalid(when_registering(draft_with(change), &ctx())),
            errs(&[(field, code)]),
            "{field}"
        );
    }
    let d = draft_with(|d| d.address.as_mut().unwrap().line1 = Some(too_long.clone()));
    assert_eq!(
        invalid(when_registering(d, &ctx())),
        errs(&[("address.line1", "too_long")])
    );
    let d = draft_with(|d| d.address.as_mut().unwrap().line1 = Some("x".repeat(MAX_ADDRESS_LINE)));
    assert!(
        when_registering(d, &ctx()).is_ok(),
        "MAX_ADDRESS_LINE is allowed"
    );
}

#[test]
fn an_empty_address_object_is_dropped() {
    let decision =
        when_registering(draft_with(|d| d.address = Some(Address::default())), &ctx()).unwrap();
    assert_eq!(registered(&decision).address, None);
}

#[test]
fn a_partial_address_is_kept_as_given() {
    let partial = Address {
        city: Some("Paris".into()),
        country: Some("FR".into()),
        ..Address::default()
    };
    let decision =
        when_registering(draft_with(|d| d.address = Some(partial.clone())), &ctx()).unwrap();
    assert_eq!(registered(&decision).address, Some(partial));
}

#[test]
fn phone_is_up_to_32_digits_spaces_and_plus_dash_parens_dots() {
    for ok in [
        "+15555550100",
        "+1 (555) 555-0100",
        "555.0100",
        "1",
        &"1".repeat(32),
    ] {
        let decision = when_registering(draft_with(|d| d.phone = Some(ok.into())), &ctx())
            .unwrap_or_else(|e| panic!("{ok:?}: {e:?}"));
        assert_eq!(registered(&decision).phone.as_deref(), Some(ok));
    }
    for bad in [
        "",
        "abc",
        "+",
        "() -",
        "555-0100 ext 2",
        "555/0100",
        "+1\n555",
        &"1".repeat(33),
    ] {
        assert_eq!(
            invalid(when_registering(
                draft_with(|d| d.phone = Some(bad.into())),
                &ctx()
            )),
            errs(&[("phone", "invalid")]),
            "{bad:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// apply / replay and event storage
// ---------------------------------------------------------------------------

#[test]
fn registration_gives_version_1_with_the_registered_state() {
    assert_eq!(
        patient(),
        Patient {
            id: pid(),
            client_id: "C1".into(),
            location_id: "L1".into(),
            external_patient_id: Some("MRN-1001".into()),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            date_of_birth: date("1990-12-10"),
            sex: Sex::Female,
            email: Some("ada@example.org".into()),
            phone: Some("+15555550100".into()),
            address: Some(address()),
            version: 1,
        }
    );
}

#[test]
fn each_update_increments_the_version_and_applies_its_changes() {
    let rename = PatientEvent::PatientUpdated(PatientUpdated {
        patient_id: pid(),
        changes: PatientChanges {
            first_name: Some("Augusta".into()),
            ..PatientChanges::default()
        },
    });
    let remove = PatientEvent::PatientUpdated(PatientUpdated {
        patient_id: pid(),
        changes: PatientChanges {
            external_patient_id: Some(None),
            email: Some(None),
            phone: Some(None),
            address: Some(None),
            location_id: Some("L2".into()),
            sex: Some(Sex::Other),
            date_of_birth: Some(date("1991-01-02")),
            last_name: Some("King".into()),
            ..PatientChanges::default()
        },
    });
    let mut history = vec![registration_of(draft()), rename.clone()];
    let after_rename = given(&history).unwrap();
    assert_eq!(after_rename.version, 2);
    assert_eq!(after_rename.first_name, "Augusta");
    assert_eq!(after_rename.last_name, "Lovelace", "untouched fields stay");

    history.push(remove);
    let after_remove = given(&history).unwrap();
    assert_eq!(
        after_remove,
        Patient {
            first_name: "Augusta".into(),
            last_name: "King".into(),
            location_id: "L2".into(),
            sex: Sex::Other,
            date_of_birth: date("1991-01-02"),
            external_patient_id: None,
            email: None,
            phone: None,
            address: None,
            version: 3,
            ..patient()
        }
    );
}

#[test]
fn an_update_before_registration_leaves_no_patient() {
    let update = PatientEvent::PatientUpdated(PatientUpdated {
        patient_id: pid(),
        changes: PatientChanges {
            first_name: Some("Ada".into()),
            ..PatientChanges::default()
        },
    });
    assert_eq!(given(std::slice::from_ref(&update)), None);
    assert_eq!(apply(None, &update), None);
    assert_eq!(given(&[]), None);
}

#[test]
fn events_have_their_contract_type_names_and_patient_stream() {
    let update = PatientEvent::PatientUpdated(PatientUpdated {
        patient_id: pid(),
        changes: PatientChanges::default(),
    });
    assert_eq!(registration_of(draft()).event_type(), "PatientRegistered");
    assert_eq!(update.event_type(), "PatientUpdated");
    assert_eq!(PatientEvent::STREAM, StreamKind::Patient);
}

#[test]
fn events_survive_a_round_trip_through_their_stored_parts() {
    let full = registration_of(draft());
    let minimal = registration_of(draft_with(|d| {
        d.external_patient_id = None;
        d.email = None;
        d.phone = None;
        d.address = None;
    }));
    let sets = PatientEvent::PatientUpdated(PatientUpdated {
        patient_id: pid(),
        changes: PatientChanges {
            first_name: Some("Augusta".into()),
            last_name: Some("King".into()),
            date_of_birth: Some(date("1970-01-01")),
            sex: Some(Sex::Unknown),
            location_id: Some("L2".into()),
            external_patient_id: Some(Some("MRN-2".into())),
            email: Some(Some("augusta@example.org".into())),
            phone: Some(Some("+441234".into())),
            address: Some(Some(address())),
        },
    });
    let removals = PatientEvent::PatientUpdated(PatientUpdated {
        patient_id: pid(),
        changes: PatientChanges {
            external_patient_id: Some(None),
            email: Some(None),
            phone: Some(None),
            address: Some(None),
            ..PatientChanges::default()
        },
    });
    for event in [full, minimal, sets, removals.clone()] {
        assert_eq!(round_trip(&event), event);
    }
    // A removal is stored as an explicit null, an unchanged field not at all.
    let data = removals.to_data();
    assert_eq!(data["changes"]["email"], serde_json::Value::Null);
    assert!(data["changes"].get("email").is_some());
    assert!(data["changes"].get("firstName").is_none());
}

#[test]
fn stored_event_data_uses_the_contract_field_names() {
    let data = registration_of(draft()).to_data();
    for key in [
        "patientID",
        "clientID",
        "locationID",
        "externalPatientID",
        "firstName",
        "lastName",
        "dateOfBirth",
        "sex",
        "email",
        "phone",
        "address",
    ] {
        assert!(data.get(key).is_some(), "{key} in {data}");
    }
    assert_eq!(data["dateOfBirth"], "1990-12-10");
    assert_eq!(data["sex"], "female");
    assert_eq!(data["address"]["postalCode"], "SW1Y 4JH");
}

// ---------------------------------------------------------------------------
// Update: nothing changes
// ---------------------------------------------------------------------------

#[test]
fn an_empty_patch_changes_nothing() {
    let decision = update(&patient(), PatientPatch::default(), &ctx()).unwrap();
    assert_eq!(
        decision,
        Decision {
            event: None,
            open_account: None,
            new_login: None,
            warnings: vec![],
        }
    );
}

#[test]
fn setting_a_field_to_its_current_value_appends_no_event() {
    type PatchChange = fn(&mut PatientPatch);
    let table: [(&str, PatchChange); 10] = [
        ("firstName", |p| p.first_name = set("Ada")),
        ("lastName", |p| p.last_name = set("Lovelace")),
        ("dateOfBirth", |p| p.date_of_birth = set("1990-12-10")),
        ("sex", |p| p.sex = set("female")),
        ("locationID", |p| p.location_id = set("L1")),
        ("externalPatientID", |p| {
            p.external_patient_id = set("MRN-1001")
        }),
        ("phone", |p| p.phone = set("+15555550100")),
        ("email", |p| p.email = set("ada@example.org")),
        ("address", |p| {
            p.address = Patch::Set(AddressPatch {
                city: set("London"),
                line2: Patch::Null,
                ..AddressPatch::default()
            })
        }),
        ("address (empty patch)", |p| {
            p.address = Patch::Set(AddressPatch::default())
        }),
    ];
    // The patient already has its account (opened at registration).
    let c = Context {
        has_account: true,
        external_id_holder: Some(pid()),
        ..ctx()
    };
    for (what, change) in table {
        let mut patch = PatientPatch::default();
        change(&mut patch);
        let decision = update(&patient(), patch, &c).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(decision.event, None, "{what}");
        assert_eq!(decision.open_account, None, "{what}");
        assert!(decision.warnings.is_empty(), "{what}");
    }
}

#[test]
fn removing_what_is_not_there_appends_no_event() {
    let bare = patient_with(|d| {
        d.external_patient_id = None;
        d.email = None;
        d.phone = None;
        d.address = None;
    });
    let patch = PatientPatch {
        external_patient_id: Patch::Null,
        email: Patch::Null,
        phone: Patch::Null,
        address: Patch::Null,
        ..PatientPatch::default()
    };
    let decision = update(&bare, patch, &ctx()).unwrap();
    assert_eq!(decision.event, None);
    assert!(decision.warnings.is_empty());
}

// ---------------------------------------------------------------------------
// Update: changes
// ---------------------------------------------------------------------------

#[test]
fn an_update_records_only_the_changed_fields() {
    let patch = PatientPatch {
        first_name: set("Augusta"),
        last_name: set("Lovelace"), // unchanged
        date_of_birth: set("1991-01-02"),
        sex: set("other"),
        phone: set("+441234567"),
        ..PatientPatch::default()
    };
    let state = patient();
    let decision = update(&state, patch, &ctx()).unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            first_name: Some("Augusta".into()),
            date_of_birth: Some(date("1991-01-02")),
            sex: Some(Sex::Other),
            phone: Some(Some("+441234567".into())),
            ..PatientChanges::default()
        }
    );
    assert_eq!(decision.open_account, None);
    assert!(decision.warnings.is_empty());

    let after = given(&[registration_of(draft()), decision.event.unwrap()]).unwrap();
    assert_eq!(after.version, 2);
    assert_eq!(after.first_name, "Augusta");
    assert_eq!(after.last_name, "Lovelace");
    assert_eq!(after.phone.as_deref(), Some("+441234567"));
    assert_eq!(after.client_id, "C1", "the client never changes");
}

#[test]
fn removing_an_optional_field_records_a_null() {
    let decision = update(
        &patient(),
        PatientPatch {
            phone: Patch::Null,
            ..PatientPatch::default()
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            phone: Some(None),
            ..PatientChanges::default()
        }
    );
}

#[test]
fn required_fields_cannot_be_removed() {
    type PatchChange = fn(&mut PatientPatch);
    let table: [(&str, PatchChange); 5] = [
        ("firstName", |p| p.first_name = Patch::Null),
        ("lastName", |p| p.last_name = Patch::Null),
        ("dateOfBirth", |p| p.date_of_birth = Patch::Null),
        ("sex", |p| p.sex = Patch::Null),
        ("locationID", |p| p.location_id = Patch::Null),
    ];
    for (field, change) in table {
        let mut patch = PatientPatch::default();
        change(&mut patch);
        assert_eq!(
            invalid(update(&patient(), patch, &ctx())),
            errs(&[(field, "required")]),
            "{field}"
        );
    }
}

#[test]
fn invalid_patch_values_are_refused_with_the_registration_rules() {
    type PatchChange = fn(&mut PatientPatch);
    let table: [(PatchChange, &str, &str); 12] = [
        (|p| p.first_name = set(" "), "firstName", "empty"),
        (
            |p| p.last_name = set(&"x".repeat(MAX_NAME + 1)),
            "lastName",
            "too_long",
        ),
        (|p| p.first_name = set("A\u{1b}da"), "firstName", "invalid"),
        (
            |p| p.date_of_birth = set("1990-2-3"),
            "dateOfBirth",
            "invalid",
        ),
        (
            |p| p.date_of_birth = set("2026-11-27"),
            "dateOfBirth",
            "in_future",
        ),
        (
            |p| p.date_of_birth = set("1899-12-31"),
            "dateOfBirth",
            "too_early",
        ),
        (|p| p.sex = set("Female"), "sex", "invalid"),
        (|p| p.location_id = set("L 2"), "locationID", "invalid"),
        (
            |p| p.external_patient_id = set("MRN 2"),
            "externalPatientID",
            "invalid",
        ),
        (|p| p.phone = set("n/a"), "phone", "invalid"),
        (
            |p| {
                p.address = Patch::Set(AddressPatch {
                    country: set("uk"),
                    ..AddressPatch::default()
                })
            },
            "address.country",
            "invalid",
        ),
        (
            |p| {
                p.address = Patch::Set(AddressPatch {
                    line1: set(""),
                    ..AddressPatch::default()
                })
            },
            "address.line1",
            "empty",
        ),
    ];
    for (change, field, code) in table {
        let mut patch = PatientPatch::default();
        change(&mut patch);
        assert_eq!(
            invalid(update(&patient(), patch, &ctx())),
            errs(&[(field, code)]),
            "{field} {code}"
        );
    }
}

#[test]
fn every_bad_patch_field_is_reported_at_once() {
    let patch = PatientPatch {
        first_name: Patch::Null,
        last_name: set(""),
        date_of_birth: set("yesterday"),
        sex: set("F"),
        phone: set("x"),
        location_id: set("L/2"),
        external_patient_id: set(""),
        address: Patch::Set(AddressPatch {
            country: set("usa"),
            ..AddressPatch::default()
        }),
        email: set("not-an-email"),
    };
    let mut errors = invalid(update(&patient(), patch, &ctx()));
    errors.sort();
    let mut expected = errs(&[
        ("firstName", "required"),
        ("lastName", "empty"),
        ("dateOfBirth", "invalid"),
        ("sex", "invalid"),
        ("phone", "invalid"),
        ("locationID", "invalid"),
        ("externalPatientID", "invalid"),
        ("address.country", "invalid"),
    ]);
    expected.sort();
    assert_eq!(errors, expected);
}

// ---------------------------------------------------------------------------
// Update: externalPatientID
// ---------------------------------------------------------------------------

#[test]
fn external_patient_id_can_be_assigned_changed_and_removed() {
    let without = patient_with(|d| d.external_patient_id = None);
    let assign = update(
        &without,
        PatientPatch {
            external_patient_id: set("MRN-2"),
            ..PatientPatch::default()
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&assign).external_patient_id,
        Some(Some("MRN-2".into()))
    );

    let change = update(
        &patient(),
        PatientPatch {
            external_patient_id: set("MRN-2"),
            ..PatientPatch::default()
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&change),
        &PatientChanges {
            external_patient_id: Some(Some("MRN-2".into())),
            ..PatientChanges::default()
        }
    );

    let remove = update(
        &patient(),
        PatientPatch {
            external_patient_id: Patch::Null,
            ..PatientPatch::default()
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&remove),
        &PatientChanges {
            external_patient_id: Some(None),
            ..PatientChanges::default()
        }
    );
    let after = given(&[registration_of(draft()), remove.event.unwrap()]).unwrap();
    assert_eq!(after.external_patient_id, None);
}

#[test]
fn an_external_patient_id_held_by_another_patient_is_a_duplicate() {
    let c = Context {
        external_id_holder: Some(other_pid()),
        ..ctx()
    };
    let patch = PatientPatch {
        external_patient_id: set("MRN-2"),
        first_name: set("Augusta"),
        ..PatientPatch::default()
    };
    assert_eq!(
        update(&patient(), patch, &c),
        Err(PatientRejection::DuplicateExternalId {
            existing: other_pid()
        })
    );
}

#[test]
fn an_external_patient_id_held_by_the_same_patient_is_fine() {
    let c = Context {
        external_id_holder: Some(pid()),
        ..ctx()
    };
    let patch = PatientPatch {
        external_patient_id: set("mrn-1001"),
        ..PatientPatch::default()
    };
    let decision = update(&patient(), patch, &c).unwrap();
    assert_eq!(
        changes(&decision).external_patient_id,
        Some(Some("mrn-1001".into()))
    );
}

#[test]
fn a_holder_is_irrelevant_when_the_external_id_is_removed_or_not_touched() {
    let c = Context {
        external_id_holder: Some(other_pid()),
        ..ctx()
    };
    let remove = update(
        &patient(),
        PatientPatch {
            external_patient_id: Patch::Null,
            ..PatientPatch::default()
        },
        &c,
    )
    .unwrap();
    assert_eq!(changes(&remove).external_patient_id, Some(None));
    let rename = update(
        &patient(),
        PatientPatch {
            first_name: set("Augusta"),
            ..PatientPatch::default()
        },
        &c,
    )
    .unwrap();
    assert_eq!(changes(&rename).first_name.as_deref(), Some("Augusta"));
}

// ---------------------------------------------------------------------------
// Update: location
// ---------------------------------------------------------------------------

#[test]
fn the_location_can_move_within_the_client() {
    let decision = update(
        &patient(),
        PatientPatch {
            location_id: set("L2"),
            ..PatientPatch::default()
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            location_id: Some("L2".into()),
            ..PatientChanges::default()
        }
    );
}

#[test]
fn the_location_cannot_move_to_another_client_or_nowhere() {
    let patch = || PatientPatch {
        location_id: set("L9"),
        ..PatientPatch::default()
    };
    let foreign = update(
        &patient(),
        patch(),
        &Context {
            location_client: Some("C2".into()),
            ..ctx()
        },
    );
    let unknown = update(
        &patient(),
        patch(),
        &Context {
            location_client: None,
            ..ctx()
        },
    );
    assert_eq!(foreign, unknown, "no existence oracle");
    assert_eq!(
        invalid(foreign),
        errs(&[("locationID", "unknown_location")])
    );
}

// ---------------------------------------------------------------------------
// Update: address merge patch
// ---------------------------------------------------------------------------

fn address_patch(ap: AddressPatch) -> PatientPatch {
    PatientPatch {
        address: Patch::Set(ap),
        ..PatientPatch::default()
    }
}

#[test]
fn setting_one_address_part_keeps_the_others() {
    let decision = update(
        &patient(),
        address_patch(AddressPatch {
            city: set("Marylebone"),
            ..AddressPatch::default()
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            address: Some(Some(Address {
                city: Some("Marylebone".into()),
                ..address()
            })),
            ..PatientChanges::default()
        }
    );
    let after = given(&[registration_of(draft()), decision.event.unwrap()]).unwrap();
    assert_eq!(after.address.as_ref().unwrap().line1, address().line1);
    assert_eq!(after.address.unwrap().city.as_deref(), Some("Marylebone"));
}

#[test]
fn a_null_address_part_removes_only_that_part() {
    let decision = update(
        &patient(),
        address_patch(AddressPatch {
            state: Patch::Null,
            line2: set("Flat 2"),
            ..AddressPatch::default()
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&decision).address,
        Some(Some(Address {
            state: None,
            line2: Some("Flat 2".into()),
            ..address()
        }))
    );
}

#[test]
fn a_null_address_removes_the_whole_address() {
    let decision = update(
        &patient(),
        PatientPatch {
            address: Patch::Null,
            ..PatientPatch::default()
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            address: Some(None),
            ..PatientChanges::default()
        }
    );
}

#[test]
fn nulling_every_address_part_removes_the_address() {
    let decision = update(
        &patient(),
        address_patch(AddressPatch {
            line1: Patch::Null,
            line2: Patch::Null,
            city: Patch::Null,
            state: Patch::Null,
            postal_code: Patch::Null,
            country: Patch::Null,
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(changes(&decision).address, Some(None));
}

#[test]
fn an_address_patch_on_a_patient_without_address_creates_one() {
    let without = patient_with(|d| d.address = None);
    let decision = update(
        &without,
        address_patch(AddressPatch {
            city: set("Paris"),
            country: set("FR"),
            ..AddressPatch::default()
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        changes(&decision).address,
        Some(Some(Address {
            city: Some("Paris".into()),
            country: Some("FR".into()),
            ..Address::default()
        }))
    );
    let nothing = update(&without, address_patch(AddressPatch::default()), &ctx()).unwrap();
    assert_eq!(nothing.event, None, "an empty address object adds nothing");
}

// ---------------------------------------------------------------------------
// Update: email and accounts
// ---------------------------------------------------------------------------

fn email_patch(email: Patch<String>) -> PatientPatch {
    PatientPatch {
        email,
        ..PatientPatch::default()
    }
}

#[test]
fn a_first_valid_email_opens_the_account_then() {
    let without = patient_with(|d| d.email = None);
    let decision = update(&without, email_patch(set("ada@example.org")), &ctx()).unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            email: Some(Some("ada@example.org".into())),
            ..PatientChanges::default()
        }
    );
    assert_eq!(decision.open_account.as_deref(), Some("ada@example.org"));
    assert!(decision.warnings.is_empty());
}

#[test]
fn changing_the_email_of_a_patient_with_an_account_opens_no_other_account() {
    let c = Context {
        has_account: true,
        ..ctx()
    };
    let decision = update(&patient(), email_patch(set("augusta@example.org")), &c).unwrap();
    assert_eq!(
        changes(&decision).email,
        Some(Some("augusta@example.org".into()))
    );
    assert_eq!(decision.open_account, None);
    assert_eq!(
        decision.new_login.as_deref(),
        Some("augusta@example.org"),
        "the account's login changes once the patient confirms"
    );
    assert!(decision.warnings.is_empty());
    let in_use = Context {
        email_in_use: true,
        ..c
    };
    let decision = update(&patient(), email_patch(set("grace@example.org")), &in_use).unwrap();
    assert_eq!(
        decision.new_login, None,
        "another account's login is never asked for"
    );
}

#[test]
fn an_invalid_email_in_a_patch_is_warned_about_and_changes_nothing() {
    for email in ["not-an-email", "a@", "@b.org", "a b@c.org", ""] {
        let decision = update(&patient(), email_patch(set(email)), &ctx())
            .unwrap_or_else(|e| panic!("{email:?}: {e:?}"));
        assert_eq!(decision.event, None, "{email:?}: the old email stays");
        assert_eq!(decision.open_account, None, "{email:?}");
        assert_eq!(
            decision.warnings,
            vec![warning("email", "invalid_email")],
            "{email:?}"
        );
    }
}

#[test]
fn an_invalid_email_does_not_stop_the_other_changes() {
    let patch = PatientPatch {
        first_name: set("Augusta"),
        email: set("a@"),
        ..PatientPatch::default()
    };
    let decision = update(&patient(), patch, &ctx()).unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            first_name: Some("Augusta".into()),
            ..PatientChanges::default()
        }
    );
    assert_eq!(decision.warnings, vec![warning("email", "invalid_email")]);
}

#[test]
fn an_email_in_use_is_stored_without_account_in_a_patch() {
    let without = patient_with(|d| d.email = None);
    let c = Context {
        email_in_use: true,
        ..ctx()
    };
    let decision = update(&without, email_patch(set("ada@example.org")), &c).unwrap();
    assert_eq!(
        changes(&decision).email,
        Some(Some("ada@example.org".into()))
    );
    assert_eq!(decision.open_account, None);
    assert_eq!(decision.warnings, vec![warning("email", "email_in_use")]);
}

#[test]
fn a_null_email_removes_it_without_opening_anything() {
    let decision = update(&patient(), email_patch(Patch::Null), &ctx()).unwrap();
    assert_eq!(
        changes(&decision),
        &PatientChanges {
            email: Some(None),
            ..PatientChanges::default()
        }
    );
    assert_eq!(decision.open_account, None);
    assert!(decision.warnings.is_empty());
    let after = given(&[registration_of(draft()), decision.event.unwrap()]).unwrap();
    assert_eq!(after.email, None);
    assert_eq!(after.version, 2);
}
