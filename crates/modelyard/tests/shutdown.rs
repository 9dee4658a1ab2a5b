//! The shutdown deadline (`server.shutdown_timeout_ms`) of the built binary:
//! a proxied stream that never ends does not keep the process alive past
//! the deadline, and a second signal exits at once.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Dir, Options, Server};
use modelyard_testkit::{eventually, MockUpstream};
use serde_json::json;
use tokio::time::Instant;

fn signal(server: &Server, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(server.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Starts the binary with `shutdown_timeout_ms` and opens a streamed chat
/// completion on `mock/hang` (no answer, ever); returns once the mock holds it.
async fn server_with_a_hanging_stream(
    dir: &Dir,
    mock: &MockUpstream,
    shutdown_timeout_ms: u64,
) -> (Server, tokio::task::JoinHandle<()>) {
    let options = Options {
        server: format!("shutdown_timeout_ms = {shutdown_timeout_ms}\n"),
        ..Options::default()
    };
    let server = Server::start_with(dir, mock, &options).await;
    let request = server
        .http
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"model": "mock/hang", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}));
    let client = tokio::spawn(async move {
        let _ = request.send().await;
    });
    eventually(common::LIMIT, "the request reached the mock", || {
        std::future::ready(mock.in_flight() > 0)
    })
    .await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_stream_does_not_outlive_the_shutdown_deadline() {
    let mock = MockUpstream::start().await;
    let dir = Dir::new("deadline");
    let (mut server, client) = server_with_a_hanging_stream(&dir, &mock, 1_000).await;

    let signalled = Instant::now();
    signal(&server, "TERM");
    let exit = server.wait_exit().await;
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM, deadline 1 s"
    );
    assert!(
        took >= Duration::from_millis(900),
        "waited for the stream: {took:?}"
    );
    // Work was left behind: not a clean exit.
    assert!(!exit.success(), "{exit}");
    client.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mock = MockUpstream::start().await;
    let dir = Dir::new("second-signal");
    let (mut server, client) = server_with_a_hanging_stream(&dir, &mock, 60_000).await;

    signal(&server, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still waiting for the stream"
    );
    let signalled = Instant::now();
    signal(&server, "INT");
    let exit = server.wait_exit().await;
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exited {:?} after the second signal",
        signalled.elapsed()
    );
    assert!(!exit.success(), "{exit}");
    client.abort();
}
