//! Several apps on one server, key rotation and imports with an old
//! server's key, against the real binary and the dev push service, which
//! checks every push's VAPID token against the key its subscription was
//! made with (a push signed with another key is refused with 403).

use crate::common;

use std::collections::HashSet;

use common::server::{with_user, Backend, Db, Server, TOKEN};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// `tocsin …` against the test's database; its stdout, and success.
fn cli(db: &Db, args: &[&str]) -> (bool, String) {
    let out = tocsin().args(args).args(["--database", &db.url]).env_remove("TOCSIN_CONFIG").output().unwrap();
    if !out.status.success() {
        eprintln!("tocsin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A token made with `tocsin token create`.
fn token(db: &Db, name: &str, scope: &str, app: Option<&str>) -> String {
    let mut args = vec!["token", "create", "--name", name, "--scope", scope];
    if let Some(app) = app {
        args.extend(["--app", app]);
    }
    let (ok, out) = cli(db, &args);
    assert!(ok, "token create");
    out.trim().to_owned()
}

async fn call(server: &Server, method: Method, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = server.http.request(method, server.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn public_key(server: &Server, app: &str) -> String {
    let path =
        if app == "default" { "/api/vapid-public-key".to_owned() } else { format!("/apps/{app}/api/vapid-public-key") };
    let (status, body) = server.raw(Method::GET, &path, "").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str::<Value>(&body).unwrap()["publicKey"].as_str().unwrap().to_owned()
}

/// Subscribes `sub` through `app`'s public route, naming the key it was made with.
async fn subscribe(server: &Server, app: &str, sub: &Value) -> (u16, String) {
    let path = if app == "default" { "/api/subscription".to_owned() } else { format!("/apps/{app}/api/subscription") };
    server.raw(Method::POST, &path, sub.to_string()).await
}

/// Sends to every subscriber of `app` and waits until done; the message.
async fn broadcast(server: &Server, token: &str, app: &str, payload: Value) -> Value {
    let (status, v) = call(
        server,
        Method::POST,
        token,
        &format!("/v1/apps/{app}/messages"),
        Some(json!({"target": {"all": true}, "payload": payload})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    for _ in 0..2000 {
        let (_, m) = call(server, Method::GET, token, &format!("/v1/apps/{app}/messages/{id}"), None).await;
        if m["state"] == "done" {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("message {id} did not finish");
}

/// The dev push service's messages whose payload contains `marker`.
async fn received(dev: &DevPush, marker: &str) -> Vec<Value> {
    dev.messages().await.into_iter().filter(|m| m["payload"].as_str().is_some_and(|p| p.contains(marker))).collect()
}

fn ids(subs: &[Value]) -> HashSet<String> {
    subs.iter().map(sub_id).collect()
}

async fn two_apps(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);

    // One app made over the API, one with the CLI while the server runs.
    let (status, made) = call(
        &server,
        Method::POST,
        TOKEN,
        "/v1/apps",
        Some(json!({"name": "shop", "vapidSubject": "mailto:shop@example.com"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["app"], "shop");
    let (ok, out) = cli(&db, &["app", "create", "blog", "--vapid-subject", "mailto:blog@tocsin-tests.org"]);
    assert!(ok);
    let blog: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(blog.as_object().unwrap().len(), 2, "{blog}");
    assert_eq!(blog["app"], "blog");
    let (shop_key, blog_key, default_key) =
        (public_key(&server, "shop").await, public_key(&server, "blog").await, public_key(&server, "default").await);
    assert_eq!(shop_key, made["publicKey"].as_str().unwrap());
    assert_eq!(blog_key, blog["publicKey"].as_str().unwrap());
    assert_eq!(HashSet::from([&shop_key, &blog_key, &default_key]).len(), 3, "each app has its own key");

    // Subscribers: 3 in shop, 2 in blog, 1 in default, each made with its app's key.
    let mut shop = Vec::new();
    for i in 0..3 {
        let mut s = dev.mint(Some(&shop_key)).await;
        s["applicationServerKey"] = json!(shop_key);
        if i == 0 {
            with_user(&mut s, "alice");
        }
        assert_eq!(subscribe(&server, "shop", &s).await.0, 200);
        shop.push(s);
    }
    let mut blog_subs = Vec::new();
    for _ in 0..2 {
        let s = dev.mint(Some(&blog_key)).await;
        assert_eq!(subscribe(&server, "blog", &s).await.0, 200);
        blog_subs.push(s);
    }
    let default_sub = dev.mint(Some(&default_key)).await;
    assert_eq!(server.subscribe(&default_sub).await.0, 200);
    // An endpoint of one app cannot be taken into another.
    let taken = json!({"endpoint": shop[1]["endpoint"], "keys": shop[1]["keys"]});
    let (status, body) = subscribe(&server, "blog", &taken).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("endpoint-in-other-app"), "{body}");
    // A key that is not the app's is refused.
    let mut foreign = dev.mint(Some(&shop_key)).await;
    foreign["applicationServerKey"] = json!(shop_key);
    let (status, body) = subscribe(&server, "blog", &foreign).await;
    assert_eq!((status, body.contains("unknown-vapid-key")), (400, true), "{body}");

    // GET /v1/apps: every app with its subscribers.
    let (status, apps) = server.get("/v1/apps").await;
    assert_eq!(status, 200);
    let counts: Vec<(String, i64)> = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["app"].as_str().unwrap().to_owned(), a["subscriptions"].as_i64().unwrap()))
        .collect();
    assert_eq!(counts, [("default".into(), 1), ("shop".into(), 3), ("blog".into(), 2)]);

    // A broadcast in shop, with a token made for shop, reaches shop only,
    // signed with shop's key and subject.
    let shop_sender = token(&db, "shop-sender", "send", Some("shop"));
    let m = broadcast(&server, &shop_sender, "shop", json!({"title": "shop-sale"})).await;
    assert_eq!((m["counts"]["targeted"].as_i64(), m["counts"]["delivered"].as_i64()), (Some(3), Some(3)), "{m}");
    let got = received(&dev, "shop-sale").await;
    assert_eq!(
        got.iter().map(|g| g["subscriptionId"].as_str().unwrap().to_owned()).collect::<HashSet<_>>(),
        ids(&shop)
    );
    for g in &got {
        assert_eq!(
            (g["vapid"]["publicKey"].as_str(), g["vapid"]["subject"].as_str()),
            (Some(shop_key.as_str()), Some("mailto:shop@example.com"))
        );
        // The payload names the app, so that the service worker reports to it.
        let p: Value = serde_json::from_str(g["payload"].as_str().unwrap()).unwrap();
        assert_eq!(p["app"], "shop");
    }
    // Its events count in shop, and are not found in another app.
    let p: Value = serde_json::from_str(got[0]["payload"].as_str().unwrap()).unwrap();
    let event = json!({"type": "shown", "messageId": p["messageId"], "eventToken": p["eventToken"]});
    assert_eq!(server.raw(Method::POST, "/api/events", event.to_string()).await.0, 404);
    assert_eq!(server.raw(Method::POST, "/apps/shop/api/events", event.to_string()).await.0, 202);

    // The global token in blog: blog's subscribers only, blog's subject;
    // the classic /api/push: default only, with the server's subject.
    let m = broadcast(&server, TOKEN, "blog", json!({"title": "blog-post"})).await;
    assert_eq!(m["counts"]["delivered"], 2, "{m}");
    let got = received(&dev, "blog-post").await;
    assert_eq!(
        got.iter().map(|g| g["subscriptionId"].as_str().unwrap().to_owned()).collect::<HashSet<_>>(),
        ids(&blog_subs)
    );
    assert!(got.iter().all(|g| g["vapid"]["subject"] == "mailto:blog@tocsin-tests.org"));
    let r = server
        .http
        .post(server.url("/api/push?wait=true"))
        .bearer_auth(TOKEN)
        .body(r#"{"title":"default-news"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = received(&dev, "default-news").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["subscriptionId"].as_str().unwrap(), sub_id(&default_sub));
    assert_eq!(got[0]["vapid"]["subject"], "mailto:tests@tocsin-tests.org");
    let p: Value = serde_json::from_str(got[0]["payload"].as_str().unwrap()).unwrap();
    assert!(p.get("app").is_none(), "default's payloads are as before: {p}");

    // A shop token in blog: as if blog did not exist; ids of blog not found under shop.
    let (_, blog_list) = server.get("/v1/apps/blog/subscriptions").await;
    let blog_sub_id = blog_list["items"][0]["id"].as_i64().unwrap();
    let (_, blog_msgs) = server.get("/v1/apps/blog/messages").await;
    let blog_msg = blog_msgs["items"][0]["id"].as_str().unwrap().to_owned();
    let shop_admin = token(&db, "shop-admin", "admin", Some("shop"));
    for (method, path, body) in [
        (Method::POST, "/v1/apps/blog/messages".to_owned(), Some(json!({"target": {"all": true}, "payload": "x"}))),
        (Method::GET, "/v1/apps/blog/messages".to_owned(), None),
        (Method::GET, format!("/v1/apps/blog/messages/{blog_msg}"), None),
        (Method::DELETE, format!("/v1/apps/blog/messages/{blog_msg}"), None),
        (Method::GET, "/v1/apps/blog/subscriptions".to_owned(), None),
        (Method::DELETE, format!("/v1/apps/blog/subscriptions/{blog_sub_id}"), None),
        (Method::GET, "/v1/apps/blog/stats".to_owned(), None),
        (Method::POST, "/v1/apps/blog/vapid-keys".to_owned(), None),
        (Method::GET, "/v1/messages".to_owned(), None),
        (Method::POST, "/apps/blog/api/push".to_owned(), Some(json!({"title": "x"}))),
        (Method::POST, "/api/push".to_owned(), Some(json!({"title": "x"}))),
    ] {
        let (status, v) = call(&server, method.clone(), &shop_admin, &path, body).await;
        assert_eq!((status, v["error"]["id"].as_str()), (404, Some("app-not-found")), "{method} {path}: {v}");
    }
    for path in [format!("/v1/apps/shop/messages/{blog_msg}"), format!("/v1/apps/shop/subscriptions/{blog_sub_id}")] {
        let (status, v) = call(&server, Method::GET, &shop_admin, &path, None).await;
        assert_eq!(status, 404, "{path}: {v}");
        assert_ne!(v["error"]["id"], "app-not-found", "{v}");
    }
    let (status, _) =
        call(&server, Method::DELETE, &shop_admin, &format!("/v1/apps/shop/subscriptions/{blog_sub_id}"), None).await;
    assert_eq!(status, 404);
    let (_, blog_stats) = server.get("/v1/apps/blog/stats").await;
    assert_eq!(
        (blog_stats["subscriptions"].as_i64(), blog_stats["messages"].as_i64()),
        (Some(2), Some(1)),
        "nothing of blog changed"
    );
    // GET /v1/token: what a token is.
    assert_eq!(
        call(&server, Method::GET, &shop_admin, "/v1/token", None).await.1,
        json!({"scope": "admin", "app": "shop"})
    );
    assert_eq!(
        call(&server, Method::GET, &shop_sender, "/v1/token", None).await.1,
        json!({"scope": "send", "app": "shop"})
    );
    assert_eq!(call(&server, Method::GET, TOKEN, "/v1/token", None).await.1, json!({"scope": "admin", "app": null}));
    // An app's token sees its own app in /v1/apps, and cannot make apps.
    let (_, listed) = call(&server, Method::GET, &shop_admin, "/v1/apps", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["app"], "shop");
    let (status, v) = call(&server, Method::POST, &shop_admin, "/v1/apps", Some(json!({"name": "mine"}))).await;
    assert_eq!((status, v["error"]["id"].as_str()), (403, Some("server-token-required")));
    let (status, _) = call(&server, Method::GET, &shop_admin, "/metrics", None).await;
    assert_eq!(status, 403, "server-wide metrics need a server-wide token");
    // It works in its own app, and the unprefixed routes stay default's.
    let (status, stats) = call(&server, Method::GET, &shop_admin, "/v1/apps/shop/stats", None).await;
    assert_eq!((status, stats["subscriptions"].as_i64()), (200, Some(3)));
    assert_eq!(server.count().await, 1);
    let text = server.http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"tocsin_subscriptions{app="shop"} 3"#), "{text}");
}
both_backends!(apps_are_kept_apart, two_apps);

async fn rotation(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    let (status, _) = call(&server, Method::POST, TOKEN, "/v1/apps", Some(json!({"name": "shop"}))).await;
    assert_eq!(status, 201);
    let k1 = public_key(&server, "shop").await;
    let mut old = Vec::new();
    for i in 0..2 {
        let mut s = dev.mint(Some(&k1)).await;
        with_user(&mut s, &format!("user-{i}"));
        s["topics"] = json!(["news"]);
        assert_eq!(subscribe(&server, "shop", &s).await.0, 200);
        old.push(s);
    }

    // Rotate: the new key is current at once; the old one stays.
    let (status, k2) = call(&server, Method::POST, TOKEN, "/v1/apps/shop/vapid-keys", None).await;
    assert_eq!(status, 201, "{k2}");
    let k2_key = k2["publicKey"].as_str().unwrap().to_owned();
    assert_ne!(k2_key, k1);
    assert_eq!(public_key(&server, "shop").await, k2_key);
    let mut fresh = dev.mint(Some(&k2_key)).await;
    fresh["applicationServerKey"] = json!(k2_key);
    assert_eq!(subscribe(&server, "shop", &fresh).await.0, 200);
    // A client that posts an old subscription again without naming its key
    // (curl, an older tocsin.js) does not move it to the new key.
    let again = json!({"endpoint": old[0]["endpoint"], "keys": old[0]["keys"]});
    assert_eq!(subscribe(&server, "shop", &again).await.0, 200);

    // Old subscriptions are still delivered, each signed with its own key.
    let m = broadcast(&server, TOKEN, "shop", json!({"title": "after-rotation"})).await;
    assert_eq!(m["counts"]["delivered"], 3, "{m}");
    for g in received(&dev, "after-rotation").await {
        let id = g["subscriptionId"].as_str().unwrap();
        let want = if id == sub_id(&fresh) { &k2_key } else { &k1 };
        assert_eq!(g["vapid"]["publicKey"].as_str(), Some(want.as_str()), "{g}");
    }
    let keys = |v: &Value| -> Vec<(i64, bool, i64)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["id"].as_i64().unwrap(), k["current"].as_bool().unwrap(), k["subscriptions"].as_i64().unwrap()))
            .collect()
    };
    let (status, listed) = server.get("/v1/apps/shop/vapid-keys").await;
    assert_eq!(status, 200);
    let (id1, id2) = (listed["items"][0]["id"].as_i64().unwrap(), k2["id"].as_i64().unwrap());
    assert_eq!(keys(&listed), [(id1, false, 2), (id2, true, 1)], "{listed}");
    assert!(listed["items"][0]["createdAt"].as_i64().is_some());

    // The old key cannot go while it has subscribers; the current never.
    let (status, v) = call(&server, Method::DELETE, TOKEN, &format!("/v1/apps/shop/vapid-keys/{id1}"), None).await;
    assert_eq!((status, v["error"]["id"].as_str()), (409, Some("key-in-use")), "{v}");
    let (status, v) =
        call(&server, Method::DELETE, TOKEN, &format!("/v1/apps/shop/vapid-keys/{id2}?force=true"), None).await;
    assert_eq!((status, v["error"]["id"].as_str()), (409, Some("key-is-current")), "{v}");
    let (status, v) = call(&server, Method::DELETE, TOKEN, &format!("/v1/vapid-keys/{id1}"), None).await;
    assert_eq!((status, v["error"]["id"].as_str()), (404, Some("key-not-found")), "another app's key: {v}");

    // The browsers catch up (what tocsin.js does on its next page load):
    // a subscription with the new key replaces the old, proven by its auth
    // secret, and keeps its user and topics.
    let mut moved = Vec::new();
    for o in &old {
        let mut s = dev.mint(Some(&k2_key)).await;
        s["applicationServerKey"] = json!(k2_key);
        s["oldEndpoint"] = o["endpoint"].clone();
        s["oldKeys"] = json!({"auth": o["keys"]["auth"]});
        assert_eq!(subscribe(&server, "shop", &s).await.0, 200);
        moved.push(s);
    }
    let (_, listed) = server.get("/v1/apps/shop/vapid-keys").await;
    assert_eq!(keys(&listed), [(id1, false, 0), (id2, true, 3)]);
    let (_, subs) = server.get("/v1/apps/shop/subscriptions?userId=user-1").await;
    assert_eq!(subs["items"].as_array().unwrap().len(), 1);
    assert_eq!(subs["items"][0]["endpoint"], moved[1]["endpoint"]);
    assert_eq!(subs["items"][0]["topics"], json!(["news"]));
    let (status, v) = call(&server, Method::DELETE, TOKEN, &format!("/v1/apps/shop/vapid-keys/{id1}"), None).await;
    assert_eq!((status, v["removedSubscriptions"].as_i64()), (200, Some(0)), "{v}");
    let (_, listed) = server.get("/v1/apps/shop/vapid-keys").await;
    assert_eq!(keys(&listed), [(id2, true, 3)]);
    let m = broadcast(&server, TOKEN, "shop", json!({"title": "all-moved"})).await;
    assert_eq!(m["counts"]["delivered"], 3, "{m}");
    assert!(received(&dev, "all-moved").await.iter().all(|g| g["vapid"]["publicKey"] == json!(k2_key)));

    // Rotating with the CLI; a forced retirement takes its subscribers along.
    let (ok, out) = cli(&db, &["vapid", "rotate", "--app", "shop"]);
    assert!(ok);
    let k3: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(k3["app"], "shop");
    // The server reads the app again within a second (its cache).
    let mut seen = String::new();
    for _ in 0..100 {
        seen = public_key(&server, "shop").await;
        if seen == k3["publicKey"].as_str().unwrap() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, k3["publicKey"].as_str().unwrap());
    let (status, v) =
        call(&server, Method::DELETE, TOKEN, &format!("/v1/apps/shop/vapid-keys/{id2}?force=true"), None).await;
    assert_eq!((status, v["removedSubscriptions"].as_i64()), (200, Some(3)), "{v}");
    let (_, stats) = server.get("/v1/apps/shop/stats").await;
    assert_eq!(stats["subscriptions"], 0);
}
both_backends!(rotation_keeps_every_subscriber, rotation);

async fn import(backend: Backend) {
    let db = Db::new(backend);
    let dev = DevPush::start(&[]);
    // Subscriptions another server made with its own key pair.
    let (old_public, old_private) = vapid_keys();
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut s = dev.mint(Some(&old_public)).await;
        s["userId"] = json!(format!("u{i}"));
        subs.push(s);
    }
    let file = jsonl(&subs);
    let (ok, _) = cli(&db, &["app", "create", "moved"]);
    assert!(ok);
    let path = file.path().to_str().unwrap().to_owned();
    let (ok, out) =
        cli(&db, &["subscriptions", "import", "--app", "moved", "--vapid-private-key", &old_private, &path]);
    assert!(ok);
    assert_eq!(out.trim(), "imported 3, skipped 0");
    // Imported twice: the same key is found again, nothing doubles.
    assert!(cli(&db, &["subscriptions", "import", "--app", "moved", "--vapid-private-key", &old_private, &path]).0);
    assert_eq!(cli(&db, &["subscriptions", "count", "--app", "moved"]).1.trim(), "3");
    assert_eq!(cli(&db, &["subscriptions", "count"]).1.trim(), "0", "default has none of them");
    assert!(!cli(&db, &["subscriptions", "count", "--app", "nope"]).0);

    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let (_, listed) = server.get("/v1/apps/moved/vapid-keys").await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    let imported = items.iter().find(|k| k["publicKey"] == json!(old_public)).expect("the old key is stored");
    assert_eq!((imported["current"].as_bool(), imported["subscriptions"].as_i64()), (Some(false), Some(3)));
    assert_ne!(public_key(&server, "moved").await, old_public, "the app's own key stays current");
    // Delivered, signed with the old key, which the push service checks.
    let m = broadcast(&server, TOKEN, "moved", json!({"title": "moved-in"})).await;
    assert_eq!((m["counts"]["delivered"].as_i64(), m["counts"]["failed"].as_i64()), (Some(3), Some(0)), "{m}");
    let got = received(&dev, "moved-in").await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g["vapid"]["publicKey"] == json!(old_public)));
    // Another app cannot claim the same key, nor the same endpoints.
    assert!(cli(&db, &["app", "create", "other"]).0);
    assert!(!cli(&db, &["subscriptions", "import", "--app", "other", "--vapid-private-key", &old_private, &path]).0);
    let mut mixed = subs[..1].to_vec();
    mixed.push(dev.mint(None).await);
    let mixed = jsonl(&mixed);
    let (ok, out) = cli(&db, &["subscriptions", "import", "--app", "other", mixed.path().to_str().unwrap()]);
    assert!(!ok, "a skipped line fails the command");
    assert_eq!(out.trim(), "imported 1, skipped 1");
    assert_eq!(cli(&db, &["subscriptions", "count", "--app", "moved"]).1.trim(), "3", "moved's row stayed moved's");
}
both_backends!(import_with_the_old_servers_key, import);

#[tokio::test]
async fn app_routes_refuse_bad_input_and_change_nothing() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any"]);
    let dev = DevPush::start(&[]);
    // Creating apps: a token, a slug, a subject, one name once.
    let (status, _) = server.raw(Method::POST, "/v1/apps", r#"{"name":"a"}"#).await;
    assert_eq!(status, 401);
    for (body, status, id) in [
        (json!({"name": "Shop"}), 400, "invalid-app-name"),
        (json!({"name": ""}), 400, "invalid-app-name"),
        (json!({"name": "x".repeat(41)}), 400, "invalid-app-name"),
        (json!({"name": "a/b"}), 400, "invalid-app-name"),
        (json!({"name": "ok", "vapidSubject": "ftp://x"}), 400, "invalid-vapid-subject"),
        (json!({"name": "ok", "corsOrigins": ["bad\norigin"]}), 400, "invalid-cors-origin"),
        (json!({"name": "ok", "extra": 1}), 400, "invalid-app"),
        (json!({"name": 5}), 400, "invalid-app"),
        (json!({"name": "default"}), 409, "app-exists"),
    ] {
        let (s, v) = server.post_json("/v1/apps", &body).await;
        assert_eq!((s, v["error"]["id"].as_str()), (status, Some(id)), "{body}: {v}");
    }
    let (status, v) = server.post_json("/v1/apps", &json!({"name": "x".repeat(40)})).await;
    assert_eq!(status, 201, "{v}");
    let (_, apps) = server.get("/v1/apps").await;
    assert_eq!(apps["items"].as_array().unwrap().len(), 2, "only the valid one was made");
    let (ok, _) = cli(&db, &["app", "create", "Bad Name"]);
    assert!(!ok);

    // Unknown apps and odd names: 404, nothing stored.
    let sub = dev.mint(None).await;
    for path in ["/apps/nope/api/subscription", "/apps/NOPE/api/subscription", "/apps/a%2Fb/api/subscription"] {
        let (status, body) = server.raw(Method::POST, path, sub.to_string()).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, body) = server.raw(Method::GET, "/apps/nope/api/vapid-public-key", "").await;
    assert_eq!((status, body.contains("app-not-found")), (404, true), "{body}");
    let (status, _) = server.get("/v1/apps/nope/stats").await;
    assert_eq!(status, 404);
    assert_eq!(server.count().await, 0);
    // Keys: ids that are not numbers or not the app's.
    for path in ["/v1/vapid-keys/abc", "/v1/vapid-keys/999", "/v1/vapid-keys/-1"] {
        let (status, v) = call(&server, Method::DELETE, TOKEN, path, None).await;
        assert_eq!((status, v["error"]["id"].as_str()), (404, Some("key-not-found")), "{path}");
    }
    let (_, keys) = server.get("/v1/vapid-keys").await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 1);
    // Rotating needs admin.
    let reader = token(&db, "reader", "read", None);
    let (status, _) = call(&server, Method::POST, &reader, "/v1/vapid-keys", None).await;
    assert_eq!(status, 403);
    let (_, keys) = server.get("/v1/vapid-keys").await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 1);
    // A token for an app that does not exist cannot be made.
    let out =
        tocsin().args(["token", "create", "--name", "t", "--app", "nope", "--database", &db.url]).output().unwrap();
    assert!(!out.status.success());
}

/// The CORS origin a preflight for `path` from `origin` is allowed, if any.
async fn preflight(server: &Server, path: &str, origin: &str) -> Option<String> {
    let r = server
        .http
        .request(Method::OPTIONS, server.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_app_has_its_own_user_signing_secret_and_cors_origins() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--cors-origin", "https://main.example"]);
    let dev = DevPush::start(&[]);
    let body = json!({"name": "site", "userSigningSecret": "site-secret", "corsOrigins": ["https://site.example"]});
    assert_eq!(server.post_json("/v1/apps", &body).await.0, 201);
    let (_, plain) = server.post_json("/v1/apps", &json!({"name": "plain"})).await;
    assert_eq!(plain["app"], "plain");
    let site_key = public_key(&server, "site").await;

    // User ids: signed with the app's own secret, not the server's.
    let mut sub = dev.mint(Some(&site_key)).await;
    with_user(&mut sub, "alice");
    let (status, body) = subscribe(&server, "site", &sub).await;
    assert_eq!((status, body.contains("invalid-user-signature")), (403, true), "{body}");
    assert_eq!(server.get("/v1/apps/site/stats").await.1["subscriptions"], 0, "a refused request stores nothing");
    sub["userSignature"] = json!(tocsin_server::proof::sign_user_id("site-secret", "alice"));
    assert_eq!(subscribe(&server, "site", &sub).await.0, 200);
    let (_, listed) = server.get("/v1/apps/site/subscriptions?userId=alice").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    // An app without a secret of its own takes the server's.
    let mut other = dev.mint(Some(&public_key(&server, "plain").await)).await;
    with_user(&mut other, "bob");
    assert_eq!(subscribe(&server, "plain", &other).await.0, 200);

    // CORS: each app's own origins; an app without any takes the server's.
    let site = "/apps/site/api/subscription";
    assert_eq!(preflight(&server, site, "https://site.example").await.as_deref(), Some("https://site.example"));
    assert_eq!(preflight(&server, site, "https://main.example").await, None);
    assert_eq!(
        preflight(&server, "/api/subscription", "https://main.example").await.as_deref(),
        Some("https://main.example")
    );
    assert_eq!(preflight(&server, "/api/subscription", "https://site.example").await, None);
    assert_eq!(
        preflight(&server, "/apps/plain/api/subscription", "https://main.example").await.as_deref(),
        Some("https://main.example")
    );
    assert_eq!(preflight(&server, "/apps/nope/api/subscription", "https://main.example").await, None);
}

/// Two nodes on one PostgreSQL: an app made and rotated on one is served by
/// the other within a second, and a subscription made there with the new
/// key is delivered, signed with it, by whichever node sends.
#[tokio::test]
async fn another_node_sees_a_new_app_and_a_rotation() {
    let db = Db::new(Backend::Postgres);
    let a = Server::start(&db, &["--endpoint-policy", "any", "--node-id", "node-a"]);
    let b = Server::start(&db, &["--endpoint-policy", "any", "--node-id", "node-b"]);
    let dev = DevPush::start(&[]);
    assert_eq!(a.post_json("/v1/apps", &json!({"name": "shop"})).await.0, 201);
    let (status, rotated) = call(&a, Method::POST, TOKEN, "/v1/apps/shop/vapid-keys", None).await;
    assert_eq!(status, 201);
    let new_key = rotated["publicKey"].as_str().unwrap().to_owned();
    // Node b: the app and its current key, within a second (its cache).
    let mut seen = String::new();
    for _ in 0..100 {
        let (status, body) = b.raw(Method::GET, "/apps/shop/api/vapid-public-key", "").await;
        if status == 200 {
            seen = serde_json::from_str::<Value>(&body).unwrap()["publicKey"].as_str().unwrap().to_owned();
            if seen == new_key {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, new_key);
    let mut s = dev.mint(Some(&new_key)).await;
    s["applicationServerKey"] = json!(new_key);
    assert_eq!(subscribe(&b, "shop", &s).await.0, 200);
    let m = broadcast(&a, TOKEN, "shop", json!({"title": "two-nodes"})).await;
    assert_eq!(m["counts"]["delivered"], 1, "{m}");
    let got = received(&dev, "two-nodes").await;
    assert_eq!(got[0]["vapid"]["publicKey"], json!(new_key));
}
