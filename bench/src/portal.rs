//! The portal workload's patients: accounts opened through the partner
//! API, activated through the links the mailer wrote to the local stack's
//! outbox, each patient on a loopback address of its own (the portal
//! limits logins per source address, as it would see patients on the
//! internet), with a released order to look at.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

/// A patient's browser: its own client on its own source address, its
/// cookies (the form token's, then the session's).
pub struct Patient {
    http: reqwest::Client,
    /// Login email.
    pub email: String,
    /// The released order's id.
    pub order: String,
    csrf: String,
    session: Option<String>,
}

/// The password every bench patient chooses.
pub const PASSWORD: &str = "bench password 1234";

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
    /// A patient on loopback address `127.0.0.(2 + i % 250)`.
    pub fn new(i: usize, email: String, order: String) -> anyhow::Result<Patient> {
        let octet = 2 + (i % 250) as u8;
        let http = reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Patient {
            http,
            email,
            order,
            csrf: String::new(),
            session: None,
        })
    }

    fn cookies(&self) -> String {
        let mut c = format!("lis_portal_csrf={}", self.csrf);
        if let Some(s) = &self.session {
            c.push_str(&format!("; lis_portal={s}"));
        }
        c
    }

    /// Opens a form page (the activation link, the login page) and keeps
    /// its CSRF token; answers the page's hidden fields' source.
    async fn form(&mut self, url: &str) -> anyhow::Result<String> {
        let r = self.http.get(url).send().await?;
        if let Some(t) = cookie_value(&r, "lis_portal_csrf") {
            self.csrf = t;
        }
        let status = r.status();
        let html = r.text().await?;
        if !status.is_success() {
            bail!("GET {url} answered {status}");
        }
        Ok(html)
    }

    /// Activates the account through its mailed link.
    pub async fn activate(&mut self, link: &str) -> anyhow::Result<()> {
        let html = self.form(link).await?;
        let token = field(&html, "token").context("no token field")?;
        let base = &link[..link.find("/portal/").context("a portal link")?];
        let r = self
            .http
            .post(format!("{base}/portal/activate"))
            .header(COOKIE, self.cookies())
            .form(&[
                ("csrf", self.csrf.as_str()),
                ("token", &token),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ])
            .send()
            .await?;
        if r.status().as_u16() != 303 {
            bail!("activation answered {}", r.status());
        }
        self.session = cookie_value(&r, "lis_portal");
        Ok(())
    }

    /// Gets a form token for logins.
    pub async fn prepare(&mut self, base: &str) -> anyhow::Result<()> {
        self.form(&format!("{base}/portal/login")).await.map(|_| ())
    }

    /// Logs in: the status (303 when it worked); keeps the session.
    pub async fn login(&self, base: &str) -> (u16, Option<String>) {
        let r = self
            .http
            .post(format!("{base}/portal/login"))
            .header(COOKIE, self.cookies())
            .form(&[
                ("csrf", self.csrf.as_str()),
                ("email", &self.email),
                ("password", PASSWORD),
            ])
            .send()
            .await;
        match r {
            Ok(r) => {
                let ok = r.headers().get(LOCATION).is_some();
                (
                    r.status().as_u16(),
                    ok.then(|| cookie_value(&r, "lis_portal")).flatten(),
                )
            }
            Err(_) => (crate::load::NO_ANSWER, None),
        }
    }

    /// Keeps a session for the page views.
    pub fn signed_in(&mut self, session: Option<String>) {
        self.session = session;
    }

    /// Views a results page (the list, or the order's detail): its status.
    pub async fn view(&self, base: &str, detail: bool) -> u16 {
        let url = if detail {
            format!("{base}/portal/results/{}", self.order)
        } else {
            format!("{base}/portal/results")
        };
        match self
            .http
            .get(url)
            .header(COOKIE, self.cookies())
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                // Read the page as a browser would.
                let _ = r.bytes().await;
                status
            }
            Err(_) => crate::load::NO_ANSWER,
        }
    }
}

/// The activation links the mailer wrote to `outbox` for `emails`, waiting
/// for them (at most `limit`).
pub async fn links(
    outbox: &Path,
    emails: &[String],
    limit: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let mut found = vec![None; emails.len()];
        for entry in std::fs::read_dir(outbox)
            .with_context(|| format!("the mail outbox {}", outbox.display()))?
        {
            let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
            let text = text.replace("=\r\n", "").replace("=3D", "=");
            let Some(at) = text.find("/portal/activate?token=") else {
                continue;
            };
            for (i, e) in emails.iter().enumerate() {
                if text.contains(&format!("To: {e}")) {
                    let start = text[..at].rfind("http").unwrap_or(at);
                    let link: String = text[start..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    found[i] = Some(link);
                }
            }
        }
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().flatten().collect());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} invitations in {} (is LIS_SMTP_URL set? the portal workload reads the local stack's outbox)",
                found.iter().filter(|f| f.is_some()).count(),
                emails.len(),
                outbox.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
