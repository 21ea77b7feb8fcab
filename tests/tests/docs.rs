//! The partner documentation stays true: the guide's examples run against a
//! real stack, the OpenAPI document describes exactly the routes the API
//! serves, and `/docs` is a self-contained page.

use std::collections::BTreeSet;
use std::time::Duration;

use lis::stack::Roles;
use serde_json::Value;
use tests::{test_config, TestStack};

/// Every route of the partner API: (method, OpenAPI path, under `/v1`).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/oauth/token"),
    ("post", "/v1/patients"),
    ("get", "/v1/patients/{patientID}"),
    ("patch", "/v1/patients/{patientID}"),
    ("get", "/v1/patients"),
    ("post", "/v1/patients/search"),
];

/// Every problem type the API answers with.
const PROBLEM_TYPES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "not-found",
    "malformed-request",
    "validation-failed",
    "duplicate-patient",
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

/// Runs every `sh` example of the guide, in order, as one script with
/// `bash -euo pipefail`, against a stack where the partner holds the six
/// permissions over clients C1 and C2; the examples check their answers.
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
        .env_remove("TOKEN")
        .env_remove("PATIENT")
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
    let r = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .expect("request");
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
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected, "documented routes");

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    let flow = &doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"];
    assert_eq!(flow["tokenUrl"], "/oauth/token");
    for p in tests::SIX.split(',') {
        assert!(flow["scopes"][p].is_string(), "scope {p}");
    }

    for (method, path) in ROUTES {
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
            let security = op["security"].to_string();
            assert!(
                security.contains("\"bearer\"") && security.contains("patients:"),
                "{name}: security {security}"
            );
            let problem = &responses["401"]["content"]["application/problem+json"];
            assert!(problem.is_object(), "{name}: 401 is problem+json");
            assert!(
                responses["401"]["headers"]["WWW-Authenticate"].is_object(),
                "{name}: WWW-Authenticate"
            );
        }
        let writes = *method != "get" && v1 && *path != "/v1/patients/search";
        if writes {
            assert!(has_param(op, "Idempotency-Key", "header"), "{name}");
            for code in ["400", "409", "413", "415", "422"] {
                assert!(statuses.contains(code), "{name}: {code}");
            }
            let ok = if *method == "post" { "201" } else { "200" };
            for h in ["ETag", "Consistency-Token"] {
                assert!(responses[ok]["headers"][h].is_object(), "{name}: {h}");
            }
        }
        if !writes && v1 {
            assert!(has_param(op, "Consistency-Token", "header"), "{name}");
        }
    }
    let create = &doc["paths"]["/v1/patients"]["post"];
    assert!(create["responses"]["201"]["headers"]["Location"].is_object());
    let update = &doc["paths"]["/v1/patients/{patientID}"]["patch"];
    assert!(has_param(update, "If-Match", "header"));
    assert!(update["responses"]["412"].is_object());
    assert!(update["responses"]["404"].is_object());
    let get_one = &doc["paths"]["/v1/patients/{patientID}"]["get"];
    assert!(get_one["responses"]["200"]["headers"]["ETag"].is_object());
    assert!(get_one["responses"]["404"].is_object());
    let list = &doc["paths"]["/v1/patients"]["get"];
    for q in ["externalPatientID", "clientID", "locationID", "lastName"] {
        assert!(has_param(list, q, "query"), "list filter {q}");
    }
    for q in ["dateOfBirth", "updatedSince", "limit", "cursor"] {
        assert!(has_param(list, q, "query"), "list filter {q}");
    }
    let token = &doc["paths"]["/oauth/token"]["post"];
    assert!(token["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    for code in ["200", "400", "429"] {
        assert!(token["responses"][code].is_object(), "token {code}");
    }

    // Every documented route is served: without credentials it answers 401
    // (not 404 or 405).
    for (method, path) in ROUTES {
        let url = format!(
            "{}{}",
            s.base,
            path.replace("{patientID}", &uuid::Uuid::new_v4().to_string())
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
    let r = s
        .http
        .get(format!("{}/docs", s.base))
        .send()
        .await
        .expect("request");
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
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let ops = lis::docs::operations(&doc);
    assert_eq!(ops.len(), ROUTES.len());
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

    let r = s
        .http
        .get(format!("{}/docs/partner-guide.md", s.base))
        .send()
        .await
        .expect("request");
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
