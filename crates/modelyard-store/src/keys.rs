//! API keys: a project's credentials, each with a role. The store keeps a
//! hash of the key (the caller computes it; see the server's `auth` module)
//! and a short prefix, never the key.

use crate::favorites::begin_sql;
use serde::Serialize;

use crate::{ProjectId, Store, StoreError};

/// A key's permissions: `admin` manages keys and LLM configs, `member`
/// uses the API, `read` only reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Read,
    /// Uses the API (chat, conversations, favorites).
    Member,
    /// Manages keys and configs too.
    Admin,
}

impl Role {
    /// `read`, `member` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Read, Role::Member, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A stored key (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRow {
    /// Key id (UUIDv7).
    pub id: String,
    /// Its project.
    pub project_id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Revocation time, unix ms; a revoked key authenticates nothing.
    pub revoked_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct KeyRecord {
    id: String,
    project_id: String,
    name: String,
    role: String,
    prefix: String,
    created_at_ms: i64,
    revoked_at_ms: Option<i64>,
}

impl KeyRecord {
    fn into_row(self) -> Result<ApiKeyRow, StoreError> {
        let role = Role::parse(&self.role).ok_or_else(|| StoreError::Query {
            op: "api_keys",
            source: sqlx::Error::Decode(format!("unknown role {:?}", self.role).into()),
        })?;
        Ok(ApiKeyRow {
            id: self.id,
            project_id: self.project_id,
            name: self.name,
            role,
            prefix: self.prefix,
            created_at_ms: self.created_at_ms,
            revoked_at_ms: self.revoked_at_ms,
        })
    }
}

/// What [`Store::revoke_api_key`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoke {
    /// The key is revoked now.
    Revoked,
    /// The project has no such active key (nothing changed).
    NotFound,
    /// The key is the project's last active admin key (nothing changed).
    LastAdmin,
}

const KEY_COLUMNS: &str = "id, project_id, name, role, prefix, created_at_ms, revoked_at_ms";

impl Store {
    /// Stores a new key of `project` (`key_hash`: hex SHA-256 of the key)
    /// and, in the same transaction, records that keys are required from now
    /// on ([`Store::keys_required`]; never cleared).
    ///
    /// # Errors
    /// [`StoreError::MissingReference`] if the project does not exist;
    /// [`StoreError::Duplicate`] for a repeated id or hash; [`StoreError::Query`].
    pub async fn create_api_key(
        &self,
        project: &ProjectId,
        key: &ApiKeyRow,
        key_hash: &str,
    ) -> Result<(), StoreError> {
        let err = StoreError::op("create_api_key");
        let backend = self.backend();
        on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            sqlx::query(
                "INSERT INTO api_keys (id, project_id, name, role, prefix, key_hash, \
                 created_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
            )
            .bind(&key.id)
            .bind(project.as_str())
            .bind(&key.name)
            .bind(key.role.as_str())
            .bind(&key.prefix)
            .bind(key_hash)
            .bind(key.created_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            sqlx::query(
                "INSERT INTO server_settings (name, value, updated_at_ms) \
                 VALUES ('keys_required', 'true', $1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(key.created_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            tx.commit().await.map_err(&err)
        })
    }

    /// The keys of `project`, newest first, revoked ones included.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn list_api_keys(&self, project: &ProjectId) -> Result<Vec<ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1 \
             ORDER BY created_at_ms DESC, id DESC"
        );
        let rows: Vec<KeyRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(&sql)
                .bind(project.as_str())
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("list_api_keys"))
        })?;
        rows.into_iter().map(KeyRecord::into_row).collect()
    }

    /// Revokes key `id` of `project` at `now_ms`, unless it is the
    /// project's last active admin key ([`Revoke::LastAdmin`]: a project
    /// must keep a way to manage its keys). On PostgreSQL the project's row
    /// is locked first, so two concurrent revokes cannot both pass the check;
    /// on SQLite the single writer serializes them.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn revoke_api_key(
        &self,
        project: &ProjectId,
        id: &str,
        now_ms: i64,
    ) -> Result<Revoke, StoreError> {
        let err = StoreError::op("revoke_api_key");
        // SQLite: `BEGIN IMMEDIATE`, so the read below cannot meet another
        // process's write when it turns into a write (a deferred
        // transaction gets `SQLITE_BUSY` at once there, without waiting).
        let backend = self.backend();
        let lock_project = matches!(self.inner, crate::store::Inner::Postgres(_));
        on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            if lock_project {
                sqlx::query("SELECT id FROM projects WHERE id = $1 FOR UPDATE")
                    .bind(project.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            let role: Option<String> = sqlx::query_scalar(
                "SELECT role FROM api_keys \
                 WHERE project_id = $1 AND id = $2 AND revoked_at_ms IS NULL",
            )
            .bind(project.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(&err)?;
            let Some(role) = role else {
                return Ok(Revoke::NotFound);
            };
            if role == Role::Admin.as_str() {
                let other_admins: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM api_keys WHERE project_id = $1 AND id <> $2 \
                     AND role = 'admin' AND revoked_at_ms IS NULL",
                )
                .bind(project.as_str())
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(&err)?;
                if other_admins == 0 {
                    return Ok(Revoke::LastAdmin);
                }
            }
            sqlx::query(
                "UPDATE api_keys SET revoked_at_ms = $3 \
                 WHERE project_id = $1 AND id = $2 AND revoked_at_ms IS NULL",
            )
            .bind(project.as_str())
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            tx.commit().await.map_err(&err)?;
            Ok(Revoke::Revoked)
        })
    }

    /// Whether API keys are required: true once any key was ever created
    /// (also by another process, such as `modelyard keys create`); a revoke
    /// never turns it off.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn keys_required(&self) -> Result<bool, StoreError> {
        let count: i64 = on_pool!(self, reader, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM server_settings WHERE name = 'keys_required'")
                .fetch_one(pool)
                .await
                .map_err(StoreError::op("keys_required"))
        })?;
        Ok(count > 0)
    }

    /// Ids of the keys revoked at or after `since_ms` (any project): how a
    /// server learns of revokes made by another process.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn api_keys_revoked_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        on_pool!(self, reader, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM api_keys WHERE revoked_at_ms IS NOT NULL AND revoked_at_ms >= $1",
            )
            .bind(since_ms)
            .fetch_all(pool)
            .await
            .map_err(StoreError::op("api_keys_revoked_since"))
        })
    }

    /// Authentication lookup, the one query not scoped by a project: the
    /// active (not revoked) key whose hash is `key_hash`.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn find_active_api_key(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL"
        );
        let row: Option<KeyRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(&sql)
                .bind(key_hash)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op("find_active_api_key"))
        })?;
        row.map(KeyRecord::into_row).transpose()
    }

    /// How many keys are active across all projects (the server requires
    /// keys once there is one).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn count_active_api_keys(&self) -> Result<i64, StoreError> {
        on_pool!(self, reader, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at_ms IS NULL")
                .fetch_one(pool)
                .await
                .map_err(StoreError::op("count_active_api_keys"))
        })
    }
}
