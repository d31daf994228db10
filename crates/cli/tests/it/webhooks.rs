//! Webhooks and the event stream through the real binary, told to an
//! independent receiver (`tests/interop/webhook_receiver.py`) that verifies
//! every delivery with the `standardwebhooks` package from PyPI.

use crate::common;

use common::server::{Backend, Db, Server, TOKEN};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

/// Fast retries for tests: four, 200 ms apart.
const FAST: [&str; 4] = ["--endpoint-policy", "any", "--webhook-retry-schedule", "0.2,0.2,0.2,0.2"];

struct Receiver {
    _proc: Proc,
    base: String,
    http: reqwest::Client,
}

impl Receiver {
    fn start() -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/interop/webhook_receiver.py"));
        let proc = spawn(cmd);
        let base = proc.first_line.strip_prefix("listening on ").expect("listening line").to_owned();
        Receiver { _proc: proc, base, http: reqwest::Client::new() }
    }

    async fn put(&self, path: &str, body: String) {
        let r = self.http.put(format!("{}{path}", self.base)).body(body).send().await.expect("receiver");
        assert_eq!(r.status(), 204);
    }

    /// Every attempt it saw, in order.
    async fn received(&self) -> Vec<Value> {
        let r = self.http.get(format!("{}/control/received", self.base)).send().await.expect("receiver");
        r.json().await.expect("JSON")
    }

    /// Waits (up to a minute) until `done` holds for what it received.
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..1200 {
            let got = self.received().await;
            if done(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver never got {what}: {:#?}", self.received().await);
    }
}

/// Registers a webhook for `events` at the receiver and tells it the secret.
async fn register(server: &Server, receiver: &Receiver, events: &[&str]) -> String {
    let (status, w) =
        server.post_json("/v1/webhooks", &json!({"url": format!("{}/hook", receiver.base), "events": events})).await;
    assert_eq!(status, 201, "{w}");
    let secret = w["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    receiver.put("/control/secret", secret).await;
    w["id"].as_str().expect("id").to_owned()
}

/// The successful deliveries (2xx) of one type, each verified.
fn delivered<'a>(got: &'a [Value], kind: &str) -> Vec<&'a Value> {
    got.iter().filter(|d| d["status"] == 200 && d["body"]["type"] == kind).collect()
}

fn all_verified(got: &[Value]) {
    for d in got {
        assert_eq!(d["verified"], true, "standardwebhooks refused a delivery: {d}");
        assert_eq!(d["contentType"], "application/json");
    }
}

