//! The access log: every read and every refused read of a patient or an
//! order, durable before its answer leaves.
//!
//! Handlers note what they read in an [`Access`] (begun by
//! [`AccessLog::begin`]); [`AccessLog::answer`] writes it and only then lets
//! the answer go. Reads that arrive together are committed together: the
//! writer takes every entry waiting in the queue and inserts them in one
//! statement and one commit (group commit), so a point read costs a queue
//! hop, not a transaction of its own.
//!
//! A commit's cost is mostly fixed (the WAL flush alone costs Postgres more
//! CPU than inserting a dozen rows), so under load the writer gathers before
//! it commits: while reads that began are still being served, it waits until
//! it holds twice as many entries as there are reads still being served (or
//! [`GATHER`] has passed). A read alone, or the last of a burst, is committed
//! at once.
//!
//! The writer's first commit holding an entry of a minute also notes in
//! `access_log_minutes` where that minute begins in commit order, so that
//! a `since` filter scans the log from there rather than from its start.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use contract::caller::Caller;
use contract::problem::{ApiError, Problem};
use deadpool_postgres::Pool;
use domain::access::Permission;
use domain::event::StreamKind;
use domain::validation::FieldError;
use platform::db::Cached;
use platform::envelope::format_time;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::conditions::Conditions;
use crate::patients::{json_response, scope_list};
use crate::{paging, QueryState};

/// Entries written in one statement at most.
const BATCH: usize = 2000;
/// Longest a queued entry waits for reads still being served before its
/// commit starts.
const GATHER: Duration = Duration::from_millis(5);

/// A logged read endpoint, by its route template (never a raw path or a
/// query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v1/patients/{patientID}`.
    GetPatient,
    /// `GET /v1/patients/{patientID}?asOf=`.
    PatientAsOf,
    /// `GET /v1/patients/{patientID}/history`.
    PatientHistory,
    /// `GET /v1/patients`.
    ListPatients,
    /// `POST /v1/patients/search`.
    SearchPatients,
    /// `GET /v1/orders/{orderID}`.
    GetOrder,
    /// `GET /v1/orders/{orderID}?asOf=`.
    OrderAsOf,
    /// `GET /v1/orders/{orderID}/history`.
    OrderHistory,
    /// `GET /v1/orders`.
    ListOrders,
    /// `POST /v1/orders/search`.
    SearchOrders,
}

impl Endpoint {
    /// The endpoint as the access log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GetPatient => "GET /v1/patients/{patientID}",
            Endpoint::PatientAsOf => "GET /v1/patients/{patientID}?asOf",
            Endpoint::PatientHistory => "GET /v1/patients/{patientID}/history",
            Endpoint::ListPatients => "GET /v1/patients",
            Endpoint::SearchPatients => "POST /v1/patients/search",
            Endpoint::GetOrder => "GET /v1/orders/{orderID}",
            Endpoint::OrderAsOf => "GET /v1/orders/{orderID}?asOf",
            Endpoint::OrderHistory => "GET /v1/orders/{orderID}/history",
            Endpoint::ListOrders => "GET /v1/orders",
            Endpoint::SearchOrders => "POST /v1/orders/search",
        }
    }

    /// The kind of record the endpoint reads.
    pub fn record_kind(self) -> StreamKind {
        match self {
            Endpoint::GetPatient
            | Endpoint::PatientAsOf
            | Endpoint::PatientHistory
            | Endpoint::ListPatients
            | Endpoint::SearchPatients => StreamKind::Patient,
            _ => StreamKind::Order,
        }
    }
}

/// A record one read touched: its id and, when the read found it, its
/// client and location (which decide which auditors see the entry).
#[derive(Debug, Clone)]
struct Touched {
    id: Uuid,
    client_id: Option<String>,
    location_id: Option<String>,
}

/// What one request read or tried to read, noted by its handler.
#[derive(Debug)]
pub struct Access {
    endpoint: Endpoint,
    partner: Option<Uuid>,
    records: Vec<Touched>,
    serving: Option<Serving>,
}

/// A read being served whose entry is not queued yet (counted in the
/// log's `serving` until dropped).
#[derive(Debug)]
struct Serving(Arc<AtomicUsize>);

