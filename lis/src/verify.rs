//! `lis verify`: checks the event store against its tamper evidence and the
//! read models against the log.
//!
//! Three witnesses of every published event are compared: the event store
//! (Postgres), the relay's hash chain beside it (`event_chain`) with the
//! checkpoints the relay signed with a key the database never holds (the
//! `lis.chain.v1` topic), and the event's copy on the Kafka log. Someone who
//! can write to Postgres can change events and even recompute the chain, but
//! cannot sign a checkpoint for the result, nor change the log. Then the
//! whole log is applied into a scratch schema with the projector's own code
//! and every read model row and history row is compared with it.
//!
//! Each difference is one line naming the stream, the version and the field
//! (never a value: values are personal data).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use command_handler::relay::{self, Position, Stored, EVENT_COLUMNS};
use platform::chain::{self, Hash, Linker, PublicKey, SignedCheckpoint};
use platform::config::Config;
use platform::envelope::{Envelope, POSITION_HEADER};
use platform::kafka::Topic;
use serde_json::Value;
use uuid::Uuid;

/// How `lis verify` was asked to run.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The chain key's public half (64 hex digits), for a verifier that does
    /// not hold the private key; defaults to the public half of
    /// `LIS_CHAIN_KEY_FILE`.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Check only the tamper evidence, not the read models.
    #[arg(long)]
    pub skip_read_models: bool,
}

/// What `lis verify` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Events in the store.
    pub events: usize,
    /// Links in the chain.
    pub links: usize,
    /// Signed checkpoints whose signature verified.
    pub checkpoints: usize,
    /// The newest of them (its sequence number).
    pub newest_checkpoint: Option<i64>,
    /// Read model and history rows compared.
    pub rows: usize,
    /// Every difference, one line each.
    pub differences: Vec<String>,
}

/// One published event as a witness holds it.
struct Witnessed {
    stream_type: String,
    stream_id: Uuid,
    version: i64,
}

impl Witnessed {
    fn of(e: &Envelope) -> Self {
        Witnessed {
            stream_type: e.stream_type.clone(),
            stream_id: e.stream_id,
            version: e.version,
        }
    }

    fn name(&self) -> String {
        format!(
            "{} stream {} version {}",
            self.stream_type, self.stream_id, self.version
        )
    }
}

/// A link of the relay's chain, as stored.
struct Link {
    seq: i64,
    event_id: Uuid,
    stream_id: Uuid,
    version: i64,
    event_hash: Hash,
    stream_hash: Hash,
    log_hash: Hash,
}

fn hash_of(v: Vec<u8>) -> Hash {
    v.try_into().unwrap_or([0xff; 32])
}

/// The members of two event bodies that differ (`data.firstName`,
/// `occurredAt`), never their values.
fn differing_fields(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["(whole body)".into()];
    };
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(Value::Object(x)), Some(Value::Object(y))) if name == "data" => {
                let inner: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for n in inner {
                    if x.get(n) != y.get(n) {
                        out.push(format!("data.{n}"));
                    }
                }
            }
            _ => out.push(name.clone()),
        }
    }
    out
}

