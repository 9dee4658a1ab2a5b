//! `modelyard conversations arena`, `conversations pick` and `arena stats`
//! of the real binary against a `modelyard serve` child process in front of
//! the in-process mock: the run prints every answer under its header and
//! how to pick; the pick prints the chosen answer; the stats count it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::{Dir, Options, Server, LIMIT};
use modelyard_testkit::{eventually, MockUpstream};
use serde_json::Value;
use tokio::process::Command;

/// What one CLI run printed.
#[derive(Debug)]
struct Run {
    ok: bool,
    out: String,
    err: String,
}

/// Runs `modelyard --server <server> <args>` to its end, with no
/// `MODELYARD_*` variable from the test's environment.
async fn cli(server: &Server, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_modelyard"));
    for (key, _) in std::env::vars() {
        if key.starts_with("MODELYARD_") {
            command.env_remove(key);
        }
    }
    command
        .arg("--server")
        .arg(&server.base_url)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("modelyard {args:?} did not end within {LIMIT:?}"))
        .expect("run modelyard");
    Run {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A server in front of the mock, once `mock/echo` is listed.
async fn start(name: &str) -> (Dir, MockUpstream, Server) {
    let dir = Dir::new(name);
    let mock = MockUpstream::start().await;
    let server = Server::start_with(&dir, &mock, &Options::default()).await;
    eventually(LIMIT, "mock/echo listed", || async {
        let list = server.get("/v1/models").await;
        let listed = list["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == "mock/echo"));
        if listed {
            Ok(())
        } else {
            Err(list)
        }
    })
    .await;
    (dir, mock, server)
}

#[tokio::test]
async fn a_conversation_arena_is_run_picked_and_counted_from_the_cli() {
    let (_dir, _mock, server) = start("cli-conv-arena").await;
    let conv = common::create_conversation(&server, "mock/echo").await;
    let run = cli(
        &server,
        &[
            "conversations",
            "arena",
            &conv,
            "-m",
            "mock/echo",
            "-m",
            "mock/mock-model",
            "which",
            "one",
        ],
    )
    .await;
    assert!(run.ok, "{run:#?}");
    for model in ["mock/echo", "mock/mock-model"] {
        assert!(
            run.out
                .contains(&format!("== {model} ==\necho: which one\n")),
            "{run:#?}"
        );
        assert!(
            run.err
                .lines()
                .any(|l| l.starts_with(&format!("{model}: 2 prompt + 3 completion tokens"))),
            "{run:#?}"
        );
    }
    let hint = run
        .err
        .lines()
        .find(|l| l.starts_with("run "))
        .unwrap_or_else(|| panic!("the run id: {run:#?}"));
    let run_id = hint["run ".len()..].split(':').next().unwrap().to_owned();
    assert!(
        hint.contains(&format!(
            "modelyard conversations pick {conv} {run_id} <model>"
        )),
        "{hint}"
    );

    // `show` says what the conversation waits for.
    let shown = cli(&server, &["conversations", "show", &conv]).await;
    assert!(shown.ok, "{shown:#?}");
    assert!(
        shown
            .out
            .starts_with(&format!("conversation {conv}  (awaiting_pick)\n")),
        "{shown:#?}"
    );
    assert!(
        shown.out.contains(&format!(
            "arena run    {run_id} waits for a pick: modelyard conversations pick {conv} {run_id} <model>\n"
        )),
        "{shown:#?}"
    );

    // While the pick is pending, a chat in the conversation is refused.
    let refused = cli(&server, &["chat", "-c", &conv, "next"]).await;
    assert!(!refused.ok, "{refused:#?}");
    assert!(refused.err.contains(&run_id), "names the run: {refused:#?}");

    let picked = cli(
        &server,
        &["conversations", "pick", &conv, &run_id, "mock/mock-model"],
    )
    .await;
    assert!(picked.ok, "{picked:#?}");
    assert_eq!(picked.out, "echo: which one\n", "{picked:#?}");
    assert!(picked.err.contains("picked mock/mock-model"), "{picked:#?}");
    let shown = cli(&server, &["conversations", "show", &conv]).await;
    assert!(
        shown.out.contains("(idle)") && !shown.out.contains("arena run"),
        "{shown:#?}"
    );
    // Twice: the server's 409.
    let again = cli(
        &server,
        &["conversations", "pick", &conv, &run_id, "mock/echo"],
    )
    .await;
    assert!(!again.ok && again.err.contains("409"), "{again:#?}");

    let stats = cli(&server, &["arena", "stats"]).await;
    assert!(stats.ok, "{stats:#?}");
    let lines: Vec<&str> = stats.out.lines().collect();
    assert_eq!(lines.len(), 3, "{stats:#?}");
    assert!(lines[0].starts_with("MODEL"), "{stats:#?}");
    assert!(
        lines[1].starts_with("mock/mock-model") && lines[1].ends_with("100.0%"),
        "{stats:#?}"
    );
    assert!(
        lines[2].starts_with("mock/echo") && lines[2].ends_with("0.0%"),
        "{stats:#?}"
    );
    let json = cli(&server, &["arena", "stats", "--json"]).await;
    assert!(json.ok, "{json:#?}");
    let value: Value = serde_json::from_str(&json.out).unwrap();
    assert_eq!(value["models"][0]["wins"], 1, "{value}");
}
