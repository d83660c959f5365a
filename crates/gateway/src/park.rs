//! Idle HTTP/1 keep-alive connections (cleartext or TLS) hold no hyper buffers.
//!
//! hyper gives every HTTP/1 connection an 8 KiB read buffer and an 8 KiB write buffer and keeps
//! both for the connection's whole life, so 10,000 idle keep-alive clients cost 160 MiB of
//! buffers that hold nothing. nginx frees its buffers between requests instead; this does the
//! same on top of hyper. A connection is served in *spells*: a hyper connection is built when
//! the socket becomes readable, serves requests while the client keeps sending, and is taken
//! apart ([`hyper::server::conn::http1::Connection::into_parts`], after a graceful shutdown that
//! hyper completes at once on an idle connection) once it has been idle for `GRACE` to twice
//! that (20 to 40 ms). The socket then waits for the next request with nothing allocated but
//! the task, and a keep-alive connection that stays silent for `idle_timeout` is closed.
//!
//! "Idle" is observed from outside hyper, by [`Track`]: every response handed to hyper has been
//! dropped by it (sent), nothing was read since the last one ended (no partial head is being
//! received; a slow head keeps hyper's header-read timer running), hyper's last read found the
//! socket empty, and its last write was flushed. Should those ever disagree with hyper's own
//! state, the graceful shutdown degrades to `Connection: close` after the response in flight,
//! which is still correct HTTP.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

/// What a spell's hyper connection has done, as seen by its socket, service and bodies. All of
/// it lives on one worker thread; the atomics only make it `Sync`.
#[derive(Debug, Default)]
pub struct Track {
    /// Requests handed to the service.
    calls: AtomicU32,
    /// Responses hyper has finished with.
    done: AtomicU32,
    /// Bytes read from the socket, and that count when the last response was finished.
    read: AtomicU64,
    read_at_done: AtomicU64,
    /// Whether hyper's last read found nothing to read.
    read_waiting: AtomicBool,
    /// Whether something was written since hyper's last flush.
    unflushed: AtomicBool,
    /// Bytes the client's socket took, and whether hyper's last write or flush found it full.
    written: AtomicU64,
    write_waiting: AtomicBool,
    /// Frames of answers handed to hyper.
    frames: AtomicU64,
}

impl Track {
    /// Called by the service for each request.
    pub fn request(&self) {
        self.calls.fetch_add(1, Relaxed);
    }

    /// Whether a request head is being received (bytes came after the last response, and no
    /// request was dispatched from them yet), with the count of requests before it.
    fn head_pending(&self) -> Option<u32> {
        let calls = self.calls.load(Relaxed);
        (calls == self.done.load(Relaxed)
            && self.read.load(Relaxed) > self.read_at_done.load(Relaxed))
        .then_some(calls)
    }

    /// While hyper waits for the client to take more of an answer: the bytes taken so far.
    fn write_stalled(&self) -> Option<u64> {
        self.write_waiting
            .load(Relaxed)
            .then(|| self.written.load(Relaxed))
    }

    fn idle(&self) -> bool {
        self.calls.load(Relaxed) == self.done.load(Relaxed)
            && self.read.load(Relaxed) == self.read_at_done.load(Relaxed)
            && self.read_waiting.load(Relaxed)
            && !self.unflushed.load(Relaxed)
    }
}

/// A response body that tells the [`Track`] when hyper is done with it.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    track: Arc<Track>,
}

/// What a connection had done at one look: requests begun, requests answered, and frames of
/// answers handed to hyper (a frame is handed on only when the client has room for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    calls: u32,
    done: u32,
    frames: u64,
}

impl Snapshot {
    /// A request is open.
    pub fn open(&self) -> bool {
        self.calls != self.done
    }

    /// Nothing open at either look, and nothing begun between.
    pub fn idle_since(&self, before: &Snapshot) -> bool {
        !self.open() && !before.open() && self.calls == before.calls
    }
}

impl Track {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            calls: self.calls.load(Relaxed),
            done: self.done.load(Relaxed),
            frames: self.frames.load(Relaxed),
        }
    }

    /// Notes a write's outcome: bytes taken, or the socket full.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        self.write_waiting.store(r.is_pending(), Relaxed);
        if let Poll::Ready(Ok(n)) = r {
            // One thread writes: a plain add, without a locked instruction.
            self.written
                .store(self.written.load(Relaxed) + *n as u64, Relaxed);
        }
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, track: Arc<Track>) -> Self {
        Tracked { body, track }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        let t = &self.track;
        t.read_at_done.store(t.read.load(Relaxed), Relaxed);
        t.done.fetch_add(1, Relaxed);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(_)) = r {
            let t = &self.track;
            t.frames.store(t.frames.load(Relaxed) + 1, Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection that can wait for its client's next bytes without reading them.
pub trait Park: AsyncRead + AsyncWrite + Unpin {
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
}

impl Park for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        TcpStream::readable(self)
    }
}

