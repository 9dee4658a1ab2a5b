//! Recording and reading LLM sessions and calls.

use std::fmt::Write as _;

use crate::types::CallRecord;
use crate::{CallFilter, LlmCallRow, ProjectId, RecordedSession, Store, StoreError};

const INSERT_SESSION: &str = "INSERT INTO llm_sessions \
     (id, project_id, operation, parent_session_id, conversation_id, turn_id, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const INSERT_CALL: &str = "INSERT INTO llm_calls \
     (id, project_id, session_id, model_id, provider, upstream_model, stream, request_json, \
      response_text, reasoning_text, tool_calls_json, finish_reason, \
      prompt_tokens, completion_tokens, reasoning_tokens, cached_prompt_tokens, total_tokens, \
      sent_at_ms, first_token_at_ms, completed_at_ms, http_status, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22)";

/// Columns of [`CallRecord`], from `llm_calls c` joined with `llm_sessions s`.
const SELECT_CALLS: &str = "SELECT c.id, c.project_id, c.session_id, s.operation, \
     s.conversation_id, s.turn_id, \
     c.model_id, c.provider, c.upstream_model, c.stream, c.request_json, \
     c.response_text, c.reasoning_text, c.tool_calls_json, c.finish_reason, \
     c.prompt_tokens, c.completion_tokens, c.reasoning_tokens, c.cached_prompt_tokens, \
     c.total_tokens, c.sent_at_ms, c.first_token_at_ms, c.completed_at_ms, \
     c.http_status, c.error \
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
    /// batch); [`StoreError::Query`] for other database failures. In every
    /// error case nothing of the batch is written.
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
        on_pool!(self, writer, |pool| {
            let mut tx = pool.begin().await.map_err(&err)?;
            for recorded in batch {
                let s = &recorded.session;
                sqlx::query(INSERT_SESSION)
                    .bind(&s.id)
                    .bind(project.as_str())
                    .bind(&s.operation)
                    .bind(&s.parent_session_id)
                    .bind(&s.conversation_id)
                    .bind(&s.turn_id)
                    .bind(s.created_at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
                for c in &recorded.calls {
                    sqlx::query(INSERT_CALL)
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
                        .execute(&mut *tx)
                        .await
                        .map_err(&err)?;
                }
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
