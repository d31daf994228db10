//! A/B tests: the engine's two steps of a test's message. When it is due
//! (now, or at its `sendAt`) its variants' messages are stored, each to
//! its share of the sample; at `decideAfter` from then, the winner is
//! chosen from their counts ([`tocsin_store_api::tocsin_audience::rules::ab::decide`])
//! and its message to the rest is stored. Each step is one
//! [`tocsin_store_api::WorkStore::advance_ab_test`], under the message's
//! state: two nodes that take it at once store its parts once.

use tocsin_store_api::tocsin_audience::rules::ab::{self, Arm, Decision, SampleSlice, SlicePart};
use tocsin_store_api::{
    AbPart, AbPayload, AbPayloads, AbStep, AbTest, Message, MessageState, NewMessage, StoreError, Target,
};

use super::lane::Lane;
use super::Engine;

impl Engine {
    /// Takes a due A/B test's message one step on.
    pub(super) async fn advance_ab_test(&self, lane: &Lane, m: Message, test: AbTest) -> Result<(), StoreError> {
        let now = self.now_ms();
        let payloads = AbPayloads::from_stored(m.accepted.payload.as_deref());
        let (test, state, send_at, children) = match (test.decide_at, payloads) {
            (_, Err(e)) => {
                // Nothing of it can be sent; say why, once, and end it.
                tracing::error!(message = %m.id(), error = %e, "an A/B test's payloads cannot be read");
                let decision = Decision {
                    chi_squared: None,
                    p_value: None,
                    best: None,
                    winner: None,
                    sent: None,
                    reason: format!("not run: {e}"),
                };
                (
                    AbTest { decide_at: Some(now), decision: Some(decision), ..test },
                    MessageState::Done,
                    m.accepted.send_at,
                    Vec::new(),
                )
            }
            (None, Ok(payloads)) => {
                let count = u8::try_from(test.variants.len()).unwrap_or(u8::MAX);
                let children = (0..count)
                    .zip(&payloads.variants)
                    .filter_map(|(index, p)| {
                        let part = SlicePart::Variant { index, count };
                        part_message(&m, &test, index, part, p, now)
                    })
                    .collect();
                let decide_at = now.saturating_add(test.settings.decide_after.ms());
                (AbTest { decide_at: Some(decide_at), ..test }, MessageState::Scheduled, Some(decide_at), children)
            }
            (Some(_), Ok(payloads)) => {
                let mut arms = Vec::with_capacity(test.variants.len());
                for id in &test.variants {
                    let id = id.clone();
                    let variant = lane.db(move |s| async move { s.message(&id).await }).await?;
                    arms.push(variant.map_or(Arm::default(), |v| v.counts.arm(test.settings.metric)));
                }
                let decision = ab::decide(&test.settings, &arms);
                let children = decision
                    .sent
                    .filter(|_| test.settings.sample_percent < 100)
                    .and_then(|i| Some((u8::try_from(i).ok()?, payloads.winners.get(i)?)))
                    .and_then(|(i, p)| part_message(&m, &test, i, SlicePart::Rest, p, now))
                    .into_iter()
                    .collect();
                (AbTest { decision: Some(decision), ..test }, MessageState::Done, m.accepted.send_at, children)
            }
        };
        let said = match &test.decision {
            Some(d) => format!("A/B test decided: {}", d.reason),
            None => format!("A/B test sending its {} variants", test.variants.len()),
        };
        let mut rules = m.accepted.rules.clone();
        rules.ab = Some(test);
        let step = AbStep { from: (m.state, m.accepted.send_at), rules, state, send_at, children };
        let id = m.id().to_owned();
        if lane.db(move |s| async move { s.advance_ab_test(&id, &step, now).await }).await? {
            tracing::info!(message = %m.id(), node = %self.config.node_id, "{said}");
            self.wake.notify_waiters();
        }
        Ok(())
    }
}

/// The message of variant `index` of test `m`: to its share of the sample
/// (`part` a variant), or, as the winner, to the rest.
fn part_message(
    m: &Message,
    test: &AbTest,
    index: u8,
    part: SlicePart,
    payload: &AbPayload,
    now: i64,
) -> Option<NewMessage> {
    let rest = part == SlicePart::Rest;
    let id = if rest { test.winners.get(usize::from(index))? } else { test.variants.get(usize::from(index))? };
    let (bytes, apple) = payload.bytes().ok()?;
    let mut rules = m.accepted.rules.clone();
    rules.ab = None;
    rules.ab_part = Some(AbPart { parent: m.id().to_owned(), variant: index, rest });
    let slice = SampleSlice { seed: test.seed, percent: test.settings.sample_percent, part };
    Some(NewMessage {
        payload: bytes,
        format: m.accepted.format,
        apple_payload: apple,
        personal: payload.personal,
        ttl: m.accepted.ttl,
        urgency: m.accepted.urgency.clone(),
        topic: m.accepted.topic.clone(),
        rules,
        ..NewMessage::new(
            id.clone(),
            m.app_id(),
            Target::Sample { of: Box::new(m.accepted.target.clone()), slice },
            now,
        )
    })
}
