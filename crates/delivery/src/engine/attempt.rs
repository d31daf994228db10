//! One attempt per job of a page (or a batch of retries): encryption, the
//! gates and limits, the request, and the sorting of answers into a
//! [`PageOutcome`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tocsin_audience::compose::{ComposeError, Personal};
use tocsin_audience::rules::{DeliveryRules, SendHistory};

use bytes::Bytes;
use tocsin_protocol::request::{self, PushOptions};
use tocsin_protocol::{FailReason, Outcome, PushService, Topic, Ttl, Urgency, VapidKey, VapidSigner, VapidSubject};
use tocsin_store_api::{
    FailedDelivery, Message, MessageFormat, NewRetry, PageOutcome, StoreError, StoredSubscription, HELD_REASON,
};
use tokio::sync::watch;

use super::lane::Lane;
use super::retry::{self, Next, Unfinished};
use super::Engine;
use crate::fanout::backoff;

/// One delivery to attempt: the subscription and the attempts made before.
pub(super) struct Job {
    pub(super) sub: StoredSubscription,
    pub(super) attempts_before: i64,
}

/// The result of one attempt, ready to be recorded.
enum Attempt {
    Delivered,
    Gone,
    /// A label, what happened in words, and the status code if any.
    Failed(String, String, Option<u16>),
    Retry {
        reason: String,
        /// The status code that asked for it, if one did.
        status: Option<u16>,
        after: Option<Duration>,
    },
    /// Not sent: the origin's gate is closed for longer than a worker
    /// waits (another request's `Retry-After`). Not an attempt: it does not
    /// count against the delivery's attempts.
    Deferred {
        wait: Duration,
    },
}

/// An example of a failure, for people: which subscription, at which
/// push service, and what happened.
fn example(sub: &StoredSubscription, detail: &str) -> String {
    format!("subscription {} at {}: {detail}", sub.id, sub.subscription.origin())
}

/// A subscription's failure, for its `delivery.failed` event.
fn failure(sub: &StoredSubscription, reason: impl Into<String>, status: Option<u16>) -> FailedDelivery {
    FailedDelivery {
        subscription_id: sub.id,
        endpoint: sub.subscription.endpoint().to_string(),
        reason: reason.into(),
        status,
    }
}

