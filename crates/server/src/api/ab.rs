//! A/B tests in `POST /v1/messages` (`variants` with `abTest`): the
//! request checked, the parts' payloads made (each variant's, and the
//! winner's message's for each variant, every one stamped with its own
//! message id and event token, so that each part has its own funnel), and
//! the test's view with each variant's funnel, the p-value and the reason.

use serde::Serialize;
use serde_json::Value;
use tocsin_store_api::tocsin_audience::rules::ab::{self, AbSettings, SampleSlice, MAX_VARIANTS, MIN_VARIANTS};
use tocsin_store_api::{AbPayload, AbPayloads, AbTest, Counts, Message, MessageFormat, MessageState, Store};
use url::Url;
use utoipa::ToSchema;

use super::payload;
use super::views::{rfc3339, CountsView};
use crate::error::{ApiError, ErrorId};
use crate::proof::EventTokens;

fn refused(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorId::InvalidAbTest, m.into())
}

/// An A/B test's settings and payloads, as its message stores them.
pub(crate) struct NewTest {
    pub(crate) test: AbTest,
    pub(crate) payloads: AbPayloads,
}

/// Reads `variants` and `abTest`, and makes each part's payloads in
/// `format` (stamped for app `app`, when not `default`).
pub(crate) fn new_test(
    variants: Vec<Value>,
    settings: Value,
    format: MessageFormat,
    app: Option<&str>,
    tokens: &EventTokens,
    public_url: Option<&Url>,
) -> Result<NewTest, ApiError> {
    if !(MIN_VARIANTS..=MAX_VARIANTS).contains(&variants.len()) {
        return Err(refused(ab::AbError::Count.to_string()));
    }
    let settings = AbSettings::from_json(settings).map_err(|e| refused(e.to_string()))?;
    let mut seed = [0u8; 8];
    aws_lc_rs::rand::fill(&mut seed).map_err(|_| ApiError::new(ErrorId::NoRandomness, "cannot draw a seed"))?;
    let seed = i64::try_from(u64::from_le_bytes(seed) % SampleSlice::PRIME.unsigned_abs()).unwrap_or(0);
    let part = |value: &Value| -> Result<(String, AbPayload), ApiError> {
        let id = super::input::new_id()?;
        let stamp = payload::Stamp { id: id.clone(), event_token: tokens.token(&id), app: app.map(str::to_owned) };
        let built = payload::build(format, Some(value.clone()), &stamp, public_url)?;
        Ok((id, AbPayload::new(built.payload.as_deref(), built.apple_payload.as_deref(), built.personal)))
    };
    let (mut test, mut payloads) = (
        AbTest { settings, seed, variants: Vec::new(), winners: Vec::new(), decide_at: None, decision: None },
        AbPayloads { variants: Vec::new(), winners: Vec::new() },
    );
    for v in &variants {
        if v.is_null() {
            return Err(refused("variants: each is a payload, not null"));
        }
        let (id, p) = part(v)?;
        test.variants.push(id);
        payloads.variants.push(p);
        let (id, p) = part(v)?;
        test.winners.push(id);
        payloads.winners.push(p);
    }
    Ok(NewTest { test, payloads })
}

/// An A/B test as the message view shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbTestView {
    /// The share of the audience the variants went to, in percent.
    pub(crate) sample_percent: u8,
    /// How long after the variants started the winner is chosen.
    pub(crate) decide_after: String,
    /// `clicked` or `shown`: per delivered, what makes a variant better.
    pub(crate) metric: &'static str,
    /// `send-best` or `stop`.
    pub(crate) if_no_winner: &'static str,
    /// `waiting` (for `sendAt`), `testing`, `decided` (a variant won, or
    /// went to the rest) or `stopped` (neither).
    pub(crate) stage: &'static str,
    /// When the winner is (or was) chosen (RFC 3339).
    pub(crate) decide_at: Option<String>,
    /// Each variant (`A`, `B`, …) with its message and funnel.
    pub(crate) variants: Vec<AbPartView>,
    /// The winner's message to the rest of the audience, once sent.
    pub(crate) rest: Option<AbPartView>,
    /// Pearson's chi-squared over the variants delivered to.
    pub(crate) chi_squared: Option<f64>,
    /// Its p-value; the best variant wins when it is below 0.05.
    pub(crate) p_value: Option<f64>,
    /// The variant that won (significantly), if one did.
    pub(crate) winner: Option<String>,
    /// The variant with the best rate.
    pub(crate) best: Option<String>,
    /// The variant the rest got: the winner, or the best with `send-best`.
    pub(crate) sent: Option<String>,
    /// Why, in a sentence.
    pub(crate) reason: Option<String>,
}

