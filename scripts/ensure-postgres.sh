#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests:
# installs Debian's `postgresql` package if it is missing and starts the
# local cluster if it is down. Idempotent; prints nothing when all is well.
set -euo pipefail

HOST=127.0.0.1
PORT=5432

ready() {
    pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null
}

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! ready; then
    # Debian keeps one directory per major version under /etc/postgresql.
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    if [ -z "$version" ]; then
        echo "no PostgreSQL cluster under /etc/postgresql" >&2
        exit 1
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 100); do
        ready && break
        sleep 0.1
    done
    ready || { echo "PostgreSQL did not start on $HOST:$PORT" >&2; exit 1; }
fi

# The tests connect with this URL and create a database per test in it.
URL="${TERN_TEST_POSTGRES_URL:-postgres://postgres@$HOST:$PORT/test}"
if ! psql "$URL" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    # A fresh install has no `test` database: create it as the postgres user.
    if command -v runuser >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- createdb -h "$HOST" -p "$PORT" test 2>/dev/null || true
    fi
    psql "$URL" -qtAc 'SELECT 1' >/dev/null || {
        echo "cannot connect to $URL: the tests need a role that may create databases" >&2
        echo "(a fresh Debian install wants 'trust' or a password for 127.0.0.1 in pg_hba.conf)" >&2
        exit 1
    }
fi
