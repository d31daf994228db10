//! The work loop: what a worker does next (start a message, walk a shard,
//! retry due deliveries, finish messages), and the heartbeat that keeps a
//! claim alive while its work is in flight.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tocsin_store_api::{
    FailedDelivery, Message, MessageState, PageOutcome, PageRow, RetryItem, Shard, ShardProgress, Store, StoreError,
};
use tokio::sync::watch;

use super::attempt::Job;
use super::lane::Lane;
use super::Engine;

/// How long a worker may wait for a throttled message's next slot before
/// it gives the shard back until then.
const THROTTLE_HOLD_MS: i64 = 1_000;

/// A worker waiting for the database to take results it holds; counted in
/// [`Engine::recording`] until dropped.
struct Recording<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a heartbeat renews.
enum Held {
    Shard(Arc<Shard>),
    Retries(Arc<str>),
}

impl Engine {
    /// Does one piece of work; false when there was none.
    pub(super) async fn step(&self, lane: &Lane, shutdown: &watch::Receiver<bool>) -> Result<bool, StoreError> {
        if self.recording.load(Ordering::Acquire) > 0 {
            // A page's results wait for the database: nothing new is taken
            // until they are written (or their claim is known to be lost).
            return Ok(false);
        }
        let now = self.now_ms();
        if let Some(m) = lane.db(move |s| async move { s.next_startable_message(now).await }).await? {
            if let Some(test) = m.accepted.rules.ab.clone() {
                self.advance_ab_test(lane, m, test).await?;
                return Ok(true);
            }
            let (id, target, shard_size) = (m.id().to_owned(), m.accepted.target.clone(), self.config.shard_size);
            let started = lane.db(move |s| async move { s.start_message(&id, &target, shard_size, now).await });
            if started.await? {
                tracing::info!(message = %m.id(), node = %self.config.node_id, "message sending");
                self.wake.notify_waiters();
                self.finish_if_complete(lane, m.id()).await?;
            }
            return Ok(true);
        }
        let lease = self.lease_ms();
        let claim = self.new_claim();
        if let Some(shard) = lane.db(move |s| async move { s.claim_shard(&claim, now, lease).await }).await? {
            self.process_shard(lane, shard, shutdown).await?;
            return Ok(true);
        }
        let (claim, limit) = (self.new_claim(), self.config.page_size);
        let token: Arc<str> = claim.token.as_str().into();
        let items = lane.db(move |s| async move { s.claim_retries(&claim, now, lease, limit).await }).await?;
        if !items.is_empty() {
            self.process_retries(lane, token, items).await?;
            return Ok(true);
        }
        for id in lane.db(|s| async move { s.sending_message_ids().await }).await? {
            self.finish_if_complete(lane, &id).await?;
        }
        Ok(false)
    }

