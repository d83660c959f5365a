//! The target model: the operations of the OpenAPI description with their parameters, bodies
//! and response schemas, and a sampler that fills parameters and bodies from seeds, examples,
//! defaults and schemas.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::error::ScanError;

/// Where a parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum In {
    Path,
    Query,
    Header,
}

#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub(crate) name: String,
    pub(crate) at: In,
    pub(crate) required: bool,
    pub(crate) schema: Value,
    pub(crate) example: Option<Value>,
}

/// One operation of the description.
#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) tags: Vec<String>,
    pub(crate) secured: bool,
    pub(crate) deprecated: bool,
    pub(crate) sensitive: bool,
    pub(crate) params: Vec<Param>,
    /// The JSON request body schema, `$ref` resolved at the top.
    pub(crate) body: Option<Value>,
    pub(crate) body_example: Option<Value>,
    /// The first 2xx JSON response schema.
    pub(crate) response: Option<Value>,
    /// URL-valued body fields, as JSON pointers (`*` for array items).
    pub(crate) url_fields: Vec<String>,
    /// Line of the path item in a YAML description.
    pub(crate) line: Option<u64>,
}

impl Op {
    /// `GET /v2/orders/{order_id}`.
    pub(crate) fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    pub(crate) fn path_params(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.at == In::Path)
    }

    pub(crate) fn has_path_params(&self) -> bool {
        self.path_params().next().is_some()
    }

    /// The static segment just before the last path parameter (`orders` for
    /// `/v2/orders/{order_id}`), or the last static segment for collections: the resource
    /// kind that ids are harvested and looked up under, whatever the version prefix.
    pub(crate) fn resource(&self) -> Option<String> {
        resource_of(&self.path)
    }

    fn lower(&self) -> String {
        self.path.to_ascii_lowercase()
    }

    /// Login, registration, refresh, logout and the like: never replayed by ordinary probes.
    pub(crate) fn is_auth(&self) -> bool {
        let p = self.lower();
        [
            "login", "logout", "signin", "signout", "sign-in", "sign-out", "register", "signup",
            "sign-up", "refresh", "token", "revoke", "password", "session",
        ]
        .iter()
        .any(|w| p.split('/').any(|seg| seg.contains(w)))
            || self.tags.iter().any(|t| t.eq_ignore_ascii_case("auth"))
    }

    /// Admin-looking: an `admin` tag or path segment, or an `x-portcullis-roles` extension.
    pub(crate) fn is_admin(&self) -> bool {
        self.tags
            .iter()
            .any(|t| t.to_ascii_lowercase().contains("admin"))
            || self.path.split('/').any(|s| {
                matches!(
                    s.to_ascii_lowercase().as_str(),
                    "admin" | "admins" | "internal" | "manage" | "management"
                )
            })
    }
}

pub(crate) fn resource_of(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let last_param = segs.iter().rposition(|s| s.starts_with('{'));
    let upto = last_param.unwrap_or(segs.len());
    segs[..upto]
        .iter()
        .rev()
        .find(|s| !s.starts_with('{') && version_of(&format!("/{s}/")).is_none())
        .map(|s| s.to_ascii_lowercase())
}

/// The version prefix of a path: `/v2/orders` → (2, `/orders`).
pub(crate) fn version_of(path: &str) -> Option<(u32, String)> {
    let rest = path.strip_prefix("/v")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n = digits.parse().ok()?;
    let tail = &rest[digits.len()..];
    (tail.starts_with('/') || tail.is_empty()).then(|| (n, tail.to_owned()))
}

/// The whole description and its operations.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) doc: Value,
    pub(crate) ops: Vec<Op>,
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

impl Model {
    pub(crate) fn load(path: &Path, extra_sensitive: &[String]) -> Result<Self, ScanError> {
        let doc =
            portcullis_policy::openapi::document(path).map_err(|message| ScanError::Spec {
                path: path.to_owned(),
                message,
            })?;
        let lines: Vec<(String, u64)> = portcullis_policy::openapi::operations(path)
            .map(|ops| {
                ops.into_iter()
                    .filter_map(|o| o.pos.map(|p| (o.path, p.line)))
                    .collect()
            })
            .unwrap_or_default();
        let mut model = Self::from_doc(doc, extra_sensitive)?;
        for op in &mut model.ops {
            op.line = lines.iter().find(|(p, _)| *p == op.path).map(|(_, l)| *l);
        }
        Ok(model)
    }

