use super::{Finding, Rule, Severity};
use crate::node::Node;
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "config-http-server",
    owasp: "API8:2023",
    cwe: 319,
    title: "Server reachable over plain HTTP",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Serve the API over HTTPS only (`https://` servers), with HSTS.",
    explain: "A `http://` server sends tokens and data in clear text to anyone on the path. Loopback addresses (local development) are not flagged.",
    check,
};

pub(super) fn servers(root: &Node) -> Vec<&Node> {
    let mut out: Vec<&Node> = root
        .get("servers")
        .map(|s| s.items().iter().collect())
        .unwrap_or_default();
    for (_, item) in root.get("paths").map(Node::entries).unwrap_or_default() {
        out.extend(item.get("servers").map(Node::items).unwrap_or_default());
    }
    out
}

pub(super) fn host_of(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host.split(':').next().unwrap_or("")
}

pub(super) fn loopback(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host.starts_with("127.") || host == "::1"
}

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for s in servers(spec.root) {
        let Some(url) = s.str_of("url") else { continue };
        if url.to_ascii_lowercase().starts_with("http://") && !loopback(host_of(url)) {
            out.push(Finding::new(
                &RULE,
                s.get("url").map_or(s.pos, |u| u.pos),
                format!("server `{url}` is plain HTTP"),
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
  - url: http://api.example.com/v2 # expect: config-http-server
  - url: https://api.example.com/v2
  - url: http://127.0.0.1:8080
  - url: http://localhost:8080
paths: {}
"##,
        );
    }
}
