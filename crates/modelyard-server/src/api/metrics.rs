//! `GET /metrics`: Prometheus text exposition format 0.0.4
//! ([`crate::telemetry`]); admin keys only on the main listener, no auth on
//! `[telemetry] metrics_listen`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::Scoped;
use crate::registry::ProviderStatus;
use crate::telemetry::ScrapeState;

/// `GET /metrics` on the main listener (admin role).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(Scoped(app): Scoped) -> Response {
    exposition(&app)
}

/// `GET /metrics` on the metrics listener (no auth).
pub async fn unauthenticated(State(app): State<AppState>) -> Response {
    exposition(&app)
}

fn exposition(app: &AppState) -> Response {
    let providers = app
        .registry
        .providers()
        .iter()
        .map(|provider| {
            let state = provider.state();
            (
                provider.name().to_owned(),
                state.status == ProviderStatus::Online,
                state.catalog.len() as u64,
            )
        })
        .collect();
    let state = ScrapeState {
        providers,
        open_streams: u64::from(app.streams.open()),
        running_turns: app.live.len() as u64,
        call_log: app.recorder.stats(),
        bus_mode: app.bus.mode(),
    };
    let body = app.metrics.encode(&state);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::telemetry::CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}
