//! Budgets and rate limits of a project or an API key: what they are, the
//! windows they count in, and the arithmetic of leasing blocks from a
//! shared counter. Pure: the server keeps the counters, the store the rows.
//!
//! Windows are **fixed** and in UTC: a rate limit counts in the calendar
//! minute (`[hh:mm:00, hh:mm+1:00)`), a budget in its period — the UTC day,
//! the ISO week (from Monday 00:00 UTC), the calendar month, or `total`
//! (never resets). Money is counted in **nano-USD** (1e-9 USD) as `i64`,
//! tokens as `i64` (prompt + completion, as the upstream reports them).

use std::fmt;

/// One minute in milliseconds: the window of `requests_per_minute` and
/// `tokens_per_minute`.
pub const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// Nano-USD in one USD.
pub const NUSD_PER_USD: i64 = 1_000_000_000;

/// The period a budget (`max_cost`, `max_tokens`) counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// The UTC day.
    Day,
    /// The ISO week: Monday 00:00 UTC to the next Monday.
    Week,
    /// The calendar month in UTC.
    Month,
    /// All time: never resets.
    Total,
}

impl Period {
    /// `day`, `week`, `month` or `total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(text: &str) -> Option<Period> {
        [Period::Day, Period::Week, Period::Month, Period::Total]
            .into_iter()
            .find(|p| p.as_str() == text)
    }

    /// The window of this period that holds `now_ms` (unix ms, UTC).
    pub fn window(self, now_ms: i64) -> Window {
        let day = now_ms.div_euclid(DAY_MS);
        match self {
            Period::Day => Window::days(day, day + 1),
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday is 3 days before it.
                let monday = day - (day + 3).rem_euclid(7);
                Window::days(monday, monday + 7)
            }
            Period::Month => {
                let (year, month, _) = civil_from_days(day);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                Window::days(
                    days_from_civil(year, month, 1),
                    days_from_civil(next_year, next_month, 1),
                )
            }
            Period::Total => Window {
                start_ms: 0,
                end_ms: None,
            },
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fixed counting window, unix ms: `[start_ms, end_ms)`; `end_ms` is
/// `None` for a `total` budget, which never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First millisecond of the window.
    pub start_ms: i64,
    /// First millisecond after it; `None`: never ends.
    pub end_ms: Option<i64>,
}

impl Window {
    fn days(start_day: i64, end_day: i64) -> Self {
        Window {
            start_ms: start_day.saturating_mul(DAY_MS),
            end_ms: Some(end_day.saturating_mul(DAY_MS)),
        }
    }

    /// The calendar minute (UTC) holding `now_ms`.
    pub fn minute(now_ms: i64) -> Self {
        let start_ms = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        Window {
            start_ms,
            end_ms: Some(start_ms + MINUTE_MS),
        }
    }

    /// Whole seconds from `now_ms` until the window ends, at least 1 (what a
    /// `Retry-After` says); `None` for a window that never ends.
    pub fn retry_after_secs(&self, now_ms: i64) -> Option<u64> {
        let end = self.end_ms?;
        let ms = end.saturating_sub(now_ms).max(1);
        Some(u64::try_from((ms + 999) / 1000).unwrap_or(1).max(1))
    }

    /// Whether `now_ms` is past the window.
    pub fn has_ended(&self, now_ms: i64) -> bool {
        self.end_ms.is_some_and(|end| now_ms >= end)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The limits of one project or API key. `None` is "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most money spent per `period`, nano-USD (`maxCostUsd` × 1e9).
    pub max_cost_nusd: Option<i64>,
    /// Most tokens (prompt + completion) per `period`.
    pub max_tokens: Option<i64>,
    /// The period of `max_cost_nusd` and `max_tokens`; required with
    /// either.
    pub period: Option<Period>,
    /// Most requests admitted per UTC minute.
    pub requests_per_minute: Option<i64>,
    /// Most tokens (reserved, then settled to the actual) per UTC minute.
    pub tokens_per_minute: Option<i64>,
    /// Most requests (and turns) in flight at once.
    pub max_concurrent: Option<i64>,
}

/// Why a [`Limits`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A value below zero.
    #[error("`{field}` must be 0 or more, got {value}")]
    Negative {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A budget without a period, or a period without a budget.
    #[error("`period` goes with `maxCostUsd` or `maxTokens`: set both or neither")]
    Period,
    /// A dollar amount that is not a finite number of at most
    /// [`MAX_COST_USD`].
    #[error("`maxCostUsd` must be a number from 0 to {MAX_COST_USD}, got {0}")]
    Cost(String),
}

/// The largest `maxCostUsd` accepted (about 9.2e9 nano-USD fit an
/// `i64` a thousand times over).
pub const MAX_COST_USD: f64 = 1_000_000_000.0;

/// USD as nano-USD (rounded to the nearest).
///
/// # Errors
/// [`LimitsError::Cost`] for a value that is negative, not finite, or over
/// [`MAX_COST_USD`].
pub fn usd_to_nusd(usd: f64) -> Result<i64, LimitsError> {
    if !usd.is_finite() || !(0.0..=MAX_COST_USD).contains(&usd) {
        return Err(LimitsError::Cost(usd.to_string()));
    }
    // In range: at most 1e18, which fits an i64.
    #[allow(clippy::cast_possible_truncation)]
    Ok((usd * NUSD_PER_USD as f64).round() as i64)
}

/// Nano-USD as USD.
pub fn nusd_to_usd(nusd: i64) -> f64 {
    nusd as f64 / NUSD_PER_USD as f64
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Checks the values: none negative; a period with a budget, a budget
    /// with a period.
    ///
    /// # Errors
    /// [`LimitsError`] naming the field at fault.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (field, value) in [
            ("maxCostUsd", self.max_cost_nusd),
            ("maxTokens", self.max_tokens),
            ("requestsPerMinute", self.requests_per_minute),
            ("tokensPerMinute", self.tokens_per_minute),
            ("maxConcurrent", self.max_concurrent),
        ] {
            if let Some(value) = value.filter(|v| *v < 0) {
                return Err(LimitsError::Negative { field, value });
            }
        }
        let budget = self.max_cost_nusd.is_some() || self.max_tokens.is_some();
        if budget != self.period.is_some() {
            return Err(LimitsError::Period);
        }
        Ok(())
    }
}

