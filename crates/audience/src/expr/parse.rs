//! The parser: text to [`Expr`], with the column of the first thing wrong.
//!
//! Hand-written recursive descent rather than a parser-combinator crate:
//! the grammar is a dozen lines, the errors must name a column and say
//! what was expected there in the API's words, and nesting must be bounded
//! before it can exhaust the stack; a generated parser would need as much
//! code around it to do those.
//!
//! ```text
//! expr    = and { "||" and }
//! and     = unary { "&&" unary }
//! unary   = "!" unary | "(" expr ")" | atom
//! atom    = "has" "(" key ")" | "topic" "(" string ")" | age | field compare
//! compare = op literal | "in" "[" [ literal { "," literal } ] "]"
//! field   = key | "tag" "(" string ")" | "language" | "timeZone" | "pushService" | "userId"
//! age     = ( "createdAt" | "lastSeenAt" ) op digits ( "s" | "m" | "h" | "d" | "w" )
//! op      = "==" | "!=" | "<" | "<=" | ">" | ">="
//! literal = string | number | "true" | "false"
//! key     = 1-64 of [a-z0-9_.:-]
//! ```

use super::{Age, AgeField, AgeUnit, Expr, Field, Literal, Op, PUSH_SERVICES};
use crate::locale::Language;
use crate::tags::TagKey;

/// The longest expression, in characters.
pub const MAX_LEN: usize = 2000;
/// The deepest nesting of parentheses and `!`.
pub const MAX_DEPTH: usize = 32;
/// The longest age: 100 years.
const MAX_AGE_MS: i64 = 100 * 366 * 86_400_000;

/// Why an expression was refused, and where (1-based, in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// Where the problem is: 1 for the first character.
    pub column: usize,
    /// What is wrong there.
    pub message: String,
}

pub(super) fn parse(text: &str) -> Result<Expr, ParseError> {
    let chars = text.chars().count();
    if chars > MAX_LEN {
        return Err(ParseError {
            column: MAX_LEN + 1,
            message: format!("an expression is at most {MAX_LEN} characters"),
        });
    }
    let mut p = Parser { text, pos: 0, depth: 0 };
    p.skip_space();
    if p.at_end() {
        return Err(p.error("the expression is empty"));
    }
    let e = p.or()?;
    p.skip_space();
    if !p.at_end() {
        return Err(p.error("expected && or || or the end"));
    }
    Ok(e)
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset.
    pos: usize,
    depth: usize,
}

