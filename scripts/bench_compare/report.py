"""The markdown report: the results table, the stepped-rate ladders, the goals of issue 20."""

import os
import statistics

from plan import STREAM_CHUNKS, scenarios, step_list


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
    if ctx.get("before"):
        w(f"- \"before\": the modelyard binary in {ctx['before']} (an earlier build), "
          "every feature on like \"all on\"")
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
        runs = R.get((t, scen), [])
        if key == "hwm":
            # RSS that was touched stays resident (the allocator keeps it), so later rounds would
            # show the peak of the heaviest scenario so far: the first round's reading is the one
            # that belongs to this scenario (only lighter ones ran before it).
            return runs[0].get(key) if runs else None
        return med([r.get(key) for r in runs])

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
            (f"{label}: peak RSS during the run (round 1) / MB", lambda n, s=scen: mb(cell(n, s, "hwm")), 1, "low"),
            (f"{label}: errors (sum over rounds)",
             lambda n, s=scen: sum(r["errors"] for r in R.get((n, s), [])), 0, None),
        ]

    def best_rate(n):
        bests = ctx["steps"].get(n, [])
        m = med([b[0] if b else 0 for b in bests])
        if bests and not m:
            return f"< {step_list(ctx['smoke'])[0]}"
        return m

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


