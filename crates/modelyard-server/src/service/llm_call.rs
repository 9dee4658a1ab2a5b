//! One LLM call: `target + request + limits → send → streamed chunks (or one
//! body) → outcome + call record`, the one path every model call of the
//! server takes — the gateway, a turn's chat steps, the advisor, titles and
//! compactions.
//!
//! What is shared:
//! - the request: the server's own requests are composed by [`compose`]
//!   (options first, routing's fields last so nothing overrides them); the
//!   gateway's body is the client's bytes with `model` spliced in. Either way
//!   [`LlmCall::new`] / [`LlmCall::from_raw`] apply the provider's
//!   `set_params` / `strip_params` ([`apply_param_rules`], the one place
//!   that does), and only when the provider has rules does the gateway's
//!   body become a JSON tree. Provider `headers` and `proxy_url` are in the
//!   provider's client ([`modelyard_upstream::ProviderClient`]), so every
//!   call carries them; a custom base URL's client (`ProviderClient::guarded`)
//!   has none by design, and no rules.
//! - sending ([`LlmCall::send`]) to the call's [`Endpoint`] (chat
//!   completions, or the gateway's embeddings / rerank / legacy completions
//!   pass-throughs): the provider's deadlines (in the client),
//!   a disabled provider, a non-2xx answer read at most
//!   [`MAX_ERROR_BODY_BYTES`] and described with the 401/403 (the
//!   provider's credentials) and 3xx (redirects are not followed) wording.
//! - reading: [`LlmCall::read_stream`] (SSE, one event at most
//!   `limits.max_sse_event_bytes`, accumulated) or [`LlmCall::read_body`]
//!   (one answer, at most [`MAX_ANSWER_BYTES`]); the gateway's streamed
//!   pass-through keeps its own loop and uses the same messages
//!   ([`LlmCallError`]).
//! - the record ([`LlmCall::record`]): one [`CallRecord`] per call.
//!
//! No HTTP framework here: errors are [`LlmCallError`], which each front maps
//! to its own shape (the gateway: OpenAI envelopes).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use modelyard_upstream::openai::{
    self, rewrite_completion, upstream_error_message, AnswerSummary, ChunkKind, CompletionError,
    RewrittenCompletion, StreamAccumulator,
};
use modelyard_upstream::sse::SseDecoder;
use modelyard_upstream::UpstreamResponse;
use serde_json::{json, Map, Value};

use crate::clock::now_ms;
use crate::config::ProviderConfig;
use crate::recorder::CallRecord;
use crate::registry::Target;
use crate::routing::Busy;

mod error;

/// Largest non-streamed upstream answer read, bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest upstream error body read, bytes.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Characters of an upstream error message kept.
pub const MAX_ERROR_CHARS: usize = 2_000;

/// What a call is made for, as its record names it.
#[derive(Debug, Clone)]
pub struct Purpose {
    /// Operation (`gateway`, `chat`, `advisor`, `title`, `compaction`, …).
    pub operation: Cow<'static, str>,
    /// The conversation, for calls made for one.
    pub conversation_id: Option<String>,
    /// The turn, for calls made during one.
    pub turn_id: Option<String>,
}

impl Purpose {
    /// A call of `operation` for no conversation.
    pub fn new(operation: &'static str) -> Self {
        Self {
            operation: Cow::Borrowed(operation),
            conversation_id: None,
            turn_id: None,
        }
    }

    /// A call of `operation` for a conversation (and a turn of it).
    pub fn conversation(operation: &str, conversation_id: &str, turn_id: Option<&str>) -> Self {
        Self {
            operation: Cow::Owned(operation.to_owned()),
            conversation_id: Some(conversation_id.to_owned()),
            turn_id: turn_id.map(str::to_owned),
        }
    }
}

