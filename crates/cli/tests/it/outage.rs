//! The database goes away under a running server, as an operator sees it:
//! PostgreSQL crashes (`pg_ctl stop -m immediate`) in the middle of a
//! broadcast and comes back; SQLite's disk fills up and is emptied.
//!
//! While it is away requests answer 503 at once (`database-unavailable`,
//! `storage-full`, with `Retry-After`) instead of hanging; `/readyz` says
//! so and `/healthz` does not; pages whose pushes went out keep their
//! results and write them when the database is back, so nobody gets the
//! message twice and the counts are exact; and every subscription the
//! server answered 2xx for is stored.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::outage::{PrivatePg, SmallDisk};
use common::server::{assert_reached_once, populate, received, Backend, Db, Server};
use common::*;
use serde_json::{json, Value};

/// Posts fresh subscriptions to `/api/subscription` until `stop`, and
/// returns each one's endpoint with the status it was answered.
async fn subscribe_until(
    dev: Arc<DevPush>,
    server: Arc<Server>,
    key: String,
    stop: Arc<AtomicBool>,
) -> Vec<(String, u16)> {
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sub = dev.mint(Some(&key)).await;
        let (status, _) = server.subscribe(&sub).await;
        answers.push((sub["endpoint"].as_str().unwrap().to_owned(), status));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answers
}

