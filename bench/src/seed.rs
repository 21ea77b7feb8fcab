//! Bulk seeding through the product's own write path, and waiting for the
//! relay and the projector to catch up.
//!
//! How large data sets are seeded: the generator's drafts go through the
//! domain's own decision (`domain::patient::register`, and
//! `domain::account::open` for a valid email), and the resulting events are
//! appended with the command handler's `store::append`, together with the
//! write-side reservations (`patient_external_ids`, `accounts`) the HTTP
//! handler writes. Each batch of 1,000 patients is ONE command (one
//! transaction, one command id, actor `operator lis-bench`) instead of 1,000
//! HTTP requests. The relay then publishes the events and the projector
//! builds the read models exactly as for partner writes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use command_handler::store::{self, CommandMeta, Pending};
use deadpool_postgres::Pool;
use domain::access::Actor;
use domain::patient::{self, Context};
use platform::config::Config;
use platform::kafka::Topic;
use platform::offsets::{self, Offsets, Owner};
use uuid::Uuid;

use super::data::Gen;

/// Patients per seeding command.
const BATCH: u64 = 1000;

/// What a seeding produced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seeded {
    /// Patients registered.
    pub patients: u64,
    /// Events appended (registrations and account invitations).
    pub events: u64,
    /// Seconds appending them took (commits included).
    pub secs: f64,
    /// Seconds the relay took to publish them after each commit.
    pub relay_secs: f64,
}

async fn seed_batch(write: &Pool, gen: &Mutex<Gen>, client: &str, n: u64) -> anyhow::Result<u64> {
    let drafts: Vec<_> = {
        let mut g = gen.lock().expect("gen");
        (0..n).map(|_| g.draft(false)).collect()
    };
    let ctx = Context {
        today: chrono::Utc::now().date_naive(),
        client_exists: true,
        location_client: Some(client.to_string()),
        email_in_use: false,
        external_id_holder: None,
        has_account: false,
    };
    let mut pending = Vec::with_capacity(drafts.len() * 2);
    let (mut x_clients, mut x_ids, mut x_patients) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a_ids, mut a_patients, mut a_logins) = (Vec::new(), Vec::new(), Vec::new());
    for draft in drafts {
        let id = Uuid::new_v4();
        let decision = patient::register(id, draft, &ctx)
            .map_err(|e| anyhow::anyhow!("the generator made an invalid patient: {e}"))?;
        let event = decision.event.context("a registration has an event")?;
        if let domain::patient::PatientEvent::PatientRegistered(r) = &event {
            if let Some(x) = &r.external_patient_id {
                x_clients.push(r.client_id.clone());
                x_ids.push(x.clone());
                x_patients.push(id);
            }
        }
        pending.push(Pending::new(id, 1, &event));
        if let Some(email) = decision.open_account {
            let account = Uuid::new_v4();
            let opened = domain::account::open(account, id, email.clone());
            pending.push(Pending::new(account, 1, &opened));
            a_ids.push(account);
            a_patients.push(id);
            a_logins.push(patient::login_key(&email));
        }
    }
    let meta = CommandMeta::new(
        Actor::Operator {
            id: "lis-bench".into(),
        },
        None,
    );
    let mut db = write.get().await?;
    let tx = db.transaction().await?;
    store::append(&tx, &meta, &pending).await?;
    tx.execute(
        "INSERT INTO patient_external_ids (client_id, external_patient_id, patient_id) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[])",
        &[&x_clients, &x_ids, &x_patients],
    )
    .await?;
    tx.execute(
        "INSERT INTO accounts (account_id, patient_id, login, status, version) \
         SELECT a, p, l, 'invited', 1 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS t(a, p, l)",
        &[&a_ids, &a_patients, &a_logins],
    )
    .await?;
    tx.commit().await?;
    Ok(pending.len() as u64)
}

/// Registers `count` generated patients of `client` in bulk, one batched
/// command at a time, waiting after each for the relay to publish it, so
/// the relay's time per command can be measured.
pub async fn patients(
    write: &Pool,
    gen: &Arc<Mutex<Gen>>,
    client: &str,
    count: u64,
) -> anyhow::Result<Seeded> {
    let mut seeded = Seeded::default();
    let mut from = 0;
    while from < count {
        let n = BATCH.min(count - from);
        let t = Instant::now();
        seeded.events += seed_batch(write, gen, client, n).await?;
        seeded.secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        wait_relay(write, Duration::from_secs(300)).await?;
        seeded.relay_secs += t.elapsed().as_secs_f64();
        from += n;
        seeded.patients = from;
        if (from / BATCH).is_multiple_of(10) {
            eprintln!("    seeded {from} of {count} patients");
        }
    }
    Ok(seeded)
}

