//! Linting large real-world descriptions (the specs under `../shared/specs/`, when present):
//! load with positions, and load plus every rule.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

fn specs() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("lint");
    g.sample_size(10);
    for spec in specs()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "yaml"))
    {
        let name = spec
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(text) = std::fs::read_to_string(&spec) else {
            continue;
        };
        g.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| portcullis_lint::load::parse(&text, 0).is_ok())
        });
        let options = portcullis_lint::Options::default();
        g.bench_function(format!("lint/{name}"), |b| {
            b.iter(|| {
                portcullis_lint::lint_text(&name, &text, &options)
                    .findings
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
