//! The raw baselines, measured in the same run on the same machine: what
//! Postgres and the broker do by themselves, without the product around them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::TryStreamExt;
use platform::config::Config;
use platform::kafka::{partition_for, FetchWait, Topic};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::load::{self, Measured, Window};

/// Schema of the raw insert table and of the batch-insert copies.
pub const SCHEMA: &str = "lis_bench_raw";

/// Connections a baseline leaves free for the running stack, whose pools
/// may still grow while the baseline runs.
const SPARE: usize = 10;

/// Connections Postgres accepts beside those open now (its
/// `max_connections`, less the slots kept for superusers and every open
/// connection).
async fn free_connections(url: &str) -> anyhow::Result<usize> {
    let c = platform::db::connect(url, "public").await?;
    let free: i64 = c
        .query_one(
            "SELECT current_setting('max_connections')::bigint \
                 - current_setting('superuser_reserved_connections')::bigint \
                 - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
            &[],
        )
        .await?
        .get(0);
    // The count includes this connection, which closes on return.
    Ok(usize::try_from(free + 1).unwrap_or(0))
}

/// `n` connections with `sql` prepared on each, or as many as Postgres
/// can spare beside the stack (the stack's pools hold connections too, and
/// a fresh machine's Postgres allows 100): workers share them round-robin
/// then (`conns[w % conns.len()]`; tokio-postgres pipelines the queries of
/// a shared connection), and the run says so.
async fn connections(
    url: &str,
    schema: &str,
    n: usize,
    sql: &str,
) -> anyhow::Result<Arc<Vec<(Client, Statement)>>> {
    let free = free_connections(url).await?;
    let n_open = n.min(free.saturating_sub(SPARE)).max(1);
    if n_open < n {
        println!(
            "    (raw baseline: {n} clients share {n_open} connections; Postgres had {free} free beside the stack)"
        );
    }
    let mut v = Vec::with_capacity(n_open);
    for _ in 0..n_open {
        let c = platform::db::connect(url, schema).await?;
        let s = c.prepare(sql).await?;
        v.push((c, s));
    }
    Ok(Arc::new(v))
}

fn status<T>(r: Result<T, tokio_postgres::Error>) -> u16 {
    if r.is_ok() {
        200
    } else {
        500
    }
}

/// Creates the raw schema and its single-row table.
pub async fn prepare(url: &str) -> anyhow::Result<()> {
    let c = platform::db::connect(url, "public").await?;
    c.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {SCHEMA}; \
         CREATE TABLE IF NOT EXISTS {SCHEMA}.single_insert (id UUID PRIMARY KEY, data JSONB NOT NULL); \
         TRUNCATE {SCHEMA}.single_insert;"
    ))
    .await?;
    Ok(())
}

/// Drops everything the baselines created in Postgres.
pub async fn cleanup(url: &str) -> anyhow::Result<()> {
    let c = platform::db::connect(url, "public").await?;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await?;
    Ok(())
}

/// Single-row `INSERT` (autocommit: one insert + commit per call) of a row
/// as large as a patient event, by `concurrency` connections.
pub async fn insert(
    url: &str,
    concurrency: usize,
    window: Window,
    payload: Value,
) -> anyhow::Result<Measured> {
    let conns = connections(
        url,
        SCHEMA,
        concurrency,
        "INSERT INTO single_insert (id, data) VALUES ($1, $2)",
    )
    .await?;
    let payload = Arc::new(payload);
    let m = load::closed(concurrency, window, move |w| {
        let (conns, payload) = (conns.clone(), payload.clone());
        async move {
            let (c, s) = &conns[w % conns.len()];
            status(c.execute(s, &[&Uuid::new_v4(), &*payload]).await)
        }
    })
    .await;
    let c = platform::db::connect(url, SCHEMA).await?;
    c.batch_execute("TRUNCATE single_insert").await?;
    Ok(m)
}

