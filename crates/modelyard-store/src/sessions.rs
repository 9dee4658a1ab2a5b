//! The LLM-call audit: sessions with their aggregated calls, and token usage
//! and cost totals grouped by project, API key, model, provider, operation
//! or day.
//!
//! A session's aggregates (call count, status, last model, times, token
//! sums) are computed by one `GROUP BY` query over `llm_sessions` LEFT JOIN
//! `llm_calls`, so a session without calls is listed with zero calls and zero
//! tokens. Token sums count a `NULL` (not reported) usage as 0; cost sums
//! add the known costs and are `None` when no call of the set has one.
//!
//! Files: `sql.rs` (the aggregating query and the row it reads), `usage.rs`
//! (usage totals by group).

use std::fmt;
use std::fmt::Write as _;

use serde::Serialize;

use modelyard_core::llm_config::ConfigSnapshot;

use crate::{LlmCallRow, ProjectId, Store, StoreError, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};

mod sql;
mod usage;

use sql::{exists_call, last_call_failed, select_sessions, SessionRecord};
pub use usage::{UsageFilter, UsageGroup, UsageGroupRow};

// ---------------------------------------------------------------- types

/// Outcome of a session: that of its last call (highest id), so a request
/// that succeeded after failed attempts (retries, fallbacks) is
/// [`SessionStatus::Ok`]; a session without calls is ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// The last call of the session has no error (or there is none).
    Ok,
    /// The last call of the session has an error.
    Error,
}

impl SessionStatus {
    /// Every status, in the order of their names in messages.
    pub const ALL: [SessionStatus; 2] = [SessionStatus::Ok, SessionStatus::Error];

    /// `"ok"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Ok => "ok",
            SessionStatus::Error => "error",
        }
    }

    /// The status named exactly `name` (`"ok"` or `"error"`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Selection and paging for [`Store::list_sessions`]. All set criteria must
/// match (AND).
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    /// Page size: 0 means [`DEFAULT_LIST_LIMIT`] (50); values above
    /// [`MAX_LIST_LIMIT`] (500) are capped.
    pub limit: u32,
    /// Cursor: only sessions strictly older than this id (ids are UUIDv7, so
    /// id order = time order). Pass the id of the last row of the previous
    /// page.
    pub before_id: Option<String>,
    /// Only sessions of exactly this conversation.
    pub conversation_id: Option<String>,
    /// Only sessions of exactly this operation (`"gateway"`, `"chat"`, ...).
    pub operation: Option<String>,
    /// Only sessions with at least one call to exactly this composite
    /// `"provider/model"` id.
    pub model_id: Option<String>,
    /// Only sessions with at least one call to exactly this provider.
    pub provider: Option<String>,
    /// Only sessions with this outcome (see [`SessionStatus`]).
    pub status: Option<SessionStatus>,
    /// Only sessions created at or after this time (`created_at_ms >=`), unix
    /// milliseconds.
    pub from_ms: Option<i64>,
    /// Only sessions created strictly before this time (`created_at_ms <`),
    /// unix milliseconds.
    pub to_ms: Option<i64>,
}

impl SessionFilter {
    /// The page size actually used: `limit` with 0 mapped to
    /// [`DEFAULT_LIST_LIMIT`] and capped at [`MAX_LIST_LIMIT`].
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        }
    }
}

/// Token sums over a set of calls, in tokens; a usage count a call did not
/// report (`NULL`) counts as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TokenSums {
    /// Sum of the prompt (input) tokens.
    pub input: i64,
    /// Sum of the completion (output) tokens.
    pub output: i64,
    /// Sum of the reasoning tokens.
    pub reasoning: i64,
    /// Sum of the cached prompt tokens.
    pub cached_input: i64,
    /// Sum of the total tokens as reported by the upstreams.
    pub total: i64,
    /// Sum of the known costs, nano-USD; `None` when no call has one.
    pub cost_nusd: Option<i64>,
}

/// A session of the audit log with the aggregates of its calls. Times are
/// unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionRow {
    /// Session id (UUIDv7 string).
    pub id: String,
    /// Project the session belongs to.
    pub project_id: String,
    /// What produced the session: `"gateway"`, `"chat"`, ...
    pub operation: String,
    /// Session that started this one, if any.
    pub parent_session_id: Option<String>,
    /// Conversation of the session, if any.
    pub conversation_id: Option<String>,
    /// Turn of the session, if any.
    pub turn_id: Option<String>,
    /// Creation time of the session.
    pub created_at_ms: i64,
    /// The `x-request-id` of the request that made the session, if any.
    pub request_id: Option<String>,
    /// The API key whose request made the session, if any.
    pub key_id: Option<String>,
    /// Number of calls of the session (0 for a session without calls).
    pub call_count: i64,
    /// Composite `"provider/model"` id of the last call (highest id); `None`
    /// without calls.
    pub model_id: Option<String>,
    /// Provider of the last call; `None` without calls.
    pub provider: Option<String>,
    /// [`SessionStatus::Ok`] if the last call has no error, else
    /// [`SessionStatus::Error`].
    pub status: SessionStatus,
    /// Error of the last call (highest id) that has one; `None` if none has.
    pub last_error: Option<String>,
    /// Earliest `sent_at_ms` of the calls; `None` without calls.
    pub started_at_ms: Option<i64>,
    /// Latest `completed_at_ms` of the calls; `None` without calls or if no
    /// call completed.
    pub finished_at_ms: Option<i64>,
    /// Token sums over the calls.
    pub totals: TokenSums,
    /// The LLM config snapshot the session ran with, if it recorded one.
    pub config: Option<ConfigSnapshot>,
}

