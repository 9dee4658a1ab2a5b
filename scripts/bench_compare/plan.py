"""What runs: the request bodies, the model names per behaviour, the scenarios and the stepped rates."""

PROMPT = "hello there world"
# 19 words: the mock answers "echo: " + them, one SSE chunk per word: 20 content chunks.
STREAM_PROMPT = " ".join(["word"] * 19)
STREAM_CHUNKS = 20
# Logical model -> the mock's model name: zero latency; 20 ms to first byte then 5 ms between
# SSE events; 20 ms before a non-streamed answer.
KEYS = {"fast": "mock-model", "slow_stream": "slow-first:20@5", "slow": "slow-first:20"}


def body(model, kind):
    """The chat completion request body of `kind` ("fast": non-streamed, "stream")."""
    if kind == "stream":
        return {
            "model": model,
            "messages": [{"role": "user", "content": STREAM_PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32}


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


