//! `catalog-bench`: latency of `GET /v1/catalog` and `GET /v1/models` for a
//! fleet of 20 providers × 200 models, served from the discovery snapshot in
//! memory (issue 3's benchmark).
//!
//! Setup, all in one process: 20 mock upstreams (OpenAI flavour, 200 models
//! each), one Modelyard with those 20 providers and 10 favorites, and a
//! client (reqwest, one keep-alive connection, requests one after another)
//! on its own runtime. Latency is request start → last body byte, taken by
//! the client. Usage: `catalog-bench [--requests N]` (default 2000).

use std::time::{Duration, Instant};

use modelyard_testkit::{Flavour, MockModel, MockOptions, MockUpstream};

const PROVIDERS: usize = 20;
const MODELS: usize = 200;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .skip_while(|a| a != "--requests")
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("modelyard-catalog-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mocks, server) = servers.block_on(async {
        let mut mocks = Vec::new();
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/bench.db\"\ncall_log = false\n",
            dir.display()
        );
        for p in 0..PROVIDERS {
            let models = (0..MODELS)
                .map(|m| MockModel::new(format!("model-{m:03}"), Some(4096 + m as u64)))
                .collect();
            let mock = MockUpstream::start_with(MockOptions::new(Flavour::OpenAi, models)).await;
            toml.push_str(&format!(
                "[[providers]]\nname = \"host{p:02}\"\nkind = \"openai\"\nbase_url = \"{}\"\nprobe_interval_ms = 3600000\n",
                mock.base_url()
            ));
            mocks.push(mock);
        }
        let no_env = |_: &str| None;
        let config = modelyard_server::Config::from_toml(&toml, "catalog-bench", None, &no_env)?;
        let server = modelyard_server::start(config, &no_env).await?;
        anyhow::Ok((mocks, server))
    })?;
    let base = server.base_url();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = client_rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        for f in 0..10 {
            let body = serde_json::json!({"modelId": format!("host{:02}/model-{:03}", f, f * 7)});
            let status = client
                .post(format!("{base}/v1/favorites"))
                .json(&body)
                .send()
                .await?
                .status();
            anyhow::ensure!(status.is_success(), "adding a favorite: {status}");
        }
        let mut lines = Vec::new();
        for path in ["/v1/catalog", "/v1/models"] {
            let url = format!("{base}{path}");
            let mut bytes = 0;
            for _ in 0..50 {
                bytes = client.get(&url).send().await?.bytes().await?.len();
            }
            let mut samples = Vec::with_capacity(requests);
            let started = Instant::now();
            for _ in 0..requests {
                let t = Instant::now();
                let body = client.get(&url).send().await?.bytes().await?;
                samples.push(t.elapsed().as_nanos() as u64);
                anyhow::ensure!(body.len() == bytes, "{path} changed size");
            }
            let wall = started.elapsed();
            samples.sort_unstable();
            lines.push(format!(
                "| `GET {path}` | {requests} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
                bytes as f64 / 1024.0,
                requests as f64 / wall.as_secs_f64(),
                percentile(&samples, 0.50),
                percentile(&samples, 0.99),
                percentile(&samples, 1.0),
            ));
        }
        anyhow::Ok(lines)
    })?;
    println!("{PROVIDERS} providers × {MODELS} models, 10 favorites, serial keep-alive client\n");
    println!("| request | requests | body KiB | req/s | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for line in report {
        println!("{line}");
    }
    servers.block_on(server.shutdown());
    drop(mocks);
    servers.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
