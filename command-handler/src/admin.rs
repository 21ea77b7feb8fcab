//! The operator's commands on reference data (clients, locations, partners,
//! the catalog): each an [`Operation`] that [`run`] decides and writes (an
//! event in the store and the write-side row it changes, in one
//! transaction); secrets appear only in the return value.

use std::collections::BTreeSet;

use deadpool_postgres::{GenericClient, Pool, Transaction};
use domain::access::{Actor, IdSet, Permission, Scope};
use domain::reference::{self, Partner, ReferenceRejection};
use platform::auth::{
    generate_client_id, generate_secret, hash_secret_off_thread, permissions_from_db,
};
use platform::config::Secret;
use serde::Serialize;
use uuid::Uuid;

use crate::pipeline::{run, Decision, Operation};
use crate::store::{Row, Writes};

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

impl From<crate::pipeline::Raced> for AdminError {
    fn from(_: crate::pipeline::Raced) -> Self {
        AdminError::Conflict
    }
}

impl From<deadpool_postgres::PoolError> for AdminError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AdminError::Infra(e.into())
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

/// Registers a lab client (nothing when it exists with that name).
pub struct RegisterClient {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

impl Operation for RegisterClient {
    type Output = bool;
    type Error = AdminError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<bool>, AdminError> {
        let existing: Option<String> = tx
            .query_opt("SELECT name FROM clients WHERE client_id = $1", &[&self.id])
            .await?
            .map(|r| r.get(0));
        let mut writes = Writes::default();
        let event = reference::register_client(&self.id, &self.name, existing.as_deref())?;
        if let Some(event) = &event {
            writes.event(reference::client_stream_id(&self.id), 1, event);
            writes.rows.push(Row::Client {
                client_id: self.id.clone(),
                name: self.name.clone(),
            });
        }
        Ok(Decision {
            writes,
            output: event.is_some(),
        })
    }
}

/// Registers a client; `false` when it already exists with that name.
pub async fn create_client(
    pool: &Pool,
    actor: &Actor,
    id: &str,
    name: &str,
) -> Result<bool, AdminError> {
    let command = RegisterClient {
        id: id.into(),
        name: name.into(),
    };
    run(pool, actor, &command).await
}

/// Registers a location of an existing client (nothing when it exists).
pub struct RegisterLocation {
    /// Its id.
    pub id: String,
    /// Its client.
    pub client: String,
    /// Its name.
    pub name: String,
}

impl Operation for RegisterLocation {
    type Output = bool;
    type Error = AdminError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<bool>, AdminError> {
        let client_exists = tx
            .query_opt(
                "SELECT 1 FROM clients WHERE client_id = $1",
                &[&self.client],
            )
            .await?
            .is_some();
        let existing: Option<(String, String)> = tx
            .query_opt(
                "SELECT client_id, name FROM locations WHERE location_id = $1",
                &[&self.id],
            )
            .await?
            .map(|r| (r.get(0), r.get(1)));
        let existing = existing.as_ref().map(|(c, n)| (c.as_str(), n.as_str()));
        let event = reference::register_location(
            &self.id,
            &self.client,
            &self.name,
            client_exists,
            existing,
        )?;
        let mut writes = Writes::default();
        if let Some(event) = &event {
            writes.event(reference::location_stream_id(&self.id), 1, event);
            writes.rows.push(Row::Location {
                location_id: self.id.clone(),
                client_id: self.client.clone(),
                name: self.name.clone(),
            });
        }
        Ok(Decision {
            writes,
            output: event.is_some(),
        })
    }
}

/// Registers a location of an existing client; `false` when it exists.
pub async fn create_location(
    pool: &Pool,
    actor: &Actor,
    id: &str,
    client: &str,
    name: &str,
) -> Result<bool, AdminError> {
    let command = RegisterLocation {
        id: id.into(),
        client: client.into(),
        name: name.into(),
    };
    run(pool, actor, &command).await
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

/// Registers a partner whose secret was hashed already.
pub struct RegisterPartner {
    /// Its id.
    pub partner_id: Uuid,
    /// Its OAuth client id.
    pub client_id: String,
    /// Its name.
    pub name: String,
    /// Its secret's hash.
    pub secret_hash: String,
    /// Its permissions.
    pub permissions: BTreeSet<Permission>,
    /// Its scope.
    pub scope: Scope,
}

impl Operation for RegisterPartner {
    type Output = ();
    type Error = AdminError;
    async fn decide(&self, _: &Transaction<'_>) -> Result<Decision<()>, AdminError> {
        let event = reference::register_partner(
            self.partner_id,
            self.client_id.clone(),
            &self.name,
            self.permissions.clone(),
            self.scope.clone(),
        )?;
        let mut writes = Writes::default();
        writes.event(self.partner_id, 1, &event);
        writes.rows.push(Row::Partner {
            partner_id: self.partner_id,
            client_id: self.client_id.clone(),
            name: self.name.clone(),
            secret_hash: self.secret_hash.clone(),
            permissions: self.permissions.iter().map(|p| p.as_str()).collect(),
            scope: scope_json(&self.scope)?,
        });
        Ok(Decision { writes, output: () })
    }
}

fn scope_json(scope: &Scope) -> Result<serde_json::Value, AdminError> {
    serde_json::to_value(scope).map_err(|e| AdminError::Infra(e.into()))
}

/// Creates a partner and returns its credentials (the secret only here).
pub async fn create_partner(
    pool: &Pool,
    actor: &Actor,
    name: &str,
    permissions: BTreeSet<Permission>,
    scope: Scope,
) -> Result<Credentials, AdminError> {
    let secret = generate_secret();
    let command = RegisterPartner {
        partner_id: Uuid::new_v4(),
        client_id: generate_client_id(),
        name: name.into(),
        secret_hash: hash_for(&secret).await?,
        permissions,
        scope,
    };
    run(pool, actor, &command).await?;
    Ok(Credentials {
        partner_id: command.partner_id,
        client_id: command.client_id,
        client_secret: secret.expose().clone(),
    })
}

async fn hash_for(secret: &Secret<String>) -> Result<String, AdminError> {
    hash_secret_off_thread(secret.expose().clone())
        .await
        .ok_or_else(|| AdminError::Infra(anyhow::anyhow!("the runtime is shutting down")))
}

/// A change to an existing partner.
pub enum PartnerChange {
    /// New permissions and/or scope (unchanged where `None`).
    Access {
        /// The new permissions.
        permissions: Option<BTreeSet<Permission>>,
        /// The new client scope.
        clients: Option<IdSet>,
        /// The new location scope.
        locations: Option<IdSet>,
    },
    /// A new secret (its hash): older tokens stop working at once.
    Rotate {
        /// The new secret's hash.
        secret_hash: String,
    },
    /// Disabled: its tokens stop working at once.
    Disable,
}

/// Changes partner `id`.
pub struct ChangePartner {
    /// The partner.
    pub id: Uuid,
    /// The change.
    pub change: PartnerChange,
}

impl Operation for ChangePartner {
    type Output = PartnerRow;
    type Error = AdminError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<PartnerRow>, AdminError> {
        let current = load_partner(tx, self.id).await?;
        let state = state_of(&current);
        let (event, new_secret_hash) = match &self.change {
            PartnerChange::Access {
                permissions,
                clients,
                locations,
            } => {
                let scope = Scope {
                    clients: clients
                        .clone()
                        .unwrap_or_else(|| state.scope.clients.clone()),
                    locations: locations
                        .clone()
                        .unwrap_or_else(|| state.scope.locations.clone()),
                };
                let permissions = permissions
                    .clone()
                    .unwrap_or_else(|| state.permissions.clone());
                (
                    reference::change_partner_access(&state, permissions, scope)?,
                    None,
                )
            }
            PartnerChange::Rotate { secret_hash } => (
                Some(reference::rotate_partner_secret(&state)?),
                Some(secret_hash.clone()),
            ),
            PartnerChange::Disable => (reference::disable_partner(&state), None),
        };
        let Some(event) = event else {
            return Ok(Decision {
                writes: Writes::default(),
                output: current,
            });
        };
        let version = current.version + 1;
        let next = reference::apply_partner(Some(state), &event).expect("partner exists");
        let mut writes = Writes::default();
        writes.event(self.id, version, &event);
        writes.rows.push(Row::PartnerAccess {
            partner_id: self.id,
            permissions: next.permissions.iter().map(|p| p.as_str()).collect(),
            scope: scope_json(&next.scope)?,
            disabled: next.disabled,
            version,
            new_secret_hash,
        });
        Ok(Decision {
            writes,
            output: PartnerRow {
                permissions: next.permissions,
                scope: next.scope,
                disabled: next.disabled,
                version,
                ..current
            },
        })
    }
}

/// Changes a partner and waits until the change holds for the next request
/// on every process (`platform::access_cache`).
async fn change_partner(
    pool: &Pool,
    actor: &Actor,
    id: Uuid,
    change: PartnerChange,
) -> Result<PartnerRow, AdminError> {
    let changed = run(pool, actor, &ChangePartner { id, change }).await?;
    tracing::info!(partner = %id, version = changed.version, "partner changed");
    let db = pool.get().await?;
    platform::access_cache::await_holders(&db)
        .await
        .map_err(|e| AdminError::Infra(e.into()))?;
    Ok(changed)
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
    let change = PartnerChange::Access {
        permissions,
        clients,
        locations,
    };
    change_partner(pool, actor, id, change).await
}

/// Replaces a partner's secret: older tokens stop working at once.
pub async fn rotate_secret(
    pool: &Pool,
    actor: &Actor,
    id: Uuid,
) -> Result<Credentials, AdminError> {
    let secret = generate_secret();
    let secret_hash = hash_for(&secret).await?;
    let changed = change_partner(pool, actor, id, PartnerChange::Rotate { secret_hash }).await?;
    Ok(Credentials {
        partner_id: id,
        client_id: changed.client_id,
        client_secret: secret.expose().clone(),
    })
}

/// Disables a partner: its tokens stop working at once.
pub async fn disable_partner(
    pool: &Pool,
    actor: &Actor,
    id: Uuid,
) -> Result<PartnerRow, AdminError> {
    change_partner(pool, actor, id, PartnerChange::Disable).await
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
pub struct DefineCatalogTest(pub domain::catalog::CatalogTest);

impl Operation for DefineCatalogTest {
    type Output = Defined;
    type Error = AdminError;
    async fn decide(&self, tx: &Transaction<'_>) -> Result<Decision<Defined>, AdminError> {
        use domain::catalog::{self, CatalogEvent};
        let def = &self.0;
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
        let mut writes = Writes::default();
        let Some(event) = catalog::define_test(def.clone(), existing.as_ref().map(|(d, _)| d))?
        else {
            return Ok(Decision {
                writes,
                output: Defined::Unchanged,
            });
        };
        let version = existing.as_ref().map_or(1, |(_, v)| v + 1);
        writes.event(catalog::catalog_stream_id(&def.code), version, &event);
        writes.rows.push(Row::CatalogTest {
            code: def.code.clone(),
            definition: serde_json::to_value(def).map_err(anyhow::Error::from)?,
            version,
        });
        Ok(Decision {
            writes,
            output: match event {
                CatalogEvent::CatalogTestDefined(_) => Defined::Defined,
                CatalogEvent::CatalogTestRevised(_) => Defined::Revised,
            },
        })
    }
}

/// Defines a catalog test (see [`DefineCatalogTest`]).
pub async fn define_catalog_test(
    pool: &Pool,
    actor: &Actor,
    def: domain::catalog::CatalogTest,
) -> Result<Defined, AdminError> {
    run(pool, actor, &DefineCatalogTest(def)).await
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
