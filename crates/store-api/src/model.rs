//! The values the store keeps and returns.

use serde::{Deserialize, Serialize};
use tocsin_audience::rules::{DeliveryRules, LocalSchedule, ZoneFilter};
use tocsin_audience::{Language, TagPatch, Tags, TimeZoneName};
use tocsin_protocol::Subscription;

/// Which app a key, subscription, message or token belongs to.
///
/// Every store call on an app's data takes one, and every query it runs
/// carries `app_id = …`: an id of another app is not found. The server
/// makes these in one place (`tocsin_server::app`), from the request's path
/// and its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppId(pub i64);

impl AppId {
    /// The app named `default`, which exists from the first start and holds
    /// everything stored before apps existed; routes without an app prefix
    /// act on it.
    pub const DEFAULT: AppId = AppId(1);
}

/// The name of the default app.
pub const DEFAULT_APP: &str = "default";

/// Whether `name` is an app's name: a slug, `[a-z0-9-]{1,40}`.
pub fn valid_app_name(name: &str) -> bool {
    (1..=40).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An app: a site or product with its own VAPID identity, subscribers,
/// messages, tokens and settings. Settings left `None` fall back to the
/// server's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    /// Row id.
    pub id: AppId,
    /// Its slug, in `/apps/{name}/…` routes.
    pub name: String,
    /// The VAPID subject its pushes are signed with.
    pub vapid_subject: Option<String>,
    /// The secret its site's backend signs user ids with.
    pub user_signing_secret: Option<String>,
    /// Origins its browser routes answer with CORS headers.
    pub cors_origins: Option<Vec<String>>,
    /// Whether browsers may set their subscriptions' tags (`client-tags`).
    pub client_tags: Option<bool>,
    /// Its delivery rules: default time zone, quiet hours, caps, rate.
    pub rules: DeliveryRules,
    /// ms since the epoch.
    pub created_at: i64,
}

/// An app to create.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    /// Its slug ([`valid_app_name`]).
    pub name: String,
    /// The VAPID subject its pushes are signed with.
    pub vapid_subject: Option<String>,
    /// The secret its site's backend signs user ids with.
    pub user_signing_secret: Option<String>,
    /// Origins its browser routes answer with CORS headers.
    pub cors_origins: Option<Vec<String>>,
    /// Whether browsers may set their subscriptions' tags (`client-tags`);
    /// the server's setting when `None`.
    pub client_tags: Option<bool>,
}

/// A stored VAPID key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapidKeyRow {
    /// Row id; each subscription records the id of the key it was made for.
    pub id: i64,
    /// The app it belongs to.
    pub app_id: AppId,
    /// Raw public key, base64url.
    pub public_key: String,
    /// Raw private key, base64url.
    pub private_key: String,
    /// Its app's VAPID subject, when the app has one of its own.
    pub subject: Option<String>,
}

/// A VAPID key as `GET /v1/apps/{app}/vapid-keys` lists it: no private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapidKeyInfo {
    /// Row id.
    pub id: i64,
    /// Raw public key, base64url.
    pub public_key: String,
    /// Whether new subscriptions are made with it.
    pub current: bool,
    /// ms since the epoch.
    pub created_at: i64,
    /// Subscriptions still made with it.
    pub subscriptions: i64,
}

/// What retiring a key came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireKey {
    /// Deleted, with this many subscriptions still on it (only when forced).
    Retired {
        /// Subscriptions deleted with it.
        removed: i64,
    },
    /// The app has no such key.
    NotFound,
    /// Subscriptions still use it, and retiring was not forced.
    InUse(i64),
    /// It is the app's current key, which is never retired.
    Current,
}

