use super::{Finding, Rule, Severity};
use crate::spec::{Spec, type_of};

pub(super) static RULE: Rule = Rule {
    id: "resource-string-unbounded",
    owasp: "API4:2023",
    cwe: 770,
    title: "Request string without a maximum length",
    severity: Severity::Low,
    strict_only: true,
    fix: "Give request strings a `maxLength` (or an `enum`, a `pattern` with bounded repetition, a `format` with a fixed length).",
    explain: "A string with no `maxLength` can be as long as the body limit allows: megabytes stored, indexed, logged and returned. Bounds in the contract let a validating gateway refuse them early.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    let mut seen = std::collections::HashSet::new();
    for op in &spec.ops {
        let schemas = spec.inputs(op);
        for (_, s, at) in schemas {
            if type_of(s) != Some("string") {
                continue;
            }
            let bounded = s.get("maxLength").is_some()
                || s.get("enum").is_some()
                || s.get("const").is_some()
                || s.str_of("format").is_some_and(|f| {
                    matches!(f, "date" | "date-time" | "time" | "uuid" | "ipv4" | "ipv6")
                });
            if !bounded && seen.insert(at) {
                out.push(Finding::new(
                    &RULE,
                    at,
                    "request string without `maxLength`",
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
  /notes:
    post:
      parameters:
        - name: q # expect: resource-string-unbounded
          in: query
          schema: { type: string }
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                text: { type: string } # expect: resource-string-unbounded
                title: { type: string, maxLength: 80 }
                kind: { type: string, enum: [a, b] }
                at: { type: string, format: date-time }
                id: { type: string, format: uuid }
      responses: { "201": { description: ok } }
"##,
        );
    }
}
