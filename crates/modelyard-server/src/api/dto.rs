//! Wire shapes shared by several areas of the API: lists and pages. Each
//! area's own shapes live next to its handlers (`conversations::dto`, or
//! in the handler's module).

use serde::Serialize;
use utoipa::ToSchema;

/// `{data}`: a whole list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    /// The items.
    pub data: Vec<T>,
}

/// `{data, nextBefore}`: one page of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items.
    pub data: Vec<T>,
    /// Cursor of the next page (`?before=`), if this page was full.
    pub next_before: Option<String>,
}

/// One event of a `text/event-stream` answer, as the OpenAPI document
/// describes it (WHATWG HTML, "Server-sent events": the fields of one
/// event block). Modelyard's own feeds send `data` as one JSON object;
/// the OpenAI fronts end with `data: [DONE]`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SseEvent)]
pub struct SseEventSchema {
    /// The event's name (`event:`), when it has one.
    pub event: Option<String>,
    /// The event's data (`data:` lines joined by newlines).
    pub data: String,
    /// The event's id (`id:`), when it has one.
    pub id: Option<String>,
    /// Reconnection time in milliseconds (`retry:`), when given.
    pub retry: Option<u64>,
}