/// A request while the database is away: its status, error id and
/// `Retry-After`.
async fn answer(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Option<String>) {
    let mut req = server.http.request(method, server.url(path)).bearer_auth(common::server::TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    // Not a measure of speed: a bound on "does it answer at all" (it hung
    // for more than 15 s before --database-timeout, set to 1 s here).
    let r = req.timeout(Duration::from_secs(60)).send().await.expect("an answer while the database is away");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"]["id"].as_str().unwrap_or_default().to_owned(), retry)
}

async fn wait_for_received(dev: &DevPush, at_least: u64) {
    for _ in 0..12_000 {
        if received(dev).await.0 >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the broadcast did not progress");
}

#[tokio::test]
async fn a_postgres_crash_mid_broadcast_answers_503_and_sends_nothing_twice() {
    let n = 10_000;
    let pg = PrivatePg::start();
    let db = Db::at(pg.url(), Backend::Postgres);
    let dev = Arc::new(DevPush::start(&[]));
    // --database-timeout by the environment rather than the flag, so that
    // this test also runs against a release without it (TOCSIN_TEST_BIN).
    // A lease shorter than the outage: with one node, still nothing twice.
    let server = Arc::new(Server::start_with_env(
        &db,
        &["--endpoint-policy", "any", "--lease-seconds", "2"],
        &[("TOCSIN_DATABASE_TIMEOUT", "1")],
    ));
    let key = server.vapid_public_key().await;
    let subs = populate(&dev, &server, &db, n).await;
    let stop = Arc::new(AtomicBool::new(false));
    let subscriber = tokio::spawn(subscribe_until(dev.clone(), server.clone(), key.clone(), stop.clone()));
    let (status, m) =
        server.post_json("/v1/messages", &json!({"payload": "through an outage", "target": {"all": true}})).await;
    assert_eq!(status, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    wait_for_received(&dev, (n / 3) as u64).await;
    pg.crash();
    let at_crash = received(&dev).await.0;

    // While it is down: 503 with Retry-After, not a hang; readiness says so.
    let sub = dev.mint(Some(&key)).await;
    let (status, err, retry) = answer(&server, reqwest::Method::POST, "/api/subscription", Some(sub.clone())).await;
    assert_eq!((status, err.as_str()), (503, "database-unavailable"), "subscribing while the database is down");
    assert!(retry.is_some(), "503 database-unavailable carries Retry-After");
    let (status, err, _) = answer(&server, reqwest::Method::GET, &format!("/v1/messages/{id}"), None).await;
    assert_eq!((status, err.as_str()), (503, "database-unavailable"), "reading a message");
    let (status, err, retry) =
        answer(&server, reqwest::Method::POST, "/v1/messages", Some(json!({"payload": "x", "target": {"all": true}})))
            .await;
    assert_eq!((status, err.as_str()), (503, "database-unavailable"), "sending a message");
    assert!(retry.is_some());
    let (status, _, _) = answer(&server, reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(status, 503, "/readyz while the database is down");
    let (status, _, _) = answer(&server, reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200, "/healthz while the database is down: the process is fine");

    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again();
    let (status, _, _) = answer(&server, reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(status, 200, "/readyz once the database is back");
    let m = server.wait_done(&id).await;
    stop.store(true, Ordering::Relaxed);
    let answers = subscriber.await.unwrap();

    eprintln!("crashed after {at_crash} of {n} were received");
    assert!(at_crash < n as u64, "the crash came after the broadcast had ended");
    assert_reached_once(&dev, &subs, &m).await;
    // The one refused while down was not stored; every one answered 2xx is.
    let stored = stored_endpoints(&db.url).await;
    assert!(!stored.contains(sub["endpoint"].as_str().unwrap()), "the subscription answered 503 was stored");
    let (status, _) = server.subscribe(&sub).await;
    assert_eq!(status, 200, "the subscription refused while the database was down is stored once it is back");
    let ok: Vec<&String> = answers.iter().filter(|(_, s)| (200..300).contains(s)).map(|(e, _)| e).collect();
    let refused = answers.iter().filter(|(_, s)| *s == 503).count();
    eprintln!("subscribing across the outage: {} answered 2xx, {refused} answered 503", ok.len());
    assert!(refused > 0, "some subscriptions were tried while the database was down");
    for e in ok {
        assert!(stored.contains(e), "a subscription answered 2xx is missing from the database: {e}");
    }
}

async fn stored_endpoints(url: &str) -> std::collections::HashSet<String> {
    use sqlx::Connection as _;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT endpoint FROM subscriptions").fetch_all(&mut c).await.unwrap().into_iter().collect()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT endpoint FROM subscriptions").fetch_all(&mut c).await.unwrap().into_iter().collect()
    }
}

#[tokio::test]
async fn a_full_disk_on_sqlite_answers_503_writes_nothing_halfway_and_recovers() {
    let n = 1_000;
    let disk = SmallDisk::mount(24);
    let db = Db::at(format!("sqlite://{}/tocsin.db", disk.path().display()), Backend::Sqlite);
    let dev = Arc::new(DevPush::start(&[]));
    // Slow pages (two requests in flight, 10 ms each): the broadcast is
    // still going when the disk fills.
    let server = Arc::new(Server::start(
        &db,
        &["--endpoint-policy", "any", "--concurrency", "2", "--per-origin-concurrency", "2", "--page-size", "100"],
    ));
    let key = server.vapid_public_key().await;
    let subs = populate(&dev, &server, &db, n).await;
    for s in &subs {
        let r = dev.post(&format!("/subscriptions/{}/faults", sub_id(s)), json!({"delayMs": 10})).await;
        assert_eq!(r.status(), 204);
    }
    let (status, m) =
        server.post_json("/v1/messages", &json!({"payload": "on a full disk", "target": {"all": true}})).await;
    assert_eq!(status, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    wait_for_received(&dev, 100).await;
    disk.fill();

    // Writes now fail whole: subscribe until the disk refuses one (a write
    // may still fit in room SQLite had already taken).
    let mut accepted = Vec::new();
    let refused = loop {
        let sub = dev.mint(Some(&key)).await;
        let (status, err, retry) = answer(&server, reqwest::Method::POST, "/api/subscription", Some(sub.clone())).await;
        match status {
            200 | 201 => accepted.push(sub["endpoint"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(err, "storage-full");
                assert!(retry.is_some(), "503 storage-full carries Retry-After");
                break sub;
            }
            other => panic!("subscribing on a full disk answered {other} {err}"),
        }
        assert!(accepted.len() < 5_000, "the disk never filled");
    };
    let (status, err, _) =
        answer(&server, reqwest::Method::POST, "/v1/messages", Some(json!({"payload": "x", "target": {"all": true}})))
            .await;
    assert_eq!((status, err.as_str()), (503, "storage-full"), "a message on a full disk");
    let (status, _, _) = answer(&server, reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still_sending = server.get(&format!("/v1/messages/{id}")).await.1;
    disk.empty();

    let m = server.wait_done(&id).await;
    eprintln!(
        "full disk: {} subscriptions fit before the first refusal; the message was {} when room came back",
        accepted.len(),
        still_sending["state"]
    );
    assert_reached_once(&dev, &subs, &m).await;
    let stored = stored_endpoints(&db.url).await;
    for e in &accepted {
        assert!(stored.contains(e), "a subscription answered 2xx is missing: {e}");
    }
    assert!(!stored.contains(refused["endpoint"].as_str().unwrap()), "the refused subscription was written halfway");
    // Room again: the same subscription is stored, and a new message goes out.
    let (status, _) = server.subscribe(&refused).await;
    assert_eq!(status, 200, "the refused subscription is stored once there is room");
    assert!(stored_endpoints(&db.url).await.contains(refused["endpoint"].as_str().unwrap()));
    let (status, m) = server.post_json("/v1/messages", &json!({"payload": "after", "target": {"all": true}})).await;
    assert_eq!(status, 202, "{m}");
    let (_, list) = server.get("/v1/messages").await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(2),
        "the message refused on the full disk is not there: {list}"
    );
}