/// A request the server composes itself: `options` (LLM config options and
/// the caller's own fields such as `tools` or a default `max_tokens`), then
/// routing's fields — `model` (the upstream name), `messages`, `stream` and,
/// streaming, `stream_options.include_usage` — last, so nothing overrides
/// them.
pub fn compose(
    upstream_model: &str,
    mut options: Map<String, Value>,
    messages: Vec<Value>,
    stream: bool,
) -> Value {
    options.insert("model".into(), json!(upstream_model));
    options.insert("messages".into(), Value::Array(messages));
    options.insert("stream".into(), json!(stream));
    if stream {
        options.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(options)
}

/// The upstream endpoint a call posts to, under the provider's OpenAI API
/// base. Every call the server composes is a chat completion (the
/// default); the gateway's pass-throughs name theirs
/// ([`LlmCall::from_raw_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endpoint {
    /// `POST {api_base}/chat/completions`.
    #[default]
    ChatCompletions,
    /// `POST {api_base}/completions` (legacy, prompt-based).
    Completions,
    /// `POST {api_base}/embeddings`.
    Embeddings,
    /// `POST {api_base}/rerank` (llama.cpp, vLLM).
    Rerank,
    /// `POST {api_base}/messages`: Anthropic's Messages API, on providers
    /// that speak it natively (`ProviderConfig::messages_api`).
    Messages,
    /// `POST {api_base}/messages/count_tokens` (Anthropic's token count).
    MessagesCountTokens,
}

impl Endpoint {
    /// Its path under the API base (no leading `/`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => modelyard_upstream::client::CHAT_COMPLETIONS_PATH,
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Rerank => "rerank",
            Endpoint::Messages => modelyard_upstream::client::MESSAGES_PATH,
            Endpoint::MessagesCountTokens => modelyard_upstream::client::MESSAGES_COUNT_TOKENS_PATH,
        }
    }

    /// Its `gen_ai.operation.name` ([`crate::traces`]).
    pub fn operation_name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages => "chat",
            Endpoint::Completions => "text_completion",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Rerank => "rerank",
            Endpoint::MessagesCountTokens => "count_tokens",
        }
    }

    /// Whether it generates text (chat, legacy completions, Messages): a
    /// provider's `set_params` / `strip_params` (sampling fields) apply only
    /// to these; an embeddings, rerank or token-count body changes only in
    /// `model`.
    pub fn generates(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages
        )
    }

    /// Whether it is one of Anthropic's Messages endpoints, the only ones a
    /// provider of kind `anthropic` serves.
    pub fn is_messages(self) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::MessagesCountTokens)
    }
}

/// Whether `provider` has `set_params` or `strip_params`.
pub fn has_param_rules(provider: &ProviderConfig) -> bool {
    !provider.set_params.is_empty() || !provider.strip_params.is_empty()
}

/// Applies a provider's parameter rules to a request object: removes the
/// top-level fields named in `strip_params`, then sets those in
/// `set_params` (member order kept). Config validation keeps routing's own
/// fields (`model`, `messages`, `stream`, …) out of both.
pub fn apply_param_rules(provider: &ProviderConfig, request: &mut Map<String, Value>) {
    openai::apply_param_rules_to(request, &provider.set_params, &provider.strip_params);
}

pub use error::{status_message, LlmCallError, UpstreamStatus};

/// A request object written with its `model` member set to `model`
/// (added first when it has none).
struct WithModel<'a> {
    map: &'a Map<String, Value>,
    model: &'a str,
}

impl serde::Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let has_model = self.map.contains_key("model");
        let len = self.map.len() + usize::from(!has_model);
        let mut out = serializer.serialize_map(Some(len))?;
        if !has_model {
            out.serialize_entry("model", self.model)?;
        }
        for (key, value) in self.map {
            if key == "model" {
                out.serialize_entry(key, self.model)?;
            } else {
                out.serialize_entry(key, value)?;
            }
        }
        out.end()
    }
}

/// One call to a model, from its request to its record.
#[derive(Debug)]
pub struct LlmCall {
    target: Target,
    purpose: Purpose,
    /// Where it is posted: chat completions unless built by
    /// [`LlmCall::from_raw_to`].
    endpoint: Endpoint,
    stream: bool,
    request: Bytes,
    sent_at_ms: i64,
    status: Option<u16>,
    first_token_at_ms: Option<i64>,
    /// Attempt number within its request, from 1.
    attempt: u32,
    /// The route the request named.
    route: Option<Arc<str>>,
    /// The id answers name as their `model` (the route's name), when not
    /// the deployment's composite id.
    client_model: Option<Arc<str>>,
    /// Held while the call is in flight (`least-busy`, time to first token).
    busy: Option<Busy>,
    /// Where the call's duration, tokens and timings are recorded.
    metrics: Option<Arc<crate::telemetry::CallHandles>>,
    /// Its span, when tracing is on ([`crate::traces`]).
    span: Option<crate::traces::CallSpan>,
    /// Headers added to this request ([`Self::set_headers`]).
    headers: Option<http::HeaderMap>,
}

