//! `fanout-bench`: live conversation events under load (issue 4's benchmark).
//!
//! A timestamping upstream (inside this process) streams chat chunks whose
//! text is the send time in ns since a shared epoch; subscribers parse each
//! `text.delta` and take `now − sent` as the delivery latency from upstream
//! chunk to subscriber (through the provider client, the turn engine, the
//! transient buffer, the bus and the SSE feed).
//!
//! * A: one turn fanned out to 100 SSE subscribers of its conversation.
//! * B: 200 concurrent turns, each followed by its own streaming response.
//!
//! * C (with `--postgres URL`): scenario A across two replicas (`[cluster]`
//!   on a fresh database on that PostgreSQL server, NATS at `--nats URL`,
//!   default `nats://127.0.0.1:4222`): the turn runs on replica A, 50
//!   subscribers follow it on A and 50 on B; latency reported per replica.
//!
//! The stream caps are raised (`max_streams_per_key` and `_per_project`
//! 1 000; the defaults, 64 and 256, would refuse A and B).
//!
//! Reports delivered events/s, latency p50/p99/max, and RSS growth per
//! stream. Servers run on a 2-worker runtime, clients on another 1-worker
//! runtime in the same process.
//! Usage: `fanout-bench [--quick] [--postgres URL [--nats URL]]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{json, Value};

static EPOCH: OnceLock<Instant> = OnceLock::new();
static CHUNKS: AtomicU64 = AtomicU64::new(100);
static INTERVAL_US: AtomicU64 = AtomicU64::new(10_000);

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn chunk(content: &str) -> Bytes {
    let body = json!({"id": "ts", "object": "chat.completion.chunk", "created": 0, "model": "ts",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    Bytes::from(format!("data: {body}\n\n"))
}

async fn chat() -> axum::response::Response {
    let chunks = CHUNKS.load(Ordering::Relaxed);
    let interval = Duration::from_micros(INTERVAL_US.load(Ordering::Relaxed));
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i > chunks + 1 {
            return None;
        }
        let bytes = if i == 0 {
            chunk("")
        } else if i <= chunks {
            tokio::time::sleep(interval).await;
            chunk(&format!("{} ", now_ns()))
        } else {
            let finish = json!({"id": "ts", "object": "chat.completion.chunk", "created": 0, "model": "ts",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            let usage = json!({"id": "ts", "object": "chat.completion.chunk", "created": 0, "model": "ts", "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": chunks, "total_tokens": chunks + 1}});
            Bytes::from(format!(
                "data: {finish}\n\ndata: {usage}\n\ndata: [DONE]\n\n"
            ))
        };
        Some((Ok::<_, std::convert::Infallible>(bytes), i + 1))
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn start_upstream() -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route(
            "/v1/models",
            axum::routing::get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "ts", "object": "model"}]}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// Reads an SSE response, recording each `text.delta`'s latency; returns
/// when `turn.completed` (or any turn end) arrives.
async fn follow(
    mut response: reqwest::Response,
    latencies: Arc<Mutex<Vec<u64>>>,
) -> anyhow::Result<u64> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut received = 0;
    let mut local = Vec::new();
    while let Some(bytes) = response.chunk().await? {
        buffer.extend_from_slice(&bytes);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let event = text
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data = text
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("");
            if event == "text.delta" {
                let now = now_ns();
                let value: Value = serde_json::from_str(data)?;
                for ts in value["delta"].as_str().unwrap_or("").split_whitespace() {
                    if let Ok(sent) = ts.parse::<u64>() {
                        local.push(now.saturating_sub(sent));
                        received += 1;
                    }
                }
            } else if event.starts_with("turn.") && event != "turn.started" {
                anyhow::ensure!(event == "turn.completed", "turn ended with {event}: {data}");
                // A poisoned lock only means another stream task panicked; the
                // latencies recorded so far are still valid.
                latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(local);
                return Ok(received);
            }
        }
    }
    anyhow::bail!("stream ended before the turn did")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1_000.0
}

struct Outcome {
    name: String,
    streams: usize,
    events: u64,
    wall: Duration,
    latencies: Vec<u64>,
    rss_growth_kib: i64,
}

