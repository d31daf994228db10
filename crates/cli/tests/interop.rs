//! Interoperability with implementations nobody here wrote (Python's
//! `http_ece`, `cryptography`, `pywebpush` and `py_vapid`; versions pinned in
//! tests/interop/requirements.txt).

mod common;

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