impl LlmCall {
    /// A call with a request the server composed ([`compose`]), sent to
    /// `target` with its upstream model name in `model`: the provider's
    /// parameter rules are applied to a copy (only when it has rules), then
    /// it is serialized. `stream` is read from the request.
    pub fn new(target: &Target, purpose: Purpose, request: &Value) -> Self {
        let model = target.resolution.model_id.model();
        let empty = Map::new();
        // [`compose`] always builds an object.
        let map = request.as_object().unwrap_or(&empty);
        let body = if has_param_rules(&target.provider.config) {
            let mut map = map.clone();
            map.insert("model".into(), Value::String(model.to_owned()));
            apply_param_rules(&target.provider.config, &mut map);
            Value::Object(map).to_string()
        } else {
            // No copy of the (possibly long) messages: written with `model`
            // replaced on the fly.
            serde_json::to_string(&WithModel { map, model }).unwrap_or_default()
        };
        let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
        Self::start(target, purpose, stream, Bytes::from(body))
    }

    /// A call with a client's request bytes (the gateway's, `model`
    /// already spliced in): sent as they are unless the provider has
    /// parameter rules, which need the body parsed and written again.
    ///
    /// # Errors
    /// [`LlmCallError::InvalidRequest`] when there are rules and the body is
    /// not a JSON object.
    pub fn from_raw(
        target: &Target,
        purpose: Purpose,
        stream: bool,
        request: Vec<u8>,
    ) -> Result<Self, LlmCallError> {
        Self::from_raw_to(target, purpose, Endpoint::ChatCompletions, stream, request)
    }

    /// [`Self::from_raw`] posted to `endpoint` (the gateway's embeddings,
    /// rerank and legacy completions pass-throughs); the parameter rules
    /// apply only when it [generates](Endpoint::generates). Sending,
    /// deadlines, status mapping, reading ([`Self::read_body`],
    /// [`Self::read_stream`]) and the record are the same as chat's.
    ///
    /// # Errors
    /// As [`Self::from_raw`].
    pub fn from_raw_to(
        target: &Target,
        purpose: Purpose,
        endpoint: Endpoint,
        stream: bool,
        request: Vec<u8>,
    ) -> Result<Self, LlmCallError> {
        let rules = &target.provider.config;
        let request = if endpoint.generates() && has_param_rules(rules) {
            openai::apply_param_rules(&request, &rules.set_params, &rules.strip_params)
                .map_err(LlmCallError::InvalidRequest)?
        } else {
            request
        };
        let mut call = Self::start(target, purpose, stream, Bytes::from(request));
        call.endpoint = endpoint;
        Ok(call)
    }

    fn start(target: &Target, purpose: Purpose, stream: bool, request: Bytes) -> Self {
        Self {
            target: target.clone(),
            purpose,
            endpoint: Endpoint::ChatCompletions,
            stream,
            request,
            sent_at_ms: now_ms(),
            status: None,
            first_token_at_ms: None,
            attempt: 1,
            route: None,
            client_model: None,
            busy: None,
            metrics: None,
            span: None,
            headers: None,
        }
    }

    /// Adds `headers` to this call's request (the Messages pass-through
    /// forwards the client's `anthropic-version` / `anthropic-beta`); one
    /// of the same name as a provider header replaces it for this request.
    pub fn set_headers(&mut self, headers: http::HeaderMap) {
        self.headers = (!headers.is_empty()).then_some(headers);
    }

    /// Where it is posted.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Sets the metrics handles its record is counted into
    /// ([`Self::observe`]).
    pub fn set_metrics(&mut self, handles: Option<Arc<crate::telemetry::CallHandles>>) {
        self.metrics = handles;
    }

    /// Starts this call's span with `traces` (nothing when tracing is off):
    /// a child of the current context's span; the request carries its
    /// `traceparent`, [`Self::observe`] ends it.
    pub fn trace(&mut self, traces: &crate::traces::Traces, deployment: &str) {
        if !traces.enabled() {
            return;
        }
        self.span = traces.call_span(crate::traces::CallStart {
            operation_name: self.endpoint.operation_name(),
            purpose: &self.purpose.operation,
            model: self.target.resolution.model_id.model(),
            provider: self.target.provider.name(),
            base_url: &self.target.provider.config.base_url,
            deployment,
            attempt: self.attempt,
            route: self.route.as_deref(),
            conversation_id: self.purpose.conversation_id.as_deref(),
            request: &self.request,
        });
    }

