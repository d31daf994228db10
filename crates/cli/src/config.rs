//! The settings file (`tocsin.toml`) and secrets read from files: where
//! the values that are not flags come from, checked before anything runs.
//!
//! Precedence, highest first: a flag; a `TOCSIN_*` variable (for a secret,
//! also `TOCSIN_<NAME>_FILE`); the file; the default, which every setting
//! of `tocsin serve` takes from `tocsin_server::ServerConfig::default()`.
//!
//! The file's keys are the settings' variable names without `TOCSIN_`, in
//! kebab case, which are also the flags' names (`rate-limit-burst`,
//! `listen`; `database` for `TOCSIN_DATABASE_URL`). Its values become the
//! defaults of the arguments they name, so clap parses them with the same
//! parsers as flags and variables: one typed settings tree, three sources.
//! A key that names no setting stops the start, with the nearest known key.
//! The file is `--config FILE`, else `TOCSIN_CONFIG`, else `./tocsin.toml`
//! when there is one.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use clap::{Arg, ArgAction, Command};

/// The secrets that may also come from a file named by
/// `TOCSIN_<NAME>_FILE` (as container secrets are mounted).
pub const SECRETS: [&str; 5] =
    ["ADMIN_TOKEN", "USER_SIGNING_SECRET", "VAPID_PRIVATE_KEY", "DATABASE_URL", "EVENT_TOKEN_KEY"];

/// The variable of the file's path, and the key the file may not set.
const CONFIG_VAR: &str = "TOCSIN_CONFIG";

/// What was read before the command line is parsed.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// Each key of the file with its values (one, or a list's items).
    pub values: BTreeMap<String, Vec<String>>,
    /// The variables (`TOCSIN_ADMIN_TOKEN`, …) read from `*_FILE`.
    pub from_files: BTreeSet<String>,
}

/// Reads the secrets named by `TOCSIN_<NAME>_FILE` into `TOCSIN_<NAME>`,
/// then the settings file, and checks its keys and values against `cmd`.
/// Runs before any thread is started (it sets variables).
pub fn load(args: &[OsString], cmd: &Command) -> anyhow::Result<Loaded> {
    let from_files = secrets_from_files()?;
    let Some((path, explicit)) = locate(args) else {
        return Ok(Loaded { from_files, ..Loaded::default() });
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Loaded { from_files, ..Loaded::default() });
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let values = parse(&text, cmd).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Loaded { path: Some(path), values, from_files })
}

fn secrets_from_files() -> anyhow::Result<BTreeSet<String>> {
    let mut read = BTreeSet::new();
    for name in SECRETS {
        let (var, file_var) = (format!("TOCSIN_{name}"), format!("TOCSIN_{name}_FILE"));
        let Some(file) = std::env::var_os(&file_var) else { continue };
        if std::env::var_os(&var).is_some() {
            bail!("both {var} and {file_var} are set: set one");
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("{file_var}: reading {}", PathBuf::from(&file).display()))?;
        // A mounted secret usually ends with a newline that is not part of it.
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            bail!("{file_var}: {} is empty", PathBuf::from(&file).display());
        }
        // Before any thread exists: main calls this first.
        std::env::set_var(&var, value);
        read.insert(var);
    }
    Ok(read)
}

/// The file: `--config FILE` on the command line, else `TOCSIN_CONFIG`,
/// else `./tocsin.toml`; and whether it was named (a named file must exist).
fn locate(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some((PathBuf::from(p), true));
        }
    }
    match std::env::var_os(CONFIG_VAR) {
        Some(p) => Some((PathBuf::from(p), true)),
        None => Some((PathBuf::from("tocsin.toml"), false)),
    }
}

/// The file key of an argument: its variable's name without `TOCSIN_`, in
/// kebab case; `database` for `TOCSIN_DATABASE_URL`. None for arguments
/// without a `TOCSIN_*` variable, and for `TOCSIN_CONFIG` itself.
pub fn key_of(arg: &Arg) -> Option<String> {
    let var = arg.get_env()?.to_str()?;
    if var == CONFIG_VAR {
        return None;
    }
    let name = var.strip_prefix("TOCSIN_")?;
    Some(match name {
        "DATABASE_URL" => "database".to_owned(),
        other => other.to_ascii_lowercase().replace('_', "-"),
    })
}

/// Every key the file may have, with one argument that has it (the
/// arguments of every command, nested ones included).
fn known_keys(cmd: &Command) -> BTreeMap<String, Arg> {
    let mut keys = BTreeMap::new();
    fn walk(cmd: &Command, keys: &mut BTreeMap<String, Arg>) {
        for arg in cmd.get_arguments() {
            if let Some(k) = key_of(arg) {
                keys.entry(k).or_insert_with(|| arg.clone());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, keys);
        }
    }
    walk(cmd, &mut keys);
    keys
}

