//! Browser tests of the arena in the web UI (`ui/arena.js`, docs/ui.md
//! "Arena"): the `#/arena` page streams one column per model, a failing
//! model shows its error beside the others, Stop ends the feed; and — with
//! the pick endpoints (`POST /v1/arena/{runId}/pick`, `GET
//! /v1/arena/stats`, the conversation arena) — "Prefer", the win counts and a
//! conversation's "Compare models" → "Use this answer". The tests named
//! `arena_pick_*` need those endpoints.
//!
//! Headless Chromium through chromedriver ([`common::webdriver`]) in front
//! of the real server and its in-process mock, as in `tests/ui.rs`. Needs
//! `MODELYARD_TEST_CHROMEDRIVER` (and usually `MODELYARD_TEST_CHROMIUM`);
//! without it every test here is skipped (a line on stderr says so).
//! Screenshots go to `target/ui-screenshots/arena-<test>-<step>.png`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::conv::{create, messages, send};
use common::ui_page::{browser_paths, tid, UiPage, POLL, WAIT};
use common::TestServer;
use serde_json::{json, Value};
use tokio::time::Instant;

/// The models the `mock` provider lists here.
const LISTED: &[&str] = &["echo", "mock-model", "slow:40", "slow:60", "status:400"];

/// A server whose `mock` provider lists [`LISTED`], once they are listed.
async fn arena_server() -> TestServer {
    let server = TestServer::builder()
        .listed(LISTED)
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n")
        .start()
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let list = server.get_json("/v1/models").await;
        let listed = list["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == "mock/status:400"));
        if listed {
            return server;
        }
        assert!(Instant::now() < deadline, "models not listed: {list}");
        tokio::time::sleep(POLL).await;
    }
}

/// The arena's own helpers on the page.
trait ArenaPage {
    /// Checks the model `id` in the chooser `chooser` (a testid).
    async fn choose(&self, chooser: &str, id: &str);
    /// Every arena column on the page (see [`COLUMNS`]).
    async fn columns(&self) -> Vec<Value>;
    /// Waits until every column has left `waiting` / `streaming`.
    async fn wait_finished(&self, n: usize) -> Vec<Value>;
    /// Waits until `n` columns finished and the run ended: every completed
    /// column offers `button` (the pick is offered at `arena.done`, which
    /// may come after the last column's own `arena.completed`).
    async fn wait_pickable(&self, n: usize, button: &str) -> Vec<Value>;
}

impl ArenaPage for UiPage {
    async fn choose(&self, chooser: &str, id: &str) {
        self.click(&format!(
            "{} [data-testid=\"arena-model-option\"][data-model-id=\"{id}\"] input",
            tid(chooser)
        ))
        .await;
    }

    async fn columns(&self) -> Vec<Value> {
        let v = self.b.execute(COLUMNS, vec![]).await.unwrap_or(Value::Null);
        v.as_array().cloned().unwrap_or_default()
    }

    async fn wait_finished(&self, n: usize) -> Vec<Value> {
        let v = self
            .wait_js(&format!("{n} finished columns"), COLUMNS, vec![], |v| {
                v.as_array().is_some_and(|c| {
                    c.len() == n
                        && c.iter()
                            .all(|c| c["state"] == "completed" || c["state"] == "failed")
                })
            })
            .await;
        v.as_array().cloned().unwrap()
    }

    async fn wait_pickable(&self, n: usize, button: &str) -> Vec<Value> {
        let v = self
            .wait_js(
                &format!("{n} columns offering {button}"),
                COLUMNS,
                vec![],
                |v| {
                    v.as_array().is_some_and(|c| {
                        c.len() == n
                            && c.iter().all(|c| match c["state"].as_str() {
                                Some("completed") => c["buttons"] == json!([button]),
                                Some("failed") => true,
                                _ => false,
                            })
                    })
                },
            )
            .await;
        v.as_array().cloned().unwrap()
    }
}

/// The columns: model, state, text, error, the token / TTFT / total badges,
/// whether picked, and the testids of their buttons.
const COLUMNS: &str = r#"
    const t = (c, id) => { const e = c.querySelector('[data-testid="' + id + '"]');
                           return e && !e.closest('[hidden]') ? e.textContent.trim() : null; };
    return [...document.querySelectorAll('[data-testid="arena-column"]')].map(c => ({
      model: c.dataset.model, state: c.dataset.state, badge: t(c, 'model-badge'),
      text: t(c, 'arena-text'), error: t(c, 'arena-error'), tokens: t(c, 'token-badge'),
      ttft: t(c, 'arena-ttft'), total: t(c, 'arena-total'), picked: c.dataset.picked === 'true',
      buttons: [...c.querySelectorAll('button')].map(b => b.dataset.testid),
    }));
