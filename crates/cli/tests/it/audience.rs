//! The audience through the real binary, on SQLite and PostgreSQL: browsers
//! post tags, language and time zone; the backend changes tags; segments
//! and expressions aim messages; bad input changes nothing.

use crate::common;

use common::server::{call, create_token, with_user, Backend, Db, Server, TOKEN};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const ANY: [&str; 2] = ["--endpoint-policy", "any"];

/// Posts a browser's subscription with extra fields.
async fn post_sub(server: &Server, sub: &Value, extra: Value) -> (u16, Value) {
    let mut body = sub.clone();
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    call(server, Method::POST, "/api/subscription", None, Some(body)).await
}

async fn by_endpoint(server: &Server, filter: &str) -> Vec<Value> {
    let (status, v) = call(server, Method::GET, &format!("/v1/subscriptions?{filter}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn error_id(v: &Value) -> &str {
    v["error"]["id"].as_str().unwrap_or("")
}

async fn attributes_from_browsers_and_backends(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &ANY);
    let dev = DevPush::start(&[]);
    let key = server.vapid_public_key().await;
    let (pt, en, plain) = (dev.mint(Some(&key)).await, dev.mint(Some(&key)).await, dev.mint(Some(&key)).await);
    let mut pt_user = pt.clone();
    with_user(&mut pt_user, "ana");
    let (s, v) = post_sub(
        &server,
        &pt_user,
        json!({"tags": {"plan": "pro", "age": 31, "vip": true}, "language": "pt-br", "timeZone": "America/Sao_Paulo"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) =
        post_sub(&server, &en, json!({"tags": {"plan": "basic", "age": 17}, "language": "en-US", "timeZone": "UTC"}))
            .await;
    assert_eq!(s, 200);
    assert_eq!(server.subscribe(&plain).await.0, 200);

    // Bad input: its own id, and nothing stored.
    for (extra, id, names) in [
        (json!({"tags": {"Bad Key": 1}}), "invalid-tags", "Bad Key"),
        (json!({"tags": {"k": [1]}}), "invalid-tags", "\"k\""),
        (json!({"tags": {"k": "x".repeat(257)}}), "invalid-tags", "\"k\""),
        (
            json!({"tags": (0..101).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>()}),
            "invalid-tags",
            "50",
        ),
        (json!({"tags": "plan=pro"}), "invalid-tags", "object"),
        (json!({"timeZone": "Mars/Olympus"}), "invalid-time-zone", "Mars/Olympus"),
        (json!({"timeZone": 7}), "invalid-time-zone", "string"),
        (json!({"language": "english please"}), "invalid-language", "english"),
    ] {
        let fresh = dev.mint(Some(&key)).await;
        let (s, v) = post_sub(&server, &fresh, extra.clone()).await;
        assert_eq!((s, error_id(&v)), (400, id), "{extra}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(names), "{v}");
    }
    // 51 tags once merged into the stored ones: refused, the 3 kept.
    let fifty: serde_json::Map<String, Value> = (0..49).map(|i| (format!("k{i}"), json!(i))).collect();
    let (s, v) = post_sub(&server, &pt, json!({"tags": fifty})).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-tags"), "{v}");
    assert_eq!(server.count().await, 3);

    // The views carry them, in canonical form.
    let all = by_endpoint(&server, "").await;
    let ana = all.iter().find(|s| s["endpoint"] == pt["endpoint"]).unwrap();
    assert_eq!(ana["tags"], json!({"plan": "pro", "age": 31, "vip": true}));
    assert_eq!((ana["language"].as_str(), ana["timeZone"].as_str()), (Some("pt-BR"), Some("America/Sao_Paulo")));
    assert!(ana["lastSeenAt"].as_str().unwrap().ends_with('Z'));
    let plain_view = all.iter().find(|s| s["endpoint"] == plain["endpoint"]).unwrap();
    assert_eq!((plain_view["tags"].clone(), plain_view["language"].clone()), (json!({}), Value::Null));

    // The browser changes its own tags (null removes one), proven by its
    // auth secret: another secret changes nothing.
    let (s, _) = post_sub(&server, &pt, json!({"tags": {"vip": null, "city": "Porto"}})).await;
    assert_eq!(s, 200);
    let mut forged = pt.clone();
    forged["keys"]["auth"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
    let (s, v) = post_sub(&server, &forged, json!({"tags": {"plan": "free"}})).await;
    assert_eq!((s, error_id(&v)), (403, "subscription-not-proven"));
    let ana = by_endpoint(&server, "userId=ana").await;
    assert_eq!(ana[0]["tags"], json!({"plan": "pro", "age": 31, "city": "Porto"}));
    let ana_id = ana[0]["id"].as_i64().unwrap();

    // The backend: a send token may, a read token may not.
    let send = create_token(&db, "sender", "send");
    let read = create_token(&db, "reader", "read");
    let path = format!("/v1/subscriptions/{ana_id}/tags");
    let (s, v) = call(&server, Method::PATCH, &path, Some(&send), Some(json!({"score": 9.5, "city": null}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tags"], json!({"plan": "pro", "age": 31, "score": 9.5}));
    let (s, v) = call(&server, Method::PATCH, &path, Some(&read), Some(json!({"x": 1}))).await;
    assert_eq!((s, error_id(&v)), (403, "insufficient-scope"));
    for (body, id) in [
        (json!({"Bad": 1}), "invalid-tags"),
        (json!([1]), "invalid-json"),
        (json!({"k": {"nested": 1}}), "invalid-tags"),
    ] {
        let (s, v) = call(&server, Method::PATCH, &path, Some(&send), Some(body.clone())).await;
        assert_eq!((s, error_id(&v)), (400, id), "{body}: {v}");
    }
    for missing in
        ["/v1/subscriptions/999999/tags", "/v1/subscriptions/x/tags", "/v1/subscriptions/9223372036854775807/tags"]
    {
        let (s, v) = call(&server, Method::PATCH, missing, Some(&send), Some(json!({"a": 1}))).await;
        assert_eq!((s, error_id(&v)), (404, "subscription-not-found"), "{missing}");
    }
    let (s, v) = call(&server, Method::PATCH, "/v1/users/ana/tags", Some(&send), Some(json!({"vip": false}))).await;
    assert_eq!((s, v.clone()), (200, json!({"subscriptions": 1})), "{v}");
    let (s, v) = call(&server, Method::PATCH, "/v1/users/nobody/tags", Some(&send), Some(json!({"vip": false}))).await;
    assert_eq!((s, v), (200, json!({"subscriptions": 0})));
    let long = format!("/v1/users/{}/tags", "u".repeat(257));
    let (s, v) = call(&server, Method::PATCH, &long, Some(&send), Some(json!({"a": 1}))).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-user-id"));

    // Filtering by expression; a bad one names its column.
    let pros = by_endpoint(&server, "where=plan%20%3D%3D%20%22pro%22%20%26%26%20vip%20%3D%3D%20false").await;
    assert_eq!(pros.len(), 1);
    assert_eq!(pros[0]["id"].as_i64(), Some(ana_id));
    let (s, v) = call(&server, Method::GET, "/v1/subscriptions?where=plan%20%3D%3D", Some(TOKEN), None).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-segment"));
    assert!(v["error"]["message"].as_str().unwrap().starts_with("column 8:"), "{v}");
    let (s, v) = call(&server, Method::GET, "/v1/subscriptions?where=has(a)&topic=x", Some(TOKEN), None).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-filter"));

    // Segments: made, listed with counts, counted, aimed at, deleted.
    let (s, v) = call(
        &server,
        Method::POST,
        "/v1/segments",
        Some(&send),
        Some(json!({"name": "portuguese", "where": "language == \"pt\""})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["count"], 1);
    for (body, status, id) in [
        (json!({"name": "portuguese", "where": "has(x)"}), 409, "segment-exists"),
        (json!({"name": "Bad Name", "where": "has(x)"}), 400, "invalid-segment-name"),
        (json!({"name": "x", "where": "has(X)"}), 400, "invalid-segment"),
        (json!({"name": "x", "where": "a == 1".repeat(400)}), 400, "invalid-segment"),
        (json!({"name": "x", "where": format!("{}a == 1{}", "(".repeat(40), ")".repeat(40))}), 400, "invalid-segment"),
        (json!({"name": "x"}), 400, "invalid-body"),
    ] {
        let (s, v) = call(&server, Method::POST, "/v1/segments", Some(&send), Some(body.clone())).await;
        assert_eq!((s, error_id(&v)), (status, id), "{body}: {v}");
    }
    let (s, v) = call(&server, Method::GET, "/v1/segments", Some(&read), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"][0]["name"], "portuguese");
    assert_eq!(v["items"][0]["count"], 1);
    for (body, want) in [
        (json!({"where": "age >= 18"}), 1),
        (json!({"where": "age < 18 || !has(age)"}), 2),
        (json!({"where": "timeZone == \"UTC\""}), 1),
        (json!({"segment": "portuguese"}), 1),
    ] {
        let (s, v) = call(&server, Method::POST, "/v1/audience/count", Some(&read), Some(body.clone())).await;
        assert_eq!((s, v["count"].as_i64()), (200, Some(want)), "{body}: {v}");
    }
    let (s, v) = call(&server, Method::POST, "/v1/audience/count", Some(&read), Some(json!({"segment": "nope"}))).await;
    assert_eq!((s, error_id(&v)), (404, "segment-not-found"));
    let (s, v) = call(&server, Method::POST, "/v1/audience/count", Some(&read), Some(json!({}))).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-body"));

    let message = |target: Value| json!({"target": target, "payload": {"title": "t"}});
    let (s, v) =
        call(&server, Method::POST, "/v1/messages", Some(&send), Some(message(json!({"segment": "nope"})))).await;
    assert_eq!((s, error_id(&v)), (404, "segment-not-found"));
    let (s, v) =
        call(&server, Method::POST, "/v1/messages", Some(&send), Some(message(json!({"where": "plan ="})))).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-segment"));
    let (s, v) =
        call(&server, Method::POST, "/v1/messages", Some(&send), Some(message(json!({"where": "age < 18"})))).await;
    assert_eq!(s, 202, "{v}");
    let done = server.wait_done(v["id"].as_str().unwrap()).await;
    assert_eq!((done["counts"]["targeted"].as_i64(), done["counts"]["delivered"].as_i64()), (Some(1), Some(1)));
    assert_eq!(done["target"], json!({"where": "age < 18"}), "stored as it prints");
    let (s, v) =
        call(&server, Method::POST, "/v1/messages", Some(&send), Some(message(json!({"segment": "portuguese"})))).await;
    assert_eq!(s, 202, "{v}");
    let done = server.wait_done(v["id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["delivered"].as_i64(), Some(1));
    let (s, _) = call(&server, Method::DELETE, "/v1/segments/portuguese", Some(&send), None).await;
    assert_eq!(s, 204);
    let (s, v) = call(&server, Method::DELETE, "/v1/segments/portuguese", Some(&send), None).await;
    assert_eq!((s, error_id(&v)), (404, "segment-not-found"));
    server.stop();

    // Export carries them; import takes them back.
    let out = tocsin().args(["subscriptions", "export", "--database", &db.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ana = lines.iter().find(|l| l["endpoint"] == pt["endpoint"]).unwrap();
    assert_eq!(ana["tags"], json!({"plan": "pro", "age": 31, "score": 9.5, "vip": false}));
    assert_eq!((ana["language"].as_str(), ana["timeZone"].as_str()), (Some("pt-BR"), Some("America/Sao_Paulo")));
    let other = Db::new(backend);
    let file = jsonl(&lines);
    let out = tocsin()
        .args(["subscriptions", "import", file.path().to_str().unwrap(), "--database", &other.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = tocsin().args(["subscriptions", "export", "--database", &other.url]).output().unwrap();
    let round: Vec<Value> = stdout(&again).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (a, b) in round.iter().zip(&lines) {
        assert_eq!((&a["tags"], &a["language"], &a["timeZone"]), (&b["tags"], &b["language"], &b["timeZone"]));
    }
}
both_backends!(subscribers_carry_attributes_and_messages_reach_expressions, attributes_from_browsers_and_backends);

/// `--client-tags false`: browsers may not set tags, the backend still may.
#[tokio::test]
async fn an_app_may_take_tags_from_its_backend_only() {
    let db = Db::new(Backend::Sqlite);
    let server = Server::start(&db, &["--endpoint-policy", "any", "--client-tags", "false"]);
    let dev = DevPush::start(&[]);
    let key = server.vapid_public_key().await;
    let sub = dev.mint(Some(&key)).await;
    let (s, v) = post_sub(&server, &sub, json!({"tags": {"vip": true}})).await;
    assert_eq!((s, error_id(&v)), (403, "client-tags-disabled"));
    assert_eq!(server.count().await, 0, "nothing stored");
    let (s, _) = post_sub(&server, &sub, json!({"language": "de", "timeZone": "Europe/Berlin"})).await;
    assert_eq!(s, 200, "language and time zone still come from the browser");
    let id = by_endpoint(&server, "").await[0]["id"].as_i64().unwrap();
    let (s, v) =
        call(&server, Method::PATCH, &format!("/v1/subscriptions/{id}/tags"), Some(TOKEN), Some(json!({"vip": true})))
            .await;
    assert_eq!((s, v["tags"].clone()), (200, json!({"vip": true})));
    // An app made with its own setting keeps it.
    let (s, v) =
        call(&server, Method::POST, "/v1/apps", Some(TOKEN), Some(json!({"name": "open", "clientTags": true}))).await;
    assert_eq!(s, 201, "{v}");
    let open_key = v["publicKey"].as_str().unwrap().to_owned();
    let sub = dev.mint(Some(&open_key)).await;
    let mut body = sub.clone();
    body["tags"] = json!({"vip": true});
    let (s, v) = call(&server, Method::POST, "/apps/open/api/subscription", None, Some(body)).await;
    assert_eq!(s, 200, "{v}");
}

/// The payload the dev push service decrypted for a subscription, as JSON.
async fn received(dev: &DevPush, sub: &Value) -> Vec<Value> {
    let id = sub_id(sub);
    let v: Value =
        dev.http.get(format!("{}/messages?subscription={id}", dev.base)).send().await.unwrap().json().await.unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["payload"].as_str().and_then(|p| serde_json::from_str(p).ok()))
        .collect()
}

async fn localized_and_personal(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &ANY);
    let dev = DevPush::start(&[]);
    let key = server.vapid_public_key().await;
    let mut subs = Vec::new();
    for extra in [
        json!({"language": "fr-CA", "tags": {"first_name": "Zoé", "n": 41}}),
        json!({"language": "pt-BR"}),
        json!({"language": "de", "tags": {"first_name": "Jo Ann"}}),
        json!({"tags": {"long": "x".repeat(256)}}),
    ] {
        let sub = dev.mint(Some(&key)).await;
        assert_eq!(post_sub(&server, &sub, extra).await.0, 200);
        subs.push(sub);
    }
    let send = |body: Value| call(&server, Method::POST, "/v1/messages", Some(TOKEN), Some(body));
    let (s, v) = send(json!({"target": {"all": true}, "payload": {
        "title": {"en": "Hi {{ tags.first_name | default: \"there\" }}", "fr": "Salut {{ tags.first_name | default: \"toi\" }}", "pt": "Olá"},
        "body": "Sale",
        "url": "https://shop.example/{{ tags.first_name | default: \"all\" | url_encode }}",
        "defaultLanguage": "en"}}))
    .await;
    assert_eq!(s, 202, "{v}");
    let done = server.wait_done(v["id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["delivered"].as_i64(), Some(4), "{done}");
    let got: Vec<(String, String)> = {
        let mut out = Vec::new();
        for sub in &subs {
            let p = received(&dev, sub).await.pop().unwrap();
            assert_eq!(p["messageId"], v["id"], "stamped as any message: {p}");
            assert!(p.get("defaultLanguage").is_none());
            out.push((p["title"].as_str().unwrap().to_owned(), p["url"].as_str().unwrap().to_owned()));
        }
        out
    };
    assert_eq!(
        got,
        [
            ("Salut Zoé".to_owned(), "https://shop.example/Zo%C3%A9".to_owned()),
            ("Olá".to_owned(), "https://shop.example/all".to_owned()),
            ("Hi Jo Ann".to_owned(), "https://shop.example/Jo%20Ann".to_owned()),
            ("Hi there".to_owned(), "https://shop.example/all".to_owned()),
        ]
    );

    // A template that needs a tag fails the deliveries to subscribers
    // without it; one that grows past 4 KB fails that delivery: each
    // counted, with an example.
    let (s, v) = send(json!({"target": {"all": true}, "payload": {
        "title": "{{ tags.n | plus: 1 }}", "body": format!("{}{}", "b".repeat(3000), "{{ tags.long }}{{ tags.long }}{{ tags.long }}{{ tags.long }}")}}))
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let done = server.wait_done(id).await;
    assert_eq!((done["counts"]["delivered"].as_i64(), done["counts"]["failed"].as_i64()), (Some(1), Some(3)), "{done}");
    let (_, m) = call(&server, Method::GET, &format!("/v1/messages/{id}"), Some(TOKEN), None).await;
    // The subscriber with the long tag also lacks `n`: which fails first is the template.
    assert_eq!(m["failedByReason"]["template-failed"].as_i64(), Some(3), "{m}");
    assert!(m["failureExamples"]["template-failed"].as_str().unwrap().contains("title"), "{m}");
    let p = received(&dev, &subs[0]).await.pop().unwrap();
    assert_eq!(p["title"], "42");
    let (s, v) = send(json!({"target": {"all": true}, "payload": {
        "title": "{{ tags.n | default: 1 }}", "body": format!("{}{}", "b".repeat(3000), "{{ tags.long }}{{ tags.long }}{{ tags.long }}{{ tags.long }}")}}))
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let done = server.wait_done(id).await;
    assert_eq!((done["counts"]["delivered"].as_i64(), done["counts"]["failed"].as_i64()), (Some(3), Some(1)), "{done}");
    let (_, m) = call(&server, Method::GET, &format!("/v1/messages/{id}"), Some(TOKEN), None).await;
    assert_eq!(m["failedByReason"]["payload-too-large"].as_i64(), Some(1), "{m}");
    assert!(m["failureExamples"]["payload-too-large"].as_str().unwrap().contains("bytes"), "{m}");

    // Refused when created, changing nothing.
    for (payload, id) in [
        (json!({"title": "Hi {{ tags.name "}), "invalid-template"),
        (json!({"title": "{% for i in (1..99999999) %}x{% endfor %}"}), "invalid-template"),
        (json!({"title": "{% include 'x' %}"}), "invalid-template"),
        (json!({"title": {"en": "Hi"}}), "invalid-localized-text"),
        (json!({"title": {"en": "Hi"}, "defaultLanguage": "fr"}), "invalid-localized-text"),
        (json!({"title": {"en": "Hi", "fr": "y".repeat(4000)}, "defaultLanguage": "en"}), "payload-too-large"),
    ] {
        let (s, v) = send(json!({"target": {"all": true}, "payload": payload.clone()})).await;
        assert_eq!((s, error_id(&v)), (400, id), "{payload}: {v}");
    }
    let (s, v) = send(json!({"target": {"all": true}, "format": "declarative", "payload": {"defaultLanguage": "en",
        "notification": {"title": {"en": "Hi", "de": "Hallo"}, "navigate": {"en": "https://a.example/", "de": "kein link"}}}}))
    .await;
    assert_eq!((s, error_id(&v)), (400, "declarative-invalid-navigate"), "{v}");
    let (_, list) = call(&server, Method::GET, "/v1/messages", Some(TOKEN), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "only the three accepted");

    // Declarative, by language.
    let (s, v) = send(json!({"target": {"where": "language == \"de\""}, "format": "declarative", "payload": {"defaultLanguage": "en",
        "notification": {"title": {"en": "Hi", "de": "Hallo {{ tags.first_name }}"}, "navigate": {"en": "https://a.example/en", "de": "https://a.example/de"}}}}))
    .await;
    assert_eq!(s, 202, "{v}");
    server.wait_done(v["id"].as_str().unwrap()).await;
    let p = received(&dev, &subs[2]).await.pop().unwrap();
    assert_eq!((p["web_push"].as_u64(), p["notification"]["title"].as_str()), (Some(8030), Some("Hallo Jo Ann")));
    assert_eq!(p["notification"]["navigate"], "https://a.example/de");
}
both_backends!(messages_in_the_subscribers_language_with_their_values, localized_and_personal);

/// Values at the edges of their types, as an outsider would send them.
async fn edges(backend: Backend) {
    let db = Db::new(backend);
    let server = Server::start(&db, &ANY);
    let dev = DevPush::start(&[]);
    let key = server.vapid_public_key().await;
    let sub = dev.mint(Some(&key)).await;
    let tags = json!({
        "u64": u64::MAX, "i64": i64::MIN, "max": f64::MAX, "tiny": 5e-324, "zero": -0.0,
        "s": "é".repeat(256), &"k".repeat(64): true, "a.b:c-d_e": "", "emoji": "🔔\u{1}\"'\\"
    });
    let (s, v) =
        post_sub(&server, &sub, json!({"tags": tags, "language": "zh-Hant-TW", "timeZone": "Pacific/Kiritimati"}))
            .await;
    assert_eq!(s, 200, "{v}");
    let stored = &by_endpoint(&server, "").await[0];
    for k in ["u64", "i64", "s", "a.b:c-d_e", "emoji"] {
        assert_eq!(stored["tags"][k], tags[k], "{k} round trips");
    }
    assert_eq!(stored["tags"]["max"].as_f64(), Some(f64::MAX));
    for (expr, want) in [
        ("u64 > 1e19", 1),
        ("i64 < -9e18", 1),
        ("max >= 1.7976931348623157e308", 1),
        ("tiny > 0", 1),
        ("zero == 0", 1),
        (r#"emoji == "🔔\u0001\"'\\""#, 1),
        (r#"emoji == "\u0000""#, -1),
        (r#"a.b:c-d_e == """#, 1),
        ("has(kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk)", 1),
        (r#"timeZone == "Pacific/Kiritimati" && language == "zh""#, 1),
        ("createdAt > 9999999w", 0),
    ] {
        let (s, v) = call(&server, Method::POST, "/v1/audience/count", Some(TOKEN), Some(json!({"where": expr}))).await;
        if expr.contains("9999999w") || want < 0 {
            assert_eq!((s, error_id(&v)), (400, "invalid-segment"), "an age over 100 years: {v}");
            continue;
        }
        assert_eq!((s, v["count"].as_i64()), (200, Some(want)), "{expr}: {v}");
    }
    // Numbers JSON cannot hold, and bodies far past the limit.
    let (s, v) =
        call(&server, Method::POST, "/v1/audience/count", Some(TOKEN), Some(json!({"where": "n > 1e999"}))).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-segment"), "{v}");
    let huge = format!(r#"{{"endpoint":"x","tags":{{"a":"{}"}}}}"#, "x".repeat(10 << 20));
    let (s, _) = server.raw(Method::POST, "/api/subscription", huge).await;
    assert_eq!(s, 413);
    let (s, v) = server.raw(Method::PATCH, "/v1/users/u/tags", r#"{"a": 1e999}"#.to_owned()).await;
    assert!(s == 400 || s == 401, "{s} {v}");
    // U+0000, which PostgreSQL cannot store: refused with its id, on both.
    let other = dev.mint(Some(&key)).await;
    let (s, v) = post_sub(&server, &other, json!({"tags": {"k": "a\u{0}b"}})).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-tags"), "{v}");
    // A user id with U+0000 (signed, as a site's backend would): refused, not a 500.
    let mut nul_user = dev.mint(Some(&key)).await;
    with_user(&mut nul_user, "ann\u{0}");
    let (s, v) = post_sub(&server, &nul_user, json!({})).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-user-id"), "{v}");
    let (s, v) = call(&server, Method::PATCH, "/v1/users/a%00b/tags", Some(TOKEN), Some(json!({"a": 1}))).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-path"), "{v}");
    for target in [json!({"userIds": ["a\u{0}"]}), json!({"topic": "t\u{0}"})] {
        let body = json!({"target": target, "payload": "x"});
        let (s, v) = call(&server, Method::POST, "/v1/messages", Some(TOKEN), Some(body)).await;
        assert_eq!((s, error_id(&v)), (400, "invalid-target"), "{v}");
    }
    for (path, status, id) in [
        ("/v1/segments/Bad%20Name", 404, "segment-not-found"),
        ("/v1/segments/a%00b", 400, "invalid-path"),
        ("/v1/messages/a%00b", 400, "invalid-path"),
        ("/v1/webhooks/a%00b", 400, "invalid-path"),
    ] {
        for method in [Method::GET, Method::DELETE] {
            if path.starts_with("/v1/webhooks") && method == Method::GET {
                continue;
            }
            let (s, v) = call(&server, method.clone(), path, Some(TOKEN), None).await;
            assert_eq!((s, error_id(&v)), (status, id), "{method} {path}: {v}");
        }
    }
    let (s, v) =
        call(&server, Method::POST, "/v1/audience/count", Some(TOKEN), Some(json!({"segment": "a\u{0}"}))).await;
    assert_eq!((s, error_id(&v)), (404, "segment-not-found"), "{v}");
    let (s, v) = call(&server, Method::GET, "/v1/subscriptions?userId=a%00", Some(TOKEN), None).await;
    assert_eq!((s, error_id(&v)), (400, "invalid-filter"), "{v}");
    assert_eq!(server.count().await, 1, "nothing else stored");
}
both_backends!(values_at_the_edges_of_their_types, edges);
