//! The accept loop: connections, their deadlines and caps, graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

/// What [`serve`] bounds per connection and in all (`[limits]`).
#[derive(Debug, Clone)]
pub(super) struct ConnLimits {
    /// Head and body deadlines of each request.
    pub(super) deadlines: crate::conn::Deadlines,
    /// Open connections at most (`limits.max_connections`).
    pub(super) max_connections: usize,
    /// Requests in flight (`limits.max_concurrent_requests`).
    pub(super) requests: crate::limits::RequestSlots,
}

/// Whether a request takes a slot among `limits.max_concurrent_requests`:
/// the API does, `/health` and the web UI do not.
fn counts_in_flight(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// Serves HTTP/1.1 on `listener` until `signal` completes, then stops
/// accepting, lets every connection finish its open requests (idle ones close
/// at once) and returns when all are closed — `axum::serve`'s graceful
/// shutdown, plus: a request head that does not arrive within
/// `limits.header_read_timeout_ms` of its first byte, or a body that does
/// not arrive within `limits.body_read_timeout_ms` of its head, closes the
/// connection, an idle keep-alive connection closes after
/// [`crate::conn::IDLE_TIMEOUT`] (see [`crate::conn`]), a connection past
/// `limits.max_connections` open ones is closed as soon as it is accepted
/// (so the process keeps file descriptors for the ones it serves; an
/// `accept` that fails anyway, e.g. `EMFILE`, is retried after 1 s by axum's
/// `Listener`, not in a busy loop), an API request past
/// `limits.max_concurrent_requests` in flight is answered 429 before
/// anything else runs ([`crate::limits::RequestSlots`]), and every request
/// carries `ConnectInfo<SocketAddr>` (and its [`crate::limits::InFlight`]
/// slot).
pub(super) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    // HTTP/1 only, like axum with its `http1` feature: no protocol sniffing
    // before the header timeout starts.
    let builder =
        Arc::new(hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only());
    // Connection tasks watch `stop` (closed on the signal) and hold `open`
    // (its sender sees every receiver gone once they all ended).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(stop_rx);
    });
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (io, remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop_tx.closed() => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            // Past the cap: closed at once, never served.
            tracing::debug!(%remote, max_connections = limits.max_connections, "connection refused: too many open");
            drop(io);
            continue;
        };
        let router = app.clone();
        let requests = limits.requests.clone();
        let conn_state = crate::conn::ConnState::new();
        let io = crate::conn::GuardedIo::new(io, conn_state.clone(), limits.deadlines);
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                // The head is in: the body deadline runs until the body is
                // in, then none until the response is done.
                let guard = conn_state.request(!hyper::body::Body::is_end_stream(request.body()));
                let body_state = conn_state.clone();
                let mut request = request.map(|body| crate::conn::TimedBody::new(body, body_state));
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                let in_flight = if counts_in_flight(request.uri().path()) {
                    match requests.try_acquire() {
                        Ok(slot) => slot,
                        Err(limit) => {
                            let mut refused = limit.response_for(request.uri().path());
                            refused.headers_mut().insert(
                                crate::http::access::REQUEST_ID,
                                crate::http::access::request_id(request.headers()),
                            );
                            let response = refused.map(|body| crate::conn::hold(body, guard));
                            return futures_util::future::Either::Left(std::future::ready(Ok(
                                response,
                            )));
                        }
                    }
                } else {
                    crate::limits::InFlight::default()
                };
                request.extensions_mut().insert(in_flight.clone());
                let call = tower_service::Service::call(&mut router.clone(), request);
                futures_util::future::Either::Right(async move {
                    call.await.map(|response| {
                        // An SSE response is bounded by the stream caps: its
                        // slot is freed as it starts; others' with their body.
                        let streaming = response
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                        if streaming {
                            in_flight.release();
                        }
                        response.map(|body| crate::conn::hold(body, (guard, in_flight)))
                    })
                })
            });
        let builder = Arc::clone(&builder);
        let stop_tx = stop_tx.clone();
        let open_rx = open_rx.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = stop_tx.closed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = served {
                tracing::trace!(error = %err, %remote, "connection ended with an error");
            }
            drop(permit);
            drop(open_rx);
        });
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}
