//! The partner API as the load generator drives it: a token from
//! `POST /oauth/token` (renewed before it expires), then plain HTTP/1.1
//! requests on kept-alive connections.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use tokio::sync::RwLock;

use super::load::NO_ANSWER;

/// Renew the token when it is older than this.
const TOKEN_AGE: Duration = Duration::from_secs(40 * 60);
/// After a failed renewal, the next try waits this long (the old token
/// still works meanwhile).
const RETRY_RENEWAL: Duration = Duration::from_secs(5);

/// A partner's session with the API.
pub struct Api {
    http: reqwest::Client,
    /// Base URL, `http://127.0.0.1:8080`.
    pub base: String,
    /// Where `POST /oauth/token` renews the token (the stack's API, also
    /// for a session [`Api::at`] another server).
    auth_base: String,
    client_id: String,
    secret: String,
    token: RwLock<(HeaderValue, Instant)>,
}

/// One answer: status (0 when none came) and body.
pub struct Answer {
    /// HTTP status, or [`NO_ANSWER`].
    pub status: u16,
    /// The body.
    pub body: axum::body::Bytes,
    /// The `Consistency-Token` of a write.
    pub token: Option<String>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

async fn fetch_token(
    http: &reqwest::Client,
    base: &str,
    client_id: &str,
    secret: &str,
) -> anyhow::Result<HeaderValue> {
    let r = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .context("token request")?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST /oauth/token answered {status}: {body}");
    }
    let token = body["access_token"]
        .as_str()
        .context("no access_token in the token answer")?;
    Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
}

impl Api {
    /// Logs in as the partner `client_id`.
    pub async fn login(base: &str, client_id: &str, secret: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        let token = fetch_token(&http, base, client_id, secret).await?;
        Ok(Api {
            http,
            base: base.to_string(),
            auth_base: base.to_string(),
            client_id: client_id.to_string(),
            secret: secret.to_string(),
            token: RwLock::new((token, Instant::now())),
        })
    }

    /// The same session against another server of the same installation
    /// (its token is valid there, and renewed where this session's is).
    pub async fn at(&self, base: &str) -> Api {
        let token = self.token.read().await.clone();
        Api {
            http: self.http.clone(),
            base: base.to_string(),
            auth_base: self.auth_base.clone(),
            client_id: self.client_id.clone(),
            secret: self.secret.clone(),
            token: RwLock::new(token),
        }
    }

    async fn auth(&self) -> HeaderValue {
        {
            let t = self.token.read().await;
            if t.1.elapsed() < TOKEN_AGE {
                return t.0.clone();
            }
        }
        let mut t = self.token.write().await;
        if t.1.elapsed() >= TOKEN_AGE {
            match fetch_token(&self.http, &self.auth_base, &self.client_id, &self.secret).await {
                Ok(v) => *t = (v, Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the bench token");
                    // Aged so that the next renewal is due in RETRY_RENEWAL.
                    if let Some(aged) = Instant::now().checked_sub(TOKEN_AGE - RETRY_RENEWAL) {
                        t.1 = aged;
                    }
                }
            }
        }
        t.0.clone()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.auth().await);
        match req.headers(headers).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let token = r
                    .headers()
                    .get("consistency-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match r.bytes().await {
                    Ok(body) => Answer {
                        status,
                        body,
                        token,
                    },
                    Err(_) => Answer {
                        status: NO_ANSWER,
                        body: Default::default(),
                        token: None,
                    },
                }
            }
            Err(_) => Answer {
                status: NO_ANSWER,
                body: Default::default(),
                token: None,
            },
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `GET path` with a `Consistency-Token`.
    pub async fn get_after(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("consistency-token", t);
        }
        self.send(req).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).expect("json"));
        self.send(req).await
    }

    /// `PATCH path` with a merge patch.
    pub async fn patch(&self, path: &str, body: &Value) -> Answer {
        let req = self
            .http
            .patch(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(serde_json::to_vec(body).expect("json"));
        self.send(req).await
    }
}

/// Fetches `/metrics` and returns the value of each named gauge or counter.
pub async fn metrics(base: &str, names: &[&str]) -> Vec<Option<f64>> {
    let text = match reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    names
        .iter()
        .map(|n| {
            text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == *n).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .collect()
}
