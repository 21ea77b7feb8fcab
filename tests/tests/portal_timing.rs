//! A refused login takes as long for an unknown email as for a wrong
//! password: both check a password hash, so the answer's time does not tell
//! whether an account exists. Alone in its test binary, so that no sibling
//! test's Argon2 work shares the process's hashing slots while it times.

use std::time::{Duration, Instant};

use tests::portal::{Visitor, World};

const ADA_PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_email_is_refused_in_the_time_of_a_wrong_password() {
    let w = World::start().await;
    let mut v = Visitor::new(&w.stack.base);
    let done = v
        .activate(&w.link_of("ada@example.org"), ADA_PASSWORD)
        .await;
    assert_eq!(done.status, 303, "{}", done.body);

    // Each path's fastest of seven is its own cost (a wrong password also
    // commits its failure count: about a millisecond more).
    let mut timings = [vec![], vec![]];
    for _ in 0..7 {
        for (i, email) in ["nobody@example.org", "ada@example.org"].iter().enumerate() {
            let form = v.get("/portal/login").await;
            let csrf = form.field("csrf");
            let started = Instant::now();
            let refused = v
                .post(
                    "/portal/login",
                    &[("csrf", &csrf), ("email", email), ("password", "x")],
                )
                .await;
            timings[i].push(started.elapsed());
            assert_eq!(refused.status, 422, "{email}");
        }
        // Keep Ada below the lock: a right password resets the run.
        assert_eq!(v.login("ada@example.org", ADA_PASSWORD).await.status, 303);
    }
    let fastest = |t: &[Duration]| *t.iter().min().expect("timed");
    let (unknown_t, wrong_t) = (fastest(&timings[0]), fastest(&timings[1]));
    println!("login refusals, fastest: unknown email {unknown_t:?}, wrong password {wrong_t:?}");
    assert!(
        unknown_t * 2 >= wrong_t && wrong_t * 2 >= unknown_t,
        "an unknown email takes as long as a wrong password: {unknown_t:?} vs {wrong_t:?}"
    );
    w.stack.stop().await;
}
