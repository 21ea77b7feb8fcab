//! Auditors' reads: a record's history (who, when, through which request,
//! what changed), the record as it stood at an instant, and the projector's
//! version gate that keeps history append-only under re-delivery.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tests::{error_fields, header, json_of, patient_body, TestStack};

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn post(
    s: &TestStack,
    token: &str,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

/// Reads a path with a consistency token until the answer is 200.
async fn read(s: &TestStack, token: &str, path: &str, ct: &str) -> Value {
    json_of(s.get_consistent(token, path, ct).await, 200).await
}

#[tokio::test(flavor = "multi_thread")]
async fn history_names_every_change_with_who_when_through_which_request_and_what() {
    let s = TestStack::start().await;
    let (ehr, ehr_token) = s.standard().await;
    let other = s.partner("patients:update,patients:read", "*", "*").await;
    let other_token = s.token(&other).await;
    let auditor = s.partner("audit:read", "*", "*").await;
    let audit_token = s.token(&auditor).await;

    let r = post(
        &s,
        &ehr_token,
        "/v1/patients",
        Some("hist-create-1"),
        patient_body("MRN-H-1"),
    )
    .await;
    let id = json_of(r, 201).await["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/patients/{id}");
    let r = s
        .patch(
            &other_token,
            &path,
            None,
            r#"{"lastName":"King","address":{"city":"London","country":"GB"}}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .patch(&ehr_token, &path, None, r#"{"address":{"city":"Leeds"}}"#)
        .await;
    assert_eq!(r.status(), 200);
    let ct = header(&r, "consistency-token");

    let h = read(&s, &audit_token, &format!("{path}/history"), &ct).await;
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{h}");
    assert_eq!(h["nextCursor"], Value::Null);
    let types: Vec<&str> = items.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["PatientRegistered", "PatientUpdated", "PatientUpdated"]
    );
    for (i, e) in items.iter().enumerate() {
        assert_eq!(e["version"], i as i64 + 1);
        assert!(e["eventID"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
        assert!(e["commandID"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .is_ok());
        assert!(chrono::DateTime::parse_from_rfc3339(e["occurredAt"].as_str().unwrap()).is_ok());
    }
    assert_eq!(
        items[0]["actor"],
        json!({"type": "partner", "id": ehr.id.to_string()})
    );
    assert_eq!(items[0]["idempotencyKey"], "hist-create-1");
    assert!(items[0]["changes"]
        .as_array()
        .unwrap()
        .contains(&json!({"field": "firstName", "from": null, "to": "Ada"})));
    assert_eq!(
        items[1]["actor"],
        json!({"type": "partner", "id": other.id.to_string()})
    );
    assert_eq!(items[1].get("idempotencyKey"), None);
    assert_eq!(
        items[1]["changes"],
        json!([
            {"field": "lastName", "from": "Lovelace", "to": "King"},
            {"field": "address", "from": null, "to": {"city": "London", "country": "GB"}},
        ])
    );
    assert_eq!(
        items[2]["changes"],
        json!([{"field": "address.city", "from": "London", "to": "Leeds"}])
    );

    // The record's own read permission shows the same list without other
    // partners' identities.
    let mine = read(&s, &ehr_token, &format!("{path}/history"), &ct).await;
    let mine = mine["items"].as_array().unwrap();
    assert_eq!(mine.len(), 3);
    assert_eq!(mine[0]["actor"]["id"], ehr.id.to_string());
    assert_eq!(mine[1]["actor"], json!({"type": "partner"}));
    assert_eq!(mine[1]["changes"], items[1]["changes"]);

    // Paged like lists.
    let p1 = read(&s, &audit_token, &format!("{path}/history?limit=2"), &ct).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cursor = p1["nextCursor"].as_str().unwrap();
    let p2 = read(
        &s,
        &audit_token,
        &format!("{path}/history?limit=2&cursor={cursor}"),
        &ct,
    )
    .await;
    assert_eq!(p2["items"][0]["version"], 3);
    assert_eq!(p2["nextCursor"], Value::Null);

    // Permission, scope, validation.
    let neither = s.partner("tests:read", "*", "*").await;
    let neither = s.token(&neither).await;
    let r = s.get(&neither, &format!("{path}/history")).await;
    assert_eq!(r.status(), 403);
    let elsewhere = s.partner("audit:read", "C2", "*").await;
    let elsewhere = s.token(&elsewhere).await;
    let r = s.get(&elsewhere, &format!("{path}/history")).await;
    assert_eq!(r.status(), 404);
    let missing = format!("/v1/patients/{}/history", uuid::Uuid::new_v4());
    assert_eq!(s.get(&audit_token, &missing).await.status(), 404);
    let bad = json_of(
        s.get(&audit_token, &format!("{path}/history?limit=0&color=red"))
            .await,
        422,
    )
    .await;
    let fields = error_fields(&bad);
    assert_eq!(fields, ["limit", "color"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn as_of_shows_a_record_as_it_stood_at_an_instant() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .unwrap();
    let auditor = s.partner("audit:read,patients:read", "*", "*").await;
    let audit_token = s.token(&auditor).await;

    let before_creation = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut body = patient_body("MRN-H-2");
    body["email"] = json!("asof@example.org");
    let r = s.create_patient(&token, &body).await;
    let created_ct = header(&r, "consistency-token");
    let id = json_of(r, 201).await["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_creation = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let path = format!("/v1/patients/{id}");
    let r = s
        .patch(&token, &path, None, r#"{"firstName":"Augusta"}"#)
        .await;
    assert_eq!(r.status(), 200);
    let ct = header(&r, "consistency-token");
    // The patch's token names the patient stream only; the creation's token
    // also names the account stream, whose invitation the record shows.
    let created = read(&s, &token, &path, &created_ct).await;
    assert_eq!(created["account"]["status"], "invited");
    let now = read(&s, &token, &path, &ct).await;
    assert_eq!(now["firstName"], "Augusta");
    assert_eq!(now["account"]["status"], "invited");

    let then = read(
        &s,
        &audit_token,
        &format!("{path}?asOf={}", rfc3339(after_creation)),
        &ct,
    )
    .await;
    assert_eq!(then["firstName"], "Ada");
    assert_eq!(then["version"], 1);
    assert_eq!(then["patientID"], id);
    assert_eq!(then["createdAt"], now["createdAt"]);
    assert_eq!(then["account"]["status"], "invited");
    let latest = read(
        &s,
        &audit_token,
        &format!("{path}?asOf={}", rfc3339(Utc::now())),
        &ct,
    )
    .await;
    assert_eq!(latest, now, "as of now is the record as it is");

    // Before the record existed: 404. In the future or malformed: 422.
    let r = s
        .get(
            &audit_token,
            &format!("{path}?asOf={}", rfc3339(before_creation)),
        )
        .await;
    assert_eq!(r.status(), 404);
    let future = rfc3339(Utc::now() + chrono::Duration::days(1));
    for bad in [future.as_str(), "yesterday", "2026-13-01T00:00:00Z"] {
        let r = s
            .get(&audit_token, &format!("{path}?asOf={}", urlencode(bad)))
            .await;
        let body = json_of(r, 422).await;
        assert_eq!(body["errors"][0]["field"], "asOf", "{bad}");
    }
    // As-of reads need audit:read; the record must be in scope.
    let r = s
        .get(&token, &format!("{path}?asOf={}", rfc3339(after_creation)))
        .await;
    assert_eq!(r.status(), 403);
    let elsewhere = s.partner("audit:read", "C2", "*").await;
    let elsewhere = s.token(&elsewhere).await;
    let r = s
        .get(
            &elsewhere,
            &format!("{path}?asOf={}", rfc3339(after_creation)),
        )
        .await;
    assert_eq!(r.status(), 404);

    // An order as it stood, embedding its patient as it stood then.
    let r = post(
        &s,
        &token,
        "/v1/orders",
        None,
        json!({"patientID": id, "clientID": "C1", "locationID": "L1",
               "tests": [{"code": "CBC"}], "specimen": {"type": "whole blood"},
               "priority": "routine"}),
    )
    .await;
    let order = json_of(r, 201).await["orderID"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let placed = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = post(
        &s,
        &token,
        &format!("/v1/orders/{order}/collect"),
        None,
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let ct = header(&r, "consistency-token");
    let r = s
        .patch(&token, &path, None, r#"{"lastName":"Byron"}"#)
        .await;
    assert_eq!(r.status(), 200);
    let ct2 = header(&r, "consistency-token");
    read(&s, &token, &path, &ct2).await;
    let then = read(
        &s,
        &audit_token,
        &format!("/v1/orders/{order}?asOf={}", rfc3339(placed)),
        &ct,
    )
    .await;
    assert_eq!(then["status"], "ordered");
    assert_eq!(then["version"], 1);
    assert_eq!(then["patient"]["firstName"], "Augusta");
    assert_eq!(then["patient"]["lastName"], "Lovelace");
    // Only a caller that may read the patient itself sees its details.
    let audit_only = s.partner("audit:read", "*", "*").await;
    let audit_only = s.token(&audit_only).await;
    let bare = read(
        &s,
        &audit_only,
        &format!("/v1/orders/{order}?asOf={}", rfc3339(placed)),
        &ct,
    )
    .await;
    assert_eq!(bare["patient"], Value::Null);
    assert_eq!(bare["version"], 1);
    let oh = read(
        &s,
        &audit_token,
        &format!("/v1/orders/{order}/history"),
        &ct,
    )
    .await;
    let items = oh["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["type"], "SpecimenCollected");
    assert!(items[1]["changes"]
        .as_array()
        .unwrap()
        .contains(&json!({"field": "status", "from": "ordered", "to": "collected"})));
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// The projector's version gate is what keeps history append-only: a
/// re-delivered event (a copy of the newest, or an older version arriving
/// after newer ones) adds no row and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn redelivered_events_add_no_history_and_change_nothing() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let r = s.create_patient(&token, &patient_body("MRN-H-3")).await;
    let id = json_of(r, 201).await["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/patients/{id}");
    for name in ["Bea", "Cleo"] {
        let r = s
            .patch(&token, &path, None, &format!(r#"{{"firstName":"{name}"}}"#))
            .await;
        assert_eq!(r.status(), 200);
    }
    let records: Vec<_> = s
        .wait_topic(platform::kafka::Topic::Patients, 3)
        .await
        .into_iter()
        .filter(|r| r.envelope.stream_id.to_string() == id)
        .collect();
    assert_eq!(records.len(), 3);

    // Publish version 3 again, then version 2 again, on the same partition.
    let producer: FutureProducer = platform::kafka::base_config(&s.cfg).create().unwrap();
    let topic = platform::kafka::Topic::Patients.name(&s.cfg.topic_prefix);
    for r in [&records[2], &records[1]] {
        let payload = serde_json::to_vec(&r.json).unwrap();
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(r.partition)
                    .key(&r.key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    // A marker after them on the same partition shows when they were read.
    let mut marker = patient_body("MRN-H-MARK");
    marker["firstName"] = json!("Marker");
    let mut marker_id = String::new();
    for i in 0..64 {
        marker["externalPatientID"] = json!(format!("MRN-H-MARK-{i}"));
        let r = s.create_patient(&token, &marker).await;
        let m = json_of(r, 201).await["patientID"]
            .as_str()
            .unwrap()
            .to_string();
        let p = platform::kafka::partition_for(m.parse().unwrap(), s.cfg.kafka_partitions);
        if p == records[0].partition {
            marker_id = m;
            break;
        }
    }
    assert!(!marker_id.is_empty(), "a patient on the same partition");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s
        .get(&token, &format!("/v1/patients/{marker_id}"))
        .await
        .status()
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "marker never projected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let now = json_of(s.get(&token, &path).await, 200).await;
    assert_eq!(
        now["firstName"], "Cleo",
        "an older version re-delivered changes nothing"
    );
    assert_eq!(now["version"], 3);
    let auditor = s.partner("audit:read", "*", "*").await;
    let audit_token = s.token(&auditor).await;
    let h = json_of(s.get(&audit_token, &format!("{path}/history")).await, 200).await;
    let versions: Vec<i64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3], "one history row per version");
    s.stop().await;
}
