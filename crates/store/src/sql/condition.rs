//! A segment expression ([`Expr`]) compiled to SQL over one subscription
//! row `s`, agreeing with `Expr::matches` (the contract suite checks both
//! on the same rows).
//!
//! Every value is a bound parameter, tag keys included: no text of the
//! expression reaches the SQL. Each comparison is wrapped so that it is
//! never NULL (a missing tag is false, not unknown), which keeps `!` the
//! plain negation it is in Rust. Tags are read from the JSON text on
//! SQLite (`json_type`/`json_extract` with a quoted path) and from the
//! jsonb column `tags_j` on PostgreSQL; strings are ordered by code point
//! on both (SQLite's `BINARY`, PostgreSQL's `COLLATE "C"`), as in Rust.

use tocsin_audience::expr::{AgeField, Expr, Field, Literal, Op};

use super::target::Bind;
use super::Backend;

/// The SQL of `expr`, with its values pushed onto `binds` (whose length
/// is the number of the last placeholder used so far).
pub(crate) fn condition_sql(expr: &Expr, backend: Backend, now: i64, binds: &mut Vec<Bind>) -> String {
    let mut c = Compiler { backend, now, binds };
    c.expr(expr)
}

struct Compiler<'a> {
    backend: Backend,
    now: i64,
    binds: &'a mut Vec<Bind>,
}

