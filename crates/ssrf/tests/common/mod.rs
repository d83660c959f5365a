//! Shared helpers: checkers over a `StaticResolver`, and a way to run a check without a runtime.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use portcullis_ssrf::{Checker, Policy, StaticResolver};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address parses")
}

/// The names the tests resolve, all through the map (no DNS).
pub fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with("metadata.google.internal", [ip("169.254.169.254")])
        .with("metadata.internal.example", [ip("fd00:ec2::254")])
        .with("allowed.example", [ip("93.184.215.14")])
        .with(
            "public.example",
            [ip("93.184.215.14"), ip("2606:4700::1111")],
        )
        .with(
            "mixed.example",
            [ip("93.184.215.14"), ip("10.0.0.7"), ip("1.1.1.1")],
        )
        .with("mixed6.example", [ip("2606:4700::1111"), ip("fd12::1")])
        .with("mapped.example", [ip("::ffff:10.0.0.1")])
        .with("nat64.example", [ip("64:ff9b::a9fe:a9fe")])
        .with("empty.example", [])
        .with("localhost", [ip("127.0.0.1"), ip("::1")])
        .with("internal.allowed.example", [ip("192.168.1.10")])
}

/// Any public host, `https` and `http`.
pub fn open() -> Checker<StaticResolver> {
    Checker::with_resolver(
        &Policy {
            schemes: vec!["https".into(), "http".into()],
            ..Policy::default()
        },
        resolver(),
    )
}

/// Only `allowed.example`, its subdomains, and the metadata name (listed to show that listing
/// a name does not let it reach a forbidden address).
pub fn allowlisted() -> Checker<StaticResolver> {
    Checker::with_resolver(
        &Policy {
            allow_hosts: vec![
                "allowed.example".into(),
                "*.allowed.example".into(),
                "metadata.google.internal".into(),
                "localhost".into(),
                "127.0.0.1".into(),
            ],
            ..Policy::default()
        },
        resolver(),
    )
}

/// Polls a future once without any runtime: it must be ready at once, which proves it did no
/// I/O (tokio's networking would panic here, outside a runtime).
pub fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the check waited: it must not do I/O"),
    }
}
