//! The invitation mailer: a reactor on the account stream that sends each
//! invited patient a one-time activation link, by SMTP (`LIS_SMTP_URL`) or
//! into a directory of `.eml` files (`LIS_MAIL_OUTBOX`, the local stack's).
//!
//! It reads `PatientAccountInvited`, `ActivationLinkRequested`,
//! `InvitationRedirected` (an invitation sent again to a corrected address)
//! and `LoginChangeRequested` (whose link confirms a new login, with a
//! notice to the old one) from Kafka, in batches of what the broker has (up
//! to [`BATCH`] events). For each it makes a fresh random token and stores
//! only its SHA-256 hash (keyed by the event id; one statement and one
//! commit for the batch), sends the mails, then marks them sent and stores
//! the Kafka offsets after the batch in one transaction. A crash before that
//! mark sends again with a new token, which replaces the old one (at least
//! once, and only the newest link works); a mark already present means the
//! mail went out, so a re-delivered event sends nothing. A batch costs two
//! commits whatever its size (one when no event in it asks for mail), so a
//! bulk import's invitations do not cost a commit each.
//!
//! One mailer works at a time: the holder of the `mailer` lease
//! (`platform::lease`); others stand by. Its writes (a link's token, the
//! mark and the offsets) renew the lease with its epoch in their
//! transaction, and it sends only while the lease is valid on its own
//! clock.

use std::future::Future;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use deadpool_postgres::Pool;
use domain::account::AccountEvent;
use domain::event::DomainEvent;
use lettre::message::header::ContentType;
use lettre::message::SinglePart;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor,
};
use platform::config::Config;
use platform::envelope::Envelope;
use platform::kafka::{FetchWait, Topic};
use platform::lease::Lease;
use platform::offsets::{self, Offsets, Owner};
use rand::RngCore;
use rdkafka::message::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::accounts::LinkPurpose;

/// Where it keeps its offsets.
pub const OWNER: Owner<'static> = Owner::Reactor("invitation-mailer");
/// The topics it reads (the account streams' events are on the patients topic).
pub const SOURCES: [Topic; 1] = [Topic::Patients];
/// The lease the working mailer holds.
const LEASE: &str = "mailer";
/// Events handled in one batch at most.
const BATCH: usize = 500;
/// How long an activation link works.
pub const ACTIVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Hashes an activation token for storage.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Where mail goes.
enum Outbox {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// A directory of `.eml` files.
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl Outbox {
    fn of(cfg: &Config) -> anyhow::Result<Option<Outbox>> {
        Ok(match (&cfg.smtp_url, &cfg.mail_outbox) {
            (Some(url), _) => Some(Outbox::Smtp(transport(url)?)),
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir)?;
                Some(Outbox::Files(AsyncFileTransport::new(dir)))
            }
            (None, None) => None,
        })
    }

    async fn send(&self, mail: Mail) -> anyhow::Result<()> {
        match self {
            Outbox::Smtp(t) => {
                t.send(mail).await?;
            }
            Outbox::Files(t) => {
                t.send(mail).await?;
            }
        }
        Ok(())
    }
}

fn transport(url: &str) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let rest = url
        .strip_prefix("smtp://")
        .ok_or_else(|| anyhow::anyhow!("LIS_SMTP_URL must look like smtp://host:port"))?;
    let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>()?),
        None => (rest.trim_end_matches('/').to_string(), 25),
    };
    Ok(
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(10)))
            .build(),
    )
}

/// A plain-text mail.
fn mail(cfg: &Config, to: &str, subject: &str, body: String) -> anyhow::Result<Mail> {
    Ok(Mail::builder()
        .from(cfg.mail_from.parse()?)
        .to(to.parse()?)
        .subject(subject)
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(body),
        )?)
}

fn link(cfg: &Config, path: &str, token: &str) -> String {
    format!(
        "{}/portal/{path}?token={token}",
        cfg.public_url.trim_end_matches('/')
    )
}

/// What a link mail is for: its token's purpose and the mails it sends.
enum Due {
    /// An invitation, or a new activation link.
    Activation { to: String },
    /// A new login to confirm, and a notice to the login until then.
    LoginChange { to: String, previous: String },
}

