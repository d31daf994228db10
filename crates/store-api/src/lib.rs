//! Tocsin's storage interface: the [`Store`] trait and its role traits
//! (one per concern: [`AppStore`], [`SubscriptionStore`], [`MessageStore`],
//! [`WorkStore`], [`TokenStore`], [`StatsStore`]), the values it keeps
//! ([`model`]), the outbox's events ([`event`], [`Outbox`]) and its error,
//! with no database in it.
//!
//! The SQL implementation is `tocsin-store` (SQLite and PostgreSQL through
//! sqlx); this crate exists so that the code above the store (the delivery
//! engine, the operations, the HTTP API) depends on the interface only, and
//! can be tested against `memory::MemoryStore` (feature `memory`) with
//! tokio's paused clock. `tocsin-store`'s contract suite holds all three
//! stores to the same behaviour.
//!
//! # Claims
//! Work that several workers or nodes may take (a shard of a broadcast, a
//! batch of retries) is taken with a *claim*: a lease with an expiry and a
//! token that is new for every claim. Every write that belongs to the claim
//! (a checkpoint, its counters, retries and deletions; recording retries)
//! names the token, and is refused, writing nothing, once someone else has
//! claimed the work: a worker whose lease ran out cannot record a page that
//! its successor sends again, so counts stay exact.

#![warn(missing_docs)]

pub mod event;
#[cfg(feature = "memory")]
pub mod memory;
pub mod model;
pub mod outbox;

pub use event::{Event, NewEvent};
pub use model::*;
pub use outbox::*;
pub use tocsin_audience;

use async_trait::async_trait;

/// A boxed error from the database driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A storage failure. The API answers it with a 500 and changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(BoxError),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(BoxError),
    /// A row could not be turned back into a value (corrupt data).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The store's writer task has stopped (the process is shutting down).
    #[error("the store is shutting down")]
    Closed,
    /// The write collides with another app's row (an endpoint or a VAPID
    /// key stored in another app); nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// The endpoint is stored with other keys: only the browser that holds
    /// a stored subscription's auth secret may post it again, and a real
    /// browser never changes the keys of an endpoint. Nothing was written.
    #[error("this endpoint is stored with other keys; re-posting it needs the same keys.auth")]
    NotProven,
    /// The database did not answer within the store's timeout, or the
    /// connection to it failed: nothing is known to be written, and the
    /// same call may succeed later (answered 503 `database-unavailable`).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The disk under the database is full (SQLite): the write was rolled
    /// back whole, and succeeds again once there is room (503
    /// `storage-full`).
    #[error("the database's disk is full")]
    StorageFull,
    /// The database was migrated by a newer release of Tocsin: this binary
    /// does not know the named migration and refuses to run on it.
    #[error("the database was migrated by a newer release (migration {0} is unknown to this one): upgrade tocsin")]
    TooNew(i64),
    /// A change of tags would leave the subscription with more than 50;
    /// nothing was written (400 `invalid-tags`).
    #[error("a subscription carries at most 50 tags")]
    TooManyTags,
    /// The database URL is not `sqlite:` or `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    Url(String),
}

impl StoreError {
    /// Whether the same call may succeed once the database is back: it
    /// did not answer, or its disk was full. Work waiting to be recorded
    /// is kept and written again rather than given up.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::StorageFull)
    }
}

/// How long one store call may take by default, waiting for a connection
/// included, before it fails as [`StoreError::Unavailable`].
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Result of a store call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything Tocsin keeps: the sum of the role traits. Implemented by
/// `tocsin_store::SqlStore` for SQLite and PostgreSQL, and by
/// `memory::MemoryStore` for tests (the contract suite in `tocsin-store`
/// runs on all three). Code that needs one concern takes its role trait.
#[async_trait]
pub trait Store:
    AppStore + SubscriptionStore + SegmentStore + MessageStore + WorkStore + TokenStore + StatsStore + Send + Sync + 'static
{
    /// Whether the store's connections do their I/O on the runtime that
    /// opened them, so that calls from other runtimes should be sent back
    /// to it (PostgreSQL's sockets do; SQLite's connections run on threads
    /// of their own and may be called from any runtime).
    fn bound_to_runtime(&self) -> bool {
        true
    }

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;
}

