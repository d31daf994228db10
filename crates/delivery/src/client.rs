//! The HTTP client that talks to push services.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tocsin_protocol::outcome::{self, Outcome, RetryReason};

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The whole request, connect to last response byte.
    pub timeout: Duration,
    /// Connecting, TLS included.
    pub connect_timeout: Duration,
    /// Extra trusted root certificates, PEM (for a push service with a
    /// self-signed certificate, such as `tocsin dev push-service --tls`).
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// When set, a host name is connected to only at addresses this accepts
    /// (checked at connection time, so a name cannot be re-pointed inward
    /// after it was checked).
    pub address_filter: Option<fn(IpAddr) -> bool>,
    /// A proxy for every request (`http://`, `https://` or `socks5://`).
    /// None by default, whatever `HTTP_PROXY`/`HTTPS_PROXY` say: a proxy
    /// resolves names itself, past `address_filter`.
    pub proxy: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            extra_roots_pem: Vec::new(),
            address_filter: None,
            proxy: None,
        }
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A root certificate could not be read.
    #[error("cannot read the CA certificate: {0}")]
    Certificate(String),
    /// The proxy URL is not one reqwest can use.
    #[error("invalid proxy {0}")]
    Proxy(String),
    /// The TLS or HTTP stack refused the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A pooled HTTP/2 and HTTP/1.1 client for push services. Clone it freely:
/// clones share the connection pool.
#[derive(Debug, Clone)]
pub struct PushClient {
    http: reqwest::Client,
}

/// The most of a response body read for classification.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// An HTTP client with `config`'s timeouts, extra roots, proxy (none unless
/// set) and connection-time address filter: the push client's, and the
/// webhooks' (whose targets the same endpoint policy guards).
pub fn http_client(config: &ClientConfig) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION")));
    for pem in &config.extra_roots_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ClientError::Certificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(ClientError::Certificate("no certificate in the PEM file".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder = match &config.proxy {
        // Explicitly none: reqwest would otherwise read the proxy
        // variables of the environment.
        None => builder.no_proxy(),
        Some(url) => {
            builder.proxy(reqwest::Proxy::all(url.as_str()).map_err(|e| ClientError::Proxy(format!("{url}: {e}")))?)
        }
    };
    if let Some(allow) = config.address_filter {
        builder = builder.dns_resolver(Arc::new(FilteringResolver { allow }));
    }
    builder.build().map_err(|e| ClientError::Build(error_chain(&e)))
}

impl PushClient {
    /// Builds the client.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        Ok(Self { http: http_client(config)? })
    }

    /// Sends one push request and classifies the answer. Network errors and
    /// timeouts become [`Outcome::Retry`].
    pub async fn send(&self, request: http::Request<Bytes>) -> Outcome {
        let request = match reqwest::Request::try_from(request.map(reqwest::Body::from)) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed { reason: tocsin_protocol::FailReason::Request(error_chain(&e)) };
            }
        };
        match self.http.execute(request).await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let mut body = Vec::new();
                if !(200..300).contains(&status) {
                    while let Ok(Some(chunk)) = response.chunk().await {
                        body.extend_from_slice(&chunk);
                        if body.len() >= MAX_ERROR_BODY {
                            break;
                        }
                    }
                }
                outcome::classify(status, &headers, &body, SystemTime::now())
            }
            Err(e) if e.is_timeout() => Outcome::Retry { reason: RetryReason::Timeout, after: None },
            Err(e) => Outcome::Retry { reason: RetryReason::Network(error_chain(&e)), after: None },
        }
    }
}

/// Where the engine's requests go: [`PushClient`] in production, a
/// scripted push service in tests.
pub trait Transport: Send + Sync + 'static {
    /// Sends one push request and classifies the answer.
    fn send(&self, request: http::Request<Bytes>) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
}

impl Transport for PushClient {
    fn send(&self, request: http::Request<Bytes>) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(PushClient::send(self, request))
    }
}

/// Resolves names with the system resolver and keeps only permitted addresses.
struct FilteringResolver {
    allow: fn(IpAddr) -> bool,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = addrs.into_iter().filter(|a| allow(a.ip())).collect();
            if permitted.is_empty() {
                return Err(format!("{host} resolves to no address the endpoint policy permits").into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

pub use tocsin_protocol::error_text::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_bad_ca_file() {
        let config = ClientConfig { extra_roots_pem: vec![b"not a certificate".to_vec()], ..Default::default() };
        assert!(matches!(PushClient::new(&config), Err(ClientError::Certificate(_))));
    }

    #[tokio::test]
    async fn the_address_filter_refuses_names_that_point_inward() {
        let config = ClientConfig { address_filter: Some(|ip| !ip.is_loopback()), ..Default::default() };
        let client = PushClient::new(&config).unwrap();
        let req = http::Request::post("http://localhost:9/x").body(Bytes::new()).unwrap();
        match client.send(req).await {
            Outcome::Retry { reason: RetryReason::Network(e), .. } => {
                assert!(e.contains("no address the endpoint policy permits"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let client = PushClient::new(&ClientConfig::default()).unwrap();
        // Bind then drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let req = http::Request::post(format!("http://127.0.0.1:{port}/x")).body(Bytes::new()).unwrap();
        match client.send(req).await {
            Outcome::Retry { reason: RetryReason::Network(e), .. } => assert!(!e.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
