//! Model resolution for a single requested model string (docs/design.md#model-resolution).
//!
//! [`resolve_model`] is pure: the caller passes a snapshot of the providers
//! ([`ProviderView`]) and gets back the composite id to call, or an error that
//! says precisely what exists instead.
//!
//! Rules:
//! - `provider/model` with a registered provider: that provider. When the
//!   provider's model list is known and lacks the model, it is an error
//!   listing the provider's models; when the list is unknown (never
//!   discovered, provider offline), the id is accepted as written.
//! - a bare id: the default provider if its list contains it; else the one
//!   online provider whose list contains it; several candidates or none is an
//!   error naming them.

use crate::model_id::{ModelId, ModelIdError, ModelRef, ProviderName};

/// How many model ids an error lists before it only gives a count.
pub const MAX_LISTED_IDS: usize = 20;

/// What resolution knows about one provider at the time of the request.
#[derive(Debug, Clone, Copy)]
pub struct ProviderView<'a> {
    /// Provider name (the composite id prefix).
    pub name: &'a str,
    /// Whether the last health check or discovery succeeded.
    pub online: bool,
    /// Upstream model names the provider serves; `None` when unknown.
    pub models: Option<&'a [String]>,
}

impl ProviderView<'_> {
    fn serves(&self, model: &str) -> bool {
        self.models
            .is_some_and(|models| models.iter().any(|m| m == model))
    }
}

/// Why a model resolved to the provider it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedFrom {
    /// The request named a composite `provider/model` id.
    Composite,
    /// A bare id served by the default provider.
    BareDefaultProvider,
    /// A bare id served by exactly one online provider.
    BareUniqueProvider,
}

/// The outcome of resolving a requested model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The composite id to call; its model part is the upstream model name.
    pub model_id: ModelId,
    /// Why this provider was chosen.
    pub resolved_from: ResolvedFrom,
}

/// Resolution failures. Each names what does exist, so the message alone
/// tells the user what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The id itself is malformed.
    #[error(transparent)]
    Invalid(#[from] ModelIdError),
    /// The provider exists and reports its models, but not this one.
    #[error("model '{model}' is not served by provider '{provider}'{}", listing(available, *total))]
    UnknownModel {
        /// Provider name.
        provider: String,
        /// Requested upstream model name.
        model: String,
        /// Composite ids the provider does serve (at most [`MAX_LISTED_IDS`]).
        available: Vec<String>,
        /// How many ids exist in all.
        total: usize,
    },
    /// A bare id that no provider serves.
    #[error("model '{model}' not found: no provider prefix matches and no provider serves it{}", listing(available, *total))]
    NotFound {
        /// The requested bare id.
        model: String,
        /// Composite ids that exist (at most [`MAX_LISTED_IDS`]).
        available: Vec<String>,
        /// How many ids exist in all.
        total: usize,
    },
    /// A bare id served by several online providers and not by the default.
    #[error("model '{model}' is ambiguous: served by {}; use a composite id", candidates.join(", "))]
    Ambiguous {
        /// The requested bare id.
        model: String,
        /// The composite ids that would match.
        candidates: Vec<String>,
    },
}

fn listing(available: &[String], total: usize) -> String {
    if available.is_empty() {
        String::new()
    } else if total > available.len() {
        format!(
            "; {total} models exist, for example: {}",
            available.join(", ")
        )
    } else {
        format!("; available: {}", available.join(", "))
    }
}

fn composite_ids<'a>(
    providers: impl Iterator<Item = &'a ProviderView<'a>>,
) -> (Vec<String>, usize) {
    let mut listed = Vec::new();
    let mut total = 0;
    for provider in providers {
        for model in provider.models.unwrap_or(&[]) {
            total += 1;
            if listed.len() < MAX_LISTED_IDS {
                listed.push(format!("{}/{}", provider.name, model));
            }
        }
    }
    (listed, total)
}

/// Resolves `requested` against the providers.
///
/// `default_provider` is the provider that bare ids try first (config
/// `defaults.provider`).
///
/// # Errors
/// See [`ResolveError`].
pub fn resolve_model(
    requested: &str,
    providers: &[ProviderView<'_>],
    default_provider: Option<&str>,
) -> Result<Resolution, ResolveError> {
    let parsed = ModelRef::parse(requested, |p| providers.iter().any(|v| v.name == p))?;
    match parsed {
        ModelRef::Composite(id) => {
            let view = providers.iter().find(|v| v.name == id.provider().as_str());
            if let Some(view) = view {
                if view.models.is_some() && !view.serves(id.model()) {
                    let (available, total) = composite_ids(std::iter::once(view));
                    return Err(ResolveError::UnknownModel {
                        provider: view.name.to_owned(),
                        model: id.model().to_owned(),
                        available,
                        total,
                    });
                }
            }
            Ok(Resolution {
                model_id: id,
                resolved_from: ResolvedFrom::Composite,
            })
        }
        ModelRef::Bare(model) => resolve_bare(model, providers, default_provider),
    }
}

fn resolve_bare(
    model: String,
    providers: &[ProviderView<'_>],
    default_provider: Option<&str>,
) -> Result<Resolution, ResolveError> {
    let make = |name: &str, from| -> Result<Resolution, ResolveError> {
        let provider = ProviderName::new(name)?;
        Ok(Resolution {
            model_id: ModelId::new(provider, model.clone())?,
            resolved_from: from,
        })
    };
    if let Some(default) = default_provider
        .and_then(|name| providers.iter().find(|v| v.name == name))
        .filter(|v| v.serves(&model))
    {
        return make(default.name, ResolvedFrom::BareDefaultProvider);
    }
    let candidates: Vec<&ProviderView<'_>> = providers
        .iter()
        .filter(|v| v.online && v.serves(&model))
        .collect();
    match candidates.as_slice() {
        [one] => make(one.name, ResolvedFrom::BareUniqueProvider),
        [] => {
            let (available, total) = composite_ids(providers.iter());
            Err(ResolveError::NotFound {
                model,
                available,
                total,
            })
        }
        many => Err(ResolveError::Ambiguous {
            candidates: many
                .iter()
                .map(|v| format!("{}/{}", v.name, model))
                .collect(),
            model,
        }),
    }
}

#[cfg(test)]
mod tests;
