#!/usr/bin/env bash
# quickstart.sh - the main job: build and start a real local model
# (llama.cpp llama-server + SmolLM2-135M, see docs/real-llm.md), build
# Modelyard, start it with that model as provider `local`, send a first
# chat through it, and keep serving until Ctrl-C.
#
#   scripts/quickstart.sh            # Modelyard on 127.0.0.1:4000, model on 127.0.0.1:18080
#
# Env: MODELYARD_PORT (4000), MODELYARD_LLM_PORT (18080), MODELYARD_PROFILE
# (release | debug, default release). The first run builds llama-server
# (~8 minutes on 2 cores) and Modelyard (a few minutes); later runs start in
# seconds.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PORT="${MODELYARD_PORT:-4000}"
LLM_PORT="${MODELYARD_LLM_PORT:-18080}"
PROFILE="${MODELYARD_PROFILE:-release}"
STATE="$ROOT/.modelyard"
CONFIG="$STATE/quickstart.toml"

say() { printf '\033[1m[quickstart]\033[0m %s\n' "$*" >&2; }
die() { printf '[quickstart] ERROR: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"

say "1/4 real local model: building llama-server and SmolLM2-135M if needed (first time ~8 min; progress below)"
LLM_URL="$(scripts/llm-start.sh --port "$LLM_PORT")" || die "could not start llama-server (see messages above)"
say "     model server ready at $LLM_URL"

say "2/4 building modelyard ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --release -p modelyard
    BIN="$ROOT/target/release/modelyard"
else
    cargo build -p modelyard
    BIN="$ROOT/target/debug/modelyard"
fi

mkdir -p "$STATE"
cat >"$CONFIG" <<TOML
# Written by scripts/quickstart.sh.
[server]
listen = "127.0.0.1:$PORT"

[storage]
url = "sqlite://$STATE/modelyard.db"

[defaults]
model = "local/smollm2-135m-instruct"

[[providers]]
name = "local"
kind = "llama-cpp"
base_url = "$LLM_URL"
TOML
"$BIN" config check "$CONFIG" >/dev/null

say "3/4 starting modelyard on 127.0.0.1:$PORT (config $CONFIG)"
# In its own session: a Ctrl-C in this terminal reaches only this script,
# whose cleanup sends Modelyard one SIGTERM (a second signal would make it
# exit at once, without draining the call log).
setsid "$BIN" --config "$CONFIG" serve &
SERVER_PID=$!
cleanup() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    scripts/llm-stop.sh --port "$LLM_PORT" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "modelyard exited during start-up (port $PORT taken? set MODELYARD_PORT)"
    sleep 0.1
done

say "4/4 first chat through Modelyard:"
"$BIN" --config "$CONFIG" chat --max-tokens 64 "Hello! In one sentence, who are you?" || die "the first chat failed"

cat >&2 <<MSG

Modelyard is running at http://127.0.0.1:$PORT with a real local model (provider 'local').
Web UI: http://127.0.0.1:$PORT/ui
In another terminal:

  $BIN --config $CONFIG chat "Write a haiku about the sea"
  $BIN --config $CONFIG models
  $BIN --config $CONFIG calls

or point any OpenAI client at http://127.0.0.1:$PORT/v1 (model "local/smollm2-135m-instruct"):

  curl -s http://127.0.0.1:$PORT/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"local/smollm2-135m-instruct","messages":[{"role":"user","content":"Hi"}]}'

Press Ctrl-C to stop Modelyard and the model server.
MSG
wait "$SERVER_PID"
