//! The public routes under attack, against the real binary: each attempt is
//! refused with its documented error id, and nothing a refused request
//! carried is stored.

use crate::common;

use common::server::{call, create_token, minted, post, with_user, Backend, Db, Server, USER_SECRET};
use common::*;
use serde_json::{json, Value};

/// Forged, missing and misplaced signatures: 403 `invalid-user-signature`,
/// nothing stored; the right one is accepted. Without a secret, user ids
/// are refused (`user-ids-not-enabled`) unless the operator trusts clients.
#[tokio::test]
async fn user_ids_must_be_signed_by_the_site() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    let forged = tocsin_server::proof::sign_user_id("not the server's secret", "alice");
    let bob_s = tocsin_server::proof::sign_user_id(USER_SECRET, "bob");
    for (name, extra) in [
        ("no signature", json!({"userId": "alice"})),
        ("forged signature", json!({"userId": "alice", "userSignature": forged})),
        ("another user's signature", json!({"userId": "alice", "userSignature": bob_s})),
        ("not hex", json!({"userId": "alice", "userSignature": "z".repeat(64)})),
        ("a number", json!({"userId": "alice", "userSignature": 5})),
        ("numeric user id unsigned", json!({"userId": 42})),
    ] {
        let mut body = sub.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        assert_eq!(post(&server, &body).await, (403, "invalid-user-signature".into()), "{name}");
    }
    assert_eq!(server.count().await, 0, "nothing stored by a refused request");
    let mut good = sub.clone();
    with_user(&mut good, "alice");
    assert_eq!(post(&server, &good).await.0, 200);
    let (_, list) = server.get("/v1/subscriptions?userId=alice").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    // Topics are interests, not identities: no signature needed.
    let mut topics = minted(&dev, &server).await;
    topics["topics"] = json!(["news"]);
    assert_eq!(post(&server, &topics).await.0, 200);

    // No secret: refused. --trust-client-user-ids: accepted (and warned about).
    let db = Db::new(Backend::Sqlite);
    let plain = without_secret(&db, &[]);
    let mut unsigned = minted(&dev, &plain).await;
    unsigned["userId"] = json!("alice");
    assert_eq!(post(&plain, &unsigned).await, (403, "user-ids-not-enabled".into()));
    assert_eq!(plain.count().await, 0);
    drop(plain);
    let trusting = without_secret(&db, &["--trust-client-user-ids"]);
    assert_eq!(post(&trusting, &unsigned).await.0, 200);
    drop(trusting);
    // A secret wins over trust.
    let both = Server::start(&db, &["--endpoint-policy", "any", "--trust-client-user-ids"]);
    let mut unsigned = minted(&dev, &both).await;
    unsigned["userId"] = json!("bob");
    assert_eq!(post(&both, &unsigned).await, (403, "invalid-user-signature".into()));
}

/// `tocsin serve` with no user signing secret.
fn without_secret(db: &Db, extra: &[&str]) -> Server {
    let extra = [&["--endpoint-policy", "any"], extra].concat();
    Server::start_unsetting(db, &extra, None, &["TOCSIN_USER_SIGNING_SECRET"])
}