impl Engine {
    async fn signer(&self, lane: &Lane, key_id: i64) -> Result<Arc<VapidSigner>, StoreError> {
        if let Some(s) = self.signers.lock().ok().and_then(|m| m.get(&key_id).cloned()) {
            return Ok(s);
        }
        let row = lane
            .db(move |s| async move { s.vapid_key(key_id).await })
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("VAPID key {key_id} missing")))?;
        let key = VapidKey::from_base64url(Some(&row.public_key), &row.private_key)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The key's app signs with its own subject; an app without one (the
        // default app) with the server's.
        let subject = match row.subject.as_deref().map(VapidSubject::new) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(StoreError::Corrupt(format!("app subject: {e}"))),
            None => self.config.subject.clone(),
        };
        let signer = Arc::new(VapidSigner::new(Arc::new(key), subject));
        if let Ok(mut m) = self.signers.lock() {
            m.insert(key_id, signer.clone());
        }
        Ok(signer)
    }

    /// Attempts every job once, concurrently, and sorts the results into a
    /// page outcome (retries scheduled with their due time). When `stop`
    /// turns true (the claim was lost), the attempts not answered yet are
    /// aborted and the outcome holds only those that were.
    pub(super) async fn attempt_all(
        &self,
        lane: &Lane,
        message: &Message,
        rules: &DeliveryRules,
        jobs: Vec<Job>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<PageOutcome, StoreError> {
        let now = self.now_ms();
        // The app's rules that apply to this message: quiet hours unless it
        // ignores them, caps unless it bypasses them.
        let asks = &message.accepted.rules;
        let quiet = rules.quiet_hours.filter(|_| !asks.ignore_quiet_hours);
        let caps = Some(rules.frequency_caps.as_slice()).filter(|c| asks.frequency_cap && !c.is_empty());
        let default_zone = rules.default_zone().zone();
        let deadline = message
            .accepted
            .created_at
            .max(message.accepted.send_at.unwrap_or(0))
            .saturating_add(i64::from(message.accepted.ttl) * 1000);
        // A message at a local time lives its TTL from its wave's time.
        let deadline_of = |sub: &StoredSubscription| match &asks.local {
            Some(local) => local
                .at_for(sub.time_zone.as_deref())
                .map_or(deadline, |at| deadline.max(at.saturating_add(i64::from(message.accepted.ttl) * 1000))),
            None => deadline,
        };
        let options = Arc::new(PushOptions {
            ttl: Ttl(message.accepted.ttl),
            urgency: message.accepted.urgency.as_deref().and_then(|u| u.parse::<Urgency>().ok()),
            topic: message.accepted.topic.as_deref().and_then(|t| Topic::new(t).ok()),
            ..PushOptions::default()
        });
        let payload = message.accepted.payload.clone().map(Bytes::from);
        // `auto`: Apple's push service gets the declarative message, which
        // Safari shows without a service worker; every other the classic one.
        let apple_payload = match message.accepted.format {
            MessageFormat::Auto => message.accepted.apple_payload.clone().map(Bytes::from),
            MessageFormat::Classic | MessageFormat::Declarative => None,
        };
        // A personal message is rendered per subscription (text by
        // language, templates over tags); the others were made once.
        let personal = match (message.accepted.personal, message.accepted.payload.as_deref()) {
            (true, Some(stored)) => Some(Personal::from_stored(stored)),
            _ => None,
        };
        let ttl = Duration::from_secs(u64::from(message.accepted.ttl));
        let mut outcome = PageOutcome::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut ready = Vec::with_capacity(jobs.len());
        // Each capped subscription's history, read once: checked here,
        // added to when its delivery is accepted.
        let mut histories: std::collections::HashMap<i64, SendHistory> = std::collections::HashMap::new();
        for job in jobs {
            let sub = &job.sub;
            if sub.subscription.expiration_time().is_some_and(|t| (t as i64) <= now) {
                self.metrics.count("expired", "subscription-expired");
                outcome.expired.push(sub.id);
                continue;
            }
            if now > deadline_of(sub) {
                self.metrics.count("failed", "ttl-expired");
                outcome.fail_with(
                    failure(sub, "ttl-expired", None),
                    example(sub, "its TTL ran out before it could be sent"),
                );
                continue;
            }
            if let Some(until) = quiet.and_then(|q| q.held_until_ms(now, sub.time_zone.as_deref(), &default_zone)) {
                self.metrics.count("held", HELD_REASON);
                let attempt = job.attempts_before;
                let held = NewRetry { subscription_id: sub.id, attempt, due_at: until, reason: HELD_REASON.into() };
                outcome.held.push(held);
                continue;
            }
            if let Some(caps) = caps {
                let history = SendHistory::from_stored(sub.send_history.as_deref());
                if let Some(rule) = history.over(caps, &asks.tags, now) {
                    self.metrics.count("capped", "capped");
                    let tag = rule.tag.as_deref().map(|t| format!(" of messages tagged {t:?}")).unwrap_or_default();
                    outcome.cap(example(sub, &format!("over the cap of {} per {}{tag}", rule.max, rule.per)));
                    continue;
                }
                histories.insert(sub.id, history);
            }
            if let Err(reason) = self.policy.check(sub.subscription.endpoint()) {
                tracing::warn!(subscription = sub.id, %reason, "endpoint refused by policy");
                self.metrics.count("failed", "endpoint-not-allowed");
                outcome.fail_with(failure(sub, "endpoint-not-allowed", None), example(sub, &reason));
                continue;
            }
            let signer = self.signer(lane, sub.vapid_key_id).await?;
            let gate = self.gate(sub.subscription.origin());
            let origin_permits = lane.origin_permits(sub.subscription.origin());
            let payload = match &personal {
                None => match &apple_payload {
                    Some(apple) if is_apple(&sub.subscription) => Some(apple.clone()),
                    _ => payload.clone(),
                },
                Some(personal) => {
                    let rendered = personal.as_ref().map_err(Clone::clone).and_then(|p| p.render(&sub.as_subscriber()));
                    match rendered {
                        Ok(out) => match out.apple_payload {
                            Some(apple) if is_apple(&sub.subscription) => Some(Bytes::from(apple)),
                            _ => out.payload.map(Bytes::from),
                        },
                        Err(e) => {
                            let reason = match e {
                                ComposeError::TooLarge { .. } => "payload-too-large",
                                _ => "template-failed",
                            };
                            self.metrics.count("failed", reason);
                            outcome.fail_with(failure(sub, reason, None), example(sub, &e.to_string()));
                            continue;
                        }
                    }
                }
            };
            ready.push((job, payload, signer, gate, origin_permits));
        }
        // A throttled message: the batch reserves its span of sending time
        // over every node (rounded up to the ms), and each delivery waits
        // for its place in it (fractions of a ms apart above 1,000 a second).
        let rate = i64::from(asks.rate_per_minute);
        let (first_slot, interval_us) = if rate > 0 && !ready.is_empty() {
            let (id, n) = (message.id().to_owned(), ready.len() as i64);
            let span_ms = (n * 60_000 + rate - 1) / rate;
            (lane.db(move |s| async move { s.reserve_sends(&id, span_ms, now).await }).await?, 60_000_000 / rate)
        } else {
            (now, 0)
        };
        for (i, (job, payload, signer, gate, origin_permits)) in ready.into_iter().enumerate() {
            let at_us = (first_slot - now) * 1000 + i as i64 * interval_us;
            let wait = Duration::from_micros(u64::try_from(at_us).unwrap_or(0));
            let (transport, options, in_flight, in_flight_gauge) =
                (lane.transport.clone(), options.clone(), lane.in_flight.clone(), self.metrics.in_flight.clone());
            tasks.spawn(async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let attempt = match gate.enter(origin_permits).await {
                    Err(wait) => Attempt::Deferred { wait },
                    Ok(_origin_permit) => {
                        let Ok(_permit) = in_flight.acquire_owned().await else {
                            return (job, Attempt::Retry { reason: "shutdown".into(), status: None, after: None }, None);
                        };
                        match request::build(
                            &job.sub.subscription,
                            payload.as_deref(),
                            &options,
                            Some(&signer),
                            SystemTime::now(),
                        ) {
                            Err(e) => {
                                let reason = FailReason::Request(e.to_string());
                                Attempt::Failed(reason.label(), reason.to_string(), None)
                            }
                            Ok(req) => {
                                in_flight_gauge.inc();
                                let started = tokio::time::Instant::now();
                                let o = transport.send(req).await;
                                in_flight_gauge.dec();
                                let took = started.elapsed();
                                gate.latency.observe(took.as_secs_f64());
                                gate.stats.record(&o, took);
                                match o {
                                    Outcome::Delivered { .. } => Attempt::Delivered,
                                    Outcome::Gone { .. } => Attempt::Gone,
                                    Outcome::Failed { reason } => {
                                        let mismatch = matches!(reason, FailReason::VapidKeyMismatch { .. });
                                        return (
                                            job,
                                            Attempt::Failed(reason.label(), reason.to_string(), reason.status()),
                                            mismatch.then(|| reason.to_string()),
                                        );
                                    }
                                    Outcome::Retry { reason, after } => {
                                        tracing::debug!(endpoint = %job.sub.subscription.endpoint(), %reason, "will retry");
                                        // Past the message's TTL a wait means nothing to it:
                                        // it fails as ttl-expired, and the origin is not
                                        // held back longer on this message's account.
                                        let after = after.map(|a| a.min(ttl));
                                        if let Some(after) = after {
                                            gate.slow_down(after);
                                        }
                                        Attempt::Retry { reason: reason.label(), status: reason.status(), after }
                                    }
                                }
                            }
                        }
                    }
                };
                (job, attempt, None)
            });
        }
        loop {
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                _ = stop.wait_for(|s| *s) => {
                    tasks.abort_all();
                    None
                }
            };
            let Some(joined) = joined else { break };
            let Ok((job, attempt, loud)) = joined else {
                outcome.fail("internal".into());
                continue;
            };
            if let Some(text) = loud {
                self.log_mismatch_once(job.sub.subscription.origin(), &text);
            }
            match attempt {
                Attempt::Delivered => {
                    self.metrics.delivered.inc();
                    outcome.delivered += 1;
                    if let (Some(caps), Some(mut history)) = (caps, histories.remove(&job.sub.id)) {
                        history.record(caps, &asks.tags, now);
                        outcome.histories.push((job.sub.id, history.to_stored()));
                    }
                }
                Attempt::Gone => {
                    self.metrics.gone.inc();
                    outcome.gone.push(job.sub.id);
                }
                Attempt::Failed(reason, detail, status) => {
                    tracing::debug!(subscription = job.sub.id, %reason, "delivery failed");
                    self.metrics.count("failed", &reason);
                    let example = example(&job.sub, &detail);
                    outcome.fail_with(failure(&job.sub, reason, status), example);
                }
                Attempt::Deferred { wait } => self.retry_or_give_up(
                    &mut outcome,
                    &job,
                    Unfinished::Deferred { wait },
                    None,
                    deadline_of(&job.sub),
                ),
                Attempt::Retry { reason, status, after } => {
                    let unfinished = Unfinished::Retry { reason: &reason, after };
                    self.retry_or_give_up(&mut outcome, &job, unfinished, status, deadline_of(&job.sub));
                }
            }
        }
        Ok(outcome)
    }

    /// Applies the retry policy ([`retry::next`]) to a delivery that is
    /// not finished, and records the decision in the page's outcome.
    fn retry_or_give_up(
        &self,
        outcome: &mut PageOutcome,
        job: &Job,
        unfinished: Unfinished<'_>,
        status: Option<u16>,
        deadline: i64,
    ) {
        let retry = &self.config.retry;
        let decision = retry::next(
            unfinished,
            job.attempts_before,
            retry.max_attempts,
            |n| backoff(retry, n),
            self.now_ms(),
            deadline,
        );
        match decision {
            Next::GiveUp { reason, detail } => {
                self.metrics.count("failed", &reason);
                let example = example(&job.sub, &detail);
                outcome.fail_with(failure(&job.sub, reason, status), example);
            }
            Next::Later { due_at, attempt, reason } => {
                self.metrics.count("retry", &reason);
                self.metrics.retries.inc();
                outcome.retries.push(NewRetry { subscription_id: job.sub.id, attempt, due_at, reason });
            }
        }
    }

    fn log_mismatch_once(&self, origin: &str, text: &str) {
        let first = self.mismatch_logged.lock().map(|mut s| s.insert(origin.to_owned())).unwrap_or(false);
        if first {
            tracing::error!(push_service = %origin, "{text}");
        }
    }
}

/// Whether a subscription is at Apple's push service.
fn is_apple(sub: &tocsin_protocol::Subscription) -> bool {
    sub.endpoint().host_str().is_some_and(|h| PushService::of_host(h) == PushService::Apple)
}
