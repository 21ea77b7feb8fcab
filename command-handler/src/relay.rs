//! The relay: publishes every committed event to Kafka, in commit order, once.
//!
//! Order: events are read in `(txid, position)` order and only below
//! `pg_snapshot_xmin` of the current snapshot, i.e. once no transaction that
//! could still commit an earlier-ordered event is running. A sequence value
//! that became visible late can therefore never be skipped.
//!
//! Once: the relay records its checkpoint after each acknowledged batch. On
//! start (and after any error) it reads the last record of every partition,
//! whose `lis_position` header says how far that partition got, and skips
//! what is already there; the idempotent producer removes retries within a
//! session. Only one relay publishes at a time (a Postgres advisory lock);
//! others wait as standbys.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use domain::event::StreamKind;
use platform::config::Config;
use platform::envelope::{Envelope, POSITION_HEADER};
use platform::kafka::{partition_for, Topic};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::AsyncMessage;

/// Advisory lock key held by the active relay.
const RELAY_LOCK: i64 = 0x6c69_735f_7265_6c61;
/// Events read per batch.
const BATCH: i64 = 2000;

/// A position in the event store's publication order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Writing transaction id.
    pub txid: u64,
    /// Event position.
    pub position: i64,
}

impl Position {
    fn header(&self) -> String {
        format!("{}:{}", self.txid, self.position)
    }

    fn parse(s: &str) -> Option<Self> {
        let (t, p) = s.split_once(':')?;
        Some(Position {
            txid: t.parse().ok()?,
            position: p.parse().ok()?,
        })
    }
}

type PartitionKey = (Topic, i32);

struct Relay {
    cfg: Config,
    producer: FutureProducer,
    /// The last position each partition already holds.
    published: HashMap<PartitionKey, Position>,
}

