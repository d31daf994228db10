//! Which vendor's push service an endpoint belongs to, by its host.

use serde::Serialize;

/// A browser vendor's push service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushService {
    /// Google's Firebase Cloud Messaging (Chrome, Edge on Android, most Chromium browsers).
    Fcm,
    /// Mozilla's autopush (Firefox).
    Mozilla,
    /// Apple's (Safari).
    Apple,
    /// Microsoft's Windows Push Notification Services (Edge on Windows).
    Wns,
    /// Any other host.
    Other,
}

impl PushService {
    /// The service of an endpoint's host (a port, if any, is ignored; a
    /// host is its vendor's when it is one of the vendor's hosts or a
    /// subdomain of one).
    pub fn of_host(host: &str) -> Self {
        let host = host.rsplit_once(':').map_or(
            host,
            |(h, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    host
                }
            },
        );
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
        if under("fcm.googleapis.com") || under("android.googleapis.com") {
            Self::Fcm
        } else if under("push.services.mozilla.com") {
            Self::Mozilla
        } else if under("push.apple.com") {
            Self::Apple
        } else if under("notify.windows.com") {
            Self::Wns
        } else {
            Self::Other
        }
    }

    /// Every service, in the order the API lists them.
    pub const ALL: [PushService; 5] = [Self::Fcm, Self::Mozilla, Self::Apple, Self::Wns, Self::Other];

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fcm => "fcm",
            Self::Mozilla => "mozilla",
            Self::Apple => "apple",
            Self::Wns => "wns",
            Self::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PushService::{self, *};

    #[test]
    fn hosts_and_their_subdomains() {
        for (host, service) in [
            ("fcm.googleapis.com", Fcm),
            ("android.googleapis.com", Fcm),
            ("updates.push.services.mozilla.com", Mozilla),
            ("web.push.apple.com", Apple),
            ("WEB.PUSH.APPLE.COM.", Apple),
            ("wns2-by3p.notify.windows.com", Wns),
            ("fcm.googleapis.com:443", Fcm),
            ("evilfcm.googleapis.com", Other),
            ("push.apple.com.evil.example", Other),
            ("127.0.0.1:8080", Other),
            ("[::1]:8080", Other),
            ("", Other),
        ] {
            assert_eq!(PushService::of_host(host), service, "{host}");
        }
    }
}
