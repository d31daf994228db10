//! A message's payloads: what each subscription reads.
//!
//! [`build`] makes the payloads of a message by its [`Shape`] (classic JSON
//! for `sw.js`, a Declarative Web Push message, or both for `auto`),
//! stamped with the fields the service worker reports with. Most messages
//! are the same for everyone: built once when the message is accepted.
//!
//! A [`Personal`] message is not: its title, body and link may be maps by
//! language (`{"en": "Sale", "fr": "Soldes"}`, with `defaultLanguage`) and
//! Liquid templates over the subscriber's tags (`Hi {{ tags.first_name |
//! default: "there" }}`). It is checked when it is accepted (every
//! template compiles, every language's text alone fits one push message)
//! and rendered per subscription when it is sent.
//!
//! Templates are Liquid (the `liquid` crate, the language OneSignal and
//! Braze use), with its filters and its `if`, `unless` and `case` blocks
//! only: no `include` (no file is ever read), no loops (rendering is linear
//! in the template), no `assign`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;
use tocsin_protocol::declarative::DeclarativeError;
use tocsin_protocol::{ContentEncoding, Declarative};
use url::Url;

use crate::expr::Subscriber;
use crate::locale::{language_matches, primary, Language};
use crate::tags::TagValue;

/// What a message's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The sender's JSON (or text) for the site's service worker.
    Classic,
    /// A Declarative Web Push message, to every subscription.
    Declarative,
    /// Declarative to Apple's push service, the same as classic JSON to others.
    Auto,
}

/// Whose message it is: the fields `sw.js` reports `shown`/`clicked` with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// The message's id.
    pub id: String,
    /// Its event token.
    pub event_token: String,
    /// The app's name, for an app other than `default`.
    pub app: Option<String>,
}

/// The payload every subscription gets, and (for `auto`) the one Apple's
/// push service gets instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payloads {
    /// `None` for a push without data.
    pub payload: Option<Vec<u8>>,
    /// With [`Shape::Auto`]: the declarative payload.
    pub apple_payload: Option<Vec<u8>>,
}

/// Why a payload could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComposeError {
    /// A declarative message without a payload.
    #[error(
        "a declarative message needs a payload: {{\"web_push\":8030,\"notification\":{{\"title\",\"navigate\",…}}}}"
    )]
    MissingPayload,
    /// The declarative message is not one (its error names the member).
    #[error(transparent)]
    Declarative(#[from] DeclarativeError),
    /// The payload does not fit one push message.
    #[error("payload is {len} bytes; at most {max} fit one push message{which}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The most that fits.
        max: usize,
        /// For which language, when it depends on one.
        which: String,
    },
    /// A template does not compile (or, when rendered, failed).
    #[error("{field}: {message}")]
    Template {
        /// Which field (`title`, `notification.body`, `title.fr`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A map by language is malformed, or `defaultLanguage` is missing or
    /// not one of its keys.
    #[error("{0}")]
    Localized(String),
}

/// Adds `messageId`, `eventToken` (and `app`) to a JSON object payload, in
/// front of the sender's own bytes (whose key order and formatting stay).
/// Anything else is returned as it is.
pub fn with_message_id(payload: Vec<u8>, id: &str, event_token: &str, app: Option<&str>) -> Vec<u8> {
    match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(map)) if !map.contains_key("messageId") => {
            let text = String::from_utf8_lossy(&payload);
            let Some(rest) = text.trim_start().strip_prefix('{') else { return payload };
            let sep = if map.is_empty() { "" } else { "," };
            // App names are slugs, ids and tokens base64url: nothing to escape.
            let app = match app {
                Some(name) if !map.contains_key("app") => format!(",\"app\":\"{name}\""),
                _ => String::new(),
            };
            format!("{{\"messageId\":\"{id}\",\"eventToken\":\"{event_token}\"{app}{sep}{rest}").into_bytes()
        }
        _ => payload,
    }
}

