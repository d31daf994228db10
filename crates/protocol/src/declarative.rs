//! Declarative Web Push: a push message that describes its notification, so
//! that the browser can show it without running a service worker (W3C Push
//! API, "declarative push message"; Safari 18.4 on iOS and iPadOS Home
//! Screen apps, Safari 18.5 on macOS).
//!
//! [`Declarative::parse`] checks what a sender asks for, member by member,
//! as strictly as the browsers' parsers do (a message Safari would drop is
//! refused here, with the member named), and resolves relative URLs against
//! the site's public URL. [`Declarative::to_json`] writes the message
//! browsers parse; [`Declarative::to_classic`] writes the same notification
//! as the JSON Tocsin's `sw.js` has always read, for `format: "auto"`.
//!
//! ## Where Safari reads `app_badge` and `mutable`
//!
//! The standard reads both at the top level of the message (next to
//! `web_push` and `notification`). WebKit reads both inside `notification`:
//! `NotificationJSONParser::parseNotificationPayload` in
//! `Source/WebCore/Modules/notifications/NotificationJSONParser.cpp`
//! (WebKit/WebKit, read at cb08ad3d) looks `appBadgeKey` and `mutableKey` up
//! on the notification object, and never on the outer one. Each parser
//! ignores members it does not know, at either level, so [`to_json`]
//! writes them in both places: the standard's parser and Safari's each find
//! theirs, and neither is upset by the other's.
//!
//! WebKit's parser also needs `navigate` (and `icon`) to be valid absolute
//! URLs, and `title` a non-empty string; it reads no request header for a
//! declarative message (the decrypted payload is all it sees), so a
//! declarative push carries the same headers as any other.
//!
//! [`to_json`]: Declarative::to_json

use serde_json::{Map, Value};
use url::Url;

/// The value of the `web_push` member that marks a declarative message.
pub const WEB_PUSH: u64 = 8030;

/// The members of `notification` the standard defines (and WebKit's
/// placements of `app_badge` and `mutable`); anything else is a mistake
/// the sender wants to hear about.
const NOTIFICATION_MEMBERS: &[&str] = &[
    "title",
    "navigate",
    "body",
    "lang",
    "dir",
    "tag",
    "icon",
    "image",
    "badge",
    "vibrate",
    "timestamp",
    "renotify",
    "silent",
    "requireInteraction",
    "data",
    "actions",
    "app_badge",
    "mutable",
];

/// The top-level member Tocsin adds for its service worker: clear the app
/// badge when the notification is clicked. Browsers ignore it.
pub const CLEAR_BADGE_ON_CLICK: &str = "clearAppBadgeOnClick";

/// Why a declarative message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclarativeError {
    /// `notification.title` is absent or empty (or `notification` is).
    #[error("a declarative message needs notification.title, a non-empty string")]
    MissingTitle,
    /// `notification.navigate` is absent.
    #[error("a declarative message needs notification.navigate, the URL a click opens")]
    MissingNavigate,
    /// A `navigate` (of the notification or of an action) is not a usable URL.
    #[error("{field}: {why}")]
    InvalidNavigate {
        /// The member, as a path (`notification.actions[0].navigate`).
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// Any other member has the wrong type or value, or is not a member of
    /// a declarative message.
    #[error("{field}: {why}")]
    Invalid {
        /// The member, as a path.
        field: String,
        /// What is wrong with it.
        why: String,
    },
}

impl DeclarativeError {
    /// The API's error id for it.
    pub fn id(&self) -> &'static str {
        match self {
            Self::MissingTitle => "declarative-missing-title",
            Self::MissingNavigate => "declarative-missing-navigate",
            Self::InvalidNavigate { .. } => "declarative-invalid-navigate",
            Self::Invalid { .. } => "declarative-invalid-field",
        }
    }
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> DeclarativeError {
    DeclarativeError::Invalid { field: field.into(), why: why.into() }
}

