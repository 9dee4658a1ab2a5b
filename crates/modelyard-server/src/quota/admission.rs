//! Admission before the upstream call: what a request needs, the reserve
//! and `max_concurrent` slot it holds while it runs, and the counts its
//! rate-limit headers show.

use std::sync::{Arc, Mutex};

use modelyard_core::limits::{Limits, Window};
use modelyard_core::usage::add_tokens;
use modelyard_store::{CounterKey, LimitMetric, LimitSubject};
use modelyard_upstream::openai::ChatRequestHead;

use super::counters::{Cell, Taken};
use super::refusal::format_usd;
use super::{lock, Applicable, InFlight, Quotas, Refusal, BYTES_PER_TOKEN};

/// What a request needs before it is sent: tokens (its output cap, else
/// the default reserve, plus the prompt estimate) and nano-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need {
    /// Tokens reserved.
    pub tokens: i64,
    /// Nano-USD reserved: the request's tokens at its model's price (see
    /// [`crate::http::quota`]); at least 1 is taken from a cost budget.
    pub cost_nusd: i64,
}

/// Output caps a request body may carry (OpenAI chat, legacy completions,
/// Anthropic Messages, Responses).
#[derive(serde::Deserialize, Default)]
struct Caps {
    /// Any JSON: a `model` that is not a string must not lose the caps.
    model: Option<serde_json::Value>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
    /// A conversation turn's operation (any JSON, like `model`).
    operation: Option<serde_json::Value>,
}

impl Caps {
    /// The output tokens these caps allow: the first of
    /// `max_completion_tokens`, `max_tokens`, `max_output_tokens`, else
    /// `default_reserve`, times `n` (1..=128).
    fn output(&self, default_reserve: u64) -> u64 {
        let cap = self
            .max_completion_tokens
            .or(self.max_tokens)
            .or(self.max_output_tokens)
            .unwrap_or(default_reserve);
        cap.saturating_mul(self.n.unwrap_or(1).clamp(1, 128))
    }
}

/// The tokens to reserve for a request `body`: its output cap
/// (`max_completion_tokens`, `max_tokens` or `max_output_tokens`, times
/// `n`) or `default_reserve` when it has none, if it `generates`
/// (embeddings and rerank do not), plus a token per [`BYTES_PER_TOKEN`]
/// bytes of body for the prompt. A body that is not JSON gets the default.
pub fn reserve_tokens(body: &[u8], default_reserve: u64, generates: bool) -> i64 {
    let split = reserve_split(body, default_reserve, generates);
    i64::try_from(add_tokens(split.prompt, split.output)).unwrap_or(i64::MAX)
}

/// A request's reserve by kind of token: what [`reserve_tokens`] adds up,
/// kept apart so a cost reserve can price prompt and output at their own
/// rates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReserveSplit {
    /// The body's `model`, when it names one (a route or deployment id;
    /// conversation turns take their model from the conversation).
    pub model: Option<String>,
    /// The body's `operation`, when it names one (a conversation turn's).
    pub operation: Option<String>,
    /// Prompt tokens: a token per [`BYTES_PER_TOKEN`] bytes of body.
    pub prompt: u64,
    /// Output tokens: the body's output cap times `n`, else the default
    /// reserve; 0 for requests that do not generate.
    pub output: u64,
}

/// [`reserve_tokens`], split into prompt and output tokens.
pub fn reserve_split(body: &[u8], default_reserve: u64, generates: bool) -> ReserveSplit {
    let prompt = body.len() as u64 / BYTES_PER_TOKEN;
    let caps: Caps = serde_json::from_slice(body).unwrap_or_default();
    let output = if generates {
        caps.output(default_reserve)
    } else {
        0
    };
    ReserveSplit {
        model: string(caps.model),
        operation: string(caps.operation),
        prompt,
        output,
    }
}

