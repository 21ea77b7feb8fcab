//! What the portal tests share: a cookie-keeping HTTP client that follows
//! no redirects (to see each answer), and a world of patients with final,
//! corrected and unreleased results.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::smtp::{Mail, SmtpSink};
use crate::{patient_body, test_config, TestStack};

/// One answer of the portal.
#[derive(Debug)]
pub struct Page {
    /// Status code.
    pub status: u16,
    /// `Location`, when it redirects.
    pub location: Option<String>,
    /// Every `Set-Cookie`.
    pub set_cookies: Vec<String>,
    /// Every header, lower-case names.
    pub headers: reqwest::header::HeaderMap,
    /// The HTML, with the character references the templates write for
    /// `/`, `'`, `"`, `<`, `>` and `&` read back as those characters.
    pub body: String,
}

impl Page {
    /// The value of the form field `name` (a hidden CSRF token, say).
    pub fn field(&self, name: &str) -> String {
        let at = self
            .body
            .find(&format!("name=\"{name}\" value=\""))
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body));
        let rest = &self.body[at + name.len() + 15..];
        rest[..rest.find('"').expect("a closing quote")].to_string()
    }
}

/// A browser without a browser: keeps cookies, follows nothing.
pub struct Visitor {
    http: reqwest::Client,
    base: String,
    /// The cookies it holds.
    pub cookies: BTreeMap<String, String>,
}

impl Visitor {
    /// A visitor of the portal at `base`.
    pub fn new(base: &str) -> Visitor {
        Visitor {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: base.to_string(),
            cookies: BTreeMap::new(),
        }
    }

    async fn page(&mut self, r: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let r = if cookie.is_empty() {
            r
        } else {
            r.header("cookie", cookie)
        };
        let r = r.send().await.expect("the portal answers");
        let set_cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookies {
            let (pair, attributes) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            if attributes.contains("Max-Age=0") || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.into(), value.into());
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string()),
            set_cookies,
            headers: r.headers().clone(),
            body: r
                .text()
                .await
                .expect("a body")
                .replace("&#x2f;", "/")
                .replace("&#x27;", "'")
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        }
    }

    /// `GET path` (a path under the base, or a whole URL on it).
    pub async fn get(&mut self, path: &str) -> Page {
        let url = self.url(path);
        let r = self.http.get(url);
        self.page(r).await
    }

    /// `POST path` with a form.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let url = self.url(path);
        let r = self.http.post(url).form(form);
        self.page(r).await
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Opens an activation link (it must work) and chooses `password`:
    /// the activation's answer.
    pub async fn activate(&mut self, link: &str, password: &str) -> Page {
        let form = self.get(link).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let (csrf, token) = (form.field("csrf"), form.field("token"));
        self.post(
            "/portal/activate",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("password", password),
                ("confirm", password),
            ],
        )
        .await
    }

    /// Logs in with the login form (its CSRF token included).
    pub async fn login(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/portal/login").await;
        let csrf = form.field("csrf");
        self.post(
            "/portal/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }
}

/// The path and query of the activation link in `mail`.
pub fn activation_link(mail: &Mail) -> String {
    link_in(mail, "/portal/activate?token=")
}

/// The path and query of the link in `mail` that starts with `prefix`.
pub fn link_in(mail: &Mail, prefix: &str) -> String {
    // The body may be quoted-printable: undo soft breaks and `=3D`.
    let data = mail.data.replace("=\r\n", "").replace("=3D", "=");
    let start = data
        .find(prefix)
        .unwrap_or_else(|| panic!("a link {prefix}… in {data}"));
    data[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

/// The newest mail to `to`.
pub fn last_mail_to<'a>(mails: &'a [Mail], to: &str) -> &'a Mail {
    mails
        .iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t == to))
        .unwrap_or_else(|| panic!("a mail to {to}"))
}

/// The stack and records the portal tests use.
pub struct World {
    /// The stack (every role).
    pub stack: TestStack,
    /// Where its mail goes.
    pub sink: SmtpSink,
    /// Ada: an account, two released orders (one corrected), one not
    /// released.
    pub ada: Value,
    /// Bob: an account and a released order of his own.
    pub bob: Value,
    /// Cy: no email, so no account.
    pub cy: Value,
    /// Ada's orders: final, corrected, resulted (not released).
    pub ada_orders: [String; 3],
    /// Bob's released order.
    pub bob_order: String,
    /// A token of the partner that created them.
    pub token: String,
}

