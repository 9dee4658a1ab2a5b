//! `modelyard-bench`: what Modelyard adds on top of an upstream, as a client sees it.
//!
//! One process holds the servers and the load generator:
//!
//! * the zero-latency mock upstream ([`MockUpstream`], request recording off),
//! * Modelyard with the call log on (SQLite file in a temporary directory),
//! * Modelyard with `call_log = false`,
//! * Modelyard with `call_log = false` and `[telemetry] metrics = false` (scenario 7),
//! * Modelyard with `call_log = false` and traces exported over OTLP/HTTP to a sink in this
//!   process that decodes and counts the spans (scenario 8),
//!
//! all on a multi-thread tokio runtime with 2 workers, and the load generator (reqwest with a
//! keep-alive connection pool, see [`load`]) on its own current-thread runtime on the main
//! thread. Every scenario runs against the mock directly (`model: mock-model`) and through each
//! Modelyard (`model: mock/mock-model`); the differences are what Modelyard adds. All timings
//! are taken by the client with [`std::time::Instant`]; no server-side timer is read.
//!
//! Usage: `modelyard-bench [--quick] [--out PATH]`. The markdown report ([`report`]) goes to
//! stdout, or to `PATH` with `--out`.

/// The modelyard binary's allocator, so the in-process server runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod load;
mod report;
mod sys;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use modelyard_server::{Config, RunningServer};
use modelyard_testkit::MockUpstream;
use sqlx::Connection as _;

use load::{Run, Target, PROMPT};

const USAGE: &str = "usage: modelyard-bench [--quick] [--out PATH]
  --quick     short runs for a smoke test (under 20 s)
  --out PATH  write the markdown report to PATH instead of stdout";

/// Command-line options.
struct Args {
    /// Short durations for a smoke run.
    quick: bool,
    /// Where to write the report (stdout when `None`).
    out: Option<PathBuf>,
}

/// Parses `std::env::args`.
fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--out" => args.out = Some(it.next().context("--out needs a path")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

/// Sizes and durations of the scenarios.
pub struct Plan {
    /// Requests per target in the serial scenario.
    pub serial: usize,
    /// Streams per target in the streaming scenario.
    pub streams: usize,
    /// Duration of each paced run.
    pub paced: Duration,
    /// Paced request rates, per second.
    pub rates: [u32; 2],
    /// Duration of each closed-loop run.
    pub saturation: Duration,
    /// Concurrency of the closed-loop runs.
    pub concurrency: usize,
}

impl Plan {
    /// The full plan (about 70 s in release) or the `--quick` one (about 14 s).
    fn new(quick: bool) -> Self {
        let secs = Duration::from_secs(if quick { 1 } else { 5 });
        Plan {
            serial: if quick { 300 } else { 5_000 },
            streams: if quick { 200 } else { 2_000 },
            paced: secs,
            rates: [200, 1_000],
            saturation: secs,
            concurrency: 16,
        }
    }
}

/// Every run of every scenario. Per scenario, the runs are in [`run_all`]'s target order:
/// direct, Modelyard with the call log, Modelyard without.
#[derive(Default)]
pub struct Results {
    /// Scenario 1.
    pub serial: Vec<Run>,
    /// Scenario 2, per rate.
    pub paced: Vec<(u32, Vec<Run>)>,
    /// Scenario 3.
    pub saturation: Vec<Run>,
    /// Scenario 4.
    pub streaming: Vec<Run>,
    /// Scenario 5: (call log on?, run), in run order.
    pub call_log: Vec<(bool, Run)>,
    /// Scenario 6: (through a route?, serial run) on the gateway without call
    /// log, in run order.
    pub route: Vec<(bool, Run)>,
    /// Scenario 7: (metrics on?, serial run) on gateways without call log,
    /// in run order.
    pub metrics: Vec<(bool, Run)>,
    /// Scenario 8: (tracing on?, serial run) on gateways without call log,
    /// in run order.
    pub tracing: Vec<(bool, Run)>,
    /// Requests sent to the tracing gateway (each should become two spans).
    pub traced_requests: u64,
    /// Spans the sink received once the tracing gateway shut down.
    pub traced_spans: u64,
    /// `/proc/loadavg` before the first scenario.
    pub load_before: String,
    /// `/proc/loadavg` after the last scenario.
    pub load_after: String,
    /// RSS before the first scenario, KiB.
    pub rss_start_kib: u64,
    /// Requests sent to the logging gateway (each should become one call log row).
    pub logged_attempts: u64,
    /// Rows in `llm_calls` after the logging gateway shut down.
    pub logged_rows: u64,
}

