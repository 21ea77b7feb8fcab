//! Bad requests to the order endpoints, table-driven: every row must be
//! refused with the contract's status as `application/problem+json`, naming
//! every bad field at once, and nothing may be written.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::{json, Value};
use tests::{patient_body, TestStack, SIX};

/// The documented body limit (1 MiB).
const ONE_MIB: usize = 1 << 20;
const JSON_CT: &str = "application/json";
const MERGE_CT: &str = "application/merge-patch+json";

/// One bad request and the answer the contract requires.
struct Row {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// The exact set of `errors[].field`; `None` when not a field-level error.
    fields: Option<&'static [&'static str]>,
}

fn row(
    name: &'static str,
    method: Method,
    path: &str,
    headers: Vec<(&'static str, String)>,
    body: impl Into<Vec<u8>>,
    status: u16,
    fields: Option<&'static [&'static str]>,
) -> Row {
    Row {
        name,
        method,
        path: path.to_string(),
        headers,
        body: body.into(),
        status,
        fields,
    }
}

/// A content-type header.
fn ct(value: &str) -> Vec<(&'static str, String)> {
    vec![("content-type", value.to_string())]
}

/// A content-type header and one more header.
fn ct_and(value: &str, name: &'static str, extra: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", value.to_string()),
        (name, extra.to_string()),
    ]
}

fn j(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("json")
}

/// `base` with the members of `changes` set.
fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().expect("object") {
        base[k] = v.clone();
    }
    base
}

/// `base` without `keys`.
fn without(mut base: Value, keys: &[&str]) -> Value {
    for k in keys {
        base.as_object_mut().expect("object").remove(*k);
    }
    base
}

/// A JSON object body larger than 1 MiB, its one field `field`.
fn oversize(field: &str) -> Vec<u8> {
    let mut b = format!(r#"{{"{field}":""#).into_bytes();
    b.extend(std::iter::repeat_n(b'a', ONE_MIB + 1));
    b.extend(br#""}"#);
    b
}

/// One result entry.
fn res(code: &str, value: Value, unit: Option<&str>) -> Value {
    let mut r = json!({"code": code, "value": value});
    if let Some(u) = unit {
        r["unit"] = json!(u);
    }
    r
}

/// A results body.
fn results(entries: Vec<Value>) -> Vec<u8> {
    j(json!({ "results": entries }))
}

/// Checks one answer against its row; returns what is wrong.
fn check(row: &Row, status: u16, content_type: Option<&str>, text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let name = row.name;
    if status != row.status {
        bad.push(format!(
            "[{name}] status {status}, expected {}: {text}",
            row.status
        ));
    }
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media != "application/problem+json" {
        bad.push(format!(
            "[{name}] content-type {content_type:?}, expected application/problem+json"
        ));
    }
    for leak in ["SELECT", "INSERT", "panicked", "src/", ".rs:"] {
        if text.contains(leak) {
            bad.push(format!("[{name}] the body leaks {leak:?}: {text}"));
        }
    }
    let body: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            bad.push(format!("[{name}] the body is not a JSON object: {text}"));
            return bad;
        }
    };
    for member in ["type", "title", "detail"] {
        if body[member].as_str().is_none_or(|s| s.is_empty()) {
            bad.push(format!("[{name}] member {member} missing or empty: {body}"));
        }
    }
    if body["status"] != json!(status) {
        bad.push(format!(
            "[{name}] member status {} differs from the HTTP status {status}",
            body["status"]
        ));
    }
    if let Some(expected) = row.fields {
        let Some(errors) = body["errors"].as_array() else {
            bad.push(format!("[{name}] no errors array: {body}"));
            return bad;
        };
        for e in errors {
            for member in ["field", "code", "message"] {
                if !e[member].is_string() {
                    bad.push(format!("[{name}] error without a string {member}: {e}"));
                }
            }
        }
        let got: BTreeSet<&str> = errors.iter().filter_map(|e| e["field"].as_str()).collect();
        let want: BTreeSet<&str> = expected.iter().copied().collect();
        if got != want {
            bad.push(format!(
                "[{name}] errors[].field {got:?}, expected {want:?}: {body}"
            ));
        }
    }
    bad
}