/// [`reserve_split`] of a chat-completion body of `body_len` bytes that
/// was already read as `head` (its `model`, `max_completion_tokens`,
/// `max_tokens` and `n`), so the body is parsed once: the reserve is the
/// same as [`reserve_split`]'s for that body (the chat head has no
/// `max_output_tokens`, which chat completions do not take).
pub fn chat_split(head: &ChatRequestHead, body_len: usize, default_reserve: u64) -> ReserveSplit {
    let caps = Caps {
        max_tokens: head.max_tokens,
        max_completion_tokens: head.max_completion_tokens,
        n: head.n,
        ..Caps::default()
    };
    ReserveSplit {
        model: head.model.clone(),
        operation: None,
        prompt: body_len as u64 / BYTES_PER_TOKEN,
        output: caps.output(default_reserve),
    }
}

fn string(value: Option<serde_json::Value>) -> Option<String> {
    match value {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

/// An arena request's head: its models and the options every model gets.
#[derive(serde::Deserialize, Default)]
struct ArenaHead {
    #[serde(default)]
    models: Vec<serde_json::Value>,
    #[serde(default)]
    options: Option<Caps>,
}

/// An arena request's reserve (`POST /v1/arena`,
/// `POST /v1/conversations/{id}/arena`): every model answers the same
/// request, so each reserves one chat — its prompt estimate plus the output
/// cap in `options` (or the default reserve).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArenaSplit {
    /// The models the body names as strings (at most the maximum), to
    /// price each one's share.
    pub models: Vec<String>,
    /// How many models reserve: the body's count, at least 1 (a body that
    /// is not JSON counts as one model), at most the maximum.
    pub count: u64,
    /// Prompt tokens of one model's request: a token per
    /// [`BYTES_PER_TOKEN`] bytes of body.
    pub prompt: u64,
    /// Output tokens of one model's request.
    pub output: u64,
}

impl ArenaSplit {
    /// Tokens the whole run reserves: one chat's times [`Self::count`].
    pub fn tokens(&self) -> i64 {
        let one = add_tokens(self.prompt, self.output);
        i64::try_from(one.saturating_mul(self.count)).unwrap_or(i64::MAX)
    }
}

/// The reserve of an arena request `body` ([`ArenaSplit`]); at most
/// `max_models` models count.
pub fn arena_split(body: &[u8], default_reserve: u64, max_models: usize) -> ArenaSplit {
    let head: ArenaHead = serde_json::from_slice(body).unwrap_or_default();
    let max_models = max_models.max(1);
    let count = head.models.len().clamp(1, max_models) as u64;
    let models = head
        .models
        .into_iter()
        .take(max_models)
        .filter_map(|m| string(Some(m)))
        .collect();
    ArenaSplit {
        models,
        count,
        prompt: body.len() as u64 / BYTES_PER_TOKEN,
        output: head.options.unwrap_or_default().output(default_reserve),
    }
}

/// The tokens to reserve for an arena request `body`: [`arena_split`]'s
/// [`ArenaSplit::tokens`].
pub fn arena_reserve_tokens(body: &[u8], default_reserve: u64, max_models: usize) -> i64 {
    arena_split(body, default_reserve, max_models).tokens()
}

/// The counts a response's rate-limit headers show: the tightest of the
/// request's key and project, after this request was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Remaining {
    /// `requests_per_minute` (`x-ratelimit-limit-requests`).
    pub limit_requests: Option<i64>,
    /// Requests left this minute (`x-ratelimit-remaining-requests`).
    pub requests: Option<i64>,
    /// `tokens_per_minute` (`x-ratelimit-limit-tokens`).
    pub limit_tokens: Option<i64>,
    /// Tokens left this minute, or in the token budget's period when that
    /// is smaller (`x-ratelimit-remaining-tokens`).
    pub tokens: Option<i64>,
    /// Nano-USD left in the cost budget's period
    /// (`x-modelyard-budget-remaining`, shown in USD).
    pub budget_nusd: Option<i64>,
}

impl Remaining {
    fn lower(slot: &mut Option<i64>, value: i64) {
        *slot = Some(slot.map_or(value, |v| v.min(value)));
    }

