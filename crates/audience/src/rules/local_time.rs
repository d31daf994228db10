//! A message sent at a wall-clock time in each subscriber's own zone
//! (`"sendAt": "2026-12-24T09:00:00", "inLocalTime": true`).
//!
//! The time zones of the world reach a local time over about 26 hours
//! (UTC+14 first, UTC−12 last). A [`LocalSchedule`] groups every zone of
//! the built-in tz database by the instant the time comes there: each
//! group is a [`Wave`], which the stores turn into shards that may not be
//! claimed before its instant. Planned once, when the message is accepted,
//! so that every node agrees on it.

use std::sync::OnceLock;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::locale::TimeZoneName;

/// Why a local time was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalTimeError {
    /// Not a date and time without a zone, as `2026-12-24T09:00:00`.
    #[error("{0:?} is not a local date and time such as \"2026-12-24T09:00:00\" (no zone or offset: each subscriber gets it in their own)")]
    Invalid(String),
    /// It has passed in every time zone.
    #[error("{0} has already passed in every time zone")]
    Passed(String),
}

/// A date and time without a zone, between the years 1970 and 9999, to
/// the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDateTime(DateTime);

impl LocalDateTime {
    /// Reads `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS`; an offset, a `Z`
    /// or a bracketed zone is refused (the point is that there is none).
    pub fn parse(text: &str) -> Result<Self, LocalTimeError> {
        let invalid = || LocalTimeError::Invalid(text.chars().take(40).collect());
        let b = text.as_bytes();
        let shape_ok = (b.len() == 16 || b.len() == 19)
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(invalid());
        }
        let dt: DateTime = text.parse().map_err(|_| invalid())?;
        if !(1970..=9999).contains(&dt.year()) {
            return Err(invalid());
        }
        Ok(Self(dt))
    }

    /// A civil date and time, if its year is within 1970..=9999.
    pub fn from_civil(dt: DateTime) -> Option<Self> {
        (1970..=9999).contains(&dt.year()).then_some(Self(dt))
    }

    /// When this wall-clock time comes in `tz`. A time that does not occur
    /// there (the hour skipped when clocks go forward) comes at the first
    /// moment after the gap; one that occurs twice (clocks going back),
    /// at its first occurrence. `None` beyond the range of instants (the
    /// last seconds of the year 9999 in zones behind UTC).
    pub fn instant_in(&self, tz: &TimeZone) -> Option<Timestamp> {
        let ambiguous = tz.to_ambiguous_timestamp(self.0);
        let instant = match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(self.0).ok(),
            // The offset after the gap puts the time before the transition;
            // the transition itself is the first moment of the new time.
            AmbiguousOffset::Gap { after, .. } => {
                after.to_timestamp(self.0).ok().and_then(|early| tz.following(early).next().map(|t| t.timestamp()))
            }
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(self.0).ok(),
        };
        instant
    }

    /// The time as written, to the second (`2026-12-24T09:00:00`).
    pub fn text(&self) -> String {
        self.0.strftime("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// Which subscriptions a wave reaches: those whose zone is one of `zones`,
/// and, when `unset`, those without a zone (they get the app's default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneFilter {
    /// Zone names as stored ([`TimeZoneName`]'s spelling).
    pub zones: Vec<String>,
    /// Whether subscriptions without a zone are in it.
    #[serde(default)]
    pub unset: bool,
}

impl ZoneFilter {
    /// Whether a subscription with this zone is in it.
    pub fn matches(&self, zone: Option<&str>) -> bool {
        match zone {
            None => self.unset,
            Some(z) => self.zones.iter().any(|name| name == z),
        }
    }
}

/// The zones that reach the local time at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// When, ms since the epoch.
    pub at: i64,
    /// Who.
    #[serde(flatten)]
    pub filter: ZoneFilter,
    /// It had passed when the message was accepted with
    /// `skipPassedZones`: nobody in it gets the message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// A message's plan for a local time: its waves, earliest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalSchedule {
    /// The local time, as `2026-12-24T09:00:00`.
    pub local: String,
    /// Whether zones where it had passed at acceptance were skipped.
    #[serde(default)]
    pub skip_passed_zones: bool,
    /// Every zone of the tz database, by the instant the time comes there.
    pub waves: Vec<Wave>,
}

