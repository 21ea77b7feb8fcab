//! `lis-bench`: the benchmark suite (see BENCHMARKS.md), a binary of its
//! own so that the operator's `lis` links no load generator or plotting.
//!
//! It drives the local stack that `lis up` started, the way partners do
//! (a token, then HTTP requests), with its own client, locations and
//! partner, and measures every workload beside a raw baseline run in the
//! same process on the same machine:
//!
//! | workload | baseline |
//! | --- | --- |
//! | patient creates, closed model at 1/16/64 connections | Postgres single-row insert + commit at the same concurrency |
//! | order placements (1-4 tests each), closed model at 1/16/64 | the same raw insert + commit |
//! | patient creates, open model at fixed arrival rates | (chart) |
//! | point reads at 1/16/64 | Postgres primary-key select at the same concurrency |
//! | point reads with the access log, at 8/16/32/64/128 (and the best rate of each) | the same reads with the log off (both served by the bench process) |
//! | filtered list pages | the same filter in SQL |
//! | mixed partner-like workload | Postgres inserts/selects in the same write share |
//! | relay throughput (draining a bulk seeding) | raw produce of same-size records, relay producer settings |
//! | replay (`projector::catch_up` from offset 0) | raw consume from offset 0; raw batched insert of the rebuilt rows |
//! | freshness, relay and projector lag | (absolute) |
//! | growth (10k / 100k / 1M stored) | the 10k tier |
//!
//! # Layout
//! - [`load`]: closed and open load models, latency recording.
//! - [`api`]: the partner API client.
//! - [`data`]: the seedable data generator.
//! - [`seed`]: bulk seeding through the product's write path.
//! - [`raw`]: the raw baselines.
//! - [`procs`]: resource use of the services and the load generator.
//! - [`report`]: Markdown, JSON and SVG output.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Parser};
use command_handler::admin;
use deadpool_postgres::Pool;
use domain::access::{Actor, IdSet, Permission, Scope};
use platform::config::Config;
use serde_json::{json, Value};
use uuid::Uuid;

mod api;
mod data;
mod load;
mod procs;
mod raw;
mod report;
mod seed;

use api::Api;
use data::Gen;
use load::{Measured, Recorder, Window};
use procs::{CpuOf, PgCounters, Probe, Resources, Watched};
use report::{Report, Row, Target, Tier};

/// The benchmark suite: drives the stack `lis up` started and prints each
/// figure beside its raw baseline.
#[derive(Parser, Debug)]
#[command(name = "lis-bench", version, about)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    lis::main_of("lis-bench", |cfg| async move { run(&cfg, cli.args).await })
}

/// `lis-bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A few minutes instead of the full tiers.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the Markdown and JSON report (beside the build's
    /// output, never committed; a run worth keeping is copied under
    /// `docs/benchmarks/`).
    #[arg(long, default_value = "target/bench-report")]
    pub out: PathBuf,
    /// Seed of the data generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run only these sections (repeatable): portal, growth, writes,
    /// open-model writes, reads, access log, mixed, freshness and lag, relay,
    /// replay.
    #[arg(long, value_name = "SECTION")]
    pub only: Vec<String>,
}

/// The bench's own client.
const CLIENT: &str = "BENCH";
/// Rounds of reads with the access log off and on (the median round is
/// the row).
const ACCESS_LOG_ROUNDS: usize = 5;
/// One round of the access log section: the ratio, the window with the
/// log and the one without, and the resources of the one with.
type Pair = (f64, Measured, Measured, Resources);
/// Connection counts of the access log's windows: from below the best
/// count without the log (8-16 on two cores; 2 and 4 are slower) to well
/// above the best with it (64-128).
const ACCESS_LOG_CONNECTIONS: [usize; 5] = [8, 16, 32, 64, 128];
/// The replay's fresh read schema.
const REPLAY_SCHEMA: &str = "lis_bench_replay";

/// The query API served by the bench process itself (`Bench::access_log`).
struct QueryServer {
    base: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl QueryServer {
    /// Serves the query API on a free loopback port, with the access log on
    /// or off, on small pools (the stack holds most of Postgres's
    /// connections).
    async fn start(cfg: &Arc<Config>, logged: bool) -> anyhow::Result<QueryServer> {
        let write = platform::db::pool(&cfg.database_url, &cfg.write_schema, 4)?;
        let schema = platform::read_models::active(&write, &cfg.read_schema).await?;
        let read = platform::read_models::ReadModels::fixed(
            &schema,
            platform::db::pool(&cfg.database_url, &schema, 6)?,
        );
        let gate = contract::caller::Gate::new(
            platform::token::TokenVerifier::new(write.clone(), cfg.token_ttl),
            platform::access_cache::PartnerCache::start(
                &cfg.database_url,
                &cfg.write_schema,
                write.clone(),
            ),
        );
        let mut state = query_api::QueryState::new(cfg.clone(), read, write, gate)?;
        if !logged {
            state = state.with_access_log(query_api::access_log::AccessLog::off());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, query_api::router(state))
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(QueryServer { base, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Sizes and durations of a run.
struct Plan {
    window: Window,
    levels: [usize; 3],
    open_fractions: Vec<f64>,
    tiers: Vec<i64>,
    replay_events: u64,
    drain_patients: u64,
    produce_records: u64,
    growth_write_rate: f64,
    growth_read_rate: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                window: Window {
                    warmup: Duration::from_secs(2),
                    measure: Duration::from_secs(8),
                },
                levels: [1, 16, 64],
                open_fractions: vec![0.25, 0.5, 0.75],
                tiers: vec![10_000, 50_000],
                replay_events: 50_000,
                drain_patients: 10_000,
                produce_records: 50_000,
                growth_write_rate: 50.0,
                growth_read_rate: 100.0,
            }
        } else {
            Plan {
                window: Window {
                    warmup: Duration::from_secs(5),
                    measure: Duration::from_secs(30),
                },
                levels: [1, 16, 64],
                open_fractions: vec![0.25, 0.5, 0.75, 0.9],
                tiers: vec![10_000, 100_000, 1_000_000],
                replay_events: 1_000_000,
                drain_patients: 50_000,
                produce_records: 200_000,
                growth_write_rate: 50.0,
                growth_read_rate: 100.0,
            }
        }
    }
}

/// Everything a run shares.
struct Bench {
    cfg: Config,
    base: String,
    api: Arc<Api>,
    partner: Uuid,
    write: Pool,
    read: Pool,
    gen: Arc<Mutex<Gen>>,
    watched: Vec<Watched>,
    plan: Plan,
    report: Report,
    failures: Vec<String>,
    /// The sections to run (`--only`; all when empty).
    only: Vec<String>,
}

/// The pid on the first line of a pid file.
fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Fails clearly unless the local stack answers; finds its processes.
async fn preflight(cfg: &Config) -> anyhow::Result<(String, Vec<Watched>, Vec<String>)> {
    let base = format!("http://{}", cfg.http_addr);
    let answer = reqwest::Client::new()
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            bail!(
                "the local stack is not ready: GET {base}/readyz answered {status} {body}. \
                 Start it with `lis up` (cargo run --release -p lis -- up)."
            )
        }
        Err(e) => bail!(
            "the local stack is not up: nothing answers at {base} ({e}). \
             Start it with `lis up` (cargo run --release -p lis -- up), then run `lis-bench` again."
        ),
    }
    let mut watched = Vec::new();
    let mut notes = Vec::new();
    for (file, name) in [("services.pid", "lis serve"), ("broker.pid", "broker")] {
        let path = cfg.data_dir.join(file);
        match read_pid(&path) {
            Some(pid) if procs::alive(pid) => watched.push(Watched {
                name: name.into(),
                pid,
                with_children: false,
            }),
            _ => notes.push(format!(
                "no live process in {}: the {name}'s resources are not reported",
                path.display()
            )),
        }
    }
    // Postgres: the postmaster named in its data directory, and its backends.
    let pg = async {
        let c = platform::db::connect(&cfg.database_url, "public")
            .await
            .ok()?;
        let dir: String = c.query_one("SHOW data_directory", &[]).await.ok()?.get(0);
        read_pid(&PathBuf::from(dir).join("postmaster.pid"))
    };
    match pg.await {
        Some(pid) if procs::alive(pid) => watched.push(Watched {
            name: "postgres".into(),
            pid,
            with_children: true,
        }),
        _ => notes.push(
            "the Postgres postmaster pid could not be read: its resources are not reported".into(),
        ),
    }
    Ok((base, watched, notes))
}

