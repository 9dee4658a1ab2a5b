//! `modelyard serve`: runs the server until a signal stops it.

use crate::cli::Cli;
use crate::{env, load_config};

pub(crate) async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let config = load_config(cli.config.as_deref())?;
    if config.providers.is_empty() {
        tracing::warn!("no providers configured; add [[providers]] to the config file");
    }
    let deadline = std::time::Duration::from_millis(config.server.shutdown_timeout_ms);
    let server = modelyard_server::start(config, &env).await?;
    tracing::info!(address = %server.local_addr(), "modelyard listening");
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        signals.recv().await;
        tracing::info!(
            timeout_ms = deadline.as_millis() as u64,
            "shutting down (a second signal exits at once)"
        );
        let _ = stop.send(true);
        // The server enforces the deadline; this thread is the backstop for
        // a runtime that cannot make progress (e.g. a stuck blocking task).
        std::thread::spawn(move || {
            std::thread::sleep(deadline + std::time::Duration::from_secs(2));
            eprintln!("modelyard: shutdown deadline passed; exiting");
            std::process::exit(1);
        });
        signals.recv().await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(130);
    });
    match server.wait().await {
        modelyard_server::ShutdownOutcome::Clean => Ok(()),
        modelyard_server::ShutdownOutcome::Incomplete => {
            // Exit now: tasks still blocked on a stream or the database
            // must not keep the process alive.
            tracing::error!("shutdown incomplete: exiting with work left behind");
            std::process::exit(1);
        }
    }
}

/// SIGTERM and Ctrl-C (SIGINT), listened to from creation on, so a second
/// signal right after the first is not missed.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = signal(SignalKind::terminate())
                .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
                .ok();
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.streams {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
