//! Which price applies to a deployment, and the cost of a call.
//!
//! For a composite id `provider/model`, in order:
//! 1. `[[prices]]` (source `config`): an entry whose `model` is the exact
//!    id wins over globs; among globs (`*` matches any text, `/` included)
//!    the one with the most literal characters wins, then the first in
//!    the file.
//! 2. The provider's model listing (source `provider`): OpenRouter's
//!    `pricing`, from the last discovery snapshot
//!    ([`crate::registry::CatalogModel::listed_price`]).
//! 3. Nothing (source `none`): a local model costs 0; a model of a cloud
//!    provider (kinds `openrouter`, `deepseek`, or `openai` at a non-local
//!    address) has an unknown cost (`None`), never a made-up 0.
//!
//! No price list is downloaded at run time. Lookups take the registry's
//! read locks briefly and never do IO; the call log prices calls in its
//! writer task ([`crate::recorder`]), turns when they append a message.

use std::net::IpAddr;
use std::sync::Arc;

use modelyard_core::cost::{call_cost_nusd, Price};
use modelyard_core::Usage;
use modelyard_store::{CallCost, PriceSource, UsageRow};
use modelyard_upstream::ProviderKind;

use crate::config::PriceConfig;
use crate::registry::{Provider, ProviderRegistry};

/// The price that applies to one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedPrice {
    /// The rates; `None` when there is no price (source `none`).
    pub price: Option<Price>,
    /// Where they came from.
    pub source: PriceSource,
    /// [`Price::version`] of the entry used; `None` without a price.
    pub version: Option<String>,
    /// Without a price: whether the model is local (cost 0) rather than a
    /// cloud model (cost unknown).
    pub free: bool,
}

impl AppliedPrice {
    /// The cost of a call with `usage` under this price: `None` when the
    /// usage was not reported, or for an unpriced cloud model.
    pub fn cost(&self, usage: &Usage) -> CallCost {
        let cost_nusd = match (&self.price, usage.is_reported()) {
            (_, false) => None,
            (Some(price), true) => Some(call_cost_nusd(usage, price)),
            (None, true) => self.free.then_some(0),
        };
        CallCost {
            cost_nusd,
            price_source: Some(self.source),
            price_version: self.version.clone(),
        }
    }
}

/// The price lookup: `[[prices]]` over the registry's discovered prices.
#[derive(Debug)]
pub struct Pricing {
    entries: Vec<PriceConfig>,
    registry: Arc<ProviderRegistry>,
}

/// The most a call of `prompt` prompt tokens and `output` generated tokens
/// may cost at any of `rates` (those of the deployments a request may
/// reach, [`Pricing::rate_of`]), nano-USD: what a cost budget reserves
/// before the call ([`crate::quota`]). Output is priced at the higher of
/// the output and reasoning rates, no prompt token counts as cached. 0
/// without rates (local models, or unpriced cloud models whose cost is
/// unknown).
pub fn worst_cost_nusd(rates: &[Price], prompt: u64, output: u64) -> i64 {
    rates
        .iter()
        .map(|price| {
            let reasoning_dearer = price
                .reasoning_per_mtok
                .is_some_and(|r| r > price.output_per_mtok);
            let usage = Usage {
                prompt_tokens: Some(prompt),
                completion_tokens: Some(output),
                reasoning_tokens: reasoning_dearer.then_some(output),
                ..Usage::default()
            };
            call_cost_nusd(&usage, price)
        })
        .max()
        .unwrap_or(0)
}

/// Whether `pattern` (with `*` matching any text, possibly empty) matches
/// all of `text`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` yields at least one piece: the text before the first `*`.
    let Some(mut rest) = text.strip_prefix(parts.next().unwrap_or_default()) else {
        return false;
    };
    let mut parts = parts.peekable();
    if parts.peek().is_none() {
        // No `*`: an exact match.
        return rest.is_empty();
    }
    while let Some(piece) = parts.next() {
        if parts.peek().is_none() {
            // The last piece ends the text.
            return rest.len() >= piece.len() && rest.ends_with(piece);
        }
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// The entry of `entries` that prices `model_id`: the exact one, else the
/// matching glob with the most literal characters (the first on a tie).
fn best_entry<'a>(entries: &'a [PriceConfig], model_id: &str) -> Option<&'a PriceConfig> {
    if let Some(exact) = entries.iter().find(|e| e.model == model_id) {
        return Some(exact);
    }
    let literal = |e: &PriceConfig| e.model.chars().filter(|c| *c != '*').count();
    entries
        .iter()
        .filter(|e| e.model.contains('*') && glob_matches(&e.model, model_id))
        .fold(None, |best: Option<&PriceConfig>, e| match best {
            Some(b) if literal(b) >= literal(e) => Some(b),
            _ => Some(e),
        })
}

