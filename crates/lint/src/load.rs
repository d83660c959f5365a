//! Loading an OpenAPI description (YAML or JSON: JSON is YAML) into positioned [`Node`]s, with
//! `$ref`s to sibling files loaded on demand. Loading never fails as a whole: what cannot be
//! read becomes a problem with its position, and the rest is linted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use crate::node::{Key, Node, Pos, Value};

/// Nodes one document may expand to (aliases included): a bound against alias bombs.
const MAX_NODES: usize = 20_000_000;

/// One file read.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Why (part of) a file could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadProblem {
    pub pos: Pos,
    pub message: String,
}

/// The files of a description: the root and the siblings its `$ref`s name.
#[derive(Debug, Default)]
pub struct Files {
    pub sources: Vec<Source>,
    pub roots: Vec<Option<Node>>,
    pub problems: Vec<LoadProblem>,
    by_path: HashMap<PathBuf, usize>,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
    },
}

/// Parses `text` (file number `file`) into a tree.
pub fn parse(text: &str, file: usize) -> Result<Node, LoadProblem> {
    let parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut count = 0usize;
    for ev in parser {
        let (event, span) = ev.map_err(|e| LoadProblem {
            pos: Pos {
                file,
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: format!("not valid YAML or JSON: {}", e.info()),
        })?;
        let pos = Pos {
            file,
            line: span.start.line(),
            col: span.start.col() + 1,
        };
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, _) => {
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                (Node { pos, value }, anchor)
            }
            Event::Alias(id) => {
                let node = anchors.get(&id).cloned().unwrap_or(Node {
                    pos,
                    value: Value::Null,
                });
                count += weight(&node);
                (node, 0)
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => (
                    Node {
                        pos,
                        value: Value::Seq(items),
                    },
                    anchor,
                ),
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) => (
                    Node {
                        pos,
                        value: Value::Map(entries),
                    },
                    anchor,
                ),
                None => continue,
            },
            _ => continue,
        };
        count += 1;
        if count > MAX_NODES {
            return Err(LoadProblem {
                pos,
                message: "the document expands to too many nodes (an alias bomb?)".into(),
            });
        }
        if anchor > 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => {
                root.get_or_insert(node);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    *key = Some(Key {
                        name: node.as_str().unwrap_or("").to_owned(),
                        pos: node.pos,
                    })
                }
            },
        }
    }
    root.ok_or(LoadProblem {
        pos: Pos {
            file,
            line: 1,
            col: 1,
        },
        message: "the file is empty".into(),
    })
}

/// How many nodes a subtree holds (for the alias budget).
fn weight(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) => 1 + items.iter().map(weight).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| weight(v)).sum::<usize>(),
        _ => 1,
    }
}

impl Files {
    /// Reads the root description.
    pub fn open(path: &Path) -> Files {
        let mut files = Files::default();
        files.add(path, None);
        files
    }

    /// From text already in memory (tests, editors).
    pub fn from_text(name: &str, text: &str) -> Files {
        let mut files = Files::default();
        files.sources.push(Source {
            path: PathBuf::from(name),
            text: text.to_owned(),
        });
        match parse(text, 0) {
            Ok(n) => files.roots.push(Some(n)),
            Err(p) => {
                files.problems.push(p);
                files.roots.push(None);
            }
        }
        files
    }

    fn add(&mut self, path: &Path, from: Option<Pos>) -> Option<usize> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        if let Some(&i) = self.by_path.get(&key) {
            return Some(i);
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(LoadProblem {
                    pos: from.unwrap_or_default(),
                    message: format!("cannot read {}: {e}", path.display()),
                });
                return None;
            }
        };
        let i = self.sources.len();
        let parsed = parse(&text, i);
        self.sources.push(Source {
            path: path.to_owned(),
            text,
        });
        self.by_path.insert(key, i);
        match parsed {
            Ok(n) => self.roots.push(Some(n)),
            Err(p) => {
                self.problems.push(p);
                self.roots.push(None);
            }
        }
        Some(i)
    }

    pub fn root(&self) -> Option<&Node> {
        self.roots.first().and_then(Option::as_ref)
    }
}

impl Files {
    /// Resolves every `$ref` to a sibling file up front, so rules can borrow all files at once.
    pub fn load_refs(&mut self) {
        let mut i = 0;
        while i < self.roots.len() {
            let mut refs = Vec::new();
            if let Some(root) = &self.roots[i] {
                collect_refs(root, &mut refs);
            }
            let base = self.sources[i]
                .path
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default();
            for (target, pos) in refs {
                let file = target.split('#').next().unwrap_or("");
                if !file.is_empty() && !file.contains("://") {
                    self.add(&base.join(file), Some(pos));
                }
            }
            i += 1;
        }
    }

    /// The node a `$ref` names, seen from file `from`; `None` when it does not exist.
    pub fn resolve(&self, from: usize, reference: &str) -> Option<(usize, &Node)> {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let idx = if file.is_empty() {
            from
        } else {
            let base = self.sources.get(from)?.path.parent()?.join(file);
            let key = base.canonicalize().unwrap_or(base);
            *self.by_path.get(&key)?
        };
        let root = self.roots.get(idx)?.as_ref()?;
        root.pointer(pointer).map(|n| (idx, n))
    }

    /// `node`, or what its `$ref` names (followed up to 16 times).
    pub fn deref<'a>(&'a self, mut node: &'a Node) -> &'a Node {
        for _ in 0..16 {
            let Some(r) = node.str_of("$ref") else {
                return node;
            };
            match self.resolve(node.pos.file, r) {
                Some((_, n)) => node = n,
                None => return node,
            }
        }
        node
    }
}

fn collect_refs(n: &Node, out: &mut Vec<(String, Pos)>) {
    match &n.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                if k.name == "$ref"
                    && let Some(s) = v.as_str()
                {
                    out.push((s.to_owned(), v.pos));
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Seq(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values_are_kept() {
        let n = parse("a: 1\nb:\n  c: [x, \"y\"]\n  d: {e: true}\n", 0).expect("parses");
        let (k, v) = n.entry("b").expect("b");
        assert_eq!((k.pos.line, k.pos.col), (2, 1));
        let c = v.get("c").expect("c");
        assert_eq!(c.items().len(), 2);
        assert_eq!(c.items()[1].as_str(), Some("y"));
        assert_eq!((c.items()[1].pos.line, c.items()[1].pos.col), (3, 10));
        assert_eq!(v.pointer("/d/e").and_then(Node::as_bool), Some(true));
        let (dk, _) = v.entry("d").expect("d");
        assert_eq!((dk.pos.line, dk.pos.col), (4, 3));
    }

    #[test]
    fn json_is_read_with_positions_too() {
        let n = parse(
            "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {\"/a\": {}}\n}",
            0,
        )
        .expect("parses");
        assert_eq!(n.str_of("openapi"), Some("3.1.0"));
        let (k, _) = n.get("paths").expect("paths").entry("/a").expect("/a");
        assert_eq!(k.pos.line, 3);
    }

    #[test]
    fn anchors_and_broken_input() {
        let n = parse("base: &b {x: 1}\nother: *b\n", 0).expect("parses");
        assert_eq!(n.pointer("/other/x").and_then(Node::as_f64), Some(1.0));
        let e = parse("a: [1, 2\nb: 3\n", 0).expect_err("broken");
        assert!(e.message.starts_with("not valid YAML"), "{}", e.message);
        assert!(e.pos.line >= 1);
    }
}
