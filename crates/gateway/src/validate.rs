//! The validate phase for JSON request bodies: the operation's schema from the OpenAPI
//! description, compiled once per policy on first use, with objects closed by default — an
//! object schema that does not say `additionalProperties` gets `false`, so a client cannot add
//! `role` or `price` to a body the contract does not give them (mass assignment, API3).
//! Patterns run on a linear-time regex engine (no ReDoS through an attacker's body); remote
//! `$ref`s are never fetched (the crate's network features are off).
//!
//! A refusal names the field (JSON pointer) and the rule, never the value.

use std::sync::{Arc, OnceLock};

use portcullis_policy::DefaultBounds;
use portcullis_policy::openapi::{Param, ParamIn};
use serde_json::{Value, json};

/// Compiled validators, one slot per route, filled on first use.
#[derive(Debug, Default)]
pub struct Validators {
    doc: Option<Arc<Value>>,
    bounds: DefaultBounds,
    slots: Vec<OnceLock<Option<Arc<jsonschema::Validator>>>>,
    params: Vec<OnceLock<Option<Arc<ParamValidator>>>>,
    /// Whether any property schema carries `x-portcullis-roles` (per-role views exist).
    pub views: bool,
    /// Response validators by schema pointer (a route has one per declared status).
    responses:
        std::sync::RwLock<std::collections::HashMap<String, Option<Arc<jsonschema::Validator>>>>,
    /// Schemas that could not be compiled: where, and why.
    failures: std::sync::Mutex<Vec<String>>,
}

/// The parameters of one operation: how to turn each raw value into JSON, and one validator
/// for them all (an object `{path: {..}, query: {..}, header: {..}}`), so a refusal names
/// `/query/limit` and the rule.
#[derive(Debug)]
pub struct ParamValidator {
    params: Vec<(String, ParamIn, Kind)>,
    validator: Arc<jsonschema::Validator>,
}

/// What a raw parameter value becomes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Integer,
    Number,
    Boolean,
    String,
    /// An array of this kind (repeated keys, or comma-separated).
    Array(Scalar),
}

#[derive(Clone, Copy, Debug)]
enum Scalar {
    Integer,
    Number,
    Boolean,
    String,
}

fn scalar_of(schema: &Value) -> Scalar {
    let ty = schema.get("type").and_then(|t| {
        t.as_str().or_else(|| {
            t.as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|s| *s != "null")
        })
    });
    match ty {
        Some("integer") => Scalar::Integer,
        Some("number") => Scalar::Number,
        Some("boolean") => Scalar::Boolean,
        _ => Scalar::String,
    }
}

fn coerce(raw: &str, s: Scalar) -> Value {
    match s {
        Scalar::Integer => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.to_owned())),
        Scalar::Number => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Scalar::Boolean => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        Scalar::String => Value::String(raw.to_owned()),
    }
}

