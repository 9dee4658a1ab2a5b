//! The attempts of one request: retries, cooldown skips, load balancing,
//! affinity and fallbacks over the one LLM call path (see
//! `docs/design.md#routing`; terms follow LiteLLM's router).
//!
//! A [`Plan`] is made from a [`Destination`]: one deployment, or a route
//! followed by its fallbacks (routes or deployments, each route visited
//! once). Each group has `1 + routing.retries` attempts:
//! - a **route** picks a healthy target — provider not offline or disabled,
//!   model resolvable, not cooling down (a route with one target ignores
//!   cooldowns) — preferring the deployment that served the affinity key
//!   last, then one not tried yet by the route's strategy; with every
//!   target tried it retries one after back-off;
//! - **one deployment** is retried after back-off, or after the upstream's
//!   `Retry-After` when that is at most `max_retry_after_ms` (a longer one
//!   ends the group).
//!
//! Only failures before an answer starts are retried ([`send`] returns once
//! the upstream answered 2xx): connect errors, deadlines and the statuses in
//! `routing.retry_on`. Any other error (a 400, say) ends the request at once
//! with that error. Connect errors, deadlines, 429 and 5xx count against the
//! deployment's health ([`crate::routing::DeploymentHealth`]).
//!
//! The parts: `select` picks each attempt's target (health, cooldowns,
//! affinity, the route's strategy), `attempts` sends a request attempt by
//! attempt ([`send`], [`complete`]), `retry` decides what is retried and
//! after how long.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::app::AppState;
use crate::clock::now_ms;
use crate::registry::{ProviderRegistry, Target};
use crate::routing::{DeploymentHealth, Destination, Route, Router};
use crate::service::llm_call::{LlmCall, LlmCallError};

/// Most attempts of one request, whatever the config and fallbacks say.
pub const MAX_ATTEMPTS: u32 = 64;

mod attempts;
mod error;
mod retry;
mod select;

pub use attempts::{complete, send};
pub use error::RoutedError;
use retry::{counts_against_health, retried, retry_after_ms};
pub use select::likely_target;
use select::Step;

/// One attempt's destination.
#[derive(Debug)]
pub struct Pick {
    /// Where to send it.
    pub target: Target,
    /// Its number within the request, from 1.
    pub attempt: u32,
    /// The route of its group (the requested one or a fallback), `None`
    /// for a deployment.
    pub route: Option<Arc<Route>>,
    /// The route the request named, `None` when it named a deployment.
    requested: Option<Arc<str>>,
    deployment: Arc<str>,
    health: Arc<DeploymentHealth>,
    metrics: Arc<crate::telemetry::Metrics>,
    traces: Arc<crate::traces::Traces>,
}

impl Pick {
    /// Builds this attempt's [`LlmCall`] with `build` and marks it routed
    /// (attempt number, route, in flight, its metrics handles) and, with
    /// tracing on, starts its span (a child of the current context's).
    ///
    /// # Errors
    /// `build`'s.
    pub fn call(
        &self,
        build: &mut (dyn FnMut(&Target) -> Result<LlmCall, LlmCallError> + Send),
    ) -> Result<LlmCall, LlmCallError> {
        let mut call = build(&self.target)?;
        call.routed(self.attempt, self.requested.clone(), self.health.busy());
        call.set_metrics(self.metrics.call_handles(
            call.operation(),
            &self.deployment,
            self.target.provider.name(),
        ));
        call.trace(&self.traces, &self.deployment);
        Ok(call)
    }
}

#[derive(Debug)]
enum Group {
    /// A fallback named by id, resolved when reached.
    Id(String),
    Deployment(Target),
    Route(Arc<Route>),
}

#[derive(Debug)]
struct GroupState {
    group: Group,
    left: u32,
    made: u32,
    tried: Vec<Arc<str>>,
    waited_for_cooldown: bool,
}

/// The attempts of one request (see the [module docs](self)).
#[derive(Debug)]
pub struct Plan {
    router: Arc<Router>,
    registry: Arc<ProviderRegistry>,
    /// The route the request named (`None`: one deployment).
    requested: Option<Arc<str>>,
    groups: VecDeque<Group>,
    current: Option<GroupState>,
    affinity: Option<String>,
    attempts: u32,
    reasons: Vec<(String, String)>,
    soonest_back_ms: Option<i64>,
    wait: Option<Duration>,
    last_error: Option<LlmCallError>,
    one_deployment: bool,
    stopped: bool,
    /// Groups started (the first, then fallbacks).
    groups_started: u32,
    /// Time spent waiting for upstream answers' headers.
    upstream_wait: Duration,
    /// Time spent in back-off and cooldown waits.
    slept: Duration,
}

impl Plan {
    /// The plan for `destination`; `affinity` is the conversation id (or a
    /// gateway caller's affinity key) for routes with affinity.
    pub fn new(app: &AppState, destination: Destination, affinity: Option<&str>) -> Self {
        Self::with(
            Arc::clone(&app.router),
            Arc::clone(&app.registry),
            destination,
            affinity,
        )
    }

