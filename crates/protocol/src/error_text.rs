//! Errors told to people: what the delivery engine records as a failure's
//! example and what a webhook's `lastError` shows are one line each, an
//! error followed by its causes.

/// An error and its sources, joined by `: `; a source whose text the line
/// already holds (many wrappers repeat their cause) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_once() {
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(super::error_chain(&e), "outer: refused");
        let repeated = std::io::Error::other(Outer(std::io::Error::other("x")));
        assert_eq!(super::error_chain(&repeated), "outer: x");
    }
}
