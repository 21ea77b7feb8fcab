//! The one write pipeline. Every partner write is a typed [`Command`];
//! [`serve`] turns a request into one and runs it:
//!
//! 1. authenticate and authorize (401, 403: [`Endpoint::permission`]);
//! 2. find the record the route names, in the caller's scope (404:
//!    [`Target`]);
//! 3. read the body (413, 415, 400), check the ids it names are in scope
//!    (403: [`Endpoint::check_scope`]), parse it into the command
//!    ([`Endpoint::parse`]), collecting every bad field, then `If-Match`
//!    and `Idempotency-Key` (422);
//! 4. in one transaction, retried after a lost race ([`execute`]): replay
//!    an earlier answer to the same `Idempotency-Key`; load the record
//!    again and check `If-Match` (412, when the body had no bad field and
//!    the decision names none); load what the decision needs and
//!    decide in `domain` ([`Command::decide`]); merge the decision's field
//!    errors with the body's; append the events and write the rows they
//!    imply ([`store::write`]); keep the answer for the key; commit;
//! 5. answer ([`Render`]).
//!
//! Handlers only parse, call and render: a new command is a type with its
//! [`Command`] and [`Endpoint`] impls, a domain function, and a line in the
//! router.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use contract::caller::Caller;
use contract::fields::{self, BodyKind, Fields};
use contract::problem::ApiError;
use deadpool_postgres::{GenericClient, Transaction};
use domain::access::{Actor, Permission};
use domain::event::DomainEvent;
use domain::validation::FieldError;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::group_commit::{self, Planned, Work};
use crate::idempotency::{Answer, Idempotency};
use crate::store::{self, CommandMeta, LoadError, WriteError, Writes};
use crate::AppState;

/// Why a command is refused.
#[derive(Debug)]
pub enum Refusal {
    /// Field errors, answered together with the body's.
    Invalid(Vec<FieldError>),
    /// A business refusal (409 and the like); the body's field errors, when
    /// there are some, are answered instead.
    Rejected(ApiError),
    /// An answer given as it is (404, 412, a failure).
    Final(ApiError),
}

impl Refusal {
    /// The answer, given the field errors the body already had. The
    /// domain's error of a field the body layer named already is dropped
    /// (it saw no value there), and so is its "empty" of a list the body
    /// layer found bad elements in (it saw only the good ones).
    fn answer(self, shape: &[FieldError]) -> ApiError {
        match self {
            Refusal::Invalid(errors) => {
                let mut all = shape.to_vec();
                all.extend(errors.into_iter().filter(|d| {
                    !shape.iter().any(|s| {
                        s.field == d.field
                            || (d.code == "empty" && s.field.starts_with(&format!("{}[", d.field)))
                    })
                }));
                match fields::check(all) {
                    Err(e) => e,
                    Ok(()) => ApiError::internal("a refusal without field errors"),
                }
            }
            Refusal::Rejected(_) if !shape.is_empty() => ApiError::unprocessable(shape.to_vec()),
            Refusal::Rejected(e) | Refusal::Final(e) => e,
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Final(e)
    }
}

impl From<tokio_postgres::Error> for Refusal {
    fn from(e: tokio_postgres::Error) -> Self {
        Refusal::Final(e.into())
    }
}

impl From<LoadError> for Refusal {
    fn from(e: LoadError) -> Self {
        Refusal::Final(e.into())
    }
}

/// What a command sees while it decides.
pub struct Cx<'a> {
    /// The command's transaction (reads only: the pipeline writes).
    pub tx: &'a Transaction<'a>,
    /// Who issued it, when.
    pub meta: &'a CommandMeta,
    /// The partner.
    pub caller: &'a Caller,
}

/// A decision: what to write, and what to answer once it is committed.
pub struct Decision<O> {
    /// Events and rows.
    pub writes: Writes,
    /// The answer's content.
    pub output: O,
}

/// A command's answer, rendered before the commit so that the same bytes
/// are kept for a retry with the same `Idempotency-Key`.
pub trait Render {
    /// The HTTP answer.
    fn render(&self) -> Answer;
}

