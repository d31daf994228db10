//! Declarative Web Push through the real binary: the bytes the dev push
//! service decrypts are the standard's JSON; each refusal has its id and
//! stores nothing; Apple's VAPID subject rules stop the start.

use crate::common;

use common::server::{Backend, Db, Server, TOKEN};
use common::*;
use serde_json::{json, Value};

/// `POST path` with the admin token and a raw body.
async fn push(server: &Server, path: &str, body: String) -> (u16, String) {
    let r = server.http.post(server.url(path)).bearer_auth(TOKEN).body(body).send().await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

const PUBLIC_URL: &str = "https://shop.tocsin-tests.org/app/";

/// The payload the dev push service decrypted for message `id`, as JSON.
async fn decrypted(dev: &DevPush, id: &str) -> Vec<Value> {
    dev.messages()
        .await
        .iter()
        .filter_map(|m| m["payload"].as_str().and_then(|p| serde_json::from_str::<Value>(p).ok()))
        .filter(|p| p["messageId"] == id)
        .collect()
}

async fn declarative_end_to_end(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--public-url", PUBLIC_URL]);
    let dev = DevPush::start(&[]);
    let key = server.vapid_public_key().await;
    for _ in 0..2 {
        assert_eq!(server.subscribe(&dev.mint(Some(&key)).await).await.0, 200);
    }
    let message = json!({
        "format": "declarative",
        "target": {"all": true},
        "payload": {"web_push": 8030, "app_badge": 3, "mutable": true, "notification": {
            "title": "Order shipped", "body": "It is on its way", "navigate": "orders/7", "lang": "en", "dir": "ltr",
            "tag": "order-7", "icon": "/icon.png", "silent": false, "requireInteraction": false, "timestamp": 1700000000000u64,
            "data": {"order": 7},
            "actions": [{"action": "track", "title": "Track", "navigate": "https://carrier.tocsin-tests.org/t/7"}]}}
    });
    let (status, created) = server.post_json("/v1/messages", &message).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = server.wait_done(id).await;
    assert_eq!(
        (done["counts"]["delivered"].as_i64(), done["format"].as_str()),
        (Some(2), Some("declarative")),
        "{done}"
    );

    let got = decrypted(&dev, id).await;
    assert_eq!(got.len(), 2, "both pushes decrypted");
    for p in &got {
        // The standard's members, where the standard reads them …
        assert_eq!(p["web_push"], 8030);
        assert_eq!(p["app_badge"], 3);
        assert_eq!(p["mutable"], true);
        let n = &p["notification"];
        assert_eq!(n["title"], "Order shipped");
        assert_eq!(n["navigate"], "https://shop.tocsin-tests.org/app/orders/7", "resolved against --public-url");
        assert_eq!(n["icon"], "https://shop.tocsin-tests.org/icon.png");
        assert_eq!(n["actions"][0]["navigate"], "https://carrier.tocsin-tests.org/t/7");
        assert_eq!(
            (n["lang"].as_str(), n["dir"].as_str(), n["tag"].as_str()),
            (Some("en"), Some("ltr"), Some("order-7"))
        );
        assert_eq!(n["data"], json!({"order": 7}));
        // … and where WebKit reads them.
        assert_eq!(n["app_badge"], 3);
        assert_eq!(n["mutable"], true);
        // What sw.js reports with, at the top level, where browsers ignore it.
        assert_eq!(p["eventToken"].as_str().map(str::len), Some(43));
    }

    // POST /api/push?format=declarative: the body is the message.
    let body = json!({"notification": {"title": "Sale", "navigate": "https://shop.tocsin-tests.org/sale"}});
    let (status, text) = push(&server, "/api/push?format=declarative&wait=true", body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let id = v["data"]["messageId"].as_str().unwrap();
    let got = decrypted(&dev, id).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| p["web_push"] == 8030 && p["notification"]["title"] == "Sale"), "{got:?}");

    // The default stays classic, byte for byte as before.
    let (status, created) =
        server.post_json("/v1/messages", &json!({"target": {"all": true}, "payload": {"title": "Plain"}})).await;
    assert_eq!(status, 202);
    let id = created["id"].as_str().unwrap();
    assert_eq!(server.wait_done(id).await["format"], "classic");
    let got = decrypted(&dev, id).await;
    assert!(got.iter().all(|p| p.get("web_push").is_none() && p["title"] == "Plain"), "{got:?}");
    let (_, list) = server.get("/v1/messages").await;
    let formats: Vec<&str> = list["items"].as_array().unwrap().iter().filter_map(|m| m["format"].as_str()).collect();
    assert_eq!(formats, ["classic", "declarative", "declarative"], "newest first");
}
both_backends!(declarative_message_bytes_are_the_standards_json, declarative_end_to_end);

