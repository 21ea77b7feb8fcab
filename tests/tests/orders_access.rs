//! The access matrix of every order endpoint and of the catalog, the
//! contract's action table cell by cell, `If-Match` and `Idempotency-Key` on
//! order actions, and which callers see an order's patient details.
//!
//! Every order endpoint (`POST /v1/orders`, `GET /v1/orders/{id}`,
//! `GET /v1/orders`, `POST /v1/orders/search`, `PATCH /v1/orders/{id}`, the
//! seven actions `POST /v1/orders/{id}/{action}`) and `GET /v1/catalog` meets
//! every access case, and the answer follows the contract's check order:
//! authentication (`401` with `WWW-Authenticate: Bearer`), the endpoint's
//! permission (`403`), the target record in scope (`404`, byte-for-byte the
//! answer for a record that does not exist), the body's `clientID` /
//! `locationID` in scope (`403`), then validation and success. Lists and
//! searches silently keep only in-scope orders. A refused request appends no
//! event.
//!
//! The action table: every action (and `PATCH`) from every status, each on a
//! fresh order brought to that status through the API: `200` and the
//! contract's next status where the table allows it, else `409`
//! (`…invalid-status`) and no event.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use command_handler::admin;
use futures::future::join_all;
use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tests::checks::{
    auth_cases, bearer, check_case, check_twin, problem_failures, send, Answer, AuthCases, Req,
    JSON_CT, MERGE_CT,
};
use tests::{patient_body, TestStack};
use uuid::Uuid;

/// The scope of the partners of the matrix: client C1, and locations L1 (of
/// C1) and L3 (of C2). An order of C2 at L3 is out of scope only by its
/// client; an order of C1 at L2 only by its location.
const SCOPE_CLIENTS: &str = "C1";
const SCOPE_LOCATIONS: &str = "L1,L3";

/// Every partner permission but `audit:read`.
const ALL: &str = "patients:create,patients:read,patients:update,\
                   tests:create,tests:read,tests:update,results:write";

/// Every status, in lifecycle order.
const STATUSES: [&str; 8] = [
    "ordered",
    "collected",
    "received",
    "in_progress",
    "resulted",
    "final",
    "corrected",
    "canceled",
];

/// The order and catalog requests of the matrix.
trait OrderReqs {
    fn place(body: Value) -> Self;
    fn read(id: &str) -> Self;
    fn list(query: &str) -> Self;
    fn search(body: Value) -> Self;
    fn catalog() -> Self;
}

impl OrderReqs for Req {
    fn place(body: Value) -> Req {
        Req::with_body(Method::POST, "/v1/orders".into(), JSON_CT, &body)
    }

    fn read(id: &str) -> Req {
        Req::get(format!("/v1/orders/{id}"))
    }

    fn list(query: &str) -> Req {
        Req::get(format!("/v1/orders{query}"))
    }

    fn search(body: Value) -> Req {
        Req::with_body(Method::POST, "/v1/orders/search".into(), JSON_CT, &body)
    }

    fn catalog() -> Req {
        Req::get("/v1/catalog".into())
    }
}

/// The order commands that act on an existing order: the seven actions of
/// the contract's table, and `PATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Collect,
    Receive,
    Start,
    Cancel,
    Results,
    Finalize,
    Correct,
    Update,
}

impl Action {
    const ALL: [Action; 8] = [
        Action::Collect,
        Action::Receive,
        Action::Start,
        Action::Cancel,
        Action::Results,
        Action::Finalize,
        Action::Correct,
        Action::Update,
    ];

    fn name(self) -> &'static str {
        match self {
            Action::Collect => "collect",
            Action::Receive => "receive",
            Action::Start => "start",
            Action::Cancel => "cancel",
            Action::Results => "results",
            Action::Finalize => "finalize",
            Action::Correct => "correct",
            Action::Update => "update",
        }
    }

    fn label(self) -> String {
        match self {
            Action::Update => "PATCH /v1/orders/{id}".into(),
            a => format!("POST /v1/orders/{{id}}/{}", a.name()),
        }
    }

    /// The permission of the contract's action table.
    fn permission(self) -> &'static str {
        match self {
            Action::Collect | Action::Receive | Action::Start | Action::Cancel | Action::Update => {
                "tests:update"
            }
            Action::Results | Action::Finalize | Action::Correct => "results:write",
        }
    }

    /// "allowed from" of the contract's action table (and of `PATCH`).
    fn allowed_from(self) -> &'static [&'static str] {
        match self {
            Action::Collect => &["ordered"],
            Action::Receive => &["collected"],
            Action::Start => &["received"],
            Action::Cancel => &["ordered", "collected", "received"],
            Action::Results => &["received", "in_progress", "resulted"],
            Action::Finalize => &["resulted"],
            Action::Correct => &["final", "corrected"],
            Action::Update => &["ordered", "collected", "received", "in_progress"],
        }
    }

    /// "leads to" of the contract's action table; `None`: the status stays.
    fn leads_to(self) -> Option<&'static str> {
        match self {
            Action::Collect => Some("collected"),
            Action::Receive => Some("received"),
            Action::Start => Some("in_progress"),
            Action::Cancel => Some("canceled"),
            Action::Results => Some("resulted"),
            Action::Finalize => Some("final"),
            Action::Correct => Some("corrected"),
            Action::Update => None,
        }
    }

    /// A valid body (for an order of one TSH test).
    fn body(self) -> Option<Value> {
        match self {
            Action::Collect | Action::Receive | Action::Start | Action::Finalize => None,
            Action::Cancel => Some(json!({"reason": "ordered in error"})),
            Action::Results => Some(json!({"results": [
                {"code": "TSH", "value": "2.1", "unit": "mIU/L"}
            ]})),
            Action::Correct => Some(json!({"reason": "transcription error", "results": [
                {"code": "TSH", "value": "2.3", "unit": "mIU/L"}
            ]})),
            Action::Update => Some(json!({"priority": "urgent"})),
        }
    }

    /// The request of this action on order `id`, with a valid body.
    fn req(self, id: &str) -> Req {
        let body = self.body().map(|b| b.to_string());
        match self {
            Action::Update => Req::new(
                Method::PATCH,
                format!("/v1/orders/{id}"),
                body.map(|b| (MERGE_CT, b)),
            ),
            a => Req::new(
                Method::POST,
                format!("/v1/orders/{id}/{}", a.name()),
                body.map(|b| (JSON_CT, b)),
            ),
        }
    }

    /// The request of this action on order `id` with a body that fails
    /// validation (not JSON, and sent as text/plain).
    fn invalid_req(self, id: &str) -> Req {
        self.req(id)
            .raw_body("{not json")
            .content_type("text/plain")
    }
}

