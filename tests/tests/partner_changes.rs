//! Access checks read each process's copy of the partners' access, with no
//! database round trip, and a change to a partner (`lis admin`) still holds
//! for the very next request on every process: the change waits until each
//! process's copy has been read again since it committed, or has lapsed.

use std::time::{Duration, Instant};

use command_handler::admin;
use domain::access::{parse_permissions, IdSet};
use tests::{header, json_of, patient_body, LisProcess, TestStack, SIX};

/// The access checks a process has answered from its copy and from the
/// database, from its `/metrics`.
async fn checks(s: &TestStack, base: &str) -> (u64, u64) {
    let text = s
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let count = |source: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("lis_access_checks_total{{source=\"{source}\"}} "))
            })
            .map_or(0, |v| v.trim().parse().expect("a count"))
    };
    (count("memory"), count("database"))
}

async fn read(s: &TestStack, base: &str, token: &str, id: &str) -> u16 {
    s.http
        .get(format!("{base}/v1/patients/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("read")
        .status()
        .as_u16()
}

/// The answers the in-test stack and the other process give the same read.
async fn both(s: &TestStack, other: &LisProcess, token: &str, id: &str) -> [u16; 2] {
    [
        read(s, &s.base, token, id).await,
        read(s, &other.base, token, id).await,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_change_holds_for_the_next_request_on_every_process() {
    let s = TestStack::start().await;
    s.standard().await;
    let p = s.partner(SIX, "C1", "*").await;
    let token = s.token(&p).await;
    let created = s.create_patient(&token, &patient_body("MRN-ACCESS")).await;
    let ct = header(&created, "consistency-token");
    let id = json_of(created, 201).await["patientID"]
        .as_str()
        .expect("patientID")
        .to_string();
    let path = format!("/v1/patients/{id}");
    assert_eq!(s.get_consistent(&token, &path, &ct).await.status(), 200);
    let other = s.spawn_process("command-handler,query-api").await;

    // Once the other process holds its copy, its checks read no database.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = checks(&s, &other.base).await;
        assert_eq!(read(&s, &other.base, &token, &id).await, 200);
        if checks(&s, &other.base).await.0 > before.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the copy never served a check");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = checks(&s, &other.base).await;
    for _ in 0..20 {
        assert_eq!(read(&s, &other.base, &token, &id).await, 200);
    }
    let after = checks(&s, &other.base).await;
    assert_eq!(after.1, before.1, "no check read the database");
    assert_eq!(after.0, before.0 + 20, "every check read the copy");

    let change = |permissions: &str, clients: &str| {
        let (permissions, clients) = (permissions.to_string(), clients.to_string());
        let write = s.write.clone();
        async move {
            admin::update_partner(
                &write,
                &TestStack::operator(),
                p.id,
                Some(parse_permissions(&permissions).expect("permissions")),
                Some(IdSet::parse(&clients).expect("clients")),
                None,
            )
            .await
            .expect("update partner");
        }
    };

    // Each change holds for the next request, on both processes.
    change(SIX, "C2").await;
    assert_eq!(
        both(&s, &other, &token, &id).await,
        [404, 404],
        "scope narrowed"
    );
    change("patients:create", "C1").await;
    assert_eq!(
        both(&s, &other, &token, &id).await,
        [403, 403],
        "permission taken"
    );
    change(SIX, "C1").await;
    assert_eq!(
        both(&s, &other, &token, &id).await,
        [200, 200],
        "access given back"
    );
    let rotated = admin::rotate_secret(&s.write, &TestStack::operator(), p.id)
        .await
        .expect("rotate");
    assert_eq!(
        both(&s, &other, &token, &id).await,
        [401, 401],
        "secret rotated"
    );
    let token = s
        .token(&tests::TestPartner {
            id: p.id,
            client_id: p.client_id.clone(),
            secret: rotated.client_secret,
        })
        .await;
    assert_eq!(
        both(&s, &other, &token, &id).await,
        [200, 200],
        "new secret"
    );

    // A frozen process cannot read the change: disabling waits until its
    // copy's lease has run out (at least the lease less one refresh after it
    // froze), and once thawed it does not answer from the lapsed copy.
    other.pause();
    let frozen = Instant::now();
    admin::disable_partner(&s.write, &TestStack::operator(), p.id)
        .await
        .expect("disable");
    let waited = frozen.elapsed();
    other.resume();
    assert_eq!(both(&s, &other, &token, &id).await, [401, 401], "disabled");
    assert!(
        waited >= Duration::from_millis(2_000),
        "disabling returned {waited:?} after the other process froze, before its copy's lease ran out"
    );
    assert!(
        waited < Duration::from_secs(10),
        "disabling waited {waited:?}"
    );
    s.stop().await;
}

/// A change made to `partners` without `lis admin` (an operator with
/// `psql`) is not waited for, but it still wakes every copy: the trigger on
/// `partners` notifies this schema's holders, and the next checks refuse.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_made_outside_lis_admin_wakes_every_copy() {
    let s = TestStack::start().await;
    s.standard().await;
    let p = s.partner(SIX, "C1", "*").await;
    let token = s.token(&p).await;
    let created = s.create_patient(&token, &patient_body("MRN-PSQL")).await;
    let ct = header(&created, "consistency-token");
    let id = json_of(created, 201).await["patientID"]
        .as_str()
        .expect("patientID")
        .to_string();
    let path = format!("/v1/patients/{id}");
    assert_eq!(s.get_consistent(&token, &path, &ct).await.status(), 200);

    let (listener, mut conn) = tokio_postgres::connect(&s.cfg.database_url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    let (heard, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = heard.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener
        .batch_execute("LISTEN partners_changed")
        .await
        .unwrap();
    s.write
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE partners SET disabled = true WHERE partner_id = $1",
            &[&p.id],
        )
        .await
        .unwrap();
    let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the listener is running");
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("partners_changed", s.cfg.write_schema.as_str())
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while read(&s, &s.base, &token, &id).await != 401 {
        assert!(
            Instant::now() < deadline,
            "the copy kept a disabled partner"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}
