//! Every error the API answers, in one enum: its stable id (the `id` of
//! `{"error":{"id","message"}}`), its HTTP status, what it means (the
//! README's error table and the OpenAPI description are checked against
//! these); `tocsin_http_errors_total` counts each by id and status. A handler can make
//! no other: [`super::ApiError`] takes an [`ErrorId`].

use axum::http::StatusCode;

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $status:ident, $meaning:literal; )*) => {
        /// An error the API answers with; see the module's documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum ErrorId {
            $( $(#[$doc])* #[doc = $meaning] #[serde(rename = $id)] $variant, )*
        }

        impl ErrorId {
            /// Every error, in the catalogue's order.
            pub const ALL: &'static [ErrorId] = &[$(ErrorId::$variant),*];

            /// The stable id clients match on.
            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorId::$variant => $id, )* }
            }

            /// The HTTP status it is answered with.
            pub const fn status(self) -> StatusCode {
                match self { $( ErrorId::$variant => StatusCode::$status, )* }
            }

            /// What it means, for the documentation; the answer's message
            /// says what was wrong with this request.
            pub const fn meaning(self) -> &'static str {
                match self { $( ErrorId::$variant => $meaning, )* }
            }
        }
    };
}

catalogue! {
    // Requests in general.
    InvalidBody = "invalid-body", BAD_REQUEST, "The body could not be read, or is not what this route takes.";
    InvalidJson = "invalid-json", BAD_REQUEST, "The body is not JSON, or not a JSON object.";
    InvalidQuery = "invalid-query", BAD_REQUEST, "A query parameter is malformed.";
    InvalidPath = "invalid-path", BAD_REQUEST, "A path parameter is malformed.";
    InvalidLimit = "invalid-limit", BAD_REQUEST, "`limit` is out of its range.";
    InvalidCursor = "invalid-cursor", BAD_REQUEST, "`before`/`after` is not a cursor this list gave.";
    InvalidFilter = "invalid-filter", BAD_REQUEST, "A list filter is malformed.";
    InvalidDays = "invalid-days", BAD_REQUEST, "`days` is out of its range.";
    BodyTooLarge = "body-too-large", PAYLOAD_TOO_LARGE, "The request body is larger than `--body-limit`.";
    RequestTimeout = "request-timeout", REQUEST_TIMEOUT, "The request was not received within the server's timeout.";
    NotFound = "not-found", NOT_FOUND, "There is no such route.";
    MethodNotAllowed = "method-not-allowed", METHOD_NOT_ALLOWED, "The route does not take this method.";
    RateLimited = "rate-limited", TOO_MANY_REQUESTS, "Too many requests from this address (or test notifications for this subscription); `Retry-After` says when to try again.";
    // Tokens and scopes.
    Unauthorized = "unauthorized", UNAUTHORIZED, "The route needs an API token (`Authorization: Bearer`), and none or an unknown one was given.";
    InsufficientScope = "insufficient-scope", FORBIDDEN, "The token's scope does not allow this.";
    ServerTokenRequired = "server-token-required", FORBIDDEN, "Only a token made for every app may do this.";
    // Apps and keys.
    AppNotFound = "app-not-found", NOT_FOUND, "There is no app of this name, or the token belongs to another app.";
    InvalidApp = "invalid-app", BAD_REQUEST, "The app to create is malformed.";
    InvalidAppName = "invalid-app-name", BAD_REQUEST, "An app's name is 1 to 40 of a-z, 0-9 and -.";
    AppExists = "app-exists", CONFLICT, "An app of this name exists.";
    InvalidVapidSubject = "invalid-vapid-subject", BAD_REQUEST, "The VAPID subject is not `mailto:` or `https:`, or is one Apple's push service refuses.";
    InvalidCorsOrigin = "invalid-cors-origin", BAD_REQUEST, "A CORS origin is not a valid header value.";
    UnableToCreateApp = "unable-to-create-app", INTERNAL_SERVER_ERROR, "The app could not be stored.";
    UnableToRotate = "unable-to-rotate", INTERNAL_SERVER_ERROR, "The new key could not be made or stored.";
    KeyNotFound = "key-not-found", NOT_FOUND, "The app has no key with this id.";
    KeyIsCurrent = "key-is-current", CONFLICT, "The current key cannot be retired; rotate first.";
    KeyInUse = "key-in-use", CONFLICT, "Subscriptions still use the key; retire it with `force` to delete them with it.";
    UnknownVapidKey = "unknown-vapid-key", BAD_REQUEST, "The `applicationServerKey` named is not one of the app's keys.";
    // Subscriptions.
    NoEndpoint = "no-endpoint", BAD_REQUEST, "The subscription has no `endpoint`.";
    InvalidEndpoint = "invalid-endpoint", BAD_REQUEST, "The endpoint is not an absolute https URL, or is too long.";
    EndpointNotAllowed = "endpoint-not-allowed", BAD_REQUEST, "The endpoint's host is not allowed by the endpoint policy.";
    EndpointInOtherApp = "endpoint-in-other-app", CONFLICT, "The endpoint is stored in another app.";
    NoKeys = "no-keys", BAD_REQUEST, "The subscription has no `keys`.";
    InvalidP256dh = "invalid-p256dh", BAD_REQUEST, "`keys.p256dh` is not a P-256 public key (65 bytes, base64url).";
    InvalidAuth = "invalid-auth", BAD_REQUEST, "`keys.auth` is not a 16-byte secret (base64url).";
    InvalidExpirationTime = "invalid-expiration-time", BAD_REQUEST, "`expirationTime` is not a time in ms up to the year 9999.";
    InvalidTopics = "invalid-topics", BAD_REQUEST, "`topics` is not an array of short topic names.";
    InvalidTags = "invalid-tags", BAD_REQUEST, "`tags` is not an object of at most 50 keys (1 to 64 of `a-z 0-9 _ . : -`) to a string of at most 256 characters, a number or a boolean (`null` removes a key in a change); the message names the key.";
    InvalidLanguage = "invalid-language", BAD_REQUEST, "`language` is not a BCP 47 language tag such as `en` or `pt-BR`.";
    InvalidTimeZone = "invalid-time-zone", BAD_REQUEST, "`timeZone` is not an IANA time zone name such as `Europe/Paris`.";
    ClientTagsDisabled = "client-tags-disabled", FORBIDDEN, "This app takes tags only from its backend (`client-tags = false`).";
    InvalidUserId = "invalid-user-id", BAD_REQUEST, "`userId` is empty or too long.";
    InvalidOldEndpoint = "invalid-old-endpoint", BAD_REQUEST, "`oldEndpoint` is malformed or too long.";
    SubscriptionNotProven = "subscription-not-proven", FORBIDDEN, "The endpoint is stored with other keys: only the holder of its `keys.auth` may change it.";
    OldSubscriptionNotProven = "old-subscription-not-proven", FORBIDDEN, "`oldEndpoint` came without its subscription's auth secret.";
    SubscriptionNotFound = "subscription-not-found", NOT_FOUND, "No subscription with this id, or this endpoint and auth secret.";
    UserIdsNotEnabled = "user-ids-not-enabled", FORBIDDEN, "The server takes no user ids from browsers (no `--user-signing-secret`).";
    InvalidUserSignature = "invalid-user-signature", FORBIDDEN, "`userSignature` is not the site's HMAC of the `userId`.";
    UnableToSaveSubscription = "unable-to-save-subscription", INTERNAL_SERVER_ERROR, "The subscription could not be stored.";
    UnableToDeleteSubscription = "unable-to-delete-subscription", INTERNAL_SERVER_ERROR, "The subscription could not be deleted.";
    // Messages.
    InvalidMessage = "invalid-message", BAD_REQUEST, "The message is malformed (a field's type, an unknown field).";
    InvalidTarget = "invalid-target", BAD_REQUEST, "`target` is not one of `all`, `topic`, `userIds`, `subscriptionIds`, `segment`, `where`, or is too large.";
    InvalidSendAt = "invalid-send-at", BAD_REQUEST, "`sendAt` is not RFC 3339 or ms since the epoch, or is more than a year ahead.";
    SendAtPassed = "send-at-passed", BAD_REQUEST, "`sendAt` with `inLocalTime` has already passed in every time zone.";
    InvalidMessageRules = "invalid-message-rules", BAD_REQUEST, "`inLocalTime`, `skipPassedZones`, `ignoreQuietHours`, `frequencyCap`, `tags` or `ratePerMinute` of a message is not as documented (`tags`: at most 10 of 1 to 64 characters of `[a-z0-9_.:-]`; `skipPassedZones` only with `inLocalTime`; `ratePerMinute` at most 1000000).";
    InvalidAbTest = "invalid-ab-test", BAD_REQUEST, "`variants` or `abTest` of a message is not as documented: 2 to 8 variants (each a payload, instead of `payload`) with `abTest` `{samplePercent: 1-100, decideAfter: \"1m\" to \"30d\", metric: clicked or shown, ifNoWinner: send-best or stop}`; not with `inLocalTime`.";
    InvalidUrgency = "invalid-urgency", BAD_REQUEST, "`urgency` is not `very-low`, `low`, `normal` or `high`.";
    InvalidTopic = "invalid-topic", BAD_REQUEST, "`topic` is not at most 32 characters of the URL-safe base64 alphabet.";
    InvalidIdempotencyKey = "invalid-idempotency-key", BAD_REQUEST, "`Idempotency-Key` is not 1 to 255 visible characters.";
    InvalidFormat = "invalid-format", BAD_REQUEST, "`format` is not `classic`, `declarative` or `auto`.";
    PayloadTooLarge = "payload-too-large", BAD_REQUEST, "The payload does not fit one push message (4 KB encrypted).";
    InvalidTemplate = "invalid-template", BAD_REQUEST, "A template in the message's title, body or link does not compile (Liquid; the message names the field), or uses what templates may not (loops, include, assign).";
    InvalidLocalizedText = "invalid-localized-text", BAD_REQUEST, "A text by language is not a map of BCP 47 tags to strings, or the message has no `defaultLanguage` among its keys.";
    DeclarativeMissingTitle = "declarative-missing-title", BAD_REQUEST, "A declarative message needs `notification.title`.";
    DeclarativeMissingNavigate = "declarative-missing-navigate", BAD_REQUEST, "A declarative message needs `notification.navigate`.";
    DeclarativeInvalidNavigate = "declarative-invalid-navigate", BAD_REQUEST, "`navigate` is not an https URL (or a relative one with `--public-url`).";
    DeclarativeInvalidField = "declarative-invalid-field", BAD_REQUEST, "A member of the declarative message is malformed (the message names it).";
    MessageNotFound = "message-not-found", NOT_FOUND, "The app has no message with this id.";
    MessageAlreadyDone = "message-already-done", CONFLICT, "The message is done or cancelled already.";
    UnableToStoreMessage = "unable-to-store-message", INTERNAL_SERVER_ERROR, "The message could not be stored.";
    UnableToSendMessages = "unable-to-send-messages", INTERNAL_SERVER_ERROR, "The classic `/api/push` (or a test notification) could not be stored.";
    NoRandomness = "no-randomness", INTERNAL_SERVER_ERROR, "The server could not make a random id or key.";
    // Segments and audiences.
    InvalidSegment = "invalid-segment", BAD_REQUEST, "The segment expression does not parse (the message gives the column), or is over 2,000 characters or 32 levels deep.";
    InvalidSegmentName = "invalid-segment-name", BAD_REQUEST, "A segment's name is 1 to 64 of a-z, 0-9, _ and -.";
    SegmentExists = "segment-exists", CONFLICT, "The app has a segment of this name.";
    SegmentNotFound = "segment-not-found", NOT_FOUND, "The app has no segment of this name.";
    // Delivery rules.
    InvalidRules = "invalid-rules", BAD_REQUEST, "An app's delivery rules are not as documented (the message names the field): `defaultTimeZone` an IANA name, `quietHours` `{start, end}` as `HH:MM` and different, at most 10 `frequencyCaps` of `{max: 1..100, per: 1m..30d, tag?}`, `ratePerMinute` at most 1000000.";
    // Interactions reported by service workers.
    InvalidEvent = "invalid-event", BAD_REQUEST, "The report is not `shown` or `clicked` with a `messageId`.";
    InvalidEventToken = "invalid-event-token", FORBIDDEN, "`eventToken` is not the one the message carried.";
    UnableToSaveEvent = "unable-to-save-event", INTERNAL_SERVER_ERROR, "The report could not be counted.";
    // Webhooks and the event stream.
    InvalidWebhook = "invalid-webhook", BAD_REQUEST, "The webhook to register is malformed.";
    InvalidEvents = "invalid-events", BAD_REQUEST, "`events` is empty or names an unknown event type.";
    InvalidWebhookUrl = "invalid-webhook-url", BAD_REQUEST, "The webhook URL is not an http(s) URL the endpoint policy allows.";
    TooManyWebhooks = "too-many-webhooks", CONFLICT, "The app has 20 webhooks.";
    WebhookNotFound = "webhook-not-found", NOT_FOUND, "The app has no webhook with this id.";
    UnableToCreateWebhook = "unable-to-create-webhook", INTERNAL_SERVER_ERROR, "The webhook could not be stored.";
    InvalidLastEventId = "invalid-last-event-id", BAD_REQUEST, "`Last-Event-ID` is not an event id.";
    TooManyStreams = "too-many-streams", TOO_MANY_REQUESTS, "The token holds 8 event streams on this node, or its app half of the node's.";
    /// The same id as [`ErrorId::TooManyStreams`], as documented since
    /// the stream came: the node as a whole is full, not the caller's share.
    NodeStreamsFull = "too-many-streams", SERVICE_UNAVAILABLE, "The node serves 64 event streams.";
    // The database.
    DatabaseUnavailable = "database-unavailable", SERVICE_UNAVAILABLE, "The database did not answer in time; nothing was changed; `Retry-After` says when to try again.";
    StorageFull = "storage-full", SERVICE_UNAVAILABLE, "The database's disk is full; nothing was changed; `Retry-After` says when to try again.";
    StorageFailed = "storage-failed", INTERNAL_SERVER_ERROR, "The database failed otherwise than by being away or full (the log says how); nothing was changed.";
}

