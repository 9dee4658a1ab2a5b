//! The budgets-and-rate-limits middleware ([`crate::quota`]) on the routes
//! that call models ([`super::routes::metered`]): after auth, it reads the
//! limits of the caller's key and project; with any, it reads the body to
//! reserve the request's worth ([`crate::quota::reserve_tokens`]), admits
//! or refuses it, hands the admission to the handler (through the
//! request's extensions into [`crate::auth::Scoped`]'s state) and adds the
//! rate-limit headers to the answer.
//!
//! A refusal is a 429 (503 when the shared counters cannot be read) with
//! `Retry-After` (seconds until the window ends; none for a `total`
//! budget) and a message naming the limit, in the path's shape: OpenAI's
//! envelope (`type` `rate_limit_exceeded` / `insufficient_quota`, `code`
//! `rate_limited` / `budget_exceeded`), Anthropic's `rate_limit_error`, or
//! a problem document with `code` `rate_limited` / `budget_exceeded`,
//! `limit` (its name) and `scope` (`key` / `project`).
//!
//! Headers on an admitted request's answer (OpenAI's names):
//! `x-ratelimit-limit-requests` / `x-ratelimit-remaining-requests` (with
//! `requests_per_minute`), `x-ratelimit-limit-tokens` (with
//! `tokens_per_minute`), `x-ratelimit-remaining-tokens` (with
//! `tokens_per_minute` or `max_tokens`: the smaller) and
//! `x-modelyard-budget-remaining` (USD, with `max_cost_usd`).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{is_anthropic_path, is_openai_path, AnthropicError, OpenAiError, Problem};
use modelyard_core::usage::add_tokens;

use crate::pricing::worst_cost_nusd;
use crate::quota::{
    arena_split, chat_split, reserve_split, AdmissionSlot, ArenaSplit, Need, Refusal, Remaining,
    ReserveSplit,
};
use crate::routing::Destination;
use modelyard_core::cost::Price;
use modelyard_upstream::openai::ChatRequestHead;
use std::sync::Arc;

/// `x-ratelimit-limit-requests`.
pub const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
/// `x-ratelimit-remaining-requests`.
pub const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
/// `x-ratelimit-limit-tokens`.
pub const LIMIT_TOKENS: &str = "x-ratelimit-limit-tokens";
/// `x-ratelimit-remaining-tokens`.
pub const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
/// `x-modelyard-budget-remaining` (USD).
pub const BUDGET_REMAINING: &str = "x-modelyard-budget-remaining";

