//! Sending Web Push requests.
//!
//! - [`client`]: [`PushClient`], one pooled HTTP client for every push
//!   service (HTTP/2 over rustls where the service offers it, HTTP/1.1 with
//!   keep-alive elsewhere, `TCP_NODELAY` on), which turns each answer into an
//!   [`Outcome`](tocsin_protocol::Outcome).
//! - [`fanout`]: one message to many subscriptions, concurrently, with
//!   retries that honour `Retry-After`: the bare sender behind `tocsin send`.
//! - [`engine`]: the loop behind `tocsin serve` that takes stored messages
//!   through to `done`, checkpointing a cursor per page.
//!
//! Both senders run thread per core: each thread has a single-threaded
//! runtime, its own client (its own connections) and a fixed set of worker
//! tasks, so a delivery's encryption, request and connection stay on one
//! thread.

#![warn(missing_docs)]

pub mod client;
pub mod engine;
pub mod fanout;

pub use client::{ClientConfig, ClientError, PushClient, Transport};
pub use fanout::{deliver_one, BroadcastConfig, Progress, Summary};
