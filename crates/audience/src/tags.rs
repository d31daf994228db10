//! Tags: the attributes a site gives a subscription, a small map of keys to
//! a string, a number or a boolean. Checked where they enter (the API, an
//! import), so a [`Tags`] value is always within bounds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The most tags one subscription carries.
pub const MAX_TAGS: usize = 50;
/// The longest key, in characters.
pub const MAX_KEY_LEN: usize = 64;
/// The longest string value, in characters.
pub const MAX_STRING_LEN: usize = 256;
/// The most entries one change (`setTags`, `PATCH …/tags`) may name:
/// every tag set, and as many removed.
pub const MAX_PATCH: usize = 2 * MAX_TAGS;

/// Why tags were refused: which key, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// A key outside `[a-z0-9_.:-]{1,64}`.
    #[error("tag key {0:?} is not 1-64 characters of a-z, 0-9, '_', '.', ':', '-'")]
    Key(String),
    /// A value that is not a string, a number or a boolean, or a string too long.
    #[error("tag {key:?}: {why}")]
    Value {
        /// The key whose value was refused.
        key: String,
        /// What was wrong.
        why: &'static str,
    },
    /// More than [`MAX_TAGS`] tags, once a change is applied.
    #[error("a subscription carries at most {MAX_TAGS} tags; this would make {0}")]
    TooMany(usize),
    /// Not a JSON object.
    #[error("tags must be a JSON object of keys to strings, numbers or booleans")]
    NotAnObject,
}

impl TagError {
    /// How many tags a refused change would have left, when that was why.
    pub fn would_carry(&self) -> Option<usize> {
        match self {
            Self::TooMany(n) => Some(*n),
            _ => None,
        }
    }
}

/// A tag's key: 1–64 characters of `[a-z0-9_.:-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TagKey(String);

