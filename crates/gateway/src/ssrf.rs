//! The SSRF phase (API7): the URL-valued fields of a request body (declared in the policy or
//! marked in the description) are checked with [`portcullis_ssrf`] before the request is
//! forwarded: scheme and host lists, then every address the host resolves to. A refused URL
//! is a 422 naming the field and the rule, never the URL; nothing is forwarded, so the
//! upstream never fetches it.
//!
//! The gateway cannot pin the upstream's own lookup: a name that resolves to a public address
//! here and to an internal one a moment later at the upstream (DNS rebinding) is the
//! upstream's to stop, with the same library's pinned resolver (`portcullis-ssrf`, feature
//! `reqwest`), as the demo shop does.

use std::time::Duration;

use portcullis_guard::Rejection;
use portcullis_ssrf::{Checker, Resolve, Resolving, StaticResolver, SystemResolver};

/// Names from the policy's `ssrf.hosts` table first, the system's resolver otherwise.
#[derive(Debug)]
pub struct PolicyResolver {
    table: StaticResolver,
    system: SystemResolver,
}

impl Resolve for PolicyResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        if self.table.get(host).is_some() {
            self.table.resolve(host, port)
        } else {
            self.system.resolve(host, port)
        }
    }
}

/// The compiled guard of one policy.
#[derive(Debug)]
pub struct Guard {
    checker: Checker<PolicyResolver>,
    fields: Vec<Vec<String>>,
}

/// URLs one request may carry: each may need a lookup.
const MAX_URLS: usize = 16;

/// Longest wait for a name to resolve before the URL is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

impl Guard {
    pub fn new(cfg: &portcullis_policy::Ssrf) -> Self {
        let mut table = StaticResolver::new();
        for (name, addrs) in &cfg.hosts {
            table.insert(name, addrs.iter().copied());
        }
        let policy = portcullis_ssrf::Policy {
            schemes: cfg.schemes.clone(),
            allow_hosts: cfg.allow_hosts.clone(),
            deny_hosts: cfg.deny_hosts.clone(),
            ..portcullis_ssrf::Policy::default()
        };
        Self {
            checker: Checker::with_resolver(
                &policy,
                PolicyResolver {
                    table,
                    system: SystemResolver,
                },
            ),
            fields: cfg.fields.clone(),
        }
    }

    /// Whether the route has URL fields to check (and so needs its body read).
    pub fn guards(&self, route: usize) -> bool {
        self.fields.get(route).is_some_and(|f| !f.is_empty())
    }

    /// Checks every URL field of a JSON body. A body that is not JSON is left to validation.
    pub async fn check(&self, route: usize, body: &[u8]) -> Result<(), Rejection> {
        let Some(fields) = self.fields.get(route) else {
            return Ok(());
        };
        if body.is_empty() {
            return Ok(());
        }
        // A guarded route takes JSON: another body could carry a URL this phase cannot see.
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Err(Rejection::UnsupportedMediaType);
        };
        let mut checked = 0usize;
        for pattern in fields {
            let mut found = Vec::new();
            collect(&json, pattern, String::new(), &mut found);
            for (pointer, url) in found {
                checked += 1;
                if checked > MAX_URLS {
                    return Err(Rejection::UnsafeUrl(format!(
                        "{pointer}: more than {MAX_URLS} URLs in one request"
                    )));
                }
                let verdict = tokio::time::timeout(RESOLVE_TIMEOUT, self.checker.check(url)).await;
                let reason = match verdict {
                    Ok(Ok(_)) => continue,
                    Ok(Err(b)) => b.reason(),
                    Err(_) => "unresolvable",
                };
                tracing::warn!(target: "portcullis::ssrf", field = %pointer, reason, "URL refused before forwarding");
                return Err(Rejection::UnsafeUrl(format!(
                    "{pointer}: {}",
                    match reason {
                        "scheme" => "this URL scheme is not allowed",
                        "credentials" => "credentials in a URL are not allowed",
                        "host_not_allowed" => "this host is not allowed",
                        "port" => "this port is not allowed",
                        "forbidden_address" => "the host is or resolves to a non-public address",
                        "unresolvable" => "the host does not resolve",
                        _ => "not a valid URL",
                    }
                )));
            }
        }
        Ok(())
    }
}

/// The string values at `pattern` (a JSON pointer where `*` stands for every array item),
/// with their concrete pointers.
fn collect<'a>(
    v: &'a serde_json::Value,
    pattern: &str,
    at: String,
    out: &mut Vec<(String, &'a str)>,
) {
    let Some(rest) = pattern.strip_prefix('/') else {
        if let Some(s) = v.as_str() {
            out.push((if at.is_empty() { "/".into() } else { at }, s));
        }
        return;
    };
    let (head, tail) = rest.split_once('/').map_or((rest, ""), |(h, t)| (h, t));
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!("/{tail}")
    };
    match (head, v) {
        ("*", serde_json::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, &tail, format!("{at}/{i}"), out);
            }
        }
        ("*", serde_json::Value::Object(map)) => {
            for (k, item) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect(item, &tail, format!("{at}/{k}"), out);
            }
        }
        (name, serde_json::Value::Object(map)) => {
            let key = name.replace("~1", "/").replace("~0", "~");
            if let Some(next) = map.get(&key) {
                collect(next, &tail, format!("{at}/{name}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_reach_every_array_item() {
        let body = serde_json::json!({ "hooks": [ { "url": "a" }, { "url": "b" }, { "x": 1 } ], "u": "c" });
        let mut out = Vec::new();
        collect(&body, "/hooks/*/url", String::new(), &mut out);
        assert_eq!(
            out,
            [
                ("/hooks/0/url".to_owned(), "a"),
                ("/hooks/1/url".to_owned(), "b")
            ]
        );
        let mut out = Vec::new();
        collect(&body, "/u", String::new(), &mut out);
        assert_eq!(out, [("/u".to_owned(), "c")]);
    }
}
