//! Server-side operations on a conversation: a title and a compaction, each
//! one non-streamed call on the one LLM call path
//! ([`super::llm_call`]), recorded as its own LLM session (operation
//! `title` / `compaction`, the conversation's id, no turn).
//!
//! - title: the `title` operation's model (resolved as for turns; `model`
//!   is a per-call override that is not persisted) gets a short instruction
//!   and the conversation's text (the last [`TITLE_INPUT_CHARS`]
//!   characters); the first line of its answer, trimmed of quotes and
//!   punctuation and cut to [`TITLE_MAX_CHARS`], becomes the title
//!   (`conversation.updated`).
//! - compaction: the `compaction` model summarizes every message except the
//!   last `keepLast` (together with an earlier summary, if any);
//!   `conversation.compacted` records it, and later turns send the summary
//!   as one system message instead of the covered messages.
//!
//! Without a `max_tokens` from the LLM config, a title call asks for at most
//! [`TITLE_MAX_TOKENS`] and a compaction for [`COMPACTION_MAX_TOKENS`].
//! Both run while a turn runs too (they only read its committed messages).

use modelyard_core::conversation::{ConversationRecord, EventPayload, MessageRecord, Part};
use modelyard_core::turn_model::TurnModel;
use modelyard_store::{LlmConfigRow, StoreError};
use serde_json::{json, Map, Value};

use super::llm_call::{compose, LlmCall, Purpose};
use super::routed::{self, Plan};
use super::turn_target::config_snapshot;
use crate::app::AppState;
use crate::recorder::CallRecord;
use crate::routing::Destination;
use crate::service::error::ServiceError;

/// How much of the conversation's text (the end of it) a title sees.
pub const TITLE_INPUT_CHARS: usize = 4_000;
/// Longest title kept.
pub const TITLE_MAX_CHARS: usize = 80;
/// How much text (the end of it) a compaction sees.
pub const COMPACTION_INPUT_CHARS: usize = 48_000;
/// Characters per token a compaction's input is cut by to fit its
/// model's context window (fewer than English text usually has, so it
/// fits).
pub const COMPACTION_CHARS_PER_TOKEN: u64 = 3;
/// Tokens a compaction's input leaves for its instruction and the chat
/// template.
pub const COMPACTION_OVERHEAD_TOKENS: u64 = 128;
/// Messages a compaction keeps by default.
pub const DEFAULT_KEEP_LAST: u32 = 2;
/// `max_tokens` of a title call whose LLM config sets none.
pub const TITLE_MAX_TOKENS: u32 = 40;
/// `max_tokens` of a compaction call whose LLM config sets none.
pub const COMPACTION_MAX_TOKENS: u32 = 512;

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

