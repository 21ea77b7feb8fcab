//! The report: what was measured, as JSON, as Markdown tables, and as a
//! chart of latency percentiles against throughput.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::load::{Latency, Measured};
use super::procs::{CpuOf, Machine, Resources};
use super::seed::Drain;

/// One workload run beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Section: `writes`, `writes-open`, `reads`, `lists`, `mixed`, `growth`.
    pub group: String,
    /// What was sent.
    pub name: String,
    /// `closed, 16 connections` or `open, 120/s`.
    pub model: String,
    /// Workers (closed model).
    pub concurrency: Option<usize>,
    /// Arrival rate (open model).
    pub offered_rate: Option<f64>,
    /// Answers per second in the measured window.
    pub throughput: f64,
    /// Answers counted.
    pub ops: u64,
    /// Latency percentiles, ms.
    pub latency: Latency,
    /// Answers by status (`0`: no answer).
    pub statuses: BTreeMap<String, u64>,
    /// Unexpected answers by status.
    pub errors: BTreeMap<String, u64>,
    /// The raw baseline at the same concurrency, if there is one.
    pub baseline: Option<Baseline>,
    /// `throughput / baseline.throughput`.
    pub ratio: Option<f64>,
    /// Resource use during the workload.
    pub resources: Resources,
}

/// A raw baseline's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// What it does.
    pub name: String,
    /// Operations per second.
    pub throughput: f64,
    /// Latency percentiles, ms.
    pub latency: Latency,
    /// Failed operations.
    pub errors: u64,
}

impl Row {
    /// Builds a row from a measurement; `ok` says which statuses are
    /// expected answers.
    pub fn new(
        group: &str,
        name: &str,
        m: &Measured,
        concurrency: Option<usize>,
        ok: impl Fn(u16) -> bool,
        resources: Resources,
    ) -> Row {
        let mut statuses = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for (s, n) in m.rec.statuses() {
            let key = if *s == 0 {
                "no answer".to_string()
            } else {
                s.to_string()
            };
            statuses.insert(key.clone(), *n);
            if !ok(*s) {
                errors.insert(key, *n);
            }
        }
        let model = match (concurrency, m.offered) {
            (Some(c), _) => format!("closed, {c} conn."),
            (None, Some(r)) => format!("open, {r:.0}/s"),
            _ => String::new(),
        };
        Row {
            group: group.into(),
            name: name.into(),
            model,
            concurrency,
            offered_rate: m.offered,
            throughput: m.throughput(),
            ops: m.rec.count(),
            latency: m.rec.latency(),
            statuses,
            errors,
            baseline: None,
            ratio: None,
            resources,
        }
    }

    /// Sets the baseline and the ratio to it.
    pub fn against(mut self, name: &str, b: &Measured) -> Row {
        let errors = b
            .rec
            .statuses()
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum();
        self.ratio = Some(self.throughput / b.throughput().max(1e-9));
        self.baseline = Some(Baseline {
            name: name.into(),
            throughput: b.throughput(),
            latency: b.rec.latency(),
            errors,
        });
        self
    }

    /// Unexpected answers.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Freshness: from a write's 2xx until a read without a consistency token
/// shows it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Freshness {
    /// Writes per second offered.
    pub write_rate: f64,
    /// The maximum write rate it is half of.
    pub max_write_rate: f64,
    /// Writes whose visibility was timed.
    pub samples: u64,
    /// Writes not visible within 10 s.
    pub not_seen: u64,
    /// Percentiles, ms.
    pub latency: Latency,
    /// The writes' own latency, ms.
    pub write_latency: Latency,
    /// Interval between visibility polls, ms (the resolution).
    pub poll_ms: f64,
    /// One write in this many is timed.
    pub sample_every: u64,
    /// Resources during the run.
    pub resources: Resources,
}

/// Relay and projector lag during the steady write phase.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Lag {
    /// Gauge samples taken.
    pub samples: u64,
    /// `lis_relay_lag_seconds` (acceptance -> published) p50 / max, ms.
    pub relay_gauge_p50_ms: f64,
    /// Max of the relay gauge, ms.
    pub relay_gauge_max_ms: f64,
    /// `lis_projector_lag_seconds` (acceptance -> projected) p50, ms.
    pub projector_gauge_p50_ms: f64,
    /// Max of the projector gauge, ms.
    pub projector_gauge_max_ms: f64,
    /// Commit -> Kafka measured directly (record timestamp minus the
    /// event's acceptance time) for this run's writes.
    pub commit_to_kafka: Latency,
    /// Records measured directly.
    pub commit_to_kafka_n: u64,
    /// Kafka -> read model: freshness minus commit -> Kafka, p50 / p99, ms.
    pub kafka_to_read_model_p50_ms: f64,
    /// p99 of the same difference.
    pub kafka_to_read_model_p99_ms: f64,
}