    pub(crate) fn from_doc(doc: Value, extra_sensitive: &[String]) -> Result<Self, ScanError> {
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            return Err(ScanError::Spec {
                path: "openapi".into(),
                message: "the description has no `paths`".into(),
            });
        };
        let global_secured = secured(doc.get("security"));
        let mut ops = Vec::new();
        for (path, item) in paths {
            let item = resolve(&doc, item);
            let shared: Vec<Value> = item
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for m in METHODS {
                let Some(op) = item.get(m) else { continue };
                let Ok(method) = Method::from_bytes(m.to_ascii_uppercase().as_bytes()) else {
                    continue;
                };
                let mut params: Vec<Param> = Vec::new();
                let own: Vec<Value> = op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for p in own.iter().chain(shared.iter()) {
                    let p = resolve(&doc, p);
                    let (Some(name), Some(at)) = (
                        p.get("name").and_then(Value::as_str),
                        p.get("in").and_then(Value::as_str),
                    ) else {
                        continue;
                    };
                    let at = match at {
                        "path" => In::Path,
                        "query" => In::Query,
                        "header" => In::Header,
                        _ => continue,
                    };
                    if params.iter().any(|q| q.name == name && q.at == at) {
                        continue;
                    }
                    let schema = p
                        .get("schema")
                        .map(|s| resolve(&doc, s).clone())
                        .unwrap_or(json!({}));
                    let example = p
                        .get("example")
                        .cloned()
                        .or_else(|| first_example(p.get("examples")))
                        .or_else(|| schema.get("example").cloned());
                    params.push(Param {
                        name: name.to_owned(),
                        at,
                        required: at == In::Path
                            || p.get("required").and_then(Value::as_bool) == Some(true),
                        schema,
                        example,
                    });
                }
                let (body, body_example) = request_body(&doc, op);
                let response = portcullis_policy::openapi::response_schemas(&doc, &method, path)
                    .into_iter()
                    .min_by(|a, b| a.0.cmp(&b.0))
                    .and_then(|(_, ptr)| doc.pointer(&ptr))
                    .map(|s| resolve(&doc, s).clone());
                let url_fields = portcullis_policy::openapi::request_schema(&doc, &method, path)
                    .map(|ptr| portcullis_policy::openapi::url_fields(&doc, &ptr))
                    .unwrap_or_default();
                let key = format!("{method} {path}");
                let sensitive = op.get("x-portcullis-sensitive").and_then(Value::as_bool)
                    == Some(true)
                    || extra_sensitive
                        .iter()
                        .any(|s| s.trim().eq_ignore_ascii_case(&key));
                ops.push(Op {
                    tags: op
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|t| {
                            t.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                    secured: match op.get("security") {
                        Some(s) => secured(Some(s)),
                        None => global_secured,
                    },
                    deprecated: op.get("deprecated").and_then(Value::as_bool) == Some(true),
                    sensitive,
                    method,
                    path: path.clone(),
                    params,
                    body,
                    body_example,
                    response,
                    url_fields,
                    line: None,
                });
            }
        }
        Ok(Self { doc, ops })
    }

    pub(crate) fn find(&self, method: &Method, path: &str) -> Option<&Op> {
        self.ops
            .iter()
            .find(|o| o.method == *method && o.path == path)
    }

