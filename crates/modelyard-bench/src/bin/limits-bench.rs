//! `limits-bench`: what budgets and rate limits add to a request (issue
//! 21's goal: ≤ 10 µs p50), measured by the client in one run.
//!
//! One Modelyard (call log off, SQLite in a temporary directory) in front
//! of the zero-latency mock; two keys of one project: an admin key without
//! limits, and a member key with every limit set high enough never to
//! refuse (`requestsPerMinute`, `tokensPerMinute`, a `maxTokens` and a
//! `maxCostUsd` budget per day, `maxConcurrent`), so every request of it
//! takes the whole path: limits lookup (cached), body read and reserve,
//! admission from the local lease (a store round trip once per block),
//! headers, settlement. Serial non-streamed chat completions, in
//! alternating batches (limited, unlimited) so both see the same machine;
//! each request timed with `Instant`. Usage: `limits-bench [--rounds N]`
//! (default 50 rounds of 200 + 200 requests).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use modelyard_server::Config;
use modelyard_testkit::MockUpstream;
use serde_json::{json, Value};

const BATCH: usize = 200;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

async fn timed(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> Result<u64> {
    let start = Instant::now();
    let response = client.post(url).bearer_auth(key).json(body).send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    let nanos = start.elapsed().as_nanos() as u64;
    ensure!(
        status == 200,
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(nanos)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds: usize = match std::env::args().skip_while(|a| a != "--rounds").nth(1) {
        Some(n) => n.parse().context("--rounds needs a number")?,
        None => 50,
    };
    let mock = MockUpstream::start().await;
    mock.set_record_requests(false);
    let dir = std::env::temp_dir().join(format!("modelyard-limits-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\nurl = \"sqlite://{db}\"\n\
         data_dir = \"{data}\"\ncall_log = false\n\n[[providers]]\nname = \"mock\"\n\
         kind = \"openai\"\nbase_url = \"{mock}\"\n",
        db = dir.join("modelyard.db").display(),
        data = dir.display(),
        mock = mock.base_url(),
    );
    let none = |_: &str| -> Option<String> { None };
    let config = Config::from_toml(&toml, "<limits-bench>", None, &none)?;
    let server = modelyard_server::start(config, &none).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()?;
    let keys = server.base_url() + "/v1/keys";
    let admin: Value = client
        .post(&keys)
        .json(&json!({"role": "admin"}))
        .send()
        .await?
        .json()
        .await?;
    let admin = admin["key"].as_str().context("admin key")?.to_owned();
    let limited: Value = client
        .post(&keys)
        .bearer_auth(&admin)
        .json(&json!({"role": "member", "limits": {
            "requestsPerMinute": 100_000_000, "tokensPerMinute": 1_000_000_000_000i64,
            "maxTokens": 1_000_000_000_000i64, "maxCostUsd": 1_000_000, "period": "day",
            "maxConcurrent": 1000,
        }}))
        .send()
        .await?
        .json()
        .await?;
    let limited = limited["key"].as_str().context("limited key")?.to_owned();
    let url = server.base_url() + "/v1/chat/completions";
    let body = json!({
        "model": "mock/mock-model",
        "messages": [{"role": "user", "content": "hello brave new world"}],
        "max_tokens": 64,
    });
    // Warm up both paths (leases taken, connections open, caches filled).
    for _ in 0..500 {
        timed(&client, &url, &limited, &body).await?;
        timed(&client, &url, &admin, &body).await?;
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for _ in 0..BATCH {
            with.push(timed(&client, &url, &limited, &body).await?);
        }
        for _ in 0..BATCH {
            without.push(timed(&client, &url, &admin, &body).await?);
        }
    }
    with.sort_unstable();
    without.sort_unstable();
    println!("| key | requests | p50 µs | p90 µs | p99 µs |\n|---|---|---|---|---|");
    for (label, samples) in [("limited", &with), ("unlimited", &without)] {
        println!(
            "| {label} | {} | {:.1} | {:.1} | {:.1} |",
            samples.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            percentile(samples, 0.99)
        );
    }
    println!(
        "\nadded p50: {:.1} µs",
        percentile(&with, 0.5) - percentile(&without, 0.5)
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
