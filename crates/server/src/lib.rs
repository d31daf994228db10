//! `tocsin serve`: the HTTP API.
//!
//! - the classic contract, byte for byte: `GET /api/vapid-public-key`,
//!   `POST`/`DELETE /api/subscription`, `POST /api/events` (public, each
//!   proven by a secret), `POST /api/push` (a `send` token);
//! - the versioned API, each operation with the token scopes it takes
//!   (`auth.rs`; the OpenAPI description lists them): `/v1/messages`,
//!   `/v1/subscriptions`, `/v1/apps`, `/v1/webhooks`, `/v1/stats`, the
//!   event stream;
//! - `/healthz`, `/readyz`, `/metrics` (Prometheus), `/openapi.json`
//!   (generated from the handlers' annotations).
//!
//! Handlers extract and check the request, call the store or an operation
//! of `tocsin-ops` (the rules the CLI shares), wake the engine, and shape
//! the answer. Every error is `{"error":{"id","message"}}` with an id of
//! the one catalogue ([`error::ErrorId`]). This crate sees storage through
//! the traits of `tocsin-store-api` only: the binary opens the store.

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod error;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod proof;
pub mod purge;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tocsin_delivery::engine::{Clock, Engine, EngineConfig};
use tocsin_delivery::fanout::BroadcastConfig;
use tocsin_delivery::ClientConfig;
use tocsin_protocol::VapidSubject;
use tocsin_store_api::Store;
use tokio::sync::watch;

pub use policy::EndpointPolicy;

/// Everything `tocsin serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// The longest one store call may take, waiting for a connection
    /// included; then 503 `database-unavailable`.
    pub database_timeout: Duration,
    /// A VAPID key pair to use instead of the stored or generated one.
    pub vapid_keys: Option<(Option<String>, String)>,
    /// The VAPID subject (`mailto:` or `https:`).
    pub vapid_subject: Option<String>,
    /// The site's public URL (`--public-url`): relative URLs of declarative
    /// messages are resolved against it.
    pub public_url: Option<String>,
    /// An admin token valid besides the stored ones.
    pub admin_token: Option<String>,
    /// Which endpoints subscriptions may have.
    pub endpoint_policy: EndpointPolicy,
    /// Origins allowed by CORS (`*` for any); none means no CORS headers.
    pub cors_origins: Vec<String>,
    /// Whether browsers may set their subscriptions' tags (apps may say
    /// otherwise for themselves).
    pub client_tags: bool,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// The secret a site's backend signs user ids with (`userSignature`).
    pub user_signing_secret: Option<String>,
    /// Accept user ids from browsers unsigned (development only).
    pub trust_client_user_ids: bool,
    /// A second address serving `/metrics` without a token.
    pub metrics_listen: Option<SocketAddr>,
    /// Requests a client address may make at once on the public routes.
    pub rate_limit_burst: u32,
    /// How fast its allowance refills, requests per second.
    pub rate_limit_per_second: f64,
    /// Addresses or CIDR blocks never limited (a load generator, a health checker).
    pub rate_limit_exempt: Vec<String>,
    /// Proxies (addresses or CIDR blocks) whose forwarding header is believed.
    pub trusted_proxies: Vec<String>,
    /// The one forwarding header believed from them.
    pub client_ip_header: limits::ClientIpHeader,
    /// The longest an event stream stays open; the client reconnects with
    /// `Last-Event-ID`.
    pub stream_max: Duration,
    /// Connections and their timeouts.
    pub connections: listener::ListenLimits,
    /// The longest a request may take, reading its body included.
    pub request_timeout: Duration,
    /// How long `POST /api/push?wait=true` waits before answering 202.
    pub wait_timeout: Duration,
    /// The key that signs event tokens; made and stored on first start when `None`.
    pub event_token_key: Option<String>,
    /// How long finished messages are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Requests in flight to push services.
    pub concurrency: usize,
    /// The delivery engine's settings.
    pub engine: EngineSettings,
    /// Webhook deliveries.
    pub webhooks: WebhookSettings,
    /// How long events are kept in the outbox (the SSE stream resumes
    /// within it; a webhook's events older than it are dropped).
    pub event_retention: Duration,
}

