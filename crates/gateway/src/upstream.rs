//! A worker's connections to the upstream: HTTP/1.1 over TCP, opened by the worker and used
//! only by it, driven by the request that holds them.
//!
//! A general client (hyper's) runs each connection as a task of its own and hands requests and
//! answers to it through channels: a wake-up and a task switch each way, for every request.
//! Measured on this gateway's path that was a sixth of the instructions it executes per
//! request (callgrind: 43.8k with hyper's client, 37.1k with this one). Here the request's own
//! task writes the request and reads the answer's head; an answer whose body arrived with its
//! head (the usual case for an API) is returned whole and the connection is back in the pool
//! before the response leaves the gateway. A longer body streams from the connection, which
//! goes back once the body's end is read.
//!
//! Framing follows RFC 9112 strictly, because a proxy that reads an answer's length
//! differently from its client is a smuggling channel: one `Content-Length` (or repeats of the
//! same value), `chunked` as the final transfer coding, or the connection's end; an answer
//! with both `Transfer-Encoding` and `Content-Length`, an unparsable length, or a malformed
//! chunk is refused (502), and its connection closed. Whatever the upstream sends beyond an
//! answer's end also closes the connection.
//!
//! A request that meets a connection the upstream has just closed is sent again on a fresh
//! one when that is safe: when the connection took none of it, or when it is a bodiless
//! idempotent request (RFC 9110, 9.2.2) on a connection that had sat idle and gave no byte of
//! answer.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderName, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use portcullis_guard::respond::Hardening;

use crate::body::{Body, BoxError};
use crate::proxy::UpBody;
use crate::spare;
use crate::wire::{self, State, Step, content_length, decode, tokens};

/// Not in `http`'s list of standard names.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// Idle connections kept per worker, like nginx's `keepalive`.
pub const MAX_IDLE: usize = 64;
/// How long an unused connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection unused for this long may be closing under the next request: upstream
/// keep-alive timeouts are seconds (Node 5 s, gunicorn 2 s, nginx 75 s).
const STALE_AFTER: Duration = Duration::from_secs(1);
/// The largest answer head read (hyper's client allows about as much).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in an answer head.
const MAX_HEADERS: usize = 100;
/// The most trailer bytes after a chunked body (they are read and dropped).
/// A request body up to this size is written with its head, in one call.
const INLINE_BODY: usize = 16 * 1024;
/// Read buffer: a connection's first size, and the least room left before a read.
const READ_BUF: usize = 8 * 1024;
const READ_ROOM: usize = 2 * 1024;
/// What a streamed body reads at once: fewer, larger frames for large answers.
const STREAM_BUF: usize = 32 * 1024;

/// Why a request did not reach the upstream, or got no answer from it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to the upstream failed: {0}")]
    Connect(#[source] io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("the upstream exchange failed: {0}")]
    Exchange(#[source] io::Error),
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("reading the request body failed: {0}")]
    Body(#[source] BoxError),
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
    pool: Arc<Mutex<Pool>>,
}

/// Aligned to its own cache lines: the workers' pools are allocated one after the other when
/// the gateway starts, and each is locked twice per request by its worker.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Pool {
    /// The authority the pooled connections lead to; a reload may change it.
    authority: Option<Authority>,
    /// Oldest first.
    conns: VecDeque<Conn>,
}

impl Pool {
    /// Whether the pooled connections lead to `authority`: the same bytes, the usual case,
    /// else the same ignoring case (what `Authority`'s equality compares, a byte at a time).
    fn serves(&self, authority: &Authority) -> bool {
        self.authority
            .as_ref()
            .is_some_and(|a| a.as_str() == authority.as_str() || a == authority)
    }
}

#[derive(Debug)]
struct Conn {
    io: TcpStream,
    /// What the upstream sent that is not consumed yet.
    buf: BytesMut,
    /// When it was last put back in the pool.
    since: Instant,
}

/// How a request failed on a connection, for the decision to send it again.
struct Failed {
    /// The connection accepted no byte of the request.
    unsent: bool,
    /// Not one byte of an answer came.
    unanswered: bool,
    error: UpstreamError,
}

