//! Leases in Postgres for the processes that must work alone (the relay,
//! the mailer, the analytics publisher): any number of each may run; one
//! holds the role's lease and works, the others wait as standbys and take
//! the lease once it has run out — after a `kill -9`, a `SIGSTOP` or a cut
//! connection of its holder, within [`TTL`] and one [`POLL`].
//!
//! Fencing: every take raises the lease's epoch. A holder renews the lease
//! with its epoch as the first statement of each transaction that writes
//! under it ([`Lease::fence`]); once another process took the lease that
//! statement finds nothing and the transaction writes nothing. What cannot
//! be fenced in Postgres (a Kafka record, a mail) a holder does only while
//! its lease is valid on its own clock ([`Lease::keep`] first, which renews
//! it when little is left): [`TTL`] minus [`MARGIN`] from before the
//! statement that last renewed it was sent, so it stops before Postgres,
//! whose clock starts later, can give the lease away.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// How long a lease lasts from its last renewal (Postgres's clock).
pub const TTL: Duration = Duration::from_secs(3);
/// How much sooner a holder stops than its lease ends (clock rates, the
/// time its renewal took to reach Postgres).
pub const MARGIN: Duration = Duration::from_millis(500);
/// How often a standby tries to take the lease.
pub const POLL: Duration = Duration::from_millis(500);
/// Renew when less than this is left of a lease's local validity.
const RENEW_WITHIN: Duration = Duration::from_millis(1500);

/// Why work under a lease stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease ran out on this process's clock, or another process took
    /// it: stop, and stand by.
    #[error("the {0} lease was lost: another process may hold it")]
    Lost(String),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// This process's hold on a role's lease.
#[derive(Debug)]
pub struct Lease {
    name: String,
    holder: Uuid,
    epoch: i64,
    valid_until: Instant,
}

/// A renewal made inside a transaction: it counts once that commits.
#[must_use = "pass it to Lease::renewed after the commit"]
pub struct Renewal(Instant);

impl Lease {
    /// Waits until this process holds the lease `name` (free, run out, or
    /// never taken) and takes it with a new epoch.
    pub async fn acquire(
        db: &impl GenericClient,
        name: &str,
    ) -> Result<Lease, tokio_postgres::Error> {
        let holder = Uuid::new_v4();
        let mut waiting = false;
        loop {
            let sent = Instant::now();
            let taken = db
                .query_opt(
                    "INSERT INTO leases (name, holder, epoch, expires_at) \
                     VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                       epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at \
                     WHERE leases.expires_at < now() \
                     RETURNING epoch",
                    &[&name, &holder, &TTL.as_secs_f64()],
                )
                .await?;
            if let Some(row) = taken {
                let epoch: i64 = row.get(0);
                tracing::info!(lease = name, epoch, "took the lease");
                return Ok(Lease {
                    name: name.to_string(),
                    holder,
                    epoch,
                    valid_until: sent + TTL - MARGIN,
                });
            }
            if !waiting {
                tracing::info!(lease = name, "another process holds the lease; standing by");
                waiting = true;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Its epoch (raised by every take).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// `Ok` while the lease is valid on this process's clock.
    pub fn check(&self) -> Result<(), LeaseError> {
        if Instant::now() < self.valid_until {
            Ok(())
        } else {
            Err(LeaseError::Lost(self.name.clone()))
        }
    }

    /// Renews the lease as the first statement of the caller's transaction,
    /// fencing its writes: `Lost` when another process took the lease
    /// since (the epoch decides, not the clock: a lease that ran out but
    /// that no one took is still this holder's). Pass the renewal to
    /// [`Lease::renewed`] once the transaction committed.
    pub async fn fence(&self, tx: &impl GenericClient) -> Result<Renewal, LeaseError> {
        let sent = Instant::now();
        let n = tx
            .execute(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $4) \
                 WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[&self.name, &self.holder, &self.epoch, &TTL.as_secs_f64()],
            )
            .await?;
        if n == 0 {
            return Err(LeaseError::Lost(self.name.clone()));
        }
        Ok(Renewal(sent))
    }

    /// Counts a committed renewal.
    pub fn renewed(&mut self, r: Renewal) {
        self.valid_until = self.valid_until.max(r.0 + TTL - MARGIN);
    }

    /// Renews the lease on its own when little of it is left (or none):
    /// call it before work that cannot be fenced, and while idle. `Ok`
    /// means the lease is valid now.
    pub async fn keep(&mut self, db: &impl GenericClient) -> Result<(), LeaseError> {
        if !self.due() {
            return Ok(());
        }
        let r = self.fence(db).await?;
        self.renewed(r);
        Ok(())
    }

    /// [`Lease::keep`] on a connection from `pool`, checked out only when
    /// the lease is due for renewal.
    pub async fn keep_pooled(&mut self, pool: &deadpool_postgres::Pool) -> Result<(), LeaseError> {
        if !self.due() {
            return Ok(());
        }
        self.keep(&**pool.get().await?).await
    }

    /// Whether little of the lease is left on this process's clock.
    fn due(&self) -> bool {
        Instant::now() + RENEW_WITHIN >= self.valid_until
    }
}
