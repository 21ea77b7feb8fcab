//! Order commands: [`PlaceOrder`] (`POST /v1/orders`), [`UpdateOrder`]
//! (`PATCH /v1/orders/{orderID}`) and one command per lifecycle action
//! (`POST /v1/orders/{orderID}/{action}`), each an [`OrderChange`] that
//! [`OnOrder`] runs.

use axum::routing::{patch, post, MethodRouter};
use chrono::{DateTime, Utc};
use contract::caller::Caller;
use contract::consistency::ConsistencyToken;
use contract::fields::{BodyKind, Fields};
use contract::order_view::{OrderView, PatientSummary};
use contract::problem::ApiError;
use deadpool_postgres::GenericClient;
use domain::access::Permission;
use domain::catalog::CatalogTest;
use domain::order::{
    self, Order, OrderAction, OrderDraft, OrderEvent, OrderPatch, OrderRejection, PatientFacts,
    PlaceContext, ResultContext, ResultEntry, SpecimenPatch,
};
use domain::patient::Patient;
use domain::validation::FieldError;
use platform::db::Cached;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::idempotency::Answer;
use crate::pipeline::{
    body_in_scope, load, write_answer, Command, Current, Cx, Decision, Endpoint, New, Refusal,
    Render, Stored,
};
use crate::store::{Row, Writes};
use crate::{change, AppState};

/// Places an order.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    /// The order as sent.
    pub draft: OrderDraft,
    /// The lab-wide sequence number of its generated accession number,
    /// when it is sent without one (taken before the transaction).
    pub sequence: Option<i64>,
}

/// An order as a write leaves it: the answer's content. Its consistency
/// token also names the patient's version the decision saw: order reads
/// embed the patient from the read model, so a read with the token waits
/// for both (without it a read could find the order projected but not yet
/// its patient).
pub struct OrderWrite {
    view: OrderView,
    patient: Option<(Uuid, i64)>,
    created: bool,
}

impl OrderWrite {
    fn new(
        caller: &Caller,
        state: &Order,
        patient: Option<&Patient>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        created: bool,
    ) -> Self {
        let summary = patient
            .filter(|p| {
                caller.has(Permission::PatientsRead) && caller.sees(&p.client_id, &p.location_id)
            })
            .map(PatientSummary::of);
        OrderWrite {
            view: OrderView::from_state(state, summary, created_at, updated_at),
            patient: patient.map(|p| (p.id, p.version)),
            created,
        }
    }
}

impl Render for OrderWrite {
    fn render(&self) -> Answer {
        let mut seen = vec![(self.view.order_id, self.view.version)];
        seen.extend(self.patient);
        let created = self
            .created
            .then(|| format!("/v1/orders/{}", self.view.order_id));
        let body = serde_json::to_value(&self.view).expect("view serializes");
        write_answer(&body, self.view.etag(), &ConsistencyToken(seen), created)
    }
}

impl From<OrderRejection> for Refusal {
    fn from(e: OrderRejection) -> Self {
        match e {
            OrderRejection::Invalid(errors) => Refusal::Invalid(errors),
            other => Refusal::Rejected(rejection(other)),
        }
    }
}

fn rejection(e: OrderRejection) -> ApiError {
    match e {
        OrderRejection::Invalid(errors) => ApiError::unprocessable(errors),
        OrderRejection::InvalidStatus { action, status } => ApiError::Conflict {
            slug: "invalid-status",
            detail: format!("Cannot {action} an order that is {}.", status.as_str()),
            extra: Map::from_iter([("orderStatus".to_string(), Value::from(status.as_str()))]),
        },
        OrderRejection::DuplicateAccession => ApiError::Conflict {
            slug: "duplicate-accession",
            detail: "This accessionNumber is already used in the lab.".into(),
            extra: Map::new(),
        },
    }
}

