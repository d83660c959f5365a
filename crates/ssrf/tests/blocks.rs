//! Table-driven refusals: every range and every tricky spelling, each with its specific reason,
//! through `check_url` and again through `check` (which must agree without resolving).

#![allow(clippy::unwrap_used)]

mod common;

use common::{allowlisted, ip, now, open};
use portcullis_ssrf::{Blocked, Checker, Policy, StaticResolver};

fn fa(s: &str) -> Blocked {
    Blocked::ForbiddenAddress(ip(s))
}

/// Asserts both the synchronous and the resolving check refuse `url` with `want`.
#[track_caller]
fn assert_blocked(checker: &Checker<StaticResolver>, url: &str, want: Blocked) {
    assert_eq!(
        checker.check_url(url).map(|u| u.to_string()),
        Err(want),
        "check_url({url:?})"
    );
    assert_eq!(
        now(checker.check(url)).map(|c| c.url.to_string()),
        Err(want),
        "check({url:?})"
    );
}

#[test]
fn every_forbidden_ipv4_range_as_a_literal() {
    let c = open();
    for (url, addr) in [
        ("https://0.0.0.0/", "0.0.0.0"),
        ("http://0/", "0.0.0.0"),
        ("https://0.1.2.3/", "0.1.2.3"),
        ("https://127.0.0.1/", "127.0.0.1"),
        ("https://127.255.255.254:8080/", "127.255.255.254"),
        ("https://10.0.0.1/", "10.0.0.1"),
        ("https://10.255.255.255/", "10.255.255.255"),
        ("https://172.16.0.1/", "172.16.0.1"),
        ("https://172.31.255.255/", "172.31.255.255"),
        ("https://192.168.0.1/", "192.168.0.1"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
        ),
        ("http://169.254.170.2/v2/credentials", "169.254.170.2"),
        ("https://100.64.0.1/", "100.64.0.1"),
        ("https://100.127.255.255/", "100.127.255.255"),
        ("https://192.0.0.170/", "192.0.0.170"),
        ("https://192.0.2.1/", "192.0.2.1"),
        ("https://198.51.100.1/", "198.51.100.1"),
        ("https://203.0.113.1/", "203.0.113.1"),
        ("https://192.88.99.1/", "192.88.99.1"),
        ("https://198.18.0.1/", "198.18.0.1"),
        ("https://224.0.0.1/", "224.0.0.1"),
        ("https://240.0.0.1/", "240.0.0.1"),
        ("https://255.255.255.255/", "255.255.255.255"),
    ] {
        assert_blocked(&c, url, fa(addr));
    }
}

