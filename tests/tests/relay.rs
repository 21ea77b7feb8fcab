//! The relay publishes every committed event to Kafka exactly once, in
//! stream order, even when transactions commit out of order, some roll back,
//! and the relay restarts after losing its checkpoint.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use command_handler::store::{self, CommandMeta, Pending};
use domain::access::Actor;
use domain::patient::{PatientEvent, PatientRegistered, Sex};
use domain::reference::{ClientEvent, ClientRegistered};
use lis::stack::Roles;
use platform::kafka::Topic;
use rand::Rng;
use tests::{test_config, Record, TestStack};
use uuid::Uuid;

const RELAY_ONLY: Roles = Roles {
    commands: false,
    queries: false,
    relay: true,
    projector: false,
    mailer: false,
    analytics: false,
    portal: false,
};

fn event(n: u64) -> ClientEvent {
    ClientEvent::ClientRegistered(ClientRegistered {
        client_id: format!("C{n}"),
        name: format!("Client {n}"),
    })
}

/// A patient event, so that streams spread over the partitions.
fn patient_event(stream: Uuid) -> PatientEvent {
    PatientEvent::PatientRegistered(PatientRegistered {
        patient_id: stream,
        client_id: "C1".into(),
        location_id: "L1".into(),
        external_patient_id: None,
        first_name: "Test".into(),
        last_name: "Patient".into(),
        date_of_birth: chrono::NaiveDate::from_ymd_opt(1990, 1, 1).unwrap(),
        sex: Sex::Unknown,
        email: None,
        phone: None,
        address: None,
    })
}

fn meta() -> CommandMeta {
    CommandMeta::new(
        Actor::System {
            id: "relay-test".into(),
        },
        None,
    )
}

/// A connection of its own (a pool of one), as the command handler has.
async fn connect(s: &TestStack) -> deadpool_postgres::Object {
    own_connection(&s.cfg.database_url, &s.cfg.write_schema).await
}

async fn own_connection(url: &str, schema: &str) -> deadpool_postgres::Object {
    platform::db::pool(url, schema, 1)
        .expect("pool")
        .get()
        .await
        .expect("connect")
}

