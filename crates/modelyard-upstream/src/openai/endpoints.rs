//! The heads of the other OpenAI-style requests the gateway passes through
//! — embeddings, rerank and legacy completions — read like a chat request's
//! ([`super::ChatRequestHead`]): a few fields with borrowed [`RawValue`]s,
//! the body edited by byte range (`model`, and for streamed completions
//! `stream_options.include_usage`), every other byte kept.
//!
//! Shapes:
//! - embeddings (OpenAI API reference, "Create embeddings"): `{model, input,
//!   encoding_format?, dimensions?, user?}`, `input` a string, an array of
//!   strings, an array of token ids or an array of token-id arrays;
//! - rerank (llama.cpp server README, "POST /v1/rerank"; vLLM's rerank API):
//!   `{model, query, documents, top_n?}` (`texts`, llama.cpp's TEI-style
//!   name, accepted for `documents`);
//! - legacy completions (OpenAI API reference, "Create completion"):
//!   `{model, prompt, stream?, stream_options?, max_tokens?, n?, user?, …}`,
//!   `prompt` shaped like `input`.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::request::{count_member, is_null, present, routed_body, span_of, StreamOptions};
use super::RequestError;

/// What an embeddings `input` or a completion `prompt` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextInput {
    /// One string.
    Text,
    /// An array of this many strings.
    Texts(usize),
    /// One array of this many token ids.
    Tokens(usize),
    /// An array of this many token-id arrays.
    TokenArrays(usize),
}

impl TextInput {
    /// How many inputs (texts or token sequences) it is.
    pub fn count(self) -> usize {
        match self {
            TextInput::Text | TextInput::Tokens(_) => 1,
            TextInput::Texts(n) | TextInput::TokenArrays(n) => n,
        }
    }

    /// Its kind as a word: `text`, `texts`, `tokens` or `token-arrays`.
    pub fn kind(self) -> &'static str {
        match self {
            TextInput::Text => "text",
            TextInput::Texts(_) => "texts",
            TextInput::Tokens(_) => "tokens",
            TextInput::TokenArrays(_) => "token-arrays",
        }
    }
}

/// The shape of one member, read without building it.
enum Shape {
    Null,
    Text,
    /// Array elements: how many, and their kinds (`None` when mixed or of
    /// another kind; an empty array has `Some(Kind::Empty)`).
    Array(usize, Option<Element>),
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Element {
    Empty,
    Text,
    Number,
    Array,
}

fn shape<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Shape>, D::Error> {
    struct ElementVisit;
    impl<'de> serde::de::Visitor<'de> for ElementVisit {
        type Value = Option<Element>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Some(Element::Text))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Some(Element::Number))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Some(Element::Number))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Some(Element::Array))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    struct Kind(Option<Element>);
    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ElementVisit).map(Kind)
        }
    }
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Shape;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_unit<E>(self) -> Result<Shape, E> {
            Ok(Shape::Null)
        }
        fn visit_none<E>(self) -> Result<Shape, E> {
            Ok(Shape::Null)
        }
        fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
            Ok(Shape::Text)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
            let mut len = 0;
            let mut kind = Some(Element::Empty);
            while let Some(Kind(element)) = seq.next_element::<Kind>()? {
                kind = match (kind, element) {
                    (Some(Element::Empty), e) => e,
                    (Some(k), Some(e)) if k == e => Some(k),
                    _ => None,
                };
                len += 1;
            }
            Ok(Shape::Array(len, kind))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(Shape::Other)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
            Ok(Shape::Other)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
            Ok(Shape::Other)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
            Ok(Shape::Other)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
            Ok(Shape::Other)
        }
    }
    d.deserialize_any(Visit).map(Some)
}

