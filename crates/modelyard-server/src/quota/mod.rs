//! Budgets and rate limits of projects and API keys at run time (issue 21):
//! the limits of a request's key and project ([`Quotas::limits_for`],
//! cached), admission before the upstream call ([`Quotas::admit`]: one
//! request, a reserve of tokens and cost, a slot among `max_concurrent`)
//! and settlement after it ([`settle`]: the reserve becomes the actual
//! usage). No axum here; the middleware that calls it is
//! [`crate::http::quota`].
//!
//! **Windows** are fixed, in UTC ([`modelyard_core::limits`]): a rate limit
//! counts the calendar minute, a budget its day / ISO week / month / all
//! time. A refusal's `Retry-After` is the time until the window ends.
//!
//! **Across replicas** the counters live in the store (`limit_counters`):
//! a replica leases a block of units ([`lease_block`]: a fortieth of the
//! limit, or what one request needs) from the shared row in one statement
//! that never grants past the limit, and spends it locally, so the hot path
//! touches the database about once per block. The store never lets more
//! than the limit out of a window, so N replicas together admit at most
//! `requests_per_minute` in a minute; what a replica holds unspent (at
//! most a block per counter) is given back after [`LEASE_IDLE`] without
//! use, and is lost (under-admission, never over) if the replica dies.
//! What calls spend past their reserve is charged to the shared row by the
//! background flush ([`Quotas::flush`], every [`FLUSH_EVERY`]), never per
//! token. `max_concurrent` is counted per replica (in memory).
//!
//! **Overshoot:** a request is admitted only with its reserve (its
//! `max_tokens` / `max_completion_tokens` / `max_output_tokens`, else
//! `limits.budget_reserve_tokens`, plus a prompt estimate of a token per 4
//! body bytes) in hand, so concurrent requests never pass a token limit by
//! more than what they spend past their reserves. A cost budget reserves 1
//! nano-USD until prices are known per request (the costs work): it is
//! refused once spent, and concurrent requests can pass it by at most what
//! those in flight spend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use modelyard_core::limits::{lease_block, nusd_to_usd, Limits, Period, Window};
use modelyard_core::usage::add_tokens;
use modelyard_core::Usage;
use modelyard_store::{CounterKey, LimitMetric, LimitSubject, ProjectId, Store};

/// How long a limits lookup is reused.
pub const LIMITS_TTL: Duration = Duration::from_secs(2);
/// How long a store call on the admission path may take before the request
/// is refused as unavailable.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often leases are flushed: overspends charged, idle leases given back.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A lease unused this long goes back to the shared counter.
pub const LEASE_IDLE: Duration = Duration::from_secs(3);
/// Counter rows are pruned this long after their window ended.
const PRUNE_AFTER_MS: i64 = 3_600_000;
/// How often old counter rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Most cached limits lookups (the cache is cleared past it).
const MAX_CACHED: usize = 10_000;
/// Bytes of request body counted as one prompt token in a reserve.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A limit is reached: 429.
    #[error("{scope} limit {name}={value}{} reached", per(*period))]
    Limit {
        /// `key` or `project`.
        scope: &'static str,
        /// The limit's name as the API spells it: `requestsPerMinute`,
        /// `tokensPerMinute`, `maxTokens`, `maxCostUsd` or `maxConcurrent`.
        name: &'static str,
        /// Its value as set (USD for `maxCostUsd`).
        value: String,
        /// The budget's period, for `maxTokens` / `maxCostUsd`.
        period: Option<Period>,
        /// Seconds until the window frees; `None` for a `total` budget,
        /// which never does.
        retry_after_secs: Option<u64>,
    },
    /// The shared counters could not be read: 503.
    #[error("cannot check the {scope} limits: the database is unavailable; retry shortly")]
    Unavailable {
        /// `key` or `project`.
        scope: &'static str,
    },
}

impl Refusal {
    /// Whether the limit is a budget (`max_tokens`, `max_cost_usd`) rather
    /// than a rate.
    pub fn is_budget(&self) -> bool {
        matches!(self, Refusal::Limit { name, .. } if *name == "maxTokens" || *name == "maxCostUsd")
    }

    /// The stable code: `budget_exceeded`, `rate_limited` or
    /// `limits_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unavailable { .. } => "limits_unavailable",
            _ if self.is_budget() => "budget_exceeded",
            Refusal::Limit { .. } => "rate_limited",
        }
    }

    /// The `Retry-After` seconds, if any frees it.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Limit {
                retry_after_secs, ..
            } => *retry_after_secs,
            Refusal::Unavailable { .. } => Some(1),
        }
    }
}

