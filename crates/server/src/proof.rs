//! What a caller of the public routes must prove, since nothing it says
//! about itself is taken on its word:
//!
//! - a user id: signed by the site's own backend, `userSignature` being the
//!   lowercase hex HMAC-SHA256 of the id's UTF-8 bytes under
//!   `--user-signing-secret` ([`UserIds`]);
//! - that a stored subscription is the caller's: its auth secret
//!   (`AuthSecret::matches`, constant-time), which only the browser that
//!   subscribed knows: replacing it (`oldEndpoint`), posting it again with
//!   other keys (refused), deleting it, sending it a test;
//! - that a `shown`/`clicked` event comes from a browser the message
//!   reached: the message's event token ([`EventTokens`]), which only its
//!   payload carried.
//!
//! Comparisons run in constant time.

use aws_lc_rs::hmac;
use serde_json::Value;

use crate::error::{ApiError, ErrorId};

/// How `userId` in a public subscription is treated.
pub enum UserIds {
    /// Refused (the default): with no secret the server cannot tell the
    /// user from anyone claiming to be them.
    Off,
    /// Taken on the client's word (`--trust-client-user-ids`, development only).
    Trusted,
    /// Accepted with a valid `userSignature` under this key.
    Signed(Box<hmac::Key>),
}

impl UserIds {
    /// From the flags: a secret wins over `trust`.
    pub fn new(secret: Option<&str>, trust: bool) -> Self {
        match secret.filter(|s| !s.is_empty()) {
            Some(s) => Self::Signed(Box::new(hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()))),
            None if trust => Self::Trusted,
            None => Self::Off,
        }
    }

    /// Whether `user_id` may be stored, given the request's `userSignature`.
    pub fn check(&self, user_id: &str, signature: Option<&Value>) -> Result<(), ApiError> {
        match self {
            Self::Trusted => Ok(()),
            Self::Off => Err(ApiError::new(
                ErrorId::UserIdsNotEnabled,
                "this server does not accept user ids from browsers: its operator has set no \
                 --user-signing-secret",
            )),
            Self::Signed(key) => {
                let tag = signature.and_then(Value::as_str).and_then(hex_decode);
                match tag {
                    Some(tag) if hmac::verify(key, user_id.as_bytes(), &tag).is_ok() => Ok(()),
                    _ => Err(ApiError::new(
                        ErrorId::InvalidUserSignature,
                        "userSignature must be the hex HMAC-SHA256 of userId under the server's signing secret, \
                         computed by the site's backend",
                    )),
                }
            }
        }
    }
}

/// Signs message ids for `POST /api/events`: the token is the base64url
/// HMAC-SHA256 of the message id under a key the server made for itself
/// (stored, so that every node has the same).
pub struct EventTokens(hmac::Key);

impl EventTokens {
    /// From the server's stored key.
    pub fn new(key: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()))
    }

    /// The token of a message.
    pub fn token(&self, message_id: &str) -> String {
        tocsin_protocol::b64::encode(hmac::sign(&self.0, message_id.as_bytes()))
    }

    /// Whether `token` is the message's (in constant time).
    pub fn check(&self, message_id: &str, token: Option<&str>) -> bool {
        token
            .and_then(|t| tocsin_protocol::b64::decode(t).ok())
            .is_some_and(|tag| hmac::verify(&self.0, message_id.as_bytes(), &tag).is_ok())
    }
}

/// The signature a site's backend gives a user id: lowercase hex
/// HMAC-SHA256 of the id under `secret`.
pub fn sign_user_id(secret: &str, user_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, user_id.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_hex_hmac_of_the_user_id() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign_user_id("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let ids = UserIds::new(Some("Jefe"), false);
        let good = Value::from(sign_user_id("Jefe", "alice"));
        assert!(ids.check("alice", Some(&good)).is_ok());
        assert!(ids.check("alice", Some(&Value::from(good.as_str().unwrap().to_uppercase()))).is_ok());
        for bad in
            [None, Some(Value::from("")), Some(Value::from("zz")), Some(Value::from(sign_user_id("Jefe", "bob")))]
        {
            assert_eq!(ids.check("alice", bad.as_ref()).unwrap_err().id, "invalid-user-signature");
        }
        assert_eq!(UserIds::new(None, false).check("alice", Some(&good)).unwrap_err().id, "user-ids-not-enabled");
        assert!(UserIds::new(None, true).check("alice", None).is_ok());
        assert!(UserIds::new(Some("Jefe"), true).check("alice", None).is_err(), "a secret wins over trust");
    }

    #[test]
    fn an_event_token_belongs_to_one_message_and_one_key() {
        let tokens = EventTokens::new("key-1");
        let t = tokens.token("m1");
        assert!(tokens.check("m1", Some(&t)));
        assert!(!tokens.check("m2", Some(&t)), "another message");
        assert!(!EventTokens::new("key-2").check("m1", Some(&t)), "another server");
        assert!(!tokens.check("m1", None));
        assert!(!tokens.check("m1", Some("!!")));
    }
}