/// The default database: SQLite under `./tocsin-data/`.
pub const DEFAULT_DATABASE: &str = "sqlite://tocsin-data/tocsin.db";

/// Every setting's default, in one place: the flags, `TOCSIN_*` variables
/// and `tocsin.toml` of `tocsin serve` take theirs from here.
impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE.to_owned(),
            database_timeout: tocsin_store_api::DEFAULT_TIMEOUT,
            vapid_keys: None,
            vapid_subject: None,
            public_url: None,
            admin_token: None,
            endpoint_policy: EndpointPolicy::Public,
            cors_origins: Vec::new(),
            client_tags: true,
            body_limit: 64 * 1024,
            user_signing_secret: None,
            trust_client_user_ids: false,
            metrics_listen: None,
            rate_limit_burst: 60,
            rate_limit_per_second: 0.2,
            rate_limit_exempt: Vec::new(),
            trusted_proxies: Vec::new(),
            client_ip_header: limits::ClientIpHeader::default(),
            stream_max: Duration::from_secs(3600),
            connections: listener::ListenLimits::default(),
            request_timeout: Duration::from_secs(90),
            wait_timeout: Duration::from_secs(60),
            event_token_key: None,
            retention: Some(Duration::from_secs(30 * 86_400)),
            concurrency: 100,
            engine: EngineSettings::default(),
            webhooks: WebhookSettings::default(),
            event_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Timeout of one delivery request.
    pub timeout: Duration,
    /// The most events of a batched type in one delivery.
    pub batch: i64,
    /// The waits between attempts; giving up after the last.
    pub schedule: Vec<Duration>,
}

impl Default for WebhookSettings {
    /// The dispatcher's own defaults: one place for them.
    fn default() -> Self {
        let d = tocsin_webhooks::DispatchConfig::default();
        Self { timeout: d.request_timeout, batch: d.batch, schedule: d.schedule }
    }
}

/// The delivery engine's settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// This process's id in leases and metrics; random when `None`.
    pub node_id: Option<String>,
    /// A claim on a shard or retry lasts this long without a checkpoint.
    pub lease: Duration,
    /// Subscriptions per shard.
    pub shard_size: i64,
    /// Subscriptions read and checkpointed at a time by one worker; a crash
    /// sends at most this many again per worker.
    pub page_size: i64,
    /// Requests in flight to one push service origin.
    pub per_origin: usize,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles, with jitter.
    pub retry_base: Duration,
    /// Timeout of one request to a push service.
    pub push_timeout: Duration,
    /// Extra trusted root certificates (PEM) for push services.
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// A proxy for requests to push services; none by default, whatever
    /// the environment's proxy variables say.
    pub push_proxy: Option<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            node_id: None,
            lease: Duration::from_secs(30),
            shard_size: 1000,
            page_size: 500,
            per_origin: 100,
            max_attempts: 5,
            retry_base: Duration::from_secs(2),
            push_timeout: Duration::from_secs(30),
            extra_roots_pem: Vec::new(),
            push_proxy: None,
        }
    }
}

/// Event streams (`GET /v1/events/stream`) one node serves at once: each
/// reads the outbox four times a second.
pub const MAX_STREAMS: usize = 64;

/// Shared by every handler.
///
/// Handlers and middleware take it by `State`, which clones it per request,
/// so it is one `Arc` ([`AppState`]): a clone is a reference count, not a
/// copy of every field.
pub struct Shared {
    /// Where subscriptions, messages, apps and tokens are kept.
    pub store: Arc<dyn Store>,
    /// The sending engine.
    pub engine: Arc<Engine>,
    /// Every app, with its current VAPID key and settings (the app boundary).
    pub apps: Arc<app::Apps>,
    /// Endpoint policy.
    pub policy: EndpointPolicy,
    /// SHA-256 of `TOCSIN_ADMIN_TOKEN`, when set.
    pub admin_token_hash: Option<String>,
    /// Counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Abuse limits of the public routes.
    pub limits: Arc<limits::Limits>,
    /// How long `?wait=true` waits.
    pub wait_timeout: Duration,
    /// Signs message ids for `POST /api/events`.
    pub event_tokens: Arc<proof::EventTokens>,
    /// The outbox and the webhooks (the same database as `store`).
    pub outbox: Arc<dyn tocsin_store_api::Outbox>,
    /// Sends webhook deliveries.
    pub webhooks: Arc<tocsin_webhooks::Dispatcher>,
    /// Event streams this node serves, shared fairly among tokens and apps.
    pub streams: Arc<api::stream::StreamSlots>,
    /// The longest a stream stays open.
    pub stream_max: Duration,
    /// The site's public URL, which relative URLs in declarative messages
    /// are resolved against (`--public-url`).
    pub public_url: Option<url::Url>,
}

