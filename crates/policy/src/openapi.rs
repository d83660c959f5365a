//! The operations of an OpenAPI 3.0/3.1 description (YAML or JSON): the route inventory the
//! gateway forwards. Schemas, parameters and `x-portcullis-*` extensions come with the
//! authorization issue; this reads methods and paths, with the position of each path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::Method;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use crate::problem::{Pos, Problem, Problems};

/// One operation: a method on a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub method: Method,
    pub path: String,
    /// Where the path item starts (YAML only).
    pub pos: Option<Pos>,
    /// Whether the operation declares a security requirement (its own `security`, or the
    /// document's when it has none); `security: []` or `x-portcullis-public: true` makes it
    /// public.
    pub secured: bool,
    pub tags: Vec<String>,
    /// `x-portcullis-roles`: the caller needs one of these.
    pub roles: Vec<String>,
    /// `x-portcullis-owner`: an ownership rule written next to the operation, as in the
    /// policy's `authorization.owners` (without `route`).
    pub owner: Option<serde_json::Value>,
    /// `x-portcullis-rate-limit`: a rate rule, as in the policy's `rate_limits` (without
    /// `match`).
    pub rate_limit: Option<serde_json::Value>,
}

/// What the inventory needs of one operation.
#[derive(Clone, Debug, Default)]
struct OpInfo {
    security: Option<usize>,
    tags: Vec<String>,
    roles: Vec<String>,
    public: bool,
    owner: Option<serde_json::Value>,
    rate_limit: Option<serde_json::Value>,
}

/// A path, its position, and for each of [`METHODS`]: absent, or present.
type PathMethods = (String, Option<Pos>, [Option<OpInfo>; 8]);

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// An operation's `security`: `Some(n)` requirement objects, `None` when absent.
#[derive(Deserialize)]
struct YamlOperation {
    #[serde(default)]
    security: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, rename = "x-portcullis-roles")]
    roles: Vec<String>,
    #[serde(default, rename = "x-portcullis-public")]
    public: bool,
    #[serde(default, rename = "x-portcullis-owner")]
    owner: Option<serde_json::Value>,
    #[serde(default, rename = "x-portcullis-rate-limit")]
    rate_limit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct YamlSpec {
    #[serde(default)]
    openapi: Option<String>,
    #[serde(default)]
    security: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    swagger: Option<IgnoredAny>,
    #[serde(default)]
    paths: BTreeMap<String, Spanned<YamlPathItem>>,
}

#[derive(Deserialize)]
struct YamlPathItem {
    get: Option<YamlOperation>,
    put: Option<YamlOperation>,
    post: Option<YamlOperation>,
    delete: Option<YamlOperation>,
    options: Option<YamlOperation>,
    head: Option<YamlOperation>,
    patch: Option<YamlOperation>,
    trace: Option<YamlOperation>,
}

impl YamlPathItem {
    fn methods(&self) -> [Option<OpInfo>; 8] {
        [
            &self.get,
            &self.put,
            &self.post,
            &self.delete,
            &self.options,
            &self.head,
            &self.patch,
            &self.trace,
        ]
        .map(|op| {
            op.as_ref().map(|o| OpInfo {
                security: o.security.as_ref().map(Vec::len),
                tags: o.tags.clone(),
                roles: o.roles.clone(),
                public: o.public,
                owner: o.owner.clone(),
                rate_limit: o.rate_limit.clone(),
            })
        })
    }
}

