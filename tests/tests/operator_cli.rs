//! The operator's command line, driven as the real `lis` binary.
//!
//! `lis admin …` runs as a subprocess on the database and topics of a test
//! stack (contract, "Operator command line" and "Authentication"): clients and
//! locations are created idempotently; a partner's secret is printed once and
//! appears nowhere else (not in `list`/`show`, not in an event, not in a log);
//! changes of permissions or scope, a rotated secret and a disabled partner
//! take effect on the partner's next request; every operator action is an
//! event with an operator actor; bad input and an unreachable Postgres exit
//! non-zero with a clear message, never a panic. `lis up` twice changes
//! nothing and `lis down` stops what it started.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{lis_binary, patient_body, test_config, TestStack};
use uuid::Uuid;

/// What one `lis` run left behind.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the whole run when it did not exit 0.
    fn expect_ok(&self) -> &Self {
        assert!(self.ok(), "`lis {}` failed: {self:#?}", self.args.join(" "));
        self
    }

    /// Panics unless the run exited non-zero with a clear message (no panic,
    /// no backtrace).
    fn expect_refused(&self) -> &Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "`lis {}` should exit non-zero: {self:#?}",
            self.args.join(" ")
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "`lis {}` should say why on stderr: {self:#?}",
            self.args.join(" ")
        );
        for trace in [
            "panicked",
            "stack backtrace",
            "RUST_BACKTRACE",
            "src/main.rs:",
        ] {
            assert!(
                !self.stderr.contains(trace) && !self.stdout.contains(trace),
                "`lis {}` printed a panic or stack trace ({trace}): {self:#?}",
                self.args.join(" ")
            );
        }
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`lis {}` did not print JSON ({e}): {self:#?}",
                self.args.join(" ")
            )
        })
    }
}

/// The `LIS_*` environment of a `lis` command.
#[derive(Clone)]
struct Env(Vec<(&'static str, String)>);

impl Env {
    /// The environment of the stack `s` (its database and topics).
    fn of(s: &TestStack) -> Env {
        Env(vec![
            ("LIS_DATABASE_URL", s.cfg.database_url.clone()),
            ("LIS_WRITE_SCHEMA", s.cfg.write_schema.clone()),
            ("LIS_READ_SCHEMA", s.cfg.read_schema.clone()),
            ("LIS_KAFKA_BROKERS", s.cfg.kafka_brokers.clone()),
            ("LIS_TOPIC_PREFIX", s.cfg.topic_prefix.clone()),
            ("LIS_KAFKA_PARTITIONS", s.cfg.kafka_partitions.to_string()),
            ("LIS_LOG", "warn".into()),
        ])
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Env {
        self.0.retain(|(k, _)| *k != name);
        self.0.push((name, value.into()));
        self
    }

    /// A command of the `lis` binary with exactly this `LIS_*` environment.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(lis_binary());
        c.args(args);
        for name in platform::config::Config::VARIABLES {
            c.env_remove(name);
        }
        c.env_remove("LIS_OPERATOR");
        c.envs(self.0.iter().map(|(k, v)| (*k, v.as_str())));
        c.stdin(std::process::Stdio::null());
        c
    }

    /// Runs `lis ARGS` to its end (at most `limit`).
    async fn run_within(&self, limit: Duration, args: &[&str]) -> Run {
        let mut c = tokio::process::Command::from(self.command(args));
        c.kill_on_drop(true);
        let started = Instant::now();
        let out = tokio::time::timeout(limit, c.output())
            .await
            .unwrap_or_else(|_| panic!("`lis {}` did not end within {limit:?}", args.join(" ")))
            .expect("run lis");
        Run {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_within(Duration::from_secs(60), args).await
    }
}

/// The arguments of `lis admin client create` for C1, "Clinic One".
const CREATE_C1: &[&str] = &[
    "admin",
    "client",
    "create",
    "--id",
    "C1",
    "--name",
    "Clinic One",
];

/// The arguments of `lis admin partner create` of a partner `name` with
/// `permissions`, for `clients` at every location, then `extra`.
fn partner_create<'a>(
    name: &'a str,
    permissions: &'a str,
    clients: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "admin",
        "partner",
        "create",
        "--name",
        name,
        "--permissions",
        permissions,
        "--clients",
        clients,
        "--locations",
        "*",
    ];
    args.extend_from_slice(extra);
    args
}

/// Every key of a JSON value, at any depth.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Panics when a partner listing shows a secret, a hash or a field for one.
fn assert_no_secret_in(what: &str, run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !run.stdout.contains(s) && !run.stderr.contains(s),
            "{what} shows a secret or its hash: {run:#?}"
        );
    }
    assert!(
        !run.stdout.contains("$argon2"),
        "{what} shows a hash: {run:#?}"
    );
    if let Ok(v) = serde_json::from_str::<Value>(&run.stdout) {
        let mut k = Vec::new();
        keys(&v, &mut k);
        for k in k {
            let l = k.to_ascii_lowercase();
            assert!(
                !l.contains("secret") && !l.contains("hash"),
                "{what} has a field `{k}`: {run:#?}"
            );
        }
    }
}

