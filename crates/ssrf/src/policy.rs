//! What a URL may name.

use std::net::IpAddr;

use url::Host;

/// The rules a URL must meet, besides naming only public addresses (which is not optional).
///
/// Host patterns are exact names (`images.example`), suffix wildcards (`*.example.com`, which
/// matches `a.example.com` and `a.b.example.com` but not `example.com` itself) or IP literals
/// (`93.184.215.14`, `[2606:4700::1111]`). Patterns and hosts are compared after the URL
/// parser's normalisation (IDNA, so `Bücher.example` matches `xn--bcher-kva.example`),
/// lower-casing and trimming trailing dots. Listing a host never lets a URL reach a forbidden
/// address: `localhost` on [`allow_hosts`](Self::allow_hosts) still resolves to loopback and is
/// refused.
///
/// ```
/// use portcullis_ssrf::Policy;
///
/// let policy = Policy {
///     allow_hosts: vec!["images.example".into(), "*.cdn.example".into()],
///     allowed_ports: Some(vec![443]),
///     ..Policy::default()
/// };
/// assert_eq!(policy.schemes, ["https"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Schemes a URL may use, compared case-insensitively. Default: `["https"]`.
    pub schemes: Vec<String>,
    /// Hosts a URL may name. Empty (the default): any host, as long as it is public.
    pub allow_hosts: Vec<String>,
    /// Hosts a URL may not name, checked before [`allow_hosts`](Self::allow_hosts).
    pub deny_hosts: Vec<String>,
    /// Ports a URL may name (explicitly or as the scheme's default). `None` (the default): any.
    pub allowed_ports: Option<Vec<u16>>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            schemes: vec!["https".into()],
            allow_hosts: Vec::new(),
            deny_hosts: Vec::new(),
            allowed_ports: None,
        }
    }
}

/// A [`Policy`] normalised once, for cheap checks.
#[derive(Debug)]
pub(crate) struct Rules {
    schemes: Vec<String>,
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    ports: Option<Vec<u16>>,
}

impl Rules {
    pub(crate) fn new(policy: &Policy) -> Self {
        Self {
            schemes: policy
                .schemes
                .iter()
                .map(|s| s.trim().trim_end_matches(':').to_ascii_lowercase())
                .collect(),
            allow: policy.allow_hosts.iter().map(|p| Pattern::new(p)).collect(),
            deny: policy.deny_hosts.iter().map(|p| Pattern::new(p)).collect(),
            ports: policy.allowed_ports.clone(),
        }
    }

    /// `scheme` comes lower-cased from the URL parser.
    pub(crate) fn scheme_allowed(&self, scheme: &str) -> bool {
        self.schemes.iter().any(|s| s == scheme)
    }

    pub(crate) fn host_allowed(&self, host: HostRef<'_>) -> bool {
        !self.deny.iter().any(|p| p.matches(host))
            && (self.allow.is_empty() || self.allow.iter().any(|p| p.matches(host)))
    }

    pub(crate) fn port_allowed(&self, port: u16) -> bool {
        self.ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port))
    }
}

/// A URL's host, as patterns are matched against it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HostRef<'a> {
    /// Lower-case (as the URL parser leaves it), without trailing dots.
    Name(&'a str),
    Ip(IpAddr),
}

#[derive(Debug)]
enum Pattern {
    /// A lower-case name without trailing dots.
    Exact(String),
    /// The suffix with its leading dot: `.example.com` for `*.example.com`. Matches names only.
    Suffix(String),
    Ip(IpAddr),
}

impl Pattern {
    fn new(pattern: &str) -> Self {
        let pattern = pattern.trim();
        match pattern.strip_prefix("*.") {
            Some(rest) => match canonical_host(rest) {
                Self::Exact(name) => Self::Suffix(format!(".{name}")),
                // `*.` before an address: no host the URL parser accepts ends in it.
                _ => Self::Suffix(format!(".{}", normalise_host(rest))),
            },
            None => canonical_host(pattern),
        }
    }

    fn matches(&self, host: HostRef<'_>) -> bool {
        match (self, host) {
            (Self::Exact(name), HostRef::Name(host)) => host == name,
            (Self::Suffix(suffix), HostRef::Name(host)) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            (Self::Ip(ip), HostRef::Ip(host)) => *ip == host,
            _ => false,
        }
    }
}

/// A pattern in the form hosts are compared in: parsed like a URL host where possible (IDNA,
/// IPv4 spellings, brackets around IPv6), else merely lower-cased.
fn canonical_host(pattern: &str) -> Pattern {
    match Host::parse(pattern) {
        Ok(Host::Domain(d)) => Pattern::Exact(normalise_host(&d)),
        Ok(Host::Ipv4(ip)) => Pattern::Ip(IpAddr::V4(ip)),
        Ok(Host::Ipv6(ip)) => Pattern::Ip(IpAddr::V6(ip)),
        Err(_) => match pattern.parse::<IpAddr>() {
            Ok(ip) => Pattern::Ip(ip),
            Err(_) => Pattern::Exact(normalise_host(pattern)),
        },
    }
}

/// Host names compare lower-cased and without trailing dots.
pub(crate) fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Rules {
        fn allows(&self, host: &str) -> bool {
            self.host_allowed(match host.parse() {
                Ok(ip) => HostRef::Ip(ip),
                Err(_) => HostRef::Name(host),
            })
        }
    }

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        Rules::new(&Policy {
            allow_hosts: allow.iter().map(|s| s.to_string()).collect(),
            deny_hosts: deny.iter().map(|s| s.to_string()).collect(),
            ..Policy::default()
        })
    }

    #[test]
    fn exact_and_wildcard_patterns() {
        let r = rules(&["Images.Example.", "*.CDN.example", "93.184.215.14"], &[]);
        assert!(r.allows("images.example"));
        assert!(r.allows("a.cdn.example"));
        assert!(r.allows("a.b.cdn.example"));
        assert!(r.allows("93.184.215.14"));
        assert!(!r.allows("93.184.215.15"));
        assert!(!r.allows("cdn.example"));
        assert!(!r.allows("evilcdn.example"));
        assert!(!r.allows("images.example.evil"));
        assert!(!r.allows("x.images.example"));
    }

    #[test]
    fn deny_wins_and_empty_allow_means_any() {
        let r = rules(&[], &["*.internal.example", "blocked.example"]);
        assert!(r.allows("anything.example"));
        assert!(!r.allows("a.internal.example"));
        assert!(!r.allows("blocked.example"));
        let r = rules(&["*.example"], &["secret.example"]);
        assert!(r.allows("public.example"));
        assert!(!r.allows("secret.example"));
    }

    #[test]
    fn patterns_are_canonicalised_like_hosts() {
        let r = rules(&["Bücher.example", "[2606:4700::1111]", "0x5db8d70e"], &[]);
        assert!(r.allows("xn--bcher-kva.example"));
        assert!(r.allows("2606:4700::1111"));
        assert!(r.allows("93.184.215.14"));
    }

    #[test]
    fn schemes_and_ports() {
        let r = Rules::new(&Policy {
            schemes: vec!["HTTPS".into(), "http:".into()],
            allowed_ports: Some(vec![443, 8443]),
            ..Policy::default()
        });
        assert!(r.scheme_allowed("https") && r.scheme_allowed("http"));
        assert!(!r.scheme_allowed("ftp"));
        assert!(r.port_allowed(8443) && !r.port_allowed(80));
        assert!(Rules::new(&Policy::default()).port_allowed(1));
    }
}
