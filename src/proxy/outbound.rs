//! The body of a request sent upstream: the client's own, streamed, or one the gateway holds
//! in full (a form post kept across a login, sent once the user has logged in).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

pin_project! {
    #[project = OutBodyProj]
    pub enum OutBody {
        Streamed { #[pin] body: Incoming },
        Full { bytes: Option<Bytes> },
    }
}

impl From<Incoming> for OutBody {
    fn from(body: Incoming) -> Self {
        OutBody::Streamed { body }
    }
}

impl From<Bytes> for OutBody {
    fn from(bytes: Bytes) -> Self {
        OutBody::Full {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl HttpBody for OutBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            OutBodyProj::Streamed { body } => body.poll_frame(cx),
            OutBodyProj::Full { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Streamed { body } => body.is_end_stream(),
            OutBody::Full { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Streamed { body } => body.size_hint(),
            OutBody::Full { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