/// A checked declarative message: every URL absolute, every member typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Declarative {
    /// The `notification` member, without `app_badge` and `mutable`.
    notification: Map<String, Value>,
    /// The number for the app's badge; 0 clears it.
    app_badge: Option<u64>,
    /// Whether a service worker may change the notification before it is shown.
    mutable: bool,
    /// Whether Tocsin's service worker clears the badge on a click.
    clear_badge_on_click: bool,
}

/// Whether a URL may be a notification's `navigate`, `icon` and the like:
/// `https:`, or `http:` on a loopback host (browsers treat
/// `http://localhost` as a secure context, and sites are developed there).
fn usable(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// `s` as an absolute URL, a relative one resolved against `base`.
fn absolute(s: &str, base: Option<&Url>) -> Result<Url, String> {
    let url = match Url::parse(s) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => match base {
            Some(b) => b.join(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?,
            None => {
                return Err(format!(
                    "{s:?} is relative; give an absolute https: URL, or set --public-url to resolve it against"
                ))
            }
        },
        Err(e) => return Err(format!("{s:?} is not a URL: {e}")),
    };
    if !usable(&url) {
        return Err(format!("{s:?} must be an https: URL (http: only on localhost)"));
    }
    Ok(url)
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, DeclarativeError> {
    v.as_str().ok_or_else(|| invalid(field, "must be a string"))
}

fn boolean(v: &Value, field: &str) -> Result<bool, DeclarativeError> {
    v.as_bool().ok_or_else(|| invalid(field, "must be true or false"))
}

/// The standard's "64-bit unsigned integer"; WebKit also takes a string of
/// digits, which is written back as a number.
fn badge_number(v: &Value, field: &str) -> Result<u64, DeclarativeError> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(field, "must be a whole number from 0 (0 clears the badge)"))
}

