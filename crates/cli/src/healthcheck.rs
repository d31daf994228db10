//! `tocsin healthcheck`: a container's HEALTHCHECK, where there is no curl.

use std::process::ExitCode;

/// `/healthz` at the address a server listens on; an unspecified address
/// (all interfaces) is asked on loopback.
pub fn url_of(mut listen: std::net::SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{listen}/healthz")
}

/// GET the URL: 0 on 200, 1 otherwise (connection refused, timeout, any
/// other status). For a container's HEALTHCHECK, where there is no curl.
pub async fn run(url: &str) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).no_proxy().build()?;
    Ok(match client.get(url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::from(1)
        }
    })
}
