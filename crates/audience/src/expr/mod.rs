//! The segment expression language: who a message reaches, in the site's
//! own terms.
//!
//! ```text
//! plan == "pro" && !has(optout) || (age >= 18 && language == "pt")
//! topic("news") && pushService in ["fcm", "mozilla"] && lastSeenAt < 30d
//! ```
//!
//! [`Expr::parse`] turns the text into a typed tree (a comparison's types
//! are checked there: numbers with numbers, strings with strings, booleans
//! only for `==` and `!=`, built-in fields with strings); `Display` prints
//! a tree back as text that parses to the same tree; [`Expr::matches`]
//! evaluates it for one subscriber. The SQL stores compile the same tree
//! to SQL (`tocsin-store`'s `sql/segment.rs`), and the contract suite holds
//! both to the same answers.
//!
//! Semantics worth knowing: a comparison on a tag the subscriber does not
//! have, or has with a value of another type, is false whatever its
//! operator (`plan != "pro"` is false without a `plan`; `!(plan == "pro")`
//! is true). `language == "pt"` matches every `pt-…` tag; `language ==
//! "pt-BR"` only that one. `createdAt < 7d` reads "created less than seven
//! days ago".

mod eval;
mod parse;
mod print;

pub use eval::Subscriber;
pub use parse::{ParseError, MAX_DEPTH, MAX_LEN};

use crate::tags::TagKey;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// It does not hold.
    Not(Box<Expr>),
    /// `has(key)`: the subscriber has the tag, whatever its value.
    Has(TagKey),
    /// `topic("news")`: the subscriber follows the topic.
    Topic(String),
    /// `field op literal`.
    Compare {
        /// What is compared.
        field: Field,
        /// How.
        op: Op,
        /// With what.
        value: Literal,
    },
    /// `field in [literal, …]`: equal to one of them.
    In {
        /// What is compared.
        field: Field,
        /// The values it may equal (may be empty: then false).
        values: Vec<Literal>,
    },
    /// `createdAt < 7d`: the age of a time of the subscription.
    Age {
        /// Which time.
        field: AgeField,
        /// How its age compares.
        op: Op,
        /// With what age.
        age: Age,
    },
}

/// What a comparison reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A tag, by key (`plan`, or `tag("language")` for a key that is also
    /// a built-in name).
    Tag(TagKey),
    /// The subscriber's language (BCP 47), matched by primary subtag.
    Language,
    /// The subscriber's IANA time zone.
    TimeZone,
    /// Whose push service the endpoint is: `fcm`, `mozilla`, `apple`,
    /// `wns` or `other`.
    PushService,
    /// The site's user id.
    UserId,
}

/// The push services `pushService` can be compared with.
pub const PUSH_SERVICES: [&str; 5] = ["fcm", "mozilla", "apple", "wns", "other"];

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    /// The operator's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }

    /// Whether `ordering` (of the left side to the right) satisfies it.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Self::Eq => ordering == Equal,
            Self::Ne => ordering != Equal,
            Self::Lt => ordering == Less,
            Self::Le => ordering != Greater,
            Self::Gt => ordering == Greater,
            Self::Ge => ordering != Less,
        }
    }
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `"text"` (JSON's escapes).
    String(String),
    /// `42`, `-1.5`, `2e3`: always finite.
    Number(f64),
    /// `true`, `false`.
    Bool(bool),
}

/// The times of a subscription whose age can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeField {
    /// When it was first stored.
    CreatedAt,
    /// When its browser last posted it (subscribe or `sync()`).
    LastSeenAt,
}

/// An age: a count of a unit (`90s`, `15m`, `12h`, `7d`, `2w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age {
    /// How many units (at most 100 years' worth).
    pub count: u32,
    /// Which unit.
    pub unit: AgeUnit,
}

/// The unit of an [`Age`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeUnit {
    /// `s`
    Seconds,
    /// `m`
    Minutes,
    /// `h`
    Hours,
    /// `d`
    Days,
    /// `w`
    Weeks,
}

impl AgeUnit {
    fn ms(self) -> i64 {
        match self {
            Self::Seconds => 1000,
            Self::Minutes => 60_000,
            Self::Hours => 3_600_000,
            Self::Days => 86_400_000,
            Self::Weeks => 7 * 86_400_000,
        }
    }

    fn suffix(self) -> char {
        match self {
            Self::Seconds => 's',
            Self::Minutes => 'm',
            Self::Hours => 'h',
            Self::Days => 'd',
            Self::Weeks => 'w',
        }
    }
}

impl Age {
    /// The age in milliseconds.
    pub fn ms(self) -> i64 {
        i64::from(self.count).saturating_mul(self.unit.ms())
    }
}

impl Expr {
    /// Parses an expression (at most [`MAX_LEN`] characters, [`MAX_DEPTH`]
    /// levels of parentheses and `!`).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        parse::parse(text)
    }

    /// How deep the tree is (a leaf is 1), for code that walks it
    /// recursively.
    pub fn depth(&self) -> usize {
        match self {
            Self::And(a, b) | Self::Or(a, b) => 1 + a.depth().max(b.depth()),
            Self::Not(e) => 1 + e.depth(),
            _ => 1,
        }
    }
}