impl Serving {
    fn start(serving: &Arc<AtomicUsize>) -> Serving {
        serving.fetch_add(1, Ordering::Relaxed);
        Serving(serving.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Access {
    /// The endpoint being served.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The record the request names, if it names one by a valid id.
    pub fn target(&self) -> Option<Uuid> {
        self.records.first().map(|t| t.id)
    }

    /// The authenticated caller (requests that never authenticate are not
    /// logged: they name no partner).
    pub fn caller(&mut self, caller: &Caller) {
        self.partner = Some(caller.partner_id);
    }

    /// Notes the record a request names by the id in its path (noted even
    /// when the request is refused before the record is looked up; an id
    /// that is no UUID names no record).
    pub fn naming(mut self, id: &str) -> Self {
        if let Ok(id) = id.parse() {
            self.records.push(Touched {
                id,
                client_id: None,
                location_id: None,
            });
        }
        self
    }

    /// The named record was found at `client`/`location`.
    pub fn found(&mut self, client: &str, location: &str) {
        if let Some(t) = self.records.first_mut() {
            t.client_id = Some(client.to_string());
            t.location_id = Some(location.to_string());
        }
    }

    /// A record a list or search answered with.
    pub fn listed(&mut self, id: Uuid, client: &str, location: &str) {
        self.records.push(Touched {
            id,
            client_id: Some(client.to_string()),
            location_id: Some(location.to_string()),
        });
    }
}

struct Pending {
    at: DateTime<Utc>,
    access: Access,
    status: i16,
    done: oneshot::Sender<bool>,
}

/// The access log's writer: a handle to its queue.
#[derive(Clone)]
pub struct AccessLog {
    queue: Option<mpsc::Sender<Pending>>,
    /// Reads begun whose entries are not queued yet.
    serving: Arc<AtomicUsize>,
}

impl AccessLog {
    /// Starts the writer task, with a connection of its own to the write
    /// schema (where the log lives) at `url`, so that a commit never waits
    /// for a pooled connection behind the requests it logs. It ends when the
    /// last handle is dropped.
    pub fn start(url: &str, write_schema: &str) -> Result<AccessLog, platform::db::DbError> {
        let pool = platform::db::pool(url, write_schema, 1)?;
        let (queue, rx) = mpsc::channel::<Pending>(16 * BATCH);
        let serving = Arc::default();
        tokio::spawn(writer(pool, rx, Arc::clone(&serving)));
        Ok(AccessLog {
            queue: Some(queue),
            serving,
        })
    }

    /// A log that writes nothing: only `lis-bench` builds one, to measure
    /// what the log costs a read; a serving process never does.
    pub fn off() -> AccessLog {
        AccessLog {
            queue: None,
            serving: Arc::default(),
        }
    }

    /// Begins noting a read of `endpoint` (the writer waits for begun reads
    /// when it gathers a commit).
    pub fn begin(&self, endpoint: Endpoint) -> Access {
        Access {
            endpoint,
            partner: None,
            records: Vec::new(),
            serving: self.queue.as_ref().map(|_| Serving::start(&self.serving)),
        }
    }

    /// Logs what `access` read with the answer `result` gives, then returns
    /// that answer; if the entry cannot be made durable, the answer is a 503
    /// instead (a read is never served unlogged).
    pub async fn answer(&self, mut access: Access, result: Result<Response, ApiError>) -> Response {
        let response = result.unwrap_or_else(IntoResponse::into_response);
        drop(access.serving.take());
        let Some(queue) = &self.queue else {
            return response;
        };
        if access.partner.is_none() || access.records.is_empty() {
            return response;
        }
        let (done, written) = oneshot::channel();
        let pending = Pending {
            at: Utc::now(),
            access,
            status: response.status().as_u16() as i16,
            done,
        };
        let durable = queue.send(pending).await.is_ok() && written.await.unwrap_or(false);
        if durable {
            response
        } else {
            ApiError::Unavailable(
                "The access log could not be written.",
                Duration::from_secs(1),
            )
            .into_response()
        }
    }
}

async fn writer(pool: Pool, mut rx: mpsc::Receiver<Pending>, serving: Arc<AtomicUsize>) {
    let mut noted = Noted::default();
    while let Some(batch) = gather(&mut rx, &serving).await {
        let ok = match insert(&pool, &batch, &mut noted).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %platform::telemetry::cause(e.as_ref()), entries = batch.len(), "access log write failed");
                false
            }
        };
        platform::metrics::ACCESS_LOG_BATCH.observe(batch.len() as f64);
        for p in batch {
            let _ = p.done.send(ok);
        }
    }
}

