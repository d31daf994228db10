//! The delivery engine, against `tocsin dev push-service` and its faults:
//! broadcasts, retries, crashes (kill -9) and two nodes on one PostgreSQL.

use crate::common;

use std::time::{Duration, Instant};

use common::server::{assert_reached_once, populate, received, Backend, Db, Server, TOKEN};
use common::*;
use serde_json::{json, Value};

async fn send_all(server: &Server, payload: &str) -> String {
    let (status, v) = server.post_json("/v1/messages", &json!({"payload": payload, "target": {"all": true}})).await;
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

fn assert_counts_add_up(m: &Value) {
    let c = &m["counts"];
    let sum: i64 = ["delivered", "failed", "gone", "expired", "capped"].iter().map(|k| c[k].as_i64().unwrap()).sum();
    assert_eq!(c["targeted"].as_i64().unwrap(), sum, "targeted = delivered + failed + gone + expired + capped: {m}");
    assert_eq!(c["held"], 0, "{m}");
    assert_eq!(c["pendingRetry"], 0, "{m}");
}

async fn broadcast_1000(backend: Backend) {
    let db = Db::new(backend);
    let dev = DevPush::start(&[]);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let subs = populate(&dev, &server, &db, 1000).await;
    let id = send_all(&server, "to a thousand").await;
    let m = server.wait_done(&id).await;
    assert_eq!(m["counts"]["targeted"], 1000, "{m}");
    assert_eq!(m["counts"]["delivered"], 1000, "{m}");
    assert_counts_add_up(&m);
    let (total, counts) = received(&dev).await;
    assert_eq!(total, 1000);
    for s in &subs {
        assert_eq!(counts.get(&sub_id(s)), Some(&1), "each subscription receives the message once");
    }
    let msgs = dev.messages().await;
    assert!(msgs.iter().all(|m| m["payload"] == "to a thousand"));
}
both_backends!(a_broadcast_to_1000_arrives_once_each, broadcast_1000);

async fn faults(backend: Backend) {
    let db = Db::new(backend);
    let dev = DevPush::start(&[]);
    let server = Server::start(
        &db,
        &["--endpoint-policy", "any", "--retry-base-ms", "200", "--push-timeout", "1", "--max-attempts", "4"],
    );
    let subs = populate(&dev, &server, &db, 6).await;
    let fault = |i: usize, f: Value| {
        let dev = &dev;
        let id = sub_id(&subs[i]);
        async move {
            let r = dev.post(&format!("/subscriptions/{id}/faults"), f).await;
            assert_eq!(r.status(), 204);
        }
    };
    fault(0, json!({"status": 429, "retryAfter": "2"})).await;
    fault(1, json!({"status": 503, "times": 2})).await;
    fault(2, json!({"status": 410})).await;
    fault(3, json!({"status": 413})).await;
    fault(4, json!({"delayMs": 3000})).await;
    fault(5, json!({"drop": true})).await;

    let id = send_all(&server, "through faults").await;
    let m = server.wait_done(&id).await;
    let c = &m["counts"];
    assert_eq!((c["targeted"].as_i64(), c["delivered"].as_i64()), (Some(6), Some(4)), "{m}");
    assert_eq!((c["gone"].as_i64(), c["failed"].as_i64()), (Some(1), Some(1)), "{m}");
    assert_eq!(m["failedByReason"], json!({"payload-too-large": 1}), "{m}");
    // An example of it: which subscription, where, and what the service said.
    let example = m["failureExamples"]["payload-too-large"].as_str().unwrap_or_default();
    assert!(example.starts_with("subscription ") && example.contains(&dev.base) && example.contains("413"), "{m}");
    assert_counts_add_up(&m);

    let state = |i: usize| {
        let dev = &dev;
        let s = subs[i].clone();
        async move { dev.sub_state(&s).await }
    };
    let times =
        |v: &Value| -> Vec<u64> { v["attemptTimes"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect() };
    // 429 with Retry-After: 2 s: the retry waited for it.
    let a = state(0).await;
    let ta = times(&a);
    assert_eq!((a["attempts"].as_u64(), a["received"].as_u64()), (Some(2), Some(1)), "{a}");
    assert!(ta[1] - ta[0] >= 1900, "Retry-After honoured: {ta:?}");
    // 503 twice, then delivered at the third attempt.
    let b = state(1).await;
    assert_eq!((b["attempts"].as_u64(), b["received"].as_u64()), (Some(3), Some(1)), "{b}");
    // The 429's Retry-After slowed the whole origin, not just its subscription.
    let tb = times(&b);
    assert!(tb[1] >= ta[0] + 1900, "the origin was slowed: 429 at {}, 503 retry at {}", ta[0], tb[1]);
    // 410: deleted, not retried.
    let c410 = dev.sub_state(&subs[2]).await;
    assert_eq!(c410["attempts"], 1);
    // 413: failed, not retried, not deleted.
    assert_eq!(state(3).await["attempts"], 1);
    // Slow endpoint: timed out, retried, delivered. Dropped connection: the same.
    for i in [4, 5] {
        let s = state(i).await;
        assert_eq!((s["attempts"].as_u64(), s["received"].as_u64()), (Some(2), Some(1)), "{i}: {s}");
    }
    let (_, list) = server.get("/v1/subscriptions").await;
    let left: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["endpoint"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 5, "only the 410 was deleted");
    assert!(!left.contains(&subs[2]["endpoint"].as_str().unwrap()));

    let metrics =
        server.http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    for needle in [
        "tocsin_deliveries_total{outcome=\"delivered\",reason=\"\"} 4",
        "tocsin_deliveries_total{outcome=\"failed\",reason=\"payload-too-large\"} 1",
        "tocsin_deliveries_total{outcome=\"retry\",reason=\"rate-limited\"}",
        "tocsin_push_latency_seconds_bucket",
        "tocsin_retries_scheduled_total",
    ] {
        assert!(metrics.contains(needle), "{needle} not in /metrics:\n{metrics}");
    }
}
both_backends!(faults_are_retried_or_counted_as_each_deserves, faults);

/// The per-origin limit holds for the process as a whole although each
/// engine thread has its own share of it: with every push held for 300 ms,
/// no more than `--per-origin-concurrency` requests overlap, and more than
/// one does (the shares are used, not one thread's alone). One subscription
/// per shard spreads the work over every thread and worker.
async fn per_origin_limit(backend: Backend) {
    const LIMIT: usize = 3;
    const HOLD_MS: u64 = 300;
    let db = Db::new(backend);
    let dev = DevPush::start(&[]);
    let server =
        Server::start(&db, &["--endpoint-policy", "any", "--per-origin-concurrency", "3", "--shard-size", "1"]);
    let subs = populate(&dev, &server, &db, 12).await;
    for s in &subs {
        let r = dev.post(&format!("/subscriptions/{}/faults", sub_id(s)), json!({"delayMs": HOLD_MS})).await;
        assert_eq!(r.status(), 204);
    }
    let id = send_all(&server, "one at a time, three at most").await;
    let m = server.wait_done(&id).await;
    assert_eq!(m["counts"]["delivered"], 12, "{m}");
    let mut arrivals = Vec::new();
    for s in &subs {
        let state = dev.sub_state(s).await;
        assert_eq!(state["attempts"], 1, "{state}");
        arrivals.extend(state["attemptTimes"].as_array().into_iter().flatten().filter_map(Value::as_u64));
    }
    assert_eq!(arrivals.len(), 12, "one arrival time per push: {arrivals:?}");
    arrivals.sort_unstable();
    // A request that arrived less than HOLD_MS before another is still held
    // when that one arrives (a few ms of slack for the clock's rounding).
    let overlapping = |t: u64| arrivals.iter().filter(|&&a| a <= t && a + HOLD_MS > t + 5).count();
    let most = arrivals.iter().map(|&t| overlapping(t)).max().unwrap_or(0);
    assert!(most <= LIMIT, "{most} requests to one origin at once, limit {LIMIT}: {arrivals:?}");
    assert!(most >= 2, "the limit's shares were not used together: {arrivals:?}");
}
both_backends!(the_per_origin_limit_holds_across_the_engine_threads, per_origin_limit);

/// Starts a broadcast to `n`, kills the server with SIGKILL once `at`
/// messages have arrived, starts it again, and checks that every
/// subscription got the message at least once and the counts add up.
async fn crash(backend: Backend) {
    let n = 10_000;
    let db = Db::new(backend);
    let dev = DevPush::start(&[]);
    let args = ["--endpoint-policy", "any", "--lease-seconds", "2"];
    let server = Server::start(&db, &args);
    let subs = populate(&dev, &server, &db, n).await;
    let id = send_all(&server, "crash-safe").await;
    let started = Instant::now();
    loop {
        let (total, _) = received(&dev).await;
        if total >= (n / 3) as u64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the broadcast did not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server); // SIGKILL
    let (at_kill, _) = received(&dev).await;
    let server = Server::start(&db, &args);
    let m = server.wait_done(&id).await;
    assert_eq!(m["counts"]["targeted"].as_i64(), Some(n as i64), "{m}");
    assert_eq!(m["counts"]["delivered"].as_i64(), Some(n as i64), "{m}");
    assert_counts_add_up(&m);
    let (total, counts) = received(&dev).await;
    let twice = counts.values().filter(|c| **c > 1).count();
    for s in &subs {
        assert!(counts.get(&sub_id(s)).copied().unwrap_or(0) >= 1, "a subscription never got the message");
    }
    eprintln!(
        "{backend:?}: killed after {at_kill} of {n}; {total} messages received in all; {twice} subscriptions got it twice"
    );
    assert!(at_kill < n as u64, "the kill came after the broadcast had ended: {at_kill} of {n} received");
    assert_duplicates_at_most_in_flight(total, n);
}

/// A crash re-sends at most the pages that were in flight: a page per
/// worker, two workers per engine thread, one thread per core.
fn assert_duplicates_at_most_in_flight(total: u64, n: usize) {
    const PAGE_SIZE: u64 = 500; // `--page-size`'s default
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get()) as u64;
    let in_flight = threads * 2 * PAGE_SIZE;
    let duplicates = total - n as u64;
    assert!(duplicates <= in_flight, "{duplicates} sent twice, more than the {in_flight} that can be in flight");
}
both_backends!(kill_9_halfway_loses_nothing, crash);

#[tokio::test]
async fn two_nodes_share_a_broadcast_and_survive_one_dying() {
    let n = 10_000;
    let db = Db::new(Backend::Postgres);
    let dev = DevPush::start(&[]);
    let args = ["--endpoint-policy", "any", "--lease-seconds", "2", "--shard-size", "500"];
    let a = Server::start(&db, &[&args[..], &["--node-id", "node-a"]].concat());
    let b = Server::start(&db, &[&args[..], &["--node-id", "node-b"]].concat());
    assert_eq!(a.vapid_public_key().await, b.vapid_public_key().await, "one key for the cluster");
    let subs = populate(&dev, &a, &db, n).await;
    let id = send_all(&a, "two nodes").await;
    b.assert_up().await;
    let started = Instant::now();
    let (share_a, share_b) = loop {
        let (da, dbb) = (a.delivered().await, b.delivered().await);
        if da > 0 && dbb > 0 && da + dbb >= (n / 3) as u64 {
            break (da, dbb);
        }
        assert!(started.elapsed() < Duration::from_secs(300), "both nodes should take part: a {da}, b {dbb}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(a); // SIGKILL node a mid-way
    let m = b.wait_done(&id).await;
    assert_eq!(m["counts"]["delivered"].as_i64(), Some(n as i64), "{m}");
    assert_counts_add_up(&m);
    let (total, counts) = received(&dev).await;
    for s in &subs {
        assert!(counts.get(&sub_id(s)).copied().unwrap_or(0) >= 1, "a subscription never got the message");
    }
    let twice = counts.values().filter(|c| **c > 1).count();
    let finished_b = b.delivered().await;
    eprintln!(
        "two nodes: when a was killed a had delivered {share_a}, b {share_b}; b finished with {finished_b} deliveries; \
         {total} received in all; {twice} got it twice"
    );
    assert!(share_a + share_b < n as u64, "a was killed after the broadcast had ended");
    assert_duplicates_at_most_in_flight(total, n);
}

/// A push service that answers every request after 250 ms, and pages that
/// take five times the lease (40 per page, 2 requests in flight per engine
/// thread, lease 1 s): the heartbeat keeps each claim, so each subscription
/// is reached exactly once and the counts are exact. Before claims had
/// tokens and heartbeats, a page that outlived its lease was claimed again
/// by another worker of the same node and sent twice.
async fn slow_push_service(backend: Backend) {
    let db = Db::new(backend);
    let dev = DevPush::start(&[]);
    let server = Server::start(&db, &SLOW_ARGS);
    let subs = populate(&dev, &server, &db, 120).await;
    slow_down(&dev, &subs).await;
    let id = send_all(&server, "slow but once").await;
    let m = server.wait_done(&id).await;
    assert_exactly_once(&dev, &subs, &m).await;
}
both_backends!(pages_slower_than_the_lease_are_sent_exactly_once, slow_push_service);

const SLOW_ARGS: [&str; 12] = [
    "--endpoint-policy",
    "any",
    "--lease-seconds",
    "1",
    "--page-size",
    "40",
    "--shard-size",
    "40",
    "--per-origin-concurrency",
    "4",
    "--concurrency",
    "4",
];

async fn slow_down(dev: &DevPush, subs: &[Value]) {
    for s in subs {
        let r = dev.post(&format!("/subscriptions/{}/faults", sub_id(s)), json!({"delayMs": 250})).await;
        assert_eq!(r.status(), 204);
    }
}

async fn assert_exactly_once(dev: &DevPush, subs: &[Value], m: &Value) {
    let n = subs.len() as i64;
    assert_eq!(m["counts"]["targeted"].as_i64(), Some(n), "{m}");
    assert_counts_add_up(m);
    assert_reached_once(dev, subs, m).await;
}

/// The same with two nodes on one PostgreSQL, started with one `--node-id`
/// (a node id is a name, not a proof: only the claim's token is).
#[tokio::test]
async fn two_nodes_with_slow_pages_send_each_once() {
    let db = Db::new(Backend::Postgres);
    let dev = DevPush::start(&[]);
    let a = Server::start(&db, &[&SLOW_ARGS[..], &["--node-id", "twin"]].concat());
    let b = Server::start(&db, &[&SLOW_ARGS[..], &["--node-id", "twin"]].concat());
    // Six shards: more than node a's four workers, so b takes some.
    let subs = populate(&dev, &a, &db, 240).await;
    slow_down(&dev, &subs).await;
    let id = send_all(&a, "two slow nodes").await;
    b.assert_up().await;
    let m = a.wait_done(&id).await;
    assert_exactly_once(&dev, &subs, &m).await;
    assert!(b.delivered().await > 0, "node b took part");
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused() {
    let db = Db::new(Backend::Sqlite);
    let _first = Server::start(&db, &[]);
    let out = tocsin().args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another tocsin serve owns this SQLite database"), "{err}");
}

/// A subscription whose `expirationTime` has passed is not sent to, and is
/// removed; it counts as `expired`.
#[tokio::test]
async fn expired_subscriptions_are_skipped_and_removed() {
    let db = Db::new(Backend::Sqlite);
    let dev = DevPush::start(&[]);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let key = server.vapid_public_key().await;
    let live = dev.mint(Some(&key)).await;
    let mut old = dev.mint(Some(&key)).await;
    old["expirationTime"] = json!(1_000_000_000_000u64); // 2001
    for s in [&live, &old] {
        assert_eq!(server.subscribe(s).await.0, 200);
    }
    let id = send_all(&server, "fresh only").await;
    let m = server.wait_done(&id).await;
    let c = &m["counts"];
    assert_eq!((c["targeted"].as_i64(), c["delivered"].as_i64(), c["expired"].as_i64()), (Some(2), Some(1), Some(1)));
    assert_counts_add_up(&m);
    assert_eq!(dev.sub_state(&old).await["attempts"], 0, "never contacted");
    assert_eq!(server.count().await, 1, "removed");
}

/// `tocsin serve --ca-cert`: a push service with a private certificate
/// (HTTPS, HTTP/2), trusted through the flag.
#[tokio::test]
async fn serve_trusts_an_extra_root_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let dev = DevPush::start(&["--tls", "--cert-out", cert.to_str().unwrap()]);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap())
        .build()
        .unwrap();
    let dev = DevPush { http, ..dev };
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--ca-cert", cert.to_str().unwrap()]);
    let sub = dev.mint(Some(&server.vapid_public_key().await)).await;
    assert_eq!(server.subscribe(&sub).await.0, 200);
    let id = send_all(&server, "over a private certificate").await;
    let m = server.wait_done(&id).await;
    assert_eq!(m["counts"]["delivered"], 1, "{m}");
    assert_eq!(dev.messages().await[0]["httpVersion"], "HTTP/2.0");
}