/// `oldEndpoint` takes over a stored subscription (its user and topics) only
/// with that subscription's auth secret in `oldKeys.auth`.
#[tokio::test]
async fn a_subscription_is_replaced_only_with_proof() {
    let db = Db::new(Backend::Postgres);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let mut victim = minted(&dev, &server).await;
    with_user(&mut victim, "alice");
    victim["topics"] = json!(["private"]);
    assert_eq!(post(&server, &victim).await.0, 200);
    let attacker = minted(&dev, &server).await;
    for (name, old_keys) in [
        ("no oldKeys", None),
        ("wrong auth", Some(json!({"auth": "AAAAAAAAAAAAAAAAAAAAAA"}))),
        ("not base64", Some(json!({"auth": "!!"}))),
        ("the p256dh instead", Some(json!({"auth": victim["keys"]["p256dh"]}))),
    ] {
        let mut body = attacker.clone();
        body["oldEndpoint"] = victim["endpoint"].clone();
        if let Some(k) = old_keys {
            body["oldKeys"] = k;
        }
        assert_eq!(post(&server, &body).await, (403, "old-subscription-not-proven".into()), "{name}");
    }
    let (_, list) = server.get("/v1/subscriptions").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "nothing stored, nothing deleted: {items:?}");
    assert_eq!(items[0]["endpoint"], victim["endpoint"]);
    // The browser that holds the old one proves it: replaced, user and topics kept.
    let mut renewed = attacker.clone();
    renewed["oldEndpoint"] = victim["endpoint"].clone();
    renewed["oldKeys"] = json!({"auth": victim["keys"]["auth"]});
    assert_eq!(post(&server, &renewed).await.0, 200);
    let (_, list) = server.get("/v1/subscriptions?userId=alice").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!((&items[0]["endpoint"], &items[0]["topics"]), (&renewed["endpoint"], &json!(["private"])));
    assert_eq!(server.count().await, 1);
}

