//! The application layer's one error: what a use case can fail with, in
//! its own terms. The HTTP side maps it to a problem document exactly once
//! (`ApiError` on the HTTP side); every variant has a stable machine-readable
//! [`code`](ServiceError::code).

use modelyard_store::StoreError;

/// Why a use case did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No `kind` with this id in the project (404, code `{kind}_not_found`).
    #[error("{message}")]
    NotFound {
        /// What was looked for: `conversation`, `turn`, `llm_config`, `key`.
        kind: &'static str,
        /// The id asked for.
        id: String,
        /// What to tell the client.
        message: String,
    },
    /// The request conflicts with the resource's state (409), e.g.
    /// `turn_running`, `turn_not_running`, `last_admin_key`.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What to tell the client.
        message: String,
    },
    /// The conversation's turn waits for a pick of an arena run (409, code
    /// `arena_pick_pending`, with `turnId` and `runId`): pick an answer or
    /// cancel the turn first.
    #[error("{message}")]
    ArenaPickPending {
        /// What to tell the client.
        message: String,
        /// The waiting turn.
        turn_id: String,
        /// Its arena run.
        run_id: String,
    },
    /// A resource still named by conversations cannot go (409, code
    /// `in_use`, with `conversations`).
    #[error("{message}")]
    InUse {
        /// What to tell the client.
        message: String,
        /// The conversations that name it.
        conversations: Vec<String>,
    },
    /// The request is well-formed but a value is not acceptable (422), e.g.
    /// `invalid_field` (with `field`), `invalid_request`, `model_disabled`.
    #[error("{reason}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// The request field at fault, if one is.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A malformed parameter: query, cursor, stream position (400).
    #[error("{message}")]
    BadRequest {
        /// Stable code, e.g. `invalid_query`, `invalid_position`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No model resolves for the request (422, code `no_model`).
    #[error("{0}")]
    NoModel(String),
    /// A model id that does not route (422, code `model_not_found`).
    #[error("{message}")]
    UnknownModel {
        /// The request field that named it, if any.
        field: Option<String>,
        /// What is wrong.
        message: String,
        /// Ids the registry has seen that are close to the one asked for.
        suggestions: Vec<String>,
    },
    /// A string that is not a model id at all (422, code
    /// `invalid_model_id`, with `suggestions`).
    #[error("{message}")]
    InvalidModelId {
        /// What is wrong.
        message: String,
        /// Ids the registry has seen that are close to the one sent.
        suggestions: Vec<String>,
    },
    /// The prompt of a turn does not fit the serving deployment's context
    /// window minus the output reserve, and `[turns] context_strategy` is
    /// `error` (422, code `context_length_exceeded`, with the numbers).
    #[error(
        "the prompt needs about {estimated_tokens} tokens, more than the context window of \
         {context_window} tokens minus {output_reserve_tokens} reserved for the answer \
         ([turns] context_strategy = \"error\"); compact the conversation or start a new one"
    )]
    ContextLengthExceeded {
        /// The prompt's estimated size, tokens.
        estimated_tokens: u64,
        /// The serving deployment's context window, tokens.
        context_window: u64,
        /// Tokens kept free for the answer (`max_tokens`, else `[turns]
        /// output_reserve_tokens`).
        output_reserve_tokens: u64,
    },
    /// Tool results that do not answer every pending tool call (422, code
    /// `tool_results_missing`, with `pending`).
    #[error("{message}")]
    ToolResultsMissing {
        /// The calls left unanswered.
        missing: Vec<String>,
        /// What to tell the client.
        message: String,
    },
    /// The provider failed a server-side call (502, code `upstream_error`);
    /// the failed call is recorded as session `session_id`.
    #[error("{message}")]
    Upstream {
        /// What went wrong.
        message: String,
        /// The recorded session, if one was recorded.
        session_id: Option<String>,
    },
    /// The store is unreachable or busy (503, code `store_unavailable`).
    #[error("the database is unreachable or busy; try again shortly")]
    Unavailable,
    /// Any other store failure (500, code `internal_error`).
    #[error(transparent)]
    Store(StoreError),
}

impl ServiceError {
    /// 404 for `kind` `id`.
    pub fn not_found(
        kind: &'static str,
        id: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ServiceError::NotFound {
            kind,
            id: id.into(),
            message: message.into(),
        }
    }

