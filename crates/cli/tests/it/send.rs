//! `tocsin vapid generate` and `tocsin send` against `tocsin dev push-service`,
//! both as real processes.

use crate::common;

use common::*;
use serde_json::{json, Value};
use tocsin_protocol::b64;

#[test]
fn vapid_generate_prints_web_push_json() {
    let out = tocsin().args(["vapid", "generate", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["privateKey", "publicKey"]);
    let public = b64::decode(v["publicKey"].as_str().unwrap()).unwrap();
    assert_eq!((public.len(), public[0]), (65, 4));
    assert_eq!(b64::decode(v["privateKey"].as_str().unwrap()).unwrap().len(), 32);
    assert!(!v["publicKey"].as_str().unwrap().contains('='));

    let text = stdout(&tocsin().args(["vapid", "generate"]).output().unwrap());
    assert!(text.contains("Public Key:") && text.contains("Private Key:"), "{text}");
}

#[tokio::test]
async fn round_trip_in_both_encodings_and_without_payload() {
    let dev = DevPush::start(&[]);
    let (public, private) = vapid_keys();
    let sub = dev.mint(Some(&public)).await;
    let file = jsonl(std::slice::from_ref(&sub));
    let vapid = ["--vapid-subject", "mailto:ops@example.com", "--vapid-pvtkey", &private];

    let mut args: Vec<String> = ["--subscription", file.path().to_str().unwrap(), "--payload", "héllo aes128gcm"]
        .iter()
        .chain(&vapid)
        .chain(&["--ttl", "60", "--urgency", "high", "--topic", "scores"])
        .map(|s| s.to_string())
        .collect();
    let out = send(args.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out).trim(), "201: delivered");

    // web-push's flags: endpoint, key and auth given one by one.
    args = [
        "--endpoint",
        sub["endpoint"].as_str().unwrap(),
        "--key",
        sub["keys"]["p256dh"].as_str().unwrap(),
        "--auth",
        sub["keys"]["auth"].as_str().unwrap(),
        "--payload",
        "legacy aesgcm",
        "--encoding",
        "aesgcm",
        "--vapid-pubkey",
        &public,
    ]
    .iter()
    .chain(&vapid)
    .map(|s| s.to_string())
    .collect();
    let out = send(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let args = ["--subscription", file.path().to_str().unwrap()].iter().chain(&vapid).map(|s| s.to_string()).collect();
    let out = send(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let msgs = dev.messages().await;
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["payload"], "héllo aes128gcm");
    assert_eq!(msgs[0]["encoding"], "aes128gcm");
    assert_eq!(msgs[0]["ttl"], 60);
    assert_eq!(msgs[0]["urgency"], "high");
    assert_eq!(msgs[0]["topic"], "scores");
    assert_eq!(msgs[0]["vapid"]["subject"], "mailto:ops@example.com");
    assert_eq!(msgs[0]["vapid"]["publicKey"], public.as_str());
    assert_eq!(msgs[1]["payload"], "legacy aesgcm");
    assert_eq!(msgs[1]["encoding"], "aesgcm");
    assert_eq!(msgs[1]["ttl"], 2_419_200);
    assert_eq!(msgs[2]["payload"], Value::Null);
    assert_eq!(msgs[2]["encoding"], Value::Null);
    assert_eq!(msgs[2]["bodyLength"], 0);
}

#[tokio::test]
async fn broadcast_to_1000_subscriptions_with_some_expired() {
    let dev = DevPush::start(&[]);
    let (public, private) = vapid_keys();
    let subs = dev.mint_batch(1000, &public).await;
    assert_eq!(subs.len(), 1000);
    let expired: Vec<&Value> = subs.iter().step_by(97).collect(); // 11 of them
    for s in &expired {
        let r = dev.post(&format!("/subscriptions/{}/expire", sub_id(s)), json!({})).await;
        assert_eq!(r.status(), 204);
    }
    let file = jsonl(&subs);
    let payload = r#"{"title":"Broadcast","body":"to everyone"}"#;
    let args = [
        "--subscription",
        file.path().to_str().unwrap(),
        "--payload",
        payload,
        "--vapid-subject",
        "mailto:ops@example.com",
        "--vapid-pvtkey",
        &private,
        "--concurrency",
        "64",
        "--json",
    ];
    let out = send(args.iter().map(|s| s.to_string()).collect()).await;
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert_eq!(summary["total"], 1000);
    assert_eq!(summary["delivered"], 1000 - expired.len() as u64);
    assert_eq!(summary["gone"], expired.len() as u64);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["expired"], 0);
    assert_eq!(
        summary["delivered"].as_u64().unwrap() + summary["gone"].as_u64().unwrap(),
        summary["total"].as_u64().unwrap()
    );
    assert!(summary["messagesPerSecond"].as_f64().unwrap() > 0.0);

    let msgs = dev.messages().await;
    assert_eq!(msgs.len(), 1000 - expired.len());
    let mut seen = std::collections::HashSet::new();
    for m in &msgs {
        assert_eq!(m["payload"], payload);
        assert!(seen.insert(m["subscriptionId"].as_str().unwrap().to_owned()), "delivered twice: {m}");
    }
    for s in &expired {
        assert!(!seen.contains(&sub_id(s)));
    }
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let dev = DevPush::start(&["--tls", "--cert-out", cert.to_str().unwrap()]);
    assert!(dev.base.starts_with("https://"));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap())
        .build()
        .unwrap();
    let dev = DevPush { http, ..dev };
    let sub = dev.mint(None).await;
    let file = jsonl(&[sub]);
    let path = file.path().to_str().unwrap().to_owned();

    let untrusted = send(vec![
        "--subscription".into(),
        path.clone(),
        "--payload".into(),
        "x".into(),
        "--attempts".into(),
        "1".into(),
    ])
    .await;
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(stdout(&untrusted).contains("not delivered"), "{}", stdout(&untrusted));

    let ok = send(vec![
        "--subscription".into(),
        path,
        "--payload".into(),
        "over TLS".into(),
        "--ca-cert".into(),
        cert.to_str().unwrap().into(),
    ])
    .await;
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let msgs = dev.messages().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["payload"], "over TLS");
    assert_eq!(msgs[0]["httpVersion"], "HTTP/2.0");
}

