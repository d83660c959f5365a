//! A policy compiled for serving: everything a request needs, precomputed, swapped atomically
//! on reload. In-flight requests keep the runtime they started with.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use portcullis_guard::respond::Hardening;
use portcullis_policy::Policy;

use crate::metrics::{Metrics, RouteMetrics};

/// The per-policy state of the gateway.
#[derive(Debug)]
pub struct Runtime {
    pub policy: Policy,
    /// The policy's limits, shared with every connection accepted under this policy.
    pub limits: Arc<portcullis_policy::Limits>,
    /// `Deprecation`/`Sunset`/`Link` per version, in [`Policy::inventory`] version order.
    pub version_headers: Vec<Vec<(HeaderName, HeaderValue)>>,
    /// The response rules of each route: the global rules with the route's override applied.
    pub route_rules: Vec<Arc<RespondRules>>,
    pub default_rules: Arc<RespondRules>,
    /// Metric handles (and log labels) per route, resolved once per policy.
    pub route_metrics: Vec<RouteMetrics>,
    pub unmatched: RouteMetrics,
    /// The token verifier, when the policy has `auth`.
    pub verifier: Option<portcullis_guard::jwt::Verifier>,
    /// The rate limits (their counters live in the local limiter or Redis, and outlast a
    /// reload while a rule stays the same).
    pub rate_limits: crate::ratelimit::RateLimits,
    /// The SSRF guard, when the policy has `ssrf`.
    pub ssrf: Option<crate::ssrf::Guard>,
    /// Request body validators, compiled on first use.
    pub validators: crate::validate::Validators,
    /// The provider's key set, when the policy names a JWKS.
    pub jwks: Option<Arc<crate::jwks::JwksCache>>,
}

/// A route's response rules, and whether the respond phase applies them (again) to an
/// upstream answer whose map already started from them.
#[derive(Debug)]
pub struct RespondRules {
    pub hardening: Hardening,
    /// The rules name a field the gateway adds after the upstream's head is read (rate-limit
    /// headroom, CORS): applied once more, last, they keep the last word.
    pub again: bool,
}

impl RespondRules {
    fn new(rules: portcullis_policy::model::HeaderRules) -> Self {
        let hardening = Hardening::new(rules);
        let again = hardening.names().any(|n| {
            matches!(
                n,
                "ratelimit" | "ratelimit-policy" | "vary" | "deprecation" | "sunset" | "link"
            ) || n.starts_with("access-control-")
        });
        Self { hardening, again }
    }
}

impl Runtime {
    /// The response rules of a route (the global ones for an answer with no route).
    pub fn respond_rules(&self, route: Option<portcullis_policy::RouteId>) -> &RespondRules {
        route
            .and_then(|r| self.route_rules.get(r))
            .unwrap_or(&self.default_rules)
    }

    /// Fails when something in the policy cannot be used (a malformed PEM, a schema that does
    /// not compile): the policy key, and why.
    pub fn new(policy: Policy, metrics: &Metrics) -> Result<Self, (&'static str, String)> {
        let version_headers = policy
            .inventory
            .versions
            .iter()
            .map(portcullis_guard::respond::version_headers)
            .collect();
        let default_rules = Arc::new(RespondRules::new(policy.headers.all.clone()));
        let route_rules = (0..policy.inventory.len())
            .map(|id| match policy.headers.for_route(id) {
                None => default_rules.clone(),
                Some(over) => {
                    let mut merged = policy.headers.all.clone();
                    merged.set.retain(|(n, _)| {
                        !over.set.iter().any(|(o, _)| o == n) && !over.remove.contains(n)
                    });
                    merged.set.extend(over.set.iter().cloned());
                    merged.remove.extend(over.remove.iter().cloned());
                    Arc::new(RespondRules::new(merged))
                }
            })
            .collect();
        let route_metrics = policy
            .inventory
            .routes
            .iter()
            .map(|r| metrics.route(Arc::from(r.template.as_str())))
            .collect();
        let verifier = policy
            .auth
            .as_ref()
            .map(|a| portcullis_guard::jwt::Verifier::new(&a.jwt))
            .transpose()
            .map_err(|e| ("auth.jwt.keys", e))?;
        let jwks = policy
            .auth
            .as_ref()
            .and_then(|a| a.jwt.jwks.clone())
            .map(|src| crate::jwks::JwksCache::new(src).map(Arc::new))
            .transpose()
            .map_err(|e| ("auth.jwt.jwks", e))?;
        let validators = crate::validate::Validators::new(
            policy.openapi_doc.clone(),
            policy.inventory.len(),
            policy.default_bounds,
        );
        validators
            .precompile(&policy.inventory.routes)
            .map_err(|e| ("openapi", e))?;
        let rate_limits = crate::ratelimit::RateLimits::new(&policy);
        let ssrf = policy.ssrf.as_ref().map(crate::ssrf::Guard::new);
        Ok(Self {
            limits: Arc::new(policy.limits.clone()),
            ssrf,
            rate_limits,
            validators,
            jwks,
            verifier,
            policy,
            version_headers,
            route_rules,
            default_rules,
            route_metrics,
            unmatched: metrics.route(Arc::from("-")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::model::HeaderRules;

    /// Rules naming a field the gateway adds after the upstream's head (CORS, `Vary`,
    /// rate-limit headroom) are applied again at the end; others once, at the start.
    #[test]
    fn rules_naming_late_fields_apply_again() {
        let rules = |name: &'static str| {
            RespondRules::new(HeaderRules {
                set: vec![(HeaderName::from_static(name), HeaderValue::from_static("x"))],
                remove: vec![],
            })
        };
        for late in [
            "vary",
            "ratelimit",
            "ratelimit-policy",
            "access-control-max-age",
        ] {
            assert!(rules(late).again, "{late}");
        }
        for early in ["x-frame-options", "cache-control", "varying"] {
            assert!(!rules(early).again, "{early}");
        }
    }
}
