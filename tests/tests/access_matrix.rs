//! The access matrix of every patient endpoint, and `/oauth/token`.
//!
//! Every endpoint (`POST /v1/patients`, `GET /v1/patients/{id}`,
//! `GET /v1/patients`, `POST /v1/patients/search`, `PATCH /v1/patients/{id}`)
//! meets every access case, and the answer follows the contract's check order:
//! authentication (`401` with `WWW-Authenticate: Bearer`), the endpoint's
//! permission (`403`), the target record in scope (`404`, byte-for-byte the
//! answer for a record that does not exist), the body's `clientID` /
//! `locationID` in scope (`403`), then validation and success. Lists and
//! searches silently keep only in-scope records. A refused request appends no
//! event.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use command_handler::admin;
use lis::stack::Roles;
use reqwest::Method;
use serde_json::{json, Value};
use tests::checks::{
    auth_cases, bearer, check_case, check_twin, send, Answer, AuthCases, Req, JSON_CT, MERGE_CT,
};
use tests::{patient_body, test_config, TestPartner, TestStack, SIX};
use uuid::Uuid;

/// The scope of the partners of the matrix: client C1, and locations L1 (of
/// C1) and L3 (of C2). A patient of C2 at L3 is out of scope only by its
/// client; a patient of C1 at L2 only by its location.
const SCOPE_CLIENTS: &str = "C1";
const SCOPE_LOCATIONS: &str = "L1,L3";

/// The patient requests of the matrix.
trait PatientReqs {
    fn create(body: Value) -> Self;
    fn read(id: &str) -> Self;
    fn list(query: &str) -> Self;
    fn search(body: Value) -> Self;
    fn update(id: &str, body: Value) -> Self;
}

impl PatientReqs for Req {
    fn create(body: Value) -> Req {
        Req::with_body(Method::POST, "/v1/patients".into(), JSON_CT, &body)
    }

    fn read(id: &str) -> Req {
        Req::get(format!("/v1/patients/{id}"))
    }

    fn list(query: &str) -> Req {
        Req::get(format!("/v1/patients{query}"))
    }

    fn search(body: Value) -> Req {
        Req::with_body(Method::POST, "/v1/patients/search".into(), JSON_CT, &body)
    }

    fn update(id: &str, body: Value) -> Req {
        Req::with_body(Method::PATCH, format!("/v1/patients/{id}"), MERGE_CT, &body)
    }
}

/// The patient endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ep {
    Create,
    Read,
    List,
    Search,
    Update,
}

impl Ep {
    const ALL: [Ep; 5] = [Ep::Create, Ep::Read, Ep::List, Ep::Search, Ep::Update];