impl Pricing {
    /// The lookup over `entries` (the config's `[[prices]]`) and
    /// `registry`'s discovery snapshots.
    pub fn new(entries: Vec<PriceConfig>, registry: Arc<ProviderRegistry>) -> Self {
        Self { entries, registry }
    }

    /// The `[[prices]]` entry that prices `model_id`, if any (see the module
    /// docs for precedence).
    pub fn config_entry(&self, model_id: &str) -> Option<&PriceConfig> {
        best_entry(&self.entries, model_id)
    }

    /// The rates that apply to the deployment `model_id`, without the
    /// version text [`Self::price_of`] adds (what a reserve needs).
    pub fn rate_of(&self, model_id: &str) -> Option<Price> {
        match self.config_entry(model_id) {
            Some(entry) => Some(entry.price),
            None => self.price_of(model_id).price,
        }
    }

    /// The cost of a call to `model_id` with `usage`, nano-USD: what
    /// [`Self::cost_of`] gives as `cost_nusd`, without the price's source
    /// and version (what settling a budget needs).
    pub fn cost_nusd_of(&self, model_id: &str, usage: &Usage) -> Option<i64> {
        match self.config_entry(model_id) {
            Some(entry) => usage
                .is_reported()
                .then(|| call_cost_nusd(usage, &entry.price)),
            None => self.cost_of(model_id, usage).cost_nusd,
        }
    }

    /// The price that applies to the deployment `model_id`
    /// (`provider/model`; see the module docs).
    pub fn price_of(&self, model_id: &str) -> AppliedPrice {
        if let Some(entry) = self.config_entry(model_id) {
            return AppliedPrice {
                price: Some(entry.price),
                source: PriceSource::Config,
                version: Some(entry.version.clone()),
                free: false,
            };
        }
        // Provider names never hold a `/`: the first one splits.
        let (provider_name, model) = model_id.split_once('/').unwrap_or(("", model_id));
        let provider = self.registry.provider(provider_name);
        let listed = provider.and_then(|p| {
            p.read_state()
                .catalog
                .iter()
                .find(|m| m.model == model)
                .and_then(|m| m.listed_price)
        });
        self.price_with(model_id, provider.map(|p| &**p), listed)
    }

    /// [`Self::price_of`] for a caller that already read the provider's
    /// `listed` price (the catalog, under the provider's read lock).
    pub fn price_with(
        &self,
        model_id: &str,
        provider: Option<&Provider>,
        listed: Option<Price>,
    ) -> AppliedPrice {
        if let Some(entry) = self.config_entry(model_id) {
            return AppliedPrice {
                price: Some(entry.price),
                source: PriceSource::Config,
                version: Some(entry.version.clone()),
                free: false,
            };
        }
        if let Some(price) = listed {
            return AppliedPrice {
                version: Some(price.version(model_id)),
                price: Some(price),
                source: PriceSource::Provider,
                free: false,
            };
        }
        AppliedPrice {
            price: None,
            source: PriceSource::None,
            version: None,
            free: provider.is_none_or(|p| is_local(p.config.kind, &p.config.base_url)),
        }
    }

    /// The cost of a call to `model_id` with `usage`.
    pub fn cost_of(&self, model_id: &str, usage: &Usage) -> CallCost {
        self.price_of(model_id).cost(usage)
    }
}

/// A stored usage row as the core usage type (negative counts, which the
/// store never writes, read as unreported).
pub fn usage_of_row(row: &UsageRow) -> Usage {
    let n = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    Usage {
        prompt_tokens: n(row.prompt_tokens),
        completion_tokens: n(row.completion_tokens),
        reasoning_tokens: n(row.reasoning_tokens),
        cached_prompt_tokens: n(row.cached_prompt_tokens),
        cache_creation_tokens: n(row.cache_creation_tokens),
        total_tokens: n(row.total_tokens),
    }
}

