//! Who is calling: API keys, their project and role, and the per-route
//! access rules.
//!
//! - Until the first API key is created the server runs open: every request
//!   acts for the `default` project with the `admin` role, whatever key it
//!   sends (SDKs always send one) — allowed only on a loopback address
//!   (`app::start` refuses others) and for loopback `Host`s and same-origin
//!   browsers ([`crate::guard`]).
//! - The first key (over the API or with `modelyard keys create`) sets a flag
//!   in the store
//!   ([`Store::keys_required`](modelyard_store::Store::keys_required)); from
//!   then on every route except `/health` needs `Authorization: Bearer
//!   <key>` (or `x-api-key: <key>`, as Anthropic SDKs send it), for good:
//!   revoking keys never reopens the server, and a project's last active admin key cannot
//!   be revoked (409). A missing, unknown or revoked key is a 401, a role
//!   below the route's ([`required_role`]) a 403. The key's project scopes
//!   every store call, so another project's resources are 404. A running
//!   server re-reads the flag every [`KEY_COUNT_INTERVAL`] (false → true
//!   only), so a key made by the CLI next to it takes effect.
//!
//! Keys look like `mk_<40 hex>`; the store keeps their SHA-256 (hex) and the
//! first 11 characters as a prefix. Lookups are cached for
//! [`KEY_CACHE_TTL`] in two bounded maps (existing keys, unknown hashes), so
//! a flood of random keys cannot evict valid ones; a lookup the store does
//! not answer within [`KEY_LOOKUP_TIMEOUT`] is a 503. A revoke through this
//! server takes effect at once; one made elsewhere (the CLI, another
//! replica) within [`KEY_COUNT_INTERVAL`]. Either way the key's open event
//! streams (gateway streams, conversation feeds) end then.
//!
//! The parts: `keys` is the key registry (generation, hashing, cached
//! lookups, revocations), `layer` the middleware that authenticates a
//! request and answers its denials; the [`Scoped`] extractor is here.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use modelyard_store::{ProjectId, Role};

use crate::app::AppState;
use crate::error::Problem;

mod keys;
mod layer;

pub use keys::{generate_key, hash_key, Auth, LookupError, NewKey};
pub use layer::{middleware, required_role};

/// The identity a request counts against for per-key limits: the API key's
/// id, or `addr:<client ip>` when the server runs without keys. Inserted into
/// the request's extensions by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerId(pub String);

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The project every store call of the request is scoped to.
    pub project: ProjectId,
    /// The key's role (`admin` when the server runs without keys).
    pub role: Role,
    /// The key, if one was used.
    pub key_id: Option<String>,
}

/// How long a key lookup is reused.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// How often the server re-reads the store: whether keys are required (a key
/// created by the CLI next to a running server switches it to authenticated
/// mode within this; never back) and which keys were revoked elsewhere (their
/// cached lookups and open streams end within this).
pub const KEY_COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// [`KEY_COUNT_INTERVAL`] with `[cluster]`: a key created or revoked on one
/// replica takes effect on the others within this.
pub const CLUSTER_KEY_INTERVAL: Duration = Duration::from_secs(1);
/// How long a key lookup may wait for the store before the request gets a
/// 503 (the pool's own acquire timeout is far longer).
pub const KEY_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);
/// Cached lookups of existing keys, at most.
pub const MAX_CACHED_KEYS: usize = 10_000;
/// Cached lookups of unknown keys, at most (a separate map: a flood of
/// random keys never evicts a valid key).
pub const MAX_CACHED_MISSES: usize = 10_000;
/// How far back each re-read looks for revoked keys (generous, for clock
/// skew between this server and the process that revoked).
const REVOKED_LOOKBACK_MS: i64 = 10 * 60 * 1000;

/// The app state scoped to the request's caller: `app.project` is the
/// caller's project. Handlers take `Scoped(app): Scoped` instead of
/// `State(app)`.
#[derive(Debug, Clone)]
pub struct Scoped(pub AppState);

impl FromRequestParts<AppState> for Scoped {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => {
                let mut app = state.scoped(caller.clone());
                // The budgets middleware's admission, for the request's model call.
                app.admission = parts
                    .extensions
                    .get::<crate::quota::AdmissionSlot>()
                    .cloned();
                Ok(Scoped(app))
            }
            None => {
                Err(Problem::internal("request without an authenticated caller").into_response())
            }
        }
    }
}