/// Loads a patient from the event store.
async fn load_patient(db: &impl GenericClient, id: Uuid) -> Result<Option<Patient>, Refusal> {
    Ok(load::<Patient>(db, id).await?.map(|c| c.state))
}

/// The catalog definitions of `codes` from the write side.
async fn catalog(db: &impl GenericClient, codes: &[String]) -> Result<Vec<CatalogTest>, Refusal> {
    db.query_cached(
        "SELECT definition FROM catalog_tests WHERE code = ANY($1)",
        &[&codes],
    )
    .await?
    .iter()
    .map(|r| serde_json::from_value(r.get(0)).map_err(|e| ApiError::internal(e).into()))
    .collect()
}

impl Endpoint for PlaceOrder {
    fn permission() -> Permission {
        Permission::TestsCreate
    }
    const BODY: Option<BodyKind> = Some(BodyKind::Json);
    const READ_ONLY: &'static [&'static str] = READ_ONLY;
    fn parse(f: &mut Fields) -> Self {
        PlaceOrder {
            draft: draft_from(f),
            sequence: None,
        }
    }
    fn check_scope(caller: &Caller, _: &(), body: &Map<String, Value>) -> Result<(), ApiError> {
        body_in_scope(caller, body)
    }
}

impl Command for PlaceOrder {
    type Target = New;
    type Output = OrderWrite;

    async fn before(&mut self, db: &deadpool_postgres::Pool) -> Result<(), ApiError> {
        if self.draft.accession_number.is_none() {
            let row = db
                .get()
                .await?
                .query_one_cached("SELECT nextval('accession_seq')", &[])
                .await?;
            self.sequence = Some(row.get(0));
        }
        Ok(())
    }

    async fn decide(&self, cx: &Cx<'_>, _: &()) -> Result<Decision<OrderWrite>, Refusal> {
        let draft = &self.draft;
        let tx = cx.tx;
        let patient = match draft
            .patient_id
            .as_deref()
            .and_then(|p| p.parse::<Uuid>().ok())
        {
            Some(id) => load_patient(tx, id)
                .await?
                .filter(|p| cx.caller.sees(&p.client_id, &p.location_id)),
            None => None,
        };
        let location_client = match &draft.location_id {
            Some(l) => tx
                .query_opt_cached(
                    "SELECT client_id FROM locations WHERE location_id = $1",
                    &[l],
                )
                .await?
                .map(|r| r.get(0)),
            None => None,
        };
        let codes = draft.tests.clone().unwrap_or_default();
        let now = Utc::now();
        let generated_accession = match (&draft.accession_number, self.sequence) {
            (None, Some(seq)) => order::generate_accession(now.date_naive(), seq as u64),
            _ => String::new(),
        };
        let accession = draft
            .accession_number
            .clone()
            .unwrap_or_else(|| generated_accession.clone());
        let accession_taken = tx
            .query_opt_cached(
                "SELECT 1 FROM accession_numbers WHERE accession_number = $1",
                &[&accession],
            )
            .await?
            .is_some();
        let ctx = PlaceContext {
            patient: patient.as_ref().map(|p| PatientFacts {
                client_id: p.client_id.clone(),
                location_id: p.location_id.clone(),
                sex: p.sex,
                date_of_birth: p.date_of_birth,
            }),
            location_client,
            catalog: catalog(tx, &codes).await?,
            generated_accession,
            accession_taken,
            now,
        };
        let order_id = Uuid::new_v4();
        let event = order::place(order_id, draft.clone(), &ctx)?;
        let state = order::apply(None, &event).expect("placement creates state");
        let mut writes = Writes::default();
        writes.event(order_id, 1, &event);
        writes.rows.push(Row::Accession {
            number: state.accession_number.clone(),
            order_id,
        });
        let at = cx.meta.occurred_at;
        Ok(Decision {
            writes,
            output: OrderWrite::new(cx.caller, &state, patient.as_ref(), at, at, true),
        })
    }
}