/// Checks the store against the chain, the signed checkpoints and the log.
async fn tamper_evidence(cfg: &Config, key: &PublicKey, report: &mut Report) -> anyhow::Result<()> {
    // The signed checkpoints first: each was signed before the snapshot
    // below was taken, so the chain in it must reach every one of them.
    let chain_cfg = cfg.clone();
    let signed = tokio::task::spawn_blocking(move || {
        platform::kafka::read_from_start(&chain_cfg, &[Topic::Chain], Duration::from_secs(120))
    })
    .await??;
    // One snapshot of the store, the relay's progress and the chain.
    let mut client = platform::db::connect(&cfg.database_url, &cfg.write_schema).await?;
    let db = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let checkpoint = relay::load_checkpoint(&db).await?;
    let store: Vec<Stored> = db
        .query(
            &format!("SELECT {EVENT_COLUMNS} FROM events e ORDER BY e.txid, e.position"),
            &[],
        )
        .await?
        .iter()
        .map(Stored::from_row)
        .collect::<anyhow::Result<_>>()?;
    let links: Vec<Link> = db
        .query(
            "SELECT seq, event_id, stream_id, version, event_hash, stream_hash, log_hash \
             FROM event_chain ORDER BY seq",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| Link {
            seq: r.get(0),
            event_id: r.get(1),
            stream_id: r.get(2),
            version: r.get(3),
            event_hash: hash_of(r.get(4)),
            stream_hash: hash_of(r.get(5)),
            log_hash: hash_of(r.get(6)),
        })
        .collect();
    db.commit().await?;
    report.events = store.len();
    report.links = links.len();
    let log_cfg = cfg.clone();
    let records = tokio::task::spawn_blocking(move || {
        platform::kafka::read_from_start(&log_cfg, &Topic::ALL, Duration::from_secs(600))
    })
    .await??;
    // The first copy of each event on the log, of those the relay had
    // published when the snapshot was taken.
    let mut on_log: HashMap<Uuid, (Vec<u8>, Envelope)> = HashMap::new();
    for r in records {
        let published = r
            .headers
            .iter()
            .find(|(k, _)| k == POSITION_HEADER)
            .and_then(|(_, v)| Position::parse(v))
            .is_some_and(|p| p <= checkpoint);
        if !published {
            continue;
        }
        if let Ok(env) = serde_json::from_slice::<Envelope>(&r.payload) {
            on_log.entry(env.event_id).or_insert((r.payload, env));
        }
    }
    let d = &mut report.differences;

    // The chain by itself: contiguous, each link following from the one
    // before, per log and per stream.
    let mut relinked = Linker::new(0, chain::GENESIS);
    let mut versions: HashMap<Uuid, i64> = HashMap::new();
    for (i, l) in links.iter().enumerate() {
        if l.seq != i as i64 + 1 {
            d.push(format!(
                "chain: link {} is missing (the next is {})",
                i + 1,
                l.seq
            ));
            break;
        }
        let again = relinked.link_hash(l.stream_id, l.event_hash);
        if again.log != l.log_hash {
            d.push(format!(
                "chain: link {} (stream {} version {}) does not follow from the link before it",
                l.seq, l.stream_id, l.version
            ));
        }
        let prev_version = versions.insert(l.stream_id, l.version).unwrap_or(0);
        if l.version != prev_version + 1 || again.stream != l.stream_hash {
            d.push(format!(
                "chain: stream {} version {} does not follow from the stream's link before it",
                l.stream_id, l.version
            ));
        }
        // Go on from the link as stored, so that one bad link is named once.
        relinked.set_head(l.seq, l.log_hash);
        relinked.knows(l.stream_id, l.stream_hash);
    }

    // What the store gives, linked in its own order, for the checkpoints.
    let mut from_store = Linker::new(0, chain::GENESIS);
    let store_heads: HashMap<i64, Hash> = store
        .iter()
        .filter(|e| e.position <= checkpoint)
        .map(|e| {
            let l = from_store.link(e.envelope.stream_id, &e.payload);
            (l.seq, l.log)
        })
        .collect();

    // The signed checkpoints: made with this installation's key, and
    // matched by the chain and by the store.
    if signed.is_empty() && !links.is_empty() {
        d.push("chain: no signed checkpoint covers it (lis.chain.v1 is empty)".into());
    }
    let by_seq: HashMap<i64, &Link> = links.iter().map(|l| (l.seq, l)).collect();
    for r in signed {
        let Ok(s) = serde_json::from_slice::<SignedCheckpoint>(&r.payload) else {
            d.push(format!(
                "checkpoint at offset {} of lis.chain.v1 is not a signed checkpoint",
                r.offset
            ));
            continue;
        };
        let seq = s.checkpoint.seq;
        if !key.verifies(&s) {
            d.push(format!(
                "checkpoint {seq}: its signature is not by this installation's chain key"
            ));
            continue;
        }
        report.checkpoints += 1;
        report.newest_checkpoint = report.newest_checkpoint.max(Some(seq));
        let signed_hash = chain::parse_hex(&s.checkpoint.log_hash);
        match by_seq.get(&seq) {
            None => d.push(format!(
                "chain: ends before the signed checkpoint {seq} (links were removed)"
            )),
            Some(l) if Some(l.log_hash) != signed_hash => d.push(format!(
                "chain: link {seq} differs from the signed checkpoint (the chain was rewritten)"
            )),
            Some(_) => {}
        }
        if store_heads.get(&seq).copied() != signed_hash {
            d.push(format!(
                "event store: the events up to link {seq} do not give the hash of the signed checkpoint"
            ));
        }
    }

    // Event by event: the store against the chain and the log.
    let in_store: HashMap<Uuid, &Stored> = store.iter().map(|e| (e.envelope.event_id, e)).collect();
    let chained: HashMap<Uuid, &Link> = links.iter().map(|l| (l.event_id, l)).collect();
    let mut removed: BTreeMap<i64, String> = BTreeMap::new();
    for l in &links {
        if !in_store.contains_key(&l.event_id) {
            let what = on_log.get(&l.event_id).map_or_else(
                || format!("stream {} version {}", l.stream_id, l.version),
                |(_, e)| Witnessed::of(e).name(),
            );
            removed.insert(
                l.seq,
                format!("event store: {what} (link {}) was removed", l.seq),
            );
        }
    }
    for (id, (_, e)) in &on_log {
        if !in_store.contains_key(id) && !chained.contains_key(id) {
            removed.insert(
                i64::MAX - e.version,
                format!(
                    "event store: {} is on the log but not in the store",
                    Witnessed::of(e).name()
                ),
            );
        }
    }
    d.extend(removed.into_values());
    let mut last_seq = 0;
    let mut last_name = String::new();
    for e in &store {
        let name = Witnessed::of(&e.envelope).name();
        let hash = chain::event_hash(&e.payload);
        let link = chained.get(&e.envelope.event_id);
        let logged = on_log.get(&e.envelope.event_id);
        let changed = link.is_some_and(|l| l.event_hash != hash)
            || logged.is_some_and(|(p, _)| chain::event_hash(p) != hash);
        if changed {
            let fields = match logged {
                Some((p, _)) => {
                    let stored: Value = serde_json::from_slice(&e.payload)?;
                    let published: Value = serde_json::from_slice(p)?;
                    differing_fields(&stored, &published).join(", ")
                }
                None => "no copy on the log to compare".into(),
            };
            d.push(format!("event store: {name} was changed ({fields})"));
        }
        match link {
            Some(l) => {
                if l.seq < last_seq {
                    d.push(format!(
                        "event store: {name} (link {}) now comes after {last_name} (link {last_seq}): reordered",
                        l.seq
                    ));
                }
                last_seq = last_seq.max(l.seq);
                last_name = name;
            }
            None if logged.is_some() || e.position <= checkpoint => {
                d.push(format!(
                    "event store: {name} was inserted (it has no link in the chain)"
                ));
            }
            None => {}
        }
    }
    // Every stream's versions in the store run 1, 2, 3, ... without a gap.
    let mut versions: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    for e in &store {
        versions
            .entry(e.envelope.stream_id)
            .or_default()
            .push(e.envelope.version);
    }
    for (stream, mut vs) in versions {
        vs.sort_unstable();
        for (i, v) in vs.iter().enumerate() {
            if *v != i as i64 + 1 {
                d.push(format!(
                    "event store: stream {stream} lacks version {} (it has version {v})",
                    i + 1
                ));
                break;
            }
        }
    }
    Ok(())
}

