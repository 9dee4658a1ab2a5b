#!/usr/bin/env bash
# bench-compare.sh - the side-by-side performance harness (issue 20, items 1 and 3).
#
#   scripts/bench-compare.sh [--smoke] [--rounds N] [--out FILE] [--no-litellm] [--before DIR]
#
# One run, all on 127.0.0.1 and bounded in time, against one zero-latency Rust
# mock upstream: direct to the mock; THE FLOOR (floor-proxy, the least work a
# gateway must do); Modelyard with every feature on (API keys required, a
# route with two targets, call log on SQLite, metrics); Modelyard with the
# call log off; LiteLLM (PyPI, 2 workers, no database, local cost map).
# Load generator: oha. Scenarios, figures and the report: see
# scripts/bench_compare/. The markdown report goes to stdout or --out.
#
#   --smoke       a few seconds per scenario (< 2 minutes once built), LiteLLM
#                 only if its venv is already installed; exits 0 whatever the
#                 numbers, non-zero only if something failed to start
#   --rounds N    interleaved rounds, medians reported (default 3; smoke 1)
#   --out FILE    write the report to FILE
#   --no-litellm  skip LiteLLM
#   --before DIR  one more target, "Modelyard (all on), before": DIR/modelyard
#                 (an earlier build, e.g. `git worktree add` of the base
#                 commit and its release build), with every feature on like
#                 the current one; a request-path change's before/after in
#                 one run
#   --debug       use debug binaries (target/debug) instead of release ones:
#                 no release build, figures NOT representative (the report
#                 says so); scripts/test.sh uses it with --smoke, after
#                 `cargo test --workspace` has built those binaries
#
# Installs, cached under ~/.cache/modelyard (like scripts/test.sh's venvs):
# oha $OHA_VERSION (cargo install --locked) and litellm[proxy]
# $LITELLM_VERSION in a venv. Builds release binaries: modelyard,
# mock-upstream, floor-proxy.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/modelyard"
OHA_VERSION="${OHA_VERSION:-1.16.0}"
# 1.81.13: the last release before the compromised 1.82.7/1.82.8 uploads
# (and long before 1.107.0's); newer ones were not vetted here.
LITELLM_VERSION="${LITELLM_VERSION:-1.81.13}"

say() { printf '\033[1m[bench-compare]\033[0m %s\n' "$*" >&2; }
die() { printf '[bench-compare] ERROR: %s\n' "$*" >&2; exit 1; }

SMOKE=0
ROUNDS=""
OUT=""
LITELLM=1
BEFORE=""
PROFILE=release
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --out) OUT="${2:?--out needs a file}"; shift ;;
        --no-litellm) LITELLM=0 ;;
        --before) BEFORE="${2:?--before needs a directory}"; shift ;;
        --debug) PROFILE=debug ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -z "$ROUNDS" ] && { [ "$SMOKE" = 1 ] && ROUNDS=1 || ROUNDS=3; }

command -v cargo >/dev/null || die "cargo is required"
command -v python3 >/dev/null || die "python3 is required"

OHA="$CACHE/oha/bin/oha"
if [ "$("$OHA" --version 2>/dev/null)" != "oha $OHA_VERSION" ]; then
    say "installing oha $OHA_VERSION (once; cached in $CACHE/oha)"
    nice cargo install oha --version "$OHA_VERSION" --locked --force --root "$CACHE/oha" \
        || die "cargo install oha failed"
fi

LITELLM_BIN=""
VENV="$CACHE/litellm-venv-$LITELLM_VERSION"
if [ "$LITELLM" = 1 ]; then
    if [ -f "$VENV/.complete" ]; then
        LITELLM_BIN="$VENV/bin/litellm"
    elif [ "$SMOKE" = 1 ]; then
        say "LiteLLM is not installed ($VENV): the smoke run skips it"
    else
        say "installing litellm[proxy]==$LITELLM_VERSION (once; cached in $VENV)"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        nice "$VENV/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" \
            || die "pip install litellm failed"
        touch "$VENV/.complete"
        LITELLM_BIN="$VENV/bin/litellm"
    fi
fi

say "building $PROFILE binaries: modelyard, mock-upstream, floor-proxy"
cargo build -q $([ "$PROFILE" = release ] && echo --release) -p modelyard --bin modelyard \
    -p modelyard-testkit --bin mock-upstream \
    -p modelyard-bench --bin floor-proxy || die "cargo build failed"

say "uptime before: $(uptime)"
set +e
python3 "$ROOT/scripts/bench_compare" --bins "$ROOT/target/$PROFILE" --oha "$OHA" \
    $([ "$PROFILE" = debug ] && echo --debug-build) \
    --rounds "$ROUNDS" ${OUT:+--out "$OUT"} $([ "$SMOKE" = 1 ] && echo --smoke) \
    ${LITELLM_BIN:+--litellm "$LITELLM_BIN" --litellm-version "$LITELLM_VERSION"} \
    ${BEFORE:+--before "$BEFORE"} \
    --command "scripts/bench-compare.sh ${ARGS[*]}"
rc=$?
set -e
say "uptime after: $(uptime)"
exit "$rc"