/// The part of [`Store`] for apps and their VAPID keys, and the server's own secrets.
#[async_trait]
pub trait AppStore: Send + Sync {
    /// Every app, by id.
    async fn apps(&self) -> Result<Vec<AppRow>>;
    /// The app with this name.
    async fn app(&self, name: &str) -> Result<Option<AppRow>>;
    /// The delivery rules of `app` (none for an app that does not exist).
    async fn app_rules(&self, app: AppId) -> Result<tocsin_audience::rules::DeliveryRules>;
    /// Replaces the delivery rules of `app`; false when there is no such app.
    async fn set_app_rules(&self, app: AppId, rules: &tocsin_audience::rules::DeliveryRules) -> Result<bool>;
    /// Creates an app with its first VAPID key (current); `None` when the
    /// name is taken.
    async fn create_app(&self, new: &NewApp, public_key: &str, private_key: &str, now: i64) -> Result<Option<AppRow>>;
    /// The VAPID key new subscriptions of `app` are made for, if any.
    async fn current_vapid_key(&self, app: AppId) -> Result<Option<VapidKeyRow>>;
    /// Stores a key pair for `app` (or finds it, by public key) and makes
    /// it the app's current key. A public key of another app is a
    /// [`StoreError::Conflict`].
    async fn make_vapid_key_current(
        &self,
        app: AppId,
        public_key: &str,
        private_key: &str,
        now: i64,
    ) -> Result<VapidKeyRow>;
    /// Stores a key pair for `app` without making it current (a key that
    /// imported subscriptions were made with), or finds it by public key.
    async fn add_vapid_key(&self, app: AppId, public_key: &str, private_key: &str, now: i64) -> Result<VapidKeyRow>;
    /// A key by id, with its app's subject (for the engine: the id comes
    /// from a subscription, and a subscription's key is of its own app).
    async fn vapid_key(&self, id: i64) -> Result<Option<VapidKeyRow>>;
    /// The id of `app`'s key with this public key (base64url), if it has
    /// one: which key a browser names as its `applicationServerKey`.
    async fn vapid_key_id(&self, app: AppId, public_key: &str) -> Result<Option<i64>>;
    /// The keys of `app`, oldest first, with how many subscriptions each
    /// still has.
    async fn vapid_keys(&self, app: AppId) -> Result<Vec<VapidKeyInfo>>;
    /// Retires (deletes) a key of `app`: refused for the current key, and
    /// for a key that subscriptions still use unless `force`, which deletes
    /// them with it (counted as removed at `now`).
    async fn retire_vapid_key(&self, app: AppId, id: i64, force: bool, now: i64) -> Result<RetireKey>;
    /// The server secret named `name`: the stored one, or `candidate`,
    /// stored now, when there is none (the first node to start makes it;
    /// every node then reads the same).
    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String>;
}

