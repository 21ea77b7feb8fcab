//! The operator's commands on reference data (clients, locations, partners).
//! Each is an event in the store, written in one transaction with the
//! write-side state it changes; secrets appear only in the return value.

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use domain::access::{Actor, IdSet, Permission, Scope};
use domain::event::DomainEvent;
use domain::reference::{self, Partner, PartnerEvent, ReferenceRejection};
use platform::auth::{generate_client_id, generate_secret, hash_secret, permissions_from_db};
use platform::config::Secret;
use serde::Serialize;
use uuid::Uuid;

use crate::store::{self, CommandMeta, Pending};

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The domain refused it.
    #[error(transparent)]
    Rejected(#[from] ReferenceRejection),
    /// No such partner.
    #[error("no partner {0}")]
    UnknownPartner(Uuid),
    /// A concurrent change won; run the command again.
    #[error("a concurrent change won; run the command again")]
    Conflict,
    /// Infrastructure failure.
    #[error(transparent)]
    Infra(#[from] anyhow::Error),
}

impl From<tokio_postgres::Error> for AdminError {
    fn from(e: tokio_postgres::Error) -> Self {
        AdminError::Infra(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for AdminError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AdminError::Infra(e.into())
    }
}

impl From<store::AppendError> for AdminError {
    fn from(e: store::AppendError) -> Self {
        match e {
            store::AppendError::Conflict => AdminError::Conflict,
            store::AppendError::Db(e) => e.into(),
        }
    }
}

/// A lab client.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    /// Id.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Name.
    pub name: String,
}

/// A location.
#[derive(Debug, Clone, Serialize)]
pub struct LocationRow {
    /// Id.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// Owning client.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Name.
    pub name: String,
}

/// A partner as the operator sees it (never its secret or hash).
#[derive(Debug, Clone, Serialize)]
pub struct PartnerRow {
    /// Id.
    #[serde(rename = "partnerID")]
    pub partner_id: Uuid,
    /// Name.
    pub name: String,
    /// OAuth client id.
    pub client_id: String,
    /// Permissions.
    pub permissions: BTreeSet<Permission>,
    /// Scope.
    pub scope: Scope,
    /// Disabled flag.
    pub disabled: bool,
    /// Stream version.
    pub version: i64,
}

/// New credentials, shown once.
#[derive(Debug, Serialize)]
pub struct Credentials {
    /// The partner.
    #[serde(rename = "partnerID")]
    pub partner_id: Uuid,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret, in clear; stored only as a hash.
    pub client_secret: String,
}

/// Registers a client; `false` when it already exists with that name.
pub async fn create_client(
    pool: &Pool,
    actor: &Actor,
    id: &str,
    name: &str,
) -> Result<bool, AdminError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let existing: Option<String> = tx
        .query_opt("SELECT name FROM clients WHERE client_id = $1", &[&id])
        .await?
        .map(|r| r.get(0));
    let Some(event) = reference::register_client(id, name, existing.as_deref())? else {
        return Ok(false);
    };
    let meta = CommandMeta::new(actor.clone(), None);
    store::append(
        &tx,
        &meta,
        &[Pending::new(reference::client_stream_id(id), 1, &event)],
    )
    .await?;
    tx.execute(
        "INSERT INTO clients (client_id, name) VALUES ($1, $2)",
        &[&id, &name],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Registers a location of an existing client; `false` when it exists.
pub async fn create_location(
    pool: &Pool,
    actor: &Actor,
    id: &str,
    client: &str,
    name: &str,
) -> Result<bool, AdminError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let client_exists = tx
        .query_opt("SELECT 1 FROM clients WHERE client_id = $1", &[&client])
        .await?
        .is_some();
    let existing: Option<(String, String)> = tx
        .query_opt(
            "SELECT client_id, name FROM locations WHERE location_id = $1",
            &[&id],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)));
    let existing_ref = existing.as_ref().map(|(c, n)| (c.as_str(), n.as_str()));
    let Some(event) = reference::register_location(id, client, name, client_exists, existing_ref)?
    else {
        return Ok(false);
    };
    let meta = CommandMeta::new(actor.clone(), None);
    store::append(
        &tx,
        &meta,
        &[Pending::new(reference::location_stream_id(id), 1, &event)],
    )
    .await?;
    tx.execute(
        "INSERT INTO locations (location_id, client_id, name) VALUES ($1, $2, $3)",
        &[&id, &client, &name],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Every client.
pub async fn list_clients(pool: &Pool) -> Result<Vec<ClientRow>, AdminError> {
    let db = pool.get().await?;
    Ok(db
        .query(
            "SELECT client_id, name FROM clients ORDER BY client_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| ClientRow {
            client_id: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// Every location.
pub async fn list_locations(pool: &Pool) -> Result<Vec<LocationRow>, AdminError> {
    let db = pool.get().await?;
    Ok(db
        .query(
            "SELECT location_id, client_id, name FROM locations ORDER BY location_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| LocationRow {
            location_id: r.get(0),
            client_id: r.get(1),
            name: r.get(2),
        })
        .collect())
}

fn partner_from_row(r: &tokio_postgres::Row) -> Result<PartnerRow, AdminError> {
    Ok(PartnerRow {
        partner_id: r.get("partner_id"),
        name: r.get("name"),
        client_id: r.get("client_id"),
        permissions: permissions_from_db(&r.get::<_, Vec<String>>("permissions")),
        scope: serde_json::from_value(r.get("scope")).map_err(anyhow::Error::from)?,
        disabled: r.get("disabled"),
        version: r.get("version"),
    })
}

const PARTNER_COLUMNS: &str = "partner_id, name, client_id, permissions, scope, disabled, version";

/// Every partner.
pub async fn list_partners(pool: &Pool) -> Result<Vec<PartnerRow>, AdminError> {
    let db = pool.get().await?;
    db.query(
        &format!("SELECT {PARTNER_COLUMNS} FROM partners ORDER BY name, partner_id"),
        &[],
    )
    .await?
    .iter()
    .map(partner_from_row)
    .collect()
}

/// One partner.
pub async fn show_partner(pool: &Pool, id: Uuid) -> Result<PartnerRow, AdminError> {
    let db = pool.get().await?;
    load_partner(&db, id).await
}

async fn load_partner(db: &impl GenericClient, id: Uuid) -> Result<PartnerRow, AdminError> {
    let row = db
        .query_opt(
            &format!("SELECT {PARTNER_COLUMNS} FROM partners WHERE partner_id = $1"),
            &[&id],
        )
        .await?
        .ok_or(AdminError::UnknownPartner(id))?;
    partner_from_row(&row)
}

fn state_of(row: &PartnerRow) -> Partner {
    Partner {
        id: row.partner_id,
        name: row.name.clone(),
        client_id: row.client_id.clone(),
        permissions: row.permissions.clone(),
        scope: row.scope.clone(),
        disabled: row.disabled,
        version: row.version,
    }
}

/// Creates a partner and returns its credentials (the secret only here).
pub async fn create_partner(
    pool: &Pool,
    actor: &Actor,
    name: &str,
    permissions: BTreeSet<Permission>,
    scope: Scope,
) -> Result<Credentials, AdminError> {
    let partner_id = Uuid::new_v4();
    let client_id = generate_client_id();
    let secret = generate_secret();
    let hash = hash_for(&secret).await?;
    let event = reference::register_partner(
        partner_id,
        client_id.clone(),
        name,
        permissions.clone(),
        scope.clone(),
    )?;
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let meta = CommandMeta::new(actor.clone(), None);
    store::append(&tx, &meta, &[Pending::new(partner_id, 1, &event)]).await?;
    let perms: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
    tx.execute(
        "INSERT INTO partners (partner_id, client_id, name, secret_hash, permissions, scope, version) \
         VALUES ($1, $2, $3, $4, $5, $6, 1)",
        &[
            &partner_id,
            &client_id,
            &name,
            &hash,
            &perms,
            &serde_json::to_value(&scope).map_err(anyhow::Error::from)?,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Credentials {
        partner_id,
        client_id,
        client_secret: secret.expose().clone(),
    })
}

async fn hash_for(secret: &Secret<String>) -> Result<String, AdminError> {
    let s = secret.clone();
    tokio::task::spawn_blocking(move || hash_secret(s.expose()))
        .await
        .map_err(|e| AdminError::Infra(e.into()))
}

/// Applies a partner event to the write-side row and appends it.
async fn record_partner_event(
    tx: &deadpool_postgres::Transaction<'_>,
    actor: &Actor,
    current: &PartnerRow,
    event: &PartnerEvent,
    new_hash: Option<&str>,
) -> Result<(), AdminError> {
    let meta = CommandMeta::new(actor.clone(), None);
    let version = current.version + 1;
    store::append(
        tx,
        &meta,
        &[Pending::new(current.partner_id, version, event)],
    )
    .await?;
    let next = reference::apply_partner(Some(state_of(current)), event).expect("partner exists");
    let perms: Vec<&str> = next.permissions.iter().map(|p| p.as_str()).collect();
    let bump = i32::from(new_hash.is_some());
    tx.execute(
        "UPDATE partners SET permissions = $2, scope = $3, disabled = $4, version = $5, \
         secret_hash = COALESCE($6, secret_hash), secret_version = secret_version + $7 \
         WHERE partner_id = $1",
        &[
            &current.partner_id,
            &perms,
            &serde_json::to_value(&next.scope).map_err(anyhow::Error::from)?,
            &next.disabled,
            &version,
            &new_hash,
            &bump,
        ],
    )
    .await?;
    tracing::info!(partner = %current.partner_id, event = event.event_type(), "partner changed");
    Ok(())
}

/// Waits until a committed change to a partner holds for the next request
/// on every process (`platform::access_cache`).
async fn in_effect(db: &deadpool_postgres::Object) -> Result<(), AdminError> {
    platform::access_cache::await_holders(db)
        .await
        .map_err(|e| AdminError::Infra(e.into()))
}

/// Changes a partner's permissions and/or scope (unchanged where `None`).
pub async fn update_partner(
    pool: &Pool,
    actor: &Actor,
    id: Uuid,
    permissions: Option<BTreeSet<Permission>>,
    clients: Option<IdSet>,
    locations: Option<IdSet>,
) -> Result<PartnerRow, AdminError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let current = load_partner(&tx, id).await?;
    let scope = Scope {
        clients: clients.unwrap_or_else(|| current.scope.clients.clone()),
        locations: locations.unwrap_or_else(|| current.scope.locations.clone()),
    };
    let permissions = permissions.unwrap_or_else(|| current.permissions.clone());
    if let Some(event) = reference::change_partner_access(&state_of(&current), permissions, scope)?
    {
        record_partner_event(&tx, actor, &current, &event, None).await?;
    }
    let updated = load_partner(&tx, id).await?;
    tx.commit().await?;
    in_effect(&db).await?;
    Ok(updated)
}

/// Replaces a partner's secret: older tokens stop working at once.
pub async fn rotate_secret(
    pool: &Pool,
    actor: &Actor,
    id: Uuid,
) -> Result<Credentials, AdminError> {
    let secret = generate_secret();
    let hash = hash_for(&secret).await?;
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let current = load_partner(&tx, id).await?;
    let event = reference::rotate_partner_secret(&state_of(&current))?;
    record_partner_event(&tx, actor, &current, &event, Some(&hash)).await?;
    tx.commit().await?;
    in_effect(&db).await?;
    Ok(Credentials {
        partner_id: id,
        client_id: current.client_id,
        client_secret: secret.expose().clone(),
    })
}

/// Disables a partner: its tokens stop working at once.
pub async fn disable_partner(
    pool: &Pool,
    actor: &Actor,
    id: Uuid,
) -> Result<PartnerRow, AdminError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let current = load_partner(&tx, id).await?;
    if let Some(event) = reference::disable_partner(&state_of(&current)) {
        record_partner_event(&tx, actor, &current, &event, None).await?;
    }
    let updated = load_partner(&tx, id).await?;
    tx.commit().await?;
    in_effect(&db).await?;
    Ok(updated)
}

impl From<domain::catalog::CatalogRejection> for AdminError {
    fn from(e: domain::catalog::CatalogRejection) -> Self {
        AdminError::Infra(anyhow::anyhow!("{e}"))
    }
}

/// What defining a catalog test did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Defined {
    /// A new test.
    Defined,
    /// A new definition of an existing test.
    Revised,
    /// The same definition again: nothing changed.
    Unchanged,
}

/// Defines a catalog test, or revises it when its code exists with another
/// definition. Past results keep the ranges recorded with them.
pub async fn define_catalog_test(
    pool: &Pool,
    actor: &Actor,
    def: domain::catalog::CatalogTest,
) -> Result<Defined, AdminError> {
    use domain::catalog::{self, CatalogEvent};
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let existing = tx
        .query_opt(
            "SELECT definition, version FROM catalog_tests WHERE code = $1",
            &[&def.code],
        )
        .await?
        .map(|r| -> Result<(catalog::CatalogTest, i64), AdminError> {
            Ok((
                serde_json::from_value(r.get(0)).map_err(anyhow::Error::from)?,
                r.get(1),
            ))
        })
        .transpose()?;
    let Some(event) = catalog::define_test(def.clone(), existing.as_ref().map(|(d, _)| d))? else {
        return Ok(Defined::Unchanged);
    };
    let version = existing.as_ref().map_or(1, |(_, v)| v + 1);
    let meta = CommandMeta::new(actor.clone(), None);
    store::append(
        &tx,
        &meta,
        &[Pending::new(
            catalog::catalog_stream_id(&def.code),
            version,
            &event,
        )],
    )
    .await?;
    let json = serde_json::to_value(&def).map_err(anyhow::Error::from)?;
    tx.execute(
        "INSERT INTO catalog_tests (code, definition, version) VALUES ($1, $2, $3) \
         ON CONFLICT (code) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version",
        &[&def.code, &json, &version],
    )
    .await?;
    tx.commit().await?;
    Ok(match event {
        CatalogEvent::CatalogTestDefined(_) => Defined::Defined,
        CatalogEvent::CatalogTestRevised(_) => Defined::Revised,
    })
}

/// Defines every test of the seed catalog that is not defined yet.
pub async fn seed_catalog(pool: &Pool, actor: &Actor) -> Result<usize, AdminError> {
    let existing: Vec<String> = list_catalog(pool)
        .await?
        .into_iter()
        .map(|t| t.code)
        .collect();
    let mut added = 0;
    for def in domain::catalog::seed_catalog() {
        if !existing.contains(&def.code)
            && define_catalog_test(pool, actor, def).await? == Defined::Defined
        {
            added += 1;
        }
    }
    Ok(added)
}

/// The whole catalog, by code.
pub async fn list_catalog(pool: &Pool) -> Result<Vec<domain::catalog::CatalogTest>, AdminError> {
    let db = pool.get().await?;
    db.query("SELECT definition FROM catalog_tests ORDER BY code", &[])
        .await?
        .iter()
        .map(|r| serde_json::from_value(r.get(0)).map_err(|e| AdminError::Infra(e.into())))
        .collect()
}