/// `prefix` (an earlier summary), then `role: text` lines of `messages`,
/// at most `max_chars` characters: the oldest lines go first; the prefix
/// stays whole unless it alone takes more than half of `max_chars` (then
/// its end is kept).
fn transcript(prefix: Option<&str>, messages: &[MessageRecord], max_chars: usize) -> String {
    let mut lines = String::new();
    for m in messages {
        lines.push_str(m.role.as_str());
        lines.push_str(": ");
        lines.push_str(&message_text(m));
        lines.push('\n');
    }
    let last_chars = |text: &str, keep: usize| -> String {
        let count = text.chars().count();
        text.chars().skip(count.saturating_sub(keep)).collect()
    };
    let mut text = String::new();
    if let Some(prefix) = prefix {
        let prefix = last_chars(prefix, max_chars / 2);
        text.push_str(&prefix);
        text.push('\n');
    }
    let room = max_chars.saturating_sub(text.chars().count());
    text.push_str(&last_chars(&lines, room));
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

/// Why an operation did not run or did not produce its result.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// Nothing to work on, or no model for the operation.
    #[error("{0}")]
    Unprocessable(String),
    /// The resolved model id does not route (`model`: what was asked for).
    #[error("model {model:?} does not route: {message}")]
    Route {
        /// The model asked for.
        model: String,
        /// Why.
        message: String,
    },
    /// The provider failed or answered nothing usable; the failed call is
    /// recorded as session `session_id`.
    #[error("{message} (session {session_id})")]
    Upstream {
        /// What went wrong.
        message: String,
        /// The recorded session.
        session_id: String,
    },
    /// Loading the LLM configs failed.
    #[error(transparent)]
    Configs(ServiceError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl OperationError {
    /// As the application layer's error (suggestions for a model that
    /// does not route).
    pub fn into_service(self, app: &AppState) -> ServiceError {
        match self {
            OperationError::Unprocessable(message) => ServiceError::invalid(message),
            OperationError::Route { model, message } => {
                super::models::unknown_model(app, &model, message)
            }
            OperationError::Upstream {
                message,
                session_id,
            } => ServiceError::Upstream {
                message,
                session_id: Some(session_id),
            },
            OperationError::Configs(err) => err,
            OperationError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for OperationError {
    fn from(err: StoreError) -> Self {
        OperationError::Store(err)
    }
}

/// Where an operation's call goes.
pub struct Route {
    /// The model's destination: one deployment or a route.
    pub destination: Destination,
    /// How the model was resolved.
    pub resolved: TurnModel,
    config: Option<LlmConfigRow>,
}

/// Resolves `operation`'s model exactly as a turn's (`model` as the
/// request override, never persisted), sent to the supplying config's
/// custom base URL when it has one.
async fn route(
    app: &AppState,
    conversation: &ConversationRecord,
    operation: &str,
    model: Option<&str>,
) -> Result<Route, OperationError> {
    use super::turn_target::{resolve, TargetError};
    let target = resolve(app, conversation, operation, model)
        .await
        .map_err(|err| match err {
            TargetError::NoModel => OperationError::Unprocessable(format!(
                "no model for operation {operation:?}: pass `model`, select one for the \
                 conversation, give it an LLM config (llmId / llmOverrides.{operation}), or \
                 configure [defaults.presets.{operation}], [defaults.presets.default] or \
                 defaults.model"
            )),
            TargetError::Configs(err) => OperationError::Configs(err),
            TargetError::Route { model, message } => OperationError::Route { model, message },
            TargetError::BaseUrl(reason) => OperationError::Unprocessable(reason),
        })?;
    let (destination, resolved, config) = (target.destination, target.resolved, target.llm_config);
    Ok(Route {
        destination,
        resolved,
        config,
    })
}

/// What a finished operation call produced.
struct Answer {
    text: String,
    session_id: String,
    /// The deployment that answered.
    model_id: String,
}

/// Sends one non-streamed request (the config's options, its system prompt
/// or `instruction`, then `input` as the user message) and records it as a
/// session of `operation` with the config snapshot.
async fn complete(
    app: &AppState,
    conversation_id: &str,
    operation: &str,
    route: &Route,
    instruction: &str,
    max_tokens: u32,
    input: String,
) -> Result<Answer, OperationError> {
    let mut options = Map::new();
    if let Some(config) = &route.config {
        config.fields.provider_options.apply_to(&mut options);
    }
    if !options.contains_key("max_tokens") && !options.contains_key("max_completion_tokens") {
        options.insert("max_tokens".into(), json!(max_tokens));
    }
    let system = route
        .config
        .as_ref()
        .and_then(|c| c.fields.system_prompt.as_deref())
        .unwrap_or(instruction);
    // `model` is each attempt's deployment's, set by `LlmCall::new`.
    let body = compose(
        "",
        options,
        vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": input}),
        ],
        false,
    );
    let purpose = Purpose::conversation(operation, conversation_id, None);
    let plan = Plan::new(app, route.destination.clone(), Some(conversation_id));
    let (outcome, mut records) = routed::complete(plan, &mut |target| {
        Ok(LlmCall::new(target, purpose.clone(), &body))
    })
    .await;
    let Some(last) = records.pop() else {
        // No attempt was made: nothing to record.
        return Err(OperationError::Route {
            model: route.destination.model_id(),
            message: outcome.err().map(|e| e.to_string()).unwrap_or_default(),
        });
    };
    let model_id = last.model_id.clone();
    let mut session = CallRecord::session_of(records, last);
    session.session.config = Some(config_snapshot(
        Some(route.resolved.resolved_from),
        &route.destination,
        route.config.as_ref(),
    ));
    let session_id = session.session.id.clone();
    app.record_charged(session).await;
    match outcome {
        Ok(summary) => Ok(Answer {
            text: summary.text.unwrap_or_default(),
            session_id,
            model_id,
        }),
        Err(error) => Err(OperationError::Upstream {
            message: error.to_string(),
            session_id,
        }),
    }
}

/// A new title.
#[derive(Debug)]
pub struct Titled {
    /// The title.
    pub title: String,
    /// The model that wrote it.
    pub model_id: String,
    /// How that model was resolved.
    pub resolved: TurnModel,
    /// The call's LLM session.
    pub session_id: String,
}

/// Titles `conversation` (see the module docs); `model` overrides the
/// `title` operation's model for this call.
///
/// # Errors
/// [`OperationError`].
pub async fn title(
    app: &AppState,
    conversation: &ConversationRecord,
    model: Option<&str>,
) -> Result<Titled, OperationError> {
    let id = conversation.id.as_str();
    let messages = app.store.list_messages(&app.project, id).await?;
    if messages.is_empty() {
        return Err(OperationError::Unprocessable(
            "the conversation has no messages to title".into(),
        ));
    }
    let route = route(app, conversation, "title", model).await?;
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
        return Err(OperationError::Upstream {
            message: format!("the model answered no title: {:?}", answer.text),
            session_id: answer.session_id,
        });
    }
    app.append_and_publish(
        id,
        vec![EventPayload::ConversationUpdated {
            title: Some(title.clone()),
            metadata: None,
        }],
    )
    .await?;
    Ok(Titled {
        title,
        model_id: answer.model_id,
        resolved: route.resolved,
        session_id: answer.session_id,
    })
}

/// Characters of the conversation a compaction sends: at most
/// [`COMPACTION_INPUT_CHARS`], and, when the compaction model's context
/// window is known, what fits it besides the answer
/// ([`COMPACTION_CHARS_PER_TOKEN`] characters per token, after
/// [`COMPACTION_OVERHEAD_TOKENS`] for the instruction and the template).
fn compaction_input_chars(app: &AppState, route: &Route) -> usize {
    let Some(window) = crate::service::context::context_window(app, &route.destination) else {
        return COMPACTION_INPUT_CHARS;
    };
    let mut options = Map::new();
    if let Some(config) = &route.config {
        config.fields.provider_options.apply_to(&mut options);
    }
    let answer =
        crate::service::context::output_reserve(&Value::Object(options), COMPACTION_MAX_TOKENS);
    let room = window
        .saturating_sub(answer)
        .saturating_sub(COMPACTION_OVERHEAD_TOKENS)
        .max(64);
    let chars =
        usize::try_from(room.saturating_mul(COMPACTION_CHARS_PER_TOKEN)).unwrap_or(usize::MAX);
    chars.min(COMPACTION_INPUT_CHARS)
}

/// A new summary.
#[derive(Debug)]
pub struct Compacted {
    /// The summary.
    pub summary: String,
    /// The id of the summary message.
    pub summary_message_id: String,
    /// The last message seq it covers.
    pub up_to_seq: i64,
    /// The model that wrote it.
    pub model_id: String,
    /// How that model was resolved.
    pub resolved: TurnModel,
    /// The call's LLM session.
    pub session_id: String,
}

/// Compacts `conversation`: every message but the last `keep_last` (default
/// [`DEFAULT_KEEP_LAST`]) not summarized yet; `model` overrides the
/// `compaction` operation's model for this call.
///
/// # Errors
/// [`OperationError`].
pub async fn compact(
    app: &AppState,
    conversation: &ConversationRecord,
    keep_last: Option<u32>,
    model: Option<&str>,
) -> Result<Compacted, OperationError> {
    let id = conversation.id.as_str();
    let keep_last = keep_last.unwrap_or(DEFAULT_KEEP_LAST) as usize;
    let messages = app.store.list_messages(&app.project, id).await?;
    let through = conversation.compacted_through_seq.unwrap_or(0);
    let end = messages.len().saturating_sub(keep_last);
    let covered: Vec<MessageRecord> = messages[..end]
        .iter()
        .filter(|m| m.seq > through)
        .cloned()
        .collect();
    let Some(last) = covered.last() else {
        return Err(OperationError::Unprocessable(format!(
            "nothing to compact: the conversation has {} message(s), {} already summarized, \
             and keepLast is {keep_last}",
            messages.len(),
            messages.iter().filter(|m| m.seq <= through).count(),
        )));
    };
    let up_to_seq = last.seq;
    let route = route(app, conversation, "compaction", model).await?;
    let earlier = conversation
        .summary
        .as_deref()
        .map(|s| format!("Summary of the earlier conversation: {s}"));
    let input = transcript(
        earlier.as_deref(),
        &covered,
        compaction_input_chars(app, &route),
    );
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
        return Err(OperationError::Upstream {
            message: "the model answered an empty summary".into(),
            session_id: answer.session_id,
        });
    }
    let summary_message_id = uuid::Uuid::now_v7().to_string();
    let model_id = answer.model_id;
    app.append_and_publish(
        id,
        vec![EventPayload::ConversationCompacted {
            summary_message_id: summary_message_id.clone(),
            summary: summary.clone(),
            up_to_seq,
            model_id: model_id.clone(),
        }],
    )
    .await?;
    Ok(Compacted {
        summary,
        summary_message_id,
        up_to_seq,
        model_id,
        resolved: route.resolved,
        session_id: answer.session_id,
    })
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
