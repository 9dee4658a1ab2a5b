//! The arena (`POST /v1/arena`): one request, several models, side by side.
//!
//! Every model id is resolved as a gateway call of it would be (a route's
//! name or a deployment id, [`AppState::destination`]); with `llmId`, that
//! config's provider options and system prompt apply and a custom base URL
//! is used as for a turn ([`crate::routing::Destination::for_llm_config`]).
//! The request's own `options` (`temperature`, `max_tokens`, …) come after
//! the config's, and routing's fields (`model`, `messages`, `stream`) last
//! ([`compose`]).
//!
//! All models run concurrently on the one LLM call path (retries, balancing
//! and fallbacks of [`routed`]); each is always read as a stream upstream,
//! so its time to first token is known whether or not the client streams.
//! One model failing does not stop the others. The run is recorded as one
//! LLM session of operation `arena` holding every call (attempts included)
//! and charged to the caller's budgets ([`AppState::record_charged`]); the
//! session records the config snapshot the run went with ([`snapshot`]:
//! with `llmId`, or in a conversation).
//!
//! Parts: `conversation.rs` (the arena inside a conversation: a turn whose
//! user message several models answer, which then waits for a pick),
//! `picks.rs` (picks, a run's results, per-model win counts).

mod conversation;
mod picks;

pub use conversation::{begin, finish, pending_conflict, Begun, ConversationArena};
pub use picks::{get_run, pick, pick_standalone, stats, Picked, RunView, StandalonePick};

use futures_util::future::join_all;
use modelyard_core::conversation::ResolvedFrom;
use modelyard_core::llm_config::ConfigSnapshot;
use modelyard_core::Usage;
use modelyard_store::LlmConfigRow;
use modelyard_upstream::openai::StreamAccumulator;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::error::ServiceError;
use super::llm_call::{compose, LlmCall, LlmCallError, Purpose};
use super::routed::{self, Plan};
use super::turn_target::config_snapshot;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::CallRecord;
use crate::registry::Target;
use crate::routing::Destination;

/// Fewest models an arena run compares.
pub const MIN_MODELS: usize = 2;
/// Most models an arena run compares.
pub const MAX_MODELS: usize = 8;
/// The operation an arena run's LLM session records.
pub const OPERATION: &str = "arena";

/// An arena request as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct ArenaRequest {
    /// Chat messages (OpenAI shape); exactly one of `messages` and `prompt`.
    pub messages: Option<Vec<Value>>,
    /// Shorthand for one user message.
    pub prompt: Option<String>,
    /// The model ids (route names or deployment ids), 2–8, distinct.
    pub models: Vec<String>,
    /// An LLM config whose options, system prompt and base URL apply.
    pub llm_id: Option<String>,
    /// Provider options (`temperature`, `max_tokens`, …), over the config's.
    pub options: Map<String, Value>,
}

/// One model of a validated run.
#[derive(Debug)]
struct Entrant {
    /// The id as the client asked for it.
    model: String,
    destination: Destination,
    /// This model's own request, fitted into its context window (a
    /// conversation arena), or why none can be sent (it then fails without
    /// a call); `None`: the run's request.
    fitted: Option<Result<Value, String>>,
}

/// A validated arena run, ready to [`run`].
#[derive(Debug)]
pub struct Prepared {
    /// The run's id (UUIDv7), also its LLM session's.
    pub id: String,
    entrants: Vec<Entrant>,
    body: Value,
    /// The conversation and turn the run answers (recorded on its
    /// session), for a conversation arena.
    link: Option<(String, String)>,
    /// Stops every model still running (each then fails `cancelled`; its
    /// call is recorded as such), for a conversation arena's turn.
    cancel: Option<tokio_util::sync::CancellationToken>,
    /// The config snapshot the run's session records.
    config: Option<ConfigSnapshot>,
}