/// Runs `scenario`, adding the process CPU time it took, the CPU other processes took
/// meanwhile, and the RSS after it.
async fn measured(scenario: impl Future<Output = Run>) -> Run {
    let (start, cpu, busy) = (Instant::now(), sys::process_cpu(), sys::machine_busy());
    let mut run = scenario.await;
    run.cpu = sys::process_cpu().saturating_sub(cpu);
    let others = sys::machine_busy()
        .saturating_sub(busy)
        .saturating_sub(run.cpu);
    run.others_cores = others.as_secs_f64() / start.elapsed().as_secs_f64().max(1e-9);
    run.rss_kib = sys::rss_kib();
    run
}

/// A read connection to the logging gateway's call log, to see when it has caught up.
struct CallLog {
    /// Connection to the SQLite file.
    db: sqlx::SqliteConnection,
    /// The logging gateway.
    target: Arc<Target>,
    /// Requests sent without a row, as of the last [`CallLog::drained`].
    missing: u64,
}

impl CallLog {
    /// Opens the call log of the gateway `target` stored at `db`.
    async fn open(db: &Path, target: Arc<Target>) -> Result<CallLog> {
        let db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
        Ok(CallLog {
            db,
            target,
            missing: 0,
        })
    }

    /// Rows in `llm_calls` (`MAX(rowid)`: cheap, and nothing is ever deleted).
    async fn rows(&mut self) -> u64 {
        let rows: Option<i64> = sqlx::query_scalar("SELECT MAX(rowid) FROM llm_calls")
            .fetch_one(&mut self.db)
            .await
            .unwrap_or(None);
        rows.map_or(0, |n| n.unsigned_abs())
    }

