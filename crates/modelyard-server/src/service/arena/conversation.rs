//! The arena inside a conversation (`POST /v1/conversations/{id}/arena`):
//! the user's message starts a turn (operation [`ARENA_OPERATION`]) that
//! several models answer at once; the turn then waits for a pick
//! (`awaiting_pick`, see [`super::picks`]).
//!
//! The request every model gets is the one the conversation's next chat
//! turn would send ([`crate::conversations::engine::request_body`]): the
//! conversation's LLM config for `chat` (options, system prompt, base
//! URL), its reasoning effort, the history (after a compaction, the summary
//! in place of what it covers) and the new user message; the request's
//! `options` over the config's. Before anything is appended, it is fitted
//! into each model's context window as a turn's is (`[turns]
//! context_strategy`, [`fit_at_start`]): refused (`error`), the
//! conversation compacted once (`compact`, when any model's window is
//! passed at `compact_at`), the oldest messages left out for each model
//! whose window it still does not fit (`truncate`, and `compact`
//! after the compaction); a model whose request cannot fit even so fails
//! without a call, with the error a turn would fail with. The run's
//! `arena` session records the conversation's config snapshot (models
//! resolved from the request).
//!
//! Events: `turn.started`, `message.user`, `arena.started` in one append;
//! while the models run, every model's progress as transient events of the
//! turn on the conversation's feed ([`feed_event`]: `arena.delta`, then
//! that model's `arena.completed` / `arena.failed`), buffered like a chat
//! turn's deltas so a watcher that joins or reconnects mid-run gets them;
//! when every model has ended, `arena.completed` with every result, and
//! `turn.failed` when none completed (`turn.cancelled` /
//! `turn.interrupted` when the turn was cancelled or the server stops
//! meanwhile). While the models run, the turn is registered as a live turn
//! (with `[cluster]`, under this replica's lease), so the sweeper leaves it
//! alone and `POST …/turns/{id}/cancel` reaches it: the models still
//! running stop (their results fail `cancelled`) and the turn ends
//! `turn.cancelled`.

use std::sync::Arc;

use modelyard_core::conversation::{
    ArenaOutcome, ArenaStatus, ConversationRecord, EventPayload, ResolvedFrom, TokenUsage,
    TurnStatus, ARENA_OPERATION, CHAT_OPERATION,
};
use modelyard_core::ids::ConversationId;
use modelyard_core::turn_model::resolve_turn_model;
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::{prepare_body, run, snapshot, within_caps, ArenaEvent, ArenaResult};
use crate::app::AppState;
use crate::conversations::configs::TurnConfigs;
use crate::conversations::engine::{
    close_run, fit_at_start, publish, publish_events, RunOverrides, StartCheck,
};
use crate::conversations::live::LiveTurn;
use crate::service::conversations::load_stored;
use crate::service::error::{new_id, ServiceError};

/// A conversation arena request.
#[derive(Debug, Clone, Default)]
pub struct ConversationArena {
    /// The user's message (non-empty text).
    pub content: String,
    /// The model ids (route names or deployment ids), 2–8, distinct.
    pub models: Vec<String>,
    /// Provider options (`temperature`, `max_tokens`, …) over the config's.
    pub options: Map<String, Value>,
}

/// A run whose start is committed: its turn is live, its models not yet
/// called ([`finish`] runs them).
#[derive(Debug)]
pub struct Begun {
    /// The turn.
    pub turn_id: String,
    /// The run (its `arena` LLM session's id).
    pub run_id: String,
    conversation_id: String,
    prepared: super::Prepared,
    live: Registered,
}

/// Forgets the live turn when dropped (also when the task running it dies).
#[derive(Debug)]
struct Registered {
    app: AppState,
    turn: Arc<LiveTurn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.live.finish(&self.turn.turn_id);
        // A replica's lease on the turn ends with its run.
        if self.app.config.cluster.is_some() {
            let (store, turn_id) = (self.app.store.clone(), self.turn.turn_id.clone());
            tokio::spawn(async move {
                if let Err(err) = store.release_turn_lease(&turn_id).await {
                    tracing::warn!(turn = %turn_id, error = %err, "cannot release turn lease");
                }
            });
        }
    }
}

/// The 409 for a conversation whose turn still runs or waits: when it
/// waits for an arena pick, [`ServiceError::ArenaPickPending`] naming that
/// run, else `turn_running`.
pub async fn pending_conflict(
    app: &AppState,
    conversation: &ConversationRecord,
    running: &str,
) -> ServiceError {
    let turn = app
        .store
        .get_turn(&app.project, running)
        .await
        .ok()
        .flatten();
    match turn {
        Some(turn) if turn.status == TurnStatus::AwaitingPick => {
            let run = turn.arena_run_id.unwrap_or_default();
            ServiceError::ArenaPickPending {
                message: format!(
                    "turn {running} waits for a pick of arena run {run}: pick an answer \
                     (POST /v1/conversations/{}/arena/{run}/pick) or cancel the turn",
                    conversation.id
                ),
                turn_id: running.to_owned(),
                run_id: run,
            }
        }
        _ => ServiceError::conflict(
            "turn_running",
            format!("turn {running} is still running; cancel it or wait"),
        ),
    }
}

