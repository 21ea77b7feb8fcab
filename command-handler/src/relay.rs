//! The relay: publishes every committed event to Kafka, in commit order, once.
//!
//! Order: events are read in `(txid, position)` order and only below
//! `pg_snapshot_xmin` of the current snapshot, i.e. once no transaction that
//! could still commit an earlier-ordered event is running. A sequence value
//! that became visible late can therefore never be skipped.
//!
//! Once: the relay records its checkpoint, with each partition's next offset,
//! after each acknowledged batch. On start (and after any error) it reads
//! every record each partition holds after that offset (their `lis_position`
//! headers) and, replaying from the checkpoint, skips an event only while it
//! is exactly the next record found in its partition; from the first event a
//! partition lacks, it publishes everything again. A record may therefore be
//! repeated (consumers ignore a version they applied) but the first copy of
//! every event is in stream order, whatever a dead relay left behind or
//! after it. Only one relay publishes at a time: the holder of the `relay`
//! lease (`platform::lease`); others wait as standbys and take over within
//! a few seconds of its death or freeze. Its checkpoint transactions renew
//! the lease with its epoch, so a former holder that lost the lease writes
//! no checkpoint and no chain link, and it publishes only while the lease
//! is valid on its own clock. (A batch already handed to the Kafka client
//! when it froze may still go out when it resumes: exact copies of records
//! the new holder publishes too, which consumers skip.)
//!
//! Tamper evidence: the relay links every event it passes into the log's
//! hash chains (`platform::chain`) and stores the links with its checkpoint,
//! so no command waits for another to chain its events. It signs the chain's
//! head with the chain key (a file, never in the database) and publishes
//! the signed checkpoint to `lis.chain.v1`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use domain::event::StreamKind;
use platform::chain::{self, ChainKey, Hash, Linker};
use platform::config::Config;
use platform::envelope::{Envelope, CHAIN_HASH_HEADER, CHAIN_SEQ_HEADER, POSITION_HEADER};
use platform::kafka::{partition_for, FetchWait, Topic};
use platform::lease::Lease;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The lease the active relay holds.
const LEASE: &str = "relay";
/// Events read per batch.
const BATCH: i64 = 2000;
/// How long an idle relay waits before looking for new events when no
/// command of its own process signals a commit.
const POLL: Duration = Duration::from_millis(20);
/// How often, at most, a busy relay signs the chain's head.
const SIGN_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, an idle relay signs it (it signs once it has
/// published everything, but not after every small batch of a light load:
/// each signature is a produce request that the next batch waits behind).
const SIGN_IDLE: Duration = Duration::from_millis(100);

/// A position in the event store's publication order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Writing transaction id.
    pub txid: u64,
    /// Event position.
    pub position: i64,
}

impl Position {
    /// The `txid:position` form of the `lis_position` header.
    pub fn header(&self) -> String {
        format!("{}:{}", self.txid, self.position)
    }