/// Relay throughput beside the raw producer.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Relay {
    /// The bulk seeding it drained.
    pub drain: Drain,
    /// Relay events/s.
    pub relay_rate: f64,
    /// Live projector events/s over the same drain.
    pub projector_rate: f64,
    /// Raw produce records/s (same-size records, relay producer settings).
    pub raw_produce_rate: f64,
    /// Raw records produced.
    pub raw_records: u64,
    /// Bytes per record.
    pub record_bytes: usize,
    /// relay / raw.
    pub ratio: f64,
}

/// Rebuilding the read models from offset 0.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Replay {
    /// Events in the log when the rebuild started.
    pub log_events: u64,
    /// Events the rebuild applied.
    pub applied: u64,
    /// Seconds.
    pub secs: f64,
    /// Events per second.
    pub rate: f64,
    /// Raw consume: records/s of one consumer from offset 0.
    pub consume_rate: f64,
    /// Raw consume seconds.
    pub consume_secs: f64,
    /// Raw batch insert of the rebuilt rows: rows.
    pub insert_rows: u64,
    /// Raw batch insert seconds.
    pub insert_secs: f64,
    /// Raw batch insert as events/s: events / seconds to insert their rows.
    pub insert_events_rate: f64,
    /// The slower of the two raw parts, events/s.
    pub slower_raw_rate: f64,
    /// rate / slower_raw_rate.
    pub ratio: f64,
    /// Resources during the rebuild.
    pub resources: Resources,
}

/// One growth tier.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Tier {
    /// Nominal stored patients.
    pub tier: i64,
    /// Patients actually stored when measured.
    pub stored: i64,
    /// Why it was not measured.
    pub skipped: Option<String>,
    /// Seeding that brought the store to the tier.
    pub seeded: Option<Drain>,
    /// Creates at a fixed rate.
    pub write: Option<Row>,
    /// Point reads at a fixed rate.
    pub read: Option<Row>,
}

/// Point reads' best rate with the access log against their best rate
/// without it, each over every connection count the section measured.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    /// Reads per second with the log: the best median over the counts.
    pub with_rate: f64,
    /// The connection count of that median.
    pub with_connections: usize,
    /// Reads per second without the log, likewise.
    pub without_rate: f64,
    /// The connection count of that median.
    pub without_connections: usize,
}

impl Capacity {
    /// `with_rate / without_rate`.
    pub fn ratio(&self) -> f64 {
        self.with_rate / self.without_rate.max(1e-9)
    }
}

