#!/usr/bin/env bash
# Hot path of the Redis store against the memory store: requests per second, CPU per request
# (of the whole test process: client, gateway, upstream) and Redis commands per request
# (INFO commandstats before/after). A valid session, no refresh: what nearly every request is.
# Then the same on Redis Sentinel (1 master, 1 replica, 3 Sentinels) and on a 3-master Redis
# Cluster, cache hit and miss rows each.
#
#   bench/redis_store.sh                       # debug build, 300 requests per store
#   BENCH_REQUESTS=5000 bench/redis_store.sh --release
#
# Needs redis-server and redis-cli (apt-get install -y redis-server). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install -y redis-server"; exit 1; }
cargo test "$@" --test redis_gateway bench_hot_path_redis_vs_memory -- --ignored --nocapture
exec cargo test "$@" --test redis_topologies bench_hot_path_sentinel_and_cluster -- --ignored --nocapture
