use std::collections::HashSet;

use super::{Finding, Rule, Severity};
use crate::spec::{Spec, walk};

pub(super) static RULE: Rule = Rule {
    id: "property-mass-assignment",
    owasp: "API3:2023",
    cwe: 915,
    title: "Privileged property writable by clients",
    severity: Severity::High,
    strict_only: false,
    fix: "Remove the property from the create/update request schema (or mark it `readOnly: true`) and set it on the server only.",
    explain: "A property that looks like a privilege (role, is_admin, balance, owner_id, verified...) which responses of the API expose and which a create or update request also accepts is the classic mass-assignment hole: the client sends `\"role\": \"admin\"` and the server stores it.",
    check,
};

const PRIVILEGED: &[&str] = &[
    "role",
    "roles",
    "is_admin",
    "isadmin",
    "admin",
    "permissions",
    "scopes",
    "owner_id",
    "ownerid",
    "user_id",
    "userid",
    "account_id",
    "balance",
    "balance_cents",
    "credit",
    "credits",
    "verified",
    "is_verified",
    "email_verified",
    "approved",
    "tier",
    "is_staff",
    "superuser",
];

fn privileged(name: &str) -> bool {
    super::named(name, PRIVILEGED)
}

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    // What the API's responses expose.
    let mut exposed = HashSet::new();
    for op in &spec.ops {
        for (_, _, schema) in &op.responses {
            if let Some(s) = schema {
                walk(spec.files, s, &mut |v| {
                    if let Some(p) = v.property {
                        exposed.insert(p.to_ascii_lowercase());
                    }
                });
            }
        }
    }
    // Administrative operations set these legitimately.
    for op in spec
        .ops
        .iter()
        .filter(|o| matches!(o.method, "post" | "put" | "patch") && !o.is_admin())
    {
        let Some(req) = op.request else {
            continue;
        };
        walk(spec.files, req, &mut |v| {
            let Some(p) = v.property else {
                return;
            };
            let read_only = v.read_only;
            if privileged(p) && exposed.contains(&p.to_ascii_lowercase()) && !read_only {
                out.push(Finding::new(
                    &RULE,
                    v.at,
                    format!(
                        "`{p}` is exposed in responses and accepted by `{}`: a client may set it",
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
  /users/{id}:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema:
                type: object
                properties:
                  name: { type: string }
                  role: { type: string }
                  balance_cents: { type: integer }
                  roles: { type: array, items: { type: string } }
                  owner_id: { type: string }
                  verified: { type: boolean }
    patch:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                name: { type: string }
                role: { type: string } # expect: property-mass-assignment
                balance_cents: { type: integer, readOnly: true }
                plan: { type: string }
                roles: { type: array, readOnly: true, items: { type: string } }
                owner_id: { readOnly: true, allOf: [{ $ref: "#/components/schemas/Id" }] }
                verified: { $ref: "#/components/schemas/Flag", readOnly: true }
      responses: { "200": { description: ok } }
components:
  schemas:
    Id: { type: string }
    Flag: { type: boolean }
"##,
        );
    }
}