impl ParamValidator {
    /// Checks the parameters present in the request: `path` (name, value) from the router,
    /// the raw query string, and the headers.
    pub fn check(
        &self,
        path: &[(&str, &str)],
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Result<(), String> {
        let pairs: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let mut inst = json!({ "path": {}, "query": {}, "header": {} });
        for (name, loc, kind) in &self.params {
            let raws: Vec<&str> = match loc {
                ParamIn::Path => path
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| *v)
                    .collect(),
                ParamIn::Query => pairs
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .collect(),
                ParamIn::Header => {
                    let values = headers.get_all(name.as_str());
                    // A value that is not visible ASCII cannot be checked: refused, not skipped.
                    if values.iter().any(|v| v.to_str().is_err()) {
                        return Err(format!("`/header/{name}`: breaks `pattern`"));
                    }
                    values.iter().filter_map(|v| v.to_str().ok()).collect()
                }
            };
            if raws.is_empty() {
                continue;
            }
            // `?limit=10&limit=999999`: upstreams disagree on which one counts.
            if raws.len() > 1 && !matches!(kind, Kind::Array(_)) {
                let slot = match loc {
                    ParamIn::Path => "path",
                    ParamIn::Query => "query",
                    ParamIn::Header => "header",
                };
                return Err(format!("`/{slot}/{name}`: given more than once"));
            }
            let value = match kind {
                Kind::Array(s) => Value::Array(
                    raws.iter()
                        .flat_map(|r| r.split(','))
                        .map(|r| coerce(r, *s))
                        .collect(),
                ),
                Kind::Integer => coerce(raws[0], Scalar::Integer),
                Kind::Number => coerce(raws[0], Scalar::Number),
                Kind::Boolean => coerce(raws[0], Scalar::Boolean),
                Kind::String => coerce(raws[0], Scalar::String),
            };
            let slot = match loc {
                ParamIn::Path => "path",
                ParamIn::Query => "query",
                ParamIn::Header => "header",
            };
            if let Some(obj) = inst.get_mut(slot).and_then(Value::as_object_mut) {
                obj.insert(name.clone(), value);
            }
        }
        check(&self.validator, &inst)
    }
}

/// Closes objects against undeclared properties (mass assignment), in the whole schema
/// document `root`:
///
/// - an object schema with `properties` and no `additionalProperties` gets `false`;
/// - a schema composed with `allOf`/`anyOf`/`oneOf` gets `unevaluatedProperties: false`
///   instead, and its members stay open, since closing one member would refuse the
///   properties of the others. A member given by `$ref` is pointed at an open copy of its
///   target, so the target itself is closed where it is used on its own (an `allOf` that
///   extends `UpdateMe` anywhere in the description must not leave `UpdateMe` open);
/// - `x-portcullis-open: true` opts a schema out (on an operation: its whole request body).
fn close_objects(root: &mut Value) {
    let mut targets = std::collections::BTreeSet::new();
    collect_members(root, &mut targets);
    // Open copies, taken before anything is closed, under `$defs` (beside the schema).
    let copies: Vec<(String, String, Value)> = targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let name = format!("portcullis-member-{i}");
            let copy = root.pointer(t)?.clone();
            Some((format!("#{t}"), name, copy))
        })
        .collect();
    let mut members = std::collections::HashSet::new();
    if !copies.is_empty()
        && let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut)
    {
        for (_, name, copy) in &copies {
            defs.insert(name.clone(), copy.clone());
            members.insert(format!("/$defs/{name}"));
        }
    }
    let renamed: std::collections::HashMap<&str, String> = copies
        .iter()
        .filter(|(_, name, _)| members.contains(&format!("/$defs/{name}")))
        .map(|(from, name, _)| (from.as_str(), format!("#/$defs/{name}")))
        .collect();
    repoint_members(root, &renamed);
    close_in(root, "", &members, false);
}

/// The `$ref` targets (JSON pointers) used as members of a composition.
fn collect_members(v: &Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for k in ["allOf", "anyOf", "oneOf"] {
                for m in map.get(k).and_then(Value::as_array).into_iter().flatten() {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str)
                        && let Some(p) = r.strip_prefix('#')
                    {
                        out.insert(p.to_owned());
                    }
                }
            }
            map.values().for_each(|c| collect_members(c, out));
        }
        Value::Array(items) => items.iter().for_each(|c| collect_members(c, out)),
        _ => {}
    }
}

/// Points the `$ref` of every composition member at its target's open copy.
fn repoint_members(v: &mut Value, renamed: &std::collections::HashMap<&str, String>) {
    match v {
        Value::Object(map) => {
            for k in ["allOf", "anyOf", "oneOf"] {
                for m in map
                    .get_mut(k)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(Value::String(r)) = m.get_mut("$ref")
                        && let Some(to) = renamed.get(r.as_str())
                    {
                        *r = to.clone();
                    }
                }
            }
            map.values_mut().for_each(|c| repoint_members(c, renamed));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| repoint_members(c, renamed)),
        _ => {}
    }
}

