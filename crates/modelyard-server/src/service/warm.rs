//! The warm path: `POST /v1/conversations/{id}/warm` prepares the
//! deployment the conversation's next turn will use, so that turn starts
//! fast. The model resolves exactly as the next turn's
//! ([`super::turn_target::resolve`]: a per-call override, the persisted
//! selection, the LLM configs, the server default); for a route, the
//! deployment is the one the conversation's affinity points at, else the
//! route's first target that can serve ([`routed::likely_target`]), and a
//! route with conversation affinity then keeps the conversation there.
//!
//! What is done depends on the deployment's provider kind:
//! - `llama-cpp`: the conversation's current prefix — the next turn's
//!   request ([`request_body`]: the config's options and system prompt, the
//!   summary, the messages, the advisor tool) as a non-streamed 1-token
//!   completion with `cache_prompt: true` — is sent on the one LLM call path,
//!   so llama-server keeps the prompt in its cache (`prefix-cached`); in
//!   router mode a model that is not loaded is loaded instead (as below);
//! - `llama-swap`, `ollama`: the model is loaded
//!   ([`modelyard_upstream::ProviderClient::load_model`]; Ollama's own
//!   `keep_alive` default applies) — `already-loaded` when the catalog said
//!   it was loaded, else `loaded` — and the provider's discovery is refreshed
//!   in the background;
//! - anything else: nothing (`none`), and nothing is recorded.
//!
//! Every warm that sends something is recorded as an LLM session of
//! operation `warm` (the conversation's, no turn). A warm never appends to
//! the conversation and does not persist a model override.

use modelyard_core::ids::ConversationId;
use std::time::Instant;

use modelyard_core::conversation::ResolvedFrom;
use modelyard_core::llm_config::{is_operation_name, ConfigSnapshot};
use modelyard_upstream::openai::AnswerSummary;
use modelyard_upstream::ProviderKind;
use serde_json::{json, Value};

use super::conversations::load_stored;
use super::error::ServiceError;
use super::llm_call::{LlmCall, Purpose};
use super::routed::{self, Plan};
use super::turn_target::resolve;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::conversations::engine::{offered_advisor, request_body, step_tools};
use crate::recorder::CallRecord;
use crate::registry::Target;
use crate::routing::Destination;

/// The operation of warm sessions.
pub const WARM_OPERATION: &str = "warm";

/// What a warm did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmAction {
    /// The model was not loaded and now is (llama-swap, Ollama).
    Loaded,
    /// The model was loaded already (its load was sent anyway, which is
    /// cheap and keeps it loaded).
    AlreadyLoaded,
    /// The conversation's prefix is in llama-server's prompt cache.
    PrefixCached,
    /// Nothing to do for this kind (or an empty conversation on llama.cpp).
    None,
}

impl WarmAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WarmAction::Loaded => "loaded",
            WarmAction::AlreadyLoaded => "already-loaded",
            WarmAction::PrefixCached => "prefix-cached",
            WarmAction::None => "none",
        }
    }
}

/// A finished warm.
#[derive(Debug)]
pub struct Warmed {
    /// The resolved model id (a route's name or a composite id), as the
    /// next turn's `turn.started` will name it.
    pub model: String,
    /// How it was resolved.
    pub resolved_from: ResolvedFrom,
    /// The deployment that was prepared (composite id).
    pub deployment: String,
    /// What was done.
    pub action: WarmAction,
    /// How long the warm took, ms.
    pub duration_ms: u64,
    /// The recorded `warm` session, when something was sent.
    pub session_id: Option<String>,
}

/// Warms conversation `id` for its next turn of `operation` (default
/// `chat`) with `model` as the per-turn override (see the module docs).
///
/// # Errors
/// `conversation_not_found`; 422 (operation, no model, a model that does
/// not route); `upstream_error` (502) when the provider fails or no
/// deployment of a route can serve; the store's.
pub async fn warm(
    app: &AppState,
    id: &ConversationId,
    model: Option<&str>,
    operation: Option<&str>,
) -> Result<Warmed, ServiceError> {
    let id = id.as_str();
    let started = Instant::now();
    let operation = operation.unwrap_or("chat");
    if !is_operation_name(operation) {
        return Err(ServiceError::invalid_field(
            "operation",
            format!("operation {operation:?} must match [a-z][a-z0-9_-]{{0,31}}"),
        ));
    }
    let conversation = load_stored(app, id).await?;
    let target = resolve(app, &conversation, operation, model)
        .await
        .map_err(|err| err.into_turn_error(app))?;
    let model_id = target.destination.model_id();
    let config = target.snapshot();
    let Some(deployment) = routed::likely_target(app, &target.destination, Some(id)) else {
        return Err(ServiceError::Upstream {
            message: format!("no deployment of route '{model_id}' can serve now"),
            session_id: None,
        });
    };
    let route = target.destination.route().cloned();
    if let Some(route) = route.as_ref().filter(|r| r.sticky()) {
        // The next turn goes where the cache or the loaded model is.
        let chosen = deployment.resolution.model_id.to_string();
        app.router.affinity.set(&route.name, id, &chosen);
    }
    let kind = deployment.provider.config.kind;
    let (action, session_id) = match kind {
        // llama.cpp's router mode loads a model that is not in memory; a
        // loaded one (or a plain llama-server) gets its prefix cached.
        ProviderKind::LlamaCpp if deployment.host_loads() && deployment.loaded() != Some(true) => {
            load_model(
                app,
                id,
                &deployment,
                route.as_ref().map(|r| &*r.name),
                &config,
            )
            .await?
        }
        ProviderKind::LlamaCpp => {
            let advisor = offered_advisor(app, &conversation).await;
            let tools = step_tools(advisor.as_ref(), &[]);
            let messages = app.store.list_messages(&app.project, id).await?;
            let summary = conversation
                .compacted_through_seq
                .zip(conversation.summary.as_deref());
            let body = request_body(
                &messages,
                target.llm_config.as_ref(),
                conversation.reasoning_effort,
                summary,
                &tools,
                &Default::default(),
            );
            match prime_body(body) {
                Some(body) => prime(app, id, &deployment, &body, &config).await?,
                None => (WarmAction::None, None),
            }
        }
        kind if kind.loads_models() => {
            load_model(
                app,
                id,
                &deployment,
                route.as_ref().map(|r| &*r.name),
                &config,
            )
            .await?
        }
        _ => (WarmAction::None, None),
    };
    Ok(Warmed {
        model: model_id,
        resolved_from: target.resolved.resolved_from,
        deployment: deployment.resolution.model_id.to_string(),
        action,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        session_id,
    })
}