/// What a request needs before it is sent: tokens (its output cap, else
/// the default reserve, plus the prompt estimate) and nano-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need {
    /// Tokens reserved.
    pub tokens: i64,
    /// Nano-USD reserved (at least 1 is taken from a cost budget).
    pub cost_nusd: i64,
}

/// Output caps a request body may carry (OpenAI chat, legacy completions,
/// Anthropic Messages, Responses).
#[derive(serde::Deserialize, Default)]
struct Caps {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
}

/// The tokens to reserve for a request `body`: its output cap
/// (`max_completion_tokens`, `max_tokens` or `max_output_tokens`, times
/// `n`) or `default_reserve` when it has none, if it `generates`
/// (embeddings and rerank do not), plus a token per [`BYTES_PER_TOKEN`]
/// bytes of body for the prompt. A body that is not JSON gets the default.
pub fn reserve_tokens(body: &[u8], default_reserve: u64, generates: bool) -> i64 {
    let prompt = body.len() as u64 / BYTES_PER_TOKEN;
    let output = if generates {
        let caps: Caps = serde_json::from_slice(body).unwrap_or_default();
        let cap = caps
            .max_completion_tokens
            .or(caps.max_tokens)
            .or(caps.max_output_tokens)
            .unwrap_or(default_reserve);
        cap.saturating_mul(caps.n.unwrap_or(1).clamp(1, 128))
    } else {
        0
    };
    i64::try_from(add_tokens(prompt, output)).unwrap_or(i64::MAX)
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

    /// The budget left in USD, as the header shows it (6 decimals).
    pub fn budget_usd(&self) -> Option<String> {
        self.budget_nusd
            .map(|n| format!("{:.6}", nusd_to_usd(n.max(0))))
    }
}

/// One counter's state in this process: what it leased and has not spent.
#[derive(Debug)]
struct Local {
    /// Leased and unspent; below 0 when calls spent past their reserve
    /// and the flush has not charged it yet.
    available: i64,
    /// Units out of the window, all replicas, as the store last said.
    taken: i64,
    /// The limit the counter was last used with.
    limit: i64,
    window: Window,
    last_used: Instant,
}

impl Local {
    /// Left for anyone in the window, as far as this replica knows.
    fn remaining(&self) -> i64 {
        self.limit
            .saturating_sub(self.taken)
            .max(0)
            .saturating_add(self.available)
            .max(0)
    }
}

type Cell = Arc<Mutex<Local>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is one step: the state stays sound
    // whatever panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A share of a counter an admission holds.
#[derive(Debug)]
struct Held {
    cell: Cell,
    metric: LimitMetric,
    amount: i64,
}

/// The limits of a subject as last read, and when.
#[derive(Debug, Clone)]
struct Cached {
    limits: Option<Limits>,
    at: Instant,
}

/// The limits and counters of this process. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Quotas {
    store: Store,
    cache: Mutex<HashMap<String, Cached>>,
    counters: Mutex<HashMap<CounterKey, Cell>>,
    in_flight: Mutex<HashMap<String, i64>>,
    /// `limits.budget_reserve_tokens`.
    pub default_reserve: u64,
}

/// The limits that apply to a request: its key's and its project's.
pub type Applicable = Vec<(LimitSubject, Limits)>;

impl Quotas {
    /// Limits over `store`; requests without an output cap reserve
    /// `default_reserve` tokens.
    pub fn new(store: Store, default_reserve: u64) -> Arc<Self> {
        Arc::new(Self {
            store,
            cache: Mutex::default(),
            counters: Mutex::default(),
            in_flight: Mutex::default(),
            default_reserve,
        })
    }

    /// The limits of key `key_id` (if any) and of `project`, those that
    /// have any; read from the store at most every [`LIMITS_TTL`]. While the
    /// store cannot answer, the last known limits apply (none if never
    /// read: requests are not refused for it).
    pub async fn limits_for(&self, project: &ProjectId, key_id: Option<&str>) -> Applicable {
        let mut subjects = Vec::with_capacity(2);
        if let Some(key) = key_id {
            subjects.push(LimitSubject::Key(key.to_owned()));
        }
        subjects.push(LimitSubject::Project(project.as_str().to_owned()));
        let now = Instant::now();
        let cached: Option<Applicable> = {
            let cache = lock(&self.cache);
            subjects
                .iter()
                .map(|s| {
                    cache
                        .get(&s.key())
                        .filter(|c| now.duration_since(c.at) < LIMITS_TTL)
                        .map(|c| c.limits.map(|l| (s.clone(), l)))
                })
                .collect::<Option<Vec<_>>>()
                .map(|found| found.into_iter().flatten().collect())
        };
        if let Some(found) = cached {
            return found;
        }
        match tokio::time::timeout(STORE_TIMEOUT, self.store.limits_of(project, &subjects)).await {
            Ok(Ok(rows)) => {
                let mut cache = lock(&self.cache);
                if cache.len() + subjects.len() > MAX_CACHED {
                    cache.clear();
                }
                for subject in &subjects {
                    let limits = rows.iter().find(|(s, _)| s == subject).map(|(_, l)| *l);
                    cache.insert(subject.key(), Cached { limits, at: now });
                }
                rows
            }
            Ok(Err(err)) => self.stale(&subjects, &err.to_string()),
            Err(_) => self.stale(&subjects, "timed out"),
        }
    }

