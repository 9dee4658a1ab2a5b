//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) to
//! `[telemetry] otlp_endpoint`; off by default.
//!
//! The span tree of one request (attributes from the OpenTelemetry GenAI
//! semantic conventions where they exist, `modelyard.*` otherwise):
//! - a **server** span per HTTP request, made by the outermost layer
//!   ([`crate::http::access`]): `{method} {route}`, `http.request.method`,
//!   `http.route` (the route pattern, never the raw path),
//!   `http.response.status_code`, `modelyard.request_id`; `error.type` and
//!   an error status for 5xx. An incoming W3C `traceparent` (and
//!   `tracestate`) is continued: the span joins the client's trace as a
//!   child of the client's span. The span ends with the response headers,
//!   or, for an event stream, when its body ends or the client leaves.
//! - a **client** span per upstream attempt ([`CallSpan`], made by
//!   [`crate::service::routed::Pick::call`], ended by
//!   [`crate::service::llm_call::LlmCall::observe`]): `chat {model}`,
//!   `gen_ai.operation.name` (`chat`, `text_completion`, `embeddings`,
//!   `rerank`), `gen_ai.request.model` / `gen_ai.response.model` (the
//!   upstream's model name), `gen_ai.provider.name` (the configured
//!   provider's name), `server.address` / `server.port`,
//!   `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens`,
//!   `gen_ai.response.finish_reasons`, `modelyard.attempt`,
//!   `modelyard.route`, `modelyard.deployment`, `modelyard.operation`,
//!   `gen_ai.conversation.id`, and `error.type` (the upstream's HTTP status,
//!   `timeout`, `unreachable`, …) with an error status on failure. Each
//!   attempt's request to the upstream carries this span's `traceparent`.
//! - for conversation turns: an `invoke_agent turn` span per run (child of
//!   the request that started it), under it the `chat` spans of its steps
//!   and an `execute_tool {name}` span per tool call the server answers
//!   (the advisor's, whose own `chat` span is its child).
//!
//! Prompt and completion text is never in a span unless
//! `[telemetry] capture_content = true` (then `gen_ai.input.messages`: the
//! request's OpenAI-shaped `messages` JSON, `gen_ai.output.messages`: the
//! answer's text as `[{"role":"assistant","parts":[...]}]`).
//!
//! Off (no `otlp_endpoint`), [`Traces::enabled`] is false and every caller
//! branches on it before doing anything else: no span, no header, no
//! context. On, spans go to a batch processor (its own thread, a bounded
//! queue of [`MAX_QUEUE_SPANS`]; a full queue drops spans, never blocks a
//! request) whose exporter posts with a blocking `reqwest` client on that
//! thread. `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5 000) and
//! `OTEL_EXPORTER_OTLP_HEADERS` (e.g. a collector's auth header) are read
//! from the environment, as the OpenTelemetry SDK documents.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

use crate::config::TelemetryConfig;

pub use opentelemetry::context::FutureExt;

/// Spans waiting for export at most; past it new spans are dropped.
pub const MAX_QUEUE_SPANS: usize = 4096;
/// Spans per export request at most.
const MAX_EXPORT_BATCH_SPANS: usize = 512;
/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The instrumentation scope's name.
const SCOPE: &str = "modelyard";

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP trace exporter for {endpoint}: {reason}")]
pub struct TracesError {
    /// The endpoint it was built for.
    pub endpoint: String,
    /// The exporter's reason.
    pub reason: String,
}

/// The server's tracer, or nothing when tracing is off (see the
/// [module docs](self)).
#[derive(Debug, Default)]
pub struct Traces {
    inner: Option<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    capture_content: bool,
}

