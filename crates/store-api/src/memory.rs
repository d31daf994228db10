//! [`MemoryStore`]: the [`Store`] in memory, for tests of the code above the
//! store (the engine runs against it under tokio's paused clock). It keeps
//! the rules the SQL store keeps: a message starts once, work is claimed
//! under leases and tokens, a write under a lost claim writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use tocsin_audience::rules::{DeliveryRules, ZoneFilter};
use tocsin_audience::{TagPatch, Tags};

use crate::*;

/// Everything in memory, behind one lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    apps: Vec<AppRow>,
    keys: Vec<(VapidKeyRow, bool, i64)>,
    next_sub: i64,
    subs: BTreeMap<i64, StoredSubscription>,
    messages: BTreeMap<String, Message>,
    idempotency: HashMap<String, String>,
    failures: BTreeMap<(String, String), i64>,
    failure_examples: BTreeMap<(String, String), String>,
    shards: BTreeMap<(String, i64), ShardRow>,
    retries: BTreeMap<(String, i64), RetryRow>,
    tokens: Vec<(String, TokenRow)>,
    renewals: u64,
    refuse_renewals: bool,
    /// Heartbeats still to fail as with a database that does not answer.
    renewals_away: u32,
    /// Checkpoints still to fail as a database that is away would
    /// (nothing written), then answers to lose after writing.
    away: u32,
    lost_answers: u32,
    away_shard: i64,
    /// Shards claimed while a checkpoint's results were waiting.
    claims_while_away: u64,
    waiting: bool,
    secrets: HashMap<String, String>,
    purged: HashMap<AppId, Stats>,
    /// (app, day) → (unsubscribed, removed_created), as `daily_counts`.
    removed: BTreeMap<(AppId, i64), (i64, i64)>,
    /// (message, recipient, shown?) counted, as `event_receipts`.
    receipts: std::collections::HashSet<(String, String, bool)>,
    segments: BTreeMap<(AppId, String), SegmentRow>,
    /// Each throttled message's next free sending slot.
    throttle_next: HashMap<String, i64>,
}

#[derive(Debug)]
struct ShardRow {
    /// The wave of a message at a local time, and when it may be claimed.
    wave: Option<i64>,
    not_before: i64,
    delivered: i64,
    start_after: i64,
    end_at: i64,
    cursor: i64,
    done: bool,
    token: Option<String>,
    lease_until: i64,
}

#[derive(Debug)]
struct RetryRow {
    attempt: i64,
    due_at: i64,
    reason: String,
    token: Option<String>,
    lease_until: i64,
}

impl MemoryStore {
    /// An empty store with the default app.
    pub fn new() -> Self {
        let store = Self::default();
        store.lock().apps.push(AppRow {
            id: AppId::DEFAULT,
            name: DEFAULT_APP.into(),
            vapid_subject: None,
            user_signing_secret: None,
            cors_origins: None,
            client_tags: None,
            rules: DeliveryRules::default(),
            created_at: 0,
        });
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `away` checkpoints of shard number `shard` fail as with a
    /// database that does not answer (nothing written); the `lost` after
    /// them are written but answered the same way, as when a connection
    /// dies after a COMMIT. Other shards' calls succeed, so that a test
    /// sees whether other workers claim work meanwhile.
    pub fn go_away(&self, shard: i64, away: u32, lost: u32) {
        let mut st = self.lock();
        (st.away_shard, st.away, st.lost_answers) = (shard, away, lost);
    }

    /// Shards claimed while a checkpoint was failing: the engine should
    /// claim nothing new until its results are written.
    pub fn claims_while_away(&self) -> u64 {
        self.lock().claims_while_away
    }

    /// Heartbeats accepted so far (shards and retries), for tests.
    pub fn renewals(&self) -> u64 {
        self.lock().renewals
    }

    /// From now on every heartbeat is refused, as when another worker has
    /// claimed the work meanwhile (for tests of what a worker then does).
    pub fn refuse_renewals(&self) {
        self.lock().refuse_renewals = true;
    }

    /// The next `n` heartbeats of shards fail as with a database that does
    /// not answer (the claim stays as it is).
    pub fn fail_renewals(&self, n: u32) {
        self.lock().renewals_away = n;
    }
}

impl State {
    /// The expression a target names, if it is one: a segment is looked
    /// up now (a deleted one matches no one).
    fn condition(&self, app: AppId, target: &Target) -> Option<Option<tocsin_audience::Expr>> {
        match target {
            Target::Where(c) => Some(Some(c.expr().clone())),
            Target::Segment(name) => {
                Some(self.segments.get(&(app, name.clone())).map(|seg| seg.condition.expr().clone()))
            }
            _ => None,
        }
    }

    /// The ids of `app`'s subscriptions that `target` reaches, in order.
    fn audience<'a>(
        &'a self,
        app: AppId,
        target: &'a Target,
        from: impl Iterator<Item = &'a StoredSubscription> + 'a,
    ) -> impl Iterator<Item = &'a StoredSubscription> + 'a {
        let (target, slices) = target.peel();
        let condition = self.condition(app, target);
        let now = crate::now_ms();
        from.filter(move |s| {
            s.app_id == app
                && slices.iter().all(|slice| slice.contains(s.id))
                && match (target, &condition) {
                    (Target::All(_), _) => true,
                    (Target::Topic(t), _) => s.topics.contains(t),
                    (Target::UserIds(ids), _) => s.user_id.as_ref().is_some_and(|u| ids.contains(u)),
                    (Target::SubscriptionIds(ids), _) => ids.contains(&s.id),
                    (_, Some(Some(expr))) => expr.matches(&s.as_subscriber(), now),
                    (_, _) => false,
                }
        })
    }
}

