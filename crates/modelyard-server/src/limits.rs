//! `[limits]` enforced at run time: open SSE responses per caller and in
//! total ([`StreamSlots`]), and request bodies over `server.max_body_bytes`
//! ([`body_limit`]). The request caps of chat completions are checked in
//! [`crate::gateway`]; the header-read timeout is set where the server is
//! served ([`crate::app::start`]).
//!
//! Refusals are fast and never wait: 429 with `Retry-After: 1` for a stream
//! cap, 413 for a body, in the OpenAI envelope on `/v1/chat/completions` and
//! as a problem document everywhere else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use crate::auth::CallerId;
use crate::error::{OpenAiError, Problem};

/// The only OpenAI-compatible path that takes a body (its errors use the
/// OpenAI envelope).
const OPENAI_BODY_PATH: &str = "/v1/chat/completions";

/// Who a request counts against for per-key stream caps: the
/// [`CallerId`] the auth middleware set, else `addr:<peer ip>` (from
/// `ConnectInfo<SocketAddr>`), else `addr:unknown`. Never rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(pub String);

impl Identity {
    /// The identity of a request with these extensions.
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        if let Some(CallerId(id)) = extensions.get::<CallerId>() {
            return Self(id.clone());
        }
        Self(match extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => format!("addr:{}", addr.ip()),
            None => "addr:unknown".to_owned(),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self::of(&parts.extensions))
    }
}

/// A stream refused because a cap is reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `limits.max_streams` responses are open on the server.
    #[error(
        "too many open streams: the server allows {limit} at once (limits.max_streams); retry shortly"
    )]
    TotalStreams {
        /// The cap.
        limit: u32,
    },
    /// `limits.max_streams_per_key` responses are open for this caller.
    #[error(
        "too many open streams for this API key or client address: at most {limit} at once \
         (limits.max_streams_per_key); close one or retry shortly"
    )]
    KeyStreams {
        /// The cap.
        limit: u32,
    },
}

impl LimitError {
    /// The config key of the cap that was reached.
    pub fn cap(&self) -> &'static str {
        match self {
            Self::TotalStreams { .. } => "max_streams",
            Self::KeyStreams { .. } => "max_streams_per_key",
        }
    }

    /// 429 in the OpenAI envelope (`rate_limit_exceeded`), `Retry-After: 1`.
    pub fn openai(&self) -> OpenAiError {
        let mut error = OpenAiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            self.to_string(),
        )
        .code("rate_limit_exceeded");
        error.retry_after = Some("1".to_owned());
        error
    }

    /// 429 as a problem document (with `limit`: the cap's key),
    /// `Retry-After: 1`.
    pub fn problem(&self) -> Response {
        let mut problem = Problem::bad_request(self.to_string()).with("limit", self.cap());
        problem.status = StatusCode::TOO_MANY_REQUESTS;
        problem.title = "Too Many Requests";
        let mut response = problem.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_key: HashMap<String, u32>,
}

#[derive(Debug)]
struct SlotsInner {
    max_total: u32,
    max_per_key: u32,
    counts: Mutex<Counts>,
}

impl SlotsInner {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked: every update is one step.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The open SSE responses of this process: at most `max_total` in all and
/// `max_per_key` per [`Identity`]. Cheap to clone (shared counts); the lock
/// is held only to count, once when a stream opens and once when it ends.
#[derive(Debug, Clone)]
pub struct StreamSlots(Arc<SlotsInner>);

impl StreamSlots {
    /// Slots for `limits.max_streams` / `limits.max_streams_per_key`.
    pub fn new(max_total: u32, max_per_key: u32) -> Self {
        Self(Arc::new(SlotsInner {
            max_total,
            max_per_key,
            counts: Mutex::default(),
        }))
    }

    /// Takes a slot for `identity`, released when the returned guard drops.
    ///
    /// # Errors
    /// [`LimitError`] naming the cap that is reached (the caller's own cap
    /// is checked first).
    pub fn try_acquire(&self, identity: &Identity) -> Result<StreamSlot, LimitError> {
        let mut counts = self.0.counts();
        let mine = counts.per_key.get(&identity.0).copied().unwrap_or(0);
        if mine >= self.0.max_per_key {
            return Err(LimitError::KeyStreams {
                limit: self.0.max_per_key,
            });
        }
        if counts.total >= self.0.max_total {
            return Err(LimitError::TotalStreams {
                limit: self.0.max_total,
            });
        }
        counts.total += 1;
        *counts.per_key.entry(identity.0.clone()).or_insert(0) += 1;
        drop(counts);
        Ok(StreamSlot {
            slots: self.clone(),
            identity: identity.0.clone(),
        })
    }

