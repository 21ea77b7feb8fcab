//! Kafka: topic names, partitioning, client settings and topic creation.
//!
//! Nothing here depends on the broker's make: the same settings work with
//! Apache Kafka in production and the Kafka-compatible broker used locally.

use std::time::Duration;

use domain::event::StreamKind;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use uuid::Uuid;

use crate::config::Config;

/// The topics of the full event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Patient and patient-account streams.
    Patients,
    /// Order streams.
    Orders,
    /// Clients, locations and partners: one partition, so a location never
    /// overtakes its client.
    Reference,
    /// The relay's signed checkpoints of the log's hash chain
    /// (`platform::chain`): one partition.
    Chain,
    /// The de-identified copy of the patient and order events, for analytics.
    Analytics,
}

impl Topic {
    /// The topics of the full event log (every event, in full).
    pub const ALL: [Topic; 3] = [Topic::Patients, Topic::Orders, Topic::Reference];

    /// Topics derived from the log: its signed chain checkpoints and the
    /// de-identified analytics stream.
    pub const DERIVED: [Topic; 2] = [Topic::Chain, Topic::Analytics];

    /// The topic's base name (before the configured prefix).
    pub fn base_name(self) -> &'static str {
        match self {
            Topic::Patients => "lis.patients.v1",
            Topic::Orders => "lis.orders.v1",
            Topic::Reference => "lis.reference.v1",
            Topic::Chain => "lis.chain.v1",
            Topic::Analytics => "lis.analytics.v1",
        }
    }

    /// The topic a stream kind's events go to.
    pub fn of(kind: StreamKind) -> Topic {
        match kind {
            StreamKind::Patient | StreamKind::Account => Topic::Patients,
            StreamKind::Order => Topic::Orders,
            StreamKind::Partner
            | StreamKind::Client
            | StreamKind::Location
            | StreamKind::Catalog => Topic::Reference,
        }
    }

    /// The full topic name under `prefix`.
    pub fn name(self, prefix: &str) -> String {
        format!("{prefix}{}", self.base_name())
    }

    /// How many partitions the topic has.
    pub fn partitions(self, cfg: &Config) -> i32 {
        match self {
            Topic::Patients | Topic::Orders | Topic::Analytics => cfg.kafka_partitions.max(1),
            Topic::Reference | Topic::Chain => 1,
        }
    }
}

/// The partition of a stream: stable, so one stream's events stay in order.
pub fn partition_for(stream_id: Uuid, partitions: i32) -> i32 {
    let bytes = stream_id.as_bytes();
    let h = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    (h % partitions.max(1) as u64) as i32
}

/// Settings shared by every client.
pub fn base_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka_brokers)
        .set("socket.timeout.ms", "10000")
        .set("socket.nagle.disable", "true")
        // Reconnect within a second of a broker restart (the default backs
        // off to 10 s, which the fault suite saw as 14 s recoveries).
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "3");
    c
}

/// Settings of the relay's producer: the idempotent producer (`acks=all`,
/// sequence numbers) with one request in flight, retrying without end.
///
/// - Idempotence: librdkafka documents that retries may reorder a
///   partition's records unless it is on; with it, the broker rejects a
///   batch that does not follow the last one it wrote (sequence numbers)
///   and librdkafka resends in order.
/// - One request in flight: a relay killed mid-publish leaves at most one
///   request behind it, itself in order; whatever of it lands is a run of
///   repeats that the relay's resync and every consumer's (stream, version)
///   check ignore. (An earlier note blamed a reordering seen by the fault
///   suite, positions 6516-6736 before 6270-6505, on several requests in
///   flight; it was the relay sorting transaction ids as text across
///   9,999 -> 10,000, fixed in `command_handler::relay`.)
pub fn producer_config(cfg: &Config) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("retries", "2147483647")
        .set("linger.ms", "2")
        // Never give up on a record: the relay waits out a broker outage
        // rather than leave a gap that a later record could land behind.
        .set("message.timeout.ms", "0");
    c
}