/// Parked only after hyper's read came back empty, when rustls holds no plaintext either: the
/// next bytes can only come from the socket.
impl Park for TlsStream<TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        self.get_ref().0.readable()
    }
}

/// The socket as one spell's hyper connection sees it: the bytes the previous spell read but
/// did not parse come first, and every read, write and flush is noted in the [`Track`].
pub struct Watched<'a, S> {
    stream: &'a mut S,
    carry: Bytes,
    track: Arc<Track>,
}

impl<S> std::fmt::Debug for Watched<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("carry", &self.carry.len())
            .field("track", &self.track)
            .finish_non_exhaustive()
    }
}

impl<'a, S> Watched<'a, S> {
    /// `stream` watched whole (an HTTP/2 connection: one connection for its life).
    pub fn new(stream: &'a mut S, track: Arc<Track>) -> Self {
        Watched {
            stream,
            carry: Bytes::new(),
            track,
        }
    }
}

impl<S: Park> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if !this.carry.is_empty() {
            let n = this.carry.len().min(buf.remaining());
            buf.put_slice(&this.carry[..n]);
            this.carry.advance(n);
        } else {
            let r = Pin::new(&mut *this.stream).poll_read(cx, buf);
            this.track.read_waiting.store(r.is_pending(), Relaxed);
            if r.is_pending() {
                return r;
            }
            if let Poll::Ready(Err(_)) = r {
                return r;
            }
        }
        let n = (buf.filled().len() - before) as u64;
        this.track.read.fetch_add(n, Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<S: Park> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.track.unflushed.store(true, Relaxed);
        let r = Pin::new(&mut *self.stream).poll_write(cx, buf);
        self.track.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.track.unflushed.store(true, Relaxed);
        let r = Pin::new(&mut *self.stream).poll_write_vectored(cx, bufs);
        self.track.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut *self.stream).poll_flush(cx);
        self.track.write_waiting.store(r.is_pending(), Relaxed);
        if let Poll::Ready(Ok(())) = r {
            self.track.unflushed.store(false, Relaxed);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}

/// How long a closing connection waits for its client to take the last bytes.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a connection stays idle before its buffers go back. Taking a connection apart and
/// building it again costs about a microsecond; a client that sends request after request (a
/// load test, a busy service) keeps its connection whole and pays nothing, while at most one
/// rebuild per 20 ms of a connection's life is a negligible share of any request rate.
const GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// What the spell's timer is armed for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Armed {
    Nothing,
    /// The grace, for the count of responses sent when it was armed.
    Grace(u32),
    /// The head-read deadline, for the head that follows this many requests.
    Head(u32),
    /// The send limit, for this many bytes taken by the client.
    Send(u64),
}