/// One turn on `runner`, followed by SSE subscribers on each of
/// `subscribers` (`(base URL, count)`); one [`Outcome`] per base URL.
async fn fan_out(
    client: &reqwest::Client,
    runner: &str,
    subscribers: &[(&str, usize)],
) -> anyhow::Result<Vec<Outcome>> {
    let c: Value = client
        .post(format!("{runner}/v1/conversations"))
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    let rss_before = rss_kib() as i64;
    let mut groups = Vec::new();
    for (base, count) in subscribers {
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..*count {
            let response = client
                .get(format!("{base}/v1/conversations/{id}/events"))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "events: {}",
                response.status()
            );
            tasks.push(tokio::spawn(follow(response, Arc::clone(&latencies))));
        }
        groups.push((base.to_string(), *count, latencies, tasks));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = client
        .post(format!("{runner}/v1/conversations/{id}/turns"))
        .json(&json!({"content": "go"}))
        .send()
        .await?
        .status();
    anyhow::ensure!(status.as_u16() == 202, "turn start: {status}");
    let mut rss_peak = rss_before;
    let mut outcomes = Vec::new();
    for (base, count, latencies, tasks) in groups {
        let mut events = 0;
        for task in tasks {
            events += task.await??;
            rss_peak = rss_peak.max(rss_kib() as i64);
        }
        let mut l = latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        l.sort_unstable();
        outcomes.push(Outcome {
            name: base,
            streams: count,
            events,
            wall: started.elapsed(),
            latencies: l,
            rss_growth_kib: rss_peak - rss_before,
        });
    }
    Ok(outcomes)
}

/// Two replicas (`a`, `b`) on a fresh database of the PostgreSQL server at
/// `postgres` and NATS at `nats`, both providing the timestamping upstream;
/// waits until both say `events: "nats"` in `GET /health`.
async fn start_cluster(
    upstream: &str,
    postgres: &str,
    nats: &str,
) -> anyhow::Result<(Vec<modelyard_server::RunningServer>, String)> {
    use sqlx::{ConnectOptions, Connection, Executor};
    use std::str::FromStr;
    let admin = sqlx::postgres::PgConnectOptions::from_str(postgres)?.database("postgres");
    let name = format!("modelyard_fanout_{}", std::process::id());
    let mut conn = admin.connect().await?;
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\"").as_str())
        .await?;
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await?;
    let _ = conn.close().await;
    let url = admin.database(&name).to_url_lossy().to_string();
    let mut replicas = Vec::new();
    for replica in ["a", "b"] {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"{url}\"\n\
             [cluster]\nreplica_id = \"{replica}\"\nnats_url = \"{nats}\"\n\
             [limits]\nmax_streams_per_key = 1000\nmax_streams_per_project = 1000\n[defaults]\nmodel = \"ts/ts\"\n[[providers]]\nname = \"ts\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n"
        );
        let no_env = |_: &str| None;
        let config = modelyard_server::Config::from_toml(&toml, "fanout-bench", None, &no_env)?;
        replicas.push(modelyard_server::start(config, &no_env).await?);
    }
    let client = reqwest::Client::new();
    for replica in &replicas {
        let health = format!("{}/health", replica.base_url());
        let mut mode = String::new();
        for _ in 0..100 {
            let h: Value = client.get(&health).send().await?.json().await?;
            mode = h["events"].as_str().unwrap_or_default().to_owned();
            if mode == "nats" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(
            mode == "nats",
            "replica not on NATS ({nats}): events = {mode:?}"
        );
    }
    Ok((replicas, name))
}

/// Drops the cluster scenario's database.
async fn drop_database(postgres: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection, Executor};
    use std::str::FromStr;
    let admin = sqlx::postgres::PgConnectOptions::from_str(postgres)?.database("postgres");
    let mut conn = admin.connect().await?;
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await?;
    let _ = conn.close().await;
    Ok(())
}

