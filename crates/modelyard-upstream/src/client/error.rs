//! Failures talking to a provider, and which deadline expired.

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// `connect_ms`.
    Connect,
    /// `first_token_ms`.
    FirstToken,
    /// `idle_ms`.
    Idle,
    /// `total_ms`.
    Total,
    /// `probe_ms`.
    Probe,
}

impl TimeoutPhase {
    fn describe(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstToken => "first token",
            TimeoutPhase::Idle => "idle between chunks",
            TimeoutPhase::Total => "total",
            TimeoutPhase::Probe => "probe",
        }
    }
}

/// Failures talking to a provider. Messages name the provider and a
/// redacted URL (no query, no credentials).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The provider's configuration cannot produce a request.
    #[error("provider '{provider}': {reason}")]
    Config {
        /// Provider name.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// Could not connect or send the request.
    #[error("provider '{provider}' is unreachable at {url}: {reason}")]
    Unreachable {
        /// Provider name.
        provider: String,
        /// Redacted URL.
        url: String,
        /// Cause, without the URL.
        reason: String,
    },
    /// A deadline expired.
    #[error("provider '{provider}' timed out ({} timeout of {limit_ms} ms)", phase.describe())]
    Timeout {
        /// Provider name.
        provider: String,
        /// Which deadline.
        phase: TimeoutPhase,
        /// The limit, ms.
        limit_ms: u64,
    },
    /// The connection failed while reading the body.
    #[error("provider '{provider}' connection failed while reading the response: {reason}")]
    Body {
        /// Provider name.
        provider: String,
        /// Cause.
        reason: String,
    },
    /// The provider answered something the gateway cannot read.
    #[error("provider '{provider}' sent an invalid response: {reason}")]
    InvalidResponse {
        /// Provider name.
        provider: String,
        /// What was wrong.
        reason: String,
    },
    /// The provider answered with a non-success status (probes only; the
    /// gateway passes statuses through).
    #[error("provider '{provider}' answered HTTP {status} at {url}")]
    Status {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// Redacted URL.
        url: String,
    },
}

impl UpstreamError {
    /// Whether this is a timeout (HTTP 504 at the gateway) rather than a
    /// connection problem (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout { .. })
    }
}

/// `err` and its sources joined with ": ".
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
