//! What each event does to the read model rows. Every function is
//! idempotent per (stream, version): [`apply`] skips an event whose version
//! the stream already has.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use contract::order_view::OrderView;
use contract::views::PatientView;
use deadpool_postgres::Transaction;
use domain::account::{AccountEvent, AccountStatus};
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

/// The patient and order rows a batch changes: read once before the batch
/// (one statement per table for the streams it already has rows of),
/// changed in memory by each event, and written once after it (one
/// multi-row statement per table), instead of a read and a write per event.
#[derive(Default)]
pub struct Rows {
    patients: HashMap<Uuid, Loaded<Patient>>,
    orders: HashMap<Uuid, Loaded<Order>>,
    changed_patients: HashSet<Uuid>,
    changed_orders: HashSet<Uuid>,
}

impl Rows {
    /// Loads the rows of the patient and order streams in `envelopes` that
    /// `versions` says have rows (rows and versions commit together).
    pub async fn load(
        tx: &Transaction<'_>,
        versions: &Versions,
        envelopes: &[Envelope],
    ) -> anyhow::Result<Rows> {
        let known = |kind: StreamKind| -> Vec<Uuid> {
            let ids: HashSet<Uuid> = envelopes
                .iter()
                .filter(|e| StreamKind::parse(&e.stream_type) == Some(kind))
                .filter(|e| versions.applied.contains_key(&e.stream_id))
                .map(|e| e.stream_id)
                .collect();
            ids.into_iter().collect()
        };
        let mut rows = Rows::default();
        let patients = known(StreamKind::Patient);
        if !patients.is_empty() {
            for r in tx
                .query_cached(
                    "SELECT patient_id, client_id, location_id, external_patient_id, first_name, \
                     last_name, date_of_birth, sex, email, phone, address, version, created_at, \
                     updated_at FROM patients WHERE patient_id = ANY($1)",
                    &[&patients],
                )
                .await?
            {
                let loaded = patient_row(&r)?;
                rows.patients.insert(loaded.state.id, loaded);
            }
        }
        let orders = known(StreamKind::Order);
        if !orders.is_empty() {
            for r in tx
                .query_cached(
                    "SELECT order_id, patient_id, client_id, location_id, accession_number, \
                     external_order_id, tests, specimen, priority, status, results, cancel_reason, \
                     version, created_at, updated_at FROM orders WHERE order_id = ANY($1)",
                    &[&orders],
                )
                .await?
            {
                let loaded = order_row(&r)?;
                rows.orders.insert(loaded.state.id, loaded);
            }
        }
        Ok(rows)
    }

    /// Writes every row the batch changed.
    pub async fn save(&self, tx: &Transaction<'_>) -> anyhow::Result<()> {
        self.save_patients(tx).await?;
        self.save_orders(tx).await
    }