/// The value after `flag` on the command line.
fn arg(flag: &str) -> Option<String> {
    let mut args = std::env::args();
    args.find(|a| a == flag)?;
    args.next()
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    EPOCH.get_or_init(Instant::now);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("modelyard-fanout-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let postgres = arg("--postgres");
    let nats = arg("--nats").unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let (server, upstream) = servers.block_on(async {
        let upstream = start_upstream().await?;
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/bench.db\"\n\
             [limits]\nmax_streams_per_key = 1000\nmax_streams_per_project = 1000\n[defaults]\nmodel = \"ts/ts\"\n[[providers]]\nname = \"ts\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n",
            dir.display()
        );
        let no_env = |_: &str| None;
        let config = modelyard_server::Config::from_toml(&toml, "fanout-bench", None, &no_env)?;
        anyhow::Ok((modelyard_server::start(config, &no_env).await?, upstream))
    })?;
    let (cluster, database) = match &postgres {
        Some(postgres) => {
            let (replicas, name) = servers.block_on(start_cluster(&upstream, postgres, &nats))?;
            (replicas, Some(name))
        }
        None => (Vec::new(), None),
    };
    let replica_bases: Vec<String> = cluster.iter().map(|r| r.base_url()).collect();
    let base = server.base_url();
    let (a_chunks, b_turns, b_chunks) = if quick {
        (100, 40, 20)
    } else {
        (500, 200, 100)
    };
    let outcomes = clients.block_on(async {
        let client = reqwest::Client::new();
        let new_conversation = || async {
            let c: Value = client
                .post(format!("{base}/v1/conversations"))
                .json(&json!({}))
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(c["id"].as_str().unwrap_or_default().to_owned())
        };
        let mut outcomes = Vec::new();

        // A: one turn, 100 subscribers.
        CHUNKS.store(a_chunks, Ordering::Relaxed);
        INTERVAL_US.store(2_000, Ordering::Relaxed);
        let runs = fan_out(&client, &base, &[(base.as_str(), 100)]).await?;
        outcomes.extend(runs.into_iter().map(|mut o| {
            o.name = format!("A: 1 turn × 100 subscribers, {a_chunks} chunks @ 2 ms");
            o
        }));

        // B: 200 concurrent turns, each streamed to its caller.
        CHUNKS.store(b_chunks, Ordering::Relaxed);
        INTERVAL_US.store(10_000, Ordering::Relaxed);
        let mut ids = Vec::new();
        for _ in 0..b_turns {
            ids.push(new_conversation().await?);
        }
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let rss_before = rss_kib() as i64;
        let started = Instant::now();
        let mut turns = Vec::new();
        for id in &ids {
            let response = client
                .post(format!("{base}/v1/conversations/{id}/turns"))
                .json(&json!({"content": "go", "stream": true}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "turn start: {}",
                response.status()
            );
            turns.push(tokio::spawn(follow(response, Arc::clone(&latencies))));
        }
        let sampler = tokio::spawn(async move {
            let mut peak = 0i64;
            for _ in 0..200 {
                peak = peak.max(rss_kib() as i64);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        let mut events = 0;
        for t in turns {
            events += t.await??;
        }
        let wall = started.elapsed();
        sampler.abort();
        let rss_peak = rss_kib() as i64;
        let mut l = latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        l.sort_unstable();
        outcomes.push(Outcome {
            name: format!("B: {b_turns} concurrent turns, {b_chunks} chunks @ 10 ms each"),
            streams: b_turns,
            events,
            wall,
            latencies: l,
            rss_growth_kib: rss_peak - rss_before,
        });

        // C: scenario A across two replicas: the turn on A, half the
        // subscribers on each.
        if let [a, b] = replica_bases.as_slice() {
            CHUNKS.store(a_chunks, Ordering::Relaxed);
            INTERVAL_US.store(2_000, Ordering::Relaxed);
            let runs = fan_out(&client, a, &[(a.as_str(), 50), (b.as_str(), 50)]).await?;
            for (mut o, on) in runs.into_iter().zip(["A (runs the turn)", "B (over NATS)"]) {
                o.name = format!(
                    "C: 1 turn × 100 subscribers over 2 replicas, {a_chunks} chunks @ 2 ms; the 50 on {on}"
                );
                outcomes.push(o);
            }
        }
        anyhow::Ok(outcomes)
    })?;
    println!("| scenario | streams | events delivered | events/s | latency p50 ms | p99 ms | max ms | RSS growth KiB per stream |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
            o.name,
            o.streams,
            o.events,
            o.events as f64 / o.wall.as_secs_f64(),
            pct(&o.latencies, 0.5) / 1000.0,
            pct(&o.latencies, 0.99) / 1000.0,
            pct(&o.latencies, 1.0) / 1000.0,
            o.rss_growth_kib as f64 / o.streams as f64,
        );
    }
    servers.block_on(server.shutdown());
    for replica in cluster {
        servers.block_on(replica.shutdown());
    }
    if let (Some(postgres), Some(name)) = (&postgres, &database) {
        if let Err(err) = servers.block_on(drop_database(postgres, name)) {
            eprintln!("could not drop the database {name}: {err}");
        }
    }
    servers.shutdown_timeout(Duration::from_secs(2));
    clients.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