/// A change to a placed order: one per [`OrderAction`].
pub trait OrderChange: Sized + Send + Sync + 'static {
    /// The action (its route, its permission, the statuses it is allowed
    /// from).
    const ACTION: OrderAction;
    /// Reads the change from the body, field by field.
    fn parse(f: &mut Fields) -> Self;
    /// Decides in `domain`: the event, or `None` when nothing changes.
    fn decide<'a>(
        &'a self,
        order: &'a Order,
        facts: &'a OrderFacts<'a>,
    ) -> impl std::future::Future<Output = Result<Option<OrderEvent>, Refusal>> + Send + 'a;
}

/// What an order change may need besides the order.
pub struct OrderFacts<'a> {
    cx: &'a Cx<'a>,
    order: &'a Order,
    patient: Option<&'a Patient>,
    /// The decision's time.
    pub now: DateTime<Utc>,
}

impl OrderFacts<'_> {
    /// What recording results needs: the catalog's ranges of the order's
    /// tests and the patient's sex and date of birth.
    pub async fn results(&self) -> Result<ResultContext, Refusal> {
        let p = self
            .patient
            .ok_or_else(|| ApiError::internal("an order without its patient"))?;
        Ok(ResultContext {
            catalog: catalog(self.cx.tx, &self.order.tests).await?,
            patient_sex: p.sex,
            patient_date_of_birth: p.date_of_birth,
            now: self.now,
        })
    }
}

/// Runs an [`OrderChange`] on the order its route names.
pub struct OnOrder<C>(C);

impl<C: OrderChange> OnOrder<C> {
    /// The change's route: `PATCH /v1/orders/{orderID}` for
    /// [`OrderAction::Update`], `POST /v1/orders/{orderID}/{action}` for
    /// the others.
    pub fn route() -> (String, MethodRouter<AppState>) {
        match C::ACTION {
            OrderAction::Update => ("/v1/orders/{order_id}".into(), patch(change::<Self>)),
            action => (
                format!("/v1/orders/{{order_id}}/{action}"),
                post(change::<Self>),
            ),
        }
    }
}

impl<C: OrderChange> Endpoint for OnOrder<C> {
    fn permission() -> Permission {
        C::ACTION.permission()
    }
    const BODY: Option<BodyKind> = match C::ACTION {
        OrderAction::Update => Some(BodyKind::MergePatch),
        _ => None,
    };
    const READ_ONLY: &'static [&'static str] = match C::ACTION {
        OrderAction::Update => READ_ONLY_ON_UPDATE,
        _ => &[],
    };
    fn parse(f: &mut Fields) -> Self {
        OnOrder(C::parse(f))
    }
}

impl<C: OrderChange> Command for OnOrder<C> {
    type Target = Stored<Order>;
    type Output = OrderWrite;

    async fn decide(
        &self,
        cx: &Cx<'_>,
        current: &Current<Order>,
    ) -> Result<Decision<OrderWrite>, Refusal> {
        let order = &current.state;
        let patient = load_patient(cx.tx, order.patient_id).await?;
        let facts = OrderFacts {
            cx,
            order,
            patient: patient.as_ref(),
            now: Utc::now(),
        };
        let event = self.0.decide(order, &facts).await?;
        let mut writes = Writes::default();
        let (state, updated_at) = match event {
            Some(event) => {
                writes.event(order.id, order.version + 1, &event);
                let state = order::apply(Some(order.clone()), &event).expect("order exists");
                (state, cx.meta.occurred_at)
            }
            None => (order.clone(), current.updated_at),
        };
        Ok(Decision {
            writes,
            output: OrderWrite::new(
                cx.caller,
                &state,
                patient.as_ref(),
                current.created_at,
                updated_at,
                false,
            ),
        })
    }
}

