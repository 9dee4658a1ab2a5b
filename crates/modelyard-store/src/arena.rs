//! Arena picks (`arena_picks`, migration 0019): which model's answer the
//! user chose in an arena run, and against which others — the preference
//! data behind per-model win counts ([`Store::arena_stats`]).

use std::collections::BTreeMap;

use crate::{ProjectId, Store, StoreError};

/// A pick to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArenaPick {
    /// The run's id (its `arena` LLM session's); one pick per run.
    pub run_id: String,
    /// The conversation the run answered a turn of (`None`: a standalone
    /// run, `POST /v1/arena`).
    pub conversation_id: Option<String>,
    /// The chosen model id, as the run named it.
    pub model: String,
    /// The run's other models the user compared it with.
    pub others: Vec<String>,
    /// When it was picked, unix ms.
    pub created_at_ms: i64,
}

/// One model's record over a project's picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaModelStats {
    /// The model id.
    pub model: String,
    /// Picks that chose it.
    pub wins: u64,
    /// Picks where it was chosen or among the others.
    pub appearances: u64,
}

const INSERT_PICK: &str = "INSERT INTO arena_picks \
     (run_id, project_id, conversation_id, model, others_json, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id) DO NOTHING";

const SELECT_PICKS: &str = "SELECT model, others_json FROM arena_picks \
     WHERE project_id = $1 AND created_at_ms >= $2";

const SELECT_PICK: &str = "SELECT model FROM arena_picks WHERE project_id = $1 AND run_id = $2";

impl Store {
    /// Records `pick` for `project`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the run already has a pick;
    /// [`StoreError::MissingReference`] for an unknown project;
    /// [`StoreError::Query`] on database failure.
    pub async fn insert_arena_pick(
        &self,
        project: &ProjectId,
        pick: &NewArenaPick,
    ) -> Result<(), StoreError> {
        const OP: &str = "insert_arena_pick";
        let others = serde_json::to_string(&pick.others).map_err(|e| StoreError::InvalidInput {
            reason: format!("arena pick others cannot be serialized: {e}"),
        })?;
        let inserted: u64 = on_pool!(self, writer, |pool| {
            sqlx::query(INSERT_PICK)
                .bind(&pick.run_id)
                .bind(project.as_str())
                .bind(&pick.conversation_id)
                .bind(&pick.model)
                .bind(&others)
                .bind(pick.created_at_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(|e| StoreError::query(OP, e))
        })?;
        if inserted == 0 {
            return Err(StoreError::Conflict {
                reason: format!("arena run {} already has a pick", pick.run_id),
            });
        }
        Ok(())
    }

    /// The model picked in run `run_id` of `project`, if it has a pick.
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure.
    pub async fn arena_pick(
        &self,
        project: &ProjectId,
        run_id: &str,
    ) -> Result<Option<String>, StoreError> {
        on_pool!(self, reader, |pool| {
            sqlx::query_scalar(SELECT_PICK)
                .bind(project.as_str())
                .bind(run_id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op("arena_pick"))
        })
    }

    /// Per-model wins and appearances over `project`'s picks made at or
    /// after `since_ms` (unix ms; 0 for all), most wins first (then most
    /// appearances, then model id).
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure or a stored `others` list
    /// that does not parse.
    pub async fn arena_stats(
        &self,
        project: &ProjectId,
        since_ms: i64,
    ) -> Result<Vec<ArenaModelStats>, StoreError> {
        const OP: &str = "arena_stats";
        let rows: Vec<(String, String)> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_PICKS)
                .bind(project.as_str())
                .bind(since_ms)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        let mut by_model: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (model, others_json) in rows {
            let others: Vec<String> =
                serde_json::from_str(&others_json).map_err(|e| StoreError::Query {
                    op: OP,
                    source: sqlx::Error::Decode(Box::new(e)),
                })?;
            let entry = by_model.entry(model.clone()).or_default();
            entry.0 += 1;
            entry.1 += 1;
            for other in others.into_iter().filter(|o| *o != model) {
                by_model.entry(other).or_default().1 += 1;
            }
        }
        let mut stats: Vec<ArenaModelStats> = by_model
            .into_iter()
            .map(|(model, (wins, appearances))| ArenaModelStats {
                model,
                wins,
                appearances,
            })
            .collect();
        stats.sort_by(|a, b| {
            b.wins
                .cmp(&a.wins)
                .then(b.appearances.cmp(&a.appearances))
                .then(a.model.cmp(&b.model))
        });
        Ok(stats)
    }
}