/// Sends a fixture request and expects `status`; returns the answer's body.
async fn fixture(
    s: &TestStack,
    token: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let mut req = s.http.post(format!("{}{path}", s.base)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "fixture POST {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_order_input_is_refused_with_a_problem_and_writes_nothing() {
    let s = TestStack::start().await;
    s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .unwrap();
    // One partner that may do everything the order endpoints offer.
    let all = s.partner(&format!("{SIX},results:write"), "*", "*").await;
    let token = s.token(&all).await;

    // The fixture: a patient (female, born 1990-12-10, C1 at L1) and three
    // orders: one `ordered` (PATCH, collect, cancel), one `received`
    // (results) and one `final` (correct).
    let r = s
        .create_patient(&token, &patient_body("MRN-ORDER-FIXTURE"))
        .await;
    assert_eq!(r.status(), 201, "fixture patient");
    let patient = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let valid = json!({
        "patientID": patient, "clientID": "C1", "locationID": "L1",
        "externalOrderID": "EHR-BAD-1",
        "tests": [{"code": "CBC"}, {"code": "COVID19"}],
        "specimen": {"type": "blood", "collectedAt": "2025-11-20T08:30:00Z"},
        "priority": "routine"
    });
    let place = |accession: &str| with(valid.clone(), json!({ "accessionNumber": accession }));
    let ordered = fixture(&s, &token, "/v1/orders", Some(place("BAD-ORDERED")), 201).await;
    let ordered = format!("/v1/orders/{}", ordered["orderID"].as_str().unwrap());
    let received = fixture(&s, &token, "/v1/orders", Some(place("BAD-RECEIVED")), 201).await;
    let received = format!("/v1/orders/{}", received["orderID"].as_str().unwrap());
    for action in ["collect", "receive"] {
        fixture(&s, &token, &format!("{received}/{action}"), None, 200).await;
    }
    let finished = fixture(&s, &token, "/v1/orders", Some(place("BAD-FINAL")), 201).await;
    let finished = format!("/v1/orders/{}", finished["orderID"].as_str().unwrap());
    for action in ["collect", "receive"] {
        fixture(&s, &token, &format!("{finished}/{action}"), None, 200).await;
    }
    fixture(
        &s,
        &token,
        &format!("{finished}/results"),
        Some(json!({"results": [{"code": "HGB", "value": "13.0", "unit": "g/dL"}]})),
        200,
    )
    .await;
    fixture(&s, &token, &format!("{finished}/finalize"), None, 200).await;

    let missing = format!("/v1/orders/{}", uuid::Uuid::new_v4());
    let future = (chrono::Utc::now() + chrono::Duration::days(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let long_external = "X".repeat(65);
    let long_reason = "r".repeat(501);
    // A valid create body with a fresh accession number, so that a row that
    // is wrongly accepted cannot make a later row a duplicate.
    let mut n = 0;
    let mut valid_order = || {
        n += 1;
        place(&format!("BAD-ROW-{n}"))
    };

    use Method as M;
    let list = "/v1/orders";
    let search = "/v1/orders/search";
    let collect = format!("{ordered}/collect");
    let cancel = format!("{ordered}/cancel");
    let record = format!("{received}/results");
    let correct = format!("{finished}/correct");
    let hgb = || res("HGB", json!("13.1"), Some("g/dL"));
    let rows: Vec<Row> = vec![
        // ---- POST /v1/orders: not JSON, wrong JSON types (400) ----
        row(
            "create: malformed JSON",
            M::POST,
            list,
            ct(JSON_CT),
            r#"{"patientID": "x","#,
            400,
            None,
        ),
        row(
            "create: empty body",
            M::POST,
            list,
            ct(JSON_CT),
            "",
            400,
            None,
        ),
        row(
            "create: JSON array body",
            M::POST,
            list,
            ct(JSON_CT),
            j(json!([valid_order()])),
            400,
            None,
        ),
        row(
            "create: JSON null body",
            M::POST,
            list,
            ct(JSON_CT),
            "null",
            400,
            None,
        ),
        row(
            "create: wrong types patientID/tests/specimen/priority",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"patientID": 5, "tests": "CBC", "specimen": "blood", "priority": 1}),
            )),
            400,
            Some(&["patientID", "tests", "specimen", "priority"]),
        ),
        row(
            "create: a test that is not an object",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"tests": ["CBC"]}))),
            400,
            Some(&["tests[0]"]),
        ),
        row(
            "create: numeric test code",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"tests": [{"code": "CBC"}, {"code": 5}]}),
            )),
            400,
            Some(&["tests[1].code"]),
        ),
        row(
            "create: numeric specimen.collectedAt",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"specimen": {"type": "blood", "collectedAt": 1763627400}}),
            )),
            400,
            Some(&["specimen.collectedAt"]),
        ),
        row(
            "create: numeric accessionNumber",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"accessionNumber": 123}))),
            400,
            Some(&["accessionNumber"]),
        ),
        row(
            "create: wrong type and an unknown field",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"priority": true, "foo": 1}))),
            400,
            Some(&["priority", "foo"]),
        ),
        // ---- POST /v1/orders: size and media type ----
        row(
            "create: body over 1 MiB",
            M::POST,
            list,
            ct(JSON_CT),
            oversize("externalOrderID"),
            413,
            None,
        ),
        row(
            "create: no content type",
            M::POST,
            list,
            vec![],
            j(valid_order()),
            415,
            None,
        ),
        row(
            "create: text/plain",
            M::POST,
            list,
            ct("text/plain"),
            j(valid_order()),
            415,
            None,
        ),
        row(
            "create: merge-patch content type on POST",
            M::POST,
            list,
            ct(MERGE_CT),
            j(valid_order()),
            415,
            None,
        ),
        // ---- POST /v1/orders: well-formed but invalid (422) ----
        row(
            "create: empty object",
            M::POST,
            list,
            ct(JSON_CT),
            "{}",
            422,
            Some(&["patientID", "clientID", "locationID", "tests"]),
        ),
        row(
            "create: unknown and read-only fields",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({
                    "foo": 1,
                    "orderID": "00000000-0000-4000-8000-000000000001",
                    "status": "final",
                    "version": 1,
                    "results": [],
                }),
            )),
            422,
            Some(&["foo", "orderID", "status", "version", "results"]),
        ),
        row(
            "create: nested unknown fields",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({
                    "tests": [{"code": "CBC", "qty": 2}],
                    "specimen": {"type": "blood", "volume": "5 mL"},
                }),
            )),
            422,
            Some(&["tests[0].qty", "specimen.volume"]),
        ),
        row(
            "create: no tests",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"tests": []}))),
            422,
            Some(&["tests"]),
        ),
        row(
            "create: null tests",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"tests": null}))),
            422,
            Some(&["tests"]),
        ),
        row(
            "create: missing tests",
            M::POST,
            list,
            ct(JSON_CT),
            j(without(valid_order(), &["tests"])),
            422,
            Some(&["tests"]),
        ),
        row(
            "create: unknown and repeated test codes",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"tests": [{"code": "CBC"}, {"code": "NOPE"}, {"code": "CBC"}]}),
            )),
            422,
            Some(&["tests[1].code", "tests[2].code"]),
        ),
        row(
            "create: lowercase test code",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"tests": [{"code": "cbc"}]}))),
            422,
            Some(&["tests[0].code"]),
        ),
        row(
            "create: a test without its code",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"tests": [{}]}))),
            422,
            Some(&["tests[0].code"]),
        ),
        row(
            "create: unknown patient",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"patientID": uuid::Uuid::new_v4().to_string()}),
            )),
            422,
            Some(&["patientID"]),
        ),
        row(
            "create: patientID not a UUID",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"patientID": "MRN-ORDER-FIXTURE"}),
            )),
            422,
            Some(&["patientID"]),
        ),
        row(
            "create: client not the patient's",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"clientID": "C2", "locationID": "L3"}),
            )),
            422,
            Some(&["clientID"]),
        ),
        row(
            "create: location of another client",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"locationID": "L3"}))),
            422,
            Some(&["locationID"]),
        ),
        row(
            "create: nonexistent location",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"locationID": "L404"}))),
            422,
            Some(&["locationID"]),
        ),
        row(
            "create: clientID with a space",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"clientID": "C 1"}))),
            422,
            Some(&["clientID"]),
        ),
        row(
            "create: accessionNumber with a space",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"accessionNumber": "A 1"}))),
            422,
            Some(&["accessionNumber"]),
        ),
        row(
            "create: externalOrderID of 65 characters",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"externalOrderID": long_external}),
            )),
            422,
            Some(&["externalOrderID"]),
        ),
        row(
            "create: empty externalOrderID",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"externalOrderID": ""}))),
            422,
            Some(&["externalOrderID"]),
        ),
        row(
            "create: collectedAt not RFC 3339",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"specimen": {"type": "blood", "collectedAt": "2025-11-20 08:30"}}),
            )),
            422,
            Some(&["specimen.collectedAt"]),
        ),
        row(
            "create: collectedAt in the future",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"specimen": {"type": "blood", "collectedAt": future}}),
            )),
            422,
            Some(&["specimen.collectedAt"]),
        ),
        row(
            "create: collectedAt before the patient's birth",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid_order(),
                json!({"specimen": {"type": "blood", "collectedAt": "1980-01-01T00:00:00Z"}}),
            )),
            422,
            Some(&["specimen.collectedAt"]),
        ),
        row(
            "create: priority asap",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"priority": "asap"}))),
            422,
            Some(&["priority"]),
        ),
        row(
            "create: blank specimen.type",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid_order(), json!({"specimen": {"type": "  "}}))),
            422,
            Some(&["specimen.type"]),
        ),
        row(
            "create: no specimen type for tests on different specimens",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                without(valid_order(), &["specimen"]),
                json!({"tests": [{"code": "CBC"}, {"code": "BMP"}]}),
            )),
            422,
            Some(&["specimen.type"]),
        ),
        row(
            "create: several bad fields at once",
            M::POST,
            list,
            ct(JSON_CT),
            j(json!({
                "patientID": "nope",
                "clientID": "C 1",
                "tests": [],
                "specimen": {"type": "", "collectedAt": "x"},
                "priority": "asap",
                "foo": 1,
            })),
            422,
            Some(&[
                "patientID",
                "clientID",
                "locationID",
                "tests",
                "specimen.type",
                "specimen.collectedAt",
                "priority",
                "foo",
            ]),
        ),
        row(
            "create: empty Idempotency-Key",
            M::POST,
            list,
            ct_and(JSON_CT, "idempotency-key", ""),
            j(valid_order()),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "create: Idempotency-Key with a space",
            M::POST,
            list,
            ct_and(JSON_CT, "idempotency-key", "key 1"),
            j(valid_order()),
            422,
            Some(&["Idempotency-Key"]),
        ),
        // ---- PATCH /v1/orders/{id} (an `ordered` order) ----
        row(
            "patch: malformed JSON",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            "{",
            400,
            None,
        ),
        row(
            "patch: JSON null body",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            "null",
            400,
            None,
        ),
        row(
            "patch: JSON array body",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            r#"[{"priority":"stat"}]"#,
            400,
            None,
        ),
        row(
            "patch: wrong types priority/specimen/externalOrderID",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"priority": 1, "specimen": "blood", "externalOrderID": 5})),
            400,
            Some(&["priority", "specimen", "externalOrderID"]),
        ),
        row(
            "patch: numeric specimen.collectedAt",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"specimen": {"collectedAt": 1763627400}})),
            400,
            Some(&["specimen.collectedAt"]),
        ),
        row(
            "patch: body over 1 MiB",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            oversize("externalOrderID"),
            413,
            None,
        ),
        row(
            "patch: no content type",
            M::PATCH,
            &ordered,
            vec![],
            j(json!({"priority": "stat"})),
            415,
            None,
        ),
        row(
            "patch: text/plain",
            M::PATCH,
            &ordered,
            ct("text/plain"),
            j(json!({"priority": "stat"})),
            415,
            None,
        ),
        row(
            "patch: JSON Patch media type",
            M::PATCH,
            &ordered,
            ct("application/json-patch+json"),
            r#"[{"op":"replace","path":"/priority","value":"stat"}]"#,
            415,
            None,
        ),
        row(
            "patch: application/json is accepted",
            M::PATCH,
            &ordered,
            ct(JSON_CT),
            j(json!({"priority": "asap"})),
            422,
            Some(&["priority"]),
        ),
        row(
            "patch: unknown field",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"foo": 1, "priority": "stat"})),
            422,
            Some(&["foo"]),
        ),
        row(
            "patch: read-only and immutable fields",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({
                "orderID": "00000000-0000-4000-8000-000000000001",
                "patientID": "00000000-0000-4000-8000-000000000002",
                "clientID": "C2",
                "locationID": "L2",
                "accessionNumber": "A-NEW",
                "tests": [{"code": "TSH"}],
                "status": "final",
                "version": 9,
                "results": [],
            })),
            422,
            Some(&[
                "orderID",
                "patientID",
                "clientID",
                "locationID",
                "accessionNumber",
                "tests",
                "status",
                "version",
                "results",
            ]),
        ),
        row(
            "patch: null priority",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"priority": null})),
            422,
            Some(&["priority"]),
        ),
        row(
            "patch: null specimen",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"specimen": null})),
            422,
            Some(&["specimen"]),
        ),
        row(
            "patch: null specimen.type",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"specimen": {"type": null}})),
            422,
            Some(&["specimen.type"]),
        ),
        row(
            "patch: collectedAt not RFC 3339",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"specimen": {"collectedAt": "yesterday"}})),
            422,
            Some(&["specimen.collectedAt"]),
        ),
        row(
            "patch: collectedAt in the future",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"specimen": {"collectedAt": future}})),
            422,
            Some(&["specimen.collectedAt"]),
        ),
        row(
            "patch: externalOrderID with a space",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({"externalOrderID": "EHR 1"})),
            422,
            Some(&["externalOrderID"]),
        ),
        row(
            "patch: several bad fields at once",
            M::PATCH,
            &ordered,
            ct(MERGE_CT),
            j(json!({
                "priority": "asap",
                "specimen": {"type": "", "collectedAt": "x", "volume": 1},
                "externalOrderID": "a b",
                "bar": 2,
            })),
            422,
            Some(&[
                "priority",
                "specimen.type",
                "specimen.collectedAt",
                "specimen.volume",
                "externalOrderID",
                "bar",
            ]),
        ),
        row(
            "patch: If-Match without quotes",
            M::PATCH,
            &ordered,
            ct_and(MERGE_CT, "if-match", "1"),
            j(json!({"priority": "stat"})),
            422,
            Some(&["If-Match"]),
        ),
        row(
            "patch: bad UUID in the path",
            M::PATCH,
            "/v1/orders/not-a-uuid",
            ct(MERGE_CT),
            j(json!({"priority": "stat"})),
            404,
            None,
        ),
        row(
            "patch: bad UUID in the path, bad body",
            M::PATCH,
            "/v1/orders/not-a-uuid",
            vec![],
            "{",
            404,
            None,
        ),
        row(
            "patch: unknown order",
            M::PATCH,
            &missing,
            ct(MERGE_CT),
            j(json!({"priority": "stat"})),
            404,
            None,
        ),
        // ---- POST /v1/orders/{id}/collect (an `ordered` order) ----
        row(
            "collect: collectedAt not RFC 3339",
            M::POST,
            &collect,
            ct(JSON_CT),
            j(json!({"collectedAt": "yesterday"})),
            422,
            Some(&["collectedAt"]),
        ),
        row(
            "collect: collectedAt as a date",
            M::POST,
            &collect,
            ct(JSON_CT),
            j(json!({"collectedAt": "2025-11-20"})),
            422,
            Some(&["collectedAt"]),
        ),
        row(
            "collect: collectedAt in the future",
            M::POST,
            &collect,
            ct(JSON_CT),
            j(json!({"collectedAt": future})),
            422,
            Some(&["collectedAt"]),
        ),
        row(
            "collect: numeric collectedAt",
            M::POST,
            &collect,
            ct(JSON_CT),
            j(json!({"collectedAt": 1763627400})),
            400,
            Some(&["collectedAt"]),
        ),
        row(
            "collect: bad collectedAt and an unknown field",
            M::POST,
            &collect,
            ct(JSON_CT),
            j(json!({"collectedAt": "x", "foo": 1})),
            422,
            Some(&["collectedAt", "foo"]),
        ),
        row(
            "collect: unknown field",
            M::POST,
            &collect,
            ct(JSON_CT),
            j(json!({"collected": "2025-11-20T09:00:00Z"})),
            422,
            Some(&["collected"]),
        ),
        row(
            "collect: malformed JSON",
            M::POST,
            &collect,
            ct(JSON_CT),
            "{\"collectedAt\":",
            400,
            None,
        ),
        row(
            "collect: body without a content type",
            M::POST,
            &collect,
            vec![],
            j(json!({"collectedAt": "2025-11-20T09:00:00Z"})),
            415,
            None,
        ),
        // ---- POST /v1/orders/{id}/cancel (an `ordered` order) ----
        row(
            "cancel: no reason",
            M::POST,
            &cancel,
            ct(JSON_CT),
            "{}",
            422,
            Some(&["reason"]),
        ),
        row(
            "cancel: empty body",
            M::POST,
            &cancel,
            vec![],
            "",
            422,
            Some(&["reason"]),
        ),
        row(
            "cancel: null reason",
            M::POST,
            &cancel,
            ct(JSON_CT),
            j(json!({"reason": null})),
            422,
            Some(&["reason"]),
        ),
        row(
            "cancel: blank reason",
            M::POST,
            &cancel,
            ct(JSON_CT),
            j(json!({"reason": "   "})),
            422,
            Some(&["reason"]),
        ),
        row(
            "cancel: reason of 501 characters",
            M::POST,
            &cancel,
            ct(JSON_CT),
            j(json!({"reason": long_reason})),
            422,
            Some(&["reason"]),
        ),
        row(
            "cancel: numeric reason",
            M::POST,
            &cancel,
            ct(JSON_CT),
            j(json!({"reason": 5})),
            400,
            Some(&["reason"]),
        ),
        row(
            "cancel: no reason and an unknown field",
            M::POST,
            &cancel,
            ct(JSON_CT),
            j(json!({"why": "duplicate"})),
            422,
            Some(&["reason", "why"]),
        ),
        // ---- POST /v1/orders/{id}/results (a `received` CBC + COVID19 order) ----
        row(
            "results: missing results",
            M::POST,
            &record,
            ct(JSON_CT),
            "{}",
            422,
            Some(&["results"]),
        ),
        row(
            "results: no body",
            M::POST,
            &record,
            vec![],
            "",
            422,
            Some(&["results"]),
        ),
        row(
            "results: empty list",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![]),
            422,
            Some(&["results"]),
        ),
        row(
            "results: null results",
            M::POST,
            &record,
            ct(JSON_CT),
            j(json!({"results": null})),
            422,
            Some(&["results"]),
        ),
        row(
            "results: value true",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("HGB", json!(true), Some("g/dL"))]),
            400,
            Some(&["results[0].value"]),
        ),
        row(
            "results: value as an object",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![hgb(), res("WBC", json!({"v": 7}), Some("10^9/L"))]),
            400,
            Some(&["results[1].value"]),
        ),
        row(
            "results: results \"x\"",
            M::POST,
            &record,
            ct(JSON_CT),
            j(json!({"results": "x"})),
            400,
            Some(&["results"]),
        ),
        row(
            "results: a result that is not an object",
            M::POST,
            &record,
            ct(JSON_CT),
            j(json!({"results": [5]})),
            400,
            Some(&["results[0]"]),
        ),
        row(
            "results: numeric code and unit",
            M::POST,
            &record,
            ct(JSON_CT),
            j(json!({"results": [{"code": 5, "value": "1", "unit": 3}]})),
            400,
            Some(&["results[0].code", "results[0].unit"]),
        ),
        row(
            "results: value true and an unknown analyte",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![
                res("HGB", json!(true), Some("g/dL")),
                res("NOPE", json!("1"), None),
            ]),
            400,
            Some(&["results[0].value", "results[1].code"]),
        ),
        row(
            "results: body over 1 MiB",
            M::POST,
            &record,
            ct(JSON_CT),
            oversize("results"),
            413,
            None,
        ),
        row(
            "results: body without a content type",
            M::POST,
            &record,
            vec![],
            results(vec![hgb()]),
            415,
            None,
        ),
        row(
            "results: text/plain",
            M::POST,
            &record,
            ct("text/plain"),
            results(vec![hgb()]),
            415,
            None,
        ),
        row(
            "results: malformed JSON",
            M::POST,
            &record,
            ct(JSON_CT),
            "{\"results\": [",
            400,
            None,
        ),
        row(
            "results: unknown analyte",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("NOPE", json!("1.0"), Some("g/dL"))]),
            422,
            Some(&["results[0].code"]),
        ),
        row(
            "results: analyte of a test not ordered",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![hgb(), res("TSH", json!("2.0"), Some("mIU/L"))]),
            422,
            Some(&["results[1].code"]),
        ),
        row(
            "results: unit mismatch",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("HGB", json!("13.1"), Some("mmol/L"))]),
            422,
            Some(&["results[0].unit"]),
        ),
        row(
            "results: unit of another case",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("HGB", json!("13.1"), Some("G/DL"))]),
            422,
            Some(&["results[0].unit"]),
        ),
        row(
            "results: numeric analyte without a unit",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("HGB", json!("13.1"), None)]),
            422,
            Some(&["results[0].unit"]),
        ),
        row(
            "results: non-numeric value for a numeric analyte",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("WBC", json!("lots"), Some("10^9/L"))]),
            422,
            Some(&["results[0].value"]),
        ),
        row(
            "results: \"< 0.5\" with a space",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("PLT", json!("< 0.5"), Some("10^9/L"))]),
            422,
            Some(&["results[0].value"]),
        ),
        row(
            "results: decimal comma",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("HGB", json!("13,1"), Some("g/dL"))]),
            422,
            Some(&["results[0].value"]),
        ),
        row(
            "results: duplicate analyte",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![hgb(), res("HGB", json!("13.2"), Some("g/dL"))]),
            422,
            Some(&["results[1].code"]),
        ),
        row(
            "results: missing code and value",
            M::POST,
            &record,
            ct(JSON_CT),
            j(json!({"results": [{"unit": "g/dL"}]})),
            422,
            Some(&["results[0].code", "results[0].value"]),
        ),
        row(
            "results: a unit on a text analyte",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("SARSCOV2", json!("Detected"), Some("copies/mL"))]),
            422,
            Some(&["results[0].unit"]),
        ),
        row(
            "results: blank text value",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![res("SARSCOV2", json!("  "), None)]),
            422,
            Some(&["results[0].value"]),
        ),
        row(
            "results: a flag sent by the partner",
            M::POST,
            &record,
            ct(JSON_CT),
            j(json!({"results": [{"code": "HGB", "value": "13.1", "unit": "g/dL", "flag": "N"}]})),
            422,
            Some(&["results[0].flag"]),
        ),
        row(
            "results: several bad results at once",
            M::POST,
            &record,
            ct(JSON_CT),
            results(vec![
                res("HGB", json!("lots"), Some("mmol/L")),
                res("NOPE", json!("1"), Some("g/dL")),
                res("PLT", json!("< 0.5"), Some("10^9/L")),
                res("HGB", json!("13.0"), Some("g/dL")),
                res("WBC", json!(7.2), None),
            ]),
            422,
            Some(&[
                "results[0].value",
                "results[0].unit",
                "results[1].code",
                "results[2].value",
                "results[3].code",
                "results[4].unit",
            ]),
        ),
        row(
            "results: unknown order",
            M::POST,
            &format!("{missing}/results"),
            ct(JSON_CT),
            results(vec![hgb()]),
            404,
            None,
        ),
        row(
            "results: bad UUID in the path",
            M::POST,
            "/v1/orders/not-a-uuid/results",
            ct(JSON_CT),
            results(vec![hgb()]),
            404,
            None,
        ),
        row(
            "action: unknown action",
            M::POST,
            &format!("{ordered}/explode"),
            ct(JSON_CT),
            "{}",
            404,
            None,
        ),
        // ---- POST /v1/orders/{id}/correct (a `final` order) ----
        row(
            "correct: no reason",
            M::POST,
            &correct,
            ct(JSON_CT),
            results(vec![hgb()]),
            422,
            Some(&["reason"]),
        ),
        row(
            "correct: no results",
            M::POST,
            &correct,
            ct(JSON_CT),
            j(json!({"reason": "sample mix-up"})),
            422,
            Some(&["results"]),
        ),
        row(
            "correct: neither reason nor results",
            M::POST,
            &correct,
            ct(JSON_CT),
            "{}",
            422,
            Some(&["reason", "results"]),
        ),
        row(
            "correct: blank reason and a unit mismatch",
            M::POST,
            &correct,
            ct(JSON_CT),
            j(json!({"reason": " ", "results": [res("HGB", json!("13.1"), Some("mmol/L"))]})),
            422,
            Some(&["reason", "results[0].unit"]),
        ),
        // ---- GET /v1/orders/{id} ----
        row(
            "get: bad UUID in the path",
            M::GET,
            "/v1/orders/not-a-uuid",
            vec![],
            "",
            404,
            None,
        ),
        row(
            "get: unknown order",
            M::GET,
            &missing,
            vec![],
            "",
            404,
            None,
        ),
        // ---- GET /v1/orders with filters ----
        row(
            "list: status=bogus",
            M::GET,
            "/v1/orders?status=bogus",
            vec![],
            "",
            422,
            Some(&["status"]),
        ),
        row(
            "list: status=in-progress",
            M::GET,
            "/v1/orders?status=in-progress",
            vec![],
            "",
            422,
            Some(&["status"]),
        ),
        row(
            "list: patientID not a UUID",
            M::GET,
            "/v1/orders?patientID=MRN-1",
            vec![],
            "",
            422,
            Some(&["patientID"]),
        ),
        row(
            "list: limit=0",
            M::GET,
            "/v1/orders?limit=0",
            vec![],
            "",
            422,
            Some(&["limit"]),
        ),
        row(
            "list: limit=501",
            M::GET,
            "/v1/orders?limit=501",
            vec![],
            "",
            422,
            Some(&["limit"]),
        ),
        row(
            "list: limit=abc",
            M::GET,
            "/v1/orders?limit=abc",
            vec![],
            "",
            422,
            Some(&["limit"]),
        ),
        row(
            "list: garbage cursor",
            M::GET,
            "/v1/orders?cursor=garbage",
            vec![],
            "",
            422,
            Some(&["cursor"]),
        ),
        row(
            "list: cursor not base64",
            M::GET,
            "/v1/orders?cursor=%21%21%21",
            vec![],
            "",
            422,
            Some(&["cursor"]),
        ),
        row(
            "list: unknown filter",
            M::GET,
            "/v1/orders?foo=bar",
            vec![],
            "",
            422,
            Some(&["foo"]),
        ),
        row(
            "list: updatedSince not RFC 3339",
            M::GET,
            "/v1/orders?updatedSince=yesterday",
            vec![],
            "",
            422,
            Some(&["updatedSince"]),
        ),
        row(
            "list: clientID with a space",
            M::GET,
            "/v1/orders?clientID=C%201",
            vec![],
            "",
            422,
            Some(&["clientID"]),
        ),
        row(
            "list: accessionNumber with a space",
            M::GET,
            "/v1/orders?accessionNumber=A%201",
            vec![],
            "",
            422,
            Some(&["accessionNumber"]),
        ),
        row(
            "list: several bad filters at once",
            M::GET,
            "/v1/orders?status=bogus&patientID=x&limit=0&cursor=garbage&foo=1",
            vec![],
            "",
            422,
            Some(&["status", "patientID", "limit", "cursor", "foo"]),
        ),
        row(
            "list: malformed Consistency-Token",
            M::GET,
            list,
            vec![("consistency-token", "garbage!".into())],
            "",
            422,
            Some(&["Consistency-Token"]),
        ),
        // ---- POST /v1/orders/search ----
        row(
            "search: malformed JSON",
            M::POST,
            search,
            ct(JSON_CT),
            "{\"limit\":",
            400,
            None,
        ),
        row(
            "search: JSON array body",
            M::POST,
            search,
            ct(JSON_CT),
            "[]",
            400,
            None,
        ),
        row(
            "search: limit as a string",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"limit": "10"})),
            400,
            Some(&["limit"]),
        ),
        row(
            "search: status and patientID as numbers",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"status": 5, "patientID": 7})),
            400,
            Some(&["status", "patientID"]),
        ),
        row(
            "search: body over 1 MiB",
            M::POST,
            search,
            ct(JSON_CT),
            oversize("externalOrderID"),
            413,
            None,
        ),
        row(
            "search: no content type",
            M::POST,
            search,
            vec![],
            j(json!({"status": "ordered"})),
            415,
            None,
        ),
        row(
            "search: text/plain",
            M::POST,
            search,
            ct("text/plain"),
            j(json!({"status": "ordered"})),
            415,
            None,
        ),
        row(
            "search: limit 0",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"limit": 0})),
            422,
            Some(&["limit"]),
        ),
        row(
            "search: limit 501",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"limit": 501})),
            422,
            Some(&["limit"]),
        ),
        row(
            "search: garbage cursor",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"cursor": "garbage"})),
            422,
            Some(&["cursor"]),
        ),
        row(
            "search: status bogus",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"status": "bogus"})),
            422,
            Some(&["status"]),
        ),
        row(
            "search: patientID not a UUID",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"patientID": "MRN-1"})),
            422,
            Some(&["patientID"]),
        ),
        row(
            "search: unknown filter",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"foo": 1})),
            422,
            Some(&["foo"]),
        ),
        row(
            "search: unknown and invalid filters at once",
            M::POST,
            search,
            ct(JSON_CT),
            j(
                json!({"foo": 1, "limit": 0, "status": "bogus", "patientID": "x", "cursor": "garbage"}),
            ),
            422,
            Some(&["foo", "limit", "status", "patientID", "cursor"]),
        ),
    ];

    let events_before = s.event_count(None).await;
    let mut failures = Vec::new();
    let mut bodies: BTreeMap<&str, Value> = BTreeMap::new();
    for row in &rows {
        let mut req = s
            .http
            .request(row.method.clone(), format!("{}{}", s.base, row.path))
            .bearer_auth(&token);
        for (name, value) in &row.headers {
            let value = HeaderValue::from_bytes(value.as_bytes())
                .unwrap_or_else(|e| panic!("[{}] header {name}: {e}", row.name));
            req = req.header(*name, value);
        }
        if row.method != Method::GET {
            req = req.body(row.body.clone());
        }
        let r = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("[{}] request failed: {e}", row.name));
                continue;
            }
        };
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = r.text().await.unwrap_or_default();
        failures.extend(check(row, status, content_type.as_deref(), &text));
        if let Ok(v) = serde_json::from_str(&text) {
            bodies.insert(row.name, v);
        }
    }

    // A location that does not exist and a location of another client
    // answer the same 422.
    let (a, b) = (
        "create: location of another client",
        "create: nonexistent location",
    );
    if bodies.get(a) != bodies.get(b) {
        failures.push(format!(
            "[{a}] and [{b}] answer differently: {:?} / {:?}",
            bodies.get(a),
            bodies.get(b)
        ));
    }

    let events_after = s.event_count(None).await;
    if events_after != events_before {
        failures.push(format!(
            "the bad requests wrote {} event(s) beyond the fixture's",
            events_after - events_before
        ));
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) across {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    s.stop().await;
}