impl From<UpstreamError> for Failed {
    fn from(error: UpstreamError) -> Self {
        Failed {
            unsent: false,
            unanswered: false,
            error,
        }
    }
}

/// An answer's head, and how its body is framed.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request after this answer.
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

impl Upstream {
    /// Sends `req` (origin-form target) to `authority` and returns the answer with its head
    /// read within `timeout` from now (opening a connection, within `connect_timeout`,
    /// included); `timeout` also bounds each wait for more of a streamed body.
    ///
    /// The fields of `set` replace the request's own of those names (written as they go out,
    /// without touching the request's map). How the answer's map starts is `start`'s.
    pub async fn send(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
        timeout: Duration,
        req: Request<UpBody>,
        set: &[(HeaderName, Option<HeaderValue>)],
        start: Start<'_>,
    ) -> Result<Response<Body>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        let asked = Asked {
            head: parts.method == Method::HEAD,
            start,
        };
        let mut out = Vec::with_capacity(256 + (parts.headers.len() + set.len()) * 48);
        let mut body = encode_head(&parts, set, body, &mut out);
        // Written: the map goes back for the next request's head.
        spare::give(std::mem::take(&mut parts.headers));
        // One clock read for both (each is a measurable cost per request).
        let now = Instant::now();
        let deadline = tokio::time::Instant::from_std(now) + timeout;
        if let Some((mut conn, idle)) = self.checkout(authority, now) {
            let sent = match body.as_mut() {
                None => tokio::time::timeout_at(deadline, exchange(&mut conn, &out, asked)).await,
                Some(b) => upload(&mut conn, &out, b, asked, timeout).await,
            }
            .map_err(|_| UpstreamError::Timeout)?;
            match sent {
                Ok(head) => return Ok(self.answer(authority, conn, head, timeout)),
                Err(f) => {
                    // A streamed body may be partly consumed: never again. A bodiless request
                    // written to a connection that was closing may have been read; only an
                    // idempotent one goes again, and only when the connection had been idle.
                    let again = body.is_none()
                        && (f.unsent
                            || (f.unanswered && idle > STALE_AFTER && idempotent(&parts.method)));
                    if !again {
                        return Err(f.error);
                    }
                }
            }
        }
        // Boxed: opening a connection is the rare path, and its state would otherwise sit in
        // every request's future.
        let opened = Box::pin(connect(authority, connect_timeout));
        let mut conn = tokio::time::timeout_at(deadline, opened)
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let head = match body.as_mut() {
            None => tokio::time::timeout_at(deadline, exchange(&mut conn, &out, asked)).await,
            Some(b) => upload(&mut conn, &out, b, asked, timeout).await,
        }
        .map_err(|_| UpstreamError::Timeout)?
        .map_err(|f| f.error)?;
        Ok(self.answer(authority, conn, head, timeout))
    }

    /// The response for a head: its body taken whole from what was read with it when it is
    /// all there (the connection goes back to the pool now), else streamed.
    fn answer(
        &self,
        authority: &Authority,
        mut conn: Conn,
        head: Head,
        read_timeout: Duration,
    ) -> Response<Body> {
        let body = match head.framing {
            Framing::None => Some(Body::Empty),
            Framing::Length(n) => usize::try_from(n)
                .ok()
                .filter(|&n| n <= conn.buf.len())
                .map(|n| Body::Bytes(Some(conn.buf.split_to(n).freeze()))),
            Framing::Chunked | Framing::Close => None,
        };
        let body = match body {
            Some(body) => {
                if head.keep_alive {
                    checkin(&self.pool, authority, conn, Instant::now());
                }
                body
            }
            None => Body::Upstream(Box::new(Streaming {
                conn: Some(conn),
                state: match head.framing {
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::ChunkSize,
                    Framing::None | Framing::Close => State::Close,
                },
                keep_alive: head.keep_alive,
                trailers: 0,
                pool: Arc::clone(&self.pool),
                authority: authority.clone(),
                read_timeout,
                timer: None,
                waiting: false,
            })),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        resp
    }

    /// The most recently used connection that is still open, and how long it was unused;
    /// closed and expired ones are dropped.
    fn checkout(&self, authority: &Authority, now: Instant) -> Option<(Conn, Duration)> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if !pool.serves(authority) {
            return None;
        }
        while let Some(conn) = pool.conns.pop_back() {
            let idle = now.saturating_duration_since(conn.since);
            if idle <= IDLE_TIMEOUT && still_open(&conn.io) {
                return Some((conn, idle));
            }
        }
        None
    }
}

