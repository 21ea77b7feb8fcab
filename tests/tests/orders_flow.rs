//! An order's whole life through the real stack: placement, lifecycle,
//! results with ranges and flags, finalization, correction, reads.

use serde_json::{json, Value};
use tests::{error_fields, header, patient_body, TestStack, SIX};

async fn post(s: &TestStack, token: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = s.http.post(format!("{}{path}", s.base)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_from_placement_to_correction() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .unwrap();
    let lab = s
        .partner("tests:read,tests:update,results:write", "*", "*")
        .await;
    let lab_token = s.token(&lab).await;

    let mut body = patient_body("MRN-ORD-1");
    body["sex"] = json!("female");
    let r = s.create_patient(&token, &body).await;
    assert_eq!(r.status(), 201);
    let patient = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();

    // Placement, with a generated accession number.
    let r = post(
        &s,
        &token,
        "/v1/orders",
        Some(json!({
            "patientID": patient, "clientID": "C1", "locationID": "L1",
            "externalOrderID": "EHR-77",
            "tests": [{"code": "CBC"}, {"code": "LIPID"}],
            "specimen": {"type": "whole blood", "collectedAt": "2026-11-20T08:30:00Z"},
            "priority": "routine"
        })),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let location = header(&r, "location");
    let placed_ct = header(&r, "consistency-token");
    let order: Value = r.json().await.unwrap();
    let id = order["orderID"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/orders/{id}"));
    // Reads embed the patient from the read model, so the write's token
    // names the patient's version too: a read with it waits for both.
    let placed =
        contract::consistency::ConsistencyToken::decode(&placed_ct).expect("a consistency token");
    let named: Vec<(String, i64)> = placed.0.iter().map(|(s, v)| (s.to_string(), *v)).collect();
    assert!(named.contains(&(id.clone(), 1)), "{named:?}");
    assert!(named.contains(&(patient.clone(), 1)), "{named:?}");
    assert_eq!(order["status"], "ordered");
    assert_eq!(order["version"], 1);
    let accession = order["accessionNumber"].as_str().unwrap();
    assert!(
        accession.starts_with("A-") && accession.len() == 17,
        "{accession}"
    );
    assert_eq!(
        order["patient"]["lastName"], "Lovelace",
        "shown to a caller with patients:read"
    );

    // The lab moves it along; the lab partner may not read patients.
    for (action, status) in [
        ("collect", "collected"),
        ("receive", "received"),
        ("start", "in_progress"),
    ] {
        let r = post(&s, &lab_token, &format!("/v1/orders/{id}/{action}"), None).await;
        assert_eq!(r.status(), 200, "{action}: {}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], status);
        assert_eq!(
            v["patient"],
            Value::Null,
            "no patient details without patients:read"
        );
    }
    // An action that does not fit the status: 409, nothing changes.
    let r = post(&s, &lab_token, &format!("/v1/orders/{id}/receive"), None).await;
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert!(p["type"].as_str().unwrap().ends_with("invalid-status"));

    // Results need results:write: the EHR partner lacks it.
    let results = json!({"results": [
        {"code": "HGB", "value": "6.5", "unit": "g/dL"},
        {"code": "WBC", "value": 7.2, "unit": "10^9/L"},
        {"code": "PLT", "value": "<0.5", "unit": "10^9/L"},
        {"code": "CHOL", "value": "5.20", "unit": "mg/dL"}
    ]});
    let r = post(
        &s,
        &token,
        &format!("/v1/orders/{id}/results"),
        Some(results.clone()),
    )
    .await;
    assert_eq!(r.status(), 403);
    // A wrong unit and a non-numeric value are named at once.
    let r = post(
        &s,
        &lab_token,
        &format!("/v1/orders/{id}/results"),
        Some(json!({"results": [
            {"code": "HGB", "value": "6.5", "unit": "mmol/L"},
            {"code": "WBC", "value": "lots", "unit": "10^9/L"}
        ]})),
    )
    .await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    let fields = error_fields(&p);
    assert_eq!(fields, ["results[0].unit", "results[1].value"], "{p}");

    let r = post(
        &s,
        &lab_token,
        &format!("/v1/orders/{id}/results"),
        Some(results),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "resulted");
    let by_code = |v: &Value, code: &str| -> Value {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["code"] == code)
            .unwrap()
            .clone()
    };
    let hgb = by_code(&v, "HGB");
    assert_eq!(hgb["value"], "6.5", "kept exactly as sent");
    assert_eq!(hgb["flag"], "LL", "below the critical limit");
    assert_eq!(
        hgb["referenceRange"],
        json!({"low": 12.0, "high": 15.5}),
        "the female adult range"
    );
    assert_eq!(by_code(&v, "WBC")["value"], json!(7.2));
    assert_eq!(by_code(&v, "WBC")["flag"], "N");
    assert_eq!(by_code(&v, "CHOL")["value"], "5.20");

    // Finalize, then correct with a reason; the earlier value is kept.
    let r = post(&s, &lab_token, &format!("/v1/orders/{id}/finalize"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "final");
    let r = post(
        &s,
        &lab_token,
        &format!("/v1/orders/{id}/correct"),
        Some(json!({"results": [{"code": "HGB", "value": "13.1", "unit": "g/dL"}]})),
    )
    .await;
    assert_eq!(r.status(), 422, "a correction needs a reason");
    let r = s
        .http
        .post(format!("{}/v1/orders/{id}/correct", s.base))
        .bearer_auth(&lab_token)
        .header("If-Match", "\"2\"")
        .json(&json!({"reason": "sample mix-up", "results": [{"code": "HGB", "value": "13.1", "unit": "g/dL"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412, "a stale If-Match changes nothing");
    let r = post(
        &s,
        &lab_token,
        &format!("/v1/orders/{id}/correct"),
        Some(json!({"reason": "sample mix-up", "results": [{"code": "HGB", "value": "13.1", "unit": "g/dL"}]})),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let ct = header(&r, "consistency-token");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "corrected");
    assert_eq!(by_code(&v, "HGB")["flag"], "N");
    assert_eq!(v["version"], 7);

    // Reads: the read model shows what the last write answered.
    let r = s
        .get_consistent(&token, &format!("/v1/orders/{id}"), &ct)
        .await;
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["status"], "corrected");
    assert_eq!(read["version"], 7);
    assert_eq!(read["results"], v["results"]);
    assert_eq!(read["patient"]["lastName"], "Lovelace");
    let list: Value = s
        .get(
            &token,
            &format!("/v1/orders?patientID={patient}&status=corrected"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let list: Value = s
        .get(&token, &format!("/v1/orders?accessionNumber={accession}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["orderID"], id.as_str());
    let db = s.read.get().await.unwrap();
    let previous: Value = db
        .query_one(
            "SELECT previous FROM order_result_history WHERE order_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        previous[0]["value"], "6.5",
        "the corrected value is kept in history"
    );

    // The catalog is readable with any tests:* permission.
    let r = s.get(&lab_token, "/v1/catalog").await;
    assert_eq!(r.status(), 200);
    let cat: Value = r.json().await.unwrap();
    assert!(cat["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["code"] == "CBC"));
    let reader = s.partner("patients:read", "*", "*").await;
    let rt = s.token(&reader).await;
    assert_eq!(s.get(&rt, "/v1/catalog").await.status(), 403);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn placement_rules_and_unique_accession_numbers() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .unwrap();
    let r = s.create_patient(&token, &patient_body("MRN-ORD-2")).await;
    let patient = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let order = |accession: Option<&str>, client: &str, location: &str, patient: &str| {
        let mut b = json!({"patientID": patient, "clientID": client, "locationID": location,
                           "tests": [{"code": "TSH"}]});
        if let Some(a) = accession {
            b["accessionNumber"] = json!(a);
        }
        b
    };
    // Unknown and out-of-scope patients answer the same.
    let narrow = s.partner(SIX, "C1", "L2").await;
    let nt = s.token(&narrow).await;
    let unknown = post(
        &s,
        &nt,
        "/v1/orders",
        Some(order(None, "C1", "L2", &uuid::Uuid::new_v4().to_string())),
    )
    .await;
    let hidden = post(
        &s,
        &nt,
        "/v1/orders",
        Some(order(None, "C1", "L2", &patient)),
    )
    .await;
    assert_eq!(unknown.status(), 422);
    assert_eq!(hidden.status(), 422);
    assert_eq!(unknown.text().await.unwrap(), hidden.text().await.unwrap());
    // The order's client must be the patient's.
    let r = post(
        &s,
        &token,
        "/v1/orders",
        Some(order(None, "C2", "L3", &patient)),
    )
    .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["field"],
        "clientID"
    );
    // An unknown test code names its index.
    let mut b = order(None, "C1", "L1", &patient);
    b["tests"] = json!([{"code": "TSH"}, {"code": "NOPE"}]);
    let r = post(&s, &token, "/v1/orders", Some(b)).await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["field"],
        "tests[1].code"
    );
    // A given accession number is unique in the lab.
    assert_eq!(
        post(
            &s,
            &token,
            "/v1/orders",
            Some(order(Some("ACC-1"), "C1", "L1", &patient))
        )
        .await
        .status(),
        201
    );
    let r = post(
        &s,
        &token,
        "/v1/orders",
        Some(order(Some("ACC-1"), "C1", "L1", &patient)),
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(r.json::<Value>().await.unwrap()["type"]
        .as_str()
        .unwrap()
        .ends_with("duplicate-accession"));

    // Concurrent placements never share an accession number.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (http, base, token) = (s.http.clone(), s.base.clone(), token.clone());
        let accession = if i % 3 == 0 { Some("ACC-RACE") } else { None };
        let body = order(accession, "C1", "L1", &patient);
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/orders"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut accessions = Vec::new();
    let mut race_wins = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            201 => {
                let a = v["accessionNumber"].as_str().unwrap().to_string();
                race_wins += usize::from(a == "ACC-RACE");
                accessions.push(a);
            }
            409 => assert!(v["type"].as_str().unwrap().ends_with("duplicate-accession")),
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!(race_wins, 1, "one order gets the contested number");
    assert_eq!(accessions.len(), 21);
    let mut unique = accessions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        accessions.len(),
        "no two orders share an accession number"
    );
    s.stop().await;
}
