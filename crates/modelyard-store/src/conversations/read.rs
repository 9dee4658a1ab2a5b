//! The conversation queries: events, conversations, messages and turns.

use modelyard_core::conversation::{ConversationRecord, Event, MessageRecord, TurnRecord};

use super::rows::{
    decode_err, to_events, BoxError, ConversationRow, EventRecord, MessageRow, ProjectTurnRow,
    TurnRow,
};
use super::sql::{
    SELECT_CONVERSATION, SELECT_CONVERSATIONS, SELECT_CONVERSATION_TURNS, SELECT_EVENTS_AFTER,
    SELECT_MESSAGES, SELECT_RUNNING_TURNS, SELECT_TURN,
};
use super::{ConversationFilter, DEFAULT_EVENTS_LIMIT};
use crate::{ProjectId, Store, StoreError};

impl Store {
    /// The events of conversation `conversation_id` of `project` with
    /// `seq > after`, seq ascending, at most `limit` of them (0 means
    /// [`DEFAULT_EVENTS_LIMIT`], 1000). Empty if the conversation does not
    /// exist in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure or a stored payload that
    /// does not parse.
    pub async fn events_after(
        &self,
        project: &ProjectId,
        conversation_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = i64::from(if limit == 0 {
            DEFAULT_EVENTS_LIMIT
        } else {
            limit
        });
        let records: Vec<EventRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_EVENTS_AFTER)
                .bind(project.as_str())
                .bind(conversation_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("events_after"))
        })?;
        to_events(conversation_id, records)
    }

    /// The materialized conversation `id` of `project` (deleted ones too, with
    /// `deleted: true`); `None` if there is no such conversation in this
    /// project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_conversation(
        &self,
        project: &ProjectId,
        id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        const OP: &str = "get_conversation";
        let row: Option<ConversationRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_CONVERSATION)
                .bind(project.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        row.map(ConversationRow::into_record)
            .transpose()
            .map_err(decode_err(OP))
    }

    /// Conversations of `project` matching `filter`, newest `updated_at_ms`
    /// first (ties: id descending), at most
    /// [`ConversationFilter::effective_limit`] of them. Soft-deleted ones are
    /// left out unless [`ConversationFilter::include_deleted`]. For the next
    /// page, pass `(updated_at_ms, id)` of the last item as
    /// [`ConversationFilter::before`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_conversations(
        &self,
        project: &ProjectId,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        const OP: &str = "list_conversations";
        let mut sql = format!("{SELECT_CONVERSATIONS} WHERE project_id = $1");
        let mut n = 1;
        if !filter.include_deleted {
            sql.push_str(" AND NOT deleted");
        }
        if filter.parent_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND parent_id = ${n}"));
        }
        if filter.before.is_some() {
            sql.push_str(&format!(
                " AND (updated_at_ms, id) < (${}, ${})",
                n + 1,
                n + 2
            ));
            n += 2;
        }
        sql.push_str(&format!(
            " ORDER BY updated_at_ms DESC, id DESC LIMIT ${}",
            n + 1
        ));
        let limit = i64::from(filter.effective_limit());
        let rows: Vec<ConversationRow> = on_pool!(self, reader, |pool| {
            let mut query = sqlx::query_as(&sql).bind(project.as_str());
            if let Some(parent_id) = &filter.parent_id {
                query = query.bind(parent_id.as_str());
            }
            if let Some((updated_at_ms, id)) = &filter.before {
                query = query.bind(*updated_at_ms).bind(id.as_str());
            }
            query
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(ConversationRow::into_record)
            .collect::<Result<_, _>>()
            .map_err(decode_err(OP))
    }

    /// The messages of conversation `conversation_id` of `project`, seq
    /// ascending (user and assistant messages interleaved as appended). Empty
    /// if the conversation does not exist in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_messages(
        &self,
        project: &ProjectId,
        conversation_id: &str,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        const OP: &str = "list_messages";
        let rows: Vec<MessageRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_MESSAGES)
                .bind(project.as_str())
                .bind(conversation_id)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(MessageRow::into_record)
            .collect::<Result<_, _>>()
            .map_err(decode_err(OP))
    }

    /// The turns of conversation `conversation_id` of `project`, in start
    /// order (`started_seq` ascending). Empty if the conversation does not
    /// exist in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_turns(
        &self,
        project: &ProjectId,
        conversation_id: &str,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        const OP: &str = "list_turns";
        let rows: Vec<TurnRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_CONVERSATION_TURNS)
                .bind(project.as_str())
                .bind(conversation_id)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(TurnRow::into_record)
            .collect::<Result<_, _>>()
            .map_err(decode_err(OP))
    }

    /// Turn `turn_id` of `project`; `None` if there is no such turn in this
    /// project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_turn(
        &self,
        project: &ProjectId,
        turn_id: &str,
    ) -> Result<Option<TurnRecord>, StoreError> {
        const OP: &str = "get_turn";
        let row: Option<TurnRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_TURN)
                .bind(project.as_str())
                .bind(turn_id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        row.map(TurnRow::into_record)
            .transpose()
            .map_err(decode_err(OP))
    }

    /// Every turn still `running`, in ALL projects, with its project (for
    /// start-up recovery, which ends them with `turn.interrupted`). Ordered
    /// by project, then start time.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn running_turns(&self) -> Result<Vec<(ProjectId, TurnRecord)>, StoreError> {
        const OP: &str = "running_turns";
        let rows: Vec<ProjectTurnRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_RUNNING_TURNS)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(|r| Ok((ProjectId::new(r.project_id), r.turn.into_record()?)))
            .collect::<Result<_, BoxError>>()
            .map_err(decode_err(OP))
    }
}