/// Waits until the relay has published every committed event; returns when.
pub async fn wait_relay(write: &Pool, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let db = write.get().await?;
        let done: Option<bool> = db
            .query_one(
                "SELECT (SELECT ROW(txid, position) FROM relay_checkpoint WHERE id = 1) >= \
                        (SELECT ROW(txid, position) FROM events ORDER BY txid DESC, position DESC LIMIT 1)",
                &[],
            )
            .await?
            .get(0);
        drop(db);
        if done == Some(true) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the relay did not publish every event within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the read schema's projector has applied the log up to its
/// current end; returns when.
pub async fn wait_projector(
    cfg: &Config,
    read: &Pool,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let ends = projector::log_ends(cfg).await?;
    wait_projector_to(read, &ends, timeout).await
}

/// Waits until the projector has applied the log up to `ends`.
async fn wait_projector_to(
    read: &Pool,
    ends: &Offsets,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if projector::reached(read, ends).await? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the projector did not reach the end of the log within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The write side's reactors, each with the topics it reads.
const REACTORS: [(Owner<'static>, &[Topic]); 2] = [
    (
        command_handler::mailer::OWNER,
        &command_handler::mailer::SOURCES,
    ),
    (analytics::OWNER, &analytics::SOURCES),
];

/// Waits until the reactors (the mailer, the analytics publisher) have
/// handled the log up to `ends` on the topics each reads: until then they
/// take CPU from whatever is measured next (a bulk seeding's invitations
/// are mailed one by one).
pub async fn wait_reactors(
    cfg: &Config,
    write: &Pool,
    ends: &Offsets,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    for (owner, topics) in REACTORS {
        let names: Vec<String> = topics.iter().map(|t| t.name(&cfg.topic_prefix)).collect();
        let ends: Offsets = ends
            .iter()
            .filter(|((topic, _), _)| names.contains(topic))
            .map(|(k, end)| (k.clone(), *end))
            .collect();
        while !offsets::reached(&offsets::load(&write.get().await?, owner).await?, &ends) {
            if Instant::now() > deadline {
                anyhow::bail!("{owner:?} did not reach the end of the log within {timeout:?}; is the README stack (`lis up`) running?");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(Instant::now())
}

/// Patients in the read model.
pub async fn stored_patients(read: &Pool) -> anyhow::Result<i64> {
    Ok(read
        .get()
        .await?
        .query_one("SELECT count(*) FROM patients", &[])
        .await?
        .get(0))
}

/// Seeds up to `target` stored patients (nothing when there are as many),
/// waits for the relay, the projector and the reactors, and says how fast
/// each went.
pub async fn seed_to(
    cfg: &Config,
    write: &Pool,
    read: &Pool,
    gen: &Arc<Mutex<Gen>>,
    client: &str,
    target: i64,
) -> anyhow::Result<Option<Drain>> {
    let stored = stored_patients(read).await?;
    if stored >= target {
        return Ok(None);
    }
    let n = (target - stored) as u64;
    eprintln!("  seeding {n} patients in bulk (batched commands of {BATCH})…");
    let d = drain(cfg, write, read, gen, client, n).await?;
    Ok(Some(d))
}

/// How the write path drained a bulk seeding.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Drain {
    /// Patients seeded.
    pub patients: u64,
    /// Events appended.
    pub events: u64,
    /// Seconds to append them (batched commands).
    pub seed_s: f64,
    /// Seconds the relay spent publishing them (after each command's commit
    /// until it was published).
    pub relay_s: f64,
    /// Seconds from the start until the projector had applied them all.
    pub projector_s: f64,
    /// Seconds from the start until the mailer had mailed their invitations
    /// and the analytics publisher had published them.
    pub reactors_s: f64,
}

impl Drain {
    /// Events per second the relay published.
    pub fn relay_rate(&self) -> f64 {
        self.events as f64 / self.relay_s.max(1e-9)
    }
}

/// Seeds `n` patients and times the relay, the projector and the reactors
/// draining them.
pub async fn drain(
    cfg: &Config,
    write: &Pool,
    read: &Pool,
    gen: &Arc<Mutex<Gen>>,
    client: &str,
    n: u64,
) -> anyhow::Result<Drain> {
    let start = Instant::now();
    let seeded = patients(write, gen, client, n).await?;
    let limit = Duration::from_secs(600 + n / 500);
    let ends = projector::log_ends(cfg).await?;
    let projector = wait_projector_to(read, &ends, limit).await?;
    let reactors = wait_reactors(cfg, write, &ends, limit).await?;
    let d = Drain {
        patients: seeded.patients,
        events: seeded.events,
        seed_s: seeded.secs,
        relay_s: seeded.relay_secs,
        projector_s: (projector - start).as_secs_f64(),
        reactors_s: (reactors - start).as_secs_f64(),
    };
    eprintln!(
        "    {} events: appended in {:.1} s, relay publishing {:.1} s ({:.0}/s), all projected after {:.1} s ({:.0}/s), mailed and published for analytics after {:.1} s",
        d.events,
        d.seed_s,
        d.relay_s,
        d.relay_rate(),
        d.projector_s,
        d.events as f64 / d.projector_s.max(1e-9),
        d.reactors_s
    );
    Ok(d)
}
