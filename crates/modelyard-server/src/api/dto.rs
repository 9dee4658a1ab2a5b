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
