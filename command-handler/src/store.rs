//! The event store: appending a command's events inside its transaction,
//! and loading a stream to decide the next command.
//!
//! Architecture invariant: the event insert is the first write of a command's
//! transaction, so its transaction id is taken after every read the decision
//! depended on. The relay orders by transaction id, so an event that depends
//! on another is always published after it.

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::GenericClient;
use domain::access::Actor;
use domain::event::{DomainEvent, StreamKind};
use platform::db::Cached;
use serde_json::Value;
use uuid::Uuid;

/// Who issued a command, and when it was accepted.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    /// Unique id of the command (the same for all its events).
    pub command_id: Uuid,
    /// The acting partner or operator.
    pub actor: Actor,
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Acceptance time, at the store's microsecond precision.
    pub occurred_at: DateTime<Utc>,
}

impl CommandMeta {
    /// A new command by `actor`.
    pub fn new(actor: Actor, idempotency_key: Option<String>) -> Self {
        CommandMeta {
            command_id: Uuid::new_v4(),
            actor,
            idempotency_key,
            occurred_at: Utc::now().trunc_subsecs(6),
        }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Event id.
    pub event_id: Uuid,
    /// Stream kind.
    pub stream_type: StreamKind,
    /// Stream id.
    pub stream_id: Uuid,
    /// The version this event gives the stream.
    pub version: i64,
    /// Type name.
    pub event_type: &'static str,
    /// Schema version of `data`.
    pub schema_version: i32,
    /// The event's data.
    pub data: Value,
}

impl Pending {
    /// Prepares `event` as version `version` of `stream_id`.
    pub fn new<E: DomainEvent>(stream_id: Uuid, version: i64, event: &E) -> Self {
        Pending {
            event_id: Uuid::new_v4(),
            stream_type: E::STREAM,
            stream_id,
            version,
            event_type: event.event_type(),
            schema_version: event.schema_version() as i32,
            data: event.to_data(),
        }
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another command appended to the stream first.
    #[error("concurrent append to the same stream")]
    Conflict,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Signalled after a command's transaction commits, so a relay in the same
/// process publishes at once; a relay in another process polls (no
/// `NOTIFY`: Postgres serialises every notifying commit of the cluster on
/// one lock held until the commit is flushed, which capped creates at about
/// 640/s however many connections wrote).
pub static COMMITTED: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Appends events in the caller's transaction.
pub async fn append(
    tx: &impl GenericClient,
    meta: &CommandMeta,
    events: &[Pending],
) -> Result<(), AppendError> {
    if events.is_empty() {
        return Ok(());
    }
    let actor = serde_json::to_value(&meta.actor).expect("actor serializes");
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.stream_type.as_str()).collect();
    let streams: Vec<Uuid> = events.iter().map(|e| e.stream_id).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let schemas: Vec<i32> = events.iter().map(|e| e.schema_version).collect();
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    let r = tx
        .execute_cached(
            "INSERT INTO events (event_id, stream_type, stream_id, version, event_type, \
             schema_version, data, occurred_at, actor, command_id, idempotency_key) \
             SELECT e.event_id, e.stream_type, e.stream_id, e.version, e.event_type, e.schema_version, e.data, $8::timestamptz, $9::jsonb, $10::uuid, $11::text \
             FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[], $6::int[], $7::jsonb[]) \
             WITH ORDINALITY AS e(event_id, stream_type, stream_id, version, event_type, schema_version, data, n) \
             ORDER BY n",
            &[
                &ids,
                &kinds,
                &streams,
                &versions,
                &types,
                &schemas,
                &data,
                &meta.occurred_at,
                &actor,
                &meta.command_id,
                &meta.idempotency_key,
            ],
        )
        .await;
    match r {
        Ok(_) => {}
        Err(err) if platform::db::is_unique_violation(&err, "events_stream_version") => {
            return Err(AppendError::Conflict)
        }
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// A write-side row a decision implies: the uniqueness reservations and the
/// account a patient holds. A reservation another command took first is a
/// lost race ([`WriteError::Raced`]): the command runs again and decides
/// against it.
#[derive(Debug, Clone)]
pub enum Row {
    /// A patient's `externalPatientID` within its client.
    ExternalPatientId {
        /// The patient's client.
        client_id: String,
        /// The id.
        external_id: String,
        /// Its holder.
        patient_id: Uuid,
    },
    /// A patient gives up the `externalPatientID` it held (before taking
    /// another, or none).
    ReleaseExternalPatientId {
        /// The patient.
        patient_id: Uuid,
    },
    /// An order's accession number, unique in the lab.
    Accession {
        /// The number.
        number: String,
        /// Its order.
        order_id: Uuid,
    },
    /// A patient's new portal account, under its login (unique).
    Account {
        /// The account.
        account_id: Uuid,
        /// Its patient.
        patient_id: Uuid,
        /// The normalized login.
        login: String,
    },
    /// An account's status as an event left it.
    AccountStatus {
        /// The account.
        account_id: Uuid,
        /// Its status.
        status: &'static str,
        /// Its stream version.
        version: i64,
    },
    /// An account's first password (its hash), which also ends its
    /// activation links and its count of failed logins.
    AccountPassword {
        /// The account.
        account_id: Uuid,
        /// The password's slow hash (PHC string).
        hash: String,
    },
    /// An account's login changes (the patient confirmed the address).
    AccountLogin {
        /// The account.
        account_id: Uuid,
        /// The normalized login.
        login: String,
        /// The confirmation link's token hash, used up now (none when an
        /// invitation follows a corrected address).
        token_hash: Option<Vec<u8>>,
    },
    /// Every portal session of an account ends (it was locked or disabled).
    EndSessions {
        /// The account.
        account_id: Uuid,
    },
    /// A new lab client.
    Client {
        /// Its id.
        client_id: String,
        /// Its name.
        name: String,
    },
    /// A new location of a client.
    Location {
        /// Its id.
        location_id: String,
        /// Its client.
        client_id: String,
        /// Its name.
        name: String,
    },
    /// A new partner.
    Partner {
        /// Its id.
        partner_id: Uuid,
        /// Its OAuth client id.
        client_id: String,
        /// Its name.
        name: String,
        /// Its secret's hash.
        secret_hash: String,
        /// Its permissions.
        permissions: Vec<&'static str>,
        /// Its scope (JSON).
        scope: Value,
    },
    /// A partner's access as an event left it.
    PartnerAccess {
        /// The partner.
        partner_id: Uuid,
        /// Its permissions.
        permissions: Vec<&'static str>,
        /// Its scope (JSON).
        scope: Value,
        /// Whether it is disabled.
        disabled: bool,
        /// Its stream version.
        version: i64,
        /// A new secret's hash, when the secret was rotated.
        new_secret_hash: Option<String>,
    },
    /// A catalog test's current definition.
    CatalogTest {
        /// Its code.
        code: String,
        /// Its definition (JSON).
        definition: Value,
        /// Its stream version.
        version: i64,
    },
}

/// Everything a decision writes: its events, then the rows they imply.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// Events to append, in order.
    pub events: Vec<Pending>,
    /// Rows to write after them, in order.
    pub rows: Vec<Row>,
}

impl Writes {
    /// Appends `event` as version `version` of `stream_id`.
    pub fn event<E: DomainEvent>(&mut self, stream_id: Uuid, version: i64, event: &E) {
        self.events.push(Pending::new(stream_id, version, event));
    }
}

/// Why a decision's writes did not all go in.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another command appended to a stream or took a reservation first.
    #[error("another command won a race")]
    Raced,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

impl WriteError {
    /// A database error, or a lost race when Postgres broke a deadlock or a
    /// serialization conflict between two transactions (a group commit
    /// holds several commands' rows: another may want them in the other
    /// order).
    fn of(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => WriteError::Raced,
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => WriteError::Raced,
            _ => WriteError::Db(e),
        }
    }
}

impl From<AppendError> for WriteError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict => WriteError::Raced,
            AppendError::Db(e) => WriteError::of(e),
        }
    }
}