/// A typed write.
pub trait Command: Send + Sync {
    /// What the command acts on: [`New`] for a create, [`Stored`] for an
    /// existing record.
    type Target: Target;
    /// What a committed command answers.
    type Output: Render + Send;
    /// What must happen before the command's transaction, outside it (a
    /// sequence value: `nextval` may take a transaction id, which a group
    /// commit must take only after every read of its decisions).
    fn before<'a>(
        &'a mut self,
        _db: &'a deadpool_postgres::Pool,
    ) -> impl Future<Output = Result<(), ApiError>> + Send + 'a {
        async { Ok(()) }
    }
    /// Loads what the decision needs besides the record and decides in
    /// `domain`.
    fn decide<'a>(
        &'a self,
        cx: &'a Cx<'a>,
        target: &'a <Self::Target as Target>::Current,
    ) -> impl Future<Output = Result<Decision<Self::Output>, Refusal>> + Send + 'a;
}

/// What a command acts on.
pub trait Target: Send + Sync {
    /// The record as loaded (`()` for a create).
    type Current: Send + Sync;
    /// Loads the record `id` names when it exists in `caller`'s scope.
    fn find<'a, C: GenericClient>(
        db: &'a C,
        caller: &'a Caller,
        id: Option<Uuid>,
    ) -> impl Future<Output = Result<Option<Self::Current>, LoadError>> + Send + 'a;
    /// Its version, for `If-Match` (`None` for a create, which ignores it).
    fn version(current: &Self::Current) -> Option<i64>;
}

/// The target of a create.
pub struct New;

impl Target for New {
    type Current = ();
    async fn find<C: GenericClient>(
        _: &C,
        _: &Caller,
        _: Option<Uuid>,
    ) -> Result<Option<()>, LoadError> {
        Ok(Some(()))
    }
    fn version(_: &()) -> Option<i64> {
        None
    }
}

/// An event-sourced record a partner sees by its client and location.
pub trait Record: Sized + Send + Sync + 'static {
    /// Its stream's events.
    type Event: DomainEvent + Send;
    /// Folds its stream.
    fn replay(events: &[Self::Event]) -> Option<Self>;
    /// Its version.
    fn version(&self) -> i64;
    /// Its client and location.
    fn scope(&self) -> (&str, &str);
}

