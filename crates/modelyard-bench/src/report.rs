//! The markdown report: one table per scenario, built from [`Col`]umns of figures.

use std::fmt::Write as _;

use crate::load::Run;
use crate::{sys, Plan, Results};

/// Target names, in the order of the runs in [`Results`].
const LABELS: [&str; 3] = [
    "direct (mock)",
    "Modelyard, call log on",
    "Modelyard, call log off",
];

/// How the "added by" rows show a column.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Added {
    /// Blank.
    No,
    /// The difference to the direct run.
    Difference,
    /// The relative change to the direct run, in %.
    Percent,
}

/// A column of figures.
struct Col {
    /// Header.
    header: &'static str,
    /// Decimals shown.
    decimals: usize,
    /// What the "added by" rows show.
    added: Added,
    /// The figure of a run, `None` when it does not apply ("–").
    value: fn(&Run) -> Option<f64>,
}

/// Shorthand for a [`Col`].
const fn col(
    header: &'static str,
    decimals: usize,
    added: Added,
    value: fn(&Run) -> Option<f64>,
) -> Col {
    Col {
        header,
        decimals,
        added,
        value,
    }
}

/// Nanoseconds as microseconds.
fn us(ns: u64) -> Option<f64> {
    Some(ns as f64 / 1e3)
}

const OK: Col = col("ok", 0, Added::No, |r| Some(r.tally.ok as f64));
const ERRORS: Col = col("errors", 0, Added::No, |r| Some(r.tally.errors as f64));
const RATE: Col = col("req/s", 0, Added::Percent, |r| Some(r.rate()));
const P50: Col = col("p50 µs", 1, Added::Difference, |r| us(r.latency.p50));
const P99: Col = col("p99 µs", 1, Added::Difference, |r| us(r.latency.p99));
const MEAN: Col = col("mean µs", 1, Added::Difference, |r| us(r.latency.mean));
const SERVICE_P50: Col = col("service p50 µs", 1, Added::Difference, |r| {
    us(r.service?.p50)
});
const SERVICE_P99: Col = col("service p99 µs", 1, Added::Difference, |r| {
    us(r.service?.p99)
});
const LAG_P99: Col = col("send lag p99 µs", 1, Added::No, |r| us(r.send_lag?.p99));
const TTFB_P50: Col = col("TTFB p50 µs", 1, Added::Difference, |r| {
    us(r.stream?.ttfb.p50)
});
const TTFB_P99: Col = col("TTFB p99 µs", 1, Added::Difference, |r| {
    us(r.stream?.ttfb.p99)
});
const TOTAL_P50: Col = col("total p50 µs", 1, Added::Difference, |r| us(r.latency.p50));
const TOTAL_P99: Col = col("total p99 µs", 1, Added::Difference, |r| us(r.latency.p99));
const CHUNKS: Col = col("chunks/stream", 1, Added::No, |r| Some(r.stream?.chunks));
const EVENTS: Col = col("SSE events/stream", 1, Added::No, |r| {
    Some(r.stream?.events)
});
const PER_CHUNK: Col = col("µs/chunk", 1, Added::Difference, |r| {
    Some(r.stream?.per_chunk_ns / 1e3)
});
const CPU: Col = col("CPU µs/req", 1, Added::Difference, |r| {
    Some(r.cpu_per_request_us())
});
const RSS: Col = col("RSS MiB", 1, Added::No, |r| Some(r.rss_kib as f64 / 1024.0));
const DRAIN: Col = col("log catch-up ms", 0, Added::No, |r| {
    Some(r.log_drain?.as_secs_f64() * 1e3)
});
const DROPPED: Col = col("log rows dropped", 0, Added::No, |r| {
    r.log_drain.map(|_| r.log_dropped as f64)
});
const LOGGED_RATE: Col = col("logged req/s incl. catch-up", 0, Added::No, |r| {
    r.log_drain.map(|_| r.logged_rate())
});
const OTHERS: Col = col("others' CPU", 2, Added::No, |r| Some(r.others_cores));

/// A cell: the figure with `decimals`, or "–".
fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

