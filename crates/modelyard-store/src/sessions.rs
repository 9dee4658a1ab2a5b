//! The LLM-call audit: sessions with their aggregated calls, and token usage
//! and cost totals grouped by project, API key, model, provider, operation
//! or day.
//!
//! A session's aggregates (call count, status, last model, times, token
//! sums) are computed by one `GROUP BY` query over `llm_sessions` LEFT JOIN
//! `llm_calls`, so a session without calls is listed with zero calls and zero
//! tokens. Token sums count a `NULL` (not reported) usage as 0; cost sums
//! add the known costs and are `None` when no call of the set has one.

use std::fmt;
use std::fmt::Write as _;

use serde::Serialize;

use modelyard_core::llm_config::ConfigSnapshot;

use crate::{
    Backend, LlmCallRow, ProjectId, Store, StoreError, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT,
};

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

/// How [`Store::usage`] groups calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroup {
    /// By project (every call of one project's query is in one group: the
    /// project's id).
    Project,
    /// By the API key whose request made the call's session (`none` for
    /// calls made without a key).
    Key,
    /// By composite `"provider/model"` id.
    Model,
    /// By provider name.
    Provider,
    /// By the operation of the call's session.
    Operation,
    /// By the UTC date (`YYYY-MM-DD`) of the call's `sent_at_ms`.
    Day,
}

impl UsageGroup {
    /// Every grouping, in the order of their names in messages.
    pub const ALL: [UsageGroup; 6] = [
        UsageGroup::Project,
        UsageGroup::Key,
        UsageGroup::Model,
        UsageGroup::Provider,
        UsageGroup::Operation,
        UsageGroup::Day,
    ];

    /// `"project"`, `"key"`, `"model"`, `"provider"`, `"operation"` or
    /// `"day"`.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroup::Project => "project",
            UsageGroup::Key => "key",
            UsageGroup::Model => "model",
            UsageGroup::Provider => "provider",
            UsageGroup::Operation => "operation",
            UsageGroup::Day => "day",
        }
    }

    /// The grouping named exactly `name` (see [`UsageGroup::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

impl fmt::Display for UsageGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which calls [`Store::usage_where`] counts. All set criteria must match
/// (AND); an empty filter counts every call of the project.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    /// Only calls sent at or after this time (`sent_at_ms >=`), unix
    /// milliseconds.
    pub from_ms: Option<i64>,
    /// Only calls sent strictly before this time (`sent_at_ms <`), unix
    /// milliseconds.
    pub to_ms: Option<i64>,
    /// Only calls of the sessions of exactly this conversation (every
    /// operation run for it: turns, title, compaction, advisor, warm, ...).
    pub conversation_id: Option<String>,
}

/// One group of [`Store::usage`]: the number of calls in it, their token
/// sums (tokens; `NULL` usage counted as 0) and their cost.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct UsageGroupRow {
    /// The group: a project id, a key id (`none` without one), a model id,
    /// a provider, an operation, or a UTC date `YYYY-MM-DD`.
    pub key: String,
    /// Number of calls in the group.
    pub calls: i64,
    /// Sum of the prompt (input) tokens.
    pub input: i64,
    /// Sum of the completion (output) tokens.
    pub output: i64,
    /// Sum of the reasoning tokens.
    pub reasoning: i64,
    /// Sum of the cached prompt tokens.
    pub cached_input: i64,
    /// Sum of the total tokens.
    pub total: i64,
    /// Sum of the known costs, nano-USD; `None` when no call has one.
    pub cost_nusd: Option<i64>,
    /// Calls with usage that no price covered (`price_source` `none`, cost
    /// unknown: unpriced cloud models); the cost sum leaves them out. Calls
    /// recorded before costs existed are not counted.
    pub unpriced_calls: i64,
}

// ---------------------------------------------------------------- SQL

/// The aggregating query over the sessions selected by `inner` (the tail of
/// `SELECT ... FROM llm_sessions i`, i.e. its WHERE / ORDER BY / LIMIT), its
/// result ordered by `order` (`ASC` or `DESC` on the session id).
///
/// Sessions are selected (and paged) first, then joined with their calls and
/// aggregated, so the work is bounded by the page. The last call's model and
/// provider and the last error are correlated subqueries on the
/// `(project_id, session_id, id)` index of `llm_calls`. `SUM` of BIGINT is
/// NUMERIC on PostgreSQL, hence the casts back to BIGINT.
fn select_sessions(inner: &str, order: &str) -> String {
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
fn exists_call(condition: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM llm_calls x \
         WHERE x.project_id = i.project_id AND x.session_id = i.id AND {condition})"
    )
}

/// Whether the last call (highest id) of the inner session `i` has an
/// error.
fn last_call_failed() -> String {
    "COALESCE((SELECT CASE WHEN x.error IS NULL THEN 0 ELSE 1 END FROM llm_calls x \
     WHERE x.project_id = i.project_id AND x.session_id = i.id \
     ORDER BY x.id DESC LIMIT 1), 0) = 1"
        .to_owned()
}