/// What every handler is given: [`Shared`], behind one `Arc`.
pub type AppState = Arc<Shared>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] tocsin_store_api::StoreError),
    /// A configured key or subject is invalid.
    #[error(transparent)]
    Vapid(#[from] tocsin_protocol::VapidError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] tocsin_delivery::ClientError),
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// A flag's value is invalid.
    #[error("{0}")]
    Config(String),
    /// `TOCSIN_ADMIN_TOKEN` is too short to be a secret.
    #[error("TOCSIN_ADMIN_TOKEN must be at least {0} characters (make one with `tocsin token create` or `openssl rand -base64 32`)")]
    AdminTokenTooShort(usize),
}

/// The development default subject, used (with a warning) when none is set.
pub const DEV_SUBJECT: &str = "mailto:tocsin-dev@example.com";

/// Checks the settings as far as can be done without the database (`tocsin
/// config check`, and the first thing [`run`] does).
pub fn check(config: &ServerConfig) -> Result<(), StartError> {
    validate(config).map(|_| ())
}

/// What [`validate`] makes of the settings it checks.
struct Validated {
    subject: VapidSubject,
    limits: limits::Limits,
    uncapped: Arc<[ipnet::IpNet]>,
    public_url: Option<url::Url>,
}

/// The checks that need no database, and what they make.
fn validate(config: &ServerConfig) -> Result<Validated, StartError> {
    let subject = match &config.vapid_subject {
        Some(s) => VapidSubject::new(s)?,
        None => {
            tracing::warn!(
                "no VAPID subject set (--vapid-subject / TOCSIN_VAPID_SUBJECT): using {DEV_SUBJECT}; \
                 push services may refuse it in production"
            );
            VapidSubject::new(DEV_SUBJECT)?
        }
    };
    // Apple answers 403 BadJwtToken to such a subject: refuse to start with
    // one the operator chose, unless in development (`--endpoint-policy
    // any`). With none chosen, the development default starts with the
    // warning above, as the quick start needs.
    if let Some(why) = subject.apple_rejects() {
        match (&config.vapid_subject, &config.endpoint_policy) {
            (Some(_), EndpointPolicy::Public | EndpointPolicy::Known(_)) => {
                return Err(StartError::Config(format!(
                    "{why}. (--endpoint-policy any, for development only, lets the server start with it.)"
                )));
            }
            _ => tracing::warn!("{why}"),
        }
    }
    if config.wait_timeout >= config.request_timeout {
        return Err(StartError::Config(format!(
            "--wait-timeout ({:?}) must be shorter than --request-timeout ({:?})",
            config.wait_timeout, config.request_timeout
        )));
    }
    if config.admin_token.as_deref().is_some_and(|t| !t.is_empty() && t.len() < auth::MIN_ENV_TOKEN_LEN) {
        return Err(StartError::AdminTokenTooShort(auth::MIN_ENV_TOKEN_LEN));
    }
    match (&config.user_signing_secret, config.trust_client_user_ids) {
        (Some(_), true) => tracing::warn!("--trust-client-user-ids is ignored: --user-signing-secret is set"),
        (None, true) => tracing::warn!(
            "--trust-client-user-ids: any browser may claim any userId; for development only, never on the internet"
        ),
        _ => {}
    }
    let exempt = limits::parse_cidrs(&config.rate_limit_exempt)
        .map_err(|e| StartError::Config(format!("--rate-limit-exempt: {e}")))?;
    let bucket = |exempt| limits::RateLimiter::new(config.rate_limit_burst, config.rate_limit_per_second, exempt);
    let trusted_proxies = limits::parse_cidrs(&config.trusted_proxies)
        .map_err(|e| StartError::Config(format!("--trusted-proxies: {e}")))?;
    // Not capped per address: proxies carry many clients, and what the
    // operator exempted from the rate limits.
    let uncapped: Arc<[ipnet::IpNet]> = trusted_proxies.iter().chain(&exempt).copied().collect();
    let limits = limits::Limits {
        public: bucket(exempt.clone()),
        auth_failures: bucket(exempt),
        tests: limits::OncePer::new(Duration::from_secs(60)),
        trusted_proxies,
        client_ip_header: config.client_ip_header,
    };
    let public_url = match config.public_url.as_deref().filter(|u| !u.is_empty()) {
        None => None,
        Some(u) => match url::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Some(url),
            _ => return Err(StartError::Config(format!("--public-url {u:?} must be an absolute https: URL"))),
        },
    };
    Ok(Validated { subject, limits, uncapped, public_url })
}