/// A target of the issue.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What.
    pub name: String,
    /// The goal.
    pub goal: String,
    /// What this run measured.
    pub measured: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// Seconds the whole run took.
    pub duration_s: f64,
    /// `--quick`.
    pub quick: bool,
    /// Generator seed.
    pub seed: u64,
    /// Warm-up and measured seconds per run.
    pub warmup_s: f64,
    /// Measured seconds per run.
    pub measure_s: f64,
    /// The machine.
    pub machine: Option<Machine>,
    /// Patients stored when the run started.
    pub stored_at_start: i64,
    /// Workloads.
    pub rows: Vec<Row>,
    /// Growth tiers.
    pub growth: Vec<Tier>,
    /// Freshness at half the maximum write rate.
    pub freshness: Option<Freshness>,
    /// Freshness at a tenth of the maximum write rate.
    pub freshness_light: Option<Freshness>,
    /// Lag.
    pub lag: Option<Lag>,
    /// Relay throughput.
    pub relay: Option<Relay>,
    /// Replay.
    pub replay: Option<Replay>,
    /// Point reads' capacity with and without the access log.
    pub access_log_capacity: Option<Capacity>,
    /// Targets.
    pub targets: Vec<Target>,
    /// How data was seeded and other remarks.
    pub notes: Vec<String>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn errors(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        "0".into()
    } else {
        m.iter()
            .map(|(s, n)| format!("{n}×{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn services(r: &Resources) -> String {
    r.services
        .iter()
        .map(|s| format!("{} {:.1} s / {:.0} MiB", s.name, s.cpu_s, s.peak_rss_mib))
        .collect::<Vec<_>>()
        .join("; ")
}

fn row_table(out: &mut String, rows: &[&Row]) {
    out.push_str(
        "| workload | model | ops/s | p50 | p90 | p99 | p99.9 | max | errors | baseline | baseline ops/s | ratio | load gen CPU |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let (bname, brate, ratio) = match (&r.baseline, r.ratio) {
            (Some(b), Some(x)) => (b.name.clone(), rate(b.throughput), format!("{x:.2}")),
            _ => ("—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
            r.name,
            r.model,
            rate(r.throughput),
            ms(r.latency.p50),
            ms(r.latency.p90),
            ms(r.latency.p99),
            ms(r.latency.p999),
            ms(r.latency.max),
            errors(&r.errors),
            bname,
            brate,
            ratio,
            r.resources.loadgen_cpu_pct,
        );
    }
    out.push('\n');
}

impl Report {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# LIS benchmark report\n");
        let _ = writeln!(o, "- command: `{}`", self.command);
        let _ = writeln!(
            o,
            "- started: {} ({:.0} s in all)",
            self.started_at, self.duration_s
        );
        if let Some(m) = &self.machine {
            let _ = writeln!(
                o,
                "- machine: {} × {}, {} GiB RAM, Linux {}; {}; broker at {}",
                m.cores, m.cpu, m.memory_gib, m.kernel, m.postgres, m.broker
            );
        }
        let _ = writeln!(
            o,
            "- each run: {:.0} s warm-up (excluded), {:.0} s measured; generator seed {}; {} patients stored at start",
            self.warmup_s, self.measure_s, self.seed, self.stored_at_start
        );
        let _ = writeln!(o, "- latencies in ms; ratio = workload ops/s ÷ raw baseline ops/s at the same concurrency\n");

        let _ = writeln!(o, "## Targets\n");
        o.push_str("| target | goal | measured | |\n| --- | --- | --- | --- |\n");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                t.name, t.goal, t.measured, verdict
            );
        }
        o.push('\n');

        for (group, title) in [
            ("portal", "Patient portal (each patient on a loopback address of its own)"),
            ("writes", "Writes: patient creates and order placements (closed model)"),
            ("writes-open", "Writes: patient creates at a fixed arrival rate (open model; latency from the scheduled send time)"),
            ("reads", "Reads: point reads"),
            ("lists", "Reads: filtered list pages"),
            ("access log", "Reads: point reads with the access log (baseline: the same reads without it; both served by the bench process)"),
            ("mixed", "Mixed partner-like workload"),
        ] {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.group == group).collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(o, "## {title}\n");
            row_table(&mut o, &rows);
        }

        if let Some(f) = &self.freshness {
            let _ = writeln!(o, "## Freshness\n");
            let _ = writeln!(
                o,
                "Creates offered at a tenth and at half of the measured maximum ({:.0}/s); one write in {} is sampled, and its patient read with `GET` and no consistency token every {:.0} ms (for 100 ms, then backing off to 100 ms) until it is there; the time runs from the write's 2xx to the answer that shows it.\n",
                f.max_write_rate, f.sample_every, f.poll_ms
            );
            o.push_str("| creates offered | samples | p50 | p90 | p99 | max | not seen in 10 s | write p50 | write p99 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            for (load, f) in [
                ("a tenth of the maximum", self.freshness_light.as_ref()),
                ("half the maximum", Some(f)),
            ] {
                let Some(f) = f else { continue };
                let _ = writeln!(
                    o,
                    "| {load}, {:.0}/s | {} | {} | {} | {} | {} | {} | {} | {} |",
                    f.write_rate,
                    f.samples,
                    ms(f.latency.p50),
                    ms(f.latency.p90),
                    ms(f.latency.p99),
                    ms(f.latency.max),
                    f.not_seen,
                    ms(f.write_latency.p50),
                    ms(f.write_latency.p99)
                );
            }
            o.push('\n');
        }
        if let Some(l) = &self.lag {
            let _ = writeln!(
                o,
                "## Relay and projector lag (during the freshness run at half the maximum)\n"
            );
            o.push_str("| measure | p50 | p99 / max |\n| --- | ---: | ---: |\n");
            let _ = writeln!(
                o,
                "| commit → Kafka, measured on {} records (record timestamp − acceptance) | {} | {} (p99) |",
                l.commit_to_kafka_n,
                ms(l.commit_to_kafka.p50),
                ms(l.commit_to_kafka.p99)
            );
            let _ = writeln!(
                o,
                "| Kafka → read model (freshness − commit → Kafka) | {} | {} (p99) |",
                ms(l.kafka_to_read_model_p50_ms),
                ms(l.kafka_to_read_model_p99_ms)
            );
            let _ = writeln!(
                o,
                "| `lis_relay_lag_seconds` gauge, {} samples | {} | {} (max) |",
                l.samples,
                ms(l.relay_gauge_p50_ms),
                ms(l.relay_gauge_max_ms)
            );
            let _ = writeln!(
                o,
                "| `lis_projector_lag_seconds` gauge (acceptance → projected) | {} | {} (max) |\n",
                ms(l.projector_gauge_p50_ms),
                ms(l.projector_gauge_max_ms)
            );
        }
        if let Some(r) = &self.relay {
            let _ = writeln!(o, "## Relay throughput\n");
            o.push_str("| measure | events/s | baseline | baseline/s | ratio |\n| --- | ---: | --- | ---: | ---: |\n");
            let _ = writeln!(
                o,
                "| relay publishing a bulk seeding of {} events | {} | raw produce of {} same-size records ({} B) with the relay's producer settings | {} | {:.2} |",
                r.drain.events,
                rate(r.relay_rate),
                r.raw_records,
                r.record_bytes,
                rate(r.raw_produce_rate),
                r.ratio
            );
            let _ = writeln!(
                o,
                "| live projector applying the same events | {} | — | — | — |\n",
                rate(r.projector_rate)
            );
        }
        if let Some(r) = &self.replay {
            let _ = writeln!(
                o,
                "## Replay (rebuild of the read models from offset 0 into a fresh schema)\n"
            );
            o.push_str("| measure | events/s | seconds |\n| --- | ---: | ---: |\n");
            let _ = writeln!(
                o,
                "| `projector::catch_up` of {} events ({} in the log) | {} | {:.1} |",
                r.applied,
                r.log_events,
                rate(r.rate),
                r.secs
            );
            let _ = writeln!(
                o,
                "| raw consume from offset 0, one consumer | {} | {:.1} |",
                rate(r.consume_rate),
                r.consume_secs
            );
            let _ = writeln!(
                o,
                "| raw batched insert of the rebuilt rows ({} rows, 500 per statement) | {} | {:.1} |",
                r.insert_rows,
                rate(r.insert_events_rate),
                r.insert_secs
            );
            let _ = writeln!(o, "| ratio to the slower raw part | {:.2} | |\n", r.ratio);
            let _ = writeln!(
                o,
                "Resources during the rebuild: {}.\n",
                services(&r.resources)
            );
        }
        if !self.growth.is_empty() {
            let _ = writeln!(o, "## Growth\n");
            o.push_str("| tier | stored | create rate | create p50 | create p99 | read rate | read p50 | read p99 | seeding |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
            for t in &self.growth {
                if let Some(why) = &t.skipped {
                    let _ = writeln!(
                        o,
                        "| {} | {} | skipped: {why} | | | | | | |",
                        t.tier, t.stored
                    );
                    continue;
                }
                let (wr, w50, w99) = t
                    .write
                    .as_ref()
                    .map_or(("—".into(), "—".into(), "—".into()), |r| {
                        (rate(r.throughput), ms(r.latency.p50), ms(r.latency.p99))
                    });
                let (rr, r50, r99) = t
                    .read
                    .as_ref()
                    .map_or(("—".into(), "—".into(), "—".into()), |r| {
                        (rate(r.throughput), ms(r.latency.p50), ms(r.latency.p99))
                    });
                let seeded = t.seeded.map_or("—".into(), |d| {
                    format!(
                        "{} patients / {} events in {:.0} s; relay {:.0} s, projector {:.0} s, mailer and analytics {:.0} s",
                        d.patients, d.events, d.seed_s, d.relay_s, d.projector_s, d.reactors_s
                    )
                });
                let _ = writeln!(
                    o,
                    "| {} | {} | {wr} | {w50} | {w99} | {rr} | {r50} | {r99} | {seeded} |",
                    t.tier, t.stored
                );
            }
            o.push('\n');
        }

        let _ = writeln!(o, "## Cost per operation\n");
        o.push_str("CPU microseconds per operation of the load generator and of each service, and Postgres's transactions per operation (`pg_stat_database.xact_commit` of the stack's database: the command's or read's own, the projector's, the relay's and the reactors', every autocommitted statement counting as one, a read-only one too) and durable WAL flushes per operation (`pg_stat_wal.wal_sync` of the server: what a durable commit waits for, one for many commits when they are flushed together), over each workload's whole window (warm-up included) at its measured rate. Statements and round trips per operation are in BENCHMARKS.md (from the code).\n\n");
        o.push_str("| workload | model | ops/s | load gen µs | services µs | all µs | transactions / op | WAL flushes / op |\n| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
        for r in &self.rows {
            let per = |of| r.resources.cpu_per_op_us(r.throughput, of);
            let services = r
                .resources
                .services
                .iter()
                .map(|s| format!("{} {:.0}", s.name, per(CpuOf::Service(&s.name))))
                .collect::<Vec<_>>()
                .join("; ");
            let (transactions, flushes) = r
                .resources
                .pg_per_op(r.throughput)
                .map_or(("—".into(), "—".into()), |(t, f)| {
                    (format!("{t:.2}"), format!("{f:.2}"))
                });
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.0} | {services} | {:.0} | {transactions} | {flushes} |",
                r.name,
                r.model,
                rate(r.throughput),
                per(CpuOf::LoadGen),
                per(CpuOf::All),
            );
        }
        o.push('\n');

        let _ = writeln!(o, "## Resources per workload\n");
        o.push_str("CPU seconds and peak resident memory of each service (from `/proc/<pid>`, pids from the stack's pid files) over each workload, warm-up included, and the load generator's own CPU (`getrusage`); \"waited\" is how long the workload waited, before it started, for the relay, the projector, the mailer and the analytics publisher to work off what earlier workloads left them, and for the analyses and vacuums that autovacuum would have made by then (`platform::upkeep`; this Postgres runs without autovacuum). Postgres is the postmaster and all its backends: its CPU includes other databases' work on the same server, and its memory counts shared buffers once per backend.\n\n");
        o.push_str("| workload | model | waited s | wall s | load gen CPU s | services |\n| --- | --- | ---: | ---: | ---: | --- |\n");
        for r in &self.rows {
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
                r.name,
                r.model,
                r.resources.settle_s,
                r.resources.wall_s,
                r.resources.loadgen_cpu_s,
                services(&r.resources)
            );
        }
        if let Some(f) = &self.freshness {
            let _ = writeln!(
                o,
                "| freshness | open, {:.0}/s | {:.1} | {:.1} | {:.1} | {} |",
                f.write_rate,
                f.resources.settle_s,
                f.resources.wall_s,
                f.resources.loadgen_cpu_s,
                services(&f.resources)
            );
        }
        o.push('\n');
        if !self.notes.is_empty() {
            let _ = writeln!(o, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
            o.push('\n');
        }
        o.push_str("![latency against throughput](latency.svg)\n");
        o
    }

    /// Writes `report.md`, `report.json` and `latency.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        self.chart(&dir.join("latency.svg"))?;
        Ok(())
    }

    /// Percentiles against throughput, for creates and point reads.
    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let series: Vec<(&str, Vec<&Row>)> = vec![
            (
                "creates",
                self.rows
                    .iter()
                    .filter(|r| r.group == "writes" || r.group == "writes-open")
                    .collect(),
            ),
            (
                "point reads",
                self.rows.iter().filter(|r| r.group == "reads").collect(),
            ),
        ];
        let xmax = self
            .rows
            .iter()
            .map(|r| r.throughput)
            .fold(1.0f64, f64::max)
            * 1.1;
        let ymax = self
            .rows
            .iter()
            .map(|r| r.latency.p99)
            .fold(1.0f64, f64::max)
            * 1.5;
        let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency percentiles against throughput", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..xmax, (0.05f64..ymax).log_scale())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("throughput (answers/s)")
            .y_desc("latency (ms, log scale)")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let colours = [RED, BLUE];
        for (i, (name, rows)) in series.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let mut rows = rows.clone();
            rows.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
            for (pname, pick, width) in [
                ("p50", (|l: &Latency| l.p50) as fn(&Latency) -> f64, 1u32),
                ("p90", |l: &Latency| l.p90, 2),
                ("p99", |l: &Latency| l.p99, 3),
            ] {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .map(|r| (r.throughput, pick(&r.latency).max(0.05)))
                    .collect();
                let style = colour.stroke_width(width);
                chart
                    .draw_series(LineSeries::new(points.clone(), style))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .label(format!("{name} {pname}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width))
                    });
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}
