use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "resource-no-429",
    owasp: "API4:2023",
    cwe: 770,
    title: "No 429 response declared",
    severity: Severity::Info,
    strict_only: true,
    fix: "Declare a `429` response (with `Retry-After`) on operations that are rate limited, and rate limit them.",
    explain: "An operation that never answers 429 is either not rate limited or does not say so; clients cannot back off, and reviewers cannot tell.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        let declared = op
            .responses
            .iter()
            .any(|(c, _, _)| *c == "429" || c.eq_ignore_ascii_case("4XX"));
        if !declared {
            out.push(Finding::new(
                &RULE,
                op.at,
                format!("`{}` declares no 429 response", op.label()),
            ));
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
    get: # expect: resource-no-429
      responses: { "200": { description: ok } }
    post:
      responses: { "201": { description: ok }, "429": { description: slow down } }
"##,
        );
    }
}