/// Runs the benchmark suite.
pub async fn run(cfg: &Config, args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (base, watched, notes) = preflight(cfg).await?;
    let write = platform::db::pool(&cfg.database_url, &cfg.write_schema, 8)?;
    // The copy of the read models readers use (`lis replay` switches it).
    let mut cfg = cfg.clone();
    cfg.read_schema = platform::read_models::active(&write, &cfg.read_schema).await?;
    let cfg = &cfg;
    let read = platform::db::pool(&cfg.database_url, &cfg.read_schema, 8)?;
    let plan = Plan::new(args.quick);
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );

    // The bench's own client, locations and partner.
    let actor = Actor::Operator {
        id: "lis-bench".into(),
    };
    admin::create_client(&write, &actor, CLIENT, "Benchmark client")
        .await
        .context("creating the bench client")?;
    let locations: Vec<String> = (1..=4).map(|i| format!("{CLIENT}-{i}")).collect();
    for l in &locations {
        admin::create_location(&write, &actor, l, CLIENT, &format!("Benchmark site {l}")).await?;
    }
    admin::seed_catalog(&write, &actor).await?;
    let permissions: BTreeSet<Permission> = Permission::ALL.into_iter().collect();
    let creds = admin::create_partner(
        &write,
        &actor,
        &format!("lis-bench {run_id}"),
        permissions,
        Scope {
            clients: IdSet::all(),
            locations: IdSet::all(),
        },
    )
    .await?;
    let api = Arc::new(
        Api::login(&base, &creds.client_id, &creds.client_secret)
            .await
            .context("logging in as the bench partner")?,
    );
    let mut gen = Gen::new(args.seed, &run_id, CLIENT, &locations);
    gen.set_catalog(admin::list_catalog(&write).await?);
    let postgres: String = write
        .get()
        .await?
        .query_one("SELECT version()", &[])
        .await?
        .get(0);
    let postgres = postgres
        .split(" on ")
        .next()
        .unwrap_or(&postgres)
        .to_string();

    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        quick: args.quick,
        seed: args.seed,
        warmup_s: plan.window.warmup.as_secs_f64(),
        measure_s: plan.window.measure.as_secs_f64(),
        machine: Some(procs::Machine::describe(
            postgres,
            cfg.kafka_brokers.clone(),
        )),
        stored_at_start: seed::stored_patients(&read).await?,
        notes,
        ..Report::default()
    };
    let mut b = Bench {
        cfg: cfg.clone(),
        base,
        api,
        partner: creds.partner_id,
        write,
        read,
        gen: Arc::new(Mutex::new(gen)),
        watched,
        plan,
        report,
        failures: Vec::new(),
        only: args.only.clone(),
    };
    println!(
        "lis-bench{}: {} patients stored; report to {}",
        if args.quick { " --quick" } else { "" },
        b.report.stored_at_start,
        args.out.display()
    );
    raw::prepare(&b.cfg.database_url).await?;

    // The portal first: its patients' invitations come through the mailer
    // in log order, and the growth tiers' bulk seeding puts hundreds of
    // thousands of invitations ahead of them.
    b.section("portal", Bench::portal).await;
    b.section("growth", Bench::growth).await;
    let max_create = b.section_value("writes", Bench::writes).await;
    if let Some(max) = max_create {
        b.section("open-model writes", async |b| {
            Bench::open_writes(b, max).await
        })
        .await;
    }
    b.section("reads", Bench::reads).await;
    b.section("access log", Bench::access_log).await;
    b.section("mixed", Bench::mixed).await;
    if let Some(max) = max_create {
        b.section("freshness and lag", async |b| {
            Bench::freshness(b, max).await
        })
        .await;
    }
    b.section("relay", Bench::relay).await;
    b.section("replay", Bench::replay).await;

    if let Err(e) = raw::cleanup(&b.cfg.database_url).await {
        b.report
            .notes
            .push(format!("cleanup of the raw schema failed: {e}"));
    }
    b.targets();
    b.report.notes.extend(notes_on_method());
    b.report.duration_s = started.elapsed().as_secs_f64();
    b.report
        .write(&args.out)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    println!("\nTargets:");
    for t in &b.report.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!("  [{verdict}] {}: {} (goal {})", t.name, t.measured, t.goal);
    }
    println!(
        "\nReport: {}/report.md, report.json, latency.svg ({:.0} s)",
        args.out.display(),
        b.report.duration_s
    );
    if !b.failures.is_empty() {
        bail!("some workloads failed: {}", b.failures.join("; "));
    }
    Ok(())
}

fn notes_on_method() -> Vec<String> {
    vec![
        "Large data sets are seeded in bulk through the product's write path: the generator's drafts go through `domain::patient::register` (and `domain::account::open` for a valid email), and each batch of 1,000 patients is appended as ONE command with `command_handler::store::append`, with the same write-side reservations as the HTTP handler, in one transaction. The next batch is appended once the relay has published the previous one (relay time is measured from each commit until it is published); the projector projects them like any other events.".into(),
        format!(
            "Generated data: {:.0}% valid emails, {:.0}% none, the rest invalid; {:.0}% of HTTP creates reuse an earlier externalPatientID (409 is an expected answer); orders carry 1-4 catalog tests.",
            data::EMAIL_VALID * 100.0,
            data::EMAIL_MISSING * 100.0,
            data::DUPLICATE_SHARE * 100.0
        ),
        "Raw insert baseline: `INSERT INTO single_insert (id, data) VALUES ($1, $2)` in autocommit (one insert + commit), the data a patient body, one prepared statement per connection. Raw select baseline: `SELECT * FROM patients WHERE patient_id = $1` on the read model. Raw list baseline: the lastName filter in SQL with the API's ordering and page size.".into(),
        "Raw batched insert baseline: every row of the rebuilt read schema inserted into empty copies of its tables (same indexes), 500 rows per statement (`json_populate_recordset`), one transaction each, one connection; its rate is events of the rebuild ÷ seconds to insert their rows.".into(),
        "The load generator, Postgres, the broker and the services share the same cores: the load generator's own CPU is reported with each workload.".into(),
        "Growth tiers are measured as the store grows during the run: a tier smaller than what the store already holds is skipped (run against a fresh stack for every tier).".into(),
    ]
}

fn ok_create(s: u16) -> bool {
    matches!(s, 201 | 409)
}

fn ok_read(s: u16) -> bool {
    s == 200
}

fn print_row(r: &Row) {
    let ratio = r
        .ratio
        .map(|x| {
            format!(
                "  ratio {x:.2} (baseline {:.0}/s)",
                r.baseline.as_ref().map_or(0.0, |b| b.throughput)
            )
        })
        .unwrap_or_default();
    let errors = if r.error_count() == 0 {
        "0".to_string()
    } else {
        format!("{:?}", r.errors)
    };
    println!(
        "  {:<30} {:<17} {:>8.1}/s  p50 {:>7.2}  p99 {:>8.2}  max {:>8.1} ms  errors {errors}{ratio}",
        r.name, r.model, r.throughput, r.latency.p50, r.latency.p99, r.latency.max
    );
}

async fn create_one(api: Arc<Api>, gen: Arc<Mutex<Gen>>) -> u16 {
    let body = gen.lock().expect("gen").patient_body();
    api.post("/v1/patients", &body).await.status
}

fn ok_placed(s: u16) -> bool {
    s == 201
}

/// Places an order for one of `patients` (id, location).
async fn place_one(
    api: Arc<Api>,
    gen: Arc<Mutex<Gen>>,
    patients: Arc<Vec<(String, String)>>,
) -> u16 {
    let (id, location) = &patients[rand::random::<usize>() % patients.len()];
    let body = gen.lock().expect("gen").order_body(id, location);
    api.post("/v1/orders", &body).await.status
}

