//! The portal keeps its promises across a `kill -9` of the process that
//! serves it: sessions live in Postgres, so a patient stays signed in on the
//! restarted process; an activation cut off at any point either committed
//! (the link reads as used and the password works) or did not (the same
//! link still works), and never counts twice.

use std::time::Duration;

use tests::portal::{Visitor, World};

const PASSWORD: &str = "a long enough password";

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_activations_survive_a_kill_of_the_portal_process() {
    let w = World::start().await;
    let s = &w.stack;
    // At `info`, so that the check below reads what an operator's log holds.
    let limits = [("LIS_PORTAL_RATE_PER_MINUTE", "10000"), ("LIS_LOG", "info")];
    let mut portal = s.spawn_process_with("portal", &limits).await;

    // Ada activates on the portal process and stays signed in across a kill.
    let mut ada = Visitor::new(&portal.base);
    let done = ada.activate(&w.link_of("ada@example.org"), PASSWORD).await;
    assert_eq!(done.status, 303);
    let token = w.link_of("ada@example.org");
    let token = token.rsplit_once("token=").unwrap().1;
    let log = portal.log();
    for secret in [PASSWORD, token, "ada@example.org"] {
        assert!(
            !log.contains(secret),
            "the portal's log holds no password, token or email"
        );
    }
    assert!(!log.contains("argon2"), "nor a password hash");
    portal.kill9();
    let mut portal = s.spawn_process_with("portal", &limits).await;
    let mut ada_again = Visitor::new(&portal.base);
    ada_again.cookies = ada.cookies.clone();
    let r = ada_again.get("/portal/results").await;
    assert_eq!(r.status, 200, "the session outlives the process");
    assert!(r.body.contains("Hello, Ada"));

    // Bob's activation is cut off by a kill at some point of its work.
    let mut bob = Visitor::new(&portal.base);
    let form = bob.get(&w.link_of("bob@example.org")).await;
    let (csrf, token) = (form.field("csrf"), form.field("token"));
    let cookies = bob.cookies.clone();
    let base = portal.base.clone();
    let (c2, t2) = (csrf.clone(), token.clone());
    let attempt = tokio::spawn(async move {
        let cookie: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        reqwest::Client::new()
            .post(format!("{base}/portal/activate"))
            .header("cookie", cookie.join("; "))
            .form(&[
                ("csrf", &c2),
                ("token", &t2),
                ("password", &PASSWORD.into()),
                ("confirm", &PASSWORD.into()),
            ])
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let delay = rand::random::<u64>() % 150;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    portal.kill9();
    // The cut-off request gets no answer, or the one it got before the kill.
    let _ = tokio::time::timeout(Duration::from_secs(5), attempt).await;
    let portal = s.spawn_process_with("portal", &limits).await;
    let mut bob = Visitor::new(&portal.base);
    let link = bob.get(&w.link_of("bob@example.org")).await;
    match link.status {
        // Not committed: the same link still activates.
        200 => {
            let done = bob
                .post(
                    "/portal/activate",
                    &[
                        ("csrf", &link.field("csrf")),
                        ("token", &link.field("token")),
                        ("password", PASSWORD),
                        ("confirm", PASSWORD),
                    ],
                )
                .await;
            assert_eq!(done.status, 303, "killed after {delay} ms, then activated");
        }
        // Committed: the link is used and the password works.
        410 => {}
        other => panic!("killed after {delay} ms: the link answered {other}"),
    }
    assert_eq!(bob.login("bob@example.org", PASSWORD).await.status, 303);
    let activated: i64 = s
        .write
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'PatientAccountActivated'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(activated, 2, "Ada's and Bob's activations, once each");
    println!("the activation was cut off {delay} ms after it was sent");
    drop(portal);
    w.stack.stop().await;
}
