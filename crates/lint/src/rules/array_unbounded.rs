use super::{Finding, Rule, Severity};
use crate::spec::{Spec, type_of};

pub(super) static RULE: Rule = Rule {
    id: "resource-array-unbounded",
    owasp: "API4:2023",
    cwe: 770,
    title: "Request array without a maximum number of items",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Give request arrays a `maxItems`.",
    explain: "An array without `maxItems` lets one request carry a million items, each processed (and often each a database write): batch endpoints are the favourite amplifier of resource exhaustion.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        let schemas = spec.inputs(op);
        for (_, s, at) in schemas {
            if type_of(s) == Some("array") && s.get("maxItems").is_none() {
                out.push(Finding::new(&RULE, at, "request array without `maxItems`"));
            }
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
  /orders:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                items: # expect: resource-array-unbounded
                  type: array
                  items: { type: string, maxLength: 8 }
                tags:
                  type: array
                  maxItems: 10
                  items: { type: string, maxLength: 8 }
      responses: { "201": { description: ok } }
"##,
        );
    }
}
