//! `[limits]` enforced at run time: open SSE responses per caller, per
//! project and in total ([`StreamSlots`]), requests and background turns in
//! flight ([`RequestSlots`]), and request bodies over
//! `server.max_body_bytes` ([`body_limit`]). The request caps of chat
//! completions are checked in [`crate::gateway`]; the connection cap and the
//! header- and body-read timeouts where the server is served
//! ([`crate::app::start`], [`crate::conn`]).
//!
//! Refusals are fast and never wait: 429 with `Retry-After: 1` for a stream
//! or in-flight cap, 413 for a body, in the OpenAI envelope on the OpenAI
//! endpoints, in Anthropic's error shape on `/v1/messages…` and as a
//! problem document everywhere else.

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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Caller, CallerId};
use crate::error::{is_anthropic_path, is_openai_path, AnthropicError, OpenAiError, Problem};

/// The only OpenAI-compatible path that takes a body (its errors use the
/// OpenAI envelope).
const OPENAI_BODY_PATH: &str = "/v1/chat/completions";

/// Who a request counts against for stream caps: per key, the
/// [`CallerId`] the auth middleware set, else `addr:<peer ip>` (from
/// `ConnectInfo<SocketAddr>`), else `addr:unknown`; per project, the
/// [`Caller`]'s project (empty without one). Never rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The key (or client address).
    pub caller: String,
    /// The caller's project.
    pub project: String,
}

impl Identity {
    /// The identity of a request with these extensions.
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        let project = extensions
            .get::<Caller>()
            .map(|caller| caller.project.as_str().to_owned())
            .unwrap_or_default();
        let caller = match (
            extensions.get::<CallerId>(),
            extensions.get::<ConnectInfo<SocketAddr>>(),
        ) {
            (Some(CallerId(id)), _) => id.clone(),
            (None, Some(ConnectInfo(addr))) => format!("addr:{}", addr.ip()),
            (None, None) => "addr:unknown".to_owned(),
        };
        Self { caller, project }
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
    /// `limits.max_streams_per_project` responses are open for the
    /// caller's project (all its keys).
    #[error(
        "too many open streams for this project: at most {limit} at once across its API keys \
         (limits.max_streams_per_project); close one or retry shortly"
    )]
    ProjectStreams {
        /// The cap.
        limit: u32,
    },
    /// `limits.max_concurrent_requests` requests and turns are in flight.
    #[error(
        "too many requests in flight: the server handles {limit} requests and turns at once \
         (limits.max_concurrent_requests); retry shortly"
    )]
    Requests {
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
            Self::ProjectStreams { .. } => "max_streams_per_project",
            Self::Requests { .. } => "max_concurrent_requests",
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

    /// 429 in Anthropic's error shape (`rate_limit_error`), `Retry-After: 1`.
    pub fn anthropic(&self) -> AnthropicError {
        AnthropicError::new(StatusCode::TOO_MANY_REQUESTS, self.to_string()).retry_after("1")
    }

    /// 429 in the shape of `path`'s API (see [`is_anthropic_path`],
    /// [`is_openai_path`]).
    pub fn response_for(&self, path: &str) -> Response {
        if is_anthropic_path(path) {
            self.anthropic().into_response()
        } else if is_openai_path(path) {
            self.openai().into_response()
        } else {
            self.problem()
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_key: HashMap<String, u32>,
    per_project: HashMap<String, u32>,
}

#[derive(Debug)]
struct SlotsInner {
    max_total: u32,
    max_per_key: u32,
    max_per_project: u32,
    counts: Mutex<Counts>,
}

impl SlotsInner {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked: every update is one step.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The open SSE responses of this process: at most `max_total` in all,
/// `max_per_key` per [`Identity`] caller and `max_per_project` per project.
/// Cheap to clone (shared counts); the lock is held only to count, once when
/// a stream opens and once when it ends.
#[derive(Debug, Clone)]
pub struct StreamSlots(Arc<SlotsInner>);

impl StreamSlots {
    /// Slots for `limits.max_streams` / `limits.max_streams_per_key` /
    /// `limits.max_streams_per_project`.
    pub fn new(max_total: u32, max_per_key: u32, max_per_project: u32) -> Self {
        Self(Arc::new(SlotsInner {
            max_total,
            max_per_key,
            max_per_project,
            counts: Mutex::default(),
        }))
    }

    /// Takes a slot for `identity`, released when the returned guard drops.
    ///
    /// # Errors
    /// [`LimitError`] naming the cap that is reached (the caller's own cap
    /// is checked first, then its project's).
    pub fn try_acquire(&self, identity: &Identity) -> Result<StreamSlot, LimitError> {
        let mut counts = self.0.counts();
        let mine = counts.per_key.get(&identity.caller).copied().unwrap_or(0);
        if mine >= self.0.max_per_key {
            return Err(LimitError::KeyStreams {
                limit: self.0.max_per_key,
            });
        }
        let project = counts
            .per_project
            .get(&identity.project)
            .copied()
            .unwrap_or(0);
        if project >= self.0.max_per_project {
            return Err(LimitError::ProjectStreams {
                limit: self.0.max_per_project,
            });
        }
        if counts.total >= self.0.max_total {
            return Err(LimitError::TotalStreams {
                limit: self.0.max_total,
            });
        }
        counts.total += 1;
        *counts.per_key.entry(identity.caller.clone()).or_insert(0) += 1;
        *counts
            .per_project
            .entry(identity.project.clone())
            .or_insert(0) += 1;
        drop(counts);
        Ok(StreamSlot {
            slots: self.clone(),
            identity: identity.clone(),
        })
    }

    /// Open streams in total.
    pub fn open(&self) -> u32 {
        self.0.counts().total
    }

    /// Open streams of `identity`'s caller.
    pub fn open_for(&self, identity: &Identity) -> u32 {
        self.0
            .counts()
            .per_key
            .get(&identity.caller)
            .copied()
            .unwrap_or(0)
    }

    /// Open streams of `identity`'s project.
    pub fn open_for_project(&self, identity: &Identity) -> u32 {
        self.0
            .counts()
            .per_project
            .get(&identity.project)
            .copied()
            .unwrap_or(0)
    }
}

/// One open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    slots: StreamSlots,
    identity: Identity,
}

/// Takes one from `key`'s count, forgetting it at 0.
fn release(counts: &mut HashMap<String, u32>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.0.counts();
        counts.total = counts.total.saturating_sub(1);
        release(&mut counts.per_key, &self.identity.caller);
        release(&mut counts.per_project, &self.identity.project);
    }
}

/// Requests and background turns in flight, at most
/// `limits.max_concurrent_requests`: each request to the API takes a slot
/// when its head is in (the server's accept loop, [`crate::app`]) and frees
/// it when its response is done — at once for an SSE response, whose
/// streaming the stream caps bound — or hands it to the turn it starts,
/// which frees it when the run ends. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestSlots {
    permits: Arc<Semaphore>,
    limit: u32,
}

