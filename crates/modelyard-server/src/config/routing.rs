//! `[routing]` and `[[routes]]`: retries, cooldowns and named routes over
//! several deployments (see `docs/design.md#routing`).

use modelyard_core::ModelRef;

use super::raw::{RawRoute, RawRouteTarget, RawRouting};
use super::validate::error_in;
use super::{
    Affinity, ConfigError, ProviderConfig, RetryOn, RouteConfig, RouteTarget, RoutingConfig,
    Strategy,
};

/// Most targets of one route.
const MAX_TARGETS: usize = 64;
/// Longest route name, bytes.
const MAX_NAME_BYTES: usize = 256;

/// `[routing]`.
pub(super) fn routing(raw: RawRouting, source_name: &str) -> Result<RoutingConfig, ConfigError> {
    let err = error_in(source_name);
    let defaults = RoutingConfig::default();
    let in_range = |field: &str, value: Option<i64>, min: i64, max: i64, default: u64| {
        let v = value.unwrap_or(default as i64);
        if (min..=max).contains(&v) {
            Ok(v as u64)
        } else {
            Err(err(
                format!("routing.{field}"),
                format!("must be between {min} and {max}, got {v}"),
            ))
        }
    };
    let retry_on = match raw.retry_on {
        None => RetryOn::default(),
        Some(entries) => {
            let mut retry_on = RetryOn {
                connect: false,
                timeout: false,
                statuses: Vec::new(),
            };
            for (i, entry) in entries.iter().enumerate() {
                match entry {
                    toml::Value::String(s) if s == "connect" => retry_on.connect = true,
                    toml::Value::String(s) if s == "timeout" => retry_on.timeout = true,
                    toml::Value::Integer(n) if (400..=599).contains(n) => {
                        retry_on.statuses.push(*n as u16)
                    }
                    other => {
                        return Err(err(
                            format!("routing.retry_on[{i}]"),
                            format!(
                                "{other} is not \"connect\", \"timeout\" or an HTTP status \
                                 400-599"
                            ),
                        ))
                    }
                }
            }
            retry_on
        }
    };
    Ok(RoutingConfig {
        retries: in_range("retries", raw.retries, 0, 10, u64::from(defaults.retries))? as u32,
        retry_on,
        backoff_ms: in_range("backoff_ms", raw.backoff_ms, 0, 60_000, defaults.backoff_ms)?,
        max_retry_after_ms: in_range(
            "max_retry_after_ms",
            raw.max_retry_after_ms,
            0,
            3_600_000,
            defaults.max_retry_after_ms,
        )?,
        cooldown_failures: in_range(
            "cooldown_failures",
            raw.cooldown_failures,
            1,
            1_000,
            u64::from(defaults.cooldown_failures),
        )? as u32,
        cooldown_window_ms: in_range(
            "cooldown_window_ms",
            raw.cooldown_window_ms,
            1,
            86_400_000,
            defaults.cooldown_window_ms,
        )?,
        cooldown_ms: in_range(
            "cooldown_ms",
            raw.cooldown_ms,
            0,
            86_400_000,
            defaults.cooldown_ms,
        )?,
    })
}

/// Every `[[routes]]` entry, in file order. Targets and fallbacks must name
/// configured providers (their models are checked at request time, since
/// discovery may not have run); fallbacks may also name routes, later ones
/// included. Fallback cycles are allowed: a request never visits a route
/// twice.
pub(super) fn routes(
    raw: Vec<RawRoute>,
    providers: &[ProviderConfig],
    source_name: &str,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let err = error_in(source_name);
    let is_provider = |p: &str| providers.iter().any(|c| c.name.as_str() == p);
    let names: Vec<&str> = raw.iter().map(|r| r.name.as_str()).collect();
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
    for (i, route) in raw.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let name = route.name.as_str();
        if name.is_empty()
            || name.len() > MAX_NAME_BYTES
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err(
                key("name"),
                format!(
                    "{name:?} is not a route name (1-{MAX_NAME_BYTES} bytes, no spaces or \
                     control characters)"
                ),
            ));
        }
        if let Some((prefix, _)) = name.split_once('/') {
            if is_provider(prefix) {
                return Err(err(
                    key("name"),
                    format!(
                        "{name:?} starts with the provider name {prefix:?} and a '/', so it \
                         would read as a deployment of that provider; pick another name"
                    ),
                ));
            }
        }
        if routes.iter().any(|r| r.name == name) {
            return Err(err(key("name"), format!("duplicate route name {name:?}")));
        }
        if route.targets.is_empty() || route.targets.len() > MAX_TARGETS {
            return Err(err(
                key("targets"),
                format!("needs 1-{MAX_TARGETS} deployments"),
            ));
        }
        let mut targets: Vec<RouteTarget> = Vec::with_capacity(route.targets.len());
        for (j, target) in route.targets.iter().enumerate() {
            let tkey = format!("routes[{i}].targets[{j}]");
            let (model, weight) = match target {
                RawRouteTarget::Id(model) => (model, None),
                RawRouteTarget::Weighted { model, weight } => (model, *weight),
            };
            deployment(model, &is_provider).map_err(|reason| err(tkey.clone(), reason))?;
            let weight = weight.unwrap_or(1);
            if !(1..=1_000).contains(&weight) {
                return Err(err(
                    format!("{tkey}.weight"),
                    format!("must be between 1 and 1000, got {weight}"),
                ));
            }
            if targets.iter().any(|t| t.model == *model) {
                return Err(err(tkey, format!("{model:?} is listed twice")));
            }
            targets.push(RouteTarget {
                model: model.clone(),
                weight: weight as u32,
            });
        }
        let strategy = match route.strategy.as_deref() {
            None | Some("least-busy") => Strategy::LeastBusy,
            Some("round-robin") => Strategy::RoundRobin,
            Some("weighted") => Strategy::Weighted,
            Some("lowest-latency") => Strategy::LowestLatency,
            Some(other) => {
                return Err(err(
                    key("strategy"),
                    format!(
                        "{other:?} is not one of \"round-robin\", \"weighted\", \"least-busy\", \
                         \"lowest-latency\""
                    ),
                ))
            }
        };
        let affinity = match route.affinity.as_deref() {
            None | Some("conversation") => Affinity::Conversation,
            Some("none") => Affinity::None,
            Some(other) => {
                return Err(err(
                    key("affinity"),
                    format!("{other:?} is not \"none\" or \"conversation\""),
                ))
            }
        };
        for (j, fallback) in route.fallbacks.iter().enumerate() {
            if fallback == name {
                return Err(err(
                    format!("routes[{i}].fallbacks[{j}]"),
                    "a route cannot be its own fallback".into(),
                ));
            }
            if !names.contains(&fallback.as_str()) {
                deployment(fallback, &is_provider).map_err(|reason| {
                    err(
                        format!("routes[{i}].fallbacks[{j}]"),
                        format!("{reason}, and no route has that name"),
                    )
                })?;
            }
        }
        routes.push(RouteConfig {
            name: name.to_owned(),
            targets,
            strategy,
            affinity,
            fallbacks: route.fallbacks.clone(),
        });
    }
    Ok(routes)
}

/// Checks that `model` is a composite id of a configured provider.
fn deployment(model: &str, is_provider: &dyn Fn(&str) -> bool) -> Result<(), String> {
    match ModelRef::parse(model, is_provider) {
        Ok(ModelRef::Composite(_)) => Ok(()),
        Ok(ModelRef::Bare(_)) | Err(_) => Err(format!(
            "{model:?} is not a deployment: write <provider>/<model> with a configured provider"
        )),
    }
}
