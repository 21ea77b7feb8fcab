//! The analytics publisher: reads the patient and order topics and
//! publishes `lis.analytics.v1`, a de-identified copy of every event
//! ([`deidentify`]), keyed by the record's pseudonym so one record's events
//! stay in order.
//!
//! Delivery: it publishes a batch with the idempotent producer (one request
//! in flight, retried without end), waits for every acknowledgement, then
//! stores the offsets after the batch (`reactor_offsets`). A crash between
//! the two publishes that batch again when it resumes: a consumer may see
//! an event twice (and ignores an `eventID` it applied), never out of
//! order, and never misses one.
//!
//! # Layout
//! - [`deidentify`]: what of one event the stream carries.
//! - [`run`]: the long-running loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::config::Config;
use platform::envelope::Envelope;
use platform::kafka::{partition_for, Topic};
use platform::pseudonym::Pseudonyms;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub mod deidentify;

const REACTOR: &str = "analytics";
/// The topics whose events the analytics stream copies.
const SOURCES: [Topic; 2] = [Topic::Patients, Topic::Orders];
/// Messages per batch at most.
const BATCH: usize = 1000;

async fn consumer(cfg: &Config, write: &Pool) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer =
        platform::kafka::consumer_config(cfg, "lis-analytics").create()?;
    let stored: HashMap<(String, i32), i64> = write
        .get()
        .await?
        .query(
            "SELECT topic, partition, next_offset FROM reactor_offsets WHERE reactor = $1",
            &[&REACTOR],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for topic in SOURCES {
        let name = topic.name(&cfg.topic_prefix);
        for p in 0..topic.partitions(cfg) {
            let offset = stored
                .get(&(name.clone(), p))
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&name, p, offset)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Waits for one message, then takes what is already there.
async fn next_batch(consumer: &StreamConsumer) -> anyhow::Result<Vec<BorrowedMessage<'_>>> {
    let mut batch = vec![consumer.recv().await?];
    while batch.len() < BATCH {
        match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
            Ok(m) => batch.push(m?),
            Err(_) => break,
        }
    }
    Ok(batch)
}

async fn publish(
    cfg: &Config,
    ids: &Pseudonyms,
    producer: &FutureProducer,
    batch: &[BorrowedMessage<'_>],
) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let topic = Topic::Analytics.name(&cfg.topic_prefix);
    let partitions = Topic::Analytics.partitions(cfg);
    let mut next = HashMap::new();
    let mut deliveries = Vec::with_capacity(batch.len());
    for msg in batch {
        next.insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
        let Some(env) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<Envelope>(p).ok())
        else {
            tracing::error!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                "skipping a message that is not an event envelope"
            );
            continue;
        };
        let Some(d) = deidentify::deidentify(&env, ids) else {
            continue;
        };
        let payload = serde_json::to_vec(&d.body)?;
        let key = d.key.to_string();
        let mut headers = OwnedHeaders::new();
        for (name, value) in &d.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&payload)
            .partition(partition_for(d.key, partitions))
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("delivery failed: {e}"),
            Err(_) => anyhow::bail!("delivery canceled"),
        }
    }
    Ok(next)
}

async fn store_offsets(write: &Pool, next: HashMap<(String, i32), i64>) -> anyhow::Result<()> {
    let (mut topics, mut partitions, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for ((topic, partition), offset) in next {
        topics.push(topic);
        partitions.push(partition);
        offsets.push(offset);
    }
    write
        .get()
        .await?
        .execute(
            "INSERT INTO reactor_offsets (reactor, topic, partition, next_offset) \
             SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[]) \
             ON CONFLICT (reactor, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
            &[&REACTOR, &topics, &partitions, &offsets],
        )
        .await?;
    Ok(())
}

/// Runs the publisher until `shutdown` resolves, resuming after failures
/// from the offsets it stored.
pub async fn run(
    cfg: Config,
    ids: Arc<Pseudonyms>,
    write: Pool,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let term = async {
            let producer: FutureProducer = platform::kafka::producer_config(&cfg).create()?;
            let consumer = consumer(&cfg, &write).await?;
            tracing::info!("analytics publisher is running");
            loop {
                let batch = next_batch(&consumer).await?;
                let next = publish(&cfg, &ids, &producer, &batch).await?;
                store_offsets(&write, next).await?;
                platform::metrics::ANALYTICS_PUBLISHED.inc_by(batch.len() as u64);
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            _ = &mut shutdown => return,
            r = term => if let Err(e) = r {
                tracing::warn!(error = %e, "analytics publisher failed; resuming");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
