//! The SQL of the sessions audit: the aggregating query over sessions and
//! their calls, and the row it reads.

use super::{SessionRow, SessionStatus, TokenSums};
use crate::StoreError;

/// The aggregating query over the sessions selected by `inner` (the tail of
/// `SELECT ... FROM llm_sessions i`, i.e. its WHERE / ORDER BY / LIMIT), its
/// result ordered by `order` (`ASC` or `DESC` on the session id).
///
/// Sessions are selected (and paged) first, then joined with their calls and
/// aggregated, so the work is bounded by the page. The last call's model and
/// provider and the last error are correlated subqueries on the
/// `(project_id, session_id, id)` index of `llm_calls`. `SUM` of BIGINT is
/// NUMERIC on PostgreSQL, hence the casts back to BIGINT.
pub(super) fn select_sessions(inner: &str, order: &str) -> String {
    let last = |column: &str, extra: &str| {
        format!(
            "(SELECT l.{column} FROM llm_calls l \
             WHERE l.project_id = s.project_id AND l.session_id = s.id{extra} \
             ORDER BY l.id DESC LIMIT 1)"
        )
    };
    let sum = |column: &str, alias: &str| {
        format!("CAST(COALESCE(SUM(c.{column}), 0) AS BIGINT) AS {alias}")
    };
    format!(
        "SELECT s.id, s.project_id, s.operation, s.parent_session_id, s.conversation_id, \
         s.turn_id, s.created_at_ms, s.request_id, s.key_id, s.config_json, \
         COUNT(c.id) AS call_count, \
         CAST(COALESCE({failed}, 0) AS BIGINT) AS error_count, \
         {model} AS model_id, {provider} AS provider, {error} AS last_error, \
         MIN(c.sent_at_ms) AS started_at_ms, MAX(c.completed_at_ms) AS finished_at_ms, \
         {input}, {output}, {reasoning}, {cached}, {total}, \
         CAST(SUM(c.cost_nusd) AS BIGINT) AS cost_nusd \
         FROM (SELECT i.id, i.project_id, i.operation, i.parent_session_id, i.conversation_id, \
         i.turn_id, i.created_at_ms, i.request_id, i.key_id, i.config_json \
         FROM llm_sessions i {inner}) s \
         LEFT JOIN llm_calls c ON c.project_id = s.project_id AND c.session_id = s.id \
         GROUP BY s.id, s.project_id, s.operation, s.parent_session_id, s.conversation_id, \
         s.turn_id, s.created_at_ms, s.request_id, s.key_id, s.config_json \
         ORDER BY s.id {order}",
        model = last("model_id", ""),
        provider = last("provider", ""),
        error = last("error", " AND l.error IS NOT NULL"),
        failed = "(SELECT CASE WHEN l.error IS NULL THEN 0 ELSE 1 END FROM llm_calls l \
                  WHERE l.project_id = s.project_id AND l.session_id = s.id \
                  ORDER BY l.id DESC LIMIT 1)",
        input = sum("prompt_tokens", "input_tokens"),
        output = sum("completion_tokens", "output_tokens"),
        reasoning = sum("reasoning_tokens", "reasoning_tokens"),
        cached = sum("cached_prompt_tokens", "cached_input_tokens"),
        total = sum("total_tokens", "total_tokens"),
    )
}

/// `EXISTS` over the calls of the inner session `i`, with `condition` on the
/// call `x`.
pub(super) fn exists_call(condition: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM llm_calls x \
         WHERE x.project_id = i.project_id AND x.session_id = i.id AND {condition})"
    )
}

/// Whether the last call (highest id) of the inner session `i` has an
/// error.
pub(super) fn last_call_failed() -> String {
    "COALESCE((SELECT CASE WHEN x.error IS NULL THEN 0 ELSE 1 END FROM llm_calls x \
     WHERE x.project_id = i.project_id AND x.session_id = i.id \
     ORDER BY x.id DESC LIMIT 1), 0) = 1"
        .to_owned()
}

/// Flat database shape of a [`select_sessions`] row; decodes on both
/// backends.
#[derive(sqlx::FromRow)]
pub(super) struct SessionRecord {
    id: String,
    project_id: String,
    operation: String,
    parent_session_id: Option<String>,
    conversation_id: Option<String>,
    turn_id: Option<String>,
    created_at_ms: i64,
    request_id: Option<String>,
    key_id: Option<String>,
    config_json: Option<String>,
    call_count: i64,
    error_count: i64,
    model_id: Option<String>,
    provider: Option<String>,
    last_error: Option<String>,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    input_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cached_input_tokens: i64,
    total_tokens: i64,
    cost_nusd: Option<i64>,
}

impl SessionRecord {
    /// The row; fails only on a config snapshot that does not parse.
    pub(super) fn into_row(self, op: &'static str) -> Result<SessionRow, StoreError> {
        let r = self;
        let config = match r.config_json.as_deref() {
            None => None,
            Some(json) => Some(serde_json::from_str(json).map_err(|e| StoreError::Query {
                op,
                source: sqlx::Error::Decode(Box::new(e)),
            })?),
        };
        Ok(SessionRow {
            id: r.id,
            project_id: r.project_id,
            operation: r.operation,
            parent_session_id: r.parent_session_id,
            conversation_id: r.conversation_id,
            turn_id: r.turn_id,
            created_at_ms: r.created_at_ms,
            request_id: r.request_id,
            key_id: r.key_id,
            call_count: r.call_count,
            model_id: r.model_id,
            provider: r.provider,
            status: if r.error_count == 0 {
                SessionStatus::Ok
            } else {
                SessionStatus::Error
            },
            last_error: r.last_error,
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
            totals: TokenSums {
                input: r.input_tokens,
                output: r.output_tokens,
                reasoning: r.reasoning_tokens,
                cached_input: r.cached_input_tokens,
                total: r.total_tokens,
                cost_nusd: r.cost_nusd,
            },
            config,
        })
    }
}