impl State {
    /// Stores a new message, scheduled or queued.
    fn insert_message(&mut self, new: &NewMessage) -> Message {
        let state = if new.send_at.is_some_and(|t| t > new.created_at) {
            MessageState::Scheduled
        } else {
            MessageState::Queued
        };
        let m = Message {
            accepted: new.clone(),
            state,
            updated_at: new.created_at,
            cursor: 0,
            cursor_end: 0,
            counts: Counts::default(),
        };
        self.messages.insert(m.id().to_owned(), m.clone());
        m
    }

    /// Removes subscriptions and counts them by day, as the SQL store does.
    fn remove(&mut self, ids: impl IntoIterator<Item = i64>, now: i64) -> usize {
        let mut n = 0;
        for id in ids {
            if let Some(s) = self.subs.remove(&id) {
                self.removed.entry((s.app_id, now.div_euclid(DAY_MS))).or_default().0 += 1;
                self.removed.entry((s.app_id, s.created_at.div_euclid(DAY_MS))).or_default().1 += 1;
                n += 1;
            }
        }
        n
    }

    fn message_mut(&mut self, id: &str) -> Result<&mut Message> {
        self.messages.get_mut(id).ok_or_else(|| StoreError::Corrupt(format!("no message {id}")))
    }

    fn upsert(&mut self, new: &NewSubscription, now: i64) -> Result<StoredSubscription> {
        let endpoint = new.subscription.endpoint().as_str();
        let existing = self.subs.values().find(|s| s.subscription.endpoint().as_str() == endpoint).map(|s| s.id);
        let row = match existing.and_then(|id| self.subs.get_mut(&id)) {
            Some(row) if row.app_id != new.app => {
                return Err(StoreError::Conflict("this endpoint is subscribed in another app".into()));
            }
            Some(row)
                if !(row.subscription.auth().matches(new.subscription.auth().as_bytes())
                    && row.subscription.p256dh() == new.subscription.p256dh()) =>
            {
                return Err(StoreError::NotProven);
            }
            Some(row) => {
                if !new.keep_stored_key {
                    row.vapid_key_id = new.vapid_key_id;
                }
                row.subscription = new.subscription.clone();
                if new.user_id.is_some() {
                    row.user_id = new.user_id.clone();
                }
                if let Some(t) = new.topics_once() {
                    row.topics = t;
                }
                if let Some(patch) = &new.tags {
                    row.tags = patch.apply(&row.tags).map_err(|_| StoreError::TooManyTags)?;
                }
                if let Some(l) = &new.language {
                    row.language = Some(l.as_str().to_owned());
                }
                if let Some(z) = &new.time_zone {
                    row.time_zone = Some(z.as_str().to_owned());
                }
                row.updated_at = now;
                row.last_seen_at = now;
                row.clone()
            }
            None => {
                let tags = match &new.tags {
                    Some(patch) => patch.apply(&Tags::default()).map_err(|_| StoreError::TooManyTags)?,
                    None => Tags::default(),
                };
                self.next_sub += 1;
                let row = StoredSubscription {
                    id: self.next_sub,
                    subscription: new.subscription.clone(),
                    user_id: new.user_id.clone(),
                    topics: new.topics_once().unwrap_or_default(),
                    tags,
                    language: new.language.as_ref().map(|l| l.as_str().to_owned()),
                    time_zone: new.time_zone.as_ref().map(|z| z.as_str().to_owned()),
                    vapid_key_id: new.vapid_key_id,
                    app_id: new.app,
                    created_at: now,
                    updated_at: now,
                    last_seen_at: now,
                    send_history: None,
                };
                self.subs.insert(row.id, row.clone());
                row
            }
        };
        Ok(row)
    }

    fn key(&self, id: i64) -> Option<VapidKeyRow> {
        let (k, _, _) = self.keys.iter().find(|(k, _, _)| k.id == id)?;
        let subject = self.apps.iter().find(|a| a.id == k.app_id).and_then(|a| a.vapid_subject.clone());
        Some(VapidKeyRow { subject, ..k.clone() })
    }

    fn put_key(
        &mut self,
        app: AppId,
        public_key: &str,
        private_key: &str,
        current: bool,
        now: i64,
    ) -> Result<VapidKeyRow> {
        if self.keys.iter().any(|(k, _, _)| k.public_key == public_key && k.app_id != app) {
            return Err(StoreError::Conflict("this VAPID key belongs to another app".into()));
        }
        if current {
            for (_, c, _) in self.keys.iter_mut().filter(|(k, _, _)| k.app_id == app) {
                *c = false;
            }
        }
        let id = match self.keys.iter_mut().find(|(k, _, _)| k.public_key == public_key) {
            Some((k, c, _)) => {
                k.private_key = private_key.to_owned();
                *c |= current;
                k.id
            }
            None => {
                let id = self.keys.iter().map(|(k, _, _)| k.id).max().unwrap_or(0) + 1;
                let row = VapidKeyRow {
                    id,
                    app_id: app,
                    public_key: public_key.to_owned(),
                    private_key: private_key.to_owned(),
                    subject: None,
                };
                self.keys.push((row, current, now));
                id
            }
        };
        self.key(id).ok_or_else(|| StoreError::Corrupt("a key just stored is missing".into()))
    }

