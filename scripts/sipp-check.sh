#!/usr/bin/env bash
# Checks deskprov's NOTIFY against a real SIP endpoint (sipp playing a phone, from
# ../shared/sipp): starts the server on loopback, adds a device whose notify_target is the sipp
# phone, adds an SCA endpoint through the API, and shows the phone receiving check-sync for it.
#   scripts/sipp-check.sh            (installs sipp if missing; needs curl, python3)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared}
work=$(mktemp -d)
port=${SIPP_PORT:-5070}
log="$work/sipp.log"
cleanup() { kill "${srv:-}" "${sipp:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cargo build --quiet --manifest-path "$here/Cargo.toml"
bin="$here/target/debug/deskprov"

"$shared/sipp/run-phone.sh" "$port" "$log" >"$work/sipp.out" 2>&1 &
sipp=$!

cat >"$work/deskprov.toml" <<TOML
data_dir = "$work/data"
[listen]
phones = "127.0.0.1:0"
admin = "127.0.0.1:0"
[sync]
sip_bind = "127.0.0.1:0"
debounce_ms = 300
TOML
"$bin" serve --config "$work/deskprov.toml" >"$work/out.txt" 2>"$work/err.txt" &
srv=$!
for _ in $(seq 100); do grep -q 'admin token' "$work/out.txt" 2>/dev/null && break; sleep 0.1; done
admin=$(awk '/admin API:/ {print $3}' "$work/out.txt")
token=$(cat "$work/data/admin-token")
api() { curl -sf --cacert "$work/data/tls/ca.pem" -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }

api -d '{"id":"ZZZ1900111-01","sip":{"domain":"sip.example.net"}}' "$admin/api/v1/groups" >/dev/null
api -d '{"extension":"1001","first_name":"Ada","phone_number":"6035551212"}' "$admin/api/v1/groups/ZZZ1900111-01/users" >/dev/null
api -d '{"extension":"5555","first_name":"Bob"}' "$admin/api/v1/groups/ZZZ1900111-01/users" >/dev/null
api -d "{\"mac\":\"805ec0000001\",\"name\":\"Reception\",\"model\":\"yealink-t54w\",\"owner\":\"1001\",\"notify_target\":\"udp:127.0.0.1:$port\"}" \
  "$admin/api/v1/groups/ZZZ1900111-01/devices" >/dev/null
sleep 1.5   # the device's own creation NOTIFY goes out first
before=$(grep -c 'NOTIFY call-id' "$log" 2>/dev/null || true)
echo "adding SCA endpoint ZZZ1900111-01_5555_sca1 on Reception..."
api -d '{"device":"Reception"}' "$admin/api/v1/groups/ZZZ1900111-01/users/5555/shared-call-appearances"; echo
for _ in $(seq 50); do
  now=$(grep -c 'NOTIFY call-id' "$log" 2>/dev/null || true)
  [ "${now:-0}" -gt "${before:-0}" ] && break
  sleep 0.2
done
echo "--- what the sipp phone logged:"
cat "$log"
echo "--- the device's sync state:"
api "$admin/api/v1/devices/805ec0000001" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({k: d[k] for k in ("revision","applied_revision","state","last_notify")}, indent=1))'
last=$(grep 'NOTIFY call-id' "$log" | tail -1)
case "$last" in
  *'event= check-sync'*'NOTIFY sip:6035551212@127.0.0.1'*) echo "OK: the sipp phone received check-sync for 6035551212" ;;
  *) echo "FAIL: no check-sync NOTIFY for 6035551212 in the sipp log"; exit 1 ;;
esac
