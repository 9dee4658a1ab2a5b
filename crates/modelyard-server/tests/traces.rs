//! OpenTelemetry traces reach an OTLP/HTTP receiver (`[telemetry]
//! otlp_endpoint`): the span tree of a gateway request with a retry and of a
//! conversation turn with an advisor consultation, their GenAI attributes
//! and parent/child links, an incoming `traceparent` continued and
//! forwarded to the upstream, and no prompt text unless
//! `capture_content = true`.
//!
//! The receiver is a small axum server decoding `ExportTraceServiceRequest`
//! protobufs; the server's shutdown flushes the batch exporter, so every
//! span is there once `shutdown` returns.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use common::conv::*;
use common::TestServer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use serde_json::json;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    end_ns: u64,
    error: bool,
    attrs: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attrs
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("span {:?} has no {key}: {:#?}", self.name, self.attrs))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| text(v.value.as_ref()))
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

fn attrs(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

/// An OTLP/HTTP trace receiver on loopback.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let sink = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    let mut sink = sink.lock().unwrap();
                    for resource in request.resource_spans {
                        let resource_attrs =
                            attrs(&resource.resource.map(|r| r.attributes).unwrap_or_default());
                        let service = resource_attrs
                            .get("service.name")
                            .cloned()
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                sink.push(Span {
                                    service: service.clone(),
                                    trace_id: hex(&span.trace_id),
                                    span_id: hex(&span.span_id),
                                    parent: hex(&span.parent_span_id),
                                    name: span.name,
                                    kind: span.kind,
                                    end_ns: span.end_time_unix_nano,
                                    error: span.status.map(|s| s.code)
                                        == Some(StatusCode::Error as i32),
                                    attrs: attrs(&span.attributes),
                                });
                            }
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

async fn server(receiver: &Receiver, capture_content: bool) -> TestServer {
    TestServer::builder()
        .listed(&["echo", "fail-first:1@0", "tool-call:advisor"])
        .extra(&format!(
            "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"modelyard-test\"\n\
             capture_content = {capture_content}\n",
            receiver.url
        ))
        .start()
        .await
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_retried_request_is_one_server_span_with_a_client_span_per_attempt_in_the_callers_trace()
{
    let receiver = Receiver::start().await;
    let server = server(&receiver, false).await;

    // Given a client in trace CLIENT_TRACE, when its request is retried once…
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "mock/fail-first:1@0", "messages": [
            {"role": "user", "content": "a secret prompt"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-modelyard-attempts"], "2");
    // …the upstream saw the trace on both attempts, each with its own span.
    let sent: Vec<String> = server
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.header("traceparent").unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    server.shutdown().await;

    let spans = receiver.spans();
    let request = named(&spans, "POST /v1/chat/completions");
    assert_eq!(request.len(), 1, "{spans:#?}");
    let request = request[0];
    assert_eq!(request.service, "modelyard-test");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.trace_id, CLIENT_TRACE, "the caller's trace is kept");
    assert_eq!(request.parent, CLIENT_SPAN, "a child of the caller's span");
    assert_eq!(request.attr("http.route"), "/v1/chat/completions");
    assert_eq!(request.attr("http.response.status_code"), "200");

    let mut attempts = named(&spans, "chat fail-first:1@0");
    attempts.sort_by_key(|s| s.attr("modelyard.attempt").to_owned());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.kind, SpanKind::Client as i32);
        assert_eq!(attempt.trace_id, CLIENT_TRACE);
        assert_eq!(attempt.parent, request.span_id, "a child of the request");
        assert_eq!(attempt.attr("modelyard.attempt"), (i + 1).to_string());
        assert_eq!(attempt.attr("gen_ai.operation.name"), "chat");
        assert_eq!(attempt.attr("gen_ai.request.model"), "fail-first:1@0");
        assert_eq!(attempt.attr("gen_ai.provider.name"), "mock");
        assert_eq!(attempt.attr("modelyard.operation"), "gateway");
        assert_eq!(attempt.attr("server.address"), "127.0.0.1");
        // The header the upstream got names this attempt's span.
        assert_eq!(
            sent[i],
            format!("00-{CLIENT_TRACE}-{}-01", attempt.span_id),
            "attempt {}",
            i + 1
        );
    }
    let (failed, served) = (attempts[0], attempts[1]);
    assert!(failed.error);
    assert_eq!(failed.attr("error.type"), "429");
    assert!(!served.error);
    assert_eq!(served.attr("gen_ai.response.model"), "fail-first:1@0");
    assert!(
        served
            .attr("gen_ai.usage.input_tokens")
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(
        served
            .attr("gen_ai.usage.output_tokens")
            .parse::<u64>()
            .unwrap()
            > 0
    );
    // No prompt text without capture_content.
    for span in &spans {
        for (key, value) in &span.attrs {
            assert!(!value.contains("a secret prompt"), "{key} of {}", span.name);
        }
    }
}

#[tokio::test]
async fn a_turn_with_an_advisor_is_a_tree_of_run_steps_tool_and_advisor_call() {
    let receiver = Receiver::start().await;
    let server = server(&receiver, true).await;
    let (status, advisor) = send(
        &server,
        "POST",
        "/v1/llms",
        Some(json!({"displayName": "advisor", "model": "mock/echo"})),
    )
    .await;
    assert_eq!(status, 201, "{advisor}");
    let conv = create(
        &server,
        json!({"advisor": true, "llmOverrides": {"advisor": advisor["id"]}}),
    )
    .await;
    let (_, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "How should I sort names?", "model": "mock/tool-call:advisor"}),
    )
    .await;
    assert_eq!(turn["status"], "completed", "{turn}");
    server.shutdown().await;

    let spans = receiver.spans();
    let request = named(&spans, "POST /v1/conversations/{id}/turns");
    assert_eq!(request.len(), 1, "{spans:#?}");
    let request = request[0];
    let run = named(&spans, "invoke_agent turn");
    assert_eq!(run.len(), 1, "{spans:#?}");
    let run = run[0];
    assert_eq!(
        run.parent, request.span_id,
        "the run is the request's child"
    );
    assert_eq!(run.trace_id, request.trace_id);
    assert_eq!(run.attr("gen_ai.conversation.id"), conv);

    // Two model calls (the tool call, then the answer), children of the run.
    let steps = named(&spans, "chat tool-call:advisor");
    assert_eq!(steps.len(), 2, "{spans:#?}");
    for step in &steps {
        assert_eq!(step.parent, run.span_id);
        assert_eq!(step.attr("modelyard.operation"), "chat");
        assert_eq!(step.attr("gen_ai.conversation.id"), conv);
        // capture_content = true: the prompt is there.
        assert!(step
            .attr("gen_ai.input.messages")
            .contains("How should I sort names?"));
    }
    let tool = named(&spans, "execute_tool advisor");
    assert_eq!(tool.len(), 1, "{spans:#?}");
    let tool = tool[0];
    assert_eq!(tool.parent, run.span_id);
    assert_eq!(tool.attr("gen_ai.tool.name"), "advisor");
    assert_eq!(tool.attr("modelyard.step"), "1");
    assert!(!tool.error);
    // The advisor's own model call is the tool's child.
    let consult = named(&spans, "chat echo");
    assert_eq!(consult.len(), 1, "{spans:#?}");
    assert_eq!(consult[0].parent, tool.span_id);
    assert_eq!(consult[0].attr("modelyard.operation"), "advisor");
    assert_eq!(consult[0].trace_id, request.trace_id);
    assert!(consult[0]
        .attr("gen_ai.output.messages")
        .contains("assistant"));
}

