//! The response body: an upstream answer's body (read whole with its head, or streamed from
//! its connection), or bytes the gateway wrote (a problem, a preflight answer). An enum
//! rather than a boxed trait object: no allocation per response on the hot path.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

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

/// Turns a guard response (bytes) into a gateway response.
pub fn from_guard(resp: http::Response<Bytes>) -> http::Response<Body> {
    resp.map(Body::bytes)
}
