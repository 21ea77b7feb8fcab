//! Every event on the log validates against its JSON Schema under `schemas/`,
//! carries the CloudEvents 1.0 binary-mode headers, and holds no secret.

use std::collections::{BTreeSet, HashMap};

use command_handler::admin;
use domain::access::{parse_permissions, IdSet};
use domain::event::StreamKind;
use platform::kafka::Topic;
use serde_json::{json, Value};
use tests::{patient_body, Record, TestStack, SIX};

/// Every event type that has a schema.
const EVENT_TYPES: [&str; 20] = [
    "ClientRegistered",
    "LocationRegistered",
    "PartnerRegistered",
    "PartnerAccessChanged",
    "PartnerSecretRotated",
    "PartnerDisabled",
    "PatientRegistered",
    "PatientUpdated",
    "PatientAccountInvited",
    "CatalogTestDefined",
    "CatalogTestRevised",
    "OrderPlaced",
    "OrderDetailsChanged",
    "SpecimenCollected",
    "SpecimenReceived",
    "OrderStarted",
    "ResultsRecorded",
    "ResultsFinalized",
    "ResultsCorrected",
    "OrderCanceled",
];

const IDEMPOTENCY_KEY: &str = "schema-test-key-1";
const ORDER_IDEMPOTENCY_KEY: &str = "schema-test-order-1";

/// Sends a request with a bearer token and an optional JSON body (of the
/// given content type), expects `status` and returns the answer's body.
async fn send(
    s: &TestStack,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, Value)>,
    status: u16,
) -> Value {
    let mut req = s
        .http
        .request(method.clone(), format!("{}{path}", s.base))
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        req = req
            .header("content-type", content_type)
            .body(body.to_string());
    }
    let r = req.send().await.unwrap();
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    let mut found = r.headers.iter().filter(|(k, _)| k == name);
    let first = found.next().map(|(_, v)| v.as_str());
    assert!(
        found.next().is_none(),
        "header {name} appears more than once on {}",
        r.envelope.event_id
    );
    first
}

