//! The projector applies each event once in effect: it survives being
//! stopped mid-stream, ignores re-delivered events, and a rebuild from
//! offset 0 into a fresh schema gives the same rows as the live one.

use std::time::Duration;

use lis::stack::Roles;
use serde_json::json;
use tests::{patient_body, test_config, TestStack};

const WRITE_SIDE: Roles = Roles {
    commands: true,
    queries: false,
    relay: true,
    projector: false,
    mailer: false,
};

const PROJECTOR: Roles = Roles {
    commands: false,
    queries: false,
    relay: false,
    projector: true,
    mailer: false,
};

const TABLES: [&str; 7] = [
    "patients",
    "accounts",
    "clients",
    "locations",
    "partners",
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
            .http
            .patch(format!("{}/v1/patients/{id}", s.base))
            .bearer_auth(&token)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"lastName":"Updated","address":{"city":"Leeds"}}"#)
            .send()
            .await
            .unwrap();
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
    p.stop().await;
    assert_eq!(count(&db, &read, "accounts").await, N.div_ceil(3) as i64);
    assert_eq!(count(&db, &read, "clients").await, 2);
    assert_eq!(count(&db, &read, "locations").await, 3);
    assert_eq!(count(&db, &read, "partners").await, 1);

    // Re-delivery of everything changes nothing.
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS snapshot_patients; CREATE TABLE snapshot_patients AS SELECT * FROM {read}.patients; \
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

    // A rebuild from offset 0 into a fresh schema gives the same rows.
    let mut fresh = cfg.clone();
    fresh.read_schema = "read_rebuild".into();
    platform::db::migrate(
        &fresh.database_url,
        &fresh.read_schema,
        platform::db::Side::Read,
    )
    .await
    .unwrap();
    let pool = platform::db::pool(&fresh.database_url, &fresh.read_schema, 4).unwrap();
    let applied = projector::catch_up(&fresh, &pool, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(applied >= (versions as u64), "{applied} events applied");
    for table in TABLES {
        assert_eq!(
            count(&db, &read, table).await,
            count(&db, "read_rebuild", table).await,
            "{table} row count"
        );
        assert_eq!(
            differences(&db, &read, "read_rebuild", table).await,
            0,
            "{table} rows differ"
        );
    }
    s.stop().await;
}
