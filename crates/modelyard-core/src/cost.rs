//! The cost of one LLM call: its [`Usage`] priced by a [`Price`].
//!
//! Prices are in USD per million tokens (the unit providers publish);
//! costs are integers in **nano-USD** (1e-9 USD), so sums over millions of
//! calls stay exact. Every step is integer arithmetic on pico-USD per
//! token (a price is rounded to 1e-6 USD per million tokens once) and
//! saturates instead of overflowing.
//!
//! Usage conventions (see [`Usage`]): the usage type always carries the
//! *normalized* form, OpenAI's — `cached_prompt_tokens` (cache reads) and
//! `cache_creation_tokens` (cache writes) are parts of `prompt_tokens`,
//! `reasoning_tokens` a part of `completion_tokens`. Anthropic reports its
//! cache reads and writes *beside* `input_tokens`; [`Usage::from_anthropic`]
//! adds them into `prompt_tokens`, so one formula prices both:
//!
//! ```text
//! cost = (prompt − cached − creation) × input
//!      + cached                       × (cached_input, else input)
//!      + creation                     × input
//!      + (completion − reasoning)     × output
//!      + reasoning                    × (reasoning, else output)
//! ```
//!
//! Cache writes are priced at the input rate ([`Price`] has no cache-write
//! rate). A part larger than its whole (an upstream reporting more cached
//! than prompt tokens) is capped at the whole, so no token is priced twice.

use std::fmt::Write as _;

use crate::usage::Usage;

/// One model's price, USD per million tokens (all finite and ≥ 0; the
/// config checks that).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    /// Uncached prompt (input) tokens, USD / Mtok.
    pub input_per_mtok: f64,
    /// Prompt tokens read from the provider's cache, USD / Mtok; `None`
    /// prices them as uncached input.
    pub cached_input_per_mtok: Option<f64>,
    /// Completion (output) tokens, USD / Mtok.
    pub output_per_mtok: f64,
    /// Reasoning tokens, USD / Mtok. OpenAI reports reasoning tokens
    /// *inside* `completion_tokens`; they are priced at this rate instead
    /// of the output rate, and `None` prices them as output.
    pub reasoning_per_mtok: Option<f64>,
}

/// Pico-USD (1e-12 USD) per token for a price in USD per million tokens:
/// `usd_per_mtok × 1e6`, rounded; negative, NaN or huge values saturate to
/// `0..=u64::MAX`.
fn pico_per_token(usd_per_mtok: f64) -> u128 {
    let pico = (usd_per_mtok * 1e6).round();
    if pico.is_nan() || pico <= 0.0 {
        0
    } else if pico >= u64::MAX as f64 {
        u128::from(u64::MAX)
    } else {
        pico as u128
    }
}

impl Price {
    /// A short, stable fingerprint of this price and the entry it came
    /// from (`source`, e.g. the config entry's model pattern): 12 hex
    /// digits of FNV-1a over the rates at their priced precision. A call
    /// row keeps it, so which prices priced a call can be told after the
    /// prices change.
    pub fn version(&self, source: &str) -> String {
        let mut text = String::with_capacity(source.len() + 64);
        text.push_str(source);
        for rate in [
            Some(self.input_per_mtok),
            self.cached_input_per_mtok,
            Some(self.output_per_mtok),
            self.reasoning_per_mtok,
        ] {
            match rate {
                Some(r) => {
                    let _ = write!(text, "|{}", pico_per_token(r));
                }
                None => text.push_str("|-"),
            }
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:012x}", hash >> 16)
    }
}

