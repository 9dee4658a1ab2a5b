//! Recording and reading LLM sessions and calls.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use crate::types::CallRecord;
use crate::{CallFilter, LlmCallRow, NewLlmCall, ProjectId, RecordedSession, Store, StoreError};

const INSERT_SESSIONS: &str = "INSERT INTO llm_sessions \
     (id, project_id, operation, parent_session_id, conversation_id, turn_id, created_at_ms, \
      request_id, key_id, config_json) ";

const INSERT_CALLS: &str = "INSERT INTO llm_calls \
     (id, project_id, session_id, model_id, provider, upstream_model, stream, request_json, \
      response_text, reasoning_text, tool_calls_json, finish_reason, \
      prompt_tokens, completion_tokens, reasoning_tokens, cached_prompt_tokens, total_tokens, \
      sent_at_ms, first_token_at_ms, completed_at_ms, http_status, error, attempt, route, \
      cache_creation_tokens, cost_nusd, price_source, price_version) ";

/// Rows per multi-row INSERT, largest first: a batch is cut into runs of
/// these sizes (73 rows: 64 + 4 + 4 + 1), so only these few statement texts
/// exist and each is prepared once and then reused from the connection's
/// statement cache, where one statement per batch length would be parsed
/// anew for most batches. 28 columns × 64 rows stays far below the bind
/// limits of SQLite (32 766) and PostgreSQL (65 535).
const ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

/// `rows` cut into consecutive runs of the [`ROWS_PER_INSERT`] sizes.
fn insert_runs<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = ROWS_PER_INSERT
            .into_iter()
            .find(|size| *size <= rows.len())?;
        let (run, rest) = rows.split_at(size);
        rows = rest;
        Some(run)
    })
}

/// Values per row of [`INSERT_SESSIONS`] and of [`INSERT_CALLS`].
const SESSION_COLUMNS: usize = 10;
const CALL_COLUMNS: usize = 28;

/// The text of an INSERT of `rows` rows of `columns` values: `head`, then
/// `VALUES (…), (…)` with `$n` placeholders (`numbered`: PostgreSQL) or `?`
/// (SQLite) — the text `sqlx::QueryBuilder::push_values` makes. Made once
/// per statement and kept (2 heads × the 4 [`ROWS_PER_INSERT`] sizes × 2
/// databases): building it per batch, a placeholder at a time, cost more
/// than binding the values.
fn insert_sql(head: &'static str, columns: usize, rows: usize, numbered: bool) -> Arc<str> {
    type Made = Vec<((usize, usize, bool), Arc<str>)>;
    static MADE: Mutex<Made> = Mutex::new(Vec::new());
    // By the head's address: the two heads differ in text, so never share
    // one (were a constant's uses given two addresses, that would only add
    // an entry, still at most a few).
    let key = (head.as_ptr() as usize, rows, numbered);
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, sql)) = made.iter().find(|(k, _)| *k == key) {
        return Arc::clone(sql);
    }
    let mut sql = String::with_capacity(head.len() + 8 + rows * columns * 6);
    sql.push_str(head);
    sql.push_str("VALUES ");
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            n += 1;
            if numbered {
                let _ = write!(sql, "${n}");
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    let sql: Arc<str> = sql.into();
    made.push((key, Arc::clone(&sql)));
    sql
}

/// Columns of [`CallRecord`], from `llm_calls c` joined with `llm_sessions s`.
const SELECT_CALLS: &str = "SELECT c.id, c.project_id, c.session_id, s.operation, \
     s.conversation_id, s.turn_id, \
     c.model_id, c.provider, c.upstream_model, c.stream, c.request_json, \
     c.response_text, c.reasoning_text, c.tool_calls_json, c.finish_reason, \
     c.prompt_tokens, c.completion_tokens, c.reasoning_tokens, c.cached_prompt_tokens, \
     c.total_tokens, c.sent_at_ms, c.first_token_at_ms, c.completed_at_ms, \
     c.http_status, c.error, c.attempt, c.route, s.request_id, \
     c.cache_creation_tokens, c.cost_nusd, c.price_source, c.price_version \
     FROM llm_calls c \
     JOIN llm_sessions s ON s.project_id = c.project_id AND s.id = c.session_id";

