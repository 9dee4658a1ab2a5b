//! A minimal W3C WebDriver client for the browser tests (`tests/ui.rs`):
//! one `chromedriver` child process per [`Browser`], one headless Chromium
//! session with a fresh profile directory, over `reqwest` + `serde_json`.
//!
//! Why not a crate: `fantoccini` or `thirtyfour` would normally win, but they
//! pull a large dependency tree that this 2-core machine would compile for a
//! handful of tests. The tests need ~15 WebDriver commands, so a small
//! client over the HTTP client the tests already use is the trade-off.
//!
//! Everything is bound to `127.0.0.1`; every [`Browser`] has its own
//! chromedriver port and profile directory, so tests may run in parallel.
//! Dropping a [`Browser`] deletes the session (best effort, a blocking HTTP
//! request with a short timeout), kills chromedriver and removes the profile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::TempDir;

/// The W3C key of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver may take to answer `/status` after it starts.
const DRIVER_START: Duration = Duration::from_secs(20);

/// WebDriver key codes for [`Element::send_keys`].
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const SHIFT: &str = "\u{E008}";
    /// Releases held modifier keys.
    pub const NULL: &str = "\u{E000}";
}

/// A WebDriver error (`error` is the W3C error code, e.g. `no such element`),
/// or a transport failure (`error` = `transport`).
#[derive(Debug, Clone)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "webdriver {}: {}", self.error, self.message)
    }
}

impl std::error::Error for WdError {}

pub type WdResult<T> = Result<T, WdError>;

fn transport(e: impl std::fmt::Display) -> WdError {
    WdError {
        error: "transport".into(),
        message: e.to_string(),
    }
}

/// One WebDriver endpoint: `<driver>/session/<id>`.
#[derive(Debug, Clone)]
struct Conn {
    http: reqwest::Client,
    session: String,
}

impl Conn {
    /// Sends a command and returns its `value` (W3C errors become [`WdError`]).
    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> WdResult<Value> {
        command(&self.http, method, &format!("{}{path}", self.session), body).await
    }
}

async fn command(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> WdResult<Value> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let text = response.text().await.map_err(transport)?;
    let mut value: Value = serde_json::from_str(&text)
        .map_err(|e| transport(format!("HTTP {status}, not JSON ({e}): {text}")))?;
    let value = value["value"].take();
    if status.is_success() {
        return Ok(value);
    }
    Err(WdError {
        error: value["error"]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned(),
        message: value["message"].as_str().unwrap_or(&text).to_owned(),
    })
}

/// A headless Chromium session driven through its own chromedriver.
#[derive(Debug)]
pub struct Browser {
    conn: Conn,
    driver_url: String,
    session_id: String,
    driver: Child,
    /// Holds the profile directory; removed on drop.
    _profile: TempDir,
}

