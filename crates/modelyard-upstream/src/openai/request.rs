//! Reading a chat-completion request's few routing fields with borrowed
//! [`RawValue`]s and editing them in place by byte range.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A body that is not a valid chat-completion request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not a JSON object.
    #[error("request body is not a JSON object: {0}")]
    NotJson(String),
    /// A field has the wrong type.
    #[error("`{field}` must be {expected}")]
    FieldType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A required field is missing.
    #[error("`{0}` is required")]
    Missing(&'static str),
}

/// The fields of a chat-completion request the gateway acts on, with the
/// byte ranges of those it may rewrite.
#[derive(Debug, Clone)]
pub struct ChatRequestHead {
    /// `model`, if present.
    pub model: Option<String>,
    /// Byte range of the `model` value in the body.
    model_span: Option<Range<usize>>,
    /// `stream` (default false).
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub client_include_usage: bool,
    /// The `stream_options` object and its byte range, when present.
    stream_options: Option<StreamOptions>,
    /// Offset just after the opening `{`.
    object_start: usize,
    /// `n`, if present and not `null` (numbers too large for `u64` saturate).
    pub n: Option<u64>,
    /// `max_tokens`, if present and not `null`.
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens`, if present and not `null`.
    pub max_completion_tokens: Option<u64>,
    /// How many entries `messages` has.
    pub message_count: usize,
    /// How many entries `tools` has, if present and not `null`.
    pub tool_count: Option<usize>,
    /// `user` (OpenAI's end-user id), when it is a string; any other value
    /// is left to the upstream to judge.
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "array_len")]
    messages: Option<ArrayLen>,
    #[serde(default, deserialize_with = "array_len")]
    tools: Option<ArrayLen>,
    #[serde(borrow, default, deserialize_with = "present")]
    n: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user: Option<&'a RawValue>,
}

/// What an array-valued member holds, read without building it: arrays are
/// counted element by element (each skipped with `IgnoredAny`).
pub(crate) enum ArrayLen {
    Null,
    Len(usize),
    NotArray,
}

pub(crate) fn array_len<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ArrayLen>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = ArrayLen;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_unit<E>(self) -> Result<ArrayLen, E> {
            Ok(ArrayLen::Null)
        }
        fn visit_none<E>(self) -> Result<ArrayLen, E> {
            Ok(ArrayLen::Null)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ArrayLen, A::Error> {
            let mut len = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                len += 1;
            }
            Ok(ArrayLen::Len(len))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ArrayLen, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(ArrayLen::NotArray)
        }
        fn visit_bool<E>(self, _: bool) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_i64<E>(self, _: i64) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_u64<E>(self, _: u64) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_f64<E>(self, _: f64) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
        fn visit_str<E>(self, _: &str) -> Result<ArrayLen, E> {
            Ok(ArrayLen::NotArray)
        }
    }
    d.deserialize_any(Visit).map(Some)
}

/// A non-negative integer member (`n`, `max_tokens`): `None` when absent or
/// `null`; integral floats are accepted and large values saturate.
pub(crate) fn count_member(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<u64>, RequestError> {
    let Some(raw) = is_null(raw) else {
        return Ok(None);
    };
    let wrong = || RequestError::FieldType {
        field,
        expected: "a non-negative integer",
    };
    let number: serde_json::Number = serde_json::from_str(raw.get()).map_err(|_| wrong())?;
    if let Some(value) = number.as_u64() {
        return Ok(Some(value));
    }
    match number.as_f64() {
        // `as` saturates: 1e30 reads as u64::MAX, which is over any cap.
        Some(value) if value >= 0.0 && value.fract() == 0.0 => Ok(Some(value as u64)),
        _ => Err(wrong()),
    }
}

/// `Some(raw)` for a member that is present, even when its value is `null`
/// (plain `Option` would turn `null` into `None` and lose its span).
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

pub(crate) fn span_of(body: &str, raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

pub(crate) fn is_null(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

impl ChatRequestHead {
    /// Reads the head of a chat-completion request.
    ///
    /// # Errors
    /// [`RequestError`] naming the field at fault.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let text = std::str::from_utf8(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let raw: RawHead<'_> =
            serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let object_start = text
            .find('{')
            .map(|i| i + 1)
            .ok_or_else(|| RequestError::NotJson("expected an object".into()))?;
        // A `null` value still has a span: it is replaced, never duplicated.
        let model_span = raw.model.map(|value| span_of(text, value));
        let model = match is_null(raw.model) {
            None => None,
            Some(value) => Some(serde_json::from_str::<String>(value.get()).map_err(|_| {
                RequestError::FieldType {
                    field: "model",
                    expected: "a string",
                }
            })?),
        };
        let stream = match is_null(raw.stream) {
            None => false,
            Some(value) => {
                serde_json::from_str(value.get()).map_err(|_| RequestError::FieldType {
                    field: "stream",
                    expected: "a boolean",
                })?
            }
        };
        let message_count = match raw.messages {
            None | Some(ArrayLen::Null) => return Err(RequestError::Missing("messages")),
            Some(ArrayLen::NotArray) => {
                return Err(RequestError::FieldType {
                    field: "messages",
                    expected: "an array of messages",
                })
            }
            Some(ArrayLen::Len(len)) => len,
        };
        let tool_count = match raw.tools {
            None | Some(ArrayLen::Null) => None,
            Some(ArrayLen::NotArray) => {
                return Err(RequestError::FieldType {
                    field: "tools",
                    expected: "an array of tools",
                })
            }
            Some(ArrayLen::Len(len)) => Some(len),
        };
        let n = count_member(raw.n, "n")?;
        let max_tokens = count_member(raw.max_tokens, "max_tokens")?;
        let max_completion_tokens =
            count_member(raw.max_completion_tokens, "max_completion_tokens")?;
        let stream_options = match raw.stream_options {
            None => None,
            Some(value) if value.get() == "null" => {
                Some((serde_json::Map::new(), span_of(text, value)))
            }
            Some(value) => {
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(value.get()).map_err(|_| RequestError::FieldType {
                        field: "stream_options",
                        expected: "an object",
                    })?;
                Some((map, span_of(text, value)))
            }
        };
        let client_include_usage = stream_options
            .as_ref()
            .and_then(|(map, _)| map.get("include_usage"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let user = is_null(raw.user).and_then(|v| serde_json::from_str::<String>(v.get()).ok());
        Ok(Self {
            model,
            model_span,
            stream,
            client_include_usage,
            stream_options,
            object_start,
            n,
            max_tokens,
            max_completion_tokens,
            message_count,
            tool_count,
            user,
        })
    }

    /// The body to send upstream: `model` set to `upstream_model`, and for
    /// streaming requests `stream_options.include_usage` forced to `true`
    /// (so usage is always captured). Every other byte is kept.
    pub fn upstream_body(&self, body: &[u8], upstream_model: &str) -> Vec<u8> {
        let force_usage =
            (self.stream && !self.client_include_usage).then_some(self.stream_options.as_ref());
        routed_body(
            body,
            self.object_start,
            self.model_span.as_ref(),
            upstream_model,
            force_usage,
        )
    }
}

/// The stream options a request sent (the object and its byte range), when
/// present (`null` reads as an empty object).
pub(crate) type StreamOptions = (serde_json::Map<String, serde_json::Value>, Range<usize>);

/// A request body with `model` set to `upstream_model` (spliced into
/// `model_span`, or added first after the opening `{` at `object_start`)
/// and, when `force_usage` is `Some(options)`, `stream_options.include_usage`
/// set to `true` (in the client's `stream_options`, or added). Every other
/// byte is kept.
pub(crate) fn routed_body(
    body: &[u8],
    object_start: usize,
    model_span: Option<&Range<usize>>,
    upstream_model: &str,
    force_usage: Option<Option<&StreamOptions>>,
) -> Vec<u8> {
    let model_json = super::model_json(upstream_model);
    let mut edits: Vec<(Range<usize>, String)> = Vec::with_capacity(2);
    let mut inserts = String::new();
    match model_span {
        Some(span) => edits.push((span.clone(), model_json)),
        None => {
            inserts.push_str("\"model\":");
            inserts.push_str(&model_json);
            inserts.push(',');
        }
    }
    match force_usage {
        Some(Some((map, span))) => {
            let mut map = map.clone();
            map.insert("include_usage".into(), serde_json::Value::Bool(true));
            edits.push((span.clone(), serde_json::Value::Object(map).to_string()));
        }
        Some(None) => inserts.push_str("\"stream_options\":{\"include_usage\":true},"),
        None => {}
    }
    if !inserts.is_empty() {
        // An object with no members gets no trailing comma.
        let rest_is_empty = body[object_start..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            == Some(&b'}');
        if rest_is_empty {
            inserts.pop();
        }
        edits.push((object_start..object_start, inserts));
    }
    splice(body, edits)
}

/// Applies a provider's parameter rules to a request body: removes the
/// top-level fields named in `strip`, then sets those in `set`. The body is
/// re-serialized (member order kept), so this runs only for providers that
/// have rules.
///
/// # Errors
/// A message when the body is not a JSON object.
pub fn apply_param_rules(
    body: &[u8],
    set: &serde_json::Map<String, serde_json::Value>,
    strip: &[String],
) -> Result<Vec<u8>, String> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    apply_param_rules_to(&mut object, set, strip);
    serde_json::to_vec(&object).map_err(|e| e.to_string())
}

/// [`apply_param_rules`] on a request object already in memory: removes the
/// top-level fields named in `strip`, then sets those in `set` (member order
/// kept).
pub fn apply_param_rules_to(
    object: &mut serde_json::Map<String, serde_json::Value>,
    set: &serde_json::Map<String, serde_json::Value>,
    strip: &[String],
) {
    for key in strip {
        object.shift_remove(key);
    }
    for (key, value) in set {
        object.insert(key.clone(), value.clone());
    }
}

/// Replaces byte ranges of `input`; ranges must not overlap.
pub fn splice(input: &[u8], mut edits: Vec<(Range<usize>, String)>) -> Vec<u8> {
    edits.sort_by_key(|(range, _)| range.start);
    let added: usize = edits.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(input.len() + added);
    let mut at = 0;
    for (range, replacement) in edits {
        out.extend_from_slice(&input[at..range.start]);
        out.extend_from_slice(replacement.as_bytes());
        at = range.end;
    }
    out.extend_from_slice(&input[at..]);
    out
}
