//! The patient portal under `/portal`: activation through the emailed
//! link, login with email and password, a patient's own `final` and
//! `corrected` results, logout, and a new activation link.
//!
//! Pages are rendered from the templates in `templates/` (minijinja, HTML
//! escaped). Accounts, passwords and sessions are write-side state
//! (`accounts`, `portal_sessions`); account changes are commands
//! ([`command_handler::accounts`]) run by the one pipeline, so they are
//! events in the account's stream. Results come from the read models only.
//!
//! # Layout
//! - [`session`]: session cookies, their expiry, CSRF tokens.
//! - [`results`]: the read-model queries of the results pages.
//! - [`client`]: a patient's browser for the project's tools (bench,
//!   fault suite).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use command_handler::accounts::{self, AccountError, AccountKey, LinkProblem, LinkPurpose};
use command_handler::pipeline::run;
use deadpool_postgres::Pool;
use domain::access::Actor;
use domain::account::{Account, AccountAction};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use minijinja::{context, Environment, Value};
use platform::config::Config;
use platform::read_models::ReadModels;
use serde::Deserialize;
use uuid::Uuid;

pub mod client;
pub mod results;
pub mod session;

use session::{Session, CSRF_COOKIE, SESSION_COOKIE};

/// Failed logins in a row that lock an account.
pub const MAX_FAILED_LOGINS: i32 = 5;
/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// The longest password accepted (characters).
pub const MAX_PASSWORD: usize = 128;

/// What the portal's handlers share.
#[derive(Clone)]
pub struct PortalState {
    write: Pool,
    read: ReadModels,
    pages: Arc<Environment<'static>>,
    limits: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    secure: bool,
}

impl PortalState {
    /// The portal's state: the write pool (accounts, sessions) and the read
    /// models (results).
    pub fn new(cfg: &Config, write: Pool, read: ReadModels) -> Self {
        let mut pages = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("../templates/base.html")),
            ("message.html", include_str!("../templates/message.html")),
            ("login.html", include_str!("../templates/login.html")),
            ("activate.html", include_str!("../templates/activate.html")),
            (
                "confirm_login.html",
                include_str!("../templates/confirm_login.html"),
            ),
            ("new_link.html", include_str!("../templates/new_link.html")),
            ("password.html", include_str!("../templates/password.html")),
            ("results.html", include_str!("../templates/results.html")),
            ("result.html", include_str!("../templates/result.html")),
        ] {
            pages
                .add_template(name, text)
                .expect("the portal's templates parse (tested)");
        }
        let n = NonZeroU32::new(cfg.portal_rate_per_minute.max(1)).expect("non-zero");
        PortalState {
            write,
            read,
            pages: Arc::new(pages),
            limits: Arc::new(RateLimiter::keyed(Quota::per_minute(n))),
            secure: cfg.public_url.starts_with("https://"),
        }
    }
}

/// The portal's routes.
pub fn router(state: PortalState) -> Router {
    Router::new()
        .route("/portal", get(home))
        .route("/portal/", get(home))
        .route("/portal/portal.css", get(css))
        .route("/portal/login", get(login_form).post(login))
        .route("/portal/activate", get(activate_form).post(activate))
        .route("/portal/new-link", get(new_link_form).post(new_link))
        .route(
            "/portal/confirm-login",
            get(confirm_form).post(confirm_login),
        )
        .route("/portal/results", get(result_list))
        .route("/portal/results/{order_id}", get(result_detail))
        .route("/portal/password", get(password_form).post(change_password))
        .route("/portal/logout", post(logout))
        .route("/portal/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(page_headers))
        .with_state(state)
}

/// Headers of every portal answer: nothing cached, nothing framed, no
/// referrer (an activation link carries its token), no script at all.
async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A rendered page.
struct Page {
    status: StatusCode,
    html: String,
    cookies: Vec<String>,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.html,
        )
            .into_response();
        for c in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        r
    }
}