impl Compiler<'_> {
    /// Binds a value; returns its placeholder.
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    fn expr(&mut self, e: &Expr) -> String {
        match e {
            Expr::And(a, b) => format!("({} AND {})", self.expr(a), self.expr(b)),
            Expr::Or(a, b) => format!("({} OR {})", self.expr(a), self.expr(b)),
            Expr::Not(inner) => format!("(NOT {})", self.expr(inner)),
            Expr::Has(key) => match self.backend {
                Backend::Sqlite => {
                    let p = self.bind(Bind::Text(json_path(key.as_str())));
                    format!("(json_type(s.tags, {p}) IS NOT NULL)")
                }
                Backend::Postgres => {
                    let k = self.bind(Bind::Text(key.as_str().to_owned()));
                    format!("((s.tags_j -> CAST({k} AS TEXT)) IS NOT NULL)")
                }
            },
            Expr::Topic(t) => {
                let p = self.bind(Bind::Text(t.clone()));
                format!(
                    "EXISTS (SELECT 1 FROM subscription_topics st WHERE st.subscription_id = s.id AND st.topic = {p})"
                )
            }
            Expr::Compare { field, op, value } => self.compare(field, *op, value),
            Expr::In { field, values } if values.is_empty() => {
                let _ = field;
                "(1 = 0)".into()
            }
            Expr::In { field, values } => {
                let parts: Vec<String> = values.iter().map(|v| self.compare(field, Op::Eq, v)).collect();
                format!("({})", parts.join(" OR "))
            }
            Expr::Age { field, op, age } => {
                let column = match field {
                    AgeField::CreatedAt => "s.created_at",
                    AgeField::LastSeenAt => "s.last_seen_at",
                };
                // An age below N is a time after now - N: the operator turns.
                let flipped = match op {
                    Op::Eq => Op::Eq,
                    Op::Ne => Op::Ne,
                    Op::Lt => Op::Gt,
                    Op::Le => Op::Ge,
                    Op::Gt => Op::Lt,
                    Op::Ge => Op::Le,
                };
                let p = self.bind(Bind::Int(self.now.saturating_sub(age.ms())));
                format!("({column} {} {p})", sql_op(flipped))
            }
        }
    }

    fn compare(&mut self, field: &Field, op: Op, value: &Literal) -> String {
        let column = match field {
            Field::Tag(key) => return self.tag(key.as_str(), op, value),
            Field::Language => return self.language(op, value),
            Field::TimeZone => "s.time_zone",
            Field::PushService => "s.push_service",
            Field::UserId => "s.user_id",
        };
        let Literal::String(v) = value else { return "(1 = 0)".into() };
        let p = self.bind(Bind::Text(v.clone()));
        format!("COALESCE({column} {} {p}, {})", sql_op(op), self.falsy())
    }

    /// `language == "pt"` matches `pt` and every `pt-…`; `"pt-BR"` only
    /// itself. Stored tags are canonical, so this is text.
    fn language(&mut self, op: Op, value: &Literal) -> String {
        let Literal::String(v) = value else { return "(1 = 0)".into() };
        let equal = if v.contains('-') {
            let p = self.bind(Bind::Text(v.clone()));
            format!("s.language = {p}")
        } else {
            let p = self.bind(Bind::Text(v.clone()));
            let prefix = self.bind(Bind::Text(format!("{v}-%")));
            format!("(s.language = {p} OR s.language LIKE {prefix})")
        };
        let test = if op == Op::Ne { format!("NOT {equal}") } else { equal };
        format!("COALESCE({test}, {})", self.falsy())
    }

    fn tag(&mut self, key: &str, op: Op, value: &Literal) -> String {
        match self.backend {
            Backend::Sqlite => {
                let path = self.bind(Bind::Text(json_path(key)));
                match value {
                    // A JSON string extracts as TEXT, and TEXT equals only TEXT.
                    Literal::String(v) if op == Op::Eq => {
                        let p = self.bind(Bind::Text(v.clone()));
                        format!("COALESCE(json_extract(s.tags, {path}) = {p}, 0)")
                    }
                    Literal::String(v) => {
                        let p = self.bind(Bind::Text(v.clone()));
                        format!(
                            "COALESCE(json_type(s.tags, {path}) = 'text' AND json_extract(s.tags, {path}) {} {p}, 0)",
                            sql_op(op)
                        )
                    }
                    Literal::Number(n) => {
                        let p = self.bind(Bind::Float(*n));
                        format!(
                            "COALESCE(json_type(s.tags, {path}) IN ('integer', 'real') \
                             AND json_extract(s.tags, {path}) {} {p}, 0)",
                            sql_op(op)
                        )
                    }
                    Literal::Bool(b) => {
                        let want = if *b == (op == Op::Eq) { "'true'" } else { "'false'" };
                        format!("COALESCE(json_type(s.tags, {path}) = {want}, 0)")
                    }
                }
            }
            Backend::Postgres => {
                let k = self.bind(Bind::Text(key.to_owned()));
                let item = format!("(s.tags_j -> CAST({k} AS TEXT))");
                let text = format!("(s.tags_j ->> CAST({k} AS TEXT))");
                match value {
                    Literal::String(v) => {
                        let p = self.bind(Bind::Text(v.clone()));
                        format!(
                            "COALESCE(jsonb_typeof({item}) = 'string' AND {text} COLLATE \"C\" {} CAST({p} AS TEXT), false)",
                            sql_op(op)
                        )
                    }
                    // CASE, not AND: PostgreSQL does not promise to test the
                    // type before casting.
                    Literal::Number(n) => {
                        let p = self.bind(Bind::Float(*n));
                        format!(
                            "COALESCE(CASE WHEN jsonb_typeof({item}) = 'number' \
                             THEN CAST({text} AS DOUBLE PRECISION) {} CAST({p} AS DOUBLE PRECISION) END, false)",
                            sql_op(op)
                        )
                    }
                    Literal::Bool(b) => {
                        let want = if *b == (op == Op::Eq) { "'true'" } else { "'false'" };
                        format!("COALESCE(jsonb_typeof({item}) = 'boolean' AND {text} = {want}, false)")
                    }
                }
            }
        }
    }

    fn falsy(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "0",
            Backend::Postgres => "false",
        }
    }
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

/// SQLite's JSON path of a top-level key, quoted: keys may hold `.` and
/// `:`, and a tag key holds no `"` (`[a-z0-9_.:-]`).
fn json_path(key: &str) -> String {
    format!("$.\"{key}\"")
}