/// The middleware (a route layer inside auth).
pub async fn middleware(State(app): State<AppState>, request: Request, next: Next) -> Response {
    // Nothing is copied for a request no limit applies to: the matched path
    // is shared (`Arc<str>`), the caller borrowed.
    let (parts, body) = request.into_parts();
    let path = parts.extensions.get::<MatchedPath>().cloned();
    let path = path.as_ref().map_or("", MatchedPath::as_str);
    let applicable = match parts.extensions.get::<Caller>() {
        Some(caller) if super::routes::metered(&parts.method, path) => {
            app.quotas
                .limits_for(&caller.project, caller.key_id.as_deref())
                .await
        }
        _ => Vec::new(),
    };
    if applicable.is_empty() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let bytes = match axum::body::to_bytes(body, app.config.server.max_body_bytes).await {
        Ok(bytes) => bytes,
        // Over the size limit the outer body-limit layer answers 413.
        Err(err) => return unreadable(path, &err.to_string()),
    };
    let priced = applicable.iter().any(|(_, l)| l.max_cost_nusd.is_some());
    let mut parsed_chat = None;
    let need = if is_arena(path) {
        let split = arena_split(
            &bytes,
            app.quotas.default_reserve,
            crate::service::arena::MAX_MODELS,
        );
        Need {
            tokens: split.tokens(),
            cost_nusd: if priced {
                arena_cost_nusd(&app, &split)
            } else {
                0
            },
        }
    } else {
        // A chat completion's head is read once, here, and handed to the
        // handler with its body ([`PreparsedChat`]).
        if path == CHAT_COMPLETIONS {
            parsed_chat = ChatRequestHead::parse(&bytes).ok();
        }
        let split = match &parsed_chat {
            Some(head) => chat_split(head, bytes.len(), app.quotas.default_reserve),
            None => reserve_split(&bytes, app.quotas.default_reserve, generates(path)),
        };
        let mut tokens = add_tokens(split.prompt, split.output);
        let mut cost_nusd = 0;
        if let Some(operation) = conversation_operation(path, split.operation.as_deref()) {
            // A conversation's call sends its history too.
            let caller = parts.extensions.get::<Caller>();
            let reserve = match caller {
                Some(caller) => {
                    conversation_reserve(&app, caller, &parts, operation, &split, priced).await
                }
                None => None,
            };
            if let Some(reserve) = reserve {
                tokens = add_tokens(tokens, reserve.history);
                cost_nusd = reserve.cost_nusd;
            }
        } else if priced {
            cost_nusd = reserve_cost_nusd(&app, &split);
        }
        Need {
            tokens: i64::try_from(tokens).unwrap_or(i64::MAX),
            cost_nusd,
        }
    };
    match app
        .quotas
        .admit(&applicable, need, crate::clock::now_ms())
        .await
    {
        Err(refusal) => refused(&refusal, path),
        Ok(admission) => {
            let remaining = admission.remaining();
            let mut request = Request::from_parts(parts, Body::from(bytes.clone()));
            let extensions = request.extensions_mut();
            extensions.insert(AdmissionSlot::new(admission));
            if let Some(head) = parsed_chat {
                extensions.insert(ParsedChat { body: bytes, head });
            }
            let mut response = next.run(request).await;
            headers(response.headers_mut(), &remaining);
            response
        }
    }
}

/// The path whose body head the middleware hands on ([`PreparsedChat`]).
const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

/// A chat-completion request's head as the middleware read it, kept with
/// the body it was read from (the same bytes the handler receives).
#[derive(Clone)]
struct ParsedChat {
    body: Bytes,
    head: ChatRequestHead,
}

/// The chat-completion head the quota middleware already read, if it read
/// one: a limited request's body is then parsed once, not twice. Taken out
/// of the request's extensions; never fails.
pub struct PreparsedChat(Option<ParsedChat>);

impl PreparsedChat {
    /// The head, if it was read from `body` itself (the same buffer: same
    /// address and length, the middleware's copy keeping it alive), else
    /// `None` and the caller parses.
    pub fn head_of(self, body: &Bytes) -> Option<ChatRequestHead> {
        self.0
            .filter(|p| p.body.as_ptr() == body.as_ptr() && p.body.len() == body.len())
            .map(|p| p.head)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PreparsedChat {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.extensions.remove::<ParsedChat>()))
    }
}

/// The cost reserve of a request: its reserved tokens at the dearest price
/// among the deployments its `model` may reach ([`model_rates`]). 0
/// without a `model` in the body, for an id that does not resolve, or when
/// nothing is priced; admission then holds 1 nano-USD of a cost budget.
fn reserve_cost_nusd(app: &AppState, split: &ReserveSplit) -> i64 {
    split.model.as_deref().map_or(0, |model| {
        worst_cost_nusd(&model_rates(app, model), split.prompt, split.output)
    })
}

/// An arena's cost reserve: each named model's share (one chat: the
/// split's prompt and output tokens) at the dearest price it may reach,
/// summed, nano-USD. Models that do not resolve count 0.
fn arena_cost_nusd(app: &AppState, split: &ArenaSplit) -> i64 {
    split
        .models
        .iter()
        .map(|model| worst_cost_nusd(&model_rates(app, model), split.prompt, split.output))
        .fold(0i64, i64::saturating_add)
}

