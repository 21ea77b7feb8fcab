//! The access log: every read and refused read of a patient or order is
//! recorded before its answer leaves, and auditors read it back within
//! their scope.

use serde_json::Value;
use tests::{error_fields, header, json_of, patient_body, TestStack, SIX};

async fn logged(s: &TestStack, record: &str) -> i64 {
    let id: uuid::Uuid = record.parse().unwrap();
    s.write
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM access_log WHERE record_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// Creates a patient; its id, path and consistency token.
async fn new_patient(s: &TestStack, token: &str, mrn: &str) -> (String, String, String) {
    let r = s.create_patient(token, &patient_body(mrn)).await;
    let ct = header(&r, "consistency-token");
    let id = json_of(r, 201).await["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/patients/{id}");
    (id, path, ct)
}

/// Creates a patient and reads it once it is readable; its id and path.
async fn readable_patient(s: &TestStack, token: &str, mrn: &str) -> (String, String) {
    let (id, path, ct) = new_patient(s, token, mrn).await;
    json_of(s.get_consistent(token, &path, &ct).await, 200).await;
    (id, path)
}

/// Waits until the access log shows `n` entries for `query` (an entry shows
/// once no transaction that began before it is still running, anywhere in
/// the cluster), then returns that page.
async fn wait_entries(s: &TestStack, token: &str, query: &str, n: usize) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = log_page(s, token, query).await;
        if page["items"].as_array().unwrap().len() >= n {
            return page;
        }
        assert!(std::time::Instant::now() < deadline, "{query}: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `GET /v1/access-log?{query}`, which must answer 200.
async fn log_page(s: &TestStack, token: &str, query: &str) -> Value {
    json_of(s.get(token, &format!("/v1/access-log?{query}")).await, 200).await
}

fn entries(page: &Value) -> Vec<(String, String, u64)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["partnerID"].as_str().unwrap().to_string(),
                e["endpoint"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_read_and_refused_read_is_logged_before_it_is_answered() {
    let s = TestStack::start().await;
    let (ehr, token) = s.standard().await;
    let (id, path, ct) = new_patient(&s, &token, "MRN-AL-1").await;

    // A read's entry is there as soon as its answer is.
    assert_eq!(logged(&s, &id).await, 0);
    json_of(s.get_consistent(&token, &path, &ct).await, 200).await;
    assert_eq!(logged(&s, &id).await, 1, "logged before the answer left");

    // Refused reads: out of scope (404), without the permission (403).
    let outsider = s.partner(SIX, "C2", "*").await;
    let outsider_token = s.token(&outsider).await;
    json_of(s.get(&outsider_token, &path).await, 404).await;
    let no_read = s.partner("patients:create", "*", "*").await;
    let no_read_token = s.token(&no_read).await;
    json_of(s.get(&no_read_token, &path).await, 403).await;
    // A list logs each record it answered with; an unauthenticated read
    // names no partner and is not logged.
    let list = json_of(
        s.get(&token, "/v1/patients?externalPatientID=MRN-AL-1")
            .await,
        200,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(s.get_public(&path).await.status(), 401);
    assert_eq!(logged(&s, &id).await, 4);

    let auditor = s.partner("audit:read", "*", "*").await;
    let audit_token = s.token(&auditor).await;
    let page = wait_entries(&s, &audit_token, &format!("recordID={id}"), 4).await;
    let (e, o, n) = (
        ehr.id.to_string(),
        outsider.id.to_string(),
        no_read.id.to_string(),
    );
    assert_eq!(
        entries(&page),
        [
            (e.clone(), "GET /v1/patients/{patientID}".into(), 200),
            (o.clone(), "GET /v1/patients/{patientID}".into(), 404),
            (n.clone(), "GET /v1/patients/{patientID}".into(), 403),
            (e.clone(), "GET /v1/patients".into(), 200),
        ]
    );
    let first = &page["items"][0];
    assert_eq!(first["recordType"], "patient");
    assert_eq!(first["clientID"], "C1");
    assert_eq!(first["locationID"], "L1");
    // Route templates only: the list's query string (personal data may
    // travel there) is stored nowhere.
    let id_uuid: uuid::Uuid = id.parse().unwrap();
    let stored: Vec<String> = s
        .write
        .get()
        .await
        .unwrap()
        .query(
            "SELECT endpoint FROM access_log WHERE record_id = $1 ORDER BY id",
            &[&id_uuid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        stored,
        [
            "GET /v1/patients/{patientID}",
            "GET /v1/patients/{patientID}",
            "GET /v1/patients/{patientID}",
            "GET /v1/patients",
        ]
    );

    // Filters: partner, time, paging.
    let by_partner = log_page(&s, &audit_token, &format!("recordID={id}&partnerID={o}")).await;
    assert_eq!(entries(&by_partner).len(), 1);
    let at = first["at"].as_str().unwrap().replace('+', "%2B");
    let until = log_page(&s, &audit_token, &format!("recordID={id}&until={at}")).await;
    assert_eq!(entries(&until).len(), 0, "until is exclusive");
    let since = log_page(&s, &audit_token, &format!("recordID={id}&since={at}")).await;
    assert_eq!(entries(&since).len(), 4, "since is inclusive");
    let p1 = log_page(&s, &audit_token, &format!("recordID={id}&limit=3")).await;
    assert_eq!(entries(&p1).len(), 3);
    let cursor = p1["nextCursor"].as_str().unwrap();
    let p2 = log_page(
        &s,
        &audit_token,
        &format!("recordID={id}&limit=3&cursor={cursor}"),
    )
    .await;
    assert_eq!(entries(&p2), entries(&page)[3..]);
    assert_eq!(p2["nextCursor"], Value::Null);

    // A refused read of a record that does not exist belongs to no client:
    // only an auditor of every client sees it.
    let ghost = uuid::Uuid::new_v4();
    json_of(s.get(&token, &format!("/v1/orders/{ghost}")).await, 404).await;
    let all = wait_entries(&s, &audit_token, &format!("recordID={ghost}"), 1).await;
    assert_eq!(all["items"][0]["recordType"], "order");
    assert_eq!(all["items"][0]["clientID"], Value::Null);
    let scoped = s.partner("audit:read", "C1", "*").await;
    let scoped_token = s.token(&scoped).await;
    for record in [ghost.to_string(), id.clone()] {
        let page = log_page(&s, &scoped_token, &format!("recordID={record}")).await;
        let expected = if record == id { 4 } else { 0 };
        assert_eq!(entries(&page).len(), expected, "{record}");
    }
    let c2 = s.partner("audit:read", "C2", "*").await;
    let c2_token = s.token(&c2).await;
    let page = log_page(&s, &c2_token, &format!("recordID={id}")).await;
    assert_eq!(
        entries(&page).len(),
        0,
        "another client's auditor sees none"
    );

    // Permission and validation.
    json_of(s.get(&token, "/v1/access-log").await, 403).await;
    let bad = json_of(
        s.get(
            &audit_token,
            "/v1/access-log?recordID=x&since=yesterday&limit=501&color=red",
        )
        .await,
        422,
    )
    .await;
    let fields = error_fields(&bad);
    assert_eq!(fields, ["recordID", "since", "limit", "color"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_cannot_be_logged_is_not_served() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let (_, path) = readable_patient(&s, &token, "MRN-AL-2").await;

    // The log refuses every new entry: the read answers 503, with no record
    // data, and serves again once the log takes entries.
    let db = s.write.get().await.unwrap();
    db.batch_execute("ALTER TABLE access_log ADD CONSTRAINT refuse CHECK (false) NOT VALID")
        .await
        .unwrap();
    let r = s.get(&token, &path).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let text = r.text().await.unwrap();
    assert!(!text.contains("Lovelace"), "{text}");
    db.batch_execute("ALTER TABLE access_log DROP CONSTRAINT refuse")
        .await
        .unwrap();
    json_of(s.get(&token, &path).await, 200).await;

    // Append-only: the table refuses changes and removals.
    for sql in [
        "UPDATE access_log SET status = 200",
        "DELETE FROM access_log",
        "TRUNCATE access_log",
    ] {
        assert_refused(&db, sql, "append-only").await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_that_arrive_together_are_committed_together() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let paths = [
        readable_patient(&s, &token, "MRN-AL-3").await,
        readable_patient(&s, &token, "MRN-AL-4").await,
    ];

    // Forty reads at once (the first patient's round opens the client's
    // connections, so that the second patient's forty arrive together):
    // every one is logged before it is answered, and they share commits
    // (one transaction id per commit).
    const READS: usize = 40;
    for (_, path) in &paths {
        let answers = futures::future::join_all((0..READS).map(|_| s.get(&token, path))).await;
        for r in answers {
            assert_eq!(r.status(), 200);
        }
    }
    let id: uuid::Uuid = paths[1].0.parse().unwrap();
    let row = s
        .write
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*), count(DISTINCT txid::text) FROM access_log \
             WHERE record_id = $1 AND endpoint = 'GET /v1/patients/{patientID}'",
            &[&id],
        )
        .await
        .unwrap();
    let (entries, commits): (i64, i64) = (row.get(0), row.get(1));
    eprintln!("{entries} reads logged in {commits} commits");
    assert_eq!(entries, READS as i64 + 1);
    assert!(
        commits <= entries / 4,
        "{entries} reads logged in {commits} commits"
    );
    s.stop().await;
}

/// Asserts that Postgres refuses `sql` with a message that says `why`.
async fn assert_refused(db: &tokio_postgres::Client, sql: &str, why: &str) {
    let e = db.batch_execute(sql).await.expect_err(sql);
    assert!(
        e.as_db_error().is_some_and(|d| d.message().contains(why)),
        "{sql}: {e:?}"
    );
}

/// A transaction id far after every one so far.
const LATE_TXID: &str = "(pg_current_xact_id()::text::bigint + 1000000)::text::xid8";

/// Notes this minute and the next at `first_txid` (SQL), as another
/// process's writer would have: the reads a test makes next land in one
/// of them.
async fn another_writer_noted(db: &deadpool_postgres::Object, first_txid: &str) {
    db.execute(
        &format!(
            "INSERT INTO access_log_minutes (minute, first_txid) \
             SELECT date_trunc('minute', now() + m * interval '1 minute', 'UTC'), {first_txid} \
             FROM generate_series(0, 1) m"
        ),
        &[],
    )
    .await
    .unwrap();
}

/// Entries that begin before their minute does (must be none).
async fn before_their_minute(db: &deadpool_postgres::Object) -> i64 {
    db.query_one(
        "SELECT count(*) FROM access_log a LEFT JOIN access_log_minutes m \
         ON m.minute = date_trunc('minute', a.at, 'UTC') \
         WHERE m.minute IS NULL OR a.txid < m.first_txid",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_time_filter_starts_at_its_minute_and_misses_nothing() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let auditor = s.partner("audit:read", "*", "*").await;
    let audit_token = s.token(&auditor).await;
    let db = s.write.get().await.unwrap();
    // Another process noted these minutes with commits later than this
    // process's will be: its first commit in the minute moves the start
    // earlier.
    let since = rfc3339(chrono::Utc::now() - chrono::TimeDelta::seconds(1));
    another_writer_noted(&db, LATE_TXID).await;
    let (id, path) = readable_patient(&s, &token, "MRN-AL-MIN").await;
    for _ in 0..3 {
        json_of(s.get(&token, &path).await, 200).await;
    }
    assert_eq!(
        before_their_minute(&db).await,
        0,
        "entries before their minute's start"
    );
    let page = wait_entries(&s, &audit_token, &format!("recordID={id}&since={since}"), 4).await;
    assert_eq!(entries(&page).len(), 4, "every read since then: {page}");
    let everything = log_page(&s, &audit_token, &format!("since={since}")).await;
    assert_eq!(entries(&everything).len(), 4, "{everything}");
    let later = rfc3339(chrono::Utc::now() + chrono::TimeDelta::hours(1));
    assert_eq!(
        entries(&log_page(&s, &audit_token, &format!("since={later}")).await).len(),
        0
    );

    // The scan starts where since's minute begins: an entry committed
    // before that start is not looked at. (The writer never leaves such an
    // entry; one is planted here, two hours ahead as a process with a fast
    // clock would stamp it, to see where the scan starts.)
    let ahead = chrono::Utc::now() + chrono::TimeDelta::hours(2);
    db.execute(
        &format!(
            "WITH planted AS (INSERT INTO access_log (at, partner_id, record_type, record_id, endpoint, status) \
             VALUES ($1, $2, 'patient', $3, 'GET /v1/patients/{{patientID}}', 200)) \
             INSERT INTO access_log_minutes (minute, first_txid) \
             VALUES (date_trunc('minute', $1, 'UTC'), {LATE_TXID})"
        ),
        &[&ahead, &auditor.id, &uuid::Uuid::new_v4()],
    )
    .await
    .unwrap();
    let by_auditor = format!("partnerID={}", auditor.id);
    let all_time = wait_entries(&s, &audit_token, &by_auditor, 1).await;
    assert_eq!(entries(&all_time).len(), 1, "{all_time}");
    let from = rfc3339(ahead - chrono::TimeDelta::seconds(1));
    let scanned = log_page(&s, &audit_token, &format!("{by_auditor}&since={from}")).await;
    assert_eq!(
        entries(&scanned).len(),
        0,
        "scanned from before its minute's start: {scanned}"
    );

    // A minute may begin earlier, never later, and never vanish.
    let first = "minute = (SELECT min(minute) FROM access_log_minutes)";
    for sql in [
        format!("UPDATE access_log_minutes SET first_txid = {LATE_TXID} WHERE {first}"),
        format!("UPDATE access_log_minutes SET minute = minute + interval '1 hour' WHERE {first}"),
        format!("DELETE FROM access_log_minutes WHERE {first}"),
        "TRUNCATE access_log_minutes".into(),
    ] {
        assert_refused(&db, &sql, "may only begin earlier").await;
    }
    let earlier = db
        .execute(
            &format!("UPDATE access_log_minutes SET first_txid = '1'::xid8 WHERE {first}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(earlier, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minute_another_writer_began_earlier_keeps_its_start() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let db = s.write.get().await.unwrap();
    another_writer_noted(&db, "'1'::xid8").await;
    // This process's first commits of the minute find an earlier start:
    // they keep it, and the reads are served.
    let (_, path) = readable_patient(&s, &token, "MRN-AL-EARLIER").await;
    for _ in 0..3 {
        json_of(s.get(&token, &path).await, 200).await;
    }
    let starts: Vec<String> = db
        .query(
            "SELECT first_txid::text FROM access_log_minutes ORDER BY minute",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(starts, ["1", "1"]);
    assert_eq!(before_their_minute(&db).await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_log_gets_its_minutes_when_the_schema_is_upgraded() {
    let cfg = tests::test_config();
    platform::db::ensure_database(&cfg.database_url)
        .await
        .unwrap();
    let before = command_handler::migrations().set_target(refinery::Target::Version(11));
    platform::db::migrate(&cfg.database_url, &cfg.write_schema, before)
        .await
        .unwrap();
    let pool = platform::db::pool(&cfg.database_url, &cfg.write_schema, 1).unwrap();
    let db = pool.get().await.unwrap();
    // Three commits: two minutes, one of them written by two transactions.
    for at in [
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:59.999Z",
        "2026-01-02T03:05:00Z",
    ] {
        db.execute(
            "INSERT INTO access_log (at, partner_id, record_type, record_id, endpoint, status) \
             VALUES ($1::text::timestamptz, gen_random_uuid(), 'patient', gen_random_uuid(), 'GET /v1/patients/{patientID}', 200)",
            &[&at],
        )
        .await
        .unwrap();
    }
    drop(db);
    platform::db::migrate(
        &cfg.database_url,
        &cfg.write_schema,
        command_handler::migrations(),
    )
    .await
    .unwrap();
    let db = pool.get().await.unwrap();
    let rows: Vec<(String, bool)> = db
        .query(
            "SELECT to_char(m.minute AT TIME ZONE 'UTC', 'HH24:MI'), \
             m.first_txid = (SELECT min(txid) FROM access_log a WHERE date_trunc('minute', a.at, 'UTC') = m.minute) \
             FROM access_log_minutes m ORDER BY m.minute",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("03:04".to_string(), true), ("03:05".to_string(), true)]
    );
}