    /// For a throttled message: its next free slot, when that is more than
    /// [`THROTTLE_HOLD_MS`] away. The caller then gives its work back until
    /// then (a worker waiting for it would starve every other message of
    /// the node), and idle workers are woken when it comes, not a poll
    /// interval after it.
    async fn later_slot(&self, lane: &Lane, message: &Message) -> Result<Option<i64>, StoreError> {
        if message.accepted.rules.rate_per_minute == 0 {
            return Ok(None);
        }
        let (id, now) = (message.id().to_owned(), self.now_ms());
        let next = lane.db(move |s| async move { s.throttle_next(&id).await }).await?;
        if next <= now + THROTTLE_HOLD_MS {
            return Ok(None);
        }
        let (wake, wait) = (self.wake.clone(), Duration::from_millis(u64::try_from(next - now).unwrap_or(0)));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            wake.notify_waiters();
        });
        Ok(Some(next))
    }

    async fn finish_if_complete(&self, lane: &Lane, id: &str) -> Result<(), StoreError> {
        let (id, now) = (id.to_owned(), self.now_ms());
        let finished = lane.db(move |s| async move {
            if s.try_finish_message(&id, now).await? {
                s.message(&id).await
            } else {
                Ok(None)
            }
        });
        if let Some(m) = finished.await? {
            let c = m.counts;
            tracing::info!(message = %m.id(), targeted = c.targeted, delivered = c.delivered, failed = c.failed,
                gone = c.gone, expired = c.expired, "message done");
        }
        Ok(())
    }

    async fn process_shard(
        &self,
        lane: &Lane,
        shard: Shard,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let id = shard.message_id.clone();
        let Some(message) = lane.db(move |s| async move { s.message(&id).await }).await? else {
            return Ok(());
        };
        if message.state != MessageState::Sending {
            return Ok(());
        }
        let app = message.app_id();
        let rules = Arc::new(lane.db(move |s| async move { s.app_rules(app).await }).await?);
        let message = Arc::new(message);
        let shard = Arc::new(shard);
        // A throttled message is read about ten seconds of sending at a
        // time, so that each page reserves few slots ahead of the others.
        let page_size = match i64::from(message.accepted.rules.rate_per_minute) {
            0 => self.config.page_size,
            rate => self.config.page_size.min((rate / 6).max(1)),
        };
        let mut cursor = shard.cursor;
        loop {
            if let Some(next) = self.later_slot(lane, &message).await? {
                let sh = shard.clone();
                lane.db(move |s| async move { s.defer_shard(&sh, next).await }).await?;
                return Ok(());
            }
            let end_at = shard.end_at;
            let (page, waited) = self
                .patiently(lane, "reading a page", || {
                    let (m, sh) = (message.clone(), shard.clone());
                    move |s: Arc<dyn Store>| async move {
                        let zones = sh.zones.as_ref();
                        s.page_subscriptions(m.app_id(), &m.accepted.target, zones, cursor, Some(end_at), page_size)
                            .await
                    }
                })
                .await?;
            if waited {
                // The database was away for a while: the claim may have run
                // out and been taken; nothing is sent unless it is still ours.
                let (sh, now, lease) = (shard.clone(), self.now_ms(), self.lease_ms());
                if !lane.db(move |s| async move { s.renew_shard(&sh, now, lease).await }).await? {
                    self.metrics.claims_lost.inc();
                    tracing::warn!(message = %message.id(), shard = shard.shard, "claim lost while the database was away");
                    return Ok(());
                }
            }
            let done = (page.len() as i64) < page_size;
            let last = page.last().map_or(shard.end_at, PageRow::id);
            let (mut jobs, mut unreadable) = (Vec::with_capacity(page.len()), Vec::new());
            for row in page {
                match row {
                    PageRow::Sub(sub) => jobs.push(Job { sub, attempts_before: 0 }),
                    PageRow::Unreadable { id, error } => unreadable.push((id, error)),
                }
            }
            let (stop, stopped) = watch::channel(false);
            let sending = self.attempt_all(lane, &message, &rules, jobs, stopped);
            // `_waiting` (heartbeats failing for a database that is away)
            // lasts until this page's checkpoint is written.
            let (mut outcome, held, _waiting) =
                self.while_held(lane, Held::Shard(shard.clone()), stop, sending).await?;
            // A row that cannot be read is not a reason to stop the
            // broadcast for good: it is counted as failed and skipped.
            for (id, error) in unreadable {
                tracing::error!(message = %message.id(), subscription = id, %error, "subscription row cannot be read: skipped");
                self.metrics.count("failed", "unreadable");
                let failure = FailedDelivery {
                    subscription_id: id,
                    endpoint: String::new(),
                    reason: "unreadable".into(),
                    status: None,
                };
                outcome.fail_with(failure, format!("subscription {id}: its stored row cannot be read ({error})"));
            }
            if !held {
                return self.after_lost_claim(lane, &shard, cursor, outcome).await;
            }
            let from = cursor;
            cursor = if done { shard.end_at } else { last };
            let stopping = *shutdown.borrow();
            // Stopping releases the lease at once, so a restart resumes without waiting for it.
            let lease_ms = if stopping { -1 } else { self.lease_ms() };
            let progress = ShardProgress { from, cursor, done, lease_ms };
            // The pushes have gone out: their results are kept until the
            // database takes them, under this claim's token.
            let outcome = Arc::new(outcome);
            let (state, _) = self
                .patiently(lane, "recording a page", || {
                    let (sh, outcome, now) = (shard.clone(), outcome.clone(), self.now_ms());
                    move |s: Arc<dyn Store>| async move { s.checkpoint_shard(&sh, &progress, &outcome, now).await }
                })
                .await?;
            match state {
                None => {
                    self.metrics.claims_lost.inc();
                    tracing::warn!(message = %message.id(), shard = shard.shard,
                        "claim lost before the checkpoint; the page is not recorded (its new owner sends it)");
                    return Ok(());
                }
                Some(MessageState::Cancelled) => {
                    tracing::info!(message = %message.id(), "message cancelled while sending");
                    return Ok(());
                }
                Some(_) if done => return self.finish_if_complete(lane, message.id()).await,
                Some(_) if stopping => {
                    tracing::info!(message = %message.id(), shard = shard.shard, cursor, "stopping at a checkpoint");
                    return Ok(());
                }
                Some(_) => {}
            }
        }
    }

    async fn process_retries(&self, lane: &Lane, token: Arc<str>, items: Vec<RetryItem>) -> Result<(), StoreError> {
        let mut by_message: HashMap<String, Vec<RetryItem>> = HashMap::new();
        for item in items {
            by_message.entry(item.message_id.clone()).or_default().push(item);
        }
        for (message_id, items) in by_message {
            let items = Arc::new(items);
            let (id, its) = (message_id.clone(), items.clone());
            // The message and the subscriptions still there; a deleted one
            // (gone for another message, or by the API) counts as gone.
            let (message, rules, jobs, vanished) = lane
                .db(move |s| async move {
                    let Some(message) = s.message(&id).await? else {
                        return Ok((None, Default::default(), Vec::new(), Vec::new()));
                    };
                    let rules = s.app_rules(message.app_id()).await?;
                    let (mut jobs, mut vanished) = (Vec::with_capacity(its.len()), Vec::new());
                    for item in its.iter() {
                        match s.subscription(item.subscription_id).await? {
                            Some(sub) => jobs.push(Job { sub, attempts_before: item.attempt }),
                            None => vanished.push(item.subscription_id),
                        }
                    }
                    Ok((Some(message), rules, jobs, vanished))
                })
                .await?;
            let Some(message) = message else { continue };
            if let Some(next) = self.later_slot(lane, &message).await? {
                let (id, tok) = (message_id.clone(), token.clone());
                lane.db(move |s| async move { s.defer_retries(&id, &tok, next).await }).await?;
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let sending = self.attempt_all(lane, &message, &rules, jobs, stopped);
            let (mut outcome, held, _waiting) =
                self.while_held(lane, Held::Retries(token.clone()), stop, sending).await?;
            if !held {
                self.metrics.claims_lost.inc();
                tracing::warn!(message = %message_id, "claim of retries lost while in flight");
                return Ok(());
            }
            outcome.gone.extend(vanished);
            let outcome = Arc::new(outcome);
            let (recorded, _) = self
                .patiently(lane, "recording retries", || {
                    let (id, tok, items, outcome) = (message_id.clone(), token.clone(), items.clone(), outcome.clone());
                    let now = self.now_ms();
                    move |s: Arc<dyn Store>| async move { s.record_retries(&id, &tok, &items, &outcome, now).await }
                })
                .await?;
            if !recorded {
                self.metrics.claims_lost.inc();
                tracing::warn!(message = %message_id, "claim of retries lost; not recorded (the new owner sends them)");
                return Ok(());
            }
            self.finish_if_complete(lane, &message_id).await?;
        }
        Ok(())
    }

    /// A page's claim was lost while it was in flight; `outcome` holds the
    /// attempts answered before it stopped. They are recorded only if the
    /// message was cancelled (its shards closed under the claim, whose token
    /// still holds): a cancel is final, and what was sent is then counted.
    /// Otherwise another worker has the shard and sends the page again, so
    /// nothing is recorded (the store would refuse it anyway).
    async fn after_lost_claim(
        &self,
        lane: &Lane,
        shard: &Arc<Shard>,
        cursor: i64,
        outcome: PageOutcome,
    ) -> Result<(), StoreError> {
        let id = shard.message_id.clone();
        let cancelled = lane.db(move |s| async move { s.message(&id).await }).await?;
        if cancelled.is_some_and(|m| m.state == MessageState::Cancelled) {
            let (sh, now) = (shard.clone(), self.now_ms());
            // The page was cut short: the cursor stays where the last checkpoint put it.
            let progress = ShardProgress { from: cursor, cursor, done: true, lease_ms: -1 };
            let recorded = lane.db(move |s| async move { s.checkpoint_shard(&sh, &progress, &outcome, now).await });
            if recorded.await?.is_some() {
                tracing::info!(message = %shard.message_id, "message cancelled while sending; what was sent is counted");
                return Ok(());
            }
        }
        self.metrics.claims_lost.inc();
        tracing::warn!(message = %shard.message_id, shard = shard.shard,
            "claim lost while a page was in flight; the rest of the page is left to its new owner");
        Ok(())
    }

    /// Calls the store until it answers, waiting out a database that is
    /// away or full ([`StoreError::is_transient`]); other errors are
    /// returned. `make` makes each attempt's call. While it waits this node
    /// takes no new work ([`Engine::step`]), so that results already sent
    /// are written under their claim before anything else is claimed.
    /// Returns the answer and whether it had to wait.
    async fn patiently<T, F, Fut>(&self, lane: &Lane, what: &str, make: impl Fn() -> F) -> Result<(T, bool), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let mut wait = Duration::from_millis(100);
        let mut waiting: Option<Recording<'_>> = None;
        loop {
            match lane.db(make()).await {
                Err(e) if e.is_transient() => {
                    if waiting.is_none() {
                        tracing::warn!(error = %e, "database unavailable while {what}; keeping the results and trying again");
                        self.recording.fetch_add(1, Ordering::AcqRel);
                        waiting = Some(Recording(&self.recording));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                done => {
                    if waiting.is_some() {
                        tracing::info!("database back: {what} done");
                    }
                    return done.map(|v| (v, waiting.is_some()));
                }
            }
        }
    }

    /// Runs `work` while renewing the claim on `held` about every third of
    /// the lease, and returns its output with whether the claim held
    /// throughout. When the claim is lost (renewal refused, or failing for
    /// a whole lease for another reason than the database being away),
    /// `stop` tells `work` to give up what it has not finished, and its
    /// output then holds only what it had.
    async fn while_held<T>(
        &self,
        lane: &Lane,
        held: Held,
        stop: watch::Sender<bool>,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<(T, bool, Option<Recording<'_>>), StoreError> {
        let lease = self.lease_ms();
        let period = Duration::from_millis((lease / 3).max(1) as u64);
        let mut renewed_at = self.now_ms();
        // Set while heartbeats fail for the database being away: the claim
        // may run out meanwhile, and this node's own idle workers must not
        // take it over (nobody else did). Handed to the caller, which keeps
        // it until the work's results are written.
        let mut waiting: Option<Recording<'_>> = None;
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok((done?, true, waiting)),
                _ = beat.tick() => {
                    let now = self.now_ms();
                    let renewed = match &held {
                        Held::Shard(shard) => {
                            let shard = shard.clone();
                            lane.db(move |s| async move { s.renew_shard(&shard, now, lease).await }).await
                        }
                        Held::Retries(token) => {
                            let token = token.clone();
                            lane.db(move |s| async move { s.renew_retries(&token, now, lease).await }).await
                        }
                    };
                    if matches!(&renewed, Err(e) if e.is_transient()) && waiting.is_none() {
                        self.recording.fetch_add(1, Ordering::AcqRel);
                        waiting = Some(Recording(&self.recording));
                    }
                    let lost = match renewed {
                        Ok(true) => {
                            renewed_at = now;
                            waiting = None;
                            false
                        }
                        Ok(false) => true,
                        Err(e) if now - renewed_at < lease => {
                            tracing::warn!(error = %e, "heartbeat failed; trying again");
                            false
                        }
                        // The database is away: that says nothing of the
                        // claim. The work goes on, and its results are
                        // written under the claim's token when the database
                        // is back (refused then if another node took it,
                        // which resends at most this page).
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "heartbeat failed for a whole lease: the database is away; going on");
                            false
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "heartbeat failed for a whole lease; giving the work up");
                            true
                        }
                    };
                    if lost {
                        let _ = stop.send(true);
                        return Ok((work.await?, false, None));
                    }
                }
            }
        }
    }
}
