//! Every request is bounded before any handler runs: in time, reading its
//! body included (`--request-timeout`, then 408 `request-timeout`), and in
//! size (`--body-limit`). One middleware for both, since each `from_fn`
//! layer boxes a future and clones the service behind it per request.
//!
//! A body over the limit is answered 413 `body-too-large`. Closing the
//! connection at once would lose that answer for a client that writes its
//! whole body before it reads (Python's `http.client`, curl, most HTTP
//! libraries): the kernel resets a connection closed with unread data, and
//! the reset discards the answer on the client's side. So the rest of the
//! body is read and thrown away first, up to [`DRAIN_MAX`] bytes and
//! [`DRAIN_TIME`], as nginx's lingering close does; past either bound the
//! connection is closed anyway.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::{Stream, StreamExt};

use crate::error::{ApiError, ErrorId};

/// The most of an over-limit body read and discarded before answering.
pub const DRAIN_MAX: usize = 16 * 1024 * 1024;
/// The longest time spent reading and discarding an over-limit body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The request's time and size bounds, as one middleware.
pub async fn guard(State((size, time)): State<(usize, Duration)>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(time, limit(size, request, next)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(ErrorId::RequestTimeout, format!("the request took longer than {} s", time.as_secs()))
            .into_response(),
    }
}

/// Answers 413 for a body over `limit` bytes before any handler runs: one
/// that declares a larger `Content-Length` at once, a chunked one as soon as
/// it passes the limit (it is read here first; a declared length within the
/// limit is left to hyper, which holds the body to it).
async fn limit(limit: usize, request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        // hyper holds a body to its declared length: nothing to count.
        Some(n) if n <= limit as u64 => return next.run(request).await,
        Some(_) => return too_large(limit, drain(request.into_body().into_data_stream()).await),
        None => {}
    }
    // No declared length (chunked): read it here, counting.
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) if buf.len() + chunk.len() > limit => return too_large(limit, drain(stream).await),
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(e) => return ApiError::new(ErrorId::InvalidBody, format!("cannot read the body: {e}")).into_response(),
        }
    }
    next.run(Request::from_parts(parts, Body::from(buf.freeze()))).await
}

/// Reads and discards what is left; true when the body ended within the bounds.
async fn drain(mut stream: impl Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin) -> bool {
    let mut read = 0usize;
    let rest = async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => read += c.len(),
                Err(_) => return false,
            }
            if read > DRAIN_MAX {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, rest).await.unwrap_or(false)
}

fn too_large(limit: usize, drained: bool) -> Response {
    let mut response =
        ApiError::new(ErrorId::BodyTooLarge, format!("request body is larger than the server accepts ({limit} bytes)"))
            .into_response();
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
