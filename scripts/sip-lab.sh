#!/usr/bin/env bash
# The SIP lab: a real softphone applies deskprov's file and registers to a real registrar, and
# deskprov's NOTIFY reaches it through that registrar.
#
#   scripts/sip-lab.sh        (run by .ci/run; installs kamailio and linphone-cli when missing)
#
# On loopback only: deskprov (the debug binary), Kamailio 5.6 (db_text auth whose subscriber
# table is built from the users deskprov created, with the credentials the API returned), and
# linphonec 5.1 provisioned from the softphone's one-time provisioning link. Asserts, from
# Kamailio's and linphonec's logs and the API:
#   1. a REGISTER with a wrong password is refused;
#   2. linphonec, provisioned by the link, registers with the identity and auth user rendered;
#   3. a shared-line appearance added to the softphone sends NOTIFY check-sync, routed by
#      Kamailio (lookup/t_relay) to linphonec, answered 200; the device turns `notified`;
#   4. linphonec restarted fetches again, registers the new account, the device turns `in_sync`.
# linphonec's `-d 6` log holds the SIP password in clear: it lives in a temp dir deleted on exit,
# and what is printed on failure has every password masked.
set -Eeuo pipefail
# The debug binary is built first (outside the bound: on a busy machine a build takes minutes);
# the lab itself is bounded: it runs under timeout(1), whose TERM runs the cleanup below.
if [ -z "${SIP_LAB_BOUNDED:-}" ]; then
  cargo build --quiet --manifest-path "$(cd "$(dirname "$0")/.." && pwd)/Cargo.toml"
  SIP_LAB_BOUNDED=1 exec timeout -k 10 115 bash "$0" "$@"
fi
here=$(cd "$(dirname "$0")/.." && pwd)
started=$(date +%s)

