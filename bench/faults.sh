#!/usr/bin/env bash
# The fault run (issue 14), in one command:   bench/faults.sh
# Never part of CI. Everything on loopback; needs redis-server (7.x) for the Redis row.
#
# Builds the release gateway and bench/faults.rs, then, under a steady load (300 req/s over
# 300 live sessions; access tokens live 20 s, refreshed 5 s before expiry, rotating refresh
# tokens: every session needs a refresh inside every window), injects in turn, each for
# WINDOW seconds (default 20):
#   none             the control row
#   token_500        the provider's token endpoint answers 500
#   token_hang       ... never answers
#   token_close      ... closes the connection unanswered
#   jwks_down        the JWKS answers 503 and the provider signs with a new key from now on
#   upstream_reset   the upstream resets every connection (RST) a request arrives on
#   gateway_sigterm  the gateway gets SIGTERM, stays down for the window, is started again
#                    (memory store with session.snapshot_file)
#   redis_kill       store = "redis", two replicas sharing the load: redis-server gets
#                    SIGKILL, stays down for the window, is started again on its
#                    append-only file (appendonly yes, appendfsync everysec)
# and counts per fault: sessions lost, logouts the user did not ask for, 5xx other than
# 502/503/504, and the time from the end of the fault until every session answered 200 again,
# against the refresh backoff's cap (30 s).
#
# Environment: WINDOW, SESSIONS (300), RATE (300), ONLY=name,name (a subset), QUICK=1 (60
# sessions at 60 req/s, results left in bench/out/ only). A full run writes bench/faults.jsonl.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
WINDOW="${WINDOW:-20}"
SESSIONS="${SESSIONS:-300}"
RATE="${RATE:-300}"
if [ "${QUICK:-0}" = 1 ]; then
    SESSIONS=60
    RATE=60
fi
command -v redis-server >/dev/null || { echo "redis-server is missing" >&2; exit 1; }
OUT="$ROOT/bench/out/faults-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
echo "== build (load $(cut -d' ' -f1-3 /proc/loadavg))"
cargo build --release --bin authgate --example faults
echo "== faults: $WINDOW s windows, $SESSIONS sessions, $RATE req/s; output in $OUT"
{
    echo "{\"phase\":\"run\",\"date\":\"$(date -u '+%Y-%m-%d %H:%M UTC')\",\"commit\":\"$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock bench/robust bench/faults.rs || echo '+dirty')\",\"uptime\":\"$(uptime)\"}"
    target/release/examples/faults --authgate target/release/authgate --dir "$OUT" \
        --window "$WINDOW" --sessions "$SESSIONS" --rate "$RATE" ${ONLY:+--only "$ONLY"}
} | tee "$OUT/faults.jsonl" && status=0 || status=$?
echo "{\"phase\":\"after\",\"uptime\":\"$(uptime)\"}" | tee -a "$OUT/faults.jsonl"
[ "${QUICK:-0}" = 1 ] || [ -n "${ONLY:-}" ] || cp "$OUT/faults.jsonl" bench/faults.jsonl
exit "$status"
