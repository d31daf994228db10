//! `/metrics` in the Prometheus text format. What belongs to an app (its
//! subscriptions, messages, deliveries, API counters) carries an `app`
//! label.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tocsin_store_api::Stats;

/// Each app's stored totals, by name.
/// Each app's stored totals, by name, and the webhooks' (failing, waiting events).
type AppTotals = (Vec<(String, Stats)>, (i64, i64));

/// The label of an app's series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    /// The app's name.
    pub app: String,
}

/// The label of `tocsin_http_errors_total`: which error of the catalogue.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// Its id, as clients see it.
    pub id: &'static str,
    /// Its status (an id may be answered with two).
    pub status: u16,
}

/// Error answers, by error: counted where an error is answered
/// (`ApiError::into_response`), so no layer runs on every request for it;
/// one process is one server. No app label: an error may come before the
/// app is known, and the ids are a fixed set.
static ERRORS: std::sync::LazyLock<Family<ErrorLabel, Counter>> = std::sync::LazyLock::new(Family::default);

/// Counts an error answer.
pub fn error_answered(id: crate::error::ErrorId) {
    ERRORS.get_or_create(&ErrorLabel { id: id.as_str(), status: id.status().as_u16() }).inc();
}

/// How long stored totals are reused between scrapes: counting whole
/// tables on every scrape would let anyone who can scrape load the database.
pub const TOTALS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The server's own counters and the engine's; stored totals are read at
/// most every [`TOTALS_TTL`].
#[derive(Debug)]
pub struct Metrics {
    /// Subscriptions saved through the API, by app.
    subscriptions_saved: Family<AppLabel, Counter>,
    /// Messages accepted through the API, by app.
    messages_accepted: Family<AppLabel, Counter>,
    engine: tocsin_delivery::engine::EngineMetrics,
    webhooks: tocsin_webhooks::WebhookMetrics,
    node: String,
    totals: tokio::sync::Mutex<Option<(std::time::Instant, AppTotals)>>,
}

impl Metrics {
    /// Fresh counters beside the engine's.
    pub fn new(
        engine: tocsin_delivery::engine::EngineMetrics,
        webhooks: tocsin_webhooks::WebhookMetrics,
        node: String,
    ) -> Self {
        Self {
            subscriptions_saved: Family::default(),
            messages_accepted: Family::default(),
            engine,
            webhooks,
            node,
            totals: tokio::sync::Mutex::new(None),
        }
    }

    /// This process's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Counts a subscription saved in the app of `label`.
    pub fn subscription_saved(&self, label: &AppLabel) {
        self.subscriptions_saved.get_or_create(label).inc();
    }

    /// Counts a message accepted in the app of `label`.
    pub fn message_accepted(&self, label: &AppLabel) {
        self.messages_accepted.get_or_create(label).inc();
    }

    /// The text exposition, with the store's totals (cached) as gauges.
    pub async fn render(
        &self,
        store: &dyn tocsin_store_api::Store,
        outbox: &dyn tocsin_store_api::Outbox,
    ) -> tocsin_store_api::Result<String> {
        let stats = {
            // One scrape at a time refreshes; the others wait and reuse it.
            let mut cached = self.totals.lock().await;
            match cached.as_ref() {
                Some((at, stats)) if at.elapsed() < TOTALS_TTL => stats.clone(),
                _ => {
                    let mut stats = Vec::new();
                    for app in store.apps().await? {
                        stats.push((app.name, store.stats(app.id).await?));
                    }
                    let totals = (stats, outbox.webhook_totals().await?);
                    *cached = Some((std::time::Instant::now(), totals.clone()));
                    totals
                }
            }
        };
        Ok(self.render_with(&stats.0, stats.1))
    }

    fn render_with(&self, stats: &[(String, Stats)], (failing, waiting): (i64, i64)) -> String {
        let mut registry = Registry::with_prefix("tocsin");
        registry.register(
            "subscriptions_saved",
            "Subscriptions saved through the API",
            self.subscriptions_saved.clone(),
        );
        registry.register("messages_accepted", "Messages accepted through the API", self.messages_accepted.clone());
        registry.register("http_errors", "Error answers, by the catalogue's id and status", ERRORS.clone());
        let gauge = |v: fn(&Stats) -> i64| {
            let family: Family<AppLabel, Gauge> = Family::default();
            for (app, s) in stats {
                family.get_or_create(&AppLabel { app: app.clone() }).set(v(s));
            }
            family
        };
        registry.register("subscriptions", "Subscriptions stored", gauge(|s| s.subscriptions));
        registry.register("messages_pending", "Messages not yet done", gauge(|s| s.messages_pending));
        registry.register(
            "deliveries_delivered",
            "Deliveries accepted by push services, all messages",
            gauge(|s| s.delivered),
        );
        registry.register("deliveries_failed", "Deliveries failed for good, all messages", gauge(|s| s.failed));
        registry.register("subscriptions_removed", "Subscriptions removed as gone or expired", gauge(|s| s.removed));
        self.engine.register(&mut registry, &self.node);
        self.webhooks.register(&mut registry);
        let failing_gauge: Gauge = Gauge::default();
        failing_gauge.set(failing);
        registry.register("webhooks_failing", "Webhooks whose deliveries have failed for about a day", failing_gauge);
        let waiting_gauge: Gauge = Gauge::default();
        waiting_gauge.set(waiting);
        registry.register("webhook_events_waiting", "Events queued for webhooks, not yet delivered", waiting_gauge);
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