    /// 404 for a conversation that does not exist (or was deleted).
    pub fn no_conversation(id: &str) -> Self {
        Self::not_found(
            "conversation",
            id,
            format!("no conversation with id {id:?}"),
        )
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::Conflict {
            code,
            message: message.into(),
        }
    }

    /// 422 `invalid_request`: a value is wrong, no single field to name.
    pub fn invalid(reason: impl Into<String>) -> Self {
        ServiceError::Invalid {
            code: "invalid_request",
            field: None,
            reason: reason.into(),
        }
    }

    /// 422 `invalid_field` naming `field`; `reason` is the whole detail.
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ServiceError::Invalid {
            code: "invalid_field",
            field: Some(field.into()),
            reason: reason.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The same error about request field `field`: a 422's detail is
    /// prefixed with `field: ` and names it; other errors pass unchanged.
    #[must_use]
    pub fn in_field(self, field: &str) -> Self {
        match self {
            ServiceError::Invalid { reason, .. } => ServiceError::Invalid {
                code: "invalid_field",
                field: Some(field.to_owned()),
                reason: format!("{field}: {reason}"),
            },
            ServiceError::UnknownModel {
                message,
                suggestions,
                ..
            } => ServiceError::UnknownModel {
                field: Some(field.to_owned()),
                message: format!("{field}: {message}"),
                suggestions,
            },
            other => other,
        }
    }

    /// The stable machine-readable code of the problem document.
    pub fn code(&self) -> String {
        match self {
            ServiceError::NotFound { kind, .. } => {
                format!("{}_not_found", kind.to_ascii_lowercase().replace(' ', "_"))
            }
            ServiceError::Conflict { code, .. }
            | ServiceError::Invalid { code, .. }
            | ServiceError::BadRequest { code, .. } => (*code).to_owned(),
            ServiceError::NoModel(_) => "no_model".into(),
            ServiceError::InUse { .. } => "in_use".into(),
            ServiceError::ArenaPickPending { .. } => "arena_pick_pending".into(),
            ServiceError::UnknownModel { .. } => "model_not_found".into(),
            ServiceError::InvalidModelId { .. } => "invalid_model_id".into(),
            ServiceError::ContextLengthExceeded { .. } => "context_length_exceeded".into(),
            ServiceError::ToolResultsMissing { .. } => "tool_results_missing".into(),
            ServiceError::Upstream { .. } => "upstream_error".into(),
            ServiceError::Unavailable => "store_unavailable".into(),
            ServiceError::Store(_) => "internal_error".into(),
        }
    }
}

/// Store errors the client caused are its errors (4xx); an unreachable or
/// busy store is `Unavailable`; only the rest is internal.
impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "store unavailable");
            return ServiceError::Unavailable;
        }
        match err {
            StoreError::NotFound { kind, id } => {
                let message = format!("{kind} `{id}` not found");
                ServiceError::NotFound { kind, id, message }
            }
            StoreError::Conflict { reason } => ServiceError::conflict("conflict", reason),
            err @ StoreError::InUse { .. } => ServiceError::conflict("in_use", err.to_string()),
            err @ StoreError::Duplicate { .. } => {
                ServiceError::conflict("duplicate", err.to_string())
            }
            StoreError::InvalidInput { reason } => ServiceError::invalid(reason),
            err @ StoreError::MissingReference { .. } => ServiceError::Invalid {
                code: "missing_reference",
                field: None,
                reason: err.to_string(),
            },
            other => ServiceError::Store(other),
        }
    }
}

impl From<modelyard_core::IdError> for ServiceError {
    /// An id that is not a UUID names nothing stored: 404 `{kind}_not_found`.
    fn from(err: modelyard_core::IdError) -> Self {
        let message = format!("no {} with id {:?}", err.kind, err.text);
        ServiceError::NotFound {
            kind: err.kind,
            id: err.text,
            message,
        }
    }
}

/// New ids: UUID v7 (time-ordered).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_caused_store_errors_are_not_internal() {
        let cases = [
            (
                StoreError::InvalidInput { reason: "x".into() },
                "invalid_request",
            ),
            (StoreError::Conflict { reason: "x".into() }, "conflict"),
            (
                StoreError::NotFound {
                    kind: "conversation",
                    id: "c".into(),
                },
                "conversation_not_found",
            ),
            (
                StoreError::InUse {
                    kind: "llm_config",
                    id: "c".into(),
                    referrers: vec!["a".into()],
                },
                "in_use",
            ),
        ];
        for (err, code) in cases {
            assert_eq!(ServiceError::from(err).code(), code);
        }
    }
}
