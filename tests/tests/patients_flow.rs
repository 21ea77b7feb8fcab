//! A partner's whole patient workflow through the real stack.

use platform::kafka::Topic;
use serde_json::{json, Value};
use tests::{error_fields, header, patient_body, TestStack};

#[tokio::test(flavor = "multi_thread")]
async fn create_read_list_search_update() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;

    let r = s.create_patient(&token, &patient_body("MRN-1")).await;
    assert_eq!(r.status(), 201);
    let location = header(&r, "location");
    assert_eq!(header(&r, "etag"), "\"1\"");
    let ct = header(&r, "consistency-token");
    let created: Value = r.json().await.unwrap();
    let id = created["patientID"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/patients/{id}"));
    for (k, v) in [
        ("externalPatientID", json!("MRN-1")),
        ("clientID", json!("C1")),
        ("locationID", json!("L1")),
        ("firstName", json!("Ada")),
        ("dateOfBirth", json!("1990-12-10")),
        ("sex", json!("female")),
        ("version", json!(1)),
        ("email", Value::Null),
        ("account", json!({"status": "none"})),
    ] {
        assert_eq!(created[k], v, "{k}");
    }

    // Read-your-writes: with the token the read reflects the write.
    let r = s.get_consistent(&token, &location, &ct).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), "\"1\"");
    let read: Value = r.json().await.unwrap();
    assert_eq!(
        read, created,
        "the read model shows what the write answered"
    );

    // A patch changes the version; a no-op patch appends nothing.
    let r = s.patch(&token, &location, None, r#"{"lastName":"Byron","address":{"city":"London","country":"GB"},"phone":"+44 20 7946 0000"}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), "\"2\"");
    let ct = header(&r, "consistency-token");
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["lastName"], "Byron");
    assert_eq!(
        patched["address"],
        json!({"city": "London", "country": "GB"})
    );
    let events_before = s.event_count(None).await;
    let r = s
        .patch(&token, &location, None, r#"{"lastName":"Byron"}"#)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    assert_eq!(
        s.event_count(None).await,
        events_before,
        "a no-op patch appends no event"
    );

    // A stale If-Match is refused and changes nothing.
    let r = s
        .patch(
            &token,
            &location,
            Some("\"1\""),
            r#"{"firstName":"Augusta"}"#,
        )
        .await;
    assert_eq!(r.status(), 412);
    assert_eq!(s.event_count(None).await, events_before);
    // A bad body, or a value the domain refuses, is named before the
    // version is compared: 422, not 412 (schemathesis saw 412 answer a
    // schema-invalid request).
    for (body, field) in [
        (r#"{"firstName":"Augusta","nickname":"Ada"}"#, "nickname"),
        (r#"{"dateOfBirth":"1800-01-01"}"#, "dateOfBirth"),
    ] {
        let r = s.patch(&token, &location, Some("\"1\""), body).await;
        assert_eq!(r.status(), 422, "{body}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(error_fields(&problem), [field], "{problem}");
        assert_eq!(s.event_count(None).await, events_before);
    }
    let r = s
        .patch(
            &token,
            &location,
            Some("\"2\""),
            r#"{"firstName":"Augusta","externalPatientID":null}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v3: Value = r.json().await.unwrap();
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["externalPatientID"], Value::Null);

    // The freed external id can be used again.
    let r = s.create_patient(&token, &patient_body("MRN-1")).await;
    assert_eq!(r.status(), 201);
    let second_ct = header(&r, "consistency-token");

    // Lists and searches see both, in creation order, paged without repeats.
    for i in 0..3 {
        let r = s
            .create_patient(&token, &patient_body(&format!("MRN-page-{i}")))
            .await;
        assert_eq!(r.status(), 201);
    }
    let r = s
        .get_consistent(&token, "/v1/patients?limit=2", &second_ct)
        .await;
    assert_eq!(r.status(), 200);
    let mut seen = Vec::new();
    let mut page: Value = r.json().await.unwrap();
    loop {
        for item in page["items"].as_array().unwrap() {
            seen.push(item["patientID"].as_str().unwrap().to_string());
        }
        let Some(cursor) = page["nextCursor"].as_str() else {
            break;
        };
        page = s
            .get(&token, &format!("/v1/patients?limit=2&cursor={cursor}"))
            .await
            .json()
            .await
            .unwrap();
    }
    // Wait for the last creates to be projected before counting.
    let mut total = seen.len();
    for _ in 0..50 {
        if total == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let all: Value = s
            .get(&token, "/v1/patients?limit=500")
            .await
            .json()
            .await
            .unwrap();
        total = all["items"].as_array().unwrap().len();
        seen = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["patientID"].as_str().unwrap().to_string())
            .collect();
    }
    assert_eq!(total, 5);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "paging never repeats a record");
    assert_eq!(seen[0], id, "ordered by creation time");

    // Filters, in the query string and in a search body.
    let r: Value = s
        .http
        .get(format!(
            "{}/v1/patients?externalPatientID=MRN-page-1",
            s.base
        ))
        .bearer_auth(&token)
        .header("Consistency-Token", &ct)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["items"].as_array().unwrap().len(), 1);
    let r = s
        .http
        .post(format!("{}/v1/patients/search", s.base))
        .bearer_auth(&token)
        .json(&json!({"lastName": "Byron", "dateOfBirth": "1990-12-10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let found: Value = r.json().await.unwrap();
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["patientID"], id.as_str());

    // Every event reached Kafka once, and the patient's in stream order.
    let db = s.write.get().await.unwrap();
    let events: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE stream_type IN ('patient', 'account')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let patients = s.wait_topic(Topic::Patients, events as usize).await;
    assert_eq!(patients.len(), events as usize, "every event once");
    let versions: Vec<i64> = patients
        .iter()
        .filter(|r| r.envelope.stream_id.to_string() == id)
        .map(|r| r.envelope.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_refused_and_named_only_in_scope() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let r = s.create_patient(&token, &patient_body("MRN-DUP")).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["patientID"].clone();

    let r = s.create_patient(&token, &patient_body("MRN-DUP")).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert!(p["type"].as_str().unwrap().ends_with("duplicate-patient"));
    assert_eq!(p["existingPatientID"], id);

    // A partner that cannot see L1 learns only that it is a duplicate.
    s.location("C1", "L9").await;
    let narrow = s.partner("patients:create", "C1", "L9").await;
    let nt = s.token(&narrow).await;
    let mut body = patient_body("MRN-DUP");
    body["locationID"] = json!("L9");
    let r = s.create_patient(&nt, &body).await;
    assert_eq!(r.status(), 409);
    let p: Value = r.json().await.unwrap();
    assert!(p.get("existingPatientID").is_none(), "{p}");

    // Same external id in another client is a different patient.
    let before = s.event_count(None).await;
    let mut other = patient_body("MRN-DUP");
    other["clientID"] = json!("C2");
    other["locationID"] = json!("L3");
    assert_eq!(s.create_patient(&token, &other).await.status(), 201);
    assert_eq!(s.event_count(None).await, before + 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_retries_replay_the_first_answer() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let send = |key: &'static str, body: Value| {
        let (http, base, token) = (s.http.clone(), s.base.clone(), token.clone());
        async move {
            http.post(format!("{base}/v1/patients"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send("key-1", patient_body("MRN-IDEM")).await;
    assert_eq!(first.status(), 201);
    let first_etag = header(&first, "etag");
    let first_body = first.text().await.unwrap();
    let count = s.event_count(None).await;

    let retry = send("key-1", patient_body("MRN-IDEM")).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(header(&retry, "etag"), first_etag);
    assert_eq!(retry.text().await.unwrap(), first_body, "same body");
    assert_eq!(s.event_count(None).await, count, "no second event");

    let mut changed = patient_body("MRN-IDEM");
    changed["firstName"] = json!("Other");
    let r = send("key-1", changed).await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["errors"][0]["field"], "Idempotency-Key");

    // A refused request's answer is kept as well.
    let bad = json!({"clientID": "C1"});
    let r1 = send("key-2", bad.clone()).await;
    assert_eq!(r1.status(), 422);
    let b1 = r1.text().await.unwrap();
    let r2 = send("key-2", bad).await;
    assert_eq!(r2.status(), 422);
    assert_eq!(r2.text().await.unwrap(), b1);
    assert_eq!(s.event_count(None).await, count);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_follow_the_email_rules_without_touching_the_patient_version() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;

    let mut with_email = patient_body("MRN-E1");
    with_email["email"] = json!("ada@example.org");
    let r = s.create_patient(&token, &with_email).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"]["status"], "invited");
    assert_eq!(v["email"], "ada@example.org");
    assert_eq!(v["version"], 1);
    assert!(v.get("warnings").is_none());

    // An update that leaves the account alone still answers its status, and
    // its token names the account stream too, so a read with the token shows
    // the account as the answer did.
    let ada = format!("/v1/patients/{}", v["patientID"].as_str().unwrap());
    let r = s
        .patch(&token, &ada, None, r#"{"firstName":"Augusta"}"#)
        .await;
    assert_eq!(r.status(), 200);
    let ct = header(&r, "consistency-token");
    let named = contract::consistency::ConsistencyToken::decode(&ct).expect("a token");
    assert_eq!(named.0.len(), 2, "the patient's and the account's streams");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"]["status"], "invited");
    let read: Value = s
        .get_consistent(&token, &ada, &ct)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["account"]["status"], "invited");
    assert_eq!(read["firstName"], "Augusta");

    let mut invalid = patient_body("MRN-E2");
    invalid["email"] = json!("not-an-email");
    let r = s.create_patient(&token, &invalid).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"]["status"], "none");
    assert_eq!(v["email"], Value::Null, "an invalid email is not stored");
    assert_eq!(
        v["warnings"],
        json!([{"field": "email", "code": "invalid_email"}])
    );

    let mut taken = patient_body("MRN-E3");
    taken["email"] = json!("ADA@example.org");
    let r = s.create_patient(&token, &taken).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"]["status"], "none");
    assert_eq!(v["email"], "ADA@example.org");
    assert_eq!(
        v["warnings"],
        json!([{"field": "email", "code": "email_in_use"}])
    );

    // A later first valid email opens the account; the account's own stream
    // does not change the patient's version beyond the patch itself.
    let r = s.create_patient(&token, &patient_body("MRN-E4")).await;
    let id = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .patch(
            &token,
            &format!("/v1/patients/{id}"),
            None,
            r#"{"email":"grace@example.org"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let ct = header(&r, "consistency-token");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"]["status"], "invited");
    assert_eq!(v["version"], 2);
    let r = s
        .get_consistent(&token, &format!("/v1/patients/{id}"), &ct)
        .await;
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["account"]["status"], "invited");
    assert_eq!(read["version"], 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_still_in_use_answers_409_and_is_not_kept() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    // Hold the (clientID, externalPatientID) reservation in an open
    // transaction, so the first request blocks while it holds its key.
    let mut holder = platform::db::connect(&s.cfg.database_url, &s.cfg.write_schema)
        .await
        .unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "INSERT INTO patient_external_ids (client_id, external_patient_id, patient_id) \
         VALUES ('C1', 'MRN-HOLD', gen_random_uuid())",
        &[],
    )
    .await
    .unwrap();
    let send = || {
        let (http, base, token) = (s.http.clone(), s.base.clone(), token.clone());
        async move {
            http.post(format!("{base}/v1/patients"))
                .bearer_auth(token)
                .header("Idempotency-Key", "held-key")
                .json(&patient_body("MRN-HOLD"))
                .send()
                .await
                .unwrap()
        }
    };
    let first = tokio::spawn(send());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !first.is_finished(),
        "the first request waits on the held reservation"
    );

    let second = send().await;
    assert_eq!(second.status(), 409);
    let p: Value = second.json().await.unwrap();
    assert!(
        p["type"].as_str().unwrap().ends_with("request-in-progress"),
        "{p}"
    );

    hold.rollback().await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status(), 201);
    let first_body = first.text().await.unwrap();
    // The 409 was not kept: a retry now gets the first answer.
    let retry = send().await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.text().await.unwrap(), first_body);
    let db = s.write.get().await.unwrap();
    let registrations: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'PatientRegistered' \
             AND data->>'externalPatientID' = 'MRN-HOLD'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(registrations, 1);
    s.stop().await;
}
