//! `[[prices]]`: what a deployment's tokens cost, by exact composite id or
//! a glob over composite ids (`deepseek/*`), in USD per million tokens.

use modelyard_core::cost::Price;

use super::raw::RawPrice;
use super::validate::error_in;
use super::{ConfigError, ProviderConfig};

/// One `[[prices]]` entry: `model` (an exact composite id `provider/model`,
/// or a glob where `*` matches any text, e.g. `deepseek/*`) and its rates
/// in USD per million tokens (`input_per_mtok`, `cached_input_per_mtok`,
/// `output_per_mtok`, `reasoning_per_mtok`; `currency` may only be
/// `"USD"`). The most specific matching entry prices a call
/// ([`crate::pricing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceConfig {
    /// The exact id or glob.
    pub model: String,
    /// The rates.
    pub price: modelyard_core::cost::Price,
    /// [`modelyard_core::cost::Price::version`] of this entry: which prices
    /// priced a call.
    pub version: String,
}

/// Largest rate accepted, USD per million tokens (far above any real one;
/// a typo's bound).
const MAX_RATE: f64 = 1_000_000.0;

/// `[[prices]]`: each entry checked, patterns unique.
pub(super) fn prices(
    raw: Vec<RawPrice>,
    providers: &[ProviderConfig],
    source_name: &str,
) -> Result<Vec<PriceConfig>, ConfigError> {
    let err = error_in(source_name);
    let mut out: Vec<PriceConfig> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("prices[{i}].{field}");
        let model = entry.model.trim().to_owned();
        if model.is_empty() {
            return Err(err(key("model"), "must not be empty".into()));
        }
        if !model.contains('*') {
            let Some((provider, name)) = model.split_once('/') else {
                return Err(err(
                    key("model"),
                    format!(
                        "{model:?} is neither a composite id `provider/model` nor a glob \
                         (`provider/*`)"
                    ),
                ));
            };
            if name.is_empty() {
                return Err(err(key("model"), format!("{model:?} has no model name")));
            }
            if !providers.iter().any(|p| p.name.as_str() == provider) {
                let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                return Err(err(
                    key("model"),
                    format!(
                        "no provider named {provider:?} (providers: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        if out.iter().any(|p| p.model == model) {
            return Err(err(
                key("model"),
                format!("{model:?} is priced twice; keep one entry"),
            ));
        }
        if let Some(currency) = &entry.currency {
            if currency != "USD" {
                return Err(err(
                    key("currency"),
                    format!("only \"USD\" is supported, got {currency:?}"),
                ));
            }
        }
        let rate = |field: &str, value: f64| {
            if value.is_finite() && (0.0..=MAX_RATE).contains(&value) {
                Ok(value)
            } else {
                Err(err(
                    key(field),
                    format!(
                        "must be a number of USD per million tokens, 0 to {MAX_RATE}, got {value}"
                    ),
                ))
            }
        };
        let optional = |field: &str, value: Option<f64>| value.map(|v| rate(field, v)).transpose();
        let price = Price {
            input_per_mtok: rate("input_per_mtok", entry.input_per_mtok)?,
            cached_input_per_mtok: optional("cached_input_per_mtok", entry.cached_input_per_mtok)?,
            output_per_mtok: rate("output_per_mtok", entry.output_per_mtok)?,
            reasoning_per_mtok: optional("reasoning_per_mtok", entry.reasoning_per_mtok)?,
        };
        out.push(PriceConfig {
            version: price.version(&model),
            model,
            price,
        });
    }
    Ok(out)
}
