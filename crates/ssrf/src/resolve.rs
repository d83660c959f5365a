//! Name resolution, injectable so that checks can be tested (and pinned) without real DNS.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// The future a [`Resolve`] implementation returns.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves a host name to socket addresses.
///
/// [`Checker::check`](crate::Checker::check) calls it once per URL whose host is a name (never
/// for an IP literal) and judges every address it returns.
pub trait Resolve: Send + Sync {
    /// Resolves `host` (as the URL spells it, after the URL parser's normalisation) with `port`.
    /// An empty list counts as unresolvable.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a>;
}

impl<T: Resolve + ?Sized> Resolve for Arc<T> {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        (**self).resolve(host, port)
    }
}

impl<T: Resolve + ?Sized> Resolve for Box<T> {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        (**self).resolve(host, port)
    }
}

/// The system resolver, through [`tokio::net::lookup_host`] (`getaddrinfo` on a blocking
/// thread). It has no timeout of its own: wrap the check in `tokio::time::timeout` where a slow
/// name must not hold a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A fixed map from host names to addresses: for tests, and for pinning names to known
/// addresses. Names are compared case-insensitively and without a trailing dot; a name that is
/// not in the map fails with [`io::ErrorKind::NotFound`].
///
/// ```
/// use portcullis_ssrf::StaticResolver;
///
/// let resolver = StaticResolver::new()
///     .with("images.example", ["93.184.215.14".parse().unwrap()])
///     .with("metadata.google.internal", ["169.254.169.254".parse().unwrap()]);
/// assert!(resolver.get("IMAGES.example.").is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    map: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty map: every name fails to resolve.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `host` to `addrs`, replacing any earlier entry.
    #[must_use]
    pub fn with(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.insert(host, addrs);
        self
    }

    /// Maps `host` to `addrs`, replacing any earlier entry.
    pub fn insert(&mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> &mut Self {
        self.map.insert(key(host), addrs.into_iter().collect());
        self
    }

    /// The addresses `host` maps to.
    #[must_use]
    pub fn get(&self, host: &str) -> Option<&[IpAddr]> {
        self.map.get(&key(host)).map(Vec::as_slice)
    }
}

impl<S: AsRef<str>, A: IntoIterator<Item = IpAddr>> FromIterator<(S, A)> for StaticResolver {
    fn from_iter<I: IntoIterator<Item = (S, A)>>(iter: I) -> Self {
        let mut r = Self::new();
        for (host, addrs) in iter {
            r.insert(host.as_ref(), addrs);
        }
        r
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        let found = self
            .get(host)
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name not in the static map"));
        Box::pin(std::future::ready(found))
    }
}

fn key(host: &str) -> String {
    crate::policy::normalise_host(host)
}
