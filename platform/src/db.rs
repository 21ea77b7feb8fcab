//! Postgres: connection pools for the write and read schemas, database
//! creation and migrations.
//!
//! Both schemas live in one database by default but are only ever reached
//! through their own pool, whose connections have `search_path` set to that
//! schema, so the read models can be rebuilt into a fresh schema beside the
//! live one.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// A database error with its context; never shown to partners.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error("LIS_DATABASE_URL is not a valid Postgres URL: {0}")]
    BadUrl(tokio_postgres::Error),
    /// Postgres answered with an error or could not be reached.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The pool could not hand out a connection.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] refinery::Error),
}

pub(crate) fn pg_config(url: &str, schema: &str) -> Result<tokio_postgres::Config, DbError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(DbError::BadUrl)?;
    cfg.options(format!("-c search_path={schema}"));
    cfg.application_name("lis");
    cfg.connect_timeout(std::time::Duration::from_secs(5));
    Ok(cfg)
}

/// Builds a pool whose connections use `schema`.
pub fn pool(url: &str, schema: &str, max_size: usize) -> Result<Pool, DbError> {
    let mgr = Manager::from_config(
        pg_config(url, schema)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(mgr)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("runtime and timeouts are set"))
}

/// Opens one connection, spawning its driver on the current runtime.
pub async fn connect(url: &str, schema: &str) -> Result<tokio_postgres::Client, DbError> {
    let (client, conn) = pg_config(url, schema)?.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates the database named in `url` when it does not exist, by connecting
/// to the `postgres` database of the same server.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let cfg: tokio_postgres::Config = url.parse().map_err(DbError::BadUrl)?;
    let name = cfg.get_dbname().unwrap_or("postgres").to_string();
    let mut admin = cfg.clone();
    admin.dbname("postgres");
    let (client, conn) = admin.connect(NoTls).await?;
    tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let quoted = name.replace('"', "\"\"");
        if let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
        {
            // Another process may have created it meanwhile.
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Creates `schema` if needed and applies `migrations` to it (each set
/// lives with the crate that owns its tables: the write schema's with the
/// command handler, the read models' with the projector). Serialised across
/// processes by an advisory lock.
pub async fn migrate(url: &str, schema: &str, migrations: refinery::Runner) -> Result<(), DbError> {
    let mut client = connect(url, schema).await?;
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_lock(hashtext('lis-migrate')); CREATE SCHEMA IF NOT EXISTS {schema};"
        ))
        .await?;
    let result = migrations.run_async(&mut client).await;
    client
        .batch_execute("SELECT pg_advisory_unlock(hashtext('lis-migrate'))")
        .await?;
    result?;
    Ok(())
}

/// Whether an error is a violation of the named unique constraint.
pub fn is_unique_violation(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.as_db_error().is_some_and(|d| {
        d.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && d.constraint() == Some(constraint)
    })
}

/// Statements prepared once per pooled connection and kept (deadpool's
/// statement cache), instead of parsed and planned on every call: a plain
/// `query(&str, …)` costs an extra round trip (prepare, then execute) and
/// a fresh parse and plan on the server each time. Pool connections are
/// recycled without `DISCARD`, so the cache lives as long as the
/// connection.
pub trait Cached: deadpool_postgres::GenericClient + Sized {
    /// `query` with a cached statement.
    fn query_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>>
           + Send
           + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query(&statement, params).await
        }
    }

    /// `query_opt` with a cached statement.
    fn query_opt_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<Option<tokio_postgres::Row>, tokio_postgres::Error>>
           + Send
           + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_opt(&statement, params).await
        }
    }

    /// `query_one` with a cached statement.
    fn query_one_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<tokio_postgres::Row, tokio_postgres::Error>> + Send + 'a
    {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_one(&statement, params).await
        }
    }

    /// `execute` with a cached statement.
    fn execute_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.execute(&statement, params).await
        }
    }
}

impl<T: deadpool_postgres::GenericClient> Cached for T {}
