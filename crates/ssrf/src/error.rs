//! Why a URL was refused.

use std::net::IpAddr;

/// Why a URL was refused.
///
/// The [`Display`](std::fmt::Display) text is short, stable and safe to send to the client that
/// supplied the URL: it never echoes the URL, the host or a resolved address (the address in
/// [`Blocked::ForbiddenAddress`] is for logs only, since telling a client what an internal name
/// resolves to is itself a leak). [`Blocked::reason`] gives a stable label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Blocked {
    /// Not an absolute URL, or spelled in a way URL parsers disagree on: a backslash, a control
    /// character or whitespace anywhere in it, or a host not introduced by exactly `://`
    /// (`https:/evil.example`, `https:///evil.example`).
    #[error("not a valid URL")]
    InvalidUrl,
    /// The scheme is not one of [`Policy::schemes`](crate::Policy::schemes).
    #[error("this URL scheme is not allowed")]
    Scheme,
    /// The URL carries a user name or password (`https://allowed.example@evil.example/`).
    #[error("credentials in the URL are not allowed")]
    Credentials,
    /// The URL has no host (`file:///etc/passwd`).
    #[error("the URL has no host")]
    NoHost,
    /// The host is on [`Policy::deny_hosts`](crate::Policy::deny_hosts), or
    /// [`Policy::allow_hosts`](crate::Policy::allow_hosts) is not empty and does not list it.
    #[error("this host is not allowed")]
    HostNotAllowed,
    /// The port is not one of [`Policy::allowed_ports`](crate::Policy::allowed_ports), or the
    /// scheme has no default port and the URL names none.
    #[error("this port is not allowed")]
    Port,
    /// The host is, or resolves to, an address [`is_forbidden`](crate::is_forbidden) refuses.
    /// The address is the first offending one (for a `localhost` name, `127.0.0.1`).
    #[error("the host is or resolves to a non-public address")]
    ForbiddenAddress(IpAddr),
    /// The host name does not resolve, or resolves to no address.
    #[error("the host does not resolve")]
    Unresolvable,
}

impl Blocked {
    /// A short, stable, lower-case label for metrics and logs: `invalid_url`, `scheme`,
    /// `credentials`, `no_host`, `host_not_allowed`, `port`, `forbidden_address` or
    /// `unresolvable`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl => "invalid_url",
            Self::Scheme => "scheme",
            Self::Credentials => "credentials",
            Self::NoHost => "no_host",
            Self::HostNotAllowed => "host_not_allowed",
            Self::Port => "port",
            Self::ForbiddenAddress(_) => "forbidden_address",
            Self::Unresolvable => "unresolvable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn reasons_are_distinct_and_display_hides_the_address() {
        let all = [
            Blocked::InvalidUrl,
            Blocked::Scheme,
            Blocked::Credentials,
            Blocked::NoHost,
            Blocked::HostNotAllowed,
            Blocked::Port,
            Blocked::ForbiddenAddress(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
            Blocked::Unresolvable,
        ];
        let reasons: std::collections::HashSet<_> = all.iter().map(Blocked::reason).collect();
        assert_eq!(reasons.len(), all.len());
        for b in all {
            let r = b.reason();
            assert!(
                r.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'),
                "{r}"
            );
            assert!(!b.to_string().contains("10.1.2.3"));
        }
    }
}
