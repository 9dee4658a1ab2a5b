//! Sending a call under the provider's deadlines and reading its answer:
//! one body or an event stream.

use modelyard_upstream::openai::{
    rewrite_completion, upstream_error_message, ChunkKind, CompletionError, RewrittenCompletion,
    StreamAccumulator,
};
use modelyard_upstream::sse::SseDecoder;
use modelyard_upstream::UpstreamResponse;

use super::{
    status_message, LlmCall, LlmCallError, UpstreamStatus, MAX_ANSWER_BYTES, MAX_ERROR_BODY_BYTES,
    MAX_ERROR_CHARS,
};
use crate::clock::now_ms;

impl LlmCall {
    /// Sends the request (to its [`Endpoint`](super::Endpoint)) under the provider's
    /// deadlines. A non-2xx answer
    /// is an error whose body was read (at most [`MAX_ERROR_BODY_BYTES`]);
    /// a streamed request answered with something other than an event
    /// stream is one too.
    ///
    /// # Errors
    /// [`LlmCallError::Disabled`], [`LlmCallError::Send`] (unreachable,
    /// timeout), [`LlmCallError::Status`], [`LlmCallError::NotEventStream`].
    pub async fn send(&mut self) -> Result<UpstreamResponse, LlmCallError> {
        let provider = self.target.provider.name();
        let Some(client) = self.target.provider.client.as_ref() else {
            return Err(LlmCallError::Disabled {
                provider: provider.to_owned(),
            });
        };
        // An `anthropic` provider answers nothing but Messages: refused here
        // rather than sent a request it would reject.
        if self.target.provider.config.kind.speaks_only_messages() && !self.endpoint.is_messages() {
            return Err(LlmCallError::MessagesOnly {
                provider: provider.to_owned(),
            });
        }
        self.sent_at_ms = now_ms();
        let headers = match (
            self.span.as_ref().map(crate::traces::CallSpan::headers),
            self.headers.clone(),
        ) {
            (Some(mut trace), Some(extra)) => {
                trace.extend(extra);
                Some(trace)
            }
            (trace, extra) => trace.or(extra),
        };
        let upstream = client
            .post_json_with(
                self.endpoint.path(),
                self.request.clone(),
                self.stream,
                headers,
            )
            .await
            .map_err(LlmCallError::Send);
        let upstream = match upstream {
            Ok(upstream) => upstream,
            Err(error) => {
                if let Some(span) = &self.span {
                    span.fail(error.error_type());
                }
                return Err(error);
            }
        };
        let status = upstream.status();
        self.status = Some(status);
        if !(200..300).contains(&status) {
            let retry_after = upstream.retry_after().map(str::to_owned);
            let body = upstream
                .bytes(MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            let (message, kind, code) = upstream_error_message(&body, MAX_ERROR_CHARS);
            return Err(LlmCallError::Status(Box::new(UpstreamStatus {
                status,
                message: status_message(provider, status, &message),
                kind,
                code,
                retry_after,
            })));
        }
        if self.stream && !upstream.is_event_stream() {
            return Err(LlmCallError::NotEventStream {
                provider: provider.to_owned(),
                content_type: upstream.content_type().to_owned(),
            });
        }
        Ok(upstream)
    }

    /// Reads a non-streamed answer (at most [`MAX_ANSWER_BYTES`]), with
    /// `model` set to the composite id.
    ///
    /// # Errors
    /// [`LlmCallError::Upstream`] (body, deadline, size),
    /// [`LlmCallError::InBand`], [`LlmCallError::Invalid`].
    pub async fn read_body(
        &mut self,
        upstream: UpstreamResponse,
    ) -> Result<RewrittenCompletion, LlmCallError> {
        let status = upstream.status();
        let bytes = upstream
            .bytes(MAX_ANSWER_BYTES)
            .await
            .map_err(LlmCallError::Upstream)?;
        // A non-streamed answer's latency is the whole answer's.
        if let Some(busy) = self.busy.as_mut() {
            busy.observe_ttft(now_ms() - self.sent_at_ms);
        }
        let provider = self.target.provider.name();
        let client_model = self.client_model();
        rewrite_completion(&bytes, &client_model).map_err(|error| match error {
            // A success status whose body is an error object is an error, not an answer.
            CompletionError::InBand(error) => {
                let (message, _, code) = upstream_error_message(error.as_bytes(), MAX_ERROR_CHARS);
                LlmCallError::InBand {
                    message: format!(
                        "provider '{provider}' answered HTTP {status} with an error: {message}"
                    ),
                    code,
                }
            }
            CompletionError::NotJson(reason) => LlmCallError::Invalid(format!(
                "provider '{provider}' sent a completion that is not a JSON object: {reason}"
            )),
        })
    }

    /// Reads a non-streamed Anthropic Messages answer (at most
    /// [`MAX_ANSWER_BYTES`]) from a provider that speaks Messages natively,
    /// with `model` set to `client_model` and every other byte kept
    /// ([`modelyard_upstream::anthropic::rewrite_message`]).
    ///
    /// # Errors
    /// [`LlmCallError::Upstream`] (body, deadline, size),
    /// [`LlmCallError::InBand`] (a `{"type": "error"}` body),
    /// [`LlmCallError::Invalid`] (not a JSON object).
    pub async fn read_message(
        &mut self,
        upstream: UpstreamResponse,
        client_model: &str,
    ) -> Result<RewrittenCompletion, LlmCallError> {
        let status = upstream.status();
        let bytes = upstream
            .bytes(MAX_ANSWER_BYTES)
            .await
            .map_err(LlmCallError::Upstream)?;
        if let Some(busy) = self.busy.as_mut() {
            busy.observe_ttft(now_ms() - self.sent_at_ms);
        }
        let provider = self.target.provider.name();
        modelyard_upstream::anthropic::rewrite_message(&bytes, client_model).map_err(|error| {
            match error {
                CompletionError::InBand(error) => {
                    let (message, _, code) =
                        upstream_error_message(error.as_bytes(), MAX_ERROR_CHARS);
                    LlmCallError::InBand {
                        message: format!(
                            "provider '{provider}' answered HTTP {status} with an error: {message}"
                        ),
                        code,
                    }
                }
                CompletionError::NotJson(reason) => LlmCallError::Invalid(format!(
                    "provider '{provider}' sent a message that is not a JSON object: {reason}"
                )),
            }
        })
    }

    /// Reads a streamed answer into `acc` until `[DONE]`, calling
    /// `on_chunk` after every accepted chunk (one SSE event at most
    /// `max_event_bytes`). Returning (or dropping the future) drops the
    /// upstream response, which closes its connection.
    ///
    /// # Errors
    /// The read, deadline, malformed-data, in-band and early-end errors.
    pub async fn read_stream(
        &mut self,
        mut upstream: UpstreamResponse,
        max_event_bytes: usize,
        acc: &mut StreamAccumulator,
        on_chunk: &mut (dyn FnMut(&StreamAccumulator) + Send),
    ) -> Result<(), LlmCallError> {
        let provider = self.target.provider.name().to_owned();
        let client_model = self.client_model();
        let mut decoder = SseDecoder::with_max_event_bytes(max_event_bytes);
        loop {
            let chunk = match upstream.next_chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    return Err(LlmCallError::closed(&provider, decoder.has_partial_event()))
                }
                Err(err) => return Err(LlmCallError::Upstream(err)),
            };
            decoder.push(&chunk);
            loop {
                let event = match decoder.try_next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(too_large) => {
                        return Err(LlmCallError::event_too_large(&provider, too_large))
                    }
                };
                if event.data.as_ref() == b"[DONE]" {
                    return Ok(());
                }
                match acc.accept(&event.data, &client_model) {
                    Ok(ChunkKind::Forward(_)) | Ok(ChunkKind::UsageOnly(_)) => {}
                    Ok(ChunkKind::Error(error)) => {
                        return Err(LlmCallError::mid_stream(&provider, &error))
                    }
                    Err(reason) => return Err(LlmCallError::malformed(&provider, &reason)),
                }
                if self.first_token_at_ms.is_none() && acc.has_output() {
                    self.first_output(now_ms());
                }
                on_chunk(acc);
            }
        }
    }
}
