//! The allow-list: which targets (host pattern, port range) an exit connects to, and the
//! special address ranges (private, loopback, link-local, ...) that only an explicit rule
//! may name.

use std::net::{IpAddr, Ipv6Addr};

#[allow(unused_imports)]
use crate::*;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HostRule {
    Any,
    Name(String),
    Suffix(String),
    Net(IpAddr, u8),
}

/// A parsed allow-list.
#[derive(Clone, Debug, PartialEq)]
pub struct AllowList(pub(crate) Vec<(HostRule, u16, u16)>);

pub(crate) fn bad(rule: &str, reason: &'static str) -> ExitError {
    ExitError::Rule {
        rule: rule.to_string(),
        reason,
    }
}

impl AllowList {
    /// Parse rules of the form `HOST:PORT` (see [`ExitSection::allow`]).
    pub fn parse(rules: &[String]) -> Result<AllowList, ExitError> {
        let mut out = Vec::new();
        for r in rules {
            let (host, port) = r
                .rsplit_once(':')
                .ok_or_else(|| bad(r, "expected HOST:PORT"))?;
            let (lo, hi) = match port {
                "*" => (0, u16::MAX),
                p => match p.split_once('-') {
                    Some((a, b)) => (
                        a.parse().map_err(|_| bad(r, "bad port"))?,
                        b.parse().map_err(|_| bad(r, "bad port"))?,
                    ),
                    None => {
                        let n = p.parse().map_err(|_| bad(r, "bad port"))?;
                        (n, n)
                    }
                },
            };
            if lo > hi {
                return Err(bad(r, "empty port range"));
            }
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let rule = if host == "*" {
                HostRule::Any
            } else if let Some(s) = host.strip_prefix("*.") {
                if s.is_empty() {
                    return Err(bad(r, "empty domain suffix"));
                }
                HostRule::Suffix(s.to_ascii_lowercase())
            } else if let Some((ip, len)) = host.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| bad(r, "bad network address"))?;
                let len: u8 = len.parse().map_err(|_| bad(r, "bad prefix length"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if len > max {
                    return Err(bad(r, "prefix length too long"));
                }
                HostRule::Net(ip, len)
            } else if let Ok(ip) = host.parse::<IpAddr>() {
                HostRule::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
            } else if host.is_empty() {
                return Err(bad(r, "empty host"));
            } else {
                HostRule::Name(host.to_ascii_lowercase())
            };
            out.push((rule, lo, hi));
        }
        Ok(AllowList(out))
    }

    /// Whether a connection to `ip:port`, asked for by `name` (if a domain), is allowed.
    pub fn allows(&self, name: Option<&str>, ip: IpAddr, port: u16) -> bool {
        let name = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        self.0.iter().any(|(rule, lo, hi)| {
            if port < *lo || port > *hi {
                return false;
            }
            match rule {
                HostRule::Any => !is_special(ip),
                HostRule::Name(n) => name.as_deref() == Some(n.as_str()) && !is_special(ip),
                HostRule::Suffix(s) => {
                    name.as_deref().is_some_and(|n| {
                        n == s || n.strip_suffix(s.as_str()).is_some_and(|p| p.ends_with('.'))
                    }) && !is_special(ip)
                }
                HostRule::Net(net, len) => in_net(ip, *net, *len),
            }
        })
    }
}

pub(crate) fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Loopback, private, link-local, shared (CGNAT), benchmarking, IETF protocol assignment,
/// unspecified, multicast, broadcast, documentation, reserved, unique-local and site-local
/// addresses: never reached through `*` or a name. An IPv6 address that carries an IPv4
/// one (IPv4-mapped, IPv4-compatible, NAT64 well-known prefix, 6to4) is judged by the IPv4
/// address it leads to; the local-use NAT64 prefix, Teredo and IPv6 documentation are
/// refused outright.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || in_net(ip, IpAddr::from([100, 64, 0, 0]), 10)
                || in_net(ip, IpAddr::from([0, 0, 0, 0]), 8)
                || in_net(ip, IpAddr::from([240, 0, 0, 0]), 4)
                || in_net(ip, IpAddr::from([198, 18, 0, 0]), 15)
                || in_net(ip, IpAddr::from([192, 0, 0, 0]), 24)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_ipv4(a) {
                return is_special(IpAddr::V4(v4));
            }
            let net6 = |s: [u16; 8], len: u8| in_net(ip, IpAddr::V6(Ipv6Addr::from(s)), len);
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || net6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)
                || net6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10)
                || net6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10)
                || net6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48)
                || net6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32)
                || net6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32)
                || net6([0x100, 0, 0, 0, 0, 0, 0, 0], 64)
        }
    }
}

/// The IPv4 address an IPv6 address leads to, if it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4
/// (`2002:AABB:CCDD::/48`).
pub(crate) fn embedded_ipv4(a: Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = a.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !a.is_loopback() && !a.is_unspecified() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}