/// Form-encoded `POST /oauth/token` with the credentials in the body.
async fn token_request(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> (u16, Value) {
    let r = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn token(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    let (status, body) = token_request(http, base, id, secret).await;
    assert_eq!(status, 200, "token for {id}: {body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn assert_invalid_client(what: &str, (status, body): &(u16, Value)) {
    assert_eq!(*status, 401, "{what}: {body}");
    assert_eq!(body["error"], "invalid_client", "{what}: {body}");
}

fn assert_bearer_401(what: &str, r: &reqwest::Response) {
    assert_eq!(r.status(), 401, "{what}");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate is `{challenge}`"
    );
}

/// Counts events whose data or actor contains `needle`.
async fn events_containing(s: &TestStack, needle: &str) -> i64 {
    let db = s.write.get().await.expect("db");
    db.query_one(
        "SELECT count(*) FROM events WHERE strpos(data::text, $1) > 0 OR strpos(actor::text, $1) > 0",
        &[&needle],
    )
    .await
    .expect("count")
    .get(0)
}

async fn partner_count(s: &TestStack) -> i64 {
    let db = s.write.get().await.expect("db");
    db.query_one("SELECT count(*) FROM partners", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_manages_clients_locations_and_partners() {
    let s = TestStack::start().await;
    let env = Env::of(&s);
    // Every stdout and stderr that must never show a secret.
    let mut quiet: Vec<Run> = Vec::new();

    // 1. Clients and locations.
    let r = env.run(CREATE_C1).await;
    r.expect_ok();
    quiet.push(r);
    let r = env.run(&["admin", "client", "list", "--json"]).await;
    let clients = r.expect_ok().json();
    let c1: Vec<&Value> = clients
        .as_array()
        .expect("a JSON array of clients")
        .iter()
        .filter(|c| c["clientID"] == "C1")
        .collect();
    assert_eq!(c1.len(), 1, "client list shows C1 once: {clients}");
    assert_eq!(c1[0]["name"], "Clinic One", "{clients}");
    quiet.push(r);

    let registered = |s: &TestStack| {
        let pool = s.write.clone();
        async move {
            let db = pool.get().await.expect("db");
            db.query_one(
                "SELECT count(*) FROM events WHERE event_type = 'ClientRegistered' \
                 AND (data->>'clientID' = 'C1' OR data->'data'->>'clientID' = 'C1')",
                &[],
            )
            .await
            .expect("count")
            .get::<_, i64>(0)
        }
    };
    assert_eq!(registered(&s).await, 1, "one ClientRegistered for C1");
    let before = s.event_count(None).await;
    let r = env.run(CREATE_C1).await;
    r.expect_ok();
    assert!(
        r.stdout.contains("exists"),
        "creating C1 again says it exists: {r:#?}"
    );
    quiet.push(r);
    assert_eq!(registered(&s).await, 1, "no second ClientRegistered for C1");
    assert_eq!(
        s.event_count(None).await,
        before,
        "creating an existing client appends nothing"
    );
    let r = env.run(&["admin", "client", "list", "--json"]).await;
    let n = r.expect_ok().json().as_array().expect("array").len();
    assert_eq!(n, 1, "still one client: {r:#?}");
    quiet.push(r);

    for (id, client, name) in [("L1", "C1", "Site L1"), ("L2", "C1", "Site L2")] {
        let r = env
            .run(&[
                "admin", "location", "create", "--id", id, "--client", client, "--name", name,
            ])
            .await;
        r.expect_ok();
        quiet.push(r);
    }
    let r = env
        .run(&[
            "admin",
            "client",
            "create",
            "--id",
            "C2",
            "--name",
            "Clinic Two",
        ])
        .await;
    r.expect_ok();
    quiet.push(r);
    let r = env
        .run(&[
            "admin", "location", "create", "--id", "L3", "--client", "C2", "--name", "Site L3",
        ])
        .await;
    r.expect_ok();
    quiet.push(r);

    let before = s.event_count(None).await;
    let r = env
        .run(&[
            "admin", "location", "create", "--id", "L9", "--client", "NOPE", "--name", "Nowhere",
        ])
        .await;
    r.expect_refused();
    assert!(
        r.stderr.contains("NOPE") && r.stderr.to_ascii_lowercase().contains("client"),
        "the refusal names the unknown client: {r:#?}"
    );
    quiet.push(r);
    assert_eq!(
        s.event_count(None).await,
        before,
        "a refused location appends nothing"
    );

    let r = env.run(&["admin", "location", "list", "--json"]).await;
    let locations = r.expect_ok().json();
    let got: BTreeSet<(String, String)> = locations
        .as_array()
        .expect("a JSON array of locations")
        .iter()
        .map(|l| {
            (
                l["locationID"].as_str().unwrap_or_default().to_string(),
                l["clientID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [("L1", "C1"), ("L2", "C1"), ("L3", "C2")]
        .into_iter()
        .map(|(l, c)| (l.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want, "location list: {locations}");
    quiet.push(r);

    // 2. A partner: the secret is printed once and works.
    let create = env
        .run(&partner_create(
            "EHR",
            "patients:read,patients:create",
            "C1",
            &["--json"],
        ))
        .await;
    let creds = create.expect_ok().json();
    let partner_id = creds["partnerID"]
        .as_str()
        .unwrap_or_else(|| panic!("partnerID: {creds}"))
        .to_string();
    Uuid::parse_str(&partner_id).expect("partnerID is a UUID");
    let client_id = creds["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("client_id: {creds}"))
        .to_string();
    let secret = creds["client_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("client_secret: {creds}"))
        .to_string();
    assert!(
        secret.len() >= 16,
        "a secret of some strength: {}",
        secret.len()
    );
    assert!(
        !create.stderr.contains(&secret),
        "the secret is not on stderr: {create:#?}"
    );
    let hash: String = {
        let db = s.write.get().await.expect("db");
        db.query_one(
            "SELECT secret_hash FROM partners WHERE partner_id = $1",
            &[&Uuid::parse_str(&partner_id).unwrap()],
        )
        .await
        .expect("the partner's row")
        .get(0)
    };
    assert!(!hash.contains(&secret), "the secret is stored only hashed");

    let t1 = token(&s.http, &s.base, &client_id, &secret).await;

    let r = env.run(&["admin", "partner", "list", "--json"]).await;
    let list = r.expect_ok().json();
    let mine: Vec<&Value> = list
        .as_array()
        .expect("a JSON array of partners")
        .iter()
        .filter(|p| p["partnerID"] == partner_id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "partner list shows the partner: {list}");
    assert_eq!(mine[0]["client_id"], client_id.as_str(), "{list}");
    assert_no_secret_in("partner list --json", &r, &[&secret, &hash]);
    quiet.push(r);
    let r = env.run(&["admin", "partner", "list"]).await;
    r.expect_ok();
    assert!(r.stdout.contains(&partner_id), "{r:#?}");
    assert_no_secret_in("partner list", &r, &[&secret, &hash]);
    quiet.push(r);
    let r = env
        .run(&["admin", "partner", "show", &partner_id, "--json"])
        .await;
    let shown = r.expect_ok().json();
    assert_eq!(shown["partnerID"], partner_id.as_str(), "{shown}");
    assert_eq!(shown["client_id"], client_id.as_str(), "{shown}");
    assert_no_secret_in("partner show --json", &r, &[&secret, &hash]);
    quiet.push(r);
    let r = env.run(&["admin", "partner", "show", &partner_id]).await;
    r.expect_ok();
    assert_no_secret_in("partner show", &r, &[&secret, &hash]);
    quiet.push(r);

    // 3. Changes take effect on the next request.
    let r = s.create_patient(&t1, &patient_body("MRN-OP-1")).await;
    assert_eq!(r.status(), 201, "create with patients:create");
    let ct = r
        .headers()
        .get("consistency-token")
        .map(|v| v.to_str().unwrap().to_string());
    let patient: Value = r.json().await.unwrap();
    let patient_path = format!("/v1/patients/{}", patient["patientID"].as_str().unwrap());
    let mut read = s
        .http
        .get(format!("{}{patient_path}", s.base))
        .bearer_auth(&t1);
    if let Some(ct) = &ct {
        read = read.header("Consistency-Token", ct);
    }
    assert_eq!(read.send().await.unwrap().status(), 200, "read it back");

    let r = env
        .run(&[
            "admin",
            "partner",
            "update",
            &partner_id,
            "--permissions",
            "patients:read",
        ])
        .await;
    r.expect_ok();
    quiet.push(r);
    let r = s.create_patient(&t1, &patient_body("MRN-OP-2")).await;
    assert_eq!(
        r.status(),
        403,
        "without patients:create the next POST with the same token is 403"
    );
    assert_eq!(
        s.get(&t1, &patient_path).await.status(),
        200,
        "patients:read still reads"
    );

    let r = env
        .run(&["admin", "partner", "update", &partner_id, "--clients", "C2"])
        .await;
    r.expect_ok();
    quiet.push(r);
    assert_eq!(
        s.get(&t1, &patient_path).await.status(),
        404,
        "a patient of C1 is out of scope at once after --clients C2"
    );
    assert_eq!(
        s.get(&t1, "/v1/patients").await.status(),
        200,
        "the token still works before the rotation"
    );

    let rotate = env
        .run(&["admin", "partner", "rotate-secret", &partner_id, "--json"])
        .await;
    let fresh = rotate.expect_ok().json();
    let new_secret = fresh["client_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("client_secret: {fresh}"))
        .to_string();
    assert_ne!(new_secret, secret, "a new secret");
    assert_eq!(fresh["client_id"], client_id.as_str(), "{fresh}");
    assert_eq!(fresh["partnerID"], partner_id.as_str(), "{fresh}");
    assert!(
        !rotate.stdout.contains(&secret) && !rotate.stderr.contains(&secret),
        "rotate-secret does not show the old secret: {rotate:#?}"
    );
    assert!(
        !rotate.stderr.contains(&new_secret),
        "the new secret is not on stderr: {rotate:#?}"
    );
    let new_hash: String = {
        let db = s.write.get().await.expect("db");
        db.query_one(
            "SELECT secret_hash FROM partners WHERE partner_id = $1",
            &[&Uuid::parse_str(&partner_id).unwrap()],
        )
        .await
        .expect("the partner's row")
        .get(0)
    };
    assert_bearer_401(
        "a token issued before the rotation",
        &s.get(&t1, "/v1/patients").await,
    );
    assert_invalid_client(
        "the secret before the rotation",
        &token_request(&s.http, &s.base, &client_id, &secret).await,
    );
    let t2 = token(&s.http, &s.base, &client_id, &new_secret).await;
    assert_eq!(
        s.get(&t2, "/v1/patients").await.status(),
        200,
        "a token of the new secret works"
    );

    let r = env.run(&["admin", "partner", "disable", &partner_id]).await;
    r.expect_ok();
    quiet.push(r);
    assert_bearer_401(
        "a fresh token of a disabled partner",
        &s.get(&t2, "/v1/patients").await,
    );
    assert_invalid_client(
        "a disabled partner at /oauth/token",
        &token_request(&s.http, &s.base, &client_id, &new_secret).await,
    );
    let r = env
        .run(&["admin", "partner", "show", &partner_id, "--json"])
        .await;
    assert_eq!(r.expect_ok().json()["disabled"], true, "{r:#?}");
    quiet.push(r);

    // 4. Operator actions are events, without secrets.
    let db = s.write.get().await.expect("db");
    let rows = db
        .query(
            "SELECT event_type, actor, data::text FROM events WHERE stream_id = $1 ORDER BY version",
            &[&Uuid::parse_str(&partner_id).unwrap()],
        )
        .await
        .expect("events");
    let types: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        types,
        [
            "PartnerRegistered",
            "PartnerAccessChanged",
            "PartnerAccessChanged",
            "PartnerSecretRotated",
            "PartnerDisabled"
        ],
        "the partner's stream"
    );
    for row in &rows {
        let event_type: String = row.get(0);
        let actor: Value = row.get(1);
        let data: String = row.get(2);
        assert_eq!(actor["type"], "operator", "{event_type}: actor {actor}");
        assert!(
            actor["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{event_type}: the actor names the operator: {actor}"
        );
        for s in [&secret, &new_secret, &hash, &new_hash] {
            assert!(!data.contains(s.as_str()), "{event_type} holds a secret");
        }
    }
    drop(db);
    for (what, needle) in [
        ("the first secret", &secret),
        ("the rotated secret", &new_secret),
        ("the first hash", &hash),
        ("the rotated hash", &new_hash),
    ] {
        assert_eq!(
            events_containing(&s, needle).await,
            0,
            "no event holds {what}"
        );
    }
    for r in &quiet {
        for (what, needle) in [("secret", &secret), ("rotated secret", &new_secret)] {
            assert!(
                !r.stdout.contains(needle.as_str()) && !r.stderr.contains(needle.as_str()),
                "`lis {}` printed the {what}: {r:#?}",
                r.args.join(" ")
            );
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_bad_input_is_refused_clearly() {
    let s = TestStack::start().await;
    let env = Env::of(&s);
    env.run(CREATE_C1).await.expect_ok();
    let events = s.event_count(None).await;

    let r = env
        .run(&partner_create(
            "EHR",
            "patients:read,patients:fly",
            "C1",
            &[],
        ))
        .await;
    r.expect_refused();
    assert!(
        r.stderr.contains("patients:fly"),
        "the refusal names the unknown permission: {r:#?}"
    );

    let r = env
        .run(&partner_create("EHR", "patients:read", "C1,bad/id", &[]))
        .await;
    r.expect_refused();
    assert!(
        r.stderr.contains("bad/id") || r.stderr.contains("clients"),
        "the refusal names the bad client id: {r:#?}"
    );
    assert_eq!(partner_count(&s).await, 0, "no partner from bad input");
    assert_eq!(s.event_count(None).await, events, "no event from bad input");

    // The same checks on update, against an existing partner.
    let created = env
        .run(&partner_create("EHR", "patients:read", "C1", &["--json"]))
        .await;
    let id = created.expect_ok().json()["partnerID"]
        .as_str()
        .expect("partnerID")
        .to_string();
    let events = s.event_count(None).await;
    let r = env
        .run(&[
            "admin",
            "partner",
            "update",
            &id,
            "--permissions",
            "patients:fly",
        ])
        .await;
    r.expect_refused();
    assert!(r.stderr.contains("patients:fly"), "{r:#?}");
    let r = env
        .run(&["admin", "partner", "update", &id, "--clients", "C 1"])
        .await;
    r.expect_refused();
    assert_eq!(
        s.event_count(None).await,
        events,
        "a refused update appends nothing"
    );

    let unknown = Uuid::new_v4().to_string();
    for args in [
        vec!["admin", "partner", "show", unknown.as_str()],
        vec!["admin", "partner", "show", unknown.as_str(), "--json"],
        vec!["admin", "partner", "disable", unknown.as_str()],
        vec!["admin", "partner", "rotate-secret", unknown.as_str()],
    ] {
        let r = env.run(&args).await;
        r.expect_refused();
        assert!(
            r.stderr.contains("no partner"),
            "`lis {}` says there is no partner: {r:#?}",
            args.join(" ")
        );
    }
    assert_eq!(
        s.event_count(None).await,
        events,
        "nothing about an unknown partner"
    );
    // Postgres unreachable: a clear message, quickly, no panic.
    let down = env.with("LIS_DATABASE_URL", "postgres://postgres@127.0.0.1:1/x");
    for args in [
        &["admin", "client", "list"][..],
        &["admin", "partner", "list", "--json"][..],
    ] {
        let r = down.run_within(Duration::from_secs(30), args).await;
        r.expect_refused();
        assert!(
            r.stderr.contains("Postgres"),
            "`lis {}` names Postgres: {r:#?}",
            args.join(" ")
        );
        assert!(
            r.elapsed < Duration::from_secs(15),
            "`lis {}` gives up quickly: {:?}",
            args.join(" "),
            r.elapsed
        );
        assert!(r.stdout.trim().is_empty(), "{r:#?}");
    }
    s.stop().await;
}

/// The JSON on stdout of a run, skipping anything printed before it.
fn json_part(run: &Run) -> (Value, String) {
    let at = run
        .stdout
        .find("\n{")
        .map(|i| i + 1)
        .filter(|_| !run.stdout.starts_with('{'))
        .unwrap_or(0);
    let v = serde_json::from_str(&run.stdout[at..]).unwrap_or_else(|e| {
        panic!(
            "`lis {}` did not print JSON ({e}): {run:#?}",
            run.args.join(" ")
        )
    });
    (v, run.stdout[..at].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_json_is_clean_and_logs_hold_no_secret() {
    let s = TestStack::start().await;
    let env = Env::of(&s);
    env.run(CREATE_C1).await.expect_ok();
    // As an operator runs it: LIS_LOG unset (its default), and verbose.
    let default_log = Env(env
        .0
        .iter()
        .filter(|(k, _)| *k != "LIS_LOG")
        .cloned()
        .collect());
    let verbose = env.clone().with("LIS_LOG", "debug");
    let mut runs = Vec::new();
    for (label, e) in [("LIS_LOG unset", &default_log), ("LIS_LOG=debug", &verbose)] {
        let created = e
            .run(&partner_create(
                "Verbose",
                "patients:read",
                "C1",
                &["--json"],
            ))
            .await;
        created.expect_ok();
        let (creds, before) = json_part(&created);
        let id = creds["partnerID"].as_str().expect("partnerID").to_string();
        let first = creds["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_string();
        assert!(
            !created.stderr.contains(&first) && !before.contains(&first),
            "{label}: a log line shows the secret: {created:#?}"
        );
        let mut secrets = vec![first];
        let mut actions = vec![created];
        for args in [
            vec![
                "admin",
                "partner",
                "update",
                id.as_str(),
                "--clients",
                "*",
                "--json",
            ],
            vec!["admin", "partner", "rotate-secret", id.as_str(), "--json"],
            vec!["admin", "partner", "disable", id.as_str(), "--json"],
        ] {
            let r = e.run(&args).await;
            r.expect_ok();
            let (v, before) = json_part(&r);
            for secret in &secrets {
                assert!(
                    !r.stdout.contains(secret.as_str()) && !r.stderr.contains(secret.as_str()),
                    "{label}: `lis {}` shows an earlier secret: {r:#?}",
                    args.join(" ")
                );
            }
            if let Some(fresh) = v["client_secret"].as_str() {
                assert!(
                    !r.stderr.contains(fresh) && !before.contains(fresh),
                    "{label}: a log line shows the new secret: {r:#?}"
                );
                secrets.push(fresh.to_string());
            }
            actions.push(r);
        }
        for secret in &secrets {
            assert_eq!(
                events_containing(&s, secret).await,
                0,
                "{label}: no event holds a secret"
            );
        }
        runs.extend(actions.into_iter().map(|r| (label, r)));
    }
    // Last, so that the checks above run whatever this finds: with `--json`
    // stdout is the JSON alone; log lines belong on stderr.
    for (label, r) in &runs {
        assert!(
            serde_json::from_str::<Value>(&r.stdout).is_ok(),
            "{label}: `lis {}` mixes log lines into its JSON on stdout: {r:#?}",
            r.args.join(" ")
        );
    }
    s.stop().await;
}

/// Runs `lis down` with the environment of `lis up` when dropped, so that no
/// process of the test outlives it.
struct Down {
    env: Env,
    dir: PathBuf,
    done: bool,
}

impl Drop for Down {
    fn drop(&mut self) {
        if self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        match self.env.command(&["down"]).output() {
            Ok(o) if o.status.success() => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Ok(o) => eprintln!(
                "lis down failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("cannot run lis down: {e}"),
        }
    }
}

/// The base URL and credentials file `lis up` printed.
fn up_output(run: &Run, base: &str) -> PathBuf {
    assert!(
        run.stdout.contains(base),
        "`lis up` prints the base URL {base}: {run:#?}"
    );
    let files: Vec<PathBuf> = run
        .stdout
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| {
            p.is_file()
                && std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .is_some_and(|v| v["client_secret"].is_string())
        })
        .collect();
    assert_eq!(
        files.len(),
        1,
        "`lis up` prints the path of the credentials file: {run:#?}"
    );
    files.into_iter().next().unwrap()
}

/// A `lis up` stack of a test's own: its database, topics, port and data
/// directory, and the guard that takes it down.
struct UpStack {
    env: Env,
    base: String,
    port: u16,
    dir: PathBuf,
    database_url: String,
    guard: Down,
}

impl UpStack {
    fn new() -> UpStack {
        let cfg = test_config();
        let database_url = format!("{}_up", cfg.database_url);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("lis-up-{}", Uuid::new_v4().simple()));
        let env = Env(vec![
            ("LIS_DATABASE_URL", database_url.clone()),
            ("LIS_KAFKA_BROKERS", cfg.kafka_brokers.clone()),
            ("LIS_TOPIC_PREFIX", format!("{}up.", cfg.topic_prefix)),
            ("LIS_KAFKA_PARTITIONS", "3".into()),
            ("LIS_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("LIS_DATA_DIR", dir.display().to_string()),
            // Verbose, so that the check of the logs for the secret means something.
            ("LIS_LOG", "info".into()),
        ]);
        UpStack {
            guard: Down {
                env: env.clone(),
                dir: dir.clone(),
                done: false,
            },
            base: format!("http://127.0.0.1:{port}"),
            env,
            port,
            dir,
            database_url,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lis_up_is_idempotent_and_lis_down_stops_it() {
    let UpStack {
        env,
        base,
        dir,
        database_url,
        mut guard,
        ..
    } = UpStack::new();
    let http = reqwest::Client::new();
    let limit = Duration::from_secs(180);

    let first = env.run_within(limit, &["up"]).await;
    first.expect_ok();
    let file = up_output(&first, &base);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the credentials file is readable only by the operator"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let demo: Value = serde_json::from_str(&text).unwrap();
    let (id, secret) = (
        demo["client_id"].as_str().expect("client_id"),
        demo["client_secret"].as_str().expect("client_secret"),
    );
    let t = token(&http, &base, id, secret).await;
    let r = http
        .get(format!("{base}/v1/patients"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the demo partner reads patients");

    let second = env.run_within(limit, &["up"]).await;
    second.expect_ok();
    assert_eq!(
        up_output(&second, &base),
        file,
        "the second run prints the same file"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "the second run leaves the credentials as they were"
    );
    token(&http, &base, id, secret).await;

    // The services' logs never show the demo secret.
    for entry in std::fs::read_dir(dir.join("logs")).into_iter().flatten() {
        let path = entry.unwrap().path();
        let log = std::fs::read(&path).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&log).contains(secret),
            "{} shows the demo secret",
            path.display()
        );
    }
    for run in [&first, &second] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "`lis up` prints the secret instead of the file: {run:#?}"
        );
    }

    let pool = platform::db::pool(&database_url, "es", 1).expect("pool");
    {
        let db = pool.get().await.expect("the database lis up made");
        let count = |sql: &'static str| {
            let db = &db;
            async move { db.query_one(sql, &[]).await.expect(sql).get::<_, i64>(0) }
        };
        assert_eq!(count("SELECT count(*) FROM clients").await, 1, "one client");
        assert_eq!(
            count("SELECT count(*) FROM clients WHERE client_id = 'DEMO'").await,
            1,
            "the client is DEMO"
        );
        assert_eq!(
            count("SELECT count(*) FROM locations").await,
            1,
            "one location"
        );
        assert_eq!(
            count("SELECT count(*) FROM partners").await,
            1,
            "one partner"
        );
    }
    drop(pool);

    let down = env.run_within(Duration::from_secs(60), &["down"]).await;
    down.expect_ok();
    guard.done = true;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = http
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if answer.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the services still answer after `lis down`: {down:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The key id a token's header names.
fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a key id")
}

/// Whether a client library verifies `token` with the JWKS `set` alone.
fn verifies(token: &str, set: &Value) -> bool {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(set.clone()).expect("a JWKS");
    let Some(jwk) = set.find(&kid_of(token)) else {
        return false;
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["lis-partner-api"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("an Ed25519 JWK");
    jsonwebtoken::decode::<Value>(token, &key, &v).is_ok()
}

/// The JWKS a process at `base` publishes.
async fn jwks(base: &str) -> Value {
    let r = reqwest::get(format!("{base}/.well-known/jwks.json"))
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(
        tests::header(&r, "content-type"),
        "application/jwk-set+json"
    );
    r.json().await.expect("JSON")
}

/// The status of a patient read at `base` with `token`.
async fn read_at(base: &str, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Partner tokens are Ed25519 JWTs verified against published keys: a
/// process that serves reads runs without the private key and verifies
/// them, every API process serves the keys as a JWKS that a client library
/// verifies with, and `lis admin token-key rotate` switches the signing key
/// without a restart while the old key's tokens stay valid until they
/// expire (then they are refused).
#[tokio::test(flavor = "multi_thread")]
async fn tokens_verify_on_every_process_and_survive_a_key_rotation() {
    let s = TestStack::start().await;
    let (p, old) = s.standard().await;
    let env = Env::of(&s).with(
        "LIS_TOKEN_KEY_FILE",
        s.cfg.token_key_file.display().to_string(),
    );
    let set = jwks(&s.base).await;
    let keys = set["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{set}");
    assert_eq!(
        (&keys[0]["kty"], &keys[0]["crv"], &keys[0]["alg"]),
        (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA"))
    );
    assert!(keys[0].get("d").is_none(), "no private part: {set}");
    assert!(verifies(&old, &set), "the JWKS verifies the stack's token");
    let created = s.create_patient(&old, &patient_body("JWKS-1")).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/patients/{id}");
    wait_readable(&s, &old, &path).await;
    // A token's claims are remembered after its first check, never past
    // its expiry.
    let perms = domain::access::parse_permissions(tests::SIX).unwrap();
    let brief = s.signer.issue(p.id, 1, &perms, Duration::from_secs(2));
    assert_eq!(read_at(&s.base, &path, &brief).await, 200);
    let expiry =
        jsonwebtoken::decode::<Value>(&brief, &jsonwebtoken::DecodingKey::from_secret(b""), &{
            let mut v = jsonwebtoken::Validation::default();
            v.insecure_disable_signature_validation();
            v.validate_aud = false;
            v
        })
        .unwrap()
        .claims["exp"]
            .as_i64()
            .unwrap();
    while chrono::Utc::now().timestamp() <= expiry {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_at(&s.base, &path, &brief).await, 401, "expired");

    // A reads-only process without the private key: it verifies tokens,
    // publishes the same keys, and has no token endpoint.
    let no_key = [("LIS_TOKEN_KEY_FILE", "/nonexistent/token-signing.key")];
    let reader = s.spawn_process_with("query-api", &no_key).await;
    assert_eq!(read_at(&reader.base, &path, &old).await, 200);
    assert_eq!(jwks(&reader.base).await, set);
    let mint = reqwest::Client::new()
        .post(format!("{}/oauth/token", reader.base))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(mint.status(), 404, "a verifying process cannot mint");

    // Rotation, without a restart.
    env.run(&["admin", "token-key", "rotate"]).await.expect_ok();
    let new = s.token(&p).await;
    assert_ne!(kid_of(&new), kid_of(&old), "new tokens use the new key");
    for base in [&s.base, &reader.base] {
        assert_eq!(read_at(base, &path, &new).await, 200, "the new key's token");
        assert_eq!(
            read_at(base, &path, &old).await,
            200,
            "the old key's token stays valid until it expires"
        );
    }
    let set = jwks(&reader.base).await;
    assert_eq!(set["keys"].as_array().unwrap().len(), 2, "{set}");
    assert!(verifies(&old, &set) && verifies(&new, &set));
    let listed = env.run(&["admin", "token-key", "list"]).await;
    listed.expect_ok();
    for t in [&old, &new] {
        assert!(listed.stdout.contains(&kid_of(t)), "{listed:#?}");
    }

    // Once every token the old key signed has expired, it verifies nothing.
    s.write
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE token_keys SET retired_at = now() - interval '1 day' WHERE kid = $1",
            &[&kid_of(&old)],
        )
        .await
        .unwrap();
    let later = s.spawn_process_with("query-api", &no_key).await;
    assert_eq!(read_at(&later.base, &path, &old).await, 401);
    assert_eq!(read_at(&later.base, &path, &new).await, 200);
    assert!(!verifies(&old, &jwks(&later.base).await));
    drop((reader, later));
    s.stop().await;
}

/// Waits until the patient at `path` is readable.
async fn wait_readable(s: &TestStack, token: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get(token, path).await.status() != 200 {
        assert!(Instant::now() < deadline, "{path} not readable in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The socket inodes of the TCP sockets listening on `port` (IPv4).
fn listening_on(port: u16) -> BTreeSet<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let listening = cols.get(3)? == &"0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| cols.get(9).map(|s| s.to_string()))
                .flatten()
        })
        .collect()
}

/// Whether process `pid` holds one of the sockets `inodes`.
fn holds_socket(pid: i32, inodes: &BTreeSet<String>) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .any(|inode| inodes.contains(&inode))
}

/// `lis up --replicas 2`: two API processes listen on the one base URL's
/// port (the kernel spreads connections over them) beside one process of
/// the other roles; a write is readable with its Consistency-Token
/// whichever process answers; one API process killed, the base URL still
/// serves; `lis down` stops every process.
#[tokio::test(flavor = "multi_thread")]
async fn lis_up_with_replicas_serves_one_base_url_from_several_processes() {
    let UpStack {
        env,
        base,
        port,
        dir,
        mut guard,
        ..
    } = UpStack::new();
    let up = env
        .run_within(Duration::from_secs(180), &["up", "--replicas", "2"])
        .await;
    up.expect_ok();
    assert!(up.stdout.contains("API processes:        2"), "{up:#?}");
    let file = up_output(&up, &base);
    let pids: Vec<i32> = std::fs::read_to_string(dir.join("services.pid"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "one process of the other roles, two of the API"
    );
    let listening = listening_on(port);
    assert_eq!(listening.len(), 2, "two sockets listen on {port}");
    let api: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| holds_socket(*p, &listening))
        .collect();
    assert_eq!(api.len(), 2, "each API process holds one of them");

    // Read-your-writes, on a new connection for every request.
    let demo: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let t = token(
        &fresh(),
        &base,
        demo["client_id"].as_str().unwrap(),
        demo["client_secret"].as_str().unwrap(),
    )
    .await;
    let read_own_write = |n: usize| {
        let (base, t) = (base.clone(), t.clone());
        async move {
            let body = json!({"externalPatientID": format!("RYW-{n}"), "clientID": "DEMO",
                "locationID": "DEMO-MAIN", "firstName": "Read", "lastName": "Own",
                "dateOfBirth": "1980-01-01", "sex": "unknown"});
            let r = fresh()
                .post(format!("{base}/v1/patients"))
                .bearer_auth(&t)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let ct = tests::header(&r, "consistency-token");
            let id = r.json::<Value>().await.unwrap()["patientID"]
                .as_str()
                .unwrap()
                .to_string();
            let read = fresh()
                .get(format!("{base}/v1/patients/{id}"))
                .bearer_auth(&t)
                .header("Consistency-Token", ct)
                .send()
                .await
                .unwrap();
            assert_eq!(read.status(), 200, "write {n} read back with its token");
        }
    };
    for n in 0..20 {
        read_own_write(n).await;
    }

    // One API process dies: the base URL still serves.
    // SAFETY: a plain signal to a process `lis up` started for this test.
    unsafe { libc::kill(api[0], libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 20..30 {
        read_own_write(n).await;
    }

    env.run_within(Duration::from_secs(60), &["down"])
        .await
        .expect_ok();
    guard.done = true;
    for pid in pids {
        // Gone, or a zombie its parent has not reaped yet.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'));
        assert!(!running, "`lis down` stopped {pid}");
    }
}
