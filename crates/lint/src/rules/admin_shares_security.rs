use super::{Finding, Rule, Severity};
use crate::node::Node;
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "authz-admin-shares-security",
    owasp: "API5:2023",
    cwe: 285,
    title: "Admin operation with a normal user's security",
    severity: Severity::High,
    strict_only: false,
    fix: "Give administrative operations their own requirement (an admin scope or role) and enforce it (in the API, or with a role rule in the gateway).",
    explain: "When an admin operation accepts exactly what every user's operations accept (the same scheme, no extra scope), nothing in the contract keeps a normal user out: broken function-level authorization (BFLA) is one forgotten check away.",
    check,
};

/// The requirement as a comparable value: (scheme, sorted scopes) per alternative.
fn requirement(sec: Option<&Node>) -> Vec<Vec<(String, Vec<String>)>> {
    let mut out: Vec<Vec<(String, Vec<String>)>> = sec
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .map(|req| {
            let mut r: Vec<(String, Vec<String>)> = req
                .entries()
                .iter()
                .map(|(k, scopes)| {
                    let mut s: Vec<String> = scopes
                        .items()
                        .iter()
                        .filter_map(Node::as_str)
                        .map(str::to_owned)
                        .collect();
                    s.sort();
                    (k.name.clone(), s)
                })
                .collect();
            r.sort();
            r
        })
        .collect();
    out.sort();
    out
}

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    let user_reqs: Vec<_> = spec
        .ops
        .iter()
        .filter(|o| !o.is_admin() && o.is_secured())
        .map(|o| requirement(o.security))
        .collect();
    for op in spec.ops.iter().filter(|o| o.is_admin() && o.is_secured()) {
        let mine = requirement(op.security);
        let role_rule = op.node.get("x-portcullis-roles").is_some();
        if !role_rule && user_reqs.contains(&mine) {
            out.push(Finding::new(
                &RULE,
                op.at,
                format!(
                    "admin operation `{}` accepts the same credentials as user operations",
                    op.label()
                ),
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
security: [{ oauth: [read] }]
paths:
  /me:
    get:
      responses: { "200": { description: ok } }
  /admin/users:
    get: # expect: authz-admin-shares-security
      responses: { "200": { description: ok } }
    delete:
      security: [{ oauth: [admin] }]
      responses: { "204": { description: ok } }
  /reports:
    post: # expect: authz-admin-shares-security
      tags: [Administration]
      responses: { "201": { description: ok } }
  /stats:
    get:
      operationId: adminStats
      x-portcullis-roles: [admin]
      responses: { "200": { description: ok } }
  /audit:
    get: # expect: authz-admin-shares-security
      operationId: listAdminEvents
      responses: { "200": { description: ok } }
  /meetings/{id}/minutes:
    get:
      operationId: readMinutes
      responses: { "200": { description: ok } }
components:
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials: { tokenUrl: https://id.example/token, scopes: { read: r, admin: a } }
"##,
        );
    }
}
