//! A started server: its addresses and its shutdown.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every open request ended, running turns were closed and the call log
    /// was drained.
    Clean,
    /// `server.shutdown_timeout_ms` passed first (or the server task
    /// failed): some of that work was abandoned.
    Incomplete,
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    pub(super) addr: SocketAddr,
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) shutdown: tokio::sync::watch::Sender<bool>,
    pub(super) task: JoinHandle<ShutdownOutcome>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's bound address (`[telemetry] metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, ends events streams and running turns (closed
    /// `interrupted`), lets open requests finish, flushes the call log —
    /// within `server.shutdown_timeout_ms`.
    pub async fn shutdown(self) -> ShutdownOutcome {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] or a
    /// fatal error).
    pub async fn wait(self) -> ShutdownOutcome {
        self.task.await.unwrap_or(ShutdownOutcome::Incomplete)
    }

    /// A handle that triggers shutdown from elsewhere (a signal handler).
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}
