//! Closing orphaned turns: start-up recovery and the periodic sweeper.

use std::collections::HashSet;
use std::time::Duration;

use modelyard_core::conversation::EventPayload;
use modelyard_store::Store;

use super::publish_events;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::conversations::bus::EventBus;
use crate::conversations::live::LiveTurns;

/// Closes turns that a stopped process left `running` with
/// `turn.interrupted`, keeping their checkpointed text (at start-up, before
/// any turn runs here). With `[cluster]`, only turns no live replica holds
/// a lease on (docs/design.md#replicas): this replica's own earlier leases
/// are ended first, since a restarted process runs none of them.
pub async fn recover_interrupted(
    store: &Store,
    bus: &dyn EventBus,
    cluster: Option<&crate::config::ClusterConfig>,
) {
    let held = match cluster {
        None => HashSet::new(),
        Some(cluster) => {
            if let Err(err) = store.expire_turn_leases_of(&cluster.replica_id).await {
                tracing::warn!(error = %err, "cannot end this replica's earlier turn leases");
            }
            held_elsewhere(store, cluster).await
        }
    };
    close_orphans(
        store,
        bus,
        &|id| held.contains(id),
        "turn interrupted by a restart",
    )
    .await;
}

/// Running turns that a replica holds a lease on now, or that started less
/// than one lease ago without one (their lease is being taken).
async fn held_elsewhere(store: &Store, cluster: &crate::config::ClusterConfig) -> HashSet<String> {
    let mut held = HashSet::new();
    let Ok(running) = store.running_turns().await else {
        return held;
    };
    let now = now_ms();
    let lease_ms = cluster.turn_lease_ms as i64;
    for (_, turn) in running {
        let alive = match store.turn_lease(&turn.id).await {
            Ok(Some(lease)) => lease.lease_until_ms > now,
            Ok(None) => turn.started_at_ms + lease_ms > now,
            // Unknown: leave it for a later pass.
            Err(_) => true,
        };
        if alive {
            held.insert(turn.id);
        }
    }
    held
}

/// Closes, as `turn.interrupted` with their checkpointed text, the turns
/// `running` in the store for which `is_live(turn_id)` is false; how many
/// it closed. A turn that ended meanwhile is left alone (the append is a
/// conflict).
async fn close_orphans(
    store: &Store,
    bus: &dyn EventBus,
    is_live: &(dyn Fn(&str) -> bool + Sync),
    why: &str,
) -> usize {
    let running = match store.running_turns().await {
        Ok(running) => running,
        Err(err) => {
            tracing::error!(error = %err, "cannot look for interrupted turns");
            return 0;
        }
    };
    let mut closed = 0;
    for (project, turn) in running {
        if is_live(&turn.id) {
            continue;
        }
        let partial_text = store
            .turn_partial_text(&project, &turn.id)
            .await
            .ok()
            .flatten();
        let payload = EventPayload::TurnInterrupted {
            turn_id: turn.id.clone(),
            partial_text,
        };
        let appended = store
            .append_events(&project, &turn.conversation_id, &[payload], now_ms())
            .await;
        match appended {
            Ok(events) => {
                publish_events(bus, &project, &turn.conversation_id, &events);
                closed += 1;
                tracing::warn!(conversation = %turn.conversation_id, turn = %turn.id, "{why}");
            }
            Err(modelyard_store::StoreError::Conflict { .. }) => {
                tracing::debug!(turn = %turn.id, "turn ended before it was swept");
            }
            Err(err) => {
                tracing::error!(turn = %turn.id, error = %err, "cannot close interrupted turn")
            }
        }
    }
    closed
}

/// How long a turn must be seen `running` in the store and not live here,
/// twice, before the sweeper closes it: covers the moment between a turn's
/// start being committed and its registration in `LiveTurns`.
pub const SWEEP_CONFIRM: Duration = Duration::from_secs(1);

/// Starts the sweeper: every `every` (the first time one period after
/// start; start-up recovery did the first pass), turns that are `running`
/// in the store but live nowhere in this process — their run died, its
/// closing append was given up, or the request that started them vanished
/// between the commit and the start of the run — are closed as
/// `turn.interrupted` with their checkpointed text, so no conversation
/// stays blocked. A candidate is confirmed after [`SWEEP_CONFIRM`]. Stops
/// when the server starts shutting down.
///
/// With `[cluster]`, a turn another replica holds a live lease on is not
/// an orphan; one whose lease ran out (its replica died) is.
pub fn spawn_sweeper(app: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    let stop = app.live.shutdown_token();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            sweep(&app, &stop).await;
        }
    })
}

/// One pass of the sweeper; see [`spawn_sweeper`].
async fn sweep(app: &AppState, stop: &tokio_util::sync::CancellationToken) {
    let candidates: Vec<String> = match app.store.running_turns().await {
        Ok(running) => running
            .into_iter()
            .map(|(_, turn)| turn.id)
            .filter(|id| app.live.get(id).is_none())
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "sweeper: cannot list running turns");
            return;
        }
    };
    if candidates.is_empty() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(SWEEP_CONFIRM) => {}
        () = stop.cancelled() => return,
    }
    let live: &LiveTurns = &app.live;
    let held = match &app.config.cluster {
        Some(cluster) => held_elsewhere(&app.store, cluster).await,
        None => HashSet::new(),
    };
    let is_live = |id: &str| {
        !candidates.iter().any(|c| c == id) || live.get(id).is_some() || held.contains(id)
    };
    close_orphans(
        &app.store,
        app.bus.as_ref(),
        &is_live,
        "turn running nowhere closed as interrupted",
    )
    .await;
}

/// With `[cluster]`: renews this replica's turn leases every third of
/// `turn_lease_ms` (at most every second) and cancels the turns another
/// replica asked to cancel. Stops when the server starts shutting down.
pub fn spawn_lease_renewal(app: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let cluster = app.config.cluster.clone()?;
    let stop = app.live.shutdown_token();
    let every = Duration::from_millis((cluster.turn_lease_ms / 3).min(1_000));
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            let until = now_ms() + cluster.turn_lease_ms as i64;
            match app
                .store
                .renew_turn_leases(&cluster.replica_id, until)
                .await
            {
                Ok(cancel) => {
                    for turn_id in cancel {
                        if let Some(turn) = app.live.get(&turn_id) {
                            tracing::info!(turn = %turn_id, "cancel requested by another replica");
                            turn.cancel.cancel();
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot renew turn leases"),
            }
        }
    }))
}
