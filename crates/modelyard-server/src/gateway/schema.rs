//! The request bodies of the gateway fronts as the OpenAPI document
//! (`GET /openapi.json`) describes them. The handlers never parse these
//! types: they read only `model`, `stream` and a few more fields from the
//! raw bytes (`modelyard_upstream::openai`, [`super::anthropic`]) and pass
//! the rest through, so each shape lists the fields Modelyard reads and
//! allows any other.

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/chat/completions` (OpenAI API reference, "Create chat
/// completion"): any other field passes through to the provider.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A route name, a composite id `provider/model`, or a bare model id.
    pub model: String,
    /// OpenAI chat messages (`{role, content, ...}`).
    pub messages: Vec<Value>,
    /// Answer as SSE (`text/event-stream`) chunks.
    pub stream: Option<bool>,
}

/// `POST /v1/embeddings` (OpenAI API reference, "Create embeddings").
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// A route name, a composite id or a bare model id.
    pub model: String,
    /// A string, an array of strings or of token arrays.
    pub input: Value,
}

/// `POST /v1/rerank` (llama.cpp server, vLLM).
#[derive(Debug, Deserialize, ToSchema)]
pub struct RerankRequest {
    /// A route name, a composite id or a bare model id.
    pub model: String,
    /// The query the documents are ranked against.
    pub query: String,
    /// The documents.
    pub documents: Vec<Value>,
    /// How many results to return.
    pub top_n: Option<u32>,
}

/// `POST /v1/completions` (OpenAI API reference, "Create completion",
/// legacy).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// A route name, a composite id or a bare model id.
    pub model: String,
    /// A string or an array of strings.
    pub prompt: Value,
    /// Answer as SSE chunks.
    pub stream: Option<bool>,
}

/// `POST /v1/messages` (Anthropic API reference, "Messages").
#[derive(Debug, Deserialize, ToSchema)]
pub struct MessagesRequest {
    /// A route name, a composite id or a bare model id.
    pub model: String,
    /// Anthropic messages (`{role, content}`).
    pub messages: Vec<Value>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// A system prompt: a string or text blocks.
    pub system: Option<Value>,
    /// Answer as Anthropic's named SSE events.
    pub stream: Option<bool>,
}

/// The answer of `POST /v1/messages/count_tokens` (Anthropic API reference,
/// "Count message tokens").
#[derive(Debug, Deserialize, ToSchema)]
pub struct InputTokens {
    /// Prompt tokens the messages (and tools) take, as the model counts them.
    pub input_tokens: u64,
}

/// `POST /v1/responses` (OpenAI API reference, "Responses"): the fields
/// Modelyard reads; others are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResponsesRequest {
    /// A route name, a composite id or a bare model id (optional with
    /// `previous_response_id`: the conversation's model).
    pub model: Option<String>,
    /// A string, or a list of input items (`message`, `function_call`,
    /// `function_call_output`).
    pub input: Value,
    /// This response's system prompt.
    pub instructions: Option<String>,
    /// Continue the conversation of this stored response.
    pub previous_response_id: Option<String>,
    /// Store the response as a conversation turn (default true).
    pub store: Option<bool>,
    /// Answer as the typed `response.*` SSE events.
    pub stream: Option<bool>,
    /// Function tools (`{type: "function", name, description, parameters}`).
    pub tools: Option<Vec<Value>>,
}
