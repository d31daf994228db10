//! `tocsin config check` and `tocsin config example`: the settings
//! `tocsin serve` would start with, checked and shown with where each came
//! from; and a `tocsin.toml` with every key and its default.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, FromArgMatches as _, Subcommand};

use crate::config::{is_switch, key_of, takes_list, Loaded};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Checks the settings `tocsin serve` would start with (flags aside: the file, the TOCSIN_* variables, the
    /// defaults) and prints them, secrets redacted, with where each came from. Exits 0 when they are valid, 2
    /// when not. The package's systemd unit runs it before every start.
    Check,
    /// Prints a commented tocsin.toml with every key and its default.
    Example,
}

/// The keys whose values are not printed.
const REDACTED: [&str; 4] = ["admin-token", "user-signing-secret", "vapid-private-key", "event-token-key"];

pub fn run(command: ConfigCommand, loaded: &Loaded, cmd: Command) -> ExitCode {
    match command {
        ConfigCommand::Check => check(loaded, cmd),
        ConfigCommand::Example => {
            emit(&example(&cmd));
            ExitCode::SUCCESS
        }
    }
}

fn check(loaded: &Loaded, mut cmd: Command) -> ExitCode {
    let matches = match cmd.try_get_matches_from_mut(["tocsin", "serve"]) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {}", e.to_string().trim());
            return ExitCode::from(2);
        }
    };
    let Some(serve_matches) = matches.subcommand_matches("serve") else {
        return ExitCode::from(2);
    };
    let Some(serve_cmd) = cmd.find_subcommand("serve") else {
        return ExitCode::from(2);
    };
    let mut out = String::new();
    match &loaded.path {
        Some(p) => {
            let _ = writeln!(out, "# settings of `tocsin serve` with {}", p.display());
        }
        None => {
            let _ = writeln!(out, "# settings of `tocsin serve` (no tocsin.toml)");
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for arg in cmd.get_arguments() {
        if key_of(arg).is_some_and(|k| seen.insert(k)) {
            line(&mut out, arg, &matches, loaded);
        }
    }
    for arg in serve_cmd.get_arguments() {
        if key_of(arg).is_some_and(|k| seen.insert(k)) {
            line(&mut out, arg, serve_matches, loaded);
        }
    }
    emit(&out);
    let args = match crate::serve::ServeArgs::from_arg_matches(serve_matches) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", e.to_string().trim());
            return ExitCode::from(2);
        }
    };
    match crate::serve::server_config(&args) {
        Ok(_) => {
            emit("# ok\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn line(out: &mut String, arg: &Arg, matches: &ArgMatches, loaded: &Loaded) {
    let Some(key) = key_of(arg) else { return };
    let id = arg.get_id().as_str();
    let values: Vec<String> =
        matches.get_raw(id).map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect()).unwrap_or_default();
    let var = arg.get_env().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
    let source = match matches.value_source(id) {
        Some(ValueSource::CommandLine) => "flag".to_owned(),
        Some(ValueSource::EnvVariable) if loaded.from_files.contains(&var) => format!("environment ({var}_FILE)"),
        Some(ValueSource::EnvVariable) => format!("environment ({var})"),
        Some(ValueSource::DefaultValue) if loaded.values.contains_key(&key) => "file".to_owned(),
        Some(ValueSource::DefaultValue) => "default".to_owned(),
        _ => "default".to_owned(),
    };
    let shown = if values.is_empty() && !takes_list(arg) {
        let _ = writeln!(out, "# {key} is not set");
        return;
    } else if REDACTED.contains(&key.as_str()) {
        "\"<redacted>\"".to_owned()
    } else if key == "database" {
        toml_value(arg, &[redact_url(&values[0])])
    } else {
        toml_value(arg, &values)
    };
    let _ = writeln!(out, "{key} = {shown}  # {source}");
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// A database URL without its password.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Values as TOML: numbers and switches bare, the rest quoted; a list for
/// an argument that takes one.
fn toml_value(arg: &Arg, values: &[String]) -> String {
    let one = |v: &String| {
        if is_switch(arg) || v.parse::<f64>().is_ok_and(f64::is_finite) {
            v.clone()
        } else {
            // A JSON string is a TOML basic string.
            serde_json::Value::String(v.clone()).to_string()
        }
    };
    if takes_list(arg) {
        format!("[{}]", values.iter().map(one).collect::<Vec<_>>().join(", "))
    } else {
        values.first().map(one).unwrap_or_default()
    }
}

/// A `tocsin.toml` with every key of `tocsin serve` (and the global ones),
/// each with its help and its default; a key without a default is
/// commented out.
pub fn example(cmd: &Command) -> String {
    let mut out = String::from(
        "# tocsin.toml: the settings of `tocsin serve`, each with its default.\n\
         # Precedence: a flag, then a TOCSIN_* variable (a secret may also come from TOCSIN_<NAME>_FILE),\n\
         # then this file, then the default. `tocsin config check` shows the settings in effect.\n",
    );
    let serve = cmd.find_subcommand("serve");
    let args = cmd.get_arguments().chain(serve.into_iter().flat_map(|s| s.get_arguments()));
    let mut seen = std::collections::BTreeSet::new();
    for arg in args {
        let Some(key) = key_of(arg) else { continue };
        if !seen.insert(key.clone()) {
            continue;
        }
        out.push('\n');
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        for l in wrap(&help, 100) {
            let _ = writeln!(out, "# {l}");
        }
        let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        if defaults.is_empty() {
            let _ = writeln!(out, "# {key} = {}", if takes_list(arg) { "[]" } else { "\"\"" });
        } else {
            let _ = writeln!(out, "{key} = {}", toml_value(arg, &defaults));
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}
