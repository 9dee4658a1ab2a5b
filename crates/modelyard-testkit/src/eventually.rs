//! [`eventually`]: the one poll loop of the test suites.
//!
//! A test that waits for something asynchronous (a call record to be written, a turn to
//! finish, a counter to move) calls [`eventually`] with a bound, a description and a probe;
//! the probe is asked again every [`POLL_EVERY`] until it answers, and when the bound runs
//! out the test panics with the description and the last thing the probe saw.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] asks its probe again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// What a probe of [`eventually`] answers: a value when the condition holds, otherwise the
/// observation to report if time runs out.
///
/// `Option<T>` (`None`: not yet) and `Result<T, E>` (`Err(observation)`: not yet) are
/// probes; `bool` is a probe of `()`.
pub trait Observation {
    /// What [`eventually`] returns once the condition holds.
    type Value;

    /// `Ok(value)` when the condition holds, else `Err(a description of what was seen)`.
    fn into_observed(self) -> Result<Self::Value, String>;
}

impl<T> Observation for Option<T> {
    type Value = T;

    fn into_observed(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

impl<T, E: Debug> Observation for Result<T, E> {
    type Value = T;

    fn into_observed(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

impl Observation for bool {
    type Value = ();

    fn into_observed(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".to_owned())
        }
    }
}

/// Runs `probe` until it answers `Some` / `Ok` / `true`, at once and then every
/// [`POLL_EVERY`], for up to `timeout`; returns the answer.
///
/// # Panics
///
/// When `timeout` runs out first, with `what` (the condition waited for) and the last
/// observation the probe made. A probe may panic itself (an assertion that must hold on
/// every poll).
pub async fn eventually<F, Fut>(
    timeout: Duration,
    what: &str,
    mut probe: F,
) -> <Fut::Output as Observation>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await.into_observed() {
            Ok(value) => return value,
            Err(last) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            panic!("not within {timeout:?}: {what}; last observation: {last}");
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_first_answer_once_the_condition_holds() {
        let polls = AtomicUsize::new(0);
        let value = eventually(Duration::from_secs(5), "three polls", || async {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(n)
            }
        })
        .await;
        assert_eq!(value, 3);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn takes_options_and_bools() {
        let value = eventually(Duration::from_secs(1), "some", || async { Some("x") }).await;
        assert_eq!(value, "x");
        eventually(Duration::from_secs(1), "true", || async { true }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "never: the thing; last observation: \"seen 7\"")]
    async fn panics_with_what_and_the_last_observation() {
        eventually(Duration::from_millis(50), "never: the thing", || async {
            Err::<(), _>("seen 7")
        })
        .await;
    }
}