    async fn save_patients(&self, tx: &Transaction<'_>) -> anyhow::Result<()> {
        let (ids, rows) = changed(&self.patients, &self.changed_patients);
        if ids.is_empty() {
            return Ok(());
        }
        let (version, created, updated) = times(&rows);
        let address = rows
            .iter()
            .map(|r| {
                r.state
                    .address
                    .as_ref()
                    .map(serde_json::to_value)
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        tx.execute_cached(
            "INSERT INTO patients (patient_id, client_id, location_id, external_patient_id, first_name, \
             last_name, date_of_birth, sex, email, phone, address, version, created_at, updated_at) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::date[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::bigint[], \
             $13::timestamptz[], $14::timestamptz[]) \
             ON CONFLICT (patient_id) DO UPDATE SET location_id = EXCLUDED.location_id, \
             external_patient_id = EXCLUDED.external_patient_id, first_name = EXCLUDED.first_name, \
             last_name = EXCLUDED.last_name, date_of_birth = EXCLUDED.date_of_birth, sex = EXCLUDED.sex, \
             email = EXCLUDED.email, phone = EXCLUDED.phone, address = EXCLUDED.address, \
             version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
            &[
                &ids,
                &column(&rows, |p| p.client_id.as_str()),
                &column(&rows, |p| p.location_id.as_str()),
                &column(&rows, |p| p.external_patient_id.as_deref()),
                &column(&rows, |p| p.first_name.as_str()),
                &column(&rows, |p| p.last_name.as_str()),
                &column(&rows, |p| p.date_of_birth),
                &column(&rows, |p| p.sex.as_str()),
                &column(&rows, |p| p.email.as_deref()),
                &column(&rows, |p| p.phone.as_deref()),
                &address,
                &version,
                &created,
                &updated,
            ],
        )
        .await?;
        Ok(())
    }

    async fn save_orders(&self, tx: &Transaction<'_>) -> anyhow::Result<()> {
        let (ids, rows) = changed(&self.orders, &self.changed_orders);
        if ids.is_empty() {
            return Ok(());
        }
        let json = |f: fn(&Order) -> serde_json::Result<serde_json::Value>| {
            rows.iter()
                .map(|r| f(&r.state))
                .collect::<Result<Vec<_>, _>>()
        };
        let (version, created, updated) = times(&rows);
        let tests = json(|o| serde_json::to_value(&o.tests))?;
        let specimen = json(|o| serde_json::to_value(&o.specimen))?;
        let results = json(|o| serde_json::to_value(&o.results))?;
        tx.execute_cached(
            "INSERT INTO orders (order_id, patient_id, client_id, location_id, accession_number, \
             external_order_id, tests, specimen, priority, status, results, cancel_reason, version, \
             created_at, updated_at) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::jsonb[], $8::jsonb[], $9::text[], $10::text[], $11::jsonb[], $12::text[], \
             $13::bigint[], $14::timestamptz[], $15::timestamptz[]) \
             ON CONFLICT (order_id) DO UPDATE SET location_id = EXCLUDED.location_id, \
             external_order_id = EXCLUDED.external_order_id, specimen = EXCLUDED.specimen, \
             priority = EXCLUDED.priority, status = EXCLUDED.status, results = EXCLUDED.results, \
             cancel_reason = EXCLUDED.cancel_reason, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
            &[
                &ids,
                &column(&rows, |o| o.patient_id),
                &column(&rows, |o| o.client_id.as_str()),
                &column(&rows, |o| o.location_id.as_str()),
                &column(&rows, |o| o.accession_number.as_str()),
                &column(&rows, |o| o.external_order_id.as_deref()),
                &tests,
                &specimen,
                &column(&rows, |o| o.priority.as_str()),
                &column(&rows, |o| o.status.as_str()),
                &results,
                &column(&rows, |o| o.cancel_reason.as_deref()),
                &version,
                &created,
                &updated,
            ],
        )
        .await?;
        Ok(())
    }
}

/// The ids a batch changed, in order (so that two batches lock rows in the
/// same order), and their rows.
fn changed<'a, T>(
    rows: &'a HashMap<Uuid, Loaded<T>>,
    ids: &HashSet<Uuid>,
) -> (Vec<Uuid>, Vec<&'a Loaded<T>>) {
    let mut ids: Vec<Uuid> = ids.iter().copied().collect();
    ids.sort_unstable();
    let rows = ids.iter().map(|id| &rows[id]).collect();
    (ids, rows)
}

/// One column of a multi-row statement: `f` of each row's state.
fn column<'a, T, U>(rows: &[&'a Loaded<T>], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(|r| f(&r.state)).collect()
}

/// The version, creation and change time columns.
fn times<T>(rows: &[&Loaded<T>]) -> (Vec<i64>, Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) {
    (
        rows.iter().map(|r| r.version).collect(),
        rows.iter().map(|r| r.created_at).collect(),
        rows.iter().map(|r| r.updated_at).collect(),
    )
}

