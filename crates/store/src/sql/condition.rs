//! A segment expression ([`Expr`]) compiled to SQL over one subscription
//! row `s`, agreeing with `Expr::matches` (the contract suite checks both
//! on the same rows).
//!
//! Every value is a bound parameter; the only text of the expression in
//! the SQL is a tag key in SQLite's JSON path literal (`'$."key"'`, so that
//! an index on the same expression matches), of `[a-z0-9_.:-]` by its type
//! and filtered again in `json_path`. Under `!` each comparison is wrapped
//! so that it is never NULL (a missing tag is false, not unknown), which
//! keeps `!` the plain negation it is in Rust. Tags are read from the JSON text on
//! SQLite (`json_type`/`json_extract` with a quoted path, after a text
//! prefilter for equality, and through an index for `--indexed-tags`) and
//! from the jsonb column `tags_j` on PostgreSQL; strings are ordered by code point
//! on both (SQLite's `BINARY`, PostgreSQL's `COLLATE "C"`), as in Rust.

use tocsin_audience::expr::{AgeField, Expr, Field, Literal, Op};

use super::target::Bind;
use super::Backend;

/// The SQL of `expr`, with its values pushed onto `binds` (whose length
/// is the number of the last placeholder used so far).
pub(crate) fn condition_sql(expr: &Expr, backend: Backend, now: i64, binds: &mut Vec<Bind>) -> String {
    let mut c = Compiler { backend, now, binds, positive: true };
    c.expr(expr)
}