/// Validates `request` and commits the start of the run: `turn.started`
/// (operation `arena`, the first model as the turn's model until the
/// pick), `message.user`, `arena.started`; registers the live turn.
///
/// # Errors
/// `conversation_not_found` (404); `turn_running` / `arena_pick_pending`
/// (409); 422 `content`, `models` (count, duplicates, unknown ids with
/// suggestions), `options.<field>` (the gateway's `[limits]` caps),
/// `context_length_exceeded` (`[turns] context_strategy = "error"`, for any
/// of the models); the store's. With `compact`, the conversation's
/// compaction may run (and be appended) first.
pub async fn begin(
    app: &AppState,
    id: &ConversationId,
    request: ConversationArena,
) -> Result<Begun, ServiceError> {
    let id = id.as_str();
    if request.content.trim().is_empty() {
        return Err(ServiceError::invalid_field(
            "content",
            "content must be a non-empty string",
        ));
    }
    let conversation = load_stored(app, id).await?;
    if let Some(running) = &conversation.running_turn_id {
        return Err(pending_conflict(app, &conversation, running).await);
    }
    // The config the conversation's next chat turn would take its options,
    // system prompt and base URL from.
    let configs = TurnConfigs::load(app, &conversation, CHAT_OPERATION).await?;
    let resolved =
        resolve_turn_model(&configs.input(CHAT_OPERATION, None, conversation.model.as_deref()));
    let llm_config_id = resolved.and_then(|r| r.llm_config_id);
    let llm_config = configs.supplying(llm_config_id.as_deref()).cloned();
    let turn_id = new_id();
    let content = Value::String(request.content);
    // The history and the new user message.
    let messages = app.store.list_messages(&app.project, id).await?.len() + 1;
    within_caps(&app.config.limits, messages, &request.options)?;
    let overrides = RunOverrides {
        options: request.options,
        ..RunOverrides::default()
    };
    let check = StartCheck {
        llm_config: llm_config.as_ref(),
        reasoning_effort: conversation.reasoning_effort,
        overrides: &overrides,
        tools: &[],
        content: &content,
    };
    let models = request.models;
    let first_model = models.first().cloned().unwrap_or_default();
    // No request shared by the models: each gets its own, fitted below.
    let unfitted = Value::Null;
    let mut prepared = prepare_body(app, models.clone(), llm_config.as_ref(), unfitted)?;
    // Each model's request, fitted into its context window per
    // `[turns] context_strategy` before anything is appended (refused,
    // compacted once, truncated per model).
    let fitted = fit_at_start(app, id, &turn_id, &prepared.destinations(), check).await?;
    prepared.fit(fitted);
    prepared.config = snapshot(
        &prepared.entrants,
        llm_config.as_ref(),
        Some(ResolvedFrom::Request),
    );
    prepared.link = Some((id.to_owned(), turn_id.clone()));
    let run_id = prepared.id.clone();
    let payloads = vec![
        EventPayload::TurnStarted {
            turn_id: turn_id.clone(),
            operation: ARENA_OPERATION.to_owned(),
            model_id: first_model,
            resolved_from: ResolvedFrom::Request,
            llm_config_id: llm_config.as_ref().map(|c| c.id.clone()),
            client_tools: None,
        },
        EventPayload::UserMessage {
            message_id: new_id(),
            turn_id: turn_id.clone(),
            content,
        },
        EventPayload::ArenaStarted {
            turn_id: turn_id.clone(),
            run_id: run_id.clone(),
            models,
        },
    ];
    let events = match app.append_events(id, payloads).await {
        Ok(events) => events,
        // Another turn started meanwhile.
        Err(modelyard_store::StoreError::Conflict { .. }) => {
            let conversation = load_stored(app, id).await?;
            let running = conversation.running_turn_id.clone().unwrap_or_default();
            return Err(pending_conflict(app, &conversation, &running).await);
        }
        Err(err) => return Err(err.into()),
    };
    let first_seq = events.first().map(|e| e.seq).unwrap_or_default();
    let last_seq = events.last().map(|e| e.seq).unwrap_or_default();
    let turn = app.live.start(id, &turn_id, first_seq, last_seq);
    prepared.cancel = Some(turn.cancel.clone());
    // Replicas: this one runs the turn; others leave it alone while the
    // lease is renewed (docs/design.md#replicas).
    if let Some(cluster) = &app.config.cluster {
        let until = crate::clock::now_ms() + cluster.turn_lease_ms as i64;
        if let Err(err) = app
            .store
            .take_turn_lease(&app.project, &turn_id, &cluster.replica_id, until)
            .await
        {
            tracing::warn!(turn = %turn_id, error = %err, "cannot take the turn's lease");
        }
    }
    publish_events(app.bus.as_ref(), &app.project, id, &events);
    Ok(Begun {
        turn_id,
        run_id,
        conversation_id: id.to_owned(),
        prepared,
        live: Registered {
            app: app.clone(),
            turn,
        },
    })
}

