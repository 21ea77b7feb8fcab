//! A seedable generator of realistic partner data: names, dates of birth,
//! emails (a share missing, a share invalid), external ids (a share of
//! duplicates), addresses, phones, and orders of 1-4 catalog tests.

use domain::catalog::{AnalyteKind, CatalogTest};
use domain::patient::{Address, PatientDraft};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Margaret",
    "Ken",
    "Dennis",
    "Radia",
    "Leslie",
    "Tony",
    "Hedy",
    "Claude",
    "Katherine",
    "Niklaus",
    "Sophie",
    "Mary",
    "Ahmed",
    "Mei",
    "Olga",
    "Kwame",
    "Lucia",
    "Hiroshi",
    "Priya",
    "Mateo",
    "Zainab",
    "Erik",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus", "Hamilton",
    "Thompson", "Ritchie", "Perlman", "Lamport", "Hoare", "Lamarr", "Shannon", "Johnson", "Wirth",
    "Wilson", "Jackson", "Hassan", "Wang", "Petrova", "Mensah", "Garcia", "Tanaka", "Patel",
    "Rossi", "Okafor", "Larsen",
];
const CITIES: &[&str] = &[
    "London", "Leeds", "Boston", "Austin", "Denver", "Dublin", "Oslo", "Lyon",
];

/// Shares of the generated data.
pub const EMAIL_VALID: f64 = 0.60;
/// Share of patients without an email.
pub const EMAIL_MISSING: f64 = 0.25;
/// Share of creates that reuse an earlier external id (answered 409).
pub const DUPLICATE_SHARE: f64 = 0.02;

/// The generator. Deterministic for a given seed and call order.
pub struct Gen {
    rng: StdRng,
    run: String,
    client: String,
    locations: Vec<String>,
    n: u64,
    recent: Vec<String>,
    catalog: Vec<CatalogTest>,
}

