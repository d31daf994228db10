//! `tocsin serve`: the server's flags, read into its configuration, and
//! `--database`, which every command that works on the database shares.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use tocsin_server::{EndpointPolicy, ServerConfig};

/// Every default below comes from [`ServerConfig::default`]: one place.
fn d() -> ServerConfig {
    ServerConfig::default()
}

/// A duration as the seconds its flag takes.
fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// sqlite://PATH (the default, under ./tocsin-data/) or postgres://USER@HOST/DB.
    #[arg(long = "database", env = "TOCSIN_DATABASE_URL", default_value_t = d().database_url)]
    pub database: String,
    /// Seconds one database call may take, waiting for a connection included; past it a request answers 503
    /// database-unavailable (with Retry-After) instead of hanging while the database is away.
    #[arg(long, env = "TOCSIN_DATABASE_TIMEOUT", default_value_t = secs(d().database_timeout))]
    pub database_timeout: f64,
}

impl DbArgs {
    /// `--database-timeout` as a duration.
    pub fn timeout(&self) -> anyhow::Result<std::time::Duration> {
        seconds(self.database_timeout, "--database-timeout")
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TOCSIN_LISTEN", default_value_t = d().listen)]
    listen: SocketAddr,
    #[command(flatten)]
    db: DbArgs,
    /// An admin token accepted besides the stored ones (at least 32 characters); `tocsin token create` makes
    /// scoped ones. Prefer TOCSIN_ADMIN_TOKEN or TOCSIN_ADMIN_TOKEN_FILE to this flag, which `ps` shows.
    #[arg(long, env = "TOCSIN_ADMIN_TOKEN", hide_env_values = true, allow_hyphen_values = true)]
    admin_token: Option<String>,
    /// VAPID public key, base64url (optional: derived from the private key).
    #[arg(long, env = "TOCSIN_VAPID_PUBLIC_KEY", requires = "vapid_private_key", allow_hyphen_values = true)]
    vapid_public_key: Option<String>,
    /// VAPID private key, base64url. Without one, the stored key is used, or one is generated on first start.
    #[arg(long, env = "TOCSIN_VAPID_PRIVATE_KEY", hide_env_values = true, allow_hyphen_values = true)]
    vapid_private_key: Option<String>,
    /// VAPID subject, mailto: or https: (needed in production; a development default otherwise).
    #[arg(long, env = "TOCSIN_VAPID_SUBJECT")]
    vapid_subject: Option<String>,
    /// The site's public URL (https://…): relative URLs in declarative messages (navigate, icon) are resolved against it.
    #[arg(long, env = "TOCSIN_PUBLIC_URL")]
    public_url: Option<String>,
    /// public (https, public addresses only), any (development), or known (major push services only).
    #[arg(long, env = "TOCSIN_ENDPOINT_POLICY", default_value_t = d().endpoint_policy)]
    endpoint_policy: EndpointPolicy,
    /// Extra hosts for --endpoint-policy known, comma-separated.
    #[arg(long, env = "TOCSIN_KNOWN_PUSH_HOSTS", value_delimiter = ',')]
    known_push_hosts: Vec<String>,
    /// Origins allowed to call the API from a browser (CORS), comma-separated; * for any.
    #[arg(long, env = "TOCSIN_CORS_ORIGIN", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Whether browsers may set their subscriptions' tags (Tocsin.subscribe({tags}), setTags): false leaves tags
    /// to your backend (PATCH /v1/subscriptions/{id}/tags). Apps made with their own setting keep it.
    #[arg(long, env = "TOCSIN_CLIENT_TAGS", default_value_t = d().client_tags, action = clap::ArgAction::Set)]
    client_tags: bool,
    /// Tag keys to index, comma-separated (plan,city): a segment's equality on one reads only the rows
    /// that match, in its count and as it is sent. Made at start (once; a million rows take seconds).
    #[arg(long, env = "TOCSIN_INDEXED_TAGS", value_delimiter = ',', value_parser = tag_key)]
    indexed_tags: Vec<tocsin_store::tocsin_audience::TagKey>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "TOCSIN_BODY_LIMIT", default_value_t = d().body_limit)]
    body_limit: usize,
    /// The secret your site's backend signs user ids with: a subscription with userId must carry userSignature,
    /// the hex HMAC-SHA256 of the userId under this secret. Without it, user ids from browsers are refused.
    #[arg(long, env = "TOCSIN_USER_SIGNING_SECRET", hide_env_values = true, allow_hyphen_values = true)]
    user_signing_secret: Option<String>,
    /// Accept user ids from browsers without a signature: anyone can then claim to be anyone. Development only.
    #[arg(long, env = "TOCSIN_TRUST_CLIENT_USER_IDS")]
    trust_client_user_ids: bool,
    /// Also serve /metrics on this address, without a token (for a scraper on a private network); on the main
    /// address /metrics needs a read token.
    #[arg(long, env = "TOCSIN_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Requests one client address may make at once to the public routes that write (subscribe, unsubscribe,
    /// test, events), and failed authentications it may have; then 429 rate-limited.
    #[arg(long, env = "TOCSIN_RATE_LIMIT_BURST", default_value_t = d().rate_limit_burst, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_burst: u32,
    /// How fast an address's allowance refills, requests per second (0.2: one every 5 s).
    #[arg(long, env = "TOCSIN_RATE_LIMIT_PER_SECOND", default_value_t = d().rate_limit_per_second)]
    rate_limit_per_second: f64,
    /// Addresses or CIDR blocks never limited, comma-separated (a load generator, a health checker).
    #[arg(long, env = "TOCSIN_RATE_LIMIT_EXEMPT", value_delimiter = ',', value_name = "CIDRS")]
    rate_limit_exempt: Vec<String>,
    /// Proxies whose X-Forwarded-For / Forwarded headers are believed (addresses or CIDR blocks,
    /// comma-separated); nobody's by default, so a client cannot pick the address it is counted as.
    #[arg(long, env = "TOCSIN_TRUSTED_PROXIES", value_delimiter = ',', value_name = "CIDRS")]
    trusted_proxies: Vec<String>,
    /// The one forwarding header believed from --trusted-proxies: x-forwarded-for, forwarded or x-real-ip. It is read
    /// from the right, skipping trusted proxies; the others are ignored (a proxy passes a client's own copy through).
    #[arg(long, env = "TOCSIN_CLIENT_IP_HEADER", default_value_t = d().client_ip_header, value_name = "HEADER")]
    client_ip_header: tocsin_server::limits::ClientIpHeader,
    /// Connections one client address (an IPv6 /64) may hold open at once; more are closed at once. Trusted proxies
    /// and --rate-limit-exempt are not capped.
    #[arg(long, env = "TOCSIN_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = d().connections.max_per_address as u32,
        value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_address: u32,
    /// Seconds an event stream (GET /v1/events/stream) stays open; the client then reconnects with Last-Event-ID.
    #[arg(long, env = "TOCSIN_STREAM_MAX_SECONDS", default_value_t = secs(d().stream_max))]
    stream_max_seconds: f64,
    /// Seconds a client has to send a request's head: from accept for the first request (HTTP/1 and HTTP/2),
    /// then, on HTTP/1, from when the connection is idle after a response (so it also closes idle keep-alives).
    #[arg(long, env = "TOCSIN_HEADER_READ_TIMEOUT", default_value_t = secs(d().connections.header_read_timeout))]
    header_read_timeout: f64,
    /// Seconds a connection (HTTP/1 or HTTP/2) may have no request in flight before it is closed.
    #[arg(long, env = "TOCSIN_IDLE_TIMEOUT", default_value_t = secs(d().connections.idle_timeout))]
    idle_timeout: f64,
    /// Seconds a whole request may take, reading its body included; then 408 request-timeout.
    #[arg(long, env = "TOCSIN_REQUEST_TIMEOUT", default_value_t = secs(d().request_timeout))]
    request_timeout: f64,
    /// Seconds POST /api/push?wait=true waits for the message to be done; then 202 with the counts so far.
    /// Must be shorter than --request-timeout.
    #[arg(long, env = "TOCSIN_WAIT_TIMEOUT", default_value_t = secs(d().wait_timeout))]
    wait_timeout: f64,
    /// Connections open at once; more wait in the kernel's backlog (raise `ulimit -n` to match).
    #[arg(long, env = "TOCSIN_MAX_CONNECTIONS", default_value_t = d().connections.max_connections as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds SIGTERM/SIGINT waits for open requests and the engine's next checkpoint before exiting anyway.
    #[arg(long, env = "TOCSIN_SHUTDOWN_TIMEOUT", default_value_t = secs(d().connections.shutdown_timeout))]
    shutdown_timeout: f64,
    /// The key that signs each message's eventToken (events are counted only with it); by default one is made on
    /// first start and kept in the database, shared by every node.
    #[arg(long, env = "TOCSIN_EVENT_TOKEN_KEY", hide_env_values = true, allow_hyphen_values = true)]
    event_token_key: Option<String>,
    /// Days finished (done or cancelled) messages are kept, with their shards, retries and failures; /v1/stats totals
    /// survive the purge. 0 keeps them forever.
    #[arg(long, env = "TOCSIN_RETENTION_DAYS", default_value_t = d().retention.map_or(0.0, |r| secs(r) / 86_400.0))]
    retention_days: f64,
    /// Requests in flight to push services.
    #[arg(long, env = "TOCSIN_CONCURRENCY", default_value_t = d().concurrency)]
    concurrency: usize,
    /// Requests in flight to one push service origin.
    #[arg(long, env = "TOCSIN_PER_ORIGIN_CONCURRENCY", default_value_t = d().engine.per_origin)]
    per_origin_concurrency: usize,
    /// This process's node id (in leases and metrics); random by default.
    #[arg(long, env = "TOCSIN_NODE_ID")]
    node_id: Option<String>,
    /// Seconds a node's claim on a shard of work lasts without a checkpoint;
    /// another node takes over a dead node's work after this.
    #[arg(long, env = "TOCSIN_LEASE_SECONDS", default_value_t = secs(d().engine.lease))]
    lease_seconds: f64,
    /// Subscriptions per shard of a broadcast (the unit nodes claim).
    #[arg(long, env = "TOCSIN_SHARD_SIZE", default_value_t = d().engine.shard_size, value_parser = clap::value_parser!(i64).range(1..))]
    shard_size: i64,
    /// Subscriptions a worker reads and checkpoints at a time; a crash sends at most this many again per worker.
    #[arg(long, env = "TOCSIN_PAGE_SIZE", default_value_t = d().engine.page_size, value_parser = clap::value_parser!(i64).range(1..))]
    page_size: i64,
    /// Attempts per delivery when push services ask to retry (429, 406, 5xx, timeouts, network errors); never past the message's TTL.
    #[arg(long, env = "TOCSIN_MAX_ATTEMPTS", default_value_t = d().engine.max_attempts)]
    max_attempts: u32,
    /// Milliseconds before the first retry (doubling, with jitter) when no Retry-After is given.
    #[arg(long, env = "TOCSIN_RETRY_BASE_MS", default_value_t = d().engine.retry_base.as_millis() as u64)]
    retry_base_ms: u64,
    /// An extra trusted root certificate (PEM) for push services, e.g. a private one or a benchmark sink.
    #[arg(long, env = "TOCSIN_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Seconds before a request to a push service times out.
    #[arg(long, env = "TOCSIN_PUSH_TIMEOUT", default_value_t = secs(d().engine.push_timeout))]
    push_timeout: f64,
    /// Seconds before a webhook delivery request times out.
    #[arg(long, env = "TOCSIN_WEBHOOK_TIMEOUT", default_value_t = secs(d().webhooks.timeout))]
    webhook_timeout: f64,
    /// The most events of a batched type (subscription.removed, delivery.failed, notification.*) in one webhook delivery.
    #[arg(long, env = "TOCSIN_WEBHOOK_BATCH", default_value_t = d().webhooks.batch)]
    webhook_batch: i64,
    /// Seconds to wait before each retry of a failed webhook delivery, comma-separated; it is given up after the last
    /// (default: the Standard Webhooks schedule, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about a day).
    #[arg(long, env = "TOCSIN_WEBHOOK_RETRY_SCHEDULE", value_delimiter = ',')]
    webhook_retry_schedule: Option<Vec<f64>>,
    /// Hours events are kept for GET /v1/events/stream to resume from (Last-Event-ID) and for webhooks to deliver.
    #[arg(long, env = "TOCSIN_EVENT_RETENTION_HOURS", default_value_t = secs(d().event_retention) / 3600.0)]
    event_retention_hours: f64,
    /// A proxy for requests to push services (http://, https:// or socks5://). None by default, whatever
    /// HTTP_PROXY/HTTPS_PROXY say: through a proxy the endpoint policy's connect-time address check cannot apply.
    #[arg(long, env = "TOCSIN_PUSH_PROXY", value_name = "URL")]
    push_proxy: Option<String>,
}

