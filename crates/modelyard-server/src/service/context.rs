//! Fitting a request into the serving deployment's context window
//! (`[turns] context_strategy`): the window a destination can count on,
//! the output reserve, a request's prompt-token estimate and the
//! truncation that drops the oldest whole messages.
//!
//! A prompt's size is estimated, in this order:
//! 1. the provider's tokenizer where its kind has one (llama.cpp
//!    `/apply-template` + `/tokenize`, [`modelyard_upstream::tokens`]):
//!    exactly the `prompt_tokens` the call would report;
//! 2. a [`Calibration`]: the conversation's last reported `prompt_tokens`
//!    against the JSON size of the messages (and tools) sent then, applied
//!    to the JSON size of this request; kept in memory per conversation
//!    ([`Calibrations`]), so the first call after a restart uses 3.;
//! 3. [`BYTES_PER_TOKEN`] bytes of JSON per token.
//!
//! The budget of a prompt is the window minus the output reserve: the
//! request's `max_tokens` (or `max_completion_tokens`), else `[turns]
//! output_reserve_tokens`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use modelyard_upstream::tokens::can_count_tokens;
use serde_json::Value;

use crate::app::AppState;
use crate::routing::Destination;
use crate::service::routed::likely_target;

/// JSON bytes per token of the last-resort estimate (the usual rule of
/// thumb for English text is four characters per token; JSON punctuation
/// makes this err on the large side).
pub const BYTES_PER_TOKEN: u64 = 4;

/// Where an estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimateSource {
    /// The provider's tokenizer counted the request.
    Tokenizer,
    /// Scaled by the conversation's last reported prompt size.
    Calibrated,
    /// [`BYTES_PER_TOKEN`] bytes of JSON per token.
    BytesPerToken,
}

impl EstimateSource {
    /// `tokenizer`, `calibrated` or `bytes_per_token`.
    pub fn as_str(self) -> &'static str {
        match self {
            EstimateSource::Tokenizer => "tokenizer",
            EstimateSource::Calibrated => "calibrated",
            EstimateSource::BytesPerToken => "bytes_per_token",
        }
    }
}

/// A request's estimated prompt size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Prompt tokens.
    pub tokens: u64,
    /// How they were counted.
    pub source: EstimateSource,
}

/// A reported prompt size and the JSON size of the messages that produced
/// it: tokens per byte for this conversation's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// The `prompt_tokens` the upstream reported.
    pub prompt_tokens: u64,
    /// JSON bytes of the request's messages (and tools) then; never 0.
    pub bytes: u64,
}

impl Calibration {
    /// `None` when either number is 0 (nothing to scale by).
    pub fn new(prompt_tokens: u64, bytes: u64) -> Option<Self> {
        (prompt_tokens > 0 && bytes > 0).then_some(Self {
            prompt_tokens,
            bytes,
        })
    }

    /// Tokens of `bytes` JSON bytes at this calibration's rate, rounded up.
    pub fn tokens(&self, bytes: u64) -> u64 {
        let scaled = u128::from(bytes) * u128::from(self.prompt_tokens);
        u64::try_from(scaled.div_ceil(u128::from(self.bytes))).unwrap_or(u64::MAX)
    }
}

/// Conversations whose last [`Calibration`] is kept; the oldest noted is
/// forgotten first.
pub const MAX_CALIBRATIONS: usize = 4096;

/// The last [`Calibration`] of each conversation's model calls, in memory
/// (at most [`MAX_CALIBRATIONS`] conversations).
#[derive(Debug, Default)]
pub struct Calibrations(Mutex<CalibrationMap>);

#[derive(Debug, Default)]
struct CalibrationMap {
    by_conversation: HashMap<String, Calibration>,
    order: VecDeque<String>,
}