    /// The budget left in USD, as the header shows it (6 decimals, the
    /// nano-USD rounded half up; integer arithmetic, no float formatting).
    pub fn budget_usd(&self) -> Option<String> {
        self.budget_nusd.map(|n| {
            // `i64::MAX + 500` fits a u64. Written digit by digit, not with
            // `format!`: this runs for every request with a cost budget.
            let micro = (n.max(0).unsigned_abs() + 500) / 1000;
            let mut fraction = [b'0'; 6];
            let mut rest = micro % 1_000_000;
            for digit in fraction.iter_mut().rev() {
                *digit = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            let mut whole = itoa::Buffer::new();
            let whole = whole.format(micro / 1_000_000);
            let mut usd = String::with_capacity(whole.len() + 7);
            usd.push_str(whole);
            usd.push('.');
            usd.extend(fraction.iter().map(|&d| char::from(d)));
            usd
        })
    }
}

/// A share of a counter an admission holds.
#[derive(Debug)]
struct Held {
    cell: Cell,
    metric: LimitMetric,
    amount: i64,
}

impl Quotas {
    /// Admits a request that needs `need` under `applicable` limits (a
    /// key's first, then its project's) at `now_ms`: counts the request,
    /// reserves the tokens and cost, takes a `max_concurrent` slot — all or
    /// nothing.
    ///
    /// # Errors
    /// [`Refusal::Limit`] naming the first limit reached;
    /// [`Refusal::Unavailable`] when a lease was needed and the store did
    /// not answer within [`STORE_TIMEOUT`](super::STORE_TIMEOUT).
    pub async fn admit(
        self: &Arc<Self>,
        applicable: &Applicable,
        need: Need,
        now_ms: i64,
    ) -> Result<Admission, Refusal> {
        let mut admission = Admission {
            quotas: Arc::clone(self),
            held: Vec::new(),
            concurrent: Vec::new(),
            reserved: need,
            remaining: Remaining::default(),
            settled: false,
        };
        for (subject, limits) in applicable {
            if let Err(refusal) = self
                .admit_one(&mut admission, subject, limits, need, now_ms)
                .await
            {
                admission.roll_back();
                return Err(refusal);
            }
        }
        Ok(admission)
    }

    async fn admit_one(
        &self,
        admission: &mut Admission,
        subject: &LimitSubject,
        limits: &Limits,
        need: Need,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let scope = subject.kind();
        let subject_key = subject.key();
        if let Some(max) = limits.max_concurrent {
            self.take_concurrent(&subject_key, max, now_ms)
                .await
                .map_err(|taken| match taken {
                    Taken::Short => Refusal::Limit {
                        scope,
                        name: "maxConcurrent",
                        value: max.to_string(),
                        period: None,
                        retry_after_secs: Some(1),
                    },
                    Taken::Unavailable => Refusal::Unavailable { scope },
                })?;
            admission.concurrent.push(subject_key.clone());
        }
        let minute = Window::minute(now_ms);
        // (metric, limit, amount, window, name), in this order, on the
        // stack; the limit's text is made only for a refusal.
        let period = limits.period.map(|p| p.window(now_ms));
        let checks = [
            limits
                .requests_per_minute
                .map(|rpm| (LimitMetric::Requests, rpm, 1, minute, "requestsPerMinute")),
            limits.tokens_per_minute.map(|tpm| {
                let name = "tokensPerMinute";
                (LimitMetric::Tokens, tpm, need.tokens, minute, name)
            }),
            period.zip(limits.max_tokens).map(|(window, max)| {
                (
                    LimitMetric::BudgetTokens,
                    max,
                    need.tokens,
                    window,
                    "maxTokens",
                )
            }),
            period.zip(limits.max_cost_nusd).map(|(window, max)| {
                let amount = need.cost_nusd.max(1);
                (LimitMetric::BudgetCost, max, amount, window, "maxCostUsd")
            }),
        ];
        // One key for every check of this subject, its subject string made
        // once ([`Quotas::cell`] copies it only for a new counter).
        let mut key = CounterKey {
            subject: subject_key,
            metric: LimitMetric::Requests,
            window_start_ms: 0,
            window_end_ms: None,
        };
        for (metric, limit, amount, window, name) in checks.into_iter().flatten() {
            key.metric = metric;
            key.window_start_ms = window.start_ms;
            key.window_end_ms = window.end_ms;
            let budget = matches!(metric, LimitMetric::BudgetTokens | LimitMetric::BudgetCost);
            let cell =
                self.take(&key, window, limit, amount)
                    .await
                    .map_err(|taken| match taken {
                        Taken::Short => Refusal::Limit {
                            scope,
                            name,
                            value: if metric == LimitMetric::BudgetCost {
                                format_usd(limit)
                            } else {
                                limit.to_string()
                            },
                            period: if budget { limits.period } else { None },
                            retry_after_secs: window.retry_after_secs(now_ms),
                        },
                        Taken::Unavailable => Refusal::Unavailable { scope },
                    })?;
            let remaining = lock(&cell).remaining();
            let r = &mut admission.remaining;
            match metric {
                LimitMetric::Requests => {
                    Remaining::lower(&mut r.limit_requests, limit);
                    Remaining::lower(&mut r.requests, remaining);
                }
                LimitMetric::Tokens => {
                    Remaining::lower(&mut r.limit_tokens, limit);
                    Remaining::lower(&mut r.tokens, remaining);
                }
                LimitMetric::BudgetTokens => Remaining::lower(&mut r.tokens, remaining),
                LimitMetric::BudgetCost => Remaining::lower(&mut r.budget_nusd, remaining),
                LimitMetric::Concurrent => {}
            }
            admission.held.push(Held {
                cell,
                metric,
                amount,
            });
        }
        Ok(())
    }