/// A markdown table with one row per `(label, run)`; with `added`, then one "added by" row per
/// run after the first, relative to the first.
fn table(out: &mut String, cols: &[Col], rows: &[(&str, &Run)], added: bool) {
    let headers: Vec<&str> = cols.iter().map(|c| c.header).collect();
    let _ = writeln!(out, "| target | {} |", headers.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(cols.len()));
    for (label, run) in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| cell((c.value)(run), c.decimals))
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    let Some(((_, base), others)) = rows.split_first().filter(|_| added) else {
        return;
    };
    for (label, run) in others {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match ((c.value)(run), (c.value)(base), c.added) {
                (Some(v), Some(b), Added::Difference) => format!("{:+.*}", c.decimals, v - b),
                (Some(v), Some(b), Added::Percent) => format!("{:+.1} %", (v / b - 1.0) * 100.0),
                _ => String::new(),
            })
            .collect();
        let _ = writeln!(out, "| **added by {label}** | {} |", cells.join(" | "));
    }
}

/// [`table`] of one scenario's runs against the three targets, then their errors.
fn scenario(out: &mut String, cols: &[Col], runs: &[Run]) {
    let rows: Vec<(&str, &Run)> = LABELS.into_iter().zip(runs).collect();
    table(out, cols, &rows, true);
    errors(out, &rows);
}

/// Lists the first error of each run that had errors.
fn errors(out: &mut String, rows: &[(&str, &Run)]) {
    for (label, run) in rows {
        if let Some(e) = &run.tally.first_error {
            let n = run.tally.errors;
            let _ = writeln!(out, "\n{label}: {n} errors, the first: `{e}`");
        }
    }
}

