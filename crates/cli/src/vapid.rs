//! `tocsin vapid …`

use std::process::ExitCode;

use clap::Subcommand;
use tocsin_protocol::VapidKey;

use crate::app::AppArg;
use crate::serve::DbArgs;

#[derive(Debug, Subcommand)]
pub enum VapidCommand {
    /// Generate a VAPID key pair (P-256), raw base64url as web-push prints it.
    Generate {
        /// Print exactly {"publicKey":"…","privateKey":"…"}.
        #[arg(long)]
        json: bool,
    },
    /// Rotate an app's key: a new pair becomes current, for new subscriptions; existing ones keep theirs.
    /// Prints {"app","id","publicKey"}.
    Rotate {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub async fn run(command: VapidCommand) -> anyhow::Result<ExitCode> {
    match command {
        VapidCommand::Rotate { app, db } => {
            let store = crate::store::open(&db).await?;
            let app = app.resolve(&store).await?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            let key = tocsin_ops::apps::rotate_key(&store, app.id, now).await?;
            println!("{}", serde_json::json!({"app": app.name, "id": key.id, "publicKey": key.public_key}));
            eprintln!("a running server answers with the new key within a second");
            Ok(ExitCode::SUCCESS)
        }
        VapidCommand::Generate { json } => {
            let key = VapidKey::generate()?;
            let keys = key.to_json();
            if json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                println!("=======================================");
                println!();
                println!("Public Key:");
                println!("{}", keys.public_key);
                println!();
                println!("Private Key:");
                println!("{}", keys.private_key);
                println!();
                println!("=======================================");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
