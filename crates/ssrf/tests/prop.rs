//! For any address in the common internal IPv4 ranges, the decimal-integer spelling and the
//! IPv4-mapped IPv6 spellings are refused (as are the hex and mapped-hex ones).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use portcullis_ssrf::{Blocked, is_forbidden};
use proptest::prelude::*;

/// (network, prefix length)
const RANGES: [(u32, u32); 6] = [
    (0x7f00_0000, 8),  // 127/8
    (0x0a00_0000, 8),  // 10/8
    (0xac10_0000, 12), // 172.16/12
    (0xc0a8_0000, 16), // 192.168/16
    (0xa9fe_0000, 16), // 169.254/16
    (0x6440_0000, 10), // 100.64/10
];

fn internal_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0..RANGES.len(), any::<u32>()).prop_map(|(i, bits)| {
        let (net, len) = RANGES[i];
        let host_mask = u32::MAX >> len;
        Ipv4Addr::from(net | (bits & host_mask))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn internal_ipv4_is_refused_in_every_spelling(v4 in internal_v4()) {
        let c = common::open();
        let n = u32::from(v4);
        let [a, b, cc, d] = v4.octets();
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        for (url, want) in [
            (format!("https://{n}/"), IpAddr::V4(v4)),
            (format!("https://{n:#x}/"), IpAddr::V4(v4)),
            (format!("https://0{a:o}.0{b:o}.0{cc:o}.0{d:o}/"), IpAddr::V4(v4)),
            (format!("https://[::ffff:{v4}]/"), mapped),
            (format!("https://[::ffff:{:x}:{:x}]/", n >> 16, n & 0xffff), mapped),
        ] {
            prop_assert_eq!(
                c.check_url(&url).map(|u| u.to_string()),
                Err(Blocked::ForbiddenAddress(want)),
                "{}", url
            );
            prop_assert_eq!(
                common::now(c.check(&url)).map(|u| u.url.to_string()),
                Err(Blocked::ForbiddenAddress(want)),
                "{}", url
            );
        }
        prop_assert!(is_forbidden(IpAddr::V6(Ipv4Addr::from(n).to_ipv6_compatible())));
    }

    #[test]
    fn public_ipv4_is_judged_the_same_in_every_spelling(n in any::<u32>()) {
        let v4 = Ipv4Addr::from(n);
        let forbidden = is_forbidden(IpAddr::V4(v4));
        prop_assert_eq!(forbidden, is_forbidden(IpAddr::V6(v4.to_ipv6_mapped())));
        let c = common::open();
        prop_assert_eq!(c.check_url(&format!("https://{n}/")).is_err(), forbidden);
        prop_assert_eq!(c.check_url(&format!("https://[::ffff:{v4}]/")).is_err(), forbidden);
    }
}