/// Mean over the call log runs with the log `on` (or off) of `figure`.
fn mean_of(runs: &[(bool, Run)], on: bool, figure: fn(&Run) -> f64) -> f64 {
    let values: Vec<f64> = runs
        .iter()
        .filter(|r| r.0 == on)
        .map(|r| figure(&r.1))
        .collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The whole report.
pub(crate) fn render(plan: &Plan, r: &Results) -> String {
    let mut out = String::new();
    let o = &mut out;
    let command: Vec<String> = std::env::args().collect();
    let profile = if cfg!(debug_assertions) {
        "debug build: figures not meaningful"
    } else {
        "release build"
    };
    let _ = writeln!(
        o,
        "# Modelyard gateway overhead\n\n\
         - date: {}\n- machine: {}\n- load average (1/5/15 min) before: {}, after: {}\n\
         - command: `{}` ({profile})\n",
        sys::utc_now(),
        sys::machine(),
        r.load_before,
        r.load_after,
        command.join(" "),
    );
    let _ = writeln!(
        o,
        "How to read: the mock upstream (zero latency), a Modelyard with the call log on \
         (SQLite file, the default) and one with `call_log = false` run on one tokio runtime \
         with 2 workers; the load generator (reqwest, keep-alive pool) runs on its own \
         current-thread runtime on the main thread. All share one process and the machine's \
         cores, so absolute figures include the client's and the mock's cost; the **added by** \
         rows (Modelyard minus direct; for percentiles, the difference of the percentiles) are \
         what Modelyard adds. Latency is measured by the client, request start to last body \
         byte. CPU µs/req is the process's user+system time (`/proc/self/stat`, 10 ms ticks) \
         over the run divided by the requests: client + mock for direct, plus the gateway \
         through Modelyard, so its added row is the gateway's CPU per request. After a run \
         against the logging gateway the bench waits until the call log holds a row per \
         request (or stops growing: rows dropped on a full queue); that catch-up counts in the \
         run's CPU. Others' CPU is the CPU other processes used meanwhile, in cores: well above \
         0 marks a disturbed run. RSS (`VmRSS`, whole process) was {:.1} MiB before the first \
         scenario.",
        r.rss_start_kib as f64 / 1024.0
    );

    let _ = writeln!(
        o,
        "\n## 1. Serial keep-alive, c=1, {} requests, non-streaming\n",
        plan.serial
    );
    let cols = [
        OK, ERRORS, RATE, P50, P99, MEAN, CPU, DRAIN, DROPPED, RSS, OTHERS,
    ];
    scenario(o, &cols, &r.serial);

    let _ = writeln!(
        o,
        "\n## 2. Paced open loop, {} s per rate\n\nLatency is from the *scheduled* send time \
         (no coordinated omission); \"service\" is from the actual send; \"send lag\" is how \
         late the load generator sent (a pacer thread sleeping with `std::thread::sleep` hands \
         each send to the client runtime).",
        plan.paced.as_secs_f64()
    );
    let cols = [
        OK,
        ERRORS,
        RATE,
        P50,
        P99,
        SERVICE_P50,
        SERVICE_P99,
        LAG_P99,
        CPU,
        DRAIN,
        DROPPED,
        OTHERS,
    ];
    for (rate, runs) in &r.paced {
        let _ = writeln!(o, "\n### {rate} requests/s\n");
        scenario(o, &cols, runs);
    }

    let _ = writeln!(
        o,
        "\n## 3. Saturation, closed loop, c={}, {} s\n",
        plan.concurrency,
        plan.saturation.as_secs_f64()
    );
    let cols = [
        OK, ERRORS, RATE, P50, P99, MEAN, CPU, DRAIN, DROPPED, RSS, OTHERS,
    ];
    scenario(o, &cols, &r.saturation);

    let _ = writeln!(
        o,
        "\n## 4. Streaming, c=1, {} streams\n\nTTFB: request start to first body chunk. \
         µs/chunk: (total − TTFB) / (body chunks − 1), averaged over streams.\n",
        plan.streams
    );
    let cols = [
        OK, ERRORS, TTFB_P50, TTFB_P99, TOTAL_P50, TOTAL_P99, CHUNKS, EVENTS, PER_CHUNK, CPU,
        DRAIN, DROPPED, OTHERS,
    ];
    scenario(o, &cols, &r.streaming);

    let _ = writeln!(
        o,
        "\n## 5. Call log on vs off: scenario 3 through Modelyard, {} s per run, in ABBA order\n",
        plan.saturation.as_secs_f64()
    );
    let labels: Vec<String> = (r.call_log.iter().enumerate())
        .map(|(i, (on, _))| format!("run {}, call log {}", i + 1, if *on { "on" } else { "off" }))
        .collect();
    let rows: Vec<(&str, &Run)> = (labels.iter().map(String::as_str))
        .zip(r.call_log.iter().map(|(_, run)| run))
        .collect();
    let cols = [
        OK,
        ERRORS,
        RATE,
        P50,
        P99,
        CPU,
        DRAIN,
        DROPPED,
        LOGGED_RATE,
        OTHERS,
    ];
    table(o, &cols, &rows, false);
    errors(o, &rows);
    let change = mean_of(&r.call_log, true, Run::rate) / mean_of(&r.call_log, false, Run::rate);
    let logged_change =
        mean_of(&r.call_log, true, Run::logged_rate) / mean_of(&r.call_log, false, Run::rate);
    let (change, logged_change) = ((change - 1.0) * 100.0, (logged_change - 1.0) * 100.0);
    let missing = r.logged_attempts.saturating_sub(r.logged_rows);
    let _ = writeln!(
        o,
        "\nThroughput, call log on vs off (means of two runs each): **{change:+.1} %** as the \
         client sees it; {logged_change:+.1} % counting only requests that reached the log and \
         the time it needed to catch up. Over the whole bench the log holds {} rows for {} \
         requests sent to it ({missing} dropped on a full queue).",
        r.logged_rows, r.logged_attempts
    );

    let _ = writeln!(
        o,
        "\n## 6. A route vs one deployment: scenario 1 through Modelyard (call log off), {} \
         requests per run, in ABBA order\n\nThe route `pair` has two healthy targets (two \
         providers in front of the same mock, `least-busy`, no affinity); the deployment is \
         `mock/mock-model`.\n",
        plan.serial
    );
    let labels: Vec<String> = (r.route.iter().enumerate())
        .map(|(i, (routed, _))| {
            format!(
                "run {}, {}",
                i + 1,
                if *routed { "route" } else { "deployment" }
            )
        })
        .collect();
    let rows: Vec<(&str, &Run)> = (labels.iter().map(String::as_str))
        .zip(r.route.iter().map(|(_, run)| run))
        .collect();
    table(o, &[OK, ERRORS, P50, P99, CPU, OTHERS], &rows, false);
    errors(o, &rows);
    let p50 = |run: &Run| us(run.latency.p50).unwrap_or(0.0);
    let route_added = mean_of(&r.route, true, p50) - mean_of(&r.route, false, p50);

    let _ = writeln!(
        o,
        "\n## 7. Metrics on vs off: scenario 1 through Modelyard (call log off), {} requests \
         per run, in ABBA order\n\nThe same gateway with `[telemetry] metrics = false` (no \
         recording; `/metrics` not scraped during the runs).\n",
        plan.serial
    );
    let labels: Vec<String> = (r.metrics.iter().enumerate())
        .map(|(i, (on, _))| format!("run {}, metrics {}", i + 1, if *on { "on" } else { "off" }))
        .collect();
    let rows: Vec<(&str, &Run)> = (labels.iter().map(String::as_str))
        .zip(r.metrics.iter().map(|(_, run)| run))
        .collect();
    table(o, &[OK, ERRORS, P50, P99, MEAN, CPU, OTHERS], &rows, false);
    errors(o, &rows);
    let mean_us = |run: &Run| us(run.latency.mean).unwrap_or(0.0);
    let cpu_us = |run: &Run| (CPU.value)(run).unwrap_or(0.0);
    let metrics_added = mean_of(&r.metrics, true, p50) - mean_of(&r.metrics, false, p50);
    let metrics_mean = mean_of(&r.metrics, true, mean_us) - mean_of(&r.metrics, false, mean_us);
    let metrics_cpu = mean_of(&r.metrics, true, cpu_us) - mean_of(&r.metrics, false, cpu_us);

    let _ = writeln!(
        o,
        "\n## 8. Traces on vs off: scenario 1 through Modelyard (call log off), {} requests \
         per run, in ABBA order\n\nThe same gateway with `[telemetry] otlp_endpoint` set: a \
         server span and a client span per request, batched and exported over OTLP/HTTP to a \
         sink on its own thread in this process that decodes them (its CPU counts in the runs' \
         CPU).\n",
        plan.serial
    );
    let labels: Vec<String> = (r.tracing.iter().enumerate())
        .map(|(i, (on, _))| format!("run {}, traces {}", i + 1, if *on { "on" } else { "off" }))
        .collect();
    let rows: Vec<(&str, &Run)> = (labels.iter().map(String::as_str))
        .zip(r.tracing.iter().map(|(_, run)| run))
        .collect();
    table(o, &[OK, ERRORS, P50, P99, MEAN, CPU, OTHERS], &rows, false);
    errors(o, &rows);
    let tracing_added = mean_of(&r.tracing, true, p50) - mean_of(&r.tracing, false, p50);
    let tracing_mean = mean_of(&r.tracing, true, mean_us) - mean_of(&r.tracing, false, mean_us);
    let tracing_cpu = mean_of(&r.tracing, true, cpu_us) - mean_of(&r.tracing, false, cpu_us);
    let _ = writeln!(
        o,
        "\nTraces on vs off (means of two runs each): {tracing_added:+.1} µs p50, \
         {tracing_mean:+.1} µs mean, {tracing_cpu:+.1} µs CPU per request. The sink received \
         {} spans for {} requests sent to the tracing gateway (2 per request expected; fewer \
         means the bounded queue dropped some).",
        r.traced_spans, r.traced_requests
    );

    let _ = writeln!(o, "\n## Goals\n");
    let _ = writeln!(
        o,
        "- metrics cost ≤ 3 µs per request: {metrics_added:+.1} µs p50 ({metrics_mean:+.1} µs \
         mean, {metrics_cpu:+.1} µs CPU per request; means of two runs each) → **{}**",
        if metrics_added <= 3.0 {
            "met"
        } else {
            "missed"
        }
    );
    let _ = writeln!(
        o,
        "- a route with two healthy targets adds at most 5 µs p50 over a deployment named \
         directly: {route_added:+.1} µs (means of two runs each) → **{}**",
        if route_added <= 5.0 { "met" } else { "missed" }
    );
    if let Some((rate, runs)) = r.paced.iter().find(|(rate, _)| *rate == 1_000) {
        let added = |i: usize, f: fn(&Run) -> Option<f64>| {
            f(&runs[i]).unwrap_or(0.0) - f(&runs[0]).unwrap_or(0.0)
        };
        let (on, off) = (added(1, P99.value), added(2, P99.value));
        let _ = writeln!(
            o,
            "- added p99 under 1 ms at {rate} requests/s: {on:+.1} µs with the call log on \
             ({:+.1} µs from the actual send), {off:+.1} µs with it off → **{}**",
            added(1, SERVICE_P99.value),
            if on.max(off) < 1_000.0 {
                "met"
            } else {
                "missed"
            }
        );
    }
    let _ = writeln!(
        o,
        "- call log on vs off within 10 % throughput: {change:+.1} % as the client sees it \
         ({logged_change:+.1} % for what reached the log) → **{}**",
        if change.abs() <= 10.0 {
            "met"
        } else {
            "missed"
        }
    );
    out
}
