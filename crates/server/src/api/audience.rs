//! Who messages reach, in the site's terms: tags set by its backend
//! (`PATCH /v1/subscriptions/{id}/tags`, `PATCH /v1/users/{userId}/tags`,
//! a `send` token), named segments (`/v1/segments`: made and deleted with
//! a `send` token, read with any), and audience counts
//! (`POST /v1/audience/count`, any token).

use super::*;
use crate::auth::{MessageReader, Sender};
use crate::error::{ApiError, ErrorBody, ErrorId};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tocsin_store_api::tocsin_audience::TagPatch;
use tocsin_store_api::{valid_segment_name, AppId, Condition, SegmentRow, StoreError, TagsOf, TagsPatched, Target};
use utoipa::ToSchema;

/// The longest user id a path may name (as `userId` itself).
const MAX_USER_ID: usize = 256;

fn storage(e: StoreError) -> ApiError {
    ApiError::storage(ErrorId::StorageFailed, "cannot read or write the audience", &e)
}

/// An expression of a request, or why it does not parse (`invalid-segment`,
/// with the column).
pub(crate) fn condition(text: &str) -> Result<Condition, ApiError> {
    Condition::parse(text).map_err(|e| ApiError::new(ErrorId::InvalidSegment, e.to_string()))
}

/// A change of tags from a body: a JSON object (`null` removes a key).
fn tag_change(body: &bytes::Bytes) -> Result<TagPatch, ApiError> {
    let map = json_object(body)?;
    TagPatch::from_json(&Value::Object(map)).map_err(|e| ApiError::new(ErrorId::InvalidTags, e.to_string()))
}

fn patched(result: Result<TagsPatched, StoreError>) -> Result<Vec<tocsin_store_api::StoredSubscription>, ApiError> {
    match result {
        Ok(TagsPatched::Done(rows)) => Ok(rows),
        Ok(TagsPatched::TooMany { subscription_id, tags }) => Err(ApiError::new(
            ErrorId::InvalidTags,
            format!("subscription {subscription_id} would carry {tags} tags; at most 50: nothing was changed"),
        )),
        Err(StoreError::Conflict(m)) => Err(ApiError::new(ErrorId::StorageFailed, m)),
        Err(e) => Err(storage(e)),
    }
}

/// Changes one subscription's tags: each key of the body is set, or
/// removed when `null`; the others stay. Answers the subscription.
#[utoipa::path(patch, path = "/v1/subscriptions/{id}/tags", security(("token" = ["send", "admin"])),
    params(("id" = String, Path, description = "the subscription's id")),
    request_body(content = Object, description = "{\"plan\":\"pro\",\"trial\":null}: at most 50 tags result"),
    responses((status = 200, body = SubscriptionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn patch_subscription_tags(
    token: Sender,
    State(st): State<AppState>,
    IdParam(id): IdParam,
    raw: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let change = tag_change(&body(raw)?)?;
    let sub = super::subscriptions::sub_id(&id)?;
    let rows = patched(st.store.patch_tags(token.app.id, &TagsOf::Subscription(sub), &change, now_ms()).await)?;
    match rows.into_iter().next() {
        Some(row) => Ok(Json(row.into())),
        None => Err(ApiError::new(ErrorId::SubscriptionNotFound, format!("no subscription {id}"))),
    }
}

/// Changes the tags of every subscription of a user, in one transaction:
/// all or none. Answers how many there are.
#[utoipa::path(patch, path = "/v1/users/{userId}/tags", security(("token" = ["send", "admin"])),
    params(("userId" = String, Path, description = "the site's user id")),
    request_body(content = Object, description = "{\"plan\":\"pro\",\"trial\":null}"),
    responses((status = 200, description = "{\"subscriptions\": n}"), (status = 400, body = ErrorBody)))]
pub(crate) async fn patch_user_tags(
    token: Sender,
    State(st): State<AppState>,
    IdParam(user): IdParam,
    raw: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    if user.is_empty() || user.len() > MAX_USER_ID || user.contains('\0') {
        return Err(ApiError::new(ErrorId::InvalidUserId, "a user id is 1 to 256 bytes, without U+0000"));
    }
    let change = tag_change(&body(raw)?)?;
    let rows = patched(st.store.patch_tags(token.app.id, &TagsOf::User(user), &change, now_ms()).await)?;
    Ok(Json(json!({"subscriptions": rows.len()})))
}

/// `POST /v1/segments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    /// 1 to 64 of `a-z 0-9 _ -`, unique in the app.
    name: String,
    /// The expression (README, Segments).
    #[serde(rename = "where")]
    condition: String,
}

impl ApiBody for SegmentRequest {
    const INVALID: ErrorId = ErrorId::InvalidBody;
}

/// A named segment, with how many subscriptions it matches now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentView {
    /// Its name.
    name: String,
    /// Its expression, as it prints (canonical).
    #[serde(rename = "where")]
    condition: String,
    /// Subscriptions it matches now.
    count: i64,
    /// When it was made (RFC 3339).
    created_at: String,
}

