# Shared by the federation benchmarks (sourced, not run): a work directory
# removed on exit with every process started, a self-signed certificate
# for localhost, free ports, and federating Tern servers on loopback.
#
# Sets B (the release binaries), WORK and PIDS; `start_tern NAME` sets URL
# and SERVER (its server name).

B="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}/release"
WORK="$(mktemp -d -t tern-fed-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        # Not every process is our child (Synapse is its script's): poll.
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

# Waits for a client API at $1 to answer.
wait_up() {
    for _ in $(seq 1 600); do
        curl -sf "$1/_matrix/client/versions" >/dev/null && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# Starts a federating Tern server named $1; sets URL to its client API and
# SERVER to its server name.
start_tern() {
    local name=$1 http fed
    http=$(free_port)
    fed=$(free_port)
    "$B/homeserver" --listen "127.0.0.1:$http" --data-dir "$WORK/$name" \
        --server-name "localhost:$fed" --federation-listen "127.0.0.1:$fed" \
        --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" \
        --federation-allow-private --federation-insecure-skip-verify \
        --allow-registration --disable-rate-limits 2>"$WORK/$name.log" &
    PIDS+=($!)
    URL="http://127.0.0.1:$http"
    SERVER="localhost:$fed"
    wait_up "$URL"
}
