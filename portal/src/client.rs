//! A patient's browser, as the project's tools drive the portal (the
//! benchmark's portal workload, the fault suite): its own client on a
//! loopback address of its own (the portal limits logins per source
//! address, as it would see patients on the internet), its form token and
//! its session; and the activation links the mailer wrote to a local
//! outbox.
//!
//! It lives beside the pages because it knows their forms: the field and
//! cookie names it sends are the ones [`crate::router`] reads.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use reqwest::header::{COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};

use crate::session::{CSRF_COOKIE, SESSION_COOKIE};

/// The status [`Patient`]'s calls report when no answer came.
pub const NO_ANSWER: u16 = 0;

/// A page's answer: its status ([`NO_ANSWER`] when none came) and whether
/// it said when to try again (`Retry-After`, which the portal's 503 page
/// carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: bool,
}

impl Answer {
    const NONE: Answer = Answer {
        status: NO_ANSWER,
        retry_after: false,
    };

    fn of(r: &reqwest::Response) -> Answer {
        Answer {
            status: r.status().as_u16(),
            retry_after: r.headers().contains_key(RETRY_AFTER),
        }
    }

    /// A 503 that says when to try again: a clear "not now".
    pub fn clear_unavailable(&self) -> bool {
        self.status == 503 && self.retry_after
    }
}

/// A patient's browser: its client, its form token, its session.
pub struct Patient {
    http: reqwest::Client,
    /// Login email.
    pub email: String,
    /// The password it chooses on activation and logs in with.
    pub password: String,
    csrf: String,
    session: Option<String>,
}

fn cookie_value(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let (pair, _) = v.to_str().ok()?.split_once(';')?;
        let (n, value) = pair.split_once('=')?;
        (n == name && !value.is_empty()).then(|| value.to_string())
    })
}

fn field(html: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_string())
}

impl Patient {
    /// Patient `i`, on loopback address `127.0.0.(2 + i % 250)`.
    pub fn new(i: usize, email: String, password: &str) -> anyhow::Result<Patient> {
        let octet = 2 + (i % 250) as u8;
        let http = reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Patient {
            http,
            email,
            password: password.to_string(),
            csrf: String::new(),
            session: None,
        })
    }

    fn cookies(&self) -> String {
        let mut c = format!("{CSRF_COOKIE}={}", self.csrf);
        if let Some(s) = &self.session {
            c.push_str(&format!("; {SESSION_COOKIE}={s}"));
        }
        c
    }

    /// Opens a form page (the activation link, the login page) and keeps
    /// its form token: the answer and the page.
    async fn form(&mut self, url: &str) -> (Answer, String) {
        let Ok(r) = self.http.get(url).send().await else {
            return (Answer::NONE, String::new());
        };
        if let Some(t) = cookie_value(&r, CSRF_COOKIE) {
            self.csrf = t;
        }
        let answer = Answer::of(&r);
        match r.text().await {
            Ok(html) => (answer, html),
            Err(_) => (Answer::NONE, String::new()),
        }
    }

    /// Follows a mailed activation link and chooses the password: 303 when
    /// the account was activated (the patient is then signed in), else the
    /// link page's answer (410 for a used or expired link) or the form's.
    pub async fn activate(&mut self, link: &str) -> Answer {
        let (answer, html) = self.form(link).await;
        let (Some(token), Some(at)) = (field(&html, "token"), link.find("/portal/")) else {
            return answer;
        };
        let url = format!("{}/portal/activate", &link[..at]);
        let fields = [
            ("token", token.as_str()),
            ("password", &self.password),
            ("confirm", &self.password),
        ];
        match self.post_form(&url, &fields).await {
            Ok(r) => {
                if let Some(s) = cookie_value(&r, SESSION_COOKIE) {
                    self.session = Some(s);
                }
                Answer::of(&r)
            }
            Err(_) => Answer::NONE,
        }
    }

    /// Opens the login page for its form token: the page's status.
    pub async fn prepare(&mut self, base: &str) -> u16 {
        self.form(&format!("{base}/portal/login")).await.0.status
    }

    /// Logs in: the status (303 when it worked) and the new session.
    pub async fn login(&self, base: &str) -> (u16, Option<String>) {
        let url = format!("{base}/portal/login");
        let fields = [("email", self.email.as_str()), ("password", &self.password)];
        match self.post_form(&url, &fields).await {
            Ok(r) => {
                let ok = r.headers().get(LOCATION).is_some();
                (
                    r.status().as_u16(),
                    ok.then(|| cookie_value(&r, SESSION_COOKIE)).flatten(),
                )
            }
            Err(_) => (NO_ANSWER, None),
        }
    }

    /// Posts a form to `url` with the page's form token and this browser's
    /// cookies.
    async fn post_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let mut form = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        self.http
            .post(url)
            .header(COOKIE, self.cookies())
            .form(&form)
            .send()
            .await
    }

    /// The session it holds.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Keeps a session for the page views.
    pub fn signed_in(&mut self, session: Option<String>) {
        self.session = session;
    }

    /// Views a page under `base` (`/portal/results`, an order's detail):
    /// its answer, after reading the page as a browser would.
    pub async fn view(&self, base: &str, path: &str) -> Answer {
        match self
            .http
            .get(format!("{base}{path}"))
            .header(COOKIE, self.cookies())
            .send()
            .await
        {
            Ok(r) => {
                let answer = Answer::of(&r);
                match r.bytes().await {
                    Ok(_) => answer,
                    Err(_) => Answer::NONE,
                }
            }
            Err(_) => Answer::NONE,
        }
    }
}

/// The newest activation link in `outbox` for each address it holds one
/// for. A mailer that crashed between sending and marking a link sent
/// sends again with a new token, and only the newest link works.
pub fn activation_links(outbox: &Path) -> anyhow::Result<HashMap<String, String>> {
    let mut newest: HashMap<String, (SystemTime, String)> = HashMap::new();
    let entries = std::fs::read_dir(outbox)
        .with_context(|| format!("the mail outbox {}", outbox.display()))?;
    for entry in entries {
        let entry = entry?;
        let written = entry.metadata()?.modified()?;
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // Undo quoted-printable soft breaks and `=3D`.
        let text = text.replace("=\r\n", "").replace("=3D", "=");
        let Some(at) = text.find("/portal/activate?token=") else {
            continue;
        };
        let Some(to) = text
            .lines()
            .find_map(|l| l.strip_prefix("To: "))
            .map(|t| t.trim().to_string())
        else {
            continue;
        };
        let start = text[..at].rfind("http").unwrap_or(at);
        let link: String = text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        if newest.get(&to).is_none_or(|(t, _)| *t <= written) {
            newest.insert(to, (written, link));
        }
    }
    Ok(newest.into_iter().map(|(to, (_, l))| (to, l)).collect())
}

/// The activation links for `emails`, in their order, waiting for them at
/// most `limit`.
pub async fn links(
    outbox: &Path,
    emails: &[String],
    limit: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let mut found = activation_links(outbox)?;
        let have = emails.iter().filter(|e| found.contains_key(*e)).count();
        if have == emails.len() {
            return Ok(emails.iter().filter_map(|e| found.remove(e)).collect());
        }
        if Instant::now() > deadline {
            bail!(
                "{have} of {} invitations in {} (is LIS_SMTP_URL set? the portal workload reads the local stack's outbox)",
                emails.len(),
                outbox.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
