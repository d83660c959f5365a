//! The gateway's HTTP/1.1 server: one task per connection reads a request head, hands the
//! request to the pipeline, and writes its answer, request after request.
//!
//! hyper's server (still used for HTTP/2) was a quarter of the instructions the gateway
//! executed per proxied request: it reads through a growable buffer it reallocates for every
//! request, keeps a timer per request, runs a dispatcher between the connection and the
//! service, and encodes every field of every answer one by one. Here the parse is httparse's,
//! as in hyper; the rest is what a gateway needs and nothing more:
//!
//! - **Strict framing** (RFC 9112, 6): one `Content-Length` (or repeats of one value), or
//!   `chunked` alone as the transfer coding over HTTP/1.1. A request with both, with
//!   differing lengths, with another coding, or with `chunked` over HTTP/1.0 is refused
//!   before the pipeline sees it (400, 501), and its connection closed: a proxy that frames a
//!   request differently from its upstream is a smuggling channel.
//! - **Deadlines**: the head is due `header_read_timeout` after its first byte (the first
//!   head, after the connection opened: a TLS handshake or a silent client counts); one begun
//!   and not done by then is answered `408` (logged as every refusal is) and the connection
//!   closed; a silent one is closed without a word; an idle
//!   keep-alive connection closes after `idle_timeout`; a client that takes no byte of its
//!   answer for `idle_timeout` is cut (it would hold an upstream connection).
//! - **Idle connections hold no buffer**: after 20 to 40 ms without a request the read and
//!   write buffers are freed, and the connection waits on its socket's readiness alone, so
//!   10,000 idle keep-alive clients cost their tasks and sockets only.
//! - **The body is read only when the pipeline asks** (a `100 Continue` is sent then, when
//!   the client expects one), through the connection's own buffer; the body's limits and
//!   deadline are the pipeline's. An answer sent before the body was all read closes the
//!   connection after it.
//! - A client that closes its connection while its request is in flight cancels it (the
//!   pipeline's future is dropped, as hyper does without half-close support).

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError, ClientBody};
use crate::park::Park;
use crate::spare;
use crate::wire::{self, State, Step};

/// Header fields a request may have.
const MAX_HEADERS: usize = 100;
/// What a read asks the socket for, and the free room below which the buffer grows first.
const READ_BUF: usize = 8 * 1024;
const READ_ROOM: usize = 1024;
/// An answer's body up to this size is copied behind its head: one write.
const INLINE: usize = 16 * 1024;
/// How long a connection stays idle before its buffers go back. Freeing and allocating them
/// again costs far less than a request; a client that sends request after request keeps them.
const GRACE: Duration = Duration::from_millis(20);
/// How long a closing connection waits for its client to take the last bytes.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long, and for how many bytes, a closed connection's remaining input is read and
/// dropped (see `Conn::linger`).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// The connection limits the server keeps.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// The largest request head, in bytes.
    pub max_head: usize,
}

/// An answer, and header lines to write before its map's fields (the route's hardening, when
/// the map started without it).
pub type Answer = (Response<Body>, Option<Bytes>);

/// A request the server could not take: answered with `status`, then the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub status: StatusCode,
    pub why: &'static str,
}

const fn unreadable(status: StatusCode, why: &'static str) -> Unreadable {
    Unreadable { status, why }
}

/// How a request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    /// The client keeps the connection open after the answer.
    keep_alive: bool,
    /// The client waits for `100 Continue` before sending its body.
    expects_continue: bool,
}

