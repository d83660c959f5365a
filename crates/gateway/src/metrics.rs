//! Prometheus metrics, labelled by route template (never the raw path, which is unbounded)
//! and by decision: `allowed` or the rejection reason.

//!
//! The two metrics every request touches, requests by (route, status, decision) and latency by
//! route, are kept in one slot per worker thread, summed when scraped: with the workers on
//! their own cores, a shared counter (or prometheus-client's histogram, behind a mutex) would
//! move one cache line between the cores on every request.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

thread_local! {
    /// This thread's worker number, when it is a worker.
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Marks the calling thread as worker `i`: what it observes goes to its own slots.
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// A value on a cache line of its own (two lines: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Workers beyond this many share slots (bounding each metric's memory at 17 padded slots).
const WORKER_SLOTS: usize = 16;

/// The slot the calling thread writes among `n`, and whether it is the only writer of it: a
/// worker's own when each worker has one (`exclusive`); the last slot is shared by every
/// thread that is no worker. (`n` is at least 2: `Slots::for_workers`.)
fn slot(n: usize, exclusive: bool) -> (usize, bool) {
    let w = WORKER.with(Cell::get);
    if w == usize::MAX {
        (n - 1, false)
    } else {
        (w % (n - 1), exclusive)
    }
}

/// Adds `by`: a plain load and store where this thread is the slot's only writer (no locked
/// instruction), an atomic add where it is not.
fn bump(a: &AtomicU64, only_writer: bool, by: u64) {
    if only_writer {
        a.store(
            a.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    } else {
        a.fetch_add(by, Ordering::Relaxed);
    }
}

/// How the per-thread metrics are laid out: a slot per worker (up to `WORKER_SLOTS`), one
/// shared; with more workers than that, each slot is written by several, atomically.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    n: usize,
    exclusive: bool,
}

impl Slots {
    fn for_workers(workers: usize) -> Self {
        Self {
            n: workers.clamp(1, WORKER_SLOTS) + 1,
            exclusive: workers <= WORKER_SLOTS,
        }
    }
}

/// One `T` per slot, each on its own cache lines.
#[derive(Debug)]
struct PerWorker<T> {
    slots: Arc<[Padded<T>]>,
    exclusive: bool,
}

// Not derived: that would ask `T: Clone`, and the clone shares the slots.
impl<T> Clone for PerWorker<T> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            exclusive: self.exclusive,
        }
    }
}

impl<T: Default> PerWorker<T> {
    fn new(slots: Slots) -> Self {
        Self {
            slots: (0..slots.n).map(|_| Padded::default()).collect(),
            exclusive: slots.exclusive,
        }
    }

    /// The calling thread's slot, and whether it is its only writer.
    fn mine(&self) -> (&T, bool) {
        let (i, only) = slot(self.slots.len(), self.exclusive);
        (&self.slots[i].0, only)
    }

    fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &s.0)
    }
}

/// A counter with one slot per worker.
#[derive(Clone, Debug)]
pub struct SlotCounter(PerWorker<AtomicU64>);

impl SlotCounter {
    pub fn inc(&self) {
        let (n, only) = self.0.mine();
        bump(n, only, 1);
    }

    pub fn get(&self) -> u64 {
        self.0.all().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for SlotCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for SlotCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl MetricConstructor<SlotCounter> for Slots {
    fn new_metric(&self) -> SlotCounter {
        SlotCounter(PerWorker::new(*self))
    }
}

/// The latency buckets' upper bounds: 0.5 ms doubling to about 16 s, then everything else.
const BUCKETS: usize = 16;
const FIRST_BOUND_NS: u64 = 500_000;

#[derive(Debug, Default)]
struct LatencySlot {
    /// Observations per bucket (not cumulative), the last one above every bound.
    counts: [AtomicU64; BUCKETS + 1],
    /// In microseconds: a u64 of them wraps after 584,000 years of latency summed (10,000
    /// requests always in flight: 58 years), nanoseconds after 584.
    sum_us: AtomicU64,
}

/// A latency histogram with one slot per worker.
#[derive(Clone, Debug)]
pub struct SlotHistogram(PerWorker<LatencySlot>);

impl SlotHistogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (0..BUCKETS)
            .find(|&k| ns <= FIRST_BOUND_NS << k)
            .unwrap_or(BUCKETS);
        let (s, only) = self.0.mine();
        bump(&s.counts[bucket], only, 1);
        bump(&s.sum_us, only, ns / 1000);
    }
}