fn checkin(pool: &Mutex<Pool>, authority: &Authority, mut conn: Conn, now: Instant) {
    if !conn.buf.is_empty() {
        // Bytes beyond the answer's end: the upstream and the gateway disagree on where
        // an answer ends, so nothing more is read from it.
        return;
    }
    let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
    if !pool.serves(authority) {
        pool.conns.clear();
        pool.authority = Some(authority.clone());
    }
    // The oldest go first: past the idle timeout (a checkout from the recent end may never
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
    conn.since = now;
    pool.conns.push_back(conn);
}

/// Whether an idle connection is still open, from what the worker's event loop has seen of
/// it (no system call when nothing arrived). Anything that did arrive on an idle connection,
/// an end of stream or bytes nobody asked for, ends it.
fn still_open(io: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match io.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        // Readiness may be left over from the last read; a read tells.
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Writes the request head into `out`, with the body too when it is small and already read;
/// returns the body left to stream, if any. The framing headers are the gateway's own: the
/// client's `Content-Length`, `Transfer-Encoding` and `Expect` are not passed on (the gateway
/// answered any `100-continue` itself).
fn encode_head(
    parts: &http::request::Parts,
    set: &[(HeaderName, Option<HeaderValue>)],
    body: UpBody,
    out: &mut Vec<u8>,
) -> Option<Outgoing> {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &HeaderName, value: &HeaderValue| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    // The gateway's fields first (`Host` leads, when it is one of them).
    for (name, value) in set {
        if let Some(value) = value {
            field(name, value);
        }
    }
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || name == EXPECT
            || set.iter().any(|(n, _)| n == name)
        {
            continue;
        }
        field(name, value);
    }
    let rest = match body {
        UpBody::Empty | UpBody::Bytes(None) => {
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
                || parts.headers.contains_key(CONTENT_LENGTH)
            {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            out.extend_from_slice(b"\r\n");
            return None;
        }
        UpBody::Bytes(Some(b)) if b.len() <= INLINE_BODY => {
            let _ = write!(out, "content-length: {}\r\n\r\n", b.len());
            out.extend_from_slice(&b);
            return None;
        }
        rest => rest,
    };
    // The client's length (hyper read the body by it, so it holds) when the body's wrappers
    // do not pass their size on.
    let declared = || {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| content_length(v.as_bytes()))
    };
    let length = rest.size_hint().exact().or_else(declared);
    match length {
        Some(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    Some(Outgoing { body: rest, length })
}

/// How an answer's map starts.
#[derive(Clone, Copy, Debug)]
pub enum Start<'a> {
    /// Empty, taking every field of the answer.
    Plain,
    /// With a route's hardening fields, taking the answer's fields it
    /// [passes](Hardening::passes).
    Hardened(&'a Hardening),
    /// Empty, taking the answer's fields the hardening passes: the client's server writes the
    /// hardening's own fields itself ([`Hardening::block`]).
    Bare(&'a Hardening),
}

impl<'a> Start<'a> {
    fn hardening(self) -> Option<&'a Hardening> {
        match self {
            Start::Plain => None,
            Start::Hardened(h) | Start::Bare(h) => Some(h),
        }
    }
}

/// What reading an answer's head needs to know of its request.
#[derive(Clone, Copy)]
struct Asked<'a> {
    /// A `HEAD` request: the answer has no body, whatever its head says.
    head: bool,
    /// The map the answer starts from, and the fields it refuses.
    start: Start<'a>,
}

/// A request body to stream after the head, and its length when known (else it goes chunked).
struct Outgoing {
    body: UpBody,
    length: Option<u64>,
}

/// A bodiless request and its answer's head on `conn` (the caller bounds both together by
/// one deadline).
async fn exchange(conn: &mut Conn, out: &[u8], asked: Asked<'_>) -> Result<Head, Failed> {
    write_head(conn, out).await?;
    read_head(conn, asked, true).await
}

/// A request with a body and its answer's head on `conn`, or `Err` when a time limit passed.
/// It is bounded by how it moves, as the client's upload is: each write must make progress
/// within `timeout`, and the answer's head must come within `timeout` of the body's end (a
/// total deadline would cut off a large body sent steadily over a slow link).
async fn upload(
    conn: &mut Conn,
    out: &[u8],
    body: &mut Outgoing,
    asked: Asked<'_>,
    timeout: Duration,
) -> Result<Result<Head, Failed>, tokio::time::error::Elapsed> {
    let head = match tokio::time::timeout(timeout, write_head(conn, out)).await? {
        Ok(()) => Box::pin(send_body(conn, &mut body.body, body.length, asked, timeout)).await,
        Err(f) => Err(f),
    };
    let head = match head {
        Ok(Upload::Sent(Some(head))) => return Ok(Ok(head)),
        Ok(Upload::Sent(None)) => read_head(conn, asked, true),
        Ok(Upload::Stopped(None)) => read_head(conn, asked, false),
        Ok(Upload::Stopped(Some(mut head))) => {
            head.keep_alive = false;
            return Ok(Ok(head));
        }
        Err(f) => return Ok(Err(f)),
    };
    tokio::time::timeout(timeout, head).await
}

/// A time limit passed mid-upload (the upstream took no byte of the body for the idle
/// limit): said as the timeout it is.
fn timed_out() -> Failed {
    Failed {
        unsent: false,
        unanswered: true,
        error: UpstreamError::Timeout,
    }
}

/// Writes a request's head; the first write tells whether the connection took any of it.
async fn write_head(conn: &mut Conn, out: &[u8]) -> Result<(), Failed> {
    let n = match conn.io.write(out).await {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        written => written,
    }
    .map_err(|e| Failed {
        unsent: true,
        unanswered: true,
        error: UpstreamError::Exchange(e),
    })?;
    if n < out.len() {
        conn.io
            .write_all(&out[n..])
            .await
            .map_err(UpstreamError::Exchange)?;
    }
    Ok(())
}

/// Reads the answer's head (`keep_alive`: the request left the connection fit for another).
async fn read_head(conn: &mut Conn, asked: Asked<'_>, keep_alive: bool) -> Result<Head, Failed> {
    // An interim answer came: the upstream took the request.
    let mut interim = false;
    loop {
        // Nothing to parse before the first read (the buffer is empty unless an interim answer
        // came with more behind it).
        if !conn.buf.is_empty()
            && let Some(mut head) = final_head(&mut conn.buf, asked, &mut interim)?
        {
            head.keep_alive &= keep_alive;
            return Ok(head);
        }
        // Reserved only when little room is left: the answers before this one may still be
        // on their way to clients, holding the buffer's block, and a reserve would then
        // allocate a new one for every request.
        make_room(&mut conn.buf, READ_BUF);
        let answered = interim || !conn.buf.is_empty();
        let error = match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => continue,
            Err(e) => e,
        };
        return Err(Failed {
            unsent: false,
            unanswered: !answered,
            error: UpstreamError::Exchange(error),
        });
    }
}

