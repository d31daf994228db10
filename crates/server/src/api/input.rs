//! Reading requests: bodies, JSON objects, queries, ids, payloads, and
//! the fields with bounds (`userId`, `topics`, `endpoint`).

use crate::error::{ApiError, ErrorId};
use axum::extract::rejection::BytesRejection;
use axum::extract::Query;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tocsin_protocol::{b64, ContentEncoding};
use tocsin_store_api::tocsin_audience::{Language, TagPatch, TimeZoneName};
pub(crate) use tocsin_store_api::MAX_ENDPOINT_LEN;

/// Reads the body, turning an over-limit body into a 413 in the API's shape
/// (bodies are bounded before handlers run, in [`super::request_bounds`]; this
/// is the handler's own check behind it).
pub(crate) fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorId::BodyTooLarge, "request body is larger than the server accepts")
        } else {
            ApiError::new(ErrorId::InvalidBody, e.body_text())
        }
    })
}

pub(crate) fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(ErrorId::InvalidJson, "body must be a JSON object")),
        Err(e) => Err(ApiError::new(ErrorId::InvalidJson, format!("body is not valid JSON: {e}"))),
    }
}

/// A request body the API takes as a JSON object of type `T`, with the
/// error a malformed one gets.
pub(crate) trait ApiBody: serde::de::DeserializeOwned {
    /// The error of a body that is a JSON object but not a `T` (a field of
    /// the wrong type, an unknown one).
    const INVALID: ErrorId;
}

/// The body as a `T`, every refusal in the API's shape: `body-too-large`,
/// `invalid-body`, `invalid-json` (not JSON, or not an object), then
/// `T::INVALID` with serde's words.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: ApiBody, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body(Bytes::from_request(req, state).await)?;
        json_object(&bytes)?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| ApiError::new(T::INVALID, e.to_string()))
    }
}

/// The `Idempotency-Key` header, if the request has one: 1 to 255 visible
/// characters, else 400 `invalid-idempotency-key`.
pub(crate) struct IdempotencyKey(pub(crate) Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get("idempotency-key") else { return Ok(Self(None)) };
        v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).map(|k| Self(Some(k.to_owned()))).ok_or_else(|| {
            ApiError::new(ErrorId::InvalidIdempotencyKey, "Idempotency-Key must be 1 to 255 visible characters")
        })
    }
}

/// `Query` whose rejection is an [`ApiError`] (axum's own is plain text).
pub(crate) struct Q<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::new(ErrorId::InvalidQuery, e.body_text()))
    }
}

pub(crate) fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::new(ErrorId::NoRandomness, "cannot make an id"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) use tocsin_store_api::tocsin_audience::compose::with_message_id;

pub(crate) fn check_payload(payload: &[u8]) -> Result<(), ApiError> {
    let max = ContentEncoding::Aes128Gcm.max_plaintext();
    if payload.len() > max {
        return Err(ApiError::new(
            ErrorId::PayloadTooLarge,
            format!("payload is {} bytes; at most {max} fit one push message", payload.len()),
        ));
    }
    Ok(())
}

pub(crate) const MAX_TOPICS: usize = 100;

pub(crate) fn user_id_field(map: &serde_json::Map<String, Value>) -> Result<Option<String>, ApiError> {
    match map.get("userId") {
        None | Some(Value::Null) => Ok(None),
        // U+0000: PostgreSQL's text cannot hold it.
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 && !s.contains('\0') => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => {
            Err(ApiError::new(ErrorId::InvalidUserId, "userId must be a string of 1 to 256 characters, without U+0000"))
        }
    }
}

pub(crate) fn topics_field(map: &serde_json::Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorId::InvalidTopics,
            format!(
                "topics must be an array of at most {MAX_TOPICS} names of 1 to 64 letters, digits, '.', '_' or '-'"
            ),
        )
    };
    match map.get("topics") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.len() <= MAX_TOPICS => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(s) = item else { return Err(bad()) };
                let ok = !s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                if !ok {
                    return Err(bad());
                }
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            Ok(Some(out))
        }
        _ => Err(bad()),
    }
}

/// An endpoint longer than the store keeps ([`MAX_ENDPOINT_LEN`] bytes, as
/// the URL is stored): 400 `invalid-endpoint`.
pub(crate) fn check_endpoint_len(endpoint: &str) -> Result<(), ApiError> {
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(ApiError::new(
            ErrorId::InvalidEndpoint,
            format!("endpoint is {} bytes; at most {MAX_ENDPOINT_LEN} are accepted", endpoint.len()),
        ));
    }
    Ok(())
}