/// Primary-key `SELECT` of a read-model patient, by `concurrency`
/// connections.
pub async fn select(
    url: &str,
    read_schema: &str,
    concurrency: usize,
    window: Window,
    ids: Arc<Vec<Uuid>>,
) -> anyhow::Result<Measured> {
    let conns = connections(
        url,
        read_schema,
        concurrency,
        "SELECT * FROM patients WHERE patient_id = $1",
    )
    .await?;
    Ok(load::closed(concurrency, window, move |w| {
        let (conns, ids) = (conns.clone(), ids.clone());
        async move {
            let (c, s) = &conns[w % conns.len()];
            let id = ids[rand::random::<usize>() % ids.len()];
            status(c.query_opt(s, &[&id]).await)
        }
    })
    .await)
}

/// A filtered page (`last_name`, ordered like the API's pages, 51 rows at
/// most), by `concurrency` connections.
pub async fn list(
    url: &str,
    read_schema: &str,
    concurrency: usize,
    window: Window,
    names: Arc<Vec<String>>,
) -> anyhow::Result<Measured> {
    let conns = connections(
        url,
        read_schema,
        concurrency,
        "SELECT * FROM patients WHERE last_name = $1 ORDER BY created_at, patient_id LIMIT 51",
    )
    .await?;
    Ok(load::closed(concurrency, window, move |w| {
        let (conns, names) = (conns.clone(), names.clone());
        async move {
            let (c, s) = &conns[w % conns.len()];
            let n = &names[rand::random::<usize>() % names.len()];
            status(c.query(s, &[n]).await)
        }
    })
    .await)
}

/// The mixed workload's raw counterpart: a share of single-row inserts, the
/// rest primary-key selects.
pub async fn mix(
    url: &str,
    read_schema: &str,
    concurrency: usize,
    window: Window,
    write_share: f64,
    ids: Arc<Vec<Uuid>>,
    payload: Value,
) -> anyhow::Result<Measured> {
    let writers = connections(
        url,
        SCHEMA,
        concurrency,
        "INSERT INTO single_insert (id, data) VALUES ($1, $2)",
    )
    .await?;
    let readers = connections(
        url,
        read_schema,
        concurrency,
        "SELECT * FROM patients WHERE patient_id = $1",
    )
    .await?;
    let payload = Arc::new(payload);
    let m = load::closed(concurrency, window, move |w| {
        let (writers, readers, ids, payload) = (
            writers.clone(),
            readers.clone(),
            ids.clone(),
            payload.clone(),
        );
        async move {
            if rand::random::<f64>() < write_share {
                let (c, s) = &writers[w % writers.len()];
                status(c.execute(s, &[&Uuid::new_v4(), &*payload]).await)
            } else {
                let (c, s) = &readers[w % readers.len()];
                let id = ids[rand::random::<usize>() % ids.len()];
                status(c.query_opt(s, &[&id]).await)
            }
        }
    })
    .await;
    let c = platform::db::connect(url, SCHEMA).await?;
    c.batch_execute("TRUNCATE single_insert").await?;
    Ok(m)
}

/// A record as the relay publishes it.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Body.
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What one consumer read from offset 0.
#[derive(Debug, Clone, Default)]
pub struct Consumed {
    /// Records.
    pub records: u64,
    /// Seconds from assignment to the last record.
    pub secs: f64,
}

/// Reads every topic of the log from offset 0 to its current end with one
/// consumer (the projector's consumer settings), doing nothing with the
/// records.
pub async fn consume(cfg: &Config) -> anyhow::Result<Consumed> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let group = format!("lis-bench-consume-{}", Uuid::new_v4().simple());
        let c: BaseConsumer =
            platform::kafka::consumer_config(&cfg, &group, FetchWait::Short).create()?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = std::collections::HashMap::new();
        for topic in Topic::ALL {
            let name = topic.name(&cfg.topic_prefix);
            for p in 0..topic.partitions(&cfg) {
                let (low, high) = c.fetch_watermarks(&name, p, Duration::from_secs(10))?;
                if high > low {
                    remaining.insert((name.clone(), p), high);
                    tpl.add_partition_offset(&name, p, Offset::Beginning)?;
                }
            }
        }
        let started = Instant::now();
        c.assign(&tpl)?;
        let mut out = Consumed::default();
        let deadline = Instant::now() + Duration::from_secs(3600);
        while !remaining.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "consuming the log took over an hour"
            );
            let Some(m) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m?;
            out.records += 1;
            let key = (m.topic().to_string(), m.partition());
            if remaining
                .get(&key)
                .is_some_and(|high| m.offset() + 1 >= *high)
            {
                remaining.remove(&key);
            }
        }
        out.secs = started.elapsed().as_secs_f64();
        Ok(out)
    })
    .await?
}

