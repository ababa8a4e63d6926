#!/usr/bin/env bash
# The load generator against 1, 2 and 3 homeserver nodes of one deployment
# (PostgreSQL + Redis + the mock Kafka broker), and against the embedded
# single node (SQLite), on this machine. Prints one table row per run.
#
#   bench/cluster/run.sh                 # every setup, both workloads
#   SETUPS="embedded 3" bench/cluster/run.sh
#
# Needs: the release binaries built with the cluster features
#   cargo build --release -p homeserver -p tern-bench -p tern-tests \
#       --features homeserver/postgres,homeserver/redis,homeserver/kafka
# PostgreSQL at $PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/test)
# and Redis at 127.0.0.1:6379. Every process it starts is stopped on exit.
set -euo pipefail

B=${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}/release
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SETUPS=${SETUPS:-embedded 1 2 3}
DURATION=${DURATION:-10}
OUT=${OUT:-/tmp/tern-cluster-bench}
mkdir -p "$OUT"

PIDS=()
DB=""
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    if [ -n "$DB" ]; then
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
        DB=""
    fi
}
trap cleanup EXIT

# CPU seconds (user + system) a process has used so far.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

wait_ready() {
    for _ in $(seq 1 300); do
        curl -fs "$1/_matrix/client/versions" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# start_setup <setup>: starts the servers, sets URLS (comma-separated) and PIDS.
start_setup() {
    local setup=$1 dir port
    dir=$(mktemp -d /tmp/tern-cluster-bench-data.XXXXXX)
    URLS=""
    if [ "$setup" = embedded ]; then
        port=18108
        "$B/homeserver" --listen 127.0.0.1:$port --data-dir "$dir" --allow-registration \
            --disable-rate-limits 2>"$OUT/embedded.log" &
        PIDS+=($!)
        URLS="http://127.0.0.1:$port"
        wait_ready "$URLS"
        return
    fi
    DB="tern_bench_$$"
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null
    coproc BROKER { "$B/tern-kafka-mock" tern.events 16; }
    PIDS+=($BROKER_PID)
    local brokers
    read -r brokers <&"${BROKER[0]}"
    cat >"$dir/tern.toml" <<EOF
storage = "postgres"
[postgres]
url = "${PG_ADMIN_URL%/*}/$DB"
[redis]
url = "$REDIS_URL"
key_prefix = "tern-bench-$$:"
[kafka]
brokers = "$brokers"
topic = "tern.events"
partitions = 16
EOF
    for n in $(seq 1 "$setup"); do
        port=$((18108 + n))
        "$B/homeserver" --config "$dir/tern.toml" --listen 127.0.0.1:$port --data-dir "$dir" \
            --allow-registration --disable-rate-limits 2>"$OUT/node$n.log" &
        PIDS+=($!)
        wait_ready "http://127.0.0.1:$port"
        URLS="${URLS:+$URLS,}http://127.0.0.1:$port"
    done
}

# run <setup> <name> <tern-bench args...>: one measured run on fresh servers.
run() {
    local setup=$1 name=$2
    shift 2
    start_setup "$setup"
    local servers=("${PIDS[@]}")
    [ "$setup" = embedded ] || servers=("${PIDS[@]:1}")
    local before=0 after=0 pid
    for pid in "${servers[@]}"; do before=$(awk -v a="$before" -v b="$(cpu_s "$pid")" 'BEGIN { print a + b }'); done
    "$B/tern-bench" --url "$URLS" --json "$OUT/$setup-$name.json" "$@" >"$OUT/$setup-$name.txt" 2>&1 || {
        echo "tern-bench failed for $setup $name, see $OUT/$setup-$name.txt" >&2
    }
    for pid in "${servers[@]}"; do after=$(awk -v a="$after" -v b="$(cpu_s "$pid")" 'BEGIN { print a + b }'); done
    python3 - "$OUT/$setup-$name.json" "$setup" "$name" "$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" <<'PY'
import json, sys
path, setup, name, cpu = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
r = json.load(open(path))
s, d = r["sends"], r["delivery"]
print(f"| {setup} | {name} | {s['acks_per_sec']:.0f} | {s['rtt_ms']['p50']:.1f} | {s['rtt_ms']['p99']:.1f} "
      f"| {d['latency_ms']['p50']:.1f} | {d['latency_ms']['p99']:.1f} | {d['lost']} / {d['duplicated']} "
      f"| {cpu:.1f} | {r['bench_cpu_s']:.1f} |")
PY
    cleanup
}

echo "| setup | workload | acked msg/s | send p50 ms | send p99 ms | delivery p50 ms | delivery p99 ms | lost / dup | servers' CPU s | bench CPU s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for setup in $SETUPS; do
    # Throughput: 8 users in one room, 32 senders as fast as acknowledged.
    run "$setup" throughput --users 8 --concurrency 32 --duration "$DURATION"
    # Latency at a fixed, modest rate: 10 members who all long-poll.
    run "$setup" latency --users 10 --room-size 10 --rate 200 --duration "$DURATION"
done
