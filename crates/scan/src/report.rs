//! The outcome of a scan and its renderings: JSON (the model itself), SARIF 2.1.0, JUnit XML
//! and a human summary; the exit-code rule; and the file of accepted finding fingerprints.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use crate::ctx::OperationCoverage;
use crate::error::ScanError;
use crate::finding::{Finding, Severity, rules};

/// Everything a scan found and did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub target: String,
    pub spec: String,
    /// Unix seconds at the start.
    pub started_at: u64,
    pub duration_ms: u64,
    /// Requests sent, logins included.
    pub requests: u32,
    pub budget: u32,
    /// Whether some request was not sent because the budget ran out.
    pub budget_exhausted: bool,
    /// Whether the scan got past authentication (an identity's request to a secured operation
    /// answered 2xx, or refused for something else than its credentials). A scan that did not tested nothing behind it: exit code 2, whatever the
    /// findings.
    pub reached: bool,
    /// Probes that ran.
    pub probes: Vec<&'static str>,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// Findings whose fingerprint is in the accepted list.
    pub suppressed: Vec<Finding>,
    pub coverage: Vec<OperationCoverage>,
    /// Probes skipped and why, and other remarks.
    pub notes: Vec<String>,
}

/// `1` when a finding is at or above `fail_on`, else `0`. (Errors, exit code 2, are the
/// caller's: a scan that failed has no findings to judge.)
pub fn exit_code(findings: &[Finding], fail_on: Severity) -> i32 {
    i32::from(findings.iter().any(|f| f.severity >= fail_on))
}

/// Reads a file of accepted fingerprints: one per line (`#` comments allowed), or JSON
/// (an array of strings, or an object with a `fingerprints` array, or a report whose
/// `findings` carry them).
pub fn load_accepted(path: &Path) -> Result<Vec<String>, ScanError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScanError::Config(format!("cannot read the baseline {}: {e}", path.display()))
    })?;
    Ok(parse_accepted(&text))
}

pub(crate) fn parse_accepted(text: &str) -> Vec<String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let list = match &v {
            Value::Array(a) => a.clone(),
            Value::Object(m) => m
                .get("fingerprints")
                .and_then(Value::as_array)
                .cloned()
                .or_else(|| {
                    m.get("findings").and_then(Value::as_array).map(|f| {
                        f.iter()
                            .filter_map(|x| x.get("fingerprint").cloned())
                            .collect()
                    })
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        return list
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
    }
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_owned())
        .collect()
}

impl Report {
    /// Findings at or above `s`.
    pub fn count_at_least(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity >= s).count()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A baseline file accepting every current finding (fingerprint and a comment), those the
    /// baseline in use already accepted included: rewriting a baseline keeps what it held.
    pub fn to_baseline(&self) -> String {
        let mut s =
            String::from("# portcullis scan: accepted findings (one fingerprint per line)\n");
        for f in self.findings.iter().chain(&self.suppressed) {
            let _ = writeln!(
                s,
                "{} # {} {} {}",
                f.fingerprint, f.severity, f.rule, f.operation
            );
        }
        s
    }

