//! Typed configuration, read from `LIS_*` environment variables with
//! defaults that work for the local stack.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A value that must never be printed (keys, secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(v: T) -> Self {
        Secret(v)
    }
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every setting a service or the `lis` command reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LIS_DATABASE_URL`: the Postgres database holding both schemas.
    pub database_url: String,
    /// `LIS_WRITE_SCHEMA`: schema of the event store and write-side state.
    pub write_schema: String,
    /// `LIS_READ_SCHEMA`: schema of the read models.
    pub read_schema: String,
    /// `LIS_KAFKA_BROKERS`: bootstrap servers.
    pub kafka_brokers: String,
    /// `LIS_TOPIC_PREFIX`: prefix of every topic name (for isolated tests).
    pub topic_prefix: String,
    /// `LIS_KAFKA_PARTITIONS`: partitions of the record topics.
    pub kafka_partitions: i32,
    /// `LIS_KAFKA_REPLICATION_FACTOR`: copies of each partition that
    /// `lis migrate` asks for (1 on the local stack's single broker, 3 in
    /// production).
    pub kafka_replication_factor: i32,
    /// `LIS_KAFKA_MIN_INSYNC_REPLICAS`: of those, how many must hold a
    /// record before an `acks=all` producer is told it is written (set on
    /// each topic; 2 of 3 in production).
    pub kafka_min_insync_replicas: i32,
    /// `LIS_HTTP_ADDR`: where the partner API listens.
    pub http_addr: SocketAddr,
    /// `LIS_DATA_DIR`: the local stack's data directory.
    pub data_dir: PathBuf,
    /// `LIS_TOKEN_KEY_FILE`: file holding the token signing key.
    pub token_key_file: PathBuf,
    /// `LIS_CHAIN_KEY_FILE`: file holding the key that signs the log's hash
    /// chain checkpoints (the relay's; kept outside the database).
    pub chain_key_file: PathBuf,
    /// `LIS_ANALYTICS_KEY_FILE`: file holding the key of the analytics
    /// stream's pseudonyms.
    pub analytics_key_file: PathBuf,
    /// `LIS_TOKEN_TTL_SECS`: lifetime of access tokens.
    pub token_ttl: Duration,
    /// `LIS_TOKEN_RATE_PER_MINUTE`: token requests allowed per `client_id`
    /// and per source address each minute.
    pub token_rate_per_minute: u32,
    /// `LIS_PORTAL_RATE_PER_MINUTE`: portal logins and new-link requests
    /// allowed per source address and minute.
    pub portal_rate_per_minute: u32,
    /// `LIS_COMMITTERS`: how many transactions of partner commands a process
    /// commits at once (each takes the commands waiting, up to 32).
    pub committers: usize,
    /// `LIS_CONSISTENCY_WAIT_MS`: how long a read waits for a consistency token.
    pub consistency_wait: Duration,
    /// `LIS_UPKEEP_SECS`: how often the projector's process analyzes and
    /// vacuums the installation's tables while Postgres runs without
    /// autovacuum (`platform::upkeep`); 0 leaves them to the operator.
    pub upkeep: Duration,
    /// `LIS_SMTP_URL`: `smtp://host:port` where account emails go; none disables mail.
    pub smtp_url: Option<String>,
    /// `LIS_MAIL_OUTBOX`: a directory where account emails are written as
    /// `.eml` files when `LIS_SMTP_URL` is not set (`lis up` sets it to
    /// `.lis/outbox`); neither set disables mail.
    pub mail_outbox: Option<PathBuf>,
    /// `LIS_MAIL_FROM`: sender of account emails.
    pub mail_from: String,
    /// `LIS_PUBLIC_URL`: origin written into links in emails.
    pub public_url: String,
    /// `LIS_LOG`: log filter (`info`, `lis=debug`, ...).
    pub log: String,
}

/// A setting that is present but malformed.
#[derive(Debug, thiserror::Error)]
#[error("{name} is not valid: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e: T::Err| ConfigError {
            name,
            reason: e.to_string(),
        }),
    }
}

