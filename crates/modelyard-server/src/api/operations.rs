//! Server-side operations on a conversation, each one non-streamed LLM call
//! recorded as its own LLM session (operation `title` / `compaction`, the
//! conversation's id, no turn):
//!
//! - `POST /v1/conversations/{id}/title` `{"model"?}` → `{conversationId,
//!   title, modelId, resolvedFrom, llmConfigId, sessionId}`: the `title`
//!   operation's model (resolved as for turns; `model` is a per-call
//!   override that is not persisted) gets a short instruction and the
//!   conversation's text (the last [`TITLE_INPUT_CHARS`] characters); the
//!   first line of its answer, trimmed of quotes and punctuation and cut to
//!   [`TITLE_MAX_CHARS`], becomes the title (`conversation.updated`).
//! - `POST /v1/conversations/{id}/compact` `{"keepLast"?: n, "model"?}`
//!   (default 2) → `{conversationId, summary, upToSeq, summaryMessageId,
//!   modelId, resolvedFrom, llmConfigId, sessionId}`: the `compaction`
//!   model summarizes every message except the last `keepLast` (together
//!   with an earlier summary, if any); `conversation.compacted` records it,
//!   and later turns send the summary as one system message instead of the
//!   covered messages.
//!
//! Without a `max_tokens` from the LLM config, a title call asks for at most
//! [`TITLE_MAX_TOKENS`] and a compaction for [`COMPACTION_MAX_TOKENS`].
//!
//! Both run while a turn runs too (they only read its committed messages).
//! 422 when there is nothing to work on (no messages / nothing to compact)
//! or no model resolves; 502 when the provider fails (the failed call is
//! recorded).

use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_core::conversation::{ConversationRecord, EventPayload, MessageRecord, Part};
use modelyard_core::turn_model::{resolve_turn_model, TurnModel};
use modelyard_store::LlmConfigRow;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::conversations::{load, new_id, store_problem};
use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::now_ms;
use crate::conversations::configs::TurnConfigs;
use crate::error::Problem;
use crate::recorder::CallRecord;
use crate::registry::Target;

/// How much of the conversation's text (the end of it) a title sees.
pub const TITLE_INPUT_CHARS: usize = 4_000;
/// Longest title kept.
pub const TITLE_MAX_CHARS: usize = 80;
/// How much text (the end of it) a compaction sees.
pub const COMPACTION_INPUT_CHARS: usize = 48_000;
/// Messages a compaction keeps by default.
pub const DEFAULT_KEEP_LAST: u32 = 2;
/// `max_tokens` of a title call whose LLM config sets none.
pub const TITLE_MAX_TOKENS: u32 = 40;
/// `max_tokens` of a compaction call whose LLM config sets none.
pub const COMPACTION_MAX_TOKENS: u32 = 512;
/// Largest non-streamed answer read.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Instruction of a title call when its LLM config has no system prompt.
pub const TITLE_INSTRUCTION: &str = "Write a short title (at most eight words) for the \
     conversation below. Answer with the title only: no quotes, no explanation.";
/// Instruction of a compaction call when its LLM config has no system prompt.
pub const COMPACTION_INSTRUCTION: &str = "Summarize the conversation below so that it can \
     be continued from the summary alone: keep facts, names, numbers, decisions and open \
     questions. Answer with the summary only.";

/// The text of a message: a string content, or its text parts.
pub fn message_text(m: &MessageRecord) -> String {
    match &m.content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => m
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect(),
    }
}

/// `role: text` lines of `messages`, keeping the last `max_chars` characters.
fn transcript(prefix: Option<&str>, messages: &[MessageRecord], max_chars: usize) -> String {
    let mut text = String::new();
    if let Some(prefix) = prefix {
        text.push_str(prefix);
        text.push('\n');
    }
    for m in messages {
        text.push_str(&m.role);
        text.push_str(": ");
        text.push_str(&message_text(m));
        text.push('\n');
    }
    let count = text.chars().count();
    if count > max_chars {
        text = text.chars().skip(count - max_chars).collect();
    }
    text.trim().to_owned()
}

/// The first line of `answer`, trimmed of quotes, punctuation and a
/// `Title:` label, at most [`TITLE_MAX_CHARS`] characters.
pub fn clean_title(answer: &str) -> String {
    let line = answer
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = line
        .strip_prefix("Title:")
        .or_else(|| line.strip_prefix("title:"))
        .unwrap_or(line);
    let junk = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '"' | '\''
                    | '`'
                    | '*'
                    | '#'
                    | '.'
                    | ','
                    | ';'
                    | ':'
                    | '!'
                    | '“'
                    | '”'
                    | '‘'
                    | '’'
                    | '«'
                    | '»'
            )
    };
    let trimmed = line.trim_matches(junk);
    let cut: String = trimmed.chars().take(TITLE_MAX_CHARS).collect();
    cut.trim_end_matches(junk).to_owned()
}

/// Where an operation's call goes.
struct Route {
    target: Target,
    resolved: TurnModel,
    config: Option<LlmConfigRow>,
}