async fn send_one(dev: &DevPush, sub: &Value, extra: &[&str]) -> std::process::Output {
    let file = jsonl(std::slice::from_ref(sub));
    let mut args: Vec<String> =
        ["--subscription", file.path().to_str().unwrap(), "--payload", "p"].iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = send(args).await;
    drop(file);
    let _ = dev;
    out
}

#[tokio::test]
async fn each_push_service_answer_gets_its_exit_code_and_message() {
    let dev = DevPush::start(&[]);

    // 429 twice with Retry-After: waited for, then delivered at the third attempt.
    let sub = dev.mint(None).await;
    let r = dev
        .post(&format!("/subscriptions/{}/faults", sub_id(&sub)), json!({"status":429,"retryAfter":"1","times":2}))
        .await;
    assert_eq!(r.status(), 204);
    let started = std::time::Instant::now();
    let out = send_one(&dev, &sub, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out).trim(), "201: delivered after 2 retries");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "Retry-After was not honoured");
    assert_eq!(dev.sub_state(&sub).await["attempts"], 3);

    // 503 more times than attempts allow: failed, exit 1, nothing deleted.
    let sub = dev.mint(None).await;
    dev.post(&format!("/subscriptions/{}/faults", sub_id(&sub)), json!({"status":503,"retryAfter":"0","times":5}))
        .await;
    let out = send_one(&dev, &sub, &["--attempts", "2"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("gave up after the last retry: push service error (503)"), "{}", stdout(&out));

    // 413: failed for good, not retried.
    let sub = dev.mint(None).await;
    dev.post(&format!("/subscriptions/{}/faults", sub_id(&sub)), json!({"status":413})).await;
    let out = send_one(&dev, &sub, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("payload too large"), "{}", stdout(&out));
    assert_eq!(dev.sub_state(&sub).await["attempts"], 1);

    // A dropped connection is retried.
    let sub = dev.mint(None).await;
    dev.post(&format!("/subscriptions/{}/faults", sub_id(&sub)), json!({"drop":true})).await;
    let out = send_one(&dev, &sub, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out).trim(), "201: delivered after 1 retries");

    // A slow endpoint times out, then the retry gets through.
    let sub = dev.mint(None).await;
    dev.post(&format!("/subscriptions/{}/faults", sub_id(&sub)), json!({"delayMs":3000})).await;
    let out = send_one(&dev, &sub, &["--timeout", "1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("after 1 retries"));

    // Expired: 410, exit 3. Deleted: 404, exit 3.
    let sub = dev.mint(None).await;
    dev.post(&format!("/subscriptions/{}/expire", sub_id(&sub)), json!({})).await;
    let out = send_one(&dev, &sub, &[]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).starts_with("410: the subscription no longer exists"), "{}", stdout(&out));
    let sub = dev.mint(None).await;
    dev.http.delete(format!("{}/subscriptions/{}", dev.base, sub_id(&sub))).send().await.unwrap();
    let out = send_one(&dev, &sub, &[]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).starts_with("404:"));

    // VAPID key mismatch: named, with the hint.
    let (public, _) = vapid_keys();
    let (_, other_private) = vapid_keys();
    let sub = dev.mint(Some(&public)).await;
    let out =
        send_one(&dev, &sub, &["--vapid-subject", "mailto:a@example.com", "--vapid-pvtkey", &other_private]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("VAPID key mismatch"), "{}", stdout(&out));
    assert!(stdout(&out).contains("does not match the applicationServerKey"));
}

