#!/usr/bin/env bash
# Instructions and allocations per request of an authgate binary, under callgrind (issue 20).
#
#   bench/callgrind.sh <authgate binary> [label]
#
# Counts do not depend on the machine's load (unlike CPU time), so builds can be compared on
# a busy machine. The binary runs under `valgrind --tool=callgrind` with one tokio worker
# (TOKIO_WORKER_THREADS=1, as bench/run.sh), in front of the nginx upstream of
# bench/nginx/upstream.conf, logged in through the interop provider (as bench/run.sh). After
# a warm-up the counters are zeroed (`callgrind_control -z`), one phase of load runs, and the
# counters are dumped (`callgrind_control -d`); per phase:
#
#   proxy       GET / with the session cookie, $RATE req/s for $DUR s over 32 connections
#               (bench/loadgen.rs): the authenticated request, proxied
#   fwdauth     GET /oauth2/auth with the session cookie and X-Forwarded-Method/-Uri, the
#               same rate: the forward-auth check (202)
#   saturation  wrk, 32 connections, $DUR s, GET / with the cookie (requests batch up per
#               wake-up, as at saturation)
#
# and prints one JSON line per phase: requests answered, instructions (Ir) of the whole
# process over the phase, Ir per request, and allocations per request (calls of malloc,
# calloc, realloc, posix_memalign, aligned_alloc, and mimalloc's / jemalloc's entry points).
# Environment: DUR (default 10), RATE (default 200), PORT_BASE (default 18180), OUT, PHASES
# (default "proxy fwdauth saturation").
#
# MODE=strace: no valgrind; each phase counts the binary's system calls instead (`strace -c
# -f` attached for the phase), per request. `bench/callgrind.sh nginx` does the same for
# Debian's nginx as the plain proxy of bench/nginx/proxy.conf (phases proxy and saturation,
# without a cookie), the figure to compare with.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
MODE="${MODE:-callgrind}"
BIN="$1"
[ "$BIN" = nginx ] && MODE=strace || BIN="$(realpath "$BIN")"
LABEL="${2:-$(basename "$BIN")}"
DUR="${DUR:-10}"
RATE="${RATE:-200}"
PORT_BASE="${PORT_BASE:-18180}"
UP_PORT=$PORT_BASE
GW_PORT=$((PORT_BASE + 1))
IDP_PORT=$((PORT_BASE + 2))
OUT="${OUT:-$ROOT/bench/out/callgrind-$(date -u +%Y%m%dT%H%M%SZ)-$LABEL}"
mkdir -p "$OUT/nginx"
LOADGEN="${LOADGEN:-$ROOT/target/release/examples/loadgen}"
[ -x "$LOADGEN" ] || { echo "no loadgen at $LOADGEN (cargo build --release --example loadgen)" >&2; exit 1; }

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_for() {
    for _ in $(seq 1 600); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not come up ($1)" >&2
    exit 1
}

sed -e "s|@UP@|$UP_PORT|g" -e "s|@DIR@|$OUT/nginx|g" bench/nginx/upstream.conf >"$OUT/nginx/upstream.conf"
taskset -c 1 nginx -p "$OUT/nginx" -c "$OUT/nginx/upstream.conf" -e "$OUT/nginx/upstream-error.log" &
PIDS+=($!)
wait_for "http://127.0.0.1:$UP_PORT/__nginx_status" "the upstream nginx"

ACCESS_TTL=3600 AUTO_LOGIN_USER=alice CLIENT_ID=bench CLIENT_SECRET=bench-client-secret \
    RESOURCE=https://api.example.test \
    REDIRECT_URI="http://127.0.0.1:$GW_PORT/oauth2/callback" \
    POST_LOGOUT_REDIRECT_URI="http://127.0.0.1:$GW_PORT/" \
    taskset -c 1 node tests/interop/provider/provider.js "$IDP_PORT" >"$OUT/provider.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$IDP_PORT/oidc/.well-known/openid-configuration" "the OpenID provider"

if [ "$BIN" = nginx ]; then
    sed -e "s|@UP@|$UP_PORT|g" -e "s|@PORT@|$GW_PORT|g" -e "s|@DIR@|$OUT/nginx|g" \
        bench/nginx/proxy.conf >"$OUT/nginx/proxy.conf"
    taskset -c 0 nginx -p "$OUT/nginx" -c "$OUT/nginx/proxy.conf" -e "$OUT/nginx/proxy-error.log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_for "http://127.0.0.1:$GW_PORT/" "nginx (proxy)"
    sleep 0.5
    GW_PID="$(pgrep -P "$GW_PID" | head -n1)" # the worker
    COOKIE="X-Nothing=1"
    gw="http://127.0.0.1:$GW_PORT"
    taskset -c 1 "$LOADGEN" --url "$gw/" --rate "$RATE" --duration 3 >/dev/null
else
    cat >"$OUT/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
public_url = "http://127.0.0.1:$GW_PORT"
trusted_proxies = ["127.0.0.1/32"]

[upstream]
url = "http://127.0.0.1:$UP_PORT"

