//! The accept phase: listeners, TLS, the connection cap, hyper's per-connection limits
//! (header read timeout against slowloris, header size, HTTP/2 stream limits), graceful
//! shutdown; and the admin listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use portcullis_policy::{Limits, Tls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::park::{self, Track, Tracked};
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
    /// Something in the policy cannot be used: the key, and why.
    #[error("{0}")]
    Policy(String),
    #[error("state: {0}")]
    State(String),
    #[error("a worker thread cannot start: {0}")]
    Worker(std::io::Error),
}

/// The TLS configuration from the policy's certificate and key files.
pub fn tls_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, StartError> {
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
    Ok(Arc::new(config))
}

fn http2_builder(limits: &Limits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
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
        let opened = tokio::time::Instant::now();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.deps.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let limits = shared.current.runtime.load().limits.clone();
        let shared = shared.clone();
        let watcher = graceful.watcher();
        let stop = shutdown.clone();
        // One task shape per transport: a plain connection's task does not carry room for a
        // TLS session it will never have.
        match shared.current.tls.load_full() {
            None => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let at = Accepted {
                        peer,
                        tls: false,
                        opened,
                    };
                    serve_plain(stream, at, &limits, shared, watcher, stop).await;
                });
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                tokio::spawn(async move {
                    let _permit = permit;
                    let by = opened + limits.header_read_timeout;
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout_at(by, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let at = Accepted {
                        peer,
                        tls: true,
                        opened,
                    };
                    if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_h2(tls_stream, at, &limits, shared, watcher, stop).await;
                    } else {
                        serve_h1(tls_stream, at, &limits, shared, watcher, stop).await;
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!(target: "portcullis::accept", "connections still open after 30 s; closing");
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection as accepted.
#[derive(Clone, Copy)]
struct Accepted {
    peer: SocketAddr,
    tls: bool,
    /// When it was accepted: its first request head is due `header_read_timeout` after.
    opened: tokio::time::Instant,
}

/// Whether a cleartext client opens with the HTTP/2 preface (prior knowledge), from the bytes
/// waiting on the socket, without taking them; `None` if it closes or says nothing by `by`.
/// (The bytes stay on the socket, which so stays readable: a client that sends part of the
/// preface and waits is looked at again after a pause that doubles, 5 ms to 200 ms.)
async fn opens_with_h2_preface(stream: &TcpStream, by: tokio::time::Instant) -> Option<bool> {
    let mut buf = [0u8; 24];
    let mut pause = Duration::from_millis(5);
    tokio::time::timeout_at(by, async {
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // Part of the preface so far: wait for the rest.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    })
    .await
    .ok()?
}

async fn serve_plain(
    stream: TcpStream,
    at: Accepted,
    limits: &Limits,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
    stop: watch::Receiver<bool>,
) {
    // Boxed (in a statement of its own, or the task keeps room for it anyway): the sniffing is
    // over before the connection is served.
    let sniff = Box::pin(opens_with_h2_preface(
        &stream,
        at.opened + limits.header_read_timeout,
    ));
    let Some(h2) = sniff.await else {
        return;
    };
    if h2 {
        return serve_h2(stream, at, limits, shared, watcher, stop).await;
    }
    serve_h1(stream, at, limits, shared, watcher, stop).await;
}

/// The gateway's service for a connection (or one HTTP/1 spell of it): each request is
/// counted in `track`, and its answer's body tells `track` when hyper is done with it. hyper
/// keeps room for one request future in the connection; boxed, that room is a pointer instead
/// of the whole pipeline's state, paid per request.
fn tracked(
    shared: Arc<Shared>,
    at: Accepted,
    track: Arc<Track>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Tracked<crate::body::Body>>,
    Error = Infallible,
    Future: Unpin + Send + 'static,
> + Unpin
+ Send
+ 'static {
    let Accepted { peer, tls, .. } = at;
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let req = req.map(crate::body::ClientBody::H2);
        track.request();
        let (shared, track) = (shared.clone(), track.clone());
        Box::pin(async move {
            let resp = handle(shared, peer, tls, req).await?;
            Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, track)))
        })
    })
}

/// HTTP/1 is served by the gateway's own server (`h1`).
async fn serve_h1<C: park::Park>(
    stream: C,
    at: Accepted,
    limits: &Limits,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
    stop: watch::Receiver<bool>,
) {
    // The watcher only holds the drain open until the connection is gone; `stop` is what
    // closes an idle connection and ends a busy one after its response.
    let _draining = watcher;
    let cfg = crate::h1::Config {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        max_head: limits.max_header_bytes.max(1024),
    };
    let Accepted { peer, tls, opened } = at;
    let service = |req| {
        // Boxed: the connection's task keeps room for a pointer, not the pipeline's state.
        crate::spare::pinned(|| crate::proxy::answer(shared.clone(), peer, tls, true, req))
    };
    let refuse = |u| crate::proxy::unreadable(&shared, peer, u);
    crate::h1::serve(stream, opened, cfg, stop, service, refuse).await;
}

/// HTTP/2 is served by its own builder (not hyper-util's auto-detecting one), so an HTTP/1
/// connection does not hold room for HTTP/2 state.
///
/// hyper's HTTP/2 server has no idle limit (its pings, which every client answers, only find
/// dead peers), and polls nothing for an answer the client has no room for (flow control, or a
/// full socket). So the connection is looked at every `idle_timeout`: one with no request open
/// at two looks in a row, and none begun between, is closed gracefully (`GOAWAY`); one with
/// requests open and no progress (a request begun or answered, a frame of an answer handed on)
/// for longer than any request of the policy can legitimately wait (`body_read_timeout` and
/// `upstream_timeout` together, or `idle_timeout` if longer) is dropped: its client is not
/// reading.
async fn serve_h2<I>(
    mut io: I,
    at: Accepted,
    limits: &Limits,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
    mut stop: watch::Receiver<bool>,
) where
    I: park::Park + Send + 'static,
{
    // Held until the connection is gone: the drain waits for it.
    let peer = at.peer;
    let _draining = watcher;
    let track = Arc::new(Track::default());
    let svc = tracked(shared, at, track.clone());
    // Boxed: the HTTP/2 connection's state is several KiB, which a task that may serve HTTP/1
    // would otherwise keep room for.
    let mut conn = Box::pin(http2_builder(limits).serve_connection(TokioIo::new(&mut io), svc));
    let stall = limits
        .idle_timeout
        .max(limits.body_read_timeout + limits.upstream_timeout);
    // The first look comes at the head deadline when that is sooner: a client that has sent
    // no request by then is late, not idle (as over HTTP/1).
    let first = (at.opened + limits.header_read_timeout)
        .min(tokio::time::Instant::now() + limits.idle_timeout);
    let mut look = Box::pin(tokio::time::sleep_until(first));
    let mut before = track.snapshot();
    let mut moved = tokio::time::Instant::now();
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(target: "portcullis::accept", %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = look.as_mut() => {
                let (now, at) = (track.snapshot(), tokio::time::Instant::now());
                if now != before {
                    moved = at;
                }
                if now.open() && at - moved >= stall {
                    tracing::debug!(target: "portcullis::accept", %peer, "the client took none of its answers in time; connection closed");
                    return;
                }
                if now.idle_since(&before) && !closing {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                before = now;
                look.as_mut().reset(at + limits.idle_timeout);
            }
        }
    }
}
