//! The provider registry: configured providers, their clients, and what the
//! last discovery saw (models, status). Discovery runs at start-up and on an
//! interval in the background; requests only read the last snapshot, so a
//! slow or dead provider never delays a request for another one.
//!
//! Custom base URLs (`[security] allow_custom_base_urls`): a turn whose LLM
//! config names a `baseUrl` that is no configured provider's is sent there
//! ([`ProviderRegistry::for_llm_config`]) through a client that connects
//! only to addresses `base_url_allowlist` allows, checked after DNS
//! resolution, never to link-local / cloud metadata addresses
//! (`modelyard_upstream::ssrf`). Such a target keeps the model id the turn
//! resolved (the config's `model`, for example `local/llama-3`: what the
//! conversation selects and what `tool-results` resolves again); only the
//! upstream model name (`llama-3`) is sent, and the call records name the
//! provider [`CUSTOM_PROVIDER`]. Its client is kind `openai`, has default
//! timeouts, no key, headers, proxy or `set_params`, and is cached per base
//! URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use modelyard_core::{resolve_model, ProviderView, Resolution, ResolveError};
use modelyard_upstream::ssrf::AddressPolicy;
use modelyard_upstream::{ProviderClient, ProviderEndpoint, UpstreamError};
use secrecy::SecretString;

use crate::config::Config;

mod custom;
mod provider;
mod rendered;

use custom::CustomBaseUrls;

pub use custom::{BaseUrlError, ConfigBaseUrlError, CUSTOM_PROVIDER};
pub use provider::{CatalogModel, ContextWindowSource, Provider, ProviderState, ProviderStatus};
pub use rendered::RenderedBodies;

/// A resolved request target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolution (composite id and why).
    pub resolution: Resolution,
    /// The provider to call.
    pub provider: Arc<Provider>,
}

impl Target {
    /// Whether the provider's last discovery says this model is loaded
    /// (`None` when the kind does not say or the model is not listed).
    pub fn loaded(&self) -> Option<bool> {
        let model = self.resolution.model_id.model();
        self.provider
            .read_state()
            .catalog
            .iter()
            .find(|m| m.model == model)
            .and_then(|m| m.loaded)
    }

    /// The model's context window (tokens) by the provider's last
    /// discovery or its config entry; `None` when neither says.
    pub fn context_window(&self) -> Option<u64> {
        let model = self.resolution.model_id.model();
        self.provider
            .read_state()
            .catalog
            .iter()
            .find(|m| m.model == model)
            .and_then(|m| m.context_window)
    }

    /// Whether the provider's host loads and unloads this model on request
    /// (llama-swap, Ollama, llama.cpp router mode), by its last discovery.
    pub fn host_loads(&self) -> bool {
        let model = self.resolution.model_id.model();
        self.provider
            .read_state()
            .catalog
            .iter()
            .any(|m| m.model == model && m.host_loads)
    }
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

/// All providers.
#[derive(Debug)]
pub struct ProviderRegistry {
    providers: Vec<Arc<Provider>>,
    /// Catalog response bodies rendered from the current snapshot.
    pub rendered: RenderedBodies,
    default_provider: Option<String>,
    default_model: Option<String>,
    custom: CustomBaseUrls,
}

impl ProviderRegistry {
    /// The context window (tokens) the catalog shows for composite id
    /// `provider/model`; `None` when the provider is unknown, does not
    /// list the model, or does not say.
    pub fn context_window_of(&self, model_id: &str) -> Option<u64> {
        let (provider, model) = model_id.split_once('/')?;
        self.provider(provider)?
            .read_state()
            .catalog
            .iter()
            .find(|m| m.model == model)
            .and_then(|m| m.context_window)
    }

