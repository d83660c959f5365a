use super::{Finding, Rule, Severity};
use crate::spec::{Spec, type_of};

pub(super) static RULE: Rule = Rule {
    id: "resource-number-unbounded",
    owasp: "API4:2023",
    cwe: 1284,
    title: "Request number without bounds",
    severity: Severity::Low,
    strict_only: true,
    fix: "Give request integers and numbers a `minimum` and a `maximum` (quantities, amounts, sizes).",
    explain: "An unbounded number accepts -1 and 2^63: negative quantities that credit an account, or sizes that allocate gigabytes.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        let schemas = spec.inputs(op);
        for (_, s, at) in schemas {
            let numeric = matches!(type_of(s), Some("integer" | "number"));
            let bounded = (s.get("maximum").is_some() || s.get("exclusiveMaximum").is_some())
                && (s.get("minimum").is_some() || s.get("exclusiveMinimum").is_some())
                || s.get("enum").is_some();
            if numeric && !bounded {
                out.push(Finding::new(
                    &RULE,
                    at,
                    "request number without `minimum` and `maximum`",
                ));
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
  /cart:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                quantity: { type: integer } # expect: resource-number-unbounded
                half: { type: integer, minimum: 1 } # expect: resource-number-unbounded
                size: { type: integer, minimum: 1, maximum: 100 }
      responses: { "201": { description: ok } }
"##,
        );
    }
}