/// Serves HTTP/1 on `stream` until the client leaves, the connection idles past
/// `idle_timeout`, a request head takes longer than `header_read_timeout` to arrive
/// (slowloris), the client takes no byte of an answer for `idle_timeout` (a slow reader,
/// holding its connection and the upstream's), or `stop` turns true (requests in flight then
/// finish first). `service` builds
/// the service for one spell from that spell's [`Track`], and `builder` its hyper builder
/// (made per spell rather than kept, so the parked task is smaller).
///
/// The head-read deadline is kept here, not by hyper: hyper allocates and registers a fresh
/// timer for every request it reads, while here the timer is armed only when a head is seen
/// arriving in pieces (a whole head is dispatched in the poll that reads it).
pub async fn serve<C: Park, S, F>(
    mut stream: C,
    opened: Instant,
    builder: impl Fn() -> hyper::server::conn::http1::Builder,
    header_read_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    mut service: F,
) -> Result<(), hyper::Error>
where
    F: FnMut(Arc<Track>) -> S,
    S: hyper::service::HttpService<hyper::body::Incoming> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The connection's first head must be in by then (TLS handshake, or the wait for the
    // HTTP/2 preface, included).
    let first_head_by = opened + header_read_timeout;
    // No answer sent on the connection yet: its first head is due by `first_head_by`.
    let mut fresh = true;
    let mut carry = Bytes::new();
    // One timer, reset for each use: the idle timeout while parked; while serving, the grace
    // or the head-read deadline.
    let mut timer = std::pin::pin!(tokio::time::sleep(idle_timeout));
    // The first spell starts at once: bytes may already wait in a TLS session, where the
    // socket's readiness cannot tell. A spell parts only after hyper's read found nothing.
    // (One labelled loop rather than a wrapper around it: the connection's task would keep
    // room for its arguments twice.)
    let ended = 'conn: loop {
        let track = Arc::new(Track::default());
        let io = Watched {
            stream: &mut stream,
            carry: std::mem::take(&mut carry),
            track: track.clone(),
        };
        let conn =
            builder().serve_connection(hyper_util::rt::TokioIo::new(io), service(track.clone()));
        // Boxed: a parked connection's task does not keep room for hyper's connection state.
        let mut conn = Box::new(conn);
        let mut parting = false;
        let mut stopping = false;
        // The grace timer is armed once, when the connection first goes idle, for the count of
        // responses sent then; when it fires, the connection parts only if it is idle and sent
        // nothing since, else it is armed again. A busy connection so resets it at most once
        // per `GRACE` rather than after every response, and parks after `GRACE` to
        // 2 x `GRACE` of quiet.
        let mut armed = Armed::Nothing;
        // Whether the spell ended with the connection idle (else the client left, or the
        // gateway is stopping).
        let parted = poll_fn(|cx| {
            loop {
                if !stopping
                    && !parting
                    && stop.has_changed().unwrap_or(true)
                    && *stop.borrow_and_update()
                {
                    stopping = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
                match conn.poll_without_shutdown(cx) {
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(parting && !stopping)),
                    Poll::Pending => {}
                }
                if let Some(before) = track.head_pending() {
                    if armed != Armed::Head(before) {
                        armed = Armed::Head(before);
                        let by = Instant::now() + header_read_timeout;
                        timer.as_mut().reset(if fresh && before == 0 {
                            by.min(first_head_by)
                        } else {
                            by
                        });
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    tracing::debug!(target: "portcullis::accept", "request head not received in time; connection closed");
                    return Poll::Ready(Ok(false));
                }
                // hyper polls neither the answer's body nor a timer while the client's socket
                // is full: the wait is bounded here, from the last byte the client took.
                if let Some(taken) = track.write_stalled() {
                    if armed != Armed::Send(taken) {
                        armed = Armed::Send(taken);
                        timer.as_mut().reset(Instant::now() + idle_timeout);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    tracing::debug!(target: "portcullis::accept", "the client took none of its answer in time; connection closed");
                    return Poll::Ready(Ok(false));
                }
                if parting || stopping || !track.idle() {
                    return Poll::Pending;
                }
                let done = track.done.load(Relaxed);
                let fresh = !matches!(armed, Armed::Grace(_));
                if fresh {
                    armed = Armed::Grace(done);
                    timer.as_mut().reset(Instant::now() + GRACE);
                }
                // Polled after each reset, which registers this task to be woken; in between
                // only its state is read (the connection goes idle after every response, and a
                // poll each time costs several times more).
                let pending = if fresh {
                    timer.as_mut().poll(cx).is_pending()
                } else {
                    !timer.is_elapsed()
                };
                if pending {
                    return Poll::Pending;
                }
                if armed != Armed::Grace(done) {
                    // Responses went out since it was armed: a fresh grace.
                    armed = Armed::Grace(done);
                    timer.as_mut().reset(Instant::now() + GRACE);
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    continue;
                }
                parting = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
        })
        .await;
        let parted = match parted {
            Ok(p) => p,
            Err(e) => break 'conn Err(e),
        };
        if !parted {
            break 'conn Ok(());
        }
        // What hyper had read and not parsed yet (usually nothing), copied out: it is a view
        // into hyper's 8 KiB read buffer, which it would keep alive (even an empty view does,
        // hence the drop before parking).
        let rest = conn.into_parts().read_buf;
        fresh &= track.done.load(Relaxed) == 0;
        drop(track);
        if !rest.is_empty() {
            carry = Bytes::copy_from_slice(&rest);
            continue;
        }
        drop(rest);
        // Parked: nothing is held for this connection but its task. (Before its first
        // request, a connection is not idle but late: a TLS client that says nothing after
        // its handshake.)
        timer.as_mut().reset(if fresh {
            first_head_by
        } else {
            Instant::now() + idle_timeout
        });
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break 'conn Ok(()),
            _ = timer.as_mut() => break 'conn Ok(()),
            r = stream.readable() => if r.is_err() { break 'conn Ok(()) },
        }
    };
    // Closed by the gateway's side: a TLS session says so (`close_notify`), else a client
    // cannot tell an answer read to the connection's end from one cut short. Bounded: the
    // client may not be reading.
    let _ = tokio::time::timeout(CLOSE_WAIT, stream.shutdown()).await;
    ended
}