/// Runs the relay until `shutdown` resolves, retrying after any failure.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            r = run_once(&cfg) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "relay failed; restarting");
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One leadership term: lock, resync from the partitions, publish.
async fn run_once(cfg: &Config) -> anyhow::Result<()> {
    let pg: tokio_postgres::Config = {
        let mut c: tokio_postgres::Config = cfg.database_url.parse()?;
        c.options(format!("-c search_path={}", cfg.write_schema));
        c.application_name("lis-relay");
        c.connect_timeout(Duration::from_secs(5));
        c
    };
    let (client, mut conn) = pg.connect(tokio_postgres::NoTls).await?;
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    let _ = wake_tx.try_send(());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    let _guard = AbortOnDrop(driver);

    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK])
            .await?
            .get(0);
        if locked {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    client.batch_execute("LISTEN lis_events").await?;
    tracing::info!("relay is active");

    let producer: FutureProducer = platform::kafka::producer_config(cfg).create()?;
    let mut relay = Relay {
        cfg: cfg.clone(),
        published: read_partition_ends(cfg).await?,
        producer,
    };
    let mut checkpoint = load_checkpoint(&client).await?;
    // Partitions may hold more than the checkpoint says (a crash between the
    // broker's ack and the checkpoint); nothing below the smallest of them
    // needs reading, but events in between must be checked one by one.
    loop {
        let rows = client
            .query(
                "SELECT txid::text, position, event_id, stream_type, stream_id, version, event_type, \
                 schema_version, occurred_at, actor, command_id, idempotency_key, data \
                 FROM events \
                 WHERE (txid, position) > ($1::text::xid8, $2) \
                   AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY txid, position LIMIT $3",
                &[&checkpoint.txid.to_string(), &checkpoint.position, &BATCH],
            )
            .await?;
        if rows.is_empty() {
            tokio::select! {
                _ = wake.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        }
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut last = checkpoint;
        let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
        for row in &rows {
            let txid: String = row.get(0);
            let pos = Position {
                txid: txid.parse()?,
                position: row.get(1),
            };
            last = pos;
            let stream_type: String = row.get(3);
            let kind = StreamKind::parse(&stream_type)
                .ok_or_else(|| anyhow::anyhow!("unknown stream type {stream_type}"))?;
            let topic = Topic::of(kind);
            let stream_id: uuid::Uuid = row.get(4);
            let partition = partition_for(stream_id, topic.partitions(&relay.cfg));
            if relay
                .published
                .get(&(topic, partition))
                .is_some_and(|p| *p >= pos)
            {
                continue;
            }
            let envelope = Envelope {
                event_id: row.get(2),
                event_type: row.get(6),
                schema_version: row.get(7),
                stream_type,
                stream_id,
                version: row.get(5),
                occurred_at: row.get(8),
                actor: serde_json::from_value(row.get(9))?,
                command_id: row.get(10),
                idempotency_key: row.get(11),
                data: row.get(12),
            };
            newest = Some(envelope.occurred_at);
            let payload = serde_json::to_vec(&envelope)?;
            let key = stream_id.to_string();
            let mut headers = OwnedHeaders::new();
            for (name, value) in envelope.cloudevent_headers() {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let position_header = pos.header();
            headers = headers.insert(Header {
                key: POSITION_HEADER,
                value: Some(position_header.as_bytes()),
            });
            let topic_name = topic.name(&relay.cfg.topic_prefix);
            let record = FutureRecord::to(&topic_name)
                .key(&key)
                .payload(&payload)
                .partition(partition)
                .headers(headers);
            let delivery = relay
                .producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?;
            deliveries.push(((topic, partition), pos, delivery));
        }
        for (key, pos, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {
                    relay.published.insert(key, pos);
                    platform::metrics::RELAY_PUBLISHED.inc();
                }
                Ok(Err((e, _))) => anyhow::bail!("delivery failed: {e}"),
                Err(_) => anyhow::bail!("delivery canceled"),
            }
        }
        client
            .execute(
                "INSERT INTO relay_checkpoint (id, txid, position, updated_at) \
                 VALUES (1, $1::text::xid8, $2, now()) \
                 ON CONFLICT (id) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position, updated_at = now()",
                &[&last.txid.to_string(), &last.position],
            )
            .await?;
        checkpoint = last;
        if let Some(t) = newest {
            platform::metrics::RELAY_LAG.set(platform::metrics::seconds_since(&t));
        }
        let _ = relay.producer.flush(Duration::from_secs(0));
    }
}

async fn load_checkpoint(client: &tokio_postgres::Client) -> anyhow::Result<Position> {
    let row = client
        .query_opt(
            "SELECT txid::text, position FROM relay_checkpoint WHERE id = 1",
            &[],
        )
        .await?;
    Ok(match row {
        None => Position::default(),
        Some(r) => Position {
            txid: r.get::<_, String>(0).parse()?,
            position: r.get(1),
        },
    })
}

/// Reads the `lis_position` header of the last record of every partition.
pub async fn read_partition_ends(cfg: &Config) -> anyhow::Result<HashMap<PartitionKey, Position>> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            platform::kafka::consumer_config(&cfg, "lis-relay-resync").create()?;
        let mut tpl = TopicPartitionList::new();
        let mut names = HashMap::new();
        for topic in Topic::ALL {
            let name = topic.name(&cfg.topic_prefix);
            names.insert(name.clone(), topic);
            for p in 0..topic.partitions(&cfg) {
                let (low, high) = consumer.fetch_watermarks(&name, p, Duration::from_secs(10))?;
                if high > low {
                    tpl.add_partition_offset(&name, p, Offset::Offset(high - 1))?;
                }
            }
        }
        let mut ends = HashMap::new();
        let wanted = tpl.count();
        if wanted == 0 {
            return Ok(ends);
        }
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = std::collections::HashSet::new();
        while seen.len() < wanted {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("timed out reading partition ends");
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let msg = msg?;
            let key = (names[msg.topic()], msg.partition());
            if !seen.insert(key) {
                continue;
            }
            let pos = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == POSITION_HEADER))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(Position::parse);
            if let Some(pos) = pos {
                ends.insert(key, pos);
            }
        }
        Ok(ends)
    })
    .await?
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
