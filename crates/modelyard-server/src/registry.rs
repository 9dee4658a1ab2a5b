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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use modelyard_core::{resolve_model, ProviderName, ProviderView, Resolution, ResolveError};
use modelyard_store::LlmConfigRow;
use modelyard_upstream::ssrf::{AddressPolicy, GuardedResolver, SsrfError};
use modelyard_upstream::{
    DiscoveredModel, ProviderClient, ProviderEndpoint, ProviderKind, Timeouts, UpstreamError,
};
use secrecy::SecretString;
use url::Url;

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
    /// The provider's models as the catalog shows them (discovered in the
    /// provider's order, then declared-only ones).
    pub catalog: Arc<Vec<CatalogModel>>,
    /// Last probe error (redacted), if the last probe failed.
    pub last_error: Option<String>,
    /// Last probe time, unix ms.
    pub last_checked_at_ms: Option<i64>,
    /// Last successful probe time, unix ms.
    pub last_ok_at_ms: Option<i64>,
}

/// Where a context window number came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextWindowSource {
    /// The provider's `models` entry in the config file.
    Config,
    /// The serving process reported it.
    Provider,
}

impl ContextWindowSource {
    /// `config` or `provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextWindowSource::Config => "config",
            ContextWindowSource::Provider => "provider",
        }
    }
}

/// One model of one provider, as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogModel {
    /// Upstream model name.
    pub model: String,
    /// Display name: the config's, else the provider's, else the upstream name.
    pub display_name: String,
    /// Context window, tokens; `None` when neither config nor provider says.
    pub context_window: Option<u64>,
    /// Where `context_window` came from.
    pub context_window_source: Option<ContextWindowSource>,
    /// The provider endpoint and field that reported it (`/props n_ctx`).
    pub context_window_from: Option<&'static str>,
    /// Loaded state, for kinds that report it.
    pub loaded: Option<bool>,
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
    /// Upstream names listed or declared at any time since start-up.
    seen: RwLock<HashSet<String>>,
}

impl Provider {
    /// Provider name.
    pub fn name(&self) -> &str {
        self.config.name.as_str()
    }

    /// A copy of the last observed state.
    pub fn state(&self) -> ProviderState {
        self.read_state().clone()
    }

    fn read_state(&self) -> RwLockReadGuard<'_, ProviderState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the provider listed or declared `model` at any time since start-up.
    pub fn has_seen(&self, model: &str) -> bool {
        self.seen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(model)
    }

    /// Whether the last probe succeeded.
    pub fn is_online(&self) -> bool {
        self.read_state().status == ProviderStatus::Online
    }

    /// Builds the catalog entries from a discovery: discovered models in the
    /// provider's order, then models only declared in the config. Config
    /// overrides (context window, display name) win over what was reported.
    fn catalog_from(&self, discovered: &[DiscoveredModel]) -> Vec<CatalogModel> {
        let mut out: Vec<CatalogModel> = discovered
            .iter()
            .map(|d| self.catalog_entry(&d.id, Some(d)))
            .collect();
        for declared in &self.config.models {
            if !discovered.iter().any(|d| d.id == declared.id) {
                out.push(self.catalog_entry(&declared.id, None));
            }
        }
        out
    }

    fn catalog_entry(&self, model: &str, discovered: Option<&DiscoveredModel>) -> CatalogModel {
        let declared = self.config.models.iter().find(|m| m.id == model);
        let (context_window, context_window_source, context_window_from) = match (
            declared.and_then(|m| m.context_window),
            discovered.and_then(|d| d.context_window),
        ) {
            (Some(n), _) => (Some(n), Some(ContextWindowSource::Config), None),
            (None, Some(n)) => (
                Some(n),
                Some(ContextWindowSource::Provider),
                discovered.and_then(|d| d.context_window_from),
            ),
            (None, None) => (None, None, None),
        };
        CatalogModel {
            model: model.to_owned(),
            display_name: declared
                .and_then(|m| m.display_name.clone())
                .or_else(|| discovered.and_then(|d| d.display_name.clone()))
                .unwrap_or_else(|| model.to_owned()),
            context_window,
            context_window_source,
            context_window_from,
            loaded: discovered.and_then(|d| d.loaded),
        }
    }

