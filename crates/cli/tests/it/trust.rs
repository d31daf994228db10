//! The holes a live attack on release `69e12ad` found (issue 21), each
//! tried again against the real binary: each test fails on that release
//! (run them with `TOCSIN_TEST_BIN=<old tocsin>`) and passes on this one.
//! A refused request stores nothing.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{call, create_token, minted, post, tamper, with_user, Backend, Db, Server, TOKEN};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Flags of a server behind a proxy at 127.0.0.1, with a burst of `burst`
/// requests per address and (nearly) no refill.
fn behind_proxy(burst: &str) -> Vec<&str> {
    let flags = ["--endpoint-policy", "any", "--trusted-proxies", "127.0.0.1", "--rate-limit-per-second", "0.001"];
    [&flags[..], &["--rate-limit-burst", burst]].concat()
}

/// The test server without loopback's exemption from the limits.
fn limited(db: &Db, extra: &[&str]) -> Server {
    Server::start_unsetting(db, extra, None, &["TOCSIN_RATE_LIMIT_EXEMPT"])
}

/// Polls a message until it is done, for at most `within` (a release that
/// halts never gets there).
async fn done_within(server: &Server, id: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (_, m) = server.get(&format!("/v1/messages/{id}")).await;
        if m["state"] == "done" || m["state"] == "cancelled" {
            return m;
        }
        assert!(start.elapsed() < within, "message {id} not done after {within:?}: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /api/push?wait=true` with a small classic payload: the message's id.
async fn push_and_wait(server: &Server) -> String {
    let r = server
        .http
        .post(server.url("/api/push?wait=true"))
        .bearer_auth(TOKEN)
        .body(r#"{"title":"t"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["data"]["messageId"].as_str().unwrap().to_owned()
}

// 1. ---------------------------------------------------------------------

/// A stored endpoint posted again with keys of the caller's choosing is
/// refused (403 `subscription-not-proven`), so its user, topics and
/// messages stay with the browser that made it; only that browser (its
/// `keys.auth`) may post it again.
async fn a_known_endpoint_is_not_taken_over(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let mut victim = minted(&dev, &server).await;
    with_user(&mut victim, "alice");
    victim["topics"] = json!(["private"]);
    assert_eq!(post(&server, &victim).await.0, 200);
    let attacker = minted(&dev, &server).await;
    let mut same_p256dh = victim["keys"].clone();
    same_p256dh["auth"] = attacker["keys"]["auth"].clone();
    let mut same_auth = victim["keys"].clone();
    same_auth["p256dh"] = attacker["keys"]["p256dh"].clone();
    for (name, keys) in [
        ("the attacker's keys", attacker["keys"].clone()),
        ("another auth", same_p256dh),
        ("another p256dh", same_auth),
    ] {
        let forged = json!({"endpoint": victim["endpoint"], "keys": keys, "topics": ["mine"]});
        assert_eq!(post(&server, &forged).await, (403, "subscription-not-proven".into()), "{name}");
    }
    // The two-step takeover: re-key, then move the user with the chosen secret.
    let mut moved = attacker.clone();
    moved["oldEndpoint"] = victim["endpoint"].clone();
    moved["oldKeys"] = json!({"auth": attacker["keys"]["auth"]});
    assert_eq!(post(&server, &moved).await, (403, "old-subscription-not-proven".into()));
    let (_, list) = server.get("/v1/subscriptions?userId=alice").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!((&items[0]["endpoint"], &items[0]["topics"]), (&victim["endpoint"], &json!(["private"])));
    assert_eq!(server.count().await, 1, "nothing stored");
    // Its keys are the victim's: a test notification answers to its secret only.
    let test = |auth: &Value| json!({"endpoint": victim["endpoint"], "keys": {"auth": auth}});
    let (s, _) = server.raw(Method::POST, "/api/subscription/test", test(&attacker["keys"]["auth"]).to_string()).await;
    assert_eq!(s, 404);
    let (s, _) = server.raw(Method::POST, "/api/subscription/test", test(&victim["keys"]["auth"]).to_string()).await;
    assert_eq!(s, 202);
    // Nor through an import: the row is skipped, the rest imported.
    let file = jsonl(&[json!({"endpoint": victim["endpoint"], "keys": attacker["keys"]}), attacker.clone()]);
    let out = tocsin()
        .args(["subscriptions", "import", file.path().to_str().unwrap(), "--database", &db.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 1, skipped 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(server.count().await, 2);
    // The browser that holds it posts it again: topics and expiry change.
    let mut again = victim.clone();
    again["topics"] = json!(["news"]);
    again["expirationTime"] = json!(253402300799999i64);
    assert_eq!(post(&server, &again).await.0, 200);
    let (_, list) = server.get("/v1/subscriptions?userId=alice").await;
    assert_eq!(list["items"][0]["topics"], json!(["news"]));
    assert_eq!(list["items"][0]["expirationTime"], json!(253402300799999i64));
}
both_backends!(a_known_endpoint_is_not_taken_over_on, a_known_endpoint_is_not_taken_over);

// 2. ---------------------------------------------------------------------

/// `expirationTime` is null or within 0..=year 9999 (400
/// `invalid-expiration-time` otherwise, nothing stored); a row that cannot
/// be read (as an older release stored 2^63) is counted `unreadable` and
/// skipped: the broadcast finishes and the list answers.
async fn one_bad_row_halts_nothing(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--wait-timeout", "30"]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    for bad in [json!(9223372036854775808u64), json!(u64::MAX), json!(253402300800000i64), json!(-1), json!(1e300)] {
        let mut body = sub.clone();
        body["expirationTime"] = bad.clone();
        assert_eq!(post(&server, &body).await, (400, "invalid-expiration-time".into()), "{bad}");
    }
    assert_eq!(server.count().await, 0, "nothing stored");
    let subs: Vec<Value> = futures_util::future::join_all((0..3).map(|_| minted(&dev, &server))).await;
    for s in &subs {
        assert_eq!(post(&server, s).await.0, 200);
    }
    tamper(
        &db,
        &format!(
            "UPDATE subscriptions SET expiration_time = -5 WHERE endpoint = '{}'",
            subs[1]["endpoint"].as_str().unwrap()
        ),
    );
    let (s, list) = server.get("/v1/subscriptions").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "the unreadable row is left out");
    let id = push_and_wait(&server).await;
    let m = done_within(&server, &id, Duration::from_secs(30)).await;
    assert_eq!(
        (m["counts"]["targeted"].as_i64(), m["counts"]["delivered"].as_i64(), m["counts"]["failed"].as_i64()),
        (Some(3), Some(2), Some(1)),
        "{m}"
    );
    assert_eq!(m["failedByReason"]["unreadable"], 1, "{m}");
}
both_backends!(one_bad_row_halts_nothing_on, one_bad_row_halts_nothing);

// 3. ---------------------------------------------------------------------

/// Behind a proxy only `--client-ip-header` is believed, from the right:
/// a client's own `Forwarded` cannot pick its address; and a valid token is
/// never refused by the failed-authentication limit, whoever failed "as" it.
#[tokio::test]
async fn a_client_cannot_pick_its_address_behind_a_proxy() {
    let db = Db::new(Backend::Sqlite);
    let args = behind_proxy("3");
    let server = limited(&db, &args);
    let client = |i: u32| {
        let r = server.http.post(server.url("/api/subscription")).header("content-type", "application/json").body("{}");
        // What a stock nginx forwards: its own X-Forwarded-For, and the
        // client's Forwarded, passed through.
        r.header("x-forwarded-for", "198.51.100.7").header("forwarded", format!("for=203.0.113.{i}"))
    };
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(client(i).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 429, 429], "counted as 198.51.100.7 whatever Forwarded says");
    // The same client as another address: its own bucket.
    let other = server.http.post(server.url("/api/subscription")).header("x-forwarded-for", "198.51.100.8").body("{}");
    assert_eq!(other.send().await.unwrap().status(), 400);

    // Failed authentications sent "as" the site's backend do not lock its
    // valid tokens out.
    let stored = create_token(&db, "backend", "read");
    let as_backend = |token: &str| {
        server.http.get(server.url("/v1/stats")).bearer_auth(token).header("x-forwarded-for", "192.0.2.10")
    };
    let mut failed = Vec::new();
    for _ in 0..5 {
        failed.push(as_backend("tsn_wrong").send().await.unwrap().status().as_u16());
    }
    assert_eq!(failed, [401, 401, 401, 429, 429]);
    assert_eq!(as_backend(TOKEN).send().await.unwrap().status(), 200, "the admin token");
    assert_eq!(as_backend(&stored).send().await.unwrap().status(), 200, "a stored token");
    drop(server);

    // --client-ip-header x-real-ip: X-Forwarded-For is the client's own words.
    let db = Db::new(Backend::Sqlite);
    let server = limited(&db, &[&args[..], &["--client-ip-header", "x-real-ip"]].concat());
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = server.http.post(server.url("/api/subscription")).body("{}").header("x-real-ip", "198.51.100.9");
        statuses.push(r.header("x-forwarded-for", format!("203.0.113.{i}")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 429]);
}

// 4. ---------------------------------------------------------------------

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether the server closes `stream` (EOF or reset) within `within`.
fn closed_within(mut stream: TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Silent sockets and half an HTTP/2 preface are closed at the header-read
/// timeout counted from accept (not the idle timeout); one address holds at
/// most `--max-connections-per-address`; `--metrics-listen` is the same.
#[tokio::test]
async fn one_client_cannot_hold_every_connection() {
    let db = Db::new(Backend::Sqlite);
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let args = [
        "--endpoint-policy",
        "any",
        "--header-read-timeout",
        "2",
        "--idle-timeout",
        "120",
        "--max-connections-per-address",
        "4",
        "--metrics-listen",
        &metrics,
    ];
    let server = limited(&db, &args);
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    let started = Instant::now();
    let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let fifth = TcpStream::connect(&addr).unwrap();
    assert!(closed_within(fifth, Duration::from_secs(1)), "the fifth connection of one address is closed at once");
    let mut preface = TcpStream::connect(&addr);
    // Refused while four are open, or closed at once.
    if let Ok(p) = preface.as_mut() {
        let _ = p.write_all(b"PRI * HTTP/2.0\r\n");
    }
    let checks: Vec<_> =
        silent.into_iter().map(|s| std::thread::spawn(move || closed_within(s, Duration::from_secs(60)))).collect();
    for c in checks {
        assert!(c.join().unwrap(), "a silent connection is closed");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "closed by the header-read timeout (2 s), not the idle one (120 s): {took:?}"
    );
    // Places are free again: half a preface is closed the same way.
    let mut p = TcpStream::connect(&addr).unwrap();
    p.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    assert!(closed_within(p, Duration::from_secs(60)), "half a preface is closed");
    let r = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The metrics listener: the same accept loop.
    let m = TcpStream::connect(&metrics).unwrap();
    assert!(closed_within(m, Duration::from_secs(60)), "a silent metrics connection is closed");
    let r = server.http.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eprintln!("silent connections closed after {took:?}");
}

// 5. ---------------------------------------------------------------------

/// `sendAt` is at most a year ahead (400 `invalid-send-at`, nothing
/// stored); a stored time past the year 9999 shows and cancels without a
/// panic.
#[tokio::test]
async fn send_at_is_bounded_and_views_never_panic() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let year = 366 * 86_400_000i64;
    for bad in [
        json!(253402300800000i64),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(now_ms() + year + 86_400_000),
        json!("9999-12-31T23:59:59Z"),
        json!(-1),
    ] {
        let (s, v) =
            server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": "x", "sendAt": bad})).await;
        assert_eq!((s, v["error"]["id"].as_str()), (400, Some("invalid-send-at")), "{bad}");
    }
    let (_, list) = server.get("/v1/messages").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "nothing stored: {list}");
    let (s, m) = server
        .post_json(
            "/v1/messages",
            &json!({"target": {"all": true}, "payload": "x", "sendAt": now_ms() + year - 86_400_000}),
        )
        .await;
    assert_eq!((s, m["state"].as_str()), (202, Some("scheduled")), "{m}");
    let id = m["id"].as_str().unwrap();
    // As an older release could have stored it.
    tamper(&db, &format!("UPDATE messages SET send_at = 9223372036854775807 WHERE id = '{id}'"));
    let (s, list) = server.get("/v1/messages").await;
    assert_eq!(s, 200, "{list}");
    let (s, one) = server.get(&format!("/v1/messages/{id}")).await;
    assert_eq!((s, one["sendAt"].as_str()), (200, Some("9999-12-31T23:59:59.999Z")));
    let (s, _) = call(&server, Method::DELETE, &format!("/v1/messages/{id}"), Some(TOKEN), None).await;
    assert_eq!(s, 200);
    server.assert_up().await;
}

// 6. and 7. ------------------------------------------------------------------

/// Opens `/v1/events/stream` (of `app`, or the default app) with `token`.
async fn open_stream(server: &Server, token: &str, app: Option<&str>) -> reqwest::Response {
    let path = app.map_or("/v1/events/stream".to_owned(), |a| format!("/v1/apps/{a}/events/stream"));
    server.http.get(server.url(&path)).bearer_auth(token).send().await.unwrap()
}

/// Whether a streaming answer ends within `within`.
async fn ends_within(mut r: reqwest::Response, within: Duration) -> bool {
    tokio::time::timeout(within, async { while let Ok(Some(_)) = r.chunk().await {} }).await.is_ok()
}

/// An open event stream ends once its token is revoked.
#[tokio::test]
async fn a_revoked_token_stops_streaming() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let token = create_token(&db, "watcher", "read");
    let stream = open_stream(&server, &token, None).await;
    assert_eq!(stream.status(), 200);
    let out = tocsin().args(["token", "revoke", "watcher", "--database", &db.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ends_within(stream, Duration::from_secs(30)).await, "the stream ends within its 5 s re-check");
    assert_eq!(open_stream(&server, &token, None).await.status(), 401);
}

/// A node's streams are shared: 8 per token, no app more than half, and
/// each lives at most `--stream-max-seconds`.
#[tokio::test]
async fn one_token_cannot_take_every_stream() {
    let db = Db::new(Backend::Sqlite);
    let out = tocsin().args(["app", "create", "other", "--database", &db.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::start(&db, &["--endpoint-policy", "any", "--stream-max-seconds", "600"]);
    let tokens: Vec<String> = (0..5).map(|i| create_token(&db, &format!("reader-{i}"), "read")).collect();
    let mut held = Vec::new();
    for _ in 0..8 {
        let r = open_stream(&server, &tokens[0], None).await;
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let ninth = open_stream(&server, &tokens[0], None).await;
    assert_eq!(ninth.status(), 429);
    assert_eq!(ninth.json::<Value>().await.unwrap()["error"]["id"], "too-many-streams");
    for t in &tokens[1..4] {
        for _ in 0..8 {
            let r = open_stream(&server, t, None).await;
            assert_eq!(r.status(), 200);
            held.push(r);
        }
    }
    let over = open_stream(&server, &tokens[4], None).await;
    assert_eq!(over.status(), 429, "the app holds half of the node's 64 streams");
    let other = open_stream(&server, TOKEN, Some("other")).await;
    assert_eq!(other.status(), 200, "another app still gets one");
    drop(held);
    drop(server);

    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--stream-max-seconds", "2"]);
    let stream = open_stream(&server, TOKEN, None).await;
    assert!(ends_within(stream, Duration::from_secs(30)).await, "a stream ends after --stream-max-seconds");
}

// 8. ---------------------------------------------------------------------

/// A webhook receiver in the test: answers 200 after `delay`, and records
/// when each delivery arrived and when it was answered.
struct Receiver {
    url: String,
    arrived: Arc<Mutex<Vec<Instant>>>,
    answered: Arc<Mutex<Vec<Instant>>>,
}

async fn receiver(delay: Duration) -> Receiver {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (arrived, answered) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let (a, b) = (arrived.clone(), answered.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            a.lock().unwrap().push(Instant::now());
                            tokio::time::sleep(delay).await;
                            b.lock().unwrap().push(Instant::now());
                            let _ =
                                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Receiver { url, arrived, answered }
}

/// Four slow receivers of one app do not starve another app's fast one:
/// deliveries are claimed round-robin, each sent by a task of its own.
#[tokio::test]
async fn slow_receivers_delay_only_their_own_queue() {
    let db = Db::new(Backend::Sqlite);
    let out = tocsin().args(["app", "create", "other", "--database", &db.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::start(&db, &["--endpoint-policy", "any", "--webhook-timeout", "20"]);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let r = receiver(Duration::from_secs(9)).await;
        let (s, v) = server.post_json("/v1/webhooks", &json!({"url": r.url, "events": ["message.created"]})).await;
        assert_eq!(s, 201, "{v}");
        slow.push(r);
    }
    let fast = receiver(Duration::ZERO).await;
    let (s, v) =
        server.post_json("/v1/apps/other/webhooks", &json!({"url": fast.url, "events": ["message.created"]})).await;
    assert_eq!(s, 201, "{v}");
    // Each slow webhook gets a backlog, then the other app has one event.
    for _ in 0..3 {
        let (s, _) = server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": "x"})).await;
        assert_eq!(s, 202);
    }
    let start = Instant::now();
    while slow.iter().any(|r| r.arrived.lock().unwrap().is_empty()) {
        assert!(start.elapsed() < Duration::from_secs(30), "the slow receivers get their first delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = Instant::now();
    let (s, _) = server.post_json("/v1/apps/other/messages", &json!({"target": {"all": true}, "payload": "x"})).await;
    assert_eq!(s, 202);
    while fast.arrived.lock().unwrap().is_empty() {
        assert!(sent.elapsed() < Duration::from_secs(60), "the fast receiver gets its event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = fast.arrived.lock().unwrap()[0];
    let first_slow_answer = slow.iter().filter_map(|r| r.answered.lock().unwrap().first().copied()).min();
    eprintln!("the fast receiver got its event {:?} after it happened", got - sent);
    assert!(first_slow_answer.is_none_or(|a| got < a), "it did not wait for a slow receiver to answer");
}

// 9. ---------------------------------------------------------------------

/// A known push host is accepted on port 443 only; `/metrics` gives at
/// most 50 origins a latency series of their own, the rest are `other`.
#[tokio::test]
async fn per_origin_state_is_bounded() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "known"]);
    let dev = DevPush::start(&[]);
    let keys = minted(&dev, &server).await["keys"].clone();
    for (endpoint, want) in [
        ("https://fcm.googleapis.com:8443/fcm/send/a", 400),
        ("https://updates.push.services.mozilla.com:1/wpush/v2/a", 400),
        ("https://fcm.googleapis.com:443/fcm/send/b", 200),
        ("https://fcm.googleapis.com/fcm/send/c", 200),
    ] {
        let (s, id) = post(&server, &json!({"endpoint": endpoint, "keys": keys})).await;
        assert_eq!(s, want, "{endpoint}: {id}");
        if want == 400 {
            assert_eq!(id, "endpoint-not-allowed");
        }
    }
    drop(server);

    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--max-attempts", "1", "--push-timeout", "5"]);
    // 60 origins: ports where nobody listens (each refused at once).
    let listeners: Vec<_> = (0..60).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    drop(listeners);
    for p in &ports {
        let (s, id) = post(&server, &json!({"endpoint": format!("http://127.0.0.1:{p}/push"), "keys": keys})).await;
        assert_eq!(s, 200, "{id}");
    }
    let r = server.http.post(server.url("/api/push?wait=true")).bearer_auth(TOKEN).body("x").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = server.http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    let origins: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("tocsin_push_latency_seconds_count{"))
        .filter_map(|l| l.split("origin=\"").nth(1)?.split('"').next())
        .collect();
    assert!(origins.len() <= 51, "{} origin series", origins.len());
    assert!(origins.contains("other"), "{origins:?}");
}

// 10. --------------------------------------------------------------------

/// `Retry-After: 18446744073709551615` from a push service panics nothing:
/// the wait is clamped to the message's TTL, the message finishes, and the
/// engine goes on sending to others.
#[tokio::test]
async fn a_huge_retry_after_panics_nothing() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let (rude, fine) = (DevPush::start(&[]), DevPush::start(&[]));
    let sub = minted(&rude, &server).await;
    assert_eq!(post(&server, &sub).await.0, 200);
    let fault = json!({"status": 429, "retryAfter": "18446744073709551615", "times": 5});
    assert!(rude.post(&format!("/subscriptions/{}/faults", sub_id(&sub)), fault).await.status().is_success());
    let (s, m) = server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": "x", "ttl": 3})).await;
    assert_eq!(s, 202, "{m}");
    let m = done_within(&server, m["id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(m["counts"]["failed"], 1, "{m}");
    assert_eq!(m["failedByReason"]["ttl-expired"], 1, "{m}");
    // The engine still sends.
    let other = minted(&fine, &server).await;
    assert_eq!(post(&server, &other).await.0, 200);
    let id = other_message(&server, &other).await;
    let m = done_within(&server, &id, Duration::from_secs(60)).await;
    assert_eq!(m["counts"]["delivered"], 1, "{m}");
}

/// A message to one stored subscription, by id.
async fn other_message(server: &Server, sub: &Value) -> String {
    let (_, list) = server.get("/v1/subscriptions").await;
    let id = list["items"].as_array().unwrap().iter().find(|i| i["endpoint"] == sub["endpoint"]).unwrap()["id"].clone();
    let (s, m) = server.post_json("/v1/messages", &json!({"target": {"subscriptionIds": [id]}, "payload": "y"})).await;
    assert_eq!(s, 202, "{m}");
    m["id"].as_str().unwrap().to_owned()
}

// 11. --------------------------------------------------------------------

/// A webhook URL's password shows in no view and in no stored error.
#[tokio::test]
async fn webhook_passwords_never_show() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--webhook-retry-schedule", "3600"]);
    let read = create_token(&db, "grafana", "read");
    let url = format!("http://hook-user:hunter2@127.0.0.1:{}/hook", free_port());
    let (s, created) = server.post_json("/v1/webhooks", &json!({"url": url, "events": ["message.created"]})).await;
    assert_eq!(s, 201, "{created}");
    assert!(!created.to_string().contains("hunter2"), "{created}");
    let (s, _) = server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": "x"})).await;
    assert_eq!(s, 202);
    let start = Instant::now();
    loop {
        let (s, list) = call(&server, Method::GET, "/v1/webhooks", Some(&read), None).await;
        assert_eq!(s, 200);
        let text = list.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
        if !list["items"][0]["lastError"].is_null() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the delivery fails and records its error: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// 12. --------------------------------------------------------------------

/// `shown` and `clicked` count once per delivery, however often the token
/// is replayed.
#[tokio::test]
async fn events_count_once_per_delivery() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    assert_eq!(post(&server, &sub).await.0, 200);
    let id = push_and_wait(&server).await;
    let delivered = dev.messages().await;
    let payload: Value = serde_json::from_str(delivered[0]["payload"].as_str().unwrap()).unwrap();
    let token = payload["eventToken"].clone();
    let event = |kind: &str, proof: bool| {
        let mut e = json!({"type": kind, "messageId": id, "eventToken": token});
        if proof {
            e["endpoint"] = sub["endpoint"].clone();
            e["keys"] = json!({"auth": sub["keys"]["auth"]});
        }
        e.to_string()
    };
    // Replayed without naming its subscription (as an older sw.js reports):
    // once per address.
    for _ in 0..5 {
        assert_eq!(server.raw(Method::POST, "/api/events", event("shown", false)).await.0, 202);
    }
    let (_, m) = server.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m["counts"]["shown"], 1, "{m}");
    // Naming it, with its auth secret as proof (sw.js): once per delivery.
    for _ in 0..5 {
        assert_eq!(server.raw(Method::POST, "/api/events", event("shown", true)).await.0, 202);
        assert_eq!(server.raw(Method::POST, "/api/events", event("clicked", true)).await.0, 202);
    }
    // A subscription that is not proven is refused.
    let mut forged: Value = serde_json::from_str(&event("shown", true)).unwrap();
    forged["keys"]["auth"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
    let (s, body) = server.raw(Method::POST, "/api/events", forged.to_string()).await;
    assert_eq!(s, 403, "{body}");
    let (_, m) = server.get(&format!("/v1/messages/{id}")).await;
    assert_eq!((m["counts"]["shown"].as_i64(), m["counts"]["clicked"].as_i64()), (Some(2), Some(1)), "{m}");
}

// 13. --------------------------------------------------------------------

/// The dashboard is served with a strict CSP, `nosniff` and no referrer.
#[tokio::test]
async fn the_dashboard_has_security_headers() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    for path in ["/admin", "/admin/admin.js", "/admin/admin.css"] {
        let r = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert_eq!(h.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]), "{path}");
        assert_eq!(h.get("referrer-policy").map(|v| v.as_bytes()), Some(&b"no-referrer"[..]), "{path}");
    }
}

// 14. --------------------------------------------------------------------

/// A full limiter evicts the least recently used addresses, not all: an
/// address being limited stays limited while 100,000 others are sprayed.
/// (The secrets of the test and unsubscribe routes are compared in constant
/// time, in Rust: `AuthSecret::matches`, unit-tested in the protocol crate.)
#[tokio::test]
async fn spraying_addresses_frees_no_one() {
    let db = Db::new(Backend::Sqlite);
    let args = behind_proxy("2");
    let server = limited(&db, &args);
    // A pooled connection that was opened but never used is closed by the
    // server at the header-read timeout (10 s): the client lets its idle
    // connections go sooner, as a proxy in front of Tocsin would.
    let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5)).build().unwrap();
    let send = |ip: String| {
        let (http, url) = (http.clone(), server.url("/api/subscription"));
        async move {
            // A connection the server closed as the request went out is
            // tried again once (a client's pool race, not the limiter).
            for _ in 0..2 {
                if let Ok(r) = http.post(&url).header("x-forwarded-for", &ip).body("{}").send().await {
                    return r.status().as_u16();
                }
            }
            0
        }
    };
    let victim = || send("192.0.2.1".into());
    assert_eq!((victim().await, victim().await, victim().await), (400, 400, 429));
    use futures_util::stream::StreamExt;
    // 100,050 other addresses, 5,000 at a time; the victim keeps knocking
    // between them (so it is never the least recently used).
    let mut statuses = Vec::new();
    for chunk in 0..21u32 {
        let ips = (chunk * 5_000..((chunk + 1) * 5_000).min(100_050))
            .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string());
        statuses.extend(futures_util::stream::iter(ips).map(send).buffer_unordered(32).collect::<Vec<u16>>().await);
        assert_eq!(victim().await, 429, "still limited after {} other addresses", statuses.len());
    }
    let odd: std::collections::BTreeMap<u16, usize> =
        statuses.iter().filter(|s| **s != 400).fold(Default::default(), |mut m, s| {
            *m.entry(*s).or_default() += 1;
            m
        });
    assert!(odd.is_empty(), "every sprayed address has its own allowance: {odd:?}");
    assert_eq!(victim().await, 429, "still limited");
}

// Found by the fuzzer ---------------------------------------------------------

/// Concurrent key rotations (Schemathesis's two workers found it): each
/// read-then-write transaction on SQLite failed "database is locked" under
/// another writer, a 500; every store transaction now takes the write lock
/// first, so they wait their turn.
#[tokio::test]
async fn concurrent_writes_on_sqlite_wait_their_turn() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    for _ in 0..5 {
        let calls = (0..8).map(|_| call(&server, Method::POST, "/v1/vapid-keys", Some(TOKEN), None));
        for (s, v) in futures_util::future::join_all(calls).await {
            assert!(s < 300, "{s} {v}");
        }
    }
    let (_, keys) = server.get("/v1/vapid-keys").await;
    assert_eq!(keys["items"].as_array().map(Vec::len), Some(41), "{keys}");
}
