//! The SQL of a message's [`Target`]: which subscriptions of an app it
//! names, shared by counting an audience, starting a message and paging
//! through it.

use sqlx::Row;

use super::condition::condition_sql;
use super::mapping::AnyQuery;
use super::{Backend, R};
use crate::tocsin_audience::rules::ab::{SampleSlice, SlicePart};
use crate::tocsin_audience::rules::ZoneFilter;
use crate::{AppId, Target};

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Int(i64),
    Float(f64),
    Text(String),
}

/// A target's `FROM … WHERE` within an app, and the values of its
/// placeholders `$1`… in order (`$1` is always the app's id).
#[derive(Debug)]
pub(crate) struct TargetSql {
    pub from: String,
    pub binds: Vec<Bind>,
}

impl TargetSql {
    /// The number of the next placeholder after the target's own.
    pub fn next(&self) -> usize {
        self.binds.len() + 1
    }

    /// Narrows it to subscriptions in `zones` (a wave of a message at a
    /// local time): names bound, `time_zone IS NULL` when it has the
    /// subscriptions without a zone.
    pub fn and_zones(&mut self, zones: &ZoneFilter) {
        let mut parts = Vec::new();
        if !zones.zones.is_empty() {
            let first = self.next();
            self.binds.extend(zones.zones.iter().map(|z| Bind::Text(z.clone())));
            parts.push(format!("s.time_zone IN ({})", super::placeholders(first, zones.zones.len())));
        }
        if zones.unset {
            parts.push("s.time_zone IS NULL".to_owned());
        }
        if parts.is_empty() {
            parts.push("1 = 0".to_owned());
        }
        self.from = format!("{} AND ({})", self.from, parts.join(" OR "));
    }

    /// Narrows it to the subscriptions in `slice` of an A/B test's sample
    /// ([`SampleSlice::mix`] written in SQL, with the same constants).
    pub fn and_sample(&mut self, slice: &SampleSlice) {
        let seed = self.next();
        self.binds.push(Bind::Int(slice.seed));
        let (p, a, b, c, n) =
            (SampleSlice::PRIME, SampleSlice::A, SampleSlice::B, SampleSlice::C, SampleSlice::BUCKETS);
        let x = format!("(((s.id % {p}) * {a} + ${seed}) % {p})");
        let z = format!("(((({x} * {x} + {c}) % {p}) * {b} + ${seed}) % {p})");
        let percent = i64::from(slice.percent) * 100;
        let part = match slice.part {
            SlicePart::Rest => format!("{z} % {n} >= {percent}"),
            SlicePart::Variant { index, count } => {
                format!("{z} % {n} < {percent} AND ({z} / {n}) % {} = {index}", count.max(1))
            }
        };
        self.from = format!("{} AND ({part})", self.from);
    }

    /// Binds the target's values to `q`.
    pub fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        bind_all(q, &self.binds)
    }
}

/// Binds `binds` to `q`, in order.
pub(crate) fn bind_all<'q>(mut q: AnyQuery<'q>, binds: &'q [Bind]) -> AnyQuery<'q> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Float(f) => q.bind(*f),
            Bind::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

/// The SQL of `target` within `app`. A segment is looked up through `conn`
/// now, so that its audience is the one it has when the message is sent;
/// a segment that is gone matches no one. Ages in expressions are
/// measured from `now` (ms since the epoch).
pub(crate) async fn target_sql(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    app: AppId,
    target: &Target,
    now: i64,
) -> R<TargetSql> {
    let (target, slices) = target.peel();
    let mut sql = audience_sql(conn, backend, app, target, now).await?;
    for slice in &slices {
        sql.and_sample(slice);
    }
    Ok(sql)
}

/// [`target_sql`] of a target that is not a sample.
async fn audience_sql(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    app: AppId,
    target: &Target,
    now: i64,
) -> R<TargetSql> {
    let mut binds = vec![Bind::Int(app.0)];
    let from = match target {
        Target::All(_) => "FROM subscriptions s WHERE s.app_id = $1".into(),
        Target::Topic(t) => {
            binds.push(Bind::Text(t.clone()));
            "FROM subscriptions s JOIN subscription_topics t ON t.subscription_id = s.id \
             WHERE s.app_id = $1 AND t.topic = $2"
                .into()
        }
        Target::UserIds(ids) => {
            binds.extend(ids.iter().map(|u| Bind::Text(u.clone())));
            if ids.is_empty() {
                binds.push(Bind::Text(String::new()));
            }
            format!(
                "FROM subscriptions s WHERE s.app_id = $1 AND s.user_id IN ({})",
                super::placeholders(2, binds.len() - 1)
            )
        }
        Target::SubscriptionIds(ids) => {
            binds.extend(ids.iter().map(|i| Bind::Int(*i)));
            if ids.is_empty() {
                binds.push(Bind::Int(-1));
            }
            format!(
                "FROM subscriptions s WHERE s.app_id = $1 AND s.id IN ({})",
                super::placeholders(2, binds.len() - 1)
            )
        }
        Target::Where(c) => {
            let sql = condition_sql(c.expr(), backend, now, &mut binds);
            format!("FROM subscriptions s WHERE s.app_id = $1 AND {sql}")
        }
        Target::Segment(name) => {
            let row = sqlx::query("SELECT expression FROM segments WHERE app_id = $1 AND name = $2")
                .bind(app.0)
                .bind(name.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => {
                    let text: String = row.try_get("expression")?;
                    let c = crate::Condition::parse(&text).map_err(super::mapping::corrupt)?;
                    let sql = condition_sql(c.expr(), backend, now, &mut binds);
                    format!("FROM subscriptions s WHERE s.app_id = $1 AND {sql}")
                }
                None => "FROM subscriptions s WHERE s.app_id = $1 AND 1 = 0".into(),
            }
        }
        // Peeled by the caller.
        Target::Sample { .. } => "FROM subscriptions s WHERE s.app_id = $1 AND 1 = 0".into(),
    };
    Ok(TargetSql { from, binds })
}