/// Appends `e` in a transaction of its own and commits it.
async fn commit(db: &mut deadpool_postgres::Object, e: &Pending) {
    let tx = db.transaction().await.unwrap();
    store::append(&tx, &meta(), std::slice::from_ref(e))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Every record once, and each stream's versions in order 1, 2, 3, ...
fn assert_exactly_once_in_order(records: &[Record], committed: &HashSet<Uuid>) {
    let ids: Vec<Uuid> = records.iter().map(|r| r.envelope.event_id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event is published twice");
    assert_eq!(
        &unique, committed,
        "exactly the committed events are published"
    );
    let mut by_stream: HashMap<Uuid, Vec<i64>> = HashMap::new();
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in sorted {
        by_stream
            .entry(r.envelope.stream_id)
            .or_default()
            .push(r.envelope.version);
    }
    for (stream, versions) in by_stream {
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected, "stream {stream} is in order");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_commit_is_never_skipped() {
    let s = TestStack::start_with(test_config(), RELAY_ONLY).await;
    let mut a = connect(&s).await;
    let mut b = connect(&s).await;
    let (sa, sb) = (Uuid::new_v4(), Uuid::new_v4());
    let pa = Pending::new(sa, 1, &event(1));
    let pb = Pending::new(sb, 1, &event(2));

    // A takes the lower position, B the higher; B commits first.
    let ta = a.transaction().await.unwrap();
    store::append(&ta, &meta(), std::slice::from_ref(&pa))
        .await
        .unwrap();
    let tb = b.transaction().await.unwrap();
    store::append(&tb, &meta(), std::slice::from_ref(&pb))
        .await
        .unwrap();
    tb.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let early = s.read_topic(Topic::Reference).await;
    assert!(
        early.is_empty(),
        "nothing is published past a transaction that may still commit an earlier event"
    );
    ta.commit().await.unwrap();

    let records = s.wait_topic(Topic::Reference, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records_after = s.read_topic(Topic::Reference).await;
    assert_eq!(records.len(), records_after.len());
    assert_exactly_once_in_order(&records_after, &[pa.event_id, pb.event_id].into());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_out_of_order_commits_and_rollbacks_reach_kafka_exactly_once() {
    let s = TestStack::start_with(test_config(), RELAY_ONLY).await;
    let shared = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..40u64 {
        let (url, schema) = (s.cfg.database_url.clone(), s.cfg.write_schema.clone());
        tasks.push(tokio::spawn(async move {
            let mut db = own_connection(&url, &schema).await;
            let mut committed = Vec::new();
            // Own stream: 1-3 events in one transaction, committed or not.
            let (pause, n, abort) = {
                let mut rng = rand::thread_rng();
                (
                    rng.gen_range(0..60),
                    rng.gen_range(1..=3),
                    rng.gen_ratio(1, 5),
                )
            };
            let stream = Uuid::new_v4();
            let events: Vec<Pending> = (1..=n)
                .map(|v| Pending::new(stream, v, &patient_event(stream)))
                .collect();
            let tx = db.transaction().await.unwrap();
            store::append(&tx, &meta(), &events).await.unwrap();
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if abort {
                tx.rollback().await.unwrap();
            } else {
                tx.commit().await.unwrap();
                committed.extend(events.iter().map(|e| e.event_id));
            }
            // A shared stream: each task appends the next version, retrying
            // when another task won the race.
            loop {
                let tx = db.transaction().await.unwrap();
                let v: i64 = tx
                    .query_one(
                        "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1",
                        &[&shared],
                    )
                    .await
                    .unwrap()
                    .get(0);
                let e = Pending::new(shared, v + 1, &patient_event(shared));
                match store::append(&tx, &meta(), std::slice::from_ref(&e)).await {
                    Ok(()) => {
                        tokio::time::sleep(Duration::from_millis(pause / 4)).await;
                        tx.commit().await.unwrap();
                        committed.push(e.event_id);
                        break;
                    }
                    Err(store::AppendError::Conflict) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
            committed
        }));
    }
    let mut committed = HashSet::new();
    for t in tasks {
        committed.extend(t.await.unwrap());
    }
    let records = s.wait_topic(Topic::Patients, committed.len()).await;
    assert_exactly_once_in_order(&records, &committed);

    // A relay that lost its progress (a crash between the broker's ack and
    // recording the checkpoint and partition offsets) reads what the
    // partitions hold and publishes nothing twice.
    let cfg = s.cfg.clone();
    s.stop().await;
    let mut db = own_connection(&cfg.database_url, &cfg.write_schema).await;
    db.batch_execute("DELETE FROM relay_checkpoint; DELETE FROM relay_partitions;")
        .await
        .unwrap();
    let late = Pending::new(Uuid::new_v4(), 1, &patient_event(Uuid::new_v4()));
    commit(&mut db, &late).await;
    committed.insert(late.event_id);
    let s = TestStack::start_with(cfg, RELAY_ONLY).await;
    s.wait_topic(Topic::Patients, committed.len()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let records = s.read_topic(Topic::Patients).await;
    assert_exactly_once_in_order(&records, &committed);
    s.stop().await;
}

/// Transaction ids cross a power of ten in every cluster's life (9,999 →
/// 10,000, …). A batch that spans one must still go out in commit order:
/// sorting the ids as text put "100" before "99" and published a stream's
/// later versions before its first (found by the fault suite). The ids are
/// rewritten to small values here because the shared cluster's next power of
/// ten is far away; every id stays below the oldest running transaction, as
/// committed ids are.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_spanning_a_power_of_ten_in_transaction_ids_keeps_commit_order() {
    let cfg = test_config();
    // Schemas and topics only: nothing publishes while the events are made.
    TestStack::start_with(cfg.clone(), Roles::NONE)
        .await
        .stop()
        .await;
    let mut db = own_connection(&cfg.database_url, &cfg.write_schema).await;
    let streams = [Uuid::new_v4(), Uuid::new_v4()];
    let mut committed = HashSet::new();
    for version in 1..=3 {
        for stream in streams {
            let e = Pending::new(stream, version, &patient_event(stream));
            commit(&mut db, &e).await;
            committed.insert(e.event_id);
        }
    }
    // Commit order 98, 99, 100, 101, 1000, 1001: as text, "100" < "1000" <
    // "1001" < "101" < "98" < "99".
    let updated = db
        .execute(
            "UPDATE events SET txid = n.txid::text::xid8 FROM \
             (SELECT position, (ARRAY[98, 99, 100, 101, 1000, 1001])[row_number() OVER (ORDER BY position)] AS txid \
              FROM events) n WHERE events.position = n.position",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(updated, 6, "only this test's events are in its database");
    let s = TestStack::start_with(cfg, RELAY_ONLY).await;
    let records = s.wait_topic(Topic::Patients, committed.len()).await;
    assert_exactly_once_in_order(&records, &committed);
    s.stop().await;
}

/// Which of `relays` logged that it became the active relay most lately
/// (its log holds one line more than its "standing by"s), waiting for one.
async fn active(relays: &[&tests::LisProcess]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let actives: Vec<usize> = relays
            .iter()
            .map(|r| r.log().matches("relay is active").count())
            .collect();
        let lost: Vec<usize> = relays
            .iter()
            .map(|r| r.log().matches("lease was lost").count())
            .collect();
        let now: Vec<usize> = (0..relays.len())
            .filter(|&i| actives[i] > lost[i])
            .collect();
        if let [one] = now[..] {
            return one;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one relay is active: {actives:?} active, {lost:?} lost"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends `n` patient events over `streams`, each in a transaction of its
/// own; records their ids.
async fn write_events(
    db: &mut deadpool_postgres::Object,
    streams: &mut HashMap<Uuid, i64>,
    committed: &mut HashSet<Uuid>,
    n: usize,
) {
    let ids: Vec<Uuid> = streams.keys().copied().collect();
    for i in 0..n {
        let stream = ids[i % ids.len()];
        let version = streams[&stream] + 1;
        streams.insert(stream, version);
        let e = Pending::new(stream, version, &patient_event(stream));
        committed.insert(e.event_id);
        commit(db, &e).await;
    }
}

/// Waits until every committed event is on the patient topic; the time it
/// took.
async fn published(s: &TestStack, committed: &HashSet<Uuid>) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let on_kafka: HashSet<Uuid> = s
            .read_topic(Topic::Patients)
            .await
            .iter()
            .map(|r| r.envelope.event_id)
            .collect();
        if committed.is_subset(&on_kafka) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {} events published after 30 s",
            committed.intersection(&on_kafka).count(),
            committed.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Several relays run; the holder of the lease publishes, the others stand
/// by. A standby takes over within seconds of a `kill -9` of the active
/// relay and of a `SIGSTOP`; the frozen one, resumed, finds its lease taken
/// and stands by. Every event reaches Kafka once at least, each stream's
/// first copies in order, repeats only as exact copies, and the store's
/// hash chain is one chain that `lis verify` accepts.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_relay_takes_over_and_a_frozen_one_is_fenced() {
    let s = TestStack::start_with(test_config(), Roles::NONE).await;
    let info = [("LIS_LOG", "info")];
    let mut relays = vec![
        s.spawn_process_with("relay", &info).await,
        s.spawn_process_with("relay", &info).await,
    ];
    let mut db = connect(&s).await;
    let mut streams: HashMap<Uuid, i64> = (0..8).map(|_| (Uuid::new_v4(), 0)).collect();
    let mut committed = HashSet::new();
    write_events(&mut db, &mut streams, &mut committed, 20).await;
    published(&s, &committed).await;
    let first = active(&relays.iter().collect::<Vec<_>>()).await;

    // kill -9 of the active relay.
    relays[first].kill9();
    write_events(&mut db, &mut streams, &mut committed, 20).await;
    let after_kill = published(&s, &committed).await;
    let second = 1 - first;
    assert_eq!(active(&[&relays[second]]).await, 0);

    // SIGSTOP of the active relay, with a fresh standby beside it.
    relays.push(s.spawn_process_with("relay", &info).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    relays[second].pause();
    write_events(&mut db, &mut streams, &mut committed, 20).await;
    let after_stop = published(&s, &committed).await;
    assert_eq!(active(&[&relays[2]]).await, 0);

    // The frozen relay resumes: its lease is gone, it writes nothing.
    relays[second].resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !relays[second].log().contains("lease was lost") {
        assert!(
            std::time::Instant::now() < deadline,
            "the resumed relay notices it lost the lease: {}",
            relays[second].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    write_events(&mut db, &mut streams, &mut committed, 20).await;
    published(&s, &committed).await;
    assert_eq!(active(&[&relays[second], &relays[2]]).await, 1);
    println!(
        "all published {:.1} s after a kill -9, {:.1} s after a SIGSTOP of the active relay",
        after_kill.as_secs_f64(),
        after_stop.as_secs_f64()
    );

    let mut records = s.read_topic(Topic::Patients).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut first_copies: HashMap<Uuid, &Record> = HashMap::new();
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    for r in &records {
        if let Some(earlier) = first_copies.get(&r.envelope.event_id) {
            assert_eq!(earlier.envelope, r.envelope, "a repeat is an exact copy");
            continue;
        }
        let prev = last.insert(r.envelope.stream_id, r.envelope.version);
        assert_eq!(
            prev.unwrap_or(0) + 1,
            r.envelope.version,
            "first copies in stream order"
        );
        first_copies.insert(r.envelope.event_id, r);
    }
    assert_eq!(
        first_copies.keys().copied().collect::<HashSet<_>>(),
        committed
    );
    let key = platform::chain::ChainKey::load(&s.cfg.chain_key_file).unwrap();
    let report = lis::verify::verify(&s.cfg, &key.public(), false)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    drop(relays);
    s.stop().await;
}
