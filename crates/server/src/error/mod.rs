//! The one error shape of the whole API: `{"error":{"id":"…","message":"…"}}`,
//! with the id from the one catalogue of errors ([`ErrorId`]).

mod catalogue;

pub use catalogue::ErrorId;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The `Retry-After` of a 503 for a database that is away or full.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// An API error: an error of the catalogue (its id and status) and a
/// message that says what is wrong with this request.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Which error: its stable id and its status.
    pub id: ErrorId,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Its stable id and what is wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable identifier, e.g. `no-endpoint`: one of the catalogue's.
    pub id: ErrorId,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// An error of the catalogue with what is wrong with this request.
    pub fn new(id: ErrorId, message: impl Into<String>) -> Self {
        Self { id, message: message.into(), retry_after: None }
    }

    /// Its HTTP status: the catalogue's for its id.
    pub fn status(&self) -> StatusCode {
        self.id.status()
    }

    /// The same with a `Retry-After` of `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 500 for a storage failure; the cause goes to the log, not the
    /// client. A database that is away answers 503 `database-unavailable`
    /// and a full disk 503 `storage-full`, both with `Retry-After`: nothing
    /// was written, and the same request may succeed soon.
    pub fn storage(id: ErrorId, message: &str, cause: &tocsin_store_api::StoreError) -> Self {
        use tocsin_store_api::StoreError;
        match cause {
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "{message}: the database is unavailable");
                Self::new(
                    ErrorId::DatabaseUnavailable,
                    format!("{message}: the database is not answering; nothing was changed, try again"),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
            }
            StoreError::StorageFull => {
                tracing::error!("{message}: the database's disk is full");
                Self::new(
                    ErrorId::StorageFull,
                    format!("{message}: the server's storage is full; nothing was changed, try again later"),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
            }
            _ => {
                tracing::error!(error = %cause, "{message}");
                Self::new(id, message)
            }
        }
    }

    /// 500 for a failure that is not the database's (no randomness, a key
    /// that cannot be made); the cause goes to the log, not the client.
    pub fn internal(id: ErrorId, message: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{message}");
        Self::new(id, message)
    }

    /// 401 for a missing or unknown admin token.
    pub fn unauthorized() -> Self {
        Self::new(ErrorId::Unauthorized, "this endpoint needs an API token: Authorization: Bearer <token>")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody { error: ErrorDetail { id: self.id, message: self.message } };
        let mut resp = (status, Json(body)).into_response();
        crate::metrics::error_answered(self.id);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        resp
    }
}
