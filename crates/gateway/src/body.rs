//! The response body: an upstream answer's body (read whole with its head, or streamed from
//! its connection), or bytes the gateway wrote (a problem, a preflight answer). An enum
//! rather than a boxed trait object: no allocation per response on the hot path.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    Bytes(Option<Bytes>),
    /// An upstream answer's body still on its connection.
    Upstream(Box<crate::upstream::Streaming>),
}

impl Body {
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        Body::Bytes(Some(b.into()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            Body::Empty => Poll::Ready(None),
            Body::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Upstream(s) => Pin::new(&mut **s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Bytes(b) => b.is_none(),
            Body::Upstream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream(s) => s.size_hint(),
        }
    }
}

/// A client's request body: none, or read by the gateway's HTTP/1 server, or by hyper's
/// HTTP/2 server.
#[derive(Debug, Default)]
pub enum ClientBody {
    #[default]
    Empty,
    H1(crate::h1::RequestBody),
    H2(hyper::body::Incoming),
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// Turns a guard response (bytes) into a gateway response.
pub fn from_guard(resp: http::Response<Bytes>) -> http::Response<Body> {
    resp.map(Body::bytes)
}

/// A client's request body that must be in by a deadline: one limit for the whole body, as
/// the header read timeout is for the head. (tower-http's `TimeoutBody` limits each wait
/// between frames, which a client trickling a byte now and then never meets, holding the
/// upstream connection and the request's place under its limits for as long as it likes.)
pub struct Deadline<B> {
    body: B,
    at: Pin<Box<Sleep>>,
}

impl<B> Deadline<B> {
    pub fn new(body: B, at: Instant) -> Self {
        Self {
            body,
            at: Box::pin(tokio::time::sleep_until(at)),
        }
    }
}

impl<B> std::fmt::Debug for Deadline<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("at", &self.at.deadline())
            .finish_non_exhaustive()
    }
}

/// The request body was not all in by its deadline (answered 408).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not come in time")]
pub struct BodyTimedOut;

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.at.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