/// Each scope may do what the README says and nothing else (403
/// `insufficient-scope`); a revoked token is 401 at once; `token list` shows
/// names and scopes, never a token.
#[tokio::test]
async fn tokens_are_held_to_their_scope() {
    use reqwest::Method;
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let (admin, send, read) =
        (create_token(&db, "ops", "admin"), create_token(&db, "app", "send"), create_token(&db, "grafana", "read"));
    let message = json!({"payload": "x", "target": {"all": true}});
    let (s, m) = call(&server, Method::POST, "/v1/messages", Some(&send), Some(message.clone())).await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let cases: Vec<(Method, String, &str, u16)> = vec![
        (Method::POST, "/v1/messages".into(), "read", 403),
        (Method::POST, "/api/push".into(), "read", 403),
        (Method::DELETE, format!("/v1/messages/{id}"), "read", 403),
        (Method::GET, format!("/v1/messages/{id}"), "read", 200),
        (Method::GET, "/v1/messages".into(), "send", 200),
        (Method::GET, format!("/v1/messages/{id}"), "send", 200),
        (Method::GET, "/v1/subscriptions".into(), "send", 403),
        (Method::GET, "/v1/stats".into(), "send", 403),
        (Method::GET, "/metrics".into(), "send", 403),
        (Method::GET, "/v1/subscriptions".into(), "read", 200),
        (Method::GET, "/v1/stats".into(), "read", 200),
        (Method::GET, "/metrics".into(), "read", 200),
        (Method::DELETE, "/v1/subscriptions/1".into(), "read", 403),
        (Method::DELETE, "/v1/subscriptions/1".into(), "send", 403),
        (Method::DELETE, "/v1/subscriptions/1".into(), "admin", 404),
        (Method::GET, "/metrics".into(), "none", 401),
        (Method::GET, "/v1/stats".into(), "forged", 401),
    ];
    for (method, path, who, want) in cases {
        let token = match who {
            "admin" => Some(admin.as_str()),
            "send" => Some(send.as_str()),
            "read" => Some(read.as_str()),
            "forged" => Some("tsn_not-a-token"),
            _ => None,
        };
        let body = (method == Method::POST).then(|| message.clone());
        let (s, v) = call(&server, method.clone(), &path, token, body).await;
        assert_eq!(s, want, "{who} {method} {path}: {v}");
        if want == 403 {
            assert_eq!(v["error"]["id"], "insufficient-scope", "{v}");
        }
        if want == 401 {
            assert_eq!(v["error"]["id"], "unauthorized", "{v}");
        }
    }
    let (_, list) = call(&server, Method::GET, "/v1/messages", Some(&admin), None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "the refused POSTs stored nothing: {list}");
    let (s, _) = call(&server, Method::DELETE, &format!("/v1/messages/{id}"), Some(&send), None).await;
    assert!(s == 200 || s == 409, "a send token cancels: {s}");

    // Listed without the tokens; revoked at once; names are unique.
    let out = tocsin().args(["token", "list", "--json", "--database", &db.url]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for t in [&admin, &send, &read] {
        assert!(!text.contains(t.as_str()), "token list shows a token: {text}");
    }
    let names: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v["scope"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        names,
        [("ops".into(), "admin".into()), ("app".into(), "send".into()), ("grafana".into(), "read".into())]
    );
    let again = tocsin().args(["token", "create", "--name", "app", "--database", &db.url]).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "a second token named app");
    let revoked = tocsin().args(["token", "revoke", "app", "--database", &db.url]).output().unwrap();
    assert!(revoked.status.success());
    let (s, v) = call(&server, Method::GET, "/v1/messages", Some(&send), None).await;
    assert_eq!((s, &v["error"]["id"]), (401, &json!("unauthorized")), "a revoked token: {v}");
    let unknown = tocsin().args(["token", "revoke", "app", "--database", &db.url]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let (_, used) = (0, tocsin().args(["token", "list", "--json", "--database", &db.url]).output().unwrap());
    let used = String::from_utf8(used.stdout).unwrap();
    assert!(used.lines().any(|l| l.contains(r#""name":"grafana""#) && !l.contains(r#""lastUsedAt":null"#)), "{used}");
}

/// `TOCSIN_ADMIN_TOKEN` shorter than 32 characters is refused at start;
/// `--metrics-listen` serves `/metrics` without a token on its own address.
#[tokio::test]
async fn a_short_admin_token_is_refused_and_metrics_can_have_their_own_address() {
    let db = Db::new(Backend::Sqlite);
    let out = tocsin()
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .env("TOCSIN_ADMIN_TOKEN", "short-token")
        .env_remove("TOCSIN_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOCSIN_ADMIN_TOKEN must be at least 32 characters"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server::start(&db, &["--metrics-listen", &format!("127.0.0.1:{port}")]);
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("tocsin_subscriptions"));
    let r = reqwest::get(format!("http://127.0.0.1:{port}/v1/stats")).await.unwrap();
    assert_eq!(r.status(), 404, "only /metrics there");
    let r = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 401, "the main address still needs a token");
}

/// `tocsin serve` with the rate limits in force (the shared test server
/// exempts loopback) and `extra` flags.
fn limited(db: &Db, extra: &[&str]) -> Server {
    let extra = [&["--endpoint-policy", "any"], extra].concat();
    Server::start_unsetting(db, &extra, None, &["TOCSIN_RATE_LIMIT_EXEMPT"])
}

/// A client that connects from `ip` (any address of 127.0.0.0/8 works on loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().ok()).build().unwrap()
}

/// 1,000 requests from one address: the burst passes, then 429
/// `rate-limited` with `Retry-After`; another address is not affected.
#[tokio::test]
async fn a_burst_from_one_address_is_limited_and_others_are_not() {
    let db = Db::new(Backend::Sqlite);
    let server = limited(&db, &["--rate-limit-burst", "50"]);
    let body =
        json!({"endpoint": "https://fcm.googleapis.com/fcm/send/nobody", "keys": {"auth": "AAAAAAAAAAAAAAAAAAAAAA"}});
    let one = client_from("127.0.0.1");
    let (mut passed, mut limited_n, mut retry_after) = (0, 0, None);
    for _ in 0..1000 {
        let r = one.delete(server.url("/api/subscription")).json(&body).send().await.unwrap();
        match r.status().as_u16() {
            404 => passed += 1,
            429 => {
                limited_n += 1;
                retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
                assert_eq!(r.json::<Value>().await.unwrap()["error"]["id"], "rate-limited");
            }
            s => panic!("unexpected {s}"),
        }
    }
    // The burst, and what refilled meanwhile (0.2 a second).
    assert!((50..=55).contains(&passed), "{passed} passed");
    assert_eq!(passed + limited_n, 1000);
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    let other = client_from("127.0.0.2").delete(server.url("/api/subscription")).json(&body).send().await.unwrap();
    assert_eq!(other.status(), 404, "another address has its own allowance");
    // A forwarded header from a client that is not a trusted proxy changes nothing.
    let spoofed = one
        .delete(server.url("/api/subscription"))
        .header("x-forwarded-for", "203.0.113.77")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 429);
    // The allowance is the address's across apps: another app's routes (or
    // a name that is no app) do not give it a fresh one.
    assert_eq!(server.post_json("/v1/apps", &json!({"name": "other"})).await.0, 201);
    for path in ["/apps/other/api/subscription", "/apps/nope/api/subscription"] {
        let r = one.delete(server.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 429, "{path}");
    }
}

/// Failed authentications are limited per address: after the burst wrong
/// tokens get 429 from there, not from elsewhere; a valid token is never
/// refused by that limit (failures sent "as" someone do not lock them out).
#[tokio::test]
async fn failed_authentication_is_limited() {
    let db = Db::new(Backend::Sqlite);
    let server = limited(&db, &["--rate-limit-burst", "20"]);
    let one = client_from("127.0.0.1");
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = one.get(server.url("/v1/stats")).bearer_auth(format!("tsn_guess_{i}")).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 20, "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    let right = one.get(server.url("/v1/stats")).bearer_auth(common::server::TOKEN).send().await.unwrap();
    assert_eq!(right.status(), 200);
    let wrong = one.get(server.url("/v1/stats")).bearer_auth("tsn_guess_again").send().await.unwrap();
    assert_eq!(wrong.status(), 429);
    let elsewhere = client_from("127.0.0.3").get(server.url("/v1/stats")).bearer_auth(common::server::TOKEN);
    assert_eq!(elsewhere.send().await.unwrap().status(), 200);
}

/// Behind a trusted proxy, each forwarded client has its own allowance.
#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address() {
    let db = Db::new(Backend::Sqlite);
    let server = limited(&db, &["--rate-limit-burst", "3", "--trusted-proxies", "127.0.0.1"]);
    let proxy = client_from("127.0.0.1");
    let body =
        json!({"endpoint": "https://fcm.googleapis.com/fcm/send/nobody", "keys": {"auth": "AAAAAAAAAAAAAAAAAAAAAA"}});
    let status = |client: &str| {
        let r = proxy.delete(server.url("/api/subscription")).header("x-forwarded-for", client).json(&body);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..3 {
        assert_eq!(status("203.0.113.1").await, 404);
    }
    assert_eq!(status("203.0.113.1").await, 429);
    assert_eq!(status("203.0.113.2").await, 404, "another forwarded client");
}

/// One test notification per subscription per minute.
#[tokio::test]
async fn test_notifications_are_one_a_minute() {
    let db = Db::new(Backend::Sqlite);
    let server = limited(&db, &[]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    assert_eq!(post(&server, &sub).await.0, 200);
    let proof = json!({"endpoint": sub["endpoint"], "keys": {"auth": sub["keys"]["auth"]}});
    let first = server.raw(reqwest::Method::POST, "/api/subscription/test", proof.to_string()).await;
    assert_eq!(first.0, 202, "{}", first.1);
    let second = server.raw(reqwest::Method::POST, "/api/subscription/test", proof.to_string()).await;
    assert_eq!(second.0, 429, "{}", second.1);
    assert!(second.1.contains("rate-limited"));
    let (_, list) = server.get("/v1/messages").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "the refused test stored no message");
}

/// Connects, writes `head` (and nothing more), and reads until the server
/// closes the connection; `Err` if it is still open after `patience`.
fn held_open(addr: &str, head: &[u8], patience: std::time::Duration) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(patience)).map_err(|e| e.to_string())?;
    conn.write_all(head).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(got),
            Err(e) => return Err(format!("still open after {patience:?}: {e}")),
        }
    }
}