impl Prepared {
    /// The model ids, in request order.
    pub fn models(&self) -> Vec<String> {
        self.entrants.iter().map(|e| e.model.clone()).collect()
    }

    /// Where each model's call goes, in request order.
    fn destinations(&self) -> Vec<&Destination> {
        self.entrants.iter().map(|e| &e.destination).collect()
    }

    /// Gives each model its own request (`fitted`, in request order; see
    /// [`Entrant`]).
    fn fit(&mut self, fitted: Vec<Result<Value, String>>) {
        for (entrant, fitted) in self.entrants.iter_mut().zip(fitted) {
            entrant.fitted = Some(fitted);
        }
    }
}

/// The config snapshot of a run that `config` supplied (`resolved_from`:
/// how a conversation's models were chosen, `None` outside one):
/// [`config_snapshot`] with `model` listing every model's id in request
/// order, comma-separated, and `baseUrl` only when every model goes to the
/// same one.
fn snapshot(
    entrants: &[Entrant],
    config: Option<&LlmConfigRow>,
    resolved_from: Option<ResolvedFrom>,
) -> Option<ConfigSnapshot> {
    let each: Vec<ConfigSnapshot> = entrants
        .iter()
        .map(|e| config_snapshot(resolved_from, &e.destination, config))
        .collect();
    let mut snapshot = each.first()?.clone();
    if each.iter().any(|e| e.base_url != snapshot.base_url) {
        snapshot.base_url = None;
    }
    snapshot.model = each
        .iter()
        .map(|e| e.model.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Some(snapshot)
}

/// Token counts of one model's answer (`None`: not reported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArenaUsage {
    /// Prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// Generated tokens.
    pub completion_tokens: Option<u64>,
    /// Their sum, when both are known.
    pub total_tokens: Option<u64>,
}

impl From<&Usage> for ArenaUsage {
    fn from(usage: &Usage) -> Self {
        let total_tokens = match (usage.prompt_tokens, usage.completion_tokens) {
            (Some(p), Some(c)) => Some(p.saturating_add(c)),
            _ => None,
        };
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens,
        }
    }
}

/// What one model of a run produced.
#[derive(Debug, Clone)]
pub struct ArenaResult {
    /// Position in the request's `models`, from 0.
    pub index: usize,
    /// The model id as asked for.
    pub model: String,
    /// `None` when it completed; why it failed otherwise.
    pub error: Option<String>,
    /// The answer's text (what arrived, also when it failed).
    pub text: String,
    /// Token counts.
    pub usage: ArenaUsage,
    /// Cost in USD, when priced.
    pub cost_usd: Option<f64>,
    /// The same cost in nano-USD.
    pub cost_nusd: Option<i64>,
    /// Every token count the upstream reported.
    pub tokens: Usage,
    /// The deployment that answered (composite id), when a call was made.
    pub model_id: Option<String>,
    /// Milliseconds from the first attempt's send to the first output.
    pub ttft_ms: Option<i64>,
    /// Milliseconds from the first attempt's send to the end.
    pub duration_ms: i64,
}

/// Progress of a run, as it happens.
#[derive(Debug, Clone)]
pub enum ArenaEvent {
    /// New text from model `index`.
    Delta {
        /// Position in `models`.
        index: usize,
        /// The model id.
        model: String,
        /// The new text.
        delta: String,
    },
    /// Model `index` finished (completed or failed: see its `error`).
    Finished(Box<ArenaResult>),
}

