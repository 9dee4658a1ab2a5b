//! `GET /v1/conversations/{id}/events`: the feed of
//! [`crate::service::replay`] as SSE. Persisted events carry `id: <seq>`
//! and `event: <type>`; transient ones `id: <seq>.<turnSeq>.<index>`. After
//! the replay a `caught-up` event (no id) marks the switch to live.
//! Keep-alive comments every 15 s.

use modelyard_core::ids::ConversationId;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::app::AppState;
use crate::auth::Scoped;
use crate::conversations::bus::BusMessage;
use crate::http::{ApiError, ApiQuery};
use crate::limits::{Identity, StreamSlot};
use crate::service::conversations::load;
use crate::service::replay::{self, FeedItem, Position};

/// Keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Query of the events stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this position (same format as SSE ids); `Last-Event-ID` wins.
    after: Option<String>,
}

/// `GET /v1/conversations/{id}/events`: SSE (see the module docs).
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/events",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id"), EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position; wins over `after`")),
    responses((status = 200, description = "Persisted events (`id: <seq>`, `event: <type>`), then `caught-up`, then live events; keep-alive comments", content_type = "text/event-stream", body = crate::api::dto::SseEventSchema))
)]
pub async fn events(
    Scoped(app): Scoped,
    identity: Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let id = ConversationId::parse(&id)?;
    // Beyond a stream cap: a fast 429, before any store read.
    let slot = match app.streams.try_acquire(&identity) {
        Ok(slot) => slot,
        Err(limit) => return Ok(limit.problem()),
    };
    let conversation = load(&app, &id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.after);
    let position = replay::resume_position(&conversation, resume.as_deref())?;
    let rx = app.bus.subscribe(id.as_str());
    Ok(sse_response(
        app,
        id.into_string(),
        position,
        rx,
        None,
        Some(slot),
    ))
}

fn sse_event(item: &FeedItem) -> SseEvent {
    let event = SseEvent::default()
        .event(item.event_type())
        .data(item.data());
    match item.id() {
        Some(id) => event.id(id),
        None => event,
    }
}

/// The SSE answer; `slot` (`[limits]` stream caps) is held until both the
/// response body and the task that feeds it are gone. The task ends with the
/// feed, at a shutdown, or as soon as the body is dropped (the client went
/// away), even while the conversation is idle and nothing is sent.
pub(crate) fn sse_response(
    app: AppState,
    conversation_id: String,
    from: Position,
    rx: broadcast::Receiver<BusMessage>,
    until_turn: Option<String>,
    slot: Option<StreamSlot>,
) -> Response {
    let (tx, out) = mpsc::channel::<FeedItem>(256);
    // A shutdown ends every stream, so graceful shutdown does not wait on them.
    let shutdown = app.live.shutdown_token();
    let slot = slot.map(Arc::new);
    let task_slot = slot.clone();
    let gone = tx.clone();
    tokio::spawn(async move {
        let _slot = task_slot;
        let source = replay::Source {
            store: &app.store,
            project: &app.project,
            live: &app.live,
            poll: app
                .config
                .cluster
                .as_ref()
                .map(|_| crate::service::replay::CLUSTER_POLL),
        };
        tokio::select! {
            () = replay::feed(source, &conversation_id, from, rx, tx, until_turn.as_deref()) => {}
            () = shutdown.cancelled() => {}
            () = gone.closed() => {}
        }
    });
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv()
            .await
            .map(|item| (Ok::<_, Infallible>(sse_event(&item)), out))
    });
    Sse::new(crate::limits::hold(stream, slot))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}