/// The cost of a call with `usage` at `price`, in nano-USD (1e-9 USD),
/// rounded to the nearest nano-USD and saturating at `i64::MAX`. Counts
/// the upstream did not report count as 0 (the caller decides whether an
/// unreported usage has a cost at all: see [`Usage::is_reported`]).
pub fn call_cost_nusd(usage: &Usage, price: &Price) -> i64 {
    let prompt = usage.prompt_tokens.unwrap_or(0);
    let cached = usage.cached_prompt_tokens.unwrap_or(0).min(prompt);
    let creation = usage
        .cache_creation_tokens
        .unwrap_or(0)
        .min(prompt - cached);
    let uncached = prompt - cached - creation;
    let completion = usage.completion_tokens.unwrap_or(0);
    let reasoning = usage.reasoning_tokens.unwrap_or(0).min(completion);
    let plain_output = completion - reasoning;

    let input = pico_per_token(price.input_per_mtok);
    let cached_rate = price.cached_input_per_mtok.map_or(input, pico_per_token);
    let output = pico_per_token(price.output_per_mtok);
    let reasoning_rate = price.reasoning_per_mtok.map_or(output, pico_per_token);

    // Each product is < 2^64 · 2^64 = 2^128 only in theory: token counts
    // are clamped to 2^32 − 1 per call, rates to u64, so u128 never
    // overflows here; saturate anyway.
    let pico = [
        (uncached + creation, input),
        (cached, cached_rate),
        (plain_output, output),
        (reasoning, reasoning_rate),
    ]
    .into_iter()
    .fold(0u128, |sum, (tokens, rate)| {
        sum.saturating_add(u128::from(tokens).saturating_mul(rate))
    });
    let nano = pico.saturating_add(500) / 1000;
    i64::try_from(nano).unwrap_or(i64::MAX)
}

/// `nano` nano-USD as USD (for the wire's `costUsd`).
pub fn nusd_to_usd(nano: i64) -> f64 {
    nano as f64 / 1e9
}

