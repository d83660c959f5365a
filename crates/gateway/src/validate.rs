//! The validate phase for JSON request bodies: the operation's schema from the OpenAPI
//! description, compiled once per policy on first use, with objects closed by default — an
//! object schema that does not say `additionalProperties` gets `false`, so a client cannot add
//! `role` or `price` to a body the contract does not give them (mass assignment, API3).
//! Patterns run on a linear-time regex engine (no ReDoS through an attacker's body); remote
//! `$ref`s are never fetched (the crate's network features are off).
//!
//! A refusal names the field (JSON pointer) and the rule, never the value.

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

/// Compiled validators, one slot per route, filled on first use.
#[derive(Debug, Default)]
pub struct Validators {
    doc: Option<Arc<Value>>,
    slots: Vec<OnceLock<Option<Arc<jsonschema::Validator>>>>,
}

/// Gives object schemas without `additionalProperties` a closed one, unless they compose with
/// `allOf`/`anyOf`/`oneOf`/`$ref` (closing those would refuse their siblings' properties).
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let composed = [
                "allOf",
                "anyOf",
                "oneOf",
                "$ref",
                "additionalProperties",
                "unevaluatedProperties",
            ]
            .iter()
            .any(|k| map.contains_key(*k));
            if map.get("properties").is_some_and(Value::is_object) && !composed {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for child in map.values_mut() {
                close_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

impl Validators {
    pub fn new(doc: Option<Arc<Value>>, routes: usize) -> Self {
        Self {
            doc,
            slots: (0..routes).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The validator of a route's request body, compiled on first use.
    pub fn get(&self, route: usize, pointer: &str) -> Option<Arc<jsonschema::Validator>> {
        let slot = self.slots.get(route)?;
        slot.get_or_init(|| {
            let doc = self.doc.as_ref()?;
            let mut root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": "#/$defs/request",
                "$defs": { "request": doc.pointer(pointer)?.clone() },
                "components": doc.get("components").cloned().unwrap_or(Value::Null),
            });
            close_objects(&mut root);
            match jsonschema::options().with_pattern_options(jsonschema::PatternOptions::regex()).build(&root) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    // A schema the validator cannot compile is not enforced; the log says so.
                    tracing::error!(target: "portcullis::validate", pointer, error = %e, "request schema not compiled");
                    None
                }
            }
        })
        .clone()
    }
}

/// The first violation, as `` `/field`: rule `` — never the value.
pub fn check(validator: &jsonschema::Validator, body: &Value) -> Result<(), String> {
    let Some(err) = validator.iter_errors(body).next() else {
        return Ok(());
    };
    let path = err.instance_path().to_string();
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    Err(match err.kind() {
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
            let names: Vec<String> = unexpected
                .iter()
                .map(|n| format!("`{}`", n.chars().take(64).collect::<String>()))
                .collect();
            format!("`{path}`: unknown field {}", names.join(", "))
        }
        kind => format!("`{path}`: breaks `{}`", kind.keyword()),
    })
}
