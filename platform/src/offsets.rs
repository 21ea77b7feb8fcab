//! Kafka offsets kept in Postgres beside what they produced: the read
//! models' (`consumer_offsets`, in each read schema) and the write side's
//! reactors' (`reactor_offsets`: the mailer, the analytics publisher).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::db::Cached;
use crate::kafka::{FetchWait, Topic};

/// The next offset of each (topic name, partition).
pub type Offsets = HashMap<(String, i32), i64>;

/// Whose offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A copy of the read models (the schema the client's pool is on).
    ReadModels,
    /// A reactor of the write side, by name.
    Reactor(&'a str),
}

/// The stored offsets of `owner`.
pub async fn load(
    db: &(impl Cached + Sync),
    owner: Owner<'_>,
) -> Result<Offsets, tokio_postgres::Error> {
    let rows = match owner {
        Owner::ReadModels => {
            db.query_cached(
                "SELECT topic, partition, next_offset FROM consumer_offsets",
                &[],
            )
            .await?
        }
        Owner::Reactor(name) => {
            db.query_cached(
                "SELECT topic, partition, next_offset FROM reactor_offsets WHERE reactor = $1",
                &[&name],
            )
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// Whether `stored` is at or past `ends` on every partition of `ends` that
/// holds anything.
pub fn reached(stored: &Offsets, ends: &Offsets) -> bool {
    ends.iter()
        .all(|(k, end)| *end == 0 || stored.get(k).is_some_and(|d| d >= end))
}

/// Stores `next` for `owner` (in the caller's transaction, when it has one).
pub async fn store(
    db: &(impl Cached + Sync),
    owner: Owner<'_>,
    next: &Offsets,
) -> Result<(), tokio_postgres::Error> {
    let (mut topics, mut partitions, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for ((topic, partition), offset) in next {
        topics.push(topic.as_str());
        partitions.push(*partition);
        offsets.push(*offset);
    }
    match owner {
        Owner::ReadModels => {
            db.execute_cached(
                "INSERT INTO consumer_offsets (topic, partition, next_offset) \
                 SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) \
                 ON CONFLICT (topic, partition) DO UPDATE \
                 SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset)",
                &[&topics, &partitions, &offsets],
            )
            .await?
        }
        Owner::Reactor(name) => {
            db.execute_cached(
                "INSERT INTO reactor_offsets (reactor, topic, partition, next_offset) \
                 SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[]) \
                 ON CONFLICT (reactor, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
                &[&name, &topics, &partitions, &offsets],
            )
            .await?
        }
    };
    Ok(())
}

/// Every partition of `topics`, as `(topic name, partition)`.
pub fn partitions(cfg: &Config, topics: &[Topic]) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|topic| {
            let name = topic.name(&cfg.topic_prefix);
            (0..topic.partitions(cfg)).map(move |p| (name.clone(), p))
        })
        .collect()
}

/// A consumer in `group` assigned every partition of `topics`, each from
/// its offset in `stored`, or from the beginning, whose fetches wait `wait`.
pub fn assigned_consumer(
    cfg: &Config,
    group: &str,
    topics: &[Topic],
    stored: &Offsets,
    wait: FetchWait,
) -> anyhow::Result<StreamConsumer> {
    consumer_of(cfg, group, &partitions(cfg, topics), stored, wait)
}

/// A consumer in `group` assigned `partitions`, each from its offset in
/// `stored`, or from the beginning, whose fetches wait `wait`.
pub fn consumer_of(
    cfg: &Config,
    group: &str,
    partitions: &[(String, i32)],
    stored: &Offsets,
    wait: FetchWait,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = crate::kafka::consumer_config(cfg, group, wait).create()?;
    let mut tpl = TopicPartitionList::new();
    for key in partitions {
        let offset = stored
            .get(key)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        tpl.add_partition_offset(&key.0, key.1, offset)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Receives up to `max` messages: waits up to `wait` for the first, then
/// takes what is already there.
pub async fn next_batch<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    wait: Duration,
    max: usize,
) -> anyhow::Result<Vec<BorrowedMessage<'_>>> {
    let mut batch = Vec::new();
    match tokio::time::timeout(wait, consumer.recv()).await {
        Err(_) => return Ok(batch),
        Ok(first) => batch.push(first?),
    }
    while batch.len() < max {
        match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(batch)
}

/// The offset after each message of `batch`, per partition.
pub fn after(batch: &[BorrowedMessage<'_>]) -> Offsets {
    use rdkafka::message::Message;
    let mut next = Offsets::new();
    for msg in batch {
        next.insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
    }
    next
}

/// Stores `next` for `owner` in a transaction of its own that first renews
/// `lease` (fencing the write: `Lost` once another process took it).
pub async fn store_under_lease(
    pool: &deadpool_postgres::Pool,
    lease: &mut crate::lease::Lease,
    owner: Owner<'_>,
    next: &Offsets,
) -> anyhow::Result<()> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let renewal = lease.fence(&*tx).await?;
    store(&tx, owner, next).await?;
    tx.commit().await?;
    lease.renewed(renewal);
    Ok(())
}
