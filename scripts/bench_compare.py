#!/usr/bin/env python3
"""bench_compare.py - the side-by-side performance harness of issue 20 (items 1 and 3).

Run through scripts/bench-compare.sh, which installs oha and LiteLLM and builds the release
binaries first; this file starts the targets, drives oha against each, and writes the report.

Targets, all in front of one zero-latency mock upstream process (`mock-upstream --no-record`):
  direct      the mock itself
  floor       floor-proxy (crates/modelyard-bench/src/bin/floor-proxy.rs): the least work a gateway
              must do
  modelyard   every feature on: API keys required (a real member key), a route with two targets
              (two providers on the mock), call log on SQLite, metrics on
  no-log      the same with `call_log = false`
  litellm     LiteLLM proxy from PyPI, 2 workers, no database, local cost map

Every scenario runs against every target within a round, the order alternating between rounds
(ABCDE, EDCBA, ...); the report gives the median over rounds of every figure.

Exit status: 0 when every target started and answered its check request, whatever the numbers;
1 when something failed to start or oha failed; 2 on bad arguments.
"""

import argparse
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CLK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "hello there world"
# 19 words: the mock answers "echo: " + them, one SSE chunk per word: 20 content chunks.
STREAM_PROMPT = " ".join(["word"] * 19)
STREAM_CHUNKS = 20
KEYS = {"fast": "mock-model", "slow_stream": "slow-first:20@5", "slow": "slow-first:20"}

PROCS = []  # (Popen, name), every process this run started, killed at exit


def log(msg):
    print(f"[bench-compare] {msg}", file=sys.stderr, flush=True)


def cleanup():
    for proc, _ in reversed(PROCS):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for proc, _ in reversed(PROCS):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    PROCS.clear()


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


class Failure(Exception):
    """Something did not start or answer: the harness itself is broken (exit 1)."""


def spawn(name, argv, env=None, stdout=subprocess.PIPE, logdir=None):
    err = open(os.path.join(logdir, f"{name}.log"), "wb") if logdir else subprocess.DEVNULL
    proc = subprocess.Popen(
        argv, stdout=stdout, stderr=err, env=env, start_new_session=True, cwd=logdir
    )
    PROCS.append((proc, name))
    return proc


