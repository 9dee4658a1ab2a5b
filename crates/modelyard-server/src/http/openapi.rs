//! The OpenAPI 3.1 document of the server (`GET /openapi.json`), generated
//! from the code with `utoipa`: each handler's `#[utoipa::path]` gives its
//! path, parameters, request body and success answers; the wire types
//! derive `ToSchema`. [`document`] then adds what the route table
//! ([`super::routes`]) knows, so it is said once: the bearer security
//! requirement of every row with a role, and each operation's `default`
//! error answer in the shape its path answers errors in
//! ([`crate::error::is_anthropic_path`], [`crate::error::is_openai_path`]):
//! Anthropic's error, OpenAI's envelope, or an RFC 9457 problem document
//! with its `code`. Rows served by another row's handler ([`ALIASES`]) get
//! a copy of that row's path item.

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as Document, PathItem, Ref, RefOr, ResponseBuilder, SecurityRequirement,
};
use utoipa::OpenApi;

use super::routes::{self, Access};
use crate::error::{is_anthropic_path, is_openai_path};
use crate::{api, gateway};

/// Name of the security scheme: `Authorization: Bearer mk_…`.
pub const SECURITY_SCHEME: &str = "apiKey";

/// Rows of the route table served by another row's handler, documented
/// with a copy of that row's path item: `(alias, documented path)`.
pub const ALIASES: &[(&str, &str)] = &[
    ("/v1/llm-calls/{id}", "/v1/calls/{id}"),
    ("/v1/reranking", "/v1/rerank"),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Modelyard",
        description = "A model gateway: OpenAI-compatible chat completions and Anthropic Messages \
            proxied to named providers, with routing, a call log, conversations and turns. \
            Keys (`mk_…`) are sent as `Authorization: Bearer`; until the first key exists the \
            server runs open on loopback."
    ),
    paths(
        api::health::health,
        api::metrics::metrics,
        api::openapi::openapi_json,
        gateway::chat_completions,
        gateway::list_models,
        gateway::passthrough::embeddings,
        gateway::passthrough::rerank,
        gateway::passthrough::completions,
        gateway::anthropic::messages,
        gateway::anthropic::count_tokens,
        gateway::responses::create,
        gateway::responses::get,
        api::calls::list,
        api::calls::show,
        api::sessions::list,
        api::sessions::show,
        api::sessions::usage,
        api::catalog::catalog,
        api::providers::list,
        api::providers::show,
        api::providers::refresh,
        api::providers::load,
        api::providers::unload,
        api::favorites::list,
        api::favorites::replace,
        api::favorites::add,
        api::favorites::remove,
        api::llms::list,
        api::llms::create,
        api::llms::show,
        api::llms::patch,
        api::llms::delete,
        api::llms::copy,
        api::llms::versions,
        api::keys::list,
        api::keys::create,
        api::keys::patch,
        api::keys::revoke,
        api::limits::get_project,
        api::limits::put_project,
        api::conversations::list,
        api::conversations::create,
        api::conversations::show,
        api::conversations::patch,
        api::conversations::delete,
        api::conversations::messages,
        api::imports::import,
        api::conversations::get_model,
        api::conversations::put_model,
        api::conversations::get_settings,
        api::conversations::patch_settings,
        api::conversations::model_history,
        api::conversations::turns,
        api::conversations::turns::start_turn,
        api::conversations::turns::cancel_turn,
        api::conversations::turns::tool_results,
        api::conversations::events::events,
        api::operations::title,
        api::operations::compact,
        api::operations::warm,
        api::arena::arena,
        api::arena::conversation::pick_standalone,
        api::arena::conversation::stats,
        api::arena::conversation::conversation_arena,
        api::arena::conversation::get_run,
        api::arena::conversation::pick,
    ),
    components(schemas(
        crate::error::ProblemBody,
        crate::error::OpenAiErrorBody,
        crate::error::AnthropicErrorBody
    ))
)]
struct ApiDoc;

/// The path of a route-table row as OpenAPI writes it (`{*model_id}` →
/// `{model_id}`).
pub fn openapi_path(table_path: &str) -> String {
    table_path.replace("{*", "{")
}

/// The operation of `item` for `method`.
pub fn operation_mut<'a>(
    item: &'a mut PathItem,
    method: &http::Method,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    match *method {
        http::Method::GET => item.get.as_mut(),
        http::Method::POST => item.post.as_mut(),
        http::Method::PUT => item.put.as_mut(),
        http::Method::PATCH => item.patch.as_mut(),
        http::Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}

/// The `default` answer of an operation on `path`: its error shape.
fn error_response(path: &str) -> utoipa::openapi::Response {
    let (description, media_type, schema) = if is_anthropic_path(path) {
        (
            "Error in Anthropic's shape",
            "application/json",
            "AnthropicError",
        )
    } else if is_openai_path(path) {
        (
            "Error in OpenAI's envelope",
            "application/json",
            "OpenAiError",
        )
    } else {
        (
            "RFC 9457 problem document with a stable `code`",
            "application/problem+json",
            "Problem",
        )
    };
    ResponseBuilder::new()
        .description(description)
        .content(
            media_type,
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name(schema))))
                .build(),
        )
        .build()
}

fn build() -> Document {
    let mut doc = ApiDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SECURITY_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("mk_…")
                .description(Some(
                    "An API key (`modelyard keys create`); not needed while no key exists",
                ))
                .build(),
        ),
    );
    for (alias, documented) in ALIASES {
        if let Some(item) = doc.paths.paths.get(*documented).cloned() {
            let mut item = item;
            for method in [http::Method::GET, http::Method::POST] {
                if let Some(op) = operation_mut(&mut item, &method) {
                    op.operation_id = op.operation_id.take().map(|id| format!("{id}_alias"));
                }
            }
            doc.paths.paths.insert((*alias).to_owned(), item);
        }
    }
    for row in routes::table() {
        let path = openapi_path(row.path);
        let Some(op) = doc
            .paths
            .paths
            .get_mut(&path)
            .and_then(|item| operation_mut(item, &row.method))
        else {
            continue;
        };
        op.responses
            .responses
            .insert("default".to_owned(), RefOr::T(error_response(row.path)));
        if let Access::Role(role) = row.access {
            op.security = Some(vec![SecurityRequirement::new(
                SECURITY_SCHEME,
                Vec::<String>::new(),
            )]);
            let note = format!("Needs a key with role `{}` or above.", role.as_str());
            op.description = Some(match op.description.take() {
                Some(text) => format!("{text}\n\n{note}"),
                None => note,
            });
        }
    }
    doc
}

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(build);
    &DOC
}

/// The document as JSON text, rendered once.
pub fn document_json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_json()
            .unwrap_or_else(|err| serde_json::json!({ "error": err.to_string() }).to_string())
    });
    &JSON
}
