//! Turn rows written before migration 0017 lack the fold's tool facts
//! (`client_tools_json`, `pending_tool_calls_json` are NULL). A turn that
//! still waits for tool results needs them to be resumed, so at connect the
//! store re-folds those turns' conversations from their logs and fills the
//! two columns. Finished turns keep NULL (read as empty).

use modelyard_core::conversation::{fold, Event};

use super::rows::to_json;
use super::sql::{SELECT_TURNS_WITHOUT_TOOL_FACTS, SET_TURN_TOOL_FACTS};
use crate::{ProjectId, Store, StoreError};

impl Store {
    /// Fills the tool facts of every `requires_action` turn row written
    /// before migration 0017, from a fold of its conversation's events.
    /// Returns how many turns were filled. A conversation whose log does
    /// not fold is logged and left as it is (its turns read with no pending
    /// tool calls).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub(crate) async fn backfill_turn_tool_facts(&self) -> Result<u64, StoreError> {
        let stale: Vec<(String, String, String)> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_TURNS_WITHOUT_TOOL_FACTS)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("backfill_turn_tool_facts"))
        })?;
        let mut filled = 0;
        for (project, conversation_id, turn_id) in stale {
            let project = ProjectId::new(project);
            let mut events = Vec::new();
            loop {
                let after = events.last().map_or(0, |e: &Event| e.seq);
                let page = self
                    .events_after(&project, &conversation_id, after, 0)
                    .await?;
                if page.is_empty() {
                    break;
                }
                events.extend(page);
            }
            let folded = match fold(&events) {
                Ok(folded) => folded,
                Err(error) => {
                    tracing::warn!(
                        conversation = %conversation_id,
                        %error,
                        "cannot re-fold a conversation for its turn's tool facts"
                    );
                    continue;
                }
            };
            let Some(turn) = folded.1.iter().find(|t| t.id == turn_id) else {
                continue;
            };
            let client_tools = to_json(&turn.client_tools, "turn client tools")?;
            let pending = to_json(&turn.pending_tool_calls, "turn pending tool calls")?;
            on_pool!(self, writer, |pool| {
                sqlx::query(SET_TURN_TOOL_FACTS)
                    .bind(project.as_str())
                    .bind(&turn_id)
                    .bind(&client_tools)
                    .bind(&pending)
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::op("backfill_turn_tool_facts"))
            })?;
            filled += 1;
        }
        Ok(filled)
    }
}
