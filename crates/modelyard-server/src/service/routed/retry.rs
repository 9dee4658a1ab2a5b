//! The retry policy of a routed request: which failures are retried, which
//! count against a deployment's health, back-off, and the upstream's
//! `Retry-After`.

use std::time::Duration;

use rand::Rng;

use crate::config::RoutingConfig;
use crate::service::llm_call::LlmCallError;

/// Longest single back-off wait.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Exponential back-off with full jitter: uniform in
/// `[0, backoff_ms · 2^(made-1)]`, at most [`MAX_BACKOFF`].
pub(super) fn backoff(config: &RoutingConfig, made: u32) -> Duration {
    let cap = config
        .backoff_ms
        .saturating_mul(1u64 << made.saturating_sub(1).min(16))
        .min(MAX_BACKOFF.as_millis() as u64);
    Duration::from_millis(rand::thread_rng().gen_range(0..=cap))
}

/// Whether `routing.retry_on` retries `error`.
pub(super) fn retried(config: &RoutingConfig, error: &LlmCallError) -> bool {
    match error {
        LlmCallError::Send(e) if e.is_timeout() => config.retry_on.timeout,
        LlmCallError::Send(_) => config.retry_on.connect,
        LlmCallError::Status(answer) => config.retry_on.statuses.contains(&answer.status),
        // A disabled provider cannot answer, nor one that speaks only
        // Messages to another request; another deployment may.
        LlmCallError::Disabled { .. } | LlmCallError::MessagesOnly { .. } => true,
        _ => false,
    }
}

/// Whether `error` says something about the deployment's health (rather
/// than about the request).
pub(super) fn counts_against_health(error: &LlmCallError) -> bool {
    match error {
        LlmCallError::Send(_) | LlmCallError::Disabled { .. } => true,
        LlmCallError::Status(answer) => answer.status == 429 || answer.status >= 500,
        _ => false,
    }
}

/// The upstream's `Retry-After` (delay-seconds or an HTTP date, RFC 9110
/// §10.2.3) in ms from `now`.
pub(super) fn retry_after_ms(error: &LlmCallError, now: std::time::SystemTime) -> Option<u64> {
    let LlmCallError::Status(answer) = error else {
        return None;
    };
    let value = answer.retry_after.as_deref()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64),
    )
}