async fn send(s: &TestStack, token: &str, path: &str, body: Value) -> Value {
    let r = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the API answers");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("JSON")
}

impl World {
    /// Starts a stack mailing to a sink, with Ada, Bob and Cy and their
    /// orders, and waits for Ada's and Bob's invitations.
    pub async fn start() -> World {
        let sink = SmtpSink::start().await;
        let mut cfg = test_config();
        cfg.smtp_url = Some(sink.url.clone());
        cfg.portal_rate_per_minute = 10_000;
        let stack = TestStack::start_with(cfg, lis::stack::Roles::ALL).await;
        let (_, token) = stack.standard().await;
        command_handler::admin::seed_catalog(&stack.write, &TestStack::operator())
            .await
            .expect("catalog");
        let lab = stack
            .partner("tests:read,tests:update,results:write", "*", "*")
            .await;
        let lab = stack.token(&lab).await;
        let mut people = vec![];
        for (mrn, first, email) in [
            ("MRN-P-ADA", "Ada", Some("ada@example.org")),
            ("MRN-P-BOB", "Bob", Some("bob@example.org")),
            ("MRN-P-CY", "Cy", None),
        ] {
            let mut body = patient_body(mrn);
            body["firstName"] = json!(first);
            if let Some(e) = email {
                body["email"] = json!(e);
            }
            people.push(send(&stack, &token, "/v1/patients", body).await);
        }
        let order =
            |patient: &Value, upto: &'static str| {
                let (stack, token, lab) = (&stack, token.clone(), lab.clone());
                let patient = patient["patientID"].as_str().unwrap().to_string();
                async move {
                    let o = send(stack, &token, "/v1/orders", json!({
                    "patientID": patient, "clientID": "C1", "locationID": "L1",
                    "tests": [{"code": "CBC"}],
                    "specimen": {"type": "whole blood", "collectedAt": "2026-11-20T08:30:00Z"}
                }))
                .await;
                    let id = o["orderID"].as_str().unwrap().to_string();
                    for action in ["collect", "receive", "start"] {
                        send(stack, &lab, &format!("/v1/orders/{id}/{action}"), json!({})).await;
                    }
                    send(
                        stack,
                        &lab,
                        &format!("/v1/orders/{id}/results"),
                        json!({"results": [
                            {"code": "HGB", "value": "11.2", "unit": "g/dL"},
                            {"code": "WBC", "value": 7.2, "unit": "10^9/L"}
                        ]}),
                    )
                    .await;
                    if upto != "resulted" {
                        send(stack, &lab, &format!("/v1/orders/{id}/finalize"), json!({})).await;
                    }
                    if upto == "corrected" {
                        send(
                            stack,
                            &lab,
                            &format!("/v1/orders/{id}/correct"),
                            json!({
                                "reason": "sample mix-up",
                                "results": [{"code": "HGB", "value": "13.1", "unit": "g/dL"}]
                            }),
                        )
                        .await;
                    }
                    id
                }
            };
        let ada_orders = [
            order(&people[0], "final").await,
            order(&people[0], "corrected").await,
            order(&people[0], "resulted").await,
        ];
        let bob_order = order(&people[1], "final").await;
        let mails = sink.wait_for(2).await;
        assert_eq!(mails.len(), 2, "Ada's and Bob's invitations");
        let cy = people.pop().unwrap();
        let bob = people.pop().unwrap();
        let ada = people.pop().unwrap();
        World {
            stack,
            sink,
            ada,
            bob,
            cy,
            ada_orders,
            bob_order,
            token,
        }
    }

    /// The activation link last mailed to `email`.
    pub fn link_of(&self, email: &str) -> String {
        activation_link(last_mail_to(&self.sink.mails(), email))
    }

    /// Waits until the read models show `order` as released (the portal
    /// reads them).
    pub async fn wait_released(&self, order: &str) {
        let id: uuid::Uuid = order.parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let db = self.stack.read.get().await.unwrap();
            let status: Option<String> = db
                .query_opt("SELECT status FROM orders WHERE order_id = $1", &[&id])
                .await
                .unwrap()
                .map(|r| r.get(0));
            if matches!(status.as_deref(), Some("final" | "corrected")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "order {order} released"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Page {
    /// Whether the answer sets the cookie `name` to a value.
    pub fn cookies_named(&self, name: &str) -> bool {
        self.set_cookies
            .iter()
            .any(|c| c.starts_with(&format!("{name}=")) && !c.starts_with(&format!("{name}=;")))
    }
}
