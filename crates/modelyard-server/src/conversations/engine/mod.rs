//! The turn engine.
//!
//! Starting a turn appends, in one transaction, the per-turn model override
//! (`model.selected`, for `chat`), `turn.started` and `message.user`; a
//! second turn while one runs is refused by the fold (409). The turn then
//! runs in its own task, in steps (the OpenAI tool-call protocol):
//!
//! 1. send the conversation's messages, the tools (the advisor when the
//!    conversation enables it, plus the turn's client tools) and the
//!    config's options to the resolved model (streaming), publishing
//!    `text.delta` / `reasoning.delta` / `tool_call.started` /
//!    `tool_call.delta` transient events and checkpointing the text (while
//!    a host loads the model first, `model.loading` every second until the
//!    first chunk, see `loading.rs`);
//! 2. without tool calls, end with `message.assistant` (model id, usage)
//!    and `turn.completed` — or, keeping the partial answer, `turn.failed` /
//!    `turn.cancelled`;
//! 3. with tool calls, append `message.assistant`, run the server-side ones
//!    (the advisor, [`super::advisor`]; an unknown name gets an error
//!    result) and append each result as `message.tool`, then publish
//!    `tool_call.completed`. If the model called client tools, end the run
//!    with `turn.requires_action` (the pending calls); `POST
//!    .../tool-results` appends their results and `turn.resumed` and runs
//!    the turn again. Otherwise go back to 1, at most
//!    `[turns] max_tool_steps` model calls per run.
//!
//! Each run of a turn is one LLM session of its operation (id = the turn id
//! for the first run; a resumed run's session is a child of it), with one
//! call per step; advisor consultations are child sessions of the run's.
//!
//! The append that closes a run (the last `message.assistant` and the
//! `turn.*` event) is retried while the store is unavailable, with back-off
//! from [`CLOSE_RETRY_FIRST`] doubling to [`CLOSE_RETRY_MAX`], until it
//! succeeds or the server stops (then start-up recovery closes the turn).
//! The turn stays registered in `LiveTurns` meanwhile, so nothing else
//! closes it twice; it is forgotten once its end is committed or abandoned,
//! even if the run panics.
//!
//! At start-up, turns left `running` by a stopped process are closed with
//! `turn.interrupted`, keeping the last checkpointed text; a sweeper
//! ([`spawn_sweeper`]) does the same, periodically, for turns that are
//! `running` in the store but run nowhere in this process.

use modelyard_core::llm_config::ReasoningEffort;
use std::sync::Arc;

use modelyard_store::{LlmConfigRow, ProjectId};
use serde_json::Value;

use super::bus::{BusMessage, EventBus};
use super::live::LiveTurn;
use crate::app::AppState;
use crate::routing::Destination;

mod context;
mod loading;
mod request;
mod run;
mod steps;
mod sweep;
#[cfg(test)]
mod tests;

pub use context::{check_at_start, fit_at_start, StartCheck};
pub use loading::LOADING_EVERY;
pub use request::{compacted, openai_messages, request_body, RunOverrides, NO_TOOL_RESULT};
pub use run::{close_run, run_turn, CLOSE_RETRY_FIRST, CLOSE_RETRY_MAX};
pub(crate) use steps::{offered_advisor, step_tools};
pub use sweep::{recover_interrupted, spawn_lease_renewal, spawn_sweeper, SWEEP_CONFIRM};

pub use super::call::CHECKPOINT_EVERY;

/// Publishes committed events on the bus, in order.
pub fn publish_events(
    bus: &dyn EventBus,
    project: &ProjectId,
    conversation_id: &str,
    events: &[modelyard_core::conversation::Event],
) {
    for event in events {
        bus.publish(
            project,
            conversation_id,
            BusMessage::Persisted(Arc::new(event.clone())),
        );
    }
}

/// What a running turn needs.
pub struct TurnJob {
    /// App state.
    pub app: AppState,
    /// The live turn (buffer, cancel).
    pub live: Arc<LiveTurn>,
    /// Where to send it: one deployment or a route.
    pub destination: Destination,
    /// Operation.
    pub operation: String,
    /// Reasoning effort setting, passed as `reasoning_effort`.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// The LLM config that supplies options and system prompt, if any.
    pub llm_config: Option<LlmConfigRow>,
    /// Client-side tools (OpenAI `tools` entries) offered besides the
    /// server's; calls to them end the run in `requires_action`.
    pub client_tools: Vec<Value>,
    /// LLM session of this run: the turn id for the first run.
    pub session_id: String,
    /// The turn's first session, for a resumed run.
    pub parent_session_id: Option<String>,
    /// This run's instructions and options (not persisted).
    pub overrides: RunOverrides,
    /// The config snapshot this run's LLM session records.
    pub config: modelyard_core::llm_config::ConfigSnapshot,
}

/// Records a transient event in the turn's buffer and publishes it.
pub fn publish(app: &AppState, live: &LiveTurn, event_type: &'static str, data: Value) {
    let event = live.push(event_type, data);
    app.bus.publish(
        &app.project,
        &live.conversation_id,
        BusMessage::Transient(event),
    );
}
