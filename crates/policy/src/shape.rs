//! The policy file's shape, checked against the JSON Schema shipped for editors
//! (`schemas/portcullis.schema.json`), so that a file with several misspelt keys and wrong-typed
//! values is refused with all of them at once: the typed read stops at its first.
//!
//! It runs only when that typed read failed. The file is read again as a plain tree that keeps
//! each node's position, the tree is validated, and every violation becomes a [`Problem`] at its
//! key or value. The misspelt and wrong-typed entries are then blanked out of the text, so the
//! loader can read the rest and say what else is wrong; where that cannot be done, the values
//! the schema checks by pattern (durations, sizes, routes) are named by the schema's own
//! description of them. No value that may hold a secret is repeated.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::load::{byte_at, quoted, written_from, yaml_options};
use crate::problem::{Pos, Problem};

/// The schema, as shipped: the same text editors complete from.
const SCHEMA: &str = include_str!("../../../schemas/portcullis.schema.json");

static SHAPE: LazyLock<Option<(Value, jsonschema::Validator)>> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA).ok()?;
    let validator = jsonschema::validator_for(&schema).ok()?;
    Some((schema, validator))
});

/// One YAML node as the schema sees it, with the positions of what it holds.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Uint(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

/// Where each node of the tree is written, by JSON pointer: the value, and for a map entry its
/// key.
#[derive(Default)]
struct Places {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line(),
        col: s.referenced.column(),
    }
}

/// The tree as JSON, recording positions under `pointer`.
fn to_json(node: &Spanned<Node>, pointer: &mut String, places: &mut Places) -> Value {
    places.values.insert(pointer.clone(), pos_of(node));
    match &node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::from(*i),
        Node::Uint(u) => Value::from(*u),
        Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Node::Str(s) => Value::String(s.clone()),
        Node::Seq(items) => {
            let len = pointer.len();
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                pointer.push('/');
                pointer.push_str(&i.to_string());
                out.push(to_json(item, pointer, places));
                pointer.truncate(len);
            }
            Value::Array(out)
        }
        Node::Map(entries) => {
            let len = pointer.len();
            let mut out = serde_json::Map::new();
            for (k, v) in entries {
                let key = match &k.value {
                    Node::Str(s) => s.clone(),
                    Node::Int(i) => i.to_string(),
                    Node::Uint(u) => u.to_string(),
                    Node::Bool(b) => b.to_string(),
                    Node::Float(f) => f.to_string(),
                    Node::Null => "null".to_owned(),
                    Node::Seq(_) | Node::Map(_) => continue,
                };
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                places.keys.insert(pointer.clone(), pos_of(k));
                let value = to_json(v, pointer, places);
                pointer.truncate(len);
                out.insert(key, value);
            }
            Value::Object(out)
        }
    }
}

/// What the schema finds in a file the typed read refused.
#[derive(Default)]
pub(crate) struct Shape {
    /// Keys the policy does not have, values of the wrong type, keys missing: what stops the
    /// typed read.
    pub structure: Vec<Problem>,
    /// Values of the right type that the schema refuses (a pattern, a range, a list of
    /// choices). The loader's own checks find these too, with better words, once it can read
    /// the file.
    pub values: Vec<Problem>,
    /// The text with each misspelt key and wrong-typed value blanked out (every other
    /// character where it was, so positions hold), when each is a whole entry of a mapping.
    pub repaired: Option<String>,
}

