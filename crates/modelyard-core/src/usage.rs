//! Token usage of an LLM call, as reported by the upstream.
//!
//! Field meanings follow OpenAI's `usage` object: `prompt_tokens`,
//! `completion_tokens`, `total_tokens`,
//! `completion_tokens_details.reasoning_tokens` and
//! `prompt_tokens_details.cached_tokens`. `None` means the upstream did not
//! report the number (never a guessed zero).
//!
//! Cache counts are always carried in OpenAI's convention: cache reads
//! (`cached_prompt_tokens`) and cache writes (`cache_creation_tokens`) are
//! parts of `prompt_tokens`. Anthropic reports them beside `input_tokens`;
//! [`Usage::from_anthropic`] converts (see [`crate::cost`] for pricing).

/// The largest token count one call may report (2^32 − 1); an upstream's
/// larger count is clamped to it.
pub const MAX_CALL_TOKENS: u64 = u32::MAX as u64;

/// The largest running total of tokens: `i64::MAX`, the largest a BIGINT
/// column stores.
pub const MAX_TOKEN_COUNT: u64 = i64::MAX as u64;

/// `a + b`, saturating at [`MAX_TOKEN_COUNT`].
pub fn add_tokens(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_TOKEN_COUNT)
}

/// Token counts of one call. All values are tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: Option<u64>,
    /// Tokens generated.
    pub completion_tokens: Option<u64>,
    /// Generated tokens spent on reasoning (a subset of `completion_tokens`).
    pub reasoning_tokens: Option<u64>,
    /// Prompt tokens served from the provider's cache (a subset of `prompt_tokens`).
    pub cached_prompt_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (Anthropic's
    /// `cache_creation_input_tokens`; a subset of `prompt_tokens`, apart
    /// from `cached_prompt_tokens`).
    pub cache_creation_tokens: Option<u64>,
    /// Total tokens as reported, else prompt + completion when both are known.
    pub total_tokens: Option<u64>,
}

impl Usage {
    /// Usage reported in Anthropic's convention, where `input_tokens` are
    /// only the uncached prompt tokens and `cache_read_input_tokens` /
    /// `cache_creation_input_tokens` come beside them: `prompt_tokens`
    /// becomes their sum (saturating), the cache counts its parts. Counts
    /// are clamped like any call's; the total is derived.
    pub fn from_anthropic(
        input_tokens: Option<u64>,
        cache_read_input_tokens: Option<u64>,
        cache_creation_input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    ) -> Self {
        let reported = [
            input_tokens,
            cache_read_input_tokens,
            cache_creation_input_tokens,
        ];
        let prompt = reported
            .iter()
            .any(Option::is_some)
            .then(|| reported.iter().flatten().fold(0, |a, b| add_tokens(a, *b)));
        Usage {
            prompt_tokens: prompt,
            completion_tokens: output_tokens,
            cached_prompt_tokens: cache_read_input_tokens,
            cache_creation_tokens: cache_creation_input_tokens,
            ..Usage::default()
        }
        .clamped()
        .with_derived_total()
    }

    /// Whether the upstream reported any number at all.
    pub fn is_reported(&self) -> bool {
        self.prompt_tokens.is_some()
            || self.completion_tokens.is_some()
            || self.total_tokens.is_some()
    }

    /// Fills `total_tokens` from prompt + completion (saturating) when the
    /// upstream left it out.
    pub fn with_derived_total(mut self) -> Self {
        if self.total_tokens.is_none() {
            if let (Some(p), Some(c)) = (self.prompt_tokens, self.completion_tokens) {
                self.total_tokens = Some(add_tokens(p, c));
            }
        }
        self
    }

