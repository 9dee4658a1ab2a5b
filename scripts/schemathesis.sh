#!/usr/bin/env bash
# schemathesis.sh - property-based API test of the live server against its
# own OpenAPI document (GET /openapi.json) with Schemathesis (PyPI).
#
#   scripts/schemathesis.sh [extra `st run` options]
#
# Builds `modelyard` and `mock-upstream` (modelyard-testkit's MockUpstream as
# a process), starts both on free loopback ports (SQLite in a temporary
# directory; one admin key, created over the API), installs Schemathesis
# into a venv under ~/.cache/modelyard and runs every operation of the
# document with at least $SCHEMATHESIS_EXAMPLES (200) examples each and every
# check but one. Fails on any 5xx, any answer whose status, content type,
# headers or body the document does not describe, any malformed or
# unauthenticated request the server accepts, a wrong answer to a method a
# route lacks, and a resource still served after its DELETE. Not checked:
# positive_data_acceptance, which expects every request the schema allows to
# succeed, while ids and model names the schema cannot know (an unknown
# conversation, a model no provider serves) are rightly 404 / 422. Leaves the
# run's JUnit report and the server's log in $SCHEMATHESIS_REPORT_DIR
# (default: target/schemathesis).
#
# Streams: a streamed answer (chat, completions, messages, turns) from the
# mock upstream ends by itself within milliseconds. `GET
# /v1/conversations/{id}/events` is a live feed that stays open by design;
# for an existing conversation (the stateful phase finds some) it is cut by
# --request-timeout after 5 s, and Schemathesis checks the events read so
# far (the replay and `caught-up`). `timeout` bounds the whole run.
#
# Env: SCHEMATHESIS_VERSION (4.32.5), SCHEMATHESIS_EXAMPLES (200),
# SCHEMATHESIS_MAX_TIME (s, 480), SCHEMATHESIS_SEED (a fixed seed by default,
# so a failure reproduces).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/modelyard"
VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-200}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-480}"
SEED="${SCHEMATHESIS_SEED:-19}"
REPORT_DIR="${SCHEMATHESIS_REPORT_DIR:-$ROOT/target/schemathesis}"

say() { printf '\033[1m[schemathesis]\033[0m %s\n' "$*" >&2; }

TMP="$(mktemp -d)"
MOCK_PID=""
SERVER_PID=""
cleanup() {
    { [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" && wait "$SERVER_PID"; } 2>/dev/null || true
    { [ -n "$MOCK_PID" ] && kill -TERM "$MOCK_PID" && wait "$MOCK_PID"; } 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

VENV="$CACHE/schemathesis-venv-$VERSION"
if [ ! -f "$VENV/.complete" ]; then
    say "installing schemathesis $VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION"
    touch "$VENV/.complete"
fi

say "building modelyard and mock-upstream"
cargo build -q -p modelyard -p modelyard-testkit --bins

"$ROOT/target/debug/mock-upstream" >"$TMP/mock.url" 2>"$TMP/mock.log" &
MOCK_PID=$!
for _ in $(seq 1 100); do
    [ -s "$TMP/mock.url" ] && break
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$TMP/mock.log" >&2; exit 1; }
    sleep 0.1
done
MOCK_URL="$(head -1 "$TMP/mock.url")"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$TMP/modelyard.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[storage]
url = "sqlite://$TMP/schemathesis.db"
[[providers]]
name = "mock"
kind = "llama-cpp"
base_url = "$MOCK_URL"
TOML
mkdir -p "$REPORT_DIR"
"$ROOT/target/debug/modelyard" --config "$TMP/modelyard.toml" serve 2>"$REPORT_DIR/serve.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$REPORT_DIR/serve.log" >&2; exit 1; }
    sleep 0.1
done

# An admin key: keys are then required, so the requests Schemathesis makes
# without one must be refused (401), and every operation runs as admin.
KEY="$(curl -fsS -X POST -H 'content-type: application/json' \
    -d '{"name": "schemathesis", "role": "admin"}' "http://127.0.0.1:$PORT/v1/keys" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')"

# Schemathesis' own config (read from its working directory): the key for
# the document's bearer scheme, on every request except those that test a
# missing or wrong key.
cat >"$TMP/schemathesis.toml" <<TOML
[auth]
auto-signup = false
[auth.openapi.apiKey]
bearer = "$KEY"
TOML

say "st run: every operation, $EXAMPLES examples each, seed $SEED"
# Two `st` processes of one worker each, on disjoint halves of the document:
# parallel like `--workers 2`, without threads (Hypothesis' lambda printing
# calls ast.parse, which CPython 3.11 can fail with "AST constructor
# recursion depth mismatch" when two threads do it at once).
started=$(date +%s)
run_half() { # NAME FILTER...: one half, its output in $TMP/st-NAME.log
    local name=$1
    shift
    # From the temporary directory: Schemathesis keeps its example database
    # (.schemathesis/) in the working directory and reads a schemathesis.toml
    # found there.
    (cd "$TMP" && timeout --signal=INT "$MAX_TIME" "$VENV/bin/st" run "http://127.0.0.1:$PORT/openapi.json" \
        --checks all --exclude-checks positive_data_acceptance \
        --max-examples "$EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --request-timeout 5 \
        --suppress-health-check all \
        --report junit --report-dir "$REPORT_DIR" --report-junit-path "$REPORT_DIR/junit-$name.xml" \
        "$@" "${EXTRA[@]}") >"$TMP/st-$name.log" 2>&1
}
EXTRA=("$@")
run_half conversations --include-path-regex '^/v1/conversations' &
first=$!
run_half rest --exclude-path-regex '^/v1/conversations' &
second=$!
status=0
wait "$first" || status=$?
wait "$second" || { s=$?; [ "$status" -ne 0 ] || status=$s; }
cat "$TMP/st-conversations.log" "$TMP/st-rest.log"
say "finished in $(( $(date +%s) - started )) s (exit $status)"
if [ "$status" -eq 124 ]; then
    say "the run took longer than SCHEMATHESIS_MAX_TIME=${MAX_TIME}s and was stopped"
fi
if [ "$status" -ne 0 ]; then
    say "server log tail:"
    grep -v 'modelyard::access' "$REPORT_DIR/serve.log" | tail -n 40 >&2
fi
exit "$status"
