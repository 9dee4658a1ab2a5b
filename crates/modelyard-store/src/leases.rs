//! Turn leases ([cluster] replicas): who runs a turn and until when. See
//! migration `0013_turn_leases.sql`. Every function is one statement.

use crate::{ProjectId, Store, StoreError};

/// A turn's lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnLease {
    /// The turn.
    pub turn_id: String,
    /// The replica that runs it.
    pub owner: String,
    /// Until when the owner holds it, unix ms.
    pub lease_until_ms: i64,
    /// Whether another replica asked the owner to cancel the turn.
    pub cancel_requested: bool,
}

impl Store {
    /// Takes (or takes over) the lease of `turn_id` of `project` for
    /// `owner` until `until_ms`, clearing any cancel request.
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure.
    pub async fn take_turn_lease(
        &self,
        project: &ProjectId,
        turn_id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, writer, |pool| {
            sqlx::query(
                "INSERT INTO turn_leases (turn_id, project_id, owner, lease_until_ms, \
                 cancel_requested) VALUES ($1, $2, $3, $4, 0) \
                 ON CONFLICT (turn_id) DO UPDATE SET owner = excluded.owner, \
                 lease_until_ms = excluded.lease_until_ms, cancel_requested = 0",
            )
            .bind(turn_id)
            .bind(project.as_str())
            .bind(owner)
            .bind(until_ms)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(StoreError::op("take_turn_lease"))
        })
    }

    /// Extends every lease `owner` holds to `until_ms` (one statement) and
    /// returns the turns whose cancel another replica requested.
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure.
    pub async fn renew_turn_leases(
        &self,
        owner: &str,
        until_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        on_pool!(self, writer, |pool| {
            sqlx::query_scalar(
                "UPDATE turn_leases SET lease_until_ms = $1 WHERE owner = $2 \
                 RETURNING CASE WHEN cancel_requested = 1 THEN turn_id ELSE '' END",
            )
            .bind(until_ms)
            .bind(owner)
            .fetch_all(pool)
            .await
            .map(|ids: Vec<String>| ids.into_iter().filter(|id| !id.is_empty()).collect())
            .map_err(StoreError::op("renew_turn_leases"))
        })
    }

    /// Ends every lease `owner` holds now (a replica starting again under
    /// the same id: its previous process's runs are gone); how many.
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure.
    pub async fn expire_turn_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        on_pool!(self, writer, |pool| {
            sqlx::query("UPDATE turn_leases SET lease_until_ms = 0 WHERE owner = $1")
                .bind(owner)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::op("expire_turn_leases_of"))
        })
    }

    /// Drops the lease of `turn_id` (its run ended).
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure.
    pub async fn release_turn_lease(&self, turn_id: &str) -> Result<(), StoreError> {
        on_pool!(self, writer, |pool| {
            sqlx::query("DELETE FROM turn_leases WHERE turn_id = $1")
                .bind(turn_id)
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(StoreError::op("release_turn_lease"))
        })
    }

    /// The lease of `turn_id`, if any.
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure.
    pub async fn turn_lease(&self, turn_id: &str) -> Result<Option<TurnLease>, StoreError> {
        let row: Option<(String, String, i64, i32)> = on_pool!(self, reader, |pool| {
            sqlx::query_as(
                "SELECT turn_id, owner, lease_until_ms, CAST(cancel_requested AS INTEGER) \
                 FROM turn_leases WHERE turn_id = $1",
            )
            .bind(turn_id)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::op("turn_lease"))
        })?;
        Ok(
            row.map(|(turn_id, owner, lease_until_ms, cancel)| TurnLease {
                turn_id,
                owner,
                lease_until_ms,
                cancel_requested: cancel != 0,
            }),
        )
    }

    /// Asks the owner of `turn_id` of `project` to cancel it; false when
    /// the turn has no lease (nobody runs it).
    ///
    /// # Errors
    /// [`StoreError::Query`] on database failure.
    pub async fn request_turn_cancel(
        &self,
        project: &ProjectId,
        turn_id: &str,
    ) -> Result<bool, StoreError> {
        on_pool!(self, writer, |pool| {
            sqlx::query(
                "UPDATE turn_leases SET cancel_requested = 1 \
                 WHERE turn_id = $1 AND project_id = $2",
            )
            .bind(turn_id)
            .bind(project.as_str())
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(StoreError::op("request_turn_cancel"))
        })
    }
}
