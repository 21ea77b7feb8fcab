//! Partners' access (permissions, scope, secret version, disabled flag) kept
//! in memory, so that a request's access check needs no database round
//! trip, while a change to a partner still takes effect on the next request
//! on every process.
//!
//! Each process that keeps a copy is a *holder* with a lease in
//! `access_cache_holders`. It re-reads every partner in one statement that
//! also renews its lease and stamps the start of that statement's
//! transaction (`refreshed_at`: the read sees every change committed
//! before it). It re-reads when Postgres tells it that a partner changed
//! (a trigger on `partners` notifies [`CHANNEL`]) and at least every
//! [`REFRESH`]. A copy is used only until its lease runs out on the
//! holder's own clock, counted from before the read was sent, so it ends
//! before the lease Postgres records (a process that was paused or cut off
//! reads Postgres again, as it does for a partner its copy lacks).
//!
//! A change to a partner is complete only when [`await_holders`] returns:
//! every holder whose lease was live when the change committed has read the
//! partners again since, or its lease has run out. `lis admin` waits for it
//! after each change, so the next request, on any process, sees the change.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use domain::access::{Permission, Scope};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use crate::db::{Cached, DbError};

/// How long a holder's copy may be used after the read that made it.
pub const LEASE: Duration = Duration::from_secs(3);
/// The longest a holder goes without reading the partners again.
const REFRESH: Duration = Duration::from_millis(750);
/// What a holder's clock may run fast against Postgres's over one lease.
const CLOCK_MARGIN: Duration = Duration::from_millis(300);
/// The channel the `partners` trigger notifies, with the schema as payload.
const CHANNEL: &str = "partners_changed";

/// One partner's current access.
#[derive(Debug, Clone)]
pub struct PartnerAccess {
    /// Current permissions.
    pub permissions: BTreeSet<Permission>,
    /// Current scope.
    pub scope: Scope,
    /// Disabled partners are refused.
    pub disabled: bool,
    /// Tokens issued under another secret version are refused.
    pub secret_version: i32,
}

/// A holder's copy, usable until `until`.
#[derive(Default)]
struct Copy {
    partners: HashMap<Uuid, Arc<PartnerAccess>>,
    until: Option<Instant>,
}

/// Why a partner's access could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Postgres failed or could not be reached.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The partner's stored scope is not a scope.
    #[error("a partner's stored scope does not parse")]
    Scope(#[source] serde_json::Error),
}

/// Partners' access, from this process's copy while its lease holds, from
/// Postgres otherwise. Clones share one copy; its keeper stops (and gives up
/// its lease) once every clone is dropped.
#[derive(Clone)]
pub struct PartnerCache {
    copy: Arc<RwLock<Arc<Copy>>>,
    write: Pool,
    from_memory: prometheus::IntCounter,
    from_database: prometheus::IntCounter,
}

macro_rules! select {
    () => {
        "SELECT partner_id, permissions, scope, disabled, secret_version FROM partners"
    };
}
const SELECT: &str = select!();
const SELECT_ONE: &str = concat!(select!(), " WHERE partner_id = $1");

impl PartnerCache {
    /// Starts keeping a copy, on a connection of its own to the write schema
    /// at `url` (it listens for changes); `write` serves the reads the copy
    /// cannot answer.
    pub fn start(url: &str, write_schema: &str, write: Pool) -> PartnerCache {
        let copy = Arc::new(RwLock::new(Arc::new(Copy::default())));
        tokio::spawn(keep(
            url.to_string(),
            write_schema.to_string(),
            Arc::downgrade(&copy),
        ));
        let checks = &crate::metrics::ACCESS_CHECKS;
        PartnerCache {
            copy,
            write,
            from_memory: checks.with_label_values(&["memory"]),
            from_database: checks.with_label_values(&["database"]),
        }
    }

