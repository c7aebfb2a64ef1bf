//! Cuts the gRPC listener's response bodies into DATA frames small enough that h2 copies them
//! into its write buffer, so that answers to many `Check` calls on one connection leave in one
//! write.
//!
//! Why: the h2 crate copies a DATA frame shorter than its "chain threshold" into its write
//! buffer, but queues a longer one by reference and flushes (one more system call) before it
//! buffers the next frame. An allow that carries `authorization: Bearer <ID token>` is ~1.3 KB,
//! so every answer cost at least one system call, and the kernel's loopback send was the
//! largest single cost of a decision (`bench/`). Envoy multiplexes its ext_authz calls on one
//! HTTP/2 connection per worker, so it gains as much as we do.
//!
//! The threshold is 256 bytes on a connection that can write vectored and 1 KB on one that
//! cannot. Every frame is copied into one buffer anyway, so vectored writes buy nothing here:
//! [`WholeWrites`] tells h2 the connection writes whole buffers, and an answer is cut into
//! pieces of at most [`PIECE`] bytes (two for a 1.3 KB allow instead of six: fewer frames for
//! h2 to queue and for Envoy to read). Trailers and errors pass through unchanged; only the
//! framing differs on the wire.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Largest DATA piece: under h2's 1 KB threshold for a connection without vectored writes
/// (frames from 1024 bytes are written on their own), less a margin.
pub const PIECE: usize = 1000;

/// A connection that writes whole buffers (`is_write_vectored` is false), so that h2 copies
/// DATA frames under 1 KB into its buffer instead of 256 bytes.
#[derive(Debug)]
pub struct WholeWrites<IO>(pub IO);

impl<IO: AsyncRead + Unpin> AsyncRead for WholeWrites<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WholeWrites<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<IO: Connected> Connected for WholeWrites<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

/// A body whose DATA frames are at most [`PIECE`] bytes.
pub struct SmallFrames<B> {
    inner: B,
    /// What is left of the last DATA frame read from `inner`.
    rest: Bytes,
}

impl<B> SmallFrames<B> {
    pub fn new(inner: B) -> SmallFrames<B> {
        SmallFrames {
            inner,
            rest: Bytes::new(),
        }
    }
}

impl<B> Body for SmallFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            let piece = this.rest.split_to(this.rest.len().min(PIECE));
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) if data.len() > PIECE => {
                    this.rest = data.split_off(PIECE);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

/// The tower layer that wraps every response body of a service in [`SmallFrames`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SmallFramesLayer;

impl<S> tower_layer::Layer<S> for SmallFramesLayer {
    type Service = SmallFramesService<S>;

    fn layer(&self, inner: S) -> SmallFramesService<S> {
        SmallFramesService { inner }
    }
}

/// See [`SmallFramesLayer`].
#[derive(Debug, Clone)]
pub struct SmallFramesService<S> {
    inner: S,
}

impl<S, Req> tower_service::Service<Req> for SmallFramesService<S>
where
    S: tower_service::Service<Req, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| tonic::body::Body::new(SmallFrames::new(body))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    type Frames = std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>;

    fn body_of(frames: Vec<Frame<Bytes>>) -> http_body_util::StreamBody<futures_util::stream::Iter<Frames>> {
        http_body_util::StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn long_data_is_cut_into_small_pieces_in_order_and_trailers_pass_through() {
        let data: Vec<u8> = (0..1337u32).map(|i| (i % 251) as u8).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut body = SmallFrames::new(body_of(vec![
            Frame::data(Bytes::from(data.clone())),
            Frame::data(Bytes::from_static(b"tail")),
            Frame::trailers(trailers.clone()),
        ]));
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut got_trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap_or_else(|e: std::convert::Infallible| match e {});
            match frame.into_data() {
                Ok(d) => {
                    sizes.push(d.len());
                    seen.extend_from_slice(&d);
                }
                Err(f) => got_trailers = f.into_trailers().ok(),
            }
        }
        let mut want = data;
        want.extend_from_slice(b"tail");
        assert_eq!(seen, want);
        assert!(sizes.iter().all(|&n| n <= PIECE), "{sizes:?}");
        assert_eq!(sizes.len(), 1337usize.div_ceil(PIECE) + 1);
        assert_eq!(got_trailers, Some(trailers));
        assert!(body.frame().await.is_none(), "nothing after the end");
    }
}