impl ArenaEvent {
    /// The event's SSE name and data, as `POST /v1/arena`'s feed sends it
    /// (and a conversation's feed, with its own fields added):
    /// `arena.delta` `{model, index, delta}`, `arena.completed` `{model,
    /// index, text, usage: {promptTokens, completionTokens, totalTokens},
    /// costUsd, ttftMs, durationMs}` or `arena.failed` `{model, index,
    /// error}`.
    pub fn wire(&self) -> (&'static str, Value) {
        match self {
            ArenaEvent::Delta {
                index,
                model,
                delta,
            } => (
                "arena.delta",
                json!({"model": model, "index": index, "delta": delta}),
            ),
            ArenaEvent::Finished(result) => match &result.error {
                Some(error) => (
                    "arena.failed",
                    json!({"model": result.model, "index": result.index, "error": error}),
                ),
                None => (
                    "arena.completed",
                    json!({
                        "model": result.model, "index": result.index, "text": result.text,
                        "usage": {
                            "promptTokens": result.usage.prompt_tokens,
                            "completionTokens": result.usage.completion_tokens,
                            "totalTokens": result.usage.total_tokens,
                        },
                        "costUsd": result.cost_usd, "ttftMs": result.ttft_ms,
                        "durationMs": result.duration_ms,
                    }),
                ),
            },
        }
    }
}

/// Validates `request`: exactly one of `messages` (a non-empty array) and
/// `prompt`; 2–8 distinct model ids, each resolving; `llmId` naming a
/// config of this project.
///
/// # Errors
/// 422 [`ServiceError::Invalid`] naming the field, or
/// [`ServiceError::UnknownModel`] (field `models`) with suggestions; the
/// store's errors.
pub async fn prepare(app: &AppState, request: ArenaRequest) -> Result<Prepared, ServiceError> {
    let messages = match (request.messages, request.prompt) {
        (Some(_), Some(_)) => {
            return Err(ServiceError::invalid_field(
                "prompt",
                "pass either `messages` or `prompt`, not both",
            ))
        }
        (None, None) => {
            return Err(ServiceError::invalid_field(
                "messages",
                "pass `messages` (chat messages) or `prompt` (one user message)",
            ))
        }
        (Some(messages), None) => {
            if messages.is_empty() {
                return Err(ServiceError::invalid_field(
                    "messages",
                    "`messages` must not be empty",
                ));
            }
            if !messages.iter().all(Value::is_object) {
                return Err(ServiceError::invalid_field(
                    "messages",
                    "every message must be an object with `role` and `content`",
                ));
            }
            messages
        }
        (None, Some(prompt)) => {
            if prompt.trim().is_empty() {
                return Err(ServiceError::invalid_field(
                    "prompt",
                    "`prompt` must not be empty",
                ));
            }
            vec![json!({"role": "user", "content": prompt})]
        }
    };
    within_caps(&app.config.limits, messages.len(), &request.options)?;
    check_models(&request.models)?;
    let config = match request.llm_id.as_deref() {
        Some(id) => {
            let id = modelyard_core::ids::LlmConfigId::parse(id).map_err(|e| {
                ServiceError::invalid_field("llmId", format!("invalid LLM config id: {e}"))
            })?;
            match app.store.get_llm_config(&app.project, id.as_str()).await? {
                Some(row) if !row.deleted => Some(row),
                _ => {
                    return Err(ServiceError::invalid_field(
                        "llmId",
                        format!("llmId: no LLM config with id {:?}", id.as_str()),
                    ))
                }
            }
        }
        None => None,
    };
    let body = body(config.as_ref(), request.options, messages);
    let mut prepared = prepare_body(app, request.models, config.as_ref(), body)?;
    if config.is_some() {
        prepared.config = snapshot(&prepared.entrants, config.as_ref(), None);
    }
    Ok(prepared)
}