/// The first final answer's head off the front of `buf`, if it is all there; interim answers
/// (`100`, `103`) before it are dropped, and `interim` set when one was.
fn final_head(
    buf: &mut BytesMut,
    asked: Asked<'_>,
    interim: &mut bool,
) -> Result<Option<Head>, UpstreamError> {
    loop {
        match parse_head(buf, asked)? {
            Some(h) if h.status == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(UpstreamError::Malformed("an upgrade nobody asked for"));
            }
            Some(h) if h.status.is_informational() => *interim = true,
            head => return Ok(head),
        }
    }
}

/// At least `READ_ROOM` free in `buf`, reserving `more` when there is less.
fn make_room(buf: &mut BytesMut, more: usize) {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(more);
    }
}

/// How an upload ended.
enum Upload {
    /// Whole; with the answer's head when it came before the body's end and was no refusal.
    Sent(Option<Head>),
    /// The upstream refused the body (the head, when it is all in), closed, or stopped taking
    /// it before its end: the rest is not sent and the connection is not reused.
    Stopped(Option<Head>),
}

/// Streams a request body after its head, framed as the head said. Every wait is raced
/// against the upstream's side of the connection: an interim answer (`100`, `103`) is read and
/// dropped; a final one, an end of stream or a failed write stops the upload (an upstream may
/// refuse a body without reading it). A write that takes no byte for `idle` ends the upload as
/// stalled; the wait for the client's next frame has the client body's own limit.
///
/// Writes are single `write` calls, each taking what it took off the front of what is left:
/// a write cut short by the upstream's side must not be started again from the beginning of
/// its bytes, or the upstream would read part of the body twice.
async fn send_body(
    conn: &mut Conn,
    body: &mut UpBody,
    length: Option<u64>,
    asked: Asked<'_>,
    idle: Duration,
) -> Result<Upload, Failed> {
    let chunked = length.is_none();
    let mut sent: u64 = 0;
    let mut framed = Vec::new();
    let Conn { io, buf, .. } = conn;
    let (rd, mut wr) = io.split();
    let answered = rd.readable();
    tokio::pin!(answered);
    // A final answer that came before the body's end and is no refusal (a server streaming
    // its answer to the upload): the upload goes on to its end, as RFC 9112 (9.5) has a client
    // stop only for a server that does not want the body and is closing. The upstream is not
    // read from again until then (the answer's body waits in the socket).
    let mut early: Option<Head> = None;
    // What came while sending: `None` to go on, else how the upload ends.
    let heard = |buf: &mut BytesMut, early: &mut Option<Head>| -> Result<Option<Upload>, Failed> {
        make_room(buf, READ_BUF);
        match rd.try_read_buf(buf) {
            Ok(0) => return Ok(Some(Upload::Stopped(None))),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(_) => return Ok(Some(Upload::Stopped(None))),
        }
        match final_head(buf, asked, &mut false)? {
            Some(h)
                if h.keep_alive && !h.status.is_client_error() && !h.status.is_server_error() =>
            {
                *early = Some(h);
                Ok(None)
            }
            head => Ok(head.map(|h| Upload::Stopped(Some(h)))),
        }
    };
    let mut end = false;
    while !end {
        let frame = tokio::select! {
            biased;
            f = body.frame() => f,
            _ = &mut answered, if early.is_none() => {
                if let Some(stop) = heard(buf, &mut early)? {
                    return Ok(stop);
                }
                answered.set(rd.readable());
                continue;
            }
        };
        let data = match frame {
            None if chunked => {
                end = true;
                bytes::Bytes::from_static(b"0\r\n\r\n")
            }
            None => break,
            Some(Err(e)) => return Err(UpstreamError::Body(e).into()),
            // Trailers are not passed on.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        let mut rest: &[u8] = if end || !chunked {
            &data
        } else {
            framed.clear();
            let _ = write!(framed, "{:x}\r\n", data.len());
            framed.extend_from_slice(&data);
            framed.extend_from_slice(b"\r\n");
            &framed
        };
        if !end {
            sent += data.len() as u64;
            if length.is_some_and(|n| sent > n) {
                return Err(
                    UpstreamError::Body("the body is longer than its length".into()).into(),
                );
            }
        }
        // Re-armed at each byte taken: it measures the upstream's progress, not the body's length.
        let mut stall = std::pin::pin!(tokio::time::sleep(idle));
        while !rest.is_empty() {
            tokio::select! {
                biased;
                w = wr.write(rest) => match w {
                    Ok(0) | Err(_) => return Ok(Upload::Stopped(early)),
                    Ok(n) => {
                        rest = &rest[n..];
                        stall.as_mut().reset(tokio::time::Instant::now() + idle);
                    }
                },
                _ = &mut answered, if early.is_none() => {
                    if let Some(stop) = heard(buf, &mut early)? {
                        return Ok(stop);
                    }
                    answered.set(rd.readable());
                }
                () = &mut stall => return Err(timed_out()),
            }
        }
    }
    if length.is_some_and(|n| sent != n) {
        return Err(UpstreamError::Body("the body is shorter than its length".into()).into());
    }
    Ok(Upload::Sent(early))
}

