//! A webhook URL as it may be shown: without the password (or user) it
//! carries for the receiver's basic authentication. Every view and log of
//! a webhook uses this; only the dispatcher sends the URL whole.

/// `url` with its userinfo replaced by `***` (unchanged when it has none,
/// or does not parse: then nothing of it can be told apart as a password,
/// and it is shown as `***`).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "***".to_owned(),
    }
}

/// `text` (an error that may quote the URL) with every copy of `url`
/// redacted.
pub fn redact_in(text: &str, url: &str) -> String {
    if url.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(url, &redact_url(url));
    // A parsed-and-printed copy may differ from what was stored (a trailing
    // slash, case of the scheme): redact that form too.
    if let Ok(parsed) = url::Url::parse(url) {
        out = out.replace(parsed.as_str(), &redact_url(url));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_shows() {
        assert_eq!(redact_url("https://user:hunter2@hooks.example.org/x?a=1"), "https://***@hooks.example.org/x?a=1");
        assert_eq!(redact_url("https://:hunter2@hooks.example.org/"), "https://***@hooks.example.org/");
        assert_eq!(redact_url("https://hooks.example.org/x"), "https://hooks.example.org/x");
        assert_eq!(redact_url("not a url hunter2"), "***");
        let e = "error sending request for url (https://user:hunter2@hooks.example.org/x)";
        let r = redact_in(e, "https://user:hunter2@hooks.example.org/x");
        assert!(!r.contains("hunter2") && r.contains("hooks.example.org"), "{r}");
    }
}