fn tag_key(s: &str) -> Result<tocsin_store::tocsin_audience::TagKey, String> {
    tocsin_store::tocsin_audience::TagKey::new(s).map_err(|e| e.to_string())
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = server_config(&args)?;
    let _owner = crate::store::sqlite_owner_lock(&config.database_url)?;
    let store =
        crate::store::open_with(&config.database_url, config.database_timeout, config.vapid_keys.as_ref()).await?;
    store.index_tags(&args.indexed_tags).await?;
    tocsin_server::run(config, crate::store::for_server(store), |addr| {
        // The first line is for scripts: the address, port included.
        println!("listening on http://{addr}");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The server's configuration from its flags, checked as far as it can be
/// without the database (`tocsin config check` stops here).
pub fn server_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let policy = match args.endpoint_policy.clone() {
        EndpointPolicy::Known(_) => EndpointPolicy::Known(args.known_push_hosts.clone()),
        p => p,
    };
    let config = ServerConfig {
        listen: args.listen,
        database_url: args.db.database.clone(),
        database_timeout: args.db.timeout()?,
        vapid_keys: args.vapid_private_key.clone().map(|p| (args.vapid_public_key.clone(), p)),
        vapid_subject: args.vapid_subject.clone(),
        public_url: args.public_url.clone(),
        admin_token: args.admin_token.clone(),
        endpoint_policy: policy,
        cors_origins: args.cors_origin.clone(),
        client_tags: args.client_tags,
        body_limit: args.body_limit,
        user_signing_secret: args.user_signing_secret.clone(),
        trust_client_user_ids: args.trust_client_user_ids,
        metrics_listen: args.metrics_listen,
        rate_limit_burst: args.rate_limit_burst,
        rate_limit_per_second: args.rate_limit_per_second,
        rate_limit_exempt: args.rate_limit_exempt.clone(),
        trusted_proxies: args.trusted_proxies.clone(),
        client_ip_header: args.client_ip_header,
        stream_max: seconds(args.stream_max_seconds, "--stream-max-seconds")?,
        connections: tocsin_server::listener::ListenLimits {
            max_connections: args.max_connections as usize,
            max_per_address: args.max_connections_per_address as usize,
            header_read_timeout: seconds(args.header_read_timeout, "--header-read-timeout")?,
            idle_timeout: seconds(args.idle_timeout, "--idle-timeout")?,
            shutdown_timeout: seconds(args.shutdown_timeout, "--shutdown-timeout")?,
        },
        request_timeout: seconds(args.request_timeout, "--request-timeout")?,
        wait_timeout: seconds(args.wait_timeout, "--wait-timeout")?,
        event_token_key: args.event_token_key.clone(),
        retention: if args.retention_days == 0.0 {
            None
        } else {
            Some(seconds(args.retention_days * 86_400.0, "--retention-days")?)
        },
        concurrency: args.concurrency,
        engine: tocsin_server::EngineSettings {
            node_id: args.node_id.clone(),
            lease: seconds(args.lease_seconds, "--lease-seconds")?,
            shard_size: args.shard_size,
            page_size: args.page_size,
            per_origin: args.per_origin_concurrency,
            max_attempts: args.max_attempts,
            retry_base: std::time::Duration::from_millis(args.retry_base_ms),
            push_timeout: seconds(args.push_timeout, "--push-timeout")?,
            extra_roots_pem: match &args.ca_cert {
                Some(p) => vec![std::fs::read(p).with_context(|| format!("reading {}", p.display()))?],
                None => Vec::new(),
            },
            push_proxy: args.push_proxy.clone(),
        },
        webhooks: tocsin_server::WebhookSettings {
            timeout: seconds(args.webhook_timeout, "--webhook-timeout")?,
            batch: args.webhook_batch.max(1),
            schedule: match &args.webhook_retry_schedule {
                None => tocsin_server::WebhookSettings::default().schedule,
                Some(list) => {
                    list.iter().map(|s| seconds(*s, "--webhook-retry-schedule")).collect::<anyhow::Result<Vec<_>>>()?
                }
            },
        },
        event_retention: seconds(args.event_retention_hours * 3600.0, "--event-retention-hours")?,
    };
    tocsin_server::check(&config)?;
    Ok(config)
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("{flag} must be a positive number of seconds"))
}
