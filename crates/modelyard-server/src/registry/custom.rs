//! Custom base URLs (`[security] allow_custom_base_urls`): checking an LLM
//! config's `baseUrl` and the guarded, cached clients that call it; see the
//! [registry docs](super).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use modelyard_core::ProviderName;
use modelyard_store::LlmConfigRow;
use modelyard_upstream::ssrf::{AddressPolicy, GuardedResolver, SsrfError};
use modelyard_upstream::{ProviderClient, ProviderKind, Timeouts, UpstreamError};
use url::Url;

use super::{Provider, ProviderRegistry, ProviderState, ProviderStatus, Target};
use crate::config::ProviderConfig;

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
    /// The model is a route, whose deployments have their own providers.
    #[error(
        "{url:?} cannot be used with route '{route}': a route's deployments are sent to their \
         own providers"
    )]
    Route {
        /// The URL (redacted).
        url: String,
        /// The route.
        route: String,
    },
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
pub(super) struct CustomBaseUrls {
    pub(super) allowed: bool,
    pub(super) policy: Arc<AddressPolicy>,
    /// The configured providers' base URLs, without a trailing `/`.
    pub(super) configured: Vec<String>,
    pub(super) providers: Mutex<HashMap<String, Arc<Provider>>>,
}

impl ProviderRegistry {
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

    /// Whether `url` is a configured provider's base URL (a trailing `/`
    /// aside).
    pub fn is_configured_base_url(&self, url: &str) -> bool {
        let wanted = url.trim_end_matches('/');
        self.custom.configured.iter().any(|u| u == wanted)
    }

    /// `target`, sent to `config`'s custom `baseUrl` when it names one (see
    /// the [module docs](super)); unchanged without a config, without a `baseUrl`, or
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
                messages_api: false,
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
}
