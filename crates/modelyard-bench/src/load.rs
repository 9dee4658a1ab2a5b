//! The load generator: targets, the four request patterns, and what a run measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use tokio::task::JoinSet;

/// The user message of every request; the mock answers `echo: say hello` (3 words, so a stream
/// is role chunk + 3 word chunks + finish chunk + `[DONE]` = 6 events).
pub(crate) const PROMPT: &str = "say hello";

/// Where requests go, with the request bodies prepared once.
pub(crate) struct Target {
    /// Name in the report.
    pub label: &'static str,
    /// `.../v1/chat/completions`.
    url: String,
    /// Non-streaming request body.
    body: Bytes,
    /// Streaming request body.
    stream_body: Bytes,
    /// Whether this is the gateway with the call log on.
    pub call_log: bool,
    /// Requests sent so far (each one a call record for a logging gateway).
    pub attempts: AtomicU64,
}

impl Target {
    /// A target at `base` (`http://host:port`) asking for `model`.
    pub(crate) fn new(label: &'static str, base: &str, model: &str, call_log: bool) -> Arc<Target> {
        let body = |stream: bool| {
            Bytes::from(
                serde_json::json!({
                    "model": model,
                    "messages": [{"role": "user", "content": PROMPT}],
                    "stream": stream,
                })
                .to_string(),
            )
        };
        Arc::new(Target {
            label,
            url: format!("{base}/v1/chat/completions"),
            body: body(false),
            stream_body: body(true),
            call_log,
            attempts: AtomicU64::new(0),
        })
    }

    /// Starts a POST of `body` (counted in `attempts`).
    fn post(&self, client: &reqwest::Client, body: &Bytes) -> reqwest::RequestBuilder {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
    }
}

/// One non-streaming request, body read to the end; `Err` for a transport error or a
/// non-2xx status.
pub(crate) async fn request(client: &reqwest::Client, target: &Target) -> Result<Bytes, String> {
    let response = target
        .post(client, &target.body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let head = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status}: {head}"));
    }
    Ok(body)
}

/// Latency percentiles, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Mean.
    pub mean: u64,
}

impl Summary {
    /// Nearest-rank percentiles of `samples` (sorted here).
    pub fn of(mut samples: Vec<u64>) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let rank = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).max(1) - 1];
        Summary {
            p50: rank(0.50),
            p99: rank(0.99),
            mean: samples.iter().sum::<u64>() / samples.len() as u64,
        }
    }
}

/// Nanoseconds of a duration (saturating).
pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Successes and failures of a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

impl Tally {
    /// Counts one outcome.
    pub fn add<T>(&mut self, outcome: Result<T, String>) {
        match outcome {
            Ok(_) => self.ok += 1,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Streaming-only figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamStats {
    /// Request start → first body byte.
    pub ttfb: Summary,
    /// Mean over streams of (total − TTFB) / (body chunks − 1), ns.
    pub per_chunk_ns: f64,
    /// Mean HTTP body chunks received per stream.
    pub chunks: f64,
    /// Mean SSE events per stream.
    pub events: f64,
}

/// What one run of a scenario against one target measured.
#[derive(Debug, Default)]
pub struct Run {
    /// Outcomes.
    pub tally: Tally,
    /// Wall time from the first send to the last response.
    pub wall: Duration,
    /// Latency: request start → body end (paced runs: from the *scheduled* send time).
    pub latency: Summary,
    /// Paced runs: latency from the actual send time.
    pub service: Option<Summary>,
    /// Paced runs: actual send time − scheduled time (the load generator's own lateness).
    pub send_lag: Option<Summary>,
    /// Runs against the logging gateway: time from the end of the run until the call log held
    /// a row for every request.
    pub log_drain: Option<Duration>,
    /// Streaming runs.
    pub stream: Option<StreamStats>,
    /// Process CPU time (user + system) spent during the run.
    pub cpu: Duration,
    /// Runs against the logging gateway: requests of this run that got no call log row
    /// (dropped on a full queue).
    pub log_dropped: u64,
    /// CPU used by *other* processes during the run, in cores (a busy machine skews figures).
    pub others_cores: f64,
    /// Process resident set size after the run, KiB.
    pub rss_kib: u64,
}

impl Run {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.tally.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Requests per second that made it into the call log, counting the log's catch-up time
    /// as part of the run (equal to [`Run::rate`] without a call log).
    pub fn logged_rate(&self) -> f64 {
        let wall = self.wall + self.log_drain.unwrap_or_default();
        (self.tally.ok.saturating_sub(self.log_dropped)) as f64 / wall.as_secs_f64().max(1e-9)
    }

    /// Process CPU microseconds per request sent.
    pub fn cpu_per_request_us(&self) -> f64 {
        let n = (self.tally.ok + self.tally.errors).max(1);
        self.cpu.as_secs_f64() * 1e6 / n as f64
    }
}

/// Scenario 1: `n` requests one after another on one keep-alive connection.
pub(crate) async fn serial(client: &reqwest::Client, target: &Target, n: usize) -> Run {
    let mut latencies = Vec::with_capacity(n);
    let mut tally = Tally::default();
    let start = Instant::now();
    for _ in 0..n {
        let sent = Instant::now();
        let outcome = request(client, target).await;
        latencies.push(ns(sent.elapsed()));
        tally.add(outcome);
    }
    Run {
        tally,
        wall: start.elapsed(),
        latency: Summary::of(latencies),
        ..Run::default()
    }
}

/// Scenario 2: open loop, `rate` requests per second for `duration`, each sent on its own task
/// at its scheduled time whatever the earlier ones are doing. Latency is counted from the
/// scheduled time, so a late send (a stalled client or server) is charged to the latency
/// instead of silently lowering the rate (coordinated omission).
///
/// The schedule is kept by a pacer thread sleeping with `std::thread::sleep` (tens of µs of
/// slack) rather than a tokio interval: tokio's timer has 1 ms granularity and rounds up, which
/// made every send about 1 ms late and buried the sub-millisecond figures this measures.
pub(crate) async fn paced(
    client: &reqwest::Client,
    target: &Arc<Target>,
    rate: u32,
    duration: Duration,
) -> Run {
    let period = Duration::from_secs(1) / rate;
    let total = (f64::from(rate) * duration.as_secs_f64()) as u32;
    let start = Instant::now() + Duration::from_millis(2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + period * i;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if tx.send(at).is_err() {
                break;
            }
        }
    });
    let mut tasks = JoinSet::new();
    while let Some(scheduled) = rx.recv().await {
        let (client, target) = (client.clone(), target.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = request(&client, &target).await;
            let done = Instant::now();
            let times = [done - scheduled, done - sent, sent - scheduled].map(ns);
            (times, outcome.map(drop))
        });
    }
    let _ = pacer.join();
    let mut tally = Tally::default();
    let mut samples: [Vec<u64>; 3] = Default::default();
    while let Some(joined) = tasks.join_next().await {
        let (times, outcome) = joined.unwrap_or(([0; 3], Err("task panicked".into())));
        for (vec, t) in samples.iter_mut().zip(times) {
            vec.push(t);
        }
        tally.add(outcome);
    }
    let [from_schedule, from_send, lag] = samples;
    Run {
        tally,
        wall: start.elapsed(),
        latency: Summary::of(from_schedule),
        service: Some(Summary::of(from_send)),
        send_lag: Some(Summary::of(lag)),
        ..Run::default()
    }
}