    /// A page's or a batch's outcome, as the SQL store's `apply_outcome`.
    fn apply(
        &mut self,
        message_id: &str,
        outcome: &PageOutcome,
        pending_delta: Pending,
        now: i64,
    ) -> Result<MessageState> {
        let m = self.message_mut(message_id)?;
        let c = &mut m.counts;
        c.delivered += outcome.delivered;
        c.failed += outcome.failed_total();
        c.gone += outcome.gone.len() as i64;
        c.expired += outcome.expired.len() as i64;
        c.capped += outcome.capped;
        let state = m.state;
        if state == MessageState::Cancelled {
            m.counts.pending_retry = 0;
            m.counts.held = 0;
        } else {
            m.counts.pending_retry += pending_delta.retry;
            m.counts.held += pending_delta.held;
        }
        if outcome.capped > 0 {
            *self.failures.entry((message_id.to_owned(), CAPPED_REASON.to_owned())).or_default() += outcome.capped;
        }
        for (id, history) in &outcome.histories {
            if let Some(sub) = self.subs.get_mut(id) {
                sub.send_history = Some(history.clone());
            }
        }
        for (reason, n) in &outcome.failed {
            *self.failures.entry((message_id.to_owned(), reason.clone())).or_default() += n;
        }
        for (reason, example) in &outcome.examples {
            self.failure_examples.entry((message_id.to_owned(), reason.clone())).or_insert_with(|| example.clone());
        }
        self.remove(outcome.gone.iter().chain(&outcome.expired).copied(), now);
        if state != MessageState::Cancelled {
            for r in outcome.retries.iter().chain(&outcome.held) {
                self.retries.entry((message_id.to_owned(), r.subscription_id)).or_insert(RetryRow {
                    attempt: r.attempt,
                    due_at: r.due_at,
                    reason: r.reason.clone(),
                    token: None,
                    lease_until: 0,
                });
            }
        }
        Ok(state)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn bound_to_runtime(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl AppStore for MemoryStore {
    async fn apps(&self) -> Result<Vec<AppRow>> {
        Ok(self.lock().apps.clone())
    }

    async fn app(&self, name: &str) -> Result<Option<AppRow>> {
        Ok(self.lock().apps.iter().find(|a| a.name == name).cloned())
    }

    async fn app_rules(&self, app: AppId) -> Result<DeliveryRules> {
        Ok(self.lock().apps.iter().find(|a| a.id == app).map(|a| a.rules.clone()).unwrap_or_default())
    }

    async fn set_app_rules(&self, app: AppId, rules: &DeliveryRules) -> Result<bool> {
        let mut st = self.lock();
        let Some(a) = st.apps.iter_mut().find(|a| a.id == app) else { return Ok(false) };
        a.rules = rules.clone();
        Ok(true)
    }

    async fn create_app(&self, new: &NewApp, public_key: &str, private_key: &str, now: i64) -> Result<Option<AppRow>> {
        let mut st = self.lock();
        if st.apps.iter().any(|a| a.name == new.name) {
            return Ok(None);
        }
        let app = AppRow {
            id: AppId(st.apps.iter().map(|a| a.id.0).max().unwrap_or(0) + 1),
            name: new.name.clone(),
            vapid_subject: new.vapid_subject.clone(),
            user_signing_secret: new.user_signing_secret.clone(),
            cors_origins: new.cors_origins.clone(),
            client_tags: new.client_tags,
            rules: DeliveryRules::default(),
            created_at: now,
        };
        st.apps.push(app.clone());
        st.put_key(app.id, public_key, private_key, true, now)?;
        Ok(Some(app))
    }

    async fn current_vapid_key(&self, app: AppId) -> Result<Option<VapidKeyRow>> {
        let st = self.lock();
        let id = st.keys.iter().rev().find(|(k, current, _)| *current && k.app_id == app).map(|(k, _, _)| k.id);
        Ok(id.and_then(|id| st.key(id)))
    }

    async fn make_vapid_key_current(
        &self,
        app: AppId,
        public_key: &str,
        private_key: &str,
        now: i64,
    ) -> Result<VapidKeyRow> {
        self.lock().put_key(app, public_key, private_key, true, now)
    }

    async fn add_vapid_key(&self, app: AppId, public_key: &str, private_key: &str, now: i64) -> Result<VapidKeyRow> {
        self.lock().put_key(app, public_key, private_key, false, now)
    }

    async fn vapid_key(&self, id: i64) -> Result<Option<VapidKeyRow>> {
        Ok(self.lock().key(id))
    }

    async fn vapid_key_id(&self, app: AppId, public_key: &str) -> Result<Option<i64>> {
        let st = self.lock();
        Ok(st.keys.iter().find(|(k, _, _)| k.app_id == app && k.public_key == public_key).map(|(k, _, _)| k.id))
    }

    async fn vapid_keys(&self, app: AppId) -> Result<Vec<VapidKeyInfo>> {
        let st = self.lock();
        Ok(st
            .keys
            .iter()
            .filter(|(k, _, _)| k.app_id == app)
            .map(|(k, current, created_at)| VapidKeyInfo {
                id: k.id,
                public_key: k.public_key.clone(),
                current: *current,
                created_at: *created_at,
                subscriptions: st.subs.values().filter(|s| s.vapid_key_id == k.id).count() as i64,
            })
            .collect())
    }

    async fn retire_vapid_key(&self, app: AppId, id: i64, force: bool, now: i64) -> Result<RetireKey> {
        let mut st = self.lock();
        let Some((_, current, _)) = st.keys.iter().find(|(k, _, _)| k.id == id && k.app_id == app) else {
            return Ok(RetireKey::NotFound);
        };
        if *current {
            return Ok(RetireKey::Current);
        }
        let n = st.subs.values().filter(|s| s.vapid_key_id == id).count() as i64;
        if n > 0 && !force {
            return Ok(RetireKey::InUse(n));
        }
        let gone: Vec<i64> = st.subs.values().filter(|s| s.vapid_key_id == id).map(|s| s.id).collect();
        st.remove(gone, now);
        st.keys.retain(|(k, _, _)| k.id != id);
        Ok(RetireKey::Retired { removed: n })
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String> {
        Ok(self.lock().secrets.entry(name.to_owned()).or_insert_with(|| candidate.to_owned()).clone())
    }
}

#[async_trait]
impl SubscriptionStore for MemoryStore {
    async fn upsert_subscription(&self, new: &NewSubscription, now: i64) -> Result<StoredSubscription> {
        self.lock().upsert(new, now)
    }

    async fn upsert_subscriptions(&self, new: &[NewSubscription], now: i64) -> Result<Vec<StoredSubscription>> {
        let mut st = self.lock();
        new.iter().map(|n| st.upsert(n, now)).collect()
    }

    async fn delete_subscription_by_endpoint(&self, app: AppId, endpoint: &str, auth: &str, now: i64) -> Result<bool> {
        let mut st = self.lock();
        let id = st.subs.values().find(|s| {
            s.app_id == app
                && s.subscription.endpoint().as_str() == endpoint
                && s.subscription.auth().matches_base64(auth)
        });
        let id = id.map(|s| s.id);
        Ok(st.remove(id, now) > 0)
    }

    async fn subscription_by_endpoint(&self, app: AppId, endpoint: &str) -> Result<Option<StoredSubscription>> {
        Ok(self
            .lock()
            .subs
            .values()
            .find(|s| s.app_id == app && s.subscription.endpoint().as_str() == endpoint)
            .cloned())
    }

    async fn delete_subscription(&self, app: AppId, id: i64, now: i64) -> Result<bool> {
        let mut st = self.lock();
        if st.subs.get(&id).is_some_and(|s| s.app_id == app) {
            return Ok(st.remove([id], now) > 0);
        }
        Ok(false)
    }

    async fn replace_subscription(&self, app: AppId, old_id: i64, new_id: i64, _now: i64) -> Result<bool> {
        let mut st = self.lock();
        let Some(old) = st.subs.get(&old_id).filter(|s| s.app_id == app && old_id != new_id).cloned() else {
            return Ok(false);
        };
        if let Some(new) = st.subs.get_mut(&new_id).filter(|s| s.app_id == app) {
            new.created_at = old.created_at;
        }
        Ok(st.subs.remove(&old_id).is_some())
    }

    async fn app_subscription(&self, app: AppId, id: i64) -> Result<Option<StoredSubscription>> {
        Ok(self.lock().subs.get(&id).filter(|s| s.app_id == app).cloned())
    }

    async fn subscription(&self, id: i64) -> Result<Option<StoredSubscription>> {
        Ok(self.lock().subs.get(&id).cloned())
    }

    async fn page_subscriptions(
        &self,
        app: AppId,
        target: &Target,
        zones: Option<&ZoneFilter>,
        after: i64,
        upto: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PageRow>> {
        let st = self.lock();
        let upto = upto.unwrap_or(i64::MAX);
        let range = st.subs.range(after.saturating_add(1)..).map(|(_, s)| s).take_while(|s| s.id <= upto);
        Ok(st
            .audience(app, target, range)
            .filter(|s| zones.is_none_or(|z| z.matches(s.time_zone.as_deref())))
            .take(limit.max(0) as usize)
            .map(|s| PageRow::Sub(s.clone()))
            .collect())
    }

    async fn count_subscriptions(&self, app: AppId, target: &Target) -> Result<i64> {
        let st = self.lock();
        Ok(st.audience(app, target, st.subs.values()).count() as i64)
    }

    async fn patch_tags(&self, app: AppId, of: &TagsOf, patch: &TagPatch, now: i64) -> Result<TagsPatched> {
        let mut st = self.lock();
        let ids: Vec<i64> = st
            .subs
            .values()
            .filter(|s| {
                s.app_id == app
                    && match of {
                        TagsOf::Subscription(id) => s.id == *id,
                        TagsOf::User(u) => s.user_id.as_deref() == Some(u.as_str()),
                    }
            })
            .map(|s| s.id)
            .collect();
        let mut changed = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(s) = st.subs.get(id) else { continue };
            match patch.apply(&s.tags) {
                Ok(tags) => changed.push((*id, tags)),
                Err(e) => {
                    let tags = e.would_carry().unwrap_or(tocsin_audience::tags::MAX_TAGS + 1);
                    return Ok(TagsPatched::TooMany { subscription_id: *id, tags });
                }
            }
        }
        let mut rows = Vec::with_capacity(changed.len());
        for (id, tags) in changed {
            if let Some(s) = st.subs.get_mut(&id) {
                if s.tags != tags {
                    s.tags = tags;
                    s.updated_at = now;
                }
                rows.push(s.clone());
            }
        }
        Ok(TagsPatched::Done(rows))
    }
}

#[async_trait]
impl SegmentStore for MemoryStore {
    async fn create_segment(&self, app: AppId, segment: &SegmentRow) -> Result<bool> {
        let mut st = self.lock();
        if st.segments.contains_key(&(app, segment.name.clone())) {
            return Ok(false);
        }
        st.segments.insert((app, segment.name.clone()), segment.clone());
        Ok(true)
    }

    async fn segments(&self, app: AppId) -> Result<Vec<SegmentRow>> {
        Ok(self.lock().segments.iter().filter(|((a, _), _)| *a == app).map(|(_, s)| s.clone()).collect())
    }

    async fn segment(&self, app: AppId, name: &str) -> Result<Option<SegmentRow>> {
        Ok(self.lock().segments.get(&(app, name.to_owned())).cloned())
    }

    async fn delete_segment(&self, app: AppId, name: &str) -> Result<bool> {
        Ok(self.lock().segments.remove(&(app, name.to_owned())).is_some())
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn record_interaction(
        &self,
        app: AppId,
        message_id: &str,
        recipient: &str,
        interaction: Interaction,
        _action: Option<&str>,
        _now: i64,
    ) -> Result<bool> {
        let mut st = self.lock();
        if st.messages.get(message_id).is_none_or(|m| m.app_id() != app) {
            return Ok(false);
        }
        if !st.receipts.insert((message_id.to_owned(), recipient.to_owned(), interaction == Interaction::Shown)) {
            return Ok(true);
        }
        let Some(m) = st.messages.get_mut(message_id) else { return Ok(false) };
        match interaction {
            Interaction::Shown => m.counts.shown += 1,
            Interaction::Clicked => m.counts.clicked += 1,
        }
        Ok(true)
    }

    async fn insert_message(&self, new: &NewMessage) -> Result<(Message, bool)> {
        let mut st = self.lock();
        let key = new.idempotency_key.as_ref().map(|k| format!("{}:{k}", new.app.0));
        if let Some(id) = key.as_ref().and_then(|k| st.idempotency.get(k)) {
            if let Some(m) = st.messages.get(id) {
                return Ok((m.clone(), false));
            }
        }
        if let Some(m) = st.messages.get(&new.id) {
            return Ok((m.clone(), false));
        }
        let m = st.insert_message(new);
        if let Some(k) = key {
            st.idempotency.insert(k, m.id().to_owned());
        }
        Ok((m, true))
    }

    async fn app_message(&self, app: AppId, id: &str) -> Result<Option<Message>> {
        Ok(self.lock().messages.get(id).filter(|m| m.app_id() == app).cloned())
    }

    async fn message(&self, id: &str) -> Result<Option<Message>> {
        Ok(self.lock().messages.get(id).cloned())
    }

    async fn list_messages(&self, app: AppId, before: Option<&str>, limit: i64) -> Result<Vec<Message>> {
        let st = self.lock();
        let mut all: Vec<&Message> =
            st.messages.values().filter(|m| m.app_id() == app && m.accepted.rules.ab_part.is_none()).collect();
        all.sort_by(|a, b| (b.accepted.created_at, b.id()).cmp(&(a.accepted.created_at, a.id())));
        let bound = before.and_then(|b| st.messages.get(b)).map(|m| (m.accepted.created_at, m.id().to_owned()));
        Ok(all
            .into_iter()
            .filter(|m| bound.as_ref().is_none_or(|(t, id)| (m.accepted.created_at, m.id()) < (*t, id.as_str())))
            .take(limit.max(0) as usize)
            .cloned()
            .collect())
    }

    async fn cancel_message(&self, app: AppId, id: &str, now: i64) -> Result<Option<Message>> {
        let mut st = self.lock();
        if st.messages.get(id).is_none_or(|m| m.app_id() != app) {
            return Ok(None);
        }
        // An A/B test's parts go with it.
        let parts: Vec<String> = st
            .messages
            .values()
            .filter(|m| m.accepted.rules.ab_part.as_ref().is_some_and(|p| p.parent == id))
            .map(|m| m.id().to_owned())
            .collect();
        for mid in std::iter::once(id.to_owned()).chain(parts) {
            let Some(m) = st.messages.get_mut(&mid) else { continue };
            if matches!(m.state, MessageState::Scheduled | MessageState::Queued | MessageState::Sending) {
                m.state = MessageState::Cancelled;
                m.counts.pending_retry = 0;
                m.counts.held = 0;
                m.updated_at = now;
                for ((sid, _), shard) in st.shards.iter_mut() {
                    if *sid == mid && !shard.done {
                        shard.done = true;
                        shard.lease_until = 0;
                    }
                }
                st.retries.retain(|(rid, _), _| *rid != mid);
            }
        }
        Ok(st.messages.get(id).cloned())
    }

    async fn message_failure_examples(&self, id: &str) -> Result<Vec<(String, String)>> {
        let st = self.lock();
        Ok(st.failure_examples.iter().filter(|((m, _), _)| m == id).map(|((_, r), e)| (r.clone(), e.clone())).collect())
    }

    async fn message_failures(&self, id: &str) -> Result<Vec<(String, i64)>> {
        let st = self.lock();
        Ok(st.failures.iter().filter(|((m, _), _)| m == id).map(|((_, r), n)| (r.clone(), *n)).collect())
    }

    async fn wave_progress(&self, id: &str) -> Result<Vec<WaveProgress>> {
        let st = self.lock();
        let mut waves: BTreeMap<i64, WaveProgress> = BTreeMap::new();
        for ((_, _), row) in st.shards.iter().filter(|((m, _), _)| m == id) {
            let Some(wave) = row.wave else { continue };
            let w = waves.entry(wave).or_insert(WaveProgress { wave, shards: 0, done: 0, delivered: 0 });
            w.shards += 1;
            w.done += i64::from(row.done);
            w.delivered += row.delivered;
        }
        Ok(waves.into_values().collect())
    }

    async fn purge_messages(&self, before: i64, limit: i64) -> Result<u64> {
        let mut st = self.lock();
        let old: Vec<String> = st
            .messages
            .values()
            .filter(|m| matches!(m.state, MessageState::Done | MessageState::Cancelled) && m.updated_at < before)
            .take(limit.max(0) as usize)
            .map(|m| m.id().to_owned())
            .collect();
        for id in &old {
            if let Some(m) = st.messages.remove(id) {
                let purged = st.purged.entry(m.app_id()).or_default();
                purged.messages += 1;
                purged.delivered += m.counts.delivered;
                purged.failed += m.counts.failed;
                purged.removed += m.counts.gone + m.counts.expired;
            }
            st.shards.retain(|(mid, _), _| mid != id);
            st.retries.retain(|(mid, _), _| mid != id);
            st.failures.retain(|(mid, _), _| mid != id);
            st.failure_examples.retain(|(mid, _), _| mid != id);
        }
        Ok(old.len() as u64)
    }
}

#[async_trait]
impl WorkStore for MemoryStore {
    async fn start_message(&self, id: &str, target: &Target, shard_size: i64, now: i64) -> Result<bool> {
        let mut st = self.lock();
        let startable =
            st.messages.get(id).is_some_and(|m| matches!(m.state, MessageState::Scheduled | MessageState::Queued));
        let Some(m) = st.messages.get(id).filter(|_| startable) else { return Ok(false) };
        let (app, local) = (m.app_id(), m.accepted.rules.local.clone());
        let reached = local.as_ref().and_then(|l| l.reached());
        let audience: Vec<(i64, Option<String>)> = st
            .audience(app, target, st.subs.values())
            .filter(|s| reached.as_ref().is_none_or(|z| z.matches(s.time_zone.as_deref())))
            .map(|s| (s.id, s.time_zone.clone()))
            .collect();
        let zones_present: std::collections::BTreeSet<Option<String>> = audience.iter().map(|a| a.1.clone()).collect();
        let audience: Vec<i64> = audience.into_iter().map(|a| a.0).collect();
        let (targeted, last) = (audience.len() as i64, audience.last().copied().unwrap_or(0));
        let m = st.message_mut(id)?;
        m.state = MessageState::Sending;
        m.updated_at = now;
        m.counts.targeted = targeted;
        m.cursor_end = last;
        let waves: Vec<(Option<i64>, i64)> = match &local {
            None => vec![(None, 0)],
            Some(l) => l.waves_for(&zones_present).into_iter().map(|(i, at)| (Some(i), at)).collect(),
        };
        let ranges = shard_ranges(targeted, last, shard_size);
        let mut n = 0;
        for (wave, not_before) in waves {
            for (start_after, end_at) in &ranges {
                let row = ShardRow {
                    wave,
                    not_before,
                    delivered: 0,
                    start_after: *start_after,
                    end_at: *end_at,
                    cursor: *start_after,
                    done: false,
                    token: None,
                    lease_until: 0,
                };
                st.shards.insert((id.to_owned(), n), row);
                n += 1;
            }
        }
        Ok(true)
    }

    async fn next_startable_message(&self, now: i64) -> Result<Option<Message>> {
        let st = self.lock();
        let mut ready: Vec<&Message> = st
            .messages
            .values()
            .filter(|m| {
                m.state == MessageState::Queued
                    || (m.state == MessageState::Scheduled && m.accepted.send_at.is_some_and(|t| t <= now))
            })
            .collect();
        ready.sort_by(|a, b| (a.accepted.created_at, a.id()).cmp(&(b.accepted.created_at, b.id())));
        Ok(ready.first().map(|m| (*m).clone()))
    }

    async fn claim_shard(&self, claim: &Claim, now: i64, lease_ms: i64) -> Result<Option<Shard>> {
        let mut st = self.lock();
        if st.waiting {
            st.claims_while_away += 1;
        }
        let sending = |st: &State, id: &str| {
            st.messages.get(id).filter(|m| m.state == MessageState::Sending).map(|m| m.accepted.created_at)
        };
        let mut open: Vec<(i64, (String, i64))> = st
            .shards
            .iter()
            .filter(|(_, s)| !s.done && s.lease_until < now && s.not_before <= now)
            .filter_map(|(k, _)| sending(&st, &k.0).map(|created| (created, k.clone())))
            .collect();
        open.sort_by_key(|(created, (_, shard))| (*created, *shard));
        let Some((_, key)) = open.into_iter().next() else { return Ok(None) };
        let wave = st.shards.get(&key).and_then(|r| r.wave);
        let zones = wave.and_then(|w| {
            let local = st.messages.get(&key.0)?.accepted.rules.local.as_ref()?;
            Some(local.waves.get(usize::try_from(w).ok()?)?.filter.clone())
        });
        let Some(row) = st.shards.get_mut(&key) else { return Ok(None) };
        row.token = Some(claim.token.clone());
        row.lease_until = now + lease_ms;
        Ok(Some(Shard {
            token: claim.token.clone(),
            message_id: key.0,
            shard: key.1,
            start_after: row.start_after,
            end_at: row.end_at,
            cursor: row.cursor,
            zones,
        }))
    }

    async fn defer_shard(&self, shard: &Shard, until: i64) -> Result<bool> {
        let mut st = self.lock();
        match st.shards.get_mut(&(shard.message_id.clone(), shard.shard)) {
            Some(row) if !row.done && row.token.as_deref() == Some(shard.token.as_str()) => {
                row.not_before = until;
                row.lease_until = 0;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn throttle_next(&self, message_id: &str) -> Result<i64> {
        Ok(self.lock().throttle_next.get(message_id).copied().unwrap_or(0))
    }

    async fn renew_shard(&self, shard: &Shard, now: i64, lease_ms: i64) -> Result<bool> {
        let mut st = self.lock();
        if st.refuse_renewals {
            return Ok(false);
        }
        if st.renewals_away > 0 {
            st.renewals_away -= 1;
            return Err(StoreError::Unavailable("the test's database is away".into()));
        }
        let held = match st.shards.get_mut(&(shard.message_id.clone(), shard.shard)) {
            Some(row) if !row.done && row.token.as_deref() == Some(shard.token.as_str()) => {
                row.lease_until = now + lease_ms;
                true
            }
            _ => false,
        };
        st.renewals += u64::from(held);
        Ok(held)
    }

    async fn checkpoint_shard(
        &self,
        shard: &Shard,
        progress: &ShardProgress,
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<Option<MessageState>> {
        let mut st = self.lock();
        if shard.shard != st.away_shard {
            return st.checkpoint(shard, progress, outcome, now);
        }
        if st.away > 0 {
            st.away -= 1;
            st.waiting = true;
            return Err(StoreError::Unavailable("the test's database is away".into()));
        }
        let lose = st.lost_answers > 0;
        if lose {
            st.lost_answers -= 1;
        }
        st.waiting = lose;
        let answer = st.checkpoint(shard, progress, outcome, now);
        if lose {
            return Err(StoreError::Unavailable("the answer was lost with the connection".into()));
        }
        answer
    }

    async fn claim_retries(&self, claim: &Claim, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<RetryItem>> {
        let mut st = self.lock();
        let mut due: Vec<(i64, (String, i64))> = st
            .retries
            .iter()
            .filter(|(k, r)| {
                r.due_at <= now
                    && r.lease_until < now
                    && st.messages.get(&k.0).is_some_and(|m| m.state == MessageState::Sending)
            })
            .map(|(k, r)| (r.due_at, k.clone()))
            .collect();
        due.sort();
        let mut items = Vec::new();
        for (_, key) in due.into_iter().take(limit.max(0) as usize) {
            if let Some(r) = st.retries.get_mut(&key) {
                r.token = Some(claim.token.clone());
                r.lease_until = now + lease_ms;
                items.push(RetryItem {
                    message_id: key.0.clone(),
                    subscription_id: key.1,
                    attempt: r.attempt,
                    reason: r.reason.clone(),
                });
            }
        }
        Ok(items)
    }

    async fn defer_retries(&self, message_id: &str, token: &str, until: i64) -> Result<bool> {
        let mut st = self.lock();
        let mut any = false;
        for ((m, _), r) in st.retries.iter_mut() {
            if m == message_id && r.token.as_deref() == Some(token) {
                (r.due_at, r.lease_until, r.token) = (until, 0, None);
                any = true;
            }
        }
        Ok(any)
    }

    async fn renew_retries(&self, token: &str, now: i64, lease_ms: i64) -> Result<bool> {
        let mut st = self.lock();
        if st.refuse_renewals {
            return Ok(false);
        }
        let mut held = false;
        for r in st.retries.values_mut().filter(|r| r.token.as_deref() == Some(token)) {
            r.lease_until = now + lease_ms;
            held = true;
        }
        st.renewals += u64::from(held);
        Ok(held)
    }

    async fn record_retries(
        &self,
        message_id: &str,
        token: &str,
        items: &[RetryItem],
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<bool> {
        let mut st = self.lock();
        let key = |i: &RetryItem| (message_id.to_owned(), i.subscription_id);
        if !items.iter().all(|i| st.retries.get(&key(i)).is_some_and(|r| r.token.as_deref() == Some(token))) {
            return Ok(false);
        }
        for i in items {
            st.retries.remove(&key(i));
        }
        st.apply(message_id, outcome, Pending::after(outcome, items), now)?;
        Ok(true)
    }

    async fn reserve_sends(&self, message_id: &str, span_ms: i64, now: i64) -> Result<i64> {
        let mut st = self.lock();
        let next = st.throttle_next.entry(message_id.to_owned()).or_insert(0);
        let start = (*next).max(now);
        *next = start.saturating_add(span_ms);
        Ok(start)
    }

    async fn try_finish_message(&self, id: &str, now: i64) -> Result<bool> {
        let mut st = self.lock();
        let open = st.shards.iter().any(|((m, _), s)| m == id && !s.done) || st.retries.keys().any(|(m, _)| m == id);
        match st.messages.get_mut(id) {
            Some(m) if m.state == MessageState::Sending && !open => {
                m.state = MessageState::Done;
                m.updated_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn sending_message_ids(&self) -> Result<Vec<String>> {
        let st = self.lock();
        Ok(st.messages.values().filter(|m| m.state == MessageState::Sending).map(|m| m.id().to_owned()).collect())
    }

    async fn advance_ab_test(&self, id: &str, step: &AbStep, now: i64) -> Result<bool> {
        let mut st = self.lock();
        let Some(m) = st.messages.get_mut(id).filter(|m| (m.state, m.accepted.send_at) == step.from) else {
            return Ok(false);
        };
        m.accepted.rules = step.rules.clone();
        m.accepted.send_at = step.send_at;
        m.state = step.state;
        m.updated_at = now;
        for child in &step.children {
            if !st.messages.contains_key(&child.id) {
                st.insert_message(child);
            }
        }
        Ok(true)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn insert_token(
        &self,
        name: &str,
        hash: &str,
        scope: TokenScope,
        app: Option<AppId>,
        now: i64,
    ) -> Result<()> {
        let row = TokenRow { name: name.to_owned(), scope, app, created_at: now, last_used_at: None };
        let mut st = self.lock();
        if let Some(a) = app.filter(|a| !st.apps.iter().any(|r| r.id == *a)) {
            return Err(StoreError::Conflict(format!("there is no app {}", a.0)));
        }
        st.tokens.push((hash.to_owned(), row));
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        Ok(self.lock().tokens.iter().find(|(h, _)| h == hash).map(|(_, t)| t.clone()))
    }

    async fn touch_token(&self, hash: &str, now: i64) -> Result<()> {
        if let Some((_, t)) = self.lock().tokens.iter_mut().find(|(h, _)| h == hash) {
            t.last_used_at = Some(now);
        }
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        Ok(self.lock().tokens.iter().map(|(_, t)| t.clone()).collect())
    }

    async fn revoke_token(&self, name: &str) -> Result<u64> {
        let mut st = self.lock();
        let before = st.tokens.len();
        st.tokens.retain(|(_, t)| t.name != name);
        Ok((before - st.tokens.len()) as u64)
    }
}

#[async_trait]
impl StatsStore for MemoryStore {
    async fn count_by_host(&self, app: AppId) -> Result<Vec<(String, i64)>> {
        let st = self.lock();
        let mut hosts: BTreeMap<String, i64> = BTreeMap::new();
        for s in st.subs.values().filter(|s| s.app_id == app) {
            let url = s.subscription.endpoint();
            let host = match url.port() {
                Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_owned(),
            };
            *hosts.entry(host).or_default() += 1;
        }
        Ok(hosts.into_iter().collect())
    }

    async fn daily_stats(&self, app: AppId, first_day: i64, last_day: i64) -> Result<Vec<DailyStats>> {
        let st = self.lock();
        let mut days: BTreeMap<i64, DailyStats> =
            (first_day..=last_day).map(|day| (day, DailyStats { day, ..DailyStats::default() })).collect();
        for s in st.subs.values().filter(|s| s.app_id == app) {
            if let Some(d) = days.get_mut(&s.created_at.div_euclid(DAY_MS)) {
                d.subscribed += 1;
            }
        }
        for ((a, day), (unsubscribed, removed_created)) in &st.removed {
            if let Some(d) = days.get_mut(day).filter(|_| *a == app) {
                d.unsubscribed += unsubscribed;
                d.subscribed += removed_created;
            }
        }
        for m in st.messages.values().filter(|m| m.app_id() == app) {
            if let Some(d) = days.get_mut(&m.accepted.created_at.div_euclid(DAY_MS)) {
                d.sent += 1;
                d.delivered += m.counts.delivered;
                d.shown += m.counts.shown;
                d.clicked += m.counts.clicked;
            }
        }
        Ok(days.into_values().collect())
    }

    async fn stats(&self, app: AppId) -> Result<Stats> {
        let st = self.lock();
        let ms = st.messages.values().filter(|m| m.app_id() == app);
        Ok(Stats {
            subscriptions: st.subs.values().filter(|s| s.app_id == app).count() as i64,
            messages: ms.clone().count() as i64,
            messages_pending: ms
                .clone()
                .filter(|m| matches!(m.state, MessageState::Scheduled | MessageState::Queued | MessageState::Sending))
                .count() as i64,
            delivered: ms.clone().map(|m| m.counts.delivered).sum(),
            failed: ms.clone().map(|m| m.counts.failed).sum(),
            removed: ms.map(|m| m.counts.gone + m.counts.expired).sum(),
        }
        .plus_purged(&st.purged.get(&app).cloned().unwrap_or_default()))
    }
}

impl State {
    /// A checkpoint under the claim's token, counted once.
    fn checkpoint(
        &mut self,
        shard: &Shard,
        progress: &ShardProgress,
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<Option<MessageState>> {
        match self.shards.get_mut(&(shard.message_id.clone(), shard.shard)) {
            Some(row) if row.token.as_deref() == Some(shard.token.as_str()) && row.cursor == progress.from => {
                row.cursor = progress.cursor;
                row.done |= progress.done;
                row.delivered += outcome.delivered;
                row.lease_until = if progress.done { 0 } else { now + progress.lease_ms };
            }
            // Written before (the same cursor under the same token): counted once.
            Some(row) if row.token.as_deref() == Some(shard.token.as_str()) && row.cursor == progress.cursor => {
                return Ok(self.messages.get(&shard.message_id).map(|m| m.state));
            }
            _ => return Ok(None),
        }
        self.apply(&shard.message_id, outcome, Pending::after(outcome, &[]), now).map(Some)
    }
}
