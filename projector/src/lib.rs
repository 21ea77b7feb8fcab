//! The projector: Kafka event log -> Postgres read models.
//!
//! Any number of projector processes keep one copy of the read models
//! current together: they share the partitions of the record topics through
//! Kafka's group protocol (cooperative rebalancing, group
//! `lis-projector-<topic prefix><schema>`), and each takes a partition newly assigned to it
//! from the offset stored with the read models, never from an offset
//! committed to the group (it commits none). It applies messages in
//! batches: one Postgres transaction holds a batch's rows *and* the offsets
//! after it (an offset never moves back), so a crash at any point neither
//! loses nor doubles an effect. Every row carries its stream's version in
//! `stream_versions`; an event at or below it (a re-delivery, a duplicate
//! publish after a broker failure, or a partition's last batch applied by
//! its previous owner while the new one starts) changes nothing.
//!
//! # Layout
//! - [`run`]: the long-running loop: one projection per copy of the read
//!   models that must stay current (the active one, and one `lis replay`
//!   rebuilt until readers switch to it).
//! - [`catch_up`], [`catch_up_to`]: apply everything up to the end of the
//!   log (used to rebuild a read model into a fresh schema).
//! - [`apply`]: what each event type does to the rows.
//! - [`history`]: the row each patient or order event adds to `history`
//!   (what it changed, the record after it), for history and as-of reads.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::config::Config;
use platform::envelope::Envelope;
use platform::kafka::{FetchWait, Topic};
use platform::offsets::{self, Offsets, Owner};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

pub mod apply;

mod embedded {
    refinery::embed_migrations!("migrations/read");
}

/// The read models' migrations (`migrations/read`), for
/// `platform::db::migrate` on each copy of the read models.
pub fn migrations() -> refinery::Runner {
    embedded::migrations::runner()
}
pub mod history;

/// Messages applied per transaction at most.
const BATCH: usize = 500;

/// The next offset of every partition, as stored with the rows it produced.
async fn stored_offsets(read: &Pool) -> anyhow::Result<Offsets> {
    Ok(offsets::load(&read.get().await?, Owner::ReadModels).await?)
}

/// How long the group waits for a silent projector before it gives its
/// partitions to the others.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// How long a projector holding no partition lets the read models stand
/// behind the log before it joins the group again. A group whose only
/// member, its leader, died can stay leaderless on the development broker
/// (tansu 0.6 drops a dead leader and elects none until a member joins
/// anew); a projector that holds nothing while nothing moves is the sign.
const STUCK_AFTER: Duration = Duration::from_secs(8);

/// Watches whether the group left this projector without work while the
/// read models stand behind the log.
#[derive(Default)]
struct Watchdog {
    checked: Option<tokio::time::Instant>,
    idle_since: Option<tokio::time::Instant>,
    stored: Option<i64>,
}

impl Watchdog {
    /// `Ok(true)` once the projector has held no partition for
    /// [`STUCK_AFTER`] while the stored offsets stood still behind the log.
    async fn stuck(&mut self, cfg: &Config, read: &Pool, assigned: usize) -> anyhow::Result<bool> {
        let now = tokio::time::Instant::now();
        if self
            .checked
            .is_some_and(|c| now - c < Duration::from_secs(3))
        {
            return Ok(false);
        }
        self.checked = Some(now);
        let stored = stored_offsets(read).await?;
        let sum: i64 = stored.values().sum();
        let moved = self.stored.replace(sum).is_some_and(|before| before != sum);
        if assigned > 0 || moved {
            self.idle_since = None;
            return Ok(false);
        }
        let behind = log_ends(cfg)
            .await?
            .iter()
            .any(|(k, end)| stored.get(k).copied().unwrap_or(0) < *end);
        if !behind {
            self.idle_since = None;
            return Ok(false);
        }
        let since = *self.idle_since.get_or_insert(now);
        Ok(now - since >= STUCK_AFTER)
    }
}

