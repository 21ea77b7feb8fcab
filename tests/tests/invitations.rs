//! A valid email opens an account and mails a one-time activation link over
//! a real SMTP conversation; no account, no mail.

use serde_json::{json, Value};
use tests::smtp::SmtpSink;
use tests::{patient_body, test_config, TestStack};

/// The test configuration with mail going to `sink` and links to
/// `https://lis.example.test`.
fn mailing_config(sink: &SmtpSink) -> platform::config::Config {
    let mut cfg = test_config();
    cfg.smtp_url = Some(sink.url.clone());
    cfg.public_url = "https://lis.example.test".into();
    cfg
}

/// The token of the activation link in a mail's body.
fn link_token(body: &str) -> String {
    // The body may be quoted-printable: undo soft breaks and `=3D`.
    let data = body.replace("=\r\n", "").replace("=3D", "=");
    let link_start = data
        .find("https://lis.example.test/portal/activate?token=")
        .expect("an activation link");
    data[link_start..]
        .split_once("token=")
        .unwrap()
        .1
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// Waits until the mail of the link whose hash is `hash` is marked sent:
/// the mailer marks it once the SMTP server has taken it, which may be a
/// moment after the sink shows the mail.
async fn wait_marked_sent(db: &deadpool_postgres::Object, hash: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sent: bool = db
            .query_opt(
                "SELECT sent_at IS NOT NULL FROM activation_tokens WHERE token_hash = $1",
                &[&hash],
            )
            .await
            .unwrap()
            .expect("the token's hash is stored")
            .get(0);
        if sent {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the invitation is marked sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invitations_are_mailed_once_with_a_stored_hash_only() {
    let sink = SmtpSink::start().await;
    let cfg = mailing_config(&sink);
    let s = TestStack::start_with(cfg.clone(), lis::stack::Roles::ALL).await;
    let (_, token) = s.standard().await;

    let mut ada = patient_body("MRN-MAIL-1");
    ada["email"] = json!("ada@example.org");
    assert_eq!(s.create_patient(&token, &ada).await.status(), 201);
    let mut bad = patient_body("MRN-MAIL-2");
    bad["email"] = json!("not an email");
    assert_eq!(s.create_patient(&token, &bad).await.status(), 201);
    let mut taken = patient_body("MRN-MAIL-3");
    taken["email"] = json!("ada@example.org");
    assert_eq!(s.create_patient(&token, &taken).await.status(), 201);
    // A later first email opens the account then.
    let r = s.create_patient(&token, &patient_body("MRN-MAIL-4")).await;
    let id = r.json::<Value>().await.unwrap()["patientID"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .patch(
            &token,
            &format!("/v1/patients/{id}"),
            None,
            r#"{"email":"grace@example.org"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);

    let mails = sink.wait_for(2).await;
    assert_eq!(mails.len(), 2, "one invitation per account: {mails:?}");
    let mut recipients: Vec<&str> = mails.iter().map(|m| m.to[0].as_str()).collect();
    recipients.sort();
    assert_eq!(recipients, ["ada@example.org", "grace@example.org"]);

    let db = s.write.get().await.unwrap();
    for mail in &mails {
        let token = link_token(&mail.data);
        assert!(token.len() >= 40, "a long random token");
        wait_marked_sent(&db, &command_handler::mailer::token_hash(&token)).await;
        let plain: i64 = db
            .query_one(
                "SELECT count(*) FROM activation_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'",
                &[&token],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(plain, 0, "the token itself is not stored");
        let in_events: i64 = db
            .query_one(
                "SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'",
                &[&token],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(in_events, 0, "the token is in no event");
    }

    // A restarted mailer does not send again.
    s.stop().await;
    let s = TestStack::start_with(cfg, lis::stack::Roles::ALL).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(sink.mails().len(), 2, "no invitation is sent twice");
    s.stop().await;
}

/// A backlog of invitations (a bulk import's, or what piled up while no
/// mailer ran) is mailed in batches: every invitation once, with two
/// commits per batch instead of one or three per event.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_invitations_is_mailed_once_each_in_batches() {
    const PATIENTS: usize = 120;
    let sink = SmtpSink::start().await;
    let cfg = mailing_config(&sink);
    let without_mailer = lis::stack::Roles {
        mailer: false,
        ..lis::stack::Roles::ALL
    };
    let s = TestStack::start_with(cfg.clone(), without_mailer).await;
    let (_, token) = s.standard().await;
    let creates = (0..PATIENTS).map(|i| {
        let (s, token) = (&s, &token);
        async move {
            let mut body = patient_body(&format!("MRN-BACKLOG-{i}"));
            body["email"] = json!(format!("backlog-{i}@example.org"));
            s.create_patient(token, &body).await.status()
        }
    });
    for status in futures::future::join_all(creates).await {
        assert_eq!(status, 201);
    }
    // Registrations and invitations, all published before the mailer starts.
    s.wait_topic(platform::kafka::Topic::Patients, 2 * PATIENTS)
        .await;
    assert!(sink.mails().is_empty(), "no mailer ran yet");

    let batches_before = platform::metrics::MAILER_BATCH.get_sample_count();
    let mailer = TestStack::start_with(
        cfg,
        lis::stack::Roles {
            mailer: true,
            ..lis::stack::Roles::NONE
        },
    )
    .await;
    let mails = sink.wait_for(PATIENTS).await;
    let mut recipients: Vec<String> = mails.iter().map(|m| m.to[0].clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(mails.len(), PATIENTS, "one mail per invitation");
    assert_eq!(recipients.len(), PATIENTS, "every invited patient got one");
    // 240 events; the other test of this file runs a mailer at the same
    // time (a dozen events), which the metric counts too.
    let batches = platform::metrics::MAILER_BATCH.get_sample_count() - batches_before;
    assert!(
        batches <= 60,
        "the backlog's events are handled in batches, not one by one: {batches} batches"
    );
    mailer.stop().await;
    s.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sink.mails().len(), PATIENTS, "nothing was mailed twice");
}

/// A mailer stopped after sending a batch's mails but before marking them
/// sent handles the batch again. A link that was used meanwhile (the
/// patient activated from the first mail) stays what it is, a used link:
/// no new link replaces it and no second mail goes out (found by the fault
/// suite, killing the mailer and the broker together).
#[tokio::test(flavor = "multi_thread")]
async fn a_link_used_before_its_mail_was_marked_sent_is_not_replaced() {
    let sink = SmtpSink::start().await;
    let cfg = mailing_config(&sink);
    let s = TestStack::start_with(cfg.clone(), lis::stack::Roles::ALL).await;
    let (_, token) = s.standard().await;
    let mut body = patient_body("MRN-RESEND-1");
    body["email"] = json!("resend@example.org");
    assert_eq!(s.create_patient(&token, &body).await.status(), 201);
    let mails = sink.wait_for(1).await;
    let link = link_token(&mails[0].data);
    let hash = command_handler::mailer::token_hash(&link);
    let db = s.write.get().await.unwrap();
    wait_marked_sent(&db, &hash).await;
    s.stop().await;

    // As if the mailer had died between the send and its mark, and the
    // patient had activated from the mail meanwhile; the mailer reads its
    // topic again from the start.
    let changed = db
        .execute(
            "UPDATE activation_tokens SET sent_at = NULL, used_at = now() WHERE token_hash = $1",
            &[&hash],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    db.execute(
        "DELETE FROM reactor_offsets WHERE reactor = 'invitation-mailer'",
        &[],
    )
    .await
    .unwrap();
    drop(db);
    let s = TestStack::start_with(cfg, lis::stack::Roles::ALL).await;
    let db = s.write.get().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // One row per partition it has handled.
    while db
        .query(
            "SELECT 1 FROM reactor_offsets WHERE reactor = 'invitation-mailer'",
            &[],
        )
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the mailer handles its topic again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let used: Option<bool> = db
        .query_opt(
            "SELECT used_at IS NOT NULL FROM activation_tokens WHERE token_hash = $1",
            &[&hash],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    assert_eq!(
        used,
        Some(true),
        "the used link is still the account's, used"
    );
    assert_eq!(sink.mails().len(), 1, "no second mail replaces a used link");
    s.stop().await;
}