fn schema_name(name: &'static str, default: &str) -> Result<String, ConfigError> {
    let v = var(name).unwrap_or_else(|| default.to_string());
    let ok = !v.is_empty()
        && v.len() <= 48
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !v.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(v)
    } else {
        Err(ConfigError {
            name,
            reason: "use lowercase letters, digits and _".into(),
        })
    }
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let data_dir = PathBuf::from(var("LIS_DATA_DIR").unwrap_or_else(|| ".lis".into()));
        let http_addr: SocketAddr =
            parsed("LIS_HTTP_ADDR", "127.0.0.1:8080".parse().expect("literal"))?;
        Ok(Config {
            database_url: var("LIS_DATABASE_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/lis".into()),
            write_schema: schema_name("LIS_WRITE_SCHEMA", "es")?,
            read_schema: schema_name("LIS_READ_SCHEMA", "read")?,
            kafka_brokers: var("LIS_KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into()),
            topic_prefix: var("LIS_TOPIC_PREFIX").unwrap_or_default(),
            kafka_partitions: parsed("LIS_KAFKA_PARTITIONS", 4)?,
            kafka_replication_factor: parsed("LIS_KAFKA_REPLICATION_FACTOR", 1)?,
            kafka_min_insync_replicas: parsed("LIS_KAFKA_MIN_INSYNC_REPLICAS", 1)?,
            token_key_file: var("LIS_TOKEN_KEY_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("token-signing.key")),
            chain_key_file: var("LIS_CHAIN_KEY_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("chain-signing.key")),
            analytics_key_file: var("LIS_ANALYTICS_KEY_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("analytics-pseudonym.key")),
            data_dir,
            token_ttl: Duration::from_secs(parsed("LIS_TOKEN_TTL_SECS", 3600)?),
            token_rate_per_minute: parsed("LIS_TOKEN_RATE_PER_MINUTE", 60)?,
            portal_rate_per_minute: parsed("LIS_PORTAL_RATE_PER_MINUTE", 20)?,
            committers: parsed("LIS_COMMITTERS", 4)?,
            consistency_wait: Duration::from_millis(parsed("LIS_CONSISTENCY_WAIT_MS", 2000)?),
            upkeep: Duration::from_secs(parsed("LIS_UPKEEP_SECS", 30)?),
            smtp_url: var("LIS_SMTP_URL"),
            mail_outbox: var("LIS_MAIL_OUTBOX").map(PathBuf::from),
            mail_from: var("LIS_MAIL_FROM")
                .unwrap_or_else(|| "LIS <no-reply@lis.localhost>".into()),
            public_url: var("LIS_PUBLIC_URL").unwrap_or_else(|| format!("http://{http_addr}")),
            log: var("LIS_LOG").unwrap_or_else(|| "info".into()),
            http_addr,
        })
    }

    /// Every environment variable this configuration reads.
    pub const VARIABLES: &'static [&'static str] = &[
        "LIS_DATABASE_URL",
        "LIS_WRITE_SCHEMA",
        "LIS_READ_SCHEMA",
        "LIS_KAFKA_BROKERS",
        "LIS_TOPIC_PREFIX",
        "LIS_KAFKA_PARTITIONS",
        "LIS_KAFKA_REPLICATION_FACTOR",
        "LIS_KAFKA_MIN_INSYNC_REPLICAS",
        "LIS_HTTP_ADDR",
        "LIS_DATA_DIR",
        "LIS_TOKEN_KEY_FILE",
        "LIS_CHAIN_KEY_FILE",
        "LIS_ANALYTICS_KEY_FILE",
        "LIS_TOKEN_TTL_SECS",
        "LIS_TOKEN_RATE_PER_MINUTE",
        "LIS_PORTAL_RATE_PER_MINUTE",
        "LIS_COMMITTERS",
        "LIS_CONSISTENCY_WAIT_MS",
        "LIS_UPKEEP_SECS",
        "LIS_SMTP_URL",
        "LIS_MAIL_OUTBOX",
        "LIS_MAIL_FROM",
        "LIS_PUBLIC_URL",
        "LIS_LOG",
    ];
}
