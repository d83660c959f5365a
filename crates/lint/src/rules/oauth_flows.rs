use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "auth-oauth-flow",
    owasp: "API2:2023",
    cwe: 287,
    title: "Deprecated OAuth 2 flow",
    severity: Severity::High,
    strict_only: false,
    fix: "Use the authorization code flow with PKCE (and client credentials between services); drop the implicit and password flows.",
    explain: "The OAuth 2.0 Security Best Current Practice (RFC 9700) forbids the implicit flow (tokens in URLs) and the resource owner password flow (the client sees the password). Flows without a refresh URL force long-lived access tokens.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for (name, _, scheme) in spec.schemes() {
        if scheme.str_of("type") != Some("oauth2") {
            continue;
        }
        for (flow, body) in scheme.get("flows").map(|f| f.entries()).unwrap_or_default() {
            match flow.name.as_str() {
                "implicit" | "password" => out.push(Finding::new(
                    &RULE,
                    flow.pos,
                    format!("OAuth scheme `{name}` offers the `{}` flow", flow.name),
                )),
                "authorizationCode" if body.get("refreshUrl").is_none() => out.push(
                    Finding::new(
                        &RULE,
                        flow.pos,
                        format!("OAuth scheme `{name}` has no `refreshUrl`: access tokens must live long"),
                    )
                    .with_severity(Severity::Low),
                ),
                _ => {}
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
paths: {}
components:
  securitySchemes:
    old:
      type: oauth2
      flows:
        implicit: # expect: auth-oauth-flow
          authorizationUrl: https://id.example/auth
          scopes: {}
        password: # expect: auth-oauth-flow
          tokenUrl: https://id.example/token
          scopes: {}
    half:
      type: oauth2
      flows:
        authorizationCode: # expect: auth-oauth-flow
          authorizationUrl: https://id.example/auth
          tokenUrl: https://id.example/token
          scopes: {}
    good:
      type: oauth2
      flows:
        authorizationCode:
          authorizationUrl: https://id.example/auth
          tokenUrl: https://id.example/token
          refreshUrl: https://id.example/token
          scopes: {}
        clientCredentials:
          tokenUrl: https://id.example/token
          scopes: {}
"##,
        );
    }
}
