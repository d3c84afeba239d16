#!/usr/bin/env bash
# The soak (issue 14), in one command:   bench/soak.sh
# Never part of CI. Everything on loopback; needs 2 cores.
#
# Builds the release gateway and bench/soak.rs, then runs the gateway (pinned to core 0, one
# worker thread) in front of the in-process development provider and a fake upstream, both
# driven by the soak program pinned to core 1:
#   1. 1,000 sessions log in (spread over one refresh period), access tokens live 45 s and are
#      refreshed 10 s before expiry with rotating refresh tokens;
#   2. saturation: closed-loop load with the mix below for 15 s -> requests/s;
#   3. the soak: SOAK_SECONDS (default 600) at 80 % of that rate: 5 % of requests without a
#      session (302/401 expected), 2 sign-outs + 2 logins a second, 4 WebSocket tunnels (a
#      message a second each), 2 tasks streaming uploads and downloads (5 s each);
#   4. every 10 s: the gateway's RSS and open descriptors (/proc), its upstream connections
#      (/proc/net/tcp), `authgate_sessions_live` (/metrics), throughput, p50/p99 of the interval.
# Pass: no error besides the expected 302/401, RSS and descriptors flat after the warm-up
# (fitted slope), p99 of the last minute at most twice the first minute's (or within 1 ms).
#
# Environment: SOAK_SECONDS, SESSIONS (default 1000), QUICK=1 (60 s, 200 sessions, results
# left in bench/out/ only: for debugging the script). A full run writes bench/soak.jsonl and
# the chart bench/soak.png (needs matplotlib; PYTHON=/path/to/python to choose one).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
EXTRA=()
if [ "${QUICK:-0}" = 1 ]; then
    SECONDS_ARG="${SOAK_SECONDS:-60}"
    SESSIONS="${SESSIONS:-200}"
    EXTRA=(--sat-seconds 5 --warmup 20)
fi
SECONDS_ARG="${SECONDS_ARG:-${SOAK_SECONDS:-600}}"
SESSIONS="${SESSIONS:-1000}"
if [ "$(nproc)" -lt 2 ]; then
    echo "needs 2 cores (gateway on core 0, the rest on core 1)" >&2
    exit 1
fi
OUT="$ROOT/bench/out/soak-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
echo "== build (load $(cut -d' ' -f1-3 /proc/loadavg))"
cargo build --release --bin authgate --example soak
echo "== soak: $SECONDS_ARG s, $SESSIONS sessions; output in $OUT"
{
    echo "{\"phase\":\"run\",\"date\":\"$(date -u '+%Y-%m-%d %H:%M UTC')\",\"commit\":\"$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock bench/robust bench/soak.rs || echo '+dirty')\",\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\",\"kernel\":\"$(uname -r)\",\"nproc\":$(nproc),\"uptime\":\"$(uptime)\"}"
    taskset -c 1 target/release/examples/soak --authgate target/release/authgate --dir "$OUT" \
        --seconds "$SECONDS_ARG" --sessions "$SESSIONS" --gateway-cpu 0 "${EXTRA[@]}"
} | tee "$OUT/soak.jsonl" && status=0 || status=$?
echo "{\"phase\":\"after\",\"uptime\":\"$(uptime)\"}" | tee -a "$OUT/soak.jsonl"
PY="${PYTHON:-python3}"
if [ "${QUICK:-0}" != 1 ]; then
    cp "$OUT/soak.jsonl" bench/soak.jsonl
    "$PY" bench/soak_chart.py bench/soak.jsonl bench/soak.png || echo "no chart (matplotlib missing?)"
else
    "$PY" bench/soak_chart.py "$OUT/soak.jsonl" "$OUT/soak.png" || echo "no chart (matplotlib missing?)"
fi
exit "$status"
