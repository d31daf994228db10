//! `tocsin token create|list|revoke`: API tokens and their scopes.

use std::process::ExitCode;
use tocsin_store::AppStore;
use tocsin_store::TokenStore;

use clap::Subcommand;
use tocsin_store::TokenScope;

use crate::serve::DbArgs;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, only its hash is stored.
    Create {
        /// A name to recognise (and revoke) it by; unique.
        #[arg(long)]
        name: String,
        /// What it may do: admin (everything), send (create, read and cancel messages), read (every GET, /metrics).
        #[arg(long, default_value = "admin", value_parser = parse_scope)]
        scope: TokenScope,
        /// The one app it may act on; without it, every app.
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the tokens: name, scope, created, last used (never the token).
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a token by name: it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn parse_scope(s: &str) -> Result<TokenScope, String> {
    TokenScope::parse(s).ok_or_else(|| format!("scope must be admin, send or read, got {s:?}"))
}

use tocsin_ops::now_ms;

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "never".to_owned(),
        |ms| {
            let ms = ms.clamp(0, tocsin_protocol::subscription::MAX_EXPIRATION_MS as i64);
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        },
    )
}

pub async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { name, scope, app, db } => {
            let store = crate::store::open(&db).await?;
            let app = match app {
                Some(name) => match store.app(&name).await? {
                    Some(a) => Some(a),
                    None => {
                        eprintln!("no app named {name:?} (tocsin app list)");
                        return Ok(ExitCode::from(2));
                    }
                },
                None => None,
            };
            let made =
                tocsin_ops::tokens::create_token(&store, &name, scope, app.as_ref().map(|a| a.id), now_ms()).await;
            let token = match made {
                Ok(token) => token,
                Err(e @ tocsin_ops::tokens::CreateTokenError::NameTaken(_)) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            println!("{token}");
            let of = app.map_or_else(|| "every app".to_owned(), |a| format!("app {}", a.name));
            eprintln!("{} token {name:?} created for {of}; it is shown once: keep it", scope.as_str());
        }
        TokenCommand::List { json, db } => {
            let store = crate::store::open(&db).await?;
            let tokens = store.tokens().await?;
            let apps = store.apps().await?;
            // A token's app by name; `None` for a token of every app.
            let app_of = |t: &tocsin_store::TokenRow| {
                t.app
                    .map(|id| apps.iter().find(|a| a.id == id).map_or_else(|| format!("#{}", id.0), |a| a.name.clone()))
            };
            if json {
                for t in &tokens {
                    let line = serde_json::json!({"name": t.name, "scope": t.scope, "createdAt": when(Some(t.created_at)),
                        "lastUsedAt": t.last_used_at.map(|ms| when(Some(ms))), "app": app_of(t)});
                    println!("{line}");
                }
            } else {
                println!("{:<24} {:<6} {:<21} {:<21} APP", "NAME", "SCOPE", "CREATED", "LAST USED");
                for t in &tokens {
                    println!(
                        "{:<24} {:<6} {:<21} {:<21} {}",
                        t.name,
                        t.scope.as_str(),
                        when(Some(t.created_at)),
                        when(t.last_used_at),
                        app_of(t).as_deref().unwrap_or("*")
                    );
                }
            }
        }
        TokenCommand::Revoke { name, db } => {
            let store = crate::store::open(&db).await?;
            if store.revoke_token(&name).await? == 0 {
                eprintln!("no token named {name:?}");
                return Ok(ExitCode::from(1));
            }
            eprintln!("token {name:?} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