/// The longest endpoint stored, in bytes. Real push services' endpoints are
/// a few hundred; PostgreSQL's unique index on endpoints cannot hold a row
/// much past 2,700 bytes, and a row it refuses would fail a whole batch of
/// upserts before being retried alone.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// A subscription to store.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// The validated subscription.
    pub subscription: Subscription,
    /// The application's user id, if it gave one; `None` keeps the stored one.
    pub user_id: Option<String>,
    /// Topics; `None` keeps the stored ones.
    pub topics: Option<Vec<String>>,
    /// Changes to its tags (merged into the stored ones: `null` removes a
    /// key); `None` changes none.
    pub tags: Option<TagPatch>,
    /// Its browser's language; `None` keeps the stored one.
    pub language: Option<Language>,
    /// Its browser's time zone; `None` keeps the stored one.
    pub time_zone: Option<TimeZoneName>,
    /// The VAPID key it was made for (a key of `app`).
    pub vapid_key_id: i64,
    /// When the caller did not say which key the subscription was made
    /// with (`vapid_key_id` is then the app's current one): a stored row
    /// with the same endpoint and keys keeps its own key, since it is the
    /// same subscription posted again (after a rotation, its browser still
    /// holds the key it subscribed with).
    pub keep_stored_key: bool,
    /// The app it belongs to.
    pub app: AppId,
}

impl NewSubscription {
    /// Its topics, each once, in the order given (`None`: keep the stored
    /// ones). A topic named twice is stored once, as in the topics table
    /// (the round-trip property test found `["", ""]` read back twice).
    pub fn topics_once(&self) -> Option<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        self.topics.as_ref().map(|t| t.iter().filter(|x| seen.insert(x.as_str())).cloned().collect())
    }
}

/// A row of a page of subscriptions: a subscription, or a row whose stored
/// data cannot be read back (written by an older release, or damaged). One
/// such row must not stop a broadcast: the engine counts it as failed
/// (`unreadable`) and goes on; listings skip it.
#[derive(Debug, Clone)]
// Nearly every row is a `Sub`, read once per delivery: boxing it to shrink
// the rare `Unreadable` would cost an allocation per delivery.
#[allow(clippy::large_enum_variant)]
pub enum PageRow {
    /// A subscription.
    Sub(StoredSubscription),
    /// A row that could not be read: its id, and why.
    Unreadable {
        /// The row's id (a page's cursor moves past it).
        id: i64,
        /// What was wrong with it.
        error: String,
    },
}

impl PageRow {
    /// The row's id.
    pub fn id(&self) -> i64 {
        match self {
            Self::Sub(s) => s.id,
            Self::Unreadable { id, .. } => *id,
        }
    }

    /// The subscription, if the row could be read.
    pub fn readable(self) -> Option<StoredSubscription> {
        match self {
            Self::Sub(s) => Some(s),
            Self::Unreadable { .. } => None,
        }
    }
}

/// A subscription as stored.
#[derive(Debug, Clone)]
pub struct StoredSubscription {
    /// Row id.
    pub id: i64,
    /// The browser's push subscription: endpoint and keys, validated.
    pub subscription: Subscription,
    /// The application's user id.
    pub user_id: Option<String>,
    /// The topics it follows (`target: {"topic"}` reaches it).
    pub topics: Vec<String>,
    /// The site's attributes of it (`plan = "pro"`), which segments and
    /// templates read.
    pub tags: Tags,
    /// Its browser's language (BCP 47, canonical case), as last reported.
    pub language: Option<String>,
    /// Its browser's IANA time zone, as last reported.
    pub time_zone: Option<String>,
    /// The VAPID key it was made for.
    pub vapid_key_id: i64,
    /// The app it belongs to.
    pub app_id: AppId,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
    /// When its browser last posted it (subscribe, `sync()`, `setTags`),
    /// ms since the epoch (`lastSeenAt` of segments).
    pub last_seen_at: i64,
    /// Its latest deliveries as the app's frequency caps need them
    /// ([`tocsin_audience::rules::SendHistory`]'s stored form); read only
    /// when a cap applies.
    pub send_history: Option<String>,
}

impl StoredSubscription {
    /// What a segment expression reads of it.
    pub fn as_subscriber(&self) -> tocsin_audience::expr::Subscriber<'_> {
        tocsin_audience::expr::Subscriber {
            tags: &self.tags,
            language: self.language.as_deref(),
            time_zone: self.time_zone.as_deref(),
            push_service: push_service_of(self.subscription.endpoint()),
            user_id: self.user_id.as_deref(),
            topics: &self.topics,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
        }
    }
}

/// The name of an endpoint's push service (`fcm`, `mozilla`, `apple`,
/// `wns`, `other`), as stored beside it for segments.
pub fn push_service_of(endpoint: &url::Url) -> &'static str {
    tocsin_protocol::push_service::PushService::of_host(endpoint.host_str().unwrap_or("")).as_str()
}

