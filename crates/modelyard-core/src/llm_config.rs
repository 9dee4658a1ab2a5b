//! LLM configs (docs/design.md#llm-configs): the non-secret provider options a config
//! carries, their validation, and how they become request fields.
//!
//! Options are stored and shown camelCase (`topP`, `maxTokens`) like every
//! Modelyard JSON; on the upstream request they are OpenAI's snake_case
//! fields (`top_p`, `max_tokens`), and `extra` is merged at the top level.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The accepted `reasoningEffort` values, in [`ReasoningEffort`]'s order.
pub const REASONING_EFFORTS: [&str; 6] = ["none", "minimal", "low", "medium", "high", "xhigh"];

/// How hard a reasoning model thinks: OpenAI's `reasoning_effort` values
/// (`none` … `xhigh`), sent upstream as that field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String", into = "&'static str")]
pub enum ReasoningEffort {
    /// `none`.
    None,
    /// `minimal`.
    Minimal,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// `xhigh`.
    Xhigh,
}

impl ReasoningEffort {
    const ALL: [ReasoningEffort; 6] = [
        ReasoningEffort::None,
        ReasoningEffort::Minimal,
        ReasoningEffort::Low,
        ReasoningEffort::Medium,
        ReasoningEffort::High,
        ReasoningEffort::Xhigh,
    ];

    /// The wire value, one of [`REASONING_EFFORTS`].
    pub fn as_str(self) -> &'static str {
        REASONING_EFFORTS[self as usize]
    }

    /// Parses one of [`REASONING_EFFORTS`].
    pub fn parse(text: &str) -> Option<Self> {
        REASONING_EFFORTS
            .iter()
            .position(|e| *e == text)
            .map(|i| Self::ALL[i])
    }

    /// The message for a value that is not one: `must be one of none, …; got "max"`.
    pub fn invalid(text: &str) -> String {
        format!(
            "must be one of {}; got {text:?}",
            REASONING_EFFORTS.join(", ")
        )
    }
}

impl TryFrom<String> for ReasoningEffort {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).ok_or_else(|| Self::invalid(&text))
    }
}

impl From<ReasoningEffort> for &'static str {
    fn from(effort: ReasoningEffort) -> Self {
        effort.as_str()
    }
}

/// Most `stop` sequences a config may carry (OpenAI's limit).
pub const MAX_STOP: usize = 4;

/// Request fields that routing owns: `extra` may not set them.
pub const RESERVED_REQUEST_FIELDS: [&str; 4] = ["model", "messages", "stream", "stream_options"];

/// Whether `name` is an operation name: `[a-z][a-z0-9_-]{0,31}`.
pub fn is_operation_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// Where a config's model, options and system prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LlmSource {
    /// Materialized from a `[defaults.presets.<name>]` of the server config.
    #[serde(rename = "system-default")]
    SystemDefault,
    /// Created through the API.
    #[serde(rename = "user")]
    User,
}

impl LlmSource {
    /// `system-default` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmSource::SystemDefault => "system-default",
            LlmSource::User => "user",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "system-default" => Some(LlmSource::SystemDefault),
            "user" => Some(LlmSource::User),
            _ => None,
        }
    }
}

/// Provider options of an LLM config. Absent options are not sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderOptions {
    /// Sampling temperature, 0..=2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Most tokens to generate, ≥ 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// One of [`REASONING_EFFORTS`] (kept as text: stored configs are read
    /// back as written; [`ProviderOptions::validate`] checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Stop sequences, at most [`MAX_STOP`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// More request fields, merged at the top level (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// A provider option, named for the API (camelCase) or the config file
/// (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionField {
    /// `temperature`.
    Temperature,
    /// `topP` / `top_p`.
    TopP,
    /// `maxTokens` / `max_tokens`.
    MaxTokens,
    /// `reasoningEffort` / `reasoning_effort`.
    ReasoningEffort,
    /// `stop`.
    Stop,
    /// `extra`.
    Extra,
}

impl OptionField {
    /// The API (camelCase) name.
    pub fn camel(self) -> &'static str {
        match self {
            OptionField::Temperature => "temperature",
            OptionField::TopP => "topP",
            OptionField::MaxTokens => "maxTokens",
            OptionField::ReasoningEffort => "reasoningEffort",
            OptionField::Stop => "stop",
            OptionField::Extra => "extra",
        }
    }

    /// The config file / request (snake_case) name.
    pub fn snake(self) -> &'static str {
        match self {
            OptionField::Temperature => "temperature",
            OptionField::TopP => "top_p",
            OptionField::MaxTokens => "max_tokens",
            OptionField::ReasoningEffort => "reasoning_effort",
            OptionField::Stop => "stop",
            OptionField::Extra => "extra",
        }
    }
}

/// An option out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", field.camel())]
pub struct InvalidOption {
    /// The option at fault.
    pub field: OptionField,
    /// What is wrong.
    pub reason: String,
}