/// Reads the operations of the description at `file`.
pub fn operations(file: &Path) -> Result<Vec<Operation>, Problems> {
    let fail = |pos: Option<Pos>, msg: String| Problems(vec![Problem::error(file, pos, "", msg)]);
    let text = std::fs::read_to_string(file)
        .map_err(|e| fail(None, format!("cannot read the OpenAPI description: {e}")))?;
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    let (version, swagger, global, items): (Option<String>, bool, usize, Vec<PathMethods>) =
        if is_json {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                fail(
                    Some(Pos {
                        line: e.line() as u64,
                        col: e.column() as u64,
                    }),
                    format!("invalid JSON: {e}"),
                )
            })?;
            let items = v
                .get("paths")
                .and_then(|p| p.as_object())
                .map(|paths| {
                    paths
                        .iter()
                        .map(|(path, item)| {
                            let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
                                v.and_then(|t| t.as_array())
                                    .map(|a| {
                                        a.iter()
                                            .filter_map(|x| x.as_str().map(str::to_owned))
                                            .collect()
                                    })
                                    .unwrap_or_default()
                            };
                            let ops = METHODS.map(|m| {
                                item.get(m).map(|op| OpInfo {
                                    security: op
                                        .get("security")
                                        .and_then(|s| s.as_array())
                                        .map(Vec::len),
                                    tags: strings(op.get("tags")),
                                    roles: strings(op.get("x-portcullis-roles")),
                                    public: op.get("x-portcullis-public")
                                        == Some(&serde_json::Value::Bool(true)),
                                    owner: op.get("x-portcullis-owner").cloned(),
                                    rate_limit: op.get("x-portcullis-rate-limit").cloned(),
                                })
                            });
                            (path.clone(), None, ops)
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                v.get("openapi").and_then(|o| o.as_str()).map(str::to_owned),
                v.get("swagger").is_some(),
                v.get("security")
                    .and_then(|s| s.as_array())
                    .map_or(0, Vec::len),
                items,
            )
        } else {
            let spec: YamlSpec =
                serde_saphyr::from_str_with_options(&text, crate::load::yaml_options()).map_err(
                    |e| {
                        let pos = e.location().map(|l| Pos {
                            line: l.line(),
                            col: l.column(),
                        });
                        fail(pos, crate::load::yaml_message(&e))
                    },
                )?;
            let items = spec
                .paths
                .into_iter()
                .map(|(path, item)| {
                    let pos = Some(Pos {
                        line: item.referenced.line(),
                        col: item.referenced.column(),
                    });
                    (path, pos, item.value.methods())
                })
                .collect();
            let global = spec.security.as_ref().map_or(0, Vec::len);
            (spec.openapi, spec.swagger.is_some(), global, items)
        };
    if swagger {
        return Err(fail(
            None,
            "Swagger 2.0 is not supported; convert the description to OpenAPI 3".into(),
        ));
    }
    match version.as_deref() {
        Some(v) if v.starts_with("3.0") || v.starts_with("3.1") => {}
        Some(v) => {
            return Err(fail(
                None,
                format!("OpenAPI `{v}` is not supported (3.0 and 3.1 are)"),
            ));
        }
        None => {
            return Err(fail(
                None,
                "not an OpenAPI description: no `openapi` field".into(),
            ));
        }
    }
    let mut ops = Vec::new();
    for (path, pos, present) in items {
        for (m, op) in METHODS.iter().zip(present) {
            let Some(info) = op else { continue };
            if let Ok(method) = Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                ops.push(Operation {
                    method,
                    path: path.clone(),
                    pos,
                    secured: !info.public && info.security.unwrap_or(global) > 0,
                    tags: info.tags,
                    roles: info.roles,
                    owner: info.owner,
                    rate_limit: info.rate_limit,
                });
            }
        }
    }
    Ok(ops)
}

/// The whole description as JSON, for schema validation, with `$ref`s to sibling files
/// bundled in (see [`bundle`]).
pub fn document(file: &Path) -> Result<serde_json::Value, String> {
    let mut doc = read_document(file)?;
    bundle(&mut doc, file)?;
    Ok(doc)
}

fn read_document(file: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
    } else {
        serde_saphyr::from_str_with_options(&text, crate::load::yaml_options())
            .map_err(|e| format!("{}: {}", file.display(), crate::load::yaml_message(&e)))
    }
}

/// Where bundled files live in the document: `#/components/x-portcullis-bundled/<n>` (under
/// `components`, which every compiled schema carries along).
const BUNDLED: &str = "components/x-portcullis-bundled";
/// At most this many sibling files are read for one description.
const MAX_FILES: usize = 64;