    /// Open streams in total.
    pub fn open(&self) -> u32 {
        self.0.counts().total
    }

    /// Open streams of `identity`.
    pub fn open_for(&self, identity: &Identity) -> u32 {
        self.0
            .counts()
            .per_key
            .get(&identity.0)
            .copied()
            .unwrap_or(0)
    }
}

/// One open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    slots: StreamSlots,
    identity: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.0.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_key.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_key.remove(&self.identity);
            }
        }
    }
}

/// `stream`, keeping `guard` alive until the stream is dropped (it ended and
/// the body was sent, or the client went away).
pub fn hold<S, G>(stream: S, guard: G) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
    G: Send + 'static,
{
    stream.map(move |item| {
        let _held = &guard;
        item
    })
}

/// 413 in the shape of `path`'s API.
fn too_large(path: &str, limit: usize, declared: Option<u64>) -> Response {
    let message = match declared {
        Some(len) => format!(
            "request body is {len} bytes; this server accepts at most {limit} bytes (server.max_body_bytes)"
        ),
        None => format!(
            "request body is over {limit} bytes, the most this server accepts (server.max_body_bytes)"
        ),
    };
    if path == OPENAI_BODY_PATH {
        OpenAiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            message,
        )
        .into_response()
    } else {
        let mut problem = Problem::bad_request(message);
        problem.status = StatusCode::PAYLOAD_TOO_LARGE;
        problem.title = "Content Too Large";
        problem.into_response()
    }
}

/// Middleware: a body over `limit` bytes (the state) is answered 413 in the
/// endpoint's error shape. With a `Content-Length` over the limit at once,
/// before anything (auth included) runs; a chunked body is counted as the
/// handler reads it (nothing is read here, so nothing is read for a request
/// that is refused first), and when it went over the limit the handler's
/// answer (a rejection) is replaced by the 413.
pub async fn body_limit(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => {
            return too_large(request.uri().path(), limit, Some(len))
        }
        Some(_) => return next.run(request).await,
        None if request.body().is_end_stream() => return next.run(request).await,
        None => {}
    }
    let path = request.uri().path().to_owned();
    let over = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let seen_over = Arc::clone(&over);
    let mut seen = 0usize;
    let counted = body.into_data_stream().map(move |chunk| {
        if let Ok(data) = &chunk {
            seen = seen.saturating_add(data.len());
            if seen > limit {
                seen_over.store(true, Ordering::Relaxed);
            }
        }
        chunk
    });
    let response = next
        .run(Request::from_parts(parts, Body::from_stream(counted)))
        .await;
    if over.load(Ordering::Relaxed) {
        too_large(&path, limit, None)
    } else {
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str) -> Identity {
        Identity(name.to_owned())
    }

    #[test]
    fn per_key_cap_comes_first_and_drop_releases() {
        let slots = StreamSlots::new(3, 2);
        let a1 = slots.try_acquire(&who("a")).unwrap();
        let _a2 = slots.try_acquire(&who("a")).unwrap();
        assert_eq!(
            slots.try_acquire(&who("a")).unwrap_err(),
            LimitError::KeyStreams { limit: 2 }
        );
        let _b1 = slots.try_acquire(&who("b")).unwrap();
        assert_eq!(
            slots.try_acquire(&who("b")).unwrap_err(),
            LimitError::TotalStreams { limit: 3 }
        );
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open_for(&who("a")), 1);
        let _b2 = slots.try_acquire(&who("b")).unwrap();
        assert_eq!(slots.open_for(&who("b")), 2);
    }

    #[test]
    fn idle_identities_are_forgotten() {
        let slots = StreamSlots::new(10, 10);
        drop(slots.try_acquire(&who("gone")).unwrap());
        assert_eq!(slots.open(), 0);
        assert!(slots.0.counts().per_key.is_empty());
    }

    #[test]
    fn identity_prefers_the_caller_id() {
        let mut ext = axum::http::Extensions::new();
        assert_eq!(Identity::of(&ext), who("addr:unknown"));
        ext.insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        assert_eq!(Identity::of(&ext), who("addr:127.0.0.1"));
        ext.insert(CallerId("key:k1".into()));
        assert_eq!(Identity::of(&ext), who("key:k1"));
    }
}
