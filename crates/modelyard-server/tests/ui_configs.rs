//! Browser tests of LLM config versions in the web UI (docs/ui.md "LLM
//! configs page" and "Calls page"): a config's "Versions" lists every
//! version and shows an old one's settings read-only; a session's detail
//! shows the config snapshot it ran with — the old settings after the
//! config was edited — and links to that version; a session without a
//! config says so.
//!
//! Headless Chromium through chromedriver ([`common::webdriver`]) in front
//! of the real server and its in-process mock, as in `tests/ui.rs`. Needs
//! `MODELYARD_TEST_CHROMEDRIVER` (and usually `MODELYARD_TEST_CHROMIUM`);
//! without it every test here is skipped (a line on stderr says so).
//! Screenshots go to `target/ui-screenshots/configs-<test>-<step>.png`.

#![allow(clippy::unwrap_used)]

mod common;

use common::ui_page::{browser_paths, tid, UiPage, WAIT};
use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

/// The configs pages' own helpers on the page.
trait ConfigsPage {
    /// The versions panel: config id, the version rows (version, label,
    /// changes) and the shown version's settings; null without a panel.
    async fn versions(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value;
    /// The session detail of `id` and its config snapshot; null until it
    /// is shown.
    async fn session(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value;
}

impl ConfigsPage for UiPage {
    async fn versions(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_js(what, &format!("{SETTINGS}{VERSIONS_BODY}"), vec![], pred)
            .await
    }

    async fn session(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_js(
            &format!("the detail of session {id}"),
            &format!("{SETTINGS}{SESSION_BODY}"),
            vec![json!(id)],
            pred,
        )
        .await
    }
}

/// `settings(root)`: the `config-*` fields inside `root` (or null).
const SETTINGS: &str = r#"
    const t = (s, r) => { const e = r && r.querySelector(s); return e ? e.textContent.trim() : null; };
    const settings = r => r ? ({
      model: t('[data-testid="config-model"]', r), options: t('[data-testid="config-options"]', r),
      system: t('[data-testid="config-system"]', r), baseUrl: t('[data-testid="config-base-url"]', r),
    }) : null;
"#;

const VERSIONS_BODY: &str = r#"
    const panel = document.querySelector('[data-testid="llm-versions-panel"]');
    if (!panel) return null;
    const detail = panel.querySelector('[data-testid="llm-version-detail"]');
    return {
      id: panel.dataset.id,
      rows: [...panel.querySelectorAll('[data-testid="llm-version-row"]')].map(r => ({
        version: Number(r.dataset.version), label: r.cells[0].textContent.trim(),
        changes: t('[data-testid="llm-version-changes"]', r),
      })),
      shown: detail ? Number(detail.dataset.version) : null,
      settings: settings(detail),
    };
"#;

const SESSION_BODY: &str = r#"
    const d = document.querySelector('[data-testid="session-detail"][data-id="' + arguments[0] + '"]');
    const c = d && d.querySelector('[data-testid="session-config"]');
    if (!c) return null;
    const link = c.querySelector('[data-testid="session-config-version"]');
    return {
      none: c.dataset.none === 'true', llmId: c.dataset.llmId || null,
      version: c.dataset.version ? Number(c.dataset.version) : null,
      name: t('[data-testid="session-config-name"]', c), source: t('[data-testid="session-config-source"]', c),
      link: link ? { text: link.textContent.trim(), href: link.getAttribute('href') } : null,
      noneText: t('[data-testid="session-config-none"]', c), settings: c.dataset.none ? null : settings(c),
    };
"#;

async fn configs_server() -> TestServer {
    TestServer::builder()
        .listed(&["mock-model", "echo"])
        .start()
        .await
}

/// Creates a config; returns its id.
async fn create_llm(server: &TestServer, body: Value) -> String {
    let (status, llm) = server.post("/v1/llms", body.clone()).await;
    assert_eq!(status, 201, "create {body}: {llm}");
    llm["id"].as_str().unwrap().to_owned()
}

/// PATCHes config `id`; asserts the new version is `version`.
async fn patch_llm(server: &TestServer, id: &str, body: Value, version: i64) {
    let (status, llm) = server.patch(&format!("/v1/llms/{id}"), body.clone()).await;
    assert_eq!(status, 200, "patch {body}: {llm}");
    assert_eq!(llm["version"], version, "{llm}");
}

/// The first session `path` (a `GET /v1/llm-sessions` query or one
/// session) answers, once the call log has written it.
async fn recorded(server: &TestServer, path: &str) -> Value {
    eventually(WAIT, &format!("a session at {path}"), || async {
        let (status, body) = server.send("GET", path, None).await;
        let session = match body["data"].as_array() {
            Some(list) => list.first().cloned(),
            None => Some(body.clone()),
        };
        match session {
            Some(s) if status == 200 => Ok(s),
            _ => Err((status, body)),
        }
    })
    .await
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn the_versions_of_a_config_list_every_edit_and_show_an_old_one() {
    let Some(paths) = browser_paths() else { return };
    let server = configs_server().await;
    let id = create_llm(
        &server,
        json!({"displayName": "writer", "model": "mock/mock-model", "systemPrompt": "OLD PROMPT",
               "providerOptions": {"temperature": 0.3}}),
    )
    .await;
    patch_llm(
        &server,
        &id,
        json!({"providerOptions": {"maxTokens": 64}}),
        2,
    )
    .await;
    patch_llm(
        &server,
        &id,
        json!({"model": "mock/echo", "systemPrompt": "NEW PROMPT"}),
        3,
    )
    .await;

    let ui = UiPage::launch(&paths, &server, "configs-versions").await;
    ui.open("/llms").await;
    let row = format!("{}[data-id=\"{id}\"]", tid("llm-row"));
    let button = format!("{row} {}", tid("llm-versions"));
    let label = ui
        .wait_js(
            "the config's Versions button",
            "const b = document.querySelector(arguments[0]); return b ? b.textContent.trim() : null;",
            vec![json!(button)],
            Value::is_string,
        )
        .await;
    assert_eq!(label, "Versions (3)");
    ui.click(&button).await;

    // Three versions, newest first, each saying what it changed; none shown yet.
    let panel = ui
        .versions("three version rows", |v| {
            v["rows"].as_array().is_some_and(|r| r.len() == 3)
        })
        .await;
    assert_eq!(panel["id"], id.as_str(), "{panel}");
    assert_eq!(
        panel["rows"],
        json!([
            {"version": 3, "label": "v3 (current)", "changes": "model, system prompt"},
            {"version": 2, "label": "v2", "changes": "maxTokens"},
            {"version": 1, "label": "v1", "changes": "created"},
        ]),
        "{panel}"
    );
    assert_eq!(panel["shown"], Value::Null, "{panel}");
    ui.shot("list").await;

    // Version 1 shows the settings as they were then, read-only.
    ui.click(&format!(
        "{}[data-version=\"1\"] {}",
        tid("llm-version-row"),
        tid("llm-version-show")
    ))
    .await;
    let panel = ui.versions("version 1 shown", |v| v["shown"] == 1).await;
    assert_eq!(
        panel["settings"],
        json!({"model": "mock/mock-model", "options": "temperature=0.3",
               "system": "OLD PROMPT", "baseUrl": "—"}),
        "{panel}"
    );
    let editable = ui
        .b
        .execute(
            "return document.querySelectorAll('[data-testid=\"llm-version-detail\"] input, [data-testid=\"llm-version-detail\"] textarea').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(editable, 0, "an old version is read-only");
    ui.shot("version-1").await;

    // The current one: the edits.
    ui.click(&format!(
        "{}[data-version=\"3\"] {}",
        tid("llm-version-row"),
        tid("llm-version-show")
    ))
    .await;
    let panel = ui.versions("version 3 shown", |v| v["shown"] == 3).await;
    assert_eq!(
        panel["settings"],
        json!({"model": "mock/echo", "options": "temperature=0.3, maxTokens=64",
               "system": "NEW PROMPT", "baseUrl": "—"}),
        "{panel}"
    );
}

#[tokio::test]
async fn a_sessions_detail_shows_the_config_it_ran_with_after_an_edit() {
    let Some(paths) = browser_paths() else { return };
    let server = configs_server().await;
    let cfg = create_llm(
        &server,
        json!({"displayName": "tutor", "model": "mock/mock-model", "systemPrompt": "OLD PROMPT",
               "providerOptions": {"temperature": 0.3}}),
    )
    .await;
    let conv = server.create_conversation(json!({"llmId": cfg})).await;
    let (started, ended) = server.run_turn(&conv, json!({"content": "hi"})).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let turn = started["turnId"].as_str().unwrap().to_owned();
    // The turn's session (its id is the turn's), then the edit.
    let session = recorded(&server, &format!("/v1/llm-sessions/{turn}")).await;
    assert_eq!(session["config"]["version"], 1, "{session}");
    patch_llm(
        &server,
        &cfg,
        json!({"displayName": "tutor v2", "systemPrompt": "NEW PROMPT",
               "providerOptions": {"temperature": 0.9}}),
        2,
    )
    .await;
    // A gateway request without a config: a session without a snapshot.
    let response = server
        .chat(&json!({"model": "mock/mock-model", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let gateway = recorded(&server, "/v1/llm-sessions?operation=gateway").await;
    let gateway = gateway["id"].as_str().unwrap().to_owned();

    let ui = UiPage::launch(&paths, &server, "configs-session").await;
    ui.open("/calls").await;
    ui.click(&format!("{}[data-id=\"{turn}\"]", tid("session-row")))
        .await;
    // The snapshot: version 1's name, prompt and options, not the edit's.
    let shown = ui
        .session(&turn, |v| {
            v["name"].as_str().is_some_and(|n| n.starts_with("tutor ("))
        })
        .await;
    assert_eq!(shown["none"], false, "{shown}");
    assert_eq!(shown["llmId"], cfg.as_str(), "{shown}");
    assert_eq!(shown["version"], 1, "{shown}");
    assert_eq!(shown["name"], format!("tutor ({cfg})"), "{shown}");
    assert_eq!(shown["source"], "user", "{shown}");
    assert_eq!(
        shown["link"],
        json!({"text": "version 1", "href": format!("#/llms/{cfg}/1")}),
        "{shown}"
    );
    let settings = &shown["settings"];
    assert_eq!(settings["model"], "mock/mock-model", "{shown}");
    assert_eq!(settings["options"], "temperature=0.3", "{shown}");
    assert_eq!(settings["system"], "OLD PROMPT", "{shown}");
    assert!(
        settings["baseUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{shown}"
    );
    ui.shot("snapshot").await;

    // The link opens that version on the configs page.
    ui.click(&tid("session-config-version")).await;
    let panel = ui
        .versions("version 1 opened from the session", |v| v["shown"] == 1)
        .await;
    assert_eq!(panel["id"], cfg.as_str(), "{panel}");
    assert_eq!(panel["settings"]["system"], "OLD PROMPT", "{panel}");
    assert_eq!(panel["settings"]["options"], "temperature=0.3", "{panel}");
    ui.shot("linked-version").await;

    // A session without a config says so.
    ui.open("/calls").await;
    ui.click(&format!("{}[data-id=\"{gateway}\"]", tid("session-row")))
        .await;
    let shown = ui.session(&gateway, |v| v["none"] == true).await;
    assert_eq!(shown["llmId"], Value::Null, "{shown}");
    assert!(
        shown["noneText"]
            .as_str()
            .is_some_and(|t| t.starts_with("No config")),
        "{shown}"
    );
    assert_eq!(shown["link"], Value::Null, "{shown}");
}
