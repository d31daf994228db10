//! The printer: a tree back to text that parses to the same tree, with no
//! more parentheses than precedence needs (`&&` binds tighter than `||`,
//! both group to the left).

use std::fmt;

use super::parse::RESERVED;
use super::{AgeField, Expr, Field, Literal};

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write(f, self, 0)
    }
}

/// Binding strength: `||` 1, `&&` 2, `!` and atoms 3.
fn strength(e: &Expr) -> u8 {
    match e {
        Expr::Or(..) => 1,
        Expr::And(..) => 2,
        _ => 3,
    }
}

/// Writes `e` where the context binds with `outer`: parenthesized when it
/// binds looser.
fn write(f: &mut fmt::Formatter<'_>, e: &Expr, outer: u8) -> fmt::Result {
    let parens = strength(e) < outer;
    if parens {
        f.write_str("(")?;
    }
    match e {
        // Left operands at their own strength (left grouping needs none),
        // right ones one stronger.
        Expr::Or(a, b) => {
            write(f, a, 1)?;
            f.write_str(" || ")?;
            write(f, b, 2)?;
        }
        Expr::And(a, b) => {
            write(f, a, 2)?;
            f.write_str(" && ")?;
            write(f, b, 3)?;
        }
        Expr::Not(inner) => {
            f.write_str("!")?;
            write(f, inner, 3)?;
        }
        Expr::Has(key) => write!(f, "has({key})")?,
        Expr::Topic(topic) => write!(f, "topic({})", quoted(topic))?,
        Expr::Compare { field, op, value } => write!(f, "{} {} {}", FieldText(field), op.as_str(), LiteralText(value))?,
        Expr::In { field, values } => {
            write!(f, "{} in [", FieldText(field))?;
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}", LiteralText(v))?;
            }
            f.write_str("]")?;
        }
        Expr::Age { field, op, age } => {
            let name = match field {
                AgeField::CreatedAt => "createdAt",
                AgeField::LastSeenAt => "lastSeenAt",
            };
            write!(f, "{name} {} {}{}", op.as_str(), age.count, age.unit.suffix())?;
        }
    }
    if parens {
        f.write_str(")")?;
    }
    Ok(())
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct FieldText<'a>(&'a Field);

impl fmt::Display for FieldText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Field::Tag(key) if RESERVED.contains(&key.as_str()) => write!(f, "tag({})", quoted(key.as_str())),
            Field::Tag(key) => f.write_str(key.as_str()),
            Field::Language => f.write_str("language"),
            Field::TimeZone => f.write_str("timeZone"),
            Field::PushService => f.write_str("pushService"),
            Field::UserId => f.write_str("userId"),
        }
    }
}

struct LiteralText<'a>(&'a Literal);