/// Refuses a payload that does not fit one `aes128gcm` push message.
pub fn check_size(payload: &[u8], which: &str) -> Result<(), ComposeError> {
    let max = ContentEncoding::Aes128Gcm.max_plaintext();
    if payload.len() > max {
        return Err(ComposeError::TooLarge { len: payload.len(), max, which: which.to_owned() });
    }
    Ok(())
}

fn stamped(json: &Value, stamp: &Stamp) -> Vec<u8> {
    with_message_id(json.to_string().into_bytes(), &stamp.id, &stamp.event_token, stamp.app.as_deref())
}

/// The payloads of a message: a classic payload is what it always was (a
/// string as is, other JSON as its text, stamped when an object); a
/// declarative one is checked and written as browsers parse it; `auto`
/// makes both. Every payload must fit one push message.
pub fn build(
    shape: Shape,
    payload: Option<&Value>,
    stamp: &Stamp,
    base: Option<&Url>,
) -> Result<Payloads, ComposeError> {
    let out = match (shape, payload) {
        (Shape::Classic, None | Some(Value::Null)) => Payloads::default(),
        (Shape::Classic, Some(Value::String(s))) => {
            Payloads { payload: Some(s.clone().into_bytes()), apple_payload: None }
        }
        (Shape::Classic, Some(v)) => Payloads { payload: Some(stamped(v, stamp)), apple_payload: None },
        (_, None | Some(Value::Null)) => return Err(ComposeError::MissingPayload),
        (Shape::Declarative, Some(v)) => {
            let d = Declarative::parse(v, base)?;
            Payloads { payload: Some(stamped(&d.to_json(), stamp)), apple_payload: None }
        }
        (Shape::Auto, Some(v)) => {
            let d = Declarative::parse(v, base)?;
            Payloads {
                payload: Some(stamped(&d.to_classic(), stamp)),
                apple_payload: Some(stamped(&d.to_json(), stamp)),
            }
        }
    };
    for p in [&out.payload, &out.apple_payload].into_iter().flatten() {
        check_size(p, "")?;
    }
    Ok(out)
}

