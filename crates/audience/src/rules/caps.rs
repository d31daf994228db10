//! Frequency caps: at most `max` messages per subscription over a rolling
//! window (`{"max": 3, "per": "1d"}`), optionally counting only messages
//! that carry a tag (`"tag": "promo"`). A delivery over a cap is dropped.
//!
//! A subscription keeps its own [`SendHistory`]: the times (and the tags
//! some rule counts) of its latest deliveries, just enough for the rules,
//! so that checking costs no query.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The most a rule may allow in its window (so that a history stays small).
pub const MAX_CAP: u32 = 100;
/// The shortest window: a minute.
pub const MIN_WINDOW_MS: i64 = 60_000;
/// The longest window: 30 days.
pub const MAX_WINDOW_MS: i64 = 30 * 86_400_000;

/// A rolling window, written as a whole number of minutes, hours or days
/// (`90m`, `1h`, `7d`), from one minute to 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    ms: i64,
    text: (u32, char),
}

impl Window {
    /// Reads `<n>m`, `<n>h` or `<n>d`.
    pub fn parse(text: &str) -> Option<Self> {
        let unit = text.chars().last()?;
        let n: u32 = text[..text.len() - unit.len_utf8()].parse().ok()?;
        if text.starts_with('+') {
            return None;
        }
        let unit_ms = match unit {
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return None,
        };
        let ms = i64::from(n).checked_mul(unit_ms)?;
        (MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&ms).then_some(Self { ms, text: (n, unit) })
    }

    /// Its length in ms.
    pub fn ms(&self) -> i64 {
        self.ms
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.text.0, self.text.1)
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Window::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a window from 1m to 30d, such as \"1h\" or \"7d\""))
        })
    }
}

/// One cap: at most `max` deliveries per `per`, of messages carrying `tag`
/// if one is named, else of all messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapRule {
    /// How many (1–100).
    pub max: u32,
    /// Over what rolling window.
    pub per: Window,
    /// Only messages with this tag count, and only they are capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl CapRule {
    fn counts(&self, tags: &[String]) -> bool {
        self.tag.as_ref().is_none_or(|t| tags.contains(t))
    }
}

/// One delivery a subscription had: when, and which of the tags that some
/// rule names its message carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent(pub i64, #[serde(default, skip_serializing_if = "Vec::is_empty")] pub Vec<String>);

/// A subscription's latest deliveries, as far as the rules need them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SendHistory(pub Vec<Sent>);

impl SendHistory {
    /// Reads a stored history; one that cannot be read is empty (a cap is
    /// a courtesy, not a guarantee worth failing a delivery for).
    pub fn from_stored(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
    }

    /// The stored form.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The first rule a delivery at `now` of a message with `tags` would
    /// break, if any.
    pub fn over<'r>(&self, rules: &'r [CapRule], tags: &[String], now: i64) -> Option<&'r CapRule> {
        rules.iter().find(|rule| {
            rule.counts(tags) && {
                let since = now.saturating_sub(rule.per.ms());
                let n = self.0.iter().filter(|s| s.0 > since && rule.counts(&s.1)).count();
                n >= rule.max as usize
            }
        })
    }

    /// Adds a delivery at `now`, and forgets what no rule needs: each rule
    /// keeps the latest `max` deliveries it counts within its window.
    pub fn record(&mut self, rules: &[CapRule], tags: &[String], now: i64) {
        let named: Vec<String> =
            tags.iter().filter(|t| rules.iter().any(|r| r.tag.as_ref() == Some(*t))).cloned().collect();
        self.0.push(Sent(now, named));
        self.0.sort_by_key(|s| s.0);
        let mut keep = vec![false; self.0.len()];
        for rule in rules {
            let since = now.saturating_sub(rule.per.ms());
            let mut left = rule.max as usize;
            for (i, s) in self.0.iter().enumerate().rev() {
                if left == 0 || s.0 <= since {
                    break;
                }
                if rule.counts(&s.1) {
                    keep[i] = true;
                    left -= 1;
                }
            }
        }
        let mut i = 0;
        self.0.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(max: u32, per: &str, tag: Option<&str>) -> CapRule {
        CapRule { max, per: Window::parse(per).unwrap(), tag: tag.map(str::to_owned) }
    }

    #[test]
    fn windows_are_minutes_to_30_days() {
        assert_eq!(Window::parse("1m").unwrap().ms(), 60_000);
        assert_eq!(Window::parse("30d").unwrap().ms(), MAX_WINDOW_MS);
        assert_eq!(Window::parse("90m").unwrap().to_string(), "90m");
        for bad in ["", "m", "0m", "31d", "721h", "1s", "1w", "-1h", "+1h", "1.5h", "1 h", "99999999999d", "1é"] {
            assert!(Window::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_cap_drops_what_exceeds_it_in_a_rolling_window() {
        let rules = [rule(3, "1d", None)];
        let mut h = SendHistory::default();
        let day = 86_400_000;
        for t in [0, 1000, 2000] {
            assert!(h.over(&rules, &[], t).is_none());
            h.record(&rules, &[], t);
        }
        assert!(h.over(&rules, &[], 3000).is_some());
        assert!(h.over(&rules, &[], day - 1).is_some());
        assert!(h.over(&rules, &[], day).is_none(), "the first one has left the window");
        assert_eq!(h.0.len(), 3);
    }

    #[test]
    fn a_tagged_rule_counts_and_caps_only_its_tag() {
        let rules = [rule(1, "1h", Some("promo")), rule(5, "1d", None)];
        let promo = vec!["promo".to_owned(), "sale".to_owned()];
        let mut h = SendHistory::default();
        h.record(&rules, &promo, 0);
        assert_eq!(h.0, vec![Sent(0, vec!["promo".into()])], "only the tags rules name are kept");
        assert!(h.over(&rules, &promo, 1000).is_some());
        assert!(h.over(&rules, &[], 1000).is_none());
        for t in 1..=4 {
            h.record(&rules, &[], t * 1000);
        }
        assert!(h.over(&rules, &[], 10_000).is_some(), "five a day in all");
        assert!(h.0.len() <= 6);
        assert_eq!(SendHistory::from_stored(Some(&h.to_stored())), h);
        assert_eq!(SendHistory::from_stored(Some("not json")), SendHistory::default());
    }
}
