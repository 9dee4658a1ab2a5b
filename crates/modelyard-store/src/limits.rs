//! Budgets and rate limits of projects and API keys (`usage_limits`) and
//! their shared counters (`limit_counters`); migration `0015_limits.sql`.
//!
//! A limit's subject is [`LimitSubject`]: a project or one of its keys.
//! Counters are leased in blocks: [`Store::take_limit_block`] grants at most
//! what is left under the limit in one statement (`INSERT … ON CONFLICT DO
//! UPDATE … RETURNING`), so replicas sharing a PostgreSQL database never
//! lease more than the limit between them; [`Store::add_to_limit_counter`]
//! charges what calls spent past their reserve and gives back unused
//! leases.

use modelyard_core::limits::{Limits, Period};

use crate::{ProjectId, Store, StoreError};

/// Whose limits: a project's (all its keys together) or one key's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitSubject {
    /// The project with this id.
    Project(String),
    /// The API key with this id.
    Key(String),
}

impl LimitSubject {
    /// The stored form: `project:<id>` or `key:<id>`.
    pub fn key(&self) -> String {
        // Concatenated, not `format!`: this runs for every limited request.
        let (prefix, id) = match self {
            LimitSubject::Project(id) => ("project:", id),
            LimitSubject::Key(id) => ("key:", id),
        };
        let mut key = String::with_capacity(prefix.len() + id.len());
        key.push_str(prefix);
        key.push_str(id);
        key
    }

    /// `project` or `key`, as messages name it.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitSubject::Project(_) => "project",
            LimitSubject::Key(_) => "key",
        }
    }
}

/// What counts against a limit, per window: the `metric` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitMetric {
    /// Requests admitted in the minute (`requests_per_minute`).
    Requests,
    /// Tokens reserved and spent in the minute (`tokens_per_minute`).
    Tokens,
    /// Tokens reserved and spent in the budget's period (`max_tokens`).
    BudgetTokens,
    /// Nano-USD reserved and spent in the budget's period (`max_cost`).
    BudgetCost,
    /// Requests in flight, plus what replicas hold leased for them
    /// (`max_concurrent`), counted per minute window: a replica carries its
    /// requests still in flight into the next window, so what a replica
    /// that died held is let go when its window ends.
    Concurrent,
}

impl LimitMetric {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMetric::Requests => "requests",
            LimitMetric::Tokens => "tokens",
            LimitMetric::BudgetTokens => "budget_tokens",
            LimitMetric::BudgetCost => "budget_cost",
            LimitMetric::Concurrent => "concurrent",
        }
    }
}

/// One counter row: a subject's metric in one fixed window (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// [`LimitSubject::key`].
    pub subject: String,
    /// What it counts.
    pub metric: LimitMetric,
    /// The window's first millisecond.
    pub window_start_ms: i64,
    /// The first millisecond after it; `None` for a `total` budget.
    pub window_end_ms: Option<i64>,
}

/// What [`Store::take_limit_block`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Units granted, `0..=want`.
    pub granted: i64,
    /// Units out of the window after this take (all replicas).
    pub taken: i64,
}