impl PortalState {
    fn render(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        match self.pages.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Page {
                status,
                html,
                cookies: vec![],
            }
            .into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "a portal page did not render");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }

    fn message(
        &self,
        status: StatusCode,
        title: &str,
        text: &str,
        link: Option<(&str, &str)>,
    ) -> Response {
        self.render(
            status,
            "message.html",
            context! {
                title, text, alert => status.is_client_error() || status.is_server_error(),
                link => link.map(|(href, text)| context! { href, text }),
            },
        )
    }

    fn failed(&self, e: &(dyn std::error::Error + 'static)) -> Response {
        tracing::error!(error = %platform::telemetry::cause(e), "a portal request failed");
        self.unavailable()
    }

    /// The 503 page, with the `Retry-After` a browser or a proxy may heed.
    fn unavailable(&self) -> Response {
        let mut r = self.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong",
            "We could not complete your request. Please try again in a moment.",
            Some(("/portal", "Back to the portal")),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
        r
    }

    fn refused_form(&self) -> Response {
        self.message(
            StatusCode::FORBIDDEN,
            "Please try again",
            "This form has expired or did not come from this site. Open the page again and resubmit.",
            Some(("/portal/login", "Log in")),
        )
    }

    /// The 429 page when `addr` is past its rate.
    fn limited(&self, addr: IpAddr) -> Option<Response> {
        let now = DefaultClock::default().now();
        self.limits.check_key(&addr).err().map(|n| {
            let wait = n.wait_time_from(now).as_secs().max(1);
            let mut r = self.message(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "Too many attempts from your network. Please wait a minute and try again.",
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            r
        })
    }

    /// The signed-in patient, or a redirect to the login page.
    async fn signed_in(&self, headers: &HeaderMap) -> Result<Session, Response> {
        let Some(token) = session::cookie(headers, SESSION_COOKIE) else {
            return Err(see_other("/portal/login", vec![]));
        };
        let db = self.write.get().await.map_err(|e| self.failed(&e))?;
        match session::find(&db, &token).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(see_other(
                "/portal/login",
                vec![session::set_cookie(SESSION_COOKIE, None, self.secure)],
            )),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// The CSRF token of a form shown before login, and the cookie that
    /// carries it when the browser has none yet.
    fn form_token(&self, headers: &HeaderMap) -> (String, Vec<String>) {
        match session::cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 43) {
            Some(t) => (t, vec![]),
            None => {
                let t = session::random_token();
                let c = session::set_cookie(CSRF_COOKIE, Some(&t), self.secure);
                (t, vec![c])
            }
        }
    }

    fn with_cookies(mut response: Response, cookies: Vec<String>) -> Response {
        for c in cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        response
    }
}

fn see_other(to: &'static str, cookies: Vec<String>) -> Response {
    let r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    PortalState::with_cookies(r, cookies)
}

/// A posted form: it carries a CSRF token (before login equal to its
/// cookie's, after login to the session's).
trait Posted {
    /// The token the form carries.
    fn csrf(&self) -> &str;
}

impl PortalState {
    /// A form posted before login, when it parses, carries the token its
    /// cookie holds, and (for `limit`) its source address is within its
    /// rate; else the page that refuses it.
    fn accept<T: Posted>(
        &self,
        headers: &HeaderMap,
        form: Result<Form<T>, FormRejection>,
        limit: Option<IpAddr>,
    ) -> Result<T, Box<Response>> {
        let form = match form {
            Ok(Form(f)) if form_token_ok(headers, f.csrf()) => f,
            _ => return Err(Box::new(self.refused_form())),
        };
        match limit.and_then(|addr| self.limited(addr)) {
            Some(r) => Err(Box::new(r)),
            None => Ok(form),
        }
    }
}

impl PortalState {
    /// A form posted by a signed-in patient, when it parses and carries
    /// the session's token; else the page that refuses it (the login page
    /// without a session).
    async fn signed_in_form<T: Posted>(
        &self,
        headers: &HeaderMap,
        form: Result<Form<T>, FormRejection>,
    ) -> Result<(Session, T), Box<Response>> {
        let s = self.signed_in(headers).await.map_err(Box::new)?;
        match form {
            Ok(Form(f)) if session::same(&s.csrf, f.csrf()) => Ok((s, f)),
            _ => Err(Box::new(self.refused_form())),
        }
    }
}

/// Whether a form before login carries the token its cookie holds.
fn form_token_ok(headers: &HeaderMap, sent: &str) -> bool {
    session::cookie(headers, CSRF_COOKIE).is_some_and(|c| session::same(&c, sent))
}

async fn home(State(st): State<PortalState>, headers: HeaderMap) -> Response {
    match st.signed_in(&headers).await {
        Ok(_) => see_other("/portal/results", vec![]),
        Err(r) => r,
    }
}

async fn not_found(State(st): State<PortalState>) -> Response {
    st.message(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no such page.",
        Some(("/portal", "Back to the portal")),
    )
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../templates/portal.css"),
    )
        .into_response()
}