    /// Resolves a local `$ref` (repeatedly, bounded).
    pub(crate) fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        resolve(&self.doc, v)
    }

    /// The properties an object schema declares (through `allOf`), or `None` when the schema
    /// says nothing about them.
    pub(crate) fn declared(&self, schema: &Value) -> Option<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let mut any = false;
        self.collect_props(schema, 0, &mut out, &mut any);
        any.then_some(out)
    }

    fn collect_props(
        &self,
        schema: &Value,
        depth: usize,
        out: &mut BTreeSet<String>,
        any: &mut bool,
    ) {
        if depth > 8 {
            return;
        }
        let s = self.resolve(schema);
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            *any = true;
            out.extend(p.keys().cloned());
        }
        for k in ["allOf", "anyOf", "oneOf"] {
            if let Some(list) = s.get(k).and_then(Value::as_array) {
                for sub in list {
                    self.collect_props(sub, depth + 1, out, any);
                }
            }
        }
    }

    /// The schema of property `name` in an object schema.
    pub(crate) fn property<'a>(&'a self, schema: &'a Value, name: &str) -> Option<&'a Value> {
        let s = self.resolve(schema);
        if let Some(p) = s.get("properties").and_then(|p| p.get(name)) {
            return Some(self.resolve(p));
        }
        for k in ["allOf", "anyOf", "oneOf"] {
            if let Some(list) = s.get(k).and_then(Value::as_array) {
                for sub in list {
                    if let Some(p) = self.property(sub, name) {
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    /// A value for a schema: example, default, enum, const, then by type and format.
    pub(crate) fn sample(&self, schema: &Value, depth: usize) -> Value {
        let s = self.resolve(schema);
        if depth > 6 {
            return Value::Null;
        }
        for k in ["example", "default", "const"] {
            if let Some(v) = s.get(k) {
                return v.clone();
            }
        }
        if let Some(v) = first_example(s.get("examples")) {
            return v;
        }
        if let Some(v) = s
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return v.clone();
        }
        for k in ["allOf", "oneOf", "anyOf"] {
            if let Some(list) = s.get(k).and_then(Value::as_array) {
                if k == "allOf" {
                    let mut merged = Map::new();
                    for sub in list {
                        if let Value::Object(m) = self.sample(sub, depth + 1) {
                            merged.extend(m);
                        }
                    }
                    return Value::Object(merged);
                }
                if let Some(first) = list.first() {
                    return self.sample(first, depth + 1);
                }
            }
        }
        match type_of(s) {
            "object" => {
                let required: BTreeSet<&str> = s
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut m = Map::new();
                if let Some(props) = s.get("properties").and_then(Value::as_object) {
                    for (k, v) in props {
                        let v = self.resolve(v);
                        if required.contains(k.as_str())
                            && v.get("readOnly") != Some(&Value::Bool(true))
                        {
                            m.insert(k.clone(), self.sample(v, depth + 1));
                        }
                    }
                }
                Value::Object(m)
            }
            "array" => {
                let item = s
                    .get("items")
                    .map_or(Value::Null, |i| self.sample(i, depth + 1));
                Value::Array(vec![item])
            }
            "integer" => {
                let min = s.get("minimum").and_then(Value::as_i64).unwrap_or(1);
                json!(
                    min.max(1)
                        .min(s.get("maximum").and_then(Value::as_i64).unwrap_or(i64::MAX))
                )
            }
            "number" => json!(
                s.get("minimum")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0)
                    .max(1.0)
            ),
            "boolean" => json!(false),
            _ => Value::String(sample_string(s)),
        }
    }

    /// A request body for an operation: its example, else sampled from the schema.
    /// A body for `op`: its example, or a sample of its schema. A URL the target may fetch is
    /// never one off this machine (an example from the description names real hosts): every
    /// URL field carries [`INERT_URL`], and the SSRF probe alone puts its canary there.
    pub(crate) fn sample_body(&self, op: &Op) -> Option<Value> {
        let mut body = op
            .body_example
            .clone()
            .or_else(|| op.body.as_ref().map(|b| self.sample(b, 0)))?;
        for field in &op.url_fields {
            set_all(&mut body, field, &Value::String(INERT_URL.to_owned()));
        }
        Some(body)
    }
}

/// The `type` of a schema (the first non-null one of a list).
pub(crate) fn type_of(s: &Value) -> &str {
    match s.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ if s.get("properties").is_some() => "object",
        _ if s.get("items").is_some() => "array",
        _ => "string",
    }
}

fn sample_string(s: &Value) -> String {
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(1) as usize;
    let base = match s.get("format").and_then(Value::as_str) {
        Some("email") => "scan@example.com".to_owned(),
        Some("uri" | "url" | "iri") => INERT_URL.to_owned(),
        Some("uuid") => "00000000-0000-4000-8000-000000000000".to_owned(),
        Some("date") => "2025-01-01".to_owned(),
        Some("date-time") => "2025-01-01T00:00:00Z".to_owned(),
        Some("password") => "Portcullis-Scan-Pass-1".to_owned(),
        _ => s
            .get("pattern")
            .and_then(Value::as_str)
            .and_then(from_pattern)
            .unwrap_or_else(|| "portcullis".to_owned()),
    };
    if base.chars().count() >= min {
        base
    } else {
        format!("{base}{}", "x".repeat(min - base.chars().count()))
    }
}

/// A string for the simple patterns ids use: `^prefix_[A-Za-z0-9]{m,n}$`.
fn from_pattern(p: &str) -> Option<String> {
    let p = p.strip_prefix('^')?.strip_suffix('$')?;
    let (prefix, rest) = p.split_once('[')?;
    if prefix.chars().any(|c| "\\()[]{}.*+?|".contains(c)) {
        return None;
    }
    let (_, quant) = rest.split_once(']')?;
    let n: usize = quant
        .strip_prefix('{')?
        .split([',', '}'])
        .next()?
        .parse()
        .ok()?;
    Some(format!(
        "{prefix}{}",
        "Scan0000000000000000"
            .chars()
            .cycle()
            .take(n.max(1))
            .collect::<String>()
    ))
}

fn first_example(examples: Option<&Value>) -> Option<Value> {
    match examples? {
        Value::Object(m) => m
            .values()
            .next()
            .map(|e| e.get("value").cloned().unwrap_or(e.clone())),
        Value::Array(a) => a.first().cloned(),
        _ => None,
    }
}

fn secured(security: Option<&Value>) -> bool {
    security.and_then(Value::as_array).is_some_and(|reqs| {
        !reqs.is_empty()
            && reqs
                .iter()
                .all(|r| r.as_object().is_some_and(|o| !o.is_empty()))
    })
}

pub(crate) fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match v
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(ptr) => match doc.pointer(ptr) {
                Some(t) => v = t,
                None => return v,
            },
            None => return v,
        }
    }
    v
}