#[test]
fn every_forbidden_ipv6_range_as_a_literal() {
    let c = open();
    for (url, addr) in [
        ("https://[::]/", "::"),
        ("https://[::1]/", "::1"),
        ("https://[0:0:0:0:0:0:0:1]:8443/", "::1"),
        ("https://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        (
            "https://[::ffff:169.254.169.254]/",
            "::ffff:169.254.169.254",
        ),
        ("https://[::ffff:a00:1]/", "::ffff:10.0.0.1"),
        ("https://[::127.0.0.1]/", "::127.0.0.1"),
        ("https://[::ffff:0:7f00:1]/", "::ffff:0:7f00:1"),
        ("https://[64:ff9b::a9fe:a9fe]/", "64:ff9b::169.254.169.254"),
        ("https://[64:ff9b::127.0.0.1]/", "64:ff9b::7f00:1"),
        ("https://[64:ff9b:1::a00:1]/", "64:ff9b:1::a00:1"),
        ("https://[100::1]/", "100::1"),
        ("https://[fc00::1]/", "fc00::1"),
        ("https://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("https://[fe80::1]/", "fe80::1"),
        ("https://[fec0::1]/", "fec0::1"),
        ("https://[ff02::1]/", "ff02::1"),
        ("https://[2001:db8::1]/", "2001:db8::1"),
        ("https://[3fff::1]/", "3fff::1"),
        (
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ),
        ("https://[2002:7f00:1::1]/", "2002:7f00:1::1"),
        ("https://[2002:a9fe:a9fe::]/", "2002:a9fe:a9fe::"),
    ] {
        assert_blocked(&c, url, fa(addr));
    }
}

#[test]
fn disguised_ipv4_spellings_are_seen_through() {
    let c = open();
    for (url, addr) in [
        ("https://2130706433/", "127.0.0.1"),
        ("https://0177.0.0.1/", "127.0.0.1"),
        ("https://0177.0000.0000.0001/", "127.0.0.1"),
        ("https://0x7f.1/", "127.0.0.1"),
        ("https://0x7f000001/", "127.0.0.1"),
        ("https://0X7F.0.0.1/", "127.0.0.1"),
        ("https://127.1/", "127.0.0.1"),
        ("https://127.0.1/", "127.0.0.1"),
        ("https://127.0.0.1./", "127.0.0.1"),
        ("https://%31%32%37.0.0.1/", "127.0.0.1"),
        ("https://%31%32%37%2e%30%2e%30%2e%31/", "127.0.0.1"),
        ("https://１２７.０.０.１/", "127.0.0.1"),
        ("https://127。0。0。1/", "127.0.0.1"),
        ("https://2852039166/", "169.254.169.254"),
        ("https://0xa9fea9fe/", "169.254.169.254"),
        ("https://0251.0376.0251.0376/", "169.254.169.254"),
        ("https://169.254.43518/", "169.254.169.254"),
        ("https://0xa.1/", "10.0.0.1"),
        ("https://012.0.0.1/", "10.0.0.1"),
        ("https://0/", "0.0.0.0"),
    ] {
        assert_blocked(&c, url, fa(addr));
    }
}

#[test]
fn localhost_names_are_loopback_without_resolving() {
    let c = open();
    for url in [
        "https://localhost/",
        "https://localhost./",
        "https://LOCALHOST:8443/",
        "https://localhost../",
        "https://api.localhost/",
        "https://%6c%6f%63%61%6c%68%6f%73%74/",
        "https://ｌｏｃａｌｈｏｓｔ/",
        "https://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/",
    ] {
        assert_blocked(&c, url, fa("127.0.0.1"));
    }
    // Listing it does not help.
    assert_blocked(&allowlisted(), "https://localhost/", fa("127.0.0.1"));
    assert_blocked(&allowlisted(), "https://127.0.0.1/", fa("127.0.0.1"));
}

#[test]
fn zone_ids_are_not_urls() {
    let c = open();
    for url in [
        "https://[fe80::1%25eth0]/",
        "https://[fe80::1%eth0]/",
        "https://[::1%251]/",
        "https://[fe80::1%2525en0]/",
    ] {
        assert_blocked(&c, url, Blocked::InvalidUrl);
    }
}

#[test]
fn userinfo_tricks_are_refused_for_their_credentials() {
    let c = allowlisted();
    for url in [
        "https://allowed.example@evil.example/",
        "https://allowed.example:443@evil.example/",
        "https://user:pw@allowed.example/",
        "https://user@allowed.example/",
        "https://:pw@allowed.example/",
        "https://evil.example@allowed.example/",
        "https://allowed.example%40evil.example@evil.example/",
        "https://allowed.example%2F@evil.example/",
    ] {
        assert_blocked(&c, url, Blocked::Credentials);
    }
}

#[test]
fn fragment_query_and_lookalike_tricks_name_the_real_host() {
    let c = allowlisted();
    for url in [
        "https://evil.example#@allowed.example",
        "https://evil.example/#@allowed.example",
        "https://evil.example?@allowed.example",
        "https://evil.example/;@allowed.example",
        "https://allowed.example.evil.example/",
        "https://evilallowed.example/",
        "https://allowed.example.evil/",
        "https://allowed-example.evil/",
        "https://93.184.215.14/",
    ] {
        assert_blocked(&c, url, Blocked::HostNotAllowed);
    }
}

#[test]
fn ambiguous_spellings_are_not_guessed_at() {
    let c = allowlisted();
    for url in [
        r"https://allowed.example\@evil.example",
        r"https://allowed.example\@evil.example/",
        r"https:\\allowed.example\",
        r"https://evil.example\.allowed.example/",
        r"https://allowed.example/\\evil.example/",
        "https://allowed.exa\tmple/",
        "https://allowed.exa\nmple/",
        "https://allowed.example/\r\n",
        " https://allowed.example/",
        "https://allowed.example/ ",
        "https://allowed.example/a b",
        "https://allowed.example\u{0}/",
        "https://allowed.example\u{3000}/",
        "https://ev%00il.example/",
        "not a url",
        "",
        "//allowed.example/",
        "/a.png",
        "https://",
        "https:///a.png",
        "https:/allowed.example/",
        "https:allowed.example/",
        "https:////allowed.example/",
        "https://[::1/",
        "https://[::ffff:7f00:1]:99999/",
        "https://256.0.0.1/",
        "https://0x100000000/",
    ] {
        assert_blocked(&c, url, Blocked::InvalidUrl);
    }
}

#[test]
fn schemes_other_than_the_listed_ones() {
    let c = allowlisted();
    for url in [
        "http://allowed.example/",
        "HTTP://allowed.example/",
        "ftp://allowed.example/",
        "file:///etc/passwd",
        "file://allowed.example/etc/passwd",
        "gopher://allowed.example:6379/_INFO",
        "dict://allowed.example:11211/stats",
        "ldap://allowed.example/",
        "jar:https://allowed.example/a.jar!/",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "ws://allowed.example/",
    ] {
        assert_blocked(&c, url, Blocked::Scheme);
    }
}

#[test]
fn no_host() {
    let c = Checker::with_resolver(
        &Policy {
            schemes: vec!["file".into(), "mailto".into(), "https".into()],
            ..Policy::default()
        },
        common::resolver(),
    );
    for url in [
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "mailto:someone@allowed.example",
    ] {
        assert_blocked(&c, url, Blocked::NoHost);
    }
}

#[test]
fn non_special_schemes_are_judged_like_http_hosts() {
    let c = Checker::with_resolver(
        &Policy {
            schemes: vec!["gopher".into(), "redis".into()],
            ..Policy::default()
        },
        common::resolver(),
    );
    assert_blocked(&c, "gopher://2130706433:70/", fa("127.0.0.1"));
    assert_blocked(&c, "redis://0x7f.1:6379/", fa("127.0.0.1"));
    assert_blocked(&c, "redis://%31%32%37.0.0.1:6379/", fa("127.0.0.1"));
    assert_blocked(&c, "gopher://[::1]:70/", fa("::1"));
    assert_blocked(&c, "gopher://localhost:70/", fa("127.0.0.1"));
    // No default port for these schemes: an explicit one is needed.
    assert_blocked(&c, "gopher://public.example/", Blocked::Port);
    assert!(now(c.check("gopher://public.example:70/")).is_ok());
}

#[test]
fn ports() {
    let c = Checker::with_resolver(
        &Policy {
            allowed_ports: Some(vec![443]),
            ..Policy::default()
        },
        common::resolver(),
    );
    for url in [
        "https://allowed.example:8443/",
        "https://allowed.example:22/",
        "https://allowed.example:0/",
        "https://93.184.215.14:6379/",
    ] {
        assert_blocked(&c, url, Blocked::Port);
    }
    assert!(c.check_url("https://allowed.example:443/").is_ok());
    assert!(c.check_url("https://allowed.example/").is_ok());
}

#[test]
fn deny_list_beats_allow_list() {
    let c = Checker::with_resolver(
        &Policy {
            allow_hosts: vec!["*.example".into()],
            deny_hosts: vec!["mixed.example".into(), "*.internal.example".into()],
            ..Policy::default()
        },
        common::resolver(),
    );
    for url in [
        "https://mixed.example/",
        "https://MIXED.example./",
        "https://a.internal.example/",
        "https://other.test/",
    ] {
        assert_blocked(&c, url, Blocked::HostNotAllowed);
    }
    assert!(c.check_url("https://public.example/").is_ok());
}

#[test]
fn allowed_urls_come_back_normalised() {
    let c = allowlisted();
    for (raw, want) in [
        (
            "https://allowed.example/a.png",
            "https://allowed.example/a.png",
        ),
        (
            "HTTPS://ALLOWED.example./a.png",
            "https://allowed.example./a.png",
        ),
        (
            "https://cdn.allowed.example:443/x?y=1#z",
            "https://cdn.allowed.example/x?y=1#z",
        ),
        (
            "https://ａｌｌｏｗｅｄ.example/",
            "https://allowed.example/",
        ),
    ] {
        assert_eq!(c.check_url(raw).unwrap().as_str(), want, "{raw}");
    }
}

#[test]
fn display_never_echoes_the_url() {
    let c = open();
    for url in [
        "https://10.1.2.3/secret-path",
        "https://user:hunter2@public.example/",
        "gopher://public.example/",
        r"https://a\@b.example",
    ] {
        let err = c.check_url(url).unwrap_err();
        let shown = err.to_string();
        for part in [
            "10.1.2.3",
            "secret",
            "hunter2",
            "public.example",
            "b.example",
        ] {
            assert!(!shown.contains(part), "{shown:?} echoes {part}");
        }
    }
}