/// Every violation of the schema in `text`; nothing when the text is not YAML at all (the
/// parser's own error says where) or the schema cannot be read.
pub(crate) fn check(file: &Path, text: &str) -> Shape {
    let Some((schema, validator)) = SHAPE.as_ref() else {
        return Shape::default();
    };
    let Ok(tree) = serde_saphyr::from_str_with_options::<Spanned<Node>>(text, yaml_options())
    else {
        return Shape::default();
    };
    let mut places = Places::default();
    let doc = to_json(&tree, &mut String::new(), &mut places);
    let mut shape = Shape::default();
    // Entries to blank out, by the positions of their key and value; `None` once one cannot be.
    let mut cuts = Some(Vec::new());
    for e in validator.iter_errors(&doc) {
        let at = e.instance_path().as_str().to_owned();
        let value_pos = places.values.get(&at).copied();
        let key = dotted(&at);
        // The value as the file spells it, unless it may be a secret (a mapping may hold one
        // under a key of its own).
        let shown = |v: &Value| {
            let scalars = match v {
                Value::Object(_) => false,
                Value::Array(items) => items.iter().all(|i| !i.is_object() && !i.is_array()),
                _ => true,
            };
            value_pos
                .filter(|_| scalars)
                .and_then(|p| quoted(&key, text, p))
                .map(|w| format!(", found `{w}`"))
                .unwrap_or_default()
        };
        match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                let allowed = allowed_keys(schema, e.schema_path().as_str());
                for name in unexpected {
                    let child = format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
                    let key_pos = places.keys.get(&child).copied();
                    cut(&mut cuts, key_pos, places.values.get(&child).copied());
                    let key = dotted(&child);
                    let message = if allowed.is_empty() {
                        format!("unknown field `{name}`")
                    } else {
                        format!(
                            "unknown field `{name}`, expected one of {}",
                            allowed.join(", ")
                        )
                    };
                    shape.structure.push(Problem::error(
                        file,
                        key_pos.or(value_pos),
                        key.as_str(),
                        message,
                    ));
                }
            }
            ValidationErrorKind::Required { property } => {
                cuts = None;
                let name = property.as_str().unwrap_or_default();
                shape.structure.push(Problem::error(
                    file,
                    value_pos,
                    key.as_str(),
                    format!("missing field `{name}`"),
                ));
            }
            ValidationErrorKind::Type { kind } => {
                // An entry of a mapping can go; an item of a list cannot (the items after it
                // would be named by other indexes).
                let is_entry = at
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()));
                cut(
                    &mut cuts,
                    places.keys.get(&at).copied().filter(|_| is_entry),
                    value_pos,
                );
                let expected = match kind {
                    jsonschema::error::TypeKind::Single(t) => t.to_string(),
                    jsonschema::error::TypeKind::Multiple(ts) => {
                        let names: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
                        names.join(" or ")
                    }
                };
                shape.structure.push(Problem::error(
                    file,
                    value_pos,
                    key.as_str(),
                    format!("expected {}{}", article(&expected), shown(e.instance())),
                ));
            }
            ValidationErrorKind::Enum { options } => {
                let options = match options.as_ref() {
                    Value::Array(items) => items.iter().map(short).collect::<Vec<_>>().join(", "),
                    other => short(other),
                };
                shape.values.push(Problem::error(
                    file,
                    value_pos,
                    key.as_str(),
                    format!("expected one of {options}{}", shown(e.instance())),
                ));
            }
            ValidationErrorKind::Pattern { pattern } => {
                let hint = holder(schema, e.schema_path().as_str())
                    .and_then(|s| s.get("description"))
                    .and_then(Value::as_str)
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                shape.values.push(Problem::error(
                    file,
                    value_pos,
                    key.as_str(),
                    format!("expected the form `{pattern}`{hint}{}", shown(e.instance())),
                ));
            }
            // Other kinds print the value whole, a mapping included (`oneOf` over a section):
            // never shown.
            _ => shape.values.push(Problem::error(
                file,
                value_pos,
                key.as_str(),
                e.masked().to_string(),
            )),
        }
    }
    shape.repaired = cuts.and_then(|cuts| blank_entries(text, &cuts));
    shape
}

/// Where an entry to blank out is written: its key, and its value.
type Cut = (Pos, Option<Pos>);

fn cut(cuts: &mut Option<Vec<Cut>>, key: Option<Pos>, value: Option<Pos>) {
    match (cuts.as_mut(), key) {
        (Some(list), Some(k)) => list.push((k, value)),
        _ => *cuts = None,
    }
}