/// The rates of the deployments a request naming `model` may reach
/// ([`destination_rates`]; none when it does not resolve), cached briefly
/// ([`crate::quota::Quotas::reserve_rates`]).
fn model_rates(app: &AppState, model: &str) -> Arc<[Price]> {
    app.quotas.reserve_rates(model, || {
        app.destination(Some(model))
            .map_or_else(|_| Vec::new(), |d| destination_rates(app, &d))
    })
}

/// The rates of the priced deployments `destination` may reach: a
/// deployment, or a route's targets and deployment fallbacks.
fn destination_rates(app: &AppState, destination: &Destination) -> Vec<Price> {
    match destination {
        Destination::Deployment(target) => {
            let id = target.resolution.model_id.to_string();
            app.pricing.rate_of(&id).into_iter().collect()
        }
        Destination::Route(route) => {
            let targets = route.config.targets.iter().map(|t| t.model.as_str());
            let fallbacks = route
                .config
                .fallbacks
                .iter()
                .map(String::as_str)
                .filter(|f| f.contains('/'));
            targets
                .chain(fallbacks)
                .filter_map(|id| app.pricing.rate_of(id))
                .collect()
        }
    }
}

/// The operation a conversation path runs (a turn's or a warm's is its
/// body's `operation`, default `chat`); `None` for other paths.
fn conversation_operation<'a>(path: &str, named: Option<&'a str>) -> Option<&'a str> {
    match path {
        "/v1/conversations/{id}/turns" | "/v1/conversations/{id}/warm" => {
            Some(named.unwrap_or("chat"))
        }
        "/v1/conversations/{id}/turns/{turn_id}/tool-results" => Some("chat"),
        "/v1/conversations/{id}/title" => Some("title"),
        "/v1/conversations/{id}/compact" => Some("compaction"),
        _ => None,
    }
}

/// What a conversation's call reserves beyond its body.
struct ConversationReserve {
    /// The conversation's last prompt size (`contextTokens`), tokens: the
    /// history the call sends again.
    history: u64,
    /// The call's tokens (body, history, output) at the dearest price its
    /// model may reach, nano-USD (0 unless `priced`).
    cost_nusd: i64,
}

/// The reserve of a call on conversation `{id}` (from the request's path)
/// for `operation`: its history, and with a cost budget (`priced`) its
/// tokens at the price of the model it resolves to exactly as the call
/// will ([`crate::service::turn_target::resolve`], the body's `model`
/// overriding). `None` when the conversation is not found; the cost is 0
/// when no model resolves (the call itself then fails).
async fn conversation_reserve(
    app: &AppState,
    caller: &Caller,
    parts: &axum::http::request::Parts,
    operation: &str,
    split: &ReserveSplit,
    priced: bool,
) -> Option<ConversationReserve> {
    let id = conversation_id(parts.uri.path())?;
    let scoped = app.scoped(caller.clone());
    let conversation = crate::service::conversations::load_stored(&scoped, id)
        .await
        .ok()?;
    let history = conversation.context_tokens.unwrap_or(0);
    let prompt = add_tokens(split.prompt, history);
    let cost_nusd = if priced {
        crate::service::turn_target::resolve(
            &scoped,
            &conversation,
            operation,
            split.model.as_deref(),
        )
        .await
        .map_or(0, |t| {
            worst_cost_nusd(
                &destination_rates(app, &t.destination),
                prompt,
                split.output,
            )
        })
    } else {
        0
    };
    Some(ConversationReserve { history, cost_nusd })
}

/// The `{id}` of a `/v1/conversations/{id}/…` request path.
fn conversation_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/v1/conversations/")?.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// Whether `path` runs an arena (several models answer one request: the
/// reserve is one chat's times the models).
fn is_arena(path: &str) -> bool {
    matches!(path, "/v1/arena" | "/v1/conversations/{id}/arena")
}

