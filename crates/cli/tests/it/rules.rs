//! Delivery rules through the real binary, on SQLite and PostgreSQL: an
//! app's rules set and refused by id, a message at a local time sent by
//! waves of zones with its progress in the view, quiet hours holding
//! deliveries across a kill -9, frequency caps with exact counts.

use std::time::{Duration, Instant, SystemTime};

use crate::common;

use common::server::{call, create_token, message, received, until, Backend, Db, Server, TOKEN};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const ANY: [&str; 2] = ["--endpoint-policy", "any"];

fn error_id(v: &Value) -> &str {
    v["error"]["id"].as_str().unwrap_or("")
}

/// A browser's subscription with a time zone (or none).
async fn subscribe_in(server: &Server, dev: &DevPush, zone: Option<&str>) -> Value {
    let mut sub = dev.mint(Some(&server.vapid_public_key().await)).await;
    if let Some(zone) = zone {
        sub["timeZone"] = json!(zone);
    }
    let (s, v) = call(server, Method::POST, "/api/subscription", None, Some(sub.clone())).await;
    assert_eq!(s, 200, "{v}");
    sub
}

/// UTC now as `YYYY-MM-DDTHH:MM:SS`, `ahead` from now.
fn utc_local(ahead: Duration) -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now() + ahead).to_string();
    t.trim_end_matches('Z').to_owned()
}

