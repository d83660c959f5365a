//! Loading a policy whose inventory is a large real-world description: GitHub's REST API
//! (13 MB of JSON, 1,223 operations), and the shop's. Includes the request/response schema
//! discovery that validation needs.
//!
//! `cargo bench -p portcullis-policy --bench load`

#![allow(clippy::unwrap_used)]

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    for (name, spec) in [
        ("shop", root.join("../../examples/shop/openapi.yaml")),
        (
            "github",
            root.join("../../../shared/specs/github-rest-api.json"),
        ),
    ] {
        if !spec.exists() {
            continue;
        }
        let text = format!(
            "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nopenapi: {}\n",
            spec.display()
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                portcullis_policy::load_str(Path::new("bench.yaml"), &text)
                    .unwrap()
                    .policy
                    .inventory
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
