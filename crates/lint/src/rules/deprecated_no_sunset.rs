use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "inventory-deprecated-no-sunset",
    owasp: "API9:2023",
    cwe: 1059,
    title: "Deprecated operation without a sunset",
    severity: Severity::Low,
    strict_only: false,
    fix: "Give deprecated operations a retirement date (`x-sunset: 2027-06-30`, sent as the `Sunset` header) and a migration note, then retire them.",
    explain: "Deprecated endpoints with no end date live forever: unpatched, unmonitored, and usually missing the checks added to their successors.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        if op.node.bool_of("deprecated") != Some(true) {
            continue;
        }
        let sunset = op.node.get("x-sunset").is_some()
            || op
                .node
                .str_of("description")
                .is_some_and(|d| d.to_ascii_lowercase().contains("sunset"));
        if !sunset {
            out.push(Finding::new(
                &RULE,
                op.at,
                format!("`{}` is deprecated with no sunset date", op.label()),
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
  /v1/a:
    get: # expect: inventory-deprecated-no-sunset
      deprecated: true
      responses: { "200": { description: ok } }
  /v1/b:
    get:
      deprecated: true
      x-sunset: "2027-06-30"
      responses: { "200": { description: ok } }
  /v2/a:
    get:
      responses: { "200": { description: ok } }
"##,
        );
    }
}
