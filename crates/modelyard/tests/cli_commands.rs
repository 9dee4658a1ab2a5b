//! The client subcommands of the real binary against a `modelyard serve`
//! child process in front of the in-process mock: `conversations model |
//! history | watch | set-llm | compact`, `llms`, `sessions` and `usage`. Each
//! test asserts what a user sees (stdout, stderr, exit status; the raw JSON
//! with `--json`) and reads the effect back over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::{start_turn, Dir, Options, Server, LIMIT};
use modelyard_testkit::{eventually, MockUpstream};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// What one CLI run printed.
#[derive(Debug)]
struct Run {
    ok: bool,
    out: String,
    err: String,
}

/// `modelyard --server <server> <args>`, with no `MODELYARD_*` variable
/// from the test's environment.
fn command(server: &Server, args: &[&str]) -> Command {
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
    command
}

/// Runs the CLI to its end.
async fn cli(server: &Server, args: &[&str]) -> Run {
    let out = tokio::time::timeout(LIMIT, command(server, args).output())
        .await
        .unwrap_or_else(|_| panic!("modelyard {args:?} did not end within {LIMIT:?}"))
        .expect("run modelyard");
    Run {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the CLI; asserts it succeeded.
async fn cli_ok(server: &Server, args: &[&str]) -> Run {
    let run = cli(server, args).await;
    assert!(run.ok, "modelyard {args:?} failed: {run:#?}");
    run
}

/// A server whose default model is `mock/mock-model`, once `mock/echo` is
/// listed.
async fn start(name: &str) -> (Dir, MockUpstream, Server) {
    let dir = Dir::new(name);
    let mock = MockUpstream::start().await;
    let options = Options {
        extra: "[defaults]\nmodel = \"mock/mock-model\"\n".into(),
        ..Options::default()
    };
    let server = Server::start_with(&dir, &mock, &options).await;
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

/// `POST /v1/conversations` with `body`; the id.
async fn conversation(server: &Server, body: Value) -> String {
    let (status, c) = server
        .send(Method::POST, "/v1/conversations", Some(body))
        .await;
    assert_eq!(status, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

/// Runs a turn to its end; the turn.
async fn turn(server: &Server, conv: &str, content: &str, model: Option<&str>) -> Value {
    let id = start_turn(server, conv, content, model).await;
    let turn = server.wait_turn(conv, &id).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    turn
}

/// Waits until the call log holds `n` calls (it is written behind the answer).
async fn wait_calls(server: &Server, n: u64) {
    eventually(LIMIT, "the call log catches up", || async move {
        let usage = server.get("/v1/usage?groupBy=model").await;
        if usage["total"]["calls"].as_u64() == Some(n) {
            Ok(())
        } else {
            Err(usage)
        }
    })
    .await;
}

/// The persisted model selection of `conv`.
async fn selection(server: &Server, conv: &str) -> Value {
    server.get(&format!("/v1/conversations/{conv}/model")).await["model"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_model_gets_sets_and_clears_the_selection() {
    let (_dir, _mock, server) = start("cli-model").await;
    let conv = conversation(&server, json!({})).await;

    let run = cli_ok(&server, &["conversations", "model", "get", &conv]).await;
    assert_eq!(run.out, "(none)\n");

    let run = cli_ok(
        &server,
        &["conversations", "model", "set", &conv, "mock/echo"],
    )
    .await;
    assert_eq!(run.out, "mock/echo\n");
    assert_eq!(selection(&server, &conv).await, "mock/echo");
    let run = cli_ok(&server, &["conversations", "model", "get", &conv]).await;
    assert_eq!(run.out, "mock/echo\n");

    // Well-formed but not listed (yet): stored, marked unverified.
    let run = cli_ok(
        &server,
        &[
            "conversations",
            "model",
            "set",
            &conv,
            "mock/not-listed-yet",
        ],
    )
    .await;
    assert_eq!(
        run.out,
        "mock/not-listed-yet (not verified: it does not resolve now; each turn resolves it again)\n"
    );
    assert_eq!(selection(&server, &conv).await, "mock/not-listed-yet");

    // Malformed: refused, the selection stays.
    let run = cli(
        &server,
        &["conversations", "model", "set", &conv, "bad id!"],
    )
    .await;
    assert!(!run.ok, "{run:#?}");
    assert_eq!(run.out, "");
    assert!(
        run.err.contains("422") && run.err.contains("invalid model id"),
        "{run:#?}"
    );
    assert_eq!(selection(&server, &conv).await, "mock/not-listed-yet");

    // A bare id resolves to the provider that lists it.
    let run = cli_ok(&server, &["conversations", "model", "set", &conv, "echo"]).await;
    assert_eq!(run.out, "mock/echo\n");
    assert_eq!(selection(&server, &conv).await, "mock/echo");

    let run = cli_ok(&server, &["conversations", "model", "clear", &conv]).await;
    assert_eq!(run.out, "(none)\n");
    assert_eq!(selection(&server, &conv).await, Value::Null);
    let log = server.log(&conv).await;
    let last = log.last().unwrap();
    assert_eq!(last.event, "model.cleared", "{log:#?}");
    assert_eq!(last.data["previous"], "mock/echo", "{last:?}");
    assert_eq!(last.data["source"], "api", "{last:?}");

    let run = cli(&server, &["conversations", "model", "get", "no-such-id"]).await;
    assert!(!run.ok, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_history_lists_every_selection_and_every_turn() {
    let (_dir, _mock, server) = start("cli-history").await;
    let conv = conversation(&server, json!({})).await;
    cli_ok(
        &server,
        &["conversations", "model", "set", &conv, "mock/echo"],
    )
    .await;
    let first = turn(&server, &conv, "one", None).await;
    cli_ok(&server, &["conversations", "model", "clear", &conv]).await;
    let second = turn(&server, &conv, "two", Some("mock/mock-model")).await;

    let run = cli_ok(&server, &["conversations", "history", &conv]).await;
    let history = server
        .get(&format!("/v1/conversations/{conv}/model-history"))
        .await;
    let entries = history["data"].as_array().unwrap();
    let expected = [
        "selected mock/echo (was -, by api)".to_owned(),
        format!(
            "turn {} (chat) used mock/echo [conversation]",
            first["id"].as_str().unwrap()
        ),
        "cleared - (was mock/echo, by api)".to_owned(),
        "selected mock/mock-model (was -, by turnOverride)".to_owned(),
        format!(
            "turn {} (chat) used mock/mock-model [request]",
            second["id"].as_str().unwrap()
        ),
    ];
    assert_eq!(entries.len(), expected.len(), "{history}");
    let lines: Vec<&str> = run.out.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{}", run.out);
    for ((line, entry), rest) in lines.iter().zip(entries).zip(&expected) {
        // Seq right-aligned in five columns, then the time, then the change.
        let want = format!(
            "{:>5}  {}  {rest}",
            entry["seq"].as_i64().unwrap(),
            entry["at"].as_str().unwrap()
        );
        assert_eq!(*line, want, "{}", run.out);
    }
}

/// Lines of `reader`, sent on a channel as they come.
fn lines<R>(reader: R) -> mpsc::UnboundedReceiver<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads `rx` until a line satisfies `pred`; every line read, in order.
async fn read_until(
    rx: &mut mpsc::UnboundedReceiver<String>,
    what: &str,
    seen: &mut Vec<String>,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                let done = pred(&line);
                seen.push(line);
                if done {
                    return;
                }
            }
            Ok(None) => panic!("the output ended before {what}: {seen:#?}"),
            Err(_) => panic!("no {what} within {LIMIT:?}: {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_watch_replays_then_follows_a_turn_live() {
    let (_dir, _mock, server) = start("cli-watch").await;
    let conv = conversation(&server, json!({"model": "mock/echo"})).await;
    let mut child = command(&server, &["conversations", "watch", &conv])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelyard conversations watch");
    let mut out = lines(child.stdout.take().unwrap());
    let mut err = lines(child.stderr.take().unwrap());
    let (mut out_seen, mut err_seen) = (Vec::new(), Vec::new());

    // The replay: the log so far (the creation, with its model), one line
    // per event on stderr.
    read_until(&mut err, "the replayed creation", &mut err_seen, |l| {
        l == "[1] conversation.created"
    })
    .await;

    // Live: a turn started over HTTP streams its answer to stdout.
    let turn_id = start_turn(&server, &conv, "watch me now", None).await;
    read_until(&mut out, "the answer on stdout", &mut out_seen, |l| {
        l == "echo: watch me now"
    })
    .await;
    read_until(&mut err, "the turn's end", &mut err_seen, |l| {
        l.ends_with("] turn.completed")
    })
    .await;
    assert!(
        err_seen.contains(&format!("[turn {turn_id} · mock/echo · conversation]")),
        "{err_seen:#?}"
    );
    assert!(
        err_seen
            .iter()
            .any(|l| l.starts_with("[mock/echo · ") && l.ends_with(" completion tokens]")),
        "{err_seen:#?}"
    );

    // Still following: a selection made elsewhere shows up.
    cli_ok(
        &server,
        &["conversations", "model", "set", &conv, "mock/mock-model"],
    )
    .await;
    let seq = server.get(&format!("/v1/conversations/{conv}")).await["lastSeq"]
        .as_i64()
        .unwrap();
    read_until(&mut err, "the live selection", &mut err_seen, |l| {
        l == format!("[{seq}] model.selected")
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "watch runs until interrupted"
    );
    child.kill().await.unwrap();
    assert_eq!(
        out_seen,
        ["echo: watch me now"],
        "stdout holds only the text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_set_llm_sets_and_clears_the_default_and_per_operation_configs() {
    let (_dir, _mock, server) = start("cli-set-llm").await;
    let conv = conversation(&server, json!({})).await;
    let (status, chat) = server
        .send(
            Method::POST,
            "/v1/llms",
            Some(json!({"model": "mock/echo", "displayName": "Chat"})),
        )
        .await;
    assert_eq!(status, 201, "{chat}");
    let (status, titles) = server
        .send(
            Method::POST,
            "/v1/llms",
            Some(json!({"model": "mock/mock-model", "displayName": "Titles"})),
        )
        .await;
    assert_eq!(status, 201, "{titles}");
    let (chat, titles) = (chat["id"].as_str().unwrap(), titles["id"].as_str().unwrap());
    let path = format!("/v1/conversations/{conv}");

    // Created without a config: it names the server default, said as such.
    let default = server.get(&path).await["llmId"]
        .as_str()
        .expect("the server default's config")
        .to_owned();
    let run = cli_ok(&server, &["conversations", "show", &conv]).await;
    assert!(
        run.out.contains(&format!(
            "llm config   {default}  (the server default: mock/mock-model when created; \
             turns use the current one)\n"
        )),
        "{run:#?}"
    );

    let run = cli_ok(&server, &["conversations", "set-llm", &conv, chat]).await;
    assert_eq!(run.out, format!("llm config   {chat}\n"));
    assert_eq!(server.get(&path).await["llmId"], chat);
    let run = cli_ok(&server, &["conversations", "show", &conv]).await;
    assert!(
        run.out.contains(&format!("llm config   {chat}\n")),
        "a chosen config is only its id: {run:#?}"
    );

    let run = cli_ok(
        &server,
        &["conversations", "set-llm", &conv, "--op", "title", titles],
    )
    .await;
    assert_eq!(
        run.out,
        format!("llm config   {chat}\nllm[title]   {titles}\n")
    );
    let c = server.get(&path).await;
    assert_eq!(c["llmOverrides"], json!({"title": titles}), "{c}");

    // A turn now resolves from the conversation's config.
    let t = turn(&server, &conv, "configured", None).await;
    assert_eq!(t["modelId"], "mock/echo", "{t}");
    assert_eq!(t["resolvedFrom"], "conversationConfig", "{t}");
    assert_eq!(t["llmId"], chat, "{t}");

    let run = cli(
        &server,
        &["conversations", "set-llm", &conv, "no-such-config"],
    )
    .await;
    assert!(!run.ok, "{run:#?}");
    assert!(
        run.err.contains("no LLM config with id \"no-such-config\""),
        "{run:#?}"
    );
    assert_eq!(server.get(&path).await["llmId"], chat);

    let run = cli_ok(&server, &["conversations", "set-llm", &conv, "none"]).await;
    assert_eq!(
        run.out,
        format!("llm config   (none)\nllm[title]   {titles}\n")
    );
    let run = cli_ok(
        &server,
        &["conversations", "set-llm", &conv, "--op", "title", "none"],
    )
    .await;
    assert_eq!(run.out, "llm config   (none)\n");
    let c = server.get(&path).await;
    assert_eq!(c["llmId"], Value::Null, "{c}");
    assert_eq!(c["llmOverrides"], json!({}), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_compact_prints_the_summary_and_later_turns_send_it() {
    let (_dir, mock, server) = start("cli-compact").await;
    let conv = conversation(&server, json!({"model": "mock/echo"})).await;
    turn(&server, &conv, "hello there", None).await;
    turn(&server, &conv, "second", None).await;
    turn(&server, &conv, "third", None).await;

    // With a model for this call only: the mock echoes the transcript.
    let run = cli_ok(
        &server,
        &[
            "conversations",
            "compact",
            &conv,
            "--keep-last",
            "2",
            "-m",
            "mock/mock-model",
        ],
    )
    .await;
    let log = server.log(&conv).await;
    let compacted = log
        .iter()
        .find(|e| e.event == "conversation.compacted")
        .unwrap_or_else(|| panic!("{log:#?}"));
    let summary = compacted.data["summary"].as_str().unwrap();
    assert_eq!(run.out, format!("{summary}\n"));
    assert!(
        summary.contains("user: hello there") && summary.contains("user: second"),
        "{summary}"
    );
    let status = run.err.trim_end();
    let prefix = format!(
        "covers messages through seq {}; model mock/mock-model [request], session ",
        compacted.data["upToSeq"]
    );
    let session = status
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("stderr: {status:?}, expected {prefix:?}…"));
    let recorded = server
        .get_recorded(&format!("/v1/llm-sessions/{session}"))
        .await;
    assert_eq!(recorded["operation"], "compaction", "{recorded}");
    assert_eq!(recorded["conversationId"], conv.as_str(), "{recorded}");
    // Not persisted: the conversation keeps its model.
    assert_eq!(selection(&server, &conv).await, "mock/echo");

    // The next turn sends the summary instead of the messages it covers.
    turn(&server, &conv, "fourth", None).await;
    let request = mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .last()
        .unwrap();
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let contents: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        contents.iter().any(|c| c.contains(summary)),
        "{contents:#?}"
    );
    assert!(
        !contents.iter().any(|c| c == "hello there"),
        "{contents:#?}"
    );
    assert_eq!(contents.last().unwrap(), "fourth", "{contents:#?}");

    // Nothing left to compact: the server's reason.
    let run = cli(
        &server,
        &["conversations", "compact", &conv, "--keep-last", "6"],
    )
    .await;
    assert!(!run.ok, "{run:#?}");
    assert!(run.err.contains("nothing to compact"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llms_create_list_show_edit_copy_and_remove_configs() {
    let (_dir, _mock, server) = start("cli-llms").await;
    // A server with a default model lists it as a system default config.
    let run = cli_ok(&server, &["llms", "ls"]).await;
    let lines: Vec<&str> = run.out.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.out);
    assert!(
        lines[1].contains("system:defaults.model v1")
            && lines[1].contains("mock/mock-model (server default)"),
        "{}",
        run.out
    );
    // Columns line up under their headers.
    assert_eq!(
        lines[0].find("MODEL"),
        lines[1].find("mock/mock-model"),
        "{}",
        run.out
    );

    let run = cli_ok(
        &server,
        &[
            "llms",
            "create",
            "-m",
            "mock/echo",
            "--name",
            "Terse",
            "-s",
            "Be terse.",
            "--temperature",
            "0.3",
            "--max-tokens",
            "64",
        ],
    )
    .await;
    let id = run.out.trim().to_owned();
    let stored = server.get(&format!("/v1/llms/{id}")).await;
    assert_eq!(stored["model"], "mock/echo", "{stored}");
    assert_eq!(stored["displayName"], "Terse", "{stored}");
    assert_eq!(stored["systemPrompt"], "Be terse.", "{stored}");
    assert_eq!(stored["providerOptions"]["temperature"], 0.3, "{stored}");
    assert_eq!(stored["providerOptions"]["maxTokens"], 64, "{stored}");

    let run = cli_ok(&server, &["llms", "ls"]).await;
    let lines: Vec<&str> = run.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.out);
    assert!(lines[0].starts_with("ID "), "{}", run.out);
    // Newest first: the new config, then the server default.
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            id.as_str(),
            "user",
            "mock/echo",
            "Terse",
            "temperature=0.3",
            "max_tokens=64"
        ],
        "{}",
        run.out
    );

    let run = cli_ok(&server, &["llms", "show", &id]).await;
    for line in [
        format!("LLM config {id}"),
        "name      Terse".into(),
        "source    user".into(),
        "model     mock/echo".into(),
        "options   temperature=0.3 max_tokens=64".into(),
        "system prompt:".into(),
        "Be terse.".into(),
    ] {
        assert!(
            run.out.lines().any(|l| l == line),
            "{line:?} in {}",
            run.out
        );
    }
    let run = cli_ok(&server, &["llms", "show", &id, "--json"]).await;
    let shown: Value = serde_json::from_str(&run.out).unwrap();
    assert_eq!(shown, stored);

    let run = cli_ok(
        &server,
        &[
            "llms",
            "edit",
            &id,
            "--temperature",
            "0.7",
            "--name",
            "Terse 2",
        ],
    )
    .await;
    assert!(
        run.out.lines().any(|l| l == "name      Terse 2"),
        "{}",
        run.out
    );
    assert!(
        run.out
            .lines()
            .any(|l| l == "options   temperature=0.7 max_tokens=64"),
        "{}",
        run.out
    );
    let stored = server.get(&format!("/v1/llms/{id}")).await;
    assert_eq!(stored["displayName"], "Terse 2", "{stored}");
    assert_eq!(stored["providerOptions"]["temperature"], 0.7, "{stored}");
    let run = cli(&server, &["llms", "edit", &id]).await;
    assert!(!run.ok, "{run:#?}");
    assert!(run.err.contains("nothing to change"), "{run:#?}");
    // The edit made version 2; version 1 is still readable.
    let run = cli_ok(&server, &["llms", "versions", &id]).await;
    let lines: Vec<&str> = run.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.out);
    assert!(lines[0].starts_with("VERSION "), "{}", run.out);
    assert_eq!(lines[1].split_whitespace().next(), Some("2"), "{}", run.out);
    assert!(lines[1].contains("temperature=0.7"), "{}", run.out);
    assert_eq!(lines[2].split_whitespace().next(), Some("1"), "{}", run.out);
    assert!(!lines[2].contains("temperature=0.7"), "{}", run.out);
    let run = cli_ok(&server, &["llms", "show", &id, "--version", "1"]).await;
    assert!(run.out.lines().any(|l| l == "version   1"), "{}", run.out);
    assert!(
        run.out.lines().any(|l| l == "name      Terse"),
        "version 1 keeps its name: {}",
        run.out
    );
    let run = cli(&server, &["llms", "show", &id, "--version", "9"]).await;
    assert!(!run.ok && run.err.contains("404"), "{run:#?}");

    let run = cli_ok(&server, &["llms", "copy", &id]).await;
    let copy = run.out.trim().to_owned();
    assert_ne!(copy, id);
    let copied = server.get(&format!("/v1/llms/{copy}")).await;
    assert_eq!(copied["source"], "user", "{copied}");
    assert_eq!(copied["model"], "mock/echo", "{copied}");
    assert_eq!(copied["systemPrompt"], "Be terse.", "{copied}");

    // Refused while a conversation uses it; removed once none does.
    let conv = conversation(&server, json!({"llmId": copy})).await;
    let run = cli(&server, &["llms", "rm", &copy]).await;
    assert!(!run.ok, "{run:#?}");
    assert!(
        run.err.contains("409") && run.err.contains(&conv),
        "{run:#?}"
    );
    cli_ok(&server, &["conversations", "set-llm", &conv, "none"]).await;
    let run = cli_ok(&server, &["llms", "rm", &copy]).await;
    assert_eq!(run.out, "");
    let (status, _) = server
        .send(Method::GET, &format!("/v1/llms/{copy}"), None)
        .await;
    assert_eq!(status, 404);
    let run = cli(&server, &["llms", "show", &copy]).await;
    assert!(!run.ok, "{run:#?}");
    assert!(run.err.contains("404"), "{run:#?}");
    let run = cli_ok(&server, &["llms", "ls"]).await;
    assert_eq!(run.out.lines().count(), 3, "{}", run.out);
    assert!(!run.out.contains(&copy), "{}", run.out);
}

/// The row of `id` in a table, split on whitespace.
fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{table}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_lists_filters_and_shows_a_turns_session() {
    let (_dir, _mock, server) = start("cli-sessions").await;
    let run = cli_ok(&server, &["sessions"]).await;
    assert_eq!(run.out, "no LLM sessions recorded yet\n");

    let conv = conversation(&server, json!({"model": "mock/echo"})).await;
    let t = turn(&server, &conv, "count my tokens", None).await;
    let other = conversation(&server, json!({})).await;
    turn(&server, &other, "another one", None).await;
    wait_calls(&server, 2).await;
    let listed = server
        .get(&format!("/v1/llm-sessions?conversationId={conv}"))
        .await;
    let session = listed["data"][0].clone();
    let id = session["id"].as_str().unwrap();
    assert_eq!(session["turnId"], t["id"], "{session}");

    let run = cli_ok(&server, &["sessions"]).await;
    assert!(run.out.starts_with("CREATED "), "{}", run.out);
    assert_eq!(run.out.lines().count(), 3, "{}", run.out);
    let fields = row(&run.out, id);
    let ms = format!("{}ms", session["durationMs"]);
    assert_eq!(
        fields,
        [
            session["createdAt"].as_str().unwrap(),
            "chat",
            "mock/echo",
            "1",
            &session["usage"]["promptTokens"].to_string(),
            &session["usage"]["completionTokens"].to_string(),
            &ms,
            "ok",
            id,
        ],
        "{}",
        run.out
    );

    // Filters: by conversation, by operation, and a limit.
    let run = cli_ok(&server, &["sessions", "ls", "-c", &conv]).await;
    assert_eq!(run.out.lines().count(), 2, "{}", run.out);
    row(&run.out, id);
    let run = cli_ok(&server, &["sessions", "ls", "--op", "title"]).await;
    assert_eq!(run.out, "no LLM sessions recorded yet\n");
    let run = cli_ok(&server, &["sessions", "-n", "1"]).await;
    assert!(
        run.out
            .ends_with("(older sessions exist: raise -n to see them)\n"),
        "{}",
        run.out
    );

    let run = cli_ok(&server, &["sessions", "show", id]).await;
    let detail = server.get(&format!("/v1/llm-sessions/{id}")).await;
    let call = &detail["calls"][0];
    let lines: Vec<&str> = run.out.lines().collect();
    assert_eq!(lines[0], format!("session    {id}"), "{}", run.out);
    assert_eq!(lines[1], "operation  chat", "{}", run.out);
    assert_eq!(
        lines[2],
        format!("conversation {conv} (turn {})", t["id"].as_str().unwrap()),
        "{}",
        run.out
    );
    assert_eq!(lines[3], "status     ok", "{}", run.out);
    let call_line = lines
        .iter()
        .find(|l| l.trim_start().starts_with("call "))
        .unwrap_or_else(|| panic!("{}", run.out));
    let words: Vec<&str> = call_line.split_whitespace().collect();
    assert_eq!(words[1], call["id"].as_str().unwrap(), "{call_line}");
    assert_eq!(words[3], "mock/echo", "{call_line}");
    assert!(
        call_line.contains(&format!(
            "{} in / {} out",
            call["usage"]["promptTokens"], call["usage"]["completionTokens"]
        )),
        "{call_line}"
    );
    assert!(call_line.ends_with("ok"), "{call_line}");
    // The settings the session ran with: the model, and which step of the
    // turn-model rule chose it.
    let config_line = lines
        .iter()
        .find(|l| l.starts_with("config "))
        .unwrap_or_else(|| panic!("no config line in\n{}", run.out));
    assert!(
        config_line.starts_with("config     mock/echo")
            && config_line.contains(&format!(
                "chosen by {}",
                detail["config"]["resolvedFrom"].as_str().unwrap()
            )),
        "{config_line} for {}",
        detail["config"]
    );

    let run = cli_ok(&server, &["sessions", "show", id, "--json"]).await;
    let shown: Value = serde_json::from_str(&run.out).unwrap();
    assert_eq!(shown, detail);
    let run = cli(&server, &["sessions", "show", "no-such-session"]).await;
    assert!(!run.ok, "{run:#?}");
    assert!(run.err.contains("404"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_totals_tokens_per_group() {
    let (_dir, _mock, server) = start("cli-usage").await;
    let run = cli_ok(&server, &["usage"]).await;
    assert_eq!(run.out, "no calls in this range\n");

    let conv = conversation(&server, json!({"model": "mock/echo"})).await;
    turn(&server, &conv, "one two three", None).await;
    turn(&server, &conv, "four five", None).await;
    turn(&server, &conv, "six", Some("mock/mock-model")).await;
    wait_calls(&server, 3).await;

    let run = cli_ok(&server, &["usage"]).await;
    let usage = server.get("/v1/usage?groupBy=model").await;
    let lines: Vec<&str> = run.out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "MODEL",
            "CALLS",
            "PROMPT",
            "COMPLETION",
            "REASONING",
            "CACHED",
            "TOTAL",
            "COST"
        ]
    );
    let expect_row = |key: &str, r: &Value| {
        vec![
            key.to_owned(),
            r["calls"].to_string(),
            r["promptTokens"].to_string(),
            r["completionTokens"].to_string(),
            r["reasoningTokens"].to_string(),
            r["cachedPromptTokens"].to_string(),
            r["totalTokens"].to_string(),
            "$0.000000".to_owned(),
        ]
    };
    let data = usage["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{usage}");
    assert_eq!(lines.len(), 4, "{}", run.out);
    for (line, r) in lines[1..3].iter().zip(data) {
        let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        assert_eq!(
            fields,
            expect_row(r["key"].as_str().unwrap(), r),
            "{}",
            run.out
        );
    }
    let total: Vec<String> = lines[3].split_whitespace().map(str::to_owned).collect();
    assert_eq!(total, expect_row("TOTAL", &usage["total"]), "{}", run.out);
    assert_eq!(usage["total"]["calls"], 3);
    let echo = data.iter().find(|r| r["key"] == "mock/echo").unwrap();
    assert_eq!(echo["calls"], 2, "{usage}");

    // --json is the API's answer as is.
    let run = cli_ok(&server, &["usage", "--by", "operation", "--json"]).await;
    let shown: Value = serde_json::from_str(&run.out).unwrap();
    assert_eq!(shown, server.get("/v1/usage?groupBy=operation").await);
    assert_eq!(shown["data"][0]["key"], "chat", "{shown}");
    assert_eq!(shown["data"][0]["calls"], 3, "{shown}");

    let run = cli_ok(&server, &["usage", "--by", "day"]).await;
    let lines: Vec<&str> = run.out.lines().collect();
    assert!(lines[0].starts_with("DAY "), "{}", run.out);
    assert_eq!(lines.len(), 3, "one day and the total: {}", run.out);

    // A range with no calls; a malformed bound is the server's 4xx.
    let run = cli_ok(
        &server,
        &["usage", "--from", "2000-01-01", "--to", "2000-01-02"],
    )
    .await;
    assert_eq!(run.out, "no calls in this range\n");
    let run = cli(&server, &["usage", "--from", "yesterday"]).await;
    assert!(!run.ok, "{run:#?}");
}
