//! Table upkeep when Postgres runs without autovacuum: what autovacuum's
//! defaults would do to the installation's own tables, done by `lis serve`.
//!
//! Without it, planner statistics stop following the tables' growth (and a
//! plan cached while a table was small keeps scanning it whole: order
//! placements halved in `lis bench` when the accession numbers kept a plan
//! from 250 rows) and updated rows' dead versions are never reclaimed.
//! [`pass`] works through the tables past autovacuum's default thresholds,
//! one at a time; [`run`] makes a pass every [`Config::upkeep`] while the
//! server's `autovacuum` is off, and does nothing while it is on.
//!
//! [`Config::upkeep`]: crate::config::Config::upkeep

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::db::DbError;

/// What a table needs, by autovacuum's default thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Fresh statistics: rows changed since the last analysis exceed 50 +
    /// 10% of the table (`autovacuum_analyze_threshold`, `_scale_factor`).
    Analyze,
    /// Dead rows exceed 50 + 20% of the table, or rows inserted since the
    /// last vacuum exceed 1000 + 20% (`autovacuum_vacuum_threshold`,
    /// `_insert_threshold`, their scale factors).
    Vacuum,
    /// Both.
    VacuumAnalyze,
}

impl Work {
    fn command(self) -> &'static str {
        match self {
            Work::Analyze => "ANALYZE",
            Work::Vacuum => "VACUUM",
            Work::VacuumAnalyze => "VACUUM (ANALYZE)",
        }
    }

    /// The work, as a log line names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Analyze => "analyze",
            Work::Vacuum => "vacuum",
            Work::VacuumAnalyze => "vacuum and analyze",
        }
    }
}

/// A table of `schema` that was due, and what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub schema: String,
    pub table: String,
    pub work: Work,
}

/// The tables of `schemas` past autovacuum's default thresholds, by
/// Postgres's own counters (`pg_stat_user_tables`), each with its quoted
/// qualified name.
async fn due(
    db: &tokio_postgres::Client,
    schemas: &[String],
) -> Result<Vec<(String, Done)>, DbError> {
    let rows = db
        .query(
            "SELECT s.schemaname::text, s.relname::text, \
                    s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0), \
                    s.n_dead_tup > 50 + 0.2 * greatest(c.reltuples, 0) \
                      OR s.n_ins_since_vacuum > 1000 + 0.2 * greatest(c.reltuples, 0), \
                    format('%I.%I', s.schemaname, s.relname) \
             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.schemaname = ANY($1) ORDER BY 1, 2",
            &[&schemas],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let work = match (r.get::<_, bool>(2), r.get::<_, bool>(3)) {
                (true, true) => Work::VacuumAnalyze,
                (true, false) => Work::Analyze,
                (false, true) => Work::Vacuum,
                (false, false) => return None,
            };
            Some((
                r.get(4),
                Done {
                    schema: r.get(0),
                    table: r.get(1),
                    work,
                },
            ))
        })
        .collect())
}

/// What a [`pass`] does when another is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Return at once with nothing (the other does the work).
    Skip,
    /// Wait for it to end, then make its own (`lis bench` before a window).
    Wait,
}

/// Analyzes and vacuums the tables of `schemas` that autovacuum would, one
/// at a time, and returns them. One pass runs at a time per installation
/// (`key`, the write schema).
pub async fn pass(
    pool: &Pool,
    key: &str,
    schemas: &[String],
    busy: Busy,
) -> Result<Vec<Done>, DbError> {
    // Out of the pool: if the pass is dropped half-way, closing the
    // connection releases the lock.
    let db = deadpool_postgres::Object::take(pool.get().await?);
    let lock = lock_name(key);
    let mine = match busy {
        Busy::Skip => db
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock])
            .await?
            .get(0),
        Busy::Wait => {
            db.execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock])
                .await?;
            true
        }
    };
    if !mine {
        return Ok(Vec::new());
    }
    let work = async {
        let tables = due(&db, schemas).await?;
        for (name, t) in &tables {
            db.batch_execute(&format!("{} {name}", t.work.command()))
                .await?;
        }
        Ok::<_, DbError>(tables.into_iter().map(|(_, t)| t).collect())
    }
    .await;
    db.execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock])
        .await?;
    work
}

/// The advisory lock one installation's passes take turns on (`key`, the
/// write schema).
pub fn lock_name(key: &str) -> String {
    format!("lis upkeep {key}")
}

/// Whether the server runs autovacuum (then it keeps the tables itself).
pub async fn autovacuum_on(pool: &Pool) -> Result<bool, DbError> {
    let db = pool.get().await?;
    let on: String = db.query_one("SHOW autovacuum", &[]).await?.get(0);
    Ok(on == "on")
}

/// Every `every`, while the server's `autovacuum` is off, makes a [`pass`]
/// over the write schema and the read models' copies (`read_default` when
/// none is registered), the first at once; until `shutdown`. A failed pass
/// is logged and tried again at the next. With `every` zero it only warns
/// if autovacuum is off.
pub async fn run(
    write: Pool,
    write_schema: String,
    read_default: String,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    if every.is_zero() {
        if let Ok(false) = autovacuum_on(&write).await {
            tracing::warn!(
                "autovacuum is off and LIS_UPKEEP_SECS is 0: planner statistics do not follow \
                 the tables' growth, so list pages slow down and plans cached for small tables \
                 keep scanning them; turn it on, or run ANALYZE and VACUUM regularly"
            );
        }
        return;
    }
    tokio::pin!(shutdown);
    let mut said = None;
    loop {
        let made = async {
            let on = autovacuum_on(&write).await?;
            if said.replace(on) != Some(on) {
                if on {
                    tracing::info!("autovacuum is on: Postgres keeps the tables' statistics");
                } else {
                    tracing::info!(
                        every_s = every.as_secs(),
                        "autovacuum is off: lis analyzes and vacuums its own tables as autovacuum would"
                    );
                }
            }
            if on {
                return Ok(Vec::new());
            }
            let mut schemas = crate::read_models::projected(&write, &read_default).await?;
            schemas.push(write_schema.clone());
            pass(&write, &write_schema, &schemas, Busy::Skip).await
        }
        .await;
        match made {
            Ok(done) => {
                for d in done {
                    tracing::info!(schema = %d.schema, table = %d.table, work = d.work.as_str(), "table upkeep");
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::cause(&e), "table upkeep failed")
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