    /// Its operation (`gateway`, `chat`, …).
    pub fn operation(&self) -> &str {
        &self.purpose.operation
    }

    /// Counts this call, finished at `completed_at_ms` with `summary`
    /// (`failed`: it ended with an error), into its metrics handles, if
    /// any. [`Self::record`] does this; a caller that builds its record
    /// later with [`Self::record_at`] calls it when the call ends.
    pub fn observe(&self, summary: &AnswerSummary, failed: bool, completed_at_ms: i64) {
        if let Some(span) = &self.span {
            let error_type = self
                .status
                .filter(|s| !(200..300).contains(s))
                .map(|s| Cow::Owned(s.to_string()))
                .unwrap_or(Cow::Borrowed("_OTHER"));
            span.end(&crate::traces::CallEnd {
                input_tokens: summary.usage.prompt_tokens,
                output_tokens: summary.usage.completion_tokens,
                finish_reason: summary.finish_reason.as_deref(),
                text: summary.text.as_deref(),
                // An error type noted when it happened (`timeout`, …) stays.
                error_type: failed.then_some(error_type.as_ref()),
            });
        }
        let Some(handles) = &self.metrics else {
            return;
        };
        let usage = &summary.usage;
        let secs = |ms: i64| ms.max(0) as f64 / 1000.0;
        handles.observe(&crate::telemetry::CallObservation {
            duration_secs: secs(completed_at_ms - self.sent_at_ms),
            ttft_secs: self.first_token_at_ms.map(|at| secs(at - self.sent_at_ms)),
            input_tokens: usage.prompt_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
            reasoning_tokens: usage.reasoning_tokens.unwrap_or(0),
            cached_input_tokens: usage.cached_prompt_tokens.unwrap_or(0),
            stream: self.stream,
            error: failed.then_some(self.status.filter(|s| !(200..300).contains(s))),
        });
    }

    /// Marks this call as attempt `attempt` of a request that named
    /// `route` (whose name answers then carry as `model`; its fallbacks'
    /// attempts included), in flight on its deployment while `busy` is
    /// held.
    pub fn routed(&mut self, attempt: u32, route: Option<Arc<str>>, busy: Busy) {
        self.attempt = attempt;
        self.client_model.clone_from(&route);
        self.route = route;
        self.busy = Some(busy);
    }

    /// The attempt number within its request, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The id answers carry as `model`: the route's name for a routed
    /// request, else the deployment's composite id.
    pub fn client_model(&self) -> String {
        match &self.client_model {
            Some(name) => name.to_string(),
            None => self.target.resolution.model_id.to_string(),
        }
    }

    fn first_output(&mut self, at_ms: i64) {
        self.first_token_at_ms = Some(at_ms);
        if let Some(busy) = self.busy.as_mut() {
            busy.observe_ttft(at_ms - self.sent_at_ms);
        }
    }

    /// Where it goes.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The request body as sent.
    pub fn request(&self) -> &Bytes {
        &self.request
    }

    /// Send time, unix ms.
    pub fn sent_at_ms(&self) -> i64 {
        self.sent_at_ms
    }

    /// The provider's HTTP status, once it answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// When the first output arrived, unix ms.
    pub fn first_token_at_ms(&self) -> Option<i64> {
        self.first_token_at_ms
    }

    /// Sets when the first output arrived (the gateway's pass-through does
    /// its own reading).
    pub fn set_first_token_at_ms(&mut self, at_ms: Option<i64>) {
        if let Some(at_ms) = at_ms {
            self.first_output(at_ms);
        }
    }

