//! A worker's connections to the upstream: HTTP/1.1 over TCP, opened by the worker and
//! reused only by it.
//!
//! hyper-util's pooled client does the same job for any number of hosts and schemes, at a
//! price measured on this gateway's path: a hashed pool key, a checkout future and a
//! background task that returns each connection, about 2 µs of CPU per request (a quarter of
//! a bare proxy's user time). One upstream authority per policy and one thread per pool make
//! all of that unnecessary: the pool is a short list, scanned from the most recently used end.
//!
//! A connection goes back on the list as soon as its answer's head is in; it is taken again
//! only once hyper reports it ready (the answer's body fully read), so a slow body never
//! holds up another request. A request that meets a connection the upstream has just closed
//! is sent again on a fresh one, which is safe because hyper hands back a request it never
//! wrote.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::UpBody;

/// Idle connections kept per worker, like nginx's `keepalive`.
pub const MAX_IDLE: usize = 64;
/// How long an unused connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection unused for this long may be closing under the next request: upstream
/// keep-alive timeouts are seconds (Node 5 s, gunicorn 2 s, nginx 75 s).
const STALE_AFTER: Duration = Duration::from_secs(1);

/// Why a request did not reach the upstream, or got no answer from it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to the upstream failed: {0}")]
    Connect(#[source] io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("the upstream exchange failed: {0}")]
    Exchange(#[from] hyper::Error),
    #[error("the upstream did not answer in time")]
    Timeout,
}

impl UpstreamError {
    /// Whether no connection could be opened (as opposed to one failing in use).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::ConnectTimeout)
    }
}

/// One worker's pool. The lock is never contended (one thread uses it); it is there because
/// request futures must be `Send`.
#[derive(Debug, Default)]
pub struct Upstream {
    pool: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    /// The authority the pooled connections lead to; a reload may change it.
    authority: Option<Authority>,
    /// Oldest first.
    conns: VecDeque<Pooled>,
}

#[derive(Debug)]
struct Pooled {
    tx: SendRequest<UpBody>,
    since: Instant,
}

impl Upstream {
    /// Sends `req` (origin-form target, `Host` set) to `authority` and returns the answer's
    /// head by `deadline` (opening a connection, within `connect_timeout`, included); the body
    /// streams from the connection, which is pooled again once it is read. `now` is a recent
    /// reading of the clock (the request's start), for the pool's bookkeeping.
    ///
    /// The deadline is applied to each step here rather than around this future: the
    /// future is then built and moved once instead of three times (it is over a kilobyte,
    /// and every request pays for each move).
    pub async fn send(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
        now: Instant,
        deadline: Instant,
        req: Request<UpBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let req = match self.checkout(authority, now) {
            None => req,
            Some((mut tx, idle)) => {
                // On a connection that sat idle, an upstream closing it and our request may
                // cross: the request is written, the answer is an end of stream. A bodiless
                // idempotent request is then safe to send again, so a copy is kept (busy
                // connections, the hot path, pay nothing).
                let again = (idle > STALE_AFTER).then(|| replay(&req)).flatten();
                let sent = tokio::time::timeout_at(deadline, tx.try_send_request(req)).await;
                match sent.map_err(|_| UpstreamError::Timeout)? {
                    Ok(resp) => {
                        self.checkin(authority, tx, now);
                        return Ok(resp);
                    }
                    Err(mut e) => match (e.take_message(), again) {
                        // Never written: the connection had closed under it.
                        (Some(unsent), _) => unsent,
                        (None, Some(copy)) if e.error().is_incomplete_message() => *copy,
                        (None, _) => return Err(UpstreamError::Exchange(e.into_error())),
                    },
                }
            }
        };
        // Boxed: opening a connection is the rare path, and its state would otherwise sit in
        // every request's future.
        let opened = Box::pin(connect(authority, connect_timeout));
        let mut tx = tokio::time::timeout_at(deadline, opened)
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let resp = tokio::time::timeout_at(deadline, tx.send_request(req))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        self.checkin(authority, tx, Instant::now());
        Ok(resp)
    }

    /// The most recently used connection that is ready, and how long it was unused; closed and
    /// expired ones are dropped, busy ones stay.
    fn checkout(
        &self,
        authority: &Authority,
        now: Instant,
    ) -> Option<(SendRequest<UpBody>, Duration)> {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.authority.as_ref() != Some(authority) {
            return None;
        }
        let mut i = pool.conns.len();
        while i > 0 {
            i -= 1;
            let c = &pool.conns[i];
            let idle = now.saturating_duration_since(c.since);
            if c.tx.is_closed() || idle > IDLE_TIMEOUT {
                pool.conns.remove(i);
            } else if c.tx.is_ready() {
                return pool.conns.remove(i).map(|c| (c.tx, idle));
            }
        }
        None
    }

