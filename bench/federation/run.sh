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

. bench/federation/common.sh
USERS="${USERS:-20}"
RATE="${RATE:-100}"
DURATION="${DURATION:-20}"

start_tern one
ONE=$URL
start_tern two
TWO=$URL
"$B/tern-bench" --url "$ONE,$TWO" --users "$USERS" --room-size 2 --rate "$RATE" \
    --duration "$DURATION"