/// Brings `$ref`s to other files (`schemas.yaml#/Order`, `./common/errors.json`) into the
/// document: each file read once is stored whole under `components/x-portcullis-bundled/<n>`,
/// and every
/// reference to it (and every local reference inside it) is rewritten to point there, so the
/// document is self-contained for the schema compiler. References are resolved relative to the
/// file that holds them; remote ones (`https://...`) are refused, never fetched.
pub fn bundle(doc: &mut serde_json::Value, file: &Path) -> Result<(), String> {
    let mut files: Vec<(PathBuf, serde_json::Value)> = Vec::new();
    let root = file.to_path_buf();
    rewrite(doc, &root, None, &mut files)?;
    // Files found while rewriting others are rewritten in turn.
    let mut i = 0;
    while i < files.len() {
        let (path, mut value) = (files[i].0.clone(), std::mem::take(&mut files[i].1));
        rewrite(&mut value, &path, Some(i), &mut files)?;
        files[i].1 = value;
        i += 1;
    }
    if !files.is_empty()
        && let Some(obj) = doc.as_object_mut()
    {
        let bundled: Vec<serde_json::Value> = files.into_iter().map(|(_, v)| v).collect();
        let components = obj
            .entry("components")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !components.is_object() {
            *components = serde_json::Value::Object(Default::default());
        }
        if let Some(c) = components.as_object_mut() {
            c.insert(
                "x-portcullis-bundled".into(),
                serde_json::Value::Array(bundled),
            );
        }
    }
    Ok(())
}

