//! OpenAI chat-completion wire helpers (format: OpenAI API reference,
//! "Create chat completion" and "The chat completion chunk object").
//!
//! The gateway must pass bodies through untouched except the `model` field,
//! so nothing here re-serializes a whole body: the few fields that matter are
//! read with borrowed [`RawValue`]s, whose position in the input gives the
//! byte range to replace ([`splice`]).

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use modelyard_core::Usage;

/// A body that is not a valid chat-completion request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not a JSON object.
    #[error("request body is not a JSON object: {0}")]
    NotJson(String),
    /// A field has the wrong type.
    #[error("`{field}` must be {expected}")]
    FieldType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A required field is missing.
    #[error("`{0}` is required")]
    Missing(&'static str),
}

/// The fields of a chat-completion request the gateway acts on, with the
/// byte ranges of those it may rewrite.
#[derive(Debug, Clone)]
pub struct ChatRequestHead {
    /// `model`, if present.
    pub model: Option<String>,
    /// Byte range of the `model` value in the body.
    model_span: Option<Range<usize>>,
    /// `stream` (default false).
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub client_include_usage: bool,
    /// The `stream_options` object and its byte range, when present.
    stream_options: Option<(serde_json::Map<String, serde_json::Value>, Range<usize>)>,
    /// Offset just after the opening `{`.
    object_start: usize,
    /// `n`, if present and not `null` (numbers too large for `u64` saturate).
    pub n: Option<u64>,
    /// `max_tokens`, if present and not `null`.
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens`, if present and not `null`.
    pub max_completion_tokens: Option<u64>,
    /// How many entries `messages` has.
    pub message_count: usize,
    /// How many entries `tools` has, if present and not `null`.
    pub tool_count: Option<usize>,
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "array_len")]
    messages: Option<ArrayLen>,
    #[serde(default, deserialize_with = "array_len")]
    tools: Option<ArrayLen>,
    #[serde(borrow, default, deserialize_with = "present")]
    n: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_completion_tokens: Option<&'a RawValue>,
}

/// What an array-valued member holds, read without building it: arrays are
/// counted element by element (each skipped with `IgnoredAny`).
enum ArrayLen {
    Null,
    Len(usize),
    NotArray,
}

fn array_len<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ArrayLen>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = ArrayLen;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_unit<E>(self) -> Result<ArrayLen, E> {
            Ok(ArrayLen::Null)
        }
        fn visit_none<E>(self) -> Result<ArrayLen, E> {
            Ok(ArrayLen::Null)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ArrayLen, A::Error> {
            let mut len = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                len += 1;
            }
            Ok(ArrayLen::Len(len))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ArrayLen, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(ArrayLen::NotArray)
        }
        fn visit_bool<E>(self, _: bool) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_i64<E>(self, _: i64) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_u64<E>(self, _: u64) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_f64<E>(self, _: f64) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_str<E>(self, _: &str) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
    }
    d.deserialize_any(Visit).map(Some)
}

/// A non-negative integer member (`n`, `max_tokens`): `None` when absent or
/// `null`; integral floats are accepted and large values saturate.
fn count_member(raw: Option<&RawValue>, field: &'static str) -> Result<Option<u64>, RequestError> {
    let Some(raw) = is_null(raw) else {
        return Ok(None);
    };
    let wrong = || RequestError::FieldType {
        field,
        expected: "a non-negative integer",
    };
    let number: serde_json::Number = serde_json::from_str(raw.get()).map_err(|_| wrong())?;
    if let Some(value) = number.as_u64() {
        return Ok(Some(value));
    }
    match number.as_f64() {
        // `as` saturates: 1e30 reads as u64::MAX, which is over any cap.
        Some(value) if value >= 0.0 && value.fract() == 0.0 => Ok(Some(value as u64)),
        _ => Err(wrong()),
    }
}

/// `Some(raw)` for a member that is present, even when its value is `null`
/// (plain `Option` would turn `null` into `None` and lose its span).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn span_of(body: &str, raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

fn is_null(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

impl ChatRequestHead {
    /// Reads the head of a chat-completion request.
    ///
    /// # Errors
    /// [`RequestError`] naming the field at fault.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let text = std::str::from_utf8(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let raw: RawHead<'_> =
            serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let object_start = text
            .find('{')
            .map(|i| i + 1)
            .ok_or_else(|| RequestError::NotJson("expected an object".into()))?;
        // A `null` value still has a span: it is replaced, never duplicated.
        let model_span = raw.model.map(|value| span_of(text, value));
        let model = match is_null(raw.model) {
            None => None,
            Some(value) => Some(serde_json::from_str::<String>(value.get()).map_err(|_| {
                RequestError::FieldType {
                    field: "model",
                    expected: "a string",
                }
            })?),
        };
        let stream = match is_null(raw.stream) {
            None => false,
            Some(value) => {
                serde_json::from_str(value.get()).map_err(|_| RequestError::FieldType {
                    field: "stream",
                    expected: "a boolean",
                })?
            }
        };
        let message_count = match raw.messages {
            None | Some(ArrayLen::Null) => return Err(RequestError::Missing("messages")),
            Some(ArrayLen::NotArray) => {
                return Err(RequestError::FieldType {
                    field: "messages",
                    expected: "an array of messages",
                })
            }
            Some(ArrayLen::Len(len)) => len,
        };
        let tool_count = match raw.tools {
            None | Some(ArrayLen::Null) => None,
            Some(ArrayLen::NotArray) => {
                return Err(RequestError::FieldType {
                    field: "tools",
                    expected: "an array of tools",
                })
            }
            Some(ArrayLen::Len(len)) => Some(len),
        };
        let n = count_member(raw.n, "n")?;
        let max_tokens = count_member(raw.max_tokens, "max_tokens")?;
        let max_completion_tokens =
            count_member(raw.max_completion_tokens, "max_completion_tokens")?;
        let stream_options = match raw.stream_options {
            None => None,
            Some(value) if value.get() == "null" => {
                Some((serde_json::Map::new(), span_of(text, value)))
            }
            Some(value) => {
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(value.get()).map_err(|_| RequestError::FieldType {
                        field: "stream_options",
                        expected: "an object",
                    })?;
                Some((map, span_of(text, value)))
            }
        };
        let client_include_usage = stream_options
            .as_ref()
            .and_then(|(map, _)| map.get("include_usage"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(Self {
            model,
            model_span,
            stream,
            client_include_usage,
            stream_options,
            object_start,
            n,
            max_tokens,
            max_completion_tokens,
            message_count,
            tool_count,
        })
    }

    /// The body to send upstream: `model` set to `upstream_model`, and for
    /// streaming requests `stream_options.include_usage` forced to `true`
    /// (so usage is always captured). Every other byte is kept.
    pub fn upstream_body(&self, body: &[u8], upstream_model: &str) -> Vec<u8> {
        let model_json = serde_json::Value::String(upstream_model.to_owned()).to_string();
        let mut edits: Vec<(Range<usize>, String)> = Vec::with_capacity(2);
        let mut inserts = String::new();
        match &self.model_span {
            Some(span) => edits.push((span.clone(), model_json)),
            None => {
                inserts.push_str("\"model\":");
                inserts.push_str(&model_json);
                inserts.push(',');
            }
        }
        if self.stream && !self.client_include_usage {
            match &self.stream_options {
                Some((map, span)) => {
                    let mut map = map.clone();
                    map.insert("include_usage".into(), serde_json::Value::Bool(true));
                    edits.push((span.clone(), serde_json::Value::Object(map).to_string()));
                }
                None => inserts.push_str("\"stream_options\":{\"include_usage\":true},"),
            }
        }
        if !inserts.is_empty() {
            // An object with no members gets no trailing comma.
            let rest_is_empty = body[self.object_start..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                == Some(&b'}');
            if rest_is_empty {
                inserts.pop();
            }
            edits.push((self.object_start..self.object_start, inserts));
        }
        splice(body, edits)
    }
}

/// Applies a provider's parameter rules to a request body: removes the
/// top-level fields named in `strip`, then sets those in `set`. The body is
/// re-serialized (member order kept), so this runs only for providers that
/// have rules.
///
/// # Errors
/// A message when the body is not a JSON object.
pub fn apply_param_rules(
    body: &[u8],
    set: &serde_json::Map<String, serde_json::Value>,
    strip: &[String],
) -> Result<Vec<u8>, String> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    apply_param_rules_to(&mut object, set, strip);
    serde_json::to_vec(&object).map_err(|e| e.to_string())
}

/// [`apply_param_rules`] on a request object already in memory: removes the
/// top-level fields named in `strip`, then sets those in `set` (member order
/// kept).
pub fn apply_param_rules_to(
    object: &mut serde_json::Map<String, serde_json::Value>,
    set: &serde_json::Map<String, serde_json::Value>,
    strip: &[String],
) {
    for key in strip {
        object.shift_remove(key);
    }
    for (key, value) in set {
        object.insert(key.clone(), value.clone());
    }
}

/// Replaces byte ranges of `input`; ranges must not overlap.
pub fn splice(input: &[u8], mut edits: Vec<(Range<usize>, String)>) -> Vec<u8> {
    edits.sort_by_key(|(range, _)| range.start);
    let added: usize = edits.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(input.len() + added);
    let mut at = 0;
    for (range, replacement) in edits {
        out.extend_from_slice(&input[at..range.start]);
        out.extend_from_slice(replacement.as_bytes());
        at = range.end;
    }
    out.extend_from_slice(&input[at..]);
    out
}

#[derive(Deserialize, Default, Debug, Clone, Copy)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
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
    fn from(w: WireUsage) -> Self {
        Usage {
            prompt_tokens: w.prompt_tokens,
            completion_tokens: w.completion_tokens,
            reasoning_tokens: w.completion_tokens_details.and_then(|d| d.reasoning_tokens),
            cached_prompt_tokens: w.prompt_tokens_details.and_then(|d| d.cached_tokens),
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

/// Rewrites the `model` of a non-streamed completion to `client_model` and
/// summarizes it.
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
        if let Some(message) = choice.message {
            summary.text = message.content;
            summary.reasoning = message.reasoning_content;
            summary.tool_calls = message.tool_calls.filter(|v| !v.is_null());
        }
    }
    Ok(RewrittenCompletion { body, summary })
}

fn rewrite_model_at(text: &str, model: Option<&RawValue>, client_model: &str) -> Vec<u8> {
    let model_json = serde_json::Value::String(client_model.to_owned()).to_string();
    match model {
        Some(raw) => splice(text.as_bytes(), vec![(span_of(text, raw), model_json)]),
        None => text.as_bytes().to_vec(),
    }
}

#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// What one streamed chunk turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// A normal chunk: forward `body` (model rewritten).
    Forward(Vec<u8>),
    /// The usage-only chunk (`choices: []` with `usage`): forward `body` only
    /// if the client asked for usage.
    UsageOnly(Vec<u8>),
    /// An in-band error object (`{"error": ...}`); its JSON text.
    Error(String),
}

/// Highest `tool_calls[].index` accepted in a streamed chunk (tool calls are
/// kept in a vector indexed by it; a higher index is a malformed stream, not
/// an allocation).
pub const MAX_TOOL_CALL_INDEX: usize = 128;

/// Most bytes of text, reasoning, tool call ids, names and arguments one
/// streamed answer may accumulate (64 MiB, as much as a non-streamed answer
/// may be); beyond it the stream is malformed, so a provider that streams
/// forever cannot exhaust memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Accumulates a streamed answer (choice 0) for the call log.
#[derive(Debug)]
pub struct StreamAccumulator {
    text: String,
    reasoning: String,
    tool_calls: Vec<ToolCallAcc>,
    finish_reason: Option<String>,
    usage: Usage,
    /// Bytes accumulated so far, and the cap.
    bytes: usize,
    max_bytes: usize,
}

impl Default for StreamAccumulator {
    fn default() -> Self {
        Self::with_max_answer_bytes(MAX_ANSWER_BYTES)
    }
}

#[derive(Debug, Default)]
struct ToolCallAcc {
    id: String,
    name: String,
    arguments: String,
}

impl StreamAccumulator {
    /// An accumulator that refuses answers longer than `max_bytes`.
    pub fn with_max_answer_bytes(max_bytes: usize) -> Self {
        Self {
            text: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: Usage::default(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Counts `len` more accumulated bytes.
    fn grow(&mut self, len: usize) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > self.max_bytes {
            return Err(format!(
                "the answer is larger than {} bytes",
                self.max_bytes
            ));
        }
        Ok(())
    }

    /// Reads one chunk's JSON, accumulates it, and returns what to do with it,
    /// with `model` rewritten to `client_model`.
    ///
    /// # Errors
    /// A message when the data is not a JSON object (malformed SSE payload),
    /// a tool call's `index` is over [`MAX_TOOL_CALL_INDEX`], or the answer
    /// grows over its cap ([`MAX_ANSWER_BYTES`] by default).
    pub fn accept(&mut self, data: &[u8], client_model: &str) -> Result<ChunkKind, String> {
        let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        let raw: RawChunk<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(error) = raw.error.filter(|e| e.get() != "null") {
            return Ok(ChunkKind::Error(error.get().to_owned()));
        }
        if let Some(usage) = raw.usage {
            self.usage = Usage::from(usage);
        }
        let choices = raw.choices.unwrap_or_default();
        let usage_only = choices.is_empty() && raw.usage.is_some();
        for choice in choices.into_iter().filter(|c| c.index == 0) {
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(content) = delta.content {
                self.grow(content.len())?;
                self.text.push_str(&content);
            }
            if let Some(reasoning) = delta.reasoning_content {
                self.grow(reasoning.len())?;
                self.reasoning.push_str(&reasoning);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                if call.index > MAX_TOOL_CALL_INDEX {
                    return Err(format!(
                        "tool call index {} is over the limit of {MAX_TOOL_CALL_INDEX}",
                        call.index
                    ));
                }
                if self.tool_calls.len() <= call.index {
                    self.tool_calls
                        .resize_with(call.index + 1, ToolCallAcc::default);
                }
                let added = call.id.as_ref().map_or(0, |id| id.len())
                    + call.function.as_ref().map_or(0, |f| {
                        f.name.as_ref().map_or(0, |n| n.len())
                            + f.arguments.as_ref().map_or(0, |a| a.len())
                    });
                self.grow(added)?;
                let acc = &mut self.tool_calls[call.index];
                if let Some(id) = call.id {
                    acc.id.push_str(&id);
                }
                if let Some(function) = call.function {
                    if let Some(name) = function.name {
                        acc.name.push_str(&name);
                    }
                    if let Some(arguments) = function.arguments {
                        acc.arguments.push_str(&arguments);
                    }
                }
            }
        }
        let body = rewrite_model_at(text, raw.model, client_model);
        Ok(if usage_only {
            ChunkKind::UsageOnly(body)
        } else {
            ChunkKind::Forward(body)
        })
    }

    /// The answer text accumulated so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The reasoning text accumulated so far.
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }

    /// Number of tool calls (choice 0) begun so far.
    pub fn tool_call_count(&self) -> usize {
        self.tool_calls.len()
    }

    /// Tool call `index` so far: `(id, function name, arguments)`, each as
    /// accumulated from the deltas (possibly still empty or partial).
    pub fn tool_call(&self, index: usize) -> Option<(&str, &str, &str)> {
        self.tool_calls
            .get(index)
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
    }

    /// Whether any content, reasoning or tool call has arrived.
    pub fn has_output(&self) -> bool {
        !self.text.is_empty() || !self.reasoning.is_empty() || !self.tool_calls.is_empty()
    }

    /// The answer so far.
    pub fn summary(&self) -> AnswerSummary {
        let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
        let tool_calls = (!self.tool_calls.is_empty()).then(|| {
            serde_json::Value::Array(
                self.tool_calls
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}
                        })
                    })
                    .collect(),
            )
        });
        AnswerSummary {
            text: non_empty(&self.text),
            reasoning: non_empty(&self.reasoning),
            tool_calls,
            finish_reason: self.finish_reason.clone(),
            usage: self.usage,
        }
    }
}

/// Reads an upstream error body: the OpenAI envelope's `error.message`,
/// `error.type` and `error.code` when present, else the body text
/// (truncated to `max_chars`).
pub fn upstream_error_message(
    body: &[u8],
    max_chars: usize,
) -> (String, Option<String>, Option<serde_json::Value>) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let error = value.get("error").unwrap_or(&value);
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .or_else(|| error.as_str().map(str::to_owned));
        if let Some(message) = message {
            let kind = error
                .get("type")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            let code = error.get("code").cloned().filter(|c| !c.is_null());
            return (truncate(&message, max_chars), kind, code);
        }
    }
    (
        truncate(&String::from_utf8_lossy(body), max_chars),
        None,
        None,
    )
}

/// At most `max_chars` characters of `text`, marked when cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}… (truncated)", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
