//! What a connection's requests have done, as seen from outside hyper's HTTP/2 server (which
//! has no idle limit of its own: `server::serve_h2` looks at a [`Snapshot`] every
//! `idle_timeout`), and [`Park`]: a connection that can wait for its client's next bytes
//! without reading them (the HTTP/1 server's idle connections, `h1`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// What an HTTP/2 connection's requests have done, as seen by its service and bodies. All of
/// it lives on one worker thread; the atomics only make it `Sync`.
#[derive(Debug, Default)]
pub struct Track {
    /// Requests handed to the service.
    calls: AtomicU32,
    /// Responses hyper has finished with.
    done: AtomicU32,
    /// Frames of answers handed to hyper.
    frames: AtomicU64,
}

impl Track {
    /// Called by the service for each request.
    pub fn request(&self) {
        self.calls.fetch_add(1, Relaxed);
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
}

impl<B> Tracked<B> {
    pub fn new(body: B, track: Arc<Track>) -> Self {
        Tracked { body, track }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.track.done.fetch_add(1, Relaxed);
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

/// Parked only after a read came back empty, when rustls holds no plaintext either: the next
/// bytes can only come from the socket.
impl Park for TlsStream<TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        self.get_ref().0.readable()
    }
}
