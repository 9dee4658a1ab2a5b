//! A running turn's crash checkpoint: the text streamed so far, kept in the
//! `turns` row beside the fold's columns (not an event).

use super::sql::{CHECKPOINT_TURN, SELECT_PARTIAL_TEXT};
use crate::{ProjectId, Store, StoreError};

impl Store {
    /// Stores `partial_text` (the whole text streamed so far, replacing the
    /// previous checkpoint) as the crash checkpoint of running turn `turn_id`
    /// of `project`, taken at `at_ms`. Meant to be called by the turn engine
    /// at most every few hundred milliseconds; start-up recovery reads it back
    /// with [`Store::turn_partial_text`]. Not an event: the fold's columns
    /// are not touched, and appends leave the checkpoint as it is.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] (`kind: "running turn"`) if there is no turn
    /// `turn_id` in this project or it is no longer running (nothing is
    /// written); [`StoreError::Query`] on database failure.
    pub async fn checkpoint_turn(
        &self,
        project: &ProjectId,
        turn_id: &str,
        partial_text: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let updated = on_pool!(self, writer, |pool| {
            sqlx::query(CHECKPOINT_TURN)
                .bind(project.as_str())
                .bind(turn_id)
                .bind(partial_text)
                .bind(at_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::op("checkpoint_turn"))
        })?;
        if updated == 0 {
            return Err(StoreError::NotFound {
                kind: "running turn",
                id: turn_id.to_owned(),
            });
        }
        Ok(())
    }

    /// The last checkpointed text of turn `turn_id` of `project`; `None` if
    /// the turn has no checkpoint or does not exist in this project. The
    /// checkpoint stays after the turn ended.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn turn_partial_text(
        &self,
        project: &ProjectId,
        turn_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let text: Option<Option<String>> = on_pool!(self, reader, |pool| {
            sqlx::query_scalar(SELECT_PARTIAL_TEXT)
                .bind(project.as_str())
                .bind(turn_id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op("turn_partial_text"))
        })?;
        Ok(text.flatten())
    }
}
