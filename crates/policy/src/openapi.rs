//! The operations of an OpenAPI 3.0/3.1 description (YAML or JSON): the route inventory the
//! gateway forwards. Schemas, parameters and `x-portcullis-*` extensions come with the
//! authorization issue; this reads methods and paths, with the position of each path.

use std::collections::BTreeMap;
use std::path::Path;

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
}

/// A path, its position, and which of [`METHODS`] it declares.
type PathMethods = (String, Option<Pos>, [bool; 8]);

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[derive(Deserialize)]
struct YamlSpec {
    #[serde(default)]
    openapi: Option<String>,
    #[serde(default)]
    swagger: Option<IgnoredAny>,
    #[serde(default)]
    paths: BTreeMap<String, Spanned<YamlPathItem>>,
}

#[derive(Deserialize)]
struct YamlPathItem {
    get: Option<IgnoredAny>,
    put: Option<IgnoredAny>,
    post: Option<IgnoredAny>,
    delete: Option<IgnoredAny>,
    options: Option<IgnoredAny>,
    head: Option<IgnoredAny>,
    patch: Option<IgnoredAny>,
    trace: Option<IgnoredAny>,
}

impl YamlPathItem {
    fn methods(&self) -> [bool; 8] {
        [
            self.get.is_some(),
            self.put.is_some(),
            self.post.is_some(),
            self.delete.is_some(),
            self.options.is_some(),
            self.head.is_some(),
            self.patch.is_some(),
            self.trace.is_some(),
        ]
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
    let (version, swagger, items): (Option<String>, bool, Vec<PathMethods>) = if is_json {
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
                        (path.clone(), None, METHODS.map(|m| item.get(m).is_some()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            v.get("openapi").and_then(|o| o.as_str()).map(str::to_owned),
            v.get("swagger").is_some(),
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
        (spec.openapi, spec.swagger.is_some(), items)
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
        for (m, _) in METHODS.iter().zip(present).filter(|(_, p)| *p) {
            if let Ok(method) = Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                ops.push(Operation {
                    method,
                    path: path.clone(),
                    pos,
                });
            }
        }
    }
    Ok(ops)
}
