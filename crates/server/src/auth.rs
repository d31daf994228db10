//! Admin tokens: `Authorization: Bearer <token>`. Only a token's SHA-256 is
//! stored; a token is 32 random bytes, so a fast hash is the right one.

use aws_lc_rs::digest;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::AppState;

/// Proof that the request carried a valid admin token.
pub struct Admin;

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

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let hash = hash_token(token);
        // Hashes are compared, not tokens: timing reveals nothing of a token.
        if state.admin_token_hash.as_deref() == Some(hash.as_str()) {
            return Ok(Admin);
        }
        match state.store.token_exists(&hash).await {
            Ok(true) => Ok(Admin),
            Ok(false) => Err(ApiError::unauthorized()),
            Err(e) => Err(ApiError::storage("database-unavailable", "cannot check the token", &e)),
        }
    }
}
