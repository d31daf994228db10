//! A new message's payloads by its format (`classic`, `declarative`,
//! `auto`): what `POST /v1/messages` and `POST /api/push` store.

use crate::error::{ApiError, ErrorId};
use serde_json::Value;
pub(crate) use tocsin_store_api::tocsin_audience::compose::Stamp;
use tocsin_store_api::tocsin_audience::compose::{self, ComposeError, Personal, Shape};
use tocsin_store_api::MessageFormat;
use url::Url;

/// What a message stores: its format, the payload every subscription gets,
/// (for `auto`) the one Apple's push service gets instead, and whether the
/// payload is a personal message's, rendered per subscription.
#[derive(Debug)]
pub(crate) struct Payloads {
    pub(crate) format: MessageFormat,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) apple_payload: Option<Vec<u8>>,
    pub(crate) personal: bool,
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

fn shape(format: MessageFormat) -> Shape {
    match format {
        MessageFormat::Classic => Shape::Classic,
        MessageFormat::Declarative => Shape::Declarative,
        MessageFormat::Auto => Shape::Auto,
    }
}

/// The answer to a payload that could not be made.
pub(crate) fn refused(e: ComposeError) -> ApiError {
    let id = match &e {
        ComposeError::MissingPayload => ErrorId::DeclarativeMissingTitle,
        ComposeError::Declarative(d) => ErrorId::of_protocol(d.id()),
        ComposeError::TooLarge { .. } => ErrorId::PayloadTooLarge,
        ComposeError::Template { .. } => ErrorId::InvalidTemplate,
        ComposeError::Localized(_) => ErrorId::InvalidLocalizedText,
    };
    ApiError::new(id, e.to_string())
}

/// The payloads of a message in `format` ([`compose::build`]); a message
/// whose title, body or link is by language or a template is checked and
/// stored as a [`Personal`] message, rendered per subscription when sent.
pub(crate) fn build(
    format: MessageFormat,
    payload: Option<Value>,
    stamp: &Stamp,
    public_url: Option<&Url>,
) -> Result<Payloads, ApiError> {
    if let Some(p) = payload.as_ref().filter(|p| Personal::wanted(shape(format), p)) {
        let personal = Personal::new(shape(format), p.clone(), stamp.clone(), public_url).map_err(refused)?;
        return Ok(Payloads { format, payload: Some(personal.to_stored()), apple_payload: None, personal: true });
    }
    let built = compose::build(shape(format), payload.as_ref(), stamp, public_url).map_err(refused)?;
    Ok(Payloads { format, payload: built.payload, apple_payload: built.apple_payload, personal: false })
}

/// What `subscriber` would get of a message (for a preview): rendered for
/// it when the message is personal, else the payloads everyone gets.
pub(crate) fn preview(
    format: MessageFormat,
    payload: Value,
    subscriber: &tocsin_store_api::tocsin_audience::expr::Subscriber<'_>,
    public_url: Option<&Url>,
) -> Result<compose::Payloads, ApiError> {
    let stamp = Stamp { id: "preview".into(), event_token: "preview".into(), app: None };
    if Personal::wanted(shape(format), &payload) {
        let personal = Personal::new(shape(format), payload, stamp, public_url).map_err(refused)?;
        return personal.render(subscriber).map_err(refused);
    }
    compose::build(shape(format), Some(&payload), &stamp, public_url).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp() -> Stamp {
        Stamp { id: "m1".into(), event_token: "t1".into(), app: Some("shop".into()) }
    }

    fn id_of(format: MessageFormat, payload: Value) -> String {
        build(format, Some(payload), &stamp(), None).expect_err("refused").id.to_string()
    }

    #[test]
    fn auto_writes_both_payloads_and_stamps_each() {
        let msg = json!({"notification": {"title": "Hi", "navigate": "https://a.example/x"}, "app_badge": 2});
        let p = build(MessageFormat::Auto, Some(msg), &stamp(), None).unwrap();
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
        let e = build(MessageFormat::Declarative, Some(big), &stamp(), None).unwrap_err();
        assert_eq!(e.id, "payload-too-large");
        assert!(build(MessageFormat::Declarative, None, &stamp(), None).is_err());
        assert_eq!(parse_format(Some("fancy")).unwrap_err().id, "invalid-format");
    }
}
