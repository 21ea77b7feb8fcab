//! The lab's test catalog: operator-managed reference data naming the tests
//! (and panels) partners may order, their analytes, units, reference ranges
//! by sex and age band, and critical limits.
//!
//! Each catalog test is its own stream (id [`catalog_stream_id`]), so a
//! definition and its revisions stay in order. A panel is simply a test with
//! several analytes.
//!
//! Results record the range and flag they were judged against (see
//! [`crate::order`]), so revising a test never changes a past result.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DomainEvent, StreamKind};
use crate::patient::Sex;
use crate::validation::{check_text, FieldError};

/// Namespace of the name-based stream ids of catalog tests.
const CATALOG_NAMESPACE: Uuid = Uuid::from_u128(0x6c69_735f_6361_7400_8000_0000_0000_0001);

/// Longest test or analyte name accepted.
pub const MAX_CATALOG_NAME: usize = 200;
/// Longest specimen type accepted (`whole blood`, `serum`).
pub const MAX_SPECIMEN_TYPE: usize = 64;
/// Longest unit accepted (`10^9/L`, `mmol/L`).
pub const MAX_UNIT: usize = 32;
/// Longest normal value of a text analyte accepted.
pub const MAX_NORMAL_VALUE: usize = 200;
/// Age in days from which the seed catalog's adult ranges apply (18 years of
/// 365 days).
pub const ADULT_AGE_DAYS: u32 = 18 * 365;

/// The stream id of a catalog test, derived from its code.
pub fn catalog_stream_id(code: &str) -> Uuid {
    Uuid::new_v5(&CATALOG_NAMESPACE, format!("catalog:{code}").as_bytes())
}

/// Whether `s` is a valid test or analyte code: 1-32 characters of
/// `A-Z 0-9 _ -` (upper case only, so codes compare exactly).
pub fn is_catalog_code(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// A test of the catalog, or a panel when it has several analytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogTest {
    /// The code partners order by (`CBC`).
    pub code: String,
    /// Display name.
    pub name: String,
    /// The specimen the test is run on (`whole blood`, `serum`).
    pub specimen_type: String,
    /// What the test measures, in report order.
    pub analytes: Vec<Analyte>,
}

impl CatalogTest {
    /// The analyte with this code, if the test measures it.
    pub fn analyte(&self, code: &str) -> Option<&Analyte> {
        self.analytes.iter().find(|a| a.code == code)
    }
}

/// One measured quantity (or observation) of a test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analyte {
    /// The code results are reported under (`HGB`).
    pub code: String,
    /// Display name.
    pub name: String,
    /// Numeric with a unit and ranges, or text.
    pub kind: AnalyteKind,
}

/// What kind of value an analyte takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AnalyteKind {
    /// A decimal number in a fixed unit, judged against reference ranges and
    /// critical limits.
    Numeric {
        /// The unit results must be reported in, compared exactly (`g/dL`).
        unit: String,
        /// Reference ranges by sex and age band; at most one applies to any
        /// patient.
        #[serde(default)]
        ranges: Vec<ReferenceRange>,
        /// Below this a value is critically low (`LL`).
        #[serde(
            rename = "criticalLow",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        critical_low: Option<f64>,
        /// Above this a value is critically high (`HH`).
        #[serde(
            rename = "criticalHigh",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        critical_high: Option<f64>,
    },
    /// A qualitative result (`Not detected`).
    Text {
        /// The normal values; any other value is abnormal (`A`). Empty: text
        /// results of this analyte are never flagged. Compared ignoring case
        /// and surrounding spaces.
        #[serde(default)]
        normal: Vec<String>,
    },
}

/// A reference range for a population of patients: a sex (or any) and an
/// age band in days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceRange {
    /// The sex it applies to; `None` for any sex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Youngest age it applies to, in days (inclusive); `None` from birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_days: Option<u32>,
    /// Age from which it no longer applies, in days (exclusive); `None` for
    /// no upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
    /// Lowest normal value (inclusive); `None` for no lower limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Highest normal value (inclusive); `None` for no upper limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
}

impl ReferenceRange {
    /// Whether the range applies to a patient of this sex and age in days. A
    /// sex-specific range applies only to that sex, so `other` and `unknown`
    /// match only ranges for any sex.
    pub fn applies_to(&self, sex: Sex, age_days: u32) -> bool {
        self.sex.is_none_or(|s| s == sex)
            && self.min_age_days.is_none_or(|m| age_days >= m)
            && self.max_age_days.is_none_or(|m| age_days < m)
    }