fn close_in(v: &mut Value, at: &str, members: &std::collections::HashSet<String>, member: bool) {
    match v {
        Value::Object(map) => {
            let open = map.get("x-portcullis-open") == Some(&Value::Bool(true));
            let said = map.contains_key("additionalProperties")
                || map.contains_key("unevaluatedProperties");
            let composed = ["allOf", "anyOf", "oneOf"]
                .iter()
                .any(|k| map.contains_key(*k));
            let member = member || members.contains(at);
            if !open && !said && !map.contains_key("$ref") {
                if composed {
                    map.insert("unevaluatedProperties".into(), Value::Bool(false));
                } else if map.get("properties").is_some_and(Value::is_object) && !member {
                    map.insert("additionalProperties".into(), Value::Bool(false));
                }
            }
            for (k, child) in map.iter_mut() {
                let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                if matches!(k.as_str(), "allOf" | "anyOf" | "oneOf") {
                    // The members themselves stay open; what they contain does not.
                    if let Value::Array(items) = child {
                        for (i, item) in items.iter_mut().enumerate() {
                            close_in(item, &format!("{path}/{i}"), members, true);
                        }
                    }
                } else {
                    close_in(child, &path, members, false);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                close_in(item, &format!("{at}/{i}"), members, false);
            }
        }
        _ => {}
    }
}

impl Validators {
    pub fn new(doc: Option<Arc<Value>>, routes: usize, bounds: DefaultBounds) -> Self {
        Self {
            views: doc
                .as_deref()
                .is_some_and(portcullis_policy::openapi::has_property_roles),
            doc,
            bounds,
            slots: (0..routes).map(|_| OnceLock::new()).collect(),
            params: (0..routes).map(|_| OnceLock::new()).collect(),
            responses: Default::default(),
            failures: Default::default(),
        }
    }

    /// Compiles every route's request schema and parameter schemas now. A schema that cannot
    /// be compiled (a pattern the linear-time engine refuses, a `$ref` to nowhere) would leave
    /// its route unchecked: mass assignment and type confusion let through. So the policy is
    /// refused instead, naming the schema.
    pub fn precompile(&self, routes: &[portcullis_policy::inventory::Route]) -> Result<(), String> {
        if self.doc.is_none() {
            return Ok(());
        }
        let mut named = Vec::new();
        for (id, r) in routes.iter().enumerate() {
            if let Some(p) = r.request_schema.as_deref() {
                let _ = self.get(id, p);
            }
            let _ = self.params(id, &r.template, &r.parameters);
            let mut failures = self
                .failures
                .lock()
                .map_err(|_| "lock poisoned".to_owned())?;
            named.extend(
                failures
                    .drain(..)
                    .map(|f| format!("{} {}: {f}", r.method, r.template)),
            );
        }
        match named.as_slice() {
            [] => Ok(()),
            [one] => Err(one.clone()),
            [first, rest @ ..] => Err(format!("{first} (and {} more)", rest.len())),
        }
    }

    /// Compiles a schema (patterns on a linear-time engine; `formats` enforced or not); a
    /// failure is logged and noted for [`Validators::precompile`].
    fn compile(
        &self,
        root: &Value,
        formats: bool,
        at: &str,
        what: &str,
    ) -> Option<Arc<jsonschema::Validator>> {
        let compiled = compile(root, formats, at, what);
        if let Err(e) = &compiled
            && let Ok(mut f) = self.failures.lock()
        {
            f.push(format!("the {what} at {at} cannot be compiled: {e}"));
        }
        compiled.ok()
    }

    /// The validator of a response schema (by pointer), compiled on first use: the declared
    /// types, formats, enums and required properties as written (undeclared properties are
    /// the allowlist's job, and no default bounds apply to what the upstream sends).
    pub fn response(&self, pointer: &str) -> Option<Arc<jsonschema::Validator>> {
        if let Some(v) = self.responses.read().ok()?.get(pointer) {
            return v.clone();
        }
        let compiled = self
            .doc
            .as_deref()
            .and_then(|doc| schema_root(doc, pointer))
            .and_then(|root| compile(&root, false, pointer, "response schema").ok());
        self.responses
            .write()
            .ok()?
            .insert(pointer.to_owned(), compiled.clone());
        compiled
    }

    /// The validator of a route's parameters, compiled on first use (`None` without any).
    pub fn params(
        &self,
        route: usize,
        template: &str,
        params: &[Param],
    ) -> Option<Arc<ParamValidator>> {
        let slot = self.params.get(route)?;
        slot.get_or_init(|| {
            let doc = self.doc.as_ref()?;
            if params.is_empty() {
                return None;
            }
            let mut groups = json!({
                "path": { "type": "object", "properties": {}, "required": [] },
                "query": { "type": "object", "properties": {}, "required": [] },
                "header": { "type": "object", "properties": {}, "required": [] },
            });
            let mut kinds = Vec::new();
            for p in params {
                let schema = doc.pointer(&p.schema)?;
                let resolved = resolve(schema, doc);
                let kind = if resolved.get("type").and_then(Value::as_str) == Some("array") {
                    Kind::Array(scalar_of(resolve(
                        resolved.get("items").unwrap_or(&Value::Null),
                        doc,
                    )))
                } else {
                    match scalar_of(resolved) {
                        Scalar::Integer => Kind::Integer,
                        Scalar::Number => Kind::Number,
                        Scalar::Boolean => Kind::Boolean,
                        Scalar::String => Kind::String,
                    }
                };
                let (group, name) = match p.location {
                    ParamIn::Path => ("path", p.name.clone()),
                    ParamIn::Query => ("query", p.name.clone()),
                    // Header names are case-insensitive; `HeaderMap` lookups are lower-case.
                    ParamIn::Header => ("header", p.name.to_ascii_lowercase()),
                };
                let g = &mut groups[group];
                g["properties"][&name] = schema.clone();
                // Path parameters of compound segments (`{base}...{head}`) are not extracted;
                // the router has matched them already.
                let compound = p.location == ParamIn::Path && !whole_segment(template, &p.name);
                if p.required
                    && !compound
                    && p.location != ParamIn::Header
                    && let Some(req) = g["required"].as_array_mut()
                {
                    req.push(Value::String(name.clone()));
                }
                kinds.push((name, p.location, kind));
            }
            bound(&mut groups, &self.bounds);
            no_markup(&mut groups);
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": groups,
                "components": doc.get("components").cloned().unwrap_or(Value::Null),
            });
            let validator = self.compile(
                &root,
                true,
                &format!("route {template}"),
                "parameter schemas",
            )?;
            Some(Arc::new(ParamValidator {
                params: kinds,
                validator,
            }))
        })
        .clone()
    }

    /// The validator of a route's request body, compiled on first use.
    pub fn get(&self, route: usize, pointer: &str) -> Option<Arc<jsonschema::Validator>> {
        let slot = self.slots.get(route)?;
        slot.get_or_init(|| {
            let doc = self.doc.as_ref()?;
            let mut root = schema_root(doc, pointer)?;
            drop_read_only(&mut root);
            // `x-portcullis-open: true` on the operation opts its whole body out of closing.
            let op_open = pointer
                .split_once("/requestBody")
                .and_then(|(op, _)| doc.pointer(op))
                .and_then(|op| op.get("x-portcullis-open"))
                == Some(&Value::Bool(true));
            if !op_open {
                close_objects(&mut root);
            }
            bound(&mut root, &self.bounds);
            no_markup(&mut root);
            self.compile(&root, true, pointer, "request schema")
        })
        .clone()
    }
}

