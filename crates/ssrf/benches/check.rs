//! What a check costs: `check_url` per URL spelling, and `check` with a `StaticResolver` (no
//! DNS, no sockets; its future is ready at once, so it is polled once without a runtime).

#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_ssrf::{Checker, Policy, StaticResolver};

const URLS: &[(&str, &str)] = &[
    ("allowed_name", "https://images.example/avatars/a.png"),
    ("wildcard_name", "https://a.b.cdn.example/x.png?size=64"),
    ("public_v4", "https://93.184.215.14/a.png"),
    ("decimal_loopback", "https://2130706433/"),
    ("mapped_v6_metadata", "https://[::ffff:169.254.169.254]/"),
    ("idna_fullwidth", "https://１２７.０.０.１/"),
    ("userinfo", "https://images.example@evil.example/"),
    ("not_allowed", "https://evil.example/"),
];

fn checker() -> Checker<StaticResolver> {
    let resolver = StaticResolver::new()
        .with(
            "images.example",
            [
                "93.184.215.14".parse().unwrap(),
                "2606:2800:21f:cb07:6820:80da:af6b:8b2c".parse().unwrap(),
            ],
        )
        .with("metadata.cdn.example", ["169.254.169.254".parse().unwrap()]);
    let policy = Policy {
        allow_hosts: vec![
            "images.example".into(),
            "*.cdn.example".into(),
            "93.184.215.14".into(),
        ],
        ..Policy::default()
    };
    Checker::with_resolver(&policy, resolver)
}

/// Polls a future that must be ready at once.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a StaticResolver check never waits"),
    }
}

fn bench(c: &mut Criterion) {
    let checker = checker();
    let mut g = c.benchmark_group("check_url");
    for (name, url) in URLS {
        g.bench_function(*name, |b| b.iter(|| checker.check_url(black_box(url))));
    }
    g.finish();

    let mut g = c.benchmark_group("check_static");
    for (name, url) in [
        ("allowed_name", "https://images.example/avatars/a.png"),
        ("ip_literal", "https://93.184.215.14/a.png"),
        ("name_to_metadata", "https://metadata.cdn.example/"),
    ] {
        assert_eq!(
            now(checker.check(url)).is_ok(),
            name != "name_to_metadata",
            "{url}"
        );
        g.bench_function(name, |b| b.iter(|| now(checker.check(black_box(url)))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
