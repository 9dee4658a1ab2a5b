//! Building a call: what it is for ([`Purpose`]), where it is posted
//! ([`Endpoint`]), its body ([`compose`], the provider's parameter rules)
//! and the [`LlmCall`] constructors.

use std::borrow::Cow;

use bytes::Bytes;
use modelyard_upstream::openai;
use serde_json::{json, Map, Value};

use super::{LlmCall, LlmCallError};
use crate::clock::now_ms;
use crate::config::ProviderConfig;
use crate::registry::Target;

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
}
