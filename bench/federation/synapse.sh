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

. bench/federation/common.sh
USERS="${USERS:-20}"
RATE="${RATE:-50}"
DURATION="${DURATION:-20}"
DRAIN="${DRAIN:-30}"

start_tern tern
TERN=$URL

synapse_fed=$(free_port)
synapse_http=$(free_port)
mkdir -p "$WORK/synapse"
PIDS+=("$(bash tests/synapse/synapse_fed_up.sh "$WORK/synapse" "$synapse_fed" "$synapse_http")")
SYNAPSE="http://127.0.0.1:$synapse_http"
wait_up "$SYNAPSE"
echo "servers:  Tern $SERVER, Synapse localhost:$synapse_fed (\"to\" lines: deliveries to users of that server)"

"$B/tern-bench" --url "$TERN,$SYNAPSE" --users "$USERS" --room-size 2 --rate "$RATE" \
    --duration "$DURATION" --drain "$DRAIN"
