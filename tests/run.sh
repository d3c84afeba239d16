#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the suite needs when it is
# missing (Debian's nginx and caddy for the forward-auth tests, redis-server and redis-cli for
# the Redis store on one Redis, Sentinel and Cluster, Node.js and the pinned npm packages of
# the interop provider, chromium and chromium-driver for the browser-level form test), then
# runs every cargo test. Nothing is skipped silently: a test whose tool is missing fails and says how to
# install it. `--workspace`: the development provider's own tests (tests/devidp) too.
#
#   tests/run.sh                 # everything
#   tests/run.sh --test refresh  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -x /usr/bin/caddy ] || missing+=(caddy)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# redis-cli joins the Cluster tests' nodes; the Sentinels run as `redis-server --sentinel`.
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

provider=tests/interop/provider
if [ -f "$provider/package-lock.json" ] && [ ! -d "$provider/node_modules" ]; then
  echo "tests/run.sh: installing the interop provider's npm packages"
  npm ci --prefix "$provider" --no-audit --no-fund
fi

exec cargo test --workspace "$@"
