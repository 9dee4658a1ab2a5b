//! Why a request is refused, and how a limit reads in the refusal.

use modelyard_core::limits::{nusd_to_usd, Period};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A limit is reached: 429.
    #[error("{scope} limit {name}={value}{} reached", per(*period))]
    Limit {
        /// `key` or `project`.
        scope: &'static str,
        /// The limit's name as the API spells it: `requestsPerMinute`,
        /// `tokensPerMinute`, `maxTokens`, `maxCostUsd` or `maxConcurrent`.
        name: &'static str,
        /// Its value as set (USD for `maxCostUsd`).
        value: String,
        /// The budget's period, for `maxTokens` / `maxCostUsd`.
        period: Option<Period>,
        /// Seconds until the window frees; `None` for a `total` budget,
        /// which never does.
        retry_after_secs: Option<u64>,
    },
    /// The shared counters could not be read: 503.
    #[error("cannot check the {scope} limits: the database is unavailable; retry shortly")]
    Unavailable {
        /// `key` or `project`.
        scope: &'static str,
    },
}

impl Refusal {
    /// Whether the limit is a budget (`max_tokens`, `max_cost_usd`) rather
    /// than a rate.
    pub fn is_budget(&self) -> bool {
        matches!(self, Refusal::Limit { name, .. } if *name == "maxTokens" || *name == "maxCostUsd")
    }

    /// The stable code: `budget_exceeded`, `rate_limited` or
    /// `limits_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unavailable { .. } => "limits_unavailable",
            _ if self.is_budget() => "budget_exceeded",
            Refusal::Limit { .. } => "rate_limited",
        }
    }

    /// The `Retry-After` seconds, if any frees it.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Limit {
                retry_after_secs, ..
            } => *retry_after_secs,
            Refusal::Unavailable { .. } => Some(1),
        }
    }
}

/// ` per day` / ` in total` after a budget's value; nothing for a rate.
fn per(period: Option<Period>) -> String {
    match period {
        None => String::new(),
        Some(Period::Total) => " in total".to_owned(),
        Some(period) => format!(" per {period}"),
    }
}

pub(super) fn format_usd(nusd: i64) -> String {
    let usd = nusd_to_usd(nusd);
    let text = format!("{usd:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