/// How many times [`Store::get_session`] re-reads a session whose calls
/// changed between its two reads before giving up on a consistent pair.
const GET_SESSION_ATTEMPTS: usize = 3;

impl Store {
    /// Lists the sessions of `project` matching `filter` with the aggregates
    /// of their calls, newest first (by id, which for UUIDv7 ids is time
    /// order), at most [`SessionFilter::effective_limit`] rows. Sessions
    /// without calls are included (zero calls and tokens, status ok) unless a
    /// call criterion (`model_id`, `provider`, `status` error) excludes them.
    /// For the next page, pass the id of the last row returned as
    /// [`SessionFilter::before_id`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_sessions(
        &self,
        project: &ProjectId,
        filter: &SessionFilter,
    ) -> Result<Vec<SessionRow>, StoreError> {
        // Conditions are appended only for the criteria that are set; the
        // binds follow in the same order. `?` in a condition is its
        // placeholder (possibly inside an EXISTS), numbered here.
        let mut inner = String::from("WHERE i.project_id = $1");
        let mut n = 1;
        let has_model = exists_call("x.model_id = ?");
        let has_provider = exists_call("x.provider = ?");
        for (set, condition) in [
            (filter.before_id.is_some(), "i.id < ?"),
            (filter.conversation_id.is_some(), "i.conversation_id = ?"),
            (filter.operation.is_some(), "i.operation = ?"),
            (filter.model_id.is_some(), has_model.as_str()),
            (filter.provider.is_some(), has_provider.as_str()),
            (filter.from_ms.is_some(), "i.created_at_ms >= ?"),
            (filter.to_ms.is_some(), "i.created_at_ms < ?"),
        ] {
            if set {
                n += 1;
                let _ = write!(inner, " AND {}", condition.replace('?', &format!("${n}")));
            }
        }
        match filter.status {
            Some(SessionStatus::Ok) => {
                let _ = write!(inner, " AND NOT {}", last_call_failed());
            }
            Some(SessionStatus::Error) => {
                let _ = write!(inner, " AND {}", last_call_failed());
            }
            None => {}
        }
        let _ = write!(inner, " ORDER BY i.id DESC LIMIT ${}", n + 1);
        let sql = select_sessions(&inner, "DESC");
        let limit = i64::from(filter.effective_limit());

        let records: Vec<SessionRecord> = on_pool!(self, reader, |pool| {
            let mut query = sqlx::query_as(&sql).bind(project.as_str());
            for value in [
                &filter.before_id,
                &filter.conversation_id,
                &filter.operation,
                &filter.model_id,
                &filter.provider,
            ]
            .into_iter()
            .flatten()
            {
                query = query.bind(value.as_str());
            }
            for value in [filter.from_ms, filter.to_ms].into_iter().flatten() {
                query = query.bind(value);
            }
            query
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("list_sessions"))
        })?;
        records
            .into_iter()
            .map(|r| r.into_row("list_sessions"))
            .collect()
    }

    /// Fetches one session of `project` with the aggregates of its calls, and
    /// its calls oldest first (by id); `None` if there is no such session in
    /// this project (sessions of other projects are never returned).
    ///
    /// The row and the calls are two reads; if calls of the session were
    /// recorded in between (the call count differs from the calls read), the
    /// row is read again, so the aggregates match the calls returned.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_session(
        &self,
        project: &ProjectId,
        id: &str,
    ) -> Result<Option<(SessionRow, Vec<LlmCallRow>)>, StoreError> {
        let sql = select_sessions("WHERE i.project_id = $1 AND i.id = $2", "ASC");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let record: Option<SessionRecord> = on_pool!(self, reader, |pool| {
                sqlx::query_as(&sql)
                    .bind(project.as_str())
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(StoreError::op("get_session"))
            })?;
            let Some(record) = record else {
                return Ok(None);
            };
            let row = record.into_row("get_session")?;
            let calls = self.session_calls(project, id).await?;
            let consistent = usize::try_from(row.call_count).is_ok_and(|n| n == calls.len());
            if consistent || attempt >= GET_SESSION_ATTEMPTS {
                return Ok(Some((row, calls)));
            }
        }
    }

    /// The sessions of `project` whose parent is `parent_id`, with the
    /// aggregates of their calls, oldest first (by id). Empty if there are
    /// none (or the parent does not exist in this project).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn child_sessions(
        &self,
        project: &ProjectId,
        parent_id: &str,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let sql = select_sessions(
            "WHERE i.project_id = $1 AND i.parent_session_id = $2",
            "ASC",
        );
        let records: Vec<SessionRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(&sql)
                .bind(project.as_str())
                .bind(parent_id)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("child_sessions"))
        })?;
        records
            .into_iter()
            .map(|r| r.into_row("child_sessions"))
            .collect()
    }
}

#[cfg(test)]
mod tests;
