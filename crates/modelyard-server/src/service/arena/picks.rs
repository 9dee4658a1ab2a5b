//! Picks: the user's choice among an arena run's answers, and what picks
//! add up to.
//!
//! - In a conversation ([`pick`]): the run's turn waits (`awaiting_pick`);
//!   the pick appends `arena.picked`, the chosen answer as the turn's
//!   `message.assistant` (its deployment and usage, so token totals and the
//!   latest model move as for a chat answer) and `turn.completed`. The
//!   unpicked answers stay in `arena.completed` ([`get_run`]).
//! - A standalone run (`POST /v1/arena`, [`pick_standalone`]): the pick is
//!   only recorded; the run's completed models are its session's calls
//!   without an error.
//!
//! Every pick is a row of `arena_picks` (the others: the run's other
//! completed models), which [`stats`] counts per model.

use modelyard_core::conversation::{
    ArenaOutcome, ArenaStatus, EventPayload, MessageRecord, Part, TurnRecord, TurnStatus,
};
use modelyard_core::ids::ConversationId;
use modelyard_store::{ArenaModelStats, NewArenaPick, StoreError};

use super::OPERATION;
use crate::app::AppState;
use crate::service::conversations::load_stored;
use crate::service::error::{new_id, ServiceError};

/// A conversation arena run as its events tell it.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// The turn it answers.
    pub turn_id: String,
    /// The model ids, in request order.
    pub models: Vec<String>,
    /// Every model's outcome (empty while the models still run).
    pub results: Vec<ArenaOutcome>,
    /// The picked model, once picked.
    pub picked: Option<String>,
    /// The turn's status (`running`, `awaiting_pick`, `completed`, …).
    pub status: TurnStatus,
}

/// A pick in a conversation.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The turn it completed.
    pub turn_id: String,
    /// The run.
    pub run_id: String,
    /// The chosen model.
    pub model: String,
    /// The assistant message it appended.
    pub message: MessageRecord,
}

/// A pick of a standalone run.
#[derive(Debug, Clone)]
pub struct StandalonePick {
    /// The run.
    pub run_id: String,
    /// The chosen model.
    pub model: String,
    /// The run's other completed models.
    pub others: Vec<String>,
}

fn no_run(run_id: &str, where_: &str) -> ServiceError {
    ServiceError::not_found(
        "arena_run",
        run_id,
        format!("no arena run {run_id:?} {where_}"),
    )
}

fn already_picked(run_id: &str, model: &str) -> ServiceError {
    ServiceError::conflict(
        "arena_already_picked",
        format!("arena run {run_id} was already picked ({model})"),
    )
}

/// The turn of run `run_id` in conversation `id` and the run as its events
/// tell it.
async fn find_run(
    app: &AppState,
    id: &str,
    run_id: &str,
) -> Result<(TurnRecord, RunView), ServiceError> {
    let turns = app.store.list_turns(&app.project, id).await?;
    let Some(turn) = turns
        .into_iter()
        .find(|t| t.arena_run_id.as_deref() == Some(run_id))
    else {
        return Err(no_run(run_id, &format!("in conversation {id:?}")));
    };
    let mut view = RunView {
        run_id: run_id.to_owned(),
        turn_id: turn.id.clone(),
        models: Vec::new(),
        results: Vec::new(),
        picked: None,
        status: turn.status,
    };
    // The turn's events, from its start to its end.
    let mut after = turn.started_seq - 1;
    'pages: loop {
        let events = app.store.events_after(&app.project, id, after, 0).await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for event in events {
            if event.payload.turn_id() != Some(turn.id.as_str()) {
                continue;
            }
            match event.payload {
                EventPayload::ArenaStarted { models, .. } => view.models = models,
                EventPayload::ArenaCompleted { results, .. } => view.results = results,
                EventPayload::ArenaPicked { model, .. } => view.picked = Some(model),
                EventPayload::TurnCompleted { .. }
                | EventPayload::TurnFailed { .. }
                | EventPayload::TurnCancelled { .. }
                | EventPayload::TurnInterrupted { .. } => break 'pages,
                _ => {}
            }
        }
    }
    Ok((turn, view))
}