    /// Whether some patient could fall in both ranges.
    fn overlaps(&self, other: &ReferenceRange) -> bool {
        let sexes = match (self.sex, other.sex) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let start = self.min_age_days.max(other.min_age_days).unwrap_or(0);
        let end = |r: &ReferenceRange| r.max_age_days.map_or(u64::MAX, u64::from);
        sexes && u64::from(start) < end(self).min(end(other))
    }
}

impl AnalyteKind {
    /// The reference range applying to a patient of this sex and age in days,
    /// if any (text analytes have none).
    pub fn range_for(&self, sex: Sex, age_days: u32) -> Option<&ReferenceRange> {
        match self {
            AnalyteKind::Numeric { ranges, .. } => {
                ranges.iter().find(|r| r.applies_to(sex, age_days))
            }
            AnalyteKind::Text { .. } => None,
        }
    }

    /// The unit of a numeric analyte.
    pub fn unit(&self) -> Option<&str> {
        match self {
            AnalyteKind::Numeric { unit, .. } => Some(unit),
            AnalyteKind::Text { .. } => None,
        }
    }
}

/// The events of a catalog test stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CatalogEvent {
    /// A test was added to the catalog.
    CatalogTestDefined(CatalogTest),
    /// A test's definition was replaced by this one (same code).
    CatalogTestRevised(CatalogTest),
}

impl DomainEvent for CatalogEvent {
    const STREAM: StreamKind = StreamKind::Catalog;
    fn event_type(&self) -> &'static str {
        match self {
            CatalogEvent::CatalogTestDefined(_) => "CatalogTestDefined",
            CatalogEvent::CatalogTestRevised(_) => "CatalogTestRevised",
        }
    }
}

/// Why a catalog command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogRejection {
    /// Bad fields of the definition.
    #[error("invalid fields: {}", .0.iter().map(|e| format!("{} ({})", e.field, e.message)).collect::<Vec<_>>().join(", "))]
    Invalid(Vec<FieldError>),
}

/// Defines or revises a test. `existing` is the current definition of the
/// test with the same code, if there is one. The same definition again
/// changes nothing (`None`); a different one revises the test.
pub fn define_test(
    def: CatalogTest,
    existing: Option<&CatalogTest>,
) -> Result<Option<CatalogEvent>, CatalogRejection> {
    let errors = validate_test(&def);
    if !errors.is_empty() {
        return Err(CatalogRejection::Invalid(errors));
    }
    Ok(match existing {
        Some(e) if *e == def => None,
        Some(_) => Some(CatalogEvent::CatalogTestRevised(def)),
        None => Some(CatalogEvent::CatalogTestDefined(def)),
    })
}

/// Folds one event into the test's state: both events carry the whole
/// definition.
pub fn apply(_state: Option<CatalogTest>, event: &CatalogEvent) -> Option<CatalogTest> {
    match event {
        CatalogEvent::CatalogTestDefined(t) | CatalogEvent::CatalogTestRevised(t) => {
            Some(t.clone())
        }
    }
}

fn check_code(field: &str, code: &str, errors: &mut Vec<FieldError>) {
    if !is_catalog_code(code) {
        errors.push(FieldError::new(
            field,
            "invalid",
            "must be 1-32 characters of A-Z 0-9 _ -",
        ));
    }
}

fn check_finite(field: &str, value: Option<f64>, errors: &mut Vec<FieldError>) {
    if value.is_some_and(|v| !v.is_finite()) {
        errors.push(FieldError::new(field, "invalid", "must be a finite number"));
    }
}

/// Every rule of a definition, each bad field named by its path.
fn validate_test(def: &CatalogTest) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_code("code", &def.code, &mut errors);
    check_text("name", &def.name, MAX_CATALOG_NAME, &mut errors);
    check_text(
        "specimenType",
        &def.specimen_type,
        MAX_SPECIMEN_TYPE,
        &mut errors,
    );
    if def.analytes.is_empty() {
        errors.push(FieldError::new(
            "analytes",
            "empty",
            "a test measures at least one analyte",
        ));
    }
    for (i, a) in def.analytes.iter().enumerate() {
        let at = format!("analytes[{i}]");
        check_code(&format!("{at}.code"), &a.code, &mut errors);
        if def.analytes[..i].iter().any(|b| b.code == a.code) {
            errors.push(FieldError::new(
                format!("{at}.code"),
                "duplicate",
                "another analyte of the test has this code",
            ));
        }
        check_text(
            &format!("{at}.name"),
            &a.name,
            MAX_CATALOG_NAME,
            &mut errors,
        );
        match &a.kind {
            AnalyteKind::Numeric {
                unit,
                ranges,
                critical_low,
                critical_high,
            } => check_numeric(
                &format!("{at}.kind"),
                unit,
                ranges,
                *critical_low,
                *critical_high,
                &mut errors,
            ),
            AnalyteKind::Text { normal } => {
                for (k, n) in normal.iter().enumerate() {
                    let field = format!("{at}.kind.normal[{k}]");
                    check_text(&field, n, MAX_NORMAL_VALUE, &mut errors);
                    if normal[..k]
                        .iter()
                        .any(|m| m.trim().eq_ignore_ascii_case(n.trim()))
                    {
                        errors.push(FieldError::new(field, "duplicate", "listed twice"));
                    }
                }
            }
        }
    }
    errors
}

