//! Checks shared by the table-driven tests: bad-input rows answered with
//! `application/problem+json`, and access-matrix requests, answers and the
//! authentication cases every endpoint is tried with.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use command_handler::admin;
use platform::token::TokenSigner;
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{TestPartner, TestStack};

/// The documented body limit (1 MiB).
pub const ONE_MIB: usize = 1 << 20;
/// The JSON content type.
pub const JSON_CT: &str = "application/json";
/// The JSON merge-patch content type.
pub const MERGE_CT: &str = "application/merge-patch+json";

// ---- Bad-input tables ----

/// One bad request and the answer the contract requires.
pub struct Row {
    /// The row's name in failure messages.
    pub name: &'static str,
    /// Request method.
    pub method: Method,
    /// Request path (and query).
    pub path: String,
    /// Request headers.
    pub headers: Vec<(&'static str, String)>,
    /// Request body (not sent on `GET`).
    pub body: Vec<u8>,
    /// The required HTTP status.
    pub status: u16,
    /// The exact set of `errors[].field`; `None` when not a field-level error.
    pub fields: Option<&'static [&'static str]>,
}

/// A [`Row`].
pub fn row(
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
pub fn ct(value: &str) -> Vec<(&'static str, String)> {
    vec![("content-type", value.to_string())]
}

/// A content-type header and one more header.
pub fn ct_and(value: &str, name: &'static str, extra: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", value.to_string()),
        (name, extra.to_string()),
    ]
}

/// The bytes of a JSON value.
pub fn j(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("json")
}

/// `base` with the members of `changes` set.
pub fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().expect("object") {
        base[k] = v.clone();
    }
    base
}

/// `base` without `keys`.
pub fn without(mut base: Value, keys: &[&str]) -> Value {
    for k in keys {
        base.as_object_mut().expect("object").remove(*k);
    }
    base
}

/// A JSON object body larger than 1 MiB, its one field `field`.
pub fn oversize(field: &str) -> Vec<u8> {
    let mut b = format!(r#"{{"{field}":""#).into_bytes();
    b.extend(std::iter::repeat_n(b'a', ONE_MIB + 1));
    b.extend(br#""}"#);
    b
}

/// Checks one answer against its row: status, `application/problem+json`
/// with `type`, `title`, `detail` and a matching `status`, no leaked
/// internals, and (for field-level rows) exactly the expected
/// `errors[].field`, each error with a string `field`, `code` and `message`.
/// Returns what is wrong.
pub fn check(row: &Row, status: u16, content_type: Option<&str>, text: &str) -> Vec<String> {
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

/// Sends every row with `token` and [`check`]s each answer. Returns the
/// failures and, by row name, every answer body that parses as JSON.
pub async fn run_rows<'r>(
    s: &TestStack,
    token: &str,
    rows: &'r [Row],
) -> (Vec<String>, BTreeMap<&'r str, Value>) {
    let mut failures = Vec::new();
    let mut bodies: BTreeMap<&str, Value> = BTreeMap::new();
    for row in rows {
        let mut req = s
            .http
            .request(row.method.clone(), format!("{}{}", s.base, row.path))
            .bearer_auth(token);
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
    (failures, bodies)
}

/// Requires the rows named `a` and `b` to have been answered the same body.
pub fn same_answer(bodies: &BTreeMap<&str, Value>, a: &str, b: &str, failures: &mut Vec<String>) {
    if bodies.get(a) != bodies.get(b) {
        failures.push(format!(
            "[{a}] and [{b}] answer differently: {:?} / {:?}",
            bodies.get(a),
            bodies.get(b)
        ));
    }
}

// ---- Access matrices ----

/// One HTTP answer, read whole.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Reads a response whole.
    pub async fn read(r: reqwest::Response) -> Answer {
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.expect("body").to_vec(),
        }
    }

    /// A header's value (`<not visible ASCII>` when it is not).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not visible ASCII>").to_string())
    }

    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The media type of `Content-Type`, without parameters.
    pub fn media_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// Header names, without the ones that differ between any two answers.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| k != "date")
            .collect();
        names.sort();
        names
    }
}