impl Browser {
    /// Starts `chromedriver` on a free `127.0.0.1` port and opens a session
    /// of `chromium` (or chromedriver's default binary when `None`) in a new
    /// temporary profile, headless, 1280×900.
    pub async fn launch(chromedriver: &Path, chromium: Option<&Path>) -> WdResult<Browser> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(transport)?;
        // A port taken between our probe and chromedriver's bind: try again.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port();
            let mut driver = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| transport(format!("spawn {}: {e}", chromedriver.display())))?;
            let driver_url = format!("http://127.0.0.1:{port}");
            match wait_ready(&http, &driver_url, &mut driver).await {
                Ok(()) => return Self::open(http, driver, driver_url, chromium).await,
                Err(e) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn open(
        http: reqwest::Client,
        mut driver: Child,
        driver_url: String,
        chromium: Option<&Path>,
    ) -> WdResult<Browser> {
        let profile = TempDir::new();
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.path().display()),
                "--window-size=1280,900",
            ],
        });
        if let Some(binary) = chromium {
            options["binary"] = json!(binary.display().to_string());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = command(
            &http,
            reqwest::Method::POST,
            &format!("{driver_url}/session"),
            Some(caps),
        )
        .await;
        let created = match created {
            Ok(v) => v,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                return Err(e);
            }
        };
        let session_id = created["sessionId"]
            .as_str()
            .ok_or_else(|| transport(format!("no sessionId in {created}")))?
            .to_owned();
        Ok(Browser {
            conn: Conn {
                http,
                session: format!("{driver_url}/session/{session_id}"),
            },
            driver_url,
            session_id,
            driver,
            _profile: profile,
        })
    }

    /// Navigates to `url` and waits for the page load.
    pub async fn goto(&self, url: &str) -> WdResult<()> {
        self.conn
            .cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    /// Reloads the page.
    pub async fn refresh(&self) -> WdResult<()> {
        self.conn
            .cmd(reqwest::Method::POST, "/refresh", Some(json!({})))
            .await
            .map(drop)
    }

    /// The page's URL.
    pub async fn current_url(&self) -> WdResult<String> {
        let v = self.conn.cmd(reqwest::Method::GET, "/url", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching the CSS selector (`no such element` if none).
    pub async fn find(&self, css: &str) -> WdResult<Element> {
        find_in(&self.conn, "", css).await
    }

    /// Every element matching the CSS selector, in document order.
    pub async fn find_all(&self, css: &str) -> WdResult<Vec<Element>> {
        find_all_in(&self.conn, "", css).await
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`, elements
    /// may be passed with [`Element::json`]) and returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> WdResult<Value> {
        self.conn
            .cmd(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": script, "args": args})),
            )
            .await
    }

    /// Sets the outer window size.
    pub async fn set_window_size(&self, width: u32, height: u32) -> WdResult<()> {
        self.conn
            .cmd(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({"width": width, "height": height})),
            )
            .await
            .map(drop)
    }

    /// Runs a Chrome DevTools Protocol command (chromedriver extension).
    pub async fn cdp(&self, cmd: &str, params: Value) -> WdResult<Value> {
        self.conn
            .cmd(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({"cmd": cmd, "params": params})),
            )
            .await
    }

    /// The browser console messages since the last call (chromedriver
    /// extension), one `LEVEL message` line each.
    pub async fn console_log(&self) -> WdResult<Vec<String>> {
        let v = self
            .conn
            .cmd(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await?;
        Ok(v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Saves a PNG screenshot of the viewport to `path` (parents created).
    pub async fn screenshot(&self, path: &Path) -> WdResult<PathBuf> {
        let v = self
            .conn
            .cmd(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let png = base64_decode(v.as_str().unwrap_or_default())
            .ok_or_else(|| transport("screenshot is not base64"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(transport)?;
        }
        std::fs::write(path, png).map_err(transport)?;
        Ok(path.to_owned())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort, blocking (no async in drop): DELETE the session so
        // Chromium exits, then stop chromedriver.
        let _ = delete_session(&self.driver_url, &self.session_id);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A DELETE over a plain TCP connection with short timeouts.
fn delete_session(driver_url: &str, session_id: &str) -> std::io::Result<()> {
    let host = driver_url.trim_start_matches("http://");
    let addr = host.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "DELETE /session/{session_id} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    Ok(())
}

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element {
    conn: Conn,
    id: String,
}

impl Element {
    /// The W3C JSON reference, to pass to [`Browser::execute`].
    pub fn json(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    pub async fn click(&self) -> WdResult<()> {
        self.conn
            .cmd(reqwest::Method::POST, &self.path("/click"), Some(json!({})))
            .await
            .map(drop)
    }

    /// Types `text` (may include [`keys`]) into the element.
    pub async fn send_keys(&self, text: &str) -> WdResult<()> {
        self.conn
            .cmd(
                reqwest::Method::POST,
                &self.path("/value"),
                Some(json!({"text": text})),
            )
            .await
            .map(drop)
    }

    pub async fn clear(&self) -> WdResult<()> {
        self.conn
            .cmd(reqwest::Method::POST, &self.path("/clear"), Some(json!({})))
            .await
            .map(drop)
    }

    /// The rendered (visible) text.
    pub async fn text(&self) -> WdResult<String> {
        let v = self
            .conn
            .cmd(reqwest::Method::GET, &self.path("/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute, `None` when absent.
    pub async fn attr(&self, name: &str) -> WdResult<Option<String>> {
        let v = self
            .conn
            .cmd(
                reqwest::Method::GET,
                &self.path(&format!("/attribute/{name}")),
                None,
            )
            .await?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// A DOM property (`value`, `checked`, `open`, ...).
    pub async fn prop(&self, name: &str) -> WdResult<Value> {
        self.conn
            .cmd(
                reqwest::Method::GET,
                &self.path(&format!("/property/{name}")),
                None,
            )
            .await
    }

    pub async fn is_displayed(&self) -> WdResult<bool> {
        let v = self
            .conn
            .cmd(reqwest::Method::GET, &self.path("/displayed"), None)
            .await?;
        Ok(v.as_bool().unwrap_or(false))
    }

    /// The first descendant matching `css`.
    pub async fn find(&self, css: &str) -> WdResult<Element> {
        find_in(&self.conn, &self.path(""), css).await
    }

    /// Every descendant matching `css`.
    pub async fn find_all(&self, css: &str) -> WdResult<Vec<Element>> {
        find_all_in(&self.conn, &self.path(""), css).await
    }
}

fn element_of(conn: &Conn, v: &Value) -> WdResult<Element> {
    let id = v[ELEMENT_KEY]
        .as_str()
        .ok_or_else(|| transport(format!("not an element reference: {v}")))?;
    Ok(Element {
        conn: conn.clone(),
        id: id.to_owned(),
    })
}

async fn find_in(conn: &Conn, scope: &str, css: &str) -> WdResult<Element> {
    let v = conn
        .cmd(
            reqwest::Method::POST,
            &format!("{scope}/element"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .await?;
    element_of(conn, &v)
}

async fn find_all_in(conn: &Conn, scope: &str, css: &str) -> WdResult<Vec<Element>> {
    let v = conn
        .cmd(
            reqwest::Method::POST,
            &format!("{scope}/elements"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .await?;
    v.as_array()
        .map(|a| a.iter().map(|e| element_of(conn, e)).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

async fn wait_ready(http: &reqwest::Client, url: &str, driver: &mut Child) -> WdResult<()> {
    let deadline = Instant::now() + DRIVER_START;
    loop {
        if let Ok(v) = command(http, reqwest::Method::GET, &format!("{url}/status"), None).await {
            if v["ready"] == true {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(transport(format!("chromedriver exited: {status}")));
        }
        if Instant::now() >= deadline {
            return Err(transport(format!(
                "chromedriver not ready at {url} within {DRIVER_START:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free 127.0.0.1 port")
}

/// Standard base64 (with or without padding); `None` on a bad character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
