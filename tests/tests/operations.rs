//! Health, readiness, metrics, graceful shutdown, and logs free of personal
//! data.

use std::time::Duration;

use contract::consistency::ConsistencyToken;
use serde_json::json;
use tests::{patient_body, test_config, TestStack};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let r = s
        .http
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["postgres"], "up");
    assert_eq!(v["kafka"], "up");

    let mut body = patient_body("MRN-METRICS");
    body["lastName"] = json!("Zyxwvutsrq");
    let r = s.create_patient(&token, &body).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.get(&token, &format!("/v1/patients/{id}")).await;
    assert!(r.status() == 200 || r.status() == 404);
    // Wait until the relay and the projector have handled the event.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = s
            .http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("lis_projector_events_total")
            && !text.contains("lis_projector_events_total 0")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no projector progress in metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains(
            r#"lis_http_requests_total{method="POST",route="/v1/patients",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/patients/{patient_id}""#),
        "route templates, not raw paths"
    );
    assert!(text.contains("lis_http_request_duration_seconds_bucket"));
    assert!(text.contains("lis_relay_lag_seconds"));
    assert!(text.contains("lis_projector_lag_seconds"));
    assert!(!text.contains(&id), "no record ids in metrics");
    assert!(!text.contains("Zyxwvutsrq"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_without_the_broker() {
    let mut cfg = test_config();
    let s0 = TestStack::start_with(cfg.clone(), lis::stack::Roles::NONE).await;
    cfg.kafka_brokers = "127.0.0.1:1".into();
    let roles = lis::stack::Roles {
        commands: true,
        queries: true,
        ..lis::stack::Roles::NONE
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (fire, shutdown) = lis::stack::Shutdown::new();
    let task = tokio::spawn(lis::stack::serve(cfg, Some(listener), roles, shutdown));
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            break r;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["kafka"], "down");
    assert_eq!(v["postgres"], "up");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let _ = fire.send(true);
    task.await.unwrap().unwrap();
    s0.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_requests_in_flight() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    // A read that waits (up to 2 s) for a write the read model will never see.
    let never = ConsistencyToken(vec![(Uuid::new_v4(), 1)]).encode();
    let (http, base) = (s.http.clone(), s.base.clone());
    let slow = tokio::spawn(async move {
        http.get(format!("{base}/v1/patients"))
            .bearer_auth(token)
            .header("Consistency-Token", never)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    s.stop().await;
    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request got an answer");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "shutdown waited for it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_carry_no_personal_data() {
    // The in-process stack only issues the token; the process under test
    // runs every role and its output is captured.
    let roles = lis::stack::Roles {
        commands: true,
        ..lis::stack::Roles::NONE
    };
    let s = TestStack::start_with(test_config(), roles).await;
    let (_, token) = s.standard().await;
    let p = s
        .spawn_process_with(
            "all",
            &[(
                "LIS_LOG",
                "debug,tokio_postgres=info,rdkafka=info,hyper=info",
            )],
        )
        .await;
    let mut body = patient_body("MRN-SECRET-7731");
    body["firstName"] = json!("Quentinella");
    body["lastName"] = json!("Xylophonist");
    body["email"] = json!("quentinella.x@example.org");
    body["phone"] = json!("+1 555 867 5309");
    let r = s
        .http
        .post(format!("{}/v1/patients", p.base))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = s
        .http
        .post(format!("{}/v1/patients", p.base))
        .bearer_auth(&token)
        .json(&json!({"firstName": "Quentinella", "dateOfBirth": "1234567"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let r = s
        .http
        .get(format!("{}/v1/patients/{id}?lastName=Xylophonist", p.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success() || r.status() == 404 || r.status() == 422);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut p = p;
    p.terminate();
    let log = p.log();
    assert!(
        log.contains("partner API listening"),
        "the log was captured:\n{log}"
    );
    for secret in [
        "Quentinella",
        "Xylophonist",
        "quentinella.x@example.org",
        "867 5309",
        "MRN-SECRET-7731",
        "1990-12-10",
    ] {
        assert!(
            !log.contains(secret),
            "`{secret}` appears in the log:\n{log}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_logs_give_the_databases_words_but_no_values() {
    let (db, conn) = tokio_postgres::connect(&tests::database_url(), tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    db.batch_execute("CREATE TEMP TABLE people (mrn TEXT CONSTRAINT people_mrn UNIQUE, born DATE)")
        .await
        .unwrap();
    let insert = "INSERT INTO people (mrn) VALUES ('MRN-SECRET-42')";
    db.batch_execute(insert).await.unwrap();

    // A unique violation, wrapped as a service wraps it: the SQLSTATE, the
    // message and the constraint, never the DETAIL quoting the key.
    let e = anyhow::Error::from(db.batch_execute(insert).await.unwrap_err())
        .context("applying a batch");
    let text = platform::telemetry::cause(e.as_ref());
    assert!(text.starts_with("applying a batch: db error: ERROR 23505: duplicate key value violates unique constraint"), "{text}");
    assert!(text.contains("[constraint people_mrn]"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");

    // A data exception quotes the value it refused: its message is withheld.
    let e = db
        .query("SELECT $1::text::date", &[&"1980-13-45-SECRET"])
        .await
        .unwrap_err();
    let text = platform::telemetry::cause(&e);
    assert!(text.starts_with("db error: ERROR 22"), "{text}");
    assert!(!text.contains("SECRET") && !text.contains("1980"), "{text}");

    // A missing table names it (an operator's most common cause).
    let e = db
        .batch_execute("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    let text = platform::telemetry::cause(&e);
    assert!(
        text.contains("42P01") && text.contains("no_such_table"),
        "{text}"
    );

    // A JSON error (an event that does not read) gives its kind and place,
    // never the value serde quotes.
    let e = serde_json::from_str::<u32>(r#""Jane Lovelace""#).unwrap_err();
    let e = anyhow::Error::from(e).context("reading an event");
    let text = platform::telemetry::cause(e.as_ref());
    assert!(
        text.starts_with("reading an event: JSON Data error at line 1"),
        "{text}"
    );
    assert!(!text.contains("Lovelace"), "{text}");
}

/// A request that fails inside the service (here the read model's table is
/// gone) is an opaque 500 to the partner, and the service's log gives the
/// database's own words for it: SQLSTATE, message and the object named.
#[tokio::test(flavor = "multi_thread")]
async fn an_internal_error_is_opaque_to_the_partner_and_worded_in_the_log() {
    let roles = lis::stack::Roles {
        commands: true,
        ..lis::stack::Roles::NONE
    };
    let s = TestStack::start_with(test_config(), roles).await;
    let (_, token) = s.standard().await;
    let mut p = s
        .spawn_process_with("query-api", &[("LIS_LOG", "warn")])
        .await;
    s.read
        .get()
        .await
        .unwrap()
        .batch_execute("ALTER TABLE orders RENAME TO orders_gone")
        .await
        .unwrap();
    let r = s
        .http
        .get(format!("{}/v1/orders/{}", p.base, Uuid::new_v4()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    for internal in ["42P01", "orders", "relation", "SELECT"] {
        assert!(
            !body.contains(internal),
            "`{internal}` in the answer: {body}"
        );
    }
    p.terminate();
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("internal error"))
        .unwrap_or_else(|| panic!("no internal error logged:\n{log}"));
    assert!(
        line.contains("42P01") && line.contains("orders") && line.contains("does not exist"),
        "the log line words the cause as the database did: {line}"
    );
    s.stop().await;
}

/// `pg_stat_user_tables` counters of `schema.table`: (changes since the
/// last analysis, analyses, vacuums), manual and automatic alike.
async fn table_stats(db: &tokio_postgres::Client, schema: &str, table: &str) -> (i64, i64, i64) {
    let r = db
        .query_one(
            "SELECT n_mod_since_analyze, analyze_count + autoanalyze_count, \
                    vacuum_count + autovacuum_count \
             FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
            &[&schema, &table],
        )
        .await
        .expect("stats");
    (r.get(0), r.get(1), r.get(2))
}

/// Creates `schema.table` with `rows` rows.
async fn create_table(db: &tokio_postgres::Client, schema: &str, table: &str, rows: i32) {
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.{table} (id INT PRIMARY KEY, v INT); \
         INSERT INTO {schema}.{table} SELECT g, g FROM generate_series(1, {rows}) g; \
         SELECT pg_stat_force_next_flush();"
    ))
    .await
    .expect("table");
}

/// Creates `schema.table` with `rows` rows and waits until Postgres's
/// counters show them.
async fn table_of_rows(db: &tokio_postgres::Client, schema: &str, table: &str, rows: i32) {
    create_table(db, schema, table, rows).await;
    wait_counted(db, schema, table, rows.into()).await;
}

/// Waits until Postgres's counters show `changed` changes of
/// `schema.table` since its last analysis (they reach shared memory
/// asynchronously).
async fn wait_counted(db: &tokio_postgres::Client, schema: &str, table: &str, changed: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while table_stats(db, schema, table).await.0 < changed {
        assert!(
            std::time::Instant::now() < deadline,
            "the counters never showed {changed} changes of {table}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upkeep_pass_does_what_autovacuum_would_and_only_that() {
    use platform::upkeep::{pass, Busy, Done, Work};
    let mut cfg = test_config();
    cfg.upkeep = Duration::ZERO;
    let stack = TestStack::start_with(cfg, lis::stack::Roles::ALL).await;
    let (w, r) = (
        stack.cfg.write_schema.clone(),
        stack.cfg.read_schema.clone(),
    );
    let db = stack.write.get().await.expect("db");
    // Due by both thresholds (1,500 inserted, never analyzed nor vacuumed),
    // one in a schema the pass is not given, and one too small to be due.
    table_of_rows(&db, &w, "upkeep_probe", 1500).await;
    table_of_rows(&db, "public", "upkeep_other", 1500).await;
    table_of_rows(&db, &r, "upkeep_small", 40).await;
    let schemas = [w.clone(), r.clone()];

    // Another pass under way: a skipping pass leaves the work to it.
    let other = stack.write.get().await.expect("db");
    let lock = platform::upkeep::lock_name(&w);
    other
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock])
        .await
        .expect("lock");
    assert_eq!(
        pass(&stack.write, &w, &schemas, Busy::Skip)
            .await
            .expect("pass"),
        vec![]
    );
    assert_eq!(table_stats(&db, &w, "upkeep_probe").await, (1500, 0, 0));
    // A waiting pass (the bench's, before a window) waits for it to end and
    // then does the work.
    let waiting = {
        let (pool, w, schemas) = (stack.write.clone(), w.clone(), schemas.clone());
        tokio::spawn(async move { pass(&pool, &w, &schemas, Busy::Wait).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a waiting pass ran beside another");
    assert_eq!(table_stats(&db, &w, "upkeep_probe").await, (1500, 0, 0));
    other
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock])
        .await
        .expect("unlock");
    let done = waiting.await.expect("task").expect("pass");
    let probe = Done {
        schema: w.clone(),
        table: "upkeep_probe".into(),
        work: Work::VacuumAnalyze,
    };
    assert!(done.contains(&probe), "{done:?}");
    assert!(
        done.iter().all(|d| d.schema == w || d.schema == r),
        "{done:?}"
    );
    assert!(!done.iter().any(|d| d.table == "upkeep_small"), "{done:?}");
    assert_eq!(table_stats(&db, &w, "upkeep_probe").await, (0, 1, 1));
    assert_eq!(
        table_stats(&db, "public", "upkeep_other").await,
        (1500, 0, 0)
    );
    assert_eq!(table_stats(&db, &r, "upkeep_small").await, (40, 0, 0));

    // Done is done: the next pass finds nothing of it.
    let again = pass(&stack.write, &w, &schemas, Busy::Skip)
        .await
        .expect("pass");
    assert!(
        !again.iter().any(|d| d.table.starts_with("upkeep_")),
        "{again:?}"
    );

    // Dead rows past 50 + 20% of the table: a vacuum (and, changed by more
    // than 50 + 10%, an analysis).
    db.batch_execute(&format!(
        "UPDATE {w}.upkeep_probe SET v = v + 1 WHERE id <= 600; SELECT pg_stat_force_next_flush();"
    ))
    .await
    .expect("update");
    wait_counted(&db, &w, "upkeep_probe", 600).await;
    let done = pass(&stack.write, &w, &schemas, Busy::Skip)
        .await
        .expect("pass");
    assert!(done.contains(&probe), "{done:?}");
    assert_eq!(table_stats(&db, &w, "upkeep_probe").await, (0, 2, 2));
    if !platform::upkeep::autovacuum_on(&stack.write)
        .await
        .expect("show")
    {
        // LIS_UPKEEP_SECS=0: the stack itself leaves every table alone, a
        // due one too.
        assert_eq!(table_stats(&db, &r, "upkeep_small").await, (40, 0, 0));
        table_of_rows(&db, &r, "upkeep_left", 1500).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(table_stats(&db, &r, "upkeep_left").await, (1500, 0, 0));
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_keeps_its_tables_while_autovacuum_is_off() {
    let mut cfg = test_config();
    cfg.upkeep = Duration::from_secs(1);
    let stack = TestStack::start_with(cfg, lis::stack::Roles::ALL).await;
    if platform::upkeep::autovacuum_on(&stack.write)
        .await
        .expect("show")
    {
        eprintln!("skipped: this Postgres runs autovacuum, which keeps the tables itself");
        stack.stop().await;
        return;
    }
    let r = stack.cfg.read_schema.clone();
    let db = stack.write.get().await.expect("db");
    // Not waiting for the counters: the stack may analyze the table first.
    create_table(&db, &r, "upkeep_probe", 1500).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (changed, analyses, vacuums) = table_stats(&db, &r, "upkeep_probe").await;
        if analyses >= 1 && vacuums >= 1 {
            assert_eq!(changed, 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stack never analyzed and vacuumed the new table: {analyses} analyses, {vacuums} vacuums"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.stop().await;
}
