//! RFC 8292 VAPID: the application server's identity.
//!
//! - [`VapidKey`]: the P-256 signing key, read and written in the formats
//!   web-push users already have (raw base64url as `web-push
//!   generate-vapid-keys --json` prints it; PEM, PKCS#8 or SEC 1).
//! - [`VapidSigner`]: builds `Authorization: vapid t=<jwt>, k=<key>` for an
//!   audience, caching each token until shortly before it expires, so a
//!   broadcast to one push service signs once.
//! - [`verify`]: what a push service checks, for the development push service.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::agreement::{PrivateKey as EcdhPrivateKey, ECDH_P256};
use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine as _;
use http::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::b64;

/// The longest token lifetime RFC 8292 section 2 allows.
pub const MAX_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The default token lifetime.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(12 * 3600);
/// A cached token is replaced when less than this is left of it.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Why a VAPID key, subject or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VapidError {
    /// The public key is not a 65-byte uncompressed P-256 point.
    #[error("VAPID public key must be 65 bytes of uncompressed P-256, base64url")]
    PublicKey,
    /// The private key is not a 32-byte P-256 scalar, PKCS#8 or SEC 1 PEM.
    #[error("VAPID private key must be 32 bytes base64url, or a PEM (PKCS#8 or SEC 1) P-256 key")]
    PrivateKey,
    /// The public key given does not belong to the private key.
    #[error("VAPID public key does not match the private key")]
    KeyMismatch,
    /// The subject is not a `mailto:` or `https:` URI.
    #[error("VAPID subject must be a mailto: or https: URI, got {0:?}")]
    Subject(String),
    /// The lifetime asked for is zero or above 24 hours.
    #[error("VAPID token lifetime must be between 1 second and 24 hours")]
    Validity,
    /// The crypto backend failed.
    #[error("VAPID signing failed in the crypto backend")]
    Crypto,
}

/// A VAPID signing key pair.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    public: [u8; 65],
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VapidKey({})", self.public_key_base64url())
    }
}

/// A key pair as `web-push generate-vapid-keys --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VapidKeysJson {
    /// Base64url, 65 bytes uncompressed.
    pub public_key: String,
    /// Base64url, the 32-byte private scalar.
    pub private_key: String,
}

impl VapidKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, VapidError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| VapidError::Crypto)?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: EcdsaKeyPair) -> Result<Self, VapidError> {
        let public = pair.public_key().as_ref().try_into().map_err(|_| VapidError::PublicKey)?;
        Ok(Self { pair, public })
    }

    /// From raw base64url keys. The public key may be left out; it is then
    /// derived from the private key.
    pub fn from_base64url(public: Option<&str>, private: &str) -> Result<Self, VapidError> {
        let private = b64::decode(private).map_err(|_| VapidError::PrivateKey)?;
        if private.len() != 32 {
            return Err(VapidError::PrivateKey);
        }
        let derived: [u8; 65] = EcdhPrivateKey::from_private_key(&ECDH_P256, &private)
            .map_err(|_| VapidError::PrivateKey)?
            .compute_public_key()
            .map_err(|_| VapidError::PrivateKey)?
            .as_ref()
            .try_into()
            .map_err(|_| VapidError::PrivateKey)?;
        if let Some(public) = public {
            let given = b64::decode(public).map_err(|_| VapidError::PublicKey)?;
            if given.len() != 65 || given[0] != 4 {
                return Err(VapidError::PublicKey);
            }
            if given != derived {
                return Err(VapidError::KeyMismatch);
            }
        }
        let pair = EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &private, &derived)
            .map_err(|_| VapidError::PrivateKey)?;
        Self::from_pair(pair)
    }

    /// From a PEM private key: `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY`
    /// (SEC 1, what `openssl ecparam -genkey` writes).
    pub fn from_pem(pem: &str) -> Result<Self, VapidError> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .filter(|l| !l.contains(':'))
            .collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| VapidError::PrivateKey)?;
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| VapidError::PrivateKey)?;
        Self::from_pair(pair)
    }

    /// The public key, 65 bytes uncompressed.
    pub fn public_key(&self) -> &[u8; 65] {
        &self.public
    }

    /// The public key as base64url: the browser's `applicationServerKey`.
    pub fn public_key_base64url(&self) -> String {
        b64::encode(self.public)
    }

    /// The private scalar as base64url.
    pub fn private_key_base64url(&self) -> String {
        AsBigEndian::<EcPrivateKeyBin>::as_be_bytes(&self.pair.private_key())
            .map(|b| b64::encode(b.as_ref()))
            .unwrap_or_default()
    }

    /// Both keys, as web-push prints them.
    pub fn to_json(&self) -> VapidKeysJson {
        VapidKeysJson { public_key: self.public_key_base64url(), private_key: self.private_key_base64url() }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, VapidError> {
        let sig = self.pair.sign(&SystemRandom::new(), message).map_err(|_| VapidError::Crypto)?;
        Ok(sig.as_ref().to_vec())
    }
}

