#!/usr/bin/env bash
# cluster.sh - a local Modelyard cluster in one command: three replicas on one
# PostgreSQL database behind HAProxy, with the real local model
# (llama-server + SmolLM2, see docs/real-llm.md) as provider `local`.
# Serves until Ctrl-C. See docs/deploy.md for the topology.
#
#   scripts/cluster.sh            # clients use http://127.0.0.1:4100
#
# Needs: PostgreSQL on 127.0.0.1:5432 (the machine's; trust auth for user
# postgres, or set CLUSTER_DB_URL), HAProxy (installed from Debian's packages
# when missing and this runs as root). NATS on 127.0.0.1:4222 (the machine's
# nats-server) is used for live events between replicas when it answers;
# without it replicas share events through the database (slower, no deltas).
#
# Env: CLUSTER_PORT (4100, the load balancer), CLUSTER_REPLICA_PORTS
# ("4101 4102 4103"), CLUSTER_DB_URL (postgres://postgres@127.0.0.1:5432/
# modelyard_cluster, created if missing), MODELYARD_LLM_PORT (18080),
# MODELYARD_PROFILE (release | debug, default release).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PORT="${CLUSTER_PORT:-4100}"
REPLICA_PORTS="${CLUSTER_REPLICA_PORTS:-4101 4102 4103}"
LLM_PORT="${MODELYARD_LLM_PORT:-18080}"
PROFILE="${MODELYARD_PROFILE:-release}"
DB_NAME=modelyard_cluster
DB_URL="${CLUSTER_DB_URL:-postgres://postgres@127.0.0.1:5432/$DB_NAME}"
STATE="$ROOT/.modelyard/cluster"

say() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "1/5 PostgreSQL"
pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null \
    || die "PostgreSQL does not answer on 127.0.0.1:5432: install it (apt-get install postgresql) and start it, or set CLUSTER_DB_URL"
if [ -z "${CLUSTER_DB_URL:-}" ]; then
    psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
        || psql -h 127.0.0.1 -U postgres -d postgres -q -c "CREATE DATABASE $DB_NAME"
fi
say "     database $DB_URL"

say "2/5 HAProxy"
if ! command -v haproxy >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null \
            || die "apt-get install haproxy failed"
    else
        die "HAProxy is missing: sudo apt-get install haproxy (Debian's package)"
    fi
fi

NATS_LINE=""
if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    NATS_LINE='nats_url = "nats://127.0.0.1:4222"'
    say "     NATS on 127.0.0.1:4222: live events between replicas"
else
    say "     no NATS on 127.0.0.1:4222 (apt-get install nats-server for live deltas between replicas)"
fi

say "3/5 real local model (first time builds llama-server, ~8 min)"
LLM_URL="$(scripts/llm-start.sh --port "$LLM_PORT")" || die "could not start llama-server"

say "4/5 building modelyard ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --release -p modelyard
    BIN="$ROOT/target/release/modelyard"
else
    cargo build -p modelyard
    BIN="$ROOT/target/debug/modelyard"
fi

mkdir -p "$STATE"
say "5/5 three replicas and the load balancer"
SERVERS=""
i=0
for rport in $REPLICA_PORTS; do
    i=$((i + 1))
    cat >"$STATE/replica-$i.toml" <<TOML
# Written by scripts/cluster.sh.
[server]
listen = "127.0.0.1:$rport"

[storage]
url = "$DB_URL"

[defaults]
model = "local/smollm2-135m-instruct"

[cluster]
replica_id = "replica-$i"
$NATS_LINE

[[providers]]
name = "local"
kind = "llama-cpp"
base_url = "$LLM_URL"
TOML
    "$BIN" --config "$STATE/replica-$i.toml" serve 2>"$STATE/replica-$i.log" &
    PIDS+=("$!")
    SERVERS="$SERVERS    server replica-$i 127.0.0.1:$rport check
"
done
cat >"$STATE/haproxy.cfg" <<CFG
# Written by scripts/cluster.sh. SSE-friendly: no buffering (HAProxy's
# default), long server and tunnel timeouts for streams, no sticky sessions.
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-keep-alive 60s
frontend modelyard
    bind 127.0.0.1:$PORT
    default_backend replicas
backend replicas
    balance leastconn
    option httpchk GET /health?ready=1
    http-check expect status 200
$SERVERS
CFG
haproxy -f "$STATE/haproxy.cfg" -db 2>"$STATE/haproxy.log" &
PIDS+=("$!")

for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/health?ready=1" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/health?ready=1" >/dev/null 2>&1 \
    || die "the cluster did not answer; see $STATE/*.log"
say "ready: point clients at http://127.0.0.1:$PORT (OpenAI base URL http://127.0.0.1:$PORT/v1);"
say "       replicas on $REPLICA_PORTS, logs in $STATE; Ctrl-C stops everything"
wait "${PIDS[@]}"