    /// Sends the request (to its [`Endpoint`]) under the provider's
    /// deadlines. A non-2xx answer
    /// is an error whose body was read (at most [`MAX_ERROR_BODY_BYTES`]);
    /// a streamed request answered with something other than an event
    /// stream is one too.
    ///
    /// # Errors
    /// [`LlmCallError::Disabled`], [`LlmCallError::Send`] (unreachable,
    /// timeout), [`LlmCallError::Status`], [`LlmCallError::NotEventStream`].
    pub async fn send(&mut self) -> Result<UpstreamResponse, LlmCallError> {
        let provider = self.target.provider.name();
        let Some(client) = self.target.provider.client.as_ref() else {
            return Err(LlmCallError::Disabled {
                provider: provider.to_owned(),
            });
        };
        // An `anthropic` provider answers nothing but Messages: refused here
        // rather than sent a request it would reject.
        if self.target.provider.config.kind.speaks_only_messages() && !self.endpoint.is_messages() {
            return Err(LlmCallError::MessagesOnly {
                provider: provider.to_owned(),
            });
        }
        self.sent_at_ms = now_ms();
        let headers = match (
            self.span.as_ref().map(crate::traces::CallSpan::headers),
            self.headers.clone(),
        ) {
            (Some(mut trace), Some(extra)) => {
                trace.extend(extra);
                Some(trace)
            }
            (trace, extra) => trace.or(extra),
        };
        let upstream = client
            .post_json_with(
                self.endpoint.path(),
                self.request.clone(),
                self.stream,
                headers,
            )
            .await
            .map_err(LlmCallError::Send);
        let upstream = match upstream {
            Ok(upstream) => upstream,
            Err(error) => {
                if let Some(span) = &self.span {
                    span.fail(error.error_type());
                }
                return Err(error);
            }
        };
        let status = upstream.status();
        self.status = Some(status);
        if !(200..300).contains(&status) {
            let retry_after = upstream.retry_after().map(str::to_owned);
            let body = upstream
                .bytes(MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            let (message, kind, code) = upstream_error_message(&body, MAX_ERROR_CHARS);
            return Err(LlmCallError::Status(Box::new(UpstreamStatus {
                status,
                message: status_message(provider, status, &message),
                kind,
                code,
                retry_after,
            })));
        }
        if self.stream && !upstream.is_event_stream() {
            return Err(LlmCallError::NotEventStream {
                provider: provider.to_owned(),
                content_type: upstream.content_type().to_owned(),
            });
        }
        Ok(upstream)
    }

    /// Reads a non-streamed answer (at most [`MAX_ANSWER_BYTES`]), with
    /// `model` set to the composite id.
    ///
    /// # Errors
    /// [`LlmCallError::Upstream`] (body, deadline, size),
    /// [`LlmCallError::InBand`], [`LlmCallError::Invalid`].
    pub async fn read_body(
        &mut self,
        upstream: UpstreamResponse,
    ) -> Result<RewrittenCompletion, LlmCallError> {
        let status = upstream.status();
        let bytes = upstream
            .bytes(MAX_ANSWER_BYTES)
            .await
            .map_err(LlmCallError::Upstream)?;
        // A non-streamed answer's latency is the whole answer's.
        if let Some(busy) = self.busy.as_mut() {
            busy.observe_ttft(now_ms() - self.sent_at_ms);
        }
        let provider = self.target.provider.name();
        let client_model = self.client_model();
        rewrite_completion(&bytes, &client_model).map_err(|error| match error {
            // A success status whose body is an error object is an error, not an answer.
            CompletionError::InBand(error) => {
                let (message, _, code) = upstream_error_message(error.as_bytes(), MAX_ERROR_CHARS);
                LlmCallError::InBand {
                    message: format!(
                        "provider '{provider}' answered HTTP {status} with an error: {message}"
                    ),
                    code,
                }
            }
            CompletionError::NotJson(reason) => LlmCallError::Invalid(format!(
                "provider '{provider}' sent a completion that is not a JSON object: {reason}"
            )),
        })
    }

    /// Reads a non-streamed Anthropic Messages answer (at most
    /// [`MAX_ANSWER_BYTES`]) from a provider that speaks Messages natively,
    /// with `model` set to `client_model` and every other byte kept
    /// ([`modelyard_upstream::anthropic::rewrite_message`]).
    ///
    /// # Errors
    /// [`LlmCallError::Upstream`] (body, deadline, size),
    /// [`LlmCallError::InBand`] (a `{"type": "error"}` body),
    /// [`LlmCallError::Invalid`] (not a JSON object).
    pub async fn read_message(
        &mut self,
        upstream: UpstreamResponse,
        client_model: &str,
    ) -> Result<RewrittenCompletion, LlmCallError> {
        let status = upstream.status();
        let bytes = upstream
            .bytes(MAX_ANSWER_BYTES)
            .await
            .map_err(LlmCallError::Upstream)?;
        if let Some(busy) = self.busy.as_mut() {
            busy.observe_ttft(now_ms() - self.sent_at_ms);
        }
        let provider = self.target.provider.name();
        modelyard_upstream::anthropic::rewrite_message(&bytes, client_model).map_err(|error| {
            match error {
                CompletionError::InBand(error) => {
                    let (message, _, code) =
                        upstream_error_message(error.as_bytes(), MAX_ERROR_CHARS);
                    LlmCallError::InBand {
                        message: format!(
                            "provider '{provider}' answered HTTP {status} with an error: {message}"
                        ),
                        code,
                    }
                }
                CompletionError::NotJson(reason) => LlmCallError::Invalid(format!(
                    "provider '{provider}' sent a message that is not a JSON object: {reason}"
                )),
            }
        })
    }

    /// Reads a streamed answer into `acc` until `[DONE]`, calling
    /// `on_chunk` after every accepted chunk (one SSE event at most
    /// `max_event_bytes`). Returning (or dropping the future) drops the
    /// upstream response, which closes its connection.
    ///
    /// # Errors
    /// The read, deadline, malformed-data, in-band and early-end errors.
    pub async fn read_stream(
        &mut self,
        mut upstream: UpstreamResponse,
        max_event_bytes: usize,
        acc: &mut StreamAccumulator,
        on_chunk: &mut (dyn FnMut(&StreamAccumulator) + Send),
    ) -> Result<(), LlmCallError> {
        let provider = self.target.provider.name().to_owned();
        let client_model = self.client_model();
        let mut decoder = SseDecoder::with_max_event_bytes(max_event_bytes);
        loop {
            let chunk = match upstream.next_chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    return Err(LlmCallError::closed(&provider, decoder.has_partial_event()))
                }
                Err(err) => return Err(LlmCallError::Upstream(err)),
            };
            decoder.push(&chunk);
            loop {
                let event = match decoder.try_next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(too_large) => {
                        return Err(LlmCallError::event_too_large(&provider, too_large))
                    }
                };
                if event.data.as_ref() == b"[DONE]" {
                    return Ok(());
                }
                match acc.accept(&event.data, &client_model) {
                    Ok(ChunkKind::Forward(_)) | Ok(ChunkKind::UsageOnly(_)) => {}
                    Ok(ChunkKind::Error(error)) => {
                        return Err(LlmCallError::mid_stream(&provider, &error))
                    }
                    Err(reason) => return Err(LlmCallError::malformed(&provider, &reason)),
                }
                if self.first_token_at_ms.is_none() && acc.has_output() {
                    self.first_output(now_ms());
                }
                on_chunk(acc);
            }
        }
    }

    /// The call-log record of this call, finished now with `summary` and
    /// `error`.
    pub fn record(&self, summary: AnswerSummary, error: Option<String>) -> CallRecord {
        let completed_at_ms = now_ms();
        self.observe(&summary, error.is_some(), completed_at_ms);
        self.record_at(summary, error, completed_at_ms)
    }

    /// [`Self::record`] finished at `completed_at_ms` (for a record built
    /// later, off the hot path; not counted in metrics: see
    /// [`Self::observe`]).
    pub fn record_at(
        &self,
        summary: AnswerSummary,
        error: Option<String>,
        completed_at_ms: i64,
    ) -> CallRecord {
        CallRecord {
            operation: self.purpose.operation.clone().into_owned(),
            conversation_id: self.purpose.conversation_id.clone(),
            turn_id: self.purpose.turn_id.clone(),
            model_id: self.target.resolution.model_id.to_string(),
            provider: self.target.provider.name().to_owned(),
            upstream_model: self.target.resolution.model_id.model().to_owned(),
            stream: self.stream,
            request_json: String::from_utf8_lossy(&self.request).into_owned(),
            summary,
            sent_at_ms: self.sent_at_ms,
            first_token_at_ms: self.first_token_at_ms,
            completed_at_ms,
            http_status: self.status,
            error,
            attempt: self.attempt,
            route: self.route.as_deref().map(str::to_owned),
        }
    }

    /// Sends a non-streamed request and reads its answer: the summary (or
    /// why there is none) and the call's record.
    pub async fn complete(mut self) -> (Result<AnswerSummary, LlmCallError>, CallRecord) {
        let outcome = match self.send().await {
            Ok(upstream) => self.read_body(upstream).await.map(|r| r.summary),
            Err(error) => Err(error),
        };
        let record = match &outcome {
            Ok(summary) => self.record(summary.clone(), None),
            Err(error) => self.record(AnswerSummary::default(), Some(error.to_string())),
        };
        (outcome, record)
    }
}

#[cfg(test)]
mod tests;
