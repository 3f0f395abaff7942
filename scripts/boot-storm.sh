#!/usr/bin/env bash
# Boot storm and keep-alive fetches, deskprov against nginx serving the same pre-rendered files
# (SPEC §6). Installs nginx if missing, then runs the benchmark on loopback.
#   scripts/boot-storm.sh [DEVICES [CONCURRENCY]]      (defaults 10000 64)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) >/dev/null
fi
cargo bench --bench boot_storm -- "${1:-10000}" "${2:-64}"
