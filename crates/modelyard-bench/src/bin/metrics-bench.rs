//! `metrics-bench`: what recording one proxied chat completion's metrics
//! costs, measured in isolation (issue 19's goal: ≤ 3 µs per request).
//!
//! One request records what the gateway records for it: the HTTP request
//! counter and duration (`http/access.rs`), the call's pre-resolved handles
//! (`service/routed.rs`) and its observation — duration, TTFT, time per
//! output token, four token histograms (`service/llm_call.rs`) — the
//! attempt counter (`routed.rs`) and the gateway overhead histogram
//! (`gateway/mod.rs`), with the same label values every time, as a steady
//! stream of requests to one deployment has. Timed per batch of 1 000
//! requests with `Instant`, on one thread, metrics on vs off (off: every
//! call returns at its first branch), alternately, so both see the same
//! machine. Usage: `metrics-bench [--batches N]` (default 2000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use modelyard_server::config::TelemetryConfig;
use modelyard_server::telemetry::{CallObservation, Metrics};

const BATCH: u32 = 1000;

fn one_request(metrics: &std::sync::Arc<Metrics>) {
    metrics.http_request(
        "/v1/chat/completions",
        "POST",
        200,
        Some("default"),
        Duration::from_micros(180),
    );
    if let Some(handles) = metrics.call_handles("gateway", "local/qwen3-8b", "local") {
        handles.observe(&CallObservation {
            duration_secs: 0.35,
            ttft_secs: Some(0.05),
            input_tokens: 812,
            output_tokens: 96,
            reasoning_tokens: 0,
            cached_input_tokens: 640,
            stream: true,
            error: None,
        });
    }
    metrics.attempt("local/qwen3-8b", "local", "200");
    metrics.overhead("chat_completions", Duration::from_micros(95));
}

fn batch_ns(metrics: &std::sync::Arc<Metrics>) -> f64 {
    let start = Instant::now();
    for _ in 0..BATCH {
        one_request(black_box(metrics));
    }
    start.elapsed().as_nanos() as f64 / f64::from(BATCH)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let batches: usize = std::env::args()
        .skip_while(|a| a != "--batches")
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    let on = Metrics::new(&TelemetryConfig::default());
    let off = Metrics::new(&TelemetryConfig {
        metrics: false,
        ..TelemetryConfig::default()
    });
    // Warm up: the first request creates the label sets and handles.
    for _ in 0..10 {
        batch_ns(&on);
        batch_ns(&off);
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..batches {
        if i % 2 == 0 {
            with.push(batch_ns(&on));
            without.push(batch_ns(&off));
        } else {
            without.push(batch_ns(&off));
            with.push(batch_ns(&on));
        }
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    println!("metrics-bench: {batches} batches of {BATCH} requests each, alternating on/off");
    println!("| metrics | p50 ns/request | p90 ns/request | min ns/request |");
    println!("|---|---:|---:|---:|");
    for (name, v) in [("on", &with), ("off", &without)] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            percentile(v, 0.5),
            percentile(v, 0.9),
            v[0]
        );
    }
    println!(
        "recording one request's metrics: {:.2} µs (p50 on − p50 off); goal ≤ 3 µs",
        (percentile(&with, 0.5) - percentile(&without, 0.5)) / 1000.0
    );
    Ok(())
}
