//! Running the rules: the profile and the configuration choose them, findings under a node
//! marked `x-portcullis-lint-ignore: [RULE, ...]` are dropped, duplicates (a component reached
//! from several operations) are reported once, and the result is in file order.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::load::Files;
use crate::node::{Node, Pos, Value};
use crate::rules::{ALL, Finding, Profile, Rule, Severity};
use crate::spec::Spec;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub profile: Profile,
    /// Rule ids switched off.
    pub disabled: Vec<String>,
}

/// The outcome: the files (for excerpts) and the findings, in file order.
#[derive(Debug)]
pub struct Report {
    pub files: Files,
    pub findings: Vec<Finding>,
    /// The rules that ran.
    pub rules: Vec<&'static Rule>,
}

/// The id given to problems reading the description.
pub const LOAD_RULE: Rule = Rule {
    id: "load",
    owasp: "",
    cwe: 0,
    title: "The description could not be read",
    severity: Severity::High,
    strict_only: false,
    fix: "Fix the syntax or the reference at this position.",
    explain: "The file (or a file it references) is not valid YAML/JSON, or a `$ref` points nowhere. What could be read is still linted.",
    check: |_, _| {},
};

pub fn selected(options: &Options) -> Vec<&'static Rule> {
    ALL.iter()
        .copied()
        .filter(|r| !options.disabled.iter().any(|d| d == r.id))
        .filter(|r| match options.profile {
            Profile::Strict => true,
            Profile::Default => !r.strict_only,
            // Every rule of the default profile runs; only its high findings are kept (`run`):
            // a rule's severity can rise with what it finds (a write operation's override).
            Profile::Relaxed => !r.strict_only,
        })
        .collect()
}

/// Lints the description at `path` (and the files its `$ref`s name).
pub fn lint_file(path: &Path, options: &Options) -> Report {
    let mut files = Files::open(path);
    files.load_refs();
    run(files, options)
}

/// Lints a description held in memory.
pub fn lint_text(name: &str, text: &str, options: &Options) -> Report {
    run(Files::from_text(name, text), options)
}

fn run(files: Files, options: &Options) -> Report {
    let rules = selected(options);
    let mut findings: Vec<Finding> = files
        .problems
        .iter()
        .map(|p| Finding {
            rule: LOAD_RULE.id,
            severity: Severity::High,
            pos: p.pos,
            message: p.message.clone(),
        })
        .collect();
    if let Some(root) = files.root() {
        if let Some(v) = root.get("swagger") {
            findings.push(Finding {
                rule: LOAD_RULE.id,
                severity: Severity::High,
                pos: v.pos,
                message: "Swagger 2.0 is not supported: convert the description to OpenAPI 3 (e.g. with swagger2openapi)".into(),
            });
        } else if root.str_of("openapi").is_none_or(|v| !v.starts_with('3')) {
            findings.push(Finding {
                rule: LOAD_RULE.id,
                severity: Severity::High,
                pos: root.get("openapi").map_or(root.pos, |v| v.pos),
                message: "not an OpenAPI 3.x description (no `openapi: 3.x` field)".into(),
            });
        } else {
            let spec = Spec::new(&files, root);
            let ignored = ignores(&files);
            let mut raw = Vec::new();
            for rule in &rules {
                (rule.check)(&spec, &mut raw);
            }
            let mut seen = HashSet::new();
            for f in raw {
                let skip = ignored
                    .get(&f.pos)
                    .is_some_and(|ids| ids.iter().any(|i| i == f.rule || i == "all"));
                let kept =
                    !matches!(options.profile, Profile::Relaxed) || f.severity >= Severity::High;
                if !skip && kept && seen.insert((f.rule, f.pos)) {
                    findings.push(f);
                }
            }
        }
    }
    findings.sort_by(|a, b| (a.pos, b.severity, a.rule).cmp(&(b.pos, a.severity, b.rule)));
    Report {
        files,
        findings,
        rules,
    }
}