/// The schema at `pointer` as a document of its own (JSON Schema 2020-12), with the
/// description's `components` along for its `$ref`s.
fn schema_root(doc: &Value, pointer: &str) -> Option<Value> {
    Some(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/$defs/schema",
        "$defs": { "schema": doc.pointer(pointer)?.clone() },
        "components": doc.get("components").cloned().unwrap_or(Value::Null),
    }))
}

/// Compiles a schema (patterns on a linear-time engine; `formats` enforced or not).
fn compile(
    root: &Value,
    formats: bool,
    at: &str,
    what: &str,
) -> Result<Arc<jsonschema::Validator>, String> {
    match jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .should_validate_formats(formats)
        .build(root)
    {
        Ok(v) => Ok(Arc::new(v)),
        Err(e) => {
            tracing::error!(target: "portcullis::validate", at, error = %e, "{what} not compiled");
            Err(e.to_string())
        }
    }
}

/// What `x-portcullis-no-markup: true` forbids in a string: `<`, `>` or `javascript:`.
const MARKUP: &str = "(?i)[<>]|javascript:";

/// Strings marked `x-portcullis-no-markup: true` must not carry markup (defense in depth
/// against stored XSS; the service still has to encode its output).
fn no_markup(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("x-portcullis-no-markup") == Some(&Value::Bool(true)) {
                let rule = json!({ "not": { "pattern": MARKUP } });
                match map.get_mut("allOf") {
                    Some(Value::Array(all)) => all.push(rule),
                    _ => {
                        map.insert("allOf".into(), Value::Array(vec![rule]));
                    }
                }
            }
            map.values_mut().for_each(no_markup);
        }
        Value::Array(items) => items.iter_mut().for_each(no_markup),
        _ => {}
    }
}

