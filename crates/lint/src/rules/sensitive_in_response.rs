use super::{Finding, Rule, Severity};
use crate::spec::{Spec, walk};

pub(super) static RULE: Rule = Rule {
    id: "property-sensitive-in-response",
    owasp: "API3:2023",
    cwe: 213,
    title: "Sensitive property in a response",
    severity: Severity::High,
    strict_only: false,
    fix: "Remove the property from the response schema and from what the server serialises (never return password hashes or secrets; mask card numbers).",
    explain: "Responses that declare password hashes, secrets, private keys, social security or card numbers hand them to every client that can call the operation (excessive data exposure). Tokens are expected only from the operations that issue them (login, refresh).",
    check,
};

const SENSITIVE: &[&str] = &[
    "password",
    "password_hash",
    "passwordhash",
    "hashed_password",
    "passwd",
    "secret",
    "client_secret",
    "api_secret",
    "private_key",
    "privatekey",
    "ssn",
    "social_security_number",
    "card_number",
    "cardnumber",
    "credit_card",
    "cvv",
    "cvc",
    "otp_secret",
    "totp_secret",
    "mfa_secret",
    "salt",
];

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        for (code, _, schema) in &op.responses {
            let Some(s) = schema else {
                continue;
            };
            if !code.starts_with('2') {
                continue;
            }
            walk(spec.files, s, &mut |v| {
                let Some(p) = v.property else {
                    return;
                };
                if v.write_only {
                    return;
                }
                if super::named(p, SENSITIVE) {
                    out.push(Finding::new(
                        &RULE,
                        v.at,
                        format!("`{p}` is returned by `{}`", op.label()),
                    ));
                }
            });
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
  /users/{id}:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { $ref: "#/components/schemas/User" }
  /login:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                password: { type: string }
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema:
                type: object
                properties:
                  access_token: { type: string }
components:
  schemas:
    User:
      type: object
      properties:
        name: { type: string }
        password_hash: { type: string } # expect: property-sensitive-in-response
        password: { type: string, writeOnly: true }
        secret: { $ref: "#/components/schemas/Text", writeOnly: true }
        client_secret: { writeOnly: true, allOf: [{ $ref: "#/components/schemas/Text" }] }
    Text: { type: string }
"##,
        );
    }
}
