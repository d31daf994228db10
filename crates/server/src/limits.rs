//! Abuse limits on the public routes: token buckets per client address
//! (`--rate-limit-burst`, `--rate-limit-per-second`), addresses exempt from
//! them (`--rate-limit-exempt`), which proxies are believed
//! (`--trusted-proxies`) and in which one header (`--client-ip-header`), and
//! one test notification per subscription per minute.
//!
//! Hand-written rather than `governor`: what is needed is one map of two
//! numbers per address and the wait until the next token (for
//! `Retry-After`), and `governor`'s keyed limiter would bring dashmap and
//! quanta into a build that runs on two cores.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::error::{ApiError, ErrorId};

/// The most addresses tracked; past it, buckets that are full again (idle
/// callers) are dropped, and if that is not enough, the least recently
/// used tenth: an attacker spraying addresses must not grow the server's
/// memory, nor wipe the buckets of the addresses it is limiting.
const MAX_TRACKED: usize = 100_000;

/// Token buckets per client address.
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    exempt: Vec<IpNet>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The key of an address: itself for IPv4, its /64 for IPv6 (one host
/// usually holds a whole /64).
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl RateLimiter {
    /// `burst` requests at once, refilled at `per_second`; `exempt` never limited.
    pub fn new(burst: u32, per_second: f64, exempt: Vec<IpNet>) -> Self {
        Self { burst: f64::from(burst.max(1)), per_second: per_second.max(0.0), exempt, buckets: Mutex::default() }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second).min(self.burst);
        Bucket { tokens, at: now }
    }

    fn wait_for_one(&self, tokens: f64) -> Duration {
        if self.per_second <= 0.0 {
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64(((1.0 - tokens) / self.per_second).max(0.0))
    }

    /// Takes a token for `ip`; `Err(wait)` when there is none.
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.exempt.iter().any(|n| n.contains(&ip.to_canonical())) {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key(ip)) {
            self.evict(&mut buckets, now);
        }
        let b = buckets.get(&key(ip)).map_or(Bucket { tokens: self.burst, at: now }, |b| self.refilled(*b, now));
        if b.tokens < 1.0 {
            buckets.insert(key(ip), b);
            return Err(self.wait_for_one(b.tokens));
        }
        buckets.insert(key(ip), Bucket { tokens: b.tokens - 1.0, at: now });
        Ok(())
    }

    /// Makes room: drops the buckets that are full again (nothing to
    /// remember), then, if that is not enough, the tenth least recently
    /// used. Runs once per `MAX_TRACKED / 10` new addresses at most.
    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = self.burst;
        buckets.retain(|_, b| self.refilled(*b, now).tokens < burst);
        if buckets.len() < MAX_TRACKED * 9 / 10 {
            return;
        }
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        let cut = buckets.len() - MAX_TRACKED * 9 / 10;
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        buckets.retain(|_, b| b.at >= oldest_kept);
        if buckets.len() >= MAX_TRACKED {
            // Only when every bucket shares one instant: nothing is older.
            buckets.clear();
        }
    }
}

/// 429 `rate-limited` saying `what`, with `Retry-After` (whole seconds, at least 1).
pub fn rate_limited(wait: Duration, what: &str) -> ApiError {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    ApiError::new(ErrorId::RateLimited, format!("{what}; try again in {seconds} s")).with_retry_after(seconds)
}

/// Which forwarding header names the client, behind a trusted proxy
/// (`--client-ip-header`). One is believed and the others are ignored: a
/// proxy that sets one passes a client's own copy of the others through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`, most load
    /// balancers): a list, each proxy appending the address it saw.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): `for=` of each element.
    Forwarded,
    /// `X-Real-IP`: one address, set (not appended) by the proxy.
    XRealIp,
}

impl std::fmt::Display for ClientIpHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::XRealIp => "x-real-ip",
        })
    }
}

impl std::str::FromStr for ClientIpHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            "x-real-ip" => Ok(Self::XRealIp),
            _ => Err(format!("{s:?}: expected x-forwarded-for, forwarded or x-real-ip")),
        }
    }
}

