//! `tocsin subscriptions import|export|count`: an app's stored
//! subscriptions, in JSON lines.

use std::io::{BufRead, BufReader, IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tocsin_store::tocsin_audience::{Language, TagPatch, Tags, TimeZoneName};
use tocsin_store::AppStore;
use tocsin_store::SubscriptionStore;

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tocsin_store::{NewSubscription, PageRow, Store, StoreError, Target};

use crate::app::AppArg;
use crate::serve::DbArgs;

/// Subscriptions `subscriptions import` writes per transaction.
const IMPORT_BATCH: usize = 1000;

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Import PushSubscriptions (JSON lines, each optionally with userId and topics).
    Import {
        /// The file, or - for standard input.
        file: String,
        /// The private key (base64url) of the server they were made with:
        /// stored as a non-current key of the app and used for them, so
        /// that nobody has to subscribe again. Without it they are taken as
        /// made with the app's current key.
        #[arg(long, env = "TOCSIN_IMPORT_VAPID_PRIVATE_KEY", hide_env_values = true, allow_hyphen_values = true)]
        vapid_private_key: Option<String>,
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Export an app's subscriptions as JSON lines (with userId and topics).
    Export {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print how many subscriptions an app has.
    Count {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        db: DbArgs,
    },
}

use tocsin_ops::now_ms;

pub async fn subscriptions(command: SubscriptionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SubscriptionsCommand::Count { app, db } => {
            let store = crate::store::open(&db).await?;
            let app = app.resolve(&store).await?;
            println!("{}", store.count_subscriptions(app.id, &Target::All(true)).await?);
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionsCommand::Export { app, db } => {
            let store = crate::store::open(&db).await?;
            let app = app.resolve(&store).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = 0;
            loop {
                let page = store.page_subscriptions(app.id, &Target::All(true), None, after, None, 1000).await?;
                let Some(last) = page.last().map(PageRow::id) else { break };
                for row in page {
                    let s = match row {
                        PageRow::Sub(s) => s,
                        PageRow::Unreadable { id, error } => {
                            eprintln!("subscription {id}: skipped, its row cannot be read: {error}");
                            continue;
                        }
                    };
                    let mut v: Value = serde_json::from_str(&s.subscription.to_json())?;
                    v["userId"] = json!(s.user_id);
                    v["topics"] = json!(s.topics);
                    v["tags"] = s.tags.to_json();
                    v["language"] = json!(s.language);
                    v["timeZone"] = json!(s.time_zone);
                    writeln!(out, "{v}")?;
                }
                after = last;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionsCommand::Import { file, vapid_private_key, app, db } => {
            let store = crate::store::open(&db).await?;
            let app = app.resolve(&store).await?;
            let key_id = match vapid_private_key {
                // The old server's key: kept beside the app's own, for these
                // subscriptions only (found again by its public key when the
                // same file is imported twice).
                Some(private) => {
                    let key = tocsin_protocol::VapidKey::from_base64url(None, private.trim())
                        .context("--vapid-private-key is not a P-256 private key (raw base64url)")?;
                    let row = store
                        .add_vapid_key(app.id, &key.public_key_base64url(), &key.private_key_base64url(), now_ms())
                        .await?;
                    eprintln!("VAPID key {} ({}) stored for app {}", row.id, row.public_key, app.name);
                    row.id
                }
                None => {
                    let current = store.current_vapid_key(app.id).await?;
                    current.ok_or_else(|| anyhow::anyhow!("app {} has no current VAPID key", app.name))?.id
                }
            };
            let reader: Box<dyn BufRead> = if file == "-" {
                Box::new(BufReader::new(std::io::stdin()))
            } else {
                let path = PathBuf::from(&file);
                Box::new(BufReader::new(std::fs::File::open(&path).with_context(|| format!("opening {file}"))?))
            };
            let bar = if std::io::stderr().is_terminal() {
                let b = ProgressBar::new_spinner();
                if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} imported {per_sec}") {
                    b.set_style(style);
                }
                Some(b)
            } else {
                None
            };
            let (mut imported, mut skipped) = (0u64, 0u64);
            let mut batch = Vec::with_capacity(IMPORT_BATCH);
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match parse_import_line(&line) {
                    Ok(ImportLine { subscription, user_id, topics, tags, language, time_zone }) => {
                        batch.push(NewSubscription {
                            subscription,
                            user_id,
                            topics,
                            tags,
                            language,
                            time_zone,
                            vapid_key_id: key_id,
                            keep_stored_key: false,
                            app: app.id,
                        });
                        if batch.len() == IMPORT_BATCH {
                            let (i, s) = write(&store, &batch).await?;
                            (imported, skipped) = (imported + i, skipped + s);
                            batch.clear();
                            if let Some(b) = &bar {
                                b.set_position(imported);
                            }
                        }
                    }
                    Err(e) => {
                        skipped += 1;
                        eprintln!("line {}: skipped: {e}", n + 1);
                    }
                }
            }
            let (i, s) = write(&store, &batch).await?;
            (imported, skipped) = (imported + i, skipped + s);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            println!("imported {imported}, skipped {skipped}");
            Ok(if skipped == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// Writes a batch in one transaction: (imported, skipped). When an
/// endpoint in it is another app's, or stored with other keys (only its
/// browser may change it), the batch is written row by row, and those rows
/// are skipped with a message.
async fn write(store: &dyn Store, batch: &[NewSubscription]) -> anyhow::Result<(u64, u64)> {
    match store.upsert_subscriptions(batch, now_ms()).await {
        Ok(rows) => Ok((rows.len() as u64, 0)),
        Err(StoreError::Conflict(_) | StoreError::NotProven) => {
            let (mut imported, mut skipped) = (0, 0);
            for new in batch {
                match store.upsert_subscription(new, now_ms()).await {
                    Ok(_) => imported += 1,
                    Err(e @ (StoreError::Conflict(_) | StoreError::NotProven)) => {
                        skipped += 1;
                        eprintln!("{}: skipped: {e}", new.subscription.endpoint());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((imported, skipped))
        }
        Err(e) => Err(e.into()),
    }
}

/// One line of an import: a subscription as `export` writes it.
struct ImportLine {
    subscription: tocsin_protocol::Subscription,
    user_id: Option<String>,
    topics: Option<Vec<String>>,
    /// Set on the stored row (merged into the tags it has, if it exists).
    tags: Option<TagPatch>,
    language: Option<Language>,
    time_zone: Option<TimeZoneName>,
}

fn parse_import_line(line: &str) -> anyhow::Result<ImportLine> {
    let v: Value = serde_json::from_str(line)?;
    let user_id = match v.get("userId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let topics = match v.get("topics") {
        None | Some(Value::Null) => None,
        Some(t) => {
            Some(serde_json::from_value::<Vec<String>>(t.clone()).context("topics must be an array of strings")?)
        }
    };
    let tags = match v.get("tags") {
        None | Some(Value::Null) => None,
        Some(t) => Some(TagPatch::setting(&Tags::from_json(t)?)),
    };
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let language = text("language").map(|l| Language::new(&l)).transpose()?;
    let time_zone = text("timeZone").map(|z| TimeZoneName::new(&z)).transpose()?;
    if user_id.iter().chain(topics.iter().flatten()).any(|s| s.contains('\0')) {
        anyhow::bail!("a user id or topic contains U+0000, which no database stores");
    }
    let subscription = tocsin_protocol::Subscription::from_value(v)?;
    let len = subscription.endpoint().as_str().len();
    if len > tocsin_store::MAX_ENDPOINT_LEN {
        anyhow::bail!("endpoint is {len} bytes; at most {} are accepted", tocsin_store::MAX_ENDPOINT_LEN);
    }
    Ok(ImportLine { subscription, user_id, topics, tags, language, time_zone })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    /// A base64url key starts with `-` one time in 64: it is still the
    /// flag's value, not a flag of its own (CI once drew such a key).
    #[test]
    fn a_private_key_may_start_with_a_hyphen() {
        let key = "-3L6u8krGLLpcW0DvKcf_SWgFg8N85wI2QRj-AyArVM";
        let parsed =
            crate::Cli::try_parse_from(["tocsin", "subscriptions", "import", "--vapid-private-key", key, "subs.json"]);
        assert!(parsed.is_ok(), "{:?}", parsed.err().map(|e| e.to_string()));
    }
}
