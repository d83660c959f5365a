//! The checker: policy and address checks on a URL, then on what its host resolves to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

use crate::policy::{HostRef, Rules};
use crate::{Blocked, Policy, Resolve, SystemResolver, is_forbidden};

/// A URL that passed every check, with the addresses its host resolved to (each with the URL's
/// port). Fetch `url` (not the raw string the client sent) and, to rule out DNS rebinding,
/// connect only to `addrs` or through a resolver that filters again, such as
/// `PinnedResolver` (feature `reqwest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The parsed, normalised URL.
    pub url: Url,
    /// Every address the host resolved to, all of them public; never empty.
    pub addrs: Vec<SocketAddr>,
}

/// Checks client-supplied URLs against a [`Policy`] and refuses every non-public address.
///
/// Cheap to clone (two `Arc`s) and safe to share between tasks.
pub struct Checker<R = SystemResolver> {
    rules: Arc<Rules>,
    resolver: Arc<R>,
}

/// What [`Checker::check_url`] found the URL to point at.
enum Target {
    /// An IP literal: nothing to resolve.
    Ip(IpAddr),
    /// A host name, as it is to be resolved.
    Name(String),
}

impl Checker<SystemResolver> {
    /// A checker that resolves names with the system resolver.
    #[must_use]
    pub fn new(policy: &Policy) -> Self {
        Self::with_resolver(policy, SystemResolver)
    }
}

impl<R> Checker<R> {
    /// A checker that resolves names with `resolver`.
    #[must_use]
    pub fn with_resolver(policy: &Policy, resolver: R) -> Self {
        Self::with_shared_resolver(policy, Arc::new(resolver))
    }

    /// A checker that resolves names with a resolver shared with other users.
    #[must_use]
    pub fn with_shared_resolver(policy: &Policy, resolver: Arc<R>) -> Self {
        Self {
            rules: Arc::new(Rules::new(policy)),
            resolver,
        }
    }

    /// The resolver names are resolved with.
    #[must_use]
    pub fn resolver(&self) -> &Arc<R> {
        &self.resolver
    }

    /// The synchronous checks, without name resolution: the URL parses and is spelled
    /// unambiguously, its scheme is allowed, it carries no credentials, it has a host, an IP
    /// literal host (in any spelling the URL parser accepts) is public, a `localhost` name is
    /// refused, the host is allowed, and so is the port.
    ///
    /// A URL that passes may still name a host that resolves to a private address: use
    /// [`check`](Self::check) before fetching.
    ///
    /// # Errors
    ///
    /// The first rule the URL breaks, in the order above.
    pub fn check_url(&self, raw: &str) -> Result<Url, Blocked> {
        self.inspect(raw).map(|(url, _, _)| url)
    }

    /// [`check_url`](Self::check_url), then resolves a host name through the resolver and
    /// refuses the URL if any address is forbidden: a name with one private address among
    /// public ones is refused whole. An IP literal host is not resolved. Nothing here connects
    /// anywhere.
    ///
    /// # Errors
    ///
    /// What [`check_url`](Self::check_url) refuses; [`Blocked::Unresolvable`] if the name does
    /// not resolve or resolves to nothing; [`Blocked::ForbiddenAddress`] with the first
    /// forbidden address it resolves to.
    pub async fn check(&self, raw: &str) -> Result<Checked, Blocked>
    where
        R: Resolve,
    {
        let (url, target, port) = self.inspect(raw)?;
        let addrs = match target {
            Target::Ip(ip) => vec![SocketAddr::new(ip, port)],
            Target::Name(host) => resolve_public(&*self.resolver, &host, port).await?,
        };
        Ok(Checked { url, addrs })
    }

