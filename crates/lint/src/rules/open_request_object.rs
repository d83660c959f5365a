use super::{Finding, Rule, Severity};
use crate::spec::{Spec, type_of, walk};

pub(super) static RULE: Rule = Rule {
    id: "property-open-request-object",
    owasp: "API3:2023",
    cwe: 915,
    title: "Request object open to undeclared properties",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Set `additionalProperties: false` (or `unevaluatedProperties: false` with `allOf`) on request objects, so a client cannot send properties the contract does not give it.",
    explain: "JSON Schema allows any extra property unless `additionalProperties` says otherwise, and most auditors only flag `additionalProperties: true`. An object that stays open, explicitly or by omission, lets a client slip in `role`, `is_admin` or `owner_id`, and frameworks that bind requests to models will store them (mass assignment).",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        let Some(req) = op.request else {
            continue;
        };
        walk(spec.files, req, &mut |v| {
            let s = v.schema;
            let object = type_of(s) == Some("object") || s.get("properties").is_some();
            if !object || s.get("properties").is_none() {
                return;
            }
            let closed = v.closed_above
                || s.get("additionalProperties")
                    .is_some_and(|a| a.as_bool() == Some(false) || a.is_map())
                || s.get("unevaluatedProperties")
                    .is_some_and(|a| a.as_bool() == Some(false));
            if !closed {
                let how = if s.get("additionalProperties").is_some() {
                    "allows"
                } else {
                    "does not forbid"
                };
                out.push(Finding::new(
                    &RULE,
                    s.pos,
                    format!(
                        "request object {how} undeclared properties (`{}`)",
                        op.label()
                    ),
                ));
            }
        });
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
  /users:
    post:
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/NewUser" }
      responses: { "201": { description: ok } }
  /notes:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              properties:
                text: { type: string, maxLength: 10 }
                meta:
                  type: object # expect: property-open-request-object
                  additionalProperties: true
                  properties:
                    tag: { type: string, maxLength: 10 }
      responses: { "201": { description: ok } }
  /accounts:
    post:
      requestBody:
        content:
          application/json:
            schema:
              unevaluatedProperties: false
              allOf:
                - { $ref: "#/components/schemas/Base" }
                - type: object
                  properties:
                    plan: { type: string, maxLength: 10 }
      responses: { "201": { description: ok } }
components:
  schemas:
    NewUser:
      type: object # expect: property-open-request-object
      properties:
        name: { type: string, maxLength: 10 }
    Base:
      type: object
      properties:
        email: { type: string, maxLength: 100 }
"##,
        );
    }
}