/// Who a message goes to. JSON: `{"all":true}`, `{"topic":"news"}`,
/// `{"userIds":[…]}`, `{"subscriptionIds":[…]}`, `{"segment":"vips"}`,
/// `{"where":"plan == \"pro\""}`. A segment's or an expression's
/// audience is evaluated as the message is sent, not when it is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// Every subscription.
    All(bool),
    /// Subscriptions with this topic.
    Topic(String),
    /// Subscriptions of these users.
    UserIds(Vec<String>),
    /// These subscriptions.
    SubscriptionIds(Vec<i64>),
    /// The subscriptions the app's named segment matches when the message
    /// is sent (none, if the segment is gone by then).
    Segment(String),
    /// The subscriptions this expression matches when the message is sent.
    Where(Condition),
    /// A part of another target's audience, for an A/B test: a variant's
    /// share of the sample, or the rest. Made by the server and the engine
    /// only (the API refuses it as a message's target).
    Sample {
        /// The audience it is a part of.
        of: Box<Target>,
        /// Which part.
        slice: tocsin_audience::rules::ab::SampleSlice,
    },
}

impl Target {
    /// The audience without its sample slices, and the slices (outermost
    /// first) a subscription must be in as well.
    pub fn peel(&self) -> (&Target, Vec<tocsin_audience::rules::ab::SampleSlice>) {
        let (mut t, mut slices) = (self, Vec::new());
        while let Target::Sample { of, slice } = t {
            slices.push(*slice);
            t = of;
        }
        (t, slices)
    }
}

/// A segment expression, kept with its text: serialized as the text it
/// prints (canonical), read by parsing.
#[derive(Debug, Clone)]
pub struct Condition {
    expr: tocsin_audience::Expr,
    text: String,
}

impl Condition {
    /// Parses an expression.
    pub fn parse(text: &str) -> Result<Self, tocsin_audience::ParseError> {
        Ok(Self::from(tocsin_audience::Expr::parse(text)?))
    }

    /// The parsed tree.
    pub fn expr(&self) -> &tocsin_audience::Expr {
        &self.expr
    }

    /// The expression as it prints.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<tocsin_audience::Expr> for Condition {
    fn from(expr: tocsin_audience::Expr) -> Self {
        Self { text: expr.to_string(), expr }
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Condition::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A named segment of an app.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    /// Its name, unique in its app (`[a-z0-9_-]{1,64}`).
    pub name: String,
    /// Who it matches.
    pub condition: Condition,
    /// ms since the epoch.
    pub created_at: i64,
}

/// Whether `name` is a segment's name: 1–64 of `[a-z0-9_-]`.
pub fn valid_segment_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whose tags a backend's change applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagsOf {
    /// One subscription.
    Subscription(i64),
    /// Every subscription of this user.
    User(String),
}

/// What a change of tags came to.
#[derive(Debug, Clone)]
pub enum TagsPatched {
    /// Applied to these subscriptions (none: no such subscription or user).
    Done(Vec<StoredSubscription>),
    /// Refused, nothing written: this subscription would carry more than
    /// 50 tags.
    TooMany {
        /// The subscription.
        subscription_id: i64,
        /// How many it would carry.
        tags: usize,
    },
}

/// A message's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for `sendAt`.
    Scheduled,
    /// Stored, not started.
    Queued,
    /// Being sent.
    Sending,
    /// Every target has an outcome.
    Done,
    /// Stopped by the API before it was done.
    Cancelled,
}

impl MessageState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "sending" => Self::Sending,
            "done" => Self::Done,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// What a message's payload is, and so what each subscription gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// The sender's JSON or text, for the site's service worker (`sw.js`).
    #[default]
    Classic,
    /// A Declarative Web Push message (`web_push: 8030`), to every subscription.
    Declarative,
    /// Declarative to Apple's push service, the same notification as classic
    /// JSON to every other (`Message::apple_payload` holds the former).
    Auto,
}

impl MessageFormat {
    /// The stored text, and the API's.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Declarative => "declarative",
            Self::Auto => "auto",
        }
    }

    /// Parses the stored (or requested) text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "classic" => Self::Classic,
            "declarative" => Self::Declarative,
            "auto" => Self::Auto,
            _ => return None,
        })
    }
}