/// Parses a head from the front of `buf`: `Ok(None)` when it is not all in yet.
fn parse(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, Unreadable> {
    const TOO_LARGE: Unreadable = unreadable(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "the request head is too large",
    );
    // Uninitialised slots: zeroing them would cost more than the parse of a small head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    // Offsets into the head (under `max_head`, which is under 4 GiB): the head is then split
    // off and frozen, and each value is a view of it.
    let offset = |p: *const u8| (p as usize - base) as u32;
    let mut fields = [[0u32; 4]; MAX_HEADERS];
    let parsed = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots);
    let (len, method, target, version, count) = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= max_head => {
            for (slot, h) in fields.iter_mut().zip(req.headers.iter()) {
                let (n, v) = (offset(h.name.as_ptr()), offset(h.value.as_ptr()));
                *slot = [n, n + h.name.len() as u32, v, v + h.value.len() as u32];
            }
            let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
                .map_err(|_| unreadable(StatusCode::BAD_REQUEST, "the method is invalid"))?;
            let path = req.path.unwrap_or_default();
            let p = offset(path.as_ptr());
            (
                len,
                method,
                (p as usize, p as usize + path.len()),
                req.version.unwrap_or(1),
                req.headers.len(),
            )
        }
        Ok(httparse::Status::Complete(_)) => return Err(TOO_LARGE),
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(TOO_LARGE),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(unreadable(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(unreadable(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "the HTTP version is not supported",
            ));
        }
        Err(_) => {
            return Err(unreadable(
                StatusCode::BAD_REQUEST,
                "the request head does not parse",
            ));
        }
    };
    // Every line ends with CRLF (httparse also takes a bare LF): a front proxy that reads a
    // bare LF otherwise than the gateway does would see other requests in the same bytes.
    if memchr::memchr_iter(b'\n', &buf[..len]).any(|i| i == 0 || buf[i - 1] != b'\r') {
        return Err(unreadable(
            StatusCode::BAD_REQUEST,
            "a line of the head does not end with CRLF",
        ));
    }
    let head = buf.split_to(len).freeze();
    let bad = |why| unreadable(StatusCode::BAD_REQUEST, why);
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1))
        .map_err(|_| bad("the request target is invalid"))?;
    let http11 = version == 1;
    let mut headers = spare::map(count + 8);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep) = (false, false);
    let mut expects_continue = false;
    let (mut hosts, mut host) = (0, None);
    for &[n0, n1, v0, v1] in &fields[..count] {
        let name = wire::field_name(&head[n0 as usize..n1 as usize])
            .ok_or_else(|| bad("a header name is invalid"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| bad("a header value is invalid"))?;
        if name == CONTENT_LENGTH {
            for part in wire::tokens(value.as_bytes()) {
                let n = wire::content_length(part).ok_or(bad("the Content-Length is invalid"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("Content-Length values differ"));
                }
                length = Some(n);
            }
        } else if name == TRANSFER_ENCODING {
            if !http11 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            // (Empty list items are no codings: RFC 9110, 5.6.1; a field of none at all is
            // refused, as it would be alone.)
            if wire::tokens(value.as_bytes()).all(|t| t.is_empty()) {
                return Err(bad("an empty Transfer-Encoding"));
            }
            for coding in wire::tokens(value.as_bytes()).filter(|t| !t.is_empty()) {
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(unreadable(
                        StatusCode::NOT_IMPLEMENTED,
                        "a transfer coding other than chunked",
                    ));
                }
                // Chunked once, and last (RFC 9112, 6.1).
                if chunked {
                    return Err(bad("chunked twice"));
                }
                chunked = true;
            }
            if !chunked {
                return Err(bad("an empty Transfer-Encoding"));
            }
        } else if name == CONNECTION {
            for t in wire::tokens(value.as_bytes()) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == EXPECT {
            expects_continue |= value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == HOST {
            hosts += 1;
            host = Some(value.clone());
        }
        headers.append(name, value);
    }
    // One `Host` (RFC 9112, 3.2: none or several is a 400; HTTP/1.0 may leave it out), and a
    // request target in absolute form names the same: where two servers could each pick a
    // different one, routing and the forwarded host could disagree.
    if hosts > 1 || (http11 && hosts == 0) {
        return Err(bad("a request has one Host field"));
    }
    if let (Some(authority), Some(host)) = (uri.authority(), &host)
        && !authority
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(host.as_bytes())
    {
        return Err(bad("the request target and Host name different hosts"));
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(Head {
        method,
        uri,
        version: if http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        },
        headers,
        framing,
        keep_alive: !close && (http11 || keep),
        // (An HTTP/1.0 client cannot be sent a 1xx: RFC 9110, 15.2.)
        expects_continue: expects_continue && http11 && framing != Framing::None,
    }))
}

/// A request body as the server reads it for the pipeline, frame by frame, when asked.
#[derive(Debug)]
pub struct RequestBody {
    pipe: Arc<Mutex<Pipe>>,
    /// Bytes to come, when the length was declared.
    left: Option<u64>,
}