    /// Takes a `max_concurrent` slot of `subject` (limit `max`), shared by
    /// every replica: refused at once when this replica alone has `max` in
    /// flight, else one unit of the subject's `concurrent` counter of this
    /// minute ([`Self::take`]). The first take of a minute carries this
    /// replica's requests still in flight into the new window (its cell
    /// starts that many units short, which the lease or the next flush
    /// charges), so a window counts every request in flight, and what a
    /// replica that died held is let go when its window ends.
    async fn take_concurrent(&self, subject: &str, max: i64, now_ms: i64) -> Result<(), Taken> {
        let window = Window::minute(now_ms);
        let key = CounterKey {
            subject: subject.to_owned(),
            metric: LimitMetric::Concurrent,
            window_start_ms: window.start_ms,
            window_end_ms: window.end_ms,
        };
        let cell = {
            let mut in_flight = lock(&self.in_flight);
            let here = in_flight.get(subject).map_or(0, |f| f.count);
            if here >= max {
                return Err(Taken::Short);
            }
            // Under the in-flight lock, so no release slips between the
            // count and the cell it is carried into.
            let mut counters = lock(&self.counters);
            let cell = match counters.get(&key) {
                Some(cell) => Arc::clone(cell),
                None => Arc::clone(counters.entry(key.clone()).or_insert_with(|| {
                    Arc::new(Mutex::new(super::counters::Local {
                        available: -here,
                        taken: 0,
                        limit: max,
                        window,
                        last_used: std::time::Instant::now(),
                    }))
                })),
            };
            drop(counters);
            // The requests in flight count in this minute's lease now: their
            // slots go back to it.
            if let Some(slots) = in_flight.get_mut(subject) {
                if lock(&slots.lease).window.start_ms < window.start_ms {
                    slots.lease = Arc::clone(&cell);
                }
            }
            cell
        };
        let cell = self.take_from(cell, &key, max, 1).await?;
        let mut in_flight = lock(&self.in_flight);
        match in_flight.get_mut(subject) {
            Some(slots) => slots.count += 1,
            None => {
                in_flight.insert(
                    key.subject,
                    InFlight {
                        count: 1,
                        lease: cell,
                    },
                );
            }
        }
        Ok(())
    }

