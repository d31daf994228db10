//! `tocsin send`: web-push's `send-notification`, plus many recipients.

use std::io::{BufReader, IsTerminal as _, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tocsin_delivery::fanout::{self, BroadcastConfig, Progress, Summary};
use tocsin_delivery::{ClientConfig, PushClient};
use tocsin_protocol::request::PushOptions;
use tocsin_protocol::subscription::{KeysJson, SubscriptionJson};
use tocsin_protocol::{
    ContentEncoding, Outcome, Subscription, Topic, Ttl, Urgency, VapidKey, VapidSigner, VapidSubject,
};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The subscription's endpoint (with --key and --auth).
    #[arg(long, conflicts_with = "subscription", requires_all = ["key", "auth"], allow_hyphen_values = true)]
    endpoint: Option<String>,
    /// The subscription's keys.p256dh.
    #[arg(long, requires = "endpoint", allow_hyphen_values = true)]
    key: Option<String>,
    /// The subscription's keys.auth (base64url may start with '-').
    #[arg(long, requires = "endpoint", allow_hyphen_values = true)]
    auth: Option<String>,
    /// PushSubscription JSON: a file, or - for standard input. One object, a
    /// JSON array, or JSON lines; several send to all of them.
    #[arg(long, value_name = "FILE|-")]
    subscription: Option<String>,
    /// The message (text, often JSON). Without it, a push with no payload.
    #[arg(long, allow_hyphen_values = true)]
    payload: Option<String>,
    /// Seconds the push service keeps the message (default four weeks).
    #[arg(long, default_value_t = Ttl::DEFAULT.0)]
    ttl: u32,
    /// Payload encryption.
    #[arg(long, default_value = "aes128gcm", value_parser = ["aes128gcm", "aesgcm"])]
    encoding: String,
    /// very-low, low, normal or high.
    #[arg(long)]
    urgency: Option<Urgency>,
    /// Replaces an undelivered message with the same topic (≤ 32 base64url characters).
    #[arg(long)]
    topic: Option<Topic>,
    /// VAPID subject: mailto: or https: URI.
    #[arg(long, env = "TOCSIN_VAPID_SUBJECT")]
    vapid_subject: Option<String>,
    /// VAPID public key, base64url (may be left out: derived from the private key).
    #[arg(long, env = "TOCSIN_VAPID_PUBLIC_KEY", allow_hyphen_values = true)]
    vapid_pubkey: Option<String>,
    /// VAPID private key: base64url, or a PEM file's path.
    #[arg(long, env = "TOCSIN_VAPID_PRIVATE_KEY", hide_env_values = true, allow_hyphen_values = true)]
    vapid_pvtkey: Option<String>,
    /// An extra trusted root certificate (PEM), for a push service with a self-signed certificate.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// A proxy for the requests (http://, https:// or socks5://); none by default, whatever HTTP_PROXY says.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Attempts per recipient when the push service asks to retry (429, 406, 5xx, timeouts, network errors).
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Seconds before a request times out.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
}

fn signer(args: &SendArgs) -> anyhow::Result<Option<VapidSigner>> {
    let Some(private) = &args.vapid_pvtkey else {
        if args.vapid_subject.is_some() || args.vapid_pubkey.is_some() {
            bail!("VAPID needs --vapid-pvtkey (and --vapid-subject)");
        }
        return Ok(None);
    };
    let subject = args.vapid_subject.as_deref().context("VAPID needs --vapid-subject (mailto: or https:)")?;
    let subject = VapidSubject::new(subject)?;
    if let Some(w) = subject.apple_rejects() {
        eprintln!("warning: {w}");
    }
    let key = if private.contains("-----BEGIN") || std::path::Path::new(private).is_file() {
        let pem = if private.contains("-----BEGIN") {
            private.clone()
        } else {
            std::fs::read_to_string(private).with_context(|| format!("reading {private}"))?
        };
        let key = VapidKey::from_pem(&pem)?;
        if let Some(public) = &args.vapid_pubkey {
            if VapidKey::from_base64url(Some(public), &key.private_key_base64url()).is_err() {
                bail!("--vapid-pubkey does not match the private key");
            }
        }
        key
    } else {
        VapidKey::from_base64url(args.vapid_pubkey.as_deref(), private)?
    };
    Ok(Some(VapidSigner::new(Arc::new(key), subject)))
}

type Item = Result<Subscription, String>;

/// Streams subscriptions from JSON: objects, arrays of objects, or lines.
fn read_subscriptions(reader: Box<dyn Read + Send>) -> impl Iterator<Item = Item> + Send {
    let mut values = serde_json::Deserializer::from_reader(BufReader::new(reader)).into_iter::<serde_json::Value>();
    let mut pending: std::vec::IntoIter<serde_json::Value> = Vec::new().into_iter();
    let mut index = 0usize;
    let mut broken = false;
    std::iter::from_fn(move || loop {
        if let Some(v) = pending.next() {
            index += 1;
            return Some(Subscription::from_value(v).map_err(|e| format!("subscription {index}: {e}")));
        }
        if broken {
            return None;
        }
        match values.next()? {
            Ok(serde_json::Value::Array(items)) => pending = items.into_iter(),
            Ok(v) => pending = vec![v].into_iter(),
            Err(e) => {
                broken = true;
                return Some(Err(format!("subscription input is not JSON after item {index}: {e}")));
            }
        }
    })
}

pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let signer = signer(&args)?.map(Arc::new);
    let options = PushOptions {
        ttl: Ttl(args.ttl),
        urgency: args.urgency,
        topic: args.topic.clone(),
        encoding: args.encoding.parse::<ContentEncoding>()?,
    };
    if let Some(p) = &args.payload {
        let max = options.encoding.max_plaintext();
        if p.len() > max {
            bail!("payload is {} bytes; at most {max} fit one {} push message", p.len(), options.encoding);
        }
    }
    let mut extra_roots_pem = Vec::new();
    if let Some(path) = &args.ca_cert {
        extra_roots_pem.push(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    let client_config = ClientConfig {
        timeout: Duration::from_secs(args.timeout),
        extra_roots_pem,
        proxy: args.proxy.clone(),
        ..ClientConfig::default()
    };
    let client = PushClient::new(&client_config)?;
    let config =
        BroadcastConfig { concurrency: args.concurrency, max_attempts: args.attempts.max(1), ..Default::default() };

    let mut items: Box<dyn Iterator<Item = Item> + Send> = match (&args.endpoint, &args.subscription) {
        (Some(endpoint), _) => {
            let raw = SubscriptionJson {
                endpoint: Some(endpoint.clone()),
                expiration_time: None,
                keys: Some(KeysJson { p256dh: args.key.clone(), auth: args.auth.clone() }),
            };
            Box::new(std::iter::once(Subscription::try_from(raw).map_err(|e| e.to_string())))
        }
        (None, Some(path)) => {
            let reader: Box<dyn Read + Send> = if path == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(std::fs::File::open(path).with_context(|| format!("opening {path}"))?)
            };
            Box::new(read_subscriptions(reader))
        }
        (None, None) => bail!("give --endpoint with --key and --auth, or --subscription FILE|-"),
    };

    // Peek: one recipient gets the detailed single-send report.
    let first = items.next();
    let second = items.next();
    let payload = args.payload.clone().map(bytes_of);
    if second.is_none() && !args.json {
        let sub = match first {
            None => bail!("no subscription in the input"),
            Some(Err(e)) => bail!("invalid subscription: {e}"),
            Some(Ok(sub)) => sub,
        };
        let (outcome, retries) =
            fanout::deliver_one(&client, &sub, payload.as_deref(), &options, signer.as_deref(), &config).await;
        return Ok(report_one(&outcome, retries));
    }

    let progress = Arc::new(Progress::default());
    let bar = progress_bar(progress.clone(), args.json);
    let all = first.into_iter().chain(second).chain(items);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary =
        fanout::broadcast(&client_config, threads, all, payload, Arc::new(options), signer, config, progress.clone())
            .await?;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.failed == 0 && summary.total > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn bytes_of(s: String) -> bytes::Bytes {
    bytes::Bytes::from(s.into_bytes())
}

fn progress_bar(progress: Arc<Progress>, quiet: bool) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {pos} sent, {per_sec} · {msg}").ok()?);
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            b.set_position(progress.done.load(Ordering::Relaxed));
            b.set_message(format!(
                "delivered {} · gone {} · failed {}",
                progress.delivered.load(Ordering::Relaxed),
                progress.gone.load(Ordering::Relaxed),
                progress.failed.load(Ordering::Relaxed)
            ));
            b.tick();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some((bar, ticker))
}

/// Exit codes: 0 delivered, 1 failed, 3 subscription gone (remove it).
fn report_one(outcome: &Outcome, retries: u32) -> ExitCode {
    let after = if retries > 0 { format!(" after {retries} retries") } else { String::new() };
    match outcome {
        Outcome::Delivered { status } => {
            println!("{status}: delivered{after}");
            ExitCode::SUCCESS
        }
        Outcome::Gone { status } => {
            println!("{status}: the subscription no longer exists; remove it");
            ExitCode::from(3)
        }
        Outcome::Failed { reason } => {
            println!("not delivered{after}: {reason}");
            ExitCode::from(1)
        }
        Outcome::Retry { reason, .. } => {
            println!("not delivered: {reason}");
            ExitCode::from(1)
        }
    }
}

fn print_summary(s: &Summary) {
    println!(
        "sent to {} subscriptions in {:.2} s ({:.0} messages/s)",
        s.total, s.elapsed_seconds, s.messages_per_second
    );
    println!("  delivered {:>9}", s.delivered);
    println!("  gone      {:>9}", s.gone);
    println!("  expired   {:>9}", s.expired);
    println!("  failed    {:>9}", s.failed);
    for (reason, f) in &s.failed_by_reason {
        println!("    {reason}: {} (e.g. {})", f.count, f.example);
    }
    println!("  retries   {:>9}", s.retries);
}
