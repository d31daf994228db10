//! The sending loop behind `tocsin serve`: takes stored messages in order,
//! walks their audience by subscription id with a checkpointed cursor, sends,
//! and records outcomes.
//!
//! Durability comes from the store: a message is stored before the API
//! answers, and the cursor is saved after every page, so a restart resumes
//! where the last checkpoint left off (at most one page is sent twice).
//! No database transaction is open while a request to a push service is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tocsin_protocol::request::PushOptions;
use tocsin_protocol::{Outcome, Topic, Ttl, Urgency, VapidKey, VapidSigner, VapidSubject};
use tocsin_store::{Counts, Message, MessageState, Store, StoredSubscription};
use tokio::sync::{watch, Notify, Semaphore};

use crate::fanout::{deliver_one, BroadcastConfig};
use crate::PushClient;

/// How the engine works.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Subscriptions read per page (and per checkpoint).
    pub page_size: i64,
    /// Requests in flight and retry policy.
    pub broadcast: BroadcastConfig,
    /// How often to look for due messages when nobody wakes the engine.
    pub poll_interval: Duration,
    /// The VAPID subject tokens are signed with.
    pub subject: VapidSubject,
}

/// What the engine needs to decide whether an endpoint may be sent to.
pub trait EndpointCheck: Send + Sync + 'static {
    /// `Err(reason)` when the endpoint must not be contacted.
    fn check(&self, endpoint: &url::Url) -> Result<(), String>;
}