/// Per-message counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Subscriptions the message was aimed at when sending started.
    pub targeted: i64,
    /// Accepted by the push service.
    pub delivered: i64,
    /// Failed for good.
    pub failed: i64,
    /// Subscription gone (404/410), deleted.
    pub gone: i64,
    /// Subscription past its `expirationTime`, deleted.
    pub expired: i64,
    /// Held by quiet hours, to be sent when they end in the subscriber's zone.
    #[serde(default)]
    pub held: i64,
    /// Dropped for a frequency cap.
    #[serde(default)]
    pub capped: i64,
    /// Waiting for a retry.
    pub pending_retry: i64,
    /// Shown by the service worker.
    pub shown: i64,
    /// Clicked by their users, as the service worker reported.
    pub clicked: i64,
}

impl std::ops::AddAssign for Counts {
    /// Sums counters (an A/B test's parts into the test's).
    fn add_assign(&mut self, c: Counts) {
        self.targeted += c.targeted;
        self.delivered += c.delivered;
        self.failed += c.failed;
        self.gone += c.gone;
        self.expired += c.expired;
        self.held += c.held;
        self.capped += c.capped;
        self.pending_retry += c.pending_retry;
        self.shown += c.shown;
        self.clicked += c.clicked;
    }
}

impl Counts {
    /// What an A/B test judges a variant's message by: delivered, and of
    /// those shown or clicked by `metric`.
    pub fn arm(&self, metric: tocsin_audience::rules::ab::AbMetric) -> tocsin_audience::rules::ab::Arm {
        use tocsin_audience::rules::ab::AbMetric;
        let converted = match metric {
            AbMetric::Clicked => self.clicked,
            AbMetric::Shown => self.shown,
        };
        tocsin_audience::rules::ab::Arm { delivered: self.delivered, converted }
    }
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message's id in the API (`/v1/messages/{id}`), made by the server.
    pub id: String,
    /// The app whose subscriptions it goes to.
    pub app: AppId,
    /// The plaintext payload; `None` for a push without data.
    pub payload: Option<Vec<u8>>,
    /// What the payload is.
    pub format: MessageFormat,
    /// With [`MessageFormat::Auto`]: the declarative payload that
    /// subscriptions at Apple's push service get instead of `payload`.
    pub apple_payload: Option<Vec<u8>>,
    /// `payload` is a personal message's
    /// (`tocsin_audience::compose::Personal::to_stored`), rendered per
    /// subscription: text by language, templates over tags.
    pub personal: bool,
    /// Who it goes to.
    pub target: Target,
    /// How long push services keep it for an offline browser, in seconds
    /// (RFC 8030 `TTL`); also how long the engine keeps trying.
    pub ttl: u32,
    /// `very-low`, `low`, `normal`, `high`.
    pub urgency: Option<String>,
    /// RFC 8030 topic.
    pub topic: Option<String>,
    /// When to send, ms since the epoch; `None` for now.
    pub send_at: Option<i64>,
    /// Makes a retried request create one message (one per app: the same
    /// key in two apps makes two messages).
    pub idempotency_key: Option<String>,
    /// Its delivery rules: a local time, quiet hours ignored, caps
    /// bypassed, its tags, its rate.
    pub rules: MessageRules,
    /// When it was accepted, ms since the epoch.
    pub created_at: i64,
}

/// What a message asks of the delivery rules. With a local time,
/// `send_at` is its first wave's instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRules {
    /// Sent at a local time in each subscriber's zone, by waves of zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSchedule>,
    /// Not held by quiet hours (a login code, a security alert).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_quiet_hours: bool,
    /// Subject to the app's frequency caps and counted toward them.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub frequency_cap: bool,
    /// Its tags, which caps with a `tag` count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Deliveries a minute, over every node (0: as fast as it goes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_per_minute: u32,
    /// The message is an A/B test: it sends nothing itself; its variants'
    /// messages go to a sample, the winner's to the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<AbTest>,
    /// The message is a part of an A/B test: a variant or the winner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_part: Option<AbPart>,
}

