//! Tamper evidence and `lis verify`: someone with write access to Postgres
//! changes, removes, reorders or inserts events, removes a whole stream,
//! rewrites the chain to match, or changes the read models; `lis verify`
//! names each case, and finds nothing on an untouched installation.

use std::time::Duration;

use command_handler::relay::{Stored, EVENT_COLUMNS};
use platform::chain::{self, ChainKey, SignedCheckpoint};
use platform::kafka::Topic;
use serde_json::json;
use tests::{header, lis_binary, patient_body, TestStack};
use uuid::Uuid;

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until the relay has linked every event and signed the chain's head.
async fn wait_signed(s: &TestStack, db: &tokio_postgres::Client) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = count(db, "SELECT count(*) FROM events").await;
        let links = count(db, "SELECT count(*) FROM event_chain").await;
        if events == links {
            let cfg = s.cfg.clone();
            let signed = tokio::task::spawn_blocking(move || {
                platform::kafka::read_from_start(&cfg, &[Topic::Chain], Duration::from_secs(30))
            })
            .await
            .unwrap()
            .unwrap();
            let newest = signed
                .iter()
                .filter_map(|r| serde_json::from_slice::<SignedCheckpoint>(&r.payload).ok())
                .map(|c| c.checkpoint.seq)
                .max();
            if newest == Some(links) {
                return links;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not link and sign everything"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Recomputes every link from the events as they now stand, as someone
/// covering their tracks would.
async fn rewrite_chain(db: &tokio_postgres::Client) {
    let store: Vec<Stored> = db
        .query(
            &format!("SELECT {EVENT_COLUMNS} FROM events e ORDER BY e.txid, e.position"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Stored::from_row(r).unwrap())
        .collect();
    db.batch_execute("DELETE FROM event_chain").await.unwrap();
    let mut linker = chain::Linker::new(0, chain::GENESIS);
    for e in &store {
        let l = linker.link(e.envelope.stream_id, &e.payload);
        db.execute(
            "INSERT INTO event_chain (seq, position, event_id, stream_id, version, event_hash, stream_hash, log_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &l.seq,
                &e.position.position,
                &e.envelope.event_id,
                &e.envelope.stream_id,
                &e.envelope.version,
                &l.event.to_vec(),
                &l.stream.to_vec(),
                &l.log.to_vec(),
            ],
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_every_kind_of_tampering() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = s
            .create_patient(&token, &patient_body(&format!("MRN-V-{i}")))
            .await;
        assert_eq!(r.status(), 201);
        let id: serde_json::Value = r.json().await.unwrap();
        ids.push(id["patientID"].as_str().unwrap().to_string());
    }
    let mut ct = String::new();
    for id in &ids {
        for name in ["Bea", "Cleo"] {
            let r = s
                .patch(
                    &token,
                    &format!("/v1/patients/{id}"),
                    None,
                    &json!({ "firstName": name }).to_string(),
                )
                .await;
            assert_eq!(r.status(), 200);
            ct = header(&r, "consistency-token");
        }
    }
    assert_eq!(
        s.get_consistent(&token, &format!("/v1/patients/{}", ids[3]), &ct)
            .await
            .status(),
        200
    );
    let db = platform::db::connect(&s.cfg.database_url, &s.cfg.write_schema)
        .await
        .unwrap();
    let links = wait_signed(&s, &db).await;
    assert!(links >= 14, "{links} links");
    let key = ChainKey::load(&s.cfg.chain_key_file).unwrap().public();
    let cfg = s.cfg.clone();
    // Let the projector finish, then stop every role: nothing moves while
    // the store is tampered with.
    let ends = projector::log_ends(&cfg).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !projector::reached(&s.read, &ends).await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "projector behind");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;

    let clean = lis::verify::verify(&cfg, &key, true).await.unwrap();
    assert_eq!(clean.differences, Vec::<String>::new());
    assert_eq!(clean.events as i64, links);
    assert_eq!(clean.newest_checkpoint, Some(links));
    assert!(clean.rows > 0);

    // The operator's command says the same and exits 0.
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(lis_binary())
            .arg("verify")
            .args(extra)
            .env("LIS_DATABASE_URL", &cfg.database_url)
            .env("LIS_KAFKA_BROKERS", &cfg.kafka_brokers)
            .env("LIS_TOPIC_PREFIX", &cfg.topic_prefix)
            .env("LIS_KAFKA_PARTITIONS", cfg.kafka_partitions.to_string())
            .env("LIS_CHAIN_KEY_FILE", &cfg.chain_key_file)
            .env("LIS_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, out) = run(&[]);
    assert!(ok, "{out}");
    assert!(out.contains(": 0 differences"), "{out}");

    db.batch_execute(
        "CREATE TABLE public.saved_events AS SELECT * FROM events; \
         CREATE TABLE public.saved_chain AS SELECT * FROM event_chain;",
    )
    .await
    .unwrap();
    let (p0, p1, p2) = (&ids[0], &ids[1], &ids[2]);
    let newest: (Uuid, i64) = {
        let r = db
            .query_one(
                "SELECT stream_id, version FROM events ORDER BY txid DESC, position DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "an event's data changed",
            format!(
                "UPDATE events SET data = jsonb_set(data, '{{firstName}}', '\"Mallory\"') \
                 WHERE stream_id = '{p0}' AND version = 1"
            ),
            vec![format!(
                "event store: patient stream {p0} version 1 was changed (data.firstName)"
            )],
        ),
        (
            "the newest event removed",
            format!(
                "DELETE FROM events WHERE stream_id = '{}' AND version = {}",
                newest.0, newest.1
            ),
            vec![format!(
                "event store: patient stream {} version {} (link {links}) was removed",
                newest.0, newest.1
            )],
        ),
        (
            "an event in the middle removed",
            format!("DELETE FROM events WHERE stream_id = '{p1}' AND version = 2"),
            vec![
                format!("event store: patient stream {p1} version 2 (link"),
                format!("event store: stream {p1} lacks version 2"),
            ],
        ),
        (
            "two events reordered",
            format!(
                "UPDATE events e SET txid = CASE WHEN e.stream_id = '{p1}' THEN o.b ELSE o.a END \
                 FROM (SELECT (SELECT txid FROM events WHERE stream_id = '{p1}' AND version = 1) a, \
                              (SELECT txid FROM events WHERE stream_id = '{p2}' AND version = 1) b) o \
                 WHERE e.version = 1 AND e.stream_id IN ('{p1}', '{p2}')"
            ),
            vec![format!("event store: patient stream {p1} version 1 (link")],
        ),
        (
            "an event inserted",
            format!(
                "INSERT INTO events (position, txid, event_id, stream_type, stream_id, version, event_type, \
                 schema_version, occurred_at, actor, command_id, idempotency_key, data) \
                 OVERRIDING SYSTEM VALUE \
                 SELECT (SELECT max(position) + 100 FROM events), txid, gen_random_uuid(), stream_type, \
                 stream_id, 4, event_type, schema_version, occurred_at, actor, gen_random_uuid(), NULL, data \
                 FROM events WHERE stream_id = '{p2}' AND version = 3"
            ),
            vec![format!(
                "event store: patient stream {p2} version 4 was inserted (it has no link in the chain)"
            )],
        ),
        (
            "a whole stream removed",
            format!("DELETE FROM events WHERE stream_id = '{p2}'"),
            (1..=3)
                .map(|v| format!("event store: patient stream {p2} version {v} (link"))
                .collect(),
        ),
    ];
    let restore = "DELETE FROM events; DELETE FROM event_chain; \
         INSERT INTO events OVERRIDING SYSTEM VALUE SELECT * FROM public.saved_events; \
         INSERT INTO event_chain SELECT * FROM public.saved_chain;";
    for (case, sql, expected) in &cases {
        db.batch_execute(sql).await.unwrap();
        let report = lis::verify::verify(&cfg, &key, false).await.unwrap();
        for line in expected {
            assert!(
                report
                    .differences
                    .iter()
                    .any(|d| d.starts_with(line.as_str())),
                "{case}: no line starts with {line:?} in {:#?}",
                report.differences
            );
        }
        db.batch_execute(restore).await.unwrap();
    }
    // The reordering is named as such.
    db.batch_execute(&cases[3].1).await.unwrap();
    let report = lis::verify::verify(&cfg, &key, false).await.unwrap();
    assert!(
        report.differences.iter().any(|d| d.ends_with("reordered")),
        "{:#?}",
        report.differences
    );
    db.batch_execute(restore).await.unwrap();

    // Changed, then the chain rewritten to match: only the signed
    // checkpoints and the log can tell, and they do.
    db.batch_execute(&cases[0].1).await.unwrap();
    rewrite_chain(&db).await;
    let report = lis::verify::verify(&cfg, &key, false).await.unwrap();
    for line in [
        format!("chain: link {links} differs from the signed checkpoint (the chain was rewritten)"),
        format!("event store: patient stream {p0} version 1 was changed (data.firstName)"),
    ] {
        assert!(
            report.differences.contains(&line),
            "{line:?} not in {:#?}",
            report.differences
        );
    }
    let (ok, out) = run(&["--skip-read-models"]);
    assert!(!ok, "lis verify fails on a difference");
    assert!(out.contains("was changed (data.firstName)"), "{out}");
    assert!(!out.contains("Mallory"), "never a value: {out}");
    db.batch_execute(restore).await.unwrap();

    // A checkpoint signed by another key counts for nothing.
    let stranger = ChainKey::from_seed(&[9u8; 32]).unwrap().public();
    let report = lis::verify::verify(&cfg, &stranger, false).await.unwrap();
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.ends_with("its signature is not by this installation's chain key")),
        "{:#?}",
        report.differences
    );

    // The read models and the history, against the log.
    let read = &cfg.read_schema;
    db.batch_execute(&format!(
        "UPDATE {read}.patients SET last_name = 'Mallory' WHERE patient_id = '{p0}'; \
         ALTER TABLE {read}.history DISABLE TRIGGER history_append_only; \
         DELETE FROM {read}.history WHERE stream_id = '{p1}' AND version = 2;"
    ))
    .await
    .unwrap();
    let report = lis::verify::verify(&cfg, &key, true).await.unwrap();
    for line in [
        format!("read model patients: {p0} version 3 differs from the log in last_name"),
        format!("read model history: {p1} version 2 is missing (the log has it)"),
    ] {
        assert!(
            report.differences.contains(&line),
            "{line:?} not in {:#?}",
            report.differences
        );
    }
}
