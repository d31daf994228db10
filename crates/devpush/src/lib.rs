//! `tocsin dev push-service`: a push service for development and tests.
//!
//! It plays both other parties of Web Push for an application server under
//! test: the browser (it mints subscriptions and keeps their private keys)
//! and the push service (it accepts RFC 8030 pushes, verifies VAPID, decrypts
//! `aes128gcm` and `aesgcm`, and records what arrived). It answers like a
//! real service (201 with `Location`, 400, 401/403, 404/410, 413) and can be
//! told to misbehave per subscription: N × 429 with `Retry-After`, N × 5xx, a
//! delay, a dropped connection.
//!
//! It also speaks Mozilla's WebSocket push protocol (the one Firefox's push
//! client uses, pointed here with `dom.push.serverURL`): browsers register
//! channels over it, and pushes to their endpoints are relayed to them, to
//! be decrypted by the browser itself; their acks are recorded.
//!
//! Everything is in memory; a restart forgets all.

#![warn(missing_docs)]

mod api;
mod state;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

pub use state::{FaultSpec, RecordedMessage};

/// How to run the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Serve HTTPS with a fresh self-signed certificate for `localhost` and
    /// `127.0.0.1`.
    pub tls: bool,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address it could not listen on.
        addr: SocketAddr,
        /// The operating system's reason (in use, not permitted, …).
        source: std::io::Error,
    },
    /// The certificate or TLS configuration could not be made.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A bound, not yet serving, push service.
pub struct DevPushService {
    listener: TcpListener,
    base_url: String,
    tls: Option<(tokio_rustls::TlsAcceptor, String)>,
    state: Arc<state::State>,
}

/// Marks a response whose connection must be dropped instead of answered
/// (the `drop` fault).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

impl DevPushService {
    /// Binds the listening socket and prepares TLS when asked.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| Error::Bind { addr: config.listen, source })?;
        let local = listener.local_addr().map_err(|source| Error::Bind { addr: config.listen, source })?;
        let host = if local.ip().is_unspecified() { "127.0.0.1".to_owned() } else { local.ip().to_string() };
        let host = if local.is_ipv6() && !local.ip().is_unspecified() { format!("[{host}]") } else { host };
        let scheme = if config.tls { "https" } else { "http" };
        let base_url = format!("{scheme}://{host}:{}", local.port());
        let tls = if config.tls { Some(tls_acceptor(&host)?) } else { None };
        let state = Arc::new(state::State::new(base_url.clone()));
        Ok(Self { listener, base_url, tls, state })
    }

    /// The origin clients reach the service at, e.g. `http://127.0.0.1:4000`.
    /// It is also the VAPID audience the service expects.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The self-signed certificate, PEM, when serving HTTPS: give it to the
    /// sender as a trusted root (`tocsin send --ca-cert`).
    pub fn certificate_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|(_, pem)| pem.as_str())
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> std::io::Result<()> {
        let router = api::router(self.state.clone());
        let acceptor = self.tls.map(|(a, _)| a);
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let router = router.clone();
                    async move {
                        let resp = router.oneshot(req.map(Body::new)).await.unwrap_or_else(|e: Infallible| match e {});
                        if resp.extensions().get::<DropConnection>().is_some() {
                            return Err(Dropped);
                        }
                        Ok::<_, Dropped>(resp)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let result = match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await,
                        Err(e) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    None => builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await,
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
    }
}

fn tls_acceptor(host: &str) -> Result<(tokio_rustls::TlsAcceptor, String), Error> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let bare = host.trim_matches(['[', ']']).to_owned();
    if !names.contains(&bare) {
        names.push(bare);
    }
    let cert = rcgen::generate_simple_self_signed(names).map_err(|e| Error::Tls(e.to_string()))?;
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem))
}
