"""The targets: the mock (direct), the floor, Modelyard (all on / call log off), LiteLLM."""

import os
import re
import subprocess
import time

from plan import KEYS, STREAM_CHUNKS, body
from sysio import Failure, free_port, post, read_url_line, spawn, tree, wait_answer


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