/// Whether requests on `path` generate output (embeddings and rerank do
/// not: they reserve only their prompt).
fn generates(path: &str) -> bool {
    !matches!(path, "/v1/embeddings" | "/v1/rerank" | "/v1/reranking")
}

/// Sets the rate-limit headers `remaining` has values for.
pub fn headers(headers: &mut HeaderMap, remaining: &Remaining) {
    // Names made at compile time: a `&str` name is validated per insert.
    const NAMES: [HeaderName; 4] = [
        HeaderName::from_static(LIMIT_REQUESTS),
        HeaderName::from_static(REMAINING_REQUESTS),
        HeaderName::from_static(LIMIT_TOKENS),
        HeaderName::from_static(REMAINING_TOKENS),
    ];
    const BUDGET: HeaderName = HeaderName::from_static(BUDGET_REMAINING);
    let values = [
        remaining.limit_requests,
        remaining.requests,
        remaining.limit_tokens,
        remaining.tokens,
    ];
    // Room for them all at once: the map grows once, not per header.
    let count = values.iter().flatten().count() + usize::from(remaining.budget_nusd.is_some());
    headers.reserve(count);
    for (name, value) in NAMES.into_iter().zip(values) {
        if let Some(value) = value {
            headers.insert(name, HeaderValue::from(value.max(0)));
        }
    }
    if let Some(usd) = remaining.budget_usd() {
        // From the `String` itself: no copy.
        if let Ok(value) = HeaderValue::try_from(usd) {
            headers.insert(BUDGET, value);
        }
    }
}

/// The refusal in `path`'s shape (see the module doc).
pub fn refused(refusal: &Refusal, path: &str) -> Response {
    let status = match refusal {
        Refusal::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::Limit { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    let message = refusal.to_string();
    let mut response = if is_anthropic_path(path) {
        AnthropicError::new(status, message).into_response()
    } else if is_openai_path(path) {
        let kind = match refusal {
            Refusal::Unavailable { .. } => "server_error",
            _ if refusal.is_budget() => "insufficient_quota",
            Refusal::Limit { .. } => "rate_limit_exceeded",
        };
        OpenAiError::new(status, kind, message)
            .code(refusal.code())
            .into_response()
    } else {
        let title = match refusal {
            Refusal::Unavailable { .. } => "Service Unavailable",
            Refusal::Limit { .. } => "Too Many Requests",
        };
        let mut problem = Problem::new(status, title, message).with("code", refusal.code());
        if let Refusal::Limit { scope, name, .. } = refusal {
            problem = problem.with("limit", *name).with("scope", *scope);
        }
        problem.into_response()
    };
    if let Some(secs) = refusal.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// 400 for a body that could not be read, in `path`'s shape.
fn unreadable(path: &str, reason: &str) -> Response {
    let message = format!("cannot read the request body: {reason}");
    if is_anthropic_path(path) {
        AnthropicError::new(StatusCode::BAD_REQUEST, message).into_response()
    } else if is_openai_path(path) {
        OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).into_response()
    } else {
        Problem::bad_request(message).into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The handler takes the middleware's head only for the very buffer it
    /// was read from; any other body (even with the same bytes) is parsed.
    #[test]
    fn a_preparsed_head_is_used_only_for_its_own_body() {
        let body = Bytes::from_static(br#"{"model":"m/x","messages":[]}"#);
        let parsed = || {
            PreparsedChat(Some(ParsedChat {
                body: body.clone(),
                head: ChatRequestHead::parse(&body).unwrap(),
            }))
        };
        let head = parsed().head_of(&body.clone()).unwrap();
        assert_eq!(head.model.as_deref(), Some("m/x"));
        let copy = Bytes::copy_from_slice(&body);
        assert!(parsed().head_of(&copy).is_none());
        assert!(parsed().head_of(&body.slice(1..)).is_none());
        assert!(PreparsedChat(None).head_of(&body).is_none());
    }
}
