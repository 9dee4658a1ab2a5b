//! Routing state: the configured routes (`[[routes]]`), each deployment's
//! health (in flight, time to first token, failures, cooldown) and
//! conversation affinity, as this process sees them. What a requested id
//! stands for is [`Router::destination`]; the attempts of one request are
//! `service::routed::Plan`'s. Design: `docs/design.md#routing`; terms follow
//! LiteLLM's router (deployment, route, fallback, cooldown).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use modelyard_store::LlmConfigRow;

use crate::config::{Affinity, RouteConfig, RoutingConfig, Strategy};
use crate::registry::{BaseUrlError, ConfigBaseUrlError, ProviderRegistry, RouteError, Target};

mod affinity;
mod health;

pub use affinity::AffinityMap;
pub use health::{Busy, DeploymentHealth, FailureOutcome};

/// Most deployments whose health is tracked; beyond it a new one is
/// served untracked (ids come from requests, so the table is bounded).
const MAX_TRACKED: usize = 10_000;

/// A configured route with its balancing state.
#[derive(Debug)]
pub struct Route {
    /// Its configuration.
    pub config: RouteConfig,
    /// Its name, shared with affinity keys and call records.
    pub name: Arc<str>,
    /// Round-robin position (also breaks ties for the other strategies).
    next: AtomicUsize,
    /// Smooth weighted round-robin: the current weight of each target.
    weights: Mutex<Vec<i64>>,
}

/// What a requested model id stands for.
#[derive(Debug, Clone)]
pub enum Destination {
    /// One deployment (a composite or bare id, resolved as before routes).
    Deployment(Target),
    /// A route over several deployments.
    Route(Arc<Route>),
}

impl Destination {
    /// The id to report and persist: the route name, or the deployment's
    /// composite id.
    pub fn model_id(&self) -> String {
        match self {
            Destination::Deployment(target) => target.resolution.model_id.to_string(),
            Destination::Route(route) => route.config.name.clone(),
        }
    }

    /// The context window (tokens) a call to this destination can count
    /// on: the deployment's, or the smallest its route's targets report
    /// (any of them may serve); `None` when none is known.
    pub fn context_window(&self, registry: &ProviderRegistry) -> Option<u64> {
        match self {
            Destination::Deployment(target) => target.context_window(),
            Destination::Route(route) => route
                .config
                .targets
                .iter()
                .filter_map(|t| registry.context_window_of(&t.model))
                .min(),
        }
    }

    /// This destination for a call whose options come from `config`: one
    /// deployment goes to the config's custom base URL when it names one
    /// ([`ProviderRegistry::for_llm_config`]); a route goes to its own
    /// deployments, so a custom base URL with a route is refused.
    ///
    /// # Errors
    /// [`ConfigBaseUrlError`].
    pub fn for_llm_config(
        self,
        registry: &ProviderRegistry,
        config: Option<&LlmConfigRow>,
    ) -> Result<Destination, ConfigBaseUrlError> {
        match self {
            Destination::Deployment(target) => registry
                .for_llm_config(target, config)
                .map(Destination::Deployment),
            Destination::Route(route) => {
                let custom = config.and_then(|c| {
                    let url = c.fields.base_url.as_deref()?;
                    (!registry.is_configured_base_url(url)).then_some((c, url))
                });
                match custom {
                    None => Ok(Destination::Route(route)),
                    Some((config, url)) => Err(ConfigBaseUrlError {
                        config_id: config.id.clone(),
                        error: BaseUrlError::Route {
                            url: modelyard_upstream::client::redact_url(url),
                            route: route.config.name.clone(),
                        },
                    }),
                }
            }
        }
    }

    /// The route, when this is one.
    pub fn route(&self) -> Option<&Arc<Route>> {
        match self {
            Destination::Route(route) => Some(route),
            Destination::Deployment(_) => None,
        }
    }
}

/// Routes, deployment health and affinity of this process.
#[derive(Debug)]
pub struct Router {
    /// `[routing]`.
    pub config: RoutingConfig,
    routes: Vec<Arc<Route>>,
    by_name: HashMap<String, Arc<Route>>,
    health: RwLock<HashMap<Arc<str>, Arc<DeploymentHealth>>>,
    /// Conversation affinity.
    pub affinity: AffinityMap,
    /// Changes whenever a cooldown starts (rendered catalog bodies key on it).
    epoch: AtomicU64,
    /// Where attempts, retries, fallbacks and cooldowns are counted.
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// Where each attempt's span is made ([`crate::traces`]).
    pub traces: Arc<crate::traces::Traces>,
}

impl Router {
    /// The router of `routing` and `routes` (validated config).
    pub fn new(routing: RoutingConfig, routes: &[RouteConfig]) -> Self {
        Self::with_metrics(routing, routes, crate::telemetry::Metrics::disabled())
    }

