//! The partner API's documentation, served by every process that serves the
//! API: `GET /openapi.json` (the OpenAPI 3.1 document, generated from the
//! handlers' annotations), `GET /docs` (the developer guide as one
//! self-contained HTML page, with a table of every operation taken from that
//! document) and `GET /docs/partner-guide.md` (the guide's Markdown).
//! A problem `type` such as `/problems/duplicate-patient` redirects to its
//! section of the guide.
//!
//! The page loads nothing from anywhere: no scripts, fonts or stylesheets,
//! and a `Content-Security-Policy` that forbids them.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use domain::access::Permission;
use serde_json::{json, Value};
use utoipa::openapi::path::{Operation as PathOperation, Parameter};
use utoipa::openapi::security::{
    ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi};

/// The developer guide, as written in `docs/partner-guide.md`.
pub const GUIDE: &str = include_str!("../../docs/partner-guide.md");

/// The partner API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "LIS partner API",
        version = "1",
        description = "The REST API through which integration partners (EHRs, clinic systems, \
            reference labs) create, read and update patients and test orders of the laboratory \
            information system, and record results, within the permissions and the \
            client/location scope the lab's operator gave them. Errors are `application/problem+json` (RFC 9457) except at \
            `/oauth/token`, which answers in the RFC 6749 shape. The developer guide, with \
            runnable examples, is served at `/docs`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        command_handler::oauth::token,
        crate::stack::jwks,
        command_handler::openapi::create_patient,
        query_api::patients::get_one,
        command_handler::openapi::update_patient,
        query_api::patients::list,
        query_api::patients::search,
        command_handler::openapi::create_order,
        query_api::orders::get_one,
        command_handler::openapi::update_order,
        query_api::orders::list,
        query_api::orders::search,
        query_api::orders::catalog,
        query_api::history::patient_history,
        query_api::history::order_history,
        query_api::access_log::list,
    ),
    components(schemas(
        contract::views::PatientView,
        contract::views::AccountView,
        contract::views::SexSchema,
        contract::views::AddressSchema,
        contract::views::WarningSchema,
        contract::problem::Problem,
        contract::problem::FieldErrorSchema,
        command_handler::openapi::NewPatient,
        command_handler::openapi::PatientMergePatch,
        command_handler::openapi::PatientWritten,
        query_api::patients::PatientSearch,
        query_api::patients::PatientPage,
        command_handler::oauth::TokenRequest,
        command_handler::oauth::GrantType,
        command_handler::oauth::TokenResponse,
        command_handler::oauth::OAuthError,
        platform::token::JwkSet,
        platform::token::Jwk,
        contract::order_view::OrderView,
        contract::order_view::PatientSummary,
        contract::order_view::OrderedTest,
        contract::order_view::OrderStatusSchema,
        contract::order_view::PrioritySchema,
        contract::order_view::SpecimenSchema,
        contract::order_view::RecordedResultSchema,
        contract::order_view::ResultValueSchema,
        contract::order_view::RecordedRangeSchema,
        contract::order_view::FlagSchema,
        command_handler::openapi::NewOrder,
        command_handler::openapi::NewSpecimen,
        command_handler::openapi::OrderMergePatch,
        command_handler::openapi::SpecimenMergePatch,
        command_handler::openapi::CollectRequest,
        command_handler::openapi::CancelRequest,
        command_handler::openapi::ResultsRequest,
        command_handler::openapi::CorrectRequest,
        command_handler::openapi::ResultInput,
        command_handler::openapi::NoFields,
        query_api::orders::OrderSearch,
        query_api::orders::OrderPage,
        query_api::orders::CatalogPage,
        query_api::orders::CatalogTestSchema,
        query_api::orders::AnalyteSchema,
        query_api::orders::AnalyteKindSchema,
        query_api::orders::ReferenceRangeSchema,
        query_api::history::HistoryPage,
        query_api::history::HistoryEntry,
        query_api::history::Change,
        query_api::access_log::AccessPage,
        query_api::access_log::AccessEntry,
    )),
    modifiers(&OrderActions, &SecuritySchemes, &SharedParts),
    tags(
        (name = "auth", description = "Access tokens (OAuth 2.0 client credentials)."),
        (name = "patients", description = "Patients of the lab's clients."),
        (name = "orders", description = "Orders (\"tests\" in partner language): placement, the \
            status lifecycle, results with reference ranges and flags, reads."),
        (name = "catalog", description = "The lab's test catalog: tests, analytes, units and \
            reference ranges."),
        (name = "history", description = "For auditors: every change of a record, a record as \
            it stood at an instant, and who read which record."),
    ),
)]
pub struct ApiDoc;

