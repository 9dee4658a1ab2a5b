//! Settlement after the call: a request's recorded calls become what it
//! spent against its limits.

use modelyard_core::usage::add_tokens;
use modelyard_core::Usage;

use modelyard_core::limits::Window;
use modelyard_store::{CounterKey, LimitMetric, ProjectId};

use super::{lock, Admission, Quotas};

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
            let (tokens, cost_nusd) = spent_by(calls, pricing, admission.holds_cost());
            admission.settle(tokens, cost_nusd);
        }
    }
}

/// The tokens and nano-USD `calls` spent, priced by `pricing` (a call
/// whose cost cannot be told counts 0) when `priced` (else the cost is 0:
/// nothing needs it).
fn spent_by(
    calls: &[CallUsage<'_>],
    pricing: &crate::pricing::Pricing,
    priced: bool,
) -> (i64, i64) {
    let tokens = calls
        .iter()
        .map(|c| call_tokens(&c.usage))
        .fold(0, add_tokens);
    let cost_nusd = if priced {
        calls
            .iter()
            .filter_map(|c| pricing.cost_nusd_of(c.model_id, &c.usage))
            .fold(0_i64, i64::saturating_add)
    } else {
        0
    };
    (i64::try_from(tokens).unwrap_or(i64::MAX), cost_nusd)
}

impl Quotas {
    /// Charges what `calls` spent when no request admitted them first (a
    /// conversation's title, compaction, advisor, warm-up): their tokens
    /// and cost count against `tokens_per_minute` and the token and cost
    /// budgets of `key_id` (if any) and `project` at `now_ms`, like a
    /// settled request's — past the limit if need be, since it was spent;
    /// the next request is refused if the limit is then reached. The
    /// charge is local first and reaches the shared counters with the next
    /// flush, as a settlement's overspend does.
    pub async fn charge(
        &self,
        project: &ProjectId,
        key_id: Option<&str>,
        calls: &[CallUsage<'_>],
        pricing: &crate::pricing::Pricing,
        now_ms: i64,
    ) {
        let (tokens, cost_nusd) = spent_by(calls, pricing, true);
        if tokens == 0 && cost_nusd == 0 {
            return;
        }
        let applicable = self.limits_for(project, key_id).await;
        for (subject, limits) in &applicable {
            let mut charges = Vec::new();
            if let Some(tpm) = limits.tokens_per_minute {
                charges.push((LimitMetric::Tokens, tpm, tokens, Window::minute(now_ms)));
            }
            if let Some(period) = limits.period {
                let window = period.window(now_ms);
                if let Some(max) = limits.max_tokens {
                    charges.push((LimitMetric::BudgetTokens, max, tokens, window));
                }
                if let Some(max) = limits.max_cost_nusd {
                    charges.push((LimitMetric::BudgetCost, max, cost_nusd, window));
                }
            }
            for (metric, limit, amount, window) in charges {
                if amount == 0 {
                    continue;
                }
                let key = CounterKey {
                    subject: subject.key(),
                    metric,
                    window_start_ms: window.start_ms,
                    window_end_ms: window.end_ms,
                };
                let cell = self.cell(&key, window, limit);
                let mut local = lock(&cell);
                local.available = local.available.saturating_sub(amount);
                local.last_used = std::time::Instant::now();
            }
        }
    }
}