    /// [`Self::new`], counting into `metrics`.
    pub fn with_metrics(
        routing: RoutingConfig,
        routes: &[RouteConfig],
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        let routes: Vec<Arc<Route>> = routes
            .iter()
            .map(|config| {
                Arc::new(Route {
                    name: Arc::from(config.name.as_str()),
                    weights: Mutex::new(vec![0; config.targets.len()]),
                    next: AtomicUsize::new(0),
                    config: config.clone(),
                })
            })
            .collect();
        let by_name = routes
            .iter()
            .map(|r| (r.config.name.clone(), Arc::clone(r)))
            .collect();
        let mut health = HashMap::new();
        for route in &routes {
            for target in &route.config.targets {
                health
                    .entry(Arc::from(target.model.as_str()))
                    .or_insert_with(|| Arc::new(DeploymentHealth::default()));
            }
        }
        Self {
            config: routing,
            routes,
            by_name,
            health: RwLock::new(health),
            affinity: AffinityMap::default(),
            epoch: AtomicU64::new(0),
            metrics,
            traces: Arc::new(crate::traces::Traces::disabled()),
        }
    }

    /// This router, making each attempt's span with `traces`.
    pub fn with_traces(mut self, traces: Arc<crate::traces::Traces>) -> Self {
        self.traces = traces;
        self
    }