/// A VAPID subject: a `mailto:` or `https:` URI where the push service can
/// reach the sender's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapidSubject(String);

impl VapidSubject {
    /// Checks the scheme.
    pub fn new(subject: &str) -> Result<Self, VapidError> {
        let s = subject.trim();
        let ok = match s.split_once(':') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mailto") => rest.contains('@'),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
                rest.starts_with("//") && url::Url::parse(s).is_ok_and(|u| u.host().is_some())
            }
            _ => false,
        };
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(VapidError::Subject(subject.to_owned()))
        }
    }

    /// The subject text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why Apple's push service would refuse this subject, if it would:
    /// it answers 403 `BadJwtToken` to subjects that FCM and Mozilla accept,
    /// such as a `mailto:` on `localhost` or on a reserved domain
    /// (pywebpush#175, web-push-php#406, webpush-go#81). Refused: a host
    /// that is `localhost`, an IP address, has no dot, ends in `.localhost`,
    /// `.local`, `.invalid`, `.test` or `.example`, or is (under)
    /// `example.com`, `example.net` or `example.org` (RFC 2606, RFC 6761).
    pub fn apple_rejects(&self) -> Option<String> {
        let host = url::Url::parse(&self.0)
            .ok()
            .filter(|u| u.scheme() == "https")
            .and_then(|u| u.host_str().map(str::to_owned))
            .or_else(|| self.0.rsplit_once('@').map(|(_, h)| h.to_owned()))?;
        let host = host.trim_matches(['[', ']']).trim_end_matches('.').to_ascii_lowercase();
        let under = |d: &str| crate::push_service::host_is_under(&host, d);
        let why = if host.parse::<std::net::IpAddr>().is_ok() {
            "an IP address"
        } else if host == "localhost" || under("localhost") {
            "localhost"
        } else if !host.contains('.') {
            "a name without a domain"
        } else if ["local", "invalid", "test", "example"].iter().any(|tld| under(tld)) {
            "a reserved or local top-level domain"
        } else if ["example.com", "example.net", "example.org"].iter().any(|d| under(d)) {
            "a reserved example domain"
        } else {
            return None;
        };
        Some(format!(
            "VAPID subject {:?} is on {host} ({why}): Apple's push service answers 403 BadJwtToken to it, so \
             Safari subscribers would get nothing. Use a mailto: address or https: URL on a domain you own \
             (e.g. mailto:push@yourcompany.com)",
            self.0
        ))
    }
}

#[derive(Clone)]
struct CachedToken {
    /// `vapid t=…, k=…`.
    header: HeaderValue,
    /// `WebPush <jwt>`, the same token in the draft's scheme (`aesgcm`).
    webpush: HeaderValue,
    expires: u64,
}

/// Which `Authorization` scheme a push request carries its token in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VapidScheme {
    /// RFC 8292: `Authorization: vapid t=<jwt>, k=<key>`. With `aes128gcm`.
    Vapid,
    /// The draft's `Authorization: WebPush <jwt>` with the key in
    /// `Crypto-Key: p256ecdsa=<key>`: what web-push (Node), pywebpush and
    /// web-push-php send with `aesgcm`, and what the services that still
    /// take `aesgcm` expect.
    WebPush,
}

/// Signs VAPID tokens, one per audience, and reuses each until
/// [`REFRESH_MARGIN`] before it expires.
pub struct VapidSigner {
    key: Arc<VapidKey>,
    subject: VapidSubject,
    validity: Duration,
    k: String,
    cache: Mutex<HashMap<String, CachedToken>>,
}

impl fmt::Debug for VapidSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidSigner").field("subject", &self.subject).field("k", &self.k).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