/// The actions that bring a new order to `status`.
fn path_to(status: &str) -> &'static [Action] {
    use Action::*;
    match status {
        "ordered" => &[],
        "collected" => &[Collect],
        "received" => &[Collect, Receive],
        "in_progress" => &[Collect, Receive, Start],
        "resulted" => &[Collect, Receive, Start, Results],
        "final" => &[Collect, Receive, Start, Results, Finalize],
        "corrected" => &[Collect, Receive, Start, Results, Finalize, Correct],
        "canceled" => &[Cancel],
        other => panic!("no status {other}"),
    }
}

/// The order endpoints and the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ep {
    Place,
    Read,
    List,
    Search,
    Act(Action),
    Catalog,
}

impl Ep {
    fn all() -> Vec<Ep> {
        let mut v = vec![Ep::Place, Ep::Read, Ep::List, Ep::Search];
        v.extend(Action::ALL.map(Ep::Act));
        v.push(Ep::Catalog);
        v
    }

    fn name(self) -> String {
        match self {
            Ep::Place => "POST /v1/orders".into(),
            Ep::Read => "GET /v1/orders/{id}".into(),
            Ep::List => "GET /v1/orders".into(),
            Ep::Search => "POST /v1/orders/search".into(),
            Ep::Act(a) => a.label(),
            Ep::Catalog => "GET /v1/catalog".into(),
        }
    }

    /// The permission the endpoint needs (`tests:*`: any of the three).
    fn permission(self) -> &'static str {
        match self {
            Ep::Place => "tests:create",
            Ep::Read | Ep::List | Ep::Search => "tests:read",
            Ep::Act(a) => a.permission(),
            Ep::Catalog => "tests:*",
        }
    }

    fn ok_status(self) -> u16 {
        match self {
            Ep::Place => 201,
            _ => 200,
        }
    }
}

/// One row of the matrix.
struct Case {
    name: String,
    authorization: Option<String>,
    req: Req,
    status: u16,
    /// A request whose answer must be identical (status, content type, body,
    /// header names): the same request on a record that does not exist.
    twin: Option<Req>,
    /// For list answers: order ids the answer must show.
    present: Vec<String>,
    /// For list answers: order ids the answer must not show.
    absent: Vec<String>,
    /// For a 2xx answer about one order: its id.
    record: Option<String>,
    /// For a 2xx answer about one order: its status.
    order_status: Option<&'static str>,
    /// For a 2xx answer: how many events it appends.
    events: Option<i64>,
    /// A new order of C1 at L1 is answered.
    created: bool,
    /// The catalog is answered.
    catalog: bool,
}

impl Case {
    fn new(name: impl Into<String>, authorization: Option<&str>, req: Req, status: u16) -> Case {
        Case {
            name: name.into(),
            authorization: authorization.map(str::to_string),
            req,
            status,
            twin: None,
            present: Vec::new(),
            absent: Vec::new(),
            record: None,
            order_status: None,
            events: None,
            created: false,
            catalog: false,
        }
    }

    fn twin(mut self, twin: Req) -> Case {
        self.twin = Some(twin);
        self
    }

    fn items(mut self, present: &[&str], absent: &[&str]) -> Case {
        self.present = present.iter().map(|s| s.to_string()).collect();
        self.absent = absent.iter().map(|s| s.to_string()).collect();
        self.events = Some(0);
        self
    }

    fn record(mut self, id: &str, status: &'static str, events: i64) -> Case {
        self.record = Some(id.to_string());
        self.order_status = Some(status);
        self.events = Some(events);
        self
    }

    fn created(mut self) -> Case {
        self.created = true;
        self.events = Some(1);
        self
    }

    fn catalog(mut self) -> Case {
        self.catalog = true;
        self.events = Some(0);
        self
    }
}

/// Creates a patient from `body` and returns its id.
async fn patient_from(s: &TestStack, token: &str, body: &Value) -> String {
    let r = s.create_patient(token, body).await;
    assert_eq!(r.status(), 201, "patient fixture {body}");
    r.json::<Value>().await.expect("json")["patientID"]
        .as_str()
        .expect("patientID")
        .to_string()
}

/// Creates a patient of `client` at `location`.
async fn patient(
    s: &TestStack,
    token: &str,
    external: &str,
    client: &str,
    location: &str,
) -> String {
    let mut body = patient_body(external);
    body["clientID"] = json!(client);
    body["locationID"] = json!(location);
    patient_from(s, token, &body).await
}

/// An order body: one TSH test for `patient` of `client` at `location`.
fn order_body(patient: &str, client: &str, location: &str) -> Value {
    json!({
        "patientID": patient, "clientID": client, "locationID": location,
        "tests": [{"code": "TSH"}],
        "specimen": {"type": "serum"},
        "priority": "routine"
    })
}

