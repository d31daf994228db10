//! Webhooks: telling a site's backend what happened.
//!
//! Events are written to the outbox by the store, in the transaction of
//! what caused them, and queued for each webhook that wants them
//! (`tocsin_store_api::outbox`). This crate sends them:
//! - [`sign`]: Standard Webhooks signatures (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,…`), so that receivers
//!   verify them with that specification's libraries in any language;
//! - [`dispatch`]: workers that claim each webhook's next delivery under a
//!   lease, POST it, and retry it on the Standard Webhooks schedule (about
//!   a day, honouring `Retry-After`) with the same `webhook-id`;
//! - [`metrics`]: what became of deliveries.

#![warn(missing_docs)]

pub mod dispatch;
pub mod metrics;
pub mod redact;
pub mod sign;

pub use dispatch::{DispatchConfig, Dispatcher, DEFAULT_SCHEDULE};
pub use metrics::WebhookMetrics;
pub use redact::redact_url;
pub use sign::{new_secret, sign};