    /// [`Self::new`] from its parts.
    pub fn with(
        router: Arc<Router>,
        registry: Arc<ProviderRegistry>,
        destination: Destination,
        affinity: Option<&str>,
    ) -> Self {
        let requested = destination.route().map(|r| Arc::clone(&r.name));
        let mut groups = VecDeque::with_capacity(1);
        let one_deployment = matches!(destination, Destination::Deployment(_));
        match destination {
            Destination::Deployment(target) => groups.push_back(Group::Deployment(target)),
            Destination::Route(route) => {
                let mut visited = vec![route.config.name.clone()];
                let fallbacks = route.config.fallbacks.clone();
                groups.push_back(Group::Route(route));
                expand(&router, &fallbacks, &mut visited, &mut groups);
            }
        }
        Self {
            router,
            registry,
            requested,
            groups,
            current: None,
            affinity: affinity.map(str::to_owned),
            attempts: 0,
            reasons: Vec::new(),
            soonest_back_ms: None,
            wait: None,
            last_error: None,
            one_deployment,
            stopped: false,
            groups_started: 0,
            upstream_wait: Duration::ZERO,
            slept: Duration::ZERO,
        }
    }

    /// Time this plan waited on upstreams (each attempt's send to its
    /// answer's headers) and on back-off or cooldowns: what is not the
    /// gateway's own time.
    pub fn waited(&self) -> Duration {
        self.upstream_wait + self.slept
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next attempt, after waiting its back-off or `Retry-After`;
    /// `None` when the plan is exhausted ([`Self::error`] says why).
    pub async fn next(&mut self) -> Option<Pick> {
        let router = Arc::clone(&self.router);
        let config = &router.config;
        loop {
            if self.stopped || self.attempts >= MAX_ATTEMPTS {
                return None;
            }
            let state = match self.current.take() {
                Some(state) if state.left > 0 => state,
                _ => GroupState {
                    group: {
                        let group = self.groups.pop_front()?;
                        self.groups_started += 1;
                        if self.groups_started > 1 {
                            if let Some(route) = &self.requested {
                                self.router.metrics.fallback(route);
                            }
                        }
                        group
                    },
                    left: 1 + config.retries,
                    made: 0,
                    tried: Vec::new(),
                    waited_for_cooldown: false,
                },
            };
            match self.step(state, config).await {
                Step::Pick(pick) => return Some(pick),
                Step::Again => {}
            }
        }
    }

    fn reason(&mut self, deployment: &str, reason: String) {
        match self.reasons.iter_mut().find(|(d, _)| d == deployment) {
            Some(entry) => entry.1 = reason,
            None => self.reasons.push((deployment.to_owned(), reason)),
        }
    }

    /// Notes that `pick` failed with `error`: counts it against the
    /// deployment's health and decides whether the request goes on.
    /// Returns false when it must end with this error (it is not retried).
    pub fn failed(&mut self, pick: &Pick, error: &LlmCallError) -> bool {
        let router = Arc::clone(&self.router);
        let config = &router.config;
        let now = now_ms();
        let retry_after = retry_after_ms(error, std::time::SystemTime::now());
        let message = error.to_string();
        if counts_against_health(error) {
            router.record_failure(&pick.deployment, now, retry_after, &message);
        }
        self.reason(&pick.deployment, message);
        self.last_error = Some(error.clone());
        let lone = match &pick.route {
            None => true,
            Some(route) => route.config.targets.len() == 1,
        };
        // A provider that speaks only Messages never will answer this
        // request; only another target of a route may.
        let other_target_may = !matches!(error, LlmCallError::MessagesOnly { .. }) || !lone;
        if !retried(config, error) || !other_target_may {
            self.stopped = true;
            return false;
        }
        match retry_after {
            Some(ms) if ms > config.max_retry_after_ms => {
                self.soonest_back_ms = Some(now.saturating_add(ms as i64));
                if lone {
                    // Not waited for: this group is over.
                    if let Some(state) = self.current.as_mut() {
                        state.left = 0;
                    }
                }
            }
            Some(ms) => self.wait = Some(Duration::from_millis(ms)),
            None => {}
        }
        true
    }

    /// Notes that `pick` answered: a route with affinity remembers the
    /// deployment for the affinity key.
    pub fn succeeded(&self, pick: &Pick) {
        if let (Some(route), Some(key)) = (&pick.route, &self.affinity) {
            if route.sticky() {
                self.router.affinity.set(&route.name, key, &pick.deployment);
            }
        }
    }

    /// Why the plan ended without an answer (call once, at its end).
    pub fn error(&mut self) -> RoutedError {
        match self.last_error.take() {
            Some(error) if self.one_deployment || self.stopped => RoutedError::Call(error),
            _ => {
                let now = now_ms();
                RoutedError::Unavailable {
                    model: self.requested.as_deref().unwrap_or_default().to_owned(),
                    reasons: std::mem::take(&mut self.reasons),
                    retry_after_ms: self
                        .soonest_back_ms
                        .filter(|s| *s > now)
                        .map(|s| (s - now) as u64),
                }
            }
        }
    }
}

/// Appends `fallbacks` (routes with their own fallbacks, depth first, each
/// route once; deployments by id) to `groups`.
fn expand(
    router: &Router,
    fallbacks: &[String],
    visited: &mut Vec<String>,
    groups: &mut VecDeque<Group>,
) {
    for fallback in fallbacks {
        match router.route(fallback) {
            Some(route) => {
                if visited.contains(fallback) {
                    continue;
                }
                visited.push(fallback.clone());
                groups.push_back(Group::Route(Arc::clone(route)));
                expand(router, &route.config.fallbacks, visited, groups);
            }
            None => groups.push_back(Group::Id(fallback.clone())),
        }
    }
}

#[cfg(test)]
mod tests;