/// Writes a decision in the caller's transaction: the events first (so
/// the transaction id is taken after every read the decision made), then
/// the rows.
pub async fn write(
    tx: &impl GenericClient,
    meta: &CommandMeta,
    writes: &Writes,
) -> Result<(), WriteError> {
    append(tx, meta, &writes.events).await?;
    for row in &writes.rows {
        let (sql, params, unique) = row.statement();
        match tx.execute_cached(sql, &params).await {
            Ok(_) => {}
            Err(e)
                if unique
                    .iter()
                    .any(|c| platform::db::is_unique_violation(&e, c)) =>
            {
                return Err(WriteError::Raced)
            }
            Err(e) => return Err(WriteError::of(e)),
        }
    }
    Ok(())
}

type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;

impl Row {
    /// The row's statement, its parameters, and the unique constraints a
    /// concurrent command may have taken first.
    fn statement(&self) -> (&'static str, Params<'_>, &'static [&'static str]) {
        match self {
            Row::ExternalPatientId {
                client_id,
                external_id,
                patient_id,
            } => (
                "INSERT INTO patient_external_ids (client_id, external_patient_id, patient_id) VALUES ($1, $2, $3)",
                vec![client_id, external_id, patient_id],
                &["patient_external_ids_pkey"],
            ),
            Row::ReleaseExternalPatientId { patient_id } => (
                "DELETE FROM patient_external_ids WHERE patient_id = $1",
                vec![patient_id],
                &[],
            ),
            Row::Accession { number, order_id } => (
                "INSERT INTO accession_numbers (accession_number, order_id) VALUES ($1, $2)",
                vec![number, order_id],
                &["accession_numbers_pkey"],
            ),
            Row::Account {
                account_id,
                patient_id,
                login,
            } => (
                "INSERT INTO accounts (account_id, patient_id, login, status, version) VALUES ($1, $2, $3, 'invited', 1)",
                vec![account_id, patient_id, login],
                &["accounts_login", "accounts_patient"],
            ),
            Row::AccountStatus {
                account_id,
                status,
                version,
            } => (
                "UPDATE accounts SET status = $2, version = $3, \
                 failed_logins = CASE WHEN $2 = 'active' THEN 0 ELSE failed_logins END \
                 WHERE account_id = $1",
                vec![account_id, status, version],
                &[],
            ),
            Row::AccountPassword { account_id, hash } => (
                "WITH used AS (UPDATE activation_tokens SET used_at = now() \
                 WHERE account_id = $1 AND used_at IS NULL) \
                 UPDATE accounts SET password_hash = $2, failed_logins = 0 WHERE account_id = $1",
                vec![account_id, hash],
                &[],
            ),
            Row::AccountLogin {
                account_id,
                login,
                token_hash,
            } => (
                "WITH used AS (UPDATE activation_tokens SET used_at = now() WHERE token_hash = $3) \
                 UPDATE accounts SET login = $2 WHERE account_id = $1",
                vec![account_id, login, token_hash],
                &["accounts_login"],
            ),
            Row::EndSessions { account_id } => (
                "DELETE FROM portal_sessions WHERE account_id = $1",
                vec![account_id],
                &[],
            ),
            Row::Client { client_id, name } => (
                "INSERT INTO clients (client_id, name) VALUES ($1, $2)",
                vec![client_id, name],
                &["clients_pkey"],
            ),
            Row::Location {
                location_id,
                client_id,
                name,
            } => (
                "INSERT INTO locations (location_id, client_id, name) VALUES ($1, $2, $3)",
                vec![location_id, client_id, name],
                &["locations_pkey"],
            ),
            Row::Partner {
                partner_id,
                client_id,
                name,
                secret_hash,
                permissions,
                scope,
            } => (
                "INSERT INTO partners (partner_id, client_id, name, secret_hash, permissions, scope, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, 1)",
                vec![partner_id, client_id, name, secret_hash, permissions, scope],
                &[],
            ),
            Row::PartnerAccess {
                partner_id,
                permissions,
                scope,
                disabled,
                version,
                new_secret_hash,
            } => (
                "UPDATE partners SET permissions = $2, scope = $3, disabled = $4, version = $5, \
                 secret_hash = COALESCE($6, secret_hash), \
                 secret_version = secret_version + CASE WHEN $6::text IS NULL THEN 0 ELSE 1 END \
                 WHERE partner_id = $1",
                vec![partner_id, permissions, scope, disabled, version, new_secret_hash],
                &[],
            ),
            Row::CatalogTest {
                code,
                definition,
                version,
            } => (
                "INSERT INTO catalog_tests (code, definition, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (code) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version",
                vec![code, definition, version],
                &[],
            ),
        }
    }
}