impl Traces {
    /// Tracing off.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The tracer `config` asks for: off without `otlp_endpoint`.
    ///
    /// # Errors
    /// [`TracesError`] when the exporter cannot be built.
    pub fn new(config: &TelemetryConfig) -> Result<Self, TracesError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Self::disabled());
        };
        let error = |reason: String| TracesError {
            endpoint: endpoint.to_string(),
            reason,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| error(e.to_string()))?;
        // The default reads OTEL_BSP_* from the environment.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUE_SPANS)
            .with_max_export_batch_size(MAX_EXPORT_BATCH_SPANS)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Self {
            inner: Some(Inner {
                provider,
                tracer,
                capture_content: config.capture_content,
            }),
        })
    }

    /// Whether spans are made.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Exports what is queued and stops the exporter (blocks up to the
    /// export timeout: call off the async workers).
    pub fn shutdown(&self) {
        if let Some(inner) = &self.inner {
            if let Err(err) = inner.provider.shutdown() {
                tracing::warn!(error = %err, "cannot flush the last spans");
            }
        }
    }

    /// The server span of a request whose head is `headers` (continuing
    /// its `traceparent`), as a context to run the request in; `None` when
    /// tracing is off.
    pub fn server_span(
        &self,
        headers: &HeaderMap,
        method: &'static str,
        route: &'static str,
        request_id: &str,
    ) -> Option<Context> {
        let inner = self.inner.as_ref()?;
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = inner
            .tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
                KeyValue::new("modelyard.request_id", request_id.to_owned()),
            ])
            .start_with_context(&inner.tracer, &parent);
        Some(parent.with_span(span))
    }

    /// A child of the current context's span (`None` when tracing is off):
    /// `name`, `kind`, `attributes`.
    pub fn child(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Option<Context> {
        let inner = self.inner.as_ref()?;
        let parent = Context::current();
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&inner.tracer, &parent);
        Some(parent.with_span(span))
    }

    /// The span of one upstream attempt, a child of the current context's
    /// span (`None` when tracing is off).
    pub fn call_span(&self, call: CallStart<'_>) -> Option<CallSpan> {
        let inner = self.inner.as_ref()?;
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", call.operation_name),
            KeyValue::new("gen_ai.request.model", call.model.to_owned()),
            KeyValue::new("gen_ai.provider.name", call.provider.to_owned()),
            KeyValue::new("modelyard.operation", call.purpose.to_owned()),
            KeyValue::new("modelyard.deployment", call.deployment.to_owned()),
            KeyValue::new("modelyard.attempt", i64::from(call.attempt)),
        ];
        if let Some(host) = call.base_url.host_str() {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(port) = call.base_url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        if let Some(route) = call.route {
            attributes.push(KeyValue::new("modelyard.route", route.to_owned()));
        }
        if let Some(conversation) = call.conversation_id {
            attributes.push(KeyValue::new(
                "gen_ai.conversation.id",
                conversation.to_owned(),
            ));
        }
        if inner.capture_content {
            if let Some(messages) = input_messages(call.request) {
                attributes.push(KeyValue::new("gen_ai.input.messages", messages));
            }
        }
        let cx = self.child(
            format!("{} {}", call.operation_name, call.model),
            SpanKind::Client,
            attributes,
        )?;
        Some(CallSpan {
            cx,
            model: call.model.to_owned(),
            capture_content: inner.capture_content,
            failed: AtomicBool::new(false),
        })
    }
}

/// A request's server span (from [`Traces::server_span`]) with its status
/// set; ends when dropped.
#[derive(Debug)]
pub struct ServerSpan(Context);

impl ServerSpan {
    /// Sets `status` (`http.response.status_code`; `error.type` and an
    /// error status for 5xx) on the span of `cx`.
    pub fn new(cx: Context, status: u16) -> Self {
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(status.to_string()));
        }
        Self(cx)
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// Ends the span of `cx` (from [`Traces::child`]), with `error_type` as
/// `error.type` and an error status when it failed.
pub fn end_span(cx: &Context, error_type: Option<&str>) {
    let span = cx.span();
    if let Some(error_type) = error_type {
        span.set_attribute(KeyValue::new("error.type", error_type.to_owned()));
        span.set_status(Status::error(error_type.to_owned()));
    }
    span.end();
}