/// An A/B test, as its message keeps it. The payloads of its variants
/// (and of the winner's message, one per variant, each stamped with its
/// own message id and event token when accepted) are the message's
/// payload, as [`AbPayloads`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbTest {
    /// The sample, when to decide, by what, and what if no variant wins.
    pub settings: tocsin_audience::rules::ab::AbSettings,
    /// The split's seed ([`tocsin_audience::rules::ab::SampleSlice`]).
    pub seed: i64,
    /// The ids of the variants' messages, in order (A, B, …).
    pub variants: Vec<String>,
    /// The id the winner's message gets, for each variant.
    pub winners: Vec<String>,
    /// When the winner is chosen: set when the variants start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_at: Option<i64>,
    /// The choice, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<tocsin_audience::rules::ab::Decision>,
}

impl AbTest {
    /// Where the test is: `waiting` (for its `sendAt`), `testing`,
    /// `decided` (a variant won, or went to the rest) or `stopped` (none
    /// did either).
    pub fn stage(&self) -> &'static str {
        match (&self.decide_at, &self.decision) {
            (None, _) => "waiting",
            (Some(_), None) => "testing",
            (Some(_), Some(d)) if d.sent.is_some() || d.winner.is_some() => "decided",
            (Some(_), Some(_)) => "stopped",
        }
    }
}

/// A step of an A/B test's message ([`crate::WorkStore::advance_ab_test`]).
#[derive(Debug, Clone)]
pub struct AbStep {
    /// The state and `sendAt` it must still have.
    pub from: (MessageState, Option<i64>),
    /// Its rules after the step (the test's `decideAt` or decision).
    pub rules: MessageRules,
    /// Its state after the step.
    pub state: MessageState,
    /// Its `sendAt` after the step (the engine takes it up again then).
    pub send_at: Option<i64>,
    /// The messages the step makes: the variants', or the winner's.
    pub children: Vec<NewMessage>,
}

/// Which part of an A/B test a message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbPart {
    /// The test's message id.
    pub parent: String,
    /// The variant (from 0).
    pub variant: u8,
    /// The winner's message, to the rest of the audience (else a
    /// variant's, to its share of the sample).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rest: bool,
}

/// One stored payload of an A/B test: what a message's `payload`,
/// `apple_payload` and `personal` would be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbPayload {
    /// The payload, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Apple's payload (format `auto`), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apple_payload: Option<String>,
    /// A personal message, rendered per subscription.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
}

/// An A/B test's payloads: each variant's, then the winner's message's
/// for each variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbPayloads {
    /// The variants', in order.
    pub variants: Vec<AbPayload>,
    /// The winner's message's, by variant.
    pub winners: Vec<AbPayload>,
}

/// A message's payload and Apple's payload, as bytes.
pub type PayloadBytes = (Option<Vec<u8>>, Option<Vec<u8>>);

impl AbPayload {
    /// Kept as text.
    pub fn new(payload: Option<&[u8]>, apple_payload: Option<&[u8]>, personal: bool) -> Self {
        Self {
            payload: payload.map(tocsin_protocol::b64::encode),
            apple_payload: apple_payload.map(tocsin_protocol::b64::encode),
            personal,
        }
    }

    /// The bytes back: payload and Apple's payload.
    pub fn bytes(&self) -> Result<PayloadBytes, String> {
        let d = |t: &Option<String>| {
            t.as_deref().map(tocsin_protocol::b64::decode).transpose().map_err(|e| format!("an A/B payload: {e}"))
        };
        Ok((d(&self.payload)?, d(&self.apple_payload)?))
    }
}

