//! Duplicate prevention under concurrency: many creates of one
//! (clientID, externalPatientID), from two partners through two separate
//! command-handler processes, give exactly one patient.

use platform::kafka::Topic;
use serde_json::Value;
use tests::{patient_body, TestStack, SIX};

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_creates_make_one_patient() {
    let s = TestStack::start().await;
    let (_, t1) = s.standard().await;
    let p2 = s.partner(SIX, "C1", "*").await;
    let t2 = s.token(&p2).await;
    let a = s.spawn_process("command-handler").await;
    let b = s.spawn_process("command-handler").await;

    let mut tasks = Vec::new();
    for i in 0..60 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let token = if i % 3 == 0 { t2.clone() } else { t1.clone() };
        let http = s.http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/patients"))
                .bearer_auth(token)
                .json(&patient_body("MRN-RACE"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => created.push(body["patientID"].as_str().unwrap().to_string()),
            409 => {
                assert!(body["type"]
                    .as_str()
                    .unwrap()
                    .ends_with("duplicate-patient"));
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create succeeds");
    assert_eq!(conflicts, 59);

    let registered = s.event_count(None).await;
    let records = s.wait_topic(Topic::Patients, 1).await;
    let registrations: Vec<_> = records
        .iter()
        .filter(|r| r.envelope.event_type == "PatientRegistered")
        .collect();
    assert_eq!(registrations.len(), 1, "one registration event on Kafka");
    assert_eq!(registrations[0].envelope.stream_id.to_string(), created[0]);
    assert!(registered > 0);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list: Value = s
            .get(&t1, "/v1/patients?externalPatientID=MRN-RACE")
            .await
            .json()
            .await
            .unwrap();
        let n = list["items"].as_array().unwrap().len();
        if n == 1 {
            assert_eq!(list["items"][0]["patientID"], created[0].as_str());
            break;
        }
        assert!(
            n == 0 && std::time::Instant::now() < deadline,
            "{n} patients in the read model"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop((a, b));
    s.stop().await;
}