/// Both placements of `app_badge` or `mutable`: they must agree.
fn one_of<T: PartialEq>(top: Option<T>, inner: Option<T>, field: &str) -> Result<Option<T>, DeclarativeError> {
    match (top, inner) {
        (Some(a), Some(b)) if a != b => {
            Err(invalid(field, "is given at the top level and inside notification with different values"))
        }
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

fn url_member(v: &Value, field: &str, base: Option<&Url>) -> Result<Value, DeclarativeError> {
    let s = string(v, field)?;
    absolute(s, base).map(|u| Value::String(u.into())).map_err(|why| invalid(field, why))
}

fn navigate_member(v: &Value, field: &str, base: Option<&Url>) -> Result<Value, DeclarativeError> {
    let bad = |why: String| DeclarativeError::InvalidNavigate { field: field.to_owned(), why };
    let s = v.as_str().ok_or_else(|| bad("must be a string, the URL a click opens".into()))?;
    absolute(s, base).map(|u| Value::String(u.into())).map_err(bad)
}

fn action(v: &Value, i: usize, base: Option<&Url>) -> Result<Value, DeclarativeError> {
    let field = format!("notification.actions[{i}]");
    let obj = v.as_object().ok_or_else(|| invalid(&field, "must be an object {action, title, navigate?, icon?}"))?;
    let mut out = Map::new();
    for (k, v) in obj {
        let f = format!("{field}.{k}");
        let checked = match k.as_str() {
            "action" | "title" => match string(v, &f)? {
                "" => return Err(invalid(&f, "must not be empty")),
                s => Value::String(s.to_owned()),
            },
            "navigate" => navigate_member(v, &f, base)?,
            "icon" => url_member(v, &f, base)?,
            _ => return Err(invalid(&f, "is not a member of an action (action, title, navigate, icon)")),
        };
        out.insert(k.clone(), checked);
    }
    for required in ["action", "title"] {
        if !out.contains_key(required) {
            return Err(invalid(format!("{field}.{required}"), "is required"));
        }
    }
    Ok(Value::Object(out))
}

impl Declarative {
    /// Checks a message a sender describes. `web_push` may be left out (it
    /// is added); relative URLs are resolved against `base` (the site's
    /// public URL), and refused without one.
    pub fn parse(message: &Value, base: Option<&Url>) -> Result<Self, DeclarativeError> {
        let top = message.as_object().ok_or_else(|| {
            invalid("payload", "a declarative message is a JSON object {\"web_push\":8030,\"notification\":{…}}")
        })?;
        let mut notification = None;
        let (mut app_badge, mut mutable, mut clear_badge_on_click) = (None, None, false);
        for (k, v) in top {
            match k.as_str() {
                "web_push" if v.as_u64() == Some(WEB_PUSH) => {}
                "web_push" => return Err(invalid("web_push", "must be 8030")),
                "notification" => {
                    notification =
                        Some(v.as_object().ok_or_else(|| invalid("notification", "must be an object"))?)
                }
                "app_badge" => app_badge = Some(badge_number(v, "app_badge")?),
                "mutable" => mutable = Some(boolean(v, "mutable")?),
                CLEAR_BADGE_ON_CLICK => clear_badge_on_click = boolean(v, CLEAR_BADGE_ON_CLICK)?,
                _ => {
                    return Err(invalid(
                        k,
                        "is not a member of a declarative message (web_push, notification, app_badge, mutable, clearAppBadgeOnClick)",
                    ))
                }
            }
        }
        let notification = notification.ok_or(DeclarativeError::MissingTitle)?;
        let mut out = Map::new();
        let (mut inner_badge, mut inner_mutable) = (None, None);
        for (k, v) in notification {
            let f = format!("notification.{k}");
            if !NOTIFICATION_MEMBERS.contains(&k.as_str()) {
                return Err(invalid(&f, "is not a member of a declarative notification"));
            }
            let checked = match k.as_str() {
                "title" => match v {
                    Value::Null => continue,
                    Value::String(s) if s.is_empty() => return Err(DeclarativeError::MissingTitle),
                    v => Value::String(string(v, &f)?.to_owned()),
                },
                "navigate" if v.is_null() => continue,
                "navigate" => navigate_member(v, &f, base)?,
                "body" | "lang" | "tag" => Value::String(string(v, &f)?.to_owned()),
                "dir" => match string(v, &f)? {
                    d @ ("auto" | "ltr" | "rtl") => Value::String(d.to_owned()),
                    _ => return Err(invalid(&f, "must be \"auto\", \"ltr\" or \"rtl\"")),
                },
                "icon" | "image" | "badge" => url_member(v, &f, base)?,
                "silent" | "renotify" | "requireInteraction" => Value::Bool(boolean(v, &f)?),
                "timestamp" => {
                    Value::from(v.as_u64().ok_or_else(|| invalid(&f, "must be milliseconds since the epoch"))?)
                }
                "vibrate" => match v {
                    Value::Number(n) if n.is_u64() => v.clone(),
                    Value::Array(a) if a.len() <= 64 && a.iter().all(Value::is_u64) => v.clone(),
                    _ => return Err(invalid(&f, "must be a number or an array of numbers of milliseconds")),
                },
                "data" => v.clone(),
                "actions" => {
                    let list = v.as_array().ok_or_else(|| invalid(&f, "must be an array"))?;
                    if list.len() > 8 {
                        return Err(invalid(&f, "at most 8 actions"));
                    }
                    Value::Array(list.iter().enumerate().map(|(i, a)| action(a, i, base)).collect::<Result<_, _>>()?)
                }
                "app_badge" => {
                    inner_badge = Some(badge_number(v, &f)?);
                    continue;
                }
                "mutable" => {
                    inner_mutable = Some(boolean(v, &f)?);
                    continue;
                }
                _ => v.clone(),
            };
            out.insert(k.clone(), checked);
        }
        if !out.contains_key("title") {
            return Err(DeclarativeError::MissingTitle);
        }
        if !out.contains_key("navigate") {
            return Err(DeclarativeError::MissingNavigate);
        }
        if out.get("renotify") == Some(&Value::Bool(true)) && !out.contains_key("tag") {
            return Err(invalid("notification.renotify", "needs a tag: browsers refuse renotify without one"));
        }
        app_badge = one_of(app_badge, inner_badge, "app_badge")?;
        mutable = one_of(mutable, inner_mutable, "mutable")?;
        Ok(Declarative { notification: out, app_badge, mutable: mutable.unwrap_or(false), clear_badge_on_click })
    }

    /// The notification's title, as shown.
    pub fn title(&self) -> &str {
        self.notification.get("title").and_then(Value::as_str).unwrap_or_default()
    }

    /// The URL a click opens.
    pub fn navigate(&self) -> &str {
        self.notification.get("navigate").and_then(Value::as_str).unwrap_or_default()
    }

    /// The app badge's number, if the message sets it.
    pub fn app_badge(&self) -> Option<u64> {
        self.app_badge
    }

    /// The message browsers parse: the standard's members, with `app_badge`
    /// and `mutable` also inside `notification`, where Safari reads them
    /// (see the module's documentation).
    pub fn to_json(&self) -> Value {
        let mut notification = self.notification.clone();
        let mut top = Map::new();
        top.insert("web_push".into(), Value::from(WEB_PUSH));
        if let Some(n) = self.app_badge {
            notification.insert("app_badge".into(), Value::from(n));
            top.insert("app_badge".into(), Value::from(n));
        }
        if self.mutable {
            notification.insert("mutable".into(), Value::Bool(true));
            top.insert("mutable".into(), Value::Bool(true));
        }
        top.insert("notification".into(), Value::Object(notification));
        if self.clear_badge_on_click {
            top.insert(CLEAR_BADGE_ON_CLICK.into(), Value::Bool(true));
        }
        Value::Object(top)
    }

    /// The same notification as a classic payload, the JSON `sw.js` reads:
    /// `navigate` becomes `url` (and each action's `navigate` its `url`),
    /// `app_badge` becomes `appBadge`.
    pub fn to_classic(&self) -> Value {
        let mut out = Map::new();
        for (k, v) in &self.notification {
            match k.as_str() {
                "navigate" => {
                    out.insert("url".into(), v.clone());
                }
                "actions" => {
                    let actions = v.as_array().map(|list| {
                        list.iter()
                            .map(|a| {
                                let mut a = a.as_object().cloned().unwrap_or_default();
                                if let Some(nav) = a.remove("navigate") {
                                    a.insert("url".into(), nav);
                                }
                                Value::Object(a)
                            })
                            .collect::<Vec<_>>()
                    });
                    out.insert("actions".into(), actions.map_or(Value::Null, Value::Array));
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(n) = self.app_badge {
            out.insert("appBadge".into(), Value::from(n));
        }
        if self.clear_badge_on_click {
            out.insert(CLEAR_BADGE_ON_CLICK.into(), Value::Bool(true));
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Declarative, DeclarativeError> {
        Declarative::parse(&v, None)
    }

    fn err_id(v: Value) -> &'static str {
        parse(v).expect_err("refused").id()
    }

    #[test]
    fn a_full_message_round_trips_with_both_placements() {
        let d = parse(json!({"web_push": 8030, "notification": {"title": "Hi", "navigate": "https://a.example/x",
            "body": "b", "lang": "en", "dir": "ltr", "tag": "t", "icon": "https://a.example/i.png", "silent": false,
            "requireInteraction": true, "renotify": true, "timestamp": 5, "data": {"k": [1]},
            "actions": [{"action": "open", "title": "Open", "navigate": "https://a.example/o"}]},
            "app_badge": 3, "mutable": true}))
        .unwrap();
        let out = d.to_json();
        assert_eq!(out["web_push"], 8030);
        assert_eq!(out["app_badge"], 3);
        assert_eq!(out["notification"]["app_badge"], 3, "where WebKit reads it");
        assert_eq!(out["mutable"], true);
        assert_eq!(out["notification"]["mutable"], true, "where WebKit reads it");
        assert_eq!(out["notification"]["actions"][0]["navigate"], "https://a.example/o");
        assert_eq!(Declarative::parse(&out, None).unwrap(), d, "its own output parses to the same message");
        let classic = d.to_classic();
        assert_eq!(classic["url"], "https://a.example/x");
        assert_eq!(classic["appBadge"], 3);
        assert_eq!(classic["actions"][0]["url"], "https://a.example/o");
        assert_eq!(classic["title"], "Hi");
    }

    #[test]
    fn safari_placements_are_accepted() {
        let d = parse(json!({"notification": {"title": "Hi", "navigate": "https://a.example/",
            "app_badge": "7", "mutable": true}}))
        .unwrap();
        assert_eq!(d.app_badge(), Some(7));
        assert_eq!(d.to_json()["mutable"], true);
        assert_eq!(
            err_id(
                json!({"app_badge": 1, "notification": {"title": "a", "navigate": "https://a.example/", "app_badge": 2}})
            ),
            "declarative-invalid-field"
        );
    }

    #[test]
    fn each_missing_or_bad_field_has_its_id() {
        let nav = "https://a.example/";
        assert_eq!(err_id(json!({"web_push": 8030})), "declarative-missing-title");
        assert_eq!(err_id(json!({"notification": {"navigate": nav}})), "declarative-missing-title");
        assert_eq!(err_id(json!({"notification": {"title": "", "navigate": nav}})), "declarative-missing-title");
        assert_eq!(err_id(json!({"notification": {"title": "a"}})), "declarative-missing-navigate");
        for bad in [json!("/relative"), json!("http://a.example/"), json!("javascript:alert(1)"), json!(3), json!("")] {
            assert_eq!(
                err_id(json!({"notification": {"title": "a", "navigate": bad}})),
                "declarative-invalid-navigate"
            );
        }
        assert_eq!(
            err_id(
                json!({"notification": {"title": "a", "navigate": nav, "actions": [{"action": "x", "title": "X", "navigate": "ftp://x/"}]}})
            ),
            "declarative-invalid-navigate"
        );
        for bad in [
            json!({"web_push": 8031, "notification": {"title": "a", "navigate": nav}}),
            json!({"notification": {"title": 1, "navigate": nav}}),
            json!({"notification": {"title": "a", "navigate": nav, "dir": "up"}}),
            json!({"notification": {"title": "a", "navigate": nav, "silent": "yes"}}),
            json!({"notification": {"title": "a", "navigate": nav, "colour": "red"}}),
            json!({"notification": {"title": "a", "navigate": nav, "renotify": true}}),
            json!({"notification": {"title": "a", "navigate": nav}, "app_badge": -1}),
            json!({"notification": {"title": "a", "navigate": nav}, "mutable": 1}),
            json!({"notification": {"title": "a", "navigate": nav}, "extra": 1}),
            json!({"notification": "a"}),
            json!([1]),
        ] {
            assert_eq!(err_id(bad.clone()), "declarative-invalid-field", "{bad}");
        }
    }

    #[test]
    fn relative_urls_resolve_against_the_public_url_only() {
        let base = Url::parse("https://shop.example/app/").unwrap();
        let msg = json!({"notification": {"title": "a", "navigate": "orders/1", "icon": "/i.png"}});
        let d = Declarative::parse(&msg, Some(&base)).unwrap();
        assert_eq!(d.navigate(), "https://shop.example/app/orders/1");
        assert_eq!(d.to_json()["notification"]["icon"], "https://shop.example/i.png");
        let only_navigate = json!({"notification": {"title": "a", "navigate": "orders/1"}});
        assert_eq!(Declarative::parse(&only_navigate, None).unwrap_err().id(), "declarative-invalid-navigate");
        assert_eq!(Declarative::parse(&msg, None).unwrap_err().id(), "declarative-invalid-field", "the icon");
        let local = json!({"notification": {"title": "a", "navigate": "http://localhost:8080/x"}});
        assert!(parse(local).is_ok(), "http: on localhost, for development");
    }
}
