//! Hot paths of the request pipeline: path normalisation, route lookup (the shop's 21
//! operations and GitHub's 1,223), and the header rewriting done on every request and response.
//!
//! `cargo bench -p portcullis-gateway --bench hot_paths`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis_guard::{forward, respond};
use portcullis_policy::{Inventory, load_str, path};

fn inventory(spec: &Path) -> Option<Inventory> {
    if !spec.exists() {
        return None;
    }
    let text = format!(
        "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nopenapi: {}\n",
        spec.display()
    );
    Some(
        load_str(Path::new("bench.yaml"), &text)
            .unwrap()
            .policy
            .inventory,
    )
}

fn routing(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut g = c.benchmark_group("route");
    g.bench_function("normalize/canonical", |b| {
        b.iter(|| path::normalize(black_box("/v2/orders/ord_Abc123Def456Ghi789Jk")))
    });
    g.bench_function("normalize/tricky", |b| {
        b.iter(|| path::normalize(black_box("/v2//orders/./x/../%6frd_Abc123")))
    });
    if let Some(shop) = inventory(&root.join("../../examples/shop/openapi.yaml")) {
        g.bench_function("lookup/shop", |b| {
            b.iter(|| {
                shop.lookup(
                    black_box(&Method::GET),
                    black_box("/v2/orders/ord_Abc123Def456Ghi789Jk"),
                )
                .is_found()
            })
        });
    }
    if let Some(gh) = inventory(&root.join("../../../shared/specs/github-rest-api.json")) {
        g.bench_function("lookup/github", |b| {
            b.iter(|| {
                gh.lookup(
                    black_box(&Method::GET),
                    black_box("/repos/octocat/hello-world/pulls/42/comments"),
                )
                .is_found()
            })
        });
    }
    g.finish();
}

fn headers(c: &mut Criterion) {
    let mut req = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example"),
        ("user-agent", "Mozilla/5.0"),
        ("accept", "application/json"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.9"),
    ] {
        req.insert(k, HeaderValue::from_static(v));
    }
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let rules = {
        let text = "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nroutes: [GET /]\n";
        load_str(Path::new("bench.yaml"), text)
            .unwrap()
            .policy
            .headers
            .all
    };
    let mut resp = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "64"),
        ("server", "nginx/1.22"),
        ("date", "Sun, 29 Nov 2026 18:00:00 GMT"),
    ] {
        resp.insert(k, HeaderValue::from_static(v));
    }
    let mut g = c.benchmark_group("headers");
    g.bench_function("request/forward", |b| {
        b.iter(|| {
            let mut h = req.clone();
            forward::strip_hop_by_hop(&mut h);
            let host = h.get("host").cloned();
            forward::set_forwarded(
                &mut h,
                peer,
                peer,
                &[],
                false,
                host.as_ref(),
                "0123456789abcdef01234567",
            );
            h
        })
    });
    g.bench_function("response/harden", |b| {
        b.iter(|| {
            let mut h = resp.clone();
            forward::strip_hop_by_hop(&mut h);
            respond::apply(&mut h, &rules);
            h
        })
    });
    g.finish();
}

criterion_group!(benches, routing, headers);
criterion_main!(benches);