/// The part of [`Store`] for subscriptions: stored, proven, replaced, removed, paged.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Inserts, or updates the row with the same endpoint in the same app
    /// (its expiration time, topics, user, VAPID key; never its keys). An
    /// endpoint stored in another app is a [`StoreError::Conflict`]; one
    /// stored with other keys is [`StoreError::NotProven`] (the keys are
    /// compared in constant time); either writes nothing.
    async fn upsert_subscription(&self, new: &NewSubscription, now: i64) -> Result<StoredSubscription>;
    /// Stores many subscriptions in one transaction (a bulk import), in
    /// order: a later copy of an endpoint wins. Returns the rows in order,
    /// or the first refusal (as for [`SubscriptionStore::upsert_subscription`]).
    async fn upsert_subscriptions(&self, new: &[NewSubscription], now: i64) -> Result<Vec<StoredSubscription>>;
    /// Deletes by endpoint when the auth secret matches (counted as removed
    /// at `now`); true when a row went.
    async fn delete_subscription_by_endpoint(&self, app: AppId, endpoint: &str, auth: &str, now: i64) -> Result<bool>;
    /// One subscription of `app` by endpoint.
    async fn subscription_by_endpoint(&self, app: AppId, endpoint: &str) -> Result<Option<StoredSubscription>>;
    /// The browser's new subscription `new_id` replaces its old one
    /// `old_id` (`oldEndpoint`): the new keeps the old one's creation time,
    /// and the old goes without counting as an unsubscription. True when
    /// the old one went.
    async fn replace_subscription(&self, app: AppId, old_id: i64, new_id: i64, now: i64) -> Result<bool>;
    /// Deletes a subscription of `app` by id (counted as removed at `now`);
    /// true when a row went.
    async fn delete_subscription(&self, app: AppId, id: i64, now: i64) -> Result<bool>;
    /// One subscription of `app`.
    async fn app_subscription(&self, app: AppId, id: i64) -> Result<Option<StoredSubscription>>;
    /// One subscription, whatever its app (for the engine: the id comes
    /// from its own work).
    async fn subscription(&self, id: i64) -> Result<Option<StoredSubscription>>;
    /// Subscriptions of `app` matching `target` (and, when given, in one
    /// of `zones`) with id above `after` (and at most `upto`), by id, at
    /// most `limit` of them; a row that cannot be read is
    /// [`PageRow::Unreadable`], not an error of the whole page.
    async fn page_subscriptions(
        &self,
        app: AppId,
        target: &Target,
        zones: Option<&tocsin_audience::rules::ZoneFilter>,
        after: i64,
        upto: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PageRow>>;
    /// How many subscriptions of `app` match `target`.
    async fn count_subscriptions(&self, app: AppId, target: &Target) -> Result<i64>;
    /// Applies a change of tags (a backend's `PATCH …/tags`) to one
    /// subscription of `app`, or to every subscription of a user, in one
    /// transaction, writing a `subscription.updated` event for each one
    /// whose tags changed. A change that would leave any of them with more
    /// than 50 tags writes nothing ([`TagsPatched::TooMany`]).
    async fn patch_tags(
        &self,
        app: AppId,
        of: &TagsOf,
        patch: &tocsin_audience::TagPatch,
        now: i64,
    ) -> Result<TagsPatched>;
}

/// The part of [`Store`] for an app's named segments.
#[async_trait]
pub trait SegmentStore: Send + Sync {
    /// Stores a segment; `false` when the app has one of that name.
    async fn create_segment(&self, app: AppId, segment: &SegmentRow) -> Result<bool>;
    /// The app's segments, by name.
    async fn segments(&self, app: AppId) -> Result<Vec<SegmentRow>>;
    /// One segment of the app.
    async fn segment(&self, app: AppId, name: &str) -> Result<Option<SegmentRow>>;
    /// Deletes a segment; true when it existed. Messages aimed at it that
    /// are not sent yet then reach no one.
    async fn delete_segment(&self, app: AppId, name: &str) -> Result<bool>;
}

