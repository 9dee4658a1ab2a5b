//! The counters of this replica: leases taken from the shared rows in the
//! store, spent locally, flushed back (overspends charged, idle leases
//! returned) and pruned.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use modelyard_core::limits::{lease_block, Window};
use modelyard_store::CounterKey;

use super::{lock, Quotas, FLUSH_EVERY, LEASE_IDLE, PRUNE_AFTER_MS, PRUNE_EVERY, STORE_TIMEOUT};

/// One counter's state in this process: what it leased and has not spent.
#[derive(Debug)]
pub(super) struct Local {
    /// Leased and unspent; below 0 when calls spent past their reserve
    /// and the flush has not charged it yet.
    pub(super) available: i64,
    /// Units out of the window, all replicas, as the store last said.
    pub(super) taken: i64,
    /// The limit the counter was last used with.
    pub(super) limit: i64,
    pub(super) window: Window,
    pub(super) last_used: Instant,
}

impl Local {
    /// Left for anyone in the window, as far as this replica knows.
    pub(super) fn remaining(&self) -> i64 {
        self.limit
            .saturating_sub(self.taken)
            .max(0)
            .saturating_add(self.available)
            .max(0)
    }
}

pub(super) type Cell = Arc<Mutex<Local>>;

/// Why a take failed.
pub(super) enum Taken {
    /// The limit is reached.
    Short,
    /// The store did not answer.
    Unavailable,
}

impl Quotas {
    /// The local state of counter `key`, made on first use.
    pub(super) fn cell(&self, key: &CounterKey, window: Window, limit: i64) -> Cell {
        let mut counters = lock(&self.counters);
        // Found without cloning the key; made (key cloned) once per window.
        if let Some(cell) = counters.get(key) {
            return Arc::clone(cell);
        }
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
    pub(super) async fn take(
        &self,
        key: &CounterKey,
        window: Window,
        limit: i64,
        amount: i64,
    ) -> Result<Cell, Taken> {
        let cell = self.cell(key, window, limit);
        self.take_from(cell, key, limit, amount).await
    }

    /// [`Self::take`] from `cell`, the local state of `key`.
    pub(super) async fn take_from(
        &self,
        cell: Cell,
        key: &CounterKey,
        limit: i64,
        amount: i64,
    ) -> Result<Cell, Taken> {
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