impl ClientIpHeader {
    /// The addresses the header names, in order (nearest proxy last);
    /// what does not parse as an address is left out.
    pub fn hops(self, headers: &HeaderMap) -> Vec<IpAddr> {
        let mut hops = Vec::new();
        match self {
            Self::XForwardedFor => {
                for value in headers.get_all("x-forwarded-for") {
                    let text = value.to_str().unwrap_or_default();
                    hops.extend(text.split(',').filter_map(|h| parse_hop(h.trim())));
                }
            }
            Self::XRealIp => {
                for value in headers.get_all("x-real-ip") {
                    hops.extend(parse_hop(value.to_str().unwrap_or_default().trim()));
                }
            }
            Self::Forwarded => {
                for value in headers.get_all("forwarded") {
                    for element in value.to_str().unwrap_or_default().split(',') {
                        for pair in element.split(';') {
                            if let Some((k, v)) = pair.split_once('=') {
                                if k.trim().eq_ignore_ascii_case("for") {
                                    hops.extend(parse_hop(v.trim().trim_matches('"')));
                                }
                            }
                        }
                    }
                }
            }
        }
        hops
    }
}

/// An address as a forwarding header writes it: bare, `[v6]`, `[v6]:port`
/// or `v4:port`.
fn parse_hop(v: &str) -> Option<IpAddr> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    let host = match v.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => v.rsplit_once(':').map_or(v, |(h, _)| h),
    };
    host.parse().ok()
}

/// The client's address: the peer's, unless the peer is a trusted proxy,
/// in which case the nearest address in `header` that is not itself a
/// trusted proxy (read from the right: the left part is whatever the client
/// sent).
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet], header: ClientIpHeader) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    if !is_trusted(&peer.ip()) {
        return peer.ip();
    }
    header.hops(headers).into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer.ip())
}

/// Parses a comma-separated CIDR list (a bare address is its own /32 or /128).
pub fn parse_cidrs(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an address or a CIDR block"))
        })
        .collect()
}

/// At most one event per key per `every` (test notifications per subscription).
pub struct OncePer {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl OncePer {
    /// A gate with this interval.
    pub fn new(every: Duration) -> Self {
        Self { every, last: Mutex::default() }
    }

    /// `Err(wait)` when `key` had its turn less than the interval ago.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = last.get(key) {
            let since = now.duration_since(*t);
            if since < self.every {
                return Err(self.every - since);
            }
        }
        if last.len() >= MAX_TRACKED {
            let every = self.every;
            last.retain(|_, t| now.duration_since(*t) < every);
        }
        last.insert(key.to_owned(), now);
        Ok(())
    }
}

/// Everything the public routes are limited by.
pub struct Limits {
    /// `POST`/`DELETE /api/subscription`, `/api/subscription/test`, `/api/events`.
    pub public: RateLimiter,
    /// Requests with a missing or wrong token.
    pub auth_failures: RateLimiter,
    /// Test notifications, per subscription.
    pub tests: OncePer,
    /// Proxies whose forwarding header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The one forwarding header believed.
    pub client_ip_header: ClientIpHeader,
}

impl Limits {
    /// The address a request counts against.
    pub fn client(&self, extensions: &axum::http::Extensions, headers: &HeaderMap) -> IpAddr {
        let peer = extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        client_ip(peer, headers, &self.trusted_proxies, self.client_ip_header)
    }
}

/// Proof that the request took a token from its address's bucket: the
/// public routes that write take it as an argument (an extractor, not a
/// middleware: nothing boxed per request); without a token, 429. It holds
/// the client's address.
pub struct PublicLimit(pub IpAddr);

