//! The accept phase: listeners, TLS, the connection cap, hyper's per-connection limits
//! (header read timeout against slowloris, header size, HTTP/2 stream limits), graceful
//! shutdown; and the admin listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use portcullis_policy::{Limits, Tls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::proxy::{Shared, handle};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: cannot load `{path}`: {reason}")]
    Tls { path: String, reason: String },
    #[error("admin token: {0}")]
    AdminToken(String),
    #[error("auth.jwt.keys: {0}")]
    Key(String),
    #[error("state: {0}")]
    State(String),
}

pub fn tls_acceptor(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let err = |p: &std::path::Path, reason: String| StartError::Tls {
        path: p.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| err(&tls.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(&tls.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| err(&tls.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&tls.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(&tls.cert, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Binds `n` listening sockets on `addr` with `SO_REUSEPORT`, so the kernel spreads
/// connections over the workers. With port 0 the first socket picks the port for all.
pub fn bind_workers(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source: std::io::Error| StartError::Bind { addr, source };
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let s =
            Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        #[cfg(unix)]
        s.set_reuse_port(true).map_err(err)?;
        s.set_nonblocking(true).map_err(err)?;
        s.bind(&at.into()).map_err(err)?;
        s.listen(1024).map_err(err)?;
        let l: std::net::TcpListener = s.into();
        at = l.local_addr().map_err(err)?;
        out.push(l);
    }
    Ok(out)
}

/// Serves the gateway on `listener` until `shutdown` turns true, then drains for up to 30 s.
/// `max_connections` is this worker's share of the cap.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(target: "portcullis::accept", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.deps.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let limits = shared.current.runtime.load().policy.limits.clone();
        let shared = shared.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_conn(stream, peer, false, &limits, shared, watcher).await,
                Some(acceptor) => {
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    serve_io(
                        TokioIo::new(tls_stream),
                        peer,
                        true,
                        &limits,
                        shared,
                        watcher,
                    )
                    .await;
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!(target: "portcullis::accept", "connections still open after 30 s; closing");
        }
    }
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    tls: bool,
    limits: &Limits,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    serve_io(TokioIo::new(stream), peer, tls, limits, shared, watcher).await;
}

async fn serve_io<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    tls: bool,
    limits: &Limits,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // hyper keeps room for one request future inline in every connection, from the first byte
    // to the last, busy or idle; boxed, that room is one pointer instead of the whole pipeline's
    // state (several KiB), paid per request instead of per connection.
    let svc = service_fn(move |req| Box::pin(handle(shared.clone(), peer, tls, req)));
    let b = builder(limits);
    let conn = b.serve_connection(io, svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(target: "portcullis::accept", %peer, error = %e, "connection ended with an error");
    }
}
