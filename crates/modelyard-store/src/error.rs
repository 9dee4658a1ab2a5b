//! The error type of the store.

use std::path::PathBuf;

use crate::Backend;

/// Everything that can go wrong in the store.
///
/// The `Display` text of each variant names the failing operation; the
/// underlying driver error is available through [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL could not be understood: unknown scheme (only
    /// `sqlite:`, `postgres://` and `postgresql://` are accepted) or an option
    /// the driver rejects. `url` has any password replaced by `***`.
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given, password redacted.
        url: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The parent directory of the SQLite file did not exist and could not be
    /// created.
    #[error("cannot create database directory `{}`", path.display())]
    CreateDir {
        /// The directory that could not be created.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Opening the connection pool failed (server unreachable, file not
    /// openable, authentication refused, ...).
    #[error("cannot connect to the {backend} database")]
    Connect {
        /// Which backend was being connected.
        backend: Backend,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// Applying the embedded migrations failed (e.g. the database holds a
    /// migration this build does not know, or a migration was modified).
    #[error("cannot apply the {backend} migrations")]
    Migrate {
        /// Which backend was being migrated.
        backend: Backend,
        /// The migrator error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A write violated a unique constraint: a row with the same id (or a
    /// project with the same name) already exists. Nothing of the failing
    /// transaction was written.
    #[error("{op}: a row with the same key already exists")]
    Duplicate {
        /// The store operation that failed, e.g. `"record_sessions"`.
        op: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// A write referenced a row that does not exist in the same project (e.g.
    /// a call whose session is unknown or belongs to another project, or an
    /// unknown project id). Nothing of the failing transaction was written.
    #[error("{op}: references a row that does not exist in this project")]
    MissingReference {
        /// The store operation that failed.
        op: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },

    /// The arguments were rejected before the database was touched (e.g. the
    /// same model id twice in a favorites list, or an empty model id).
    /// Nothing was written.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong with the input, for humans.
        reason: String,
    },

    /// The write does not fit the current state of the row(s) it changes
    /// (e.g. a `turn.started` event while another turn runs, or a
    /// `conversation.created` event for a conversation that exists). Nothing
    /// was written.
    #[error("conflict: {reason}")]
    Conflict {
        /// What conflicts, for humans.
        reason: String,
    },

    /// The row the operation needs does not exist in this project (e.g.
    /// events appended to an unknown conversation). Nothing was written.
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked for: `"conversation"`, `"running turn"`, ...
        kind: &'static str,
        /// Its id.
        id: String,
    },

    /// The row is still referred to by other rows (e.g. an LLM config that
    /// conversations name), so it cannot be deleted. Nothing was written.
    #[error("{kind} `{id}` is in use by {}", referrers.join(", "))]
    InUse {
        /// What was to be deleted: `"LLM config"`, ...
        kind: &'static str,
        /// Its id.
        id: String,
        /// Ids of the rows that refer to it, sorted.
        referrers: Vec<String>,
    },

    /// Any other database error while running a statement.
    #[error("{op}: database query failed")]
    Query {
        /// The store operation that failed.
        op: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Classifies a driver error raised while running statement(s) of `op`.
    pub(crate) fn query(op: &'static str, source: sqlx::Error) -> Self {
        let kind = match &source {
            sqlx::Error::Database(db) => Some(db.kind()),
            _ => None,
        };
        match kind {
            Some(sqlx::error::ErrorKind::UniqueViolation) => StoreError::Duplicate { op, source },
            Some(sqlx::error::ErrorKind::ForeignKeyViolation) => {
                StoreError::MissingReference { op, source }
            }
            _ => StoreError::Query { op, source },
        }
    }

    /// Whether the error says the database is unreachable or busy (closed
    /// or timed-out pool, IO or protocol failure, a lost connection, SQLite
    /// `SQLITE_BUSY` / `SQLITE_LOCKED`, PostgreSQL shutting down or
    /// refusing connections): the same write may succeed later. Errors
    /// about the data itself (conflict, duplicate, not found...) are not.
    pub fn is_unavailable(&self) -> bool {
        let source = match self {
            StoreError::Query { source, .. } | StoreError::Connect { source, .. } => source,
            _ => return false,
        };
        match source {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // SQLite: 5 BUSY, 6 LOCKED, 10 IOERR (extended codes keep
                // the primary code in the low byte).
                let sqlite = code
                    .parse::<i32>()
                    .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10));
                // PostgreSQL: class 08 (connection exception), 57P0x
                // (admin / crash shutdown, cannot connect now), 53
                // (insufficient resources).
                let postgres =
                    code.starts_with("08") || code.starts_with("57P") || code.starts_with("53");
                sqlite || postgres
            }
            _ => false,
        }
    }

    /// Returns a closure for `map_err` that classifies errors of `op`.
    pub(crate) fn op(op: &'static str) -> impl Fn(sqlx::Error) -> Self {
        move |source| Self::query(op, source)
    }
}

/// A database URL fit for errors, logs and `config check`: the password of
/// `scheme://user:password@host/...` and the value of every query parameter
/// whose name contains `password` (libpq's `password`, `sslpassword`) are
/// replaced by `***`. A URL that does not parse has everything between
/// `://` and its last `@` replaced (too much rather than too little).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if let Some(query) = parsed.query().map(redact_query) {
                parsed.set_query(Some(&query));
            }
            parsed.to_string()
        }
        Err(_) => {
            let mut out = url.to_owned();
            if let Some(start) = url.find("://").map(|i| i + 3) {
                if let Some(at) = url[start..].rfind('@') {
                    out = format!("{}***{}", &url[..start], &url[start + at..]);
                }
            }
            match out.split_once('?') {
                Some((base, query)) => format!("{base}?{}", redact_query(query)),
                None => out,
            }
        }
    }
}

/// `a=1&password=x` → `a=1&password=***`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                format!("{name}=***")
            }
            _ => param.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("sqlite:data/x.db"), "sqlite:data/x.db");
        assert_eq!(
            redact_url("postgresql://u:p@ss@h/db"),
            "postgresql://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u:se/cr?et@h/db"),
            "postgres://***@h/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=hunter2&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/db?SSLPassword=x#frag"),
            "postgres://u:***@h/db?SSLPassword=***#frag"
        );
        assert_eq!(
            redact_url("postgres://u:p%40ss@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
