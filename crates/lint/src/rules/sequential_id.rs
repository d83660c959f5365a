use super::{Finding, Rule, Severity, is_id_name};
use crate::spec::{Spec, type_of};

pub(super) static RULE: Rule = Rule {
    id: "authz-sequential-id",
    owasp: "API1:2023",
    cwe: 639,
    title: "Sequential numeric object id in a path",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Use unguessable ids (UUIDs, random prefixed ids) for objects; and check on every request that the caller owns the object: unguessable ids do not replace the ownership check.",
    explain: "`/orders/{id}` with an integer id invites enumeration: an attacker counts from 1 and reads every object the ownership check forgets to protect (BOLA). Random ids make guessing useless; they do not make the check unnecessary.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        for p in &op.params {
            if p.str_of("in") != Some("path") {
                continue;
            }
            let Some(name) = p.str_of("name") else {
                continue;
            };
            let schema = p.get("schema").map(|s| spec.deref(s));
            let numeric = schema
                .and_then(type_of)
                .is_some_and(|t| t == "integer" || t == "number");
            let random = schema
                .and_then(|s| s.str_of("format"))
                .is_some_and(|f| f == "uuid");
            if numeric && !random && is_id_name(name) {
                out.push(Finding::new(
                    &RULE,
                    p.get("name").map_or(p.pos, |n| n.pos),
                    format!(
                        "`{name}` in `{}` is a number: ids can be enumerated",
                        op.path
                    ),
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
  /orders/{order_id}:
    parameters:
      - name: order_id # expect: authz-sequential-id
        in: path
        required: true
        schema: { type: integer }
    get:
      responses: { "200": { description: ok } }
  /users/{userId}/items/{item}:
    get:
      parameters:
        - name: userId
          in: path
          required: true
          schema: { type: string, format: uuid }
        - name: item
          in: path
          required: true
          schema: { type: integer }
        - name: id
          in: query
          schema: { type: integer }
      responses: { "200": { description: ok } }
"##,
        );
    }
}
