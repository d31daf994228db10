//! Interoperability with implementations nobody here wrote (Python's
//! `http_ece`, `cryptography`, `pywebpush` and `py_vapid`; versions pinned in
//! tests/interop/requirements.txt).

use crate::common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Tocsin encrypts and signs; `http_ece` decrypts and `cryptography` checks
/// the ES256 token.
#[tokio::test]
async fn an_independent_receiver_decrypts_and_verifies_what_tocsin_sends() {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/interop/receiver.py")).args(["--count", "3"]);
    let mut receiver = spawn(cmd);
    let hello: Value = serde_json::from_str(&receiver.first_line).unwrap();
    let audience = hello["audience"].as_str().unwrap().to_owned();
    let subs = hello["subscriptions"].as_array().unwrap().clone();
    let (public, private) = vapid_keys();

    let cases = [
        (0, vec!["--payload", "Grüße from Tocsin, aes128gcm", "--urgency", "low", "--topic", "t-1"]),
        (1, vec!["--payload", "from Tocsin, aesgcm", "--encoding", "aesgcm"]),
        (2, vec![]),
    ];
    for (i, extra) in &cases {
        let file = jsonl(&[subs[*i].clone()]);
        let mut args: Vec<String> = [
            "--subscription",
            file.path().to_str().unwrap(),
            "--vapid-subject",
            "mailto:interop@example.com",
            "--vapid-pvtkey",
            &private,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = send(args).await;
        assert_eq!(out.status.code(), Some(0), "case {i}: {}", stdout(&out));
    }

    let lines = receiver.lines.take().unwrap();
    let results: Vec<Value> = lines.take(3).map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    for r in &results {
        assert_eq!(r["ok"], true, "{r}");
        let v = &r["vapid"];
        assert_eq!(v["alg"], "ES256", "{r}");
        assert_eq!(v["aud"], audience.as_str(), "{r}");
        assert_eq!(v["audOk"], true);
        assert_eq!(v["expOk"], true);
        assert_eq!(v["sub"], "mailto:interop@example.com");
        assert_eq!(v["k"], public.as_str());
        assert_eq!(r["ttl"], "2419200");
    }
    assert_eq!(results[0]["vapid"]["scheme"], "vapid", "aes128gcm: RFC 8292's scheme");
    assert_eq!(results[1]["vapid"]["scheme"], "WebPush", "aesgcm: the scheme its senders and services use");
    assert_eq!(results[0]["encoding"], "aes128gcm");
    assert_eq!(results[0]["plaintext"], "Grüße from Tocsin, aes128gcm");
    assert_eq!(results[0]["urgency"], "low");
    assert_eq!(results[0]["topic"], "t-1");
    assert_eq!(results[1]["encoding"], "aesgcm");
    assert_eq!(results[1]["plaintext"], "from Tocsin, aesgcm");
    assert_eq!(results[2]["encoding"], Value::Null);
    assert_eq!(results[2]["plaintext"], Value::Null);
}

/// pywebpush sends; `tocsin dev push-service` verifies and decrypts.
#[test]
fn pywebpush_messages_are_accepted_and_decrypted_by_the_dev_push_service() {
    let dev = DevPush::start(&[]);
    let out = Command::new(python())
        .arg(repo_root().join("tests/interop/pywebpush_sender.py"))
        .arg(&dev.base)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sends = report["sends"].as_array().unwrap();
    assert_eq!(sends.len(), 3);
    for s in sends {
        assert_eq!(s["status"], 201, "{s}");
    }
    // A token signed with another key than the subscription's: refused.
    assert_eq!(report["mismatchStatus"], 403);

    let messages = report["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    for (s, m) in sends.iter().zip(messages) {
        assert_eq!(m["payload"], s["payload"], "{m}");
        assert_eq!(m["ttl"], 120);
        assert_eq!(m["vapid"]["subject"], "mailto:interop@example.com");
        assert_eq!(m["vapid"]["publicKey"], report["applicationServerKey"]);
        if s["payload"].is_null() {
            assert_eq!(m["encoding"], Value::Null);
        } else {
            assert_eq!(m["encoding"], s["encoding"]);
        }
    }
}

/// The parts of a push request's headers that say how it is signed and
/// encrypted: the `Authorization` scheme, the `Crypto-Key` parameters (names
/// and separator; their order differs between libraries and means nothing)
/// with the VAPID key, the `Encryption` parameters, the content coding.
fn header_shape(m: &Value) -> Value {
    let h = &m["headers"];
    let get = |name: &str| h[name].as_str().unwrap_or_default().to_owned();
    let names = |v: &str| {
        let mut n: Vec<String> =
            v.split([';', ',']).filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.trim().to_owned()).collect();
        n.sort();
        n
    };
    let crypto_key = get("crypto-key");
    let p256ecdsa = crypto_key.split(';').find_map(|kv| kv.strip_prefix("p256ecdsa=")).map(str::to_owned);
    serde_json::json!({
        "authorizationScheme": get("authorization").split(' ').next(),
        "cryptoKeyParams": names(&crypto_key),
        "cryptoKeySeparator": if crypto_key.contains(',') { "," } else { ";" },
        "p256ecdsa": p256ecdsa,
        "encryptionParams": names(&get("encryption")),
        "contentEncoding": get("content-encoding"),
        "verifiedScheme": m["vapid"]["scheme"],
    })
}

/// `aesgcm` goes out as pywebpush sends it to the same subscription with
/// the same key: `Authorization: WebPush <jwt>`, the key in `Crypto-Key`'s
/// `p256ecdsa=` beside `dh=`, joined by `;`; `Encryption: salt=`.
#[tokio::test]
async fn aesgcm_headers_have_the_shape_pywebpush_gives_them() {
    let dev = DevPush::start(&[]);
    let (public, private) = vapid_keys();
    let out = Command::new(python())
        .arg(repo_root().join("tests/interop/pywebpush_aesgcm.py"))
        .args([&dev.base, &private])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], 201, "{report}");
    let file = jsonl(&[report["subscription"].clone()]);
    let sent = send(vec![
        "--subscription".to_owned(),
        file.path().to_str().unwrap().to_owned(),
        "--encoding".into(),
        "aesgcm".into(),
        "--payload".into(),
        "from Tocsin, aesgcm".into(),
        "--vapid-subject".into(),
        "mailto:interop@example.com".into(),
        "--vapid-pvtkey".into(),
        private.clone(),
    ])
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", stdout(&sent));
    let messages = dev.messages().await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let (theirs, ours) = (header_shape(&messages[0]), header_shape(&messages[1]));
    assert_eq!(ours, theirs, "Tocsin's aesgcm headers against pywebpush's");
    assert_eq!(ours["authorizationScheme"], "WebPush");
    assert_eq!(ours["p256ecdsa"], public.as_str());
    assert_eq!(messages[1]["payload"], "from Tocsin, aesgcm");
}
