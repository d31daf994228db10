//! A browser's push subscription, validated once at the edge.
//!
//! [`Subscription`] is built only from input that passed every check: an
//! absolute `http(s)` endpoint, a `p256dh` key that is a point on P-256, and a
//! 16-byte `auth` secret. Code that holds one never checks again.

use std::fmt;

use aws_lc_rs::agreement::{ParsedPublicKey, UnparsedPublicKey, ECDH_P256};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::b64;

/// Why a subscription was refused. Each variant has a stable [`id`](Self::id)
/// for API error bodies and a message that says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The body was not a JSON object of the expected shape.
    #[error("subscription is not valid JSON: {0}")]
    Json(String),
    /// No `endpoint`, or an empty one.
    #[error("Subscription must have an endpoint")]
    NoEndpoint,
    /// The endpoint is not an absolute http(s) URL.
    #[error("endpoint is not an absolute http or https URL: {0}")]
    InvalidEndpoint(String),
    /// No `keys` object, or one without `p256dh` or `auth`.
    #[error("subscription must have keys.p256dh and keys.auth")]
    NoKeys,
    /// `keys.p256dh` is not base64.
    #[error("keys.p256dh is not base64url")]
    P256dhEncoding,
    /// `keys.p256dh` is not a 65-byte uncompressed P-256 point on the curve.
    #[error("keys.p256dh must be an uncompressed P-256 public key (65 bytes, a point on the curve)")]
    P256dhInvalid,
    /// `keys.auth` is not base64.
    #[error("keys.auth is not base64url")]
    AuthEncoding,
    /// `keys.auth` does not decode to 16 bytes.
    #[error("keys.auth must be 16 bytes, got {0}")]
    AuthLength(usize),
    /// `expirationTime` is neither null nor a whole number of milliseconds
    /// from 0 to [`MAX_EXPIRATION_MS`] (the last millisecond of the year 9999).
    #[error("expirationTime must be null or milliseconds since the epoch, from 0 to 253402300799999 (the year 9999)")]
    ExpirationTime,
}

impl SubscriptionError {
    /// A stable identifier, for the `id` of an API error body.
    pub fn id(&self) -> &'static str {
        match self {
            Self::Json(_) => "invalid-json",
            Self::NoEndpoint => "no-endpoint",
            Self::InvalidEndpoint(_) => "invalid-endpoint",
            Self::NoKeys => "no-keys",
            Self::P256dhEncoding | Self::P256dhInvalid => "invalid-p256dh",
            Self::AuthEncoding | Self::AuthLength(_) => "invalid-auth",
            Self::ExpirationTime => "invalid-expiration-time",
        }
    }
}

/// Whether two secrets (or their encodings) are equal, in time that does
/// not depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// The latest `expirationTime` accepted: 9999-12-31T23:59:59.999Z, in
/// milliseconds since the epoch. It bounds what is stored (an `i64` column:
/// a larger `u64` would wrap to a negative number that no read accepts) and
/// what any view formats as a date.
pub const MAX_EXPIRATION_MS: u64 = 253_402_300_799_999;

/// The user agent's ECDH public key (`keys.p256dh`): 65 bytes, uncompressed,
/// known to be on the P-256 curve.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UaPublicKey([u8; 65]);

impl UaPublicKey {
    /// Checks that `bytes` is an uncompressed point on P-256.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SubscriptionError> {
        let arr: [u8; 65] = bytes.try_into().map_err(|_| SubscriptionError::P256dhInvalid)?;
        if arr[0] != 0x04 {
            return Err(SubscriptionError::P256dhInvalid);
        }
        ParsedPublicKey::try_from(UnparsedPublicKey::new(&ECDH_P256, &arr[..]))
            .map_err(|_| SubscriptionError::P256dhInvalid)?;
        Ok(Self(arr))
    }

    /// The 65 bytes.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }
}

impl fmt::Debug for UaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UaPublicKey({})", b64::encode(self.0))
    }
}

/// The subscription's authentication secret (`keys.auth`): 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthSecret([u8; 16]);

impl AuthSecret {
    /// Wraps 16 bytes.
    pub fn new(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Whether `other` is this secret, compared in time that does not
    /// depend on where they differ: a caller proves it holds a stored
    /// subscription with its secret, so timing must not reveal it.
    pub fn matches(&self, other: &[u8]) -> bool {
        same_secret(&self.0, other)
    }

    /// [`matches`](Self::matches) for the base64url form a client sends or
    /// the store keeps; false for text that is not base64.
    pub fn matches_base64(&self, other: &str) -> bool {
        b64::decode(other).is_ok_and(|b| self.matches(&b))
    }
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthSecret(..)")
    }
}

/// A validated push subscription.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SubscriptionJson", into = "SubscriptionJson")]
pub struct Subscription {
    endpoint: Url,
    /// `endpoint`'s origin, computed once: every request needs it (the VAPID
    /// audience, the per-service gate) and building it allocates.
    origin: String,
    expiration_time: Option<u64>,
    p256dh: UaPublicKey,
    auth: AuthSecret,
}