struct Compiler<'a> {
    backend: Backend,
    now: i64,
    binds: &'a mut Vec<Bind>,
    /// Whether the part being compiled is under an even number of `!`.
    /// There a comparison that is NULL (a missing tag) already counts as
    /// false, so it is left bare, where the database can use an index for
    /// it; under `!` it is wrapped in `COALESCE(…, false)`, so that `!`
    /// makes it true.
    positive: bool,
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
            Expr::Not(inner) => {
                self.positive = !self.positive;
                let sql = format!("(NOT {})", self.expr(inner));
                self.positive = !self.positive;
                sql
            }
            Expr::Has(key) => match self.backend {
                Backend::Sqlite => format!("(json_type(s.tags, {}) IS NOT NULL)", json_path(key.as_str())),
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
        self.never_null(format!("{column} {} {p}", sql_op(op)))
    }

    /// `sql`, which may be NULL, as a condition that is never NULL where
    /// that matters (under `!`).
    fn never_null(&self, sql: String) -> String {
        if self.positive {
            format!("({sql})")
        } else {
            format!("COALESCE({sql}, {})", self.falsy())
        }
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
        self.never_null(test)
    }

    fn tag(&mut self, key: &str, op: Op, value: &Literal) -> String {
        let sql = match self.backend {
            Backend::Sqlite => self.sqlite_tag(key, op, value),
            Backend::Postgres => self.postgres_tag(key, op, value),
        };
        self.never_null(sql)
    }

    fn sqlite_tag(&mut self, key: &str, op: Op, value: &Literal) -> String {
        // A cheap necessary condition first: for equality, the stored text
        // (always serde_json's compact form, written by `Tags::to_stored`)
        // holds `"key":value`, so rows without it skip parsing the JSON.
        let needle = (op == Op::Eq).then(|| needle(key, value)).flatten();
        let prefilter = match needle {
            Some(n) => {
                let p = self.bind(Bind::Text(n));
                format!("instr(s.tags, {p}) > 0 AND ")
            }
            None => String::new(),
        };
        let path = json_path(key);
        let check = match value {
            // A JSON string extracts as TEXT, and TEXT equals only TEXT.
            Literal::String(v) if op == Op::Eq => {
                let p = self.bind(Bind::Text(v.clone()));
                format!("json_extract(s.tags, {path}) = {p}")
            }
            Literal::String(v) => {
                let p = self.bind(Bind::Text(v.clone()));
                format!("json_type(s.tags, {path}) = 'text' AND json_extract(s.tags, {path}) {} {p}", sql_op(op))
            }
            Literal::Number(n) => {
                let p = self.bind(Bind::Float(*n));
                format!(
                    "json_type(s.tags, {path}) IN ('integer', 'real') AND json_extract(s.tags, {path}) {} {p}",
                    sql_op(op)
                )
            }
            Literal::Bool(b) => {
                let want = if *b == (op == Op::Eq) { "'true'" } else { "'false'" };
                format!("json_type(s.tags, {path}) = {want}")
            }
        };
        format!("{prefilter}{check}")
    }

    fn postgres_tag(&mut self, key: &str, op: Op, value: &Literal) -> String {
        if op == Op::Eq {
            // Equality of jsonb values is equality of value and type (a
            // string is never equal to a number, 3 equals 3.0), and with the
            // key written as a literal it is the expression an index of
            // `--indexed-tags` is on (`jsonb_item`): a seek, not a scan.
            let json = match value {
                Literal::String(v) => serde_json::Value::from(v.as_str()),
                Literal::Number(n) => serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into),
                Literal::Bool(b) => serde_json::Value::from(*b),
            };
            let p = self.bind(Bind::Text(json.to_string()));
            return format!("{} = CAST({p} AS JSONB)", jsonb_item(key));
        }
        let k = self.bind(Bind::Text(key.to_owned()));
        let item = format!("(s.tags_j -> CAST({k} AS TEXT))");
        let text = format!("(s.tags_j ->> CAST({k} AS TEXT))");
        // The value read out of the binary jsonb and compared by type.
        // (Measured over a million rows, prepared as sqlx prepares: this
        // 0.36 s; containment, `tags_j @> jsonb_build_object(…)`, 0.55 s;
        // containment with a GIN index 0.23 s for a rare value but 0.97 s
        // for a common one, as PostgreSQL cannot estimate containment, and
        // a GIN update on every subscribe.)
        match value {
            Literal::String(v) => {
                let p = self.bind(Bind::Text(v.clone()));
                format!("jsonb_typeof({item}) = 'string' AND {text} COLLATE \"C\" {} CAST({p} AS TEXT)", sql_op(op))
            }
            // CASE, not AND: PostgreSQL does not promise to test the type
            // before casting.
            Literal::Number(n) => {
                let p = self.bind(Bind::Float(*n));
                format!(
                    "CASE WHEN jsonb_typeof({item}) = 'number' \
                     THEN CAST({text} AS DOUBLE PRECISION) {} CAST({p} AS DOUBLE PRECISION) END",
                    sql_op(op)
                )
            }
            Literal::Bool(b) => {
                let want = if *b == (op == Op::Eq) { "'true'" } else { "'false'" };
                format!("jsonb_typeof({item}) = 'boolean' AND {text} = {want}")
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

/// What the stored text of tags holds when `key` equals `value`, for a
/// value whose stored form is known: a string (serde_json's escaping), a
/// boolean, or a whole number below 10^15 other than 0 (stored as `N` or
/// `N.0`, which starts the same; 0 may be `-0.0`, and larger ones may be
/// written with an exponent).
fn needle(key: &str, value: &Literal) -> Option<String> {
    let v = match value {
        Literal::String(s) => serde_json::to_string(s).ok()?,
        Literal::Bool(b) => b.to_string(),
        Literal::Number(n) if n.fract() == 0.0 && *n != 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
        Literal::Number(_) => return None,
    };
    Some(format!("\"{key}\":{v}"))
}

/// A tag's value in PostgreSQL's jsonb column, the key written as a
/// literal so that an expression index (`--indexed-tags`) can match it.
pub(crate) fn jsonb_item(key: &str) -> String {
    format!("(s.tags_j -> '{}')", key_literal(key))
}

/// SQLite's JSON path of a top-level key, as a SQL literal: `'$."key"'`.
/// A literal, not a parameter, so that an index on the same expression
/// (`--indexed-tags`, `SqlStore::index_tags`) is used.
pub(crate) fn json_path(key: &str) -> String {
    format!("'$.\"{}\"'", key_literal(key))
}

/// A tag key as it may be written into SQL: 1 to 64 of `[a-z0-9_.:-]`, no
/// quote of either kind (its type promises it; filtered again here).
fn key_literal(key: &str) -> String {
    key.chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(*c)).collect()
}