impl Due {
    fn of(event: AccountEvent) -> Option<(Uuid, Due)> {
        match event {
            AccountEvent::PatientAccountInvited(e) => {
                Some((e.account_id, Due::Activation { to: e.email }))
            }
            AccountEvent::ActivationLinkRequested(e) => {
                Some((e.account_id, Due::Activation { to: e.email }))
            }
            AccountEvent::InvitationRedirected(e) => {
                Some((e.account_id, Due::Activation { to: e.email }))
            }
            AccountEvent::LoginChangeRequested(e) => Some((
                e.account_id,
                Due::LoginChange {
                    to: e.email,
                    previous: e.previous_email,
                },
            )),
            _ => None,
        }
    }

    fn purpose(&self) -> LinkPurpose {
        match self {
            Due::Activation { .. } => LinkPurpose::Activate,
            Due::LoginChange { .. } => LinkPurpose::ConfirmLogin,
        }
    }

    /// The address the link goes to: an activation link works while it is
    /// the login, a confirmation link confirms it.
    fn email(&self) -> Option<&str> {
        match self {
            Due::Activation { to } | Due::LoginChange { to, .. } => Some(to),
        }
    }

    fn mails(&self, cfg: &Config, token: &str) -> anyhow::Result<Vec<Mail>> {
        Ok(match self {
            Due::Activation { to } => vec![mail(
                cfg,
                to,
                "Activate your lab results account",
                format!(
                    "Hello,\r\n\r\nyour laboratory has opened an account for you to see your final test results online.\r\n\r\n\
                     Choose your password here (the link works once, for 7 days):\r\n\r\n{}\r\n\r\n\
                     If you did not expect this message, you can ignore it.\r\n",
                    link(cfg, "activate", token)
                ),
            )?],
            Due::LoginChange { to, previous } => vec![
                mail(
                    cfg,
                    to,
                    "Confirm your new login for lab results",
                    format!(
                        "Hello,\r\n\r\nyour laboratory now has this address for you. To log in to your lab results with it, \
                         confirm it here with your current password (the link works once, for 7 days):\r\n\r\n{}\r\n\r\n\
                         Until you confirm, you log in with your previous address. If you did not expect this message, ignore it.\r\n",
                        link(cfg, "confirm-login", token)
                    ),
                )?,
                mail(
                    cfg,
                    previous,
                    "Your laboratory changed your email address",
                    "Hello,\r\n\r\nyour laboratory changed the email address it has for you. Your lab results login \
                     stays this address until you confirm the new one through the link we sent to it.\r\n\r\n\
                     If you did not ask for this change, contact your laboratory; nothing changes without your password.\r\n"
                        .to_string(),
                )?,
            ],
        })
    }
}

/// A mail an event asks for: the event, its account and what to send.
struct Pending {
    event_id: Uuid,
    account_id: Uuid,
    due: Due,
    token: String,
}

/// A mailer's term under the lease: what each batch's handling needs.
struct Term<'a> {
    cfg: &'a Config,
    write: &'a Pool,
    outbox: Outbox,
    lease: Lease,
}