/// Adds the order actions' operations, made from `domain::order::OrderAction`
/// (`command_handler::openapi::action_operations`).
struct OrderActions;

impl Modify for OrderActions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in command_handler::openapi::action_operations() {
            openapi.paths.paths.insert(path, item);
        }
    }
}

/// Adds the security schemes the operations name.
struct SecuritySchemes;

/// What each permission allows, for the OAuth 2.0 scopes.
fn permission_description(p: Permission) -> &'static str {
    match p {
        Permission::PatientsCreate => "Create patients.",
        Permission::PatientsRead => "Read, list and search patients.",
        Permission::PatientsUpdate => "Change patients.",
        Permission::TestsCreate => "Create test orders.",
        Permission::TestsRead => "Read test orders and the test catalog.",
        Permission::TestsUpdate => "Change test orders and move them through their lifecycle.",
        Permission::ResultsWrite => "Record, finalize and correct results.",
        Permission::AuditRead => "Read history, as-of state and the access log.",
    }
}

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /oauth/token`, sent as \
                         `Authorization: Bearer <token>`. Missing, malformed, expired or \
                         revoked: 401 with `WWW-Authenticate: Bearer`. Tokens are JWTs \
                         signed with Ed25519 (`EdDSA`); the public keys are a JWKS at \
                         `GET /.well-known/jwks.json`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::ClientCredentials(ClientCredentials::new(
                    "/oauth/token",
                    Scopes::from_iter(
                        Permission::ALL
                            .iter()
                            .map(|p| (p.as_str(), permission_description(*p))),
                    ),
                ))],
                "OAuth 2.0 client credentials. The token carries every permission the \
                 operator granted the partner; each operation names the one it needs. \
                 Permissions and scope are read afresh on every request.",
            )),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The partner's `client_id` and `client_secret` in HTTP Basic, at \
                         `POST /oauth/token` only.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds what the partner operations (`/v1/…`) share, written once here so
/// that every operation says it the same way: the 401, 413 and 503 answers
/// and the `If-Match`, `Idempotency-Key` and `Consistency-Token` headers.
/// The handlers' annotations describe only what is their own.
struct SharedParts;

/// What an operation is, for the parts it shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A command: `POST`/`PATCH` other than a search; `on_record` when it
    /// changes an existing record (a path with an id), which `If-Match` can
    /// pin to a version.
    Write { on_record: bool },
    /// A read: `GET` or a search; `token` when it honours a
    /// `Consistency-Token` (every read of records, not the catalog or the
    /// access log); `body` for a search.
    Read { token: bool, body: bool },
}

impl Shape {
    fn of(method: &str, path: &str) -> Shape {
        let search = path.ends_with("/search");
        if method == "get" || search {
            Shape::Read {
                token: !["/v1/catalog", "/v1/access-log"].contains(&path),
                body: search,
            }
        } else {
            Shape::Write {
                on_record: path.contains('{'),
            }
        }
    }
}

/// An optional header whose value the server checks against `pattern`
/// (422 otherwise), with an `example` of a valid value when one can be
/// written down (an opaque token cannot).
fn header_param(name: &str, description: &str, pattern: &str, example: Option<&str>) -> Parameter {
    let mut schema = json!({"type": "string", "pattern": pattern});
    if let Some(example) = example {
        schema["example"] = json!(example);
    }
    serde_json::from_value(json!({
        "name": name, "in": "header", "required": false,
        "description": description, "schema": schema,
    }))
    .expect("a header parameter")
}

fn problem_response(
    description: &str,
    header: Option<(&str, Value)>,
) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    let mut r = json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    });
    if let Some((name, h)) = header {
        r["headers"] = json!({ name: h });
    }
    serde_json::from_value(r).expect("a problem response")
}

fn retry_after(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    problem_response(
        description,
        Some((
            "Retry-After",
            json!({"description": "Seconds to wait.",
                   "schema": {"type": "integer", "format": "int64", "minimum": 0}}),
        )),
    )
}

/// What `If-Match` may be: `*`, a version's strong tag, or a weak tag.
const IF_MATCH_PATTERN: &str = r#"^\s*(\*|"0*[1-9][0-9]{0,17}"|W/.*)\s*$"#;
/// What `Idempotency-Key` may be: 1-255 visible ASCII characters.
const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";
/// What `Consistency-Token` may be: unpadded base64url.
const CONSISTENCY_TOKEN_PATTERN: &str = "^\\s*[A-Za-z0-9_-]{1,4096}\\s*$";

impl SharedParts {
    fn add(op: &mut PathOperation, shape: Shape) {
        let params = op.parameters.get_or_insert_with(Vec::new);
        let answers = &mut op.responses.responses;
        answers.insert(
            "401".into(),
            problem_response(
                "No valid bearer token (missing, malformed, expired, or the partner was \
                 disabled or its secret rotated).",
                Some((
                    "WWW-Authenticate",
                    json!({"description": "`Bearer realm=\"lis\"`", "schema": {"type": "string"}}),
                )),
            ),
        );
        let body = match shape {
            Shape::Write { on_record } => {
                if on_record {
                    params.push(header_param(
                        "If-Match",
                        "The `ETag` of the version this change is based on, such as `\"3\"`. \
                         When stale: 412 and nothing changes. When absent, the change applies \
                         to the current version. `*` matches any version; a weak tag never \
                         matches (412).",
                        IF_MATCH_PATTERN,
                        Some("\"3\""),
                    ));
                }
                params.push(header_param(
                    "Idempotency-Key",
                    "1-255 visible ASCII characters. A retry with the same key and body \
                     answers the first answer again (any status below 500) and changes \
                     nothing; kept at least 24 hours, per partner, method and path.",
                    IDEMPOTENCY_KEY_PATTERN,
                    Some("order-4711-attempt"),
                ));
                answers.insert(
                    "503".into(),
                    retry_after(
                        "A dependency is unavailable; retry after `Retry-After` seconds (with \
                         the same `Idempotency-Key`).",
                    ),
                );
                true
            }
            Shape::Read { token, body } => {
                let answer = if token {
                    params.push(header_param(
                        "Consistency-Token",
                        "The `Consistency-Token` of a write: the answer reflects at least that \
                         write (the read waits up to 2 seconds, then answers 503). Opaque: \
                         unpadded base64url, as the write answered it.",
                        CONSISTENCY_TOKEN_PATTERN,
                        None,
                    ));
                    "The read model has not caught up with the `Consistency-Token` within 2 \
                     seconds, or a dependency is unavailable; retry after `Retry-After` seconds."
                } else {
                    "A dependency is unavailable; retry after `Retry-After` seconds."
                };
                answers.insert("503".into(), retry_after(answer));
                body
            }
        };
        if body {
            answers.insert(
                "413".into(),
                problem_response("The body is larger than 1 MiB.", None),
            );
        }
        if params.is_empty() {
            op.parameters = None;
        }
    }
}