/// The transient event of the conversation's feed for `event` of run
/// `run_id` (turn `turn_id`): [`ArenaEvent::wire`] (the shapes of
/// `POST /v1/arena`'s feed) with `turnId` and `runId`, without `index`
/// (a transient event's index on the feed is its position in the turn).
/// Each names its `model`, so the live buffer joins only one model's
/// deltas. The persisted `arena.completed` of the whole run carries
/// `results` instead.
fn feed_event(turn_id: &str, run_id: &str, event: &ArenaEvent) -> (&'static str, Value) {
    let (name, mut data) = event.wire();
    if let Value::Object(fields) = &mut data {
        fields.remove("index");
        fields.insert("turnId".to_owned(), Value::from(turn_id));
        fields.insert("runId".to_owned(), Value::from(run_id));
    }
    (name, data)
}

/// The outcome `arena.completed` stores for `result`.
pub(super) fn outcome(result: &ArenaResult) -> ArenaOutcome {
    let mut usage = TokenUsage::from(result.tokens);
    usage.cost_nusd = result.cost_nusd;
    ArenaOutcome {
        model: result.model.clone(),
        status: if result.error.is_none() {
            ArenaStatus::Completed
        } else {
            ArenaStatus::Failed
        },
        text: result.text.clone(),
        usage,
        error: result.error.clone(),
        model_id: result.model_id.clone(),
        ttft_ms: result.ttft_ms,
        duration_ms: result.duration_ms,
    }
}

/// Runs `begun`'s models (`events`, when streaming, gets each model's
/// deltas and end as they happen) and closes the run's part of the turn:
/// `arena.completed`, then `turn.failed` when no model completed (or
/// `turn.cancelled` / `turn.interrupted` when the turn was cancelled or the
/// server stops meanwhile). The results in request order.
pub async fn finish(
    app: &AppState,
    begun: Begun,
    events: Option<UnboundedSender<ArenaEvent>>,
) -> Vec<ArenaResult> {
    let Begun {
        turn_id,
        run_id,
        conversation_id,
        prepared,
        live,
    } = begun;
    // Every model's progress goes to the turn's buffer and the
    // conversation's feed, and on to the client that posted the run.
    let (progress, mut received) = tokio::sync::mpsc::unbounded_channel::<ArenaEvent>();
    let relay = async {
        while let Some(event) = received.recv().await {
            let (event_type, data) = feed_event(&turn_id, &run_id, &event);
            publish(app, &live.turn, event_type, data);
            if let Some(events) = &events {
                // A closed receiver (the client left) stops nothing.
                let _ = events.send(event);
            }
        }
    };
    // The relay ends once `run` has returned (its sender is dropped).
    let (results, ()) = tokio::join!(run(app, prepared, Some(progress)), relay);
    let outcomes: Vec<ArenaOutcome> = results.iter().map(outcome).collect();
    let answered = outcomes.iter().any(|o| o.status == ArenaStatus::Completed);
    let mut payloads = vec![EventPayload::ArenaCompleted {
        turn_id: turn_id.clone(),
        run_id,
        results: outcomes,
    }];
    if live.turn.cancel.is_cancelled() {
        let shutting_down = live
            .turn
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst);
        payloads.push(if shutting_down {
            EventPayload::TurnInterrupted {
                turn_id: turn_id.clone(),
                partial_text: None,
            }
        } else {
            EventPayload::TurnCancelled {
                turn_id: turn_id.clone(),
            }
        });
    } else if !answered {
        let why: Vec<String> = results
            .iter()
            .map(|r| format!("{}: {}", r.model, r.error.as_deref().unwrap_or("no answer")))
            .collect();
        payloads.push(EventPayload::TurnFailed {
            turn_id: turn_id.clone(),
            error: format!("every model of the arena failed ({})", why.join("; ")),
        });
    }
    let closed = close_run(app, &conversation_id, &turn_id, payloads).await;
    // Forget the live turn once its end is committed, then publish.
    drop(live);
    if let Some(events) = closed {
        publish_events(app.bus.as_ref(), &app.project, &conversation_id, &events);
    }
    results
}