/// A required `input` / `prompt`: a string, an array of strings, of token
/// ids, or of token-id arrays (an empty array is left to the upstream).
fn text_input(shape: Option<Shape>, field: &'static str) -> Result<TextInput, RequestError> {
    let wrong = RequestError::FieldType {
        field,
        expected: "a string, an array of strings, an array of token ids or an array of \
                   token-id arrays",
    };
    match shape {
        None | Some(Shape::Null) => Err(RequestError::Missing(field)),
        Some(Shape::Text) => Ok(TextInput::Text),
        Some(Shape::Array(n, Some(Element::Text | Element::Empty))) => Ok(TextInput::Texts(n)),
        Some(Shape::Array(n, Some(Element::Number))) => Ok(TextInput::Tokens(n)),
        Some(Shape::Array(n, Some(Element::Array))) => Ok(TextInput::TokenArrays(n)),
        Some(Shape::Array(_, None) | Shape::Other) => Err(wrong),
    }
}

/// A string member, when it is one (anything else is the upstream's to judge).
fn string_member(raw: Option<&RawValue>) -> Option<String> {
    is_null(raw).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

/// Where `model` goes: its value's byte range, or the object's start.
#[derive(Debug, Clone)]
struct ModelSlot {
    span: Option<Range<usize>>,
    object_start: usize,
}

/// Reads `model` (a string or `null`) and where it sits in `text`.
fn model_slot(
    text: &str,
    raw: Option<&RawValue>,
) -> Result<(Option<String>, ModelSlot), RequestError> {
    let object_start = text
        .find('{')
        .map(|i| i + 1)
        .ok_or_else(|| RequestError::NotJson("expected an object".into()))?;
    // A `null` value still has a span: it is replaced, never duplicated.
    let span = raw.map(|value| span_of(text, value));
    let model = match is_null(raw) {
        None => None,
        Some(value) => Some(serde_json::from_str::<String>(value.get()).map_err(|_| {
            RequestError::FieldType {
                field: "model",
                expected: "a string",
            }
        })?),
    };
    Ok((model, ModelSlot { span, object_start }))
}

fn as_text(body: &[u8]) -> Result<&str, RequestError> {
    std::str::from_utf8(body).map_err(|e| RequestError::NotJson(e.to_string()))
}

/// The fields of an embeddings request the gateway acts on.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequestHead {
    /// `model`, if present.
    pub model: Option<String>,
    /// What `input` holds.
    pub input: TextInput,
    /// `encoding_format` (`float` or `base64`), when a string.
    pub encoding_format: Option<String>,
    /// `user` (OpenAI's end-user id), when a string: the affinity key.
    pub user: Option<String>,
    slot: ModelSlot,
}

#[derive(Deserialize)]
struct RawEmbeddings<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "shape")]
    input: Option<Shape>,
    #[serde(borrow, default, deserialize_with = "present")]
    encoding_format: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user: Option<&'a RawValue>,
}

impl EmbeddingsRequestHead {
    /// Reads the head of an embeddings request.
    ///
    /// # Errors
    /// [`RequestError`] naming the field at fault (`input` missing or of
    /// another shape, `model` not a string, not a JSON object).
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let text = as_text(body)?;
        let raw: RawEmbeddings<'_> =
            serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let (model, slot) = model_slot(text, raw.model)?;
        Ok(Self {
            model,
            input: text_input(raw.input, "input")?,
            encoding_format: string_member(raw.encoding_format),
            user: string_member(raw.user),
            slot,
        })
    }

    /// The body to send upstream: `model` set to `upstream_model`, every
    /// other byte kept.
    pub fn upstream_body(&self, body: &[u8], upstream_model: &str) -> Vec<u8> {
        let slot = &self.slot;
        routed_body(
            body,
            slot.object_start,
            slot.span.as_ref(),
            upstream_model,
            None,
        )
    }
}

/// The fields of a rerank request the gateway acts on.
#[derive(Debug, Clone)]
pub struct RerankRequestHead {
    /// `model`, if present.
    pub model: Option<String>,
    /// How many `documents` (or `texts`) there are.
    pub documents: usize,
    /// `top_n`, if present and not `null`.
    pub top_n: Option<u64>,
    /// `user`, when a string: the affinity key.
    pub user: Option<String>,
    slot: ModelSlot,
}

#[derive(Deserialize)]
struct RawRerank<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "shape")]
    query: Option<Shape>,
    #[serde(default, deserialize_with = "shape")]
    documents: Option<Shape>,
    #[serde(default, deserialize_with = "shape")]
    texts: Option<Shape>,
    #[serde(borrow, default, deserialize_with = "present")]
    top_n: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user: Option<&'a RawValue>,
}

