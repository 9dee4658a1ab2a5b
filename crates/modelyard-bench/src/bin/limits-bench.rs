//! `limits-bench`: what budgets and rate limits add to a request (issue
//! 21's goal: ≤ 10 µs p50), measured by the client in one run.
//!
//! One Modelyard (call log off, SQLite in a temporary directory, the mock's
//! models priced so a cost budget reserves a real price) in front of the
//! zero-latency mock; keys of one project: the baseline, a member key
//! without limits; member keys with limits set high enough never to
//! refuse — every limit (`requestsPerMinute`, `tokensPerMinute`, a
//! `maxTokens` and a `maxCostUsd` budget per day, `maxConcurrent`), a rate
//! limit and a budget (`requestsPerMinute` and `maxCostUsd` per day: the
//! issue's case), only `maxConcurrent` (the body read and reserve without a
//! counter), only `requestsPerMinute`; and the admin key (no limits), for
//! reference. The limited keys take the limited path: limits lookup
//! (cached), body read and reserve, admission from the local lease (a store
//! round trip once per block), headers, settlement. Serial non-streamed
//! chat completions, each request timed with `Instant`, in two phases:
//! - **latency**: the keys take turns request by request (one request per
//!   key, in an order that rotates each time, so no key always follows the
//!   same one), so every key sees the same machine at the same moment; a
//!   round is 200 requests per key. "Added" is against the baseline key:
//!   the difference of the p50s of all requests, and per round the
//!   difference of the two keys' p50s, whose median and quartiles over the
//!   rounds are robust to the machine's load changing during the run;
//! - **CPU**: a batch of 200 requests per key in turn (half as many
//!   rounds); each batch's CPU time (every thread of the process: client,
//!   server and mock, from `/proc/self/task/*/schedstat`, nanoseconds) over
//!   its requests is CPU µs per request, and the key's minus the
//!   baseline's in the same round is the limits' own CPU per request.
//!
//! Usage: `limits-bench [--rounds N]` (default 50 rounds).
//!
//! `limits-bench --only K --requests N` instead sends, after the warm-up,
//! N requests with key K alone (0 is the baseline, in the table's order)
//! and exits: for counting instructions, which the machine's load does not
//! move. Under `valgrind --tool=callgrind`, the difference of two keys'
//! totals over N is what the limits add per request, in instructions (the
//! commands are in BENCHMARKS.md).

/// The modelyard binary's allocator, so the in-process server runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use modelyard_server::Config;
use modelyard_testkit::MockUpstream;
use serde_json::{json, Value};

const BATCH: usize = 200;

