//! The dispatcher: workers that claim each webhook's next delivery from the
//! outbox (under a lease, so several nodes share the work and each delivery
//! is sent by one), POST it signed, and record what became of it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use tocsin_store_api::{DeliveryResult, Outbox, StoreError, WebhookDelivery};
use tokio::sync::{watch, Notify};

use crate::metrics::WebhookMetrics;
use crate::sign::sign;

/// The Standard Webhooks schedule: after each failed attempt, the wait
/// before the next one. The last failure after it gives up (about 27 hours
/// after the first attempt) and marks the webhook failing.
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The longest a receiver's `Retry-After` may push an attempt back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How the dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// This node's id, recorded with its claims.
    pub node: String,
    /// The longest one delivery request may take (the HTTP client's
    /// timeout); a claim lasts [`DispatchConfig::lease`], a little longer.
    pub request_timeout: Duration,
    /// The most events of a batched type in one delivery.
    pub batch: i64,
    /// The waits between attempts ([`DEFAULT_SCHEDULE`]).
    pub schedule: Vec<Duration>,
    /// How often an idle dispatcher looks for work.
    pub poll: Duration,
    /// Deliveries in flight at once (each to another webhook): each is a
    /// task of its own, so a slow receiver holds one place and delays only
    /// its own queue.
    pub workers: usize,
    /// The most of a receiver's answer that is read.
    pub max_response: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            node: "node".into(),
            request_timeout: Duration::from_secs(10),
            batch: 100,
            schedule: DEFAULT_SCHEDULE.to_vec(),
            poll: Duration::from_millis(250),
            workers: 32,
            max_response: 64 * 1024,
        }
    }
}

impl DispatchConfig {
    /// How long a claimed delivery is this node's: longer than its request
    /// may take, so that no other node sends it while it is in flight.
    pub fn lease(&self) -> Duration {
        self.request_timeout + Duration::from_secs(5)
    }
}

/// Sends webhook deliveries from the outbox.
pub struct Dispatcher {
    outbox: Arc<dyn Outbox>,
    client: reqwest::Client,
    config: DispatchConfig,
    metrics: WebhookMetrics,
    wake: Notify,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn new_token() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A receiver's `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    httpdate::parse_http_date(v).ok()?.duration_since(SystemTime::now()).ok()
}

impl Dispatcher {
    /// A dispatcher over `outbox`, sending with `client` (built with the
    /// endpoint policy's address filter and a timeout).
    pub fn new(
        outbox: Arc<dyn Outbox>,
        client: reqwest::Client,
        config: DispatchConfig,
        metrics: WebhookMetrics,
    ) -> Arc<Self> {
        Arc::new(Self { outbox, client, config, metrics, wake: Notify::new() })
    }

    /// Looks for work now (an event was just queued here).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Runs until `stop` turns true: claims due deliveries while fewer than
    /// `workers` are in flight, each sent by a task of its own. Claims go
    /// round-robin across webhooks (the least recently claimed first), so a
    /// webhook with a slow receiver, or a backlog, waits its turn behind
    /// every other webhook that has something due.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let places = Arc::new(tokio::sync::Semaphore::new(self.config.workers.max(1)));
        let mut in_flight = tokio::task::JoinSet::new();
        while !*stop.borrow() {
            let place = tokio::select! {
                p = places.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            while in_flight.try_join_next().is_some() {}
            let claimed = match self.claim().await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot read the outbox");
                    None
                }
            };
            match claimed {
                Some(d) => {
                    let me = self.clone();
                    in_flight.spawn(async move {
                        if let Err(e) = me.deliver(d).await {
                            tracing::warn!(error = %e, "webhooks: cannot record a delivery");
                        }
                        drop(place);
                    });
                }
                None => {
                    drop(place);
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll) => {}
                        _ = self.wake.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        // What is in flight finishes (each within the webhook timeout).
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims one due delivery, sends it and records the result; false
    /// when nothing was due.
    pub async fn once(&self) -> Result<bool, StoreError> {
        let Some(d) = self.claim().await? else { return Ok(false) };
        self.deliver(d).await?;
        Ok(true)
    }

    async fn claim(&self) -> Result<Option<WebhookDelivery>, StoreError> {
        let token = new_token();
        let lease = self.config.lease().as_millis() as i64;
        self.outbox.claim_delivery(&self.config.node, &token, now_ms(), lease, self.config.batch).await
    }

    /// Sends a claimed delivery and records what became of it.
    async fn deliver(&self, d: WebhookDelivery) -> Result<(), StoreError> {
        let result = self.attempt(&d).await;
        match &result {
            DeliveryResult::Delivered => self.metrics.delivered.inc(),
            DeliveryResult::Retry { error, .. } => {
                tracing::info!(webhook = %d.webhook.registered.id, delivery = %d.id, %error, "webhook delivery will be retried");
                self.metrics.retried.inc()
            }
            DeliveryResult::GaveUp { error } => {
                tracing::warn!(webhook = %d.webhook.registered.id, delivery = %d.id, %error, "webhook delivery given up: the webhook is failing");
                self.metrics.gave_up.inc()
            }
        };
        if !self.outbox.finish_delivery(&d.webhook.registered.id, &d.token, &result, now_ms()).await? {
            tracing::warn!(webhook = %d.webhook.registered.id, "webhook claim lost before its result was recorded");
        }
        Ok(())
    }

    /// What the next attempt after a failure is: a retry by the schedule
    /// (or the receiver's `Retry-After`), or giving up.
    fn after_failure(&self, d: &WebhookDelivery, error: String, asked: Option<Duration>) -> DeliveryResult {
        match self.config.schedule.get(usize::try_from(d.attempts).unwrap_or(usize::MAX)) {
            None => DeliveryResult::GaveUp { error },
            Some(wait) => {
                let wait = asked.map_or(*wait, |a| a.min(MAX_RETRY_AFTER).max(*wait));
                DeliveryResult::Retry { next_at: now_ms() + wait.as_millis() as i64, error }
            }
        }
    }

    async fn attempt(&self, d: &WebhookDelivery) -> DeliveryResult {
        let timestamp = now_ms() / 1000;
        let signature = match sign(&d.webhook.registered.secret, &d.id, timestamp, d.body.as_bytes()) {
            Ok(s) => s,
            Err(e) => return DeliveryResult::GaveUp { error: e.to_string() },
        };
        let sent = self
            .client
            .post(&d.webhook.registered.url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.body.clone())
            .send()
            .await;
        match sent {
            Ok(mut resp) => {
                let status = resp.status();
                let asked = retry_after(resp.headers());
                // Read a bounded part of the answer (for the connection's
                // reuse), never all of what a receiver may send.
                let mut read = 0;
                while read < self.config.max_response {
                    match resp.chunk().await {
                        Ok(Some(c)) => read += c.len(),
                        _ => break,
                    }
                }
                if status.is_success() {
                    DeliveryResult::Delivered
                } else {
                    self.after_failure(d, format!("HTTP {}", status.as_u16()), asked)
                }
            }
            // The URL may carry the receiver's password: never in the error
            // that is stored and shown to read tokens.
            Err(e) => {
                let error = tocsin_protocol::error_text::error_chain(&e.without_url());
                self.after_failure(d, crate::redact::redact_in(&error, &d.webhook.registered.url), None)
            }
        }
    }
}
