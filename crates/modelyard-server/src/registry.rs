//! The provider registry: configured providers, their clients, and what the
//! last discovery saw (models, status). Discovery runs at start-up and on an
//! interval in the background; requests only read the last snapshot, so a
//! slow or dead provider never delays a request for another one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use modelyard_core::{resolve_model, ProviderView, Resolution, ResolveError};
use modelyard_upstream::{ProviderClient, ProviderEndpoint, UpstreamModel};
use secrecy::SecretString;

use crate::clock::now_ms;
use crate::config::{Config, ProviderConfig};

/// Provider status as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderStatus {
    /// Not probed yet.
    Unknown,
    /// The last probe succeeded.
    Online,
    /// The last probe failed (see `last_error`).
    Offline,
    /// Not usable (for example its `api_key_env` variable is unset).
    Disabled,
}

impl ProviderStatus {
    /// `unknown`, `online`, `offline` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderStatus::Unknown => "unknown",
            ProviderStatus::Online => "online",
            ProviderStatus::Offline => "offline",
            ProviderStatus::Disabled => "disabled",
        }
    }
}

/// What discovery last saw of a provider.
#[derive(Debug, Clone)]
pub struct ProviderState {
    /// Current status.
    pub status: ProviderStatus,
    /// Upstream model names: configured ones plus discovered ones; `None`
    /// while unknown (nothing configured, never discovered).
    pub models: Option<Arc<Vec<String>>>,
    /// Discovered models with what the listing reported.
    pub discovered: Arc<Vec<UpstreamModel>>,
    /// Last probe error (redacted), if the last probe failed.
    pub last_error: Option<String>,
    /// Last probe time, unix ms.
    pub last_checked_at_ms: Option<i64>,
    /// Last successful probe time, unix ms.
    pub last_ok_at_ms: Option<i64>,
}

/// One configured provider.
#[derive(Debug)]
pub struct Provider {
    /// Its configuration.
    pub config: ProviderConfig,
    /// Its HTTP client; `None` when disabled.
    pub client: Option<ProviderClient>,
    /// Why it is disabled, if it is.
    pub disabled_reason: Option<String>,
    state: RwLock<ProviderState>,
}

impl Provider {
    /// Provider name.
    pub fn name(&self) -> &str {
        self.config.name.as_str()
    }

    /// A copy of the last observed state.
    pub fn state(&self) -> ProviderState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn configured_ids(&self) -> Vec<String> {
        self.config.models.iter().map(|m| m.id.clone()).collect()
    }

    /// Context window of `model` in tokens: the config override, else what
    /// the provider reported, else `None`. Returns the source too
    /// (`config` or `provider`).
    pub fn context_window(
        &self,
        model: &str,
        state: &ProviderState,
    ) -> (Option<u64>, Option<&'static str>) {
        if let Some(n) = self
            .config
            .models
            .iter()
            .find(|m| m.id == model)
            .and_then(|m| m.context_window)
        {
            return (Some(n), Some("config"));
        }
        match state
            .discovered
            .iter()
            .find(|m| m.id == model)
            .and_then(|m| m.context_window)
        {
            Some(n) => (Some(n), Some("provider")),
            None => (None, None),
        }
    }

    /// Probes the provider (model listing, plus health for kinds that have
    /// it) and stores the result.
    pub async fn refresh(&self) {
        let Some(client) = &self.client else { return };
        let result = async {
            let models = client.list_models().await?;
            if self.config.kind.health_path().is_some() {
                client.health().await?;
            }
            Ok::<_, modelyard_upstream::UpstreamError>(models)
        }
        .await;
        let now = now_ms();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.last_checked_at_ms = Some(now);
        match result {
            Ok(discovered) => {
                let mut ids = self.configured_ids();
                for model in &discovered {
                    if !ids.contains(&model.id) {
                        ids.push(model.id.clone());
                    }
                }
                if state.status != ProviderStatus::Online {
                    tracing::info!(
                        provider = self.name(),
                        models = ids.len(),
                        "provider online"
                    );
                }
                state.status = ProviderStatus::Online;
                state.models = Some(Arc::new(ids));
                state.discovered = Arc::new(discovered);
                state.last_error = None;
                state.last_ok_at_ms = Some(now);
            }
            Err(err) => {
                let message = err.to_string();
                // Log transitions only, so a flapping host does not flood logs.
                if state.status != ProviderStatus::Offline
                    || state.last_error.as_deref() != Some(&message)
                {
                    tracing::warn!(provider = self.name(), error = %message, "provider offline");
                }
                state.status = ProviderStatus::Offline;
                state.last_error = Some(message);
            }
        }
    }
}

/// A resolved request target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolution (composite id and why).
    pub resolution: Resolution,
    /// The provider to call.
    pub provider: Arc<Provider>,
}

