//! A subscriber's language and time zone, as the browser reports them
//! (`navigator.language`, `Intl.DateTimeFormat().resolvedOptions().timeZone`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest language tag kept (RFC 5646 §4.4.1 asks that at least 35
/// characters be kept; real tags are far shorter).
pub const MAX_LANGUAGE_LEN: usize = 35;
/// The longest time zone name (the IANA database's longest is 32).
pub const MAX_TIME_ZONE_LEN: usize = 64;

/// A BCP 47 language tag (`en`, `pt-BR`, `zh-Hant-TW`), well-formed and in
/// its canonical case (language lower, script title, region upper), so
/// that stored tags compare as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Language(String);

/// A language tag that is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a BCP 47 language tag (such as \"en\" or \"pt-BR\")")]
pub struct InvalidLanguage(pub String);

impl Language {
    /// Checks a tag's form: subtags of 1–8 letters or digits joined by
    /// `-`, the first 2–8 letters, at most 35 characters. `_` is taken
    /// for `-` (`en_US`, as some systems write it).
    pub fn new(tag: &str) -> Result<Self, InvalidLanguage> {
        let bad = || InvalidLanguage(tag.chars().take(40).collect());
        if tag.is_empty() || tag.len() > MAX_LANGUAGE_LEN {
            return Err(bad());
        }
        let mut out = String::with_capacity(tag.len());
        for (i, sub) in tag.split(['-', '_']).enumerate() {
            let ok = (1..=8).contains(&sub.len())
                && sub.bytes().all(|b| b.is_ascii_alphanumeric())
                && (i > 0 || (sub.len() >= 2 && sub.bytes().all(|b| b.is_ascii_alphabetic())));
            if !ok {
                return Err(bad());
            }
            if i > 0 {
                out.push('-');
            }
            match (i, sub.len()) {
                (0, _) => out.push_str(&sub.to_ascii_lowercase()),
                (_, 2) => out.push_str(&sub.to_ascii_uppercase()),
                (_, 4) if sub.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    out.push_str(&sub[..1].to_ascii_uppercase());
                    out.push_str(&sub[1..].to_ascii_lowercase());
                }
                _ => out.push_str(&sub.to_ascii_lowercase()),
            }
        }
        Ok(Self(out))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The primary language subtag: `pt` of `pt-BR`.
    pub fn primary(&self) -> &str {
        primary(&self.0)
    }
}

/// The primary subtag of a canonical tag's text.
pub fn primary(tag: &str) -> &str {
    tag.split('-').next().unwrap_or(tag)
}

/// Whether a subscriber's language `have` matches `want` the way segments
/// and localized text match: a tag of one subtag (`pt`) matches every tag
/// of that language (`pt`, `pt-BR`); a longer one (`pt-BR`) only itself.
/// Both canonical.
pub fn language_matches(have: &str, want: &str) -> bool {
    if want.contains('-') {
        have == want
    } else {
        primary(have) == want
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Language::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An IANA time zone name the built-in tz database knows (`Europe/Paris`,
/// `America/Sao_Paulo`, `UTC`), as the database spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TimeZoneName(String);

/// A time zone the database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IANA time zone name (such as \"Europe/Paris\")")]
pub struct UnknownTimeZone(pub String);

impl TimeZoneName {
    /// Looks a name up (case-insensitively, as the database does).
    pub fn new(name: &str) -> Result<Self, UnknownTimeZone> {
        let unknown = || UnknownTimeZone(name.chars().take(70).collect());
        if name.is_empty() || name.len() > MAX_TIME_ZONE_LEN {
            return Err(unknown());
        }
        let tz = jiff::tz::db().get(name).map_err(|_| unknown())?;
        Ok(Self(tz.iana_name().unwrap_or(name).to_owned()))
    }

    /// `UTC`, the zone of subscribers without one unless the app says otherwise.
    pub fn utc() -> Self {
        Self("UTC".to_owned())
    }

    /// The zone's rules.
    pub fn zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::db().get(&self.0).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TimeZoneName::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_checked_and_put_in_canonical_case() {
        for (given, canonical) in [
            ("en", "en"),
            ("pt-BR", "pt-BR"),
            ("pt-br", "pt-BR"),
            ("EN_us", "en-US"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("de-CH-1996", "de-CH-1996"),
        ] {
            assert_eq!(Language::new(given).map(|l| l.0), Ok(canonical.to_owned()), "{given}");
        }
        for bad in ["", "e", "1a", "en-", "-en", "en--US", "en-toolongsubtag", "en US", "é", &"a".repeat(36)] {
            assert!(Language::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Language::new("pt-BR").unwrap().primary(), "pt");
    }

    #[test]
    fn a_primary_subtag_matches_its_regions() {
        assert!(language_matches("pt-BR", "pt"));
        assert!(language_matches("pt", "pt"));
        assert!(language_matches("pt-BR", "pt-BR"));
        assert!(!language_matches("pt", "pt-BR"));
        assert!(!language_matches("pt-PT", "pt-BR"));
        assert!(!language_matches("ptx", "pt"));
    }

    #[test]
    fn time_zones_are_the_databases() {
        for name in ["Europe/Paris", "America/Sao_Paulo", "UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"] {
            assert_eq!(TimeZoneName::new(name).map(|z| z.0), Ok(name.to_owned()));
        }
        assert_eq!(TimeZoneName::new("europe/paris").map(|z| z.0), Ok("Europe/Paris".to_owned()));
        for bad in ["", "Mars/Olympus", "Europe/../../etc/passwd", "/etc/localtime", &"A".repeat(65)] {
            assert!(TimeZoneName::new(bad).is_err(), "{bad:?}");
        }
    }
}