/// What an attempt's span says at its start ([`Traces::call_span`]).
#[derive(Debug)]
pub struct CallStart<'a> {
    /// `gen_ai.operation.name`: `chat`, `text_completion`, `embeddings`,
    /// `rerank`.
    pub operation_name: &'static str,
    /// The modelyard operation (`gateway`, `chat`, `advisor`, …).
    pub purpose: &'a str,
    /// The upstream's model name.
    pub model: &'a str,
    /// The configured provider's name.
    pub provider: &'a str,
    /// The provider's base URL (`server.address`, `server.port`).
    pub base_url: &'a url::Url,
    /// The deployment (composite id or route target).
    pub deployment: &'a str,
    /// Attempt number within the request, from 1.
    pub attempt: u32,
    /// The route the request named.
    pub route: Option<&'a str>,
    /// The conversation, for calls made for one.
    pub conversation_id: Option<&'a str>,
    /// The request body as it is sent (read only with `capture_content`).
    pub request: &'a [u8],
}

/// The span of one upstream attempt (see the [module docs](self)).
#[derive(Debug)]
pub struct CallSpan {
    cx: Context,
    model: String,
    capture_content: bool,
    /// Whether an error type was noted ([`Self::fail`]).
    failed: AtomicBool,
}

/// How an attempt ended, for its span.
#[derive(Debug, Clone, Copy)]
pub struct CallEnd<'a> {
    /// Prompt tokens, when reported.
    pub input_tokens: Option<u64>,
    /// Completion tokens, when reported.
    pub output_tokens: Option<u64>,
    /// The finish reason, when reported.
    pub finish_reason: Option<&'a str>,
    /// The answer's text (written only with `capture_content`).
    pub text: Option<&'a str>,
    /// `error.type` when it failed (one noted earlier with
    /// [`CallSpan::fail`] stays).
    pub error_type: Option<&'a str>,
}

impl CallSpan {
    /// The request headers that carry this span to the upstream
    /// (`traceparent`, and `tracestate` when the trace has one).
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&self.cx, &mut HeaderInjector(&mut headers));
        headers
    }

    /// Notes an error's type now (the call may end later).
    pub fn fail(&self, error_type: &str) {
        self.failed.store(true, Ordering::Relaxed);
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", error_type.to_owned()));
        span.set_status(Status::error(error_type.to_owned()));
    }

    /// Ends the span with what the call reported (a second call does
    /// nothing).
    pub fn end(&self, end: &CallEnd<'_>) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        if let Some(tokens) = end.input_tokens {
            span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", clamp(tokens)));
        }
        if let Some(tokens) = end.output_tokens {
            span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", clamp(tokens)));
        }
        if let Some(reason) = end.finish_reason {
            span.set_attribute(KeyValue::new(
                "gen_ai.response.finish_reasons",
                opentelemetry::Value::Array(
                    vec![opentelemetry::StringValue::from(reason.to_owned())].into(),
                ),
            ));
        }
        match end.error_type {
            Some(_) if self.failed.load(Ordering::Relaxed) => {}
            Some(error_type) => self.fail(error_type),
            None => span.set_attribute(KeyValue::new("gen_ai.response.model", self.model.clone())),
        }
        if self.capture_content {
            if let Some(text) = end.text {
                let output = serde_json::json!([{
                    "role": "assistant",
                    "parts": [{"type": "text", "content": text}],
                    "finish_reason": end.finish_reason,
                }]);
                span.set_attribute(KeyValue::new("gen_ai.output.messages", output.to_string()));
            }
        }
        span.end();
    }
}

/// A token count as an attribute value (attributes are `i64`).
fn clamp(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

/// The `messages` member of a request body, as JSON text.
fn input_messages(request: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Messages<'a> {
        #[serde(borrow)]
        messages: Option<&'a serde_json::value::RawValue>,
    }
    let parsed: Messages<'_> = serde_json::from_slice(request).ok()?;
    parsed.messages.map(|m| m.get().to_owned())
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_messages_are_the_request_messages_verbatim() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        assert_eq!(
            input_messages(body).as_deref(),
            Some(r#"[{"role":"user","content":"hi"}]"#)
        );
        assert_eq!(input_messages(b"not json"), None);
    }

    #[test]
    fn off_makes_no_span() {
        let traces = Traces::disabled();
        assert!(!traces.enabled());
        assert!(traces
            .server_span(&HeaderMap::new(), "GET", "/health", "id")
            .is_none());
        assert!(traces.child("x", SpanKind::Internal, Vec::new()).is_none());
    }
}