/// `a + b` nano-USD, saturating.
pub fn add_nusd(a: i64, b: i64) -> i64 {
    a.saturating_add(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
        Usage {
            prompt_tokens: Some(prompt),
            cached_prompt_tokens: Some(cached),
            completion_tokens: Some(completion),
            reasoning_tokens: Some(reasoning),
            ..Usage::default()
        }
    }

    const DEEPSEEK: Price = Price {
        input_per_mtok: 0.27,
        cached_input_per_mtok: Some(0.07),
        output_per_mtok: 1.10,
        reasoning_per_mtok: None,
    };

    #[test]
    fn table() {
        let o1 = Price {
            input_per_mtok: 15.0,
            cached_input_per_mtok: Some(7.5),
            output_per_mtok: 60.0,
            reasoning_per_mtok: Some(80.0),
        };
        let tiny = Price {
            input_per_mtok: 0.0004,
            ..Price::default()
        };
        let no_cache_rate = Price {
            cached_input_per_mtok: None,
            ..DEEPSEEK
        };
        // (what, usage, price, nano-USD)
        let cases: Vec<(&str, Usage, Price, i64)> = vec![
            ("nothing reported", Usage::default(), DEEPSEEK, 0),
            // 1M uncached prompt tokens at 0.27 USD/Mtok.
            (
                "1M prompt",
                usage(1_000_000, 0, 0, 0),
                DEEPSEEK,
                270_000_000,
            ),
            // 1M output at 1.10.
            (
                "1M output",
                usage(0, 0, 1_000_000, 0),
                DEEPSEEK,
                1_100_000_000,
            ),
            // OpenAI convention: 1000 prompt of which 400 cached:
            // 600 × 270 000 + 400 × 70 000 pico = 190e6 pico = 190 000 nano.
            ("openai cached", usage(1000, 400, 0, 0), DEEPSEEK, 190_000),
            // Without a cached rate, cached tokens cost like input.
            (
                "cached w/o rate",
                usage(1000, 400, 0, 0),
                no_cache_rate,
                270_000,
            ),
            // More cached than prompt (a bad upstream): capped, never negative.
            ("cached > prompt", usage(100, 500, 0, 0), DEEPSEEK, 7_000),
            // Reasoning inside completion at its own rate: 1000 completion of
            // which 600 reasoning: 400 × 60e6 + 600 × 80e6 pico = 72e9 pico.
            ("reasoning rate", usage(0, 0, 1000, 600), o1, 72_000_000),
            // Without a reasoning rate, reasoning is output.
            (
                "reasoning as output",
                usage(0, 0, 1000, 600),
                DEEPSEEK,
                1_100_000,
            ),
            // Everything: 2000 prompt (500 cached), 300 completion (100 reasoning):
            // 1500 × 15e6 + 500 × 7.5e6 + 200 × 60e6 + 100 × 80e6 pico
            // = 22.5e9 + 3.75e9 + 12e9 + 8e9 = 46.25e9 pico = 46 250 000 nano.
            ("all parts", usage(2000, 500, 300, 100), o1, 46_250_000),
            // Rounding: 1 token at 0.0004 USD/Mtok = 400 pico → 0 nano;
            // 2 tokens = 800 pico → 1 nano (nearest).
            ("rounds down", usage(1, 0, 0, 0), tiny, 0),
            ("rounds up", usage(2, 0, 0, 0), tiny, 1),
            ("free", usage(1000, 0, 1000, 0), Price::default(), 0),
        ];
        for (what, u, price, want) in cases {
            assert_eq!(call_cost_nusd(&u, &price), want, "{what}");
        }
    }

    #[test]
    fn anthropic_convention_prices_cache_reads_and_writes() {
        // Anthropic: input_tokens 100 (uncached), cache_read 1000,
        // cache_creation 200, output 50 — reads and writes are beside input.
        let u = Usage::from_anthropic(Some(100), Some(1000), Some(200), Some(50));
        assert_eq!(u.prompt_tokens, Some(1300));
        assert_eq!(u.cached_prompt_tokens, Some(1000));
        assert_eq!(u.cache_creation_tokens, Some(200));
        assert_eq!(u.completion_tokens, Some(50));
        assert_eq!(u.total_tokens, Some(1350));
        let sonnet = Price {
            input_per_mtok: 3.0,
            cached_input_per_mtok: Some(0.30),
            output_per_mtok: 15.0,
            reasoning_per_mtok: None,
        };
        // (100 + 200) × 3e6 + 1000 × 0.3e6 + 50 × 15e6 pico
        // = 900 000 + 300 000 + 750 000 nano.
        assert_eq!(call_cost_nusd(&u, &sonnet), 1_950_000);
        // The same call reported in OpenAI's convention (cached inside the
        // prompt) costs the same.
        let openai = Usage {
            prompt_tokens: Some(1300),
            cached_prompt_tokens: Some(1000),
            cache_creation_tokens: Some(200),
            completion_tokens: Some(50),
            ..Usage::default()
        };
        assert_eq!(call_cost_nusd(&openai, &sonnet), 1_950_000);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let huge = Price {
            input_per_mtok: f64::MAX,
            cached_input_per_mtok: Some(f64::INFINITY),
            output_per_mtok: 1e300,
            reasoning_per_mtok: Some(f64::NAN),
        };
        let u = usage(u64::MAX, u64::MAX / 2, u64::MAX, u64::MAX);
        assert_eq!(call_cost_nusd(&u, &huge), i64::MAX);
        // Negative rates (refused by the config) price at 0, never negative.
        let negative = Price {
            input_per_mtok: -5.0,
            ..Price::default()
        };
        assert_eq!(call_cost_nusd(&usage(1000, 0, 0, 0), &negative), 0);
        assert_eq!(add_nusd(i64::MAX, 1), i64::MAX);
        assert!((nusd_to_usd(1_500_000_000) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn versions_are_short_stable_and_change_with_the_price() {
        let v = DEEPSEEK.version("deepseek/*");
        assert_eq!(v.len(), 12);
        assert!(v.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(v, DEEPSEEK.version("deepseek/*"));
        assert_ne!(v, DEEPSEEK.version("deepseek/chat"));
        let cheaper = Price {
            output_per_mtok: 1.0,
            ..DEEPSEEK
        };
        assert_ne!(v, cheaper.version("deepseek/*"));
        let no_cache = Price {
            cached_input_per_mtok: None,
            ..DEEPSEEK
        };
        assert_ne!(v, no_cache.version("deepseek/*"));
    }
}
