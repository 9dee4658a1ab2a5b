#!/usr/bin/env python3
"""bench_compare - the side-by-side performance harness of issue 20 (items 1 and 3).

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
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from load import Oha, step_rates
from plan import scenarios
from report import report
from sysio import Failure, cleanup, loadavg, log, on_signal, status_kib
from targets import start_floor, start_litellm, start_mock, start_modelyard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    ap.add_argument("--before", help="a directory with an earlier modelyard binary: one more "
                    "target, 'Modelyard (all on), before', for a change's before/after in one run")
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
        "before": a.before,
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
        if a.before:
            log(f"starting Modelyard (every feature on) from {a.before}")
            targets.append(start_modelyard(a.before, tmp, mock_url, "before",
                                           "Modelyard (all on), before", True))
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
