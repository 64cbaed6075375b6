//! Who the client is: the connection's peer, or, when the peer is a proxy
//! we trust, the address that proxy put in `X-Forwarded-For`.
//!
//! Only the rightmost `X-Forwarded-For` value is ever read: it is the one
//! the trusted proxy appended (or wrote, overwriting what the client sent);
//! anything left of it came from the client and proves nothing. From a peer
//! that is not trusted the header is ignored altogether.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

use super::Limits;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// One network, IPv4 or IPv6: an address and a prefix length, with no bit
/// set beyond the prefix (`10.0.0.0/8`, `fd00::/8`; a bare address is a
/// network of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, as a dual-stack listener reports IPv4 peers)
    /// counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip).into(), 32, self.prefix) == u32::from(net).into()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (a `width`-bit address) with everything beyond `prefix` cleared.
fn mask(bits: u128, width: u8, prefix: u8) -> u128 {
    let host = u32::from(width.saturating_sub(prefix));
    let host_bits = 1u128.checked_shl(host).map_or(u128::MAX, |b| b - 1);
    bits & !host_bits
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            // Digits only: `u8::from_str` would take a leading `+`.
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= width && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {width}")),
            },
        };
        let bits = match network {
            IpAddr::V4(v4) => u32::from(v4).into(),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if mask(bits, width, prefix) != bits {
            return Err(format!(
                "{s:?} has bits set beyond its /{prefix} prefix (a network's lowest address is meant)"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed, and whose connections
/// the per-address connection cap leaves alone: at most
/// [`TrustedProxies::MAX`] networks, from a comma-separated list
/// (`{PREFIX}_TRUSTED_PROXIES`). Empty (the default) trusts nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    /// The most networks a list may name.
    pub const MAX: usize = 64;

    /// Trusts exactly `networks` (at most [`TrustedProxies::MAX`]).
    pub fn new(networks: impl IntoIterator<Item = Cidr>) -> Result<Self, String> {
        let networks: Vec<Cidr> = networks.into_iter().take(Self::MAX + 1).collect();
        if networks.len() > Self::MAX {
            return Err(format!("at most {} networks", Self::MAX));
        }
        Ok(TrustedProxies(networks.into()))
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client of a request that arrived from `peer` with `headers`: the
    /// rightmost `X-Forwarded-For` value when `peer` is trusted and that
    /// value is an IP address, else `peer` itself.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .unwrap_or(peer)
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entries = s.split(',').map(str::trim).filter(|e| !e.is_empty());
        if entries.clone().count() > Self::MAX {
            return Err(format!("at most {} networks", Self::MAX));
        }
        let networks = entries.map(Cidr::from_str).collect::<Result<Vec<_>, _>>()?;
        TrustedProxies::new(networks)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// The client's address (see [`TrustedProxies::client_address`]), for
/// per-client limits. The trusted proxies are those of the [`Limits`] that
/// `serve_with` puts on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Served without connect info (an in-process router), every request
        // shares one bucket rather than failing.
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(ClientIp(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        };
        let ip = match parts.extensions.get::<Limits>() {
            Some(limits) => limits
                .trusted_proxies
                .client_address(peer.ip(), &parts.headers),
            None => peer.ip().to_canonical(),
        };
        Ok(ClientIp(ip))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn networks_parse_or_say_why_not() {
        let ok = [
            ("127.0.0.1", "127.0.0.1/32"),
            (" 10.0.0.0/8 ", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::1", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
        ];
        for (text, shown) in ok {
            let net: Cidr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(net.to_string(), shown, "{text}");
        }
        let bad = [
            ("", "not an IP address"),
            ("10.0.0", "not an IP address"),
            ("example.com", "not an IP address"),
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("10.0.0.0/", "prefix length must be 0 to 32"),
            ("10.0.0.0/+8", "prefix length must be 0 to 32"),
            ("10.0.0.0/-1", "prefix length must be 0 to 32"),
            ("fd00::/129", "prefix length must be 0 to 128"),
            ("10.0.0.1/8", "bits set beyond its /8 prefix"),
            ("fd00::1/64", "bits set beyond its /64 prefix"),
        ];
        for (text, why) in bad {
            let err = text.parse::<Cidr>().expect_err(text);
            assert!(err.contains(why), "{text}: expected {why:?}, got {err:?}");
        }
    }

    #[test]
    fn membership_follows_the_prefix() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
            // A dual-stack listener reports an IPv4 peer mapped into IPv6.
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("::1", "127.0.0.1", false),
        ];
        for (net, addr, inside) in cases {
            let net: Cidr = net.parse().expect("network");
            assert_eq!(net.contains(ip(addr)), inside, "{addr} in {net}");
        }
    }

    #[test]
    fn lists_are_comma_separated_and_bounded() {
        let list: TrustedProxies = "10.0.0.0/8, ::1,,192.168.1.7".parse().expect("list");
        assert_eq!(list.to_string(), "10.0.0.0/8,::1/128,192.168.1.7/32");
        assert_eq!(list.to_string().parse::<TrustedProxies>(), Ok(list));
        assert!("".parse::<TrustedProxies>().expect("empty").is_empty());
        assert!(" ".parse::<TrustedProxies>().expect("blank").is_empty());
        let err = "10.0.0.0/8,10.0.0.1/8".parse::<TrustedProxies>();
        assert!(err.expect_err("host bits").contains("10.0.0.1/8"));
        let max: Vec<String> = (0..TrustedProxies::MAX)
            .map(|i| format!("10.0.{i}.1"))
            .collect();
        assert!(max.join(",").parse::<TrustedProxies>().is_ok());
        let over = format!("{},10.1.0.1", max.join(","));
        let err = over.parse::<TrustedProxies>().expect_err("65 networks");
        assert_eq!(err, "at most 64 networks");
    }

    #[test]
    fn the_forwarded_address_counts_only_from_a_trusted_peer() {
        let trusted: TrustedProxies = "127.0.0.1/32".parse().expect("list");
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).expect("value"));
            }
            h
        };
        let cases: [(&str, &[&str], &str); 9] = [
            // From the proxy: the value it wrote.
            ("127.0.0.1", &["203.0.113.9"], "203.0.113.9"),
            ("127.0.0.1", &[" 2001:db8::7 "], "2001:db8::7"),
            // Several values: the rightmost, the one the proxy appended.
            ("127.0.0.1", &["198.51.100.1, 203.0.113.9"], "203.0.113.9"),
            ("127.0.0.1", &["198.51.100.1", "203.0.113.9"], "203.0.113.9"),
            // Nothing usable: the proxy itself.
            ("127.0.0.1", &[], "127.0.0.1"),
            ("127.0.0.1", &["203.0.113.9, unknown"], "127.0.0.1"),
            ("127.0.0.1", &["203.0.113.9:4711"], "127.0.0.1"),
            // From anyone else the header is ignored.
            ("192.0.2.1", &["203.0.113.9"], "192.0.2.1"),
            ("::ffff:192.0.2.1", &["203.0.113.9"], "192.0.2.1"),
        ];
        for (peer, xff, client) in cases {
            assert_eq!(
                trusted.client_address(ip(peer), &headers(xff)),
                ip(client),
                "peer {peer}, X-Forwarded-For {xff:?}"
            );
        }
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.client_address(ip("127.0.0.1"), &headers(&["203.0.113.9"])),
            ip("127.0.0.1")
        );
    }
}