    fn name(self) -> &'static str {
        match self {
            Ep::Create => "POST /v1/patients",
            Ep::Read => "GET /v1/patients/{id}",
            Ep::List => "GET /v1/patients",
            Ep::Search => "POST /v1/patients/search",
            Ep::Update => "PATCH /v1/patients/{id}",
        }
    }

    fn permission(self) -> &'static str {
        match self {
            Ep::Create => "patients:create",
            Ep::Read | Ep::List | Ep::Search => "patients:read",
            Ep::Update => "patients:update",
        }
    }

    fn ok_status(self) -> u16 {
        match self {
            Ep::Create => 201,
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
    /// For 2xx answers: patient ids the answer must show.
    present: Vec<String>,
    /// For list answers: patient ids the answer must not show.
    absent: Vec<String>,
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
        }
    }

    fn twin(mut self, twin: Req) -> Case {
        self.twin = Some(twin);
        self
    }

    fn items(mut self, present: &[&str], absent: &[&str]) -> Case {
        self.present = present.iter().map(|s| s.to_string()).collect();
        self.absent = absent.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// Creates a patient of `client` at `location` and waits until the read
/// model shows it (Consistency-Token, then polling on 503).
async fn fixture(
    s: &TestStack,
    token: &str,
    external: &str,
    client: &str,
    location: &str,
) -> String {
    let mut body = patient_body(external);
    body["clientID"] = json!(client);
    body["locationID"] = json!(location);
    let r = s.create_patient(token, &body).await;
    assert_eq!(r.status(), 201, "fixture {external}");
    let ct = r
        .headers()
        .get("consistency-token")
        .expect("Consistency-Token on a write")
        .to_str()
        .unwrap()
        .to_string();
    let id = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .expect("patientID")
        .to_string();
    for _ in 0..30 {
        let r = s
            .http
            .get(format!("{}/v1/patients/{id}", s.base))
            .bearer_auth(token)
            .header("Consistency-Token", &ct)
            .send()
            .await
            .expect("request");
        match r.status().as_u16() {
            200 => return id,
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("fixture {external}: read answered {other}"),
        }
    }
    panic!("fixture {external} never reached the read model");
}

/// The request an in-scope caller of `ep` sends; `n` keeps bodies unique.
fn in_scope_request(ep: Ep, n: usize, p_in: &str) -> Req {
    match ep {
        Ep::Create => Req::create(patient_body(&format!("MX-NEW-{n}"))),
        Ep::Read => Req::read(p_in),
        Ep::List => Req::list("?limit=500"),
        Ep::Search => Req::search(json!({"lastName": "Lovelace", "limit": 500})),
        Ep::Update => Req::update(p_in, json!({"phone": format!("+1555555{:04}", n % 10_000)})),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_patient_endpoint_checks_access_in_the_contract_order() {
    let s = TestStack::start().await;
    // C1 with L1 and L2, C2 with L3, and an all-seeing partner for fixtures.
    let (_, admin_token) = s.standard().await;

    let p_in = fixture(&s, &admin_token, "MX-IN", "C1", "L1").await;
    let p_out_client = fixture(&s, &admin_token, "MX-OUT-CLIENT", "C2", "L3").await;
    let p_out_location = fixture(&s, &admin_token, "MX-OUT-LOCATION", "C1", "L2").await;
    let missing = Uuid::new_v4().to_string();

    // The partner of the matrix, and one lacking each patient permission.
    let scoped = s.partner(SIX, SCOPE_CLIENTS, SCOPE_LOCATIONS).await;
    let scoped_token = s.token(&scoped).await;
    let mut lacking: BTreeMap<&str, String> = BTreeMap::new();
    for perm in ["patients:create", "patients:read", "patients:update"] {
        let perms: Vec<&str> = SIX.split(',').filter(|p| *p != perm).collect();
        let p = s
            .partner(&perms.join(","), SCOPE_CLIENTS, SCOPE_LOCATIONS)
            .await;
        lacking.insert(perm, bearer(&s.token(&p).await));
    }

    let AuthCases {
        unauthenticated,
        authorized,
    } = auth_cases(
        &s,
        &scoped,
        &scoped_token,
        SIX,
        (SCOPE_CLIENTS, SCOPE_LOCATIONS),
        &Req::list(""),
    )
    .await;

    let (pi, poc, pol, miss) = (
        p_in.as_str(),
        p_out_client.as_str(),
        p_out_location.as_str(),
        missing.as_str(),
    );
    let scoped_auth = bearer(&scoped_token);
    let auth = Some(scoped_auth.as_str());
    let mut n = 0usize;
    let mut cases: Vec<Case> = Vec::new();
    for ep in Ep::ALL {
        let e = ep.name();

        // 1. Authentication, on a request that would otherwise succeed.
        for (what, a) in &unauthenticated {
            n += 1;
            cases.push(Case::new(
                format!("{e} / {what}"),
                a.as_deref(),
                in_scope_request(ep, n, pi),
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
            in_scope_request(ep, n, pi),
            403,
        ));
        match ep {
            Ep::Create => {
                let mut body = patient_body("MX-NOPERM");
                body["clientID"] = json!("C2");
                body["locationID"] = json!("L3");
                cases.push(Case::new(
                    format!("{label}, out-of-scope body"),
                    no_perm,
                    Req::create(body),
                    403,
                ));
            }
            Ep::Read => {
                cases.push(
                    Case::new(
                        format!("{label}, out-of-scope record (403 before 404)"),
                        no_perm,
                        Req::read(pol),
                        403,
                    )
                    .twin(Req::read(miss)),
                );
            }
            Ep::Update => {
                let body = json!({"firstName": "Mallory"});
                cases.push(
                    Case::new(
                        format!("{label}, out-of-scope record (403 before 404)"),
                        no_perm,
                        Req::update(pol, body.clone()),
                        403,
                    )
                    .twin(Req::update(miss, body)),
                );
            }
            Ep::List | Ep::Search => {}
        }

        // 3 and 4. Scope: out-of-scope client, then out-of-scope location.
        for (kind, record, client, location, filter) in [
            ("out-of-scope client", poc, "C2", "L3", "clientID"),
            ("out-of-scope location", pol, "C1", "L2", "locationID"),
        ] {
            let label = format!("{e} / {kind}");
            let filter_value = if filter == "clientID" {
                client
            } else {
                location
            };
            match ep {
                Ep::Create => {
                    let mut body = patient_body(&format!("MX-OUT-{n}"));
                    body["clientID"] = json!(client);
                    body["locationID"] = json!(location);
                    cases.push(Case::new(
                        format!("{label} in the body"),
                        auth,
                        Req::create(body),
                        403,
                    ));
                    // Scope comes before validation (415 and 422).
                    cases.push(Case::new(
                        format!("{label} in an otherwise invalid body sent as text/plain"),
                        auth,
                        Req::create(json!({"clientID": client, "locationID": location}))
                            .content_type("text/plain"),
                        403,
                    ));
                }
                Ep::Read => {
                    cases.push(
                        Case::new(format!("{label}: the record"), auth, Req::read(record), 404)
                            .twin(Req::read(miss)),
                    );
                }
                Ep::List => {
                    cases.push(
                        Case::new(
                            format!("{label}: unfiltered list"),
                            auth,
                            Req::list("?limit=500"),
                            200,
                        )
                        .items(&[pi], &[record]),
                    );
                    cases.push(
                        Case::new(
                            format!("{label}: list filtered on {filter}={filter_value}"),
                            auth,
                            Req::list(&format!("?{filter}={filter_value}")),
                            200,
                        )
                        .items(&[], &[record]),
                    );
                }
                Ep::Search => {
                    cases.push(
                        Case::new(
                            format!("{label}: search on lastName"),
                            auth,
                            Req::search(json!({"lastName": "Lovelace", "limit": 500})),
                            200,
                        )
                        .items(&[pi], &[record]),
                    );
                    cases.push(
                        Case::new(
                            format!("{label}: search on {filter}={filter_value}"),
                            auth,
                            Req::search(json!({ filter: filter_value })),
                            200,
                        )
                        .items(&[], &[record]),
                    );
                }
                Ep::Update => {
                    let body = json!({"firstName": "Mallory"});
                    cases.push(
                        Case::new(
                            format!("{label}: the record"),
                            auth,
                            Req::update(record, body.clone()),
                            404,
                        )
                        .twin(Req::update(miss, body)),
                    );
                    // The record's scope comes before the body's validation.
                    let bad = json!({"clientID": "C9", "sex": "bogus", "firstName": 7});
                    cases.push(
                        Case::new(
                            format!("{label}: the record, with an invalid body"),
                            auth,
                            Req::update(record, bad.clone()),
                            404,
                        )
                        .twin(Req::update(miss, bad)),
                    );
                }
            }
        }
        if ep == Ep::Update {
            cases.push(Case::new(
                format!("{e} / moving an in-scope record to an out-of-scope location"),
                auth,
                Req::update(pi, json!({"locationID": "L2"})),
                403,
            ));
            cases.push(Case::new(
                format!("{e} / moving to an out-of-scope location, with an invalid body"),
                auth,
                Req::update(pi, json!({"locationID": "L2", "sex": "bogus"})),
                403,
            ));
            // L3 is in the location set but belongs to C2: validation (422).
            cases.push(Case::new(
                format!("{e} / moving to a location of another client"),
                auth,
                Req::update(pi, json!({"locationID": "L3"})),
                422,
            ));
        }
        if ep == Ep::Create {
            // Both ids are in the scope sets, but L3 belongs to C2.
            let mut body = patient_body("MX-OTHER-CLIENT-LOCATION");
            body["locationID"] = json!("L3");
            cases.push(Case::new(
                format!("{e} / in-scope ids, location of another client"),
                auth,
                Req::create(body),
                422,
            ));
        }

        // 5. In scope.
        for (what, a) in &authorized {
            n += 1;
            let case = Case::new(
                format!("{e} / {what}"),
                Some(a),
                in_scope_request(ep, n, pi),
                ep.ok_status(),
            );
            cases.push(match ep {
                Ep::Read | Ep::Update => case.items(&[pi], &[]),
                Ep::List | Ep::Search => case.items(&[pi], &[poc, pol]),
                Ep::Create => case,
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
        if (200..300).contains(&a.status) {
            let v = a.json();
            match &v["items"] {
                Value::Array(items) => {
                    let ids: Vec<&str> = items
                        .iter()
                        .filter_map(|i| i["patientID"].as_str())
                        .collect();
                    for id in &case.present {
                        if !ids.contains(&id.as_str()) {
                            failures.push(format!("{name}: in-scope patient {id} missing"));
                        }
                    }
                    for id in &case.absent {
                        if ids.contains(&id.as_str()) {
                            failures.push(format!("{name}: out-of-scope patient {id} listed"));
                        }
                    }
                    for i in items {
                        let (c, l) = (
                            i["clientID"].as_str().unwrap_or_default(),
                            i["locationID"].as_str().unwrap_or_default(),
                        );
                        if c != "C1" || !["L1", "L3"].contains(&l) {
                            failures.push(format!(
                                "{name}: listed a record of {c}/{l}, outside the scope"
                            ));
                        }
                    }
                }
                _ => {
                    if let Some(id) = case.present.first() {
                        if v["patientID"].as_str() != Some(id.as_str()) {
                            failures.push(format!("{name}: answered another record: {v}"));
                        }
                    }
                    if ep_is_create(&case.req) {
                        if v["clientID"] != "C1" || v["locationID"] != "L1" {
                            failures.push(format!("{name}: created {v}"));
                        }
                        if a.header("location").is_none() {
                            failures.push(format!("{name}: no Location header"));
                        }
                    }
                    if events_after <= events_before && ep_is_create(&case.req) {
                        failures.push(format!("{name}: a create appended no event"));
                    }
                }
            }
        }
    }
    println!("access matrix: {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    s.stop().await;
}

fn ep_is_create(req: &Req) -> bool {
    req.method == Method::POST && req.path == "/v1/patients"
}

/// `POST /oauth/token` with a form and optional HTTP Basic credentials.
async fn token_request(
    s: &TestStack,
    http: &reqwest::Client,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Answer {
    let mut b = http.post(format!("{}/oauth/token", s.base)).form(form);
    if let Some((id, secret)) = basic {
        b = b.basic_auth(id, Some(secret));
    }
    Answer::read(b.send().await.expect("token request")).await
}

/// Checks an RFC 6749 error answer.
fn assert_oauth_error(what: &str, a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status, status, "{what}: status; body {}", a.text());
    assert_eq!(
        a.media_type(),
        "application/json",
        "{what}: RFC 6749 errors are plain JSON, not problem+json"
    );
    let v = a.json();
    assert_eq!(v["error"], error, "{what}: error code in {}", a.text());
    assert!(
        v.get("error_description").is_none_or(Value::is_string),
        "{what}: error_description is a string"
    );
}

/// Checks a successful token answer and that the token works.
async fn assert_token_works(what: &str, s: &TestStack, a: &Answer) {
    assert_eq!(a.status, 200, "{what}: body {}", a.text());
    assert_eq!(
        a.header("cache-control").as_deref(),
        Some("no-store"),
        "{what}: RFC 6749 5.1 Cache-Control"
    );
    let v = a.json();
    assert_eq!(v["token_type"], "Bearer", "{what}");
    assert!(
        v["expires_in"].as_u64().is_some_and(|n| n > 0),
        "{what}: expires_in {}",
        v["expires_in"]
    );
    assert_eq!(v["scope"], "patients:read", "{what}: scope");
    let token = v["access_token"].as_str().expect("access_token");
    assert_eq!(
        s.get(token, "/v1/patients").await.status(),
        200,
        "{what}: the token opens the API"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_answers_like_rfc_6749() {
    let s = TestStack::start().await;
    s.client_with_location("C1", "L1").await;
    let p = s.partner("patients:read", "C1", "L1").await;
    let (id, secret) = (p.client_id.as_str(), p.secret.as_str());
    let cc = ("grant_type", "client_credentials");

    let a = token_request(
        &s,
        &s.http,
        &[cc, ("client_id", id), ("client_secret", secret)],
        None,
    )
    .await;
    assert_token_works("credentials in the body", &s, &a).await;
    let a = token_request(&s, &s.http, &[cc], Some((id, secret))).await;
    assert_token_works("credentials in HTTP Basic", &s, &a).await;

    let a = token_request(
        &s,
        &s.http,
        &[cc, ("client_id", id), ("client_secret", "lis_sk_wrong")],
        None,
    )
    .await;
    assert_oauth_error("wrong secret in the body", &a, 401, "invalid_client");
    let a = token_request(&s, &s.http, &[cc], Some((id, "lis_sk_wrong"))).await;
    assert_oauth_error("wrong secret in HTTP Basic", &a, 401, "invalid_client");
    let a = token_request(
        &s,
        &s.http,
        &[cc, ("client_id", "lis_nobody"), ("client_secret", secret)],
        None,
    )
    .await;
    assert_oauth_error("unknown client_id", &a, 401, "invalid_client");
    // A NUL, which Postgres cannot take in text, is no client_id either
    // (it answered 503 "database unavailable"; schemathesis found it).
    let a = token_request(
        &s,
        &s.http,
        &[cc, ("client_id", "\0"), ("client_secret", secret)],
        None,
    )
    .await;
    assert_oauth_error("client_id with a NUL", &a, 401, "invalid_client");
    let a = token_request(
        &s,
        &s.http,
        &[cc, ("client_id", id), ("client_secret", "")],
        None,
    )
    .await;
    assert_oauth_error("empty secret", &a, 401, "invalid_client");

    let a = token_request(
        &s,
        &s.http,
        &[
            ("grant_type", "password"),
            ("client_id", id),
            ("client_secret", secret),
        ],
        None,
    )
    .await;
    assert_oauth_error("grant_type=password", &a, 400, "unsupported_grant_type");
    let a = token_request(
        &s,
        &s.http,
        &[("client_id", id), ("client_secret", secret)],
        None,
    )
    .await;
    assert_oauth_error("no grant_type", &a, 400, "invalid_request");

    // A rotated secret: the old one is refused, the new one works.
    let fresh = admin::rotate_secret(&s.write, &TestStack::operator(), p.id)
        .await
        .expect("rotate");
    let a = token_request(&s, &s.http, &[cc], Some((id, secret))).await;
    assert_oauth_error("secret before the rotation", &a, 401, "invalid_client");
    let a = token_request(&s, &s.http, &[cc], Some((id, &fresh.client_secret))).await;
    assert_token_works("secret after the rotation", &s, &a).await;

    // A disabled partner gets no token, however it authenticates.
    admin::disable_partner(&s.write, &TestStack::operator(), p.id)
        .await
        .expect("disable");
    let a = token_request(
        &s,
        &s.http,
        &[
            cc,
            ("client_id", id),
            ("client_secret", &fresh.client_secret),
        ],
        None,
    )
    .await;
    assert_oauth_error("disabled partner, body", &a, 401, "invalid_client");
    let a = token_request(&s, &s.http, &[cc], Some((id, &fresh.client_secret))).await;
    assert_oauth_error("disabled partner, HTTP Basic", &a, 401, "invalid_client");
    s.stop().await;
}

fn assert_rate_limited(what: &str, a: &Answer, elapsed: Duration) {
    assert_eq!(a.status, 429, "{what}: body {}", a.text());
    let retry: u64 = a
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: Retry-After"))
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After is delay-seconds"));
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
    assert!(
        a.json()["error"].is_string(),
        "{what}: an RFC 6749 error body: {}",
        a.text()
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "{what}: answered quickly, took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_requests_are_rate_limited_per_client_and_per_address() {
    let mut cfg = test_config();
    cfg.token_rate_per_minute = 3;
    let s = TestStack::start_with(cfg, Roles::ALL).await;
    let p1 = s.partner("patients:read", "*", "*").await;
    let p2 = s.partner("patients:read", "*", "*").await;
    let cc = ("grant_type", "client_credentials");
    let creds = |p: &TestPartner| (p.client_id.clone(), p.secret.clone());
    let (id1, secret1) = creds(&p1);
    let (id2, secret2) = creds(&p2);

    for i in 1..=3 {
        let a = token_request(&s, &s.http, &[cc], Some((&id1, &secret1))).await;
        assert_eq!(a.status, 200, "request {i} of 3 allowed: {}", a.text());
    }
    for i in 4..=6 {
        let t0 = Instant::now();
        let a = token_request(&s, &s.http, &[cc], Some((&id1, &secret1))).await;
        assert_rate_limited(&format!("request {i} of one client_id"), &a, t0.elapsed());
    }
    // The limit is per client_id: another partner still gets its token.
    let a = token_request(&s, &s.http, &[cc], Some((&id2, &secret2))).await;
    assert_eq!(
        a.status,
        200,
        "another client_id is not limited: {}",
        a.text()
    );
    // ... and follows the client_id to another source address.
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let t0 = Instant::now();
    let a = token_request(&s, &elsewhere, &[cc], Some((&id1, &secret1))).await;
    assert_rate_limited(
        "the limited client_id from another address",
        &a,
        t0.elapsed(),
    );

    // Per source address: fresh client_ids from one address are limited too.
    let mut limited = None;
    for i in 0..40 {
        let unknown = format!("lis_unknown_{i}");
        let t0 = Instant::now();
        let a = token_request(
            &s,
            &s.http,
            &[cc, ("client_id", &unknown), ("client_secret", "x")],
            None,
        )
        .await;
        if a.status == 429 {
            assert_rate_limited("many client_ids from one address", &a, t0.elapsed());
            limited = Some(i);
            break;
        }
        assert_oauth_error(
            "an unknown client_id under the limit",
            &a,
            401,
            "invalid_client",
        );
    }
    assert!(
        limited.is_some(),
        "40 token requests with distinct client_ids from one address were never limited"
    );
    s.stop().await;
}
