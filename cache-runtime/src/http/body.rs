//! [`CacheBody`]: the body of a response from the layer, which never holds
//! more of a handler's body than the cache could store.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::sync::mpsc;

use super::response::BodyError;

/// A frame of a handler's body on its way to the client.
pub(crate) type Sent = Result<Frame<Bytes>, BodyError>;

pin_project_lite::pin_project! {
    /// The body of a response from [`CacheService`](super::CacheService):
    /// one the layer built from an entry; the handler's own, streamed
    /// through as it arrives (a response the layer does not store); or the
    /// handler's body forwarded frame by frame as it arrives while the layer
    /// copies it for the store.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Built { #[pin] body: Full<Bytes> },
        Handler { #[pin] body: B },
        Forwarded { frames: mpsc::Receiver<Sent>, size: SizeHint },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn built(body: Full<Bytes>) -> Self {
        CacheBody {
            kind: Kind::Built { body },
        }
    }

    pub(crate) fn handler(body: B) -> Self {
        CacheBody {
            kind: Kind::Handler { body },
        }
    }

    /// The frames that arrive on `frames`, `size` long when the handler
    /// said (its `Content-Length`).
    pub(crate) fn forwarded(frames: mpsc::Receiver<Sent>, size: Option<u64>) -> Self {
        CacheBody {
            kind: Kind::Forwarded {
                frames,
                size: size.map_or_else(SizeHint::default, SizeHint::with_exact),
            },
        }
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Built { .. } => "built",
            Kind::Handler { .. } => "handler",
            Kind::Forwarded { .. } => "forwarded",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project().kind.project() {
            KindProj::Built { body } => body.poll_frame(cx).map_err(|never| match never {}),
            KindProj::Handler { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Forwarded { frames, .. } => frames.poll_recv(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Built { body } => body.is_end_stream(),
            Kind::Handler { body } => body.is_end_stream(),
            Kind::Forwarded { size, .. } => size.exact() == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Built { body } => body.size_hint(),
            Kind::Handler { body } => body.size_hint(),
            Kind::Forwarded { size, .. } => *size,
        }
    }
}

/// Reads a handler's body, forwarding each frame to the client as it
/// arrives (when there is one, and for as long as it listens), and copying
/// its data while it fits in `max` bytes: the body, or `None` when it grew
/// past that. `open` sends the response's head, and gives where its frames
/// go: it is called when the first frame is in hand, so that the head and
/// the first bytes leave together (written apart, the bytes could wait for
/// the client's delayed ACK of the head, some 40 ms where the server's
/// socket has Nagle's algorithm on). With no client left, reading stops
/// once the body cannot be stored.
pub(crate) async fn copy<B, F>(
    body: B,
    open: Option<F>,
    max: usize,
) -> Result<Option<Bytes>, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BodyError>,
    F: FnOnce() -> Option<mpsc::Sender<Sent>>,
{
    let mut body = std::pin::pin!(body);
    let mut open = open;
    let mut client = None;
    let mut copied = Some(Vec::new());
    loop {
        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        if let Some(open) = open.take() {
            client = open();
        }
        // Converted at once: the handler's error type need not be `Send`.
        let Some(frame) = next.map(|frame| frame.map_err(Into::<BodyError>::into)) else {
            break;
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                if let Some(client) = &client {
                    drop(client.send(Err(error.to_string().into())).await);
                }
                return Err(error);
            }
        };
        if let (Some(data), Some(kept)) = (frame.data_ref(), copied.as_mut()) {
            if kept.len() + data.len() <= max {
                kept.extend_from_slice(data);
            } else {
                copied = None;
            }
        }
        if let Some(sender) = &client {
            if sender.send(Ok(frame)).await.is_err() {
                client = None; // the client went away
            }
        }
        if client.is_none() && open.is_none() && copied.is_none() {
            break;
        }
    }
    Ok(copied.map(Bytes::from))
}