impl Store {
    /// Inserts sessions and their calls, all stamped with `project`, in ONE
    /// transaction: either the whole batch is written or nothing of it. Meant
    /// for a background recorder that flushes batches. An empty batch is a
    /// no-op.
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`] if a session or call id already exists
    /// (in the database or earlier in the batch);
    /// [`StoreError::MissingReference`] if `project` does not exist or a call's
    /// `session_id` names no session of `project` (recorded earlier or in this
    /// batch); [`StoreError::InvalidInput`] if a session's config snapshot
    /// cannot be serialized; [`StoreError::Query`] for other database
    /// failures. In every error case nothing of the batch is written.
    pub async fn record_sessions(
        &self,
        project: &ProjectId,
        batch: &[RecordedSession],
    ) -> Result<(), StoreError> {
        const OP: &str = "record_sessions";
        if batch.is_empty() {
            return Ok(());
        }
        let err = StoreError::op(OP);
        // Serialized before the transaction: a snapshot that does not
        // serialize fails the batch without writing anything.
        let configs: Vec<Option<String>> = batch
            .iter()
            .map(|r| {
                r.session
                    .config
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::InvalidInput {
                reason: format!("a session's config snapshot cannot be serialized as JSON: {e}"),
            })?;
        let numbered = matches!(self.inner, crate::store::Inner::Postgres(_));
        on_pool!(self, writer, |pool| {
            let mut tx = pool.begin().await.map_err(&err)?;
            // Multi-row INSERTs: a few statements per batch instead of one
            // per row (the call log's main write cost).
            let sessions: Vec<(&RecordedSession, &Option<String>)> =
                batch.iter().zip(&configs).collect();
            for chunk in insert_runs(&sessions) {
                let sql = insert_sql(INSERT_SESSIONS, SESSION_COLUMNS, chunk.len(), numbered);
                let mut query = sqlx::query(&sql);
                for (recorded, config) in chunk {
                    let s = &recorded.session;
                    query = query
                        .bind(&s.id)
                        .bind(project.as_str())
                        .bind(&s.operation)
                        .bind(&s.parent_session_id)
                        .bind(&s.conversation_id)
                        .bind(&s.turn_id)
                        .bind(s.created_at_ms)
                        .bind(&s.request_id)
                        .bind(&s.key_id)
                        .bind(*config);
                }
                query.execute(&mut *tx).await.map_err(&err)?;
            }
            let calls: Vec<&NewLlmCall> = batch.iter().flat_map(|r| &r.calls).collect();
            for chunk in insert_runs(&calls) {
                let sql = insert_sql(INSERT_CALLS, CALL_COLUMNS, chunk.len(), numbered);
                let mut query = sqlx::query(&sql);
                for c in chunk {
                    query = query
                        .bind(&c.id)
                        .bind(project.as_str())
                        .bind(&c.session_id)
                        .bind(&c.model_id)
                        .bind(&c.provider)
                        .bind(&c.upstream_model)
                        .bind(c.stream)
                        .bind(&c.request_json)
                        .bind(&c.response_text)
                        .bind(&c.reasoning_text)
                        .bind(&c.tool_calls_json)
                        .bind(&c.finish_reason)
                        .bind(c.usage.prompt_tokens)
                        .bind(c.usage.completion_tokens)
                        .bind(c.usage.reasoning_tokens)
                        .bind(c.usage.cached_prompt_tokens)
                        .bind(c.usage.total_tokens)
                        .bind(c.sent_at_ms)
                        .bind(c.first_token_at_ms)
                        .bind(c.completed_at_ms)
                        .bind(c.http_status)
                        .bind(&c.error)
                        .bind(c.attempt)
                        .bind(&c.route)
                        .bind(c.usage.cache_creation_tokens)
                        .bind(c.cost.cost_nusd)
                        .bind(c.cost.price_source.map(|s| s.as_str()))
                        .bind(&c.cost.price_version);
                }
                query.execute(&mut *tx).await.map_err(&err)?;
            }
            tx.commit().await.map_err(&err)?;
            Ok::<(), StoreError>(())
        })?;
        tracing::trace!(project = %project, sessions = batch.len(), "recorded sessions");
        Ok(())
    }

    /// Lists the calls of `project` matching `filter`, newest first (by id,
    /// which for UUIDv7 ids is time order), at most
    /// [`CallFilter::effective_limit`] rows. For the next page, pass the id of
    /// the last row returned as [`CallFilter::before_id`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_calls(
        &self,
        project: &ProjectId,
        filter: &CallFilter,
    ) -> Result<Vec<LlmCallRow>, StoreError> {
        // Conditions are appended only for the criteria that are set, so each
        // variant of the statement can use its index range directly.
        let mut sql = format!("{SELECT_CALLS} WHERE c.project_id = $1");
        let mut n = 1;
        for (set, condition) in [
            (filter.before_id.is_some(), "c.id <"),
            (filter.model_id.is_some(), "c.model_id ="),
            (filter.operation.is_some(), "s.operation ="),
            (filter.conversation_id.is_some(), "s.conversation_id ="),
            (filter.request_id.is_some(), "s.request_id ="),
        ] {
            if set {
                n += 1;
                let _ = write!(sql, " AND {condition} ${n}");
            }
        }
        let _ = write!(sql, " ORDER BY c.id DESC LIMIT ${}", n + 1);
        let limit = i64::from(filter.effective_limit());

        let records: Vec<CallRecord> = on_pool!(self, reader, |pool| {
            let mut query = sqlx::query_as(&sql).bind(project.as_str());
            for value in [
                &filter.before_id,
                &filter.model_id,
                &filter.operation,
                &filter.conversation_id,
                &filter.request_id,
            ]
            .into_iter()
            .flatten()
            {
                query = query.bind(value.as_str());
            }
            query
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("list_calls"))
        })?;
        Ok(records.into_iter().map(LlmCallRow::from).collect())
    }

    /// Fetches one call of `project` by id; `None` if there is no such call in
    /// this project (calls of other projects are never returned).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_call(
        &self,
        project: &ProjectId,
        id: &str,
    ) -> Result<Option<LlmCallRow>, StoreError> {
        let sql = format!("{SELECT_CALLS} WHERE c.project_id = $1 AND c.id = $2");
        let record: Option<CallRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(&sql)
                .bind(project.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op("get_call"))
        })?;
        Ok(record.map(LlmCallRow::from))
    }

    /// Lists the calls of one session of `project`, oldest first (by id). Empty
    /// if the session does not exist in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn session_calls(
        &self,
        project: &ProjectId,
        session_id: &str,
    ) -> Result<Vec<LlmCallRow>, StoreError> {
        let sql = format!(
            "{SELECT_CALLS} WHERE c.project_id = $1 AND c.session_id = $2 ORDER BY c.id ASC"
        );
        let records: Vec<CallRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(&sql)
                .bind(project.as_str())
                .bind(session_id)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("session_calls"))
        })?;
        Ok(records.into_iter().map(LlmCallRow::from).collect())
    }
}

/// Most rows one prune statement selects or deletes.
const PRUNE_BATCH: usize = 5_000;

impl Store {
    /// Applies the call-log retention policy across ALL projects (it is an
    /// operator policy): deletes calls sent before `older_than_ms` and, per
    /// project, every call beyond the newest `keep_newest` (by id, which is
    /// time order); then deletes the sessions left without calls that either
    /// had calls pruned here or were created before `older_than_ms`.
    ///
    /// Works in statements of at most 5 000 rows, each its own transaction,
    /// so it never holds a long write lock; an interrupted prune leaves a
    /// consistent database and the next run finishes it. Returns how many
    /// calls were deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn prune_calls(
        &self,
        older_than_ms: Option<i64>,
        keep_newest: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        if let Some(cutoff) = older_than_ms {
            loop {
                let batch: Vec<(String, String)> = on_pool!(self, reader, |pool| {
                    sqlx::query_as(
                        "SELECT id, session_id FROM llm_calls WHERE sent_at_ms < $1 LIMIT $2",
                    )
                    .bind(cutoff)
                    .bind(PRUNE_BATCH as i64)
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::op("prune_calls"))
                })?;
                deleted += self.delete_call_batch(&batch).await?;
                if batch.len() < PRUNE_BATCH {
                    break;
                }
            }
        }
        if let Some(keep) = keep_newest {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            let projects: Vec<String> = on_pool!(self, reader, |pool| {
                sqlx::query_scalar("SELECT id FROM projects ORDER BY id")
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::op("prune_calls"))
            })?;
            for project in projects {
                // The newest call beyond the kept ones: it and all older go.
                let boundary: Option<String> = on_pool!(self, reader, |pool| {
                    sqlx::query_scalar(
                        "SELECT id FROM llm_calls WHERE project_id = $1 \
                         ORDER BY id DESC LIMIT 1 OFFSET $2",
                    )
                    .bind(project.as_str())
                    .bind(keep)
                    .fetch_optional(pool)
                    .await
                    .map_err(StoreError::op("prune_calls"))
                })?;
                let Some(boundary) = boundary else { continue };
                loop {
                    let batch: Vec<(String, String)> = on_pool!(self, reader, |pool| {
                        sqlx::query_as(
                            "SELECT id, session_id FROM llm_calls \
                             WHERE project_id = $1 AND id <= $2 ORDER BY id LIMIT $3",
                        )
                        .bind(project.as_str())
                        .bind(boundary.as_str())
                        .bind(PRUNE_BATCH as i64)
                        .fetch_all(pool)
                        .await
                        .map_err(StoreError::op("prune_calls"))
                    })?;
                    deleted += self.delete_call_batch(&batch).await?;
                    if batch.len() < PRUNE_BATCH {
                        break;
                    }
                }
            }
        }
        if let Some(cutoff) = older_than_ms {
            loop {
                let removed = on_pool!(self, writer, |pool| {
                    sqlx::query(
                        "DELETE FROM llm_sessions WHERE id IN (\
                         SELECT s.id FROM llm_sessions s WHERE s.created_at_ms < $1 \
                         AND NOT EXISTS (SELECT 1 FROM llm_calls c \
                         WHERE c.project_id = s.project_id AND c.session_id = s.id) \
                         LIMIT $2)",
                    )
                    .bind(cutoff)
                    .bind(PRUNE_BATCH as i64)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
                    .map_err(StoreError::op("prune_calls"))
                })?;
                if removed < PRUNE_BATCH as u64 {
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::debug!(deleted, "pruned calls");
        }
        Ok(deleted)
    }

    /// Deletes the calls `(id, session_id)` of `batch`, then those of their
    /// sessions that have no call left. Returns the calls deleted.
    async fn delete_call_batch(&self, batch: &[(String, String)]) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let err = StoreError::op("prune_calls");
        let mut sessions: Vec<&str> = batch.iter().map(|(_, s)| s.as_str()).collect();
        sessions.sort_unstable();
        sessions.dedup();
        on_pool!(self, writer, |pool| {
            let mut delete_calls = sqlx::QueryBuilder::new("DELETE FROM llm_calls WHERE id IN (");
            let mut ids = delete_calls.separated(", ");
            for (id, _) in batch {
                ids.push_bind(id.as_str());
            }
            delete_calls.push(")");
            let deleted = delete_calls
                .build()
                .execute(pool)
                .await
                .map_err(&err)?
                .rows_affected();
            let mut delete_sessions =
                sqlx::QueryBuilder::new("DELETE FROM llm_sessions WHERE id IN (");
            let mut ids = delete_sessions.separated(", ");
            for id in &sessions {
                ids.push_bind(*id);
            }
            delete_sessions.push(
                ") AND NOT EXISTS (SELECT 1 FROM llm_calls c \
                 WHERE c.project_id = llm_sessions.project_id AND c.session_id = llm_sessions.id)",
            );
            delete_sessions.build().execute(pool).await.map_err(&err)?;
            Ok::<u64, StoreError>(deleted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{
        insert_runs, insert_sql, CALL_COLUMNS, INSERT_CALLS, INSERT_SESSIONS, ROWS_PER_INSERT,
        SESSION_COLUMNS,
    };

    /// The kept statement texts are the ones `QueryBuilder::push_values`
    /// makes, for both databases and every run size.
    #[test]
    fn insert_sql_is_what_the_query_builder_makes() {
        fn built<DB: sqlx::Database>(head: &'static str, columns: usize, rows: usize) -> String
        where
            i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        {
            let mut builder = sqlx::QueryBuilder::<DB>::new(head);
            builder.push_values(0..rows, |mut row, _| {
                for _ in 0..columns {
                    row.push_bind(0_i64);
                }
            });
            builder.sql().to_owned()
        }
        for (head, columns) in [
            (INSERT_SESSIONS, SESSION_COLUMNS),
            (INSERT_CALLS, CALL_COLUMNS),
        ] {
            for rows in ROWS_PER_INSERT {
                for _ in 0..2 {
                    assert_eq!(
                        *insert_sql(head, columns, rows, false),
                        built::<sqlx::Sqlite>(head, columns, rows)
                    );
                    assert_eq!(
                        *insert_sql(head, columns, rows, true),
                        built::<sqlx::Postgres>(head, columns, rows)
                    );
                }
            }
        }
    }

    #[test]
    fn insert_runs_cover_every_row_in_order_with_few_statement_sizes() {
        for n in 0..300usize {
            let rows: Vec<usize> = (0..n).collect();
            let runs: Vec<&[usize]> = insert_runs(&rows).collect();
            let joined: Vec<usize> = runs.iter().flat_map(|r| r.iter().copied()).collect();
            assert_eq!(joined, rows, "{n} rows");
            assert!(runs.iter().all(|r| [64, 16, 4, 1].contains(&r.len())));
            // Greedy: fewer than 4 runs of each size below 64.
            for size in [16, 4, 1] {
                assert!(runs.iter().filter(|r| r.len() == size).count() < 4, "{n}");
            }
        }
        let rows = [0u8; 73];
        let sizes: Vec<usize> = insert_runs(&rows).map(<[u8]>::len).collect();
        assert_eq!(sizes, [64, 4, 4, 1]);
    }
}
