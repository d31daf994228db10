//! A new message's payloads by its format (`classic`, `declarative`,
//! `auto`): what `POST /v1/messages` and `POST /api/push` store.

use super::input::{check_payload, with_message_id};
use crate::error::{ApiError, ErrorId};
use serde_json::Value;
use tocsin_protocol::Declarative;
use tocsin_store_api::MessageFormat;
use url::Url;

/// What a message stores: its format, the payload every subscription gets,
/// and (for `auto`) the one Apple's push service gets instead.
#[derive(Debug)]
pub(crate) struct Payloads {
    pub(crate) format: MessageFormat,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) apple_payload: Option<Vec<u8>>,
}

/// Whose message it is, for the fields the service worker reports with.
pub(crate) struct Stamp<'a> {
    /// The message's id.
    pub(crate) id: &'a str,
    /// Its event token.
    pub(crate) event_token: &'a str,
    /// The app's name, for an app other than `default`.
    pub(crate) app: Option<&'a str>,
}

/// Reads `format` (absent: `classic`).
pub(crate) fn parse_format(s: Option<&str>) -> Result<MessageFormat, ApiError> {
    match s {
        None => Ok(MessageFormat::Classic),
        Some(f) => MessageFormat::parse(f).ok_or_else(|| {
            ApiError::new(ErrorId::InvalidFormat, "format must be \"classic\", \"declarative\" or \"auto\"")
        }),
    }
}

fn stamped(json: &Value, stamp: &Stamp<'_>) -> Vec<u8> {
    with_message_id(json.to_string().into_bytes(), stamp.id, stamp.event_token, stamp.app)
}

/// The payloads of a message in `format`. A classic payload is what it
/// always was (a string as is, other JSON as its text, with `messageId` and
/// `eventToken` added to an object); a declarative one is checked and
/// written as browsers parse it ([`Declarative`]), with the same two fields
/// at its top level, which browsers ignore and `sw.js` reports with. Every
/// payload must fit one push message.
pub(crate) fn build(
    format: MessageFormat,
    payload: Option<Value>,
    stamp: &Stamp<'_>,
    public_url: Option<&Url>,
) -> Result<Payloads, ApiError> {
    let declarative = |v: &Value| {
        Declarative::parse(v, public_url).map_err(|e| ApiError::new(ErrorId::of_protocol(e.id()), e.to_string()))
    };
    let out = match (format, payload) {
        (MessageFormat::Classic, None | Some(Value::Null)) => Payloads { format, payload: None, apple_payload: None },
        (MessageFormat::Classic, Some(Value::String(s))) => {
            Payloads { format, payload: Some(s.into_bytes()), apple_payload: None }
        }
        (MessageFormat::Classic, Some(v)) => {
            Payloads { format, payload: Some(stamped(&v, stamp)), apple_payload: None }
        }
        (_, None | Some(Value::Null)) => return Err(missing()),
        (MessageFormat::Declarative, Some(v)) => {
            let d = declarative(&v)?;
            Payloads { format, payload: Some(stamped(&d.to_json(), stamp)), apple_payload: None }
        }
        (MessageFormat::Auto, Some(v)) => {
            let d = declarative(&v)?;
            Payloads {
                format,
                payload: Some(stamped(&d.to_classic(), stamp)),
                apple_payload: Some(stamped(&d.to_json(), stamp)),
            }
        }
    };
    for p in [&out.payload, &out.apple_payload].into_iter().flatten() {
        check_payload(p)?;
    }
    Ok(out)
}

fn missing() -> ApiError {
    ApiError::new(
        ErrorId::DeclarativeMissingTitle,
        "a declarative message needs a payload: {\"web_push\":8030,\"notification\":{\"title\",\"navigate\",…}}",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STAMP: Stamp<'static> = Stamp { id: "m1", event_token: "t1", app: Some("shop") };

    fn id_of(format: MessageFormat, payload: Value) -> String {
        build(format, Some(payload), &STAMP, None).expect_err("refused").id.to_string()
    }

    #[test]
    fn auto_writes_both_payloads_and_stamps_each() {
        let msg = json!({"notification": {"title": "Hi", "navigate": "https://a.example/x"}, "app_badge": 2});
        let p = build(MessageFormat::Auto, Some(msg), &STAMP, None).unwrap();
        let classic: Value = serde_json::from_slice(p.payload.as_deref().unwrap()).unwrap();
        let apple: Value = serde_json::from_slice(p.apple_payload.as_deref().unwrap()).unwrap();
        assert_eq!((classic["url"].as_str(), classic["appBadge"].as_u64()), (Some("https://a.example/x"), Some(2)));
        assert_eq!(apple["web_push"], 8030);
        for v in [&classic, &apple] {
            assert_eq!(
                (v["messageId"].as_str(), v["eventToken"].as_str(), v["app"].as_str()),
                (Some("m1"), Some("t1"), Some("shop"))
            );
        }
    }

    #[test]
    fn refusals_have_their_ids() {
        assert_eq!(
            id_of(MessageFormat::Declarative, json!({"notification": {"navigate": "https://a.example/"}})),
            "declarative-missing-title"
        );
        assert_eq!(id_of(MessageFormat::Auto, json!({"notification": {"title": "a"}})), "declarative-missing-navigate");
        assert_eq!(
            id_of(MessageFormat::Declarative, json!({"notification": {"title": "a", "navigate": "/x"}})),
            "declarative-invalid-navigate"
        );
        assert_eq!(id_of(MessageFormat::Declarative, json!("text")), "declarative-invalid-field");
        let big = json!({"notification": {"title": "a", "navigate": "https://a.example/", "body": "x".repeat(4000)}});
        let e = build(MessageFormat::Declarative, Some(big), &STAMP, None).unwrap_err();
        assert_eq!(e.id, "payload-too-large");
        assert!(build(MessageFormat::Declarative, None, &STAMP, None).is_err());
        assert_eq!(parse_format(Some("fancy")).unwrap_err().id, "invalid-format");
    }
}
