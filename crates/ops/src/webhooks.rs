//! Registering a webhook: which event types, a note, a URL of the right
//! shape, at most [`MAX_WEBHOOKS`] an app. Whether the URL's host may be
//! reached (the endpoint policy, with its DNS check) is the caller's to
//! decide between [`Registration::parse`] and [`register`].

use tocsin_store_api::{AppId, EventType, NewWebhook, Outbox, StoreError, WebhookRow};

/// Longest webhook URL.
pub const MAX_URL: usize = 2048;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 256;
/// Most webhooks per app.
pub const MAX_WEBHOOKS: usize = 20;

/// Why a webhook was not registered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// `events` is empty or names an unknown type.
    #[error("{0}")]
    Events(String),
    /// The description is too long.
    #[error("description is longer than {MAX_DESCRIPTION} characters")]
    Description,
    /// The URL is not an http(s) URL, or is too long.
    #[error("{0}")]
    Url(String),
    /// The app has [`MAX_WEBHOOKS`].
    #[error("an app has at most {MAX_WEBHOOKS} webhooks")]
    TooMany,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A webhook to register, checked.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Where deliveries go.
    pub url: url::Url,
    /// The types it gets, each once, in the order named.
    pub events: Vec<EventType>,
    /// The operator's note, if not empty.
    pub description: Option<String>,
}

impl Registration {
    /// Checks what was asked for.
    pub fn parse(url: &str, events: &[String], description: Option<String>) -> Result<Self, WebhookError> {
        let mut types = Vec::new();
        for name in events {
            match EventType::parse(name).filter(|t| *t != EventType::WebhookTest) {
                Some(t) if !types.contains(&t) => types.push(t),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    return Err(WebhookError::Events(format!(
                        "unknown event type {name:?}; known: {}",
                        known.join(", ")
                    )));
                }
            }
        }
        if types.is_empty() {
            return Err(WebhookError::Events("events must name at least one event type".into()));
        }
        let description = description.filter(|d| !d.is_empty());
        if description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
            return Err(WebhookError::Description);
        }
        if url.len() > MAX_URL {
            return Err(WebhookError::Url(format!("url is longer than {MAX_URL} bytes")));
        }
        let url = url::Url::parse(url).map_err(|e| WebhookError::Url(format!("url is not a URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(WebhookError::Url("url must be https:".into()));
        }
        Ok(Self { url, events: types, description })
    }
}

/// Stores the webhook as `id` with its signing `secret`, unless the app
/// has [`MAX_WEBHOOKS`] already.
pub async fn register(
    outbox: &dyn Outbox,
    app: AppId,
    registration: Registration,
    id: String,
    secret: String,
    now: i64,
) -> Result<WebhookRow, WebhookError> {
    if outbox.webhooks(app).await?.len() >= MAX_WEBHOOKS {
        return Err(WebhookError::TooMany);
    }
    let new = NewWebhook {
        id,
        app,
        url: registration.url.to_string(),
        events: registration.events,
        description: registration.description,
        secret,
        created_at: now,
    };
    Ok(outbox.create_webhook(&new).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_checked() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok =
            Registration::parse("https://h.example/x", &names(&["message.done", "message.done"]), Some(String::new()))
                .expect("valid");
        assert_eq!((ok.events, ok.description), (vec![EventType::MessageDone], None));
        for (url, events) in [
            ("https://h.example/x", names(&[])),
            ("https://h.example/x", names(&["webhook.test"])),
            ("https://h.example/x", names(&["nope"])),
        ] {
            assert!(matches!(Registration::parse(url, &events, None), Err(WebhookError::Events(_))));
        }
        for url in ["ftp://h.example/", "not a url", &format!("https://h.example/{}", "x".repeat(MAX_URL))] {
            assert!(matches!(Registration::parse(url, &names(&["message.done"]), None), Err(WebhookError::Url(_))));
        }
        let long = Some("é".repeat(MAX_DESCRIPTION + 1));
        assert!(matches!(
            Registration::parse("https://h.example/", &names(&["message.done"]), long),
            Err(WebhookError::Description)
        ));
    }
}
