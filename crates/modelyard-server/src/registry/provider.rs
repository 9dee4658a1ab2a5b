//! One configured provider: its client, status and what discovery last saw
//! of it (models, catalog entries).

use std::collections::HashSet;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use modelyard_upstream::{DiscoveredModel, ModelState, ProviderClient};

use crate::clock::now_ms;
use crate::config::ProviderConfig;

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
#[derive(Debug, Clone, PartialEq)]
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
    /// Whether it is in memory, as its host says (`Unknown` for kinds
    /// that do not say).
    pub state: ModelState,
    /// `Some(true)` loaded, `Some(false)` not (unloaded, loading, failed),
    /// `None` when the host does not say: [`ModelState::loaded`].
    pub loaded: Option<bool>,
    /// How long the host keeps it loaded while idle, seconds (llama-swap's `ttl`).
    pub ttl_seconds: Option<u64>,
    /// Whether the host loads and unloads it on request
    /// ([`DiscoveredModel::host_loads`]).
    pub host_loads: bool,
    /// Whether the provider says it only computes embeddings
    /// ([`DiscoveredModel::embedding`]): listed with `type: "embedding"`.
    pub embedding: bool,
    /// The price the provider's listing reported
    /// ([`DiscoveredModel::price`]); the price that applies is
    /// [`crate::pricing::Pricing::price_of`]'s.
    pub listed_price: Option<modelyard_core::cost::Price>,
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
    pub(super) state: RwLock<ProviderState>,
    /// Upstream names listed or declared at any time since start-up.
    pub(super) seen: RwLock<HashSet<String>>,
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

    /// The last observed state, read-locked (never hold it across IO).
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, ProviderState> {
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
    pub(super) fn catalog_from(&self, discovered: &[DiscoveredModel]) -> Vec<CatalogModel> {
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
            state: discovered.map_or(ModelState::Unknown, |d| d.state),
            loaded: discovered.and_then(|d| d.state.loaded()),
            ttl_seconds: discovered.and_then(|d| d.ttl_seconds),
            host_loads: discovered.is_some_and(|d| d.host_loads),
            embedding: discovered.is_some_and(|d| d.embedding),
            listed_price: discovered.and_then(|d| d.price),
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