impl Record for domain::patient::Patient {
    type Event = domain::patient::PatientEvent;
    fn replay(events: &[Self::Event]) -> Option<Self> {
        domain::patient::replay(events)
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn scope(&self) -> (&str, &str) {
        (&self.client_id, &self.location_id)
    }
}

impl Record for domain::order::Order {
    type Event = domain::order::OrderEvent;
    fn replay(events: &[Self::Event]) -> Option<Self> {
        domain::order::replay(events)
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn scope(&self) -> (&str, &str) {
        (&self.client_id, &self.location_id)
    }
}

/// A record as a command finds it.
#[derive(Debug, Clone)]
pub struct Current<R> {
    /// Its state.
    pub state: R,
    /// When its first event occurred.
    pub created_at: DateTime<Utc>,
    /// When its last event occurred.
    pub updated_at: DateTime<Utc>,
}

/// Loads a record from its stream (whoever may see it).
pub async fn load<R: Record>(
    db: &impl GenericClient,
    id: Uuid,
) -> Result<Option<Current<R>>, LoadError> {
    let Some(loaded) = store::load::<R::Event>(db, id).await? else {
        return Ok(None);
    };
    Ok(R::replay(&loaded.events).map(|state| Current {
        state,
        created_at: loaded.created_at,
        updated_at: loaded.updated_at,
    }))
}

/// The target of a change to an existing record of kind `R`.
pub struct Stored<R>(std::marker::PhantomData<R>);

impl<R: Record> Target for Stored<R> {
    type Current = Current<R>;
    async fn find<C: GenericClient>(
        db: &C,
        caller: &Caller,
        id: Option<Uuid>,
    ) -> Result<Option<Current<R>>, LoadError> {
        let Some(id) = id else { return Ok(None) };
        Ok(load::<R>(db, id).await?.filter(|c| {
            let (client, location) = c.state.scope();
            caller.sees(client, location)
        }))
    }
    fn version(current: &Current<R>) -> Option<i64> {
        Some(current.state.version())
    }
}

/// How a command's request looks on the wire.
pub trait Endpoint: Command + Sized + 'static {
    /// The permission it needs.
    fn permission() -> Permission;
    /// How its body may come: `None` when it may be left out (an empty body
    /// reads as `{}`), else the JSON media types it accepts.
    const BODY: Option<BodyKind>;
    /// Members a partner may never send (422 `read_only`).
    const READ_ONLY: &'static [&'static str];
    /// Reads the command from the body, field by field.
    fn parse(f: &mut Fields) -> Self;
    /// 403 when the body names a client or location outside the caller's
    /// scope (checked before the body is validated).
    fn check_scope(
        _caller: &Caller,
        _target: &<Self::Target as Target>::Current,
        _body: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// A command as a partner asked for it, ready to run.
pub struct Request<C> {
    caller: Caller,
    id: Option<Uuid>,
    command: C,
    shape: Vec<FieldError>,
    expected: Option<i64>,
    idem: Option<Idempotency>,
}

/// Serves a command's route: `id` is the route's record id, when it has
/// one.
pub async fn serve<C: Endpoint>(
    app: &AppState,
    method: Method,
    uri: Uri,
    id: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answered = match prepare::<C>(app, method, uri, id, &headers, body).await {
        Ok(request) => execute(app, request).await,
        Err(e) => Err(e),
    };
    match answered {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Steps 1 to 3: from a request to a command.
async fn prepare<C: Endpoint>(
    app: &AppState,
    method: Method,
    uri: Uri,
    id: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Request<C>, ApiError> {
    let caller = app.gate.authenticate(headers).await?;
    tracing::Span::current().record("partner", tracing::field::display(caller.partner_id));
    caller.require(C::permission())?;
    let id = match id {
        Some(id) => Some(id.parse::<Uuid>().map_err(|_| ApiError::NotFound)?),
        None => None,
    };
    let current = {
        let db = app.write.get().await?;
        C::Target::find(&db, &caller, id)
            .await?
            .ok_or(ApiError::NotFound)?
    };
    let body = body_bytes(body)?;
    let absent = C::BODY.is_none() && body.iter().all(u8::is_ascii_whitespace);
    let map = if absent {
        Ok(Map::new())
    } else {
        fields::parse_object(&body)
    };
    if let Ok(map) = &map {
        C::check_scope(&caller, &current, map)?;
    }
    if !absent {
        fields::require_json(headers, C::BODY.unwrap_or(BodyKind::Json))?;
    }
    let mut f = Fields::new(map?);
    f.read_only(C::READ_ONLY);
    let mut command = C::parse(&mut f);
    let shape = f.finish();
    fields::reject_wrong_types(&shape)?;
    let expected = match C::Target::version(&current) {
        Some(_) => if_match(headers)?,
        None => None,
    };
    let idem =
        Idempotency::from_request(headers, caller.partner_id, method, uri.path().into(), &body)?;
    command.before(&app.write).await?;
    Ok(Request {
        caller,
        id,
        command,
        shape,
        expected,
        idem,
    })
}

/// Step 4: runs the command in the process's next group commit.
async fn execute<C: Command + 'static>(
    app: &AppState,
    request: Request<C>,
) -> Result<Answer, ApiError> {
    app.committer.submit(Box::new(request)).await
}

impl<C: Command + 'static> Work for Request<C> {
    fn actor(&self) -> Actor {
        Actor::Partner {
            id: self.caller.partner_id,
        }
    }

    fn idempotency(&self) -> Option<&Idempotency> {
        self.idem.as_ref()
    }

    fn plan<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        meta: &'a CommandMeta,
    ) -> group_commit::Pending<'a, Result<Planned, ApiError>> {
        Box::pin(async move {
            if let Some(idem) = &self.idem {
                match idem.begin(tx).await {
                    Ok(Some(previous)) => return Ok(Planned::Answered(Ok(previous))),
                    Ok(None) => {}
                    Err(e) if e.status().is_server_error() => return Err(e),
                    Err(e) => return Ok(Planned::Answered(Err(e))),
                }
            }
            let cx = Cx {
                tx,
                meta,
                caller: &self.caller,
            };
            match decide(&cx, self).await {
                Ok((writes, answer)) => Ok(Planned::Commit {
                    writes,
                    answer: Ok(answer),
                }),
                Err(refusal) => {
                    let e = refusal.answer(&self.shape);
                    if e.status().is_server_error() {
                        Err(e)
                    } else {
                        Ok(Planned::Commit {
                            writes: Writes::default(),
                            answer: Err(e),
                        })
                    }
                }
            }
        })
    }
}

/// Decides a command: the record, `If-Match`, the decision, the body's
/// field errors; answers what to write and the rendered answer.
async fn decide<C: Command>(
    cx: &Cx<'_>,
    request: &Request<C>,
) -> Result<(Writes, Answer), Refusal> {
    let current = C::Target::find(cx.tx, cx.caller, request.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let stale = matches!(
        (request.expected, C::Target::version(&current)),
        (Some(expected), Some(version)) if expected != version
    );
    let decision = match request.command.decide(cx, &current).await {
        // Bad input is answered (422, every bad field) before a stale version.
        Err(Refusal::Invalid(errors)) => return Err(Refusal::Invalid(errors)),
        _ if stale && request.shape.is_empty() => return Err(ApiError::PreconditionFailed.into()),
        decision => decision?,
    };
    fields::check(request.shape.clone())?;
    Ok((decision.writes, decision.output.render()))
}

/// A command without the HTTP steps: an operator's (reference data,
/// the catalog, portal accounts; `lis admin` authorizes by access to the
/// database) or the patient portal's (which authenticates the patient
/// itself). Decided and written as a partner's is.
pub trait Operation: Send + Sync {
    /// What a committed operation gives back.
    type Output: Send;
    /// Why it fails.
    type Error: From<tokio_postgres::Error> + From<deadpool_postgres::PoolError> + From<Raced>;
    /// Loads what the decision needs and decides in `domain`.
    fn decide<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
    ) -> impl Future<Output = Result<Decision<Self::Output>, Self::Error>> + Send + 'a;
}

/// An operation lost a race every time it was tried.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a concurrent change won every attempt")]
pub struct Raced;

/// Runs an operation: decide, write, commit, retried after a lost race.
pub async fn run<O: Operation>(
    pool: &deadpool_postgres::Pool,
    actor: &Actor,
    operation: &O,
) -> Result<O::Output, O::Error> {
    let mut db = pool.get().await?;
    for _ in 0..group_commit::MAX_ATTEMPTS {
        let tx = db.transaction().await?;
        let meta = CommandMeta::new(actor.clone(), None);
        let decision = operation.decide(&tx).await?;
        match store::write(&tx, &meta, &decision.writes).await {
            Ok(()) => {
                tx.commit().await?;
                store::COMMITTED.notify_one();
                return Ok(decision.output);
            }
            Err(WriteError::Raced) => tx.rollback().await?,
            Err(WriteError::Db(e)) => return Err(e.into()),
        }
    }
    Err(Raced.into())
}

/// Reads the body, mapping an oversize body to 413.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::malformed("The body could not be read.")
        }
    })
}

