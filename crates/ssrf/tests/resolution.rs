//! `check` resolves through the injected resolver and judges every address; it never connects.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;

use common::{allowlisted, ip, now, open, resolver};
use portcullis_ssrf::{Blocked, Checker, Policy, Resolve, Resolving, StaticResolver};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn one_private_address_among_public_ones_refuses_the_name() {
    let c = open();
    for (url, bad) in [
        ("https://mixed.example/", "10.0.0.7"),
        ("https://mixed6.example/", "fd12::1"),
        ("https://mapped.example/", "::ffff:10.0.0.1"),
        ("https://nat64.example/", "64:ff9b::a9fe:a9fe"),
        (
            "https://metadata.google.internal/computeMetadata/v1/",
            "169.254.169.254",
        ),
        (
            "https://metadata.google.internal./computeMetadata/v1/",
            "169.254.169.254",
        ),
        ("https://METADATA.Google.Internal/", "169.254.169.254"),
        ("http://metadata.internal.example/", "fd00:ec2::254"),
    ] {
        // The synchronous checks cannot know; the resolving check does.
        assert!(c.check_url(url).is_ok(), "{url}");
        assert_eq!(
            now(c.check(url)).unwrap_err(),
            Blocked::ForbiddenAddress(ip(bad)),
            "{url}"
        );
    }
}

#[test]
fn an_allowlisted_name_resolving_inward_is_still_refused() {
    let c = allowlisted();
    for (url, bad) in [
        ("https://metadata.google.internal/", "169.254.169.254"),
        ("https://internal.allowed.example/", "192.168.1.10"),
    ] {
        assert!(c.check_url(url).is_ok(), "{url}");
        let err = now(c.check(url)).unwrap_err();
        assert_eq!(err, Blocked::ForbiddenAddress(ip(bad)), "{url}");
        assert_eq!(err.reason(), "forbidden_address");
    }
}

#[test]
fn only_public_addresses_are_allowed_and_returned_with_the_port() {
    let c = open();
    let checked = now(c.check("https://public.example/a.png")).unwrap();
    assert_eq!(checked.url.as_str(), "https://public.example/a.png");
    assert_eq!(
        checked.addrs,
        [sa("93.184.215.14:443"), sa("[2606:4700::1111]:443")]
    );
    let checked = now(c.check("http://Public.Example.:8080/")).unwrap();
    assert_eq!(
        checked.addrs,
        [sa("93.184.215.14:8080"), sa("[2606:4700::1111]:8080")]
    );
    let checked = now(c.check("https://[2606:4700::1111]:8443/")).unwrap();
    assert_eq!(checked.addrs, [sa("[2606:4700::1111]:8443")]);
    let checked = now(c.check("https://1572394766/")).unwrap(); // 93.184.215.14
    assert_eq!(checked.url.host_str(), Some("93.184.215.14"));
    assert_eq!(checked.addrs, [sa("93.184.215.14:443")]);
}

#[test]
fn unresolvable_names() {
    let c = open();
    for url in [
        "https://empty.example/",
        "https://nowhere.example/",
        "https://xn--bcher-kva.example/",
    ] {
        let err = now(c.check(url)).unwrap_err();
        assert_eq!(err, Blocked::Unresolvable, "{url}");
        assert_eq!(err.reason(), "unresolvable");
    }
}

/// Records every lookup; owns no socket.
#[derive(Debug, Default)]
struct Recording {
    inner: StaticResolver,
    calls: Mutex<Vec<(String, u16)>>,
}

impl Recording {
    fn calls(&self) -> Vec<(String, u16)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Resolve for Recording {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        self.calls.lock().unwrap().push((host.to_owned(), port));
        self.inner.resolve(host, port)
    }
}

#[test]
fn check_never_connects_and_resolves_only_names_that_pass_the_policy() {
    let rec = std::sync::Arc::new(Recording {
        inner: resolver(),
        ..Recording::default()
    });
    let c = Checker::with_shared_resolver(
        &Policy {
            allow_hosts: vec!["*.example".into(), "93.184.215.14".into()],
            allowed_ports: Some(vec![443, 8443]),
            ..Policy::default()
        },
        rec.clone(),
    );
    // Refused before any lookup: by policy, or as a forbidden literal.
    for url in [
        "http://public.example/",
        "https://user@public.example/",
        "https://other.test/",
        "https://public.example:22/",
        "https://127.0.0.1/",
        "https://2130706433/",
        "https://[::ffff:169.254.169.254]/",
        "https://localhost/",
        r"https://public.example\@evil.test/",
    ] {
        // `now` polls once outside any runtime: a check that tried real I/O would panic or wait.
        assert!(now(c.check(url)).is_err(), "{url}");
    }
    // IP literals are never resolved.
    assert!(now(c.check("https://93.184.215.14/")).is_ok());
    assert_eq!(rec.calls(), []);

    // Names are resolved exactly once each, as the URL spells them, with the URL's port.
    assert!(now(c.check("https://public.example:8443/")).is_ok());
    assert!(now(c.check("https://mixed.example./")).is_err());
    assert!(now(c.check("https://nowhere.example/")).is_err());
    assert_eq!(
        rec.calls(),
        [
            ("public.example".to_owned(), 8443),
            ("mixed.example.".to_owned(), 443),
            ("nowhere.example".to_owned(), 443),
        ]
    );
}

#[test]
fn static_resolver_answers_from_its_map() {
    let r: StaticResolver = [("A.example.", vec![ip("1.1.1.1")])].into_iter().collect();
    assert_eq!(now(r.resolve("a.example", 80)).unwrap(), [sa("1.1.1.1:80")]);
    assert_eq!(now(r.resolve("a.EXAMPLE..", 1)).unwrap(), [sa("1.1.1.1:1")]);
    let err = now(r.resolve("b.example", 80)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn checker_is_shareable_across_tasks() {
    let c = open();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.check("https://public.example/").await.is_ok() })
        })
        .collect();
    for h in handles {
        assert!(h.await.unwrap());
    }
}