/// The part of [`Store`] for messages as the API sees them: stored, read, cancelled, purged, and the interactions their notifications report.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Counts a `shown` or `clicked` event for a message of `app` (a click
    /// with the notification's `action`, if one was clicked), once per
    /// `recipient` (the delivery: `s:<subscription id>`, or `a:<address>`
    /// when the reporter named no subscription); a repeat counts nothing.
    /// False when there is no such message.
    async fn record_interaction(
        &self,
        app: AppId,
        message_id: &str,
        recipient: &str,
        interaction: Interaction,
        action: Option<&str>,
        now: i64,
    ) -> Result<bool>;
    /// Stores a message, unless one with the same idempotency key exists;
    /// returns the stored one and whether it was created now.
    async fn insert_message(&self, new: &NewMessage) -> Result<(Message, bool)>;
    /// One message of `app`.
    async fn app_message(&self, app: AppId, id: &str) -> Result<Option<Message>>;
    /// One message, whatever its app (for the engine).
    async fn message(&self, id: &str) -> Result<Option<Message>>;
    /// Messages of `app`, newest first, created before `before` (a message
    /// id) if given.
    async fn list_messages(&self, app: AppId, before: Option<&str>, limit: i64) -> Result<Vec<Message>>;
    /// Cancels a message not yet done, and releases its work: its open
    /// shards are closed and its waiting retries dropped (`pendingRetry`
    /// goes to 0), so no node claims any of it again. A page already in
    /// flight may still record what it sent. Returns the message as it is now.
    async fn cancel_message(&self, app: AppId, id: &str, now: i64) -> Result<Option<Message>>;
    /// One example of each reason of a message's failures (the first one
    /// recorded), by reason.
    async fn message_failure_examples(&self, id: &str) -> Result<Vec<(String, String)>>;
    /// A message's failures by reason.
    async fn message_failures(&self, id: &str) -> Result<Vec<(String, i64)>>;
    /// For a message at a local time that has started: its waves' shards,
    /// by wave.
    async fn wave_progress(&self, id: &str) -> Result<Vec<WaveProgress>>;
    /// Deletes up to `limit` messages that are `done` or `cancelled` and
    /// were last updated before `before`, with their shards, retries and
    /// failures; their counts are added to their app's totals that `stats`
    /// keeps.
    /// Returns how many went (safe to run on several nodes at once).
    async fn purge_messages(&self, before: i64, limit: i64) -> Result<u64>;
}

