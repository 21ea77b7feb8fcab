//! Group commit: the partner commands a process receives together are
//! committed in one Postgres transaction, each isolated from the others.
//!
//! A few committer tasks take what is queued (up to [`MAX_BATCH`]
//! commands) and run it in one transaction, in two phases:
//!
//! 1. **decide**: every command at once (their statements share the
//!    connection's pipeline) takes its `Idempotency-Key`'s lock, loads what
//!    it needs and decides. Nothing is written, so the transaction has no
//!    id yet: the event store's invariant (a transaction's id is taken
//!    after every read its events depend on; the relay publishes in
//!    transaction id order) holds for the whole batch. A command that fails
//!    here with a server error may have aborted the transaction: it is
//!    answered, and the others are decided again in a new one.
//! 2. **write**: each decision's events, rows and kept answer go in under a
//!    savepoint. A decision that lost a race (a stream version or a
//!    reservation another command took, in this batch or another) is rolled
//!    back to its savepoint alone and decided again in the next batch; the
//!    others stay.
//!
//! Then one commit, and only then every answer. A command whose key
//! another command of the same batch holds waits for the next batch (where
//! it replays the first one's answer).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use contract::problem::ApiError;
use deadpool_postgres::{Pool, Transaction};
use domain::access::Actor;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::idempotency::{Answer, Idempotency};
use crate::store::{self, CommandMeta, WriteError, Writes};

/// The most commands one transaction commits: each decision that writes
/// takes a subtransaction id, and a backend caches 64 of them before other
/// backends' snapshots must look them up on disk.
pub const MAX_BATCH: usize = 32;

/// How often a command is decided again after losing a race.
const MAX_ATTEMPTS: u32 = 8;

/// What phase 1 decided for one command.
pub enum Planned {
    /// An answer that writes nothing and is not kept (an earlier answer to
    /// the same `Idempotency-Key`, or a refusal of the key itself).
    Answered(Result<Answer, ApiError>),
    /// Writes, and the answer to keep under the command's key (a refusal
    /// writes nothing but its answer).
    Commit {
        /// Events and rows.
        writes: Writes,
        /// The answer.
        answer: Result<Answer, ApiError>,
    },
}

/// A boxed future borrowing the transaction.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A partner's command as the committer runs it.
pub trait Work: Send + Sync {
    /// Who issued it.
    fn actor(&self) -> Actor;
    /// Its `Idempotency-Key`, when it has one.
    fn idempotency(&self) -> Option<&Idempotency>;
    /// Phase 1: decides, reading only (`pool` serves what must not happen
    /// in the transaction). `Err` is a server error that may have aborted
    /// the transaction.
    fn plan<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        meta: &'a CommandMeta,
        pool: &'a Pool,
    ) -> Pending<'a, Result<Planned, ApiError>>;
}

struct Job {
    work: Box<dyn Work>,
    attempts: u32,
    reply: oneshot::Sender<Result<Answer, ApiError>>,
}

/// The queue the committers take batches from.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts `tasks` committers on `pool` (each holds one of its
    /// connections while it commits a batch). They stop when the last
    /// handle is dropped.
    pub fn start(pool: Pool, tasks: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for _ in 0..tasks.max(1) {
            let (pool, rx) = (pool.clone(), rx.clone());
            tokio::spawn(async move {
                let mut carried = VecDeque::new();
                while let Some(batch) = next_batch(&rx, &mut carried).await {
                    commit_batch(&pool, batch, &mut carried).await;
                }
            });
        }
        Committer { queue }
    }

    /// Runs a command in the next batch; answers once it is committed.
    pub async fn submit(&self, work: Box<dyn Work>) -> Result<Answer, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            work,
            attempts: 0,
            reply,
        };
        if self.queue.send(job).is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> ApiError {
    ApiError::Unavailable("The service is stopping; retry.", Duration::from_secs(1))
}

