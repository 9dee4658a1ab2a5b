//! A step's request, fitted into the serving deployment's context window
//! before it is sent (`[turns] context_strategy`, see
//! [`crate::service::context`] for the estimate and the truncation).
//!
//! When the destination's window is known, the prompt is estimated against
//! the window minus the output reserve (the budget):
//! - `compact`: past `compact_at` of the budget, the conversation's
//!   `compaction` operation runs (everything before the last user message;
//!   a normal `conversation.compacted` event and `compaction` session) and
//!   the request is built again with the summary; if it still does not
//!   fit (or the compaction failed), it is truncated;
//! - `truncate`: over the budget, the oldest whole messages are left out
//!   of the request (nothing is persisted; never the system prompt, the
//!   last user message or the newest tool call with its results);
//! - `error`: over the budget, the step fails with the numbers (a turn's
//!   start is refused before anything is appended:
//!   [`check_at_start`]).
//!
//! An arena's first request, which several models answer at once, is
//! fitted the same way for each of them before anything is appended
//! ([`fit_at_start`]): at most one compaction, then each model's request
//! truncated for its own window.
//!
//! A request whose system prompt and last user message alone exceed the
//! budget fails the turn here, with the numbers, rather than at the
//! upstream. A bytes-per-token guess (no tokenizer, no calibration yet)
//! never refuses or fails a turn by itself: it only compacts and truncates;
//! when truncation cannot make the guess fit, the request goes as built
//! and the upstream decides.

use modelyard_core::conversation::{MessageRecord, MessageRole, TokenUsage};
use modelyard_core::llm_config::ReasoningEffort;
use modelyard_store::LlmConfigRow;
use serde_json::Value;

use super::request::{request_body, RunOverrides};
use super::steps::Transcript;
use super::TurnJob;
use crate::app::AppState;
use crate::config::ContextStrategy;
use crate::routing::Destination;
use crate::service::context::{self, Calibration, Estimate};
use crate::service::error::ServiceError;
use crate::service::operations::{self, OperationError};

/// The window, the reserve and what is left for the prompt, tokens.
#[derive(Debug, Clone, Copy)]
struct Limits {
    window: u64,
    reserve: u64,
    budget: u64,
    strategy: ContextStrategy,
}

impl Limits {
    /// Past this estimate, `compact` runs the conversation's compaction.
    fn compact_threshold(&self, compact_at: f64) -> u64 {
        (self.budget as f64 * compact_at) as u64
    }

    fn too_long(&self, estimated: u64) -> String {
        format!(
            "the prompt needs about {estimated} tokens, more than the context window of {} \
             tokens minus {} reserved for the answer ([turns] context_strategy = \"{}\")",
            self.window,
            self.reserve,
            self.strategy.as_str()
        )
    }

    fn cannot_fit(&self, needed: u64) -> String {
        format!(
            "the system prompt, the last user message and the newest tool results need about {needed} \
             tokens, more than the context window of {} tokens minus {} reserved for the \
             answer; no older message is left to drop",
            self.window, self.reserve
        )
    }
}

/// What a request is built from.
struct Parts<'a> {
    llm_config: Option<&'a LlmConfigRow>,
    reasoning_effort: Option<ReasoningEffort>,
    overrides: &'a RunOverrides,
    tools: &'a [Value],
}

impl Parts<'_> {
    fn body(&self, messages: &[MessageRecord], summary: Option<(i64, &str)>) -> Value {
        request_body(
            messages,
            self.llm_config,
            self.reasoning_effort,
            summary,
            self.tools,
            self.overrides,
        )
    }
}

fn array<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether `estimate` is only the bytes-per-token guess.
fn is_guess(estimate: Estimate) -> bool {
    estimate.source == context::EstimateSource::BytesPerToken
}

fn summary_of(transcript: &Transcript) -> Option<(i64, &str)> {
    transcript
        .summary
        .as_ref()
        .map(|(seq, text)| (*seq, text.as_str()))
}

/// Where a request goes and whose it is (the ids name it in the logs).
struct Fitting<'a> {
    app: &'a AppState,
    conversation_id: &'a str,
    turn_id: &'a str,
    destination: &'a Destination,
}