    /// Probes the provider (see `modelyard_upstream::discovery`) and stores
    /// the result. A failed probe keeps the last known models (shown as
    /// offline) and records the error.
    pub async fn refresh(&self) {
        let Some(client) = &self.client else { return };
        let result = client.discover().await;
        let now = now_ms();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.last_checked_at_ms = Some(now);
        match result {
            Ok(discovery) => {
                let catalog = self.catalog_from(&discovery.models);
                self.seen
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(catalog.iter().map(|m| m.model.clone()));
                let ids: Vec<String> = catalog.iter().map(|m| m.model.clone()).collect();
                if state.status != ProviderStatus::Online {
                    tracing::info!(
                        provider = self.name(),
                        models = ids.len(),
                        "provider online"
                    );
                }
                state.status = ProviderStatus::Online;
                state.models = Some(Arc::new(ids));
                state.catalog = Arc::new(catalog);
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

/// Response bodies rendered from the discovery snapshot (`/v1/models`,
/// `/v1/catalog`), reused until what they show changes: a probe ran (its
/// check time moves) or the favorites differ. Keeps catalog reads of large
/// fleets to a lookup instead of re-serializing thousands of models.
#[derive(Debug, Default)]
pub struct RenderedBodies {
    entries: std::sync::Mutex<std::collections::HashMap<&'static str, (u64, bytes::Bytes)>>,
}

impl RenderedBodies {
    /// The body cached under `name` for `key`, else `render()` (cached).
    pub fn get_or_render(
        &self,
        name: &'static str,
        key: u64,
        render: impl FnOnce() -> bytes::Bytes,
    ) -> bytes::Bytes {
        if let Some((cached_key, body)) = self.lock().get(name) {
            if *cached_key == key {
                return body.clone();
            }
        }
        let body = render();
        self.lock().insert(name, (key, body.clone()));
        body
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<&'static str, (u64, bytes::Bytes)>>
    {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
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

/// The provider name of custom-base-URL targets (call records, messages).
pub const CUSTOM_PROVIDER: &str = "custom";

/// Most custom-base-URL clients kept; the cache starts over beyond it.
const MAX_CUSTOM_CLIENTS: usize = 64;

/// Why an LLM config's `baseUrl` cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BaseUrlError {
    /// Not a configured provider's base URL, and custom ones are off.
    #[error(
        "{url:?} is not the base URL of a configured provider, and custom base URLs are not \
         allowed ([security] allow_custom_base_urls = false)"
    )]
    NotConfigured {
        /// The URL (redacted).
        url: String,
    },
    /// Not a URL.
    #[error("{0}")]
    Invalid(SsrfError),
    /// The address policy refuses it.
    #[error("{url:?} is refused: {reason}")]
    Refused {
        /// The URL (redacted).
        url: String,
        /// Why.
        reason: SsrfError,
    },
    /// No client could be built for it.
    #[error("{0}")]
    Client(UpstreamError),
}

/// An LLM config's `baseUrl` that cannot be used for a call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("LLM config {config_id}: baseUrl {error}")]
pub struct ConfigBaseUrlError {
    /// The config.
    pub config_id: String,
    /// Why.
    pub error: BaseUrlError,
}

/// `[security]`'s custom base URLs: the policy and one client per URL.
#[derive(Debug)]
struct CustomBaseUrls {
    allowed: bool,
    policy: Arc<AddressPolicy>,
    /// The configured providers' base URLs, without a trailing `/`.
    configured: Vec<String>,
    providers: Mutex<HashMap<String, Arc<Provider>>>,
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

    /// Checks an LLM config's `baseUrl`: a configured provider's base URL
    /// (returned as configured, without a trailing `/`), or — with `[security]
    /// allow_custom_base_urls` — an `http(s)` URL the address policy passes
    /// (returned normalized: numeric hosts in dotted form, without a
    /// trailing `/`).
    ///
    /// # Errors
    /// [`BaseUrlError::NotConfigured`], [`BaseUrlError::Invalid`] or
    /// [`BaseUrlError::Refused`].
    pub fn check_base_url(&self, text: &str) -> Result<String, BaseUrlError> {
        let wanted = text.trim().trim_end_matches('/');
        if let Some(url) = self.custom.configured.iter().find(|u| *u == wanted) {
            return Ok(url.clone());
        }
        let redacted = modelyard_upstream::client::redact_url(text.trim());
        if !self.custom.allowed {
            return Err(BaseUrlError::NotConfigured { url: redacted });
        }
        let url = self
            .custom
            .policy
            .check_url_str(text)
            .map_err(|reason| match reason {
                SsrfError::InvalidUrl { .. } => BaseUrlError::Invalid(reason),
                _ => BaseUrlError::Refused {
                    url: redacted,
                    reason,
                },
            })?;
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    /// `target`, sent to `config`'s custom `baseUrl` when it names one (see
    /// the module docs); unchanged without a config, without a `baseUrl`, or
    /// when it is a configured provider's.
    ///
    /// # Errors
    /// [`ConfigBaseUrlError`] when the base URL is not (or no longer)
    /// allowed.
    pub fn for_llm_config(
        &self,
        target: Target,
        config: Option<&LlmConfigRow>,
    ) -> Result<Target, ConfigBaseUrlError> {
        let Some(config) = config else {
            return Ok(target);
        };
        let Some(base_url) = config.fields.base_url.as_deref() else {
            return Ok(target);
        };
        let wanted = base_url.trim_end_matches('/');
        if self.custom.configured.iter().any(|u| u == wanted) {
            return Ok(target);
        }
        self.custom_target(&target, base_url)
            .map_err(|error| ConfigBaseUrlError {
                config_id: config.id.clone(),
                error,
            })
    }

    /// A target for (custom base URL, `target`'s model): the same
    /// resolution (model id), sent to `base_url` by a guarded client
    /// ([`ProviderClient::guarded`]), cached per base URL. The URL is checked
    /// against the current policy on every call.
    ///
    /// # Errors
    /// [`BaseUrlError`].
    pub fn custom_target(&self, target: &Target, base_url: &str) -> Result<Target, BaseUrlError> {
        let key = self.check_base_url(base_url)?;
        if let Some(provider) = self.custom_cache().get(&key) {
            return Ok(Target {
                resolution: target.resolution.clone(),
                provider: Arc::clone(provider),
            });
        }
        let url = Url::parse(&key).map_err(|e| {
            BaseUrlError::Invalid(SsrfError::InvalidUrl {
                url: key.clone(),
                reason: e.to_string(),
            })
        })?;
        let timeouts = Timeouts::default();
        let resolver = GuardedResolver::new(Arc::clone(&self.custom.policy));
        let client = ProviderClient::guarded(CUSTOM_PROVIDER, url.clone(), timeouts, resolver)
            .map_err(BaseUrlError::Client)?;
        let name = ProviderName::new(CUSTOM_PROVIDER).map_err(|e| {
            BaseUrlError::Client(UpstreamError::Config {
                provider: CUSTOM_PROVIDER.to_owned(),
                reason: e.to_string(),
            })
        })?;
        let provider = Arc::new(Provider {
            config: ProviderConfig {
                name,
                kind: ProviderKind::OpenAi,
                enabled: true,
                base_url: url,
                proxy_url: None,
                probe_interval_ms: target.provider.config.probe_interval_ms,
                set_params: serde_json::Map::new(),
                strip_params: Vec::new(),
                api_key_env: None,
                headers: Default::default(),
                timeouts,
                models: Vec::new(),
            },
            client: Some(client),
            disabled_reason: None,
            state: RwLock::new(ProviderState {
                status: ProviderStatus::Online,
                models: None,
                catalog: Arc::new(Vec::new()),
                last_error: None,
                last_checked_at_ms: None,
                last_ok_at_ms: None,
            }),
            seen: RwLock::new(HashSet::new()),
        });
        let mut cache = self.custom_cache();
        if cache.len() >= MAX_CUSTOM_CLIENTS {
            cache.clear();
        }
        let provider = Arc::clone(cache.entry(key).or_insert(provider));
        Ok(Target {
            resolution: target.resolution.clone(),
            provider,
        })
    }

    fn custom_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Provider>>> {
        self.custom
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The providers in config order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
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
