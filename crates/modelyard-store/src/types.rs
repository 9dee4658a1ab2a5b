//! Plain data types exchanged with the store.

use std::fmt;

use modelyard_core::llm_config::ConfigSnapshot;
use serde::{Deserialize, Serialize};

/// Default number of rows returned by [`Store::list_calls`](crate::Store::list_calls)
/// when [`CallFilter::limit`] is 0.
pub const DEFAULT_LIST_LIMIT: u32 = 50;

/// Largest number of rows [`Store::list_calls`](crate::Store::list_calls) returns
/// in one page; larger [`CallFilter::limit`] values are capped to this.
pub const MAX_LIST_LIMIT: u32 = 500;

/// Identifier of a project (the `projects.id` column). Every stored row belongs
/// to exactly one project, and every store function that touches project-owned
/// rows takes the project id as its first argument.
///
/// Shared text (`Arc<str>`): the server clones the caller's project id into
/// every middleware layer's state and into each call record, so a clone is
/// a reference count, not an allocation.
/// Serialized as a plain JSON string (serde's `rc` feature).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectId(std::sync::Arc<str>);

impl ProjectId {
    /// Id of the project every installation starts with (`"default"`, created by
    /// the first migration).
    pub const DEFAULT: &'static str = "default";

    /// The built-in project `"default"`.
    pub fn default_project() -> Self {
        Self(Self::DEFAULT.into())
    }

    /// Wraps an existing project id. No validation: an id that names no
    /// project simply matches no rows (and writes under it fail with
    /// [`StoreError::MissingReference`](crate::StoreError::MissingReference)).
    pub fn new(id: String) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the id.
    pub fn into_string(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ProjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Which database engine a [`Store`](crate::Store) runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite file (or in-memory) database, URL scheme `sqlite:`.
    Sqlite,
    /// PostgreSQL server, URL scheme `postgres://` or `postgresql://`.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Token usage of one LLM call as reported by the upstream; `None` = not
/// reported. All counts are in tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// Tokens of the prompt (input), including cached ones.
    pub prompt_tokens: Option<i64>,
    /// Tokens of the completion (output), including reasoning tokens.
    pub completion_tokens: Option<i64>,
    /// Of the completion tokens, how many were spent on reasoning.
    pub reasoning_tokens: Option<i64>,
    /// Of the prompt tokens, how many were served from the upstream's cache.
    pub cached_prompt_tokens: Option<i64>,
    /// Of the prompt tokens, how many were written to the upstream's cache
    /// (Anthropic's `cache_creation_input_tokens`).
    pub cache_creation_tokens: Option<i64>,
    /// Total tokens as reported by the upstream.
    pub total_tokens: Option<i64>,
}

/// Where the price that priced a call came from (`llm_calls.price_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// A `[[prices]]` entry of the config.
    Config,
    /// The provider's model listing (e.g. OpenRouter's `pricing`).
    Provider,
    /// No price: a local model (cost 0) or an unpriced cloud model (cost
    /// unknown).
    None,
}

impl PriceSource {
    /// `"config"`, `"provider"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Config => "config",
            PriceSource::Provider => "provider",
            PriceSource::None => "none",
        }
    }

    /// The source named exactly `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            PriceSource::Config,
            PriceSource::Provider,
            PriceSource::None,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The cost of one call as its row stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCost {
    /// Cost in nano-USD (1e-9 USD); `None` when it cannot be told (usage not
    /// reported, or an unpriced cloud model).
    pub cost_nusd: Option<i64>,
    /// Where the price came from; `None` for calls recorded before costs
    /// existed (or not priced yet).
    pub price_source: Option<PriceSource>,
    /// Fingerprint of the price used (`modelyard_core::Price::version`);
    /// `None` without a price.
    pub price_version: Option<String>,
}

/// One LLM session to insert: the calls made for one operation run (e.g. one
/// gateway request). Its project is given by the caller of
/// [`Store::record_sessions`](crate::Store::record_sessions).
#[derive(Clone, Debug)]
pub struct NewLlmSession {
    /// Session id, a UUIDv7 string generated by the caller. Globally unique.
    pub id: String,
    /// What produced the session: `"gateway"`, `"chat"`, ...
    pub operation: String,
    /// Session that started this one, if any. Not checked for existence (the
    /// parent may be recorded in a later batch).
    pub parent_session_id: Option<String>,
    /// Conversation the session belongs to, if any.
    pub conversation_id: Option<String>,
    /// Turn of that conversation the session ran for, if any (`None` for
    /// gateway sessions).
    pub turn_id: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at_ms: i64,
    /// The `x-request-id` of the HTTP request that made the session (a
    /// gateway request, or the request that started a turn), if any.
    pub request_id: Option<String>,
    /// The id of the API key whose request made the session, if any.
    pub key_id: Option<String>,
    /// The LLM config snapshot the session ran with (stored as camelCase
    /// JSON), if any.
    pub config: Option<ConfigSnapshot>,
}

