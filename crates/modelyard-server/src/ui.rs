//! The web UI: a small single-page app in plain JavaScript, embedded in the
//! binary (`ui/index.html`, `ui/app.js`, `ui/arena.js`, `ui/app.css`; no
//! build step, no
//! external URLs). Its DOM contract is `docs/ui.md`.
//!
//! - `GET /` redirects to `/ui`.
//! - `GET /ui` is the HTML shell (`Cache-Control: no-cache`).
//! - `GET /ui/assets/app.js`, `GET /ui/assets/arena.js`,
//!   `GET /ui/assets/app.css`: the scripts (the arena page and the
//!   conversation's "Compare models" live in `arena.js`) and the style sheet
//!   (`no-cache` too, so a new binary's UI is picked up at once).
//!
//! Every UI answer carries [`CONTENT_SECURITY_POLICY`] (self only, no inline
//! code, `frame-ancestors 'none'`), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`. The shell
//! has no inline script or style, and the scripts build the DOM with
//! `createElement` (no `style` attributes, no `eval`), so the policy needs
//! no exceptions.
//!
//! These routes are **public**: they are merged into the router after the
//! auth route layer (and are not in the route table, `http::routes`, so
//! they need no access rule). They only serve static text; everything the UI
//! shows comes from the `/v1/...` API, which asks for the API key (stored in
//! the browser's `localStorage["modelyard.apiKey"]`, sent as
//! `Authorization: Bearer`) whenever keys exist.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY as CONTENT_SECURITY_POLICY_HEADER, CONTENT_TYPE,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::app::AppState;

/// The HTML shell.
pub const INDEX_HTML: &str = include_str!("../ui/index.html");
/// The application script.
pub const APP_JS: &str = include_str!("../ui/app.js");
/// The arena script: the `#/arena` page and a conversation's "Compare
/// models" (loaded before `app.js`, whose router and chat view call it).
pub const ARENA_JS: &str = include_str!("../ui/arena.js");
/// The style sheet.
pub const APP_CSS: &str = include_str!("../ui/app.css");

/// The UI's routes (public; see the module docs).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/assets/arena.js",
            get(|| async { asset("text/javascript; charset=utf-8", ARENA_JS) }),
        )
        .route(
            "/ui/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

/// The UI's `Content-Security-Policy`: its own script and style sheet only
/// (no inline script or style, no `eval`), API calls to this origin only,
/// the empty `data:` favicon, and never framed (clickjacking).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY_HEADER, CONTENT_SECURITY_POLICY),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
            (X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}
