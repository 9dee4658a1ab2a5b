//! Model ids: the composite `provider/model` form and legacy bare ids.
//!
//! A composite id is split on the **first** `/` only, so
//! `vllm/meta-llama/Llama-3-8B` is provider `vllm` and upstream model
//! `meta-llama/Llama-3-8B` (docs/design.md#model-ids). Whether a prefix names a provider
//! depends on which providers are registered, so parsing a user-supplied string
//! takes a predicate over provider names ([`ModelRef::parse`]).

use std::fmt;

/// Errors from building model ids or provider names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelIdError {
    /// The provider name is empty, too long or holds characters outside
    /// `[A-Za-z0-9_.-]` (it must not contain `/`).
    #[error("invalid provider name {name:?}: use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit")]
    InvalidProviderName {
        /// The rejected name.
        name: String,
    },
    /// The model part of an id is empty.
    #[error("model id {id:?} has an empty model name")]
    EmptyModel {
        /// The rejected id.
        id: String,
    },
    /// The whole id is empty.
    #[error("model id is empty")]
    Empty,
}

/// A provider name: 1–64 characters of `[A-Za-z0-9_.-]`, starting with a
/// letter or digit. Never contains `/`, so it can prefix a composite id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderName(String);

impl ProviderName {
    /// Validates and wraps a provider name.
    ///
    /// # Errors
    /// [`ModelIdError::InvalidProviderName`] when the name breaks the rule above.
    pub fn new(name: impl Into<String>) -> Result<Self, ModelIdError> {
        let name = name.into();
        if Self::is_valid(&name) {
            Ok(Self(name))
        } else {
            Err(ModelIdError::InvalidProviderName { name })
        }
    }

    /// Whether `name` is a syntactically valid provider name.
    pub fn is_valid(name: &str) -> bool {
        let bytes = name.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 64
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A composite model id: a provider name and the model name that provider
/// knows (the "upstream model"). Displayed as `provider/model`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId {
    provider: ProviderName,
    model: String,
}

impl ModelId {
    /// Builds a composite id from its parts.
    ///
    /// # Errors
    /// [`ModelIdError::EmptyModel`] when `model` is empty.
    pub fn new(provider: ProviderName, model: impl Into<String>) -> Result<Self, ModelIdError> {
        let model = model.into();
        if model.is_empty() {
            return Err(ModelIdError::EmptyModel {
                id: format!("{provider}/"),
            });
        }
        Ok(Self { provider, model })
    }

    /// The provider part.
    pub fn provider(&self) -> &ProviderName {
        &self.provider
    }

    /// The upstream model name (everything after the first `/`).
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// A model reference as a client wrote it: either a composite id whose prefix
/// is a registered provider, or a bare (legacy) model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// `provider/model` with a registered provider prefix.
    Composite(ModelId),
    /// A name without a registered provider prefix, e.g. `gpt-4o` or
    /// `meta-llama/Llama-3-8B` when no provider is called `meta-llama`.
    Bare(String),
}

impl ModelRef {
    /// Parses `input`, splitting on the first `/` when the prefix is a
    /// registered provider (`is_provider` returns true for it).
    ///
    /// # Errors
    /// [`ModelIdError::Empty`] for an empty string, [`ModelIdError::EmptyModel`]
    /// for `provider/` with nothing after the slash.
    pub fn parse(input: &str, is_provider: impl Fn(&str) -> bool) -> Result<Self, ModelIdError> {
        if input.is_empty() {
            return Err(ModelIdError::Empty);
        }
        if let Some((prefix, rest)) = input.split_once('/') {
            if ProviderName::is_valid(prefix) && is_provider(prefix) {
                let provider = ProviderName(prefix.to_owned());
                return ModelId::new(provider, rest)
                    .map(ModelRef::Composite)
                    .map_err(|_| ModelIdError::EmptyModel {
                        id: input.to_owned(),
                    });
            }
        }
        Ok(ModelRef::Bare(input.to_owned()))
    }
}

#[cfg(test)]
mod tests;