impl Fitting<'_> {
    /// The limits of the destination's window for `body` and the
    /// estimate of its prompt; `None` when the window is unknown.
    async fn measure(
        &self,
        body: &Value,
        calibration: Option<Calibration>,
    ) -> Option<(Limits, Estimate)> {
        let window = context::context_window(self.app, self.destination)?;
        let turns = &self.app.config.turns;
        let reserve = context::output_reserve(body, turns.output_reserve_tokens);
        let limits = Limits {
            window,
            reserve,
            budget: window.saturating_sub(reserve),
            strategy: turns.context_strategy,
        };
        let estimate = context::estimate(
            self.app,
            self.destination,
            Some(self.conversation_id),
            array(body, "messages"),
            array(body, "tools"),
            calibration,
        )
        .await;
        Some((limits, estimate))
    }
}

/// The request of the next step of `job`, fitted into the context window
/// (see the [module docs](self)); `transcript` is read again after an
/// automatic compaction.
///
/// # Errors
/// Why the turn fails: the prompt does not fit and the strategy is
/// `error`, or even truncation cannot make it fit.
pub(super) async fn fitted_body(
    job: &TurnJob,
    transcript: &mut Transcript,
    tools: &[Value],
) -> Result<Value, String> {
    let TurnJob {
        app,
        live,
        destination,
        ..
    } = job;
    let parts = Parts {
        llm_config: job.llm_config.as_ref(),
        reasoning_effort: job.reasoning_effort,
        overrides: &job.overrides,
        tools,
    };
    let fitting = Fitting {
        app,
        conversation_id: &live.conversation_id,
        turn_id: &live.turn_id,
        destination,
    };
    let mut body = parts.body(&transcript.messages, summary_of(transcript));
    let calibration = app.calibrations.get(&live.conversation_id);
    let Some((limits, mut estimate)) = fitting.measure(&body, calibration).await else {
        return Ok(body);
    };
    match limits.strategy {
        ContextStrategy::Error if estimate.tokens > limits.budget && !is_guess(estimate) => {
            return Err(limits.too_long(estimate.tokens));
        }
        ContextStrategy::Error => return Ok(body),
        ContextStrategy::Truncate => {}
        ContextStrategy::Compact => {
            if estimate.tokens > limits.compact_threshold(app.config.turns.compact_at) {
                match compact(&fitting, &transcript.messages, 0).await {
                    Ok(true) => {
                        tracing::info!(
                            conversation = %live.conversation_id,
                            turn = %live.turn_id,
                            estimated_tokens = estimate.tokens,
                            context_window = limits.window,
                            "context: compacted the conversation before the model call"
                        );
                        *transcript = Transcript::read(app, &live.conversation_id)
                            .await
                            .map_err(|err| err.to_string())?;
                        live.note_seq(transcript.last_seq);
                        body = parts.body(&transcript.messages, summary_of(transcript));
                        if let Some((_, again)) = fitting.measure(&body, calibration).await {
                            estimate = again;
                        }
                    }
                    Ok(false) => {}
                    Err(reason) => tracing::warn!(
                        conversation = %live.conversation_id,
                        turn = %live.turn_id,
                        %reason,
                        "context: automatic compaction failed; truncating instead"
                    ),
                }
            }
        }
    }
    if estimate.tokens <= limits.budget {
        return Ok(body);
    }
    truncated(&fitting, body, estimate, calibration, limits).await
}

/// Runs the conversation's compaction over every message of `messages`
/// (the transcript the next request is built from; its last `unstored`
/// are not in the store yet) before the last user message. `Ok(false)`:
/// nothing to compact.
async fn compact(
    fitting: &Fitting<'_>,
    messages: &[MessageRecord],
    unstored: usize,
) -> Result<bool, String> {
    let app = fitting.app;
    let conversation = app
        .store
        .get_conversation(&app.project, fitting.conversation_id)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| "the conversation is gone".to_owned())?;
    let keep_from = messages
        .iter()
        .rposition(|m| m.role == MessageRole::User)
        .unwrap_or(messages.len().saturating_sub(1));
    let keep_last = (messages.len() - keep_from).saturating_sub(unstored);
    let keep_last = u32::try_from(keep_last).unwrap_or(u32::MAX);
    match operations::compact(app, &conversation, Some(keep_last), None).await {
        Ok(_) => Ok(true),
        Err(OperationError::Unprocessable(_)) => Ok(false),
        Err(err) => Err(err.to_string()),
    }
}

