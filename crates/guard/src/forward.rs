//! What the upstream is told, and what it is not: the client address is taken from the socket,
//! and from `X-Forwarded-For` only when the socket peer is a trusted proxy (then the rightmost
//! address that is not itself a trusted proxy); hop-by-hop headers are stripped; the
//! `X-Forwarded-*` headers are set by the gateway, never passed through from an untrusted client.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Hop-by-hop headers (RFC 9110 §7.6.1) and their common non-standard cousins.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|n| n.contains(&ip))
}

/// The client's address: the peer, or when the peer is a trusted proxy, the rightmost
/// `X-Forwarded-For` entry that is not a trusted proxy. Read from the right, as the trusted
/// proxies appended it: an entry that does not parse stops the walk at the nearest trusted hop
/// before it (garbage the client wrote left of its own address is never reached, so it cannot
/// make the client count as its proxy, in the budget of everyone behind it).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let mut nearest = peer.to_canonical();
    if !trusted(peer, proxies) {
        return nearest;
    }
    let mut fields: Vec<&str> = Vec::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(s) = v.to_str() else {
            return nearest;
        };
        fields.push(s);
    }
    for entry in fields.iter().rev().flat_map(|f| f.rsplit(',')) {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if !trusted(ip, proxies) => return ip.to_canonical(),
            Ok(ip) => nearest = ip.to_canonical(),
            Err(_) => return nearest,
        }
    }
    nearest
}

/// The lengths of the hop-by-hop names and `transfer-encoding` (2, 7, 10, 16, 17, 18, 19), as
/// bits: a name of another length is none of them.
const HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 19;

/// The address a client is counted by (rate limits, quotas, login lockout): itself for IPv4;
/// for IPv6 its /64, the block one subscriber is given (RFC 6177), or rotating through its
/// 2^64 addresses would give it as many fresh counts. An IPv4-mapped address counts as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted(pub IpAddr);

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.to_canonical() {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                write!(f, "{}/64", std::net::Ipv6Addr::from(prefix))
            }
        }
    }
}

/// The method overrides some frameworks honour (Express's `method-override`, ASP.NET, Rails
/// middleware): a `POST` the gateway authorised as a `POST` would be a `DELETE` upstream.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Removes the request fields an upstream may take for others the gateway sets or checks:
/// names with `_` (servers that map field names to CGI-style variables read `X_Forwarded_For`
/// as `X-Forwarded-For`, and `X_Auth_Subject` as a claim the gateway forwards; nginx drops
/// them by default), and the method overrides. Most requests carry none: one pass over the
/// names, no allocation.
pub fn strip_untrusted(headers: &mut HeaderMap) {
    let doomed = |n: &HeaderName| {
        let s = n.as_str();
        s.contains('_') || (s.len() >= 13 && METHOD_OVERRIDES.contains(&s))
    };
    if !headers.keys().any(doomed) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

/// Removes hop-by-hop headers, including those named in `Connection`; true when a
/// `Connection` field was there (it may have named any field, and taken it out).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the names (comparisons, no hashing) finds which are present; most
    // messages carry none, and an upstream's answer usually just `Connection: keep-alive`.
    let mut present = 0u16;
    for n in headers.keys() {
        let len = n.as_str().len();
        if len >= 32 || HOP_LENGTHS & (1 << len) == 0 {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == n) {
            present |= 1 << i;
        } else if n == header::TRANSFER_ENCODING {
            present |= 1 << HOP_BY_HOP.len();
        }
    }
    if present == 0 {
        return false;
    }
    // `Connection` (the first of the list) names more: its values are taken out of the map,
    // then each name removed by its text, without copying names.
    if present & 1 != 0 {
        let more: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .skip(1)
            .cloned()
            .collect();
        let first = headers.remove(header::CONNECTION);
        for v in first.iter().chain(&more) {
            for name in v.to_str().unwrap_or_default().split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    headers.remove(name);
                }
            }
        }
    }
    for (i, h) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(h);
        }
    }
    if present & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    present & 1 != 0
}

/// The fields the gateway sets on a request going upstream. Each replaces whatever the client
/// sent under that name; a `None` value just removes the client's.
pub type Forwarding = [(HeaderName, Option<HeaderValue>); 6];

/// The forwarding fields of a request going upstream: `X-Forwarded-For` (the chain our
/// trusted proxies built, when the peer is one, plus the hop we saw), `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `X-Real-IP` (the client), `X-Request-Id`, and no `Forwarded`.
pub fn forwarding(
    headers: &HeaderMap,
    peer: IpAddr,
    client: IpAddr,
    proxies: &[IpNet],
    tls: bool,
    host: Option<&HeaderValue>,
    request_id: &HeaderValue,
) -> Forwarding {
    let from_trusted = trusted(peer, proxies);
    let client_value = ip_value(client);
    let xff = if from_trusted {
        // Keep the chain our trusted proxies built and add the hop we saw.
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mut chain = prior.join(", ");
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        chain.push_str(&peer.to_canonical().to_string());
        HeaderValue::from_str(&chain).ok()
    } else {
        client_value.clone()
    };
    let proto = from_trusted
        .then(|| headers.get(&X_FORWARDED_PROTO))
        .flatten()
        .filter(|p| matches!(p.as_bytes(), b"http" | b"https"))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(if tls { "https" } else { "http" }));
    let fwd_host = from_trusted
        .then(|| headers.get(&X_FORWARDED_HOST).cloned())
        .flatten()
        .or_else(|| host.cloned());
    [
        (X_FORWARDED_FOR, xff),
        (X_FORWARDED_PROTO, Some(proto)),
        (X_FORWARDED_HOST, fwd_host),
        (X_REAL_IP, client_value),
        (X_REQUEST_ID, Some(request_id.clone())),
        (FORWARDED, None),
    ]
}

