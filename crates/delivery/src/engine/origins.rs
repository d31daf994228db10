//! What each push service origin has answered since this process started,
//! for `GET /v1/push-services`: requests, outcomes by class, latency
//! quantiles and any back-off in force.
//!
//! Kept in atomics beside the origin's gate (looked up once per delivery
//! already), because the Prometheus histogram does not let its buckets be
//! read back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tocsin_protocol::outcome::RetryReason;
use tocsin_protocol::Outcome;

/// Latency buckets: upper bounds of 1 ms × 2^k, k = 0..16 (1 ms to 65 s),
/// then one for anything slower.
const BUCKETS: usize = 18;

fn bucket_of(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    (0..BUCKETS - 1).find(|&k| ms <= f64::from(1u32 << k)).unwrap_or(BUCKETS - 1)
}

/// Counters of one origin.
#[derive(Debug, Default)]
pub(super) struct OriginStats {
    delivered: AtomicU64,
    gone: AtomicU64,
    rejected: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    network_errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl OriginStats {
    /// Records one answered request (or one that failed on the way).
    pub(super) fn record(&self, outcome: &Outcome, latency: Duration) {
        let counter = match outcome {
            Outcome::Delivered { .. } => &self.delivered,
            Outcome::Gone { .. } => &self.gone,
            Outcome::Failed { .. } => &self.rejected,
            Outcome::Retry { reason: RetryReason::RateLimited | RetryReason::Throttled, .. } => &self.rate_limited,
            Outcome::Retry { reason: RetryReason::ServerError(_), .. } => &self.server_errors,
            Outcome::Retry { reason: RetryReason::Timeout | RetryReason::Network(_), .. } => &self.network_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.latency[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile of the latency, in ms: the upper bound of the bucket
    /// it falls in (`None` before any request, or beyond the last bound).
    fn quantile_ms(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (k < BUCKETS - 1).then(|| f64::from(1u32 << k));
            }
        }
        None
    }

    pub(super) fn snapshot(&self, origin: &str, backoff: Duration) -> PushServiceHealth {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counts: [u64; BUCKETS] = std::array::from_fn(|k| get(&self.latency[k]));
        let errors = ErrorCounts {
            rejected: get(&self.rejected),
            rate_limited: get(&self.rate_limited),
            server_errors: get(&self.server_errors),
            network_errors: get(&self.network_errors),
        };
        PushServiceHealth {
            origin: origin.to_owned(),
            requests: counts.iter().sum(),
            delivered: get(&self.delivered),
            gone: get(&self.gone),
            errors,
            p50_ms: Self::quantile_ms(&counts, 0.50),
            p99_ms: Self::quantile_ms(&counts, 0.99),
            backoff_seconds: (!backoff.is_zero()).then_some(backoff.as_secs_f64()),
        }
    }
}

/// Errors by class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorCounts {
    /// Refused for good (a 4xx other than 404/410: bad request, VAPID, too large).
    pub rejected: u64,
    /// 429, or Microsoft's 406 throttling.
    pub rate_limited: u64,
    /// 5xx (and 408).
    pub server_errors: u64,
    /// Timeouts and failed or reset connections.
    pub network_errors: u64,
}

/// One push service origin as this process has seen it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushServiceHealth {
    /// `https://host[:port]`.
    pub origin: String,
    /// Requests answered or failed.
    pub requests: u64,
    /// Accepted (2xx).
    pub delivered: u64,
    /// 404 or 410: the subscription is gone.
    pub gone: u64,
    /// Errors by class.
    pub errors: ErrorCounts,
    /// Median latency, ms (the upper bound of its power-of-two bucket).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms (likewise).
    pub p99_ms: Option<f64>,
    /// Seconds this origin is still held back by a `Retry-After`, if it is.
    pub backoff_seconds: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let stats = OriginStats::default();
        assert_eq!(stats.snapshot("o", Duration::ZERO).p50_ms, None);
        let ok = Outcome::Delivered { status: 201 };
        for _ in 0..98 {
            stats.record(&ok, Duration::from_micros(700)); // ≤ 1 ms
        }
        stats.record(&ok, Duration::from_millis(3)); // ≤ 4 ms
        stats.record(&Outcome::Retry { reason: RetryReason::RateLimited, after: None }, Duration::from_millis(100));
        let s = stats.snapshot("o", Duration::from_secs(3));
        assert_eq!((s.requests, s.delivered, s.errors.rate_limited), (100, 99, 1));
        assert_eq!((s.p50_ms, s.p99_ms), (Some(1.0), Some(4.0)));
        assert_eq!(s.backoff_seconds, Some(3.0));
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
    }
}
