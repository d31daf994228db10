//! Quiet hours: a window of the subscriber's local day (`22:00`–`07:00`)
//! in which deliveries are held, and sent when it ends.

use std::fmt;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::local_time::LocalDateTime;

/// A time of day to the minute, written `HH:MM` (`00:00`–`23:59`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(Time);

impl TimeOfDay {
    /// Reads `HH:MM`.
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 5 || b[2] != b':' || !b.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit()) {
            return None;
        }
        let hour: i8 = text[..2].parse().ok()?;
        let minute: i8 = text[3..].parse().ok()?;
        Time::new(hour, minute, 0, 0).ok().map(Self)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0.hour(), self.0.minute())
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TimeOfDay::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a time of day such as \"22:00\"")))
    }
}

/// Quiet hours, in the subscriber's local time: from `start` (included) to
/// `end` (excluded), over midnight when `end` is earlier. `start` and
/// `end` differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    /// When the window begins.
    pub start: TimeOfDay,
    /// When it ends: held deliveries go then.
    pub end: TimeOfDay,
}

impl QuietHours {
    /// When a delivery due at `now` in `tz` may go: `None` when now is
    /// outside the window, else the end of the window in that zone (by
    /// the rules of [`LocalDateTime::instant_in`] if it falls on a DST
    /// change).
    pub fn held_until(&self, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(now);
        let t = local.time();
        let (start, end) = (self.start.0, self.end.0);
        let inside = if start < end { start <= t && t < end } else { t >= start || t < end };
        if !inside {
            return None;
        }
        // The window ends today if it has not yet (after midnight, or a
        // window within one day), else tomorrow.
        let day = if t < end { local.date() } else { local.date().tomorrow().ok()? };
        let until = LocalDateTime::from_civil(day.to_datetime(end))?.instant_in(tz)?;
        (until > now).then_some(until)
    }

    /// [`Self::held_until`] in ms since the epoch, for a subscriber whose
    /// zone is `zone` (a stored name; `default` when it has none or the
    /// name is not known).
    pub fn held_until_ms(&self, now_ms: i64, zone: Option<&str>, default: &TimeZone) -> Option<i64> {
        let now = Timestamp::from_millisecond(now_ms).ok()?;
        let tz = zone.and_then(|z| jiff::tz::db().get(z).ok());
        self.held_until(now, tz.as_ref().unwrap_or(default)).map(|t| t.as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(start: &str, end: &str) -> QuietHours {
        QuietHours { start: TimeOfDay::parse(start).unwrap(), end: TimeOfDay::parse(end).unwrap() }
    }

    fn held(q: &QuietHours, now: &str, tz: &str) -> Option<String> {
        q.held_until(now.parse().unwrap(), &jiff::tz::db().get(tz).unwrap()).map(|t| t.to_string())
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        assert_eq!(TimeOfDay::parse("07:05").unwrap().to_string(), "07:05");
        for bad in ["", "7:00", "24:00", "23:60", "22:00:00", "aa:bb", "-1:00", "+1:00", "２2:00"] {
            assert!(TimeOfDay::parse(bad).is_none(), "{bad:?}");
        }
        let q: QuietHours = serde_json::from_str(r#"{"start":"22:00","end":"07:00"}"#).unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), r#"{"start":"22:00","end":"07:00"}"#);
    }

    #[test]
    fn a_window_over_midnight_holds_until_the_morning() {
        let q = quiet("22:00", "07:00");
        // Paris is UTC+1 in December.
        assert_eq!(held(&q, "2026-12-04T20:59:00Z", "Europe/Paris"), None);
        assert_eq!(held(&q, "2026-12-04T21:00:00Z", "Europe/Paris").as_deref(), Some("2026-12-05T06:00:00Z"));
        assert_eq!(held(&q, "2026-12-05T02:00:00Z", "Europe/Paris").as_deref(), Some("2026-12-05T06:00:00Z"));
        assert_eq!(held(&q, "2026-12-05T06:00:00Z", "Europe/Paris"), None);
        // The same instant is day-time in Sydney.
        assert_eq!(held(&q, "2026-12-04T21:00:00Z", "Australia/Sydney"), None);
    }

    #[test]
    fn a_window_within_a_day() {
        let q = quiet("12:00", "14:00");
        assert_eq!(held(&q, "2026-12-04T12:30:00Z", "UTC").as_deref(), Some("2026-12-04T14:00:00Z"));
        assert_eq!(held(&q, "2026-12-04T14:00:00Z", "UTC"), None);
        assert_eq!(held(&q, "2026-12-04T11:59:59Z", "UTC"), None);
    }

    #[test]
    fn a_window_ending_in_the_spring_gap_ends_after_it() {
        // Berlin, 2026-03-29: 02:00 becomes 03:00 (01:00Z); a window to 02:30 ends then.
        let q = quiet("22:00", "02:30");
        assert_eq!(held(&q, "2026-03-28T23:30:00Z", "Europe/Berlin").as_deref(), Some("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn the_autumn_fold_ends_the_window_at_its_first_occurrence() {
        // Berlin, 2026-10-25: 02:30 occurs at 00:30Z and again at 01:30Z.
        let q = quiet("22:00", "02:30");
        assert_eq!(held(&q, "2026-10-24T22:00:00Z", "Europe/Berlin").as_deref(), Some("2026-10-25T00:30:00Z"));
    }
}
