//! [`Store::append_events`]: folds a batch of events onto the stored state
//! and writes the events and exactly the rows they change, in one
//! transaction.

use modelyard_core::conversation::{
    self, ApplyError, ConversationRecord, Event, EventPayload, MessageRecord, TurnRecord,
    EVENT_PAYLOAD_VERSION,
};

use super::rows::{
    bind_conversation, bind_turn, decode_err, to_json, ConversationRow, MessageRow, TurnRow,
};
use super::sql::{
    INSERT_CONVERSATION, INSERT_EVENT, INSERT_MESSAGE, INSERT_TURN, LOCK_CONVERSATION,
    SELECT_CONVERSATION, SELECT_TURN, UPDATE_CONVERSATION, UPDATE_TURN,
};
use crate::favorites::begin_sql;
use crate::{Backend, ProjectId, Store, StoreError};

/// What [`Store::append_events_folded`] committed.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored events, seq ascending (empty for an empty batch).
    pub events: Vec<Event>,
    /// The conversation after the batch, as written (`None` for an empty
    /// batch, which writes nothing).
    pub conversation: Option<ConversationRecord>,
    /// The messages the batch inserted, as written (in event order).
    pub messages: Vec<MessageRecord>,
}

/// A turn touched by a batch of events.
struct TurnChange {
    turn: TurnRecord,
    /// Started in this batch (INSERT) rather than loaded (UPDATE).
    new: bool,
    /// Changed by the batch (a loaded running turn may be untouched).
    changed: bool,
}

/// What appending a batch writes.
struct Batch {
    /// The conversation after the batch.
    conversation: ConversationRecord,
    /// The new events, seq ascending.
    events: Vec<Event>,
    /// Turns touched, final state.
    turns: Vec<TurnChange>,
    /// Messages to insert.
    messages: Vec<MessageRecord>,
}

fn apply_error(e: ApplyError) -> StoreError {
    match e {
        ApplyError::NoConversation(id) => StoreError::NotFound {
            kind: "conversation",
            id,
        },
        other => StoreError::Conflict {
            reason: other.to_string(),
        },
    }
}