impl Calibrations {
    /// The last calibration noted for `conversation_id`.
    pub fn get(&self, conversation_id: &str) -> Option<Calibration> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.by_conversation.get(conversation_id).copied()
    }

    /// Notes what a call of `conversation_id` sent and what it reported.
    pub fn note(&self, conversation_id: &str, calibration: Calibration) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let map = &mut *map;
        if map
            .by_conversation
            .insert(conversation_id.to_owned(), calibration)
            .is_none()
        {
            map.order.push_back(conversation_id.to_owned());
            while map.order.len() > MAX_CALIBRATIONS {
                if let Some(oldest) = map.order.pop_front() {
                    map.by_conversation.remove(&oldest);
                }
            }
        }
    }
}

/// JSON bytes of a request body's `messages` and `tools`: what a
/// [`Calibration`] relates to its reported prompt size.
pub fn request_bytes(body: &Value) -> u64 {
    ["messages", "tools"]
        .iter()
        .filter_map(|key| body.get(*key).and_then(Value::as_array))
        .flatten()
        .map(json_bytes)
        .sum()
}

/// The context window (tokens) a call to `destination` can count on; see
/// [`Destination::context_window`].
pub fn context_window(app: &AppState, destination: &Destination) -> Option<u64> {
    destination.context_window(&app.registry)
}

/// Tokens kept free for the answer: the request `body`'s `max_tokens` or
/// `max_completion_tokens`, else `default` (`[turns] output_reserve_tokens`).
pub fn output_reserve(body: &Value, default: u32) -> u64 {
    ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_u64))
        .unwrap_or_else(|| u64::from(default))
}

/// JSON size of `value`, bytes.
pub fn json_bytes(value: &Value) -> u64 {
    serde_json::to_string(value).map_or(0, |s| s.len() as u64)
}

/// JSON size of each of `values` and their sum, bytes.
fn sizes(values: &[Value]) -> (Vec<u64>, u64) {
    let each: Vec<u64> = values.iter().map(json_bytes).collect();
    let total = each.iter().sum();
    (each, total)
}

/// Estimates the prompt tokens of chat `messages` with `tools` sent to
/// `destination` (see the [module docs](self) for the order); `affinity`
/// picks a route's likely deployment, whose tokenizer counts.
pub async fn estimate(
    app: &AppState,
    destination: &Destination,
    affinity: Option<&str>,
    messages: &[Value],
    tools: &[Value],
    calibration: Option<Calibration>,
) -> Estimate {
    if let Some(target) = likely_target(app, destination, affinity) {
        let provider = &target.provider;
        if can_count_tokens(provider.config.kind) {
            if let Some(client) = &provider.client {
                match client.count_prompt_tokens(messages, tools).await {
                    Ok(tokens) => {
                        return Estimate {
                            tokens,
                            source: EstimateSource::Tokenizer,
                        }
                    }
                    Err(err) => tracing::debug!(
                        provider = provider.name(),
                        error = %err,
                        "cannot count prompt tokens; estimating"
                    ),
                }
            }
        }
    }
    let bytes = sizes(messages).1 + sizes(tools).1;
    match calibration {
        Some(c) => Estimate {
            tokens: c.tokens(bytes),
            source: EstimateSource::Calibrated,
        },
        None => Estimate {
            tokens: bytes.div_ceil(BYTES_PER_TOKEN),
            source: EstimateSource::BytesPerToken,
        },
    }
}

/// The cost (tokens) of each of `messages` and of `tools`, `estimate`
/// spread over their JSON sizes: what dropping a message saves.
pub fn costs(messages: &[Value], tools: &[Value], estimate: u64) -> (Vec<u64>, u64) {
    let (each, message_bytes) = sizes(messages);
    let tool_bytes = sizes(tools).1;
    let Some(rate) = Calibration::new(estimate, message_bytes + tool_bytes) else {
        return (vec![0; messages.len()], 0);
    };
    (
        each.iter().map(|b| rate.tokens(*b)).collect(),
        rate.tokens(tool_bytes),
    )
}

/// The request messages are too large even with everything droppable
/// dropped: the messages that are never dropped ([`truncate`]) need
/// `needed` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the messages that must stay need about {needed} tokens")]
pub struct CannotFit {
    /// Tokens of the messages that are never dropped.
    pub needed: u64,
}