/// One part of an A/B test: a variant's message, or the winner's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbPartView {
    /// `A`, `B`, …
    pub(crate) variant: String,
    /// Its own message (`/v1/messages/{id}`).
    pub(crate) message_id: String,
    /// Its state; absent before the engine stores it.
    pub(crate) state: Option<String>,
    /// Its funnel: targeted, delivered, shown, clicked, ….
    pub(crate) counts: CountsView,
    /// The test's metric per delivered (0 to 1).
    pub(crate) rate: f64,
}

/// What an A/B test's part says of the test (in its own view).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbPartOfView {
    /// The test's message.
    pub(crate) message_id: String,
    /// `A`, `B`, …
    pub(crate) variant: String,
    /// The winner's message to the rest (else a variant's, to the sample).
    pub(crate) rest: bool,
}

impl From<&tocsin_store_api::AbPart> for AbPartOfView {
    fn from(p: &tocsin_store_api::AbPart) -> Self {
        Self { message_id: p.parent.clone(), variant: ab::letter(usize::from(p.variant)).into(), rest: p.rest }
    }
}

/// A test's view, and the state and counts its message shows: its parts'
/// counts summed, and `sending` until its parts are done.
pub(crate) async fn view(
    store: &dyn Store,
    m: &Message,
    test: &AbTest,
) -> Result<(AbTestView, Counts, String), tocsin_store_api::StoreError> {
    let metric = test.settings.metric;
    let mut total = Counts::default();
    let (mut all_done, mut any_cancelled) = (true, false);
    let mut part = async |i: usize, id: &str| -> Result<AbPartView, tocsin_store_api::StoreError> {
        let p = store.message(id).await?;
        let counts = p.as_ref().map(|p| p.counts).unwrap_or_default();
        all_done &= p.as_ref().is_none_or(|p| matches!(p.state, MessageState::Done | MessageState::Cancelled));
        any_cancelled |= p.as_ref().is_some_and(|p| p.state == MessageState::Cancelled);
        total += counts;
        Ok(AbPartView {
            variant: ab::letter(i).into(),
            message_id: id.to_owned(),
            state: p.map(|p| p.state.as_str().to_owned()),
            counts: counts.into(),
            rate: counts.arm(metric).rate(),
        })
    };
    let mut variants = Vec::with_capacity(test.variants.len());
    for (i, id) in test.variants.iter().enumerate() {
        variants.push(part(i, id).await?);
    }
    let decision = test.decision.as_ref();
    let rest = match decision.and_then(|d| d.sent).filter(|_| test.settings.sample_percent < 100) {
        Some(i) => match test.winners.get(i) {
            Some(id) => Some(part(i, id).await?),
            None => None,
        },
        None => None,
    };
    let letter = |i: Option<usize>| i.map(|i| ab::letter(i).to_string());
    let state = match (m.state, test.stage()) {
        (MessageState::Cancelled, _) => "cancelled",
        (s, "waiting") => s.as_str(),
        (_, "testing") => "sending",
        _ if all_done && any_cancelled => "cancelled",
        _ if all_done => "done",
        _ => "sending",
    };
    let view = AbTestView {
        sample_percent: test.settings.sample_percent,
        decide_after: test.settings.decide_after.to_string(),
        metric: metric.as_str(),
        if_no_winner: match test.settings.if_no_winner {
            ab::IfNoWinner::SendBest => "send-best",
            ab::IfNoWinner::Stop => "stop",
        },
        stage: test.stage(),
        decide_at: test.decide_at.map(rfc3339),
        variants,
        rest,
        chi_squared: decision.and_then(|d| d.chi_squared),
        p_value: decision.and_then(|d| d.p_value),
        winner: letter(decision.and_then(|d| d.winner)),
        best: letter(decision.and_then(|d| d.best)),
        sent: letter(decision.and_then(|d| d.sent)),
        reason: decision.map(|d| d.reason.clone()),
    };
    Ok((view, total, state.to_owned()))
}