impl TagKey {
    /// Checks a key.
    pub fn new(key: &str) -> Result<Self, TagError> {
        if is_key(key) {
            Ok(Self(key.to_owned()))
        } else {
            Err(TagError::Key(shorten(key)))
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TagKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TagKey::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether `key` is a tag key's text.
pub fn is_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A key as an error message quotes it: at most 80 characters.
fn shorten(key: &str) -> String {
    key.chars().take(80).collect()
}

/// A tag's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagValue {
    /// `true` or `false`.
    Bool(bool),
    /// A number, kept as it was written (`31` stays `31`); compared as a
    /// 64-bit float, as browsers' numbers are (integers exact up to 2^53).
    Number(serde_json::Number),
    /// Text, at most 256 characters.
    String(String),
}

impl TagValue {
    /// The number, as compared.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// Reads a JSON value; `key` names it in the error.
    fn from_json(key: &str, v: &serde_json::Value) -> Result<Self, TagError> {
        match v {
            serde_json::Value::Bool(b) => Ok(Self::Bool(*b)),
            serde_json::Value::Number(n) => Ok(Self::Number(n.clone())),
            // PostgreSQL's text and jsonb cannot hold U+0000.
            serde_json::Value::String(s) if s.contains('\0') => {
                Err(TagError::Value { key: shorten(key), why: "a string value may not contain U+0000" })
            }
            serde_json::Value::String(s) if s.chars().count() <= MAX_STRING_LEN => Ok(Self::String(s.clone())),
            serde_json::Value::String(_) => {
                Err(TagError::Value { key: shorten(key), why: "a string value is at most 256 characters" })
            }
            _ => Err(TagError::Value { key: shorten(key), why: "a value is a string, a number or a boolean" }),
        }
    }
}

/// A subscription's tags: at most 50, each key checked, each value within
/// bounds. Serialized as a JSON object, keys in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<TagKey, TagValue>);

impl Tags {
    /// No tags.
    pub const EMPTY: Tags = Tags(BTreeMap::new());

    /// Reads tags from a JSON value: an object of at most 50 keys.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, TagError> {
        let serde_json::Value::Object(map) = v else { return Err(TagError::NotAnObject) };
        if map.len() > MAX_TAGS {
            return Err(TagError::TooMany(map.len()));
        }
        let mut tags = BTreeMap::new();
        for (k, v) in map {
            tags.insert(TagKey::new(k)?, TagValue::from_json(k, v)?);
        }
        Ok(Self(tags))
    }

    /// Reads tags as stored (a JSON object's text; empty or `None` for none).
    pub fn from_stored(text: Option<&str>) -> Result<Self, TagError> {
        match text {
            None | Some("") => Ok(Self::default()),
            Some(t) => Self::from_json(&serde_json::from_str(t).map_err(|_| TagError::NotAnObject)?),
        }
    }

    /// The text to store: `None` when there are no tags.
    pub fn to_stored(&self) -> Option<String> {
        if self.0.is_empty() {
            None
        } else {
            serde_json::to_string(self).ok()
        }
    }

    /// The value of `key`, if the subscription has it.
    pub fn get(&self, key: &str) -> Option<&TagValue> {
        self.0.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    /// How many tags there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each key and its value, keys in order.
    pub fn iter(&self) -> impl Iterator<Item = (&TagKey, &TagValue)> {
        self.0.iter()
    }

    /// These tags as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Tags::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// A change to a subscription's tags: each key set to a value, or removed
/// (JSON `null`), the others left as they are (RFC 7396's merge patch, on
/// a flat map).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagPatch(BTreeMap<TagKey, Option<TagValue>>);

impl TagPatch {
    /// Reads a change from a JSON object of at most [`MAX_PATCH`] keys.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, TagError> {
        let serde_json::Value::Object(map) = v else { return Err(TagError::NotAnObject) };
        if map.len() > MAX_PATCH {
            return Err(TagError::TooMany(map.len()));
        }
        let mut patch = BTreeMap::new();
        for (k, v) in map {
            let value = if v.is_null() { None } else { Some(TagValue::from_json(k, v)?) };
            patch.insert(TagKey::new(k)?, value);
        }
        Ok(Self(patch))
    }

    /// The tags `current` becomes with this change, or why it cannot:
    /// more than 50 tags.
    pub fn apply(&self, current: &Tags) -> Result<Tags, TagError> {
        let mut tags = current.0.clone();
        for (k, v) in &self.0 {
            match v {
                Some(v) => tags.insert(k.clone(), v.clone()),
                None => tags.remove(k),
            };
        }
        if tags.len() > MAX_TAGS {
            return Err(TagError::TooMany(tags.len()));
        }
        Ok(Tags(tags))
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A change that sets every tag of `tags` (and removes none).
    pub fn setting(tags: &Tags) -> Self {
        Self(tags.0.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect())
    }

    /// This change followed by `later` (whose entries win).
    pub fn and_then(mut self, later: &TagPatch) -> Self {
        self.0.extend(later.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }
}

impl<'de> Deserialize<'de> for TagPatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        TagPatch::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TagPatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_bounded_and_named_in_the_error() {
        for good in ["a", "zip:1", "first_name", "a.b-c", &"k".repeat(64)] {
            assert!(TagKey::new(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "first name", "é", "a/b", &"k".repeat(65), "a\"b", "a\0"] {
            assert_eq!(TagKey::new(bad), Err(TagError::Key(bad.chars().take(80).collect())), "{bad:?}");
        }
        let e = Tags::from_json(&json!({"ok": 1, "Bad Key": 2})).unwrap_err();
        assert!(e.to_string().contains("\"Bad Key\""), "{e}");
    }

    #[test]
    fn values_are_strings_numbers_or_booleans() {
        let t = Tags::from_json(&json!({"s": "x", "n": 3.5, "i": 9007199254740993_i64, "b": false})).unwrap();
        assert_eq!(t.get("s"), Some(&TagValue::String("x".into())));
        assert_eq!(t.get("b"), Some(&TagValue::Bool(false)));
        assert_eq!(t.len(), 4);
        for bad in [
            json!({"k": null}),
            json!({"k": [1]}),
            json!({"k": {"a": 1}}),
            json!({"k": "x".repeat(257)}),
            json!({"k": "a\u{0}"}),
        ] {
            assert!(matches!(Tags::from_json(&bad), Err(TagError::Value { ref key, .. }) if key == "k"), "{bad}");
        }
        assert!(Tags::from_json(&json!({"k": "é".repeat(256)})).is_ok(), "256 characters, more bytes");
        assert_eq!(Tags::from_json(&json!([1])), Err(TagError::NotAnObject));
        assert_eq!(Tags::from_json(&json!("x")), Err(TagError::NotAnObject));
    }

    #[test]
    fn at_most_fifty() {
        let fifty: serde_json::Map<String, serde_json::Value> = (0..50).map(|i| (format!("k{i}"), json!(i))).collect();
        let tags = Tags::from_json(&serde_json::Value::Object(fifty.clone())).unwrap();
        let mut more = fifty;
        more.insert("k50".into(), json!(1));
        assert_eq!(Tags::from_json(&serde_json::Value::Object(more)), Err(TagError::TooMany(51)));
        let one_more = TagPatch::from_json(&json!({"extra": true})).unwrap();
        assert_eq!(one_more.apply(&tags), Err(TagError::TooMany(51)));
        let swap = TagPatch::from_json(&json!({"extra": true, "k0": null})).unwrap();
        assert_eq!(swap.apply(&tags).unwrap().len(), 50);
    }

    #[test]
    fn a_patch_sets_and_removes() {
        let tags = Tags::from_json(&json!({"a": 1, "b": "x"})).unwrap();
        let patch = TagPatch::from_json(&json!({"a": null, "c": true, "missing": null})).unwrap();
        assert_eq!(patch.apply(&tags).unwrap().to_json(), json!({"b": "x", "c": true}));
        assert_eq!(TagPatch::default().apply(&tags).unwrap(), tags);
    }

    #[test]
    fn stored_text_round_trips() {
        let tags = Tags::from_json(&json!({"plan": "pro", "age": 31, "vip": true})).unwrap();
        let text = tags.to_stored().unwrap();
        assert_eq!(text, r#"{"age":31,"plan":"pro","vip":true}"#);
        assert_eq!(Tags::from_stored(Some(&text)).unwrap(), tags);
        assert_eq!(Tags::default().to_stored(), None);
        assert_eq!(Tags::from_stored(None).unwrap(), Tags::default());
    }
}
