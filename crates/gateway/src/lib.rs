//! The Portcullis security gateway: a reverse proxy on hyper that runs the phases of the
//! request pipeline (see [`proxy`]) from a [`Policy`], with an admin listener (health,
//! readiness, Prometheus metrics) and hot reload.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let loaded = portcullis_policy::load(std::path::Path::new("portcullis.yaml"))?;
//! let gateway = portcullis_gateway::Gateway::start(loaded.policy).await?;
//! println!("listening on {}", gateway.addr);
//! gateway.stopped().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod body;
pub mod metrics;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod runtime;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use portcullis_policy::{Policy, Problems, SecretSource};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Layer;

use crate::metrics::{KindLabel, Metrics};
use crate::proxy::{Deps, Pipeline, Shared};
use crate::runtime::Runtime;
pub use crate::server::StartError;

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    policy_file: PathBuf,
    /// The proxy's bound address.
    pub addr: SocketAddr,
    /// The admin listener's bound address.
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn cors_service(policy: &Policy, deps: &Arc<Deps>) -> Option<tower_http::cors::Cors<Pipeline>> {
    policy
        .cors
        .as_ref()
        .map(|c| portcullis_guard::cors::layer(c).layer(Pipeline { deps: deps.clone() }))
}

fn admin_token(source: &SecretSource) -> Result<Arc<str>, StartError> {
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
    Ok(token.into())
}

impl Gateway {
    /// Binds the listeners and starts serving.
    pub async fn start(policy: Policy) -> Result<Gateway, StartError> {
        let tls = policy.tls.as_ref().map(server::tls_acceptor).transpose()?;
        let token = policy
            .admin
            .as_ref()
            .and_then(|a| a.token.as_ref())
            .map(admin_token)
            .transpose()?;
        let listener =
            TcpListener::bind(policy.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: policy.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
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
        let deps = Arc::new(Deps {
            client: proxy::upstream_client(policy.limits.upstream_connect_timeout),
            metrics: Metrics::new(),
        });
        let shared = Arc::new(Shared {
            cors: ArcSwap::from_pointee(cors_service(&policy, &deps)),
            runtime: ArcSwap::from_pointee(Runtime::new(policy.clone(), &deps.metrics)),
            deps,
        });
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(server::serve(
            listener,
            shared.clone(),
            tls,
            rx.clone(),
        ))];
        if let Some(l) = admin_listener {
            tasks.push(tokio::spawn(admin::serve(l, shared.clone(), token, rx)));
        }
        tracing::info!(target: "portcullis::gateway", listen = %addr, admin = ?admin_addr, routes = policy.inventory.len(), "gateway listening");
        Ok(Gateway {
            shared,
            policy_file: policy.file.clone(),
            addr,
            admin_addr,
            shutdown,
            tasks,
        })
    }

    /// Loads the policy file again; a valid policy replaces the running one (requests in
    /// flight finish on the old one), an invalid one is refused and the old one stays.
    /// Listener addresses and TLS are fixed at start.
    pub fn reload(&self) -> Result<Problems, Problems> {
        let loaded = match portcullis_policy::load(&self.policy_file) {
            Ok(l) => l,
            Err(problems) => {
                self.shared
                    .deps
                    .metrics
                    .reloads
                    .get_or_create(&KindLabel { kind: "refused" })
                    .inc();
                tracing::error!(target: "portcullis::reload", problems = %problems.to_string().trim_end(), "policy refused; the running policy stays");
                return Err(problems);
            }
        };
        let current = self.shared.runtime.load();
        if loaded.policy.listen != current.policy.listen
            || loaded.policy.tls != current.policy.tls
            || loaded.policy.admin != current.policy.admin
        {
            tracing::warn!(target: "portcullis::reload", "listen, tls and admin changes take effect at the next start");
        }
        self.shared
            .cors
            .store(Arc::new(cors_service(&loaded.policy, &self.shared.deps)));
        let routes = loaded.policy.inventory.len();
        self.shared.runtime.store(Arc::new(Runtime::new(
            loaded.policy,
            &self.shared.deps.metrics,
        )));
        self.shared
            .deps
            .metrics
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
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the gateway stops (it stops on [`Gateway::stop`] only).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// A handle that can stop the gateway from elsewhere.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}
