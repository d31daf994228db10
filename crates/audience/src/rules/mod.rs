//! Delivery rules: when each subscriber gets a message, and how often.
//!
//! - [`local_time`]: a message at a wall-clock time in each subscriber's
//!   zone, planned as waves of zones;
//! - [`quiet`]: an app's quiet hours, in which deliveries are held;
//! - [`caps`]: an app's frequency caps, over which deliveries are dropped.
//! - [`ab`]: A/B tests: the split of an audience, and the choice of a winner.
//!
//! [`DeliveryRules`] is an app's set of them, as stored and as the API
//! reads and shows it.

pub mod ab;
pub mod caps;
pub mod local_time;
pub mod quiet;

use serde::{Deserialize, Serialize};

use crate::locale::TimeZoneName;
pub use caps::{CapRule, SendHistory, Window};
pub use local_time::{LocalDateTime, LocalSchedule, LocalTimeError, Wave, ZoneFilter};
pub use quiet::{QuietHours, TimeOfDay};

/// The most cap rules an app may have.
pub const MAX_CAP_RULES: usize = 10;
/// The highest `ratePerMinute`: a million a minute.
pub const MAX_RATE_PER_MINUTE: u32 = 1_000_000;

/// An app's delivery rules. Every field is optional; an app without any
/// sends as soon as it can, to everyone, as often as it is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryRules {
    /// The zone of subscribers that have none, for local times and quiet
    /// hours (`UTC` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_time_zone: Option<TimeZoneName>,
    /// Hours of the subscriber's local day in which deliveries are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Caps that must all hold (at most [`MAX_CAP_RULES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frequency_caps: Vec<CapRule>,
    /// The default `ratePerMinute` of its messages (0: unthrottled).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_per_minute: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a set of rules was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// Not the shape of the rules; serde's words.
    #[error("{0}")]
    Shape(String),
    /// A window that begins when it ends.
    #[error("quietHours: start and end are the same time")]
    EmptyWindow,
    /// More than [`MAX_CAP_RULES`] caps.
    #[error("frequencyCaps: at most {MAX_CAP_RULES} rules")]
    TooManyCaps,
    /// A cap of 0 or over [`caps::MAX_CAP`].
    #[error("frequencyCaps[{0}].max: from 1 to {max}", max = caps::MAX_CAP)]
    CapMax(usize),
    /// A tag that is not a message tag.
    #[error("frequencyCaps[{0}].tag: 1 to 64 characters of [a-z0-9_.:-]")]
    CapTag(usize),
    /// A rate over [`MAX_RATE_PER_MINUTE`].
    #[error("ratePerMinute: at most {MAX_RATE_PER_MINUTE}")]
    Rate,
}

/// Whether `tag` may be a message's tag (and so a cap's): the alphabet of
/// subscription tag keys.
pub fn valid_message_tag(tag: &str) -> bool {
    crate::tags::TagKey::new(tag).is_ok()
}

impl DeliveryRules {
    /// Reads and checks rules from JSON.
    pub fn from_json(value: serde_json::Value) -> Result<Self, RulesError> {
        if !value.is_object() {
            return Err(RulesError::Shape("the rules are an object".into()));
        }
        let rules: Self = serde_json::from_value(value).map_err(|e| RulesError::Shape(e.to_string()))?;
        rules.check()?;
        Ok(rules)
    }

    /// Checks what the types do not.
    pub fn check(&self) -> Result<(), RulesError> {
        if self.quiet_hours.is_some_and(|q| q.start == q.end) {
            return Err(RulesError::EmptyWindow);
        }
        if self.frequency_caps.len() > MAX_CAP_RULES {
            return Err(RulesError::TooManyCaps);
        }
        for (i, cap) in self.frequency_caps.iter().enumerate() {
            if !(1..=caps::MAX_CAP).contains(&cap.max) {
                return Err(RulesError::CapMax(i));
            }
            if cap.tag.as_deref().is_some_and(|t| !valid_message_tag(t)) {
                return Err(RulesError::CapTag(i));
            }
        }
        if self.rate_per_minute > MAX_RATE_PER_MINUTE {
            return Err(RulesError::Rate);
        }
        Ok(())
    }

    /// The zone of a subscriber without one.
    pub fn default_zone(&self) -> TimeZoneName {
        self.default_time_zone.clone().unwrap_or_else(TimeZoneName::utc)
    }

    /// Reads stored rules; what cannot be read is no rule (the API checked
    /// them when they were set).
    pub fn from_stored(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
    }

    /// The stored form (`None` when there is no rule).
    pub fn to_stored(&self) -> Option<String> {
        (self != &Self::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_are_read_and_checked() {
        let rules = DeliveryRules::from_json(json!({
            "defaultTimeZone": "europe/paris",
            "quietHours": {"start": "22:00", "end": "07:00"},
            "frequencyCaps": [{"max": 3, "per": "1d"}, {"max": 1, "per": "1h", "tag": "promo"}],
            "ratePerMinute": 600
        }))
        .unwrap();
        assert_eq!(rules.default_zone().as_str(), "Europe/Paris");
        assert_eq!(DeliveryRules::from_stored(rules.to_stored().as_deref()), rules);
        assert_eq!(DeliveryRules::default().to_stored(), None);
        assert_eq!(DeliveryRules::default().default_zone().as_str(), "UTC");
        for bad in [
            json!({"quietHours": {"start": "22:00", "end": "22:00"}}),
            json!({"quietHours": {"start": "22:00"}}),
            json!({"quietHours": {"start": "25:00", "end": "07:00"}}),
            json!({"frequencyCaps": [{"max": 0, "per": "1d"}]}),
            json!({"frequencyCaps": [{"max": 101, "per": "1d"}]}),
            json!({"frequencyCaps": [{"max": 1, "per": "31d"}]}),
            json!({"frequencyCaps": [{"max": 1, "per": "1d", "tag": "Promo!"}]}),
            json!({"frequencyCaps": vec![json!({"max": 1, "per": "1d"}); 11]}),
            json!({"ratePerMinute": 1_000_001}),
            json!({"ratePerMinute": -1}),
            json!({"defaultTimeZone": "Mars/Olympus"}),
            json!({"quietHour": {}}),
            json!([]),
        ] {
            assert!(DeliveryRules::from_json(bad.clone()).is_err(), "{bad}");
        }
    }
}
