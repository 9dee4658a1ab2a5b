"""Processes this run started (and their cleanup), /proc readings, small HTTP helpers."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time

from plan import body

CLK = os.sysconf("SC_CLK_TCK")
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


