//! The SSRF guard: webhook requests go to public addresses only (unless the
//! operator allows private ones, `NOTIFIER_WEBHOOK_ALLOW_PRIVATE`).
//!
//! A hostname is checked where it is connected to, not where it is parsed:
//! [`GuardedResolver`] is the HTTP client's resolver and drops every
//! non-public address it resolves, so a name that resolves to a public
//! address when checked and to loopback a moment later (DNS rebinding) has
//! no window. A literal IP in a URL is never resolved, so it is checked
//! with [`is_public`] before the request is sent.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address on the public internet: not loopback,
/// private, link-local, CGNAT, unspecified, broadcast, multicast,
/// documentation, benchmarking, reserved, IETF protocol assignments, or a
/// v6 form (mapped, compatible, translated, NAT64, 6to4) embedding one of
/// those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", 0.0.0.0/8
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated), ::, ::1: nothing public.
    if s[..6] == [0; 6] {
        return false;
    }
    // IPv4-translated (::ffff:0:a.b.c.d, SIIT): the v4 address decides.
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    // NAT64 (64:ff9b::/96): the embedded v4 address decides.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    // 6to4 (2002::/16): the v4 address in bits 16..48 decides.
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    let refused = (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation 2001:db8::/32
        || (s[0] == 0x2001 && s[1] == 0x2 && s[2] == 0) // benchmarking 2001:2::/48
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments 2001::/23
        || s[0] & 0xfe00 == 0xfc00 // unique local fc00::/7
        || s[0] & 0xffc0 == 0xfe80 // link-local fe80::/10
        || s[0] & 0xffc0 == 0xfec0 // site-local fec0::/10 (deprecated)
        || s[0] & 0xff00 == 0xff00; // multicast ff00::/8
    !refused
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// A name whose every address was refused. Its message, which reaches the
/// endpoint's owner (`last_error`), does not say which addresses: that
/// would tell anyone what the notifier's internal names resolve to. The
/// operator's log (DEBUG) does.
#[derive(Debug)]
pub struct Refused {
    pub host: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves only to non-public addresses, which webhooks may not reach",
            self.host
        )
    }
}

impl std::error::Error for Refused {}

/// The webhook client's resolver: the system's, minus non-public addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                resolved.into_iter().partition(|a| is_public(a.ip()));
            if public.is_empty() {
                let mut addresses: Vec<IpAddr> = refused.iter().map(|a| a.ip()).collect();
                addresses.dedup();
                tracing::debug!(%host, ?addresses, "webhook host refused: no public address");
                return Err(Box::new(Refused { host }) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(addr: &str, public: bool) {
        let ip: IpAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert_eq!(is_public(ip), public, "{addr} public: expected {public}");
    }

    #[test]
    fn v4_non_public_ranges_are_refused() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            check(a, false);
        }
    }

    #[test]
    fn v4_public_addresses_pass_including_range_neighbours() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.0.1",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.167.0.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "203.0.114.1",
            "223.255.255.255",
        ] {
            check(a, true);
        }
    }

    #[test]
    fn v6_non_public_ranges_and_embedded_v4_forms_are_refused() {
        for a in [
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a00:1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::c0a8:101",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "100::1",
            "2001:db8::1",
            "2001:2::1",
            "2001::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
        ] {
            check(a, false);
        }
    }

    #[test]
    fn v6_public_addresses_pass() {
        for a in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "::ffff:0:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "2400:cb00::1",
        ] {
            check(a, true);
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_loopback_and_names_the_host_not_its_addresses() {
        let resolver = GuardedResolver;
        let name: Name = "localhost".parse().unwrap();
        let err = match resolver.resolve(name).await {
            Ok(addrs) => panic!(
                "localhost resolved to {:?}",
                addrs.collect::<Vec<SocketAddr>>()
            ),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("localhost"), "{err}");
        assert!(!err.contains("127.0.0.1") && !err.contains("::1"), "{err}");
    }
}
