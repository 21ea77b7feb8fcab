//! `lis replay`: rebuilds every read model from offset 0 of the log into a
//! fresh schema beside the live one, then switches readers to it.
//!
//! 1. A new schema (`read_<time>`) is registered as `building` and migrated;
//!    an interrupted replay (`kill -9` included) finds it and resumes from
//!    the offsets stored with its rows.
//! 2. The log is applied with the projector's own code, with a progress bar
//!    on a terminal (plain lines otherwise), until the copy is close to the
//!    end of the log.
//! 3. The copy becomes `ready`: the running projectors keep it current from
//!    there, beside the active copy.
//! 4. Once it holds everything the active copy holds, it becomes `active`
//!    and the active one `old`, in one transaction; query API processes
//!    switch within half a second, always to a copy at least as new.
//! 5. The old copy stays (readers may still finish a request on it) until
//!    `lis replay --drop-old`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::Pool;
use platform::config::Config;
use platform::read_models::SchemaState;

/// How `lis replay` was asked to run.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Remove the copies readers left (state `old`) instead of replaying.
    #[arg(long)]
    pub drop_old: bool,
    /// Messages applied per transaction.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

/// How close to the end of the log the rebuild gets before the projectors
/// take over (messages): under a steady load each pass catches up with what
/// arrived during the one before, until fewer than this are left.
const HANDOVER_LAG: u64 = 100;
/// Longest wait for the projectors to take the copy over and bring it level.
const SWITCH_LIMIT: Duration = Duration::from_secs(120);

/// A copy of the read models being rebuilt.
struct Rebuild {
    schema: String,
    state: SchemaState,
}

async fn registry(write: &Pool, cfg: &Config) -> anyhow::Result<Option<Rebuild>> {
    let db = write.get().await?;
    // Readers so far used the configured schema: register it as the active
    // copy, so that the switch has something to retire.
    db.execute(
        "INSERT INTO read_schemas (name, state) SELECT $1, 'active' \
         WHERE NOT EXISTS (SELECT 1 FROM read_schemas WHERE state = 'active')",
        &[&cfg.read_schema],
    )
    .await?;
    let row = db
        .query_opt(
            "SELECT name, state FROM read_schemas WHERE state IN ('building', 'ready')",
            &[],
        )
        .await?;
    Ok(row.map(|r| Rebuild {
        schema: r.get(0),
        state: if r.get::<_, &str>(1) == "ready" {
            SchemaState::Ready
        } else {
            SchemaState::Building
        },
    }))
}

async fn set_state(write: &Pool, schema: &str, state: SchemaState) -> anyhow::Result<()> {
    write
        .get()
        .await?
        .execute(
            "UPDATE read_schemas SET state = $2 WHERE name = $1",
            &[&schema, &state.as_str()],
        )
        .await?;
    Ok(())
}

/// Shows how far the rebuild is: a bar on a terminal, a line every few
/// seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    started: Instant,
    start_at: u64,
    last_line: Instant,
}