async fn broadcast_is_told(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &FAST);
    let dev = DevPush::start(&[]);
    let receiver = Receiver::start();
    register(&server, &receiver, &["message.created", "message.done", "subscription.created", "subscription.removed"])
        .await;
    let key = server.vapid_public_key().await;
    let mut subs = Vec::new();
    for _ in 0..5 {
        let sub = dev.mint(Some(&key)).await;
        assert_eq!(server.subscribe(&sub).await.0, 200);
        subs.push(sub);
    }
    // Two of them are gone by the time the broadcast reaches them.
    for sub in &subs[..2] {
        let r = dev.post(&format!("/subscriptions/{}/expire", sub_id(sub)), json!({})).await;
        assert!(r.status().is_success());
    }
    let (status, m) =
        server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": {"title": "t"}})).await;
    assert_eq!(status, 202);
    let id = m["id"].as_str().unwrap().to_owned();
    server.wait_done(&id).await;
    receiver.until("message.done", |g| !delivered(g, "message.done").is_empty()).await;
    let got = receiver
        .until("2 removals", |g| {
            delivered(g, "subscription.removed")
                .iter()
                .map(|d| d["body"]["data"]["items"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
                == 2
        })
        .await;
    all_verified(&got);
    let done = delivered(&got, "message.done");
    assert_eq!(done.len(), 1);
    let data = &done[0]["body"]["data"];
    assert_eq!(data["messageId"], id.as_str());
    assert_eq!(
        (data["counts"]["targeted"].as_i64(), data["counts"]["delivered"].as_i64(), data["counts"]["gone"].as_i64()),
        (Some(5), Some(3), Some(2)),
        "the final counts: {data}"
    );
    // The removals come batched: one delivery with both, as data.items.
    let removed = delivered(&got, "subscription.removed");
    assert_eq!(removed.len(), 1, "batched: {removed:?}");
    let items = removed[0]["body"]["data"]["items"].as_array().unwrap();
    let gone: BTreeSet<&str> = items.iter().map(|i| i["endpoint"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = subs[..2].iter().map(|s| s["endpoint"].as_str().unwrap()).collect();
    assert_eq!(gone, want);
    assert!(items.iter().all(|i| i["reason"] == "gone"));
    // Each new subscription, and the message's creation, were told too.
    let created = delivered(&got, "subscription.created");
    assert_eq!(created.len(), 5);
    assert_eq!(delivered(&got, "message.created").len(), 1);
    // Each delivery has an id of its own, and the body's timestamp is RFC 3339.
    let ids: BTreeSet<&str> = got.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len());
    assert!(done[0]["body"]["timestamp"].as_str().unwrap().ends_with('Z'));
}
both_backends!(a_broadcast_is_told_to_a_verified_receiver, broadcast_is_told);

#[tokio::test]
async fn a_failing_receiver_gets_the_same_webhook_id_until_it_answers() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &FAST);
    let receiver = Receiver::start();
    let webhook = register(&server, &receiver, &["message.created"]).await;
    receiver.put("/control/fail", json!({"count": 3, "status": 503}).to_string()).await;
    let (status, _) = server.post_json(&format!("/v1/webhooks/{webhook}/test"), &json!({})).await;
    assert_eq!(status, 202);
    let got = receiver.until("an answered delivery", |g| g.iter().any(|d| d["status"] == 200)).await;
    all_verified(&got);
    let statuses: Vec<i64> = got.iter().map(|d| d["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 503, 200]);
    let ids: BTreeSet<&str> = got.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "the same webhook-id on every attempt: {ids:?}");
    assert!(got.iter().all(|d| d["body"] == got[0]["body"]), "and the same body");
    assert_eq!(got[0]["body"]["type"], "webhook.test");

    // A receiver's Retry-After is honoured: the next attempt waits for it.
    receiver.put("/control/fail", json!({"count": 1, "status": 429, "retryAfter": "2"}).to_string()).await;
    server.post_json(&format!("/v1/webhooks/{webhook}/test"), &json!({})).await;
    let got = receiver.until("the retried delivery", |g| g.len() == 6 && g[5]["status"] == 200).await;
    let (first, second) = (got[4]["timestamp"].as_str().unwrap(), got[5]["timestamp"].as_str().unwrap());
    let waited = second.parse::<i64>().unwrap() - first.parse::<i64>().unwrap();
    assert!(waited >= 2, "Retry-After: 2 was honoured ({first} then {second})");

    // Past the whole schedule the delivery is given up and the webhook
    // shows as failing, here and in /metrics; the next success clears it.
    receiver.put("/control/fail", json!({"count": 5, "status": 500}).to_string()).await;
    server.post_json(&format!("/v1/webhooks/{webhook}/test"), &json!({})).await;
    receiver.until("five failed attempts", |g| g.len() == 11).await;
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = server.get("/v1/webhooks").await.1;
        if listed["items"][0]["failing"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["items"][0]["failing"], true, "{listed}");
    assert_eq!(listed["items"][0]["lastError"], "HTTP 500");
    assert!(listed["items"][0].get("secret").is_none(), "the secret is shown once only");
    let metrics =
        server.http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tocsin_webhooks_failing 1"), "{metrics}");
    assert!(metrics.contains("tocsin_webhook_gave_up_total 1"), "{metrics}");
    server.post_json(&format!("/v1/webhooks/{webhook}/test"), &json!({})).await;
    receiver.until("a success", |g| g.len() == 12 && g[11]["status"] == 200).await;
    for _ in 0..200 {
        if server.get("/v1/webhooks").await.1["items"][0]["failing"] == false {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a success did not clear failing");
}

#[tokio::test]
async fn kill_9_while_events_are_pending_loses_none() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(
        &db,
        &["--endpoint-policy", "any", "--webhook-retry-schedule", "0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2"],
    );
    let receiver = Receiver::start();
    register(&server, &receiver, &["message.created"]).await;
    // The receiver is down: deliveries fail and wait.
    receiver.put("/control/down", json!({"seconds": 3600}).to_string()).await;
    let mut ids = BTreeSet::new();
    for i in 0..8 {
        let (status, m) =
            server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": format!("m{i}")})).await;
        assert_eq!(status, 202);
        ids.insert(m["id"].as_str().unwrap().to_owned());
    }
    let listed = server.get("/v1/webhooks").await.1;
    assert!(listed["items"][0]["pending"].as_i64().unwrap() >= 7, "pending before the kill: {listed}");
    let mut server = server;
    server.proc.child.kill().expect("kill -9");
    server.proc.child.wait().expect("wait");
    drop(server);
    receiver.put("/control/down", json!({"seconds": 0}).to_string()).await;
    let server = Server::start(
        &db,
        &["--endpoint-policy", "any", "--webhook-retry-schedule", "0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2"],
    );
    let got = receiver.until("all eight after the restart", |g| delivered(g, "message.created").len() >= 8).await;
    all_verified(&got);
    let told: BTreeSet<String> = delivered(&got, "message.created")
        .iter()
        .map(|d| d["body"]["data"]["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(told, ids, "every message.created arrived");
    server.assert_up().await;
}

#[tokio::test]
async fn two_nodes_on_postgres_send_each_event_once() {
    let db = Db::new(Backend::Postgres);
    let a = Server::start(&db, &[&FAST[..], &["--node-id", "node-a"]].concat());
    let b = Server::start(&db, &[&FAST[..], &["--node-id", "node-b"]].concat());
    let receiver = Receiver::start();
    register(&a, &receiver, &["message.created", "message.done"]).await;
    let mut ids = BTreeSet::new();
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, m) =
            node.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": format!("m{i}")})).await;
        assert_eq!(status, 202);
        ids.insert(m["id"].as_str().unwrap().to_owned());
    }
    receiver.until("60 events", |g| g.iter().filter(|d| d["status"] == 200).count() >= 60).await;
    // Some more time for a duplicate to show, if there were one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.received().await;
    all_verified(&got);
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &got {
        *per_id.entry(d["id"].as_str().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for kind in ["message.created", "message.done"] {
        let told: BTreeSet<String> =
            delivered(&got, kind).iter().map(|d| d["body"]["data"]["messageId"].as_str().unwrap().to_owned()).collect();
        assert_eq!(told, ids, "{kind}");
    }
}

/// Reads server-sent events until `n` have come: (id, type, data).
async fn read_events(server: &Server, last_event_id: Option<&str>, n: usize) -> Vec<(i64, String, Value)> {
    let mut req = server.http.get(server.url("/v1/events/stream")).bearer_auth(TOKEN);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut resp = req.send().await.expect("stream");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let (mut text, mut out) = (String::new(), Vec::new());
    let read = async {
        while out.len() < n {
            let Some(chunk) = resp.chunk().await.expect("chunk") else { break };
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned));
                if let (Some(id), Some(kind), Some(data)) = (field("id"), field("event"), field("data")) {
                    out.push((id.parse().unwrap(), kind, serde_json::from_str(&data).unwrap()));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the events came");
    out
}

#[tokio::test]
async fn the_event_stream_resumes_with_last_event_id() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    for i in 0..3 {
        let (status, m) =
            server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": format!("m{i}")})).await;
        assert_eq!(status, 202);
        server.wait_done(m["id"].as_str().unwrap()).await;
    }
    // From the start: created and done of each message, in order.
    let all = read_events(&server, Some("0"), 6).await;
    let kinds: Vec<&str> = all.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["message.created", "message.done", "message.created", "message.done", "message.created", "message.done"]
    );
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
    assert_eq!(all[0].2["type"], "message.created");
    // Resuming after the second: the rest, nothing twice.
    let rest = read_events(&server, Some(&all[1].0.to_string()), 4).await;
    assert_eq!(rest, all[2..].to_vec());
    // Without Last-Event-ID, it starts at now: the next event is new.
    let (_, m) = server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": "later"})).await;
    let live = read_events(&server, Some(&all[5].0.to_string()), 1).await;
    assert_eq!(live[0].2["data"]["messageId"], m["id"]);
    let (status, body) = server.raw(reqwest::Method::GET, "/v1/events/stream", "").await;
    assert_eq!(status, 401, "a token is needed: {body}");
    let r = server
        .http
        .get(server.url("/v1/events/stream"))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid-last-event-id"));
}

#[tokio::test]
async fn webhook_routes_refuse_bad_input_and_change_nothing() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &[]);
    for (body, id) in [
        (json!({"url": "http://127.0.0.1:9/hook", "events": ["message.done"]}), "invalid-webhook-url"),
        (json!({"url": "https://10.0.0.1/hook", "events": ["message.done"]}), "invalid-webhook-url"),
        (json!({"url": "ftp://example.org/", "events": ["message.done"]}), "invalid-webhook-url"),
        (json!({"url": "not a url", "events": ["message.done"]}), "invalid-webhook-url"),
        (
            json!({"url": format!("https://a.tocsin-tests.org/{}", "x".repeat(2100)), "events": ["message.done"]}),
            "invalid-webhook-url",
        ),
        (json!({"url": "https://hooks.tocsin-tests.org/", "events": ["message.sent"]}), "invalid-events"),
        (json!({"url": "https://hooks.tocsin-tests.org/", "events": []}), "invalid-events"),
        (json!({"url": "https://hooks.tocsin-tests.org/", "events": ["webhook.test"]}), "invalid-events"),
        (json!({"url": "https://hooks.tocsin-tests.org/", "events": ["message.done"], "colour": 1}), "invalid-webhook"),
        (json!({"url": "https://hooks.tocsin-tests.org/"}), "invalid-webhook"),
    ] {
        let (status, err) = server.post_json("/v1/webhooks", &body).await;
        assert_eq!((status, err["error"]["id"].as_str()), (400, Some(id)), "{body}: {err}");
    }
    let (status, err) = server
        .raw(reqwest::Method::POST, "/v1/webhooks", r#"{"url":"https://x.org/","events":["message.done"]}"#)
        .await;
    assert_eq!(status, 401, "{err}");
    let (status, err) = server.raw(reqwest::Method::DELETE, "/v1/webhooks/wh_nope", "").await;
    assert_eq!(status, 401, "{err}");
    let r = server.http.delete(server.url("/v1/webhooks/wh_nope")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = server.http.post(server.url("/v1/webhooks/wh_nope/test")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(server.get("/v1/webhooks").await.1, json!({"items": []}), "nothing was stored");
    server.assert_up().await;
}

/// The event types a broadcast of `broadcast_is_told` does not make: a
/// delivery that fails for good (with its status), a notification shown
/// and clicked (with its action), a subscription replaced by its browser,
/// and removals by the API and by the browser, each with its reason.
#[tokio::test]
async fn every_event_type_is_told() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &FAST);
    let dev = DevPush::start(&[]);
    let receiver = Receiver::start();
    let all = [
        "message.cancelled",
        "subscription.updated",
        "subscription.removed",
        "delivery.failed",
        "notification.shown",
        "notification.clicked",
    ];
    register(&server, &receiver, &all).await;
    let key = server.vapid_public_key().await;
    let subs: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            let sub = dev.mint(Some(&key)).await;
            assert_eq!(server.subscribe(&sub).await.0, 200);
            v.push(sub);
        }
        v
    };
    // subs[0] refuses the payload for good (413).
    let r = dev.post(&format!("/subscriptions/{}/faults", sub_id(&subs[0])), json!({"status": 413})).await;
    assert!(r.status().is_success());
    let (_, m) = server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": {"title": "t"}})).await;
    let id = m["id"].as_str().unwrap().to_owned();
    server.wait_done(&id).await;
    // The service worker's reports, with the token the payload carried.
    let pushed = dev.messages().await;
    let payload: Value = pushed
        .iter()
        .find_map(|p| p["payload"].as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()))
        .expect("a decrypted payload");
    let token = payload["eventToken"].as_str().unwrap();
    for body in [
        json!({"type": "shown", "messageId": id, "eventToken": token}),
        json!({"type": "clicked", "messageId": id, "eventToken": token, "action": "open"}),
    ] {
        assert_eq!(server.raw(reqwest::Method::POST, "/api/events", body.to_string()).await.0, 202);
    }
    // subs[1]'s browser replaces it; subs[2] is deleted by the API; subs[3]'s browser unsubscribes.
    let mut renewed = dev.mint(Some(&key)).await;
    renewed["oldEndpoint"] = subs[1]["endpoint"].clone();
    renewed["oldKeys"] = json!({"auth": subs[1]["keys"]["auth"]});
    assert_eq!(server.subscribe(&renewed).await.0, 200);
    let (_, list) = server.get("/v1/subscriptions").await;
    let id_of = |endpoint: &Value| {
        list["items"].as_array().unwrap().iter().find(|s| s["endpoint"] == *endpoint).map(|s| s["id"].clone()).unwrap()
    };
    let third = id_of(&subs[2]["endpoint"]);
    let r =
        server.http.delete(server.url(&format!("/v1/subscriptions/{third}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success());
    let bye = json!({"endpoint": subs[3]["endpoint"], "keys": {"auth": subs[3]["keys"]["auth"]}});
    assert_eq!(server.raw(reqwest::Method::DELETE, "/api/subscription", bye.to_string()).await.0, 200);
    // And a scheduled message, cancelled.
    let (_, later) = server
        .post_json("/v1/messages", &json!({"target": {"all": true}, "payload": "x", "sendAt": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 30 * 86_400_000}))
        .await;
    let r = server
        .http
        .delete(server.url(&format!("/v1/messages/{}", later["id"].as_str().unwrap())))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let got = receiver
        .until("every type", |g| {
            all.iter().all(|t| !delivered(g, t).is_empty())
                && delivered(g, "subscription.removed")
                    .iter()
                    .map(|d| d["body"]["data"]["items"].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
                    == 2
        })
        .await;
    all_verified(&got);
    let item = |kind: &str| delivered(&got, kind)[0]["body"]["data"]["items"][0].clone();
    let failed = item("delivery.failed");
    assert_eq!((failed["reason"].as_str(), failed["status"].as_u64()), (Some("payload-too-large"), Some(413)));
    assert_eq!((&failed["messageId"], &failed["endpoint"]), (&json!(id), &subs[0]["endpoint"]));
    assert_eq!(item("notification.shown")["messageId"], json!(id));
    assert_eq!(item("notification.clicked")["action"], "open");
    let updated = &delivered(&got, "subscription.updated")[0]["body"]["data"];
    assert_eq!((&updated["endpoint"], &updated["oldEndpoint"]), (&renewed["endpoint"], &subs[1]["endpoint"]));
    let reasons: BTreeMap<String, String> = delivered(&got, "subscription.removed")
        .iter()
        .flat_map(|d| d["body"]["data"]["items"].as_array().unwrap().clone())
        .map(|i| (i["endpoint"].as_str().unwrap().to_owned(), i["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(reasons.get(subs[2]["endpoint"].as_str().unwrap()).map(String::as_str), Some("deleted"));
    assert_eq!(reasons.get(subs[3]["endpoint"].as_str().unwrap()).map(String::as_str), Some("unsubscribed"));
    assert_eq!(delivered(&got, "message.cancelled")[0]["body"]["data"]["messageId"], later["id"]);
    assert!(delivered(&got, "message.created").is_empty(), "a type not asked for is not sent");
}