impl AbPayloads {
    /// The stored form (a message's payload).
    pub fn to_stored(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the stored form.
    pub fn from_stored(bytes: Option<&[u8]>) -> Result<Self, String> {
        serde_json::from_slice(bytes.unwrap_or_default()).map_err(|e| format!("an A/B test's payloads: {e}"))
    }
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for MessageRules {
    fn default() -> Self {
        Self {
            local: None,
            ignore_quiet_hours: false,
            frequency_cap: true,
            tags: Vec::new(),
            rate_per_minute: 0,
            ab: None,
            ab_part: None,
        }
    }
}

impl MessageRules {
    /// The stored form (`None` when it asks nothing).
    pub fn to_stored(&self) -> Option<String> {
        (self != &Self::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads the stored form.
    pub fn from_stored(text: Option<&str>) -> Result<Self, serde_json::Error> {
        text.map_or(Ok(Self::default()), serde_json::from_str)
    }
}

impl NewMessage {
    /// A message of `app` to `target`, accepted at `created_at`, with the
    /// defaults of the API: no payload, classic format, RFC 8030's default
    /// TTL of four weeks, no urgency, topic, schedule or idempotency key.
    /// Set other fields with struct update syntax:
    /// `NewMessage { ttl: 60, ..NewMessage::new(id, app, target, now) }`.
    pub fn new(id: impl Into<String>, app: AppId, target: Target, created_at: i64) -> Self {
        Self {
            id: id.into(),
            app,
            payload: None,
            format: MessageFormat::Classic,
            apple_payload: None,
            personal: false,
            target,
            ttl: tocsin_protocol::Ttl::DEFAULT.0,
            urgency: None,
            topic: None,
            send_at: None,
            idempotency_key: None,
            rules: MessageRules::default(),
            created_at,
        }
    }
}

/// A stored message: what was accepted ([`NewMessage`]) and where its
/// sending is.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message as it was accepted: id, app, payloads, target, headers,
    /// schedule.
    pub accepted: NewMessage,
    /// Where it is: scheduled, queued, sending, done or cancelled.
    pub state: MessageState,
    /// When its state or counts last changed, ms since the epoch.
    pub updated_at: i64,
    /// The highest subscription id handled so far.
    pub cursor: i64,
    /// The highest subscription id that is part of this message (fixed when
    /// sending starts).
    pub cursor_end: i64,
    /// What became of its deliveries so far.
    pub counts: Counts,
}

impl Message {
    /// The message's id in the API (`/v1/messages/{id}`).
    pub fn id(&self) -> &str {
        &self.accepted.id
    }

    /// The app whose subscriptions it goes to.
    pub fn app_id(&self) -> AppId {
        self.accepted.app
    }
}

/// An app's totals for `/v1/stats`, purged messages included.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Subscriptions stored.
    pub subscriptions: i64,
    /// Messages stored.
    pub messages: i64,
    /// Messages not done or cancelled.
    pub messages_pending: i64,
    /// Deliveries over all messages.
    pub delivered: i64,
    /// Failures over all messages.
    pub failed: i64,
    /// Subscriptions removed as gone or expired.
    pub removed: i64,
}

/// One UTC day of an app, for `GET /v1/stats/daily`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyStats {
    /// Days since the epoch (UTC).
    pub day: i64,
    /// Subscriptions created that day (a browser's replacement of its own
    /// subscription is not a new one).
    pub subscribed: i64,
    /// Subscriptions removed that day: by the browser, the API, a 404/410
    /// from the push service, expiry, or a key retired with force.
    pub unsubscribed: i64,
    /// Messages created that day.
    pub sent: i64,
    /// Their deliveries.
    pub delivered: i64,
    /// Their notifications shown.
    pub shown: i64,
    /// Their notifications clicked.
    pub clicked: i64,
}

/// Milliseconds since the epoch by the wall clock (0 before 1970): what
/// stores measure expression ages from, and what the operations stamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds in a day: days are UTC days since the epoch.
pub const DAY_MS: i64 = 86_400_000;

/// The date of a day since the epoch, `YYYY-MM-DD` (proleptic Gregorian,
/// UTC; Howard Hinnant's `civil_from_days`).
pub fn day_to_date(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A time in ms since the epoch as RFC 3339 in UTC, to the millisecond
/// (`2026-12-02T15:04:05.123Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    let in_day = ms.rem_euclid(DAY_MS);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{}T{h:02}:{m:02}:{s:02}.{milli:03}Z", day_to_date(ms.div_euclid(DAY_MS)))
}

/// The id ranges a started message is split into: shards of about
/// `shard_size` subscriptions, for an audience of `targeted` subscriptions
/// whose highest id is `last`, as `(start_after, end_at]` pairs that cover
/// `0..=last`. Every store splits the same way.
pub fn shard_ranges(targeted: i64, last: i64, shard_size: i64) -> Vec<(i64, i64)> {
    if targeted <= 0 {
        return Vec::new();
    }
    let shards = (targeted + shard_size.max(1) - 1) / shard_size.max(1);
    let width = (last + shards - 1) / shards;
    (0..shards).map(|i| (i * width, ((i + 1) * width).min(last))).take_while(|(start, _)| *start < last).collect()
}

/// Who claims work: the node (shown in leases, for operators) and a token
/// new for this claim, which every write belonging to the claim must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The node's id (`--node-id`); several workers and even several
    /// processes may share it, so it proves nothing.
    pub node: String,
    /// Unique to this claim.
    pub token: String,
}

