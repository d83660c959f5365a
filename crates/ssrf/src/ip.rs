//! Which addresses a server-side fetch must never reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True for every address a server-side fetch must never reach: anything that is not a public
/// unicast host.
///
/// IPv4: `0/8` ("this network", unspecified), loopback `127/8`, private `10/8`, `172.16/12`,
/// `192.168/16`, link-local `169.254/16` (where cloud metadata services live), CGNAT
/// `100.64/10`, IETF protocol assignments `192.0.0/24`, the documentation ranges, the deprecated
/// 6to4 relay anycast `192.88.99/24`, benchmarking `198.18/15`, multicast `224/4`, and reserved
/// `240/4` with the broadcast address.
///
/// IPv6: the IPv4-mapped form `::ffff:a.b.c.d` (and [`IpAddr::to_canonical`]) and NAT64
/// `64:ff9b::/96` are judged by the IPv4 address they embed. Apart from those, only global
/// unicast `2000::/3` may be public, so `::`, `::1`, the deprecated IPv4-compatible
/// `::a.b.c.d`, discard-only `100::/64`, local-use NAT64 `64:ff9b:1::/48`, unique-local
/// `fc00::/7`, link-local `fe80::/10`, site-local `fec0::/10`, multicast `ff00::/8` and all
/// unassigned space are refused. Within `2000::/3`, the IETF protocol assignments `2001::/23`
/// (Teredo `2001::/32`, which tunnels to any IPv4 address, among them), 6to4 `2002::/16` (which
/// also tunnels to any IPv4 address) and the documentation ranges `2001:db8::/32` and
/// `3fff::/20` are refused.
///
/// ```
/// use portcullis_ssrf::is_forbidden;
///
/// assert!(is_forbidden("169.254.169.254".parse().unwrap()));
/// assert!(is_forbidden("::ffff:127.0.0.1".parse().unwrap()));
/// assert!(!is_forbidden("93.184.215.14".parse().unwrap()));
/// ```
#[must_use]
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0                                          // "this network", 0.0.0.0 among it
        || ip.is_loopback()                         // 127/8
        || ip.is_private()                          // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()                       // 169.254/16: cloud metadata lives here
        || (a == 100 && (64..128).contains(&b))     // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0)           // IETF protocol assignments 192.0.0/24
        || ip.is_documentation()                    // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (a == 192 && b == 88 && c == 99)         // 6to4 relay anycast, deprecated
        || (a == 198 && (b == 18 || b == 19))       // benchmarking 198.18/15
        || ip.is_multicast()                        // 224/4
        || a >= 240 // reserved 240/4 and broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from((u32::from(seg[6]) << 16) | u32::from(seg[7]));
        return forbidden_v4(v4);
    }
    // Only global unicast 2000::/3 holds public hosts.
    if seg[0] & 0xe000 != 0x2000 {
        return true;
    }
    match seg[0] {
        // IETF protocol assignments 2001::/23 (Teredo, which tunnels to any IPv4 address, among
        // them) and documentation 2001:db8::/32.
        0x2001 => seg[1] < 0x0200 || seg[1] == 0x0db8,
        // 6to4, which tunnels to any IPv4 address.
        0x2002 => true,
        // Documentation 3fff::/20.
        0x3fff => seg[1] < 0x1000,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address parses")
    }

    #[test]
    fn non_public_addresses_are_forbidden() {
        for s in [
            // IPv4
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.0",
            "10.1.2.3",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.1.1",
            "192.168.255.255",
            "169.254.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8", // IPv4-compatible: deprecated, never a public host
            "::ffff:0:7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "2001:2::1",
            "2001:10::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "3fff::1",
            "4000::1",
            "5f00::1",
        ] {
            assert!(is_forbidden(ip(s)), "{s} must be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for s in [
            "93.184.215.14",
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.167.255.255",
            "192.169.0.1",
            "169.253.255.255",
            "169.255.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:93.184.215.14",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4860:4860::8888",
            "3ffe::1",
            "64:ff9b::5db8:d70e",
        ] {
            assert!(!is_forbidden(ip(s)), "{s} must be allowed");
        }
    }

    #[test]
    fn canonical_and_mapped_forms_agree() {
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "8.8.8.8",
            "1.1.1.1",
        ] {
            let v4: Ipv4Addr = s.parse().expect("v4");
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            assert_eq!(is_forbidden(IpAddr::V4(v4)), is_forbidden(mapped), "{s}");
            assert_eq!(
                is_forbidden(mapped),
                is_forbidden(mapped.to_canonical()),
                "{s}"
            );
        }
    }
}