/// `body` with the oldest whole messages left out until the estimate fits
/// the budget ([`context::truncate`]); estimated again after each cut, at
/// most three cuts.
async fn truncated(
    fitting: &Fitting<'_>,
    mut body: Value,
    mut estimate: Estimate,
    calibration: Option<Calibration>,
    limits: Limits,
) -> Result<Value, String> {
    let Fitting {
        app,
        conversation_id,
        turn_id,
        destination,
    } = *fitting;
    let tools = array(&body, "tools").to_vec();
    let mut messages = array(&body, "messages").to_vec();
    let sent = messages.len();
    for _ in 0..3 {
        let (costs, tool_cost) = context::costs(&messages, &tools, estimate.tokens);
        let kept = match context::truncate(
            &messages,
            &costs,
            limits.budget.saturating_sub(tool_cost),
        ) {
            Ok(kept) => kept,
            // A guess does not fail a turn: the upstream decides.
            Err(_) if is_guess(estimate) => {
                tracing::info!(
                    conversation = %conversation_id,
                    turn = %turn_id,
                    estimated_tokens = estimate.tokens,
                    context_window = limits.window,
                    "context: the estimate is a guess that no truncation fits; sending the request as built"
                );
                return Ok(body);
            }
            Err(e) => return Err(limits.cannot_fit(e.needed.saturating_add(tool_cost))),
        };
        messages = kept.into_iter().map(|i| messages[i].clone()).collect();
        estimate = context::estimate(
            app,
            destination,
            Some(conversation_id),
            &messages,
            &tools,
            calibration,
        )
        .await;
        if estimate.tokens <= limits.budget {
            tracing::info!(
                conversation = %conversation_id,
                turn = %turn_id,
                model = %destination.model_id(),
                left_out = sent - messages.len(),
                estimated_tokens = estimate.tokens,
                estimate = estimate.source.as_str(),
                context_window = limits.window,
                "context: left the oldest messages out of the request"
            );
            body["messages"] = Value::Array(messages);
            return Ok(body);
        }
    }
    if is_guess(estimate) {
        body["messages"] = Value::Array(messages);
        return Ok(body);
    }
    Err(limits.too_long(estimate.tokens))
}

/// What a turn's first request is built from ([`check_at_start`],
/// [`fit_at_start`]).
pub struct StartCheck<'a> {
    /// The LLM config that supplies options and system prompt.
    pub llm_config: Option<&'a LlmConfigRow>,
    /// The conversation's reasoning effort setting.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// The run's overrides.
    pub overrides: &'a RunOverrides,
    /// The tools the first step offers.
    pub tools: &'a [Value],
    /// The new user message's content.
    pub content: &'a Value,
}

impl StartCheck<'_> {
    fn parts(&self) -> Parts<'_> {
        Parts {
            llm_config: self.llm_config,
            reasoning_effort: self.reasoning_effort,
            overrides: self.overrides,
            tools: self.tools,
        }
    }
}

/// The conversation's transcript with the new user message `content`
/// after it (not stored yet).
async fn start_transcript(
    app: &AppState,
    conversation_id: &str,
    content: &Value,
) -> Result<Transcript, ServiceError> {
    let mut transcript = Transcript::read(app, conversation_id).await?;
    transcript.messages.push(MessageRecord {
        id: String::new(),
        conversation_id: conversation_id.to_owned(),
        turn_id: String::new(),
        role: MessageRole::User,
        content: content.clone(),
        parts: Vec::new(),
        model_id: None,
        usage: TokenUsage::default(),
        finish_reason: None,
        seq: i64::MAX,
        created_at_ms: 0,
    });
    Ok(transcript)
}

/// [`ServiceError::ContextLengthExceeded`] when `body`'s prompt would not
/// fit `fitting`'s destination (not for an unknown window or a
/// bytes-per-token guess).
async fn refuse_too_long(
    fitting: &Fitting<'_>,
    body: &Value,
    calibration: Option<Calibration>,
) -> Result<(), ServiceError> {
    match fitting.measure(body, calibration).await {
        Some((limits, estimate)) if estimate.tokens > limits.budget && !is_guess(estimate) => {
            Err(ServiceError::ContextLengthExceeded {
                estimated_tokens: estimate.tokens,
                context_window: limits.window,
                output_reserve_tokens: limits.reserve,
            })
        }
        _ => Ok(()),
    }
}

