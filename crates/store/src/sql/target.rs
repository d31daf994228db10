//! The SQL of a message's [`Target`]: which subscriptions of an app it
//! names, shared by counting an audience and paging through it.

use super::mapping::AnyQuery;
use crate::{AppId, Target};

/// The `FROM … WHERE` of a target within an app, with its parameters
/// starting at `$1` (the app's id) and how many there are.
pub(crate) fn target_sql(target: &Target) -> (String, usize) {
    match target {
        Target::All(_) => ("FROM subscriptions s WHERE s.app_id = $1".into(), 1),
        Target::Topic(_) => (
            "FROM subscriptions s JOIN subscription_topics t ON t.subscription_id = s.id \
             WHERE s.app_id = $1 AND t.topic = $2"
                .into(),
            2,
        ),
        Target::UserIds(ids) => (
            format!(
                "FROM subscriptions s WHERE s.app_id = $1 AND s.user_id IN ({})",
                super::placeholders(2, ids.len().max(1))
            ),
            1 + ids.len().max(1),
        ),
        Target::SubscriptionIds(ids) => (
            format!(
                "FROM subscriptions s WHERE s.app_id = $1 AND s.id IN ({})",
                super::placeholders(2, ids.len().max(1))
            ),
            1 + ids.len().max(1),
        ),
    }
}

/// Binds the parameters of [`target_sql`].
pub(crate) fn bind_target<'q>(mut q: AnyQuery<'q>, app: AppId, target: &'q Target) -> AnyQuery<'q> {
    q = q.bind(app.0);
    match target {
        Target::All(_) => {}
        Target::Topic(t) => q = q.bind(t.as_str()),
        Target::UserIds(ids) if ids.is_empty() => q = q.bind(""),
        Target::UserIds(ids) => {
            for id in ids {
                q = q.bind(id.as_str());
            }
        }
        Target::SubscriptionIds(ids) if ids.is_empty() => q = q.bind(-1i64),
        Target::SubscriptionIds(ids) => {
            for id in ids {
                q = q.bind(*id);
            }
        }
    }
    q
}
