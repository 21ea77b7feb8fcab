//! The event log is kept forever, also across broker restarts.
//!
//! Regression test for a defect `lis-faults` found: topics were created with
//! `cleanup.policy=delete` and `retention.ms=-1`, which tansu's maintenance
//! task (run as the broker starts and every ten minutes) read as "delete
//! every record", so a broker restart emptied every topic.

use std::collections::BTreeSet;
use std::time::Duration;

use lis::stack::Roles;
use platform::kafka::Topic;
use tests::{patient_body, test_config, PrivateBroker, Record, TestStack};

fn ids(records: &[Record]) -> BTreeSet<uuid::Uuid> {
    records.iter().map(|r| r.envelope.event_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_published_event_survives_a_broker_kill_and_restart() {
    let mut broker = PrivateBroker::start();
    let mut cfg = test_config();
    cfg.kafka_brokers = broker.address();
    let stack = TestStack::start_with(cfg, Roles::ALL).await;
    let (_, token) = stack.standard().await;
    for i in 0..5 {
        let r = stack
            .create_patient(&token, &patient_body(&format!("EXT-{i}")))
            .await;
        assert_eq!(r.status(), 201);
    }
    let patients = stack.wait_topic(Topic::Patients, 5).await;
    let reference = stack.read_topic(Topic::Reference).await;
    assert!(patients.len() >= 5, "five registrations published");
    assert!(!reference.is_empty(), "client, location and partner events");

    broker.kill();
    broker.restart();
    // The broker's maintenance runs as it starts; give it time to act.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (topic, before) in [(Topic::Patients, &patients), (Topic::Reference, &reference)] {
        let after = stack.read_topic(topic).await;
        assert!(
            ids(&after).is_superset(&ids(before)),
            "{topic:?}: {} of {} events left after the restart",
            ids(&after).intersection(&ids(before)).count(),
            before.len()
        );
    }

    // The relay keeps publishing to the restarted broker.
    let r = stack
        .create_patient(&token, &patient_body("EXT-after"))
        .await;
    assert_eq!(r.status(), 201);
    let after = stack.wait_topic(Topic::Patients, patients.len() + 1).await;
    assert_eq!(ids(&after).len(), ids(&patients).len() + 1);
    stack.stop().await;
}
