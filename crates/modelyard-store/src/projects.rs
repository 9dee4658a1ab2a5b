//! Projects.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{ProjectId, Store, StoreError};

impl Store {
    /// Creates a project named `name` with a fresh UUIDv7 id and returns its
    /// id. The `"default"` project always exists (created by the migrations).
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`] if a project with this name already exists;
    /// [`StoreError::Query`] on other database failures.
    pub async fn create_project(&self, name: &str) -> Result<ProjectId, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now_ms = now_unix_ms();
        on_pool!(self, writer, |pool| {
            sqlx::query("INSERT INTO projects (id, name, created_at_ms) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(name)
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(StoreError::op("create_project"))
        })?;
        Ok(ProjectId::new(id))
    }

    /// Looks a project up by name; `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<ProjectId>, StoreError> {
        let id: Option<String> = on_pool!(self, reader, |pool| {
            sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op("project_by_name"))
        })?;
        Ok(id.map(ProjectId::new))
    }
}

/// Current time in unix milliseconds (0 if the clock is before 1970).
fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
