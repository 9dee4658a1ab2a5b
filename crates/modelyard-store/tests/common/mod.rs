//! Test harness shared by the store's integration tests: every test body
//! runs on SQLite (a fresh temp file) and, when `MODELYARD_TEST_POSTGRES_URL`
//! is set, also on PostgreSQL (a fresh database on that server, dropped
//! afterwards).

// Each test binary uses its own subset of the harness.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::path::PathBuf;
use std::str::FromStr;

use modelyard_store::{Backend, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

pub const PG_ENV: &str = "MODELYARD_TEST_POSTGRES_URL";

// ---------------------------------------------------------------- harness

/// One fresh database for one test.
pub struct TestDb {
    pub url: String,
    pub store: Store,
    pub cleanup: Cleanup,
}

pub enum Cleanup {
    Sqlite(SqliteFile),
    Postgres(Box<PgDatabase>),
}

/// Removes the SQLite file (and its WAL side files) when dropped, so files
/// are removed even when a test fails.
pub struct SqliteFile(PathBuf);

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Drops the PostgreSQL test database when dropped (best effort), so it is
/// removed even when a test fails. Runs on its own thread and runtime because
/// `Drop` cannot await.
pub struct PgDatabase {
    admin: PgConnectOptions,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let _ = conn.execute(sql.as_str()).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

impl TestDb {
    /// Closes the store, then removes the database (best effort).
    pub async fn finish(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Sqlite(file) => drop(file),
            Cleanup::Postgres(database) => drop(database),
        }
    }
}

/// The databases every test body runs on: SQLite always, PostgreSQL when
/// `MODELYARD_TEST_POSTGRES_URL` is set.
pub async fn test_dbs() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db().await];
    if let Ok(url) = std::env::var(PG_ENV) {
        if !url.is_empty() {
            dbs.push(postgres_db(&url).await);
        }
    }
    let backends: Vec<Backend> = dbs.iter().map(|db| db.store.backend()).collect();
    eprintln!("running on {backends:?}");
    dbs
}

/// An empty database (no migration applied) for every backend of
/// [`test_dbs`]: its backend, URL and cleanup guard.
pub async fn empty_dbs() -> Vec<(Backend, String, Cleanup)> {
    let dir = std::env::temp_dir().join(format!("modelyard-store-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("store.db");
    let url = format!("sqlite:{}", file.display());
    let mut dbs = vec![(Backend::Sqlite, url, Cleanup::Sqlite(SqliteFile(file)))];
    if let Ok(server_url) = std::env::var(PG_ENV) {
        if !server_url.is_empty() {
            let admin = PgConnectOptions::from_str(&server_url)
                .expect("parse MODELYARD_TEST_POSTGRES_URL")
                .database("postgres");
            let name = format!("modelyard_t_{}", uuid::Uuid::now_v7().simple());
            let mut conn = admin.connect().await.expect("connect postgres admin db");
            conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await
                .expect("create test database");
            let _ = conn.close().await;
            let url = with_database(&server_url, &name);
            dbs.push((
                Backend::Postgres,
                url,
                Cleanup::Postgres(Box::new(PgDatabase { admin, name })),
            ));
        }
    }
    dbs
}

pub async fn sqlite_db() -> TestDb {
    // A not-yet-existing directory, to exercise parent directory creation.
    let dir = std::env::temp_dir().join(format!("modelyard-store-{}", uuid::Uuid::now_v7()));
    let file = dir.join("store.db");
    let guard = SqliteFile(file.clone());
    let url = format!("sqlite:{}", file.display());
    let store = Store::connect(&url).await.expect("connect sqlite");
    assert_eq!(store.backend(), Backend::Sqlite);
    TestDb {
        url,
        store,
        cleanup: Cleanup::Sqlite(guard),
    }
}

pub async fn postgres_db(server_url: &str) -> TestDb {
    let admin = PgConnectOptions::from_str(server_url)
        .expect("parse MODELYARD_TEST_POSTGRES_URL")
        .database("postgres");
    let database = format!("modelyard_t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = admin.connect().await.expect("connect postgres admin db");
    conn.execute(format!("CREATE DATABASE \"{database}\"").as_str())
        .await
        .expect("create test database");
    let _ = conn.close().await;
    let guard = PgDatabase {
        admin,
        name: database,
    };

    let url = with_database(server_url, &guard.name);
    let store = Store::connect(&url).await.expect("connect postgres store");
    assert_eq!(store.backend(), Backend::Postgres);
    TestDb {
        url,
        store,
        cleanup: Cleanup::Postgres(Box::new(guard)),
    }
}

/// `url` with its database path replaced by `database` (query kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (url, None),
    };
    let authority_start = main.find("://").map_or(0, |i| i + 3);
    let base = match main[authority_start..].find('/') {
        Some(slash) => &main[..authority_start + slash],
        None => main,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}
