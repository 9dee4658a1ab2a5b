//! `[routing]` and `[[routes]]`: retries, cooldowns and named routes over
//! several deployments (see `docs/design.md#routing`).

use modelyard_core::ModelRef;

use super::raw::{RawRoute, RawRouteTarget, RawRouting};
use super::validate::error_in;
use super::{ConfigError, ProviderConfig};

/// `[routing]`: how a model call is retried and when a deployment (one
/// `provider/model`) is cooled down. Terms follow LiteLLM's router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Extra attempts after a retryable failure, before the first byte
    /// reaches the client (`retries`, default 2, 0..=10); each fallback
    /// gets as many again.
    pub retries: u32,
    /// Which failures are retried (`retry_on`, default `["connect",
    /// "timeout", 429, 500, 502, 503, 504]`).
    pub retry_on: RetryOn,
    /// Base of the exponential back-off with full jitter before retrying
    /// the same deployment, ms (`backoff_ms`, default 100, 0..=60 000).
    pub backoff_ms: u64,
    /// Longest upstream `Retry-After` waited for, ms (`max_retry_after_ms`,
    /// default 10 000); a longer one sends the request to another
    /// deployment, else fails with it.
    pub max_retry_after_ms: u64,
    /// Failures of one deployment within `cooldown_window_ms` that cool it
    /// down (`cooldown_failures`, default 3, 1..=1 000).
    pub cooldown_failures: u32,
    /// Window in which failures are counted, ms (`cooldown_window_ms`,
    /// default 60 000).
    pub cooldown_window_ms: u64,
    /// How long a cooled-down deployment is skipped, ms (`cooldown_ms`,
    /// default 30 000), or the upstream's `Retry-After` if longer.
    pub cooldown_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            retries: 2,
            retry_on: RetryOn::default(),
            backoff_ms: 100,
            max_retry_after_ms: 10_000,
            cooldown_failures: 3,
            cooldown_window_ms: 60_000,
            cooldown_ms: 30_000,
        }
    }
}

/// `routing.retry_on`: the failure classes that are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// `"connect"`: the connection could not be made or broke before an
    /// answer.
    pub connect: bool,
    /// `"timeout"`: no answer within the provider's deadlines.
    pub timeout: bool,
    /// Upstream HTTP statuses (e.g. 429, 503).
    pub statuses: Vec<u16>,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self {
            connect: true,
            timeout: true,
            statuses: vec![429, 500, 502, 503, 504],
        }
    }
}

/// One `[[routes]]` entry: a model id clients send like any other, standing
/// for several deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The id clients send (`name`); never `<provider>/…`.
    pub name: String,
    /// Its deployments, composite `provider/model` ids, with weights.
    pub targets: Vec<RouteTarget>,
    /// How a deployment is picked (`strategy`, default `least-busy`).
    pub strategy: Strategy,
    /// Whether a conversation stays on the deployment that served its last
    /// turn (`affinity`, default `conversation`).
    pub affinity: Affinity,
    /// Tried in order once every target failed (`fallbacks`): deployments
    /// or other routes.
    pub fallbacks: Vec<String>,
}

/// A route's deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// Composite `provider/model` id.
    pub model: String,
    /// Share for the `weighted` strategy (`weight`, default 1, 1..=1 000).
    pub weight: u32,
}

/// A route's load-balancing strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `round-robin`: in turn.
    RoundRobin,
    /// `weighted`: in proportion to the targets' weights (smooth weighted
    /// round-robin, so the shares hold exactly over any window).
    Weighted,
    /// `least-busy`: the target with the fewest requests in flight.
    LeastBusy,
    /// `lowest-latency`: the lowest moving average of time to first token.
    LowestLatency,
}

impl Strategy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastBusy => "least-busy",
            Strategy::LowestLatency => "lowest-latency",
        }
    }
}

/// Route affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// `none`: every request is balanced on its own.
    None,
    /// `conversation`: turns of a conversation (gateway: requests with the
    /// same `user` or `x-modelyard-affinity`) go to the deployment that
    /// served the previous one while it is healthy.
    Conversation,
}

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