    /// Waits until the call log holds a row for every request sent to the gateway, or its row
    /// count has not moved for a second (records were dropped). Returns the time until the last
    /// row arrived and how many records went missing since the previous call.
    async fn drained(&mut self) -> (Duration, u64) {
        let start = Instant::now();
        let (mut last, mut moved) = (0, start);
        loop {
            let rows = self.rows().await;
            let sent = self.target.attempts.load(Ordering::Relaxed);
            if rows != last {
                (last, moved) = (rows, Instant::now());
            }
            if rows >= sent || moved.elapsed() > Duration::from_secs(1) {
                let missing = sent.saturating_sub(rows);
                let new = missing.saturating_sub(self.missing);
                self.missing = missing;
                return (moved - start, new);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs `scenario` against `target` under [`measured`]; for the logging gateway the run
    /// also waits for the call log to catch up, and that wait counts in its CPU time.
    async fn measured(&mut self, target: &Target, scenario: impl Future<Output = Run>) -> Run {
        measured(async {
            let mut run = scenario.await;
            if target.call_log {
                let (drain, dropped) = self.drained().await;
                (run.log_drain, run.log_dropped) = (Some(drain), dropped);
            }
            run
        })
        .await
    }

    /// Runs a scenario against each target in turn.
    async fn each<F, Fut>(
        &mut self,
        name: &str,
        targets: &[Arc<Target>],
        mut scenario: F,
    ) -> Vec<Run>
    where
        F: FnMut(Arc<Target>) -> Fut,
        Fut: Future<Output = Run>,
    {
        let mut runs = Vec::new();
        for target in targets {
            eprintln!("{name}: {}", target.label);
            runs.push(self.measured(target, scenario(target.clone())).await);
        }
        runs
    }
}

/// Checks that `target` answers the echo completion with the expected `model`.
async fn check(client: &reqwest::Client, target: &Target, model: &str) -> Result<()> {
    let body = load::request(client, target)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} does not answer", target.label))?;
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    let content = json.pointer("/choices/0/message/content");
    ensure!(
        content.and_then(|c| c.as_str()) == Some(&format!("echo: {PROMPT}"))
            && json["model"] == model,
        "{} answered unexpectedly: {json}",
        target.label
    );
    Ok(())
}

/// Runs every scenario (on the load generator's runtime).
async fn run_all(plan: &Plan, servers: &Servers) -> Result<Results> {
    let client = &reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()?;
    let (mock, on, off, unmetered, traced) = (
        servers.mock.base_url(),
        servers.logged.base_url(),
        servers.unlogged.base_url(),
        servers.unmetered.base_url(),
        servers.traced.base_url(),
    );
    let targets = [
        Target::new("direct (mock)", &mock, "mock-model", false),
        Target::new("Modelyard, call log on", &on, "mock/mock-model", true),
        Target::new("Modelyard, call log off", &off, "mock/mock-model", false),
        Target::new("Modelyard, call log off, route", &off, ROUTE, false),
        Target::new(
            "Modelyard, call log off, metrics off",
            &unmetered,
            "mock/mock-model",
            false,
        ),
        Target::new(
            "Modelyard, call log off, traces on",
            &traced,
            "mock/mock-model",
            false,
        ),
    ];
    let models = [
        modelyard_testkit::UPSTREAM_MODEL,
        "mock/mock-model",
        "mock/mock-model",
        ROUTE,
        "mock/mock-model",
        "mock/mock-model",
    ];
    for (target, model) in targets.iter().zip(models) {
        check(client, target, model).await?;
        // Warm both ends and open `concurrency` pooled connections.
        load::serial(client, target, plan.serial / 10).await;
        load::closed_loop(client, target, plan.concurrency, Duration::from_millis(200)).await;
    }
    let mut log = CallLog::open(&servers.db, targets[1].clone()).await?;
    log.drained().await;
    // Scenarios 1-5 compare the first three targets.
    let (targets, route_target, unmetered_target, traced_target) =
        (&targets[..3], &targets[3], &targets[4], &targets[5]);
    let mut r = Results {
        load_before: sys::load_average(),
        rss_start_kib: sys::rss_kib(),
        ..Results::default()
    };

    r.serial = log
        .each("serial", targets, |t| async move {
            load::serial(client, &t, plan.serial).await
        })
        .await;
    for rate in plan.rates {
        let runs = log
            .each(&format!("paced {rate}/s"), targets, |t| async move {
                load::paced(client, &t, rate, plan.paced).await
            })
            .await;
        r.paced.push((rate, runs));
    }
    r.saturation = log
        .each("saturation", targets, |t| async move {
            load::closed_loop(client, &t, plan.concurrency, plan.saturation).await
        })
        .await;
    r.streaming = log
        .each("streaming", targets, |t| async move {
            load::streaming(client, &t, plan.streams).await
        })
        .await;
    // Call log on vs off, ABBA, so that a drift over time hits both sides alike.
    for on in [true, false, false, true] {
        let target = &targets[if on { 1 } else { 2 }];
        let run = log
            .each("call log", std::slice::from_ref(target), |t| async move {
                load::closed_loop(client, &t, plan.concurrency, plan.saturation).await
            })
            .await;
        r.call_log.extend(run.into_iter().map(|run| (on, run)));
    }
    // A route over two healthy deployments vs one deployment named
    // directly, serial, ABBA.
    for routed in [false, true, true, false] {
        let target = if routed { route_target } else { &targets[2] };
        let run = log
            .each("route", std::slice::from_ref(target), |t| async move {
                load::serial(client, &t, plan.serial).await
            })
            .await;
        r.route.extend(run.into_iter().map(|run| (routed, run)));
    }
    // Metrics on vs off (`[telemetry] metrics = false`), both without call
    // log, serial, ABBA.
    for metered in [true, false, false, true] {
        let target = if metered {
            &targets[2]
        } else {
            unmetered_target
        };
        let run = log
            .each("metrics", std::slice::from_ref(target), |t| async move {
                load::serial(client, &t, plan.serial).await
            })
            .await;
        r.metrics.extend(run.into_iter().map(|run| (metered, run)));
    }
    // Traces on (exported to the sink) vs off, both without call log and
    // with metrics on, serial, ABBA.
    for traced in [true, false, false, true] {
        let target = if traced { traced_target } else { &targets[2] };
        let run = log
            .each("tracing", std::slice::from_ref(target), |t| async move {
                load::serial(client, &t, plan.serial).await
            })
            .await;
        r.tracing.extend(run.into_iter().map(|run| (traced, run)));
    }
    r.traced_requests = traced_target.attempts.load(Ordering::Relaxed);
    r.load_after = sys::load_average();
    r.logged_attempts = targets[1].attempts.load(Ordering::Relaxed);
    Ok(r)
}

/// The servers under test, all on the server runtime.
struct Servers {
    /// The zero-latency upstream.
    mock: MockUpstream,
    /// Modelyard with the call log on.
    logged: RunningServer,
    /// Modelyard with `call_log = false`.
    unlogged: RunningServer,
    /// Modelyard with `call_log = false` and `[telemetry] metrics = false`.
    unmetered: RunningServer,
    /// Modelyard with `call_log = false` and `[telemetry] otlp_endpoint` at
    /// [`Servers::sink`].
    traced: RunningServer,
    /// The OTLP/HTTP receiver of the tracing gateway's spans.
    sink: SpanSink,
    /// The logging gateway's SQLite file.
    db: PathBuf,
}

/// The route of scenario 6: two providers in front of the same mock.
const ROUTE: &str = "pair";

/// Starts a Modelyard in front of `mock` with its database at `db`; a
/// second provider `mock2` (the same mock) and the route [`ROUTE`] over
/// both.
async fn start_gateway(
    mock: &MockUpstream,
    db: &Path,
    call_log: bool,
    metrics: bool,
    otlp: Option<&str>,
) -> Result<RunningServer> {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\nurl = {url:?}\ndata_dir = {dir:?}\ncall_log = {call_log}\n\
         [[providers]]\nname = \"mock\"\nkind = \"llama-cpp\"\nbase_url = {base:?}\n\
         [[providers]]\nname = \"mock2\"\nkind = \"llama-cpp\"\nbase_url = {base:?}\n\
         [[routes]]\nname = \"{ROUTE}\"\ntargets = [\"mock/mock-model\", \"mock2/mock-model\"]\n\
         affinity = \"none\"\n\
         [telemetry]\nmetrics = {metrics}\n{otlp}",
        otlp = otlp.map_or(String::new(), |url| format!("otlp_endpoint = {url:?}\n")),
        url = format!("sqlite://{}", db.display()),
        dir = db.parent().unwrap_or(db).display().to_string(),
        base = mock.base_url(),
    );
    let no_env = |_: &str| None;
    let config = Config::from_toml(&toml, "modelyard-bench", None, &no_env)?;
    Ok(modelyard_server::start(config, &no_env).await?)
}

impl Servers {
    /// Starts the mock and both gateways with their databases in `dir`.
    async fn start(dir: &Path) -> Result<Servers> {
        let mock = MockUpstream::start().await;
        mock.set_record_requests(false);
        let db = dir.join("calls.db");
        let logged = start_gateway(&mock, &db, true, true, None).await?;
        let unlogged = start_gateway(&mock, &dir.join("unused.db"), false, true, None).await?;
        let unmetered = start_gateway(&mock, &dir.join("unused2.db"), false, false, None).await?;
        let sink = SpanSink::start()?;
        let traced =
            start_gateway(&mock, &dir.join("unused3.db"), false, true, Some(&sink.url)).await?;
        Ok(Servers {
            mock,
            logged,
            unlogged,
            unmetered,
            traced,
            sink,
            db,
        })
    }

