//! A message's format decides each subscription's payload: with `auto`,
//! subscriptions at Apple's push service get the declarative message and
//! every other the classic one. Against scripted push services on the
//! paused clock; each body is decrypted with the subscription's keys.

use std::sync::Arc;
use std::time::Duration;
use tocsin_store_api::AppStore;
use tocsin_store_api::MessageStore;

use tocsin_delivery::engine::EngineMetrics;
use tocsin_protocol::ece::ReceiverKeys;
use tocsin_protocol::VapidKey;
use tocsin_store_api::memory::MemoryStore;
use tocsin_store_api::{AppId, MessageFormat, NewMessage, Target};
use tokio::sync::watch;

mod support;
use support::*;

const ENDPOINTS: [&str; 4] = [
    "https://web.push.apple.com/QGx1",
    "https://fcm.googleapis.com/fcm/send/x2",
    "https://updates.push.services.mozilla.com/wpush/v2/x3",
    "https://api.push.apple.com:443/QGx4",
];

const CLASSIC: &[u8] = br#"{"title":"Hi","url":"https://a.example/"}"#;
const DECLARATIVE: &[u8] = br#"{"web_push":8030,"notification":{"title":"Hi","navigate":"https://a.example/"}}"#;

/// Sends one message in `format` to a subscription at each endpoint and
/// answers what each endpoint received, decrypted.
async fn received(format: MessageFormat) -> Result<Vec<(String, Vec<u8>)>, Box<dyn std::error::Error>> {
    let store = Arc::new(MemoryStore::new());
    let vapid = VapidKey::generate()?;
    let key = store
        .make_vapid_key_current(AppId::DEFAULT, &vapid.public_key_base64url(), &vapid.private_key_base64url(), 0)
        .await?;
    let receiver = ReceiverKeys::generate()?;
    let endpoints: Vec<String> = ENDPOINTS.iter().map(|e| e.to_string()).collect();
    subscribe_all(store.as_ref(), key.id, &endpoints, &receiver).await?;
    let (payload, apple_payload) = match format {
        MessageFormat::Classic => (CLASSIC, None),
        MessageFormat::Declarative => (DECLARATIVE, None),
        MessageFormat::Auto => (CLASSIC, Some(DECLARATIVE.to_vec())),
    };
    let message = NewMessage { format, apple_payload, ..message("m1", Target::All(true), payload) };
    store.insert_message(&message).await?;
    let service = Scripted::new(Duration::from_millis(10), delivered);
    let (stop, stopped) = watch::channel(false);
    let engine = engine(store.clone(), service.clone(), Duration::from_secs(30), 10, 10, EngineMetrics::new())?;
    let run = tokio::spawn(engine.run(stopped));
    let m = until_done(store.as_ref(), "m1", Duration::from_secs(60)).await?;
    stop.send(true)?;
    run.await?;
    assert_eq!(m.counts.delivered, 4, "{m:?}");
    let mut out = service
        .bodies()
        .into_iter()
        .map(|(uri, body)| Ok((uri, receiver.decrypt_aes128gcm(&body)?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    out.sort();
    Ok(out)
}

fn is_apple(uri: &str) -> bool {
    uri.contains(".push.apple.com")
}

#[tokio::test(start_paused = true)]
async fn auto_sends_declarative_to_apple_and_classic_to_the_rest() -> TestResult {
    let got = received(MessageFormat::Auto).await?;
    assert_eq!(got.len(), 4);
    for (uri, plaintext) in &got {
        let want = if is_apple(uri) { DECLARATIVE } else { CLASSIC };
        assert_eq!(plaintext.as_slice(), want, "{uri}");
    }
    assert_eq!(got.iter().filter(|(u, _)| is_apple(u)).count(), 2);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn classic_and_declarative_send_one_payload_to_every_service() -> TestResult {
    for (format, want) in [(MessageFormat::Classic, CLASSIC), (MessageFormat::Declarative, DECLARATIVE)] {
        let got = received(format).await?;
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|(_, p)| p.as_slice() == want), "{format:?}: {got:?}");
    }
    Ok(())
}
