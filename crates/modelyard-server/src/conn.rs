//! Per-connection deadlines of the HTTP/1 server: a request's head must
//! arrive within `limits.header_read_timeout_ms` of its first byte (of the
//! accept, for a connection's first request), its body within
//! `limits.body_read_timeout_ms` of the head, and a keep-alive connection
//! with no request in flight is closed after [`IDLE_TIMEOUT`]. A deadline
//! that passes fails the connection's reads, so hyper closes it.
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
//! which sees bytes) and its service (which sees requests, the end of their
//! bodies ([`TimedBody`]) and the end of their responses, [`RequestGuard`]).

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
const BODY: u8 = 3;

/// The connection's deadlines (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A request head, from its first byte (`header_read_timeout_ms`).
    pub header: Duration,
    /// A request body, from the end of its head (`body_read_timeout_ms`).
    pub body: Duration,
}

/// The connection's phase: receiving a head, receiving a body, serving
/// requests, or idle.
#[derive(Debug, Clone)]
pub struct ConnState(Arc<ConnInner>);

#[derive(Debug)]
struct ConnInner {
    phase: AtomicU8,
    /// Requests whose responses are not finished yet.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Requests seen: a new request's body deadline starts afresh.
    requests: std::sync::atomic::AtomicU64,
}

impl ConnState {
    /// A new connection: its first head is awaited.
    pub fn new() -> Self {
        Self(Arc::new(ConnInner {
            phase: AtomicU8::new(HEAD),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            requests: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// A request's head was parsed: while its body arrives (`body_pending`)
    /// the body deadline runs, then none while it is served. The returned
    /// guard marks the connection idle once the response is done.
    pub fn request(&self, body_pending: bool) -> RequestGuard {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        let phase = if body_pending { BODY } else { BUSY };
        self.0.phase.store(phase, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    /// The request's body is in (or no longer wanted): no deadline.
    fn body_done(&self) {
        let _ = self
            .0
            .phase
            .compare_exchange(BODY, BUSY, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A request body that ends the connection's body deadline once it is
/// complete, failed, or dropped.
pub struct TimedBody<B> {
    inner: B,
    state: Option<ConnState>,
}

impl<B> TimedBody<B> {
    /// Wraps the body of a request whose head `state` just saw.
    pub fn new(inner: B, state: ConnState) -> Self {
        Self {
            inner,
            state: Some(state),
        }
    }

    fn done(&mut self) {
        if let Some(state) = self.state.take() {
            state.body_done();
        }
    }
}

impl<B> Drop for TimedBody<B> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<B: HttpBody + Unpin> HttpBody for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |phase| {
                    matches!(phase, BUSY | BODY).then_some(IDLE)
                });
        }
    }
}

/// A response body that holds its request's [`RequestGuard`] (and whatever
/// else must live as long as the response).
pub fn hold<G: Send + Unpin + 'static>(body: Body, guard: G) -> Body {
    Body::new(Guarded {
        inner: body,
        _guard: guard,
    })
}

struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> HttpBody for Guarded<G> {
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
    deadlines: Deadlines,
    /// The deadline now running and the phase it belongs to.
    timer: Pin<Box<Sleep>>,
    timer_phase: u8,
    /// The request count when the timer was armed.
    timer_request: u64,
}

impl<T> GuardedIo<T> {
    /// Wraps an accepted connection.
    pub fn new(inner: T, state: ConnState, deadlines: Deadlines) -> Self {
        Self {
            inner,
            state,
            deadlines,
            timer: Box::pin(tokio::time::sleep(deadlines.header)),
            timer_phase: HEAD,
            timer_request: 0,
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
                if self.timer_phase != phase
                    || self.timer_request != self.state.0.requests.load(Ordering::SeqCst)
                {
                    self.arm(phase);
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    let what = match phase {
                        HEAD => "request head not received in time",
                        BODY => "request body not received in time",
                        _ => "keep-alive connection idle too long",
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
        let after = match phase {
            HEAD => self.deadlines.header,
            BODY => self.deadlines.body,
            _ => IDLE_TIMEOUT,
        };
        self.timer.as_mut().reset(Instant::now() + after);
        self.timer_phase = phase;
        self.timer_request = self.state.0.requests.load(Ordering::SeqCst);
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