/// Runs messages through to `done`.
pub struct Engine {
    store: Arc<dyn Store>,
    client: PushClient,
    config: EngineConfig,
    wake: Arc<Notify>,
    policy: Arc<dyn EndpointCheck>,
    signers: Mutex<HashMap<i64, Arc<VapidSigner>>>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Engine {
    /// A new engine; call [`run`](Self::run) to start it.
    pub fn new(
        store: Arc<dyn Store>,
        client: PushClient,
        config: EngineConfig,
        policy: Arc<dyn EndpointCheck>,
    ) -> Arc<Self> {
        Arc::new(Self { store, client, config, wake: Arc::new(Notify::new()), policy, signers: Mutex::default() })
    }

    /// Tells the engine that a message was stored.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Works until `shutdown` turns true; a message in flight stops at its
    /// next checkpoint and resumes on the next start.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.store.next_due_message(now_ms()).await {
                Ok(Some(message)) => {
                    let id = message.id.clone();
                    if let Err(e) = self.process(message, &shutdown).await {
                        tracing::error!(message = %id, error = %e, "sending failed; will resume");
                        self.pause(&mut shutdown, self.config.poll_interval).await;
                    }
                }
                Ok(None) => self.pause(&mut shutdown, self.config.poll_interval).await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read messages; retrying");
                    self.pause(&mut shutdown, self.config.poll_interval).await;
                }
            }
        }
    }

    async fn pause(&self, shutdown: &mut watch::Receiver<bool>, d: Duration) {
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.changed() => {}
        }
    }

    fn signer(&self, key_id: i64) -> Result<Arc<VapidSigner>, tocsin_store::StoreError> {
        if let Some(s) = self.signers.lock().ok().and_then(|m| m.get(&key_id).cloned()) {
            return Ok(s);
        }
        Err(tocsin_store::StoreError::Corrupt(format!("VAPID key {key_id} not loaded")))
    }

    async fn load_signer(&self, key_id: i64) -> Result<Arc<VapidSigner>, tocsin_store::StoreError> {
        if let Ok(s) = self.signer(key_id) {
            return Ok(s);
        }
        let row = self
            .store
            .vapid_key(key_id)
            .await?
            .ok_or_else(|| tocsin_store::StoreError::Corrupt(format!("VAPID key {key_id} missing")))?;
        let key = VapidKey::from_base64url(Some(&row.public_key), &row.private_key)
            .map_err(|e| tocsin_store::StoreError::Corrupt(e.to_string()))?;
        let signer = Arc::new(VapidSigner::new(Arc::new(key), self.config.subject.clone()));
        if let Ok(mut m) = self.signers.lock() {
            m.insert(key_id, signer.clone());
        }
        Ok(signer)
    }

    async fn process(&self, message: Message, shutdown: &watch::Receiver<bool>) -> tocsin_store::Result<()> {
        let mut message = message;
        if matches!(message.state, MessageState::Scheduled | MessageState::Queued) {
            if !self.store.start_message(&message.id, &message.target, now_ms()).await? {
                return Ok(()); // cancelled meanwhile
            }
            message = match self.store.message(&message.id).await? {
                Some(m) => m,
                None => return Ok(()),
            };
            tracing::info!(message = %message.id, targeted = message.counts.targeted, "sending");
        }
        let options = Arc::new(PushOptions {
            ttl: Ttl(message.ttl),
            urgency: message.urgency.as_deref().and_then(|u| u.parse::<Urgency>().ok()),
            topic: message.topic.as_deref().and_then(|t| Topic::new(t).ok()),
            ..PushOptions::default()
        });
        let payload = message.payload.clone().map(Bytes::from);
        let mut cursor = message.cursor;
        loop {
            let page = self
                .store
                .page_subscriptions(&message.target, cursor, Some(message.cursor_end), self.config.page_size)
                .await?;
            let Some(last) = page.last().map(|s| s.id) else { break };
            let delta = self.send_page(page, payload.clone(), options.clone()).await?;
            cursor = last;
            let state = self.store.record_progress(&message.id, cursor, &delta, now_ms()).await?;
            if state == MessageState::Cancelled {
                tracing::info!(message = %message.id, "cancelled while sending");
                return Ok(());
            }
            if *shutdown.borrow() {
                tracing::info!(message = %message.id, cursor, "stopping at a checkpoint");
                return Ok(());
            }
        }
        self.store.finish_message(&message.id, now_ms()).await?;
        if let Some(m) = self.store.message(&message.id).await? {
            let c = m.counts;
            tracing::info!(message = %m.id, targeted = c.targeted, delivered = c.delivered, failed = c.failed,
                gone = c.gone, expired = c.expired, "done");
        }
        Ok(())
    }

    async fn send_page(
        &self,
        page: Vec<StoredSubscription>,
        payload: Option<Bytes>,
        options: Arc<PushOptions>,
    ) -> tocsin_store::Result<Counts> {
        let now = now_ms();
        let semaphore = Arc::new(Semaphore::new(self.config.broadcast.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let mut delta = Counts::default();
        for sub in page {
            if sub.subscription.expiration_time().is_some_and(|t| (t as i64) <= now) {
                self.store.delete_subscription(sub.id).await?;
                delta.expired += 1;
                continue;
            }
            if let Err(reason) = self.policy.check(sub.subscription.endpoint()) {
                tracing::warn!(subscription = sub.id, %reason, "endpoint refused by policy");
                delta.failed += 1;
                continue;
            }
            let signer = self.load_signer(sub.vapid_key_id).await?;
            let Ok(permit) = semaphore.clone().acquire_owned().await else { break };
            let (client, payload, options, config) =
                (self.client.clone(), payload.clone(), options.clone(), self.config.broadcast.clone());
            tasks.spawn(async move {
                let (outcome, _) =
                    deliver_one(&client, &sub.subscription, payload.as_deref(), &options, Some(&signer), &config).await;
                drop(permit);
                (sub.id, outcome)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((id, outcome)) = joined else {
                delta.failed += 1;
                continue;
            };
            match outcome {
                Outcome::Delivered { .. } => delta.delivered += 1,
                Outcome::Gone { .. } => {
                    self.store.delete_subscription(id).await?;
                    delta.gone += 1;
                }
                Outcome::Failed { reason } => {
                    tracing::debug!(subscription = id, reason = %reason, "failed");
                    delta.failed += 1;
                }
                Outcome::Retry { .. } => delta.failed += 1,
            }
        }
        Ok(delta)
    }
}
