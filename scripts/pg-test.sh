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

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${RUNAS[@]}" "$PGBIN/initdb" -D "$PGDATA" -U deskprov --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; exit 1; }
# Loopback only, no Unix socket in a shared place; fsync stays on (commits are durable).
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$WORK -c max_connections=200" \
    start >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }

export DESKPROV_TEST_PG="postgres://deskprov@127.0.0.1:$PORT/postgres"
echo "pg-test: PostgreSQL $PGVER on 127.0.0.1:$PORT ($DESKPROV_TEST_PG)"

if [ "${1:-}" = "--shell" ]; then
    echo "DESKPROV_TEST_PG=$DESKPROV_TEST_PG"
    read -r -p "pg-test: press Enter to stop the cluster " _ || true
    exit 0
fi

start=$(date +%s)
cargo test --test pg -- --test-threads=2
echo "pg-test: passed in $(( $(date +%s) - start )) s"
