#!/usr/bin/env bash
# bench-instructions.sh - instructions per proxied request (issue 20), counted
# by valgrind's callgrind: Modelyard with every feature on and the floor
# proxy, in front of the zero-latency mock. Unlike times, the counts do not
# move with the machine's load, so a change of a few percent shows.
#
#   scripts/bench-instructions.sh [--no-call-log] [--stream] [--requests N] [--bin PATH] [--keep DIR]
#
#   --no-call-log  Modelyard with `call_log = false`
#   --stream       20-chunk streamed chat completions instead of plain ones
#   --requests N   requests counted per target (default 2000), after 300 uncounted
#   --bin PATH     the modelyard binary to count (default target/release/modelyard)
#   --keep DIR     keep the callgrind files (my.cg.1, floor.cg.1) in DIR, for
#                  `callgrind_annotate --inclusive=yes DIR/my.cg.1`
#
# Each server runs under callgrind; a serial keep-alive client (Python,
# outside valgrind) sends the requests; the counters are zeroed after the
# warm-up and dumped after the last answer, so only the counted requests
# (and the server's background work meanwhile: the call log's writer,
# timers) are in the figure. Builds the release binaries it needs. Needs
# valgrind (Debian's package; installed here if missing) and python3.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '\033[1m[bench-instructions]\033[0m %s\n' "$*" >&2; }
die() { printf '[bench-instructions] ERROR: %s\n' "$*" >&2; exit 1; }

CALL_LOG=true
STREAM=""
N=2000
BIN=""
KEEP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-call-log) CALL_LOG=false ;;
        --stream) STREAM=1 ;;
        --requests) N="${2:?--requests needs a number}"; shift ;;
        --bin) BIN="${2:?--bin needs a path}"; shift ;;
        --keep) KEEP="${2:?--keep needs a directory}"; shift ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done
[ "$N" -gt 0 ] 2>/dev/null || die "--requests needs a positive number"

if ! command -v valgrind >/dev/null; then
    say "installing valgrind (apt-get)"
    apt-get install -y -q valgrind >/dev/null || die "cannot install valgrind"
fi
say "building release binaries: modelyard, mock-upstream, floor-proxy"
cargo build -q --release -p modelyard --bin modelyard -p modelyard-testkit --bin mock-upstream \
    -p modelyard-bench --bin floor-proxy || die "cargo build failed"
B="$ROOT/target/release"
BIN="${BIN:-$B/modelyard}"

T="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp "$T"/*.cg.1 "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$T"
}
trap cleanup EXIT

cat > "$T/client.py" <<'PY'
# client.py PORT MODEL N [KEY]: N serial keep-alive chat completions.
import http.client, json, os, sys
port, model, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
request = {"model": model, "messages": [{"role": "user", "content": "hello brave new world"}],
           "max_tokens": 64}
if os.environ.get("STREAM"):
    request["stream"] = True
headers = {"content-type": "application/json"}
if len(sys.argv) > 4:
    headers["authorization"] = "Bearer " + sys.argv[4]
body = json.dumps(request)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    conn.request("POST", "/v1/chat/completions", body, headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        sys.exit(f"{response.status}: {data[:300]!r}")
PY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
first_url() { # first line of $1 that is a URL, waiting for it
    for _ in $(seq 200); do
        url=$(grep -m1 -E '^http://' "$1" || true)
        [ -n "$url" ] && { echo "$url"; return; }
        sleep 0.3
    done
    die "no URL in $1"
}
# count PID PORT MODEL [KEY]: warm up, zero, N requests, dump; prints the count.
count() {
    local pid=$1 port=$2 model=$3 key=${4:-}
    for _ in $(seq 200); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
        sleep 0.3
    done
    STREAM=$STREAM python3 "$T/client.py" "$port" "$model" 300 $key
    sleep 1
    callgrind_control -z "$pid" >/dev/null 2>&1
    STREAM=$STREAM python3 "$T/client.py" "$port" "$model" "$N" $key
    sleep 0.5
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 0.5
    grep -h '^summary:' "$T"/"$5".cg.1 | awk '{print $2}'
}

"$B/mock-upstream" --no-record --model mock-model > "$T/mock.out" 2>&1 &
PIDS+=($!)
MOCK_URL=$(first_url "$T/mock.out")

PORT=$(free_port)
cat > "$T/modelyard.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[storage]
url = "sqlite://$T/modelyard.db"
data_dir = "$T/data"
call_log = $CALL_LOG

[telemetry]
metrics = true

[[providers]]
name = "a"
kind = "llama-cpp"
base_url = "$MOCK_URL"

[[providers]]
name = "b"
kind = "llama-cpp"
base_url = "$MOCK_URL"

[[routes]]
name = "bench"
targets = ["a/mock-model", "b/mock-model"]
strategy = "least-busy"
TOML
KEY=$("$BIN" --config "$T/modelyard.toml" keys create --role member --name bench 2>/dev/null | tail -1)
case "$KEY" in mk_*) ;; *) die "keys create failed" ;; esac
valgrind --tool=callgrind --callgrind-out-file="$T/my.cg" "$BIN" --config "$T/modelyard.toml" serve \
    > "$T/my.log" 2>&1 &
MY=$!
PIDS+=($MY)
say "Modelyard under callgrind (call log $CALL_LOG${STREAM:+, streams}): $N requests"
MY_COUNT=$(count "$MY" "$PORT" bench "$KEY" my)
kill "$MY"

valgrind --tool=callgrind --callgrind-out-file="$T/floor.cg" "$B/floor-proxy" --upstream "$MOCK_URL" \
    > "$T/floor.out" 2>&1 &
FLOOR=$!
PIDS+=($FLOOR)
FLOOR_URL=$(first_url "$T/floor.out")
say "the floor under callgrind: $N requests"
FLOOR_COUNT=$(count "$FLOOR" "${FLOOR_URL##*:}" floor/mock-model "" floor)

python3 - "$MY_COUNT" "$FLOOR_COUNT" "$N" "$CALL_LOG" "${STREAM:+streamed (20 chunks)}" <<'PY'
import sys
my, floor, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
kind = sys.argv[5] or "non-streamed"
print(f"| instructions per request ({kind}, {n} requests) | count |")
print("|---|---:|")
print(f"| Modelyard (call log {'on' if sys.argv[4] == 'true' else 'off'}) | {my / n / 1000:.1f}k |")
print(f"| the floor | {floor / n / 1000:.1f}k |")
print(f"| Modelyard ÷ floor | {my / floor:.2f}× |")
PY
