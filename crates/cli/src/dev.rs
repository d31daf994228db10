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
    /// Print N PushSubscriptions (JSON lines) with real P-256 keys and
    /// endpoints PREFIX0, PREFIX1, …: test data for benchmarks and sinks.
    GenSubscriptions {
        /// How many.
        #[arg(long)]
        count: usize,
        /// The endpoint prefix, e.g. https://127.0.0.1:8443/push/
        #[arg(long)]
        endpoint_prefix: String,
    },
}

pub async fn run(command: DevCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::GenSubscriptions { count, endpoint_prefix } => {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for i in 0..count {
                let keys = tocsin_protocol::ece::ReceiverKeys::generate()?;
                let endpoint = format!("{endpoint_prefix}{i}").parse().context("endpoint prefix")?;
                let sub = tocsin_protocol::Subscription::new(endpoint, keys.public_key(), keys.auth())?;
                writeln!(out, "{}", sub.to_json())?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
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