/// Scenarios 3 and 5: `concurrency` tasks each sending back to back until `duration` is over.
pub(crate) async fn closed_loop(
    client: &reqwest::Client,
    target: &Arc<Target>,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, target) = (client.clone(), target.clone());
        tasks.spawn(async move {
            let (mut latencies, mut tally) = (Vec::new(), Tally::default());
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = request(&client, &target).await;
                latencies.push(ns(sent.elapsed()));
                tally.add(outcome);
            }
            (latencies, tally)
        });
    }
    let (mut latencies, mut tally) = (Vec::new(), Tally::default());
    while let Some(joined) = tasks.join_next().await {
        let (l, t) = joined.unwrap_or_default();
        latencies.extend(l);
        tally.merge(t);
    }
    Run {
        tally,
        wall: start.elapsed(),
        latency: Summary::of(latencies),
        ..Run::default()
    }
}

/// Timings of one streamed answer.
struct StreamSample {
    /// Request start → first body chunk, ns.
    ttfb: u64,
    /// Request start → end of body, ns.
    total: u64,
    /// HTTP body chunks received.
    chunks: u32,
    /// SSE events (`data: ` lines).
    events: u32,
}

/// One streaming request read chunk by chunk; it must end with `data: [DONE]`.
async fn stream_once(client: &reqwest::Client, target: &Target) -> Result<StreamSample, String> {
    let sent = Instant::now();
    let mut response = target
        .post(client, &target.stream_body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let (mut ttfb, mut chunks, mut body) = (None, 0, Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        ttfb.get_or_insert_with(|| ns(sent.elapsed()));
        chunks += 1;
        body.extend_from_slice(&chunk);
    }
    let total = ns(sent.elapsed());
    if !body.ends_with(b"data: [DONE]\n\n") {
        return Err(format!(
            "stream did not end with [DONE]: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let events = body.windows(6).filter(|w| w == b"data: ").count() as u32;
    Ok(StreamSample {
        ttfb: ttfb.unwrap_or(total),
        total,
        chunks,
        events,
    })
}

/// Scenario 4: `n` streams one after another.
pub(crate) async fn streaming(client: &reqwest::Client, target: &Target, n: usize) -> Run {
    let (mut ttfb, mut total, mut per_chunk) = (Vec::new(), Vec::new(), Vec::new());
    let (mut chunks, mut events) = (0u64, 0u64);
    let mut tally = Tally::default();
    let start = Instant::now();
    for _ in 0..n {
        let outcome = stream_once(client, target).await;
        if let Ok(s) = &outcome {
            ttfb.push(s.ttfb);
            total.push(s.total);
            if s.chunks > 1 {
                per_chunk.push((s.total - s.ttfb) as f64 / f64::from(s.chunks - 1));
            }
            chunks += u64::from(s.chunks);
            events += u64::from(s.events);
        }
        tally.add(outcome);
    }
    let ok = tally.ok.max(1) as f64;
    let stats = StreamStats {
        ttfb: Summary::of(ttfb),
        per_chunk_ns: per_chunk.iter().sum::<f64>() / (per_chunk.len().max(1) as f64),
        chunks: chunks as f64 / ok,
        events: events as f64 / ok,
    };
    Run {
        tally,
        wall: start.elapsed(),
        latency: Summary::of(total),
        stream: Some(stats),
        ..Run::default()
    }
}
