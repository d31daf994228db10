//! Property tests of the server's decoders of outside input: message
//! targets, `sendAt`, payloads in every format, the client-IP headers and
//! `Last-Event-ID`. Each either refuses with its error id or returns a
//! value that the store keeps (as JSON text or an `i64`) and the views
//! show without error; none panics.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{json, Value};
use tocsin_store_api::{MessageFormat, Target};

use super::messages::{parse_send_at, parse_target};
use super::payload::{build, Stamp};
use super::stream::last_event_id;
use super::views::rfc3339;
use crate::limits::{client_ip, parse_cidrs, ClientIpHeader};

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(253_402_300_800_000i64)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("x".repeat(5000)),
        Just("9999-12-31T23:59:59Z".to_owned()),
        Just("10000-01-01T00:00:00Z".to_owned()),
        Just("1969-12-31T23:59:59Z".to_owned()),
        Just("2027-01-01T00:00:00+14:00".to_owned()),
        Just("https://site.example/a".to_owned()),
        Just("news".to_owned()),
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), number(), string().prop_map(Value::from)];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("all".to_owned()),
                    Just("topic".to_owned()),
                    Just("userIds".to_owned()),
                    Just("subscriptionIds".to_owned()),
                    Just("where".to_owned()),
                    Just("segment".to_owned()),
                    Just("title".to_owned()),
                    Just("notification".to_owned()),
                    Just("navigate".to_owned()),
                    string()
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn stamp() -> Stamp {
    Stamp { id: "0123456789abcdef0123456789abcdef".into(), event_token: "tok".into(), app: Some("shop".into()) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn targets_are_refused_with_an_id_or_round_trip(v in json_value()) {
        match parse_target(&v) {
            Err(e) => prop_assert!(e.id == "invalid-target" || e.id == "invalid-segment", "{}", e.id),
            Ok(t) => {
                // The store keeps a target as JSON text.
                let text = serde_json::to_string(&t).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back: Target = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, t);
            }
        }
    }

    #[test]
    fn send_at_is_refused_with_an_id_or_shown(v in prop_oneof![json_value(), number(), string().prop_map(Value::from)]) {
        let now = 1_800_000_000_000;
        match parse_send_at(&Some(v), now) {
            Err(e) => prop_assert_eq!(e.id, "invalid-send-at"),
            Ok(None) => {}
            Ok(Some(at)) => {
                prop_assert!((0..=now + 366 * 86_400_000).contains(&at));
                let _ = rfc3339(at);
            }
        }
    }

    #[test]
    fn payloads_are_refused_with_an_id_or_fit(v in json_value(), format in prop_oneof![
        Just(MessageFormat::Classic), Just(MessageFormat::Declarative), Just(MessageFormat::Auto)
    ]) {
        let base = url::Url::parse("https://site.example/").ok();
        match build(format, Some(v), &stamp(), base.as_ref()) {
            Err(e) => prop_assert!(
                e.id.as_str().starts_with("declarative-")
                    || ["payload-too-large", "missing-payload", "invalid-template", "invalid-localized-text"].contains(&e.id.as_str()),
                "{}", e.id
            ),
            // A personal message stores what it is rendered from; what it
            // renders for a subscriber without tags must fit.
            Ok(p) if p.personal => {
                let stored = p.payload.as_deref().unwrap_or_default();
                let personal = tocsin_store_api::tocsin_audience::compose::Personal::from_stored(stored)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if let Ok(out) = personal.render(&tocsin_store_api::tocsin_audience::expr::Subscriber::NOBODY) {
                    for bytes in out.payload.iter().chain(out.apple_payload.iter()) {
                        prop_assert!(bytes.len() <= 3993, "{} bytes", bytes.len());
                    }
                }
            }
            Ok(p) => {
                for bytes in p.payload.iter().chain(p.apple_payload.iter()) {
                    prop_assert!(bytes.len() <= 3993, "{} bytes", bytes.len());
                }
            }
        }
    }

    #[test]
    fn the_client_address_is_the_peer_or_a_forwarded_one(
        value in prop_oneof![
            any::<String>(),
            Just("203.0.113.9, 10.0.0.1".to_owned()),
            Just("for=\"[2001:db8::1]:80\";proto=https, for=unknown".to_owned()),
            Just("[::1]:".to_owned()),
            Just(",,,".to_owned()),
        ],
        mode in prop_oneof![Just(ClientIpHeader::XForwardedFor), Just(ClientIpHeader::Forwarded), Just(ClientIpHeader::XRealIp)],
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&value) {
            for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
                headers.append(name, v.clone());
            }
        }
        let trusted = parse_cidrs(&["10.0.0.0/8".into()]).map_err(TestCaseError::fail)?;
        let peer = SocketAddr::from(([10, 0, 0, 1], 4000));
        let ip = client_ip(peer, &headers, &trusted, mode);
        prop_assert!(ip == peer.ip() || mode.hops(&headers).contains(&ip));
        let outsider = SocketAddr::from(([192, 0, 2, 1], 4000));
        prop_assert_eq!(client_ip(outsider, &headers, &trusted, mode), IpAddr::from([192, 0, 2, 1]));
    }

    #[test]
    fn last_event_id_is_refused_with_an_id_or_a_cursor(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        match last_event_id(&bytes) {
            Err(e) => prop_assert_eq!(e.id, "invalid-last-event-id"),
            Ok(n) => prop_assert!(n >= 0),
        }
    }
}
