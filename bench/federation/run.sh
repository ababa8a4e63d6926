#!/usr/bin/env bash
# Federated delivery latency, Tern to Tern (issue 18): two Tern servers on
# loopback, federating over TLS with self-signed certificates; tern-bench
# registers users on both in turn and puts them in rooms of two, one member
# on each server, so every delivery crosses from one server to the other
# (sent on one, seen in the other's /sync). A steady rate, then the report.
#
#   bench/federation/run.sh                 # 20 users, 100 msg/s, 20 s
#   USERS=40 RATE=200 DURATION=30 bench/federation/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

B="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}/release"
USERS="${USERS:-20}"
RATE="${RATE:-100}"
DURATION="${DURATION:-20}"
WORK="$(mktemp -d -t tern-fed-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts a server named $1; sets URL to its client API.
start() {
    local name=$1 http fed
    http=$(free_port)
    fed=$(free_port)
    "$B/homeserver" --listen "127.0.0.1:$http" --data-dir "$WORK/$name" \
        --server-name "localhost:$fed" --federation-listen "127.0.0.1:$fed" \
        --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" \
        --federation-allow-private --federation-insecure-skip-verify \
        --allow-registration --disable-rate-limits 2>"$WORK/$name.log" &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$http/_matrix/client/versions" >/dev/null && break
        sleep 0.1
    done
    URL="http://127.0.0.1:$http"
}

start one
ONE=$URL
start two
TWO=$URL
"$B/tern-bench" --url "$ONE,$TWO" --users "$USERS" --room-size 2 --rate "$RATE" \
    --duration "$DURATION"
