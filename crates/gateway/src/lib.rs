//! The Portcullis security gateway: a reverse proxy on hyper that runs the phases of the
//! request pipeline (see [`proxy`]) from a [`Policy`], with an admin listener (health,
//! readiness, Prometheus metrics) and hot reload.
//!
//! Serving is thread-per-core: each worker thread runs its own single-threaded runtime, its
//! own `SO_REUSEPORT` listener and its own upstream connection pool, so a request and the
//! upstream connection that carries it never change threads (measured: about 11% less CPU per
//! request than one work-stealing runtime; see README, Benchmarks). The policy, the CORS
//! service and the metrics are shared by all workers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let loaded = portcullis_policy::load(std::path::Path::new("portcullis.yaml"))?;
//! let gateway = portcullis_gateway::Gateway::start(loaded.policy).await?;
//! println!("listening on {}", gateway.addr);
//! gateway.stopped().await;
//! # Ok(()) }
//! ```

// The pipeline's future nests the state backend's (Redis calls inside async-trait methods)
// deeper than the default limit lets the compiler prove it `Send`.
#![recursion_limit = "256"]

pub mod admin;
mod affinity;
pub mod body;
pub mod h1;
pub mod jwks;
pub mod metrics;
pub mod owner;
pub mod park;
pub mod proxy;
pub mod ratelimit;
pub mod redact;
pub mod redis;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod spare;
pub mod ssrf;
pub mod upstream;
pub mod validate;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use portcullis_guard::store::{EmbeddedStore, MemoryStore, Store};
use portcullis_policy::{Policy, Problems, SecretSource, StateBackend};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::metrics::{KindLabel, Metrics};
use crate::proxy::{Current, Deps, Shared};
use crate::runtime::Runtime;
pub use crate::server::StartError;
pub use portcullis_guard::jwt::algorithm as jwt_algorithm;

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    current: Arc<Current>,
    metrics: Arc<Metrics>,
    policy_file: PathBuf,
    /// The proxy's bound address.
    pub addr: SocketAddr,
    /// The admin listener's bound address.
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Ends the admin listener, once the workers are done.
    admin_end: watch::Sender<bool>,
    admin_task: Option<JoinHandle<()>>,
    /// One per worker thread, fired when it has drained.
    workers_done: Vec<oneshot::Receiver<()>>,
}

fn admin_token(source: &SecretSource) -> Result<Arc<String>, StartError> {
    let token = match source {
        SecretSource::Env(name) => std::env::var(name).map_err(|_| {
            StartError::AdminToken(format!(
                "environment variable `{name}` (admin.token_env) is not set"
            ))
        })?,
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                StartError::AdminToken(format!(
                    "cannot read `{}` (admin.token_file): {e}",
                    path.display()
                ))
            })?
            .trim()
            .to_owned(),
        SecretSource::Inline(t) => t.clone(),
    };
    if token.len() < 16 {
        return Err(StartError::AdminToken(
            "the admin token must have at least 16 characters".into(),
        ));
    }
    Ok(Arc::new(token))
}