/// How long the broker may hold a consumer's fetch (`fetch.wait.max.ms`).
///
/// tansu 0.6 holds every fetch that long, records or not: it reads the
/// partitions, then sleeps what is left of the wait before it answers. So
/// the wait is at once the consumer's latency (a record produced just after
/// a fetch began arrives with the next one: one to two waits after it was
/// produced), its throughput (a fetch's worth of records per wait) and,
/// while idle, its cost to the broker (a fetch, one query per partition,
/// per wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchWait {
    /// 20 ms, for consumers someone waits on: the projector (its lag is
    /// what a read without a consistency token sees, and replay's speed),
    /// and readers of the log up to its end (verify, the relay's resync,
    /// the bench's probes).
    Short,
    /// 250 ms, for consumers no one waits on within a second: the mailer
    /// and the analytics publisher. Their idle fetches are what pays for
    /// the projector's short ones.
    Long,
}

impl FetchWait {
    fn millis(self) -> &'static str {
        match self {
            FetchWait::Short => "20",
            FetchWait::Long => "250",
        }
    }
}

/// Settings of a consumer that assigns partitions itself and keeps its
/// offsets in Postgres.
pub fn consumer_config(cfg: &Config, group: &str, wait: FetchWait) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", wait.millis());
    c
}

/// Creates every topic (the log's and the derived ones) with unlimited
/// retention; existing topics are kept.
///
/// `cleanup.policy` is deliberately left at the broker default (`delete`
/// on Kafka, where `retention.ms=-1` then means "never"): tansu 0.6's
/// maintenance task, which runs when the broker starts and every ten
/// minutes, reads an explicit `cleanup.policy=delete` with `retention.ms=-1`
/// as "delete every record older than -1 ms" and emptied the log
/// (found by `lis-faults`; regression test `tests/tests/broker_restart.rs`).
pub async fn ensure_topics(cfg: &Config) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(cfg).create()?;
    let names: Vec<(String, i32)> = Topic::ALL
        .iter()
        .chain(Topic::DERIVED.iter())
        .map(|t| (t.name(&cfg.topic_prefix), t.partitions(cfg)))
        .collect();
    let min_insync = cfg.kafka_min_insync_replicas.to_string();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|(name, partitions)| {
            let topic = NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(cfg.kafka_replication_factor),
            )
            .set("retention.ms", "-1")
            .set("retention.bytes", "-1");
            // Only a replicated topic needs it (the local stack's broker
            // keeps one copy and its own default).
            if cfg.kafka_replication_factor > 1 {
                topic.set("min.insync.replicas", &min_insync)
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// One record read back from a topic (for checks, replays and tests).
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The topic.
    pub topic: Topic,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, as text.
    pub key: String,
    /// Headers, as text.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Vec<u8>,
}

/// Reads every record of `topics` from their start up to the end each
/// partition had when the read began. Blocking: call it from
/// `spawn_blocking`.
pub fn read_from_start(
    cfg: &Config,
    topics: &[Topic],
    timeout: Duration,
) -> anyhow::Result<Vec<LogRecord>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    let group = format!("lis-reader-{}", Uuid::new_v4().simple());
    let c: BaseConsumer = consumer_config(cfg, &group, FetchWait::Short).create()?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut names = std::collections::HashMap::new();
    for &topic in topics {
        let name = topic.name(&cfg.topic_prefix);
        names.insert(name.clone(), topic);
        for p in 0..topic.partitions(cfg) {
            let (low, high) = c.fetch_watermarks(&name, p, Duration::from_secs(10))?;
            remaining += high - low;
            tpl.add_partition_offset(&name, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while (out.len() as i64) < remaining {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "read {} of {remaining} records in {timeout:?}",
            out.len()
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        out.push(LogRecord {
            topic: names[m.topic()],
            partition: m.partition(),
            offset: m.offset(),
            key: text(m.key()),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), text(h.value)))
                        .collect()
                })
                .unwrap_or_default(),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay's ordering rests on these settings (see
    /// [`producer_config`] for why each).
    #[test]
    fn the_relay_producer_is_idempotent_with_one_request_in_flight() {
        let cfg = Config::from_env().expect("defaults");
        let c = producer_config(&cfg);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("message.timeout.ms"), Some("0"));
    }
}
