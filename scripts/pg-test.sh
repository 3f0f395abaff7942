#!/usr/bin/env bash
# Runs the PostgreSQL tests (tests/pg.rs) against a real PostgreSQL: installs Debian's
# postgresql when missing, initialises a throwaway cluster in a temporary directory, starts it
# on a free loopback port as an unprivileged user, runs `cargo test --test pg` with
# DESKPROV_TEST_PG set, and stops the cluster (and removes it) whatever happens.
#
#   scripts/pg-test.sh            # the PG tests
#   scripts/pg-test.sh --shell    # start the cluster, print DESKPROV_TEST_PG, wait for Enter
set -euo pipefail
cd "$(dirname "$0")/.."

PGVER=15
PGBIN=/usr/lib/postgresql/$PGVER/bin
if [ ! -x "$PGBIN/initdb" ]; then
    echo "pg-test: installing postgresql from Debian packages"
    if [ "$(id -u)" -ne 0 ]; then
        echo "pg-test: postgresql is not installed and this is not root: apt-get install postgresql" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi

# The cluster runs as an unprivileged user (postgres refuses root).
RUNAS=()
OWNER=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
    OWNER=postgres
    id -u "$OWNER" >/dev/null 2>&1 || useradd --system --no-create-home "$OWNER"
    RUNAS=(runuser -u "$OWNER" --)
fi

WORK=$(mktemp -d /tmp/deskprov-pg.XXXXXX)
chown "$OWNER" "$WORK"
chmod 700 "$WORK"
PGDATA=$WORK/data
stop() {
    "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap stop EXIT INT TERM

# TLS: a throwaway CA and a server certificate for 127.0.0.1, so the tests also connect with
# sslmode=require verified against [store] ca.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pg-test-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null
chown "$OWNER" "$WORK/server.key" "$WORK/server.pem"
chmod 600 "$WORK/server.key"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${RUNAS[@]}" "$PGBIN/initdb" -D "$PGDATA" -U deskprov --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; exit 1; }
# Loopback only, no Unix socket in a shared place; fsync stays on (commits are durable).
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$WORK -c max_connections=200 -c ssl=on -c ssl_cert_file=$WORK/server.pem -c ssl_key_file=$WORK/server.key" \
    start >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }

export DESKPROV_TEST_PG="postgres://deskprov@127.0.0.1:$PORT/postgres"
export DESKPROV_TEST_PG_CA="$WORK/ca.pem"
echo "pg-test: PostgreSQL $PGVER on 127.0.0.1:$PORT ($DESKPROV_TEST_PG; TLS CA $DESKPROV_TEST_PG_CA)"

if [ "${1:-}" = "--shell" ]; then
    echo "DESKPROV_TEST_PG=$DESKPROV_TEST_PG DESKPROV_TEST_PG_CA=$DESKPROV_TEST_PG_CA"
    read -r -p "pg-test: press Enter to stop the cluster " _ || true
    exit 0
fi

start=$(date +%s)
cargo test --test pg -- --test-threads=2
echo "pg-test: passed in $(( $(date +%s) - start )) s"
