//! A/B tests through the real binary, on SQLite and PostgreSQL: bad tests
//! refused by id with nothing stored; two tests at once over one audience,
//! where the service workers' clicks (posted to `/api/events` with each
//! delivery's event token, as `sw.js` does) make one variant win and go to
//! the rest, and show no significant difference in the other, which stops;
//! a kill -9 before the decision loses nothing and sends nothing twice.

use std::collections::HashMap;
use std::time::Duration;

use crate::common;

use common::server::{call, message, populate, until, Backend, Db, Server, TOKEN};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn error_id(v: &Value) -> &str {
    v["error"]["id"].as_str().unwrap_or("")
}

fn ab(if_no_winner: &str) -> Value {
    json!({"samplePercent": 50, "decideAfter": "1m", "metric": "clicked", "ifNoWinner": if_no_winner})
}

/// The deliveries the dev push service received: (subscription id, message id, event token).
async fn deliveries(dev: &DevPush) -> Vec<(String, String, String)> {
    dev.messages()
        .await
        .iter()
        .filter_map(|m| {
            let payload: Value = serde_json::from_str(m["payload"].as_str()?).ok()?;
            Some((
                m["subscriptionId"].as_str()?.to_owned(),
                payload["messageId"].as_str()?.to_owned(),
                payload["eventToken"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

async fn ab_tests(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let subs = populate(&dev, &server, &db, 160).await;
    let by_id: HashMap<String, &Value> = subs.iter().map(|s| (sub_id(s), s)).collect();
    let variants = json!([{"title": "A", "body": "a"}, {"title": "B", "body": "b"}]);

    // Refused by id, nothing stored.
    for (body, id) in [
        (
            json!({"target": {"all": true}, "variants": variants, "payload": "x", "abTest": ab("stop")}),
            "invalid-ab-test",
        ),
        (json!({"target": {"all": true}, "variants": [{"title": "A"}], "abTest": ab("stop")}), "invalid-ab-test"),
        (
            json!({"target": {"all": true}, "variants": vec![json!({"title": "A"}); 9], "abTest": ab("stop")}),
            "invalid-ab-test",
        ),
        (json!({"target": {"all": true}, "variants": variants}), "invalid-ab-test"),
        (json!({"target": {"all": true}, "abTest": ab("stop")}), "invalid-ab-test"),
        (json!({"target": {"all": true}, "variants": [null, null], "abTest": ab("stop")}), "invalid-ab-test"),
        (
            json!({"target": {"all": true}, "variants": variants, "abTest": {"samplePercent": 0, "decideAfter": "1m", "metric": "clicked", "ifNoWinner": "stop"}}),
            "invalid-ab-test",
        ),
        (
            json!({"target": {"all": true}, "variants": variants, "abTest": {"samplePercent": 50, "decideAfter": "30s", "metric": "clicked", "ifNoWinner": "stop"}}),
            "invalid-ab-test",
        ),
        (
            json!({"target": {"all": true}, "variants": variants, "abTest": {"samplePercent": 50, "decideAfter": "1m", "metric": "opened", "ifNoWinner": "stop"}}),
            "invalid-ab-test",
        ),
        (
            json!({"target": {"all": true}, "variants": variants, "abTest": {"samplePercent": 1e300, "decideAfter": "1m", "metric": "clicked", "ifNoWinner": "stop"}}),
            "invalid-ab-test",
        ),
        (
            json!({"target": {"all": true}, "variants": variants, "abTest": ab("stop"), "sendAt": "2030-01-01T09:00:00", "inLocalTime": true}),
            "invalid-ab-test",
        ),
        (
            json!({"target": {"all": true}, "variants": [{"title": "A", "body": "x".repeat(5000)}, {"title": "B"}], "abTest": ab("stop")}),
            "payload-too-large",
        ),
        (
            json!({"target": {"sample": {"of": {"all": true}, "slice": {"seed": 1, "percent": 50, "part": "rest"}}}, "payload": "x"}),
            "invalid-target",
        ),
    ] {
        let (s, v) = call(&server, Method::POST, "/v1/messages", Some(TOKEN), Some(body.clone())).await;
        assert_eq!((s, error_id(&v)), (400, id), "{body}: {v}");
    }
    let (_, list) = call(&server, Method::GET, "/v1/messages", Some(TOKEN), None).await;
    assert_eq!(list["items"], json!([]), "nothing stored: {list}");

    // Two tests over the same audience, decided a minute after they start.
    let mut ids = Vec::new();
    for if_no_winner in ["stop", "stop"] {
        let body = json!({"target": {"all": true}, "variants": variants, "abTest": ab(if_no_winner)});
        let (s, v) = call(&server, Method::POST, "/v1/messages", Some(TOKEN), Some(body)).await;
        assert_eq!(s, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let mut parts = Vec::new();
    for id in &ids {
        let m = until(&server, id, Duration::from_secs(30), |m| {
            m["abTest"]["stage"] == "testing"
                && m["abTest"]["variants"].as_array().is_some_and(|v| v.iter().all(|p| p["state"] == "done"))
        })
        .await;
        assert_eq!(m["state"], "sending", "{m}");
        let variant_ids: Vec<String> = m["abTest"]["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["messageId"].as_str().unwrap().into())
            .collect();
        parts.push(variant_ids);
    }
    // The sample: half, split evenly.
    let got = deliveries(&dev).await;
    for (t, variant_ids) in parts.iter().enumerate() {
        let n: Vec<usize> = variant_ids.iter().map(|v| got.iter().filter(|(_, m, _)| m == v).count()).collect();
        eprintln!("test {t}: the sample of 160 split {n:?}");
        assert!((50..=110).contains(&(n[0] + n[1])), "{n:?}");
        assert!(n.iter().all(|k| *k >= 20), "{n:?}");
    }
    // Clicks, as sw.js reports them: test 0, B's readers click 3 in 4,
    // A's none; test 1, 1 in 10 of each.
    let click = |sub: &str, message: &str, token: &str| {
        let s = by_id[sub];
        json!({"type": "clicked", "messageId": message, "eventToken": token,
               "endpoint": s["endpoint"], "keys": {"auth": s["keys"]["auth"]}})
        .to_string()
    };
    for (t, variant_ids) in parts.iter().enumerate() {
        for (v, variant) in variant_ids.iter().enumerate() {
            let mine: Vec<&(String, String, String)> = got.iter().filter(|(_, m, _)| m == variant).collect();
            let clicking = match (t, v) {
                (0, 0) => 0,
                (0, _) => mine.len() * 3 / 4,
                _ => mine.len() / 10,
            };
            for (sub, message, token) in &mine[..clicking] {
                let (s, body) = server.raw(Method::POST, "/api/events", click(sub, message, token)).await;
                assert_eq!(s, 202, "{body}");
            }
        }
    }
    // A kill -9 while the tests wait for their decision loses nothing: their
    // state is stored, and the restarted node (or any other) decides.
    drop(server);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    // After the minute: test 0's winner is B, sent to the rest; test 1 stops.
    let won = until(&server, &ids[0], Duration::from_secs(150), |m| m["state"] == "done").await;
    let t = &won["abTest"];
    assert_eq!(
        (t["stage"].as_str(), t["winner"].as_str(), t["sent"].as_str()),
        (Some("decided"), Some("B"), Some("B")),
        "{won}"
    );
    assert!(t["pValue"].as_f64().is_some_and(|p| p < 0.05), "{won}");
    assert!(t["reason"].as_str().unwrap().starts_with("variant B won"), "{won}");
    assert_eq!(t["variants"][0]["counts"]["clicked"], 0, "{won}");
    let rest_id = t["rest"]["messageId"].as_str().unwrap().to_owned();
    let rest = message(&server, &rest_id).await;
    assert_eq!(rest["abPartOf"], json!({"messageId": ids[0], "variant": "B", "rest": true}), "{rest}");
    let c = &won["counts"];
    assert_eq!((c["targeted"].as_i64(), c["delivered"].as_i64()), (Some(160), Some(160)), "{won}");
    let stopped = until(&server, &ids[1], Duration::from_secs(60), |m| m["abTest"]["stage"] != "testing").await;
    let t = &stopped["abTest"];
    assert_eq!(
        (t["stage"].as_str(), t["winner"].as_str(), t["sent"].as_str()),
        (Some("stopped"), None, None),
        "{stopped}"
    );
    assert!(t["pValue"].as_f64().is_some_and(|p| p >= 0.05), "{stopped}");
    assert!(t["reason"].as_str().unwrap().contains("ifNoWinner: stop"), "{stopped}");
    eprintln!("won: {}; stopped: {}", won["abTest"]["reason"], t["reason"]);

    // Every subscription got test 0 once (a variant or the winner), and
    // test 1 at most once.
    let got = deliveries(&dev).await;
    let test0: Vec<&String> = parts[0].iter().chain([&rest_id]).collect();
    for s in &subs {
        let id = sub_id(s);
        let of = |ids: &[&String]| got.iter().filter(|(sub, m, _)| *sub == id && ids.contains(&m)).count();
        assert_eq!(of(&test0), 1, "subscription {id}");
        assert!(of(&parts[1].iter().collect::<Vec<_>>()) <= 1);
    }
    // Lists show the tests, not their parts; a done test cannot be cancelled.
    let (_, list) = call(&server, Method::GET, "/v1/messages", Some(TOKEN), None).await;
    let listed: Vec<&str> = list["items"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())));
    let (s, v) = call(&server, Method::DELETE, &format!("/v1/messages/{}", ids[0]), Some(TOKEN), None).await;
    assert_eq!((s, error_id(&v)), (409, "message-already-done"), "{v}");
}

both_backends!(one_wins_one_stops_across_a_kill_9, ab_tests);

/// A test cancelled while its variants wait for the decision: its parts
/// are cancelled with it (that no step is stored after a cancel is the
/// storage contract's, `contract/ab.rs`).
#[tokio::test]
async fn a_cancelled_test_sends_nothing_more() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    populate(&dev, &server, &db, 40).await;
    let body = json!({"target": {"all": true}, "variants": [{"title": "A"}, {"title": "B"}, {"title": "C"}],
                      "abTest": {"samplePercent": 30, "decideAfter": "1m", "metric": "shown", "ifNoWinner": "send-best"}});
    let (s, v) = call(&server, Method::POST, "/v1/messages", Some(TOKEN), Some(body)).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    until(&server, &id, Duration::from_secs(30), |m| m["abTest"]["stage"] == "testing").await;
    let (s, v) = call(&server, Method::DELETE, &format!("/v1/messages/{id}"), Some(TOKEN), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    for p in v["abTest"]["variants"].as_array().unwrap() {
        let part = message(&server, p["messageId"].as_str().unwrap()).await;
        assert!(["cancelled", "done"].contains(&part["state"].as_str().unwrap()), "{part}");
    }
    assert_eq!(v["abTest"]["variants"].as_array().unwrap().len(), 3);
}
