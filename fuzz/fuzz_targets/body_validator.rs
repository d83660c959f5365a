//! Arbitrary bytes as a JSON request (or response) body, against the demo shop's description
//! (`examples/shop/openapi.yaml`, loaded once through the policy loader):
//!
//! - the nesting check (`validate::deeper_than`) with the policy's default depth bound;
//! - when the body is not too deep (the gateway refuses it before validating otherwise): the
//!   request body validator of every shop operation that has one (`Validators::get`, then
//!   `validate::check`, which also formats the refusal);
//! - the response allowlist (`validate::remove_undeclared`) on a clone, for every 2xx response
//!   schema of the shop, and a second pass over the result, which must remove nothing.
//!
//! Bytes that are not JSON are skipped (the gateway answers 400 before any of this).
//! Property: nothing panics.

#![no_main]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use portcullis_gateway::validate::{self, Validators};
use serde_json::Value;

struct Shop {
    doc: Arc<Value>,
    max_depth: usize,
    validators: Validators,
    /// (route, request body schema pointer), for the operations that take a JSON body.
    requests: Vec<(usize, String)>,
    /// 2xx JSON response schema pointers.
    responses: Vec<String>,
}

static SHOP: LazyLock<Shop> = LazyLock::new(|| {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop/openapi.yaml");
    let text = format!(
        "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nopenapi: {}\n",
        spec.display()
    );
    let policy = portcullis_policy::load_str(Path::new("fuzz.yaml"), &text)
        .expect("the shop's policy loads")
        .policy;
    let doc = policy
        .openapi_doc
        .clone()
        .expect("request validation is on");
    let routes = &policy.inventory.routes;
    let validators = Validators::new(Some(doc.clone()), routes.len(), policy.default_bounds);
    let requests: Vec<(usize, String)> = routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.request_schema.clone()?)))
        .collect();
    for (i, ptr) in &requests {
        assert!(
            validators.get(*i, ptr).is_some(),
            "the schema at {ptr} compiles"
        );
    }
    let responses: Vec<String> = routes
        .iter()
        .flat_map(|r| r.response_schemas.iter().map(|(_, p)| p.clone()))
        .filter(|p| doc.pointer(p).is_some())
        .collect();
    assert!(!requests.is_empty() && !responses.is_empty());
    Shop {
        doc,
        max_depth: policy.default_bounds.max_depth,
        validators,
        requests,
        responses,
    }
});

fuzz_target!(|data: &[u8]| {
    let shop = &*SHOP;
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if !validate::deeper_than(&body, shop.max_depth) {
        for (route, ptr) in &shop.requests {
            if let Some(validator) = shop.validators.get(*route, ptr) {
                let _ = validate::check(&validator, &body);
            }
        }
    }
    for ptr in &shop.responses {
        let Some(schema) = shop.doc.pointer(ptr) else {
            continue;
        };
        let mut filtered = body.clone();
        validate::remove_undeclared(&mut filtered, schema, &shop.doc, 0);
        let again = validate::remove_undeclared(&mut filtered, schema, &shop.doc, 0);
        assert_eq!(
            again, 0,
            "a filtered response filtered again loses more ({ptr})"
        );
    }
});