impl Term<'_> {
    /// Sends the mails that the events of one batch ask for, unless they
    /// were sent already, then stores `next` (the offsets after the batch).
    /// The whole batch costs two commits: the links' tokens, then the marks
    /// of the mails sent with the offsets; a batch without mail, one.
    async fn handle(&mut self, dues: Vec<(Uuid, Uuid, Due)>, next: &Offsets) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        let pending: Vec<Pending> = dues
            .into_iter()
            // A republished event (the relay may repeat) is one mail.
            .filter(|(event_id, ..)| seen.insert(*event_id))
            .map(|(event_id, account_id, due)| {
                let mut raw = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut raw);
                Pending {
                    event_id,
                    account_id,
                    due,
                    token: URL_SAFE_NO_PAD.encode(raw),
                }
            })
            .collect();
        let mut db = self.write.get().await?;
        let unsent = if pending.is_empty() {
            Vec::new()
        } else {
            let expires = Utc::now() + chrono::Duration::from_std(ACTIVATION_TTL)?;
            let hashes: Vec<Vec<u8>> = pending.iter().map(|p| token_hash(&p.token)).collect();
            let accounts: Vec<Uuid> = pending.iter().map(|p| p.account_id).collect();
            let events: Vec<Uuid> = pending.iter().map(|p| p.event_id).collect();
            let purposes: Vec<&str> = pending.iter().map(|p| p.due.purpose().as_str()).collect();
            let emails: Vec<Option<&str>> = pending.iter().map(|p| p.due.email()).collect();
            let tx = db.transaction().await?;
            let renewal = self.lease.fence(&*tx).await?;
            let unsent: std::collections::HashSet<Uuid> = tx
                .query(
                    "INSERT INTO activation_tokens (token_hash, account_id, event_id, expires_at, purpose, email) \
                     SELECT h, a, e, $4, p, m FROM unnest($1::bytea[], $2::uuid[], $3::uuid[], $5::text[], $6::text[]) AS t(h, a, e, p, m) \
                     ON CONFLICT (event_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, expires_at = EXCLUDED.expires_at \
                     WHERE activation_tokens.sent_at IS NULL AND activation_tokens.used_at IS NULL RETURNING event_id",
                    &[&hashes, &accounts, &events, &expires, &purposes, &emails],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.commit().await?;
            self.lease.renewed(renewal);
            pending
                .into_iter()
                .filter(|p| unsent.contains(&p.event_id))
                .collect()
        };
        let mut sent = Vec::with_capacity(unsent.len());
        let mut failed = None;
        for p in &unsent {
            let sending = async {
                self.lease.keep(&**db).await?;
                for mail in p.due.mails(self.cfg, &p.token)? {
                    self.outbox.send(mail).await?;
                }
                anyhow::Ok(())
            };
            match sending.await {
                Ok(()) => sent.push(p.event_id),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // The mails sent are marked even when a later one failed, so that
        // the batch's redelivery does not send them again; the offsets move
        // on only once every mail went out.
        let tx = db.transaction().await?;
        let renewal = self.lease.fence(&*tx).await?;
        if !sent.is_empty() {
            tx.execute(
                "UPDATE activation_tokens SET sent_at = now() WHERE event_id = ANY($1)",
                &[&sent],
            )
            .await?;
        }
        if failed.is_none() {
            offsets::store(&tx, OWNER, next).await?;
        }
        tx.commit().await?;
        self.lease.renewed(renewal);
        platform::metrics::MAILS_SENT.inc_by(sent.len() as u64);
        for p in unsent.iter().take(sent.len()) {
            tracing::info!(account = %p.account_id, "activation link sent");
        }
        failed.map_or(Ok(()), Err)
    }
}

/// The mails that the account events of `batch` ask for: each one's event,
/// account and what to send.
fn dues(batch: &[rdkafka::message::BorrowedMessage<'_>]) -> anyhow::Result<Vec<(Uuid, Uuid, Due)>> {
    let mut dues = Vec::new();
    for msg in batch {
        let Some(env) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<Envelope>(p).ok())
        else {
            continue;
        };
        if env.stream_type != "account" {
            continue;
        }
        if let Some((account_id, due)) =
            Due::of(AccountEvent::from_parts(&env.event_type, env.data)?)
        {
            dues.push((env.event_id, account_id, due));
        }
    }
    Ok(dues)
}

/// Runs the mailer until `shutdown` resolves; does nothing without
/// `LIS_SMTP_URL` or `LIS_MAIL_OUTBOX`.
pub async fn run(cfg: Config, write: Pool, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    if cfg.smtp_url.is_none() && cfg.mail_outbox.is_none() {
        tracing::info!(
            "neither LIS_SMTP_URL nor LIS_MAIL_OUTBOX is set: account invitations are not mailed"
        );
        return shutdown.await;
    }
    loop {
        let term = async {
            let outbox = Outbox::of(&cfg)?.ok_or_else(|| anyhow::anyhow!("no outbox"))?;
            let lease = Lease::acquire(&**write.get().await?, LEASE).await?;
            let mut term = Term {
                cfg: &cfg,
                write: &write,
                outbox,
                lease,
            };
            let stored = offsets::load(&write.get().await?, OWNER).await?;
            let consumer =
                offsets::assigned_consumer(&cfg, "lis-mailer", &SOURCES, &stored, FetchWait::Long)?;
            loop {
                let batch = offsets::next_batch(&consumer, Duration::from_secs(1), BATCH).await?;
                if batch.is_empty() {
                    term.lease.keep_pooled(&write).await?;
                    continue;
                }
                platform::metrics::MAILER_BATCH.observe(batch.len() as f64);
                let next = offsets::after(&batch);
                let dues = dues(&batch)?;
                drop(batch);
                term.handle(dues, &next).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            _ = &mut shutdown => return,
            r = term => if let Err(e) = r {
                tracing::warn!(error = %platform::telemetry::cause(e.as_ref()), "mailer failed; retrying");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