    /// The routes in config order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name)
    }

    /// What `requested` (or `defaults.model` when it names none) stands
    /// for: a route name (bare ids included) is that route; anything else
    /// resolves to one deployment by the registry's rules.
    ///
    /// # Errors
    /// [`RouteError`] from the registry.
    pub fn destination(
        &self,
        registry: &ProviderRegistry,
        requested: Option<&str>,
    ) -> Result<Destination, RouteError> {
        let wanted = requested
            .filter(|m| !m.is_empty())
            .or(registry.default_model());
        if let Some(route) = wanted.and_then(|name| self.by_name.get(name)) {
            return Ok(Destination::Route(Arc::clone(route)));
        }
        registry.resolve(requested).map(Destination::Deployment)
    }

    /// The health record of `deployment` (a composite id), created on first
    /// use.
    pub fn health(&self, deployment: &str) -> Arc<DeploymentHealth> {
        if let Some(h) = self.read_health().get(deployment) {
            return Arc::clone(h);
        }
        let mut table = self.health.write().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_TRACKED && !table.contains_key(deployment) {
            return Arc::new(DeploymentHealth::default());
        }
        Arc::clone(
            table
                .entry(Arc::from(deployment))
                .or_insert_with(|| Arc::new(DeploymentHealth::default())),
        )
    }

    /// When `deployment`'s cooldown ends (unix ms), if it is cooling down.
    pub fn cooling_until(&self, deployment: &str, now_ms: i64) -> Option<i64> {
        self.read_health()
            .get(deployment)
            .and_then(|h| h.cooling_until(now_ms))
    }

    /// Every deployment cooling down now, with the end of its cooldown and
    /// its last error, sorted by id.
    pub fn cooling_down(&self, now_ms: i64) -> Vec<(String, i64, Option<String>)> {
        let mut out: Vec<(String, i64, Option<String>)> = self
            .read_health()
            .iter()
            .filter_map(|(id, h)| {
                h.cooling_until(now_ms)
                    .map(|until| (id.to_string(), until, h.last_error()))
            })
            .collect();
        out.sort();
        out
    }

    /// Counts a failure of `deployment`; logs and bumps the epoch when it
    /// starts a cooldown.
    pub fn record_failure(
        &self,
        deployment: &str,
        now_ms: i64,
        retry_after_ms: Option<u64>,
        error: &str,
    ) {
        let outcome =
            self.health(deployment)
                .record_failure(&self.config, now_ms, retry_after_ms, error);
        if let FailureOutcome::CooledDown(until) = outcome {
            self.epoch.fetch_add(1, Ordering::Relaxed);
            self.metrics.cooldown(deployment);
            tracing::warn!(
                deployment,
                cooling_down_ms = until - now_ms,
                error,
                "deployment cooling down"
            );
        }
    }

    /// A number that changes whenever a cooldown starts, plus the current
    /// second's cooldowns ending (for cached catalog bodies).
    pub fn epoch(&self, now_ms: i64) -> (u64, usize) {
        let cooling = self
            .read_health()
            .values()
            .filter(|h| h.cooling_until(now_ms).is_some())
            .count();
        (self.epoch.load(Ordering::Relaxed), cooling)
    }

    fn read_health(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<DeploymentHealth>>> {
        self.health.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// One candidate of a pick: its index in the route's targets and health.
#[derive(Debug)]
pub struct Candidate<'a> {
    /// Index in `route.config.targets`.
    pub index: usize,
    /// Its health.
    pub health: &'a DeploymentHealth,
}

impl Route {
    /// Picks one of `candidates` (non-empty; healthy targets of this route)
    /// by the route's strategy; returns its position in `candidates`.
    pub fn pick(&self, candidates: &[Candidate<'_>]) -> usize {
        let n = candidates.len();
        if n <= 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // The first minimum, scanning from a rotating start, so ties spread.
        let min_by = |key: &dyn Fn(&Candidate<'_>) -> u64| {
            (0..n)
                .map(|k| (start + k) % n)
                .min_by_key(|i| key(&candidates[*i]))
                .unwrap_or(start)
        };
        match self.config.strategy {
            Strategy::RoundRobin => start,
            Strategy::LeastBusy => min_by(&|c| u64::from(c.health.in_flight())),
            // No sample yet counts as fastest, so every target gets measured.
            Strategy::LowestLatency => min_by(&|c| c.health.ttft_us().unwrap_or(0)),
            Strategy::Weighted => {
                // Smooth weighted round-robin (as nginx balances upstreams):
                // every candidate gains its weight, the largest is picked
                // and loses the total.
                let mut current = self.weights.lock().unwrap_or_else(|e| e.into_inner());
                let mut total = 0i64;
                let mut best = 0usize;
                for (i, c) in candidates.iter().enumerate() {
                    let weight = i64::from(self.config.targets[c.index].weight);
                    total += weight;
                    let Some(slot) = current.get_mut(c.index) else {
                        continue;
                    };
                    *slot += weight;
                    if current.get(candidates[best].index) < current.get(c.index) {
                        best = i;
                    }
                }
                if let Some(slot) = current.get_mut(candidates[best].index) {
                    *slot -= total;
                }
                best
            }
        }
    }

    /// Whether this route keeps conversations on one deployment.
    pub fn sticky(&self) -> bool {
        self.config.affinity == Affinity::Conversation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteTarget;

    fn route(strategy: Strategy, weights: &[u32]) -> Arc<Route> {
        let config = RouteConfig {
            name: "r".into(),
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, w)| RouteTarget {
                    model: format!("p{i}/m"),
                    weight: *w,
                })
                .collect(),
            strategy,
            affinity: Affinity::None,
            fallbacks: Vec::new(),
        };
        Arc::clone(&Router::new(RoutingConfig::default(), &[config]).routes()[0])
    }

    fn counts(route: &Route, healths: &[DeploymentHealth], rounds: usize) -> Vec<usize> {
        let mut counts = vec![0; healths.len()];
        for _ in 0..rounds {
            let candidates: Vec<Candidate<'_>> = healths
                .iter()
                .enumerate()
                .map(|(index, health)| Candidate { index, health })
                .collect();
            counts[candidates[route.pick(&candidates)].index] += 1;
        }
        counts
    }

    #[test]
    fn weighted_shares_are_exact() {
        let r = route(Strategy::Weighted, &[1, 2, 3]);
        let healths: Vec<DeploymentHealth> = (0..3).map(|_| DeploymentHealth::default()).collect();
        assert_eq!(counts(&r, &healths, 600), vec![100, 200, 300]);
    }

    #[test]
    fn round_robin_alternates() {
        let r = route(Strategy::RoundRobin, &[1, 1]);
        let healths: Vec<DeploymentHealth> = (0..2).map(|_| DeploymentHealth::default()).collect();
        assert_eq!(counts(&r, &healths, 300), vec![150, 150]);
    }

    #[test]
    fn lowest_latency_measures_each_then_prefers_the_fastest() {
        let r = route(Strategy::LowestLatency, &[1, 1]);
        let healths: Vec<Arc<DeploymentHealth>> = (0..2)
            .map(|_| Arc::new(DeploymentHealth::default()))
            .collect();
        let candidates = |h: &[Arc<DeploymentHealth>]| -> Vec<usize> {
            let c: Vec<Candidate<'_>> = h
                .iter()
                .enumerate()
                .map(|(index, health)| Candidate { index, health })
                .collect();
            (0..6).map(|_| r.pick(&c)).collect()
        };
        // Unmeasured targets count as fastest: the one without a sample goes first.
        healths[0].busy().observe_ttft(50);
        assert!(candidates(&healths).iter().all(|i| *i == 1));
        healths[1].busy().observe_ttft(20);
        assert!(candidates(&healths).iter().all(|i| *i == 1));
        for _ in 0..20 {
            healths[1].busy().observe_ttft(200);
        }
        assert!(candidates(&healths).iter().all(|i| *i == 0));
    }

    #[test]
    fn least_busy_prefers_the_idle_one() {
        let r = route(Strategy::LeastBusy, &[1, 1]);
        let healths: Vec<Arc<DeploymentHealth>> = (0..2)
            .map(|_| Arc::new(DeploymentHealth::default()))
            .collect();
        let _held = healths[0].busy();
        let candidates: Vec<Candidate<'_>> = healths
            .iter()
            .enumerate()
            .map(|(index, h)| Candidate { index, health: h })
            .collect();
        for _ in 0..10 {
            assert_eq!(r.pick(&candidates), 1);
        }
    }
}