/// Rewrites the references in `v`, which is the content of `file` (`index` in the bundle, or
/// `None` for the root document).
fn rewrite(
    v: &mut serde_json::Value,
    file: &Path,
    index: Option<usize>,
    files: &mut Vec<(PathBuf, serde_json::Value)>,
) -> Result<(), String> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(r)) = m.get_mut("$ref") {
                *r = target(r, file, index, files)?;
            }
            for (k, child) in m.iter_mut() {
                if k != "$ref" {
                    rewrite(child, file, index, files)?;
                }
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                rewrite(child, file, index, files)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The bundled form of reference `r` found in `file`.
fn target(
    r: &str,
    file: &Path,
    index: Option<usize>,
    files: &mut Vec<(PathBuf, serde_json::Value)>,
) -> Result<String, String> {
    let (path, pointer) = r.split_once('#').unwrap_or((r, ""));
    if path.is_empty() {
        // Local to `file`: unchanged in the root document, re-rooted in a bundled one.
        return Ok(match index {
            None => r.to_owned(),
            Some(i) => format!("#/{BUNDLED}/{i}{pointer}"),
        });
    }
    if path.contains("://") || path.starts_with("//") {
        return Err(format!(
            "{}: `$ref: {r}` is remote; remote references are not fetched (bundle the description)",
            file.display()
        ));
    }
    let sibling = file.parent().unwrap_or(Path::new(".")).join(path);
    let sibling = sibling.canonicalize().map_err(|e| {
        format!(
            "{}: `$ref: {r}`: cannot read {}: {e}",
            file.display(),
            sibling.display()
        )
    })?;
    let i = match files.iter().position(|(p, _)| *p == sibling) {
        Some(i) => i,
        None => {
            if files.len() == MAX_FILES {
                return Err(format!(
                    "{}: `$ref: {r}`: more than {MAX_FILES} referenced files",
                    file.display()
                ));
            }
            let value = read_document(&sibling)?;
            files.push((sibling, value));
            files.len() - 1
        }
    };
    Ok(format!("#/{BUNDLED}/{i}{pointer}"))
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointer (into [`document`]) of the JSON request body schema of an operation,
/// following a `$ref` to `#/components/requestBodies/...`.
pub fn request_schema(doc: &serde_json::Value, method: &Method, path: &str) -> Option<String> {
    let op = format!(
        "/paths/{}/{}",
        escape(path),
        method.as_str().to_ascii_lowercase()
    );
    let mut body_ptr = format!("{op}/requestBody");
    let mut body = doc.pointer(&body_ptr)?;
    if let Some(r) = body
        .get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.strip_prefix('#'))
    {
        body_ptr = r.to_owned();
        body = doc.pointer(&body_ptr)?;
    }
    let content = body.get("content")?.as_object()?;
    let media = content.keys().find(|k| {
        let k = k.split(';').next().unwrap_or("").trim();
        k == "application/json" || k.ends_with("+json")
    })?;
    content.get(media)?.get("schema")?;
    Some(format!("{body_ptr}/content/{}/schema", escape(media)))
}

/// The JSON response schemas of an operation's 2xx answers: (status code or `2XX`, pointer).
pub fn response_schemas(
    doc: &serde_json::Value,
    method: &Method,
    path: &str,
) -> Vec<(String, String)> {
    let op = format!(
        "/paths/{}/{}/responses",
        escape(path),
        method.as_str().to_ascii_lowercase()
    );
    let Some(responses) = doc.pointer(&op).and_then(|r| r.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (code, resp) in responses {
        if !code.starts_with('2') {
            continue;
        }
        let (mut ptr, mut resp) = (format!("{op}/{}", escape(code)), resp);
        if let Some(r) = resp
            .get("$ref")
            .and_then(|r| r.as_str())
            .and_then(|r| r.strip_prefix('#'))
        {
            let Some(target) = doc.pointer(r) else {
                continue;
            };
            ptr = r.to_owned();
            resp = target;
        }
        let Some(content) = resp.get("content").and_then(|c| c.as_object()) else {
            continue;
        };
        let Some(media) = content.keys().find(|k| {
            let k = k.split(';').next().unwrap_or("").trim();
            k == "application/json" || k.ends_with("+json")
        }) else {
            continue;
        };
        if content.get(media).and_then(|m| m.get("schema")).is_some() {
            out.push((
                code.to_ascii_uppercase(),
                format!("{ptr}/content/{}/schema", escape(media)),
            ));
        }
    }
    out
}

/// The URL-valued fields of a request body schema, as JSON pointers into the body with `*`
/// for every item of an array: properties with `format: uri`, `uri-reference`, `iri` or `url`,
/// or marked `x-portcullis-ssrf: true`. Local `$ref`s are followed; recursion is cut at a
/// depth of 8 (a recursive schema repeats itself below that).
pub fn url_fields(doc: &serde_json::Value, schema_ptr: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = doc.pointer(schema_ptr) {
        walk_urls(doc, schema, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// Breadth first, so shallow fields are always found, with a bound on the schemas visited: a
/// recursive schema with several branches (a tree) would otherwise grow exponentially with
/// the depth. Deep enough for any body the default bounds let through (32 levels).
fn walk_urls(doc: &serde_json::Value, root: &serde_json::Value, out: &mut Vec<String>) {
    let mut queue = std::collections::VecDeque::from([(root, String::new(), 0usize)]);
    let mut budget = 20_000usize;
    while let Some((schema, at, depth)) = queue.pop_front() {
        if depth > 40 || budget == 0 {
            continue;
        }
        budget -= 1;
        let mut schema = schema;
        for _ in 0..16 {
            match schema
                .get("$ref")
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|r| doc.pointer(r))
            {
                Some(s) => schema = s,
                None => break,
            }
        }
        let marked = schema.get("x-portcullis-ssrf").and_then(|v| v.as_bool());
        let uri_format = schema
            .get("format")
            .and_then(|f| f.as_str())
            .is_some_and(|f| matches!(f, "uri" | "uri-reference" | "iri" | "url"));
        if marked == Some(true) || (uri_format && marked != Some(false)) {
            out.push(at.clone());
        }
        // A member describes the same value, one level no deeper: counted as one, 3.1's
        // nullable recursion (`anyOf: [{$ref: Node}, {type: 'null'}]`) stopped at half the
        // depth a body may have. (The budget still bounds a schema composed of itself.)
        for key in ["allOf", "anyOf", "oneOf"] {
            for s in schema
                .get(key)
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
            {
                queue.push_back((s, at.clone(), depth));
            }
        }
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, s) in props {
                queue.push_back((s, format!("{at}/{}", escape(name)), depth + 1));
            }
        }
        let each = format!("{at}/*");
        if let Some(items) = schema.get("items") {
            queue.push_back((items, each.clone(), depth + 1));
        }
        for s in schema
            .get("prefixItems")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            queue.push_back((s, each.clone(), depth + 1));
        }
        // Maps (`additionalProperties`, `patternProperties`): every value.
        if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            queue.push_back((ap, each.clone(), depth + 1));
        }
        for s in schema
            .get("patternProperties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flat_map(|m| m.values())
        {
            queue.push_back((s, each.clone(), depth + 1));
        }
    }
}

#[cfg(test)]
mod url_field_tests {
    use super::*;

    #[test]
    fn uri_properties_are_found_through_refs_arrays_and_combinators() {
        let doc = serde_json::json!({
            "components": { "schemas": {
                "Hook": { "type": "object", "properties": {
                    "callback": { "type": "string", "format": "uri" },
                    "note": { "type": "string" }
                }},
                "Node": { "type": "object", "properties": {
                    "next": { "$ref": "#/components/schemas/Node" },
                    "link": { "type": "string", "x-portcullis-ssrf": true }
                }}
            }},
            "body": { "type": "object", "properties": {
                "avatar_url": { "type": "string", "format": "url" },
                "homepage": { "type": "string", "format": "uri", "x-portcullis-ssrf": false },
                "hooks": { "type": "array", "items": { "$ref": "#/components/schemas/Hook" } },
                "extra": { "allOf": [ { "$ref": "#/components/schemas/Hook" } ] },
                "tree": { "$ref": "#/components/schemas/Node" },
                "webhooks": { "type": "object", "additionalProperties": { "type": "string", "format": "uri" } }
            }}
        });
        let found = url_fields(&doc, "/body");
        assert!(found.contains(&"/avatar_url".to_owned()));
        assert!(found.contains(&"/hooks/*/callback".to_owned()));
        assert!(found.contains(&"/extra/callback".to_owned()));
        assert!(found.contains(&"/tree/link".to_owned()));
        assert!(found.contains(&"/tree/next/next/link".to_owned()));
        assert!(
            found.contains(
                &"/tree/next/next/next/next/next/next/next/next/next/next/link".to_owned()
            ),
            "deep recursion is followed"
        );
        assert!(found.contains(&"/webhooks/*".to_owned()), "{found:?}");
        assert!(
            !found
                .iter()
                .any(|f| f.contains("homepage") || f.contains("note"))
        );
    }

    #[test]
    fn nullable_recursion_is_followed_as_deep_as_a_body_may_go() {
        let doc = serde_json::json!({
            "components": { "schemas": { "Node": { "type": "object", "properties": {
                "next": { "anyOf": [
                    { "$ref": "#/components/schemas/Node" }, { "type": "null" }
                ] },
                "link": { "type": "string", "format": "uri" }
            }}}},
            "body": { "$ref": "#/components/schemas/Node" }
        });
        let found = url_fields(&doc, "/body");
        let deep = format!("{}/link", "/next".repeat(32));
        assert!(found.contains(&deep), "{} fields", found.len());
    }

    #[test]
    fn a_composition_of_itself_stays_bounded() {
        let doc = serde_json::json!({
            "components": { "schemas": { "Loop": {
                "allOf": [ { "$ref": "#/components/schemas/Loop" } ],
                "properties": { "link": { "type": "string", "format": "uri" } }
            }}},
            "body": { "$ref": "#/components/schemas/Loop" }
        });
        assert_eq!(url_fields(&doc, "/body"), ["/link"]);
    }

    #[test]
    fn a_branching_recursive_schema_stays_bounded() {
        let doc = serde_json::json!({
            "components": { "schemas": { "Tree": { "type": "object", "properties": {
                "left": { "$ref": "#/components/schemas/Tree" },
                "right": { "$ref": "#/components/schemas/Tree" },
                "link": { "type": "string", "format": "uri" }
            }}}},
            "body": { "$ref": "#/components/schemas/Tree" }
        });
        let found = url_fields(&doc, "/body");
        assert!(found.contains(&"/link".to_owned()));
        assert!(found.len() < 20_000);
    }
}

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
    Header,
}

