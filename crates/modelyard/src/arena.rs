//! `modelyard arena -m A -m B [--json] "prompt"`: one prompt, several
//! models (`POST /v1/arena`). Streams the run; on a terminal with at least
//! 40 columns per model (width from `COLUMNS`, else the terminal's) a
//! progress line per model is redrawn while they stream and the answers
//! are printed side by side at the end, each column headed by its model
//! with its tokens and times under it ([`columns`]; `--columns` forces
//! that layout, `--no-columns` refuses it). Otherwise each model's answer
//! is printed under a `== model ==` header when that model ends (so the
//! answers never mix), then one summary line per model (tokens, time to
//! first token, total time) in request order on stderr. `--json` prints the
//! non-streamed answer. The exit code is 1 when any model failed.

mod columns;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

pub(crate) use columns::ColumnsFlag;
use columns::{Column, Layout};

use anyhow::{bail, Context};
use modelyard_upstream::sse::SseDecoder;
use serde_json::{json, Value};

use crate::client::{read_json, Client};

/// What to send.
pub(crate) struct ArenaOptions {
    /// The model ids, 2–8.
    pub models: Vec<String>,
    /// An LLM config whose options apply.
    pub llm_id: Option<String>,
    /// Maximum tokens to generate per model.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Print the non-streamed JSON answer.
    pub json: bool,
    /// Side by side or one after another.
    pub columns: ColumnsFlag,
}

fn request_body(options: &ArenaOptions, prompt: &str) -> Value {
    let mut provider_options = serde_json::Map::new();
    if let Some(n) = options.max_tokens {
        provider_options.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = options.temperature {
        provider_options.insert("temperature".into(), json!(t));
    }
    let mut body = json!({
        "models": options.models,
        "prompt": prompt,
        "stream": !options.json,
    });
    if !provider_options.is_empty() {
        body["options"] = Value::Object(provider_options);
    }
    if let Some(id) = &options.llm_id {
        body["llmId"] = json!(id);
    }
    body
}

/// One model's summary line: tokens, time to first token, total time (or
/// its error).
fn summary_line(model: &str, end: &Value) -> String {
    if let Some(error) = end.get("error").and_then(Value::as_str) {
        return format!("{model}: failed: {error}");
    }
    let number = |v: Option<&Value>| match v.and_then(Value::as_i64) {
        Some(n) => n.to_string(),
        None => "?".to_owned(),
    };
    let usage = end.get("usage");
    format!(
        "{model}: {} prompt + {} completion tokens · ttft {} ms · total {} ms",
        number(usage.and_then(|u| u.get("promptTokens"))),
        number(usage.and_then(|u| u.get("completionTokens"))),
        number(end.get("ttftMs")),
        number(end.get("durationMs")),
    )
}

/// One model's figures, one per line: tokens, TTFT, total time (or that
/// it failed).
fn stat_lines(end: &Value) -> Vec<String> {
    if end.get("error").is_some_and(|e| !e.is_null()) {
        return vec!["failed".to_owned()];
    }
    let number = |v: Option<&Value>| match v.and_then(Value::as_i64) {
        Some(n) => n.to_string(),
        None => "?".to_owned(),
    };
    let usage = end.get("usage");
    vec![
        format!(
            "{} + {} tokens",
            number(usage.and_then(|u| u.get("promptTokens"))),
            number(usage.and_then(|u| u.get("completionTokens"))),
        ),
        format!("TTFT {} ms", number(end.get("ttftMs"))),
        format!("total {} ms", number(end.get("durationMs"))),
    ]
}

/// The terminal's width in columns: `COLUMNS` when set, else what
/// `stty size` says of the controlling terminal (no `ioctl`: the workspace
/// forbids `unsafe`), else `None`.
fn terminal_width() -> Option<usize> {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
}

/// The progress lines of a live column run: one per model, redrawn in
/// place (at most every [`Progress::EVERY`]) and erased before the columns.
struct Progress {
    states: Vec<(String, &'static str, usize)>,
    width: usize,
    drawn: bool,
    last: Option<Instant>,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(100);

    fn new(models: &[String], width: usize) -> Self {
        Self {
            states: models.iter().map(|m| (m.clone(), "waiting", 0)).collect(),
            width,
            drawn: false,
            last: None,
        }
    }

    /// Notes model `index`'s state and `more` chars of text.
    fn note(&mut self, index: usize, state: &'static str, more: usize) {
        if let Some(s) = self.states.get_mut(index) {
            s.1 = state;
            s.2 = s.2.saturating_add(more);
        }
    }

    fn draw(&mut self, out: &mut impl Write, force: bool) -> std::io::Result<()> {
        if !force && self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return Ok(());
        }
        if self.drawn {
            write!(out, "\x1b[{}A", self.states.len())?;
        }
        for (model, state, chars) in &self.states {
            let line = columns::progress_line(model, state, *chars, self.width);
            write!(out, "\r\x1b[2K{line}\n")?;
        }
        out.flush()?;
        self.drawn = true;
        self.last = Some(Instant::now());
        Ok(())
    }

    fn erase(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.drawn {
            write!(out, "\x1b[{}A\x1b[J", self.states.len())?;
            out.flush()?;
            self.drawn = false;
        }
        Ok(())
    }
}

/// The columns of a finished run, in request order.
fn result_columns(
    models: &[String],
    texts: &BTreeMap<u64, String>,
    ends: &BTreeMap<u64, (String, Value)>,
) -> Vec<Column> {
    (0u64..)
        .zip(models)
        .map(|(index, model)| match ends.get(&index) {
            Some((_, end)) => {
                let body = match end.get("error").and_then(Value::as_str) {
                    Some(error) => format!("(failed: {error})"),
                    None => end
                        .get("text")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| texts.get(&index).cloned())
                        .unwrap_or_default(),
                };
                Column {
                    header: model.clone(),
                    body,
                    footer: stat_lines(end),
                }
            }
            None => Column {
                header: model.clone(),
                body: texts.get(&index).cloned().unwrap_or_default(),
                footer: vec!["(no result)".to_owned()],
            },
        })
        .collect()
}

