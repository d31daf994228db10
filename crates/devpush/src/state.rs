//! The service's memory: subscriptions with their keys and faults, and the
//! messages received.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::vapid::VerifiedVapid;

/// One programmed misbehaviour, applied to the next `times` pushes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Answer with this status instead of accepting (429, 500, 503, …).
    #[serde(default)]
    pub status: Option<u16>,
    /// With `status`: the `Retry-After` header to send (seconds or a date).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Wait this long before handling the push.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Drop the connection without an answer.
    #[serde(default)]
    pub drop: bool,
    /// How many pushes this applies to (default 1).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// A message the service accepted, as its API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedMessage {
    /// The message id (the last segment of its `Location`).
    pub id: String,
    /// The subscription it was sent to.
    pub subscription_id: String,
    /// Milliseconds since the Unix epoch.
    pub received_at: u64,
    /// `aes128gcm`, `aesgcm`, or null for a push without payload.
    pub encoding: Option<String>,
    /// The `TTL` header.
    pub ttl: u64,
    /// The `Urgency` header.
    pub urgency: Option<String>,
    /// The `Topic` header.
    pub topic: Option<String>,
    /// The decrypted payload as UTF-8 text, when it is text.
    pub payload: Option<String>,
    /// The decrypted payload, base64url.
    pub payload_base64: Option<String>,
    /// The encrypted body's length.
    pub body_length: usize,
    /// The HTTP version the push arrived over (`HTTP/1.1`, `HTTP/2.0`).
    pub http_version: String,
    /// What the VAPID token said, when there was one.
    pub vapid: Option<VerifiedVapid>,
    /// Every request header, names in lower case.
    pub headers: HashMap<String, String>,
    /// Relayed to a browser over the WebSocket (not decrypted here).
    pub relayed: bool,
    /// The browser's answer: `ack` code (100 delivered, 101 decryption
    /// failed, 102 not delivered) or `nack` code; null until it answers.
    pub ack_code: Option<u64>,
}

pub(crate) struct Sub {
    /// The receiver's keys, when the service minted the subscription; `None`
    /// when a browser registered it over the WebSocket and keeps them itself
    /// (the service then relays what it receives instead of decrypting it).
    pub keys: Option<Arc<ReceiverKeys>>,
    /// The browser connection and channel, for a WebSocket registration.
    pub channel: Option<(String, String)>,
    pub app_server_key: Option<Vec<u8>>,
    pub expired: bool,
    pub attempts: u64,
    pub attempt_times: Vec<u64>,
    pub received: u64,
    pub faults: VecDeque<FaultSpec>,
}

/// What the next push to a subscription meets.
pub(crate) enum Gate {
    Unknown,
    Expired,
    Open {
        keys: Option<Arc<ReceiverKeys>>,
        channel: Option<(String, String)>,
        app_server_key: Option<Vec<u8>>,
        fault: Option<FaultSpec>,
    },
}

/// What a WebSocket connection is told to do.
pub(crate) enum Out {
    Text(String),
    Close,
}

/// A browser (user agent) of the WebSocket side.
#[derive(Default)]
pub(crate) struct Ua {
    /// Notifications sent or waiting, not yet acknowledged.
    pub pending: Vec<(String, String)>,
    /// The live connection: its number and its outbox.
    pub conn: Option<(u64, tokio::sync::mpsc::UnboundedSender<Out>)>,
    /// Hellos are refused until then (to hold a browser offline in tests).
    pub hold_until: Option<std::time::Instant>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub subs: HashMap<String, Sub>,
    pub messages: Vec<RecordedMessage>,
    pub uas: HashMap<String, Ua>,
}

pub(crate) struct State {
    pub base_url: String,
    inner: Mutex<Inner>,
    next: AtomicU64,
    prefix: String,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl State {
    pub fn new(base_url: String) -> Self {
        // Ids unique across restarts without a random-number crate.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos();
        Self { base_url, inner: Mutex::new(Inner::default()), next: AtomicU64::new(1), prefix: format!("{nanos:x}") }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn new_id(&self) -> String {
        format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts the attempt and decides what it meets, consuming one fault.
    pub fn gate(&self, id: &str) -> Gate {
        let mut inner = self.lock();
        let Some(sub) = inner.subs.get_mut(id) else { return Gate::Unknown };
        sub.attempts += 1;
        sub.attempt_times.push(now_ms());
        if sub.expired {
            return Gate::Expired;
        }
        let fault = sub.faults.front_mut().map(|front| {
            front.times = front.times.saturating_sub(1);
            front.clone()
        });
        if sub.faults.front().is_some_and(|f| f.times == 0) {
            sub.faults.pop_front();
        }
        Gate::Open {
            keys: sub.keys.clone(),
            channel: sub.channel.clone(),
            app_server_key: sub.app_server_key.clone(),
            fault,
        }
    }
}