need=()
command -v kamailio >/dev/null || need+=(kamailio)
command -v linphonec >/dev/null || need+=(linphone-cli)
if [ ${#need[@]} -gt 0 ]; then
  echo "sip-lab: installing ${need[*]} (Debian)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null || {
    $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  }
fi

work=$(mktemp -d)
pids=()
secrets=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Bounded: what has not stopped after 5 s is killed.
  for _ in $(seq 25); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "sip-lab: FAIL: stopped (over the time bound?)" >&2; exit 1' TERM INT

mask() {
  local s
  s=$(cat)
  for x in "${secrets[@]}"; do [ -n "$x" ] && s=${s//"$x"/"****"}; done
  printf '%s\n' "$s"
}
excerpt() { # file, lines
  [ -f "$1" ] || return 0
  echo "--- $(basename "$1") (last ${2:-40} lines, passwords masked):"
  tail -n "${2:-40}" "$1" | mask
}
fail() {
  echo "sip-lab: FAIL: $*" >&2
  excerpt "$work/kamailio.log" 40 >&2
  excerpt "$work/deskprov.err" 20 >&2
  for f in "$work"/linphonec-*.out; do excerpt "$f" 15 >&2; done
  for f in "$work"/linphone-*.log; do
    [ -f "$f" ] || continue
    echo "--- $(basename "$f") (provisioning and registration lines, passwords masked):" >&2
    grep -iE 'provision|remote|http|regist|auth|tls|error|fail' "$f" | tail -n 30 | mask >&2 || true
  done
  exit 1
}
trap 'fail "line $LINENO: a command failed"' ERR
wait_for() { # seconds, description, command...
  local t=$1 what=$2
  shift 2
  for _ in $(seq $((t * 5))); do "$@" && return 0; sleep 0.2; done
  fail "timed out after ${t}s waiting for: $what"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- deskprov ----------------------------------------------------------------------------------
bin="$here/target/debug/deskprov"
phone_port=$(free_port)
kam_port=$(free_udp)
cat >"$work/deskprov.toml" <<TOML
data_dir = "$work/data"
[listen]
phones = "127.0.0.1:$phone_port"
admin = "127.0.0.1:0"
[phones]
# linphone's TLS library matches DNS names only: the link names localhost, not 127.0.0.1.
base_url = "https://localhost:$phone_port"
[sync]
sip_bind = "127.0.0.1:0"
debounce_ms = 300
TOML
"$bin" serve --config "$work/deskprov.toml" >"$work/deskprov.out" 2>"$work/deskprov.err" &
pids+=($!)
wait_for 20 "deskprov to start" grep -q 'admin API:' "$work/deskprov.out"
admin=$(awk '/admin API:/ {print $3}' "$work/deskprov.out")
token=$(cat "$work/data/admin-token")
secrets+=("$token")
ca="$work/data/tls/ca.pem"
api() { curl -sS --fail-with-body --max-time 10 --cacert "$ca" -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

G=LAB-1
domain=lab.deskprov.test
api -d "{\"id\":\"$G\",\"sip\":{\"domain\":\"$domain\",\"proxy\":\"127.0.0.1:$kam_port\",\"transport\":\"udp\"}}" "$admin/api/v1/groups" >/dev/null \
  || fail "creating the group"
# Ada: a SIP user (her phone number) and a different auth user, as a hosted PBX has them.
ada=$(api -d '{"extension":"1001","first_name":"Ada","last_name":"Lovelace","phone_number":"6035551212","sip":{"auth_username":"ada-auth"}}' \
  "$admin/api/v1/groups/$G/users") || fail "creating user 1001"
bob=$(api -d '{"extension":"5555","first_name":"Bob","last_name":"Stone"}' "$admin/api/v1/groups/$G/users") || fail "creating user 5555"
ada_pw=$(json 'd["sip"]["password"]' <<<"$ada"); ada_auth=$(json 'd["sip"]["auth_username"]' <<<"$ada")
bob_pw=$(json 'd["sip"]["password"]' <<<"$bob"); bob_auth=$(json 'd["sip"]["auth_username"]' <<<"$bob")
secrets+=("$ada_pw" "$bob_pw")
soft=$(api -d '{"name":"Ada softphone","model":"linphone","owner":"1001"}' "$admin/api/v1/groups/$G/devices") || fail "creating the softphone"
id=$(json 'd["mac"]' <<<"$soft")
secrets+=("$(json 'd["credentials"]["password"]' <<<"$soft")")
link=$(api -X POST "$admin/api/v1/devices/$id/provisioning-link") || fail "getting the provisioning link"
url=$(json 'd["url"]' <<<"$link")
secrets+=("$(json 'd["password"]' <<<"$link")" "$url")
file=$(json 'd["file_url"].rsplit("/",1)[1]' <<<"$link")
echo "sip-lab: softphone $id, provisioning link $(mask <<<"$url")"

# What we rendered: the identity and auth user of account 1 (the admin preview of the file).
rendered() { api "$admin/api/v1/devices/$id/files/$file"; }
rendered >"$work/rendered.xml" || fail "previewing $file"
ident=$(python3 - "$work/rendered.xml" <<'PY'
import re, sys, html
t = open(sys.argv[1]).read()
idn = html.unescape(re.search(r'name="reg_identity"[^>]*>([^<]*)<', t).group(1))
user = re.search(r'name="userid"[^>]*>([^<]*)<', t).group(1)
print(re.search(r'<(sip:[^>]+)>', idn).group(1), user)
PY
) || fail "reading the rendered identity"
read -r rendered_uri rendered_auth <<<"$ident"
[ "$rendered_uri" = "sip:6035551212@$domain" ] && [ "$rendered_auth" = "$ada_auth" ] \
  || fail "rendered identity $rendered_uri / auth user $rendered_auth"

# --- Kamailio: db_text subscribers from the users deskprov created -------------------------------
mkdir -p "$work/db" "$work/kamrun"
{
  echo "table_name(string) table_version(int)"
  echo "subscriber:7"
} >"$work/db/version"
{
  echo "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null)"
  echo "1:$ada_auth:$domain:$ada_pw::"
  echo "2:$bob_auth:$domain:$bob_pw::"
} >"$work/db/subscriber"
mpath=$(dirname "$(find /usr/lib -name tm.so -path '*kamailio*' | head -1)")
cat >"$work/kamailio.cfg" <<CFG
#!KAMAILIO
debug=2
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:$kam_port
mpath="$mpath/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "text://$work/db")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("auth_db", "use_domain", 0)

request_route {
  if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
  if (is_method("REGISTER")) {
    # The auth user differs from the SIP user: authorise by the realm of From.
    if (!www_authorize("\$fd", "subscriber")) {
      \$var(rc) = \$rc;
      if (is_present_hf("Authorization")) {
        xlog("L_NOTICE", "LAB REGISTER refused identity=\$fu auth_user=\$au rc=\$var(rc)\n");
      }
      www_challenge("\$fd", "0");
      exit;
    }
    if (!save("location")) { sl_reply_error(); exit; }
    xlog("L_NOTICE", "LAB REGISTER ok identity=\$fu auth_user=\$au contact=\$ct\n");
    exit;
  }
  if (is_method("NOTIFY")) {
    xlog("L_NOTICE", "LAB NOTIFY in ruri=\$ru event=\$hdr(Event)\n");
  }
  if (!lookup("location")) {
    xlog("L_NOTICE", "LAB \$rm \$ru not registered\n");
    sl_send_reply("404", "Not Found");
    exit;
  }
  xlog("L_NOTICE", "LAB \$rm relayed to \$ru\n");
  t_on_reply("LAB_REPLY");
  if (!t_relay()) { sl_reply_error(); }
  exit;
}

onreply_route[LAB_REPLY] {
  xlog("L_NOTICE", "LAB reply \$rs \$rr to \$rm cseq=\$cs\n");
}
CFG
kamailio -c -f "$work/kamailio.cfg" >"$work/kamailio.check" 2>&1 || { cat "$work/kamailio.check" >&2; fail "kamailio.cfg does not check"; }
kamailio -f "$work/kamailio.cfg" -DD -E -m 32 -M 8 -w "$work/kamrun" -Y "$work/kamrun" -P "$work/kamrun/kamailio.pid" >"$work/kamailio.log" 2>&1 &
pids+=($!)
kam_pid=${pids[-1]}
kam_up() { kill -0 "$kam_pid" 2>/dev/null || fail "Kamailio exited"; ss -Hlun "sport = :$kam_port" | grep -q .; }
wait_for 15 "Kamailio to listen on 127.0.0.1:$kam_port" kam_up

# --- linphonec --------------------------------------------------------------------------------
# run_linphonec NAME [config-uri|""] [extra rc sections]: own XDG dirs and rc; `-d 6` log in $work.
run_linphonec() {
  local name=$1 uri=$2 extra=${3:-}
  local home="$work/$name"
  # linphonec 5.1 keeps its database under $HOME/.local/share/linphone (and XDG_DATA_HOME): the
  # folder must exist or the core never starts.
  mkdir -p "$home/data/linphone" "$home/.local/share/linphone" "$home/config" "$home/cache"
  # A restart keeps the rc the client wrote back (as a real restart does).
  if [ -f "$home/linphonerc" ]; then
    start_linphonec "$name"
    return
  fi
  local sip_port
  sip_port=$(free_udp)
  {
    echo "[sip]"
    echo "sip_port=$sip_port"
    echo "sip_tcp_port=0"
    echo "root_ca=$ca"
    echo "[rtp]"
    echo "audio_rtp_port=$(free_udp)"
    echo "[sound]"
    echo "playback_dev_id=null"
    echo "capture_dev_id=null"
    echo "echocancellation=0"
    if [ -n "$uri" ]; then
      echo "[misc]"
      echo "config-uri=$uri"
    fi
    printf '%s\n' "$extra"
  } >"$home/linphonerc"
  start_linphonec "$name"
}
start_linphonec() {
  local name=$1 home="$work/$1"
  # stdin is a FIFO opened read-write: it never ends, and nothing is left behind when it stops.
  [ -p "$home/stdin" ] || mkfifo "$home/stdin"
  ( exec env HOME="$home" XDG_DATA_HOME="$home/data" XDG_CONFIG_HOME="$home/config" XDG_CACHE_HOME="$home/cache" \
      linphonec -c "$home/linphonerc" -d 6 -l "$work/linphone-$name.log" <>"$home/stdin" >"$work/linphonec-$name.out" 2>&1 ) &
  lin_pid=$!
  pids+=("$lin_pid")
}
stop_linphonec() { kill "$lin_pid" 2>/dev/null || true; wait "$lin_pid" 2>/dev/null || true; }
kam() { grep -c "$1" "$work/kamailio.log" || true; }
state_is() { [ "$(api "$admin/api/v1/devices/$id" | json 'd["state"]')" = "$1" ]; }
more_notifies() { [ "$(kam 'LAB NOTIFY in ruri=sip:6035551212@.* event=check-sync')" -gt "$1" ]; }

# 1. A wrong password is refused (a hand-written account, no provisioning).
run_linphonec wrong "" "[proxy_0]
reg_identity=sip:6035551212@$domain
reg_proxy=<sip:127.0.0.1:$kam_port;transport=udp>
reg_expires=60
reg_sendregister=1
realm=$domain
[auth_info_0]
username=6035551212
userid=$ada_auth
passwd=not-the-password
realm=$domain
domain=$domain"
wait_for 15 "Kamailio to refuse the wrong password" grep -q "LAB REGISTER refused identity=sip:6035551212@$domain auth_user=$ada_auth rc=-2" "$work/kamailio.log"
stop_linphonec
[ "$(kam 'LAB REGISTER ok')" = 0 ] || fail "a REGISTER with a wrong password was accepted"
# linphonec logs the outcome a moment after Kamailio logs its decision: wait for it too.
wait_for 5 "linphonec's log to show the refusal" grep -q 'to \[LinphoneRegistrationFailed\]' "$work/linphone-wrong.log"
echo "sip-lab: OK 1/4 wrong password refused by Kamailio (auth user $ada_auth, rc=-2 invalid password)"

# 2. Provisioned by the link: registers with what we rendered.
run_linphonec soft "$url"
wait_for 20 "linphonec to register as $rendered_uri (auth user $rendered_auth)" \
  grep -q "LAB REGISTER ok identity=$rendered_uri auth_user=$rendered_auth" "$work/kamailio.log"
wait_for 5 "linphonec's log to show the account $rendered_uri registered" \
  grep -q "identity \[\"Ada Lovelace\" <$rendered_uri>\] moving from state \[LinphoneRegistrationProgress\] to \[LinphoneRegistrationOk\]" "$work/linphone-soft.log"
wait_for 10 "the device to be in sync after the fetch" state_is in_sync
echo "sip-lab: OK 2/4 linphonec applied the file and registered: identity $rendered_uri, auth user $rendered_auth"

# 3. A shared-line appearance on the softphone: NOTIFY through Kamailio to linphonec, 200.
notifies=$(kam 'LAB NOTIFY in ruri=sip:6035551212@.* event=check-sync')
api -d '{"device":"'"$id"'"}' "$admin/api/v1/groups/$G/users/5555/shared-call-appearances" >/dev/null || fail "adding the SCA"
wait_for 15 "NOTIFY check-sync for 6035551212 through Kamailio" more_notifies "$notifies"
wait_for 10 "Kamailio to relay the NOTIFY to linphonec" grep -q "LAB NOTIFY relayed to sip:6035551212@127.0.0.1" "$work/kamailio.log"
wait_for 10 "linphonec's 200 to the NOTIFY" grep -qE "LAB reply 200 [A-Za-z ]+ to NOTIFY" "$work/kamailio.log"
dev=$(api "$admin/api/v1/devices/$id")
state=$(json 'd["state"]' <<<"$dev"); result=$(json 'd["last_notify"]["result"]' <<<"$dev")
[ "$state" = notified ] || fail "device state $state after the NOTIFY (want notified); last_notify $(json 'd["last_notify"]' <<<"$dev")"
grep -q "^NOTIFY sip:6035551212@127.0.0.1" "$work/linphone-soft.log" || fail "linphonec's log shows no NOTIFY for 6035551212"
echo "sip-lab: OK 3/4 NOTIFY check-sync routed by Kamailio (lookup/t_relay) to linphonec, 200; device $state (last_notify $result)"

# 4. linphonec restarted: fetches the new file, registers the SCA account, device in sync.
stop_linphonec
sca_port=$(api "$admin/api/v1/devices/$id" | json '[a["line_port"] for a in d["layout"]["appearances"] if a["kind"]=="sca"][0]') \
  || fail "reading the SCA's line port"
run_linphonec soft "$url"
wait_for 20 "linphonec to register the new account $sca_port (auth user $bob_auth)" \
  grep -q "LAB REGISTER ok identity=sip:$sca_port@$domain auth_user=$bob_auth" "$work/kamailio.log"
wait_for 10 "the device to turn in_sync" state_is in_sync
stop_linphonec
echo "sip-lab: OK 4/4 restarted linphonec applied the new account sip:$sca_port@$domain; device in_sync"
echo "sip-lab: green in $(($(date +%s) - started)) s"