    /// Builds clients for every provider. A provider with `enabled = false`,
    /// or whose `api_key_env` variable is unset, is disabled with that
    /// reason — shown, not an error.
    ///
    /// # Errors
    /// A provider whose client cannot be built (invalid header values), or
    /// an invalid `[security] base_url_allowlist` entry.
    pub fn new(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, modelyard_upstream::UpstreamError> {
        let mut providers = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            let (api_key, disabled_reason) = match (&p.api_key_env, p.enabled) {
                (_, false) => (
                    None,
                    Some("disabled in the config (enabled = false)".to_owned()),
                ),
                (Some(var), true) => match env(var).filter(|v| !v.is_empty()) {
                    Some(key) => (Some(SecretString::from(key)), None),
                    None => (None, Some(format!("environment variable {var} is not set"))),
                },
                (None, true) => (None, None),
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
                    proxy_url: p.proxy_url.clone(),
                    timeouts: p.timeouts,
                })?),
            };
            let configured: Vec<String> = p.models.iter().map(|m| m.id.clone()).collect();
            let mut provider = Provider {
                config: p.clone(),
                client,
                disabled_reason: disabled_reason.clone(),
                state: RwLock::new(ProviderState {
                    status: if disabled_reason.is_some() {
                        ProviderStatus::Disabled
                    } else {
                        ProviderStatus::Unknown
                    },
                    models: (!configured.is_empty()).then(|| Arc::new(configured.clone())),
                    catalog: Arc::new(Vec::new()),
                    last_error: None,
                    last_checked_at_ms: None,
                    last_ok_at_ms: None,
                }),
                seen: RwLock::new(configured.into_iter().collect()),
            };
            let catalog = provider.catalog_from(&[]);
            provider
                .state
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .catalog = Arc::new(catalog);
            if let Some(reason) = &disabled_reason {
                tracing::warn!(provider = %p.name, reason = %reason, "provider disabled");
            }
            providers.push(Arc::new(provider));
        }
        let default_provider = config
            .defaults
            .provider
            .clone()
            .or_else(|| config.providers.first().map(|p| p.name.to_string()));
        let policy = AddressPolicy::new(&config.security.base_url_allowlist).map_err(|e| {
            UpstreamError::Config {
                provider: "[security]".to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            providers,
            rendered: RenderedBodies::default(),
            default_provider,
            default_model: config.defaults.default_model().map(str::to_owned),
            custom: CustomBaseUrls {
                allowed: config.security.allow_custom_base_urls,
                policy: Arc::new(policy),
                configured: config
                    .providers
                    .iter()
                    .map(|p| p.base_url.as_str().trim_end_matches('/').to_owned())
                    .collect(),
                providers: Mutex::new(HashMap::new()),
            },
        })
    }

    /// The providers in config order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// `defaults.model`, used when a request names no model.
    pub fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    /// The provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Probes every enabled provider concurrently.
    pub async fn refresh_all(&self) {
        futures_util::future::join_all(self.providers.iter().map(|p| p.refresh())).await;
    }

    /// Starts one probe loop per enabled provider, each on its own
    /// `probe_interval_ms`. Abort the handles to stop them.
    pub fn spawn_refresh(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.providers
            .iter()
            .filter(|p| p.client.is_some())
            .map(|provider| {
                let provider = Arc::clone(provider);
                tokio::spawn(async move {
                    let interval = Duration::from_millis(provider.config.probe_interval_ms);
                    let mut ticker = tokio::time::interval(interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ticker.tick().await;
                    loop {
                        ticker.tick().await;
                        provider.refresh().await;
                    }
                })
            })
            .collect()
    }

    /// Resolves the request's model (or `defaults.model` when it names none)
    /// against the last discovery snapshot. Takes read locks only, never
    /// across IO.
    ///
    /// # Errors
    /// [`RouteError`].
    pub fn resolve(&self, requested: Option<&str>) -> Result<Target, RouteError> {
        let requested = requested
            .filter(|m| !m.is_empty())
            .or(self.default_model.as_deref())
            .ok_or(RouteError::NoModel)?;
        let resolution = {
            let states: Vec<RwLockReadGuard<'_, ProviderState>> =
                self.providers.iter().map(|p| p.read_state()).collect();
            let views: Vec<ProviderView<'_>> = self
                .providers
                .iter()
                .zip(&states)
                .map(|(p, s)| ProviderView {
                    name: p.name(),
                    online: s.status == ProviderStatus::Online,
                    // A disabled provider serves nothing: bare ids never go to
                    // it (not even as the default); a composite id for it is
                    // accepted and answered with `RouteError::Disabled` below.
                    models: match s.status {
                        ProviderStatus::Disabled => None,
                        _ => s.models.as_deref().map(Vec::as_slice),
                    },
                })
                .collect();
            resolve_model(requested, &views, self.default_provider.as_deref())?
        };
        let provider = self
            .provider(resolution.model_id.provider().as_str())
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

    /// A fingerprint of every provider's snapshot: it changes whenever a
    /// probe stores a result, so rendered bodies keyed by it stay true.
    pub fn snapshot_key(&self, hasher: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        for provider in &self.providers {
            let state = provider.read_state();
            state.last_checked_at_ms.hash(hasher);
            state.status.as_str().hash(hasher);
            (Arc::as_ptr(&state.catalog) as usize).hash(hasher);
        }
    }

    /// Whether `model_id` (composite) names a model its provider has listed
    /// or declared at any time since start-up.
    pub fn has_seen(&self, model_id: &str) -> bool {
        let Some((provider, model)) = model_id.split_once('/') else {
            return false;
        };
        self.provider(provider).is_some_and(|p| p.has_seen(model))
    }

    /// Every composite id seen since start-up, for suggestions.
    pub fn seen_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.providers {
            let seen = p.seen.read().unwrap_or_else(|e| e.into_inner());
            out.extend(seen.iter().map(|m| format!("{}/{}", p.name(), m)));
        }
        out.sort();
        out
    }
}