fn id_of(v: &Value) -> String {
    v["orderID"].as_str().expect("orderID").to_string()
}

/// Places an order and brings it to `status` through the API; answers the
/// JSON of the last write.
async fn order_in(
    s: &TestStack,
    token: &str,
    patient: &str,
    client: &str,
    location: &str,
    status: &str,
) -> Value {
    let auth = bearer(token);
    let a = send(
        s,
        &Req::place(order_body(patient, client, location)),
        Some(&auth),
    )
    .await;
    assert_eq!(a.status, 201, "placing a fixture order: {}", a.text());
    let mut v = a.json();
    let id = id_of(&v);
    for action in path_to(status) {
        let a = send(s, &action.req(&id), Some(&auth)).await;
        assert_eq!(
            a.status,
            200,
            "bringing an order to {status}: {} answered {}",
            action.name(),
            a.text()
        );
        v = a.json();
    }
    assert_eq!(v["status"], status, "fixture order: {v}");
    v
}

/// Waits until the read model shows order `id` at `version` or later.
async fn settle(s: &TestStack, token: &str, id: &str, version: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get(token, &format!("/v1/orders/{id}")).await;
        if r.status() == 200 {
            let v: Value = r.json().await.expect("json");
            if v["version"].as_i64().unwrap_or(0) >= version {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "order {id} never reached the read model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Orders in the status an action is allowed from: one per in-scope success
/// case, and one out of scope by client, one by location.
struct Targets {
    in_scope: Vec<String>,
    out_client: String,
    out_location: String,
}

/// The request an in-scope caller of `ep` sends; `n` keeps bodies unique.
fn in_scope_request(ep: Ep, n: usize, p_in: &str, o_in: &str, target: &str) -> Req {
    match ep {
        Ep::Place => {
            let mut body = order_body(p_in, "C1", "L1");
            body["externalOrderID"] = json!(format!("OX-NEW-{n}"));
            Req::place(body)
        }
        Ep::Read => Req::read(o_in),
        Ep::List => Req::list("?limit=500"),
        Ep::Search => Req::search(json!({"limit": 500})),
        Ep::Act(a) => a.req(target),
        Ep::Catalog => Req::catalog(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_order_endpoint_checks_access_in_the_contract_order() {
    let started = Instant::now();
    let s = TestStack::start().await;
    // C1 with L1 and L2, C2 with L3, the catalog, and an all-seeing partner
    // for fixtures.
    s.standard().await;
    admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .expect("catalog");
    let lab = s.partner(ALL, "*", "*").await;
    let admin_token = s.token(&lab).await;

    let p_in = patient(&s, &admin_token, "OX-IN", "C1", "L1").await;
    let p_oc = patient(&s, &admin_token, "OX-OUT-CLIENT", "C2", "L3").await;
    let p_ol = patient(&s, &admin_token, "OX-OUT-LOCATION", "C1", "L2").await;
    let missing = Uuid::new_v4().to_string();

    // The orders the reads look at, in the read model.
    let (o_in, o_oc, o_ol) = (
        id_of(&order_in(&s, &admin_token, &p_in, "C1", "L1", "ordered").await),
        id_of(&order_in(&s, &admin_token, &p_oc, "C2", "L3", "ordered").await),
        id_of(&order_in(&s, &admin_token, &p_ol, "C1", "L2", "ordered").await),
    );
    for id in [&o_in, &o_oc, &o_ol] {
        settle(&s, &admin_token, id, 1).await;
    }

    // For each action, orders in the status it is allowed from, so that a
    // request the checks let through would succeed.
    let mut targets: BTreeMap<Action, Targets> = BTreeMap::new();
    for a in Action::ALL {
        let from = a.allowed_from()[0];
        let t = &admin_token;
        let made = join_all([
            order_in(&s, t, &p_in, "C1", "L1", from),
            order_in(&s, t, &p_in, "C1", "L1", from),
            order_in(&s, t, &p_in, "C1", "L1", from),
            order_in(&s, t, &p_oc, "C2", "L3", from),
            order_in(&s, t, &p_ol, "C1", "L2", from),
        ])
        .await;
        let ids: Vec<String> = made.iter().map(id_of).collect();
        targets.insert(
            a,
            Targets {
                in_scope: ids[..3].to_vec(),
                out_client: ids[3].clone(),
                out_location: ids[4].clone(),
            },
        );
    }

    // The partner of the matrix, and one lacking each permission.
    let scoped = s.partner(ALL, SCOPE_CLIENTS, SCOPE_LOCATIONS).await;
    let scoped_token = s.token(&scoped).await;
    let mut lacking: BTreeMap<&str, String> = BTreeMap::new();
    for perm in [
        "tests:create",
        "tests:read",
        "tests:update",
        "results:write",
    ] {
        let perms: Vec<&str> = ALL.split(',').filter(|p| *p != perm).collect();
        let p = s
            .partner(&perms.join(","), SCOPE_CLIENTS, SCOPE_LOCATIONS)
            .await;
        lacking.insert(perm, bearer(&s.token(&p).await));
    }
    let no_tests = s
        .partner(
            "patients:create,patients:read,patients:update,results:write",
            SCOPE_CLIENTS,
            SCOPE_LOCATIONS,
        )
        .await;
    lacking.insert("tests:*", bearer(&s.token(&no_tests).await));
    // The catalog is not scoped: partners whose scope misses C1 or L1.
    let mut elsewhere: BTreeMap<&str, String> = BTreeMap::new();
    for (kind, clients, locations) in [
        ("out-of-scope client", "C2", "*"),
        ("out-of-scope location", "*", "L2"),
    ] {
        let p = s.partner("tests:read", clients, locations).await;
        elsewhere.insert(kind, bearer(&s.token(&p).await));
    }
    // Each tests:* permission alone opens the catalog.
    let mut single: Vec<(&str, String)> = Vec::new();
    for perm in ["tests:create", "tests:read", "tests:update"] {
        let p = s.partner(perm, SCOPE_CLIENTS, SCOPE_LOCATIONS).await;
        single.push((perm, bearer(&s.token(&p).await)));
    }

    let AuthCases {
        unauthenticated,
        authorized,
    } = auth_cases(
        &s,
        &scoped,
        &scoped_token,
        ALL,
        (SCOPE_CLIENTS, SCOPE_LOCATIONS),
        &Req::list(""),
    )
    .await;

    let (pi, oi, ooc, ool, miss) = (
        p_in.as_str(),
        o_in.as_str(),
        o_oc.as_str(),
        o_ol.as_str(),
        missing.as_str(),
    );
    let scoped_auth = bearer(&scoped_token);
    let auth = Some(scoped_auth.as_str());
    let mut n = 0usize;
    let mut cases: Vec<Case> = Vec::new();
    for ep in Ep::all() {
        let e = ep.name();
        let t = match ep {
            Ep::Act(a) => Some(&targets[&a]),
            _ => None,
        };
        let target = t.map_or("", |t| t.in_scope[0].as_str());

        // 1. Authentication, on a request that would otherwise succeed.
        for (what, a) in &unauthenticated {
            n += 1;
            cases.push(Case::new(
                format!("{e} / {what}"),
                a.as_deref(),
                in_scope_request(ep, n, pi, oi, target),
                401,
            ));
        }

        // 2. The endpoint's permission, before any scope check.
        let no_perm = Some(lacking[ep.permission()].as_str());
        let label = format!("{e} / missing permission {}", ep.permission());
        n += 1;
        cases.push(Case::new(
            format!("{label}, in-scope request"),
            no_perm,
            in_scope_request(ep, n, pi, oi, target),
            403,
        ));
        match ep {
            Ep::Place => cases.push(Case::new(
                format!("{label}, out-of-scope body"),
                no_perm,
                Req::place(order_body(&p_oc, "C2", "L3")),
                403,
            )),
            Ep::Read => cases.push(
                Case::new(
                    format!("{label}, out-of-scope record (403 before 404)"),
                    no_perm,
                    Req::read(ool),
                    403,
                )
                .twin(Req::read(miss)),
            ),
            Ep::Act(a) => {
                let t = t.expect("targets");
                cases.push(
                    Case::new(
                        format!("{label}, out-of-scope record (403 before 404)"),
                        no_perm,
                        a.req(&t.out_location),
                        403,
                    )
                    .twin(a.req(miss)),
                );
            }
            Ep::List | Ep::Search | Ep::Catalog => {}
        }

        // 3 and 4. Scope: out-of-scope client, then out-of-scope location.
        for (kind, read_record, patient_out, client, location, filter) in [
            (
                "out-of-scope client",
                ooc,
                p_oc.as_str(),
                "C2",
                "L3",
                "clientID",
            ),
            (
                "out-of-scope location",
                ool,
                p_ol.as_str(),
                "C1",
                "L2",
                "locationID",
            ),
        ] {
            let label = format!("{e} / {kind}");
            let filter_value = if filter == "clientID" {
                client
            } else {
                location
            };
            match ep {
                Ep::Place => {
                    cases.push(Case::new(
                        format!("{label} in the body"),
                        auth,
                        Req::place(order_body(patient_out, client, location)),
                        403,
                    ));
                    // Scope comes before validation (415 and 422).
                    cases.push(Case::new(
                        format!("{label} in an otherwise invalid body sent as text/plain"),
                        auth,
                        Req::place(json!({"clientID": client, "locationID": location}))
                            .content_type("text/plain"),
                        403,
                    ));
                    // In-scope ids, but the patient is out of scope: the
                    // answer for a patient that does not exist.
                    let hidden = order_body(patient_out, "C1", "L1");
                    let unknown = order_body(miss, "C1", "L1");
                    cases.push(
                        Case::new(
                            format!("{label}: in-scope ids, a patient out of scope (422)"),
                            auth,
                            Req::place(hidden),
                            422,
                        )
                        .twin(Req::place(unknown)),
                    );
                }
                Ep::Read => cases.push(
                    Case::new(
                        format!("{label}: the record"),
                        auth,
                        Req::read(read_record),
                        404,
                    )
                    .twin(Req::read(miss)),
                ),
                Ep::List => {
                    cases.push(
                        Case::new(
                            format!("{label}: unfiltered list"),
                            auth,
                            Req::list("?limit=500"),
                            200,
                        )
                        .items(&[oi], &[read_record]),
                    );
                    cases.push(
                        Case::new(
                            format!("{label}: list filtered on {filter}={filter_value}"),
                            auth,
                            Req::list(&format!("?{filter}={filter_value}")),
                            200,
                        )
                        .items(&[], &[read_record]),
                    );
                    cases.push(
                        Case::new(
                            format!("{label}: list filtered on the record's patientID"),
                            auth,
                            Req::list(&format!("?patientID={patient_out}")),
                            200,
                        )
                        .items(&[], &[read_record]),
                    );
                }
                Ep::Search => {
                    cases.push(
                        Case::new(
                            format!("{label}: unfiltered search"),
                            auth,
                            Req::search(json!({"limit": 500})),
                            200,
                        )
                        .items(&[oi], &[read_record]),
                    );
                    cases.push(
                        Case::new(
                            format!("{label}: search on {filter}={filter_value}"),
                            auth,
                            Req::search(json!({ filter: filter_value })),
                            200,
                        )
                        .items(&[], &[read_record]),
                    );
                    cases.push(
                        Case::new(
                            format!("{label}: search on the record's patientID"),
                            auth,
                            Req::search(json!({ "patientID": patient_out })),
                            200,
                        )
                        .items(&[], &[read_record]),
                    );
                }
                Ep::Act(a) => {
                    let t = t.expect("targets");
                    let record = if client == "C2" {
                        &t.out_client
                    } else {
                        &t.out_location
                    };
                    cases.push(
                        Case::new(format!("{label}: the record"), auth, a.req(record), 404)
                            .twin(a.req(miss)),
                    );
                    // The record's scope comes before the body's validation.
                    cases.push(
                        Case::new(
                            format!("{label}: the record, with an invalid body"),
                            auth,
                            a.invalid_req(record),
                            404,
                        )
                        .twin(a.invalid_req(miss)),
                    );
                }
                Ep::Catalog => cases.push(
                    Case::new(
                        format!("{e} / a partner whose scope is elsewhere ({kind}): not scoped"),
                        Some(&elsewhere[kind]),
                        Req::catalog(),
                        200,
                    )
                    .catalog(),
                ),
            }
        }
        if ep == Ep::Place {
            // Both ids are in the scope sets, but L3 belongs to C2.
            cases.push(Case::new(
                format!("{e} / in-scope ids, location of another client"),
                auth,
                Req::place(order_body(pi, "C1", "L3")),
                422,
            ));
        }
        if ep == Ep::Catalog {
            for (perm, a) in &single {
                cases.push(
                    Case::new(format!("{e} / {perm} alone"), Some(a), Req::catalog(), 200)
                        .catalog(),
                );
            }
        }

        // 5. In scope: each success on its own order.
        for (i, (what, a)) in authorized.iter().enumerate() {
            n += 1;
            let target = t.map_or("", |t| t.in_scope[i].as_str());
            let case = Case::new(
                format!("{e} / {what}"),
                Some(a),
                in_scope_request(ep, n, pi, oi, target),
                ep.ok_status(),
            );
            cases.push(match ep {
                Ep::Place => case.created(),
                Ep::Read => case.record(oi, "ordered", 0),
                Ep::List | Ep::Search => case.items(&[oi], &[ooc, ool]),
                Ep::Act(act) => {
                    let status = act.leads_to().unwrap_or(act.allowed_from()[0]);
                    case.record(target, status, 1)
                }
                Ep::Catalog => case.catalog(),
            });
        }
    }

    let mut failures: Vec<String> = Vec::new();
    for case in &cases {
        let name = &case.name;
        let events_before = s.event_count(None).await;
        let a = send(&s, &case.req, case.authorization.as_deref()).await;
        let events_after = s.event_count(None).await;
        if !check_case(
            name,
            &a,
            case.status,
            events_after - events_before,
            &mut failures,
        ) {
            continue;
        }
        if let Some(twin) = &case.twin {
            let t = send(&s, twin, case.authorization.as_deref()).await;
            check_twin(name, &a, &t, &mut failures);
        }
        if !(200..300).contains(&a.status) {
            continue;
        }
        let v = a.json();
        if let Some(expected) = case.events {
            if events_after - events_before != expected {
                failures.push(format!(
                    "{name}: appended {} event(s), expected {expected}",
                    events_after - events_before
                ));
            }
        }
        if case.catalog {
            let has_tsh = v["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|t| t["code"] == "TSH"));
            if !has_tsh {
                failures.push(format!("{name}: the catalog lacks TSH: {}", a.text()));
            }
            continue;
        }
        if let Value::Array(items) = &v["items"] {
            let ids: Vec<&str> = items.iter().filter_map(|i| i["orderID"].as_str()).collect();
            for id in &case.present {
                if !ids.contains(&id.as_str()) {
                    failures.push(format!("{name}: in-scope order {id} missing"));
                }
            }
            for id in &case.absent {
                if ids.contains(&id.as_str()) {
                    failures.push(format!("{name}: out-of-scope order {id} listed"));
                }
            }
            for i in items {
                let (c, l) = (
                    i["clientID"].as_str().unwrap_or_default(),
                    i["locationID"].as_str().unwrap_or_default(),
                );
                if c != "C1" || !["L1", "L3"].contains(&l) {
                    failures.push(format!(
                        "{name}: listed an order of {c}/{l}, outside the scope"
                    ));
                }
            }
            continue;
        }
        if let Some(id) = &case.record {
            if v["orderID"].as_str() != Some(id.as_str()) {
                failures.push(format!("{name}: answered another record: {v}"));
            }
        }
        if let Some(status) = case.order_status {
            if v["status"] != status {
                failures.push(format!(
                    "{name}: status {} (expected {status})",
                    v["status"]
                ));
            }
        }
        let etag = format!("\"{}\"", v["version"]);
        if a.header("etag").as_deref() != Some(etag.as_str()) {
            failures.push(format!(
                "{name}: ETag {:?}, expected {etag}",
                a.header("etag")
            ));
        }
        if case.created {
            if v["clientID"] != "C1"
                || v["locationID"] != "L1"
                || v["status"] != "ordered"
                || v["version"] != 1
            {
                failures.push(format!("{name}: created {v}"));
            }
            let location = format!("/v1/orders/{}", v["orderID"].as_str().unwrap_or("?"));
            if a.header("location").as_deref() != Some(location.as_str()) {
                failures.push(format!(
                    "{name}: Location {:?}, expected {location}",
                    a.header("location")
                ));
            }
        }
    }
    println!(
        "order access matrix: {} cases in {:?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    s.stop().await;
}

/// Where a JSON order answer embeds its patient; `None` when null or absent.
fn embedded(v: &Value) -> Option<&Value> {
    v.get("patient").filter(|p| !p.is_null())
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_embed_patient_details_only_for_callers_who_may_read_the_patient() {
    let s = TestStack::start().await;
    s.standard().await;
    admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .expect("catalog");
    let lab = s.partner(ALL, "*", "*").await;
    let admin_token = s.token(&lab).await;

    // A patient in scope (C1/L1), and one of C1 at L2, out of the partners'
    // location scope, whose orders are placed at L1 (in scope).
    let p_in = patient(&s, &admin_token, "EMB-IN", "C1", "L1").await;
    let mut body = patient_body("EMB-HIDDEN");
    body["locationID"] = json!("L2");
    body["firstName"] = json!("Charles");
    body["lastName"] = json!("Babbage");
    body["dateOfBirth"] = json!("1985-03-04");
    body["sex"] = json!("male");
    let p_hidden = patient_from(&s, &admin_token, &body).await;

    let partner = |perms: &'static str| {
        let s = &s;
        async move {
            let p = s.partner(perms, SCOPE_CLIENTS, SCOPE_LOCATIONS).await;
            s.token(&p).await
        }
    };
    let reader = partner("tests:create,tests:read,tests:update,patients:read").await;
    let blind = partner("tests:create,tests:read,tests:update").await;
    let results_writer = partner("tests:read,tests:update,results:write").await;

    let mut failures: Vec<String> = Vec::new();
    // Checks one answer: the patient shown (and right) or not shown at all.
    let mut check = |what: &str, a: &Answer, shown: Option<(&str, &str, &str)>| {
        if !(200..300).contains(&a.status) {
            failures.push(format!("{what}: status {} {}", a.status, a.text()));
            return;
        }
        let v = a.json();
        let orders: Vec<Value> = match &v["items"] {
            Value::Array(items) => items.clone(),
            _ => vec![v.clone()],
        };
        if orders.is_empty() {
            failures.push(format!("{what}: no order listed"));
        }
        for o in &orders {
            match (shown, embedded(o)) {
                (Some((first, last, dob)), Some(p)) => {
                    if p["firstName"] != first || p["lastName"] != last || p["dateOfBirth"] != dob {
                        failures.push(format!("{what}: embedded the wrong patient {p}"));
                    }
                }
                (Some(_), None) => {
                    failures.push(format!("{what}: patient details missing: {o}"));
                }
                (None, Some(p)) => {
                    failures.push(format!("{what}: patient details leaked: {p}"));
                }
                (None, None) => {}
            }
        }
        if shown.is_none() && (a.text().contains("Babbage") || a.text().contains("Lovelace")) {
            failures.push(format!("{what}: a patient's name in {}", a.text()));
        }
    };
    let ada = Some(("Ada", "Lovelace", "1990-12-10"));

    // 1. tests:* with patients:read, patient in scope: shown everywhere.
    // 2. tests:* without patients:read: never shown.
    for (token, who, shown) in [(&reader, "reader", ada), (&blind, "no patients:read", None)] {
        let auth = bearer(token);
        let a = send(&s, &Req::place(order_body(&p_in, "C1", "L1")), Some(&auth)).await;
        check(&format!("{who}: POST /v1/orders answer"), &a, shown);
        let id = id_of(&a.json());
        let ct = a.header("consistency-token").unwrap_or_default();
        let a = send(
            &s,
            &Req::read(&id).header("consistency-token", ct),
            Some(&auth),
        )
        .await;
        check(&format!("{who}: GET /v1/orders/{{id}}"), &a, shown);
        let a = send(&s, &Req::list(&format!("?patientID={p_in}")), Some(&auth)).await;
        check(&format!("{who}: GET /v1/orders"), &a, shown);
        let a = send(&s, &Req::search(json!({"patientID": p_in})), Some(&auth)).await;
        check(&format!("{who}: POST /v1/orders/search"), &a, shown);
        let a = send(&s, &Action::Collect.req(&id), Some(&auth)).await;
        check(&format!("{who}: collect answer"), &a, shown);
        let a = send(&s, &Action::Update.req(&id), Some(&auth)).await;
        check(&format!("{who}: PATCH answer"), &a, shown);
    }

    // 3. A results:write partner without patients:read: never shown.
    let auth = bearer(&results_writer);
    let v = order_in(&s, &admin_token, &p_in, "C1", "L1", "ordered").await;
    let id = id_of(&v);
    let mut ct = String::new();
    for action in [
        Action::Collect,
        Action::Receive,
        Action::Start,
        Action::Results,
        Action::Finalize,
        Action::Correct,
    ] {
        let a = send(&s, &action.req(&id), Some(&auth)).await;
        check(
            &format!(
                "results:write without patients:read: {} answer",
                action.name()
            ),
            &a,
            None,
        );
        ct = a.header("consistency-token").unwrap_or_default();
    }
    let a = send(
        &s,
        &Req::read(&id).header("consistency-token", ct),
        Some(&auth),
    )
    .await;
    check(
        "results:write without patients:read: GET /v1/orders/{id}",
        &a,
        None,
    );
    let a = send(&s, &Req::list(&format!("?patientID={p_in}")), Some(&auth)).await;
    check(
        "results:write without patients:read: GET /v1/orders",
        &a,
        None,
    );

    // 4. patients:read, order in scope, but its patient out of scope.
    let v = order_in(&s, &admin_token, &p_hidden, "C1", "L1", "ordered").await;
    let id = id_of(&v);
    settle(&s, &admin_token, &id, 1).await;
    let auth = bearer(&reader);
    let a = send(&s, &Req::read(&id), Some(&auth)).await;
    check("patient out of scope: GET /v1/orders/{id}", &a, None);
    let a = send(
        &s,
        &Req::list(&format!("?patientID={p_hidden}")),
        Some(&auth),
    )
    .await;
    check("patient out of scope: GET /v1/orders", &a, None);
    let a = send(
        &s,
        &Req::search(json!({"patientID": p_hidden})),
        Some(&auth),
    )
    .await;
    check("patient out of scope: POST /v1/orders/search", &a, None);
    let a = send(&s, &Action::Collect.req(&id), Some(&auth)).await;
    check("patient out of scope: collect answer", &a, None);
    // Control: a partner whose scope holds the patient sees it.
    let a = send(&s, &Req::read(&id), Some(&bearer(&admin_token))).await;
    check(
        "control: all-seeing partner, GET /v1/orders/{id}",
        &a,
        Some(("Charles", "Babbage", "1985-03-04")),
    );

    assert!(
        failures.is_empty(),
        "{} embedding check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    s.stop().await;
}

/// One cell of the action table: `action` on a fresh order in `status`.
async fn table_cell(
    s: &TestStack,
    token: &str,
    patient: &str,
    status: &'static str,
    action: Action,
) -> Vec<String> {
    let name = format!("{} from {status}", action.label());
    let v = order_in(s, token, patient, "C1", "L1", status).await;
    let id = id_of(&v);
    let stream: Uuid = id.parse().expect("uuid");
    let version = v["version"].as_i64().expect("version");
    let before = s.event_count(Some(stream)).await;
    let a = send(s, &action.req(&id), Some(&bearer(token))).await;
    let appended = s.event_count(Some(stream)).await - before;
    let mut f = Vec::new();
    if action.allowed_from().contains(&status) {
        let expected = action.leads_to().unwrap_or(status);
        if a.status != 200 {
            f.push(format!(
                "{name}: status {} (expected 200, leading to {expected}), body {}",
                a.status,
                a.text()
            ));
            return f;
        }
        let v = a.json();
        if v["status"] != expected {
            f.push(format!(
                "{name}: status {} (expected {expected})",
                v["status"]
            ));
        }
        if v["version"] != version + 1 {
            f.push(format!(
                "{name}: version {} (expected {})",
                v["version"],
                version + 1
            ));
        }
        if appended != 1 {
            f.push(format!("{name}: appended {appended} event(s), expected 1"));
        }
        let value = |v: &Value| v["results"][0]["value"].clone();
        match action {
            Action::Update if v["priority"] != "urgent" => f.push(format!(
                "{name}: priority {} (expected urgent)",
                v["priority"]
            )),
            Action::Cancel if v["cancelReason"] != "ordered in error" => f.push(format!(
                "{name}: cancelReason {} (expected the reason sent)",
                v["cancelReason"]
            )),
            Action::Results if value(&v) != "2.1" => {
                f.push(format!("{name}: results {}", v["results"]))
            }
            Action::Correct if value(&v) != "2.3" => {
                f.push(format!("{name}: results {}", v["results"]))
            }
            _ => {}
        }
    } else {
        if a.status != 409 {
            f.push(format!(
                "{name}: status {} (expected 409), body {}",
                a.status,
                a.text()
            ));
            return f;
        }
        f.extend(problem_failures(&name, &a));
        let p = a.json();
        if !p["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("invalid-status"))
        {
            f.push(format!(
                "{name}: problem type {} (expected …invalid-status)",
                p["type"]
            ));
        }
        if appended != 0 {
            f.push(format!(
                "{name}: a refused action appended {appended} event(s)"
            ));
        }
    }
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_from_every_status_follows_the_contract_table() {
    let started = Instant::now();
    let s = TestStack::start().await;
    s.standard().await;
    admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .expect("catalog");
    let lab = s.partner(ALL, "*", "*").await;
    let token = s.token(&lab).await;
    let p = patient(&s, &token, "TABLE-1", "C1", "L1").await;

    let cells: Vec<(&'static str, Action)> = STATUSES
        .iter()
        .flat_map(|status| Action::ALL.map(|a| (*status, a)))
        .collect();
    let (sr, tr, pr) = (&s, token.as_str(), p.as_str());
    let results: Vec<Vec<String>> = stream::iter(cells.iter().copied())
        .map(|(status, action)| table_cell(sr, tr, pr, status, action))
        .buffer_unordered(8)
        .collect()
        .await;
    let table_failures: Vec<String> = results.into_iter().flatten().collect();
    println!(
        "action table: {} cells in {:?}",
        cells.len(),
        started.elapsed()
    );

    // If-Match on every action: stale → 412 and nothing changes; current →
    // 200; absent → 200.
    let auth = bearer(&token);
    let mut failures: Vec<String> = Vec::new();
    for action in Action::ALL {
        let from = action.allowed_from()[0];
        let name = format!("{} from {from}", action.label());
        let mut v = order_in(&s, &token, &p, "C1", "L1", from).await;
        let id = id_of(&v);
        if v["version"] == 1 {
            // A new order has no earlier version: change it once.
            let a = send(
                &s,
                &Req::new(
                    Method::PATCH,
                    format!("/v1/orders/{id}"),
                    Some((
                        "application/merge-patch+json",
                        json!({"priority": "stat"}).to_string(),
                    )),
                ),
                Some(&auth),
            )
            .await;
            assert_eq!(a.status, 200, "{name}: a priority change: {}", a.text());
            v = a.json();
        }
        let version = v["version"].as_i64().expect("version");
        let stream: Uuid = id.parse().expect("uuid");

        let before = s.event_count(Some(stream)).await;
        let stale = send(
            &s,
            &action
                .req(&id)
                .header("if-match", format!("\"{}\"", version - 1)),
            Some(&auth),
        )
        .await;
        let appended = s.event_count(Some(stream)).await - before;
        if stale.status != 412 {
            failures.push(format!(
                "{name}, stale If-Match: status {} (expected 412), body {}",
                stale.status,
                stale.text()
            ));
        } else {
            failures.extend(problem_failures(&format!("{name}, stale If-Match"), &stale));
        }
        if appended != 0 {
            failures.push(format!(
                "{name}, stale If-Match: appended {appended} event(s)"
            ));
        }

        let current = send(
            &s,
            &action.req(&id).header("if-match", format!("\"{version}\"")),
            Some(&auth),
        )
        .await;
        let expected = action.leads_to().unwrap_or(from);
        let c = current.json();
        if current.status != 200 || c["status"] != expected || c["version"] != version + 1 {
            failures.push(format!(
                "{name}, current If-Match \"{version}\": status {} (expected 200, {expected}, version {}), body {}",
                current.status,
                version + 1,
                current.text()
            ));
        } else if current.header("etag") != Some(format!("\"{}\"", version + 1)) {
            failures.push(format!(
                "{name}, current If-Match: ETag {:?}",
                current.header("etag")
            ));
        }

        let v = order_in(&s, &token, &p, "C1", "L1", from).await;
        let absent = send(&s, &action.req(&id_of(&v)), Some(&auth)).await;
        if absent.status != 200 || absent.json()["status"] != expected {
            failures.push(format!(
                "{name}, no If-Match: status {} (expected 200, {expected}), body {}",
                absent.status,
                absent.text()
            ));
        }
    }
    println!("action table and If-Match: {:?}", started.elapsed());
    assert!(
        table_failures.is_empty() && failures.is_empty(),
        "{} of {} cells failed:\n{}\n{} If-Match check(s) failed:\n{}",
        table_failures.len(),
        cells.len(),
        table_failures.join("\n"),
        failures.len(),
        failures.join("\n")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn order_actions_and_placements_are_idempotent() {
    let s = TestStack::start().await;
    s.standard().await;
    admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .expect("catalog");
    let lab = s.partner(ALL, "*", "*").await;
    let token = s.token(&lab).await;
    let auth = bearer(&token);
    let p = patient(&s, &token, "IDEM-1", "C1", "L1").await;

    // receive twice with the same key: the first answer, one event.
    let v = order_in(&s, &token, &p, "C1", "L1", "collected").await;
    let id = id_of(&v);
    let stream: Uuid = id.parse().expect("uuid");
    let before = s.event_count(Some(stream)).await;
    let req = Action::Receive
        .req(&id)
        .header("idempotency-key", "receive-1");
    let first = send(&s, &req, Some(&auth)).await;
    let second = send(&s, &req, Some(&auth)).await;
    assert_eq!(first.status, 200, "first receive: {}", first.text());
    assert_eq!(first.json()["status"], "received");
    assert_eq!(
        (second.status, second.text()),
        (first.status, first.text()),
        "a retry answers the first response"
    );
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(
        s.event_count(Some(stream)).await - before,
        1,
        "the retry appends no event"
    );
    // Without the key it is a new request, which no longer fits the status.
    let again = send(&s, &Action::Receive.req(&id), Some(&auth)).await;
    assert_eq!(again.status, 409, "{}", again.text());
    // The key is scoped to the path: the same key on /start is another request.
    let start = send(
        &s,
        &Action::Start
            .req(&id)
            .header("idempotency-key", "receive-1"),
        Some(&auth),
    )
    .await;
    assert_eq!(start.status, 200, "{}", start.text());
    assert_eq!(start.json()["status"], "in_progress");
    assert_eq!(s.event_count(Some(stream)).await - before, 2);

    // The same key with another body: 422, nothing changes.
    let v = order_in(&s, &token, &p, "C1", "L1", "ordered").await;
    let id = id_of(&v);
    let stream: Uuid = id.parse().expect("uuid");
    let cancel = |reason: &str| {
        Req::new(
            Method::POST,
            format!("/v1/orders/{id}/cancel"),
            Some(("application/json", json!({"reason": reason}).to_string())),
        )
        .header("idempotency-key", "cancel-1")
    };
    let a = send(&s, &cancel("duplicate"), Some(&auth)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let b = send(&s, &cancel("another reason"), Some(&auth)).await;
    assert_eq!(b.status, 422, "same key, other body: {}", b.text());
    assert_eq!(s.event_count(Some(stream)).await, 2, "placed and canceled");

    // Placing twice with the same key: one order.
    let mut body = order_body(&p, "C1", "L1");
    body["externalOrderID"] = json!("IDEM-PLACE-1");
    let req = Req::place(body).header("idempotency-key", "place-1");
    let before = s.event_count(None).await;
    let first = send(&s, &req, Some(&auth)).await;
    let second = send(&s, &req, Some(&auth)).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(
        (second.status, second.text()),
        (first.status, first.text()),
        "a retried placement answers the first response"
    );
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(s.event_count(None).await - before, 1, "one placement event");
    let ct = first
        .header("consistency-token")
        .expect("Consistency-Token");
    let list = send(
        &s,
        &Req::list("?externalOrderID=IDEM-PLACE-1").header("consistency-token", ct),
        Some(&auth),
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let items = list.json()["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "one order: {}", list.text());
    assert_eq!(items[0]["orderID"], first.json()["orderID"]);

    // Authorization is checked again on a retry.
    let gone = s.partner(ALL, "*", "*").await;
    let gone_auth = bearer(&s.token(&gone).await);
    let mut body = order_body(&p, "C1", "L1");
    body["externalOrderID"] = json!("IDEM-PLACE-2");
    let req = Req::place(body).header("idempotency-key", "place-2");
    assert_eq!(send(&s, &req, Some(&gone_auth)).await.status, 201);
    admin::disable_partner(&s.write, &TestStack::operator(), gone.id)
        .await
        .expect("disable");
    let retry = send(&s, &req, Some(&gone_auth)).await;
    assert_eq!(
        retry.status,
        401,
        "a retry by a disabled partner: {}",
        retry.text()
    );
    s.stop().await;
}