impl Modify for SharedParts {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for (method, op) in [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("patch", item.patch.as_mut()),
            ] {
                if let Some(op) = op {
                    SharedParts::add(op, Shape::of(method, path));
                }
            }
        }
    }
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    });
    &JSON
}

/// The HTML page of `/docs`.
pub fn docs_html() -> &'static str {
    static HTML: LazyLock<String> = LazyLock::new(|| {
        let doc: Value = serde_json::from_str(openapi_json()).expect("valid JSON");
        page(&doc, GUIDE)
    });
    &HTML
}

/// The documentation routes.
pub fn router() -> Router {
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi_json()) }),
        )
        .route("/docs", get(docs))
        .route("/problems/{slug}", get(problem_type))
        .route(
            "/docs/partner-guide.md",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
                    GUIDE,
                )
            }),
        )
}

async fn docs() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        docs_html(),
    )
}

/// A problem `type` URI (`/problems/duplicate-patient`) leads to its section
/// of the guide.
async fn problem_type(Path(slug): Path<String>) -> Response {
    if (1..=64).contains(&slug.len()) && slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        Redirect::to(&format!("/docs#{slug}")).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One operation of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path template.
    pub path: String,
    /// The summary.
    pub summary: String,
    /// The permissions (OAuth 2.0 scopes) it needs; empty for none.
    pub permissions: Vec<String>,
}