/// Whether `{name}` is a whole segment of the template.
fn whole_segment(template: &str, name: &str) -> bool {
    let whole = format!("{{{name}}}");
    template.split('/').any(|seg| seg == whole)
}

/// Gives string, array and integer schemas that state no bound the policy's default ones
/// (API4: an unbounded field cannot be abused because the description forgot it).
fn bound(v: &mut Value, b: &DefaultBounds) {
    match v {
        Value::Object(map) => {
            let types: Vec<String> = match map.get("type") {
                Some(Value::String(t)) => vec![t.clone()],
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let fixed = map.contains_key("enum") || map.contains_key("const");
            if types.iter().any(|t| t == "string") && !fixed && !map.contains_key("maxLength") {
                map.insert("maxLength".into(), Value::from(b.max_string_length));
            }
            if types.iter().any(|t| t == "array") && !map.contains_key("maxItems") {
                map.insert("maxItems".into(), Value::from(b.max_array_items));
            }
            if types.iter().any(|t| t == "integer") && !fixed {
                if !map.contains_key("maximum") && !map.contains_key("exclusiveMaximum") {
                    map.insert("maximum".into(), Value::from(b.max_integer));
                }
                if !map.contains_key("minimum") && !map.contains_key("exclusiveMinimum") {
                    map.insert("minimum".into(), Value::from(-b.max_integer));
                }
            }
            map.values_mut().for_each(|c| bound(c, b));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| bound(c, b)),
        _ => {}
    }
}

/// Whether a JSON value nests deeper than `max` (arrays and objects), without recursion.
pub fn deeper_than(v: &Value, max: usize) -> bool {
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if d > max {
            return true;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    false
}

/// A request may not carry `readOnly` properties: they leave `properties` (so a closed object
/// refuses them as unknown) and `required`. A property is read-only when its schema says so,
/// directly or through the `$ref`s it follows (the only way OpenAPI 3.0 can say it).
fn drop_read_only(root: &mut Value) {
    let snapshot = root.clone();
    strip_read_only(root, &snapshot);
}

/// Whether a property's schema says `readOnly`: itself, through `$ref`s, or through an
/// `allOf` member (OpenAPI 3.0's way to describe a `$ref`d property: `allOf: [{$ref: Role}]`).
fn read_only(s: &Value, root: &Value) -> bool {
    read_only_within(s, root, 16)
}

fn read_only_within(s: &Value, root: &Value, hops: u32) -> bool {
    if hops == 0 {
        return false;
    }
    if s.get("readOnly") == Some(&Value::Bool(true)) {
        return true;
    }
    let target = s
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|r| root.pointer(r));
    target.is_some_and(|t| read_only_within(t, root, hops - 1))
        || s.get("allOf")
            .and_then(Value::as_array)
            .is_some_and(|all| all.iter().any(|m| read_only_within(m, root, hops - 1)))
}

fn strip_read_only(v: &mut Value, root: &Value) {
    match v {
        Value::Object(map) => {
            let gone: Vec<String> = map
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .filter(|(_, s)| read_only(s, root))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            // Refused where sent (a `false` schema), not merely undeclared: an open object
            // would take an undeclared property as an extra.
            if let Some(props) = map.get_mut("properties").and_then(Value::as_object_mut) {
                for k in &gone {
                    props.insert(k.clone(), Value::Bool(false));
                }
            }
            if let Some(req) = map.get_mut("required").and_then(Value::as_array_mut) {
                req.retain(|r| r.as_str().is_none_or(|r| !gone.iter().any(|g| g == r)));
            }
            map.values_mut().for_each(|c| strip_read_only(c, root));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| strip_read_only(c, root)),
        _ => {}
    }
}

/// The first violation, as `` `/field`: rule `` — never the value.
/// The same test as [`MARKUP`], for naming the refusal.
fn has_markup(s: &str) -> bool {
    s.contains(['<', '>']) || s.to_ascii_lowercase().contains("javascript:")
}

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
        jsonschema::error::ValidationErrorKind::Not { .. }
            if err.instance().as_str().is_some_and(has_markup) =>
        {
            format!("`{path}`: markup (`<`, `>` or `javascript:`) is not allowed")
        }
        // The only `false` schemas are the read-only properties' (`strip_read_only`).
        jsonschema::error::ValidationErrorKind::FalseSchema => {
            format!("`{path}`: read-only")
        }
        kind => format!("`{path}`: breaks `{}`", kind.keyword()),
    })
}

