//! `[defaults]`: the default provider and model, and the presets (the
//! server's default LLM configs).

use std::collections::BTreeMap;

use modelyard_core::llm_config::{is_operation_name, ProviderOptions};

use super::raw::{RawDefaults, RawPreset};
use super::validate::error_in;
use super::{ConfigError, ProviderConfig};

/// `[defaults]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DefaultsConfig {
    /// Model used when a request names none (`model`, a model id).
    pub model: Option<String>,
    /// Provider that bare model ids try first (`provider`; default the first provider).
    pub provider: Option<String>,
    /// `[defaults.presets.<name>]`: the server's default LLM configs, for
    /// every operation (`default`) or one operation (its name). Materialized
    /// as `system-default` configs once per version.
    pub presets: BTreeMap<String, PresetConfig>,
}

impl DefaultsConfig {
    /// The server default model: the `default` preset's, else `model`.
    pub fn default_model(&self) -> Option<&str> {
        self.presets
            .get(DEFAULT_PRESET)
            .map(|p| p.model.as_str())
            .or(self.model.as_deref())
    }
}

/// Name of the preset that applies to every operation.
pub const DEFAULT_PRESET: &str = "default";

/// One `[defaults.presets.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetConfig {
    /// Version (`version`, ≥ 1, required). Bump it when the preset changes:
    /// each version is materialized once, and turns keep the id they used.
    pub version: u32,
    /// Model id (`model`, required).
    pub model: String,
    /// Display name (`display_name`).
    pub display_name: Option<String>,
    /// System prompt (`system_prompt`).
    pub system_prompt: Option<String>,
    /// `[defaults.presets.<name>.provider_options]`.
    pub provider_options: ProviderOptions,
}

/// `[defaults]`; `defaults.provider` must name one of `providers`.
pub(super) fn defaults(
    raw: RawDefaults,
    providers: &[ProviderConfig],
    source_name: &str,
) -> Result<DefaultsConfig, ConfigError> {
    let err = error_in(source_name);
    if let Some(provider) = &raw.provider {
        if !providers.iter().any(|p| p.name.as_str() == provider) {
            return Err(err(
                "defaults.provider".into(),
                format!("no provider named {provider:?}"),
            ));
        }
    }
    if let Some(model) = &raw.model {
        if model.is_empty() {
            return Err(err("defaults.model".into(), "must not be empty".into()));
        }
    }
    let mut presets = BTreeMap::new();
    for (name, p) in raw.presets {
        let preset = preset(&name, p, source_name)?;
        presets.insert(name, preset);
    }
    if presets.contains_key(DEFAULT_PRESET) && raw.model.is_some() {
        return Err(err(
            "defaults.model".into(),
            "conflicts with [defaults.presets.default], which sets the server default; keep one"
                .into(),
        ));
    }
    Ok(DefaultsConfig {
        model: raw.model,
        provider: raw.provider,
        presets,
    })
}

/// `[defaults.presets.<name>]`.
fn preset(name: &str, p: RawPreset, source_name: &str) -> Result<PresetConfig, ConfigError> {
    let err = error_in(source_name);
    let key = |field: &str| format!("defaults.presets.{name}.{field}");
    if !is_operation_name(name) {
        return Err(err(
            format!("defaults.presets.{name}"),
            "a preset is named `default` or after an operation ([a-z][a-z0-9_-]{0,31})".into(),
        ));
    }
    let version = match p.version {
        None => {
            return Err(err(
                key("version"),
                "is required (an integer ≥ 1; bump it when the preset changes)".into(),
            ))
        }
        Some(v) if v < 1 => {
            return Err(err(key("version"), format!("must be at least 1, got {v}")))
        }
        Some(v) => {
            u32::try_from(v).map_err(|_| err(key("version"), format!("{v} is too large")))?
        }
    };
    let model = match p.model {
        None => return Err(err(key("model"), "is required (a model id)".into())),
        Some(m) if m.is_empty() => return Err(err(key("model"), "must not be empty".into())),
        Some(m) => m,
    };
    if p.display_name.as_deref() == Some("") {
        return Err(err(key("display_name"), "must not be empty".into()));
    }
    let raw_options = p.provider_options;
    let extra = match raw_options.extra {
        None => None,
        Some(table) => Some(
            serde_json::to_value(&table)
                .map_err(|e| err(key("provider_options.extra"), e.to_string()))?,
        ),
    };
    let provider_options = ProviderOptions {
        temperature: raw_options.temperature,
        top_p: raw_options.top_p,
        max_tokens: raw_options.max_tokens,
        reasoning_effort: raw_options.reasoning_effort,
        stop: raw_options.stop,
        seed: raw_options.seed,
        extra,
    };
    if let Err(invalid) = provider_options.validate() {
        return Err(err(
            key(&format!("provider_options.{}", invalid.field.snake())),
            invalid.reason,
        ));
    }
    Ok(PresetConfig {
        version,
        model,
        display_name: p.display_name,
        system_prompt: p.system_prompt,
        provider_options,
    })
}
