//! A/B tests with a winner: a message with 2 to 8 variants is first sent
//! to a sample of its audience, split evenly among the variants; after
//! `decideAfter`, the variant with the best rate of the metric (`clicked`
//! or `shown` per delivered) wins if the difference is significant by
//! Pearson's chi-squared test at p < 0.05, and goes to the rest.
//!
//! Everything here is a value: the settings as the API reads them, the
//! split of an audience ([`SampleSlice`], computed alike in Rust and in
//! SQL), and the decision ([`decide`]).

use serde::{Deserialize, Serialize};

use super::caps::Window;

/// The fewest variants a test has.
pub const MIN_VARIANTS: usize = 2;
/// The most variants a test has (Braze's limit).
pub const MAX_VARIANTS: usize = 8;
/// The significance level: a difference is significant when p is below it.
pub const ALPHA: f64 = 0.05;

/// What a variant is judged by, per delivered notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbMetric {
    /// Notifications clicked.
    Clicked,
    /// Notifications shown.
    Shown,
}

impl AbMetric {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clicked => "clicked",
            Self::Shown => "shown",
        }
    }
}

/// What the rest of the audience gets when no variant is significantly
/// better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IfNoWinner {
    /// The variant with the best rate all the same.
    SendBest,
    /// Nothing: the test ends with its sample.
    Stop,
}

/// An A/B test's settings (`"abTest"` of `POST /v1/messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbSettings {
    /// The share of the audience the variants go to, in percent (1–100;
    /// 100 leaves no rest to send the winner to).
    pub sample_percent: u8,
    /// How long after the variants start the winner is chosen (`30m`,
    /// `1h`, `1d`; from one minute to 30 days).
    pub decide_after: Window,
    /// What makes a variant better.
    pub metric: AbMetric,
    /// What happens when no variant is significantly better.
    pub if_no_winner: IfNoWinner,
}

/// Why an A/B test's settings or variants were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbError {
    /// Not the shape of the settings; serde's words.
    #[error("abTest: {0}")]
    Shape(String),
    /// A sample of 0 % or over 100 %.
    #[error("abTest.samplePercent: from 1 to 100")]
    Percent,
    /// Fewer than 2 or more than 8 variants.
    #[error("variants: from {MIN_VARIANTS} to {MAX_VARIANTS}")]
    Count,
}

impl AbSettings {
    /// Reads and checks settings from JSON.
    pub fn from_json(value: serde_json::Value) -> Result<Self, AbError> {
        let settings: Self = serde_json::from_value(value).map_err(|e| AbError::Shape(e.to_string()))?;
        if !(1..=100).contains(&settings.sample_percent) {
            return Err(AbError::Percent);
        }
        Ok(settings)
    }
}

/// Which part of an audience a [`SampleSlice`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SlicePart {
    /// The sample's share of one variant: `index` of `count`.
    Variant {
        /// Which variant (from 0).
        index: u8,
        /// How many variants share the sample.
        count: u8,
    },
    /// Everyone outside the sample.
    Rest,
}

/// A part of an audience chosen by a hash of the subscription id: the
/// same for a subscription whenever it is asked, on every store.
///
/// The hash is `z` of [`SampleSlice::mix`]: modular arithmetic that stays
/// below 2^62 at every step, so that SQLite (whose integers turn to floats
/// on overflow) and PostgreSQL (which refuses overflow) compute the same
/// value as Rust. Its low four decimal digits place a subscription in or
/// out of the sample (basis points), the rest picks its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleSlice {
    /// Drawn per test, so that two tests split an audience differently
    /// (0 ≤ seed < [`SampleSlice::PRIME`]).
    pub seed: i64,
    /// The sample's share of the audience, in percent.
    pub percent: u8,
    /// Which part this is.
    pub part: SlicePart,
}