/// Run `run_id` of conversation `id`: its models, results and pick.
///
/// # Errors
/// `conversation_not_found`, `arena_run_not_found` (404); the store's.
pub async fn get_run(
    app: &AppState,
    id: &ConversationId,
    run_id: &str,
) -> Result<RunView, ServiceError> {
    load_stored(app, id.as_str()).await?;
    Ok(find_run(app, id.as_str(), run_id).await?.1)
}

/// The completed models of `results` other than `model`.
fn others_of(results: &[ArenaOutcome], model: &str) -> Vec<String> {
    results
        .iter()
        .filter(|r| r.status == ArenaStatus::Completed && r.model != model)
        .map(|r| r.model.clone())
        .collect()
}

/// Picks `model`'s answer of run `run_id` in conversation `id`: appends
/// `arena.picked`, the answer as `message.assistant` and `turn.completed`,
/// and records the pick.
///
/// # Errors
/// `conversation_not_found`, `arena_run_not_found` (404);
/// `arena_already_picked`, `arena_not_awaiting_pick` (409: the models still
/// run, or the turn failed or was cancelled); 422 `model` when it is not
/// one of the run's completed results; the store's.
pub async fn pick(
    app: &AppState,
    id: &ConversationId,
    run_id: &str,
    model: &str,
) -> Result<Picked, ServiceError> {
    let id = id.as_str();
    load_stored(app, id).await?;
    let (turn, view) = find_run(app, id, run_id).await?;
    if let Some(picked) = &view.picked {
        return Err(already_picked(run_id, picked));
    }
    if turn.status != TurnStatus::AwaitingPick {
        return Err(ServiceError::conflict(
            "arena_not_awaiting_pick",
            format!(
                "arena run {run_id} does not wait for a pick (its turn {} is {})",
                turn.id,
                turn.status.as_str()
            ),
        ));
    }
    let completed: Vec<&str> = view
        .results
        .iter()
        .filter(|r| r.status == ArenaStatus::Completed)
        .map(|r| r.model.as_str())
        .collect();
    let Some(chosen) = view
        .results
        .iter()
        .find(|r| r.model == model && r.status == ArenaStatus::Completed)
    else {
        return Err(ServiceError::invalid_field(
            "model",
            format!(
                "model {model:?} is not a completed answer of arena run {run_id}; completed: {}",
                completed.join(", ")
            ),
        ));
    };
    let payloads = vec![
        EventPayload::ArenaPicked {
            turn_id: turn.id.clone(),
            run_id: run_id.to_owned(),
            model: model.to_owned(),
        },
        EventPayload::AssistantMessage {
            message_id: new_id(),
            turn_id: turn.id.clone(),
            parts: vec![Part::Text {
                text: chosen.text.clone(),
            }],
            model_id: chosen.model_id.clone().unwrap_or_else(|| model.to_owned()),
            usage: chosen.usage,
            finish_reason: None,
        },
        EventPayload::TurnCompleted {
            turn_id: turn.id.clone(),
        },
    ];
    let appended = match app.append_and_publish_folded(id, payloads).await {
        Ok(appended) => appended,
        // Picked (or cancelled) meanwhile.
        Err(StoreError::Conflict { reason }) => {
            return Err(ServiceError::conflict("arena_already_picked", reason))
        }
        Err(err) => return Err(err.into()),
    };
    let Some(message) = appended.messages.into_iter().next() else {
        return Err(ServiceError::Store(StoreError::InvalidInput {
            reason: "the pick appended no message".into(),
        }));
    };
    let record = NewArenaPick {
        run_id: run_id.to_owned(),
        conversation_id: Some(id.to_owned()),
        model: model.to_owned(),
        others: others_of(&view.results, model),
        created_at_ms: crate::clock::now_ms(),
    };
    // The log holds the pick; the row feeds the stats.
    if let Err(err) = app.store.insert_arena_pick(&app.project, &record).await {
        tracing::warn!(run = %run_id, error = %err, "cannot record the arena pick for the stats");
    }
    Ok(Picked {
        turn_id: turn.id,
        run_id: run_id.to_owned(),
        model: model.to_owned(),
        message,
    })
}