impl axum::extract::FromRequestParts<crate::AppState> for PublicLimit {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &crate::AppState,
    ) -> Result<Self, ApiError> {
        let ip = st.limits.client(&parts.extensions, &parts.headers);
        st.limits
            .public
            .take(ip)
            .map(|()| PublicLimit(ip))
            .map_err(|wait| rate_limited(wait, "too many requests from this address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_bucket_allows_its_burst_then_waits() {
        let l = RateLimiter::new(3, 1.0, parse_cidrs(&["10.0.0.0/8".into()]).unwrap());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.take(a).is_ok());
        }
        let wait = l.take(a).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.take("192.0.2.2".parse().unwrap()).is_ok(), "another address has its own bucket");
        for _ in 0..10 {
            assert!(l.take("10.1.2.3".parse().unwrap()).is_ok(), "exempt");
        }
        // One IPv6 /64 is one client.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for _ in 0..3 {
            assert!(l.take(v6("2001:db8:1:2::1")).is_ok());
        }
        assert!(l.take(v6("2001:db8:1:2::ffff")).is_err());
        assert!(l.take(v6("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        use ClientIpHeader::*;
        let trusted = parse_cidrs(&["10.0.0.1".into(), "10.0.0.2".into()]).unwrap();
        let peer = |s: &str| SocketAddr::new(s.parse().unwrap(), 1234);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"));
        assert_eq!(client_ip(peer("192.0.2.5"), &h, &trusted, XForwardedFor), ip("192.0.2.5"), "untrusted peer");
        assert_eq!(client_ip(peer("10.0.0.1"), &h, &trusted, XForwardedFor), ip("198.51.100.7"));
        let mut f = HeaderMap::new();
        f.insert("forwarded", HeaderValue::from_static(r#"for=198.51.100.8:4711;proto=https, for="[2001:db8::1]:80""#));
        assert_eq!(client_ip(peer("10.0.0.1"), &f, &trusted, Forwarded), ip("2001:db8::1"));
        assert_eq!(client_ip(peer("10.0.0.1"), &HeaderMap::new(), &trusted, XForwardedFor), ip("10.0.0.1"));
        assert!(parse_cidrs(&["nope".into()]).is_err());
    }

    /// A stock nginx sets X-Forwarded-For and passes the client's own
    /// Forwarded through: only the configured header is read.
    #[test]
    fn only_the_configured_header_is_believed() {
        use ClientIpHeader::*;
        let trusted = parse_cidrs(&["10.0.0.1".into()]).unwrap();
        let peer = SocketAddr::new("10.0.0.1".parse().unwrap(), 1);
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=192.0.2.77"));
        h.insert("x-real-ip", HeaderValue::from_static("192.0.2.78"));
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.79, 203.0.113.5"));
        assert_eq!(client_ip(peer, &h, &trusted, XForwardedFor), "203.0.113.5".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted, Forwarded), "192.0.2.77".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted, XRealIp), "192.0.2.78".parse::<IpAddr>().unwrap());
        let mapped = SocketAddr::new("::ffff:10.0.0.1".parse().unwrap(), 1);
        assert_eq!(client_ip(mapped, &h, &trusted, XRealIp), "192.0.2.78".parse::<IpAddr>().unwrap(), "dual stack");
        assert_eq!("X-Real-IP".parse::<ClientIpHeader>(), Ok(XRealIp));
        assert!("via".parse::<ClientIpHeader>().is_err());
        assert_eq!(parse_hop("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_hop("1.2.3.4:5"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_hop("unknown"), None);
    }

    /// When full, the least recently used buckets go, not all of them: an
    /// address that is being limited stays limited while others are sprayed.
    #[test]
    fn a_full_limiter_evicts_the_oldest_not_everyone() {
        let l = RateLimiter::new(2, 0.0, Vec::new());
        let victim: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.take(victim).is_ok() && l.take(victim).is_ok());
        assert!(l.take(victim).is_err());
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let _ = l.take(IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i)));
            if i % 20_000 == 0 {
                // The victim keeps knocking: recently used, so kept.
                assert!(l.take(victim).is_err(), "still limited after {i} other addresses");
            }
        }
        assert!(l.take(victim).is_err(), "still limited");
        assert!(l.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }

    #[test]
    fn once_per_interval() {
        let g = OncePer::new(Duration::from_secs(60));
        assert!(g.take("a").is_ok());
        assert!(g.take("a").is_err());
        assert!(g.take("b").is_ok());
    }
}
