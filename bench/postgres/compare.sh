#!/usr/bin/env bash
# PostgreSQL beside SQLite (issue 9): the same tern-bench workloads against
# the same binary on each engine, each run on a fresh server and database.
#
#   bench/postgres/compare.sh              # 2 runs of each engine and workload
#   RUNS=3 DURATION=20 bench/postgres/compare.sh
#
# Needs a binary built with the `postgres` feature and PostgreSQL at
# $PG_ADMIN_URL (a role that may create databases; scripts/ensure-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

B="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}/release"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_BENCH_URL="${PG_ADMIN_URL%/*}/tern_bench"
RUNS="${RUNS:-2}"
DURATION="${DURATION:-10}"
PORT="${PORT:-18108}"
WORK="$(mktemp -d -t tern-pg-bench.XXXXXX)"

run() {
    local engine=$1 workload=$2
    rm -rf "$WORK/data"
    local extra=()
    if [ "$engine" = postgres ]; then
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS tern_bench WITH (FORCE)"
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE tern_bench"
        extra=(--postgres-url "$PG_BENCH_URL")
    fi
    "$B/homeserver" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
        --allow-registration --disable-rate-limits "${extra[@]}" 2>"$WORK/server-$engine.log" &
    local sp=$!
    sleep 1
    echo "== $engine $workload"
    if [ "$workload" = max ]; then
        # throughput: 8 users in one room, 32 concurrent senders
        "$B/tern-bench" --url "http://127.0.0.1:$PORT" --users 8 --concurrency 32 \
            --duration "$DURATION" --server-pid "$sp"
    else
        # latency: 1,000 msg/s into a 10-member room whose members all long-poll
        "$B/tern-bench" --url "http://127.0.0.1:$PORT" --users 10 --room-size 10 --rate 1000 \
            --duration "$DURATION" --server-pid "$sp"
    fi
    kill "$sp"
    wait "$sp" || true
}

for _ in $(seq 1 "$RUNS"); do
    for engine in sqlite postgres; do
        for workload in max rate; do
            run "$engine" "$workload"
        done
    done
done
psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS tern_bench WITH (FORCE)"
rm -rf "$WORK"
