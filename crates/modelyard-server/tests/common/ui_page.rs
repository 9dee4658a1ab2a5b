//! The page helpers of the browser tests (`tests/ui*.rs`): a [`UiPage`] is
//! one headless Chromium ([`Browser`], own chromedriver and profile) on a
//! [`TestServer`]'s `/ui`, named after its test.
//!
//! Every wait is a bounded poll ([`WAIT`], every [`POLL`]); a wait that
//! times out saves `<name>-failure.png` and panics with what was awaited,
//! the page's URL, its console log and a DOM excerpt ([`UiPage::diagnose`]).
//! Screenshots go to `target/ui-screenshots/<name>-<step>.png`
//! ([`screenshot_dir`]).
//!
//! Each test binary compiles this module on its own; what a binary does not
//! use is dead code there (allowed for all of `common`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::webdriver::{Browser, Element, WdResult};
use super::TestServer;

/// Bound of every wait on the page.
pub const WAIT: Duration = Duration::from_secs(20);
/// Interval between two polls of a wait.
pub const POLL: Duration = Duration::from_millis(50);

/// `[data-testid="<id>"]`, the CSS selector of the UI's DOM contract.
pub fn tid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

/// Where chromedriver and Chromium are (`MODELYARD_TEST_CHROMEDRIVER`,
/// `MODELYARD_TEST_CHROMIUM`; an empty value counts as unset).
#[derive(Debug, Clone)]
pub struct BrowserPaths {
    /// The chromedriver binary.
    pub driver: PathBuf,
    /// The Chromium binary; `None`: chromedriver's own choice.
    pub chromium: Option<PathBuf>,
}

/// An environment variable, `None` when unset or empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The browser from the environment, `None` (the test is skipped, a line on
/// stderr says so) when `MODELYARD_TEST_CHROMEDRIVER` is unset.
pub fn browser_paths() -> Option<BrowserPaths> {
    let Some(driver) = env_var("MODELYARD_TEST_CHROMEDRIVER") else {
        eprintln!("skipped: MODELYARD_TEST_CHROMEDRIVER is not set");
        return None;
    };
    Some(BrowserPaths::with_driver(driver))
}

/// The browser from the environment, required: `None` (skipped) only when
/// `MODELYARD_SKIP_BROWSER=1` says so on purpose.
///
/// # Panics
/// When `MODELYARD_TEST_CHROMEDRIVER` is unset and the tests are not
/// skipped on purpose; the message says how to set it up.
pub fn required_browser_paths() -> Option<BrowserPaths> {
    match env_var("MODELYARD_TEST_CHROMEDRIVER") {
        Some(driver) => Some(BrowserPaths::with_driver(driver)),
        None if env_var("MODELYARD_SKIP_BROWSER").as_deref() == Some("1") => {
            eprintln!("skipped: MODELYARD_SKIP_BROWSER=1");
            None
        }
        None => panic!(
            "MODELYARD_TEST_CHROMEDRIVER is not set: run scripts/browser-setup.sh, then \
             MODELYARD_TEST_CHROMEDRIVER=/usr/bin/chromedriver MODELYARD_TEST_CHROMIUM=/usr/bin/chromium \
             cargo test -p modelyard-server --test ui (scripts/test.sh does both), \
             or set MODELYARD_SKIP_BROWSER=1 to skip the browser tests"
        ),
    }
}

impl BrowserPaths {
    /// `driver`, and Chromium from `MODELYARD_TEST_CHROMIUM`.
    fn with_driver(driver: String) -> Self {
        Self {
            driver: driver.into(),
            chromium: env_var("MODELYARD_TEST_CHROMIUM").map(PathBuf::from),
        }
    }
}

/// `target/ui-screenshots` (kept by CI as an artifact).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("ui-screenshots")
}

/// Browsers running at once across one test binary: on 2 cores more make
/// every wait slower than the streams the tests watch.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// Polls `$body` (an expression giving `Option<T>`, may `.await`) until it
/// is `Some`, for up to [`WAIT`] (or `$limit`); then panics with
/// `$ui.diagnose($what)` (`$what` is evaluated only then, so it may show the
/// last value the body saw).
macro_rules! wait_for {
    ($ui:expr, $what:expr, $body:expr) => {
        $crate::common::ui_page::wait_for!($ui, $what, $crate::common::ui_page::WAIT, $body)
    };
    ($ui:expr, $what:expr, $limit:expr, $body:expr) => {{
        let deadline = ::tokio::time::Instant::now() + $limit;
        loop {
            if let Some(v) = $body {
                break v;
            }
            if ::tokio::time::Instant::now() >= deadline {
                let what = $what;
                let report = $ui.diagnose(&format!("{what} (waited {:?})", $limit)).await;
                panic!("{report}");
            }
            ::tokio::time::sleep($crate::common::ui_page::POLL).await;
        }
    }};
}
pub(crate) use wait_for;

/// A browser on a server's UI, named after its test: the name is the stem
/// of its screenshots (`<name>-<step>.png`) and heads its failure reports.
pub struct UiPage {
    /// The WebDriver session, for what the helpers here do not cover.
    pub b: Browser,
    base: String,
    name: &'static str,
    /// At most [`BROWSERS`] browsers at once.
    _permit: SemaphorePermit<'static>,
}

