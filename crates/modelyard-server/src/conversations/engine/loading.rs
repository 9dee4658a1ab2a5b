//! `model.loading`: while a step waits for a model that its host has to
//! load first (a llama-swap or Ollama model the catalog says is not
//! loaded), the turn publishes the transient event `model.loading`
//! `{turnId, model, elapsedMs}` at once and then every [`LOADING_EVERY`],
//! until the first chunk of the answer (or the end of the call).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::publish;
use crate::app::AppState;
use crate::conversations::live::LiveTurn;
use crate::routing::Destination;
use crate::service::routed;

/// Interval between two `model.loading` events.
pub const LOADING_EVERY: Duration = Duration::from_secs(1);

/// The task publishing `model.loading`; stopped by [`Self::stop`] or when
/// dropped.
pub(super) struct LoadingTicker(Option<tokio::task::JoinHandle<()>>);

impl LoadingTicker {
    /// Starts publishing when the deployment `destination` most likely goes
    /// to is a model its host has not loaded; otherwise does nothing.
    pub(super) fn start(app: &AppState, live: &Arc<LiveTurn>, destination: &Destination) -> Self {
        let target = routed::likely_target(app, destination, Some(&live.conversation_id))
            .filter(|t| t.loaded() == Some(false) && t.host_loads());
        let Some(target) = target else {
            return Self(None);
        };
        let (app, live) = (app.clone(), Arc::clone(live));
        let model = target.resolution.model_id.to_string();
        Self(Some(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut every = tokio::time::interval(LOADING_EVERY);
            loop {
                every.tick().await;
                let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                publish(
                    &app,
                    &live,
                    "model.loading",
                    json!({"turnId": live.turn_id, "model": model, "elapsedMs": elapsed_ms}),
                );
            }
        })))
    }

    /// Stops publishing.
    pub(super) fn stop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Drop for LoadingTicker {
    fn drop(&mut self) {
        self.stop();
    }
}