impl RerankRequestHead {
    /// Reads the head of a rerank request.
    ///
    /// # Errors
    /// [`RequestError`]: `query` missing or not a string, `documents`
    /// missing or not an array, `top_n` not a non-negative integer.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let text = as_text(body)?;
        let raw: RawRerank<'_> =
            serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let (model, slot) = model_slot(text, raw.model)?;
        match raw.query {
            None | Some(Shape::Null) => return Err(RequestError::Missing("query")),
            Some(Shape::Text) => {}
            Some(_) => {
                return Err(RequestError::FieldType {
                    field: "query",
                    expected: "a string",
                })
            }
        }
        let documents = match raw.documents.or(raw.texts) {
            None | Some(Shape::Null) => return Err(RequestError::Missing("documents")),
            Some(Shape::Array(n, _)) => n,
            Some(_) => {
                return Err(RequestError::FieldType {
                    field: "documents",
                    expected: "an array of documents",
                })
            }
        };
        Ok(Self {
            model,
            documents,
            top_n: count_member(raw.top_n, "top_n")?,
            user: string_member(raw.user),
            slot,
        })
    }

    /// The body to send upstream: `model` set to `upstream_model`, every
    /// other byte kept.
    pub fn upstream_body(&self, body: &[u8], upstream_model: &str) -> Vec<u8> {
        let slot = &self.slot;
        routed_body(
            body,
            slot.object_start,
            slot.span.as_ref(),
            upstream_model,
            None,
        )
    }
}

/// The fields of a legacy completion request the gateway acts on.
#[derive(Debug, Clone)]
pub struct CompletionRequestHead {
    /// `model`, if present.
    pub model: Option<String>,
    /// What `prompt` holds.
    pub prompt: TextInput,
    /// `stream` (default false).
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub client_include_usage: bool,
    stream_options: Option<StreamOptions>,
    /// `n`, if present and not `null`.
    pub n: Option<u64>,
    /// `max_tokens`, if present and not `null`.
    pub max_tokens: Option<u64>,
    /// `user`, when a string: the affinity key.
    pub user: Option<String>,
    slot: ModelSlot,
}

#[derive(Deserialize)]
struct RawCompletionRequest<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "shape")]
    prompt: Option<Shape>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    n: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user: Option<&'a RawValue>,
}

impl CompletionRequestHead {
    /// Reads the head of a legacy completion request.
    ///
    /// # Errors
    /// [`RequestError`] naming the field at fault.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let text = as_text(body)?;
        let raw: RawCompletionRequest<'_> =
            serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let (model, slot) = model_slot(text, raw.model)?;
        let stream = match is_null(raw.stream) {
            None => false,
            Some(value) => {
                serde_json::from_str(value.get()).map_err(|_| RequestError::FieldType {
                    field: "stream",
                    expected: "a boolean",
                })?
            }
        };
        let stream_options = match raw.stream_options {
            None => None,
            Some(value) if value.get() == "null" => {
                Some((serde_json::Map::new(), span_of(text, value)))
            }
            Some(value) => {
                let map =
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
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            model,
            prompt: text_input(raw.prompt, "prompt")?,
            stream,
            client_include_usage,
            stream_options,
            n: count_member(raw.n, "n")?,
            max_tokens: count_member(raw.max_tokens, "max_tokens")?,
            user: string_member(raw.user),
            slot,
        })
    }

    /// The body to send upstream: `model` set to `upstream_model`, and for
    /// streaming requests `stream_options.include_usage` forced to `true`
    /// (so usage is always captured). Every other byte is kept.
    pub fn upstream_body(&self, body: &[u8], upstream_model: &str) -> Vec<u8> {
        let slot = &self.slot;
        let force_usage =
            (self.stream && !self.client_include_usage).then_some(self.stream_options.as_ref());
        routed_body(
            body,
            slot.object_start,
            slot.span.as_ref(),
            upstream_model,
            force_usage,
        )
    }
}
