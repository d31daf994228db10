//! `tocsin vapid …`

use std::process::ExitCode;

use clap::Subcommand;
use tocsin_protocol::VapidKey;

#[derive(Debug, Subcommand)]
pub enum VapidCommand {
    /// Generate a VAPID key pair (P-256), raw base64url as web-push prints it.
    Generate {
        /// Print exactly {"publicKey":"…","privateKey":"…"}.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: VapidCommand) -> anyhow::Result<ExitCode> {
    match command {
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