/// How many workers: the policy's `limits.workers`, else one per available core.
fn worker_count(policy: &Policy) -> usize {
    match policy.limits.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

impl Gateway {
    /// Binds the listeners and starts the workers.
    pub async fn start(policy: Policy) -> Result<Gateway, StartError> {
        let tls = policy.tls.as_ref().map(server::tls_config).transpose()?;
        let token = policy
            .admin
            .as_ref()
            .and_then(|a| a.token.as_ref())
            .map(admin_token)
            .transpose()?;
        let workers = worker_count(&policy);
        let listeners = server::bind_workers(policy.listen, workers)?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: policy.listen,
                source,
            })?;
        let admin_listener = match &policy.admin {
            Some(a) => {
                Some(
                    TcpListener::bind(a.listen)
                        .await
                        .map_err(|source| StartError::Bind {
                            addr: a.listen,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let metrics = Metrics::new(workers);
        let runtime = Runtime::new(policy.clone(), &metrics)
            .map_err(|(key, e)| StartError::Policy(format!("{key}: {e}")))?;
        let (store, redis): (Arc<dyn Store>, _) = match &policy.state {
            StateBackend::Memory => (Arc::new(MemoryStore::default()), None),
            StateBackend::Embedded(dir) => (
                Arc::new(EmbeddedStore::open(dir).map_err(|e| StartError::State(e.to_string()))?),
                None,
            ),
            StateBackend::Redis(cfg) => {
                let r = Arc::new(
                    redis::RedisStore::connect(cfg, metrics.clone())
                        .map_err(|e| StartError::State(e.to_string()))?,
                );
                (r.clone(), Some(r))
            }
        };
        let limiter = Arc::new(ratelimit::LocalLimiter::new(ratelimit::DEFAULT_MAX_KEYS));
        let inflight = Arc::new(ratelimit::Inflight::default());
        let bursts = Arc::new(ratelimit::Bursts::default());
        // Keys from the provider before the first request, when it answers.
        if let (Some(jwks), Some(verifier)) = (&runtime.jwks, &runtime.verifier) {
            jwks.refresh(verifier, portcullis_guard::jwt::now()).await;
        }
        let current = Arc::new(Current::new(runtime, tls, token));
        let (shutdown, rx) = watch::channel(false);
        let per_worker_cap = policy.limits.max_connections.div_ceil(workers);
        let mut workers_done = Vec::new();
        // Each worker says when it is set up (bound to its CPU, its runtime built): the gateway
        // is listening only then.
        let mut workers_ready = Vec::new();
        let bindings = affinity::worker_cpus(policy.limits.pin_workers, listeners.len());
        for ((i, std_listener), binding) in listeners.into_iter().enumerate().zip(bindings) {
            let (done_tx, done_rx) = oneshot::channel();
            workers_done.push(done_rx);
            let (ready_tx, ready_rx) = oneshot::channel();
            workers_ready.push(ready_rx);
            let shared = Arc::new(Shared::new(
                current.clone(),
                Arc::new(Deps {
                    upstream: upstream::Upstream::default(),
                    metrics: metrics.clone(),
                    store: store.clone(),
                    redis: redis.clone(),
                    limiter: limiter.clone(),
                    inflight: inflight.clone(),
                    bursts: bursts.clone(),
                }),
            ));
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("portcullis-worker-{i}"))
                .spawn(move || {
                    metrics::set_worker(i);
                    let mut rt = tokio::runtime::Builder::new_current_thread();
                    // The names of its blocking pool's threads, the only ones a current-thread
                    // runtime starts (and `on_thread_start` sees).
                    rt.enable_all().thread_name(format!("portcullis-blocking-{i}"));
                    if let Some(b) = binding.filter(affinity::Binding::bind) {
                        rt.on_thread_start(move || b.restore());
                    }
                    let rt = match rt.build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    rt.block_on(async move {
                        match TcpListener::from_std(std_listener) {
                            Ok(l) => server::serve(l, shared, per_worker_cap, rx).await,
                            Err(e) => tracing::error!(target: "portcullis::gateway", error = %e, "worker cannot listen"),
                        }
                    });
                    let _ = done_tx.send(());
                })
                .map_err(|source| StartError::Bind { addr, source })?;
        }
        for ready in workers_ready {
            let failed = match ready.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::other("it ended before it was set up"),
            };
            let _ = shutdown.send(true);
            return Err(StartError::Worker(failed));
        }
        // The admin listener outlives the drain, so probes see it (`/readyz` answers 503).
        let (admin_end, admin_end_rx) = watch::channel(false);
        let admin_task = admin_listener.map(|l| {
            tokio::spawn(admin::serve(
                l,
                metrics.clone(),
                store.clone(),
                current.clone(),
                rx,
                admin_end_rx,
            ))
        });
        tracing::info!(target: "portcullis::gateway", listen = %addr, admin = ?admin_addr, routes = policy.inventory.len(), workers, "gateway listening");
        Ok(Gateway {
            current,
            metrics,
            policy_file: policy.file.clone(),
            addr,
            admin_addr,
            shutdown,
            admin_task,
            admin_end,
            workers_done,
        })
    }

    /// The files the running policy was built from (the policy file, the OpenAPI
    /// description, key and secret files, the TLS certificate and key).
    pub fn sources(&self) -> Vec<PathBuf> {
        self.current.runtime.load().policy.sources.clone()
    }

    /// Loads the policy file again; a valid policy replaces the running one (requests in
    /// flight finish on the old one), an invalid one is refused and the old one stays. The
    /// TLS certificate and key and the admin token are read again; listener addresses,
    /// whether TLS is on, the worker count and the connection cap are fixed at start.
    pub fn reload(&self) -> Result<Problems, Problems> {
        let loaded = match portcullis_policy::load(&self.policy_file) {
            Ok(l) => l,
            Err(problems) => {
                self.metrics
                    .reloads
                    .get_or_create(&KindLabel { kind: "refused" })
                    .inc();
                tracing::error!(target: "portcullis::reload", problems = %problems.to_string().trim_end(), "policy refused; the running policy stays");
                return Err(problems);
            }
        };
        let current = self.current.runtime.load();
        let (old, new) = (&current.policy, &loaded.policy);
        if new.state != old.state {
            tracing::warn!(target: "portcullis::reload", "state backend changes take effect at the next start");
        }
        if new.listen != old.listen
            || new.tls.is_some() != old.tls.is_some()
            || new.admin.as_ref().map(|a| a.listen) != old.admin.as_ref().map(|a| a.listen)
            || new.limits.workers != old.limits.workers
            || new.limits.pin_workers != old.limits.pin_workers
            || new.limits.max_connections != old.limits.max_connections
        {
            tracing::warn!(target: "portcullis::reload", "listen, TLS on or off, the admin listener, workers, pin_workers and max_connections take effect at the next start");
        }
        let refuse = |key: &str, e: String| {
            self.metrics
                .reloads
                .get_or_create(&KindLabel { kind: "refused" })
                .inc();
            tracing::error!(target: "portcullis::reload", key, error = %e, "policy refused; the running policy stays");
            Problems(vec![portcullis_policy::Problem::error(
                &self.policy_file,
                None,
                key,
                e,
            )])
        };
        // Read again, whether or not their paths changed: a renewed certificate is served to
        // the next connection, and a rotated admin token ends the old one.
        let tls = match (&new.tls, old.tls.is_some()) {
            (Some(t), true) => match server::tls_config(t) {
                Ok(a) => Some(a),
                Err(e) => return Err(refuse("tls", e.to_string())),
            },
            _ => None,
        };
        if let Some(a) = &new.admin
            && tokenless_beyond_loopback(self.admin_addr, a)
        {
            return Err(refuse(
                "admin",
                "the admin listener stays where it was started, beyond loopback, and keeps \
                 needing a token (a new address applies at the next start)"
                    .to_owned(),
            ));
        }
        let token = match (&new.admin, &old.admin) {
            (Some(a), Some(_)) => match a.token.as_ref().map(admin_token).transpose() {
                Ok(t) => Some(t),
                Err(e) => return Err(refuse("admin.token", e.to_string())),
            },
            _ => None,
        };
        let routes = loaded.policy.inventory.len();
        let runtime = match Runtime::new(loaded.policy, &self.metrics) {
            Ok(r) => r,
            Err((key, e)) => return Err(refuse(key, e)),
        };
        if let Some(tls) = tls {
            self.current.tls.store(Some(tls));
        }
        if let Some(token) = token {
            self.current.admin_token.store(token);
        }
        self.current.swap(runtime);
        self.metrics
            .reloads
            .get_or_create(&KindLabel { kind: "applied" })
            .inc();
        tracing::info!(target: "portcullis::reload", routes, "policy reloaded");
        Ok(loaded.warnings)
    }

    /// The policy file this gateway was started from.
    pub fn policy_file(&self) -> &std::path::Path {
        &self.policy_file
    }

    /// Stops accepting, drains open connections (bounded), and returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.stopped().await;
    }

    /// Waits until the gateway has stopped (after [`Gateway::stop`] or the shutdown handle).
    pub async fn stopped(self) {
        for done in self.workers_done {
            let _ = done.await;
        }
        let _ = self.admin_end.send(true);
        if let Some(t) = self.admin_task {
            let _ = t.await;
        }
    }

    /// A handle that can stop the gateway from elsewhere.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Whether a reloaded policy would leave the admin listener, bound beyond loopback at the
/// start (its address is not changed by a reload), without a token: the loader allows a
/// tokenless admin section only on loopback, which the new text may claim and the running
/// listener is not.
fn tokenless_beyond_loopback(bound: Option<SocketAddr>, new: &portcullis_policy::Admin) -> bool {
    new.token.is_none() && bound.is_some_and(|a| !a.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_cannot_take_the_token_from_an_admin_listener_beyond_loopback() {
        let tokenless = portcullis_policy::Admin {
            listen: portcullis_policy::load::DEFAULT_ADMIN_LISTEN,
            token: None,
        };
        let wide = SocketAddr::from(([0, 0, 0, 0], 9901));
        let local = SocketAddr::from(([127, 0, 0, 1], 9901));
        assert!(tokenless_beyond_loopback(Some(wide), &tokenless));
        assert!(!tokenless_beyond_loopback(Some(local), &tokenless));
        assert!(!tokenless_beyond_loopback(None, &tokenless));
        let guarded = portcullis_policy::Admin {
            token: Some(portcullis_policy::SecretSource::Env("T".into())),
            ..tokenless
        };
        assert!(!tokenless_beyond_loopback(Some(wide), &guarded));
    }
}