/// A projector in the group: on each rebalance it takes the partitions
/// newly assigned to it from the offsets stored with the read models (read
/// then, so it starts where their previous owner stopped) and says which
/// it took and gave up.
struct GroupMember {
    read: Pool,
    schema: String,
    runtime: tokio::runtime::Handle,
    /// Why a rebalance could not take its partitions; the member then
    /// leaves and starts again.
    failed: std::sync::Mutex<Option<String>>,
}

impl ClientContext for GroupMember {}

fn names(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ConsumerContext for GroupMember {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // The callback runs inside the consumer's poll, on a worker
                // of the multi-threaded runtime that `lis serve` runs.
                let stored = tokio::task::block_in_place(|| {
                    self.runtime.block_on(stored_offsets(&self.read))
                });
                match stored {
                    Ok(stored) => {
                        let assigned: Vec<(String, i32)> = tpl
                            .elements()
                            .iter()
                            .map(|e| (e.topic().to_string(), e.partition()))
                            .collect();
                        for (topic, partition) in assigned {
                            let offset = stored
                                .get(&(topic.clone(), partition))
                                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(format!("setting {topic}/{partition}'s offset: {e}"));
                            }
                        }
                    }
                    Err(e) => {
                        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                            "reading the stored offsets: {}",
                            platform::telemetry::cause(e.as_ref())
                        ));
                    }
                }
                if let Err(e) = consumer.incremental_assign(tpl) {
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("assigning partitions: {e}"));
                }
                if tpl.count() > 0 {
                    tracing::info!(schema = %self.schema, partitions = %names(tpl), "projector took partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = consumer.incremental_unassign(tpl) {
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("giving up partitions: {e}"));
                }
                if tpl.count() > 0 {
                    tracing::info!(schema = %self.schema, partitions = %names(tpl), "projector gave up partitions");
                }
            }
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("rebalance failed: {code}"));
            }
        }
    }
}

/// A member of the projectors' group of `cfg.read_schema`, subscribed to
/// the record topics.
fn group_member(cfg: &Config, read: &Pool) -> anyhow::Result<StreamConsumer<GroupMember>> {
    // One group per copy of the read models and per installation sharing
    // the cluster (its topic prefix).
    let group = format!("lis-projector-{}{}", cfg.topic_prefix, cfg.read_schema);
    let member = GroupMember {
        read: read.clone(),
        schema: cfg.read_schema.clone(),
        runtime: tokio::runtime::Handle::current(),
        failed: std::sync::Mutex::new(None),
    };
    let consumer: StreamConsumer<GroupMember> =
        platform::kafka::consumer_config(cfg, &group, FetchWait::Short)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            // Also how long a rebalance waits for members to rejoin.
            .set("max.poll.interval.ms", "20000")
            .create_with_context(member)?;
    let topics: Vec<String> = Topic::ALL
        .iter()
        .map(|t| t.name(&cfg.topic_prefix))
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Applies one batch of messages and their offsets in one transaction.
async fn apply_batch(read: &Pool, batch: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
    let mut db = read.get().await?;
    let tx = db.transaction().await?;
    // Read models are derived: a batch lost in a Postgres crash is applied
    // again from the offsets committed with it, so its commit need not wait
    // for the WAL flush.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let mut newest = None;
    let mut envelopes = Vec::with_capacity(batch.len());
    for msg in batch {
        let Some(payload) = msg.payload() else {
            continue;
        };
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(env) => envelopes.push(env),
            Err(e) => tracing::error!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                error = %platform::telemetry::cause(&e),
                "skipping a message that is not an event envelope"
            ),
        }
    }
    let streams: Vec<uuid::Uuid> = envelopes.iter().map(|e| e.stream_id).collect();
    let mut versions = apply::Versions::load(&tx, &streams).await?;
    let mut rows = apply::Rows::load(&tx, &versions, &envelopes).await?;
    let mut history = history::History::default();
    for env in &envelopes {
        apply::apply(&tx, &mut versions, &mut rows, &mut history, env).await?;
        newest = Some(env.occurred_at);
    }
    rows.save(&tx).await?;
    versions.save(&tx).await?;
    history.save(&tx).await?;
    offsets::store(&tx, Owner::ReadModels, &offsets::after(batch)).await?;
    tx.commit().await?;
    platform::metrics::PROJECTOR_APPLIED.inc_by(batch.len() as u64);
    if let Some(t) = newest {
        platform::metrics::PROJECTOR_LAG.set(platform::metrics::seconds_since(&t));
    }
    Ok(())
}