/// The tables compared, with their key and whether rows carry a stream
/// version.
const TABLES: [(&str, &str, bool); 8] = [
    ("patients", "patient_id::text", true),
    ("orders", "order_id::text", true),
    ("accounts", "account_id::text", true),
    (
        "history",
        "stream_id::text || ' version ' || version",
        false,
    ),
    ("partners", "partner_id::text", true),
    ("clients", "client_id", false),
    ("locations", "location_id", false),
    ("catalog_tests", "code", true),
];

/// Applies the log into a scratch schema with the projector's code and
/// compares every row with the live read models.
async fn read_models(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let scratch = format!("verify_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut fresh = cfg.clone();
    fresh.read_schema = scratch.clone();
    platform::db::migrate(
        &fresh.database_url,
        &fresh.read_schema,
        projector::migrations(),
    )
    .await?;
    let db = platform::db::connect(&cfg.database_url, "public").await?;
    let result = async {
        let pool = platform::db::pool(&fresh.database_url, &fresh.read_schema, 4)?;
        let ends = projector::log_ends(&fresh).await?;
        projector::catch_up(&fresh, &pool, Duration::from_secs(1800)).await?;
        let write = platform::db::pool(&cfg.database_url, &cfg.write_schema, 1)?;
        let live_schema = platform::read_models::active(&write, &cfg.read_schema).await?;
        let live = platform::db::pool(&cfg.database_url, &live_schema, 2)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !projector::reached(&live, &ends).await? {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the live read models did not reach the end of the log in 60 s (is the projector running?)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (table, key, versioned) in TABLES {
            let rows = |schema: String| {
                let db = &db;
                async move {
                    let sql = format!("SELECT {key}, to_jsonb(t) FROM {schema}.{table} t");
                    let map: BTreeMap<String, Value> = db
                        .query(&sql, &[])
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect();
                    anyhow::Ok(map)
                }
            };
            let expected = rows(scratch.clone()).await?;
            let actual = rows(live_schema.clone()).await?;
            report.rows += expected.len();
            let d = &mut report.differences;
            for (k, want) in &expected {
                let Some(got) = actual.get(k) else {
                    d.push(format!(
                        "read model {table}: {k} is missing (the log has it)"
                    ));
                    continue;
                };
                let version = |v: &Value| v["version"].as_i64().unwrap_or(0);
                if versioned && version(got) > version(want) {
                    continue; // the live copy has moved on since the log was read
                }
                let fields = differing_fields(want, got);
                if !fields.is_empty() {
                    let at = if versioned {
                        format!(" version {}", version(got))
                    } else {
                        String::new()
                    };
                    d.push(format!(
                        "read model {table}: {k}{at} differs from the log in {}",
                        fields.join(", ")
                    ));
                }
            }
            for k in actual.keys().filter(|k| !expected.contains_key(*k)) {
                if table != "history" || !newer_history(k, &expected) {
                    d.push(format!("read model {table}: {k} is not on the log"));
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS {scratch} CASCADE"))
        .await?;
    result
}

/// Whether a live history row (`<stream> version <n>`) is newer than what
/// the scratch copy read from the log (the live copy moved on).
fn newer_history(key: &str, expected: &BTreeMap<String, Value>) -> bool {
    let Some((stream, v)) = key.split_once(" version ") else {
        return false;
    };
    let Ok(v) = v.parse::<i64>() else {
        return false;
    };
    let prefix = format!("{stream} version ");
    let known = expected
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter_map(|(k, _)| k[prefix.len()..].parse::<i64>().ok())
        .max()
        .unwrap_or(0);
    v > known
}

/// Runs every check.
pub async fn verify(cfg: &Config, key: &PublicKey, read: bool) -> anyhow::Result<Report> {
    let mut report = Report::default();
    tamper_evidence(cfg, key, &mut report).await?;
    if read {
        read_models(cfg, &mut report).await?;
    }
    Ok(report)
}

/// `lis verify`: prints every difference; fails when there is one.
pub async fn run(cfg: &Config, args: VerifyArgs) -> anyhow::Result<()> {
    let key = match &args.public_key {
        Some(hex) => PublicKey::parse(hex)
            .ok_or_else(|| anyhow::anyhow!("--public-key takes 64 hex digits"))?,
        None => platform::chain::ChainKey::load(&cfg.chain_key_file)?.public(),
    };
    let report = verify(cfg, &key, !args.skip_read_models).await?;
    for line in &report.differences {
        println!("{line}");
    }
    println!(
        "verify: {} events, {} chain links, {} signed checkpoints (newest at link {}), {} read model rows compared: {} differences",
        report.events,
        report.links,
        report.checkpoints,
        report
            .newest_checkpoint
            .map_or_else(|| "-".into(), |s| s.to_string()),
        report.rows,
        report.differences.len()
    );
    anyhow::ensure!(
        report.differences.is_empty(),
        "{} differences",
        report.differences.len()
    );
    Ok(())
}
