//! Output: compiler-style text with the source line and a caret, JSON, SARIF 2.1.0 (with
//! physical locations, so code-scanning UIs annotate the description) and JUnit XML (one test
//! case per rule that ran: failed with its findings, or passed).

use std::fmt::Write as _;

use crate::engine::{LOAD_RULE, Report};
use crate::rules::{self, Rule, Severity};

fn rule_of(id: &str) -> &'static Rule {
    rules::find(id).unwrap_or(&LOAD_RULE)
}

impl Report {
    fn path(&self, file: usize) -> String {
        self.files
            .sources
            .get(file)
            .map_or_else(|| "?".to_owned(), |s| s.path.display().to_string())
    }

    /// Findings at or above `min`.
    pub fn at_least(&self, min: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity >= min).count()
    }

    /// `file:line:col: severity[rule] message`, the line, a caret, the fix; then a count.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let rule = rule_of(f.rule);
            let _ = writeln!(
                out,
                "{}:{}:{}: {}[{}] {}",
                self.path(f.pos.file),
                f.pos.line,
                f.pos.col,
                f.severity.name(),
                f.rule,
                f.message
            );
            if let Some(line) = self
                .files
                .sources
                .get(f.pos.file)
                .and_then(|s| s.text.lines().nth(f.pos.line.saturating_sub(1)))
            {
                let gutter = f.pos.line.to_string();
                let _ = writeln!(out, "{gutter} | {line}");
                let _ = writeln!(
                    out,
                    "{} | {}^",
                    " ".repeat(gutter.len()),
                    " ".repeat(f.pos.col.saturating_sub(1))
                );
            }
            if !rule.owasp.is_empty() {
                let _ = writeln!(out, "  = {} {}: {}", rule.owasp, rule.title, rule.fix);
            }
            out.push('\n');
        }
        let count = |s| self.findings.iter().filter(|f| f.severity == s).count();
        let _ = writeln!(
            out,
            "{} finding(s): {} critical, {} high, {} medium, {} low, {} info ({} rules ran)",
            self.findings.len(),
            count(Severity::Critical),
            count(Severity::High),
            count(Severity::Medium),
            count(Severity::Low),
            count(Severity::Info),
            self.rules.len()
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "findings": self.findings.iter().map(|f| {
                let rule = rule_of(f.rule);
                serde_json::json!({
                    "rule": f.rule,
                    "severity": f.severity.name(),
                    "owasp": rule.owasp,
                    "cwe": rule.cwe,
                    "file": self.path(f.pos.file),
                    "line": f.pos.line,
                    "column": f.pos.col,
                    "message": f.message,
                    "fix": rule.fix,
                })
            }).collect::<Vec<_>>(),
            "rules": self.rules.iter().map(|r| r.id).collect::<Vec<_>>(),
        })
    }

    /// SARIF 2.1.0: one run, the rules as the driver's rules (with help and OWASP/CWE tags),
    /// one result per finding with its physical location.
    pub fn to_sarif(&self) -> serde_json::Value {
        let level = |s: Severity| match s {
            Severity::Critical | Severity::High => "error",
            Severity::Medium => "warning",
            Severity::Low | Severity::Info => "note",
        };
        let mut rules: Vec<&Rule> = self.rules.clone();
        if self.findings.iter().any(|f| f.rule == LOAD_RULE.id) {
            rules.push(&LOAD_RULE);
        }
        let index = |id: &str| rules.iter().position(|r| r.id == id).unwrap_or(0);
        let descriptors: Vec<_> = rules
            .iter()
            .map(|r| {
                let mut tags = vec!["security".to_owned()];
                if !r.owasp.is_empty() {
                    tags.push(format!("OWASP-{}", r.owasp));
                }
                if r.cwe > 0 {
                    tags.push(format!("external/cwe/cwe-{}", r.cwe));
                }
                serde_json::json!({
                    "id": r.id,
                    "name": r.title,
                    "shortDescription": { "text": r.title },
                    "fullDescription": { "text": r.explain },
                    "help": { "text": r.fix },
                    "defaultConfiguration": { "level": level(r.severity) },
                    "properties": { "tags": tags, "security-severity": match r.severity {
                        Severity::Critical => "9.5", Severity::High => "8.0", Severity::Medium => "5.5",
                        Severity::Low => "3.0", Severity::Info => "1.0" } }
                })
            })
            .collect();
        let results: Vec<_> = self
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "ruleId": f.rule,
                    "ruleIndex": index(f.rule),
                    "level": level(f.severity),
                    "message": { "text": f.message },
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": { "uri": sarif_uri(&self.path(f.pos.file)) },
                            // 1-based, as SARIF has them (a file that could not be read at
                            // all has no position: its start).
                            "region": { "startLine": f.pos.line.max(1), "startColumn": f.pos.col.max(1) }
                        }
                    }]
                })
            })
            .collect();
        serde_json::json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": {
                    "name": "portcullis-lint",
                    "informationUri": "https://github.com/portcullis-rs/portcullis",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": descriptors
                } },
                "results": results
            }]
        })
    }

    /// JUnit XML: a test suite per file, a test case per rule (failed with its findings).
    pub fn to_junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
        let mut report = JReport::new("portcullis-lint");
        let mut suite = TestSuite::new(self.path(0));
        let mut rules: Vec<&Rule> = self.rules.clone();
        if self.findings.iter().any(|f| f.rule == LOAD_RULE.id) {
            rules.insert(0, &LOAD_RULE);
        }
        for rule in rules {
            let hits: Vec<_> = self.findings.iter().filter(|f| f.rule == rule.id).collect();
            let status = if hits.is_empty() {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!("{} finding(s)", hits.len()));
                s.set_type(rule.owasp);
                s.set_description(
                    hits.iter()
                        .map(|f| {
                            format!(
                                "{}:{}:{}: {}: {}",
                                self.path(f.pos.file),
                                f.pos.line,
                                f.pos.col,
                                f.severity.name(),
                                f.message
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                s
            };
            let mut case = TestCase::new(rule.id, status);
            case.set_classname(format!("portcullis-lint.{}", rule.owasp));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
        report.to_string().unwrap_or_default()
    }
}

/// A file's path as a SARIF artifact URI: a relative reference with `/` separators, and the
/// bytes a URI cannot hold (spaces, `#`, `%`, non-ASCII...) percent-encoded.
fn sarif_uri(path: &str) -> String {
    const KEEP_OUT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'[')
        .add(b']')
        .add(b'^')
        .add(b'`')
        .add(b'{')
        .add(b'|')
        .add(b'}');
    percent_encoding::utf8_percent_encode(&path.replace('\\', "/"), KEEP_OUT).to_string()
}

#[cfg(test)]
mod tests {
    use crate::engine::{Options, lint_text};

    const SPEC: &str = "openapi: 3.1.0\ninfo: { title: t, version: \"1\" }\npaths:\n  /a:\n    post:\n      responses: { \"201\": { description: ok } }\ncomponents:\n  securitySchemes:\n    b: { type: http, scheme: bearer, bearerFormat: JWT }\n";

    #[test]
    fn text_points_with_a_caret() {
        let r = lint_text("api.yaml", SPEC, &Options::default());
        let t = r.to_text();
        assert!(
            t.starts_with("api.yaml:5:5: high[auth-no-security] `POST /a` changes data"),
            "{t}"
        );
        assert!(t.contains("5 |     post:\n  |     ^\n"), "{t}");
        assert!(t.contains("API2:2023"), "{t}");
    }

    #[test]
    fn sarif_and_junit_carry_the_findings() {
        let r = lint_text("api.yaml", SPEC, &Options::default());
        let s = r.to_sarif();
        assert_eq!(s["version"], "2.1.0");
        let result = &s["runs"][0]["results"][0];
        assert_eq!(result["ruleId"], "auth-no-security");
        assert_eq!(
            result["locations"][0]["physicalLocation"]["region"]["startLine"],
            5
        );
        let idx = result["ruleIndex"].as_u64().unwrap_or(99) as usize;
        assert_eq!(
            s["runs"][0]["tool"]["driver"]["rules"][idx]["id"],
            "auth-no-security"
        );
        // A path a URI cannot hold as it is, and a file without positions.
        let spaced = lint_text("my specs/api v2#1.yaml", SPEC, &Options::default()).to_sarif();
        assert_eq!(
            spaced["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
                ["uri"],
            "my%20specs/api%20v2%231.yaml"
        );
        let dir = std::env::temp_dir().join(format!("portcullis-sarif-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let latin1 = dir.join("latin1.yaml");
        std::fs::write(&latin1, b"openapi: 3.1.0\ninfo: {title: caf\xe9}\n").expect("write");
        let unreadable = crate::lint_file(&latin1, &Options::default()).to_sarif();
        let region =
            &unreadable["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"];
        assert!(region["startLine"].as_u64() >= Some(1), "{region}");
        assert!(region["startColumn"].as_u64() >= Some(1), "{region}");
        let _ = std::fs::remove_dir_all(&dir);
        let j = r.to_junit();
        assert!(j.contains("<testcase name=\"auth-no-security\""), "{j}");
        assert!(j.contains("<failure"), "{j}");
        assert!(j.contains("failures=\"1\""), "{j}");
    }
}