    fn inspect(&self, raw: &str) -> Result<(Url, Target, u16), Blocked> {
        // The WHATWG parser reads `\` as `/` and drops tabs, newlines and surrounding spaces;
        // other parsers (the one behind the service a gateway forwards to, say) do not. A URL
        // that parsers could read differently is refused rather than guessed at.
        if raw
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
        {
            return Err(Blocked::InvalidUrl);
        }
        let url = Url::parse(raw).map_err(|_| Blocked::InvalidUrl)?;
        // Likewise `https:evil.example`, `https:/evil.example` and `https:///evil.example`,
        // which the WHATWG parser repairs into `https://evil.example/` and others need not.
        let authority = raw
            .get(url.scheme().len()..)
            .and_then(|rest| rest.strip_prefix("://"));
        if url.has_host() && authority.is_none_or(|a| a.starts_with('/')) {
            return Err(Blocked::InvalidUrl);
        }
        if !self.rules.scheme_allowed(url.scheme()) {
            return Err(Blocked::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Blocked::Credentials);
        }
        let host = match url.host() {
            None => return Err(Blocked::NoHost),
            Some(Host::Domain(d)) if is_special(url.scheme()) => Host::Domain(d.to_owned()),
            // A non-special scheme keeps its host opaque (no percent-decoding, IDNA or IPv4
            // parsing), but a resolver may still read `2130706433` as 127.0.0.1: judge the host
            // as an `http` URL's host would be.
            Some(Host::Domain(d)) => Host::parse(d).map_err(|_| Blocked::InvalidUrl)?,
            Some(Host::Ipv4(ip)) => Host::Ipv4(ip),
            Some(Host::Ipv6(ip)) => Host::Ipv6(ip),
        };
        let target = match host {
            Host::Ipv4(ip) => ip_target(IpAddr::V4(ip))?,
            Host::Ipv6(ip) => ip_target(IpAddr::V6(ip))?,
            Host::Domain(name) => {
                // The parser has lower-cased the name (and mapped it through IDNA).
                let key = name.trim_end_matches('.');
                if key.is_empty() {
                    return Err(Blocked::NoHost);
                }
                // RFC 6761: `localhost` and every name under it are loopback.
                if key == "localhost" || key.ends_with(".localhost") {
                    return Err(Blocked::ForbiddenAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
                }
                Target::Name(name)
            }
        };
        let key = match &target {
            Target::Ip(ip) => HostRef::Ip(*ip),
            Target::Name(name) => HostRef::Name(name.trim_end_matches('.')),
        };
        if !self.rules.host_allowed(key) {
            return Err(Blocked::HostNotAllowed);
        }
        let port = url.port_or_known_default().ok_or(Blocked::Port)?;
        if !self.rules.port_allowed(port) {
            return Err(Blocked::Port);
        }
        Ok((url, target, port))
    }
}

fn ip_target(ip: IpAddr) -> Result<Target, Blocked> {
    if is_forbidden(ip) {
        return Err(Blocked::ForbiddenAddress(ip));
    }
    Ok(Target::Ip(ip))
}

/// Schemes whose hosts the URL parser normalises (percent-decoding, IDNA, IPv4 spellings).
fn is_special(scheme: &str) -> bool {
    matches!(scheme, "http" | "https" | "ws" | "wss" | "ftp")
}

/// Resolves `host` and fails unless it resolves to at least one address and every address is
/// public. The addresses carry `port`.
pub(crate) async fn resolve_public<R: Resolve + ?Sized>(
    resolver: &R,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Blocked> {
    let mut addrs = resolver
        .resolve(host, port)
        .await
        .map_err(|_| Blocked::Unresolvable)?;
    if let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip())) {
        return Err(Blocked::ForbiddenAddress(bad.ip()));
    }
    if addrs.is_empty() {
        return Err(Blocked::Unresolvable);
    }
    for a in &mut addrs {
        a.set_port(port);
    }
    Ok(addrs)
}

impl<R> Clone for Checker<R> {
    fn clone(&self) -> Self {
        Self {
            rules: Arc::clone(&self.rules),
            resolver: Arc::clone(&self.resolver),
        }
    }
}

impl<R> fmt::Debug for Checker<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("rules", &self.rules)
            .field("resolver", &std::any::type_name::<R>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::StaticResolver;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn now<F: Future>(f: F) -> F::Output {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("a static lookup never waits"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolve_public_refuses_the_first_forbidden_address_and_empty_answers() {
        let r = StaticResolver::new()
            .with("a", [ip("1.1.1.1"), ip("10.0.0.1"), ip("127.0.0.1")])
            .with("b", [])
            .with("c", [ip("1.1.1.1")]);
        assert_eq!(
            now(resolve_public(&r, "a", 1)),
            Err(Blocked::ForbiddenAddress(ip("10.0.0.1")))
        );
        assert_eq!(now(resolve_public(&r, "b", 1)), Err(Blocked::Unresolvable));
        assert_eq!(now(resolve_public(&r, "d", 1)), Err(Blocked::Unresolvable));
        assert_eq!(
            now(resolve_public(&r, "c", 8443)),
            Ok(vec![SocketAddr::new(ip("1.1.1.1"), 8443)])
        );
    }

    #[test]
    fn checks_run_in_order() {
        let c = Checker::with_resolver(
            &Policy {
                allow_hosts: vec!["ok.example".into()],
                allowed_ports: Some(vec![443]),
                ..Policy::default()
            },
            StaticResolver::new(),
        );
        // Each URL breaks this rule and every later one.
        for (url, want) in [
            (r"http://u@10.0.0.1:1\", Blocked::InvalidUrl),
            ("http://u@10.0.0.1:1/", Blocked::Scheme),
            ("https://u@10.0.0.1:1/", Blocked::Credentials),
            (
                "https://10.0.0.1:1/",
                Blocked::ForbiddenAddress(ip("10.0.0.1")),
            ),
            ("https://other.example:1/", Blocked::HostNotAllowed),
            ("https://ok.example:1/", Blocked::Port),
        ] {
            assert_eq!(c.check_url(url), Err(want), "{url}");
        }
        assert_eq!(
            now(c.check("https://ok.example/")).unwrap_err(),
            Blocked::Unresolvable
        );
    }

    #[test]
    fn checks_are_send_and_the_checker_is_shareable() {
        fn send<T: Send>(_: &T) {}
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Checker>();
        shareable::<Checker<StaticResolver>>();
        shareable::<Checker<Arc<dyn Resolve>>>();
        let c = Checker::new(&Policy::default());
        let fut = c.check("https://127.0.0.1/");
        send(&fut);
        assert!(now(fut).is_err());
    }

    #[test]
    fn debug_does_not_require_a_debug_resolver() {
        struct Opaque;
        impl Resolve for Opaque {
            fn resolve<'a>(&'a self, _: &'a str, _: u16) -> crate::Resolving<'a> {
                Box::pin(std::future::ready(Ok(Vec::new())))
            }
        }
        let c = Checker::with_resolver(&Policy::default(), Opaque);
        assert!(format!("{c:?}").contains("Opaque"));
        assert_eq!(
            now(c.clone().check("https://a.example/")),
            Err(Blocked::Unresolvable)
        );
    }
}