    /// A partner's current access; `None` for a partner that does not
    /// exist.
    pub async fn access(&self, id: Uuid) -> Result<Option<Arc<PartnerAccess>>, AccessError> {
        let copy = Arc::clone(&self.copy.read().unwrap_or_else(|e| e.into_inner()));
        if copy.until.is_some_and(|until| Instant::now() < until) {
            if let Some(p) = copy.partners.get(&id) {
                self.from_memory.inc();
                return Ok(Some(Arc::clone(p)));
            }
        }
        self.from_database.inc();
        let db = self.write.get().await.map_err(DbError::from)?;
        let row = db
            .query_opt_cached(SELECT_ONE, &[&id])
            .await
            .map_err(DbError::from)?;
        row.map(|r| access_of(&r).map(|(_, p)| Arc::new(p)))
            .transpose()
            .map_err(AccessError::Scope)
    }
}

fn access_of(row: &tokio_postgres::Row) -> Result<(Uuid, PartnerAccess), serde_json::Error> {
    let permissions: Vec<String> = row.get(1);
    Ok((
        row.get(0),
        PartnerAccess {
            permissions: crate::auth::permissions_from_db(&permissions),
            scope: serde_json::from_value(row.get(2))?,
            disabled: row.get(3),
            secret_version: row.get(4),
        },
    ))
}

/// Keeps the copy current until every handle is dropped, reconnecting after
/// a failure (the copy lapses meanwhile).
async fn keep(url: String, schema: String, copy: Weak<RwLock<Arc<Copy>>>) {
    let holder = Uuid::new_v4();
    loop {
        match hold(&url, &schema, holder, &copy).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::cause(&e), "partner access copy lapsed; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn hold(
    url: &str,
    schema: &str,
    holder: Uuid,
    copy: &Weak<RwLock<Arc<Copy>>>,
) -> Result<(), DbError> {
    let (client, mut conn) = crate::db::pg_config(url, schema)?.connect(NoTls).await?;
    let (changed, mut changes) = mpsc::unbounded_channel();
    let ours = schema.to_string();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.payload() == ours => {
                    let _ = changed.send(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "partner access connection closed");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    client
        .execute(
            "DELETE FROM access_cache_holders WHERE lease_until < now() - interval '1 hour'",
            &[],
        )
        .await?;
    let refresh = format!(
        "WITH lease AS (\
           INSERT INTO access_cache_holders (holder, refreshed_at, lease_until) \
           VALUES ($1, now(), now() + make_interval(secs => $2)) \
           ON CONFLICT (holder) DO UPDATE \
           SET refreshed_at = EXCLUDED.refreshed_at, lease_until = EXCLUDED.lease_until) \
         {SELECT}"
    );
    let lease = LEASE.as_secs_f64();
    loop {
        let Some(copy) = copy.upgrade() else {
            client
                .execute(
                    "DELETE FROM access_cache_holders WHERE holder = $1",
                    &[&holder],
                )
                .await?;
            return Ok(());
        };
        let sent = Instant::now();
        let mut partners = HashMap::new();
        for row in client.query(&refresh, &[&holder, &lease]).await? {
            match access_of(&row) {
                Ok((id, p)) => {
                    partners.insert(id, Arc::new(p));
                }
                // Left out: the check reads that partner from Postgres.
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::cause(&e), "a partner's stored scope does not parse")
                }
            }
        }
        let fresh = Arc::new(Copy {
            partners,
            until: Some(sent + LEASE - CLOCK_MARGIN),
        });
        *copy.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        drop(copy);
        tokio::select! {
            // `None`: the connection closed, and the next read says why.
            _ = changes.recv() => while changes.try_recv().is_ok() {},
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Waits until every process that keeps partners' access in memory has
/// read the partners since now (or its lease has run out): called after a
/// change to a partner commits, so that the change holds for the next
/// request everywhere. Returns within [`LEASE`].
pub async fn await_holders(db: &tokio_postgres::Client) -> Result<(), DbError> {
    let committed: DateTime<Utc> = db.query_one("SELECT clock_timestamp()", &[]).await?.get(0);
    loop {
        let behind: i64 = db
            .query_one(
                "SELECT count(*) FROM access_cache_holders \
                 WHERE refreshed_at <= $1 AND lease_until > clock_timestamp()",
                &[&committed],
            )
            .await?
            .get(0);
        if behind == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