/// The part of [`Store`] for the delivery engine's work: starting messages, claiming shards and retries under a token, checkpoints.
#[async_trait]
pub trait WorkStore: Send + Sync {
    /// Moves a message to `sending` (from `scheduled` or `queued`), counting
    /// its audience (within its app) and fixing its last subscription id, so that
    /// subscriptions added later are not part of it, and splits that id
    /// range into shards of about `shard_size` ids. A message at a local
    /// time gets that many shards per wave of its schedule not skipped,
    /// each claimable from its wave's instant and reaching its wave's
    /// zones; its audience is counted over those waves. False when another
    /// node started it first, or it was cancelled: a message starts once.
    async fn start_message(&self, id: &str, target: &Target, shard_size: i64, now: i64) -> Result<bool>;
    /// The oldest queued message, or scheduled one that is due.
    async fn next_startable_message(&self, now: i64) -> Result<Option<Message>>;
    /// Claims an unfinished shard of a `sending` message whose lease has run
    /// out (or was never taken) and whose wave's time has come, for
    /// `lease_ms`, under `claim`'s token.
    async fn claim_shard(&self, claim: &Claim, now: i64, lease_ms: i64) -> Result<Option<Shard>>;
    /// Extends the lease of a shard still held under its claim's token to
    /// `now + lease_ms` (a heartbeat while a page is in flight). False when
    /// the claim is lost: another claim took the shard, or it was closed.
    async fn renew_shard(&self, shard: &Shard, now: i64, lease_ms: i64) -> Result<bool>;
    /// Gives a shard still held under its claim's token back, claimable
    /// again from `until` (a throttled message whose next slot is later:
    /// no worker waits for it). False when the claim is lost.
    async fn defer_shard(&self, shard: &Shard, until: i64) -> Result<bool>;
    /// A throttled message's next free sending slot (ms since the epoch;
    /// 0 before its first reservation).
    async fn throttle_next(&self, message_id: &str) -> Result<i64>;
    /// Records a page in one transaction: the shard's cursor (and a lease
    /// renewed for `progress.lease_ms`), the message's counters, retries to
    /// schedule, subscriptions to delete; `progress.done` closes the shard.
    /// Nothing is written when the shard's claim token is no longer
    /// `shard.token` (another worker redoes the page): returns `None` then,
    /// else the message's state.
    async fn checkpoint_shard(
        &self,
        shard: &Shard,
        progress: &ShardProgress,
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<Option<MessageState>>;
    /// Claims up to `limit` retries that are due, for `lease_ms`, all under
    /// `claim`'s token.
    async fn claim_retries(&self, claim: &Claim, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<RetryItem>>;
    /// Gives back the retries of `message_id` held under `token`, due again
    /// at `until` (a throttled message whose next slot is later: no worker
    /// waits for it). False when none is held any more.
    async fn defer_retries(&self, message_id: &str, token: &str, until: i64) -> Result<bool>;
    /// Extends the lease of the retries still held under `token`. False when
    /// none is held any more.
    async fn renew_retries(&self, token: &str, now: i64, lease_ms: i64) -> Result<bool>;
    /// Records the attempts of retries claimed under `token`: each item is
    /// removed, or rescheduled when `outcome.retries` names it again;
    /// counters follow. Writes nothing and returns false unless every item
    /// is still held under `token`.
    async fn record_retries(
        &self,
        message_id: &str,
        token: &str,
        items: &[RetryItem],
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<bool>;
    /// Reserves `span_ms` of a throttled message's sending time (a batch's
    /// slots), after what any node reserved before (and not before `now`);
    /// returns when it begins. The nodes together then send at the
    /// message's rate.
    async fn reserve_sends(&self, message_id: &str, span_ms: i64, now: i64) -> Result<i64>;
    /// Marks a `sending` message `done` when no shard is open and no retry
    /// waits; true when it did.
    async fn try_finish_message(&self, id: &str, now: i64) -> Result<bool>;
    /// Ids of messages in `sending` (to finish those whose last shard
    /// closed on a node that stopped before it could mark them done).
    async fn sending_message_ids(&self) -> Result<Vec<String>>;
    /// Moves an A/B test's message on, in one transaction: when it is still
    /// in `step.from` (its state and `sendAt`), stores `step.rules`,
    /// `step.state` and `step.send_at`, and stores `step.children` (its
    /// variants' messages, or the winner's, each with `message.created`).
    /// False, writing nothing, when it had moved on: another node moved it,
    /// or it was cancelled.
    async fn advance_ab_test(&self, id: &str, step: &AbStep, now: i64) -> Result<bool>;
}

/// The part of [`Store`] for API tokens, kept as hashes.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token's hash with its name, scope and app (`None`: every
    /// app). An app that does not exist is a [`StoreError::Conflict`].
    async fn insert_token(&self, name: &str, hash: &str, scope: TokenScope, app: Option<AppId>, now: i64)
        -> Result<()>;
    /// The token with this hash, if it exists (was not revoked).
    async fn token(&self, hash: &str) -> Result<Option<TokenRow>>;
    /// Records that the token with this hash was used at `now`.
    async fn touch_token(&self, hash: &str, now: i64) -> Result<()>;
    /// Every token, by creation.
    async fn tokens(&self) -> Result<Vec<TokenRow>>;
    /// Revokes (deletes) the tokens named `name`; how many went.
    async fn revoke_token(&self, name: &str) -> Result<u64>;
}

/// The part of [`Store`] for totals and daily figures for `/v1/stats` and the dashboard.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Each UTC day of `app` from `first_day` to `last_day` (days since the
    /// epoch), in order: subscriptions created and removed, and messages
    /// created that day with their counts (purged messages are not in it).
    async fn daily_stats(&self, app: AppId, first_day: i64, last_day: i64) -> Result<Vec<DailyStats>>;
    /// How many subscriptions of `app` each endpoint host (with its port,
    /// if the endpoint names one) has.
    async fn count_by_host(&self, app: AppId) -> Result<Vec<(String, i64)>>;
    /// Totals of `app` for `/v1/stats`, purged messages included.
    async fn stats(&self, app: AppId) -> Result<Stats>;
}