"#;

/// `n` distinct words.
fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts a finished column: its text, `prompt + completion tokens`, TTFT
/// and total in ms.
fn assert_completed(c: &Value, model: &str, text: &str, tokens: &str) {
    assert_eq!(c["model"], model, "{c}");
    assert_eq!(c["badge"], model, "{c}");
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(c["text"], text, "{c}");
    assert_eq!(c["tokens"], tokens, "{c}");
    let ms = |v: &Value, head: &str| {
        let s = v.as_str().unwrap_or_default();
        s.strip_prefix(head)
            .and_then(|s| s.strip_suffix(" ms"))
            .is_some_and(|n| n.replace(',', "").parse::<u64>().is_ok())
    };
    assert!(ms(&c["ttft"], "TTFT "), "{c}");
    assert!(ms(&c["total"], "total "), "{c}");
}

/// Opens `#/arena`, checks `models`, types `prompt`, runs.
async fn run_arena(ui: &UiPage, models: &[&str], prompt: &str) {
    ui.open("/arena").await;
    for m in models {
        ui.choose("arena-models", m).await;
    }
    ui.type_in(&tid("arena-prompt"), prompt).await;
    ui.click(&tid("arena-run")).await;
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn the_arena_page_streams_every_model_side_by_side() {
    let Some(paths) = browser_paths() else { return };
    let server = arena_server().await;
    let ui = UiPage::launch(&paths, &server, "arena-columns").await;
    ui.open("/models").await;
    ui.click(&tid("nav-arena")).await;
    ui.wait_js(
        "the arena page",
        "return !!document.querySelector('[data-testid=\"page-arena\"]') && location.hash",
        vec![],
        |v| v == "#/arena",
    )
    .await;

    // One model alone cannot run: the form says so, nothing is sent.
    ui.choose("arena-models", "mock/slow:40").await;
    ui.type_in(&tid("arena-prompt"), "x").await;
    ui.click(&tid("arena-run")).await;
    let error = ui
        .wait_js(
            "the form's error",
            "return document.querySelector('[data-testid=\"arena-form-error\"]').textContent",
            vec![],
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
        )
        .await;
    assert!(error.as_str().unwrap().contains("Choose 2 to 8"), "{error}");

    let prompt = words(30);
    ui.choose("arena-models", "mock/slow:60").await;
    ui.b.find(&tid("arena-prompt"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    ui.type_in(&tid("arena-prompt"), &prompt).await;
    ui.click(&tid("arena-run")).await;

    // Live: both columns stream at once, each with part of its answer.
    let live = ui
        .wait_js(
            "both columns streaming with some text",
            COLUMNS,
            vec![],
            |v| {
                v.as_array().is_some_and(|c| {
                    c.len() == 2
                        && c.iter().all(|c| {
                            c["state"] == "streaming"
                                && c["text"].as_str().is_some_and(|t| t.len() > 4)
                        })
                })
            },
        )
        .await;
    ui.shot("streaming").await;
    let full = format!("echo: {prompt}");
    for c in live.as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert!(
            full.starts_with(text) && text.len() < full.len(),
            "a prefix while streaming: {c}"
        );
    }
    let stop_visible =
        ui.b.find(&tid("arena-stop"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap();
    assert!(stop_visible, "Stop shows while the run streams");

    let done = ui.wait_finished(2).await;
    ui.shot("done").await;
    // 30 prompt words; the answer is "echo:" plus the 30 words.
    assert_completed(&done[0], "mock/slow:40", &full, "30 + 31 tokens");
    assert_completed(&done[1], "mock/slow:60", &full, "30 + 31 tokens");
    let stop_visible =
        ui.b.find(&tid("arena-stop"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap();
    assert!(!stop_visible, "Stop hides when the run ends");
    // The server recorded one arena session (the log is written behind).
    let deadline = Instant::now() + WAIT;
    loop {
        let sessions = server.get_json("/v1/llm-sessions?operation=arena").await;
        if sessions["data"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "one arena session: {sessions}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn one_failing_model_shows_its_error_while_the_other_completes() {
    let Some(paths) = browser_paths() else { return };
    let server = arena_server().await;
    let ui = UiPage::launch(&paths, &server, "arena-failure").await;
    run_arena(&ui, &["mock/status:400", "mock/echo"], "still here").await;
    let done = ui.wait_finished(2).await;
    ui.shot("done").await;
    let failed = &done[0];
    assert_eq!(failed["model"], "mock/status:400", "{failed}");
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("400"),
        "the upstream's error shows: {failed}"
    );
    assert_eq!(
        failed["tokens"],
        Value::Null,
        "no stats for a failure: {failed}"
    );
    assert_completed(&done[1], "mock/echo", "echo: still here", "2 + 3 tokens");
}

#[tokio::test]
async fn stop_ends_the_feed_and_keeps_what_arrived() {
    let Some(paths) = browser_paths() else { return };
    let server = arena_server().await;
    let ui = UiPage::launch(&paths, &server, "arena-stop").await;
    run_arena(&ui, &["mock/slow:40", "mock/slow:60"], &words(200)).await;
    ui.wait_js("some streamed text", COLUMNS, vec![], |v| {
        v.as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["text"].as_str().is_some_and(|t| t.len() > 8))
        })
    })
    .await;
    ui.click(&tid("arena-stop")).await;
    let stopped = ui
        .wait_js("both columns stopped", COLUMNS, vec![], |v| {
            v.as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["state"] == "stopped"))
        })
        .await;
    ui.shot("stopped").await;
    let texts: Vec<String> = stopped
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(texts.iter().any(|t| t.starts_with("echo: w1")), "{stopped}");
    // Nothing grows any more, and Run is back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later: Vec<String> = ui
        .columns()
        .await
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts, later, "no text after Stop");
    let run_disabled =
        ui.b.find(&tid("arena-run"))
            .await
            .unwrap()
            .prop("disabled")
            .await
            .unwrap();
    assert_eq!(run_disabled, false);
}

// ------------------------------------------- with the pick endpoints (merge)

#[tokio::test]
async fn arena_pick_prefer_records_the_pick_and_counts_the_win() {
    let Some(paths) = browser_paths() else { return };
    let server = arena_server().await;
    let ui = UiPage::launch(&paths, &server, "arena-prefer").await;
    run_arena(
        &ui,
        &["mock/echo", "mock/mock-model", "mock/status:400"],
        "pick me",
    )
    .await;
    let done = ui.wait_pickable(3, "arena-prefer").await;
    for c in &done[..2] {
        assert_eq!(c["buttons"], json!(["arena-prefer"]), "{c}");
    }
    assert_eq!(
        done[2]["buttons"],
        json!([]),
        "a failed model cannot be preferred"
    );
    ui.click(&format!(
        "[data-testid=\"arena-column\"][data-model=\"mock/mock-model\"] {}",
        tid("arena-prefer")
    ))
    .await;
    let picked = ui
        .wait_js("the preferred column", COLUMNS, vec![], |v| {
            v.as_array()
                .is_some_and(|c| c.iter().any(|c| c["picked"] == true))
        })
        .await;
    let picked = picked.as_array().unwrap();
    assert_eq!(picked[1]["picked"], true, "{picked:?}");
    assert_eq!(picked[0]["picked"], false, "{picked:?}");
    assert!(
        picked.iter().all(|c| c["buttons"] == json!([])),
        "one pick per run: {picked:?}"
    );
    // The win counts show the pick.
    let row = ui
        .wait_js(
            "a win row for mock/mock-model",
            r#"const r = document.querySelector('[data-testid="arena-wins"]:not([hidden]) [data-testid="arena-win-row"][data-model="mock/mock-model"]');
               return r ? [...r.querySelectorAll('td')].map(td => td.textContent) : null;"#,
            vec![],
            |v| v.is_array(),
        )
        .await;
    assert_eq!(row[1], "1", "one win: {row}");
    ui.shot("preferred").await;
    let stats = server.get_json("/v1/arena/stats").await;
    let winner = stats["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "mock/mock-model")
        .cloned();
    assert_eq!(winner.map(|m| m["wins"].clone()), Some(json!(1)), "{stats}");
}

/// Opens the conversation, opens "Compare models", checks `models`, sends.
async fn compare(ui: &UiPage, conv: &str, models: &[&str], content: &str) {
    ui.open(&format!("/chat/{conv}")).await;
    ui.click(&tid("compare-toggle")).await;
    for m in models {
        ui.choose("compare-models", m).await;
    }
    let label = ui
        .wait_js(
            "the Compare label",
            "return document.querySelector('[data-testid=\"send\"]').textContent",
            vec![],
            |v| v == "Compare",
        )
        .await;
    assert_eq!(label, "Compare");
    ui.type_in(&tid("composer"), content).await;
    ui.click(&tid("send")).await;
}

#[tokio::test]
async fn arena_pick_in_a_conversation_uses_the_chosen_answer() {
    let Some(paths) = browser_paths() else { return };
    let server = arena_server().await;
    let conv = create(&server, json!({})).await;
    let ui = UiPage::launch(&paths, &server, "arena-conversation").await;
    compare(
        &ui,
        &conv,
        &["mock/echo", "mock/slow:40"],
        "which is better",
    )
    .await;
    let done = ui.wait_pickable(2, "arena-use").await;
    for c in &done {
        assert_eq!(c["state"], "completed", "{c}");
        assert_eq!(c["text"], "echo: which is better", "{c}");
    }
    assert!(
        done.iter().all(|c| c["buttons"] == json!(["arena-use"])),
        "{done:?}"
    );
    ui.shot("compared").await;

    // While the pick is pending, a normal message is refused: 409, shown.
    ui.click(&tid("compare-toggle")).await; // closes the panel: a normal send
    ui.type_in(&tid("composer"), "a normal message").await;
    ui.click(&tid("send")).await;
    let status = ui
        .wait_js(
            "the 409 in the status line",
            "return document.getElementById('status').textContent",
            vec![],
            |v| v.as_str().is_some_and(|s| s.starts_with("409")),
        )
        .await;
    assert!(
        status.as_str().unwrap().len() > "409: ".len(),
        "with its detail: {status}"
    );
    ui.shot("refused").await;

    // A reload redraws the pending run; "Use this answer" appends it.
    ui.b.refresh().await.unwrap();
    let redrawn = ui.wait_pickable(2, "arena-use").await;
    assert!(
        redrawn.iter().all(|c| c["buttons"] == json!(["arena-use"])),
        "{redrawn:?}"
    );
    ui.click(&format!(
        "[data-testid=\"arena-column\"][data-model=\"mock/slow:40\"] {}",
        tid("arena-use")
    ))
    .await;
    let answer = ui
        .wait_js(
            "the picked answer as an assistant message",
            r#"const m = [...document.querySelectorAll('[data-testid="message"][data-role="assistant"]')].pop();
               if (!m) return null;
               const b = m.querySelector('[data-testid="model-badge"]');
               return { text: m.querySelector('[data-testid="message-text"]').textContent, badge: b ? b.textContent : null };"#,
            vec![],
            |v| v.is_object(),
        )
        .await;
    assert_eq!(answer["text"], "echo: which is better", "{answer}");
    assert_eq!(answer["badge"], "mock/slow:40", "{answer}");
    let used = ui.columns().await;
    assert!(used.iter().all(|c| c["buttons"] == json!([])), "{used:?}");
    ui.shot("used").await;
    let msgs = messages(&server, &conv).await;
    let last = msgs.last().unwrap();
    assert_eq!(last["role"], "assistant", "{msgs:?}");
    assert_eq!(last["modelId"], "mock/slow:40", "{last}");

    // The conversation goes on: a normal message is answered again.
    let (status, body) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "next"})),
    )
    .await;
    assert!(status < 300, "{status}: {body}");
}

