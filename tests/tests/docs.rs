//! The partner documentation stays true: the guide's examples run against a
//! real stack, the OpenAPI document describes exactly the routes the API
//! serves, and `/docs` is a self-contained page.

use std::collections::BTreeSet;
use std::time::Duration;

use lis::stack::Roles;
use serde_json::Value;
use tests::{test_config, TestStack};

/// Every route of the partner API: (method, OpenAPI path, the permissions
/// it names as OAuth 2.0 scopes, any one of which suffices).
const ROUTES: &[(&str, &str, &[&str])] = &[
    ("post", "/oauth/token", &[]),
    ("post", "/v1/patients", &["patients:create"]),
    (
        "get",
        "/v1/patients/{patientID}",
        &["patients:read", "audit:read"],
    ),
    ("patch", "/v1/patients/{patientID}", &["patients:update"]),
    ("get", "/v1/patients", &["patients:read"]),
    ("post", "/v1/patients/search", &["patients:read"]),
    ("post", "/v1/orders", &["tests:create"]),
    ("get", "/v1/orders/{orderID}", &["tests:read", "audit:read"]),
    ("patch", "/v1/orders/{orderID}", &["tests:update"]),
    ("get", "/v1/orders", &["tests:read"]),
    ("post", "/v1/orders/search", &["tests:read"]),
    ("post", "/v1/orders/{orderID}/collect", &["tests:update"]),
    ("post", "/v1/orders/{orderID}/receive", &["tests:update"]),
    ("post", "/v1/orders/{orderID}/start", &["tests:update"]),
    ("post", "/v1/orders/{orderID}/cancel", &["tests:update"]),
    ("post", "/v1/orders/{orderID}/results", &["results:write"]),
    ("post", "/v1/orders/{orderID}/finalize", &["results:write"]),
    ("post", "/v1/orders/{orderID}/correct", &["results:write"]),
    (
        "get",
        "/v1/catalog",
        &["tests:create", "tests:read", "tests:update"],
    ),
    (
        "get",
        "/v1/patients/{patientID}/history",
        &["audit:read", "patients:read"],
    ),
    (
        "get",
        "/v1/orders/{orderID}/history",
        &["audit:read", "tests:read"],
    ),
    ("get", "/v1/access-log", &["audit:read"]),
];

/// Public routes of the partner API: no credentials, no problem+json 401.
const PUBLIC: &[(&str, &str)] = &[("get", "/.well-known/jwks.json")];

/// The routes that create a record (`201` with `Location`).
const CREATES: &[&str] = &["/v1/patients", "/v1/orders"];

/// Reads that take no `Consistency-Token`: reference data, and the access
/// log (written before each read's answer, never behind a write).
const REFERENCE_READS: &[&str] = &["/v1/catalog", "/v1/access-log"];

/// The order actions' bodies: (action, schema, its required members).
const ACTION_BODIES: &[(&str, &str, &[&str])] = &[
    ("collect", "CollectRequest", &[]),
    ("receive", "NoFields", &[]),
    ("start", "NoFields", &[]),
    ("cancel", "CancelRequest", &["reason"]),
    ("results", "ResultsRequest", &["results"]),
    ("finalize", "NoFields", &[]),
    ("correct", "CorrectRequest", &["reason", "results"]),
];

/// Every problem type the API answers with.
const PROBLEM_TYPES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "not-found",
    "malformed-request",
    "validation-failed",
    "duplicate-patient",
    "duplicate-accession",
    "invalid-status",
    "request-in-progress",
    "stale-version",
    "payload-too-large",
    "unsupported-media-type",
    "rate-limited",
    "unavailable",
    "internal",
];

fn guide_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/partner-guide.md")
}

fn guide() -> String {
    std::fs::read_to_string(guide_path()).expect("docs/partner-guide.md")
}

