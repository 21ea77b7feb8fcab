//! What each event does to the read model rows. Every function is
//! idempotent per (stream, version): [`apply`] skips an event whose version
//! the stream already has.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use contract::order_view::OrderView;
use contract::views::PatientView;
use deadpool_postgres::Transaction;
use domain::account::AccountEvent;
use domain::catalog::{self, CatalogEvent};
use domain::event::{DomainEvent, StreamKind};
use domain::order::{self, Order, OrderEvent, OrderStatus, Priority};
use domain::patient::{self, Address, Patient, PatientEvent, Sex};
use domain::reference::{self, ClientEvent, LocationEvent, Partner, PartnerEvent};
use platform::db::Cached;
use platform::envelope::Envelope;
use uuid::Uuid;

use crate::history::History;

/// The applied version of every stream a batch touches: read once before
/// the batch, written once after it (instead of a read and a write per
/// event).
#[derive(Debug, Default)]
pub struct Versions {
    applied: HashMap<Uuid, i64>,
    changed: HashSet<Uuid>,
}

impl Versions {
    /// Loads the applied versions of `streams`.
    pub async fn load(tx: &Transaction<'_>, streams: &[Uuid]) -> anyhow::Result<Versions> {
        let applied = tx
            .query_cached(
                "SELECT stream_id, version FROM stream_versions WHERE stream_id = ANY($1)",
                &[&streams],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(Versions {
            applied,
            changed: HashSet::new(),
        })
    }

    /// Writes the versions the batch advanced.
    pub async fn save(&self, tx: &Transaction<'_>) -> anyhow::Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let (ids, versions): (Vec<Uuid>, Vec<i64>) =
            self.changed.iter().map(|s| (*s, self.applied[s])).unzip();
        tx.execute_cached(
            "INSERT INTO stream_versions (stream_id, version) \
             SELECT * FROM unnest($1::uuid[], $2::bigint[]) \
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version",
            &[&ids, &versions],
        )
        .await?;
        Ok(())
    }
}

/// Applies one event inside the batch's transaction; a patient or order
/// event also adds its row to `history`.
pub async fn apply(
    tx: &Transaction<'_>,
    versions: &mut Versions,
    history: &mut History,
    env: &Envelope,
) -> anyhow::Result<()> {
    let applied: Option<i64> = versions.applied.get(&env.stream_id).copied();
    if applied.is_some_and(|v| v >= env.version) {
        return Ok(());
    }
    if let Some(v) = applied {
        if env.version != v + 1 {
            tracing::error!(
                stream = %env.stream_id, applied = v, got = env.version,
                "gap in a stream's versions; applying anyway"
            );
        }
    }
    let data = env.data.clone();
    match StreamKind::parse(&env.stream_type) {
        Some(StreamKind::Patient) => {
            let event = PatientEvent::from_parts(&env.event_type, data)?;
            if !patient_event(tx, history, env, event, applied.is_some()).await? {
                // Leave the stream's version alone so that the missing
                // registration still applies when it arrives.
                return Ok(());
            }
        }
        Some(StreamKind::Account) => {
            let AccountEvent::PatientAccountInvited(e) =
                AccountEvent::from_parts(&env.event_type, data)?;
            tx.execute_cached(
                "INSERT INTO accounts (account_id, patient_id, status, version, created_at) \
                 VALUES ($1, $2, 'invited', $3, $4) ON CONFLICT (account_id) DO NOTHING",
                &[&e.account_id, &e.patient_id, &env.version, &env.occurred_at],
            )
            .await?;
            history.record(
                env,
                None,
                serde_json::json!({"accountID": e.account_id, "patientID": e.patient_id, "status": "invited"}),
            );
        }
        Some(StreamKind::Client) => {
            let ClientEvent::ClientRegistered(e) = ClientEvent::from_parts(&env.event_type, data)?;
            tx.execute_cached(
                "INSERT INTO clients (client_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&e.client_id, &e.name],
            )
            .await?;
        }
        Some(StreamKind::Location) => {
            let LocationEvent::LocationRegistered(e) =
                LocationEvent::from_parts(&env.event_type, data)?;
            tx.execute_cached(
                "INSERT INTO locations (location_id, client_id, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&e.location_id, &e.client_id, &e.name],
            )
            .await?;
        }
        Some(StreamKind::Partner) => {
            partner_event(tx, env, PartnerEvent::from_parts(&env.event_type, data)?).await?
        }
        Some(StreamKind::Order) => {
            let event = OrderEvent::from_parts(&env.event_type, data)?;
            if !order_event(tx, history, env, event, applied.is_some()).await? {
                return Ok(());
            }
        }
        Some(StreamKind::Catalog) => {
            let event = CatalogEvent::from_parts(&env.event_type, data)?;
            if let Some(def) = catalog::apply(None, &event) {
                tx.execute_cached(
                    "INSERT INTO catalog_tests (code, definition, version) VALUES ($1, $2, $3) \
                     ON CONFLICT (code) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version",
                    &[&def.code, &serde_json::to_value(&def)?, &env.version],
                )
                .await?;
            }
        }
        None => {
            tracing::warn!(stream_type = %env.stream_type, "skipping an event of an unknown stream type");
        }
    }
    versions.applied.insert(env.stream_id, env.version);
    versions.changed.insert(env.stream_id);
    Ok(())
}

/// Applies a patient event; `false` when it cannot apply (an update of a
/// patient whose registration has not been applied).
async fn patient_event(
    tx: &Transaction<'_>,
    history: &mut History,
    env: &Envelope,
    event: PatientEvent,
    known: bool,
) -> anyhow::Result<bool> {
    // A stream with no applied version has no row yet (rows and versions
    // commit together): nothing to load.
    let current = if known {
        load_patient(tx, env.stream_id).await?
    } else {
        None
    };
    let (before, created_at) = Loaded::before(&current, env, |p, c, u| {
        PatientView::from_state(p, None, c, u)
    })?;
    let Some(next) = patient::apply(current.map(|c| c.state), &event) else {
        tracing::error!(
            stream = %env.stream_id,
            version = env.version,
            "patient update before registration; skipped"
        );
        return Ok(false);
    };
    let address = next
        .address
        .as_ref()
        .map(serde_json::to_value)
        .transpose()?;
    tx.execute_cached(
        "INSERT INTO patients (patient_id, client_id, location_id, external_patient_id, first_name, \
         last_name, date_of_birth, sex, email, phone, address, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
         ON CONFLICT (patient_id) DO UPDATE SET location_id = EXCLUDED.location_id, \
         external_patient_id = EXCLUDED.external_patient_id, first_name = EXCLUDED.first_name, \
         last_name = EXCLUDED.last_name, date_of_birth = EXCLUDED.date_of_birth, sex = EXCLUDED.sex, \
         email = EXCLUDED.email, phone = EXCLUDED.phone, address = EXCLUDED.address, \
         version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        &[
            &next.id,
            &next.client_id,
            &next.location_id,
            &next.external_patient_id,
            &next.first_name,
            &next.last_name,
            &next.date_of_birth,
            &next.sex.as_str(),
            &next.email,
            &next.phone,
            &address,
            &env.version,
            &env.occurred_at,
        ],
    )
    .await?;
    let after = PatientView::from_state(&next, None, created_at, env.occurred_at);
    history.record(env, before.as_ref(), serde_json::to_value(after)?);
    Ok(true)
}

/// A record's state as its read model row holds it, with the row's times.
struct Loaded<T> {
    state: T,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<T> Loaded<T> {
    /// The record's representation before `env` (none for its first event),
    /// for the history row, and its creation time.
    fn before<V: serde::Serialize>(
        current: &Option<Loaded<T>>,
        env: &Envelope,
        view: impl Fn(&T, DateTime<Utc>, DateTime<Utc>) -> V,
    ) -> anyhow::Result<(Option<serde_json::Value>, DateTime<Utc>)> {
        Ok(match current {
            Some(c) => (
                Some(serde_json::to_value(view(
                    &c.state,
                    c.created_at,
                    c.updated_at,
                ))?),
                c.created_at,
            ),
            None => (None, env.occurred_at),
        })
    }
}

async fn load_patient(
    tx: &Transaction<'_>,
    id: uuid::Uuid,
) -> anyhow::Result<Option<Loaded<Patient>>> {
    let Some(r) = tx
        .query_opt_cached(
            "SELECT patient_id, client_id, location_id, external_patient_id, first_name, last_name, \
             date_of_birth, sex, email, phone, address, version, created_at, updated_at \
             FROM patients WHERE patient_id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let address: Option<serde_json::Value> = r.get(10);
    let state = Patient {
        id: r.get(0),
        client_id: r.get(1),
        location_id: r.get(2),
        external_patient_id: r.get(3),
        first_name: r.get(4),
        last_name: r.get(5),
        date_of_birth: r.get::<_, NaiveDate>(6),
        sex: Sex::parse(r.get(7)).unwrap_or(Sex::Unknown),
        email: r.get(8),
        phone: r.get(9),
        address: address.map(serde_json::from_value::<Address>).transpose()?,
        version: r.get(11),
    };
    Ok(Some(Loaded {
        state,
        created_at: r.get(12),
        updated_at: r.get(13),
    }))
}

async fn partner_event(
    tx: &Transaction<'_>,
    env: &Envelope,
    event: PartnerEvent,
) -> anyhow::Result<()> {
    let current = match tx
        .query_opt_cached(
            "SELECT partner_id, name, client_id, permissions, scope, disabled, version FROM partners WHERE partner_id = $1",
            &[&env.stream_id],
        )
        .await?
    {
        Some(r) => Some(Partner {
            id: r.get(0),
            name: r.get(1),
            client_id: r.get(2),
            permissions: platform::auth::permissions_from_db(&r.get::<_, Vec<String>>(3)),
            scope: serde_json::from_value(r.get(4))?,
            disabled: r.get(5),
            version: r.get(6),
        }),
        None => None,
    };
    let Some(next) = reference::apply_partner(current, &event) else {
        return Ok(());
    };
    let perms: Vec<&str> = next.permissions.iter().map(|p| p.as_str()).collect();
    let updated_at: DateTime<Utc> = env.occurred_at;
    tx.execute_cached(
        "INSERT INTO partners (partner_id, name, client_id, permissions, scope, disabled, version, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (partner_id) DO UPDATE SET permissions = EXCLUDED.permissions, scope = EXCLUDED.scope, \
         disabled = EXCLUDED.disabled, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        &[
            &next.id,
            &next.name,
            &next.client_id,
            &perms,
            &serde_json::to_value(&next.scope)?,
            &next.disabled,
            &env.version,
            &updated_at,
        ],
    )
    .await?;
    Ok(())
}

/// Applies an order event; `false` when it cannot apply (a change of an
/// order whose placement has not been applied).
async fn order_event(
    tx: &Transaction<'_>,
    history: &mut History,
    env: &Envelope,
    event: OrderEvent,
    known: bool,
) -> anyhow::Result<bool> {
    let current = if known {
        load_order(tx, env.stream_id).await?
    } else {
        None
    };
    let (before, created_at) = Loaded::before(&current, env, |o, c, u| {
        OrderView::from_state(o, None, c, u)
    })?;
    let Some(next) = order::apply(current.map(|c| c.state), &event) else {
        tracing::error!(stream = %env.stream_id, version = env.version, "order change before placement; skipped");
        return Ok(false);
    };
    if let OrderEvent::ResultsCorrected(c) = &event {
        tx.execute_cached(
            "INSERT INTO order_result_history (order_id, version, reason, previous, corrected_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &next.id,
                &env.version,
                &c.reason,
                &serde_json::to_value(&c.previous)?,
                &env.occurred_at,
            ],
        )
        .await?;
    }
    tx.execute_cached(
        "INSERT INTO orders (order_id, patient_id, client_id, location_id, accession_number, external_order_id, \
         tests, specimen, priority, status, results, cancel_reason, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
         ON CONFLICT (order_id) DO UPDATE SET location_id = EXCLUDED.location_id, \
         external_order_id = EXCLUDED.external_order_id, specimen = EXCLUDED.specimen, \
         priority = EXCLUDED.priority, status = EXCLUDED.status, results = EXCLUDED.results, \
         cancel_reason = EXCLUDED.cancel_reason, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        &[
            &next.id,
            &next.patient_id,
            &next.client_id,
            &next.location_id,
            &next.accession_number,
            &next.external_order_id,
            &serde_json::to_value(&next.tests)?,
            &serde_json::to_value(&next.specimen)?,
            &next.priority.as_str(),
            &next.status.as_str(),
            &serde_json::to_value(&next.results)?,
            &next.cancel_reason,
            &env.version,
            &env.occurred_at,
        ],
    )
    .await?;
    let after = OrderView::from_state(&next, None, created_at, env.occurred_at);
    history.record(env, before.as_ref(), serde_json::to_value(after)?);
    Ok(true)
}

async fn load_order(tx: &Transaction<'_>, id: uuid::Uuid) -> anyhow::Result<Option<Loaded<Order>>> {
    let Some(r) = tx
        .query_opt_cached(
            "SELECT order_id, patient_id, client_id, location_id, accession_number, external_order_id, tests, \
             specimen, priority, status, results, cancel_reason, version, created_at, updated_at \
             FROM orders WHERE order_id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let priority: &str = r.get(8);
    let status: &str = r.get(9);
    let state = Order {
        id: r.get(0),
        patient_id: r.get(1),
        client_id: r.get(2),
        location_id: r.get(3),
        accession_number: r.get(4),
        external_order_id: r.get(5),
        tests: serde_json::from_value(r.get(6))?,
        specimen: serde_json::from_value(r.get(7))?,
        priority: Priority::parse(priority)
            .ok_or_else(|| anyhow::anyhow!("bad priority in read model"))?,
        status: OrderStatus::parse(status)
            .ok_or_else(|| anyhow::anyhow!("bad status in read model"))?,
        results: serde_json::from_value(r.get(10))?,
        cancel_reason: r.get(11),
        version: r.get(12),
    };
    Ok(Some(Loaded {
        state,
        created_at: r.get(13),
        updated_at: r.get(14),
    }))
}
