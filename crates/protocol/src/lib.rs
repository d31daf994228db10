//! The Web Push protocol, both directions, with no I/O in it.
//!
//! This crate is Tocsin's foundation: it knows the RFCs and nothing about
//! sockets, runtimes or databases.
//!
//! - [`subscription`]: a browser's `PushSubscription.toJSON()`, parsed into a
//!   [`Subscription`] that can only exist valid.
//! - [`ece`]: payload encryption, RFC 8291 over RFC 8188 `aes128gcm`, and the
//!   legacy `aesgcm` draft; decryption too, for the receiving side.
//! - [`vapid`]: RFC 8292 keys, the ES256 token signer with its per-audience
//!   cache, and the verifier a push service runs.
//! - [`request`]: an RFC 8030 push request (`TTL`, `Urgency`, `Topic`) as an
//!   [`http::Request`].
//! - [`outcome`]: what a push service's answer means for the sender.
//! - [`push_service`]: which vendor's push service an endpoint is, and
//!   [`push_service::QUIRKS`], what each does differently.
//! - [`declarative`]: Declarative Web Push messages (the W3C Push API's
//!   `web_push: 8030` JSON), checked and written.
//!
//! Cryptography comes from `aws-lc-rs` only, the fastest P-256 measured on
//! the machines Tocsin is built on, and the same backend rustls uses here.

#![warn(missing_docs)]

pub mod b64;
pub mod declarative;
pub mod ece;
pub mod error_text;
pub mod outcome;
pub mod push_service;
pub mod request;
pub mod subscription;
pub mod vapid;

pub use declarative::{Declarative, DeclarativeError};
pub use ece::ContentEncoding;
pub use outcome::{FailReason, Outcome, RetryReason};
pub use push_service::PushService;
pub use request::{PushOptions, PushRequestError, Topic, Ttl, Urgency};
pub use subscription::{AuthSecret, Subscription, SubscriptionError, UaPublicKey};
pub use vapid::{VapidError, VapidKey, VapidScheme, VapidSigner, VapidSubject};