/// `text` with the mapping entries at `cuts` blanked out, every other line and column kept.
/// In a block mapping the key, its value on the key's line and the lines below that belong to
/// it become spaces; in a flow mapping (braces, on one line) the key and value with the comma
/// that joins the entry to the next or the previous one. `None` when an entry cannot be cut
/// out so (a flow mapping across lines, a key in some other place).
fn blank_entries(text: &str, cuts: &[Cut]) -> Option<String> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    for &(k, value) in cuts {
        let li = usize::try_from(k.line).ok()?.checked_sub(1)?;
        let ci = usize::try_from(k.col).ok()?.checked_sub(1)?;
        let line = lines.get(li)?;
        let start = byte_at(line, k.col)?;
        let before = line[..start].trim_end();
        if before.ends_with(['{', ',']) {
            lines[li] = blank_flow_entry(line, start, value.filter(|v| v.line == k.line)?)?;
            continue;
        }
        // Only indentation and sequence dashes before a block mapping's key.
        if !before.chars().all(|c| c == ' ' || c == '-') {
            return None;
        }
        let body_end = line.trim_end_matches(['\n', '\r']).len();
        let rest = &line[start..body_end];
        // A value on the key's line (past `key:`), other than a comment: the value's lines are
        // then only those indented further.
        let inline = rest
            .split_once(": ")
            .map(|(_, v)| v.trim())
            .is_some_and(|v| !v.is_empty() && !v.starts_with('#'));
        lines[li] = blank(line, start, body_end);
        for next in lines.iter_mut().skip(li + 1) {
            let trimmed = next.trim_start_matches(' ');
            let indent = next.len() - trimmed.len();
            let content = trimmed.trim_end_matches(['\n', '\r']);
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let below = indent > ci || (indent == ci && !inline && content.starts_with('-'));
            if !below {
                break;
            }
            let end = next.trim_end_matches(['\n', '\r']).len();
            *next = blank(next, 0, end);
        }
    }
    Some(lines.concat())
}

/// `line` without the flow mapping entry whose key starts at byte `start` and whose value
/// is at `value`: the comma after it goes too, or, for the last entry, the one before.
fn blank_flow_entry(line: &str, start: usize, value: Pos) -> Option<String> {
    let v = byte_at(line, value.col)?;
    let end = v + written_from(line, v)?.len();
    let after = &line[end..];
    let next = after.len() - after.trim_start_matches(' ').len();
    match after[next..].chars().next()? {
        ',' => Some(blank(line, start, end + next + 1)),
        '}' => {
            let before = line[..start].trim_end_matches(' ');
            Some(match before.strip_suffix(',') {
                Some(head) => blank(line, head.len(), end),
                None => blank(line, start, end),
            })
        }
        _ => None,
    }
}

/// `line` with its bytes `from..to` made spaces, one per character.
fn blank(line: &str, from: usize, to: usize) -> String {
    let to = to.min(line.len());
    let from = from.min(to);
    let spaces = line[from..to].chars().count();
    format!("{}{}{}", &line[..from], " ".repeat(spaces), &line[to..])
}

/// `/cors/allow_origins/1` as the policy's problems print keys: `cors.allow_origins[1]`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// A value as a message shows it: short, on one line.
fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn article(kind: &str) -> String {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {kind}")
    } else {
        format!("a {kind}")
    }
}

/// The schema node that holds the keyword at `keyword_path`, following each `$ref` the path
/// runs through as the validator did (`/properties/routes/items/$ref/pattern` → the `route`
/// definition).
fn holder<'s>(schema: &'s Value, keyword_path: &str) -> Option<&'s Value> {
    let (parent, _keyword) = keyword_path.rsplit_once('/')?;
    let mut node = schema;
    for seg in parent.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        node = if seg == "$ref" {
            schema.pointer(node.get("$ref")?.as_str()?.strip_prefix('#')?)?
        } else {
            match node {
                Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                other => other.get(&seg)?,
            }
        };
    }
    Some(node)
}

/// The keys an object allows, from the `properties` beside its `additionalProperties: false`.
fn allowed_keys(schema: &Value, keyword_path: &str) -> Vec<String> {
    holder(schema, keyword_path)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}
