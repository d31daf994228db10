//! `/metrics` in the Prometheus text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tocsin_store::Stats;

/// How long stored totals are reused between scrapes: counting whole
/// tables on every scrape would let anyone who can scrape load the database.
pub const TOTALS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The server's own counters and the engine's; stored totals are read at
/// most every [`TOTALS_TTL`].
#[derive(Debug)]
pub struct Metrics {
    /// Subscriptions saved through the API.
    pub subscriptions_saved: Counter,
    /// Messages accepted through the API.
    pub messages_accepted: Counter,
    engine: tocsin_delivery::engine::EngineMetrics,
    node: String,
    totals: tokio::sync::Mutex<Option<(std::time::Instant, Stats)>>,
}

impl Metrics {
    /// Fresh counters beside the engine's.
    pub fn new(engine: tocsin_delivery::engine::EngineMetrics, node: String) -> Self {
        Self {
            subscriptions_saved: Counter::default(),
            messages_accepted: Counter::default(),
            engine,
            node,
            totals: tokio::sync::Mutex::new(None),
        }
    }

    /// The text exposition, with the store's totals (cached) as gauges.
    pub async fn render(&self, store: &dyn tocsin_store::Store) -> tocsin_store::Result<String> {
        let stats = {
            // One scrape at a time refreshes; the others wait and reuse it.
            let mut cached = self.totals.lock().await;
            match cached.as_ref() {
                Some((at, stats)) if at.elapsed() < TOTALS_TTL => stats.clone(),
                _ => {
                    let stats = store.stats().await?;
                    *cached = Some((std::time::Instant::now(), stats.clone()));
                    stats
                }
            }
        };
        Ok(self.render_with(&stats))
    }

    fn render_with(&self, stats: &Stats) -> String {
        let mut registry = Registry::with_prefix("tocsin");
        registry.register(
            "subscriptions_saved",
            "Subscriptions saved through the API",
            self.subscriptions_saved.clone(),
        );
        registry.register("messages_accepted", "Messages accepted through the API", self.messages_accepted.clone());
        let gauge = |v: i64| {
            let g: Gauge = Gauge::default();
            g.set(v);
            g
        };
        registry.register("subscriptions", "Subscriptions stored", gauge(stats.subscriptions));
        registry.register("messages_pending", "Messages not yet done", gauge(stats.messages_pending));
        registry.register(
            "deliveries_delivered",
            "Deliveries accepted by push services, all messages",
            gauge(stats.delivered),
        );
        registry.register("deliveries_failed", "Deliveries failed for good, all messages", gauge(stats.failed));
        registry.register("subscriptions_removed", "Subscriptions removed as gone or expired", gauge(stats.removed));
        self.engine.register(&mut registry, &self.node);
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
