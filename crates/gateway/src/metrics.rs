//! Prometheus metrics, labelled by route template (never the raw path, which is unbounded)
//! and by decision: `allowed` or the rejection reason.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Arc<str>,
    pub status: u16,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
    pub upstream_errors: Family<KindLabel, Counter>,
    pub reloads: Family<KindLabel, Counter>,
    pub connections_refused: Counter,
    /// 1 while the shared state backend answers (always 1 for local backends).
    pub state_up: Gauge,
    pub state_fallbacks: Family<OpLabel, Counter>,
    pub bursts_flagged: Family<RuleLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route template, status and decision",
            requests.clone(),
        );
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            latency.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind",
            upstream_errors.clone(),
        );
        let reloads = Family::<KindLabel, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads by result",
            reloads.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections refused over the connection cap",
            connections_refused.clone(),
        );
        let state_up = Gauge::default();
        state_up.set(1);
        registry.register(
            "state_backend_up",
            "Whether the shared state backend answers",
            state_up.clone(),
        );
        let state_fallbacks = Family::<OpLabel, Counter>::default();
        registry.register(
            "state_fallbacks",
            "State operations answered by the local fallback because the shared backend did not",
            state_fallbacks.clone(),
        );
        let bursts_flagged = Family::<RuleLabel, Counter>::default();
        registry.register(
            "bursts_flagged",
            "Keys flagged for a burst far above their own pace on a sensitive flow",
            bursts_flagged.clone(),
        );
        Arc::new(Self {
            bursts_flagged,
            registry,
            state_up,
            state_fallbacks,
            requests,
            latency,
            upstream_errors,
            reloads,
            connections_refused,
        })
    }

    pub fn burst_flagged(&self, rule: &str) {
        self.bursts_flagged
            .get_or_create(&RuleLabel {
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// Counts a state operation that fell back to local state.
    pub fn state_fallback(&self, op: &'static str) {
        self.state_fallbacks.get_or_create(&OpLabel { op }).inc();
    }

    /// The pre-resolved handles of one route, so the hot path does not hash labels.
    pub fn route(&self, label: Arc<str>) -> RouteMetrics {
        RouteMetrics {
            latency: self
                .latency
                .get_or_create(&RouteLabel {
                    route: label.clone(),
                })
                .clone(),
            counters: RwLock::new(Vec::new()),
            label,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// One route's metric handles; the counter per (status, decision) is resolved once.
#[derive(Debug)]
pub struct RouteMetrics {
    pub label: Arc<str>,
    latency: Histogram,
    counters: RwLock<Vec<(u16, &'static str, Counter)>>,
}

impl RouteMetrics {
    pub fn record(
        &self,
        metrics: &Metrics,
        status: u16,
        decision: &'static str,
        elapsed: Duration,
    ) {
        self.latency.observe(elapsed.as_secs_f64());
        let found = self.counters.read().ok().and_then(|c| {
            c.iter()
                .find(|(s, d, _)| *s == status && *d == decision)
                .map(|(_, _, c)| c.clone())
        });
        let counter = match found {
            Some(c) => c,
            None => {
                let c = metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: self.label.clone(),
                        status,
                        decision,
                    })
                    .clone();
                if let Ok(mut list) = self.counters.write() {
                    list.push((status, decision, c.clone()));
                }
                c
            }
        };
        counter.inc();
    }
}
