//! `modelyard arena` of the real binary against a `modelyard serve` child
//! process in front of the in-process mock: the streamed run prints every
//! model's answer under its header and a summary line per model; `--json`
//! prints the non-streamed answer; a failing model exits 1 without hiding
//! the other's answer; `--columns` prints the answers side by side.

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
    cli_env(server, &[], args).await
}

/// [`cli`] with `env` set (and `COLUMNS` only when `env` sets it).
async fn cli_env(server: &Server, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_modelyard"));
    for (key, _) in std::env::vars() {
        if key.starts_with("MODELYARD_") || key == "COLUMNS" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
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
async fn arena_prints_each_answer_under_its_header_and_a_summary() {
    let (_dir, _mock, server) = start("cli-arena").await;
    let run = cli(
        &server,
        &[
            "arena",
            "-m",
            "mock/echo",
            "-m",
            "mock/mock-model",
            "hello",
            "arena",
        ],
    )
    .await;
    assert!(run.ok, "{run:#?}");
    for model in ["mock/echo", "mock/mock-model"] {
        assert!(
            run.out
                .contains(&format!("== {model} ==\necho: hello arena\n")),
            "{run:#?}"
        );
        assert!(
            run.err.lines().any(|l| l.starts_with(&format!(
                "{model}: 2 prompt + 3 completion tokens · ttft "
            ))),
            "{run:#?}"
        );
    }

    // --json: the non-streamed answer.
    let run = cli(
        &server,
        &[
            "arena",
            "--json",
            "-m",
            "mock/echo",
            "-m",
            "mock/mock-model",
            "hi",
        ],
    )
    .await;
    assert!(run.ok, "{run:#?}");
    let value: Value = serde_json::from_str(&run.out).unwrap();
    let results = value["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{value}");
    assert_eq!(results[0]["model"], "mock/echo");
    assert_eq!(results[1]["model"], "mock/mock-model");
    assert!(results.iter().all(|r| r["text"] == "echo: hi"), "{value}");

    // A failing model: its header says so, the other still answers, exit 1.
    let run = cli(
        &server,
        &["arena", "-m", "mock/status:500", "-m", "mock/echo", "still"],
    )
    .await;
    assert!(!run.ok, "{run:#?}");
    assert!(
        run.out.contains("== mock/status:500 ==\n(failed: "),
        "{run:#?}"
    );
    assert!(
        run.out.contains("== mock/echo ==\necho: still\n"),
        "{run:#?}"
    );

    // One model only: the server's 422, exit 1.
    let run = cli(&server, &["arena", "-m", "mock/echo", "x"]).await;
    assert!(!run.ok, "{run:#?}");
    assert!(run.err.contains("422"), "{run:#?}");
}

#[tokio::test]
async fn arena_columns_put_the_answers_side_by_side() {
    let (_dir, _mock, server) = start("cli-arena-columns").await;
    let run = cli_env(
        &server,
        &[("COLUMNS", "90")],
        &[
            "arena",
            "--columns",
            "-m",
            "mock/echo",
            "-m",
            "mock/status:500",
            "side by side",
        ],
    )
    .await;
    assert!(!run.ok, "a model failed: {run:#?}");
    // 90 columns: (90 - 3) / 2 = 43 chars per column, " │ " between.
    let lines: Vec<&str> = run.out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("{:<43} │ mock/status:500", "mock/echo").as_str()),
        "{run:#?}"
    );
    assert_eq!(
        lines.get(1).copied(),
        Some(format!("{0} │ {0}", "─".repeat(43)).as_str())
    );
    let body = lines.get(2).copied().unwrap_or_default();
    assert!(
        body.starts_with(&format!("{:<43} │ (failed: ", "echo: side by side")),
        "{run:#?}"
    );
    assert!(
        lines.contains(&format!("{:<43} │ failed", "3 + 4 tokens").as_str()),
        "{run:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("TTFT ") && l.contains(" ms")),
        "{run:#?}"
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 90), "{run:#?}");
    assert!(!run.out.contains("== mock/echo =="), "{run:#?}");

    // --no-columns wins over a wide COLUMNS; both flags at once are refused.
    let run = cli_env(
        &server,
        &[("COLUMNS", "200")],
        &[
            "arena",
            "--no-columns",
            "-m",
            "mock/echo",
            "-m",
            "mock/mock-model",
            "x",
        ],
    )
    .await;
    assert!(run.ok, "{run:#?}");
    assert!(run.out.contains("== mock/echo ==\necho: x\n"), "{run:#?}");
    let run = cli(
        &server,
        &[
            "arena",
            "--columns",
            "--no-columns",
            "-m",
            "mock/echo",
            "-m",
            "mock/mock-model",
            "x",
        ],
    )
    .await;
    assert!(!run.ok, "{run:#?}");
    assert!(run.err.contains("cannot be used with"), "{run:#?}");
}