/// A stream as loaded for a decision.
#[derive(Debug, Clone)]
pub struct Loaded<E> {
    /// The events in order.
    pub events: Vec<E>,
    /// When the first event occurred.
    pub created_at: DateTime<Utc>,
    /// When the last event occurred.
    pub updated_at: DateTime<Utc>,
}

/// Why a stream could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Postgres failed or could not be reached.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// A stored event does not read as its type.
    #[error("a stored event does not read")]
    Event(#[from] serde_json::Error),
}

impl From<LoadError> for contract::problem::ApiError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Db(e) => e.into(),
            e @ LoadError::Event(_) => contract::problem::ApiError::internal(e),
        }
    }
}

/// Loads a stream's events; `None` when the stream has none.
pub async fn load<E: DomainEvent>(
    db: &impl GenericClient,
    stream_id: Uuid,
) -> Result<Option<Loaded<E>>, LoadError> {
    let rows = db
        .query_cached(
            "SELECT event_type, data, occurred_at FROM events WHERE stream_id = $1 ORDER BY version",
            &[&stream_id],
        )
        .await?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let created_at = first.get(2);
    let updated_at = last.get(2);
    let events = rows
        .iter()
        .map(|r| E::from_parts(r.get(0), r.get(1)))
        .collect::<Result<Vec<E>, _>>()?;
    Ok(Some(Loaded {
        events,
        created_at,
        updated_at,
    }))
}
