//! The dev push service answers like a real one: each defect in a push gets
//! the status a push service gives it, and nothing is recorded.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{json, Value};
use tocsin_protocol::request::{self, PushOptions};
use tocsin_protocol::{ContentEncoding, Subscription, VapidKey, VapidSigner, VapidSubject};

fn new_signer() -> VapidSigner {
    VapidSigner::new(Arc::new(VapidKey::generate().unwrap()), VapidSubject::new("mailto:t@example.com").unwrap())
}

#[tokio::test]
async fn each_defect_gets_the_status_a_push_service_gives() {
    let dev = DevPush::start(&[]);
    let signer = new_signer();
    let json_sub = dev.mint(Some(&signer.key().public_key_base64url())).await;
    let sub = Subscription::from_value(json_sub.clone()).unwrap();
    let now = SystemTime::now();
    let good = |encoding| {
        request::build(&sub, Some(b"hi"), &PushOptions { encoding, ..Default::default() }, Some(&signer), now).unwrap()
    };

    type Mutate = Box<dyn Fn(&mut http::Request<bytes::Bytes>)>;
    let cases: Vec<(&str, ContentEncoding, Mutate, u16)> = vec![
        ("valid aes128gcm", ContentEncoding::Aes128Gcm, Box::new(|_| {}), 201),
        ("valid aesgcm", ContentEncoding::AesGcm, Box::new(|_| {}), 201),
        ("no TTL", ContentEncoding::Aes128Gcm, Box::new(|r| drop(r.headers_mut().remove("ttl"))), 400),
        (
            "bad urgency",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| drop(r.headers_mut().insert("urgency", "urgent".parse().unwrap()))),
            400,
        ),
        (
            "bad topic",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| drop(r.headers_mut().insert("topic", "a.b".parse().unwrap()))),
            400,
        ),
        ("tampered body", ContentEncoding::Aes128Gcm, Box::new(|r| *r.body_mut() = tamper(r.body())), 400),
        (
            "oversized body",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| {
                *r.body_mut() = vec![0u8; 4097].into();
                r.headers_mut().insert("content-length", 4097.into());
            }),
            413,
        ),
        (
            "aesgcm without Encryption",
            ContentEncoding::AesGcm,
            Box::new(|r| drop(r.headers_mut().remove("encryption"))),
            400,
        ),
        (
            "body without Content-Encoding",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| drop(r.headers_mut().remove("content-encoding"))),
            400,
        ),
        (
            "unknown Content-Encoding",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| drop(r.headers_mut().insert("content-encoding", "gzip".parse().unwrap()))),
            400,
        ),
        ("no VAPID", ContentEncoding::Aes128Gcm, Box::new(|r| drop(r.headers_mut().remove("authorization"))), 401),
        (
            "VAPID for another audience",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| {
                let h = new_signer().authorization("https://elsewhere.example", SystemTime::now()).unwrap();
                r.headers_mut().insert("authorization", h);
            }),
            401,
        ),
        (
            "expired VAPID token",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| {
                let s = new_signer();
                let aud = r.uri().to_string();
                let aud = aud.split("/push").next().unwrap().to_owned();
                let (jwt, _) = s.token(&aud, SystemTime::now() - Duration::from_secs(13 * 3600)).unwrap();
                let value = format!("vapid t={jwt}, k={}", s.key().public_key_base64url());
                r.headers_mut().insert("authorization", value.parse().unwrap());
            }),
            401,
        ),
        (
            "VAPID key other than the subscription's",
            ContentEncoding::Aes128Gcm,
            Box::new(|r| {
                let aud = r.uri().to_string();
                let aud = aud.split("/push").next().unwrap().to_owned();
                r.headers_mut().insert("authorization", new_signer().authorization(&aud, SystemTime::now()).unwrap());
            }),
            403,
        ),
    ];
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for (name, encoding, mutate, want) in cases {
        let mut req = good(encoding);
        mutate(&mut req);
        let resp = client.execute(reqwest::Request::try_from(req.map(reqwest::Body::from)).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        assert_eq!(status, want, "{name}: {body}");
        if want == 201 {
            accepted += 1;
            assert!(location.unwrap().starts_with(&format!("{}/messages/", dev.base)), "{name}");
        } else {
            let err: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{name}: JSON error body: {body}"));
            assert_eq!(err["code"], want, "{name}");
            assert!(!err["message"].as_str().unwrap().is_empty(), "{name}");
        }
    }
    assert_eq!(dev.messages().await.len(), accepted, "only accepted pushes are recorded");

    // Unknown, expired, and routes that do not exist.
    let r = client.post(format!("{}/push/nope", dev.base)).header("ttl", "0").send().await.unwrap();
    assert_eq!(r.status(), 404);
    dev.post(&format!("/subscriptions/{}/expire", sub_id(&json_sub)), json!({})).await;
    let r = client
        .execute(reqwest::Request::try_from(good(ContentEncoding::Aes128Gcm).map(reqwest::Body::from)).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let r = client.get(format!("{}/no/such/route", dev.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 404);
    let r = dev.post("/subscriptions", json!({"applicationServerKey": "short"})).await;
    assert_eq!(r.status(), 400);
    let r = dev.post(&format!("/subscriptions/{}/faults", sub_id(&json_sub)), json!({"times": 1})).await;
    assert_eq!(r.status(), 400);
}

fn tamper(body: &bytes::Bytes) -> bytes::Bytes {
    let mut v = body.to_vec();
    if let Some(last) = v.last_mut() {
        *last ^= 0xff;
    }
    v.into()
}
