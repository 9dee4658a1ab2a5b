//! Test support for Modelyard: a mock OpenAI-compatible upstream whose behaviour is chosen by
//! model name.
//!
//! [`MockUpstream::start`] binds `127.0.0.1:0` and serves a llama.cpp-flavoured
//! OpenAI-compatible API on a spawned tokio task. It adds no latency unless asked to, so it
//! doubles as the baseline of the gateway overhead benchmark, and it records what it receives
//! ([`MockUpstream::requests`]) and how clients went away ([`MockUpstream::cancelled_streams`],
//! [`MockUpstream::cancelled_requests`], [`MockUpstream::in_flight`]).
//!
//! For byte-level faults an axum server cannot produce (a TCP reset, a line that never ends,
//! bytes that are not UTF-8, a redirect), [`hostile::HostileUpstream`] is a raw TCP server
//! whose behaviour is also chosen by model name ([`hostile::HOSTILE_MODELS`]).
//!
//! [`proxy::RecordingProxy`] is a plain-HTTP forward proxy that records the absolute URL of
//! every request it forwards, to prove which provider's traffic goes through a configured
//! `proxy_url` and which goes direct.
//!
//! [`MockUpstream::start_with`] picks another [`Flavour`] (the discovery endpoints of one
//! provider kind: OpenAI, llama-swap, vLLM, Ollama, OpenRouter, LM Studio, Anthropic) and the
//! [`MockModel`]s it
//! serves, so provider discovery can be tested against several mocks at once. At run time
//! [`MockUpstream::set_models`] changes the models (appear/disappear, load/unload),
//! [`MockUpstream::set_down`] takes the whole host offline and
//! [`MockUpstream::set_discovery_delay_ms`] makes discovery slow.
//!
//! # Routes
//!
//! Every flavour serves chat completions at `POST /v1/chat/completions` (OpenRouter also at
//! `POST /api/v1/chat/completions`), with the behaviour chosen by the request's `model` (table
//! below) whatever the model list says. Anything not listed answers `404` with an OpenAI error
//! envelope (`{"error":{"message":…,"type":"invalid_request_error","param":null,"code":null}}`).
//! `<ctx>` is the model's [`MockModel::context_window`]; when that is `None` the field is
//! left out (OpenRouter: `null`), as a server that does not know it would.
//!
//! | Flavour | Route | Response |
//! |---------|-------|----------|
//! | [`LlamaCpp`](Flavour::LlamaCpp) (default, [`MockUpstream::start`]) | `GET /health` | `200 {"status":"ok"}` |
//! | | `GET /v1/models` | `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"llamacpp","meta":{"n_ctx":<ctx>,"n_ctx_train":<ctx>}}]}` (`meta` left out when `<ctx>` is unknown) |
//! | | `GET /props` | `{"default_generation_settings":{"n_ctx":<ctx>},"total_slots":1,"model_alias":<id>,"model_path":"/models/<id>.gguf"}` of the first model; with no models `503 {"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}` |
//! | [`OpenAi`](Flavour::OpenAi) | `GET /v1/models` | `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"openai"}]}` (no context window, no `/health`) |
//! | [`LlamaSwap`](Flavour::LlamaSwap) | `GET /v1/models` | every model: `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"llama-swap"}]}` |
//! | | `GET /running` | `{"running":[{"model":<id>,"state":"ready"}]}` for the models with `loaded` |
//! | | `GET /upstream/<id>/props` | llama.cpp `/props` (above) of `<id>` when it is loaded; `<id>` is the rest of the path minus the trailing `/props`, so it may contain `/` (`%XX` is decoded). `404` when `<id>` is unknown **or not loaded**: real llama-swap would start the model, the mock never does |
//! | | `GET /health` | `200` `text/plain` `OK` |
//! | | `GET /upstream/<id>/health` | marks `<id>` loaded (a request through llama-swap starts the model): `200` `OK`; unknown `<id>`: `404` |
//! | | `POST /api/models/unload/<id>` | marks `<id>` not loaded: `200` `OK`; unknown: `404` |
//! | [`Vllm`](Flavour::Vllm) | `GET /v1/models` | `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"vllm","root":<id>,"parent":null,"max_model_len":<ctx>}]}` |
//! | | `GET /health` | `200` with an empty body |
//! | [`Ollama`](Flavour::Ollama) | `GET /` (and `HEAD /`) | `200` `text/plain` `Ollama is running` |
//! | | `GET /api/tags` | `{"models":[{"name":<id>,"model":<id>,"modified_at":"2026-01-01T00:00:00Z","size":1,"digest":"x","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8B","quantization_level":"Q4_K_M"}}]}` (every model) |
//! | | `POST /api/show` `{"model":<id>}` (or `{"name":<id>}`) | `{"details":{…},"model_info":{"general.architecture":"llama","llama.context_length":<ctx>},"parameters":"","template":"{{ .Prompt }}","capabilities":["completion"],"modified_at":…}` (`["embedding"]` for an id containing `embed`) for any listed model (loaded or not; `x` also finds `x:latest`); unknown: `404 {"error":"model 'x' not found"}`; no name / bad JSON: `400 {"error":…}` |
//! | | `GET /api/ps` | `{"models":[{"name":<id>,"model":<id>,"size":1,"digest":"x","details":{…},"expires_at":"2026-01-01T00:00:00Z","size_vram":1,"context_length":<ctx>}]}` for the models with `loaded` |
//! | | `POST /api/generate` `{"model", "keep_alive"?}` (no prompt) | marks the model loaded (`keep_alive` `0`: not loaded): `{"model","created_at","response":"","done":true,"done_reason":"load"\|"unload"}`; unknown: `404 {"error":…}` |
//! | | `GET /v1/models` | as OpenAI, with `owned_by:"library"` |
//! | [`OpenRouter`](Flavour::OpenRouter) | `GET /v1/models`, `GET /api/v1/models` | `{"data":[{"id","name":"Display <id>","context_length":<ctx>\|null,"created":1700000000}]}` |
//!
//! [`MockModel::loaded`] only matters to llama-swap (`/running`, `/upstream/<id>/props`) and
//! Ollama (`/api/ps`); the other flavours list every model.
//!
//! The discovery routes are every route above except chat and the load / unload routes. [`MockUpstream::set_discovery_delay_ms`]
//! delays their answers (after recording the request; a client hanging up during the delay
//! counts in [`MockUpstream::cancelled_requests`]); chat is never delayed by it. While
//! [`MockUpstream::set_down`] is on, **every** request (chat, discovery, unknown routes) is
//! recorded and then answered at once, undelayed, with `503`
//! `{"error":{"message":"mock upstream is down","type":"unavailable_error","param":null,"code":503}}`;
//! responses already streaming are not cut.
//!
//! The default model list ([`MockOptions::default`], used by [`MockUpstream::start`]) is
//! [`MODEL_IDS`], each with context window 4096 and loaded.
//!
//! [`MockUpstream::set_enforce_context`] makes chat refuse, like llama.cpp, a prompt whose words
//! reach the requested model's context window (`400` `exceed_context_size_error`).
//!
//! A chat body that is not valid JSON gets `400` with
//! `{"error":{"message":…,"type":"invalid_request_error","param":null,"code":null}}`.
//!
//! # Chat behaviours
//!
//! The `model` field is split at the first `:`; the part before selects the behaviour, the part
//! after is its parameter (`<ms>` defaults to 100 when missing or unparseable; `<code>` to 500).
//! For `tool-call` the parameter is `<name>`, optionally followed by `*<n>` (`n >= 1`; missing,
//! `0` or unparseable means 1) and/or `@<ms>`; `<name>` is everything before the first `*` or
//! `@` (`tool` when empty). Examples: `tool-call:advisor`, `tool-call:advisor*3`,
//! `tool-call:get_weather*2@50`. The arguments are serialised with `serde_json` (compact, so
//! escaped), e.g. `{"question":"hello there world"}`.
//!
//! | `model`            | `"stream": true` | non-stream |
//! |--------------------|------------------|------------|
//! | anything else (`mock-model`, `echo`, …) | normal stream (below) | normal completion (below) |
//! | `slow:<ms>`        | sleeps `<ms>` between every two SSE events | sleeps `<ms>` before the response headers |
//! | `slow-first:<ms>`  | sleeps `<ms>` before sending anything (headers included), then normal | same |
//! | `slow-first:<ms>@<gap>` | sleeps `<ms>` before sending anything, then sleeps `<gap>` ms between every two SSE events (the bench's "20 ms to first byte, 5 ms between chunks": `slow-first:20@5`) | sleeps `<ms>`, then normal |
//! | `stall:<ms>`       | role chunk + first word chunk, sleeps `<ms>`, then the rest | sleeps `<ms>`, then normal |
//! | `drop`             | role chunk + one content chunk, then the connection is aborted (no `[DONE]`) | headers + the first half of the JSON, then aborted |
//! | `malformed`        | role chunk, `data: {this is not json`, `data: [DONE]` | `200` with body `{this is not json` |
//! | `inband-error`     | role chunk, one content chunk, `data: {"error":{"message":"mock upstream failed mid-stream","type":"server_error","code":500}}`, end without `[DONE]` | `200` with that error object as body |
//! | `status:<code>[@<s>]` | status `<code>`, body `{"error":{"message":"mock upstream status <code>","type":"mock_error","param":null,"code":<code>}}`, plus `retry-after: <s>` (for 429 `1` when `@<s>` is missing) | same |
//! | `fail-first:<n>[@<s>]` | the first `<n>` requests with this exact `model` get `429` with `retry-after: <s>` (default 1); later ones the normal stream | same, normal completion |
//! | `tools`            | role chunk (`content:null`), `delta.tool_calls` pieces (id+type+name with `""` arguments, then `{"city": ` and `"Paris"}`), finish `tool_calls`, usage chunk if `include_usage`, `[DONE]` | `message.tool_calls=[{"id":"call_mock_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]`, `content:null`, finish `tool_calls` |
//! | `reasoning`        | normal, with two `delta.reasoning_content` chunks (`thinking`, `...`) before the content | normal plus `message.reasoning_content:"thinking..."` |
//! | `leak-auth`        | status 401 whose error message echoes the request's `Authorization` header (`invalid credentials: Bearer …`), like a careless upstream | same |
//! | `hang`             | never responds (sleeps an hour); counts in [`MockUpstream::cancelled_requests`] when dropped | same |
//! | `tool-call:<name>[*<n>][@<ms>]` | while fewer than `<n>` (default 1) `tool` messages follow the last `user` message: role chunk (`content:null`), a `delta.tool_calls` chunk with `id` `call_mock_<k>` (`<k>` = that count + 1), `type:"function"`, `function:{"name":<name>,"arguments":""}`, then the arguments `{"question":<last user text>}` in two pieces (first/second half by chars), finish `tool_calls`, usage chunk if `include_usage`, `[DONE]`; otherwise a normal stream of `"tool said: "` + the content of the last `tool` message. With `@<ms>`, sleeps `<ms>` between every two SSE events (either way) | the same tool call as `message.tool_calls=[{"id":"call_mock_<k>","type":"function","function":{"name":<name>,"arguments":"{\"question\":…}"}}]`, `content:null`, finish `tool_calls`; otherwise a normal completion with content `"tool said: <tool content>"`. Never delayed |
//!
//! **Normal completion**: content is `"echo: "` + the text of the last `user` message (string
//! content, or its `text` parts concatenated). The response `model` is always
//! [`UPSTREAM_MODEL`] (`"mock-upstream-model"`) whatever was requested, `id` is
//! `"chatcmpl-mock"`, `created` `1700000000`, `system_fingerprint` `"fp_mock"`, and there is an
//! unknown extra top-level field `"x_mock_extra":{"kept":true}`. `finish_reason` is `"stop"`.
//! `usage` = `{prompt_tokens, completion_tokens, total_tokens,
//! prompt_tokens_details:{cached_tokens:0}, completion_tokens_details:{reasoning_tokens}}` where
//! `prompt_tokens` is the number of whitespace-separated words across all message contents and
//! `completion_tokens` the number of words of the content (`tools` and a `tool-call` that calls:
//! words of the arguments; `reasoning`: content words + 2, with `reasoning_tokens: 2`).
//!
//! **Normal stream**: `text/event-stream`, every event exactly `data: <json>\n\n`: a
//! `chat.completion.chunk` with `delta {"role":"assistant","content":""}`, one chunk per
//! word of the content (the word plus a trailing space, except the last word), a chunk with
//! `delta:{}` and `finish_reason:"stop"`, then — only if the request had
//! `stream_options.include_usage == true` — a usage chunk with `"choices":[]` and `usage`,
//! then `data: [DONE]\n\n`. Every chunk carries `"x_mock_extra":{"kept":true}`.
//!
//! # Embeddings, rerank, legacy completions
//!
//! Every flavour also serves these (recorded like chat, never delayed by
//! [`MockUpstream::set_discovery_delay_ms`]). `leak-auth`, `fail-first:<n>[@<s>]` and
//! `status:<code>[@<s>]` behave as for chat; non-streamed, `inband-error` answers `200` with
//! the error object and `malformed` with `{this is not json`. Word counts split on whitespace.
//!
//! | Route | Normal answer |
//! |-------|---------------|
//! | `POST /v1/embeddings` | `{"object":"list","data":[{"object":"embedding","index":<i>,"embedding":[<chars>,<words>,<i>]}],"model":"mock-upstream-model","usage":{"prompt_tokens":<words>,"total_tokens":<words>}}`, one entry per `input` text (a string, an array of strings, or token arrays, each read as its ids joined by spaces); always floats, whatever `encoding_format` says; no `input`: `400` |
//! | `POST /v1/rerank`, `POST /v1/reranking` | `{"object":"list","model":"mock-upstream-model","results":[{"index","relevance_score"}],"usage":{"prompt_tokens","total_tokens"}}`: score = share of the `query`'s words found in the document (`documents` or `texts`), highest first (ties by index), cut to `top_n`; tokens = words of the query and documents |
//! | `POST /v1/completions` | `{"id":"cmpl-mock","object":"text_completion","created":1700000000,"model":"mock-upstream-model","choices":[{"text":"echo: <prompt>","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens","completion_tokens","total_tokens"}}` (`<prompt>`: the first of an array). Streamed: one `text_completion` chunk per word (`choices[0].text`, the word plus a space but the last), a chunk with `text:""` and `finish_reason:"stop"`, a `choices:[]` usage chunk only if `stream_options.include_usage`, `[DONE]`; `inband-error` sends the first word then the error event and no `[DONE]` |
//!
//! # Anthropic Messages
//!
//! Every flavour also serves Anthropic's Messages API (as llama-server does), recorded like chat
//! (headers included: `x-api-key`, `anthropic-version`, `anthropic-beta`); the
//! [`Anthropic`](Flavour::Anthropic) flavour differs only in its `GET /v1/models`. Errors are in
//! Anthropic's shape `{"type":"error","error":{"type":…,"message":…}}`. Word counts split on
//! whitespace; `<input>` is the words of `system` and of every message's text (a string, or
//! its `text` blocks).
//!
//! | Route | Answer |
//! |-------|--------|
//! | `GET /v1/models` (Anthropic flavour) | `{"data":[{"type":"model","id","display_name":"Display <id>","created_at":"2025-01-01T00:00:00Z"}],"has_more","first_id","last_id"}`: pages of at most [`ANTHROPIC_PAGE_SIZE`] models whatever `limit` asks (smaller when `limit` is), the next one after `after_id` (an unknown id: `400`) |
//! | `POST /v1/messages/count_tokens` | `{"input_tokens":<input>}`; a `status:<code>` model: that status in Anthropic's error shape |
//! | `POST /v1/messages` | `{"id":"msg_mock","type":"message","role":"assistant","model":<the requested model>,"content":[{"type":"text","text":"echo: <last user text>"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":<input>,"cache_creation_input_tokens":1,"cache_read_input_tokens":3,"output_tokens":<words of the text>}}` ([`CACHE_CREATION_TOKENS`], [`CACHE_READ_TOKENS`]) |
//! | `POST /v1/messages` `"stream": true` | every event exactly `event: <name>\ndata: <json>\n\n`: `message_start` (the message without content, `usage` as above with `output_tokens: 1`), `ping`, `content_block_start` (`text`, `""`), one `text_delta` per word (the word plus a space but the last), `content_block_stop`, `message_delta` (`stop_reason`, `usage: {output_tokens}`), `message_stop` |
//!
//! Behaviours by `model`, as for chat: `slow:<ms>` (sleeps between events; non-stream: before
//! answering), `hang`, `status:<code>[@<s>]` and `fail-first:<n>` (`429`, `retry-after: 1`)
//! answer in Anthropic's error shape (`type` by status: `rate_limit_error`, `api_error`,
//! `overloaded_error` for 503/529, …); `tools` answers one `tool_use` block (`toolu_mock_1`,
//! `get_weather`, input `{"city": "Paris"}`, streamed as two `input_json_delta`s) with
//! `stop_reason: "tool_use"`; `reasoning` puts a `thinking` block (`thinking...`) first;
//! `inband-error` answers `200` with an `overloaded_error` error object, or streams
//! `message_start`, `ping`, the block start and one delta, then an `error` event and ends;
//! `drop` streams the same four events, then aborts the connection.
//!
//! A stream counts as cancelled ([`MockUpstream::cancelled_streams`]) when its body is dropped
//! before the mock produced its last event (client went away). A handler dropped before it
//! produced a response (e.g. `hang`, `slow:<ms>` non-stream, `slow-first:<ms>`) counts in
//! [`MockUpstream::cancelled_requests`].

pub mod eventually;
pub mod hostile;
pub mod proxy;

mod body;
mod chat;
mod discovery;
mod dispatch;
mod endpoints;
mod guards;
mod messages;
mod options;
mod response;
mod stream;
mod upstream;

pub use eventually::{eventually, Observation};
pub use messages::{ANTHROPIC_PAGE_SIZE, CACHE_CREATION_TOKENS, CACHE_READ_TOKENS};
pub use options::{Flavour, MockModel, MockOptions, RecordedRequest};
pub use upstream::MockUpstream;

/// The `model` reported in every completion, whatever the request asked for (llama.cpp ignores
/// the requested name too).
pub const UPSTREAM_MODEL: &str = "mock-upstream-model";

/// Model ids listed by `GET /v1/models`: the plain models plus one example of each behaviour.
pub const MODEL_IDS: &[&str] = &[
    "mock-model",
    "echo",
    "slow:100",
    "slow-first:100",
    "stall:1000",
    "drop",
    "malformed",
    "inband-error",
    "status:429",
    "status:500",
    "tools",
    "reasoning",
    "hang",
];

#[cfg(test)]
mod tests;