#[tokio::test]
async fn an_oversized_payload_is_refused_before_anything_is_sent() {
    let dev = DevPush::start(&[]);
    let sub = dev.mint(None).await;
    for (encoding, max) in [("aes128gcm", 3993usize), ("aesgcm", 4078)] {
        let attempts_before = dev.sub_state(&sub).await["attempts"].clone();
        let big = "a".repeat(max + 1);
        let file = jsonl(std::slice::from_ref(&sub));
        let base = ["--subscription", file.path().to_str().unwrap(), "--encoding", encoding, "--payload"];
        let out = tocsin().arg("send").args(base).arg(&big).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{encoding}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("at most {max} fit")), "{err}");
        assert_eq!(dev.sub_state(&sub).await["attempts"], attempts_before, "nothing may be sent");

        let fits = "a".repeat(max);
        let out = send(base.iter().map(|s| s.to_string()).chain([fits.clone()]).collect()).await;
        assert_eq!(out.status.code(), Some(0), "{encoding}: {}", stdout(&out));
        let msgs = dev.messages().await;
        let last = msgs.last().unwrap();
        assert_eq!(last["payload"].as_str().unwrap().len(), max);
        assert!(last["bodyLength"].as_u64().unwrap() <= 4096);
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--endpoint", "https://p.example/x", "--key", "AAAA", "--auth", "AAAAAAAAAAAAAAAAAAAAAA"], "p256dh"),
        (vec!["--endpoint", "https://p.example/x", "--key", "x"], "--auth"),
        (vec!["--topic", "no spaces allowed"], "topic"),
        (vec!["--urgency", "urgent"], "urgency"),
        (vec!["--subscription", "/nonexistent/subs.json"], "opening /nonexistent/subs.json"),
        (vec![], "--subscription"),
    ];
    for (args, want) in cases {
        let out = tocsin().arg("send").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let sub = r#"{"endpoint":"https://p.example/x","keys":{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}"#;
    let f = jsonl(&[serde_json::from_str(sub).unwrap()]);
    for (extra, want) in [
        (vec!["--vapid-subject", "http://example.com", "--vapid-pvtkey", "AAAA"], "must be a mailto: or https: URI"),
        (vec!["--vapid-subject", "mailto:a@b.example", "--vapid-pvtkey", "AAAA"], "private key must be 32 bytes"),
        (vec!["--vapid-subject", "mailto:a@b.example"], "--vapid-pvtkey"),
    ] {
        let out =
            tocsin().arg("send").args(["--subscription", f.path().to_str().unwrap()]).args(&extra).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

/// base64url keys may start with '-': `--vapid-pvtkey -abc…` and
/// `--auth -xyz…` are values, not flags (this was a flaky test once: one key
/// in 64 starts with '-').
#[tokio::test]
async fn keys_that_start_with_a_hyphen_are_values() {
    let dev = DevPush::start(&[]);
    let key = std::iter::repeat_with(|| tocsin_protocol::VapidKey::generate().unwrap())
        .find(|k| k.private_key_base64url().starts_with('-'))
        .unwrap();
    let sub = dev.mint(Some(&key.public_key_base64url())).await;
    let file = jsonl(std::slice::from_ref(&sub));
    let args = [
        "--subscription",
        file.path().to_str().unwrap(),
        "--payload",
        "-starts with a hyphen",
        "--vapid-subject",
        "mailto:a@example.com",
        "--vapid-pvtkey",
        &key.private_key_base64url(),
    ];
    let out = send(args.iter().map(|s| s.to_string()).collect()).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(dev.messages().await[0]["payload"], "-starts with a hyphen");
}

/// A stand-in proxy: counts the connections it gets and answers 502.
fn fake_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = conn.read(&mut [0u8; 4096]);
            let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, hits)
}

/// The proxy variables of the environment are not followed (a proxy
/// resolves names itself, past the server's connect-time address check);
/// `--proxy` is.
#[tokio::test]
async fn proxy_variables_are_ignored_unless_a_flag_names_a_proxy() {
    use std::sync::atomic::Ordering;
    let dev = DevPush::start(&[]);
    let sub = dev.mint(None).await;
    let file = jsonl(std::slice::from_ref(&sub));
    let (proxy, hits) = fake_proxy();
    let run = |flag: Option<&str>| {
        let mut cmd = tocsin();
        cmd.args(["send", "--subscription", file.path().to_str().unwrap(), "--payload", "direct", "--attempts", "1"])
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy)
            .env("HTTPS_PROXY", &proxy)
            .env("ALL_PROXY", &proxy)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        if let Some(p) = flag {
            cmd.args(["--proxy", p]);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the environment's proxy was used");
    assert_eq!(dev.messages().await.len(), 1);
    let out = run(Some(&proxy));
    assert_ne!(out.status.code(), Some(0), "through the proxy, which answers 502");
    assert!(hits.load(Ordering::SeqCst) >= 1, "--proxy was not used");
}
