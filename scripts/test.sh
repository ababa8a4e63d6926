#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, builds
# once (release, shared by tests and benchmarks), runs every tier.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}"
VENV="${TERN_VENV:-$HOME/.cache/tern-venv}"

# Python client library for the interop tests (matrix-nio from PyPI).
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
# An S3 server for the media tests (moto, from PyPI: no binary download).
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.*'
# The OpenAPI contract tests: validators, schemathesis, a client generator.
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/contract/requirements.txt

# Synapse 1.163.2 from PyPI, the federation tests' reference peer: installed
# here, once, before the tests (which run two at a time) start it.
SYNAPSE_VENV="${SYNAPSE_VENV:-$HOME/.cache/tern-synapse-venv}"
if ! "$SYNAPSE_VENV/bin/python" -c 'import synapse' 2>/dev/null; then
    python3 -m venv "$SYNAPSE_VENV"
    "$SYNAPSE_VENV/bin/pip" install --quiet --disable-pip-version-check matrix-synapse==1.163.2
fi
export SYNAPSE_VENV

# Redis for typing and presence in the distributed deployment: installed
# from Debian's packages and started if this machine has none running.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if ! command -v redis-server >/dev/null 2>&1; then
        apt-get install -y redis-server >/dev/null
    fi
    redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes
    for _ in $(seq 1 50); do
        redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

# PostgreSQL for the shared relational engine: installed from Debian's
# packages and started if this machine has none running. The conformance
# suite and the black-box tests create (and drop) a database per test.
scripts/ensure-postgres.sh
export TERN_TEST_POSTGRES_URL="${TERN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

# The S3 media engine, the Redis ephemeral engine, the Kafka cluster bus and
# the PostgreSQL store are cargo features; the tests build them in.
# ScyllaDB cannot be installed here: its engine is compiled and linted, its
# CQL and paging are unit-tested, and its conformance tests run when
# SCYLLA_URI (host:port) names a node, printing "skipped: SCYLLA_URI not set"
# otherwise.
FEATURES=(--features homeserver/s3,homeserver/redis,homeserver/kafka,homeserver/postgres,homeserver/scylla)
cargo build --release --workspace --all-targets "${FEATURES[@]}"
export TERN_BIN="$CARGO_TARGET_DIR/release/homeserver"
# The Docker deployment files, validated statically (no Docker engine here);
# the node configs by the binary just built (`homeserver check-config`).
TERN_VENV="$VENV" scripts/check-docker.sh
# Lint every engine's code, ScyllaDB's included (it is compiled and linted
# here though it cannot run). --release reuses the build scripts' outputs
# (librdkafka's C build among them) from the build above.
cargo clippy --release --workspace --all-targets --all-features -- -D warnings

# Web client: Debian's Chromium for the browser tests, npm packages from the
# lockfile. The built dist/ is committed (the binary embeds it); a stale one
# fails here.
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
(
    cd web-client
    npm ci --no-audit --no-fund --loglevel=error
    npm run build
    test -z "$(git status --porcelain -- dist)" || { git status --short -- dist; echo "web-client/dist is stale: npm run build and commit it" >&2; exit 1; }
)

# moto on a free loopback port, stopped however this script ends.
MOTO_PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
MOTO_LOG="$(mktemp -t tern-moto.XXXXXX)"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MOTO_PORT/moto-api/')" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
        cat "$MOTO_LOG" >&2
        echo "moto_server did not start" >&2
        exit 1
    fi
    sleep 0.2
done
export TERN_TEST_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"

# Unit, router and black-box tests (the black-box ones start $TERN_BIN).
cargo test --release --workspace "${FEATURES[@]}" -- --test-threads=2
# The black-box tier once more with every server on PostgreSQL (a database
# per server, created and dropped by the harness): the same client-visible
# behaviour on both relational engines.
TERN_TEST_ENGINE=postgres cargo test --release -p tern-tests -- --test-threads=2

# The web client: lint (eslint) and formatting (prettier), its unit tests,
# then end to end in headless Chromium against the client the binary itself
# serves.
(
    cd web-client
    npm run lint
    npm run format:check
    npm test
    TERN_SERVES_WEB_CLIENT=1 npm run e2e
)

# Interop: an unchanged Matrix client library against the real binary.
"$VENV/bin/python" -m pytest tests/interop -q
# Interop: matrix-js-sdk (npm, from the lockfile) with its Rust crypto (WASM)
# in Node: login, cross-signing, an encrypted room, key backup and restore.
(cd tests/js-sdk && npm ci --no-audit --no-fund --loglevel=error && TERN_BIN="$TERN_BIN" npm test)

# The API description: every route specified and served, real responses
# validated against it, a bounded schemathesis run, a generated client.
"$VENV/bin/python" -m pytest tests/contract -q
