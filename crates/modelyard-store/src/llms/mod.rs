//! LLM configs: reusable, non-secret model + system prompt + provider
//! options (docs/design.md#llm-configs), in the `llm_configs` table.
//!
//! A config's `source` is `user` (created through the API; can be updated
//! and soft-deleted) or `system-default` (materialized from a server preset
//! by [`Store::ensure_system_default`], once per `(preset_name,
//! preset_version)`; never updated or deleted, so turns that recorded its id
//! keep pointing at what they used).
//!
//! Deleting a config that a conversation still names (as `llm_id` or in
//! `llm_overrides`) is refused with [`StoreError::InUse`], checked in the
//! deleting transaction.
//!
//! Versions (`llm_config_versions`, migration 0018): a config starts at
//! version 1 and every update is the next version, written with it in one
//! transaction; every version stays readable ([`Store::get_llm_config_version`],
//! [`Store::list_llm_config_versions`]), also after the config is deleted,
//! so the snapshot a session recorded can be traced to its config.

use modelyard_core::llm_config::{LlmSource, ProviderOptions};

use crate::favorites::begin_sql;
use crate::{Backend, ProjectId, Store, StoreError};

#[macro_use]
mod sql;
#[cfg(test)]
mod tests;

use sql::{
    check_fields, decode, not_found, options_json, referrer_pattern, referrers,
    system_default_conflict, LlmRow, VersionRow, DELETE_LLM, INSERT_LLM, INSERT_PRESET,
    INSERT_VERSION, LOCK_LLM_PG, LOCK_LLM_SQLITE, SELECT_LATEST_PRESET, SELECT_LLM, SELECT_PRESET,
    SELECT_REFERRERS, SELECT_VERSION, UPDATE_LLM,
};

/// Page size of [`Store::list_llm_configs`] when [`LlmConfigFilter::limit`] is 0.
pub const DEFAULT_LLM_CONFIG_LIMIT: u32 = 50;

/// Largest page of [`Store::list_llm_configs`].
pub const MAX_LLM_CONFIG_LIMIT: u32 = 200;

/// What a config says: everything a caller chooses.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LlmConfigFields {
    /// Name shown in pickers.
    pub display_name: String,
    /// Model id (`provider/model`).
    pub model: String,
    /// System prompt, sent as the first message.
    pub system_prompt: Option<String>,
    /// Provider options (stored as camelCase JSON).
    pub provider_options: ProviderOptions,
    /// A configured provider's base URL (never a credential).
    pub base_url: Option<String>,
}

/// A stored config.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfigRow {
    /// Id (UUIDv7 text chosen by the caller).
    pub id: String,
    /// `system-default` or `user`.
    pub source: LlmSource,
    /// What the config says.
    pub fields: LlmConfigFields,
    /// The preset it was materialized from (system defaults only).
    pub preset_name: Option<String>,
    /// The preset's version (system defaults only).
    pub preset_version: Option<i64>,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Last update time, unix ms.
    pub updated_at_ms: i64,
    /// Soft-deleted.
    pub deleted: bool,
    /// The current version: 1 at creation, one more with every update.
    pub version: i64,
}

/// One version of a config: what it said from `created_at_ms` until the
/// next version.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfigVersionRow {
    /// The config's id.
    pub llm_id: String,
    /// The version, from 1.
    pub version: i64,
    /// What the config said.
    pub fields: LlmConfigFields,
    /// When this version was written, unix ms.
    pub created_at_ms: i64,
}

/// Paging of [`Store::list_llm_configs`].
#[derive(Clone, Debug, Default)]
pub struct LlmConfigFilter {
    /// Page size: 0 means [`DEFAULT_LLM_CONFIG_LIMIT`]; capped at
    /// [`MAX_LLM_CONFIG_LIMIT`].
    pub limit: u32,
    /// Cursor: `(created_at_ms, id)` of the last config of the previous page.
    pub before: Option<(i64, String)>,
}

impl LlmConfigFilter {
    /// The page size actually used.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_LLM_CONFIG_LIMIT,
            n => n.min(MAX_LLM_CONFIG_LIMIT),
        }
    }
}

