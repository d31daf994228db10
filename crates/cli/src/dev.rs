//! `tocsin dev …`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use tocsin_devpush::{Config, DevPushService};

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Run a local push service: mints subscriptions, verifies VAPID,
    /// decrypts and records pushes, injects faults. See the README for its API.
    PushService {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8090", env = "TOCSIN_DEV_PUSH_LISTEN")]
        listen: SocketAddr,
        /// Serve HTTPS (HTTP/2 and HTTP/1.1) with a fresh self-signed certificate.
        #[arg(long)]
        tls: bool,
        /// With --tls: write the certificate (PEM) here, for `tocsin send --ca-cert`.
        #[arg(long, requires = "tls")]
        cert_out: Option<PathBuf>,
    },
}

pub async fn run(command: DevCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::PushService { listen, tls, cert_out } => {
            let service = DevPushService::bind(&Config { listen, tls }).await?;
            if let (Some(path), Some(pem)) = (cert_out, service.certificate_pem()) {
                std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            }
            // The first line is for scripts: the base URL, port included.
            println!("listening on {}", service.base_url());
            tokio::select! {
                r = service.serve() => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