/// Up to 2,000 random patients of the bench's client, with their locations
/// (the patients its partner may place orders for).
async fn bench_patients(read: &Pool) -> anyhow::Result<Arc<Vec<(String, String)>>> {
    let patients: Vec<(String, String)> = read
        .get()
        .await?
        .query(
            "SELECT patient_id::text, location_id FROM patients WHERE client_id = $1 ORDER BY random() LIMIT 2000",
            &[&CLIENT],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if patients.is_empty() {
        bail!("no bench patient to work on");
    }
    Ok(Arc::new(patients))
}

/// Postgres's transaction and WAL counters now (`None` when they cannot
/// be read).
async fn pg_counters(read: &Pool) -> Option<PgCounters> {
    let row = read
        .get()
        .await
        .ok()?
        .query_one(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), \
                    (SELECT wal_sync FROM pg_stat_wal)",
            &[],
        )
        .await
        .ok()?;
    Some(PgCounters {
        transactions: u64::try_from(row.get::<_, i64>(0)).ok()?,
        wal_flushes: u64::try_from(row.get::<_, i64>(1)).ok()?,
    })
}

async fn read_one(api: Arc<Api>, ids: Arc<Vec<Uuid>>) -> u16 {
    let id = ids[rand::random::<usize>() % ids.len()];
    api.get(&format!("/v1/patients/{id}")).await.status
}