    /// Every count capped at [`MAX_CALL_TOKENS`].
    pub fn clamped(self) -> Self {
        let cap = |n: Option<u64>| n.map(|n| n.min(MAX_CALL_TOKENS));
        Usage {
            prompt_tokens: cap(self.prompt_tokens),
            completion_tokens: cap(self.completion_tokens),
            reasoning_tokens: cap(self.reasoning_tokens),
            cached_prompt_tokens: cap(self.cached_prompt_tokens),
            cache_creation_tokens: cap(self.cache_creation_tokens),
            total_tokens: cap(self.total_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_total_only_when_missing() {
        let u = Usage {
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            ..Usage::default()
        };
        assert_eq!(u.with_derived_total().total_tokens, Some(7));
        let reported = Usage {
            total_tokens: Some(9),
            ..u
        };
        assert_eq!(reported.with_derived_total().total_tokens, Some(9));
        assert!(!Usage::default().is_reported());
    }

    #[test]
    fn huge_counts_saturate_and_are_clamped() {
        let huge = Usage {
            prompt_tokens: Some(u64::MAX),
            completion_tokens: Some(u64::MAX),
            ..Usage::default()
        };
        assert_eq!(
            huge.with_derived_total().total_tokens,
            Some(MAX_TOKEN_COUNT)
        );
        let clamped = Usage {
            reasoning_tokens: Some(u64::MAX),
            cached_prompt_tokens: Some(MAX_CALL_TOKENS + 1),
            total_tokens: Some(u64::MAX),
            ..huge
        }
        .clamped();
        assert_eq!(clamped.prompt_tokens, Some(MAX_CALL_TOKENS));
        assert_eq!(clamped.completion_tokens, Some(MAX_CALL_TOKENS));
        assert_eq!(clamped.reasoning_tokens, Some(MAX_CALL_TOKENS));
        assert_eq!(clamped.cached_prompt_tokens, Some(MAX_CALL_TOKENS));
        assert_eq!(clamped.total_tokens, Some(MAX_CALL_TOKENS));
        let small = Usage {
            prompt_tokens: Some(MAX_CALL_TOKENS),
            completion_tokens: Some(7),
            ..Usage::default()
        };
        assert_eq!(small.clamped(), small);
        assert_eq!(add_tokens(MAX_TOKEN_COUNT, 1), MAX_TOKEN_COUNT);
        assert_eq!(add_tokens(u64::MAX, u64::MAX), MAX_TOKEN_COUNT);
        assert_eq!(add_tokens(2, 3), 5);
    }

    #[test]
    fn conversation_totals_add_known_costs_only() {
        use crate::conversation::{TokenTotals, TokenUsage};
        let mut totals = TokenTotals::default();
        totals.add(&TokenUsage::default());
        assert_eq!(totals.cost_nusd, None, "no known cost yet");
        let priced = TokenUsage {
            prompt_tokens: Some(3),
            cost_nusd: Some(1_000),
            ..TokenUsage::default()
        };
        totals.add(&priced);
        totals.add(&TokenUsage::default());
        totals.add(&priced);
        assert_eq!(totals.cost_nusd, Some(2_000));
        totals.add(&TokenUsage {
            cost_nusd: Some(i64::MAX),
            ..TokenUsage::default()
        });
        assert_eq!(totals.cost_nusd, Some(i64::MAX), "saturates");
        // Totals stored before costs existed still read.
        let old: TokenTotals = serde_json::from_value(serde_json::json!({
            "promptTokens": 1, "completionTokens": 2, "reasoningTokens": 0,
            "cachedPromptTokens": 0, "totalTokens": 3
        }))
        .unwrap();
        assert_eq!(old.cost_nusd, None);
    }

    #[test]
    fn conversation_totals_saturate() {
        use crate::conversation::{TokenTotals, TokenUsage};
        let huge = TokenUsage {
            prompt_tokens: Some(u64::MAX),
            completion_tokens: Some(u64::MAX),
            reasoning_tokens: Some(u64::MAX),
            cached_prompt_tokens: Some(u64::MAX),
            total_tokens: None,
            cost_nusd: None,
        };
        let mut totals = TokenTotals::default();
        totals.add(&huge);
        totals.add(&huge);
        assert_eq!(totals.prompt_tokens, MAX_TOKEN_COUNT);
        assert_eq!(totals.completion_tokens, MAX_TOKEN_COUNT);
        assert_eq!(totals.reasoning_tokens, MAX_TOKEN_COUNT);
        assert_eq!(totals.cached_prompt_tokens, MAX_TOKEN_COUNT);
        assert_eq!(totals.total_tokens, MAX_TOKEN_COUNT);
    }
}