/// Parses an answer head off the front of `buf`, if it is all there.
fn parse_head(buf: &mut BytesMut, asked: Asked<'_>) -> Result<Option<Head>, UpstreamError> {
    // Uninitialised slots: zeroing them would cost more than the parse of a small head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    // Each field as offsets into the head (it is under `MAX_HEAD`): name start, name end,
    // value start, value end.
    let mut fields = [[0u32; 4]; MAX_HEADERS];
    let offset = |p: *const u8| u32::try_from(p as usize - base).unwrap_or(u32::MAX);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
    let (len, code, version, count) = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => {
            for (slot, h) in fields.iter_mut().zip(res.headers.iter()) {
                let (n, v) = (offset(h.name.as_ptr()), offset(h.value.as_ptr()));
                *slot = [n, n + h.name.len() as u32, v, v + h.value.len() as u32];
            }
            (
                len,
                res.code.unwrap_or(0),
                res.version.unwrap_or(1),
                res.headers.len(),
            )
        }
        Ok(httparse::Status::Complete(_)) => {
            return Err(UpstreamError::Malformed("the answer's head is too large"));
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(UpstreamError::Malformed("the answer's head is too large"));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Malformed("too many header fields"));
        }
        Err(_) => return Err(UpstreamError::Malformed("the answer's head does not parse")),
    };
    let status = StatusCode::from_u16(code)
        .map_err(|_| UpstreamError::Malformed("the status is invalid"))?;
    let head = buf.split_to(len).freeze();
    // Room for the headers the gateway adds on the way out (request id, version, limits):
    // growing the map later would rehash it.
    let mut headers = match asked.start {
        Start::Hardened(h) => h.start(count + 8),
        Start::Plain | Start::Bare(_) => spare::map(count + 8),
    };
    let mut length: Option<u64> = None;
    let mut coded = false;
    let mut chunked = false;
    // HTTP/1.0 closes unless told otherwise; kept simple: a 1.0 connection is not reused.
    let mut keep_alive = version == 1;
    for &[n0, n1, v0, v1] in &fields[..count] {
        let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
        let name = wire::field_name(&head[n0..n1])
            .ok_or_else(|| UpstreamError::Malformed("a header name is invalid"))?;
        // The value's bytes (httparse checked them); a header value is made only of a field
        // that goes on.
        let raw = &head[v0..v1];
        if name == CONTENT_LENGTH {
            let repeat = length.is_some();
            for part in tokens(raw) {
                let n = content_length(part)
                    .ok_or_else(|| UpstreamError::Malformed("the Content-Length is invalid"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(UpstreamError::Malformed("Content-Length values differ"));
                }
                length = Some(n);
            }
            // Repeats of one value (RFC 9110, 8.6) go on as that value, once.
            if repeat {
                continue;
            }
            if let Some(n) = length.filter(|_| raw.contains(&b',')) {
                headers.append(CONTENT_LENGTH, HeaderValue::from(n));
                continue;
            }
        } else if name == TRANSFER_ENCODING {
            coded = true;
            // A coding other than chunked (gzip, say) would have to be undone or passed on
            // with the framing the gateway chooses; passed on as plain bytes it would corrupt
            // the answer. No server in use sends one (they compress with Content-Encoding).
            if !tokens(raw).all(|t| t.eq_ignore_ascii_case(b"chunked")) {
                return Err(UpstreamError::Malformed(
                    "a transfer coding other than chunked",
                ));
            }
            // A later field follows an earlier one.
            chunked = true;
            // The framing is the gateway's to choose toward its client.
            continue;
        } else if name == CONNECTION {
            let mut others = false;
            for t in tokens(raw) {
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                    others = true;
                }
            }
            // Hop-by-hop, and removed on the way out; kept only when it names other fields
            // to remove with it.
            if !others {
                continue;
            }
        } else if name == KEEP_ALIVE {
            continue;
        }
        if asked.start.hardening().is_some_and(|h| !h.passes(&name)) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
            .map_err(|_| UpstreamError::Malformed("a header value is invalid"))?;
        headers.append(name, value);
    }
    let framing = if asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::None
    } else if coded {
        if length.is_some() {
            return Err(UpstreamError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        length.map_or(Framing::Close, Framing::Length)
    };
    if matches!(framing, Framing::Close) {
        keep_alive = false;
    }
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// Opens a connection (every resolved address in turn, all within `timeout`).
async fn connect(authority: &Authority, timeout: Duration) -> Result<Conn, UpstreamError> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    let io = tokio::time::timeout(timeout, async {
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
    io.set_nodelay(true).map_err(UpstreamError::Connect)?;
    Ok(Conn {
        io,
        buf: BytesMut::with_capacity(READ_BUF),
        since: Instant::now(),
    })
}

/// An answer's body read from its connection as the client takes it. The connection goes
/// back to the pool at the body's end; a body dropped before its end closes it.
pub struct Streaming {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    /// Trailer bytes read so far (they are dropped).
    trailers: usize,
    pool: Arc<Mutex<Pool>>,
    authority: Authority,
    read_timeout: Duration,
    /// Armed while waiting for the upstream.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer runs for the current wait.
    waiting: bool,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("state", &self.state)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

fn malformed(what: &'static str) -> BoxError {
    Box::new(UpstreamError::Malformed(what))
}

impl Streaming {
    /// The body ends short (an error, the upstream's close): its connection is dropped.
    fn abandon(&mut self) {
        self.conn = None;
        self.state = State::Done;
    }

    /// The body's end: the connection goes back when it can carry another request.
    fn finish(&mut self) {
        self.state = State::Done;
        self.timer = None;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
        {
            checkin(&self.pool, &self.authority, conn, Instant::now());
        }
    }

    /// Reads more from the upstream into the buffer; `Ok(0)` is its end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        make_room(&mut conn.buf, STREAM_BUF);
        match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
            Poll::Ready(r) => {
                self.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                // Counted from the first wait after bytes came, not from when they came: a
                // client slow to take the body is not the upstream's silence.
                let deadline = tokio::time::Instant::now() + self.read_timeout;
                let timer = match self.timer.as_mut() {
                    Some(t) if self.waiting => t,
                    Some(t) => {
                        t.as_mut().reset(deadline);
                        t
                    }
                    None => self
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                self.waiting = true;
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

impl http_body::Body for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let step = match this.conn.as_mut() {
                Some(conn) => {
                    decode(&mut this.state, &mut conn.buf, &mut this.trailers).map_err(malformed)
                }
                None => Ok(Step::End),
            };
            match step {
                Err(e) => {
                    this.abandon();
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Step::Data(data)) => {
                    if this.state == State::Length(0) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
            }
            let end = match ready!(this.poll_fill(cx)) {
                Ok(0) if this.state == State::Close => None,
                Ok(0) => Some(Err(malformed("the upstream closed before the body's end"))),
                Ok(_) => continue,
                Err(e) => Some(Err::<_, BoxError>(Box::new(UpstreamError::Exchange(e)))),
            };
            this.abandon();
            return Poll::Ready(end);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
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
        upstream_thread(l, move |l| async move {
            for _ in 0..conns {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Serves `l` on a thread of its own (its own runtime: the test's may block), as `serve`
    /// says; the authority to reach it and the thread.
    fn upstream_thread<F, Fut>(
        l: std::net::TcpListener,
        serve: F,
    ) -> (Authority, std::thread::JoinHandle<()>)
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let authority: Authority = l.local_addr().unwrap().to_string().parse().unwrap();
        let served = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                l.set_nonblocking(true).unwrap();
                serve(tokio::net::TcpListener::from_std(l).unwrap()).await;
            });
        });
        (authority, served)
    }

    /// A request body no two of whose 4-byte words are alike (a repeated stretch shows).
    fn counted(len: usize) -> Vec<u8> {
        (0..len / 4)
            .flat_map(|i| (i as u32).to_be_bytes())
            .collect()
    }

    /// An upstream with a small receive buffer that reads a request's head, lets the body
    /// back up for `stall`, sends an interim answer (`103`) while the gateway is still
    /// writing, then reads the body (its first `slow` bytes at `pace` per 64 KiB) and answers
    /// `ok` when it is `expect`, `mangled` when not, or when more bytes follow it.
    fn slow_reader(
        expect: Vec<u8>,
        stall: Duration,
        slow: usize,
        pace: Duration,
    ) -> (Authority, std::thread::JoinHandle<()>) {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(8).unwrap();
        let l: std::net::TcpListener = s.into();
        upstream_thread(l, move |l| async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(s.read(&mut b).await.unwrap(), 1);
                head.push(b[0]);
            }
            tokio::time::sleep(stall).await;
            s.write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n")
                .await
                .unwrap();
            let mut body = vec![0u8; expect.len()];
            for (i, part) in body.chunks_mut(64 * 1024).enumerate() {
                // (The gateway may have given up.)
                if s.read_exact(part).await.is_err() {
                    return;
                }
                if i * 64 * 1024 < slow {
                    tokio::time::sleep(pace).await;
                }
            }
            let mut more = [0u8; 1];
            let extra = tokio::time::timeout(Duration::from_millis(200), s.read(&mut more)).await;
            let verdict: &[u8] = if body == expect && !matches!(extra, Ok(Ok(1..))) {
                b"ok"
            } else {
                b"mangled"
            };
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                        verdict.len()
                    )
                    .as_bytes(),
                )
                .await;
            let _ = s.write_all(verdict).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        })
    }

    fn post(body: Vec<u8>) -> Request<UpBody> {
        let mut req = get();
        *req.method_mut() = Method::POST;
        *req.body_mut() = UpBody::Bytes(Some(Bytes::from(body)));
        req
    }

    /// POSTs `body` with `timeout` for the answer and checks the upstream's verdict: `ok`.
    async fn post_ok(authority: &Authority, timeout: Duration, body: Vec<u8>) {
        let resp = Upstream::default()
            .send(
                authority,
                Duration::from_secs(2),
                timeout,
                post(body),
                &[],
                Start::Plain,
            )
            .await
            .unwrap();
        let answer = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&answer[..], b"ok");
    }

    /// An interim answer that comes while a write of the body is still under way (the
    /// upstream had not read it) must not restart that write: the upstream would get part of
    /// the body twice, and with it the start of a request nobody sent on a connection that
    /// goes back to the pool.
    #[tokio::test]
    async fn an_interim_answer_in_the_middle_of_the_upload_leaves_the_body_whole() {
        let body = counted(8 << 20);
        let (authority, served) =
            slow_reader(body.clone(), Duration::from_millis(300), 0, Duration::ZERO);
        post_ok(&authority, Duration::from_secs(10), body).await;
        served.join().unwrap();
    }

    /// The answer's deadline counts from the body's end: an upstream that takes the body
    /// steadily for longer than the deadline, then answers at once, is not cut off.
    #[tokio::test]
    async fn an_upload_longer_than_the_answer_deadline_is_not_cut_off_while_it_moves() {
        // Its first 2 MiB taken 64 KiB per 50 ms: 1.6 s of upload against a 1 s deadline (the
        // rest, quickly: what the sockets' buffers hold is read after the gateway's last write,
        // inside the answer's time).
        let body = counted(16 << 20);
        let (authority, served) = slow_reader(
            body.clone(),
            Duration::ZERO,
            2 << 20,
            Duration::from_millis(50),
        );
        post_ok(&authority, Duration::from_secs(1), body).await;
        served.join().unwrap();
    }

    /// An upstream that stops taking the body is given up on after the deadline passes with
    /// no byte taken: the upload does not hang.
    #[tokio::test]
    async fn an_upstream_that_stops_taking_the_body_times_out() {
        let body = counted(8 << 20);
        let (authority, served) =
            slow_reader(body.clone(), Duration::from_secs(3), 0, Duration::ZERO);
        let started = std::time::Instant::now();
        let e = Upstream::default()
            .send(
                &authority,
                Duration::from_secs(2),
                Duration::from_millis(500),
                post(body),
                &[],
                Start::Plain,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Timeout), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(served);
    }

    /// Sends one GET and checks its answer.
    async fn get_ok(up: &Upstream, authority: &Authority) {
        let resp = up
            .send(
                authority,
                Duration::from_secs(2),
                Duration::from_secs(5),
                get(),
                &[],
                Start::Plain,
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
                Duration::from_secs(5),
                post,
                &[],
                Start::Plain,
            )
            .await
            .unwrap_err();
        assert!(!e.is_connect(), "{e}");
        served.join().unwrap();
    }
}
