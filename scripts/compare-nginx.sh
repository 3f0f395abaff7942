#!/usr/bin/env bash
# deskprov against nginx with clients neither of them wrote: `ab` from apache2-utils (a new TLS
# connection per request, the Yealink common file, 32 at once) and `wrk` (keep-alive), after
# the repo's own boot storm and keep-alive clients; every comparison A B A B in the same run,
# same ECDSA certificate, no session cache or tickets on either. Installs nginx, ab and wrk from
# Debian when missing. A benchmark (noisy, minutes): not part of .ci/run.
#   scripts/compare-nginx.sh [DEVICES [CONCURRENCY]]   (defaults 10000 64)
#   AB_REQUESTS=20000 WRK_SECONDS=5 tune the external runs.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null
fi
cargo bench --bench boot_storm -- "${1:-10000}" "${2:-64}" external
