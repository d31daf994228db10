//! `tocsin serve` as a real process, on SQLite and on PostgreSQL.

use crate::common;

use common::server::{with_user, Backend, Db, Server, TOKEN};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const OK: &str = r#"{"data":{"success":true}}"#;

/// A browser-like subscription whose endpoint is on the dev push service.
async fn minted(dev: &DevPush, server: &Server) -> Value {
    dev.mint(Some(&server.vapid_public_key().await)).await
}

async fn classic_contract(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);

    // GET /api/vapid-public-key
    let r = server.http.get(server.url("/api/vapid-public-key")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1);
    let key = tocsin_protocol::b64::decode(v["publicKey"].as_str().unwrap()).unwrap();
    assert_eq!((key.len(), key[0]), (65, 4));

    // POST /api/subscription, byte for byte.
    let mut sub = minted(&dev, &server).await;
    assert_eq!(server.subscribe(&sub).await, (200, OK.to_owned()));
    assert_eq!(
        server.subscribe(&json!({"keys": {"p256dh": "x", "auth": "y"}})).await,
        (400, r#"{"error":{"id":"no-endpoint","message":"Subscription must have an endpoint"}}"#.to_owned())
    );

    // The same browser again: updated, not duplicated.
    with_user(&mut sub, "alice");
    sub["topics"] = json!(["news", "sports"]);
    assert_eq!(server.subscribe(&sub).await, (200, OK.to_owned()));
    assert_eq!(server.count().await, 1);
    let (_, list) = server.get("/v1/subscriptions").await;
    let item = &list["items"][0];
    assert_eq!(item["userId"], "alice");
    assert_eq!(item["topics"], json!(["news", "sports"]));
    assert_eq!(item["endpoint"], sub["endpoint"]);
    // Re-posting without userId/topics keeps them.
    let bare = json!({"endpoint": sub["endpoint"], "keys": sub["keys"]});
    assert_eq!(server.subscribe(&bare).await.0, 200);
    let (_, list) = server.get("/v1/subscriptions").await;
    assert_eq!(list["items"][0]["userId"], "alice");
    assert_eq!(server.count().await, 1);

    // DELETE needs the auth secret.
    let wrong = json!({"endpoint": sub["endpoint"], "keys": {"auth": "AAAAAAAAAAAAAAAAAAAAAA"}});
    let (status, body) = server.raw(Method::DELETE, "/api/subscription", wrong.to_string()).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(server.count().await, 1);
    let right = json!({"endpoint": sub["endpoint"], "keys": {"auth": sub["keys"]["auth"]}});
    assert_eq!(server.raw(Method::DELETE, "/api/subscription", right.to_string()).await, (200, OK.to_owned()));
    assert_eq!(server.count().await, 0);
}
both_backends!(classic_contract_byte_for_byte, classic_contract);

async fn push_end_to_end(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let mut subs = Vec::new();
    for _ in 0..5 {
        let s = minted(&dev, &server).await;
        assert_eq!(server.subscribe(&s).await.0, 200);
        subs.push(s);
    }
    // One gone (410 → deleted), one failing for good (413 → kept).
    dev.post(&format!("/subscriptions/{}/expire", sub_id(&subs[0])), json!({})).await;
    dev.post(&format!("/subscriptions/{}/faults", sub_id(&subs[1])), json!({"status": 413, "times": 2})).await;

    // Without a token: 401 in the error shape.
    let (status, body) = server.raw(Method::POST, "/api/push", "x").await;
    assert_eq!(status, 401);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["id"], "unauthorized");

    let payload = r#"{"title":"Hello","body":"everyone"}"#;
    let r = server.http.post(server.url("/api/push")).bearer_auth(TOKEN).body(payload).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["success"], true);
    let id = v["data"]["messageId"].as_str().unwrap().to_owned();
    let m = server.wait_done(&id).await;
    let c = &m["counts"];
    assert_eq!(c["targeted"], 5, "{m}");
    assert_eq!(c["delivered"], 3);
    assert_eq!(c["gone"], 1);
    assert_eq!(c["failed"], 1);
    assert_eq!(
        c["targeted"].as_i64(),
        Some(["delivered", "failed", "gone", "expired"].iter().map(|k| c[k].as_i64().unwrap()).sum())
    );
    assert_eq!(server.count().await, 4, "only the gone subscription is deleted");
    let got = dev.messages().await;
    assert_eq!(got.len(), 3);
    for msg in &got {
        // The server adds the message id and its event token to a
        // JSON-object payload, in front; the sender's bytes follow as sent.
        let payload = msg["payload"].as_str().unwrap();
        let v: Value = serde_json::from_str(payload).unwrap();
        let token = v["eventToken"].as_str().unwrap();
        assert_eq!(token.len(), 43, "a base64url HMAC-SHA256: {payload}");
        assert_eq!(
            payload,
            format!(r#"{{"messageId":"{id}","eventToken":"{token}","title":"Hello","body":"everyone"}}"#)
        );
        assert_eq!(msg["vapid"]["subject"], "mailto:tests@tocsin-tests.org");
        assert_eq!(msg["vapid"]["publicKey"], server.vapid_public_key().await.as_str());
    }

    // ?wait=true answers when sending has finished, with the counts.
    let r = server.http.post(server.url("/api/push?wait=true")).bearer_auth(TOKEN).body("again").send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["success"], true, "{v}");
    assert_eq!(v["data"]["counts"]["delivered"], 3, "{v}");
    assert_eq!(v["data"]["counts"]["failed"], 1, "{v}");
}
both_backends!(push_to_everyone_end_to_end, push_end_to_end);

