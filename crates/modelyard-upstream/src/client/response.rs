//! A provider's response, its body read chunk by chunk under the
//! provider's deadlines, or whole with the key scrubbed from it.

use std::time::Duration;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::{timeout_at, Instant};

use super::error::{error_chain, TimeoutPhase, UpstreamError};

/// A response from the provider whose body is read chunk by chunk under the
/// provider's deadlines. Dropping it closes the upstream connection, which
/// cancels the generation on servers that watch for it (llama.cpp does).
#[derive(Debug)]
pub struct UpstreamResponse {
    pub(super) provider: String,
    pub(super) status: u16,
    pub(super) content_type: String,
    pub(super) response: reqwest::Response,
    pub(super) first_chunk: Option<(Instant, TimeoutPhase, u64)>,
    pub(super) idle: Duration,
    pub(super) idle_ms: u64,
    pub(super) total_deadline: Instant,
    pub(super) total_ms: u64,
    /// The provider's key, to scrub from bodies read whole ([`Self::bytes`]).
    pub(super) secret: Option<SecretString>,
}

impl UpstreamResponse {
    /// HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `Content-Type` header, or "" when absent.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The `Retry-After` header, if the provider sent one.
    pub fn retry_after(&self) -> Option<&str> {
        self.response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
    }

    /// Whether the body is an SSE stream.
    pub fn is_event_stream(&self) -> bool {
        self.content_type.starts_with("text/event-stream")
    }

    /// The next body chunk; `Ok(None)` at the clean end of the body.
    ///
    /// # Errors
    /// [`UpstreamError::Timeout`] (first token, idle or total) or
    /// [`UpstreamError::Body`] when the connection breaks.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let (deadline, phase, limit_ms) = match self.first_chunk.take() {
            Some(first) => first,
            None => {
                let idle_deadline = Instant::now() + self.idle;
                if idle_deadline < self.total_deadline {
                    (idle_deadline, TimeoutPhase::Idle, self.idle_ms)
                } else {
                    (self.total_deadline, TimeoutPhase::Total, self.total_ms)
                }
            }
        };
        match timeout_at(deadline, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(err)) => Err(UpstreamError::Body {
                provider: self.provider.clone(),
                reason: error_chain(&err.without_url()),
            }),
            Err(_) => Err(UpstreamError::Timeout {
                provider: self.provider.clone(),
                phase,
                limit_ms,
            }),
        }
    }

    /// Reads the whole body (at most `max_bytes`) under the total deadline.
    ///
    /// # Errors
    /// As [`Self::next_chunk`], plus [`UpstreamError::InvalidResponse`] when
    /// the body exceeds `max_bytes`.
    /// An upstream that echoes the credential it received (some do, in
    /// error messages) never gets it through: the provider's key is replaced
    /// by `[REDACTED]` in the body.
    pub async fn bytes(self, max_bytes: usize) -> Result<Bytes, UpstreamError> {
        let secret = self.secret.clone();
        let body = self.read_all(max_bytes).await?;
        Ok(match secret {
            Some(secret) => scrub(body, secret.expose_secret()),
            None => body,
        })
    }

    async fn read_all(mut self, max_bytes: usize) -> Result<Bytes, UpstreamError> {
        self.first_chunk = Some((self.total_deadline, TimeoutPhase::Total, self.total_ms));
        self.idle = Duration::from_millis(self.total_ms);
        self.idle_ms = self.total_ms;
        let too_large = |provider: &str| UpstreamError::InvalidResponse {
            provider: provider.to_owned(),
            reason: format!("response body larger than {max_bytes} bytes"),
        };
        let mut first = match self.next_chunk().await? {
            Some(chunk) => chunk,
            None => return Ok(Bytes::new()),
        };
        if first.len() > max_bytes {
            return Err(too_large(&self.provider));
        }
        let Some(second) = self.next_chunk().await? else {
            return Ok(first);
        };
        if first.len().saturating_add(second.len()) > max_bytes {
            return Err(too_large(&self.provider));
        }
        let mut all = Vec::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        first.clear();
        while let Some(chunk) = self.next_chunk().await? {
            if all.len().saturating_add(chunk.len()) > max_bytes {
                return Err(too_large(&self.provider));
            }
            all.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(all))
    }
}

/// `body` with every occurrence of `secret` replaced by `[REDACTED]`.
fn scrub(body: Bytes, secret: &str) -> Bytes {
    let needle = secret.as_bytes();
    if needle.len() < 4 || !body.windows(needle.len()).any(|w| w == needle) {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest: &[u8] = &body;
    while let Some(i) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"[REDACTED]");
        rest = &rest[i + needle.len()..];
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}
