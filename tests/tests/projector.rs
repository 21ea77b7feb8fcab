//! The projector applies each event once in effect: it survives being
//! stopped mid-stream, ignores re-delivered events, and a rebuild from
//! offset 0 into a fresh schema gives the same rows as the live one, for
//! patients and reference data as for orders, result history and the
//! catalog.

use std::time::Duration;

use lis::stack::Roles;
use reqwest::Method;
use serde_json::{json, Value};
use tests::{patient_body, test_config, TestStack};

const WRITE_SIDE: Roles = Roles {
    commands: true,
    queries: false,
    relay: true,
    projector: false,
    mailer: false,
    analytics: false,
    portal: false,
};

const PROJECTOR: Roles = Roles {
    commands: false,
    queries: false,
    relay: false,
    projector: true,
    mailer: false,
    analytics: false,
    portal: false,
};

const TABLES: [&str; 11] = [
    "patients",
    "history",
    "accounts",
    "clients",
    "locations",
    "partners",
    "orders",
    "order_result_history",
    "catalog_tests",
    "stream_versions",
    "consumer_offsets",
];

/// Rows of `table` in schema `a` that are not in `b`, both ways.
async fn differences(db: &tokio_postgres::Client, a: &str, b: &str, table: &str) -> i64 {
    db.query_one(
        &format!(
            "SELECT (SELECT count(*) FROM (SELECT * FROM {a}.{table} EXCEPT ALL SELECT * FROM {b}.{table}) x) + \
                    (SELECT count(*) FROM (SELECT * FROM {b}.{table} EXCEPT ALL SELECT * FROM {a}.{table}) y)"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn count(db: &tokio_postgres::Client, schema: &str, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_rows(db: &tokio_postgres::Client, schema: &str, patients: i64, versions: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = count(db, schema, "patients").await;
        let v: i64 = db
            .query_one(
                &format!("SELECT coalesce(sum(version), 0)::bigint FROM {schema}.patients"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if p == patients && v == versions {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projector did not catch up: {p} rows, {v} versions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_count(db: &tokio_postgres::Client, schema: &str, table: &str, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(db, schema, table).await != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{table} never reached {n} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_restarts_and_redelivery_and_rebuilds_identically() {
    let cfg = test_config();
    let s = TestStack::start_with(cfg.clone(), WRITE_SIDE).await;
    let (_, token) = s.standard().await;
    const N: usize = 120;
    let mut ids = Vec::new();
    for i in 0..N {
        let mut body = patient_body(&format!("MRN-{i}"));
        if i % 3 == 0 {
            body["email"] = json!(format!("p{i}@example.org"));
        }
        let r = s.create_patient(&token, &body).await;
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["patientID"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in ids.iter().step_by(4) {
        let r = s
            .patch(
                &token,
                &format!("/v1/patients/{id}"),
                None,
                r#"{"lastName":"Updated","address":{"city":"Leeds"}}"#,
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let versions = (N + N.div_ceil(4)) as i64;
    let db = platform::db::connect(&cfg.database_url, "public")
        .await
        .unwrap();
    let read = cfg.read_schema.clone();

    // Start the projector, stop it mid-stream, start it again.
    let p = TestStack::start_with(cfg.clone(), PROJECTOR).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(&db, &read, "patients").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "projector never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.stop().await;
    let partial = count(&db, &read, "patients").await;
    assert!(partial > 0);
    let p = TestStack::start_with(cfg.clone(), PROJECTOR).await;
    wait_for_rows(&db, &read, N as i64, versions).await;
    // The reference topic is another partition: its records may be applied
    // after the last patient's.
    wait_for_count(&db, &read, "partners", 1).await;
    p.stop().await;
    assert_eq!(count(&db, &read, "accounts").await, N.div_ceil(3) as i64);
    assert_eq!(count(&db, &read, "clients").await, 2);
    assert_eq!(count(&db, &read, "locations").await, 3);
    assert_eq!(count(&db, &read, "partners").await, 1);

    // Re-delivery of everything changes nothing, and adds no history.
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS snapshot_patients; CREATE TABLE snapshot_patients AS SELECT * FROM {read}.patients; \
         DROP TABLE IF EXISTS snapshot_history; CREATE TABLE snapshot_history AS SELECT * FROM {read}.history; \
         UPDATE {read}.consumer_offsets SET next_offset = 0;"
    ))
    .await
    .unwrap();
    let p = TestStack::start_with(cfg.clone(), PROJECTOR).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let behind: i64 = db
            .query_one(
                &format!("SELECT count(*) FROM {read}.consumer_offsets WHERE next_offset = 0"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if behind == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "re-delivery did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.stop().await;
    let changed: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT * FROM {read}.patients EXCEPT ALL SELECT * FROM public.snapshot_patients) x"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed, 0, "re-delivered events change nothing");
    let history_changed: i64 = db
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT * FROM {read}.history EXCEPT ALL SELECT * FROM public.snapshot_history) x) + \
                        (SELECT count(*) FROM (SELECT * FROM public.snapshot_history EXCEPT ALL SELECT * FROM {read}.history) y)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        history_changed, 0,
        "history is append-only: one row per event"
    );

    // A rebuild from offset 0 into a fresh schema gives the same rows.
    let applied = assert_equals_a_rebuild(&cfg, &db).await;
    assert!(applied >= (versions as u64), "{applied} events applied");
    s.stop().await;
}

/// Rebuilds the read models of `cfg` from offset 0 into a fresh schema
/// (`read_rebuild`) and checks every table holds the same rows; answers the
/// number of messages the rebuild applied.
async fn assert_equals_a_rebuild(
    cfg: &platform::config::Config,
    db: &tokio_postgres::Client,
) -> u64 {
    let mut fresh = cfg.clone();
    fresh.read_schema = "read_rebuild".into();
    platform::db::migrate(
        &fresh.database_url,
        &fresh.read_schema,
        projector::migrations(),
    )
    .await
    .unwrap();
    let pool = platform::db::pool(&fresh.database_url, &fresh.read_schema, 4).unwrap();
    let applied = projector::catch_up(&fresh, &pool, Duration::from_secs(120))
        .await
        .unwrap();
    for table in TABLES {
        assert_eq!(
            count(db, &cfg.read_schema, table).await,
            count(db, "read_rebuild", table).await,
            "{table} row count"
        );
        assert_eq!(
            differences(db, &cfg.read_schema, "read_rebuild", table).await,
            0,
            "{table} rows differ from a rebuild"
        );
    }
    applied
}

/// Sends a request with a JSON body (merge patch for `PATCH`) and expects
/// `status`; returns the answer's body.
async fn call(
    s: &TestStack,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let mut req = s
        .http
        .request(method.clone(), format!("{}{path}", s.base))
        .bearer_auth(token);
    if let Some(b) = body {
        let ct = if method == Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        req = req.header("content-type", ct).body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Waits until the read schema has applied every event of the event store:
/// each stream's version there is its number of events.
async fn wait_for_all_events(db: &tokio_postgres::Client, write: &str, read: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = db
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {write}.events), \
                            (SELECT coalesce(sum(version), 0)::bigint FROM {read}.stream_versions)"
                ),
                &[],
            )
            .await
            .unwrap();
        let (events, applied): (i64, i64) = (row.get(0), row.get(1));
        if events == applied {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projector did not catch up: {applied} of {events} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_results_and_catalog_rebuild_identically() {
    let cfg = test_config();
    let s = TestStack::start_with(cfg.clone(), WRITE_SIDE).await;
    let (_, token) = s.standard().await;
    let operator = TestStack::operator();
    let seeded = command_handler::admin::seed_catalog(&s.write, &operator)
        .await
        .unwrap();
    assert_eq!(seeded, 6);
    // One revision, so the catalog row is an update of its first definition.
    let mut cbc = domain::catalog::seed_catalog()
        .into_iter()
        .find(|t| t.code == "CBC")
        .unwrap();
    cbc.name = "Complete blood count (automated)".into();
    assert_eq!(
        command_handler::admin::define_catalog_test(&s.write, &operator, cbc)
            .await
            .unwrap(),
        command_handler::admin::Defined::Revised
    );
    let lab = s
        .partner("tests:read,tests:update,results:write", "*", "*")
        .await;
    let lab_token = s.token(&lab).await;

    // Patients of each sex, so that some results have ranges and flags and
    // others (unknown sex) have none for sex-specific ranges.
    let mut patients = Vec::new();
    for (i, sex) in ["female", "male", "unknown"].iter().enumerate() {
        let mut body = patient_body(&format!("MRN-ORD-REBUILD-{i}"));
        body["sex"] = json!(sex);
        let v = call(&s, &token, Method::POST, "/v1/patients", Some(body), 201).await;
        patients.push(v["patientID"].as_str().unwrap().to_string());
    }

    // Orders at every stage: stage k takes the order through the first k
    // steps of its life; even-numbered orders get a details PATCH.
    const ORDERS: usize = 12;
    const STEPS: [&str; 8] = [
        "collect", "receive", "start", "results", "results2", "finalize", "correct", "correct2",
    ];
    let mut corrections = 0;
    let mut canceled = 0;
    for i in 0..ORDERS {
        let patient = &patients[i % patients.len()];
        let mut body = json!({
            "patientID": patient, "clientID": "C1", "locationID": if i % 2 == 0 { "L1" } else { "L2" },
            "tests": [{"code": "CBC"}, {"code": "BMP"}],
            "specimen": {"type": "blood", "collectedAt": "2025-11-20T08:30:00Z"},
        });
        if i % 3 == 0 {
            body["externalOrderID"] = json!(format!("EHR-REBUILD-{i}"));
            body["priority"] = json!("stat");
        }
        let placed = call(&s, &token, Method::POST, "/v1/orders", Some(body), 201).await;
        let one = format!("/v1/orders/{}", placed["orderID"].as_str().unwrap());
        if i % 2 == 0 {
            call(
                &s,
                &token,
                Method::PATCH,
                &one,
                Some(json!({"priority": "urgent", "externalOrderID": null,
                            "specimen": {"type": "whole blood", "collectedAt": null}})),
                200,
            )
            .await;
        }
        let stage = i % (STEPS.len() + 1);
        for step in &STEPS[..stage] {
            let (action, body) = match *step {
                "collect" => (
                    "collect",
                    Some(json!({"collectedAt": "2025-11-20T09:00:00Z"})),
                ),
                "results" => (
                    "results",
                    Some(json!({"results": [
                        {"code": "HGB", "value": "6.5", "unit": "g/dL"},
                        {"code": "WBC", "value": 7.2, "unit": "10^9/L"},
                        {"code": "NA", "value": "<120", "unit": "mmol/L"},
                        {"code": "GLU", "value": "5.20", "unit": "mg/dL"}
                    ]})),
                ),
                "results2" => (
                    "results",
                    Some(json!({"results": [
                        {"code": "HGB", "value": "12.9", "unit": "g/dL"},
                        {"code": "K", "value": 4.1, "unit": "mmol/L"}
                    ]})),
                ),
                "correct" => (
                    "correct",
                    Some(json!({"reason": "Sample mix-up", "results": [
                        {"code": "HGB", "value": "13.1", "unit": "g/dL"},
                        {"code": "CA", "value": "9.0", "unit": "mg/dL"}
                    ]})),
                ),
                "correct2" => (
                    "correct",
                    Some(json!({"reason": "Transcription error", "results": [
                        {"code": "WBC", "value": ">=11.5", "unit": "10^9/L"}
                    ]})),
                ),
                other => (other, None),
            };
            call(
                &s,
                &lab_token,
                Method::POST,
                &format!("{one}/{action}"),
                body,
                200,
            )
            .await;
            corrections += usize::from(action == "correct");
        }
        // The second round's orders, stopped before testing (ordered,
        // collected, received), are canceled.
        if i > STEPS.len() {
            let v = call(
                &s,
                &token,
                Method::POST,
                &format!("{one}/cancel"),
                Some(json!({"reason": "Duplicate order"})),
                200,
            )
            .await;
            assert_eq!(v["status"], "canceled");
            canceled += 1;
        }
    }
    assert_eq!(corrections, 3, "corrections");
    assert_eq!(canceled, 3, "cancellations");

    // The live projector builds the read model.
    let db = platform::db::connect(&cfg.database_url, "public")
        .await
        .unwrap();
    let read = cfg.read_schema.clone();
    let p = TestStack::start_with(cfg.clone(), PROJECTOR).await;
    wait_for_all_events(&db, &cfg.write_schema, &read).await;
    p.stop().await;
    assert_eq!(count(&db, &read, "orders").await, ORDERS as i64);
    assert_eq!(
        count(&db, &read, "order_result_history").await,
        corrections as i64
    );
    assert_eq!(count(&db, &read, "catalog_tests").await, 6);
    let statuses: Vec<String> = db
        .query(
            &format!("SELECT DISTINCT status FROM {read}.orders ORDER BY status"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for status in [
        "canceled",
        "collected",
        "corrected",
        "final",
        "in_progress",
        "ordered",
        "received",
        "resulted",
    ] {
        assert!(
            statuses.iter().any(|s| s == status),
            "no {status} order in {statuses:?}"
        );
    }
    let name: Value = db
        .query_one(
            &format!("SELECT definition->'name' FROM {read}.catalog_tests WHERE code = 'CBC'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Complete blood count (automated)");

    // A rebuild from offset 0 into a fresh schema gives the same rows.
    assert_equals_a_rebuild(&cfg, &db).await;
    s.stop().await;
}

/// Projector processes share the partitions through Kafka's group
/// protocol: three under load, one killed with `kill -9` and a fourth added
/// mid-stream. Each live one takes partitions (from the offsets stored with
/// the rows, the group's own being never committed), the newcomer too; in
/// the end the read models hold every event once (one history row per
/// patient event) and equal a rebuild from offset 0.
#[tokio::test(flavor = "multi_thread")]
async fn projectors_share_the_partitions_through_a_kill_and_a_newcomer() {
    let cfg = test_config();
    let s = TestStack::start_with(cfg.clone(), WRITE_SIDE).await;
    let (_, token) = s.standard().await;
    let info = [("LIS_LOG", "info")];
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(s.spawn_process_with("projector", &info).await);
    }
    const N: usize = 300;
    let (base, t) = (s.base.clone(), token.clone());
    let load = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for i in 0..N {
            let r = http
                .post(format!("{base}/v1/patients"))
                .bearer_auth(&t)
                .json(&patient_body(&format!("GRP-{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            if i % 3 == 0 {
                let id = r.json::<Value>().await.unwrap()["patientID"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let r = http
                    .patch(format!("{base}/v1/patients/{id}"))
                    .bearer_auth(&t)
                    .header("content-type", "application/merge-patch+json")
                    .body(r#"{"lastName":"Grouped"}"#)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let took = |p: &tests::LisProcess| p.log().contains("projector took partitions");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while procs.iter().filter(|p| took(p)).count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the projectors share the partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = procs.iter().position(took).unwrap();
    procs[victim].kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    procs.push(s.spawn_process_with("projector", &info).await);
    load.await.unwrap();

    let db = platform::db::connect(&cfg.database_url, "public")
        .await
        .unwrap();
    let read = cfg.read_schema.clone();
    wait_for_all_events(&db, &cfg.write_schema, &read).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !took(procs.last().unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the newcomer takes partitions: {}",
            procs.last().unwrap().log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, p) in procs.iter().enumerate() {
        for line in p.log().lines().filter(|l| l.contains("partitions")) {
            let at = line.find("projector ").unwrap_or(0);
            println!("projector {i}: {}", &line[at..]);
        }
    }
    let patient_events: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.events WHERE stream_type = 'patient'",
                cfg.write_schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        count(&db, &read, "history").await,
        patient_events,
        "one history row per event: none applied twice"
    );
    assert_eq!(count(&db, &read, "patients").await, N as i64);

    assert_equals_a_rebuild(&cfg, &db).await;
    drop(procs);
    s.stop().await;
}