/// Resolves `operation`'s model exactly as a turn's (`model` as the
/// request override, never persisted).
async fn route(
    app: &AppState,
    conversation: &ConversationRecord,
    operation: &str,
    model: Option<&str>,
) -> Result<Route, Problem> {
    let configs = TurnConfigs::load(app, conversation, operation).await?;
    let resolved =
        resolve_turn_model(&configs.input(operation, model, conversation.model.as_deref()))
            .ok_or_else(|| {
                Problem::unprocessable(format!(
                    "no model for operation {operation:?}: pass `model`, select one for the \
             conversation, give it an LLM config (llmId / llmOverrides.{operation}), or \
             configure [defaults.presets.{operation}], [defaults.presets.default] or \
             defaults.model"
                ))
            })?;
    let config = configs
        .supplying(resolved.llm_config_id.as_deref())
        .cloned();
    let target = app.registry.resolve(Some(&resolved.model)).map_err(|err| {
        Problem::unprocessable(err.to_string()).with(
            "suggestions",
            super::favorites::suggestions(app, &resolved.model),
        )
    })?;
    Ok(Route {
        target,
        resolved,
        config,
    })
}

/// What a finished operation call produced.
struct Answer {
    text: String,
    session_id: String,
}

/// Sends one non-streamed request (the config's options, its system prompt
/// or `instruction`, then `input` as the user message) and records it as a
/// session of `operation`.
async fn complete(
    app: &AppState,
    conversation_id: &str,
    operation: &str,
    route: &Route,
    instruction: &str,
    max_tokens: u32,
    input: String,
) -> Result<Answer, Problem> {
    let target = &route.target;
    let mut body = Map::new();
    if let Some(config) = &route.config {
        config.fields.provider_options.apply_to(&mut body);
    }
    let system = route
        .config
        .as_ref()
        .and_then(|c| c.fields.system_prompt.as_deref())
        .unwrap_or(instruction);
    body.insert("model".into(), json!(target.resolution.model_id.model()));
    body.insert(
        "messages".into(),
        json!([
            {"role": "system", "content": system},
            {"role": "user", "content": input},
        ]),
    );
    if !body.contains_key("max_tokens") && !body.contains_key("max_completion_tokens") {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    body.insert("stream".into(), json!(false));
    let request_json = Value::Object(body).to_string();
    let model_id = target.resolution.model_id.to_string();
    let sent_at_ms = now_ms();
    let mut status = None;
    let mut summary = modelyard_upstream::openai::AnswerSummary::default();
    let outcome: Result<String, String> = async {
        let client = target
            .provider
            .client
            .as_ref()
            .ok_or_else(|| format!("provider '{}' is disabled", target.provider.name()))?;
        let upstream = client
            .chat_completions(axum::body::Bytes::from(request_json.clone()), false)
            .await
            .map_err(|e| e.to_string())?;
        let code = upstream.status();
        status = Some(code);
        let bytes = upstream
            .bytes(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if !(200..300).contains(&code) {
            let (message, _, _) = modelyard_upstream::openai::upstream_error_message(&bytes, 2_000);
            return Err(format!(
                "provider '{}' answered HTTP {code}: {message}",
                target.provider.name()
            ));
        }
        let rewritten = modelyard_upstream::openai::rewrite_completion(&bytes, &model_id)
            .map_err(|e| format!("provider '{}' sent {e}", target.provider.name()))?;
        summary = rewritten.summary;
        Ok(summary.text.clone().unwrap_or_default())
    }
    .await;
    let completed_at_ms = now_ms();
    let session = CallRecord {
        operation: operation.to_owned(),
        conversation_id: Some(conversation_id.to_owned()),
        turn_id: None,
        model_id: model_id.clone(),
        provider: target.provider.name().to_owned(),
        upstream_model: target.resolution.model_id.model().to_owned(),
        stream: false,
        request_json,
        summary,
        sent_at_ms,
        first_token_at_ms: None,
        completed_at_ms,
        http_status: status,
        error: outcome.as_ref().err().cloned(),
    }
    .into_session();
    let session_id = session.session.id.clone();
    app.recorder.record(&app.project, session);
    match outcome {
        Ok(text) => Ok(Answer { text, session_id }),
        Err(error) => Err(Problem::bad_gateway(error).with("sessionId", session_id)),
    }
}

fn parse<T: Default + for<'de> Deserialize<'de>>(
    body: Result<Json<Value>, JsonRejection>,
) -> Result<T, Problem> {
    match body {
        Ok(Json(Value::Null)) => Ok(T::default()),
        Ok(Json(value)) => serde_json::from_value(value)
            .map_err(|e| Problem::bad_request(format!("invalid body: {e}"))),
        // No body at all is an empty request.
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        Err(rejection) => Err(Problem::bad_request(rejection.body_text())),
    }
}

/// Body of `POST /v1/conversations/{id}/title`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitleBody {
    /// Per-call model override (not persisted).
    model: Option<String>,
}

/// `POST /v1/conversations/{id}/title`.
pub async fn title(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    match title_inner(&app, &id, body).await {
        Ok(value) => Json(value).into_response(),
        Err(problem) => problem.into_response(),
    }
}

async fn title_inner(
    app: &AppState,
    id: &str,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Value, Problem> {
    let body: TitleBody = parse(body)?;
    let conversation = load(app, id).await?;
    let messages = app
        .store
        .list_messages(&app.project, id)
        .await
        .map_err(store_problem)?;
    if messages.is_empty() {
        return Err(Problem::unprocessable(
            "the conversation has no messages to title",
        ));
    }
    let route = route(app, &conversation, "title", body.model.as_deref()).await?;
    let input = transcript(None, &messages, TITLE_INPUT_CHARS);
    let answer = complete(
        app,
        id,
        "title",
        &route,
        TITLE_INSTRUCTION,
        TITLE_MAX_TOKENS,
        input,
    )
    .await?;
    let title = clean_title(&answer.text);
    if title.is_empty() {
        return Err(Problem::bad_gateway(format!(
            "the model answered no title: {:?}",
            answer.text
        ))
        .with("sessionId", answer.session_id));
    }
    app.append_and_publish(
        id,
        vec![EventPayload::ConversationUpdated {
            title: Some(title.clone()),
            metadata: None,
        }],
    )
    .await
    .map_err(store_problem)?;
    Ok(json!({
        "conversationId": id,
        "title": title,
        "modelId": route.target.resolution.model_id.to_string(),
        "resolvedFrom": route.resolved.resolved_from,
        "llmConfigId": route.resolved.llm_config_id,
        "sessionId": answer.session_id,
    }))
}

/// Body of `POST /v1/conversations/{id}/compact`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompactBody {
    /// Messages left as they are (default 2).
    keep_last: Option<u32>,
    /// Per-call model override (not persisted).
    model: Option<String>,
}

/// `POST /v1/conversations/{id}/compact`.
pub async fn compact(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    match compact_inner(&app, &id, body).await {
        Ok(value) => Json(value).into_response(),
        Err(problem) => problem.into_response(),
    }
}

async fn compact_inner(
    app: &AppState,
    id: &str,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Value, Problem> {
    let body: CompactBody = parse(body)?;
    let keep_last = body.keep_last.unwrap_or(DEFAULT_KEEP_LAST) as usize;
    let conversation = load(app, id).await?;
    let messages = app
        .store
        .list_messages(&app.project, id)
        .await
        .map_err(store_problem)?;
    let through = conversation.compacted_through_seq.unwrap_or(0);
    let end = messages.len().saturating_sub(keep_last);
    let covered: Vec<MessageRecord> = messages[..end]
        .iter()
        .filter(|m| m.seq > through)
        .cloned()
        .collect();
    let Some(last) = covered.last() else {
        return Err(Problem::unprocessable(format!(
            "nothing to compact: the conversation has {} message(s), {} already summarized, \
             and keepLast is {keep_last}",
            messages.len(),
            messages.iter().filter(|m| m.seq <= through).count(),
        )));
    };
    let up_to_seq = last.seq;
    let route = route(app, &conversation, "compaction", body.model.as_deref()).await?;
    let earlier = conversation
        .summary
        .as_deref()
        .map(|s| format!("Summary of the earlier conversation: {s}"));
    let input = transcript(earlier.as_deref(), &covered, COMPACTION_INPUT_CHARS);
    let answer = complete(
        app,
        id,
        "compaction",
        &route,
        COMPACTION_INSTRUCTION,
        COMPACTION_MAX_TOKENS,
        input,
    )
    .await?;
    let summary = answer.text.trim().to_owned();
    if summary.is_empty() {
        return Err(Problem::bad_gateway("the model answered an empty summary")
            .with("sessionId", answer.session_id));
    }
    let summary_message_id = new_id();
    let model_id = route.target.resolution.model_id.to_string();
    app.append_and_publish(
        id,
        vec![EventPayload::ConversationCompacted {
            summary_message_id: summary_message_id.clone(),
            summary: summary.clone(),
            up_to_seq,
            model_id: model_id.clone(),
        }],
    )
    .await
    .map_err(store_problem)?;
    Ok(json!({
        "conversationId": id,
        "summary": summary,
        "summaryMessageId": summary_message_id,
        "upToSeq": up_to_seq,
        "modelId": model_id,
        "resolvedFrom": route.resolved.resolved_from,
        "llmConfigId": route.resolved.llm_config_id,
        "sessionId": answer.session_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_cleaned() {
        assert_eq!(clean_title("\"Rust lifetimes.\"\nmore"), "Rust lifetimes");
        assert_eq!(
            clean_title("\n  Title: **Trip to Paris!**  "),
            "Trip to Paris"
        );
        assert_eq!(clean_title("…"), "…");
        assert_eq!(clean_title("  \n"), "");
        let long = "word ".repeat(40);
        assert!(clean_title(&long).chars().count() <= TITLE_MAX_CHARS);
    }
}