async fn versioned_messages(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let mut ids = Vec::new();
    for (user, topics) in [("u1", json!(["news"])), ("u2", json!(["news", "sport"])), ("u3", json!([]))] {
        let mut s = minted(&dev, &server).await;
        with_user(&mut s, user);
        s["topics"] = topics;
        assert_eq!(server.subscribe(&s).await.0, 200);
        ids.push(sub_id(&s));
    }
    let (_, all) = server.get("/v1/subscriptions").await;
    let db_ids: Vec<i64> = all["items"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();

    let cases = [
        (json!({"topic": "news"}), 2),
        (json!({"userIds": ["u3", "nobody"]}), 1),
        (json!({"subscriptionIds": [db_ids[0], db_ids[2]]}), 2),
        (json!({"all": true}), 3),
    ];
    for (target, n) in cases {
        let body = json!({"payload": {"title": "t"}, "target": target, "ttl": 60, "urgency": "high", "topic": "t1"});
        let (status, v) = server.post_json("/v1/messages", &body).await;
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["state"], "queued");
        let m = server.wait_done(v["id"].as_str().unwrap()).await;
        assert_eq!(m["counts"]["targeted"], n, "{target}: {m}");
        assert_eq!(m["counts"]["delivered"], n, "{target}: {m}");
        for k in ["id", "state", "createdAt", "sendAt", "counts"] {
            assert!(m.get(k).is_some(), "{k} missing in {m}");
        }
    }
    let last = dev.messages().await.pop().unwrap();
    assert_eq!(
        (last["ttl"].as_i64(), last["urgency"].as_str(), last["topic"].as_str()),
        (Some(60), Some("high"), Some("t1"))
    );
    let p: Value = serde_json::from_str(last["payload"].as_str().unwrap()).unwrap();
    assert_eq!(p["title"], "t");
    assert!(p["messageId"].is_string());

    // Idempotency-Key: one message for two requests.
    let body = json!({"payload": "once", "target": {"all": true}});
    let send = |key: &'static str| {
        let server = &server;
        let body = body.clone();
        async move {
            let r = server
                .http
                .post(server.url("/v1/messages"))
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, a) = send("retry-1").await;
    let (s2, b) = send("retry-1").await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(a["id"], b["id"]);
    server.wait_done(a["id"].as_str().unwrap()).await;
    assert_eq!(dev.messages().await.iter().filter(|m| m["payload"] == "once").count(), 3);

    // Scheduled, then cancelled: never sent.
    let later = humantime_in(3600);
    let (status, v) =
        server.post_json("/v1/messages", &json!({"payload": "later", "target": {"all": true}, "sendAt": later})).await;
    assert_eq!((status, v["state"].as_str()), (202, Some("scheduled")), "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (status, m) = server.get(&format!("/v1/messages/{id}")).await;
    assert_eq!((status, m["state"].as_str()), (200, Some("scheduled")));
    assert!(m["sendAt"].as_str().unwrap().starts_with(&later[..16]), "{m} vs {later}");
    let r = server.http.delete(server.url(&format!("/v1/messages/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "cancelled");
    // Scheduled a moment ahead: fires.
    let soon = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 300;
    let (_, v) =
        server.post_json("/v1/messages", &json!({"payload": "soon", "target": {"all": true}, "sendAt": soon})).await;
    assert_eq!(v["state"], "scheduled");
    let m = server.wait_done(v["id"].as_str().unwrap()).await;
    assert_eq!(m["counts"]["delivered"], 3);
    assert!(dev.messages().await.iter().all(|m| m["payload"] != "later"));

    // A done message cannot be cancelled.
    let r = server
        .http
        .delete(server.url(&format!("/v1/messages/{}", m["id"].as_str().unwrap())))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // Listing: newest first, cursor paging.
    let (_, page1) = server.get("/v1/messages?limit=2").await;
    let items = page1["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], m["id"]);
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = server.get(&format!("/v1/messages?limit=100&cursor={cursor}")).await;
    let total = 2 + page2["items"].as_array().unwrap().len();
    assert_eq!(total, 7, "4 targets + 1 idempotent + scheduled + soon");
    assert_eq!(page2["nextCursor"], Value::Null);
    let (status, v) = server.get("/v1/messages/does-not-exist").await;
    assert_eq!((status, v["error"]["id"].as_str()), (404, Some("message-not-found")));
}
both_backends!(versioned_messages_api, versioned_messages);

fn humantime_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // RFC 3339 by hand: days since the epoch to a civil date.
    let (days, rem) = (d / 86400, d % 86400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

async fn versioned_subscriptions(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    for i in 0..7 {
        let mut s = minted(&dev, &server).await;
        with_user(&mut s, &format!("user{}", i % 2));
        s["topics"] = json!(if i < 3 { vec!["a"] } else { vec!["b"] });
        assert_eq!(server.subscribe(&s).await.0, 200);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/subscriptions?limit=3".to_owned(),
            Some(c) => format!("/v1/subscriptions?limit=3&cursor={c}"),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200);
        for item in page["items"].as_array().unwrap() {
            for k in ["id", "endpoint", "userId", "topics", "createdAt"] {
                assert!(item.get(k).is_some(), "{k}");
            }
            seen.push(item["id"].as_i64().unwrap());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let (_, a) = server.get("/v1/subscriptions?topic=a").await;
    assert_eq!(a["items"].as_array().unwrap().len(), 3);
    let (_, u) = server.get("/v1/subscriptions?userId=user1").await;
    assert_eq!(u["items"].as_array().unwrap().len(), 3);
    let id = seen[0];
    let (status, one) = server.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!((status, one["id"].as_i64()), (200, Some(id)));
    let r = server.http.delete(server.url(&format!("/v1/subscriptions/{id}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (status, v) = server.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!((status, v["error"]["id"].as_str()), (404, Some("subscription-not-found")));
    let (status, stats) = server.get("/v1/stats").await;
    assert_eq!((status, stats["subscriptions"].as_i64()), (200, Some(6)));
    let (status, v) = server.get("/v1/subscriptions?limit=0").await;
    assert_eq!((status, v["error"]["id"].as_str()), (400, Some("invalid-limit")));
}
both_backends!(versioned_subscriptions_api, versioned_subscriptions);

async fn restart(backend: Backend) {
    let db = Db::new(backend);
    let dev = DevPush::start(&[]);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let key = server.vapid_public_key().await;
    let sub = minted(&dev, &server).await;
    assert_eq!(server.subscribe(&sub).await.0, 200);
    let (_, v) = server.post_json("/v1/messages", &json!({"payload": "p", "target": {"all": true}})).await;
    server.wait_done(v["id"].as_str().unwrap()).await;
    assert!(server.stop().success(), "SIGTERM is a clean exit");

    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    assert_eq!(server.vapid_public_key().await, key, "the VAPID key is kept");
    assert_eq!(server.count().await, 1);
    let (_, m) = server.get(&format!("/v1/messages/{}", v["id"].as_str().unwrap())).await;
    assert_eq!(m["state"], "done");
    assert_eq!(m["counts"]["delivered"], 1);
}
both_backends!(data_survives_a_restart, restart);

async fn bad_input(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--body-limit", "8192"]);
    let dev = DevPush::start(&[]);
    let good = minted(&dev, &server).await;
    let p256dh = good["keys"]["p256dh"].as_str().unwrap().to_owned();
    let auth = good["keys"]["auth"].as_str().unwrap().to_owned();
    let mut off_curve = tocsin_protocol::b64::decode(&p256dh).unwrap();
    off_curve[64] ^= 1;
    let off_curve = tocsin_protocol::b64::encode(off_curve);
    let deep = format!("{}{}", "[".repeat(1_000), "]".repeat(1_000));
    let sub = |endpoint: &str| json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}).to_string();

    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "hello".into(), "invalid-json"),
        ("JSON array", "[1,2]".into(), "invalid-json"),
        ("empty body", "".into(), "invalid-json"),
        ("deep nesting", deep, "invalid-json"),
        ("endpoint not a string", r#"{"endpoint":5}"#.into(), "invalid-json"),
        ("no keys", r#"{"endpoint":"https://fcm.googleapis.com/x"}"#.into(), "no-keys"),
        ("endpoint not a URL", json!({"endpoint": "nope", "keys": {}}).to_string(), "invalid-endpoint"),
        (
            "bad base64",
            json!({"endpoint": "https://fcm.googleapis.com/x", "keys": {"p256dh": "!!", "auth": auth}}).to_string(),
            "invalid-p256dh",
        ),
        (
            "key off the curve",
            json!({"endpoint": "https://fcm.googleapis.com/x", "keys": {"p256dh": off_curve, "auth": auth}})
                .to_string(),
            "invalid-p256dh",
        ),
        (
            "short auth",
            json!({"endpoint": "https://fcm.googleapis.com/x", "keys": {"p256dh": p256dh, "auth": "AAAA"}}).to_string(),
            "invalid-auth",
        ),
        (
            "userId wrong type",
            json!({"endpoint": "https://fcm.googleapis.com/x", "userId": {}, "keys": {}}).to_string(),
            "invalid-user-id",
        ),
        (
            "topics wrong type",
            json!({"endpoint": "https://fcm.googleapis.com/x", "topics": "news", "keys": {}}).to_string(),
            "invalid-topics",
        ),
        ("plain http endpoint", sub("http://fcm.googleapis.com/x"), "endpoint-not-allowed"),
        ("loopback endpoint", good.to_string(), "endpoint-not-allowed"),
        ("private endpoint", sub("https://10.0.0.8/push"), "endpoint-not-allowed"),
        ("link-local endpoint", sub("https://169.254.169.254/latest/meta-data"), "endpoint-not-allowed"),
        ("localhost endpoint", sub("https://localhost/push"), "endpoint-not-allowed"),
        ("endpoint over 2048 bytes", sub(&format!("https://fcm.googleapis.com/fcm/send/{}", "a".repeat(2030))), "invalid-endpoint"),
        (
            "oldEndpoint over 2048 bytes",
            json!({"endpoint": "https://fcm.googleapis.com/x", "oldEndpoint": format!("https://fcm.googleapis.com/{}", "a".repeat(2030)),
                   "keys": {"p256dh": p256dh, "auth": auth}}).to_string(),
            "invalid-old-endpoint",
        ),
        (
            "userId over 256 bytes",
            json!({"endpoint": "https://fcm.googleapis.com/x", "userId": "u".repeat(257), "keys": {"p256dh": p256dh, "auth": auth}}).to_string(),
            "invalid-user-id",
        ),
        (
            "101 topics",
            json!({"endpoint": "https://fcm.googleapis.com/x", "topics": (0..101).map(|i| format!("t{i}")).collect::<Vec<_>>(),
                   "keys": {"p256dh": p256dh, "auth": auth}}).to_string(),
            "invalid-topics",
        ),
        (
            "topic over 64 bytes",
            json!({"endpoint": "https://fcm.googleapis.com/x", "topics": ["t".repeat(65)], "keys": {"p256dh": p256dh, "auth": auth}}).to_string(),
            "invalid-topics",
        ),
        (
            "topic with a space",
            json!({"endpoint": "https://fcm.googleapis.com/x", "topics": ["a b"], "keys": {"p256dh": p256dh, "auth": auth}}).to_string(),
            "invalid-topics",
        ),
        ("huge body", format!(r#"{{"endpoint":"{}"}}"#, "a".repeat(20_000)), "body-too-large"),
    ];
    for (name, body, id) in cases {
        let (status, text) = server.raw(Method::POST, "/api/subscription", body).await;
        assert_eq!(status, if id == "body-too-large" { 413 } else { 400 }, "{name}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        assert_eq!(v["error"]["id"], id, "{name}: {text}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{name}");
    }
    assert_eq!(server.count().await, 0, "nothing was stored");

    let admin_cases: Vec<(&str, Value, &str)> = vec![
        ("no target", json!({"payload": "x"}), "invalid-message"),
        ("bad target", json!({"payload": "x", "target": {"everyone": true}}), "invalid-target"),
        ("all false", json!({"payload": "x", "target": {"all": false}}), "invalid-target"),
        ("bad urgency", json!({"payload": "x", "target": {"all": true}, "urgency": "asap"}), "invalid-urgency"),
        ("bad topic", json!({"payload": "x", "target": {"all": true}, "topic": "a b"}), "invalid-topic"),
        ("bad sendAt", json!({"payload": "x", "target": {"all": true}, "sendAt": "tomorrow"}), "invalid-send-at"),
        ("payload too large", json!({"payload": "x".repeat(4000), "target": {"all": true}}), "payload-too-large"),
        ("unknown field", json!({"payload": "x", "target": {"all": true}, "colour": "red"}), "invalid-message"),
        ("negative ttl", json!({"payload": "x", "target": {"all": true}, "ttl": -1}), "invalid-message"),
    ];
    for (name, body, id) in admin_cases {
        let (status, v) = server.post_json("/v1/messages", &body).await;
        assert_eq!(status, 400, "{name}: {v}");
        assert_eq!(v["error"]["id"], id, "{name}: {v}");
    }
    let (_, m) = server.get("/v1/messages").await;
    assert_eq!(m["items"].as_array().unwrap().len(), 0, "no message was stored");

    // Unknown routes and methods, wrong tokens: the same error shape.
    for (method, path, status, id) in [
        (Method::GET, "/nope", 404, "not-found"),
        (Method::PUT, "/api/subscription", 405, "method-not-allowed"),
        (Method::PATCH, "/v1/messages", 405, "method-not-allowed"),
    ] {
        let (s, text) = server.raw(method, path, "").await;
        assert_eq!(s, status, "{path}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"]["id"], id);
    }
    let (status, v) = server.get("/v1/subscriptions?limit=abc").await;
    assert_eq!((status, v["error"]["id"].as_str()), (400, Some("invalid-query")), "{v}");
    let r = server.http.get(server.url("/v1/stats")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["id"], "unauthorized");
}
both_backends!(bad_input_is_refused_and_changes_nothing, bad_input);

/// Writes a whole request (head, then every byte of the body) before
/// reading the answer, as Python's `http.client` and many libraries do.
fn write_then_read(addr: &str, head: &str, body: &[u8]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf)?;
        answer.extend_from_slice(&buf[..n]);
        if n == 0 || String::from_utf8_lossy(&answer).contains("}}") {
            return Ok(String::from_utf8_lossy(&answer).into_owned());
        }
    }
}

/// A 3 MB body is answered 413 `body-too-large`, and a client that writes
/// all of it before reading still reads that answer (the rest of the body
/// is read and discarded first). Nothing is stored.
#[tokio::test]
async fn an_oversized_body_is_answered_413_to_a_client_that_writes_it_all() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &[]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let big = vec![b'a'; 3 * 1024 * 1024];
    for (name, head) in [
        (
            "content-length",
            format!("POST /api/subscription HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", big.len()),
        ),
        (
            "chunked",
            format!("POST /api/subscription HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"),
        ),
    ] {
        let body = if name == "chunked" {
            let mut b = format!("{:x}\r\n", big.len()).into_bytes();
            b.extend_from_slice(&big);
            b.extend_from_slice(b"\r\n0\r\n\r\n");
            b
        } else {
            big.clone()
        };
        let (a, h) = (addr.clone(), head.clone());
        let answer = tokio::task::spawn_blocking(move || write_then_read(&a, &h, &body)).await.unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("{name}: the client could not read the answer: {e}"));
        assert!(answer.starts_with("HTTP/1.1 413"), "{name}: {answer}");
        assert!(answer.contains(r#""id":"body-too-large""#), "{name}: {answer}");
    }
    assert_eq!(server.count().await, 0);
}

/// An endpoint of exactly 2,048 bytes is stored; one byte more is not.
#[tokio::test]
async fn endpoints_up_to_2048_bytes_are_stored() {
    let db = Db::new(Backend::Postgres);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let good = minted(&dev, &server).await;
    let prefix = "https://push.example.net/";
    for (len, status) in [(2048, 200), (2049, 400)] {
        let mut sub = good.clone();
        sub["endpoint"] = json!(format!("{prefix}{}", "e".repeat(len - prefix.len())));
        let (s, text) = server.subscribe(&sub).await;
        assert_eq!(s, status, "{len} bytes: {text}");
    }
    assert_eq!(server.count().await, 1);
}

async fn storage_failure(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    // Make every insert fail inside the database.
    match backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "CREATE TRIGGER fail BEFORE INSERT ON subscriptions BEGIN SELECT RAISE(ABORT, 'provoked'); END;",
            )
            .execute(&mut conn)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("CREATE FUNCTION fail() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'provoked'; END $$ LANGUAGE plpgsql")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("CREATE TRIGGER fail BEFORE INSERT ON subscriptions FOR EACH ROW EXECUTE FUNCTION fail()")
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    assert_eq!(
        server.subscribe(&sub).await,
        (
            500,
            r#"{"error":{"id":"unable-to-save-subscription","message":"Subscription received but failed to save it"}}"#
                .to_owned()
        )
    );
    assert_eq!(server.count().await, 0);
}
both_backends!(a_storage_failure_is_a_500, storage_failure);

#[tokio::test]
async fn tokens_policy_openapi_and_health() {
    let db = Db::new(Backend::Sqlite);
    // A token made by the CLI works; only its hash is stored.
    let out = tocsin().args(["token", "create", "--name", "ci", "--database", &db.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("tsn_") && token.len() > 40);

    let server = Server::start(&db, &["--endpoint-policy", "known", "--known-push-hosts", "push.example.org"]);
    let r = server.http.get(server.url("/v1/stats")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = server.http.get(server.url("/v1/stats")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");

    // Policy "known": the major services and the configured extra host only.
    let dev = DevPush::start(&[]);
    let good = minted(&dev, &server).await;
    for (endpoint, status) in [
        ("https://fcm.googleapis.com/fcm/send/abc", 200),
        ("https://updates.push.services.mozilla.com/wpush/v2/abc", 200),
        ("https://push.example.org/abc", 200),
        ("https://evil.example.com/abc", 400),
    ] {
        let sub = json!({"endpoint": endpoint, "keys": good["keys"]});
        assert_eq!(server.subscribe(&sub).await.0, status, "{endpoint}");
    }

    // Health, readiness, metrics, OpenAPI.
    let (s, v) = server.get("/healthz").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, _) = server.get("/readyz").await;
    assert_eq!(s, 200);
    let text = server.http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tocsin_subscriptions{app=\"default\"} 3"), "{text}");
    assert!(text.contains("tocsin_subscriptions_saved_total{app=\"default\"} 3"), "{text}");
    // Error answers are counted by the catalogue's id and status: the 401
    // above, the refused endpoint.
    assert!(text.contains("tocsin_http_errors_total{id=\"unauthorized\",status=\"401\"} 1"), "{text}");
    assert!(text.contains("tocsin_http_errors_total{id=\"endpoint-not-allowed\",status=\"400\"} 1"), "{text}");
    let (s, doc) = server.get("/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // Each operation names the token scopes that may call it.
    assert_eq!(doc["paths"]["/v1/messages"]["post"]["security"][0]["token"], json!(["send", "admin"]));
    assert_eq!(doc["paths"]["/v1/subscriptions"]["get"]["security"][0]["token"], json!(["read", "admin"]));
    assert_eq!(doc["paths"]["/v1/subscriptions/{id}"]["delete"]["security"][0]["token"], json!(["admin"]));
    assert_eq!(doc["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    // The description names the content type the handler sends.
    let sent = server.http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    let sent = sent.headers()["content-type"].to_str().unwrap().to_owned();
    let described = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"].as_object().unwrap();
    assert_eq!(described.keys().collect::<Vec<_>>(), [&sent], "OpenAPI says {described:?}, /metrics sends {sent}");
    for path in [
        "/api/vapid-public-key",
        "/api/subscription",
        "/api/push",
        "/v1/messages",
        "/v1/messages/{id}",
        "/v1/subscriptions",
        "/v1/subscriptions/{id}",
        "/v1/stats",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"].get("ErrorBody").is_some());
    // Every error answer has the error schema: each operation's default, and
    // the 503 of a database that is away on every route that reads it.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let answers = op["responses"].as_object().unwrap();
            for (status, answer) in answers.iter().filter(|(s, _)| !s.starts_with('2')) {
                assert_eq!(
                    answer["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
            assert!(answers.contains_key("default"), "{method} {path}");
            assert_eq!(
                answers.contains_key("503"),
                !matches!(path.as_str(), "/healthz" | "/metrics"),
                "{method} {path}"
            );
        }
    }
    let ids = doc["components"]["schemas"]["ErrorId"]["enum"].as_array().expect("the ids are enumerated");
    assert!(ids.contains(&json!("database-unavailable")) && ids.contains(&json!("invalid-send-at")), "{ids:?}");
}

#[tokio::test]
async fn import_export_count_and_config_file() {
    let db = Db::new(Backend::Sqlite);
    let dev = DevPush::start(&[]);
    let mut lines = Vec::new();
    for i in 0..5 {
        let mut s = dev.mint(None).await;
        s["userId"] = json!(format!("u{i}"));
        s["topics"] = json!(["imported"]);
        lines.push(s);
    }
    let file = jsonl(&lines);
    let out = tocsin()
        .args(["subscriptions", "import", file.path().to_str().unwrap(), "--database", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out).trim(), "imported 5, skipped 0");
    let out = tocsin().args(["subscriptions", "count", "--database", &db.url]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "5");
    let out = tocsin().args(["subscriptions", "export", "--database", &db.url]).output().unwrap();
    let exported: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(exported.len(), 5);
    for (a, b) in exported.iter().zip(&lines) {
        assert_eq!(a["endpoint"], b["endpoint"]);
        assert_eq!(a["keys"], b["keys"]);
        assert_eq!(a["userId"], b["userId"]);
        assert_eq!(a["topics"], b["topics"]);
    }
    // A bad line is reported and skipped; the rest goes in.
    let mut bad = jsonl(&lines[..1]);
    {
        use std::io::Write;
        writeln!(bad, "{{\"endpoint\":\"https://x.example/\"}}").unwrap();
    }
    let out = tocsin()
        .args(["subscriptions", "import", bad.path().to_str().unwrap(), "--database", &db.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    // tocsin.toml in the working directory: same names as the flags.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tocsin.toml"),
        "endpoint-policy = \"any\"\ncors-origin = [\"https://app.example\"]\n",
    )
    .unwrap();
    let server = Server::start_in(&db, &[], Some(dir.path()));
    let sub = dev.mint(Some(&server.vapid_public_key().await)).await;
    assert_eq!(server.subscribe(&sub).await.0, 200, "policy 'any' came from tocsin.toml");
    let r = server
        .http
        .request(Method::OPTIONS, server.url("/api/subscription"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "https://app.example");
}

/// The README's quick start, as written: the server on its defaults (SQLite
/// under ./tocsin-data/), the README's curl, a token, a push.
#[tokio::test]
async fn the_readme_quick_start_works() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("curl") && l.contains("/api/subscription"))
        .expect("a curl to /api/subscription in the README");
    let body = line.split("-d '").nth(1).and_then(|rest| rest.strip_suffix('\'')).expect("-d '<json>'");

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_default(dir.path());
    let (status, text) = server.raw(Method::POST, "/api/subscription", body.to_owned()).await;
    assert_eq!((status, text.as_str()), (200, OK), "the README's curl");
    assert!(dir.path().join("tocsin-data/tocsin.db").exists(), "SQLite under ./tocsin-data/ by default");

    // Remove it again before pushing: tests send nothing off loopback.
    let sub: Value = serde_json::from_str(body).unwrap();
    let del = json!({"endpoint": sub["endpoint"], "keys": {"auth": sub["keys"]["auth"]}});
    assert_eq!(server.raw(Method::DELETE, "/api/subscription", del.to_string()).await.0, 200);

    let out = tocsin().args(["token", "create", "--name", "me"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success());
    let token = stdout(&out).trim().to_owned();
    let r = server
        .http
        .post(server.url("/api/push"))
        .bearer_auth(&token)
        .body(r#"{"title":"Hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["success"], true);
    assert!(v["data"]["messageId"].is_string());
}

/// A key pair given by flags is used and stored; a key generated on first
/// start is kept across restarts; subscriptions keep the key they were made for.
#[tokio::test]
async fn vapid_keys_given_generated_and_kept() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let generated = server.vapid_public_key().await;
    let dev = DevPush::start(&[]);
    let old_sub = dev.mint(Some(&generated)).await;
    assert_eq!(server.subscribe(&old_sub).await.0, 200);
    server.stop();

    let (public, private) = vapid_keys();
    let given = format!("--vapid-private-key={private}");
    let server = Server::start(&db, &["--endpoint-policy", "any", &format!("--vapid-public-key={public}"), &given]);
    assert_eq!(server.vapid_public_key().await, public);
    let new_sub = dev.mint(Some(&public)).await;
    assert_eq!(server.subscribe(&new_sub).await.0, 200);
    let (_, list) = server.get("/v1/subscriptions").await;
    let key_ids: Vec<i64> =
        list["items"].as_array().unwrap().iter().map(|i| i["vapidKeyId"].as_i64().unwrap()).collect();
    assert_eq!(key_ids.len(), 2);
    assert_ne!(key_ids[0], key_ids[1], "each subscription records its own key");

    // Both are sent to, each signed with the key it was made for (the dev
    // push service checks k against the subscription's applicationServerKey).
    let (_, v) = server.post_json("/v1/messages", &json!({"payload": "rotated", "target": {"all": true}})).await;
    let m = server.wait_done(v["id"].as_str().unwrap()).await;
    assert_eq!(m["counts"]["delivered"], 2, "{m}");
    server.stop();

    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    assert_eq!(server.vapid_public_key().await, public, "the given key stays current");
}

#[test]
fn sizes_below_one_are_refused_with_a_clear_error() {
    for flag in ["--page-size", "--shard-size"] {
        let out = tocsin().args(["serve", "--listen", "127.0.0.1:0", flag, "0"]).output().expect("run tocsin");
        assert!(!out.status.success(), "{flag} 0 was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("0 is not in 1.."), "{flag}: {err}");
    }
}

/// `GET /v1/push-services`: what each origin answered, by class, with
/// latency and the back-off a `Retry-After` put in force.
#[tokio::test]
async fn push_services_report_each_origins_answers() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let (status, v) = server.get("/v1/push-services").await;
    assert_eq!((status, v["items"].as_array().map(Vec::len)), (200, Some(0)), "{v}");
    assert!(v["node"].as_str().is_some_and(|n| !n.is_empty()));
    let mut subs = Vec::new();
    for _ in 0..4 {
        let s = minted(&dev, &server).await;
        assert_eq!(server.subscribe(&s).await.0, 200);
        subs.push(s);
    }
    dev.post(&format!("/subscriptions/{}/faults", sub_id(&subs[0])), json!({"status": 500})).await;
    dev.post(&format!("/subscriptions/{}/faults", sub_id(&subs[1])), json!({"status": 429, "retryAfter": "30"})).await;
    dev.post(&format!("/subscriptions/{}/expire", sub_id(&subs[2])), json!({})).await;
    let (status, _) = server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": "hi"})).await;
    assert_eq!(status, 202);
    let mut item = Value::Null;
    for _ in 0..400 {
        let (_, v) = server.get("/v1/push-services").await;
        item = v["items"][0].clone();
        if item["requests"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(item["origin"].as_str(), Some(dev.base.as_str()), "{item}");
    assert!(item["delivered"].as_u64() >= Some(1), "{item}");
    assert_eq!(item["gone"], 1, "{item}");
    assert_eq!(
        (item["errors"]["serverErrors"].as_u64(), item["errors"]["rateLimited"].as_u64()),
        (Some(1), Some(1)),
        "{item}"
    );
    assert_eq!(item["errors"]["rejected"], 0);
    assert!(item["p50Ms"].as_f64().is_some_and(|ms| ms > 0.0), "{item}");
    assert!(item["p99Ms"].as_f64() >= item["p50Ms"].as_f64());
    let backoff = item["backoffSeconds"].as_f64().expect("the 429's Retry-After holds the origin back");
    assert!(backoff > 0.0 && backoff <= 30.0, "{backoff}");
    // It needs a token.
    assert_eq!(server.raw(Method::GET, "/v1/push-services", "").await.0, 401);
}

/// `GET /v1/stats/daily`: what came and went per day, summed over today
/// and yesterday (a run across midnight splits them).
#[tokio::test]
async fn daily_stats_count_subscriptions_and_messages() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let mut subs = Vec::new();
    for _ in 0..4 {
        let s = minted(&dev, &server).await;
        assert_eq!(server.subscribe(&s).await.0, 200);
        subs.push(s);
    }
    // One leaves through the API, one answers 410, one is replaced by its browser's next.
    let right = json!({"endpoint": subs[0]["endpoint"], "keys": {"auth": subs[0]["keys"]["auth"]}});
    assert_eq!(server.raw(Method::DELETE, "/api/subscription", right.to_string()).await.0, 200);
    dev.post(&format!("/subscriptions/{}/expire", sub_id(&subs[1])), json!({})).await;
    let mut next = minted(&dev, &server).await;
    next["oldEndpoint"] = subs[2]["endpoint"].clone();
    next["oldKeys"] = json!({"auth": subs[2]["keys"]["auth"]});
    assert_eq!(server.subscribe(&next).await.0, 200);
    let r = server.http.post(server.url("/api/push?wait=true")).bearer_auth(TOKEN).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let (status, v) = server.get("/v1/stats/daily?days=2").await;
    assert_eq!(status, 200, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let today = items[1]["date"].as_str().unwrap();
    assert_eq!(today.len(), 10, "YYYY-MM-DD: {today}");
    let sum = |k: &str| items.iter().map(|i| i[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!(
        (sum("subscribed"), sum("unsubscribed"), sum("sent"), sum("delivered")),
        (4, 2, 1, 2),
        "4 came (the replacement is not a new one), the API's and the 410's went: {v}"
    );
    let (_, stats) = server.get("/v1/stats").await;
    assert_eq!(stats["subscriptions"].as_i64(), Some(sum("subscribed") - sum("unsubscribed")));
    // The dev push service is none of the vendors'; an FCM endpoint is FCM's.
    let fcm = json!({"endpoint": "https://fcm.googleapis.com/fcm/send/daily", "keys": subs[3]["keys"]});
    assert_eq!(server.subscribe(&fcm).await.0, 200);
    let (_, stats) = server.get("/v1/stats").await;
    assert_eq!(stats["subscriptionsByPushService"], json!({"apple": 0, "fcm": 1, "mozilla": 0, "other": 2, "wns": 0}));
    let (_, listed) = server.get("/v1/subscriptions").await;
    let services: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|i| i["pushService"].as_str().unwrap()).collect();
    assert_eq!(services, ["other", "other", "fcm"]);
    assert_eq!(server.get("/v1/stats/daily").await.1["items"].as_array().map(Vec::len), Some(30));
    for bad in ["0", "367", "x"] {
        let (status, v) = server.get(&format!("/v1/stats/daily?days={bad}")).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    assert_eq!(server.raw(Method::GET, "/v1/stats/daily", "").await.0, 401);
}