fn check_numeric(
    at: &str,
    unit: &str,
    ranges: &[ReferenceRange],
    critical_low: Option<f64>,
    critical_high: Option<f64>,
    errors: &mut Vec<FieldError>,
) {
    check_text(&format!("{at}.unit"), unit, MAX_UNIT, errors);
    check_finite(&format!("{at}.criticalLow"), critical_low, errors);
    check_finite(&format!("{at}.criticalHigh"), critical_high, errors);
    if let (Some(l), Some(h)) = (critical_low, critical_high) {
        if l >= h {
            errors.push(FieldError::new(
                format!("{at}.criticalHigh"),
                "critical_order",
                "must be above criticalLow",
            ));
        }
    }
    for (j, r) in ranges.iter().enumerate() {
        let rf = format!("{at}.ranges[{j}]");
        check_finite(&format!("{rf}.low"), r.low, errors);
        check_finite(&format!("{rf}.high"), r.high, errors);
        if r.low.is_none() && r.high.is_none() {
            errors.push(FieldError::new(
                rf.clone(),
                "no_limits",
                "a range needs a low or a high limit",
            ));
        }
        if let (Some(l), Some(h)) = (r.low, r.high) {
            if l > h {
                errors.push(FieldError::new(
                    format!("{rf}.high"),
                    "range_order",
                    "must not be below low",
                ));
            }
        }
        if let (Some(min), Some(max)) = (r.min_age_days, r.max_age_days) {
            if min >= max {
                errors.push(FieldError::new(
                    format!("{rf}.maxAgeDays"),
                    "age_order",
                    "must be above minAgeDays",
                ));
            }
        }
        if let (Some(c), Some(l)) = (critical_low, r.low) {
            if c > l {
                errors.push(FieldError::new(
                    format!("{at}.criticalLow"),
                    "critical_order",
                    format!("must not be above the low limit of ranges[{j}]"),
                ));
            }
        }
        if let (Some(c), Some(h)) = (critical_high, r.high) {
            if c < h {
                errors.push(FieldError::new(
                    format!("{at}.criticalHigh"),
                    "critical_order",
                    format!("must not be below the high limit of ranges[{j}]"),
                ));
            }
        }
        if let Some(k) = ranges[..j].iter().position(|o| o.overlaps(r)) {
            errors.push(FieldError::new(
                rf,
                "overlap",
                format!("applies to some of the same patients as ranges[{k}]"),
            ));
        }
    }
}

fn range(sex: Option<Sex>, low: Option<f64>, high: Option<f64>) -> ReferenceRange {
    ReferenceRange {
        sex,
        min_age_days: Some(ADULT_AGE_DAYS),
        max_age_days: None,
        low,
        high,
    }
}

fn numeric(
    code: &str,
    name: &str,
    unit: &str,
    ranges: Vec<ReferenceRange>,
    critical: Option<(f64, f64)>,
) -> Analyte {
    Analyte {
        code: code.into(),
        name: name.into(),
        kind: AnalyteKind::Numeric {
            unit: unit.into(),
            ranges,
            critical_low: critical.map(|c| c.0),
            critical_high: critical.map(|c| c.1),
        },
    }
}

/// One adult range for any sex.
fn any_sex(low: Option<f64>, high: Option<f64>) -> Vec<ReferenceRange> {
    vec![range(None, low, high)]
}

/// Adult ranges for men and women: `(male low, male high)`, then female.
fn by_sex(
    male: (Option<f64>, Option<f64>),
    female: (Option<f64>, Option<f64>),
) -> Vec<ReferenceRange> {
    vec![
        range(Some(Sex::Male), male.0, male.1),
        range(Some(Sex::Female), female.0, female.1),
    ]
}

fn test(code: &str, name: &str, specimen_type: &str, analytes: Vec<Analyte>) -> CatalogTest {
    CatalogTest {
        code: code.into(),
        name: name.into(),
        specimen_type: specimen_type.into(),
        analytes,
    }
}

