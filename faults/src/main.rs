//! `lis-faults`: the fault suite, a binary of its own beside `lis` (which
//! it runs as every service).
//!
//! It builds a stack of its own — a private Postgres cluster (`initdb` into a
//! temporary directory, another port), a private broker, and every role as
//! its own `lis serve` process — drives a steady partner load against it,
//! and kills (`SIGKILL`; Postgres: an immediate stop) and restarts one part
//! at a time, then several together. After each fault it waits for the
//! system to converge and checks its promises against the load generator's
//! record of what was acknowledged:
//!
//! - every acknowledged write has exactly its events in the event store, and
//!   no `Idempotency-Key` ever produced two commands;
//! - no event exists for a refused write;
//! - every stored event is on Kafka, each stream in order (a repeated record
//!   after a broker failure is counted, and allowed only as an exact copy);
//! - the read models and their history equal a fresh replay of the log,
//!   and the event store matches its signed hash chain (`lis verify`);
//! - every patient, account and order event reached the de-identified
//!   analytics topic, each record's first copies in order;
//! - in the patient portal, every invited patient got a working link, every
//!   acknowledged activation holds (the password logs in, the link reads as
//!   used), no account was activated twice, and every session a patient
//!   was given still opens their results;
//! - the same write sent again with its `Idempotency-Key` gets the first
//!   answer and adds no event;
//! - during the outage partners got prompt, clear answers: no 5xx other
//!   than 503 with `Retry-After`, nothing hanging beyond the request timeout.
//!
//! The load is a partner's: patient creates (some invalid), patches, order
//! placements with 1-4 tests, order actions and reads; beside it, patients
//! (created with an email by the partner) follow their mailed links,
//! activate, and view their results in the portal.
//!
//! It prints one row per fault and exits non-zero on any loss, duplicate,
//! difference, 500 or hang. Traffic goes to loopback only; the run is bounded
//! in time and seeded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser};
use domain::access::{IdSet, Permission, Scope};
use platform::config::Config;
use platform::envelope::Envelope;
use platform::kafka::Topic;
use portal::client::{Patient, NO_ANSWER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

/// The fault suite: kills and restarts each part of a stack of its own
/// under load and checks every promise after each fault.
#[derive(Parser, Debug)]
#[command(name = "lis-faults", version, about)]
struct Cli {
    #[command(flatten)]
    args: FaultArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    lis::main_of("lis-faults", |cfg| async move { run(&cfg, cli.args).await })
}

/// `lis-faults` options.
#[derive(Args, Debug)]
pub struct FaultArgs {
    /// The CI subset: a few faults, well inside the CI time limit.
    #[arg(long)]
    pub short: bool,
    /// Seed of the load generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Concurrent partner connections of the load generator.
    #[arg(long, default_value_t = 6)]
    pub workers: usize,
    /// Keep the working directory (logs, data) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Run only these faults, in this order, instead of the schedule (a
    /// fault is a part or parts joined by `+`, e.g. `--only relay --only
    /// relay --only broker+relay`); repeat one to chase an intermittent
    /// defect.
    #[arg(long, value_name = "PARTS")]
    pub only: Vec<String>,
    /// Processes of every service (the API roles sharing their port). With
    /// more than one, each fault kills one process of each part it names
    /// (the one at work, for the roles that work alone) and leaves it down
    /// until the fault's checks end: the others must take over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub replicas: u8,
}

/// How long a partner waits for an answer before it counts as a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fault lasts before the part is restarted.
const DOWN_TIME: Duration = Duration::from_secs(3);
/// How long the relay is stalled before it is killed, so that it dies while
/// publishing a backlog rather than idle.
const RELAY_STALL: Duration = Duration::from_secs(1);
/// Longest wait for recovery or convergence after a fault.
const RECOVERY_LIMIT: Duration = Duration::from_secs(90);

/// A part of the stack the suite can kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    CommandHandler,
    QueryApi,
    Portal,
    Relay,
    Projector,
    Analytics,
    Mailer,
    Broker,
    Postgres,
}

impl Part {
    const ALL: [Part; 9] = [
        Part::CommandHandler,
        Part::QueryApi,
        Part::Portal,
        Part::Relay,
        Part::Projector,
        Part::Analytics,
        Part::Mailer,
        Part::Broker,
        Part::Postgres,
    ];

    fn parse(s: &str) -> anyhow::Result<Part> {
        Part::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .with_context(|| {
                let names: Vec<_> = Part::ALL.iter().map(|p| p.name()).collect();
                format!("unknown part {s:?}; parts: {}", names.join(", "))
            })
    }

    fn name(self) -> &'static str {
        match self {
            Part::CommandHandler => "command-handler",
            Part::QueryApi => "query-api",
            Part::Portal => "portal",
            Part::Relay => "relay",
            Part::Projector => "projector",
            Part::Analytics => "analytics",
            Part::Mailer => "mailer",
            Part::Broker => "broker",
            Part::Postgres => "postgres",
        }
    }
}

const SERVICES: [Part; 7] = [
    Part::CommandHandler,
    Part::QueryApi,
    Part::Portal,
    Part::Relay,
    Part::Projector,
    Part::Analytics,
    Part::Mailer,
];

/// The faults, one row each: every part alone, then combinations.
///
/// `--short` (CI) is every part alone. Its private cluster starts with low
/// transaction ids, so the load crosses 1,000 and 10,000 during the run: a
/// relay batch spanning such a boundary once went out of order (the relay
/// sorted transaction ids as text; `tests/tests/relay.rs` keeps that fixed).
///
/// With replicas: one process of every service together, also with the
/// broker and with Postgres (`--short`), after each service alone.
fn schedule(short: bool, replicated: bool) -> Vec<Vec<Part>> {
    use Part::*;
    if replicated {
        let all = SERVICES.to_vec();
        let mut s: Vec<Vec<Part>> = if short {
            Vec::new()
        } else {
            SERVICES.iter().map(|p| vec![*p]).collect()
        };
        s.extend([
            all.clone(),
            [all.clone(), vec![Broker]].concat(),
            [all, vec![Postgres]].concat(),
        ]);
        return s;
    }
    let mut s = vec![
        vec![Relay],
        vec![Projector],
        vec![Analytics],
        vec![CommandHandler],
        vec![QueryApi],
        vec![Portal],
        vec![Mailer],
        vec![Postgres],
        vec![Broker],
    ];
    if !short {
        s.extend([
            vec![Relay, Projector],
            vec![Postgres, CommandHandler],
            vec![Portal, Postgres],
            vec![Broker, Relay],
            vec![Broker, Postgres],
            vec![Mailer, Broker],
            SERVICES.to_vec(),
        ]);
    }
    s
}