/// Follows local `$ref`s (at most 32).
fn resolve<'a>(mut schema: &'a Value, doc: &'a Value) -> &'a Value {
    for _ in 0..32 {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(ptr) => match doc.pointer(ptr) {
                Some(next) => schema = next,
                None => break,
            },
            None => break,
        }
    }
    schema
}

/// Removes from `value` every object property that `schema` does not declare (response
/// allowlist, API3), in nested objects and array items; returns how many it removed. Objects
/// the schema leaves open (`additionalProperties` true or a schema, `anyOf`/`oneOf`) keep
/// their extra properties.
pub fn remove_undeclared(value: &mut Value, schema: &Value, doc: &Value, depth: usize) -> usize {
    let p = prune(value, schema, doc, depth, None);
    p.undeclared + p.hidden
}

/// What [`prune`] took out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Properties the schema does not declare.
    pub undeclared: usize,
    /// Declared properties the caller's roles may not see (`x-portcullis-roles`).
    pub hidden: usize,
    /// The value nests deeper than the filter goes: what is below was not looked at.
    pub too_deep: bool,
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, o: Self) {
        self.undeclared += o.undeclared;
        self.hidden += o.hidden;
        self.too_deep |= o.too_deep;
    }
}

/// Whether a property schema is visible to `roles`: no `x-portcullis-roles`, or one of them
/// is held. `None` means every view (no role filtering).
fn visible(schema: &Value, roles: Option<&[String]>) -> bool {
    let (Some(roles), Some(Value::Array(needed))) = (roles, schema.get("x-portcullis-roles"))
    else {
        return true;
    };
    needed
        .iter()
        .filter_map(Value::as_str)
        .any(|n| roles.iter().any(|r| r == n))
}

