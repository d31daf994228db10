//! Endpoint policy: the server must never become a proxy into its own network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use tocsin_protocol::push_service::host_is_under;
use tocsin_protocol::PushService;
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

/// The name `FromStr` reads (the hosts of `known` come from their own flag).
impl std::fmt::Display for EndpointPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Any => "any",
            Self::Known(_) => "known",
        })
    }
}

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
///
/// IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
/// `2002:aabb:ccdd::`) are judged by that IPv4 address, since that is where
/// the packets end up. Teredo tunnels, site-local, discard-only and the
/// other special ranges are refused outright.
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
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated, still routed inward)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (s[0] == 0x2001 && s[1] == 0x0000) // Teredo 2001::/32: a tunnel to anywhere
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020) // ORCHIDv2 2001:20::/28
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // NAT64 local use 64:ff9b:1::/48
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)) // discard only 100::/64
        }
    }
}

/// The IPv4 address an IPv6 address carries, for the forms that deliver to it.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4); // ::ffff:a.b.c.d
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low); // IPv4-compatible ::a.b.c.d (not :: or ::1)
    }
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return Some(low); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
        // 6to4
    }
    None
}

/// Looks a host up: all its addresses. The system resolver in production;
/// tests give a stub.
pub trait Resolve: Send + Sync {
    /// The addresses `host` resolves to, or why it does not resolve.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Result<Vec<IpAddr>, String>>;
}

/// A boxed future, for [`Resolve`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The operating system's resolver.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, port)).await.map_err(|e| e.to_string())?.map(|a| a.ip()).collect())
        })
    }
}

impl EndpointPolicy {
    /// The policy for a webhook URL: a site's backend is not a push
    /// service, so `known` guards it as `public` does.
    pub fn for_webhooks(&self) -> Self {
        match self {
            Self::Known(_) => Self::Public,
            p => p.clone(),
        }
    }

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
                    if url.port_or_known_default() != Some(443) {
                        return Err(format!("endpoint of the push service {host} must be on port 443"));
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
        self.check_with(url, &SystemResolver).await
    }

