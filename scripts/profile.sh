#!/usr/bin/env bash
# profile.sh - where a proxied request's CPU goes: `perf` samples of the
# release `modelyard` binary (every feature on, as scripts/bench-compare.sh
# runs it: API key, a route with two targets, call log on SQLite, metrics)
# under oha at saturation (c=32, non-streamed chat completions against the
# zero-latency mock upstream), folded into stacks and drawn as a flame graph.
#
#   scripts/profile.sh [--seconds N] [--call-log on|off] [--stream] [--out DIR]
#
#   --seconds N      sampling time under load (default 8; 2 s of warm-up first)
#   --call-log X     on (default) or off
#   --stream         20-chunk streamed completions instead of non-streamed ones
#   --out DIR        where the results go (default target/profile); it gets
#                    perf.data, NAME.folded (one line per stack: frames joined
#                    by ';', then the sample count) and NAME.svg, where NAME
#                    says what ran (saturation-call-log-on, ...); frames
#                    narrower than 0.2 % of the samples are left out
#
# Also prints req/s, p50 and the server's CPU µs per request for the run
# (perf's own sampling overhead included). Needs perf (Debian: linux-perf)
# and permission to sample (root, or kernel.perf_event_paranoid <= 1).
# Installs, cached under ~/.cache/modelyard: oha (as bench-compare.sh) and
# inferno (cargo install, for the flame graph). Builds the release
# binaries with line tables (CARGO_PROFILE_RELEASE_DEBUG=line-tables-only)
# so that stacks name their functions; that build is separate from
# bench-compare's only in its debug info.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/modelyard"
OHA_VERSION="${OHA_VERSION:-1.16.0}"
INFERNO_VERSION="${INFERNO_VERSION:-0.12.8}"

say() { printf '\033[1m[profile]\033[0m %s\n' "$*" >&2; }
die() { printf '[profile] ERROR: %s\n' "$*" >&2; exit 1; }

SECONDS_UNDER_LOAD=8
CALL_LOG=on
STREAM=0
OUT="$ROOT/target/profile"
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_UNDER_LOAD="${2:?--seconds needs a number}"; shift ;;
        --call-log) CALL_LOG="${2:?--call-log needs on or off}"; shift ;;
        --stream) STREAM=1 ;;
        --out) OUT="${2:?--out needs a directory}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$CALL_LOG" in on) LOG_TOML=true ;; off) LOG_TOML=false ;; *) die "--call-log on|off" ;; esac
command -v perf >/dev/null || die "perf is required (Debian: apt-get install linux-perf)"

OHA="$CACHE/oha/bin/oha"
if [ "$("$OHA" --version 2>/dev/null)" != "oha $OHA_VERSION" ]; then
    say "installing oha $OHA_VERSION (once; cached in $CACHE/oha)"
    nice cargo install oha --version "$OHA_VERSION" --locked --force --root "$CACHE/oha" \
        || die "cargo install oha failed"
fi
INFERNO="$CACHE/inferno/bin"
if [ ! -x "$INFERNO/inferno-flamegraph" ]; then
    say "installing inferno $INFERNO_VERSION (once; cached in $CACHE/inferno)"
    nice cargo install inferno --version "$INFERNO_VERSION" --locked --force --root "$CACHE/inferno" \
        || die "cargo install inferno failed"
fi

say "building release binaries with line tables: modelyard, mock-upstream"
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build -q --release \
    -p modelyard --bin modelyard -p modelyard-testkit --bin mock-upstream \
    || die "cargo build failed"
BINS="$ROOT/target/release"

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

"$BINS/mock-upstream" --no-record --model "slow-first:20@5" --model "slow-first:20" > "$TMP/mock.url" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/mock.url" ] && break; sleep 0.1; done
MOCK_URL="$(head -1 "$TMP/mock.url")"
[ -n "$MOCK_URL" ] || die "mock-upstream did not start"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# The configuration bench-compare gives "Modelyard (all on)" / "call log off".
CONFIG="$(python3 - "$TMP" "$PORT" "$MOCK_URL" "$LOG_TOML" <<'PY'
import sys
sys.path.insert(0, "scripts/bench_compare")
from targets import modelyard_config
tmp, port, mock_url, call_log = sys.argv[1:]
print(modelyard_config(tmp, "profile", int(port), mock_url, call_log == "true"))
PY
)"
KEY="$("$BINS/modelyard" --config "$CONFIG" keys create --role member --name profile | tail -1)"
case "$KEY" in mk_*) ;; *) die "keys create failed" ;; esac
"$BINS/modelyard" --config "$CONFIG" serve 2> "$TMP/server.log" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break
    sleep 0.1
done

if [ "$STREAM" = 1 ]; then
    WORDS="$(printf 'word %.0s' $(seq 19))"
    BODY="{\"model\":\"bench-fast\",\"messages\":[{\"role\":\"user\",\"content\":\"${WORDS% }\"}],\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
    NAME="streams-call-log-$CALL_LOG"
else
    BODY='{"model":"bench-fast","messages":[{"role":"user","content":"hello there world"}],"max_tokens":32}'
    NAME="saturation-call-log-$CALL_LOG"
fi
load() {
    local duration=$1
    shift
    "$OHA" --no-tui -m POST -H "authorization: Bearer $KEY" -H "content-type: application/json" \
        -d "$BODY" -c 32 -z "$duration" "$@" "http://127.0.0.1:$PORT/v1/chat/completions"
}
say "warm-up (2 s), then $SECONDS_UNDER_LOAD s sampled: $NAME"
load 2s > /dev/null
mkdir -p "$OUT"
cpu() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
CPU0="$(cpu)"
perf record -q -F 499 --call-graph dwarf,16384 -p "$SERVER" -o "$OUT/perf.data" \
    -- sleep "$SECONDS_UNDER_LOAD" 2> "$TMP/perf.log" &
PERF=$!
load "${SECONDS_UNDER_LOAD}s" --output-format json > "$TMP/oha.json"
CPU1="$(cpu)"
wait "$PERF" || die "perf record failed: $(tail -3 "$TMP/perf.log")"
python3 - "$TMP/oha.json" "$CPU0" "$CPU1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
n = sum(d["statusCodeDistribution"].values())
ok = d["statusCodeDistribution"].get("200", 0)
cpu_us = (float(sys.argv[3]) - float(sys.argv[2])) / int(sys.argv[4]) * 1e6
print(f"req/s {d['summary']['requestsPerSec']:.0f}, {ok}/{n} answered 200, "
      f"p50 {d['latencyPercentiles']['p50'] * 1000:.3f} ms, server CPU {cpu_us / max(n, 1):.1f} us/request")
PY
say "folding stacks"
# --no-inline: frames of inlined functions are left out (addr2line on every
# address takes minutes and multiplies the distinct stacks); the functions
# they were inlined into remain. Deep async stacks may end in [unknown]
# where the 16 KiB stack copy ran out; their leaf frames are right.
perf script -i "$OUT/perf.data" --no-inline 2>/dev/null | "$INFERNO/inferno-collapse-perf" > "$OUT/$NAME.folded"
"$INFERNO/inferno-flamegraph" --minwidth 0.2 --title "modelyard, $NAME (scripts/profile.sh)" \
    < "$OUT/$NAME.folded" > "$OUT/$NAME.svg"
say "wrote $OUT/$NAME.folded and $OUT/$NAME.svg"
