//! Which target serves an attempt: a route's healthy targets (provider
//! online, model resolvable, not cooling down), the affinity key's
//! deployment first, else one not tried yet by the route's strategy.

use std::sync::Arc;
use std::time::Duration;

use super::retry::backoff;
use super::{Group, GroupState, Pick, Plan};
use crate::app::AppState;
use crate::clock::now_ms;
use crate::config::RoutingConfig;
use crate::registry::{ProviderRegistry, ProviderStatus, Target};
use crate::routing::{Candidate, DeploymentHealth, Destination, Route, Router};

impl Plan {
    pub(super) async fn step(&mut self, mut state: GroupState, config: &RoutingConfig) -> Step {
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

    pub(super) fn take(
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

pub(super) enum Step {
    Pick(Pick),
    Again,
}
