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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use modelyard_upstream::openai::AnswerSummary;
use modelyard_upstream::UpstreamResponse;

use crate::app::AppState;
use crate::clock::now_ms;
use crate::config::RoutingConfig;
use crate::recorder::CallRecord;
use crate::registry::{ProviderRegistry, ProviderStatus, Target};
use crate::routing::{Candidate, DeploymentHealth, Destination, Route, Router};
use crate::service::llm_call::{LlmCall, LlmCallError};

/// Most attempts of one request, whatever the config and fallbacks say.
pub const MAX_ATTEMPTS: u32 = 64;

mod error;
mod retry;

pub use error::RoutedError;
use retry::{backoff, counts_against_health, retried, retry_after_ms};

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

    async fn step(&mut self, mut state: GroupState, config: &RoutingConfig) -> Step {
        match &state.group {
            Group::Id(id) => {
                match self.registry.resolve(Some(id)) {
                    Ok(target) => {
                        state.group = Group::Deployment(target);
                        self.current = Some(state);
                    }
                    Err(err) => self.reasons.push((id.clone(), err.to_string())),
                }
                Step::Again
            }
            Group::Deployment(target) => {
                let target = target.clone();
                if state.made > 0 {
                    let wait = self
                        .wait
                        .take()
                        .unwrap_or_else(|| backoff(config, state.made));
                    self.slept += wait;
                    tokio::time::sleep(wait).await;
                }
                let deployment: Arc<str> = Arc::from(target.resolution.model_id.to_string());
                Step::Pick(self.take(state, target, deployment, None))
            }
            Group::Route(route) => {
                let route = Arc::clone(route);
                let now = now_ms();
                let lone = route.config.targets.len() == 1;
                let mut healthy: Vec<(usize, Target, Arc<DeploymentHealth>)> = Vec::new();
                let mut soonest: Option<i64> = None;
                for (index, t) in route.config.targets.iter().enumerate() {
                    match usable(&self.registry, &self.router, &t.model, now, lone) {
                        Ok((target, health)) => healthy.push((index, target, health)),
                        Err(Unusable { reason, until }) => {
                            if let Some(until) = until {
                                soonest = Some(soonest.map_or(until, |s: i64| s.min(until)));
                            }
                            self.reason(&t.model, reason);
                        }
                    }
                }
                if let Some(s) = soonest {
                    self.soonest_back_ms = Some(self.soonest_back_ms.map_or(s, |o| o.min(s)));
                }
                if healthy.is_empty() {
                    let back_in = soonest.map(|s| s - now);
                    if let Some(ms) = back_in.filter(|ms| {
                        !state.waited_for_cooldown && *ms <= config.max_retry_after_ms as i64
                    }) {
                        state.waited_for_cooldown = true;
                        self.current = Some(state);
                        let wait = Duration::from_millis(ms.max(0) as u64);
                        self.slept += wait;
                        tokio::time::sleep(wait).await;
                    }
                    return Step::Again;
                }
                let untried: Vec<usize> = (0..healthy.len())
                    .filter(|i| {
                        let model = &route.config.targets[healthy[*i].0].model;
                        !state.tried.iter().any(|t| **t == **model)
                    })
                    .collect();
                let pool: Vec<usize> = if untried.is_empty() {
                    let wait = self
                        .wait
                        .take()
                        .unwrap_or_else(|| backoff(config, state.made));
                    self.slept += wait;
                    tokio::time::sleep(wait).await;
                    (0..healthy.len()).collect()
                } else {
                    untried
                };
                let sticky = route
                    .sticky()
                    .then_some(self.affinity.as_deref())
                    .flatten()
                    .and_then(|key| self.router.affinity.get(&route.name, key));
                let chosen = sticky
                    .and_then(|d| {
                        pool.iter()
                            .copied()
                            .find(|i| route.config.targets[healthy[*i].0].model.as_str() == &*d)
                    })
                    .unwrap_or_else(|| {
                        let candidates: Vec<Candidate<'_>> = pool
                            .iter()
                            .map(|i| Candidate {
                                index: healthy[*i].0,
                                health: &healthy[*i].2,
                            })
                            .collect();
                        pool[route.pick(&candidates)]
                    });
                let (index, target, _) = healthy.swap_remove(chosen);
                let deployment: Arc<str> = Arc::from(route.config.targets[index].model.as_str());
                Step::Pick(self.take(state, target, deployment, Some(route)))
            }
        }
    }

    fn take(
        &mut self,
        mut state: GroupState,
        target: Target,
        deployment: Arc<str>,
        route: Option<Arc<Route>>,
    ) -> Pick {
        state.left -= 1;
        state.made += 1;
        // Only a route picks among targets; one deployment has nothing to skip.
        if route.is_some() {
            state.tried.push(Arc::clone(&deployment));
        }
        self.current = Some(state);
        self.attempts += 1;
        self.wait = None;
        Pick {
            target,
            attempt: self.attempts,
            route,
            requested: self.requested.clone(),
            health: self.router.health(&deployment),
            deployment,
            metrics: Arc::clone(&self.router.metrics),
            traces: Arc::clone(&self.router.traces),
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

/// Why a route's target cannot serve now.
struct Unusable {
    reason: String,
    /// When its cooldown ends, when that is why.
    until: Option<i64>,
}

/// Whether route target `model` can serve now: it resolves, its provider
/// is not offline, and it is not cooling down (`lone`: a route's only
/// target ignores cooldowns).
fn usable(
    registry: &ProviderRegistry,
    router: &Router,
    model: &str,
    now: i64,
    lone: bool,
) -> Result<(Target, Arc<DeploymentHealth>), Unusable> {
    let target = registry.resolve(Some(model)).map_err(|err| Unusable {
        reason: err.to_string(),
        until: None,
    })?;
    let offline = {
        let state = target.provider.read_state();
        (state.status == ProviderStatus::Offline).then(|| match &state.last_error {
            Some(e) => format!("provider is offline: {e}"),
            None => "provider is offline".to_owned(),
        })
    };
    if let Some(reason) = offline {
        return Err(Unusable {
            reason,
            until: None,
        });
    }
    let health = router.health(model);
    if let Some(until) = health.cooling_until(now).filter(|_| !lone) {
        let last = health.last_error().unwrap_or_default();
        return Err(Unusable {
            reason: format!("cooling down for {} ms after: {last}", until - now),
            until: Some(until),
        });
    }
    Ok((target, health))
}

/// The deployment a request to `destination` with affinity key `affinity`
/// would most likely be served by, without taking a turn of the route's
/// strategy: one deployment is itself; a route's is the deployment the key
/// points at while it can serve, else its first target that can. `None`
/// when no target can serve now.
pub fn likely_target(
    app: &AppState,
    destination: &Destination,
    affinity: Option<&str>,
) -> Option<Target> {
    let route = match destination {
        Destination::Deployment(target) => return Some(target.clone()),
        Destination::Route(route) => route,
    };
    let now = now_ms();
    let lone = route.config.targets.len() == 1;
    let sticky = route
        .sticky()
        .then_some(affinity)
        .flatten()
        .and_then(|key| app.router.affinity.get(&route.name, key));
    let usable_target = |model: &str| {
        usable(&app.registry, &app.router, model, now, lone)
            .ok()
            .map(|(target, _)| target)
    };
    sticky.and_then(|d| usable_target(&d)).or_else(|| {
        route
            .config
            .targets
            .iter()
            .find_map(|t| usable_target(&t.model))
    })
}

enum Step {
    Pick(Pick),
    Again,
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

/// Sends a request by `plan`: each attempt's call is built by `build` for
/// its target, held in `current` while it is sent (so a caller that stops
/// waiting can still record it), and moved to `failed` as a record when it
/// fails. Returns the upstream's 2xx answer; `current` then holds its call.
///
/// # Errors
/// [`RoutedError`]: the last error, or why no deployment could serve.
pub async fn send(
    plan: &mut Plan,
    current: &mut Option<LlmCall>,
    failed: &mut Vec<CallRecord>,
    build: &mut (dyn FnMut(&Target) -> Result<LlmCall, LlmCallError> + Send),
) -> Result<UpstreamResponse, RoutedError> {
    let mut failed_last: Option<Arc<str>> = None;
    loop {
        let Some(pick) = plan.next().await else {
            return Err(plan.error());
        };
        if let Some(deployment) = failed_last.take() {
            plan.router.metrics.retry(&deployment);
        }
        let call = current.insert(pick.call(build).map_err(RoutedError::Call)?);
        let sent = std::time::Instant::now();
        let answer = call.send().await;
        plan.upstream_wait += sent.elapsed();
        let metrics = &plan.router.metrics;
        if metrics.enabled() {
            let status = match (&answer, call.status()) {
                (_, Some(status)) => crate::telemetry::status_text(status),
                (Err(LlmCallError::Disabled { .. }), None) => "disabled".into(),
                (Err(error), None) if error.is_timeout() => "timeout".into(),
                (Err(LlmCallError::Send(_)), None) => "connect".into(),
                _ => "error".into(),
            };
            metrics.attempt(&pick.deployment, pick.target.provider.name(), &status);
        }
        match answer {
            Ok(upstream) => {
                plan.succeeded(&pick);
                return Ok(upstream);
            }
            Err(error) => {
                if let Some(call) = current.take() {
                    failed.push(call.record(AnswerSummary::default(), Some(error.to_string())));
                }
                if !plan.failed(&pick, &error) {
                    return Err(RoutedError::Call(error));
                }
                failed_last = Some(Arc::clone(&pick.deployment));
            }
        }
    }
}

/// Sends a non-streamed request by `plan` and reads its answer: the
/// summary (or why there is none) and the records of every attempt.
pub async fn complete(
    mut plan: Plan,
    build: &mut (dyn FnMut(&Target) -> Result<LlmCall, LlmCallError> + Send),
) -> (Result<AnswerSummary, RoutedError>, Vec<CallRecord>) {
    let mut current = None;
    let mut records = Vec::new();
    let outcome = match send(&mut plan, &mut current, &mut records, build).await {
        Ok(upstream) => match current.as_mut() {
            Some(call) => {
                let read = call.read_body(upstream).await;
                match read {
                    Ok(rewritten) => {
                        records.push(call.record(rewritten.summary.clone(), None));
                        Ok(rewritten.summary)
                    }
                    Err(error) => {
                        records
                            .push(call.record(AnswerSummary::default(), Some(error.to_string())));
                        Err(RoutedError::Call(error))
                    }
                }
            }
            None => Err(plan.error()),
        },
        Err(error) => Err(error),
    };
    (outcome, records)
}

#[cfg(test)]
mod tests;