impl Progress {
    fn new(applied: u64, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} events, {per_sec}, {eta} left",
                )
                .expect("a valid template"),
            );
            bar.set_position(applied);
            bar
        });
        Progress {
            bar,
            total,
            started: Instant::now(),
            start_at: applied,
            last_line: Instant::now(),
        }
    }

    fn show(&mut self, applied: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(applied);
            return;
        }
        if self.last_line.elapsed() < Duration::from_secs(2) && applied < self.total {
            return;
        }
        self.last_line = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (applied - self.start_at) as f64 / secs;
        let left = if rate > 0.0 {
            format!(
                "{:.0} s",
                (self.total.saturating_sub(applied)) as f64 / rate
            )
        } else {
            "unknown".into()
        };
        eprintln!(
            "replay: {applied}/{} events ({:.0}%), {rate:.0} events/s, {left} left",
            self.total,
            100.0 * applied as f64 / self.total.max(1) as f64
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Applies the log into `schema` until it is within [`HANDOVER_LAG`] of
/// the end of the log.
async fn rebuild(cfg: &Config, schema: &str, batch: usize) -> anyhow::Result<()> {
    let mut fresh = cfg.clone();
    fresh.read_schema = schema.to_string();
    let pool = platform::db::pool(&fresh.database_url, schema, 4)?;
    let mut first = true;
    loop {
        let ends = projector::log_ends(&fresh).await?;
        let (applied, total) = projector::progress(&pool, &ends).await?;
        if !first && total - applied <= HANDOVER_LAG {
            return Ok(());
        }
        if first && applied > 0 {
            println!("replay: resuming {schema}: {applied} of {total} events already applied");
        }
        first = false;
        let mut progress = Progress::new(applied, total);
        projector::catch_up_to(
            &fresh,
            &pool,
            &ends,
            batch,
            Duration::from_secs(24 * 3600),
            |n| progress.show(applied + n),
        )
        .await?;
        progress.finish();
    }
}

/// Whether `copy` holds at least what `active` holds, partition by
/// partition, and has reached the end of the log as it was just now.
async fn level(cfg: &Config, copy: &Pool, active: &Pool) -> anyhow::Result<bool> {
    let ends = projector::log_ends(cfg).await?;
    Ok(projector::reached(copy, &ends).await?
        && platform::read_models::holds_all_of(copy, active).await?)
}

/// Switches readers from the active copy to `schema`, once the projectors
/// have brought it level with the active one.
async fn switch(cfg: &Config, write: &Pool, schema: &str) -> anyhow::Result<String> {
    let old = platform::read_models::active(write, &cfg.read_schema).await?;
    let copy = platform::db::pool(&cfg.database_url, schema, 2)?;
    let active = platform::db::pool(&cfg.database_url, &old, 2)?;
    let deadline = Instant::now() + SWITCH_LIMIT;
    while !level(cfg, &copy, &active).await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{schema} did not come level with {old} in {SWITCH_LIMIT:?}: is a projector running \
             (`lis serve --roles projector`)? Run `lis replay` again to resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut db = write.get().await?;
    let tx = db.transaction().await?;
    tx.execute(
        "UPDATE read_schemas SET state = 'old', switched_at = now() WHERE state = 'active'",
        &[],
    )
    .await?;
    tx.execute(
        "UPDATE read_schemas SET state = 'active', switched_at = now() WHERE name = $1",
        &[&schema],
    )
    .await?;
    tx.commit().await?;
    Ok(old)
}

async fn drop_old(cfg: &Config, write: &Pool) -> anyhow::Result<()> {
    let db = write.get().await?;
    // Readers may still be on a copy for a moment after the switch (each
    // query API process follows within half a second, once the new copy
    // holds what the old one did), and the projectors keep it current
    // meanwhile: drop a copy only once that time has passed.
    let old: Vec<(String, f64)> = db
        .query(
            "SELECT name, GREATEST(0, EXTRACT(EPOCH FROM (switched_at + make_interval(secs => $1) - now())))::float8 \
             FROM read_schemas WHERE state = 'old'",
            &[&(platform::read_models::OLD_KEPT_CURRENT.as_secs_f64() + 2.0)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let admin = platform::db::connect(&cfg.database_url, "public").await?;
    for (schema, wait) in &old {
        if *wait > 0.0 {
            println!("replay: readers left {schema} moments ago; dropping it in {wait:.0} s");
            tokio::time::sleep(Duration::from_secs_f64(*wait)).await;
        }
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await?;
        db.execute("DELETE FROM read_schemas WHERE name = $1", &[schema])
            .await?;
        println!("replay: dropped the old copy {schema}");
    }
    if old.is_empty() {
        println!("replay: no old copy to drop");
    }
    Ok(())
}

/// `lis replay`.
pub async fn run(cfg: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let write = platform::db::pool(&cfg.database_url, &cfg.write_schema, 2)?;
    if args.drop_old {
        return drop_old(cfg, &write).await;
    }
    let target = match registry(&write, cfg)
        .await
        .context("cannot reach Postgres (LIS_DATABASE_URL)")?
    {
        Some(r) => r,
        None => {
            let schema = format!("read_{}", chrono::Utc::now().format("%Y%m%d_%H%M%S"));
            write
                .get()
                .await?
                .execute(
                    "INSERT INTO read_schemas (name, state) VALUES ($1, 'building')",
                    &[&schema],
                )
                .await?;
            Rebuild {
                schema,
                state: SchemaState::Building,
            }
        }
    };
    let schema = target.schema;
    platform::db::migrate(&cfg.database_url, &schema, projector::migrations()).await?;
    if target.state == SchemaState::Building {
        println!("replay: rebuilding the read models into {schema} from offset 0 of the log");
        rebuild(cfg, &schema, args.batch).await?;
        set_state(&write, &schema, SchemaState::Ready).await?;
    }
    println!("replay: {schema} is ready; waiting for the projectors to bring it level");
    let old = switch(cfg, &write, &schema).await?;
    println!(
        "replay: readers switched from {old} to {schema}; {old} stays until `lis replay --drop-old`"
    );
    Ok(())
}

/// Every copy of the read models `lis migrate` keeps up to date: every
/// registered copy still in use, and the configured one unless it is
/// registered (as an old copy, say).
pub async fn schemas_in_use(cfg: &Config, write: &Pool) -> anyhow::Result<Vec<String>> {
    let rows = write
        .get()
        .await?
        .query("SELECT name, state FROM read_schemas", &[])
        .await?;
    let mut out: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, &str>(1) != "old")
        .map(|r| r.get(0))
        .collect();
    if !rows.iter().any(|r| r.get::<_, &str>(0) == cfg.read_schema) {
        out.push(cfg.read_schema.clone());
    }
    Ok(out)
}
