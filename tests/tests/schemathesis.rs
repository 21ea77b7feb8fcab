//! The OpenAPI document says what the server enforces: schemathesis
//! (PyPI), with every check and every phase (stateful included), finds no
//! schema-valid request rejected, no schema-invalid request accepted, no
//! server error and no answer the document does not describe.
//!
//! Needs schemathesis 4.32.5 (`.ci/run` installs it); about 30 seconds
//! (`--max-examples 30 --seed 1`).
//!
//! Schemathesis is given what a real partner has and a schema cannot say:
//! ids of records that exist and cursors and consistency tokens this server
//! issued (opaque values that no pattern can generate), in its own
//! configuration file, and through hooks (`tests/python/schemathesis_hooks.py`)
//! where the configuration does not reach. `412` counts as an expected
//! answer to a schema-valid request, as `409` does: a stale `If-Match` is a
//! state conflict, not bad data.

use std::fmt::Write as _;

use serde_json::{json, Value};
use tests::{header, patient_body, TestStack};

/// Every permission, so that no operation answers only 403.
const ALL: &str = "patients:create,patients:read,patients:update,tests:create,tests:read,\
                   tests:update,results:write,audit:read";

async fn send(
    s: &TestStack,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = s
        .http
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("request")
}

/// The `nextCursor` of the first page of `path` (one item a page), read
/// with `ct` so that the writes before it are there.
async fn cursor(s: &TestStack, token: &str, path: &str, ct: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = s
        .get_consistent(token, &format!("{path}{sep}limit=1"), ct)
        .await;
    assert_eq!(r.status(), 200, "{path}");
    let page: Value = r.json().await.expect("json");
    page["nextCursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} has a second page: {page}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing() {
    let s = TestStack::start().await;
    s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .expect("catalog");
    let partner = s.partner(ALL, "*", "*").await;
    let token = s.token(&partner).await;

    // Records that exist, each with a second page of its lists.
    let mut patients = Vec::new();
    for mrn in ["MRN-ST-1", "MRN-ST-2"] {
        let r = s.create_patient(&token, &patient_body(mrn)).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.expect("json");
        patients.push(v["patientID"].as_str().expect("id").to_string());
    }
    let patient = &patients[0];
    let r = s
        .patch(
            &token,
            &format!("/v1/patients/{patient}"),
            None,
            r#"{"phone":"+15555550101"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut orders = Vec::new();
    for external in ["EHR-ST-1", "EHR-ST-2"] {
        let body = json!({"patientID": patient, "clientID": "C1", "locationID": "L1",
                          "externalOrderID": external, "tests": [{"code": "CBC"}]});
        let r = send(&s, &token, reqwest::Method::POST, "/v1/orders", Some(body)).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.expect("json");
        orders.push(v["orderID"].as_str().expect("id").to_string());
    }
    let order = &orders[0];
    let r = send(
        &s,
        &token,
        reqwest::Method::POST,
        &format!("/v1/orders/{order}/collect"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let ct = header(&r, "consistency-token");

    let patient_cursor = cursor(&s, &token, "/v1/patients", &ct).await;
    let order_cursor = cursor(&s, &token, "/v1/orders", &ct).await;
    // What the configuration cannot give: body values in the phases that do
    // not apply its pins, and headers and query values that depend on the
    // record a case reads (tests/python/schemathesis_hooks.py).
    // The header patterns as the document states them (the hooks check
    // generated values against them).
    let doc: Value = serde_json::from_str(lis::docs::openapi_json()).expect("document");
    let header_pattern = |name: &str| {
        doc["paths"]["/v1/patients/{patientID}"]["patch"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["schema"]["pattern"].clone())
            .unwrap_or_else(|| panic!("{name} is documented"))
    };
    let pins = json!({"consistencyToken": ct, "asOf": "2026-01-01T00:00:00Z",
        "patterns": {"If-Match": header_pattern("If-Match"),
                     "Idempotency-Key": header_pattern("Idempotency-Key")},
        "body": {
        "/v1/patients": {"clientID": "C1", "locationID": "L1"},
        "/v1/orders": {"clientID": "C1", "locationID": "L1", "patientID": patient},
        "/v1/patients/search": {"cursor": patient_cursor},
        "/v1/orders/search": {"cursor": order_cursor},
    }});
    let cursors = [
        ("/v1/patients", "query", patient_cursor.clone()),
        ("/v1/patients/search", "body", patient_cursor),
        ("/v1/orders", "query", order_cursor.clone()),
        ("/v1/orders/search", "body", order_cursor),
        (
            "/v1/patients/{patientID}/history",
            "query",
            cursor(&s, &token, &format!("/v1/patients/{patient}/history"), &ct).await,
        ),
        (
            "/v1/orders/{orderID}/history",
            "query",
            cursor(&s, &token, &format!("/v1/orders/{order}/history"), &ct).await,
        ),
        (
            "/v1/access-log",
            "query",
            cursor(&s, &token, "/v1/access-log", &ct).await,
        ),
    ];

    let mut config = format!(
        r#"headers = {{ Authorization = "Bearer {token}" }}

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 412, 429]

[parameters]
"path.patientID" = "{patient}"
"path.orderID" = "{order}"
"body.clientID" = "C1"
"body.locationID" = "L1"
"body.patientID" = "{patient}"
"body.tests" = [{{ code = "CBC" }}]
"#
    );
    for (path, place, value) in cursors {
        let _ = write!(
            config,
            "\n[[operations]]\ninclude-path = \"{path}\"\nparameters = {{ \"{place}.cursor\" = \"{value}\" }}\n"
        );
    }
    let dir = std::env::temp_dir().join(format!("lis-schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("schemathesis.toml");
    std::fs::write(&file, config).expect("config");

    let hooks =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/schemathesis_hooks.py");
    let out = std::process::Command::new("python3")
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("LIS_ST_PINS", pins.to_string())
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&file)
        .arg("run")
        .arg(format!("{}/openapi.json", s.base))
        .args(["--url", &s.base])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "30", "--seed", "1", "--workers", "2"])
        .current_dir(&dir)
        .output()
        .expect("python3 -m schemathesis.cli (schemathesis from PyPI: .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout
        .lines()
        .filter(|l| l.contains("generated") || l.contains("passed"))
    {
        println!("schemathesis: {}", line.trim());
    }
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}