/// Fields a partner may never change on an order: those it may never set
/// (the first eight), then those only a placement sets.
const READ_ONLY_ON_UPDATE: &[&str] = &[
    "orderID",
    "version",
    "status",
    "results",
    "patient",
    "cancelReason",
    "createdAt",
    "updatedAt",
    "patientID",
    "clientID",
    "locationID",
    "accessionNumber",
    "tests",
];

/// Fields a partner may never set on an order.
const READ_ONLY: &[&str] = READ_ONLY_ON_UPDATE.split_at(8).0;

/// Changes an order's details (a JSON merge patch).
#[derive(Debug, Clone)]
pub struct UpdateOrder {
    /// The changes as sent.
    pub patch: OrderPatch,
}

impl OrderChange for UpdateOrder {
    const ACTION: OrderAction = OrderAction::Update;
    fn parse(f: &mut Fields) -> Self {
        UpdateOrder {
            patch: patch_from(f),
        }
    }
    async fn decide(
        &self,
        order: &Order,
        facts: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        Ok(order::update(order, self.patch.clone(), facts.now)?)
    }
}

/// The specimen was collected.
#[derive(Debug, Clone)]
pub struct CollectSpecimen {
    /// When (`collectedAt`), if not at placement's or now.
    pub collected_at: Option<String>,
}

impl OrderChange for CollectSpecimen {
    const ACTION: OrderAction = OrderAction::Collect;
    fn parse(f: &mut Fields) -> Self {
        CollectSpecimen {
            collected_at: f.string("collectedAt"),
        }
    }
    async fn decide(
        &self,
        order: &Order,
        facts: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        Ok(Some(order::collect(
            order,
            self.collected_at.clone(),
            facts.now,
        )?))
    }
}

/// The lab received the specimen.
#[derive(Debug, Clone)]
pub struct ReceiveSpecimen;

impl OrderChange for ReceiveSpecimen {
    const ACTION: OrderAction = OrderAction::Receive;
    fn parse(_: &mut Fields) -> Self {
        ReceiveSpecimen
    }
    async fn decide(
        &self,
        order: &Order,
        _: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        Ok(Some(order::receive(order)?))
    }
}

/// Testing started.
#[derive(Debug, Clone)]
pub struct StartTesting;

impl OrderChange for StartTesting {
    const ACTION: OrderAction = OrderAction::Start;
    fn parse(_: &mut Fields) -> Self {
        StartTesting
    }
    async fn decide(
        &self,
        order: &Order,
        _: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        Ok(Some(order::start(order)?))
    }
}

/// Cancels an order, with a reason.
#[derive(Debug, Clone)]
pub struct CancelOrder {
    /// Why.
    pub reason: Option<String>,
}

impl OrderChange for CancelOrder {
    const ACTION: OrderAction = OrderAction::Cancel;
    fn parse(f: &mut Fields) -> Self {
        CancelOrder {
            reason: f.string("reason"),
        }
    }
    async fn decide(
        &self,
        order: &Order,
        _: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        Ok(Some(order::cancel(order, self.reason.clone())?))
    }
}

/// Records or replaces results.
#[derive(Debug, Clone)]
pub struct RecordResults {
    /// The results as sent.
    pub results: Vec<ResultEntry>,
}

impl OrderChange for RecordResults {
    const ACTION: OrderAction = OrderAction::Results;
    fn parse(f: &mut Fields) -> Self {
        RecordResults {
            results: results_from(f),
        }
    }
    async fn decide(
        &self,
        order: &Order,
        facts: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        let ctx = facts.results().await?;
        Ok(Some(order::record_results(
            order,
            self.results.clone(),
            &ctx,
        )?))
    }
}

/// Releases the results as final.
#[derive(Debug, Clone)]
pub struct FinalizeResults;

impl OrderChange for FinalizeResults {
    const ACTION: OrderAction = OrderAction::Finalize;
    fn parse(_: &mut Fields) -> Self {
        FinalizeResults
    }
    async fn decide(
        &self,
        order: &Order,
        _: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        Ok(Some(order::finalize(order)?))
    }
}

