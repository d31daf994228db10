//! The audience's part of the contract: tags merged and bounded where
//! they are written, segments per app, and every expression reaching the
//! same subscriptions on every store as `Expr::matches` says.

use serde_json::json;
use tocsin_audience::{Expr, Language, TagPatch, TimeZoneName};

use super::{message_in, readable};
use crate::testutil::{new, on_every_store, TestResult};
use crate::*;

fn patch(v: serde_json::Value) -> TagPatch {
    TagPatch::from_json(&v).expect("a valid change")
}

const DAY: i64 = 86_400_000;

/// Subscribers of every kind an expression can tell apart: (endpoint,
/// user, topics, tags, language, time zone, days since created).
/// (endpoint, user, topics, tags, language, time zone, days since created)
type Person = (
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    serde_json::Value,
    Option<&'static str>,
    Option<&'static str>,
    i64,
);

fn people() -> Vec<Person> {
    vec![
        (
            "https://fcm.googleapis.com/fcm/send/a",
            Some("u1"),
            &["news"],
            json!({"plan": "pro", "age": 31, "vip": true, "zip:1": "x"}),
            Some("pt-BR"),
            Some("America/Sao_Paulo"),
            1,
        ),
        (
            "https://updates.push.services.mozilla.com/wpush/v2/b",
            Some("u2"),
            &["news", "sport"],
            json!({"plan": "basic", "age": 17.5, "vip": false}),
            Some("pt"),
            Some("Europe/Lisbon"),
            3,
        ),
        (
            "https://web.push.apple.com/c",
            None,
            &[],
            json!({"plan": "pro", "age": "31", "city": "Zürich"}),
            Some("en-US"),
            Some("America/New_York"),
            10,
        ),
        (
            "https://wns2-by3p.notify.windows.com/w/?token=d",
            Some("u1"),
            &["sport"],
            json!({"age": -2, "score": 1e300, "city": "Lyon"}),
            Some("fr"),
            None,
            40,
        ),
        ("https://push.example.net/e", None, &[], json!({}), None, None, 0),
        (
            "https://push.example.net/f",
            Some("u3"),
            &["news"],
            json!({"plan": "", "vip": 1, "language": "de", "a.b-c": 0}),
            Some("de-CH-1996"),
            Some("Europe/Zurich"),
            8,
        ),
        (
            "https://fcm.googleapis.com/fcm/send/g",
            None,
            &["news"],
            json!({"age": 31.0, "plan": "Pro", "city": "lyon"}),
            Some("zh-Hant-TW"),
            Some("Asia/Taipei"),
            2,
        ),
        // Text that looks like another tag inside a string, and a number
        // that starts like another: SQLite's text prefilter must not be
        // fooled by either.
        (
            "https://push.example.net/h",
            None,
            &[],
            json!({"note": "\"plan\":\"pro\" \"age\":31", "age": 310, "flag": "true"}),
            None,
            None,
            5,
        ),
    ]
}

/// Expressions over [`people`], each a different corner: missing tags,
/// other types, `!=` on the absent, code-point order, the primary subtag,
/// push services, topics, users and ages.
const EXPRESSIONS: &[&str] = &[
    r#"plan == "pro""#,
    r#"plan != "pro""#,
    r#"!(plan == "pro")"#,
    r#"plan < "pro""#,
    r#"plan >= "Pro""#,
    r#"plan == """#,
    "age >= 18",
    "age > 17",
    "age < 0",
    "age == 31",
    "age != 31",
    "score > 1e299",
    "vip == true",
    "vip != true",
    "vip == false",
    "age == 310",
    r#"note == "\"plan\":\"pro\" \"age\":31""#,
    r#"flag == "true""#,
    "flag == true",
    "has(vip)",
    "!has(plan)",
    r#"has(zip:1) && zip:1 == "x""#,
    r#"city in ["Lyon", "Zürich"]"#,
    r#"city > "Lyon""#,
    "age in [31, -2]",
    r#"age in ["31"]"#,
    "city in []",
    r#"tag("language") == "de""#,
    r#"a.b-c <= 0"#,
    r#"language == "pt""#,
    r#"language == "pt-BR""#,
    r#"language != "pt""#,
    r#"language in ["en", "fr", "zh-Hant-TW"]"#,
    r#"language == "de""#,
    r#"timeZone == "Europe/Lisbon""#,
    r#"timeZone != "Europe/Lisbon""#,
    r#"pushService == "fcm""#,
    r#"pushService in ["mozilla", "apple", "wns"]"#,
    r#"pushService == "other""#,
    r#"pushService != "fcm""#,
    r#"topic("news")"#,
    r#"!topic("news") && !topic("sport")"#,
    r#"userId == "u1""#,
    r#"userId != "u1""#,
    r#"userId in ["u2", "u3"]"#,
    "createdAt < 5d",
    "createdAt >= 7d",
    "createdAt > 2w",
    "lastSeenAt < 1h",
    r#"plan == "pro" && age >= 18 || vip == false"#,
    r#"plan == "pro" && (age >= 18 || vip == false)"#,
    r#"!(topic("news") || language == "en") && has(age)"#,
];