/// `{"typ":"JWT","alg":"ES256"}`, base64url.
const JWT_HEADER: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9";

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl VapidSigner {
    /// A signer with the default 12-hour token lifetime.
    pub fn new(key: Arc<VapidKey>, subject: VapidSubject) -> Self {
        let k = key.public_key_base64url();
        Self { key, subject, validity: DEFAULT_VALIDITY, k, cache: Mutex::new(HashMap::new()) }
    }

    /// Sets the token lifetime (at most 24 hours).
    pub fn with_validity(mut self, validity: Duration) -> Result<Self, VapidError> {
        if validity.is_zero() || validity > MAX_VALIDITY {
            return Err(VapidError::Validity);
        }
        self.validity = validity;
        Ok(self)
    }

    /// The key this signer uses.
    pub fn key(&self) -> &VapidKey {
        &self.key
    }

    /// The `sub` claim every token of this signer carries.
    pub fn subject(&self) -> &VapidSubject {
        &self.subject
    }

    /// A signed JWT for `audience` (an origin such as `https://host:8443`),
    /// expiring `validity` after `now`. Not cached.
    pub fn token(&self, audience: &str, now: SystemTime) -> Result<(String, u64), VapidError> {
        let exp = unix(now) + self.validity.as_secs();
        let claims = serde_json::to_vec(&Claims { aud: audience, exp, sub: self.subject.as_str() })
            .map_err(|_| VapidError::Crypto)?;
        let mut jwt = format!("{JWT_HEADER}.{}", b64::encode(claims));
        let sig = self.key.sign(jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&b64::encode(sig));
        Ok((jwt, exp))
    }

    /// The `Authorization` header value for `audience` in RFC 8292's
    /// `vapid` scheme, from the cache when a token for it has more than
    /// [`REFRESH_MARGIN`] left.
    pub fn authorization(&self, audience: &str, now: SystemTime) -> Result<HeaderValue, VapidError> {
        self.authorization_in(VapidScheme::Vapid, audience, now)
    }

    /// The `Authorization` header value for `audience` in `scheme`, cached
    /// as [`authorization`](Self::authorization). With
    /// [`VapidScheme::WebPush`] the key goes in `Crypto-Key` as
    /// `p256ecdsa=` + [`public_key_base64url`](Self::public_key_base64url).
    pub fn authorization_in(
        &self,
        scheme: VapidScheme,
        audience: &str,
        now: SystemTime,
    ) -> Result<HeaderValue, VapidError> {
        let now_s = unix(now);
        let fresh = |c: &CachedToken| c.expires > now_s + REFRESH_MARGIN.as_secs().min(self.validity.as_secs() / 2);
        let pick = |c: &CachedToken| match scheme {
            VapidScheme::Vapid => c.header.clone(),
            VapidScheme::WebPush => c.webpush.clone(),
        };
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.get(audience).filter(|c| fresh(c)) {
                return Ok(pick(c));
            }
        }
        let (jwt, expires) = self.token(audience, now)?;
        let header = HeaderValue::try_from(format!("vapid t={jwt}, k={}", self.k)).map_err(|_| VapidError::Crypto)?;
        let webpush = HeaderValue::try_from(format!("WebPush {jwt}")).map_err(|_| VapidError::Crypto)?;
        let cached = CachedToken { header, webpush, expires };
        let value = pick(&cached);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(audience.to_owned(), cached);
        }
        Ok(value)
    }

    /// The public key, raw base64url (`k=`, `p256ecdsa=`).
    pub fn public_key_base64url(&self) -> &str {
        &self.k
    }
}

/// Why a push service refuses a VAPID `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No usable token or key in the headers.
    #[error("malformed VAPID authorization: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the key `k`.
    #[error("VAPID signature does not verify")]
    Signature,
    /// `aud` is not this push service's origin.
    #[error("VAPID aud {got:?} is not {want:?}")]
    Audience {
        /// The token's audience.
        got: String,
        /// This service's origin.
        want: String,
    },
    /// `exp` is in the past or more than 24 hours ahead.
    #[error("VAPID exp is {0}")]
    Expiry(&'static str),
    /// No `sub` claim, or one that is not mailto: or https:.
    #[error("VAPID sub is missing or not a mailto: or https: URI")]
    Subject,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedVapid {
    /// The public key `k`, 65 bytes.
    #[serde(serialize_with = "ser_b64")]
    pub public_key: Vec<u8>,
    /// The `sub` claim.
    pub subject: String,
    /// The `exp` claim.
    pub expires: u64,
    /// The scheme used: `vapid` (RFC 8292) or the draft's `WebPush`.
    pub scheme: &'static str,
}

fn ser_b64<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&b64::encode(v))
}

