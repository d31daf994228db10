//! The engine's retry policy, as a pure function: what becomes of a
//! delivery that was held back by its push service's `Retry-After`, or
//! answered "try again" (429, 406, 5xx, a timeout, a network error).

use std::time::Duration;

/// What a push service did with a delivery that is not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unfinished<'a> {
    /// Not sent: the push service's origin is held back for `wait` (an
    /// earlier `Retry-After`). It does not count as an attempt.
    Deferred { wait: Duration },
    /// Sent and answered "try again", for `reason`, after `after` when the
    /// push service said so (already bounded by the message's TTL).
    Retry { reason: &'a str, after: Option<Duration> },
}

/// What becomes of the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Tried again at `due_at` (ms since the epoch), as attempt `attempt`
    /// (the attempts made so far), for `reason`.
    Later { due_at: i64, attempt: i64, reason: String },
    /// Given up, counted as failed for `reason`, with `detail` as its
    /// example.
    GiveUp { reason: String, detail: String },
}

/// Decides, at `now`, for a delivery already attempted `attempts_before`
/// times whose message may be sent until `deadline` (its TTL, ms since the
/// epoch). A retry waits `Retry-After` when given, else `backoff(n)` for
/// retry number `n` (doubling, with jitter); after `max_attempts` attempts
/// it is given up as `retries-exhausted-<reason>`, and a wait past the
/// deadline as `ttl-expired`.
pub(super) fn next(
    unfinished: Unfinished<'_>,
    attempts_before: i64,
    max_attempts: u32,
    backoff: impl FnOnce(u32) -> Duration,
    now: i64,
    deadline: i64,
) -> Next {
    match unfinished {
        Unfinished::Deferred { wait } => {
            let due_at = now.saturating_add(millis(wait));
            if due_at > deadline {
                return Next::GiveUp {
                    reason: "ttl-expired".into(),
                    detail: "its TTL ran out while its push service held it back".into(),
                };
            }
            Next::Later { due_at, attempt: attempts_before, reason: "deferred".into() }
        }
        Unfinished::Retry { reason, after } => {
            let attempts = attempts_before.saturating_add(1);
            if attempts >= i64::from(max_attempts) {
                return Next::GiveUp {
                    reason: format!("retries-exhausted-{reason}"),
                    detail: format!("{attempts} attempts, the last: {reason}"),
                };
            }
            let wait = after.unwrap_or_else(|| backoff(u32::try_from(attempts).unwrap_or(u32::MAX)));
            let due_at = now.saturating_add(millis(wait));
            if due_at > deadline {
                return Next::GiveUp {
                    reason: "ttl-expired".into(),
                    detail: format!("its TTL ran out before a retry ({reason})"),
                };
            }
            Next::Later { due_at, attempt: attempts, reason: reason.to_owned() }
        }
    }
}

/// A wait in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn doubling(n: u32) -> Duration {
        S * 2u32.pow(n - 1)
    }

    #[test]
    fn a_retry_waits_its_retry_after_else_the_backoff() {
        let r = |after| next(Unfinished::Retry { reason: "http-503", after }, 0, 5, doubling, 1_000, 100_000);
        assert_eq!(r(None), Next::Later { due_at: 2_000, attempt: 1, reason: "http-503".into() });
        assert_eq!(r(Some(S * 7)), Next::Later { due_at: 8_000, attempt: 1, reason: "http-503".into() });
        let third = next(Unfinished::Retry { reason: "http-429", after: None }, 2, 5, doubling, 0, 100_000);
        assert_eq!(third, Next::Later { due_at: 4_000, attempt: 3, reason: "http-429".into() });
    }

    #[test]
    fn attempts_run_out_at_the_maximum() {
        let last = next(Unfinished::Retry { reason: "timeout", after: None }, 4, 5, doubling, 0, i64::MAX);
        assert_eq!(
            last,
            Next::GiveUp { reason: "retries-exhausted-timeout".into(), detail: "5 attempts, the last: timeout".into() }
        );
        // One attempt in all: the first "retry" answer is final.
        let once = next(Unfinished::Retry { reason: "http-500", after: None }, 0, 1, doubling, 0, i64::MAX);
        assert!(matches!(once, Next::GiveUp { ref reason, .. } if reason == "retries-exhausted-http-500"), "{once:?}");
    }

    #[test]
    fn nothing_waits_past_the_ttl() {
        let late = next(Unfinished::Retry { reason: "http-503", after: Some(S * 60) }, 0, 5, doubling, 0, 59_999);
        assert_eq!(
            late,
            Next::GiveUp { reason: "ttl-expired".into(), detail: "its TTL ran out before a retry (http-503)".into() }
        );
        let on_time = next(Unfinished::Retry { reason: "http-503", after: Some(S * 60) }, 0, 5, doubling, 0, 60_000);
        assert!(matches!(on_time, Next::Later { due_at: 60_000, .. }), "{on_time:?}");
    }

    #[test]
    fn a_deferred_delivery_keeps_its_attempts() {
        let d = next(Unfinished::Deferred { wait: S * 3 }, 2, 5, doubling, 10_000, 20_000);
        assert_eq!(d, Next::Later { due_at: 13_000, attempt: 2, reason: "deferred".into() });
        let d = next(Unfinished::Deferred { wait: S * 30 }, 2, 5, doubling, 10_000, 20_000);
        assert!(matches!(d, Next::GiveUp { ref reason, .. } if reason == "ttl-expired"), "{d:?}");
    }

    #[test]
    fn times_at_the_edges_saturate() {
        let d = next(Unfinished::Deferred { wait: Duration::MAX }, 0, 5, doubling, i64::MAX - 1, i64::MAX);
        assert_eq!(d, Next::Later { due_at: i64::MAX, attempt: 0, reason: "deferred".into() });
        let r = next(Unfinished::Retry { reason: "x", after: None }, i64::MAX, 5, doubling, 0, i64::MAX);
        assert!(matches!(r, Next::GiveUp { .. }), "{r:?}");
    }
}