    /// Shuts everything down (the call log drains, the last spans are
    /// exported) and counts the call log rows and the spans received.
    async fn stop(self) -> Result<(u64, u64)> {
        self.logged.shutdown().await;
        self.unlogged.shutdown().await;
        self.unmetered.shutdown().await;
        self.traced.shutdown().await;
        let spans = self.sink.spans.load(Ordering::Relaxed);
        drop(self.mock);
        let url = format!("sqlite://{}", self.db.display());
        let mut db = sqlx::SqliteConnection::connect(&url).await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM llm_calls")
            .fetch_one(&mut db)
            .await?;
        db.close().await?;
        Ok((rows.unsigned_abs(), spans))
    }
}

/// A local OTLP/HTTP trace receiver on its own thread: decodes each export
/// and counts its spans (what a collector on the same machine would do
/// first). Its thread runs until the process exits.
struct SpanSink {
    /// Its base URL.
    url: String,
    /// Spans received.
    spans: Arc<std::sync::atomic::AtomicU64>,
}

impl SpanSink {
    fn start() -> Result<SpanSink> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;
        let spans = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: bytes::Bytes| {
                let counted = Arc::clone(&counted);
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    let n: usize = (request.resource_spans.iter())
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum();
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    axum::http::StatusCode::OK
                }
            }),
        );
        // Its own thread and runtime, as a collector would be its own
        // process: decoding does not take the gateways' workers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("bench-span-sink".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, app).await
                })
            })?;
        Ok(SpanSink { url, spans })
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let plan = Plan::new(args.quick);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("modelyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let outcome = (|| {
        let servers = server_rt.block_on(Servers::start(&dir))?;
        let ran = client_rt.block_on(run_all(&plan, &servers));
        let stopped = server_rt.block_on(servers.stop());
        let mut results = ran?;
        (results.logged_rows, results.traced_spans) = stopped?;
        Ok::<_, anyhow::Error>(report::render(&plan, &results))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let report = outcome?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        None => print!("{report}"),
    }
    Ok(())
}