/// Parses `If-Match` (`"3"` or `W/"3"`); 422 when malformed.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s == "*" {
        // Any current representation: the record exists (checked anyway).
        return Ok(None);
    }
    if s.starts_with("W/") {
        // If-Match uses strong comparison (RFC 9110): a weak tag never matches.
        return Ok(Some(0));
    }
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| {
            ApiError::unprocessable(vec![FieldError::new(
                "If-Match",
                "invalid",
                "must be an entity tag such as \"3\"",
            )])
        })
}

/// The scope check of a create: the body's `clientID` and `locationID`,
/// when both are strings, must be in the caller's scope.
pub fn body_in_scope(caller: &Caller, body: &Map<String, Value>) -> Result<(), ApiError> {
    let client = body.get("clientID").and_then(Value::as_str);
    let location = body.get("locationID").and_then(Value::as_str);
    match (client, location) {
        (Some(c), Some(l)) if !caller.sees(c, l) => Err(ApiError::Forbidden(
            "The clientID/locationID is outside this partner's scope.".into(),
        )),
        _ => Ok(()),
    }
}

/// A write's answer: 201 with `Location` when `created` names the new
/// record's path, 200 otherwise; with its `ETag` and consistency token.
pub fn write_answer(
    body: &Value,
    etag: String,
    token: &contract::consistency::ConsistencyToken,
    created: Option<String>,
) -> Answer {
    let mut headers = vec![
        ("etag".to_string(), etag),
        (contract::consistency::HEADER.to_string(), token.encode()),
    ];
    let status = match created {
        Some(location) => {
            headers.push((header::LOCATION.as_str().to_string(), location));
            StatusCode::CREATED
        }
        None => StatusCode::OK,
    };
    Answer::json(status, body, headers)
}