async fn view(store: &dyn tocsin_store_api::Store, app: AppId, s: SegmentRow) -> Result<SegmentView, ApiError> {
    let count = store.count_subscriptions(app, &Target::Where(s.condition.clone())).await.map_err(storage)?;
    Ok(SegmentView {
        name: s.name,
        condition: s.condition.as_str().to_owned(),
        count,
        created_at: rfc3339(s.created_at),
    })
}

/// Makes a named segment of the app.
#[utoipa::path(post, path = "/v1/segments", security(("token" = ["send", "admin"])), request_body = SegmentRequest,
    responses((status = 201, body = SegmentView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_segment(
    token: Sender,
    State(st): State<AppState>,
    JsonBody(req): JsonBody<SegmentRequest>,
) -> Result<Response, ApiError> {
    if !valid_segment_name(&req.name) {
        return Err(ApiError::new(ErrorId::InvalidSegmentName, "a segment's name is 1 to 64 of a-z, 0-9, _ and -"));
    }
    let row = SegmentRow { name: req.name, condition: condition(&req.condition)?, created_at: now_ms() };
    if !st.store.create_segment(token.app.id, &row).await.map_err(storage)? {
        return Err(ApiError::new(ErrorId::SegmentExists, format!("the app has a segment {:?}", row.name)));
    }
    Ok((StatusCode::CREATED, Json(view(st.store.as_ref(), token.app.id, row).await?)).into_response())
}

/// The app's segments, by name, each with its count now.
#[utoipa::path(get, path = "/v1/segments", security(("token" = ["read", "send", "admin"])),
    responses((status = 200, description = "{\"items\":[SegmentView]}")))]
pub(crate) async fn list_segments(token: MessageReader, State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut items = Vec::new();
    for s in st.store.segments(token.app.id).await.map_err(storage)? {
        items.push(view(st.store.as_ref(), token.app.id, s).await?);
    }
    Ok(Json(json!({ "items": items })))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorId::SegmentNotFound,
        format!("the app has no segment {:?}", name.chars().take(80).collect::<String>()),
    )
}

/// A segment by name: one that cannot be a segment's name is not looked up
/// (it is not there, and PostgreSQL refuses some text, such as U+0000).
async fn find(st: &AppState, app: AppId, name: &str) -> Result<SegmentRow, ApiError> {
    if !valid_segment_name(name) {
        return Err(not_found(name));
    }
    st.store.segment(app, name).await.map_err(storage)?.ok_or_else(|| not_found(name))
}

/// One segment, with its count now.
#[utoipa::path(get, path = "/v1/segments/{name}", security(("token" = ["read", "send", "admin"])),
    params(("name" = String, Path)), responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_segment(
    token: MessageReader,
    State(st): State<AppState>,
    IdParam(name): IdParam,
) -> Result<Json<SegmentView>, ApiError> {
    let found = find(&st, token.app.id, &name).await?;
    Ok(Json(view(st.store.as_ref(), token.app.id, found).await?))
}

/// Deletes a segment; messages aimed at it that are not sent yet then
/// reach no one.
#[utoipa::path(delete, path = "/v1/segments/{name}", security(("token" = ["send", "admin"])),
    params(("name" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_segment(
    token: Sender,
    State(st): State<AppState>,
    IdParam(name): IdParam,
) -> Result<StatusCode, ApiError> {
    if !valid_segment_name(&name) {
        return Err(not_found(&name));
    }
    match st.store.delete_segment(token.app.id, &name).await.map_err(storage)? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(not_found(&name)),
    }
}

/// `POST /v1/audience/count`: an expression, or a segment's name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountRequest {
    /// An expression.
    #[serde(default, rename = "where")]
    condition: Option<String>,
    /// A segment's name.
    #[serde(default)]
    segment: Option<String>,
}

impl ApiBody for CountRequest {
    const INVALID: ErrorId = ErrorId::InvalidBody;
}

/// How many subscriptions of the app an expression (or a segment)
/// matches now.
#[utoipa::path(post, path = "/v1/audience/count", security(("token" = ["read", "send", "admin"])), request_body = CountRequest,
    responses((status = 200, description = "{\"count\": n}"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn count_audience(
    token: MessageReader,
    State(st): State<AppState>,
    JsonBody(req): JsonBody<CountRequest>,
) -> Result<Json<Value>, ApiError> {
    let target = match (req.condition, req.segment) {
        (Some(text), None) => Target::Where(condition(&text)?),
        (None, Some(name)) => Target::Where(find(&st, token.app.id, &name).await?.condition),
        _ => return Err(ApiError::new(ErrorId::InvalidBody, "give one of where and segment")),
    };
    let count = st.store.count_subscriptions(token.app.id, &target).await.map_err(storage)?;
    Ok(Json(json!({ "count": count })))
}
