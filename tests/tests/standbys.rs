//! The mailer and the analytics publisher work alone, like the relay
//! (`tests/tests/relay.rs`): of several processes, the holder of each
//! role's lease works and the others stand by; after a `SIGSTOP` of the
//! one that works, another takes over within seconds, and the frozen one,
//! resumed, finds its leases taken and stands by.

use std::path::Path;
use std::time::{Duration, Instant};

use platform::kafka::Topic;
use serde_json::json;
use tests::{LisProcess, TestStack};

/// The process whose log says it took `lease` most lately, waiting for one.
async fn holder(procs: &[&LisProcess], lease: &str) -> usize {
    let took = |p: &LisProcess| {
        p.log()
            .lines()
            .filter(|l| l.contains("took the lease") && l.contains(lease))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts: Vec<usize> = procs.iter().map(|p| took(p)).collect();
        if let Some(i) = counts.iter().position(|n| *n > 0) {
            if counts.iter().filter(|n| **n > 0).count() == 1 {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "one holds {lease}: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many records the analytics topic holds.
async fn analytics_records(s: &TestStack) -> usize {
    let cfg = s.cfg.clone();
    tokio::task::spawn_blocking(move || {
        platform::kafka::read_from_start(&cfg, &[Topic::Analytics], Duration::from_secs(60))
    })
    .await
    .unwrap()
    .unwrap()
    .len()
}

/// How many invitations in `outbox` went to `to`.
fn invitations_to(outbox: &Path, to: &str) -> usize {
    std::fs::read_dir(outbox)
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .filter(|m| m.contains(&format!("To: {to}")))
                .count()
        })
        .unwrap_or(0)
}

/// Creates a patient with `email`; waits (at most 30 s) until its
/// invitation is in `outbox` and the analytics topic holds `events`
/// records; the time that took.
async fn create_and_wait(
    s: &TestStack,
    token: &str,
    outbox: &Path,
    email: &str,
    events: usize,
) -> Duration {
    let body = json!({"externalPatientID": email, "clientID": "C1", "locationID": "L1",
        "firstName": "Stand", "lastName": "By", "dateOfBirth": "1980-01-01", "sex": "unknown",
        "email": email});
    assert_eq!(s.create_patient(token, &body).await.status(), 201);
    let started = Instant::now();
    loop {
        let mailed = invitations_to(outbox, email) > 0;
        let copied = analytics_records(s).await >= events;
        if mailed && copied {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{email}: mailed {mailed}, analytics copies {copied}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_mailer_and_analytics_publisher_take_over_from_a_frozen_one() {
    let roles = lis::stack::Roles {
        mailer: false,
        analytics: false,
        ..lis::stack::Roles::ALL
    };
    let s = TestStack::start_with(tests::test_config(), roles).await;
    let (_, token) = s.standard().await;
    let outbox = std::env::temp_dir().join(format!("lis-standbys-{}", uuid::Uuid::new_v4()));
    let env = [
        ("LIS_LOG", "info"),
        ("LIS_MAIL_OUTBOX", outbox.to_str().unwrap()),
    ];
    // The first process takes both leases, then a second starts beside it.
    let frozen = s.spawn_process_with("mailer,analytics", &env).await;
    assert_eq!(holder(&[&frozen], "mailer").await, 0);
    assert_eq!(holder(&[&frozen], "analytics").await, 0);
    let standby = s.spawn_process_with("mailer,analytics", &env).await;
    // Each patient makes two events: its registration and its account's
    // invitation, both copied to the analytics topic.
    create_and_wait(&s, &token, &outbox, "first@example.org", 2).await;
    let standing_by = standby.log().matches("standing by").count();
    assert_eq!(standing_by, 2, "the second process waits for both leases");
    let (frozen, standby) = (&frozen, &standby);

    frozen.pause();
    let took = create_and_wait(&s, &token, &outbox, "second@example.org", 4).await;
    assert_eq!(holder(&[standby], "mailer").await, 0);
    assert_eq!(holder(&[standby], "analytics").await, 0);
    println!(
        "invitation mailed and events copied {:.1} s after the create, the working process frozen",
        took.as_secs_f64()
    );

    frozen.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while frozen.log().matches("lease was lost").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the resumed process notices both leases are gone: {}",
            frozen.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create_and_wait(&s, &token, &outbox, "third@example.org", 6).await;
    for email in [
        "first@example.org",
        "second@example.org",
        "third@example.org",
    ] {
        assert_eq!(
            invitations_to(&outbox, email),
            1,
            "one invitation to {email}"
        );
    }
    assert_eq!(analytics_records(&s).await, 6, "each event copied once");
    let _ = std::fs::remove_dir_all(&outbox);
    s.stop().await;
}
