//! One deployment's health as this process sees it: requests in flight,
//! a moving average of time to first token, recent failures and the
//! cooldown they caused. Read lock-free on the request path; a failure takes
//! a short mutex.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::RoutingConfig;

/// Weight of a new sample in the time-to-first-token average, 1/`EWMA_DIV`.
const EWMA_DIV: u64 = 5;

/// Health of one deployment (`provider/model`).
#[derive(Debug, Default)]
pub struct DeploymentHealth {
    /// Requests in flight (sent, answer not finished).
    in_flight: AtomicU32,
    /// Moving average of time to first token, µs; 0 = no sample yet.
    ttft_us: AtomicU64,
    /// Skipped until this time, unix ms (0 = not cooling down).
    cooldown_until_ms: AtomicI64,
    /// Failure times (unix ms) within the window, and the last reason.
    failures: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    at_ms: VecDeque<i64>,
    last_error: Option<String>,
}

/// What [`DeploymentHealth::record_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the deployment is still in rotation.
    Counted,
    /// The deployment is now cooling down until this time (unix ms).
    CooledDown(i64),
}

impl DeploymentHealth {
    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Moving average of time to first token, µs (`None` before the first
    /// sample).
    pub fn ttft_us(&self) -> Option<u64> {
        match self.ttft_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us),
        }
    }

    /// The end of the current cooldown (unix ms), if it is later than
    /// `now_ms`.
    pub fn cooling_until(&self, now_ms: i64) -> Option<i64> {
        let until = self.cooldown_until_ms.load(Ordering::Relaxed);
        (until > now_ms).then_some(until)
    }

    /// The last failure's message.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Marks a request in flight until the returned guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy {
            health: Arc::clone(self),
            observed: false,
        }
    }

    /// Counts a failure at `now_ms`. `cooldown_failures` failures within
    /// `cooldown_window_ms` cool the deployment down for `cooldown_ms`, or
    /// `retry_after_ms` if longer; an upstream `Retry-After` alone keeps it
    /// out of rotation until then.
    pub fn record_failure(
        &self,
        config: &RoutingConfig,
        now_ms: i64,
        retry_after_ms: Option<u64>,
        error: &str,
    ) -> FailureOutcome {
        let mut failures = self.lock();
        failures.last_error = Some(error.chars().take(500).collect());
        let window_start = now_ms.saturating_sub(config.cooldown_window_ms as i64);
        while failures.at_ms.front().is_some_and(|t| *t < window_start) {
            failures.at_ms.pop_front();
        }
        failures.at_ms.push_back(now_ms);
        while failures.at_ms.len() > config.cooldown_failures as usize {
            failures.at_ms.pop_front();
        }
        let retry_after = retry_after_ms.unwrap_or(0) as i64;
        let mut until = now_ms.saturating_add(retry_after);
        if failures.at_ms.len() >= config.cooldown_failures as usize {
            until = until.max(now_ms.saturating_add(config.cooldown_ms as i64));
            failures.at_ms.clear();
        }
        if until > now_ms && until > self.cooldown_until_ms.load(Ordering::Relaxed) {
            self.cooldown_until_ms.store(until, Ordering::Relaxed);
            return FailureOutcome::CooledDown(until);
        }
        FailureOutcome::Counted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe_ttft(&self, us: u64) {
        let us = us.max(1);
        let old = self.ttft_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            us
        } else {
            (old * (EWMA_DIV - 1) + us) / EWMA_DIV
        };
        self.ttft_us.store(new.max(1), Ordering::Relaxed);
    }
}

/// A request in flight on a deployment: counted by `least-busy` until it
/// drops (the whole answer, stream included).
#[derive(Debug)]
pub struct Busy {
    health: Arc<DeploymentHealth>,
    observed: bool,
}

impl Busy {
    /// Feeds the time to first token (or, non-streamed, to the whole
    /// answer) of this request into the moving average, once.
    pub fn observe_ttft(&mut self, ms: i64) {
        if !self.observed {
            self.observed = true;
            self.health
                .observe_ttft(u64::try_from(ms).unwrap_or(0).saturating_mul(1000));
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.health.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RoutingConfig {
        RoutingConfig {
            cooldown_failures: 3,
            cooldown_window_ms: 1_000,
            cooldown_ms: 5_000,
            ..RoutingConfig::default()
        }
    }

    #[test]
    fn three_failures_in_the_window_cool_down() {
        let h = DeploymentHealth::default();
        let c = config();
        assert_eq!(
            h.record_failure(&c, 100, None, "x"),
            FailureOutcome::Counted
        );
        assert_eq!(
            h.record_failure(&c, 200, None, "x"),
            FailureOutcome::Counted
        );
        assert_eq!(
            h.record_failure(&c, 300, None, "x"),
            FailureOutcome::CooledDown(5_300)
        );
        assert_eq!(h.cooling_until(5_299), Some(5_300));
        assert_eq!(h.cooling_until(5_300), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let h = DeploymentHealth::default();
        let c = config();
        h.record_failure(&c, 0, None, "x");
        h.record_failure(&c, 500, None, "x");
        assert_eq!(
            h.record_failure(&c, 1_600, None, "x"),
            FailureOutcome::Counted
        );
        assert_eq!(h.cooling_until(1_600), None);
    }

    #[test]
    fn retry_after_keeps_it_out_and_a_longer_one_extends_the_cooldown() {
        let h = DeploymentHealth::default();
        let c = config();
        assert_eq!(
            h.record_failure(&c, 0, Some(1_000), "429"),
            FailureOutcome::CooledDown(1_000)
        );
        h.record_failure(&c, 10, None, "x");
        assert_eq!(
            h.record_failure(&c, 20, Some(60_000), "429"),
            FailureOutcome::CooledDown(60_020)
        );
    }

    #[test]
    fn busy_counts_in_flight_and_the_average_moves() {
        let h = Arc::new(DeploymentHealth::default());
        let mut a = h.busy();
        let b = h.busy();
        assert_eq!(h.in_flight(), 2);
        a.observe_ttft(100);
        a.observe_ttft(999);
        assert_eq!(h.ttft_us(), Some(100_000));
        drop(a);
        drop(b);
        assert_eq!(h.in_flight(), 0);
    }
}