/// `ratio% at connections` for each pair, comma-separated.
fn percents_at(ratios: &[(usize, f64)]) -> String {
    ratios
        .iter()
        .map(|(c, x)| format!("{:.0}% at {c}", x * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The access log's target: the best rate with the log against the best
/// without it (`capacity`), beside the ratio at each connection count
/// (`equal`).
fn access_log_target(capacity: Option<&report::Capacity>, equal: &[(usize, f64)]) -> Target {
    Target {
        name: "point reads with the access log vs without".into(),
        goal:
            "≥ 80% of the rate without the log (the best rate of each over the connection counts)"
                .into(),
        measured: match capacity {
            Some(c) => format!(
                "{:.0}% ({:.0}/s at {} vs {:.0}/s at {} connections); at equal connections {}",
                c.ratio() * 100.0,
                c.with_rate,
                c.with_connections,
                c.without_rate,
                c.without_connections,
                percents_at(equal)
            ),
            None => "—".into(),
        },
        met: capacity.map(|c| c.ratio() >= 0.8),
    }
}

/// The pair with the greatest rate of `(connections, rate)` pairs.
fn best(rates: &[(usize, f64)]) -> Option<(usize, f64)> {
    rates.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The median of `values` (the upper one of an even count; 0 when empty).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn sample_ids(read: &Pool, n: i64) -> anyhow::Result<Arc<Vec<Uuid>>> {
    let ids: Vec<Uuid> = read
        .get()
        .await?
        .query(
            "SELECT patient_id FROM patients ORDER BY random() LIMIT $1",
            &[&n],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        bail!("the read model holds no patient to read");
    }
    Ok(Arc::new(ids))
}

/// The access log's commits since a point in time, from its metric (the
/// bench serves the logged query API in this process).
struct Batches {
    commits: u64,
    reads: f64,
}

impl Batches {
    fn now() -> Batches {
        let h = &*platform::metrics::ACCESS_LOG_BATCH;
        Batches {
            commits: h.get_sample_count(),
            reads: h.get_sample_sum(),
        }
    }

    /// `, N commits, M reads per commit` since `self`.
    fn since(&self) -> String {
        let now = Batches::now();
        let commits = now.commits - self.commits;
        let reads = now.reads - self.reads;
        format!(
            ", {commits} commits, {:.1} reads per commit",
            reads / commits.max(1) as f64
        )
    }
}

impl Bench {
    /// Whether the run includes the section `name` (`--only`).
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == name)
    }

    async fn section<F>(&mut self, name: &str, f: F)
    where
        F: AsyncFnOnce(&mut Bench) -> anyhow::Result<()>,
    {
        if !self.runs(name) {
            return;
        }
        println!("\n== {name}");
        if let Err(e) = f(self).await {
            println!("  FAILED: {e:#}");
            self.failures.push(format!("{name}: {e:#}"));
            self.report.notes.push(format!("{name} failed: {e:#}"));
        }
    }

    async fn section_value<F, T>(&mut self, name: &str, f: F) -> Option<T>
    where
        F: AsyncFnOnce(&mut Bench) -> anyhow::Result<T>,
    {
        if !self.runs(name) {
            return None;
        }
        println!("\n== {name}");
        match f(self).await {
            Ok(v) => Some(v),
            Err(e) => {
                println!("  FAILED: {e:#}");
                self.failures.push(format!("{name}: {e:#}"));
                self.report.notes.push(format!("{name} failed: {e:#}"));
                None
            }
        }
    }

    /// Waits until the relay, the projector, the mailer and the analytics
    /// publisher have caught up with the log; returns how long that took.
    async fn settle(&self) -> anyhow::Result<Duration> {
        const PATIENCE: Duration = Duration::from_secs(600);
        let idle = Instant::now();
        seed::wait_relay(&self.write, PATIENCE).await?;
        let ends = projector::log_ends(&self.cfg).await?;
        seed::wait_projector(&self.cfg, &self.read, PATIENCE).await?;
        seed::wait_reactors(&self.cfg, &self.write, &ends, PATIENCE).await?;
        // What autovacuum would have done by now (this Postgres runs
        // without it), done before the window rather than during it.
        let schemas =
            [&self.cfg.write_schema, &self.cfg.read_schema, raw::SCHEMA].map(String::from);
        platform::upkeep::pass(
            &self.write,
            &self.cfg.write_schema,
            &schemas,
            platform::upkeep::Busy::Wait,
        )
        .await?;
        Ok(idle.elapsed())
    }

    /// Runs a workload and measures what it used. The workload starts once
    /// the asynchronous pipeline has worked off what earlier workloads left
    /// it (else their relaying, projecting and mailing would be measured in
    /// this window: a 64-connection create window leaves tens of seconds of
    /// it); the pipeline's own work for this window is measured as far as it
    /// is done within the window.
    async fn probe<Fut: Future<Output = T>, T>(&self, f: Fut) -> (T, Resources) {
        let settled = match self.settle().await {
            Ok(d) => d.as_secs_f64(),
            Err(e) => {
                println!("  (the pipeline did not catch up before this window: {e:#})");
                f64::NAN
            }
        };
        let c0 = pg_counters(&self.read).await;
        let p = Probe::start(&self.watched);
        let v = f.await;
        let mut res = p.finish();
        res.settle_s = settled;
        res.pg = c0
            .zip(pg_counters(&self.read).await)
            .map(|(a, b)| b.since(a));
        (v, res)
    }

    fn push(&mut self, row: Row) {
        print_row(&row);
        self.report.rows.push(row);
    }

    async fn open_creates(&self, rate: f64) -> (Measured, Resources) {
        let (api, gen) = (self.api.clone(), self.gen.clone());
        self.probe(load::open(rate, self.plan.window, 1024, move |_| {
            create_one(api.clone(), gen.clone())
        }))
        .await
    }

    async fn open_reads(&self, rate: f64, ids: Arc<Vec<Uuid>>) -> (Measured, Resources) {
        let api = self.api.clone();
        self.probe(load::open(rate, self.plan.window, 1024, move |_| {
            read_one(api.clone(), ids.clone())
        }))
        .await
    }

    /// Write and read latency as the store grows.
    async fn growth(&mut self) -> anyhow::Result<()> {
        for tier in self.plan.tiers.clone() {
            let stored = seed::stored_patients(&self.read).await?;
            if stored > tier + tier / 10 {
                println!("  tier {tier}: skipped, the store already holds {stored} patients");
                self.report.growth.push(Tier {
                    tier,
                    stored,
                    skipped: Some(format!("the store already holds {stored} patients")),
                    ..Tier::default()
                });
                continue;
            }
            let seeded =
                seed::seed_to(&self.cfg, &self.write, &self.read, &self.gen, CLIENT, tier).await?;
            let stored = seed::stored_patients(&self.read).await?;
            let ids = sample_ids(&self.read, 5000).await?;
            let (m, res) = self.open_creates(self.plan.growth_write_rate).await;
            let write = Row::new(
                "growth",
                &format!("creates at {tier}"),
                &m,
                None,
                ok_create,
                res,
            );
            print_row(&write);
            let (m, res) = self.open_reads(self.plan.growth_read_rate, ids).await;
            let read = Row::new(
                "growth",
                &format!("point reads at {tier}"),
                &m,
                None,
                ok_read,
                res,
            );
            print_row(&read);
            self.report.growth.push(Tier {
                tier,
                stored,
                skipped: None,
                seeded,
                write: Some(write),
                read: Some(read),
            });
        }
        Ok(())
    }

    /// Patient creates and order placements at each concurrency beside raw
    /// inserts; returns the best create throughput.
    async fn writes(&mut self) -> anyhow::Result<f64> {
        let payload = self.gen.lock().expect("gen").patient_body();
        let patients = bench_patients(&self.read).await?;
        let mut best: f64 = 0.0;
        for c in self.plan.levels {
            let (base, _) = self
                .probe(raw::insert(
                    &self.cfg.database_url,
                    c,
                    self.plan.window,
                    payload.clone(),
                ))
                .await;
            let base = base?;
            let (api, gen) = (self.api.clone(), self.gen.clone());
            let (m, res) = self
                .probe(load::closed(c, self.plan.window, move |_| {
                    create_one(api.clone(), gen.clone())
                }))
                .await;
            let row = Row::new("writes", "patient creates", &m, Some(c), ok_create, res)
                .against("PG insert+commit", &base);
            best = best.max(row.throughput);
            self.push(row);
            let (api, gen, patients) = (self.api.clone(), self.gen.clone(), patients.clone());
            let (m, res) = self
                .probe(load::closed(c, self.plan.window, move |_| {
                    place_one(api.clone(), gen.clone(), patients.clone())
                }))
                .await;
            let row = Row::new("writes", "order placements", &m, Some(c), ok_placed, res)
                .against("PG insert+commit", &base);
            self.push(row);
        }
        if best <= 0.0 {
            bail!("no create succeeded");
        }
        Ok(best)
    }

    /// Creates at fixed arrival rates.
    async fn open_writes(&mut self, max: f64) -> anyhow::Result<()> {
        for f in self.plan.open_fractions.clone() {
            let (m, res) = self.open_creates((max * f).max(1.0)).await;
            let row = Row::new(
                "writes-open",
                &format!("patient creates at {:.0}% of max", f * 100.0),
                &m,
                None,
                ok_create,
                res,
            );
            self.push(row);
        }
        Ok(())
    }

    /// Point reads and list pages beside raw selects.
    async fn reads(&mut self) -> anyhow::Result<()> {
        let ids = sample_ids(&self.read, 10_000).await?;
        let url = self.cfg.database_url.clone();
        let schema = self.cfg.read_schema.clone();
        for c in self.plan.levels {
            let (base, _) = self
                .probe(raw::select(&url, &schema, c, self.plan.window, ids.clone()))
                .await;
            let base = base?;
            let (api, ids2) = (self.api.clone(), ids.clone());
            let (m, res) = self
                .probe(load::closed(c, self.plan.window, move |_| {
                    read_one(api.clone(), ids2.clone())
                }))
                .await;
            let row = Row::new("reads", "point reads", &m, Some(c), ok_read, res)
                .against("PG primary-key select", &base);
            self.push(row);
        }
        // List pages filtered by last name, beside the same query in SQL.
        let names: Vec<String> = {
            let mut g = self.gen.lock().expect("gen");
            (0..64).map(|_| g.last_name().to_string()).collect()
        };
        let names = Arc::new(names);
        let c = 16;
        let (base, _) = self
            .probe(raw::list(&url, &schema, c, self.plan.window, names.clone()))
            .await;
        let base = base?;
        let (api, n2) = (self.api.clone(), names.clone());
        let (m, res) = self
            .probe(load::closed(c, self.plan.window, move |_| {
                let (api, names) = (api.clone(), n2.clone());
                async move {
                    let n = &names[rand::random::<usize>() % names.len()];
                    api.get(&format!("/v1/patients?lastName={n}&limit=50"))
                        .await
                        .status
                }
            }))
            .await;
        let row = Row::new("lists", "list pages by lastName", &m, Some(c), ok_read, res)
            .against("PG filtered select", &base);
        self.push(row);
        // Location and date-of-birth filters, and a second page.
        let dobs: Vec<String> = {
            let mut g = self.gen.lock().expect("gen");
            (0..256).map(|_| g.date_of_birth()).collect()
        };
        let dobs = Arc::new(dobs);
        let api = self.api.clone();
        let (m, res) = self
            .probe(load::closed(c, self.plan.window, move |_| {
                let (api, dobs) = (api.clone(), dobs.clone());
                async move {
                    let k = rand::random::<usize>();
                    let path = match k % 3 {
                        0 => format!("/v1/patients?dateOfBirth={}&limit=50", dobs[k % dobs.len()]),
                        1 => format!("/v1/patients?locationID={CLIENT}-{}&limit=50", 1 + k % 4),
                        _ => format!("/v1/patients?clientID={CLIENT}&limit=50"),
                    };
                    let first = api.get(&path).await;
                    if k % 6 != 1 || !first.ok() {
                        return first.status;
                    }
                    match first.json()["nextCursor"].as_str() {
                        Some(cur) => api.get(&format!("{path}&cursor={cur}")).await.status,
                        None => first.status,
                    }
                }
            }))
            .await;
        let row = Row::new(
            "lists",
            "list pages by location/DOB/client",
            &m,
            Some(c),
            ok_read,
            res,
        );
        self.push(row);
        Ok(())
    }

    /// Point reads with and without the access log: the query API served in
    /// this process, one server at a time on a port of its own, over the
    /// stack's database; the two differ only in the log. Each connection
    /// count gets a row (the two at equal connections); the target compares
    /// the best rate of each over all the counts (their capacities).
    async fn access_log(&mut self) -> anyhow::Result<()> {
        let ids = sample_ids(&self.read, 10_000).await?;
        let cfg = Arc::new(self.cfg.clone());
        // Few connections leave a logged read waiting out its commit's
        // flush with nothing else to do (see BENCHMARKS.md, "The access
        // log and the rate of reads"); many let concurrent reads share
        // commits. Both ends are measured, for both servers: each one's
        // median rate at each count.
        let (mut off_rates, mut on_rates) = (Vec::new(), Vec::new());
        for c in ACCESS_LOG_CONNECTIONS {
            // Off and on alternate, five times: one pair of windows moves by
            // tens of percent on two shared cores; the median pair is the row.
            let mut pairs: Vec<Pair> = Vec::new();
            for round in 0..ACCESS_LOG_ROUNDS {
                // Off first, then on first: a drift over the section (the
                // log's table growing, a checkpoint) weighs on both alike.
                let order = if round % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                let mut pair = Vec::new();
                for logged in order {
                    pair.push(self.served_reads(&cfg, logged, &ids, c).await?);
                }
                if order[0] {
                    pair.reverse();
                }
                let (with, res) = pair.pop().expect("two runs");
                let (without, _) = pair.pop().expect("two runs");
                pairs.push((
                    with.throughput() / without.throughput().max(1e-9),
                    with,
                    without,
                    res,
                ));
            }
            let mut off: Vec<f64> = pairs.iter().map(|p| p.2.throughput()).collect();
            let mut on: Vec<f64> = pairs.iter().map(|p| p.1.throughput()).collect();
            off_rates.push((c, median(&mut off)));
            on_rates.push((c, median(&mut on)));
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let ratios: Vec<String> = pairs.iter().map(|p| format!("{:.2}", p.0)).collect();
            self.note(format!(
                "access log on/off at {c} connections, each of {ACCESS_LOG_ROUNDS} rounds: {} (the median is the row)",
                ratios.join(", ")
            ));
            let (_, with, without, res) = pairs.swap_remove(pairs.len() / 2);
            let row = Row::new(
                "access log",
                "point reads, access log on",
                &with,
                Some(c),
                ok_read,
                res,
            )
            .against("the same reads, access log off", &without);
            self.push(row);
        }
        if let (Some((with_connections, with_rate)), Some((without_connections, without_rate))) =
            (best(&on_rates), best(&off_rates))
        {
            self.report.access_log_capacity = Some(report::Capacity {
                with_rate,
                with_connections,
                without_rate,
                without_connections,
            });
        }
        self.auditor_queries().await
    }

    /// One window of point reads at `connections`, served by this process
    /// (the access log on or off), printing its rate and cost.
    async fn served_reads(
        &self,
        cfg: &Arc<Config>,
        logged: bool,
        ids: &Arc<Vec<Uuid>>,
        connections: usize,
    ) -> anyhow::Result<(Measured, Resources)> {
        let server = QueryServer::start(cfg, logged).await?;
        let (api, ids) = (Arc::new(self.api.at(&server.base).await), ids.clone());
        let batches = Batches::now();
        let (m, res) = self
            .probe(load::closed(connections, self.plan.window, move |_| {
                read_one(api.clone(), ids.clone())
            }))
            .await;
        server.stop().await;
        println!(
            "    log {}: {:.0} reads/s, {:.0} µs CPU per read (this process {:.0}, Postgres {:.0}){}",
            if logged { "on " } else { "off" },
            m.throughput(),
            res.cpu_per_op_us(m.throughput(), CpuOf::All),
            res.cpu_per_op_us(m.throughput(), CpuOf::LoadGen),
            res.cpu_per_op_us(m.throughput(), CpuOf::Service("postgres")),
            if logged { batches.since() } else { String::new() },
        );
        Ok((m, res))
    }

    /// Prints `text` and keeps it among the report's notes.
    fn note(&mut self, text: String) {
        println!("  {text}");
        self.report.notes.push(text);
    }

    /// An auditor's time filters on the log the section has grown: the
    /// last minute's entries, of everyone and of this partner, a page each.
    async fn auditor_queries(&mut self) -> anyhow::Result<()> {
        let entries: i64 = self
            .write
            .get()
            .await?
            .query_one("SELECT count(*) FROM access_log", &[])
            .await?
            .get(0);
        self.note(format!(
            "auditor queries ran on an access log of {entries} entries"
        ));
        let (api, partner) = (self.api.clone(), self.partner);
        // (pages answered, entries on them)
        let items = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let counted = items.clone();
        let (m, res) = self
            .probe(load::closed(4, self.plan.window, move |i| {
                let (api, counted) = (api.clone(), counted.clone());
                async move {
                    let since = (chrono::Utc::now() - chrono::TimeDelta::minutes(1))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    let path = if i % 2 == 0 {
                        format!("/v1/access-log?since={since}&limit=50")
                    } else {
                        format!("/v1/access-log?partnerID={partner}&since={since}&limit=50")
                    };
                    let page = api.get(&path).await;
                    if page.ok() {
                        let n = page.json()["items"].as_array().map_or(0, Vec::len);
                        counted.0.fetch_add(1, Ordering::Relaxed);
                        counted.1.fetch_add(n, Ordering::Relaxed);
                    }
                    page.status
                }
            }))
            .await;
        let per_page =
            items.1.load(Ordering::Relaxed) as f64 / items.0.load(Ordering::Relaxed).max(1) as f64;
        self.note(format!(
            "auditor queries returned {per_page:.1} entries per page on average (at most 50)"
        ));
        let row = Row::new(
            "access log",
            "auditor queries: the last minute's entries, all / one partner's",
            &m,
            Some(4),
            ok_read,
            res,
        );
        self.push(row);
        Ok(())
    }

    /// Patients in the portal: logins (an Argon2id check and a new session
    /// each) and results pages (the list and an order's detail, signed in),
    /// each patient on a loopback address of its own. The portal lets an
    /// address log in 20 times a minute (a burst of 20, then one every 3 s),
    /// so the patients' addresses bound the login rate the section can
    /// measure: 250 addresses allow about 200 logins/s over a 30 s window,
    /// several times what Argon2id allows two cores (64 allowed about 55/s,
    /// which a faster machine's logins passed, and the rest of the window
    /// measured 429s).
    async fn portal(&mut self) -> anyhow::Result<()> {
        const PATIENTS: usize = 250;
        const PORTAL_PASSWORD: &str = "bench password 1234";
        let outbox = match (&self.cfg.smtp_url, &self.cfg.mail_outbox) {
            (Some(_), _) => bail!("LIS_SMTP_URL is set: the portal workload reads invitations from the local stack's outbox"),
            (None, Some(dir)) => dir.clone(),
            (None, None) => self.cfg.data_dir.join("outbox"),
        };
        let run = Uuid::new_v4().simple().to_string();
        let mut emails = Vec::new();
        let mut orders = Vec::new();
        for i in 0..PATIENTS {
            let email = format!("bench-{}-{i}@example.org", &run[..8]);
            let mut body = self.gen.lock().expect("gen").patient_body();
            body["email"] = serde_json::json!(email);
            body["externalPatientID"] = serde_json::json!(format!("P-{}-{i}", &run[..8]));
            let r = self.api.post("/v1/patients", &body).await;
            if r.status != 201 {
                bail!("a portal patient's create answered {}", r.status);
            }
            let p = r.json();
            let order = self
                .api
                .post(
                    "/v1/orders",
                    &serde_json::json!({
                        "patientID": p["patientID"], "clientID": p["clientID"], "locationID": p["locationID"],
                        "tests": [{"code": "CBC"}], "specimen": {"type": "whole blood"}
                    }),
                )
                .await
                .json()["orderID"]
                .as_str()
                .context("an order id")?
                .to_string();
            let steps = [
                ("collect", serde_json::json!({})),
                ("receive", serde_json::json!({})),
                ("start", serde_json::json!({})),
                (
                    "results",
                    serde_json::json!({"results": [
                    {"code": "HGB", "value": "13.4", "unit": "g/dL"},
                    {"code": "WBC", "value": 6.1, "unit": "10^9/L"}]}),
                ),
                ("finalize", serde_json::json!({})),
            ];
            for (action, body) in steps {
                let r = self
                    .api
                    .post(&format!("/v1/orders/{order}/{action}"), &body)
                    .await;
                if !r.ok() {
                    bail!("a portal order's {action} answered {}", r.status);
                }
            }
            emails.push(email);
            orders.push(order);
        }
        let links = portal::client::links(&outbox, &emails, Duration::from_secs(120)).await?;
        let mut patients = Vec::new();
        for (i, ((email, order), link)) in emails.into_iter().zip(orders).zip(links).enumerate() {
            let mut p = portal::client::Patient::new(i, email, PORTAL_PASSWORD)?;
            let status = p.activate(&link).await.status;
            if status != 303 {
                bail!("a portal activation answered {status}");
            }
            let status = p.prepare(&self.base).await;
            if status != 200 {
                bail!("the portal's login page answered {status}");
            }
            patients.push((p, format!("/portal/results/{order}")));
        }
        let patients = Arc::new(patients);
        let c = 16;
        let (ps, base) = (patients.clone(), self.base.clone());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, res) = self
            .probe(load::closed(c, self.plan.window, move |_| {
                let (ps, base, next) = (ps.clone(), base.clone(), next.clone());
                async move {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ps[i % ps.len()].0.login(&base).await.0
                }
            }))
            .await;
        let row = Row::new(
            "portal",
            "logins (Argon2id check, new session)",
            &m,
            Some(c),
            |s| s == 303,
            res,
        );
        self.push(row);
        // The released orders in the read models, then a fresh session for
        // each patient's page views.
        let ids: Vec<Uuid> = patients
            .iter()
            .filter_map(|(_, detail)| detail.rsplit('/').next()?.parse().ok())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .read
            .get()
            .await?
            .query_one(
                "SELECT count(*) FROM orders WHERE order_id = ANY($1) AND status = 'final'",
                &[&ids],
            )
            .await?
            .get::<_, i64>(0)
            < ids.len() as i64
        {
            if Instant::now() > deadline {
                bail!("the portal patients' orders are not in the read models after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut patients =
            Arc::try_unwrap(patients).map_err(|_| anyhow::anyhow!("patients shared"))?;
        for (p, _) in &mut patients {
            let (status, session) = p.login(&self.base).await;
            if status != 303 {
                bail!("a portal login answered {status}");
            }
            p.signed_in(session);
        }
        let (ps, base) = (Arc::new(patients), self.base.clone());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, res) = self
            .probe(load::closed(c, self.plan.window, move |_| {
                let (ps, base, next) = (ps.clone(), base.clone(), next.clone());
                async move {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (p, detail) = &ps[i % ps.len()];
                    let page = if i % 2 == 1 {
                        detail.as_str()
                    } else {
                        "/portal/results"
                    };
                    p.view(&base, page).await.status
                }
            }))
            .await;
        let row = Row::new(
            "portal",
            "results pages (list and detail, signed in)",
            &m,
            Some(c),
            ok_read,
            res,
        );
        self.push(row);
        Ok(())
    }

    /// A partner-like mix over patients and orders.
    async fn mixed(&mut self) -> anyhow::Result<()> {
        const WRITE_SHARE: f64 = 0.50;
        let c = 16;
        let patients = bench_patients(&self.read).await?;
        let ids = sample_ids(&self.read, 10_000).await?;
        let state = Arc::new(MixState {
            patients: Mutex::new(patients.to_vec()),
            orders: Mutex::new(VecDeque::new()),
        });
        let (api, gen, st, ids2) = (
            self.api.clone(),
            self.gen.clone(),
            state.clone(),
            ids.clone(),
        );
        let (m, res) = self
            .probe(load::closed(c, self.plan.window, move |_| {
                mixed_op(api.clone(), gen.clone(), st.clone(), ids2.clone())
            }))
            .await;
        let payload = self.gen.lock().expect("gen").patient_body();
        let (base, _) = self
            .probe(raw::mix(
                &self.cfg.database_url,
                &self.cfg.read_schema,
                c,
                self.plan.window,
                WRITE_SHARE,
                ids,
                payload,
            ))
            .await;
        let row = Row::new(
            "mixed",
            "mixed (50% writes: creates, patches, orders, actions)",
            &m,
            Some(c),
            |s| matches!(s, 200 | 201 | 409),
            res,
        )
        .against("PG 50% inserts / 50% PK selects", &base?);
        self.push(row);
        Ok(())
    }

    /// Freshness at a tenth of the maximum write rate (what timers cost
    /// when nothing queues) and at half of it (the target), with relay and
    /// projector lag measured meanwhile.
    async fn freshness(&mut self, max: f64) -> anyhow::Result<()> {
        let (light, _) = self.freshness_at(max / 10.0, max).await?;
        self.report.freshness_light = Some(light);
        let (half, lag) = self.freshness_at(max / 2.0, max).await?;
        self.report.freshness = Some(half);
        self.report.lag = Some(lag);
        Ok(())
    }

    /// Freshness of creates offered at `rate` per second (`max` is the
    /// measured maximum), and the relay's and projector's lag meanwhile.
    async fn freshness_at(
        &mut self,
        rate: f64,
        max: f64,
    ) -> anyhow::Result<(report::Freshness, report::Lag)> {
        const POLL: Duration = Duration::from_millis(5);
        const SAMPLE_EVERY: u64 = 10;
        // From an idle pipeline (as every window, see `probe`): what earlier
        // sections left for the relay and the projector would otherwise be
        // measured as this run's lag.
        let idle = self.settle().await?;
        println!(
            "  the relay, the projector, the mailer and the analytics publisher caught up with earlier sections in {:.1} s",
            idle.as_secs_f64()
        );
        let rate = rate.max(1.0);
        let window = self.plan.window;
        let warm_ops = (rate * window.warmup.as_secs_f64()).ceil() as u64;
        let fresh = Arc::new(Mutex::new(Recorder::default()));
        let not_seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pollers = Arc::new(Mutex::new(Vec::new()));
        // Direct commit -> Kafka on this partner's records.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tail = tail_consumer(self.cfg.clone(), self.partner, stop.clone());
        // Gauges.
        let gauges = {
            let (base, stop) = (self.base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = api::metrics(
                        &base,
                        &["lis_relay_lag_seconds", "lis_projector_lag_seconds"],
                    )
                    .await;
                    if let (Some(r), Some(p)) = (v[0], v[1]) {
                        samples.push((r, p));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                samples
            })
        };
        let (api, gen) = (self.api.clone(), self.gen.clone());
        let (f2, ns2, p2) = (fresh.clone(), not_seen.clone(), pollers.clone());
        let (m, res) = self
            .probe(load::open(rate, window, 1024, move |i| {
                let (api, gen, fresh, not_seen, pollers) = (
                    api.clone(),
                    gen.clone(),
                    f2.clone(),
                    ns2.clone(),
                    p2.clone(),
                );
                async move {
                    let body = gen.lock().expect("gen").patient_body();
                    let a = api.post("/v1/patients", &body).await;
                    let acked = Instant::now();
                    if a.status == 201 && i >= warm_ops && i.is_multiple_of(SAMPLE_EVERY) {
                        if let Some(id) = a.json()["patientID"].as_str().map(str::to_string) {
                            let h = tokio::spawn(async move {
                                let path = format!("/v1/patients/{id}");
                                let mut pause = POLL;
                                while acked.elapsed() < Duration::from_secs(10) {
                                    if api.get(&path).await.status == 200 {
                                        fresh.lock().expect("fresh").record(acked.elapsed(), 200);
                                        return;
                                    }
                                    tokio::time::sleep(pause).await;
                                    // 5 ms steps for the first 100 ms, then
                                    // slower so pollers do not load the API.
                                    if acked.elapsed() > Duration::from_millis(100) {
                                        pause = (pause * 2).min(Duration::from_millis(100));
                                    }
                                }
                                not_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            });
                            pollers.lock().expect("pollers").push(h);
                        }
                    }
                    a.status
                }
            }))
            .await;
        let handles: Vec<_> = std::mem::take(&mut *pollers.lock().expect("pollers"));
        for h in handles {
            let _ = h.await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let direct = tail.await.unwrap_or_default();
        let gauge_samples = gauges.await.unwrap_or_default();
        let fresh = fresh.lock().expect("fresh").clone();
        let f = report::Freshness {
            write_rate: rate,
            max_write_rate: max,
            samples: fresh.count(),
            not_seen: not_seen.load(std::sync::atomic::Ordering::Relaxed),
            latency: fresh.latency(),
            write_latency: m.rec.latency(),
            poll_ms: POLL.as_secs_f64() * 1000.0,
            sample_every: SAMPLE_EVERY,
            resources: res,
        };
        println!(
            "  freshness at {:.0}/s: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, not seen {}",
            rate, f.samples, f.latency.p50, f.latency.p99, f.latency.max, f.not_seen
        );
        let pct = |mut v: Vec<f64>, q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q).round() as usize]
        };
        let relay: Vec<f64> = gauge_samples.iter().map(|s| s.0 * 1000.0).collect();
        let proj: Vec<f64> = gauge_samples.iter().map(|s| s.1 * 1000.0).collect();
        let k = direct.latency();
        let lag = report::Lag {
            samples: gauge_samples.len() as u64,
            relay_gauge_p50_ms: pct(relay.clone(), 0.5),
            relay_gauge_max_ms: pct(relay, 1.0),
            projector_gauge_p50_ms: pct(proj.clone(), 0.5),
            projector_gauge_max_ms: pct(proj, 1.0),
            commit_to_kafka: k,
            commit_to_kafka_n: direct.count(),
            kafka_to_read_model_p50_ms: (f.latency.p50 - k.p50).max(0.0),
            kafka_to_read_model_p99_ms: (f.latency.p99 - k.p99).max(0.0),
        };
        println!(
            "  commit -> Kafka ({} records): p50 {:.1} ms, p99 {:.1} ms; Kafka -> read model ≈ p50 {:.1} ms; gauges: relay p50 {:.1} ms, projector p50 {:.1} ms",
            lag.commit_to_kafka_n,
            k.p50,
            k.p99,
            lag.kafka_to_read_model_p50_ms,
            lag.relay_gauge_p50_ms,
            lag.projector_gauge_p50_ms
        );
        Ok((f, lag))
    }

    /// Relay throughput draining a bulk seeding, beside raw produce.
    async fn relay(&mut self) -> anyhow::Result<()> {
        println!("  seeding {} patients in bulk…", self.plan.drain_patients);
        let d = seed::drain(
            &self.cfg,
            &self.write,
            &self.read,
            &self.gen,
            CLIENT,
            self.plan.drain_patients,
        )
        .await?;
        // A real record to copy: the newest patient registration.
        let sample = latest_record(&self.cfg).await?;
        let p = raw::produce(&self.cfg, self.plan.produce_records, &sample).await?;
        let raw_rate = p.records as f64 / p.secs.max(1e-9);
        let r = report::Relay {
            drain: d,
            relay_rate: d.relay_rate(),
            projector_rate: d.events as f64 / d.projector_s.max(1e-9),
            raw_produce_rate: raw_rate,
            raw_records: p.records,
            record_bytes: p.record_bytes,
            ratio: d.relay_rate() / raw_rate.max(1e-9),
        };
        println!(
            "  relay {:.0} events/s vs raw produce {:.0} records/s ({} B): ratio {:.2}",
            r.relay_rate, r.raw_produce_rate, r.record_bytes, r.ratio
        );
        self.report.relay = Some(r);
        Ok(())
    }

    /// Rebuild of the read models from offset 0 into a fresh schema.
    async fn replay(&mut self) -> anyhow::Result<()> {
        let mut log: u64 = projector::log_ends(&self.cfg)
            .await?
            .values()
            .map(|v| *v as u64)
            .sum();
        if log < self.plan.replay_events {
            // About 1.6 events per seeded patient (60% open an account).
            let n = ((self.plan.replay_events - log) as f64 / 1.55).ceil() as u64;
            println!("  the log holds {log} events; seeding {n} patients in bulk…");
            seed::drain(&self.cfg, &self.write, &self.read, &self.gen, CLIENT, n).await?;
            log = projector::log_ends(&self.cfg)
                .await?
                .values()
                .map(|v| *v as u64)
                .sum();
        }
        println!("  raw consume of the {log}-event log from offset 0…");
        let consumed = raw::consume(&self.cfg).await?;
        let consume_rate = consumed.records as f64 / consumed.secs.max(1e-9);
        println!(
            "    {} records in {:.1} s: {:.0}/s",
            consumed.records, consumed.secs, consume_rate
        );
        let url = self.cfg.database_url.clone();
        let admin = platform::db::connect(&url, "public").await?;
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {REPLAY_SCHEMA} CASCADE"))
            .await?;
        platform::db::migrate(&url, REPLAY_SCHEMA, projector::migrations()).await?;
        let mut fresh = self.cfg.clone();
        fresh.read_schema = REPLAY_SCHEMA.into();
        let pool = platform::db::pool(&url, REPLAY_SCHEMA, 4)?;
        println!("  projector::catch_up into the fresh schema {REPLAY_SCHEMA}…");
        let t = Instant::now();
        let (applied, res) = self
            .probe(projector::catch_up(
                &fresh,
                &pool,
                Duration::from_secs(4 * 3600),
            ))
            .await;
        let applied = applied?;
        let secs = t.elapsed().as_secs_f64();
        let rate = applied as f64 / secs.max(1e-9);
        println!("    {applied} events in {secs:.1} s: {rate:.0}/s");
        println!("  raw batched insert of the rebuilt rows…");
        let ins = raw::batch_insert(&url, REPLAY_SCHEMA).await;
        drop(pool);
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {REPLAY_SCHEMA} CASCADE"))
            .await?;
        let ins = ins?;
        let insert_events_rate = applied as f64 / ins.secs.max(1e-9);
        println!(
            "    {} rows in {:.1} s: {:.0} events/s equivalent",
            ins.rows, ins.secs, insert_events_rate
        );
        let slower = consume_rate.min(insert_events_rate);
        let r = report::Replay {
            log_events: log,
            applied,
            secs,
            rate,
            consume_rate,
            consume_secs: consumed.secs,
            insert_rows: ins.rows,
            insert_secs: ins.secs,
            insert_events_rate,
            slower_raw_rate: slower,
            ratio: rate / slower.max(1e-9),
            resources: res,
        };
        println!("  replay ratio to the slower raw part: {:.2}", r.ratio);
        self.report.replay = Some(r);
        Ok(())
    }

    /// Checks the targets.
    fn targets(&mut self) {
        let mut t = Vec::new();
        let ratios = |group: &str, row: &str| -> Vec<(usize, f64)> {
            self.report
                .rows
                .iter()
                .filter(|r| r.group == group && r.name == row)
                .filter_map(|r| Some((r.concurrency?, r.ratio?)))
                .collect()
        };
        for (group, row, name, goal, min) in [
            (
                "writes",
                "patient creates",
                "patient creates vs raw insert+commit",
                "≥ 50% of the raw single-insert commit rate at equal concurrency",
                0.5,
            ),
            (
                "writes",
                "order placements",
                "order placements vs raw insert+commit",
                "≥ 40% of the raw single-insert commit rate at equal concurrency",
                0.4,
            ),
            (
                "reads",
                "point reads",
                "point reads vs raw primary-key select",
                "≥ 50% of the raw primary-key select rate at equal concurrency",
                0.5,
            ),
        ] {
            let r = ratios(group, row);
            t.push(Target {
                name: name.into(),
                goal: goal.into(),
                measured: if r.is_empty() {
                    "—".into()
                } else {
                    percents_at(&r)
                },
                met: (!r.is_empty()).then(|| r.iter().all(|(_, x)| *x >= min)),
            });
        }
        t.push(access_log_target(
            self.report.access_log_capacity.as_ref(),
            &ratios("access log", "point reads, access log on"),
        ));
        t.push(match &self.report.replay {
            Some(r) => Target {
                name: "replay vs its raw parts".into(),
                goal: "≥ 50% of the slower of raw consume and raw batched insert".into(),
                measured: format!(
                    "{:.0} events/s = {:.0}% of {:.0}/s",
                    r.rate,
                    r.ratio * 100.0,
                    r.slower_raw_rate
                ),
                met: Some(r.ratio >= 0.5),
            },
            None => Target {
                name: "replay vs its raw parts".into(),
                goal: "≥ 50% of the slower of raw consume and raw batched insert".into(),
                measured: "—".into(),
                met: None,
            },
        });
        t.push(match &self.report.freshness {
            Some(f) if f.samples > 0 => Target {
                name: "freshness p99 at half the max write rate".into(),
                goal: "< 250 ms".into(),
                measured: format!(
                    "{:.1} ms at {:.0}/s ({} samples, {} not seen)",
                    f.latency.p99, f.write_rate, f.samples, f.not_seen
                ),
                met: Some(f.latency.p99 < 250.0 && f.not_seen == 0),
            },
            _ => Target {
                name: "freshness p99 at half the max write rate".into(),
                goal: "< 250 ms".into(),
                measured: "—".into(),
                met: None,
            },
        });
        let measured: Vec<&Tier> = self
            .report
            .growth
            .iter()
            .filter(|t| t.skipped.is_none() && t.write.is_some())
            .collect();
        let first = measured.first().filter(|t| t.tier == 10_000);
        let last = measured
            .last()
            .filter(|l| first.is_some_and(|f| l.tier > f.tier));
        for (what, pick) in [
            (
                "write",
                (|t: &Tier| t.write.as_ref().map(|r| r.latency.p99)) as fn(&Tier) -> Option<f64>,
            ),
            ("read", |t: &Tier| t.read.as_ref().map(|r| r.latency.p99)),
        ] {
            let largest = self.plan.tiers.last().copied().unwrap_or(0);
            t.push(match (first, last) {
                (Some(f), Some(l)) => {
                    let (a, b) = (pick(f).unwrap_or(0.0), pick(l).unwrap_or(0.0));
                    Target {
                        name: format!("{what} p99 growth"),
                        goal: format!("p99 at {largest} stored ≤ 2× p99 at 10000"),
                        measured: format!(
                            "{b:.1} ms at {} stored vs {a:.1} ms at {} ({:.2}×){}",
                            l.stored,
                            f.stored,
                            b / a.max(1e-9),
                            if l.tier < largest {
                                " — tier of this run"
                            } else {
                                ""
                            }
                        ),
                        met: Some(b <= 2.0 * a),
                    }
                }
                _ => Target {
                    name: format!("{what} p99 growth"),
                    goal: format!("p99 at {largest} stored ≤ 2× p99 at 10000"),
                    measured: "not measurable: the 10000 tier or a larger one was skipped".into(),
                    met: None,
                },
            });
        }
        self.report.targets = t;
    }
}

/// Patients and orders the mixed workload works on.
struct MixState {
    patients: Mutex<Vec<(String, String)>>,
    orders: Mutex<VecDeque<MixOrder>>,
}

/// An order the mixed workload moves along.
struct MixOrder {
    id: String,
    step: u8,
    codes: Vec<String>,
    /// The last write's consistency token: the partner reads its own writes.
    token: Option<String>,
}

/// The order lifecycle the mixed workload walks, one step per action.
const STEPS: [&str; 5] = ["collect", "receive", "start", "results", "finalize"];

async fn mixed_op(
    api: Arc<Api>,
    gen: Arc<Mutex<Gen>>,
    st: Arc<MixState>,
    ids: Arc<Vec<Uuid>>,
) -> u16 {
    let dice = gen.lock().expect("gen").dice();
    let patient = || {
        let p = st.patients.lock().expect("patients");
        p[rand::random::<usize>() % p.len()].clone()
    };
    if dice < 0.30 {
        return read_one(api, ids).await;
    }
    if dice < 0.40 {
        let order = st
            .orders
            .lock()
            .expect("orders")
            .front()
            .map(|o| (o.id.clone(), o.token.clone()));
        return match order {
            Some((o, token)) => {
                api.get_after(&format!("/v1/orders/{o}"), token.as_deref())
                    .await
                    .status
            }
            None => read_one(api, ids).await,
        };
    }
    if dice < 0.50 {
        let name = gen.lock().expect("gen").last_name();
        return api
            .get(&format!("/v1/patients?lastName={name}&limit=50"))
            .await
            .status;
    }
    if dice < 0.65 {
        let body = gen.lock().expect("gen").patient_body();
        let a = api.post("/v1/patients", &body).await;
        if a.status == 201 {
            let v = a.json();
            if let (Some(id), Some(l)) = (v["patientID"].as_str(), v["locationID"].as_str()) {
                st.patients
                    .lock()
                    .expect("patients")
                    .push((id.to_string(), l.to_string()));
            }
        }
        return a.status;
    }
    if dice < 0.75 {
        let (id, _) = patient();
        let body = gen.lock().expect("gen").patient_patch();
        return api.patch(&format!("/v1/patients/{id}"), &body).await.status;
    }
    let next = if dice < 0.85 {
        None
    } else {
        st.orders.lock().expect("orders").pop_front()
    };
    match next {
        None => {
            let (id, location) = patient();
            let body = gen.lock().expect("gen").order_body(&id, &location);
            let codes: Vec<String> = body["tests"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|c| c["code"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let a = api.post("/v1/orders", &body).await;
            if a.status == 201 {
                if let Some(o) = a.json()["orderID"].as_str() {
                    st.orders.lock().expect("orders").push_back(MixOrder {
                        id: o.to_string(),
                        step: 0,
                        codes,
                        token: a.token.clone(),
                    });
                }
            }
            a.status
        }
        Some(mut order) => {
            let action = STEPS[order.step as usize];
            let body = if action == "results" {
                gen.lock().expect("gen").results_body(&order.codes)
            } else {
                json!({})
            };
            let a = api
                .post(&format!("/v1/orders/{}/{action}", order.id), &body)
                .await;
            if a.status == 200 {
                order.step += 1;
                order.token = a.token.clone();
            }
            if (order.step as usize) < STEPS.len() {
                st.orders.lock().expect("orders").push_back(order);
            }
            a.status
        }
    }
}

/// Follows the patients topic from its end and measures, for this partner's
/// records, the time from the event's acceptance to the record's timestamp
/// (set by the relay's producer).
fn tail_consumer(
    cfg: Config,
    partner: Uuid,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Recorder> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    tokio::task::spawn_blocking(move || {
        let mut rec = Recorder::default();
        let group = format!("lis-bench-tail-{}", Uuid::new_v4().simple());
        let Ok(c) =
            platform::kafka::consumer_config(&cfg, &group, platform::kafka::FetchWait::Short)
                .create::<BaseConsumer>()
        else {
            return rec;
        };
        let topic = platform::kafka::Topic::Patients;
        let name = topic.name(&cfg.topic_prefix);
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..topic.partitions(&cfg) {
            let _ = tpl.add_partition_offset(&name, p, rdkafka::Offset::End);
        }
        if c.assign(&tpl).is_err() {
            return rec;
        }
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
                continue;
            };
            let Some(ts) = m.timestamp().to_millis() else {
                continue;
            };
            let Ok(env) = serde_json::from_slice::<platform::envelope::Envelope>(
                m.payload().unwrap_or_default(),
            ) else {
                continue;
            };
            if !matches!(env.actor, Actor::Partner { id } if id == partner) {
                continue;
            }
            let lag_ms = ts - env.occurred_at.timestamp_millis();
            rec.record(Duration::from_millis(lag_ms.max(0) as u64), 200);
        }
        rec
    })
}

/// The newest patient registration record of the log, to produce copies of.
async fn latest_record(cfg: &Config) -> anyhow::Result<raw::Sample> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let group = format!("lis-bench-sample-{}", Uuid::new_v4().simple());
        let c: BaseConsumer =
            platform::kafka::consumer_config(&cfg, &group, platform::kafka::FetchWait::Short)
                .create()?;
        let topic = platform::kafka::Topic::Patients;
        let name = topic.name(&cfg.topic_prefix);
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..topic.partitions(&cfg) {
            let (low, high) = c.fetch_watermarks(&name, p, Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(&name, p, rdkafka::Offset::Offset((high - 50).max(low)))?;
            }
        }
        c.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m?;
            let payload = m.payload().unwrap_or_default();
            let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
            if v["type"] == "PatientRegistered" {
                return Ok(raw::Sample {
                    payload: payload.to_vec(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        bail!("no patient registration found at the end of the patients topic")
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [10.0, 40.0, 20.0, 30.0]), 30.0);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn the_best_rate_is_the_greatest_with_its_connections() {
        let rates = [(8, 12_036.0), (16, 10_813.0), (64, 10_282.0)];
        assert_eq!(best(&rates), Some((8, 12_036.0)));
        assert_eq!(best(&[]), None);
        assert_eq!(
            percents_at(&[(8, 0.514), (64, 1.04)]),
            "51% at 8, 104% at 64"
        );
    }

    #[test]
    fn the_access_log_target_compares_best_rates_not_equal_connections() {
        let equal = [(8, 0.5), (64, 1.0)];
        let capacity = |with_rate| report::Capacity {
            with_rate,
            with_connections: 64,
            without_rate: 10_000.0,
            without_connections: 8,
        };
        let met = access_log_target(Some(&capacity(8_900.0)), &equal);
        assert_eq!(met.met, Some(true));
        assert_eq!(
            met.measured,
            "89% (8900/s at 64 vs 10000/s at 8 connections); at equal connections 50% at 8, 100% at 64"
        );
        assert_eq!(
            access_log_target(Some(&capacity(7_900.0)), &equal).met,
            Some(false)
        );
        assert_eq!(access_log_target(None, &equal).met, None);
    }
}