impl fmt::Display for LiteralText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Literal::String(s) => f.write_str(&quoted(s)),
            // Whole numbers as integers (`18`, not `18.0`); others by
            // `Debug`, the shortest text that reads back as the same float,
            // with an exponent for the very large and small (`1e300`),
            // where `Display` would write 300 digits.
            Literal::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Literal::Number(n) => write!(f, "{n:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Age, AgeUnit, Op};
    use super::*;
    use crate::tags::TagKey;
    use proptest::prelude::*;

    #[test]
    fn prints_with_the_parentheses_precedence_needs() {
        for (text, printed) in [
            ("a == 1 || b == 2 && c == 3", "a == 1 || b == 2 && c == 3"),
            ("(a == 1 || b == 2) && c == 3", "(a == 1 || b == 2) && c == 3"),
            ("a == 1 && (b == 2 && c == 3)", "a == 1 && (b == 2 && c == 3)"),
            ("!(a == 1 && has(b))", "!(a == 1 && has(b))"),
            ("!!topic(\"x\")", "!!topic(\"x\")"),
            (r#"tag("language") == "x""#, r#"tag("language") == "x""#),
            (r#"language in ["pt-br", "en"]"#, r#"language in ["pt-BR", "en"]"#),
            ("createdAt < 7d", "createdAt < 7d"),
            ("a > 1e300", "a > 1e300"),
        ] {
            let e = Expr::parse(text).unwrap();
            assert_eq!(e.to_string(), printed, "{text}");
            assert_eq!(Expr::parse(printed).unwrap(), e);
        }
    }

    fn key() -> impl Strategy<Value = TagKey> {
        prop_oneof![
            proptest::sample::select(vec!["a", "plan", "zip:1", "first.name", "x-y", "language", "true", "in", "0"]),
            proptest::sample::select(vec!["has", "topic", "tag", "false", "_", "9z"]),
        ]
        .prop_map(|k| TagKey::new(k).unwrap())
    }

    fn text() -> impl Strategy<Value = String> {
        // Any character but U+0000, which no stored text may hold.
        proptest::collection::vec(any::<char>().prop_filter("not NUL", |c| *c != '\0'), 0..12)
            .prop_map(|c| c.into_iter().collect())
    }

    fn literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            text().prop_map(Literal::String),
            any::<f64>().prop_filter("finite", |n| n.is_finite()).prop_map(Literal::Number),
            (-1000i32..1000).prop_map(|n| Literal::Number(f64::from(n))),
            any::<bool>().prop_map(Literal::Bool),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        proptest::sample::select(vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge])
    }

    fn leaf() -> impl Strategy<Value = Expr> {
        let builtin = proptest::sample::select(vec![Field::TimeZone, Field::UserId]);
        let unit = proptest::sample::select(vec![
            AgeUnit::Seconds,
            AgeUnit::Minutes,
            AgeUnit::Hours,
            AgeUnit::Days,
            AgeUnit::Weeks,
        ]);
        prop_oneof![
            key().prop_map(Expr::Has),
            "[a-z]{1,8}".prop_map(Expr::Topic),
            (key(), op(), literal())
                .prop_filter("booleans by equality only", |(_, op, v)| {
                    !matches!(v, Literal::Bool(_)) || matches!(op, Op::Eq | Op::Ne)
                })
                .prop_map(|(k, op, value)| Expr::Compare { field: Field::Tag(k), op, value }),
            (key(), proptest::collection::vec(literal(), 0..4))
                .prop_map(|(k, values)| Expr::In { field: Field::Tag(k), values }),
            (builtin, any::<bool>(), text()).prop_map(|(field, eq, s)| Expr::Compare {
                field,
                op: if eq { Op::Eq } else { Op::Ne },
                value: Literal::String(s)
            }),
            proptest::sample::select(vec!["en", "pt-BR", "zh-Hant-TW"])
                .prop_map(|l| Expr::In { field: Field::Language, values: vec![Literal::String(l.into())] }),
            proptest::sample::select(super::super::PUSH_SERVICES.to_vec()).prop_map(|s| Expr::Compare {
                field: Field::PushService,
                op: Op::Eq,
                value: Literal::String(s.into())
            }),
            (any::<bool>(), op(), 0u32..5000, unit).prop_map(|(c, op, count, unit)| Expr::Age {
                field: if c { AgeField::CreatedAt } else { AgeField::LastSeenAt },
                op,
                age: Age { count, unit }
            }),
        ]
    }

    /// Trees of up to 8 levels: within the parser's nesting bound, since
    /// the printer adds at most one level of parentheses per level.
    fn tree() -> impl Strategy<Value = Expr> {
        leaf().prop_recursive(8, 40, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    proptest! {
        #[test]
        fn what_it_prints_parses_back_to_the_same_tree(e in tree()) {
            let printed = e.to_string();
            prop_assume!(printed.chars().count() <= crate::expr::MAX_LEN);
            let parsed = Expr::parse(&printed);
            prop_assert_eq!(parsed, Ok(e), "{}", printed);
        }

        #[test]
        fn any_text_parses_or_fails_with_a_column_inside_it(s in "[ -~]{0,80}") {
            match Expr::parse(&s) {
                Ok(e) => prop_assert_eq!(Expr::parse(&e.to_string()), Ok(e)),
                Err(err) => prop_assert!(err.column >= 1 && err.column <= s.chars().count() + 1, "{err} in {s:?}"),
            }
        }
    }
}