pub(crate) fn endpoint_and_auth(map: &serde_json::Map<String, Value>) -> Result<(String, String), ApiError> {
    let endpoint = match map.get("endpoint") {
        Some(Value::String(s)) if !s.is_empty() => url::Url::parse(s)
            .map_err(|_| ApiError::new(ErrorId::InvalidEndpoint, "endpoint is not a URL"))?
            .to_string(),
        _ => return Err(ApiError::new(ErrorId::NoEndpoint, "Subscription must have an endpoint")),
    };
    check_endpoint_len(&endpoint)?;
    let auth = map
        .get("keys")
        .and_then(|k| k.get("auth"))
        .and_then(Value::as_str)
        .and_then(|a| b64::decode(a).ok())
        .filter(|a| a.len() == 16)
        .ok_or_else(|| {
            ApiError::new(ErrorId::InvalidAuth, "keys.auth must be the subscription's 16-byte auth secret")
        })?;
    Ok((endpoint, b64::encode(auth)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    pub(crate) limit: Option<i64>,
    #[serde(default)]
    pub(crate) cursor: Option<String>,
    #[serde(default)]
    pub(crate) topic: Option<String>,
    #[serde(default, rename = "userId")]
    pub(crate) user_id: Option<String>,
    /// A segment expression (`GET /v1/subscriptions?where=…`).
    #[serde(default, rename = "where")]
    pub(crate) condition: Option<String>,
}

pub(crate) fn limit(q: &PageQuery) -> Result<i64, ApiError> {
    match q.limit {
        None => Ok(100),
        Some(l) if (1..=1000).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::new(ErrorId::InvalidLimit, "limit must be between 1 and 1000")),
    }
}

/// The `{id}` of a route, whether or not the route also has an `{app}`
/// (axum's `Path<String>` wants exactly one parameter).
pub(crate) struct IdParam(pub(crate) String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(mut params) =
            axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::new(ErrorId::InvalidPath, e.body_text()))?;
        let id = params.remove("id").ok_or_else(|| ApiError::new(ErrorId::InvalidPath, "no id in the path"))?;
        // No stored id or name holds U+0000, and PostgreSQL refuses a query
        // that names one (a 500 otherwise, on every route with an id).
        if id.contains('\0') {
            return Err(ApiError::new(ErrorId::InvalidPath, "a path parameter never contains U+0000"));
        }
        Ok(IdParam(id))
    }
}

/// `tags` of a body: a change to a subscription's tags (`null` removes a
/// key), when present.
pub(crate) fn tags_field(map: &serde_json::Map<String, Value>) -> Result<Option<TagPatch>, ApiError> {
    match map.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => TagPatch::from_json(v).map(Some).map_err(|e| ApiError::new(ErrorId::InvalidTags, e.to_string())),
    }
}

/// `language` of a body (BCP 47), when present.
pub(crate) fn language_field(map: &serde_json::Map<String, Value>) -> Result<Option<Language>, ApiError> {
    match map.get("language") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Language::new(s).map(Some).map_err(|e| ApiError::new(ErrorId::InvalidLanguage, e.to_string()))
        }
        Some(_) => Err(ApiError::new(ErrorId::InvalidLanguage, "language must be a string")),
    }
}

/// `timeZone` of a body (an IANA name), when present.
pub(crate) fn time_zone_field(map: &serde_json::Map<String, Value>) -> Result<Option<TimeZoneName>, ApiError> {
    match map.get("timeZone") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            TimeZoneName::new(s).map(Some).map_err(|e| ApiError::new(ErrorId::InvalidTimeZone, e.to_string()))
        }
        Some(_) => Err(ApiError::new(ErrorId::InvalidTimeZone, "timeZone must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_goes_in_front_of_json_objects_only() {
        let with = |p: &[u8]| with_message_id(p.to_vec(), "m1", "t1", None);
        assert_eq!(with(br#"{"b":1,"a":2}"#), br#"{"messageId":"m1","eventToken":"t1","b":1,"a":2}"#.to_vec());
        assert_eq!(with(b" {}"), br#"{"messageId":"m1","eventToken":"t1"}"#.to_vec());
        assert_eq!(with(br#"{"messageId":"x"}"#), br#"{"messageId":"x"}"#.to_vec());
        assert_eq!(with(b"plain text"), b"plain text".to_vec());
        assert_eq!(with(b"[1]"), b"[1]".to_vec());
        let shop = |p: &[u8]| with_message_id(p.to_vec(), "m1", "t1", Some("shop"));
        assert_eq!(shop(br#"{"b":1}"#), br#"{"messageId":"m1","eventToken":"t1","app":"shop","b":1}"#.to_vec());
        assert_eq!(shop(br#"{"app":"x"}"#), br#"{"messageId":"m1","eventToken":"t1","app":"x"}"#.to_vec());
    }
}