/// Loads and compiles `schemas/<streamType>/<type>.v<schemaVersion>.json`.
fn load_validator(
    stream_type: &str,
    event_type: &str,
    version: i32,
) -> Result<jsonschema::Validator, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas")
        .join(stream_type)
        .join(format!("{event_type}.v{version}.json"));
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("no schema {}: {e}", path.display()))?;
    let schema: Value = serde_json::from_str(&text)
        .map_err(|e| format!("schema {} is not JSON: {e}", path.display()))?;
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("schema {} does not compile: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_validates_against_its_schema() {
    let s = TestStack::start().await;

    // Reference data: clients, locations and a partner (C1/L1, L2, C2/L3).
    let (main, token) = s.standard().await;
    let mut secrets = vec![main.secret.clone()];

    // A second partner whose access changes, whose secret is rotated and
    // which is finally disabled.
    let other = s.partner("patients:read", "*", "*").await;
    secrets.push(other.secret.clone());
    admin::update_partner(
        &s.write,
        &TestStack::operator(),
        other.id,
        Some(parse_permissions("patients:read,audit:read").unwrap()),
        Some(IdSet::parse("C1").unwrap()),
        Some(IdSet::parse("L1,L2").unwrap()),
    )
    .await
    .expect("update partner");
    let rotated = admin::rotate_secret(&s.write, &TestStack::operator(), other.id)
        .await
        .expect("rotate secret");
    assert_eq!(rotated.partner_id, other.id);
    secrets.push(rotated.client_secret.clone());
    admin::disable_partner(&s.write, &TestStack::operator(), other.id)
        .await
        .expect("disable partner");
    // One more partner with an explicit scope, to cover list-valued id sets.
    let narrow = s.partner(SIX, "C1,C2", "L1,L3").await;
    secrets.push(narrow.secret.clone());

    // A patient with every optional field, created with an Idempotency-Key:
    // PatientRegistered and PatientAccountInvited.
    let mut full = patient_body("MRN-SCHEMA-1");
    full["email"] = json!("ada.schema@example.org");
    full["phone"] = json!("+44 20 7946 0001");
    full["address"] = json!({
        "line1": "12 St James's Square",
        "line2": "Flat 3",
        "city": "London",
        "state": "Greater London",
        "postalCode": "SW1Y 4JH",
        "country": "GB",
    });
    let r = s
        .http
        .post(format!("{}/v1/patients", s.base))
        .bearer_auth(&token)
        .header("Idempotency-Key", IDEMPOTENCY_KEY)
        .json(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let full_id = created["patientID"].as_str().unwrap().to_string();
    assert_eq!(created["account"]["status"], "invited");

    // A minimal patient (no optional field but the external id).
    let r = s
        .create_patient(&token, &patient_body("MRN-SCHEMA-2"))
        .await;
    assert_eq!(r.status(), 201);
    let minimal_id = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();

    let patch = |id: String, body: &'static str| {
        let (http, base, token) = (s.http.clone(), s.base.clone(), token.clone());
        async move {
            let r = http
                .patch(format!("{base}/v1/patients/{id}"))
                .bearer_auth(token)
                .header("content-type", "application/merge-patch+json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "PATCH {body}: {text}");
        }
    };
    // PatientUpdated with values: names, date, sex, location, address merge.
    patch(
        full_id.clone(),
        r#"{"firstName":"Augusta","lastName":"King","dateOfBirth":"1985-11-27","sex":"other","locationID":"L2","address":{"line2":null,"city":"Ockham"}}"#,
    )
    .await;
    // PatientUpdated removing fields: nulls in `changes`.
    patch(
        full_id.clone(),
        r#"{"externalPatientID":null,"phone":null,"address":null}"#,
    )
    .await;
    // A first email on the minimal patient opens its account, and a phone,
    // external id and address are added.
    patch(
        minimal_id.clone(),
        r#"{"email":"grace.schema@example.org","phone":"(555) 010-0199","externalPatientID":"MRN-SCHEMA-2b","address":{"country":"US"}}"#,
    )
    .await;

    // The catalog: the seed tests (CatalogTestDefined), and one revised.
    let seeded = admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .expect("seed catalog");
    assert!(seeded > 0, "the seed catalog defines tests");
    let mut tsh = domain::catalog::seed_catalog()
        .into_iter()
        .find(|t| t.code == "TSH")
        .expect("TSH in the seed catalog");
    tsh.name = "Thyroid-stimulating hormone (3rd generation)".into();
    assert_eq!(
        admin::define_catalog_test(&s.write, &TestStack::operator(), tsh)
            .await
            .expect("revise TSH"),
        admin::Defined::Revised
    );

    // A lab partner that moves orders along and records results.
    let lab = s
        .partner("tests:read,tests:update,results:write", "*", "*")
        .await;
    secrets.push(lab.secret.clone());
    let lab_token = s.token(&lab).await;

    // One order through its whole life: placed (with an Idempotency-Key),
    // details changed twice (values, then a removal), collected, received,
    // started, resulted, finalized and corrected.
    use reqwest::Method as M;
    const JSON: &str = "application/json";
    const MERGE: &str = "application/merge-patch+json";
    let r = s
        .http
        .post(format!("{}/v1/orders", s.base))
        .bearer_auth(&token)
        .header("Idempotency-Key", ORDER_IDEMPOTENCY_KEY)
        .json(&json!({
            "patientID": minimal_id, "clientID": "C1", "locationID": "L1",
            "accessionNumber": "A-SCHEMA-000001", "externalOrderID": "EHR-SCHEMA-1",
            "tests": [{"code": "CBC"}, {"code": "LIPID"}, {"code": "COVID19"}],
            "specimen": {"type": "blood", "collectedAt": "2025-11-20T08:30:00Z"},
            "priority": "routine"
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 201, "place the order: {text}");
    let order_id = serde_json::from_str::<Value>(&text).unwrap()["orderID"]
        .as_str()
        .unwrap()
        .to_string();
    let one = format!("/v1/orders/{order_id}");
    send(
        &s,
        &token,
        M::PATCH,
        &one,
        Some((
            MERGE,
            json!({"specimen": {"type": "whole blood"}, "priority": "urgent", "externalOrderID": "EHR-SCHEMA-1b"}),
        )),
        200,
    )
    .await;
    send(
        &s,
        &token,
        M::PATCH,
        &one,
        Some((
            MERGE,
            json!({"specimen": {"collectedAt": null}, "externalOrderID": null}),
        )),
        200,
    )
    .await;
    send(
        &s,
        &lab_token,
        M::POST,
        &format!("{one}/collect"),
        Some((JSON, json!({"collectedAt": "2025-11-20T09:15:00Z"}))),
        200,
    )
    .await;
    for action in ["receive", "start"] {
        send(
            &s,
            &lab_token,
            M::POST,
            &format!("{one}/{action}"),
            None,
            200,
        )
        .await;
    }
    // Numbers and strings kept as sent; numeric, text, flagged and
    // unflagged results.
    send(
        &s,
        &lab_token,
        M::POST,
        &format!("{one}/results"),
        Some((
            JSON,
            json!({"results": [
                {"code": "HGB", "value": "6.5", "unit": "g/dL"},
                {"code": "WBC", "value": 7.2, "unit": "10^9/L"},
                {"code": "PLT", "value": "<0.5", "unit": "10^9/L"},
                {"code": "HCT", "value": ">=55", "unit": "%"},
                {"code": "CHOL", "value": "5.20", "unit": "mg/dL"},
                {"code": "HDL", "value": 35, "unit": "mg/dL"},
                {"code": "SARSCOV2", "value": "Detected"}
            ]}),
        )),
        200,
    )
    .await;
    // Results replaced before they are final: a second ResultsRecorded.
    send(
        &s,
        &lab_token,
        M::POST,
        &format!("{one}/results"),
        Some((
            JSON,
            json!({"results": [{"code": "SARSCOV2", "value": "not detected"}]}),
        )),
        200,
    )
    .await;
    send(
        &s,
        &lab_token,
        M::POST,
        &format!("{one}/finalize"),
        None,
        200,
    )
    .await;
    let corrected = send(
        &s,
        &lab_token,
        M::POST,
        &format!("{one}/correct"),
        Some((
            JSON,
            json!({"reason": "Sample mix-up: re-run on the right tube.", "results": [
                {"code": "HGB", "value": "13.1", "unit": "g/dL"},
                {"code": "TRIG", "value": 120, "unit": "mg/dL"}
            ]}),
        )),
        200,
    )
    .await;
    assert_eq!(corrected["status"], "corrected");

    // A second order, placed with the fewest fields (generated accession
    // number, the tests' shared specimen type) and canceled.
    let placed = send(
        &s,
        &token,
        M::POST,
        "/v1/orders",
        Some((
            JSON,
            json!({"patientID": minimal_id, "clientID": "C1", "locationID": "L1", "tests": [{"code": "TSH"}]}),
        )),
        201,
    )
    .await;
    let canceled_id = placed["orderID"].as_str().unwrap().to_string();
    send(
        &s,
        &token,
        M::POST,
        &format!("/v1/orders/{canceled_id}/cancel"),
        Some((JSON, json!({"reason": "Patient left before the draw."}))),
        200,
    )
    .await;

    // How many events each topic must hold.
    let db = s.write.get().await.unwrap();
    let mut expected: HashMap<Topic, usize> = Topic::ALL.iter().map(|t| (*t, 0)).collect();
    for row in db
        .query(
            "SELECT stream_type, count(*) FROM events GROUP BY stream_type",
            &[],
        )
        .await
        .unwrap()
    {
        let stream_type: String = row.get(0);
        let n: i64 = row.get(1);
        let kind = StreamKind::parse(&stream_type)
            .unwrap_or_else(|| panic!("unknown stream type {stream_type}"));
        *expected.get_mut(&Topic::of(kind)).unwrap() += n as usize;
    }
    let stored_ids: BTreeSet<uuid::Uuid> = db
        .query("SELECT event_id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut records = Vec::new();
    for topic in Topic::ALL {
        let n = expected[&topic];
        let recs = s.wait_topic(topic, n).await;
        assert_eq!(recs.len(), n, "{topic:?} holds every event once");
        for r in &recs {
            assert_eq!(
                Topic::of(StreamKind::parse(&r.envelope.stream_type).unwrap()),
                topic,
                "{} on the right topic",
                r.envelope.event_type
            );
        }
        records.extend(recs);
    }
    let published_ids: BTreeSet<uuid::Uuid> = records.iter().map(|r| r.envelope.event_id).collect();
    assert_eq!(
        published_ids, stored_ids,
        "the log holds exactly the stored events"
    );

    // Schemas.
    let mut validators: HashMap<(String, String, i32), Result<jsonschema::Validator, String>> =
        HashMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for r in &records {
        let stream_type = r.json["streamType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let event_type = r.json["type"].as_str().unwrap_or_default().to_string();
        let version = r.json["schemaVersion"].as_i64().unwrap_or_default() as i32;
        seen.insert(event_type.clone());
        let validator = validators
            .entry((stream_type.clone(), event_type.clone(), version))
            .or_insert_with(|| load_validator(&stream_type, &event_type, version));
        match validator {
            Err(e) => failures.push(format!("{event_type}: {e}")),
            Ok(v) => {
                let errors: Vec<String> = v
                    .iter_errors(&r.json)
                    .map(|e| format!("{} (at {})", e, e.instance_path))
                    .collect();
                if !errors.is_empty() {
                    failures.push(format!(
                        "{event_type} {}: {}\n  event: {}",
                        r.envelope.event_id,
                        errors.join("; "),
                        r.json
                    ));
                }
            }
        }
    }

    // The validators are not vacuous: an event with an undescribed field, or
    // without its eventID, is refused by its schema.
    for r in &records {
        let key = (
            r.envelope.stream_type.clone(),
            r.envelope.event_type.clone(),
            r.envelope.schema_version,
        );
        if let Some(Ok(v)) = validators.get(&key) {
            let mut extra = r.json.clone();
            extra["unexpected"] = json!(true);
            assert!(!v.is_valid(&extra), "{key:?} accepts an extra field");
            let mut extra_data = r.json.clone();
            extra_data["data"]["unexpected"] = json!(true);
            assert!(
                !v.is_valid(&extra_data),
                "{key:?} accepts an extra data field"
            );
            let mut missing = r.json.clone();
            missing.as_object_mut().unwrap().remove("eventID");
            assert!(!v.is_valid(&missing), "{key:?} accepts a missing eventID");
        }
    }

    // The events the test meant to produce are there.
    for t in EVENT_TYPES {
        assert!(seen.contains(t), "no {t} event on the log (saw {seen:?})");
    }
    let with_key: Vec<&Record> = records
        .iter()
        .filter(|r| r.json.get("idempotencyKey").is_some())
        .collect();
    assert!(
        with_key
            .iter()
            .any(|r| r.envelope.event_type == "PatientRegistered"
                && r.json["idempotencyKey"] == IDEMPOTENCY_KEY
                && r.envelope.stream_id.to_string() == full_id),
        "the Idempotency-Key is in the PatientRegistered envelope"
    );
    for r in &records {
        if let Some(k) = r.json.get("idempotencyKey") {
            assert!(k.is_string(), "idempotencyKey is never null: {}", r.json);
        }
    }
    let removal = records.iter().find(|r| {
        r.envelope.event_type == "PatientUpdated"
            && r.json["data"]["changes"]
                .as_object()
                .is_some_and(|c| c.contains_key("phone") && c["phone"].is_null())
    });
    let removal = removal.expect("a PatientUpdated that removes fields");
    for field in ["externalPatientID", "phone", "address"] {
        let changes = removal.json["data"]["changes"].as_object().unwrap();
        assert!(
            changes.contains_key(field) && changes[field].is_null(),
            "{field} removed with null: {}",
            removal.json
        );
    }
    // Orders: results kept as sent, with the range and flag recorded; the
    // correction keeps what it replaced; catalog events on the reference
    // topic; the order's Idempotency-Key in its OrderPlaced envelope.
    let of_type = |t: &str| -> Vec<&Record> {
        records
            .iter()
            .filter(|r| r.envelope.event_type == t)
            .collect()
    };
    assert!(
        of_type("OrderPlaced")
            .iter()
            .any(|r| r.json["idempotencyKey"] == ORDER_IDEMPOTENCY_KEY
                && r.envelope.stream_id.to_string() == order_id),
        "the Idempotency-Key is in the OrderPlaced envelope"
    );
    let recorded = of_type("ResultsRecorded");
    let first = recorded
        .iter()
        .find(|r| r.json["data"]["results"].as_array().unwrap().len() == 7)
        .expect("the first ResultsRecorded");
    let result = |code: &str| -> Value {
        first.json["data"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["code"] == code)
            .unwrap_or_else(|| panic!("no {code} result"))
            .clone()
    };
    assert_eq!(result("HGB")["value"], "6.5");
    assert_eq!(result("HGB")["flag"], "LL");
    assert_eq!(result("HGB")["test"], "CBC");
    assert_eq!(result("WBC")["value"], json!(7.2));
    assert_eq!(result("CHOL")["value"], "5.20");
    assert_eq!(result("PLT")["value"], "<0.5");
    assert_eq!(result("SARSCOV2")["flag"], "A");
    let correction = of_type("ResultsCorrected");
    assert_eq!(correction.len(), 1);
    let previous = correction[0].json["data"]["previous"].as_array().unwrap();
    assert_eq!(
        previous.len(),
        1,
        "TRIG was not resulted before: {previous:?}"
    );
    assert_eq!(previous[0]["code"], "HGB");
    assert_eq!(previous[0]["value"], "6.5");
    assert!(
        of_type("OrderDetailsChanged").iter().any(|r| {
            let c = r.json["data"]["changes"].as_object().unwrap();
            c.get("collectedAt") == Some(&Value::Null)
                && c.get("externalOrderID") == Some(&Value::Null)
        }),
        "an OrderDetailsChanged removes fields with null"
    );
    assert_eq!(of_type("CatalogTestRevised").len(), 1);
    for r in of_type("CatalogTestDefined")
        .into_iter()
        .chain(of_type("CatalogTestRevised"))
    {
        assert_eq!(
            Topic::of(StreamKind::parse(&r.envelope.stream_type).unwrap()),
            Topic::Reference
        );
    }
    for t in EVENT_TYPES.iter().skip(11) {
        for r in of_type(t) {
            assert_eq!(r.envelope.stream_type, "order", "{t}");
        }
    }

    let invited: Vec<&Record> = records
        .iter()
        .filter(|r| r.envelope.event_type == "PatientAccountInvited")
        .collect();
    assert_eq!(invited.len(), 2, "one invitation per first valid email");

    // CloudEvents binary-mode headers and the Kafka key.
    for r in &records {
        let e = &r.envelope;
        let what = format!("{} {}", e.event_type, e.event_id);
        assert_eq!(header(r, "ce_specversion"), Some("1.0"), "{what}");
        assert_eq!(
            header(r, "ce_id"),
            Some(e.event_id.to_string().as_str()),
            "{what}"
        );
        assert_eq!(r.json["eventID"], e.event_id.to_string(), "{what}");
        let ce_type = header(r, "ce_type").unwrap_or_else(|| panic!("{what}: no ce_type"));
        assert!(ce_type.contains(&e.event_type), "{what}: ce_type {ce_type}");
        let ce_source = header(r, "ce_source").unwrap_or_default();
        assert!(!ce_source.is_empty(), "{what}: ce_source");
        let ce_time = header(r, "ce_time").unwrap_or_else(|| panic!("{what}: no ce_time"));
        let ce_time = chrono::DateTime::parse_from_rfc3339(ce_time)
            .unwrap_or_else(|err| panic!("{what}: ce_time {ce_time}: {err}"));
        let occurred = chrono::DateTime::parse_from_rfc3339(r.json["occurredAt"].as_str().unwrap())
            .unwrap_or_else(|err| panic!("{what}: occurredAt: {err}"));
        assert_eq!(ce_time, occurred, "{what}: ce_time is occurredAt");
        assert_eq!(
            header(r, "ce_subject"),
            Some(e.stream_id.to_string().as_str()),
            "{what}: ce_subject"
        );
        assert_eq!(r.key, e.stream_id.to_string(), "{what}: Kafka key");
    }

    // No secret, hash or hash marker anywhere in a record.
    for r in &records {
        let body = r.json.to_string();
        let mut texts: Vec<&str> = vec![body.as_str(), r.key.as_str()];
        for (k, v) in &r.headers {
            texts.push(k);
            texts.push(v);
        }
        for text in texts {
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "{} {} carries a partner secret",
                    r.envelope.event_type,
                    r.envelope.event_id
                );
            }
            for marker in ["secret_hash", "$argon2"] {
                assert!(
                    !text.contains(marker),
                    "{} {} contains {marker}",
                    r.envelope.event_type,
                    r.envelope.event_id
                );
            }
        }
    }

    assert!(
        failures.is_empty(),
        "{} event(s) do not validate against their schema:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A consumer outside Rust sees the same: Python's confluent-kafka reads
    // every topic from the beginning, validates each event against its
    // schema with a standard JSON Schema validator, and checks the headers.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/consume_events.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([
            "--brokers",
            &s.cfg.kafka_brokers,
            "--prefix",
            &s.cfg.topic_prefix,
        ])
        .output()
        .expect("python3 (with confluent-kafka and jsonschema: .ci/run installs them)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python consumer failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let distinct: BTreeSet<String> = records
        .iter()
        .map(|r| r.envelope.event_id.to_string())
        .collect();
    assert!(
        summary["events"].as_u64().unwrap() >= distinct.len() as u64,
        "{summary}"
    );
    for t in EVENT_TYPES {
        assert!(
            summary["types"][t].as_u64().unwrap_or(0) > 0,
            "Python saw no {t}: {summary}"
        );
    }
    drop(db);
    s.stop().await;
}
