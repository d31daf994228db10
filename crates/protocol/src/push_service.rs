//! Which vendor's push service an endpoint belongs to, by its host, and
//! [`QUIRKS`]: what each vendor's service does differently from the RFCs,
//! and what Tocsin does about it (the README's table is this one).

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

/// One way a push service departs from what the RFCs let a sender expect.
#[derive(Debug, Clone, Copy)]
pub struct Quirk {
    /// Whose service.
    pub service: PushService,
    /// What it does.
    pub behaviour: &'static str,
    /// What Tocsin does about it, and where.
    pub handling: &'static str,
    /// Where it is reported or written down.
    pub source: &'static str,
}

/// Every push-service quirk Tocsin works around, in one place.
pub const QUIRKS: &[Quirk] = &[
    Quirk {
        service: PushService::Apple,
        behaviour: "answers 403 BadJwtToken to VAPID subjects FCM and Mozilla accept: mailto: or https: on localhost, \
                    .local, .invalid, .test, .example, example.com",
        handling: "`tocsin serve` refuses to start with such a subject, and apps refuse one, unless \
                   --endpoint-policy any (VapidSubject::apple_rejects); the 403 is classified as a VAPID failure \
                   (outcome::classify), not as a gone subscription",
        source: "web-push-libs/pywebpush#175, web-push-libs/web-push-php#406, SherClockHolmes/webpush-go#81",
    },
    Quirk {
        service: PushService::Apple,
        behaviour: "revokes a subscription when a push shows no notification, and may clear the service worker; \
                    Home Screen web apps only on iOS and iPadOS",
        handling: "declarative messages (format declarative or auto) are shown by Safari without a service worker; \
                   sw.js shows a notification for every push",
        source: "firebase/firebase-js-sdk#8010, binwiederhier/ntfy#1533, W3C Push API (declarative push message)",
    },
    Quirk {
        service: PushService::Apple,
        behaviour: "reads a declarative message's app_badge and mutable inside notification, where the standard \
                    reads them at the top level; needs navigate and icon as absolute URLs",
        handling: "declarative messages carry both placements and absolute URLs (declarative::Declarative::to_json)",
        source: "WebKit Source/WebCore/Modules/notifications/NotificationJSONParser.cpp",
    },
    Quirk {
        service: PushService::Apple,
        behaviour: "accepts at most 4096 bytes of push message body, like the others, and no more",
        handling: "a payload is refused (400 payload-too-large) when it does not fit one 4096-byte aes128gcm \
                   record: 3993 bytes of plaintext (ContentEncoding::max_plaintext), declarative and classic alike",
        source: "RFC 8291 section 4; Apple, Sending web push notifications in web apps and browsers",
    },
    Quirk {
        service: PushService::Wns,
        behaviour: "answers 406 Not Acceptable (X-WNS-Status: appthrottled) when the sender is throttled",
        handling: "406 is retried with backoff and Retry-After, like 429 (outcome::classify, RetryReason::Throttled)",
        source: "Microsoft, Push notification service request and response headers",
    },
    Quirk {
        service: PushService::Mozilla,
        behaviour: "Firefox for Android is reached through autopush's FCM bridge, which takes less than 4096 bytes: \
                    the base64 of the encrypted body and its headers must fit FCM's 4096-byte data limit, about 3 KB \
                    of payload; a larger one is answered 413",
        handling: "413 is a failure for good with reason payload-too-large (outcome::classify), counted per message; \
                   the README advises payloads under 2.5 KB for Firefox on Android",
        source: "mozilla-services/autopush, autopush/router/fcmv1.py (max_data)",
    },
];

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
