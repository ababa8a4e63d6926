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

cargo build --release --workspace --all-targets
export TERN_BIN="$CARGO_TARGET_DIR/release/homeserver"

# Unit, router and black-box tests (the black-box ones start $TERN_BIN).
cargo test --release --workspace -- --test-threads=2

# Interop: an unchanged Matrix client library against the real binary.
"$VENV/bin/python" -m pytest tests/interop -q