/// Checks the model list: 2–8 distinct ids.
///
/// # Errors
/// [`ServiceError::invalid_field`] `models`.
fn check_models(models: &[String]) -> Result<(), ServiceError> {
    let count = models.len();
    if !(MIN_MODELS..=MAX_MODELS).contains(&count) {
        return Err(ServiceError::invalid_field(
            "models",
            format!("an arena compares {MIN_MODELS} to {MAX_MODELS} models; {count} given"),
        ));
    }
    for (i, model) in models.iter().enumerate() {
        if models[..i].contains(model) {
            return Err(ServiceError::invalid_field(
                "models",
                format!("model {model:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// A run of `body` (a complete streamed chat request, [`compose`]d) on
/// `models`, each resolved as a gateway call of it would be, with
/// `config`'s custom base URL.
///
/// # Errors
/// 422 `models` (count, duplicates, or [`ServiceError::UnknownModel`] with
/// suggestions); 422 `llmId` for a refused base URL.
fn prepare_body(
    app: &AppState,
    models: Vec<String>,
    config: Option<&LlmConfigRow>,
    body: Value,
) -> Result<Prepared, ServiceError> {
    check_models(&models)?;
    let mut entrants = Vec::with_capacity(models.len());
    for model in models {
        let destination =
            app.destination(Some(&model))
                .map_err(|err| ServiceError::UnknownModel {
                    field: Some("models".into()),
                    message: format!("model {model:?} does not route: {err}"),
                    suggestions: super::models::suggestions(app, &model),
                })?;
        let destination = destination
            .for_llm_config(&app.registry, config)
            .map_err(|err| ServiceError::invalid_field("llmId", err.to_string()))?;
        entrants.push(Entrant {
            model,
            destination,
            fitted: None,
        });
    }
    Ok(Prepared {
        id: uuid::Uuid::now_v7().to_string(),
        entrants,
        body,
        link: None,
        cancel: None,
        config: None,
    })
}

/// The gateway's `[limits]` caps, applied to an arena run (which every
/// model receives): at most `max_messages` messages, `max_tools` tools,
/// `max_output_tokens` as `max_tokens` / `max_completion_tokens`, and one
/// choice (`n`: an arena shows one answer per model).
///
/// # Errors
/// [`ServiceError::invalid_field`] naming the field (`messages`, or
/// `options.<name>`).
fn within_caps(
    limits: &crate::config::LimitsConfig,
    messages: usize,
    options: &Map<String, Value>,
) -> Result<(), ServiceError> {
    if messages > limits.max_messages as usize {
        return Err(ServiceError::invalid_field(
            "messages",
            format!(
                "{messages} messages; this server allows at most {} (limits.max_messages)",
                limits.max_messages
            ),
        ));
    }
    if let Some(n) = options.get("n").filter(|n| n.as_u64() != Some(1)) {
        return Err(ServiceError::invalid_field(
            "options.n",
            format!("an arena asks each model for one answer; `n` must be 1, not {n}"),
        ));
    }
    for name in ["max_tokens", "max_completion_tokens"] {
        if let Some(value) = options.get(name) {
            if value
                .as_u64()
                .is_none_or(|v| v > u64::from(limits.max_output_tokens))
            {
                return Err(ServiceError::invalid_field(
                    format!("options.{name}"),
                    format!(
                        "`{name}` must be a whole number of at most {} (limits.max_output_tokens), not {value}",
                        limits.max_output_tokens
                    ),
                ));
            }
        }
    }
    if let Some(tools) = options.get("tools") {
        let count = tools.as_array().map_or(usize::MAX, Vec::len);
        if count > limits.max_tools as usize {
            return Err(ServiceError::invalid_field(
                "options.tools",
                format!(
                    "`tools` must be a list of at most {} (limits.max_tools)",
                    limits.max_tools
                ),
            ));
        }
    }
    Ok(())
}

/// The request every model gets: the config's options, then the request's,
/// then (with the config's system prompt first, unless the messages bring
/// their own) the messages; streamed.
fn body(config: Option<&LlmConfigRow>, options: Map<String, Value>, messages: Vec<Value>) -> Value {
    let mut merged = Map::new();
    if let Some(config) = config {
        config.fields.provider_options.apply_to(&mut merged);
    }
    merged.extend(options);
    let mut all = Vec::with_capacity(messages.len() + 1);
    let has_system = messages
        .iter()
        .any(|m| m.get("role").and_then(Value::as_str) == Some("system"));
    if let Some(system) = config.and_then(|c| c.fields.system_prompt.as_deref()) {
        if !has_system {
            all.push(json!({"role": "system", "content": system}));
        }
    }
    all.extend(messages);
    compose("", merged, all, true)
}

/// One model's streamed call and its records.
struct Played {
    result: ArenaResult,
    records: Vec<CallRecord>,
}

/// Runs one model; `events` gets its deltas and its end.
async fn play(
    app: &AppState,
    index: usize,
    entrant: &Entrant,
    body: &Value,
    events: Option<&UnboundedSender<ArenaEvent>>,
    cancel: Option<&tokio_util::sync::CancellationToken>,
) -> Played {
    let body = match &entrant.fitted {
        None => body,
        Some(Ok(fitted)) => fitted,
        Some(Err(why)) => return refused(index, entrant, why, events),
    };
    let purpose = Purpose::new(OPERATION);
    let mut plan = Plan::new(app, entrant.destination.clone(), None);
    let mut current: Option<LlmCall> = None;
    let mut records: Vec<CallRecord> = Vec::new();
    let mut acc = StreamAccumulator::default();
    let started_at_ms = now_ms();
    let mut sent_len = 0usize;
    let mut on_chunk = |acc: &StreamAccumulator| {
        let text = acc.text();
        if text.len() > sent_len {
            if let (Some(events), Some(delta)) = (events, text.get(sent_len..)) {
                // A closed receiver (the client left) only ends the feed.
                let _ = events.send(ArenaEvent::Delta {
                    index,
                    model: entrant.model.clone(),
                    delta: delta.to_owned(),
                });
            }
            sent_len = text.len();
        }
    };
    let read = async {
        let mut build = |target: &Target| -> Result<LlmCall, LlmCallError> {
            Ok(LlmCall::new(target, purpose.clone(), body))
        };
        let upstream = routed::send(&mut plan, &mut current, &mut records, &mut build)
            .await
            .map_err(|e| e.to_string())?;
        let Some(call) = current.as_mut() else {
            return Err("the call was not made".to_owned());
        };
        call.read_stream(
            upstream,
            app.config.limits.max_sse_event_bytes,
            &mut acc,
            &mut on_chunk,
        )
        .await
        .map_err(|e| e.to_string())
    };
    let outcome = match cancel {
        Some(cancel) => tokio::select! {
            outcome = read => outcome,
            () = cancel.cancelled() => Err("cancelled".to_owned()),
        },
        None => read.await,
    };
    let error = outcome.err();
    let sent_at_ms = records
        .first()
        .map(|r| r.sent_at_ms)
        .or(current.as_ref().map(LlmCall::sent_at_ms))
        .unwrap_or(started_at_ms);
    let first_token_at_ms = current.as_ref().and_then(LlmCall::first_token_at_ms);
    let summary = acc.summary();
    let usage = summary.usage;
    let model_id = current
        .as_ref()
        .map(|c| c.target().resolution.model_id.to_string());
    if let Some(call) = current {
        records.push(call.record(summary, error.clone()));
    }
    let cost_nusd = match (&error, &model_id) {
        (None, Some(model_id)) => app.pricing.cost_of(model_id, &usage).cost_nusd,
        _ => None,
    };
    let cost_usd = cost_nusd.map(modelyard_core::cost::nusd_to_usd);
    let result = ArenaResult {
        index,
        model: entrant.model.clone(),
        error,
        text: acc.text().to_owned(),
        usage: ArenaUsage::from(&usage),
        cost_usd,
        cost_nusd,
        tokens: usage,
        model_id,
        ttft_ms: first_token_at_ms.map(|t| t - sent_at_ms),
        duration_ms: now_ms() - sent_at_ms,
    };
    if let Some(events) = events {
        let _ = events.send(ArenaEvent::Finished(Box::new(result.clone())));
    }
    Played { result, records }
}

/// Model `index`'s result when its request cannot be sent (`why`): failed,
/// without a call.
fn refused(
    index: usize,
    entrant: &Entrant,
    why: &str,
    events: Option<&UnboundedSender<ArenaEvent>>,
) -> Played {
    let result = ArenaResult {
        index,
        model: entrant.model.clone(),
        error: Some(why.to_owned()),
        text: String::new(),
        usage: ArenaUsage::default(),
        cost_usd: None,
        cost_nusd: None,
        tokens: Usage::default(),
        model_id: None,
        ttft_ms: None,
        duration_ms: 0,
    };
    if let Some(events) = events {
        let _ = events.send(ArenaEvent::Finished(Box::new(result.clone())));
    }
    Played {
        result,
        records: Vec::new(),
    }
}

/// Runs `prepared` on every model concurrently; `events` (when streaming)
/// gets each model's deltas and end as they happen. Records the run as one
/// `arena` session (id `prepared.id`) holding every call, charged to the
/// caller. Returns the results in request order.
pub async fn run(
    app: &AppState,
    prepared: Prepared,
    events: Option<UnboundedSender<ArenaEvent>>,
) -> Vec<ArenaResult> {
    let Prepared {
        id,
        entrants,
        body,
        link,
        cancel,
        config,
    } = prepared;
    let played = join_all(entrants.iter().enumerate().map(|(index, entrant)| {
        play(app, index, entrant, &body, events.as_ref(), cancel.as_ref())
    }))
    .await;
    let mut results = Vec::with_capacity(played.len());
    let mut records = Vec::new();
    for p in played {
        results.push(p.result);
        records.extend(p.records);
    }
    if let Some(last) = records.pop() {
        let mut session = CallRecord::session_of(records, last);
        session.session.id.clone_from(&id);
        session.session.config = config;
        if let Some((conversation_id, turn_id)) = link {
            session.session.conversation_id = Some(conversation_id);
            session.session.turn_id = Some(turn_id);
        }
        for call in &mut session.calls {
            call.session_id.clone_from(&id);
        }
        app.record_charged(session).await;
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_caps_bound_an_arena_request() {
        let limits = crate::config::LimitsConfig::default();
        let options = |v: Value| v.as_object().cloned().unwrap_or_default();
        let ok = |m: usize, o: Value| within_caps(&limits, m, &options(o)).is_ok();
        assert!(ok(1, json!({"n": 1, "max_tokens": 64, "tools": []})));
        assert!(ok(limits.max_messages as usize, json!({})));
        assert!(!ok(limits.max_messages as usize + 1, json!({})));
        for bad in [
            json!({"n": 2}),
            json!({"n": 1000}),
            json!({"n": "1"}),
            json!({"max_tokens": u64::from(limits.max_output_tokens) + 1}),
            json!({"max_completion_tokens": -1}),
            json!({"max_tokens": 1.5}),
            json!({"tools": "all"}),
            json!({"tools": vec![json!({}); limits.max_tools as usize + 1]}),
        ] {
            assert!(!ok(1, bad.clone()), "{bad}");
        }
    }

    #[test]
    fn total_tokens_need_both_counts() {
        let usage = Usage {
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            ..Usage::default()
        };
        assert_eq!(ArenaUsage::from(&usage).total_tokens, Some(7));
        let usage = Usage {
            prompt_tokens: Some(3),
            ..Usage::default()
        };
        assert_eq!(ArenaUsage::from(&usage).total_tokens, None);
    }

    #[test]
    fn the_request_options_come_after_and_routing_last() {
        let mut options = Map::new();
        options.insert("temperature".into(), json!(0.2));
        options.insert("stream".into(), json!(false));
        let body = body(
            None,
            options,
            vec![json!({"role": "user", "content": "hi"})],
        );
        assert_eq!(body["temperature"], json!(0.2));
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["messages"][0]["content"], json!("hi"));
    }
}
