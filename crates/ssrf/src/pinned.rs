//! A `reqwest` resolver that refuses names resolving to forbidden addresses.

use std::fmt;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolving};

use crate::check::resolve_public;
use crate::{Checker, Resolve, SystemResolver};

/// A [`reqwest::dns::Resolve`] that resolves through a checker's resolver and fails if any
/// address is forbidden (or if there is none), so that a name which passed
/// [`Checker::check`] but resolves to a private address by the time the client connects (DNS
/// rebinding) still cannot be reached.
///
/// `reqwest` does not consult its resolver for IP-literal hosts, and a proxy or a redirect
/// would take the connection elsewhere: fetch only URLs that passed [`Checker::check`], and
/// give the client `.no_proxy()` and `redirect::Policy::none()` (or check each redirect
/// target).
///
/// ```
/// use portcullis_ssrf::{Checker, Policy};
///
/// let checker = Checker::new(&Policy::default());
/// let client = reqwest::Client::builder()
///     .no_proxy()
///     .redirect(reqwest::redirect::Policy::none())
///     .dns_resolver(checker.pinned_resolver())
///     .build()
///     .expect("client builds");
/// # drop(client);
/// ```
pub struct PinnedResolver<R = SystemResolver> {
    resolver: Arc<R>,
}

impl<R: Resolve + 'static> Checker<R> {
    /// A `reqwest` resolver over this checker's resolver.
    #[must_use]
    pub fn pinned_resolver(&self) -> PinnedResolver<R> {
        PinnedResolver::new(Arc::clone(self.resolver()))
    }
}

impl<R: Resolve + 'static> PinnedResolver<R> {
    /// A `reqwest` resolver over `resolver`.
    #[must_use]
    pub fn new(resolver: Arc<R>) -> Self {
        Self { resolver }
    }
}

impl<R: Resolve + 'static> reqwest::dns::Resolve for PinnedResolver<R> {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = Arc::clone(&self.resolver);
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's port.
            let addrs = resolve_public(&*resolver, name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl<R> Clone for PinnedResolver<R> {
    fn clone(&self) -> Self {
        Self {
            resolver: Arc::clone(&self.resolver),
        }
    }
}

impl<R> fmt::Debug for PinnedResolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedResolver")
            .field("resolver", &std::any::type_name::<R>())
            .finish()
    }
}