/// How often [`pick_standalone`] looks for a run's session that the call
/// log has not written yet, and how long it waits between looks.
const SESSION_LOOKS: u32 = 10;
const SESSION_LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Records the pick of `model` in standalone run `run_id`.
///
/// The run's results are its session's calls: a model completed when one
/// of its calls (named by route, else deployment) has no error. A run that
/// just ended may not be written yet; its session is looked for again for
/// up to a second.
///
/// # Errors
/// `arena_run_not_found` (404: no `arena` session with that id in this
/// project); `arena_already_picked` (409); `arena_run_in_conversation`
/// (409: picked through its conversation instead); 422 `model`; the
/// store's.
pub async fn pick_standalone(
    app: &AppState,
    run_id: &str,
    model: &str,
) -> Result<StandalonePick, ServiceError> {
    let mut looks = 0;
    let (session, calls) = loop {
        looks += 1;
        match app.store.get_session(&app.project, run_id).await? {
            Some(found) => break found,
            None if looks < SESSION_LOOKS && app.recorder.stats().queued > 0 => {
                tokio::time::sleep(SESSION_LOOK_EVERY).await;
            }
            None => return Err(no_run(run_id, "in this project")),
        }
    };
    if session.operation != OPERATION {
        return Err(no_run(run_id, "in this project"));
    }
    if let Some(conversation) = &session.conversation_id {
        return Err(ServiceError::conflict(
            "arena_run_in_conversation",
            format!(
                "arena run {run_id} answers a turn of conversation {conversation}; pick it \
                 with POST /v1/conversations/{conversation}/arena/{run_id}/pick"
            ),
        ));
    }
    if let Some(picked) = app.store.arena_pick(&app.project, run_id).await? {
        return Err(already_picked(run_id, &picked));
    }
    let mut completed: Vec<String> = Vec::new();
    let mut chosen = None;
    for call in calls.iter().filter(|c| c.error.is_none()) {
        let name = call.route.clone().unwrap_or_else(|| call.model_id.clone());
        if name == model || call.model_id == model {
            chosen = Some(name.clone());
        }
        if !completed.contains(&name) {
            completed.push(name);
        }
    }
    let Some(chosen) = chosen else {
        return Err(ServiceError::invalid_field(
            "model",
            format!(
                "model {model:?} is not a completed answer of arena run {run_id}; completed: {}",
                completed.join(", ")
            ),
        ));
    };
    let others: Vec<String> = completed.into_iter().filter(|m| *m != chosen).collect();
    let record = NewArenaPick {
        run_id: run_id.to_owned(),
        conversation_id: None,
        model: chosen.clone(),
        others: others.clone(),
        created_at_ms: crate::clock::now_ms(),
    };
    match app.store.insert_arena_pick(&app.project, &record).await {
        Ok(()) => {}
        Err(StoreError::Conflict { reason }) => {
            return Err(ServiceError::conflict("arena_already_picked", reason))
        }
        Err(err) => return Err(err.into()),
    }
    Ok(StandalonePick {
        run_id: run_id.to_owned(),
        model: chosen,
        others,
    })
}

/// Per-model wins and appearances over the caller's project's picks at or
/// after `since_ms` (unix ms; all without), most wins first.
///
/// # Errors
/// The store's.
pub async fn stats(
    app: &AppState,
    since_ms: Option<i64>,
) -> Result<Vec<ArenaModelStats>, ServiceError> {
    Ok(app
        .store
        .arena_stats(&app.project, since_ms.unwrap_or(0))
        .await?)
}