/// Amends final results, with a reason.
#[derive(Debug, Clone)]
pub struct CorrectResults {
    /// Why.
    pub reason: Option<String>,
    /// The corrected results as sent.
    pub results: Vec<ResultEntry>,
}

impl OrderChange for CorrectResults {
    const ACTION: OrderAction = OrderAction::Correct;
    fn parse(f: &mut Fields) -> Self {
        let reason = f.string("reason");
        CorrectResults {
            reason,
            results: results_from(f),
        }
    }
    async fn decide(
        &self,
        order: &Order,
        facts: &OrderFacts<'_>,
    ) -> Result<Option<OrderEvent>, Refusal> {
        let ctx = facts.results().await?;
        Ok(Some(order::correct(
            order,
            self.reason.clone(),
            self.results.clone(),
            &ctx,
        )?))
    }
}

fn draft_from(f: &mut Fields) -> OrderDraft {
    let tests = f.array("tests").map(|items| {
        let mut codes = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let Some(mut e) = f.element("tests", i, item) else {
                continue;
            };
            match e.string("code") {
                Some(code) => codes.push(code),
                None if e.errors.is_empty() => e
                    .errors
                    .push(FieldError::required(format!("tests[{i}].code"))),
                None => {}
            }
            f.absorb(e);
        }
        codes
    });
    let (specimen_type, collected_at) = match f.object("specimen") {
        Some(mut s) => {
            let t = s.string("type");
            let c = s.string("collectedAt");
            f.absorb(s);
            (t, c)
        }
        None => (None, None),
    };
    OrderDraft {
        patient_id: f.string("patientID"),
        client_id: f.string("clientID"),
        location_id: f.string("locationID"),
        accession_number: f.string("accessionNumber"),
        external_order_id: f.string("externalOrderID"),
        tests,
        specimen_type,
        collected_at,
        priority: f.string("priority"),
    }
}

fn patch_from(f: &mut Fields) -> OrderPatch {
    let specimen = f.object_patch("specimen").map(|mut s| {
        let p = SpecimenPatch {
            specimen_type: s.string_patch("type"),
            collected_at: s.string_patch("collectedAt"),
        };
        f.absorb(s);
        p
    });
    OrderPatch {
        specimen,
        priority: f.string_patch("priority"),
        external_order_id: f.string_patch("externalOrderID"),
    }
}

