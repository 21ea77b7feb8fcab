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
//! One publisher works at a time: the holder of the `analytics` lease
//! (`platform::lease`); others stand by. It stores offsets only in a
//! transaction that renews the lease with its epoch, and publishes only
//! while the lease is valid on its own clock.
//!
//! # Layout
//! - [`deidentify`]: what of one event the stream carries.
//! - [`run`]: the long-running loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::config::Config;
use platform::envelope::Envelope;
use platform::kafka::{partition_for, FetchWait, Topic};
use platform::lease::Lease;
use platform::offsets::{self, Owner};
use platform::pseudonym::Pseudonyms;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

pub mod deidentify;

/// Where it keeps its offsets.
pub const OWNER: Owner<'static> = Owner::Reactor("analytics");
/// The lease the working publisher holds.
const LEASE: &str = "analytics";
/// The topics whose events the analytics stream copies.
pub const SOURCES: [Topic; 2] = [Topic::Patients, Topic::Orders];
/// Messages per batch at most.
const BATCH: usize = 1000;

async fn publish(
    cfg: &Config,
    ids: &Pseudonyms,
    producer: &FutureProducer,
    batch: &[BorrowedMessage<'_>],
) -> anyhow::Result<()> {
    let topic = Topic::Analytics.name(&cfg.topic_prefix);
    let partitions = Topic::Analytics.partitions(cfg);
    let mut deliveries = Vec::with_capacity(batch.len());
    for msg in batch {
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
            let mut lease = Lease::acquire(&**write.get().await?, LEASE).await?;
            let producer: FutureProducer = platform::kafka::producer_config(&cfg).create()?;
            let stored = offsets::load(&write.get().await?, OWNER).await?;
            let consumer = offsets::assigned_consumer(
                &cfg,
                "lis-analytics",
                &SOURCES,
                &stored,
                FetchWait::Long,
            )?;
            tracing::info!("analytics publisher is running");
            loop {
                let batch = offsets::next_batch(&consumer, Duration::from_secs(1), BATCH).await?;
                lease.keep_pooled(&write).await?;
                if batch.is_empty() {
                    continue;
                }
                publish(&cfg, &ids, &producer, &batch).await?;
                offsets::store_under_lease(&write, &mut lease, OWNER, &offsets::after(&batch))
                    .await?;
                platform::metrics::ANALYTICS_PUBLISHED.inc_by(batch.len() as u64);
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            _ = &mut shutdown => return,
            r = term => if let Err(e) = r {
                tracing::warn!(error = %platform::telemetry::cause(e.as_ref()), "analytics publisher failed; resuming");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