impl Stats {
    /// These totals with those of purged messages added (`purged` holds
    /// `messages`, `delivered`, `failed`, `removed` of what was purged).
    pub fn plus_purged(self, purged: &Stats) -> Stats {
        Stats {
            messages: self.messages + purged.messages,
            delivered: self.delivered + purged.delivered,
            failed: self.failed + purged.failed,
            removed: self.removed + purged.removed,
            ..self
        }
    }
}

/// A claimed range of a message's audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The token of the claim that holds it.
    pub token: String,
    /// The message whose audience it is part of.
    pub message_id: String,
    /// The shard's number within the message.
    pub shard: i64,
    /// Subscriptions with id above this…
    pub start_after: i64,
    /// …up to and including this.
    pub end_at: i64,
    /// The last subscription id handled.
    pub cursor: i64,
    /// For a message at a local time: the zones of this shard's wave.
    pub zones: Option<ZoneFilter>,
}

/// A wave of a message at a local time, and how far its shards are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveProgress {
    /// The wave's index in the message's [`LocalSchedule`].
    pub wave: i64,
    /// Its shards.
    pub shards: i64,
    /// Those finished.
    pub done: i64,
    /// Delivered by its shards (retries aside).
    pub delivered: i64,
}

/// The reason of a retry that quiet hours hold.
pub const HELD_REASON: &str = "quiet-hours";

/// The failure reason of a delivery dropped for a frequency cap.
pub const CAPPED_REASON: &str = "capped";

/// A delivery to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryItem {
    /// The message to deliver again.
    pub message_id: String,
    /// The subscription to deliver it to.
    pub subscription_id: i64,
    /// Attempts made so far.
    pub attempt: i64,
    /// Why the last attempt asked for a retry.
    pub reason: String,
}

/// A retry to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRetry {
    /// The subscription to deliver the page's message to again.
    pub subscription_id: i64,
    /// Attempts made so far.
    pub attempt: i64,
    /// When to try again, ms since the epoch.
    pub due_at: i64,
    /// Why the last attempt asked for a retry (`http-503`, `deferred`, …).
    pub reason: String,
}

/// One delivery that failed for good: the `delivery.failed` event's item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDelivery {
    /// The subscription the delivery was for.
    pub subscription_id: i64,
    /// That subscription's endpoint, for the event's receiver.
    pub endpoint: String,
    /// The reason label (`payload-too-large`, `retries-exhausted-http-503`, …).
    pub reason: String,
    /// The push service's status code, when one answered.
    pub status: Option<u16>,
}

/// What one page (or one batch of retries) of a message came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Accepted by the push service.
    pub delivered: i64,
    /// Failed for good, by reason label.
    pub failed: Vec<(String, i64)>,
    /// One example of each reason's failures (which subscription, and what
    /// the push service said), for people reading a message's failures.
    pub examples: Vec<(String, String)>,
    /// Each failure, by subscription (for the `delivery.failed` events).
    pub failures: Vec<FailedDelivery>,
    /// Subscriptions that answered 404/410: deleted, counted `gone`.
    pub gone: Vec<i64>,
    /// Subscriptions past their `expirationTime`: deleted, counted `expired`.
    pub expired: Vec<i64>,
    /// Deliveries to try again.
    pub retries: Vec<NewRetry>,
    /// Deliveries quiet hours hold, until when ([`HELD_REASON`] retries,
    /// counted `held`).
    pub held: Vec<NewRetry>,
    /// Deliveries dropped for a frequency cap.
    pub capped: i64,
    /// Subscriptions' send histories to store, for the caps.
    pub histories: Vec<(i64, String)>,
}

/// How a page changes a message's deliveries waiting: for a retry, and
/// held by quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Change of `pendingRetry`.
    pub retry: i64,
    /// Change of `held`.
    pub held: i64,
}

