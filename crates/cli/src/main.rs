//! `tocsin`: the one binary. Each subcommand parses its flags, calls one
//! library crate, and prints; the work happens in the crates.

mod app;
mod config;
mod dev;
mod send;
mod serve;
mod subscriptions;
mod token;
mod vapid;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tocsin: a self-hosted Web Push server and toolkit.
#[derive(Debug, Parser)]
#[command(name = "tocsin", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// VAPID key management.
    Vapid {
        #[command(subcommand)]
        command: vapid::VapidCommand,
    },
    /// Send one push message to one or many subscriptions, without a server.
    Send(Box<send::SendArgs>),
    /// Tools for development and testing.
    Dev {
        #[command(subcommand)]
        command: dev::DevCommand,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOCSIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = config::load_toml_into_env() {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve::serve(*args))),
        Command::App { command } => runtime().and_then(|rt| rt.block_on(app::app(command))),
        Command::Token { command } => runtime().and_then(|rt| rt.block_on(token::token(command))),
        Command::Subscriptions { command } => {
            runtime().and_then(|rt| rt.block_on(subscriptions::subscriptions(command)))
        }
        Command::Vapid { command } => runtime().and_then(|rt| rt.block_on(vapid::run(command))),
        Command::Send(args) => runtime().and_then(|rt| rt.block_on(send::run(*args))),
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
