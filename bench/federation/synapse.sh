#!/usr/bin/env bash
# Federated delivery latency, Tern and Synapse (issue 18): one Tern server
# and one Synapse 1.163.2 (from PyPI, started by the test suite's
# tests/synapse/synapse_fed_up.sh) on loopback, federating over TLS with
# self-signed certificates; tern-bench registers users on both in turn and
# puts them in rooms of two created on Tern, one member on each server, so
# every delivery crosses servers: Tern to Synapse for Tern's senders,
# Synapse to Tern for Synapse's. A steady rate, then the report.
#
#   bench/federation/synapse.sh                 # 20 users, 50 msg/s, 20 s
#   USERS=20 RATE=100 DURATION=30 bench/federation/synapse.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

B="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}/release"
USERS="${USERS:-20}"
RATE="${RATE:-50}"
DURATION="${DURATION:-20}"
DRAIN="${DRAIN:-30}"
WORK="$(mktemp -d -t tern-fed-synapse-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() {
    for _ in $(seq 1 600); do
        curl -sf "$1/_matrix/client/versions" >/dev/null && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

http=$(free_port)
fed=$(free_port)
"$B/homeserver" --listen "127.0.0.1:$http" --data-dir "$WORK/tern" \
    --server-name "localhost:$fed" --federation-listen "127.0.0.1:$fed" \
    --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" \
    --federation-allow-private --federation-insecure-skip-verify \
    --allow-registration --disable-rate-limits 2>"$WORK/tern.log" &
PIDS+=($!)
TERN="http://127.0.0.1:$http"
wait_up "$TERN"

synapse_fed=$(free_port)
synapse_http=$(free_port)
mkdir -p "$WORK/synapse"
PIDS+=("$(bash tests/synapse/synapse_fed_up.sh "$WORK/synapse" "$synapse_fed" "$synapse_http")")
SYNAPSE="http://127.0.0.1:$synapse_http"
wait_up "$SYNAPSE"

"$B/tern-bench" --url "$TERN,$SYNAPSE" --users "$USERS" --room-size 2 --rate "$RATE" \
    --duration "$DURATION" --drain "$DRAIN"