impl SampleSlice {
    /// 2^31 − 1: every value below it squares below 2^62.
    pub const PRIME: i64 = 2_147_483_647;
    /// The first multiplier (a primitive root of [`Self::PRIME`]).
    pub const A: i64 = 48_271;
    /// The last multiplier (another primitive root).
    pub const B: i64 = 16_807;
    /// Added to the square.
    pub const C: i64 = 12_345;
    /// The buckets of the sample split: basis points.
    pub const BUCKETS: i64 = 10_000;

    /// The hash of subscription `id` under `seed`: `x = (id % P · A + seed) % P`,
    /// `y = (x² + C) % P`, `z = (y · B + seed) % P`. `%` truncates as SQL's does.
    pub fn mix(id: i64, seed: i64) -> i64 {
        let p = Self::PRIME;
        let x = ((id % p) * Self::A + seed) % p;
        let y = (x * x + Self::C) % p;
        (y * Self::B + seed) % p
    }

    /// Whether subscription `id` is in this part.
    pub fn contains(&self, id: i64) -> bool {
        let z = Self::mix(id, self.seed);
        let in_sample = z % Self::BUCKETS < i64::from(self.percent) * 100;
        match self.part {
            SlicePart::Rest => !in_sample,
            SlicePart::Variant { index, count } => {
                in_sample && (z / Self::BUCKETS) % i64::from(count.max(1)) == i64::from(index)
            }
        }
    }
}

/// One variant's results so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arm {
    /// Notifications accepted by the push services.
    pub delivered: i64,
    /// Of those, shown or clicked (by the test's metric).
    pub converted: i64,
}

impl Arm {
    /// The rate of the metric per delivered (0 with nothing delivered).
    pub fn rate(&self) -> f64 {
        if self.delivered <= 0 {
            return 0.0;
        }
        self.converted.clamp(0, self.delivered) as f64 / self.delivered as f64
    }
}

/// The outcome of a test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Pearson's chi-squared statistic over the variants delivered to
    /// (absent when no test could be made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chi_squared: Option<f64>,
    /// Its p-value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The variant with the best rate (the first on a tie); absent when
    /// none was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<usize>,
    /// The best variant, when it is significantly better (p < 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<usize>,
    /// The variant the rest of the audience gets: the winner, or the best
    /// with `ifNoWinner: send-best`; absent with `stop`, and when the
    /// sample was the whole audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<usize>,
    /// Why, in a sentence.
    pub reason: String,
}

/// The letter of variant `i` (A, B, …) in sentences.
pub fn letter(i: usize) -> char {
    char::from(b'A' + u8::try_from(i % 26).unwrap_or(0))
}

/// Chooses the winner of a test from its variants' results, in order.
pub fn decide(settings: &AbSettings, arms: &[Arm]) -> Decision {
    let metric = settings.metric.as_str();
    let best = arms
        .iter()
        .enumerate()
        .filter(|(_, a)| a.delivered > 0)
        .fold(None::<(usize, f64)>, |best, (i, a)| match best {
            Some((_, r)) if r >= a.rate() => best,
            _ => Some((i, a.rate())),
        })
        .map(|(i, _)| i);
    let test = chi_squared(arms);
    let p_value = test.map(|(x, df)| chi_squared_sf(x, df));
    let winner = best.filter(|_| p_value.is_some_and(|p| p < ALPHA));
    let whole = settings.sample_percent >= 100;
    let sent = winner.or(match settings.if_no_winner {
        IfNoWinner::SendBest => best,
        IfNoWinner::Stop => None,
    });
    let sent = sent.filter(|_| !whole);
    let rate = |i: usize| arms[i].rate() * 100.0;
    let p_text = |p: f64| if p < 0.0001 { "p < 0.0001".to_owned() } else { format!("p = {p:.4}") };
    let reason = match (winner, best, p_value) {
        (Some(w), _, Some(p)) => format!(
            "variant {} won: {metric} {:.1} % of delivered, and the difference is significant at the {ALPHA} level ({})",
            letter(w),
            rate(w),
            p_text(p)
        ),
        (None, None, _) => "no variant was delivered to".to_owned(),
        (None, Some(_), None) => {
            format!("nothing to compare: {metric} none or all of the deliveries, or only one variant was delivered to")
        }
        (None, Some(b), Some(p)) => format!(
            "no significant difference at the {ALPHA} level ({}); variant {} had the best rate, {metric} {:.1} % of delivered",
            p_text(p),
            letter(b),
            rate(b)
        ),
        (Some(_), _, None) => String::new(),
    };
    let reason = match (winner, sent) {
        _ if whole => format!("{reason}; the sample was the whole audience: there is no rest to send to"),
        (None, Some(s)) => format!("{reason}; sent variant {} to the rest (ifNoWinner: send-best)", letter(s)),
        (None, None) if best.is_some() => format!("{reason}; the rest gets nothing (ifNoWinner: stop)"),
        _ => reason,
    };
    Decision { chi_squared: test.map(|(x, _)| x), p_value, best, winner, sent, reason }
}

