//! The storage contract of A/B tests: a sample's slices split an audience
//! the same way on every store (and as [`SampleSlice::contains`] says); a
//! test's message moves on once, storing its parts with it; its parts are
//! not listed; a cancel reaches them.

use crate::testutil::{new, on_every_store, TestResult};
use crate::tocsin_audience::rules::ab::{AbMetric, AbSettings, IfNoWinner, SampleSlice, SlicePart};
use crate::tocsin_audience::rules::Window;
use crate::*;

use super::{message_in, readable};

fn slice(seed: i64, part: SlicePart) -> Target {
    Target::Sample { of: Box::new(Target::All(true)), slice: SampleSlice { seed, percent: 40, part } }
}

#[tokio::test]
async fn a_sample_splits_the_audience_alike_on_every_store() -> TestResult {
    on_every_store(async |store, key| {
        let subs: Vec<NewSubscription> = (0..300)
            .map(|i| new(&format!("https://push.example.net/ab/{i}"), None, None, key))
            .collect::<std::result::Result<_, _>>()?;
        let ids: Vec<i64> = store.upsert_subscriptions(&subs, 1).await?.into_iter().map(|s| s.id).collect();
        let seed = 1_234_567_890;
        let mut parts: Vec<SlicePart> = (0..3).map(|index| SlicePart::Variant { index, count: 3 }).collect();
        parts.push(SlicePart::Rest);
        let mut seen = Vec::new();
        for part in parts {
            let target = slice(seed, part);
            let page = readable(store.page_subscriptions(AppId::DEFAULT, &target, None, 0, None, 1000).await?);
            let got: Vec<i64> = page.iter().map(|s| s.id).collect();
            let want: Vec<i64> =
                ids.iter().copied().filter(|&id| SampleSlice { seed, percent: 40, part }.contains(id)).collect();
            assert_eq!(got, want, "{part:?}: the store's split is the hash's");
            assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target).await?, want.len() as i64);
            assert!(!got.is_empty(), "{part:?}");
            seen.extend(got);
        }
        seen.sort_unstable();
        assert_eq!(seen, ids, "the parts cover the audience once");
        // A sample of an expression is a part of that expression's audience.
        let of = Target::Where(Condition::parse("language == \"fr\"")?);
        let target =
            Target::Sample { of: Box::new(of), slice: SampleSlice { seed, percent: 40, part: SlicePart::Rest } };
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target).await?, 0);
        Ok(())
    })
    .await
}

fn test_of(variants: usize) -> AbTest {
    AbTest {
        settings: AbSettings {
            sample_percent: 40,
            decide_after: Window::parse("1h").expect("a window"),
            metric: AbMetric::Clicked,
            if_no_winner: IfNoWinner::Stop,
        },
        seed: 7,
        variants: (0..variants).map(|i| format!("t-v{i}")).collect(),
        winners: (0..variants).map(|i| format!("t-w{i}")).collect(),
        decide_at: None,
        decision: None,
    }
}

fn part(parent: &str, variant: u8, rest: bool) -> NewMessage {
    let id = if rest { format!("{parent}-w{variant}") } else { format!("{parent}-v{variant}") };
    NewMessage {
        rules: MessageRules {
            ab_part: Some(AbPart { parent: parent.into(), variant, rest }),
            ..MessageRules::default()
        },
        ..message_in(AppId::DEFAULT, &id, Target::All(true), None)
    }
}

#[tokio::test]
async fn a_test_moves_on_once_with_its_parts_and_a_cancel_reaches_them() -> TestResult {
    on_every_store(async |store, _key| {
        let at = 1_000;
        let parent = NewMessage {
            send_at: Some(at),
            rules: MessageRules { ab: Some(test_of(2)), ..MessageRules::default() },
            ..message_in(AppId::DEFAULT, "t", Target::All(true), None)
        };
        store.insert_message(&parent).await?;
        let m = store.next_startable_message(at).await?.ok_or("the test is due")?;
        assert_eq!(m.id(), "t");
        let mut rules = m.accepted.rules.clone();
        rules.ab.as_mut().ok_or("ab")?.decide_at = Some(at + 3_600_000);
        let step = AbStep {
            from: (m.state, m.accepted.send_at),
            rules: rules.clone(),
            state: MessageState::Scheduled,
            send_at: Some(at + 3_600_000),
            children: vec![part("t", 0, false), part("t", 1, false)],
        };
        assert!(store.advance_ab_test("t", &step, at).await?);
        assert!(!store.advance_ab_test("t", &step, at).await?, "a second node's step writes nothing");
        let m = store.message("t").await?.ok_or("t")?;
        assert_eq!((m.state, m.accepted.send_at), (MessageState::Scheduled, Some(at + 3_600_000)));
        assert_eq!(m.accepted.rules, rules);
        let v0 = store.message("t-v0").await?.ok_or("a variant's message")?;
        assert_eq!(v0.state, MessageState::Queued);
        assert_eq!(v0.accepted.rules.ab_part.as_ref().map(|p| p.parent.as_str()), Some("t"));
        // Lists show the test, not its parts.
        let listed: Vec<String> =
            store.list_messages(AppId::DEFAULT, None, 10).await?.iter().map(|m| m.id().to_owned()).collect();
        assert_eq!(listed, ["t"]);
        assert!(store.next_startable_message(at + 1).await?.is_some_and(|m| m.id().starts_with("t-v")));
        // A cancel of the test reaches its parts; a step after it writes nothing.
        let c = store.cancel_message(AppId::DEFAULT, "t", at + 2).await?.ok_or("t")?;
        assert_eq!(c.state, MessageState::Cancelled);
        for id in ["t-v0", "t-v1"] {
            assert_eq!(store.message(id).await?.ok_or(id)?.state, MessageState::Cancelled, "{id}");
        }
        let late = AbStep {
            from: (MessageState::Scheduled, Some(at + 3_600_000)),
            children: vec![part("t", 0, true)],
            state: MessageState::Done,
            ..step
        };
        assert!(!store.advance_ab_test("t", &late, at + 3).await?);
        assert!(store.message("t-w0").await?.is_none());
        assert!(store.next_startable_message(i64::MAX / 2).await?.is_none());

        // A test's message without a sendAt (not one the API stores) moves
        // on too, rather than stay due for ever.
        let bare = NewMessage {
            rules: MessageRules { ab: Some(test_of(2)), ..MessageRules::default() },
            ..message_in(AppId::DEFAULT, "u", Target::All(true), None)
        };
        store.insert_message(&bare).await?;
        let m = store.message("u").await?.ok_or("u")?;
        let step = AbStep {
            from: (m.state, m.accepted.send_at),
            rules: m.accepted.rules.clone(),
            state: MessageState::Done,
            send_at: None,
            children: Vec::new(),
        };
        assert!(store.advance_ab_test("u", &step, at).await?);
        assert_eq!(store.message("u").await?.ok_or("u")?.state, MessageState::Done);
        Ok(())
    })
    .await
}