#[tokio::test]
async fn a_streamed_answers_request_span_lasts_until_the_stream_ends() {
    let receiver = Receiver::start().await;
    let server = server(&receiver, false).await;
    let response = server
        .chat(&json!({"model": "mock/echo", "stream": true, "messages": [
            {"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("[DONE]"), "{body}");
    server.shutdown().await;

    let spans = receiver.spans();
    let request = named(&spans, "POST /v1/chat/completions");
    let attempt = named(&spans, "chat echo");
    assert_eq!((request.len(), attempt.len()), (1, 1), "{spans:#?}");
    assert_eq!(attempt[0].parent, request[0].span_id);
    // The attempt ends when the upstream's stream is read to its end; the
    // request's span only after that, with the body.
    assert!(
        request[0].end_ns >= attempt[0].end_ns,
        "request ended at {}, its attempt at {}",
        request[0].end_ns,
        attempt[0].end_ns
    );
    assert!(
        attempt[0]
            .attr("gen_ai.usage.output_tokens")
            .parse::<u64>()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced_or_forwarded() {
    let server = TestServer::builder().listed(&["echo"]).start().await;
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = server.mock.last_request().unwrap();
    assert_eq!(sent.header("traceparent"), None);
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_collector_costs_requests_nothing() {
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = TestServer::builder()
        .listed(&["echo"])
        .extra(&format!("[telemetry]\notlp_endpoint = \"{url}\"\n"))
        .start()
        .await;
    for stream in [false, true] {
        let response = server
            .chat(
                &json!({"model": "mock/echo", "stream": stream, "messages": [
                {"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    // The upstream still got the trace context, and shutdown (which tries
    // a last export) finishes.
    assert!(server
        .mock
        .last_request()
        .unwrap()
        .header("traceparent")
        .is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace() {
    let receiver = Receiver::start().await;
    let server = server(&receiver, false).await;
    let hostile = [
        "garbage".to_owned(),
        format!("ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-{}", "x".repeat(4000)),
    ];
    for value in &hostile {
        let response = server
            .http
            .post(server.url("/v1/chat/completions"))
            .header("traceparent", value)
            .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{value:.40}");
    }
    server.shutdown().await;

    let spans = receiver.spans();
    let requests = named(&spans, "POST /v1/chat/completions");
    assert_eq!(requests.len(), hostile.len(), "{spans:#?}");
    for request in requests {
        assert_eq!(request.parent, "", "a root span: {request:#?}");
        assert_ne!(request.trace_id, CLIENT_TRACE);
        assert_ne!(request.trace_id, "0".repeat(32));
    }
}
