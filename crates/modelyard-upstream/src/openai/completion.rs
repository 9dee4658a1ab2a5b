//! A non-streamed completion: `model` rewritten for the client, and what
//! the call log keeps of it.

use serde::Deserialize;
use serde_json::value::RawValue;

use modelyard_core::Usage;

use super::request::{span_of, splice};

/// A `usage` object: OpenAI's names, or Anthropic's (`input_tokens`,
/// `output_tokens`, cache reads and writes beside the input), which some
/// OpenAI-compatible proxies pass through.
#[derive(Deserialize, Default, Debug, Clone, Copy)]
pub(super) struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    /// With `prompt_tokens`, OpenAI's convention: cache counts (OpenAI's
    /// `cached_tokens`, else `cache_read_input_tokens`, and
    /// `cache_creation_input_tokens`) are inside the prompt. Without it but
    /// with Anthropic's `input_tokens`, Anthropic's: the cache counts are
    /// added to the input ([`Usage::from_anthropic`]).
    fn from(w: WireUsage) -> Self {
        let reasoning_tokens = w.completion_tokens_details.and_then(|d| d.reasoning_tokens);
        if w.prompt_tokens.is_none() && w.input_tokens.is_some() {
            let mut usage = Usage::from_anthropic(
                w.input_tokens,
                w.cache_read_input_tokens,
                w.cache_creation_input_tokens,
                w.completion_tokens.or(w.output_tokens),
            );
            usage.reasoning_tokens = reasoning_tokens;
            return usage.clamped();
        }
        Usage {
            prompt_tokens: w.prompt_tokens,
            completion_tokens: w.completion_tokens.or(w.output_tokens),
            reasoning_tokens,
            cached_prompt_tokens: w
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .or(w.cache_read_input_tokens),
            cache_creation_tokens: w.cache_creation_input_tokens,
            total_tokens: w.total_tokens,
        }
        .clamped()
        .with_derived_total()
    }
}

/// What the call log keeps of an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerSummary {
    /// Concatenated text content of choice 0.
    pub text: Option<String>,
    /// Concatenated reasoning content (`reasoning_content`) of choice 0.
    pub reasoning: Option<String>,
    /// Tool calls of choice 0 as an OpenAI `tool_calls` JSON array.
    pub tool_calls: Option<serde_json::Value>,
    /// `finish_reason` of choice 0.
    pub finish_reason: Option<String>,
    /// Usage, when reported.
    pub usage: Usage,
}

#[derive(Deserialize)]
struct RawCompletion<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<CompletionMessage>,
    /// A legacy completion's text (`choices[].text`).
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<serde_json::Value>,
}

/// A non-streamed completion, summarized, with `model` rewritten.
#[derive(Debug)]
pub struct RewrittenCompletion {
    /// The body to return to the client.
    pub body: Vec<u8>,
    /// What to record.
    pub summary: AnswerSummary,
}

/// Why a non-streamed completion body is not an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompletionError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// A success status whose body is an error object (`{"error": ...}`);
    /// holds the error member's JSON.
    #[error("error object in a success response: {0}")]
    InBand(String),
}

/// Rewrites the `model` of a non-streamed answer to `client_model` and
/// summarizes it: a chat completion (`choices[0].message`), a legacy
/// completion (`choices[0].text`), or an answer without choices (embeddings,
/// rerank), whose summary is its `usage`.
///
/// # Errors
/// [`CompletionError`].
pub fn rewrite_completion(
    body: &[u8],
    client_model: &str,
) -> Result<RewrittenCompletion, CompletionError> {
    let text = std::str::from_utf8(body).map_err(|e| CompletionError::NotJson(e.to_string()))?;
    let raw: RawCompletion<'_> =
        serde_json::from_str(text).map_err(|e| CompletionError::NotJson(e.to_string()))?;
    if let Some(error) = raw.error.filter(|e| e.get() != "null") {
        return Err(CompletionError::InBand(error.get().to_owned()));
    }
    let body = rewrite_model_at(text, raw.model, client_model);
    let mut summary = AnswerSummary {
        usage: raw.usage.map(Usage::from).unwrap_or_default(),
        ..AnswerSummary::default()
    };
    if let Some(choice) = raw.choices.into_iter().next() {
        summary.finish_reason = choice.finish_reason;
        summary.text = choice.text;
        if let Some(message) = choice.message {
            summary.text = message.content.or(summary.text);
            summary.reasoning = message.reasoning_content;
            summary.tool_calls = message.tool_calls.filter(|v| !v.is_null());
        }
    }
    Ok(RewrittenCompletion { body, summary })
}

pub(super) fn rewrite_model_at(
    text: &str,
    model: Option<&RawValue>,
    client_model: &str,
) -> Vec<u8> {
    let model_json = super::model_json(client_model);
    match model {
        Some(raw) => splice(text.as_bytes(), vec![(span_of(text, raw), model_json)]),
        None => text.as_bytes().to_vec(),
    }
}
