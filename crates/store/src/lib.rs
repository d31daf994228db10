//! Tocsin's storage on SQLite and PostgreSQL: [`SqlStore`], which implements
//! the [`Store`] interface of `tocsin-store-api` (re-exported here, so that
//! users of this crate need only it).
//!
//! Both backends run the same SQL through sqlx's `Any` driver: the queries
//! Tocsin needs (upserts with `ON CONFLICT`, `RETURNING`, keyset paging) are
//! written once in the subset both dialects share. What differs lives in
//! [`Backend`]: the migrations (`migrations/sqlite`, `migrations/postgres`),
//! connection set-up (WAL, busy timeout, foreign keys for SQLite), and, where
//! work is claimed by several nodes, PostgreSQL's row locks.
//!
//! The store knows nothing of HTTP or encryption: it keeps subscriptions,
//! messages with their counters and cursors, VAPID keys and token hashes.

#![warn(missing_docs)]

#[cfg(test)]
mod contract;
mod sql;
#[cfg(test)]
mod testutil;

pub use sql::{Backend, BackupError, SqlStore};
pub use tocsin_store_api::*;
