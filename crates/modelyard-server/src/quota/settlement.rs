//! Settlement after the call: a request's recorded calls become what it
//! spent against its limits.

use modelyard_core::usage::add_tokens;
use modelyard_core::Usage;

use super::Admission;

/// One recorded call's usage, for [`settle`].
#[derive(Debug, Clone, Copy)]
pub struct CallUsage<'a> {
    /// The deployment that served it (`provider/model`): what prices it.
    pub model_id: &'a str,
    /// Its token counts.
    pub usage: Usage,
}

/// What a request spent, as the call log records it.
#[derive(Debug, Clone, Copy)]
pub enum Spent<'a> {
    /// These calls (attempts, steps).
    Calls(&'a [CallUsage<'a>]),
    /// Unknown: the client left before the answer's usage came; the
    /// reserve counts as spent.
    ClientGone,
}

/// Tokens one call counts for: its total, else prompt + completion.
pub fn call_tokens(usage: &Usage) -> u64 {
    let usage = usage.with_derived_total();
    usage
        .total_tokens
        .or(usage.prompt_tokens)
        .or(usage.completion_tokens)
        .unwrap_or(0)
}

/// Settles a request's admission from the call-recording path (the
/// gateway's call draft, a turn run's record): the one place a request's
/// actual tokens and cost reach its limits.
///
/// Each call's cost is priced by `pricing` ([`crate::pricing::Pricing::cost_of`],
/// the price the call log records); a call whose cost cannot be told (an
/// unpriced cloud model, usage not reported) counts 0 against a cost budget.
pub fn settle(admission: Option<Admission>, pricing: &crate::pricing::Pricing, spent: Spent<'_>) {
    let Some(admission) = admission else { return };
    match spent {
        Spent::ClientGone => admission.settle_reserved(),
        Spent::Calls(calls) => {
            let tokens = calls
                .iter()
                .map(|c| call_tokens(&c.usage))
                .fold(0, add_tokens);
            let cost_nusd = calls
                .iter()
                .filter_map(|c| pricing.cost_of(c.model_id, &c.usage).cost_nusd)
                .fold(0_i64, i64::saturating_add);
            admission.settle(i64::try_from(tokens).unwrap_or(i64::MAX), cost_nusd);
        }
    }
}