/// Which of the request's chat `messages` (OpenAI shape) to keep so that
/// their `costs` add up to at most `budget`: the oldest whole messages go
/// first. Never dropped: the leading `system` messages (system prompt,
/// compaction summary), the last `user` message and, when the turn has
/// called tools since, its newest assistant message with its results. An
/// assistant message with `tool_calls` and the `tool` results that follow
/// it go (or stay) together, so the kept history still satisfies the
/// tool-call protocol. Returns the kept indices, in order.
///
/// # Errors
/// [`CannotFit`] when the messages that are never dropped alone cost more
/// than `budget`.
pub fn truncate(messages: &[Value], costs: &[u64], budget: u64) -> Result<Vec<usize>, CannotFit> {
    let role = |i: usize| messages[i].get("role").and_then(Value::as_str);
    let cost = |i: usize| costs.get(i).copied().unwrap_or(0);
    let lead = (0..messages.len())
        .take_while(|&i| role(i) == Some("system"))
        .count();
    // Units: one message, or an assistant message with its tool results.
    let mut units: Vec<std::ops::Range<usize>> = Vec::new();
    for i in lead..messages.len() {
        let joined =
            role(i) == Some("tool") && units.last_mut().map(|unit| unit.end = i + 1).is_some();
        if !joined {
            units.push(i..i + 1);
        }
    }
    let last_user = (lead..messages.len())
        .rev()
        .find(|&i| role(i) == Some("user"));
    // The newest exchange after the last user message stays too: without
    // its tool results the model would only call the same tools again.
    let newest = units
        .last()
        .filter(|unit| last_user.is_some_and(|u| unit.start > u))
        .cloned();
    let protected = |unit: &std::ops::Range<usize>| {
        last_user.is_some_and(|u| unit.contains(&u)) || newest.as_ref() == Some(unit)
    };
    let unit_cost = |unit: &std::ops::Range<usize>| unit.clone().map(cost).sum::<u64>();
    let mut total: u64 = (0..messages.len()).map(cost).sum();
    let mut dropped = vec![false; units.len()];
    for (k, unit) in units.iter().enumerate() {
        if total <= budget {
            break;
        }
        if protected(unit) {
            continue;
        }
        dropped[k] = true;
        total = total.saturating_sub(unit_cost(unit));
    }
    if total > budget {
        return Err(CannotFit { needed: total });
    }
    let mut kept: Vec<usize> = (0..lead).collect();
    for (k, unit) in units.iter().enumerate() {
        if !dropped[k] {
            kept.extend(unit.clone());
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: &str) -> Value {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]})
    }

    fn result(id: &str) -> Value {
        json!({"role": "tool", "tool_call_id": id, "content": "r"})
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    fn assistant(text: &str) -> Value {
        json!({"role": "assistant", "content": text})
    }

    fn system(text: &str) -> Value {
        json!({"role": "system", "content": text})
    }

    #[test]
    fn everything_fits_nothing_is_dropped() {
        let messages = [system("s"), user("a"), assistant("b"), user("c")];
        assert_eq!(
            truncate(&messages, &[1, 1, 1, 1], 10).unwrap(),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn the_oldest_whole_messages_go_first_and_the_system_prompt_and_last_user_message_stay() {
        let messages = [
            system("prompt"),
            system("summary"),
            user("old question"),
            assistant("old answer"),
            user("question"),
            assistant("answer"),
            user("last question"),
        ];
        let costs = [5, 5, 10, 10, 10, 10, 10];
        // 60 in all; 40 allowed: the two oldest go.
        assert_eq!(
            truncate(&messages, &costs, 40).unwrap(),
            vec![0, 1, 4, 5, 6]
        );
        // 20 allowed: only what must stay.
        assert_eq!(truncate(&messages, &costs, 20).unwrap(), vec![0, 1, 6]);
        // Less than what must stay: an error with the size of that.
        assert_eq!(
            truncate(&messages, &costs, 19),
            Err(CannotFit { needed: 20 })
        );
    }

    #[test]
    fn a_tool_call_never_loses_its_results() {
        let messages = [
            system("s"),
            user("q1"),
            call("c1"),
            result("c1"),
            assistant("a1"),
            user("q2"),
            call("c2"),
            result("c2"),
        ];
        let costs = [1, 1, 10, 10, 1, 1, 1, 1];
        // Dropping the first user message is not enough; the next unit is
        // the call with its result, both at once.
        let kept = truncate(&messages, &costs, 10).unwrap();
        assert_eq!(kept, vec![0, 4, 5, 6, 7]);
        // Whatever the budget, a kept call keeps its results and a kept
        // result keeps its call.
        for budget in 0..=40 {
            let Ok(kept) = truncate(&messages, &costs, budget) else {
                continue;
            };
            for (i, m) in messages.iter().enumerate() {
                if m["role"] == "tool" {
                    let call = (0..i)
                        .rev()
                        .find(|&j| messages[j]["role"] != "tool")
                        .unwrap();
                    assert_eq!(
                        kept.contains(&i),
                        kept.contains(&call),
                        "budget {budget}: {kept:?}"
                    );
                }
            }
            assert!(kept.contains(&0) && kept.contains(&5), "{kept:?}");
        }
    }

    #[test]
    fn the_calls_after_the_last_user_message_go_only_after_everything_older_and_the_newest_stays() {
        let messages = [
            user("q1"),
            assistant("a1"),
            user("q2"),
            call("c1"),
            result("c1"),
            call("c2"),
            result("c2"),
        ];
        let costs = [3, 3, 1, 2, 2, 2, 2];
        assert_eq!(truncate(&messages, &costs, 9).unwrap(), vec![2, 3, 4, 5, 6]);
        assert_eq!(truncate(&messages, &costs, 5).unwrap(), vec![2, 5, 6]);
        // The newest call and its result stay with the last question.
        assert_eq!(truncate(&messages, &costs, 4), Err(CannotFit { needed: 5 }));
    }

    #[test]
    fn costs_spread_the_estimate_over_the_json_sizes() {
        let messages = [user("a"), user(&"b".repeat(100))];
        let (each, tools) = costs(&messages, &[], 100);
        assert_eq!(tools, 0);
        assert!(each[1] > 3 * each[0], "{each:?}");
        let sum: u64 = each.iter().sum();
        assert!((100..=102).contains(&sum), "{sum}");
    }

    #[test]
    fn calibrations_are_kept_per_conversation_and_bounded() {
        let kept = Calibrations::default();
        assert_eq!(kept.get("a"), None);
        kept.note("a", Calibration::new(10, 40).unwrap());
        kept.note("a", Calibration::new(20, 40).unwrap());
        assert_eq!(kept.get("a").unwrap().prompt_tokens, 20);
        for i in 0..MAX_CALIBRATIONS {
            kept.note(&i.to_string(), Calibration::new(1, 1).unwrap());
        }
        assert_eq!(kept.get("a"), None, "the oldest is forgotten");
        assert!(kept.get(&(MAX_CALIBRATIONS - 1).to_string()).is_some());
    }

    #[test]
    fn calibration_scales_and_rounds_up() {
        let c = Calibration::new(100, 400).unwrap();
        assert_eq!(c.tokens(800), 200);
        assert_eq!(c.tokens(1), 1);
        assert!(Calibration::new(0, 10).is_none());
        assert!(Calibration::new(10, 0).is_none());
    }

    #[test]
    fn the_reserve_is_the_requests_max_tokens_else_the_default() {
        assert_eq!(output_reserve(&json!({"max_tokens": 64}), 1024), 64);
        assert_eq!(
            output_reserve(&json!({"max_completion_tokens": 32}), 1024),
            32
        );
        assert_eq!(output_reserve(&json!({}), 1024), 1024);
    }
}