/// Runs the arena and prints it.
pub(crate) async fn run(
    client: &Client,
    options: &ArenaOptions,
    prompt: &str,
) -> anyhow::Result<ExitCode> {
    let printed = post_and_print(
        client,
        "/v1/arena",
        &request_body(options, prompt),
        &options.models,
        options.json,
        options.columns,
    )
    .await?;
    Ok(printed.code)
}

/// What [`post_and_print`] saw.
pub(crate) struct Printed {
    /// 1 when any model failed (or the request was refused).
    pub code: ExitCode,
    /// `arena.done`'s data (`{id, …}`) of a streamed run.
    pub done: Option<Value>,
    /// Whether any model completed.
    pub any_completed: bool,
}

/// Posts an arena request `body` (to `POST /v1/arena` or a conversation's
/// `…/arena`, both answering the same feed) and prints it as the module
/// docs say: with `json` (or a refusal) the JSON answer, else the streamed
/// feed of `models`, side by side or one after another by `columns`.
pub(crate) async fn post_and_print(
    client: &Client,
    path: &str,
    body: &Value,
    models: &[String],
    json: bool,
    columns: ColumnsFlag,
) -> anyhow::Result<Printed> {
    let response = client
        .http()
        .post(client.url(path))
        .json(body)
        .send()
        .await
        .context("cannot reach the Modelyard server (is `modelyard serve` running?)")?;
    if json || !response.status().is_success() {
        let value = read_json(response).await?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        let results = value.get("results").and_then(Value::as_array);
        let failed = results.is_some_and(|r| r.iter().any(|r| r["status"] != "completed"));
        return Ok(Printed {
            code: if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            },
            done: None,
            any_completed: results.is_some_and(|r| r.iter().any(|r| r["status"] == "completed")),
        });
    }
    let mut response = response;
    let terminal = std::io::stdout().is_terminal();
    let width = match columns {
        ColumnsFlag::Never => None,
        ColumnsFlag::Always => terminal_width(),
        ColumnsFlag::Auto if terminal => terminal_width(),
        ColumnsFlag::Auto => None,
    };
    let layout = columns::choose(columns, models.len(), terminal, width);
    let mut progress = match layout {
        Layout::Columns { width, live: true } => Some(Progress::new(models, width)),
        _ => None,
    };
    let side_by_side = matches!(layout, Layout::Columns { .. });
    let mut decoder = SseDecoder::new();
    let mut stdout = std::io::stdout();
    if let Some(p) = progress.as_mut() {
        p.draw(&mut stdout, true)?;
    }
    let mut texts: BTreeMap<u64, String> = BTreeMap::new();
    let mut ends: BTreeMap<u64, (String, Value)> = BTreeMap::new();
    while let Some(chunk) = response.chunk().await.context("the stream broke")? {
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event() {
            let name = event.event.unwrap_or_default();
            let value: Value = serde_json::from_slice(&event.data)
                .context("the server sent malformed stream data")?;
            let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
            let slot = usize::try_from(index).unwrap_or(usize::MAX);
            let model = value
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            match name.as_str() {
                "arena.delta" => {
                    if let Some(delta) = value.get("delta").and_then(Value::as_str) {
                        texts.entry(index).or_default().push_str(delta);
                        if let Some(p) = progress.as_mut() {
                            p.note(slot, "streaming", delta.chars().count());
                            p.draw(&mut stdout, false)?;
                        }
                    }
                }
                "arena.completed" | "arena.failed" if side_by_side => {
                    if let Some(p) = progress.as_mut() {
                        let state = if name == "arena.failed" {
                            "failed"
                        } else {
                            "done"
                        };
                        p.note(slot, state, 0);
                        p.draw(&mut stdout, true)?;
                    }
                    ends.insert(index, (model, value));
                }
                "arena.completed" => {
                    let text = value
                        .get("text")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| texts.get(&index).cloned())
                        .unwrap_or_default();
                    writeln!(stdout, "== {model} ==\n{text}\n")?;
                    stdout.flush()?;
                    ends.insert(index, (model, value));
                }
                "arena.failed" => {
                    let error = value.get("error").and_then(Value::as_str).unwrap_or("?");
                    writeln!(stdout, "== {model} ==\n(failed: {error})\n")?;
                    stdout.flush()?;
                    ends.insert(index, (model, value));
                }
                "arena.done" => {
                    if side_by_side {
                        if let Some(p) = progress.as_mut() {
                            p.erase(&mut stdout)?;
                        }
                        let width = match layout {
                            Layout::Columns { width, .. } => width,
                            Layout::Sequential => 0,
                        };
                        let table = result_columns(models, &texts, &ends);
                        for line in columns::layout(&table, width) {
                            writeln!(stdout, "{line}")?;
                        }
                        stdout.flush()?;
                    } else {
                        for (model, end) in ends.values() {
                            eprintln!("{}", summary_line(model, end));
                        }
                    }
                    let failed = ends.values().any(|(_, end)| end.get("error").is_some());
                    return Ok(Printed {
                        code: if failed {
                            ExitCode::FAILURE
                        } else {
                            ExitCode::SUCCESS
                        },
                        any_completed: ends.values().any(|(_, end)| end.get("error").is_none()),
                        done: Some(value),
                    });
                }
                _ => {}
            }
        }
    }
    if let Some(p) = progress.as_mut() {
        p.erase(&mut stdout)?;
    }
    bail!("the arena stream ended without arena.done")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_request_order_text_and_figures() {
        let models = vec!["a/x".to_owned(), "b/y".to_owned(), "c/z".to_owned()];
        let mut texts = BTreeMap::new();
        texts.insert(2, "partial".to_owned());
        let mut ends = BTreeMap::new();
        ends.insert(
            0,
            (
                "a/x".to_owned(),
                json!({"text": "hi", "usage": {"promptTokens": 2, "completionTokens": 1},
                       "ttftMs": 5, "durationMs": 9}),
            ),
        );
        ends.insert(1, ("b/y".to_owned(), json!({"error": "boom"})));
        let table = result_columns(&models, &texts, &ends);
        assert_eq!(table[0].body, "hi");
        assert_eq!(table[0].footer, ["2 + 1 tokens", "TTFT 5 ms", "total 9 ms"]);
        assert_eq!(table[1].body, "(failed: boom)");
        assert_eq!(table[1].footer, ["failed"]);
        assert_eq!(table[2].body, "partial");
        assert_eq!(table[2].header, "c/z");
    }

    #[test]
    fn summary_lines_name_tokens_and_times() {
        let end = json!({"usage": {"promptTokens": 2, "completionTokens": 3},
                         "ttftMs": 12, "durationMs": 40});
        assert_eq!(
            summary_line("mock/echo", &end),
            "mock/echo: 2 prompt + 3 completion tokens · ttft 12 ms · total 40 ms"
        );
        assert_eq!(
            summary_line("m", &json!({"error": "boom"})),
            "m: failed: boom"
        );
    }
}
