//! `tocsin`: the one binary. Each subcommand parses its flags, calls one
//! library crate, and prints; the work happens in the crates.

mod app;
mod backup;
mod config;
mod config_command;
mod dev;
mod healthcheck;
mod send;
mod serve;
mod store;
mod subscriptions;
mod token;
mod vapid;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

/// The version, with the commit it was built from (`build.rs`).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TOCSIN_GIT_COMMIT"), ")");

/// Tocsin: a self-hosted Web Push server and toolkit.
#[derive(Debug, Parser)]
#[command(name = "tocsin", version = VERSION, about, propagate_version = true)]
pub(crate) struct Cli {
    /// The settings file (TOML; keys are the flags' names). Without it, ./tocsin.toml is read when there is one.
    #[arg(long, global = true, env = "TOCSIN_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// How log lines are written to stderr: text, or json (one object per line, for log shippers).
    #[arg(long, global = true, env = "TOCSIN_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the HTTP API and the sending engine.
    Serve(Box<serve::ServeArgs>),
    /// Apps: several sites on one server, each with its own VAPID keys, subscribers and tokens.
    App {
        #[command(subcommand)]
        command: app::AppCommand,
    },
    /// API tokens: create (with a scope), list, revoke.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Work on the stored subscriptions.
    Subscriptions {
        #[command(subcommand)]
        command: subscriptions::SubscriptionsCommand,
    },
    /// Writes a consistent copy of the SQLite database to a new file, while the server runs (PostgreSQL: pg_dump).
    Backup(backup::BackupArgs),
    /// VAPID key management.
    Vapid {
        #[command(subcommand)]
        command: vapid::VapidCommand,
    },
    /// Send one push message to one or many subscriptions, without a server.
    Send(Box<send::SendArgs>),
    /// The settings file: check the settings `tocsin serve` would start with, or print an example.
    Config {
        #[command(subcommand)]
        command: config_command::ConfigCommand,
    },
    /// Exits 0 when the server answers 200 on /healthz, else 1: a container's HEALTHCHECK, where there is no curl.
    Healthcheck {
        /// The address `tocsin serve` listens on (the same setting: 0.0.0.0 and :: are asked on loopback).
        #[arg(long, env = "TOCSIN_LISTEN", default_value_t = tocsin_server::ServerConfig::default().listen)]
        listen: std::net::SocketAddr,
        /// The URL to ask instead.
        #[arg(long)]
        url: Option<String>,
    },
    /// Tools for development and testing.
    Dev {
        #[command(subcommand)]
        command: dev::DevCommand,
    },
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let loaded = match config::load(&argv, &Cli::command()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cmd = config::apply(Cli::command(), &loaded.values);
    let matches = cmd.clone().get_matches_from(&argv);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    init_logs(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve::serve(*args))),
        Command::App { command } => runtime().and_then(|rt| rt.block_on(app::app(command))),
        Command::Token { command } => runtime().and_then(|rt| rt.block_on(token::token(command))),
        Command::Subscriptions { command } => {
            runtime().and_then(|rt| rt.block_on(subscriptions::subscriptions(command)))
        }
        Command::Backup(args) => runtime().and_then(|rt| rt.block_on(backup::run(args))),
        Command::Vapid { command } => runtime().and_then(|rt| rt.block_on(vapid::run(command))),
        Command::Send(args) => runtime().and_then(|rt| rt.block_on(send::run(*args))),
        Command::Config { command } => Ok(config_command::run(command, &loaded, cmd)),
        Command::Healthcheck { listen, url } => {
            let url = url.unwrap_or_else(|| healthcheck::url_of(listen));
            runtime().and_then(|rt| rt.block_on(healthcheck::run(&url)))
        }
        Command::Dev { command } => runtime().and_then(|rt| rt.block_on(dev::run(command))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOCSIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