/// The block of a shared counter one replica takes at a time, for a limit
/// of `limit` per window: a fortieth of it (at least 1), so that the units
/// parked on other replicas are a small part of the limit, and a replica
/// asks the database about once per 40 requests at most. A request that
/// needs more than a block takes what it needs.
pub fn lease_block(limit: i64) -> i64 {
    (limit / 40).max(1)
}

/// What one take from a shared counter grants: of `want` units, at most
/// what is left under `limit` when `taken` are already out.
pub fn grant(want: i64, taken: i64, limit: i64) -> i64 {
    want.min(limit.saturating_sub(taken)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29T13:45:10Z (a Thursday, in a leap year).
    const LEAP_DAY: i64 = 1_709_214_310_000;

    fn day(y: i64, m: i64, d: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn periods_are_utc_calendar_windows() {
        assert_eq!(
            Period::Day.window(LEAP_DAY),
            Window {
                start_ms: day(2024, 2, 29),
                end_ms: Some(day(2024, 3, 1))
            }
        );
        // Monday 2024-02-26 to Monday 2024-03-04.
        assert_eq!(
            Period::Week.window(LEAP_DAY),
            Window {
                start_ms: day(2024, 2, 26),
                end_ms: Some(day(2024, 3, 4))
            }
        );
        assert_eq!(
            Period::Month.window(LEAP_DAY),
            Window {
                start_ms: day(2024, 2, 1),
                end_ms: Some(day(2024, 3, 1))
            }
        );
        // December rolls into the next year.
        assert_eq!(
            Period::Month.window(day(2023, 12, 31) + 5),
            Window {
                start_ms: day(2023, 12, 1),
                end_ms: Some(day(2024, 1, 1))
            }
        );
        assert_eq!(Period::Total.window(LEAP_DAY).end_ms, None);
        // A Monday at midnight starts its own week.
        assert_eq!(
            Period::Week.window(day(2024, 3, 4)).start_ms,
            day(2024, 3, 4)
        );
    }

    #[test]
    fn a_minute_window_and_its_retry_after() {
        let w = Window::minute(LEAP_DAY);
        assert_eq!(w.start_ms, LEAP_DAY - 10_000);
        assert_eq!(w.end_ms, Some(LEAP_DAY + 50_000));
        assert_eq!(w.retry_after_secs(LEAP_DAY), Some(50));
        assert_eq!(w.retry_after_secs(LEAP_DAY + 49_001), Some(1));
        assert_eq!(w.retry_after_secs(LEAP_DAY + 60_000), Some(1));
        assert!(w.has_ended(LEAP_DAY + 50_000));
        assert!(!w.has_ended(LEAP_DAY + 49_999));
        assert_eq!(Period::Total.window(0).retry_after_secs(0), None);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = Limits {
            max_cost_nusd: Some(5 * NUSD_PER_USD),
            period: Some(Period::Day),
            requests_per_minute: Some(100),
            ..Limits::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let negative = Limits {
            tokens_per_minute: Some(-1),
            ..Limits::default()
        };
        assert_eq!(
            negative.validate(),
            Err(LimitsError::Negative {
                field: "tokensPerMinute",
                value: -1
            })
        );
        let no_period = Limits {
            max_tokens: Some(10),
            ..Limits::default()
        };
        assert_eq!(no_period.validate(), Err(LimitsError::Period));
        let lone_period = Limits {
            period: Some(Period::Week),
            ..Limits::default()
        };
        assert_eq!(lone_period.validate(), Err(LimitsError::Period));
        assert!(Limits::default().is_empty());
    }

    #[test]
    fn dollars_convert_to_nano_dollars() {
        assert_eq!(usd_to_nusd(5.0), Ok(5_000_000_000));
        assert_eq!(usd_to_nusd(0.000_000_001), Ok(1));
        assert_eq!(usd_to_nusd(0.1), Ok(100_000_000));
        assert!(usd_to_nusd(-0.5).is_err());
        assert!(usd_to_nusd(f64::NAN).is_err());
        assert!(usd_to_nusd(2e9).is_err());
        assert!((nusd_to_usd(1_500_000_000) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn grants_never_pass_the_limit() {
        assert_eq!(grant(5, 0, 100), 5);
        assert_eq!(grant(5, 98, 100), 2);
        assert_eq!(grant(5, 100, 100), 0);
        assert_eq!(grant(5, 130, 100), 0);
        assert_eq!(lease_block(100), 2);
        assert_eq!(lease_block(10), 1);
        assert_eq!(lease_block(0), 1);
        assert_eq!(lease_block(1_000_000), 25_000);
    }
}