/// A client that sends half a request head is disconnected by the
/// header-read timeout; one that keeps a connection idle, by the idle
/// timeout; one whose body never comes gets 408 `request-timeout`.
#[tokio::test]
async fn slow_and_idle_clients_are_disconnected() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(
        &db,
        &["--header-read-timeout", "1", "--idle-timeout", "1", "--request-timeout", "2", "--wait-timeout", "1"],
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let patience = std::time::Duration::from_secs(30);
    let a = addr.clone();
    let half =
        tokio::task::spawn_blocking(move || held_open(&a, b"POST /api/subscription HTTP/1.1\r\nHost: x\r\n", patience));
    half.await.unwrap().expect("a half-sent head is cut off by --header-read-timeout");

    // HTTP/2 (prior knowledge) goes through the same accept loop.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().pool_idle_timeout(None).build().unwrap();
    assert_eq!(h2.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    let a = addr.clone();
    let idle = tokio::task::spawn_blocking(move || {
        // A kept-alive HTTP/1.1 connection: one full request, then silence.
        held_open(&a, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", patience)
    });
    let answer = idle.await.unwrap().expect("an idle connection is closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "answered before being closed");

    // A body announced and never sent: 408 within --request-timeout.
    let a = addr.clone();
    let stalled = tokio::task::spawn_blocking(move || {
        held_open(&a, b"POST /api/subscription HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{", patience)
    });
    let answer = String::from_utf8_lossy(&stalled.await.unwrap().expect("answered")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""id":"request-timeout""#), "{answer}");
    assert_eq!(server.count().await, 0);
}

/// Past `--max-connections`, a new connection waits until one closes.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    use std::io::{Read, Write};
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--max-connections", "2", "--header-read-timeout", "30", "--idle-timeout", "30"]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let (first, second) = (std::net::TcpStream::connect(&addr).unwrap(), std::net::TcpStream::connect(&addr).unwrap());
    let third = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || -> (bool, String) {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_millis(1500))).unwrap();
            let mut buf = [0u8; 256];
            let early = c.read(&mut buf).is_ok();
            c.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
            (early, String::from_utf8_lossy(&rest).into_owned())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    drop(first);
    let (early, late) = third.await.unwrap();
    assert!(!early, "the third connection was served while two were open");
    assert!(late.starts_with("HTTP/1.1 200"), "served once one closed: {late}");
    drop(second);
}

/// `?wait=true` answers 202 with the counts so far once --wait-timeout has
/// passed; a wait timeout not shorter than the request timeout is refused.
#[tokio::test]
async fn waiting_for_a_push_has_a_deadline() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--wait-timeout", "1"]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    assert_eq!(post(&server, &sub).await.0, 200);
    let r = dev.post(&format!("/subscriptions/{}/faults", sub_id(&sub)), json!({"delayMs": 4000})).await;
    assert_eq!(r.status(), 204);
    let r = server.http.post(server.url("/api/push?wait=true")).bearer_auth(common::server::TOKEN).body("slow");
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["success"], true);
    assert_eq!(v["data"]["counts"]["delivered"], 0, "{v}");
    let id = v["data"]["messageId"].as_str().unwrap().to_owned();
    let done = server.wait_done(&id).await;
    assert_eq!(done["counts"]["delivered"], 1, "the message goes on after the answer");

    let out = tocsin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db.url,
            "--wait-timeout",
            "90",
            "--request-timeout",
            "60",
        ])
        .env_remove("TOCSIN_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--wait-timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `shown`/`clicked` are counted only with the event token the message's
/// payload carried: without it, with a forged one or another message's,
/// 403 `invalid-event-token` and nothing counted.
#[tokio::test]
async fn events_count_only_with_the_messages_token() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    assert_eq!(post(&server, &sub).await.0, 200);
    let mut ids = Vec::new();
    for title in ["one", "two"] {
        let (s, m) =
            server.post_json("/v1/messages", &json!({"payload": {"title": title}, "target": {"all": true}})).await;
        assert_eq!(s, 202, "{m}");
        let id = m["id"].as_str().unwrap().to_owned();
        server.wait_done(&id).await;
        ids.push(id);
    }
    let payloads: Vec<Value> =
        dev.messages().await.iter().map(|m| serde_json::from_str(m["payload"].as_str().unwrap()).unwrap()).collect();
    let token_of = |id: &str| {
        payloads.iter().find(|p| p["messageId"] == id).and_then(|p| p["eventToken"].as_str()).unwrap().to_owned()
    };
    let (one, two) = (ids[0].clone(), ids[1].clone());
    let event = |token: Option<String>| {
        let mut e = json!({"type": "shown", "messageId": one});
        if let Some(t) = token {
            e["eventToken"] = json!(t);
        }
        e.to_string()
    };
    for (name, body) in [
        ("no token", event(None)),
        ("forged", event(Some("AAAA".repeat(10) + "AAA"))),
        ("another message's token", event(Some(token_of(&two)))),
        ("not base64", event(Some("!!".into()))),
    ] {
        let (s, text) = server.raw(reqwest::Method::POST, "/api/events", body).await;
        assert_eq!(s, 403, "{name}: {text}");
        assert!(text.contains("invalid-event-token"), "{name}: {text}");
    }
    let (_, m) = server.get(&format!("/v1/messages/{one}")).await;
    assert_eq!(m["counts"]["shown"], 0, "nothing counted: {m}");
    let (s, text) = server.raw(reqwest::Method::POST, "/api/events", event(Some(token_of(&one)))).await;
    assert_eq!(s, 202, "{text}");
    let (_, m) = server.get(&format!("/v1/messages/{one}")).await;
    assert_eq!(m["counts"]["shown"], 1, "{m}");
}