/// Flat database shape of a [`select_sessions`] row; decodes on both
/// backends.
#[derive(sqlx::FromRow)]
struct SessionRecord {
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
    fn into_row(self, op: &'static str) -> Result<SessionRow, StoreError> {
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

/// Flat database shape of a [`Store::usage`] row.
#[derive(sqlx::FromRow)]
struct UsageRecord {
    group_key: String,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cached_input_tokens: i64,
    total_tokens: i64,
    cost_nusd: Option<i64>,
    unpriced_calls: i64,
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

    /// Token usage of the calls of `project` sent in `[from_ms, to_ms)` (each
    /// bound optional; unix milliseconds on `sent_at_ms`), one row per group
    /// of `group_by`, ordered by key: [`Store::usage_where`] with only a time
    /// range.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure (e.g. a sum overflowing
    /// BIGINT).
    pub async fn usage(
        &self,
        project: &ProjectId,
        group_by: UsageGroup,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<UsageGroupRow>, StoreError> {
        let filter = UsageFilter {
            from_ms,
            to_ms,
            conversation_id: None,
        };
        self.usage_where(project, group_by, &filter).await
    }

    /// Token usage of the calls of `project` that `filter` selects, one row
    /// per group of `group_by`, ordered by key. Every call is in exactly one
    /// group, so the sums over the rows are the totals of the selection.
    /// Groups without calls are not listed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure (e.g. a sum overflowing
    /// BIGINT).
    pub async fn usage_where(
        &self,
        project: &ProjectId,
        group_by: UsageGroup,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageGroupRow>, StoreError> {
        let UsageFilter {
            from_ms,
            to_ms,
            ref conversation_id,
        } = *filter;
        let key = match group_by {
            UsageGroup::Project => "c.project_id",
            UsageGroup::Key => "COALESCE(s.key_id, 'none')",
            UsageGroup::Model => "c.model_id",
            UsageGroup::Provider => "c.provider",
            UsageGroup::Operation => "s.operation",
            // The one backend-specific expression: the UTC date of
            // `sent_at_ms` as `YYYY-MM-DD`. SQLite's `unixepoch` modifier
            // takes fractional seconds (rounded to the millisecond); on
            // PostgreSQL, `timestamp` (without time zone) arithmetic is exact
            // and independent of the session's TimeZone.
            UsageGroup::Day => match self.backend() {
                Backend::Sqlite => "strftime('%Y-%m-%d', c.sent_at_ms / 1000.0, 'unixepoch')",
                Backend::Postgres => {
                    "to_char(TIMESTAMP '1970-01-01 00:00:00' \
                     + c.sent_at_ms * INTERVAL '1 millisecond', 'YYYY-MM-DD')"
                }
            },
        };
        let join = if matches!(group_by, UsageGroup::Operation | UsageGroup::Key)
            || conversation_id.is_some()
        {
            " JOIN llm_sessions s ON s.project_id = c.project_id AND s.id = c.session_id"
        } else {
            ""
        };
        let mut sql = format!(
            "SELECT {key} AS group_key, COUNT(*) AS calls, \
             CAST(COALESCE(SUM(c.prompt_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(c.completion_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(c.reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens, \
             CAST(COALESCE(SUM(c.cached_prompt_tokens), 0) AS BIGINT) AS cached_input_tokens, \
             CAST(COALESCE(SUM(c.total_tokens), 0) AS BIGINT) AS total_tokens, \
             CAST(SUM(c.cost_nusd) AS BIGINT) AS cost_nusd, \
             CAST(COALESCE(SUM(CASE WHEN c.cost_nusd IS NULL AND c.price_source = 'none' \
             AND c.total_tokens IS NOT NULL \
             THEN 1 ELSE 0 END), 0) AS BIGINT) AS unpriced_calls \
             FROM llm_calls c{join} WHERE c.project_id = $1"
        );
        let mut n = 1;
        for (value, condition) in [(from_ms, "c.sent_at_ms >="), (to_ms, "c.sent_at_ms <")] {
            if value.is_some() {
                n += 1;
                let _ = write!(sql, " AND {condition} ${n}");
            }
        }
        if conversation_id.is_some() {
            n += 1;
            let _ = write!(sql, " AND s.conversation_id = ${n}");
        }
        sql.push_str(" GROUP BY 1 ORDER BY 1");

        let records: Vec<UsageRecord> = on_pool!(self, reader, |pool| {
            let mut query = sqlx::query_as(&sql).bind(project.as_str());
            for value in [from_ms, to_ms].into_iter().flatten() {
                query = query.bind(value);
            }
            if let Some(conversation_id) = conversation_id {
                query = query.bind(conversation_id.as_str());
            }
            query.fetch_all(pool).await.map_err(StoreError::op("usage"))
        })?;
        Ok(records
            .into_iter()
            .map(|r| UsageGroupRow {
                key: r.group_key,
                calls: r.calls,
                input: r.input_tokens,
                output: r.output_tokens,
                reasoning: r.reasoning_tokens,
                cached_input: r.cached_input_tokens,
                total: r.total_tokens,
                cost_nusd: r.cost_nusd,
                unpriced_calls: r.unpriced_calls,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
