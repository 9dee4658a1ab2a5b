//! Favorites: the ordered list of model ids a project has pinned.
//!
//! Model ids are stored verbatim, byte for byte: composite ids such as
//! `local/smollm2` or `vllm/meta-llama/Llama-3-8B` (several `/` allowed) as
//! well as legacy bare ids. The store never interprets them: it neither checks
//! that the model exists nor filters by provider availability (favorites of an
//! offline provider are hidden by the server, never deleted here).
//!
//! Positions of one project are always `0..n`, contiguous. Every write runs in
//! one transaction that first takes the project's favorites lock (see
//! `begin_favorites_tx!`), so concurrent writers of the same project are
//! serialized and never compute the same position.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::{Backend, ProjectId, Store, StoreError};

/// A favorite as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FavoriteRow {
    /// The model id, exactly as given when it was added.
    pub model_id: String,
    /// 0-based position in the project's list; the positions of a project are
    /// always contiguous (`0..n`).
    pub position: i64,
    /// When the model was first favorited, unix milliseconds (the `now_ms` of
    /// the call that added it; kept across reorders by
    /// [`Store::replace_favorites`]).
    pub created_at_ms: i64,
}

/// The favorites of project `$1`, in order. `position` is INTEGER (INT4 on
/// PostgreSQL), widened so it decodes as `i64` on both backends.
const SELECT_FAVORITES: &str = "SELECT model_id, CAST(position AS BIGINT), created_at_ms \
     FROM favorites WHERE project_id = $1 ORDER BY position ASC";

/// Appends `$2` to the favorites of project `$1` (created at `$3`), unless it
/// is already there (then affects no row).
const APPEND_FAVORITE: &str = "INSERT INTO favorites \
     (project_id, model_id, position, created_at_ms) \
     SELECT $1, $2, COALESCE(MAX(position) + 1, 0), $3 FROM favorites WHERE project_id = $1 \
     ON CONFLICT (project_id, model_id) DO NOTHING";

const INSERT_FAVORITE: &str = "INSERT INTO favorites \
     (project_id, model_id, position, created_at_ms) VALUES ($1, $2, $3, $4)";

/// Statement opening a favorites write transaction. Backend-specific: on
/// SQLite `BEGIN IMMEDIATE` takes the database write lock up front (the
/// single writer connection already serializes this process; this also covers
/// another process on the same file), on PostgreSQL a plain `BEGIN` followed
/// by [`PROJECT_LOCK_SQL`].
pub(crate) fn begin_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    }
}

/// PostgreSQL only (SQLite has no row locks; see [`begin_sql`]): locks the
/// project's row so favorites writers of one project run one after the other.
/// `FOR NO KEY UPDATE` rather than `FOR UPDATE` so the lock does not block the
/// `FOR KEY SHARE` taken by foreign-key checks, i.e. calls and sessions of the
/// project are recorded meanwhile. No row (unknown project) takes no lock; the
/// writes then fail on the foreign key.
const PROJECT_LOCK_SQL: &str = "SELECT id FROM projects WHERE id = $1 FOR NO KEY UPDATE";

