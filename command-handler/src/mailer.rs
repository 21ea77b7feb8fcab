//! The invitation mailer: a reactor on the account stream that sends each
//! invited patient a one-time activation link, by SMTP (`LIS_SMTP_URL`) or
//! into a directory of `.eml` files (`LIS_MAIL_OUTBOX`, the local stack's).
//!
//! It reads `PatientAccountInvited`, `ActivationLinkRequested`,
//! `InvitationRedirected` (an invitation sent again to a corrected address)
//! and `LoginChangeRequested` (whose link confirms a new login, with a
//! notice to the old one) from Kafka. For each it makes
//! a fresh random token, stores only its SHA-256 hash (keyed by the event
//! id), sends the mail, then marks the invitation sent and stores the Kafka
//! offset in one transaction. A crash before that mark sends again with a new
//! token, which replaces the old one (at least once, and only the newest link
//! works); a mark already present means the mail went out, so a re-delivered
//! event sends nothing.
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
const OWNER: Owner<'static> = Owner::Reactor("invitation-mailer");
/// The lease the working mailer holds.
const LEASE: &str = "mailer";
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

/// A mailer's term under the lease: what each event's handling needs.
struct Term<'a> {
    cfg: &'a Config,
    write: &'a Pool,
    outbox: Outbox,
    lease: Lease,
}

impl Term<'_> {
    /// Stores the offsets after an event, under the lease.
    async fn store_offsets(&mut self, next: &Offsets) -> anyhow::Result<()> {
        offsets::store_under_lease(self.write, &mut self.lease, OWNER, next).await
    }

    /// Sends the mails of one event unless they were sent already, then
    /// stores `next`.
    async fn handle(&mut self, env: &Envelope, next: &Offsets) -> anyhow::Result<()> {
        let Some((account_id, due)) =
            Due::of(AccountEvent::from_parts(&env.event_type, env.data.clone())?)
        else {
            return self.store_offsets(next).await;
        };
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = URL_SAFE_NO_PAD.encode(raw);
        let expires = Utc::now() + chrono::Duration::from_std(ACTIVATION_TTL)?;
        let mut db = self.write.get().await?;
        let tx = db.transaction().await?;
        let renewal = self.lease.fence(&*tx).await?;
        let unsent = tx
            .query_opt(
                "INSERT INTO activation_tokens (token_hash, account_id, event_id, expires_at, purpose, email) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (event_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, expires_at = EXCLUDED.expires_at \
                 WHERE activation_tokens.sent_at IS NULL RETURNING 1",
                &[
                    &token_hash(&token),
                    &account_id,
                    &env.event_id,
                    &expires,
                    &due.purpose().as_str(),
                    &due.email(),
                ],
            )
            .await?
            .is_some();
        tx.commit().await?;
        self.lease.renewed(renewal);
        if !unsent {
            drop(db);
            return self.store_offsets(next).await;
        }
        self.lease.keep(&**db).await?;
        for mail in due.mails(self.cfg, &token)? {
            self.outbox.send(mail).await?;
        }
        let tx = db.transaction().await?;
        let renewal = self.lease.fence(&*tx).await?;
        tx.execute(
            "UPDATE activation_tokens SET sent_at = now() WHERE event_id = $1",
            &[&env.event_id],
        )
        .await?;
        offsets::store(&tx, OWNER, next).await?;
        tx.commit().await?;
        self.lease.renewed(renewal);
        platform::metrics::MAILS_SENT.inc();
        tracing::info!(account = %account_id, "activation link sent");
        Ok(())
    }
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
            let consumer = offsets::assigned_consumer(
                &cfg,
                "lis-mailer",
                &[Topic::Patients],
                &stored,
                FetchWait::Long,
            )?;
            loop {
                let msg = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
                {
                    Ok(msg) => msg?,
                    Err(_) => {
                        term.lease.keep_pooled(&write).await?;
                        continue;
                    }
                };
                let next =
                    Offsets::from([((msg.topic().to_string(), msg.partition()), msg.offset() + 1)]);
                let env = msg
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Envelope>(p).ok());
                match env {
                    Some(env) if env.stream_type == "account" => term.handle(&env, &next).await?,
                    _ => term.store_offsets(&next).await?,
                }
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