impl Pending {
    /// After `outcome`, the attempts of retries `items` (none for a shard's
    /// page): what it schedules, less the items it took (a held item
    /// leaves `held`, others `pendingRetry`).
    pub fn after(outcome: &PageOutcome, items: &[RetryItem]) -> Self {
        let held_items = items.iter().filter(|i| i.reason == HELD_REASON).count() as i64;
        Self {
            retry: outcome.retries.len() as i64 - (items.len() as i64 - held_items),
            held: outcome.held.len() as i64 - held_items,
        }
    }
}

impl PageOutcome {
    /// Adds one delivery dropped for a cap, with an example if it is the
    /// first of its message's page.
    pub fn cap(&mut self, example: String) {
        if !self.examples.iter().any(|(r, _)| r == CAPPED_REASON) {
            self.examples.push((CAPPED_REASON.to_owned(), example));
        }
        self.capped += 1;
    }

    /// Adds one subscription's failure, with an example if none of its
    /// reason has one yet.
    pub fn fail_with(&mut self, failure: FailedDelivery, example: String) {
        if !self.examples.iter().any(|(r, _)| *r == failure.reason) {
            self.examples.push((failure.reason.clone(), example));
        }
        self.fail(failure.reason.clone());
        self.failures.push(failure);
    }

    /// Adds one failure.
    pub fn fail(&mut self, reason: String) {
        match self.failed.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.failed.push((reason, 1)),
        }
    }

    /// All failures.
    pub fn failed_total(&self) -> i64 {
        self.failed.iter().map(|(_, n)| n).sum()
    }
}

/// How far a node got with a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardProgress {
    /// The shard's cursor when the page began (the claim's, or the last
    /// checkpoint's). The checkpoint applies only while the shard is still
    /// there, so that one written again, after its first commit's answer
    /// was lost with the connection, counts once.
    pub from: i64,
    /// The last subscription id handled.
    pub cursor: i64,
    /// The shard is finished.
    pub done: bool,
    /// How long the lease lasts from now (negative releases it).
    pub lease_ms: i64,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Every `GET` of the API, and `/metrics`.
    Read,
    /// Create, read and cancel messages.
    Send,
    /// Everything: also deleting subscriptions, rotating keys, managing
    /// webhooks and apps.
    Admin,
}

impl TokenScope {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Send => "send",
            Self::Admin => "admin",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "read" => Self::Read,
            "send" => Self::Send,
            "admin" => Self::Admin,
            _ => return None,
        })
    }
}

/// A stored API token (never the token itself: only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The name it was created with.
    pub name: String,
    /// What it may do.
    pub scope: TokenScope,
    /// The one app it may act on; `None` for every app.
    pub app: Option<AppId>,
    /// When it was created, ms since the epoch.
    pub created_at: i64,
    /// When it was last used (to the minute), ms since the epoch.
    pub last_used_at: Option<i64>,
}

/// What the service worker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interaction {
    /// The notification was shown.
    Shown,
    /// The notification was clicked.
    Clicked,
}

#[cfg(test)]
mod tests {
    use super::shard_ranges;

    #[test]
    fn days_are_dates() {
        use super::day_to_date;
        assert_eq!(day_to_date(0), "1970-01-01");
        assert_eq!(day_to_date(59), "1970-03-01");
        assert_eq!(day_to_date(11_016), "2000-02-29");
        assert_eq!(day_to_date(20_789), "2026-12-02");
        assert_eq!(day_to_date(-1), "1969-12-31");
        assert_eq!(super::rfc3339_ms(1_796_226_623_146), "2026-12-02T15:50:23.146Z");
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn shards_cover_the_id_range_once() {
        assert_eq!(shard_ranges(0, 0, 10), []);
        assert_eq!(shard_ranges(5, 5, 10), [(0, 5)]);
        assert_eq!(shard_ranges(10, 30, 4), [(0, 10), (10, 20), (20, 30)]);
        for (targeted, last, size) in [(7, 7, 3), (1000, 5000, 100), (3, 1_000_000, 1), (12, 12, 1)] {
            let r = shard_ranges(targeted, last, size);
            assert_eq!(r.first().map(|s| s.0), Some(0));
            assert_eq!(r.last().map(|s| s.1), Some(last));
            assert!(r.windows(2).all(|w| w[0].1 == w[1].0), "{r:?}");
        }
    }
}