/// With `[turns] context_strategy = "error"`: refuses a turn whose first
/// request to `destination` (the conversation so far plus the new user
/// message) would not fit its context window minus the output reserve —
/// before anything is appended. Does nothing with another strategy, an
/// unknown window or only a bytes-per-token guess of the size.
///
/// # Errors
/// [`ServiceError::ContextLengthExceeded`] with the numbers; the store's.
pub async fn check_at_start(
    app: &AppState,
    conversation_id: &str,
    destination: &Destination,
    check: StartCheck<'_>,
) -> Result<(), ServiceError> {
    if app.config.turns.context_strategy != ContextStrategy::Error {
        return Ok(());
    }
    if context::context_window(app, destination).is_none() {
        return Ok(());
    }
    let transcript = start_transcript(app, conversation_id, check.content).await?;
    let body = check
        .parts()
        .body(&transcript.messages, summary_of(&transcript));
    let fitting = Fitting {
        app,
        conversation_id,
        turn_id: "",
        destination,
    };
    refuse_too_long(&fitting, &body, app.calibrations.get(conversation_id)).await
}

/// The first request of a turn that several `destinations` answer at once
/// (an arena), fitted into each one's context window before anything of
/// the turn (`turn_id`) is appended, the way a turn's step is:
/// - `error`: refused when it does not fit one of them ([`check_at_start`]);
/// - `compact`: when it passes `compact_at` of any one's budget, the
///   conversation's compaction runs once (everything before the new user
///   message; the same `conversation.compacted` event and `compaction`
///   session as a turn's), and the request is built again with the
///   summary; then as `truncate` for each one it still does not fit;
/// - `truncate`: for each destination the oldest whole messages are left
///   out until it fits that one's window (the requests may differ).
///
/// Returns one request per destination, in order, or why that one cannot
/// be sent: the error a turn fails with when even truncation cannot make
/// its request fit.
///
/// # Errors
/// [`ServiceError::ContextLengthExceeded`] (`error`); the store's.
pub async fn fit_at_start(
    app: &AppState,
    conversation_id: &str,
    turn_id: &str,
    destinations: &[&Destination],
    check: StartCheck<'_>,
) -> Result<Vec<Result<Value, String>>, ServiceError> {
    let turns = &app.config.turns;
    let parts = check.parts();
    let mut transcript = start_transcript(app, conversation_id, check.content).await?;
    let mut body = parts.body(&transcript.messages, summary_of(&transcript));
    let calibration = app.calibrations.get(conversation_id);
    let fittings: Vec<Fitting<'_>> = destinations
        .iter()
        .map(|destination| Fitting {
            app,
            conversation_id,
            turn_id,
            destination,
        })
        .collect();
    if turns.context_strategy == ContextStrategy::Error {
        for fitting in &fittings {
            refuse_too_long(fitting, &body, calibration).await?;
        }
        return Ok(vec![Ok(body); fittings.len()]);
    }
    if turns.context_strategy == ContextStrategy::Compact {
        let mut passed = None;
        for fitting in &fittings {
            if let Some((limits, estimate)) = fitting.measure(&body, calibration).await {
                if estimate.tokens > limits.compact_threshold(turns.compact_at) {
                    passed = Some((fitting, limits, estimate));
                    break;
                }
            }
        }
        if let Some((fitting, limits, estimate)) = passed {
            match compact(fitting, &transcript.messages, 1).await {
                Ok(true) => {
                    tracing::info!(
                        conversation = %conversation_id,
                        turn = %turn_id,
                        model = %fitting.destination.model_id(),
                        estimated_tokens = estimate.tokens,
                        context_window = limits.window,
                        "context: compacted the conversation before the models' calls"
                    );
                    transcript = start_transcript(app, conversation_id, check.content).await?;
                    body = parts.body(&transcript.messages, summary_of(&transcript));
                }
                Ok(false) => {}
                Err(reason) => tracing::warn!(
                    conversation = %conversation_id,
                    turn = %turn_id,
                    %reason,
                    "context: automatic compaction failed; truncating instead"
                ),
            }
        }
    }
    let mut bodies = Vec::with_capacity(fittings.len());
    for fitting in &fittings {
        bodies.push(match fitting.measure(&body, calibration).await {
            Some((limits, estimate)) if estimate.tokens > limits.budget => {
                truncated(fitting, body.clone(), estimate, calibration, limits).await
            }
            _ => Ok(body.clone()),
        });
    }
    Ok(bodies)
}
