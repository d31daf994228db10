//! `tocsin app create|list`, and `--app`, the flag that names the app a
//! command works on.

use std::process::ExitCode;
use tocsin_store::AppStore;
use tocsin_store::SubscriptionStore;

use clap::{Args, Subcommand};
use tocsin_ops::apps::{create_app, CreateAppError};
use tocsin_store::{AppRow, NewApp, Store, Target, DEFAULT_APP};

use crate::serve::DbArgs;

/// `--app NAME`: the app a command works on (`default` when absent).
#[derive(Debug, Args)]
pub struct AppArg {
    /// The app, by name.
    #[arg(long = "app", default_value = DEFAULT_APP)]
    pub name: String,
}

impl AppArg {
    /// The named app, or an error that says it does not exist.
    pub async fn resolve(&self, store: &dyn Store) -> anyhow::Result<AppRow> {
        store.app(&self.name).await?.ok_or_else(|| anyhow::anyhow!("no app named {:?} (tocsin app list)", self.name))
    }
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app with a VAPID key pair of its own; prints {"app","publicKey"}.
    Create {
        /// Its name: 1 to 40 of a-z, 0-9 and -; its routes are /apps/NAME/api/… and /v1/apps/NAME/….
        name: String,
        /// Its VAPID subject (mailto: or https:); the server's --vapid-subject when absent.
        #[arg(long)]
        vapid_subject: Option<String>,
        /// The secret its site's backend signs user ids with; the server's when absent.
        #[arg(long, env = "TOCSIN_APP_USER_SIGNING_SECRET", hide_env_values = true, allow_hyphen_values = true)]
        user_signing_secret: Option<String>,
        /// Origins its browser routes answer with CORS headers (comma-separated, `*` for any); the server's when absent.
        #[arg(long, value_delimiter = ',')]
        cors_origin: Option<Vec<String>>,
        /// Whether browsers may set this app's subscriptions' tags (true or false); the server's --client-tags when absent.
        #[arg(long, action = clap::ArgAction::Set)]
        client_tags: Option<bool>,
        /// Accept a VAPID subject Apple's push service refuses (localhost, .test, example.com, …): development only.
        #[arg(long)]
        allow_apple_rejected_subject: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the apps: name, current public key, subscriptions.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

use tocsin_ops::now_ms;

pub async fn app(command: AppCommand) -> anyhow::Result<ExitCode> {
    match command {
        AppCommand::Create {
            name,
            vapid_subject,
            user_signing_secret,
            cors_origin,
            client_tags,
            allow_apple_rejected_subject,
            db,
        } => {
            let store = crate::store::open(&db).await?;
            let new = NewApp { name, vapid_subject, user_signing_secret, cors_origins: cors_origin, client_tags };
            if allow_apple_rejected_subject {
                eprintln!("warning: --allow-apple-rejected-subject: Safari subscribers of this app may get nothing");
            }
            match create_app(&store, &new, allow_apple_rejected_subject, now_ms()).await {
                Ok((app, key)) => {
                    println!("{}", serde_json::json!({"app": app.name, "publicKey": key}));
                    Ok(ExitCode::SUCCESS)
                }
                Err(
                    e @ (CreateAppError::Name
                    | CreateAppError::Exists(_)
                    | CreateAppError::Subject(_)
                    | CreateAppError::AppleSubject(_)
                    | CreateAppError::Origin(_)),
                ) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        AppCommand::List { json, db } => {
            let store = crate::store::open(&db).await?;
            if !json {
                println!("{:<40} {:<14} PUBLIC KEY", "APP", "SUBSCRIPTIONS");
            }
            for app in store.apps().await? {
                let key = store.current_vapid_key(app.id).await?.map(|k| k.public_key).unwrap_or_default();
                let n = store.count_subscriptions(app.id, &Target::All(true)).await?;
                if json {
                    let line = serde_json::json!({"app": app.name, "publicKey": key, "vapidSubject": app.vapid_subject,
                        "subscriptions": n});
                    println!("{line}");
                } else {
                    println!("{:<40} {:<14} {key}", app.name, n);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