impl Subscription {
    /// Builds a subscription from parts that are already validated.
    pub fn new(endpoint: Url, p256dh: UaPublicKey, auth: AuthSecret) -> Result<Self, SubscriptionError> {
        check_endpoint(&endpoint)?;
        Ok(Self { origin: endpoint.origin().ascii_serialization(), endpoint, expiration_time: None, p256dh, auth })
    }

    /// Parses the JSON of `PushSubscription.toJSON()`.
    pub fn from_json(json: &str) -> Result<Self, SubscriptionError> {
        let raw: SubscriptionJson = serde_json::from_str(json).map_err(|e| SubscriptionError::Json(e.to_string()))?;
        raw.try_into()
    }

    /// Parses an already decoded JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self, SubscriptionError> {
        let raw: SubscriptionJson =
            serde_json::from_value(value).map_err(|e| SubscriptionError::Json(e.to_string()))?;
        raw.try_into()
    }

    /// The push service URL this subscription's messages are POSTed to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The ASCII origin of the endpoint (scheme, host and a non-default
    /// port): the VAPID audience, and the key for per-service connection
    /// pools and rate limits.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// When the browser said the subscription expires, in milliseconds since
    /// the Unix epoch.
    pub fn expiration_time(&self) -> Option<u64> {
        self.expiration_time
    }

    /// Sets the expiration time, in milliseconds since the Unix epoch (at
    /// most [`MAX_EXPIRATION_MS`]).
    pub fn with_expiration_time(mut self, ms: Option<u64>) -> Result<Self, SubscriptionError> {
        if ms.is_some_and(|m| m > MAX_EXPIRATION_MS) {
            return Err(SubscriptionError::ExpirationTime);
        }
        self.expiration_time = ms;
        Ok(self)
    }

    /// The user agent's public key.
    pub fn p256dh(&self) -> &UaPublicKey {
        &self.p256dh
    }

    /// The authentication secret.
    pub fn auth(&self) -> &AuthSecret {
        &self.auth
    }

    /// The JSON the browser gave, normalised to base64url without padding.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(&SubscriptionJson::from(self.clone())).unwrap_or_default()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("endpoint", &self.endpoint.as_str())
            .field("expiration_time", &self.expiration_time)
            .finish_non_exhaustive()
    }
}

fn check_endpoint(url: &Url) -> Result<(), SubscriptionError> {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.cannot_be_a_base() {
        return Err(SubscriptionError::InvalidEndpoint(url.to_string()));
    }
    Ok(())
}

/// The wire shape of `PushSubscription.toJSON()`, with every field optional so
/// that a missing one gets its own error rather than serde's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionJson {
    /// The push service URL.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Milliseconds since the epoch, or null.
    #[serde(default)]
    pub expiration_time: Option<serde_json::Value>,
    /// `p256dh` and `auth`, base64url, as the browser gave them.
    #[serde(default)]
    pub keys: Option<KeysJson>,
}

/// The `keys` object of a subscription.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeysJson {
    /// The user agent's ECDH public key, base64.
    #[serde(default)]
    pub p256dh: Option<String>,
    /// The authentication secret, base64.
    #[serde(default)]
    pub auth: Option<String>,
}

impl TryFrom<SubscriptionJson> for Subscription {
    type Error = SubscriptionError;

    fn try_from(raw: SubscriptionJson) -> Result<Self, Self::Error> {
        let endpoint = match raw.endpoint.as_deref().map(str::trim) {
            None | Some("") => return Err(SubscriptionError::NoEndpoint),
            Some(s) => Url::parse(s).map_err(|_| SubscriptionError::InvalidEndpoint(s.to_owned()))?,
        };
        check_endpoint(&endpoint)?;
        let expiration_time = match raw.expiration_time {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => Some(
                n.as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.is_finite()).map(|f| f as u64))
                    .filter(|ms| *ms <= MAX_EXPIRATION_MS)
                    .ok_or(SubscriptionError::ExpirationTime)?,
            ),
            Some(_) => return Err(SubscriptionError::ExpirationTime),
        };
        let keys = raw.keys.ok_or(SubscriptionError::NoKeys)?;
        let (Some(p256dh), Some(auth)) = (keys.p256dh, keys.auth) else {
            return Err(SubscriptionError::NoKeys);
        };
        let p256dh = b64::decode(&p256dh).map_err(|_| SubscriptionError::P256dhEncoding)?;
        let p256dh = UaPublicKey::from_bytes(&p256dh)?;
        let auth = b64::decode(&auth).map_err(|_| SubscriptionError::AuthEncoding)?;
        let auth: [u8; 16] = auth.as_slice().try_into().map_err(|_| SubscriptionError::AuthLength(auth.len()))?;
        Ok(Self {
            origin: endpoint.origin().ascii_serialization(),
            endpoint,
            expiration_time,
            p256dh,
            auth: AuthSecret(auth),
        })
    }
}