impl RequestSlots {
    /// Slots for `limits.max_concurrent_requests`.
    pub fn new(limit: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// Takes a slot, or refuses at once.
    ///
    /// # Errors
    /// [`LimitError::Requests`] when every slot is taken.
    pub fn try_acquire(&self) -> Result<InFlight, LimitError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map(|permit| InFlight(Arc::new(Mutex::new(Some(permit)))))
            .map_err(|_| LimitError::Requests { limit: self.limit })
    }

    /// Slots taken.
    pub fn in_flight(&self) -> u32 {
        self.limit
            .saturating_sub(u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX))
    }
}

/// A request's slot among `limits.max_concurrent_requests` (see
/// [`RequestSlots`]); clones share it, and it is freed when the last clone
/// drops, or by [`Self::release`]. In the request's extensions, so a handler
/// that starts background work can [`Self::take`] it. As an extractor, an
/// empty one when the request holds none.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl InFlight {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the slot out (to a background task); the request no longer
    /// frees it.
    pub fn take(&self) -> InFlight {
        InFlight(Arc::new(Mutex::new(self.slot().take())))
    }

    /// Frees the slot now.
    pub fn release(&self) {
        drop(self.slot().take());
    }
}

impl<S: Send + Sync> FromRequestParts<S> for InFlight {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<InFlight>()
            .cloned()
            .unwrap_or_default())
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
    if is_anthropic_path(path) {
        // `request_too_large`.
        AnthropicError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
    } else if path == OPENAI_BODY_PATH {
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
        Identity {
            caller: name.to_owned(),
            project: String::new(),
        }
    }

    fn of(caller: &str, project: &str) -> Identity {
        Identity {
            caller: caller.to_owned(),
            project: project.to_owned(),
        }
    }

    #[test]
    fn per_key_cap_comes_first_and_drop_releases() {
        let slots = StreamSlots::new(3, 2, 10);
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
        let slots = StreamSlots::new(10, 10, 10);
        drop(slots.try_acquire(&who("gone")).unwrap());
        assert_eq!(slots.open(), 0);
        assert!(slots.0.counts().per_key.is_empty());
        assert!(slots.0.counts().per_project.is_empty());
    }

    #[test]
    fn one_projects_keys_cannot_take_every_slot() {
        let slots = StreamSlots::new(10, 2, 3);
        let _a = [
            slots.try_acquire(&of("a", "p")).unwrap(),
            slots.try_acquire(&of("a", "p")).unwrap(),
        ];
        let b1 = slots.try_acquire(&of("b", "p")).unwrap();
        assert_eq!(
            slots.try_acquire(&of("b", "p")).unwrap_err(),
            LimitError::ProjectStreams { limit: 3 }
        );
        assert_eq!(slots.open_for_project(&of("c", "p")), 3);
        let _c = slots.try_acquire(&of("c", "q")).unwrap();
        drop(b1);
        let _b2 = slots.try_acquire(&of("b", "p")).unwrap();
    }

    #[test]
    fn an_in_flight_slot_moves_to_background_work() {
        let slots = RequestSlots::new(2);
        let first = slots.try_acquire().unwrap();
        let second = slots.try_acquire().unwrap();
        assert_eq!(
            slots.try_acquire().unwrap_err(),
            LimitError::Requests { limit: 2 }
        );
        let turn = first.take();
        first.release();
        assert_eq!(slots.in_flight(), 2, "the turn still holds it");
        drop(turn);
        second.clone().release();
        assert_eq!(slots.in_flight(), 0);
        assert!(InFlight::default().take().0.lock().unwrap().is_none());
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