/// [`remove_undeclared`] with a per-role view: a declared property whose schema carries
/// `x-portcullis-roles` is also removed unless `roles` holds one of them (admins may see
/// fields users may not). Hidden properties are removed even in open objects.
pub fn prune(
    value: &mut Value,
    schema: &Value,
    doc: &Value,
    depth: usize,
    roles: Option<&[String]>,
) -> Pruned {
    let mut out = Pruned::default();
    if depth > 64 {
        out.too_deep = true;
        return out;
    }
    let schema = resolve(schema, doc);
    match value {
        Value::Object(map) => {
            if let Some(branches) = schema
                .get("anyOf")
                .or_else(|| schema.get("oneOf"))
                .and_then(Value::as_array)
            {
                // The branches an object can be: OpenAPI 3.1's nullable object (`anyOf:
                // [{$ref: X}, {type: 'null'}]`) and an expandable field (`anyOf: [{type:
                // string}, {$ref: Customer}]`) have one, filtered as it. Which of several
                // object shapes an object meant cannot be told: it keeps the properties any
                // of them declares (their union), and loses the rest.
                let shapes: Vec<&Value> = branches
                    .iter()
                    .filter(|b| {
                        let b = resolve(b, doc);
                        match b.get("type").and_then(Value::as_str) {
                            Some(t) => t == "object",
                            None => b.get("properties").is_some() || b.get("allOf").is_some(),
                        }
                    })
                    .collect();
                return match shapes.as_slice() {
                    [] => out,
                    [only] => prune(value, only, doc, depth + 1, roles),
                    several => {
                        let union = json!({ "type": "object", "allOf": several });
                        prune(value, &union, doc, depth + 1, roles)
                    }
                };
            }
            // Properties declared here and by every `allOf` member.
            let mut declared: Vec<(&String, &Value)> = Vec::new();
            let mut open = matches!(
                schema.get("additionalProperties"),
                Some(Value::Bool(true)) | Some(Value::Object(_))
            );
            let parts = std::iter::once(schema).chain(
                schema
                    .get("allOf")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|m| resolve(m, doc)),
            );
            // The schema of undeclared properties, when it gives one (a map of users): their
            // values are filtered by it.
            let mut extra: Option<&Value> = None;
            for part in parts {
                if let Some(s @ Value::Object(_)) = part.get("additionalProperties") {
                    extra = extra.or(Some(s));
                }
                if let Some(props) = part.get("properties").and_then(Value::as_object) {
                    // `writeOnly` properties (a password) are never sent back.
                    declared.extend(props.iter().filter(|(_, s)| {
                        resolve(s, doc).get("writeOnly") != Some(&Value::Bool(true))
                    }));
                }
                open |= matches!(
                    part.get("additionalProperties"),
                    Some(Value::Bool(true)) | Some(Value::Object(_))
                );
            }
            if declared.is_empty() && schema.get("type").and_then(Value::as_str) != Some("object") {
                return out;
            }
            let before = map.len();
            declared.retain(|(name, s)| {
                let shown = visible(resolve(s, doc), roles);
                if !shown {
                    map.remove(*name);
                }
                shown
            });
            out.hidden = before - map.len();
            let before = map.len();
            if !open {
                map.retain(|k, _| declared.iter().any(|(d, _)| *d == k));
            }
            out.undeclared = before - map.len();
            if let Some(extra) = extra {
                for (name, child) in map.iter_mut() {
                    if !declared.iter().any(|(d, _)| *d == name) {
                        out += prune(child, extra, doc, depth + 1, roles);
                    }
                }
            }
            for (name, sub) in declared {
                if let Some(child) = map.get_mut(name) {
                    out += prune(child, sub, doc, depth + 1, roles);
                }
            }
            out
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for i in items.iter_mut() {
                    out += prune(i, item_schema, doc, depth + 1, roles);
                }
            }
            out
        }
        _ => out,
    }
}