/// One LLM call to insert.
#[derive(Clone, Debug)]
pub struct NewLlmCall {
    /// Call id, a UUIDv7 string generated by the caller. Globally unique; id
    /// order is taken as time order by [`Store::list_calls`](crate::Store::list_calls).
    pub id: String,
    /// Session the call belongs to; must exist in the same project (be
    /// recorded in the same batch or earlier).
    pub session_id: String,
    /// Composite `"provider/model"` id the client used.
    pub model_id: String,
    /// Provider name (the part of `model_id` before the slash).
    pub provider: String,
    /// Model name as sent to the upstream.
    pub upstream_model: String,
    /// Whether the call was made in streaming mode.
    pub stream: bool,
    /// Request body as sent upstream (messages + parameters), JSON text.
    pub request_json: String,
    /// Assistant text produced, if any.
    pub response_text: Option<String>,
    /// Reasoning text produced, if any.
    pub reasoning_text: Option<String>,
    /// Tool calls produced, JSON text, if any.
    pub tool_calls_json: Option<String>,
    /// Finish reason reported by the upstream, if any.
    pub finish_reason: Option<String>,
    /// Token usage reported by the upstream.
    pub usage: UsageRow,
    /// When the request was sent upstream, unix milliseconds.
    pub sent_at_ms: i64,
    /// When the first token (or the whole non-streamed body) arrived, unix
    /// milliseconds; `None` if nothing arrived.
    pub first_token_at_ms: Option<i64>,
    /// When the call finished (successfully or not), unix milliseconds; `None`
    /// if it never finished (e.g. the client went away).
    pub completed_at_ms: Option<i64>,
    /// HTTP status the upstream answered with, `None` if it never answered.
    pub http_status: Option<i32>,
    /// Error message; `None` = success.
    pub error: Option<String>,
    /// Attempt number within its request, from 1 (retries and fallbacks
    /// add attempts).
    pub attempt: i32,
    /// The route the request named, `None` when it named one deployment.
    pub route: Option<String>,
    /// Its cost; the call log fills it in before writing when the caller
    /// left `price_source` unset.
    pub cost: CallCost,
}

/// A session together with its calls, written in one transaction by
/// [`Store::record_sessions`](crate::Store::record_sessions).
#[derive(Clone, Debug)]
pub struct RecordedSession {
    /// The session row.
    pub session: NewLlmSession,
    /// Its calls (each normally has `session_id == session.id`).
    pub calls: Vec<NewLlmCall>,
}

/// A stored call as read back: every [`NewLlmCall`] field plus the project id
/// and the operation, conversation and turn of the call's session. Units as in
/// [`NewLlmCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LlmCallRow {
    /// Call id (UUIDv7 string).
    pub id: String,
    /// Project the call belongs to.
    pub project_id: String,
    /// Session the call belongs to.
    pub session_id: String,
    /// Operation of the session (`"gateway"`, `"chat"`, ...).
    pub operation: String,
    /// Conversation of the session, if any.
    pub conversation_id: Option<String>,
    /// Turn of the session, if any.
    pub turn_id: Option<String>,
    /// Composite `"provider/model"` id the client used.
    pub model_id: String,
    /// Provider name.
    pub provider: String,
    /// Model name as sent to the upstream.
    pub upstream_model: String,
    /// Whether the call was streamed.
    pub stream: bool,
    /// Request body as sent upstream, JSON text.
    pub request_json: String,
    /// Assistant text, if any.
    pub response_text: Option<String>,
    /// Reasoning text, if any.
    pub reasoning_text: Option<String>,
    /// Tool calls, JSON text, if any.
    pub tool_calls_json: Option<String>,
    /// Finish reason, if any.
    pub finish_reason: Option<String>,
    /// Token usage (tokens).
    pub usage: UsageRow,
    /// Sent time, unix milliseconds.
    pub sent_at_ms: i64,
    /// First-token time, unix milliseconds.
    pub first_token_at_ms: Option<i64>,
    /// Completion time, unix milliseconds.
    pub completed_at_ms: Option<i64>,
    /// Upstream HTTP status, `None` if it never answered.
    pub http_status: Option<i32>,
    /// Error message; `None` = success.
    pub error: Option<String>,
    /// Attempt number within its request, from 1 (retries and fallbacks
    /// add attempts).
    pub attempt: i32,
    /// The route the request named, `None` when it named one deployment.
    pub route: Option<String>,
    /// The `x-request-id` of the request that made the call's session.
    pub request_id: Option<String>,
    /// Its cost.
    pub cost: CallCost,
}

