//! Per-connection deadlines of the HTTP/1 server: a request's head must
//! arrive within `limits.header_read_timeout_ms` of its first byte (of the
//! accept, for a connection's first request), and a keep-alive connection
//! with no request in flight is closed after [`IDLE_TIMEOUT`].
//!
//! hyper's own `header_read_timeout` runs from the moment a connection waits
//! for its next request, so it also closes idle keep-alive connections after
//! that (short) time — and a client that reuses a pooled connection at that
//! moment sees its request fail. Here the short deadline only runs while a
//! head is actually being received; idle connections get a long timeout,
//! longer than the idle timeouts of common client pools (reqwest and Go: 90 s;
//! httpx: 5 s), so a server-side close does not race a client's reuse.
//!
//! The state is shared between the connection's IO wrapper ([`GuardedIo`],
//! which sees bytes) and its service (which sees requests and the end of
//! their responses, [`RequestGuard`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a keep-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// The connection's phase: receiving a head, serving requests, or idle.
#[derive(Debug, Clone)]
pub struct ConnState(Arc<ConnInner>);

#[derive(Debug)]
struct ConnInner {
    phase: AtomicU8,
    /// Requests whose responses are not finished yet.
    in_flight: std::sync::atomic::AtomicUsize,
}

impl ConnState {
    /// A new connection: its first head is awaited.
    pub fn new() -> Self {
        Self(Arc::new(ConnInner {
            phase: AtomicU8::new(HEAD),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// A request's head was parsed: no deadline while it is served. The
    /// returned guard marks the connection idle once the response is done.
    pub fn request(&self) -> RequestGuard {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        self.0.phase.store(BUSY, Ordering::SeqCst);
        RequestGuard(self.clone())
    }
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

/// Held by a response body; dropping it (the body is done or abandoned)
/// makes the connection idle when no other request is in flight.
#[derive(Debug)]
pub struct RequestGuard(ConnState);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        if inner.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = inner
                .phase
                .compare_exchange(BUSY, IDLE, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

/// A response body that holds its request's [`RequestGuard`].
pub fn hold(body: Body, guard: RequestGuard) -> Body {
    Body::new(Guarded {
        inner: body,
        _guard: guard,
    })
}

struct Guarded {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's IO with the deadlines of the module docs.
#[derive(Debug)]
pub struct GuardedIo<T> {
    inner: T,
    state: ConnState,
    header_timeout: Duration,
    /// The deadline now running and the phase it belongs to.
    timer: Pin<Box<Sleep>>,
    timer_phase: u8,
}

impl<T> GuardedIo<T> {
    /// Wraps an accepted connection.
    pub fn new(inner: T, state: ConnState, header_timeout: Duration) -> Self {
        Self {
            inner,
            state,
            header_timeout,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            timer_phase: HEAD,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let phase = self.state.0.phase.load(Ordering::SeqCst);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if phase == IDLE {
                    // The next request begins: its head has header_timeout.
                    self.state.0.phase.store(HEAD, Ordering::SeqCst);
                    self.arm(HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if phase == BUSY {
                    return Poll::Pending;
                }
                if self.timer_phase != phase {
                    self.arm(phase);
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    let what = if phase == HEAD {
                        "request head not received in time"
                    } else {
                        "keep-alive connection idle too long"
                    };
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        what,
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T> GuardedIo<T> {
    fn arm(&mut self, phase: u8) {
        let after = if phase == HEAD {
            self.header_timeout
        } else {
            IDLE_TIMEOUT
        };
        self.timer.as_mut().reset(Instant::now() + after);
        self.timer_phase = phase;
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