/// Applies one event inside the batch's transaction; a patient or order
/// event also adds its row to `history`.
pub async fn apply(
    tx: &Transaction<'_>,
    versions: &mut Versions,
    rows: &mut Rows,
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
            if !patient_event(rows, history, env, event)? {
                // Leave the stream's version alone so that the missing
                // registration still applies when it arrives.
                return Ok(());
            }
        }
        Some(StreamKind::Account) => match AccountEvent::from_parts(&env.event_type, data)? {
            AccountEvent::PatientAccountInvited(e) => {
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
            event => {
                let status = account_status(&event).map(AccountStatus::as_str);
                let row = tx
                    .query_opt(
                        "UPDATE accounts a SET status = COALESCE($2, a.status), version = $3 \
                         FROM (SELECT status FROM accounts WHERE account_id = $1) old \
                         WHERE a.account_id = $1 RETURNING a.patient_id, old.status, a.status",
                        &[&env.stream_id, &status, &env.version],
                    )
                    .await?;
                if let Some(row) = row {
                    let state = |status: &str| serde_json::json!({"accountID": env.stream_id, "patientID": row.get::<_, Uuid>(0), "status": status});
                    history.record(env, Some(&state(row.get(1))), state(row.get(2)));
                }
            }
        },
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
            if !order_event(tx, rows, history, env, event).await? {
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

/// Applies a patient event to its row in `rows`; `false` when it cannot
/// apply (an update of a patient whose registration has not been applied).
fn patient_event(
    rows: &mut Rows,
    history: &mut History,
    env: &Envelope,
    event: PatientEvent,
) -> anyhow::Result<bool> {
    let current = rows.patients.remove(&env.stream_id);
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
    let after = PatientView::from_state(&next, None, created_at, env.occurred_at);
    history.record(env, before.as_ref(), serde_json::to_value(after)?);
    rows.patients
        .insert(env.stream_id, Loaded::changed(next, created_at, env));
    rows.changed_patients.insert(env.stream_id);
    Ok(true)
}

/// A record's state as its read model row holds it, with the row's times.
struct Loaded<T> {
    state: T,
    /// The row's version: the last event applied to it.
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<T> Loaded<T> {
    /// The row after `env` made `state` of it.
    fn changed(state: T, created_at: DateTime<Utc>, env: &Envelope) -> Loaded<T> {
        Loaded {
            state,
            version: env.version,
            created_at,
            updated_at: env.occurred_at,
        }
    }

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

fn patient_row(r: &tokio_postgres::Row) -> anyhow::Result<Loaded<Patient>> {
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
    Ok(Loaded {
        state,
        version: r.get(11),
        created_at: r.get(12),
        updated_at: r.get(13),
    })
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

/// Applies an order event to its row in `rows`; `false` when it cannot
/// apply (a change of an order whose placement has not been applied).
async fn order_event(
    tx: &Transaction<'_>,
    rows: &mut Rows,
    history: &mut History,
    env: &Envelope,
    event: OrderEvent,
) -> anyhow::Result<bool> {
    let current = rows.orders.remove(&env.stream_id);
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
    let after = OrderView::from_state(&next, None, created_at, env.occurred_at);
    history.record(env, before.as_ref(), serde_json::to_value(after)?);
    rows.orders
        .insert(env.stream_id, Loaded::changed(next, created_at, env));
    rows.changed_orders.insert(env.stream_id);
    Ok(true)
}

fn order_row(r: &tokio_postgres::Row) -> anyhow::Result<Loaded<Order>> {
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
    Ok(Loaded {
        state,
        version: r.get(12),
        created_at: r.get(13),
        updated_at: r.get(14),
    })
}

/// The status an account event leaves (none when it keeps the status).
fn account_status(event: &AccountEvent) -> Option<AccountStatus> {
    match event {
        AccountEvent::PatientAccountInvited(_) => Some(AccountStatus::Invited),
        AccountEvent::ActivationLinkRequested(_)
        | AccountEvent::PatientAccountPasswordChanged(_)
        | AccountEvent::LoginChangeRequested(_)
        | AccountEvent::PatientAccountLoginChanged(_)
        | AccountEvent::InvitationRedirected(_) => None,
        AccountEvent::PatientAccountActivated(_) | AccountEvent::PatientAccountUnlocked(_) => {
            Some(AccountStatus::Active)
        }
        AccountEvent::PatientAccountLocked(_) => Some(AccountStatus::Locked),
        AccountEvent::PatientAccountDisabled(_) => Some(AccountStatus::Disabled),
    }
}
