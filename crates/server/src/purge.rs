//! The retention purge (`--retention-days`): messages that are done or
//! cancelled and older than the retention are deleted, with their shards,
//! retries and failures, in batches; their counts stay in the totals of
//! `/v1/stats`. Every node runs it; the store makes that safe.

use std::sync::Arc;
use std::time::Duration;

use tocsin_store_api::MessageStore;
use tokio::sync::watch;

/// Messages deleted per statement.
const BATCH: i64 = 1000;

/// Deletes events older than `keep` from the outbox (and what is still
/// queued of them for webhooks), now and then every minute, until `stop`.
pub async fn run_events(outbox: Arc<dyn tocsin_store_api::Outbox>, keep: Duration, mut stop: watch::Receiver<bool>) {
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        match outbox.purge_events(now.saturating_sub(keep.as_millis()) as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged events past --event-retention-hours"),
            Err(e) => tracing::warn!(error = %e, "event purge failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Purges now, then every quarter of the retention (at least every second,
/// at most every hour), until `stop`.
pub async fn run(store: Arc<dyn MessageStore>, keep: Duration, mut stop: watch::Receiver<bool>) {
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let before = now.saturating_sub(keep.as_millis()) as i64;
        let mut purged = 0;
        loop {
            match store.purge_messages(before, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge failed; trying again later");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "purged finished messages past the retention");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