#[derive(Deserialize)]
struct VerifyClaims {
    aud: Option<String>,
    exp: Option<u64>,
    sub: Option<String>,
}

/// Verifies an `Authorization` header as a push service does: the RFC 8292
/// `vapid t=…, k=…` scheme, or the older `WebPush <jwt>` with the key in
/// `Crypto-Key: p256ecdsa=…`. Checks the ES256 signature, that `aud` is
/// `audience`, that `exp` is ahead but at most 24 hours (plus a minute of
/// clock skew), and that `sub` is present.
pub fn verify(
    authorization: &str,
    crypto_key: Option<&str>,
    audience: &str,
    now: SystemTime,
) -> Result<VerifiedVapid, VerifyError> {
    let auth = authorization.trim();
    let (scheme, rest) = auth.split_once(' ').ok_or(VerifyError::Malformed("no scheme"))?;
    let (jwt, k, scheme) = if scheme.eq_ignore_ascii_case("vapid") {
        let t = crate::ece::header_param(rest, "t").ok_or(VerifyError::Malformed("no t= parameter"))?;
        let k = crate::ece::header_param(rest, "k").ok_or(VerifyError::Malformed("no k= parameter"))?;
        (t, k, "vapid")
    } else if scheme.eq_ignore_ascii_case("webpush") {
        let k = crypto_key
            .and_then(|c| crate::ece::header_param(c, "p256ecdsa"))
            .ok_or(VerifyError::Malformed("WebPush scheme without Crypto-Key p256ecdsa="))?;
        (rest.trim(), k, "WebPush")
    } else {
        return Err(VerifyError::Malformed("scheme is neither vapid nor WebPush"));
    };
    let k = b64::decode(k).map_err(|_| VerifyError::Malformed("k is not base64url"))?;
    if k.len() != 65 {
        return Err(VerifyError::Malformed("k is not a 65-byte P-256 key"));
    }
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(VerifyError::Malformed("token is not a JWS compact serialization"));
    };
    let header: serde_json::Value = b64::decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed("JWT header is not base64url JSON"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
        return Err(VerifyError::Malformed("JWT alg is not ES256"));
    }
    let sig = b64::decode(s).map_err(|_| VerifyError::Malformed("JWT signature is not base64url"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &k)
        .verify(&jwt.as_bytes()[..h.len() + 1 + c.len()], &sig)
        .map_err(|_| VerifyError::Signature)?;
    let claims: VerifyClaims = b64::decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed("JWT claims are not base64url JSON"))?;
    let aud = claims.aud.unwrap_or_default();
    if aud != audience {
        return Err(VerifyError::Audience { got: aud, want: audience.to_owned() });
    }
    let now = unix(now);
    match claims.exp {
        None => return Err(VerifyError::Expiry("missing")),
        Some(exp) if exp <= now => return Err(VerifyError::Expiry("in the past")),
        Some(exp) if exp > now + MAX_VALIDITY.as_secs() + 60 => {
            return Err(VerifyError::Expiry("more than 24 hours ahead"))
        }
        Some(_) => {}
    }
    let subject = claims.sub.ok_or(VerifyError::Subject)?;
    VapidSubject::new(&subject).map_err(|_| VerifyError::Subject)?;
    Ok(VerifiedVapid { public_key: k, subject, expires: claims.exp.unwrap_or_default(), scheme })
}

