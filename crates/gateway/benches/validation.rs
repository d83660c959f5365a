//! Body validation per request size, against the demo shop's description:
//!
//! - `validate_request`: the check the gateway runs on a JSON request body (parse, nesting
//!   bound, schema), for bodies of about 100 B, 1 KiB, 10 KiB and 100 KiB (`full`), and the
//!   schema check alone on the parsed body (`schema`). The shop's own request schemas are
//!   bounded well below 100 KiB (`CreateOrderRequest` holds one order line), so the sizes use a
//!   bulk order of the same style added to the shop's document: `{"orders": [...]}`, each item
//!   a `CreateOrderRequest` by `$ref`. `create_order` is the shop's own `POST /v2/orders`.
//! - `filter_response`: the response allowlist (`remove_undeclared`) on the shop's order list
//!   (`GET /v2/orders`) of 1, 10, 100 and 1000 orders, each declared in full (`clean`) or
//!   with one undeclared property to remove (`leaky`); `pipeline` adds parsing the upstream
//!   body and writing it back, as the proxy does.
//!
//! Throughput is the JSON body's size in bytes.
//!
//! `cargo bench -p portcullis-gateway --bench validation`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use portcullis_gateway::validate::{Validators, check, deeper_than, remove_undeclared};
use portcullis_policy::{Policy, load_str};
use serde_json::{Value, json};

fn shop() -> Policy {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/openapi.yaml");
    let text = format!(
        "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nopenapi: {}\n",
        spec.display()
    );
    load_str(Path::new("bench.yaml"), &text).unwrap().policy
}

fn route(policy: &Policy, method: &Method, template: &str) -> usize {
    policy
        .inventory
        .routes
        .iter()
        .position(|r| r.method == *method && r.template == template)
        .unwrap()
}

/// One valid order line, a little different for each `i`.
fn order_line(i: usize) -> Value {
    json!({
        "product_id": format!("prod_K3y8Qm{i:06}"),
        "quantity": i % 100 + 1,
        "discount_code": "SPRING10",
        "shipping_address": format!("{} Castle Road, Dover", i % 1000 + 1),
    })
}

/// A bulk order of at most `target` bytes (at least one line).
fn bulk_order(target: usize) -> Vec<u8> {
    let line = serde_json::to_vec(&order_line(0)).unwrap().len() + 1;
    let lines = (target.saturating_sub(14) / line).max(1);
    let body = json!({ "orders": (0..lines).map(order_line).collect::<Vec<_>>() });
    serde_json::to_vec(&body).unwrap()
}

/// The parse, depth and schema steps of the proxy's request validation.
fn validate(validator: &jsonschema::Validator, bytes: &[u8], max_depth: usize) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return false;
    };
    !deeper_than(&value, max_depth) && check(validator, &value).is_ok()
}

fn requests(c: &mut Criterion) {
    let policy = shop();
    let bounds = policy.default_bounds;
    let mut doc = policy.openapi_doc.as_deref().unwrap().clone();
    doc["components"]["schemas"]["BulkOrderRequest"] = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["orders"],
        "properties": {
            "orders": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2000,
                "items": { "$ref": "#/components/schemas/CreateOrderRequest" },
            },
        },
    });
    let bulk = Validators::new(Some(Arc::new(doc)), 1, bounds)
        .get(0, "/components/schemas/BulkOrderRequest")
        .unwrap();

    let mut g = c.benchmark_group("validate_request");

    // The shop's own route, with its own schema and a real body.
    let create = route(&policy, &Method::POST, "/v2/orders");
    let validators = Validators::new(
        policy.openapi_doc.clone(),
        policy.inventory.len(),
        policy.default_bounds,
    );
    let pointer = policy.inventory.routes[create]
        .request_schema
        .clone()
        .unwrap();
    let shop_validator = validators.get(create, &pointer).unwrap();
    let body = serde_json::to_vec(&order_line(7)).unwrap();
    assert!(validate(&shop_validator, &body, bounds.max_depth));
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("create_order", format!("{}B", body.len())),
        &body,
        |b, body| b.iter(|| validate(&shop_validator, black_box(body), bounds.max_depth)),
    );

    for (label, target) in [
        ("100B", 100),
        ("1KiB", 1024),
        ("10KiB", 10 * 1024),
        ("100KiB", 100 * 1024),
    ] {
        let body = bulk_order(target);
        assert!(
            validate(&bulk, &body, bounds.max_depth),
            "the {label} body is valid"
        );
        let value: Value = serde_json::from_slice(&body).unwrap();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("full", label), &body, |b, body| {
            b.iter(|| validate(&bulk, black_box(body), bounds.max_depth))
        });
        g.bench_with_input(BenchmarkId::new("schema", label), &value, |b, value| {
            b.iter(|| check(&bulk, black_box(value)))
        });
    }
    g.finish();
}

/// One order as the upstream answers it; `leak` adds a property the description does not
/// declare.
fn order(i: usize, leak: bool) -> Value {
    let mut o = json!({
        "id": format!("ord_Z8pQ2rT6{i:08}"),
        "user_id": "usr_A1b2C3d4E5f6",
        "product_id": format!("prod_K3y8Qm{i:06}"),
        "quantity": i % 100 + 1,
        "unit_price_cents": 1250,
        "total_cents": 1250 * (i % 100 + 1),
        "discount_code": null,
        "shipping_address": "1 Castle Road, Dover",
        "status": "pending",
        "created_at": 1_780_000_000 + i,
    });
    if leak {
        o["internal_margin_cents"] = json!(310);
    }
    o
}

fn responses(c: &mut Criterion) {
    let policy = shop();
    let doc = policy.openapi_doc.clone().unwrap();
    let list = route(&policy, &Method::GET, "/v2/orders");
    let (_, pointer) = policy.inventory.routes[list]
        .response_schemas
        .iter()
        .find(|(status, _)| status == "200")
        .unwrap();
    let schema = doc.pointer(pointer).unwrap();

    let mut g = c.benchmark_group("filter_response");
    for n in [1usize, 10, 100, 1000] {
        let batch = if n >= 100 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        for leak in [false, true] {
            let value = json!({ "items": (0..n).map(|i| order(i, leak)).collect::<Vec<_>>() });
            let bytes = serde_json::to_vec(&value).unwrap();
            let expected = if leak { n } else { 0 };
            assert_eq!(
                remove_undeclared(&mut value.clone(), schema, &doc, 0),
                expected
            );
            let kind = if leak { "leaky" } else { "clean" };
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("remove_undeclared/{kind}"), n),
                &value,
                |b, value| {
                    b.iter_batched_ref(
                        || value.clone(),
                        |v| remove_undeclared(v, schema, &doc, 0),
                        batch,
                    )
                },
            );
            if leak {
                g.bench_with_input(BenchmarkId::new("pipeline/leaky", n), &bytes, |b, bytes| {
                    b.iter(|| {
                        let mut v: Value = serde_json::from_slice(black_box(bytes)).unwrap();
                        let removed = remove_undeclared(&mut v, schema, &doc, 0);
                        (removed > 0).then(|| serde_json::to_vec(&v).unwrap())
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, requests, responses);
criterion_main!(benches);