    fn stale(&self, subjects: &[LimitSubject], error: &str) -> Applicable {
        tracing::warn!(error, "cannot read limits; the last known ones apply");
        let cache = lock(&self.cache);
        subjects
            .iter()
            .filter_map(|s| {
                cache
                    .get(&s.key())
                    .and_then(|c| c.limits)
                    .map(|l| (s.clone(), l))
            })
            .collect()
    }

    /// Forgets the cached limits of `subject` (they were just changed
    /// through this server).
    pub fn forget(&self, subject: &LimitSubject) {
        lock(&self.cache).remove(&subject.key());
    }

    /// Admits a request that needs `need` under `applicable` limits (a
    /// key's first, then its project's) at `now_ms`: counts the request,
    /// reserves the tokens and cost, takes a `max_concurrent` slot — all or
    /// nothing.
    ///
    /// # Errors
    /// [`Refusal::Limit`] naming the first limit reached;
    /// [`Refusal::Unavailable`] when a lease was needed and the store did
    /// not answer within [`STORE_TIMEOUT`].
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
            let mut in_flight = lock(&self.in_flight);
            let count = in_flight.entry(subject_key.clone()).or_insert(0);
            if *count >= max {
                return Err(Refusal::Limit {
                    scope,
                    name: "maxConcurrent",
                    value: max.to_string(),
                    period: None,
                    retry_after_secs: Some(1),
                });
            }
            *count += 1;
            drop(in_flight);
            admission.concurrent.push(subject_key.clone());
        }
        let minute = Window::minute(now_ms);
        let mut checks: Vec<(LimitMetric, i64, i64, Window, &'static str, String)> = Vec::new();
        if let Some(rpm) = limits.requests_per_minute {
            checks.push((
                LimitMetric::Requests,
                rpm,
                1,
                minute,
                "requestsPerMinute",
                rpm.to_string(),
            ));
        }
        if let Some(tpm) = limits.tokens_per_minute {
            checks.push((
                LimitMetric::Tokens,
                tpm,
                need.tokens,
                minute,
                "tokensPerMinute",
                tpm.to_string(),
            ));
        }
        if let Some(period) = limits.period {
            let window = period.window(now_ms);
            if let Some(max) = limits.max_tokens {
                checks.push((
                    LimitMetric::BudgetTokens,
                    max,
                    need.tokens,
                    window,
                    "maxTokens",
                    max.to_string(),
                ));
            }
            if let Some(max) = limits.max_cost_nusd {
                checks.push((
                    LimitMetric::BudgetCost,
                    max,
                    need.cost_nusd.max(1),
                    window,
                    "maxCostUsd",
                    format_usd(max),
                ));
            }
        }
        for (metric, limit, amount, window, name, value) in checks {
            let key = CounterKey {
                subject: subject_key.clone(),
                metric,
                window_start_ms: window.start_ms,
                window_end_ms: window.end_ms,
            };
            let budget = matches!(metric, LimitMetric::BudgetTokens | LimitMetric::BudgetCost);
            let cell =
                self.take(&key, window, limit, amount)
                    .await
                    .map_err(|taken| match taken {
                        Taken::Short => Refusal::Limit {
                            scope,
                            name,
                            value,
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
            }
            admission.held.push(Held {
                cell,
                metric,
                amount,
            });
        }
        Ok(())
    }

    /// The local state of counter `key`, made on first use.
    fn cell(&self, key: &CounterKey, window: Window, limit: i64) -> Cell {
        let mut counters = lock(&self.counters);
        Arc::clone(counters.entry(key.clone()).or_insert_with(|| {
            Arc::new(Mutex::new(Local {
                available: 0,
                taken: 0,
                limit,
                window,
                last_used: Instant::now(),
            }))
        }))
    }

    /// Takes `amount` units of counter `key` (limit `limit`): from this
    /// replica's lease when it holds enough, else after leasing the
    /// shortfall or a block ([`lease_block`]), whichever is larger, from
    /// the store. No lock is held across the store call.
    async fn take(
        &self,
        key: &CounterKey,
        window: Window,
        limit: i64,
        amount: i64,
    ) -> Result<Cell, Taken> {
        let cell = self.cell(key, window, limit);
        let short = {
            let mut local = lock(&cell);
            local.limit = limit;
            local.last_used = Instant::now();
            if local.available >= amount {
                local.available -= amount;
                return Ok(cell.clone());
            }
            amount - local.available
        };
        let want = short.max(lease_block(limit));
        let lease = match tokio::time::timeout(
            STORE_TIMEOUT,
            self.store.take_limit_block(key, want, limit),
        )
        .await
        {
            Ok(Ok(lease)) => lease,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot lease from a limit counter");
                return Err(Taken::Unavailable);
            }
            Err(_) => {
                tracing::warn!("leasing from a limit counter timed out");
                return Err(Taken::Unavailable);
            }
        };
        let mut local = lock(&cell);
        local.available += lease.granted;
        local.taken = local.taken.max(lease.taken);
        if local.available >= amount {
            local.available -= amount;
            drop(local);
            Ok(cell)
        } else {
            Err(Taken::Short)
        }
    }

    fn release_concurrent(&self, subjects: &[String]) {
        if subjects.is_empty() {
            return;
        }
        let mut in_flight = lock(&self.in_flight);
        for subject in subjects {
            if let Some(n) = in_flight.get_mut(subject) {
                *n -= 1;
                if *n <= 0 {
                    in_flight.remove(subject);
                }
            }
        }
    }

    /// Requests in flight for `subject` on this replica.
    pub fn in_flight(&self, subject: &LimitSubject) -> i64 {
        lock(&self.in_flight)
            .get(&subject.key())
            .copied()
            .unwrap_or(0)
    }

    /// One flush at `now_ms`: charges what calls spent past their reserves
    /// to the shared counters, gives back leases unused for [`LEASE_IDLE`],
    /// forgets counters whose window ended. Store errors leave the amounts
    /// local for the next flush.
    pub async fn flush(&self, now_ms: i64) {
        let cells: Vec<(CounterKey, Cell)> = lock(&self.counters)
            .iter()
            .map(|(k, c)| (k.clone(), Arc::clone(c)))
            .collect();
        let mut ended = Vec::new();
        for (key, cell) in cells {
            let amount = {
                let mut local = lock(&cell);
                if local.window.has_ended(now_ms) {
                    ended.push(key);
                    continue;
                }
                let idle = local.last_used.elapsed() >= LEASE_IDLE;
                if local.available < 0 || (local.available > 0 && idle) {
                    std::mem::take(&mut local.available)
                } else {
                    continue;
                }
            };
            // Overspent (available < 0) is charged; unused is given back.
            match self.store.add_to_limit_counter(&key, -amount).await {
                Ok(taken) => lock(&cell).taken = taken,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot flush a limit counter; retrying");
                    lock(&cell).available += amount;
                }
            }
        }
        if !ended.is_empty() {
            let mut counters = lock(&self.counters);
            for key in ended {
                counters.remove(&key);
            }
        }
    }

    /// Gives every lease back and charges every overspend (at shutdown).
    pub async fn return_all(&self) {
        let cells: Vec<(CounterKey, Cell)> = lock(&self.counters)
            .iter()
            .map(|(k, c)| (k.clone(), Arc::clone(c)))
            .collect();
        for (key, cell) in cells {
            let amount = std::mem::take(&mut lock(&cell).available);
            if amount != 0 {
                if let Err(err) = self.store.add_to_limit_counter(&key, -amount).await {
                    tracing::warn!(error = %err, "cannot give a limit lease back");
                }
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`] and prunes counter rows an hour after
    /// their window ended, until `stop`.
    pub fn spawn_flush(
        self: &Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let quotas = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = stop.cancelled() => return,
                }
                let now = crate::clock::now_ms();
                quotas.flush(now).await;
                if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                    last_prune = Some(Instant::now());
                    if let Err(err) = quotas
                        .store
                        .prune_limit_counters(now - PRUNE_AFTER_MS)
                        .await
                    {
                        tracing::warn!(error = %err, "cannot prune limit counters");
                    }
                }
            }
        })
    }
}

/// ` per day` / ` in total` after a budget's value; nothing for a rate.
fn per(period: Option<Period>) -> String {
    match period {
        None => String::new(),
        Some(Period::Total) => " in total".to_owned(),
        Some(period) => format!(" per {period}"),
    }
}

fn format_usd(nusd: i64) -> String {
    let usd = nusd_to_usd(nusd);
    let text = format!("{usd:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Why a take failed.
enum Taken {
    /// The limit is reached.
    Short,
    /// The store did not answer.
    Unavailable,
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
                LimitMetric::Requests => continue,
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

#[cfg(test)]
mod tests;
