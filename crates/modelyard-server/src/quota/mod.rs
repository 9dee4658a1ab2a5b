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
//! a replica leases a block of units
//! ([`lease_block`](modelyard_core::limits::lease_block): a fortieth of the
//! limit, or what one request needs) from the shared row in one statement
//! that never grants past the limit, and spends it locally, so the hot path
//! touches the database about once per block. The store never lets more
//! than the limit out of a window, so N replicas together admit at most
//! `requests_per_minute` in a minute; what a replica holds unspent (at
//! most a block per counter) is given back after [`LEASE_IDLE`] without
//! use, and is lost (under-admission, never over) if the replica dies.
//! What calls spend past their reserve is charged to the shared row by the
//! background flush ([`Quotas::flush`], every [`FLUSH_EVERY`]), never per
//! token. `max_concurrent` is a counter of the same kind per minute
//! window (`concurrent`): a slot is a unit leased from the shared row and
//! returned to this replica's lease when the request ends (given back to
//! the row once idle); the first request of a minute carries the
//! replica's requests still in flight into the new window. So replicas
//! together keep at most `max_concurrent` in flight; units a replica holds
//! idle for up to [`LEASE_IDLE`] are under-admission, and what a dead
//! replica held is let go when its minute ends.
//!
//! **Overshoot:** a request is admitted only with its reserve (its
//! `max_tokens` / `max_completion_tokens` / `max_output_tokens`, else
//! `limits.budget_reserve_tokens`, plus a prompt estimate of a token per 4
//! body bytes) in hand, so concurrent requests never pass a token limit by
//! more than what they spend past their reserves. A cost budget reserves
//! those tokens at the dearest price the request's `model` may reach
//! ([`crate::pricing::worst_cost_nusd`]; a route's targets count),
//! so it holds the same way. A conversation's call (turn, title,
//! compaction, warm) also reserves its history (the conversation's last
//! prompt size) and prices its tokens at the model it resolves to exactly
//! as the call will; an arena prices each model's share. A request whose
//! model does not resolve or is unpriced reserves 1 nano-USD: such
//! requests are refused once the budget is spent and can pass it by at
//! most what those in flight spend.
//!
//! The parts: `lookup` reads and caches the limits, `admission` admits a
//! request and holds its reserve, `counters` leases and flushes the shared
//! counters, `settlement` turns a request's recorded calls into what it
//! spent, `refusal` says why a request is refused.

mod admission;
mod counters;
mod lookup;
mod refusal;
mod settlement;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use modelyard_core::cost::Price;
use modelyard_core::limits::Limits;
use modelyard_store::{CounterKey, LimitSubject, Store};

pub use admission::{
    arena_reserve_tokens, arena_split, chat_split, reserve_split, reserve_tokens, Admission,
    AdmissionSlot, ArenaSplit, Need, Remaining, ReserveSplit,
};
pub use refusal::Refusal;
pub use settlement::{call_tokens, settle, CallUsage, Spent};

use counters::Cell;
use lookup::LimitsCache;

/// The maps of this module: keyed by key, project and model ids, hashed
/// with foldhash (seeded per process) rather than SipHash, which was a
/// tenth of what the limits add to a request. The model-id map is the one
/// a caller fills, and it holds at most [`MAX_CACHED`] ids.
type HashMap<K, V> = foldhash::HashMap<K, V>;

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
/// Longest model id whose reserve rates are cached (the cache holds at
/// most [`MAX_CACHED`] ids, so at most this times that many bytes).
const MAX_CACHED_MODEL_BYTES: usize = 256;
/// Bytes of request body counted as one prompt token in a reserve.
pub const BYTES_PER_TOKEN: u64 = 4;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is one step: the state stays sound
    // whatever panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The limits and counters of this process. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Quotas {
    store: Store,
    cache: Mutex<LimitsCache>,
    counters: Mutex<HashMap<CounterKey, Cell>>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// The rates a request naming a model (a route or deployment id) may be
    /// charged at, as last resolved, and when ([`Quotas::reserve_rates`]).
    rates: Mutex<HashMap<String, CachedRates>>,
    /// `limits.budget_reserve_tokens`.
    pub default_reserve: u64,
}

/// A subject's `max_concurrent` slots on this replica: how many of its
/// requests are in flight, and the lease of the newest minute they count
/// in (where a slot goes back when its request ends).
#[derive(Debug)]
struct InFlight {
    count: i64,
    lease: Cell,
}

/// Rates of the deployments a model id may reach, and when they were
/// resolved.
type CachedRates = (Instant, Arc<[Price]>);

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
            rates: Mutex::default(),
            default_reserve,
        })
    }
}

impl Quotas {
    /// The rates a request naming `model` may be charged at (every priced
    /// deployment it may reach), for a cost reserve: `resolve` computes
    /// them, and they are reused for [`LIMITS_TTL`] (a resolution and price
    /// lookups per request would cost more than the rest of admission).
    /// Ids longer than 256 bytes are resolved every time, never kept.
    pub fn reserve_rates(&self, model: &str, resolve: impl FnOnce() -> Vec<Price>) -> Arc<[Price]> {
        if model.len() > MAX_CACHED_MODEL_BYTES {
            // The id comes from the request body: never kept when long.
            return resolve().into();
        }
        let now = Instant::now();
        if let Some((at, rates)) = lock(&self.rates).get(model) {
            if now.duration_since(*at) < LIMITS_TTL {
                return Arc::clone(rates);
            }
        }
        let rates: Arc<[Price]> = resolve().into();
        let mut cache = lock(&self.rates);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(model.to_owned(), (now, Arc::clone(&rates)));
        rates
    }
}

#[cfg(test)]
mod tests;
