//! The description as rules see it: its operations with their effective security, parameters,
//! request and response schemas resolved, and a schema walker that follows `$ref`s once.

use std::collections::HashSet;

use crate::load::Files;
use crate::node::{Key, Node, Pos};

pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One operation.
#[derive(Debug)]
pub struct Op<'a> {
    pub path: &'a str,
    pub method: &'a str,
    /// Where the method key is written: findings about the operation point here.
    pub at: Pos,
    pub node: &'a Node,
    /// The operation's own `security`, when it has one.
    pub own_security: Option<(&'a Key, &'a Node)>,
    /// What applies: its own, or the document's.
    pub security: Option<&'a Node>,
    pub params: Vec<&'a Node>,
    /// The JSON request body schema.
    pub request: Option<&'a Node>,
    /// (status, where the status key is written, JSON schema if any)
    pub responses: Vec<(&'a str, Pos, Option<&'a Node>)>,
}

impl Op<'_> {
    pub fn is_write(&self) -> bool {
        matches!(self.method, "post" | "put" | "patch" | "delete")
    }

    pub fn tags(&self) -> Vec<&str> {
        self.node
            .get("tags")
            .map(|t| t.items().iter().filter_map(Node::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether the path, a tag or the operation id says it is administrative.
    pub fn is_admin(&self) -> bool {
        let words = |s: &str| {
            s.to_ascii_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| {
                    matches!(
                        w,
                        "admin"
                            | "admins"
                            | "administration"
                            | "internal"
                            | "management"
                            | "superuser"
                    )
                })
        };
        // An operation id's camelCase words apart (`listAdminUsers`: list, admin, users), so a
        // word that merely contains one (`readMinutes`) is none.
        let camel = |id: &str| {
            let mut out = String::with_capacity(id.len() + 4);
            let mut lower = false;
            for c in id.chars() {
                if c.is_ascii_uppercase() && lower {
                    out.push(' ');
                }
                lower = c.is_ascii_lowercase() || c.is_ascii_digit();
                out.push(c);
            }
            out
        };
        words(self.path)
            || self.tags().iter().any(|t| words(t))
            || self.id().is_some_and(|id| words(&camel(id)))
    }

    /// `GET /orders`, as findings name operations.
    pub fn label(&self) -> String {
        format!("{} {}", self.method.to_uppercase(), self.path)
    }

    pub fn id(&self) -> Option<&str> {
        self.node.str_of("operationId")
    }

    /// Whether anything identifies the caller: a non-empty security requirement list with at
    /// least one non-empty requirement.
    pub fn is_secured(&self) -> bool {
        self.security.is_some_and(|s| {
            s.items().iter().any(|req| !req.entries().is_empty())
                && !s.items().iter().any(|req| req.entries().is_empty())
        })
    }
}

/// The whole description, ready for the rules.
#[derive(Debug)]
pub struct Spec<'a> {
    pub files: &'a Files,
    pub root: &'a Node,
    pub ops: Vec<Op<'a>>,
}

impl<'a> Spec<'a> {
    pub fn new(files: &'a Files, root: &'a Node) -> Self {
        let mut ops = Vec::new();
        let global = root.get("security");
        for (pkey, item) in root.get("paths").map(Node::entries).unwrap_or_default() {
            let item = files.deref(item);
            let shared: Vec<&Node> = item
                .get("parameters")
                .map(|p| p.items().iter().map(|n| files.deref(n)).collect())
                .unwrap_or_default();
            for (mkey, op) in item.entries() {
                if !METHODS.contains(&mkey.name.as_str()) {
                    continue;
                }
                let own_security = op.entry("security");
                let mut params = shared.clone();
                if let Some(list) = op.get("parameters") {
                    for p in list.items() {
                        let p = files.deref(p);
                        // An operation's parameter replaces a path-level one of the same name.
                        params.retain(|q| {
                            !(q.str_of("name") == p.str_of("name")
                                && q.str_of("in") == p.str_of("in"))
                        });
                        params.push(p);
                    }
                }
                let request = op
                    .get("requestBody")
                    .map(|b| files.deref(b))
                    .and_then(|b| json_schema(files, b));
                let responses = op
                    .get("responses")
                    .map(Node::entries)
                    .unwrap_or_default()
                    .iter()
                    .map(|(code, r)| {
                        let r = files.deref(r);
                        (code.name.as_str(), code.pos, json_schema(files, r))
                    })
                    .collect();
                ops.push(Op {
                    path: &pkey.name,
                    method: &mkey.name,
                    at: mkey.pos,
                    node: op,
                    own_security,
                    security: own_security.map(|(_, v)| v).or(global),
                    params,
                    request,
                    responses,
                });
            }
        }
        Spec { files, root, ops }
    }

    /// Every schema a client fills in for `op`: its parameters' (named, pointing at the name)
    /// and every schema of its JSON request body (named by property, pointing at its key).
    pub fn inputs(&self, op: &Op<'a>) -> Vec<(Option<&'a str>, &'a Node, Pos)> {
        let mut out: Vec<(Option<&'a str>, &'a Node, Pos)> = op
            .params
            .iter()
            .filter_map(|p| {
                let at = p.get("name").map_or(p.pos, |n| n.pos);
                p.get("schema")
                    .map(|s| (p.str_of("name"), self.deref(s), at))
            })
            .collect();
        if let Some(r) = op.request {
            walk(self.files, r, &mut |v| {
                out.push((v.property, v.schema, v.at))
            });
        }
        out
    }