/// `auto` through the real binary: the dev push service is not Apple's, so
/// it gets the classic JSON of the same notification (the choice per push
/// service is tested in the engine's tests, with Apple's hosts).
#[tokio::test]
async fn auto_sends_classic_json_to_other_push_services() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    assert_eq!(server.subscribe(&dev.mint(Some(&server.vapid_public_key().await)).await).await.0, 200);
    let message = json!({"format": "auto", "target": {"all": true}, "payload": {"app_badge": 2,
        "notification": {"title": "Both", "navigate": "https://shop.tocsin-tests.org/x",
        "actions": [{"action": "a", "title": "A", "navigate": "https://shop.tocsin-tests.org/a"}]}}});
    let (status, created) = server.post_json("/v1/messages", &message).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(server.wait_done(id).await["format"], "auto");
    let got = decrypted(&dev, id).await;
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!((p["title"].as_str(), p["url"].as_str()), (Some("Both"), Some("https://shop.tocsin-tests.org/x")));
    assert_eq!(p["appBadge"], 2);
    assert_eq!(p["actions"][0]["url"], "https://shop.tocsin-tests.org/a");
    assert!(p.get("web_push").is_none());
}

#[tokio::test]
async fn each_refusal_has_its_id_and_stores_nothing() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let nav = "https://shop.tocsin-tests.org/";
    let cases = [
        (json!({"notification": {"navigate": nav}}), "declarative-missing-title", ""),
        (json!({"notification": {"title": "", "navigate": nav}}), "declarative-missing-title", ""),
        (json!({"web_push": 8030}), "declarative-missing-title", ""),
        (json!({"notification": {"title": "t"}}), "declarative-missing-navigate", ""),
        (
            json!({"notification": {"title": "t", "navigate": "orders/7"}}),
            "declarative-invalid-navigate",
            "--public-url",
        ),
        (
            json!({"notification": {"title": "t", "navigate": "http://shop.tocsin-tests.org/"}}),
            "declarative-invalid-navigate",
            "https:",
        ),
        (
            json!({"notification": {"title": "t", "navigate": "javascript:alert(1)"}}),
            "declarative-invalid-navigate",
            "",
        ),
        (
            json!({"notification": {"title": "t", "navigate": nav, "dir": "sideways"}}),
            "declarative-invalid-field",
            "notification.dir",
        ),
        (
            json!({"notification": {"title": "t", "navigate": nav}, "app_badge": -1}),
            "declarative-invalid-field",
            "app_badge",
        ),
        (
            json!({"notification": {"title": "t", "navigate": nav}, "web_push": 1}),
            "declarative-invalid-field",
            "web_push",
        ),
        (
            json!({"notification": {"title": "t", "navigate": nav, "colour": "red"}}),
            "declarative-invalid-field",
            "notification.colour",
        ),
        (json!("just text"), "declarative-invalid-field", ""),
        (
            json!({"notification": {"title": "t", "navigate": nav, "body": "x".repeat(4000)}}),
            "payload-too-large",
            "bytes",
        ),
    ];
    for format in ["declarative", "auto"] {
        for (payload, id, mentions) in &cases {
            let body = json!({"format": format, "target": {"all": true}, "payload": payload});
            let (status, err) = server.post_json("/v1/messages", &body).await;
            assert_eq!((status, err["error"]["id"].as_str()), (400, Some(*id)), "{format} {payload}: {err}");
            let message = err["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(mentions), "{message:?} should mention {mentions:?}");
        }
    }
    let (status, err) =
        server.post_json("/v1/messages", &json!({"format": "fancy", "target": {"all": true}, "payload": {}})).await;
    assert_eq!((status, err["error"]["id"].as_str()), (400, Some("invalid-format")));
    let (status, err) =
        server.post_json("/v1/messages", &json!({"format": "declarative", "target": {"all": true}})).await;
    assert_eq!((status, err["error"]["id"].as_str()), (400, Some("declarative-missing-title")), "{err}");
    for (path, body, id) in [
        ("/api/push?format=declarative", "not json", "declarative-invalid-field"),
        (
            "/api/push?format=auto",
            r#"{"notification":{"navigate":"https://shop.tocsin-tests.org/"}}"#,
            "declarative-missing-title",
        ),
        ("/api/push?format=nope", "{}", "invalid-format"),
    ] {
        let (status, text) = push(&server, path, body.to_owned()).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains(&format!("\"id\":\"{id}\"")), "{path}: {text}");
    }
    let (_, list) = server.get("/v1/messages").await;
    assert_eq!(list["items"], json!([]), "nothing was stored");
    server.assert_up().await;
}

