//! `tocsin.toml`: the same settings as the flags and `TOCSIN_*` variables.
//!
//! Precedence: flags, then environment, then the file. The file's keys are
//! the flag names (`listen`, `database`, `vapid-subject`, …; `-` or `_`);
//! each becomes the `TOCSIN_*` variable clap reads, unless that variable is
//! already set. The file is `./tocsin.toml`, or `TOCSIN_CONFIG`.

use anyhow::{bail, Context as _};

pub fn load_toml_into_env() -> anyhow::Result<()> {
    let (path, explicit) = match std::env::var("TOCSIN_CONFIG") {
        Ok(p) => (p, true),
        Err(_) => ("tocsin.toml".to_owned(), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {path}")),
    };
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {path}"))?;
    for (key, value) in table {
        let name = match key.replace('-', "_").to_ascii_uppercase().as_str() {
            "DATABASE" => "DATABASE_URL".to_owned(),
            other => other.to_owned(),
        };
        let var = format!("TOCSIN_{name}");
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => bail!("{path}: {key}: list items must be strings, got {other:?}"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            other => bail!("{path}: {key}: unsupported value {other:?}"),
        };
        if std::env::var_os(&var).is_none() {
            // Single-threaded here: before the runtime starts.
            std::env::set_var(var, text);
        }
    }
    Ok(())
}