impl TypedMetric for SlotHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SlotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = exponential_buckets(FIRST_BOUND_NS as f64 / 1e9, 2.0, BUCKETS as u16)
            .chain(std::iter::once(f64::INFINITY));
        let mut buckets: Vec<(f64, u64)> = bounds.map(|b| (b, 0)).collect();
        let mut sum_us = 0u64;
        for s in self.0.all() {
            for (b, c) in buckets.iter_mut().zip(&s.counts) {
                b.1 += c.load(Ordering::Relaxed);
            }
            sum_us = sum_us.wrapping_add(s.sum_us.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        encoder.encode_histogram::<NoLabelSet>(sum_us as f64 / 1e6, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl MetricConstructor<SlotHistogram> for Slots {
    fn new_metric(&self) -> SlotHistogram {
        SlotHistogram(PerWorker::new(*self))
    }
}

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
    pub requests: Family<RequestLabels, SlotCounter, Slots>,
    pub latency: Family<RouteLabel, SlotHistogram, Slots>,
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
    /// The metrics of a gateway with `workers` worker threads.
    pub fn new(workers: usize) -> Arc<Self> {
        let slots = Slots::for_workers(workers);
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::new_with_constructor(slots);
        registry.register(
            "requests",
            "Requests by route template, status and decision",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(slots);
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
            counters: Default::default(),
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

/// The (status, decision) counters a route keeps at hand; more are looked up by label.
const AT_HAND: usize = 16;

/// One route's metric handles; the counter per (status, decision) is resolved once.
#[derive(Debug)]
pub struct RouteMetrics {
    pub label: Arc<str>,
    latency: SlotHistogram,
    counters: [OnceLock<(u16, &'static str, SlotCounter)>; AT_HAND],
}

impl RouteMetrics {
    pub fn record(
        &self,
        metrics: &Metrics,
        status: u16,
        decision: &'static str,
        elapsed: Duration,
    ) {
        self.latency.observe(elapsed);
        let labels = || RequestLabels {
            route: self.label.clone(),
            status,
            decision,
        };
        for cell in &self.counters {
            // A free cell takes this pair (or another thread's, which won the race).
            let (s, d, c) = cell.get_or_init(|| {
                let c = metrics.requests.get_or_create(&labels()).clone();
                (status, decision, c)
            });
            if *s == status && *d == decision {
                c.inc();
                return;
            }
        }
        metrics.requests.get_or_create(&labels()).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `record` run at once on a thread per entry of `workers` (a worker's number, or none),
    /// for a gateway with `of` workers; the scrape after.
    fn scraped(
        of: usize,
        workers: &[Option<usize>],
        record: fn(&RouteMetrics, &Metrics),
    ) -> String {
        let metrics = Metrics::new(of);
        let route = Arc::new(metrics.route(Arc::from("/a")));
        let threads: Vec<_> = workers
            .iter()
            .map(|&w| {
                let (m, r) = (metrics.clone(), route.clone());
                std::thread::spawn(move || {
                    if let Some(w) = w {
                        set_worker(w);
                    }
                    record(&r, &m);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        metrics.render()
    }

    /// Two workers and a thread that is none record on one route: the scrape gives the sums,
    /// buckets cumulative, as one shared counter would have.
    #[test]
    fn per_worker_slots_add_up_when_scraped() {
        let text = scraped(2, &[Some(0), Some(1), None], |r, m| {
            for _ in 0..1000 {
                r.record(m, 200, "allowed", Duration::from_micros(300));
            }
            for _ in 0..10 {
                r.record(m, 404, "undeclared_route", Duration::from_millis(3));
            }
            r.record(m, 502, "upstream", Duration::from_secs(60));
        });
        for line in [
            r#"portcullis_requests_total{route="/a",status="200",decision="allowed"} 3000"#,
            r#"portcullis_requests_total{route="/a",status="404",decision="undeclared_route"} 30"#,
            r#"portcullis_requests_total{route="/a",status="502",decision="upstream"} 3"#,
            r#"portcullis_request_duration_seconds_count{route="/a"} 3033"#,
            // 300 µs in the first bucket; 3 ms in the fourth (4 ms); 60 s only in +Inf.
            r#"portcullis_request_duration_seconds_bucket{le="0.0005",route="/a"} 3000"#,
            r#"portcullis_request_duration_seconds_bucket{le="0.002",route="/a"} 3000"#,
            r#"portcullis_request_duration_seconds_bucket{le="0.004",route="/a"} 3030"#,
            r#"portcullis_request_duration_seconds_bucket{le="16.384",route="/a"} 3030"#,
            r#"portcullis_request_duration_seconds_bucket{le="+Inf",route="/a"} 3033"#,
            r#"portcullis_request_duration_seconds_sum{route="/a"} 180.99"#,
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    /// More workers than slots: workers 1 and 17 share a slot, so they add atomically and
    /// nothing is lost.
    #[test]
    fn workers_beyond_the_slots_share_them_without_losing_counts() {
        let text = scraped(40, &[Some(1), Some(17), Some(39), None], |r, m| {
            for _ in 0..20_000 {
                r.record(m, 200, "allowed", Duration::from_micros(2));
            }
        });
        for line in [
            r#"portcullis_requests_total{route="/a",status="200",decision="allowed"} 80000"#,
            r#"portcullis_request_duration_seconds_count{route="/a"} 80000"#,
            r#"portcullis_request_duration_seconds_sum{route="/a"} 0.16"#,
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }
}
