#!/usr/bin/env bash
# Prerequisites of bench/run.sh (Debian, as root): nginx and wrk, the Node peer's and the
# interop provider's pinned npm packages, matplotlib for the chart. Never part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
apt-get install -y nginx wrk curl python3 util-linux procps
npm ci --prefix bench/node-peer
npm ci --prefix tests/interop/provider
python3 -c 'import matplotlib' 2>/dev/null || pip install matplotlib