/// Opens a favorites write transaction on `$pool` (a writer pool bound by
/// `on_pool!`) holding the favorites lock of `$project`; evaluates to the
/// transaction. Errors are mapped with `$err` and returned with `?`.
macro_rules! begin_favorites_tx {
    ($store:expr, $pool:expr, $project:expr, $err:expr) => {{
        let backend = $store.backend();
        let mut tx = $pool.begin_with(begin_sql(backend)).await.map_err($err)?;
        if backend == Backend::Postgres {
            sqlx::query(PROJECT_LOCK_SQL)
                .bind($project.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err($err)?;
        }
        tx
    }};
}

/// Raw shape of a [`SELECT_FAVORITES`] row.
type FavoriteRecord = (String, i64, i64);

fn to_rows(records: Vec<FavoriteRecord>) -> Vec<FavoriteRow> {
    records
        .into_iter()
        .map(|(model_id, position, created_at_ms)| FavoriteRow {
            model_id,
            position,
            created_at_ms,
        })
        .collect()
}

/// Rejects model ids that cannot be stored alike on both backends: the empty
/// string, and ids holding a NUL character (PostgreSQL text cannot).
fn check_model_id(model_id: &str) -> Result<(), StoreError> {
    let reason = if model_id.is_empty() {
        "empty model id".to_owned()
    } else if model_id.contains('\0') {
        format!("model id {model_id:?} contains a NUL character")
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidInput { reason })
}

impl Store {
    /// Favorites of the project in order (position ascending, positions
    /// `0..n`). Empty if the project has none or does not exist.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_favorites(
        &self,
        project: &ProjectId,
    ) -> Result<Vec<FavoriteRow>, StoreError> {
        let records: Vec<FavoriteRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_FAVORITES)
                .bind(project.as_str())
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("list_favorites"))
        })?;
        Ok(to_rows(records))
    }

    /// Replaces the whole ordered list of the project by `model_ids`, in ONE
    /// transaction, and returns the new list (as
    /// [`list_favorites`](Store::list_favorites) would). Positions become
    /// `0..model_ids.len()` in the given order. Ids that were already
    /// favorites keep their `created_at_ms`; new ones get `now_ms`. Ids not in
    /// `model_ids` are removed. An empty slice clears the list.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] if `model_ids` holds the same id twice, an
    /// empty id or an id with a NUL character (checked before the database is
    /// touched); [`StoreError::MissingReference`] if `project` does not exist
    /// (and `model_ids` is not empty); [`StoreError::Query`] on other database
    /// failures. In every error case the stored list is unchanged.
    pub async fn replace_favorites(
        &self,
        project: &ProjectId,
        model_ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<FavoriteRow>, StoreError> {
        const OP: &str = "replace_favorites";
        let mut seen = HashSet::with_capacity(model_ids.len());
        for model_id in model_ids {
            check_model_id(model_id)?;
            if !seen.insert(model_id.as_str()) {
                return Err(StoreError::InvalidInput {
                    reason: format!("model id {model_id:?} appears more than once"),
                });
            }
        }
        let err = StoreError::op(OP);
        let records: Vec<FavoriteRecord> = on_pool!(self, writer, |pool| {
            let mut tx = begin_favorites_tx!(self, pool, project, &err);
            let created: HashMap<String, i64> = sqlx::query_as(
                "SELECT model_id, created_at_ms FROM favorites WHERE project_id = $1",
            )
            .bind(project.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(&err)?
            .into_iter()
            .collect();
            sqlx::query("DELETE FROM favorites WHERE project_id = $1")
                .bind(project.as_str())
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            for (position, model_id) in (0_i64..).zip(model_ids) {
                sqlx::query(INSERT_FAVORITE)
                    .bind(project.as_str())
                    .bind(model_id)
                    .bind(position)
                    .bind(created.get(model_id).copied().unwrap_or(now_ms))
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            let records = sqlx::query_as(SELECT_FAVORITES)
                .bind(project.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
            records
        });
        tracing::trace!(project = %project, favorites = model_ids.len(), "replaced favorites");
        Ok(to_rows(records))
    }

    /// Appends `model_id` at the end of the project's list (position `n`,
    /// `created_at_ms = now_ms`). If it is already a favorite, nothing changes
    /// (it keeps its position and `created_at_ms`). Returns the list after the
    /// call and whether the id was added.
    ///
    /// Safe under concurrency: concurrent adds of different ids all land, at
    /// distinct contiguous positions; concurrent adds of the same id add it
    /// once (exactly one call returns `true`).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty id or an id with a NUL
    /// character; [`StoreError::MissingReference`] if `project` does not
    /// exist; [`StoreError::Query`] on other database failures.
    pub async fn add_favorite(
        &self,
        project: &ProjectId,
        model_id: &str,
        now_ms: i64,
    ) -> Result<(Vec<FavoriteRow>, bool), StoreError> {
        const OP: &str = "add_favorite";
        check_model_id(model_id)?;
        let err = StoreError::op(OP);
        let (records, added): (Vec<FavoriteRecord>, bool) = on_pool!(self, writer, |pool| {
            let mut tx = begin_favorites_tx!(self, pool, project, &err);
            let inserted = sqlx::query(APPEND_FAVORITE)
                .bind(project.as_str())
                .bind(model_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(&err)?
                .rows_affected();
            let records = sqlx::query_as(SELECT_FAVORITES)
                .bind(project.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
            (records, inserted > 0)
        });
        tracing::trace!(project = %project, model_id, added, "added favorite");
        Ok((to_rows(records), added))
    }

    /// Removes `model_id` from the project's list and closes the gap (the
    /// favorites after it move up by one), in one transaction. Returns whether
    /// it was a favorite; removing an id that is not one (or from an unknown
    /// project) changes nothing and returns `false`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure (nothing is changed then).
    pub async fn remove_favorite(
        &self,
        project: &ProjectId,
        model_id: &str,
    ) -> Result<bool, StoreError> {
        const OP: &str = "remove_favorite";
        let err = StoreError::op(OP);
        let removed: bool = on_pool!(self, writer, |pool| {
            let mut tx = begin_favorites_tx!(self, pool, project, &err);
            let position: Option<i64> = sqlx::query_scalar(
                "DELETE FROM favorites WHERE project_id = $1 AND model_id = $2 \
                 RETURNING CAST(position AS BIGINT)",
            )
            .bind(project.as_str())
            .bind(model_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&err)?;
            if let Some(position) = position {
                sqlx::query(
                    "UPDATE favorites SET position = position - 1 \
                     WHERE project_id = $1 AND position > $2",
                )
                .bind(project.as_str())
                .bind(position)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            }
            tx.commit().await.map_err(&err)?;
            position.is_some()
        });
        tracing::trace!(project = %project, model_id, removed, "removed favorite");
        Ok(removed)
    }
}