/// One declared parameter of an operation: its schema is a JSON pointer into [`document`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub location: ParamIn,
    pub required: bool,
    pub schema: String,
}

/// The path, query and header parameters of an operation (path-level ones included, an
/// operation's own replacing them by name), following `$ref`s to `components/parameters`.
pub fn parameters(doc: &serde_json::Value, method: &Method, path: &str) -> Vec<Param> {
    let item_ptr = format!("/paths/{}", escape(path));
    let op_ptr = format!("{item_ptr}/{}", method.as_str().to_ascii_lowercase());
    let mut out: Vec<Param> = Vec::new();
    for list_ptr in [
        format!("{item_ptr}/parameters"),
        format!("{op_ptr}/parameters"),
    ] {
        let Some(list) = doc.pointer(&list_ptr).and_then(|l| l.as_array()) else {
            continue;
        };
        for (i, first) in list.iter().enumerate() {
            let mut ptr = format!("{list_ptr}/{i}");
            let mut p = first;
            for _ in 0..8 {
                match p
                    .get("$ref")
                    .and_then(|r| r.as_str())
                    .and_then(|r| r.strip_prefix('#'))
                {
                    Some(r) => match doc.pointer(r) {
                        Some(target) => {
                            ptr = r.to_owned();
                            p = target;
                        }
                        None => break,
                    },
                    None => break,
                }
            }
            let (Some(name), Some(loc)) = (
                p.get("name").and_then(|n| n.as_str()),
                p.get("in").and_then(|n| n.as_str()),
            ) else {
                continue;
            };
            let location = match loc {
                "path" => ParamIn::Path,
                "query" => ParamIn::Query,
                "header" => ParamIn::Header,
                _ => continue,
            };
            if p.get("schema").is_none() {
                continue;
            }
            out.retain(|q| !(q.name == name && q.location == location));
            out.push(Param {
                name: name.to_owned(),
                location,
                required: location == ParamIn::Path
                    || p.get("required").and_then(|r| r.as_bool()) == Some(true),
                schema: format!("{ptr}/schema"),
            });
        }
    }
    out
}

