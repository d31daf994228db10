//! The public routes under attack, against the real binary: each attempt is
//! refused with its documented error id, and nothing a refused request
//! carried is stored.

mod common;

use common::server::{with_user, Backend, Db, Server, USER_SECRET};
use common::*;
use serde_json::{json, Value};

async fn minted(dev: &DevPush, server: &Server) -> Value {
    dev.mint(Some(&server.vapid_public_key().await)).await
}

/// `(status, error id)` of a POST to `/api/subscription`.
async fn post(server: &Server, body: &Value) -> (u16, String) {
    let (status, text) = server.subscribe(body).await;
    let id = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["id"].as_str().map(str::to_owned));
    (status, id.unwrap_or(text))
}

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
    let mut cmd = tocsin();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url, "--endpoint-policy", "any"])
        .args(extra)
        .env("TOCSIN_VAPID_SUBJECT", "mailto:tests@example.com")
        .env("TOCSIN_ADMIN_TOKEN", common::server::TOKEN)
        .env_remove("TOCSIN_USER_SIGNING_SECRET")
        .env_remove("TOCSIN_CONFIG");
    Server::from_proc(spawn(cmd))
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