/// The next batch: the commands carried over from the last one first, then
/// whatever is queued; waits for one when there is none.
async fn next_batch(
    rx: &Mutex<mpsc::UnboundedReceiver<Job>>,
    carried: &mut VecDeque<Job>,
) -> Option<Vec<Job>> {
    let mut batch: Vec<Job> = carried.drain(..).collect();
    let mut rx = if batch.is_empty() {
        let mut rx = rx.lock().await;
        batch.push(rx.recv().await?);
        rx
    } else {
        // Another committer may be waiting for the queue's next command
        // (holding it): the carried commands do not wait for it.
        match rx.try_lock() {
            Ok(rx) => rx,
            Err(_) => return Some(batch),
        }
    };
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// A decided command waiting for phase 2.
struct Decided {
    job: Job,
    meta: CommandMeta,
    planned: Planned,
}

/// Commits one batch and answers it; what must run again goes to
/// `carried`.
async fn commit_batch(pool: &Pool, batch: Vec<Job>, carried: &mut VecDeque<Job>) {
    let mut db = match pool.get().await {
        Ok(db) => db,
        Err(e) => return answer_all(batch, ApiError::from(e)),
    };
    let tx = match db.transaction().await {
        Ok(tx) => tx,
        Err(e) => return answer_all(batch, e.into()),
    };
    // Phase 1: decide without writing, every command at once (their
    // statements share the connection's pipeline).
    let mut keys = HashSet::new();
    let mut jobs = Vec::with_capacity(batch.len());
    for job in batch {
        match job.work.idempotency() {
            Some(idem) if !keys.insert(idem.lock_key()) => carried.push_back(job),
            _ => jobs.push(job),
        }
    }
    let metas: Vec<CommandMeta> = jobs
        .iter()
        .map(|job| {
            let key = job.work.idempotency().map(|i| i.key.clone());
            CommandMeta::new(job.work.actor(), key)
        })
        .collect();
    let plans = futures::future::join_all(
        jobs.iter()
            .zip(&metas)
            .map(|(job, meta)| job.work.plan(&tx, meta, pool)),
    )
    .await;
    let mut decided = Vec::with_capacity(jobs.len());
    let mut failed = None;
    for ((job, meta), plan) in jobs.into_iter().zip(metas).zip(plans) {
        match plan {
            Ok(planned) => decided.push(Decided { job, meta, planned }),
            Err(e) if failed.is_none() => failed = Some((job, e)),
            // Its error may come from the first one's.
            Err(_) => carried.push_back(job),
        }
    }
    if let Some((job, e)) = failed {
        // The transaction may be aborted: answer the command that failed
        // first and decide the others again in a new one.
        let _ = job.reply.send(Err(e));
        carried.extend(decided.into_iter().map(|d| d.job));
        return;
    }
    // Phase 2: write each decision under its savepoint.
    let mut answers = Vec::with_capacity(decided.len());
    for Decided { job, meta, planned } in decided {
        let (writes, answer) = match planned {
            Planned::Answered(answer) => {
                answers.push((job.reply, answer));
                continue;
            }
            Planned::Commit { writes, answer } => (writes, answer),
        };
        let keep = job.work.idempotency().filter(|_| {
            answer
                .as_ref()
                .map_or_else(|e| !e.status().is_server_error(), |_| true)
        });
        if writes.events.is_empty() && writes.rows.is_empty() && keep.is_none() {
            answers.push((job.reply, answer));
            continue;
        }
        match write(&tx, &meta, &writes, keep, &answer).await {
            Ok(()) => answers.push((job.reply, answer)),
            Err(WriteError::Raced) if job.attempts + 1 < MAX_ATTEMPTS => {
                carried.push_back(Job {
                    attempts: job.attempts + 1,
                    ..job
                });
            }
            Err(WriteError::Raced) => {
                let busy =
                    ApiError::Unavailable("The record is busy; retry.", Duration::from_secs(1));
                answers.push((job.reply, Err(busy)));
            }
            Err(WriteError::Db(e)) => answers.push((job.reply, Err(e.into()))),
        }
    }
    match tx.commit().await {
        Ok(()) => {
            store::COMMITTED.notify_one();
            for (reply, answer) in answers {
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            let e = ApiError::from(e);
            for (reply, _) in answers {
                let _ = reply.send(Err(copy(&e)));
            }
        }
    }
}

/// One decision's writes and kept answer, under a savepoint: rolled back
/// alone when any of them fails.
async fn write(
    tx: &Transaction<'_>,
    meta: &CommandMeta,
    writes: &Writes,
    keep: Option<&Idempotency>,
    answer: &Result<Answer, ApiError>,
) -> Result<(), WriteError> {
    tx.batch_execute("SAVEPOINT command").await?;
    let written = async {
        store::write(tx, meta, writes).await?;
        if let Some(idem) = keep {
            let kept = match answer {
                Ok(answer) => idem.save(tx, answer).await,
                Err(e) => idem.save(tx, &Answer::from_error(e)).await,
            };
            kept?;
        }
        Ok::<_, WriteError>(())
    }
    .await;
    match written {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT command").await?;
            Ok(())
        }
        Err(e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT command").await?;
            Err(e)
        }
    }
}

fn answer_all(batch: Vec<Job>, e: ApiError) {
    for job in batch {
        let _ = job.reply.send(Err(copy(&e)));
    }
}

/// The same answer for every command of a batch that did not commit.
fn copy(e: &ApiError) -> ApiError {
    match e {
        ApiError::Unavailable(detail, after) => ApiError::Unavailable(detail, *after),
        _ => ApiError::Unavailable(
            "The database is unavailable; retry.",
            Duration::from_secs(1),
        ),
    }
}
