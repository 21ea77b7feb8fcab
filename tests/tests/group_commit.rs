//! Group commit: commands that arrive together are committed in one
//! transaction, and each is answered as if it had run alone: a refusal, a
//! duplicate or a lost race never fails another command of its batch, and
//! `Idempotency-Key`, uniqueness and `If-Match` keep their meaning.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use tests::{error_fields, patient_body, TestStack};

/// What one request of a wave asks for, and so what it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Refused (422 naming `dateOfBirth`): writes nothing.
    Invalid,
    /// One of several creates of the same `externalPatientID`: one 201,
    /// the others 409.
    SameExternalId,
    /// A create of its own: 201.
    Distinct,
    /// One of several sends of one request under one `Idempotency-Key`:
    /// the same answer each time, one patient.
    SameKey,
    /// One of several changes to one patient under `If-Match: "1"`: one
    /// 200, the others 412.
    SameVersion,
}

const KINDS: [Kind; 5] = [
    Kind::Invalid,
    Kind::SameExternalId,
    Kind::Distinct,
    Kind::SameKey,
    Kind::SameVersion,
];

#[tokio::test(flavor = "multi_thread")]
async fn commands_arriving_together_commit_together_each_on_its_own() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    let mut shared_transactions = 0;
    let mut waves = 0;
    while shared_transactions == 0 && waves < 20 {
        waves += 1;
        let target = tests::json_of(
            s.create_patient(&token, &patient_body(&format!("W{waves}-T")))
                .await,
            201,
        )
        .await["patientID"]
            .as_str()
            .unwrap()
            .to_string();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let kind = KINDS[i % KINDS.len()];
            let (http, base, token, target) = (
                s.http.clone(),
                s.base.clone(),
                token.clone(),
                target.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let request = match kind {
                    Kind::Invalid => {
                        let mut body = patient_body(&format!("W{waves}-I-{i}"));
                        body["dateOfBirth"] = json!("not-a-date");
                        http.post(format!("{base}/v1/patients")).json(&body)
                    }
                    Kind::SameExternalId => http
                        .post(format!("{base}/v1/patients"))
                        .json(&patient_body(&format!("W{waves}-X"))),
                    Kind::Distinct => http
                        .post(format!("{base}/v1/patients"))
                        .json(&patient_body(&format!("W{waves}-D-{i}"))),
                    Kind::SameKey => http
                        .post(format!("{base}/v1/patients"))
                        .header("Idempotency-Key", format!("wave-{waves}"))
                        .json(&patient_body(&format!("W{waves}-K"))),
                    Kind::SameVersion => http
                        .patch(format!("{base}/v1/patients/{target}"))
                        .header("If-Match", "\"1\"")
                        .header("Content-Type", "application/merge-patch+json")
                        .body(json!({"phone": format!("+1555{i:07}")}).to_string()),
                };
                let r = request.bearer_auth(token).send().await.unwrap();
                let status = r.status().as_u16();
                (kind, status, r.json::<Value>().await.unwrap())
            }));
        }
        let mut answers: HashMap<Kind, Vec<(u16, Value)>> = HashMap::new();
        for t in tasks {
            let (kind, status, body) = t.await.unwrap();
            answers.entry(kind).or_default().push((status, body));
        }
        for (status, body) in &answers[&Kind::Invalid] {
            assert_eq!(*status, 422, "{body}");
            assert_eq!(error_fields(body), vec!["dateOfBirth"], "{body}");
        }
        let statuses = |kind: Kind| -> Vec<u16> {
            let mut s: Vec<u16> = answers[&kind].iter().map(|(s, _)| *s).collect();
            s.sort_unstable();
            s
        };
        assert_eq!(
            statuses(Kind::SameExternalId),
            [vec![201], vec![409; 9]].concat(),
            "{:?}",
            answers[&Kind::SameExternalId]
        );
        assert!(statuses(Kind::Distinct).iter().all(|s| *s == 201));
        let same_key: BTreeSet<String> = answers[&Kind::SameKey]
            .iter()
            .map(|(status, body)| {
                assert!(*status == 201 || *status == 409, "{status} {body}");
                if *status == 409 {
                    // Sent while the first send still ran.
                    assert!(body["type"]
                        .as_str()
                        .unwrap()
                        .ends_with("request-in-progress"));
                    return String::new();
                }
                body["patientID"].as_str().unwrap().to_string()
            })
            .filter(|id| !id.is_empty())
            .collect();
        assert_eq!(same_key.len(), 1, "one key, one patient: {same_key:?}");
        assert_eq!(
            statuses(Kind::SameVersion),
            [vec![200], vec![412; 9]].concat(),
            "{:?}",
            answers[&Kind::SameVersion]
        );

        // Exactly the answered writes are stored: one registration per
        // patient answered 201 (the target, the distinct ones, the
        // duplicate's winner, the key's one) and one change of the target.
        let db = s.write.get().await.unwrap();
        let registered: i64 = db
            .query_one(
                "SELECT count(*) FROM events WHERE event_type = 'PatientRegistered' \
                 AND data->>'externalPatientID' LIKE $1",
                &[&format!("W{waves}-%")],
            )
            .await
            .unwrap()
            .get(0);
        let distinct = answers[&Kind::Distinct].len() as i64;
        assert_eq!(registered, 1 + distinct + 1 + 1);
        let target_events: i64 = db
            .query_one(
                "SELECT count(*) FROM events WHERE stream_id = $1::text::uuid",
                &[&target],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(target_events, 2, "the registration and one change");
        // Commands were committed together: transactions holding more
        // than one command (one command id) exist.
        shared_transactions = db
            .query_one(
                "SELECT count(*) FROM (SELECT txid FROM events GROUP BY txid \
                 HAVING count(DISTINCT command_id) > 1) t",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    assert!(
        shared_transactions > 0,
        "no two commands shared a transaction in {waves} waves of 50"
    );
    s.stop().await;
}