/// What the connection and the body say to each other. Both are polled by the connection's
/// task in the usual case; the wakers make it right when they are not.
#[derive(Debug, Default)]
struct Pipe {
    /// Bytes read for the body, not yet taken.
    ready: Option<Bytes>,
    /// The body's end: all of it read, or how it failed.
    end: Option<Result<(), &'static str>>,
    /// The body asked for more.
    wanted: bool,
    reader: Option<Waker>,
    conn: Option<Waker>,
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// The request body could not be read (malformed chunks, the client gone).
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct BodyError(&'static str);

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut p = this.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = p.ready.take() {
            if let Some(left) = &mut this.left {
                *left = left.saturating_sub(b.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match p.end {
            Some(Ok(())) => return Poll::Ready(None),
            Some(Err(why)) => return Poll::Ready(Some(Err(Box::new(BodyError(why))))),
            None => {}
        }
        remember(&mut p.reader, cx);
        // The connection is told once: it keeps feeding until the ask is met. (Woken at every
        // poll, a connection polling this body itself would spin while the client is slow.)
        if !p.wanted {
            p.wanted = true;
            wake(&mut p.conn);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let p = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        p.ready.is_none() && p.end == Some(Ok(()))
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// What the connection's one timer is armed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Armed {
    Nothing,
    /// The grace before an idle connection's buffers go, armed after this many answers.
    Grace(u32),
    /// The keep-alive idle limit, once parked.
    Idle,
    /// The head deadline, for the head after this many answers.
    Head(u32),
    /// The send limit, for this many bytes taken by the client.
    Send(u64),
}

/// A connection's state between requests and within one.
struct Conn<'t, C> {
    io: C,
    /// Bytes read and not yet parsed (a head, a body, a pipelined request).
    buf: BytesMut,
    /// An answer's head (and small body) on its way out.
    out: Vec<u8>,
    timer: Pin<&'t mut Sleep>,
    armed: Armed,
    /// When the first head is due.
    first: Instant,
    /// When the quiet spell after this many answers ends the connection.
    idle_until: Option<(u32, Instant)>,
    /// Answers sent.
    served: u32,
    /// Bytes the client took.
    written: u64,
    cfg: Config,
}

/// What came: a request head, or what instead. (Returned once per request, never stored: a
/// box for the head would cost an allocation each time.)
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(Head),
    Unreadable(Unreadable),
    /// A head begun and not finished in time (slowloris): answered 408, then closed.
    Late,
    /// Idle past the grace: wait for the socket with nothing allocated.
    Park,
    /// The client left, or the gateway is stopping.
    Gone,
}

impl<C: Park> Conn<'_, C> {
    /// Reads into the buffer, growing it first when it is nearly full.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            self.buf.reserve(READ_BUF);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Re-arms the timer for `what` (due at `at`) unless it is armed for it already, and
    /// polls it: `true` once it fired.
    fn expired(&mut self, cx: &mut Context<'_>, what: Armed, at: impl FnOnce() -> Instant) -> bool {
        if self.armed != what {
            self.armed = what;
            self.timer.as_mut().reset(at());
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    fn poll_head(&mut self, cx: &mut Context<'_>, stop: &mut watch::Receiver<bool>) -> Poll<Next> {
        loop {
            if !self.buf.is_empty() {
                match parse(&mut self.buf, self.cfg.max_head) {
                    Ok(Some(head)) => return Poll::Ready(Next::Head(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Next::Unreadable(e)),
                }
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Next::Gone),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => {}
            }
            let idle = self.buf.is_empty();
            if idle && stop.has_changed().unwrap_or(true) && *stop.borrow_and_update() {
                return Poll::Ready(Next::Gone);
            }
            if !idle {
                // The first head is due since the connection opened; the others since their
                // first bytes.
                let (served, hrt, first) = (self.served, self.cfg.header_read_timeout, self.first);
                let by = move || {
                    if served == 0 {
                        first
                    } else {
                        Instant::now() + hrt
                    }
                };
                if self.expired(cx, Armed::Head(served), by) {
                    return Poll::Ready(Next::Late);
                }
                return Poll::Pending;
            }
            if self.served == 0 {
                // Nothing asked yet, nothing held: parked at once.
                return Poll::Ready(Next::Park);
            }
            // Idle after an answer. The grace is armed once, for the count of answers sent
            // then; when it fires, the connection parks only if it sent none since, else it
            // is armed again. A busy connection so resets it at most once per `GRACE` (not
            // after every answer), and parks after `GRACE` to twice that of quiet.
            if let Armed::Grace(n) = self.armed {
                // Registered when armed: in between, only its state is read.
                if !self.timer.is_elapsed() {
                    return Poll::Pending;
                }
                if n == self.served {
                    return Poll::Ready(Next::Park);
                }
            }
            let served = self.served;
            if self.expired(cx, Armed::Grace(served), || Instant::now() + GRACE) {
                return Poll::Ready(Next::Park);
            }
            return Poll::Pending;
        }
    }

    /// Reads and drops what the client still sends, for a while, after the gateway closed its
    /// side: closing a socket with unread bytes makes the kernel reset the connection, and the
    /// client, still sending its body, would lose the answer (a 413, a 401) before reading it.
    /// Bounded in time and bytes (as nginx's `lingering_close`).
    async fn linger(&mut self) {
        let mut drained = 0usize;
        let _ = tokio::time::timeout(LINGER, async {
            while drained < LINGER_BYTES {
                self.buf.clear();
                match poll_fn(|cx| self.poll_fill(cx)).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }

    /// Waits for a parked connection's next bytes (nothing allocated), up to `idle_timeout`
    /// or the gateway's stop: `false` when the connection is to close.
    async fn park(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        self.buf = BytesMut::new();
        self.out = Vec::new();
        // A connection that has asked nothing yet is late, not idle. The idle deadline is set
        // once per quiet spell: a wake with nothing to read (a TLS record without data, a key
        // update) does not start it again.
        let at = if self.served == 0 {
            self.first
        } else {
            match self.idle_until {
                Some((n, at)) if n == self.served => at,
                _ => {
                    let at = Instant::now() + self.cfg.idle_timeout.saturating_sub(GRACE);
                    self.idle_until = Some((self.served, at));
                    at
                }
            }
        };
        self.armed = Armed::Idle;
        self.timer.as_mut().reset(at);
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => false,
            () = self.timer.as_mut() => false,
            r = self.io.readable() => r.is_ok(),
        }
    }

    /// Drives the pipeline's future for one request: feeds its body when it asks, and
    /// otherwise watches for the client leaving (reading ahead what it sends, a pipelined
    /// request, up to a head's size). `None` when the client left.
    fn poll_drive<F: Future<Output = Answer>>(
        &mut self,
        cx: &mut Context<'_>,
        fut: Pin<&mut F>,
        body: &mut Option<Feed>,
    ) -> Poll<Option<Answer>> {
        let mut fut = fut;
        loop {
            if let Poll::Ready(answer) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(answer));
            }
            if let Some(feed) = body.as_mut().filter(|f| !f.ended) {
                match self.poll_feed(cx, feed) {
                    Poll::Ready(()) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.buf.len() >= self.cfg.max_head {
                return Poll::Pending;
            }
            return match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(None),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => Poll::Pending,
            };
        }
    }

    /// Hands the body the next piece it asked for: `Ready` when something changed.
    fn poll_feed(&mut self, cx: &mut Context<'_>, feed: &mut Feed) -> Poll<()> {
        let pipe = feed.pipe.clone();
        let mut p = pipe.lock().unwrap_or_else(PoisonError::into_inner);
        remember(&mut p.conn, cx);
        if !p.wanted || p.ready.is_some() {
            return Poll::Pending;
        }
        // `100 Continue`, written and flushed (over TLS a write may be taken into the session
        // and wait there for the flush) before the body is waited for.
        while feed.continue_sent < CONTINUE.len() {
            match Pin::new(&mut self.io).poll_write(cx, &CONTINUE[feed.continue_sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => feed.continue_sent += n,
                Poll::Ready(_) => return feed.finish(&mut p, Err("the client is gone")),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !feed.continue_flushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => feed.continue_flushed = true,
                Poll::Ready(Err(_)) => return feed.finish(&mut p, Err("the client is gone")),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            match wire::decode(&mut feed.state, &mut self.buf, &mut feed.trailers) {
                Ok(Step::Data(b)) => {
                    p.ready = Some(b);
                    p.wanted = false;
                    wake(&mut p.reader);
                    return Poll::Ready(());
                }
                Ok(Step::End) => return feed.finish(&mut p, Ok(())),
                Err(why) => return feed.finish(&mut p, Err(why)),
                Ok(Step::More) => {}
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return feed.finish(&mut p, Err("the body was cut short")),
                Poll::Ready(Err(_)) => return feed.finish(&mut p, Err("the client is gone")),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes all of `parts` in order, cutting the client after `idle_timeout` without a byte
    /// taken. One part goes out with a plain write: the kernel's vectored path (`writev`) costs
    /// more per call than `send`, and most answers are one part (a head with a small body).
    async fn send(&mut self, parts: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut parts = parts;
        IoSlice::advance_slices(&mut parts, 0);
        poll_fn(|cx| {
            while !parts.is_empty() {
                let io = Pin::new(&mut self.io);
                let written = match parts {
                    [one] => io.poll_write(cx, one),
                    _ => io.poll_write_vectored(cx, parts),
                };
                match written {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.written += n as u64;
                        IoSlice::advance_slices(&mut parts, n);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return self.poll_stalled(cx),
                }
            }
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Pending => self.poll_stalled(cx),
                r => r,
            }
        })
        .await
    }

    /// A write waits for the client: pending until the send limit passes without progress.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (taken, idle) = (self.written, self.cfg.idle_timeout);
        if self.expired(cx, Armed::Send(taken), || Instant::now() + idle) {
            tracing::debug!(target: "portcullis::accept", "the client took none of its answer in time; connection closed");
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }

    /// Writes an answer; `Ok(false)` when the connection must close after it.
    async fn respond(
        &mut self,
        (resp, block): Answer,
        head_request: bool,
        http11: bool,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let bodiless = head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let size = body.size_hint().exact();
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(block) = &block {
            out.extend_from_slice(block);
        }
        let mut dated = false;
        let mut length_given = false;
        for (name, value) in &parts.headers {
            if name == CONTENT_LENGTH {
                // The body's own length is what frames it; a bodiless answer (HEAD, 304)
                // keeps the length its body would have had.
                if !bodiless || status == StatusCode::NO_CONTENT || length_given {
                    continue;
                }
                length_given = true;
            } else if name == TRANSFER_ENCODING || name == CONNECTION {
                continue;
            } else if name == DATE {
                dated = true;
            }
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        let mut chunked = false;
        if bodiless {
            if head_request
                && !length_given
                && let Some(n) = size.filter(|n| *n > 0)
            {
                length_field(out, n);
            }
        } else if let Some(n) = size {
            length_field(out, n);
        } else if http11 {
            field(out, b"transfer-encoding", b"chunked");
            chunked = true;
        } else {
            // An HTTP/1.0 client reads a body of unknown length to the connection's end.
            keep_alive = false;
        }
        if !keep_alive {
            field(out, b"connection", b"close");
        } else if !http11 {
            field(out, b"connection", b"keep-alive");
        }
        if !dated {
            field(out, b"date", &date());
        }
        out.extend_from_slice(b"\r\n");
        spare::give(parts.headers);
        let body = if bodiless { Body::Empty } else { body };
        match body {
            Body::Empty | Body::Bytes(None) => {
                let out = std::mem::take(&mut self.out);
                let r = self.send(&mut [IoSlice::new(&out)]).await;
                self.out = out;
                r?;
            }
            Body::Bytes(Some(b)) => {
                let mut out = std::mem::take(&mut self.out);
                let r = if b.len() <= INLINE {
                    out.extend_from_slice(&b);
                    self.send(&mut [IoSlice::new(&out)]).await
                } else {
                    self.send(&mut [IoSlice::new(&out), IoSlice::new(&b)]).await
                };
                self.out = out;
                r?;
            }
            Body::Upstream(mut stream) => {
                let out = std::mem::take(&mut self.out);
                let r = self.send(&mut [IoSlice::new(&out)]).await;
                self.out = out;
                r?;
                let mut sent = 0u64;
                loop {
                    let frame = poll_fn(|cx| Pin::new(&mut *stream).poll_frame(cx)).await;
                    let data = match frame {
                        None => break,
                        Some(Ok(f)) => match f.into_data() {
                            Ok(d) if !d.is_empty() => d,
                            _ => continue,
                        },
                        Some(Err(e)) => {
                            // Cut short: the client must see the answer end early, not a
                            // whole one.
                            tracing::debug!(target: "portcullis::upstream", error = %e, "the answer's body failed mid-way; connection closed");
                            return Ok(false);
                        }
                    };
                    sent += data.len() as u64;
                    if chunked {
                        let size = format!("{:x}\r\n", data.len());
                        self.send(&mut [
                            IoSlice::new(size.as_bytes()),
                            IoSlice::new(&data),
                            IoSlice::new(b"\r\n"),
                        ])
                        .await?;
                    } else {
                        self.send(&mut [IoSlice::new(&data)]).await?;
                    }
                }
                if chunked {
                    self.send(&mut [IoSlice::new(b"0\r\n\r\n")]).await?;
                } else if size.is_some_and(|n| n != sent) {
                    return Ok(false);
                }
            }
        }
        self.served += 1;
        Ok(keep_alive)
    }
}

/// A request body being fed from the connection.
struct Feed {
    pipe: Arc<Mutex<Pipe>>,
    state: State,
    trailers: usize,
    /// Bytes of `100 Continue` written (all of it once sent, or when none is expected), and
    /// whether they were flushed.
    continue_sent: usize,
    continue_flushed: bool,
    ended: bool,
    /// Read whole, to its end.
    whole: bool,
}

impl Feed {
    fn finish(&mut self, p: &mut Pipe, end: Result<(), &'static str>) -> Poll<()> {
        self.ended = true;
        self.whole = end.is_ok();
        p.end = Some(end);
        p.wanted = false;
        wake(&mut p.reader);
        Poll::Ready(())
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // One check for room rather than four.
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A length field (`fmt` machinery costs more than the rest of a small answer's head).
fn length_field(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    field(out, b"content-length", &digits[at..]);
}

/// The `Date` of answers that carry none (the gateway's own), formatted once a second.
fn date() -> [u8; 29] {
    use std::cell::Cell;
    thread_local! {
        static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [b' '; 29])) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|c| {
        let (at, text) = c.get();
        if at == secs {
            return text;
        }
        let mut out = [b' '; 29];
        let s = httpdate::fmt_http_date(now);
        let n = s.len().min(29);
        out[..n].copy_from_slice(&s.as_bytes()[..n]);
        c.set((secs, out));
        out
    })
}

/// Serves HTTP/1.1 on `io` until the client leaves, the connection idles past
/// `idle_timeout`, a head takes longer than `header_read_timeout`, the client takes no byte
/// of an answer for `idle_timeout`, or `stop` turns true (a request in flight finishes
/// first, its answer saying `Connection: close`). `service` answers each request; `refuse`
/// answers one that could not be read.
pub async fn serve<C, S, F>(
    io: C,
    opened: Instant,
    cfg: Config,
    mut stop: watch::Receiver<bool>,
    service: S,
    refuse: impl Fn(Unreadable) -> Response<Body>,
) where
    C: Park,
    S: Fn(Request<ClientBody>) -> F,
    F: Future<Output = Answer>,
{
    let first = opened + cfg.header_read_timeout;
    let timer = pin!(tokio::time::sleep_until(first));
    let mut conn = Conn {
        io,
        buf: BytesMut::new(),
        out: Vec::new(),
        timer,
        armed: Armed::Nothing,
        first,
        idle_until: None,
        served: 0,
        written: 0,
        cfg,
    };
    // The connection closes with the client's bytes still coming (a body not read, a head
    // refused): see `Conn::linger`.
    let mut linger = false;
    loop {
        let head = match poll_fn(|cx| conn.poll_head(cx, &mut stop)).await {
            Next::Head(h) => h,
            Next::Park => {
                if conn.park(&mut stop).await {
                    continue;
                }
                break;
            }
            Next::Gone => break,
            Next::Unreadable(u) => {
                let _ = conn.respond((refuse(u), None), false, true, false).await;
                linger = true;
                break;
            }
            // Said and logged as a refusal is. The client may still be sending: its bytes are
            // read and dropped for a bounded while, or closing would reset the connection
            // before it read the answer.
            Next::Late => {
                let late = unreadable(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request head did not arrive in time",
                );
                let _ = conn.respond((refuse(late), None), false, true, false).await;
                linger = true;
                break;
            }
        };
        let Head {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            expects_continue,
        } = head;
        let head_request = method == Method::HEAD;
        let http11 = version == Version::HTTP_11;
        let (body, mut feed) = match framing {
            Framing::None => (ClientBody::Empty, None),
            Framing::Length(_) | Framing::Chunked => {
                let pipe = Arc::new(Mutex::new(Pipe::default()));
                let (state, left) = match framing {
                    Framing::Length(n) => (State::Length(n), Some(n)),
                    _ => (State::ChunkSize, None),
                };
                let feed = Feed {
                    pipe: pipe.clone(),
                    state,
                    trailers: 0,
                    continue_sent: if expects_continue { 0 } else { CONTINUE.len() },
                    continue_flushed: !expects_continue,
                    ended: false,
                    whole: false,
                };
                (ClientBody::H1(RequestBody { pipe, left }), Some(feed))
            }
        };
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        let resp = {
            let mut fut = pin!(service(req));
            poll_fn(|cx| conn.poll_drive(cx, fut.as_mut(), &mut feed)).await
        };
        let Some(resp) = resp else { break };
        // A `100 Continue` cut short is finished first: the answer must not start inside it.
        if let Some(f) = feed
            .as_ref()
            .filter(|f| (1..CONTINUE.len()).contains(&f.continue_sent))
            && conn
                .send(&mut [IoSlice::new(&CONTINUE[f.continue_sent..])])
                .await
                .is_err()
        {
            break;
        }
        // A body not read to its end leaves the connection at an unknown point of it.
        let whole = feed.as_ref().is_none_or(|f| f.whole);
        linger = !whole;
        let stopping = stop.has_changed().unwrap_or(true) && *stop.borrow_and_update();
        drop(feed);
        match conn
            .respond(resp, head_request, http11, keep_alive && whole && !stopping)
            .await
        {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
    }
    // Closed by the gateway's side: a TLS session says so (`close_notify`), else a client
    // cannot tell an answer read to the connection's end from one cut short. Bounded: the
    // client may not be reading.
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.io.shutdown()).await;
    if linger {
        conn.linger().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Result<Option<Head>, Unreadable> {
        parse(&mut BytesMut::from(head), 8 * 1024)
    }

    #[test]
    fn framing_is_read_strictly() {
        let ok = |h: &str| parsed(h).unwrap().unwrap();
        assert_eq!(
            ok("GET / HTTP/1.1\r\nHost: x\r\n\r\n").framing,
            Framing::None
        );
        let post =
            ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(post.framing, Framing::Length(5));
        let chunked = ok("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked);
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::None
        );
        for (head, status) in [
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                501,
            ),
            // A space before the colon, and a folded line: read differently by different
            // servers, so refused.
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ] {
            let got = parsed(head).map(|h| h.map(|h| h.framing));
            assert_eq!(
                got.err().map(|u| u.status.as_u16()),
                Some(status),
                "{head:?}"
            );
        }
    }

    #[test]
    fn heads_are_bounded_and_connections_kept_as_asked() {
        assert!(parsed("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let hosts = |h: &str| parsed(h).err().map(|u| u.why);
        assert_eq!(
            hosts("GET / HTTP/1.1\r\n\r\n"),
            Some("a request has one Host field")
        );
        assert_eq!(hosts("GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(
            hosts("GET http://y/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("the request target and Host name different hosts")
        );
        assert_eq!(hosts("GET http://X/ HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(parsed(&big).err().map(|u| u.status.as_u16()), Some(431));
        let partial_big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}", "a".repeat(9000));
        assert_eq!(
            parsed(&partial_big).err().map(|u| u.status.as_u16()),
            Some(431)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(parsed(&many).err().map(|u| u.status.as_u16()), Some(431));
        let keep = |h: &str| parsed(h).unwrap().unwrap().keep_alive;
        assert!(keep("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!keep(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        let expect = |h: &str| parsed(h).unwrap().unwrap().expects_continue;
        assert!(expect(
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!expect(
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
        ));
    }

    #[test]
    fn a_pipelined_head_stays_buffered() {
        let mut buf =
            BytesMut::from("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        let a = parse(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(a.uri.path(), "/a");
        let b = parse(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(b.uri.path(), "/b");
        assert!(buf.is_empty());
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0u64, 7, 10, 134, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            length_field(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").into_bytes());
        }
    }
}
