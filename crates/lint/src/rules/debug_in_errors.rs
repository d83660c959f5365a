use super::{Finding, Rule, Severity};
use crate::spec::{Spec, walk};

pub(super) static RULE: Rule = Rule {
    id: "config-debug-in-errors",
    owasp: "API8:2023",
    cwe: 209,
    title: "Error schema with debugging fields",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Remove stack traces, exception names, SQL and debug fields from error responses; log them with a request id instead and return the id.",
    explain: "An error schema that declares `stack`, `trace`, `exception` or `debug` promises internals to every client: file paths, library versions and queries that guide the next attack.",
    check,
};

const DEBUG: &[&str] = &[
    "stack",
    "stacktrace",
    "stack_trace",
    "trace",
    "traceback",
    "backtrace",
    "exception",
    "debug",
    "debug_info",
    "sql",
    "query",
    "file",
    "line",
    "source_file",
];

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    let mut seen = std::collections::HashSet::new();
    for op in &spec.ops {
        for (code, _, schema) in &op.responses {
            let Some(s) = schema else { continue };
            if !(code.starts_with('4') || code.starts_with('5') || *code == "default") {
                continue;
            }
            walk(spec.files, s, &mut |v| {
                if let Some(p) = v.property
                    && super::named(p, DEBUG)
                    && seen.insert(v.at)
                {
                    out.push(Finding::new(
                        &RULE,
                        v.at,
                        format!("error responses declare `{p}`"),
                    ));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixture() {
        super::super::fixture::check(
            &super::RULE,
            r##"
openapi: 3.1.0
info: { title: t, version: "1" }
paths:
  /a:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { type: object, properties: { query: { type: string } } }
        "500":
          description: failed
          content:
            application/json:
              schema:
                type: object
                properties:
                  title: { type: string }
                  stack: { type: string } # expect: config-debug-in-errors
"##,
        );
    }
}
