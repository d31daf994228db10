//! Test helpers shared by the store's unit tests.

use tocsin_protocol::Subscription;

use crate::{AppStore, NewSubscription, SqlStore, Store};

pub const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
pub const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// What a test returns: an error fails it with its message.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `test` on every store: a fresh [`MemoryStore`], then as
/// [`on_both_backends`] does, each with a current VAPID key. The name of
/// the store that failed is in the error.
///
/// [`MemoryStore`]: tocsin_store_api::memory::MemoryStore
pub async fn on_every_store(test: impl AsyncFn(&dyn Store, i64) -> TestResult) -> TestResult {
    let memory = tocsin_store_api::memory::MemoryStore::new();
    let key = memory.make_vapid_key_current(crate::AppId::DEFAULT, "pub", "priv", 1).await?;
    test(&memory, key.id).await.map_err(|e| format!("on the in-memory store: {e}"))?;
    on_both_backends(async |store, key| test(store, key).await).await
}

/// Runs `test` on a fresh SQLite file and on a fresh PostgreSQL database
/// (the scripts start PostgreSQL on 127.0.0.1:5432; a test that cannot
/// reach it fails), each with a current VAPID key. The PostgreSQL database
/// is dropped afterwards, whether the test passed or not.
pub async fn on_both_backends(test: impl AsyncFn(&SqlStore, i64) -> TestResult) -> TestResult {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir()?;
    let sqlite = SqlStore::connect(&format!("sqlite://{}/t.db", dir.path().display())).await?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let name = format!("tocsin_store_{}_{nanos}", std::process::id());
    let admin = sqlx::AnyPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    let outcome = async {
        let pg = SqlStore::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}")).await?;
        for store in [&sqlite, &pg] {
            let key = store.make_vapid_key_current(crate::AppId::DEFAULT, "pub", "priv", 1).await?;
            let backend = store.backend();
            test(store, key.id).await.map_err(|e| format!("on {backend:?}: {e}"))?;
        }
        pg.close().await;
        TestResult::Ok(())
    }
    .await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin).await?;
    outcome
}

/// A subscription to `endpoint` with fixed keys, for VAPID key `key`.
pub fn new(
    endpoint: &str,
    user: Option<&str>,
    topics: Option<&[&str]>,
    key: i64,
) -> Result<NewSubscription, Box<dyn std::error::Error>> {
    let json = format!(r#"{{"endpoint":"{endpoint}","keys":{{"p256dh":"{P256DH}","auth":"{AUTH}"}}}}"#);
    Ok(NewSubscription {
        subscription: Subscription::from_json(&json)?,
        user_id: user.map(str::to_owned),
        topics: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
        tags: None,
        language: None,
        time_zone: None,
        vapid_key_id: key,
        keep_stored_key: false,
        app: crate::AppId::DEFAULT,
    })
}