/// Every zone name of the built-in database, spelt as [`TimeZoneName`]
/// stores it, with its rules; read once.
fn all_zones() -> &'static [(String, TimeZone)] {
    static ZONES: OnceLock<Vec<(String, TimeZone)>> = OnceLock::new();
    ZONES.get_or_init(|| {
        let mut zones: Vec<(String, TimeZone)> = jiff::tz::db()
            .available()
            .filter_map(|name| {
                let name = TimeZoneName::new(name.as_str()).ok()?;
                let tz = jiff::tz::db().get(name.as_str()).ok()?;
                Some((name.as_str().to_owned(), tz))
            })
            .collect();
        zones.sort_by(|a, b| a.0.cmp(&b.0));
        zones.dedup_by(|a, b| a.0 == b.0);
        zones
    })
}

impl LocalSchedule {
    /// Plans `local` over every zone; subscriptions without a zone go with
    /// `default_zone`'s wave. With `skip_passed_zones`, waves whose
    /// instant is not after `now_ms` are marked skipped. Refused when the
    /// time has passed everywhere.
    pub fn plan(
        local: &LocalDateTime,
        default_zone: &TimeZoneName,
        skip_passed_zones: bool,
        now_ms: i64,
    ) -> Result<Self, LocalTimeError> {
        let mut by_instant: std::collections::BTreeMap<i64, ZoneFilter> = std::collections::BTreeMap::new();
        for (name, tz) in all_zones() {
            let at = local
                .instant_in(tz)
                .ok_or_else(|| LocalTimeError::Invalid(format!("{} is not a time in every zone", local.text())))?
                .as_millisecond();
            let wave = by_instant.entry(at).or_insert_with(|| ZoneFilter { zones: Vec::new(), unset: false });
            wave.zones.push(name.clone());
            if name == default_zone.as_str() {
                wave.unset = true;
            }
        }
        if by_instant.keys().next_back().is_none_or(|last| *last <= now_ms) {
            return Err(LocalTimeError::Passed(local.text()));
        }
        let waves = by_instant
            .into_iter()
            .map(|(at, filter)| Wave { at, filter, skipped: skip_passed_zones && at <= now_ms })
            .collect();
        Ok(Self { local: local.text(), skip_passed_zones, waves })
    }

    /// When sending begins: the first wave not skipped.
    pub fn first_at(&self) -> Option<i64> {
        self.waves.iter().filter(|w| !w.skipped).map(|w| w.at).min()
    }

    /// When the time comes for a subscriber in `zone` (`None`: without
    /// one): its wave's instant. `None` for a zone no wave names.
    pub fn at_for(&self, zone: Option<&str>) -> Option<i64> {
        self.waves.iter().find(|w| w.filter.matches(zone)).map(|w| w.at)
    }

