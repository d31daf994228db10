//! The dispatcher's counters, for `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Webhook deliveries by what became of them.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    /// Answered 2xx.
    pub delivered: Counter,
    /// Failed, to be tried again.
    pub retried: Counter,
    /// Failed for good after the whole schedule.
    pub gave_up: Counter,
}

impl WebhookMetrics {
    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("webhook_deliveries", "Webhook deliveries answered 2xx", self.delivered.clone());
        registry.register(
            "webhook_retries",
            "Webhook delivery attempts that failed and will be retried",
            self.retried.clone(),
        );
        registry.register(
            "webhook_gave_up",
            "Webhook deliveries given up after about a day of retries",
            self.gave_up.clone(),
        );
    }
}