impl UiPage {
    /// Starts a browser on `server` once fewer than two run in this binary.
    ///
    /// # Panics
    /// When chromedriver or Chromium does not start.
    pub async fn launch(paths: &BrowserPaths, server: &TestServer, name: &'static str) -> Self {
        let permit = BROWSERS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        Self::start(paths, server, name, permit).await
    }

    /// Two browsers at once. Their permits are taken together: taken one
    /// by one, two such tests could each hold one and wait for ever.
    pub async fn launch_two(
        paths: &BrowserPaths,
        server: &TestServer,
        names: [&'static str; 2],
    ) -> (Self, Self) {
        let mut first = BROWSERS
            .acquire_many(2)
            .await
            .expect("the semaphore is never closed");
        let second = first.split(1).expect("two permits");
        let a = Self::start(paths, server, names[0], first).await;
        let b = Self::start(paths, server, names[1], second).await;
        (a, b)
    }

    async fn start(
        paths: &BrowserPaths,
        server: &TestServer,
        name: &'static str,
        permit: SemaphorePermit<'static>,
    ) -> Self {
        let b = Browser::launch(&paths.driver, paths.chromium.as_deref())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "start chromedriver {} / chromium {:?}: {e}",
                    paths.driver.display(),
                    paths.chromium
                )
            });
        // A failure screenshot of an earlier run would mislead.
        let _ = std::fs::remove_file(screenshot_dir().join(format!("{name}-failure.png")));
        Self {
            b,
            base: server.base_url.clone(),
            name,
            _permit: permit,
        }
    }

    /// Opens `/ui#<route>` (`route` like `/chat/<id>`).
    pub async fn open(&self, route: &str) {
        let url = format!("{}/ui#{route}", self.base);
        if let Err(e) = self.b.goto(&url).await {
            panic!("{}", self.diagnose(&format!("open {url}: {e}")).await);
        }
    }

    /// Runs a script (given `args`, its `arguments`); panics (with
    /// diagnostics) if it throws.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        match self.b.execute(script, args).await {
            Ok(v) => v,
            Err(e) => panic!(
                "{}",
                self.diagnose(&format!("script failed: {e}\n{script}"))
                    .await
            ),
        }
    }

    /// Saves `target/ui-screenshots/<name>-<step>.png` (best effort: a
    /// failure is a line on stderr).
    pub async fn shot(&self, step: &str) {
        let path = screenshot_dir().join(format!("{}-{step}.png", self.name));
        if let Err(e) = self.b.screenshot(&path).await {
            eprintln!("screenshot {}: {e}", path.display());
        }
    }

    /// A failure report: what was awaited, the URL, the console and a DOM
    /// excerpt (6000 characters); also saves `<name>-failure.png`.
    pub async fn diagnose(&self, what: &str) -> String {
        self.shot("failure").await;
        let url = self.b.current_url().await.unwrap_or_default();
        let console = self.b.console_log().await.unwrap_or_default().join("\n");
        let dom = self
            .b
            .execute(
                "return document.body ? document.body.outerHTML : '(no body)'",
                vec![],
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| format!("(DOM unavailable: {e})"));
        let dom: String = dom.chars().take(6000).collect();
        format!(
            "[{}] {what}\nurl: {url}\nconsole:\n{console}\nDOM (first 6000 chars):\n{dom}\nscreenshot: {}",
            self.name,
            screenshot_dir()
                .join(format!("{}-failure.png", self.name))
                .display()
        )
    }

    /// Polls `script` (given `args`) until `pred` accepts its value; returns
    /// that value. A script that throws is polled again.
    pub async fn wait_js(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        wait_for!(self, format!("{what}; last value: {last}"), {
            match self.b.execute(script, args.clone()).await {
                Ok(v) if pred(&v) => Some(v),
                Ok(v) => {
                    last = v;
                    None
                }
                Err(e) => {
                    last = Value::String(e.to_string());
                    None
                }
            }
        })
    }

    /// Waits for the first element matching `css`.
    pub async fn el(&self, css: &str) -> Element {
        wait_for!(
            self,
            format!("an element {css}"),
            self.b.find(css).await.ok()
        )
    }

    /// Clicks the first element matching `css`, retrying while it is
    /// missing, stale or not yet interactable (the pages re-render).
    pub async fn click(&self, css: &str) {
        self.act("click", css, async |e| e.click().await).await;
    }

    /// Types `text` into the first element matching `css` (retried as
    /// [`UiPage::click`]).
    pub async fn type_in(&self, css: &str, text: &str) {
        self.act("type into", css, async |e| e.send_keys(text).await)
            .await;
    }

    /// Replaces the value of the first input matching `css` with `text`
    /// (retried as [`UiPage::click`]).
    pub async fn fill(&self, css: &str, text: &str) {
        self.act("fill", css, async |e| {
            e.clear().await?;
            e.send_keys(text).await
        })
        .await;
    }

    /// Finds the first element matching `css` and does `action` on it,
    /// again until both succeed; a timeout reports `<verb> <css>` and the
    /// last error.
    async fn act(&self, verb: &str, css: &str, action: impl AsyncFn(&Element) -> WdResult<()>) {
        let mut last = String::new();
        wait_for!(self, format!("{verb} {css}: {last}"), {
            let done = match self.b.find(css).await {
                Ok(e) => action(&e).await,
                Err(err) => Err(err),
            };
            match done {
                Ok(()) => Some(()),
                Err(err) => {
                    last = err.to_string();
                    None
                }
            }
        })
    }
}