/// The next turn's request as a prompt-cache primer: not streamed, one
/// token, `cache_prompt`. `None` when it has no messages at all.
pub fn prime_body(mut body: Value) -> Option<Value> {
    let map = body.as_object_mut()?;
    if map
        .get("messages")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return None;
    }
    map.remove("stream_options");
    map.remove("max_completion_tokens");
    map.insert("stream".into(), json!(false));
    map.insert("max_tokens".into(), json!(1));
    map.insert("cache_prompt".into(), json!(true));
    Some(body)
}

/// Sends the primer to `deployment` and records it as a `warm` session
/// with the `config` snapshot.
async fn prime(
    app: &AppState,
    id: &str,
    deployment: &Target,
    body: &Value,
    config: &ConfigSnapshot,
) -> Result<(WarmAction, Option<String>), ServiceError> {
    let purpose = Purpose::conversation(WARM_OPERATION, id, None);
    let plan = Plan::new(app, Destination::Deployment(deployment.clone()), Some(id));
    let (outcome, mut records) = routed::complete(plan, &mut |target| {
        Ok(LlmCall::new(target, purpose.clone(), body))
    })
    .await;
    let session_id = match records.pop() {
        Some(last) => {
            let mut session = CallRecord::session_of(records, last);
            session.session.config = Some(config.clone());
            let session_id = session.session.id.clone();
            app.record_charged(session).await;
            Some(session_id)
        }
        None => None,
    };
    match outcome {
        Ok(_) => Ok((WarmAction::PrefixCached, session_id)),
        Err(err) => Err(ServiceError::Upstream {
            message: err.to_string(),
            session_id,
        }),
    }
}

/// Loads `deployment`'s model on a host that swaps models and records it
/// as a `warm` session with the `config` snapshot; refreshes the
/// provider's discovery in the background.
async fn load_model(
    app: &AppState,
    id: &str,
    deployment: &Target,
    route: Option<&str>,
    config: &ConfigSnapshot,
) -> Result<(WarmAction, Option<String>), ServiceError> {
    let provider = &deployment.provider;
    let Some(client) = provider.client.as_ref() else {
        return Ok((WarmAction::None, None));
    };
    let upstream_model = deployment.resolution.model_id.model().to_owned();
    let was_loaded = deployment.loaded() == Some(true);
    let sent_at_ms = now_ms();
    let result = client.load_model(&upstream_model, None).await;
    let (request_json, error) = match &result {
        Ok(control) => (control.to_json().to_string(), None),
        Err(err) => (
            json!({"model": upstream_model}).to_string(),
            Some(err.to_string()),
        ),
    };
    let record = CallRecord {
        operation: WARM_OPERATION.to_owned(),
        conversation_id: Some(id.to_owned()),
        turn_id: None,
        model_id: deployment.resolution.model_id.to_string(),
        provider: provider.name().to_owned(),
        upstream_model,
        stream: false,
        request_json,
        summary: AnswerSummary::default(),
        sent_at_ms,
        first_token_at_ms: None,
        completed_at_ms: now_ms(),
        http_status: result.is_ok().then_some(200),
        error: error.clone(),
        attempt: 1,
        route: route.map(str::to_owned),
    };
    let mut session = CallRecord::session_of(Vec::new(), record);
    session.session.config = Some(config.clone());
    let session_id = session.session.id.clone();
    app.record_charged(session).await;
    if let Some(message) = error {
        return Err(ServiceError::Upstream {
            message,
            session_id: Some(session_id),
        });
    }
    let provider = std::sync::Arc::clone(provider);
    tokio::spawn(async move { provider.refresh().await });
    let action = if was_loaded {
        WarmAction::AlreadyLoaded
    } else {
        WarmAction::Loaded
    };
    Ok((action, Some(session_id)))
}
