//! Finding and reading the config file, and the environment overrides.

use std::path::{Path, PathBuf};

use super::raw::RawConfig;
use super::validate::validate;
use super::{Config, ConfigError};

/// Environment overrides: variable → (section, key, is_bool).
const ENV_OVERRIDES: [(&str, &str, &str, bool); 16] = [
    ("MODELYARD_SERVER_LISTEN", "server", "listen", false),
    (
        "MODELYARD_SERVER_MAX_BODY_BYTES",
        "server",
        "max_body_bytes",
        false,
    ),
    ("MODELYARD_STORAGE_URL", "storage", "url", false),
    ("MODELYARD_STORAGE_DATA_DIR", "storage", "data_dir", false),
    ("MODELYARD_STORAGE_CALL_LOG", "storage", "call_log", true),
    ("MODELYARD_STORAGE_CONTENT", "storage", "content", false),
    ("MODELYARD_DEFAULTS_MODEL", "defaults", "model", false),
    ("MODELYARD_DEFAULTS_PROVIDER", "defaults", "provider", false),
    ("MODELYARD_CLUSTER_NATS_URL", "cluster", "nats_url", false),
    (
        "MODELYARD_CLUSTER_REPLICA_ID",
        "cluster",
        "replica_id",
        false,
    ),
    ("MODELYARD_TELEMETRY_METRICS", "telemetry", "metrics", true),
    (
        "MODELYARD_TELEMETRY_METRICS_LISTEN",
        "telemetry",
        "metrics_listen",
        false,
    ),
    (
        "MODELYARD_TELEMETRY_OTLP_ENDPOINT",
        "telemetry",
        "otlp_endpoint",
        false,
    ),
    (
        "MODELYARD_TELEMETRY_OTLP_ALLOW_REMOTE",
        "telemetry",
        "otlp_allow_remote",
        true,
    ),
    (
        "MODELYARD_TELEMETRY_SERVICE_NAME",
        "telemetry",
        "service_name",
        false,
    ),
    (
        "MODELYARD_TELEMETRY_CAPTURE_CONTENT",
        "telemetry",
        "capture_content",
        true,
    ),
];

impl Config {
    /// Finds the config file: `explicit` (from `--config`), else
    /// `MODELYARD_CONFIG`, else `./modelyard.toml` when it exists.
    pub fn locate(
        explicit: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_owned());
        }
        if let Some(path) = env("MODELYARD_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let local = PathBuf::from("modelyard.toml");
        local.exists().then_some(local)
    }

    /// Loads the file at `path` (or only defaults when `None`), applies the
    /// environment overrides read through `env`, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or variable, the key and the reason.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (source_name, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    source_name: path.display().to_string(),
                    key: String::new(),
                    reason: format!("cannot read: {e}"),
                })?;
                (path.display().to_string(), text)
            }
            None => ("<defaults>".to_owned(), String::new()),
        };
        Self::from_toml(&text, &source_name, path, env)
    }

    /// Parses and validates TOML text; `source_name` labels errors.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_toml(
        text: &str,
        source_name: &str,
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err("", e.message().to_owned() + &line_of(text, e.span()))
        })?;
        for (var, section, key, is_bool) in ENV_OVERRIDES {
            let Some(value) = env(var) else { continue };
            let env_err = |reason: String| ConfigError {
                source_name: format!("environment variable {var}"),
                key: format!("{section}.{key}"),
                reason,
            };
            let value = if is_bool {
                match value.as_str() {
                    "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
                    "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
                    other => return Err(env_err(format!("expected true or false, got {other:?}"))),
                }
            } else if key == "max_body_bytes" {
                toml::Value::Integer(
                    value
                        .parse()
                        .map_err(|_| env_err(format!("expected a number, got {value:?}")))?,
                )
            } else {
                toml::Value::String(value)
            };
            let entry = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key.to_owned(), value);
                }
                _ => return Err(err(section, "must be a table".into())),
            }
        }
        let raw: RawConfig = serde_path_to_error::deserialize(table)
            .map_err(|e| err(&e.path().to_string(), e.inner().message().to_owned()))?;
        validate(raw, source_name, path, env)
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => format!(
            " (line {})",
            text[..span.start.min(text.len())].lines().count().max(1)
        ),
        None => String::new(),
    }
}