fn results_from(f: &mut Fields) -> Vec<ResultEntry> {
    let Some(items) = f.array("results") else {
        if !f.errors.iter().any(|e| e.field == "results") {
            f.errors.push(FieldError::required("results"));
        }
        return Vec::new();
    };
    let mut entries = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Some(mut e) = f.element("results", i, item) else {
            continue;
        };
        let code = e.string("code");
        let value = e.raw("value");
        let unit = e.string("unit");
        if code.is_none() {
            e.errors
                .push(FieldError::required(format!("results[{i}].code")));
        }
        if value.is_none() {
            e.errors
                .push(FieldError::required(format!("results[{i}].value")));
        }
        if let (Some(code), Some(value)) = (code, value) {
            entries.push(ResultEntry { code, value, unit });
        }
        f.absorb(e);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{
        CancelRequest, CollectRequest, CorrectRequest, NewOrder, NewSpecimen, NoFields,
        OrderMergePatch, ResultInput, ResultsRequest, SpecimenMergePatch,
    };
    use contract::order_view::{OrderedTest, PrioritySchema, ResultValueSchema};
    use serde::Serialize;

    /// Reads `body` as the command `C` reads it; answers the command and
    /// the field errors.
    fn read<C: Endpoint>(body: &impl Serialize) -> (C, Vec<FieldError>) {
        let mut f = match serde_json::to_value(body).unwrap() {
            Value::Object(map) => Fields::new(map),
            other => panic!("not an object: {other}"),
        };
        f.read_only(C::READ_ONLY);
        let command = C::parse(&mut f);
        (command, f.finish())
    }

    fn text(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    fn results() -> Vec<ResultInput> {
        vec![
            ResultInput {
                code: "HGB".into(),
                value: ResultValueSchema::Text("11.2".into()),
                unit: text("g/dL"),
            },
            ResultInput {
                code: "WBC".into(),
                value: ResultValueSchema::Number(7.2),
                unit: None,
            },
        ]
    }

    /// Every field the OpenAPI document names for a placement is one the
    /// command reads.
    #[test]
    fn documented_create_fields_are_read() {
        let body = NewOrder {
            patient_id: Uuid::nil(),
            client_id: "C1".into(),
            location_id: "L1".into(),
            accession_number: text("ACC-1"),
            external_order_id: text("EHR-1"),
            tests: vec![OrderedTest { code: "CBC".into() }],
            specimen: Some(NewSpecimen {
                specimen_type: text("whole blood"),
                collected_at: Some(Utc::now()),
            }),
            priority: Some(PrioritySchema::Stat),
        };
        let (PlaceOrder { draft, .. }, errors) = read::<PlaceOrder>(&body);
        assert_eq!(errors, vec![]);
        assert_eq!(draft.tests, Some(vec!["CBC".to_string()]));
        assert_eq!(draft.priority.as_deref(), Some("stat"));
        assert!(draft.collected_at.is_some() && draft.specimen_type.is_some());
    }

    /// Every field the OpenAPI document names for a merge patch is one the
    /// command reads.
    #[test]
    fn documented_patch_fields_are_read() {
        let body = OrderMergePatch {
            specimen: Some(SpecimenMergePatch {
                specimen_type: text("serum"),
                collected_at: Some(Utc::now()),
            }),
            priority: Some(PrioritySchema::Urgent),
            external_order_id: text("EHR-2"),
        };
        let (OnOrder(UpdateOrder { patch }), errors) = read::<OnOrder<UpdateOrder>>(&body);
        assert_eq!(errors, vec![]);
        assert_eq!(patch.priority, domain::patch::Patch::Set("urgent".into()));
    }

    /// Every field the OpenAPI document names for an action body is one the
    /// command reads.
    #[test]
    fn documented_action_fields_are_read() {
        let at = Some(Utc::now());
        let (OnOrder(c), e) =
            read::<OnOrder<CollectSpecimen>>(&CollectRequest { collected_at: at });
        assert_eq!((e, c.collected_at.is_some()), (vec![], true));
        assert_eq!(read::<OnOrder<ReceiveSpecimen>>(&NoFields {}).1, vec![]);
        assert_eq!(read::<OnOrder<StartTesting>>(&NoFields {}).1, vec![]);
        assert_eq!(read::<OnOrder<FinalizeResults>>(&NoFields {}).1, vec![]);
        let body = CancelRequest {
            reason: "ordered in error".into(),
        };
        let (OnOrder(c), e) = read::<OnOrder<CancelOrder>>(&body);
        assert_eq!((e, c.reason.is_some()), (vec![], true));
        let body = ResultsRequest { results: results() };
        let (OnOrder(c), e) = read::<OnOrder<RecordResults>>(&body);
        assert_eq!((e, c.results.len()), (vec![], 2));
        let body = CorrectRequest {
            reason: "mix-up".into(),
            results: results(),
        };
        let (OnOrder(c), e) = read::<OnOrder<CorrectResults>>(&body);
        assert_eq!((e, c.results.len(), c.reason.is_some()), (vec![], 2, true));
    }

    /// An action's body that names a member the action does not read is
    /// refused, member by member.
    #[test]
    fn unread_members_are_named() {
        let (_, errors) = read::<OnOrder<ReceiveSpecimen>>(&serde_json::json!({"reason": "x"}));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "reason");
    }
}