/// The minute (UTC) an entry stamped `at` belongs to in
/// `access_log_minutes`.
fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// The minutes this writer has noted in `access_log_minutes` since it
/// started. Its commits follow one another, so every later entry of a noted
/// minute has a greater transaction id than the commit that noted it: only
/// a minute's first commit here needs to note it.
#[derive(Default)]
struct Noted(BTreeSet<DateTime<Utc>>);

impl Noted {
    /// Minutes of `batch` not noted yet, in order (nothing allocated when
    /// every one is, as for all but a minute's first commit).
    fn missing(&self, batch: &[Pending]) -> Vec<DateTime<Utc>> {
        let mut missing = Vec::new();
        for minute in batch.iter().map(|p| minute_of(p.at)) {
            if !self.0.contains(&minute) && !missing.contains(&minute) {
                missing.push(minute);
            }
        }
        missing.sort();
        missing
    }

    /// `minutes` were committed; forgets those over an hour older than the
    /// newest (noting one again costs a statement, never a wrong answer).
    fn add(&mut self, minutes: Vec<DateTime<Utc>>) {
        self.0.extend(minutes);
        if let Some(newest) = self.0.last().copied() {
            self.0 = self.0.split_off(&(newest - TimeDelta::hours(1)));
        }
    }
}

/// The next commit's entries: the first to arrive and every one queued
/// behind it, and then, while fewer than twice as many are gathered as
/// reads are still being served and [`GATHER`] has not passed since the
/// first, those that arrive meanwhile. `None` once every handle is dropped.
async fn gather(rx: &mut mpsc::Receiver<Pending>, serving: &AtomicUsize) -> Option<Vec<Pending>> {
    let first = rx.recv().await?;
    let until = tokio::time::Instant::now() + GATHER;
    let mut rows = first.access.records.len();
    let mut batch = vec![first];
    loop {
        while rows < BATCH {
            match rx.try_recv() {
                Ok(p) => {
                    rows += p.access.records.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        if rows >= BATCH || batch.len() >= 2 * serving.load(Ordering::Relaxed) {
            return Some(batch);
        }
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(p)) => {
                rows += p.access.records.len();
                batch.push(p);
            }
            Ok(None) | Err(_) => return Some(batch),
        }
    }
}

async fn insert(pool: &Pool, batch: &[Pending], noted: &mut Noted) -> anyhow::Result<()> {
    let rows: usize = batch.iter().map(|p| p.access.records.len()).sum();
    let mut at = Vec::with_capacity(rows);
    let mut partner = Vec::with_capacity(rows);
    let mut kind = Vec::with_capacity(rows);
    let mut record = Vec::with_capacity(rows);
    let mut client = Vec::with_capacity(rows);
    let mut location = Vec::with_capacity(rows);
    let mut endpoint = Vec::with_capacity(rows);
    let mut status = Vec::with_capacity(rows);
    for p in batch {
        let Some(partner_id) = p.access.partner else {
            continue;
        };
        for t in &p.access.records {
            at.push(p.at);
            partner.push(partner_id);
            kind.push(p.access.endpoint.record_kind().as_str());
            record.push(t.id);
            client.push(t.client_id.as_deref());
            location.push(t.location_id.as_deref());
            endpoint.push(p.access.endpoint.as_str());
            status.push(p.status);
        }
    }
    const INSERT: &str =
        "INSERT INTO access_log (at, partner_id, record_type, record_id, client_id, \
        location_id, endpoint, status) SELECT * FROM unnest($1::timestamptz[], $2::uuid[], \
        $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int2[])";
    let minutes = noted.missing(batch);
    let db = pool.get().await?;
    // One statement, committed on its own: one round trip and one WAL
    // flush for every read that arrived together.
    if minutes.is_empty() {
        db.execute_cached(
            INSERT,
            &[
                &at, &partner, &kind, &record, &client, &location, &endpoint, &status,
            ],
        )
        .await?;
    } else {
        // A minute's first commit here also notes where the minute begins
        // (the earlier of this commit and what another writer noted).
        db.execute_cached(
            &format!(
                "WITH logged AS ({INSERT}) \
                 INSERT INTO access_log_minutes (minute, first_txid) \
                 SELECT m, pg_current_xact_id() FROM unnest($9::timestamptz[]) m \
                 ON CONFLICT (minute) DO UPDATE SET first_txid = excluded.first_txid \
                 WHERE access_log_minutes.first_txid > excluded.first_txid"
            ),
            &[
                &at, &partner, &kind, &record, &client, &location, &endpoint, &status, &minutes,
            ],
        )
        .await?;
        noted.add(minutes);
    }
    Ok(())
}

/// The current client and location of a record, as the read model has it.
pub(crate) async fn placed(
    app: &QueryState,
    kind: StreamKind,
    id: Uuid,
) -> Result<Option<(String, String)>, ApiError> {
    let sql = match kind {
        StreamKind::Patient => "SELECT client_id, location_id FROM patients WHERE patient_id = $1",
        _ => "SELECT client_id, location_id FROM orders WHERE order_id = $1",
    };
    let db = app.read().get().await?;
    Ok(db
        .query_opt_cached(sql, &[&id])
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// One entry of the access log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    /// When the answer was given (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub at: String,
    /// The partner that read or tried to read.
    #[serde(rename = "partnerID")]
    pub partner_id: Uuid,
    /// `patient` or `order`.
    pub record_type: String,
    /// The record read, or named by a refused read.
    #[serde(rename = "recordID")]
    pub record_id: Uuid,
    /// The record's client, when the read found the record.
    #[serde(rename = "clientID")]
    pub client_id: Option<String>,
    /// The record's location, when the read found the record.
    #[serde(rename = "locationID")]
    pub location_id: Option<String>,
    /// The endpoint, as a route template (never a query string).
    pub endpoint: String,
    /// The answer's HTTP status.
    pub status: u16,
}

/// A page of the access log, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPage {
    /// The entries of this page.
    pub items: Vec<AccessEntry>,
    /// Pass it as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The query parameters of `GET /v1/access-log`.
#[derive(Debug, Default, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AccessQuery {
    /// Only reads of this patient or order.
    #[serde(rename = "recordID")]
    pub record_id: Option<Uuid>,
    /// Only reads by this partner.
    #[serde(rename = "partnerID")]
    pub partner_id: Option<Uuid>,
    /// Only reads at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only reads before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Default)]
struct Filters {
    record_id: Option<Uuid>,
    partner_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: i64,
    /// Where the previous page ended: (transaction id, entry number).
    after: Option<(u64, i64)>,
}

fn parse_filters(query: Option<&str>) -> Result<Filters, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::malformed("The query string is malformed."))?;
    let mut f = Filters {
        limit: paging::DEFAULT_LIMIT,
        ..Filters::default()
    };
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in pairs {
        if !seen.insert(name.clone()) {
            errors.push(FieldError::new(name, "repeated", "give this filter once"));
            continue;
        }
        let bad = |code: &'static str, msg: &str| FieldError::new(name.clone(), code, msg);
        let time = |v: &str| {
            DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        match name.as_str() {
            "recordID" => match value.parse() {
                Ok(id) => f.record_id = Some(id),
                Err(_) => errors.push(bad("invalid", "must be a UUID")),
            },
            "partnerID" => match value.parse() {
                Ok(id) => f.partner_id = Some(id),
                Err(_) => errors.push(bad("invalid", "must be a UUID")),
            },
            "since" => match time(&value) {
                Some(t) => f.since = Some(t),
                None => errors.push(bad("invalid", "must be an RFC 3339 timestamp")),
            },
            "until" => match time(&value) {
                Some(t) => f.until = Some(t),
                None => errors.push(bad("invalid", "must be an RFC 3339 timestamp")),
            },
            _ if paging::param(&name, &value, &mut f.limit, &mut f.after, &mut errors) => {}
            _ => errors.push(bad("unknown_field", "this filter is not recognised")),
        }
    }
    if errors.is_empty() {
        Ok(f)
    } else {
        Err(ApiError::unprocessable(errors))
    }
}

/// `GET /v1/access-log`.
#[utoipa::path(
    get,
    path = "/v1/access-log",
    operation_id = "getAccessLog",
    tag = "history",
    summary = "Who read which record",
    description = "Every read and every refused read of a patient or an order: who (the \
        partner), which record, when, through which endpoint and with what answer, oldest \
        first, a page at a time. Lists and searches log one entry per record they answered \
        with. Only entries of records in the caller's scope are shown; a refused read of a \
        record that does not exist belongs to no client and is shown only to callers whose \
        scope is every client and location. Query strings are never logged. Requires \
        `audit:read`.",
    params(AccessQuery),
    security(("bearer" = []), ("oauth2" = ["audit:read"])),
    responses(
        (status = 200, description = "A page of the access log.", body = AccessPage),
        (status = 400, description = "The query string is malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The partner lacks `audit:read`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter, every one listed in `errors`.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(app): State<QueryState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let caller = app.gate.authenticate(&headers).await?;
        caller.require(Permission::AuditRead)?;
        let f = parse_filters(query.as_deref())?;
        let clients = scope_list(&caller.scope().clients);
        let locations = scope_list(&caller.scope().locations);
        let wanted = f.limit + 1;
        let after_txid = f.after.map(|(txid, _)| txid.to_string());
        let since_minute = f.since.map(minute_of);
        let mut w = Conditions::default();
        w.when(&clients, |p| format!("client_id = ANY({p})"))
            .when(&locations, |p| format!("location_id = ANY({p})"))
            .when(&f.record_id, |p| format!("record_id = {p}"))
            .when(&f.partner_id, |p| format!("partner_id = {p}"))
            .when(&f.since, |p| format!("at >= {p}"))
            .when(&f.until, |p| format!("at < {p}"))
            // Entries stamped since then are no earlier in commit order than
            // their minute's first commit: the scan starts there, not at the
            // log's beginning (no minute noted: nothing that recent).
            .when(&since_minute, |p| {
                format!(
                    "txid >= (SELECT first_txid FROM access_log_minutes WHERE minute >= {p} \
                     ORDER BY first_txid LIMIT 1)"
                )
            });
        if let (Some(txid), Some((_, id))) = (&after_txid, &f.after) {
            let (t, i) = (w.bind(txid), w.bind(id));
            w.and(format!("(txid, id) > ({t}::text::xid8, {i})"));
        }
        // In commit order, and only what no running transaction can still
        // precede: an entry committing late never lands behind a cursor.
        w.and("txid < pg_snapshot_xmin(pg_current_snapshot())".into());
        let limit = w.bind(&wanted);
        let sql = format!(
            "SELECT txid::text AS txid_text, id, at, partner_id, record_type, record_id, client_id, \
             location_id, endpoint, status FROM access_log {} ORDER BY txid, id LIMIT {limit}",
            w.clause()
        );
        let db = app.write.get().await?;
        let rows = db.query_cached(&sql, w.params()).await?;
        let more = rows.len() as i64 > f.limit;
        let items: Vec<AccessEntry> = rows
            .iter()
            .take(f.limit as usize)
            .map(|r| AccessEntry {
                at: format_time(&r.get::<_, DateTime<Utc>>(2)),
                partner_id: r.get(3),
                record_type: r.get(4),
                record_id: r.get(5),
                client_id: r.get(6),
                location_id: r.get(7),
                endpoint: r.get(8),
                status: r.get::<_, i16>(9) as u16,
            })
            .collect();
        let next_cursor = if more {
            rows.get(f.limit as usize - 1)
                .and_then(|r| {
                    let txid: u64 = r.get::<_, String>(0).parse().ok()?;
                    Some(paging::encode(&(txid, r.get::<_, i64>(1))))
                })
        } else {
            None
        };
        Ok::<_, ApiError>(json_response(
            StatusCode::OK,
            &AccessPage { items, next_cursor },
            None,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
