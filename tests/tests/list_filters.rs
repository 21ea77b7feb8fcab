//! Every list filter of `GET /v1/patients` and `GET /v1/orders`, alone and
//! combined, within a caller's scope and across pages, and the same filters
//! as a `POST …/search` body (the contract: "the same filters as a JSON
//! body"): each statement names only the filters a request gives, so each
//! combination is its own query.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tests::{patient_body, TestStack};

/// The `key` field of every item of every page of `path` (followed by its
/// cursors, `limit` at a time).
async fn all_pages(s: &TestStack, token: &str, path: &str, key: &str, limit: u32) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut url = format!("{path}{sep}limit={limit}");
    loop {
        let r = s.get(token, &url).await;
        assert_eq!(r.status(), 200, "{url}");
        let page: Value = r.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            out.push(item[key].as_str().unwrap_or("-").to_string());
        }
        match page["nextCursor"].as_str() {
            Some(c) => url = format!("{path}{sep}limit={limit}&cursor={c}"),
            None => return out,
        }
    }
}

/// The same as [`all_pages`] through `POST {path}/search`, the filters of
/// `query` (`?a=1&b=2`) as the JSON body.
async fn all_search_pages(
    s: &TestStack,
    token: &str,
    path: &str,
    query: &str,
    key: &str,
    limit: u32,
) -> Vec<String> {
    let mut body = json!({ "limit": limit });
    for pair in query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap();
        body[name] = json!(value.replace("%2B", "+"));
    }
    let mut out = Vec::new();
    loop {
        let r = s
            .http
            .post(format!("{}{path}/search", s.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "search {body}");
        let page: Value = r.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            out.push(item[key].as_str().unwrap_or("-").to_string());
        }
        match page["nextCursor"].as_str() {
            Some(c) => body["cursor"] = json!(c),
            None => return out,
        }
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Each query of `cases` (appended to `path`, and as the body of its search)
/// lists exactly its expected `key`s, once each, paged `limit` at a time.
async fn expect_lists(
    s: &TestStack,
    token: &str,
    path: &str,
    key: &str,
    cases: &[(String, &[&str])],
    limit: u32,
) {
    for (query, expected) in cases {
        let listed = all_pages(s, token, &format!("{path}{query}"), key, limit).await;
        let searched = all_search_pages(s, token, path, query, key, limit).await;
        for (how, got) in [("GET", listed), ("search", searched)] {
            assert_eq!(
                got.len(),
                expected.len(),
                "{how} {query} limit {limit}: {got:?}"
            );
            assert_eq!(
                got.iter().cloned().collect::<BTreeSet<_>>(),
                set(expected),
                "{how} {query} limit {limit}"
            );
        }
    }
}

/// Waits until `path` lists `n` items (the projector is asynchronous).
async fn wait_for(s: &TestStack, token: &str, path: &str, key: &str, n: usize) {
    for _ in 0..100 {
        if all_pages(s, token, path, key, 500).await.len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never listed {n} items");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_list_filter_alone_and_combined_within_scope() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    command_handler::admin::seed_catalog(&s.write, &TestStack::operator())
        .await
        .unwrap();

    // Patients: (external id, client, location, last name, date of birth).
    let people = [
        ("F-A", "C1", "L1", "Lovelace", "1990-12-10"),
        ("F-B", "C1", "L2", "Byron", "1950-01-01"),
        ("F-C", "C2", "L3", "Lovelace", "1950-01-01"),
        ("F-D", "C1", "L1", "Byron", "1990-12-10"),
    ];
    let mut ids = Vec::new();
    for (ext, client, location, last, dob) in people {
        let mut body = patient_body(ext);
        body["clientID"] = json!(client);
        body["locationID"] = json!(location);
        body["lastName"] = json!(last);
        body["dateOfBirth"] = json!(dob);
        let r = s.create_patient(&token, &body).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        ids.push(v["patientID"].as_str().unwrap().to_string());
    }
    wait_for(&s, &token, "/v1/patients", "externalPatientID", 4).await;
    // A later change to F-B, for updatedSince.
    let r = s
        .patch(
            &token,
            &format!("/v1/patients/{}", ids[1]),
            Some("\"1\""),
            r#"{"firstName":"Annabella"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    let since = changed["updatedAt"].as_str().unwrap().to_string();
    let since_q = since.replace('+', "%2B");
    for _ in 0..100 {
        let v: Value = s
            .get(&token, &format!("/v1/patients/{}", ids[1]))
            .await
            .json()
            .await
            .unwrap();
        if v["version"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cases: Vec<(String, &[&str])> = vec![
        ("".into(), &["F-A", "F-B", "F-C", "F-D"]),
        ("?lastName=Lovelace".into(), &["F-A", "F-C"]),
        ("?dateOfBirth=1990-12-10".into(), &["F-A", "F-D"]),
        ("?locationID=L1".into(), &["F-A", "F-D"]),
        ("?clientID=C2".into(), &["F-C"]),
        ("?externalPatientID=F-B".into(), &["F-B"]),
        ("?lastName=Byron&dateOfBirth=1950-01-01".into(), &["F-B"]),
        ("?clientID=C1&lastName=Lovelace".into(), &["F-A"]),
        ("?clientID=C1&locationID=L3".into(), &[]),
        (format!("?updatedSince={since_q}"), &["F-B"]),
        (format!("?updatedSince={since_q}&lastName=Lovelace"), &[]),
    ];
    for limit in [1, 500] {
        expect_lists(
            &s,
            &token,
            "/v1/patients",
            "externalPatientID",
            &cases,
            limit,
        )
        .await;
    }
    // In creation order, page by page.
    assert_eq!(
        all_pages(&s, &token, "/v1/patients", "externalPatientID", 1).await,
        vec!["F-A", "F-B", "F-C", "F-D"]
    );

    // A partner limited to C1/L1 sees only that part, whatever it asks.
    let narrow = s.partner("patients:read,tests:read", "C1", "L1").await;
    let narrow = s.token(&narrow).await;
    for (query, expected) in [
        ("", &["F-A", "F-D"][..]),
        ("?lastName=Lovelace", &["F-A"][..]),
        ("?clientID=C2", &[][..]),
        ("?dateOfBirth=1950-01-01", &[][..]),
    ] {
        let got = all_pages(
            &s,
            &narrow,
            &format!("/v1/patients{query}"),
            "externalPatientID",
            1,
        )
        .await;
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            set(expected),
            "narrow partner: {query}"
        );
    }

    // Orders: one for each of A (C1/L1), B (C1/L2) and C (C2/L3).
    let mut accession = Vec::new();
    for (i, ext) in ["EHR-A", "EHR-B", "EHR-C"].iter().enumerate() {
        let (client, location) = (people[i].1, people[i].2);
        let r = s
            .http
            .post(format!("{}/v1/orders", s.base))
            .bearer_auth(&token)
            .json(&json!({
                "patientID": ids[i], "clientID": client, "locationID": location,
                "externalOrderID": ext,
                "tests": [{"code": "CBC"}],
                "specimen": {"type": "whole blood", "collectedAt": "2026-11-20T08:30:00Z"},
                "priority": "routine"
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        accession.push(v["accessionNumber"].as_str().unwrap().to_string());
    }
    wait_for(&s, &token, "/v1/orders", "externalOrderID", 3).await;
    let order_cases: Vec<(String, &[&str])> = vec![
        ("".into(), &["EHR-A", "EHR-B", "EHR-C"]),
        (format!("?patientID={}", ids[1]), &["EHR-B"]),
        ("?status=ordered".into(), &["EHR-A", "EHR-B", "EHR-C"]),
        ("?status=final".into(), &[]),
        (format!("?accessionNumber={}", accession[2]), &["EHR-C"]),
        ("?externalOrderID=EHR-A".into(), &["EHR-A"]),
        ("?clientID=C1".into(), &["EHR-A", "EHR-B"]),
        ("?locationID=L2&status=ordered".into(), &["EHR-B"]),
        (format!("?patientID={}&clientID=C2", ids[0]), &[]),
        ("?updatedSince=2999-01-01T00:00:00Z".into(), &[]),
    ];
    expect_lists(&s, &token, "/v1/orders", "externalOrderID", &order_cases, 1).await;
    let got = all_pages(&s, &narrow, "/v1/orders", "externalOrderID", 1).await;
    assert_eq!(got, vec!["EHR-A"], "the narrow partner's orders");
    s.stop().await;
}

/// Without `limit` a page holds 50 records (the contract's default), and the
/// next page the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_holds_fifty_by_default() {
    let s = TestStack::start().await;
    let (_, token) = s.standard().await;
    for i in 0..51 {
        let r = s
            .create_patient(&token, &patient_body(&format!("P-{i}")))
            .await;
        assert_eq!(r.status(), 201);
    }
    wait_for(&s, &token, "/v1/patients", "externalPatientID", 51).await;
    let first: Value = s.get(&token, "/v1/patients").await.json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    let cursor = first["nextCursor"].as_str().expect("a next page");
    let rest: Value = s
        .get(&token, &format!("/v1/patients?cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["nextCursor"].is_null(), "the last page has no cursor");
    s.stop().await;
}