[oidc]
issuer = "http://127.0.0.1:$IDP_PORT/oidc"
client_id = "bench"
client_secret = "bench-client-secret"
scopes = ["openid", "profile", "email", "offline_access"]
resource = ["https://api.example.test"]

[session]
cookie_secrets = ["$(head -c 32 /dev/urandom | base64)"]
cookie_secure = false
EOF
    VG=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out")
    [ "$MODE" = strace ] && VG=()
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c 0 "${VG[@]}" "$BIN" --config "$OUT/gateway.toml" \
        >"$OUT/authgate.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/readyz")" = 200 ] && break
        sleep 0.2
    done
    curl -s -L --max-redirs 20 -c "$OUT/jar" -b "$OUT/jar" -H 'Accept: text/html' -o "$OUT/login.txt" \
        "http://127.0.0.1:$GW_PORT/__whoami"
    COOKIE="$(awk 'BEGIN{FS="\t"} $6 == "authgate_session" {printf "%s=%s", $6, $7}' "$OUT/jar")"
    [ -n "$COOKIE" ] || { echo "login failed: $(head -c 300 "$OUT/login.txt")" >&2; exit 1; }

    gw="http://127.0.0.1:$GW_PORT"
    FA_H=(--header "Cookie: $COOKIE" --header 'X-Forwarded-Method: GET' --header 'X-Forwarded-Uri: /app')
    # warm-up: connections, pools, buffers
    taskset -c 1 "$LOADGEN" --url "$gw/" --rate "$RATE" --duration 3 --header "Cookie: $COOKIE" >/dev/null
    taskset -c 1 "$LOADGEN" --url "$gw/oauth2/auth" --rate "$RATE" --duration 3 --expect 202 "${FA_H[@]}" >/dev/null
fi

strace_phase() { # as phase, counting system calls
    local name="$1"
    shift
    strace -c -f -p "$GW_PID" -o "$OUT/strace-$name.txt" 2>/dev/null &
    local st=$! n
    sleep 1
    n="$("$@")"
    kill -INT "$st"
    wait "$st" || true
    python3 - "$OUT/strace-$name.txt" "$name" "$n" "$LABEL" <<'PY'
import json, sys
path, name, n, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
calls, total = {}, 0
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        c = int(f[3])
        calls[f[-1]] = c
        total += c
print(json.dumps({"label": label, "phase": name, "requests": n, "syscalls_per_request": round(total / max(n, 1), 2),
                  "by_call": {k: round(v / max(n, 1), 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}}))
PY
}

phase() { # name, then the command printing its answered count last
    local name="$1"
    shift
    if [ "$MODE" = strace ]; then
        strace_phase "$name" "$@"
        return
    fi
    callgrind_control -z "$GW_PID" >/dev/null
    local n
    n="$("$@")"
    callgrind_control -d "$name" "$GW_PID" >/dev/null
    local file
    file="$(ls -t "$OUT"/callgrind.out.* | head -n1)"
    python3 - "$file" "$name" "$n" "$LABEL" <<'PY'
import json, re, sys
path, name, n, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ALLOC = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
         "mi_malloc", "mi_zalloc", "mi_calloc", "mi_realloc", "mi_malloc_aligned",
         "mi_zalloc_aligned", "mi_realloc_aligned", "mi_heap_malloc",
         "_rjem_malloc", "_rjem_calloc", "_rjem_realloc", "_rjem_mallocx", "_rjem_rallocx",
         "_rjem_posix_memalign", "_rjem_aligned_alloc"}
names, total, allocs, current = {}, 0, 0, None
ref = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    m = ref.match(line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2)
        if line.startswith("cfn="):
            current = names.get(m.group(1), "")
        continue
    if line.startswith("calls=") and current is not None:
        if current.split("'")[0] in ALLOC:
            allocs += int(line.split("=", 1)[1].split()[0])
        current = None
        continue
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
print(json.dumps({"label": label, "phase": name, "requests": n, "instructions": total,
                  "ir_per_request": round(total / max(n, 1)),
                  "allocs_per_request": round(allocs / max(n, 1), 2), "dump": path}))
PY
}
lg_ok() { python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])'; }
proxy() { taskset -c 1 "$LOADGEN" --url "$gw/" --rate "$RATE" --duration "$DUR" --header "Cookie: $COOKIE" | lg_ok; }
fwdauth() { taskset -c 1 "$LOADGEN" --url "$gw/oauth2/auth" --rate "$RATE" --duration "$DUR" --expect 202 "${FA_H[@]}" | lg_ok; }
saturation() {
    taskset -c 1 wrk -t1 -c32 -d"${DUR}s" -H "Cookie: $COOKIE" "$gw/" >"$OUT/wrk.txt"
    grep -q -e Non-2xx -e "Socket errors" "$OUT/wrk.txt" && { cat "$OUT/wrk.txt" >&2; exit 1; }
    awk '/ requests in / {print $1}' "$OUT/wrk.txt"
}
DEFAULT_PHASES="proxy fwdauth saturation"
[ "$BIN" = nginx ] && DEFAULT_PHASES="proxy saturation"
for p in ${PHASES:-$DEFAULT_PHASES}; do
    phase "$p" "$p" | tee -a "$OUT/results.jsonl"
done
