//! The one error shape of the whole API: `{"error":{"id":"…","message":"…"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The `Retry-After` of a 503 for a database that is away or full.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// An API error: a status, a stable id and a message that says what is wrong.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable, documented identifier.
    pub id: &'static str,
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
    /// Stable identifier, e.g. `no-endpoint`.
    pub id: String,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> Self {
        Self { status, id, message: message.into(), retry_after: None }
    }

    /// The same with a `Retry-After` of `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 with an id.
    pub fn bad_request(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, id, message)
    }

    /// 404.
    pub fn not_found(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, id, message)
    }

    /// 500 for a storage failure; the cause goes to the log, not the
    /// client. A database that is away answers 503 `database-unavailable`
    /// and a full disk 503 `storage-full`, both with `Retry-After`: nothing
    /// was written, and the same request may succeed soon.
    pub fn storage(id: &'static str, message: &str, cause: &tocsin_store_api::StoreError) -> Self {
        use tocsin_store_api::StoreError;
        match cause {
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "{message}: the database is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database-unavailable",
                    format!("{message}: the database is not answering; nothing was changed, try again"),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
            }
            StoreError::StorageFull => {
                tracing::error!("{message}: the database's disk is full");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage-full",
                    format!("{message}: the server's storage is full; nothing was changed, try again later"),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
            }
            _ => {
                tracing::error!(error = %cause, "{message}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, id, message)
            }
        }
    }

    /// 500 for a failure that is not the database's (no randomness, a key
    /// that cannot be made); the cause goes to the log, not the client.
    pub fn internal(id: &'static str, message: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, id, message)
    }

    /// 401 for a missing or unknown admin token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs an API token: Authorization: Bearer <token>",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { id: self.id.to_owned(), message: self.message } };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        resp
    }
}
