//! What a patient sees: their own orders whose results are `final` or
//! `corrected`, from the read models only.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use domain::catalog::CatalogTest;
use domain::order::{Flag, OrderStatus, RangeView, RecordedResult, ResultValue, Specimen};
use serde::Serialize;
use uuid::Uuid;

/// The statuses a patient sees.
const SHOWN: [OrderStatus; 2] = [OrderStatus::Final, OrderStatus::Corrected];

/// One order in the list.
#[derive(Debug, Serialize)]
pub struct OrderSummary {
    /// The order's id (the detail page's path).
    pub id: Uuid,
    /// The ordered tests' names.
    pub tests: Vec<String>,
    /// When the specimen was collected (a date).
    pub collected: String,
    /// When the results were last released (a date).
    pub released: String,
    /// Whether a result was corrected.
    pub corrected: bool,
}

/// One order with its results.
#[derive(Debug, Serialize)]
pub struct OrderDetail {
    /// The lab's accession number.
    pub accession: String,
    /// When the specimen was collected.
    pub collected: String,
    /// When the results were last released.
    pub released: String,
    /// Whether a result was corrected.
    pub corrected: bool,
    /// Each ordered test with its results.
    pub tests: Vec<TestResults>,
}

/// An ordered test's results.
#[derive(Debug, Serialize)]
pub struct TestResults {
    /// The test's name.
    pub name: String,
    /// Its analytes' results.
    pub results: Vec<ResultLine>,
}

/// One analyte's result as the patient reads it.
#[derive(Debug, Serialize)]
pub struct ResultLine {
    /// The analyte's name.
    pub name: String,
    /// The value exactly as sent.
    pub value: String,
    /// Its unit.
    pub unit: String,
    /// The reference range, in words.
    pub range: String,
    /// The flag, in words.
    pub flag: Option<&'static str>,
    /// Whether the flag says the value is out of its range.
    pub abnormal: bool,
    /// Whether it was corrected after release.
    pub corrected: bool,
}

fn date(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".into(), |t| t.format("%Y-%m-%d").to_string())
}

fn flag_words(flag: Flag) -> &'static str {
    match flag {
        Flag::Low => "Low",
        Flag::High => "High",
        Flag::CriticalLow => "Critically low",
        Flag::CriticalHigh => "Critically high",
        Flag::Abnormal => "Abnormal",
        Flag::Normal => "Normal",
    }
}

fn range_words(range: Option<RangeView>) -> String {
    match range {
        Some(RangeView {
            low: Some(l),
            high: Some(h),
        }) => format!("{l} – {h}"),
        Some(RangeView {
            low: Some(l),
            high: None,
        }) => format!("{l} or more"),
        Some(RangeView {
            low: None,
            high: Some(h),
        }) => format!("up to {h}"),
        _ => String::new(),
    }
}

fn value_text(v: &ResultValue) -> String {
    match v {
        ResultValue::Text(s) => s.clone(),
        ResultValue::Number(n) => n.to_string(),
    }
}

/// The catalog's definitions of `codes`.
async fn catalog(
    db: &impl GenericClient,
    codes: &[String],
) -> Result<HashMap<String, CatalogTest>, anyhow::Error> {
    let rows = db
        .query(
            "SELECT definition FROM catalog_tests WHERE code = ANY($1)",
            &[&codes],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let t: CatalogTest = serde_json::from_value(r.get(0))?;
            Ok((t.code.clone(), t))
        })
        .collect()
}

fn shown() -> Vec<&'static str> {
    SHOWN.iter().map(|s| s.as_str()).collect()
}

/// The patient's first name, as the read model has it.
pub async fn first_name(db: &impl GenericClient, patient: Uuid) -> Result<String, anyhow::Error> {
    Ok(db
        .query_opt(
            "SELECT first_name FROM patients WHERE patient_id = $1",
            &[&patient],
        )
        .await?
        .map(|r| r.get(0))
        .unwrap_or_default())
}

/// The patient's orders with released results, newest first.
pub async fn list(
    db: &impl GenericClient,
    patient: Uuid,
) -> Result<Vec<OrderSummary>, anyhow::Error> {
    let rows = db
        .query(
            "SELECT order_id, tests, specimen, status, updated_at FROM orders \
             WHERE patient_id = $1 AND status = ANY($2) ORDER BY updated_at DESC, order_id",
            &[&patient, &shown()],
        )
        .await?;
    let mut orders = Vec::with_capacity(rows.len());
    let mut codes = HashSet::new();
    for r in &rows {
        let tests: Vec<String> = serde_json::from_value(r.get(1))?;
        codes.extend(tests.iter().cloned());
        let specimen: Specimen = serde_json::from_value(r.get(2))?;
        orders.push((
            r.get::<_, Uuid>(0),
            tests,
            specimen,
            r.get::<_, String>(3),
            r.get(4),
        ));
    }
    let catalog = catalog(db, &codes.into_iter().collect::<Vec<_>>()).await?;
    Ok(orders
        .into_iter()
        .map(|(id, tests, specimen, status, updated)| OrderSummary {
            id,
            tests: tests
                .iter()
                .map(|c| catalog.get(c).map_or_else(|| c.clone(), |t| t.name.clone()))
                .collect(),
            collected: date(specimen.collected_at),
            released: date(Some(updated)),
            corrected: status == OrderStatus::Corrected.as_str(),
        })
        .collect())
}

/// One of the patient's orders with released results; `None` for any
/// other order (another patient's, not released, unknown).
pub async fn detail(
    db: &impl GenericClient,
    patient: Uuid,
    order: Uuid,
) -> Result<Option<OrderDetail>, anyhow::Error> {
    let Some(r) = db
        .query_opt(
            "SELECT accession_number, tests, specimen, status, results, updated_at FROM orders \
             WHERE order_id = $1 AND patient_id = $2 AND status = ANY($3)",
            &[&order, &patient, &shown()],
        )
        .await?
    else {
        return Ok(None);
    };
    let tests: Vec<String> = serde_json::from_value(r.get(1))?;
    let specimen: Specimen = serde_json::from_value(r.get(2))?;
    let status: String = r.get(3);
    let results: Vec<RecordedResult> = serde_json::from_value(r.get(4))?;
    let mut corrected = HashSet::new();
    for row in db
        .query(
            "SELECT previous FROM order_result_history WHERE order_id = $1",
            &[&order],
        )
        .await?
    {
        let previous: Vec<RecordedResult> = serde_json::from_value(row.get(0))?;
        corrected.extend(previous.into_iter().map(|p| (p.test, p.code)));
    }
    let catalog = catalog(db, &tests).await?;
    let tests = tests
        .iter()
        .map(|code| {
            let def = catalog.get(code);
            TestResults {
                name: def.map_or_else(|| code.clone(), |t| t.name.clone()),
                results: results
                    .iter()
                    .filter(|x| &x.test == code)
                    .map(|x| ResultLine {
                        name: def
                            .and_then(|t| t.analyte(&x.code))
                            .map_or_else(|| x.code.clone(), |a| a.name.clone()),
                        value: value_text(&x.value),
                        unit: x.unit.clone().unwrap_or_default(),
                        range: range_words(x.reference_range),
                        flag: x.flag.map(flag_words),
                        abnormal: x.flag.is_some_and(|f| f != Flag::Normal),
                        corrected: corrected.contains(&(x.test.clone(), x.code.clone())),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Some(OrderDetail {
        accession: r.get(0),
        collected: date(specimen.collected_at),
        released: date(Some(r.get(5))),
        corrected: status == OrderStatus::Corrected.as_str(),
        tests,
    }))
}