/// Whether an argument takes a list (`--cors-origin a,b`).
pub fn takes_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Whether an argument is an on/off flag.
pub fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// Parses and checks the file's text: every key known, every value of the
/// right shape and accepted by its argument's parser.
fn parse(text: &str, cmd: &Command) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| anyhow!("not valid TOML: {e}"))?;
    let known = known_keys(cmd);
    let mut values = BTreeMap::new();
    for (raw_key, value) in table {
        let key = raw_key.replace('_', "-");
        let Some(arg) = known.get(&key) else {
            let nearest = known
                .keys()
                .map(|k| (strsim::damerau_levenshtein(k, &key), k))
                .filter(|(d, k)| *d <= 3.max(k.len() / 4))
                .min();
            return Err(match nearest {
                Some((_, k)) => anyhow!("unknown key `{raw_key}` (did you mean `{k}`?)"),
                None => anyhow!("unknown key `{raw_key}`; `tocsin config example` lists every key"),
            });
        };
        let items = match value {
            toml::Value::Array(items) if takes_list(arg) => {
                items.into_iter().map(|v| scalar(&raw_key, v)).collect::<anyhow::Result<Vec<_>>>()?
            }
            toml::Value::Array(_) => bail!("`{raw_key}` takes one value, not a list"),
            v => {
                let s = scalar(&raw_key, v)?;
                if takes_list(arg) {
                    // "a,b" in one string, as the variable takes it.
                    s.split(',').map(str::to_owned).collect()
                } else {
                    vec![s]
                }
            }
        };
        for item in &items {
            check_value(arg, item).map_err(|e| anyhow!("`{raw_key}`: {e}"))?;
        }
        values.insert(key, items);
    }
    Ok(values)
}

/// Runs a value through its argument's parser (the one its flag and
/// variable use), alone, so that the error names the file's key.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let parser = if is_switch(arg) {
        clap::builder::ValueParser::new(clap::builder::BoolishValueParser::new())
    } else {
        arg.get_value_parser().clone()
    };
    let probe = Arg::new("value").long("value").action(ArgAction::Set).value_parser(parser);
    Command::new("probe").no_binary_name(true).arg(probe).try_get_matches_from(["--value", value]).map(|_| ()).map_err(
        |e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            first.replace(" for '--value <value>'", "")
        },
    )
}

fn scalar(key: &str, v: toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("`{key}`: {} is not a value a setting takes", other.type_str()),
    })
}

/// Makes the file's values the defaults of the arguments they name, in
/// every command; flags and variables still override them.
pub fn apply(mut cmd: Command, values: &BTreeMap<String, Vec<String>>) -> Command {
    if values.is_empty() {
        return cmd;
    }
    let ids: Vec<(String, Vec<String>)> =
        cmd.get_arguments().filter_map(|a| Some((a.get_id().to_string(), values.get(&key_of(a)?)?.clone()))).collect();
    for (id, vals) in ids {
        cmd = cmd.mut_arg(id, |a| a.default_values(vals));
    }
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| apply(s, values));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn cmd() -> Command {
        crate::Cli::command()
    }

    #[test]
    fn fractions_and_lists_of_numbers_are_read() {
        let v = parse("rate-limit-per-second = 0.5\nwebhook-retry-schedule = [5, 300.5]\n", &cmd()).unwrap();
        assert_eq!(v["rate-limit-per-second"], ["0.5"]);
        assert_eq!(v["webhook-retry-schedule"], ["5", "300.5"]);
    }

    #[test]
    fn a_misspelt_key_names_the_nearest() {
        let e = parse("rate-limit-brust = 5\n", &cmd()).unwrap_err().to_string();
        assert!(e.contains("unknown key `rate-limit-brust`") && e.contains("did you mean `rate-limit-burst`"), "{e}");
        let e = parse("zzzzzzzzzzzzzzzzzz = 5\n", &cmd()).unwrap_err().to_string();
        assert!(e.contains("tocsin config example"), "{e}");
    }

    #[test]
    fn values_are_checked_by_their_flag_s_parser() {
        let e = parse("rate-limit-burst = 0.5\n", &cmd()).unwrap_err().to_string();
        assert!(e.contains("`rate-limit-burst`"), "{e}");
        let e = parse("listen = [\"a\", \"b\"]\n", &cmd()).unwrap_err().to_string();
        assert!(e.contains("takes one value"), "{e}");
        let e = parse("listen = { a = 1 }\n", &cmd()).unwrap_err().to_string();
        assert!(e.contains("not a value"), "{e}");
    }

    #[test]
    fn keys_come_from_the_variables() {
        let known = known_keys(&cmd());
        for k in ["database", "listen", "admin-token", "log-format", "database-timeout", "webhook-retry-schedule"] {
            assert!(known.contains_key(k), "{k}");
        }
        assert!(!known.contains_key("config"));
    }
}