/// Keeps one copy of the read models current, restarting after failures
/// from the offsets stored with the rows; runs until aborted (a batch is one
/// transaction, so an abort leaves nothing half applied).
async fn project(cfg: Config, read: Pool) {
    loop {
        let term = async {
            let consumer = group_member(&cfg, &read)?;
            tracing::info!(schema = %cfg.read_schema, "projector is running");
            let mut watchdog = Watchdog::default();
            loop {
                let batch =
                    offsets::next_batch(&consumer, Duration::from_millis(500), BATCH).await?;
                if let Some(why) = consumer
                    .context()
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    anyhow::bail!("{why}");
                }
                if !batch.is_empty() {
                    apply_batch(&read, &batch).await?;
                    continue;
                }
                let assigned = consumer.assignment().map_or(0, |a| a.count());
                if watchdog.stuck(&cfg, &read, assigned).await? {
                    anyhow::bail!(
                        "no partition assigned for {STUCK_AFTER:?} while the read models stand behind the log; joining the group again"
                    );
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        if let Err(e) = term.await {
            tracing::warn!(schema = %cfg.read_schema, error = %platform::telemetry::cause(e.as_ref()), "projector failed; restarting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the projector until `shutdown` resolves: keeps the active copy of
/// the read models current, and a copy `lis replay` rebuilt (state
/// `ready`) too until readers switch to it; follows the `read_schemas`
/// registry on the write side (`write`).
pub async fn run(cfg: Config, write: Pool, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        match platform::read_models::projected(&write, &cfg.read_schema).await {
            Ok(wanted) => {
                running.retain(|schema, task| {
                    let keep = wanted.contains(schema) && !task.is_finished();
                    if !keep {
                        tracing::info!(%schema, "projector stops keeping a copy current");
                        task.abort();
                    }
                    keep
                });
                for schema in wanted {
                    if running.contains_key(&schema) {
                        continue;
                    }
                    let Ok(pool) = platform::db::pool(&cfg.database_url, &schema, 4) else {
                        continue;
                    };
                    let mut c = cfg.clone();
                    c.read_schema = schema.clone();
                    running.insert(schema, tokio::spawn(project(c, pool)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %platform::telemetry::cause(&e), "projector cannot read the read_schemas registry")
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(platform::read_models::FOLLOW_EVERY) => {}
        }
    }
    for (_, task) in running {
        task.abort();
    }
}

/// The current end offset of every partition.
pub async fn log_ends(cfg: &Config) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let c: rdkafka::consumer::BaseConsumer =
            platform::kafka::consumer_config(&cfg, "lis-projector-ends", FetchWait::Long)
                .create()?;
        let mut ends = HashMap::new();
        for topic in Topic::ALL {
            let name = topic.name(&cfg.topic_prefix);
            for p in 0..topic.partitions(&cfg) {
                let (_, high) = c.fetch_watermarks(&name, p, Duration::from_secs(10))?;
                ends.insert((name.clone(), p), high);
            }
        }
        Ok(ends)
    })
    .await?
}

/// Whether the read schema of `read` has applied every partition up to
/// `ends` (from [`log_ends`]), by the offsets stored with its rows.
pub async fn reached(read: &Pool, ends: &HashMap<(String, i32), i64>) -> anyhow::Result<bool> {
    Ok(offsets::reached(&stored_offsets(read).await?, ends))
}

/// Applies the log up to its current end into the read schema of `read`,
/// then returns the number of messages applied. Used to rebuild a read
/// model from offset 0 into a fresh schema.
pub async fn catch_up(cfg: &Config, read: &Pool, timeout: Duration) -> anyhow::Result<u64> {
    let ends = log_ends(cfg).await?;
    catch_up_to(cfg, read, &ends, BATCH, timeout, |_| {}).await
}

/// How far a copy of the read models is from the ends of the log, in
/// messages: `(applied, total)`, by the offsets stored with its rows.
pub async fn progress(
    read: &Pool,
    ends: &HashMap<(String, i32), i64>,
) -> anyhow::Result<(u64, u64)> {
    let done = stored_offsets(read).await?;
    let total: i64 = ends.values().sum();
    let applied: i64 = ends
        .iter()
        .map(|(k, end)| done.get(k).copied().unwrap_or(0).min(*end))
        .sum();
    Ok((applied as u64, total as u64))
}

/// `partitions` dealt to up to `readers` readers, none of them empty.
fn shares(partitions: Vec<(String, i32)>, readers: usize) -> Vec<Vec<(String, i32)>> {
    let readers = readers.clamp(1, partitions.len().max(1));
    let mut shares = vec![Vec::new(); readers];
    for (i, key) in partitions.into_iter().enumerate() {
        shares[i % readers].push(key);
    }
    shares.retain(|s| !s.is_empty());
    shares
}

/// Applies the log into the read schema of `read` until it reaches `ends`,
/// in transactions of at most `batch` messages, calling `on_batch` with the
/// number of messages applied so far as it goes; returns that number.
/// Resumable: it starts from the offsets stored with the rows. The
/// partitions are read in parallel, shared among up to one reader per core
/// (each its own consumer and transactions, as projectors sharing a group
/// are: a stream's events are all in one partition).
pub async fn catch_up_to(
    cfg: &Config,
    read: &Pool,
    ends: &HashMap<(String, i32), i64>,
    batch: usize,
    timeout: Duration,
    mut on_batch: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let stored = stored_offsets(read).await?;
    let group = format!("lis-projector-{}", cfg.read_schema);
    let readers = std::thread::available_parallelism().map_or(1, usize::from);
    let shares = shares(offsets::partitions(cfg, &Topic::ALL), readers);
    let deadline = tokio::time::Instant::now() + timeout;
    let applied = std::sync::atomic::AtomicU64::new(0);
    let mut work = Vec::with_capacity(shares.len());
    for share in shares {
        let consumer = offsets::consumer_of(cfg, &group, &share, &stored, FetchWait::Short)?;
        let of_share = |all: &Offsets| -> Offsets {
            all.iter()
                .filter(|(k, _)| share.contains(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let ends = of_share(ends);
        // Only this reader applies its partitions, so where it stands is
        // what it read at the start and what it applied since.
        let mut at = of_share(&stored);
        let applied = &applied;
        work.push(async move {
            loop {
                if offsets::reached(&at, &ends) {
                    return anyhow::Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("catch-up did not reach the end of the log in {timeout:?}");
                }
                let msgs = offsets::next_batch(&consumer, Duration::from_millis(200), batch.max(1))
                    .await?;
                if !msgs.is_empty() {
                    apply_batch(read, &msgs).await?;
                    at.extend(offsets::after(&msgs));
                    applied.fetch_add(msgs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    let mut work = std::pin::pin!(futures::future::try_join_all(work));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            done = &mut work => {
                done?;
                let n = applied.load(std::sync::atomic::Ordering::Relaxed);
                on_batch(n);
                return Ok(n);
            }
            _ = tick.tick() => on_batch(applied.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shares;

    fn keys(n: i32) -> Vec<(String, i32)> {
        (0..n).map(|p| ("t".to_string(), p)).collect()
    }

    #[test]
    fn every_partition_goes_to_exactly_one_reader() {
        let s = shares(keys(9), 2);
        assert_eq!(s.len(), 2);
        let mut all: Vec<_> = s.concat();
        all.sort();
        assert_eq!(all, keys(9));
        assert_eq!((s[0].len(), s[1].len()), (5, 4));
    }

    #[test]
    fn no_reader_is_left_without_a_partition() {
        assert_eq!(shares(keys(3), 8).len(), 3);
        assert_eq!(shares(keys(4), 0).len(), 1);
        assert!(shares(Vec::new(), 2).is_empty());
    }
}
