//! Test harness: a whole LIS stack per test, on a fresh Postgres database and
//! a fresh set of topics of the real broker (`LIS_KAFKA_BROKERS`), reached
//! only through its public interfaces (HTTP, the admin functions the `lis`
//! command uses, and Kafka).

use std::collections::BTreeSet;
use std::time::Duration;

use command_handler::admin;
use domain::access::{Actor, IdSet, Permission, Scope};
use lis::stack::{Roles, Shutdown};
use platform::config::Config;
use platform::envelope::Envelope;
use platform::kafka::Topic;
use platform::token::TokenSigner;
use rand::RngCore;
use serde_json::Value;
use uuid::Uuid;

pub mod checks;
pub mod portal;
pub mod smtp;

/// Every permission of the partner documentation.
pub const SIX: &str =
    "patients:create,patients:read,patients:update,tests:create,tests:read,tests:update";

/// A running stack of one test.
pub struct TestStack {
    /// Its configuration (database, schemas, topic prefix).
    pub cfg: Config,
    /// Base URL of the partner API.
    pub base: String,
    /// The token signing key (in `cfg.token_key_file`, published).
    pub signer: TokenSigner,
    /// Pool on the write schema (for assertions on the event store).
    pub write: deadpool_postgres::Pool,
    /// Pool on the read schema.
    pub read: deadpool_postgres::Pool,
    /// HTTP client.
    pub http: reqwest::Client,
    fire: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The value of a header the response must have.
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// A partner created for a test.
#[derive(Debug, Clone)]
pub struct TestPartner {
    /// Partner id.
    pub id: Uuid,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub secret: String,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The Postgres the tests use (`LIS_TEST_DATABASE_URL`), on its default
/// database; each stack makes a database of its own beside it.
pub fn database_url() -> String {
    std::env::var("LIS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The configuration of a fresh, isolated stack.
pub fn test_config() -> Config {
    let mut cfg = Config::from_env().expect("LIS_* settings");
    let id = random_hex(6);
    let base_url = database_url();
    let (prefix, _) = base_url.rsplit_once('/').expect("a database URL");
    cfg.database_url = format!("{prefix}/lis_t_{id}");
    cfg.topic_prefix = format!("t{id}.");
    cfg.kafka_partitions = 3;
    cfg.token_rate_per_minute = 10_000;
    cfg.http_addr = "127.0.0.1:0".parse().expect("addr");
    let keys = std::env::temp_dir().join(format!("lis-test-keys-{id}"));
    cfg.chain_key_file = keys.join("chain-signing.key");
    cfg.token_key_file = keys.join("token-signing.key");
    cfg.analytics_key_file = keys.join("analytics-pseudonym.key");
    cfg
}

impl TestStack {
    /// Starts every role.
    pub async fn start() -> TestStack {
        Self::start_with(test_config(), Roles::ALL).await
    }

    /// Prepares the database and topics of `cfg` and starts `roles`.
    pub async fn start_with(cfg: Config, roles: Roles) -> TestStack {
        platform::telemetry::init(&std::env::var("LIS_TEST_LOG").unwrap_or_else(|_| "warn".into()));
        platform::db::ensure_database(&cfg.database_url)
            .await
            .expect("database");
        platform::db::migrate(
            &cfg.database_url,
            &cfg.write_schema,
            command_handler::migrations(),
        )
        .await
        .expect("write migrations");
        platform::db::migrate(&cfg.database_url, &cfg.read_schema, projector::migrations())
            .await
            .expect("read migrations");
        platform::kafka::ensure_topics(&cfg)
            .await
            .expect("topics (is LIS_KAFKA_BROKERS up?)");
        platform::chain::ChainKey::create_file(&cfg.chain_key_file).expect("chain key");
        platform::keyfile::create(&cfg.analytics_key_file, platform::pseudonym::ANALYTICS_KEY)
            .expect("analytics key");
        TokenSigner::create_file(&cfg.token_key_file).expect("token key");
        let signer = TokenSigner::load(&cfg.token_key_file).expect("token key");
        let write = platform::db::pool(&cfg.database_url, &cfg.write_schema, 4).expect("pool");
        // Published now, so that tokens a test makes by hand verify before
        // the stack has minted one.
        platform::token::publish(&**write.get().await.expect("db"), signer.public())
            .await
            .expect("publish the token key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (fire, shutdown) = Shutdown::new();
        let c = cfg.clone();
        let task = tokio::spawn(async move {
            lis::stack::serve(c, Some(listener), roles, shutdown)
                .await
                .expect("stack runs");
        });
        TestStack {
            write,
            read: platform::db::pool(&cfg.database_url, &cfg.read_schema, 4).expect("pool"),
            http: reqwest::Client::new(),
            cfg,
            base,
            signer,
            fire,
            task,
        }
    }

    /// Stops every role, waiting for in-flight work to finish.
    pub async fn stop(self) {
        let _ = self.fire.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }

    /// The operator.
    pub fn operator() -> Actor {
        Actor::Operator {
            id: "test-operator".into(),
        }
    }

    /// Creates a client and a location of it.
    pub async fn client_with_location(&self, client: &str, location: &str) {
        admin::create_client(
            &self.write,
            &Self::operator(),
            client,
            &format!("Client {client}"),
        )
        .await
        .expect("client");
        self.location(client, location).await;
    }

    /// Creates a location of an existing client.
    pub async fn location(&self, client: &str, location: &str) {
        admin::create_location(
            &self.write,
            &Self::operator(),
            location,
            client,
            &format!("Site {location}"),
        )
        .await
        .expect("location");
    }

    /// Creates a partner with the given permissions and scope.
    pub async fn partner(&self, permissions: &str, clients: &str, locations: &str) -> TestPartner {
        let perms: BTreeSet<Permission> =
            domain::access::parse_permissions(permissions).expect("permissions");
        let scope = Scope {
            clients: IdSet::parse(clients).expect("clients"),
            locations: IdSet::parse(locations).expect("locations"),
        };
        let c = admin::create_partner(&self.write, &Self::operator(), "Test partner", perms, scope)
            .await
            .expect("partner");
        TestPartner {
            id: c.partner_id,
            client_id: c.client_id,
            secret: c.client_secret,
        }
    }

    /// Obtains an access token through `POST /oauth/token`.
    pub async fn token(&self, p: &TestPartner) -> String {
        let r = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", p.client_id.as_str()),
                ("client_secret", p.secret.as_str()),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(r.status(), 200, "token for {}", p.client_id);
        let v: Value = r.json().await.expect("json");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// A standard stack setup: client C1 with locations L1 and L2, client C2
    /// with L3, and a partner with the six permissions over everything.
    pub async fn standard(&self) -> (TestPartner, String) {
        self.client_with_location("C1", "L1").await;
        self.location("C1", "L2").await;
        self.client_with_location("C2", "L3").await;
        let p = self.partner(SIX, "*", "*").await;
        let t = self.token(&p).await;
        (p, t)
    }

    /// `POST /v1/patients` with a JSON body.
    pub async fn create_patient(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/patients", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `GET` a path with a token.
    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// `GET` a path without credentials.
    pub async fn get_public(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    /// `GET` a path with a token and a `Consistency-Token` (read-your-writes).
    pub async fn get_consistent(&self, token: &str, path: &str, ct: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("Consistency-Token", ct)
            .send()
            .await
            .expect("request")
    }

    /// `PATCH` a path with a JSON merge-patch body, and `If-Match` if given.
    pub async fn patch(
        &self,
        token: &str,
        path: &str,
        if_match: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .patch(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/merge-patch+json");
        if let Some(version) = if_match {
            req = req.header("If-Match", version);
        }
        req.body(body.to_string()).send().await.expect("request")
    }

    /// Counts the events in the event store, optionally of one stream.
    pub async fn event_count(&self, stream: Option<Uuid>) -> i64 {
        let db = self.write.get().await.expect("db");
        db.query_one(
            "SELECT count(*) FROM events WHERE $1::uuid IS NULL OR stream_id = $1",
            &[&stream],
        )
        .await
        .expect("count")
        .get(0)
    }

    /// Reads every record of a topic from offset 0 up to its current end.
    pub async fn read_topic(&self, topic: Topic) -> Vec<Record> {
        read_topic(&self.cfg, topic).await
    }

    /// Waits until the topic holds at least `n` records, then reads them.
    pub async fn wait_topic(&self, topic: Topic, n: usize) -> Vec<Record> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let recs = self.read_topic(topic).await;
            if recs.len() >= n || std::time::Instant::now() > deadline {
                return recs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The body of an answer that must have `status`, as JSON (`Null` when it is
/// not JSON); the assertion shows the body.
pub async fn json_of(r: reqwest::Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The `field` of every entry of a problem's `errors`, in order.
pub fn error_fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

/// A base patient body for client C1 at L1.
pub fn patient_body(external: &str) -> Value {
    serde_json::json!({
        "externalPatientID": external,
        "clientID": "C1",
        "locationID": "L1",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "dateOfBirth": "1990-12-10",
        "sex": "female",
    })
}

/// One record read from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: String,
    /// Headers as strings.
    pub headers: Vec<(String, String)>,
    /// The raw JSON body.
    pub json: Value,
    /// The parsed envelope.
    pub envelope: Envelope,
}

/// Reads every record of a topic of `cfg` from offset 0 to its current end.
pub async fn read_topic(cfg: &Config, topic: Topic) -> Vec<Record> {
    let cfg = cfg.clone();
    let records = tokio::task::spawn_blocking(move || {
        platform::kafka::read_from_start(&cfg, &[topic], Duration::from_secs(60))
    })
    .await
    .expect("reader")
    .expect("read the topic");
    records
        .into_iter()
        .map(|r| {
            let json: Value = serde_json::from_slice(&r.payload).expect("json body");
            Record {
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                headers: r.headers,
                envelope: serde_json::from_value(json.clone()).expect("envelope"),
                json,
            }
        })
        .collect()
}

/// A `lis` process started by a test; killed when dropped.
pub struct LisProcess {
    child: std::process::Child,
    /// Its partner API base URL.
    pub base: String,
    dir: std::path::PathBuf,
}

impl LisProcess {
    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default();
        out.push_str(&std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default());
        out
    }

    /// Kills the process with SIGKILL (no chance to finish anything) and
    /// waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the process with SIGSTOP (it keeps its connections but runs
    /// nothing until [`LisProcess::resume`]).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a plain signal to the child this struct owns.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("wait")
    }
}

impl Drop for LisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `lis` binary built by `cargo build -p lis` (the test script builds it).
pub fn lis_binary() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/lis");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p lis` first (scripts/test does)",
        bin.display()
    );
    bin
}

impl TestStack {
    /// Starts `lis serve --roles <roles>` as its own process on this stack's
    /// database, topics and signing key, and waits until it answers (when
    /// its roles serve HTTP).
    pub async fn spawn_process(&self, roles: &str) -> LisProcess {
        self.spawn_process_with(roles, &[]).await
    }

    /// Like [`TestStack::spawn_process`], with extra environment (for example
    /// `LIS_LOG`) and the process's output captured in [`LisProcess::log`].
    pub async fn spawn_process_with(&self, roles: &str, env: &[(&str, &str)]) -> LisProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("lis-test-{}", random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new(lis_binary())
            .args(["serve", "--roles", roles])
            .env("LIS_DATABASE_URL", &self.cfg.database_url)
            .env("LIS_KAFKA_BROKERS", &self.cfg.kafka_brokers)
            .env("LIS_TOPIC_PREFIX", &self.cfg.topic_prefix)
            .env(
                "LIS_KAFKA_PARTITIONS",
                self.cfg.kafka_partitions.to_string(),
            )
            .env("LIS_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LIS_TOKEN_KEY_FILE", &self.cfg.token_key_file)
            .env("LIS_CHAIN_KEY_FILE", &self.cfg.chain_key_file)
            .env("LIS_ANALYTICS_KEY_FILE", &self.cfg.analytics_key_file)
            .env("LIS_TOKEN_RATE_PER_MINUTE", "10000")
            .env("LIS_DATA_DIR", &dir)
            .env("LIS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(dir.join("out.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("err.log")).unwrap())
            .spawn()
            .expect("start lis");
        let base = format!("http://127.0.0.1:{port}");
        let proc = LisProcess { child, base, dir };
        if !Roles::parse(roles).expect("roles").http() {
            return proc;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", proc.base)).send().await {
                if r.status().is_success() {
                    return proc;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lis serve did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A Kafka-compatible broker of a test's own (tansu with sqlite storage in a
/// temporary directory, on a free loopback port), for tests that kill and
/// restart the broker. Killed and removed when dropped.
pub struct PrivateBroker {
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
    /// Its loopback port.
    pub port: u16,
}

impl PrivateBroker {
    /// Starts the broker named by `LIS_TEST_TANSU` (set by `scripts/test`),
    /// else `tansu` on the PATH, and waits until it accepts connections.
    pub fn start() -> PrivateBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("lis-broker-{}", random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = PrivateBroker {
            child: None,
            dir,
            port,
        };
        broker.restart();
        broker
    }

    /// `host:port` for `LIS_KAFKA_BROKERS`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL (no chance to flush anything).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        let bin = std::env::var("LIS_TEST_TANSU").unwrap_or_else(|_| "tansu".into());
        let child = lis::broker::spawn(
            std::path::Path::new(&bin),
            &self.dir,
            &self.address(),
            &self.dir.join("broker.log"),
        )
        .expect("start tansu (scripts/test installs it)");
        self.child = Some(child);
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