/// The fields that may be localized and templated, by shape: a path of
/// object keys from the payload's top.
fn text_fields(shape: Shape) -> &'static [&'static [&'static str]] {
    match shape {
        Shape::Classic => &[&["title"], &["body"], &["url"], &["navigate"]],
        Shape::Declarative | Shape::Auto => {
            &[&["notification", "title"], &["notification", "body"], &["notification", "navigate"]]
        }
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut at = v;
    for k in &path[..path.len() - 1] {
        match at.get_mut(*k) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(obj) = at.as_object_mut() {
        obj.insert(path[path.len() - 1].to_owned(), value);
    }
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The tag keys a template names (`tags.first_name`, `tags["zip:1"]`):
/// the `liquid` crate refuses to render a missing key, where Liquid
/// elsewhere reads it as nil (so that `| default:` works); these are set
/// to nil for a subscriber without them.
fn tag_keys(source: &str, into: &mut Vec<String>) {
    let mut rest = source;
    while let Some(at) = rest.find("tags") {
        let before_ok = rest[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        rest = &rest[at + 4..];
        if !before_ok {
            continue;
        }
        let key: String = if let Some(after) = rest.strip_prefix('.') {
            after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
        } else if let Some(after) = rest.strip_prefix('[') {
            let after = after.trim_start();
            match after.chars().next() {
                Some(q @ ('"' | '\'')) => after[1..].chars().take_while(|c| *c != q).collect(),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        if !key.is_empty() && !into.contains(&key) {
            into.push(key);
        }
    }
}

/// The Liquid parser: the standard filters, `if`/`unless`/`case`, nothing
/// that reads a file, loops or assigns.
fn parser() -> Option<&'static liquid::Parser> {
    static PARSER: OnceLock<Option<liquid::Parser>> = OnceLock::new();
    PARSER
        .get_or_init(|| {
            use liquid_lib::stdlib;
            let mut b = liquid::ParserBuilder::new()
                .block(stdlib::IfBlock)
                .block(stdlib::UnlessBlock)
                .block(stdlib::CaseBlock)
                .block(stdlib::RawBlock)
                .block(stdlib::CommentBlock);
            b = b
                .filter(stdlib::Default)
                .filter(stdlib::Upcase)
                .filter(stdlib::Downcase)
                .filter(stdlib::Capitalize)
                .filter(stdlib::Append)
                .filter(stdlib::Prepend)
                .filter(stdlib::Strip)
                .filter(stdlib::Lstrip)
                .filter(stdlib::Rstrip)
                .filter(stdlib::Truncate)
                .filter(stdlib::TruncateWords)
                .filter(stdlib::Replace)
                .filter(stdlib::ReplaceFirst)
                .filter(stdlib::Remove)
                .filter(stdlib::RemoveFirst)
                .filter(stdlib::Escape)
                .filter(stdlib::UrlEncode)
                .filter(stdlib::UrlDecode)
                .filter(stdlib::Size)
                .filter(stdlib::Plus)
                .filter(stdlib::Minus)
                .filter(stdlib::Times)
                .filter(stdlib::DividedBy)
                .filter(stdlib::Round)
                .filter(stdlib::Floor)
                .filter(stdlib::Ceil)
                .filter(stdlib::Abs);
            b.build().ok()
        })
        .as_ref()
}

/// One text: as it is, or a compiled template.
enum Text {
    Plain(String),
    Template(liquid::Template),
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Self::Template(_) => f.write_str("Template(..)"),
        }
    }
}

impl Text {
    fn compile(source: &str, field: &str) -> Result<Self, ComposeError> {
        if !is_template(source) {
            return Ok(Self::Plain(source.to_owned()));
        }
        parser()
            .ok_or_else(|| ComposeError::Template {
                field: field.to_owned(),
                message: "templates are unavailable: the Liquid parser could not be built".into(),
            })?
            .parse(source)
            .map(Self::Template)
            .map_err(|e| ComposeError::Template { field: field.to_owned(), message: e.to_string() })
    }

    fn render(&self, globals: &liquid::Object, field: &str) -> Result<String, ComposeError> {
        match self {
            Self::Plain(s) => Ok(s.clone()),
            Self::Template(t) => t
                .render(globals)
                .map_err(|e| ComposeError::Template { field: field.to_owned(), message: e.to_string() }),
        }
    }
}

/// A field's text: the same for everyone, or by language.
#[derive(Debug)]
enum Field {
    One(Text),
    ByLanguage(BTreeMap<String, Text>),
}

/// A message whose text depends on the subscriber (see the module).
#[derive(Debug)]
pub struct Personal {
    shape: Shape,
    /// The sender's payload without `defaultLanguage`; its text fields are
    /// replaced per subscriber.
    payload: Value,
    default_language: Option<String>,
    fields: Vec<(&'static [&'static str], Field)>,
    /// Every tag key a template names.
    referenced: Vec<String>,
    stamp: Stamp,
    base: Option<Url>,
}

impl Personal {
    /// Whether a payload of `shape` has anything to personalize: a text
    /// field that is a map by language or a template, or
    /// `defaultLanguage`. Messages without are built once ([`build`]).
    pub fn wanted(shape: Shape, payload: &Value) -> bool {
        payload.get("defaultLanguage").is_some()
            || text_fields(shape).iter().any(|path| match get(payload, path) {
                Some(Value::Object(_)) => true,
                Some(Value::String(s)) => is_template(s),
                _ => false,
            })
    }

    /// Checks and compiles a personal message: language maps (keys BCP 47,
    /// values strings, `defaultLanguage` one of the keys), templates, and,
    /// for each language and for a subscriber without tags, the payloads
    /// it makes (a declarative message must be one; its text alone must
    /// fit one push message).
    pub fn new(shape: Shape, mut payload: Value, stamp: Stamp, base: Option<&Url>) -> Result<Self, ComposeError> {
        let default_language = match payload.as_object_mut().and_then(|o| o.remove("defaultLanguage")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                Language::new(&s)
                    .map_err(|e| ComposeError::Localized(format!("defaultLanguage: {e}")))?
                    .as_str()
                    .to_owned(),
            ),
            Some(_) => {
                return Err(ComposeError::Localized("defaultLanguage must be a language tag such as \"en\"".into()))
            }
        };
        let mut fields = Vec::new();
        let mut languages = Vec::new();
        let mut referenced = Vec::new();
        for path in text_fields(shape) {
            let name = path.join(".");
            let field = match get(&payload, path) {
                Some(Value::String(s)) => {
                    tag_keys(s, &mut referenced);
                    Field::One(Text::compile(s, &name)?)
                }
                Some(Value::Object(map)) => {
                    let Some(default) = &default_language else {
                        return Err(ComposeError::Localized(format!(
                            "{name} is a map by language: the message needs defaultLanguage, the one to use when none matches"
                        )));
                    };
                    let mut by = BTreeMap::new();
                    for (k, v) in map {
                        let lang = Language::new(k)
                            .map_err(|e| ComposeError::Localized(format!("{name}: {e}")))?
                            .as_str()
                            .to_owned();
                        let Value::String(text) = v else {
                            return Err(ComposeError::Localized(format!("{name}.{k} must be a string")));
                        };
                        tag_keys(text, &mut referenced);
                        by.insert(lang.clone(), Text::compile(text, &format!("{name}.{k}"))?);
                        if !languages.contains(&lang) {
                            languages.push(lang);
                        }
                    }
                    if !by.contains_key(default) {
                        return Err(ComposeError::Localized(format!(
                            "{name} has no text in defaultLanguage {default:?}"
                        )));
                    }
                    Field::ByLanguage(by)
                }
                _ => continue,
            };
            fields.push((*path, field));
        }
        let personal = Self { shape, payload, default_language, fields, referenced, stamp, base: base.cloned() };
        // Every language's text, for a subscriber with nothing: what any
        // subscriber gets at least.
        let mut check = languages.clone();
        check.push(String::new());
        for lang in check {
            let sub = Subscriber { language: (!lang.is_empty()).then_some(lang.as_str()), ..Subscriber::NOBODY };
            match personal.render(&sub) {
                Ok(_) => {}
                // A template may need a tag (`{{ tags.n | plus: 1 }}`): it
                // fails the deliveries to subscribers without it
                // (`template-failed`), not the message.
                Err(ComposeError::Template { .. }) => {}
                Err(ComposeError::TooLarge { len, max, .. }) if !lang.is_empty() => {
                    return Err(ComposeError::TooLarge {
                        len,
                        max,
                        which: format!(" (in {lang}, before any tag is filled in)"),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(personal)
    }

    /// The payloads one subscriber gets: each field in the closest
    /// language (its exact tag, then its primary language, then another
    /// region of it, then `defaultLanguage`), templates rendered with its
    /// tags, language, time zone and user id.
    pub fn render(&self, sub: &Subscriber<'_>) -> Result<Payloads, ComposeError> {
        let globals = globals(sub, &self.referenced);
        let mut payload = self.payload.clone();
        for (path, field) in &self.fields {
            let name = path.join(".");
            let text = match field {
                Field::One(t) => t,
                Field::ByLanguage(by) => match closest(by, sub.language, self.default_language.as_deref()) {
                    Some(t) => t,
                    None => continue,
                },
            };
            set(&mut payload, path, Value::String(text.render(&globals, &name)?));
        }
        build(self.shape, Some(&payload), &self.stamp, self.base.as_ref())
    }

    /// What the message stores: the sender's payload (with
    /// `defaultLanguage`), its shape, stamp and base URL, as JSON.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut payload = self.payload.clone();
        if let (Some(d), Some(o)) = (&self.default_language, payload.as_object_mut()) {
            o.insert("defaultLanguage".into(), Value::String(d.clone()));
        }
        let shape = match self.shape {
            Shape::Classic => "classic",
            Shape::Declarative => "declarative",
            Shape::Auto => "auto",
        };
        serde_json::json!({
            "shape": shape,
            "payload": payload,
            "stamp": self.stamp,
            "base": self.base.as_ref().map(Url::as_str),
        })
        .to_string()
        .into_bytes()
    }

    /// Reads what [`Personal::to_stored`] wrote (compiling it again).
    pub fn from_stored(bytes: &[u8]) -> Result<Self, ComposeError> {
        let bad = |m: &str| ComposeError::Localized(format!("stored personal message: {m}"));
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        let shape = match v.get("shape").and_then(Value::as_str) {
            Some("classic") => Shape::Classic,
            Some("declarative") => Shape::Declarative,
            Some("auto") => Shape::Auto,
            _ => return Err(bad("no shape")),
        };
        let stamp: Stamp =
            serde_json::from_value(v.get("stamp").cloned().unwrap_or_default()).map_err(|e| bad(&e.to_string()))?;
        let base =
            v.get("base").and_then(Value::as_str).map(Url::parse).transpose().map_err(|e| bad(&e.to_string()))?;
        Self::new(shape, v.get("payload").cloned().unwrap_or_default(), stamp, base.as_ref())
    }
}

/// The map's text for `have`: exact, primary, another region of the same
/// language, then `default`.
fn closest<'a>(by: &'a BTreeMap<String, Text>, have: Option<&str>, default: Option<&str>) -> Option<&'a Text> {
    if let Some(have) = have {
        if let Some(t) = by.get(have) {
            return Some(t);
        }
        if let Some(t) = by.get(primary(have)) {
            return Some(t);
        }
        if let Some((_, t)) = by.iter().find(|(k, _)| language_matches(k, primary(have))) {
            return Some(t);
        }
    }
    default.and_then(|d| by.get(d))
}

/// What a template sees: `tags`, `language`, `timeZone`, `userId`.
fn globals(sub: &Subscriber<'_>, referenced: &[String]) -> liquid::Object {
    use liquid::model::{KString, Value as L};
    let mut tags = liquid::Object::new();
    for k in referenced {
        tags.insert(KString::from_string(k.clone()), L::Nil);
    }
    for (k, v) in sub.tags.iter() {
        let value = match v {
            TagValue::String(s) => L::scalar(s.clone()),
            TagValue::Bool(b) => L::scalar(*b),
            TagValue::Number(n) => match n.as_i64() {
                Some(i) => L::scalar(i),
                None => L::scalar(n.as_f64().unwrap_or_default()),
            },
        };
        tags.insert(KString::from_string(k.as_str().to_owned()), value);
    }
    let text = |s: Option<&str>| s.map_or(L::Nil, |s| L::scalar(s.to_owned()));
    let mut g = liquid::Object::new();
    g.insert("tags".into(), L::Object(tags));
    g.insert("language".into(), text(sub.language));
    g.insert("timeZone".into(), text(sub.time_zone));
    g.insert("userId".into(), text(sub.user_id));
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::Tags;
    use serde_json::json;

    fn stamp() -> Stamp {
        Stamp { id: "m1".into(), event_token: "t1".into(), app: None }
    }

    fn render_for(p: &Personal, tags: Value, language: Option<&str>) -> Value {
        let tags = Tags::from_json(&tags).unwrap();
        let sub = Subscriber {
            tags: &tags,
            language,
            time_zone: Some("Europe/Paris"),
            push_service: "fcm",
            user_id: Some("u1"),
            topics: &[],
            created_at: 0,
            last_seen_at: 0,
        };
        serde_json::from_slice(&p.render(&sub).unwrap().payload.unwrap()).unwrap()
    }

    #[test]
    fn plain_messages_are_not_personal() {
        assert!(!Personal::wanted(Shape::Classic, &json!({"title": "Hi", "body": "there", "data": {"x": "{{"}})));
        assert!(Personal::wanted(Shape::Classic, &json!({"title": {"en": "Hi"}, "defaultLanguage": "en"})));
        assert!(Personal::wanted(Shape::Classic, &json!({"body": "Hi {{ tags.name }}"})));
        assert!(Personal::wanted(Shape::Declarative, &json!({"notification": {"title": {"en": "Hi"}}})));
        assert!(!Personal::wanted(Shape::Declarative, &json!({"title": {"en": "Hi"}})));
    }

    #[test]
    fn each_subscriber_gets_the_closest_language() {
        let p = Personal::new(
            Shape::Classic,
            json!({"title": {"en": "Sale", "fr": "Soldes", "pt-BR": "Promoção", "pt-PT": "Saldos"}, "defaultLanguage": "en", "url": "/x"}),
            stamp(),
            None,
        )
        .unwrap();
        for (lang, want) in [
            (Some("fr"), "Soldes"),
            (Some("fr-CA"), "Soldes"),
            (Some("pt-BR"), "Promoção"),
            (Some("pt-PT"), "Saldos"),
            (Some("pt"), "Promoção"),
            (Some("de"), "Sale"),
            (None, "Sale"),
        ] {
            let v = render_for(&p, json!({}), lang);
            assert_eq!(v["title"], want, "{lang:?}");
            assert_eq!((v["url"].as_str(), v["messageId"].as_str()), (Some("/x"), Some("m1")));
            assert!(v.get("defaultLanguage").is_none());
        }
    }

    #[test]
    fn templates_read_tags_with_defaults() {
        let p = Personal::new(
            Shape::Classic,
            json!({"title": "Hi {{ tags.first_name | default: \"there\" }}", "body": "{% if tags.vip %}VIP {% endif %}{{ tags.points | default: 0 | plus: 1 }} points, {{ language }}"}),
            stamp(),
            None,
        )
        .unwrap();
        let v = render_for(&p, json!({"first_name": "Ana", "vip": true, "points": 41}), Some("pt-BR"));
        assert_eq!((v["title"].as_str(), v["body"].as_str()), (Some("Hi Ana"), Some("VIP 42 points, pt-BR")));
        let v = render_for(&p, json!({}), None);
        assert_eq!((v["title"].as_str(), v["body"].as_str()), (Some("Hi there"), Some("1 points, ")));
        // A template that needs a tag is accepted; it fails for a
        // subscriber without the tag.
        let needs = Personal::new(Shape::Classic, json!({"title": "{{ tags.n | plus: 1 }}"}), stamp(), None).unwrap();
        let empty = Tags::default();
        let sub = Subscriber {
            tags: &empty,
            language: None,
            time_zone: None,
            push_service: "fcm",
            user_id: None,
            topics: &[],
            created_at: 0,
            last_seen_at: 0,
        };
        assert!(matches!(needs.render(&sub), Err(ComposeError::Template { .. })));
    }

    #[test]
    fn localized_declarative_messages_are_checked_per_language() {
        let msg = json!({"web_push": 8030, "defaultLanguage": "en", "notification": {
            "title": {"en": "Hi {{ tags.name | default: \"you\" }}", "de": "Hallo"},
            "navigate": {"en": "https://a.example/en", "de": "https://a.example/de"}}});
        let p = Personal::new(Shape::Declarative, msg, stamp(), None).unwrap();
        let v = render_for(&p, json!({"name": "Jo"}), Some("de-AT"));
        assert_eq!(
            (v["notification"]["title"].as_str(), v["notification"]["navigate"].as_str()),
            (Some("Hallo"), Some("https://a.example/de"))
        );
        assert_eq!(v["web_push"], 8030);
        let bad = json!({"web_push": 8030, "defaultLanguage": "en", "notification": {
            "title": {"en": "Hi", "de": "Hallo"}, "navigate": {"en": "https://a.example/", "de": "not a url"}}});
        assert!(matches!(Personal::new(Shape::Declarative, bad, stamp(), None), Err(ComposeError::Declarative(_))));
    }

    #[test]
    fn the_tag_keys_a_template_names() {
        let mut keys = Vec::new();
        tag_keys(
            r#"Hi {{ tags.first_name | default: "x" }} {{tags["zip:1"]}} {{ mytags.no }} {{ tags.a-b }} {{ tags['q'] }}"#,
            &mut keys,
        );
        assert_eq!(keys, ["first_name", "zip:1", "a-b", "q"]);
    }

    #[test]
    fn refusals() {
        let err = |v: Value| Personal::new(Shape::Classic, v, stamp(), None).unwrap_err();
        assert!(matches!(err(json!({"title": "Hi {{ tags.name "})), ComposeError::Template { .. }));
        assert!(
            matches!(err(json!({"title": "{% for i in (1..9999999) %}x{% endfor %}"})), ComposeError::Template { .. }),
            "no loops"
        );
        assert!(
            matches!(err(json!({"title": "{% include 'etc/passwd' %}"})), ComposeError::Template { .. }),
            "no files"
        );
        assert!(
            matches!(err(json!({"title": {"en": "Hi"}})), ComposeError::Localized(_)),
            "a map needs defaultLanguage"
        );
        assert!(matches!(err(json!({"title": {"en": "Hi"}, "defaultLanguage": "fr"})), ComposeError::Localized(_)));
        assert!(matches!(
            err(json!({"title": {"english": "Hi"}, "defaultLanguage": "en"})),
            ComposeError::Localized(_)
        ));
        assert!(matches!(err(json!({"title": {"en": 1}, "defaultLanguage": "en"})), ComposeError::Localized(_)));
        let big = json!({"title": {"en": "x", "fr": "y".repeat(4000)}, "defaultLanguage": "en"});
        match err(big) {
            ComposeError::TooLarge { which, .. } => assert!(which.contains("fr"), "{which}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn a_rendered_payload_over_4_kb_fails_at_rendering() {
        let p = Personal::new(
            Shape::Classic,
            json!({"title": "{{ tags.a }}{{ tags.b }}", "body": "x".repeat(3600)}),
            stamp(),
            None,
        )
        .unwrap();
        let tags = Tags::from_json(&json!({"a": "y".repeat(256), "b": "z".repeat(256)})).unwrap();
        let sub = Subscriber { tags: &tags, ..Subscriber::NOBODY };
        assert!(matches!(p.render(&sub), Err(ComposeError::TooLarge { .. })));
    }

    #[test]
    fn stored_and_read_back() {
        let p = Personal::new(
            Shape::Auto,
            json!({"defaultLanguage": "en", "notification": {"title": {"en": "Hi", "fr": "Salut"}, "navigate": "https://a.example/{{ tags.page | default: \"\" }}"}}),
            Stamp { app: Some("shop".into()), ..stamp() },
            None,
        )
        .unwrap();
        let again = Personal::from_stored(&p.to_stored()).unwrap();
        let tags = Tags::from_json(&json!({"page": "p1"})).unwrap();
        let sub = Subscriber { tags: &tags, language: Some("fr"), push_service: "apple", ..Subscriber::NOBODY };
        let out = again.render(&sub).unwrap();
        let classic: Value = serde_json::from_slice(&out.payload.unwrap()).unwrap();
        let apple: Value = serde_json::from_slice(&out.apple_payload.unwrap()).unwrap();
        assert_eq!(
            (classic["title"].as_str(), classic["url"].as_str(), classic["app"].as_str()),
            (Some("Salut"), Some("https://a.example/p1"), Some("shop"))
        );
        assert_eq!(apple["notification"]["title"], "Salut");
    }
}