/// What the raw producer did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Produced {
    /// Records acknowledged.
    pub records: u64,
    /// Bytes per record (payload).
    pub record_bytes: usize,
    /// Seconds.
    pub secs: f64,
}

/// Produces `n` copies of `sample` (fresh keys, partitioned like the relay)
/// with the relay's producer settings to a scratch topic, awaiting each
/// batch of 2,000 like the relay does.
///
/// The scratch topic has one fixed name and is kept (each run appends to
/// it): deleting a topic on the development broker (tansu 0.6) deletes
/// every topic of the cluster (its `topic_delete_by.sql` matches the
/// cluster, not the topic), which emptied the log of the stack under test.
pub async fn produce(cfg: &Config, n: u64, sample: &Sample) -> anyhow::Result<Produced> {
    let topic = format!("{}lis.bench.raw", cfg.topic_prefix);
    let partitions = cfg.kafka_partitions.max(1);
    let admin: AdminClient<DefaultClientContext> = platform::kafka::base_config(cfg).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for created in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await?
    {
        match created {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating {t}: {e}"),
        }
    }
    let producer: FutureProducer = platform::kafka::producer_config(cfg).create()?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let batch = 2000.min(n - sent);
        let mut deliveries = Vec::with_capacity(batch as usize);
        for _ in 0..batch {
            let id = Uuid::new_v4();
            let key = id.to_string();
            let mut headers = OwnedHeaders::new();
            for (k, v) in &sample.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&sample.payload)
                .partition(partition_for(id, partitions))
                .headers(headers);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?,
            );
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!("delivery failed: {e}"),
                Err(_) => anyhow::bail!("delivery canceled"),
            }
        }
        sent += batch;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Produced {
        records: sent,
        record_bytes: sample.payload.len(),
        secs,
    })
}

/// What the raw batch insert did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inserted {
    /// Rows inserted.
    pub rows: u64,
    /// Seconds (inserts only; reading the rows beforehand is not counted).
    pub secs: f64,
}

/// Reads every row of every table of `src` and inserts them into empty
/// copies of those tables (same columns and indexes), 500 rows per
/// statement, each its own transaction, on one connection.
pub async fn batch_insert(url: &str, src: &str) -> anyhow::Result<Inserted> {
    const BATCH: usize = 500;
    let dst = format!("{SCHEMA}_rows");
    let c = platform::db::connect(url, "public").await?;
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {dst} CASCADE; CREATE SCHEMA {dst}"
    ))
    .await?;
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' \
               AND table_name <> 'refinery_schema_history' ORDER BY 1",
            &[&src],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut batches: Vec<(String, String)> = Vec::new();
    for t in &tables {
        c.batch_execute(&format!(
            "CREATE TABLE {dst}.{t} (LIKE {src}.{t} INCLUDING ALL)"
        ))
        .await?;
        let rows = c
            .query_raw(
                &format!("SELECT row_to_json(t)::text FROM {src}.{t} t"),
                std::iter::empty::<&str>(),
            )
            .await?;
        let mut rows = std::pin::pin!(rows);
        let mut batch: Vec<String> = Vec::with_capacity(BATCH);
        while let Some(row) = rows.try_next().await? {
            batch.push(row.get(0));
            if batch.len() == BATCH {
                batches.push((t.clone(), format!("[{}]", batch.join(","))));
                batch.clear();
            }
        }
        if !batch.is_empty() {
            batches.push((t.clone(), format!("[{}]", batch.join(","))));
        }
    }
    let mut statements = std::collections::HashMap::new();
    for t in &tables {
        statements.insert(
            t.clone(),
            c.prepare(&format!(
                "INSERT INTO {dst}.{t} SELECT * FROM json_populate_recordset(NULL::{dst}.{t}, $1::text::json)"
            ))
            .await?,
        );
    }
    let started = Instant::now();
    let mut rows = 0u64;
    for (t, json) in &batches {
        rows += c
            .execute(&statements[t], &[json])
            .await
            .with_context(|| format!("batch insert into {t}"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {dst} CASCADE"))
        .await?;
    Ok(Inserted { rows, secs })
}
