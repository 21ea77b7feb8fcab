//! Which copy of the read models readers use.
//!
//! `lis replay` rebuilds the read models from the log into a fresh schema
//! beside the live one and then switches readers over; the `read_schemas`
//! table (write side) says which copy is active. Query API processes follow
//! it through [`ReadModels`], the projectors through [`projected`].

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::db::DbError;

/// How often a process looks for a switch.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Where a copy of the read models stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// Being rebuilt from the log by `lis replay`.
    Building,
    /// Rebuilt; kept current by the projectors until readers switch to it.
    Ready,
    /// What readers use.
    Active,
    /// Left by readers; kept until `lis replay --drop-old`.
    Old,
}

impl SchemaState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaState::Building => "building",
            SchemaState::Ready => "ready",
            SchemaState::Active => "active",
            SchemaState::Old => "old",
        }
    }
}

/// The schema readers use now: the active one, else `default`.
pub async fn active(write: &Pool, default: &str) -> Result<String, DbError> {
    let db = write.get().await?;
    let row = db
        .query_opt("SELECT name FROM read_schemas WHERE state = 'active'", &[])
        .await?;
    Ok(row.map_or_else(|| default.to_string(), |r| r.get(0)))
}

/// How long the projectors keep a copy current after readers were told to
/// leave it: every query API process switches within this.
pub const OLD_KEPT_CURRENT: Duration = Duration::from_secs(10);

/// The schemas the projectors keep current: the active one (or `default`),
/// a rebuilt one waiting for readers to switch to it, and one readers were
/// told to leave less than [`OLD_KEPT_CURRENT`] ago (some may still read it).
pub async fn projected(write: &Pool, default: &str) -> Result<Vec<String>, DbError> {
    let db = write.get().await?;
    let kept = OLD_KEPT_CURRENT.as_secs_f64();
    let rows = db
        .query(
            "SELECT name, state FROM read_schemas WHERE state IN ('active', 'ready') \
             OR (state = 'old' AND switched_at > now() - make_interval(secs => $1)) ORDER BY state",
            &[&kept],
        )
        .await?;
    let mut out: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if !rows.iter().any(|r| r.get::<_, &str>(1) == "active") {
        out.insert(0, default.to_string());
    }
    Ok(out)
}

/// Whether the copy behind `new` has applied everything the one behind
/// `old` has.
pub async fn holds_all_of(new: &Pool, old: &Pool) -> Result<bool, DbError> {
    use crate::offsets::{load, Owner};
    let n = load(&new.get().await?, Owner::ReadModels).await?;
    let o = load(&old.get().await?, Owner::ReadModels).await?;
    Ok(o.iter().all(|(k, v)| n.get(k).is_some_and(|x| x >= v)))
}

struct Current {
    schema: String,
    pool: Pool,
}

/// A pool on the read models that follows the active copy.
#[derive(Clone)]
pub struct ReadModels(Arc<RwLock<Current>>);

impl ReadModels {
    /// Always `schema`, through `pool`.
    pub fn fixed(schema: &str, pool: Pool) -> Self {
        ReadModels(Arc::new(RwLock::new(Current {
            schema: schema.to_string(),
            pool,
        })))
    }

    /// The active copy (or `default`), with pools of `size` connections,
    /// switching within [`FOLLOW_EVERY`] after `lis replay` does.
    pub async fn following(
        url: &str,
        default: &str,
        write: Pool,
        size: usize,
    ) -> Result<Self, DbError> {
        let schema = active(&write, default)
            .await
            .unwrap_or_else(|_| default.to_string());
        let me = ReadModels::fixed(&schema, crate::db::pool(url, &schema, size)?);
        let weak: Weak<RwLock<Current>> = Arc::downgrade(&me.0);
        let (url, default) = (url.to_string(), default.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FOLLOW_EVERY).await;
                let Some(current) = weak.upgrade() else {
                    return;
                };
                let Ok(now) = active(&write, &default).await else {
                    continue;
                };
                let (was, old_pool) = {
                    let c = current.read().expect("lock");
                    (c.schema.clone(), c.pool.clone())
                };
                if now == was {
                    continue;
                }
                let Ok(pool) = crate::db::pool(&url, &now, size) else {
                    continue;
                };
                // Never show a partner something older than it just saw:
                // switch only once the new copy holds what the old one does
                // (the projectors keep the old copy current for a while
                // after the switch, see `projected`); until then, look again
                // at the next tick. An old copy that cannot be read any more
                // (dropped) holds nothing to compare.
                if let Ok(false) = holds_all_of(&pool, &old_pool).await {
                    continue;
                }
                tracing::info!(from = %was, to = %now, "readers switched to another copy of the read models");
                *current.write().expect("lock") = Current { schema: now, pool };
            }
        });
        Ok(me)
    }

    /// The pool of the copy in use.
    pub fn pool(&self) -> Pool {
        self.0.read().expect("lock").pool.clone()
    }

    /// The schema of the copy in use.
    pub fn schema(&self) -> String {
        self.0.read().expect("lock").schema.clone()
    }
}