impl From<Subscription> for SubscriptionJson {
    fn from(s: Subscription) -> Self {
        Self {
            endpoint: Some(s.endpoint.to_string()),
            expiration_time: Some(s.expiration_time.map_or(serde_json::Value::Null, Into::into)),
            keys: Some(KeysJson { p256dh: Some(b64::encode(s.p256dh.0)), auth: Some(b64::encode(s.auth.0)) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_time_is_bounded_by_the_year_9999() {
        let sub = |t: &str| {
            let (p256dh, auth) = (P256DH, b64::encode([7u8; 16]));
            Subscription::from_json(&format!(
                r#"{{"endpoint":"https://push.example.net/x","expirationTime":{t},"keys":{{"p256dh":"{p256dh}","auth":"{auth}"}}}}"#
            ))
        };
        assert_eq!(sub("253402300799999").map(|s| s.expiration_time()), Ok(Some(MAX_EXPIRATION_MS)));
        assert_eq!(sub("0").map(|s| s.expiration_time()), Ok(Some(0)));
        for bad in ["253402300800000", "9223372036854775808", "18446744073709551615", "1e300", "-1", "\"soon\""] {
            assert_eq!(sub(bad).err(), Some(SubscriptionError::ExpirationTime), "{bad}");
        }
        let ok = sub("null").unwrap();
        assert!(ok.clone().with_expiration_time(Some(MAX_EXPIRATION_MS + 1)).is_err());
        assert!(ok.auth().matches(&[7u8; 16]) && !ok.auth().matches(&[7u8; 15]) && !ok.auth().matches(&[8u8; 16]));
        assert!(ok.auth().matches_base64(&b64::encode([7u8; 16])) && !ok.auth().matches_base64("!!"));
    }

    // Keys from RFC 8291 Appendix A.
    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn json(endpoint: &str, p256dh: &str, auth: &str) -> String {
        format!(r#"{{"endpoint":"{endpoint}","expirationTime":null,"keys":{{"p256dh":"{p256dh}","auth":"{auth}"}}}}"#)
    }

    #[test]
    fn parses_what_browsers_send_and_round_trips() {
        let text = json("https://push.example.net:8443/p/abc", P256DH, AUTH);
        let sub = Subscription::from_json(&text).unwrap();
        assert_eq!(sub.origin(), "https://push.example.net:8443");
        assert_eq!(sub.expiration_time(), None);
        let again = Subscription::from_json(&sub.to_json()).unwrap();
        assert_eq!(sub, again);
        assert_eq!(sub.to_json(), text);
    }

    #[test]
    fn accepts_padded_and_standard_base64() {
        let std = P256DH.replace('-', "+").replace('_', "/") + "=";
        let sub = Subscription::from_json(&json("https://a.example/x", &std, "BTBZMqHH6r4Tts7J/aSIgg==")).unwrap();
        assert_eq!(b64::encode(sub.p256dh().as_bytes()), P256DH);
    }

    #[test]
    fn each_defect_has_its_own_error() {
        let cases: Vec<(String, SubscriptionError)> = vec![
            ("{}".into(), SubscriptionError::NoEndpoint),
            (r#"{"endpoint":""}"#.into(), SubscriptionError::NoEndpoint),
            (r#"{"endpoint":"ftp://x/y","keys":{}}"#.into(), SubscriptionError::InvalidEndpoint("ftp://x/y".into())),
            (r#"{"endpoint":"not a url"}"#.into(), SubscriptionError::InvalidEndpoint("not a url".into())),
            (r#"{"endpoint":"https://a/b"}"#.into(), SubscriptionError::NoKeys),
            (r#"{"endpoint":"https://a/b","keys":{"auth":"x"}}"#.into(), SubscriptionError::NoKeys),
            (json("https://a/b", "***", AUTH), SubscriptionError::P256dhEncoding),
            (json("https://a/b", "BCVx", AUTH), SubscriptionError::P256dhInvalid),
            (json("https://a/b", P256DH, "AAAA"), SubscriptionError::AuthLength(3)),
            (json("https://a/b", P256DH, "!!"), SubscriptionError::AuthEncoding),
            (
                r#"{"endpoint":"https://a/b","expirationTime":"soon","keys":{}}"#.into(),
                SubscriptionError::ExpirationTime,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Subscription::from_json(&input).unwrap_err(), want, "{input}");
        }
        assert!(matches!(Subscription::from_json("[1,2]"), Err(SubscriptionError::Json(_))));
        assert!(matches!(Subscription::from_json(r#"{"endpoint":5}"#), Err(SubscriptionError::Json(_))));
    }

    #[test]
    fn refuses_a_point_off_the_curve() {
        let mut bytes = b64::decode(P256DH).unwrap();
        bytes[64] ^= 1;
        let off = b64::encode(&bytes);
        assert_eq!(
            Subscription::from_json(&json("https://a/b", &off, AUTH)).unwrap_err(),
            SubscriptionError::P256dhInvalid
        );
    }
}
