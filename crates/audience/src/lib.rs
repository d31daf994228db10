//! Who a message reaches, in the site's own terms, and what each one reads.
//!
//! - [`tags`]: the attributes a site gives a subscription (`plan = "pro"`,
//!   `age = 31`, `vip = true`), checked where they enter;
//! - [`locale`]: a subscription's `language` (BCP 47) and `timeZone` (IANA);
//! - [`expr`]: the segment expression language (`plan == "pro" &&
//!   !has(optout)`), parsed into a typed tree, printed back, and evaluated
//!   against one subscriber (the SQL stores compile the same tree to SQL);
//! - [`compose`]: a message's payloads, and a personal message's per
//!   subscriber (text by language, Liquid templates over tags);
//! - [`rules`]: delivery rules: local times by zone, quiet hours, caps.
//!
//! No I/O: values in, values out (templates read no file).

#![warn(missing_docs)]

pub mod compose;
pub mod expr;
pub mod locale;
pub mod rules;
pub mod tags;

pub use expr::{Expr, ParseError};
pub use locale::{Language, TimeZoneName};
pub use tags::{TagError, TagKey, TagPatch, TagValue, Tags};
