//! Tocsin's operations: what creating an app, rotating or setting up its
//! VAPID key, and making an API token mean, whoever asks. The HTTP API
//! (`tocsin-server`) and the command line (`tocsin`) both call these, so
//! a rule lives in one place; neither HTTP nor a database is in this crate
//! (it sees storage through the role traits of `tocsin-store-api`).

#![warn(missing_docs)]

pub mod apps;
pub mod subscriptions;
pub mod tokens;
pub mod webhooks;

pub use tocsin_store_api::now_ms;