#[tokio::test]
async fn arena_pick_another_clients_run_streams_into_an_open_conversation() {
    let Some(paths) = browser_paths() else { return };
    let server = arena_server().await;
    let conv = create(&server, json!({})).await;
    let ui = UiPage::launch(&paths, &server, "arena-watched").await;
    ui.open(&format!("/chat/{conv}")).await;
    ui.wait_js(
        "the composer",
        "return !!document.querySelector('[data-testid=\"composer\"]')",
        vec![],
        |v| v == true,
    )
    .await;
    // Another client runs the arena in this conversation.
    let content = words(30);
    let path = format!("/v1/conversations/{conv}/arena");
    let body = json!({"content": content, "models": ["mock/slow:40", "mock/slow:60"]});
    let post = send(&server, "POST", &path, Some(body));
    let watch = async {
        // Its columns stream live here, with part of the text.
        let streaming = ui
            .wait_js("a column streaming", COLUMNS, vec![], |v| {
                v.as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["state"] == "streaming"
                            && c["text"].as_str().is_some_and(|t| !t.is_empty())
                    })
                })
            })
            .await;
        ui.shot("streaming").await;
        streaming
    };
    let ((status, answer), streaming) = tokio::join!(post, watch);
    assert_eq!(status, 200, "{answer}");
    assert!(
        streaming
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["text"].as_str().unwrap_or("").len() < content.len() + 6),
        "partial text while streaming: {streaming}"
    );
    let done = ui.wait_pickable(2, "arena-use").await;
    for c in &done {
        assert_eq!(c["state"], "completed", "{c}");
        assert_eq!(c["text"], format!("echo: {content}"), "{c}");
        assert_eq!(c["buttons"], json!(["arena-use"]), "{c}");
    }
    ui.shot("finished").await;
}
