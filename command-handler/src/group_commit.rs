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
//!    transaction id order) holds for the whole batch. When a command fails
//!    here with a server error and the transaction is aborted, the others
//!    are decided again in a new one, and the failed ones each alone (a
//!    failure alone is answered).
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
pub const MAX_ATTEMPTS: u32 = 8;

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
    /// Phase 1: decides, reading only. `Err` is a server error, which may
    /// have aborted the transaction.
    fn plan<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        meta: &'a CommandMeta,
    ) -> Pending<'a, Result<Planned, ApiError>>;
}

struct Job {
    work: Box<dyn Work>,
    attempts: u32,
    /// Decided alone: its decision failed in a transaction that then
    /// turned out aborted, so it may have been the cause.
    alone: bool,
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
                // A panic answers its batch 503 (the replies are dropped)
                // and the committer goes on.
                loop {
                    let run = std::panic::AssertUnwindSafe(commit_until_closed(&pool, &rx));
                    match futures::FutureExt::catch_unwind(run).await {
                        Ok(()) => break,
                        Err(_) => tracing::error!("a committer panicked; its batch was refused"),
                    }
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
            alone: false,
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

/// Commits batches until the queue closes.
async fn commit_until_closed(pool: &Pool, rx: &Mutex<mpsc::UnboundedReceiver<Job>>) {
    let mut carried = VecDeque::new();
    while let Some(batch) = next_batch(rx, &mut carried).await {
        commit_batch(pool, batch, &mut carried).await;
    }
}

/// The next batch: the commands carried over from the last one first, then
/// whatever is queued; waits for one when there is none.
async fn next_batch(
    rx: &Mutex<mpsc::UnboundedReceiver<Job>>,
    carried: &mut VecDeque<Job>,
) -> Option<Vec<Job>> {
    // A command to be decided alone goes first, by itself.
    if let Some(at) = carried.iter().position(|job| job.alone) {
        let job = carried.remove(at).expect("a carried command");
        return Some(vec![job]);
    }
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
            .map(|(job, meta)| job.work.plan(&tx, meta)),
    )
    .await;
    let mut decided = Vec::with_capacity(jobs.len());
    let mut failed = Vec::new();
    for ((job, meta), plan) in jobs.into_iter().zip(metas).zip(plans) {
        match plan {
            Ok(planned) => decided.push(Decided { job, meta, planned }),
            Err(e) => failed.push((job, e)),
        }
    }
    if !failed.is_empty() {
        if tx.batch_execute("SELECT 1").await.is_ok() {
            // The transaction is sound: the failures are their commands'
            // own (a stored event that does not read, say).
            for (job, e) in failed {
                let _ = job.reply.send(Err(e));
            }
        } else {
            // A statement aborted the transaction, and with it every later
            // statement of the batch. A command that failed alone is
            // answered; the others are decided again, those that failed
            // each alone (one of them was the cause).
            drop(tx);
            for (job, e) in failed {
                if job.alone || job.attempts + 1 >= MAX_ATTEMPTS {
                    let _ = job.reply.send(Err(e));
                } else {
                    carried.push_back(Job {
                        attempts: job.attempts + 1,
                        alone: true,
                        ..job
                    });
                }
            }
            carried.extend(decided.into_iter().map(|d| d.job));
            return;
        }
    }
    // Phase 2: write each decision under its savepoint.
    let mut answers = Vec::with_capacity(decided.len());
    let mut decided = decided.into_iter();
    while let Some(Decided { job, meta, planned }) = decided.next() {
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
            Ok(Ok(())) => answers.push((job.reply, answer)),
            Ok(Err(WriteError::Raced)) if job.attempts + 1 < MAX_ATTEMPTS => {
                carried.push_back(Job {
                    attempts: job.attempts + 1,
                    ..job
                });
            }
            Ok(Err(WriteError::Raced)) => {
                let busy =
                    ApiError::Unavailable("The record is busy; retry.", Duration::from_secs(1));
                answers.push((job.reply, Err(busy)));
            }
            Ok(Err(WriteError::Db(e))) => answers.push((job.reply, Err(e.into()))),
            Err(e) => {
                // A savepoint could not be taken, released or rolled back
                // to: the transaction may be aborted, and a COMMIT of an
                // aborted transaction rolls back without an error. Nothing
                // of the batch is answered as committed.
                let e = ApiError::from(e);
                let _ = job.reply.send(Err(copy(&e)));
                for (reply, _) in answers {
                    let _ = reply.send(Err(copy(&e)));
                }
                for rest in decided {
                    let _ = rest.job.reply.send(Err(copy(&e)));
                }
                return;
            }
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
/// alone when any of them fails. The outer error is the savepoint's own
/// (the transaction may then be aborted).
async fn write(
    tx: &Transaction<'_>,
    meta: &CommandMeta,
    writes: &Writes,
    keep: Option<&Idempotency>,
    answer: &Result<Answer, ApiError>,
) -> Result<Result<(), WriteError>, tokio_postgres::Error> {
    tx.batch_execute("SAVEPOINT command").await?;
    let written = async {
        store::write(tx, meta, writes).await?;
        if let Some(idem) = keep {
            match answer {
                Ok(answer) => idem.save(tx, answer).await?,
                Err(e) => idem.save(tx, &Answer::from_error(e)).await?,
            }
        }
        Ok::<_, WriteError>(())
    }
    .await;
    match written {
        Ok(()) => tx.batch_execute("RELEASE SAVEPOINT command").await?,
        Err(_) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT command; RELEASE SAVEPOINT command")
                .await?
        }
    }
    Ok(written)
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
