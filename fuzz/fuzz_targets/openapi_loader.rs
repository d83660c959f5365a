//! Arbitrary bytes as an OpenAPI description (YAML or JSON text), through every loader that
//! reads one:
//!
//! - the policy loader (`portcullis_policy::load_str` of a policy naming the description):
//!   `openapi::operations` (the route inventory), `openapi::document`, the 3.0 dialect
//!   translation, each route's request, parameter and response schema pointers, and the SSRF
//!   URL fields. Those functions only take a path, so the input is written to a file in a
//!   per-process temporary folder first;
//! - what the gateway does with a loaded description on first use: compiling each route's
//!   request body and parameter validators (`Validators::get`, `Validators::params`) and
//!   filtering a small response by each response schema (`remove_undeclared`, and `prune`
//!   with a caller's roles, for the per-role views of `x-portcullis-roles`);
//! - the positioned loader and every rule of the lint crate (`portcullis_lint::lint_text`,
//!   which parses from text with `load::parse`).
//!
//! Property: nothing panics (errors and problems are fine).

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis_gateway::validate::{Validators, prune, remove_undeclared};

/// A folder of this process's own, with the policy text naming `openapi.yaml` in it.
static DIR: LazyLock<(PathBuf, String)> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("portcullis-fuzz-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    // `ssrf` on so the URL fields of every request schema are looked for too.
    let policy = "listen: 127.0.0.1:8080\n\
                  upstream: http://127.0.0.1:8081\n\
                  openapi: ./openapi.yaml\n\
                  ssrf:\n  allow_hosts: [images.example]\n  from_openapi: true\n"
        .to_owned();
    (dir, policy)
});

fn policy_loader(text: &str) {
    let (dir, policy) = &*DIR;
    if std::fs::write(dir.join("openapi.yaml"), text).is_err() {
        return;
    }
    let Ok(loaded) = portcullis_policy::load_str(&dir.join("policy.yaml"), policy) else {
        return;
    };
    let policy = loaded.policy;
    let routes = &policy.inventory.routes;
    let validators = Validators::new(
        policy.openapi_doc.clone(),
        routes.len(),
        policy.default_bounds,
    );
    let roles = ["customer".to_owned()];
    let response = serde_json::json!({
        "id": "x", "items": [{ "id": 1, "extra": true }, []], "extra": { "a": null }
    });
    for (i, route) in routes.iter().enumerate() {
        if let Some(ptr) = &route.request_schema {
            let _ = validators.get(i, ptr);
        }
        let _ = validators.params(i, &route.template, &route.parameters);
        if let Some(doc) = &policy.openapi_doc {
            for (_, ptr) in &route.response_schemas {
                if let Some(schema) = doc.pointer(ptr) {
                    let _ = remove_undeclared(&mut response.clone(), schema, doc, 0);
                    let _ = prune(&mut response.clone(), schema, doc, 0, Some(&roles));
                }
            }
        }
    }
}

fn lint(text: &str) {
    let options = portcullis_lint::Options {
        profile: portcullis_lint::Profile::Strict,
        disabled: Vec::new(),
    };
    let _ = portcullis_lint::lint_text("openapi.yaml", text, &options);
}

fuzz_target!(|data: &[u8]| {
    // Both loaders read text; a file that is not UTF-8 is refused before any parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    policy_loader(text);
    lint(text);
});
