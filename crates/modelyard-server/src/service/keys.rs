//! API keys of a project: create, list, revoke. Used by `/v1/keys` and by
//! the CLI's `modelyard keys` (which works on the database directly, so the
//! first admin key can be made before the server requires one).

use modelyard_store::{ApiKeyRow, ProjectId, Revoke, Role, Store};

use super::error::{new_id, ServiceError};
use crate::auth::generate_key;
use crate::clock::now_ms;

/// Most characters in a key's name.
pub const MAX_NAME_CHARS: usize = 100;

/// A key just created: its row and the secret, shown only once.
#[derive(Debug)]
pub struct CreatedKey {
    /// The stored key (no secret).
    pub row: ApiKeyRow,
    /// The secret.
    pub secret: String,
}

/// Parses a role: `admin`, `member` or `read`.
///
/// # Errors
/// `invalid_field` naming `role`.
pub fn parse_role(text: &str) -> Result<Role, ServiceError> {
    Role::parse(text).ok_or_else(|| {
        ServiceError::invalid_field(
            "role",
            format!("role must be admin, member or read; got {text:?}"),
        )
    })
}

/// Creates a key of `project` with `role`, named `name` (default
/// `"<role> key"`).
///
/// # Errors
/// `invalid_field` for a name that is empty or over [`MAX_NAME_CHARS`];
/// the store's errors.
pub async fn create(
    store: &Store,
    project: &ProjectId,
    name: Option<String>,
    role: Role,
) -> Result<CreatedKey, ServiceError> {
    let name = name.unwrap_or_else(|| format!("{} key", role.as_str()));
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ServiceError::invalid_field(
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let key = generate_key();
    let row = ApiKeyRow {
        id: new_id(),
        project_id: project.as_str().to_owned(),
        name,
        role,
        prefix: key.prefix,
        created_at_ms: now_ms(),
        revoked_at_ms: None,
    };
    store.create_api_key(project, &row, &key.hash).await?;
    Ok(CreatedKey {
        row,
        secret: key.secret,
    })
}

/// The keys of `project`, newest first; never a secret.
///
/// # Errors
/// The store's errors.
pub async fn list(store: &Store, project: &ProjectId) -> Result<Vec<ApiKeyRow>, ServiceError> {
    Ok(store.list_api_keys(project).await?)
}

/// Key `id` of `project` (revoked ones too).
///
/// # Errors
/// `key_not_found` (404) when the project has no key `id`; the store's
/// errors.
pub async fn find(store: &Store, project: &ProjectId, id: &str) -> Result<ApiKeyRow, ServiceError> {
    store
        .list_api_keys(project)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ServiceError::not_found("key", id, format!("no key {id:?} in this project")))
}

/// Revokes key `id` of `project`.
///
/// # Errors
/// `key_not_found` (no active key `id` in the project); `last_admin_key`
/// (409) for the project's last active admin key; the store's errors.
pub async fn revoke(store: &Store, project: &ProjectId, id: &str) -> Result<(), ServiceError> {
    match store.revoke_api_key(project, id, now_ms()).await? {
        Revoke::Revoked => Ok(()),
        Revoke::NotFound => Err(ServiceError::not_found(
            "key",
            id,
            format!("no active key {id:?} in this project"),
        )),
        Revoke::LastAdmin => Err(ServiceError::conflict(
            "last_admin_key",
            format!(
                "key {id:?} is the last active admin key of this project; create another admin \
                 key first (POST /v1/keys with role admin, or `modelyard keys create --role \
                 admin`), then revoke this one"
            ),
        )),
    }
}