/// The login form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

impl Posted for LoginForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SignedOut {
    signed_out: Option<String>,
}

async fn login_form(
    State(st): State<PortalState>,
    headers: HeaderMap,
    Query(q): Query<SignedOut>,
) -> Response {
    let (csrf, cookies) = st.form_token(&headers);
    let info = q.signed_out.map(|_| "You are logged out.");
    let page = st.render(
        StatusCode::OK,
        "login.html",
        context! { title => "Log in", csrf, email => "", error => info },
    );
    PortalState::with_cookies(page, cookies)
}

/// The one answer to every refused login: unknown email, wrong password,
/// an account not activated, locked or disabled.
const LOGIN_REFUSED: &str = "The email or password is not right, or the account cannot log in \
     now. After 5 failed attempts an account is locked; your lab can unlock it.";

async fn login(
    State(st): State<PortalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let f = match st.accept(&headers, form, Some(peer.ip())) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    match st.try_login(&f.email, &f.password).await {
        Ok(Some(token)) => see_other(
            "/portal/results",
            vec![session::set_cookie(SESSION_COOKIE, Some(&token), st.secure)],
        ),
        Ok(None) => st.render(
            StatusCode::UNPROCESSABLE_ENTITY,
            "login.html",
            context! { title => "Log in", csrf => f.csrf, email => f.email, error => LOGIN_REFUSED },
        ),
        Err(e) => st.failed(e.as_ref()),
    }
}

/// Checks a password against a stored hash off the async threads; with no
/// hash it checks a dummy one, so every refusal takes as long.
async fn password_matches(password: &str, hash: Option<String>) -> bool {
    let password = if password.chars().count() > MAX_PASSWORD {
        String::new()
    } else {
        password.to_string()
    };
    platform::auth::verify_secret_off_thread(password, hash).await
}

fn portal_actor() -> Actor {
    Actor::System {
        id: "portal".into(),
    }
}

