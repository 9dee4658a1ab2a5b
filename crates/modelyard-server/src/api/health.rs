//! `GET /health`: liveness, the store's state and the call log's counters;
//! `GET /health?ready=1`: readiness (503 while the store is unreachable).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::recorder::CallLogStats;

/// How long the store's ping may take before it counts as unreachable.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Query of `GET /health`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// `ready=1` (or `true`, or empty): answer 503 while the store is
    /// unreachable.
    ready: Option<String>,
}

/// Whether the store answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreHealth {
    /// A trivial query answered within [`PING_TIMEOUT`].
    Ok,
    /// It did not.
    Unreachable,
}

/// The body of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` when the store answers, else `degraded` (the process is alive).
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The store's state.
    pub store: StoreHealth,
    /// The call log's counters since start (`storage.call_log = false`: zeros).
    pub call_log: CallLogStats,
    /// How live events travel: `in-process`, `nats`, or `nats-disconnected`
    /// (replicas learn of each other's events from the store meanwhile).
    #[schema(value_type = String)]
    pub events: &'static str,
}

/// `GET /health[?ready=1]`: 200 with [`Health`]; with `ready`, 503 while the
/// store is unreachable.
#[utoipa::path(get, path = "/health", tag = "health", params(HealthQuery),
    responses((status = 200, description = "Alive (with the store's state)", body = Health),
              (status = 503, description = "`ready` given and the store is unreachable", body = Health)))]
pub async fn health(State(app): State<AppState>, Query(query): Query<HealthQuery>) -> Response {
    let store = if app.store.ping(PING_TIMEOUT).await {
        StoreHealth::Ok
    } else {
        StoreHealth::Unreachable
    };
    let ready = matches!(query.ready.as_deref(), Some("" | "1" | "true" | "yes"));
    let body = Health {
        status: if store == StoreHealth::Ok {
            "ok"
        } else {
            "degraded"
        },
        store,
        call_log: app.recorder.stats(),
        events: app.bus.mode(),
    };
    let status = if ready && store == StoreHealth::Unreachable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}