/// Why a request could not be routed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    /// The request named no model and there is no `defaults.model`.
    #[error("`model` is required (no default model is configured)")]
    NoModel,
    /// Resolution failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The provider exists but is disabled.
    #[error("provider '{provider}' is disabled: {reason}")]
    Disabled {
        /// Provider name.
        provider: String,
        /// Why.
        reason: String,
    },
}

/// A model as listed by `GET /v1/models`.
#[derive(Debug, Clone)]
pub struct ListedModel {
    /// Composite id.
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// Context window, tokens.
    pub context_window: Option<u64>,
}

/// All providers.
#[derive(Debug)]
pub struct ProviderRegistry {
    providers: Vec<Arc<Provider>>,
    default_provider: Option<String>,
    default_model: Option<String>,
}

impl ProviderRegistry {
    /// Builds clients for every provider. A provider whose `api_key_env`
    /// variable is unset is disabled with that reason, not an error.
    ///
    /// # Errors
    /// A provider whose client cannot be built (invalid header values).
    pub fn new(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, modelyard_upstream::UpstreamError> {
        let mut providers = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            let (api_key, disabled_reason) = match &p.api_key_env {
                Some(var) => match env(var).filter(|v| !v.is_empty()) {
                    Some(key) => (Some(SecretString::from(key)), None),
                    None => (None, Some(format!("environment variable {var} is not set"))),
                },
                None => (None, None),
            };
            let client = match disabled_reason {
                Some(_) => None,
                None => Some(ProviderClient::new(ProviderEndpoint {
                    name: p.name.to_string(),
                    kind: p.kind,
                    base_url: p.base_url.clone(),
                    api_key,
                    headers: p
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    timeouts: p.timeouts,
                })?),
            };
            let configured: Vec<String> = p.models.iter().map(|m| m.id.clone()).collect();
            let state = ProviderState {
                status: if disabled_reason.is_some() {
                    ProviderStatus::Disabled
                } else {
                    ProviderStatus::Unknown
                },
                models: (!configured.is_empty()).then(|| Arc::new(configured)),
                discovered: Arc::new(Vec::new()),
                last_error: None,
                last_checked_at_ms: None,
                last_ok_at_ms: None,
            };
            if let Some(reason) = &disabled_reason {
                tracing::warn!(provider = %p.name, reason = %reason, "provider disabled");
            }
            providers.push(Arc::new(Provider {
                config: p.clone(),
                client,
                disabled_reason,
                state: RwLock::new(state),
            }));
        }
        let default_provider = config
            .defaults
            .provider
            .clone()
            .or_else(|| config.providers.first().map(|p| p.name.to_string()));
        Ok(Self {
            providers,
            default_provider,
            default_model: config.defaults.model.clone(),
        })
    }

    /// The providers in config order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// Probes every provider concurrently.
    pub async fn refresh_all(&self) {
        futures_util::future::join_all(self.providers.iter().map(|p| p.refresh())).await;
    }

    /// Re-probes every `interval` until the returned task is aborted.
    pub fn spawn_refresh(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                registry.refresh_all().await;
            }
        })
    }

    /// Resolves the request's model (or `defaults.model` when it names none).
    ///
    /// # Errors
    /// [`RouteError`].
    pub fn resolve(&self, requested: Option<&str>) -> Result<Target, RouteError> {
        let requested = requested
            .filter(|m| !m.is_empty())
            .or(self.default_model.as_deref())
            .ok_or(RouteError::NoModel)?;
        let states: Vec<ProviderState> = self.providers.iter().map(|p| p.state()).collect();
        let views: Vec<ProviderView<'_>> = self
            .providers
            .iter()
            .zip(&states)
            .map(|(p, s)| ProviderView {
                name: p.name(),
                online: s.status == ProviderStatus::Online,
                models: s.models.as_deref().map(Vec::as_slice),
            })
            .collect();
        let resolution = resolve_model(requested, &views, self.default_provider.as_deref())?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.name() == resolution.model_id.provider().as_str())
            .cloned()
            .ok_or(RouteError::NoModel)?;
        if let Some(reason) = &provider.disabled_reason {
            return Err(RouteError::Disabled {
                provider: provider.name().to_owned(),
                reason: reason.clone(),
            });
        }
        Ok(Target {
            resolution,
            provider,
        })
    }

    /// Every known model of every enabled provider, as composite ids.
    pub fn models(&self) -> Vec<ListedModel> {
        let mut out = Vec::new();
        for provider in &self.providers {
            if provider.disabled_reason.is_some() {
                continue;
            }
            let state = provider.state();
            for model in state.models.iter().flat_map(|m| m.iter()) {
                let (context_window, _) = provider.context_window(model, &state);
                out.push(ListedModel {
                    id: format!("{}/{}", provider.name(), model),
                    provider: provider.name().to_owned(),
                    context_window,
                });
            }
        }
        out
    }
}