async fn send(server: &Server, body: Value) -> String {
    let (s, v) = call(server, Method::POST, "/v1/messages", Some(TOKEN), Some(body)).await;
    assert_eq!(s, 202, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn rules_and_local_time(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &ANY);
    let dev = DevPush::start(&[]);

    // An app's rules: none at first; bad ones refused by id, nothing changed.
    let (s, v) = call(&server, Method::GET, "/v1/rules", Some(TOKEN), None).await;
    assert_eq!((s, v.clone()), (200, json!({})), "{v}");
    for bad in [
        json!({"quietHours": {"start": "22:00", "end": "22:00"}}),
        json!({"quietHours": {"start": "24:00", "end": "07:00"}}),
        json!({"quietHours": {"start": "22:00"}}),
        json!({"frequencyCaps": [{"max": 0, "per": "1h"}]}),
        json!({"frequencyCaps": [{"max": 4294967296u64, "per": "1h"}]}),
        json!({"frequencyCaps": [{"max": 1, "per": "31d"}]}),
        json!({"frequencyCaps": [{"max": 1, "per": "9223372036854775807d"}]}),
        json!({"frequencyCaps": [{"max": 1, "per": "1h", "tag": "Promo\u{0}"}]}),
        json!({"frequencyCaps": vec![json!({"max": 1, "per": "1h"}); 11]}),
        json!({"defaultTimeZone": "Mars/Olympus"}),
        json!({"defaultTimeZone": "x".repeat(10_000)}),
        json!({"ratePerMinute": 1_000_001}),
        json!({"ratePerMinute": -1}),
        json!({"unknown": 1}),
    ] {
        let (s, v) = call(&server, Method::PUT, "/v1/rules", Some(TOKEN), Some(bad.clone())).await;
        assert_eq!((s, error_id(&v)), (400, "invalid-rules"), "{bad}: {v}");
    }
    let (s, v) = call(&server, Method::PUT, "/v1/rules", Some(TOKEN), Some(json!([]))).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-json"), "{v}");
    let send_token = create_token(&db, "sender", "send");
    let (s, v) = call(&server, Method::PUT, "/v1/rules", Some(&send_token), Some(json!({}))).await;
    assert_eq!((s, error_id(&v)), (403, "insufficient-scope"), "{v}");
    let (s, v) = call(&server, Method::GET, "/v1/rules", Some(&send_token), None).await;
    assert_eq!((s, v.clone()), (200, json!({})), "{v}");
    let (s, v) =
        call(&server, Method::PUT, "/v1/rules", Some(TOKEN), Some(json!({"defaultTimeZone": "etc/utc"}))).await;
    assert_eq!((s, v.clone()), (200, json!({"defaultTimeZone": "Etc/UTC"})), "{v}");

    let kiritimati = subscribe_in(&server, &dev, Some("Pacific/Kiritimati")).await;
    let utc = subscribe_in(&server, &dev, None).await;
    let pago_pago = subscribe_in(&server, &dev, Some("Pacific/Pago_Pago")).await;

    // Bad messages: their own ids, nothing stored.
    for (body, status, id) in [
        (json!({"sendAt": "2030-01-01T09:00:00Z", "inLocalTime": true}), 400, "invalid-send-at"),
        (json!({"sendAt": "2030-01-01T09:00:00+02:00", "inLocalTime": true}), 400, "invalid-send-at"),
        (json!({"sendAt": 1893488400000u64, "inLocalTime": true}), 400, "invalid-send-at"),
        (json!({"inLocalTime": true}), 400, "invalid-send-at"),
        (json!({"sendAt": "9999-12-31T23:59:59", "inLocalTime": true}), 400, "invalid-send-at"),
        (json!({"sendAt": "2026-02-30T09:00:00", "inLocalTime": true}), 400, "invalid-send-at"),
        (json!({"sendAt": "2020-01-01T09:00:00", "inLocalTime": true}), 400, "send-at-passed"),
        (json!({"skipPassedZones": true}), 400, "invalid-message-rules"),
        (json!({"tags": ["Promo"]}), 400, "invalid-message-rules"),
        (json!({"tags": vec!["a"; 11]}), 400, "invalid-message-rules"),
        (json!({"inLocalTime": "yes"}), 400, "invalid-message"),
    ] {
        let mut body = body;
        body["target"] = json!({"all": true});
        body["payload"] = json!("x");
        let (s, v) = call(&server, Method::POST, "/v1/messages", Some(TOKEN), Some(body.clone())).await;
        assert_eq!((s, error_id(&v)), (status, id), "{body}: {v}");
    }
    let (_, list) = call(&server, Method::GET, "/v1/messages", Some(TOKEN), None).await;
    assert_eq!(list["items"], json!([]), "nothing stored");

    // In 15 s of UTC wall-clock time: Kiritimati's has passed (at once),
    // UTC's comes in 15 s, Pago Pago's in 11 hours.
    let local = utc_local(Duration::from_secs(15));
    let body = json!({"target": {"all": true}, "payload": "good morning", "sendAt": local, "inLocalTime": true});
    let (s, v) = call(&server, Method::POST, "/v1/messages", Some(TOKEN), Some(body)).await;
    assert_eq!((s, v["state"].as_str()), (202, Some("queued")), "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let m = until(&server, &id, Duration::from_secs(10), |m| m["counts"]["delivered"] == 1).await;
    let (_, counts) = received(&dev).await;
    assert_eq!(counts.get(&sub_id(&kiritimati)), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&sub_id(&utc)), None, "UTC's time has not come: {m}");
    let m = until(&server, &id, Duration::from_secs(60), |m| m["counts"]["delivered"] == 2).await;
    let (_, counts) = received(&dev).await;
    assert_eq!(counts.get(&sub_id(&utc)), Some(&1));
    assert_eq!(counts.get(&sub_id(&pago_pago)), None);
    assert_eq!((m["state"].as_str(), m["counts"]["targeted"].as_i64()), (Some("sending"), Some(3)), "{m}");
    let lt = &m["localTime"];
    assert_eq!(lt["sendAt"].as_str(), Some(local.as_str()), "{m}");
    let wave_of = |zone: &str| {
        lt["zones"].as_array().unwrap().iter().find(|w| w["zones"].as_array().unwrap().contains(&json!(zone))).cloned()
    };
    let (utc_wave, pago_wave) = (wave_of("Etc/UTC").unwrap(), wave_of("Pacific/Pago_Pago").unwrap());
    assert_eq!((utc_wave["state"].as_str(), utc_wave["withoutZone"].as_bool()), (Some("sent"), Some(true)), "{m}");
    assert_eq!(pago_wave["state"].as_str(), Some("pending"), "{m}");
    assert_eq!(wave_of("Europe/Paris").unwrap()["state"].as_str(), Some("empty"), "nobody there: {m}");
    assert_eq!(lt["nextZoneAt"], pago_wave["at"], "{m}");
    assert_eq!(lt["sentZones"].as_u64(), Some(2), "{m}");

    // A restart keeps the plan: nothing is sent twice, Pago Pago still waits.
    drop(server); // SIGKILL
    let server = Server::start(&db, &ANY);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = message(&server, &id).await;
    assert_eq!((m["counts"]["delivered"].as_i64(), m["state"].as_str()), (Some(2), Some("sending")), "{m}");
    let (total, _) = received(&dev).await;
    assert_eq!(total, 2);
    let (s, m) = call(&server, Method::DELETE, &format!("/v1/messages/{id}"), Some(TOKEN), None).await;
    assert_eq!((s, m["state"].as_str()), (200, Some("cancelled")), "{m}");
    let m = message(&server, &id).await;
    let pago = m["localTime"]["zones"].as_array().unwrap().iter().find(|w| w["at"] == pago_wave["at"]).cloned();
    assert_eq!(pago.unwrap()["state"].as_str(), Some("skipped"), "{m}");
}
both_backends!(an_app_s_rules_and_a_message_at_a_local_time, rules_and_local_time);

/// Quiet hours that cover this minute (UTC, for subscribers without a zone)
/// hold a message until the next; a kill -9 meanwhile loses nothing and
/// sends nothing twice.
async fn quiet_hours(backend: Backend) {
    let db = Db::new(backend);
    let args = ["--endpoint-policy", "any", "--lease-seconds", "2"];
    let server = Server::start(&db, &args);
    let dev = DevPush::start(&[]);
    let subs = [subscribe_in(&server, &dev, None).await, subscribe_in(&server, &dev, Some("Etc/UTC")).await];
    // A window from this minute to the next, with at least 15 s left in it.
    let mut now = utc_local(Duration::ZERO);
    if now[17..19].parse::<u32>().unwrap() >= 45 {
        tokio::time::sleep(Duration::from_secs(16)).await;
        now = utc_local(Duration::ZERO);
    }
    let start = now[11..16].to_owned();
    let end = utc_local(Duration::from_secs(60))[11..16].to_owned();
    let rules = json!({"quietHours": {"start": start, "end": end}});
    let (s, v) = call(&server, Method::PUT, "/v1/rules", Some(TOKEN), Some(rules.clone())).await;
    assert_eq!((s, v.clone()), (200, rules), "{v}");

    let code = send(&server, json!({"target": {"all": true}, "payload": "code 1234", "ignoreQuietHours": true})).await;
    let id = send(&server, json!({"target": {"all": true}, "payload": "tonight's sale"})).await;
    let m = server.wait_done(&code).await;
    assert_eq!((m["counts"]["delivered"].as_i64(), m["counts"]["held"].as_i64()), (Some(2), Some(0)), "{m}");
    let m = until(&server, &id, Duration::from_secs(10), |m| m["counts"]["held"] == 2).await;
    assert_eq!((m["state"].as_str(), m["counts"]["delivered"].as_i64()), (Some("sending"), Some(0)), "{m}");
    assert_eq!(m["counts"]["pendingRetry"].as_i64(), Some(0), "held is not a retry: {m}");

    drop(server); // SIGKILL while they are held
    let server = Server::start(&db, &args);
    let m = until(&server, &id, Duration::from_secs(120), |m| m["state"] == "done").await;
    let c = &m["counts"];
    assert_eq!((c["targeted"].as_i64(), c["delivered"].as_i64(), c["held"].as_i64()), (Some(2), Some(2), Some(0)));
    assert!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()[11..16] >= *end || end == "00:00");
    let (total, counts) = received(&dev).await;
    assert_eq!(total, 4, "the code and the sale, once each: {counts:?}");
    for s in &subs {
        assert_eq!(counts.get(&sub_id(s)), Some(&2));
    }
}
both_backends!(quiet_hours_hold_deliveries_across_a_kill_9, quiet_hours);

