//! Given/when/then tests of the test catalog: given the current definition
//! (or none), when a definition is submitted, then this event (or this
//! rejection) results.

use super::*;
use crate::event::DomainEvent;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn seed(code: &str) -> CatalogTest {
    seed_catalog()
        .into_iter()
        .find(|t| t.code == code)
        .expect("seeded test")
}

/// A single-analyte numeric test with the given kind details.
fn numeric_test(
    ranges: Vec<ReferenceRange>,
    critical_low: Option<f64>,
    critical_high: Option<f64>,
) -> CatalogTest {
    CatalogTest {
        code: "X1".into(),
        name: "Test".into(),
        specimen_type: "serum".into(),
        analytes: vec![Analyte {
            code: "A1".into(),
            name: "Analyte".into(),
            kind: AnalyteKind::Numeric {
                unit: "mg/dL".into(),
                ranges,
                critical_low,
                critical_high,
            },
        }],
    }
}

fn rr(sex: Option<Sex>, ages: (Option<u32>, Option<u32>), low: f64, high: f64) -> ReferenceRange {
    ReferenceRange {
        sex,
        min_age_days: ages.0,
        max_age_days: ages.1,
        low: Some(low),
        high: Some(high),
    }
}

/// The (field, code) pairs of an `Invalid` rejection.
fn invalid(result: Result<Option<CatalogEvent>, CatalogRejection>) -> Vec<(String, &'static str)> {
    match result {
        Err(CatalogRejection::Invalid(errors)) => {
            assert!(!errors.is_empty());
            errors.into_iter().map(|e| (e.field, e.code)).collect()
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn errs(expected: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    expected.iter().map(|(f, c)| (f.to_string(), *c)).collect()
}

fn round_trip(event: &CatalogEvent) -> CatalogEvent {
    let data = event.to_data();
    assert!(data.is_object(), "data is an object: {data}");
    CatalogEvent::from_parts(event.event_type(), data).expect("stored event parses")
}

// ---------------------------------------------------------------------------
// Defining and revising
// ---------------------------------------------------------------------------

#[test]
fn a_new_valid_definition_is_defined() {
    let cbc = seed("CBC");
    assert_eq!(
        define_test(cbc.clone(), None).unwrap(),
        Some(CatalogEvent::CatalogTestDefined(cbc))
    );
}

#[test]
fn the_same_definition_again_changes_nothing() {
    let cbc = seed("CBC");
    assert_eq!(define_test(cbc.clone(), Some(&cbc)).unwrap(), None);
}

#[test]
fn a_different_definition_of_an_existing_test_revises_it() {
    let old = seed("TSH");
    let mut new = old.clone();
    new.name = "TSH, third generation".into();
    let event = define_test(new.clone(), Some(&old)).unwrap().unwrap();
    assert_eq!(event, CatalogEvent::CatalogTestRevised(new.clone()));
    assert_eq!(event.event_type(), "CatalogTestRevised");
    let state = apply(apply(None, &CatalogEvent::CatalogTestDefined(old)), &event);
    assert_eq!(state, Some(new));
}

#[test]
fn the_seed_catalog_passes_define_test_and_replays() {
    let catalog = seed_catalog();
    let codes: Vec<_> = catalog.iter().map(|t| t.code.as_str()).collect();
    assert_eq!(codes, ["CBC", "BMP", "LIPID", "A1C", "TSH", "COVID19"]);
    for t in catalog {
        let event = define_test(t.clone(), None)
            .unwrap_or_else(|e| panic!("{}: {e}", t.code))
            .expect("new test defines");
        assert_eq!(apply(None, &event), Some(t.clone()));
        assert_eq!(round_trip(&event), event, "{}", t.code);
        assert_eq!(define_test(t.clone(), Some(&t)).unwrap(), None);
    }
}

#[test]
fn the_seed_catalog_has_the_documented_adult_values() {
    let hgb = seed("CBC").analyte("HGB").cloned().unwrap();
    let AnalyteKind::Numeric {
        unit,
        ranges,
        critical_low,
        critical_high,
    } = &hgb.kind
    else {
        panic!("HGB is numeric");
    };
    assert_eq!(unit, "g/dL");
    assert_eq!((*critical_low, *critical_high), (Some(7.0), Some(20.0)));
    assert_eq!(ranges.len(), 2);
    let adult = ADULT_AGE_DAYS;
    let male = hgb.kind.range_for(Sex::Male, adult).unwrap();
    assert_eq!((male.low, male.high), (Some(13.5), Some(17.5)));
    let female = hgb.kind.range_for(Sex::Female, adult + 1000).unwrap();
    assert_eq!((female.low, female.high), (Some(12.0), Some(15.5)));
    assert_eq!(hgb.kind.range_for(Sex::Female, adult - 1), None, "a child");
    assert_eq!(hgb.kind.range_for(Sex::Unknown, adult), None);

    let chol = seed("LIPID").analyte("CHOL").cloned().unwrap();
    let r = chol.kind.range_for(Sex::Other, adult).unwrap();
    assert_eq!((r.low, r.high), (None, Some(200.0)), "high only");
    let hdl = seed("LIPID").analyte("HDL").cloned().unwrap();
    let r = hdl.kind.range_for(Sex::Female, adult).unwrap();
    assert_eq!((r.low, r.high), (Some(50.0), None), "low only");

    let k = seed("BMP").analyte("K").cloned().unwrap();
    assert_eq!(k.kind.unit(), Some("mmol/L"));
    let covid = seed("COVID19");
    assert_eq!(
        covid.analytes[0].kind,
        AnalyteKind::Text {
            normal: vec!["Not detected".into()]
        }
    );
    assert_eq!(covid.analytes[0].kind.unit(), None);
}

// ---------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------

#[test]
fn codes_names_and_specimen_type_are_checked_at_once() {
    let mut t = seed("TSH");
    t.code = "tsh".into();
    t.name = " ".into();
    t.specimen_type = "x".repeat(MAX_SPECIMEN_TYPE + 1);
    t.analytes[0].code = "A B".into();
    t.analytes[0].name = String::new();
    assert_eq!(
        invalid(define_test(t, None)),
        errs(&[
            ("code", "invalid"),
            ("name", "empty"),
            ("specimenType", "too_long"),
            ("analytes[0].code", "invalid"),
            ("analytes[0].name", "empty"),
        ])
    );
}

#[test]
fn catalog_codes_are_1_to_32_upper_case_letters_digits_underscore_dash() {
    for ok in ["CBC", "A1C", "COVID_19-PCR", &"X".repeat(32)] {
        assert!(is_catalog_code(ok), "{ok}");
    }
    for bad in ["", "cbc", "C B", "C.1", &"X".repeat(33), "É"] {
        assert!(!is_catalog_code(bad), "{bad}");
    }
}

#[test]
fn a_test_needs_an_analyte() {
    let mut t = seed("TSH");
    t.analytes.clear();
    assert_eq!(
        invalid(define_test(t, None)),
        errs(&[("analytes", "empty")])
    );
}

#[test]
fn analyte_codes_are_unique_within_a_test() {
    let mut t = seed("CBC");
    t.analytes[3].code = "HGB".into();
    assert_eq!(
        invalid(define_test(t, None)),
        errs(&[("analytes[3].code", "duplicate")])
    );
}

#[test]
fn a_unit_is_required_text() {
    let mut t = numeric_test(vec![], None, None);
    if let AnalyteKind::Numeric { unit, .. } = &mut t.analytes[0].kind {
        *unit = String::new();
    }
    assert_eq!(
        invalid(define_test(t, None)),
        errs(&[("analytes[0].kind.unit", "empty")])
    );
}

#[test]
fn range_limits_must_be_ordered_present_and_finite() {
    let t = numeric_test(
        vec![
            rr(None, (None, Some(10)), 5.0, 4.0),
            ReferenceRange {
                sex: None,
                min_age_days: Some(10),
                max_age_days: Some(20),
                low: None,
                high: None,
            },
            ReferenceRange {
                sex: None,
                min_age_days: Some(30),
                max_age_days: Some(30),
                low: Some(f64::NAN),
                high: Some(1.0),
            },
        ],
        None,
        None,
    );
    assert_eq!(
        invalid(define_test(t, None)),
        errs(&[
            ("analytes[0].kind.ranges[0].high", "range_order"),
            ("analytes[0].kind.ranges[1]", "no_limits"),
            ("analytes[0].kind.ranges[2].low", "invalid"),
            ("analytes[0].kind.ranges[2].maxAgeDays", "age_order"),
        ])
    );
}

#[test]
fn a_range_with_equal_limits_is_allowed() {
    let t = numeric_test(vec![rr(None, (None, None), 5.0, 5.0)], None, None);
    assert!(define_test(t, None).unwrap().is_some());
}

#[test]
fn critical_limits_lie_outside_every_range() {
    let t = numeric_test(
        vec![
            rr(Some(Sex::Male), (None, None), 10.0, 20.0),
            rr(Some(Sex::Female), (None, None), 8.0, 18.0),
        ],
        Some(9.0),
        Some(19.0),
    );
    assert_eq!(
        invalid(define_test(t, None)),
        errs(&[
            ("analytes[0].kind.criticalHigh", "critical_order"),
            ("analytes[0].kind.criticalLow", "critical_order"),
        ])
    );
    let equal = numeric_test(
        vec![rr(None, (None, None), 10.0, 20.0)],
        Some(10.0),
        Some(20.0),
    );
    assert!(define_test(equal, None).is_ok(), "limits may coincide");
    let crossed = numeric_test(vec![], Some(5.0), Some(5.0));
    assert_eq!(
        invalid(define_test(crossed, None)),
        errs(&[("analytes[0].kind.criticalHigh", "critical_order")])
    );
}

#[test]
fn ranges_that_could_apply_to_the_same_patient_overlap() {
    let table: [(ReferenceRange, ReferenceRange, bool); 7] = [
        // Same sex, open-ended adult bands.
        (
            rr(None, (Some(100), None), 1.0, 2.0),
            rr(None, (Some(200), None), 1.0, 2.0),
            true,
        ),
        // Any sex overlaps a sex-specific range.
        (
            rr(None, (None, None), 1.0, 2.0),
            rr(Some(Sex::Male), (None, None), 1.0, 2.0),
            true,
        ),
        // Different sexes never overlap.
        (
            rr(Some(Sex::Female), (None, None), 1.0, 2.0),
            rr(Some(Sex::Male), (None, None), 1.0, 2.0),
            false,
        ),
        // Adjacent age bands (max is exclusive) do not overlap.
        (
            rr(None, (None, Some(100)), 1.0, 2.0),
            rr(None, (Some(100), None), 1.0, 2.0),
            false,
        ),
        // One day of overlap.
        (
            rr(None, (None, Some(101)), 1.0, 2.0),
            rr(None, (Some(100), None), 1.0, 2.0),
            true,
        ),
        // Disjoint closed bands.
        (
            rr(None, (Some(0), Some(10)), 1.0, 2.0),
            rr(None, (Some(10), Some(20)), 1.0, 2.0),
            false,
        ),
        // A band inside another.
        (
            rr(None, (Some(0), Some(100)), 1.0, 2.0),
            rr(None, (Some(10), Some(20)), 1.0, 2.0),
            true,
        ),
    ];
    for (a, b, overlap) in table {
        let result = define_test(numeric_test(vec![a.clone(), b.clone()], None, None), None);
        if overlap {
            assert_eq!(
                invalid(result),
                errs(&[("analytes[0].kind.ranges[1]", "overlap")]),
                "{a:?} / {b:?}"
            );
        } else {
            assert!(result.is_ok(), "{a:?} / {b:?}: {result:?}");
        }
    }
}

#[test]
fn text_normal_values_are_non_blank_and_distinct() {
    let mut t = seed("COVID19");
    t.analytes[0].kind = AnalyteKind::Text {
        normal: vec!["Negative".into(), " ".into(), "negative".into()],
    };
    assert_eq!(
        invalid(define_test(t, None)),
        errs(&[
            ("analytes[0].kind.normal[1]", "empty"),
            ("analytes[0].kind.normal[2]", "duplicate"),
        ])
    );
}

// ---------------------------------------------------------------------------
// Ranges, stream ids, JSON
// ---------------------------------------------------------------------------

#[test]
fn a_range_applies_by_sex_and_half_open_age_band() {
    let r = rr(Some(Sex::Female), (Some(10), Some(20)), 1.0, 2.0);
    assert!(!r.applies_to(Sex::Female, 9));
    assert!(r.applies_to(Sex::Female, 10));
    assert!(r.applies_to(Sex::Female, 19));
    assert!(!r.applies_to(Sex::Female, 20));
    assert!(!r.applies_to(Sex::Male, 15));
    assert!(!r.applies_to(Sex::Other, 15));
    let any = rr(None, (None, None), 1.0, 2.0);
    for sex in [Sex::Female, Sex::Male, Sex::Other, Sex::Unknown] {
        assert!(any.applies_to(sex, 0));
        assert!(any.applies_to(sex, u32::MAX));
    }
}

#[test]
fn stream_ids_are_stable_and_distinct() {
    assert_eq!(catalog_stream_id("CBC"), catalog_stream_id("CBC"));
    assert_ne!(catalog_stream_id("CBC"), catalog_stream_id("BMP"));
    assert_ne!(
        catalog_stream_id("C1"),
        crate::reference::client_stream_id("C1")
    );
}

#[test]
fn the_definition_json_is_camel_case_with_typed_analytes() {
    let event = CatalogEvent::CatalogTestDefined(seed("TSH"));
    assert_eq!(
        event.to_data(),
        serde_json::json!({
            "code": "TSH",
            "name": "Thyroid-stimulating hormone",
            "specimenType": "serum",
            "analytes": [{
                "code": "TSH",
                "name": "Thyroid-stimulating hormone",
                "kind": {
                    "type": "numeric",
                    "unit": "mIU/L",
                    "ranges": [{"minAgeDays": 6570, "low": 0.4, "high": 4.0}]
                }
            }]
        })
    );
    let text = CatalogEvent::CatalogTestRevised(seed("COVID19"));
    assert_eq!(
        text.to_data()["analytes"][0]["kind"],
        serde_json::json!({"type": "text", "normal": ["Not detected"]})
    );
    assert_eq!(round_trip(&text), text);
    let hgb = CatalogEvent::CatalogTestDefined(seed("CBC"));
    assert_eq!(
        hgb.to_data()["analytes"][2]["kind"]["ranges"][0]["sex"],
        "male"
    );
    assert_eq!(hgb.to_data()["analytes"][2]["kind"]["criticalLow"], 7.0);
    assert_eq!(round_trip(&hgb), hgb);
}

#[test]
fn integers_in_stored_json_read_back_as_limits() {
    let data = serde_json::json!({
        "code": "X1", "name": "X", "specimenType": "serum",
        "analytes": [{"code": "A1", "name": "A", "kind": {
            "type": "numeric", "unit": "mg/dL", "criticalLow": 5,
            "ranges": [{"sex": "female", "low": 10, "high": 20}]
        }}]
    });
    let event = CatalogEvent::from_parts("CatalogTestDefined", data).unwrap();
    let CatalogEvent::CatalogTestDefined(t) = event else {
        panic!("defined");
    };
    let mut expected = numeric_test(
        vec![rr(Some(Sex::Female), (None, None), 10.0, 20.0)],
        Some(5.0),
        None,
    );
    expected.name = "X".into();
    expected.analytes[0].name = "A".into();
    assert_eq!(t, expected);
}