/// Whether a provider serves from this machine or network: the local
/// kinds always; `openai` when its base URL's host is `localhost`, a
/// loopback, private or link-local address; the cloud presets never.
fn is_local(kind: ProviderKind, base_url: &url::Url) -> bool {
    match kind {
        ProviderKind::OpenRouter | ProviderKind::DeepSeek => false,
        ProviderKind::OpenAi => match base_url.host() {
            Some(url::Host::Domain(host)) => {
                host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost")
            }
            Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
            None => false,
        },
        _ => true,
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, text, want) in [
            ("deepseek/*", "deepseek/deepseek-chat", true),
            ("deepseek/*", "deepseek/", true),
            ("deepseek/*", "openrouter/deepseek/x", false),
            ("*/gpt-4o*", "openai/gpt-4o-mini", true),
            ("*/gpt-4o*", "openai/gpt-4", false),
            ("a/*-*-x", "a/1-2-x", true),
            ("a/*-*-x", "a/1-2-y", false),
            ("a/b", "a/b", true),
            ("a/b", "a/bc", false),
            ("*", "anything/at-all", true),
            ("a/*b*b", "a/b", false),
        ] {
            assert_eq!(glob_matches(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn the_most_specific_entry_wins() {
        let entry = |model: &str| PriceConfig {
            model: model.to_owned(),
            price: Price::default(),
            version: model.to_owned(),
        };
        let entries = [
            entry("*"),
            entry("ds/*"),
            entry("ds/deepseek-*"),
            entry("ds/deepseek-chat"),
            entry("ds/*-chat"),
        ];
        let pick = |id: &str| best_entry(&entries, id).map(|e| e.model.as_str());
        assert_eq!(pick("ds/deepseek-chat"), Some("ds/deepseek-chat"), "exact");
        assert_eq!(pick("ds/deepseek-reasoner"), Some("ds/deepseek-*"));
        // `ds/deepseek-*` (12 literal characters) over `ds/*-chat` (8).
        assert_eq!(pick("ds/deepseek-v3-chat"), Some("ds/deepseek-*"));
        assert_eq!(pick("ds/other-chat"), Some("ds/*-chat"));
        assert_eq!(pick("ds/other"), Some("ds/*"));
        assert_eq!(pick("or/x"), Some("*"));
        assert_eq!(
            best_entry(&entries[1..], "or/x").map(|e| e.model.as_str()),
            None
        );
        // Ties go to the first in the file.
        let tie = [entry("a/*x"), entry("a/x*")];
        assert_eq!(
            best_entry(&tie, "a/x").map(|e| e.model.as_str()),
            Some("a/*x")
        );
    }

    #[test]
    fn local_and_cloud_providers() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(is_local(
            ProviderKind::LlamaCpp,
            &url("https://example.com")
        ));
        assert!(is_local(
            ProviderKind::OpenAi,
            &url("http://127.0.0.1:8080/v1")
        ));
        assert!(is_local(
            ProviderKind::OpenAi,
            &url("http://localhost:8080/v1")
        ));
        assert!(is_local(
            ProviderKind::OpenAi,
            &url("http://192.168.1.5/v1")
        ));
        assert!(is_local(ProviderKind::OpenAi, &url("http://[::1]:8080/v1")));
        assert!(!is_local(
            ProviderKind::OpenAi,
            &url("https://api.openai.com/v1")
        ));
        assert!(!is_local(
            ProviderKind::OpenRouter,
            &url("http://127.0.0.1/v1")
        ));
        assert!(!is_local(
            ProviderKind::DeepSeek,
            &url("https://api.deepseek.com")
        ));
    }

    #[test]
    fn unreported_usage_has_no_cost_and_unpriced_cloud_calls_are_unknown() {
        let used = Usage {
            prompt_tokens: Some(10),
            completion_tokens: Some(5),
            ..Usage::default()
        };
        let local = AppliedPrice {
            price: None,
            source: PriceSource::None,
            version: None,
            free: true,
        };
        assert_eq!(local.cost(&used).cost_nusd, Some(0));
        assert_eq!(local.cost(&Usage::default()).cost_nusd, None);
        let cloud = AppliedPrice {
            free: false,
            ..local.clone()
        };
        assert_eq!(cloud.cost(&used).cost_nusd, None);
        assert_eq!(cloud.cost(&used).price_source, Some(PriceSource::None));
    }
}
