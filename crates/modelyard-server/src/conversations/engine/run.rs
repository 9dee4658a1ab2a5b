//! Running a turn: one run to its end, its closing append (retried while
//! the store is unavailable) and its recorded LLM session.

use std::time::Duration;

use modelyard_core::conversation::{EventPayload, ToolCallRef};
use modelyard_store::{NewLlmCall, NewLlmSession, RecordedSession};

use super::steps::drive;
use super::{publish_events, TurnJob};
use crate::app::AppState;
use crate::clock::now_ms;
use crate::conversations::call::CallEnd;

/// How a run of a turn ends.
pub(super) enum Ending {
    Completed,
    Failed(String),
    Cancelled,
    Interrupted,
    RequiresAction(Vec<ToolCallRef>),
}

impl From<CallEnd> for Ending {
    fn from(end: CallEnd) -> Self {
        match end {
            CallEnd::Done => Ending::Completed,
            CallEnd::Failed(e) => Ending::Failed(e),
            CallEnd::Cancelled => Ending::Cancelled,
            CallEnd::Interrupted => Ending::Interrupted,
        }
    }
}

/// What a run leaves to its closing transaction: the last assistant
/// message (not yet appended) and its text, for `turn.interrupted`.
pub(super) struct Outcome {
    pub(super) ending: Ending,
    pub(super) last_message: Option<EventPayload>,
    pub(super) last_text: Option<String>,
}

impl Outcome {
    pub(super) fn ended(ending: Ending) -> Self {
        Self {
            ending,
            last_message: None,
            last_text: None,
        }
    }
}

/// Runs a started (or resumed) turn to the end of this run. Never panics;
/// every way out appends the closing events.
pub async fn run_turn(job: TurnJob) {
    // Whatever happens to this task (a panic included), the turn does not
    // stay registered: the sweeper can then close it.
    let _registered = Registered {
        app: job.app.clone(),
        turn_id: job.live.turn_id.clone(),
    };
    // The starting request's hold on its budgets and rate limits: its
    // `maxConcurrent` slot lasts as long as the run.
    let admission = job.app.take_admission();
    let mut calls: Vec<NewLlmCall> = Vec::new();
    let started_ms = now_ms();
    let outcome = drive(&job, &mut calls).await;
    let TurnJob {
        app,
        live,
        operation,
        session_id,
        parent_session_id,
        overrides,
        config,
        ..
    } = job;
    let conversation_id = live.conversation_id.clone();
    let turn_id = live.turn_id.clone();
    let mut payloads: Vec<EventPayload> = outcome.last_message.into_iter().collect();
    payloads.push(match outcome.ending {
        Ending::Completed => EventPayload::TurnCompleted {
            turn_id: turn_id.clone(),
        },
        Ending::Failed(error) => EventPayload::TurnFailed {
            turn_id: turn_id.clone(),
            error,
        },
        Ending::Cancelled => EventPayload::TurnCancelled {
            turn_id: turn_id.clone(),
        },
        Ending::Interrupted => EventPayload::TurnInterrupted {
            turn_id: turn_id.clone(),
            partial_text: outcome.last_text,
        },
        Ending::RequiresAction(tool_calls) => EventPayload::TurnRequiresAction {
            turn_id: turn_id.clone(),
            tool_calls,
        },
    });
    let closed = close_run(&app, &conversation_id, &turn_id, payloads).await;
    // Forget the turn once its end is committed and before it is published:
    // a subscriber that has the end never finds the turn's buffer, and one
    // that took the buffer before still gets every delta.
    app.live.finish(&turn_id);
    if let Some(events) = closed {
        publish_events(app.bus.as_ref(), &app.project, &conversation_id, &events);
    }
    if admission.is_some() {
        let spent: Vec<crate::quota::CallUsage<'_>> = calls
            .iter()
            .map(|call| crate::quota::CallUsage {
                model_id: &call.model_id,
                usage: crate::pricing::usage_of_row(&call.usage),
            })
            .collect();
        crate::quota::settle(admission, &app.pricing, crate::quota::Spent::Calls(&spent));
    }
    if !calls.is_empty() {
        let created_at_ms = calls.first().map_or(started_ms, |c| c.sent_at_ms);
        app.recorder.record(
            &app.project,
            RecordedSession {
                session: NewLlmSession {
                    id: session_id,
                    operation,
                    parent_session_id,
                    conversation_id: Some(conversation_id),
                    turn_id: Some(turn_id),
                    created_at_ms,
                    request_id: overrides.request_id,
                    key_id: app.key_id.clone(),
                    config: Some(config),
                },
                calls,
            },
        );
    }
}

/// Forgets a turn in [`LiveTurns`](crate::conversations::live::LiveTurns) when dropped.
struct Registered {
    app: AppState,
    turn_id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.live.finish(&self.turn_id);
        // A replica's lease on the turn ends with its run (the closing
        // append is done, or the run died and the lease would run out).
        if self.app.config.cluster.is_some() {
            let (store, turn_id) = (self.app.store.clone(), self.turn_id.clone());
            tokio::spawn(async move {
                if let Err(err) = store.release_turn_lease(&turn_id).await {
                    tracing::warn!(turn = %turn_id, error = %err, "cannot release turn lease");
                }
            });
        }
    }
}

/// First wait before the closing append of a turn is tried again.
pub const CLOSE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two tries of a turn's closing append.
pub const CLOSE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Appends the events that close a run. While the store is unavailable
/// ([`modelyard_store::StoreError::is_unavailable`]: down, locked, pool
/// exhausted) the append is tried again after [`CLOSE_RETRY_FIRST`],
/// doubling up to [`CLOSE_RETRY_MAX`], until it succeeds or the server
/// halts (the shutdown deadline; start-up recovery then closes the turn as
/// `interrupted`). Any other error is logged and the turn left to the
/// sweeper. The committed events, or `None`.
pub async fn close_run(
    app: &AppState,
    conversation_id: &str,
    turn_id: &str,
    payloads: Vec<EventPayload>,
) -> Option<Vec<modelyard_core::conversation::Event>> {
    let mut delay = CLOSE_RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        match app.append_events(conversation_id, payloads.clone()).await {
            Ok(events) => {
                if failures > 0 {
                    tracing::info!(conversation = %conversation_id, turn = %turn_id, failures, "turn closed after the store came back");
                }
                return Some(events);
            }
            Err(err) if err.is_unavailable() => {
                failures += 1;
                // Log the first failure and then every ~minute, not every try.
                if failures == 1 || failures % 12 == 0 {
                    tracing::warn!(conversation = %conversation_id, turn = %turn_id, error = %err, failures, "cannot close turn yet: the store is unavailable; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = app.halt.cancelled() => {
                        tracing::warn!(conversation = %conversation_id, turn = %turn_id, "server stopping with the turn not closed; start-up recovery will close it");
                        return None;
                    }
                }
                delay = (delay * 2).min(CLOSE_RETRY_MAX);
            }
            Err(err) => {
                tracing::error!(conversation = %conversation_id, turn = %turn_id, error = %err, "cannot close turn; the sweeper will close it as interrupted");
                return None;
            }
        }
    }
}
