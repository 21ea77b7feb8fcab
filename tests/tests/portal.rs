//! The patient portal over HTTP, every refusal included: activation
//! through the mailed link (used, expired, unknown links), login (no
//! account, wrong password, the lock after failed logins and the
//! operator's unlock), sessions (cookie attributes, logout, idle and
//! absolute expiry, a disabled account), CSRF on every form, and results:
//! only the patient's own released ones, corrections marked.

use std::time::{Duration, Instant};

use tests::portal::{Visitor, World};

const ADA_PASSWORD: &str = "correct horse battery";

async fn count(
    s: &tests::TestStack,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    s.write
        .get()
        .await
        .unwrap()
        .query_one(sql, params)
        .await
        .unwrap()
        .get(0)
}

async fn account_events(s: &tests::TestStack, event_type: &str) -> i64 {
    count(
        s,
        "SELECT count(*) FROM events WHERE stream_type = 'account' AND event_type = $1",
        &[&event_type],
    )
    .await
}

/// Activates `email`'s account through its mailed link.
async fn activate(w: &World, email: &str, password: &str) -> Visitor {
    let mut v = Visitor::new(&w.stack.base);
    let done = v.activate(&w.link_of(email), password).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/portal/results"));
    v
}

fn lis(w: &World, args: &[&str]) -> std::process::Output {
    let cfg = &w.stack.cfg;
    let mut c = std::process::Command::new(tests::lis_binary());
    for name in platform::config::Config::VARIABLES {
        c.env_remove(name);
    }
    c.envs([
        ("LIS_DATABASE_URL", cfg.database_url.as_str()),
        ("LIS_WRITE_SCHEMA", cfg.write_schema.as_str()),
        ("LIS_READ_SCHEMA", cfg.read_schema.as_str()),
        ("LIS_KAFKA_BROKERS", cfg.kafka_brokers.as_str()),
        ("LIS_TOPIC_PREFIX", cfg.topic_prefix.as_str()),
        ("LIS_LOG", "warn"),
    ]);
    c.args(args).output().expect("run lis")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_activates_logs_in_and_sees_only_their_released_results() {
    let w = World::start().await;
    let s = &w.stack;

    // A link's form, refused without its CSRF token or with a short password.
    let mut v = Visitor::new(&s.base);
    let link = w.link_of("ada@example.org");
    let form = v.get(&link).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("ada@example.org"));
    let token = form.field("token");
    let no_csrf = v
        .post(
            "/portal/activate",
            &[
                ("token", &token),
                ("password", ADA_PASSWORD),
                ("confirm", ADA_PASSWORD),
            ],
        )
        .await;
    assert_eq!(no_csrf.status, 403, "an activation without its CSRF token");
    let short = v
        .post(
            "/portal/activate",
            &[
                ("csrf", &form.field("csrf")),
                ("token", &token),
                ("password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, 422);
    assert!(short.body.contains("too short"), "{}", short.body);
    assert_eq!(account_events(s, "PatientAccountActivated").await, 0);

    // Activation signs the patient in; the link then reads as used.
    let mut ada = activate(&w, "ada@example.org", ADA_PASSWORD).await;
    let session = ada
        .cookies
        .get("lis_portal")
        .cloned()
        .expect("a session cookie");
    let used = Visitor::new(&s.base).get(&link).await;
    assert_eq!(used.status, 410);
    assert!(used.body.contains("already used"), "{}", used.body);
    assert_eq!(account_events(s, "PatientAccountActivated").await, 1);
    let unknown = Visitor::new(&s.base)
        .get("/portal/activate?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(unknown.status, 404);

    // Results: Ada's final and corrected orders, not the unreleased one,
    // never Bob's.
    for o in [&w.ada_orders[0], &w.ada_orders[1], &w.bob_order] {
        w.wait_released(o).await;
    }
    let list = ada.get("/portal/results").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("lang=\"en\""));
    assert!(list.body.contains("Hello, Ada"));
    for (order, shown) in [
        (&w.ada_orders[0], true),
        (&w.ada_orders[1], true),
        (&w.ada_orders[2], false),
        (&w.bob_order, false),
    ] {
        assert_eq!(
            list.body.contains(&format!("/portal/results/{order}")),
            shown,
            "order {order} in Ada's list: {}",
            list.body
        );
    }
    assert_eq!(list.body.matches("Corrected").count(), 1, "{}", list.body);
    let detail = ada
        .get(&format!("/portal/results/{}", w.ada_orders[1]))
        .await;
    assert_eq!(detail.status, 200);
    for text in ["Complete blood count", "13.1", "g/dL", "7.2", "Corrected"] {
        assert!(detail.body.contains(text), "{text} in {}", detail.body);
    }
    assert!(
        !detail.body.contains("11.2"),
        "the replaced value is not shown"
    );
    let plain = ada
        .get(&format!("/portal/results/{}", w.ada_orders[0]))
        .await;
    assert!(plain.body.contains("11.2") && !plain.body.contains("Corrected"));
    for other in [&w.bob_order, &w.ada_orders[2], &"not-a-uuid".to_string()] {
        let r = ada.get(&format!("/portal/results/{other}")).await;
        assert_eq!(r.status, 404, "{other}");
        assert!(!r.body.contains("Bob"));
    }

    // The session cookie: not for scripts, same site, only /portal.
    let login = Visitor::new(&s.base)
        .login("ada@example.org", ADA_PASSWORD)
        .await;
    assert_eq!(login.status, 303);
    let set = login
        .set_cookies
        .iter()
        .find(|c| c.starts_with("lis_portal="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/portal"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP here: {set}");
    let csp = list.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(list.headers["referrer-policy"], "no-referrer");

    // Logout needs the session's CSRF token, then ends the session.
    let refused = ada.post("/portal/logout", &[("csrf", "wrong")]).await;
    assert_eq!(refused.status, 403);
    let csrf = list.field("csrf");
    let out = ada.post("/portal/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    let mut stale = Visitor::new(&s.base);
    stale.cookies.insert("lis_portal".into(), session);
    let r = stale.get("/portal/results").await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/portal/login"))
    );

    // A password change needs the session's CSRF token and the current
    // password; it ends the account's other sessions.
    let mut here = Visitor::new(&s.base);
    assert_eq!(
        here.login("ada@example.org", ADA_PASSWORD).await.status,
        303
    );
    let mut elsewhere = Visitor::new(&s.base);
    assert_eq!(
        elsewhere
            .login("ada@example.org", ADA_PASSWORD)
            .await
            .status,
        303
    );
    let form = here.get("/portal/password").await;
    assert_eq!(form.status, 200);
    let csrf = form.field("csrf");
    const NEW: &str = "an even better password";
    let change = [
        ("current", ADA_PASSWORD),
        ("password", NEW),
        ("confirm", NEW),
    ];
    let no_csrf = here.post("/portal/password", &change).await;
    assert_eq!(no_csrf.status, 403);
    let fields = |current| {
        [
            ("csrf", csrf.as_str()),
            ("current", current),
            ("password", NEW),
            ("confirm", NEW),
        ]
    };
    let r = here
        .post("/portal/password", &fields("not the password"))
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("current password is not right"),
        "{}",
        r.body
    );
    let r = here.post("/portal/password", &fields(ADA_PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Your password changed"));
    assert_eq!(
        here.get("/portal/results").await.status,
        200,
        "a new session here"
    );
    assert_eq!(
        elsewhere.get("/portal/results").await.status,
        303,
        "the others end"
    );
    assert_eq!(
        Visitor::new(&s.base)
            .login("ada@example.org", ADA_PASSWORD)
            .await
            .status,
        422
    );
    assert_eq!(
        Visitor::new(&s.base)
            .login("ada@example.org", NEW)
            .await
            .status,
        303
    );
    assert_eq!(account_events(s, "PatientAccountPasswordChanged").await, 1);

    // No password, hash or token in any event.
    let leaked = count(
        s,
        "SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%' OR data::text LIKE '%argon2%'",
        &[&ADA_PASSWORD],
    )
    .await;
    assert_eq!(leaked, 0);
    let leaked_new = count(
        s,
        "SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'",
        &[&NEW],
    )
    .await;
    assert_eq!(leaked_new, 0);
    w.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_of_the_portal() {
    let w = World::start().await;
    let s = &w.stack;
    activate(&w, "ada@example.org", ADA_PASSWORD).await;
    let email_of_cy = w.cy["email"].as_str().map(str::to_string);
    assert_eq!(email_of_cy, None, "Cy has no email, so no account");

    // Login refusals: one answer for no account and a wrong password.
    let mut v = Visitor::new(&s.base);
    let no_csrf = v
        .post(
            "/portal/login",
            &[("email", "ada@example.org"), ("password", ADA_PASSWORD)],
        )
        .await;
    assert_eq!(no_csrf.status, 403, "a login without its CSRF token");
    let unknown = v.login("cy@example.org", ADA_PASSWORD).await;
    let wrong = v.login("ada@example.org", "not the password").await;
    let invited = v.login("bob@example.org", ADA_PASSWORD).await;
    for r in [&unknown, &wrong, &invited] {
        assert_eq!(r.status, 422);
        assert!(!r.cookies_named("lis_portal"));
    }
    let message = |p: &tests::portal::Page| {
        let b = &p.body;
        let at = b.find("role=\"alert\"").expect("an alert");
        b[at..at + b[at..].find("</p>").unwrap()].to_string()
    };
    assert_eq!(message(&unknown), message(&wrong));
    assert_eq!(message(&invited), message(&wrong));
    // Five failed logins in a row lock the account; then even the right
    // password is refused, until an operator unlocks it.
    let mut ada = Visitor::new(&s.base);
    assert_eq!(ada.login("ada@example.org", ADA_PASSWORD).await.status, 303);
    for _ in 0..portal::MAX_FAILED_LOGINS {
        assert_eq!(v.login("ada@example.org", "guess").await.status, 422);
    }
    assert_eq!(account_events(s, "PatientAccountLocked").await, 1);
    let r = ada.get("/portal/results").await;
    assert_eq!(r.status, 303, "a lock ends the account's sessions");
    let locked = v.login("ada@example.org", ADA_PASSWORD).await;
    assert_eq!(locked.status, 422);
    assert_eq!(message(&locked), message(&wrong));
    let out = lis(&w, &["admin", "account", "unlock", "ADA@example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("active"));
    let again = lis(&w, &["admin", "account", "unlock", "ada@example.org"]);
    assert!(
        !again.status.success(),
        "an active account has nothing to unlock"
    );
    assert_eq!(account_events(s, "PatientAccountUnlocked").await, 1);
    assert_eq!(ada.login("ada@example.org", ADA_PASSWORD).await.status, 303);

    // Sessions lapse after idling and after their absolute lifetime.
    assert_eq!(ada.get("/portal/results").await.status, 200);
    for column in ["seen_at", "created_at"] {
        let mut fresh = Visitor::new(&s.base);
        assert_eq!(
            fresh.login("ada@example.org", ADA_PASSWORD).await.status,
            303
        );
        let hash = portal::session::digest(&fresh.cookies["lis_portal"]);
        s.write
            .get()
            .await
            .unwrap()
            .execute(
                &format!("UPDATE portal_sessions SET {column} = {column} - interval '13 hours' WHERE session_hash = $1"),
                &[&hash],
            )
            .await
            .unwrap();
        let r = fresh.get("/portal/results").await;
        assert_eq!(r.status, 303, "a session past its {column} limit");
    }

    // Links: expired, then a new one by mail, which works.
    let mut bob = Visitor::new(&s.base);
    s.write
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE activation_tokens SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let expired = bob.get(&w.link_of("bob@example.org")).await;
    assert_eq!(expired.status, 410);
    assert!(expired.body.contains("expired") && expired.body.contains("/portal/new-link"));
    let form = bob.get("/portal/new-link").await;
    let csrf = form.field("csrf");
    assert_eq!(
        bob.post("/portal/new-link", &[("email", "bob@example.org")])
            .await
            .status,
        403,
        "a new-link request without its CSRF token"
    );
    for email in ["bob@example.org", "nobody@example.org", "ada@example.org"] {
        let r = bob
            .post("/portal/new-link", &[("csrf", &csrf), ("email", email)])
            .await;
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("If an account at that address"),
            "the same answer for {email}"
        );
    }
    let mails = w.sink.wait_for(3).await;
    assert_eq!(mails.len(), 3, "one new link, for Bob only");
    assert_eq!(account_events(s, "ActivationLinkRequested").await, 1);
    let mut bob = activate(&w, "bob@example.org", "bob's long password").await;
    assert_eq!(bob.get("/portal/results").await.status, 200);

    // An operator disables Bob: his session ends at once, he cannot log in.
    let out = lis(&w, &["admin", "account", "disable", "bob@example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bob.get("/portal/results").await.status, 303);
    assert_eq!(
        bob.login("bob@example.org", "bob's long password")
            .await
            .status,
        422
    );
    let none = lis(&w, &["admin", "account", "disable", "cy@example.org"]);
    assert!(!none.status.success(), "no account has Cy's address");

    // The read model follows the account's status.
    let read = s.read.get().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses: Vec<String> = read
            .query("SELECT status FROM accounts ORDER BY status", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if statuses == ["active", "disabled"] {
            break;
        }
        assert!(Instant::now() < deadline, "read accounts: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_are_limited_per_address() {
    let mut cfg = tests::test_config();
    cfg.portal_rate_per_minute = 3;
    let s = tests::TestStack::start_with(cfg, lis::stack::Roles::ALL).await;
    let mut v = Visitor::new(&s.base);
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(v.login("nobody@example.org", "whatever it is").await.status);
    }
    assert_eq!(statuses, [422, 422, 422, 429]);
    let form = v.get("/portal/login").await;
    let limited = v
        .post(
            "/portal/login",
            &[
                ("csrf", &form.field("csrf")),
                ("email", "a@example.org"),
                ("password", "x"),
            ],
        )
        .await;
    assert!(limited.headers.contains_key("retry-after"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_cannot_take_over_an_account_by_changing_the_email() {
    let w = World::start().await;
    let s = &w.stack;
    activate(&w, "ada@example.org", ADA_PASSWORD).await;
    let ada_id = w.ada["patientID"].as_str().unwrap();
    let partner = w.token.as_str();
    let change = |email: &'static str| {
        let path = format!("/v1/patients/{ada_id}");
        async move {
            let r = s
                .patch(partner, &path, None, &format!(r#"{{"email":"{email}"}}"#))
                .await;
            assert_eq!(r.status(), 200);
        }
    };

    // A partner sets an address someone else reads.
    change("mallory@example.org").await;
    let mails = w.sink.wait_for(4).await;
    let notice = tests::portal::last_mail_to(&mails, "ada@example.org");
    assert!(
        notice.data.contains("changed the email address"),
        "{}",
        notice.data
    );
    let link = tests::portal::link_in(
        tests::portal::last_mail_to(&mails, "mallory@example.org"),
        "/portal/confirm-login?token=",
    );
    let mut mallory = Visitor::new(&s.base);
    assert_eq!(
        mallory
            .login("mallory@example.org", ADA_PASSWORD)
            .await
            .status,
        422
    );
    assert_eq!(
        mallory.login("ada@example.org", ADA_PASSWORD).await.status,
        303,
        "the login stays"
    );
    let form = mallory.get(&link).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("mallory@example.org"));
    let (csrf, token) = (form.field("csrf"), form.field("token"));
    let no_csrf = mallory
        .post(
            "/portal/confirm-login",
            &[("token", &token), ("password", ADA_PASSWORD)],
        )
        .await;
    assert_eq!(no_csrf.status, 403);
    let guess = mallory
        .post(
            "/portal/confirm-login",
            &[("csrf", &csrf), ("token", &token), ("password", "a guess")],
        )
        .await;
    assert_eq!(guess.status, 422, "the link alone confirms nothing");
    assert_eq!(account_events(s, "PatientAccountLoginChanged").await, 0);

    // The partner corrects the address: the earlier link stops working.
    change("ada.new@example.org").await;
    let mails = w.sink.wait_for(6).await;
    let used = Visitor::new(&s.base).get(&link).await;
    assert_eq!(used.status, 410, "a replaced change's link");
    let link = tests::portal::link_in(
        tests::portal::last_mail_to(&mails, "ada.new@example.org"),
        "/portal/confirm-login?token=",
    );
    let mut ada = Visitor::new(&s.base);
    let form = ada.get(&link).await;
    let done = ada
        .post(
            "/portal/confirm-login",
            &[
                ("csrf", &form.field("csrf")),
                ("token", &form.field("token")),
                ("password", ADA_PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("ada.new@example.org"));
    assert_eq!(
        ada.login("ada.new@example.org", ADA_PASSWORD).await.status,
        303
    );
    assert_eq!(ada.login("ada@example.org", ADA_PASSWORD).await.status, 422);
    assert_eq!(
        Visitor::new(&s.base).get(&link).await.status,
        410,
        "a confirmation works once"
    );
    assert_eq!(account_events(s, "LoginChangeRequested").await, 2);
    assert_eq!(account_events(s, "PatientAccountLoginChanged").await, 1);

    // An address another account uses moves no login.
    let bob_id = w.bob["patientID"].as_str().unwrap();
    let r = s
        .patch(
            &w.token,
            &format!("/v1/patients/{bob_id}"),
            None,
            r#"{"email":"ada.new@example.org"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["warnings"][0]["code"], "email_in_use");
    assert_eq!(account_events(s, "LoginChangeRequested").await, 2);
    w.stack.stop().await;
}

/// A partner corrects the address of a patient whose account waits for
/// activation (a typo): the invitation goes to the new address at once,
/// the link mailed to the previous one stops working whoever holds it,
/// and the patient activates with the new link and logs in with the new
/// address.
#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_follows_a_corrected_address() {
    let w = World::start().await;
    let s = &w.stack;
    let typo_link = w.link_of("bob@example.org");
    let before = w.sink.mails().len();
    let bob_path = format!("/v1/patients/{}", w.bob["patientID"].as_str().unwrap());
    let correct = || {
        s.patch(
            &w.token,
            &bob_path,
            None,
            r#"{"email":"bob.right@example.org"}"#,
        )
    };
    let r = correct().await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["warnings"].is_null(), "no warning: {v}");
    let mails = w.sink.wait_for(before + 1).await;
    assert_eq!(mails.len(), before + 1, "one new invitation");
    let link = tests::portal::activation_link(tests::portal::last_mail_to(
        &mails,
        "bob.right@example.org",
    ));
    assert_eq!(account_events(s, "InvitationRedirected").await, 1);

    let old = Visitor::new(&s.base).get(&typo_link).await;
    assert_eq!(old.status, 410, "the previous address's link: {}", old.body);
    assert!(old.body.contains("replaced"), "{}", old.body);
    let mut bob = Visitor::new(&s.base);
    let done = bob.activate(&link, ADA_PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        bob.login("bob.right@example.org", ADA_PASSWORD)
            .await
            .status,
        303
    );
    assert_eq!(
        bob.login("bob@example.org", ADA_PASSWORD).await.status,
        422,
        "the previous address is no login"
    );
    // The same address again changes nothing.
    assert_eq!(correct().await.status(), 200);
    assert_eq!(account_events(s, "InvitationRedirected").await, 1);
    w.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_failure_says_when_to_try_again_and_nothing_else() {
    let w = World::start().await;
    let mut ada = activate(&w, "ada@example.org", ADA_PASSWORD).await;
    assert_eq!(ada.get("/portal/results").await.status, 200);
    let db = w.stack.write.get().await.unwrap();
    // The sessions' table gone: the portal cannot tell who is signed in.
    db.batch_execute("ALTER TABLE portal_sessions RENAME TO portal_sessions_away")
        .await
        .unwrap();
    let failed = ada.get("/portal/results").await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    let retry: u64 = failed.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    for leak in ["portal_sessions", "relation", "SQL", "panicked", "error:"] {
        assert!(!failed.body.contains(leak), "{leak} in {}", failed.body);
    }
    db.batch_execute("ALTER TABLE portal_sessions_away RENAME TO portal_sessions")
        .await
        .unwrap();
    assert_eq!(
        ada.get("/portal/results").await.status,
        200,
        "the session holds"
    );
    w.stack.stop().await;
}