impl PortalState {
    /// A login: the new session's cookie value, or `None` for any refusal.
    async fn try_login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
        let db = self.write.get().await?;
        let row = db
            .query_opt(
                "SELECT account_id, status, password_hash FROM accounts WHERE login = $1",
                &[&domain::patient::login_key(email)],
            )
            .await?;
        let (account, active, hash) = match &row {
            Some(r) => (
                Some(r.get::<_, Uuid>(0)),
                r.get::<_, String>(1) == "active",
                r.get::<_, Option<String>>(2),
            ),
            None => (None, false, None),
        };
        let matches = password_matches(password, hash).await;
        let Some(account) = account.filter(|_| active) else {
            return Ok(None);
        };
        if matches {
            db.execute(
                "UPDATE accounts SET failed_logins = 0 WHERE account_id = $1 AND failed_logins > 0",
                &[&account],
            )
            .await?;
            return Ok(Some(session::start(&db, account).await?));
        }
        self.failed_password(&db, account).await?;
        Ok(None)
    }

    /// Counts a wrong password of an active account; the fifth in a row
    /// locks it.
    async fn failed_password(
        &self,
        db: &deadpool_postgres::Client,
        account: Uuid,
    ) -> Result<(), AccountError> {
        let failed: Option<i32> = db
            .query_opt(
                "UPDATE accounts SET failed_logins = failed_logins + 1 \
                 WHERE account_id = $1 AND status = 'active' RETURNING failed_logins",
                &[&account],
            )
            .await?
            .map(|r| r.get(0));
        if failed.is_some_and(|n| n >= MAX_FAILED_LOGINS) {
            let lock = accounts::ChangeAccount {
                key: AccountKey::Id(account),
                action: AccountAction::Lock,
            };
            match run(&self.write, &portal_actor(), &lock).await {
                Ok(_) => tracing::info!(account = %account, "account locked after failed logins"),
                // Locked (or disabled) by a concurrent request already.
                Err(AccountError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The activation link's query.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LinkQuery {
    token: String,
}

/// The activation form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActivateForm {
    csrf: String,
    token: String,
    password: String,
    confirm: String,
}

impl Posted for ActivateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl PortalState {
    /// The page of a link that does not work.
    fn link_problem(&self, problem: LinkProblem) -> Response {
        let (status, title, text) = match problem {
            LinkProblem::Unknown => (
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "This activation link is not valid. Check that you opened the whole link from the email, or ask for a new one.",
            ),
            LinkProblem::Used => (
                StatusCode::GONE,
                "This link was already used",
                "This activation link was already used. If you chose your password, log in; otherwise ask for a new link.",
            ),
            LinkProblem::Expired => (
                StatusCode::GONE,
                "This link has expired",
                "This activation link has expired. Ask for a new one: it is sent to the same email.",
            ),
            LinkProblem::Superseded => (
                StatusCode::GONE,
                "This link was replaced",
                "This activation link no longer works: your laboratory sent a new invitation. Use the link in the newest email, or ask for a new one.",
            ),
        };
        let link = match problem {
            LinkProblem::Used => ("/portal/login", "Log in"),
            _ => ("/portal/new-link", "Ask for a new link"),
        };
        self.message(status, title, text, Some(link))
    }

    /// The page of an account command's refusal: a link that does not
    /// work, or a failure.
    fn refusal(&self, e: AccountError) -> Response {
        match e {
            AccountError::Link(p) => self.link_problem(p),
            AccountError::Unknown => self.link_problem(LinkProblem::Unknown),
            AccountError::Rejected(_) => self.link_problem(LinkProblem::Used),
            e => self.failed(&e),
        }
    }

    /// The form of a working link for `purpose` (`form` renders it from
    /// the CSRF token, the account and the address the link names), or
    /// the page of a link that does not work.
    async fn link_page(
        &self,
        headers: &HeaderMap,
        token: &str,
        purpose: LinkPurpose,
        form: impl FnOnce(String, Account, Option<String>) -> Response,
    ) -> Response {
        let (csrf, cookies) = self.form_token(headers);
        let link = match self.write.get().await {
            Ok(db) => accounts::check_link(&db, &session::digest(token), purpose).await,
            Err(e) => Err(e.into()),
        };
        let page = match link {
            Ok((account, email)) => form(csrf, account, email),
            Err(e) => self.refusal(e),
        };
        PortalState::with_cookies(page, cookies)
    }

    /// The activation form (with `errors` of the last try).
    async fn activation_page(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        token: &str,
        errors: Vec<&str>,
    ) -> Response {
        self.link_page(headers, token, LinkPurpose::Activate, |csrf, a, _| {
            self.render(
                status,
                "activate.html",
                context! {
                    title => "Activate your account", csrf, token, email => a.email, errors,
                    min_length => MIN_PASSWORD, max_length => MAX_PASSWORD,
                },
            )
        })
        .await
    }
}

async fn activate_form(
    State(st): State<PortalState>,
    headers: HeaderMap,
    Query(q): Query<LinkQuery>,
) -> Response {
    st.activation_page(StatusCode::OK, &headers, &q.token, vec![])
        .await
}

/// What is wrong with a new password.
fn password_problems(password: &str, confirm: &str) -> Vec<&'static str> {
    let n = password.chars().count();
    let mut problems = vec![];
    if n < MIN_PASSWORD {
        problems.push("The password is too short: use at least 10 characters.");
    }
    if n > MAX_PASSWORD {
        problems.push("The password is too long: use at most 128 characters.");
    }
    if password != confirm {
        problems.push("The two passwords are not the same.");
    }
    problems
}

async fn activate(
    State(st): State<PortalState>,
    headers: HeaderMap,
    form: Result<Form<ActivateForm>, FormRejection>,
) -> Response {
    let f = match st.accept(&headers, form, None) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let problems = password_problems(&f.password, &f.confirm);
    if !problems.is_empty() {
        return st
            .activation_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &headers,
                &f.token,
                problems,
            )
            .await;
    }
    let password = f.password.clone();
    let Some(hash) = platform::auth::hash_secret_off_thread(password).await else {
        return st.unavailable();
    };
    let command = accounts::Activate {
        token_hash: session::digest(&f.token),
        password_hash: hash,
    };
    match run(&st.write, &portal_actor(), &command).await {
        Ok(account) => {
            let started = match st.write.get().await {
                Ok(db) => session::start(&db, account.id)
                    .await
                    .map_err(AccountError::from),
                Err(e) => Err(e.into()),
            };
            match started {
                Ok(token) => see_other(
                    "/portal/results",
                    vec![session::set_cookie(SESSION_COOKIE, Some(&token), st.secure)],
                ),
                Err(e) => st.failed(&e),
            }
        }
        Err(e) => st.refusal(e),
    }
}

/// The login confirmation form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfirmForm {
    csrf: String,
    token: String,
    password: String,
}