impl ErrorId {
    /// The id an error of the protocol crate names (`SubscriptionError::id`,
    /// `DeclarativeError::id`), all of them 400s in the catalogue; an id
    /// the catalogue lacks (a test proves there is none) is `invalid-body`.
    pub fn of_protocol(id: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|e| e.as_str() == id && e.status() == StatusCode::BAD_REQUEST)
            .unwrap_or(Self::InvalidBody)
    }
}

/// In OpenAPI: a string, one of the catalogue's ids (written by hand: the
/// derive does not see the ids through the macro).
impl utoipa::PartialSchema for ErrorId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let mut ids: Vec<&'static str> = Vec::new();
        for id in Self::ALL.iter().map(|e| e.as_str()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A stable error id: the README's table of errors says what each means."))
            .enum_values(Some(ids))
            .into()
    }
}

impl utoipa::ToSchema for ErrorId {
    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorId".into()
    }
}

impl std::fmt::Display for ErrorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tests compare an answer's id with the text clients see.
impl PartialEq<&str> for ErrorId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorId;
    use std::collections::BTreeSet;

    /// The README's table of errors, as (id, status, meaning).
    fn documented() -> BTreeSet<(String, u16, String)> {
        let readme = include_str!("../../../../README.md");
        let table = readme.split("### Errors").nth(1).expect("README has a section ### Errors");
        table
            .lines()
            .skip_while(|l| !l.starts_with("| id |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|row| {
                let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
                let [id, status, meaning] = cells[..] else { panic!("a row of three cells: {row}") };
                (id.trim_matches('`').to_owned(), status.parse().expect("a status"), meaning.to_owned())
            })
            .collect()
    }

    #[test]
    fn every_error_is_documented_and_nothing_else() {
        let catalogue: BTreeSet<(String, u16, String)> =
            ErrorId::ALL.iter().map(|e| (e.as_str().to_owned(), e.status().as_u16(), e.meaning().to_owned())).collect();
        let readme = documented();
        let missing: Vec<_> = catalogue.difference(&readme).collect();
        let extra: Vec<_> = readme.difference(&catalogue).collect();
        assert!(missing.is_empty() && extra.is_empty(), "README lacks {missing:#?}\nREADME has beyond it {extra:#?}");
        assert_eq!(catalogue.len(), ErrorId::ALL.len(), "no (id, status) twice");
    }

    #[test]
    fn every_error_of_the_protocol_crate_is_in_the_catalogue() {
        use tocsin_protocol::declarative::DeclarativeError as D;
        use tocsin_protocol::subscription::SubscriptionError as S;
        let ids = [
            S::Json(String::new()).id(),
            S::NoEndpoint.id(),
            S::InvalidEndpoint(String::new()).id(),
            S::NoKeys.id(),
            S::P256dhEncoding.id(),
            S::P256dhInvalid.id(),
            S::AuthEncoding.id(),
            S::AuthLength(0).id(),
            S::ExpirationTime.id(),
            D::MissingTitle.id(),
            D::MissingNavigate.id(),
            D::InvalidNavigate { field: String::new(), why: String::new() }.id(),
            D::Invalid { field: String::new(), why: String::new() }.id(),
        ];
        for id in ids {
            assert_eq!(ErrorId::of_protocol(id).as_str(), id, "{id} is not a 400 of the catalogue");
        }
    }

    /// No answer is made past the catalogue: an error body is written only
    /// by `ApiError` (which takes an `ErrorId`), never by hand.
    #[test]
    fn no_error_body_is_written_by_hand() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("src is readable").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("error/mod.rs") {
                    let text = std::fs::read_to_string(&path).expect("readable");
                    for (n, line) in text.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or_default();
                        // Spelled in two halves so that this line is not one.
                        if code.contains(concat!("\"err", "or\"")) || code.contains(concat!("ErrorDetail", " {")) {
                            offenders.push(format!("{}:{}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "error bodies made outside ApiError: {offenders:?}");
    }
}