    /// Parses the `txid:position` form.
    pub fn parse(s: &str) -> Option<Self> {
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
    /// What each partition already holds after the checkpoint, in order; an
    /// event is skipped only while it is the front of its partition's tail.
    tails: HashMap<PartitionKey, VecDeque<Position>>,
}

/// Runs the relay until `shutdown` resolves, retrying after any failure.
/// `key` signs the chain's checkpoints.
pub async fn run(cfg: Config, key: Arc<ChainKey>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            r = run_once(&cfg, &key) => {
                if let Err(e) = r {
                    tracing::warn!(error = %platform::telemetry::cause(e.as_ref()), "relay failed; restarting");
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
async fn run_once(cfg: &Config, key: &ChainKey) -> anyhow::Result<()> {
    let pg: tokio_postgres::Config = {
        let mut c: tokio_postgres::Config = cfg.database_url.parse()?;
        c.options(format!("-c search_path={}", cfg.write_schema));
        c.application_name("lis-relay");
        c.connect_timeout(Duration::from_secs(5));
        c
    };
    let (mut client, conn) = pg.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _guard = AbortOnDrop(driver);

    let mut lease = Lease::acquire(&client, LEASE).await?;
    tracing::info!(epoch = lease.epoch(), "relay is active");
    let next_batch = client
        .prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e \
                 WHERE (e.txid, e.position) > ($1::text::xid8, $2) \
                   AND e.txid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY e.txid, e.position LIMIT $3"
        ))
        .await?;
    let save_checkpoint = client
        .prepare(
            "INSERT INTO relay_checkpoint (id, txid, position, updated_at) \
             VALUES (1, $1::text::xid8, $2, now()) \
             ON CONFLICT (id) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position, updated_at = now()",
        )
        .await?;
    let save_offsets = client
        .prepare(
            "INSERT INTO relay_partitions (topic, partition, next_offset) \
             SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) \
             ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        )
        .await?;

    let producer: FutureProducer = platform::kafka::producer_config(cfg).create()?;
    let mut checkpoint = load_checkpoint(&client).await?;
    let mut next_offsets = load_partition_offsets(&client).await?;
    let mut linker = backfill_chain(&mut client, &mut lease, &next_batch, checkpoint).await?;
    let mut signed = Signed::default();
    let mut relay = Relay {
        cfg: cfg.clone(),
        tails: read_partition_tails(cfg, &next_offsets, checkpoint).await?,
        producer,
    };
    tracing::info!(
        checkpoint = %checkpoint.header(),
        found = relay.tails.values().map(VecDeque::len).sum::<usize>(),
        partitions = relay.tails.len(),
        "relay resynced: events already on Kafka after the checkpoint"
    );
    loop {
        lease.keep(&client).await?;
        let rows = client
            .query(
                &next_batch,
                &[&checkpoint.txid.to_string(), &checkpoint.position, &BATCH],
            )
            .await?;
        if rows.is_empty() {
            signed.sign(&relay, &lease, key, &linker, true).await?;
            tokio::select! {
                _ = crate::store::COMMITTED.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        let batch = rows
            .iter()
            .map(Stored::from_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let links = Links::build(&client, &mut linker, &batch).await?;
        lease.keep(&client).await?;
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
        for (i, event) in batch.iter().enumerate() {
            let pos = event.position;
            let kind = StreamKind::parse(&event.envelope.stream_type).ok_or_else(|| {
                anyhow::anyhow!("unknown stream type {}", event.envelope.stream_type)
            })?;
            let topic = Topic::of(kind);
            let stream_id = event.envelope.stream_id;
            let partition = partition_for(stream_id, topic.partitions(&relay.cfg));
            let tail = relay.tails.entry((topic, partition)).or_default();
            if tail.front() == Some(&pos) {
                tail.pop_front();
                continue;
            }
            // The partition lacks this event: publish it and everything after.
            if let Some(front) = tail.front() {
                tracing::info!(
                    topic = topic.base_name(),
                    partition,
                    position = %pos.header(),
                    found = %front.header(),
                    left = tail.len(),
                    "relay resync: partition lacks an event; republishing from it"
                );
            }
            tail.clear();
            newest = Some(event.envelope.occurred_at);
            let key = stream_id.to_string();
            let mut headers = OwnedHeaders::new();
            for (name, value) in event.envelope.cloudevent_headers() {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let (position_header, seq_header, hash_header) = (
                pos.header(),
                links.seq[i].to_string(),
                chain::hex(&links.log_hash[i]),
            );
            for (name, value) in [
                (POSITION_HEADER, &position_header),
                (CHAIN_SEQ_HEADER, &seq_header),
                (CHAIN_HASH_HEADER, &hash_header),
            ] {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let topic_name = topic.name(&relay.cfg.topic_prefix);
            let record = FutureRecord::to(&topic_name)
                .key(&key)
                .payload(&event.payload)
                .partition(partition)
                .headers(headers);
            let delivery = relay
                .producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?;
            deliveries.push(((topic, partition), delivery));
        }
        for (key, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(delivery)) => {
                    let offset = delivery.offset;
                    let next = next_offsets.entry(key).or_insert(0);
                    *next = (*next).max(offset + 1);
                    platform::metrics::RELAY_PUBLISHED.inc();
                }
                Ok(Err((e, _))) => anyhow::bail!("delivery failed: {e}"),
                Err(_) => anyhow::bail!("delivery canceled"),
            }
        }
        let last = batch.last().map_or(checkpoint, |e| e.position);
        let tx = client.transaction().await?;
        let renewal = lease.fence(&tx).await?;
        tx.execute(&save_checkpoint, &[&last.txid.to_string(), &last.position])
            .await?;
        let (mut topics, mut partitions, mut nexts) = (Vec::new(), Vec::new(), Vec::new());
        for ((topic, partition), next) in &next_offsets {
            topics.push(topic.base_name());
            partitions.push(*partition);
            nexts.push(*next);
        }
        tx.execute(&save_offsets, &[&topics, &partitions, &nexts])
            .await?;
        links.save(&tx).await?;
        tx.commit().await?;
        lease.renewed(renewal);
        checkpoint = last;
        if let Some(t) = newest {
            platform::metrics::RELAY_LAG.set(platform::metrics::seconds_since(&t));
        }
        signed.sign(&relay, &lease, key, &linker, false).await?;
    }
}

/// The columns of `events e` that [`Stored::from_row`] reads, in order.
///
/// The text form of the transaction id gets its own name: a bare
/// `ORDER BY txid` would sort by an output column called `txid` (PostgreSQL
/// prefers output names there), i.e. as text, and put "10002" before "9386"
/// whenever a batch spans a power of ten; the fault suite found streams out
/// of order that way.
pub const EVENT_COLUMNS: &str =
    "e.txid::text AS txid_text, e.position, e.event_id, e.stream_type, \
     e.stream_id, e.version, e.event_type, e.schema_version, e.occurred_at, e.actor, e.command_id, \
     e.idempotency_key, e.data";

/// An event as the store holds it, with its published body.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Where it stands in publication order.
    pub position: Position,
    /// The event.
    pub envelope: Envelope,
    /// Its published body (what its chain hash covers).
    pub payload: Vec<u8>,
}

impl Stored {
    /// From a row of [`EVENT_COLUMNS`].
    pub fn from_row(row: &tokio_postgres::Row) -> anyhow::Result<Stored> {
        let txid: String = row.get(0);
        let envelope = Envelope {
            event_id: row.get(2),
            event_type: row.get(6),
            schema_version: row.get(7),
            stream_type: row.get(3),
            stream_id: row.get(4),
            version: row.get(5),
            occurred_at: row.get(8),
            actor: serde_json::from_value(row.get(9))?,
            command_id: row.get(10),
            idempotency_key: row.get(11),
            data: row.get(12),
        };
        Ok(Stored {
            position: Position {
                txid: txid.parse()?,
                position: row.get(1),
            },
            payload: envelope.payload(),
            envelope,
        })
    }
}

/// The chain links of one batch, saved with its checkpoint.
#[derive(Debug, Default)]
struct Links {
    seq: Vec<i64>,
    position: Vec<i64>,
    event_id: Vec<uuid::Uuid>,
    stream_id: Vec<uuid::Uuid>,
    version: Vec<i64>,
    event_hash: Vec<Hash>,
    stream_hash: Vec<Hash>,
    log_hash: Vec<Hash>,
}

impl Links {
    /// Links `batch` after what `linker` holds (which it advances), each
    /// event also after its stream's previous link.
    async fn build(
        client: &tokio_postgres::Client,
        linker: &mut Linker,
        batch: &[Stored],
    ) -> anyhow::Result<Links> {
        let streams: Vec<uuid::Uuid> = batch.iter().map(|e| e.envelope.stream_id).collect();
        linker.forget_streams();
        for r in client
            .query(
                "SELECT DISTINCT ON (stream_id) stream_id, stream_hash FROM event_chain \
                 WHERE stream_id = ANY($1) ORDER BY stream_id, version DESC",
                &[&streams],
            )
            .await?
        {
            let hash: Vec<u8> = r.get(1);
            linker.knows(
                r.get(0),
                hash.try_into()
                    .map_err(|_| anyhow::anyhow!("bad stream hash"))?,
            );
        }
        let mut links = Links::default();
        for e in batch {
            let l = linker.link(e.envelope.stream_id, &e.payload);
            links.seq.push(l.seq);
            links.position.push(e.position.position);
            links.event_id.push(e.envelope.event_id);
            links.stream_id.push(e.envelope.stream_id);
            links.version.push(e.envelope.version);
            links.event_hash.push(l.event);
            links.stream_hash.push(l.stream);
            links.log_hash.push(l.log);
        }
        Ok(links)
    }

    async fn save(&self, tx: &tokio_postgres::Transaction<'_>) -> anyhow::Result<()> {
        let bytes = |v: &[Hash]| v.iter().map(|h| h.to_vec()).collect::<Vec<_>>();
        tx.execute(
            "INSERT INTO event_chain (seq, position, event_id, stream_id, version, event_hash, stream_hash, log_hash) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::uuid[], $5::bigint[], \
             $6::bytea[], $7::bytea[], $8::bytea[])",
            &[
                &self.seq,
                &self.position,
                &self.event_id,
                &self.stream_id,
                &self.version,
                &bytes(&self.event_hash),
                &bytes(&self.stream_hash),
                &bytes(&self.log_hash),
            ],
        )
        .await?;
        Ok(())
    }
}

/// The chain as committed, linking first (for a store whose events were
/// published before the chain existed) every event up to the checkpoint
/// that has no link yet.
async fn backfill_chain(
    client: &mut tokio_postgres::Client,
    lease: &mut Lease,
    next_batch: &tokio_postgres::Statement,
    checkpoint: Position,
) -> anyhow::Result<Linker> {
    let row = client
        .query_opt(
            "SELECT c.seq, c.log_hash, e.txid::text, e.position FROM event_chain c \
             JOIN events e ON e.position = c.position ORDER BY c.seq DESC LIMIT 1",
            &[],
        )
        .await?;
    let (mut linker, mut linked) = match row {
        None => (Linker::new(0, chain::GENESIS), Position::default()),
        Some(r) => {
            let hash: Vec<u8> = r.get(1);
            let txid: String = r.get(2);
            let hash: Hash = hash
                .try_into()
                .map_err(|_| anyhow::anyhow!("bad chain hash"))?;
            let position = Position {
                txid: txid.parse()?,
                position: r.get(3),
            };
            (Linker::new(r.get(0), hash), position)
        }
    };
    while linked < checkpoint {
        let rows = client
            .query(
                next_batch,
                &[&linked.txid.to_string(), &linked.position, &BATCH],
            )
            .await?;
        let batch = rows
            .iter()
            .map(Stored::from_row)
            .filter(|e| e.as_ref().map_or(true, |e| e.position <= checkpoint))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        let links = Links::build(client, &mut linker, &batch).await?;
        let tx = client.transaction().await?;
        let renewal = lease.fence(&tx).await?;
        links.save(&tx).await?;
        tx.commit().await?;
        lease.renewed(renewal);
        tracing::info!(
            linked = batch.len(),
            "relay linked already published events into the chain"
        );
        linked = last;
    }
    Ok(linker)
}

/// The newest chain head this relay signed, and when.
#[derive(Default)]
struct Signed {
    seq: i64,
    at: Option<std::time::Instant>,
}

impl Signed {
    /// Signs the chain's head and publishes the checkpoint, when it is new
    /// and the last signature is [`SIGN_IDLE`] old with the relay `idle`,
    /// or [`SIGN_EVERY`] old.
    async fn sign(
        &mut self,
        relay: &Relay,
        lease: &Lease,
        key: &ChainKey,
        linker: &Linker,
        idle: bool,
    ) -> anyhow::Result<()> {
        let every = if idle { SIGN_IDLE } else { SIGN_EVERY };
        let due = self.at.is_none_or(|t| t.elapsed() >= every);
        let (seq, head) = linker.head();
        if seq <= self.seq || !due {
            return Ok(());
        }
        lease.check()?;
        let signed = key.sign(seq, &head);
        let payload = serde_json::to_vec(&signed)?;
        let topic = Topic::Chain.name(&relay.cfg.topic_prefix);
        let record = FutureRecord::to(&topic)
            .key("chain")
            .payload(&payload)
            .partition(0);
        match relay.producer.send_result(record) {
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!("checkpoint delivery failed: {e}"),
                Err(_) => anyhow::bail!("checkpoint delivery canceled"),
            },
            Err((e, _)) => anyhow::bail!("enqueue checkpoint: {e}"),
        }
        self.seq = seq;
        self.at = Some(std::time::Instant::now());
        Ok(())
    }
}

/// How far the relay has published.
pub async fn load_checkpoint(
    client: &impl tokio_postgres::GenericClient,
) -> anyhow::Result<Position> {
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

async fn load_partition_offsets(
    client: &tokio_postgres::Client,
) -> anyhow::Result<HashMap<PartitionKey, i64>> {
    let mut out = HashMap::new();
    for r in client
        .query(
            "SELECT topic, partition, next_offset FROM relay_partitions",
            &[],
        )
        .await?
    {
        let name: String = r.get(0);
        if let Some(topic) = Topic::ALL.into_iter().find(|t| t.base_name() == name) {
            out.insert((topic, r.get(1)), r.get(2));
        }
    }
    Ok(out)
}

/// Reads the `lis_position` of every record each partition holds after its
/// checkpointed offset (from its start when there is none), in offset
/// order, keeping those after the checkpoint.
pub async fn read_partition_tails(
    cfg: &Config,
    from: &HashMap<PartitionKey, i64>,
    checkpoint: Position,
) -> anyhow::Result<HashMap<PartitionKey, VecDeque<Position>>> {
    let cfg = cfg.clone();
    let from = from.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            platform::kafka::consumer_config(&cfg, "lis-relay-resync", FetchWait::Short)
                .create()?;
        let mut tpl = TopicPartitionList::new();
        let mut names = HashMap::new();
        let mut remaining: HashMap<PartitionKey, i64> = HashMap::new();
        for topic in Topic::ALL {
            let name = topic.name(&cfg.topic_prefix);
            names.insert(name.clone(), topic);
            for p in 0..topic.partitions(&cfg) {
                let (low, high) = consumer.fetch_watermarks(&name, p, Duration::from_secs(10))?;
                let start = from.get(&(topic, p)).copied().unwrap_or(low).max(low);
                if high > start {
                    tpl.add_partition_offset(&name, p, Offset::Offset(start))?;
                    remaining.insert((topic, p), high - start);
                }
            }
        }
        let mut tails: HashMap<PartitionKey, VecDeque<Position>> = HashMap::new();
        if remaining.is_empty() {
            return Ok(tails);
        }
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while remaining.values().any(|n| *n > 0) {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("timed out reading the partitions' tails");
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let msg = msg?;
            let key = (names[msg.topic()], msg.partition());
            if let Some(n) = remaining.get_mut(&key) {
                *n -= 1;
            }
            let pos = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == POSITION_HEADER))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(Position::parse);
            if let Some(pos) = pos.filter(|p| *p > checkpoint) {
                tails.entry(key).or_default().push_back(pos);
            }
        }
        Ok(tails)
    })
    .await?
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