/// An address's text, owning the allocation of the header value made of it: that value's
/// copies (`X-Forwarded-For` and `X-Real-IP` are usually the same) are then counts.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl AsRef<[u8]> for IpText {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// An address as a header value, formatted without a heap string (an IPv4 address, the
/// usual case, without the formatting machinery either: it costs more than the rest of the
/// header work).
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    // The longest IPv6 text form is 45 bytes.
    let mut buf = [0u8; 48];
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut at = &mut buf[..];
            write!(at, "{ip}").ok()?;
            48 - at.len()
        }
    };
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(IpText { buf, len: n })).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn clients_are_counted_by_address_or_ipv6_64() {
        let c = |s: &str| super::Counted(s.parse().unwrap()).to_string();
        assert_eq!(c("203.0.113.5"), "203.0.113.5");
        assert_eq!(c("::ffff:203.0.113.5"), "203.0.113.5");
        assert_eq!(c("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(c("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(c("2001:db8:1:3::1"), c("2001:db8:1:2::1"));
    }

    use super::*;

    #[test]
    fn addresses_are_written_as_their_text_form() {
        for o in 0..=255u8 {
            for v4 in [
                std::net::Ipv4Addr::new(o, 0, 9, 255),
                std::net::Ipv4Addr::new(10, o, o, 1),
                std::net::Ipv4Addr::new(100, 99, 10, o),
            ] {
                let ip = IpAddr::V4(v4);
                assert_eq!(ip_value(ip).expect("value"), ip.to_string().as_str());
            }
        }
        for v6 in ["::1", "2001:db8::8a2e:370:7334", "::ffff:192.0.2.1"] {
            let ip: IpAddr = v6.parse().expect("ip");
            assert_eq!(ip_value(ip).expect("value"), ip.to_string().as_str());
        }
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn spoofed_forwarded_for_is_ignored_from_untrusted_peers() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let spoof = h(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            client_ip(ip("127.0.0.9"), &spoof, &proxies),
            ip("127.0.0.9")
        );
        assert_eq!(client_ip(ip("127.0.0.9"), &spoof, &[]), ip("127.0.0.9"));
    }

    #[test]
    fn trusted_chains_yield_the_rightmost_untrusted_hop() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let chain = h(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &chain, &proxies),
            ip("203.0.113.7")
        );
        let garbled = h(&[("x-forwarded-for", "203.0.113.7, not-an-ip")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &garbled, &proxies),
            ip("10.0.0.1")
        );
        // Garbage the client wrote before the address its proxy appended is never reached.
        let prefixed = h(&[("x-forwarded-for", "not-an-ip, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &prefixed, &proxies),
            ip("203.0.113.7")
        );
        let two_fields = h(&[
            ("x-forwarded-for", "junk"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &two_fields, &proxies),
            ip("203.0.113.7")
        );
        // Garbage past a trusted hop: that hop.
        let mid = h(&[("x-forwarded-for", "junk, 10.1.1.1")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &mid, &proxies), ip("10.1.1.1"));
        let mapped = h(&[("x-forwarded-for", "::ffff:203.0.113.7")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &mapped, &proxies),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn the_length_mask_covers_every_hop_by_hop_name() {
        for n in HOP_BY_HOP.iter().chain([&header::TRANSFER_ENCODING]) {
            assert_ne!(HOP_LENGTHS & (1 << n.as_str().len()), 0, "{n}");
        }
    }

    #[test]
    fn every_connection_header_value_names_headers_to_remove() {
        let mut m = h(&[
            ("connection", "close"),
            ("connection", "X-Second-Hop , ,x-third-hop"),
            ("x-second-hop", "1"),
            ("x-third-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut m);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m.contains_key("accept"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut m = h(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut m);
        assert_eq!(m.len(), 1);
        assert!(m.contains_key("accept"));
    }

    #[test]
    fn forwarded_headers_are_set_not_trusted() {
        let m = h(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let host = HeaderValue::from_static("shop.example");
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let set = |m: &HeaderMap, peer: &str| {
            let rid = HeaderValue::from_static("rid");
            let f = forwarding(m, ip(peer), ip(peer), &proxies, false, Some(&host), &rid);
            let mut out = HeaderMap::new();
            for (n, v) in f {
                if let Some(v) = v {
                    out.insert(n, v);
                }
            }
            out
        };
        let out = set(&m, "127.0.0.5");
        assert_eq!(out["x-forwarded-for"], "127.0.0.5");
        assert_eq!(out["x-real-ip"], "127.0.0.5");
        assert_eq!(out["x-forwarded-host"], "shop.example");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-request-id"], "rid");
        assert!(!out.contains_key("forwarded"));
        // From a trusted proxy, its chain, scheme and host go on.
        let out = set(&m, "10.0.0.1");
        assert_eq!(out["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(out["x-forwarded-host"], "evil.example");
        assert_eq!(out["x-forwarded-proto"], "https");
    }
}
