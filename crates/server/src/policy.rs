//! Endpoint policy: the server must never become a proxy into its own network.

use std::net::IpAddr;
use std::str::FromStr;

use url::{Host, Url};

/// Which endpoints subscriptions may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointPolicy {
    /// `https://`, and a host that resolves only to public addresses (the default).
    Public,
    /// Anything `http(s)`: for development with a local push service.
    Any,
    /// Only the hosts of the major push services (and any added).
    Known(Vec<String>),
}

/// The push services' hosts `known` accepts: Google FCM, Mozilla autopush,
/// Microsoft WNS, Apple. A host matches itself and its subdomains.
pub const KNOWN_PUSH_HOSTS: &[&str] = &[
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "push.services.mozilla.com",
    "notify.windows.com",
    "push.apple.com",
];

impl FromStr for EndpointPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "public" => Ok(Self::Public),
            "any" => Ok(Self::Any),
            "known" => Ok(Self::Known(Vec::new())),
            other => Err(format!("endpoint policy must be public, any or known, got {other:?}")),
        }
    }
}

/// Is this address one a public push service could have?
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b)) // NAT64 reaches IPv4 space
        }
    }
}

impl EndpointPolicy {
    /// The checks that need no DNS: scheme, literal addresses, local names,
    /// the known-host list.
    pub fn check_static(&self, url: &Url) -> Result<(), String> {
        match self {
            Self::Any => Ok(()),
            Self::Public | Self::Known(_) => {
                if url.scheme() != "https" {
                    return Err("endpoint must be https://".into());
                }
                let host = match url.host() {
                    None => return Err("endpoint has no host".into()),
                    Some(Host::Ipv4(ip)) => return public_or(IpAddr::V4(ip)),
                    Some(Host::Ipv6(ip)) => return public_or(IpAddr::V6(ip)),
                    Some(Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
                };
                if host == "localhost"
                    || host.ends_with(".localhost")
                    || host.ends_with(".local")
                    || !host.contains('.')
                {
                    return Err(format!("endpoint host {host} is not a public name"));
                }
                if let Self::Known(extra) = self {
                    if !is_known(&host, extra) {
                        return Err(format!("endpoint host {host} is not a known push service"));
                    }
                }
                Ok(())
            }
        }
    }

    /// The full check: static, then (for `public`) every address the host
    /// resolves to must be public. The major push services' hosts are
    /// trusted without a lookup: the lookup is there to stop a name that
    /// points into the server's own network, and theirs do not.
    pub async fn check(&self, url: &Url) -> Result<(), String> {
        self.check_static(url)?;
        if *self != Self::Public {
            return Ok(());
        }
        let Some(Host::Domain(host)) = url.host() else { return Ok(()) };
        if is_known(&host.trim_end_matches('.').to_ascii_lowercase(), &[]) {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("endpoint host {host} does not resolve: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("endpoint host {host} does not resolve"));
        }
        if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(format!("endpoint host {host} resolves to a non-public address {}", bad.ip()));
        }
        Ok(())
    }
}

fn is_known(host: &str, extra: &[String]) -> bool {
    KNOWN_PUSH_HOSTS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .any(|k| host == k || host.ends_with(&format!(".{k}")))
}

fn public_or(ip: IpAddr) -> Result<(), String> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(format!("endpoint address {ip} is not public"))
    }
}

impl tocsin_delivery::engine::EndpointCheck for EndpointPolicy {
    fn check(&self, endpoint: &Url) -> Result<(), String> {
        self.check_static(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn public_refuses_local_and_private_targets() {
        let p = EndpointPolicy::Public;
        for bad in [
            "http://fcm.googleapis.com/x",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://192.168.0.1/x",
            "https://172.16.5.4/x",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://localhost/x",
            "https://foo.localhost/x",
            "https://intranet/x",
        ] {
            assert!(p.check_static(&url(bad)).is_err(), "{bad}");
        }
        assert!(p.check_static(&url("https://fcm.googleapis.com/fcm/send/abc")).is_ok());
        assert!(p.check_static(&url("https://8.8.8.8/x")).is_ok());
    }

    #[test]
    fn any_allows_local_and_known_lists_hosts() {
        assert!(EndpointPolicy::Any.check_static(&url("http://127.0.0.1:8090/push/1")).is_ok());
        let known = EndpointPolicy::Known(vec!["push.example.org".into()]);
        assert!(known.check_static(&url("https://fcm.googleapis.com/fcm/send/x")).is_ok());
        assert!(known.check_static(&url("https://web.push.apple.com/abc")).is_ok());
        assert!(known.check_static(&url("https://wns2-by3p.notify.windows.com/w/?token=x")).is_ok());
        assert!(known.check_static(&url("https://push.example.org/x")).is_ok());
        assert!(known.check_static(&url("https://evil.example.com/x")).is_err());
        assert!(known.check_static(&url("https://notfcm.googleapis.com.evil.com/x")).is_err());
    }
}
