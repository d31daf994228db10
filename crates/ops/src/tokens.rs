//! API tokens: made here, shown once, kept only as a hash.

use aws_lc_rs::digest;
use tocsin_store_api::{AppId, StoreError, TokenScope, TokenStore};

/// A new token: `tsn_` and 32 random bytes, base64url.
pub fn new_token() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)?;
    Ok(format!("tsn_{}", tocsin_protocol::b64::encode(bytes)))
}

/// The stored form of a token: lower-case hex SHA-256.
pub fn hash_token(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateTokenError {
    /// Token names are unique: they are what a token is revoked by.
    #[error("a token named {0:?} exists already; revoke it or choose another name")]
    NameTaken(String),
    /// No randomness to make it from.
    #[error("no randomness available")]
    Random,
    /// The store failed (or the app does not exist: [`StoreError::Conflict`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a token named `name` with `scope`, for `app` (`None`: every app),
/// stores its hash and returns the token itself, which is not kept.
pub async fn create_token(
    store: &dyn TokenStore,
    name: &str,
    scope: TokenScope,
    app: Option<AppId>,
    now: i64,
) -> Result<String, CreateTokenError> {
    if store.tokens().await?.iter().any(|t| t.name == name) {
        return Err(CreateTokenError::NameTaken(name.to_owned()));
    }
    let token = new_token().map_err(|_| CreateTokenError::Random)?;
    store.insert_token(name, &hash_token(&token), scope, app, now).await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_store_api::memory::MemoryStore;

    #[tokio::test]
    async fn a_token_is_stored_by_its_hash_and_named_once() {
        let store = MemoryStore::new();
        let token = create_token(&store, "ops", TokenScope::Admin, None, 1).await.expect("created");
        assert!(token.starts_with("tsn_") && token.len() == 4 + 43, "{token}");
        let row = store.token(&hash_token(&token)).await.expect("store").expect("found by hash");
        assert_eq!((row.name.as_str(), row.scope), ("ops", TokenScope::Admin));
        let again = create_token(&store, "ops", TokenScope::Send, None, 2).await;
        assert!(matches!(again, Err(CreateTokenError::NameTaken(_))), "{again:?}");
        assert_eq!(hash_token("x"), "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881");
    }
}