/// Verifies an ES256 signature over `message` with a raw public key; for
/// tests that check tokens by hand.
pub fn verify_es256(public_key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key).verify(message, sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> VapidSigner {
        VapidSigner::new(Arc::new(VapidKey::generate().unwrap()), VapidSubject::new("mailto:ops@example.com").unwrap())
    }

    #[test]
    fn raw_keys_round_trip_and_public_key_is_derived() {
        let key = VapidKey::generate().unwrap();
        let json = key.to_json();
        let back = VapidKey::from_base64url(Some(&json.public_key), &json.private_key).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let derived = VapidKey::from_base64url(None, &json.private_key).unwrap();
        assert_eq!(derived.public_key(), key.public_key());
        let other = VapidKey::generate().unwrap().public_key_base64url();
        assert_eq!(VapidKey::from_base64url(Some(&other), &json.private_key).unwrap_err(), VapidError::KeyMismatch);
        assert_eq!(VapidKey::from_base64url(None, "AAAA").unwrap_err(), VapidError::PrivateKey);
    }

    #[test]
    fn reads_pkcs8_and_sec1_pem() {
        let key = VapidKey::generate().unwrap();
        let pkcs8 = key.pair.to_pkcs8v1().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        assert_eq!(VapidKey::from_pem(&pem).unwrap().public_key(), key.public_key());

        use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der};
        let sec1 = AsDer::<EcPrivateKeyRfc5915Der>::as_der(&key.pair.private_key()).unwrap();
        let pem = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(sec1.as_ref())
        );
        assert_eq!(VapidKey::from_pem(&pem).unwrap().public_key(), key.public_key());
        assert_eq!(VapidKey::from_pem("nonsense").unwrap_err(), VapidError::PrivateKey);
    }

    #[test]
    fn subjects_are_checked_and_localhost_warned_about() {
        for ok in ["mailto:push@tocsin.org", "https://shop.co.uk/contact", "mailto:a@mail.example.co"] {
            assert_eq!(VapidSubject::new(ok).unwrap().apple_rejects(), None, "{ok}");
        }
        for bad in [
            "https://localhost",
            "mailto:me@localhost",
            "mailto:me@LOCALHOST.",
            "mailto:a@dev.localhost",
            "mailto:a@printer.local",
            "mailto:a@x.invalid",
            "mailto:a@x.test",
            "https://x.example/",
            "mailto:a@example.com",
            "mailto:a@mail.example.org",
            "https://example.net/",
            "mailto:a@127.0.0.1",
            "https://[::1]/",
            "mailto:a@intranet",
        ] {
            let why = VapidSubject::new(bad).unwrap().apple_rejects();
            assert!(why.as_deref().is_some_and(|w| w.contains("BadJwtToken")), "{bad}");
        }
        for bad in ["", "http://example.com", "example@b.c", "mailto:", "https:nohost"] {
            assert!(VapidSubject::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_has_the_rfc8292_shape_and_verifies() {
        let s = signer();
        let now = SystemTime::now();
        let h = s.authorization("https://push.example.net:8443", now).unwrap();
        let h = h.to_str().unwrap();
        assert!(h.starts_with("vapid t=ey"));
        assert!(h.ends_with(&format!(", k={}", s.key().public_key_base64url())));
        let v = verify(h, None, "https://push.example.net:8443", now).unwrap();
        assert_eq!(v.subject, "mailto:ops@example.com");
        assert_eq!(v.expires, unix(now) + 12 * 3600);
        assert_eq!(v.public_key, s.key().public_key());
        assert!(matches!(verify(h, None, "https://push.example.net", now), Err(VerifyError::Audience { .. })));
        let later = now + Duration::from_secs(13 * 3600);
        assert_eq!(verify(h, None, "https://push.example.net:8443", later), Err(VerifyError::Expiry("in the past")));
    }

    #[test]
    fn tokens_are_cached_per_audience_until_near_expiry() {
        let s = signer();
        let t0 = SystemTime::now();
        let a = s.authorization("https://a.example", t0).unwrap();
        assert_eq!(a, s.authorization("https://a.example", t0 + Duration::from_secs(3600)).unwrap());
        assert_ne!(a, s.authorization("https://b.example", t0).unwrap());
        let near = t0 + DEFAULT_VALIDITY - REFRESH_MARGIN + Duration::from_secs(1);
        assert_ne!(a, s.authorization("https://a.example", near).unwrap());
    }

    #[test]
    fn a_forged_token_is_refused() {
        let s = signer();
        let now = SystemTime::now();
        let h = s.authorization("https://a.example", now).unwrap();
        let other = VapidKey::generate().unwrap().public_key_base64url();
        let forged = h.to_str().unwrap().replace(&s.key().public_key_base64url(), &other);
        assert_eq!(verify(&forged, None, "https://a.example", now), Err(VerifyError::Signature));
    }

    #[test]
    fn validity_is_capped_at_24_hours() {
        assert_eq!(signer().with_validity(Duration::from_secs(25 * 3600)).unwrap_err(), VapidError::Validity);
        assert!(signer().with_validity(Duration::from_secs(3600)).is_ok());
    }
}