/// `--retention-days`: a finished message past the retention is purged with
/// its shards, retries and failures; `/v1/stats` keeps its totals; a
/// scheduled message stays.
#[tokio::test]
async fn finished_messages_are_purged_after_the_retention() {
    let db = Db::new(Backend::Postgres);
    // 0.00002 days: 1.7 s.
    let server = Server::start(&db, &["--endpoint-policy", "any", "--retention-days", "0.00002"]);
    let dev = DevPush::start(&[]);
    let sub = minted(&dev, &server).await;
    assert_eq!(post(&server, &sub).await.0, 200);
    let (_, m) = server.post_json("/v1/messages", &json!({"payload": "old news", "target": {"all": true}})).await;
    let id = m["id"].as_str().unwrap().to_owned();
    server.wait_done(&id).await;
    let (_, later) = server
        .post_json("/v1/messages", &json!({"payload": "later", "target": {"all": true}, "sendAt": in_a_month()}))
        .await;
    let (_, before) = server.get("/v1/stats").await;
    let mut purged = false;
    for _ in 0..600 {
        if server.get(&format!("/v1/messages/{id}")).await.0 == 404 {
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(purged, "the finished message was not purged");
    let (_, after) = server.get("/v1/stats").await;
    for k in ["messages", "delivered", "failed", "removed"] {
        assert_eq!(after[k], before[k], "{k}: {before} then {after}");
    }
    assert_eq!(server.get(&format!("/v1/messages/{}", later["id"].as_str().unwrap())).await.0, 200, "scheduled stays");
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let left = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &name, "-tAc"])
        .arg(format!("SELECT (SELECT COUNT(*) FROM message_shards WHERE message_id = '{id}') + (SELECT COUNT(*) FROM message_failures WHERE message_id = '{id}') + (SELECT COUNT(*) FROM retries WHERE message_id = '{id}')"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "0", "{}", String::from_utf8_lossy(&left.stderr));
}

/// Milliseconds since the epoch, a month from now: a `sendAt` that stays
/// scheduled for the test (at most a year ahead is accepted).
fn in_a_month() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    now + 30 * 86_400_000
}