/// Names that would carry a credential; `extra` may not use them.
fn looks_secret(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [
        "apikey",
        "authorization",
        "secret",
        "password",
        "accesstoken",
        "bearer",
    ]
    .iter()
    .any(|word| folded.contains(word))
}

impl ProviderOptions {
    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self == &ProviderOptions::default()
    }

    /// Checks every option's range.
    ///
    /// # Errors
    /// The first [`InvalidOption`].
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let bad = |field, reason: String| Err(InvalidOption { field, reason });
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return bad(
                    OptionField::Temperature,
                    format!("must be between 0 and 2, got {t}"),
                );
            }
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) {
                return bad(
                    OptionField::TopP,
                    format!("must be between 0 and 1, got {p}"),
                );
            }
        }
        if let Some(n) = self.max_tokens {
            if n < 1 {
                return bad(
                    OptionField::MaxTokens,
                    format!("must be at least 1, got {n}"),
                );
            }
        }
        if let Some(effort) = &self.reasoning_effort {
            if ReasoningEffort::parse(effort).is_none() {
                return bad(
                    OptionField::ReasoningEffort,
                    ReasoningEffort::invalid(effort),
                );
            }
        }
        if let Some(stop) = &self.stop {
            if stop.len() > MAX_STOP {
                return bad(
                    OptionField::Stop,
                    format!("at most {MAX_STOP} sequences, got {}", stop.len()),
                );
            }
            if stop.iter().any(String::is_empty) {
                return bad(OptionField::Stop, "sequences must not be empty".into());
            }
        }
        if let Some(extra) = &self.extra {
            let Some(object) = extra.as_object() else {
                return bad(OptionField::Extra, "must be a JSON object".into());
            };
            for key in object.keys() {
                if RESERVED_REQUEST_FIELDS.contains(&key.as_str()) {
                    return bad(
                        OptionField::Extra,
                        format!("{key:?} is set by routing and cannot be overridden"),
                    );
                }
                if looks_secret(key) {
                    return bad(
                        OptionField::Extra,
                        format!("{key:?} looks like a credential; LLM configs never hold secrets"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Sets the options on an OpenAI request body (snake_case names):
    /// `extra` first, then the typed options over it. Routing's own fields
    /// are never touched.
    pub fn apply_to(&self, body: &mut Map<String, Value>) {
        if let Some(Value::Object(extra)) = &self.extra {
            for (key, value) in extra {
                if !RESERVED_REQUEST_FIELDS.contains(&key.as_str()) {
                    body.insert(key.clone(), value.clone());
                }
            }
        }
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(key.to_owned(), value);
            }
        };
        set("temperature", self.temperature.map(Value::from));
        set("top_p", self.top_p.map(Value::from));
        set("max_tokens", self.max_tokens.map(Value::from));
        set(
            "reasoning_effort",
            self.reasoning_effort.clone().map(Value::from),
        );
        set(
            "stop",
            self.stop
                .clone()
                .map(|s| Value::Array(s.into_iter().map(Value::from).collect())),
        );
        set("seed", self.seed.map(Value::from));
    }
}

/// The LLM config a session ran with, as it was when the session resolved
/// it (docs/design.md#llm-configs): "what settings produced this answer"
/// stays answerable after the config is edited or deleted. Stored with the
/// session as camelCase JSON; never holds a secret (configs hold none, and
/// the base URL is written without credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSnapshot {
    /// The config's id; `None` when no config supplied options (a model
    /// named on the request with no config behind it).
    #[serde(default)]
    pub llm_id: Option<String>,
    /// The config's version (from 1; every change of a config is a new
    /// one); `None` without a config.
    #[serde(default)]
    pub version: Option<i64>,
    /// The config's source (`user` or `system-default`); `None` without a
    /// config.
    #[serde(default)]
    pub source: Option<LlmSource>,
    /// Which step of the turn-model rule chose the model
    /// (docs/design.md#turn-model); `None` outside conversations (a
    /// gateway request naming a config).
    #[serde(default)]
    pub resolved_from: Option<crate::conversation::ResolvedFrom>,
    /// The model id that was called: a composite `provider/model` id or a
    /// route's name.
    pub model: String,
    /// The config's provider options (none without a config).
    #[serde(default)]
    pub provider_options: ProviderOptions,
    /// The config's system prompt, if any (without one, an operation with
    /// a built-in instruction — title, compaction, advisor — sends that).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The base URL of the deployment the model id names (the config's
    /// custom one when it has one), without credentials; `None` for a
    /// route (each call names the provider that served it).
    #[serde(default)]
    pub base_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_effort_round_trips_every_value() {
        for text in REASONING_EFFORTS {
            let effort = ReasoningEffort::parse(text).unwrap();
            assert_eq!(effort.as_str(), text);
            let json = serde_json::to_string(&effort).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<ReasoningEffort>(&json).unwrap(),
                effort
            );
        }
        let err = serde_json::from_str::<ReasoningEffort>("\"max\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("must be one of none, minimal, low, medium, high, xhigh; got \"max\""),
            "{err}"
        );
    }
    use serde_json::json;

    #[test]
    fn operation_names() {
        for ok in ["chat", "title", "a", "x-1_y", &"a".repeat(32)] {
            assert!(is_operation_name(ok), "{ok}");
        }
        for bad in ["", "Chat", "1a", "-a", "a b", "a/b", &"a".repeat(33)] {
            assert!(!is_operation_name(bad), "{bad}");
        }
    }

    #[test]
    fn ranges_name_their_field() {
        let check = |options: ProviderOptions| options.validate().unwrap_err().to_string();
        let o = ProviderOptions::default;
        assert!(check(ProviderOptions {
            temperature: Some(2.5),
            ..o()
        })
        .starts_with("temperature: must be between 0 and 2"));
        assert!(check(ProviderOptions {
            top_p: Some(-0.1),
            ..o()
        })
        .starts_with("topP: "));
        assert!(check(ProviderOptions {
            max_tokens: Some(0),
            ..o()
        })
        .starts_with("maxTokens: "));
        assert!(check(ProviderOptions {
            reasoning_effort: Some("max".into()),
            ..o()
        })
        .starts_with("reasoningEffort: "));
        assert!(check(ProviderOptions {
            stop: Some(vec!["a".into(); 5]),
            ..o()
        })
        .starts_with("stop: "));
        assert!(check(ProviderOptions {
            extra: Some(json!([1])),
            ..o()
        })
        .starts_with("extra: must be a JSON object"));
        assert!(check(ProviderOptions {
            extra: Some(json!({"model": "x"})),
            ..o()
        })
        .starts_with("extra: \"model\""));
        assert!(check(ProviderOptions {
            extra: Some(json!({"api_key": "x"})),
            ..o()
        })
        .contains("credential"));
        assert!(ProviderOptions {
            temperature: Some(0.0),
            top_p: Some(1.0),
            max_tokens: Some(1),
            reasoning_effort: Some("xhigh".into()),
            stop: Some(vec!["a".into(); 4]),
            seed: Some(-3),
            extra: Some(json!({"min_p": 0.1})),
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn request_fields_are_snake_case_and_typed_options_win() {
        let options = ProviderOptions {
            temperature: Some(0.3),
            top_p: Some(0.9),
            max_tokens: Some(64),
            reasoning_effort: Some("low".into()),
            stop: Some(vec!["END".into()]),
            seed: Some(7),
            extra: Some(json!({"temperature": 1.5, "min_p": 0.05, "model": "no"})),
        };
        let mut body = Map::new();
        body.insert("model".into(), json!("m"));
        options.apply_to(&mut body);
        assert_eq!(
            Value::Object(body),
            json!({"model": "m", "temperature": 0.3, "min_p": 0.05, "top_p": 0.9,
                   "max_tokens": 64, "reasoning_effort": "low", "stop": ["END"], "seed": 7})
        );
    }

    #[test]
    fn a_snapshot_is_stored_camel_case_and_reads_back_with_absent_fields() {
        let snapshot = ConfigSnapshot {
            llm_id: Some("cfg".into()),
            version: Some(2),
            source: Some(LlmSource::SystemDefault),
            resolved_from: Some(crate::conversation::ResolvedFrom::ServerDefault),
            model: "p/m".into(),
            provider_options: ProviderOptions {
                top_p: Some(0.5),
                ..ProviderOptions::default()
            },
            system_prompt: None,
            base_url: Some("http://127.0.0.1:9/v1".into()),
        };
        let text = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(
            text,
            json!({"llmId": "cfg", "version": 2, "source": "system-default",
                   "resolvedFrom": "serverDefault", "model": "p/m",
                   "providerOptions": {"topP": 0.5}, "systemPrompt": null,
                   "baseUrl": "http://127.0.0.1:9/v1"})
        );
        assert_eq!(
            serde_json::from_value::<ConfigSnapshot>(text).unwrap(),
            snapshot
        );
        // Only the model is required (a turn whose model no config supplied).
        let bare: ConfigSnapshot = serde_json::from_str(r#"{"model":"p/m"}"#).unwrap();
        assert_eq!(bare.llm_id, None);
        assert!(bare.provider_options.is_empty());
    }

    #[test]
    fn stored_form_is_camel_case_without_absent_options() {
        let options = ProviderOptions {
            top_p: Some(0.5),
            max_tokens: Some(10),
            ..ProviderOptions::default()
        };
        let text = serde_json::to_string(&options).unwrap();
        assert_eq!(text, r#"{"topP":0.5,"maxTokens":10}"#);
        assert_eq!(
            serde_json::from_str::<ProviderOptions>(&text).unwrap(),
            options
        );
        assert!(serde_json::from_str::<ProviderOptions>(r#"{"apiKey":"x"}"#).is_err());
    }
}