    /// Frees the `max_concurrent` slots of `subjects`: each unit goes back
    /// to the subject's newest lease on this replica (a request admitted in
    /// an earlier minute was carried into it), which the flush gives back
    /// to the store once idle.
    fn release_concurrent(&self, subjects: &[String]) {
        if subjects.is_empty() {
            return;
        }
        let mut in_flight = lock(&self.in_flight);
        for subject in subjects {
            let Some(slots) = in_flight.get_mut(subject) else {
                continue;
            };
            slots.count -= 1;
            {
                let mut local = lock(&slots.lease);
                local.available = local.available.saturating_add(1);
            }
            if slots.count <= 0 {
                in_flight.remove(subject);
            }
        }
    }

    /// Requests in flight for `subject` on this replica.
    pub fn in_flight(&self, subject: &LimitSubject) -> i64 {
        lock(&self.in_flight)
            .get(&subject.key())
            .map_or(0, |f| f.count)
    }
}

/// An admitted request's hold on its limits: the reserve it took and its
/// `max_concurrent` slot. [`Admission::settle`] turns the reserve into
/// what the request spent; dropped unsettled (the request ended before any
/// call was made), the reserve is given back. Either way the slot is freed.
#[derive(Debug)]
pub struct Admission {
    quotas: Arc<Quotas>,
    held: Vec<Held>,
    concurrent: Vec<String>,
    reserved: Need,
    remaining: Remaining,
    settled: bool,
}

impl Admission {
    /// What the response headers show.
    pub fn remaining(&self) -> Remaining {
        self.remaining
    }

    /// What was reserved.
    pub fn reserved(&self) -> Need {
        self.reserved
    }

    /// Whether the admission holds a share of a cost budget (settling it
    /// needs the calls' cost).
    pub fn holds_cost(&self) -> bool {
        self.held
            .iter()
            .any(|h| h.metric == LimitMetric::BudgetCost)
    }

    /// Settles: the request spent `tokens` tokens and `cost_nusd` nano-USD.
    /// Less than reserved goes back to this replica's lease; more is
    /// charged (past the limit if need be: it was spent).
    pub fn settle(mut self, tokens: i64, cost_nusd: i64) {
        self.adjust(tokens, cost_nusd);
    }

    /// Settles as if the request spent exactly its reserve (the client left
    /// before the answer's usage was known).
    pub fn settle_reserved(self) {
        let Need { tokens, cost_nusd } = self.reserved;
        self.settle(tokens, cost_nusd);
    }

    fn adjust(&mut self, tokens: i64, cost_nusd: i64) {
        if self.settled {
            return;
        }
        self.settled = true;
        for held in &self.held {
            let spent = match held.metric {
                LimitMetric::Requests | LimitMetric::Concurrent => continue,
                LimitMetric::Tokens | LimitMetric::BudgetTokens => tokens,
                LimitMetric::BudgetCost => cost_nusd,
            };
            let mut local = lock(&held.cell);
            local.available = local.available.saturating_add(held.amount - spent);
        }
        self.quotas.release_concurrent(&self.concurrent);
    }
}

impl Admission {
    /// Undoes a refused admission: every unit taken goes back, the
    /// request included.
    fn roll_back(&mut self) {
        self.settled = true;
        for held in &self.held {
            let mut local = lock(&held.cell);
            local.available = local.available.saturating_add(held.amount);
        }
        self.quotas.release_concurrent(&self.concurrent);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // No call was made: nothing was spent.
        self.adjust(0, 0);
    }
}

/// A request's admission, carried from the middleware to the first model
/// call of the request ([`crate::app::AppState::take_admission`]): the
/// gateway's call draft, or the turn run a request starts. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct AdmissionSlot(Arc<Mutex<Option<Admission>>>);

impl AdmissionSlot {
    /// A slot holding `admission`.
    pub fn new(admission: Admission) -> Self {
        Self(Arc::new(Mutex::new(Some(admission))))
    }

    /// Moves the admission out (once).
    pub fn take(&self) -> Option<Admission> {
        lock(&self.0).take()
    }
}