impl Gen {
    /// A generator for `client`'s `locations`; `run` makes ids unique
    /// across runs.
    pub fn new(seed: u64, run: &str, client: &str, locations: &[String]) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            run: run.to_string(),
            client: client.to_string(),
            locations: locations.to_vec(),
            n: 0,
            recent: Vec::new(),
            catalog: Vec::new(),
        }
    }

    /// Sets the catalog orders are drawn from.
    pub fn set_catalog(&mut self, catalog: Vec<CatalogTest>) {
        self.catalog = catalog;
    }

    /// A last name that patients have.
    pub fn last_name(&mut self) -> &'static str {
        LAST.choose(&mut self.rng).expect("names")
    }

    /// A location of the client.
    pub fn location(&mut self) -> String {
        self.locations
            .choose(&mut self.rng)
            .expect("locations")
            .clone()
    }

    /// A date of birth between 1930 and 2019.
    pub fn date_of_birth(&mut self) -> String {
        let days = self.rng.gen_range(0..(90 * 365));
        let d = chrono::NaiveDate::from_ymd_opt(1930, 1, 1).expect("date")
            + chrono::Duration::days(days);
        d.format("%Y-%m-%d").to_string()
    }

    fn unit(&mut self) -> f64 {
        self.rng.gen::<f64>()
    }

    /// A fresh (never generated before) external id.
    fn fresh_external(&mut self) -> String {
        self.n += 1;
        let x = format!("B{}-{}", self.run, self.n);
        if self.recent.len() < 10_000 {
            self.recent.push(x.clone());
        } else {
            let i = self.rng.gen_range(0..self.recent.len());
            self.recent[i] = x.clone();
        }
        x
    }

    /// A patient draft; `duplicates` allows a share of reused external ids.
    pub fn draft(&mut self, duplicates: bool) -> PatientDraft {
        let external = if duplicates && !self.recent.is_empty() && self.unit() < DUPLICATE_SHARE {
            self.recent.choose(&mut self.rng).cloned()
        } else {
            Some(self.fresh_external())
        };
        let first = *FIRST.choose(&mut self.rng).expect("names");
        let last = self.last_name();
        let dice = self.unit();
        let email = if dice < EMAIL_VALID {
            Some(format!(
                "{}.{}.{}.{}@example.org",
                first.to_lowercase(),
                last.to_lowercase(),
                self.run,
                self.n
            ))
        } else if dice < EMAIL_VALID + EMAIL_MISSING {
            None
        } else {
            // Invalid: no domain part.
            Some(format!(
                "{}.{}-at-example.org",
                first.to_lowercase(),
                self.n
            ))
        };
        let sex = match self.rng.gen_range(0..100) {
            0..49 => "female",
            49..98 => "male",
            98 => "other",
            _ => "unknown",
        };
        let phone =
            (self.unit() < 0.5).then(|| format!("+1555{:07}", self.rng.gen_range(0..10_000_000)));
        let address = (self.unit() < 0.5).then(|| Address {
            line1: Some(format!("{} Bench Street", self.rng.gen_range(1..999))),
            line2: None,
            city: CITIES.choose(&mut self.rng).map(|c| c.to_string()),
            state: None,
            postal_code: Some(format!("{:05}", self.rng.gen_range(0..99_999))),
            country: Some("US".into()),
        });
        PatientDraft {
            external_patient_id: external,
            client_id: Some(self.client.clone()),
            location_id: Some(self.location()),
            first_name: Some(first.to_string()),
            last_name: Some(last.to_string()),
            date_of_birth: Some(self.date_of_birth()),
            sex: Some(sex.to_string()),
            email,
            phone,
            address,
        }
    }

    /// The JSON body of `POST /v1/patients`.
    pub fn patient_body(&mut self) -> Value {
        draft_body(&self.draft(true))
    }

    /// A merge patch of a patient.
    pub fn patient_patch(&mut self) -> Value {
        match self.rng.gen_range(0..3) {
            0 => json!({"phone": format!("+1555{:07}", self.rng.gen_range(0..10_000_000))}),
            1 => json!({"address": {"city": CITIES.choose(&mut self.rng).expect("cities")}}),
            _ => json!({"lastName": self.last_name()}),
        }
    }

    /// The JSON body of `POST /v1/orders` for a patient at `location`.
    pub fn order_body(&mut self, patient_id: &str, location: &str) -> Value {
        let n = self
            .rng
            .gen_range(1..=4usize)
            .min(self.catalog.len().max(1));
        let tests: Vec<Value> = self
            .catalog
            .choose_multiple(&mut self.rng, n)
            .map(|t| json!({"code": t.code}))
            .collect();
        let collected = chrono::Utc::now() - chrono::Duration::minutes(30);
        json!({
            "patientID": patient_id,
            "clientID": self.client,
            "locationID": location,
            "externalOrderID": format!("EHR-{}-{}", self.run, self.rng.gen::<u64>()),
            "tests": tests,
            "specimen": {"type": "blood", "collectedAt": collected.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
            "priority": if self.unit() < 0.1 { "stat" } else { "routine" },
        })
    }

    /// A results body for every analyte of `codes`.
    pub fn results_body(&mut self, codes: &[String]) -> Value {
        let mut results = Vec::new();
        for t in self.catalog.iter().filter(|t| codes.contains(&t.code)) {
            for a in &t.analytes {
                match &a.kind {
                    AnalyteKind::Numeric { unit, .. } => results.push(json!({
                        "code": a.code,
                        "value": format!("{:.1}", 1.0 + 10.0 * self.rng.gen::<f64>()),
                        "unit": unit,
                    })),
                    AnalyteKind::Text { normal } => results.push(json!({
                        "code": a.code,
                        "value": normal.first().cloned().unwrap_or_else(|| "Negative".into()),
                    })),
                }
            }
        }
        json!({ "results": results })
    }

    /// A number in `0.0..1.0`.
    pub fn dice(&mut self) -> f64 {
        self.unit()
    }
}

/// The JSON form of a draft, as a partner would send it.
pub fn draft_body(d: &PatientDraft) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    put("externalPatientID", &d.external_patient_id);
    put("clientID", &d.client_id);
    put("locationID", &d.location_id);
    put("firstName", &d.first_name);
    put("lastName", &d.last_name);
    put("dateOfBirth", &d.date_of_birth);
    put("sex", &d.sex);
    put("email", &d.email);
    put("phone", &d.phone);
    if let Some(a) = &d.address {
        m.insert(
            "address".into(),
            serde_json::to_value(a).expect("address serializes"),
        );
    }
    Value::Object(m)
}