/// `tocsin serve` with `args`: whether it started, and what it printed on stderr.
fn serve_outcome(db: &Db, args: &[&str]) -> (bool, String) {
    let mut child = tocsin()
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .args(args)
        .env("TOCSIN_ADMIN_TOKEN", TOKEN)
        .env_remove("TOCSIN_VAPID_SUBJECT")
        .env_remove("TOCSIN_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tocsin serve");
    // It prints `listening on …` once it serves; a refusal ends it first.
    let mut first = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut first);
    let started = first.starts_with("listening on");
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
    (started, err)
}

#[test]
fn a_vapid_subject_apple_refuses_stops_the_start() {
    let db = Db::new(Backend::Sqlite);
    for subject in
        ["mailto:ops@localhost", "mailto:ops@example.com", "https://shop.test/contact", "mailto:a@printer.local"]
    {
        let (started, err) = serve_outcome(&db, &["--vapid-subject", subject]);
        assert!(!started, "{subject} must not start");
        assert!(err.contains("BadJwtToken") && err.contains("--endpoint-policy any"), "{subject}: {err}");
    }
    // Development: with --endpoint-policy any it starts (with a warning).
    assert!(serve_outcome(&db, &["--vapid-subject", "mailto:ops@localhost", "--endpoint-policy", "any"]).0);
    // A subject on a real domain starts; so does none (the quick start's development default).
    assert!(serve_outcome(&db, &["--vapid-subject", "mailto:ops@tocsin-tests.org"]).0);
    assert!(serve_outcome(&db, &[]).0);
    // A --public-url that is not an absolute URL stops it too.
    let (started, err) = serve_outcome(&db, &["--public-url", "shop/"]);
    assert!(!started && err.contains("--public-url"), "{err}");
}

#[tokio::test]
async fn apps_refuse_a_subject_apple_refuses() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &[]);
    let (status, err) =
        server.post_json("/v1/apps", &json!({"name": "shop", "vapidSubject": "mailto:ops@shop.example"})).await;
    assert_eq!((status, err["error"]["id"].as_str()), (400, Some("invalid-vapid-subject")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap_or_default().contains("BadJwtToken"));
    let out = tocsin()
        .args(["app", "create", "blog", "--vapid-subject", "mailto:me@localhost", "--database", &db.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BadJwtToken"));
    let (_, apps) = server.get("/v1/apps").await;
    assert_eq!(apps["items"].as_array().map(Vec::len), Some(1), "only default: {apps}");
    let out = tocsin()
        .args(["app", "create", "blog", "--vapid-subject", "mailto:me@localhost", "--allow-apple-rejected-subject"])
        .args(["--database", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