#[tokio::test]
async fn expressions_reach_the_same_subscriptions_on_every_store() -> TestResult {
    on_every_store(async |store, key| {
        let now = now_ms();
        for (endpoint, user, topics, tags, language, zone, days) in people() {
            let mut n = new(endpoint, user, Some(topics), key)?;
            n.tags = Some(patch(tags));
            n.language = language.map(Language::new).transpose()?;
            n.time_zone = zone.map(TimeZoneName::new).transpose()?;
            store.upsert_subscription(&n, now - days * DAY).await?;
        }
        let stored = readable(store.page_subscriptions(AppId::DEFAULT, &Target::All(true), None, 0, None, 100).await?);
        assert_eq!(stored.len(), people().len());
        // Every expression alone, and pairs of them joined each way.
        let mut texts: Vec<String> = EXPRESSIONS.iter().map(|s| s.to_string()).collect();
        for (i, a) in EXPRESSIONS.iter().enumerate().step_by(3) {
            let b = EXPRESSIONS[(i * 7 + 5) % EXPRESSIONS.len()];
            texts.push(format!("({a}) && !({b})"));
            texts.push(format!("!({a}) || ({b})"));
        }
        for text in &texts {
            let expr = Expr::parse(text).map_err(|e| format!("{text}: {e}"))?;
            let want: Vec<i64> =
                stored.iter().filter(|s| expr.matches(&s.as_subscriber(), now_ms())).map(|s| s.id).collect();
            let target = Target::Where(Condition::from(expr));
            let count = store.count_subscriptions(AppId::DEFAULT, &target).await?;
            let paged: Vec<i64> =
                readable(store.page_subscriptions(AppId::DEFAULT, &target, None, 0, None, 100).await?)
                    .iter()
                    .map(|s| s.id)
                    .collect();
            assert_eq!(paged, want, "{text}");
            assert_eq!(count, want.len() as i64, "{text}");
        }
        // Not every expression is vacuous: the corners do tell people apart.
        let pro = Target::Where(Condition::parse(r#"plan == "pro""#)?);
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &pro).await?, 2);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn tags_are_merged_where_they_are_written_and_stay_within_fifty() -> TestResult {
    on_every_store(async |store, key| {
        let endpoint = "https://push.example.net/t";
        let mut n = new(endpoint, Some("ann"), None, key)?;
        n.tags = Some(patch(json!({"plan": "pro", "n": 1})));
        n.language = Some(Language::new("en-gb")?);
        let first = store.upsert_subscription(&n, 1).await?;
        assert_eq!(first.tags.to_json(), json!({"plan": "pro", "n": 1}));
        assert_eq!(first.language.as_deref(), Some("en-GB"));
        assert_eq!(first.last_seen_at, 1);
        // A post without tags keeps them; with a change, merges it.
        n.tags = None;
        n.language = None;
        let again = store.upsert_subscription(&n, 2).await?;
        assert_eq!((again.tags.to_json(), again.language.as_deref()), (json!({"plan": "pro", "n": 1}), Some("en-GB")));
        assert_eq!(again.last_seen_at, 2);
        n.tags = Some(patch(json!({"n": null, "vip": true})));
        let merged = store.upsert_subscription(&n, 3).await?;
        assert_eq!(merged.tags.to_json(), json!({"plan": "pro", "vip": true}));
        // 49 more would make 51: refused, nothing written.
        let many: serde_json::Map<String, serde_json::Value> = (0..49).map(|i| (format!("k{i}"), json!(i))).collect();
        n.tags = Some(patch(serde_json::Value::Object(many.clone())));
        assert!(matches!(store.upsert_subscription(&n, 4).await, Err(StoreError::TooManyTags)));
        let kept = store.subscription_by_endpoint(AppId::DEFAULT, endpoint).await?.ok_or("gone")?;
        assert_eq!(kept.tags.len(), 2);
        assert_eq!(kept.updated_at, 3);
        // The backend's change: by subscription, then by user.
        let other = store.upsert_subscription(&new("https://push.example.net/u", Some("ann"), None, key)?, 5).await?;
        let by_id =
            store.patch_tags(AppId::DEFAULT, &TagsOf::Subscription(other.id), &patch(json!({"a": 1})), 6).await?;
        let TagsPatched::Done(rows) = by_id else { return Err("refused".into()) };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tags.to_json(), json!({"a": 1}));
        let by_user =
            store.patch_tags(AppId::DEFAULT, &TagsOf::User("ann".into()), &patch(json!({"b": "x"})), 7).await?;
        let TagsPatched::Done(rows) = by_user else { return Err("refused".into()) };
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [first.id, other.id]);
        assert_eq!(rows[0].tags.to_json(), json!({"plan": "pro", "vip": true, "b": "x"}));
        // Too many for one of the user's subscriptions: neither changes.
        let mut forty_eight = many;
        forty_eight.remove("k0");
        let too_many = patch(serde_json::Value::Object(forty_eight));
        match store.patch_tags(AppId::DEFAULT, &TagsOf::User("ann".into()), &too_many, 8).await? {
            TagsPatched::TooMany { subscription_id, tags } => assert_eq!((subscription_id, tags), (first.id, 51)),
            TagsPatched::Done(_) => return Err("51 tags were stored".into()),
        }
        let other_now = store.app_subscription(AppId::DEFAULT, other.id).await?.ok_or("gone")?;
        assert_eq!(other_now.tags.to_json(), json!({"a": 1, "b": "x"}), "nothing of a refused change");
        // Another app's subscription is not found; nor a user without any.
        for of in [TagsOf::Subscription(other.id), TagsOf::User("nobody".into())] {
            let app = if matches!(of, TagsOf::User(_)) { AppId::DEFAULT } else { AppId(999) };
            let TagsPatched::Done(rows) = store.patch_tags(app, &of, &patch(json!({"z": 1})), 9).await? else {
                return Err("refused".into());
            };
            assert!(rows.is_empty());
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_segment_is_its_apps_and_is_read_when_its_message_starts() -> TestResult {
    on_every_store(async |store, key| {
        let seg = |name: &str, text: &str| SegmentRow {
            name: name.into(),
            condition: Condition::parse(text).expect("an expression"),
            created_at: 1,
        };
        assert!(store.create_segment(AppId::DEFAULT, &seg("pros", r#"plan == "pro""#)).await?);
        assert!(!store.create_segment(AppId::DEFAULT, &seg("pros", "has(x)")).await?, "the name is taken");
        assert!(store.create_segment(AppId::DEFAULT, &seg("all-vips", "vip == true")).await?);
        let names: Vec<String> = store.segments(AppId::DEFAULT).await?.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["all-vips", "pros"]);
        assert_eq!(
            store.segment(AppId::DEFAULT, "pros").await?.map(|s| s.condition.as_str().to_owned()).as_deref(),
            Some(r#"plan == "pro""#)
        );
        assert!(store.segment(AppId(999), "pros").await?.is_none(), "another app's");
        let target = Target::Segment("pros".into());
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target).await?, 0);
        let mut n = new("https://push.example.net/p", None, None, key)?;
        n.tags = Some(patch(json!({"plan": "pro"})));
        store.upsert_subscription(&n, 1).await?;
        store.upsert_subscription(&new("https://push.example.net/q", None, None, key)?, 1).await?;
        assert_eq!(store.count_subscriptions(AppId::DEFAULT, &target).await?, 1, "evaluated when read");
        // A message aimed at it counts its audience when it starts.
        store.insert_message(&message_in(AppId::DEFAULT, "m-seg", target.clone(), None)).await?;
        assert!(store.start_message("m-seg", &target, 1000, 2).await?);
        let m = store.app_message(AppId::DEFAULT, "m-seg").await?.ok_or("no message")?;
        assert_eq!(m.counts.targeted, 1);
        assert_eq!(m.accepted.target, target);
        assert!(store.delete_segment(AppId::DEFAULT, "pros").await?);
        assert!(!store.delete_segment(AppId::DEFAULT, "pros").await?);
        assert_eq!(
            store.count_subscriptions(AppId::DEFAULT, &target).await?,
            0,
            "a segment that is gone matches no one"
        );
        Ok(())
    })
    .await
}
