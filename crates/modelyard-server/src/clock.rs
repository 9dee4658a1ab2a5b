//! Wall-clock helpers. Stored times are unix milliseconds; the API shows
//! RFC 3339 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 UTC with millisecond precision
/// (`2026-11-22T12:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}
