//! `lis replay`: the read models rebuilt from offset 0 of the log beside
//! the live copy, resumed after a `kill -9`, and readers switched to the new
//! copy without an error or an older answer; `--drop-old` removes the old.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tests::{header, lis_binary, patient_body, TestStack};

fn replay(cfg: &platform::config::Config, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(lis_binary());
    c.arg("replay")
        .args(args)
        .env("LIS_DATABASE_URL", &cfg.database_url)
        .env("LIS_KAFKA_BROKERS", &cfg.kafka_brokers)
        .env("LIS_TOPIC_PREFIX", &cfg.topic_prefix)
        .env("LIS_KAFKA_PARTITIONS", cfg.kafka_partitions.to_string())
        .env("LIS_READ_SCHEMA", &cfg.read_schema)
        .env("LIS_LOG", "error");
    c
}

async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    db: &tokio_postgres::Client,
    sql: &str,
) -> Option<T> {
    // The rebuilt schema's tables appear a moment after its registration.
    db.query_opt(sql, &[])
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_rebuilds_beside_the_live_copy_resumes_and_switches_readers() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let mut ids = Vec::new();
    let mut ct = String::new();
    for i in 0..300 {
        let r = s
            .create_patient(&token, &patient_body(&format!("MRN-R-{i}")))
            .await;
        assert_eq!(r.status(), 201);
        ct = header(&r, "consistency-token");
        let v: Value = r.json().await.unwrap();
        ids.push(v["patientID"].as_str().unwrap().to_string());
    }
    for id in ids.iter().take(150) {
        let r = s
            .patch(
                &token,
                &format!("/v1/patients/{id}"),
                None,
                r#"{"firstName":"Bea"}"#,
            )
            .await;
        assert_eq!(r.status(), 200);
        ct = header(&r, "consistency-token");
    }
    let last = format!("/v1/patients/{}", ids[149]);
    assert_eq!(s.get_consistent(&token, &last, &ct).await.status(), 200);
    let cfg = s.cfg.clone();
    let db = platform::db::connect(&cfg.database_url, &cfg.write_schema)
        .await
        .unwrap();

    // A first run, killed once its copy holds part of the log.
    let mut first = replay(&cfg, &["--batch", "5"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let schema: String = loop {
        if let Some(name) = one::<String>(
            &db,
            "SELECT name FROM read_schemas WHERE state = 'building'",
        )
        .await
        {
            let applied = one::<i64>(
                &db,
                &format!(
                    "SELECT COALESCE(sum(next_offset), 0)::bigint FROM {name}.consumer_offsets"
                ),
            )
            .await
            .unwrap_or(0);
            if applied >= 50 {
                break name;
            }
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "replay ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "replay made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    first.kill().unwrap();
    first.wait().unwrap();

    // While the second run resumes and switches, partners keep writing and
    // reading: no error, and never a version older than one already seen.
    let stop = Arc::new(AtomicBool::new(false));
    let (base, http) = (s.base.clone(), s.http.clone());
    let reader = {
        let (stop, ids, token, base, http) = (
            stop.clone(),
            ids.clone(),
            token.clone(),
            base.clone(),
            http.clone(),
        );
        tokio::spawn(async move {
            let mut seen: HashMap<String, i64> = HashMap::new();
            let mut problems = Vec::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for id in ids.iter().take(20) {
                    let r = http
                        .get(format!("{base}/v1/patients/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    reads += 1;
                    if r.status() != 200 {
                        problems.push(format!("{id}: {}", r.status()));
                        continue;
                    }
                    let v: Value = r.json().await.unwrap();
                    let version = v["version"].as_i64().unwrap();
                    let before = seen.insert(id.clone(), version).unwrap_or(0);
                    if version < before {
                        problems.push(format!("{id}: version {version} after {before}"));
                    }
                }
            }
            (reads, problems)
        })
    };
    let writer = {
        let (stop, ids, token, base, http) = (
            stop.clone(),
            ids.clone(),
            token.clone(),
            base.clone(),
            http.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[n % 20];
                let r = http
                    .patch(format!("{base}/v1/patients/{id}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({"phone": format!("+1555000{n:04}")}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || replay(&cfg, &["--batch", "50"]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("replay: resuming {schema}: ")),
        "resumes, not from the start: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "readers switched from {} to {schema}",
            cfg.read_schema
        )),
        "{stdout}"
    );
    assert!(stderr.contains("events/s"), "progress lines: {stderr}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (reads, problems) = reader.await.unwrap();
    let writes = writer.await.unwrap();
    assert!(reads > 20 && writes > 5, "{reads} reads, {writes} writes");
    assert_eq!(problems, Vec::<String>::new());

    // The registry: the new copy active, the old one kept.
    let states: Vec<(String, String)> = db
        .query("SELECT name, state FROM read_schemas ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        [
            (cfg.read_schema.clone(), "old".to_string()),
            (schema.clone(), "active".to_string())
        ]
    );
    // The projectors keep the new copy current: a write after the switch is
    // readable with its token.
    let r = s.create_patient(&token, &patient_body("MRN-R-AFTER")).await;
    let ct = header(&r, "consistency-token");
    let id = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/patients/{id}");
    assert_eq!(s.get_consistent(&token, &path, &ct).await.status(), 200);
    // (The read above may have been served by the old copy, which is kept
    // current too until readers have followed the switch.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let in_new: i64 = one(
            &db,
            &format!("SELECT count(*) FROM {schema}.patients WHERE patient_id = '{id}'"),
        )
        .await
        .unwrap();
        if in_new == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the write never reached the new copy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Readers read the new copy: a mark made only there shows.
    db.batch_execute(&format!(
        "UPDATE {schema}.patients SET last_name = 'OnlyInTheNewCopy' WHERE patient_id = '{id}'"
    ))
    .await
    .unwrap();
    // Readers follow the switch within a poll of the registry.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = s.get(&token, &path).await.json().await.unwrap();
        if v["lastName"] == "OnlyInTheNewCopy" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readers never moved to the new copy: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The old copy goes only when asked, and only once readers have left
    // it; reads go on without an error.
    let out = replay(&cfg, &["--drop-old"]).output().unwrap();
    assert!(out.status.success());
    for id in ids.iter().take(20) {
        let r = s.get(&token, &format!("/v1/patients/{id}")).await;
        assert_eq!(r.status(), 200, "after the old copy was dropped");
    }
    let old_exists: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&cfg.read_schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!old_exists, "the old copy's schema is gone");
    assert_eq!(
        one::<i64>(&db, "SELECT count(*) FROM read_schemas").await,
        Some(1)
    );
    s.stop().await;
}