async fn caps(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &ANY);
    let dev = DevPush::start(&[]);
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(subscribe_in(&server, &dev, None).await);
    }
    let rules = json!({"frequencyCaps": [{"max": 2, "per": "1h"}, {"max": 1, "per": "1d", "tag": "promo"}]});
    let (s, v) = call(&server, Method::PUT, "/v1/rules", Some(TOKEN), Some(rules)).await;
    assert_eq!(s, 200, "{v}");
    let mut sent = 0;
    for (body, delivered, capped) in [
        (json!({"tags": ["promo"]}), 3, 0),
        (json!({"tags": ["promo", "sale"]}), 0, 3),
        (json!({"frequencyCap": false, "tags": ["promo"]}), 3, 0),
        (json!({}), 3, 0),
        (json!({}), 0, 3),
    ] {
        let mut body = body;
        body["target"] = json!({"all": true});
        body["payload"] = json!("x");
        let id = send(&server, body.clone()).await;
        let m = server.wait_done(&id).await;
        let c = &m["counts"];
        assert_eq!(
            (c["delivered"].as_i64(), c["capped"].as_i64(), c["failed"].as_i64()),
            (Some(delivered), Some(capped), Some(0)),
            "{body}: {m}"
        );
        if capped > 0 {
            assert_eq!(m["failedByReason"], json!({"capped": capped}), "{m}");
            assert!(m["failureExamples"]["capped"].as_str().unwrap().contains("over the cap of"), "{m}");
        }
        sent += delivered;
    }
    let (total, _) = received(&dev).await;
    assert_eq!(total, sent as u64);
}
both_backends!(frequency_caps_drop_deliveries_with_exact_counts, caps);