/// The contents of every fenced block whose info string is exactly `sh`,
/// in order. Fails on blocks that look runnable but are not marked `sh`.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    let mut in_other = false;
    for line in markdown.lines() {
        let fence = line.trim_end();
        if let Some(block) = current.as_mut() {
            if fence == "```" {
                blocks.push(current.take().expect("open block"));
            } else {
                block.push_str(line);
                block.push('\n');
            }
        } else if in_other {
            if fence == "```" {
                in_other = false;
            }
        } else if let Some(info) = fence.strip_prefix("```") {
            assert!(
                !matches!(info, "bash" | "shell" | "console" | "zsh" | "sh "),
                "a ```{info} block: runnable examples use exactly ```sh"
            );
            if info == "sh" {
                current = Some(String::new());
            } else {
                in_other = true;
            }
        }
    }
    assert!(current.is_none() && !in_other, "an unclosed code block");
    blocks
}

/// The guide's headings (outside code blocks), as plain text.
fn headings(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let text = line.trim_start_matches('#').trim();
            let text = match text.rfind(" {#") {
                Some(i) if text.ends_with('}') => &text[..i],
                _ => text,
            };
            out.push(text.replace(['`', '*'], ""));
        }
    }
    out
}

/// The text of an HTML page: tags removed, the usual entities decoded.
fn html_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Waits until the read side serves the seeded catalog, as it would long
/// before a partner's first order on a real installation.
async fn wait_for_catalog(s: &TestStack) {
    let expected = domain::catalog::seed_catalog().len() as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let db = s.read.get().await.expect("read db");
        let n: i64 = db
            .query_one("SELECT count(*) FROM catalog_tests", &[])
            .await
            .expect("count")
            .get(0);
        if n >= expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the catalog reached the read model"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs every `sh` example of the guide, in order, as one script with
/// `bash -euo pipefail`, against a stack with the seed catalog, where the
/// partner holds the six permissions over clients C1 and C2, and a lab
/// partner (`LAB_CLIENT_ID`) holds `tests:read`, `tests:update` and
/// `results:write`; the examples check their answers.
#[tokio::test(flavor = "multi_thread")]
async fn guide_examples_run_against_a_stack() {
    for tool in ["bash", "curl", "jq"] {
        assert!(have(tool), "the guide's examples need `{tool}` on PATH");
    }
    let blocks = sh_blocks(&guide());
    assert!(
        blocks.len() >= 10,
        "expected the guide's runnable examples, found {}",
        blocks.len()
    );
    let s = TestStack::start().await;
    let (partner, _) = s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &tests::TestStack::operator())
        .await
        .expect("seed catalog");
    // The lab's own integration, for the actions only a lab takes.
    let lab = s
        .partner("tests:read,tests:update,results:write", "*", "*")
        .await;
    wait_for_catalog(&s).await;
    let dir = std::env::temp_dir().join(format!("lis-guide-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("guide.sh");
    std::fs::write(&script, blocks.join("\n")).expect("script");
    let run = tokio::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg(&script)
        .current_dir(&dir)
        .env("BASE", &s.base)
        .env("CLIENT_ID", &partner.client_id)
        .env("CLIENT_SECRET", &partner.secret)
        .env("LAB_CLIENT_ID", &lab.client_id)
        .env("LAB_CLIENT_SECRET", &lab.secret)
        .env_remove("TOKEN")
        .env_remove("LAB_TOKEN")
        .env_remove("PATIENT")
        .env_remove("ORDER")
        .env_remove("CT")
        .env_remove("ETAG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the guide's examples finish within 3 minutes")
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the guide's examples failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    s.stop().await;
}

/// Follows every `$ref` of the document and checks that it resolves.
fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.strip_prefix('#').expect("a local $ref");
                assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
            }
            map.values().for_each(|v| check_refs(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

fn has_param(op: &Value, name: &str, location: &str) -> bool {
    op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == name && p["in"] == location)
}

/// `/openapi.json` is an OpenAPI 3.1 document that describes exactly the
/// routes the API serves, each with its statuses, headers and security.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_every_route() {
    let roles = Roles {
        commands: true,
        queries: true,
        ..Roles::NONE
    };
    let s = TestStack::start_with(test_config(), roles).await;
    let r = s.get_public("/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().await.expect("JSON");
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
        "openapi is {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    check_refs(&doc, &doc);

    // Exactly the routes the API serves.
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (*m, *p))
        .chain(PUBLIC.iter().copied())
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected, "documented routes");

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    let flow = &doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"];
    assert_eq!(flow["tokenUrl"], "/oauth/token");
    for p in tests::SIX.split(',').chain(["results:write", "audit:read"]) {
        assert!(flow["scopes"][p].is_string(), "scope {p}");
    }

    for (method, path, permissions) in ROUTES {
        let op = &doc["paths"][path][method];
        let name = format!("{} {path}", method.to_uppercase());
        assert!(op["summary"].is_string(), "{name}: summary");
        assert!(op["operationId"].is_string(), "{name}: operationId");
        let responses = op["responses"].as_object().expect("responses");
        for (status, resp) in responses {
            assert!(
                resp["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name} {status}: description"
            );
        }
        let statuses: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
        assert!(statuses.contains("401"), "{name}: 401");
        let v1 = path.starts_with("/v1/");
        if v1 {
            assert!(statuses.contains("403"), "{name}: 403");
            assert!(statuses.contains("503"), "{name}: 503");
            let requirements = op["security"].as_array().expect("security");
            assert!(
                requirements.iter().any(|r| r["bearer"].is_array()),
                "{name}: bearer"
            );
            let scopes: BTreeSet<&str> = requirements
                .iter()
                .filter_map(|r| r["oauth2"].as_array())
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                scopes,
                permissions.iter().copied().collect::<BTreeSet<&str>>(),
                "{name}: scopes"
            );
            let problem = &responses["401"]["content"]["application/problem+json"];
            assert!(problem.is_object(), "{name}: 401 is problem+json");
            assert!(
                responses["401"]["headers"]["WWW-Authenticate"].is_object(),
                "{name}: WWW-Authenticate"
            );
        }
        let writes = *method != "get" && v1 && !path.ends_with("/search");
        if writes {
            assert!(has_param(op, "Idempotency-Key", "header"), "{name}");
            for code in ["400", "409", "413", "415", "422"] {
                assert!(statuses.contains(code), "{name}: {code}");
            }
            let ok = if CREATES.contains(path) { "201" } else { "200" };
            assert!(statuses.contains(ok), "{name}: {ok}");
            for h in ["ETag", "Consistency-Token"] {
                assert!(responses[ok]["headers"][h].is_object(), "{name}: {h}");
            }
            if CREATES.contains(path) {
                assert!(
                    responses[ok]["headers"]["Location"].is_object(),
                    "{name}: Location"
                );
            } else {
                // Changes of an existing record: If-Match, and the record's
                // 404.
                assert!(has_param(op, "If-Match", "header"), "{name}: If-Match");
                for code in ["404", "412"] {
                    assert!(statuses.contains(code), "{name}: {code}");
                }
            }
        }
        if !writes && v1 && !REFERENCE_READS.contains(path) {
            assert!(has_param(op, "Consistency-Token", "header"), "{name}");
        }
        if *method == "get" && path.ends_with('}') {
            assert!(statuses.contains("404"), "{name}: 404");
            assert!(
                responses["200"]["headers"]["ETag"].is_object(),
                "{name}: ETag"
            );
        }
    }
    let list = &doc["paths"]["/v1/patients"]["get"];
    for q in ["externalPatientID", "clientID", "locationID", "lastName"] {
        assert!(has_param(list, q, "query"), "list filter {q}");
    }
    for q in ["dateOfBirth", "updatedSince", "limit", "cursor"] {
        assert!(has_param(list, q, "query"), "list filter {q}");
    }
    let list = &doc["paths"]["/v1/orders"]["get"];
    for q in [
        "patientID",
        "status",
        "accessionNumber",
        "externalOrderID",
        "clientID",
        "locationID",
        "updatedSince",
        "limit",
        "cursor",
    ] {
        assert!(has_param(list, q, "query"), "order list filter {q}");
    }
    let token = &doc["paths"]["/oauth/token"]["post"];
    assert!(token["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    for code in ["200", "400", "429"] {
        assert!(token["responses"][code].is_object(), "token {code}");
    }

    // Orders: the business conflicts, the bodies and the representation.
    let conflict = |method: &str, path: &str| {
        doc["paths"][path][method]["responses"]["409"]["description"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(conflict("post", "/v1/orders").contains("duplicate-accession"));
    assert!(conflict("patch", "/v1/orders/{orderID}").contains("invalid-status"));
    let schemas = &doc["components"]["schemas"];
    let schema_of = |body: &Value| -> Value {
        let r = body["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("a $ref body: {body}"));
        doc.pointer(r.trim_start_matches('#'))
            .expect("schema")
            .clone()
    };
    for (action, schema, required) in ACTION_BODIES {
        let path = format!("/v1/orders/{{orderID}}/{action}");
        assert!(conflict("post", &path).contains("invalid-status"), "{path}");
        let body = &doc["paths"][&path]["post"]["requestBody"];
        assert_eq!(body["required"], !required.is_empty(), "{path}: required");
        assert_eq!(schema_of(body), schemas[schema], "{path}: body");
        let members: BTreeSet<&str> = schemas[schema]["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            members,
            required.iter().copied().collect::<BTreeSet<&str>>(),
            "{path}: required members"
        );
    }
    let result_input = &schemas["ResultInput"]["properties"];
    for member in ["code", "value", "unit"] {
        assert!(result_input[member].is_object(), "ResultInput.{member}");
    }
    let new_order = schema_of(&doc["paths"]["/v1/orders"]["post"]["requestBody"]);
    for member in [
        "patientID",
        "clientID",
        "locationID",
        "tests",
        "specimen",
        "priority",
    ] {
        assert!(
            new_order["properties"][member].is_object(),
            "NewOrder.{member}"
        );
    }
    let patch = &doc["paths"]["/v1/orders/{orderID}"]["patch"]["requestBody"]["content"];
    assert!(patch["application/merge-patch+json"]["schema"]["$ref"].is_string());
    let order = &schemas["Order"]["properties"];
    for member in [
        "orderID",
        "patientID",
        "patient",
        "accessionNumber",
        "status",
        "results",
        "version",
    ] {
        assert!(order[member].is_object(), "Order.{member}");
    }
    let result = &schemas["RecordedResult"]["properties"];
    assert!(result["referenceRange"].is_object() && result["flag"].is_object());
    let flags: BTreeSet<&str> = schemas["Flag"]["enum"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(flags, BTreeSet::from(["L", "H", "LL", "HH", "A", "N"]));
    let kinds = schemas["AnalyteKind"].to_string();
    assert!(
        kinds.contains("\"numeric\"") && kinds.contains("\"text\""),
        "{kinds}"
    );
    let catalog = &doc["paths"]["/v1/catalog"]["get"]["responses"]["200"];
    assert!(catalog["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .is_some_and(|r| r.ends_with("/CatalogPage")));

    // Every documented route is served: without credentials it answers 401
    // (not 404 or 405).
    for (method, path, _) in ROUTES {
        let id = uuid::Uuid::new_v4().to_string();
        let url = format!(
            "{}{}",
            s.base,
            path.replace("{patientID}", &id).replace("{orderID}", &id)
        );
        let req = match *method {
            "get" => s.http.get(&url),
            "post" => s.http.post(&url),
            "patch" => s.http.patch(&url),
            other => panic!("method {other}"),
        };
        let req = if *path == "/oauth/token" {
            req.form(&[("grant_type", "client_credentials")])
        } else {
            req.header("content-type", "application/json").body("{}")
        };
        let r = req.send().await.expect("request");
        assert_eq!(r.status(), 401, "{method} {path}");
    }
    // The public ones answer without credentials, as documented.
    let jwks = &doc["paths"]["/.well-known/jwks.json"]["get"];
    assert_eq!(jwks["security"], serde_json::json!([{}]), "jwks is public");
    let r = s.get_public("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/jwk-set+json");
    assert!(
        jwks["responses"]["200"]["content"]["application/jwk-set+json"]["schema"]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/JwkSet"))
    );
    let set: Value = r.json().await.expect("JSON");
    let documented = &doc["components"]["schemas"]["Jwk"]["properties"];
    let keys = set["keys"].as_array().expect("keys");
    assert!(!keys.is_empty(), "the signing key is published");
    for key in keys {
        let fields: BTreeSet<&String> = key.as_object().expect("a key").keys().collect();
        let named: BTreeSet<&String> = documented.as_object().expect("Jwk").keys().collect();
        assert_eq!(
            fields, named,
            "a served key has exactly the documented fields"
        );
    }
    s.stop().await;
}

/// `/docs` is one HTML page with the guide and the table of operations,
/// loading nothing from anywhere; `/docs/partner-guide.md` is the guide.
#[tokio::test(flavor = "multi_thread")]
async fn docs_page_is_self_contained() {
    // Served by any process with an HTTP role, here the read side alone.
    let roles = Roles {
        queries: true,
        ..Roles::NONE
    };
    let s = TestStack::start_with(test_config(), roles).await;
    let r = s.get_public("/docs").await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = r.text().await.expect("body");
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script tag");
    assert!(
        !lower.contains("http://") && !lower.contains("https://"),
        "a URL"
    );
    for attr in [
        "src=\"//",
        "href=\"//",
        "src='//",
        "href='//",
        "@import",
        "url(",
    ] {
        assert!(!lower.contains(attr), "{attr}");
    }
    assert!(!lower.contains(" src="), "an embedded resource");
    assert!(html.contains("href=\"/openapi.json\""));

    let text = html_text(&html);
    let markdown = guide();
    let heads = headings(&markdown);
    assert!(heads.len() >= 10, "{heads:?}");
    for h in heads {
        assert!(text.contains(&h), "heading {h:?} is missing from /docs");
    }

    // The table of operations comes from the OpenAPI document.
    let doc: Value = s
        .get_public("/openapi.json")
        .await
        .json()
        .await
        .expect("JSON");
    let ops = lis::docs::operations(&doc);
    assert_eq!(ops.len(), ROUTES.len() + PUBLIC.len());
    for op in ops {
        let row = format!(
            "<td class=\"method\">{}</td><td><code>{}</code></td><td>{}</td>",
            op.method, op.path, op.summary
        );
        assert!(html.contains(&row), "no row for {} {}", op.method, op.path);
    }

    // Each problem type leads to its section of the guide.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for slug in PROBLEM_TYPES {
        assert!(
            html.contains(&format!("id=\"{slug}\"")),
            "no section {slug}"
        );
        let r = no_redirects
            .get(format!("{}/problems/{slug}", s.base))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 303, "{slug}");
        assert_eq!(r.headers()["location"], format!("/docs#{slug}").as_str());
    }

    let r = s.get_public("/docs/partner-guide.md").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/markdown"));
    assert_eq!(r.text().await.unwrap(), markdown);
    s.stop().await;
}

#[test]
fn sh_blocks_are_found_in_order() {
    let md = "# T\n```sh\na=1\n```\n```json\n{}\n```\n```sh\necho $a\n```\n";
    assert_eq!(sh_blocks(md), vec!["a=1\n", "echo $a\n"]);
    assert_eq!(headings(md), vec!["T"]);
    assert_eq!(html_text("<h2 id=\"x\"><code>a&amp;b</code></h2>"), "a&b");
}
