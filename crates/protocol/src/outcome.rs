//! What a push service's answer means for the sender.
//!
//! [`classify`] turns a status, headers and body into an [`Outcome`] the
//! delivery engine acts on: count it, delete the subscription, retry later,
//! or give up with a reason.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The result of one push attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201 or 202: the push service has the message.
    Delivered {
        /// The status code.
        status: u16,
    },
    /// 404 or 410: the subscription no longer exists; delete it, never retry.
    Gone {
        /// The status code.
        status: u16,
    },
    /// Try again later, no sooner than `after` when the service said so.
    Retry {
        /// What the push service answered (429, 406, 5xx, a timeout, …).
        reason: RetryReason,
        /// The service's `Retry-After`, when it gave one.
        after: Option<Duration>,
    },
    /// A permanent failure for this message.
    Failed {
        /// What the push service answered, or why no request was made.
        reason: FailReason,
    },
}

impl Outcome {
    /// A short stable label: `delivered`, `gone`, `retry` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Gone { .. } => "gone",
            Self::Retry { .. } => "retry",
            Self::Failed { .. } => "failed",
        }
    }
}

/// Why an attempt should be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryReason {
    /// 429 Too Many Requests.
    RateLimited,
    /// 406 from Microsoft's push service (`X-WNS-Status: appthrottled`).
    Throttled,
    /// A 5xx, or 408.
    ServerError(u16),
    /// The request timed out.
    Timeout,
    /// The connection failed or was reset.
    Network(String),
}

impl RetryReason {
    /// The status code that meant it, if one did.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::RateLimited => Some(429),
            Self::Throttled => Some(406),
            Self::ServerError(s) => Some(*s),
            Self::Timeout | Self::Network(_) => None,
        }
    }

    /// A short stable label for metrics and summaries.
    pub fn label(&self) -> String {
        match self {
            Self::RateLimited => "rate-limited".into(),
            Self::Throttled => "throttled".into(),
            Self::ServerError(s) => format!("http-{s}"),
            Self::Timeout => "timeout".into(),
            Self::Network(_) => "network".into(),
        }
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimited => f.write_str("rate limited by the push service (429)"),
            Self::Throttled => f.write_str("throttled by the push service (406)"),
            Self::ServerError(s) => write!(f, "push service error ({s})"),
            Self::Timeout => f.write_str("request timed out"),
            Self::Network(e) => write!(f, "network error: {e}"),
        }
    }
}

/// Why an attempt failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// 413: the payload is too large for this push service.
    PayloadTooLarge,
    /// The VAPID key does not match the one the browser subscribed with.
    VapidKeyMismatch {
        /// What the service said.
        detail: String,
    },
    /// 401 or 403 for another reason (bad or expired token, bad subject).
    Unauthorized {
        /// The status code.
        status: u16,
        /// What the service said.
        detail: String,
    },
    /// 400: the request was malformed.
    BadRequest {
        /// What the service said.
        detail: String,
    },
    /// Any other status.
    Http {
        /// The status code.
        status: u16,
        /// What the service said.
        detail: String,
    },
    /// The message could not even be built (too large, crypto failure).
    Request(String),
    /// The message's TTL ran out before it could be delivered.
    Expired,
    /// Every allowed attempt was used.
    RetriesExhausted(RetryReason),
}

impl FailReason {
    /// The push service's status code, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::PayloadTooLarge => Some(413),
            Self::BadRequest { .. } => Some(400),
            Self::Unauthorized { status, .. } | Self::Http { status, .. } => Some(*status),
            Self::RetriesExhausted(r) => r.status(),
            Self::VapidKeyMismatch { .. } | Self::Request(_) | Self::Expired => None,
        }
    }

    /// A short stable label for metrics and summaries.
    pub fn label(&self) -> String {
        match self {
            Self::PayloadTooLarge => "payload-too-large".into(),
            Self::VapidKeyMismatch { .. } => "vapid-key-mismatch".into(),
            Self::Unauthorized { status, .. } => format!("unauthorized-{status}"),
            Self::BadRequest { .. } => "bad-request".into(),
            Self::Http { status, .. } => format!("http-{status}"),
            Self::Request(_) => "invalid-request".into(),
            Self::Expired => "ttl-expired".into(),
            Self::RetriesExhausted(r) => format!("retries-exhausted-{}", r.label()),
        }
    }
}

/// The hint given with a VAPID key mismatch.
pub const VAPID_MISMATCH_HINT: &str = "the VAPID key does not match the applicationServerKey the browser subscribed \
     with; send with that key pair, or have the browser subscribe again with the current public key";

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadTooLarge => f.write_str("payload too large for the push service (413)"),
            Self::VapidKeyMismatch { detail } => write!(f, "VAPID key mismatch: {VAPID_MISMATCH_HINT} ({detail})"),
            Self::Unauthorized { status, detail } => {
                write!(f, "push service refused the VAPID token ({status}): {detail}")
            }
            Self::BadRequest { detail } => write!(f, "push service refused the request as malformed (400): {detail}"),
            Self::Http { status, detail } => write!(f, "push service answered {status}: {detail}"),
            Self::Request(e) => write!(f, "cannot build the request: {e}"),
            Self::Expired => f.write_str("the message's TTL ran out before it could be delivered"),
            Self::RetriesExhausted(r) => write!(f, "gave up after the last retry: {r}"),
        }
    }
}

fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The longest `Retry-After` taken as given: four weeks, the longest TTL a
/// push service keeps a message. A push service's header is outside input;
/// anything longer (up to `u64::MAX` seconds) is read as this, so that no
/// time arithmetic on it can overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(28 * 24 * 3600);

/// Parses `Retry-After`: delta-seconds or an HTTP date (RFC 9110 section
/// 10.2.3). A date in the past means "now"; at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, however many: a number too large for u64 is still
        // "a long time", not "no header".
        return Some(v.parse::<u64>().map_or(MAX_RETRY_AFTER, Duration::from_secs).min(MAX_RETRY_AFTER));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

fn is_vapid_mismatch(status: u16, body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    // FCM: 403 "the VAPID credentials in the authorization header do not
    // correspond to the credentials used to create the subscriptions."
    let fcm = status == 403 && text.contains("VAPID credentials") && text.contains("do not correspond");
    // Mozilla autopush: 401 with errno 109.
    let mozilla = status == 401
        && serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v.get("errno").and_then(|e| e.as_u64()))
            == Some(109);
    // Apple: 403 {"reason":"BadJwtToken"} (or VapidPkHashMismatch).
    let apple = status == 403 && (text.contains("BadJwtToken") || text.contains("VapidPkHashMismatch"));
    fcm || mozilla || apple
}

/// Classifies a push service's response.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Outcome {
    match status {
        201 | 202 => Outcome::Delivered { status },
        200..=299 => Outcome::Delivered { status },
        404 | 410 => Outcome::Gone { status },
        413 => Outcome::Failed { reason: FailReason::PayloadTooLarge },
        429 => Outcome::Retry { reason: RetryReason::RateLimited, after: retry_after(headers, now) },
        406 => Outcome::Retry { reason: RetryReason::Throttled, after: retry_after(headers, now) },
        408 | 500..=599 => {
            Outcome::Retry { reason: RetryReason::ServerError(status), after: retry_after(headers, now) }
        }
        401 | 403 if is_vapid_mismatch(status, body) => {
            Outcome::Failed { reason: FailReason::VapidKeyMismatch { detail: detail(body) } }
        }
        401 | 403 => Outcome::Failed { reason: FailReason::Unauthorized { status, detail: detail(body) } },
        400 => Outcome::Failed { reason: FailReason::BadRequest { detail: detail(body) } },
        _ => Outcome::Failed { reason: FailReason::Http { status, detail: detail(body) } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn statuses_map_to_actions() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        assert_eq!(classify(201, &none, b"", now), Outcome::Delivered { status: 201 });
        assert_eq!(classify(202, &none, b"", now), Outcome::Delivered { status: 202 });
        assert_eq!(classify(404, &none, b"", now), Outcome::Gone { status: 404 });
        assert_eq!(classify(410, &none, b"", now), Outcome::Gone { status: 410 });
        assert_eq!(classify(413, &none, b"", now), Outcome::Failed { reason: FailReason::PayloadTooLarge });
        assert_eq!(
            classify(429, &h(&[("retry-after", "7")]), b"", now),
            Outcome::Retry { reason: RetryReason::RateLimited, after: Some(Duration::from_secs(7)) }
        );
        assert_eq!(
            classify(406, &h(&[("x-wns-status", "appthrottled")]), b"", now),
            Outcome::Retry { reason: RetryReason::Throttled, after: None }
        );
        assert_eq!(
            classify(503, &none, b"", now),
            Outcome::Retry { reason: RetryReason::ServerError(503), after: None }
        );
        assert!(matches!(classify(400, &none, b"bad", now), Outcome::Failed { reason: FailReason::BadRequest { .. } }));
        assert!(matches!(
            classify(401, &none, b"expired", now),
            Outcome::Failed { reason: FailReason::Unauthorized { status: 401, .. } }
        ));
        assert!(matches!(
            classify(403, &none, b"", now),
            Outcome::Failed { reason: FailReason::Unauthorized { status: 403, .. } }
        ));
        assert!(matches!(
            classify(302, &none, b"", now),
            Outcome::Failed { reason: FailReason::Http { status: 302, .. } }
        ));
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let hm = h(&[("retry-after", "Sun, 06 Nov 1994 08:50:37 GMT")]);
        assert_eq!(retry_after(&hm, now), Some(Duration::from_secs(60)));
        let past = h(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]);
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&h(&[("retry-after", "soon")]), now), None);
        for huge in ["18446744073709551615", "18446744073709551616", "99999999999999999999999999", "2419201"] {
            assert_eq!(retry_after(&h(&[("retry-after", huge)]), now), Some(MAX_RETRY_AFTER), "{huge}");
        }
        assert_eq!(retry_after(&h(&[("retry-after", "-5")]), now), None);
        assert_eq!(retry_after(&h(&[("retry-after", "")]), now), None);
    }

    #[test]
    fn vapid_mismatch_is_recognised_as_each_service_says_it() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        let fcm = b"the VAPID credentials in the authorization header do not correspond to the credentials used to create the subscriptions.";
        let mozilla = br#"{"code": 401, "errno": 109, "error": "Unauthorized", "message": "Request did not validate Invalid bearer token"}"#;
        let apple = br#"{"reason":"BadJwtToken"}"#;
        for (status, body) in [(403, &fcm[..]), (401, &mozilla[..]), (403, &apple[..])] {
            let o = classify(status, &none, body, now);
            let Outcome::Failed { reason } = &o else { panic!("{o:?}") };
            assert_eq!(reason.label(), "vapid-key-mismatch", "{status}");
            assert!(reason.to_string().contains("does not match the applicationServerKey"));
        }
    }
}