/// Every position under a node that carries `x-portcullis-lint-ignore`, with the rules it
/// silences (the key holding the node included, so operation-level findings are covered).
fn ignores(files: &Files) -> HashMap<Pos, Vec<String>> {
    fn mark(n: &Node, ids: &[String], out: &mut HashMap<Pos, Vec<String>>) {
        out.entry(n.pos).or_default().extend(ids.iter().cloned());
        match &n.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    out.entry(k.pos).or_default().extend(ids.iter().cloned());
                    mark(v, ids, out);
                }
            }
            Value::Seq(items) => items.iter().for_each(|i| mark(i, ids, out)),
            _ => {}
        }
    }
    fn find(n: &Node, key_pos: Option<Pos>, out: &mut HashMap<Pos, Vec<String>>) {
        if let Some(list) = n.get("x-portcullis-lint-ignore") {
            let ids: Vec<String> = match list.as_str() {
                Some(one) => vec![one.to_owned()],
                None => list
                    .items()
                    .iter()
                    .filter_map(Node::as_str)
                    .map(str::to_owned)
                    .collect(),
            };
            if let Some(k) = key_pos {
                out.entry(k).or_default().extend(ids.iter().cloned());
            }
            mark(n, &ids, out);
        }
        match &n.value {
            Value::Map(entries) => entries.iter().for_each(|(k, v)| find(v, Some(k.pos), out)),
            Value::Seq(items) => items.iter().for_each(|i| find(i, None, out)),
            _ => {}
        }
    }
    let mut out = HashMap::new();
    for root in files.roots.iter().flatten() {
        find(root, None, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r##"
openapi: 3.1.0
info: { title: t, version: "1" }
paths:
  /hooks:
    post:
      x-portcullis-lint-ignore: [auth-no-security]
      requestBody:
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              properties:
                callback: { type: string, format: uri, maxLength: 100 }
      responses: { "201": { description: ok } }
  /other:
    get:
      responses: { "200": { description: ok } }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
"##;

    #[test]
    fn inline_ignores_profiles_and_disabled_rules() {
        let r = lint_text("s.yaml", SPEC, &Options::default());
        let ids: Vec<_> = r.findings.iter().map(|f| (f.rule, f.pos.line)).collect();
        assert!(ids.contains(&("auth-no-security", 18)), "{ids:?}");
        assert!(
            !ids.iter().any(|(r, l)| *r == "auth-no-security" && *l == 6),
            "ignored: {ids:?}"
        );
        assert!(ids.contains(&("ssrf-url-input", 15)), "{ids:?}");
        let relaxed = lint_text(
            "s.yaml",
            SPEC,
            &Options {
                profile: Profile::Relaxed,
                disabled: vec!["ssrf-url-input".into()],
            },
        );
        assert!(relaxed.findings.iter().all(|f| f.rule != "ssrf-url-input"));
        assert!(
            relaxed
                .findings
                .iter()
                .all(|f| f.severity >= Severity::High)
        );
    }

    /// The relaxed profile keeps every high finding, also those of a rule whose default is
    /// lower (an override of the global security on a write operation is high).
    #[test]
    fn the_relaxed_profile_keeps_every_high_finding() {
        let spec = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\nsecurity: [{bearer: []}]\npaths:\n  /orders:\n    post:\n      security: []\n      responses: {'201': {description: ok}}\n    get:\n      security: []\n      responses: {'200': {description: ok}}\ncomponents:\n  securitySchemes:\n    bearer: {type: http, scheme: bearer, bearerFormat: JWT}\n";
        let relaxed = lint_text(
            "s.yaml",
            spec,
            &Options {
                profile: Profile::Relaxed,
                disabled: Vec::new(),
            },
        );
        let overridden: Vec<usize> = relaxed
            .findings
            .iter()
            .filter(|f| f.rule == "auth-security-overridden")
            .map(|f| f.pos.line)
            .collect();
        assert_eq!(overridden, [7], "{:?}", relaxed.findings);
        assert!(
            relaxed
                .findings
                .iter()
                .all(|f| f.severity >= Severity::High)
        );
    }

    #[test]
    fn broken_and_foreign_descriptions_say_why() {
        let r = lint_text(
            "s.yaml",
            "swagger: \"2.0\"\ninfo: {}\n",
            &Options::default(),
        );
        assert_eq!(r.findings.len(), 1);
        assert!(r.findings[0].message.contains("Swagger 2.0"));
        let r = lint_text("s.yaml", "openapi: 3.1.0\npaths: [\n", &Options::default());
        assert_eq!(r.findings[0].rule, "load");
    }
}