    pub fn deref(&self, n: &'a Node) -> &'a Node {
        self.files.deref(n)
    }

    /// The security schemes: (name, where the name is written, the scheme).
    pub fn schemes(&self) -> Vec<(&'a str, Pos, &'a Node)> {
        self.root
            .pointer("/components/securitySchemes")
            .map(Node::entries)
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| (k.name.as_str(), k.pos, self.files.deref(v)))
            .collect()
    }
}

/// The schema of the JSON media type of a request body or response.
fn json_schema<'a>(files: &'a Files, body: &'a Node) -> Option<&'a Node> {
    let content = body.get("content")?;
    let (_, media) = content.entries().iter().find(|(k, _)| {
        let t = k.name.split(';').next().unwrap_or("").trim();
        t == "application/json" || t.ends_with("+json") || t == "*/*"
    })?;
    media.get("schema").map(|s| files.deref(s))
}

/// A schema met while walking: the schema (resolved), the property name it is the value of
/// (if any), and where to point.
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    pub schema: &'a Node,
    pub property: Option<&'a str>,
    pub at: Pos,
    /// The object schema whose property this is.
    pub parent: Option<&'a Node>,
    /// `readOnly` / `writeOnly` said of the property anywhere on the way to this schema: on
    /// the property itself, beside its `$ref` (OpenAPI 3.1), or on a wrapper (an array whose
    /// items these are, an `allOf` whose member this is).
    pub read_only: bool,
    pub write_only: bool,
    /// An enclosing schema whose `allOf`/`anyOf`/`oneOf` member this is says
    /// `unevaluatedProperties: false`: the object is closed there (OpenAPI 3.1's way to close
    /// a composed object), whatever the member says.
    pub closed_above: bool,
}

/// What a schema inherits from the schemas it sits in, for the same property.
#[derive(Debug, Clone, Copy, Default)]
struct Inherited {
    read_only: bool,
    write_only: bool,
    closed_above: bool,
}

/// Visits `schema` and every schema inside it (properties, items, combinators,
/// additionalProperties), following each `$ref` once per walk.
pub fn walk<'a>(files: &'a Files, schema: &'a Node, f: &mut dyn FnMut(Visit<'a>)) {
    let mut seen = HashSet::new();
    walk_in(
        files,
        schema,
        None,
        schema.pos,
        None,
        Inherited::default(),
        &mut seen,
        f,
        0,
    );
}

#[allow(clippy::too_many_arguments)]
fn walk_in<'a>(
    files: &'a Files,
    raw: &'a Node,
    property: Option<&'a str>,
    at: Pos,
    parent: Option<&'a Node>,
    inherited: Inherited,
    seen: &mut HashSet<Pos>,
    f: &mut dyn FnMut(Visit<'a>),
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    let schema = files.deref(raw);
    if !seen.insert(schema.pos) && raw.get("$ref").is_some() {
        return;
    }
    let said = |key: &str| raw.bool_of(key) == Some(true) || schema.bool_of(key) == Some(true);
    let flags = Inherited {
        read_only: inherited.read_only || said("readOnly"),
        write_only: inherited.write_only || said("writeOnly"),
        closed_above: inherited.closed_above,
    };
    f(Visit {
        schema,
        property,
        at,
        parent,
        read_only: flags.read_only,
        write_only: flags.write_only,
        closed_above: flags.closed_above,
    });
    if let Some(props) = schema.get("properties") {
        for (k, v) in props.entries() {
            walk_in(
                files,
                v,
                Some(&k.name),
                k.pos,
                Some(schema),
                Inherited::default(),
                seen,
                f,
                depth + 1,
            );
        }
    }
    if let Some(items) = schema.get("items") {
        walk_in(
            files,
            items,
            property,
            items.pos,
            parent,
            flags,
            seen,
            f,
            depth + 1,
        );
    }
    let members = Inherited {
        closed_above: flags.closed_above
            || schema.get("unevaluatedProperties").and_then(Node::as_bool) == Some(false),
        ..flags
    };
    for key in ["allOf", "anyOf", "oneOf"] {
        for s in schema.get(key).map(Node::items).unwrap_or_default() {
            walk_in(
                files,
                s,
                property,
                s.pos,
                parent,
                members,
                seen,
                f,
                depth + 1,
            );
        }
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_map()) {
        walk_in(
            files,
            ap,
            None,
            ap.pos,
            Some(schema),
            Inherited::default(),
            seen,
            f,
            depth + 1,
        );
    }
}

/// The type a schema declares (`type: x` or the first of `type: [x, null]`).
pub fn type_of(schema: &Node) -> Option<&str> {
    let t = schema.get("type")?;
    t.as_str().or_else(|| {
        t.items()
            .iter()
            .filter_map(Node::as_str)
            .find(|s| *s != "null")
    })
}

/// The properties an object schema has, through `allOf`.
pub fn property_names<'a>(files: &'a Files, schema: &'a Node) -> Vec<&'a str> {
    let mut out = Vec::new();
    walk(files, schema, &mut |v| {
        if let Some(p) = v.property {
            out.push(p);
        }
    });
    out
}