/// The schedule, or the faults `--only` names.
fn faults_to_run(args: &FaultArgs) -> anyhow::Result<Vec<Vec<Part>>> {
    if args.only.is_empty() {
        return Ok(schedule(args.short, args.replicas > 1));
    }
    args.only
        .iter()
        .map(|f| f.split('+').map(Part::parse).collect())
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A Postgres server tool: on the PATH, else from Debian's
/// `/usr/lib/postgresql/<version>/bin` (the newest version there).
fn pg_bin(tool: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file());
    let debian = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(tool)))
            .filter(|p| p.is_file())
            .collect();
        found.sort_by_key(|p| {
            p.components()
                .nth(4)
                .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
        });
        found.pop()
    };
    on_path
        .or_else(debian)
        .unwrap_or_else(|| PathBuf::from(tool))
}

/// Runs a Postgres tool, as the `postgres` user when this runs as root
/// (Postgres refuses to run as root).
fn pg_tool(tool: &str, args: &[&str]) -> Command {
    let bin = pg_bin(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

/// A private Postgres cluster.
struct Cluster {
    data: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Cluster {
    fn create(dir: &Path) -> anyhow::Result<Cluster> {
        let data = dir.join("pg");
        std::fs::create_dir_all(&data)?;
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()?
                .success();
            if !ok {
                bail!("cannot give {} to the postgres user", data.display());
            }
        }
        let out = pg_tool(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .output()
        .context("initdb (is PostgreSQL installed?)")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let c = Cluster {
            log: dir.join("pg.log"),
            data,
            port: free_port()?,
        };
        std::fs::write(&c.log, b"")?;
        if is_root() {
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&c.log)
                .status()?;
        }
        Ok(c)
    }

    fn start(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200",
            self.port,
            self.data.display()
        );
        let out = pg_tool(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap_or_default(),
                "-l",
                self.log.to_str().unwrap_or_default(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )
        .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn stop(&self, mode: &str) {
        let _ = pg_tool(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap_or_default(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/lis", self.port)
    }
}

/// Every process of the stack under test.
struct Stack {
    dir: PathBuf,
    cluster: Cluster,
    broker_port: u16,
    broker: Option<Child>,
    /// Each service's processes, by replica index, with the length of its
    /// log when it started (what it logged since tells whether it works).
    services: HashMap<(Part, usize), (Child, u64)>,
    /// Processes of each service.
    replicas: usize,
    /// The replicas a fault killed, to start again once it is over.
    down: Vec<(Part, usize)>,
    ports: HashMap<Part, u16>,
    key_file: PathBuf,
    keep: bool,
}

fn tansu() -> anyhow::Result<PathBuf> {
    lis::up::install_broker()
}

impl Stack {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LIS_DATABASE_URL", self.cluster.url()),
            (
                "LIS_KAFKA_BROKERS",
                format!("127.0.0.1:{}", self.broker_port),
            ),
            ("LIS_TOPIC_PREFIX", String::new()),
            ("LIS_TOKEN_KEY_FILE", self.key_file.display().to_string()),
            ("LIS_TOKEN_RATE_PER_MINUTE", "100000".into()),
            ("LIS_PORTAL_RATE_PER_MINUTE", "100000".into()),
            ("LIS_MAIL_OUTBOX", self.outbox().display().to_string()),
            ("LIS_PUBLIC_URL", self.base(Part::Portal)),
            ("LIS_DATA_DIR", self.dir.display().to_string()),
            (
                "LIS_LOG",
                std::env::var("LIS_FAULTS_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ]
    }

    fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::from_env()?;
        cfg.database_url = self.cluster.url();
        cfg.kafka_brokers = format!("127.0.0.1:{}", self.broker_port);
        cfg.topic_prefix = String::new();
        cfg.write_schema = "es".into();
        cfg.read_schema = "read".into();
        Ok(cfg)
    }

    fn start_broker(&mut self) -> anyhow::Result<()> {
        self.broker = Some(lis::broker::spawn(
            &tansu()?,
            &self.dir.join("broker"),
            &format!("127.0.0.1:{}", self.broker_port),
            &self.dir.join("broker.log"),
        )?);
        Ok(())
    }

    fn log_of(&self, part: Part, replica: usize) -> PathBuf {
        if self.replicas == 1 {
            self.dir.join(format!("{}.log", part.name()))
        } else {
            self.dir.join(format!("{}-{replica}.log", part.name()))
        }
    }

    /// Starts every replica of a service.
    fn start_service(&mut self, part: Part) -> anyhow::Result<()> {
        for replica in 0..self.replicas {
            self.start_replica(part, replica)?;
        }
        Ok(())
    }

    fn start_replica(&mut self, part: Part, replica: usize) -> anyhow::Result<()> {
        let port = self.ports.get(&part).copied();
        let path = self.log_of(part, replica);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let from = log.metadata()?.len();
        let mut cmd = Command::new(self.dir.join("lis"));
        cmd.args(["serve", "--roles", part.name()])
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.replicas > 1 {
            // Which replica holds a lease, for the roles that work alone.
            let level = std::env::var("LIS_FAULTS_SERVICE_LOG").unwrap_or_else(|_| "warn".into());
            cmd.env("LIS_LOG", format!("{level},platform::lease=info"));
            if port.is_some() {
                cmd.arg("--share-port");
            }
        }
        if let Some(p) = port {
            cmd.env("LIS_HTTP_ADDR", format!("127.0.0.1:{p}"));
        }
        let child = cmd.spawn()?;
        self.services.insert((part, replica), (child, from));
        if let Some(p) = port {
            lis::broker::wait_listening(&format!("127.0.0.1:{p}"), Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// The replica of `part` a fault kills: for a role that works alone,
    /// the one whose lease it is (by what each logged since it started),
    /// else the first.
    fn victim(&self, part: Part) -> usize {
        if !matches!(part, Part::Relay | Part::Mailer | Part::Analytics) || self.replicas == 1 {
            return 0;
        }
        (0..self.replicas)
            .find(|r| {
                let Some((_, from)) = self.services.get(&(part, *r)) else {
                    return false;
                };
                let log = std::fs::read(self.log_of(part, *r)).unwrap_or_default();
                let since = String::from_utf8_lossy(log.get(*from as usize..).unwrap_or_default())
                    .into_owned();
                since.matches("took the lease").count() > since.matches("lease was lost").count()
            })
            .unwrap_or(0)
    }

    fn kill(&mut self, part: Part) {
        match part {
            Part::Postgres => self.cluster.stop("immediate"),
            Part::Broker => {
                if let Some(mut b) = self.broker.take() {
                    let _ = b.kill();
                    let _ = b.wait();
                }
            }
            service => {
                let replica = self.victim(service);
                if let Some((mut c, _)) = self.services.remove(&(service, replica)) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                self.down.push((service, replica));
            }
        }
    }

    /// Sends `signal` (`SIGSTOP`, `SIGCONT`) to the process of a service a
    /// fault would kill.
    fn signal(&self, part: Part, signal: libc::c_int) {
        if let Some((c, _)) = self.services.get(&(part, self.victim(part))) {
            // SAFETY: kill(2) on our own child, which is not yet reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, signal) };
        }
    }

    /// Starts again what a fault stopped: Postgres, the broker, or the
    /// killed process of a service.
    fn restart(&mut self, part: Part) -> anyhow::Result<()> {
        match part {
            Part::Postgres => self.cluster.start(),
            Part::Broker => self.start_broker(),
            service => {
                let killed: Vec<usize> = self
                    .down
                    .iter()
                    .filter(|(p, _)| *p == service)
                    .map(|(_, r)| *r)
                    .collect();
                self.down.retain(|(p, _)| *p != service);
                for replica in killed {
                    self.start_replica(service, replica)?;
                }
                Ok(())
            }
        }
    }

    fn base(&self, part: Part) -> String {
        format!("http://127.0.0.1:{}", self.ports[&part])
    }

    /// Where the mailer writes its `.eml` files.
    fn outbox(&self) -> PathBuf {
        self.dir.join("outbox")
    }

    fn shutdown(&mut self) {
        for (_, (mut c, _)) in self.services.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill(Part::Broker);
        self.cluster.stop("fast");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What the load generator did and saw.
#[derive(Default)]
struct Record {
    /// Acknowledged creates (patients and orders): idempotency key -> id.
    created: HashMap<String, Uuid>,
    /// Acknowledged changes (patient patches, order actions): (stream,
    /// version the answer carried).
    patched: Vec<(Uuid, i64)>,
    /// Refused creates (4xx): their external ids.
    refused: Vec<String>,
    /// Acknowledged creates to send again with the same key afterwards:
    /// (key, URL, body, id the first answer carried).
    replays: Vec<(String, String, Value, Uuid)>,
    /// Every answer.
    answers: Vec<Answer>,
    /// Portal patients whose activation was acknowledged, or whose link
    /// read as used after an attempt that got no answer.
    activated: Vec<Activated>,
    /// Portal promises broken during the load: an invitation that never
    /// came, an activation refused or never completed, a session lost.
    portal_broken: usize,
}

/// A portal patient after activation, with the link it used.
struct Activated {
    patient: Patient,
    link: String,
}

/// One answer the load generator got.
struct Answer {
    at: Instant,
    /// HTTP status, 0 for a transport error.
    status: u16,
    /// No answer within [`REQUEST_TIMEOUT`].
    hang: bool,
    /// A 5xx that is not a clear retryable error (503 with Retry-After).
    unclear: bool,
}

impl Answer {
    fn of(r: &Result<reqwest::Response, reqwest::Error>, started: Instant) -> Answer {
        let (status, hang, unclear) = match r {
            Ok(r) => {
                let s = r.status().as_u16();
                let clear = s == 503 && r.headers().contains_key("retry-after");
                (s, false, s >= 500 && !clear)
            }
            Err(e) => (
                0,
                e.is_timeout() && started.elapsed() >= REQUEST_TIMEOUT,
                false,
            ),
        };
        Answer {
            at: Instant::now(),
            status,
            hang,
            unclear,
        }
    }

    /// An answer of the portal to a patient's browser ([`NO_ANSWER`] when
    /// none came): its 503 page with `Retry-After` is its clear "try again
    /// in a moment".
    fn of_page(page: portal::client::Answer, started: Instant) -> Answer {
        Answer {
            at: Instant::now(),
            status: page.status,
            hang: page.status == NO_ANSWER && started.elapsed() >= REQUEST_TIMEOUT,
            unclear: page.status >= 500 && !page.clear_unavailable(),
        }
    }
}

/// Where the load goes, and the partner's token.
#[derive(Clone)]
struct Target {
    commands: String,
    queries: String,
    portal: String,
    outbox: PathBuf,
    token: String,
}

/// Concurrent patients of the portal load.
const PORTAL_WORKERS: usize = 2;
/// The password every portal patient of the suite chooses.
const PORTAL_PASSWORD: &str = "fault suite password";

/// Activates a portal patient's account through the newest link the
/// mailer wrote for it, as a patient would: following the link again after
/// no answer or a 503, and taking a used link after such an attempt as that
/// attempt's success: the link, or `None` when the invitation never came or
/// the activation was refused.
async fn activate(record: &Mutex<Record>, p: &mut Patient, outbox: &Path) -> Option<String> {
    let deadline = Instant::now() + RECOVERY_LIMIT;
    let mut cut_off = false;
    while Instant::now() < deadline {
        let link = portal::client::activation_links(outbox)
            .ok()
            .and_then(|mut links| links.remove(&p.email));
        if let Some(link) = link {
            let started = Instant::now();
            let page = p.activate(&link).await;
            record
                .lock()
                .expect("lock")
                .answers
                .push(Answer::of_page(page, started));
            match page.status {
                303 => return Some(link),
                410 if cut_off => return Some(link),
                // A link the mailer replaced: it sends again, with a new
                // token, after a crash before marking the first sent.
                404 => {}
                s if s == NO_ANSWER || s >= 500 => cut_off = true,
                other => {
                    eprintln!("  a portal activation answered {other}");
                    return None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("  a portal activation did not complete within {RECOVERY_LIMIT:?}");
    None
}

/// Views a signed-in patient's results; a redirect to the login page means
/// the portal lost the session.
async fn view_results(record: &Mutex<Record>, p: &Patient, base: &str) {
    let started = Instant::now();
    let page = p.view(base, "/portal/results").await;
    let mut rec = record.lock().expect("lock");
    rec.answers.push(Answer::of_page(page, started));
    if page.status == 303 {
        rec.portal_broken += 1;
        eprintln!("  a portal session was lost during the load");
    }
}

/// One patient of the portal load at a time: the partner creates it with
/// an email, it activates through the mailed link, and a patient activated
/// earlier looks at their results.
async fn portal_worker(
    record: Arc<Mutex<Record>>,
    http: reqwest::Client,
    target: Target,
    round: usize,
    w: usize,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64((round * 1000 + w) as u64);
    let mut mine: Vec<Activated> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let email = format!("portal-{round}-{w}-{n}@faults.example");
        let body = json!({"externalPatientID": format!("FP-{round}-{w}-{n}"), "clientID": "FC",
            "locationID": "FL", "firstName": "Portal", "lastName": format!("Patient{n}"),
            "dateOfBirth": "1980-01-01", "sex": "unknown", "email": email});
        let create = Create {
            key: format!("p{round}-w{w}-{n}"),
            url: format!("{}/v1/patients", target.commands),
            body,
            id_field: "patientID",
            replay: false,
        };
        if send_create(&record, &http, &target.token, create, &stop)
            .await
            .is_some()
        {
            let Ok(mut patient) = Patient::new(w * 125 + n, email, PORTAL_PASSWORD) else {
                break;
            };
            match activate(&record, &mut patient, &target.outbox).await {
                Some(link) => mine.push(Activated { patient, link }),
                None => record.lock().expect("lock").portal_broken += 1,
            }
        }
        let with_session: Vec<&Activated> = mine
            .iter()
            .filter(|a| a.patient.session().is_some())
            .collect();
        if !with_session.is_empty() {
            let a = with_session[rng.gen_range(0..with_session.len())];
            view_results(&record, &a.patient, &target.portal).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..60))).await;
    }
    record.lock().expect("lock").activated.extend(mine);
}

struct Load {
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Sends one write, retrying with the same key after transport errors and
/// 5xx, as a partner whose answer was lost would. Every answer is recorded.
async fn send_write(
    record: &Mutex<Record>,
    req: impl Fn() -> reqwest::RequestBuilder,
    stop: &AtomicBool,
) -> Option<(u16, Value)> {
    let mut pause = Duration::from_millis(100);
    let mut after_stop = 0;
    for _ in 0..200 {
        let started = Instant::now();
        let r = req().timeout(REQUEST_TIMEOUT).send().await;
        let answer = Answer::of(&r, started);
        let status = answer.status;
        record.lock().expect("lock").answers.push(answer);
        let body = match r {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if status != 0 && status < 500 {
            return Some((status, body));
        }
        if stop.load(Ordering::Relaxed) {
            after_stop += 1;
            if after_stop > 15 {
                break;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    None
}

/// A create the load sends.
struct Create {
    /// Its `Idempotency-Key`.
    key: String,
    url: String,
    body: Value,
    /// The answer's field that holds the new id.
    id_field: &'static str,
    /// Whether to send it again with the same key after the fault.
    replay: bool,
}

/// Sends a create with [`send_write`]; on a 201 records the acknowledged id
/// and, when asked, the request to replay after the fault.
async fn send_create(
    record: &Mutex<Record>,
    http: &reqwest::Client,
    token: &str,
    create: Create,
    stop: &AtomicBool,
) -> Option<Uuid> {
    let Create {
        key,
        url,
        body,
        id_field,
        replay,
    } = create;
    let r = send_write(
        record,
        || {
            http.post(&url)
                .bearer_auth(token)
                .header("Idempotency-Key", &key)
                .json(&body)
        },
        stop,
    )
    .await;
    let Some((201, v)) = r else { return None };
    let id: Uuid = v[id_field].as_str()?.parse().ok()?;
    let mut rec = record.lock().expect("lock");
    if replay {
        rec.replays.push((key.clone(), url, body, id));
    }
    rec.created.insert(key, id);
    Some(id)
}

impl Load {
    fn start(
        record: Arc<Mutex<Record>>,
        round: usize,
        seed: u64,
        workers: usize,
        target: Target,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let mut tasks = Vec::new();
        for w in 0..PORTAL_WORKERS {
            let (record, stop, http) = (record.clone(), stop.clone(), http.clone());
            let target = target.clone();
            tasks.push(tokio::spawn(portal_worker(
                record, http, target, round, w, stop,
            )));
        }
        for w in 0..workers {
            let (record, stop, http) = (record.clone(), stop.clone(), http.clone());
            let Target {
                commands,
                queries,
                token,
                ..
            } = target.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add((round * 1000 + w) as u64));
                let mut mine: Vec<Uuid> = Vec::new();
                let mut orders: Vec<Uuid> = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("r{round}-w{w}-{n}");
                    let roll: f64 = rng.gen();
                    if roll < 0.55 || mine.is_empty() {
                        let ext = format!("F-{round}-{w}-{n}");
                        let body = json!({"externalPatientID": ext, "clientID": "FC", "locationID": "FL",
                            "firstName": "Load", "lastName": format!("Patient{n}"), "dateOfBirth": "1980-01-01",
                            "sex": "unknown"});
                        let url = format!("{commands}/v1/patients");
                        let create = Create { key, url, body, id_field: "patientID", replay: n % 10 == 1 };
                        if let Some(id) = send_create(&record, &http, &token, create, &stop).await {
                            mine.push(id);
                        }
                    } else if roll < 0.60 {
                        let ext = format!("BAD-{round}-{w}-{n}");
                        let body = json!({"externalPatientID": ext, "clientID": "FC", "locationID": "FL",
                            "firstName": "Load", "lastName": "Invalid", "dateOfBirth": "not-a-date", "sex": "x"});
                        let url = format!("{commands}/v1/patients");
                        let r = send_write(&record, || {
                            http.post(&url).bearer_auth(&token).header("Idempotency-Key", &key).json(&body)
                        }, &stop)
                        .await;
                        if let Some((s, _)) = r {
                            if (400..500).contains(&s) {
                                record.lock().expect("lock").refused.push(ext);
                            }
                        }
                    } else if (0.67..0.72).contains(&roll) && !orders.is_empty() {
                        // An order action (collect once, then 409s).
                        let id = orders[rng.gen_range(0..orders.len())];
                        let url = format!("{commands}/v1/orders/{id}/collect");
                        let r = send_write(&record, || {
                            http.post(&url).bearer_auth(&token).header("Idempotency-Key", &key)
                        }, &stop)
                        .await;
                        if let Some((200, v)) = r {
                            if let Some(version) = v["version"].as_i64() {
                                record.lock().expect("lock").patched.push((id, version));
                            }
                        }
                    } else if roll < 0.72 {
                        let patient = mine[rng.gen_range(0..mine.len())];
                        let tests: Vec<Value> = ["CBC", "BMP", "LIPID", "TSH"][..rng.gen_range(1..=4)]
                            .iter()
                            .map(|c| json!({"code": c}))
                            .collect();
                        let body = json!({"patientID": patient, "clientID": "FC", "locationID": "FL",
                            "externalOrderID": format!("FO-{round}-{w}-{n}"), "tests": tests,
                            "priority": "routine"});
                        let url = format!("{commands}/v1/orders");
                        let create = Create { key, url, body, id_field: "orderID", replay: n % 10 == 1 };
                        if let Some(id) = send_create(&record, &http, &token, create, &stop).await {
                            orders.push(id);
                        }
                    } else if roll < 0.85 {
                        let id = mine[rng.gen_range(0..mine.len())];
                        let body = json!({"phone": format!("+1 555 {:04}", n % 10000)});
                        let url = format!("{commands}/v1/patients/{id}");
                        let r = send_write(&record, || {
                            http.patch(&url)
                                .bearer_auth(&token)
                                .header("Idempotency-Key", &key)
                                .header("content-type", "application/merge-patch+json")
                                .json(&body)
                        }, &stop)
                        .await;
                        if let Some((200, v)) = r {
                            if let Some(version) = v["version"].as_i64() {
                                record.lock().expect("lock").patched.push((id, version));
                            }
                        }
                    } else {
                        let id = mine[rng.gen_range(0..mine.len())];
                        let started = Instant::now();
                        let r = http
                            .get(format!("{queries}/v1/patients/{id}"))
                            .bearer_auth(&token)
                            .timeout(REQUEST_TIMEOUT)
                            .send()
                            .await;
                        record.lock().expect("lock").answers.push(Answer::of(&r, started));
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(5..25))).await;
                }
            }));
        }
        Load {
            record,
            stop,
            tasks,
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.record;
    }
}

/// One row of the report.
#[derive(Debug, Default, Clone)]
struct Row {
    fault: String,
    requests: usize,
    statuses: BTreeMap<u16, usize>,
    lost: usize,
    duplicates: usize,
    refused_events: usize,
    replay_differences: usize,
    kafka_repeats: usize,
    analytics: usize,
    portal: usize,
    differences: usize,
    server_errors: usize,
    hangs: usize,
    recovery: Option<Duration>,
}

impl Row {
    fn failed(&self) -> bool {
        self.lost > 0
            || self.duplicates > 0
            || self.refused_events > 0
            || self.replay_differences > 0
            || self.analytics > 0
            || self.portal > 0
            || self.differences > 0
            || self.server_errors > 0
            || self.hangs > 0
            || self.recovery.is_none()
    }
}

/// Reads every record of every topic from offset 0 to its current end.
async fn read_log(cfg: &Config) -> anyhow::Result<Vec<(Topic, i32, i64, Envelope)>> {
    let cfg = cfg.clone();
    let records = tokio::task::spawn_blocking(move || {
        platform::kafka::read_from_start(&cfg, &Topic::ALL, Duration::from_secs(120))
    })
    .await??;
    records
        .into_iter()
        .map(|r| {
            Ok((
                r.topic,
                r.partition,
                r.offset,
                serde_json::from_slice(&r.payload)?,
            ))
        })
        .collect()
}

/// Waits until every stored event is on Kafka and applied to the read model.
async fn converge(
    write: &deadpool_postgres::Pool,
    read: &deadpool_postgres::Pool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVERY_LIMIT;
    loop {
        let check = async {
            let db = write.get().await?;
            let unpublished: bool = db
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM events e WHERE NOT EXISTS (SELECT 1 FROM relay_checkpoint c \
                     WHERE c.id = 1 AND (c.txid, c.position) >= (e.txid, e.position)))",
                    &[],
                )
                .await?
                .get(0);
            let versions: Vec<(Uuid, i64)> = db
                .query(
                    "SELECT stream_id, max(version) FROM events GROUP BY stream_id",
                    &[],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let rdb = read.get().await?;
            let applied: HashMap<Uuid, i64> = rdb
                .query("SELECT stream_id, version FROM stream_versions", &[])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let lagging = versions
                .iter()
                .filter(|(s, v)| applied.get(s) != Some(v))
                .count();
            // The analytics publisher has copied every record the relay
            // wrote to the patient and order topics.
            let analytics_behind: bool = db
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM relay_partitions r WHERE r.topic IN ('lis.patients.v1', 'lis.orders.v1') \
                     AND r.next_offset > COALESCE((SELECT a.next_offset FROM reactor_offsets a WHERE a.reactor = 'analytics' \
                     AND a.topic = r.topic AND a.partition = r.partition), 0))",
                    &[],
                )
                .await?
                .get(0);
            anyhow::Ok(!unpublished && lagging == 0 && !analytics_behind)
        };
        if let Ok(true) = check.await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the stack did not converge within {RECOVERY_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks every promise; fills the row's loss, duplicate and difference
/// columns.
async fn check(
    cfg: &Config,
    keys: &Keys,
    write: &deadpool_postgres::Pool,
    token: &str,
    record: &Record,
    row: &mut Row,
) -> anyhow::Result<()> {
    let db = write.get().await?;
    // Acknowledged creates: a registration (placement) for the acknowledged id.
    let registered: HashSet<Uuid> = db
        .query(
            "SELECT stream_id FROM events WHERE event_type IN ('PatientRegistered', 'OrderPlaced')",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    row.lost = record
        .created
        .values()
        .filter(|id| !registered.contains(id))
        .count();
    let versions: HashSet<(Uuid, i64)> = db
        .query(
            "SELECT stream_id, version FROM events WHERE stream_type IN ('patient', 'order')",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    row.lost += record
        .patched
        .iter()
        .filter(|p| !versions.contains(p))
        .count();
    // One command per key; no event for a refused write.
    let doubled: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT idempotency_key FROM events WHERE idempotency_key IS NOT NULL \
             GROUP BY idempotency_key HAVING count(DISTINCT command_id) > 1) d",
            &[],
        )
        .await?
        .get(0);
    let refused: Vec<&str> = record.refused.iter().map(String::as_str).collect();
    let ghost: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE data->>'externalPatientID' = ANY($1)",
            &[&refused],
        )
        .await?
        .get(0);
    row.duplicates = doubled as usize;
    row.refused_events = ghost as usize;
    // The same write again with the same key: the first answer, no new event.
    let before: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    let http = reqwest::Client::new();
    for (key, url, body, id) in &record.replays {
        let r = http
            .post(url)
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let again = v["orderID"].as_str().or(v["patientID"].as_str());
        if status != 201 || again != Some(id.to_string().as_str()) {
            row.replay_differences += 1;
            if row.replay_differences <= 3 {
                eprintln!(
                    "  replay of {key} answered {status}: {} (first answer: {id})",
                    v["type"].as_str().or(again).unwrap_or("")
                );
            }
        }
    }
    let after: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    row.replay_differences += (after - before) as usize;
    // Kafka: every stored event once (exact repeats counted), streams in order.
    let stored: HashSet<Uuid> = db
        .query("SELECT event_id FROM events", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut log = read_log(cfg).await?;
    log.sort_by_key(|(t, p, o, _)| (*t as u8, *p, *o));
    let mut seen: HashMap<Uuid, &Envelope> = HashMap::new();
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    let mut out_of_order = 0;
    for (_, _, _, e) in &log {
        if let Some(prev) = seen.get(&e.event_id) {
            row.kafka_repeats += 1;
            if *prev != e {
                row.duplicates += 1;
            }
            continue;
        }
        if last.get(&e.stream_id).is_some_and(|v| *v >= e.version) {
            out_of_order += 1;
            if out_of_order <= 3 {
                eprintln!(
                    "  out of order: stream {} version {} after {:?}",
                    e.stream_id,
                    e.version,
                    last.get(&e.stream_id)
                );
            }
        }
        last.insert(e.stream_id, e.version);
        seen.insert(e.event_id, e);
    }
    let on_kafka: HashSet<Uuid> = seen.keys().copied().collect();
    if row.duplicates > 0 || out_of_order > 0 || on_kafka.difference(&stored).count() > 0 {
        eprintln!(
            "  detail: {doubled} keys with two commands, {} differing repeats, {out_of_order} out of order, {} on Kafka only",
            row.duplicates - doubled as usize,
            on_kafka.difference(&stored).count()
        );
    }
    row.lost += stored.difference(&on_kafka).count();
    row.duplicates += on_kafka.difference(&stored).count() + out_of_order;
    row.analytics = check_analytics(cfg, keys, &db).await?;
    // `lis verify`: the store against its signed hash chain and the log,
    // the read models and history against a fresh replay of the log.
    let report = lis::verify::verify(cfg, &keys.chain, true).await?;
    for line in report.differences.iter().take(5) {
        eprintln!("  verify: {line}");
    }
    row.differences = report.differences.len();
    Ok(())
}

/// The installation's keys, as the suite's services hold them.
struct Keys {
    /// Verifies the relay's signed checkpoints.
    chain: platform::chain::PublicKey,
    /// Makes the analytics stream's pseudonyms.
    analytics: platform::pseudonym::Pseudonyms,
}

/// Events of patients, accounts and orders with no copy on the analytics
/// topic, plus records whose first copies there are out of order.
async fn check_analytics(
    cfg: &Config,
    keys: &Keys,
    db: &deadpool_postgres::Object,
) -> anyhow::Result<usize> {
    use platform::pseudonym::IdKind;
    let expected: HashSet<Uuid> = db
        .query(
            "SELECT event_id FROM events WHERE stream_type IN ('patient', 'account', 'order')",
            &[],
        )
        .await?
        .iter()
        .map(|r| keys.analytics.of(IdKind::Event, r.get(0)))
        .collect();
    let c = cfg.clone();
    let records = tokio::task::spawn_blocking(move || {
        platform::kafka::read_from_start(&c, &[Topic::Analytics], Duration::from_secs(120))
    })
    .await??;
    let mut seen = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut out_of_order = 0;
    let mut ordered: Vec<_> = records.iter().collect();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    for r in ordered {
        let v: Value = serde_json::from_slice(&r.payload)?;
        let Some(id) = v["eventID"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let version = v["version"].as_i64().unwrap_or(0);
        if last.get(&r.key).is_some_and(|prev| *prev >= version) {
            out_of_order += 1;
        }
        last.insert(r.key.clone(), version);
    }
    let missing = expected.difference(&seen).count();
    if missing > 0 || out_of_order > 0 {
        eprintln!("  analytics: {missing} events missing, {out_of_order} out of order");
    }
    Ok(missing + out_of_order)
}

/// The portal's promises to the patients activated during a fault, checked
/// once the stack is back: the session each was given still opens their
/// results, the password logs in, the link reads as used; and no account
/// anywhere was activated twice. The number broken.
async fn check_portal(
    base: &str,
    db: &deadpool_postgres::Object,
    activated: &mut [Activated],
) -> anyhow::Result<usize> {
    let mut broken = 0;
    for a in activated.iter_mut() {
        let p = &mut a.patient;
        if p.session().is_some() && p.view(base, "/portal/results").await.status != 200 {
            broken += 1;
            eprintln!("  portal: a session given during the fault no longer opens the results");
        }
        let login = match p.prepare(base).await {
            200 => p.login(base).await.0,
            other => other,
        };
        if login != 303 {
            broken += 1;
            eprintln!("  portal: an activated account's login answered {login}");
        }
        let again = p.activate(&a.link).await.status;
        if again != 410 {
            broken += 1;
            eprintln!("  portal: a used activation link answered {again}");
        }
    }
    let twice: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT stream_id FROM events WHERE event_type = 'PatientAccountActivated' \
             GROUP BY stream_id HAVING count(*) > 1) t",
            &[],
        )
        .await?
        .get(0);
    if twice > 0 {
        eprintln!("  portal: {twice} accounts activated twice");
    }
    Ok(broken + twice as usize)
}

/// Waits until a fresh write is acknowledged and readable through the API,
/// and the portal serves its pages.
async fn recovered(stack: &Stack, token: &str, n: usize) -> Option<Duration> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < RECOVERY_LIMIT {
        let body = json!({"externalPatientID": format!("PROBE-{n}-{}", started.elapsed().as_millis()),
            "clientID": "FC", "locationID": "FL", "firstName": "Probe", "lastName": "Probe",
            "dateOfBirth": "1980-01-01", "sex": "unknown"});
        let probe = async {
            let r = http
                .post(format!("{}/v1/patients", stack.base(Part::CommandHandler)))
                .bearer_auth(token)
                .timeout(Duration::from_secs(5))
                .json(&body)
                .send()
                .await
                .ok()?;
            if r.status() != 201 {
                return None;
            }
            let ct = r
                .headers()
                .get("consistency-token")?
                .to_str()
                .ok()?
                .to_string();
            let id = r.json::<Value>().await.ok()?["patientID"]
                .as_str()?
                .to_string();
            let r = http
                .get(format!("{}/v1/patients/{id}", stack.base(Part::QueryApi)))
                .bearer_auth(token)
                .header("Consistency-Token", ct)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            let page = http
                .get(format!("{}/portal/login", stack.base(Part::Portal)))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            (r.status() == 200 && page.status() == 200).then_some(())
        };
        if probe.await.is_some() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| fault | requests | answers by status | lost acked writes | duplicate events | events of refused writes | key replays answered differently | kafka repeats | analytics missing or out of order | portal promises broken | lis verify differences | unclear 5xx | hangs | recovery |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let statuses = r
            .statuses
            .iter()
            .map(|(s, n)| {
                if *s == 0 {
                    format!("conn-err:{n}")
                } else {
                    format!("{s}:{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.fault,
            r.requests,
            statuses,
            r.lost,
            r.duplicates,
            r.refused_events,
            r.replay_differences,
            r.kafka_repeats,
            r.analytics,
            r.portal,
            r.differences,
            r.server_errors,
            r.hangs,
            r.recovery
                .map_or("none".to_string(), |d| format!("{:.1}s", d.as_secs_f64())),
        );
    }
}

/// Runs the fault suite.
pub async fn run(_cfg: &Config, args: FaultArgs) -> anyhow::Result<()> {
    let faults = faults_to_run(&args)?;
    let dir = std::env::temp_dir().join(format!("lis-faults-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    }
    println!(
        "fault suite: seed {}, {} workers, {} process(es) of every service, working in {}",
        args.seed,
        args.workers,
        args.replicas,
        dir.display()
    );
    // A private copy: a rebuild of the binary meanwhile must not change what
    // the restarted services run.
    let lis = std::env::current_exe()?.with_file_name("lis");
    std::fs::copy(&lis, dir.join("lis")).with_context(|| {
        format!(
            "copying {} (build it with `cargo build -p lis`)",
            lis.display()
        )
    })?;
    let cluster = Cluster::create(&dir)?;
    cluster.start()?;
    let key_file = dir.join("token.key");
    platform::token::TokenSigner::create_file(&key_file)?;
    lis::up::create_service_keys(&dir)?;
    let keys = Keys {
        chain: platform::chain::ChainKey::load(&dir.join("chain-signing.key"))?.public(),
        analytics: platform::pseudonym::Pseudonyms::load(&dir.join("analytics-pseudonym.key"))?,
    };
    let mut stack = Stack {
        broker_port: free_port()?,
        broker: None,
        services: HashMap::new(),
        replicas: args.replicas.into(),
        down: Vec::new(),
        ports: HashMap::from([
            (Part::CommandHandler, free_port()?),
            (Part::QueryApi, free_port()?),
            (Part::Portal, free_port()?),
        ]),
        key_file,
        cluster,
        dir: dir.clone(),
        keep: args.keep,
    };
    stack.start_broker()?;
    let cfg = stack.config()?;
    lis::up::migrate(&cfg).await?;
    let write = platform::db::pool(&cfg.database_url, &cfg.write_schema, 4)?;
    let read = platform::db::pool(&cfg.database_url, &cfg.read_schema, 4)?;
    let actor = lis::admin_cli::operator();
    command_handler::admin::create_client(&write, &actor, "FC", "Fault client").await?;
    command_handler::admin::create_location(&write, &actor, "FL", "FC", "Fault site").await?;
    let creds = command_handler::admin::create_partner(
        &write,
        &actor,
        "Fault load",
        Permission::RECORDS.into(),
        Scope {
            clients: IdSet::all(),
            locations: IdSet::all(),
        },
    )
    .await?;
    command_handler::admin::seed_catalog(&write, &actor).await?;
    for part in SERVICES {
        stack.start_service(part)?;
    }
    let token = {
        let r: Value = reqwest::Client::new()
            .post(format!("{}/oauth/token", stack.base(Part::CommandHandler)))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", creds.client_id.as_str()),
                ("client_secret", creds.client_secret.as_str()),
            ])
            .send()
            .await?
            .json()
            .await?;
        r["access_token"].as_str().context("no token")?.to_string()
    };
    let target = Target {
        commands: stack.base(Part::CommandHandler),
        queries: stack.base(Part::QueryApi),
        portal: stack.base(Part::Portal),
        outbox: stack.outbox(),
        token: token.clone(),
    };

    let record = Arc::new(Mutex::new(Record::default()));
    let mut rows = Vec::new();
    for (n, parts) in faults.into_iter().enumerate() {
        let name = parts
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(" + ");
        let from = Instant::now();
        let load = Load::start(record.clone(), n, args.seed, args.workers, target.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        println!("fault {}: kill {name}", n + 1);
        if parts.contains(&Part::Relay) {
            // Kill the relay while it publishes: stall it until a backlog
            // builds, let it resume and kill it as it sends the backlog
            // (between the broker's acknowledgement and its checkpoint), so
            // that its successor has to find what it left on Kafka.
            stack.signal(Part::Relay, libc::SIGSTOP);
            tokio::time::sleep(RELAY_STALL).await;
            stack.signal(Part::Relay, libc::SIGCONT);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        for p in &parts {
            stack.kill(*p);
        }
        // With replicas and only services killed, nothing is restarted:
        // the failover is timed from the kill.
        let restarts = stack.replicas == 1
            || parts
                .iter()
                .any(|p| matches!(p, Part::Postgres | Part::Broker));
        let down = if restarts { DOWN_TIME } else { Duration::ZERO };
        tokio::time::sleep(down).await;
        // Dependencies first: Postgres, then the broker, then services. With
        // replicas, a killed service process stays down until the checks
        // end: the others do its work.
        let mut order = parts.clone();
        order.sort();
        order.reverse();
        for p in &order {
            if stack.replicas == 1 || matches!(p, Part::Postgres | Part::Broker) {
                stack.restart(*p)?;
            }
        }
        let recovery = recovered(&stack, &token, n).await.map(|d| d + down);
        tokio::time::sleep(Duration::from_secs(1)).await;
        load.finish().await;
        converge(&write, &read).await?;
        let mut row = Row {
            fault: name,
            recovery,
            ..Row::default()
        };
        let mut rec = std::mem::take(&mut *record.lock().expect("lock"));
        for a in &rec.answers {
            if a.at >= from {
                row.requests += 1;
                *row.statuses.entry(a.status).or_default() += 1;
                row.server_errors += usize::from(a.unclear);
                row.hangs += usize::from(a.hang);
            }
        }
        check(&cfg, &keys, &write, &token, &rec, &mut row).await?;
        let portal = stack.base(Part::Portal);
        row.portal = rec.portal_broken
            + check_portal(&portal, &write.get().await?, &mut rec.activated).await?;
        for p in parts
            .iter()
            .filter(|p| !matches!(p, Part::Postgres | Part::Broker))
        {
            if stack.replicas > 1 {
                stack.restart(*p)?;
            }
        }
        println!(
            "  {} creates, {} changes acknowledged; {} writes refused; {} portal activations; recovered in {}",
            rec.created.len(),
            rec.patched.len(),
            rec.refused.len(),
            rec.activated.len(),
            row.recovery
                .map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()))
        );
        // Keep what earlier faults acknowledged: later checks cover them too.
        let mut kept = record.lock().expect("lock");
        kept.created.extend(rec.created);
        kept.patched.extend(rec.patched);
        kept.refused.extend(rec.refused);
        drop(kept);
        rows.push(row);
    }
    print_table(&rows);
    if stack.replicas > 1 {
        println!(
            "\n{} processes of every service; each fault left the killed ones down until its checks ended, \
             so `recovery` is the failover: from the kill to a write readable and the portal answering through the others.",
            stack.replicas
        );
    }
    drop(stack);
    if rows.iter().any(Row::failed) {
        bail!("the fault suite found losses, duplicates, differences, 500s, hangs or a part that did not recover");
    }
    println!("\nfaults: {} passed, 0 failed", rows.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(short: bool, only: &[&str]) -> FaultArgs {
        FaultArgs {
            short,
            seed: 42,
            workers: 6,
            keep: false,
            only: only.iter().map(|s| s.to_string()).collect(),
            replicas: 1,
        }
    }

    #[test]
    fn a_portal_5xx_is_clear_only_as_a_503_with_retry_after() {
        let unclear = |status, retry_after| {
            let page = portal::client::Answer {
                status,
                retry_after,
            };
            Answer::of_page(page, Instant::now()).unclear
        };
        assert!(!unclear(503, true));
        assert!(unclear(503, false));
        assert!(unclear(500, true));
        assert!(unclear(502, false));
        assert!(!unclear(200, false));
        assert!(!unclear(NO_ANSWER, false));
    }

    #[test]
    fn the_ci_subset_kills_every_part() {
        let killed: HashSet<Part> = faults_to_run(&args(true, &[]))
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(killed, Part::ALL.into_iter().collect());
    }

    #[test]
    fn the_replicated_ci_subset_kills_one_of_every_service_with_each_dependency() {
        let faults = faults_to_run(&FaultArgs {
            replicas: 2,
            ..args(true, &[])
        })
        .unwrap();
        let killed: HashSet<Part> = faults.iter().flatten().copied().collect();
        assert_eq!(killed, Part::ALL.into_iter().collect());
        assert!(faults
            .iter()
            .all(|f| SERVICES.iter().all(|s| f.contains(s))));
    }

    #[test]
    fn only_names_faults_in_order_and_refuses_unknown_parts() {
        let faults = faults_to_run(&args(true, &["broker+relay", "relay"])).unwrap();
        assert_eq!(
            faults,
            vec![vec![Part::Broker, Part::Relay], vec![Part::Relay]]
        );
        let e = faults_to_run(&args(false, &["relay+kafka"])).unwrap_err();
        assert!(e.to_string().contains("unknown part \"kafka\""), "{e}");
        assert!(e.to_string().contains("command-handler"), "{e}");
    }
}