/// The workers of a node: the delivery engine and the webhook dispatcher,
/// with their HTTP clients (both guarded by the endpoint policy's address
/// filter) and metrics.
struct Workers {
    node_id: String,
    engine: Arc<Engine>,
    engine_metrics: tocsin_delivery::engine::EngineMetrics,
    dispatcher: Arc<tocsin_webhooks::Dispatcher>,
    webhook_metrics: tocsin_webhooks::WebhookMetrics,
}

/// Builds the node's workers from the settings (nothing runs yet).
fn workers(config: &ServerConfig, subject: VapidSubject, stores: &Stores) -> Result<Workers, StartError> {
    let (store, outbox) = (&stores.store, &stores.outbox);
    let settings = &config.engine;
    let node_id = match &settings.node_id {
        Some(n) => n.clone(),
        None => {
            let mut b = [0u8; 6];
            let _ = aws_lc_rs::rand::fill(&mut b);
            format!("node-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
    };
    let address_filter: Option<fn(std::net::IpAddr) -> bool> = match config.endpoint_policy {
        EndpointPolicy::Any => None,
        EndpointPolicy::Public | EndpointPolicy::Known(_) => Some(policy::is_public),
    };
    let client = ClientConfig {
        address_filter,
        timeout: settings.push_timeout,
        extra_roots_pem: settings.extra_roots_pem.clone(),
        proxy: settings.push_proxy.clone(),
        ..ClientConfig::default()
    };
    let webhook_metrics = tocsin_webhooks::WebhookMetrics::default();
    // Webhook targets are guarded like push endpoints: the same address
    // filter at connection time, and the same extra roots.
    let webhook_client = tocsin_delivery::client::http_client(&ClientConfig {
        address_filter,
        timeout: config.webhooks.timeout,
        extra_roots_pem: settings.extra_roots_pem.clone(),
        ..ClientConfig::default()
    })?;
    let dispatcher = tocsin_webhooks::Dispatcher::new(
        outbox.clone(),
        webhook_client,
        tocsin_webhooks::DispatchConfig {
            node: node_id.clone(),
            request_timeout: config.webhooks.timeout,
            batch: config.webhooks.batch.max(1),
            schedule: config.webhooks.schedule.clone(),
            ..tocsin_webhooks::DispatchConfig::default()
        },
        webhook_metrics.clone(),
    );
    let engine_metrics = tocsin_delivery::engine::EngineMetrics::new();
    let engine = Engine::new(
        store.clone(),
        &client,
        EngineConfig {
            node_id: node_id.clone(),
            shard_size: settings.shard_size.max(1),
            page_size: settings.page_size.max(1),
            lease: settings.lease,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            workers: 2,
            concurrency: config.concurrency,
            per_origin: settings.per_origin,
            retry: BroadcastConfig {
                concurrency: config.concurrency,
                max_attempts: settings.max_attempts.max(1),
                retry_base: settings.retry_base,
                max_retry_wait: Duration::from_secs(3600),
            },
            poll_interval: Duration::from_millis(250),
            subject,
            own_threads: true,
            clock: Clock::System,
        },
        Arc::new(config.endpoint_policy.clone()),
        engine_metrics.clone(),
    )?;
    Ok(Workers { node_id, engine, engine_metrics, dispatcher, webhook_metrics })
}

/// What the server keeps its data in: opened by the caller (the binary is
/// where a backend is chosen; this crate knows the traits only), with the
/// default app's VAPID key set up (`tocsin_ops::apps::ensure_default_key`).
pub struct Stores {
    /// Subscriptions, messages, apps, tokens and the engine's work.
    pub store: Arc<dyn Store>,
    /// Events and webhooks.
    pub outbox: Arc<dyn tocsin_store_api::Outbox>,
}

/// Runs the server until SIGINT or SIGTERM; then stops accepting, lets the
/// engine reach a checkpoint, and returns. `ready` receives the bound address.
pub async fn run(config: ServerConfig, stores: Stores, ready: impl FnOnce(SocketAddr)) -> Result<(), StartError> {
    let Validated { subject, limits, uncapped, public_url } = validate(&config)?;
    let event_key = if let Some(key) = config.event_token_key.clone().filter(|k| !k.is_empty()) {
        key
    } else {
        let mut b = [0u8; 32];
        aws_lc_rs::rand::fill(&mut b).map_err(|_| StartError::Config("no randomness available".into()))?;
        stores.store.server_secret("event-token-key", &tocsin_protocol::b64::encode(b)).await?
    };
    let Workers { node_id, engine, engine_metrics, dispatcher, webhook_metrics } = workers(&config, subject, &stores)?;
    let Stores { store, outbox } = stores;
    tracing::info!(node = %node_id, "delivery engine ready");
    let store_for_retention = store.clone();
    let state: AppState = Arc::new(Shared {
        store,
        engine: engine.clone(),
        apps: Arc::new(app::Apps::new(
            store_for_retention.clone(),
            app::Fallback {
                user_signing_secret: config.user_signing_secret.clone(),
                trust_client_user_ids: config.trust_client_user_ids,
                cors_origins: config.cors_origins.clone(),
                client_tags: config.client_tags,
            },
        )),
        policy: config.endpoint_policy.clone(),
        admin_token_hash: config.admin_token.as_deref().filter(|t| !t.is_empty()).map(auth::hash_token),
        metrics: Arc::new(metrics::Metrics::new(engine_metrics, webhook_metrics, node_id)),
        limits: Arc::new(limits),
        wait_timeout: config.wait_timeout,
        event_tokens: Arc::new(proof::EventTokens::new(&event_key)),
        public_url,
        outbox: outbox.clone(),
        webhooks: dispatcher.clone(),
        streams: Arc::new(api::stream::StreamSlots::new(MAX_STREAMS)),
        stream_max: config.stream_max,
    });
    state.apps.load_all().await?;
    let metrics_only = config.metrics_listen.map(|_| api::metrics_router(state.clone()));
    let app = api::router(state, &config);
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|e| StartError::Bind(config.listen, e))?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind(config.listen, e))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(keep) = config.retention {
        tokio::spawn(purge::run(store_for_retention, keep, stop_rx.clone()));
    }
    tokio::spawn(purge::run_events(outbox, config.event_retention, stop_rx.clone()));
    let webhooks_task = tokio::spawn(dispatcher.run(stop_rx.clone()));
    let engine_task = tokio::spawn(engine.run(stop_rx));
    if let (Some(addr), Some(router)) = (config.metrics_listen, metrics_only) {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| StartError::Bind(addr, e))?;
        tracing::info!(%addr, "/metrics without a token on its own address");
        // The same accept loop as the main address: caps and timeouts.
        let (limits, uncapped) = (config.connections, uncapped.clone());
        tokio::spawn(listener::serve(listener, router, limits, uncapped, std::future::pending()));
    }
    ready(addr);
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down: no new requests; the engine stops at its next checkpoint");
    };
    let deadline = config.connections.shutdown_timeout;
    listener::serve(listener, app, config.connections, uncapped, shutdown).await;
    // The engine stops at its next checkpoint; a page still in flight at the
    // deadline is left to be sent again (its lease runs out).
    let _ = stop_tx.send(true);
    if tokio::time::timeout(deadline, engine_task).await.is_err() {
        tracing::warn!(timeout = ?deadline, "the engine did not reach a checkpoint in time; its work in flight will be redone");
    }
    // A webhook delivery in flight is sent again by whoever claims it next.
    let _ = tokio::time::timeout(deadline, webhooks_task).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