impl Posted for ConfirmForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl PortalState {
    /// The confirmation form of a new login (with `error` of the last try).
    async fn confirm_page(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        token: &str,
        error: Option<&str>,
    ) -> Response {
        self.link_page(
            headers,
            token,
            LinkPurpose::ConfirmLogin,
            |csrf, _, email| {
                self.render(
                    status,
                    "confirm_login.html",
                    context! { title => "Confirm your new login", csrf, token, email, error },
                )
            },
        )
        .await
    }
}

async fn confirm_form(
    State(st): State<PortalState>,
    headers: HeaderMap,
    Query(q): Query<LinkQuery>,
) -> Response {
    st.confirm_page(StatusCode::OK, &headers, &q.token, None)
        .await
}

/// A new login is confirmed with the account's password: a link mailed to
/// an address a partner typed never suffices on its own.
async fn confirm_login(
    State(st): State<PortalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<ConfirmForm>, FormRejection>,
) -> Response {
    let f = match st.accept(&headers, form, Some(peer.ip())) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let token_hash = session::digest(&f.token);
    let checked = async {
        let db = st.write.get().await?;
        let (account, _) =
            accounts::check_link(&db, &token_hash, LinkPurpose::ConfirmLogin).await?;
        let hash = accounts::password_hash(&db, account.id).await?;
        let active = account.status == domain::account::AccountStatus::Active;
        let right = password_matches(&f.password, hash).await && active;
        if !right && active {
            st.failed_password(&db, account.id).await?;
        }
        Ok::<bool, AccountError>(right)
    };
    match checked.await {
        Ok(true) => {}
        Ok(false) => {
            return st
                .confirm_page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &headers,
                    &f.token,
                    Some("The password is not right, or the account cannot log in now."),
                )
                .await
        }
        Err(e) => return st.refusal(e),
    }
    match run(&st.write, &portal_actor(), &accounts::ConfirmLogin { token_hash }).await {
        Ok(account) => st.message(
            StatusCode::OK,
            "Your login changed",
            &format!("From now on you log in with {}.", account.email),
            Some(("/portal/login", "Log in")),
        ),
        Err(AccountError::LoginInUse) => st.message(
            StatusCode::CONFLICT,
            "This address is in use",
            "Another account logs in with this address, so yours keeps its login. Contact your laboratory.",
            Some(("/portal/login", "Log in")),
        ),
        Err(e) => st.refusal(e),
    }
}

/// The new-link form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NewLinkForm {
    csrf: String,
    email: String,
}

impl Posted for NewLinkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn new_link_form(State(st): State<PortalState>, headers: HeaderMap) -> Response {
    let (csrf, cookies) = st.form_token(&headers);
    let page = st.render(
        StatusCode::OK,
        "new_link.html",
        context! { title => "Ask for a new activation link", csrf, sent => false },
    );
    PortalState::with_cookies(page, cookies)
}

async fn new_link(
    State(st): State<PortalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<NewLinkForm>, FormRejection>,
) -> Response {
    let f = match st.accept(&headers, form, Some(peer.ip())) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if !f.email.is_empty() && f.email.len() <= 254 {
        let command = accounts::RequestLink { email: f.email };
        if let Err(e) = run(&st.write, &portal_actor(), &command).await {
            return st.failed(&e);
        }
    }
    st.render(
        StatusCode::OK,
        "new_link.html",
        context! { title => "Ask for a new activation link", sent => true },
    )
}