type LimitsRecord = (
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn into_limits((_, cost, tokens, period, rpm, tpm, concurrent): LimitsRecord) -> Limits {
    Limits {
        max_cost_nusd: cost,
        max_tokens: tokens,
        // The column's CHECK admits only the four names.
        period: period.as_deref().and_then(Period::parse),
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        max_concurrent: concurrent,
    }
}

const LIMIT_COLUMNS: &str = "subject, max_cost_nusd, max_tokens, period, requests_per_minute, \
     tokens_per_minute, max_concurrent";

impl Store {
    /// The limits of `subjects` of `project` that have any, as
    /// `(subject, limits)`, in the order given; at most the first two subjects
    /// (a key and its project) are read, those without a row are left out. One query
    /// (the hot path reads a key's and its project's limits together).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn limits_of(
        &self,
        project: &ProjectId,
        subjects: &[LimitSubject],
    ) -> Result<Vec<(LimitSubject, Limits)>, StoreError> {
        let keys: Vec<String> = subjects.iter().map(LimitSubject::key).collect();
        let (first, second) = match keys.as_slice() {
            [] => return Ok(Vec::new()),
            [one] => (one.clone(), one.clone()),
            [one, two, ..] => (one.clone(), two.clone()),
        };
        let sql = format!(
            "SELECT {LIMIT_COLUMNS} FROM usage_limits \
             WHERE project_id = $1 AND subject IN ($2, $3)"
        );
        let rows: Vec<LimitsRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(&sql)
                .bind(project.as_str())
                .bind(&first)
                .bind(&second)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("limits_of"))
        })?;
        Ok(subjects
            .iter()
            .take(2)
            .filter_map(|subject| {
                let key = subject.key();
                rows.iter()
                    .find(|row| row.0 == key)
                    .map(|row| (subject.clone(), into_limits(row.clone())))
            })
            .collect())
    }

    /// Sets the limits of `subject` of `project` at `now_ms` (replacing
    /// them; empty limits delete the row). A key subject must be a key of
    /// `project` (revoked ones included).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a key not in `project`;
    /// [`StoreError::MissingReference`] for an unknown project;
    /// [`StoreError::Query`].
    pub async fn put_limits(
        &self,
        project: &ProjectId,
        subject: &LimitSubject,
        limits: &Limits,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let err = StoreError::op("put_limits");
        if let LimitSubject::Key(id) = subject {
            let found: Option<String> = on_pool!(self, reader, |pool| {
                sqlx::query_scalar("SELECT id FROM api_keys WHERE project_id = $1 AND id = $2")
                    .bind(project.as_str())
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(&err)
            })?;
            if found.is_none() {
                return Err(StoreError::NotFound {
                    kind: "key",
                    id: id.clone(),
                });
            }
        }
        let key = subject.key();
        if limits.is_empty() {
            return on_pool!(self, writer, |pool| {
                sqlx::query("DELETE FROM usage_limits WHERE project_id = $1 AND subject = $2")
                    .bind(project.as_str())
                    .bind(&key)
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .map_err(&err)
            });
        }
        on_pool!(self, writer, |pool| {
            sqlx::query(
                "INSERT INTO usage_limits (subject, project_id, max_cost_nusd, max_tokens, period, \
                 requests_per_minute, tokens_per_minute, max_concurrent, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (subject) DO UPDATE SET max_cost_nusd = excluded.max_cost_nusd, \
                 max_tokens = excluded.max_tokens, period = excluded.period, \
                 requests_per_minute = excluded.requests_per_minute, \
                 tokens_per_minute = excluded.tokens_per_minute, \
                 max_concurrent = excluded.max_concurrent, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&key)
            .bind(project.as_str())
            .bind(limits.max_cost_nusd)
            .bind(limits.max_tokens)
            .bind(limits.period.map(Period::as_str))
            .bind(limits.requests_per_minute)
            .bind(limits.tokens_per_minute)
            .bind(limits.max_concurrent)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(&err)
        })
    }

    /// Leases up to `want` units of counter `key` for one replica, never
    /// past `limit` units out in the window (all replicas together), in one
    /// statement: the row is created at the first take. `want` ≤ 0 grants
    /// nothing and reads the count.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn take_limit_block(
        &self,
        key: &CounterKey,
        want: i64,
        limit: i64,
    ) -> Result<Lease, StoreError> {
        let want = want.max(0);
        let first = modelyard_core::limits::grant(want, 0, limit);
        // Every SET expression reads the row as it was before the update.
        let row: (i64, i64) = on_pool!(self, writer, |pool| {
            sqlx::query_as(
                "INSERT INTO limit_counters (subject, metric, window_start_ms, window_end_ms, \
                 taken, granted) VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (subject, metric, window_start_ms) DO UPDATE SET \
                 granted = CASE WHEN limit_counters.taken + $6 <= $7 THEN $6 \
                   WHEN limit_counters.taken < $7 THEN $7 - limit_counters.taken ELSE 0 END, \
                 taken = CASE WHEN limit_counters.taken + $6 <= $7 THEN limit_counters.taken + $6 \
                   WHEN limit_counters.taken < $7 THEN $7 ELSE limit_counters.taken END \
                 RETURNING granted, taken",
            )
            .bind(&key.subject)
            .bind(key.metric.as_str())
            .bind(key.window_start_ms)
            .bind(key.window_end_ms)
            .bind(first)
            .bind(want)
            .bind(limit)
            .fetch_one(pool)
            .await
            .map_err(StoreError::op("take_limit_block"))
        })?;
        Ok(Lease {
            granted: row.0,
            taken: row.1,
        })
    }

    /// Adds `amount` units to counter `key` whatever the limit (spent past
    /// a reserve), or with a negative `amount` gives leased units back (the
    /// count never goes below 0); the count after.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn add_to_limit_counter(
        &self,
        key: &CounterKey,
        amount: i64,
    ) -> Result<i64, StoreError> {
        let first = amount.max(0);
        on_pool!(self, writer, |pool| {
            sqlx::query_scalar(
                "INSERT INTO limit_counters (subject, metric, window_start_ms, window_end_ms, \
                 taken, granted) VALUES ($1, $2, $3, $4, $5, 0) \
                 ON CONFLICT (subject, metric, window_start_ms) DO UPDATE SET \
                 taken = CASE WHEN limit_counters.taken + $6 < 0 THEN 0 \
                   ELSE limit_counters.taken + $6 END \
                 RETURNING taken",
            )
            .bind(&key.subject)
            .bind(key.metric.as_str())
            .bind(key.window_start_ms)
            .bind(key.window_end_ms)
            .bind(first)
            .bind(amount)
            .fetch_one(pool)
            .await
            .map_err(StoreError::op("add_to_limit_counter"))
        })
    }

    /// The units of counter `key` out in its window (0 before any take).
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn limit_counter(&self, key: &CounterKey) -> Result<i64, StoreError> {
        let taken: Option<i64> = on_pool!(self, reader, |pool| {
            sqlx::query_scalar(
                "SELECT taken FROM limit_counters \
                 WHERE subject = $1 AND metric = $2 AND window_start_ms = $3",
            )
            .bind(&key.subject)
            .bind(key.metric.as_str())
            .bind(key.window_start_ms)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::op("limit_counter"))
        })?;
        Ok(taken.unwrap_or(0))
    }

    /// Deletes the counters of windows that ended before `before_ms`; how
    /// many.
    ///
    /// # Errors
    /// [`StoreError::Query`].
    pub async fn prune_limit_counters(&self, before_ms: i64) -> Result<u64, StoreError> {
        on_pool!(self, writer, |pool| {
            sqlx::query("DELETE FROM limit_counters WHERE window_end_ms < $1")
                .bind(before_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::op("prune_limit_counters"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::LimitSubject;

    #[test]
    fn a_subject_is_stored_as_its_kind_and_id() {
        assert_eq!(LimitSubject::Key("k1".into()).key(), "key:k1");
        assert_eq!(LimitSubject::Project("p/x".into()).key(), "project:p/x");
        assert_eq!(LimitSubject::Key(String::new()).key(), "key:");
    }
}