/// Every operation of an OpenAPI document, in document order.
pub fn operations(doc: &Value) -> Vec<Operation> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "patch", "delete", "head", "options", "trace",
    ];
    let mut out = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let permissions = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|req| req["oauth2"].as_array())
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            out.push(Operation {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                summary: op["summary"].as_str().unwrap_or("").to_string(),
                permissions,
            });
        }
    }
    out
}

/// A heading's anchor: lower case letters, digits and dashes.
fn slug(text: &str) -> String {
    let mut s = String::new();
    for c in text.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            s.push(c);
        } else if (c == ' ' || c == '-' || c == '_') && !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_string()
}

/// Renders Markdown to HTML, giving every heading an anchor.
pub fn markdown_to_html(markdown: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_HEADING_ATTRIBUTES | Options::ENABLE_STRIKETHROUGH;
    let mut events: Vec<Event> = Parser::new_ext(markdown, options).collect();
    let mut seen = std::collections::HashSet::new();
    let mut i = 0;
    while i < events.len() {
        if let Event::Start(Tag::Heading { id: None, .. }) = &events[i] {
            let mut text = String::new();
            let mut j = i + 1;
            while j < events.len() && !matches!(events[j], Event::End(TagEnd::Heading(_))) {
                if let Event::Text(t) | Event::Code(t) = &events[j] {
                    text.push_str(t);
                }
                j += 1;
            }
            let base = slug(&text);
            let mut id = base.clone();
            let mut n = 1;
            while !seen.insert(id.clone()) {
                id = format!("{base}-{n}");
                n += 1;
            }
            if let Event::Start(Tag::Heading { id: slot, .. }) = &mut events[i] {
                *slot = Some(id.into());
            }
        } else if let Event::Start(Tag::Heading { id: Some(id), .. }) = &events[i] {
            seen.insert(id.to_string());
        }
        i += 1;
    }
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

const STYLE: &str = "
:root { color-scheme: light dark; --fg: #1d2330; --bg: #fdfdfc; --muted: #5b6475;
  --line: #d9dde3; --code: #f1f3f5; --accent: #1f5fbf; }
@media (prefers-color-scheme: dark) { :root { --fg: #e3e6eb; --bg: #14171c; --muted: #9aa3b2;
  --line: #323842; --code: #1e232b; --accent: #7fb0ff; } }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
  font: 16px/1.6 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; }
header { border-bottom: 1px solid var(--line); padding: .75rem 1.5rem; display: flex;
  flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline; }
header strong { font-size: 1.05rem; }
header nav a { margin-right: 1rem; }
main { max-width: 58rem; margin: 0 auto; padding: 1rem 1.5rem 4rem; }
a { color: var(--accent); }
h1, h2, h3 { line-height: 1.25; margin-top: 2rem; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .9em; }
code { background: var(--code); padding: .1em .3em; border-radius: 3px; }
pre { background: var(--code); padding: .75rem 1rem; border-radius: 6px; overflow-x: auto;
  line-height: 1.45; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; display: block;
  overflow-x: auto; }
th, td { border: 1px solid var(--line); padding: .35rem .6rem; text-align: left;
  vertical-align: top; }
th { background: var(--code); }
.method { font-weight: 600; font-family: ui-monospace, monospace; }
.muted { color: var(--muted); }
";

/// The `/docs` page: the guide, with the table of operations of `doc` after
/// its introduction (before its first second-level heading).
pub fn page(doc: &Value, guide_markdown: &str) -> String {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let openapi = doc["openapi"].as_str().unwrap_or("");
    let mut rows = String::new();
    for op in operations(doc) {
        let permissions = if op.permissions.is_empty() {
            "<span class=\"muted\">none</span>".to_string()
        } else {
            op.permissions
                .iter()
                .map(|p| format!("<code>{}</code>", escape(p)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push_str(&format!(
            "<tr><td class=\"method\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
            escape(&op.method),
            escape(&op.path),
            escape(&op.summary),
            permissions
        ));
    }
    let operations = format!(
        "<section id=\"operations\">
<h2>Operations</h2>
<p>Every operation of the API, from its OpenAPI {openapi} document at <a href=\"/openapi.json\"><code>/openapi.json</code></a>, which describes each request, answer, header and error in full.</p>
<table>
<thead><tr><th>Method</th><th>Path</th><th>Summary</th><th>Permission</th></tr></thead>
<tbody>
{rows}</tbody>
</table>
</section>
",
        openapi = escape(openapi),
    );
    let guide = markdown_to_html(guide_markdown);
    let (intro, rest) = guide.split_at(guide.find("<h2").unwrap_or(guide.len()));
    format!(
        "<!doctype html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>{title} — developer guide</title>
<style>{STYLE}</style>
</head>
<body>
<header><strong>{title} <span class=\"muted\">v{version}</span></strong>
<nav><a href=\"#operations\">Operations</a><a href=\"/openapi.json\">OpenAPI document</a><a href=\"/docs/partner-guide.md\">Guide as Markdown</a><a href=\"/docs/auditors.md\">Auditors</a><a href=\"/docs/analytics.md\">Analytics</a></nav></header>
<main>
{intro}{operations}{rest}</main>
</body>
</html>
",
        title = escape(title),
        version = escape(version),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_1_with_every_operation() {
        let doc: Value = serde_json::from_str(openapi_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations(&doc);
        assert_eq!(ops.len(), 23, "{ops:?}");
        assert!(ops.iter().all(|o| !o.summary.is_empty()));
        for action in ["collect", "receive", "start", "finalize"] {
            let path = format!("/v1/orders/{{orderID}}/{action}");
            let body = &doc["paths"][&path]["post"]["requestBody"];
            assert_eq!(body["required"], false, "{path}");
            assert!(body["content"]["application/json"]["schema"]["$ref"].is_string());
        }
        let cancel = &doc["paths"]["/v1/orders/{orderID}/cancel"]["post"]["requestBody"];
        assert_eq!(cancel["required"], true);
    }

    #[test]
    fn every_partner_operation_says_the_shared_parts_the_same_way() {
        let doc: Value = serde_json::from_str(openapi_json()).unwrap();
        let mut writes = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for (method, op) in item.as_object().unwrap() {
                let at = format!("{method} {path}");
                let params: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().map(|p| p["name"].as_str().unwrap()).collect())
                    .unwrap_or_default();
                let r = &op["responses"];
                assert!(r["401"]["headers"]["WWW-Authenticate"].is_object(), "{at}");
                assert!(r["503"]["headers"]["Retry-After"].is_object(), "{at}");
                for status in ["401", "413", "503"] {
                    if r[status].is_object() {
                        assert_eq!(
                            r[status]["content"]["application/problem+json"]["schema"]["$ref"],
                            "#/components/schemas/Problem",
                            "{at} {status}"
                        );
                    }
                }
                match Shape::of(method, path) {
                    Shape::Write { on_record } => {
                        writes += 1;
                        assert!(params.ends_with(&["Idempotency-Key"]), "{at}: {params:?}");
                        assert_eq!(params.contains(&"If-Match"), on_record, "{at}");
                        assert!(r["412"].is_object() == on_record, "{at}: 412 with If-Match");
                        assert!(r["413"].is_object(), "{at}");
                    }
                    Shape::Read { token, body } => {
                        assert_eq!(params.contains(&"Consistency-Token"), token, "{at}");
                        assert_eq!(r["413"].is_object(), body, "{at}");
                        assert!(!params.contains(&"Idempotency-Key"), "{at}");
                    }
                }
            }
        }
        assert_eq!(
            writes, 11,
            "patient create/change, order place/change, 7 actions"
        );
    }

    /// The document names each order action the router serves, under the
    /// permission the action needs, and no other.
    #[test]
    fn order_actions_are_documented_as_the_router_serves_them() {
        use domain::order::OrderAction;
        let doc: Value = serde_json::from_str(openapi_json()).unwrap();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|p| p.strip_prefix("/v1/orders/{orderID}/"))
            .filter(|rest| !rest.contains('/') && *rest != "history")
            .collect();
        let mut served: Vec<&str> = OrderAction::LIFECYCLE.iter().map(|a| a.as_str()).collect();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
        for &action in OrderAction::LIFECYCLE {
            let op = &doc["paths"][format!("/v1/orders/{{orderID}}/{action}")]["post"];
            let scopes = op["security"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|s| s["oauth2"].as_array())
                .unwrap_or_else(|| panic!("{action}: no oauth2 scopes"));
            assert_eq!(
                scopes,
                &vec![Value::from(action.permission().as_str())],
                "{action}"
            );
        }
    }

    /// A history change's `from` and `to` are whatever the member held:
    /// a string, a number, an object, null.
    #[test]
    fn a_history_change_may_hold_any_json_value() {
        let doc: Value = serde_json::from_str(openapi_json()).unwrap();
        let change = &doc["components"]["schemas"]["Change"]["properties"];
        for side in ["from", "to"] {
            assert!(change[side].is_object(), "{side}: {}", change[side]);
            assert!(
                change[side].get("type").is_none(),
                "{side}: {}",
                change[side]
            );
        }
    }

    /// The token request's `grant_type` is the one value the endpoint
    /// serves, so no other one is schema-valid.
    #[test]
    fn the_grant_type_is_client_credentials_only() {
        let doc: Value = serde_json::from_str(openapi_json()).unwrap();
        assert_eq!(
            doc["components"]["schemas"]["GrantType"]["enum"],
            json!(["client_credentials"])
        );
        assert_eq!(
            doc["components"]["schemas"]["TokenRequest"]["properties"]["grant_type"]["$ref"],
            "#/components/schemas/GrantType"
        );
    }

    /// Lists, searches and creates state the syntax of their identifier
    /// and name fields as the server checks them (schemathesis found empty
    /// and non-ASCII values that the document allowed answered 422).
    #[test]
    fn identifier_fields_state_the_syntax_the_server_checks() {
        use domain::validation::{EXTERNAL_ID_PATTERN, NAME_FILTER_PATTERN, REFERENCE_ID_PATTERN};
        let doc: Value = serde_json::from_str(openapi_json()).unwrap();
        let want = |field: &str| match field {
            "clientID" | "locationID" => Some(REFERENCE_ID_PATTERN),
            "externalPatientID" | "accessionNumber" | "externalOrderID" => {
                Some(EXTERNAL_ID_PATTERN)
            }
            "lastName" => Some(NAME_FILTER_PATTERN),
            _ => None,
        };
        let mut checked = 0;
        for path in ["/v1/patients", "/v1/orders"] {
            for p in doc["paths"][path]["get"]["parameters"].as_array().unwrap() {
                let name = p["name"].as_str().unwrap();
                if let Some(pattern) = want(name) {
                    assert_eq!(p["schema"]["pattern"], pattern, "GET {path} {name}");
                    checked += 1;
                }
            }
        }
        for (schema, fields) in [
            (
                "PatientSearch",
                &["clientID", "locationID", "externalPatientID", "lastName"][..],
            ),
            (
                "OrderSearch",
                &[
                    "clientID",
                    "locationID",
                    "accessionNumber",
                    "externalOrderID",
                ],
            ),
            (
                "NewPatient",
                &["clientID", "locationID", "externalPatientID"],
            ),
            ("NewOrder", &["clientID", "locationID", "externalOrderID"]),
        ] {
            for field in fields {
                let property = &doc["components"]["schemas"][schema]["properties"][field];
                assert_eq!(
                    property["pattern"],
                    want(field).unwrap(),
                    "{schema}.{field}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 8 + 14);
        // Free text: no control character, not only white space.
        let text = domain::validation::TEXT_PATTERN;
        let schemas = &doc["components"]["schemas"];
        let mut texts = 0;
        for (schema, fields) in [
            ("NewPatient", &["firstName", "lastName"][..]),
            ("PatientMergePatch", &["firstName", "lastName"]),
            (
                "Address",
                &["line1", "line2", "city", "state", "postalCode"],
            ),
            (
                "AddressMergePatch",
                &["line1", "line2", "city", "state", "postalCode"],
            ),
            ("NewSpecimen", &["type"]),
            ("SpecimenMergePatch", &["type"]),
            ("CancelRequest", &["reason"]),
            ("CorrectRequest", &["reason"]),
        ] {
            for field in fields {
                let property = &schemas[schema]["properties"][field];
                assert_eq!(property["pattern"], text, "{schema}.{field}: {property}");
                assert!(
                    property["maxLength"].is_u64(),
                    "{schema}.{field}: {property}"
                );
                texts += 1;
            }
        }
        assert_eq!(texts, 18);
        // A search's filters may be null (the same as absent), as the
        // server takes them.
        for schema in ["PatientSearch", "OrderSearch"] {
            for (field, property) in doc["components"]["schemas"][schema]["properties"]
                .as_object()
                .unwrap()
            {
                let text = property.to_string();
                assert!(text.contains("\"null\""), "{schema}.{field}: {text}");
            }
        }
        // The patterns say what the checks do.
        for (value, reference, external) in [
            ("DEMO-MAIN", true, true),
            ("", false, false),
            ("MRN 1", false, false),
            ("MRN/1", false, true),
            ("é", false, false),
        ] {
            assert_eq!(
                domain::validation::is_reference_id(value),
                reference,
                "{value}"
            );
            assert_eq!(
                domain::validation::is_external_id(value),
                external,
                "{value}"
            );
        }
        assert_eq!(REFERENCE_ID_PATTERN, "^[A-Za-z0-9._-]{1,64}$");
        assert_eq!(EXTERNAL_ID_PATTERN, "^[!-~]{1,64}$");
    }

    #[test]
    fn headings_get_anchors() {
        let html = markdown_to_html("# A `b` c\n\n## Errors\n\n## Errors\n\n## Own {#mine}\n");
        assert!(html.contains("<h1 id=\"a-b-c\">"), "{html}");
        assert!(html.contains("<h2 id=\"errors\">"), "{html}");
        assert!(html.contains("<h2 id=\"errors-1\">"), "{html}");
        assert!(html.contains("<h2 id=\"mine\">"), "{html}");
    }

    #[test]
    fn operations_follow_the_introduction() {
        let doc = serde_json::json!({"openapi": "3.1.0", "info": {"title": "T", "version": "1"},
            "paths": {"/a": {"get": {"summary": "Get <a>", "security": [{"oauth2": ["x:read"]}]}}}});
        let html = page(&doc, "# Guide\n\nIntro.\n\n## First\n\nText.\n");
        let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} in {html}"));
        assert!(
            at("Intro.") < at("id=\"operations\"") && at("id=\"operations\"") < at("id=\"first\"")
        );
        assert!(
            html.contains("<td>Get &lt;a&gt;</td><td><code>x:read</code></td>"),
            "{html}"
        );
    }

    #[test]
    fn page_escapes_and_loads_nothing() {
        let html = docs_html();
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.to_ascii_lowercase().contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
