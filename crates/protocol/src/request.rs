//! RFC 8030 push requests: the headers and body an application server POSTs
//! to a subscription's endpoint.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};

use crate::b64;
use crate::ece::{self, ContentEncoding, EncryptError};
use crate::subscription::Subscription;
use crate::vapid::{VapidError, VapidScheme, VapidSigner};

/// How long, in seconds, the push service keeps an undelivered message
/// (RFC 8030 section 5.2). Always sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ttl(pub u32);

impl Ttl {
    /// Four weeks, the default of the web-push libraries and FCM's maximum.
    pub const DEFAULT: Ttl = Ttl(4 * 7 * 24 * 3600);
}

impl Default for Ttl {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A malformed `TTL`, `Urgency` or `Topic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// Not one of the four urgencies.
    #[error("urgency must be very-low, low, normal or high, got {0:?}")]
    Urgency(String),
    /// Empty, longer than 32 characters, or outside the base64url alphabet.
    #[error("topic must be 1 to 32 characters of the base64url alphabet (A-Z a-z 0-9 - _), got {0:?}")]
    Topic(String),
}

/// The `Urgency` header (RFC 8030 section 5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Urgency {
    /// On power and Wi-Fi only.
    VeryLow,
    /// On power or Wi-Fi.
    Low,
    /// Not on low battery.
    #[default]
    Normal,
    /// Always, even on low battery.
    High,
}

impl Urgency {
    /// The header token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VeryLow => "very-low",
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Urgency {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "very-low" => Ok(Self::VeryLow),
            "low" => Ok(Self::Low),
            "normal" => Ok(Self::Normal),
            "high" => Ok(Self::High),
            _ => Err(OptionError::Urgency(s.to_owned())),
        }
    }
}

/// The `Topic` header (RFC 8030 section 5.4): a newer message with the same
/// topic replaces an undelivered older one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl Topic {
    /// Checks length (1 to 32) and alphabet (base64url).
    pub fn new(topic: &str) -> Result<Self, OptionError> {
        let ok = !topic.is_empty()
            && topic.len() <= 32
            && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(topic.to_owned()))
        } else {
            Err(OptionError::Topic(topic.to_owned()))
        }
    }

    /// The topic as sent in the `Topic` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Topic {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Per-message options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// Time to live.
    pub ttl: Ttl,
    /// Urgency; no header when `None` (the service assumes normal).
    pub urgency: Option<Urgency>,
    /// Topic, to replace an older undelivered message.
    pub topic: Option<Topic>,
    /// Payload encryption.
    pub encoding: ContentEncoding,
}

/// Why a push request could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRequestError {
    /// The payload could not be encrypted (too large, or a backend failure).
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// The VAPID token could not be signed.
    #[error(transparent)]
    Vapid(#[from] VapidError),
    /// The endpoint could not be turned into a request URI.
    #[error("endpoint cannot be used as a request URI")]
    Uri,
}

/// Builds the POST for one subscription. `payload` of `None` sends a push
/// without data (no body, no `Content-Encoding`).
pub fn build(
    subscription: &Subscription,
    payload: Option<&[u8]>,
    options: &PushOptions,
    vapid: Option<&VapidSigner>,
    now: SystemTime,
) -> Result<Request<Bytes>, PushRequestError> {
    let uri: http::Uri = subscription.endpoint().as_str().parse().map_err(|_| PushRequestError::Uri)?;
    let mut req = Request::builder().method(Method::POST).uri(uri);
    let headers = req.headers_mut().ok_or(PushRequestError::Uri)?;
    headers.insert("ttl", HeaderValue::from(options.ttl.0));
    if let Some(u) = options.urgency {
        headers.insert("urgency", HeaderValue::from_static(u.as_str()));
    }
    if let Some(t) = &options.topic {
        // A checked topic is ASCII.
        headers.insert("topic", HeaderValue::from_str(t.as_str()).map_err(|_| PushRequestError::Uri)?);
    }
    // aesgcm goes out as every other sender sends it (web-push, pywebpush,
    // web-push-php), and as the services that still take it expect:
    // `Authorization: WebPush <jwt>` and `Crypto-Key: dh=…;p256ecdsa=…`.
    // aes128gcm carries RFC 8292's `vapid t=…, k=…`.
    let legacy = options.encoding == ContentEncoding::AesGcm;
    let mut crypto_key = Vec::with_capacity(2);
    if let Some(signer) = vapid {
        let scheme = if legacy { VapidScheme::WebPush } else { VapidScheme::Vapid };
        headers.insert(AUTHORIZATION, signer.authorization_in(scheme, subscription.origin(), now)?);
    }
    let body = match payload {
        None => Bytes::new(),
        Some(plain) => {
            let enc = ece::encrypt(subscription.p256dh(), subscription.auth(), plain, options.encoding)?;
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc.encoding.as_str()));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            if enc.encoding == ContentEncoding::AesGcm {
                let salt = format!("salt={}", b64::encode(enc.salt));
                headers.insert("encryption", HeaderValue::try_from(salt).map_err(|_| PushRequestError::Uri)?);
                crypto_key.push(format!("dh={}", b64::encode(enc.sender_public)));
            }
            Bytes::from(enc.body)
        }
    };
    if let (true, Some(signer)) = (legacy, vapid) {
        crypto_key.push(format!("p256ecdsa={}", signer.public_key_base64url()));
    }
    if !crypto_key.is_empty() {
        let value = HeaderValue::try_from(crypto_key.join(";")).map_err(|_| PushRequestError::Uri)?;
        headers.insert("crypto-key", value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    req.body(body).map_err(|_| PushRequestError::Uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ece::ReceiverKeys;
    use crate::vapid::{VapidKey, VapidSubject};
    use std::sync::Arc;

    fn sub(r: &ReceiverKeys, endpoint: &str) -> Subscription {
        Subscription::new(endpoint.parse().unwrap(), r.public_key(), r.auth()).unwrap()
    }

    #[test]
    fn options_are_checked() {
        assert_eq!("very-low".parse::<Urgency>().unwrap(), Urgency::VeryLow);
        assert!("urgent".parse::<Urgency>().is_err());
        assert!(Topic::new("news-2026_11").is_ok());
        assert!(Topic::new(&"a".repeat(32)).is_ok());
        for bad in ["", "has space", "dot.ted", "slash/", &"a".repeat(33)] {
            assert!(Topic::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_an_rfc8030_request() {
        let r = ReceiverKeys::generate().unwrap();
        let s = sub(&r, "https://push.example.net:8443/wpush/v2/abc");
        let signer =
            VapidSigner::new(Arc::new(VapidKey::generate().unwrap()), VapidSubject::new("mailto:a@b.c").unwrap());
        let opts = PushOptions {
            ttl: Ttl(60),
            urgency: Some(Urgency::High),
            topic: Some(Topic::new("scores").unwrap()),
            encoding: ContentEncoding::Aes128Gcm,
        };
        let now = SystemTime::now();
        let req = build(&s, Some(b"hello"), &opts, Some(&signer), now).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "https://push.example.net:8443/wpush/v2/abc");
        let h = req.headers();
        assert_eq!(h["ttl"], "60");
        assert_eq!(h["urgency"], "high");
        assert_eq!(h["topic"], "scores");
        assert_eq!(h["content-encoding"], "aes128gcm");
        assert_eq!(h["content-type"], "application/octet-stream");
        assert_eq!(h["content-length"], req.body().len().to_string().as_str());
        let v = crate::vapid::verify(h["authorization"].to_str().unwrap(), None, "https://push.example.net:8443", now)
            .unwrap();
        assert_eq!(v.public_key, signer.key().public_key());
        assert_eq!(r.decrypt_aes128gcm(req.body()).unwrap(), b"hello");
    }

    #[test]
    fn aesgcm_carries_its_keys_in_headers() {
        let r = ReceiverKeys::generate().unwrap();
        let s = sub(&r, "https://push.example.net/x");
        let opts = PushOptions { encoding: ContentEncoding::AesGcm, ..Default::default() };
        let req = build(&s, Some(b"legacy"), &opts, None, SystemTime::now()).unwrap();
        let h = req.headers();
        assert_eq!(h["ttl"], Ttl::DEFAULT.0.to_string().as_str());
        assert_eq!(h["content-encoding"], "aesgcm");
        let params =
            ece::AesGcmParams::from_headers(h["encryption"].to_str().unwrap(), h["crypto-key"].to_str().unwrap())
                .unwrap();
        assert_eq!(r.decrypt_aesgcm(req.body(), &params).unwrap(), b"legacy");
    }

    #[test]
    fn aesgcm_signs_in_the_webpush_scheme_with_the_key_in_crypto_key() {
        let r = ReceiverKeys::generate().unwrap();
        let s = sub(&r, "https://updates.push.services.mozilla.com/wpush/v1/x");
        let signer =
            VapidSigner::new(Arc::new(VapidKey::generate().unwrap()), VapidSubject::new("mailto:a@b.c").unwrap());
        let opts = PushOptions { encoding: ContentEncoding::AesGcm, ..Default::default() };
        let now = SystemTime::now();
        let req = build(&s, Some(b"legacy"), &opts, Some(&signer), now).unwrap();
        let h = req.headers();
        let auth = h["authorization"].to_str().unwrap();
        assert!(auth.starts_with("WebPush ey"), "{auth}");
        let crypto_key = h["crypto-key"].to_str().unwrap();
        let k = signer.public_key_base64url();
        assert!(crypto_key.starts_with("dh=B") && crypto_key.ends_with(&format!(";p256ecdsa={k}")), "{crypto_key}");
        let v = crate::vapid::verify(auth, Some(crypto_key), "https://updates.push.services.mozilla.com", now).unwrap();
        assert_eq!((v.scheme, v.public_key.as_slice()), ("WebPush", signer.key().public_key().as_slice()));
        let params = ece::AesGcmParams::from_headers(h["encryption"].to_str().unwrap(), crypto_key).unwrap();
        assert_eq!(r.decrypt_aesgcm(req.body(), &params).unwrap(), b"legacy");
        // aes128gcm keeps RFC 8292's scheme, and no Crypto-Key.
        let req = build(&s, Some(b"new"), &PushOptions::default(), Some(&signer), now).unwrap();
        assert!(req.headers()["authorization"].to_str().unwrap().starts_with("vapid t="));
        assert!(req.headers().get("crypto-key").is_none());
    }

    #[test]
    fn a_push_without_payload_has_no_body_or_encoding() {
        let r = ReceiverKeys::generate().unwrap();
        let req =
            build(&sub(&r, "https://p.example/x"), None, &PushOptions::default(), None, SystemTime::now()).unwrap();
        assert!(req.body().is_empty());
        assert!(req.headers().get("content-encoding").is_none());
        assert_eq!(req.headers()["content-length"], "0");
    }

    #[test]
    fn an_oversized_payload_is_refused_before_sending() {
        let r = ReceiverKeys::generate().unwrap();
        let big = vec![b'a'; 3994];
        let err = build(&sub(&r, "https://p.example/x"), Some(&big), &PushOptions::default(), None, SystemTime::now())
            .unwrap_err();
        assert!(matches!(err, PushRequestError::Encrypt(EncryptError::TooLarge { len: 3994, max: 3993, .. })));
    }
}
