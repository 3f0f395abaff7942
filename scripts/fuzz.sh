#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo fuzz, nightly) for SECONDS_PER_TARGET (default 300),
# one after another, and prints each target's executions and any crash. Not run by CI.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
# Seed corpora are generated from the catalogue and fixtures into fuzz/corpus/<target>/ (kept
# out of git, like fuzz/artifacts/ where crashing inputs land). FUZZ_SANITIZER=address builds
# with ASan (slower; the code under test is safe Rust, so the default is none).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-300}
sanitizer=${FUZZ_SANITIZER:-none}
cd "$here"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v c++ >/dev/null || { echo "libFuzzer needs a C++ compiler (apt-get install g++)" >&2; exit 1; }

corpus=fuzz/corpus
seed() { # seed TARGET NAME [printf-format args...]: one seed file
    local t=$1 n=$2; shift 2
    mkdir -p "$corpus/$t"
    # shellcheck disable=SC2059
    printf "$@" >"$corpus/$t/seed-$n"
}

# MACs, in every accepted form and a few near misses.
i=0
for m in 0004f2abcdef 0004F2ABCDEF 00:04:f2:ab:cd:ef 00-04-F2-AB-CD-EF 0004.f2ab.cdef \
    " 00:04:f2:ab:cd:ef " 00:04-f2:ab:cd:ef 0004f2abcde 0004.f2ab.cdeg; do
    seed mac_parse $((i++)) '%s' "$m"
done

# File names: every file the golden fixtures hold (first byte picks the User-Agent model).
i=0
for f in $(find fixtures -type f ! -name input.json -printf '%f\n' | LC_ALL=C sort -u) \
    000000000000.cfg 0004f2abcdef-deskprov.cfg ../etc/passwd %2e%2e/x a/b; do
    seed file_name $((i++)) '\001/%s' "$f"
done

# User-Agents of every family (VENDORS.md).
i=0
while IFS= read -r ua; do seed user_agent $((i++)) '%s' "$ua"; done <<'UAS'
FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 Type/Application
Yealink SIP-T46U 108.86.0.20 00:15:65:4a:a9:37
Yealink SIP-T54W 96.86.0.100 80:5e:c0:11:22:33
Cisco-CP-8851-3PCC/11.3.7 (00562ba18851)
Grandstream Model HW GRP2614 SW 1.0.5.33 DevId c074ada12614
Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 1.1.5-IFX-05.01.12 00041396D9B4 SXM:0 UXM:0)
Fanvil X6U 2.12.3 0c383ea1006f
Aastra6867i MAC:00-08-5D-40-90-5F V:4.1.0.128-SIP
UAS

# Digest headers.
seed digest_header 0 '%s' 'Digest username="0004f2abcdef", realm="deskprov", nonce="65f0a1b2.0011223344556677-00112233445566778899aabbccddeeff", uri="/0004f2abcdef.cfg", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="q\"x", response="abc"'
seed digest_header 1 '%s' 'Digest username=a,realm=b, nc=1'

# SIP responses (a 200 and a challenge, with compact and folded headers).
seed sip_response 0 'SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport=5060\r\nFrom: <sip:deskprov@127.0.0.1>;tag=1\r\nTo: <sip:1001@127.0.0.1>;tag=2\r\nCall-ID: x@deskprov\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n'
seed sip_response 1 'SIP/2.0 401 Unauthorized\r\nv: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKb1\r\nf: <sip:deskprov@127.0.0.1>;tag=1\r\nt: <sip:1001@127.0.0.1>\r\ni: c1@deskprov\r\nCSeq: 1 NOTIFY\r\nWWW-Authenticate: Digest realm="phone",\r\n  nonce="abc", qop="auth"\r\nl: 0\r\n\r\n'

# The example config, and a few small ones.
mkdir -p "$corpus/config_toml"
cargo run --quiet -- config example >"$corpus/config_toml/seed-example"
seed config_toml 1 '[phones]\nbase_url = "https://prov.example.net/"\n[tls]\ncert = "a.pem"\nkey = "a.key"\n'
seed config_toml 2 '[store]\nchanges_keep = 999\n'

# Template bodies: every model's own templates (byte 0 = model, sorted by id; byte 1 = its
# template, in the order its files first name them).
mi=0
for dir in $(find device-templates -mindepth 1 -maxdepth 1 -type d ! -name _families | LC_ALL=C sort); do
    family=$(sed -n 's/^family *= *"\(.*\)".*/\1/p' "$dir/model.toml")
    ti=0
    for t in $(sed -n 's/^template *= *"\(.*\)".*/\1/p' "$dir/model.toml" | awk '!seen[$0]++'); do
        body="$dir/$t"; [ -f "$body" ] || body="device-templates/_families/$family/$t"
        mkdir -p "$corpus/template_validate"
        { printf "\\$(printf %03o "$mi")\\$(printf %03o "$ti")"; cat "$body"; } \
            >"$corpus/template_validate/seed-$mi-$ti"
        ti=$((ti + 1))
    done
    mi=$((mi + 1))
done

# Per target: longest input worth trying (a template body gets room for a real file).
declare -A max_len=(
    [mac_parse]=64 [file_name]=256 [user_agent]=1024 [digest_header]=2048
    [sip_response]=4096 [config_toml]=4096 [template_validate]=16384
)
targets=(mac_parse file_name user_agent digest_header sip_response config_toml template_validate)

cargo +nightly fuzz build --sanitizer "$sanitizer" 2>&1 | tail -n 2
mkdir -p fuzz/artifacts fuzz/logs
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/logs/$t.log"
    echo "== $t: ${secs}s"
    set +e
    cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" \
        "$corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        status=1
        grep -m 5 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" || true
        find "fuzz/artifacts/$t" -type f -printf '  crash input: %p\n'
    fi
    summary+=("$(printf '%-18s %12s execs  exit %s  %s artifact(s)' "$t" "$execs" "$rc" "$crashes")")
done
echo
printf '%s\n' "${summary[@]}"
echo "logs: fuzz/logs/; reproduce a crash: cargo +nightly fuzz run --sanitizer $sanitizer <target> <artifact>"
exit "$status"