fn request_body(doc: &Value, op: &Value) -> (Option<Value>, Option<Value>) {
    let Some(rb) = op.get("requestBody").map(|b| resolve(doc, b)) else {
        return (None, None);
    };
    let Some(content) = rb.get("content").and_then(Value::as_object) else {
        return (None, None);
    };
    let Some(media) = content.iter().find_map(|(k, v)| {
        let k = k.split(';').next().unwrap_or("").trim();
        (k == "application/json" || k.ends_with("+json")).then_some(v)
    }) else {
        return (None, None);
    };
    let schema = media.get("schema").map(|s| resolve(doc, s).clone());
    let example = media
        .get("example")
        .cloned()
        .or_else(|| first_example(media.get("examples")))
        .or_else(|| schema.as_ref().and_then(|s| s.get("example").cloned()));
    (schema, example)
}

/// The URL every sampled URL field carries: loopback, on the discard port, where nothing
/// listens (a target that fetches it is refused at once, and no traffic leaves the machine).
pub(crate) const INERT_URL: &str = "http://127.0.0.1:9/portcullis-scan";

/// Sets every value `pointer` names in `v` (a `*` segment: each item of an array) to `to`,
/// where the value is there.
pub(crate) fn set_all(v: &mut Value, pointer: &str, to: &Value) {
    fn walk(v: &mut Value, segments: &[&str], to: &Value) {
        let Some((first, rest)) = segments.split_first() else {
            *v = to.clone();
            return;
        };
        let key = first.replace("~1", "/").replace("~0", "~");
        match v {
            Value::Array(items) if key == "*" => {
                for item in items {
                    walk(item, rest, to);
                }
            }
            Value::Array(items) => {
                if let Some(item) = key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    walk(item, rest, to);
                }
            }
            Value::Object(m) => {
                if let Some(item) = m.get_mut(&key) {
                    walk(item, rest, to);
                }
            }
            _ => {}
        }
    }
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    if !segments.is_empty() {
        walk(v, &segments, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_versions() {
        assert_eq!(
            resource_of("/v2/orders/{order_id}").as_deref(),
            Some("orders")
        );
        assert_eq!(
            resource_of("/v1/orders/{order_id}").as_deref(),
            Some("orders")
        );
        assert_eq!(resource_of("/v2/orders").as_deref(), Some("orders"));
        assert_eq!(
            resource_of("/v2/admin/users/{user_id}").as_deref(),
            Some("users")
        );
        assert_eq!(version_of("/v2/orders"), Some((2, "/orders".into())));
        assert_eq!(version_of("/video"), None);
    }

    #[test]
    fn patterns_give_matching_ids() {
        assert_eq!(
            from_pattern("^prod_[A-Za-z0-9]{8,32}$").as_deref(),
            Some("prod_Scan0000")
        );
        assert_eq!(from_pattern("^a(b)$"), None);
    }

    #[test]
    fn url_fields_are_set_wherever_they_are() {
        let mut v = json!({
            "avatar_url": "https://images.shop.example/a.png",
            "links": [{ "href": "https://x.example" }, { "href": "https://y.example" }],
            "note": "https://left.example"
        });
        for field in ["/avatar_url", "/links/*/href", "/missing/deeper", "/note/x"] {
            set_all(&mut v, field, &json!(INERT_URL));
        }
        assert_eq!(
            v,
            json!({
                "avatar_url": INERT_URL,
                "links": [{ "href": INERT_URL }, { "href": INERT_URL }],
                "note": "https://left.example"
            })
        );
    }
}
