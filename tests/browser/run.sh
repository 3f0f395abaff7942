#!/usr/bin/env bash
# Browser walks of the admin console: installs what is missing (Debian chromium, playwright-core),
# builds the server (debug), starts it on 127.0.0.1 with a temporary data dir, and walks each seed
# workflow in headless Chromium. Screenshots go to tests/browser/screenshots/ (gitignored).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium" >&2
  apt-get install -y chromium >/dev/null
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
if [ ! -x target/debug/deskprov ] || [ -n "$(find src device-templates Cargo.toml -newer target/debug/deskprov -print -quit)" ]; then
  cargo build --bin deskprov
fi

data="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin_port="$(free_port)"; phones_port="$(free_port)"; http_port="$(free_port)"
cat > "$data/deskprov.toml" <<TOML
data_dir = "$data/data"
[listen]
admin = "127.0.0.1:$admin_port"
phones = "127.0.0.1:$phones_port"
phones_http = "127.0.0.1:$http_port"
[sync]
sip_bind = "127.0.0.1:0"
debounce_ms = 100
TOML
target/debug/deskprov serve --config "$data/deskprov.toml" >"$data/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  [ -s "$data/data/admin-token" ] && curl -fsS --cacert "$data/data/tls/ca.pem" "https://localhost:$admin_port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
if ! [ -s "$data/data/admin-token" ]; then
  echo "run.sh: the server did not start" >&2; cat "$data/server.log" >&2; exit 1
fi

rm -rf "$here/screenshots" && mkdir -p "$here/screenshots"
status=0
NODE_EXTRA_CA_CERTS="$data/data/tls/ca.pem" \
ADMIN="https://localhost:$admin_port" PHONES_HTTP="http://127.0.0.1:$http_port" \
TOKEN="$(cat "$data/data/admin-token")" SHOTS="$here/screenshots" \
  node "$here/walks.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "run.sh: walks failed; the server log follows" >&2
  tail -n 50 "$data/server.log" >&2
fi
exit "$status"
