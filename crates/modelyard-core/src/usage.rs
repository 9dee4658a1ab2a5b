//! Token usage of an LLM call, as reported by the upstream.
//!
//! Field meanings follow OpenAI's `usage` object: `prompt_tokens`,
//! `completion_tokens`, `total_tokens`,
//! `completion_tokens_details.reasoning_tokens` and
//! `prompt_tokens_details.cached_tokens`. `None` means the upstream did not
//! report the number (never a guessed zero).

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
    /// Total tokens as reported, else prompt + completion when both are known.
    pub total_tokens: Option<u64>,
}

impl Usage {
    /// Whether the upstream reported any number at all.
    pub fn is_reported(&self) -> bool {
        self.prompt_tokens.is_some()
            || self.completion_tokens.is_some()
            || self.total_tokens.is_some()
    }

    /// Fills `total_tokens` from prompt + completion when the upstream left it out.
    pub fn with_derived_total(mut self) -> Self {
        if self.total_tokens.is_none() {
            if let (Some(p), Some(c)) = (self.prompt_tokens, self.completion_tokens) {
                self.total_tokens = Some(p + c);
            }
        }
        self
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
}
