"""oha runs: one scenario against one target, with CPU and peak RSS readings around it."""

import json
import subprocess

from plan import body, step_list
from sysio import CLK, Failure, cpu_ticks, reset_peak, status_kib


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


