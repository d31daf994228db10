//! Property tests of the protocol's decoders of outside input: whatever a
//! browser, a sender or a push service sends, each either refuses it with
//! its error id or returns a value that round-trips; none panics.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde_json::{json, Value};
use tocsin_protocol::outcome::{retry_after, MAX_RETRY_AFTER};
use tocsin_protocol::subscription::MAX_EXPIRATION_MS;
use tocsin_protocol::{Declarative, Subscription};

const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// Numbers at the edges of their types, and ordinary ones.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(9_223_372_036_854_775_808u64)),
        Just(json!(MAX_EXPIRATION_MS)),
        Just(json!(MAX_EXPIRATION_MS + 1)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!(0.5)),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// Strings: empty, huge, near-valid URLs and keys, anything.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".repeat(70_000)),
        Just("https://push.example.net/x".to_owned()),
        Just("http://[::1]:99999/x".to_owned()),
        Just("/relative".to_owned()),
        Just(P256DH.to_owned()),
        Just(AUTH.to_owned()),
        Just("\u{0}\u{ffff}".to_owned()),
        any::<String>(),
    ]
}

/// Any JSON, a few levels deep, leaning on the edges.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), number(), string().prop_map(Value::from)];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(string(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A subscription body: mostly of the right shape, with any field replaced.
fn subscription_body() -> impl Strategy<Value = Value> {
    (
        prop_oneof![string().prop_map(Value::from), json_value()],
        prop_oneof![Just(Value::Null), number(), json_value()],
        prop_oneof![string().prop_map(Value::from), Just(Value::from(P256DH)), json_value()],
        prop_oneof![string().prop_map(Value::from), Just(Value::from(AUTH)), json_value()],
    )
        .prop_map(|(endpoint, expiration, p256dh, auth)| {
            json!({"endpoint": endpoint, "expirationTime": expiration, "keys": {"p256dh": p256dh, "auth": auth}})
        })
}

/// A declarative message: the right shape with any member replaced or added.
fn declarative_body() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), json_value(), string(), json_value()).prop_map(|(title, navigate, badge, extra, v)| {
        let mut m =
            json!({"web_push": 8030, "notification": {"title": title, "navigate": navigate}, "app_badge": badge});
        m["notification"][extra] = v;
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn subscription_json_is_refused_with_an_id_or_round_trips(body in prop_oneof![subscription_body(), json_value()]) {
        match Subscription::from_value(body) {
            Err(e) => prop_assert!([
                "invalid-json", "no-endpoint", "invalid-endpoint", "no-keys", "invalid-p256dh", "invalid-auth",
                "invalid-expiration-time",
            ].contains(&e.id())),
            Ok(sub) => {
                prop_assert!(sub.expiration_time().is_none_or(|t| t <= MAX_EXPIRATION_MS));
                // Stored as an i64 column: it must fit.
                prop_assert!(sub.expiration_time().is_none_or(|t| i64::try_from(t).is_ok()));
                let again = Subscription::from_json(&sub.to_json());
                prop_assert_eq!(again.as_ref(), Ok(&sub));
            }
        }
    }

    #[test]
    fn declarative_messages_are_refused_with_an_id_or_reparse(body in prop_oneof![declarative_body(), json_value()]) {
        let base = url::Url::parse("https://site.example/").ok();
        match Declarative::parse(&body, base.as_ref()) {
            Err(e) => prop_assert!(e.id().starts_with("declarative-"), "{}", e.id()),
            Ok(d) => {
                // What is stored and sent parses again as the same message.
                let again = Declarative::parse(&d.to_json(), base.as_ref());
                prop_assert!(again.is_ok(), "{:?}", again.err());
                let again = again.unwrap_or_else(|_| unreachable!());
                prop_assert_eq!(again.to_json(), d.to_json());
                let _ = d.to_classic();
            }
        }
    }

    #[test]
    fn retry_after_never_panics_and_is_bounded(value in prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{1,40}",
        any::<String>(),
        Just("Sun, 06 Nov 1994 08:49:37 GMT".to_owned()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
    ]) {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(http::header::RETRY_AFTER, v);
        }
        if let Some(d) = retry_after(&headers, SystemTime::now()) {
            prop_assert!(d <= MAX_RETRY_AFTER);
            // What the engine does with it must not overflow either.
            let _ = tokio_like_add(d);
        }
    }
}

/// `Instant + d` as the engine's gate computes it (saturating).
fn tokio_like_add(d: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(d).unwrap_or(now)
}
