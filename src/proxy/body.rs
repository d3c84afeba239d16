//! The one response body type the gateway sends.
//!
//! Either a streamed upstream body (passed through chunk by chunk, never buffered) or a small
//! body the gateway wrote itself. An enum instead of a boxed trait object keeps the hot path
//! free of a per-response allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use pin_project_lite::pin_project;

use super::UpstreamBody;

pin_project! {
    /// Response body: `Upstream` streams, `Full` is a small gateway-made body.
    #[project = BodyProj]
    pub enum Body {
        Upstream { #[pin] body: UpstreamBody },
        Full { bytes: Option<Bytes> },
    }
}

/// Error of a streamed upstream body (the connection broke, or stalled past the timeout).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body {
    pub fn empty() -> Self {
        Body::Full { bytes: None }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Body::Full {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            BodyProj::Upstream { body } => body.poll_frame(cx),
            BodyProj::Full { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream { body } => body.is_end_stream(),
            Body::Full { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream { body } => body.size_hint(),
            Body::Full { bytes: Some(b) } => SizeHint::with_exact(b.len() as u64),
            Body::Full { bytes: None } => SizeHint::with_exact(0),
        }
    }
}
