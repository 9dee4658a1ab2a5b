//! Token usage and cost totals of the calls, grouped by project, API key,
//! model, provider, operation or day ([`Store::usage`]).

use std::fmt;
use std::fmt::Write as _;

use serde::Serialize;

use crate::{Backend, ProjectId, Store, StoreError};

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

impl Store {
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