# ---------------------------------------------------------------- /proc readings


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(rest[1]), []).append(int(entry))
        except (OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            # fields after comm: state(3) ... utime(14) stime(15), cutime(16), cstime(17)
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            continue
    return total


def status_kib(pids, field):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def reset_peak(pids):
    """Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`), so the next reading
    is the peak of one run; without the right to, VmHWM stays the lifetime peak."""
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- HTTP helpers


def body(model, kind):
    if kind == "stream":
        return {
            "model": model,
            "messages": [{"role": "user", "content": STREAM_PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32}


def post(port, headers, payload, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"content-type": "application/json", **headers}
        conn.request("POST", "/v1/chat/completions", json.dumps(payload), h)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_answer(port, headers, model, timeout, proc):
    """Polls a chat request until it answers 200; returns the seconds it took."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise Failure(f"exited with {proc.returncode} during start-up")
        try:
            status, data = post(port, headers, body(model, "fast"), timeout=2.0)
            if status == 200:
                return time.monotonic() - t0
            last = f"{status} {data[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.002)
    raise Failure(f"no 200 answer within {timeout} s (last: {last})")


def read_url_line(proc, timeout=20):
    """The first stdout line of a process that prints its base URL."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise Failure("printed no URL")
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http://"):
        raise Failure(f"printed {line!r} instead of its URL")
    return line


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- targets


class Target:
    def __init__(self, name, label, port, models, headers, proc):
        self.name, self.label, self.port = name, label, port
        self.models, self.headers, self.proc = models, headers, proc
        self.cold_ms = None
        self.rss_idle = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def pids(self):
        return tree(self.proc.pid)

    def check(self):
        """One request of each kind must answer 200 with the expected shape."""
        status, data = post(self.port, self.headers, body(self.models["fast"], "fast"))
        if status != 200 or b"echo: hello there world" not in data:
            raise Failure(f"{self.label}: check request answered {status} {data[:300]!r}")
        status, data = post(self.port, self.headers, body(self.models["fast"], "stream"))
        words = len(re.findall(rb'"content":\s*"word', data))
        if status != 200 or words != STREAM_CHUNKS - 1 or b"[DONE]" not in data:
            raise Failure(f"{self.label}: check stream answered {status}, {words} words: {data[:300]!r}")
        status, data = post(self.port, self.headers, body(self.models["slow"], "fast"))
        if status != 200:
            raise Failure(f"{self.label}: check of the 20 ms model answered {status} {data[:300]!r}")
        status, data = post(self.port, self.headers, body(self.models["slow_stream"], "stream"))
        if status != 200 or b"[DONE]" not in data:
            raise Failure(f"{self.label}: check of the slow stream answered {status} {data[:300]!r}")


def start_mock(bins, tmp):
    # The slow behaviours are listed too: Modelyard routes only to discovered models.
    argv = [os.path.join(bins, "mock-upstream"), "--no-record"]
    for v in KEYS.values():
        argv += ["--model", v]
    proc = spawn("mock-upstream", argv, logdir=tmp)
    url = read_url_line(proc)
    port = int(url.rsplit(":", 1)[1])
    t = Target("direct", "direct (mock)", port, dict(KEYS), {}, proc)
    wait_answer(port, {}, KEYS["fast"], 10, proc)
    return t, url


def start_floor(bins, tmp, mock_url):
    t0 = time.monotonic()
    proc = spawn("floor", [os.path.join(bins, "floor-proxy"), "--upstream", mock_url], logdir=tmp)
    url = read_url_line(proc)
    port = int(url.rsplit(":", 1)[1])
    models = {k: "floor/" + v for k, v in KEYS.items()}
    wait_answer(port, {}, models["fast"], 10, proc)
    t = Target("floor", "floor", port, models, {}, proc)
    t.cold_ms = (time.monotonic() - t0) * 1000
    return t


def modelyard_config(tmp, name, port, mock_url, call_log):
    path = os.path.join(tmp, f"{name}.toml")
    routes = "".join(
        f"""
[[routes]]
name = "bench-{k}"
targets = ["a/{v}", "b/{v}"]
strategy = "least-busy"
"""
        for k, v in KEYS.items()
    )
    with open(path, "w") as f:
        f.write(
            f"""[server]
listen = "127.0.0.1:{port}"

[storage]
url = "sqlite://{tmp}/{name}.db"
data_dir = "{tmp}/{name}-data"
call_log = {"true" if call_log else "false"}

[telemetry]
metrics = true

# One key drives 200 concurrent streams (the defaults allow 64 per key, 256 per project).
[limits]
max_streams_per_key = 1024
max_streams_per_project = 1024

[[providers]]
name = "a"
kind = "llama-cpp"
base_url = "{mock_url}"

[[providers]]
name = "b"
kind = "llama-cpp"
base_url = "{mock_url}"
{routes}"""
        )
    return path


def start_modelyard(bins, tmp, mock_url, name, label, call_log):
    port = free_port()
    cfg = modelyard_config(tmp, name, port, mock_url, call_log)
    exe = os.path.join(bins, "modelyard")
    env = dict(os.environ)  # the server's default logging, as a user gets it
    out = subprocess.run(
        [exe, "--config", cfg, "keys", "create", "--role", "member", "--name", "bench"],
        capture_output=True, env=env, timeout=60,
    )
    key = out.stdout.decode().strip().splitlines()[-1:] if out.returncode == 0 else []
    if not key or not key[0].startswith("mk_"):
        raise Failure(f"{label}: keys create failed: {out.stderr.decode()[-500:]}")
    headers = {"authorization": f"Bearer {key[0]}"}
    models = {k: f"bench-{k}" for k in KEYS}
    t0 = time.monotonic()
    proc = spawn(name, [exe, "--config", cfg, "serve"], env=env, stdout=subprocess.DEVNULL, logdir=tmp)
    wait_answer(port, headers, models["fast"], 30, proc)
    t = Target(name, label, port, models, headers, proc)
    t.cold_ms = (time.monotonic() - t0) * 1000
    # Keys are really required: no key must be refused.
    status, _ = post(port, {}, body(models["fast"], "fast"))
    if status != 401:
        raise Failure(f"{label}: a request without a key answered {status}, not 401")
    return t


def start_litellm(litellm, tmp, mock_url):
    port = free_port()
    cfg = os.path.join(tmp, "litellm.yaml")
    entries = "".join(
        f"""  - model_name: "litellm-{k}"
    litellm_params:
      model: "openai/{v}"
      api_base: "{mock_url}/v1"
      api_key: "sk-bench"
"""
        for k, v in KEYS.items()
    )
    with open(cfg, "w") as f:
        f.write("model_list:\n" + entries + "litellm_settings:\n  telemetry: false\n")
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    env.pop("DATABASE_URL", None)
    t0 = time.monotonic()
    proc = spawn(
        "litellm",
        [litellm, "--config", cfg, "--host", "127.0.0.1", "--port", str(port), "--num_workers", "2",
         "--telemetry", "False"],
        env=env, stdout=subprocess.DEVNULL, logdir=tmp,
    )
    models = {k: f"litellm-{k}" for k in KEYS}
    wait_answer(port, {}, models["fast"], 180, proc)
    t = Target("litellm", "LiteLLM (2 workers)", port, models, {}, proc)
    t.cold_ms = (time.monotonic() - t0) * 1000
    return t


# ---------------------------------------------------------------- scenarios


class Oha:
    def __init__(self, exe):
        self.exe = exe

    def run(self, target, model_key, kind, conc, duration, rate=None, keepalive=True):
        argv = [
            self.exe, "--no-tui", "--output-format", "json", "-m", "POST",
            "-T", "application/json", "-d", json.dumps(body(target.models[model_key], kind)),
            "-c", str(conc), "-z", duration, "-w", "-t", "30s",
        ]
        for k, v in target.headers.items():
            argv += ["-H", f"{k}: {v}"]
        if rate:
            argv += ["-q", str(rate), "--latency-correction"]
        if not keepalive:
            argv.append("--disable-keepalive")
        argv.append(target.url)
        pids = target.pids()
        reset_peak(pids)
        c0 = cpu_ticks(pids)
        out = subprocess.run(argv, capture_output=True, timeout=600)
        c1 = cpu_ticks(pids)
        hwm = status_kib(pids, "VmHWM")
        if out.returncode != 0:
            raise Failure(f"oha failed against {target.label}: {out.stderr.decode()[-500:]}")
        j = json.loads(out.stdout)
        codes = j.get("statusCodeDistribution") or {}
        ok = int(codes.get("200", 0))
        total = sum(int(v) for v in codes.values()) + sum(
            int(v) for v in (j.get("errorDistribution") or {}).values()
        )
        lat = j.get("latencyPercentiles") or {}
        fb = j.get("firstBytePercentiles") or {}
        us = lambda d, k: (d.get(k) * 1e6) if d.get(k) is not None else None
        summ = j.get("summary") or {}
        return {
            "ok": ok,
            "errors": total - ok,
            "rps": ok / max(summ.get("total") or 1e-9, 1e-9),
            "p50": us(lat, "p50"),
            "p99": us(lat, "p99"),
            "ttfb50": us(fb, "p50"),
            "ttfb99": us(fb, "p99"),
            "cpu": (c1 - c0) * 1e6 / CLK / ok if ok else None,
            "hwm": hwm or None,
        }


def scenarios(smoke):
    d = "1s" if smoke else "4s"
    return [
        ("serial", "c=1 serial keep-alive", dict(model_key="fast", kind="fast", conc=1, duration=d)),
        ("newconn", "c=1 new connection per request",
         dict(model_key="fast", kind="fast", conc=1, duration=d, keepalive=False)),
        ("paced", "1,000 req/s paced (latency-corrected)",
         dict(model_key="fast", kind="fast", conc=64, duration=d, rate=1000)),
        ("sat", "saturation keep-alive c=32", dict(model_key="fast", kind="fast", conc=32, duration=d)),
        ("stream1", f"{STREAM_CHUNKS}-chunk streams c=1",
         dict(model_key="fast", kind="stream", conc=1, duration=d)),
        ("stream32", f"{STREAM_CHUNKS}-chunk streams c=32",
         dict(model_key="fast", kind="stream", conc=32, duration=d)),
        ("slow200", "200 concurrent slow streams (20 ms first byte, 5 ms/chunk)",
         dict(model_key="slow_stream", kind="stream", conc=200, duration="2s" if smoke else "5s")),
    ]


def step_list(smoke):
    """The request rates tried, in order, until one misses."""
    return [250, 1000, 4000] if smoke else [125, 250, 500, 1000, 2000, 3000, 4000, 6000, 8000]


def step_rates(oha, target, smoke):
    """The 20 ms upstream at stepped rates: the highest with p99 <= 50 ms and no errors."""
    d = "1s" if smoke else "2s"
    rates = step_list(smoke)
    best, tried = None, []
    for rate in rates:
        r = oha.run(target, "slow", "fast", 512, d, rate=rate)
        good = (r["errors"] == 0 and r["p99"] is not None and r["p99"] <= 50_000
                and r["rps"] >= 0.9 * rate)
        tried.append((rate, r["p99"], r["rps"], good, r.get("hwm")))
        if not good:
            break
        best = (rate, r)
    return best, tried


# ---------------------------------------------------------------- report


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def med(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return None
    return a / b


def report(ctx):
    R, targets = ctx["results"], ctx["targets"]
    names = [t.name for t in targets]
    has = set(names)
    L = []
    w = L.append
    w("# Side-by-side performance (scripts/bench-compare.sh)\n")
    w(f"- date: {ctx['date']} UTC; command: `{ctx['command']}`")
    w(f"- machine: {os.cpu_count()} CPUs, shared with other work; load average before: "
      f"{ctx['load_before']}, after: {ctx['load_after']}")
    if ctx.get("debug"):
        w("- **DEBUG binaries** (`--debug`): the figures below are NOT representative; this run"
          " only shows that the harness works")
    w(f"- commit: {ctx['commit']}; oha {ctx['oha_version']}; LiteLLM {ctx['litellm_version']}")
    w(f"- rounds: {ctx['rounds']} (targets interleaved, order reversed every other round; every "
      f"figure is the median over rounds){' — SMOKE run: a few seconds per scenario' if ctx['smoke'] else ''}")
    w("- all targets sit in front of one zero-latency Rust mock upstream (`mock-upstream --no-record`);"
      " the load generator is oha on the same 2 cores. Absolute figures move with the machine's"
      " load; ratios measured in one run do not.")
    w("- CPU µs/req: utime+stime of the target's own process tree (/proc/<pid>/stat) over the run,"
      " divided by the answered requests (for direct: the mock's own CPU; the gateways' figures"
      " do not include the mock's). Latency is oha's, request start to last byte; TTFB is"
      " oha's first body byte. Added = target minus direct (difference of percentiles).\n")

    def cell(t, scen, key):
        return med([r.get(key) for r in R.get((t, scen), [])])

    def table(title, rows):
        cols = [t.label for t in targets]
        extra = []
        if "floor" in has and "modelyard" in has:
            extra.append("Modelyard ÷ floor")
        if "litellm" in has and "modelyard" in has:
            extra.append("Modelyard ahead of LiteLLM")
        w(f"## {title}\n")
        w("| scenario / figure | " + " | ".join(cols + extra) + " |")
        w("|---|" + "---:|" * (len(cols) + len(extra)))
        for label, getter, digits, better in rows:
            vals = {t.name: getter(t.name) for t in targets}
            line = [fmt(vals[n], digits) for n in names]
            if "floor" in has and "modelyard" in has:
                r = ratio(vals.get("modelyard"), vals.get("floor")) if better else None
                line.append(fmt(r, 2) + "×" if r is not None else "–")
            if "litellm" in has and "modelyard" in has:
                a, b = vals.get("modelyard"), vals.get("litellm")
                r = ratio(a, b) if better == "high" else ratio(b, a) if better == "low" else None
                line.append(fmt(r, 1) + "×" if r is not None else "–")
            w(f"| {label} | " + " | ".join(line) + " |")
        w("")

    def added(scen, key):
        return lambda n: (None if n == "direct" else
                          (lambda a, b: None if a is None or b is None else a - b)(
                              cell(n, scen, key), cell("direct", scen, key)))

    rows = []
    for scen, label, _ in scenarios(ctx["smoke"]):
        if scen.startswith("stream") or scen == "slow200":
            rows += [
                (f"{label}: TTFB p50 / µs", lambda n, s=scen: cell(n, s, "ttfb50"), 0, "low"),
                (f"{label}: TTFB p99 / µs", lambda n, s=scen: cell(n, s, "ttfb99"), 0, "low"),
                (f"{label}: total p50 / µs", lambda n, s=scen: cell(n, s, "p50"), 0, "low"),
                (f"{label}: total p99 / µs", lambda n, s=scen: cell(n, s, "p99"), 0, "low"),
                (f"{label}: added TTFB p99 / µs", added(scen, "ttfb99"), 0, "low"),
            ]
        else:
            rows += [
                (f"{label}: p50 / µs", lambda n, s=scen: cell(n, s, "p50"), 0, "low"),
                (f"{label}: p99 / µs", lambda n, s=scen: cell(n, s, "p99"), 0, "low"),
                (f"{label}: added p50 / µs", added(scen, "p50"), 0, "low"),
                (f"{label}: added p99 / µs", added(scen, "p99"), 0, "low"),
            ]
        rows += [
            (f"{label}: req/s" if not scen.startswith(("stream", "slow")) else f"{label}: streams/s",
             lambda n, s=scen: cell(n, s, "rps"), 0, "high"),
            (f"{label}: CPU µs/req", lambda n, s=scen: cell(n, s, "cpu"), 1, "low"),
            (f"{label}: peak RSS during the run / MB", lambda n, s=scen: mb(cell(n, s, "hwm")), 1, "low"),
            (f"{label}: errors (sum over rounds)",
             lambda n, s=scen: sum(r["errors"] for r in R.get((n, s), [])), 0, None),
        ]

    def best_rate(n):
        bests = ctx["steps"].get(n, [])
        if bests and all(b is None for b in bests):
            return f"< {step_list(ctx['smoke'])[0]}"
        return med([b[0] if b else 0 for b in bests])

    rows.append(("20 ms upstream: highest stepped rate with p99 ≤ 50 ms / req/s", best_rate, 0, "high"))
    rows.append(("per-chunk added (c=1 streams: (total − TTFB) added ÷ chunks) / µs",
                 lambda n: per_chunk(n), 2, None))
    rows.append(("cold start to first answered request / ms", lambda n: tmap[n].cold_ms, 0, "low"))
    rows.append(("RSS idle (after the first answers) / MB", lambda n: mb(tmap[n].rss_idle), 1, "low"))
    rows.append(("RSS after the load / MB", lambda n: mb(ctx["rss_after"].get(n)), 1, "low"))
    rows.append(("peak RSS over all runs (VmHWM; LiteLLM: summed over its processes) / MB",
                 lambda n: mb(ctx["hwm"].get(n)), 1, "low"))

    tmap = {t.name: t for t in targets}

    def per_chunk(n):
        if n == "direct":
            return None
        tot, ttfb = cell(n, "stream1", "p50"), cell(n, "stream1", "ttfb50")
        dtot, dttfb = cell("direct", "stream1", "p50"), cell("direct", "stream1", "ttfb50")
        if None in (tot, ttfb, dtot, dttfb):
            return None
        return ((tot - ttfb) - (dtot - dttfb)) / STREAM_CHUNKS

    table("Results (rows: scenarios; columns: targets)", rows)

    w("### 20 ms upstream, stepped rates (rate: p99 µs / achieved req/s, per round)\n")
    for t in targets:
        parts = []
        for i, (best, tried) in enumerate(ctx["steps_tried"].get(t.name, [])):
            parts.append(f"round {i + 1}: " + ", ".join(
                f"{rate}: {fmt(p99)} / {fmt(rps)}{'' if good else ' ✗'}" for rate, p99, rps, good, *_ in tried))
        w(f"- {t.label}: " + "; ".join(parts))
    w("")

    # Goals of issue 20, for Modelyard with every feature on.
    w("## Goals of issue 20 (Modelyard with every feature on, this run)\n")
    w("| goal | measured | met? |")
    w("|---|---|---|")

    def goal(text, value_text, ok):
        w(f"| {text} | {value_text} | {'–' if ok is None else ('met' if ok else '**not met**')} |")

    m, f = "modelyard", "floor"
    if m in has and f in has:
        am, af = added("serial", "p50")(m), added("serial", "p50")(f)
        r = ratio(am, af)
        goal("c=1 serial keep-alive: added p50 ≤ 1.2× the floor's",
             f"{fmt(am)} µs vs {fmt(af)} µs ({fmt(r, 2)}×)", None if r is None else (am <= 1.2 * af))
        a99 = added("serial", "p99")(m)
        goal("c=1 serial: added p99 ≤ 110 µs (quiet machine)", f"{fmt(a99)} µs",
             None if a99 is None else a99 <= 110)
        pm, pf = added("paced", "p99")(m), added("paced", "p99")(f)
        goal("1,000 req/s paced: added p99 ≤ 1.2× the floor's",
             f"{fmt(pm)} µs vs {fmt(pf)} µs", None if None in (pm, pf) else pm <= 1.2 * pf)
        sm, sf = cell(m, "sat", "rps"), cell(f, "sat", "rps")
        r = ratio(sm, sf)
        goal("saturation keep-alive: ≥ 70 % of the floor's req/s",
             f"{fmt(sm)} vs {fmt(sf)} ({fmt(r * 100 if r else None, 0)} %)", None if r is None else r >= 0.7)
        if "no-log" in has:
            so = cell("no-log", "sat", "rps")
            r2 = ratio(sm, so)
            goal("call log on vs off: ≤ 10 % throughput", f"{fmt(sm)} vs {fmt(so)} "
                 f"({fmt((1 - r2) * 100 if r2 else None, 0)} % less)", None if r2 is None else r2 >= 0.9)
        st, stf = cell(m, "stream32", "rps"), cell(f, "stream32", "rps")
        r = ratio(st, stf)
        goal("c=32 20-chunk streams/s ≥ 85 % of the floor's",
             f"{fmt(st)} vs {fmt(stf)} ({fmt(r * 100 if r else None, 0)} %)", None if r is None else r >= 0.85)
        pc = per_chunk(m)
        goal("per-chunk added ≤ 2 µs", f"{fmt(pc, 2)} µs", None if pc is None else pc <= 2)
    if m in has:
        t = tmap[m]
        goal("RSS idle ≤ 15 MB", f"{fmt(mb(t.rss_idle), 1)} MB", None if t.rss_idle is None else mb(t.rss_idle) <= 15)
        h = cell(m, "sat", "hwm")
        goal("RSS under load ≤ 40 MB (peak during saturation c=32)",
             f"{fmt(mb(h), 1)} MB (peak over every scenario: {fmt(mb(ctx['hwm'].get(m)), 1)} MB)",
             None if h is None else mb(h) <= 40)
        goal("cold start ≤ 100 ms", f"{fmt(t.cold_ms)} ms", None if t.cold_ms is None else t.cold_ms <= 100)
    if m in has and "litellm" in has:
        # The rows of the LiteLLM table; the slow-upstream rows are bounded by the
        # upstream's own 20 ms for every target, so no gateway can be 50× ahead there.
        judged = [("serial", "p50", False), ("paced", "p50", False), ("sat", "rps", True),
                  ("stream32", "rps", True)]
        worst = None
        for scen, key, higher_better in judged:
            a, b = cell(m, scen, key), cell("litellm", scen, key)
            r = ratio(a, b) if higher_better else ratio(b, a)
            if r is not None and (worst is None or r < worst[0]):
                worst = (r, scen, key)
        rss = ratio(cell("litellm", "sat", "hwm"), cell(m, "sat", "hwm"))
        goal("≥ 50× LiteLLM on every row (judged: serial p50, paced p50, saturation req/s, c=32 "
             "streams/s)", (f"worst: {fmt(worst[0], 1)}× ({worst[1]} {worst[2]})" if worst else "–")
             + f"; RSS under saturation, not judged: {fmt(rss, 1)}× less",
             None if worst is None else worst[0] >= 50)
    else:
        goal("≥ 50× LiteLLM on every row", "LiteLLM not run", None)
    w("")
    return "\n".join(L) + "\n"


def mb(kib):
    return None if kib is None else kib / 1024


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out")
    ap.add_argument("--bins", required=True, help="directory with modelyard, mock-upstream, floor-proxy")
    ap.add_argument("--oha", required=True)
    ap.add_argument("--litellm", help="the litellm executable; none: LiteLLM is skipped")
    ap.add_argument("--litellm-version", default="–")
    ap.add_argument("--debug-build", action="store_true", help="the binaries are debug builds")
    ap.add_argument("--command", default="scripts/bench-compare.sh")
    a = ap.parse_args()
    rounds = a.rounds or 1
    if rounds < 1:
        ap.error("--rounds must be ≥ 1")

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ctx = {
        "smoke": a.smoke, "rounds": rounds, "command": a.command, "debug": a.debug_build,
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_before": loadavg(),
        "litellm_version": a.litellm_version if a.litellm else "not run",
        "results": {}, "steps": {}, "steps_tried": {}, "hwm": {}, "rss_after": {},
    }
    ctx["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                   capture_output=True, text=True).stdout.strip() or "?"
    ctx["oha_version"] = subprocess.run([a.oha, "--version"], capture_output=True,
                                        text=True).stdout.strip().removeprefix("oha ")
    tmp = tempfile.mkdtemp(prefix="bench-compare-")
    log(f"logs and databases in {tmp}")
    try:
        oha = Oha(a.oha)
        direct, mock_url = start_mock(a.bins, tmp)
        targets = [direct]
        log("starting the floor")
        targets.append(start_floor(a.bins, tmp, mock_url))
        log("starting Modelyard (every feature on) and Modelyard (call log off)")
        targets.append(start_modelyard(a.bins, tmp, mock_url, "modelyard", "Modelyard (all on)", True))
        targets.append(start_modelyard(a.bins, tmp, mock_url, "no-log", "Modelyard, call log off", False))
        if a.litellm:
            log("starting LiteLLM (2 workers)")
            targets.append(start_litellm(a.litellm, tmp, mock_url))
        for t in targets:
            t.check()
        time.sleep(1)
        for t in targets:
            t.rss_idle = status_kib(t.pids(), "VmRSS")
        ctx["targets"] = targets
        # Warm-up: every target's pools and caches, untimed.
        for t in targets:
            oha.run(t, "fast", "fast", 8, "300ms")
            oha.run(t, "fast", "stream", 8, "300ms")
        for rnd in range(rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for scen, label, params in scenarios(a.smoke):
                for t in order:
                    log(f"round {rnd + 1}/{rounds}: {label} → {t.label}")
                    r = oha.run(t, **params)
                    ctx["results"].setdefault((t.name, scen), []).append(r)
            for t in order:
                log(f"round {rnd + 1}/{rounds}: 20 ms upstream, stepped rates → {t.label}")
                best, tried = step_rates(oha, t, a.smoke)
                ctx["steps"].setdefault(t.name, []).append(best)
                ctx["steps_tried"].setdefault(t.name, []).append((best, tried))
        for t in targets:
            ctx["rss_after"][t.name] = status_kib(t.pids(), "VmRSS")
            peaks = [r.get("hwm") or 0 for (n, _), rs in ctx["results"].items() if n == t.name
                     for r in rs]
            peaks += [x[4] or 0 for _, tried in ctx["steps_tried"].get(t.name, []) for x in tried]
            ctx["hwm"][t.name] = max(peaks + [status_kib(t.pids(), "VmHWM")])
            if t.proc.poll() is not None:
                raise Failure(f"{t.label} exited during the run ({t.proc.returncode})")
    except (Failure, OSError, subprocess.TimeoutExpired, ValueError) as e:
        log(f"FAILED: {e} (logs in {tmp})")
        cleanup()
        return 1
    cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
    ctx["load_after"] = loadavg()
    text = report(ctx)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        log(f"report written to {a.out}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
