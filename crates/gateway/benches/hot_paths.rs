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
    let hardening = {
        let text = "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nroutes: [GET /]\n";
        let rules = load_str(Path::new("bench.yaml"), text)
            .unwrap()
            .policy
            .headers
            .all;
        respond::Hardening::new(rules)
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
            forward::forwarding(
                &h,
                peer,
                peer,
                &[],
                false,
                host.as_ref(),
                &HeaderValue::from_static("0123456789abcdef01234567"),
            )
        })
    });
    g.bench_function("response/harden", |b| {
        b.iter(|| {
            let mut h = hardening.start(resp.len());
            for (k, v) in &resp {
                if hardening.passes(k) {
                    h.append(k.clone(), v.clone());
                }
            }
            forward::strip_hop_by_hop(&mut h);
            h
        })
    });
    g.finish();
}

/// One limit decision: the local GCRA table (one rule, and three stacked), and the same
/// through Redis (a real `redis-server` on loopback, started here when it is installed), with
/// the commands Redis processed per decision, from its own counters.
fn limits(c: &mut Criterion) {
    use portcullis_gateway::ratelimit::{Cell, LocalLimiter};
    let mut g = c.benchmark_group("limit");
    let table = LocalLimiter::new(portcullis_gateway::ratelimit::DEFAULT_MAX_KEYS);
    let cell = Cell {
        interval: 1,
        burst: u32::MAX,
    };
    // A table already holding 100k keys, as under a real mix of clients.
    for i in 0..100_000 {
        table.decide(
            &[(&format!("r0|1|ip:10.0.{}.{}", i / 256, i % 256), cell)],
            1,
        );
    }
    let mut i = 0u64;
    g.bench_function("local/one_rule", |b| {
        b.iter(|| {
            i += 1;
            let key = format!("r0|1|ip:10.0.{}.{}", (i / 256) % 390, i % 256);
            table.decide(&[(key.as_str(), cell)], 2)
        })
    });
    g.bench_function("local/three_rules", |b| {
        b.iter(|| {
            i += 1;
            let ip = format!("r0|1|ip:10.0.{}.{}", (i / 256) % 390, i % 256);
            table.decide(
                &[
                    (ip.as_str(), cell),
                    ("r1|1|sub:usr_1", cell),
                    ("r2|1|header:key", cell),
                ],
                2,
            )
        })
    });
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-server not installed: the Redis decision is not measured");
        g.finish();
        return;
    }
    let server = portcullis_test_support::RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = portcullis_policy::RedisState {
        servers: portcullis_policy::RedisServers::Single(portcullis_policy::SecretSource::Inline(
            server.url(),
        )),
        prefix: "bench:".into(),
        timeout: std::time::Duration::from_secs(1),
        retry_interval: std::time::Duration::from_secs(1),
        replicas: 1,
        revocations_fail_open: false,
    };
    let store = rt.block_on(async {
        portcullis_gateway::redis::RedisStore::connect(
            &cfg,
            portcullis_gateway::metrics::Metrics::new(1),
        )
        .expect("connect")
    });
    fn check(k: &str) -> portcullis_gateway::redis::RateCheck<'_> {
        portcullis_gateway::redis::RateCheck {
            rule: "r0|1|",
            key: k,
            interval: std::time::Duration::from_micros(1),
            burst: u32::MAX,
        }
    }
    let commands = || -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("redis");
        s.write_all(b"INFO commandstats\r\n").expect("write");
        let mut buf = vec![0u8; 16384];
        std::thread::sleep(std::time::Duration::from_millis(20));
        let n = s.read(&mut buf).expect("read");
        // `cmdstat_evalsha:calls=N,...`: the scripts' own GET/SET/TIME are counted apart.
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter(|l| {
                ["get:", "set:", "time:"]
                    .iter()
                    .all(|c| !l.starts_with(&format!("cmdstat_{c}")))
            })
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    rt.block_on(store.rate(&[check("warm")])).expect("decision");
    let before = commands();
    for _ in 0..1000 {
        rt.block_on(store.rate(&[check("ip:10.0.0.1"), check("sub:usr_1")]))
            .expect("decision");
    }
    let per = (commands() - before) as f64 / 1000.0;
    eprintln!("redis: {per:.2} client commands (round trips) per decision of two stacked rules");
    g.bench_function("redis/two_rules", |b| {
        b.iter(|| rt.block_on(store.rate(&[check("ip:10.0.0.1"), check("sub:usr_1")])))
    });
    g.finish();
}

criterion_group!(benches, routing, headers, limits);
criterion_main!(benches);