/// The built-in names, which a tag with the same key is written around
/// with `tag("…")`.
pub(super) const RESERVED: [&str; 7] = ["has", "topic", "tag", "in", "true", "false", "language"];

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn error_at(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError { column: self.text[..pos].chars().count() + 1, message: message.into() }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.pos, message)
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t', '\n', '\r']);
        self.pos = self.text.len() - trimmed.len();
    }

    /// Takes `token` (after spaces) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect_token(&mut self, token: &str, what: &str) -> Result<(), ParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("expected {what}")))
        }
    }

    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            // At the '(' or '!' just taken.
            return Err(self.error_at(self.pos - 1, format!("an expression nests at most {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            self.deeper()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        if self.eat("(") {
            self.deeper()?;
            let e = self.or()?;
            self.expect_token(")", "')'")?;
            self.depth -= 1;
            return Ok(e);
        }
        self.atom()
    }

    /// A run of name characters: `[A-Za-z0-9_.:-]`.
    fn word(&mut self) -> (usize, &str) {
        self.skip_space();
        let start = self.pos;
        let len = self.rest().bytes().take_while(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(b)).count();
        self.pos += len;
        (start, &self.text[start..start + len])
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        let (start, word) = self.word();
        let word = word.to_owned();
        if word.is_empty() {
            return Err(self.error_at(start, "expected a tag, a built-in field, has(…), topic(…), '!' or '('"));
        }
        let called = {
            self.skip_space();
            self.rest().starts_with('(')
        };
        let field = match word.as_str() {
            "has" if called => {
                self.expect_token("(", "'('")?;
                let (at, key) = self.word();
                let key = TagKey::new(key).map_err(|e| self.error_at(at, e.to_string()))?;
                self.expect_token(")", "')'")?;
                return Ok(Expr::Has(key));
            }
            "topic" if called => {
                self.expect_token("(", "'('")?;
                let topic = self.string()?;
                if topic.is_empty() || topic.len() > 256 {
                    return Err(self.error("a topic is 1-256 bytes"));
                }
                self.expect_token(")", "')'")?;
                return Ok(Expr::Topic(topic));
            }
            "tag" if called => {
                self.expect_token("(", "'('")?;
                self.skip_space();
                let at = self.pos;
                let key = self.string()?;
                let key = TagKey::new(&key).map_err(|e| self.error_at(at, e.to_string()))?;
                self.expect_token(")", "')'")?;
                Field::Tag(key)
            }
            "createdAt" => return self.age(AgeField::CreatedAt),
            "lastSeenAt" => return self.age(AgeField::LastSeenAt),
            "language" => Field::Language,
            "timeZone" => Field::TimeZone,
            "pushService" => Field::PushService,
            "userId" => Field::UserId,
            _ => Field::Tag(TagKey::new(&word).map_err(|_| {
                self.error_at(
                    start,
                    format!(
                        "{word:?} is neither a built-in field nor a tag key (1-64 of a-z, 0-9, '_', '.', ':', '-')"
                    ),
                )
            })?),
        };
        self.compare(field)
    }

    fn op(&mut self) -> Option<Op> {
        // Longest first: "<=" before "<".
        for (text, op) in [("==", Op::Eq), ("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
        {
            if self.eat(text) {
                return Some(op);
            }
        }
        None
    }

    fn compare(&mut self, field: Field) -> Result<Expr, ParseError> {
        self.skip_space();
        let at = self.pos;
        if let Some(op) = self.op() {
            let value_at = {
                self.skip_space();
                self.pos
            };
            let value = self.literal()?;
            let value = check(&field, Some(op), value).map_err(|m| self.error_at(value_at, m))?;
            return Ok(Expr::Compare { field, op, value });
        }
        let (_, word) = self.word();
        if word != "in" {
            return Err(self.error_at(at, "expected ==, !=, <, <=, >, >= or in"));
        }
        self.expect_token("[", "'['")?;
        let mut values = Vec::new();
        if !self.eat("]") {
            loop {
                self.skip_space();
                let value_at = self.pos;
                let value = self.literal()?;
                values.push(check(&field, None, value).map_err(|m| self.error_at(value_at, m))?);
                if self.eat("]") {
                    break;
                }
                self.expect_token(",", "',' or ']'")?;
            }
        }
        Ok(Expr::In { field, values })
    }

    fn age(&mut self, field: AgeField) -> Result<Expr, ParseError> {
        self.skip_space();
        let Some(op) = self.op() else { return Err(self.error("expected ==, !=, <, <=, > or >=")) };
        let (at, word) = self.word();
        let word = word.to_owned();
        let bad = || format!("expected an age such as 90s, 15m, 12h, 7d or 2w, at most 100 years, not {word:?}");
        let (digits, unit) = word.split_at(word.len().saturating_sub(1).min(word.len()));
        let unit = match unit {
            "s" => AgeUnit::Seconds,
            "m" => AgeUnit::Minutes,
            "h" => AgeUnit::Hours,
            "d" => AgeUnit::Days,
            "w" => AgeUnit::Weeks,
            _ => return Err(self.error_at(at, bad())),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error_at(at, bad()));
        }
        let age = digits.parse::<u32>().ok().map(|count| Age { count, unit });
        match age {
            Some(age) if age.ms() <= MAX_AGE_MS => Ok(Expr::Age { field, op, age }),
            _ => Err(self.error_at(at, bad())),
        }
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        self.skip_space();
        if self.rest().starts_with('"') {
            return Ok(Literal::String(self.string()?));
        }
        let start = self.pos;
        let len = self.rest().bytes().take_while(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)).count();
        let word = &self.text[start..start + len];
        let value = match word {
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            _ if is_number(word) => match word.parse::<f64>() {
                Ok(n) if n.is_finite() => Literal::Number(n),
                _ => return Err(self.error_at(start, format!("{word} is out of a number's range"))),
            },
            _ => return Err(self.error_at(start, "expected a value: \"text\", a number, true or false")),
        };
        self.pos += len;
        Ok(value)
    }

    /// A JSON string literal, escapes and all.
    fn string(&mut self) -> Result<String, ParseError> {
        self.skip_space();
        let start = self.pos;
        if !self.rest().starts_with('"') {
            return Err(self.error("expected a \"string\""));
        }
        let bytes = self.rest().as_bytes();
        let mut i = 1;
        loop {
            match bytes.get(i) {
                None => return Err(self.error_at(start, "this string is not closed")),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let raw = &self.rest()[..=i];
        let s = serde_json::from_str::<String>(raw).map_err(|e| self.error_at(start, format!("bad string: {e}")))?;
        // No stored text holds U+0000 (PostgreSQL cannot).
        if s.contains('\0') {
            return Err(self.error_at(start, "a string may not contain U+0000"));
        }
        self.pos += i + 1;
        Ok(s)
    }
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    digits(int)
        && (int == "0" || !int.starts_with('0'))
        && frac.is_none_or(digits)
        && exp.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

/// A comparison's types: what `field` may be compared with (`op` is
/// `None` inside `in [...]`, which compares by equality). Built-in fields
/// take strings by `==`/`!=` only; language tags are put in canonical case.
fn check(field: &Field, op: Option<Op>, value: Literal) -> Result<Literal, String> {
    let equality = matches!(op, None | Some(Op::Eq | Op::Ne));
    match (field, value) {
        (Field::Tag(_), Literal::Bool(_)) if !equality => Err("booleans compare only with == and !=".into()),
        (Field::Tag(_), value) => Ok(value),
        (_, Literal::String(_)) if !equality => Err("built-in fields compare only with ==, != and in".into()),
        (Field::Language, Literal::String(s)) => {
            Language::new(&s).map(|l| Literal::String(l.as_str().to_owned())).map_err(|e| e.to_string())
        }
        (Field::PushService, Literal::String(s)) if !PUSH_SERVICES.contains(&s.as_str()) => {
            Err(format!("pushService is one of {}", PUSH_SERVICES.join(", ")))
        }
        (_, Literal::String(s)) => Ok(Literal::String(s)),
        (_, _) => Err("built-in fields compare with \"strings\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String) {
        let e = parse(text).expect_err(text);
        (e.column, e.message)
    }

    #[test]
    fn precedence_and_associativity() {
        let e = parse(r#"a == 1 || b == 2 && !c == 3"#).unwrap();
        let Expr::Or(_, right) = e else { panic!("|| binds loosest: {e:?}") };
        assert!(matches!(*right, Expr::And(_, ref r) if matches!(**r, Expr::Not(_))));
        let chain = parse("has(a) && has(b) && has(c)").unwrap();
        assert!(matches!(chain, Expr::And(ref l, _) if matches!(**l, Expr::And(..))), "left-associative");
    }

    #[test]
    fn the_documented_examples_parse() {
        for text in [
            r#"plan == "pro" && !has(optout) || (age >= 18 && language == "pt")"#,
            r#"topic("news") && pushService in ["fcm", "mozilla"] && lastSeenAt < 30d"#,
            r#"zip:1 == true && !(optout == true) || vip == true"#,
            r#"score > -1.5e3 && city in [] || tag("language") == "x" && timeZone == "Europe/Paris""#,
            r#"userId != "u1" && createdAt >= 2w && first.name <= "m""#,
        ] {
            parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn errors_name_the_column() {
        assert_eq!(err("").0, 1);
        assert_eq!(err("plan == ").0, 9);
        assert_eq!(err("plan = 1").0, 6);
        assert_eq!(err("Plan == 1").0, 1);
        assert_eq!(err("a == 1 &&").0, 10);
        assert_eq!(err("(a == 1").0, 8);
        assert_eq!(err("a == 1 b").0, 8);
        assert_eq!(err(r#"a == "open"#).0, 6);
        assert_eq!(err("vip > true").0, 7);
        assert_eq!(err(r#"language < "en""#).0, 12);
        assert_eq!(err(r#"pushService == "aol""#).0, 16);
        assert_eq!(err("userId == 3").0, 11);
        assert_eq!(err("createdAt < 7y").0, 13);
        assert_eq!(err("createdAt < 99999999w").0, 13);
        assert_eq!(err("a == 1e999").0, 6);
        assert_eq!(err("a == 01").0, 6);
        assert_eq!(err(r#"a == "x\u0000""#).0, 6);
        assert_eq!(err("has(Bad)").0, 5);
        assert_eq!(err(r#"ü == 1"#).0, 1);
        assert_eq!(err(r#"a == "ü" && "#).0, 13, "columns count characters, not bytes");
        assert!(err("a == 1 &&& b == 2").1.contains("expected"));
    }

    #[test]
    fn bounded_in_length_and_depth() {
        let deep = format!("{}a == 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&deep).is_ok());
        let deeper = format!("{}a == 1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert_eq!(err(&deeper).0, MAX_DEPTH + 1);
        let nots = format!("{}a == 1", "!".repeat(MAX_DEPTH + 1));
        assert!(err(&nots).1.contains("nests"));
        let long = format!("a == \"{}\"", "x".repeat(MAX_LEN));
        assert_eq!(err(&long).0, MAX_LEN + 1);
        // A flat chain is not deep, however long.
        let flat = vec!["has(a)"; 190].join(" && ");
        assert!(flat.len() <= MAX_LEN && parse(&flat).is_ok());
    }

    #[test]
    fn language_literals_are_canonical() {
        assert_eq!(
            parse(r#"language == "pt-br""#).unwrap(),
            Expr::Compare { field: Field::Language, op: Op::Eq, value: Literal::String("pt-BR".into()) }
        );
    }
}