    /// The waves to send, as `(index, instant)`: those not skipped that
    /// reach someone of `zones_present` (the zones of the audience, `None`
    /// for subscriptions without one). The stores give each its shards.
    pub fn waves_for<'a>(
        &self,
        zones_present: impl IntoIterator<Item = &'a Option<String>> + Clone,
    ) -> Vec<(i64, i64)> {
        self.waves
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.skipped && zones_present.clone().into_iter().any(|z| w.filter.matches(z.as_deref())))
            .map(|(i, w)| (i as i64, w.at))
            .collect()
    }

    /// Who gets the message at all: `None` when no wave was skipped
    /// (everyone in the target), else the zones of the waves not skipped.
    pub fn reached(&self) -> Option<ZoneFilter> {
        if !self.waves.iter().any(|w| w.skipped) {
            return None;
        }
        let mut reached = ZoneFilter { zones: Vec::new(), unset: false };
        for wave in self.waves.iter().filter(|w| !w.skipped) {
            reached.zones.extend(wave.filter.zones.iter().cloned());
            reached.unset |= wave.filter.unset;
        }
        Some(reached)
    }

    /// Reads a stored schedule.
    pub fn from_stored(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The stored form.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        jiff::tz::db().get(name).unwrap()
    }

    fn at(local: &str, tz: &str) -> String {
        LocalDateTime::parse(local).unwrap().instant_in(&zone(tz)).unwrap().to_string()
    }

    #[test]
    fn local_times_are_read_without_a_zone() {
        assert_eq!(LocalDateTime::parse("2026-12-24T09:00").unwrap().text(), "2026-12-24T09:00:00");
        assert_eq!(LocalDateTime::parse("2026-12-24T09:00:30").unwrap().text(), "2026-12-24T09:00:30");
        for bad in [
            "",
            "2026-12-24",
            "2026-12-24T09:00:00Z",
            "2026-12-24T09:00:00+01:00",
            "2026-12-24T09:00:00[Europe/Paris]",
            "2026-12-24 09:00:00",
            "2026-13-24T09:00:00",
            "2026-02-30T09:00:00",
            "2026-12-24T24:00:00",
            "1969-12-31T23:59:59",
            "+10000-01-01T00:00",
            "2026-12-24T09:00:00.5",
            "２026-12-24T09:00",
        ] {
            assert!(LocalDateTime::parse(bad).is_err(), "{bad:?}");
        }
        assert!(LocalDateTime::parse("9999-12-31T23:59:59").is_ok());
        let end = LocalDateTime::parse("9999-12-31T23:59:59").unwrap();
        let utc = TimeZoneName::utc();
        assert!(matches!(LocalSchedule::plan(&end, &utc, false, 0), Err(LocalTimeError::Invalid(_))));
    }

    #[test]
    fn the_extreme_zones_are_a_day_apart() {
        assert_eq!(at("2026-12-24T09:00", "Pacific/Kiritimati"), "2026-12-23T19:00:00Z");
        assert_eq!(at("2026-12-24T09:00", "Pacific/Pago_Pago"), "2026-12-24T20:00:00Z");
        assert_eq!(at("2026-12-24T09:00", "UTC"), "2026-12-24T09:00:00Z");
    }

    #[test]
    fn berlin_spring_gap_goes_at_the_first_minute_after_it() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z).
        assert_eq!(at("2026-03-29T02:30", "Europe/Berlin"), "2026-03-29T01:00:00Z");
        assert_eq!(at("2026-03-29T01:59:59", "Europe/Berlin"), "2026-03-29T00:59:59Z");
        assert_eq!(at("2026-03-29T03:00", "Europe/Berlin"), "2026-03-29T01:00:00Z");
    }

    #[test]
    fn berlin_autumn_fold_goes_at_the_first_occurrence() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 occurs at 00:30Z and 01:30Z.
        assert_eq!(at("2026-10-25T02:30", "Europe/Berlin"), "2026-10-25T00:30:00Z");
        assert_eq!(at("2026-10-25T03:00", "Europe/Berlin"), "2026-10-25T02:00:00Z");
    }

    #[test]
    fn a_plan_covers_every_zone_once_over_about_26_hours() {
        let local = LocalDateTime::parse("2026-12-24T09:00").unwrap();
        let utc = TimeZoneName::new("UTC").unwrap();
        let plan = LocalSchedule::plan(&local, &utc, false, 0).unwrap();
        let names: Vec<&String> = plan.waves.iter().flat_map(|w| &w.filter.zones).collect();
        assert_eq!(names.len(), all_zones().len());
        assert!(names.len() > 300);
        let span = plan.waves.last().unwrap().at - plan.first_at().unwrap();
        assert_eq!(span, 26 * 3_600_000, "UTC+14 to UTC-12");
        assert!(plan.waves.windows(2).all(|w| w[0].at < w[1].at));
        let unset: Vec<&Wave> = plan.waves.iter().filter(|w| w.filter.unset).collect();
        assert_eq!(unset.len(), 1);
        assert!(unset[0].filter.matches(Some("UTC")) && unset[0].filter.matches(None));
        assert_eq!(LocalSchedule::from_stored(&plan.to_stored()).unwrap(), plan);
        assert_eq!(plan.reached(), None);
        let utc_wave = plan.waves.iter().position(|w| w.filter.unset).unwrap() as i64;
        let present = [None, Some("Etc/UTC".to_owned())];
        assert_eq!(plan.waves_for(&present).iter().map(|w| w.0).collect::<Vec<_>>(), [utc_wave], "one wave has both");
    }

    #[test]
    fn passed_zones_are_sent_at_once_or_skipped() {
        let local = LocalDateTime::parse("2026-12-24T09:00").unwrap();
        let utc = TimeZoneName::new("UTC").unwrap();
        let now = "2026-12-24T09:30:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        let plan = LocalSchedule::plan(&local, &utc, false, now).unwrap();
        assert!(plan.waves.iter().all(|w| !w.skipped));
        assert!(plan.first_at().unwrap() < now);
        let skipping = LocalSchedule::plan(&local, &utc, true, now).unwrap();
        assert!(skipping.first_at().unwrap() > now);
        let reached = skipping.reached().unwrap();
        assert!(reached.matches(Some("America/New_York")));
        assert!(!reached.matches(Some("Europe/Berlin")));
        assert!(!reached.matches(Some("UTC")) && !reached.matches(None), "the default zone's wave has passed");
        let later = "2026-12-24T21:00:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        assert_eq!(
            LocalSchedule::plan(&local, &utc, false, later),
            Err(LocalTimeError::Passed("2026-12-24T09:00:00".into()))
        );
    }
}
