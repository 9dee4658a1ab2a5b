#!/usr/bin/env bash
# test.sh - the whole test suite: unit, integration (mock upstream), store on
# SQLite (and PostgreSQL when MODELYARD_TEST_POSTGRES_URL is set), end-to-end
# against the real local model, and the official openai and anthropic Python
# SDKs (chat, responses, messages, and embeddings / legacy completions against a second
# llama-server started with --embeddings --pooling mean), and Schemathesis
# against the server's own OpenAPI document (scripts/schemathesis.sh), then a
# smoke run of the side-by-side performance harness (scripts/bench-compare.sh
# --smoke; it reports and only fails when the harness itself breaks).
#
#   scripts/test.sh
#
# The first run builds llama-server (~8 minutes on 2 cores; cached under
# ~/.cache/real-llm). Env: MODELYARD_TEST_LLM_PORT (18181),
# MODELYARD_TEST_EMBED_PORT (18182, the embeddings llama-server).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
LLM_PORT="${MODELYARD_TEST_LLM_PORT:-18181}"
EMBED_PORT="${MODELYARD_TEST_EMBED_PORT:-18182}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/modelyard"
OPENAI_SDK_VERSION="${OPENAI_SDK_VERSION:-3.51.0}"
ANTHROPIC_SDK_VERSION="${ANTHROPIC_SDK_VERSION:-2.17.0}"

say() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }

SERVER_PID=""
TMP="$(mktemp -d)"
cleanup() {
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    scripts/llm-stop.sh --port "$LLM_PORT" >/dev/null 2>&1 || true
    scripts/llm-stop.sh --port "$EMBED_PORT" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

say "real local model (llama-server + SmolLM2-135M) on port $LLM_PORT"
# Two slots: the end-to-end tests and the SDK check may overlap with other
# requests; --threads 1 keeps generation steady while cargo compiles.
MODELYARD_TEST_LLM_URL="$(scripts/llm-start.sh --port "$LLM_PORT")"
export MODELYARD_TEST_LLM_URL

say "Chromium + ChromeDriver for the browser tests"
scripts/browser-setup.sh
export MODELYARD_TEST_CHROMEDRIVER=/usr/bin/chromedriver MODELYARD_TEST_CHROMIUM=/usr/bin/chromium

say "cargo test --workspace"
cargo test --workspace --all-targets

say "openai Python SDK $OPENAI_SDK_VERSION against modelyard"
VENV="$CACHE/sdk-venv-$OPENAI_SDK_VERSION"
if [ ! -f "$VENV/.complete" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_SDK_VERSION"
    touch "$VENV/.complete"
fi
ANTHROPIC_VENV="$CACHE/anthropic-venv-$ANTHROPIC_SDK_VERSION"
if [ ! -f "$ANTHROPIC_VENV/.complete" ]; then
    rm -rf "$ANTHROPIC_VENV"
    python3 -m venv "$ANTHROPIC_VENV"
    "$ANTHROPIC_VENV/bin/pip" install -q --disable-pip-version-check "anthropic==$ANTHROPIC_SDK_VERSION"
    touch "$ANTHROPIC_VENV/.complete"
fi
say "embeddings llama-server (same SmolLM2, --embeddings --pooling mean) on port $EMBED_PORT"
# The chat server is left as the other tests know it; this one serves
# /v1/embeddings (and chat / completions too, unused here).
EMBED_URL="$(scripts/llm-start.sh --port "$EMBED_PORT" --parallel 1 --ctx-size 2048 \
    --alias smollm2-embed -- --embeddings --pooling mean)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$TMP/sdk.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[storage]
url = "sqlite://$TMP/sdk.db"
[[providers]]
name = "local"
kind = "llama-cpp"
base_url = "$MODELYARD_TEST_LLM_URL"
[[providers]]
name = "embed"
kind = "llama-cpp"
base_url = "$EMBED_URL"
[[providers]]
name = "native"
kind = "llama-cpp"
base_url = "$MODELYARD_TEST_LLM_URL"
messages_api = true
TOML
cargo build -q -p modelyard
"$ROOT/target/debug/modelyard" --config "$TMP/sdk.toml" serve 2>"$TMP/serve.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/serve.log" >&2; exit 1; }
    sleep 0.1
done
"$VENV/bin/python" scripts/sdk_smoke.py "http://127.0.0.1:$PORT" local/smollm2-135m-instruct

say "openai Python SDK $OPENAI_SDK_VERSION: responses against modelyard (POST /v1/responses)"
"$VENV/bin/python" scripts/responses_smoke.py "http://127.0.0.1:$PORT" local/smollm2-135m-instruct

say "anthropic Python SDK $ANTHROPIC_SDK_VERSION against modelyard (POST /v1/messages, translated and native)"
"$ANTHROPIC_VENV/bin/python" scripts/anthropic_smoke.py "http://127.0.0.1:$PORT" local/smollm2-135m-instruct \
    native/smollm2-135m-instruct

say "openai Python SDK: embeddings.create and legacy completions.create against modelyard"
"$VENV/bin/python" scripts/embeddings_smoke.py "http://127.0.0.1:$PORT" embed/smollm2-embed local/smollm2-135m-instruct

say "Schemathesis against GET /openapi.json (every operation, 200 examples each)"
# Its own server and mock upstream on free ports; the venv is cached like the
# SDKs' (~/.cache/modelyard/schemathesis-venv-VERSION).
scripts/schemathesis.sh

say "performance harness smoke (scripts/bench-compare.sh --smoke): reports numbers, fails only if the harness breaks"
# The debug binaries `cargo test --workspace` built (a release build would add
# many minutes to CI), oha installed once (cached); LiteLLM only if its venv
# is already cached. Its figures never fail the suite (and are not
# representative in debug): a target that does not start or answer does.
scripts/bench-compare.sh --smoke --debug --out "$TMP/bench-smoke.md"
cat "$TMP/bench-smoke.md" >&2

say "all tests passed"