    /// [`check`](Self::check) with a resolver of the caller's.
    pub async fn check_with(&self, url: &Url, resolver: &dyn Resolve) -> Result<(), String> {
        self.check_static(url)?;
        if *self != Self::Public {
            return Ok(());
        }
        let Some(Host::Domain(host)) = url.host() else { return Ok(()) };
        // A major push service's host on its one port needs no lookup; on
        // any other port it is looked up like any host (each port of it
        // would otherwise be an origin of its own, with state, unchecked).
        if is_known(&host.trim_end_matches('.').to_ascii_lowercase(), &[]) && url.port_or_known_default() == Some(443) {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs =
            resolver.resolve(host, port).await.map_err(|e| format!("endpoint host {host} does not resolve: {e}"))?;
        if addrs.is_empty() {
            return Err(format!("endpoint host {host} does not resolve"));
        }
        if let Some(bad) = addrs.iter().find(|a| !is_public(**a)) {
            return Err(format!("endpoint host {host} resolves to a non-public address {bad}"));
        }
        Ok(())
    }
}

/// A host of one of the major push services (Google FCM, Mozilla autopush,
/// Microsoft WNS, Apple: `tocsin_protocol::push_service::HOSTS`), or of one
/// added; a host matches itself and its subdomains.
fn is_known(host: &str, extra: &[String]) -> bool {
    PushService::of_host(host) != PushService::Other || extra.iter().any(|k| host_is_under(host, k))
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
    fn ipv6_forms_that_carry_an_ipv4_address_are_judged_by_it() {
        for (ip, public) in [
            ("2002:7f00:1::", false),       // 6to4 of 127.0.0.1
            ("2002:a00:1::1", false),       // 6to4 of 10.0.0.1
            ("2002:808:808::1", true),      // 6to4 of 8.8.8.8
            ("64:ff9b::7f00:1", false),     // NAT64 of 127.0.0.1
            ("64:ff9b::a9fe:a9fe", false),  // NAT64 of 169.254.169.254
            ("64:ff9b::808:808", true),     // NAT64 of 8.8.8.8
            ("64:ff9b:1::808:808", false),  // NAT64 local use
            ("::7f00:1", false),            // IPv4-compatible 127.0.0.1
            ("::a00:1", false),             // IPv4-compatible 10.0.0.1
            ("::808:808", true),            // IPv4-compatible 8.8.8.8
            ("::ffff:192.168.1.1", false),  // IPv4-mapped
            ("2001:0:4136:e378::1", false), // Teredo
            ("fec0::1", false),             // site local
            ("100::1", false),              // discard only
            ("2001:20::1", false),          // ORCHIDv2
            ("2606:4700:4700::1111", true), // a public address
            ("::", false),
            ("::1", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(is_public(ip), public, "{ip}");
        }
    }

    #[test]
    fn numeric_ipv4_forms_and_trailing_dots_are_refused() {
        let p = EndpointPolicy::Public;
        for bad in [
            "https://2130706433/x",               // decimal 127.0.0.1
            "https://0177.0.0.1/x",               // octal
            "https://0x7f.0.0.1/x",               // hex
            "https://0x7f000001/x",               // one hex number
            "https://127.1/x",                    // short form
            "https://017700000001/x",             // one octal number
            "https://0xa9.0xfe.0xa9.0xfe/latest", // 169.254.169.254
            "https://127.0.0.1./x",               // trailing dot
            "https://localhost./x",
            "https://LOCALHOST/x",
            "https://foo.local./x",
            "https://[0:0:0:0:0:ffff:7f00:1]/x",
            "https://[::ffff:7f00:1]/x",
            "https://[64:ff9b::a00:1]/x",
        ] {
            assert!(p.check_static(&url(bad)).is_err(), "{bad}");
        }
    }

    /// A resolver that answers from a table and counts its lookups.
    struct Stub(std::sync::Mutex<Vec<String>>);

    impl Resolve for Stub {
        fn resolve<'a>(&'a self, host: &'a str, _: u16) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
            if let Ok(mut asked) = self.0.lock() {
                asked.push(host.to_owned());
            }
            let answer = match host {
                "public.example" => Ok(vec!["93.184.215.14".parse().unwrap()]),
                "inward.example" => Ok(vec!["10.1.2.3".parse().unwrap()]),
                "mixed.example" => Ok(vec!["93.184.215.14".parse().unwrap(), "127.0.0.1".parse().unwrap()]),
                "mapped.example" => Ok(vec!["::ffff:169.254.169.254".parse().unwrap()]),
                "empty.example" => Ok(vec![]),
                _ => Err("no such host".to_owned()),
            };
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn the_dns_branch_refuses_names_that_point_inward() {
        let stub = Stub(Default::default());
        let p = EndpointPolicy::Public;
        assert!(p.check_with(&url("https://public.example/push/1"), &stub).await.is_ok());
        for bad in [
            "https://inward.example/x",
            "https://mixed.example/x",
            "https://mapped.example/x",
            "https://empty.example/x",
            "https://unknown.example/x",
            "https://inward.example./x",
        ] {
            let e = p.check_with(&url(bad), &stub).await.unwrap_err();
            assert!(e.contains("non-public") || e.contains("does not resolve"), "{bad}: {e}");
        }
        // The major push services are trusted without a lookup; `any` and
        // `known` look nothing up.
        stub.0.lock().unwrap().clear();
        assert!(p.check_with(&url("https://fcm.googleapis.com/fcm/send/x"), &stub).await.is_ok());
        assert!(p.check_with(&url("https://web.push.apple.com./x"), &stub).await.is_ok());
        assert!(EndpointPolicy::Any.check_with(&url("https://inward.example/x"), &stub).await.is_ok());
        let known = EndpointPolicy::Known(vec!["inward.example".into()]);
        assert!(known.check_with(&url("https://inward.example/x"), &stub).await.is_ok());
        assert!(stub.0.lock().unwrap().is_empty(), "looked up: {:?}", stub.0.lock().unwrap());
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
        assert!(known.check_static(&url("https://fcm.googleapis.com:443/fcm/send/x")).is_ok());
        assert!(known.check_static(&url("https://fcm.googleapis.com:8443/fcm/send/x")).is_err(), "443 only");
        assert!(known.check_static(&url("https://push.example.org:444/x")).is_err(), "443 only");
    }
}
