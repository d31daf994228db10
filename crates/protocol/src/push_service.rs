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

/// The vendors' push service domains: a host is a vendor's when it is one
/// of these or a subdomain of one.
pub const HOSTS: &[(&str, PushService)] = &[
    ("fcm.googleapis.com", PushService::Fcm),
    ("android.googleapis.com", PushService::Fcm),
    ("push.services.mozilla.com", PushService::Mozilla),
    ("push.apple.com", PushService::Apple),
    ("notify.windows.com", PushService::Wns),
];

/// Whether `host` (lower case, no trailing dot) is `domain` or under it.
pub fn host_is_under(host: &str, domain: &str) -> bool {
    host.strip_suffix(domain).is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

impl PushService {
    /// The service of an endpoint's host (a port, if any, is ignored).
    pub fn of_host(host: &str) -> Self {
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        HOSTS.iter().find(|(domain, _)| host_is_under(&host, domain)).map_or(Self::Other, |(_, s)| *s)
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
    use super::host_is_under;
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
        assert!(host_is_under("a.b.example", "b.example") && host_is_under("b.example", "b.example"));
        assert!(!host_is_under("ab.example", "b.example"));
    }
}