/// A small, realistic adult catalog for the local stack and for tests:
/// complete blood count (`CBC`), basic metabolic panel (`BMP`), lipid panel
/// (`LIPID`), haemoglobin A1c (`A1C`), TSH (`TSH`) and a qualitative
/// SARS-CoV-2 PCR (`COVID19`).
///
/// Units are the common US conventional ones; ranges are typical adult
/// reference intervals (from 18 years, [`ADULT_AGE_DAYS`]), so children get no
/// range and no flag. Ranges for one sex only leave `other` and `unknown`
/// unflagged. Critical limits are typical laboratory call-back values.
pub fn seed_catalog() -> Vec<CatalogTest> {
    let s = Some;
    vec![
        test(
            "CBC",
            "Complete blood count",
            "whole blood",
            vec![
                numeric(
                    "WBC",
                    "White blood cell count",
                    "10^9/L",
                    any_sex(s(4.0), s(11.0)),
                    None,
                ),
                numeric(
                    "RBC",
                    "Red blood cell count",
                    "10^12/L",
                    by_sex((s(4.5), s(5.9)), (s(4.1), s(5.1))),
                    None,
                ),
                numeric(
                    "HGB",
                    "Hemoglobin",
                    "g/dL",
                    by_sex((s(13.5), s(17.5)), (s(12.0), s(15.5))),
                    Some((7.0, 20.0)),
                ),
                numeric(
                    "HCT",
                    "Hematocrit",
                    "%",
                    by_sex((s(41.0), s(53.0)), (s(36.0), s(46.0))),
                    None,
                ),
                numeric(
                    "PLT",
                    "Platelet count",
                    "10^9/L",
                    any_sex(s(150.0), s(400.0)),
                    Some((50.0, 1000.0)),
                ),
            ],
        ),
        test(
            "BMP",
            "Basic metabolic panel",
            "serum",
            vec![
                numeric(
                    "NA",
                    "Sodium",
                    "mmol/L",
                    any_sex(s(135.0), s(145.0)),
                    Some((120.0, 160.0)),
                ),
                numeric(
                    "K",
                    "Potassium",
                    "mmol/L",
                    any_sex(s(3.5), s(5.1)),
                    Some((2.5, 6.5)),
                ),
                numeric("CL", "Chloride", "mmol/L", any_sex(s(98.0), s(107.0)), None),
                numeric(
                    "CO2",
                    "Carbon dioxide (bicarbonate)",
                    "mmol/L",
                    any_sex(s(22.0), s(29.0)),
                    None,
                ),
                numeric(
                    "BUN",
                    "Blood urea nitrogen",
                    "mg/dL",
                    any_sex(s(7.0), s(20.0)),
                    None,
                ),
                numeric(
                    "CREAT",
                    "Creatinine",
                    "mg/dL",
                    by_sex((s(0.74), s(1.35)), (s(0.59), s(1.04))),
                    None,
                ),
                numeric(
                    "GLU",
                    "Glucose",
                    "mg/dL",
                    any_sex(s(70.0), s(99.0)),
                    Some((40.0, 400.0)),
                ),
                numeric("CA", "Calcium", "mg/dL", any_sex(s(8.6), s(10.3)), None),
            ],
        ),
        test(
            "LIPID",
            "Lipid panel",
            "serum",
            vec![
                numeric(
                    "CHOL",
                    "Total cholesterol",
                    "mg/dL",
                    any_sex(None, s(200.0)),
                    None,
                ),
                numeric(
                    "LDL",
                    "LDL cholesterol",
                    "mg/dL",
                    any_sex(None, s(100.0)),
                    None,
                ),
                numeric(
                    "HDL",
                    "HDL cholesterol",
                    "mg/dL",
                    by_sex((s(40.0), None), (s(50.0), None)),
                    None,
                ),
                numeric(
                    "TRIG",
                    "Triglycerides",
                    "mg/dL",
                    any_sex(None, s(150.0)),
                    None,
                ),
            ],
        ),
        test(
            "A1C",
            "Hemoglobin A1c",
            "whole blood",
            vec![numeric(
                "HBA1C",
                "Hemoglobin A1c",
                "%",
                any_sex(s(4.0), s(5.6)),
                None,
            )],
        ),
        test(
            "TSH",
            "Thyroid-stimulating hormone",
            "serum",
            vec![numeric(
                "TSH",
                "Thyroid-stimulating hormone",
                "mIU/L",
                any_sex(s(0.4), s(4.0)),
                None,
            )],
        ),
        test(
            "COVID19",
            "SARS-CoV-2 RNA, qualitative PCR",
            "nasopharyngeal swab",
            vec![Analyte {
                code: "SARSCOV2".into(),
                name: "SARS-CoV-2 RNA".into(),
                kind: AnalyteKind::Text {
                    normal: vec!["Not detected".into()],
                },
            }],
        ),
    ]
}

#[cfg(test)]
mod tests;
