//! `[cluster]`: several replicas on one PostgreSQL database.

use super::raw::RawCluster;
use super::validate::error_in;
use super::{ConfigError, StorageConfig};

/// `[cluster]`: this server is one of several replicas on one PostgreSQL
/// database. Running turns are owned by lease (docs/design.md#replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This replica's name (`replica_id`, default `<host name>-<pid>`):
    /// the owner recorded on the turns it runs.
    pub replica_id: String,
    /// NATS server for live events between replicas (`nats_url`,
    /// `MODELYARD_CLUSTER_NATS_URL`): token deltas of a turn reach
    /// subscribers on every replica, persisted events are announced. Without
    /// it (or while it is down) replicas read each other's persisted events
    /// from the store.
    pub nats_url: Option<String>,
    /// How long a turn's lease lasts without renewal, ms (`turn_lease_ms`,
    /// default 10 000, 1 000..=600 000); the owner renews it every third
    /// of that (at most every second). A turn whose lease ran out is
    /// closed as interrupted by any replica's sweeper.
    pub turn_lease_ms: u64,
}

/// `[cluster]`, when present. A cluster needs PostgreSQL: SQLite is one
/// process's database.
pub(super) fn cluster(
    raw: Option<RawCluster>,
    storage: &StorageConfig,
    source_name: &str,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let err = error_in(source_name);
    if !storage.url.starts_with("postgres") {
        return Err(err(
            "cluster".into(),
            "replicas share one PostgreSQL database: set storage.url to postgres://… (SQLite \
             serves one process)"
                .into(),
        ));
    }
    let turn_lease_ms = raw.turn_lease_ms.unwrap_or(10_000);
    if !(1_000..=600_000).contains(&turn_lease_ms) {
        return Err(err(
            "cluster.turn_lease_ms".into(),
            format!("must be between 1000 and 600000, got {turn_lease_ms}"),
        ));
    }
    let replica_id = match raw.replica_id {
        Some(id) if !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control) => id,
        Some(id) => {
            return Err(err(
                "cluster.replica_id".into(),
                format!("{id:?} is not a replica id (1-128 characters, no control characters)"),
            ))
        }
        None => default_replica_id(),
    };
    if let Some(url) = &raw.nats_url {
        if !url.starts_with("nats://") && !url.starts_with("tls://") {
            return Err(err(
                "cluster.nats_url".into(),
                format!("{url:?} is not a NATS URL like nats://127.0.0.1:4222"),
            ));
        }
    }
    Ok(Some(ClusterConfig {
        replica_id,
        nats_url: raw.nats_url,
        turn_lease_ms: turn_lease_ms as u64,
    }))
}

/// `<host name>-<pid>`.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_owned());
    format!("{host}-{}", std::process::id())
}
