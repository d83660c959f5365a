//! Loading an OpenAPI description (YAML or JSON: JSON is YAML) into positioned [`Node`]s, with
//! `$ref`s to sibling files loaded on demand. Loading never fails as a whole: what cannot be
//! read becomes a problem with its position, and the rest is linted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use crate::node::{Key, Node, Pos, Value};

/// Nodes one document may expand to (aliases included): a bound against alias bombs.
const MAX_NODES: usize = 20_000_000;
/// The largest file a `$ref` may name.
const MAX_REF_BYTES: u64 = 64 << 20;
/// Files a description may span, itself included.
const MAX_FILES: usize = 256;

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
                        value: Value::Map(merged(entries)),
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

/// A mapping's entries with its merge keys (`<<: *base`, `<<: [*a, *b]`) expanded: the merged
/// mappings' entries join it, except where it has its own entry of that name (and an earlier
/// merged mapping wins over a later one). A rule looking for `security` in an operation must
/// find it when a shared anchor brings it.
fn merged(entries: Vec<(Key, Node)>) -> Vec<(Key, Node)> {
    if !entries.iter().any(|(k, _)| k.name == "<<") {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|(k, _)| k.name == "<<");
    for (_, from) in merges {
        let sources = match from.value {
            Value::Seq(items) => items,
            value => vec![Node {
                pos: from.pos,
                value,
            }],
        };
        for source in sources {
            if let Value::Map(entries) = source.value {
                for (k, n) in entries {
                    if !own.iter().any(|(o, _)| o.name == k.name) {
                        own.push((k, n));
                    }
                }
            }
        }
    }
    own
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
        // (A path that does not resolve is said as unreadable below.)
        if let Some(pos) = from
            && let Ok(canonical) = path.canonicalize()
            && let Err(why) = self.may_read(&canonical)
        {
            self.problems.push(LoadProblem {
                pos,
                message: format!("the $ref to {} is not followed: {why}", path.display()),
            });
            return None;
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

    /// Whether a `$ref` may make the linter read `file` (canonical): a description is untrusted
    /// input, and `$ref: /dev/zero`, `/dev/stdin` or `/proc/self/environ` must not be read (the
    /// first exhausts memory, the second hangs, the third would print the environment into
    /// a CI log). Only regular files of at most [`MAX_REF_BYTES`], under the root
    /// description's folder or the working folder, and at most [`MAX_FILES`] of them.
    fn may_read(&self, file: &Path) -> Result<(), String> {
        if self.sources.len() >= MAX_FILES {
            return Err(format!("more than {MAX_FILES} files"));
        }
        let roots = [
            self.sources
                .first()
                .and_then(|s| s.path.canonicalize().ok())
                .and_then(|p| p.parent().map(Path::to_owned)),
            std::env::current_dir()
                .ok()
                .and_then(|d| d.canonicalize().ok()),
        ];
        if !roots.iter().flatten().any(|r| file.starts_with(r)) {
            return Err("it is outside the description's folder and the working folder".into());
        }
        let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("it is not a regular file".into());
        }
        if meta.len() > MAX_REF_BYTES {
            return Err(format!("it is over {} MiB", MAX_REF_BYTES >> 20));
        }
        Ok(())
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
        // Every reference now resolves, or is said not to: a remote one (never fetched), or
        // one whose file was read but holds nothing at its pointer. (A file that could not be
        // read was said above.)
        for i in 0..self.roots.len() {
            let mut refs = Vec::new();
            if let Some(root) = &self.roots[i] {
                collect_refs(root, &mut refs);
            }
            for (target, pos) in refs {
                let file = target.split('#').next().unwrap_or("");
                let message = if file.contains("://") {
                    format!("a remote $ref is not followed: {target}")
                } else if self.resolve(i, &target).is_none() && self.file_of(i, file).is_some() {
                    format!("the $ref {target} points nowhere")
                } else {
                    continue;
                };
                self.problems.push(LoadProblem { pos, message });
            }
        }
    }

    /// The index of the file `file` names, seen from file `from` (`from` itself when empty),
    /// when it was read.
    fn file_of(&self, from: usize, file: &str) -> Option<usize> {
        if file.is_empty() {
            return self.roots.get(from)?.as_ref().map(|_| from);
        }
        let base = self.sources.get(from)?.path.parent()?.join(file);
        let key = base.canonicalize().unwrap_or(base);
        let i = *self.by_path.get(&key)?;
        self.roots.get(i)?.as_ref().map(|_| i)
    }

    /// The node a `$ref` names, seen from file `from`; `None` when it does not exist.
    pub fn resolve(&self, from: usize, reference: &str) -> Option<(usize, &Node)> {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let idx = self.file_of(from, file)?;
        let root = self.roots.get(idx)?.as_ref()?;
        // A fragment is percent-encoded first (`#/paths/~1users~1%7Bid%7D`, as bundlers write
        // it), then a JSON pointer.
        let pointer = percent_encoding::percent_decode_str(pointer).decode_utf8_lossy();
        root.pointer(&pointer).map(|n| (idx, n))
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
    fn refs_are_followed_only_to_regular_files_beside_the_description() {
        let dir = std::env::temp_dir().join(format!("portcullis-lint-refs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("api/schemas")).expect("dir");
        std::fs::write(dir.join("outside.yaml"), "Secret: {type: string}\n").expect("write");
        std::fs::write(dir.join("api/schemas/ok.yaml"), "Ok: {type: string}\n").expect("write");
        std::fs::write(
            dir.join("api/openapi.yaml"),
            "openapi: 3.1.0\ncomponents:\n  schemas:\n    A: {$ref: 'schemas/ok.yaml#/Ok'}\n    B: {$ref: '../outside.yaml#/Secret'}\n    C: {$ref: '/dev/zero'}\n    D: {$ref: '/proc/self/environ'}\n    E: {$ref: 'schemas'}\n",
        )
        .expect("write");
        let mut files = Files::open(&dir.join("api/openapi.yaml"));
        files.load_refs();
        assert_eq!(files.sources.len(), 2, "the root and ok.yaml");
        let problems: Vec<&str> = files.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        for (problem, line) in files.problems.iter().zip([5, 6, 7, 8]) {
            assert!(
                problem.message.contains("is not followed"),
                "{}",
                problem.message
            );
            assert_eq!(problem.pos.line, line);
        }
        assert!(
            problems[3].contains("not a regular file"),
            "{}",
            problems[3]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn merge_keys_bring_their_entries_and_own_entries_win() {
        let n = parse(
            "x-auth: &auth {security: [{bearer: []}], summary: shared}\nx-tag: &tag {tags: [orders]}\npaths:\n  /o:\n    post: {<<: [*auth, *tag], summary: own, responses: {'201': {description: ok}}}\n",
            0,
        )
        .expect("parses");
        let post = n.pointer("/paths/~1o/post").expect("post");
        assert!(post.get("security").is_some());
        assert!(post.get("tags").is_some());
        assert!(post.get("<<").is_none());
        assert_eq!(post.str_of("summary"), Some("own"));
    }

    #[test]
    fn refs_that_point_nowhere_or_off_the_machine_are_said() {
        let dir =
            std::env::temp_dir().join(format!("portcullis-lint-dangling-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("common.yaml"), "Ok: {type: string}\n").expect("write");
        std::fs::write(
            dir.join("openapi.yaml"),
            "openapi: 3.1.0\npaths:\n  /users/{id}: {get: {responses: {'200': {description: ok}}}}\n  /u: {$ref: '#/paths/~1users~1%7Bid%7D'}\ncomponents:\n  schemas:\n    A: {$ref: 'common.yaml#/Ok'}\n    B: {$ref: 'common.yaml#/Gone'}\n    C: {$ref: '#/components/schemas/Nope'}\n    D: {$ref: 'https://schemas.example/x.yaml'}\n",
        )
        .expect("write");
        let mut files = Files::open(&dir.join("openapi.yaml"));
        files.load_refs();
        let root = files.root().expect("root");
        let u = root.pointer("/paths/~1u").expect("/u");
        assert!(
            files.deref(u).get("get").is_some(),
            "a percent-encoded pointer resolves"
        );
        let said: Vec<(usize, &str)> = files
            .problems
            .iter()
            .map(|p| (p.pos.line, p.message.as_str()))
            .collect();
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(
            said[0].0 == 8 && said[0].1.contains("points nowhere"),
            "{said:?}"
        );
        assert!(
            said[1].0 == 9 && said[1].1.contains("points nowhere"),
            "{said:?}"
        );
        assert!(said[2].0 == 10 && said[2].1.contains("remote"), "{said:?}");
        let _ = std::fs::remove_dir_all(&dir);
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