/// Pearson's chi-squared statistic of the k×2 table (converted or not, by
/// variant) over the variants delivered to, and its degrees of freedom;
/// `None` when there is nothing to test (fewer than two such variants, or
/// none or all of the deliveries converted: an expected count of 0).
pub fn chi_squared(arms: &[Arm]) -> Option<(f64, u32)> {
    let rows: Vec<(f64, f64)> = arms
        .iter()
        .filter(|a| a.delivered > 0)
        .map(|a| {
            let converted = a.converted.clamp(0, a.delivered);
            (converted as f64, (a.delivered - converted) as f64)
        })
        .collect();
    if rows.len() < 2 {
        return None;
    }
    let yes: f64 = rows.iter().map(|r| r.0).sum();
    let no: f64 = rows.iter().map(|r| r.1).sum();
    let total = yes + no;
    if yes == 0.0 || no == 0.0 {
        return None;
    }
    let x = rows
        .iter()
        .map(|&(y, n)| {
            let row = y + n;
            let (ey, en) = (row * yes / total, row * no / total);
            (y - ey).powi(2) / ey + (n - en).powi(2) / en
        })
        .sum();
    Some((x, u32::try_from(rows.len() - 1).unwrap_or(u32::MAX)))
}

/// P(X ≥ x) for X chi-squared with `df` degrees of freedom (1 ≤ df; a test
/// of up to 8 variants has at most 7), by the closed forms for whole
/// degrees of freedom: a Poisson sum for even `df`, the normal tail plus a
/// sum for odd. Written out rather than taken from a statistics crate: the
/// one that has it (statrs) brings a linear-algebra stack for one function.
pub fn chi_squared_sf(x: f64, df: u32) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    let half = x / 2.0;
    let p = if df.is_multiple_of(2) {
        // e^{-x/2} Σ_{i<df/2} (x/2)^i / i!
        let mut term = 1.0;
        let mut sum = 1.0;
        for i in 1..df / 2 {
            term *= half / f64::from(i);
            sum += term;
        }
        (-half).exp() * sum
    } else {
        // erfc(√(x/2)) + √(2x/π) e^{-x/2} Σ_{1≤i≤(df-1)/2} x^{i-1} / (1·3·…·(2i−1))
        let mut term = (2.0 * x / std::f64::consts::PI).sqrt() * (-half).exp();
        let mut sum = 0.0;
        for i in 1..=(df - 1) / 2 {
            if i > 1 {
                term *= x / f64::from(2 * i - 1);
            }
            sum += term;
        }
        libm::erfc(half.sqrt()) + sum
    };
    p.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(if_no_winner: IfNoWinner) -> AbSettings {
        AbSettings {
            sample_percent: 20,
            decide_after: Window::parse("1h").unwrap(),
            metric: AbMetric::Clicked,
            if_no_winner,
        }
    }

    #[test]
    fn the_tail_matches_the_tables_critical_values() {
        // The 5 % critical values of the chi-squared distribution, df 1–7.
        for (df, x) in
            [(1, 3.841459), (2, 5.991465), (3, 7.814728), (4, 9.487729), (5, 11.0705), (6, 12.59159), (7, 14.06714)]
        {
            let p = chi_squared_sf(x, df);
            assert!((p - 0.05).abs() < 1e-5, "df {df}: {p}");
        }
        // And the 1 % ones.
        for (df, x) in [(1, 6.634897), (2, 9.21034), (3, 11.34487), (7, 18.47531)] {
            assert!((chi_squared_sf(x, df) - 0.01).abs() < 1e-6);
        }
        assert_eq!(chi_squared_sf(0.0, 3), 1.0);
        assert_eq!(chi_squared_sf(f64::NAN, 3), 1.0);
        assert!(chi_squared_sf(1e6, 7) < 1e-100);
    }

    #[test]
    fn the_statistic_is_pearsons() {
        // 2×2: 10/100 against 30/100: expected 20 and 80 in each row,
        // χ² = 2·(100/20 + 100/80) = 12.5.
        let arms = [Arm { delivered: 100, converted: 10 }, Arm { delivered: 100, converted: 30 }];
        let (x, df) = chi_squared(&arms).unwrap();
        assert!((x - 12.5).abs() < 1e-9);
        assert_eq!(df, 1);
        // Nothing to test: no conversions, all conversions, one variant.
        assert_eq!(chi_squared(&[Arm { delivered: 5, converted: 0 }, Arm { delivered: 5, converted: 0 }]), None);
        assert_eq!(chi_squared(&[Arm { delivered: 5, converted: 5 }, Arm { delivered: 5, converted: 9 }]), None);
        assert_eq!(chi_squared(&[Arm { delivered: 5, converted: 1 }, Arm::default()]), None);
    }

    #[test]
    fn a_significant_difference_wins_and_a_small_one_does_not() {
        let arms = [Arm { delivered: 100, converted: 10 }, Arm { delivered: 100, converted: 30 }];
        let d = decide(&settings(IfNoWinner::Stop), &arms);
        assert_eq!((d.best, d.winner, d.sent), (Some(1), Some(1), Some(1)));
        assert!(d.p_value.unwrap() < 0.001, "{d:?}");
        assert!(d.reason.starts_with("variant B won"), "{}", d.reason);

        let close = [Arm { delivered: 100, converted: 10 }, Arm { delivered: 100, converted: 12 }, Arm::default()];
        let d = decide(&settings(IfNoWinner::SendBest), &close);
        assert_eq!((d.best, d.winner, d.sent), (Some(1), None, Some(1)));
        assert!(d.p_value.unwrap() > 0.05);
        assert!(d.reason.contains("send-best"), "{}", d.reason);
        let d = decide(&settings(IfNoWinner::Stop), &close);
        assert_eq!((d.best, d.winner, d.sent), (Some(1), None, None));
        assert!(d.reason.contains("stop"), "{}", d.reason);

        // A sample of the whole audience: a winner, and no rest to send it to.
        let whole = AbSettings { sample_percent: 100, ..settings(IfNoWinner::SendBest) };
        let d = decide(&whole, &arms);
        assert_eq!((d.winner, d.sent), (Some(1), None));
        assert!(d.reason.contains("no rest"), "{}", d.reason);

        // Nothing delivered; nothing clicked (the first is the best of equals).
        let d = decide(&settings(IfNoWinner::SendBest), &[Arm::default(), Arm::default()]);
        assert_eq!((d.best, d.sent, d.p_value), (None, None, None));
        let d = decide(&settings(IfNoWinner::SendBest), &[Arm { delivered: 3, converted: 0 }; 2]);
        assert_eq!((d.best, d.winner, d.sent, d.p_value), (Some(0), None, Some(0), None));
        // More clicks than deliveries (not possible in a store, but never
        // a rate above 1 or a negative count in the table).
        let d = decide(
            &settings(IfNoWinner::Stop),
            &[Arm { delivered: 3, converted: 9 }, Arm { delivered: 3, converted: -1 }],
        );
        assert_eq!(d.best, Some(0));
    }

    #[test]
    fn the_sample_is_split_evenly_and_the_rest_is_the_rest() {
        let seed = 987_654_321;
        let n = 60_000;
        for count in [2u8, 3, 8] {
            let slices: Vec<SampleSlice> = (0..count)
                .map(|index| SampleSlice { seed, percent: 30, part: SlicePart::Variant { index, count } })
                .collect();
            let rest = SampleSlice { seed, percent: 30, part: SlicePart::Rest };
            let mut sizes = vec![0i64; usize::from(count)];
            for id in 1..=n {
                let parts: Vec<usize> = (0..slices.len()).filter(|&i| slices[i].contains(id)).collect();
                assert!(parts.len() <= 1);
                match parts.first() {
                    Some(&i) => sizes[i] += 1,
                    None => assert!(rest.contains(id)),
                }
                assert!(!rest.contains(id) || parts.is_empty(), "in the rest and a variant");
            }
            let sample: i64 = sizes.iter().sum();
            assert!((sample - n * 30 / 100).abs() < n / 100, "sample {sample} of {n}");
            let even = sample / i64::from(count);
            for s in &sizes {
                assert!((s - even).abs() < even / 20, "{sizes:?}");
            }
        }
        // Another seed is another split.
        let a = SampleSlice { seed: 1, percent: 50, part: SlicePart::Rest };
        let b = SampleSlice { seed: 2, percent: 50, part: SlicePart::Rest };
        let differ = (1..1000).filter(|&id| a.contains(id) != b.contains(id)).count();
        assert!(differ > 300, "{differ}");
        // Consecutive ids do not alternate (what a plain linear map would do).
        let v = |id| SampleSlice { seed, percent: 100, part: SlicePart::Variant { index: 0, count: 2 } }.contains(id);
        let alternations = (1..2000).filter(|&id| v(id) != v(id + 1)).count();
        assert!((800..1200).contains(&alternations), "{alternations}");
        // Every step stays below 2^62 for the largest ids and seeds.
        assert!(SampleSlice::mix(i64::MAX, SampleSlice::PRIME - 1) >= 0);
        assert_eq!(SampleSlice::mix(1, 0), {
            let x = 48_271i64;
            ((x * x + 12_345) % 2_147_483_647) * 16_807 % 2_147_483_647
        });
    }

    #[test]
    fn settings_are_read_and_checked() {
        let s = AbSettings::from_json(
            json!({"samplePercent": 20, "decideAfter": "1h", "metric": "clicked", "ifNoWinner": "send-best"}),
        )
        .unwrap();
        assert_eq!(s, settings(IfNoWinner::SendBest));
        for bad in [
            json!({"samplePercent": 0, "decideAfter": "1h", "metric": "clicked", "ifNoWinner": "stop"}),
            json!({"samplePercent": 101, "decideAfter": "1h", "metric": "clicked", "ifNoWinner": "stop"}),
            json!({"samplePercent": 256, "decideAfter": "1h", "metric": "clicked", "ifNoWinner": "stop"}),
            json!({"samplePercent": 20, "decideAfter": "30s", "metric": "clicked", "ifNoWinner": "stop"}),
            json!({"samplePercent": 20, "decideAfter": "31d", "metric": "clicked", "ifNoWinner": "stop"}),
            json!({"samplePercent": 20, "decideAfter": "1h", "metric": "opened", "ifNoWinner": "stop"}),
            json!({"samplePercent": 20, "decideAfter": "1h", "metric": "clicked", "ifNoWinner": "wait"}),
            json!({"samplePercent": 20, "decideAfter": "1h", "metric": "clicked"}),
            json!({"samplePercent": 20, "decideAfter": "1h", "metric": "clicked", "ifNoWinner": "stop", "x": 1}),
            json!([]),
        ] {
            assert!(AbSettings::from_json(bad.clone()).is_err(), "{bad}");
        }
    }
}