    fn checkin(&self, authority: &Authority, tx: SendRequest<UpBody>, now: Instant) {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.authority.as_ref() != Some(authority) {
            pool.conns.clear();
            pool.authority = Some(authority.clone());
        }
        // The oldest go first: past the idle timeout (a scan from the recent end may never
        // reach them), and beyond the cap.
        while pool
            .conns
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) > IDLE_TIMEOUT)
        {
            pool.conns.pop_front();
        }
        if pool.conns.len() >= MAX_IDLE {
            pool.conns.pop_front();
        }
        pool.conns.push_back(Pooled { tx, since: now });
    }
}

/// A copy of a bodiless idempotent request (RFC 9110, 9.2.2), to send again.
fn replay(req: &Request<UpBody>) -> Option<Box<Request<UpBody>>> {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    if !idempotent || !matches!(req.body(), UpBody::Empty) {
        return None;
    }
    let mut copy = Request::new(UpBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(Box::new(copy))
}

/// Opens a connection (every resolved address in turn, all within `timeout`) and starts its
/// task on the current worker.
async fn connect(
    authority: &Authority,
    timeout: Duration,
) -> Result<SendRequest<UpBody>, UpstreamError> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    let stream = tokio::time::timeout(timeout, async {
        let addrs: Vec<SocketAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port)).await?.collect(),
        };
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the upstream host has no address")
        }))
    })
    .await
    .map_err(|_| UpstreamError::ConnectTimeout)?
    .map_err(UpstreamError::Connect)?;
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target: "portcullis::upstream", error = %e, "upstream connection ended");
        }
    });
    Ok(tx)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn get() -> Request<UpBody> {
        let mut req = Request::new(UpBody::Empty);
        *req.uri_mut() = http::Uri::from_static("/x");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("up"));
        req
    }

    /// An upstream answering one request per connection, then closing it 50 ms later
    /// without saying so; it serves `conns` connections.
    fn closing_upstream(conns: usize) -> (Authority, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = l.local_addr().unwrap().to_string().parse().unwrap();
        let served = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                l.set_nonblocking(true).unwrap();
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                for _ in 0..conns {
                    let (mut s, _) = l.accept().await.unwrap();
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await.unwrap();
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        });
        (authority, served)
    }

    /// Sends one GET and checks its answer.
    async fn get_ok(up: &Upstream, authority: &Authority) {
        let resp = up
            .send(
                authority,
                Duration::from_secs(2),
                Instant::now(),
                Instant::now() + Duration::from_secs(5),
                get(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    /// Sends one GET, then blocks this (single) thread past `STALE_AFTER`, so the
    /// connection's task cannot see the upstream's close before the next request is written
    /// to it.
    async fn first_then_stale(up: &Upstream, authority: &Authority) {
        get_ok(up, authority).await;
        std::thread::sleep(STALE_AFTER + Duration::from_millis(200));
    }

    /// The race a pool cannot avoid: the upstream closes a kept-alive connection while the
    /// gateway, not having seen it yet, writes a request to it. The GET goes out again on a
    /// fresh connection.
    #[tokio::test]
    async fn a_get_written_to_a_connection_closing_under_it_is_sent_on_a_fresh_one() {
        let (authority, served) = closing_upstream(2);
        let up = Upstream::default();
        first_then_stale(&up, &authority).await;
        get_ok(&up, &authority).await;
        served.join().unwrap();
    }

    /// A request with a body, or a method that is not idempotent, is never sent twice.
    #[tokio::test]
    async fn a_post_written_to_a_closing_connection_is_not_sent_again() {
        let (authority, served) = closing_upstream(1);
        let up = Upstream::default();
        first_then_stale(&up, &authority).await;
        let mut post = get();
        *post.method_mut() = http::Method::POST;
        *post.body_mut() = UpBody::Bytes(Some(bytes::Bytes::from_static(b"{}")));
        let e = up
            .send(
                &authority,
                Duration::from_secs(2),
                Instant::now(),
                Instant::now() + Duration::from_secs(5),
                post,
            )
            .await
            .unwrap_err();
        assert!(!e.is_connect(), "{e}");
        served.join().unwrap();
    }
}