    /// SARIF 2.1.0, one result per finding, rules with OWASP and CWE tags and the
    /// `security-severity` GitHub code scanning reads.
    pub fn to_sarif(&self) -> String {
        let used: Vec<&crate::finding::Rule> = rules::ALL
            .iter()
            .filter(|r| self.findings.iter().any(|f| f.rule == r.id))
            .collect();
        let rule_index = |id: &str| used.iter().position(|r| r.id == id);
        let sarif_rules: Vec<Value> = used
            .iter()
            .map(|r| {
                let sev = self
                    .findings
                    .iter()
                    .filter(|f| f.rule == r.id)
                    .map(|f| f.severity)
                    .max()
                    .unwrap_or(Severity::Medium);
                json!({
                    "id": r.id,
                    "name": r.title,
                    "shortDescription": { "text": r.title },
                    "fullDescription": { "text": format!("{} ({}: {})", r.title, r.owasp, r.owasp_name()) },
                    "help": { "text": r.fix },
                    "helpUri": format!("https://cwe.mitre.org/data/definitions/{}.html", r.cwe),
                    "properties": {
                        "tags": ["security", r.owasp, format!("CWE-{}", r.cwe)],
                        "security-severity": sev.score(),
                    }
                })
            })
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                let mut region = json!({});
                if let Some(l) = f.spec_line {
                    region = json!({ "startLine": l });
                }
                let mut physical = json!({ "artifactLocation": { "uri": self.spec } });
                if f.spec_line.is_some() {
                    physical["region"] = region;
                }
                json!({
                    "ruleId": f.rule,
                    "ruleIndex": rule_index(f.rule),
                    "level": match f.severity {
                        Severity::Critical | Severity::High => "error",
                        Severity::Medium => "warning",
                        Severity::Low | Severity::Info => "note",
                    },
                    "message": { "text": format!("{}: {} {}", f.operation, f.title, f.detail) },
                    "locations": [{
                        "physicalLocation": physical,
                        "logicalLocations": [{ "name": f.operation, "kind": "function" }]
                    }],
                    "partialFingerprints": { "portcullisFingerprint/v1": f.fingerprint },
                    "properties": {
                        "severity": f.severity.name(),
                        "owasp": f.owasp,
                        "cwe": format!("CWE-{}", f.cwe),
                        "reproduce": f.reproduce,
                        "fix": f.fix,
                        "evidence": f.evidence,
                    }
                })
            })
            .collect();
        let doc = json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": {
                    "name": "portcullis-scan",
                    "version": self.version,
                    "informationUri": "https://github.com/portcullis-rs/portcullis",
                    "rules": sarif_rules,
                }},
                "invocations": [{
                    "executionSuccessful": true,
                    "properties": { "target": self.target, "requests": self.requests, "budget": self.budget }
                }],
                "results": results,
            }]
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }

    /// JUnit XML: one test case per (probe, operation) that ran, failed by the findings of
    /// that operation at or above `fail_on` (the exit code's threshold: CI reading either
    /// reaches the same verdict); findings below it pass, their text in the case's output.
    /// Findings on no single operation get a case of their own.
    pub fn to_junit(&self, fail_on: Severity) -> Result<String, ScanError> {
        use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
        let mut report = JReport::new("portcullis-scan");
        report.set_time(std::time::Duration::from_millis(self.duration_ms));
        let mut suite = TestSuite::new(format!("scan {}", self.target));
        let of = |op: &str| -> (Vec<&Finding>, Vec<&Finding>) {
            self.findings
                .iter()
                .filter(|f| f.operation == op)
                .partition(|f| f.severity >= fail_on)
        };
        let below_text = |below: &[&Finding]| {
            below
                .iter()
                .map(|f| finding_text(f))
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        for c in &self.coverage {
            let (found, below) = of(&c.operation);
            let status = if found.is_empty() {
                if c.probes.is_empty() && below.is_empty() {
                    TestCaseStatus::skipped()
                } else {
                    TestCaseStatus::success()
                }
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let worst = found
                    .iter()
                    .map(|f| f.severity)
                    .max()
                    .unwrap_or(Severity::Info);
                s.set_message(format!("{} finding(s), worst {worst}", found.len()));
                s.set_type(found.iter().map(|f| f.rule).collect::<Vec<_>>().join(","));
                s.set_description(
                    found
                        .iter()
                        .map(|f| finding_text(f))
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                );
                s
            };
            let mut tc = TestCase::new(c.operation.clone(), status);
            if !below.is_empty() {
                tc.set_system_out(below_text(&below));
            }
            tc.set_classname(format!(
                "probes: {}",
                c.probes.iter().copied().collect::<Vec<_>>().join(",")
            ));
            suite.add_test_case(tc);
        }
        for f in self
            .findings
            .iter()
            .filter(|f| !self.coverage.iter().any(|c| c.operation == f.operation))
        {
            let mut tc = if f.severity >= fail_on {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!("{} {}", f.severity, f.title));
                s.set_type(f.rule);
                s.set_description(finding_text(f));
                TestCase::new(format!("{} {}", f.rule, f.operation), s)
            } else {
                let mut tc = TestCase::new(
                    format!("{} {}", f.rule, f.operation),
                    TestCaseStatus::success(),
                );
                tc.set_system_out(finding_text(f));
                tc
            };
            tc.set_classname("api-wide");
            suite.add_test_case(tc);
        }
        report.add_test_suite(suite);
        report
            .to_string()
            .map_err(|e| ScanError::Render(e.to_string()))
    }

    /// A summary for a terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "portcullis scan of {} ({}): {} requests of {} in {:.1} s{}",
            self.target,
            self.spec,
            self.requests,
            self.budget,
            self.duration_ms as f64 / 1000.0,
            if self.budget_exhausted {
                " — budget exhausted, coverage incomplete"
            } else {
                ""
            }
        );
        let counts: Vec<String> = [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::Info,
        ]
        .iter()
        .map(|sev| {
            format!(
                "{} {sev}",
                self.findings.iter().filter(|f| f.severity == *sev).count()
            )
        })
        .collect();
        let _ = writeln!(
            s,
            "findings: {} ({}); {} suppressed by the baseline\n",
            self.findings.len(),
            counts.join(", "),
            self.suppressed.len()
        );
        for f in &self.findings {
            let _ = writeln!(s, "{}\n", finding_text(f));
        }
        let _ = writeln!(s, "coverage:");
        let width = self
            .coverage
            .iter()
            .map(|c| c.operation.len())
            .max()
            .unwrap_or(10);
        for c in &self.coverage {
            let who: Vec<&str> = c.baseline_2xx.iter().map(String::as_str).collect();
            let probes: Vec<&str> = c.probes.iter().copied().collect();
            let _ = writeln!(
                s,
                "  {:width$}  2xx: {:<24}  probes: {}",
                c.operation,
                if who.is_empty() {
                    "-".to_owned()
                } else {
                    who.join(",")
                },
                if probes.is_empty() {
                    "-".to_owned()
                } else {
                    probes.join(",")
                },
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

fn finding_text(f: &Finding) -> String {
    let mut s = format!(
        "[{}] {} {} (CWE-{}) {}\n  {}\n  {}\n  fix: {}\n  reproduce: {}\n  fingerprint: {}",
        f.severity.name().to_ascii_uppercase(),
        f.owasp,
        f.title,
        f.cwe,
        f.operation,
        f.detail,
        f.owasp_name,
        f.fix,
        f.reproduce,
        f.fingerprint
    );
    if let Some(e) = f.evidence.first() {
        let _ = write!(
            s,
            "\n  evidence ({}): {} -> {}",
            e.identity,
            e.request.lines().next().unwrap_or(""),
            e.status.map_or("no answer".into(), |c| c.to_string())
        );
    }
    s
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Report {
    /// One self-contained HTML page (no script, no external resource): a severity chart, the
    /// findings with their evidence, reproduction and fix, and the coverage table. Everything
    /// from the target is escaped.
    pub fn to_html(&self) -> String {
        use crate::finding::Severity;
        let levels = [
            (Severity::Critical, "#7b1fa2"),
            (Severity::High, "#c62828"),
            (Severity::Medium, "#ef6c00"),
            (Severity::Low, "#f9a825"),
            (Severity::Info, "#607d8b"),
        ];
        let count = |s: Severity| self.findings.iter().filter(|f| f.severity == s).count();
        let max = levels
            .iter()
            .map(|(s, _)| count(*s))
            .max()
            .unwrap_or(0)
            .max(1);
        let mut chart = String::new();
        for (i, (s, color)) in levels.iter().enumerate() {
            let n = count(*s);
            let w = 300 * n / max;
            let y = i * 28;
            let _ = write!(
                chart,
                "<text x=\"0\" y=\"{}\" class=\"lbl\">{}</text><rect x=\"80\" y=\"{}\" width=\"{w}\" height=\"20\" fill=\"{color}\"><title>{} {}</title></rect><text x=\"{}\" y=\"{}\" class=\"lbl\" id=\"count-{}\">{n}</text>",
                y + 15,
                s.name(),
                y,
                n,
                s.name(),
                86 + w,
                y + 15,
                s.name()
            );
        }
        let mut findings = String::new();
        for f in &self.findings {
            let evidence: String = f
                .evidence
                .iter()
                .map(|e| {
                    format!(
                        "<p class=\"meta\">as {}: {}</p><pre>{}</pre><pre>{}</pre>",
                        esc(&e.identity),
                        e.status
                            .map_or_else(|| "no answer".to_owned(), |s| s.to_string()),
                        esc(&e.request),
                        esc(&e.response)
                    )
                })
                .collect();
            let _ = write!(
                findings,
                "<section class=\"finding sev-{sev}\" data-rule=\"{rule}\"><h3><span class=\"badge\">{sev}</span> {title}</h3><p class=\"meta\">{owasp} {owasp_name} · CWE-{cwe} · <code>{op}</code> · rule <code>{rule}</code></p><p>{detail}</p><details><summary>Evidence</summary>{evidence}</details><p><b>Reproduce:</b></p><pre>{curl}</pre><p><b>Fix:</b> {fix}</p></section>",
                sev = f.severity.name(),
                rule = esc(f.rule),
                title = esc(&f.title),
                owasp = esc(f.owasp),
                owasp_name = esc(f.owasp_name),
                cwe = f.cwe,
                op = esc(&f.operation),
                detail = esc(&f.detail),
                curl = esc(&f.reproduce),
                fix = esc(f.fix),
            );
        }
        if self.findings.is_empty() {
            findings.push_str("<p id=\"none\">No findings.</p>");
        }
        let mut coverage = String::new();
        for c in &self.coverage {
            let _ = write!(
                coverage,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&c.operation),
                esc(&c
                    .baseline_2xx
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")),
                esc(&c.probes.iter().copied().collect::<Vec<_>>().join(", "))
            );
        }
        format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>portcullis scan: {target}</title><style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}}pre{{background:#f4f4f4;padding:.5rem;overflow-x:auto;white-space:pre-wrap}}.badge{{display:inline-block;padding:0 .4rem;border-radius:.3rem;color:#fff;font-size:.8rem;text-transform:uppercase}}.sev-critical .badge{{background:#7b1fa2}}.sev-high .badge{{background:#c62828}}.sev-medium .badge{{background:#ef6c00}}.sev-low .badge{{background:#f9a825}}.sev-info .badge{{background:#607d8b}}.finding{{border-top:1px solid #ddd;padding-top:.5rem}}.meta{{color:#555;font-size:.9rem}}.lbl{{font-size:12px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:.2rem .4rem;text-align:left}}</style></head><body><h1>portcullis scan</h1><p>Target <code>{target}</code>, description <code>{spec}</code>: {n} finding(s), {requests} requests of a budget of {budget}, {secs:.1} s.</p><svg id=\"chart\" width=\"420\" height=\"140\" role=\"img\" aria-label=\"findings by severity\">{chart}</svg><h2>Findings</h2>{findings}<h2>Coverage</h2><table><tr><th>operation</th><th>2xx baseline for</th><th>probes</th></tr>{coverage}</table></body></html>\n",
            target = esc(&self.target),
            spec = esc(&self.spec),
            n = self.findings.len(),
            requests = self.requests,
            budget = self.budget,
            secs = self.duration_ms as f64 / 1000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_fingerprints_parse_in_every_shape() {
        assert_eq!(
            parse_accepted("abc # note\n\n# c\ndef\n"),
            vec!["abc", "def"]
        );
        assert_eq!(parse_accepted("[\"a\",\"b\"]"), vec!["a", "b"]);
        assert_eq!(parse_accepted("{\"fingerprints\":[\"x\"]}"), vec!["x"]);
        assert_eq!(
            parse_accepted("{\"findings\":[{\"fingerprint\":\"y\"}]}"),
            vec!["y"]
        );
    }

    #[test]
    fn exit_code_follows_the_threshold() {
        let f = Finding::new(rules::CORS, Severity::Medium, "*", "");
        assert_eq!(exit_code(std::slice::from_ref(&f), Severity::High), 0);
        assert_eq!(exit_code(std::slice::from_ref(&f), Severity::Medium), 1);
        assert_eq!(exit_code(&[], Severity::Info), 0);
    }
}
