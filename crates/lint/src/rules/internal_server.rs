use super::http_server::{host_of, loopback, servers};
use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "inventory-internal-server",
    owasp: "API9:2023",
    cwe: 1059,
    title: "Internal or non-production server in the description",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Publish only production servers; keep staging and internal hosts out of the public description (or in a separate one).",
    explain: "Staging, test and internal hosts in a public description map the attack surface for free: they run older code, weaker settings and real data more often than anyone admits.",
    check,
};

const WORDS: &[&str] = &[
    "internal", "staging", "stage", "dev", "develop", "test", "qa", "uat", "sandbox", "preprod",
    "corp", "intranet", "local",
];

fn private(host: &str) -> bool {
    let o: Vec<u8> = host.split('.').filter_map(|p| p.parse().ok()).collect();
    matches!(o.as_slice(), [10, _, _, _] | [192, 168, _, _])
        || matches!(o.as_slice(), [172, b, _, _] if (16..32).contains(b))
}

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for s in servers(spec.root) {
        let Some(url) = s.str_of("url") else { continue };
        let host = host_of(url).to_ascii_lowercase();
        if loopback(&host) {
            continue;
        }
        let named = host.split(['.', '-']).any(|w| WORDS.contains(&w));
        if named || private(&host) {
            out.push(Finding::new(
                &RULE,
                s.get("url").map_or(s.pos, |u| u.pos),
                format!("server `{url}` looks internal or non-production"),
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
servers:
  - url: https://api.example.com
  - url: https://staging-api.example.com # expect: inventory-internal-server
  - url: https://10.2.3.4:8443 # expect: inventory-internal-server
  - url: https://api.internal.example.com # expect: inventory-internal-server
  - url: http://127.0.0.1:8081
  - url: https://latest.example.com
paths: {}
"##,
        );
    }
}