/// OpenAPI 3.0 schema dialect to JSON Schema 2020-12, in place: `nullable: true` adds
/// `"null"` to the type, and the boolean `exclusiveMinimum`/`exclusiveMaximum` become the
/// numeric ones. Without this a 3.0 schema using them would not compile, and not be enforced.
pub fn from_openapi_30(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            // Only the keyword (a boolean), never a property that happens to be called so.
            let nullable = match map.get("nullable") {
                Some(serde_json::Value::Bool(b)) => Some(*b),
                _ => None,
            };
            if nullable.is_some() {
                map.remove("nullable");
            }
            if nullable == Some(true) {
                match map.get_mut("type") {
                    Some(serde_json::Value::String(t)) => {
                        let t = std::mem::take(t);
                        map.insert("type".into(), serde_json::json!([t, "null"]));
                    }
                    Some(serde_json::Value::Array(list)) if !list.iter().any(|x| x == "null") => {
                        list.push(serde_json::Value::String("null".into()));
                    }
                    _ => {}
                }
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                match map.get(flag) {
                    Some(serde_json::Value::Bool(true)) => {
                        if let Some(b) = map.remove(bound) {
                            map.insert(flag.into(), b);
                        } else {
                            map.remove(flag);
                        }
                    }
                    Some(serde_json::Value::Bool(false)) => {
                        map.remove(flag);
                    }
                    _ => {}
                }
            }
            map.values_mut().for_each(from_openapi_30);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(from_openapi_30),
        _ => {}
    }
}

/// Whether any property schema of `doc` carries `x-portcullis-roles` (per-role views of
/// answers exist).
pub fn has_property_roles(doc: &serde_json::Value) -> bool {
    use serde_json::Value;
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties")
                    && props
                        .values()
                        .any(|p| p.get("x-portcullis-roles").is_some())
                {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}
