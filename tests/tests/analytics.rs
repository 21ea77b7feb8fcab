//! The de-identified analytics stream: every patient and order event
//! reaches `lis.analytics.v1`, in order per record, under a stable keyed
//! pseudonym, and no personal field survives (markers planted in every one
//! are found nowhere on the topic: values, keys or headers), also across a
//! `kill -9` of the publisher.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use platform::kafka::Topic;
use serde_json::{json, Value};
use tests::TestStack;

async fn post(s: &TestStack, token: &str, path: &str, key: &str, body: Value) -> Value {
    let r = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Every record of the analytics topic, as text (key, headers, body).
async fn analytics(s: &TestStack) -> Vec<tests::Record> {
    let cfg = s.cfg.clone();
    let raw = tokio::task::spawn_blocking(move || {
        platform::kafka::read_from_start(&cfg, &[Topic::Analytics], Duration::from_secs(60))
    })
    .await
    .unwrap()
    .unwrap();
    raw.into_iter()
        .map(|r| {
            let json: Value = serde_json::from_slice(&r.payload).unwrap();
            tests::Record {
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                headers: r.headers,
                envelope: serde_json::from_value(json!({
                    "eventID": json["eventID"], "type": json["type"],
                    "schemaVersion": json["schemaVersion"], "streamType": json["streamType"],
                    "streamID": json["streamID"], "version": json["version"],
                    "occurredAt": "2000-01-01T00:00:00Z", "actor": {"type": "system", "id": "x"},
                    "commandID": json["eventID"], "data": json["data"],
                }))
                .unwrap(),
                json,
            }
        })
        .collect()
}

/// Waits until the analytics topic holds every source event (by id).
async fn wait_all(s: &TestStack, expected: usize) -> Vec<tests::Record> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let recs = analytics(s).await;
        let distinct: BTreeSet<String> =
            recs.iter().map(|r| r.json["eventID"].to_string()).collect();
        if distinct.len() >= expected {
            return recs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {expected} events on the analytics topic",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_personal_field_reaches_the_analytics_stream() {
    let roles = lis::stack::Roles {
        analytics: false,
        ..lis::stack::Roles::ALL
    };
    let s = TestStack::start_with(tests::test_config(), roles).await;
    let (_, token) = s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .unwrap();
    let lab = s
        .partner("tests:read,tests:update,results:write", "*", "*")
        .await;
    let lab_token = s.token(&lab).await;

    // Markers in every personal field; a birth date of someone over 89.
    let patient = post(
        &s,
        &token,
        "/v1/patients",
        "ZQKEYPATIENT",
        json!({"externalPatientID": "ZQEXTPATIENT", "clientID": "C1", "locationID": "L1",
               "firstName": "Zqfirst", "lastName": "Zqlast", "dateOfBirth": "1931-05-17",
               "sex": "female", "email": "zqmail@zqdomain.example", "phone": "+15559876543",
               "address": {"line1": "Zqstreet 1", "line2": "Zqflat", "city": "Zqcity",
                           "state": "ZQ", "postalCode": "ZQ99", "country": "GB"}}),
    )
    .await;
    let pid = patient["patientID"].as_str().unwrap().to_string();
    let r = s
        .patch(
            &token,
            &format!("/v1/patients/{pid}"),
            None,
            r#"{"lastName":"Zqnewlast","phone":"+15550001234","dateOfBirth":"1931-05-18",
                "externalPatientID":"ZQEXTTWO","email":"zqnew@zqdomain.example"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut orders = Vec::new();
    for i in 0..2 {
        let order = post(
            &s,
            &token,
            "/v1/orders",
            &format!("ZQKEYORDER{i}"),
            json!({"patientID": pid, "clientID": "C1", "locationID": "L1",
                   "accessionNumber": format!("ZQACC{i}"), "externalOrderID": format!("ZQEXTORDER{i}"),
                   "tests": [{"code": "CBC"}, {"code": "COVID19"}],
                   "specimen": {"type": "Zqspecimen of J. Zqdoe", "collectedAt": "2026-11-20T08:31:07Z"},
                   "priority": "routine"}),
        )
        .await;
        orders.push(order["orderID"].as_str().unwrap().to_string());
    }
    let (o1, o2) = (&orders[0], &orders[1]);
    post(
        &s,
        &token,
        &format!("/v1/orders/{o2}/cancel"),
        "ZQKEYCANCEL",
        json!({"reason": "Zqreason cancel"}),
    )
    .await;
    post(
        &s,
        &token,
        &format!("/v1/orders/{o1}/collect"),
        "ZQKEYCOLLECT",
        json!({"collectedAt": "2026-11-21T09:42:13Z"}),
    )
    .await;
    for action in ["receive", "start"] {
        post(
            &s,
            &lab_token,
            &format!("/v1/orders/{o1}/{action}"),
            &format!("ZQKEY{action}"),
            json!({}),
        )
        .await;
    }
    post(
        &s,
        &lab_token,
        &format!("/v1/orders/{o1}/results"),
        "ZQKEYRESULTS",
        json!({"results": [{"code": "HGB", "value": "11.2", "unit": "g/dL"},
                           {"code": "SARSCOV2", "value": "Zqfreetext result"}]}),
    )
    .await;
    // A text result that looks like a number (a phone number typed in).
    post(
        &s,
        &lab_token,
        &format!("/v1/orders/{o1}/results"),
        "ZQKEYRESULTS2",
        json!({"results": [{"code": "SARSCOV2", "value": "5551239876"}]}),
    )
    .await;
    post(
        &s,
        &lab_token,
        &format!("/v1/orders/{o1}/finalize"),
        "ZQKEYFINAL",
        json!({}),
    )
    .await;
    let last = post(&s, &lab_token, &format!("/v1/orders/{o1}/correct"), "ZQKEYCORRECT",
        json!({"reason": "Zqreason correct", "results": [{"code": "HGB", "value": 12.5, "unit": "g/dL"}]})).await;
    assert_eq!(last["status"], "corrected");

    // The source events, once the full topics carry every one of them.
    let stored: i64 = s
        .write
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM events WHERE stream_type IN ('patient', 'account', 'order')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored >= 12, "{stored} events");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (source, ids) = loop {
        let mut source = s.read_topic(Topic::Patients).await;
        source.extend(s.read_topic(Topic::Orders).await);
        let ids: BTreeSet<_> = source.iter().map(|r| r.envelope.event_id).collect();
        if ids.len() as i64 == stored {
            break (source, ids);
        }
        assert!(std::time::Instant::now() < deadline, "relay behind");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The publisher runs as its own process and is killed mid-stream.
    let mut p = s.spawn_process("analytics,query-api").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while analytics(&s).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.kill9();
    let p2 = s.spawn_process("analytics,query-api").await;
    let recs = wait_all(&s, ids.len()).await;
    drop(p2);

    // Nothing personal anywhere: values, keys, headers. The fragments of
    // names, phones, dates and times are looked for outside the records'
    // own (pseudonymous) ids, whose random hex can spell "11-21"; the
    // source ids are looked for everywhere.
    let fragments: Vec<String> = vec![
        "Zq".into(),
        "zq".into(),
        "ZQ".into(),
        "5559876543".into(),
        "5551239876".into(),
        "5550001234".into(),
        "1931-05".into(),
        "05-17".into(),
        "05-18".into(),
        "11-20".into(),
        "11-21".into(),
        "08:31".into(),
        "09:42".into(),
    ];
    let mut forbidden: Vec<String> = vec![pid.clone()];
    forbidden.extend(orders.iter().cloned());
    for r in &source {
        forbidden.push(r.envelope.event_id.to_string());
        forbidden.push(r.envelope.command_id.to_string());
        forbidden.push(r.envelope.stream_id.to_string());
        if let Some(a) = r.envelope.data.get("accountID").and_then(Value::as_str) {
            forbidden.push(a.to_string());
        }
    }
    for r in &recs {
        let text = format!("{} {} {:?}", r.key, r.json, r.headers);
        for f in forbidden.iter().filter(|f| !f.is_empty()) {
            assert!(
                !text.contains(f.as_str()),
                "{f:?} on the analytics topic: {text}"
            );
        }
        let outside_ids = without_uuids(&text);
        for f in &fragments {
            assert!(
                !outside_ids.contains(f.as_str()),
                "{f:?} on the analytics topic: {text}"
            );
        }
    }

    // Every event, under a stable pseudonym per record, in order per record.
    let mut per_record: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut first_copy = BTreeSet::new();
    for r in &recs {
        if !first_copy.insert(r.json["eventID"].to_string()) {
            continue;
        }
        assert_eq!(r.key, r.json["streamID"].as_str().unwrap());
        assert!(r.headers.contains(&("ce_subject".into(), r.key.clone())));
        assert!(r.headers.contains(&("ce_specversion".into(), "1.0".into())));
        per_record
            .entry(r.key.clone())
            .or_default()
            .push(r.json["version"].as_i64().unwrap());
    }
    assert_eq!(first_copy.len(), ids.len());
    let mut source_versions: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &source {
        source_versions
            .entry(r.envelope.stream_id.to_string())
            .or_default()
            .push(r.envelope.version);
    }
    let mut lengths: Vec<usize> = per_record.values().map(Vec::len).collect();
    let mut source_lengths: Vec<usize> = source_versions.values().map(Vec::len).collect();
    lengths.sort_unstable();
    source_lengths.sort_unstable();
    assert_eq!(lengths, source_lengths, "one pseudonym per record");
    for (key, versions) in &per_record {
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, &expected, "record {key} in order");
    }

    // What analytics may see is there: birth year cut to 90+, the test
    // codes, numeric values, years.
    let registered = recs
        .iter()
        .find(|r| r.json["type"] == "PatientRegistered")
        .unwrap();
    assert_eq!(registered.json["data"]["birthYear"], "90+");
    assert_eq!(registered.json["data"]["sex"], "female");
    assert_eq!(registered.json["occurredYear"].as_str().unwrap().len(), 4);
    let placed = recs
        .iter()
        .find(|r| r.json["type"] == "OrderPlaced")
        .unwrap();
    assert_eq!(placed.json["data"]["tests"], json!(["CBC", "COVID19"]));
    assert_eq!(placed.json["data"]["specimen"]["collectedYear"], "2026");
    assert_eq!(
        placed.json["data"]["patientID"], registered.json["streamID"],
        "an order names its patient by the patient's pseudonym"
    );
    let recorded = recs
        .iter()
        .find(|r| r.json["type"] == "ResultsRecorded")
        .unwrap();
    assert_eq!(recorded.json["data"]["results"][0]["value"], "11.2");
    assert_eq!(recorded.json["data"]["results"][1].get("value"), None);

    // The analytics page's Python example reads the same stream.
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/analytics.md"),
    )
    .unwrap();
    let example = page
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a ```python block in docs/analytics.md");
    let out = std::process::Command::new("python3")
        .args(["-c", example])
        .env("LIS_KAFKA_BROKERS", &s.cfg.kafka_brokers)
        .env("LIS_TOPIC_PREFIX", &s.cfg.topic_prefix)
        .output()
        .expect("python3 with confluent-kafka");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["events"], ids.len());
    assert_eq!(summary["records"], per_record.len());
    assert_eq!(summary["types"]["OrderPlaced"], 2);
    s.stop().await;
}

/// `text` with every hyphenated UUID replaced by `<uuid>`.
fn without_uuids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let uuid = text
            .get(i..i + 36)
            .filter(|w| w.as_bytes()[8] == b'-' && uuid::Uuid::try_parse(w).is_ok());
        if uuid.is_some() {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let c = text[i..].chars().next().expect("inside the text");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn uuids_are_masked_and_nothing_else() {
    assert_eq!(
        without_uuids("id 5d7ab611-2179-84fd-88be-3db411132ea6, born 1931-11-21"),
        "id <uuid>, born 1931-11-21"
    );
}
