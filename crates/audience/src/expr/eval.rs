//! Evaluating an expression for one subscriber: what the in-memory store
//! runs, and what the SQL stores' compiled queries must agree with.

use std::cmp::Ordering;

use super::{AgeField, Expr, Field, Literal, Op};
use crate::locale::language_matches;
use crate::tags::{TagValue, Tags};

/// What an expression can read of a subscription.
#[derive(Debug, Clone, Copy)]
pub struct Subscriber<'a> {
    /// Its tags.
    pub tags: &'a Tags,
    /// Its language, canonical (`pt-BR`).
    pub language: Option<&'a str>,
    /// Its IANA time zone.
    pub time_zone: Option<&'a str>,
    /// Its push service's name (`fcm`, `mozilla`, `apple`, `wns`, `other`).
    pub push_service: &'a str,
    /// The site's user id.
    pub user_id: Option<&'a str>,
    /// The topics it follows.
    pub topics: &'a [String],
    /// When it was first stored, ms since the epoch.
    pub created_at: i64,
    /// When its browser last posted it, ms since the epoch.
    pub last_seen_at: i64,
}

/// No tags, for [`Subscriber::NOBODY`].
static NO_TAGS: Tags = Tags::EMPTY;

impl Subscriber<'static> {
    /// A subscriber with no tags, language, time zone, user or topics, at
    /// an unknown push service: what a message is checked against when it
    /// is accepted, and previewed for when no subscriber is chosen.
    pub const NOBODY: Subscriber<'static> = Subscriber {
        tags: &NO_TAGS,
        language: None,
        time_zone: None,
        push_service: "other",
        user_id: None,
        topics: &[],
        created_at: 0,
        last_seen_at: 0,
    };
}

impl Expr {
    /// Whether `sub` is in the audience, at time `now` (ms since the epoch).
    pub fn matches(&self, sub: &Subscriber<'_>, now: i64) -> bool {
        match self {
            Self::And(a, b) => a.matches(sub, now) && b.matches(sub, now),
            Self::Or(a, b) => a.matches(sub, now) || b.matches(sub, now),
            Self::Not(e) => !e.matches(sub, now),
            Self::Has(key) => sub.tags.get(key.as_str()).is_some(),
            Self::Topic(t) => sub.topics.iter().any(|have| have == t),
            Self::Compare { field, op, value } => compare(sub, field, *op, value),
            Self::In { field, values } => values.iter().any(|v| compare(sub, field, Op::Eq, v)),
            Self::Age { field, op, age } => {
                let at = match field {
                    AgeField::CreatedAt => sub.created_at,
                    AgeField::LastSeenAt => sub.last_seen_at,
                };
                op.holds(now.saturating_sub(at).cmp(&age.ms()))
            }
        }
    }
}

/// One comparison: false when the field is missing or of another type,
/// whatever the operator.
fn compare(sub: &Subscriber<'_>, field: &Field, op: Op, value: &Literal) -> bool {
    let builtin = match field {
        Field::Tag(key) => {
            return match (sub.tags.get(key.as_str()), value) {
                (Some(TagValue::String(have)), Literal::String(want)) => op.holds(have.as_str().cmp(want.as_str())),
                (Some(have @ TagValue::Number(_)), Literal::Number(want)) => {
                    have.as_f64().and_then(|h| h.partial_cmp(want)).is_some_and(|o| op.holds(o))
                }
                (Some(TagValue::Bool(have)), Literal::Bool(want)) => op.holds(have.cmp(want)),
                _ => false,
            };
        }
        Field::Language => {
            return match (sub.language, value) {
                (Some(have), Literal::String(want)) => {
                    let equal = language_matches(have, want);
                    op.holds(if equal { Ordering::Equal } else { Ordering::Less })
                }
                _ => false,
            };
        }
        Field::TimeZone => sub.time_zone,
        Field::PushService => Some(sub.push_service),
        Field::UserId => sub.user_id,
    };
    match (builtin, value) {
        (Some(have), Literal::String(want)) => op.holds(have.cmp(want.as_str())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(expr: &str, tags: serde_json::Value, want: bool) {
        let tags = Tags::from_json(&tags).unwrap();
        let topics = vec!["news".to_owned()];
        let sub = Subscriber {
            tags: &tags,
            language: Some("pt-BR"),
            time_zone: Some("America/Sao_Paulo"),
            push_service: "fcm",
            user_id: Some("u1"),
            topics: &topics,
            created_at: 1_000_000_000,
            last_seen_at: 1_000_000_000 + 6 * 86_400_000,
        };
        let now = 1_000_000_000 + 10 * 86_400_000;
        assert_eq!(Expr::parse(expr).unwrap().matches(&sub, now), want, "{expr} with {tags:?}");
    }

    #[test]
    fn tags_compare_by_type() {
        check(r#"plan == "pro""#, json!({"plan": "pro"}), true);
        check(r#"plan != "pro""#, json!({"plan": "basic"}), true);
        check(r#"plan != "pro""#, json!({}), false);
        check(r#"!(plan == "pro")"#, json!({}), true);
        check("age >= 18", json!({"age": 18}), true);
        check("age > 18", json!({"age": 18.5}), true);
        check("age < 18", json!({"age": "10"}), false);
        check(r#"age < "2""#, json!({"age": "10"}), true);
        check("vip == true", json!({"vip": true}), true);
        check("vip != true", json!({"vip": 1}), false);
        check("has(vip)", json!({"vip": false}), true);
        check("has(vip)", json!({}), false);
        check(r#"city in ["Lyon", "Paris"]"#, json!({"city": "Paris"}), true);
        check("city in []", json!({"city": "Paris"}), false);
        check(r#"n in [1, "1"]"#, json!({"n": 1}), true);
    }

    #[test]
    fn built_in_fields() {
        check(r#"language == "pt""#, json!({}), true);
        check(r#"language == "pt-BR""#, json!({}), true);
        check(r#"language == "pt-PT""#, json!({}), false);
        check(r#"language != "en""#, json!({}), true);
        check(r#"language in ["en", "pt"]"#, json!({}), true);
        check(r#"timeZone == "America/Sao_Paulo""#, json!({}), true);
        check(r#"pushService == "fcm" && pushService != "apple""#, json!({}), true);
        check(r#"userId == "u1" && topic("news") && !topic("sport")"#, json!({}), true);
        check("createdAt > 7d && createdAt < 11d", json!({}), true);
        check("lastSeenAt < 7d", json!({}), true);
        check("lastSeenAt >= 4d", json!({}), true);
    }
}