// ---------------------------------------------------------------- API

impl Store {
    /// Creates a `user` config `id` of `project` at `now_ms` and returns it.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty model or display name;
    /// [`StoreError::Duplicate`] when `id` exists; [`StoreError::MissingReference`]
    /// for an unknown project; [`StoreError::Query`] otherwise.
    pub async fn create_llm_config(
        &self,
        project: &ProjectId,
        id: &str,
        fields: &LlmConfigFields,
        now_ms: i64,
    ) -> Result<LlmConfigRow, StoreError> {
        const OP: &str = "create_llm_config";
        check_fields(fields)?;
        let options = options_json(fields)?;
        let err = StoreError::op(OP);
        let backend = self.backend();
        on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            sqlx::query(INSERT_LLM)
                .bind(project.as_str())
                .bind(id)
                .bind(LlmSource::User.as_str())
                .bind(&fields.display_name)
                .bind(&fields.model)
                .bind(&fields.system_prompt)
                .bind(&options)
                .bind(&fields.base_url)
                .bind(None::<String>)
                .bind(None::<i64>)
                .bind(now_ms)
                .bind(false)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            sqlx::query(INSERT_VERSION)
                .bind(project.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
        });
        Ok(LlmConfigRow {
            id: id.to_owned(),
            source: LlmSource::User,
            fields: fields.clone(),
            preset_name: None,
            preset_version: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            deleted: false,
            version: 1,
        })
    }

    /// Config `id` of `project` (soft-deleted ones too, with `deleted:
    /// true`); `None` if there is none in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_llm_config(
        &self,
        project: &ProjectId,
        id: &str,
    ) -> Result<Option<LlmConfigRow>, StoreError> {
        const OP: &str = "get_llm_config";
        let row: Option<LlmRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_LLM)
                .bind(project.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        row.map(LlmRow::into_row).transpose().map_err(decode(OP))
    }

    /// Version `version` of config `id` of `project` (also of a deleted
    /// config); `None` if there is no such version in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_llm_config_version(
        &self,
        project: &ProjectId,
        id: &str,
        version: i64,
    ) -> Result<Option<LlmConfigVersionRow>, StoreError> {
        const OP: &str = "get_llm_config_version";
        let row: Option<VersionRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_VERSION)
                .bind(project.as_str())
                .bind(id)
                .bind(version)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        row.map(VersionRow::into_row)
            .transpose()
            .map_err(decode(OP))
    }

    /// The versions of config `id` of `project` (also of a deleted config),
    /// newest first, those below `before` when it is set, at most `limit`
    /// (0 means [`DEFAULT_LLM_CONFIG_LIMIT`]; capped at
    /// [`MAX_LLM_CONFIG_LIMIT`]). Empty when there is no such config.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_llm_config_versions(
        &self,
        project: &ProjectId,
        id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LlmConfigVersionRow>, StoreError> {
        const OP: &str = "list_llm_config_versions";
        let limit = i64::from(
            LlmConfigFilter {
                limit,
                before: None,
            }
            .effective_limit(),
        );
        let sql = concat!(
            "SELECT ",
            version_columns!(),
            " FROM llm_config_versions WHERE project_id = $1 AND llm_id = $2 AND version < $3 \
             ORDER BY version DESC LIMIT $4"
        );
        let rows: Vec<VersionRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(sql)
                .bind(project.as_str())
                .bind(id)
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(VersionRow::into_row)
            .collect::<Result<_, _>>()
            .map_err(decode(OP))
    }

    /// Configs of `project` that are not deleted, newest first (`created_at_ms`,
    /// then id, descending), one page of [`LlmConfigFilter::effective_limit`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_llm_configs(
        &self,
        project: &ProjectId,
        filter: &LlmConfigFilter,
    ) -> Result<Vec<LlmConfigRow>, StoreError> {
        const OP: &str = "list_llm_configs";
        let mut sql = concat!(
            "SELECT ",
            llm_columns!(),
            " FROM llm_configs WHERE project_id = $1 AND NOT deleted"
        )
        .to_owned();
        if filter.before.is_some() {
            sql.push_str(
                " AND (created_at_ms, id) < ($2, $3) ORDER BY created_at_ms DESC, id DESC LIMIT $4",
            );
        } else {
            sql.push_str(" ORDER BY created_at_ms DESC, id DESC LIMIT $2");
        }
        let limit = i64::from(filter.effective_limit());
        let rows: Vec<LlmRow> = on_pool!(self, reader, |pool| {
            let mut query = sqlx::query_as(&sql).bind(project.as_str());
            if let Some((created_at_ms, id)) = &filter.before {
                query = query.bind(*created_at_ms).bind(id.as_str());
            }
            query
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(LlmRow::into_row)
            .collect::<Result<_, _>>()
            .map_err(decode(OP))
    }

    /// Replaces what `user` config `id` of `project` says, at `now_ms`, as
    /// its next version (written in the same transaction), and returns it.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] (`kind: "LLM config"`) when there is no such
    /// config (or it is deleted); [`StoreError::Conflict`] for a system
    /// default; [`StoreError::InvalidInput`] for an empty model or display
    /// name; [`StoreError::Query`] otherwise. Nothing is written on error.
    pub async fn update_llm_config(
        &self,
        project: &ProjectId,
        id: &str,
        fields: &LlmConfigFields,
        now_ms: i64,
    ) -> Result<LlmConfigRow, StoreError> {
        const OP: &str = "update_llm_config";
        check_fields(fields)?;
        let options = options_json(fields)?;
        let err = StoreError::op(OP);
        let backend = self.backend();
        let updated = on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            let updated = sqlx::query(UPDATE_LLM)
                .bind(project.as_str())
                .bind(id)
                .bind(&fields.display_name)
                .bind(&fields.model)
                .bind(&fields.system_prompt)
                .bind(&options)
                .bind(&fields.base_url)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(&err)?
                .rows_affected();
            if updated > 0 {
                sqlx::query(INSERT_VERSION)
                    .bind(project.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            tx.commit().await.map_err(&err)?;
            updated
        });
        let row = self
            .get_llm_config_on_writer(project, id, OP)
            .await?
            .filter(|row| !row.deleted)
            .ok_or_else(|| not_found(id))?;
        if updated == 0 {
            return Err(if row.source == LlmSource::SystemDefault {
                system_default_conflict(id)
            } else {
                not_found(id)
            });
        }
        Ok(row)
    }

    /// Soft-deletes `user` config `id` of `project` at `now_ms`, unless a
    /// conversation that is not deleted still names it (checked in the same
    /// transaction).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is no such config (or it is
    /// deleted already); [`StoreError::Conflict`] for a system default;
    /// [`StoreError::InUse`] with the referring conversation ids;
    /// [`StoreError::Query`] otherwise. Nothing is written on error.
    pub async fn delete_llm_config(
        &self,
        project: &ProjectId,
        id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        const OP: &str = "delete_llm_config";
        let err = StoreError::op(OP);
        let backend = self.backend();
        let lock = match backend {
            Backend::Sqlite => LOCK_LLM_SQLITE,
            Backend::Postgres => LOCK_LLM_PG,
        };
        let pattern = referrer_pattern(id);
        on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            let source: Option<String> = sqlx::query_scalar(lock)
                .bind(project.as_str())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&err)?;
            match source.as_deref().and_then(LlmSource::parse) {
                None => return Err(not_found(id)),
                Some(LlmSource::SystemDefault) => return Err(system_default_conflict(id)),
                Some(LlmSource::User) => {}
            }
            let candidates: Vec<(String, Option<String>, String)> =
                sqlx::query_as(SELECT_REFERRERS)
                    .bind(project.as_str())
                    .bind(id)
                    .bind(&pattern)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(&err)?;
            let referrers = referrers(id, candidates);
            if !referrers.is_empty() {
                return Err(StoreError::InUse {
                    kind: "LLM config",
                    id: id.to_owned(),
                    referrers,
                });
            }
            sqlx::query(DELETE_LLM)
                .bind(project.as_str())
                .bind(id)
                .bind(true)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
        });
        tracing::trace!(project = %project, id, "deleted LLM config");
        Ok(())
    }

    /// The system default of preset `preset_name` at `preset_version` in
    /// `project`, created from `fields` (with id `new_id`, at `now_ms`, as
    /// the config's version 1) if it does not exist yet. Once per `(preset_name, preset_version)`: a later
    /// call returns the stored row as it is, whatever `fields` say, and
    /// concurrent first calls create one row (the unique index decides) and
    /// all return it.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an empty preset name, model or display
    /// name; [`StoreError::MissingReference`] for an unknown project;
    /// [`StoreError::Query`] otherwise.
    pub async fn ensure_system_default(
        &self,
        project: &ProjectId,
        preset_name: &str,
        preset_version: i64,
        new_id: &str,
        fields: &LlmConfigFields,
        now_ms: i64,
    ) -> Result<LlmConfigRow, StoreError> {
        const OP: &str = "ensure_system_default";
        check_fields(fields)?;
        if preset_name.is_empty() {
            return Err(StoreError::InvalidInput {
                reason: "empty preset name".to_owned(),
            });
        }
        // Usually it exists: read first, write only the first time.
        let existing: Option<LlmRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_PRESET)
                .bind(project.as_str())
                .bind(preset_name)
                .bind(preset_version)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        if let Some(row) = existing {
            return row.into_row().map_err(decode(OP));
        }
        let options = options_json(fields)?;
        // Insert (with its version 1) and read back in one transaction on
        // the writer: on SQLite the single writer connection orders them, on
        // PostgreSQL a concurrent twin's insert waits for ours to commit and
        // then inserts nothing.
        let err = StoreError::op(OP);
        let backend = self.backend();
        let row: LlmRow = on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            let inserted = sqlx::query(INSERT_PRESET)
                .bind(project.as_str())
                .bind(new_id)
                .bind(&fields.display_name)
                .bind(&fields.model)
                .bind(&fields.system_prompt)
                .bind(&options)
                .bind(&fields.base_url)
                .bind(preset_name)
                .bind(preset_version)
                .bind(now_ms)
                .bind(false)
                .execute(&mut *tx)
                .await
                .map_err(&err)?
                .rows_affected();
            if inserted > 0 {
                sqlx::query(INSERT_VERSION)
                    .bind(project.as_str())
                    .bind(new_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            let row = sqlx::query_as(SELECT_PRESET)
                .bind(project.as_str())
                .bind(preset_name)
                .bind(preset_version)
                .fetch_one(&mut *tx)
                .await
                .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
            if inserted > 0 {
                tracing::info!(project = %project, preset = preset_name, version = preset_version, id = new_id, "materialized system default LLM config");
            }
            row
        });
        row.into_row().map_err(decode(OP))
    }

    /// The system default of preset `preset_name` in `project` with the
    /// highest preset version, if any (deleted or not: system defaults are
    /// never deleted).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn latest_system_default(
        &self,
        project: &ProjectId,
        preset_name: &str,
    ) -> Result<Option<LlmConfigRow>, StoreError> {
        const OP: &str = "latest_system_default";
        let row: Option<LlmRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_LATEST_PRESET)
                .bind(project.as_str())
                .bind(preset_name)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        row.map(LlmRow::into_row).transpose().map_err(decode(OP))
    }

    /// Ids of the conversations of `project` that are not deleted and name
    /// config `id` as their `llm_id` or in their `llm_overrides`, sorted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn config_referrers(
        &self,
        project: &ProjectId,
        id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let pattern = referrer_pattern(id);
        let candidates: Vec<(String, Option<String>, String)> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_REFERRERS)
                .bind(project.as_str())
                .bind(id)
                .bind(&pattern)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("config_referrers"))
        })?;
        Ok(referrers(id, candidates))
    }

    async fn get_llm_config_on_writer(
        &self,
        project: &ProjectId,
        id: &str,
        op: &'static str,
    ) -> Result<Option<LlmConfigRow>, StoreError> {
        let row: Option<LlmRow> = on_pool!(self, writer, |pool| {
            sqlx::query_as(SELECT_LLM)
                .bind(project.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(op))
        })?;
        row.map(LlmRow::into_row).transpose().map_err(decode(op))
    }
}