/// Selection and paging for [`Store::list_calls`](crate::Store::list_calls).
/// All set criteria must match (AND).
#[derive(Clone, Debug, Default)]
pub struct CallFilter {
    /// Page size: 0 means [`DEFAULT_LIST_LIMIT`] (50); values above
    /// [`MAX_LIST_LIMIT`] (500) are capped.
    pub limit: u32,
    /// Cursor: only calls strictly older than this id (ids are UUIDv7, so id
    /// order = time order). Pass the id of the last row of the previous page.
    pub before_id: Option<String>,
    /// Only calls with exactly this composite `"provider/model"` id.
    pub model_id: Option<String>,
    /// Only calls whose session has exactly this operation.
    pub operation: Option<String>,
    /// Only calls whose session belongs to exactly this conversation.
    pub conversation_id: Option<String>,
    /// Only calls whose session was made by the request with exactly this
    /// `x-request-id`.
    pub request_id: Option<String>,
}

impl CallFilter {
    /// The page size actually used: `limit` with 0 mapped to
    /// [`DEFAULT_LIST_LIMIT`] and capped at [`MAX_LIST_LIMIT`].
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        }
    }
}

/// Flat database shape of a call row; decodes on both backends.
#[derive(sqlx::FromRow)]
pub(crate) struct CallRecord {
    id: String,
    project_id: String,
    session_id: String,
    operation: String,
    conversation_id: Option<String>,
    turn_id: Option<String>,
    model_id: String,
    provider: String,
    upstream_model: String,
    stream: bool,
    request_json: String,
    response_text: Option<String>,
    reasoning_text: Option<String>,
    tool_calls_json: Option<String>,
    finish_reason: Option<String>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
    cached_prompt_tokens: Option<i64>,
    cache_creation_tokens: Option<i64>,
    total_tokens: Option<i64>,
    sent_at_ms: i64,
    first_token_at_ms: Option<i64>,
    completed_at_ms: Option<i64>,
    http_status: Option<i32>,
    error: Option<String>,
    attempt: i32,
    route: Option<String>,
    request_id: Option<String>,
    cost_nusd: Option<i64>,
    price_source: Option<String>,
    price_version: Option<String>,
}

impl From<CallRecord> for LlmCallRow {
    fn from(r: CallRecord) -> Self {
        LlmCallRow {
            id: r.id,
            project_id: r.project_id,
            session_id: r.session_id,
            operation: r.operation,
            conversation_id: r.conversation_id,
            turn_id: r.turn_id,
            model_id: r.model_id,
            provider: r.provider,
            upstream_model: r.upstream_model,
            stream: r.stream,
            request_json: r.request_json,
            response_text: r.response_text,
            reasoning_text: r.reasoning_text,
            tool_calls_json: r.tool_calls_json,
            finish_reason: r.finish_reason,
            usage: UsageRow {
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                reasoning_tokens: r.reasoning_tokens,
                cached_prompt_tokens: r.cached_prompt_tokens,
                cache_creation_tokens: r.cache_creation_tokens,
                total_tokens: r.total_tokens,
            },
            sent_at_ms: r.sent_at_ms,
            first_token_at_ms: r.first_token_at_ms,
            completed_at_ms: r.completed_at_ms,
            http_status: r.http_status,
            error: r.error,
            attempt: r.attempt,
            route: r.route,
            request_id: r.request_id,
            cost: CallCost {
                cost_nusd: r.cost_nusd,
                price_source: r.price_source.as_deref().and_then(PriceSource::from_name),
                price_version: r.price_version,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::ProjectId;

    /// A project id is a plain JSON string on the wire, both ways.
    #[test]
    fn a_project_id_is_a_json_string() {
        let id = ProjectId::new("team-a".to_owned());
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""team-a""#);
        assert_eq!(
            serde_json::from_str::<ProjectId>(r#""team-a""#).unwrap(),
            id
        );
        assert!(serde_json::from_str::<ProjectId>("42").is_err());
    }
}