/// Two nodes on one PostgreSQL send a message throttled to 1,200 a minute:
/// together never faster (each page's slots are reserved in the database),
/// both taking part. The rate itself is measured to 10 % on the paused
/// clock (`engine_rules.rs`); here the wall clock only bounds it from
/// below, which a slow machine cannot break.
#[tokio::test]
async fn a_throttle_holds_across_two_nodes_on_postgres() {
    let n = 240;
    let db = Db::new(Backend::Postgres);
    let dev = DevPush::start(&[]);
    let args = ["--endpoint-policy", "any", "--shard-size", "20"];
    let a = Server::start(&db, &[&args[..], &["--node-id", "node-a"]].concat());
    let b = Server::start(&db, &[&args[..], &["--node-id", "node-b"]].concat());
    let subs = common::server::populate(&dev, &a, &db, n).await;
    b.assert_up().await;
    // A short TTL for its audience at that rate: the answer warns.
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/messages",
        Some(TOKEN),
        Some(json!({"target": {"all": true}, "payload": "x", "ratePerMinute": 1, "ttl": 60, "sendAt": "2099-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(s, 400, "{v}"); // sendAt over a year ahead
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/messages",
        Some(TOKEN),
        Some(json!({"target": {"userIds": ["nobody"]}, "payload": "x", "ratePerMinute": 1, "ttl": 60})),
    )
    .await;
    assert_eq!((s, v.get("warnings")), (202, None), "nobody to send to: no warning: {v}");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/messages",
        Some(TOKEN),
        // Scheduled, and cancelled before it starts: it sends nothing.
        Some(json!({"target": {"all": true}, "payload": "x", "ratePerMinute": 1, "ttl": 60,
                    "sendAt": humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string()})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert!(v["warnings"][0].as_str().unwrap().contains("longer than its TTL"), "{v}");
    let slow = v["id"].as_str().unwrap().to_owned();
    let (s, _) = call(&a, Method::DELETE, &format!("/v1/messages/{slow}"), Some(TOKEN), None).await;
    assert_eq!(s, 200);

    let started = Instant::now();
    let id = send(&a, json!({"target": {"all": true}, "payload": "paced", "ratePerMinute": 1200})).await;
    let m = a.wait_done(&id).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!((m["counts"]["delivered"].as_i64(), m["ratePerMinute"].as_u64()), (Some(n as i64), Some(1200)), "{m}");
    let due = (n - 1) as f64 / 20.0; // 1,200 a minute: 20 a second
    let (by_a, by_b) = (a.delivered().await, b.delivered().await);
    eprintln!("{n} at 1200/min over two nodes (a {by_a}, b {by_b}): {took:.2} s, {due:.2} s due");
    assert!(took >= due * 0.9, "faster than the rate: {took} s for {n}");
    assert!(by_a > 0 && by_b > 0, "both nodes sent: a {by_a}, b {by_b}");
    let (total, _) = received(&dev).await;
    assert_eq!(total, n as u64, "each once");
    assert_eq!(subs.len(), n);
}