/// CPU time of every live thread of this process so far, nanoseconds (the
/// first field of each `/proc/self/task/<tid>/schedstat`).
fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The median and quartiles of `values` (sorted here).
fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

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
    ensure!(rounds > 0, "--rounds needs at least 1");
    let flag = |name: &str| -> Result<Option<usize>> {
        std::env::args()
            .skip_while(|a| a != name)
            .nth(1)
            .map(|n| n.parse().with_context(|| format!("{name} needs a number")))
            .transpose()
    };
    let only = flag("--only")?;
    let requests = flag("--requests")?.unwrap_or(2_000);
    let mock = MockUpstream::start().await;
    mock.set_record_requests(false);
    let dir = std::env::temp_dir().join(format!("modelyard-limits-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\nurl = \"sqlite://{db}\"\n\
         data_dir = \"{data}\"\ncall_log = false\n\n[[providers]]\nname = \"mock\"\n\
         kind = \"openai\"\nbase_url = \"{mock}\"\n\n[[prices]]\nmodel = \"mock/*\"\n\
         input_per_mtok = 0.5\noutput_per_mtok = 1.5\n",
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
    let mut limited = Vec::new();
    for (label, limits) in [
        // The baseline: a member key like the others, without limits.
        ("no limits", json!(null)),
        (
            "all limits",
            json!({
                "requestsPerMinute": 100_000_000, "tokensPerMinute": 1_000_000_000_000i64,
                "maxTokens": 1_000_000_000_000i64, "maxCostUsd": 1_000_000, "period": "day",
                "maxConcurrent": 1000,
            }),
        ),
        (
            "a rate limit and a budget",
            json!({"requestsPerMinute": 100_000_000, "maxCostUsd": 1_000_000, "period": "day"}),
        ),
        ("maxConcurrent only", json!({"maxConcurrent": 1000})),
        (
            "requestsPerMinute only",
            json!({"requestsPerMinute": 100_000_000}),
        ),
    ] {
        let mut new_key = json!({"role": "member"});
        if !limits.is_null() {
            new_key["limits"] = limits;
        }
        let key: Value = client
            .post(&keys)
            .bearer_auth(&admin)
            .json(&new_key)
            .send()
            .await?
            .json()
            .await?;
        let key = key["key"].as_str().context("limited key")?.to_owned();
        limited.push((label, key));
    }
    let url = server.base_url() + "/v1/chat/completions";
    let body = json!({
        "model": "mock/mock-model",
        "messages": [{"role": "user", "content": "hello brave new world"}],
        "max_tokens": 64,
    });
    limited.push(("admin (no limits)", admin.clone()));
    // Warm up every path (leases taken, connections open, caches filled).
    for _ in 0..300 {
        for (_, key) in &limited {
            timed(&client, &url, key, &body).await?;
        }
    }
    let n = limited.len();
    if let Some(only) = only {
        let (_, key) = limited.get(only).context("--only: no such key")?;
        for _ in 0..requests {
            timed(&client, &url, key, &body).await?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut round_p50: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Latency: the keys take turns request by request.
    let mut turn = 0usize;
    for _ in 0..rounds {
        let mut round: Vec<Vec<u64>> = vec![Vec::with_capacity(BATCH); n];
        for _ in 0..BATCH {
            for i in (0..n).map(|i| (i + turn) % n) {
                round[i].push(timed(&client, &url, &limited[i].1, &body).await?);
            }
            turn += 1;
        }
        for (i, mut batch) in round.into_iter().enumerate() {
            samples[i].extend_from_slice(&batch);
            batch.sort_unstable();
            round_p50[i].push(percentile(&batch, 0.5));
        }
    }
    // CPU: a batch per key, starting one key later each round.
    let mut batch_cpu: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds.div_ceil(2) {
        for i in (0..n).map(|i| (i + round) % n) {
            let cpu_before = process_cpu_ns();
            for _ in 0..BATCH {
                timed(&client, &url, &limited[i].1, &body).await?;
            }
            // A thread that ended during the batch takes its time along:
            // such a batch reads low (the medians over rounds absorb it).
            let cpu = process_cpu_ns().saturating_sub(cpu_before);
            batch_cpu[i].push(cpu as f64 / BATCH as f64 / 1000.0);
        }
    }
    println!(
        "| key | requests | p50 µs | p90 µs | p99 µs | added p50 µs | added p50 per round µs: median [quartiles] | CPU µs/request | added CPU µs/request per round: median [quartiles] |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for s in &mut samples {
        s.sort_unstable();
    }
    let base = percentile(&samples[0], 0.5);
    for (i, (label, _)) in limited.iter().enumerate() {
        // The batch's p50 minus the baseline's in the same round.
        let paired = |of: &[Vec<f64>]| -> Vec<f64> {
            of[i].iter().zip(&of[0]).map(|(a, b)| a - b).collect()
        };
        let (p50, p25, p75) = quartiles(&mut paired(&round_p50));
        let (c50, c25, c75) = quartiles(&mut paired(&batch_cpu));
        let (cpu, _, _) = quartiles(&mut batch_cpu[i].clone());
        println!(
            "| {label} | {} | {:.1} | {:.1} | {:.1} | {:+.1} | {p50:+.1} [{p25:+.1}, {p75:+.1}] \
             | {cpu:.1} | {c50:+.1} [{c25:+.1}, {c75:+.1}] |",
            samples[i].len(),
            percentile(&samples[i], 0.5),
            percentile(&samples[i], 0.9),
            percentile(&samples[i], 0.99),
            percentile(&samples[i], 0.5) - base,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
