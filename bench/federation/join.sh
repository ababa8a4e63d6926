#!/usr/bin/env bash
# The time for a Tern user to join a room another Tern server holds whose
# state has 1,000 members (issue 18): two Tern servers on loopback,
# federating over TLS with self-signed certificates; tern-bench
# (--mode remote-join) fills rooms on the second and joins each from the
# first, a first join of that server each time, then times the joiner's
# first /sync.
#
#   bench/federation/join.sh                 # 1,000 members, 3 rooms
#   MEMBERS=2000 ROOMS=2 bench/federation/join.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

B="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}/release"
MEMBERS="${MEMBERS:-1000}"
ROOMS="${ROOMS:-3}"
WORK="$(mktemp -d -t tern-fed-join-bench.XXXXXX)"
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

start joiner
JOINER=$URL
start holder
HOLDER=$URL
"$B/tern-bench" --mode remote-join --url "$JOINER,$HOLDER" --users "$MEMBERS" --rooms "$ROOMS"