/// Folds `payloads` (non-empty) onto the stored state: the conversation
/// (`None` before creation) and its running turn, if any.
fn fold_batch(
    mut conversation: Option<ConversationRecord>,
    running: Option<TurnRecord>,
    conversation_id: &str,
    payloads: &[EventPayload],
    at_ms: i64,
) -> Result<Batch, StoreError> {
    let first_seq = conversation.as_ref().map_or(0, |c| c.last_seq) + 1;
    let mut turns: Vec<TurnChange> = running
        .into_iter()
        .map(|turn| TurnChange {
            turn,
            new: false,
            changed: false,
        })
        .collect();
    let mut events = Vec::with_capacity(payloads.len());
    let mut messages = Vec::new();
    for (seq, payload) in (first_seq..).zip(payloads) {
        let event = Event {
            conversation_id: conversation_id.to_owned(),
            seq,
            at_ms,
            payload: payload.clone(),
        };
        let running_id = conversation
            .as_ref()
            .and_then(|c| c.running_turn_id.clone());
        let running = running_id
            .and_then(|id| turns.iter().find(|t| t.turn.id == id))
            .map(|t| &t.turn);
        let changes =
            conversation::apply(&mut conversation, running, &event).map_err(apply_error)?;
        if let Some(turn) = changes.turn {
            match turns.iter_mut().find(|t| t.turn.id == turn.id) {
                Some(existing) => {
                    existing.turn = turn;
                    existing.changed = true;
                }
                None => turns.push(TurnChange {
                    turn,
                    new: true,
                    changed: true,
                }),
            }
        }
        messages.extend(changes.message);
        events.push(event);
    }
    let conversation = conversation.ok_or_else(|| StoreError::NotFound {
        kind: "conversation",
        id: conversation_id.to_owned(),
    })?;
    Ok(Batch {
        conversation,
        events,
        turns,
        messages,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

impl Store {
    /// Appends `payloads` to conversation `conversation_id` of `project`, all
    /// stamped `at_ms`, in ONE transaction, and returns the stored events
    /// (seq ascending).
    ///
    /// Reads the materialized conversation (none before its
    /// `conversation.created` event) and its running turn, assigns
    /// `seq = last_seq + 1, …`, runs
    /// [`modelyard_core::conversation::apply`] for each event, inserts the
    /// event rows (payload JSON with the dotted `type`, version
    /// [`EVENT_PAYLOAD_VERSION`]) and writes exactly the changed rows: the
    /// conversation (insert at creation, update after), each turn touched
    /// (insert when started in the batch, update otherwise; a turn's
    /// checkpoint is left as it is) and each new message. An empty `payloads`
    /// writes nothing and returns an empty list.
    ///
    /// Concurrent appends to one conversation serialize (SQLite: the single
    /// writer connection and `BEGIN IMMEDIATE`; PostgreSQL: a row lock on the
    /// conversation), so seqs never repeat or skip.
    ///
    /// # Errors
    ///
    /// In every error case nothing is written.
    ///
    /// * [`StoreError::Conflict`] when an event does not fit the state
    ///   (`turn.started` while a turn runs, a turn event for a turn that is
    ///   not running, `conversation.created` for an existing conversation —
    ///   of this project or, the ids being global, of another one — or one
    ///   created concurrently);
    /// * [`StoreError::NotFound`] (`kind: "conversation"`) for a first event
    ///   other than `conversation.created`, i.e. no such conversation in this
    ///   project;
    /// * [`StoreError::Duplicate`] when a new turn or message id already
    ///   exists;
    /// * [`StoreError::MissingReference`] when `project` does not exist;
    /// * [`StoreError::InvalidInput`] for a token count above `i64::MAX`;
    /// * [`StoreError::Query`] for other database failures.
    pub async fn append_events(
        &self,
        project: &ProjectId,
        conversation_id: &str,
        payloads: &[EventPayload],
        at_ms: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.append_events_folded(project, conversation_id, payloads, at_ms)
            .await
            .map(|appended| appended.events)
    }

    /// [`Self::append_events`], also returning the conversation record the
    /// fold produced and wrote in the same transaction — what
    /// [`Self::get_conversation`] returns right after the commit — so callers
    /// need not re-read it. An empty `payloads` writes nothing and returns
    /// no events and no record.
    ///
    /// # Errors
    ///
    /// As [`Self::append_events`].
    pub async fn append_events_folded(
        &self,
        project: &ProjectId,
        conversation_id: &str,
        payloads: &[EventPayload],
        at_ms: i64,
    ) -> Result<Appended, StoreError> {
        const OP: &str = "append_events";
        if payloads.is_empty() {
            return Ok(Appended {
                events: Vec::new(),
                conversation: None,
                messages: Vec::new(),
            });
        }
        let payload_texts = payloads
            .iter()
            .map(|p| to_json(p, "event payload"))
            .collect::<Result<Vec<_>, _>>()?;
        let version = i32::try_from(EVENT_PAYLOAD_VERSION).unwrap_or(i32::MAX);
        let err = StoreError::op(OP);
        let decode = decode_err(OP);
        let backend = self.backend();
        let events = on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            if backend == Backend::Postgres {
                sqlx::query(LOCK_CONVERSATION)
                    .bind(project.as_str())
                    .bind(conversation_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            let current: Option<ConversationRow> = sqlx::query_as(SELECT_CONVERSATION)
                .bind(project.as_str())
                .bind(conversation_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&err)?;
            let current = current
                .map(ConversationRow::into_record)
                .transpose()
                .map_err(&decode)?;
            let running_id = current.as_ref().and_then(|c| c.running_turn_id.clone());
            let running: Option<TurnRow> = match running_id {
                Some(turn_id) => sqlx::query_as(SELECT_TURN)
                    .bind(project.as_str())
                    .bind(turn_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(&err)?,
                None => None,
            };
            let running = running
                .map(TurnRow::into_record)
                .transpose()
                .map_err(&decode)?;
            let existed = current.is_some();
            let batch = fold_batch(current, running, conversation_id, payloads, at_ms)?;

            // The conversation first: the other rows reference it.
            let row = ConversationRow::from_record(&batch.conversation)?;
            let sql = if existed {
                UPDATE_CONVERSATION
            } else {
                INSERT_CONVERSATION
            };
            bind_conversation!(sqlx::query(sql), project, row)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict {
                            reason: format!("conversation {conversation_id} already exists"),
                        }
                    } else {
                        err(e)
                    }
                })?;
            for (event, payload) in batch.events.iter().zip(&payload_texts) {
                sqlx::query(INSERT_EVENT)
                    .bind(project.as_str())
                    .bind(conversation_id)
                    .bind(event.seq)
                    .bind(event.at_ms)
                    .bind(event.payload.event_type())
                    .bind(version)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::Conflict {
                                reason: format!(
                                    "event {} of conversation {conversation_id} already exists",
                                    event.seq
                                ),
                            }
                        } else {
                            err(e)
                        }
                    })?;
            }
            for change in batch.turns.iter().filter(|t| t.changed) {
                let row = TurnRow::from_record(&change.turn)?;
                let sql = if change.new { INSERT_TURN } else { UPDATE_TURN };
                bind_turn!(sqlx::query(sql), project, row)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            for message in &batch.messages {
                let row = MessageRow::from_record(message)?;
                sqlx::query(INSERT_MESSAGE)
                    .bind(project.as_str())
                    .bind(&row.id)
                    .bind(&row.conversation_id)
                    .bind(&row.turn_id)
                    .bind(&row.role)
                    .bind(&row.content_json)
                    .bind(&row.parts_json)
                    .bind(&row.model_id)
                    .bind(&row.usage_json)
                    .bind(&row.finish_reason)
                    .bind(row.seq)
                    .bind(row.created_at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            tx.commit().await.map_err(&err)?;
            (batch.events, batch.conversation, batch.messages)
        });
        let (events, conversation, messages) = events;
        tracing::trace!(
            project = %project,
            conversation_id,
            events = events.len(),
            last_seq = events.last().map_or(0, |e| e.seq),
            "appended conversation events"
        );
        Ok(Appended {
            events,
            conversation: Some(conversation),
            messages,
        })
    }
}