/// A partner API request.
#[derive(Clone, Debug)]
pub struct Req {
    /// Method.
    pub method: Method,
    /// Path (and query).
    pub path: String,
    /// Content type and body.
    pub body: Option<(&'static str, String)>,
    /// Extra headers (`If-Match`, `Idempotency-Key`, `Consistency-Token`).
    pub headers: Vec<(&'static str, String)>,
}

impl Req {
    /// A request without extra headers.
    pub fn new(method: Method, path: String, body: Option<(&'static str, String)>) -> Req {
        Req {
            method,
            path,
            body,
            headers: Vec::new(),
        }
    }

    /// A `GET` of `path`.
    pub fn get(path: String) -> Req {
        Req::new(Method::GET, path, None)
    }

    /// A request with a body of content type `ct`.
    pub fn with_body(method: Method, path: String, ct: &'static str, body: &Value) -> Req {
        Req::new(method, path, Some((ct, body.to_string())))
    }

    /// The same request with another content type.
    pub fn content_type(mut self, ct: &'static str) -> Req {
        if let Some((_, body)) = self.body.take() {
            self.body = Some((ct, body));
        }
        self
    }

    /// The same request with a raw body of its content type.
    pub fn raw_body(mut self, body: &str) -> Req {
        let ct = self.body.as_ref().map_or(JSON_CT, |(ct, _)| *ct);
        self.body = Some((ct, body.to_string()));
        self
    }

    /// The same request with one more header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }
}

/// Sends `req` with `authorization` as the raw `Authorization` header.
pub async fn send(s: &TestStack, req: &Req, authorization: Option<&str>) -> Answer {
    let mut b = s
        .http
        .request(req.method.clone(), format!("{}{}", s.base, req.path));
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    for (name, value) in &req.headers {
        b = b.header(*name, value);
    }
    if let Some((ct, body)) = &req.body {
        b = b.header("content-type", *ct).body(body.clone());
    }
    Answer::read(b.send().await.expect("request")).await
}

/// The `Authorization` value of a bearer token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The `Authorization` value of HTTP Basic credentials.
pub fn basic(client: &reqwest::Client, user: &str, password: &str) -> String {
    client
        .get("http://127.0.0.1/")
        .basic_auth(user, Some(password))
        .build()
        .expect("request")
        .headers()["authorization"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Checks a problem+json error body; returns what is wrong.
pub fn problem_failures(name: &str, a: &Answer) -> Vec<String> {
    let mut out = Vec::new();
    if a.media_type() != "application/problem+json" {
        out.push(format!(
            "{name}: content-type is {:?}, expected application/problem+json (body {})",
            a.header("content-type"),
            a.text()
        ));
    }
    let p = a.json();
    for k in ["type", "title", "detail"] {
        if !p[k].is_string() {
            out.push(format!(
                "{name}: problem member `{k}` missing in {}",
                a.text()
            ));
        }
    }
    if p["status"] != json!(a.status) {
        out.push(format!(
            "{name}: problem `status` is {}, HTTP status {} (body {})",
            p["status"],
            a.status,
            a.text()
        ));
    }
    out
}

/// How [`resigned`] signs.
enum Signature<'a> {
    /// Ed25519 with this seed's key.
    Ed25519(&'a [u8; 32]),
    /// HMAC-SHA256 with this secret.
    Hs256(&'a [u8]),
}

/// `token`'s claims under a header naming key `kid`, signed as `how` says.
fn resigned(token: &str, kid: &str, how: Signature) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let alg = match how {
        Signature::Ed25519(_) => "EdDSA",
        Signature::Hs256(_) => "HS256",
    };
    let header = json!({"typ": "JWT", "alg": alg, "kid": kid});
    let input = format!("{}.{payload}", B64.encode(header.to_string()));
    let signature = match how {
        Signature::Ed25519(seed) => ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .expect("a key")
            .sign(input.as_bytes())
            .as_ref()
            .to_vec(),
        Signature::Hs256(secret) => ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            input.as_bytes(),
        )
        .as_ref()
        .to_vec(),
    };
    format!("{input}.{}", B64.encode(signature))
}

/// The `Authorization` values a matrix tries on every endpoint.
pub struct AuthCases {
    /// Each must be answered 401: none, malformed, forged, expired, of a
    /// disabled partner, issued before a secret rotation.
    pub unauthenticated: Vec<(&'static str, Option<String>)>,
    /// Each must be let through: the scoped partner's token, a hand-made
    /// token with the installation key, a token obtained after a rotation.
    pub authorized: Vec<(&'static str, String)>,
}

/// Builds the [`AuthCases`] for `scoped` (whose token is `scoped_token`):
/// partners with `permissions` in the given scope are disabled, or have their
/// secret rotated, after getting a token that is checked to work on `probe`
/// first. Waits for the zero-lifetime token to expire.
pub async fn auth_cases(
    s: &TestStack,
    scoped: &TestPartner,
    scoped_token: &str,
    permissions: &str,
    (clients, locations): (&str, &str),
    probe: &Req,
) -> AuthCases {
    // Tokens for the same partner made by hand: with a key that is not
    // published (under its own key id, and under the installation's), with
    // HMAC keyed by the published public key (an algorithm confusion),
    // expired, and (as a control) with the installation's key.
    let perms = domain::access::parse_permissions(permissions).expect("permissions");
    let mut other_seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut other_seed);
    let other = TokenSigner::from_seed(&other_seed).expect("a key");
    let hour = Duration::from_secs(3600);
    let forged = other.issue(scoped.id, 1, &perms, hour);
    let kid = s.signer.public().kid();
    let spoofed = resigned(&forged, kid, Signature::Ed25519(&other_seed));
    let x = s.signer.public().jwk().x;
    let confused = resigned(
        &s.signer.issue(scoped.id, 1, &perms, hour),
        kid,
        Signature::Hs256(x.as_bytes()),
    );
    let control = s.signer.issue(scoped.id, 1, &perms, hour);
    let expired = s.signer.issue(scoped.id, 1, &perms, Duration::ZERO);

    // A partner disabled after getting its token.
    let gone = s.partner(permissions, clients, locations).await;
    let gone_token = s.token(&gone).await;
    assert_eq!(
        send(s, probe, Some(&bearer(&gone_token))).await.status,
        200,
        "the token works before the partner is disabled"
    );
    admin::disable_partner(&s.write, &TestStack::operator(), gone.id)
        .await
        .expect("disable");

    // A partner whose secret is rotated after getting its token.
    let rotated = s.partner(permissions, clients, locations).await;
    let old_token = s.token(&rotated).await;
    assert_eq!(
        send(s, probe, Some(&bearer(&old_token))).await.status,
        200,
        "the token works before the rotation"
    );
    let fresh = admin::rotate_secret(&s.write, &TestStack::operator(), rotated.id)
        .await
        .expect("rotate");
    let new_token = s
        .token(&TestPartner {
            id: rotated.id,
            client_id: fresh.client_id,
            secret: fresh.client_secret,
        })
        .await;

    // Let the zero-lifetime token expire (whole-second timestamps).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    AuthCases {
        unauthenticated: vec![
            ("no token", None),
            ("malformed: Bearer without a token", Some("Bearer".into())),
            (
                "malformed: Bearer with a non-JWT",
                Some("Bearer not-a-jwt".into()),
            ),
            (
                "malformed: token without the Bearer scheme",
                Some(scoped_token.to_string()),
            ),
            (
                "malformed: Basic client credentials instead of a token",
                Some(basic(&s.http, &scoped.client_id, &scoped.secret)),
            ),
            (
                "token signed with an unpublished key",
                Some(bearer(&forged)),
            ),
            (
                "token signed with an unpublished key under the published key's id",
                Some(bearer(&spoofed)),
            ),
            (
                "HS256 token keyed by the published public key",
                Some(bearer(&confused)),
            ),
            ("expired token", Some(bearer(&expired))),
            ("token of a disabled partner", Some(bearer(&gone_token))),
            (
                "token issued before a secret rotation",
                Some(bearer(&old_token)),
            ),
        ],
        authorized: vec![
            ("in scope", bearer(scoped_token)),
            (
                "in scope, control: a hand-made token with the installation key",
                bearer(&control),
            ),
            (
                "in scope, control: a token obtained after the rotation",
                bearer(&new_token),
            ),
        ],
    }
}

/// The checks every matrix case makes on its answer `a`: the `expected`
/// status; for a refusal, a problem+json body and no event appended
/// (`appended` is the count of events the request appended); for a 401, a
/// `WWW-Authenticate: Bearer` challenge. Pushes what is wrong to `failures`;
/// returns `false` when the status differs (nothing more is worth checking).
pub fn check_case(
    name: &str,
    a: &Answer,
    expected: u16,
    appended: i64,
    failures: &mut Vec<String>,
) -> bool {
    if a.status != expected {
        failures.push(format!(
            "{name}: status {} (expected {expected}), body {}",
            a.status,
            a.text()
        ));
        return false;
    }
    if a.status >= 400 {
        failures.extend(problem_failures(name, a));
        if appended != 0 {
            failures.push(format!(
                "{name}: a refused request appended {appended} event(s)"
            ));
        }
    }
    if a.status == 401 {
        let www = a.header("www-authenticate").unwrap_or_default();
        if !www.starts_with("Bearer") {
            failures.push(format!(
                "{name}: WWW-Authenticate is {www:?}, expected Bearer …"
            ));
        }
    }
    true
}

/// Requires `a` and the answer `t` about a record that does not exist to be
/// byte-identical (status, content type, body) with the same header names.
pub fn check_twin(name: &str, a: &Answer, t: &Answer, failures: &mut Vec<String>) {
    if (t.status, t.media_type(), &t.body) != (a.status, a.media_type(), &a.body) {
        failures.push(format!(
            "{name}: existence leak: {} {:?} {} vs a missing record's {} {:?} {}",
            a.status,
            a.header("content-type"),
            a.text(),
            t.status,
            t.header("content-type"),
            t.text()
        ));
    } else if t.header_names() != a.header_names() {
        failures.push(format!(
            "{name}: existence leak in headers: {:?} vs a missing record's {:?}",
            a.header_names(),
            t.header_names()
        ));
    }
}
