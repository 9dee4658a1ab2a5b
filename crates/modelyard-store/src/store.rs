//! Connecting, migrating and closing.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use crate::error::redact_url;
use crate::{Backend, StoreError};

/// How long SQLite waits on a locked database before failing a statement.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections of the SQLite reader pool.
const SQLITE_READERS: u32 = 4;
/// Connections of the PostgreSQL pool.
const POSTGRES_CONNECTIONS: u32 = 8;
/// How long to wait for a free pooled connection (which includes opening a
/// new one): short, so that requests fail fast while the database is down
/// or locked instead of queueing behind a 30 s pool timeout. A healthy
/// statement holds a connection for milliseconds.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Handle to the Modelyard database (SQLite or PostgreSQL).
///
/// Cheap to clone (clones share the connection pools). Create it with
/// [`Store::connect`]; release it with [`Store::close`].
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Inner,
}

/// The pools of one backend.
#[derive(Clone, Debug)]
pub(crate) enum Inner {
    Sqlite(SqlitePools),
    Postgres(PgPool),
}

/// SQLite pools: all writes go through `writer` (one connection, so writers
/// never contend for the lock), reads through `reader`. For an in-memory
/// database both are the same single-connection pool.
#[derive(Clone, Debug)]
pub(crate) struct SqlitePools {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
}

impl Store {
    /// Connects to the database named by `url`, applies the embedded
    /// migrations of its backend, and returns the store.
    ///
    /// Accepted URLs: `sqlite:PATH`, `sqlite://PATH`, `sqlite::memory:` (with
    /// optional `?` parameters understood by sqlx), `postgres://...` and
    /// `postgresql://...`. For a SQLite file, the file and its parent
    /// directory are created if missing.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidUrl`] for an unknown scheme or a URL the driver
    /// rejects, [`StoreError::CreateDir`] if the SQLite parent directory
    /// cannot be created, [`StoreError::Connect`] if the database cannot be
    /// opened or reached, [`StoreError::Migrate`] if migrations fail.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("sqlite:") {
            let options =
                SqliteConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
            Self::connect_sqlite(url, options).await?.backfilled().await
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
            Self::connect_postgres(options).await?.backfilled().await
        } else {
            Err(invalid(
                "unsupported scheme (expected sqlite:, postgres:// or postgresql://)".to_owned(),
            ))
        }
    }

    /// Runs the data backfills the migrations need (rows written before
    /// them that SQL alone cannot fill): see
    /// [`Store::backfill_turn_tool_facts`].
    async fn backfilled(self) -> Result<Store, StoreError> {
        let filled = self.backfill_turn_tool_facts().await?;
        if filled > 0 {
            tracing::info!(
                turns = filled,
                "filled the tool facts of turns waiting for tool results"
            );
        }
        Ok(self)
    }

    async fn connect_sqlite(url: &str, options: SqliteConnectOptions) -> Result<Store, StoreError> {
        let connect_err = |source| StoreError::Connect {
            backend: Backend::Sqlite,
            source,
        };
        let options = options
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);

        if is_sqlite_memory_url(url) {
            // An in-memory database lives as long as one connection to it is
            // open: keep exactly one, forever, and use it for everything.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            migrate_sqlite(&pool).await?;
            tracing::debug!("connected to in-memory SQLite store");
            let pools = SqlitePools {
                writer: pool.clone(),
                reader: pool,
            };
            return Ok(Store {
                inner: Inner::Sqlite(pools),
            });
        }

        let file = options.get_filename().to_path_buf();
        if file.as_os_str().is_empty() {
            return Err(StoreError::InvalidUrl {
                url: redact_url(url),
                reason: "no database file path".to_owned(),
            });
        }
        create_parent_dir(&file)?;
        // No `test_before_acquire` ping on the SQLite pools: a connection
        // to a local file does not die like a network one, and the ping is
        // a round trip to the connection's worker thread on every query.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(connect_err)?;
        // Migrate before the readers open, so the schema (and WAL mode) is in
        // place; readers refuse writes via `query_only`.
        migrate_sqlite(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(SQLITE_READERS)
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.pragma("query_only", "ON"))
            .await
            .map_err(connect_err)?;
        tracing::debug!(file = %file.display(), "connected to SQLite store");
        Ok(Store {
            inner: Inner::Sqlite(SqlitePools { writer, reader }),
        })
    }

    async fn connect_postgres(options: PgConnectOptions) -> Result<Store, StoreError> {
        let connect_err = |source| StoreError::Connect {
            backend: Backend::Postgres,
            source,
        };
        // Probe with one plain connection first: the pool retries refused
        // connections until its acquire timeout, but an unreachable server or
        // a refused login at startup should fail at once.
        let probe = options.connect().await.map_err(connect_err)?;
        if let Err(error) = probe.close().await {
            tracing::debug!(%error, "closing the PostgreSQL probe connection failed");
        }
        // `test_before_acquire` (the default) pings a pooled connection
        // before handing it out, so connections that died with a server
        // restart are replaced instead of failing the first request after it.
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        POSTGRES_MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: Backend::Postgres,
                source,
            })?;
        tracing::debug!("connected to PostgreSQL store");
        Ok(Store {
            inner: Inner::Postgres(pool),
        })
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        match &self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether the database answers a trivial query within `timeout`
    /// (`SELECT 1` on a reader connection): the store's health.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let query = async {
            on_pool!(self, reader, |pool| {
                sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(pool)
                    .await
                    .is_ok()
            })
        };
        tokio::time::timeout(timeout, query).await.unwrap_or(false)
    }

    /// Closes all pools, waiting for checked-out connections to be returned.
    /// Every clone of this store is closed too; later calls on it fail with
    /// [`StoreError::Query`] (pool closed).
    pub async fn close(&self) {
        match &self.inner {
            Inner::Sqlite(pools) => {
                pools.reader.close().await;
                pools.writer.close().await;
            }
            Inner::Postgres(pool) => pool.close().await,
        }
    }
}

/// Whether a `sqlite:` URL names an in-memory database.
fn is_sqlite_memory_url(url: &str) -> bool {
    let (path, params) = match url.split_once('?') {
        Some((path, params)) => (path, params),
        None => (url, ""),
    };
    path.ends_with(":memory:") || params.split('&').any(|p| p == "mode=memory")
}

/// Creates the parent directory of a SQLite database file if it is missing.
fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            }),
        _ => Ok(()),
    }
}

async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), StoreError> {
    SQLITE_MIGRATOR
        .run(pool)
        .await
        .map_err(|source| StoreError::Migrate {
            backend: Backend::Sqlite,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::is_sqlite_memory_url;

    #[test]
    fn detects_memory_urls() {
        assert!(is_sqlite_memory_url("sqlite::memory:"));
        assert!(is_sqlite_memory_url("sqlite://:memory:"));
        assert!(is_sqlite_memory_url("sqlite://?mode=memory"));
        assert!(is_sqlite_memory_url("sqlite:x.db?mode=memory&cache=shared"));
        assert!(!is_sqlite_memory_url("sqlite:data/x.db"));
        assert!(!is_sqlite_memory_url("sqlite:data/x.db?mode=rwc"));
    }
}
