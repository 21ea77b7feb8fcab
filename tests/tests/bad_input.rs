//! Bad requests to the patient endpoints, table-driven: every row must be
//! refused with the contract's status as `application/problem+json`, naming
//! every bad field at once, and nothing may be written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::{json, Value};
use tests::{patient_body, TestStack};

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

/// A content-type header (plus any extra headers).
fn ct(value: &str) -> Vec<(&'static str, String)> {
    vec![("content-type", value.to_string())]
}

fn ct_and(value: &str, name: &'static str, extra: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", value.to_string()),
        (name, extra.to_string()),
    ]
}

fn j(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("json")
}

/// A valid create body with a fresh external id, so that a row that is
/// wrongly accepted cannot make a later row a duplicate.
fn valid() -> Value {
    static N: AtomicUsize = AtomicUsize::new(0);
    patient_body(&format!("MRN-BAD-{}", N.fetch_add(1, Ordering::Relaxed)))
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

/// A JSON object body larger than 1 MiB.
fn oversize() -> Vec<u8> {
    let mut b = br#"{"firstName":""#.to_vec();
    b.extend(std::iter::repeat_n(b'a', ONE_MIB + 1));
    b.extend(br#""}"#);
    b
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

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_problem_and_writes_nothing() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;

    // The fixture: one patient of C1 at L1 to patch.
    let r = s.create_patient(&token, &patient_body("MRN-FIXTURE")).await;
    assert_eq!(r.status(), 201, "fixture patient");
    let id = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let one = format!("/v1/patients/{id}");
    let missing = format!("/v1/patients/{}", uuid::Uuid::new_v4());
    let future = (chrono::Utc::now().date_naive() + chrono::Days::new(2))
        .format("%Y-%m-%d")
        .to_string();
    let long_key = "k".repeat(256);
    let long_external = "X".repeat(65);

    use Method as M;
    let list = "/v1/patients";
    let search = "/v1/patients/search";
    let rows: Vec<Row> = vec![
        // ---- POST /v1/patients: not JSON, wrong JSON types (400) ----
        row(
            "create: malformed JSON",
            M::POST,
            list,
            ct(JSON_CT),
            r#"{"firstName": "Ada","#,
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
            "create: trailing garbage",
            M::POST,
            list,
            ct(JSON_CT),
            [j(valid()), b" x".to_vec()].concat(),
            400,
            None,
        ),
        row(
            "create: invalid UTF-8",
            M::POST,
            list,
            ct(JSON_CT),
            vec![b'{', 0xff, b'}'],
            400,
            None,
        ),
        row(
            "create: JSON array body",
            M::POST,
            list,
            ct(JSON_CT),
            j(json!([valid()])),
            400,
            None,
        ),
        row(
            "create: JSON string body",
            M::POST,
            list,
            ct(JSON_CT),
            r#""Ada""#,
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
            "create: form body sent as JSON",
            M::POST,
            list,
            ct(JSON_CT),
            "firstName=Ada&lastName=Lovelace",
            400,
            None,
        ),
        row(
            "create: wrong types firstName/address/dateOfBirth",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid(),
                json!({"firstName": 5, "address": "x", "dateOfBirth": 19901210}),
            )),
            400,
            Some(&["firstName", "address", "dateOfBirth"]),
        ),
        row(
            "create: sex as boolean",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"sex": true}))),
            400,
            Some(&["sex"]),
        ),
        row(
            "create: numeric externalPatientID",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"externalPatientID": 1001}))),
            400,
            Some(&["externalPatientID"]),
        ),
        row(
            "create: nested wrong type address.city",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid(),
                json!({"address": {"city": 5, "country": "US"}}),
            )),
            400,
            Some(&["address.city"]),
        ),
        row(
            "create: clientID as array",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"clientID": ["C1"]}))),
            400,
            Some(&["clientID"]),
        ),
        // ---- POST /v1/patients: size and media type ----
        row(
            "create: body over 1 MiB",
            M::POST,
            list,
            ct(JSON_CT),
            oversize(),
            413,
            None,
        ),
        row(
            "create: no content type",
            M::POST,
            list,
            vec![],
            j(valid()),
            415,
            None,
        ),
        row(
            "create: text/plain",
            M::POST,
            list,
            ct("text/plain"),
            j(valid()),
            415,
            None,
        ),
        row(
            "create: form content type",
            M::POST,
            list,
            ct("application/x-www-form-urlencoded"),
            j(valid()),
            415,
            None,
        ),
        row(
            "create: merge-patch content type on POST",
            M::POST,
            list,
            ct(MERGE_CT),
            j(valid()),
            415,
            None,
        ),
        // ---- POST /v1/patients: well-formed but invalid (422) ----
        row(
            "create: empty object",
            M::POST,
            list,
            ct(JSON_CT),
            "{}",
            422,
            Some(&[
                "clientID",
                "locationID",
                "firstName",
                "lastName",
                "dateOfBirth",
                "sex",
            ]),
        ),
        row(
            "create: missing firstName, sex F, unknown foo",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                without(valid(), &["firstName"]),
                json!({"sex": "F", "foo": 1}),
            )),
            422,
            Some(&["firstName", "sex", "foo"]),
        ),
        row(
            "create: null firstName",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"firstName": null}))),
            422,
            Some(&["firstName"]),
        ),
        row(
            "create: empty firstName",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"firstName": ""}))),
            422,
            Some(&["firstName"]),
        ),
        row(
            "create: unknown fields",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"foo": 1, "middleName": "X"}))),
            422,
            Some(&["foo", "middleName"]),
        ),
        row(
            "create: read-only fields",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid(),
                json!({
                    "patientID": "00000000-0000-4000-8000-000000000001",
                    "version": 1,
                    "account": {"status": "invited"},
                    "createdAt": "2024-01-01T00:00:00Z",
                }),
            )),
            422,
            Some(&["patientID", "version", "account", "createdAt"]),
        ),
        row(
            "create: dateOfBirth 2026-02-30",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"dateOfBirth": "2026-02-30"}))),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "create: dateOfBirth 1990-1-1",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"dateOfBirth": "1990-1-1"}))),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "create: dateOfBirth in the future",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"dateOfBirth": future}))),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "create: dateOfBirth as a timestamp",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid(),
                json!({"dateOfBirth": "1990-12-10T00:00:00Z"}),
            )),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "create: dateOfBirth 10/12/1990",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"dateOfBirth": "10/12/1990"}))),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "create: sex F",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"sex": "F"}))),
            422,
            Some(&["sex"]),
        ),
        row(
            "create: sex Female (case)",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"sex": "Female"}))),
            422,
            Some(&["sex"]),
        ),
        row(
            "create: externalPatientID with a space",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"externalPatientID": "MRN 1001"}))),
            422,
            Some(&["externalPatientID"]),
        ),
        row(
            "create: externalPatientID of 65 characters",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"externalPatientID": long_external}))),
            422,
            Some(&["externalPatientID"]),
        ),
        row(
            "create: empty externalPatientID",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"externalPatientID": ""}))),
            422,
            Some(&["externalPatientID"]),
        ),
        row(
            "create: clientID with a space",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"clientID": "C 1"}))),
            422,
            Some(&["clientID"]),
        ),
        row(
            "create: clientID with a slash",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"clientID": "C/1"}))),
            422,
            Some(&["clientID"]),
        ),
        row(
            "create: locationID with a space",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"locationID": "L 1"}))),
            422,
            Some(&["locationID"]),
        ),
        row(
            "create: location of another client",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"locationID": "L3"}))),
            422,
            Some(&["locationID"]),
        ),
        row(
            "create: nonexistent location",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"locationID": "L404"}))),
            422,
            Some(&["locationID"]),
        ),
        row(
            "create: bad address.country",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(valid(), json!({"address": {"country": "usa"}}))),
            422,
            Some(&["address.country"]),
        ),
        row(
            "create: nested unknown and bad phone",
            M::POST,
            list,
            ct(JSON_CT),
            j(with(
                valid(),
                json!({"address": {"country": "US", "zip": "10001"}, "phone": "call me"}),
            )),
            422,
            Some(&["address.zip", "phone"]),
        ),
        row(
            "create: charset parameter is still JSON",
            M::POST,
            list,
            ct("application/json; charset=utf-8"),
            j(with(valid(), json!({"sex": "F"}))),
            422,
            Some(&["sex"]),
        ),
        // ---- POST /v1/patients: bad headers (valid bodies) ----
        row(
            "create: empty Idempotency-Key",
            M::POST,
            list,
            ct_and(JSON_CT, "idempotency-key", ""),
            j(valid()),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "create: Idempotency-Key of 256 characters",
            M::POST,
            list,
            ct_and(JSON_CT, "idempotency-key", &long_key),
            j(valid()),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "create: Idempotency-Key with a space",
            M::POST,
            list,
            ct_and(JSON_CT, "idempotency-key", "key 1"),
            j(valid()),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "create: Idempotency-Key with a tab",
            M::POST,
            list,
            ct_and(JSON_CT, "idempotency-key", "key\t1"),
            j(valid()),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "create: non-ASCII Idempotency-Key",
            M::POST,
            list,
            ct_and(JSON_CT, "idempotency-key", "clé-1"),
            j(valid()),
            422,
            Some(&["Idempotency-Key"]),
        ),
        // ---- PATCH /v1/patients/{id} ----
        row(
            "patch: malformed JSON",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            "{",
            400,
            None,
        ),
        row(
            "patch: JSON array body",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            r#"[{"firstName":"X"}]"#,
            400,
            None,
        ),
        row(
            "patch: JSON null body",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            "null",
            400,
            None,
        ),
        row(
            "patch: firstName 5",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"firstName": 5})),
            400,
            Some(&["firstName"]),
        ),
        row(
            "patch: address \"x\"",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"address": "x"})),
            400,
            Some(&["address"]),
        ),
        row(
            "patch: dateOfBirth as a number",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"dateOfBirth": 19901210})),
            400,
            Some(&["dateOfBirth"]),
        ),
        row(
            "patch: body over 1 MiB",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            oversize(),
            413,
            None,
        ),
        row(
            "patch: no content type",
            M::PATCH,
            &one,
            vec![],
            j(json!({"firstName": "X"})),
            415,
            None,
        ),
        row(
            "patch: text/plain",
            M::PATCH,
            &one,
            ct("text/plain"),
            j(json!({"firstName": "X"})),
            415,
            None,
        ),
        row(
            "patch: JSON Patch media type",
            M::PATCH,
            &one,
            ct("application/json-patch+json"),
            r#"[{"op":"replace","path":"/firstName","value":"X"}]"#,
            415,
            None,
        ),
        row(
            "patch: application/json is accepted",
            M::PATCH,
            &one,
            ct(JSON_CT),
            j(json!({"sex": "F"})),
            422,
            Some(&["sex"]),
        ),
        row(
            "patch: media type is case-insensitive",
            M::PATCH,
            &one,
            ct("Application/Merge-Patch+JSON"),
            j(json!({"sex": "F"})),
            422,
            Some(&["sex"]),
        ),
        row(
            "patch: unknown field",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"foo": 1, "firstName": "X"})),
            422,
            Some(&["foo"]),
        ),
        row(
            "patch: read-only fields",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({
                "patientID": "00000000-0000-4000-8000-000000000001",
                "version": 7,
                "account": {"status": "active"},
                "createdAt": "2024-01-01T00:00:00Z",
            })),
            422,
            Some(&["patientID", "version", "account", "createdAt"]),
        ),
        row(
            "patch: clientID is immutable",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"clientID": "C2"})),
            422,
            Some(&["clientID"]),
        ),
        row(
            "patch: unknown, immutable and invalid fields at once",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"foo": 1, "clientID": "C2", "sex": "F", "dateOfBirth": "1990-1-1"})),
            422,
            Some(&["foo", "clientID", "sex", "dateOfBirth"]),
        ),
        row(
            "patch: null firstName",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"firstName": null})),
            422,
            Some(&["firstName"]),
        ),
        row(
            "patch: null for every required field",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"lastName": null, "dateOfBirth": null, "sex": null, "locationID": null})),
            422,
            Some(&["lastName", "dateOfBirth", "sex", "locationID"]),
        ),
        row(
            "patch: dateOfBirth 2026-02-30",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"dateOfBirth": "2026-02-30"})),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "patch: dateOfBirth 1990-1-1",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"dateOfBirth": "1990-1-1"})),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "patch: dateOfBirth in the future",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"dateOfBirth": future})),
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "patch: sex F",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"sex": "F"})),
            422,
            Some(&["sex"]),
        ),
        row(
            "patch: externalPatientID with a space",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"externalPatientID": "MRN 1"})),
            422,
            Some(&["externalPatientID"]),
        ),
        row(
            "patch: externalPatientID of 65 characters",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"externalPatientID": long_external})),
            422,
            Some(&["externalPatientID"]),
        ),
        row(
            "patch: location of another client",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"locationID": "L3"})),
            422,
            Some(&["locationID"]),
        ),
        row(
            "patch: nonexistent location",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"locationID": "L404"})),
            422,
            Some(&["locationID"]),
        ),
        row(
            "patch: nested bad and unknown address parts",
            M::PATCH,
            &one,
            ct(MERGE_CT),
            j(json!({"address": {"country": "usa", "zip": "10001"}})),
            422,
            Some(&["address.country", "address.zip"]),
        ),
        row(
            "patch: If-Match without quotes",
            M::PATCH,
            &one,
            ct_and(MERGE_CT, "if-match", "1"),
            j(json!({"firstName": "Changed"})),
            422,
            Some(&["If-Match"]),
        ),
        row(
            "patch: If-Match not a version",
            M::PATCH,
            &one,
            ct_and(MERGE_CT, "if-match", "\"abc\""),
            j(json!({"firstName": "Changed"})),
            422,
            Some(&["If-Match"]),
        ),
        row(
            "patch: empty Idempotency-Key",
            M::PATCH,
            &one,
            ct_and(MERGE_CT, "idempotency-key", ""),
            j(json!({"firstName": "Changed"})),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "patch: Idempotency-Key of 256 characters",
            M::PATCH,
            &one,
            ct_and(MERGE_CT, "idempotency-key", &long_key),
            j(json!({"firstName": "Changed"})),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "patch: Idempotency-Key with a space",
            M::PATCH,
            &one,
            ct_and(MERGE_CT, "idempotency-key", "key 2"),
            j(json!({"firstName": "Changed"})),
            422,
            Some(&["Idempotency-Key"]),
        ),
        row(
            "patch: bad UUID in the path",
            M::PATCH,
            "/v1/patients/not-a-uuid",
            ct(MERGE_CT),
            j(json!({"firstName": "X"})),
            404,
            None,
        ),
        row(
            "patch: bad UUID in the path, bad body",
            M::PATCH,
            "/v1/patients/not-a-uuid",
            vec![],
            "{",
            404,
            None,
        ),
        row(
            "patch: unknown patient",
            M::PATCH,
            &missing,
            ct(MERGE_CT),
            j(json!({"firstName": "X"})),
            404,
            None,
        ),
        // ---- GET /v1/patients/{id} ----
        row(
            "get: bad UUID in the path",
            M::GET,
            "/v1/patients/not-a-uuid",
            vec![],
            "",
            404,
            None,
        ),
        row(
            "get: unknown patient",
            M::GET,
            &missing,
            vec![],
            "",
            404,
            None,
        ),
        row(
            "get: malformed Consistency-Token",
            M::GET,
            &one,
            vec![("consistency-token", "garbage!".into())],
            "",
            422,
            Some(&["Consistency-Token"]),
        ),
        // ---- GET /v1/patients with filters ----
        row(
            "list: limit=0",
            M::GET,
            "/v1/patients?limit=0",
            vec![],
            "",
            422,
            Some(&["limit"]),
        ),
        row(
            "list: limit=501",
            M::GET,
            "/v1/patients?limit=501",
            vec![],
            "",
            422,
            Some(&["limit"]),
        ),
        row(
            "list: limit=-1",
            M::GET,
            "/v1/patients?limit=-1",
            vec![],
            "",
            422,
            Some(&["limit"]),
        ),
        row(
            "list: limit=abc",
            M::GET,
            "/v1/patients?limit=abc",
            vec![],
            "",
            422,
            Some(&["limit"]),
        ),
        row(
            "list: garbage cursor",
            M::GET,
            "/v1/patients?cursor=garbage",
            vec![],
            "",
            422,
            Some(&["cursor"]),
        ),
        row(
            "list: cursor not base64",
            M::GET,
            "/v1/patients?cursor=%21%21%21",
            vec![],
            "",
            422,
            Some(&["cursor"]),
        ),
        row(
            "list: dateOfBirth=1990-1-1",
            M::GET,
            "/v1/patients?dateOfBirth=1990-1-1",
            vec![],
            "",
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "list: dateOfBirth=2026-02-30",
            M::GET,
            "/v1/patients?dateOfBirth=2026-02-30",
            vec![],
            "",
            422,
            Some(&["dateOfBirth"]),
        ),
        row(
            "list: updatedSince not RFC 3339",
            M::GET,
            "/v1/patients?updatedSince=yesterday",
            vec![],
            "",
            422,
            Some(&["updatedSince"]),
        ),
        row(
            "list: clientID with a space",
            M::GET,
            "/v1/patients?clientID=C%201",
            vec![],
            "",
            422,
            Some(&["clientID"]),
        ),
        row(
            "list: externalPatientID with a space",
            M::GET,
            "/v1/patients?externalPatientID=MRN%201",
            vec![],
            "",
            422,
            Some(&["externalPatientID"]),
        ),
        row(
            "list: unknown filter",
            M::GET,
            "/v1/patients?foo=bar",
            vec![],
            "",
            422,
            Some(&["foo"]),
        ),
        row(
            "list: several bad filters at once",
            M::GET,
            "/v1/patients?limit=0&cursor=garbage&dateOfBirth=x&foo=1",
            vec![],
            "",
            422,
            Some(&["limit", "cursor", "dateOfBirth", "foo"]),
        ),
        row(
            "list: malformed Consistency-Token",
            M::GET,
            list,
            vec![("consistency-token", "v2;nonsense".into())],
            "",
            422,
            Some(&["Consistency-Token"]),
        ),
        // ---- POST /v1/patients/search ----
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
            "search: lastName as a number",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"lastName": 5})),
            400,
            Some(&["lastName"]),
        ),
        row(
            "search: body over 1 MiB",
            M::POST,
            search,
            ct(JSON_CT),
            oversize(),
            413,
            None,
        ),
        row(
            "search: no content type",
            M::POST,
            search,
            vec![],
            j(json!({"lastName": "Lovelace"})),
            415,
            None,
        ),
        row(
            "search: text/plain",
            M::POST,
            search,
            ct("text/plain"),
            j(json!({"lastName": "Lovelace"})),
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
            "search: dateOfBirth 1990-1-1",
            M::POST,
            search,
            ct(JSON_CT),
            j(json!({"dateOfBirth": "1990-1-1"})),
            422,
            Some(&["dateOfBirth"]),
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
            j(json!({"foo": 1, "limit": 0, "dateOfBirth": "1990-1-1"})),
            422,
            Some(&["foo", "limit", "dateOfBirth"]),
        ),
        row(
            "search: malformed Consistency-Token",
            M::POST,
            search,
            ct_and(JSON_CT, "consistency-token", "garbage!"),
            j(json!({"lastName": "Lovelace"})),
            422,
            Some(&["Consistency-Token"]),
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
    for (a, b) in [
        (
            "create: location of another client",
            "create: nonexistent location",
        ),
        (
            "patch: location of another client",
            "patch: nonexistent location",
        ),
    ] {
        if bodies.get(a) != bodies.get(b) {
            failures.push(format!(
                "[{a}] and [{b}] answer differently: {:?} / {:?}",
                bodies.get(a),
                bodies.get(b)
            ));
        }
    }

    let events_after = s.event_count(None).await;
    if events_after != events_before {
        failures.push(format!(
            "the bad requests wrote {} event(s)",
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