async fn result_list(State(st): State<PortalState>, headers: HeaderMap) -> Response {
    let s = match st.signed_in(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let shown = async {
        let db = st.read.pool().get().await?;
        let name = results::first_name(&db, s.patient_id).await?;
        let orders = results::list(&db, s.patient_id).await?;
        Ok::<_, anyhow::Error>((name, orders))
    };
    match shown.await {
        Ok((first_name, orders)) => st.render(
            StatusCode::OK,
            "results.html",
            context! { title => "Your results", csrf_session => s.csrf, first_name, orders },
        ),
        Err(e) => st.failed(e.as_ref()),
    }
}

async fn result_detail(
    State(st): State<PortalState>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    let s = match st.signed_in(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let missing = || {
        st.render(
            StatusCode::NOT_FOUND,
            "message.html",
            context! {
                title => "Result not found", csrf_session => s.csrf.clone(), alert => true,
                text => "There is no released result at this address for you.",
                link => context! { href => "/portal/results", text => "All results" },
            },
        )
    };
    let Ok(order_id) = order_id.parse::<Uuid>() else {
        return missing();
    };
    let shown = async {
        let db = st.read.pool().get().await?;
        results::detail(&db, s.patient_id, order_id).await
    };
    match shown.await {
        Ok(Some(order)) => {
            let title = order
                .tests
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            st.render(
                StatusCode::OK,
                "result.html",
                context! { title, csrf_session => s.csrf, order },
            )
        }
        Ok(None) => missing(),
        Err(e) => st.failed(e.as_ref()),
    }
}

/// The password form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PasswordForm {
    csrf: String,
    current: String,
    password: String,
    confirm: String,
}

impl Posted for PasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl PortalState {
    fn password_page(
        &self,
        status: StatusCode,
        s: &Session,
        errors: Vec<&str>,
        changed: bool,
    ) -> Response {
        self.render(
            status,
            "password.html",
            context! {
                title => "Change your password", csrf_session => s.csrf, errors, changed,
                min_length => MIN_PASSWORD, max_length => MAX_PASSWORD,
            },
        )
    }
}

async fn password_form(State(st): State<PortalState>, headers: HeaderMap) -> Response {
    match st.signed_in(&headers).await {
        Ok(s) => st.password_page(StatusCode::OK, &s, vec![], false),
        Err(r) => r,
    }
}

/// A password change: the current password (a wrong one counts as a
/// failed login), then the new one; every session of the account ends and
/// a new one starts for this browser.
async fn change_password(
    State(st): State<PortalState>,
    headers: HeaderMap,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Response {
    let (s, f) = match st.signed_in_form(&headers, form).await {
        Ok(both) => both,
        Err(r) => return *r,
    };
    let checked = async {
        let db = st.write.get().await?;
        let hash = accounts::password_hash(&db, s.account_id).await?;
        let right = password_matches(&f.current, hash).await;
        if !right {
            st.failed_password(&db, s.account_id).await?;
        }
        Ok::<bool, AccountError>(right)
    };
    let mut problems = match checked.await {
        Ok(true) => vec![],
        Ok(false) => vec!["The current password is not right."],
        Err(e) => return st.failed(&e),
    };
    problems.extend(password_problems(&f.password, &f.confirm));
    if !problems.is_empty() {
        return st.password_page(StatusCode::UNPROCESSABLE_ENTITY, &s, problems, false);
    }
    let Some(hash) = platform::auth::hash_secret_off_thread(f.password).await else {
        return st.unavailable();
    };
    let command = accounts::ChangePassword {
        account_id: s.account_id,
        password_hash: hash,
    };
    let changed = match run(&st.write, &portal_actor(), &command).await {
        Ok(_) => match st.write.get().await {
            Ok(db) => session::start(&db, s.account_id)
                .await
                .map_err(AccountError::from),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    match changed {
        Ok(token) => {
            let fresh = Session {
                csrf: String::new(),
                ..s
            };
            PortalState::with_cookies(
                st.password_page(StatusCode::OK, &fresh, vec![], true),
                vec![session::set_cookie(SESSION_COOKIE, Some(&token), st.secure)],
            )
        }
        Err(e) => st.refusal(e),
    }
}

/// The logout form's field.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LogoutForm {
    csrf: String,
}

impl Posted for LogoutForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn logout(
    State(st): State<PortalState>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    if let Err(r) = st.signed_in_form(&headers, form).await {
        return *r;
    }
    let token = session::cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    let ended = match st.write.get().await {
        Ok(db) => session::end(&db, &token).await.map_err(AccountError::from),
        Err(e) => Err(e.into()),
    };
    match ended {
        Ok(()) => PortalState::with_cookies(
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/portal/login?signed_out=1")],
            )
                .into_response(),
            vec![session::set_cookie(SESSION_COOKIE, None, st.secure)],
        ),
        Err(e) => st.failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_judged_by_length_and_confirmation() {
        assert_eq!(
            password_problems("correct horse", "correct horse"),
            Vec::<&str>::new()
        );
        assert_eq!(password_problems("short", "short").len(), 1);
        assert_eq!(password_problems("correct horse", "correct house").len(), 1);
        let long = "x".repeat(MAX_PASSWORD + 1);
        assert_eq!(password_problems(&long, &long).len(), 1);
    }

    #[test]
    fn the_limits_stated_in_words_match_the_constants() {
        assert!(password_problems("x", "x")[0].contains(&MIN_PASSWORD.to_string()));
        assert!(LOGIN_REFUSED.contains(&MAX_FAILED_LOGINS.to_string()));
    }
}
